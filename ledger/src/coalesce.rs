//! Merging small `entries` segments into large ones, so that the segment count — and with it the
//! time to open the store — stays bounded as the log grows.
//!
//! `entries` is never compacted by fjall (see `store::entries_compaction`): each flush leaves
//! one segment in level 0 for good, of whatever the memtable held — under batch ingest a
//! second of appends, ~40 segments per million entries. lsm-tree 2.10 opens a level in time
//! cubic in its segment count (each segment it adds re-checks every pair of the level for
//! overlap): 389 segments at 10 M entries opened in 0.15 s, 1,021 in 1.1 s, and at that rate a
//! log of 50 M entries would take seconds (`docs/benchmarks.md`, session 17).
//!
//! The ledger's coalescer thread therefore merges, once `entries` holds [`Coalesce::at`] small
//! segments or more, the oldest run of neighbouring small segments into one of up to
//! [`Coalesce::target`] bytes, in level 0, and repeats while the count stays over. Neighbours in
//! key order are neighbours in the log, and the level's key ranges are disjoint, so the merged
//! segment's range overlaps no other and the level stays disjoint: lookups keep finding a key's
//! segment by binary search. Leaves are immutable, so a merge drops nothing; each byte is
//! merged about once (a merge writes a segment that is no longer small).
//!
//! The merge is lsm-tree's own compaction (`AbstractTree::compact`) driven by the strategy
//! here: it writes the new segment, swaps it into the level manifest atomically and only then
//! deletes the old files, so a crash at any point leaves either the old segments or the new one.
//! A directory whose `entries` predates the FIFO strategy (before session 14) is leveled, and
//! fjall merges it itself; the strategy then leaves it alone.
//!
//! This module must not touch any partition but `entries`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use fjall::AbstractTree as _;
use lsm_tree::compaction::{Choice, CompactionStrategy, Input};
use lsm_tree::level_manifest::LevelManifest;
use lsm_tree::segment::meta::SegmentId;

use crate::store::Store;
use crate::LedgerError;

/// Small segments in `entries` from which the coalescer merges: opening 128 segments costs a
/// few milliseconds, and batch ingest reaches the count at ~3.4 M entries (~38 segments per
/// million, under a minute at full rate).
pub(crate) const COALESCE_AT: usize = 128;

/// Size of a merged segment, and the most a merge reads (on-disk bytes).
pub(crate) const COALESCE_TARGET: u64 = 64 * 1024 * 1024;

/// How often the coalescer thread looks at `entries`.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// How long the coalescer waits after a failed merge before it tries again.
const RETRY_AFTER: Duration = Duration::from_secs(60);

/// Starts the coalescer thread, which until `stop` is set looks at `entries` every
/// [`LOOK_EVERY`] and merges while [`Coalesce::plan`] finds segments to merge. It runs at the
/// lower priority of fjall's own flush and compaction threads
/// ([`crate::store::BACKGROUND_NICE`]).
pub(crate) fn spawn(store: Store) -> std::io::Result<(Arc<AtomicBool>, JoinHandle<()>)> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let handle = std::thread::Builder::new()
        .name("provledger-coalesce".into())
        .spawn(move || {
            if let Err(e) = crate::store::lower_own_priority() {
                tracing::warn!(error = %e, "cannot lower the coalescer's priority");
            }
            let strategy = Coalesce::default();
            let mut pause = LOOK_EVERY;
            loop {
                std::thread::park_timeout(pause);
                pause = LOOK_EVERY;
                while !flag.load(Ordering::Acquire) {
                    match step(&store, strategy) {
                        Ok(true) => {}
                        Ok(false) => break,
                        Err(e) => {
                            // Appends and reads go on; only opening the store slows as small
                            // segments gather. Retried after a minute, not every second.
                            pause = RETRY_AFTER;
                            tracing::warn!(
                                error = %e,
                                retry_in_s = pause.as_secs(),
                                "cannot merge entries segments (check the data disk: free space, \
                                 I/O errors in the kernel log); appends and reads are unaffected"
                            );
                            break;
                        }
                    }
                }
                if flag.load(Ordering::Acquire) {
                    return;
                }
            }
        })?;
    Ok((stop, handle))
}

/// Runs one coalescing step over `entries`; returns whether it merged segments.
pub(crate) fn step(store: &Store, strategy: Coalesce) -> Result<bool, LedgerError> {
    let tree = &store.entries.tree;
    let before = tree.segment_count();
    let started = std::time::Instant::now();
    // `entries` holds one version of each key and no tombstones: there is nothing for the
    // merge to drop, whatever the watermark.
    tree.compact(Arc::new(strategy), 0)
        .map_err(fjall::Error::from)?;
    let after = tree.segment_count();
    if after >= before {
        return Ok(false);
    }
    tracing::info!(
        before,
        after,
        ms = started.elapsed().as_millis() as u64,
        "merged small entries segments"
    );
    Ok(true)
}

