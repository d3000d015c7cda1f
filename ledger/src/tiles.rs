//! The writer's view of the right edge of every tile row: the current (partial) tile of each
//! level, kept in memory (at most 8 levels × 8 KiB) and written back after each batch.
//!
//! Two things are not written back after each batch, because they change with every batch:
//! the right-edge tile of level 0, and the interiors of the right-edge tiles. Readers find them
//! in the published [`Edge`]; a restart hashes them again, level 0's from the stored entries.
//! A full tile and its interior are written once, in the batch that completes the tile.

use std::sync::Arc;

use provledger_signer::Hash;

use crate::store::Store;
use crate::tree::{inner_nodes, inner_slot, HASH_LEN, INNER_NODES, TILE_HEIGHT, TILE_WIDTH};
use crate::LedgerError;

/// Levels needed for any 64-bit tree size.
const LEVELS: u8 = 64 / TILE_HEIGHT;

struct Row {
    tile_index: u64,
    /// The current tile's hashes; shared with the heads published since, like `inner`.
    bytes: Arc<Vec<u8>>,
    dirty: bool,
    /// Whether the current tile, full, was written already with its interior (by
    /// [`TileRows::take_dirty`] when the tile filled up exactly at the end of a batch).
    full_written: bool,
    /// Interior nodes of the current tile, filled as the frontier completes them; shared with
    /// the heads published since (copied on the first write after each).
    inner: Arc<Vec<u8>>,
}

/// The right-edge tiles as of one published head: per level, its tile index, hashes and
/// interior (254 hashes, a zero slot for a node not complete yet).
///
/// A node complete at some tree size never changes, and a tile only grows, so the edge
/// published with a later head also serves proofs and tiles at any earlier size: they only ask
/// for nodes that were complete then.
#[derive(Clone, Debug, Default)]
pub(crate) struct Edge(Vec<EdgeTile>);

/// One level's right-edge tile in an [`Edge`].
#[derive(Clone, Debug)]
struct EdgeTile {
    level: u8,
    tile_index: u64,
    row: Arc<Vec<u8>>,
    inner: Arc<Vec<u8>>,
}

impl Edge {
    /// The hashes of tile `tile_index` at `level`, if this edge holds that tile.
    pub(crate) fn row(&self, level: u8, tile_index: u64) -> Option<&[u8]> {
        self.tile(level, tile_index).map(|t| t.row.as_slice())
    }

    fn tile(&self, level: u8, tile_index: u64) -> Option<&EdgeTile> {
        self.0
            .iter()
            .find(|t| t.level == level && t.tile_index == tile_index)
    }

    /// Interior slot `slot` of tile `tile_index` at `level`, if this edge holds that tile and
    /// the node is complete.
    pub(crate) fn node(&self, level: u8, tile_index: u64, slot: usize) -> Option<Hash> {
        let tile = self.tile(level, tile_index)?;
        crate::store::hash_at(&tile.inner, slot).filter(|h| h.0 != [0u8; 32])
    }
}

/// Which partition a tile write goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TileKind {
    /// The tlog-tiles row of hashes.
    Row,
    /// The interior of a full tile.
    Inner,
}

/// Right-edge tiles of a tree of some size, and the tiles changed since the last flush.
pub(crate) struct TileRows {
    rows: Vec<Row>,
    completed: Vec<(TileKind, u8, u64, Vec<u8>)>,
}

impl TileRows {
    /// Loads the partial tiles of a tree of `size` leaves from the store: level 0's hashed
    /// from the entries, the others as stored.
    pub(crate) fn load(store: &Store, size: u64) -> Result<TileRows, LedgerError> {
        let mut rows = Vec::with_capacity(LEVELS as usize);
        for level in 0..LEVELS {
            let count = row_len(size, level);
            let tile_index = count / TILE_WIDTH;
            let width = (count % TILE_WIDTH) as usize;
            let bytes = if width == 0 {
                Vec::with_capacity(TILE_WIDTH as usize * HASH_LEN)
            } else if level == 0 {
                hash_entries(store, tile_index * TILE_WIDTH, count)?
            } else {
                let stored = store.tile(level, tile_index)?.ok_or_else(|| {
                    LedgerError::Corrupt(format!("tile {level}/{tile_index} is missing"))
                })?;
                let want = width * HASH_LEN;
                let prefix = stored.get(..want).ok_or_else(|| {
                    LedgerError::Corrupt(format!(
                        "tile {level}/{tile_index} holds {} bytes, the tree needs {want}",
                        stored.len()
                    ))
                })?;
                prefix.to_vec()
            };
            rows.push(Row {
                tile_index,
                inner: Arc::new(inner_nodes(&bytes)),
                bytes: Arc::new(bytes),
                dirty: false,
                full_written: false,
            });
        }
        Ok(TileRows {
            rows,
            completed: Vec::new(),
        })
    }

