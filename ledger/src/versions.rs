//! The entity version index, partition `entity_versions`: every version of an entity in index
//! order, for refs by entity name (the latest version), entity histories and erasure by entity.
//!
//! An entity's name is `tenant ‖ 0 ‖ entity ‖ 0` (entity names hold no control characters, so
//! the split is unambiguous) and its digest SHA-256 of that. A version's key is the digest's
//! first 12 bytes (the entity's *tag*) ‖ index (u64 BE); its value is the digest's other 20
//! bytes (the *check*). Readers take the versions under a tag whose check matches and skip the
//! others: two names whose tags agree (2^48 work to make between two names of one's own, 2^96
//! to hit a given one) share a key range and cost a reader a skipped entry, never a wrong
//! answer; a wrong answer needs a SHA-256 collision.
//!
//! A version's leaf hash (its record's id) is not in the value: readers take it from the
//! version's full level-0 tile, or hash the stored leaf ([`Store::leaf_hash_at`]). Refs by name
//! to recently committed versions, which most refs are, never get here: the writer keeps what
//! it committed lately (`pipeline.rs`). Without the hash the value is 20 bytes, inline in
//! fjall's memtable like the key: ~12 % of the process's CPU per record in process
//! (`docs/benchmarks.md`, sessions 21 and 23). Values written before session 23 are *wide*
//! (leaf hash ‖ check, 52 bytes), as are those moved from a legacy index (below); readers take
//! both, and nothing rewrites them.
//!
//! Why a digest and not the name: the key is 20 bytes, which fjall keeps inline in the
//! memtable's skiplist node (its `Slice` stores up to 20 bytes in place), and its first 4
//! bytes, which fjall compares before the rest, differ between entities. The name itself
//! (tenant first) made every key share its first bytes with every other of the tenant, so each
//! comparison of an insert's search, a flush and a compaction followed a pointer to the key's
//! bytes. Measured with `append_profile 304 4`: the committer's CPU per record 3.21 → 2.66 µs
//! (no entity index at all: 1.91), `docs/benchmarks.md`, session 17.
//!
//! Directories of earlier builds hold partition `versions` (name ‖ index → leaf hash).
//! [`Store::migrate_versions`] moves it here when a ledger opens the directory, in fsynced
//! steps that each remove what they moved, and then drops it; until then `verify` reads both.

use std::ops::Bound;

use provledger_signer::Hash;
use sha2::{Digest, Sha256};

use crate::store::{be_u64, Store};
use crate::LedgerError;

/// Bytes of the name digest in the key.
const TAG_LEN: usize = 12;
/// A key: tag ‖ index.
const KEY_LEN: usize = TAG_LEN + 8;
/// A value: the rest of the name digest.
const VALUE_LEN: usize = 32 - TAG_LEN;
/// A value written before session 23: leaf hash ‖ the rest of the name digest.
const WIDE_VALUE_LEN: usize = 32 + VALUE_LEN;
/// Legacy keys moved per fsynced step of [`Store::migrate_versions`].
const MIGRATE_STEP: usize = 65_536;

/// An entity's place in the index: the digest of its name, split into tag and check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct EntityName {
    tag: [u8; TAG_LEN],
    check: [u8; VALUE_LEN],
}

impl EntityName {
    pub(crate) fn new(tenant: &str, entity: &str) -> EntityName {
        let mut h = Sha256::new();
        h.update(tenant.as_bytes());
        h.update([0]);
        h.update(entity.as_bytes());
        h.update([0]);
        EntityName::from_digest(h.finalize().into())
    }

    /// From a legacy key's name part (`tenant ‖ 0 ‖ entity ‖ 0`), the same bytes [`Self::new`]
    /// hashes.
    fn from_legacy(name: &[u8]) -> EntityName {
        EntityName::from_digest(Sha256::digest(name).into())
    }

    fn from_digest(digest: [u8; 32]) -> EntityName {
        let (tag, check) = digest.split_at(TAG_LEN);
        EntityName {
            tag: tag.try_into().unwrap_or_default(),
            check: check.try_into().unwrap_or_default(),
        }
    }

    /// The key of this entity's version at `index`.
    pub(crate) fn key(&self, index: u64) -> [u8; KEY_LEN] {
        let mut k = [0u8; KEY_LEN];
        let (tag, at) = k.split_at_mut(TAG_LEN);
        tag.copy_from_slice(&self.tag);
        at.copy_from_slice(&index.to_be_bytes());
        k
    }

