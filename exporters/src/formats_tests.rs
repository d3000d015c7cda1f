//! PROV-JSON and DSSE exports, in-process: a small lineage (two inputs, a policy, a decision by
//! an agent, a human approval, an output) exported in both formats; the PROV-JSON checked node
//! by node and relation by relation, the DSSE envelope verified and every alteration caught.

// Tests unwrap and index what they just built; a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use provledger_ledger::{Ledger, LedgerConfig, PreparedRecord, RecordInput};
use provledger_signer::{Hash, SigningKey};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::{
    export_as, export_dsse, export_prov_json, pae, verify_dsse, BundleError, ExportError,
    ExportFormat, KeyTrust, Scope, DSSE_PAYLOAD_TYPE, PROV_NAMESPACE,
};

struct Log {
    _dir: tempfile::TempDir,
    ledger: Ledger,
    key: SigningKey,
    /// Ids in append order: input-1, input-2, policy, decision, approval, output.
    ids: Vec<Hash>,
}

fn log() -> Log {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate("test.example/log").unwrap();
    let copy = SigningKey::from_skey(&key.to_skey()).unwrap();
    let ledger = Ledger::open(
        &LedgerConfig::new(dir.path()),
        copy,
        &prometheus::Registry::new(),
    )
    .unwrap();
    let bot = json!({"type": "agent", "id": "claims-bot"});
    let records = [
        json!({"kind": "input", "entity": "claim:1", "actor": bot, "payload": {"text": "broken screen"}}),
        json!({"kind": "input", "entity": "claim:2", "actor": bot}),
        json!({"kind": "policy", "entity": "policy:refunds", "actor": {"type": "human", "id": "ana maría"}}),
        json!({"kind": "decision", "actor": bot, "attributes": {"model": "fraud-v3"},
               "refs": [{"role": "input", "ref": "claim:1"}, {"role": "input", "ref": "claim:2"}, {"role": "policy", "ref": "policy:refunds"}]}),
    ];
    let mut ids = append(&ledger, &records);
    let decision = ids[3].to_hex();
    ids.extend(append(
        &ledger,
        &[json!({"kind": "approval", "actor": {"type": "human", "id": "ana maría"}, "refs": [{"role": "approval", "ref": decision}]})],
    ));
    let approval = ids[4].to_hex();
    ids.extend(append(
        &ledger,
        &[json!({"kind": "output", "entity": "refund:1", "actor": bot,
                 "refs": [{"role": "decision", "ref": decision}, {"role": "approval", "ref": approval}, {"role": "parent", "ref": "claim:1"}]})],
    ));
    Log {
        _dir: dir,
        ledger,
        key,
        ids,
    }
}

fn append(ledger: &Ledger, records: &[Value]) -> Vec<Hash> {
    let prepared = records
        .iter()
        .map(|r| {
            let input: RecordInput = serde_json::from_value(r.clone()).unwrap();
            PreparedRecord::prepare(input, "record").unwrap()
        })
        .collect();
    let receipts = ledger.append_blocking(prepared).unwrap();
    receipts.iter().map(|r| r.id).collect()
}

fn lineage(log: &Log) -> Scope {
    Scope::Records {
        tenant: None,
        ids: vec![log.ids[5]],
        depth: 3,
    }
}

fn q(id: &Hash) -> String {
    format!("provledger:{}", id.to_hex())
}

