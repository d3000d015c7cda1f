//! The `payloads` partition: salted payloads stored in runs of consecutive indexes.
//!
//! A run is one key, the index of its first record (u64 BE), whose value is one slot per
//! record, in index order: a slot is `len` (u32 BE) followed by the salt (32 bytes) and `len`
//! bytes of RFC 8785 JSON, or just `len` = `0xFFFF_FFFF` for a record without a stored payload
//! (none given, or erased). A run holds at most [`RUN`] records and never crosses a multiple of
//! [`RUN`], so the run holding index `i` starts within `i - (i mod RUN) ..= i`, and reads are a
//! short range. The writer ends a run with each append batch; runs are written once, and
//! rewritten only by an erasure (the run without the erased payloads, in the erasure's atomic
//! batch), whose older version compaction then drops (`compact.rs`).
//!
//! fjall's work is per key (memtable inserts, flushes, compaction), and payloads were one of
//! the four keys every record wrote: runs of 16 took ~4 % off the server's CPU per record under
//! batch ingest and added 5–12 % to in-process appends (`docs/benchmarks.md`, session 15).
//!
//! Data directories written before runs hold one key per index, value salt ‖ JSON. Opening
//! a ledger moves them to runs ([`Store::migrate_payloads`]) in fsynced steps; `meta` records
//! how far it got (`payload_runs_below`) so a crash midway resumes, and readers use the old
//! layout for indexes at or beyond that point (`verify` reads a directory as it is).

use fjall::Slice;

use crate::store::{be_u64, Store};
use crate::LedgerError;

/// Most records in one run; runs never cross a multiple of it.
pub(crate) const RUN: u64 = 16;
const ABSENT: u32 = u32::MAX;
const SALT_LEN: usize = 32;
/// `meta` key: indexes below its value (u64 BE) are stored in runs; `u64::MAX` once every
/// payload is. Absent in directories written before runs.
pub(crate) const RUNS_BELOW_KEY: &[u8] = b"payload_runs_below";
/// Legacy payloads moved per fsynced step of the migration.
const MIGRATE_STEP: usize = 4096;

/// A run being built: its first index and its encoded slots.
#[derive(Debug, Default)]
pub(crate) struct RunBuilder {
    start: u64,
    slots: u64,
    bytes: Vec<u8>,
}

impl RunBuilder {
    /// Adds the slot of `index` (after the slots added before it); returns the finished run
    /// first when `index` cannot extend this one: it lies in another group of [`RUN`]. A gap
    /// within the group is filled with empty slots.
    pub(crate) fn push(
        &mut self,
        index: u64,
        payload: Option<(&[u8], &[u8])>,
    ) -> Option<(u64, Vec<u8>)> {
        let next = self.start + self.slots;
        let done = if self.slots > 0 && (index < next || index / RUN != self.start / RUN) {
            self.finish()
        } else {
            None
        };
        if self.slots == 0 {
            self.start = index;
        }
        while self.start + self.slots < index {
            push_slot(&mut self.bytes, None);
            self.slots += 1;
        }
        push_slot(&mut self.bytes, payload);
        self.slots += 1;
        done
    }

    /// The run so far, if it holds anything, leaving the builder empty.
    pub(crate) fn finish(&mut self) -> Option<(u64, Vec<u8>)> {
        if self.slots == 0 {
            return None;
        }
        self.slots = 0;
        Some((self.start, std::mem::take(&mut self.bytes)))
    }
}

fn push_slot(out: &mut Vec<u8>, payload: Option<(&[u8], &[u8])>) {
    match payload {
        None => out.extend_from_slice(&ABSENT.to_be_bytes()),
        Some((salt, json)) => {
            // `SealedPayload::seal` refuses payloads longer than `u32::MAX - 1` bytes.
            let len = u32::try_from(json.len()).unwrap_or(ABSENT - 1);
            out.reserve(4 + SALT_LEN + json.len());
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(salt);
            out.extend_from_slice(json);
        }
    }
}

