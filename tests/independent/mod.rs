//! Verification by code nobody here wrote or shares: a Python checker using `cryptography`'s
//! Ed25519 (tests/verify_receipt.py), and the tests' own RFC 9162 verifier checked against the
//! RFC 6962 reference tree.
//!
//! Vector source: `../shared/vectors/transparency-dev-merkle/rfc6962-reference-tree.derived.json`,
//! transcribed from transparency-dev/merkle `testonly/constants.go` and `cmd/proofgen`.

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::common::merkle::{self, leaf_hash, verify_consistency, verify_inclusion};
use crate::common::{describe, record, Server};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/verify_receipt.py")
}

/// Fails (never skips) when python3 or its `cryptography` package is missing: CI installs them.
fn require_python() {
    let out = Command::new("python3")
        .args([
            "-c",
            "import cryptography.hazmat.primitives.asymmetric.ed25519",
        ])
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "python3 is required for the independent receipt check and could not be run: {e}"
            )
        });
    assert!(
        out.status.success(),
        "the Python package 'cryptography' is required for the independent receipt check \
         (pip install cryptography, or apt-get install python3-cryptography):\n{}",
        describe(&out)
    );
}

/// Runs the Python checker on a receipt; returns (exit code, stdout).
fn python_verify(receipt: &Value, vkey: &str) -> (i32, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("receipt.json");
    std::fs::write(&path, serde_json::to_vec(receipt).unwrap()).expect("write receipt");
    let out = Command::new("python3")
        .arg(script())
        .arg(&path)
        .arg(vkey)
        .output()
        .expect("run python3");
    let code = out.status.code().unwrap_or(-1);
    assert!(
        code == 0 || code == 1,
        "the Python checker itself failed:\n{}",
        describe(&out)
    );
    (code, String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn assert_rejected(receipt: &Value, vkey: &str, what: &str, reason: &str) {
    let (code, stdout) = python_verify(receipt, vkey);
    assert_eq!(code, 1, "{what}: the Python checker accepted it: {stdout}");
    assert!(
        stdout.starts_with("FAIL") && stdout.contains(reason),
        "{what}: expected a failure about {reason:?}, got {stdout:?}"
    );
}

#[test]
fn an_independent_python_checker_accepts_real_receipts_and_rejects_tampered_ones() {
    require_python();
    let server = Server::start(&[]);
    let vkey = server.get("/v1/key").text().trim().to_owned();

    let mut receipts = vec![server.append(&record("input", "doc:0", 0))];
    let batch: Vec<Value> = (1..13).map(|n| record("input", "doc:n", n)).collect();
    receipts.extend(server.append_all(&batch));
    for r in &receipts {
        let (code, stdout) = python_verify(r, &vkey);
        assert_eq!(
            (code, stdout.as_str()),
            (0, "OK"),
            "a real receipt (index {}) must verify",
            r["index"]
        );
    }

    let real = receipts[5].clone();
    assert!(!real["inclusion_proof"].as_array().unwrap().is_empty());

    // One flipped bit in one proof hash.
    let mut tampered = real.clone();
    let mut h = B64
        .decode(tampered["inclusion_proof"][1].as_str().unwrap())
        .unwrap();
    h[7] ^= 0x20;
    tampered["inclusion_proof"][1] = Value::String(B64.encode(&h));
    assert_rejected(&tampered, &vkey, "flipped proof hash", "inclusion proof");

    // A checkpoint body with an extra (extension) line: the signature no longer covers it.
    let cp = real["checkpoint"].as_str().unwrap();
    let (body, sigs) = cp.split_once("\n\n").unwrap();
    let mut tampered = real.clone();
    tampered["checkpoint"] = Value::String(format!("{body}\nextension line\n\n{sigs}"));
    assert_rejected(&tampered, &vkey, "extended checkpoint body", "signature");

    // A checkpoint body whose root was replaced by another tree's root.
    let other_root = receipts[0]["checkpoint"]
        .as_str()
        .unwrap()
        .lines()
        .nth(2)
        .unwrap();
    let lines: Vec<&str> = body.lines().collect();
    assert_ne!(lines[2], other_root);
    let forged = format!("{}\n{}\n{other_root}\n\n{sigs}", lines[0], lines[1]);
    let mut tampered = real.clone();
    tampered["checkpoint"] = Value::String(forged);
    assert_rejected(&tampered, &vkey, "replaced root", "signature");

    // A flipped bit in the signature itself.
    let (sig_prefix, sig_b64) = sigs.trim_end().rsplit_once(' ').unwrap();
    let mut sig = B64.decode(sig_b64).unwrap();
    sig[10] ^= 0x01;
    let mut tampered = real.clone();
    tampered["checkpoint"] =
        Value::String(format!("{body}\n\n{sig_prefix} {}\n", B64.encode(&sig)));
    assert_rejected(&tampered, &vkey, "flipped signature bit", "signature");

    // The right note checked with some other key.
    let name = vkey.split('+').next().unwrap();
    let mut raw = vec![0x01];
    raw.extend_from_slice(&[7u8; 32]);
    let mut hh = Sha256::new();
    hh.update(name.as_bytes());
    hh.update(b"\n");
    hh.update(&raw);
    let digest = hh.finalize();
    let foreign = format!("{name}+{}+{}", hex::encode(&digest[..4]), B64.encode(&raw));
    assert_rejected(&real, &foreign, "foreign verifier key", "no signature line");

    // An id that is not the leaf's hash, and a tree size that is not the checkpoint's.
    let mut tampered = real.clone();
    tampered["id"] = Value::String("00".repeat(32));
    assert_rejected(&tampered, &vkey, "wrong id", "id");
    let mut tampered = real.clone();
    tampered["tree_size"] = Value::from(real["tree_size"].as_u64().unwrap() + 1);
    assert_rejected(&tampered, &vkey, "wrong tree_size", "tree_size");
}

fn vectors() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/vectors/transparency-dev-merkle/rfc6962-reference-tree.derived.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read the RFC 6962 vectors at {}: {e}",
            path.display()
        )
    });
    serde_json::from_str(&text).expect("vectors are JSON")
}

