//! Round trips and tampering, in-process: a small but realistic log (inputs, a model, two
//! policy versions, decisions citing them, approvals), exported in every scope and verified;
//! then every kind of alteration, each caught with the error that names it.

// Tests unwrap and index what they just built; a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::collections::HashMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use provledger_ledger::{Ledger, LedgerConfig, PreparedRecord, RecordInput};
use provledger_signer::{Hash, SigningKey, VerifierKey};
use serde_json::{json, Value};

use crate::format::FIELDS;
use crate::{
    export, verify_bundle, BundleError, BundleReport, ConsistencyProof, KeyTrust, LaterCheckpoint,
    RangeScope, RecordFault, Scope,
};

const ORIGIN: &str = "test.example/log";

struct Fixture {
    _dir: tempfile::TempDir,
    ledger: Ledger,
    key: SigningKey,
    /// Record ids and indexes by name.
    ids: HashMap<&'static str, (Hash, u64)>,
    /// Integration time of each batch, in order.
    times: Vec<u64>,
}

fn open(origin: &str) -> (tempfile::TempDir, Ledger, SigningKey) {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate(origin).unwrap();
    let copy = SigningKey::from_skey(&key.to_skey()).unwrap();
    let ledger = Ledger::open(
        &LedgerConfig::new(dir.path()),
        copy,
        &prometheus::Registry::new(),
    )
    .unwrap();
    (dir, ledger, key)
}

fn append(ledger: &Ledger, records: &[Value]) -> Vec<(Hash, u64, u64)> {
    let prepared = records
        .iter()
        .map(|r| {
            let input: RecordInput = serde_json::from_value(r.clone()).unwrap();
            PreparedRecord::prepare(input, "record").unwrap()
        })
        .collect();
    let receipts = ledger.append_blocking(prepared).unwrap();
    receipts
        .iter()
        .map(|r| {
            let leaf = provledger_ledger::Leaf::decode(&r.leaf).unwrap();
            (r.id, r.index, leaf.time)
        })
        .collect()
}

/// The scenario: batch 0 inputs, model and policy v1; batch 1 policy v2; batch 2 a decision per
/// input citing it, the model and the latest policy; batch 3 an approval of the first decision;
/// batch 4 an output citing both; batch 5 a record of another tenant.
fn fixture() -> Fixture {
    let (dir, ledger, key) = open(ORIGIN);
    let agent = json!({"type": "agent", "id": "claims-bot"});
    let mut ids = HashMap::new();
    let mut times = Vec::new();
    let mut batch = |records: Vec<(&'static str, Value)>, ids: &mut HashMap<_, _>| {
        let (names, values): (Vec<_>, Vec<_>) = records.into_iter().unzip();
        let out = append(&ledger, &values);
        for (name, (id, index, time)) in names.into_iter().zip(out) {
            ids.insert(name, (id, index));
            times.push(time);
        }
        std::thread::sleep(std::time::Duration::from_millis(3));
    };
    batch(
        vec![
            (
                "input-1",
                json!({"kind": "input", "entity": "claim:1", "actor": agent, "payload": {"amount": 120.5, "text": "broken screen"}}),
            ),
            (
                "input-2",
                json!({"kind": "input", "entity": "claim:2", "actor": agent, "payload": {"amount": 80, "text": "late delivery"}}),
            ),
            (
                "model",
                json!({"kind": "model", "entity": "model:fraud", "actor": {"type": "service", "id": "registry"}, "attributes": {"digest": "sha256:abc", "name": "fraud-v3"}}),
            ),
            (
                "policy-v1",
                json!({"kind": "policy", "entity": "policy:refunds", "actor": {"type": "human", "id": "ana"}, "payload": {"max": 100}}),
            ),
        ],
        &mut ids,
    );
    batch(
        vec![(
            "policy-v2",
            json!({"kind": "policy", "entity": "policy:refunds", "actor": {"type": "human", "id": "ana"}, "payload": {"max": 150}}),
        )],
        &mut ids,
    );
    let input_1 = ids["input-1"].0.to_hex();
    let input_2 = ids["input-2"].0.to_hex();
    batch(
        vec![
            (
                "decision-1",
                json!({"kind": "decision", "entity": "decision:claim:1", "actor": agent, "refs": [{"role": "input", "ref": input_1}, {"role": "model", "ref": "model:fraud"}, {"role": "policy", "ref": "policy:refunds"}], "payload": {"refund": true}}),
            ),
            (
                "decision-2",
                json!({"kind": "decision", "entity": "decision:claim:2", "actor": agent, "refs": [{"role": "input", "ref": input_2}, {"role": "model", "ref": "model:fraud"}, {"role": "policy", "ref": "policy:refunds"}], "payload": {"refund": false}}),
            ),
        ],
        &mut ids,
    );
    let decision_1 = ids["decision-1"].0.to_hex();
    batch(
        vec![(
            "approval-1",
            json!({"kind": "approval", "actor": {"type": "human", "id": "bob"}, "refs": [{"role": "parent", "ref": decision_1}], "payload": {"approved": true}}),
        )],
        &mut ids,
    );
    let approval = ids["approval-1"].0.to_hex();
    batch(
        vec![(
            "output-1",
            json!({"kind": "output", "entity": "refund:1", "actor": agent, "refs": [{"role": "parent", "ref": decision_1}, {"role": "approval", "ref": approval}]}),
        )],
        &mut ids,
    );
    batch(
        vec![(
            "other-tenant",
            json!({"kind": "input", "tenant": "globex", "entity": "claim:1", "actor": agent, "payload": {"x": 1}}),
        )],
        &mut ids,
    );
    Fixture {
        _dir: dir,
        ledger,
        key,
        ids,
        times,
    }
}

