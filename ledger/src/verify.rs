//! Offline verification of a data directory: every entry, tile, index entry and payload
//! commitment is recomputed from the stored entries and checked against the latest signed
//! checkpoint. Independent of the append pipeline's in-memory state.

use std::path::Path;

use fjall::AbstractTree;
use provledger_signer::{leaf_hash, Hash, VerifierKey};
use sha2::Digest as _;

use crate::record::{commitment, Leaf};
use crate::store::{self, Store};
use crate::tree::{inner_nodes, Frontier, HASH_LEN, TILE_HEIGHT, TILE_WIDTH};
use crate::LedgerError;

/// What a successful verification covered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// Entries checked.
    pub tree_size: u64,
    /// Root hash recomputed from the entries.
    pub root: Hash,
    /// Payload commitments recomputed.
    pub payloads: u64,
    /// Payloads absent because an erasure record cites their record.
    pub erased: u64,
    /// Tiles compared byte for byte.
    pub tiles: u64,
    /// Stored checkpoints (one per batch) whose signature and root were checked.
    pub checkpoints: u64,
    /// The verified checkpoint note.
    pub checkpoint: String,
}

/// The first problem found, with the entry index where it applies.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// Something is wrong at a specific entry.
    #[error("entry {index}: {reason}")]
    Entry {
        /// Leaf index.
        index: u64,
        /// What does not hold.
        reason: String,
    },
    /// A tile differs from the one recomputed from the entries.
    #[error("tile {level}/{tile}: {reason}")]
    Tile {
        /// Tile level.
        level: u8,
        /// Tile index.
        tile: u64,
        /// What does not hold.
        reason: String,
    },
    /// The checkpoint or the tree state is wrong.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// The storage engine found damaged blocks or could not read the data.
    #[error("storage: {0}")]
    Storage(String),
}

impl From<LedgerError> for VerifyError {
    fn from(e: LedgerError) -> Self {
        VerifyError::Storage(e.to_string())
    }
}

/// Verifies the data directory at `dir` against `key`. `progress(done, total)` is called every
/// few thousand entries.
pub fn verify_data_dir(
    dir: &Path,
    key: &VerifierKey,
    progress: impl FnMut(u64, u64),
) -> Result<VerifyReport, VerifyError> {
    // The storage engine panics on some damaged files; that is a finding, not a crash.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        verify_inner(dir, key, progress)
    }))
    .unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("unknown panic");
        Err(VerifyError::Storage(format!(
            "the storage engine failed while reading the data (damaged files?): {what}"
        )))
    })
}

