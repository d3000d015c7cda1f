//! RFC 6962 tree algebra over perfect subtrees: the append frontier (compact range) and the
//! recursive definitions of subtree hashes, audit paths and consistency proofs (RFC 6962 §2.1).
//! Storage is abstracted as a [`NodeReader`] that returns perfect-subtree hashes.

use provledger_signer::{node_hash, Hash};

use crate::LedgerError;

/// Tiles are 2^8 hashes wide (C2SP tlog-tiles).
pub(crate) const TILE_HEIGHT: u8 = 8;
/// Hashes in a full tile.
pub(crate) const TILE_WIDTH: u64 = 1 << TILE_HEIGHT;
/// Bytes of one hash.
pub(crate) const HASH_LEN: usize = 32;

/// Hashes inside a full tile above its row: heights 1..=7, 128 + 64 + … + 2 of them.
pub(crate) const INNER_NODES: usize = 254;

/// Position of the node at height `j` (1..=7 within the tile) and offset `pos` (from the
/// tile's left edge, at that height) in a tile's interior.
pub(crate) fn inner_slot(j: u8, pos: u64) -> usize {
    (256 - (512usize >> j)) + pos as usize
}

/// Computes the interior of a tile from its row (up to 256 hashes): every node whose subtree
/// is complete within the row; slots of incomplete nodes stay zero.
pub(crate) fn inner_nodes(row: &[u8]) -> Vec<u8> {
    let mut inner = vec![0u8; INNER_NODES * HASH_LEN];
    let mut below: Vec<Hash> = row
        .chunks_exact(HASH_LEN)
        .filter_map(|c| Hash::from_slice(c).ok())
        .collect();
    for j in 1..TILE_HEIGHT {
        let level: Vec<Hash> = below
            .chunks_exact(2)
            .filter_map(|pair| match pair {
                [l, r] => Some(node_hash(l, r)),
                _ => None,
            })
            .collect();
        for (pos, h) in level.iter().enumerate() {
            let at = inner_slot(j, pos as u64) * HASH_LEN;
            if let Some(slot) = inner.get_mut(at..at + HASH_LEN) {
                slot.copy_from_slice(h.as_bytes());
            }
        }
        below = level;
    }
    inner
}

/// Gives access to stored perfect-subtree hashes: the perfect subtree of `2^height` leaves
/// starting at leaf `index << height`.
pub(crate) trait NodeReader {
    /// The hash if storage holds it directly: tile-row nodes (heights 0, 8, 16, …) always,
    /// interior nodes when their tile's interior is stored. `Ok(None)` means "compute it".
    fn stored(&mut self, height: u8, index: u64) -> Result<Option<Hash>, LedgerError>;
}

/// Roots of the perfect subtrees that make up a tree of `size` leaves, largest first: one for each
/// set bit of `size`. Appending is O(log n) and memory is at most 64 hashes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Frontier {
    size: u64,
    hashes: Vec<Hash>,
}

impl Frontier {
    pub(crate) fn from_parts(size: u64, hashes: Vec<Hash>) -> Result<Frontier, LedgerError> {
        if hashes.len() != size.count_ones() as usize {
            return Err(LedgerError::Corrupt(format!(
                "frontier of a tree of size {size} holds {} hashes, expected {}",
                hashes.len(),
                size.count_ones()
            )));
        }
        Ok(Frontier { size, hashes })
    }

    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    pub(crate) fn hashes(&self) -> &[Hash] {
        &self.hashes
    }

    /// Appends a leaf hash. `emit(height, index, hash)` sees every perfect node this creates,
    /// the leaf itself first, then each parent it completes.
    pub(crate) fn push(&mut self, leaf: Hash, mut emit: impl FnMut(u8, u64, &Hash)) {
        emit(0, self.size, &leaf);
        let mut hash = leaf;
        let mut height: u8 = 0;
        let mut index = self.size;
        while (self.size >> height) & 1 == 1 {
            let Some(left) = self.hashes.pop() else { break };
            hash = node_hash(&left, &hash);
            height += 1;
            index >>= 1;
            emit(height, index, &hash);
        }
        self.hashes.push(hash);
        self.size += 1;
    }

