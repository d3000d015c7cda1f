//! RFC 6962 / RFC 9162 tree hashing and proof verification.
//!
//! The verifiers follow RFC 9162 §2.1.3.2 and §2.1.4.2 in the form used by
//! transparency-dev/merkle: a proof for leaf `index` in a tree of `size` splits
//! into an *inner* part (below the point where the paths to `index` and
//! `size - 1` diverge) and a *border* part (left siblings along the right edge).
//! Knowing both lengths up front lets a wrong-length proof fail before any hashing.

use sha2::{Digest, Sha256};

use crate::hash::Hash;

const LEAF_PREFIX: u8 = 0x00;
const NODE_PREFIX: u8 = 0x01;

/// The hash of a leaf: SHA-256(0x00 ‖ leaf).
pub fn leaf_hash(leaf: &[u8]) -> Hash {
    Hash(
        Sha256::new()
            .chain_update([LEAF_PREFIX])
            .chain_update(leaf)
            .finalize()
            .into(),
    )
}

/// The hash of an interior node: SHA-256(0x01 ‖ left ‖ right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    Hash(
        Sha256::new()
            .chain_update([NODE_PREFIX])
            .chain_update(left.0)
            .chain_update(right.0)
            .finalize()
            .into(),
    )
}

/// The root of the empty tree: SHA-256 of the empty string.
pub fn empty_root() -> Hash {
    Hash(Sha256::digest([]).into())
}

/// The RFC 6962 Merkle tree hash (MTH) of already-hashed leaves.
///
/// Builds the whole tree in memory (with `rs_merkle`), so it is meant for
/// batches, exports and tests, not for a log that lives on disk.
pub fn root_of(leaf_hashes: &[Hash]) -> Hash {
    let leaves: Vec<[u8; 32]> = leaf_hashes.iter().map(|h| h.0).collect();
    rs_merkle::MerkleTree::<Rfc6962Hasher>::from_leaves(&leaves)
        .root()
        .map_or_else(empty_root, Hash)
}

/// `rs_merkle` pairs nodes level by level and promotes a lone node on the right
/// edge unchanged. With the 0x01 node prefix that is exactly RFC 6962's split at
/// the largest power of two below `n`.
#[derive(Clone)]
struct Rfc6962Hasher;

impl rs_merkle::Hasher for Rfc6962Hasher {
    type Hash = [u8; 32];

    /// Plain SHA-256. `rs_merkle` only calls it from the default
    /// `concat_and_hash`, which is replaced below; leaves arrive already hashed.
    fn hash(data: &[u8]) -> [u8; 32] {
        Sha256::digest(data).into()
    }

    fn concat_and_hash(left: &[u8; 32], right: Option<&[u8; 32]>) -> [u8; 32] {
        match right {
            Some(right) => node_hash(&Hash(*left), &Hash(*right)).0,
            None => *left,
        }
    }
}

