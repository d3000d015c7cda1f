//! Issue 5, erasure and retention, end to end: erasing payloads over HTTP (by record, entity
//! and subject), proofs and `provledger verify` still holding afterwards, GraphQL lineage
//! showing the node as erased, the erased bytes gone from every file after `provledger
//! compact` or the server's background compaction, and retention with short periods.

use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::merkle::verify_consistency;
use crate::common::{
    assert_verifies, bin, describe, files_under, hashes, Client, Receipt, Resp, Server,
};

/// How long background work (retention, compaction) may take before a poll gives up.
const DEADLINE: Duration = Duration::from_secs(60);

/// 48 random lower-case letters: incompressible, so found in a file only where it was written
/// verbatim, and not a "secret" to the ingress scrubber (which masks long hex/base64 tokens).
fn marker() -> String {
    let mut bytes = [0u8; 48];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("cannot read /dev/urandom");
    bytes.iter().map(|b| char::from(b'a' + b % 26)).collect()
}

/// The files under `dir` that hold `needle`.
fn files_holding(dir: &Path, needle: &str) -> Vec<String> {
    files_under(dir)
        .into_iter()
        .filter(|p| {
            // A file fjall deletes between the listing and the read holds nothing any more.
            std::fs::read(p).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
        })
        .map(|p| p.display().to_string())
        .collect()
}

fn post_json(client: &Client, path: &str, body: &Value) -> Resp {
    client.post(
        path,
        "application/json",
        &serde_json::to_vec(body).expect("encodable"),
    )
}

fn erase(client: &Client, id: &str, reason: &str) -> Resp {
    post_json(
        client,
        &format!("/v1/records/{id}/erase"),
        &json!({ "reason": reason }),
    )
}

