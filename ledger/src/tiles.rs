//! The writer's view of the right edge of every tile row: the current (partial) tile of each
//! level, kept in memory (at most 8 levels × 8 KiB) and written back after each batch.

use provledger_signer::Hash;

use crate::store::Store;
use crate::tree::{inner_nodes, inner_slot, HASH_LEN, INNER_NODES, TILE_HEIGHT, TILE_WIDTH};
use crate::LedgerError;

/// Levels needed for any 64-bit tree size.
const LEVELS: u8 = 64 / TILE_HEIGHT;

struct Row {
    tile_index: u64,
    bytes: Vec<u8>,
    dirty: bool,
    /// Interior nodes of the current tile, filled as the frontier completes them.
    inner: Vec<u8>,
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
    /// Loads the partial tiles of a tree of `size` leaves from the store.
    pub(crate) fn load(store: &Store, size: u64) -> Result<TileRows, LedgerError> {
        let mut rows = Vec::with_capacity(LEVELS as usize);
        for level in 0..LEVELS {
            let count = row_len(size, level);
            let tile_index = count / TILE_WIDTH;
            let width = (count % TILE_WIDTH) as usize;
            let bytes = if width == 0 {
                Vec::with_capacity(TILE_WIDTH as usize * HASH_LEN)
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
                inner: inner_nodes(&bytes),
                bytes,
                dirty: false,
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
            if let Some(slot) = row.inner.get_mut(at..at + HASH_LEN) {
                slot.copy_from_slice(hash.as_bytes());
            }
            return;
        }
        let tile_index = index / TILE_WIDTH;
        if row.tile_index != tile_index {
            let full = std::mem::replace(
                &mut row.bytes,
                Vec::with_capacity(TILE_WIDTH as usize * HASH_LEN),
            );
            let inner = std::mem::replace(&mut row.inner, vec![0u8; INNER_NODES * HASH_LEN]);
            if row.dirty {
                self.completed
                    .push((TileKind::Row, level, row.tile_index, full));
                self.completed
                    .push((TileKind::Inner, level, row.tile_index, inner));
            }
            row.tile_index = tile_index;
        }
        row.bytes.extend_from_slice(hash.as_bytes());
        row.dirty = true;
    }

    /// Tiles changed since the last call: `(kind, level, tile index, bytes)`.
    pub(crate) fn take_dirty(&mut self) -> Vec<(TileKind, u8, u64, Vec<u8>)> {
        let mut out = std::mem::take(&mut self.completed);
        for (level, row) in self.rows.iter_mut().enumerate() {
            if row.dirty {
                out.push((
                    TileKind::Row,
                    level as u8,
                    row.tile_index,
                    row.bytes.clone(),
                ));
                // The interior of the right-edge tile too, so proofs against the newest
                // checkpoint read the nodes the writer already hashed instead of rehashing
                // them; slots of nodes not complete yet are zero and never asked for.
                out.push((
                    TileKind::Inner,
                    level as u8,
                    row.tile_index,
                    row.inner.clone(),
                ));
                row.dirty = false;
            }
        }
        out
    }
}

/// Number of hashes in tile row `level` of a tree of `size` leaves.
pub(crate) fn row_len(size: u64, level: u8) -> u64 {
    size.checked_shr(u32::from(level) * u32::from(TILE_HEIGHT))
        .unwrap_or(0)
}
