//! The `entries` partition: leaves stored in runs of consecutive indexes.
//!
//! A run is one key, the index of its first leaf (u64 BE), whose value is its leaves in index
//! order, each prefixed by its length (u16 BE): the framing of a C2SP entry bundle, so a run is
//! a slice of `/tile/entries/N` as it is served. A run holds at most [`RUN`] leaves, never
//! crosses a multiple of [`RUN`] and has no gaps: the run holding index `i` is the last key in
//! `i - (i mod RUN) ..= i`. The writer ends a run with each append batch. Leaves are written
//! once and never rewritten or deleted, so the keys only grow and fjall never compacts the
//! partition (`store.rs`); the ledger only merges its small segments whole (`coalesce.rs`).
//!
//! fjall's work is per key, and each leaf was one of the three keys every record wrote: runs
//! took 2–9 % off the server's CPU per record under batch ingest (`docs/benchmarks.md`,
//! session 16). A leaf read walks its run's length prefixes (at most [`RUN`]) within the
//! 32 KiB block fjall reads anyway.
//!
//! Data directories written before runs hold one key per index, value the leaf. They are not
//! moved: `meta` records the tree size at which the first build with runs opened the directory
//! (`leaf_runs_from`), below which keys are single leaves and from which they are runs. Both
//! sort in index order in the one partition.

use fjall::Slice;

use provledger_signer::Hash;

use crate::store::{be_u64, hash_at, Store};
use crate::tree::TILE_WIDTH;
use crate::LedgerError;

/// Most leaves in one run; runs never cross a multiple of it. 64 leaves of ~300 bytes fill
/// about half of an `entries` block.
pub(crate) const RUN: u64 = 64;
/// `meta` key: indexes from its value (u64 BE) on are stored in runs, the ones below one key
/// each. Absent in directories written before runs until a ledger opens them.
pub(crate) const RUNS_FROM_KEY: &[u8] = b"leaf_runs_from";

/// A run being built: its first index, how many leaves it holds, and its bytes.
#[derive(Debug, Default)]
pub(crate) struct LeafRunBuilder {
    start: u64,
    leaves: u64,
    bytes: Vec<u8>,
}

impl LeafRunBuilder {
    /// Adds the leaf at `index`; returns the finished run first when `index` cannot extend
    /// this one (it does not follow its last leaf, or lies in another group of [`RUN`]).
    /// [`crate::Leaf`]'s encoding refuses leaves longer than `u16::MAX` bytes.
    pub(crate) fn push(&mut self, index: u64, leaf: &[u8]) -> Option<(u64, Vec<u8>)> {
        let next = self.start + self.leaves;
        let done = if self.leaves > 0 && (index != next || index / RUN != self.start / RUN) {
            self.finish()
        } else {
            None
        };
        if self.leaves == 0 {
            self.start = index;
        }
        let len = u16::try_from(leaf.len()).unwrap_or(u16::MAX);
        self.bytes.extend_from_slice(&len.to_be_bytes());
        self.bytes
            .extend_from_slice(leaf.get(..usize::from(len)).unwrap_or(leaf));
        self.leaves += 1;
        done
    }

    /// The run so far, if it holds anything, leaving the builder empty.
    pub(crate) fn finish(&mut self) -> Option<(u64, Vec<u8>)> {
        if self.leaves == 0 {
            return None;
        }
        self.leaves = 0;
        Some((self.start, std::mem::take(&mut self.bytes)))
    }
}

/// The leaves of the run stored at `start`, as slices of it.
pub(crate) fn run_leaves(start: u64, run: &Slice) -> Result<Vec<Slice>, LedgerError> {
    let mut out = Vec::with_capacity(RUN as usize);
    walk(start, run, |_, range| out.push(run.slice(range)))?;
    Ok(out)
}

/// The `offset`-th leaf of the run stored at `start`, having checked the whole run's framing.
fn run_leaf(start: u64, run: &Slice, offset: u64) -> Result<Option<Slice>, LedgerError> {
    let mut found = None;
    walk(start, run, |i, range| {
        if i == offset {
            found = Some(range);
        }
    })?;
    Ok(found.map(|range| run.slice(range)))
}

/// Calls `each` with the position and byte range of every leaf in the run stored at `start`,
/// then checks that they fit a run.
fn walk(
    start: u64,
    run: &[u8],
    mut each: impl FnMut(u64, std::ops::Range<usize>),
) -> Result<(), LedgerError> {
    let bad = |what: &str| LedgerError::Corrupt(format!("leaf run at {start}: {what}"));
    let mut at = 0usize;
    let mut count = 0u64;
    while let Some(rest) = run.get(at..).filter(|r| !r.is_empty()) {
        let (len, _) = rest
            .split_first_chunk::<2>()
            .ok_or_else(|| bad("truncated leaf length"))?;
        let end = at + 2 + usize::from(u16::from_be_bytes(*len));
        if end > run.len() {
            return Err(bad("leaf runs past the end"));
        }
        each(count, at + 2..end);
        count += 1;
        at = end;
    }
    if count == 0 || start % RUN + count > RUN {
        return Err(bad(&format!("{count} leaves do not fit a run")));
    }
    Ok(())
}

