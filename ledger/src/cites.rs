//! The cited-by index, partition `cited_by`: for every ref, the cited record, the citing record
//! and the ref's position, so that "who cites this" (lineage downstream, erasure checks) is a
//! key range, never a scan of the log.
//!
//! A key is cited index (u64 BE) ‖ citing index (u64 BE) ‖ position of the ref in the citing
//! leaf (u16 BE), 18 bytes; the value is the ref's role. Keyed by the cited record's index
//! rather than its 32-byte leaf hash, the key is short enough for fjall to keep inline in its
//! memtable, and refs to records appended lately — most refs — write keys near each other
//! rather than all over the key space: with two refs a record, the process took 7 % (300,000
//! records) to 11 % (two million) less CPU per record in process, and the server 14 % less over
//! HTTP (`docs/benchmarks.md`, session 23). A reader that starts from a record id finds its
//! index in `ids` first.
//!
//! Directories written before session 23 hold partition `cites` instead (cited leaf hash ‖
//! citing index ‖ position → role). Nothing rewrites it: the first start of a newer build
//! stores the tree size then as `meta/cited_by_from`, refs of records below it stay in `cites`
//! and those from it on go to `cited_by`, and every reader reads both (the citing indexes of
//! the one all lie below those of the other).

use fjall::Slice;
use provledger_signer::Hash;

use crate::store::{be_u64, Store};
use crate::LedgerError;

/// `meta` key: refs of records with indexes from this on are in `cited_by`, those below in the
/// legacy `cites` (u64 BE).
pub(crate) const CITED_BY_FROM_KEY: &[u8] = b"cited_by_from";

/// Key in `cited_by`: cited index ‖ citing index ‖ position.
pub(crate) fn key(cited: u64, citing: u64, position: u16) -> [u8; 18] {
    let mut k = [0u8; 18];
    let (c, rest) = k.split_at_mut(8);
    let (i, p) = rest.split_at_mut(8);
    c.copy_from_slice(&cited.to_be_bytes());
    i.copy_from_slice(&citing.to_be_bytes());
    p.copy_from_slice(&position.to_be_bytes());
    k
}

/// Key in the legacy `cites`: cited leaf hash ‖ citing index ‖ position.
fn legacy_key(cited: &Hash, citing: u64, position: u16) -> Vec<u8> {
    let mut k = Vec::with_capacity(42);
    k.extend_from_slice(cited.as_bytes());
    k.extend_from_slice(&citing.to_be_bytes());
    k.extend_from_slice(&position.to_be_bytes());
    k
}

impl Store {
    /// Calls `visit` with each ref to record `id` from records with indexes in `from..to`,
    /// oldest first: `(citing index, role)`, until it returns `false`. A visitor rather than a
    /// list, so that a reader looking for one ref (an erasure) stops there, even under a record
    /// that millions cite.
    pub(crate) fn each_citing(
        &self,
        id: &Hash,
        from: u64,
        to: u64,
        mut visit: impl FnMut(u64, Slice) -> bool,
    ) -> Result<(), LedgerError> {
        let split = |k: &[u8], at: usize| be_u64(k.get(at..at + 8).unwrap_or_default());
        let legacy_to = to.min(self.cited_by_from);
        if let Some(legacy) = self.legacy_cites.as_ref().filter(|_| from < legacy_to) {
            for kv in legacy.range(legacy_key(id, from, 0)..legacy_key(id, legacy_to, 0)) {
                let (k, role) = kv?;
                if !visit(split(&k, 32)?, role) {
                    return Ok(());
                }
            }
        }
        let from = from.max(self.cited_by_from);
        if from >= to {
            return Ok(());
        }
        let Some((cited, _)) = self.lookup_id(id)? else {
            return Ok(());
        };
        for kv in self.cited_by.range(key(cited, from, 0)..key(cited, to, 0)) {
            let (k, role) = kv?;
            if !visit(split(&k, 8)?, role) {
                break;
            }
        }
        Ok(())
    }

    /// The role of ref number `position` of the record at `citing`, which cites record `cited`
    /// (leaf hash and index), as the index holds it (`verify`).
    pub(crate) fn cited_role(
        &self,
        cited: (&Hash, u64),
        citing: u64,
        position: u16,
    ) -> Result<Option<Slice>, LedgerError> {
        if citing < self.cited_by_from {
            return match &self.legacy_cites {
                Some(legacy) => Ok(legacy.get(legacy_key(cited.0, citing, position))?),
                None => Ok(None),
            };
        }
        Ok(self.cited_by.get(key(cited.1, citing, position))?)
    }

    /// How many refs the index holds, in both layouts (`verify`).
    pub(crate) fn cites_count(&self) -> Result<u64, LedgerError> {
        let legacy = match &self.legacy_cites {
            Some(p) => p.len()?,
            None => 0,
        };
        Ok((self.cited_by.len()? + legacy) as u64)
    }

    /// Marks, durably, where `cited_by` starts in this directory, if no ledger has yet: the
    /// tree size now (0 for a new one). Call before anything is appended.
    pub(crate) fn mark_cited_by(&mut self, size: u64) -> Result<(), LedgerError> {
        if self.mark_once(CITED_BY_FROM_KEY, size)? {
            self.cited_by_from = size;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests: a panic is a failure report
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Keys are 18 bytes (inline in fjall) and sort by cited index, then citing index,
        /// then position: one record's citations are one key range, oldest first.
        #[test]
        fn keys_sort_by_cited_then_citing_then_position(
            a in any::<(u64, u64, u16)>(),
            b in any::<(u64, u64, u16)>(),
        ) {
            let (ka, kb) = (key(a.0, a.1, a.2), key(b.0, b.1, b.2));
            prop_assert_eq!(ka.len(), 18);
            prop_assert_eq!(ka.cmp(&kb), a.cmp(&b));
            prop_assert_eq!(be_u64(&ka[8..16]).unwrap(), a.1);
        }
    }
}