    /// Records a perfect node from [`crate::tree::Frontier::push`]; only tile-row heights matter.
    pub(crate) fn on_node(&mut self, height: u8, index: u64, hash: &Hash) {
        let level = height / TILE_HEIGHT;
        let j = height % TILE_HEIGHT;
        let Some(row) = self.rows.get_mut(level as usize) else {
            return;
        };
        if j != 0 {
            // An interior node of the row's current tile; the tile's leaf-level entries
            // arrived first, so `row.tile_index` is already this node's tile.
            let pos = index - row.tile_index * (TILE_WIDTH >> j);
            let at = inner_slot(j, pos) * HASH_LEN;
            if let Some(slot) = Arc::make_mut(&mut row.inner).get_mut(at..at + HASH_LEN) {
                slot.copy_from_slice(hash.as_bytes());
            }
            return;
        }
        let tile_index = index / TILE_WIDTH;
        if row.tile_index != tile_index {
            let full = std::mem::replace(
                &mut row.bytes,
                Arc::new(Vec::with_capacity(TILE_WIDTH as usize * HASH_LEN)),
            );
            let inner =
                std::mem::replace(&mut row.inner, Arc::new(vec![0u8; INNER_NODES * HASH_LEN]));
            if !row.full_written {
                let own = |t: Arc<Vec<u8>>| Arc::try_unwrap(t).unwrap_or_else(|t| (*t).clone());
                self.completed
                    .push((TileKind::Row, level, row.tile_index, own(full)));
                self.completed
                    .push((TileKind::Inner, level, row.tile_index, own(inner)));
            }
            row.tile_index = tile_index;
            row.full_written = false;
        }
        Arc::make_mut(&mut row.bytes).extend_from_slice(hash.as_bytes());
        row.dirty = true;
    }

    /// Tiles changed since the last call: `(kind, level, tile index, bytes)`. Every full tile
    /// and its interior, once; every changed partial tile above level 0; not level 0's partial
    /// tile nor the interiors of partial tiles (see [`TileRows::edge`]).
    pub(crate) fn take_dirty(&mut self) -> Vec<(TileKind, u8, u64, Vec<u8>)> {
        let mut out = std::mem::take(&mut self.completed);
        for (level, row) in self.rows.iter_mut().enumerate() {
            if !row.dirty {
                continue;
            }
            row.dirty = false;
            let (level, index) = (level as u8, row.tile_index);
            if row.bytes.len() == TILE_WIDTH as usize * HASH_LEN {
                // Filled up in this batch: its interior is complete, and a restart would start
                // the row at the next tile.
                out.push((TileKind::Row, level, index, row.bytes.to_vec()));
                out.push((TileKind::Inner, level, index, row.inner.to_vec()));
                row.full_written = true;
            } else if level > 0 {
                out.push((TileKind::Row, level, index, row.bytes.to_vec()));
            }
        }
        out
    }

    /// The non-empty right-edge tiles and their interiors, to publish with the head.
    ///
    /// Writing level 0's tile and every interior to the store after every batch cost up to
    /// 8 KiB each per batch: under many small concurrent appends, more than the records
    /// themselves (`docs/benchmarks.md`, session 10). Readers of the newest tiles take them
    /// from here instead.
    pub(crate) fn edge(&self) -> Edge {
        Edge(
            self.rows
                .iter()
                .enumerate()
                .filter(|(_, row)| !row.bytes.is_empty())
                .map(|(level, row)| EdgeTile {
                    level: level as u8,
                    tile_index: row.tile_index,
                    row: Arc::clone(&row.bytes),
                    inner: Arc::clone(&row.inner),
                })
                .collect(),
        )
    }
}