#[test]
fn prov_json_maps_records_refs_and_actors() {
    let log = log();
    let mut out = Vec::new();
    let summary = export_prov_json(&log.ledger, &lineage(&log), &mut out, &mut |_, _| {}).unwrap();
    assert_eq!(summary.records, 6);
    let doc: Value = serde_json::from_slice(&out).unwrap();
    let [in1, in2, policy, decision, approval, output] = [0, 1, 2, 3, 4, 5].map(|i| log.ids[i]);

    assert_eq!(doc["prefix"], json!({"provledger": PROV_NAMESPACE}));
    let entities = doc["entity"].as_object().unwrap();
    // Four records and the checkpoint.
    assert_eq!(entities.len(), 5);
    let size = log.ledger.head().size;
    assert_eq!(
        entities[&format!("provledger:checkpoint-{size}")]["provledger:treeSize"],
        size
    );
    let out_node = &entities[&q(&output)];
    assert_eq!(out_node["provledger:id"], output.to_hex());
    assert_eq!(out_node["provledger:leafHash"], output.to_base64());
    assert_eq!(out_node["provledger:index"], 5);
    assert_eq!(out_node["provledger:kind"], "output");
    assert_eq!(out_node["provledger:entity"], "refund:1");
    assert_eq!(
        out_node["prov:type"],
        json!({"$": "provledger:output", "type": "prov:QUALIFIED_NAME"})
    );
    let activities = doc["activity"].as_object().unwrap();
    assert_eq!(activities.keys().cloned().collect::<Vec<_>>(), {
        let mut k = vec![q(&decision), q(&approval)];
        k.sort();
        k
    });
    assert_eq!(
        activities[&q(&decision)]["provledger:attributes"],
        r#"{"model":"fraud-v3"}"#
    );

    let agents = doc["agent"].as_object().unwrap();
    assert_eq!(agents.len(), 2);
    let ana = &agents["provledger:agent/human/ana%20mar%C3%ADa"];
    assert_eq!(ana["prov:type"]["$"], "prov:Person");
    assert_eq!(ana["provledger:actorId"], "ana maría");

    let used: Vec<(String, String, String)> = doc["used"]
        .as_object()
        .unwrap()
        .values()
        .map(|u| {
            (
                u["prov:activity"].as_str().unwrap().to_owned(),
                u["prov:entity"].as_str().unwrap().to_owned(),
                u["provledger:role"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(used.len(), 3);
    for (e, role) in [(in1, "input"), (in2, "input"), (policy, "policy")] {
        assert!(
            used.contains(&(q(&decision), q(&e), role.to_owned())),
            "{used:?}"
        );
    }
    let generated: Vec<&Value> = doc["wasGeneratedBy"]
        .as_object()
        .unwrap()
        .values()
        .collect();
    assert_eq!(generated.len(), 2);
    assert!(generated.contains(&&json!({"prov:entity": q(&output), "prov:activity": q(&decision), "provledger:role": "decision"})));
    assert!(generated.contains(&&json!({"prov:entity": q(&output), "prov:activity": q(&approval), "provledger:role": "approval"})));
    assert_eq!(
        doc["wasDerivedFrom"]
            .as_object()
            .unwrap()
            .values()
            .collect::<Vec<_>>(),
        [
            &json!({"prov:generatedEntity": q(&output), "prov:usedEntity": q(&in1), "provledger:role": "parent"})
        ]
    );
    assert_eq!(
        doc["wasInformedBy"]
            .as_object()
            .unwrap()
            .values()
            .collect::<Vec<_>>(),
        [
            &json!({"prov:informed": q(&approval), "prov:informant": q(&decision), "provledger:role": "approval"})
        ]
    );
    assert_eq!(doc["wasAttributedTo"].as_object().unwrap().len(), 4);
    assert_eq!(
        doc["wasAssociatedWith"][format!("_:as{}", 4)],
        json!({"prov:activity": q(&approval), "prov:agent": "provledger:agent/human/ana%20mar%C3%ADa"})
    );
    // No payload travels in PROV-JSON.
    assert!(!String::from_utf8(out).unwrap().contains("broken screen"));
}

#[test]
fn prov_json_of_an_unknown_record_is_refused() {
    let log = log();
    let scope = Scope::Records {
        tenant: None,
        ids: vec![Hash([7; 32])],
        depth: 1,
    };
    let err = export_prov_json(&log.ledger, &scope, Vec::new(), &mut |_, _| {}).unwrap_err();
    assert!(
        matches!(err, ExportError::UnknownRecord(h) if h == Hash([7; 32])),
        "{err}"
    );
}

fn dsse(log: &Log) -> Value {
    let mut out = Vec::new();
    let summary = export_dsse(
        &log.ledger,
        &log.key,
        &lineage(log),
        &mut out,
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(summary.records, 6);
    serde_json::from_slice(&out).unwrap()
}

fn statement(env: &Value) -> Vec<u8> {
    STANDARD.decode(env["payload"].as_str().unwrap()).unwrap()
}

fn with_statement(env: &Value, statement: &[u8]) -> Vec<u8> {
    let mut env = env.clone();
    env["payload"] = STANDARD.encode(statement).into();
    serde_json::to_vec(&env).unwrap()
}

/// `env` carrying `statement`, signed again by `key`: what a forger holding the log key makes.
fn resigned(env: &Value, statement: &[u8], key: &SigningKey) -> Vec<u8> {
    let sig = key.sign_raw(&pae(DSSE_PAYLOAD_TYPE, statement));
    let mut env: Value = serde_json::from_slice(&with_statement(env, statement)).unwrap();
    env["signatures"][0]["sig"] = STANDARD.encode(sig).into();
    serde_json::to_vec(&env).unwrap()
}

#[test]
fn dsse_envelope_signs_a_statement_of_the_bundle() {
    let log = log();
    let env = dsse(&log);
    assert_eq!(env["payloadType"], DSSE_PAYLOAD_TYPE);
    assert_eq!(
        env["signatures"][0]["keyid"],
        log.key.verifier().to_string()
    );
    let st_bytes = statement(&env);
    let sig: [u8; 64] = STANDARD
        .decode(env["signatures"][0]["sig"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    assert!(log
        .key
        .verifier()
        .verify_raw(&pae(DSSE_PAYLOAD_TYPE, &st_bytes), &sig));

    let st: Value = serde_json::from_slice(&st_bytes).unwrap();
    assert_eq!(st["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(st["predicate"]["format"], "provledger-bundle");
    let subjects = st["subject"].as_array().unwrap();
    assert_eq!(subjects.len(), 6);
    for (subject, record) in subjects
        .iter()
        .zip(st["predicate"]["records"].as_array().unwrap())
    {
        let leaf = STANDARD.decode(record["leaf"].as_str().unwrap()).unwrap();
        assert_eq!(
            subject["digest"]["sha256"],
            hex::encode(Sha256::digest(&leaf))
        );
        assert_eq!(
            subject["name"],
            provledger_signer::leaf_hash(&leaf).to_hex()
        );
    }
    assert_eq!(subjects[5]["name"], log.ids[5].to_hex());

    let bytes = serde_json::to_vec(&env).unwrap();
    let report = verify_dsse(bytes.as_slice(), &[log.key.verifier()], None).unwrap();
    assert_eq!(report.records(), 6);
    assert!(matches!(report.key(), KeyTrust::Trusted(_)));
    let report = verify_dsse(bytes.as_slice(), &[], None).unwrap();
    assert!(matches!(report.key(), KeyTrust::BundleOnly(_)));
}

#[test]
fn dsse_tampering_is_caught() {
    let log = log();
    let env = dsse(&log);
    let st = statement(&env);
    let text = String::from_utf8(st.clone()).unwrap();

    // A subject digest changed: the signature no longer covers the statement.
    let first_digest = {
        let v: Value = serde_json::from_slice(&st).unwrap();
        v["subject"][0]["digest"]["sha256"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let altered = text.replacen(&first_digest, &"0".repeat(64), 1);
    let err = verify_dsse(
        with_statement(&env, altered.as_bytes()).as_slice(),
        &[],
        None,
    )
    .unwrap_err();
    assert!(
        matches!(err, BundleError::EnvelopeSignature { .. }),
        "{err}"
    );

    // Another key, trusted by the verifier: the log key's signature does not count.
    let other = SigningKey::generate("test.example/log").unwrap().verifier();
    let bytes = serde_json::to_vec(&env).unwrap();
    let err = verify_dsse(bytes.as_slice(), &[other], None).unwrap_err();
    assert!(
        matches!(err, BundleError::EnvelopeSignature { .. }),
        "{err}"
    );

    // Re-signed by the log key but with a subject that is not the record: named by position.
    let v: Value = serde_json::from_slice(&st).unwrap();
    let second = v["subject"][1]["digest"]["sha256"]
        .as_str()
        .unwrap()
        .to_owned();
    let swapped = text.replacen(&first_digest, &second, 1);
    let forged = resigned(&env, swapped.as_bytes(), &log.key);
    let err = verify_dsse(forged.as_slice(), &[], None).unwrap_err();
    assert!(
        matches!(&err, BundleError::Subject { position: 0, reason } if reason.contains("digest.sha256")),
        "{err}"
    );

    // In-toto tools write `subject` before `predicate`: member order does not matter, as long
    // as the log key signed those bytes.
    let v: Value = serde_json::from_slice(&st).unwrap();
    // The bundle's bytes as written (its members keep their order).
    let from = text.find(",\"predicate\":").unwrap() + ",\"predicate\":".len();
    let predicate = &text[from..text.rfind(",\"subject\":").unwrap()];
    let reordered = format!(
        "{{\"subject\":{},\"_type\":{},\"predicate\":{predicate},\"predicateType\":{}}}",
        v["subject"], v["_type"], v["predicateType"]
    );
    let reordered = resigned(&env, reordered.as_bytes(), &log.key);
    let report = verify_dsse(reordered.as_slice(), &[log.key.verifier()], None).unwrap();
    assert_eq!(report.records(), 6);

    // Re-signed by the log key with a subject left out: the count is named.
    let mut subjects = v["subject"].clone();
    subjects.as_array_mut().unwrap().pop();
    let fewer = format!(
        "{{\"_type\":{},\"predicateType\":{},\"predicate\":{predicate},\"subject\":{subjects}}}",
        v["_type"], v["predicateType"]
    )
    .into_bytes();
    let forged = resigned(&env, &fewer, &log.key);
    let err = verify_dsse(forged.as_slice(), &[], None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "in-toto subject 5: the statement has 5 subjects but the bundle 6 records"
    );

    // Another payload type.
    let mut typed = env.clone();
    typed["payloadType"] = "application/json".into();
    let err = verify_dsse(serde_json::to_vec(&typed).unwrap().as_slice(), &[], None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "not a valid DSSE envelope of a provledger bundle: payloadType is \"application/json\", expected \"application/vnd.in-toto+json\""
    );
}

#[test]
fn export_as_writes_each_format() {
    let log = log();
    for format in ExportFormat::ALL {
        let mut out = Vec::new();
        let summary = export_as(
            format,
            &log.ledger,
            &log.key,
            &lineage(&log),
            &mut out,
            &mut |_, _| {},
        )
        .unwrap();
        assert_eq!(summary.records, 6, "{format}");
        let v: Value = serde_json::from_slice(&out).unwrap();
        let first_key = match format {
            ExportFormat::Bundle => "format",
            ExportFormat::ProvJson => "prefix",
            _ => "payloadType",
        };
        assert!(v.get(first_key).is_some(), "{format}: {v}");
        assert_eq!(
            crate::looks_like_envelope(&out),
            format == ExportFormat::Dsse
        );
    }
    let other = SigningKey::generate("test.example/log").unwrap();
    let err = export_as(
        ExportFormat::ProvJson,
        &log.ledger,
        &other,
        &lineage(&log),
        Vec::new(),
        &mut |_, _| {},
    )
    .unwrap_err();
    assert!(matches!(err, ExportError::ForeignKey { .. }), "{err}");
}