/// Checks an inclusion proof (audit path) for `leaf_hash` at `index` against `root`.
pub fn verify_inclusion(
    leaf_hash: &Hash,
    index: u64,
    tree_size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    let computed = root_from_inclusion_proof(leaf_hash, index, tree_size, proof)?;
    if computed.ct_eq(root) {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

/// The root that an inclusion proof leads to; compare it with a trusted root.
pub fn root_from_inclusion_proof(
    leaf_hash: &Hash,
    index: u64,
    tree_size: u64,
    proof: &[Hash],
) -> Result<Hash, ProofError> {
    if index >= tree_size {
        return Err(ProofError::IndexOutOfRange { index, tree_size });
    }
    let (inner, border) = proof_size(index, tree_size);
    check_proof_size(proof, inner + border)?;
    let (inner, border) = split_inner_border(proof, inner)?;
    Ok(chain_border(chain_inner(*leaf_hash, inner, index), border))
}

/// Checks a consistency proof that the tree of `size2` with `root2` extends the
/// tree of `size1` with `root1`.
///
/// Edge cases follow transparency-dev/merkle's test vectors: `size1 == 0` is
/// always an error (a proof from the empty tree proves nothing), and
/// `size1 == size2` needs an empty proof and equal roots.
pub fn verify_consistency(
    size1: u64,
    size2: u64,
    root1: &Hash,
    root2: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if size1 > size2 {
        return Err(ProofError::SizesOutOfOrder { size1, size2 });
    }
    if size1 == 0 {
        return Err(ProofError::EmptyOldTree);
    }
    if size1 == size2 {
        if !proof.is_empty() {
            return Err(ProofError::WrongProofSize {
                expected: 0,
                actual: proof.len(),
            });
        }
        return if root1.ct_eq(root2) {
            Ok(())
        } else {
            Err(ProofError::RootMismatch)
        };
    }

    // The proof is a suffix of the inclusion proof for leaf size1 - 1 in the
    // size2 tree, starting at level `shift`: the height of the largest complete
    // subtree that ends at size1. Unless that subtree is the whole size1 tree
    // (size1 a power of two, its hash is root1), the proof starts with its hash.
    let shift = size1.trailing_zeros();
    let (inner, border) = proof_size(size1 - 1, size2);
    let inner = inner.saturating_sub(shift as usize);
    let seeded = !size1.is_power_of_two();
    check_proof_size(proof, usize::from(seeded) + inner + border)?;
    let (seed, rest) = match proof.split_first() {
        Some((first, rest)) if seeded => (*first, rest),
        _ => (*root1, proof),
    };
    let (inner, border) = split_inner_border(rest, inner)?;
    let mask = (size1 - 1) >> shift;

    let old = chain_border(chain_inner_right(seed, inner, mask), border);
    if !old.ct_eq(root1) {
        return Err(ProofError::OldRootMismatch);
    }
    let new = chain_border(chain_inner(seed, inner, mask), border);
    if !new.ct_eq(root2) {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// Lengths of the inner and border parts of an inclusion proof for `index < size`.
fn proof_size(index: u64, size: u64) -> (usize, usize) {
    let inner = 64 - (index ^ (size - 1)).leading_zeros();
    let border = index.checked_shr(inner).unwrap_or(0).count_ones();
    (inner as usize, border as usize)
}

fn check_proof_size(proof: &[Hash], expected: usize) -> Result<(), ProofError> {
    if proof.len() == expected {
        Ok(())
    } else {
        Err(ProofError::WrongProofSize {
            expected,
            actual: proof.len(),
        })
    }
}

/// Splits a proof whose length was checked into its inner and border parts.
fn split_inner_border(proof: &[Hash], inner: usize) -> Result<(&[Hash], &[Hash]), ProofError> {
    proof
        .split_at_checked(inner)
        .ok_or(ProofError::WrongProofSize {
            expected: inner,
            actual: proof.len(),
        })
}

/// Hashes up from `seed`, which sits at position `index` on its level; bit `i`
/// of `index` says whether the sibling at level `i` is on the left.
fn chain_inner(seed: Hash, proof: &[Hash], index: u64) -> Hash {
    proof
        .iter()
        .zip(0u32..)
        .fold(seed, |acc, (sibling, level)| {
            if index.checked_shr(level).unwrap_or(0) & 1 == 0 {
                node_hash(&acc, sibling)
            } else {
                node_hash(sibling, &acc)
            }
        })
}

/// Like `chain_inner`, but only left siblings count: the result is the hash of
/// the same subtree as it was before anything was appended to its right.
fn chain_inner_right(seed: Hash, proof: &[Hash], index: u64) -> Hash {
    proof
        .iter()
        .zip(0u32..)
        .fold(seed, |acc, (sibling, level)| {
            if index.checked_shr(level).unwrap_or(0) & 1 == 1 {
                node_hash(sibling, &acc)
            } else {
                acc
            }
        })
}

/// Along the tree's right border every sibling is on the left.
fn chain_border(seed: Hash, proof: &[Hash]) -> Hash {
    proof
        .iter()
        .fold(seed, |acc, sibling| node_hash(sibling, &acc))
}

/// A Merkle proof did not verify. Every variant means the proof, the leaf, the
/// sizes or the root came from somewhere untrustworthy or got mixed up; none is
/// worth retrying with the same inputs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// The leaf index is not inside the tree.
    #[error("leaf index {index} is outside a tree of size {tree_size}")]
    IndexOutOfRange {
        /// The leaf index asked about.
        index: u64,
        /// The size of the tree.
        tree_size: u64,
    },
    /// The proof has the wrong number of hashes for these sizes.
    #[error("proof has {actual} hashes, but these sizes need exactly {expected}")]
    WrongProofSize {
        /// How many hashes the sizes call for.
        expected: usize,
        /// How many the proof has.
        actual: usize,
    },
    /// The proof leads to a different root than the trusted one.
    #[error(
        "proof does not lead to the trusted root: the proof, leaf hash, index or size is wrong"
    )]
    RootMismatch,
    /// A consistency proof does not lead to the older root.
    #[error("consistency proof does not lead to the older root: the proof or the older checkpoint is wrong")]
    OldRootMismatch,
    /// The older tree is larger than the newer one.
    #[error("older tree size {size1} is larger than newer tree size {size2}")]
    SizesOutOfOrder {
        /// The older size.
        size1: u64,
        /// The newer size.
        size2: u64,
    },
    /// Consistency with the empty tree is trivially true and proves nothing.
    #[error("consistency proof from the empty tree proves nothing; check inclusion or consistency from a non-empty tree instead")]
    EmptyOldTree,
}

#[cfg(test)]
// Tests index into vectors they built themselves; a panic is a test failure.
#[allow(clippy::indexing_slicing, clippy::unwrap_used)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    // A plain recursive RFC 6962 §2.1 reference, over already-hashed leaves.

    /// The largest power of two smaller than `n` (n > 1).
    fn split_point(n: usize) -> usize {
        let mut k = 1;
        while k * 2 < n {
            k *= 2;
        }
        k
    }

    /// MTH(D[n]).
    fn mth(d: &[Hash]) -> Hash {
        match d.len() {
            0 => empty_root(),
            1 => d[0],
            n => {
                let k = split_point(n);
                node_hash(&mth(&d[..k]), &mth(&d[k..]))
            }
        }
    }

    /// PATH(m, D[n]).
    fn path(m: usize, d: &[Hash]) -> Vec<Hash> {
        let n = d.len();
        if n == 1 {
            return vec![];
        }
        let k = split_point(n);
        let (mut p, sibling) = if m < k {
            (path(m, &d[..k]), mth(&d[k..]))
        } else {
            (path(m - k, &d[k..]), mth(&d[..k]))
        };
        p.push(sibling);
        p
    }

    /// SUBPROOF(m, D[n], b); PROOF(m, D[n]) = SUBPROOF(m, D[n], true).
    fn subproof(m: usize, d: &[Hash], b: bool) -> Vec<Hash> {
        let n = d.len();
        if m == n {
            return if b { vec![] } else { vec![mth(d)] };
        }
        let k = split_point(n);
        let (mut p, sibling) = if m <= k {
            (subproof(m, &d[..k], b), mth(&d[k..]))
        } else {
            (subproof(m - k, &d[k..], false), mth(&d[..k]))
        };
        p.push(sibling);
        p
    }

    fn leaves(n: usize, salt: u64) -> Vec<Hash> {
        (0..n as u64)
            .map(|i| leaf_hash(&[salt.to_be_bytes(), i.to_be_bytes()].concat()))
            .collect()
    }

    /// Flips bit `bit` of the concatenation of `hashes`.
    fn flip(hashes: &mut [Hash], bit: usize) {
        let bit = bit % (hashes.len() * 256);
        hashes[bit / 256].0[bit % 256 / 8] ^= 1 << (bit % 8);
    }

    #[test]
    fn empty_and_single_trees() {
        assert_eq!(root_of(&[]), empty_root());
        assert_eq!(
            empty_root().to_hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let leaf = leaf_hash(b"x");
        assert_eq!(root_of(&[leaf]), leaf);
        assert_eq!(verify_inclusion(&leaf, 0, 1, &[], &leaf), Ok(()));
        assert_eq!(
            verify_inclusion(&leaf, 0, 0, &[], &leaf),
            Err(ProofError::IndexOutOfRange {
                index: 0,
                tree_size: 0
            })
        );
    }

    #[test]
    fn huge_sizes_do_not_panic() {
        let h = leaf_hash(b"");
        for (index, size) in [(0, u64::MAX), (u64::MAX - 1, u64::MAX), (0, 1 << 63 | 1)] {
            assert!(verify_inclusion(&h, index, size, &[h; 3], &h).is_err());
            assert!(verify_consistency(index.max(1), size, &h, &h, &[h; 3]).is_err());
        }
        assert!(verify_consistency(3, 5, &h, &h, &[]).is_err());
    }

    #[test]
    fn wrong_proof_size_counts_the_seed_hash() {
        let d = leaves(7, 0);
        let proof = subproof(3, &d, true);
        let short = &proof[..proof.len() - 1];
        assert_eq!(
            verify_consistency(3, 7, &mth(&d[..3]), &mth(&d), short),
            Err(ProofError::WrongProofSize {
                expected: proof.len(),
                actual: short.len()
            })
        );
        assert_eq!(
            verify_consistency(3, 7, &mth(&d[..3]), &mth(&d), &[]),
            Err(ProofError::WrongProofSize {
                expected: proof.len(),
                actual: 0
            })
        );
    }

    proptest! {
        #[test]
        fn root_of_matches_reference(n in 0usize..300, salt: u64) {
            let d = leaves(n, salt);
            prop_assert_eq!(root_of(&d), mth(&d));
        }

        #[test]
        fn inclusion_accepts_reference_paths(n in 1usize..300, m: usize, salt: u64) {
            let d = leaves(n, salt);
            let m = m % n;
            let proof = path(m, &d);
            prop_assert_eq!(
                verify_inclusion(&d[m], m as u64, n as u64, &proof, &mth(&d)),
                Ok(())
            );
        }

        #[test]
        fn inclusion_rejects_any_bit_flip(n in 1usize..300, m: usize, salt: u64, bit: usize) {
            let d = leaves(n, salt);
            let m = m % n;
            // leaf hash, root, then the proof: one bit flipped anywhere.
            let mut all = vec![d[m], mth(&d)];
            all.extend(path(m, &d));
            flip(&mut all, bit);
            prop_assert!(verify_inclusion(&all[0], m as u64, n as u64, &all[2..], &all[1]).is_err());
        }

        #[test]
        fn consistency_accepts_reference_proofs(n in 1usize..300, m: usize, salt: u64) {
            let d = leaves(n, salt);
            let m = 1 + m % n;
            let proof = subproof(m, &d, true);
            prop_assert_eq!(
                verify_consistency(m as u64, n as u64, &mth(&d[..m]), &mth(&d), &proof),
                Ok(())
            );
        }

        #[test]
        fn consistency_rejects_any_bit_flip(n in 1usize..300, m: usize, salt: u64, bit: usize) {
            let d = leaves(n, salt);
            let m = 1 + m % n;
            // root1, root2, then the proof: one bit flipped anywhere.
            let mut all = vec![mth(&d[..m]), mth(&d)];
            all.extend(subproof(m, &d, true));
            flip(&mut all, bit);
            prop_assert!(
                verify_consistency(m as u64, n as u64, &all[0], &all[1], &all[2..]).is_err()
            );
        }
    }
}
