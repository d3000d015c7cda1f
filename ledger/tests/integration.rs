//! Integration tests of the ledger crate: the real fjall store in a temp dir, the real writer
//! thread, real signatures. Proofs are checked with provledger-signer's verifiers against roots
//! recomputed from the leaves by `root_of` (rs_merkle), so storage and proof code are checked
//! against an independent in-memory computation.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests: a panic is a failure report

use provledger_ledger::{
    verify_data_dir, Leaf, Ledger, LedgerConfig, LedgerError, PreparedRecord, Receipt, RecordInput,
};
use provledger_signer::{
    leaf_hash, root_of, verify_checkpoint, verify_consistency, verify_inclusion, Hash, SigningKey,
    VerifierKey,
};
use serde_json::json;

const ORIGIN: &str = "test.example/log";

struct Fixture {
    dir: tempfile::TempDir,
    key_text: String,
}

impl Fixture {
    fn new() -> Fixture {
        let key = SigningKey::generate(ORIGIN).unwrap();
        Fixture {
            dir: tempfile::tempdir().unwrap(),
            key_text: key.to_skey().to_string(),
        }
    }

    fn open(&self) -> Ledger {
        let key = SigningKey::from_skey(&self.key_text).unwrap();
        Ledger::open(
            &LedgerConfig::new(self.dir.path()),
            key,
            &prometheus::Registry::new(),
        )
        .unwrap()
    }

    fn vkey(&self) -> VerifierKey {
        SigningKey::from_skey(&self.key_text).unwrap().verifier()
    }
}

fn rec(v: serde_json::Value) -> PreparedRecord {
    let input: RecordInput = serde_json::from_value(v).unwrap();
    PreparedRecord::prepare(input, "record").unwrap()
}

fn input(i: usize) -> PreparedRecord {
    rec(json!({
        "kind": "input",
        "entity": format!("doc:{}", i % 7),
        "actor": {"type": "agent", "id": "a1"},
        "attributes": {"n": i, "z": {"b": 1, "a": [1, 2]}},
        "payload": {"text": format!("message {i}")},
    }))
}

fn check_receipt(r: &Receipt, vkey: &VerifierKey) {
    let cp = verify_checkpoint(&r.checkpoint, std::slice::from_ref(vkey)).unwrap();
    assert_eq!(cp.checkpoint().size, r.tree_size);
    assert_eq!(cp.checkpoint().origin, ORIGIN);
    assert_eq!(r.id, leaf_hash(&r.leaf));
    verify_inclusion(
        &r.id,
        r.index,
        r.tree_size,
        &r.inclusion_proof,
        &cp.checkpoint().root,
    )
    .unwrap();
}

fn all_leaf_hashes(ledger: &Ledger) -> Vec<Hash> {
    (0..ledger.head().size)
        .map(|i| leaf_hash(&ledger.leaf(i).unwrap()))
        .collect()
}

#[test]
fn receipts_verify_and_the_log_survives_reopening() {
    let fx = Fixture::new();
    let vkey = fx.vkey();
    {
        let ledger = fx.open();
        assert_eq!(ledger.head().size, 0);
        verify_checkpoint(&ledger.head().checkpoint, std::slice::from_ref(&vkey)).unwrap();
        for batch in 0..5 {
            let records = (0..97).map(|i| input(batch * 97 + i)).collect();
            let receipts = ledger.append_blocking(records).unwrap();
            assert_eq!(receipts.len(), 97);
            for (i, r) in receipts.iter().enumerate() {
                assert_eq!(r.index, (batch * 97 + i) as u64);
                check_receipt(r, &vkey);
            }
        }
    }
    let ledger = fx.open();
    assert_eq!(ledger.head().size, 485);
    let more = ledger
        .append_blocking((0..300).map(input).collect())
        .unwrap();
    assert_eq!(more[0].index, 485);
    check_receipt(more.last().unwrap(), &vkey);

    let hashes = all_leaf_hashes(&ledger);
    assert_eq!(ledger.head().root, root_of(&hashes));
    // Every tree size's root and a spread of proofs against old sizes.
    for size in [1u64, 2, 3, 255, 256, 257, 484, 485, 486, 511, 512, 600, 785] {
        let root = root_of(&hashes[..size as usize]);
        assert_eq!(ledger.root_at(size).unwrap(), root, "root at {size}");
        for index in [0, size / 3, size / 2, size - 1] {
            let p = ledger.inclusion_proof(index, Some(size)).unwrap();
            assert_eq!(p.leaf_hash, hashes[index as usize]);
            verify_inclusion(&p.leaf_hash, index, size, &p.hashes, &root).unwrap();
        }
        for from in [1u64, size / 2, size] {
            if from == 0 {
                continue;
            }
            let proof = ledger.consistency_proof(from, size).unwrap();
            let old = root_of(&hashes[..from as usize]);
            verify_consistency(from, size, &old, &root, &proof).unwrap();
        }
    }
    let err = verify_data_dir(fx.dir.path(), &vkey, |_, _| {}).unwrap_err();
    assert!(
        err.to_string().contains("in use"),
        "verify must not open a live data dir: {err}"
    );
}

