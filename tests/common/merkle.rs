//! An independent RFC 6962 / RFC 9162 implementation for checking the server's answers:
//! hashing, a plain recursive tree hash, and the RFC 9162 §2.1.3.2 and §2.1.4.2 proof
//! verification algorithms transcribed step by step. Written from the RFC, not from the
//! workspace's crates.

use sha2::{Digest, Sha256};

/// SHA-256(0x00 ‖ leaf).
pub fn leaf_hash(leaf: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(leaf);
    h.finalize().into()
}

/// SHA-256(0x01 ‖ left ‖ right).
pub fn node_hash(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// MTH(D[n]) of RFC 6962 §2.1 over leaf hashes, by the recursive definition.
pub fn root(leaf_hashes: &[[u8; 32]]) -> [u8; 32] {
    match leaf_hashes.len() {
        0 => Sha256::digest([]).into(),
        1 => leaf_hashes[0],
        n => {
            let k = largest_power_of_two_below(n);
            node_hash(&root(&leaf_hashes[..k]), &root(&leaf_hashes[k..]))
        }
    }
}

fn largest_power_of_two_below(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// RFC 9162 §2.1.3.2: verifies an inclusion proof of the leaf at `index` in a tree of `size`.
pub fn verify_inclusion(
    leaf_hash: &[u8; 32],
    index: u64,
    size: u64,
    proof: &[[u8; 32]],
    root: &[u8; 32],
) -> bool {
    if index >= size {
        return false;
    }
    let mut f_n = index;
    let mut s_n = size - 1;
    let mut r = *leaf_hash;
    for p in proof {
        if s_n == 0 {
            return false;
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    s_n == 0 && r == *root
}

/// RFC 9162 §2.1.4.2: verifies that the tree of `size2` leaves with root `root2` extends the
/// tree of `size1` leaves with root `root1`. Equal sizes need an empty proof and equal roots.
pub fn verify_consistency(
    size1: u64,
    size2: u64,
    proof: &[[u8; 32]],
    root1: &[u8; 32],
    root2: &[u8; 32],
) -> bool {
    if size1 > size2 {
        return false;
    }
    if size1 == size2 {
        return proof.is_empty() && root1 == root2;
    }
    if size1 == 0 {
        return proof.is_empty();
    }
    let mut path: Vec<[u8; 32]> = Vec::with_capacity(proof.len() + 1);
    if size1.is_power_of_two() {
        path.push(*root1);
    }
    path.extend_from_slice(proof);
    if path.is_empty() {
        return false;
    }
    let mut f_n = size1 - 1;
    let mut s_n = size2 - 1;
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    let mut f_r = path[0];
    let mut s_r = path[0];
    for c in &path[1..] {
        if s_n == 0 {
            return false;
        }
        if f_n & 1 == 1 || f_n == s_n {
            f_r = node_hash(c, &f_r);
            s_r = node_hash(c, &s_r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            s_r = node_hash(&s_r, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    f_r == *root1 && s_r == *root2 && s_n == 0
}

/// A copy of `proof` with one bit of hash `i` flipped, for negative checks.
pub fn tamper(proof: &[[u8; 32]], i: usize) -> Vec<[u8; 32]> {
    let mut p = proof.to_vec();
    p[i][0] ^= 0x01;
    p
}