impl Fixture {
    fn id(&self, name: &str) -> Hash {
        self.ids[name].0
    }

    fn index(&self, name: &str) -> u64 {
        self.ids[name].1
    }

    fn export(&self, scope: &Scope) -> Vec<u8> {
        let mut out = Vec::new();
        export(&self.ledger, &self.key, scope, &mut out, &mut |_, _| {}).unwrap();
        out
    }

    fn trusted(&self) -> Vec<VerifierKey> {
        vec![self.key.verifier()]
    }

    fn verify(&self, bundle: &[u8]) -> Result<BundleReport, BundleError> {
        verify_bundle(bundle, &self.trusted(), None)
    }

    fn lineage(&self, name: &str, depth: u32) -> Scope {
        Scope::Records {
            tenant: None,
            ids: vec![self.id(name)],
            depth,
        }
    }
}

/// Parses a bundle, lets `f` change it, and writes it back with the fields in bundle order.
fn edit(bundle: &[u8], f: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(bundle).unwrap();
    f(&mut v);
    ordered(&v)
}

fn ordered(v: &Value) -> Vec<u8> {
    let mut out = b"{".to_vec();
    for (i, name) in FIELDS.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend(serde_json::to_vec(name).unwrap());
        out.push(b':');
        out.extend(serde_json::to_vec(&v[*name]).unwrap());
    }
    out.push(b'}');
    out
}

/// `bundle` (version 2) rewritten as the version 1 format wrote it: the manifest lists every
/// record's index and leaf hash instead of their count and digest, and is signed again by `key`.
/// `f` may change the records first (the manifest is built from the records as given).
fn as_version_1(bundle: &[u8], key: &SigningKey, f: impl FnOnce(&mut Value)) -> Vec<u8> {
    let original: Value = serde_json::from_slice(bundle).unwrap();
    let records = original["records"].as_array().unwrap();
    let indexes: Vec<Value> = records.iter().map(|r| r["index"].clone()).collect();
    let leaf_hashes: Vec<Value> = records
        .iter()
        .map(|r| {
            let leaf = STANDARD.decode(r["leaf"].as_str().unwrap()).unwrap();
            json!(provledger_signer::leaf_hash(&leaf).to_hex())
        })
        .collect();
    edit(bundle, |v| {
        v["version"] = json!(1);
        let m = v["manifest"].as_object_mut().unwrap();
        m.remove("record_count");
        m.remove("records_sha256");
        m.insert("version".into(), json!(1));
        m.insert("indexes".into(), json!(indexes));
        m.insert("leaf_hashes".into(), json!(leaf_hashes));
        let canonical = serde_json_canonicalizer::to_vec(&v["manifest"]).unwrap();
        v["manifest_signature"] = json!(STANDARD.encode(key.sign_raw(&canonical)));
        f(v);
    })
}

/// Flips the lowest bit of the first byte of a hex string's decoded bytes.
fn flip_hex(s: &mut Value) {
    let mut bytes = hex::decode(s.as_str().unwrap()).unwrap();
    bytes[0] ^= 1;
    *s = Value::String(hex::encode(bytes));
}