/// Asserts an error answer: status, code and the `{message, code, type}` shape.
fn assert_error(resp: &Resp, status: u16, code: &str) {
    assert_eq!(resp.status, status, "{}", resp.text());
    let v = resp.json();
    assert_eq!(v["code"], code, "{v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
}

fn get_record(client: &Client, id: &str) -> Value {
    client.get(&format!("/v1/records/{id}")).ok_json()
}

fn run_compact(data_dir: &Path) -> String {
    let out = Command::new(bin())
        .arg("compact")
        .arg("--data-dir")
        .arg(data_dir)
        .stdin(Stdio::null())
        .output()
        .expect("cannot run provledger compact");
    assert!(out.status.success(), "compact failed:\n{}", describe(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn poll(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !done() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

const LINEAGE: &str = "query($id: ID!, $dir: LineageDirection!) {
    lineage(id: $id, direction: $dir, depth: 1) {
        nodes { id kind payloadState }
        edges { from to role }
    } }";

fn lineage(client: &Client, id: &str, dir: &str) -> Value {
    let v = post_json(
        client,
        "/graphql",
        &json!({"query": LINEAGE, "variables": {"id": id, "dir": dir}}),
    )
    .ok_json();
    assert!(v.get("errors").is_none(), "{v}");
    v["data"]["lineage"].clone()
}

#[test]
fn erased_over_http_the_payload_is_gone_from_every_file_and_every_proof_still_verifies() {
    let mut server = Server::start(&[]);
    let secret = marker();
    let kept = marker();
    let client = server.client();
    let first = Receipt::from_json(&client.append(&json!({
        "kind": "input", "entity": "ticket:7", "actor": {"type": "agent", "id": "a1"},
        "payload": {"note": secret},
    })));
    let first_cp = first.check();
    let other = Receipt::from_json(&client.append(&json!({
        "kind": "decision", "actor": {"type": "agent", "id": "a1"},
        "refs": [{"role": "input", "ref": first.id}], "payload": {"note": kept},
    })));
    // After a restart the bytes are in the journal and in storage files: the search below
    // can find them, so its later "found nowhere" means something.
    server.stop();
    server.restart();
    let client = server.client();
    let data_dir = server.data_dir();
    assert!(!files_holding(&data_dir, &secret).is_empty());

    let resp = erase(&client, &first.id, "data subject request 12");
    let erasure = Receipt::from_json(&resp.ok_json());
    erasure.check();
    assert_eq!(erasure.index, 2);
    let e = get_record(&client, &erasure.id);
    assert_eq!(e["kind"], "erasure");
    assert_eq!(e["refs"], json!([{"role": "erased", "id": first.id}]));
    assert_eq!(
        e["attributes"],
        json!({"reason": "data subject request 12", "erasure_policy": "requested"})
    );
    assert_eq!(e["actor"]["type"], "token");
    assert_eq!(e["payload"], Value::Null);

    // The leaf stays, the payload and salt are gone; the other record is untouched.
    let r = get_record(&client, &first.id);
    assert_eq!(crate::common::b64(r["leaf"].as_str().unwrap()), first.leaf);
    assert!(r["commitment"].is_string());
    assert_eq!((&r["payload"], &r["salt"]), (&Value::Null, &Value::Null));
    assert_eq!(
        get_record(&client, &other.id)["payload"],
        json!({"note": kept})
    );

    // Erasing again answers the same erasure and appends nothing.
    let again = Receipt::from_json(&erase(&client, &first.id, "again").ok_json());
    assert_eq!((again.id.as_str(), again.index), (erasure.id.as_str(), 2));
    assert_eq!(client.tree_size(), 3);

    // GraphQL lineage: upstream of the decision, the input is there, marked erased.
    let up = lineage(&client, &other.id, "UPSTREAM");
    let node = up["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == first.id.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("{up}"));
    assert_eq!(node["payloadState"], "ERASED");
    let down = lineage(&client, &first.id, "DOWNSTREAM");
    assert!(
        down["edges"]
            .as_array()
            .unwrap()
            .contains(&json!({"from": erasure.id, "to": first.id, "role": "erased"})),
        "{down}"
    );

    // Offline compaction: the erased bytes are in no file, journals included.
    server.stop();
    let out = run_compact(&data_dir);
    assert!(out.starts_with("ok: compacted"), "{out}");
    assert_eq!(files_holding(&data_dir, &secret), Vec::<String>::new());
    assert!(!files_holding(&data_dir, &kept).is_empty());
    let verified = assert_verifies(&data_dir);
    assert!(
        verified.contains("; 1 erased payload, each cited by an erasure record"),
        "{verified}"
    );

    // The first receipt still verifies, and its checkpoint is a prefix of today's.
    server.restart();
    let client = server.client();
    first.check();
    let now = client.checkpoint();
    let p = client
        .get(&format!(
            "/v1/proofs/consistency?from={}&to={}",
            first.tree_size, now.size
        ))
        .ok_json();
    assert!(verify_consistency(
        first_cp.size,
        now.size,
        &hashes(&p["hashes"]),
        &first_cp.root,
        &now.root
    ));
    assert_eq!(get_record(&client, &first.id)["payload"], Value::Null);
}

#[test]
fn retention_erases_expired_classes_and_background_compaction_removes_the_bytes() {
    let mut server = Server::start(&[
        "--retention",
        "pii=2s",
        "--retention-check-interval",
        "100ms",
        "--compact-delay",
        "100ms",
    ]);
    let client = server.client();
    let secret = marker();
    let kept = marker();
    let receipts = client.append_all(&[
        json!({"kind": "input", "classification": "pii", "actor": {"type": "agent", "id": "a1"},
               "payload": {"note": secret}}),
        json!({"kind": "input", "actor": {"type": "agent", "id": "a1"},
               "payload": {"note": kept}}),
    ]);
    let pii = Receipt::from_json(&receipts[0]);
    let internal = Receipt::from_json(&receipts[1]);
    // A batch's store writes are readable a moment before its records are published; a read
    // that finds the payload gone waits for the erasure's batch to be published. So as soon as
    // the payload reads as gone, the erasure that removed it is in the lineage, with no wait.
    poll("retention to erase the pii payload", || {
        get_record(&client, &pii.id)["payload"].is_null()
    });
    let down = lineage(&client, &pii.id, "DOWNSTREAM");
    let erasure = down["nodes"]
        .as_array()
        .and_then(|nodes| nodes.iter().find(|n| n["kind"] == "erasure").cloned())
        .unwrap_or_else(|| panic!("payload gone but no erasure in the lineage: {down}"));
    let e = get_record(&client, erasure["id"].as_str().unwrap());
    assert_eq!(e["actor"], json!({"type": "service", "id": "retention"}));
    assert_eq!(
        e["attributes"],
        json!({"reason": "retention: pii 2s", "erasure_policy": "retention"})
    );
    assert_eq!(e["refs"], json!([{"role": "erased", "id": pii.id}]));
    assert_eq!(
        get_record(&client, &internal.id)["payload"],
        json!({"note": kept})
    );
    // The background compaction follows the erasure: the bytes leave every file.
    let data_dir = server.data_dir();
    poll("background compaction to remove the erased bytes", || {
        files_holding(&data_dir, &secret).is_empty()
    });
    assert!(!files_holding(&data_dir, &kept).is_empty());
    // One erasure per expired record: later passes append nothing.
    let size = client.tree_size();
    assert_eq!(size, 3);
    server.stop();
    assert!(assert_verifies(&data_dir).contains("; 1 erased payload,"));
}

#[test]
fn erasure_by_entity_and_by_subject_covers_every_record_with_a_payload() {
    let server = Server::start(&[]);
    let client = server.client();
    let actor = json!({"type": "agent", "id": "a1"});
    let memory = client.append_all(&[
        json!({"kind": "memory", "entity": "memory:c42", "actor": actor, "payload": {"v": 1}}),
        json!({"kind": "memory", "entity": "memory:c42", "actor": actor}),
        json!({"kind": "memory", "entity": "memory:c42", "actor": actor, "payload": {"v": 3}}),
        json!({"kind": "memory", "entity": "memory:c43", "actor": actor, "payload": {"v": 4}}),
    ]);
    let ids: Vec<String> = memory.iter().map(|r| Receipt::from_json(r).id).collect();
    let resp = post_json(
        &client,
        "/v1/erasures",
        &json!({"entity": "memory:c42", "reason": "forget customer 42"}),
    )
    .ok_json();
    let erased: Vec<String> = resp
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let r = Receipt::from_json(r);
            r.check();
            get_record(&client, &r.id)["refs"][0]["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        erased,
        vec![ids[0].clone(), ids[2].clone()],
        "v2 has no payload"
    );
    assert_eq!(get_record(&client, &ids[0])["payload"], Value::Null);
    assert_eq!(get_record(&client, &ids[3])["payload"], json!({"v": 4}));

    let chats = client.append_all(&[
        json!({"kind": "input", "entity": "chat:1", "actor": actor,
               "attributes": {"subject": "customer-42"}, "payload": {"m": 1}}),
        json!({"kind": "output", "entity": "chat:2", "actor": actor,
               "attributes": {"subject": "customer-42"}, "payload": {"m": 2}}),
        json!({"kind": "output", "entity": "chat:3", "actor": actor,
               "attributes": {"subject": "customer-43"}, "payload": {"m": 3}}),
    ]);
    let chat: Vec<String> = chats.iter().map(|r| Receipt::from_json(r).id).collect();
    let resp = post_json(
        &client,
        "/v1/erasures",
        &json!({"subject": "customer-42", "reason": "art. 17 request"}),
    )
    .ok_json();
    assert_eq!(resp.as_array().unwrap().len(), 2);
    assert_eq!(get_record(&client, &chat[0])["payload"], Value::Null);
    assert_eq!(get_record(&client, &chat[1])["payload"], Value::Null);
    assert_eq!(get_record(&client, &chat[2])["payload"], json!({"m": 3}));
    // Again: the same two erasure receipts, nothing appended.
    let size = client.tree_size();
    let again = post_json(
        &client,
        "/v1/erasures",
        &json!({"subject": "customer-42", "reason": "again"}),
    )
    .ok_json();
    assert_eq!(again, resp);
    assert_eq!(client.tree_size(), size);
}

#[test]
fn bad_erasure_requests_get_precise_errors_and_change_nothing() {
    let server = Server::start(&[]);
    let client = server.client();
    let actor = json!({"type": "agent", "id": "a1"});
    let with = Receipt::from_json(&client.append(&json!({"kind": "input", "actor": actor,
                                                          "payload": {"x": 1}})));
    let without = Receipt::from_json(&client.append(&json!({"kind": "model", "actor": actor})));
    let size = client.tree_size();

    assert_error(&erase(&client, "not-an-id", "r"), 400, "invalid_id");
    assert_error(&erase(&client, &"0".repeat(64), "r"), 404, "not_found");
    assert_error(&erase(&client, &without.id, "r"), 409, "nothing_to_erase");
    assert_error(&erase(&client, &with.id, "  "), 400, "invalid_record");
    let pii = erase(&client, &with.id, "asked by jane.doe@example.com");
    assert_error(&pii, 400, "invalid_record");
    assert!(pii.text().contains("attributes.reason"), "{}", pii.text());
    assert!(!pii.text().contains("jane.doe"), "{}", pii.text());
    let path = format!("/v1/records/{}/erase", with.id);
    assert_error(
        &client.post(&path, "application/json", b"{\"reason\":"),
        400,
        "invalid_json",
    );
    assert_error(
        &post_json(&client, &path, &json!({})),
        400,
        "invalid_erasure",
    );
    assert_error(
        &post_json(&client, &path, &json!({"reason": "r", "why": "x"})),
        400,
        "invalid_erasure",
    );
    assert_error(
        &post_json(
            &client,
            "/v1/erasures",
            &json!({"entity": "a", "subject": "b", "reason": "r"}),
        ),
        400,
        "invalid_erasure",
    );
    assert_error(
        &post_json(&client, "/v1/erasures", &json!({"reason": "r"})),
        400,
        "invalid_erasure",
    );
    assert_error(
        &post_json(
            &client,
            "/v1/erasures",
            &json!({"entity": "nobody", "reason": "r"}),
        ),
        404,
        "not_found",
    );
    // The erasure role is the ledger's own: an append cannot forge an erasure.
    let forged = client.post_records(&json!({"kind": "erasure", "actor": actor,
                                             "refs": [{"role": "erased", "ref": with.id}]}));
    assert_error(&forged, 400, "invalid_record");
    assert!(
        forged.text().contains("record.refs[0].role"),
        "{}",
        forged.text()
    );

    assert_eq!(client.tree_size(), size);
    assert_eq!(get_record(&client, &with.id)["payload"], json!({"x": 1}));
}
