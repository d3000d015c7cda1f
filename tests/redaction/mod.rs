//! Issue 5, redaction policies: a policy file configures per-field rules (drop, mask, tokenize,
//! keep) applied at ingress; the policy is recorded in the log as a `policy` record once per
//! version, digest and tokenization key; every leaf names the policy that scrubbed it; no raw
//! value reaches any file under the data dir.

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::common::{b64, bin, files_under, Server};

/// Raw values of the test payloads that must not survive ingress.
const EMAIL: &str = "ana.lima@example.com";
const OTHER_EMAIL: &str = "bo.silva@example.com";
const SSN: &str = "123-45-6789";
const PHONE: &str = "+14155552671";
const NAME: &str = "Ana Lima";
const CARD_HOLDER: &str = "Bo Silva";

fn policy(version: &str) -> String {
    format!(
        r#"# Test policy.
version = "{version}"

[[rules]]
field = "/support_address"
action = "keep"

[[rules]]
field = "/customer/email"
action = "tokenize"

[[rules]]
field = "/customer/ssn"
action = "drop"

[[rules]]
field = "items.holder"
action = "mask"

[[rules]]
field = "/customer/name"
action = "mask"
classifications = ["pii"]
"#
    )
}

fn write_policy(dir: &Path, version: &str) -> String {
    let path = dir.join("redaction.toml");
    std::fs::write(&path, policy(version)).expect("write the policy file");
    path.display().to_string()
}

fn rec(entity: &str, classification: &str, payload: Value) -> Value {
    json!({
        "kind": "input",
        "entity": entity,
        "actor": {"type": "agent", "id": "intake"},
        "classification": classification,
        "payload": payload,
    })
}

/// SHA-256 of a JSON value's RFC 8785 form; serde_json writes sorted keys and compact output,
/// which is RFC 8785 for the ASCII strings, integers, arrays and objects used here.
fn jcs_sha256_hex(v: &Value) -> String {
    hex::encode(Sha256::digest(serde_json::to_vec(v).expect("JSON")))
}

/// The leaf's `redaction` map, decoded with rmpv (not the server's code): version, digest, policy.
fn leaf_redaction(leaf: &[u8]) -> (String, Vec<u8>, Option<Vec<u8>>) {
    let v = rmpv::decode::read_value(&mut &leaf[..]).expect("leaf is MessagePack");
    let map = v.as_map().expect("leaf is a map");
    let (last_key, stamp) = map.last().expect("leaf has keys");
    assert_eq!(
        last_key.as_str(),
        Some("redaction"),
        "redaction is the last leaf key"
    );
    let stamp = stamp.as_map().expect("redaction is a map");
    let keys: Vec<&str> = stamp.iter().map(|(k, _)| k.as_str().unwrap()).collect();
    assert_eq!(keys, ["version", "digest", "policy"]);
    let version = stamp[0].1.as_str().expect("version is a string").to_owned();
    let digest = stamp[1].1.as_slice().expect("digest is bin").to_vec();
    let policy = match &stamp[2].1 {
        rmpv::Value::Nil => None,
        p => Some(p.as_slice().expect("policy is bin").to_vec()),
    };
    (version, digest, policy)
}