/// A run of slots given as stored (`salt ‖ JSON`, as [`slots`] returns them).
fn encode_stored<'a>(stored: impl IntoIterator<Item = Option<&'a [u8]>>) -> Vec<u8> {
    let mut out = Vec::new();
    for slot in stored {
        push_slot(&mut out, slot.map(|s| s.split_at(SALT_LEN.min(s.len()))));
    }
    out
}

/// The slots of an encoded run: `salt ‖ JSON` of each record, `None` where nothing is stored.
pub(crate) fn slots(run: &[u8]) -> Result<Vec<Option<&[u8]>>, LedgerError> {
    let bad = |what: &str| LedgerError::Corrupt(format!("payload run: {what}"));
    let mut out = Vec::new();
    let mut rest = run;
    while !rest.is_empty() {
        let (len, tail) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| bad("truncated slot length"))?;
        let len = u32::from_be_bytes(*len);
        if len == ABSENT {
            out.push(None);
            rest = tail;
            continue;
        }
        let n = SALT_LEN + len as usize;
        let (slot, tail) = tail
            .split_at_checked(n)
            .ok_or_else(|| bad("slot runs past the end"))?;
        out.push(Some(slot));
        rest = tail;
    }
    if out.len() as u64 > RUN {
        return Err(bad("more slots than a run holds"));
    }
    Ok(out)
}

/// Reads payloads, keeping the last run it read: reading indexes in ascending order (as
/// `verify` does) costs one read per run instead of one per record.
pub(crate) struct PayloadReader<'a> {
    store: &'a Store,
    /// The last run read: its first index, the index after its last slot, and its bytes.
    run: Option<(u64, u64, Slice)>,
}

impl<'a> PayloadReader<'a> {
    pub(crate) fn new(store: &'a Store) -> PayloadReader<'a> {
        PayloadReader { store, run: None }
    }

    /// The stored `salt ‖ RFC 8785 JSON` of the record at `index`, `None` if it has none.
    pub(crate) fn payload(&mut self, index: u64) -> Result<Option<Vec<u8>>, LedgerError> {
        if index >= self.store.payload_runs_below {
            let legacy = self.store.payloads.get(index.to_be_bytes())?;
            return Ok(legacy.map(|v| v.to_vec()));
        }
        // Runs never overlap: one whose slots reach `index` is the one that holds it.
        let cached = |&(start, end, _): &(u64, u64, Slice)| start <= index && index < end;
        if !self.run.as_ref().is_some_and(cached) {
            let Some((start, run)) = self.store.run_holding(index)? else {
                return Ok(None);
            };
            let end = start + slots(&run)?.len() as u64;
            self.run = Some((start, end, run));
        }
        let Some((start, _, run)) = self.run.as_ref().filter(|r| cached(r)) else {
            return Ok(None);
        };
        let offset = usize::try_from(index - start).unwrap_or(usize::MAX);
        Ok(slots(run)?
            .get(offset)
            .copied()
            .flatten()
            .map(<[u8]>::to_vec))
    }
}

impl Store {
    /// The stored `salt ‖ RFC 8785 JSON` of the record at `index`, `None` if it has none.
    pub(crate) fn payload(&self, index: u64) -> Result<Option<Vec<u8>>, LedgerError> {
        PayloadReader::new(self).payload(index)
    }

    /// The run whose slots cover `index`, with its first index.
    fn run_holding(&self, index: u64) -> Result<Option<(u64, Slice)>, LedgerError> {
        let lowest = index - index % RUN;
        let Some(kv) = self
            .payloads
            .range(lowest.to_be_bytes()..=index.to_be_bytes())
            .next_back()
        else {
            return Ok(None);
        };
        let (k, v) = kv?;
        Ok(Some((be_u64(&k)?, v)))
    }