impl Store {
    /// The leaf at `index`, if stored.
    pub(crate) fn entry(&self, index: u64) -> Result<Option<Slice>, LedgerError> {
        if index < self.leaf_runs_from {
            return Ok(self.entries.get(index.to_be_bytes())?);
        }
        let lowest = self.leaf_runs_from.max(index - index % RUN);
        let Some(kv) = self
            .entries
            .range(lowest.to_be_bytes()..=index.to_be_bytes())
            .next_back()
        else {
            return Ok(None);
        };
        let (k, v) = kv?;
        let start = be_u64(&k)?;
        run_leaf(start, &v, index - start)
    }

    /// The leaf hash of the stored entry at `index`: from its full level-0 tile when the store
    /// holds that (one point read, no hashing), else hashed from the leaf (the right edge's
    /// tile is not stored, nor a tile completed by a batch still in flight).
    pub(crate) fn leaf_hash_at(&self, index: u64) -> Result<Hash, LedgerError> {
        if let Some(tile) = self.tile(0, index / TILE_WIDTH)? {
            if let Some(hash) = hash_at(&tile, (index % TILE_WIDTH) as usize) {
                return Ok(hash);
            }
        }
        let leaf = self
            .entry(index)?
            .ok_or_else(|| LedgerError::Corrupt(format!("entry {index} is missing")))?;
        Ok(provledger_signer::leaf_hash(&leaf))
    }

    /// The stored leaves with indexes in `from..to`, in index order, as `(index, leaf)`:
    /// what is stored, so a gap in the log is a gap in the indexes.
    pub(crate) fn leaves(&self, from: u64, to: u64) -> Leaves {
        let first_key = if from < self.leaf_runs_from {
            from
        } else {
            self.leaf_runs_from.max(from - from % RUN)
        };
        Leaves {
            stored: Box::new(
                self.entries
                    .range(first_key.to_be_bytes()..to.max(first_key).to_be_bytes()),
            ),
            runs_from: self.leaf_runs_from,
            from,
            to,
            pending: Vec::new().into_iter(),
        }
    }

    /// Calls `each` with every leaf in `from..to`, in index order; a missing leaf is a
    /// [`LedgerError::Corrupt`] naming its index.
    pub(crate) fn each_leaf(
        &self,
        from: u64,
        to: u64,
        mut each: impl FnMut(u64, &[u8]) -> Result<(), LedgerError>,
    ) -> Result<(), LedgerError> {
        let mut expected = from;
        for kv in self.leaves(from, to) {
            let (index, leaf) = kv?;
            if index != expected {
                break;
            }
            each(index, &leaf)?;
            expected += 1;
        }
        if expected < to {
            return Err(LedgerError::Corrupt(format!("entry {expected} is missing")));
        }
        Ok(())
    }

    /// Marks, durably, where runs start in this directory, if no ledger has yet: the tree
    /// size now (0 for a new one). Call before anything is appended.
    pub(crate) fn mark_leaf_runs(&mut self, size: u64) -> Result<(), LedgerError> {
        if self.mark_once(RUNS_FROM_KEY, size)? {
            self.leaf_runs_from = size;
        }
        Ok(())
    }
}

/// Iterator of [`Store::leaves`].
pub(crate) struct Leaves {
    stored: Box<dyn Iterator<Item = fjall::Result<fjall::KvPair>>>,
    runs_from: u64,
    from: u64,
    to: u64,
    pending: std::vec::IntoIter<(u64, Slice)>,
}