/// Flips the lowest bit of byte `at` of a base64 string's decoded bytes.
fn flip_b64(s: &mut Value, at: usize) {
    let mut bytes = STANDARD.decode(s.as_str().unwrap()).unwrap();
    bytes[at] ^= 1;
    *s = Value::String(STANDARD.encode(bytes));
}

fn record_error(r: Result<BundleReport, BundleError>) -> (u64, RecordFault) {
    match r {
        Err(BundleError::Record { index, fault, .. }) => (index, fault),
        other => panic!("expected a record error, got {other:?}"),
    }
}

#[test]
fn every_scope_round_trips() {
    let f = fixture();
    let size = f.ledger.head().size;

    let bundle = f.export(&Scope::entity(None, "policy:refunds"));
    let r = f.verify(&bundle).unwrap();
    assert_eq!(r.records(), 2);
    assert_eq!(r.payloads(), 2);
    assert_eq!(r.tree_size(), size);
    assert_eq!(r.origin(), ORIGIN);
    assert!(matches!(r.key(), KeyTrust::Trusted(_)));
    assert_eq!(
        r.scope(),
        "every version of entity \"policy:refunds\" of tenant \"default\""
    );

    // Decisions only, by index range.
    let bundle = f.export(&Scope::Range(RangeScope {
        from_index: Some(f.index("policy-v2")),
        to_index: Some(size),
        kind: Some("decision".into()),
        ..RangeScope::default()
    }));
    let r = f.verify(&bundle).unwrap();
    assert_eq!(r.records(), 2);
    assert_eq!((r.internal_refs(), r.external_refs()), (0, 6));
    // input-1, input-2, model, policy-v2.
    assert_eq!(r.external_records(), 4);

    // From the policy update up to (excluding) the output's batch, by time.
    let bundle = f.export(&Scope::Range(RangeScope {
        from_time: Some(f.times[f.index("policy-v2") as usize]),
        to_time: Some(f.times[f.index("output-1") as usize]),
        ..RangeScope::default()
    }));
    let r = f.verify(&bundle).unwrap();
    assert_eq!(r.records(), 4, "policy v2, two decisions, the approval");
    assert_eq!(
        r.internal_refs(),
        3,
        "two decisions cite policy v2, the approval decision 1"
    );

    // One tenant.
    let bundle = f.export(&Scope::Range(RangeScope {
        tenant: Some("globex".into()),
        ..RangeScope::default()
    }));
    assert_eq!(f.verify(&bundle).unwrap().records(), 1);

    // The output's lineage: output, approval, decision 1, input 1, model, policy v2.
    let bundle = f.export(&f.lineage("output-1", 3));
    let r = f.verify(&bundle).unwrap();
    assert_eq!(r.records(), 6);
    assert_eq!((r.internal_refs(), r.external_refs()), (6, 0));
    let r = f.verify(&f.export(&f.lineage("output-1", 1))).unwrap();
    assert_eq!(r.records(), 3, "output, approval, decision 1");
    assert_eq!(r.external_records(), 3);
    let r = f.verify(&f.export(&f.lineage("output-1", 0))).unwrap();
    assert_eq!(r.records(), 1);

    // Without trusted keys the bundle's own key is used, and the report says so.
    let r = verify_bundle(bundle.as_slice(), &[], None).unwrap();
    assert_eq!(r.key(), &KeyTrust::BundleOnly(f.key.verifier()));
}

#[test]
fn bundles_are_deterministic_and_one_record_per_line() {
    let f = fixture();
    let scope = f.lineage("output-1", 3);
    let a = f.export(&scope);
    assert_eq!(a, f.export(&scope), "same head and scope, same bytes");
    let text = String::from_utf8(a).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("{\"format\":\"provledger-bundle\",\"version\":2,"));
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("{\"index\":"))
            .count(),
        6
    );
    assert!(lines
        .iter()
        .any(|l| l.starts_with("\"manifest\":{\"checkpoint_sha256\":")));
}

#[test]
fn a_re_indented_bundle_still_verifies() {
    let f = fixture();
    let bundle = f.export(&f.lineage("output-1", 3));
    assert_eq!(f.verify(&re_indented(&bundle)).unwrap().records(), 6);
    let v1 = as_version_1(&bundle, &f.key, |_| {});
    assert_eq!(f.verify(&re_indented(&v1)).unwrap().records(), 6);
}