#[test]
fn verify_data_dir_checks_everything() {
    let fx = Fixture::new();
    let vkey = fx.vkey();
    {
        let ledger = fx.open();
        ledger
            .append_blocking((0..700).map(input).collect())
            .unwrap();
        ledger.append_blocking((0..3).map(input).collect()).unwrap();
    }
    let mut calls = 0;
    let report = verify_data_dir(fx.dir.path(), &vkey, |_, _| calls += 1).unwrap();
    assert_eq!(report.tree_size, 703);
    assert_eq!(report.payloads, 703);
    assert!(report.tiles >= 3, "{report:?}");
    assert!(calls >= 1);

    let other = SigningKey::generate(ORIGIN).unwrap().verifier();
    let err = verify_data_dir(fx.dir.path(), &other, |_, _| {}).unwrap_err();
    assert!(err.to_string().contains("checkpoint"), "{err}");
}

#[test]
fn tiles_and_entry_bundles_follow_tlog_tiles() {
    let fx = Fixture::new();
    let ledger = fx.open();
    let receipts = ledger
        .append_blocking((0..300).map(input).collect())
        .unwrap();
    let hashes: Vec<Hash> = receipts.iter().map(|r| r.id).collect();

    let full = ledger.tile(0, 0, None).unwrap().unwrap();
    assert_eq!(full.len(), 256 * 32);
    let expected: Vec<u8> = hashes[..256].iter().flat_map(|h| h.0).collect();
    assert_eq!(full, expected);

    let partial = ledger.tile(0, 1, Some(44)).unwrap().unwrap();
    let expected: Vec<u8> = hashes[256..300].iter().flat_map(|h| h.0).collect();
    assert_eq!(partial, expected);
    assert!(
        ledger.tile(0, 1, Some(45)).unwrap().is_none(),
        "width past the tree"
    );
    assert!(
        ledger.tile(0, 1, None).unwrap().is_none(),
        "full tile not complete yet"
    );
    assert!(
        ledger.tile(0, 0, Some(10)).unwrap().is_some(),
        "prefix of a full tile"
    );

    let level1 = ledger.tile(1, 0, Some(1)).unwrap().unwrap();
    assert_eq!(level1, root_of(&hashes[..256]).0.to_vec());

    let bundle = ledger.entry_bundle(1, Some(44)).unwrap().unwrap();
    let mut rest = &bundle[..];
    for r in &receipts[256..300] {
        let len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
        assert_eq!(&rest[2..2 + len], &r.leaf[..]);
        rest = &rest[2 + len..];
    }
    assert!(rest.is_empty());
}

#[test]
fn refs_resolve_to_exact_versions_and_unknown_refs_leave_no_trace() {
    let fx = Fixture::new();
    let ledger = fx.open();
    let actor = json!({"type": "agent", "id": "a1"});
    let v1 = ledger
        .append_blocking(vec![rec(json!({"kind": "policy", "entity": "policy:refunds", "actor": actor, "attributes": {"version": "v1"}}))])
        .unwrap();
    let v2 = ledger
        .append_blocking(vec![rec(json!({"kind": "policy", "entity": "policy:refunds", "actor": actor, "attributes": {"version": "v2"}}))])
        .unwrap();
    // In one request: an input, then a decision citing it by entity, the policy by entity
    // (latest = v2) and the first policy version by id.
    let batch = ledger
        .append_blocking(vec![
            rec(json!({"kind": "input", "entity": "msg:1", "actor": actor})),
            rec(json!({"kind": "decision", "actor": actor, "refs": [
                {"role": "input", "ref": "msg:1"},
                {"role": "policy", "ref": "policy:refunds"},
                {"role": "parent", "ref": v1[0].id.to_hex()},
            ]})),
        ])
        .unwrap();
    let decision = Leaf::decode(&batch[1].leaf).unwrap();
    assert_eq!(decision.refs[0].hash, batch[0].id.0);
    assert_eq!(decision.refs[1].hash, v2[0].id.0);
    assert_eq!(decision.refs[2].hash, v1[0].id.0);

    // The reverse index answers "who cites this", with paging and as-of bounds.
    let d = batch[1].index;
    assert_eq!(
        ledger.cited_by(&v1[0].id, None, None, 10).unwrap(),
        vec![(d, "parent".to_owned())]
    );
    assert_eq!(
        ledger.cited_by(&v2[0].id, None, None, 10).unwrap(),
        vec![(d, "policy".to_owned())]
    );
    assert!(ledger
        .cited_by(&v2[0].id, Some(d), None, 10)
        .unwrap()
        .is_empty());
    assert!(
        ledger
            .cited_by(&v2[0].id, None, Some(d), 10)
            .unwrap()
            .is_empty(),
        "as of before the decision"
    );
    let versions = ledger
        .entity_versions("default", "policy:refunds", None, 10)
        .unwrap();
    assert_eq!(
        versions,
        vec![(v1[0].index, v1[0].id), (v2[0].index, v2[0].id)]
    );
    assert_eq!(
        ledger
            .entity_versions("default", "policy:refunds", Some(v1[0].index), 10)
            .unwrap()
            .len(),
        1
    );
    assert!(ledger
        .entity_versions("other", "policy:refunds", None, 10)
        .unwrap()
        .is_empty());

    let size = ledger.head().size;
    let err = ledger
        .append_blocking(vec![
            rec(json!({"kind": "input", "actor": actor})),
            rec(json!({"kind": "decision", "actor": actor, "refs": [{"role": "input", "ref": "msg:404"}]})),
        ])
        .unwrap_err();
    assert!(
        matches!(err, LedgerError::UnknownRef { ref reference, .. } if reference == "msg:404"),
        "{err}"
    );
    let err = ledger
        .append_blocking(vec![rec(json!({"kind": "decision", "actor": actor, "refs": [{"role": "input", "ref": "ab".repeat(32)}]}))])
        .unwrap_err();
    assert!(matches!(err, LedgerError::UnknownRef { .. }), "{err}");
    assert_eq!(
        ledger.head().size,
        size,
        "a rejected request appends nothing"
    );

    // Another tenant cannot cite this tenant's records, by id or by entity.
    let err = ledger
        .append_blocking(vec![rec(json!({"kind": "decision", "tenant": "other", "actor": actor, "refs": [{"role": "policy", "ref": v1[0].id.to_hex()}]}))])
        .unwrap_err();
    assert!(matches!(err, LedgerError::UnknownRef { .. }), "{err}");
    let err = ledger
        .append_blocking(vec![rec(json!({"kind": "decision", "tenant": "other", "actor": actor, "refs": [{"role": "policy", "ref": "policy:refunds"}]}))])
        .unwrap_err();
    assert!(matches!(err, LedgerError::UnknownRef { .. }), "{err}");
    assert!(matches!(
        ledger.record(&v1[0].id, Some("other")),
        Err(LedgerError::NotFound)
    ));
    assert_eq!(
        ledger.record(&v1[0].id, Some("default")).unwrap().index,
        v1[0].index
    );
}

