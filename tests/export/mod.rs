//! `provledger export` and `provledger verify-bundle` (issue 4), through the real binary: a
//! realistic log written over HTTP (claims as inputs, a model, two policy versions, decisions
//! citing them, a human approval, an output), exported in every scope and verified; every kind
//! of tampering caught with the message that names it; a bundle made at size N proven against a
//! later checkpoint with a consistency proof fetched from the server; and the Python verifier
//! printed in docs/export-format.md, run on the same bundles, agreeing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::common::{assert_verifies, bin, describe, Receipt, Server};

/// The top-level fields of a bundle, in the order the format requires.
const FIELDS: [&str; 8] = [
    "format",
    "version",
    "scope",
    "checkpoint",
    "keys",
    "records",
    "manifest",
    "manifest_signature",
];

struct Scenario {
    server: Server,
    /// Receipt by record name.
    receipts: HashMap<&'static str, Receipt>,
    /// The log's verifier key, as served.
    vkey: String,
    dir: tempfile::TempDir,
}

impl Scenario {
    /// Appends the scenario, one group commit per step, and stops the server (export is
    /// offline).
    fn new() -> Scenario {
        let server = Server::start(&[]);
        let mut receipts = HashMap::new();
        let agent = json!({"type": "agent", "id": "claims-bot"});
        let step = |receipts: &mut HashMap<_, _>, records: Vec<(&'static str, Value)>| {
            let (names, bodies): (Vec<_>, Vec<_>) = records.into_iter().unzip();
            for (name, r) in names.into_iter().zip(server.append_all(&bodies)) {
                receipts.insert(name, Receipt::from_json(&r));
            }
            std::thread::sleep(std::time::Duration::from_millis(3));
        };
        step(
            &mut receipts,
            vec![
                (
                    "claim-1",
                    json!({"kind": "input", "tenant": "acme", "entity": "claim:1", "actor": agent, "classification": "pii", "payload": {"customer": "C-17", "amount": 120.5, "text": "screen broken on arrival"}}),
                ),
                (
                    "claim-2",
                    json!({"kind": "input", "tenant": "acme", "entity": "claim:2", "actor": agent, "payload": {"customer": "C-9", "amount": 80, "text": "parcel three weeks late"}}),
                ),
                (
                    "model",
                    json!({"kind": "model", "tenant": "acme", "entity": "model:fraud", "actor": {"type": "service", "id": "model-registry"}, "attributes": {"name": "fraud-detector", "version": "3.1", "digest": "sha256:9f2c"}}),
                ),
                (
                    "policy-v1",
                    json!({"kind": "policy", "tenant": "acme", "entity": "policy:refunds", "actor": {"type": "human", "id": "ana@acme"}, "attributes": {"policy_version": "1"}, "payload": {"auto_refund_max": 100}}),
                ),
            ],
        );
        step(
            &mut receipts,
            vec![(
                "policy-v2",
                json!({"kind": "policy", "tenant": "acme", "entity": "policy:refunds", "actor": {"type": "human", "id": "ana@acme"}, "attributes": {"policy_version": "2"}, "payload": {"auto_refund_max": 150}}),
            )],
        );
        let claim_1 = receipts["claim-1"].id.clone();
        let claim_2 = receipts["claim-2"].id.clone();
        step(
            &mut receipts,
            vec![
                (
                    "decision-1",
                    json!({"kind": "decision", "tenant": "acme", "entity": "decision:claim:1", "actor": agent, "refs": [{"role": "input", "ref": claim_1}, {"role": "model", "ref": "model:fraud"}, {"role": "policy", "ref": "policy:refunds"}], "payload": {"refund": true, "score": 0.07}}),
                ),
                (
                    "decision-2",
                    json!({"kind": "decision", "tenant": "acme", "entity": "decision:claim:2", "actor": agent, "refs": [{"role": "input", "ref": claim_2}, {"role": "model", "ref": "model:fraud"}, {"role": "policy", "ref": "policy:refunds"}], "payload": {"refund": false, "score": 0.81}}),
                ),
            ],
        );
        let decision_1 = receipts["decision-1"].id.clone();
        step(
            &mut receipts,
            vec![(
                "approval",
                json!({"kind": "approval", "tenant": "acme", "entity": "approval:claim:1", "actor": {"type": "human", "id": "bob@acme"}, "refs": [{"role": "parent", "ref": decision_1}], "payload": {"approved": true, "note": "photo evidence attached"}}),
            )],
        );
        let approval = receipts["approval"].id.clone();
        step(
            &mut receipts,
            vec![(
                "output",
                json!({"kind": "output", "tenant": "acme", "entity": "refund:claim:1", "actor": agent, "refs": [{"role": "parent", "ref": decision_1}, {"role": "approval", "ref": approval}], "payload": {"refunded": 120.5}}),
            )],
        );
        step(
            &mut receipts,
            vec![(
                "globex",
                json!({"kind": "input", "tenant": "globex", "entity": "claim:1", "actor": agent, "payload": {"x": 1}}),
            )],
        );
        let vkey = server
            .get("/v1/key")
            .text()
            .lines()
            .next()
            .expect("a verifier key")
            .to_owned();
        let mut scenario = Scenario {
            server,
            receipts,
            vkey,
            dir: tempfile::tempdir().expect("tempdir"),
        };
        scenario.server.stop();
        scenario
    }

