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
//!
//! Each slot is overwritten in place at a fixed size ([`SLOT_BYTES`], the note followed by NUL
//! bytes), so its fsync writes one data block and no file metadata. Readers ignore the NULs;
//! slots written whole by earlier versions read as before.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use provledger_signer::{verify_checkpoint, VerifierKey};

use crate::LedgerError;

const SLOTS: [&str; 2] = ["head.0", "head.1"];

/// Size of a slot file: one file-system block, far more than a checkpoint note needs (a note
/// longer than this is written whole, at its own length).
pub(crate) const SLOT_BYTES: usize = 4096;

/// Writes the high-water mark, alternating between the two slots.
pub(crate) struct Watermark {
    dir: PathBuf,
    next: usize,
    /// The slot files, opened on first use and kept open.
    files: [Option<File>; 2],
    buf: Vec<u8>,
}

impl Watermark {
    pub(crate) fn new(dir: &Path) -> Watermark {
        Watermark {
            dir: dir.to_path_buf(),
            next: 0,
            files: [None, None],
            buf: Vec::with_capacity(SLOT_BYTES),
        }
    }

    /// Writes and fsyncs the checkpoint note of a committed batch.
    pub(crate) fn record(&mut self, note: &str) -> std::io::Result<()> {
        let [even, odd] = &mut self.files;
        let (slot, name) = if self.next.is_multiple_of(2) {
            (even, SLOTS[0])
        } else {
            (odd, SLOTS[1])
        };
        let file = match slot {
            Some(f) => f,
            slot => {
                let path = self.dir.join(name);
                let created = !path.exists();
                let f = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&path)?;
                if created {
                    File::open(&self.dir)?.sync_all()?;
                }
                slot.insert(f)
            }
        };
        self.buf.clear();
        self.buf.extend_from_slice(note.as_bytes());
        let len = self.buf.len().max(SLOT_BYTES);
        self.buf.resize(len, 0);
        file.write_all_at(&self.buf, 0)?;
        // Only the first write (or a note longer than a slot) changes the file's length; after
        // that the size is fixed and fsync has no metadata to write.
        if file.metadata()?.len() != len as u64 {
            file.set_len(len as u64)?;
            file.sync_all()?;
        } else {
            file.sync_data()?;
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
        .filter_map(|text| verify_checkpoint(text.trim_end_matches('\0'), keys).ok())
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is a failure report

    use provledger_signer::{Checkpoint, Hash, SigningKey};

    use super::*;

    fn note(key: &SigningKey, size: u64, extension_bytes: usize) -> String {
        key.sign_checkpoint(&Checkpoint {
            origin: key.name().to_owned(),
            size,
            root: Hash([7; 32]),
            extensions: (extension_bytes > 0)
                .then(|| "x".repeat(extension_bytes))
                .into_iter()
                .collect(),
        })
    }

    #[test]
    fn slots_are_rewritten_in_place_and_read_whatever_their_length() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate("wm.example/log").unwrap();
        let keys = [key.verifier()];
        let mut w = Watermark::new(dir.path());
        let len = |name: &str| std::fs::metadata(dir.path().join(name)).unwrap().len();
        w.record(&note(&key, 1, 0)).unwrap();
        assert_eq!(acknowledged_size(dir.path(), &keys), 1);
        w.record(&note(&key, 2, 0)).unwrap();
        assert_eq!((len("head.0"), len("head.1")), (4096, 4096));
        // A note longer than a slot is written whole; the next short one shrinks the slot back.
        w.record(&note(&key, 3, 5000)).unwrap();
        assert!(len("head.0") > 5000);
        assert_eq!(acknowledged_size(dir.path(), &keys), 3);
        w.record(&note(&key, 4, 0)).unwrap();
        w.record(&note(&key, 5, 0)).unwrap();
        assert_eq!((len("head.0"), len("head.1")), (4096, 4096));
        assert_eq!(acknowledged_size(dir.path(), &keys), 5);
        // A slot written whole by an earlier version (no padding) still counts.
        std::fs::write(dir.path().join("head.1"), note(&key, 9, 0)).unwrap();
        assert_eq!(acknowledged_size(dir.path(), &keys), 9);
        // A damaged slot does not count; the other one still does.
        std::fs::write(dir.path().join("head.1"), b"garbage").unwrap();
        assert_eq!(acknowledged_size(dir.path(), &keys), 5);
    }
}
