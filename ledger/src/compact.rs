//! Compaction: making erased payload bytes disappear from every file under the data directory.
//!
//! Erasing a payload rewrites its run (`payloads.rs`) without it, and deleting a key in fjall
//! writes a tombstone; either way the old value stays in older SST segments and in the journal
//! until they are rewritten or removed. Compaction therefore:
//!
//! 1. seals and flushes every partition's memtable (`rotate_memtable_and_wait`), which also
//!    rotates the journal, so journals written before compaction hold nothing unflushed;
//! 2. waits until fjall has deleted every journal but the active one (it does so in its flush
//!    worker once their data is in segments) — before step 4, see `compact_store`;
//! 3. advances fjall's MVCC garbage-collection watermark to the present (fjall moves it only
//!    when snapshots close, every 50th close), so that older versions of a key may be dropped;
//! 4. runs a major compaction of the `payloads` partition into its last level, where values
//!    hidden by a newer version or a tombstone (and the tombstone itself) are dropped and the
//!    old segments are deleted.
//!
//! Only `payloads` is rewritten: no other partition holds payload bytes, and rewriting the
//! whole log would cost time proportional to its size.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::ledger::Ledger;
use crate::store::Store;
use crate::LedgerError;

/// fjall runs its snapshot garbage collection on every 50th snapshot close.
const SNAPSHOT_GC_INTERVAL: usize = 50;
/// How long to wait for fjall's flush worker to delete fully flushed journals.
const JOURNAL_WAIT: Duration = Duration::from_secs(30);

/// What a compaction did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CompactReport {
    /// Partitions whose memtables were flushed to disk.
    pub flushed: usize,
    /// Journal files that existed before and were deleted.
    pub journals_removed: usize,
    /// Sealed journal files fjall had not deleted when the wait ended (0 normally); the
    /// payloads were then not compacted.
    pub journals_left: usize,
    /// Segment files of the `payloads` partition before and after the major compaction.
    pub payload_segments: (usize, usize),
}

/// Compacts a data directory offline (the server must not be running on it). `progress` is
/// told each step as it starts.
pub fn compact_data_dir(
    dir: &Path,
    progress: impl FnMut(&str),
) -> Result<CompactReport, LedgerError> {
    if !dir.join("fjall").is_dir() {
        return Err(LedgerError::Io(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "{} holds no provledger data (no fjall directory)",
                dir.display()
            ),
        )));
    }
    let store = Store::open(dir, 16 * 1024 * 1024)?;
    compact_store(&store, progress)
}

impl Ledger {
    /// Compacts while the ledger runs (see the module docs). Blocking and I/O heavy: run it on
    /// a blocking thread. Appends continue meanwhile.
    pub fn compact(&self) -> Result<CompactReport, LedgerError> {
        compact_store(self.store(), |_| {})
    }
}

pub(crate) fn compact_store(
    store: &Store,
    mut progress: impl FnMut(&str),
) -> Result<CompactReport, LedgerError> {
    let mut report = CompactReport::default();
    // `<fjall>/partitions/payloads`: the keyspace's journals are in `<fjall>/journals`.
    let partition_dir = store.payloads.path().to_path_buf();
    let journal_dir = partition_dir
        .parent()
        .and_then(Path::parent)
        .map(|fjall| fjall.join("journals"))
        .ok_or_else(|| LedgerError::Corrupt("unexpected fjall directory layout".into()))?;
    let journals = files_in(&journal_dir)?;
    progress("flushing memtables");
    for (_, partition) in store.partitions() {
        partition.rotate_memtable_and_wait()?;
        report.flushed += 1;
    }
    // fjall deletes a sealed journal once every partition's segments hold a sequence number at
    // least as high as the journal's. That must happen before the compaction below: it may
    // drop the payloads' newest item (a tombstone), after which the journals that
    // recorded it would wait for a higher one forever.
    progress("waiting for old journals to be deleted");
    let deadline = Instant::now() + JOURNAL_WAIT;
    loop {
        let sealed = sealed_journals(&journal_dir)?;
        if sealed.is_empty() || Instant::now() >= deadline {
            report.journals_removed = journals.iter().filter(|j| !j.exists()).count();
            report.journals_left = sealed.len();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if report.journals_left > 0 {
        tracing::warn!(
            left = report.journals_left,
            "compaction: fjall has not deleted every old journal yet; payloads not compacted, the next compaction retries"
        );
        return Ok(report);
    }
    progress("advancing the garbage-collection watermark");
    advance_gc_watermark(store);
    let segments = partition_dir.join("segments");
    let before = files_in(&segments)?.len();
    progress("compacting payloads");
    store.payloads.major_compact()?;
    report.payload_segments = (before, files_in(&segments)?.len());
    Ok(report)
}

/// The journal files other than the active one (the highest-numbered).
fn sealed_journals(dir: &Path) -> Result<BTreeSet<PathBuf>, LedgerError> {
    let mut numbered: Vec<(u64, PathBuf)> = files_in(dir)?
        .into_iter()
        .filter_map(|p| {
            let n = p.file_name()?.to_str()?.parse::<u64>().ok()?;
            Some((n, p))
        })
        .collect();
    numbered.sort();
    numbered.pop();
    Ok(numbered.into_iter().map(|(_, p)| p).collect())
}

/// Moves fjall's MVCC garbage-collection watermark to the present by opening and closing
/// snapshots (fjall recomputes it on every 50th close; nothing else in provledger uses
/// snapshots, so it would otherwise stay near zero).
///
/// This is needed for correctness, not only for space: fjall 2.11 drops a tombstone when it
/// compacts into the last level, but keeps the older versions of the key that lie above the
/// watermark, so a deleted key would come back (and an erased payload's old run would stay on
/// disk). The writer calls this after every batch that erased payloads, and the move of old
/// payloads into runs after each of its steps, before any compaction can see them.
pub(crate) fn advance_gc_watermark(store: &Store) {
    for _ in 0..SNAPSHOT_GC_INTERVAL {
        drop(store.payloads.snapshot());
    }
}

fn files_in(dir: &Path) -> Result<BTreeSet<PathBuf>, LedgerError> {
    let mut out = BTreeSet::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e.into()),
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            out.insert(entry.path());
        }
    }
    Ok(out)
}