/// `bundle` pretty-printed, its fields kept in bundle order.
fn re_indented(bundle: &[u8]) -> Vec<u8> {
    let v: Value = serde_json::from_slice(bundle).unwrap();
    let mut pretty = b"{\n".to_vec();
    for (i, name) in FIELDS.iter().enumerate() {
        if i > 0 {
            pretty.extend(b",\n");
        }
        pretty.extend(format!("  {name:?}: ").bytes());
        pretty.extend(serde_json::to_vec_pretty(&v[*name]).unwrap());
    }
    pretty.extend(b"\n}\n");
    pretty
}

#[test]
fn tampered_leaves_payloads_and_proofs_name_the_record() {
    let f = fixture();
    let bundle = f.export(&f.lineage("output-1", 3));
    let decision = f.index("decision-1");
    let position = 3; // input-1, model, policy-v2, decision-1, …

    let leaf = edit(&bundle, |v| {
        flip_b64(&mut v["records"][position]["leaf"], 40)
    });
    let (index, fault) = record_error(f.verify(&leaf));
    assert_eq!(index, decision);
    assert!(matches!(fault, RecordFault::Inclusion(_)), "{fault}");

    let proof = edit(&bundle, |v| {
        flip_b64(&mut v["records"][position]["inclusion_proof"][0], 0)
    });
    let err = f.verify(&proof).unwrap_err();
    assert!(
        err.to_string().starts_with(&format!(
            "record {decision} (position 3 in the bundle): its leaf and inclusion proof do not lead to the checkpoint's root"
        )),
        "{err}"
    );

    let payload = edit(&bundle, |v| {
        v["records"][position]["payload"]["refund"] = json!(false)
    });
    assert_eq!(
        record_error(f.verify(&payload)),
        (decision, RecordFault::PayloadMismatch)
    );

    let salt = edit(&bundle, |v| {
        flip_b64(&mut v["records"][position]["salt"], 5)
    });
    assert_eq!(
        record_error(f.verify(&salt)),
        (decision, RecordFault::PayloadMismatch)
    );

    let not_b64 = edit(&bundle, |v| {
        v["records"][position]["inclusion_proof"][1] = json!("not base64")
    });
    assert_eq!(
        record_error(f.verify(&not_b64)),
        (decision, RecordFault::ProofEncoding { position: 1 })
    );

    let half = edit(&bundle, |v| v["records"][position]["salt"] = Value::Null);
    assert_eq!(
        record_error(f.verify(&half)),
        (decision, RecordFault::PayloadSaltPair)
    );

    let moved = edit(&bundle, |v| {
        v["records"][position]["index"] = json!(decision + 1)
    });
    let (index, fault) = record_error(f.verify(&moved));
    assert_eq!(index, decision + 1);
    assert!(matches!(fault, RecordFault::Inclusion(_)), "{fault}");
}

#[test]
fn withheld_payloads_verify_and_are_counted() {
    let f = fixture();
    let bundle = f.export(&f.lineage("output-1", 3));
    let erased = edit(&bundle, |v| {
        v["records"][3]["payload"] = Value::Null;
        v["records"][3]["salt"] = Value::Null;
        let rec = v["records"][0].as_object_mut().unwrap();
        rec.remove("payload");
        rec.remove("salt");
    });
    let r = f.verify(&erased).unwrap();
    assert_eq!((r.payloads(), r.payloads_absent()), (2, 2));
}