    /// Calls `each` with every index in `from..to` that has a stored payload, in order, until
    /// it answers `false`.
    pub(crate) fn payload_indexes(
        &self,
        from: u64,
        to: u64,
        mut each: impl FnMut(u64) -> Result<bool, LedgerError>,
    ) -> Result<(), LedgerError> {
        let split = to.min(self.payload_runs_below).max(from);
        let lowest = from - from % RUN;
        if from < split {
            for kv in self
                .payloads
                .range(lowest.to_be_bytes()..split.to_be_bytes())
            {
                let (k, v) = kv?;
                let start = be_u64(&k)?;
                for (index, slot) in (start..).zip(slots(&v)?) {
                    if slot.is_some() && (from..split).contains(&index) && !each(index)? {
                        return Ok(());
                    }
                }
            }
        }
        for kv in self
            .payloads
            .range(split.to_be_bytes()..to.max(split).to_be_bytes())
        {
            let (k, _) = kv?;
            if !each(be_u64(&k)?)? {
                return Ok(());
            }
        }
        Ok(())
    }

    /// The writes that remove the payloads of `indexes` (each stored in a run): every run
    /// holding one of them, rewritten without it. Reads the store, so every batch that wrote
    /// those runs must have been committed.
    pub(crate) fn payload_removals(
        &self,
        indexes: &[u64],
    ) -> Result<Vec<(u64, Vec<u8>)>, LedgerError> {
        let mut sorted = indexes.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let mut out: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut i = 0;
        while let Some(&index) = sorted.get(i) {
            if index >= self.payload_runs_below {
                return Err(LedgerError::Corrupt(format!(
                    "payload {index} is in the layout of an earlier build"
                )));
            }
            let Some((start, run)) = self.run_holding(index)? else {
                i += 1;
                continue;
            };
            let slots = slots(&run)?;
            let end = start + slots.len() as u64;
            if index >= end {
                // No run covers it: nothing stored to remove.
                i += 1;
                continue;
            }
            let kept = (start..)
                .zip(slots)
                .map(|(at, slot)| slot.filter(|_| sorted.binary_search(&at).is_err()));
            out.push((start, encode_stored(kept)));
            while sorted.get(i).is_some_and(|&x| x < end) {
                i += 1;
            }
        }
        Ok(out)
    }