/// The leaf hashes of entries `from..to`, concatenated.
fn hash_entries(store: &Store, from: u64, to: u64) -> Result<Vec<u8>, LedgerError> {
    let mut out = Vec::with_capacity(TILE_WIDTH as usize * HASH_LEN);
    store.each_leaf(from, to, |_, leaf| {
        out.extend_from_slice(provledger_signer::leaf_hash(leaf).as_bytes());
        Ok(())
    })?;
    Ok(out)
}

/// Number of hashes in tile row `level` of a tree of `size` leaves.
pub(crate) fn row_len(size: u64, level: u8) -> u64 {
    size.checked_shr(u32::from(level) * u32::from(TILE_HEIGHT))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests: a panic is a failure report

    use super::*;
    use crate::tree::Frontier;

    fn leaf(i: u64) -> Hash {
        provledger_signer::leaf_hash(&i.to_be_bytes())
    }

    #[test]
    fn the_right_edge_is_published_not_written_and_full_tiles_are_written_once() {
        // Batches of 8 fill tile 0 exactly at the end of a batch; batches of 7 in the middle.
        for batch in [7u64, 8] {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path(), 1 << 20).unwrap();
            let mut rows = TileRows::load(&store, 0).unwrap();
            let mut frontier = Frontier::from_parts(0, Vec::new()).unwrap();
            let mut row0 = Vec::new();
            let mut interiors = Vec::new();
            let mut level0 = Vec::new();
            for i in 0..300u64 {
                let h = leaf(i);
                row0.extend_from_slice(h.as_bytes());
                frontier.push(h, |height, index, node| rows.on_node(height, index, node));
                if i % batch != batch - 1 && i != 299 {
                    continue;
                }
                // The batch is sealed.
                for (kind, level, index, bytes) in rows.take_dirty() {
                    match kind {
                        TileKind::Inner => interiors.push((level, index, bytes)),
                        TileKind::Row if level == 0 => level0.push((index, bytes)),
                        TileKind::Row => {}
                    }
                }
                let width = row0.len() / HASH_LEN % TILE_WIDTH as usize;
                let tile = (i + 1) / TILE_WIDTH;
                let partial = &row0[row0.len() - width * HASH_LEN..];
                let want = inner_nodes(partial);
                let edge = rows.edge();
                for slot in 0..INNER_NODES {
                    let node = crate::store::hash_at(&want, slot).filter(|h| h.0 != [0; 32]);
                    assert_eq!(edge.node(0, tile, slot), node, "slot {slot} after {i}");
                }
                assert_eq!(edge.node(0, tile + 1, 0), None);
                if width > 0 {
                    assert_eq!(edge.row(0, tile), Some(partial));
                }
            }
            // Level 0's tile was written once, when full; its partial states never.
            assert_eq!(level0.len(), 1, "batches of {batch}");
            assert_eq!(level0[0].0, 0);
            assert_eq!(level0[0].1, &row0[..TILE_WIDTH as usize * HASH_LEN]);
            // Exactly one interior was written: tile 0 of level 0, once it was full.
            assert_eq!(interiors.len(), 1, "batches of {batch}");
            let (level, index, bytes) = &interiors[0];
            assert_eq!((*level, *index), (0, 0));
            assert_eq!(bytes, &inner_nodes(&row0[..TILE_WIDTH as usize * HASH_LEN]));
        }
    }

    #[test]
    fn a_published_edge_keeps_its_nodes_while_the_writer_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let mut rows = TileRows::load(&store, 0).unwrap();
        let mut frontier = Frontier::from_parts(0, Vec::new()).unwrap();
        for i in 0..4u64 {
            frontier.push(leaf(i), |h, x, n| rows.on_node(h, x, n));
        }
        let early = rows.edge();
        let node = early.node(0, 0, inner_slot(2, 0)).unwrap();
        for i in 4..8u64 {
            frontier.push(leaf(i), |h, x, n| rows.on_node(h, x, n));
        }
        // The early edge does not see nodes completed after it was published...
        assert_eq!(early.node(0, 0, inner_slot(3, 0)), None);
        // ...and the later one has the same value for the node both hold.
        let late = rows.edge();
        assert_eq!(late.node(0, 0, inner_slot(2, 0)), Some(node));
        assert!(late.node(0, 0, inner_slot(3, 0)).is_some());
    }
}
