//! Whole-file digests of the storage engine's immutable segment files.
//!
//! fjall (lsm-tree 2) checksums the data blocks of a segment file, but not its block index,
//! top-level index, bloom filter, metadata or trailer, and a damaged byte there may change no
//! value that a read returns. Segment files never change once the tree has registered them, so
//! their SHA-256 is a complete check: the ledger records the digest of every registered segment
//! in `<data-dir>/segments.sha256` (in `sha256sum` format, paths relative to the data
//! directory) from a background thread and once more when it closes, and `provledger verify`
//! compares every listed file that still exists before it opens the keyspace.
//!
//! Only registered segments are sealed (the tree lists them once they are fully written), so a
//! segment being flushed is never digested half-written. A segment compacted away drops out of
//! the list; one written since the last seal is not covered until the next (at most
//! [`SEAL_EVERY`] later, or at a clean shutdown).

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::store::Store;
use crate::LedgerError;

/// File name of the digest list inside a data directory.
pub(crate) const SEALS_FILE: &str = "segments.sha256";
/// How often the background sealer looks for new segments.
pub(crate) const SEAL_EVERY: Duration = Duration::from_secs(2);

/// Relative path → hex SHA-256.
type Seals = BTreeMap<String, String>;

/// How long a final seal waits for the storage engine's background work ([`settle`]).
const SETTLE_LIMIT: Duration = Duration::from_secs(30);

/// Waits until the storage engine is quiet — no memtable queued for flushing, no compaction
/// running, and no flush or compaction finished, over three looks 20 ms apart — or until
/// `limit` has passed. Returns whether it settled.
///
/// Opening a keyspace queues the memtables it recovers for flushing, and the last batches
/// before a close may leave some queued too; the segments those flushes (and the compactions
/// they trigger) write are registered only when done. A seal taken before then would leave
/// them out, so the final seals (at close and after `provledger verify`) wait here first.
pub(crate) fn settle(store: &Store, limit: Duration) -> bool {
    use fjall::AbstractTree as _;
    let deadline = std::time::Instant::now() + limit;
    let busy = || {
        store.keyspace.active_compactions() > 0
            || store
                .partitions()
                .iter()
                .any(|(_, p)| p.tree.sealed_memtable_count() > 0)
    };
    let done = || {
        (
            store.keyspace.flushes_completed(),
            store.keyspace.compactions_completed(),
        )
    };
    let mut quiet_looks = 0;
    let mut last = done();
    while std::time::Instant::now() < deadline {
        let now = done();
        if busy() || now != last {
            quiet_looks = 0;
        } else {
            quiet_looks += 1;
            if quiet_looks == 3 {
                return true;
            }
        }
        last = now;
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// [`seal`] once the storage engine has [settled](settle): the last word before a close, or
/// after a verify.
pub(crate) fn seal_settled(dir: &Path, store: &Store) -> Result<usize, LedgerError> {
    if !settle(store, SETTLE_LIMIT) {
        tracing::warn!(
            "storage engine still flushing or compacting after {SETTLE_LIMIT:?}; segments it writes are sealed on the next start"
        );
    }
    seal(dir, store)
}

/// Records the digests of every segment the keyspace has registered (new ones are hashed;
/// known ones keep their digest; ones no longer registered are dropped). Blocking.
pub(crate) fn seal(dir: &Path, store: &Store) -> Result<usize, LedgerError> {
    let old = read(dir).unwrap_or_default();
    let mut next = Seals::new();
    for (_, partition) in store.partitions() {
        for path in registered_segments(partition) {
            let Some(rel) = relative(dir, &path) else {
                continue;
            };
            let digest = match old.get(&rel) {
                Some(d) => d.clone(),
                None => match digest(&path) {
                    Ok(d) => d,
                    // Compacted away between listing and reading: nothing to seal.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e.into()),
                },
            };
            next.insert(rel, digest);
        }
    }
    if next != old {
        let text: String = next
            .iter()
            .map(|(path, digest)| format!("{digest}  {path}\n"))
            .collect();
        crate::access::write_private_atomically(&dir.join(SEALS_FILE), text.as_bytes())?;
    }
    Ok(next.len())
}

/// Checks every sealed file that still exists against its digest. Returns how many were
/// checked, or the first file that changed.
pub(crate) fn check(dir: &Path) -> Result<usize, String> {
    let seals = read(dir).map_err(|e| format!("{SEALS_FILE}: {e}"))?;
    let mut checked = 0;
    for (rel, want) in &seals {
        let path = dir.join(rel);
        match digest(&path) {
            Ok(got) if got == *want => checked += 1,
            Ok(_) => {
                return Err(format!(
                    "segment file {rel} changed after it was sealed (SHA-256 differs from {SEALS_FILE}): the file is damaged"
                ))
            }
            // Compacted away since: nothing to check.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot read segment file {rel}: {e}")),
        }
    }
    Ok(checked)
}

fn read(dir: &Path) -> Result<Seals, String> {
    let text = match std::fs::read_to_string(dir.join(SEALS_FILE)) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Seals::new()),
        Err(e) => return Err(e.to_string()),
    };
    text.lines()
        .enumerate()
        .map(|(n, line)| {
            let (digest, path) = line
                .split_once("  ")
                .filter(|(d, p)| d.len() == 64 && !p.is_empty() && !p.contains(".."))
                .ok_or_else(|| format!("line {} is not `<sha256>  <path>`", n + 1))?;
            Ok((path.to_owned(), digest.to_owned()))
        })
        .collect()
}

fn registered_segments(partition: &fjall::PartitionHandle) -> Vec<PathBuf> {
    let tree = match &partition.tree {
        fjall::AnyTree::Standard(t) => t,
        fjall::AnyTree::Blob(b) => &b.index,
    };
    let levels = tree.levels.read().unwrap_or_else(|p| p.into_inner());
    levels.iter().map(|segment| segment.path.clone()).collect()
}

fn relative(dir: &Path, path: &Path) -> Option<String> {
    let rel = match path.strip_prefix(dir) {
        Ok(rel) => rel.to_path_buf(),
        Err(_) => {
            let (dir, path) = (dir.canonicalize().ok()?, path.canonicalize().ok()?);
            path.strip_prefix(dir).ok()?.to_path_buf()
        }
    };
    let text = rel.to_str()?;
    (!text.contains('\n')).then(|| text.to_owned())
}

fn digest(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(buf.get(..n).unwrap_or_default());
    }
    Ok(hex::encode(hasher.finalize()))
}
