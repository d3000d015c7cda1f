//! Known-answer tests against public vectors, checked byte for byte.
//!
//! Sources (commits and licenses in `shared/vectors/README.md`):
//! - `transparency-dev-merkle/testdata/{inclusion,consistency}/**`:
//!   github.com/transparency-dev/merkle @ 417fb0c3, `testdata/` (Apache-2.0).
//! - `transparency-dev-merkle/rfc6962-reference-tree.derived.json`: the 8-leaf
//!   RFC 6962 reference tree from the same repository's `testonly/constants.go`.
//! - `transparency-dev-tessera/`: github.com/transparency-dev/tessera @ 1811ae1a,
//!   `testdata/log/checkpoint*` and its tiles and entry bundles (Apache-2.0).
//! - `signed-note-examples.derived.json`: C2SP `signed-note.md`, golang/mod
//!   `sumdb/note/note_test.go` and `sumdb/tlog/note_test.go`, tessera's test key.
//! - `c2sp-cctv-ed25519/ed25519vectors.json`: github.com/C2SP/CCTV @ 1e3d2860 (BSD-3-Clause).
//! - `sigstore-conformance/test/assets/bundle-verify/rekor2-*`:
//!   github.com/sigstore/sigstore-conformance @ a73de497 (Apache-2.0).
//!
//! The vectors live in `shared/` beside the repository: `../../shared/vectors`
//! from this crate, or wherever `PROVLEDGER_VECTORS` points.

// Test code: unwrap and indexing on vector data we control; a panic is a failure report.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::Value;

fn vectors_dir() -> PathBuf {
    let dir = std::env::var_os("PROVLEDGER_VECTORS").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors"),
        PathBuf::from,
    );
    assert!(
        dir.join("README.md").is_file(),
        "test vectors not found at {}: clone the shared folder beside the repository or set PROVLEDGER_VECTORS",
        dir.display()
    );
    dir
}