    /// The value of each of this entity's versions.
    pub(crate) fn value(&self) -> [u8; VALUE_LEN] {
        self.check
    }

    /// The wide value of this entity's version whose leaf hash is `leaf`: what builds before
    /// session 23 wrote, and what the move of a legacy index writes (whose entries hold the
    /// leaf hash).
    fn wide_value(&self, leaf: &Hash) -> [u8; WIDE_VALUE_LEN] {
        let mut v = [0u8; WIDE_VALUE_LEN];
        let (hash, check) = v.split_at_mut(32);
        hash.copy_from_slice(leaf.as_bytes());
        check.copy_from_slice(&self.check);
        v
    }

    /// The index of a stored version under this entity's tag, and its leaf hash when the value
    /// holds it (a wide value); `None` when the entry is another entity's (whose tag is the
    /// same).
    fn version(
        &self,
        key: &[u8],
        value: &[u8],
    ) -> Result<Option<(u64, Option<Hash>)>, LedgerError> {
        let bad = || LedgerError::Corrupt("malformed entity version entry".into());
        if key.len() != KEY_LEN {
            return Err(bad());
        }
        let (hash, check) = match value.len() {
            VALUE_LEN => (None, value),
            WIDE_VALUE_LEN => {
                let (hash, check) = value.split_at(32);
                (Some(hash), check)
            }
            _ => return Err(bad()),
        };
        if check != self.check {
            return Ok(None);
        }
        let index = be_u64(key.get(TAG_LEN..).ok_or_else(bad)?)?;
        let hash = hash
            .map(Hash::from_slice)
            .transpose()
            .map_err(|e| LedgerError::Corrupt(e.to_string()))?;
        Ok(Some((index, hash)))
    }

    /// Whether `value` is this entity's version whose leaf hash is `leaf`, in either layout.
    fn holds(&self, value: &[u8], leaf: &Hash) -> bool {
        match value.split_at_checked(32) {
            Some((hash, check)) if value.len() == WIDE_VALUE_LEN => {
                hash == leaf.as_bytes() && check == self.check
            }
            _ => value == self.check,
        }
    }
}

impl Store {
    /// Index and leaf hash of the latest version of an entity.
    pub(crate) fn latest_version(
        &self,
        name: &EntityName,
    ) -> Result<Option<(u64, Hash)>, LedgerError> {
        for kv in self.versions.prefix(name.tag).rev() {
            let (k, v) = kv?;
            if let Some(found) = name.version(&k, &v)? {
                return self.with_leaf_hash(found).map(Some);
            }
        }
        Ok(None)
    }

    /// A version with its leaf hash: the one its value holds, else the stored leaf's.
    fn with_leaf_hash(
        &self,
        (index, hash): (u64, Option<Hash>),
    ) -> Result<(u64, Hash), LedgerError> {
        match hash {
            Some(hash) => Ok((index, hash)),
            None => Ok((index, self.leaf_hash_at(index)?)),
        }
    }