fn verify_inner(
    dir: &Path,
    key: &VerifierKey,
    mut progress: impl FnMut(u64, u64),
) -> Result<VerifyReport, VerifyError> {
    if !dir.join("fjall").is_dir() {
        return Err(VerifyError::Storage(format!(
            "{} holds no provledger data (no fjall directory)",
            dir.display()
        )));
    }
    // Whole-file digests of sealed segments, before the keyspace is opened (`crate::seal`).
    crate::seal::check(dir).map_err(VerifyError::Storage)?;
    let store = Store::open(dir, 16 * 1024 * 1024).map_err(|e| match e {
        LedgerError::InUse(_) => VerifyError::Storage(e.to_string()),
        other => VerifyError::Storage(format!("cannot open the data directory: {other}")),
    })?;
    for (name, partition) in store.partitions() {
        let broken = partition
            .tree
            .verify()
            .map_err(|e| VerifyError::Storage(format!("partition {name}: {e}")))?;
        if broken > 0 {
            return Err(VerifyError::Storage(format!(
                "partition {name}: {broken} damaged data blocks (checksum mismatch)"
            )));
        }
    }
    for (name, partition) in store.partitions() {
        check_both_directions(name, partition)?;
    }
    let state = store.state()?;
    // The given key and every key joined to it by rotation statements both keys signed.
    let keys = crate::keyring::KeyRing::load(dir)
        .map_err(|e| VerifyError::Checkpoint(e.to_string()))?
        .trusted_from(std::slice::from_ref(key));
    crate::watermark::check(dir, &keys, state.size)
        .map_err(|e| VerifyError::Checkpoint(e.to_string()))?;
    if state.size == 0 && state.checkpoint.is_empty() {
        if store
            .entries
            .first_key_value()
            .map_err(LedgerError::from)?
            .is_some()
        {
            return Err(VerifyError::Entry {
                index: 0,
                reason: "exists but no checkpoint was ever signed".into(),
            });
        }
        return Ok(VerifyReport {
            tree_size: 0,
            root: provledger_signer::empty_root(),
            payloads: 0,
            erased: 0,
            tiles: 0,
            checkpoints: 0,
            checkpoint: String::new(),
        });
    }
    let verified = provledger_signer::verify_checkpoint(&state.checkpoint, &keys)
        .map_err(|e| VerifyError::Checkpoint(format!("latest checkpoint does not verify: {e}")))?;
    let cp = verified.checkpoint().clone();
    if cp.size != state.size {
        return Err(VerifyError::Checkpoint(format!(
            "checkpoint is for size {}, the tree state says {}",
            cp.size, state.size
        )));
    }

    let mut frontier = Frontier::default();
    let mut rows: Vec<Vec<u8>> = vec![Vec::new(); (64 / TILE_HEIGHT) as usize];
    let mut tiles_checked = 0u64;
    let mut payloads = 0u64;
    let mut erased = 0u64;
    let mut with_subject = 0u64;
    let mut expected = 0u64;
    let mut tile_error: Option<VerifyError> = None;
    let mut with_entity = 0u64;
    let mut cites = 0u64;
    let mut checkpoints = store.checkpoints.iter().peekable();
    let mut checkpoints_checked = 0u64;
    let mut indexed = crate::indexes::Expected::new(&store)?;
    let mut stored = crate::payloads::PayloadReader::new(&store);
    for kv in store.leaves(0, u64::MAX) {
        let (index, v) = kv.map_err(|e| match e {
            LedgerError::Corrupt(reason) => VerifyError::Entry {
                index: expected,
                reason,
            },
            e => VerifyError::Storage(e.to_string()),
        })?;
        if index != expected {
            return Err(VerifyError::Entry {
                index: expected,
                reason: "missing".into(),
            });
        }
        if index >= state.size {
            return Err(VerifyError::Entry {
                index,
                reason: format!("exists beyond the signed tree size {}", state.size),
            });
        }
        let entry = |reason: String| VerifyError::Entry { index, reason };
        let leaf = Leaf::decode(&v).map_err(|e| entry(e.to_string()))?;
        if leaf.index != index {
            return Err(entry(format!("leaf says it is entry {}", leaf.index)));
        }
        let hash = leaf_hash(&v);
        match store.lookup_id(&hash)? {
            Some((i, t)) if i == index && t == leaf.tenant => {}
            Some((i, _)) => return Err(entry(format!("id index points to entry {i}"))),
            None => return Err(entry("missing from the id index".into())),
        }
        let payload = stored.payload(index)?;
        match (leaf.commitment, payload) {
            (Some(want), Some(p)) => {
                let (salt, body) = p
                    .split_at_checked(32)
                    .ok_or_else(|| entry("stored payload is shorter than its salt".into()))?;
                if commitment(salt, body) != want {
                    return Err(entry("payload does not match its commitment".into()));
                }
                payloads += 1;
            }
            (Some(_), None) => {
                crate::erase::verify_missing_payload(&store, &hash).map_err(entry)?;
                erased += 1;
            }
            (None, Some(_)) => {
                return Err(entry(
                    "payload stored for a leaf without a commitment".into(),
                ))
            }
            (None, None) => {}
        }
        frontier.push(hash, |height, node, h| {
            if !height.is_multiple_of(TILE_HEIGHT) || tile_error.is_some() {
                return;
            }
            let level = height / TILE_HEIGHT;
            let Some(row) = rows.get_mut(level as usize) else {
                return;
            };
            row.extend_from_slice(h.as_bytes());
            if row.len() == TILE_WIDTH as usize * HASH_LEN {
                let tile = node / TILE_WIDTH;
                let checked = compare_tile(&store, level, tile, row)
                    .and_then(|()| compare_inner(&store, level, tile, row));
                if let Err(e) = checked {
                    tile_error = Some(e);
                }
                tiles_checked += 1;
                row.clear();
            }
        });
        if let Some(e) = tile_error.take() {
            return Err(e);
        }
        for (position, r) in (0u16..).zip(&leaf.refs) {
            cites += 1;
            let cited = Hash(r.hash);
            // The cited record's index keys `cited_by`; the legacy `cites` needs none.
            let at = match index >= store.cited_by_from {
                true => match store.lookup_id(&cited)? {
                    Some((at, _)) if at < index => at,
                    _ => {
                        return Err(entry(format!(
                            "reference to {} names no earlier record",
                            hex::encode(r.hash)
                        )))
                    }
                },
                false => 0,
            };
            if store.cited_role((&cited, at), index, position)?.as_deref()
                != Some(r.role.as_bytes())
            {
                return Err(entry(format!(
                    "reference to {} is missing from the reverse index",
                    hex::encode(r.hash)
                )));
            }
        }
        crate::erase::verify_erasure_refs(&store, &leaf).map_err(entry)?;
        if crate::erase::verify_subject(&store, &leaf, &hash).map_err(entry)? {
            with_subject += 1;
        }
        if let Some(entity) = &leaf.entity {
            with_entity += 1;
            if !store.has_version(&leaf.tenant, entity, index, &hash)? {
                return Err(entry("missing from the entity version index".into()));
            }
        }
        crate::indexes::verify_record(&store, &leaf, &hash, state.size, &mut indexed)
            .map_err(entry)?;
        expected += 1;
        while let Some(Ok((k, _))) = checkpoints.peek() {
            let size = store::be_u64(k).map_err(|e| VerifyError::Checkpoint(e.to_string()))?;
            if size > expected {
                break;
            }
            let Some(Ok((_, note))) = checkpoints.next() else {
                break;
            };
            if size < expected {
                return Err(VerifyError::Checkpoint(format!(
                    "stored checkpoint for size {size} is out of order"
                )));
            }
            check_archived(&note, size, &frontier.root(), &keys)?;
            checkpoints_checked += 1;
        }
        if expected.is_multiple_of(4096) {
            progress(expected, state.size);
        }
    }
    if let Some(rest) = checkpoints.next() {
        let (k, _) = rest.map_err(|e| VerifyError::Storage(e.to_string()))?;
        return Err(VerifyError::Checkpoint(format!(
            "a checkpoint is stored for size {}, beyond the tree",
            store::be_u64(&k).unwrap_or(u64::MAX)
        )));
    }
    crate::indexes::verify_totals(&store, &indexed)?;
    if store.version_count()? != with_entity {
        return Err(VerifyError::Storage(
            "the entity version index holds entries for records that do not exist".into(),
        ));
    }
    if store.subjects.len().map_err(LedgerError::from)? as u64 != with_subject {
        return Err(VerifyError::Storage(
            "the subject index holds entries for records that do not exist".into(),
        ));
    }
    if store.cites_count()? != cites {
        return Err(VerifyError::Storage(
            "the reverse-reference index holds entries that no record's refs account for".into(),
        ));
    }
    for kv in store.idem.iter() {
        let (_, v) = kv.map_err(|e| VerifyError::Storage(e.to_string()))?;
        let index = v
            .get(..8)
            .map(store::be_u64)
            .transpose()?
            .ok_or_else(|| VerifyError::Storage("short idempotency index value".into()))?;
        if index >= state.size {
            return Err(VerifyError::Storage(format!(
                "the idempotency index points at entry {index}, beyond the tree"
            )));
        }
    }
    if expected != state.size {
        return Err(VerifyError::Entry {
            index: expected,
            reason: format!("missing (the signed tree has {} entries)", state.size),
        });
    }
    for (level, row) in rows.iter().enumerate() {
        if !row.is_empty() {
            let tile = crate::tiles::row_len(state.size, level as u8) / TILE_WIDTH;
            if level == 0 {
                compare_edge_row(&store, tile, row)?;
            } else {
                compare_tile(&store, level as u8, tile, row)?;
            }
            compare_edge_inner(&store, level as u8, tile, row)?;
            tiles_checked += 1;
        }
    }
    let root = frontier.root();
    if !root.ct_eq(&cp.root) {
        return Err(VerifyError::Checkpoint(format!(
            "root recomputed from the entries ({}) differs from the signed root ({})",
            root.to_base64(),
            cp.root.to_base64()
        )));
    }
    let stored_frontier: Vec<&[u8]> = state.frontier.iter().map(|b| b.as_ref()).collect();
    let rebuilt: Vec<&[u8]> = frontier
        .hashes()
        .iter()
        .map(|h| h.as_bytes().as_slice())
        .collect();
    if stored_frontier != rebuilt {
        return Err(VerifyError::Checkpoint(
            "stored tree frontier differs from the one recomputed from the entries".into(),
        ));
    }
    progress(state.size, state.size);
    // Everything read back correct: record the digests of the segments just verified, so a
    // later verify sees any change to them (`crate::seal`). A read-only copy is still verified.
    if let Err(e) = crate::seal::seal_settled(dir, &store) {
        tracing::warn!(error = %e, "cannot record segment digests after verifying");
    }
    Ok(VerifyReport {
        tree_size: state.size,
        root,
        payloads,
        erased,
        tiles: tiles_checked,
        checkpoints: checkpoints_checked,
        checkpoint: state.checkpoint,
    })
}