    /// The RFC 6962 root of the tree.
    pub(crate) fn root(&self) -> Hash {
        let mut it = self.hashes.iter().rev();
        let Some(last) = it.next() else {
            return provledger_signer::empty_root();
        };
        it.fold(*last, |acc, left| node_hash(left, &acc))
    }
}

/// Largest power of two strictly smaller than `n` (n ≥ 2).
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// MTH(D[start:end]) for a subtree that RFC 6962's recursion can produce: `start` is aligned
/// to the largest power of two not above `end - start`.
pub(crate) fn subtree_hash<R: NodeReader>(
    r: &mut Memo<R>,
    start: u64,
    end: u64,
) -> Result<Hash, LedgerError> {
    let n = end - start;
    if n == 0 {
        return Ok(provledger_signer::empty_root());
    }
    if n.is_power_of_two() {
        let height = n.trailing_zeros() as u8;
        return r.perfect(height, start >> height);
    }
    if let Some(h) = r.ephemeral.get(&(start, end)) {
        return Ok(*h);
    }
    let k = split_point(n);
    let left = subtree_hash(r, start, start + k)?;
    let right = subtree_hash(r, start + k, end)?;
    let h = node_hash(&left, &right);
    r.ephemeral.insert((start, end), h);
    Ok(h)
}