    /// The versions of an entity with indexes in `from..to`, oldest first: `(index, leaf hash)`.
    pub(crate) fn versions_of(
        &self,
        tenant: &str,
        entity: &str,
        from: u64,
        to: u64,
    ) -> impl Iterator<Item = Result<(u64, Hash), LedgerError>> + use<'_> {
        let name = EntityName::new(tenant, entity);
        self.versions
            .range(name.key(from)..name.key(to.max(from)))
            .filter_map(move |kv| match kv {
                Ok((k, v)) => name.version(&k, &v).transpose(),
                Err(e) => Some(Err(e.into())),
            })
            .map(|found| self.with_leaf_hash(found?))
    }

    /// Whether the index holds the version of `entity` at `index` with leaf hash `leaf`, in
    /// this layout or, in a directory not yet migrated, in the legacy one (`verify`).
    pub(crate) fn has_version(
        &self,
        tenant: &str,
        entity: &str,
        index: u64,
        leaf: &Hash,
    ) -> Result<bool, LedgerError> {
        let name = EntityName::new(tenant, entity);
        if let Some(v) = self.versions.get(name.key(index))? {
            return Ok(name.holds(&v, leaf));
        }
        let Some(legacy) = &self.legacy_versions else {
            return Ok(false);
        };
        let mut key = crate::store::entity_prefix(tenant, entity);
        key.extend_from_slice(&index.to_be_bytes());
        Ok(legacy.get(key)?.as_deref() == Some(leaf.as_bytes().as_slice()))
    }

    /// How many versions the index holds, in both layouts (`verify`).
    pub(crate) fn version_count(&self) -> Result<u64, LedgerError> {
        let legacy = match &self.legacy_versions {
            Some(p) => p.len()?,
            None => 0,
        };
        Ok((self.versions.len()? + legacy) as u64)
    }

    /// Moves the legacy `versions` partition of an earlier build into `entity_versions`, in
    /// fsynced steps of [`MIGRATE_STEP`] keys that each insert the new entries and remove the
    /// old ones, then drops it; returns how many moved. A step is atomic, so an interrupted
    /// migration goes on where it stopped.
    pub(crate) fn migrate_versions(
        &mut self,
        mut progress: impl FnMut(u64),
    ) -> Result<u64, LedgerError> {
        let Some(legacy) = self.legacy_versions.clone() else {
            return Ok(0);
        };
        let mut moved = 0u64;
        let mut after: Option<fjall::Slice> = None;
        loop {
            let from = after.take().map_or(Bound::Unbounded, Bound::Excluded);
            let mut batch = self
                .keyspace
                .batch()
                .durability(Some(fjall::PersistMode::SyncAll));
            let mut step = 0u64;
            for kv in legacy.range((from, Bound::Unbounded)).take(MIGRATE_STEP) {
                let (k, v) = kv?;
                let split = k.len().checked_sub(8).filter(|&n| n > 0);
                let (name, index) = split.map(|n| k.split_at(n)).ok_or_else(|| {
                    LedgerError::Corrupt("short key in the legacy version index".into())
                })?;
                let leaf = Hash::from_slice(&v).map_err(|e| LedgerError::Corrupt(e.to_string()))?;
                let entity = EntityName::from_legacy(name);
                let index = be_u64(index)?;
                // Wide: the leaf hash is at hand, so readers need not look for it.
                batch.insert(&self.versions, entity.key(index), entity.wide_value(&leaf));
                batch.remove(&legacy, k.clone());
                after = Some(k);
                step += 1;
            }
            if step == 0 {
                break;
            }
            batch.commit()?;
            // The step removed legacy keys: before any compaction sees those tombstones, so
            // that none brings a moved key back (see `compact.rs`).
            crate::compact::advance_gc_watermark(self);
            moved += step;
            progress(moved);
        }
        self.legacy_versions = None;
        self.keyspace.delete_partition(legacy)?;
        Ok(moved)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests: a panic is a failure report
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn leaf(n: u8) -> Hash {
        Hash::from_slice(&[n; 32]).unwrap()
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        (dir, store)
    }

    proptest! {
        /// Keys are 20 bytes (inline in fjall), sort by index within an entity, and an entry
        /// reads back as its index and leaf only under its own name.
        #[test]
        fn entries_round_trip_under_their_own_name_only(
            tenant in "[a-z]{1,8}",
            entity in "\\PC{1,40}",
            other in "\\PC{1,40}",
            a in any::<u64>(),
            b in any::<u64>(),
            n in any::<u8>(),
        ) {
            let name = EntityName::new(&tenant, &entity);
            let (ka, kb) = (name.key(a), name.key(b));
            prop_assert_eq!(ka.len(), 20);
            prop_assert_eq!(ka.cmp(&kb), a.cmp(&b));
            let (v, wide) = (name.value(), name.wide_value(&leaf(n)));
            prop_assert_eq!(v.len(), 20);
            prop_assert_eq!(name.version(&ka, &v).unwrap(), Some((a, None)));
            prop_assert_eq!(name.version(&ka, &wide).unwrap(), Some((a, Some(leaf(n)))));
            prop_assert!(name.holds(&v, &leaf(n)) && name.holds(&wide, &leaf(n)));
            prop_assert!(!name.holds(&name.wide_value(&leaf(n.wrapping_add(1))), &leaf(n)));
            let stranger = EntityName { tag: name.tag, ..EntityName::new(&tenant, &other) };
            if other != entity {
                prop_assert_eq!(stranger.version(&ka, &v).unwrap(), None);
                prop_assert_eq!(stranger.version(&ka, &wide).unwrap(), None);
                prop_assert!(!stranger.holds(&v, &leaf(n)) && !stranger.holds(&wide, &leaf(n)));
            }
            let mut legacy = crate::store::entity_prefix(&tenant, &entity);
            legacy.extend_from_slice(&a.to_be_bytes());
            prop_assert_eq!(EntityName::from_legacy(&legacy[..legacy.len() - 8]), name);
        }
    }

    /// Another entity whose tag is the same (made here by hand; finding one takes 2^48
    /// hashes) shares the key range: every reader skips its entries. (Wide values, which hold
    /// the leaf hash, so that no leaves are needed; narrow ones: `erase/tests.rs`.)
    #[test]
    fn readers_skip_an_entity_that_shares_the_tag() {
        let (_dir, store) = store();
        let mine = EntityName::new("t", "model:a");
        let theirs = EntityName {
            tag: mine.tag,
            ..EntityName::new("t", "model:b")
        };
        for (name, index, n) in [(mine, 3, 1), (theirs, 5, 2), (mine, 7, 3), (theirs, 9, 4)] {
            store
                .versions
                .insert(name.key(index), name.wide_value(&leaf(n)))
                .unwrap();
        }
        assert_eq!(
            store
                .latest_version(&EntityName::new("t", "model:a"))
                .unwrap(),
            Some((7, leaf(3)))
        );
        let all: Vec<_> = store
            .versions_of("t", "model:a", 0, 100)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(all, vec![(3, leaf(1)), (7, leaf(3))]);
        let some: Vec<_> = store
            .versions_of("t", "model:a", 4, 7)
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(some.is_empty(), "7 is outside 4..7: {some:?}");
        assert!(store.has_version("t", "model:a", 7, &leaf(3)).unwrap());
        assert!(!store.has_version("t", "model:a", 9, &leaf(4)).unwrap());
        assert!(!store.has_version("t", "model:a", 7, &leaf(4)).unwrap());
        assert_eq!(
            store
                .latest_version(&EntityName::new("t", "model:c"))
                .unwrap(),
            None
        );
        assert_eq!(store.version_count().unwrap(), 4);
    }

    /// A damaged entry is an error, not a version of something.
    #[test]
    fn a_malformed_entry_is_corrupt() {
        let (_dir, store) = store();
        let name = EntityName::new("t", "e");
        store.versions.insert(name.key(1), [0u8; 31]).unwrap();
        assert!(matches!(
            store.latest_version(&EntityName::new("t", "e")),
            Err(LedgerError::Corrupt(_))
        ));
    }

    /// Writes `(tenant, entity, index, leaf)` in the layout of builds before session 17.
    fn write_legacy(dir: &std::path::Path, versions: &[(&str, &str, u64, Hash)]) {
        let ks = fjall::Config::new(dir.join("fjall")).open().unwrap();
        let legacy = ks.open_partition("versions", Default::default()).unwrap();
        for (tenant, entity, index, hash) in versions {
            let mut k = crate::store::entity_prefix(tenant, entity);
            k.extend_from_slice(&index.to_be_bytes());
            legacy.insert(k, hash.as_bytes()).unwrap();
        }
        ks.persist(fjall::PersistMode::SyncAll).unwrap();
    }

    /// An earlier build's index is readable by `verify` before the move, moved whole (in
    /// several steps), dropped, and read the same after; a second run finds nothing to move.
    #[test]
    fn legacy_versions_move_into_the_new_layout() {
        let dir = tempfile::tempdir().unwrap();
        let mut legacy: Vec<(&str, &str, u64, Hash)> = Vec::new();
        let entities = ["doc:1", "doc:2", "model"];
        for i in 0..(MIGRATE_STEP as u64 * 2 + 10) {
            let tenant = if i % 7 == 0 { "other" } else { "t" };
            legacy.push((tenant, entities[(i % 3) as usize], i, leaf((i % 251) as u8)));
        }
        write_legacy(dir.path(), &legacy);
        let mut store = Store::open(dir.path(), 1 << 20).unwrap();
        assert!(store.legacy_versions.is_some());
        assert!(store.has_version("t", "doc:2", 1, &leaf(1)).unwrap());
        assert!(!store.has_version("t", "doc:2", 1, &leaf(2)).unwrap());
        assert_eq!(store.version_count().unwrap(), legacy.len() as u64);

        let mut steps = Vec::new();
        let moved = store.migrate_versions(|n| steps.push(n)).unwrap();
        assert_eq!(moved, legacy.len() as u64);
        assert_eq!(steps.len(), 3, "{steps:?}");
        assert!(store.legacy_versions.is_none());
        assert!(!store.keyspace.partition_exists("versions"));
        for (tenant, entity, index, hash) in &legacy {
            assert!(store.has_version(tenant, entity, *index, hash).unwrap());
        }
        let last = legacy
            .iter()
            .rfind(|v| v.0 == "t" && v.1 == "model")
            .unwrap();
        assert_eq!(
            store
                .latest_version(&EntityName::new("t", "model"))
                .unwrap(),
            Some((last.2, last.3))
        );
        let of_other: Vec<_> = store
            .versions_of("other", "doc:1", 0, u64::MAX)
            .collect::<Result<_, _>>()
            .unwrap();
        let expected: Vec<_> = legacy
            .iter()
            .filter(|v| v.0 == "other" && v.1 == "doc:1")
            .map(|v| (v.2, v.3))
            .collect();
        assert_eq!(of_other, expected);
        drop(store);

        let mut store = Store::open(dir.path(), 1 << 20).unwrap();
        assert!(store.legacy_versions.is_none());
        assert_eq!(store.migrate_versions(|_| {}).unwrap(), 0);
        assert_eq!(store.version_count().unwrap(), legacy.len() as u64);
    }

    /// A move interrupted after some steps (here: some entries already moved, the rest still
    /// legacy) finishes on the next open with every version once.
    #[test]
    fn an_interrupted_move_finishes() {
        let dir = tempfile::tempdir().unwrap();
        write_legacy(
            dir.path(),
            &[("t", "a", 4, leaf(4)), ("t", "b", 6, leaf(6))],
        );
        {
            let store = Store::open(dir.path(), 1 << 20).unwrap();
            let a = EntityName::new("t", "a");
            store
                .versions
                .insert(a.key(2), a.wide_value(&leaf(2)))
                .unwrap();
            store.keyspace.persist(fjall::PersistMode::SyncAll).unwrap();
        }
        let mut store = Store::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(store.migrate_versions(|_| {}).unwrap(), 2);
        let a: Vec<_> = store
            .versions_of("t", "a", 0, 10)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(a, vec![(2, leaf(2)), (4, leaf(4))]);
        assert_eq!(
            store.latest_version(&EntityName::new("t", "b")).unwrap(),
            Some((6, leaf(6)))
        );
        assert_eq!(store.version_count().unwrap(), 3);
    }

    /// A ref by entity name resolves within the citing record's tenant (the name's digest is
    /// made when the record is prepared, from its final tenant): the same name in another tenant
    /// is another entity, and a tenant without it gets an unknown ref. Within one batch (the
    /// writer's overlay) and after a restart (the store).
    #[test]
    fn refs_by_entity_name_resolve_within_the_citing_tenant() {
        use crate::record::{Leaf, PreparedRecord, RecordInput};
        use crate::{Ledger, LedgerConfig, LedgerError};
        let dir = tempfile::tempdir().unwrap();
        let key = provledger_signer::SigningKey::generate("test.example/log").unwrap();
        let skey = key.to_skey().to_string();
        let open = |key| {
            Ledger::open(
                &LedgerConfig::new(dir.path()),
                key,
                &prometheus::Registry::new(),
            )
            .unwrap()
        };
        let prepare = |v: serde_json::Value| {
            let input: RecordInput = serde_json::from_value(v).unwrap();
            PreparedRecord::prepare(input, "record").unwrap()
        };
        let model = |tenant: &str| {
            prepare(serde_json::json!({
                "kind": "model", "tenant": tenant, "entity": "model:x",
                "actor": {"type": "human", "id": "ana"},
            }))
        };
        let citing = |tenant: &str| {
            prepare(serde_json::json!({
                "kind": "decision", "tenant": tenant, "actor": {"type": "agent", "id": "a"},
                "refs": [{"role": "model", "ref": "model:x"}],
            }))
        };
        let cited = |leaf: &[u8]| Hash(Leaf::decode(leaf).unwrap().refs[0].hash);

        let l = open(key);
        // Each tenant's version and a record citing it, in one batch.
        let r = l
            .append_blocking(vec![model("a"), model("b"), citing("b"), citing("a")])
            .unwrap();
        let (a, b) = (r[0].id, r[1].id);
        assert_eq!(cited(&r[2].leaf), b);
        assert_eq!(cited(&r[3].leaf), a);
        let unknown = l.append_blocking(vec![citing("c")]);
        assert!(
            matches!(unknown, Err(LedgerError::UnknownRef { .. })),
            "{unknown:?}"
        );
        drop(l);

        let l = open(provledger_signer::SigningKey::from_skey(&skey).unwrap());
        let r = l.append_blocking(vec![citing("a"), citing("b")]).unwrap();
        assert_eq!((cited(&r[0].leaf), cited(&r[1].leaf)), (a, b));
    }
}