/// Refs to committed records resolve through what the writer keeps of recent batches (by id:
/// the id maps of large batches and a bounded map; by name: a bounded map of latest versions)
/// exactly as through the store: checked against a model of the log across enough records to
/// push the writer's maps through their generations, for records that were written in large
/// and small batches, cited before, updated after being cited, of another tenant, and after a
/// restart (when the writer has nothing kept).
#[test]
fn refs_to_committed_records_resolve_as_the_store_says() {
    const ENTITIES: usize = 36_000; // more than the writer keeps (2 × 16,384)
    let fx = Fixture::new();
    let ledger = fx.open();
    let actor = json!({"type": "agent", "id": "a1"});
    let version = |k: usize, v: u32| {
        rec(
            json!({"kind": "input", "entity": format!("e:{k}"), "actor": actor, "attributes": {"v": v}}),
        )
    };
    // Latest version of each entity, and every record's id.
    let mut latest: Vec<Hash> = Vec::with_capacity(ENTITIES);
    let mut k = 0;
    while k < ENTITIES {
        // Mostly large batches (their id maps are kept whole), some small ones (copied).
        let n = if (k / 2_000) % 4 == 3 { 10 } else { 2_000 }.min(ENTITIES - k);
        let receipts = ledger
            .append_blocking((k..k + n).map(|k| version(k, 1)).collect())
            .unwrap();
        latest.extend(receipts.iter().map(|r| r.id));
        k += n;
    }
    let other = ledger
        .append_blocking(vec![rec(
            json!({"kind": "input", "tenant": "other", "entity": "e:1", "actor": actor}),
        )])
        .unwrap()[0]
        .id;
    let first_ids: Vec<Hash> = latest.clone();
    let sample: Vec<usize> = (0..ENTITIES).step_by(997).chain([ENTITIES - 1]).collect();

    // Cites every sampled entity by name and by its first version's id; checks the leaf.
    let cite_and_check = |ledger: &Ledger, latest: &[Hash]| {
        let refs: Vec<_> = sample
            .iter()
            .flat_map(|&k| {
                [
                    json!({"role": "input", "ref": format!("e:{k}")}),
                    json!({"role": "first", "ref": first_ids[k].to_hex()}),
                ]
            })
            .collect();
        let receipt = ledger
            .append_blocking(vec![rec(
                json!({"kind": "decision", "actor": actor, "refs": refs}),
            )])
            .unwrap();
        let leaf = Leaf::decode(&receipt[0].leaf).unwrap();
        for (i, &k) in sample.iter().enumerate() {
            assert_eq!(leaf.refs[2 * i].hash, latest[k].0, "e:{k} by name");
            assert_eq!(leaf.refs[2 * i + 1].hash, first_ids[k].0, "e:{k} by id");
        }
        // Another tenant's record is unknown here, however often it is asked for.
        for _ in 0..2 {
            let err = ledger
                .append_blocking(vec![rec(json!({"kind": "decision", "actor": actor,
                    "refs": [{"role": "input", "ref": other.to_hex()}]}))])
                .unwrap_err();
            assert!(matches!(err, LedgerError::UnknownRef { .. }), "{err}");
        }
        let err = ledger
            .append_blocking(vec![rec(
                json!({"kind": "decision", "tenant": "other", "actor": actor,
                "refs": [{"role": "input", "ref": format!("e:{}", sample[1])}]}),
            )])
            .unwrap_err();
        assert!(matches!(err, LedgerError::UnknownRef { .. }), "{err}");
    };
    cite_and_check(&ledger, &latest);
    // Twice: the second time from what the first one read.
    cite_and_check(&ledger, &latest);
    // New versions of entities that were just cited, in a small and a large batch.
    let (small, large) = sample.split_at(3);
    for part in [small, large] {
        let receipts = ledger
            .append_blocking(part.iter().map(|&k| version(k, 2)).collect())
            .unwrap();
        for (&k, r) in part.iter().zip(&receipts) {
            latest[k] = r.id;
        }
    }
    cite_and_check(&ledger, &latest);
    drop(ledger);
    // After a restart the writer knows nothing yet: the store answers the same.
    let ledger = fx.open();
    cite_and_check(&ledger, &latest);
    cite_and_check(&ledger, &latest);
}