/// Reads a partition forwards and backwards: both must yield the same items. Reverse scans
/// follow each block's back-pointer, which block checksums do not cover.
fn check_both_directions(
    name: &str,
    partition: &fjall::PartitionHandle,
) -> Result<(), VerifyError> {
    fn digest(
        it: impl Iterator<Item = fjall::Result<fjall::KvPair>>,
    ) -> Result<(u64, u64), VerifyError> {
        let mut count = 0u64;
        let mut sum = 0u64;
        for kv in it {
            let (k, v) = kv.map_err(|e| VerifyError::Storage(e.to_string()))?;
            let mut h = sha2::Sha256::new();
            sha2::Digest::update(&mut h, (k.len() as u64).to_be_bytes());
            sha2::Digest::update(&mut h, &k);
            sha2::Digest::update(&mut h, &v);
            let d: [u8; 32] = sha2::Digest::finalize(h).into();
            let mut first = [0u8; 8];
            first.copy_from_slice(d.get(..8).unwrap_or(&[0u8; 8]));
            sum = sum.wrapping_add(u64::from_be_bytes(first));
            count += 1;
        }
        Ok((count, sum))
    }
    let forward = digest(partition.iter())?;
    let backward = digest(partition.iter().rev())?;
    if forward != backward {
        return Err(VerifyError::Storage(format!(
            "partition {name}: reading backwards gives {} items, forwards {} (or different ones): damaged block links",
            backward.0, forward.0
        )));
    }
    Ok(())
}