#[test]
fn removed_duplicated_replaced_and_extra_records_are_caught() {
    let f = fixture();
    let bundle = f.export(&f.lineage("output-1", 3));

    let removed = edit(&bundle, |v| {
        v["records"].as_array_mut().unwrap().remove(2);
    });
    let err = f.verify(&removed).unwrap_err();
    assert!(
        matches!(
            err,
            BundleError::RecordCount {
                signed: 6,
                found: 5
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "the signed manifest covers 6 records but the bundle holds 5: records were removed or added after it was signed"
    );

    let duplicated = edit(&bundle, |v| {
        let copy = v["records"][2].clone();
        v["records"].as_array_mut().unwrap().insert(3, copy);
    });
    let (index, fault) = record_error(f.verify(&duplicated));
    assert_eq!(index, f.index("policy-v2"));
    assert!(matches!(fault, RecordFault::NotAscending { .. }));

    // policy v1 is in the log and proven, but not one of the records the manifest covers.
    let other = f.export(&Scope::entity(None, "policy:refunds"));
    let policy_v1: Value = serde_json::from_slice::<Value>(&other).unwrap()["records"][0].clone();
    let extra = edit(&bundle, |v| {
        v["records"]
            .as_array_mut()
            .unwrap()
            .insert(2, policy_v1.clone());
    });
    assert!(matches!(
        f.verify(&extra),
        Err(BundleError::RecordCount {
            signed: 6,
            found: 7
        })
    ));
    let replaced = edit(&bundle, |v| v["records"][2] = policy_v1.clone());
    let err = f.verify(&replaced).unwrap_err();
    assert!(matches!(err, BundleError::RecordsDigest), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("the records are not the ones the signed manifest covers"),
        "{err}"
    );
}

/// Version 1 bundles (written before version 2) still verify, and their manifest's lists name
/// the record that was removed or added.
#[test]
fn version_1_bundles_verify_and_name_the_missing_record() {
    let f = fixture();
    let bundle = f.export(&f.lineage("output-1", 3));
    let v1 = as_version_1(&bundle, &f.key, |_| {});
    let r = f.verify(&v1).unwrap();
    assert_eq!(r.records(), 6);

    let removed = edit(&v1, |v| {
        v["records"].as_array_mut().unwrap().remove(2);
    });
    let err = f.verify(&removed).unwrap_err();
    match &err {
        BundleError::MissingRecord {
            index, position, ..
        } => {
            assert_eq!((*index, *position), (f.index("policy-v2"), 2));
        }
        other => panic!("expected a missing record, got {other:?}"),
    }
    assert!(
        err.to_string().starts_with(&format!(
            "record {} is missing: the signed manifest lists it at position 2",
            f.index("policy-v2")
        )),
        "{err}"
    );

    let other = f.export(&Scope::entity(None, "policy:refunds"));
    let policy_v1: Value = serde_json::from_slice::<Value>(&other).unwrap()["records"][0].clone();
    let extra = edit(&v1, |v| {
        v["records"].as_array_mut().unwrap().insert(2, policy_v1);
    });
    match f.verify(&extra).unwrap_err() {
        BundleError::UnlistedRecord {
            index, position, ..
        } => {
            assert_eq!((index, position), (f.index("policy-v1"), 2));
        }
        other => panic!("expected an unlisted record, got {other:?}"),
    }

    // A version 1 manifest under a version 2 header (or the reverse) is refused.
    let mixed = edit(&v1, |v| v["version"] = json!(2));
    assert!(matches!(
        f.verify(&mixed),
        Err(BundleError::ManifestMismatch {
            field: "format",
            ..
        })
    ));
    let unknown = edit(&v1, |v| v["version"] = json!(3));
    assert_eq!(
        f.verify(&unknown).unwrap_err().to_string(),
        "bundle version 3 is not supported: this verifier reads versions 1 and 2"
    );
}

#[test]
fn tampered_checkpoint_manifest_and_scope_are_caught() {
    let f = fixture();
    let bundle = f.export(&f.lineage("output-1", 3));

    let checkpoint = edit(&bundle, |v| {
        let text = v["checkpoint"]
            .as_str()
            .unwrap()
            .replacen(ORIGIN, "test.example/lOg", 1);
        v["checkpoint"] = json!(text);
    });
    assert!(matches!(
        f.verify(&checkpoint),
        Err(BundleError::Checkpoint(_))
    ));
    let size = edit(&bundle, |v| {
        let cp = v["checkpoint"].as_str().unwrap();
        let size = f.ledger.head().size;
        v["checkpoint"] =
            json!(cp.replacen(&format!("\n{size}\n"), &format!("\n{}\n", size + 1), 1));
    });
    let err = f.verify(&size).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("the checkpoint does not verify: signature by known key"),
        "{err}"
    );

    for change in [
        |m: &mut Value| m["tree_size"] = json!(1),
        |m: &mut Value| m["scope"]["depth"] = json!(4),
        |m: &mut Value| m["record_count"] = json!(5),
        |m: &mut Value| flip_hex(&mut m["records_sha256"]),
    ] {
        let manifest = edit(&bundle, |v| change(&mut v["manifest"]));
        assert!(
            matches!(
                f.verify(&manifest),
                Err(BundleError::ManifestSignature { .. })
            ),
            "{:?}",
            f.verify(&manifest)
        );
    }
    let signature = edit(&bundle, |v| flip_b64(&mut v["manifest_signature"], 10));
    assert!(matches!(
        f.verify(&signature),
        Err(BundleError::ManifestSignature { .. })
    ));

    // The unsigned copy of the scope must match the signed one.
    let scope = edit(&bundle, |v| v["scope"]["depth"] = json!(5));
    assert!(matches!(
        f.verify(&scope),
        Err(BundleError::ManifestMismatch { field: "scope", .. })
    ));
    let narrowed = edit(&bundle, |v| v["scope"]["tenant"] = json!("globex"));
    let (_, fault) = record_error(f.verify(&narrowed));
    assert!(matches!(fault, RecordFault::OutOfScope(_)));
}

#[test]
fn keys_must_be_trusted_and_match() {
    let f = fixture();
    let bundle = f.export(&f.lineage("approval-1", 1));
    let (_d, _l, impostor) = open(ORIGIN);

    // The key list swapped for another key of the same name: the checkpoint's signature no
    // longer belongs to any listed key.
    let swapped = edit(&bundle, |v| {
        v["keys"] = json!([impostor.verifier().to_string()])
    });
    let err = verify_bundle(swapped.as_slice(), &[], None).unwrap_err();
    assert!(matches!(err, BundleError::Checkpoint(_)), "{err:?}");
    assert!(matches!(
        f.verify(&swapped),
        Err(BundleError::UntrustedKeys { .. })
    ));

    // A whole bundle forged by another log of the same name verifies only on its own terms.
    let (_d2, forged_log, forger) = open(ORIGIN);
    append(
        &forged_log,
        &[json!({"kind": "input", "actor": {"type": "agent", "id": "x"}, "entity": "claim:1"})],
    );
    let mut forged = Vec::new();
    export(
        &forged_log,
        &forger,
        &Scope::entity(None, "claim:1"),
        &mut forged,
        &mut |_, _| {},
    )
    .unwrap();
    assert!(matches!(
        verify_bundle(forged.as_slice(), &[], None).unwrap().key(),
        KeyTrust::BundleOnly(_)
    ));
    assert!(matches!(
        f.verify(&forged),
        Err(BundleError::UntrustedKeys { .. })
    ));

    let bad = edit(&bundle, |v| v["keys"] = json!(["not a key"]));
    assert!(matches!(
        f.verify(&bad),
        Err(BundleError::Key { position: 0, .. })
    ));
}

#[test]
fn exporting_with_another_key_is_refused() {
    let f = fixture();
    let other = SigningKey::generate(ORIGIN).unwrap();
    let err = export(
        &f.ledger,
        &other,
        &Scope::entity(None, "policy:refunds"),
        Vec::new(),
        &mut |_, _| {},
    )
    .unwrap_err();
    assert!(
        matches!(err, crate::ExportError::ForeignKey { .. }),
        "{err}"
    );
}

#[test]
fn malformed_bundles_say_where() {
    let f = fixture();
    let bundle = f.export(&f.lineage("approval-1", 1));
    let text = String::from_utf8(bundle.clone()).unwrap();

    let truncated = &bundle[..bundle.len() / 2];
    assert!(matches!(
        f.verify(truncated),
        Err(BundleError::Malformed { .. })
    ));

    let reordered = text.replacen(
        "\"format\":\"provledger-bundle\",\"version\":2",
        "\"version\":2,\"format\":\"provledger-bundle\"",
        1,
    );
    let err = f.verify(reordered.as_bytes()).unwrap_err();
    assert!(
        err.to_string()
            .contains("field \"version\" is out of order"),
        "{err}"
    );

    let other_format = text.replacen("provledger-bundle", "something-else", 1);
    assert!(matches!(
        f.verify(other_format.as_bytes()),
        Err(BundleError::Format { .. })
    ));
    let v3 = text.replacen("\"version\":2", "\"version\":3", 1);
    assert!(matches!(
        f.verify(v3.as_bytes()),
        Err(BundleError::Version { found: 3 })
    ));

    let trailing = format!("{text} {{}}");
    assert!(matches!(
        f.verify(trailing.as_bytes()),
        Err(BundleError::Malformed { .. })
    ));

    let unknown_field = edit(&bundle, |v| v["records"][0]["note"] = json!("hi"));
    assert!(matches!(
        f.verify(&unknown_field),
        Err(BundleError::MalformedRecord { position: 0, .. })
    ));
}

#[test]
fn a_bundle_verifies_against_a_later_checkpoint() {
    let f = fixture();
    let bundle = f.export(&f.lineage("output-1", 3));
    let old = f.ledger.head();
    append(
        &f.ledger,
        &[json!({"kind": "input", "actor": {"type": "agent", "id": "x"}, "entity": "claim:9"})],
    );
    append(
        &f.ledger,
        &[json!({"kind": "input", "actor": {"type": "agent", "id": "x"}, "entity": "claim:10"})],
    );
    let new = f.ledger.head();
    let proof = ConsistencyProof {
        from: old.size,
        to: new.size,
        hashes: f.ledger.consistency_proof(old.size, new.size).unwrap(),
    };
    let later = LaterCheckpoint {
        checkpoint: new.checkpoint.clone(),
        proof: proof.clone(),
    };
    let r = verify_bundle(bundle.as_slice(), &f.trusted(), Some(&later)).unwrap();
    assert_eq!(r.later(), Some((new.size, &new.root)));

    // The JSON form the server answers with.
    let json = json!({
        "from": old.size,
        "to": new.size,
        "hashes": proof.hashes.iter().map(Hash::to_base64).collect::<Vec<_>>(),
    });
    assert_eq!(
        ConsistencyProof::from_json(&json.to_string()).unwrap(),
        proof
    );

    let mut wrong = later.clone();
    wrong.proof.hashes[0].0[0] ^= 1;
    assert!(matches!(
        verify_bundle(bundle.as_slice(), &f.trusted(), Some(&wrong)),
        Err(BundleError::Consistency(_))
    ));
    let mut sizes = later.clone();
    sizes.proof.from -= 1;
    let err = verify_bundle(bundle.as_slice(), &f.trusted(), Some(&sizes)).unwrap_err();
    assert!(
        err.to_string()
            .contains("fetch /v1/proofs/consistency?from="),
        "{err}"
    );

    let (_d, _l, stranger) = open(ORIGIN);
    let mut foreign = later.clone();
    foreign.checkpoint = stranger.sign_checkpoint(&provledger_signer::Checkpoint {
        origin: ORIGIN.into(),
        size: new.size,
        root: new.root,
        extensions: vec![],
    });
    assert!(matches!(
        verify_bundle(bundle.as_slice(), &f.trusted(), Some(&foreign)),
        Err(BundleError::LaterCheckpoint(_))
    ));
}

#[test]
fn export_scope_errors() {
    let f = fixture();
    let run = |scope: Scope| {
        export(&f.ledger, &f.key, &scope, Vec::new(), &mut |_, _| {})
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        run(Scope::entity(None, "nope")),
        "entity \"nope\" has no versions in tenant \"default\""
    );
    let unknown = Hash([7; 32]);
    assert_eq!(
        run(Scope::Records {
            tenant: None,
            ids: vec![unknown],
            depth: 0
        }),
        format!("record {unknown} is not in the log")
    );
    assert!(run(Scope::Records {
        tenant: Some("globex".into()),
        ids: vec![f.id("input-1")],
        depth: 0
    })
    .contains("belongs to tenant \"default\""));
    assert!(run(Scope::Range(RangeScope {
        from_index: Some(5),
        to_index: Some(2),
        ..RangeScope::default()
    }))
    .contains("from index 5 is after to index 2"));
}

#[test]
fn an_empty_range_is_a_valid_bundle() {
    let f = fixture();
    let bundle = f.export(&Scope::Range(RangeScope {
        kind: Some("no-such-kind".into()),
        ..RangeScope::default()
    }));
    assert_eq!(f.verify(&bundle).unwrap().records(), 0);
}

#[test]
fn large_bundles_are_checked_in_parallel_and_report_the_first_failure() {
    let (_dir, ledger, key) = open(ORIGIN);
    for start in [0u64, 700] {
        let records: Vec<Value> = (start..start + 700)
            .map(|i| json!({"kind": "input", "entity": format!("doc:{}", i % 7), "actor": {"type": "agent", "id": "a"}, "payload": {"i": i}}))
            .collect();
        append(&ledger, &records);
    }
    let mut bundle = Vec::new();
    export(
        &ledger,
        &key,
        &Scope::Range(RangeScope::default()),
        &mut bundle,
        &mut |_, _| {},
    )
    .unwrap();
    let trusted = [key.verifier()];
    assert_eq!(
        verify_bundle(bundle.as_slice(), &trusted, None)
            .unwrap()
            .records(),
        1400
    );
    // Faults in several chunks of one batch: the earliest in the file wins.
    let tampered = edit(&bundle, |v| {
        v["records"][1300]["payload"]["i"] = json!(-1);
        v["records"][901]["payload"]["i"] = json!(-1);
        v["records"][1100]["payload"]["i"] = json!(-1);
    });
    assert_eq!(
        record_error(verify_bundle(tampered.as_slice(), &trusted, None)),
        (901, RecordFault::PayloadMismatch)
    );
    let tampered = edit(&tampered, |v| v["records"][650]["payload"]["i"] = json!(-1));
    assert_eq!(
        record_error(verify_bundle(tampered.as_slice(), &trusted, None)),
        (650, RecordFault::PayloadMismatch)
    );
    // A fault the sequential pass finds (order) before a later record's own fault.
    let tampered = edit(&bundle, |v| {
        let copy = v["records"][600].clone();
        v["records"][601] = copy;
        v["records"][1000]["payload"]["i"] = json!(-1);
    });
    let (index, fault) = record_error(verify_bundle(tampered.as_slice(), &trusted, None));
    assert_eq!(index, 600);
    assert!(matches!(fault, RecordFault::NotAscending { previous: 600 }));
    // Truncated inside a late record: the earlier records' faults still come first.
    let tampered = edit(&bundle, |v| v["records"][3]["payload"]["i"] = json!(-1));
    let cut = &tampered[..tampered.len() - 200_000];
    assert_eq!(
        record_error(verify_bundle(cut, &trusted, None)),
        (3, RecordFault::PayloadMismatch)
    );
    assert!(matches!(
        verify_bundle(&bundle[..bundle.len() - 200_000], &trusted, None),
        Err(BundleError::Malformed { .. })
    ));
}

/// A lineage export holds exactly the records a plain breadth-first walk reaches, on random
/// graphs where a record is often reachable along paths of different lengths (the exporter
/// walks in descending index order instead, keeping only its frontier in memory).
#[test]
fn lineage_exports_match_a_breadth_first_reference_on_random_graphs() {
    let (_dir, ledger, key) = open(ORIGIN);
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move |below: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % below
    };
    // cites[i]: the earlier records record i cites.
    let mut cites: Vec<Vec<usize>> = Vec::new();
    let mut ids: Vec<Hash> = Vec::new();
    for _ in 0..12 {
        let mut batch = Vec::new();
        let mut batch_cites = Vec::new();
        for _ in 0..25 {
            let n = ids.len() as u64;
            let picks: std::collections::BTreeSet<usize> = (0..next(5).min(n))
                .map(|_| next(n.max(1)) as usize)
                .collect();
            let refs: Vec<Value> = picks
                .iter()
                .map(|&i| json!({"role": "input", "ref": ids[i].to_hex()}))
                .collect();
            batch
                .push(json!({"kind": "step", "actor": {"type": "agent", "id": "a"}, "refs": refs}));
            batch_cites.push(picks.into_iter().collect::<Vec<_>>());
        }
        // A record cites only earlier batches here, so one batch at a time is enough.
        for (id, _, _) in append(&ledger, &batch) {
            ids.push(id);
        }
        cites.extend(batch_cites);
    }
    for _ in 0..40 {
        let starts: Vec<usize> = (0..1 + next(3))
            .map(|_| next(ids.len() as u64) as usize)
            .collect();
        let depth = next(7) as u32;
        // Reference: breadth-first, each record once at its fewest hops.
        let mut reached: std::collections::BTreeSet<usize> = starts.iter().copied().collect();
        let mut frontier = reached.clone();
        for _ in 0..depth {
            let step: std::collections::BTreeSet<usize> = frontier
                .iter()
                .flat_map(|&i| cites[i].iter().copied())
                .filter(|i| !reached.contains(i))
                .collect();
            reached.extend(step.iter().copied());
            frontier = step;
        }
        let scope = Scope::Records {
            tenant: None,
            ids: starts.iter().map(|&i| ids[i]).collect(),
            depth,
        };
        let mut bundle = Vec::new();
        export(&ledger, &key, &scope, &mut bundle, &mut |_, _| {}).unwrap();
        let v: Value = serde_json::from_slice(&bundle).unwrap();
        let got: Vec<u64> = v["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["index"].as_u64().unwrap())
            .collect();
        let want: Vec<u64> = reached.iter().map(|&i| i as u64).collect();
        assert_eq!(got, want, "starts {starts:?}, depth {depth}");
        let report = verify_bundle(bundle.as_slice(), &[key.verifier()], None).unwrap();
        assert_eq!(report.records(), want.len() as u64);
    }
}