#[test]
fn idempotent_retries_return_the_first_receipt() {
    let fx = Fixture::new();
    let vkey = fx.vkey();
    let r = || {
        rec(
            json!({"kind": "output", "actor": {"type": "agent", "id": "a"}, "payload": {"x": 1}, "idempotency_key": "req-1"}),
        )
    };
    let ledger = fx.open();
    let first = ledger.append_blocking(vec![r()]).unwrap();
    ledger.append_blocking(vec![input(1)]).unwrap();
    let again = ledger.append_blocking(vec![r()]).unwrap();
    assert_eq!(
        again[0], first[0],
        "a retry gets the first receipt, checkpoint and proof included"
    );
    assert_eq!(ledger.head().size, 2);
    check_receipt(&again[0], &vkey);

    // Twice in one request, and across a restart.
    drop(ledger);
    let ledger = fx.open();
    let twice = ledger.append_blocking(vec![r(), r()]).unwrap();
    assert_eq!(twice[0], first[0]);
    assert_eq!(twice[1], first[0]);
    assert_eq!(ledger.head().size, 2);
    // A key reused for a different record in one request names the field.
    let fresh = |x: i64| {
        rec(
            json!({"kind": "output", "actor": {"type": "agent", "id": "a"}, "payload": {"x": x}, "idempotency_key": "req-9"}),
        )
    };
    let err = ledger
        .append_blocking(vec![fresh(1), fresh(2)])
        .unwrap_err();
    assert!(
        matches!(&err, LedgerError::InvalidRecord { field, .. } if field == "record.idempotency_key"),
        "{err}"
    );
    assert_eq!(ledger.head().size, 2);

    let conflict = rec(
        json!({"kind": "output", "actor": {"type": "agent", "id": "a"}, "payload": {"x": 2}, "idempotency_key": "req-1"}),
    );
    let err = ledger.append_blocking(vec![conflict]).unwrap_err();
    assert!(
        matches!(err, LedgerError::IdempotencyConflict { index: 0, .. }),
        "{err}"
    );
    // The same key in another tenant is a different key.
    let other = rec(
        json!({"kind": "output", "tenant": "t2", "actor": {"type": "agent", "id": "a"}, "payload": {"x": 1}, "idempotency_key": "req-1"}),
    );
    assert_eq!(ledger.append_blocking(vec![other]).unwrap()[0].index, 2);
}

#[test]
fn payloads_are_committed_with_salt_and_rfc8785() {
    let fx = Fixture::new();
    let ledger = fx.open();
    let r = ledger
        .append_blocking(vec![rec(json!({"kind": "input", "actor": {"type": "human", "id": "h"}, "payload": {"b": [1.5, "é"], "a": null}}))])
        .unwrap();
    let stored = ledger.record(&r[0].id, None).unwrap();
    let salt = stored.salt.unwrap();
    let canonical = br#"{"a":null,"b":[1.5,"\u00e9"]}"#;
    let jcs_utf8 = "{\"a\":null,\"b\":[1.5,\"é\"]}".as_bytes();
    let c = stored.leaf.commitment.unwrap();
    assert_eq!(c, provledger_ledger::commitment(&salt, jcs_utf8));
    assert_ne!(
        c,
        provledger_ledger::commitment(&salt, canonical),
        "RFC 8785 keeps non-ASCII as UTF-8"
    );
    assert_eq!(stored.payload.unwrap(), json!({"a": null, "b": [1.5, "é"]}));
}

#[test]
fn empty_logs_verify_and_a_foreign_key_cannot_take_over_a_log() {
    let fx = Fixture::new();
    drop(fx.open());
    let report = verify_data_dir(fx.dir.path(), &fx.vkey(), |_, _| {}).unwrap();
    assert_eq!(report.tree_size, 0);
    {
        let ledger = fx.open();
        ledger.append_blocking(vec![input(0)]).unwrap();
    }
    let impostor = SigningKey::generate(ORIGIN).unwrap();
    let err = Ledger::open(
        &LedgerConfig::new(fx.dir.path()),
        impostor,
        &prometheus::Registry::new(),
    )
    .err()
    .unwrap();
    assert!(
        err.to_string().contains("does not verify with signing key"),
        "{err}"
    );
    let report = verify_data_dir(fx.dir.path(), &fx.vkey(), |_, _| {}).unwrap();
    assert_eq!((report.tree_size, report.checkpoints), (1, 1));
}