    fn index(&self, name: &str) -> u64 {
        self.receipts[name].index
    }

    fn id(&self, name: &str) -> &str {
        &self.receipts[name].id
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `provledger export --data-dir <data> ARGS --out <name>`; asserts success.
    fn export(&self, name: &str, args: &[&str]) -> PathBuf {
        let out = self.path(name);
        let run = self.try_export(&out, args);
        assert!(
            run.status.success(),
            "export {args:?} failed:\n{}",
            describe(&run)
        );
        out
    }

    fn try_export(&self, out: &Path, args: &[&str]) -> Output {
        Command::new(bin())
            .arg("export")
            .arg("--data-dir")
            .arg(self.server.data_dir())
            .args(args)
            .arg("--out")
            .arg(out)
            .stdin(Stdio::null())
            .output()
            .expect("cannot run provledger export")
    }

    /// `provledger verify-bundle FILE --key <the log's key> EXTRA`.
    fn verify(&self, file: &Path, extra: &[&str]) -> Output {
        verify_bundle(file, &["--key", &self.vkey], extra)
    }

    /// Asserts that the bundle verifies with the log's key; returns stdout.
    fn assert_ok(&self, file: &Path) -> String {
        let out = self.verify(file, &[]);
        assert!(
            out.status.success(),
            "verify-bundle failed:\n{}",
            describe(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Asserts that verify-bundle fails on `bundle` after `change`, naming the problem.
    fn assert_caught(
        &self,
        bundle: &Path,
        what: &str,
        change: impl FnOnce(&mut Value),
        want: &str,
    ) {
        let file = self.path(&format!("tampered-{}.json", what.replace(' ', "-")));
        std::fs::write(&file, edit(bundle, change)).expect("write the tampered bundle");
        let out = self.verify(&file, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{what}: verify-bundle must fail:\n{}",
            describe(&out)
        );
        assert!(
            stderr.contains(want),
            "{what}: expected {want:?} in the error:\n{}",
            describe(&out)
        );
    }
}

fn verify_bundle(file: &Path, keys: &[&str], extra: &[&str]) -> Output {
    Command::new(bin())
        .arg("verify-bundle")
        .arg(file)
        .args(keys)
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("cannot run provledger verify-bundle")
}

/// Parses a bundle, applies `change`, and writes it back in bundle field order.
fn edit(bundle: &Path, change: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut v: Value =
        serde_json::from_slice(&std::fs::read(bundle).expect("read the bundle")).expect("JSON");
    change(&mut v);
    let mut out = b"{".to_vec();
    for (i, name) in FIELDS.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend(serde_json::to_vec(name).expect("encodable"));
        out.push(b':');
        out.extend(serde_json::to_vec(&v[*name]).expect("encodable"));
    }
    out.push(b'}');
    out
}

fn read(bundle: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(bundle).expect("read the bundle")).expect("JSON")
}

/// Flips the lowest bit of byte `at` of a base64 value.
fn flip(v: &mut Value, at: usize) {
    let mut bytes = B64
        .decode(v.as_str().expect("a base64 string"))
        .expect("base64");
    bytes[at] ^= 1;
    *v = Value::String(B64.encode(bytes));
}

/// Integration time of a record, from the leaf as the server decodes it.
fn time_of(server: &Server, id: &str) -> u64 {
    server.get(&format!("/v1/records/{id}")).ok_json()["time"]
        .as_u64()
        .expect("time")
}

#[test]
fn every_scope_exports_and_verifies() {
    let mut s = Scenario::new();

    let entity = s.export(
        "entity.json",
        &["--entity", "policy:refunds", "--tenant", "acme"],
    );
    let out = s.assert_ok(&entity);
    assert!(out.starts_with("ok: 2 records of test.example/log (every version of entity \"policy:refunds\" of tenant \"acme\")"), "{out}");
    assert!(out.contains("payloads: 2 checked"), "{out}");
    assert!(
        out.contains(&format!("signed by trusted key {}", s.vkey)),
        "{out}"
    );
    let records = read(&entity)["records"].clone();
    assert_eq!(records[0]["index"], s.index("policy-v1"));
    assert_eq!(records[1]["payload"], json!({"auto_refund_max": 150}));

    let decisions = s.export(
        "decisions.json",
        &[
            "--from-index",
            &s.index("policy-v2").to_string(),
            "--to-index",
            "100",
            "--kind",
            "decision",
        ],
    );
    let out = s.assert_ok(&decisions);
    assert!(out.starts_with("ok: 2 records"), "{out}");
    assert!(
        out.contains("refs: 0 between records of the bundle, 6 to 4 records outside it"),
        "{out}"
    );

    // The server is stopped for the exports; it answers record reads when restarted.
    s.server.restart();
    let from = time_of(&s.server, s.id("policy-v2"));
    let to = time_of(&s.server, s.id("output"));
    s.server.stop();
    let window = s.export(
        "window.json",
        &[
            "--from-time",
            &from.to_string(),
            "--to-time",
            &to.to_string(),
            "--tenant",
            "acme",
        ],
    );
    let out = s.assert_ok(&window);
    assert!(
        out.starts_with("ok: 4 records"),
        "policy v2, two decisions, the approval: {out}"
    );

    let lineage = s.export(
        "lineage.json",
        &["--record", s.id("output"), "--depth", "5"],
    );
    let out = s.assert_ok(&lineage);
    assert!(
        out.starts_with("ok: 6 records"),
        "output, approval, decision 1, claim 1, model, policy v2: {out}"
    );
    assert!(
        out.contains("refs: 6 between records of the bundle, 0 to 0 records outside it"),
        "{out}"
    );
    let indexes: Vec<u64> = read(&lineage)["records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|r| r["index"].as_u64().expect("index"))
        .collect();
    let mut want: Vec<u64> = [
        "claim-1",
        "model",
        "policy-v2",
        "decision-1",
        "approval",
        "output",
    ]
    .iter()
    .map(|n| s.index(n))
    .collect();
    want.sort_unstable();
    assert_eq!(indexes, want);

    let two = s.export(
        "two.json",
        &[
            "--record",
            s.id("decision-1"),
            "--record",
            s.id("decision-2"),
        ],
    );
    let out = s.assert_ok(&two);
    assert!(out.starts_with("ok: 2 records"), "{out}");

    // Without --key the bundle's own key is used, and the output says it proves nothing about
    // who made the bundle.
    let out = verify_bundle(&lineage, &[], &[]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("WARNING: signed by"),
        "{}",
        describe(&out)
    );

    // Exporting left the data directory intact.
    assert_verifies(&s.server.data_dir());
}

#[test]
fn every_kind_of_tampering_is_caught_with_the_right_message() {
    let s = Scenario::new();
    let bundle = s.export(
        "lineage.json",
        &["--record", s.id("output"), "--depth", "5"],
    );
    s.assert_ok(&bundle);
    let decision = s.index("decision-1");
    // Records are in index order: claim 1, model, policy v2, decision 1, approval, output.
    let at = 3;
    let record = format!("record {decision} (position {at} in the bundle): ");

    s.assert_caught(
        &bundle,
        "leaf byte",
        |v| flip(&mut v["records"][at]["leaf"], 60),
        &format!("{record}its leaf and inclusion proof do not lead to the checkpoint's root"),
    );
    s.assert_caught(
        &bundle,
        "payload",
        |v| v["records"][at]["payload"]["refund"] = json!(false),
        &format!("{record}its payload does not match the commitment in its leaf"),
    );
    s.assert_caught(
        &bundle,
        "proof hash",
        |v| flip(&mut v["records"][at]["inclusion_proof"][0], 31),
        &format!("{record}its leaf and inclusion proof do not lead to the checkpoint's root"),
    );
    s.assert_caught(
        &bundle,
        "checkpoint",
        |v| {
            let note = v["checkpoint"].as_str().expect("checkpoint").to_owned();
            let (body, sigs) = note.split_once("\n\n").expect("a signed note");
            let mut lines: Vec<String> = body.lines().map(str::to_owned).collect();
            let mut root = B64.decode(&lines[2]).expect("root");
            root[0] ^= 1;
            lines[2] = B64.encode(root);
            v["checkpoint"] = json!(format!("{}\n\n{sigs}", lines.join("\n")));
        },
        "the checkpoint does not verify: signature by known key test.example/log",
    );
    s.assert_caught(
        &bundle,
        "manifest",
        |v| {
            let hex = v["manifest"]["records_sha256"]
                .as_str()
                .expect("hex")
                .to_owned();
            let flipped = if hex.starts_with('0') { "1" } else { "0" };
            v["manifest"]["records_sha256"] = json!(format!("{flipped}{}", &hex[1..]));
        },
        "the manifest signature does not verify with the log key",
    );
    s.assert_caught(
        &bundle,
        "manifest signature",
        |v| flip(&mut v["manifest_signature"], 0),
        "the manifest signature does not verify with the log key",
    );
    s.assert_caught(
        &bundle,
        "removed record",
        |v| {
            v["records"].as_array_mut().expect("records").remove(at);
        },
        "the signed manifest covers 6 records but the bundle holds 5: records were removed or added after it was signed",
    );

    // A swapped key: another key of the same name, from another log.
    let mut impostor = Server::start(&[]);
    let other_key = impostor
        .get("/v1/key")
        .text()
        .lines()
        .next()
        .expect("key")
        .to_owned();
    impostor.stop();
    assert_ne!(other_key, s.vkey);
    s.assert_caught(
        &bundle,
        "swapped key",
        |v| v["keys"] = json!([other_key]),
        "include none of the trusted keys",
    );
    let swapped = s.path("tampered-swapped-key.json");
    let out = verify_bundle(&swapped, &[], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("the checkpoint does not verify: note has no signature from a known key"),
        "{}",
        describe(&out)
    );

    // A whole bundle made by the impostor log verifies only on its own terms.
    impostor.restart();
    impostor.append(
        &json!({"kind": "input", "entity": "claim:1", "actor": {"type": "agent", "id": "x"}}),
    );
    impostor.stop();
    let forged = s.path("forged.json");
    let run = Command::new(bin())
        .args(["export", "--entity", "claim:1", "--data-dir"])
        .arg(impostor.data_dir())
        .arg("--out")
        .arg(&forged)
        .output()
        .expect("run export");
    assert!(run.status.success(), "{}", describe(&run));
    let out = s.verify(&forged, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("include none of the trusted keys"));
}

#[test]
fn a_bundle_made_at_size_n_verifies_against_a_later_checkpoint() {
    let mut s = Scenario::new();
    let bundle = s.export(
        "lineage.json",
        &["--record", s.id("approval"), "--depth", "2"],
    );
    let n = read(&bundle)["manifest"]["tree_size"]
        .as_u64()
        .expect("tree size");

    s.server.restart();
    for i in 0..5 {
        s.server.append(&crate::common::record(
            "input",
            &format!("claim:{}", 100 + i),
            i,
        ));
    }
    let later = s.server.get("/checkpoint").text();
    let m = s.server.tree_size();
    assert!(m > n);
    let proof = s
        .server
        .get(&format!("/v1/proofs/consistency?from={n}&to={m}"))
        .ok_json();
    let checkpoint_file = s.path("later.checkpoint");
    let proof_file = s.path("consistency.json");
    std::fs::write(&checkpoint_file, &later).expect("write");
    std::fs::write(&proof_file, proof.to_string()).expect("write");
    let args = [
        "--checkpoint",
        checkpoint_file.to_str().expect("utf-8 path"),
        "--consistency-proof",
        proof_file.to_str().expect("utf-8 path"),
    ];
    let out = s.verify(&bundle, &args);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!(
            "consistent with the later checkpoint of tree size {m}"
        )),
        "{}",
        describe(&out)
    );

    // A damaged proof, and a proof for other sizes, prove nothing.
    let mut bad = proof.clone();
    flip(&mut bad["hashes"][0], 0);
    std::fs::write(&proof_file, bad.to_string()).expect("write");
    let out = s.verify(&bundle, &args);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "the bundle's checkpoint is not proven to be a prefix of the later checkpoint"
        ),
        "{}",
        describe(&out)
    );
    let other = s
        .server
        .get(&format!("/v1/proofs/consistency?from={}&to={m}", n - 1))
        .ok_json();
    std::fs::write(&proof_file, other.to_string()).expect("write");
    let out = s.verify(&bundle, &args);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains(&format!("fetch /v1/proofs/consistency?from={n}&to={m}")),
        "{}",
        describe(&out)
    );
}