/// A checkpoint from the archive must be signed by a trusted key and match the recomputed root.
fn check_archived(
    note: &[u8],
    size: u64,
    root: &Hash,
    keys: &[VerifierKey],
) -> Result<(), VerifyError> {
    let err = |reason: String| {
        VerifyError::Checkpoint(format!("stored checkpoint for size {size}: {reason}"))
    };
    let text = std::str::from_utf8(note).map_err(|_| err("not UTF-8".into()))?;
    let v = provledger_signer::verify_checkpoint(text, keys)
        .map_err(|e| err(format!("does not verify: {e}")))?;
    if v.checkpoint().size != size {
        return Err(err(format!("says size {}", v.checkpoint().size)));
    }
    if !v.checkpoint().root.ct_eq(root) {
        return Err(err(
            "root differs from the one recomputed from the entries".into()
        ));
    }
    Ok(())
}

fn compare_inner(store: &Store, level: u8, tile: u64, row: &[u8]) -> Result<(), VerifyError> {
    let err = |reason: String| VerifyError::Tile {
        level,
        tile,
        reason,
    };
    let stored = store
        .interior(level, tile)?
        .ok_or_else(|| err("interior is missing".into()))?;
    if stored.as_ref() != inner_nodes(row).as_slice() {
        return Err(err(
            "stored interior differs from the one recomputed from the entries".into(),
        ));
    }
    Ok(())
}

/// Level 0's right-edge tile is not stored any more (readers take it from the head, a restart
/// hashes it from the entries), but a data directory written before holds it as of its last
/// batch: a prefix of the one recomputed.
fn compare_edge_row(store: &Store, tile: u64, row: &[u8]) -> Result<(), VerifyError> {
    let Some(stored) = store.tile(0, tile)? else {
        return Ok(());
    };
    if stored.len() % HASH_LEN != 0 || !row.starts_with(&stored) {
        return Err(VerifyError::Tile {
            level: 0,
            tile,
            reason: format!(
                "stored {} bytes that are not a prefix of the {} recomputed from the entries",
                stored.len(),
                row.len()
            ),
        });
    }
    Ok(())
}