#[test]
fn a_store_shorter_than_an_acknowledged_checkpoint_is_refused() {
    let fx = Fixture::new();
    {
        let ledger = fx.open();
        ledger.append_blocking((0..5).map(input).collect()).unwrap();
    }
    // Pretend the store lost entries: an acknowledged checkpoint beyond what it holds.
    let key = SigningKey::from_skey(&fx.key_text).unwrap();
    let cp = provledger_signer::Checkpoint {
        origin: ORIGIN.into(),
        size: 9,
        root: leaf_hash(b"x"),
        extensions: vec![],
    };
    std::fs::write(fx.dir.path().join("head.1"), key.sign_checkpoint(&cp)).unwrap();
    let err = Ledger::open(
        &LedgerConfig::new(fx.dir.path()),
        key,
        &prometheus::Registry::new(),
    )
    .err()
    .unwrap();
    assert!(
        err.to_string()
            .contains("acknowledged but the store holds only 5"),
        "{err}"
    );
    let err = verify_data_dir(fx.dir.path(), &fx.vkey(), |_, _| {}).unwrap_err();
    assert!(err.to_string().contains("entries were lost"), "{err}");
    // A slot that does not verify (torn write, other key) is ignored.
    std::fs::write(fx.dir.path().join("head.1"), "garbage").unwrap();
    assert_eq!(fx.open().head().size, 5);
}

#[test]
fn a_failed_durable_write_poisons_the_ledger_until_restart() {
    let fx = Fixture::new();
    {
        let ledger = fx.open();
        ledger.append_blocking(vec![input(0)]).unwrap();
    }
    // The next batch's high-water mark goes to head.1 (head.0 took the first after this
    // restart's reset); make both unwritable so the write after the commit fails.
    for slot in ["head.0", "head.1"] {
        let p = fx.dir.path().join(slot);
        let _ = std::fs::remove_file(&p);
        std::fs::create_dir(&p).unwrap();
    }
    let ledger = fx.open();
    let err = ledger.append_blocking(vec![input(1)]).unwrap_err();
    assert!(matches!(err, LedgerError::Poisoned), "{err}");
    assert!(ledger.is_poisoned());
    let err = ledger.append_blocking(vec![input(2)]).unwrap_err();
    assert!(
        matches!(err, LedgerError::Poisoned),
        "appends stay refused: {err}"
    );
    // Reads still work, and the head did not move past what was acknowledged.
    assert_eq!(ledger.head().size, 1);
    drop(ledger);
    for slot in ["head.0", "head.1"] {
        std::fs::remove_dir(fx.dir.path().join(slot)).unwrap();
    }
    // After a restart the ledger works again and the log verifies.
    let ledger = fx.open();
    assert!(!ledger.is_poisoned());
    ledger.append_blocking(vec![input(3)]).unwrap();
    drop(ledger);
    verify_data_dir(fx.dir.path(), &fx.vkey(), |_, _| {}).unwrap();
}

#[test]
fn payload_integers_beyond_2_pow_53_are_refused() {
    let ok: RecordInput = serde_json::from_value(json!({"kind": "x", "actor": {"type": "a", "id": "b"}, "payload": {"n": [9007199254740992u64, -9007199254740992i64]}})).unwrap();
    PreparedRecord::prepare(ok, "record").unwrap();
    let big: RecordInput = serde_json::from_value(json!({"kind": "x", "actor": {"type": "a", "id": "b"}, "payload": {"n": [1, 9007199254740993u64]}})).unwrap();
    let err = PreparedRecord::prepare(big, "record").unwrap_err();
    assert!(
        matches!(&err, LedgerError::InvalidRecord { field, .. } if field == "record.payload.n[1]"),
        "{err}"
    );
    let deep: RecordInput = serde_json::from_value(json!({"kind": "x", "actor": {"type": "a", "id": "b"}, "payload": {"a": {"ok": 1, "z": [{"b": -9007199254740993i64}]}}})).unwrap();
    let err = PreparedRecord::prepare(deep, "record").unwrap_err();
    assert!(
        matches!(&err, LedgerError::InvalidRecord { field, .. } if field == "record.payload.a.z[0].b"),
        "{err}"
    );
    assert!(err.to_string().contains("-9007199254740993"), "{err}");
}