/// The compaction strategy of one coalescing step over `entries`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Coalesce {
    /// Merge only once level 0 holds this many small segments.
    pub(crate) at: usize,
    /// A merge reads at most this many bytes; a segment is *small* below half of it.
    pub(crate) target: u64,
}

impl Default for Coalesce {
    fn default() -> Coalesce {
        Coalesce {
            at: COALESCE_AT,
            target: COALESCE_TARGET,
        }
    }
}

impl Coalesce {
    /// Whether a segment of `size` bytes is small enough to merge.
    fn small(&self, size: u64) -> bool {
        size < self.target / 2
    }

    /// The segments to merge next, from `(id, size)` in key order: the first run of at least
    /// two neighbouring small segments, as many of them as fit in [`Coalesce::target`]. `None`
    /// below [`Coalesce::at`] small segments, or when no run is worth a merge: one that reaches
    /// neither half the target nor eight segments (the newest few, still growing in number).
    pub(crate) fn plan(&self, segments: &[(SegmentId, u64)]) -> Option<Vec<SegmentId>> {
        if segments.iter().filter(|(_, s)| self.small(*s)).count() < self.at {
            return None;
        }
        let mut run: Vec<SegmentId> = Vec::new();
        let mut bytes = 0u64;
        for &(id, size) in segments {
            let fits = bytes.saturating_add(size) <= self.target;
            if self.small(size) && fits {
                run.push(id);
                bytes += size;
                continue;
            }
            if self.worth(run.len(), bytes) {
                return Some(run);
            }
            // This segment ends the run: a large one, or a small one that no longer fits (it
            // may start the next run).
            run.clear();
            bytes = 0;
            if self.small(size) {
                run.push(id);
                bytes = size;
            }
        }
        self.worth(run.len(), bytes).then_some(run)
    }

    fn worth(&self, segments: usize, bytes: u64) -> bool {
        segments >= 2 && (bytes >= self.target / 2 || segments >= 8)
    }
}

