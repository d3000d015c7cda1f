//! Key rotation: a new key signs new checkpoints, old receipts and checkpoints still verify,
//! over HTTP and offline, and `provledger verify` follows the chain of rotation statements.

use provledger_signer::{verify_checkpoint, VerifierKey};
use serde_json::{json, Value};

use crate::common::{self, Client, Receipt, Server};

fn vkeys(client: &Client) -> Vec<String> {
    let resp = client.anonymous().get("/v1/key");
    assert_eq!(resp.status, 200);
    resp.text().lines().map(str::to_owned).collect()
}

fn verifies_with(checkpoint: &str, vkey: &str) -> bool {
    let key = VerifierKey::parse(vkey).expect("a verifier key");
    verify_checkpoint(checkpoint, &[key]).is_ok()
}

fn consistent(client: &Client, older: &Receipt, newer: &Receipt) {
    let proof = client
        .get(&format!(
            "/v1/proofs/consistency?from={}&to={}",
            older.tree_size, newer.tree_size
        ))
        .ok_json();
    let hashes = common::hashes(&proof["hashes"]);
    let (a, b) = (older.check(), newer.check());
    assert!(
        common::merkle::verify_consistency(a.size, b.size, &hashes, &a.root, &b.root),
        "checkpoints across the rotation are not consistent"
    );
}

