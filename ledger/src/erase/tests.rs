//! Erasure, retention and compaction against the real store, writer thread and signatures.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests: a panic is a failure report

use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use provledger_signer::{
    verify_checkpoint, verify_consistency, verify_inclusion, Hash, SigningKey, VerifierKey,
};
use rand_core::{OsRng, RngCore};
use serde_json::json;

use super::*;
use crate::{
    compact_data_dir, verify_data_dir, Clock, Leaf, LedgerConfig, Retention, RetentionRule,
    VerifyError,
};

const ORIGIN: &str = "test.example/log";

struct Fixture {
    dir: tempfile::TempDir,
    key: String,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            dir: tempfile::tempdir().unwrap(),
            key: SigningKey::generate(ORIGIN).unwrap().to_skey().to_string(),
        }
    }

    fn open(&self) -> Ledger {
        let key = SigningKey::from_skey(&self.key).unwrap();
        Ledger::open(
            &LedgerConfig::new(self.dir.path()),
            key,
            &prometheus::Registry::new(),
        )
        .unwrap()
    }

    fn vkey(&self) -> VerifierKey {
        SigningKey::from_skey(&self.key).unwrap().verifier()
    }

    fn verify(&self) -> Result<crate::VerifyReport, VerifyError> {
        verify_data_dir(self.dir.path(), &self.vkey(), |_, _| {})
    }
}

fn rec(v: serde_json::Value) -> PreparedRecord {
    PreparedRecord::prepare(serde_json::from_value(v).unwrap(), "record").unwrap()
}

fn append(ledger: &Ledger, v: serde_json::Value) -> Receipt {
    ledger.append_blocking(vec![rec(v)]).unwrap().remove(0)
}

fn request(target: ErasureTarget, reason: &str) -> ErasureRequest {
    ErasureRequest {
        target,
        tenant: None,
        reason: reason.into(),
        policy: ErasurePolicy::Requested,
        actor: Actor {
            kind: "human".into(),
            id: "dpo-1".into(),
        },
    }
}

/// 48 random lower-case letters: incompressible, found in a file only if this test wrote it,
/// and not a "secret" to the ingress scrubber (which masks long hex and base64 tokens).
fn marker() -> String {
    let mut b = [0u8; 48];
    OsRng.fill_bytes(&mut b);
    b.iter().map(|x| char::from(b'a' + x % 26)).collect()
}