fn unhex(v: &Value) -> [u8; 32] {
    hex::decode(v.as_str().expect("hex string"))
        .expect("hex")
        .try_into()
        .expect("32 bytes")
}

fn unhex_all(v: &Value) -> Vec<[u8; 32]> {
    v.as_array().expect("array").iter().map(unhex).collect()
}

/// The tests' own RFC 9162 verifier must agree with the reference tree, or every proof check
/// above would prove nothing.
#[test]
fn the_tests_own_merkle_verifier_agrees_with_the_rfc6962_reference_tree() {
    let v = vectors();
    let leaves: Vec<Vec<u8>> = v["leaves_hex"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| hex::decode(l.as_str().unwrap()).unwrap())
        .collect();
    let hashes: Vec<[u8; 32]> = leaves.iter().map(|l| leaf_hash(l)).collect();
    assert_eq!(hashes, unhex_all(&v["leaf_hashes"]));
    for (size, root) in v["root_hash_by_tree_size"].as_object().unwrap() {
        let size: usize = size.parse().unwrap();
        assert_eq!(merkle::root(&hashes[..size]), unhex(root), "root of {size}");
    }
    for p in v["inclusion_proofs"].as_array().unwrap() {
        let index = p["leaf_index"].as_u64().unwrap();
        let size = p["tree_size"].as_u64().unwrap();
        let path = unhex_all(&p["path"]);
        let root = unhex(&p["root"]);
        let lh = hashes[index as usize];
        assert!(verify_inclusion(&lh, index, size, &path, &root), "{p}");
        if !path.is_empty() {
            assert!(!verify_inclusion(
                &lh,
                index,
                size,
                &merkle::tamper(&path, 0),
                &root
            ));
        }
        assert!(!verify_inclusion(&lh, index, size, &path, &[0u8; 32]));
    }
    for p in v["consistency_proofs"].as_array().unwrap() {
        let (m, n) = (p["size1"].as_u64().unwrap(), p["size2"].as_u64().unwrap());
        let path = unhex_all(&p["path"]);
        let (r1, r2) = (unhex(&p["root1"]), unhex(&p["root2"]));
        assert!(verify_consistency(m, n, &path, &r1, &r2), "{p}");
        if !path.is_empty() {
            assert!(!verify_consistency(
                m,
                n,
                &merkle::tamper(&path, 0),
                &r1,
                &r2
            ));
            assert!(!verify_consistency(m, n, &path, &r2, &r1));
        }
    }
}