impl Iterator for Leaves {
    type Item = Result<(u64, Slice), LedgerError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some((index, leaf)) = self.pending.next() {
                if index >= self.to {
                    return None;
                }
                if index >= self.from {
                    return Some(Ok((index, leaf)));
                }
                continue;
            }
            let (k, v) = match self.stored.next()? {
                Ok(kv) => kv,
                Err(e) => return Some(Err(e.into())),
            };
            let key = match be_u64(&k) {
                Ok(key) => key,
                Err(e) => return Some(Err(e)),
            };
            if key < self.runs_from {
                return Some(Ok((key, v)));
            }
            match run_leaves(key, &v) {
                Ok(leaves) => {
                    self.pending = (key..).zip(leaves).collect::<Vec<_>>().into_iter();
                }
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests: a panic is a failure report

    use super::*;
    use proptest::prelude::*;

    fn leaf(i: u64) -> Vec<u8> {
        // Lengths 0..=600, so some leaves are empty and runs vary in size.
        let len = (i * 37 % 601) as usize;
        (0..len).map(|j| (i as usize + j) as u8).collect()
    }

    /// Writes `0..size` cut into batches of the given sizes, as the writer does.
    fn write(store: &Store, from: u64, batches: &[u64]) -> u64 {
        let mut next = from;
        for &n in batches {
            let mut batch = store.keyspace.batch();
            let mut builder = LeafRunBuilder::default();
            let mut runs = Vec::new();
            for i in next..next + n {
                runs.extend(builder.push(i, &leaf(i)));
            }
            runs.extend(builder.finish());
            for (start, bytes) in runs {
                batch.insert(&store.entries, start.to_be_bytes(), bytes);
            }
            batch.commit().unwrap();
            next += n;
        }
        next
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Every leaf reads back, alone and in any range, whatever the batch sizes, and
        /// across the boundary with leaves stored one key each by an earlier build.
        #[test]
        fn leaves_read_back_from_runs_and_the_old_layout(
            legacy in 0u64..150,
            batches in proptest::collection::vec(1u64..200, 1..8),
            cuts in proptest::collection::vec((0u64..1000, 0u64..1000), 4),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut store = Store::open(dir.path(), 1 << 20).unwrap();
            for i in 0..legacy {
                store.entries.insert(i.to_be_bytes(), leaf(i)).unwrap();
            }
            store.mark_leaf_runs(legacy).unwrap();
            let size = write(&store, legacy, &batches);
            for i in 0..size {
                let got = store.entry(i).unwrap();
                prop_assert_eq!(got.as_deref(), Some(&leaf(i)[..]), "{}", i);
            }
            prop_assert!(store.entry(size).unwrap().is_none());
            for (a, b) in cuts {
                let (from, to) = (a.min(b) % (size + 5), a.max(b) % (size + 5));
                let got: Vec<_> = store.leaves(from, to).map(|r| r.unwrap()).collect();
                let want: Vec<_> = (from..to.min(size)).collect();
                prop_assert_eq!(got.iter().map(|(i, _)| *i).collect::<Vec<_>>(), want);
                for (i, l) in got {
                    prop_assert_eq!(&*l, &leaf(i)[..]);
                }
            }
            // Runs: none crosses a multiple of RUN, and there are fewer keys than leaves.
            let runs = store.entries.range(legacy.to_be_bytes()..).count() as u64;
            prop_assert!(runs <= batches.len() as u64 + (size - legacy) / RUN + 1);
            drop(store);
            let reopened = Store::open(dir.path(), 1 << 20).unwrap();
            prop_assert_eq!(reopened.leaf_runs_from, legacy);
        }
    }

    #[test]
    fn each_leaf_names_the_first_missing_leaf() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), 1 << 20).unwrap();
        store.mark_leaf_runs(0).unwrap();
        let size = write(&store, 0, &[100, 100]);
        let mut seen = Vec::new();
        store
            .each_leaf(10, size, |i, bytes| {
                assert_eq!(bytes, &leaf(i)[..]);
                seen.push(i);
                Ok(())
            })
            .unwrap();
        assert_eq!(seen, (10..size).collect::<Vec<_>>());
        let missing = |from, to| match store.each_leaf(from, to, |_, _| Ok(())) {
            Err(LedgerError::Corrupt(m)) => m,
            other => panic!("{other:?}"),
        };
        assert_eq!(missing(150, size + 1), format!("entry {size} is missing"));
        // The run 128..192 (the second batch's second run) is gone.
        store.entries.remove(128u64.to_be_bytes()).unwrap();
        assert_eq!(missing(0, size), "entry 128 is missing");
        assert_eq!(missing(130, 140), "entry 130 is missing");
        store.each_leaf(0, 128, |_, _| Ok(())).unwrap();
    }

    #[test]
    fn a_damaged_run_is_a_corrupt_error() {
        let good = {
            let mut b = LeafRunBuilder::default();
            for i in 0..3 {
                assert!(b.push(i, &leaf(i + 1)).is_none());
            }
            b.finish().unwrap().1
        };
        assert_eq!(run_leaves(0, &Slice::from(&good[..])).unwrap().len(), 3);
        for bad in [
            &good[..good.len() - 1],
            &good[..1],
            &[][..],
            &[0xff, 0xff, 1][..],
        ] {
            let err = run_leaves(0, &Slice::from(bad)).unwrap_err();
            assert!(matches!(err, LedgerError::Corrupt(_)), "{err}");
        }
        // Three leaves cannot start at the last index of a group.
        assert!(run_leaves(RUN - 1, &Slice::from(&good[..])).is_err());
    }

    #[test]
    fn a_run_ends_at_a_gap_and_at_a_multiple_of_run() {
        let mut b = LeafRunBuilder::default();
        assert!(b.push(RUN - 2, b"a").is_none());
        assert!(b.push(RUN - 1, b"b").is_none());
        let (start, bytes) = b.push(RUN, b"c").unwrap();
        assert_eq!(start, RUN - 2);
        assert_eq!(bytes, [0, 1, b'a', 0, 1, b'b']);
        let (start, bytes) = b.push(RUN + 5, b"d").unwrap();
        assert_eq!((start, bytes), (RUN, vec![0, 1, b'c']));
        assert_eq!(b.finish(), Some((RUN + 5, vec![0, 1, b'd'])));
        assert_eq!(b.finish(), None);
    }
}