fn files_holding(dir: &Path, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if std::fs::read(&path)
                .unwrap()
                .windows(needle.len())
                .any(|w| w == needle.as_bytes())
            {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

#[test]
fn erasure_destroys_the_payload_and_every_proof_still_verifies() {
    let fx = Fixture::new();
    let ledger = fx.open();
    let vkey = fx.vkey();
    let first = append(
        &ledger,
        json!({"kind": "input", "entity": "doc:1", "actor": {"type": "agent", "id": "a1"},
               "payload": {"text": "secret words"}}),
    );
    let other = append(
        &ledger,
        json!({"kind": "input", "actor": {"type": "agent", "id": "a1"}, "payload": {"n": 2}}),
    );
    let receipts = ledger
        .erase_blocking(request(
            ErasureTarget::Record(first.id),
            "data subject request 7",
        ))
        .unwrap();
    assert_eq!(receipts.len(), 1);
    let erasure = &receipts[0];
    assert_eq!(erasure.index, 2);
    let leaf = Leaf::decode(&erasure.leaf).unwrap();
    assert_eq!(leaf.kind, "erasure");
    assert_eq!(leaf.entity, None);
    assert_eq!(leaf.commitment, None);
    assert_eq!(leaf.tenant, "default");
    assert_eq!(
        (leaf.actor.kind.as_str(), leaf.actor.id.as_str()),
        ("human", "dpo-1")
    );
    assert_eq!(leaf.refs.len(), 1);
    assert_eq!(leaf.refs[0].role, "erased");
    assert_eq!(leaf.refs[0].hash, first.id.0);
    assert_eq!(
        serde_json::to_value(&leaf.attributes).unwrap(),
        json!({"reason": "data subject request 7", "erasure_policy": "requested"})
    );

    // The leaf stays; its payload and salt are gone; the other record is untouched.
    let stored = ledger.record(&first.id, None).unwrap();
    assert_eq!(stored.leaf_bytes, first.leaf);
    assert!(stored.leaf.commitment.is_some());
    assert_eq!(stored.payload, None);
    assert_eq!(stored.salt, None);
    assert!(ledger.is_erased(&first.id).unwrap());
    assert!(!ledger.is_erased(&other.id).unwrap());
    assert_eq!(
        ledger.record(&other.id, None).unwrap().payload,
        Some(json!({"n": 2}))
    );
    assert_eq!(ledger.erased_payloads(), 1);

    // The first receipt still verifies against its own checkpoint, and that checkpoint is
    // consistent with the new one, against which the record is still included.
    let old = verify_checkpoint(&first.checkpoint, std::slice::from_ref(&vkey)).unwrap();
    verify_inclusion(
        &first.id,
        0,
        first.tree_size,
        &first.inclusion_proof,
        &old.checkpoint().root,
    )
    .unwrap();
    let new = verify_checkpoint(&erasure.checkpoint, std::slice::from_ref(&vkey)).unwrap();
    let proof = ledger.consistency_proof(first.tree_size, 3).unwrap();
    verify_consistency(
        first.tree_size,
        3,
        &old.checkpoint().root,
        &new.checkpoint().root,
        &proof,
    )
    .unwrap();
    let incl = ledger.inclusion_proof(0, Some(3)).unwrap();
    verify_inclusion(&first.id, 0, 3, &incl.hashes, &new.checkpoint().root).unwrap();
    verify_inclusion(
        &erasure.id,
        erasure.index,
        erasure.tree_size,
        &erasure.inclusion_proof,
        &new.checkpoint().root,
    )
    .unwrap();

    drop(ledger);
    let report = fx.verify().unwrap();
    assert_eq!(
        (report.tree_size, report.payloads, report.erased),
        (3, 1, 1)
    );
}

#[test]
fn erasing_twice_answers_the_first_erasure_and_appends_nothing() {
    let fx = Fixture::new();
    let ledger = fx.open();
    let r = append(
        &ledger,
        json!({"kind": "input", "actor": {"type": "agent", "id": "a1"}, "payload": {"x": 1}}),
    );
    let first = ledger
        .erase_blocking(request(ErasureTarget::Record(r.id), "first"))
        .unwrap();
    let size = ledger.head().size;
    let again = ledger
        .erase_blocking(request(ErasureTarget::Record(r.id), "second"))
        .unwrap();
    assert_eq!(again, first);
    assert_eq!(ledger.head().size, size);
    // Two requests in the same batch for the same record: one erasure record.
    let r2 = append(
        &ledger,
        json!({"kind": "input", "actor": {"type": "agent", "id": "a1"}, "payload": {"x": 2}}),
    );
    let twice = ledger
        .erase_blocking(request(ErasureTarget::Records(vec![r2.id, r2.id]), "dup"))
        .unwrap();
    assert_eq!(twice.len(), 1);
    assert_eq!(ledger.head().size, size + 2);
}

#[test]
fn bad_erasure_requests_are_refused_and_change_nothing() {
    let fx = Fixture::new();
    let ledger = fx.open();
    let bare = append(
        &ledger,
        json!({"kind": "model", "actor": {"type": "agent", "id": "a1"}}),
    );
    let other_tenant = append(
        &ledger,
        json!({"kind": "input", "tenant": "acme", "actor": {"type": "agent", "id": "a1"},
               "payload": {"x": 1}}),
    );
    let size = ledger.head().size;
    let err = |target: ErasureTarget, reason: &str, tenant: Option<&str>| {
        let mut req = request(target, reason);
        req.tenant = tenant.map(str::to_owned);
        ledger.erase_blocking(req).unwrap_err()
    };
    assert!(matches!(
        err(ErasureTarget::Record(bare.id), "r", None),
        LedgerError::NothingToErase
    ));
    assert!(matches!(
        err(ErasureTarget::Record(Hash([7; 32])), "r", None),
        LedgerError::NotFound
    ));
    assert!(matches!(
        err(ErasureTarget::Record(other_tenant.id), "r", Some("default")),
        LedgerError::NotFound
    ));
    assert!(matches!(
        err(ErasureTarget::Entity("nope".into()), "r", None),
        LedgerError::NotFound
    ));
    assert!(matches!(
        err(ErasureTarget::Subject("nobody".into()), "r", None),
        LedgerError::NotFound
    ));
    match err(ErasureTarget::Record(other_tenant.id), "  ", None) {
        LedgerError::InvalidRecord { field, .. } => assert_eq!(field, "reason"),
        other => panic!("{other:?}"),
    }
    match err(
        ErasureTarget::Record(other_tenant.id),
        "asked by jane.doe@example.com",
        None,
    ) {
        LedgerError::InvalidRecord { field, reason } => {
            assert_eq!(field, "erasure.attributes.reason");
            assert!(!reason.contains("jane.doe"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // The reserved role cannot be used by an ordinary append.
    let forged = rec(
        json!({"kind": "erasure", "actor": {"type": "agent", "id": "a1"},
                            "refs": [{"role": "erased", "ref": other_tenant.id.to_hex()}]}),
    );
    match ledger.append_blocking(vec![forged]).unwrap_err() {
        LedgerError::InvalidRecord { field, .. } => assert_eq!(field, "record.refs[0].role"),
        other => panic!("{other:?}"),
    }
    let bad_subject = rec(
        json!({"kind": "input", "actor": {"type": "agent", "id": "a1"},
                                 "attributes": {"subject": 42}}),
    );
    match ledger.append_blocking(vec![bad_subject]).unwrap_err() {
        LedgerError::InvalidRecord { field, .. } => {
            assert_eq!(field, "record.attributes.subject")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(ledger.head().size, size);
    assert!(ledger
        .record(&other_tenant.id, None)
        .unwrap()
        .payload
        .is_some());
    drop(ledger);
    assert_eq!(fx.verify().unwrap().erased, 0);
}

#[test]
fn erasure_by_entity_and_by_subject_covers_every_record() {
    let fx = Fixture::new();
    let ledger = fx.open();
    let actor = json!({"type": "agent", "id": "a1"});
    let v1 = append(
        &ledger,
        json!({"kind": "memory", "entity": "memory:c42", "actor": actor,
                                    "payload": {"v": 1}}),
    );
    let v2 = append(
        &ledger,
        json!({"kind": "memory", "entity": "memory:c42", "actor": actor}),
    );
    let v3 = append(
        &ledger,
        json!({"kind": "memory", "entity": "memory:c42", "actor": actor,
                                    "payload": {"v": 3}}),
    );
    let keep = append(
        &ledger,
        json!({"kind": "memory", "entity": "memory:c43", "actor": actor,
                                      "payload": {"v": 9}}),
    );
    let receipts = ledger
        .erase_blocking(request(
            ErasureTarget::Entity("memory:c42".into()),
            "forget c42",
        ))
        .unwrap();
    let cited: Vec<[u8; 32]> = receipts
        .iter()
        .map(|r| Leaf::decode(&r.leaf).unwrap().refs[0].hash)
        .collect();
    assert_eq!(
        cited,
        vec![v1.id.0, v3.id.0],
        "v2 has no payload and is skipped"
    );
    for id in [v1.id, v2.id, v3.id] {
        assert_eq!(ledger.record(&id, None).unwrap().payload, None);
    }
    assert!(ledger.record(&keep.id, None).unwrap().payload.is_some());

    let s1 = append(
        &ledger,
        json!({"kind": "input", "entity": "chat:1", "actor": actor,
                                    "attributes": {"subject": "customer-42"}, "payload": {"m": 1}}),
    );
    let s2 = append(
        &ledger,
        json!({"kind": "output", "entity": "chat:2", "actor": actor,
                                    "attributes": {"subject": "customer-42"}, "payload": {"m": 2}}),
    );
    let s3 = append(
        &ledger,
        json!({"kind": "input", "tenant": "acme", "actor": actor,
                                    "attributes": {"subject": "customer-42"}, "payload": {"m": 3}}),
    );
    let by_subject = ledger
        .erase_blocking(request(
            ErasureTarget::Subject("customer-42".into()),
            "art. 17",
        ))
        .unwrap();
    let cited: Vec<[u8; 32]> = by_subject
        .iter()
        .map(|r| Leaf::decode(&r.leaf).unwrap().refs[0].hash)
        .collect();
    assert_eq!(cited, vec![s1.id.0, s2.id.0]);
    assert!(
        ledger.record(&s3.id, None).unwrap().payload.is_some(),
        "other tenant"
    );
    let mut acme = request(ErasureTarget::Subject("customer-42".into()), "art. 17");
    acme.tenant = Some("acme".into());
    let acme = ledger.erase_blocking(acme).unwrap();
    assert_eq!(Leaf::decode(&acme[0].leaf).unwrap().tenant, "acme");
    assert_eq!(ledger.record(&s3.id, None).unwrap().payload, None);
    drop(ledger);
    let report = fx.verify().unwrap();
    assert_eq!((report.erased, report.payloads), (5, 1));
}

#[test]
fn verify_requires_an_erasure_record_for_every_missing_payload_and_no_payload_for_erased() {
    let fx = Fixture::new();
    let ledger = fx.open();
    let a = append(
        &ledger,
        json!({"kind": "input", "actor": {"type": "agent", "id": "a1"}, "payload": {"x": 1}}),
    );
    let b = append(
        &ledger,
        json!({"kind": "input", "actor": {"type": "agent", "id": "a1"}, "payload": {"x": 2}}),
    );
    let saved = ledger.store().payload(1).unwrap().unwrap();
    ledger
        .erase_blocking(request(ErasureTarget::Record(b.id), "r"))
        .unwrap();
    drop(ledger);
    fx.verify().unwrap();

    // A payload gone without an erasure record is lost data, not an erasure.
    let store = Store::open(fx.dir.path(), 1 << 20).unwrap();
    let kept = store.payload(0).unwrap().unwrap();
    store.set_payload(0, None).unwrap();
    drop(store);
    let e = fx.verify().unwrap_err().to_string();
    assert_eq!(
        e,
        "entry 0: payload is missing and no erasure record cites this record"
    );

    // A payload still stored for a record that an erasure record cites: it did not happen.
    let store = Store::open(fx.dir.path(), 1 << 20).unwrap();
    store.set_payload(0, Some(&kept)).unwrap();
    store.set_payload(1, Some(&saved)).unwrap();
    drop(store);
    let e = fx.verify().unwrap_err().to_string();
    assert_eq!(
        e,
        "entry 2: erases entry 1, but that entry's payload is still stored: the erasure did not happen"
    );
    let _ = a;
}

#[test]
fn compaction_leaves_erased_bytes_in_no_file() {
    let fx = Fixture::new();
    let secret = marker();
    let kept = marker();
    let ledger = fx.open();
    let r = append(
        &ledger,
        json!({"kind": "input", "actor": {"type": "agent", "id": "a1"},
               "payload": {"note": secret}}),
    );
    append(
        &ledger,
        json!({"kind": "input", "actor": {"type": "agent", "id": "a1"}, "payload": {"note": kept}}),
    );
    // Flushed to a segment and still in the journal: the search can find it.
    ledger.compact().unwrap();
    drop(ledger);
    assert!(!files_holding(fx.dir.path(), &secret).is_empty());

    let ledger = fx.open();
    ledger
        .erase_blocking(request(ErasureTarget::Record(r.id), "gone"))
        .unwrap();
    drop(ledger);
    assert!(
        !files_holding(fx.dir.path(), &secret).is_empty(),
        "before compaction the bytes are still in a segment or journal"
    );
    let report = compact_data_dir(fx.dir.path(), |_| {}).unwrap();
    assert_eq!(report.journals_left, 0);
    assert_eq!(files_holding(fx.dir.path(), &secret), Vec::<String>::new());
    assert!(!files_holding(fx.dir.path(), &kept).is_empty());
    let v = fx.verify().unwrap();
    assert_eq!((v.erased, v.payloads), (1, 1));
    let ledger = fx.open();
    assert_eq!(
        ledger.record(&r.id, None).unwrap().leaf_bytes,
        r.leaf,
        "the leaf survives compaction"
    );
}

#[test]
fn retention_erases_expired_classes_once_with_a_controlled_clock() {
    let fx = Fixture::new();
    let ledger = fx.open();
    let actor = json!({"type": "agent", "id": "a1"});
    let pii = append(
        &ledger,
        json!({"kind": "input", "classification": "pii", "actor": actor,
                                     "payload": {"x": 1}}),
    );
    let internal = append(
        &ledger,
        json!({"kind": "input", "actor": actor, "payload": {"x": 2}}),
    );
    let t0 = Leaf::decode(&pii.leaf).unwrap().time;
    let day = 24 * 3600 * 1000;
    let now = Arc::new(AtomicU64::new(t0 + 29 * day));
    let clock = Clock::manual(Arc::clone(&now));
    let mut retention = Retention::new(vec![
        RetentionRule {
            classification: "pii".into(),
            period: Duration::from_secs(30 * 24 * 3600),
            label: "30d".into(),
        },
        RetentionRule {
            classification: "internal".into(),
            period: Duration::from_secs(365 * 24 * 3600),
            label: "1y".into(),
        },
    ]);
    assert_eq!(retention.run_once(&ledger, clock.now_ms()).unwrap(), 0);
    assert!(ledger.record(&pii.id, None).unwrap().payload.is_some());

    now.store(t0 + 31 * day, std::sync::atomic::Ordering::Release);
    assert_eq!(retention.run_once(&ledger, clock.now_ms()).unwrap(), 1);
    assert_eq!(ledger.record(&pii.id, None).unwrap().payload, None);
    assert!(ledger.record(&internal.id, None).unwrap().payload.is_some());
    let erasure = ledger.record_at(2).unwrap().leaf;
    assert_eq!(erasure.kind, "erasure");
    assert_eq!(
        (erasure.actor.kind.as_str(), erasure.actor.id.as_str()),
        ("service", "retention")
    );
    assert_eq!(
        serde_json::to_value(&erasure.attributes).unwrap(),
        json!({"reason": "retention: pii 30d", "erasure_policy": "retention"})
    );
    // The cursor moved on: nothing new is erased, nothing is appended.
    assert_eq!(retention.run_once(&ledger, clock.now_ms()).unwrap(), 0);
    assert_eq!(ledger.head().size, 3);
    now.store(t0 + 366 * day, std::sync::atomic::Ordering::Release);
    assert_eq!(retention.run_once(&ledger, clock.now_ms()).unwrap(), 1);
    assert_eq!(ledger.record(&internal.id, None).unwrap().payload, None);
    drop(ledger);
    assert_eq!(fx.verify().unwrap().erased, 2);
}

/// fjall 2.11 drops a tombstone when compacting into the last level but keeps older versions
/// above its GC watermark; the writer advances the watermark after each erasure, so even a
/// compaction that does not (fjall's own, in the background) cannot bring a payload back.
#[test]
fn a_storage_compaction_right_after_an_erasure_does_not_resurrect_the_payload() {
    let fx = Fixture::new();
    let ledger = fx.open();
    let r = append(
        &ledger,
        json!({"kind": "input", "actor": {"type": "agent", "id": "a1"}, "payload": {"x": 1}}),
    );
    ledger.store().payloads.rotate_memtable_and_wait().unwrap();
    ledger
        .erase_blocking(request(ErasureTarget::Record(r.id), "r"))
        .unwrap();
    ledger.store().payloads.rotate_memtable_and_wait().unwrap();
    ledger.store().payloads.major_compact().unwrap();
    assert_eq!(ledger.record(&r.id, None).unwrap().payload, None);
    drop(ledger);
    assert_eq!(fx.verify().unwrap().erased, 1);
}

#[test]
fn retention_erases_more_than_one_chunk_in_one_pass() {
    let fx = Fixture::new();
    let ledger = fx.open();
    let records: Vec<PreparedRecord> = (0..2050)
        .map(|i| {
            rec(json!({"kind": "input", "classification": if i % 2 == 0 { "pii" } else { "internal" },
                       "actor": {"type": "agent", "id": "a1"}, "payload": {"i": i}}))
        })
        .collect();
    let receipts = ledger.append_blocking(records).unwrap();
    let t0 = Leaf::decode(&receipts[0].leaf).unwrap().time;
    let mut retention = Retention::new(vec![RetentionRule {
        classification: "pii".into(),
        period: Duration::from_secs(1),
        label: "1s".into(),
    }]);
    assert_eq!(retention.run_once(&ledger, t0 + 2000).unwrap(), 1025);
    assert_eq!(ledger.head().size, 2050 + 1025);
    for r in &receipts {
        let stored = ledger.record(&r.id, None).unwrap();
        let pii = stored.leaf.classification == "pii";
        assert_eq!(stored.payload.is_none(), pii, "index {}", r.index);
    }
    assert_eq!(retention.run_once(&ledger, t0 + 3000).unwrap(), 0);
    drop(ledger);
    assert_eq!(fx.verify().unwrap().erased, 1025);
}

/// A batch's writes reach the store a moment before its head is published. A reader that finds
/// a payload gone must still find the erasure that removed it in the published log, and the
/// erasure must be cited within the head the reader sees afterwards.
#[test]
fn a_payload_is_never_seen_gone_before_its_erasure_is_published() {
    let fx = Fixture::new();
    let ledger = fx.open();
    let records: Vec<PreparedRecord> = (0..60)
        .map(|i| {
            rec(
                json!({"kind": "input", "actor": {"type": "agent", "id": "a1"},
                       "payload": {"i": i}}),
            )
        })
        .collect();
    let ids: Vec<Hash> = ledger
        .append_blocking(records)
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    // The erasing thread moves `current` to the record it erases next; the reader keeps
    // reading that one, so it reads it while its erasure is between commit and publication.
    let current = std::sync::atomic::AtomicUsize::new(0);
    let gone_seen = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            for (i, id) in ids.iter().enumerate() {
                current.store(i, std::sync::atomic::Ordering::Release);
                ledger
                    .erase_blocking(request(ErasureTarget::Record(*id), "race test"))
                    .unwrap();
            }
            current.store(ids.len(), std::sync::atomic::Ordering::Release);
        });
        s.spawn(|| loop {
            let i = current.load(std::sync::atomic::Ordering::Acquire);
            let Some(id) = ids.get(i) else { break };
            let record = ledger.record(id, None).unwrap();
            if record.payload.is_none() {
                gone_seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let citing = ledger.cited_by(id, None, None, 10).unwrap();
                assert!(
                    citing.iter().any(|(_, role)| role == ERASED_ROLE),
                    "record {i}: payload gone, but no erasure in the published log (size {})",
                    ledger.head().size
                );
                assert!(ledger.is_erased(id).unwrap());
            }
        });
    });
    // The reader did see payloads gone, so the assertion above ran.
    assert!(gone_seen.into_inner() > 0);
}

/// Appends `sizes` batches; every third record has no payload. Returns each record's payload.
fn append_batches(ledger: &Ledger, sizes: &[usize]) -> Vec<Option<serde_json::Value>> {
    let mut want = Vec::new();
    for &n in sizes {
        let mut batch = Vec::new();
        for _ in 0..n {
            let i = want.len();
            let payload = (i % 3 != 2).then(|| json!({"i": i, "pad": "p".repeat(i % 50)}));
            let mut r = json!({"kind": "input", "actor": {"type": "agent", "id": "a1"}});
            if let Some(p) = &payload {
                r["payload"] = p.clone();
            }
            batch.push(rec(r));
            want.push(payload);
        }
        ledger.append_blocking(batch).unwrap();
    }
    want
}

fn payloads_of(ledger: &Ledger) -> Vec<Option<serde_json::Value>> {
    (0..ledger.head().size)
        .map(|i| ledger.record_at(i).unwrap().payload)
        .collect()
}

/// Payloads live in runs of up to 16 records (`payloads.rs`): batches of every size, records
/// without a payload among them, and erasures inside a run leave every other payload as it was.
#[test]
fn payload_runs_keep_every_payload_across_batches_gaps_and_erasures() {
    let fx = Fixture::new();
    let ledger = fx.open();
    let mut want = append_batches(&ledger, &[1, 7, 20, 12, 33]);
    assert_eq!(payloads_of(&ledger), want);
    // Indexes 4 and 6 share a run, as do 18 and 19; 40 is in the last batch.
    let ids: Vec<Hash> = [4u64, 6, 18, 19, 40]
        .iter()
        .map(|&i| ledger.record_at(i).unwrap().id)
        .collect();
    ledger
        .erase_blocking(request(ErasureTarget::Records(ids[..4].to_vec()), "r"))
        .unwrap();
    ledger
        .erase_blocking(request(ErasureTarget::Record(ids[4]), "r"))
        .unwrap();
    for i in [4, 6, 18, 19, 40] {
        want[i] = None;
    }
    let now = payloads_of(&ledger);
    assert_eq!(now[..want.len()], want[..]);
    drop(ledger);
    let report = fx.verify().unwrap();
    assert_eq!(report.erased, 5);
    assert_eq!(report.payloads as usize, want.iter().flatten().count());
    let ledger = fx.open();
    assert_eq!(payloads_of(&ledger)[..want.len()], want[..]);
}

/// A directory of an earlier build holds one `payloads` key per index. `verify` reads it as it
/// is; opening a ledger moves it into runs, in steps, and a crash between steps resumes.
#[test]
fn payloads_stored_one_key_per_index_are_moved_into_runs_resuming_after_a_crash() {
    let fx = Fixture::new();
    let ledger = fx.open();
    let want = append_batches(&ledger, &[1000; 10]);
    let erased = ledger.record_at(4321).unwrap().id;
    ledger
        .erase_blocking(request(ErasureTarget::Record(erased), "r"))
        .unwrap();
    let size = ledger.head().size;
    drop(ledger);

    // Rewrite the directory in the old layout.
    let store = Store::open(fx.dir.path(), 1 << 20).unwrap();
    let old: Vec<(u64, Vec<u8>)> = (0..size)
        .filter_map(|i| store.payload(i).unwrap().map(|p| (i, p)))
        .collect();
    assert_eq!(old.len(), want.iter().flatten().count() - 1, "one erased");
    let runs: Vec<_> = store.payloads.keys().map(|k| k.unwrap()).collect();
    assert!(runs.len() < old.len() / 10, "{} runs", runs.len());
    for k in runs {
        store.payloads.remove(k).unwrap();
    }
    for (i, p) in &old {
        store
            .payloads
            .insert(i.to_be_bytes(), p.as_slice())
            .unwrap();
    }
    store.meta.remove(crate::payloads::RUNS_BELOW_KEY).unwrap();
    drop(store);
    assert_eq!(
        fx.verify().unwrap().erased,
        1,
        "verify reads the old layout"
    );

    // The first step lands, then the process dies.
    let mut store = Store::open(fx.dir.path(), 1 << 20).unwrap();
    assert_eq!(store.payload_runs_below, 0);
    let crashed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        store.migrate_payloads(|moved| assert!(moved < 4096, "crash after a step"))
    }));
    assert!(crashed.is_err());
    drop(store);
    let store = Store::open(fx.dir.path(), 1 << 20).unwrap();
    let below = store.payload_runs_below;
    assert!(below > 4000 && below < size, "moved up to {below}");
    drop(store);
    assert_eq!(fx.verify().unwrap().erased, 1, "verify reads both layouts");

    let ledger = fx.open();
    assert_eq!(ledger.store().payload_runs_below, u64::MAX);
    let mut expect = want.clone();
    expect[4321] = None;
    assert_eq!(payloads_of(&ledger)[..expect.len()], expect[..]);
    let keys = ledger.store().payloads.len().unwrap();
    assert!(keys < old.len() / 10, "{keys} keys after the move");
    // The move's tombstones compacted away (by fjall itself, without our compaction's steps)
    // bring back no old key.
    ledger.store().payloads.rotate_memtable_and_wait().unwrap();
    ledger.store().payloads.major_compact().unwrap();
    assert_eq!(ledger.store().payloads.len().unwrap(), keys);
    assert_eq!(payloads_of(&ledger)[..expect.len()], expect[..]);
    drop(ledger);
    assert_eq!(fx.verify().unwrap().erased, 1);
    let reopened = Store::open(fx.dir.path(), 1 << 20).unwrap();
    assert_eq!(reopened.payload_runs_below, u64::MAX, "the mark is stored");
}

/// An index no run covers (past the end of the run its group starts with, or in a group
/// with no run) has nothing to remove: the rewrite skips it, and only runs holding a removed
/// payload are rewritten.
#[test]
fn removing_payloads_rewrites_only_the_runs_that_hold_them() {
    let fx = Fixture::new();
    let ledger = fx.open();
    append_batches(&ledger, &[3]);
    let store = ledger.store().clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(store.payload_removals(&[5, 0, 40, 0])));
    let out = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("payload_removals returns")
        .unwrap();
    assert_eq!(out.len(), 1, "only the run at 0");
    assert_eq!(out[0].0, 0);
    let slots = crate::payloads::slots(&out[0].1).unwrap();
    assert_eq!(slots.len(), 3);
    assert!(slots[0].is_none(), "0 removed");
    assert_eq!(
        slots[1],
        ledger.store().payload(1).unwrap().as_deref(),
        "1 kept"
    );
    assert!(slots[2].is_none(), "2 never had one");
}