fn read(relative: &str) -> String {
    let path = vectors_dir().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn json(relative: &str) -> Value {
    serde_json::from_str(&read(relative)).unwrap()
}

fn hex32(s: &str) -> [u8; 32] {
    hex::decode(s).unwrap().try_into().unwrap()
}

/// RFC 6962 proofs: transparency-dev/merkle's inclusion and consistency cases.
mod merkle_cases {
    use provledger_signer::{verify_consistency, verify_inclusion, Hash};
    use serde::Deserialize;
    use sha2::{Digest, Sha256};

    use super::*;

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Inclusion {
        leaf_idx: u64,
        tree_size: u64,
        root: String,
        leaf_hash: String,
        proof: Option<Vec<String>>,
        desc: String,
        want_err: bool,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Consistency {
        size1: u64,
        size2: u64,
        root1: String,
        root2: String,
        proof: Option<Vec<String>>,
        desc: String,
        want_err: bool,
    }

    /// Some cases use values that are not 32 bytes ("don't care 1", "", 9-byte
    /// garbage), which Go compares as byte strings. A `Hash` cannot hold them,
    /// so they stand in as SHA-256("not a tree hash" ‖ bytes): equal values stay
    /// equal, different ones stay different, and none is a real tree hash.
    fn hash(b64: &str) -> Hash {
        let bytes = STANDARD.decode(b64).unwrap();
        Hash::from_slice(&bytes).unwrap_or_else(|_| {
            Hash(
                Sha256::new()
                    .chain_update(b"not a tree hash")
                    .chain_update(&bytes)
                    .finalize()
                    .into(),
            )
        })
    }

    fn hashes(proof: &Option<Vec<String>>) -> Vec<Hash> {
        proof.iter().flatten().map(|h| hash(h)).collect()
    }

    /// All `.json` files under `dir`, sorted.
    fn cases(dir: &Path) -> Vec<PathBuf> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                found.extend(cases(&path));
            } else if path.extension().is_some_and(|e| e == "json") {
                found.push(path);
            }
        }
        found.sort();
        found
    }

    #[test]
    fn inclusion() {
        let paths = cases(&vectors_dir().join("transparency-dev-merkle/testdata/inclusion"));
        assert_eq!(paths.len(), 98);
        let mut failures = Vec::new();
        for path in &paths {
            let case: Inclusion =
                serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
            // Go rejects a leaf hash of the wrong length before anything else;
            // here the `Hash` type does.
            let got = Hash::from_slice(&STANDARD.decode(&case.leaf_hash).unwrap())
                .map_err(|e| e.to_string())
                .and_then(|leaf| {
                    let proof = hashes(&case.proof);
                    verify_inclusion(
                        &leaf,
                        case.leaf_idx,
                        case.tree_size,
                        &proof,
                        &hash(&case.root),
                    )
                    .map_err(|e| e.to_string())
                });
            if got.is_err() != case.want_err {
                failures.push(format!("{}: {}: got {got:?}", path.display(), case.desc));
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
    }

    #[test]
    fn consistency() {
        let paths = cases(&vectors_dir().join("transparency-dev-merkle/testdata/consistency"));
        assert_eq!(paths.len(), 98);
        let mut failures = Vec::new();
        for path in &paths {
            let case: Consistency =
                serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
            let got = verify_consistency(
                case.size1,
                case.size2,
                &hash(&case.root1),
                &hash(&case.root2),
                &hashes(&case.proof),
            );
            if got.is_err() != case.want_err {
                failures.push(format!("{}: {}: got {got:?}", path.display(), case.desc));
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
    }
}

/// The classic 8-leaf RFC 6962 reference tree.
mod reference_tree {
    use provledger_signer::{
        leaf_hash, node_hash, root_from_inclusion_proof, root_of, verify_consistency,
        verify_inclusion, Hash,
    };

    use super::*;

    fn tree() -> Value {
        json("transparency-dev-merkle/rfc6962-reference-tree.derived.json")
    }

    fn hash(v: &Value) -> Hash {
        Hash::from_hex(v.as_str().unwrap()).unwrap()
    }

    fn path(v: &Value) -> Vec<Hash> {
        v.as_array().unwrap().iter().map(hash).collect()
    }

    fn leaf_hashes(tree: &Value) -> Vec<Hash> {
        tree["leaf_hashes"]
            .as_array()
            .unwrap()
            .iter()
            .map(hash)
            .collect()
    }

    #[test]
    fn leaves_nodes_and_roots() {
        let tree = tree();
        let leaves = leaf_hashes(&tree);
        for (input, want) in tree["leaves_hex"].as_array().unwrap().iter().zip(&leaves) {
            assert_eq!(
                &leaf_hash(&hex::decode(input.as_str().unwrap()).unwrap()),
                want
            );
        }
        for (i, want) in tree["level1_node_hashes"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
        {
            assert_eq!(node_hash(&leaves[2 * i], &leaves[2 * i + 1]), hash(want));
        }
        let roots = tree["root_hash_by_tree_size"].as_object().unwrap();
        assert_eq!(roots.len(), 9);
        for (size, want) in roots {
            let size: usize = size.parse().unwrap();
            assert_eq!(root_of(&leaves[..size]), hash(want), "size {size}");
        }
    }

    #[test]
    fn proofs() {
        let tree = tree();
        let leaves = leaf_hashes(&tree);
        for case in tree["inclusion_proofs"].as_array().unwrap() {
            let index = case["leaf_index"].as_u64().unwrap();
            let size = case["tree_size"].as_u64().unwrap();
            let proof = path(&case["path"]);
            let leaf = &leaves[index as usize];
            assert_eq!(
                root_from_inclusion_proof(leaf, index, size, &proof),
                Ok(hash(&case["root"]))
            );
            assert_eq!(
                verify_inclusion(leaf, index, size, &proof, &hash(&case["root"])),
                Ok(())
            );
        }
        for case in tree["consistency_proofs"].as_array().unwrap() {
            let result = verify_consistency(
                case["size1"].as_u64().unwrap(),
                case["size2"].as_u64().unwrap(),
                &hash(&case["root1"]),
                &hash(&case["root2"]),
                &path(&case["path"]),
            );
            assert_eq!(result, Ok(()), "{case}");
        }
    }
}

/// Tessera's test log: tiles, entry bundles and signed checkpoints for sizes 0..=15.
mod tessera {
    use provledger_signer::{
        empty_root, leaf_hash, root_of, verify_checkpoint, Checkpoint, SigningKey, VerifierKey,
    };

    use super::*;

    const ORIGIN: &str = "example.com/log/testdata";

    fn files() -> Value {
        json("transparency-dev-tessera/tiles-and-bundles.derived.json")
    }

    fn file(files: &Value, path: &str) -> Vec<u8> {
        STANDARD
            .decode(files["files_base64"][path].as_str().unwrap())
            .unwrap()
    }

    /// tlog-tiles entry bundle: each entry is a big-endian u16 length, then the bytes.
    fn entries(mut bundle: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let [hi, lo, rest @ ..] = bundle {
            let len = usize::from(u16::from_be_bytes([*hi, *lo]));
            out.push(rest[..len].to_vec());
            bundle = &rest[len..];
        }
        out
    }

    #[test]
    fn bundles_hash_to_tiles() {
        let files = files();
        for n in 1..=15 {
            let leaves = entries(&file(
                &files,
                &format!("testdata/log/tile/entries/000.p/{n}"),
            ));
            assert_eq!(leaves.len(), n);
            let hashes: Vec<u8> = leaves.iter().flat_map(|l| leaf_hash(l).0).collect();
            assert_eq!(
                hashes,
                file(&files, &format!("testdata/log/tile/0/000.p/{n}")),
                "size {n}"
            );
        }
        assert_eq!(
            entries(&file(&files, "testdata/log/tile/entries/000.p/1")),
            vec![b"one".to_vec()]
        );
    }

    #[test]
    fn checkpoints_verify_and_match_the_tree() {
        let files = files();
        let known = [VerifierKey::parse(files["log_verifier_key"].as_str().unwrap()).unwrap()];
        let bundle = entries(&file(&files, "testdata/log/tile/entries/000.p/15"));
        let leaves: Vec<_> = bundle.iter().map(|l| leaf_hash(l)).collect();
        for n in 0..=15 {
            let text = read(&format!(
                "transparency-dev-tessera/testdata/log/checkpoint.{n}"
            ));
            let verified = verify_checkpoint(&text, &known).unwrap();
            let cp = verified.checkpoint();
            assert_eq!((cp.origin.as_str(), cp.size), (ORIGIN, n as u64));
            assert_eq!(cp.root, root_of(&leaves[..n]), "size {n}");
            assert_eq!(verified.note_text(), text);
        }
        let latest = read("transparency-dev-tessera/testdata/log/checkpoint");
        assert_eq!(
            latest,
            read("transparency-dev-tessera/testdata/log/checkpoint.15")
        );
        let zero = Checkpoint::parse_body(
            &read("transparency-dev-tessera/testdata/log/checkpoint.0")
                .split_once("\n\n")
                .map(|(body, _)| format!("{body}\n"))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(zero.root, empty_root());
    }

    /// Ed25519 is deterministic, so tessera's published test key must
    /// reproduce each checkpoint file exactly.
    #[test]
    fn our_signer_reproduces_the_checkpoints() {
        let notes = json("signed-note-examples.derived.json");
        let skey = notes["positive"]
            .as_array()
            .unwrap()
            .iter()
            .find_map(|p| p["skey"].as_str().filter(|s| s.contains(ORIGIN)))
            .unwrap();
        let key = SigningKey::from_skey(skey).unwrap();
        for n in 0..=15 {
            let text = read(&format!(
                "transparency-dev-tessera/testdata/log/checkpoint.{n}"
            ));
            let (body, _) = text.split_once("\n\n").unwrap();
            let cp = Checkpoint::parse_body(&format!("{body}\n")).unwrap();
            assert_eq!(cp.to_body(), format!("{body}\n"));
            assert_eq!(key.sign_checkpoint(&cp), text, "size {n}");
        }
    }
}

/// Signed notes and key strings from the C2SP spec, golang/mod and tessera.
mod signed_notes {
    use provledger_signer::{
        leaf_hash, open_note, Checkpoint, KeyError, Note, NoteError, SigningKey, VerifierKey,
    };

    use super::*;

    fn examples() -> Value {
        json("signed-note-examples.derived.json")
    }

    #[test]
    fn positive_notes_open() {
        let examples = examples();
        let mut opened = 0;
        for case in examples["positive"].as_array().unwrap() {
            let vkey = VerifierKey::parse(case["vkey"].as_str().unwrap()).unwrap();
            assert_eq!(vkey.to_string(), case["vkey"].as_str().unwrap());
            let Some(text) = case["note"].as_str() else {
                continue;
            };
            let known = [vkey.clone()];
            let (note, verified) = open_note(text, &known).unwrap();
            assert_eq!(verified, known);
            assert_eq!(note.signatures.len(), 1);
            assert_eq!(note.signatures[0].name, vkey.name());
            assert_eq!(note.signatures[0].key_id, vkey.key_id());
            opened += 1;
        }
        assert_eq!(opened, 3);
    }

    #[test]
    fn skeys_round_trip_and_sign_byte_for_byte() {
        let examples = examples();
        let mut checked = 0;
        for case in examples["positive"].as_array().unwrap() {
            let Some(skey) = case["skey"].as_str() else {
                continue;
            };
            let key = SigningKey::from_skey(skey).unwrap();
            assert_eq!(key.verifier().to_string(), case["vkey"].as_str().unwrap());
            assert_eq!(key.to_skey().as_str(), skey);
            if let Some(text) = case["note"].as_str() {
                let body = Note::parse(text).unwrap().body;
                assert_eq!(key.sign_note(&body).unwrap(), text);
            }
            checked += 1;
        }
        assert_eq!(checked, 2);
    }

    #[test]
    fn negative_vkeys_are_rejected() {
        let examples = examples();
        let negatives = examples["negative_vkeys"].as_array().unwrap();
        let wrong_length = negatives[0]["vkey"].as_str().unwrap();
        let unknown_alg = negatives[1]["vkey"].as_str().unwrap();
        assert!(matches!(
            VerifierKey::parse(wrong_length),
            Err(KeyError::MalformedVerifierKey)
        ));
        assert!(matches!(
            VerifierKey::parse(unknown_alg),
            Err(KeyError::UnsupportedAlgorithm { alg: 0x65 })
        ));

        // The rule from TestNewVerifier: every proper substring of a valid vkey,
        // and every single-byte increment of it, is rejected.
        for case in examples["positive"].as_array().unwrap() {
            let vkey = case["vkey"].as_str().unwrap();
            for start in 0..vkey.len() {
                for end in start..=vkey.len() {
                    if (start, end) == (0, vkey.len()) {
                        continue;
                    }
                    let sub = &vkey[start..end];
                    assert!(
                        VerifierKey::parse(sub).is_err(),
                        "substring {sub:?} accepted"
                    );
                }
            }
            for i in 0..vkey.len() {
                let mut bytes = vkey.as_bytes().to_vec();
                bytes[i] = bytes[i].wrapping_add(1);
                // Not UTF-8 cannot even be offered to the parser: rejected by type.
                if let Ok(bumped) = String::from_utf8(bytes) {
                    assert!(VerifierKey::parse(&bumped).is_err(), "{bumped:?} accepted");
                }
            }
        }
    }

    #[test]
    fn tampered_notes_are_rejected() {
        let examples = examples();
        let other = [SigningKey::generate("PeterNeumann").unwrap().verifier()];
        for case in examples["positive"].as_array().unwrap() {
            let Some(text) = case["note"].as_str() else {
                continue;
            };
            let vkey = VerifierKey::parse(case["vkey"].as_str().unwrap()).unwrap();
            let known = [vkey];
            // Unknown keys only, including one with the same name but another id.
            assert_eq!(open_note(text, &[]), Err(NoteError::NoKnownSignature));
            assert_eq!(open_note(text, &other), Err(NoteError::NoKnownSignature));
            // One changed character in the body: the known key's signature fails.
            let altered = text.replacen('i', "I", 1);
            assert!(matches!(
                open_note(&altered, &known),
                Err(NoteError::InvalidSignature { .. })
            ));
            // Framing damage.
            let (body, sigs) = text.rsplit_once("\n\n").unwrap();
            for broken in [
                format!("{body}\n{sigs}"),
                format!("{body}\n\n{}", sigs.trim_end()),
                format!("{body}\n\n{}", sigs.replacen('\u{2014}', "--", 1)),
                format!("{body}\n\n{}", sigs.replacen(' ', "  ", 1)),
                format!("{body}\r\n\n{sigs}"),
                format!("{body}\n\n"),
            ] {
                assert!(open_note(&broken, &known).is_err(), "{broken:?}");
            }
        }
    }

    #[test]
    fn go_sumdb_tree_note_body_parses() {
        let examples = examples();
        let text = examples["go_sumdb_tree_note_format"]["text"]
            .as_str()
            .unwrap();
        let cp = Checkpoint::parse_body(text).unwrap();
        assert_eq!(cp.origin, "go.sum database tree");
        assert_eq!(cp.size, 123_456_789_012);
        assert_eq!(cp.root, leaf_hash(b"hello world"));
        assert!(cp.extensions.is_empty());
        assert_eq!(cp.to_body(), text);
    }
}

/// C2SP CCTV Ed25519 edge cases.
///
/// `verify_raw` uses ed25519-dalek's `verify_strict` (and `verify_raw_streamed` the same rules
/// over a streamed message). Over these 914 vectors it
/// accepts exactly those with none of the flags `low_order_A`, `low_order_R`,
/// `non_canonical_R` and `low_order_residue`:
/// - small-order public keys and `R` points are refused outright;
/// - `R` is compared as bytes with the canonical encoding of the recomputed
///   point, so a non-canonical `R` never matches;
/// - the equation is the cofactorless `[s]B = R + [k]A`, so signatures that only
///   hold after multiplying by the cofactor (`low_order_residue`) fail.
///
/// `non_canonical_A` alone does not cause rejection (the key's bytes are hashed
/// as given) and neither do `low_order_component_*` or `reencoded_k`.
mod cctv {
    use provledger_signer::VerifierKey;

    use super::*;

    const REJECTING_FLAGS: [&str; 4] = [
        "low_order_A",
        "low_order_R",
        "non_canonical_R",
        "low_order_residue",
    ];

    #[test]
    fn verify_raw_follows_verify_strict_rule() {
        let vectors = json("c2sp-cctv-ed25519/ed25519vectors.json");
        let vectors = vectors.as_array().unwrap();
        assert_eq!(vectors.len(), 914);
        let mut failures = Vec::new();
        let mut accepted = 0;
        for v in vectors {
            let flags: Vec<&str> = v["flags"]
                .as_array()
                .map(|f| f.iter().map(|f| f.as_str().unwrap()).collect())
                .unwrap_or_default();
            let key = hex32(v["key"].as_str().unwrap());
            let sig: [u8; 64] = hex::decode(v["sig"].as_str().unwrap())
                .unwrap()
                .try_into()
                .unwrap();
            let msg = v["msg"].as_str().unwrap().as_bytes();
            // A key that does not even decode as a point is a rejection too.
            let got = VerifierKey::new("cctv", &key).is_ok_and(|k| k.verify_raw(msg, &sig));
            // The streamed verifier (large DSSE statements) decides every vector alike, however
            // the message is cut.
            for piece in [1, 7, 64] {
                let streamed = VerifierKey::new("cctv", &key).is_ok_and(|k| {
                    k.verify_raw_streamed(&sig, &|sink| {
                        msg.chunks(piece).for_each(&mut *sink);
                        Ok(())
                    })
                    .unwrap()
                });
                if streamed != got {
                    failures.push(format!(
                        "vector {}: streamed in pieces of {piece}: got {streamed}, verify_raw {got}",
                        v["number"]
                    ));
                }
            }
            let want = !flags.iter().any(|f| REJECTING_FLAGS.contains(f));
            if got != want {
                failures.push(format!(
                    "vector {}: flags {flags:?}: got {got}",
                    v["number"]
                ));
            }
            accepted += usize::from(got);
        }
        assert!(failures.is_empty(), "{failures:#?}");
        eprintln!("cctv: {accepted} of {} accepted", vectors.len());
    }
}

/// Real Rekor v2 (Tessera-backed) checkpoints and inclusion proofs from
/// sigstore-conformance. The log key is Ed25519, so its signatures are checked;
/// the ECDSA-P256 line in `two-sigs-from-origin` and the witness cosignatures
/// (type 0x04) are from keys we do not hold and must simply be ignored.
mod sigstore {
    use provledger_signer::{
        leaf_hash, verify_checkpoint, verify_inclusion, Checkpoint, CheckpointError, Hash, Note,
        NoteError, VerifierKey,
    };

    use super::*;

    const DIR: &str = "sigstore-conformance/test/assets/bundle-verify";
    /// DER prefix of an Ed25519 SubjectPublicKeyInfo; the key follows.
    const ED25519_SPKI_PREFIX: [u8; 12] = [
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];

    #[derive(Debug, PartialEq)]
    enum Expect {
        Verifies,
        BadBody,
        NoSignature,
        WrongOrigin,
        NoCheckpoint,
    }

    fn expectation(case: &str) -> Expect {
        match case {
            "rekor2-happy-path"
            | "rekor2-dsse-happy-path"
            | "rekor2-checkpoint-cosigned"
            | "rekor2-checkpoint-multiple-cosigs"
            | "rekor2-checkpoint-origin-not-first"
            | "rekor2-checkpoint-two-sigs-cosigned"
            | "rekor2-checkpoint-two-sigs-from-origin" => Expect::Verifies,
            "rekor2-checkpoint-missing-origin_fail"
            | "rekor2-checkpoint-missing-size_fail"
            | "rekor2-checkpoint-missing-root-hash_fail" => Expect::BadBody,
            "rekor2-checkpoint-missing-log-signature_fail" => Expect::NoSignature,
            "rekor2-checkpoint-no-matching-signature_fail" => Expect::WrongOrigin,
            // Fails for lack of an inclusion proof, so there is no checkpoint here.
            "rekor2-no-inclusion-proof_fail" => Expect::NoCheckpoint,
            other => panic!("new sigstore case {other}: add its expectation"),
        }
    }

    /// The trusted root's Ed25519 log keys, each named after its URL's host.
    fn log_keys(trusted_root: &Value) -> Vec<VerifierKey> {
        let tlogs = trusted_root["tlogs"].as_array().unwrap();
        let keys: Vec<VerifierKey> = tlogs
            .iter()
            .filter(|t| t["publicKey"]["keyDetails"] == "PKIX_ED25519")
            .map(|tlog| {
                let der = STANDARD
                    .decode(tlog["publicKey"]["rawBytes"].as_str().unwrap())
                    .unwrap();
                let (prefix, key) = der.split_at(12);
                assert_eq!(prefix, ED25519_SPKI_PREFIX);
                let origin = tlog["baseUrl"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches("https://");
                VerifierKey::new(origin, &key.try_into().unwrap()).unwrap()
            })
            .collect();
        assert!(!keys.is_empty());
        keys
    }

    #[test]
    fn rekor2_checkpoints() {
        let mut names: Vec<String> = std::fs::read_dir(vectors_dir().join(DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("rekor2-"))
            .collect();
        names.sort();
        assert_eq!(names.len(), 13);
        for name in &names {
            let bundle = json(&format!("{DIR}/{name}/bundle.sigstore.json"));
            let keys = log_keys(&json(&format!("{DIR}/{name}/trusted_root.json")));
            let entry = &bundle["verificationMaterial"]["tlogEntries"][0];
            let proof = &entry["inclusionProof"];
            let Some(text) = proof["checkpoint"]["envelope"].as_str() else {
                assert_eq!(expectation(name), Expect::NoCheckpoint, "{name}");
                continue;
            };
            let result = verify_checkpoint(text, &keys);
            match expectation(name) {
                Expect::Verifies => {
                    let verified = result.unwrap_or_else(|e| panic!("{name}: {e}"));
                    let cp = verified.checkpoint();
                    assert!(cp.origin.starts_with("log2025-alpha"), "{name}");
                    assert_eq!(cp.size.to_string(), proof["treeSize"].as_str().unwrap());
                    // The entry's inclusion proof leads to the verified root.
                    let body = STANDARD
                        .decode(entry["canonicalizedBody"].as_str().unwrap())
                        .unwrap();
                    let path: Vec<Hash> = proof["hashes"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|h| Hash::from_base64(h.as_str().unwrap()).unwrap())
                        .collect();
                    let index: u64 = proof["logIndex"].as_str().unwrap().parse().unwrap();
                    assert_eq!(
                        verify_inclusion(&leaf_hash(&body), index, cp.size, &path, &cp.root),
                        Ok(()),
                        "{name}"
                    );
                }
                Expect::BadBody => {
                    let body = Note::parse(text).unwrap().body;
                    assert!(Checkpoint::parse_body(&body).is_err(), "{name}");
                    assert!(result.is_err(), "{name}");
                }
                Expect::NoSignature => {
                    assert_eq!(Note::parse(text), Err(NoteError::NoSignatures), "{name}");
                    assert_eq!(result, Err(CheckpointError::Note(NoteError::NoSignatures)));
                }
                Expect::WrongOrigin => {
                    assert!(
                        matches!(result, Err(CheckpointError::UnknownOrigin { .. })),
                        "{name}"
                    );
                    // Even the real keys under the forged name do not match the
                    // line's key id, which commits to the name.
                    let origin = Note::parse(text).unwrap().signatures[0].name.clone();
                    let renamed: Vec<VerifierKey> = keys
                        .iter()
                        .map(|k| VerifierKey::new(&origin, &k.public_key()).unwrap())
                        .collect();
                    assert_eq!(
                        verify_checkpoint(text, &renamed),
                        Err(CheckpointError::Note(NoteError::NoKnownSignature))
                    );
                }
                Expect::NoCheckpoint => panic!("{name}: expected no checkpoint"),
            }
        }
    }
}