#[test]
fn a_rotated_key_signs_new_checkpoints_and_old_receipts_still_verify() {
    let mut server = Server::start(&[]);
    let admin = server.client();
    let first_key = vkeys(&admin);
    assert_eq!(first_key.len(), 1);
    let before = Receipt::from_json(&admin.append(&common::record("input", "doc:k", 1)));

    // Only an admin may rotate.
    let auditor = admin.with_token(
        admin
            .post(
                "/v1/tokens",
                "application/json",
                br#"{"role": "auditor", "tenant": "default"}"#,
            )
            .json()["token"]
            .as_str()
            .expect("token"),
    );
    assert_eq!(
        auditor
            .post("/v1/keys/rotate", "application/json", b"")
            .status,
        403
    );

    let rotated = admin
        .post("/v1/keys/rotate", "application/json", b"")
        .ok_json();
    let second = rotated["vkey"].as_str().expect("vkey").to_owned();
    assert_ne!(second, first_key[0]);
    assert_eq!(vkeys(&admin), vec![second.clone(), first_key[0].clone()]);

    // New checkpoints are signed by the new key only; the old receipt by the old key.
    let after = Receipt::from_json(&admin.append(&common::record("input", "doc:k", 2)));
    after.check();
    assert!(verifies_with(&after.checkpoint, &second));
    assert!(!verifies_with(&after.checkpoint, &first_key[0]));
    assert!(verifies_with(&before.checkpoint, &first_key[0]));
    consistent(&admin, &before, &after);

    // /v1/keys: validity ranges, the rotation statement, current first.
    let keys = admin.anonymous().get("/v1/keys").ok_json();
    let list = keys["keys"].as_array().expect("keys");
    assert_eq!(list.len(), 2, "{keys}");
    assert_eq!(list[0]["current"], true);
    assert_eq!(list[0]["vkey"], second.as_str());
    let at = list[0]["first_size"].as_u64().expect("first_size");
    assert_eq!(list[1]["last_size"].as_u64(), Some(at));
    assert!(before.tree_size <= at && at < after.tree_size);
    let statement = list[0]["rotation"].as_str().expect("rotation statement");
    for signer in [&first_key[0], &second] {
        let key = VerifierKey::parse(signer).expect("a verifier key");
        assert!(
            provledger_signer::open_note(statement, &[key]).is_ok(),
            "the rotation statement is not signed by {signer}: {statement}"
        );
    }

    // The rotation is in the log, as a version of the entity `log-key`.
    let answer = admin.post(
        "/graphql",
        "application/json",
        json!({"query": r#"{ records(filter: {kind: "key-rotation"}) { edges { node { entity attributes } } } }"#})
            .to_string()
            .as_bytes(),
    );
    let edges = answer.ok_json()["data"]["records"]["edges"].clone();
    assert_eq!(edges.as_array().map(Vec::len), Some(1), "{edges}");
    assert_eq!(edges[0]["node"]["entity"], "log-key");
    assert_eq!(edges[0]["node"]["attributes"]["size"], json!(at));

    // A restart signs with the new key; offline verification trusts the old checkpoints
    // through the rotation statement.
    server.stop();
    common::assert_verifies(&server.data_dir());
    server.restart();
    let admin = server.client();
    let later = Receipt::from_json(&admin.append(&common::record("input", "doc:k", 3)));
    assert!(verifies_with(&later.checkpoint, &second));

    // Retiring the old key stops publishing it; the current key cannot be retired.
    let old_hash = first_key[0].split('+').nth(1).expect("hash").to_owned();
    let retired = admin
        .post(
            &format!("/v1/keys/{old_hash}/retire"),
            "application/json",
            b"",
        )
        .ok_json();
    assert!(retired["retired"].as_u64().is_some(), "{retired}");
    assert_eq!(vkeys(&admin), vec![second.clone()]);
    let current_hash = second.split('+').nth(1).expect("hash");
    let refused = admin.post(
        &format!("/v1/keys/{current_hash}/retire"),
        "application/json",
        b"",
    );
    assert_eq!(refused.status, 409, "{}", refused.text());
    let unknown = admin.post("/v1/keys/00000000/retire", "application/json", b"");
    assert_eq!(unknown.status, 409, "{}", unknown.text());
}

#[test]
fn offline_rotation_and_an_auditor_holding_only_the_first_key() {
    let mut server = Server::start(&[]);
    let admin = server.client();
    let first = vkeys(&admin).remove(0);
    let receipt: Value = admin.append(&common::record("input", "doc:o", 1));
    let before = Receipt::from_json(&receipt);
    server.stop();

    let dir = server.data_dir();
    let key_cmd = |args: &[&str]| {
        std::process::Command::new(common::bin())
            .arg("key")
            .args(args)
            .arg("--data-dir")
            .arg(&dir)
            .output()
            .expect("run provledger key")
    };
    let out = key_cmd(&["rotate", "--actor", "human:alice"]);
    assert!(out.status.success(), "{}", common::describe(&out));
    let second = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_ne!(second, first);
    let printed = key_cmd(&[]);
    assert_eq!(String::from_utf8_lossy(&printed.stdout).trim(), second);
    let listed = String::from_utf8_lossy(&key_cmd(&["list"]).stdout).to_string();
    assert!(
        listed.lines().next().is_some_and(|l| l.contains("current")),
        "{listed}"
    );
    assert_eq!(listed.lines().count(), 2, "{listed}");

    // An auditor who only ever had the first key still verifies the whole data directory:
    // the rotation statement, signed by both keys, carries the trust forward.
    let verify = std::process::Command::new(common::bin())
        .args(["verify", "--key", &first, "--data-dir"])
        .arg(&dir)
        .output()
        .expect("run provledger verify");
    assert!(verify.status.success(), "{}", common::describe(&verify));
    // A stranger's key verifies nothing.
    let stranger = provledger_signer::SigningKey::generate(&before.check().origin)
        .expect("key")
        .verifier()
        .to_string();
    let verify = std::process::Command::new(common::bin())
        .args(["verify", "--key", &stranger, "--data-dir"])
        .arg(&dir)
        .output()
        .expect("run provledger verify");
    assert!(!verify.status.success());

    server.restart();
    let admin = server.client();
    assert_eq!(vkeys(&admin), vec![second.clone(), first.clone()]);
    let after = Receipt::from_json(&admin.append(&common::record("input", "doc:o", 2)));
    assert!(verifies_with(&after.checkpoint, &second));
    consistent(&admin, &before, &after);
}