/// A directory of an earlier build holds one `entries` key per leaf. `verify` reads it as it
/// is; a ledger opening it leaves those keys where they are, marks where runs begin, and stores
/// every later leaf in runs (`leaves.rs`); every reader sees one log across the boundary.
#[test]
fn leaves_stored_one_key_per_index_stay_and_later_leaves_go_in_runs() {
    let fx = Fixture::new();
    let ledger = fx.open();
    append_batches(&ledger, &[100, 150]);
    let size = ledger.head().size;
    drop(ledger);

    // Rewrite the directory in the old layout.
    let store = Store::open(fx.dir.path(), 1 << 20).unwrap();
    assert_eq!(store.leaf_runs_from, 0);
    let old: Vec<(u64, fjall::Slice)> = store.leaves(0, size).map(|r| r.unwrap()).collect();
    assert_eq!(old.len() as u64, size);
    let runs: Vec<_> = store.entries.keys().map(|k| k.unwrap()).collect();
    assert!(runs.len() < 10, "{} runs", runs.len());
    for k in runs {
        store.entries.remove(k).unwrap();
    }
    for (i, leaf) in &old {
        store.entries.insert(i.to_be_bytes(), leaf.clone()).unwrap();
    }
    store.meta.remove(crate::leaves::RUNS_FROM_KEY).unwrap();
    drop(store);
    let store = Store::open(fx.dir.path(), 1 << 20).unwrap();
    assert_eq!(store.leaf_runs_from, u64::MAX, "read as the old layout");
    drop(store);
    assert_eq!(fx.verify().unwrap().tree_size, size);

    let ledger = fx.open();
    assert_eq!(ledger.store().leaf_runs_from, size);
    append_batches(&ledger, &[70, 3]);
    let grown = ledger.head().size;
    assert_eq!(grown, size + 73);
    // Runs from 250: 250..256, 256..320, then 320..323.
    assert_eq!(ledger.store().entries.len().unwrap() as u64, size + 3);
    for (i, leaf) in &old {
        assert_eq!(ledger.store().entry(*i).unwrap().as_ref(), Some(leaf));
    }
    for i in 0..grown {
        let r = ledger.record_at(i).unwrap();
        assert_eq!(ledger.record(&r.id, None).unwrap().index, i);
    }
    // Tile 0 of the entry bundles spans both layouts.
    let bundle = ledger.entry_bundle(0, None).unwrap().unwrap();
    let mut want = Vec::new();
    for i in 0..256 {
        let leaf = ledger.store().entry(i).unwrap().unwrap();
        want.extend_from_slice(&(leaf.len() as u16).to_be_bytes());
        want.extend_from_slice(&leaf);
    }
    assert_eq!(bundle, want);
    drop(ledger);
    assert_eq!(fx.verify().unwrap().tree_size, grown);
    let reopened = Store::open(fx.dir.path(), 1 << 20).unwrap();
    assert_eq!(reopened.leaf_runs_from, size, "the mark is stored");
}