impl CompactionStrategy for Coalesce {
    fn get_name(&self) -> &'static str {
        "ProvledgerCoalesce"
    }

    fn choose(&self, levels: &LevelManifest, _: &lsm_tree::Config) -> Choice {
        // Only a level 0 that holds everything, disjoint and with nothing being compacted: the
        // shape `entries` keeps under the FIFO strategy.
        let view = levels.resolved_view();
        let Some((first, deeper)) = view.split_first() else {
            return Choice::DoNothing;
        };
        if !first.is_disjoint
            || deeper.iter().any(|level| !level.segments.is_empty())
            || !levels.busy_levels().is_empty()
        {
            return Choice::DoNothing;
        }
        let mut segments: Vec<_> = first.segments.iter().collect();
        segments.sort_by(|a, b| a.metadata.key_range.min().cmp(b.metadata.key_range.min()));
        let sizes: Vec<(SegmentId, u64)> = segments
            .iter()
            .map(|s| (s.id(), s.metadata.file_size))
            .collect();
        match self.plan(&sizes) {
            Some(ids) => Choice::Merge(Input {
                segment_ids: ids.into_iter().collect(),
                dest_level: 0,
                target_size: self.target,
            }),
            None => Choice::DoNothing,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;
    use proptest::prelude::*;

    const MIB: u64 = 1024 * 1024;

    /// A segment's id and key range (first and last key).
    type Span = (SegmentId, Vec<u8>, Vec<u8>);

    /// Level 0 of a partition: its segments in key order, and whether they are disjoint.
    fn level_zero(partition: &fjall::PartitionHandle) -> (Vec<Span>, bool) {
        let fjall::AnyTree::Standard(tree) = &partition.tree else {
            panic!("entries is a standard tree");
        };
        let levels = tree.levels.read().unwrap();
        let view = levels.resolved_view();
        assert!(
            view.iter().skip(1).all(|l| l.segments.is_empty()),
            "all in level 0"
        );
        let mut segments: Vec<_> = view[0]
            .segments
            .iter()
            .map(|s| {
                let r = &s.metadata.key_range;
                (s.id(), r.min().to_vec(), r.max().to_vec())
            })
            .collect();
        segments.sort_by(|a, b| a.1.cmp(&b.1));
        (segments, view[0].is_disjoint)
    }

    /// An incompressible value for `index` (so that segment sizes are what the test expects).
    fn value(index: u64) -> Vec<u8> {
        use sha2::{Digest, Sha256};
        (0..32u64)
            .flat_map(|k| Sha256::digest([index.to_be_bytes(), k.to_be_bytes()].concat()))
            .collect()
    }

    #[test]
    fn merges_keep_every_entry_and_the_level_disjoint_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        // Twelve flushes of 40 entries of 1 KiB: segments of ~41 KiB.
        let (flushes, per) = (12u64, 40u64);
        crate::store::tests::write_entry_segments(&store, flushes, per, value);
        assert!(crate::seal::settle(&store, Duration::from_secs(30)));
        assert_eq!(store.entries.segment_count(), flushes as usize);
        // Below the count of small segments, nothing.
        let strategy = Coalesce {
            at: 13,
            target: 200 * 1024,
        };
        assert!(!step(&store, strategy).unwrap());
        assert_eq!(store.entries.segment_count(), flushes as usize);
        // Runs of up to 200 KiB: four segments each (~164 KiB), then the last four are small
        // and too few to be worth a merge once the count of small ones is under `at`.
        let strategy = Coalesce {
            at: 5,
            target: 200 * 1024,
        };
        let mut merges = 0;
        while step(&store, strategy).unwrap() {
            merges += 1;
        }
        assert_eq!(merges, 2, "{:?}", level_zero(&store.entries));
        let (segments, disjoint) = level_zero(&store.entries);
        assert_eq!(segments.len(), 6);
        assert!(disjoint);
        for pair in segments.windows(2) {
            assert!(pair[0].2 < pair[1].1, "key ranges overlap: {pair:?}");
        }
        let check = |store: &Store| {
            let all: Vec<_> = store.entries.iter().map(|kv| kv.unwrap()).collect();
            assert_eq!(all.len() as u64, flushes * per);
            for (i, (k, v)) in (0u64..).zip(all) {
                assert_eq!(&*k, i.to_be_bytes());
                assert_eq!(&*v, value(i));
            }
            for i in [0, per - 1, per, 5 * per + 7, flushes * per - 1] {
                assert_eq!(
                    store.entries.get(i.to_be_bytes()).unwrap().unwrap(),
                    value(i)
                );
            }
        };
        check(&store);
        drop(store);
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(level_zero(&store.entries).0, segments);
        check(&store);
    }

    #[test]
    fn a_coalesced_log_verifies_and_proves_every_record() {
        use provledger_signer::{verify_inclusion, SigningKey};
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate("test.example/log").unwrap();
        let vkey = key.verifier();
        let skey = key.to_skey().to_string();
        let config = crate::LedgerConfig::new(dir.path());
        let ledger = crate::Ledger::open(&config, key, &prometheus::Registry::new()).unwrap();
        let record = |i: u64| {
            let input: crate::RecordInput = serde_json::from_value(serde_json::json!({
                "kind": "output",
                "entity": format!("doc:{}", i % 5),
                "actor": {"type": "agent", "id": "a1"},
                "attributes": {"n": i},
                "payload": {"text": format!("message {i}")},
            }))
            .unwrap();
            crate::PreparedRecord::prepare(input, "record").unwrap()
        };
        let (batches, per) = (10u64, 60u64);
        for b in 0..batches {
            ledger
                .append_blocking((b * per..(b + 1) * per).map(record).collect())
                .unwrap();
            // Every partition, as the upkeep thread's journal freeing does, so that the journals
            // go once flushed: otherwise the next open recovers a memtable per partition per
            // journal, which fjall 2.11 is slow to flush (`store::unstall_flushes`).
            for (_, partition) in ledger.store().partitions() {
                partition.rotate_memtable_and_wait().unwrap();
            }
        }
        let before = ledger.store().entries.segment_count();
        assert!(before >= batches as usize, "{before} segments");
        let strategy = Coalesce {
            at: 4,
            target: 16 * MIB,
        };
        assert!(step(ledger.store(), strategy).unwrap());
        let after = ledger.store().entries.segment_count();
        assert!(after < before, "{before} -> {after}");
        assert!(level_zero(&ledger.store().entries).1);
        let head = ledger.head();
        for index in 0..batches * per {
            let stored = ledger.record_at(index).unwrap();
            assert_eq!(stored.leaf.index, index);
            let proof = ledger.inclusion_proof(index, None).unwrap();
            assert_eq!(proof.leaf_hash, stored.id);
            verify_inclusion(
                &proof.leaf_hash,
                index,
                head.size,
                &proof.hashes,
                &head.root,
            )
            .unwrap();
        }
        drop(ledger);
        let report = crate::verify_data_dir(dir.path(), &vkey, |_, _| {}).unwrap();
        assert_eq!(report.tree_size, batches * per);
        let key = SigningKey::from_skey(&skey).unwrap();
        let ledger = crate::Ledger::open(&config, key, &prometheus::Registry::new()).unwrap();
        assert_eq!(ledger.head().size, batches * per);
        assert_eq!(ledger.store().entries.segment_count(), after);
        assert_eq!(
            ledger.record_at(batches * per - 1).unwrap().leaf.index,
            batches * per - 1
        );
    }

    fn c(at: usize) -> Coalesce {
        Coalesce {
            at,
            target: 64 * MIB,
        }
    }

    fn segments(sizes: &[u64]) -> Vec<(SegmentId, u64)> {
        (0u64..).zip(sizes.iter().map(|s| s * MIB)).collect()
    }

    #[test]
    fn nothing_below_the_count_of_small_segments() {
        let s = segments(&[10, 10, 10, 10, 100, 4]);
        assert_eq!(c(6).plan(&s), None, "five small segments, six needed");
        assert_eq!(c(5).plan(&s), Some(vec![0, 1, 2, 3]));
    }

    #[test]
    fn the_oldest_run_first_as_much_as_fits() {
        // 10 + 20 + 30 = 60 MiB; the next 10 would pass 64.
        let s = segments(&[60, 10, 20, 30, 10, 5, 40]);
        assert_eq!(c(1).plan(&s), Some(vec![1, 2, 3]));
        let s = segments(&[10, 20, 30, 10]);
        assert_eq!(c(1).plan(&s), Some(vec![0, 1, 2]));
    }

    #[test]
    fn a_large_segment_ends_a_run_and_a_short_run_is_skipped() {
        // 4 + 4 = 8 MiB in two segments is not worth a merge; the run after the large one is.
        let s = segments(&[4, 4, 40, 16, 16, 1]);
        assert_eq!(c(1).plan(&s), Some(vec![3, 4, 5]));
        // Eight small ones are worth it, however small.
        let s = segments(&[1, 1, 1, 1, 1, 1, 1, 1, 50]);
        assert_eq!(c(1).plan(&s), Some((0..8).collect()));
        let s = segments(&[1, 1, 1, 1, 1, 1, 1, 50]);
        assert_eq!(c(1).plan(&s), None);
    }

    #[test]
    fn a_small_segment_that_does_not_fit_starts_the_next_run() {
        let s = segments(&[30, 30, 20, 20]);
        assert_eq!(c(1).plan(&s), Some(vec![0, 1]));
        let s = segments(&[2, 31, 31, 31]);
        assert_eq!(c(1).plan(&s), Some(vec![0, 1, 2]));
    }

    proptest! {
        /// A plan is a run of neighbours, all small, within the target, worth a merge, and
        /// there is one whenever the count is reached and a worthwhile run exists.
        #[test]
        fn plans_are_runs_of_small_neighbours_within_the_target(
            sizes in proptest::collection::vec(0u64..80, 0..60),
            at in 0usize..40,
        ) {
            let s = segments(&sizes);
            let co = c(at);
            match co.plan(&s) {
                Some(ids) => {
                    let first = ids[0];
                    prop_assert!(ids.len() >= 2);
                    let run: Vec<SegmentId> = (first..).take(ids.len()).collect();
                    prop_assert_eq!(ids.clone(), run);
                    let bytes: u64 = ids.iter().map(|&i| s[i as usize].1).sum();
                    prop_assert!(bytes <= co.target);
                    prop_assert!(ids.iter().all(|&i| co.small(s[i as usize].1)));
                    prop_assert!(co.worth(ids.len(), bytes));
                    prop_assert!(s.iter().filter(|(_, b)| co.small(*b)).count() >= at);
                }
                None => {
                    // No two neighbouring small segments of the first half-target or eight.
                    let enough = s.iter().filter(|(_, b)| co.small(*b)).count() >= at;
                    if enough {
                        for w in 2..=s.len() {
                            for run in s.windows(w) {
                                let bytes: u64 = run.iter().map(|(_, b)| b).sum();
                                let small = run.iter().all(|(_, b)| co.small(*b));
                                let ok = small && bytes <= co.target;
                                prop_assert!(!(ok && co.worth(w, bytes)), "missed {:?}", run);
                            }
                        }
                    }
                }
            }
        }
    }
}