/// The audit path PATH(index, D[0:size]) of RFC 6962 §2.1.1, leaf side first.
pub(crate) fn inclusion_path<R: NodeReader>(
    r: &mut Memo<R>,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, LedgerError> {
    if index >= size {
        return Err(LedgerError::OutOfRange {
            what: "index",
            value: index,
            tree_size: size,
        });
    }
    // At most ⌈log2 size⌉ hashes. Every receipt carries one of these: an exact bound keeps the
    // allocation in mimalloc's small-object path (64 hashes, 2 KiB, left it: 40 % of a path's
    // CPU under `append_profile`, session 21).
    let mut out = Vec::with_capacity((u64::BITS - (size - 1).leading_zeros()) as usize);
    path(r, index, 0, size, &mut out)?;
    Ok(out)
}

/// [`inclusion_path`] of `index`, given the path of another leaf `prev` in the same tree: the
/// two share every hash above the subtree where RFC 6962's recursion first sends them different
/// ways, so only the part below it is computed. A batch's receipts, for consecutive leaves,
/// share all but a hash or two on average.
pub(crate) fn inclusion_path_after<R: NodeReader>(
    r: &mut Memo<R>,
    index: u64,
    size: u64,
    (prev, prev_path): (u64, &[Hash]),
) -> Result<Vec<Hash>, LedgerError> {
    if index >= size || prev >= size || index == prev {
        return inclusion_path(r, index, size);
    }
    // Walk down from the root while both leaves go the same way: `shared` hashes on the way.
    let (mut start, mut end, mut shared) = (0u64, size, 0usize);
    let k = loop {
        let k = split_point(end - start);
        match (index < start + k, prev < start + k) {
            (true, true) => end = start + k,
            (false, false) => start += k,
            _ => break k,
        }
        shared += 1;
    };
    let Some(tail) = prev_path
        .len()
        .checked_sub(shared)
        .and_then(|at| prev_path.get(at..))
    else {
        return inclusion_path(r, index, size);
    };
    let mut out = Vec::with_capacity((u64::BITS - (size - 1).leading_zeros()) as usize);
    if index < start + k {
        path(r, index, start, start + k, &mut out)?;
        out.push(subtree_hash(r, start + k, end)?);
    } else {
        path(r, index, start + k, end, &mut out)?;
        out.push(subtree_hash(r, start, start + k)?);
    }
    out.extend_from_slice(tail);
    Ok(out)
}

fn path<R: NodeReader>(
    r: &mut Memo<R>,
    m: u64,
    start: u64,
    end: u64,
    out: &mut Vec<Hash>,
) -> Result<(), LedgerError> {
    let n = end - start;
    if n <= 1 {
        return Ok(());
    }
    let k = split_point(n);
    if m < start + k {
        path(r, m, start, start + k, out)?;
        out.push(subtree_hash(r, start + k, end)?);
    } else {
        path(r, m, start + k, end, out)?;
        out.push(subtree_hash(r, start, start + k)?);
    }
    Ok(())
}

/// The consistency proof PROOF(from, D[0:to]) of RFC 6962 §2.1.2. Empty when `from` is 0 or
/// equal to `to`.
pub(crate) fn consistency_path<R: NodeReader>(
    r: &mut Memo<R>,
    from: u64,
    to: u64,
) -> Result<Vec<Hash>, LedgerError> {
    if from > to {
        return Err(LedgerError::InvalidRange(format!(
            "from ({from}) must not be greater than to ({to})"
        )));
    }
    let mut out = Vec::with_capacity(64);
    if from > 0 && from < to {
        subproof(r, from, 0, to, true, &mut out)?;
    }
    Ok(out)
}

fn subproof<R: NodeReader>(
    r: &mut Memo<R>,
    m: u64,
    start: u64,
    end: u64,
    complete: bool,
    out: &mut Vec<Hash>,
) -> Result<(), LedgerError> {
    let n = end - start;
    if m == n {
        if !complete {
            out.push(subtree_hash(r, start, end)?);
        }
        return Ok(());
    }
    let k = split_point(n);
    if m <= k {
        subproof(r, m, start, start + k, complete, out)?;
        out.push(subtree_hash(r, start + k, end)?);
    } else {
        subproof(r, m - k, start + k, end, false, out)?;
        out.push(subtree_hash(r, start, start + k)?);
    }
    Ok(())
}

/// Computes perfect and imperfect subtree hashes from what storage holds, memoizing every
/// node so a batch of proofs over neighbouring leaves reads and hashes each node once.
pub(crate) struct Memo<R> {
    inner: R,
    nodes: rustc_hash::FxHashMap<(u8, u64), Hash>,
    ephemeral: rustc_hash::FxHashMap<(u64, u64), Hash>,
}

impl<R: NodeReader> Memo<R> {
    pub(crate) fn new(inner: R) -> Memo<R> {
        Memo {
            inner,
            nodes: Default::default(),
            ephemeral: Default::default(),
        }
    }
}

impl<R: NodeReader> Memo<R> {
    /// The hash of a perfect subtree, from storage, the memo, or its children.
    pub(crate) fn perfect(&mut self, height: u8, index: u64) -> Result<Hash, LedgerError> {
        if let Some(h) = self.nodes.get(&(height, index)) {
            return Ok(*h);
        }
        let h = match self.inner.stored(height, index)? {
            Some(h) => h,
            None if height.is_multiple_of(TILE_HEIGHT) => {
                return Err(LedgerError::Corrupt(format!(
                    "tile-row node {height}/{index} is not stored"
                )))
            }
            None => {
                let left = self.perfect(height - 1, index * 2)?;
                let right = self.perfect(height - 1, index * 2 + 1)?;
                node_hash(&left, &right)
            }
        };
        self.nodes.insert((height, index), h);
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests index known-good fixtures

    use super::*;
    use proptest::prelude::*;
    use provledger_signer::leaf_hash;

    /// Reference: MTH straight from RFC 6962 §2.1 over leaf hashes.
    fn mth(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => provledger_signer::empty_root(),
            1 => leaves[0],
            n => {
                let k = split_point(n as u64) as usize;
                node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    fn ref_path(m: usize, leaves: &[Hash]) -> Vec<Hash> {
        let n = leaves.len();
        if n <= 1 {
            return vec![];
        }
        let k = split_point(n as u64) as usize;
        if m < k {
            let mut p = ref_path(m, &leaves[..k]);
            p.push(mth(&leaves[k..]));
            p
        } else {
            let mut p = ref_path(m - k, &leaves[k..]);
            p.push(mth(&leaves[..k]));
            p
        }
    }

    fn ref_subproof(m: usize, leaves: &[Hash], b: bool) -> Vec<Hash> {
        let n = leaves.len();
        if m == n {
            return if b { vec![] } else { vec![mth(leaves)] };
        }
        let k = split_point(n as u64) as usize;
        if m <= k {
            let mut p = ref_subproof(m, &leaves[..k], b);
            p.push(mth(&leaves[k..]));
            p
        } else {
            let mut p = ref_subproof(m - k, &leaves[k..], false);
            p.push(mth(&leaves[..k]));
            p
        }
    }

    /// Perfect nodes computed from the leaves in memory (only tile rows are asked for).
    struct Leaves(Vec<Hash>);
    impl NodeReader for Leaves {
        fn stored(&mut self, height: u8, index: u64) -> Result<Option<Hash>, LedgerError> {
            if !height.is_multiple_of(TILE_HEIGHT) {
                return Ok(None);
            }
            let w = 1usize << height;
            let s = index as usize * w;
            Ok(Some(mth(&self.0[s..s + w])))
        }
    }

    #[test]
    fn inner_nodes_of_a_full_tile() {
        let ls = leaves(256);
        let row: Vec<u8> = ls.iter().flat_map(|h| h.0).collect();
        let inner = inner_nodes(&row);
        for j in 1..TILE_HEIGHT {
            for pos in 0..(256u64 >> j) {
                let w = 1usize << j;
                let at = inner_slot(j, pos) * HASH_LEN;
                let want = mth(&ls[pos as usize * w..(pos as usize + 1) * w]);
                assert_eq!(
                    &inner[at..at + HASH_LEN],
                    want.as_bytes(),
                    "height {j} pos {pos}"
                );
            }
        }
        assert_eq!(inner_slot(7, 1), INNER_NODES - 1);
    }

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n)
            .map(|i| leaf_hash(format!("leaf {i}").as_bytes()))
            .collect()
    }

    proptest! {
        #[test]
        fn frontier_root_matches_reference(n in 0usize..700) {
            let ls = leaves(n);
            let mut f = Frontier::default();
            let mut emitted = vec![];
            for l in &ls {
                f.push(*l, |h, i, x| emitted.push((h, i, *x)));
            }
            prop_assert_eq!(f.root(), mth(&ls));
            prop_assert_eq!(f.hashes().len(), n.count_ones() as usize);
            for (h, i, x) in emitted {
                let w = 1usize << h;
                prop_assert_eq!(x, mth(&ls[i as usize * w..(i as usize + 1) * w]));
            }
        }

        #[test]
        fn inclusion_matches_reference(n in 1usize..700, seed in any::<u64>()) {
            let ls = leaves(n);
            let m = (seed % n as u64) as usize;
            let mut r = Memo::new(Leaves(ls.clone()));
            let got = inclusion_path(&mut r, m as u64, n as u64).unwrap();
            prop_assert_eq!(&got, &ref_path(m, &ls));
            prop_assert!(provledger_signer::verify_inclusion(&ls[m], m as u64, n as u64, &got, &mth(&ls)).is_ok());
        }

        #[test]
        fn inclusion_after_a_neighbour_matches_reference(n in 1usize..700, a in any::<u64>(), b in any::<u64>()) {
            let ls = leaves(n);
            let (m, prev) = ((a % n as u64) as usize, (b % n as u64) as usize);
            let mut r = Memo::new(Leaves(ls.clone()));
            let prev_path = ref_path(prev, &ls);
            let got = inclusion_path_after(&mut r, m as u64, n as u64, (prev as u64, &prev_path)).unwrap();
            prop_assert_eq!(&got, &ref_path(m, &ls));
            if m + 1 < n {
                let next = inclusion_path_after(&mut r, m as u64 + 1, n as u64, (m as u64, &got)).unwrap();
                prop_assert_eq!(&next, &ref_path(m + 1, &ls));
            }
        }

        #[test]
        fn consistency_matches_reference(n in 1usize..700, seed in any::<u64>()) {
            let ls = leaves(n);
            let m = (seed % (n as u64 + 1)) as usize;
            let mut r = Memo::new(Leaves(ls.clone()));
            let got = consistency_path(&mut r, m as u64, n as u64).unwrap();
            let want = if m == 0 || m == n { vec![] } else { ref_subproof(m, &ls, true) };
            prop_assert_eq!(&got, &want);
            // transparency-dev/merkle's vectors treat size1 == 0 as unprovable; skip it there.
            if m > 0 {
                prop_assert!(provledger_signer::verify_consistency(m as u64, n as u64, &mth(&ls[..m]), &mth(&ls), &got).is_ok());
            }
        }
    }

    #[test]
    fn index_past_the_end_is_refused() {
        let mut r = Memo::new(Leaves(leaves(4)));
        assert!(matches!(
            inclusion_path(&mut r, 4, 4),
            Err(LedgerError::OutOfRange {
                value: 4,
                tree_size: 4,
                ..
            })
        ));
        assert!(matches!(
            consistency_path(&mut r, 5, 4),
            Err(LedgerError::InvalidRange(_))
        ));
    }
}