#[test]
fn invalid_records_are_refused_with_the_field_named() {
    let bad = [
        (
            json!({"kind": "", "actor": {"type": "a", "id": "b"}}),
            "record.kind",
        ),
        (
            json!({"kind": "in put", "actor": {"type": "a", "id": "b"}}),
            "record.kind",
        ),
        (
            json!({"kind": "x", "actor": {"type": "a", "id": ""}}),
            "record.actor.id",
        ),
        (
            json!({"kind": "x", "entity": "ab".repeat(32), "actor": {"type": "a", "id": "b"}}),
            "record.entity",
        ),
        (
            json!({"kind": "x", "actor": {"type": "a", "id": "b"}, "refs": [{"role": "", "ref": "e"}]}),
            "record.refs[0].role",
        ),
        (
            json!({"kind": "x", "actor": {"type": "a", "id": "b"}, "attributes": {"big": "x".repeat(20000)}}),
            "record.attributes",
        ),
    ];
    for (v, field) in bad {
        let input: RecordInput = serde_json::from_value(v).unwrap();
        let err = PreparedRecord::prepare(input, "record").unwrap_err();
        assert!(
            matches!(&err, LedgerError::InvalidRecord { field: f, .. } if f == field),
            "{err}"
        );
    }
    let unknown = serde_json::from_value::<RecordInput>(
        json!({"kind": "x", "actor": {"type": "a", "id": "b"}, "colour": 1}),
    );
    assert!(unknown
        .unwrap_err()
        .to_string()
        .contains("unknown field `colour`"));
}

#[test]
fn leaves_are_deterministic_and_too_large_leaves_are_refused() {
    let fx = Fixture::new();
    let ledger = fx.open();
    let r = ledger.append_blocking(vec![input(3)]).unwrap();
    let leaf = Leaf::decode(&r[0].leaf).unwrap();
    assert_eq!(
        leaf.encode().unwrap(),
        r[0].leaf,
        "decode → encode is the identity"
    );
    assert_eq!(leaf.index, 0);
    // Attribute keys are sorted at every depth whatever order they came in.
    let a: RecordInput = serde_json::from_str(
        r#"{"kind":"k","actor":{"type":"a","id":"b"},"attributes":{"z":{"y":1,"x":2},"a":0}}"#,
    )
    .unwrap();
    let b: RecordInput = serde_json::from_str(
        r#"{"kind":"k","actor":{"type":"a","id":"b"},"attributes":{"a":0,"z":{"x":2,"y":1}}}"#,
    )
    .unwrap();
    let mut la = leaf.clone();
    la.attributes = a.attributes;
    let mut lb = leaf;
    lb.attributes = b.attributes;
    assert_eq!(la.encode().unwrap(), lb.encode().unwrap());

    let many_refs: Vec<_> = (0..1000)
        .map(|i| json!({"role": "input", "ref": format!("doc:{}", i % 7)}))
        .collect();
    ledger.append_blocking((0..7).map(input).collect()).unwrap();
    let big = rec(
        json!({"kind": "decision", "actor": {"type": "a", "id": "b"}, "refs": many_refs, "attributes": {"pad": "x".repeat(15000)}}),
    );
    let size = ledger.head().size;
    let err = ledger.append_blocking(vec![big]).unwrap_err();
    assert!(matches!(err, LedgerError::LeafTooLarge { .. }), "{err}");
    assert_eq!(ledger.head().size, size);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_are_group_committed() {
    let fx = Fixture::new();
    let vkey = fx.vkey();
    let ledger = fx.open();
    let mut tasks = Vec::new();
    for t in 0..64 {
        let l = ledger.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for i in 0..10 {
                out.extend(l.append(vec![input(t * 10 + i)]).await.unwrap());
            }
            out
        }));
    }
    let mut indices = Vec::new();
    for t in tasks {
        for r in t.await.unwrap() {
            check_receipt(&r, &vkey);
            indices.push(r.index);
        }
    }
    indices.sort_unstable();
    assert_eq!(indices, (0..640).collect::<Vec<_>>());
    assert_eq!(ledger.head().size, 640);
}

#[test]
fn proofs_out_of_range_are_refused() {
    let fx = Fixture::new();
    let ledger = fx.open();
    ledger
        .append_blocking((0..10).map(input).collect())
        .unwrap();
    assert!(matches!(
        ledger.inclusion_proof(10, None),
        Err(LedgerError::OutOfRange { value: 10, .. })
    ));
    assert!(matches!(
        ledger.inclusion_proof(3, Some(11)),
        Err(LedgerError::OutOfRange {
            what: "tree_size",
            ..
        })
    ));
    assert!(matches!(
        ledger.inclusion_proof(5, Some(5)),
        Err(LedgerError::OutOfRange { what: "index", .. })
    ));
    assert!(matches!(
        ledger.consistency_proof(3, 11),
        Err(LedgerError::OutOfRange { .. })
    ));
    assert!(matches!(
        ledger.consistency_proof(7, 3),
        Err(LedgerError::InvalidRange(_))
    ));
    assert!(ledger.consistency_proof(0, 10).unwrap().is_empty());
    assert!(ledger.consistency_proof(10, 10).unwrap().is_empty());
}

