//! The acknowledged high-water mark: after every batch commit, its signed checkpoint is also
//! written to one of two small files beside the store (`head.0`, `head.1`, alternating) and
//! fsynced before the batch is answered.
//!
//! fjall treats any undecodable journal marker as a torn tail and truncates there without an
//! error, so damage in the journal could silently shorten the log. Opening (and `verify`)
//! compare the store's tree size with the largest checkpoint in these files: a store that comes
//! up shorter than what was acknowledged is refused instead of handing out lost indexes again.
//! Two slots mean a torn write of one still leaves the previous checkpoint readable; each slot
//! is a signed note, so a torn or damaged slot simply fails to verify.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use provledger_signer::{verify_checkpoint, VerifierKey};

use crate::LedgerError;

const SLOTS: [&str; 2] = ["head.0", "head.1"];

/// Writes the high-water mark, alternating between the two slots.
pub(crate) struct Watermark {
    dir: PathBuf,
    next: usize,
}

impl Watermark {
    pub(crate) fn new(dir: &Path) -> Watermark {
        Watermark {
            dir: dir.to_path_buf(),
            next: 0,
        }
    }

    /// Writes and fsyncs the checkpoint note of a committed batch.
    pub(crate) fn record(&mut self, note: &str) -> std::io::Result<()> {
        let [even, odd] = SLOTS;
        let slot = if self.next.is_multiple_of(2) {
            even
        } else {
            odd
        };
        let path = self.dir.join(slot);
        let created = !path.exists();
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        f.write_all(note.as_bytes())?;
        f.sync_data()?;
        if created {
            File::open(&self.dir)?.sync_all()?;
        }
        self.next += 1;
        Ok(())
    }
}

/// The largest tree size among the slots whose note verifies with `key` (0 when none does).
pub(crate) fn acknowledged_size(dir: &Path, keys: &[VerifierKey]) -> u64 {
    SLOTS
        .iter()
        .filter_map(|name| std::fs::read_to_string(dir.join(name)).ok())
        .filter_map(|text| verify_checkpoint(&text, keys).ok())
        .map(|v| v.checkpoint().size)
        .max()
        .unwrap_or(0)
}

/// Refuses a store that holds fewer entries than were acknowledged.
pub(crate) fn check(dir: &Path, keys: &[VerifierKey], stored: u64) -> Result<(), LedgerError> {
    let acknowledged = acknowledged_size(dir, keys);
    if acknowledged > stored {
        return Err(LedgerError::Corrupt(format!(
            "a checkpoint for {acknowledged} entries was acknowledged but the store holds only {stored}: \
             entries were lost (a damaged journal is truncated by the storage engine on open); \
             restore the data directory from a backup"
        )));
    }
    Ok(())
}