#[test]
fn a_policy_file_drops_masks_tokenizes_and_keeps_and_is_recorded_once_per_version() {
    let conf = tempfile::tempdir().expect("tempdir");
    let policy_path = write_policy(conf.path(), "acme-1");
    let mut server = Server::start(&["--redaction-policy", &policy_path]);
    let client = server.client();
    assert_eq!(
        client.tree_size(),
        1,
        "the policy record is appended on first start"
    );

    let receipts = client.append_all(&[
        rec(
            "ticket:1",
            "pii",
            json!({
                "customer": {"email": EMAIL, "name": NAME, "ssn": SSN, "tier": "gold"},
                "support_address": "help@provledger.test",
                "note": format!("call {PHONE}"),
                "items": [{"holder": CARD_HOLDER, "sku": "A-1"}, {"sku": "B-2"}],
            }),
        ),
        rec(
            "ticket:2",
            "internal",
            json!({"customer": {"email": EMAIL, "tier": "silver"}}),
        ),
        rec(
            "ticket:3",
            "internal",
            json!({"customer": {"email": OTHER_EMAIL}}),
        ),
    ]);
    let get = |id: &Value| {
        client
            .get(&format!("/v1/records/{}", id.as_str().expect("id")))
            .ok_json()
    };
    let r1 = get(&receipts[0]["id"]);
    let r2 = get(&receipts[1]["id"]);
    let r3 = get(&receipts[2]["id"]);
    let token = r1["payload"]["customer"]["email"]
        .as_str()
        .expect("a token")
        .to_owned();
    assert!(
        token.starts_with("tok_")
            && token.len() == 36
            && token[4..].bytes().all(|b| b.is_ascii_hexdigit()),
        "{token}"
    );
    assert_eq!(
        r1["payload"],
        json!({
            "customer": {"email": token, "name": "[REDACTED:field]", "tier": "gold"},
            "support_address": "help@provledger.test",
            "note": "call [REDACTED:phone]",
            "items": [{"holder": "[REDACTED:field]", "sku": "A-1"}, {"sku": "B-2"}],
        })
    );
    assert_eq!(
        r2["payload"],
        json!({"customer": {"email": token, "tier": "silver"}}),
        "equal e-mails give equal tokens across records"
    );
    let other = r3["payload"]["customer"]["email"].as_str().expect("token");
    assert!(other.starts_with("tok_") && other != token, "{other}");

    // Every record names the policy; the policy record is in the log, holding the policy.
    let stamp = r1["redaction"].clone();
    assert_eq!(stamp["version"], "acme-1");
    let policy_id = stamp["policy"]
        .as_str()
        .expect("policy record id")
        .to_owned();
    assert_eq!(r2["redaction"], stamp);
    assert_eq!(r3["redaction"], stamp);
    let p = client.get(&format!("/v1/records/{policy_id}")).ok_json();
    assert_eq!(p["index"], 0);
    assert_eq!(p["kind"], "policy");
    assert_eq!(p["entity"], "redaction-policy");
    assert_eq!(p["tenant"], "default");
    assert_eq!(p["actor"], json!({"type": "service", "id": "provledger"}));
    let digest = jcs_sha256_hex(&p["payload"]);
    assert_eq!(stamp["digest"], digest.as_str());
    assert_eq!(p["attributes"]["version"], "acme-1");
    assert_eq!(p["attributes"]["digest"], format!("sha256:{digest}"));
    let key_id = p["attributes"]["token_key"].as_str().expect("key id");
    assert_eq!(key_id.len(), 16);
    assert_eq!(
        p["payload"],
        json!({
            "format": "provledger-redaction-policy/1",
            "detectors_revision": 2,
            "version": "acme-1",
            "detectors": ["secret", "email", "iban", "card", "national-id", "ip", "phone"],
            "rules": [
                {"field": "/support_address", "action": "keep", "classifications": []},
                {"field": "/customer/email", "action": "tokenize", "classifications": []},
                {"field": "/customer/ssn", "action": "drop", "classifications": []},
                {"field": "items.holder", "action": "mask", "classifications": []},
                {"field": "/customer/name", "action": "mask", "classifications": ["pii"]},
            ],
        })
    );
    // The policy record says its version too, without citing itself.
    assert_eq!(
        p["redaction"],
        json!({"version": "acme-1", "digest": digest, "policy": null})
    );
    // The leaf bytes hold the same, read independently.
    let (version, leaf_digest, leaf_policy) =
        leaf_redaction(&b64(r1["leaf"].as_str().expect("leaf")));
    assert_eq!(version, "acme-1");
    assert_eq!(hex::encode(leaf_digest), digest);
    assert_eq!(leaf_policy.map(hex::encode), Some(policy_id.clone()));

    // Clients cannot write to the policy entity.
    let refused = client.post_records(&json!({
        "kind": "policy", "entity": "redaction-policy", "actor": {"type": "human", "id": "mallory"},
        "attributes": {"version": "acme-1", "digest": format!("sha256:{digest}")},
    }));
    assert_eq!(refused.status, 400, "{}", refused.text());
    assert_eq!(refused.json()["code"], "invalid_record");
    assert!(
        refused.json()["message"]
            .as_str()
            .unwrap()
            .contains("record.entity: \"redaction-policy\" is reserved"),
        "{}",
        refused.text()
    );

    // Restart with the same policy: nothing appended, the same record cited.
    server.stop();
    server.restart();
    let client = server.client();
    assert_eq!(client.tree_size(), 4);
    let r4 = client.append(&rec(
        "ticket:4",
        "internal",
        json!({"customer": {"email": EMAIL}}),
    ));
    let r4 = client
        .get(&format!("/v1/records/{}", r4["id"].as_str().unwrap()))
        .ok_json();
    assert_eq!(r4["redaction"], stamp);
    assert_eq!(r4["payload"]["customer"]["email"], token.as_str());

    // A changed policy: a new version is appended at start and cited from then on.
    write_policy(conf.path(), "acme-2");
    server.stop();
    server.restart();
    let client = server.client();
    assert_eq!(client.tree_size(), 6);
    let r6 = client.append(&rec("ticket:6", "internal", json!({"n": 1})));
    let r6 = client
        .get(&format!("/v1/records/{}", r6["id"].as_str().unwrap()))
        .ok_json();
    assert_eq!(r6["redaction"]["version"], "acme-2");
    let policy2 = r6["redaction"]["policy"].as_str().unwrap().to_owned();
    assert_ne!(policy2, policy_id);
    let p2 = client.get(&format!("/v1/records/{policy2}")).ok_json();
    assert_eq!(p2["index"], 5);
    assert_eq!(p2["entity"], "redaction-policy");
    assert_eq!(p2["attributes"]["version"], "acme-2");
    assert_eq!(p2["attributes"]["token_key"], key_id, "same key, same id");
    assert_eq!(
        p2["attributes"]["digest"],
        format!("sha256:{}", jcs_sha256_hex(&p2["payload"]))
    );
    assert_ne!(r6["redaction"]["digest"], stamp["digest"]);

    // The tokenization key: created once, private, never logged.
    let key_path = server.data_dir().join("tokenization.key");
    let key_text = std::fs::read_to_string(&key_path).expect("tokenization.key");
    let key_hex = key_text.trim();
    assert_eq!(key_hex.len(), 64);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&key_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    server.stop();
    assert!(!server.log().contains(key_hex), "the key was logged");

    // No raw value from the payloads reached any file: store, journal, anything.
    let files = files_under(&server.data_dir());
    assert!(!files.is_empty());
    for file in files {
        let bytes = std::fs::read(&file).expect("read a data file");
        for raw in [EMAIL, OTHER_EMAIL, SSN, PHONE, NAME, CARD_HOLDER] {
            assert!(
                !bytes.windows(raw.len()).any(|w| w == raw.as_bytes()),
                "{raw:?} found in {}",
                file.display()
            );
        }
    }
}

