//! The writer's view of the right edge of every tile row: the current (partial) tile of each
//! level, kept in memory (at most 8 levels × 8 KiB) and written back after each batch.

use provledger_signer::Hash;

use crate::store::Store;
use crate::tree::{HASH_LEN, TILE_HEIGHT, TILE_WIDTH};
use crate::LedgerError;

/// Levels needed for any 64-bit tree size.
const LEVELS: u8 = 64 / TILE_HEIGHT;

struct Row {
    tile_index: u64,
    bytes: Vec<u8>,
    dirty: bool,
}

/// Right-edge tiles of a tree of some size, and the tiles changed since the last flush.
pub(crate) struct TileRows {
    rows: Vec<Row>,
    completed: Vec<(u8, u64, Vec<u8>)>,
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
        if height % TILE_HEIGHT != 0 {
            return;
        }
        let level = height / TILE_HEIGHT;
        let Some(row) = self.rows.get_mut(level as usize) else {
            return;
        };
        let tile_index = index / TILE_WIDTH;
        if row.tile_index != tile_index {
            let full = std::mem::replace(
                &mut row.bytes,
                Vec::with_capacity(TILE_WIDTH as usize * HASH_LEN),
            );
            if row.dirty {
                self.completed.push((level, row.tile_index, full));
            }
            row.tile_index = tile_index;
        }
        row.bytes.extend_from_slice(hash.as_bytes());
        row.dirty = true;
    }

    /// Tiles changed since the last call: `(level, tile index, bytes)`.
    pub(crate) fn take_dirty(&mut self) -> Vec<(u8, u64, Vec<u8>)> {
        let mut out = std::mem::take(&mut self.completed);
        for (level, row) in self.rows.iter_mut().enumerate() {
            if row.dirty {
                out.push((level as u8, row.tile_index, row.bytes.clone()));
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