    /// Moves payloads stored one key per index (builds before session 15) into runs, in
    /// fsynced steps of [`MIGRATE_STEP`]; returns how many moved. A new directory is marked
    /// as all runs at once.
    pub(crate) fn migrate_payloads(
        &mut self,
        mut progress: impl FnMut(u64),
    ) -> Result<u64, LedgerError> {
        let mut moved = 0u64;
        if self.payload_runs_below == u64::MAX && self.meta.get(RUNS_BELOW_KEY)?.is_none() {
            // New: marked before anything is stored, so no later open takes it for old.
            let mut batch = self
                .keyspace
                .batch()
                .durability(Some(fjall::PersistMode::SyncAll));
            batch.insert(&self.meta, RUNS_BELOW_KEY, u64::MAX.to_be_bytes());
            batch.commit()?;
        }
        while self.payload_runs_below != u64::MAX {
            let from = self.payload_runs_below;
            let mut batch = self
                .keyspace
                .batch()
                .durability(Some(fjall::PersistMode::SyncAll));
            let mut run = RunBuilder::default();
            let mut runs = Vec::new();
            let mut last = None;
            let mut step = 0u64;
            for kv in self.payloads.range(from.to_be_bytes()..).take(MIGRATE_STEP) {
                let (k, v) = kv?;
                let index = be_u64(&k)?;
                let (salt, json) = v.split_at_checked(SALT_LEN).ok_or_else(|| {
                    LedgerError::Corrupt(format!("payload {index} is shorter than its salt"))
                })?;
                runs.extend(run.push(index, Some((salt, json))));
                // The run's own key is overwritten with the run; the others go.
                if index != run.start {
                    batch.remove(&self.payloads, k);
                }
                last = Some(index);
                step += 1;
            }
            runs.extend(run.finish());
            for (start, bytes) in runs {
                batch.insert(&self.payloads, start.to_be_bytes(), bytes);
            }
            // The next step starts after the last index moved, with a run of its own: runs
            // never join across steps. Until then readers take indexes from `below` on as old.
            let below = match last {
                Some(index) => index + 1,
                None => u64::MAX,
            };
            batch.insert(&self.meta, RUNS_BELOW_KEY, below.to_be_bytes());
            batch.commit()?;
            // The step removed old keys: before any compaction sees those tombstones, so that
            // none brings an old key back (see `compact.rs`).
            crate::compact::advance_gc_watermark(self);
            moved += step;
            self.payload_runs_below = below;
            progress(moved);
        }
        Ok(moved)
    }
}

#[cfg(test)]
impl Store {
    /// Stores `payload` (salt ‖ JSON, or nothing) for `index` in the run that covers it, in a
    /// write of its own: for tests that damage a directory the way a bug or an editor would.
    pub(crate) fn set_payload(
        &self,
        index: u64,
        payload: Option<&[u8]>,
    ) -> Result<(), LedgerError> {
        let missing = || LedgerError::Corrupt(format!("no payload run covers {index}"));
        let (start, run) = self.run_holding(index)?.ok_or_else(missing)?;
        let slots = slots(&run)?;
        if index - start >= slots.len() as u64 {
            return Err(missing());
        }
        let replaced = (start..)
            .zip(slots)
            .map(|(at, slot)| if at == index { payload } else { slot });
        self.payloads
            .insert(start.to_be_bytes(), encode_stored(replaced))?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests: a panic is a failure report
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Whatever the indexes (with gaps) and payloads (with absent ones), the runs hand back
        /// every slot in order, hold 1..=16 slots and never cross a multiple of 16.
        #[test]
        fn runs_hold_every_slot_in_order_within_their_group(
            first in 0u64..100,
            steps in proptest::collection::vec(
                (0u64..3, proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40))),
                0..100,
            ),
        ) {
            let mut builder = RunBuilder::default();
            let mut runs = Vec::new();
            let mut want = Vec::new();
            let mut index = first;
            for (skip, payload) in &steps {
                index += skip;
                let salt = [index as u8; SALT_LEN];
                runs.extend(builder.push(index, payload.as_deref().map(|p| (&salt[..], p))));
                want.push((index, payload.as_ref().map(|p| [&salt[..], p].concat())));
                index += 1;
            }
            runs.extend(builder.finish());
            let mut got = std::collections::BTreeMap::new();
            for (start, bytes) in &runs {
                let s = slots(bytes).unwrap();
                prop_assert!(!s.is_empty() && s.len() as u64 <= RUN);
                let last = start + s.len() as u64 - 1;
                prop_assert_eq!(start / RUN, last / RUN, "run {} crosses a multiple", start);
                for (i, slot) in (*start..).zip(s) {
                    prop_assert!(got.insert(i, slot.map(<[u8]>::to_vec)).is_none(), "{} twice", i);
                }
            }
            // Every slot as given; the gaps filled within a group are empty.
            for (i, w) in &want {
                prop_assert_eq!(got.remove(i), Some(w.clone()), "slot {}", i);
            }
            prop_assert!(got.values().all(Option::is_none), "{:?}", got);
        }
    }

    #[test]
    fn a_damaged_run_is_reported_as_corrupt() {
        let mut run = Vec::new();
        push_slot(&mut run, Some((&[1; SALT_LEN], b"{}")));
        for cut in [1, 3, 5, run.len() - 1] {
            let e = slots(&run[..cut]).unwrap_err().to_string();
            assert!(e.contains("payload run"), "{cut}: {e}");
        }
        let mut long = Vec::new();
        for _ in 0..=RUN {
            push_slot(&mut long, None);
        }
        assert!(slots(&long).unwrap_err().to_string().contains("more slots"));
        assert_eq!(slots(&long[4..]).unwrap().len() as u64, RUN);
    }
}