#[test]
fn export_refuses_a_running_server_and_unusable_flags() {
    let mut s = Scenario::new();
    let out_file = s.path("x.json");
    let fails = |s: &Scenario, args: &[&str], want: &str| {
        let out = s.try_export(&out_file, args);
        assert!(
            !out.status.success(),
            "{args:?} must fail:\n{}",
            describe(&out)
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(want),
            "{args:?}: expected {want:?}:\n{}",
            describe(&out)
        );
    };
    fails(
        &s,
        &["--entity", "policy:refunds", "--format", "PROV-JSON"],
        "export format \"PROV-JSON\" is unknown: use bundle, prov-json or dsse",
    );
    fails(&s, &[], "choose what to export");
    fails(&s, &["--record", "abc"], "is not a record id");
    fails(&s, &["--record", &"ab".repeat(32)], "is not in the log");
    fails(
        &s,
        &["--entity", "policy:refunds"],
        "has no versions in tenant \"default\"",
    );
    fails(
        &s,
        &["--entity", "policy:refunds", "--record", s.id("output")],
        "cannot be used with",
    );
    s.server.restart();
    fails(
        &s,
        &["--entity", "policy:refunds", "--tenant", "acme"],
        "in use by another process",
    );
    assert!(!out_file.exists(), "a failed export leaves no file");
}