/// Issue 5, ingress scrubbing: raw PII in a payload is masked before it is committed, and
/// reaches no file under the data dir (store and journal included).
#[test]
fn payload_pii_is_masked_before_commit_and_reaches_no_file() {
    let fx = Fixture::new();
    let email = "jane.doe@example.com";
    let card = "4111 1111 1111 1111";
    let key = "sk_live_4eC39HqLyjWDarjtT1zdp7dc";
    let id = {
        let ledger = fx.open();
        let r = ledger
            .append_blocking(vec![rec(json!({
                "kind": "input",
                "entity": "ticket:9",
                "actor": {"type": "agent", "id": "a1"},
                "payload": {"text": format!("mail {email}, card {card}"), "cfg": {"key": key}},
            }))])
            .unwrap();
        let stored = ledger.record(&r[0].id, None).unwrap();
        assert_eq!(
            stored.payload.unwrap(),
            json!({"text": "mail [REDACTED:email], card [REDACTED:card]", "cfg": {"key": "[REDACTED:secret]"}})
        );
        r[0].id
    };
    let ledger = fx.open();
    assert!(ledger.record(&id, None).is_ok());
    drop(ledger);
    let mut stack = vec![fx.dir.path().to_path_buf()];
    let mut files = 0;
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            files += 1;
            let bytes = std::fs::read(&path).unwrap();
            for raw in [email, card, "4111111111111111", key] {
                assert!(
                    !bytes.windows(raw.len()).any(|w| w == raw.as_bytes()),
                    "{raw:?} found in {}",
                    path.display()
                );
            }
        }
    }
    assert!(files > 0);
}

/// Issue 5: leaves are permanent, so PII in a leaf field is refused with the field named,
/// without echoing the value, and the log is untouched.
#[test]
fn pii_in_leaf_fields_is_refused_with_the_field_named() {
    let fx = Fixture::new();
    let ledger = fx.open();
    ledger.append_blocking(vec![input(0)]).unwrap();
    let before = ledger.head().size;
    let actor = json!({"type": "agent", "id": "a1"});
    let cases = [
        (
            json!({"kind": "x", "actor": actor, "attributes": {"email": "bob@example.com"}}),
            "record.attributes.email",
            "an e-mail address",
        ),
        (
            json!({"kind": "x", "entity": "customer:bob@example.com", "actor": actor}),
            "record.entity",
            "an e-mail address",
        ),
        (
            json!({"kind": "x", "actor": {"type": "human", "id": "+49 151 12345678"}}),
            "record.actor.id",
            "a phone number",
        ),
        (
            json!({"kind": "x", "actor": actor, "attributes": {"a": {"b": ["ok", "10.1.2.3"]}}}),
            "record.attributes.a.b[1]",
            "an IP address",
        ),
        (
            json!({"kind": "x", "actor": actor, "attributes": {"bob@example.com": 1}}),
            "record.attributes",
            "a key that holds an e-mail address",
        ),
        (
            json!({"kind": "x", "actor": actor, "refs": [{"role": "input", "ref": "AKIAIOSFODNN7EXAMPLE"}]}),
            "record.refs[0].ref",
            "an API key or secret",
        ),
    ];
    for (v, field, kind) in cases {
        let input: RecordInput = serde_json::from_value(v).unwrap();
        let err = PreparedRecord::prepare(input, "record").unwrap_err();
        let LedgerError::InvalidRecord { field: f, reason } = &err else {
            panic!("{err}");
        };
        assert_eq!(f, field);
        assert!(reason.contains(kind), "{reason}");
        assert!(reason.contains("leaves are permanent"), "{reason}");
        assert!(
            !err.to_string().contains("bob@example.com")
                && !err.to_string().contains("12345678")
                && !err.to_string().contains("10.1.2.3")
                && !err.to_string().contains("AKIA"),
            "{err}"
        );
    }
    // Record ids in refs do not trip the secret detector.
    let id = all_leaf_hashes(&ledger)[0].to_hex();
    ledger
        .append_blocking(vec![rec(
            json!({"kind": "x", "actor": actor, "refs": [{"role": "input", "ref": id}]}),
        )])
        .unwrap();
    assert_eq!(ledger.head().size, before + 1);
}