/// A run that is gone or damaged is reported at the first index it should hold.
#[test]
fn verify_names_the_first_leaf_of_a_missing_or_damaged_run() {
    let fx = Fixture::new();
    let ledger = fx.open();
    append_batches(&ledger, &[200]);
    drop(ledger);
    let store = Store::open(fx.dir.path(), 1 << 20).unwrap();
    let run = store.entries.get(64u64.to_be_bytes()).unwrap().unwrap();
    store.entries.remove(64u64.to_be_bytes()).unwrap();
    drop(store);
    match fx.verify() {
        Err(VerifyError::Entry { index: 64, reason }) => assert_eq!(reason, "missing"),
        other => panic!("{other:?}"),
    }
    let store = Store::open(fx.dir.path(), 1 << 20).unwrap();
    store
        .entries
        .insert(64u64.to_be_bytes(), &run[..run.len() - 1])
        .unwrap();
    drop(store);
    match fx.verify() {
        Err(VerifyError::Entry { index: 64, reason }) => {
            assert!(reason.contains("leaf run at 64"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    let store = Store::open(fx.dir.path(), 1 << 20).unwrap();
    store.entries.insert(64u64.to_be_bytes(), run).unwrap();
    drop(store);
    assert_eq!(fx.verify().unwrap().tree_size, 200);
}

/// A directory of an earlier build holds the entity version index as `versions` (tenant ‖ 0 ‖
/// entity ‖ 0 ‖ index → leaf hash). `verify` reads it as it is; a ledger opening it moves it
/// to `entity_versions` and drops it; refs by entity name, entity histories and erasure by
/// entity then read the moved index, and `verify` names a version missing from it.
#[test]
fn entity_versions_of_an_earlier_build_move_to_the_new_layout() {
    let fx = Fixture::new();
    let ledger = fx.open();
    let mut ids = Vec::new();
    for i in 0..30 {
        let r = json!({"kind": "input", "entity": format!("doc:{}", i % 3),
                       "actor": {"type": "agent", "id": "a1"}, "payload": {"i": i}});
        ids.push(append(&ledger, r).id);
    }
    let size = ledger.head().size;
    drop(ledger);

    // Rewrite the index in the old layout.
    let store = Store::open(fx.dir.path(), 1 << 20).unwrap();
    assert_eq!(store.versions.len().unwrap(), 30);
    let legacy = store
        .keyspace
        .open_partition("versions", Default::default())
        .unwrap();
    for (i, id) in ids.iter().enumerate() {
        let mut k = crate::store::entity_prefix(DEFAULT_TENANT, &format!("doc:{}", i % 3));
        k.extend_from_slice(&(i as u64).to_be_bytes());
        legacy.insert(k, id.as_bytes()).unwrap();
    }
    for k in store
        .versions
        .keys()
        .map(|k| k.unwrap())
        .collect::<Vec<_>>()
    {
        store.versions.remove(k).unwrap();
    }
    store.keyspace.persist(fjall::PersistMode::SyncAll).unwrap();
    drop((legacy, store));
    assert!(Store::open(fx.dir.path(), 1 << 20)
        .unwrap()
        .legacy_versions
        .is_some());
    assert_eq!(
        fx.verify().unwrap().tree_size,
        size,
        "verify reads it as it is"
    );

    let ledger = fx.open();
    assert!(ledger.store().legacy_versions.is_none());
    assert!(!ledger.store().keyspace.partition_exists("versions"));
    let history = ledger
        .entity_versions(DEFAULT_TENANT, "doc:1", None, 100)
        .unwrap();
    let want: Vec<_> = (1..30).step_by(3).map(|i| (i as u64, ids[i])).collect();
    assert_eq!(history, want);
    let page = ledger
        .entity_versions(DEFAULT_TENANT, "doc:1", Some(4), 2)
        .unwrap();
    assert_eq!(page, want[2..4]);
    let citing = append(
        &ledger,
        json!({"kind": "output", "actor": {"type": "agent", "id": "a1"},
               "refs": [{"role": "source", "ref": "doc:2"}]}),
    );
    let refs = Leaf::decode(&citing.leaf).unwrap().refs;
    assert_eq!(refs[0].hash, ids[29].0, "the latest version of doc:2");
    let erased = ledger
        .erase_blocking(request(ErasureTarget::Entity("doc:0".into()), "r"))
        .unwrap();
    assert_eq!(erased.len(), 10);
    let grown = ledger.head().size;
    drop(ledger);
    assert_eq!(fx.verify().unwrap().tree_size, grown);

    // A version missing from the index is named by its index.
    let store = Store::open(fx.dir.path(), 1 << 20).unwrap();
    let name = crate::versions::EntityName::new(DEFAULT_TENANT, "doc:1");
    store.versions.remove(name.key(7)).unwrap();
    drop(store);
    match fx.verify() {
        Err(VerifyError::Entry { index: 7, reason }) => {
            assert_eq!(reason, "missing from the entity version index")
        }
        other => panic!("{other:?}"),
    }
}

/// The entity index's values hold no leaf hash (session 23): readers take it from the
/// version's full level-0 tile or hash its stored leaf (the right edge's tile is not stored).
/// Both, for histories and, after a restart (the writer's memory empty), for refs by name;
/// wide values of earlier builds read the same beside them; `verify` checks either kind.
#[test]
fn entity_versions_without_leaf_hashes_read_them_from_tiles_and_leaves() {
    let fx = Fixture::new();
    let ledger = fx.open();
    let entity = |i: usize| match i {
        10 | 100 => "early".to_owned(),
        20 | 290 => "late".to_owned(),
        _ => format!("filler:{i}"),
    };
    let batch = (0..300)
        .map(|i| {
            rec(json!({"kind": "input", "entity": entity(i),
                       "actor": {"type": "agent", "id": "a1"}, "payload": {"i": i}}))
        })
        .collect();
    let receipts = ledger.append_blocking(batch).unwrap();
    let version = |i: usize| (receipts[i].index, receipts[i].id);
    assert!(
        version(100).0 < 256 && version(290).0 >= 256,
        "{receipts:?}"
    );
    assert!(ledger.head().size < 512);
    let history = |ledger: &Ledger, entity: &str| {
        ledger
            .entity_versions(DEFAULT_TENANT, entity, None, 100)
            .unwrap()
    };
    assert_eq!(history(&ledger, "early"), vec![version(10), version(100)]);
    assert_eq!(history(&ledger, "late"), vec![version(20), version(290)]);
    for kv in ledger.store().versions.iter() {
        let (_, v) = kv.unwrap();
        assert_eq!(v.len(), 20, "no leaf hash in the value");
    }
    assert!(ledger.store().tile(0, 0).unwrap().is_some());
    assert!(ledger.store().tile(0, 1).unwrap().is_none());
    drop(ledger);

    let cite = |ledger: &Ledger, name: &str| {
        let r = append(
            ledger,
            json!({"kind": "output", "actor": {"type": "agent", "id": "a1"},
                   "refs": [{"role": "source", "ref": name}]}),
        );
        Hash(Leaf::decode(&r.leaf).unwrap().refs[0].hash)
    };
    let ledger = fx.open();
    assert_eq!(
        cite(&ledger, "early"),
        version(100).1,
        "from the stored tile"
    );
    assert_eq!(
        cite(&ledger, "late"),
        version(290).1,
        "from the stored leaf"
    );
    drop(ledger);
    assert!(fx.verify().is_ok());

    // An earlier build's wide value (leaf hash ‖ check) beside the new ones.
    let name = crate::versions::EntityName::new(DEFAULT_TENANT, "early");
    let wide = |leaf: &Hash| [leaf.as_bytes().as_slice(), &name.value()].concat();
    let store = Store::open(fx.dir.path(), 1 << 20).unwrap();
    let (at, id) = version(10);
    store.versions.insert(name.key(at), wide(&id)).unwrap();
    store.keyspace.persist(fjall::PersistMode::SyncAll).unwrap();
    drop(store);
    let ledger = fx.open();
    assert_eq!(history(&ledger, "early"), vec![version(10), version(100)]);
    drop(ledger);
    assert!(fx.verify().is_ok());

    // A wide value with another leaf hash, then a value with a damaged check: each is named by
    // its index.
    for (index, value) in [
        (at, wide(&version(11).1)),
        (version(100).0, {
            let mut v = name.value().to_vec();
            v[19] ^= 1;
            v
        }),
    ] {
        let store = Store::open(fx.dir.path(), 1 << 20).unwrap();
        store.versions.insert(name.key(index), value).unwrap();
        store.keyspace.persist(fjall::PersistMode::SyncAll).unwrap();
        drop(store);
        match fx.verify() {
            Err(VerifyError::Entry { index: i, reason }) if i == index => {
                assert_eq!(reason, "missing from the entity version index")
            }
            other => panic!("{other:?}"),
        }
        let store = Store::open(fx.dir.path(), 1 << 20).unwrap();
        store
            .versions
            .insert(name.key(index), name.value())
            .unwrap();
        store.keyspace.persist(fjall::PersistMode::SyncAll).unwrap();
    }
}

/// A directory of a build before session 23 holds the cited-by index as `cites` (cited leaf
/// hash ‖ citing index ‖ position → role) and no `meta/cited_by_from`. `verify` reads it as it
/// is; a ledger opening it marks the tree size, writes later refs to `cited_by`, and every
/// reader (citations, erasure checks, `verify`) reads both; `verify` names a ref missing from
/// either by the citing record's index.
#[test]
fn cites_of_an_earlier_build_are_read_beside_the_new_index() {
    let fx = Fixture::new();
    let ledger = fx.open();
    let source = append(
        &ledger,
        json!({"kind": "input", "entity": "doc:a", "actor": {"type": "agent", "id": "a1"},
               "payload": {"text": "x"}}),
    );
    let cite = |ledger: &Ledger, role: &str| {
        append(
            ledger,
            json!({"kind": "output", "actor": {"type": "agent", "id": "a1"},
                   "refs": [{"role": role, "ref": "doc:a"}, {"role": "again", "ref": source.id.to_hex()}]}),
        )
        .index
    };
    let old = [cite(&ledger, "input"), cite(&ledger, "basis")];
    let erased = append(
        &ledger,
        json!({"kind": "input", "actor": {"type": "agent", "id": "a1"}, "payload": {"n": 1}}),
    );
    let erasure = ledger
        .erase_blocking(request(ErasureTarget::Record(erased.id), "old"))
        .unwrap()[0]
        .index;
    drop(ledger);

    // Rewrite the index in the old layout.
    let store = Store::open(fx.dir.path(), 1 << 20).unwrap();
    assert_eq!(store.cited_by_from, 0);
    let legacy = store
        .keyspace
        .open_partition("cites", Default::default())
        .unwrap();
    let mut moved = 0;
    for kv in store.cited_by.iter().collect::<Vec<_>>() {
        let (k, role) = kv.unwrap();
        let cited = store.leaf_hash_at(u64::from_be_bytes(k[..8].try_into().unwrap()));
        legacy
            .insert(
                [cited.unwrap().as_bytes().as_slice(), &k[8..]].concat(),
                role,
            )
            .unwrap();
        store.cited_by.remove(k).unwrap();
        moved += 1;
    }
    assert_eq!(
        moved, 5,
        "two refs each from two records, and the erasure's"
    );
    store.meta.remove(crate::cites::CITED_BY_FROM_KEY).unwrap();
    store.keyspace.persist(fjall::PersistMode::SyncAll).unwrap();
    drop((legacy, store));
    let store = Store::open(fx.dir.path(), 1 << 20).unwrap();
    assert_eq!(store.cited_by_from, u64::MAX);
    assert!(store.legacy_cites.is_some());
    drop(store);
    assert!(fx.verify().is_ok(), "verify reads it as it is");

    let ledger = fx.open();
    let size = ledger.head().size;
    assert_eq!(ledger.store().cited_by_from, size);
    let new = [cite(&ledger, "input"), cite(&ledger, "update")];
    let roles =
        |ledger: &Ledger, after, limit| ledger.cited_by(&source.id, after, None, limit).unwrap();
    let all: Vec<(u64, String)> = [
        (old[0], "input"),
        (old[0], "again"),
        (old[1], "basis"),
        (old[1], "again"),
        (new[0], "input"),
        (new[0], "again"),
        (new[1], "update"),
        (new[1], "again"),
    ]
    .into_iter()
    .map(|(i, r)| (i, r.to_owned()))
    .collect();
    assert_eq!(roles(&ledger, None, 100), all);
    assert_eq!(roles(&ledger, None, 3), all[..3]);
    assert!(
        roles(&ledger, None, 0).is_empty(),
        "a limit of 0 asks for none"
    );
    assert_eq!(
        roles(&ledger, Some(old[1]), 3),
        all[4..7],
        "across the mark"
    );
    assert!(
        ledger.is_erased(&erased.id).unwrap(),
        "erased before the mark"
    );
    let erased_after = append(
        &ledger,
        json!({"kind": "input", "actor": {"type": "agent", "id": "a1"}, "payload": {"n": 2}}),
    );
    ledger
        .erase_blocking(request(ErasureTarget::Record(erased_after.id), "new"))
        .unwrap();
    assert!(ledger.is_erased(&erased_after.id).unwrap());
    // A second request for the record erased before the mark finds that erasure.
    let again = ledger
        .erase_blocking(request(ErasureTarget::Record(erased.id), "again"))
        .unwrap();
    assert_eq!(again[0].index, erasure);
    drop(ledger);
    assert!(fx.verify().is_ok());

    // A ref missing from either layout is named by its citing record's index.
    for (index, partition) in [(old[1], "cites"), (new[0], "cited_by")] {
        let store = Store::open(fx.dir.path(), 1 << 20).unwrap();
        let p = store
            .keyspace
            .open_partition(partition, Default::default())
            .unwrap();
        let (k, role) = p
            .iter()
            .map(|kv| kv.unwrap())
            .find(|(k, _)| k[k.len() - 10..k.len() - 2] == index.to_be_bytes())
            .unwrap();
        p.remove(k.clone()).unwrap();
        store.keyspace.persist(fjall::PersistMode::SyncAll).unwrap();
        drop((p, store));
        match fx.verify() {
            Err(VerifyError::Entry { index: i, reason }) if i == index => {
                assert!(
                    reason.contains("missing from the reverse index"),
                    "{reason}"
                )
            }
            other => panic!("{other:?}"),
        }
        let store = Store::open(fx.dir.path(), 1 << 20).unwrap();
        let p = store
            .keyspace
            .open_partition(partition, Default::default())
            .unwrap();
        p.insert(k, role).unwrap();
        store.keyspace.persist(fjall::PersistMode::SyncAll).unwrap();
    }
    assert!(fx.verify().is_ok());
}