/// Fails (never skips) when python3, `cryptography` or `rfc8785` is missing: CI installs them.
#[test]
fn the_documented_python_verifier_agrees() {
    let s = Scenario::new();
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/export-format.md"),
    )
    .expect("docs/export-format.md");
    let start = doc
        .find("```python\n\"\"\"Verify a provledger export bundle")
        .expect("the reference verifier in docs/export-format.md");
    let code = &doc[start + "```python\n".len()..];
    let code = &code[..code.find("\n```").expect("the end of the code block")];
    let script = s.path("verify_bundle.py");
    std::fs::write(&script, code).expect("write the script");
    let python_with = |bundle: &Path, vkey: &str| {
        let out = Command::new("python3")
            .arg(&script)
            .arg(bundle)
            .arg(vkey)
            .output()
            .unwrap_or_else(|e| panic!("python3 is required for this test: {e}"));
        assert!(
            matches!(out.status.code(), Some(0 | 1)),
            "the Python verifier itself failed (pip install cryptography rfc8785):\n{}",
            describe(&out)
        );
        (
            out.status.code() == Some(0),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let python = |bundle: &Path| python_with(bundle, &s.vkey);

    // The worked examples of the document (version 2, and the version 1 one) verify with both
    // verifiers and their keys, and fail with both once a byte of the manifest changes.
    let section = &doc[doc.find("## Worked example").expect("the worked example")..];
    for (heading, key_before) in [
        (
            "## Worked example",
            "The verifier key, obtained from the operator:\n`",
        ),
        ("### Version 1 example", "under the key\n`"),
    ] {
        let part = &section[section.find(heading).expect(heading)..];
        let json_at = part.find("```json\n").expect("the example bundle") + "```json\n".len();
        let bundle = &part[json_at..json_at + part[json_at..].find("```").expect("its end")];
        let key_at = part.find(key_before).expect("the example's key") + key_before.len();
        let vkey = &part[key_at..key_at + part[key_at..].find('`').expect("the key's end")];
        let file = s.path("example.json");
        std::fs::write(&file, bundle).expect("write the example");
        let out = verify_bundle(&file, &["--key", vkey], &[]);
        assert!(out.status.success(), "{heading}: {}", describe(&out));
        let (ok, stdout) = python_with(&file, vkey);
        assert!(
            ok && stdout.starts_with("OK: 3 records"),
            "{heading}: {stdout}"
        );
        let tampered = bundle.replacen("\"tree_size\":4", "\"tree_size\":5", 1);
        assert_ne!(
            tampered, bundle,
            "{heading}: the manifest holds tree_size 4"
        );
        std::fs::write(&file, tampered).expect("write the tampered example");
        let out = verify_bundle(&file, &["--key", vkey], &[]);
        assert_eq!(out.status.code(), Some(1), "{heading}: {}", describe(&out));
        let (ok, stdout) = python_with(&file, vkey);
        assert!(!ok && stdout.starts_with("FAIL: "), "{heading}: {stdout}");
    }

    for (name, args) in [
        (
            "entity.json",
            vec!["--entity", "policy:refunds", "--tenant", "acme"],
        ),
        (
            "range.json",
            vec!["--from-index", "0", "--kind", "decision"],
        ),
        (
            "lineage.json",
            vec!["--record", s.id("output"), "--depth", "5"],
        ),
    ] {
        let bundle = s.export(name, &args);
        let (ok, stdout) = python(&bundle);
        assert!(ok, "{name}: {stdout}");
        assert!(stdout.starts_with("OK: "), "{stdout}");
    }
    let lineage = s.path("lineage.json");
    for (what, change) in [
        (
            "leaf",
            Box::new(|v: &mut Value| flip(&mut v["records"][3]["leaf"], 60))
                as Box<dyn Fn(&mut Value)>,
        ),
        (
            "payload",
            Box::new(|v: &mut Value| v["records"][3]["payload"]["score"] = json!(0.5)),
        ),
        (
            "manifest",
            Box::new(|v: &mut Value| v["manifest"]["tree_size"] = json!(1)),
        ),
        (
            "removed",
            Box::new(|v: &mut Value| {
                v["records"].as_array_mut().expect("records").remove(2);
            }),
        ),
    ] {
        let file = s.path(&format!("py-{what}.json"));
        std::fs::write(&file, edit(&lineage, change)).expect("write");
        let (ok, stdout) = python(&file);
        assert!(!ok && stdout.starts_with("FAIL: "), "{what}: {stdout}");
        assert_eq!(s.verify(&file, &[]).status.code(), Some(1), "{what}");
    }
}