/// The writer sequences a batch while the batches before it are still being committed: refs by
/// entity name, idempotent retries and approvals must see those batches, not the store alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_see_the_batches_still_being_committed() {
    let fx = Fixture::new();
    let ledger = fx.open();
    let link = |t: usize, i: usize| {
        rec(json!({
            "kind": "output",
            "entity": "chain",
            "actor": {"type": "agent", "id": format!("a{t}")},
            "refs": [{"role": "prev", "ref": "chain"}],
            "attributes": {"t": t, "i": i},
        }))
    };
    ledger
        .append(vec![rec(json!({
            "kind": "input", "entity": "chain", "actor": {"type": "agent", "id": "a"},
        }))])
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for t in 0..8 {
        let l = ledger.clone();
        tasks.push(tokio::spawn(async move {
            let mut approvals = 0;
            for i in 0..30 {
                l.append(vec![link(t, i)]).await.unwrap();
                // Every task retries one key: all of them must get the one record.
                let retry = rec(json!({
                    "kind": "input", "actor": {"type": "agent", "id": "r"},
                    "idempotency_key": format!("k{i}"), "attributes": {"i": i},
                }));
                l.append(vec![retry]).await.unwrap();
                // A decision that needs approval, and its approval sent as soon as the writer
                // has staged the decision (an unknown ref until then), usually while the
                // decision is still being committed.
                let entity = format!("d:{t}:{i}");
                let decision = l.append(vec![rec(json!({
                    "kind": "decision", "entity": entity, "actor": {"type": "agent", "id": "a"},
                    "attributes": {"requires_approval": true},
                }))]);
                let approve = async {
                    loop {
                        let approval = rec(json!({
                            "kind": "approval", "actor": {"type": "human", "id": "h"},
                            "refs": [{"role": "approves", "ref": entity}],
                        }));
                        match l.append(vec![approval]).await {
                            Ok(_) => return,
                            Err(LedgerError::UnknownRef { .. }) => tokio::task::yield_now().await,
                            Err(e) => panic!("{e}"),
                        }
                    }
                };
                let (d, ()) = tokio::join!(decision, approve);
                d.unwrap();
                approvals += 1;
            }
            approvals
        }));
    }
    let mut approvals = 0;
    for t in tasks {
        approvals += t.await.unwrap();
    }
    assert_eq!(approvals, 240);
    let size = ledger.head().size;
    // 1 + 240 links + 30 retried keys + 240 decisions + 240 approvals.
    assert_eq!(size, 1 + 240 + 30 + 240 + 240);
    // Every link cites the version of `chain` just before it.
    let mut prev: Option<Hash> = None;
    for i in 0..size {
        let bytes = ledger.leaf(i).unwrap();
        let leaf = Leaf::decode(&bytes).unwrap();
        if leaf.entity.as_deref() != Some("chain") {
            continue;
        }
        if let Some(p) = prev {
            assert_eq!(leaf.refs.len(), 1, "record {i}");
            assert_eq!(Hash(leaf.refs[0].hash), p, "record {i} skips a version");
        }
        prev = Some(leaf_hash(&bytes));
    }
    assert!(ledger
        .pending_approvals(None, None, 1000)
        .unwrap()
        .is_empty());
    let decisions = ledger.decisions(None, 0, size, 1000).unwrap();
    assert_eq!(decisions.len(), 240);
    assert!(decisions.iter().all(|d| d.resolution.is_some()));
    drop(ledger);
    verify_data_dir(fx.dir.path(), &fx.vkey(), |_, _| {}).unwrap();
}

/// Many small requests and a few large ones at once: small jobs queued while a batch commits
/// wait for the commit to end (no wake-up each), large ones ring the writer's doorbell. Every
/// job must still land, once, in order within its request, and batches must group them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn small_and_large_requests_mixed_all_land() {
    let fx = Fixture::new();
    let ledger = fx.open();
    let vkey = fx.vkey();
    let mut tasks = Vec::new();
    for t in 0..24 {
        let l = ledger.clone();
        tasks.push(tokio::spawn(async move {
            let mut receipts = Vec::new();
            for i in 0..20 {
                // Tasks 0 and 1 send 40-record requests (above EAGER_RECORDS), the rest one record.
                let n = if t < 2 { 40 } else { 1 };
                let records = (0..n).map(|j| input(t * 10_000 + i * 100 + j)).collect();
                let got = l.append(records).await.unwrap();
                assert_eq!(got.len(), n);
                assert!(got.windows(2).all(|w| w[1].index == w[0].index + 1));
                receipts.extend(got);
            }
            receipts
        }));
    }
    let all = tokio::time::timeout(std::time::Duration::from_secs(120), async {
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all
    })
    .await
    .expect("every request is answered");
    let total = 2 * 20 * 40 + 22 * 20;
    assert_eq!(all.len(), total);
    let mut indexes: Vec<u64> = all.iter().map(|r| r.index).collect();
    indexes.sort_unstable();
    assert_eq!(indexes, (0..total as u64).collect::<Vec<_>>());
    assert_eq!(ledger.head().size, total as u64);
    for r in &all {
        check_receipt(r, &vkey);
    }
}

#[test]
fn metrics_that_clash_with_the_callers_registry_fail_set_up_and_free_the_data_dir() {
    let fx = Fixture::new();
    {
        let ledger = fx.open();
        ledger.append_blocking(vec![input(0)]).unwrap();
    }
    // One name clashes with the ledger's own metrics, the other with its storage gauges (which
    // are registered after the store has opened).
    for name in [
        "provledger_records_appended_total",
        "provledger_store_write_buffer_bytes",
    ] {
        let registry = prometheus::Registry::new();
        let taken = prometheus::IntGauge::new(name, "already here").unwrap();
        registry.register(Box::new(taken)).unwrap();
        let key = SigningKey::from_skey(&fx.key_text).unwrap();
        let err = Ledger::open(&LedgerConfig::new(fx.dir.path()), key, &registry)
            .err()
            .unwrap();
        assert!(matches!(err, LedgerError::Setup(_)), "{name}: {err:?}");
        assert!(
            err.to_string().contains("metrics registration failed"),
            "{err}"
        );
        // Nothing kept the data dir: it opens again at once, with its record.
        let ledger = fx.open();
        assert_eq!(ledger.head().size, 1);
    }
}