#[test]
fn the_policy_can_come_from_the_config_file_and_the_builtin_one_is_not_recorded() {
    let conf = tempfile::tempdir().expect("tempdir");
    let policy_path = conf.path().join("p.json");
    std::fs::write(
        &policy_path,
        r#"{"version": "json-1", "detectors": ["email"], "rules": [{"field": "**.secret", "action": "drop"}]}"#,
    )
    .unwrap();
    let cfg = conf.path().join("provledger.toml");
    std::fs::write(
        &cfg,
        format!(
            "redaction_policy = {:?}\n",
            policy_path.display().to_string()
        ),
    )
    .unwrap();
    let server = Server::start(&["--config", cfg.to_str().unwrap()]);
    assert_eq!(server.tree_size(), 1);
    let r = server.append(&rec(
        "t:1",
        "internal",
        json!({"a": {"secret": "x", "mail": EMAIL, "ip": "10.1.2.3"}}),
    ));
    let got = server
        .get(&format!("/v1/records/{}", r["id"].as_str().unwrap()))
        .ok_json();
    assert_eq!(
        got["payload"],
        json!({"a": {"mail": "[REDACTED:email]", "ip": "10.1.2.3"}}),
        "only the e-mail detector is on"
    );
    assert_eq!(got["redaction"]["version"], "json-1");
    // GraphQL appends are scrubbed by the same policy.
    let body = json!({
        "query": "mutation($r: RecordInput!) { append(record: $r) { id } }",
        "variables": {"r": {
            "kind": "input", "entity": "t:2", "actor": {"type": "agent", "id": "intake"},
            "payload": {"b": [{"secret": "y", "mail": OTHER_EMAIL}]},
        }},
    });
    let answer = server
        .post("/graphql", "application/json", body.to_string().as_bytes())
        .ok_json();
    let id = answer["data"]["append"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{answer}"));
    let got = server.get(&format!("/v1/records/{id}")).ok_json();
    assert_eq!(got["payload"], json!({"b": [{"mail": "[REDACTED:email]"}]}));
    assert_eq!(got["redaction"]["version"], "json-1");
    // GraphQL shows the same stamp as REST.
    let body = json!({
        "query": "query($id: ID!) { record(id: $id) { redaction { version digest policy } } }",
        "variables": {"id": id},
    });
    let answer = server
        .post("/graphql", "application/json", body.to_string().as_bytes())
        .ok_json();
    assert_eq!(
        answer["data"]["record"]["redaction"], got["redaction"],
        "{answer}"
    );
    drop(server);

    // Without a policy: the built-in one, named in every leaf, with no policy record.
    let server = Server::start(&[]);
    let r = server.append(&rec("t:1", "internal", json!({"mail": EMAIL})));
    assert_eq!(r["index"], 0);
    let got = server
        .get(&format!("/v1/records/{}", r["id"].as_str().unwrap()))
        .ok_json();
    assert_eq!(got["payload"], json!({"mail": "[REDACTED:email]"}));
    assert_eq!(got["redaction"]["version"], "builtin-v1");
    assert_eq!(got["redaction"]["policy"], Value::Null);
    // The digest api.md gives for the built-in policy of the current detectors revision.
    let (current, _) = documented_builtin_digests();
    assert_eq!(got["redaction"]["digest"], current.as_str());
    assert!(server.data_dir().join("tokenization.key").exists());
}

/// `(current, revision 1)`: the built-in policy's digests in api.md's table of detector
/// revisions, each checked against the canonical JSON the table shows beside it.
fn documented_builtin_digests() -> (String, String) {
    let doc = crate::docs::read_doc("api.md");
    let section = crate::docs::section(&doc, "#### The policy in the log");
    let row = |first: &str| -> (Value, String) {
        let line = section
            .lines()
            .find(|l| l.starts_with(&format!("| {first} |")))
            .unwrap_or_else(|| panic!("api.md has no row {first:?} of detector revisions"));
        let cells: Vec<&str> = line.split('`').skip(1).step_by(2).collect();
        let [canonical, digest] = cells[..] else {
            panic!("row {first:?} should hold the canonical JSON and the digest: {line}")
        };
        let canonical: Value = serde_json::from_str(canonical).expect("canonical JSON");
        assert_eq!(jcs_sha256_hex(&canonical), digest, "{line}");
        (canonical, digest.to_owned())
    };
    let (current, current_digest) = row("2 (current)");
    let (first, first_digest) = row("1");
    assert_eq!(
        current["detectors_revision"],
        provledger_ledger::DETECTORS_REVISION
    );
    // Revision 1's form is the current one without the member that names the revision.
    let mut without = current.clone();
    without
        .as_object_mut()
        .unwrap()
        .remove("detectors_revision");
    assert_eq!(first, without);
    (current_digest, first_digest)
}

/// api.md's table of detector revisions and its overlap order are the built ones.
#[test]
fn api_md_names_the_built_detectors_revision_and_overlap_order() {
    let (current, _) = documented_builtin_digests();
    assert_eq!(
        current,
        hex::encode(provledger_ledger::Redactor::builtin().digest())
    );
    // "named after the first of `secret`, `email`, …, `phone`": PiiKind::ALL's order.
    let doc = crate::docs::read_doc("api.md");
    let text = doc
        .split_once("named after the first of ")
        .expect("overlap order")
        .1;
    let list = &text[..text.find(" (").expect("end of the list")];
    let named: Vec<&str> = list
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter_map(|w| w.strip_prefix('`')?.strip_suffix('`'))
        .collect();
    let built: Vec<&str> = provledger_ledger::PiiKind::ALL
        .iter()
        .map(|k| k.name())
        .collect();
    assert_eq!(named, built);
}

/// An invalid policy stops `serve` before anything is created, naming the file and the field
/// (or line).
#[test]
fn an_invalid_policy_file_stops_the_server_with_the_field_or_line_named() {
    let conf = tempfile::tempdir().expect("tempdir");
    let cases = [
        (
            "version = \"v1\"\n[[rules]]\nfield = \"a..b\"\naction = \"drop\"\n",
            "rules[0].field: \"a..b\" has an empty segment",
        ),
        (
            "version = \"v1\"\n[[rules]]\nfield = \"/a\"\naction = \"hash\"\n",
            "line 4, column 10",
        ),
        (
            "version = \"v1\"\ndetectors = [\"passport\"]\n",
            "detectors[0]: unknown detector \"passport\"",
        ),
    ];
    for (text, want) in cases {
        let path = conf.path().join("bad.toml");
        std::fs::write(&path, text).unwrap();
        let data = conf.path().join("data");
        let out = Command::new(bin())
            .arg("serve")
            .arg("--data-dir")
            .arg(&data)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--redaction-policy")
            .arg(&path)
            .output()
            .expect("run provledger serve");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(stderr.contains(want), "{want:?} not in {stderr}");
        assert!(stderr.contains("redaction policy"), "{stderr}");
        assert!(
            !data.exists(),
            "nothing is created before the policy parses"
        );
    }
}
