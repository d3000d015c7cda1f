//! Standard formats and ecosystem ingestion (issues 4 and 3), through the real binary:
//! PROV-JSON validated against the W3C PROV-JSON schema with Python `jsonschema` and loaded by
//! the Python `prov` library (the PROV reference implementation), which must see every node
//! and relation and write it out as PROV-N; a DSSE
//! envelope checked by an independent Python verifier (Ed25519 over the PAE it recomputes, and
//! the in-toto subjects against the leaves) and by `provledger verify-bundle`, with tampering
//! caught by both; `POST /v1/exports` streamed and verified offline; and OpenLineage run events
//! at `POST /api/v1/lineage` mapped to records and refs, idempotent, gzip-capable, and refused
//! when malformed without changing the log.

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::common::{bin, describe, Client, Server};

/// The W3C PROV-JSON schema, vendored (see tests/fixtures/README.md).
const PROV_SCHEMA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/prov-json.schema.json"
);

/// Validates argv[2] against the schema argv[1] (draft 4); prints every error and exits 1 on
/// any.
const VALIDATE_PY: &str = r#"
import json, sys, jsonschema
schema = json.load(open(sys.argv[1]))
jsonschema.Draft4Validator.check_schema(schema)
doc = json.load(open(sys.argv[2]))
errors = sorted(jsonschema.Draft4Validator(schema).iter_errors(doc), key=lambda e: list(e.path))
for e in errors:
    print("/".join(map(str, e.path)), e.message)
sys.exit(1 if errors else 0)
"#;

/// Loads the PROV-JSON document argv[1] with the `prov` library and prints, one per line, each
/// PROV record type with how many the document holds, then the identifiers of the entities,
/// activities and agents, then the PROV-N serialization's first line (a document PROV tools
/// can use: serializing walks every record). `prov` drops what it cannot read with a warning
/// (an undeclared prefix, a malformed time); warnings are errors here, so nothing is dropped.
const PROV_LOAD_PY: &str = r#"
import collections, sys, warnings
warnings.simplefilter("error")
from prov.model import ProvDocument
doc = ProvDocument.deserialize(sys.argv[1], format="json")
counts = collections.Counter(type(r).__name__ for r in doc.get_records())
for name in sorted(counts):
    print(name, counts[name])
for r in doc.get_records():
    if r.identifier is not None:
        print("id", r.identifier)
provn = doc.get_provn()
print("provn", provn.splitlines()[0], len(provn.splitlines()))
"#;

/// Verifies a DSSE envelope (argv[1]) independently: Ed25519 (Python `cryptography`) over the
/// PAE recomputed here, with the public key from the C2SP verifier key argv[2]; then the
/// statement type and every subject against SHA-256 of the predicate's leaves.
const DSSE_PY: &str = r#"
import base64, hashlib, json, sys
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
env = json.load(open(sys.argv[1]))
name, keyhash, b64 = sys.argv[2].split("+", 2)
raw = base64.b64decode(b64)
assert raw[0] == 1 and len(raw) == 33, "not an Ed25519 verifier key"
pub = Ed25519PublicKey.from_public_bytes(raw[1:])
ptype = env["payloadType"]
body = base64.b64decode(env["payload"])
pae = b"DSSEv1 %d %s %d %s" % (len(ptype.encode()), ptype.encode(), len(body), body)
ok = False
for s in env["signatures"]:
    try:
        pub.verify(base64.b64decode(s["sig"]), pae)
        ok = True
    except Exception:
        pass
if not ok:
    print("signature does not verify over the PAE")
    sys.exit(1)
st = json.loads(body)
assert ptype == "application/vnd.in-toto+json", ptype
assert st["_type"] == "https://in-toto.io/Statement/v1", st["_type"]
records = st["predicate"]["records"]
assert len(st["subject"]) == len(records), "subject count"
for subject, record in zip(st["subject"], records):
    leaf = base64.b64decode(record["leaf"])
    assert subject["digest"]["sha256"] == hashlib.sha256(leaf).hexdigest(), "digest"
    assert subject["name"] == hashlib.sha256(b"\x00" + leaf).hexdigest(), "name"
print("ok", len(records))
"#;

fn python(script: &str, args: &[&Path], extra: &[&str]) -> Output {
    Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect(
            "cannot run python3 (install it with jsonschema, prov and cryptography: see .ci/run)",
        )
}