/// A right-edge tile's interior is not stored any more (readers take it from the head), but a
/// data directory written before holds the one of its last batch: each of its slots must be the
/// recomputed node or, for a node completed since, zero.
fn compare_edge_inner(store: &Store, level: u8, tile: u64, row: &[u8]) -> Result<(), VerifyError> {
    let Some(stored) = store.interior(level, tile)? else {
        return Ok(());
    };
    let want = inner_nodes(row);
    let fits = stored.len() == want.len()
        && stored
            .chunks_exact(HASH_LEN)
            .zip(want.chunks_exact(HASH_LEN))
            .all(|(s, w)| s == w || s.iter().all(|b| *b == 0));
    if !fits {
        return Err(VerifyError::Tile {
            level,
            tile,
            reason: "stored interior differs from the one recomputed from the entries".into(),
        });
    }
    Ok(())
}

fn compare_tile(store: &Store, level: u8, tile: u64, want: &[u8]) -> Result<(), VerifyError> {
    let err = |reason: String| VerifyError::Tile {
        level,
        tile,
        reason,
    };
    let stored = store
        .tile(level, tile)?
        .ok_or_else(|| err("missing".into()))?;
    if stored.as_ref() != want {
        return Err(err(format!(
            "stored tile ({} bytes) differs from the one recomputed from the entries ({} bytes)",
            stored.len(),
            want.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests: a panic is a failure report

    use super::*;

    #[test]
    fn level_zero_edge_tile_from_an_earlier_version_may_be_a_prefix_but_not_differ() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let row: Vec<u8> = (0..100u64)
            .flat_map(|i| leaf_hash(&i.to_be_bytes()).0)
            .collect();
        compare_edge_row(&store, 0, &row).unwrap();
        store
            .tiles
            .insert(store::tile_key(0, 0), &row[..60 * HASH_LEN])
            .unwrap();
        compare_edge_row(&store, 0, &row).unwrap();
        let mut damaged = row[..60 * HASH_LEN].to_vec();
        damaged[40] ^= 1;
        store.tiles.insert(store::tile_key(0, 0), &damaged).unwrap();
        let err = compare_edge_row(&store, 0, &row).unwrap_err();
        assert!(err.to_string().contains("not a prefix"), "{err}");
        // Longer than the tree (a hash too many) or cut inside a hash: also refused.
        let mut longer = row.clone();
        longer.extend_from_slice(&[7; HASH_LEN]);
        store.tiles.insert(store::tile_key(0, 0), &longer).unwrap();
        compare_edge_row(&store, 0, &row).unwrap_err();
        store
            .tiles
            .insert(store::tile_key(0, 0), &row[..HASH_LEN + 5])
            .unwrap();
        compare_edge_row(&store, 0, &row).unwrap_err();
    }

    #[test]
    fn a_right_edge_interior_from_an_earlier_version_may_lag_but_not_differ() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let row: Vec<u8> = (0..100u64)
            .flat_map(|i| leaf_hash(&i.to_be_bytes()).0)
            .collect();
        // Not stored (this version): nothing to compare.
        compare_edge_inner(&store, 0, 0, &row).unwrap();
        // Stored by an earlier version after 60 of the 100 leaves: nodes completed since are zero.
        let stale = inner_nodes(&row[..60 * HASH_LEN]);
        assert_ne!(stale, inner_nodes(&row));
        store.inner.insert(store::tile_key(0, 0), &stale).unwrap();
        compare_edge_inner(&store, 0, 0, &row).unwrap();
        // One damaged byte in a node that was complete is found.
        let mut damaged = stale.clone();
        damaged[5] ^= 1;
        store.inner.insert(store::tile_key(0, 0), &damaged).unwrap();
        let err = compare_edge_inner(&store, 0, 0, &row).unwrap_err();
        assert!(err.to_string().contains("interior differs"), "{err}");
        // So is a slot that holds a node the entries do not make.
        let mut extra = stale;
        let at = crate::tree::inner_slot(7, 1) * HASH_LEN;
        extra[at] = 1;
        store.inner.insert(store::tile_key(0, 0), &extra).unwrap();
        compare_edge_inner(&store, 0, 0, &row).unwrap_err();
    }
}