/// A log with two inputs, a policy, a decision by an agent, a human approval and an output.
struct Scenario {
    server: Server,
    ids: HashMap<&'static str, String>,
    vkey: String,
    dir: tempfile::TempDir,
}

impl Scenario {
    fn new() -> Scenario {
        let server = Server::start(&[]);
        let bot = json!({"type": "agent", "id": "claims-bot"});
        let mut ids = HashMap::new();
        let step = |ids: &mut HashMap<_, _>, names: &[&'static str], records: Vec<Value>| {
            for (name, r) in names.iter().zip(server.append_all(&records)) {
                ids.insert(*name, r["id"].as_str().expect("id").to_owned());
            }
        };
        step(
            &mut ids,
            &["claim-1", "claim-2", "policy"],
            vec![
                json!({"kind": "input", "entity": "claim:1", "actor": bot, "payload": {"text": "broken screen"}}),
                json!({"kind": "input", "entity": "claim:2", "actor": bot}),
                json!({"kind": "policy", "entity": "policy:refunds", "actor": {"type": "human", "id": "ana"}, "payload": {"max": 100}}),
            ],
        );
        step(
            &mut ids,
            &["decision"],
            vec![
                json!({"kind": "decision", "actor": bot, "attributes": {"model": "fraud-v3"},
                "refs": [{"role": "input", "ref": "claim:1"}, {"role": "input", "ref": "claim:2"}, {"role": "policy", "ref": "policy:refunds"}]}),
            ],
        );
        let decision = ids["decision"].clone();
        step(
            &mut ids,
            &["approval"],
            vec![
                json!({"kind": "approval", "actor": {"type": "human", "id": "ana"}, "refs": [{"role": "approval", "ref": decision}]}),
            ],
        );
        let approval = ids["approval"].clone();
        step(
            &mut ids,
            &["output"],
            vec![json!({"kind": "output", "entity": "refund:1", "actor": bot,
                "refs": [{"role": "decision", "ref": decision}, {"role": "approval", "ref": approval}]})],
        );
        let vkey = server.get("/v1/key").text().trim().to_owned();
        Scenario {
            server,
            ids,
            vkey,
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `provledger export` of the output's lineage in `format` (the server must be stopped).
    fn export(&self, format: &str, name: &str) -> PathBuf {
        let out = self.path(name);
        let run = Command::new(bin())
            .args(["export", "--record", &self.ids["output"], "--depth", "5"])
            .args(["--format", format, "--data-dir"])
            .arg(self.server.data_dir())
            .arg("--out")
            .arg(&out)
            .stdin(Stdio::null())
            .output()
            .expect("cannot run provledger export");
        assert!(run.status.success(), "export failed:\n{}", describe(&run));
        assert!(
            String::from_utf8_lossy(&run.stdout).contains(&format!("({format}): 6 records")),
            "{}",
            describe(&run)
        );
        out
    }
}

fn verify_bundle(file: &Path, vkey: &str) -> Output {
    Command::new(bin())
        .arg("verify-bundle")
        .arg(file)
        .args(["--key", vkey])
        .stdin(Stdio::null())
        .output()
        .expect("cannot run provledger verify-bundle")
}

#[test]
fn prov_json_export_validates_against_the_w3c_schema() {
    let mut s = Scenario::new();
    s.server.stop();
    let file = s.export("prov-json", "lineage.prov.json");
    let run = python(VALIDATE_PY, &[Path::new(PROV_SCHEMA), &file], &[]);
    assert!(
        run.status.success(),
        "PROV-JSON does not validate:\n{}",
        describe(&run)
    );

    let doc: Value = serde_json::from_slice(&std::fs::read(&file).expect("read")).expect("JSON");
    let q = |name: &str| format!("provledger:{}", s.ids[name]);
    let decision = &doc["activity"][q("decision")];
    assert_eq!(decision["provledger:id"], s.ids["decision"].as_str());
    assert_eq!(decision["provledger:kind"], "decision");
    assert_eq!(doc["entity"][q("claim-1")]["provledger:entity"], "claim:1");
    let used: Vec<&Value> = doc["used"].as_object().expect("used").values().collect();
    assert_eq!(used.len(), 3, "{used:?}");
    assert!(used.contains(
        &&json!({"prov:activity": q("decision"), "prov:entity": q("policy"), "provledger:role": "policy"})
    ));
    let generated: Vec<&Value> = doc["wasGeneratedBy"]
        .as_object()
        .expect("gen")
        .values()
        .collect();
    assert!(generated.contains(
        &&json!({"prov:entity": q("output"), "prov:activity": q("decision"), "provledger:role": "decision"})
    ));
    assert_eq!(doc["agent"].as_object().expect("agents").len(), 2);
    assert_eq!(
        doc["wasAssociatedWith"].as_object().expect("assoc").len(),
        2
    );
    assert_eq!(doc["wasAttributedTo"].as_object().expect("attr").len(), 4);

    // The validator is not a rubber stamp: a relation without its required end is refused.
    let mut broken = doc.clone();
    let first = broken["used"]
        .as_object()
        .and_then(|m| m.keys().next().cloned())
        .expect("a used relation");
    broken["used"][&first]
        .as_object_mut()
        .expect("relation")
        .remove("prov:entity");
    let broken_file = s.path("broken.prov.json");
    std::fs::write(&broken_file, serde_json::to_vec(&broken).expect("JSON")).expect("write");
    let run = python(VALIDATE_PY, &[Path::new(PROV_SCHEMA), &broken_file], &[]);
    assert_eq!(run.status.code(), Some(1), "{}", describe(&run));
    assert!(String::from_utf8_lossy(&run.stdout).contains("'prov:entity' is a required property"));
}

/// A PROV tool loads the export: the `prov` library (PyPI `prov`, the PROV reference
/// implementation in Python) reads every entity, activity, agent and relation, with the record
/// ids as identifiers, and writes the document back out as PROV-N.
#[test]
fn prov_json_export_loads_in_the_prov_library() {
    let mut s = Scenario::new();
    s.server.stop();
    let file = s.export("prov-json", "lineage.prov.json");
    let run = python(PROV_LOAD_PY, &[&file], &[]);
    assert!(
        run.status.success(),
        "the prov library cannot load the export (pip install prov):\n{}",
        describe(&run)
    );
    let stdout = String::from_utf8_lossy(&run.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    // What the schema test counts in the JSON, seen by the library: the checkpoint and four
    // records as entities, the decision and the approval as activities, two agents, and the
    // relations between them.
    for expected in [
        "ProvEntity 5",
        "ProvActivity 2",
        "ProvAgent 2",
        "ProvUsage 3",
        "ProvAttribution 4",
        "ProvAssociation 2",
    ] {
        assert!(lines.contains(&expected), "{expected} in:\n{stdout}");
    }
    assert!(
        lines.iter().any(|l| l.starts_with("ProvGeneration ")),
        "{stdout}"
    );
    for name in ["claim-1", "policy", "decision", "output"] {
        let id = format!("id provledger:{}", s.ids[name]);
        assert!(lines.contains(&id.as_str()), "{id} in:\n{stdout}");
    }
    assert!(
        lines.iter().any(|l| l.starts_with("provn document ")),
        "{stdout}"
    );

    // Not a rubber stamp either: a relation naming an undeclared prefix is refused.
    let mut doc: Value =
        serde_json::from_slice(&std::fs::read(&file).expect("read")).expect("JSON");
    doc["used"]["_:broken"] = json!({"prov:activity": "nope:x"});
    let broken = s.path("broken-lib.prov.json");
    std::fs::write(&broken, serde_json::to_vec(&doc).expect("JSON")).expect("write");
    let run = python(PROV_LOAD_PY, &[&broken], &[]);
    assert!(!run.status.success(), "{}", describe(&run));
}

#[test]
fn dsse_export_verifies_independently_and_tampering_is_caught() {
    let mut s = Scenario::new();
    s.server.stop();
    let file = s.export("dsse", "lineage.dsse.json");
    let run = python(DSSE_PY, &[&file], &[&s.vkey]);
    assert!(run.status.success(), "{}", describe(&run));
    assert_eq!(String::from_utf8_lossy(&run.stdout).trim(), "ok 6");
    let out = verify_bundle(&file, &s.vkey);
    assert!(out.status.success(), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("DSSE envelope: signature over its PAE and in-toto subjects verified"),
        "{stdout}"
    );
    assert!(stdout.contains("ok: 6 records"), "{stdout}");

    // One subject digest changed inside the signed statement.
    let env: Value = serde_json::from_slice(&std::fs::read(&file).expect("read")).expect("JSON");
    let statement = B64
        .decode(env["payload"].as_str().expect("payload"))
        .expect("b64");
    let mut st: Value = serde_json::from_slice(&statement).expect("statement");
    let digest = st["subject"][2]["digest"]["sha256"]
        .as_str()
        .expect("digest")
        .to_owned();
    let flipped = format!(
        "{}{}",
        if digest.starts_with('0') { "1" } else { "0" },
        &digest[1..]
    );
    st["subject"][2]["digest"]["sha256"] = flipped.into();
    let mut tampered = env.clone();
    tampered["payload"] = B64.encode(serde_json::to_vec(&st).expect("JSON")).into();
    let tampered_file = s.path("tampered.dsse.json");
    std::fs::write(&tampered_file, serde_json::to_vec(&tampered).expect("JSON")).expect("write");

    let run = python(DSSE_PY, &[&tampered_file], &[&s.vkey]);
    assert_eq!(run.status.code(), Some(1), "{}", describe(&run));
    assert!(String::from_utf8_lossy(&run.stdout).contains("signature does not verify"));
    let out = verify_bundle(&tampered_file, &s.vkey);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("the DSSE envelope signature does not verify over its PAE"),
        "{}",
        describe(&out)
    );
}

/// A POST with extra headers through the test client (so it carries the client's token);
/// returns status, the named response headers and the body.
fn post_with(
    client: &Client,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    want_headers: &[&str],
) -> (u16, Vec<String>, Vec<u8>) {
    let mut req = client.request("POST", path);
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let resp = match req.send_bytes(body) {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("POST {path} failed: {e}"),
    };
    let status = resp.status();
    let got = want_headers
        .iter()
        .map(|h| resp.header(h).unwrap_or_default().to_owned())
        .collect();
    let mut bytes = Vec::new();
    resp.into_reader()
        .read_to_end(&mut bytes)
        .expect("read the body");
    (status, got, bytes)
}

fn post_json(client: &Client, path: &str, body: &Value) -> (u16, Vec<String>, Vec<u8>) {
    post_with(
        client,
        path,
        &[("Content-Type", "application/json")],
        &serde_json::to_vec(body).expect("JSON"),
        &["Content-Type", "Content-Disposition"],
    )
}

#[test]
fn exports_endpoint_streams_files_that_verify_offline() {
    let s = Scenario::new();
    let client = s.server.client();
    let scope = json!({"type": "lineage", "ids": [s.ids["output"]], "depth": 5});
    for (format, media, name) in [
        (
            "bundle",
            "application/json",
            "provledger-export.bundle.json",
        ),
        (
            "dsse",
            "application/vnd.dsse.envelope.v1+json",
            "provledger-export.dsse.json",
        ),
    ] {
        let (status, headers, body) = post_json(
            &client,
            "/v1/exports",
            &json!({"format": format, "scope": scope}),
        );
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        assert_eq!(headers[0], media);
        assert_eq!(headers[1], format!("attachment; filename=\"{name}\""));
        let file = s.path(name);
        std::fs::write(&file, &body).expect("write");
        let out = verify_bundle(&file, &s.vkey);
        assert!(out.status.success(), "{format}: {}", describe(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("ok: 6 records"),
            "{}",
            describe(&out)
        );
    }
    let (status, _, body) = post_json(
        &client,
        "/v1/exports",
        &json!({"format": "prov-json", "scope": {"type": "entity", "entity": "claim:1"}}),
    );
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_slice(&body).expect("PROV-JSON");
    assert_eq!(
        doc["entity"][format!("provledger:{}", s.ids["claim-1"])]["provledger:entity"],
        "claim:1"
    );

    // Errors come from the error table, and change nothing.
    let size = client.tree_size();
    let missing = "ab".repeat(32);
    for (body, status, code) in [
        (
            json!({"scope": {"type": "lineage", "ids": [missing]}}),
            404,
            "not_found",
        ),
        (
            json!({"scope": {"type": "entity", "entity": "claim:404"}}),
            404,
            "not_found",
        ),
        (json!({"scope": {"type": "range"}}), 400, "invalid_scope"),
        (
            json!({"scope": {"type": "range", "from_index": 5, "to_index": 2}}),
            400,
            "invalid_scope",
        ),
        (
            json!({"format": "pdf", "scope": {"type": "entity", "entity": "claim:1"}}),
            400,
            "unknown_format",
        ),
        (
            json!({"scope": {"type": "lineage", "ids": ["ABC"]}}),
            400,
            "invalid_id",
        ),
        (
            json!({"scope": {"type": "everything"}}),
            400,
            "invalid_export",
        ),
    ] {
        let (got, _, answer) = post_json(&client, "/v1/exports", &body);
        let answer: Value = serde_json::from_slice(&answer).expect("error JSON");
        assert_eq!(
            (got, answer["code"].as_str()),
            (status, Some(code)),
            "{body}: {answer}"
        );
    }
    assert_eq!(client.tree_size(), size);
    let (status, _, _) = post_with(
        &client.anonymous(),
        "/v1/exports",
        &[("Content-Type", "application/json")],
        b"{}",
        &[],
    );
    assert_eq!(status, 401);
}

const RUN_ID: &str = "0176a8c2-fe01-7439-87e6-56a1a1b4029f";

fn ol_event(event_type: &str, time: &str) -> Value {
    json!({
        "eventType": event_type,
        "eventTime": time,
        "run": {"runId": RUN_ID, "facets": {"nominalTime": {"_producer": "p", "_schemaURL": "s", "nominalStartTime": "2024-05-01T00:00:00Z"}}},
        "job": {"namespace": "airflow", "name": "daily_refunds", "facets": {"sql": {"_producer": "p", "_schemaURL": "s", "query": "select * from claims"}}},
        "inputs": [
            {"namespace": "postgres://db:5432", "name": "public.claims", "facets": {"schema": {"_producer": "p", "_schemaURL": "s", "fields": [{"name": "id", "type": "int"}]}}},
            {"namespace": "postgres://db:5432", "name": "public.policies"}
        ],
        "outputs": [
            {"namespace": "s3://warehouse", "name": "refunds/daily", "outputFacets": {"outputStatistics": {"_producer": "p", "_schemaURL": "s", "rowCount": 42}}}
        ],
        "producer": "https://github.com/OpenLineage/OpenLineage/tree/1.9.1/integration/airflow",
        "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
    })
}

fn post_event(client: &Client, event: &Value) -> (u16, Value) {
    let (status, _, body) = post_json(client, "/api/v1/lineage", event);
    (status, serde_json::from_slice(&body).expect("JSON answer"))
}

/// (role, kind, entity, id) of each record an ingestion answer lists.
fn mapped(answer: &Value) -> Vec<(String, String, String, String)> {
    answer["records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|r| {
            let s = |v: &Value| v.as_str().expect("string").to_owned();
            (
                s(&r["role"]),
                s(&r["kind"]),
                s(&r["entity"]),
                s(&r["receipt"]["id"]),
            )
        })
        .collect()
}

fn refs(client: &Client, id: &str) -> Vec<(String, String)> {
    let rec = client.get(&format!("/v1/records/{id}")).ok_json();
    rec["refs"]
        .as_array()
        .expect("refs")
        .iter()
        .map(|r| {
            (
                r["role"].as_str().expect("role").to_owned(),
                r["id"].as_str().expect("id").to_owned(),
            )
        })
        .collect()
}

#[test]
fn openlineage_run_events_become_records_and_refs() {
    let server = Server::start(&[]);
    let client = server.client();
    let size0 = client.tree_size();

    let (status, start) = post_event(&client, &ol_event("START", "2024-05-01T10:00:00.000Z"));
    assert_eq!(status, 200, "{start}");
    let start = mapped(&start);
    let roles: Vec<(&str, &str, &str)> = start
        .iter()
        .map(|(r, k, e, _)| (r.as_str(), k.as_str(), e.as_str()))
        .collect();
    let run_entity = format!("run:{RUN_ID}");
    assert_eq!(
        roles,
        [
            ("job", "job", "job:airflow/daily_refunds"),
            (
                "input",
                "dataset",
                "dataset:postgres://db:5432/public.claims"
            ),
            (
                "input",
                "dataset",
                "dataset:postgres://db:5432/public.policies"
            ),
            ("run", "run", run_entity.as_str()),
        ]
    );
    assert_eq!(client.tree_size(), size0 + 4);
    let (job, claims, policies, start_run) = (&start[0].3, &start[1].3, &start[2].3, &start[3].3);
    assert_eq!(
        refs(&client, start_run),
        [
            ("job".to_owned(), job.clone()),
            ("input".to_owned(), claims.clone()),
            ("input".to_owned(), policies.clone())
        ]
    );
    let run = client.get(&format!("/v1/records/{start_run}")).ok_json();
    assert_eq!(run["attributes"]["openlineage.eventType"], "START");
    assert_eq!(
        run["attributes"]["openlineage.runFacets"],
        json!(["nominalTime"])
    );
    assert_eq!(run["attributes"]["openlineage.jobFacets"], json!(["sql"]));
    // Facet contents live in the payload only, never in the leaf's attributes.
    assert_eq!(
        run["payload"]["jobFacets"]["sql"]["query"],
        "select * from claims"
    );
    assert!(!run["attributes"]
        .to_string()
        .contains("select * from claims"));

    let complete_event = ol_event("COMPLETE", "2024-05-01T10:05:00.000Z");
    let (status, complete) = post_event(&client, &complete_event);
    assert_eq!(status, 200, "{complete}");
    let complete = mapped(&complete);
    // Job and inputs exist now: the run's new version and the output's first.
    assert_eq!(complete.len(), 2, "{complete:?}");
    assert_eq!(
        (complete[0].0.as_str(), complete[0].2.as_str()),
        ("run", run_entity.as_str())
    );
    assert_eq!(
        (
            complete[1].0.as_str(),
            complete[1].1.as_str(),
            complete[1].2.as_str()
        ),
        ("output", "dataset", "dataset:s3://warehouse/refunds/daily")
    );
    let (complete_run, output) = (&complete[0].3, &complete[1].3);
    assert_eq!(
        refs(&client, complete_run),
        [
            ("job".to_owned(), job.clone()),
            ("input".to_owned(), claims.clone()),
            ("input".to_owned(), policies.clone())
        ]
    );
    assert_eq!(
        refs(&client, output),
        [("generated_by".to_owned(), complete_run.clone())]
    );
    let out = client.get(&format!("/v1/records/{output}")).ok_json();
    assert_eq!(
        out["attributes"]["openlineage.outputFacets"],
        json!(["outputStatistics"])
    );
    assert_eq!(
        out["payload"]["outputFacets"]["outputStatistics"]["rowCount"],
        42
    );
    let size = client.tree_size();
    assert_eq!(size, size0 + 6);

    // The client's retry: same answer, same log.
    let (status, again) = post_event(&client, &complete_event);
    assert_eq!(status, 200, "{again}");
    assert_eq!(mapped(&again), complete);
    assert_eq!(client.tree_size(), size);

    // gzip bodies, as the OpenLineage HTTP transport sends with compression on.
    let running =
        serde_json::to_vec(&ol_event("RUNNING", "2024-05-01T10:02:00.000Z")).expect("JSON");
    let (status, _, body) = post_with(
        &client,
        "/api/v1/lineage",
        &[
            ("Content-Type", "application/json"),
            ("Content-Encoding", "gzip"),
        ],
        &gzip(&running),
        &[],
    );
    let answer: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(status, 200, "{answer}");
    assert_eq!(mapped(&answer).len(), 1);
    assert_eq!(client.tree_size(), size + 1);

    // Malformed events: 400 naming the problem, nothing appended.
    let size = client.tree_size();
    let mut no_uuid = ol_event("START", "2024-05-01T11:00:00Z");
    no_uuid["run"]["runId"] = "run-1".into();
    let mut no_job = ol_event("START", "2024-05-01T11:00:00Z");
    no_job.as_object_mut().expect("object").remove("job");
    for (event, says) in [
        (no_uuid, "run.runId \"run-1\" is not a UUID"),
        (no_job, "missing field `job`"),
        (
            json!({"eventTime": "2024-05-01T11:00:00Z", "producer": "p", "dataset": {"namespace": "n", "name": "d"}}),
            "it is a DatasetEvent",
        ),
        (json!([1, 2]), "an OpenLineage event is a JSON object"),
    ] {
        let (status, answer) = post_event(&client, &event);
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["code"], "invalid_openlineage_event");
        assert!(
            answer["message"].as_str().expect("message").contains(says),
            "{answer}"
        );
    }
    let (status, _, _) = post_with(
        &client,
        "/api/v1/lineage",
        &[("Content-Type", "application/json")],
        b"{not json",
        &[],
    );
    assert_eq!(status, 400);
    assert_eq!(client.tree_size(), size);
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import gzip, sys; sys.stdout.buffer.write(gzip.compress(sys.stdin.buffer.read()))",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("cannot run python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(data)
        .expect("write to gzip");
    let out = child.wait_with_output().expect("gzip");
    assert!(out.status.success());
    assert_eq!(out.stdout.get(..2), Some(&[0x1f, 0x8b][..]), "not gzip");
    out.stdout
}
