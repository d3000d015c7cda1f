//! The HTTP contract of issue 2, checked from outside with independent code: receipts, records,
//! refs, idempotency, proofs, checkpoints, the verifier key, tlog-tiles, MessagePack bodies,
//! metrics and health.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::common::merkle::{self, leaf_hash, verify_consistency, verify_inclusion};
use crate::common::note::{Checkpoint, VerifierKey};
use crate::common::{b64, hash32, hashes, record, Receipt, Server, ORIGIN};

#[test]
fn one_record_gives_one_receipt_and_an_array_gives_receipts_in_order() {
    let server = Server::start(&[]);
    let one = server.append(&record("input", "doc:0", 0));
    assert!(one.is_object(), "one record → one receipt object: {one}");
    let r = Receipt::from_json(&one);
    assert_eq!((r.index, r.tree_size), (0, 1));
    assert!(
        r.inclusion_proof.is_empty(),
        "a one-leaf tree has an empty audit path"
    );
    let cp = r.check();
    assert_eq!(cp.root, leaf_hash(&r.leaf), "root of a one-leaf tree");
    assert_eq!(leaf_u64(&r.leaf, "index"), 0);

    let batch: Vec<Value> = (1..=6)
        .map(|n| record("decision", &format!("doc:{n}"), n))
        .collect();
    let receipts = server.append(&Value::Array(batch.clone()));
    let receipts = receipts
        .as_array()
        .expect("an array → an array of receipts");
    assert_eq!(receipts.len(), batch.len());
    for (i, (v, sent)) in receipts.iter().zip(&batch).enumerate() {
        let r = Receipt::from_json(v);
        assert_eq!(r.index, 1 + i as u64, "receipts come back in request order");
        assert_eq!(r.tree_size, 7, "one request is one atomic batch");
        r.check();
        // The leaf itself says which record it is: its own index, entity and kind.
        assert_eq!(leaf_u64(&r.leaf, "index"), r.index);
        assert_eq!(
            leaf_str(&r.leaf, "entity"),
            sent["entity"].as_str().unwrap()
        );
        assert_eq!(leaf_str(&r.leaf, "kind"), "decision");
        // The checker is not a rubber stamp: a damaged proof, a wrong index or another
        // leaf must fail.
        let lh = leaf_hash(&r.leaf);
        let root = Checkpoint::parse(&r.checkpoint).root;
        assert!(!r.inclusion_proof.is_empty());
        assert!(!verify_inclusion(
            &lh,
            r.index,
            r.tree_size,
            &merkle::tamper(&r.inclusion_proof, 0),
            &root
        ));
        assert!(!verify_inclusion(
            &lh,
            (r.index + 1) % r.tree_size,
            r.tree_size,
            &r.inclusion_proof,
            &root
        ));
        assert!(!verify_inclusion(
            &leaf_hash(b"another leaf"),
            r.index,
            r.tree_size,
            &r.inclusion_proof,
            &root
        ));
    }
}

#[test]
fn a_stored_record_has_its_fields_payload_salt_and_a_matching_commitment() {
    let server = Server::start(&[]);
    let payload = json!({
        "zeta": "last",
        "alpha": {"y": [3, 2, 1], "x": true, "nothing": null},
        "text": "quote \" backslash \\ slash / done",
        "count": -42,
    });
    let sent = json!({
        "kind": "output",
        "tenant": "acme",
        "entity": "memory:customer-42",
        "actor": {"type": "human", "id": "alice"},
        "attributes": {"residency": "eu", "model": "m-2"},
        "classification": "confidential",
        "payload": payload,
    });
    let r = Receipt::from_json(&server.append(&sent));
    r.check();

    let got = server.get(&format!("/v1/records/{}", r.id)).ok_json();
    assert_eq!(got["id"], r.id.as_str());
    assert_eq!(got["index"], r.index);
    assert_eq!(b64(got["leaf"].as_str().unwrap()), r.leaf);
    assert_eq!(got["kind"], "output");
    assert_eq!(got["tenant"], "acme");
    assert_eq!(got["entity"], "memory:customer-42");
    assert_eq!(got["actor"], json!({"type": "human", "id": "alice"}));
    assert_eq!(
        got["attributes"],
        json!({"residency": "eu", "model": "m-2"})
    );
    assert_eq!(got["classification"], "confidential");
    assert_eq!(got["refs"], json!([]));
    assert_eq!(got["payload"], payload, "payload comes back as sent");

    // SHA-256(salt ‖ RFC 8785 JSON of the payload), recomputed here, is the commitment the
    // server reports and the one inside the leaf.
    let salt = b64(got["salt"].as_str().expect("salt is base64"));
    assert_eq!(salt.len(), 32, "a 32-byte salt");
    let mut h = Sha256::new();
    h.update(&salt);
    h.update(jcs(&payload).as_bytes());
    let want: [u8; 32] = h.finalize().into();
    let reported = hash32(got["commitment"].as_str().expect("commitment is base64"));
    assert_eq!(reported, want, "commitment ≠ SHA-256(salt ‖ JCS(payload))");
    assert_eq!(leaf_bin(&r.leaf, "commitment"), want.to_vec());
    // The payload itself is not in the leaf.
    let needle = b"backslash";
    assert!(
        !r.leaf.windows(needle.len()).any(|w| w == needle),
        "payload text leaked into the leaf"
    );

    // A record without payload has no commitment.
    let bare = json!({"kind": "input", "actor": {"type": "agent", "id": "a"}});
    let r2 = Receipt::from_json(&server.append(&bare));
    let got2 = server.get(&format!("/v1/records/{}", r2.id)).ok_json();
    assert_eq!(got2["payload"], Value::Null);
    assert_eq!(got2["commitment"], Value::Null);
    assert_eq!(got2["tenant"], "default");
    assert_eq!(got2["classification"], "internal");

    // An id that is well formed but unknown is a 404 with a JSON error.
    let unknown = server.get(&format!("/v1/records/{}", "ab".repeat(32)));
    assert_eq!(unknown.status, 404, "{}", unknown.text());
    assert_eq!(unknown.json()["code"], "not_found");
}

#[test]
fn refs_resolve_by_entity_to_the_latest_version_and_by_id() {
    let server = Server::start(&[]);
    let policy = |version: u64| {
        json!({
            "kind": "policy",
            "entity": "policy:refunds",
            "actor": {"type": "human", "id": "bob"},
            "attributes": {"version": version},
        })
    };
    let v1 = Receipt::from_json(&server.append(&policy(1)));
    let input = Receipt::from_json(&server.append(&record("input", "doc:in", 1)));
    let v2 = Receipt::from_json(&server.append(&policy(2)));
    assert_ne!(v1.id, v2.id);

    let decision = json!({
        "kind": "decision",
        "entity": "decision:1",
        "actor": {"type": "agent", "id": "refund-bot"},
        "refs": [
            {"role": "policy", "ref": "policy:refunds"},
            {"role": "input", "ref": input.id},
            {"role": "parent", "ref": v1.id},
        ],
    });
    let d = Receipt::from_json(&server.append(&decision));
    d.check();
    let got = server.get(&format!("/v1/records/{}", d.id)).ok_json();
    assert_eq!(
        got["refs"],
        json!([
            {"role": "policy", "id": v2.id},
            {"role": "input", "id": input.id},
            {"role": "parent", "id": v1.id},
        ]),
        "an entity ref resolves to its latest version, an id ref to that record"
    );
    // The leaf commits to the cited leaf hashes themselves (MessagePack bin, 32 bytes).
    let refs = leaf_refs(&d.leaf);
    assert_eq!(
        refs,
        vec![
            ("policy".to_owned(), hex::decode(&v2.id).unwrap()),
            ("input".to_owned(), hex::decode(&input.id).unwrap()),
            ("parent".to_owned(), hex::decode(&v1.id).unwrap()),
        ]
    );

    // A third version moves the entity again.
    let v3 = Receipt::from_json(&server.append(&policy(3)));
    let later = json!({
        "kind": "decision",
        "actor": {"type": "agent", "id": "refund-bot"},
        "refs": [{"role": "policy", "ref": "policy:refunds"}],
    });
    let l = Receipt::from_json(&server.append(&later));
    assert_eq!(leaf_refs(&l.leaf)[0].1, hex::decode(&v3.id).unwrap());
}

#[test]
fn an_idempotency_key_returns_the_first_receipt_and_conflicts_on_another_record() {
    let server = Server::start(&[]);
    server.append(&record("input", "doc:warmup", 0));
    let mut rec = record("decision", "doc:idem", 1);
    rec["idempotency_key"] = json!("retry-key-1");
    let first = Receipt::from_json(&server.append(&rec));
    first.check();
    let size = server.tree_size();

    let again = Receipt::from_json(&server.append(&rec));
    assert_eq!(again.id, first.id, "a retry returns the first record's id");
    assert_eq!(again.index, first.index);
    assert_eq!(again.leaf, first.leaf);
    again.check();
    assert_eq!(server.tree_size(), size, "a retry does not grow the log");

    // A retry inside a batch gets the first receipt in its position.
    let fresh = record("input", "doc:fresh", 2);
    let receipts = server.append_all(&[fresh, rec.clone()]);
    let fresh_r = Receipt::from_json(&receipts[0]);
    let retried = Receipt::from_json(&receipts[1]);
    assert_eq!(fresh_r.index, size, "only the new record takes a new index");
    assert_eq!(retried.id, first.id);
    assert_eq!(retried.index, first.index);
    retried.check();
    assert_eq!(server.tree_size(), size + 1);

    // The same key with a different record is a conflict, and nothing is appended.
    let mut other = record("decision", "doc:idem", 99);
    other["idempotency_key"] = json!("retry-key-1");
    let resp = server.post_records(&other);
    assert_eq!(resp.status, 409, "{}", resp.text());
    let err = resp.json();
    assert_eq!(err["code"], "idempotency_conflict");
    assert!(
        err["message"].as_str().unwrap().contains("retry-key-1"),
        "message names the key: {err}"
    );
    assert_eq!(server.tree_size(), size + 1);
}

#[test]
fn inclusion_and_consistency_proofs_verify_against_checkpoints_over_time() {
    let server = Server::start(&[]);
    let mut leaf_hashes: Vec<[u8; 32]> = Vec::new();
    let mut checkpoints: Vec<Checkpoint> = Vec::new();
    let mut n = 0u64;
    for batch in [1usize, 1, 1, 4, 1, 12, 44, 36, 157, 3] {
        let records: Vec<Value> = (0..batch)
            .map(|_| {
                n += 1;
                record("input", &format!("doc:{n}"), n)
            })
            .collect();
        let receipts = server.append_all(&records);
        for v in &receipts {
            let r = Receipt::from_json(v);
            assert_eq!(r.index, leaf_hashes.len() as u64);
            leaf_hashes.push(leaf_hash(&r.leaf));
        }
        let last = Receipt::from_json(receipts.last().unwrap());
        let served = server.get("/checkpoint");
        assert_eq!(served.status, 200);
        assert!(
            served.content_type.starts_with("text/plain"),
            "{}",
            served.content_type
        );
        assert_eq!(
            served.text(),
            last.checkpoint,
            "GET /checkpoint is the latest receipt's checkpoint"
        );
        checkpoints.push(Checkpoint::parse(&last.checkpoint));
    }
    let total = leaf_hashes.len() as u64;
    assert_eq!(total, 260);

    for cp in &checkpoints {
        assert_eq!(cp.origin, ORIGIN);
        assert_eq!(
            cp.root,
            merkle::root(&leaf_hashes[..cp.size as usize]),
            "root of size {} recomputed from the receipts' leaves",
            cp.size
        );
        let n = cp.size;
        let mut indexes = vec![0, n / 2, n - 1, n / 3];
        indexes.dedup();
        for i in indexes {
            let p = server
                .get(&format!("/v1/proofs/inclusion?index={i}&tree_size={n}"))
                .ok_json();
            assert_eq!(p["index"], i);
            assert_eq!(p["tree_size"], n);
            let lh = hash32(p["leaf_hash"].as_str().unwrap());
            assert_eq!(lh, leaf_hashes[i as usize], "leaf_hash of index {i}");
            let path = hashes(&p["hashes"]);
            assert!(
                verify_inclusion(&lh, i, n, &path, &cp.root),
                "inclusion proof of {i} in {n}"
            );
            if !path.is_empty() {
                assert!(!verify_inclusion(
                    &lh,
                    i,
                    n,
                    &merkle::tamper(&path, path.len() - 1),
                    &cp.root
                ));
            }
        }
    }

    // Without tree_size the proof is against the current tree.
    let p = server.get("/v1/proofs/inclusion?index=5").ok_json();
    assert_eq!(p["tree_size"], total);
    let latest = checkpoints.last().unwrap();
    assert!(verify_inclusion(
        &leaf_hashes[5],
        5,
        total,
        &hashes(&p["hashes"]),
        &latest.root
    ));

    // Every earlier checkpoint is consistent with every later one.
    for (a, old) in checkpoints.iter().enumerate() {
        for new in &checkpoints[a..] {
            let (m, n) = (old.size, new.size);
            let p = server
                .get(&format!("/v1/proofs/consistency?from={m}&to={n}"))
                .ok_json();
            assert_eq!((p["from"].as_u64(), p["to"].as_u64()), (Some(m), Some(n)));
            let path = hashes(&p["hashes"]);
            assert!(
                verify_consistency(m, n, &path, &old.root, &new.root),
                "consistency proof {m} → {n} does not verify"
            );
            if m < n && !path.is_empty() {
                assert!(!verify_consistency(
                    m,
                    n,
                    &merkle::tamper(&path, 0),
                    &old.root,
                    &new.root
                ));
            }
        }
    }
}

#[test]
fn the_verifier_key_names_the_log_and_matches_the_checkpoint_signature() {
    let server = Server::start(&[]);
    let r = Receipt::from_json(&server.append(&record("input", "doc:k", 1)));
    let resp = server.get("/v1/key");
    assert_eq!(resp.status, 200);
    assert!(resp.content_type.starts_with("text/plain"));
    let text = resp.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "one verifier key: {text:?}");
    assert!(text.ends_with('\n'));
    let vkey = VerifierKey::parse(lines[0]);
    assert_eq!(vkey.name, ORIGIN);
    let cp = Checkpoint::parse(&r.checkpoint);
    assert!(
        cp.signatures
            .iter()
            .any(|s| s.name == vkey.name && s.key_hash == vkey.key_hash && s.signature.len() == 64),
        "no signature line by {} in {:?}",
        lines[0],
        r.checkpoint
    );
}

#[test]
fn tlog_tiles_serve_hashes_and_entry_bundles() {
    let server = Server::start(&[]);
    let mut leaves: Vec<Vec<u8>> = Vec::new();
    for b in 0..3u64 {
        let records: Vec<Value> = (0..100)
            .map(|i| record("input", &format!("doc:{b}-{i}"), b * 100 + i))
            .collect();
        for v in server.append_all(&records) {
            leaves.push(Receipt::from_json(&v).leaf);
        }
    }
    assert_eq!(leaves.len(), 300);
    let lh: Vec<[u8; 32]> = leaves.iter().map(|l| leaf_hash(l)).collect();
    let concat = |hs: &[[u8; 32]]| hs.concat();

    let full = tile(&server, "/tile/0/000");
    assert_eq!(full.len(), 8192);
    assert_eq!(
        full,
        concat(&lh[..256]),
        "tile 0/000 holds leaf hashes 0..256"
    );

    let partial = tile(&server, "/tile/0/001.p/44");
    assert_eq!(partial, concat(&lh[256..300]), "tile 0/001.p/44");
    let narrower = tile(&server, "/tile/0/001.p/10");
    assert_eq!(narrower, concat(&lh[256..266]), "tile 0/001.p/10");

    let level1 = tile(&server, "/tile/1/000.p/1");
    assert_eq!(
        level1,
        merkle::root(&lh[..256]).to_vec(),
        "tile 1/000.p/1 holds the root of the first 256 leaves"
    );

    let bundle = tile(&server, "/tile/entries/000");
    assert_eq!(split_bundle(&bundle), leaves[..256].to_vec());
    let bundle = tile(&server, "/tile/entries/001.p/44");
    assert_eq!(split_bundle(&bundle), leaves[256..300].to_vec());

    // The tree from the tiles' leaves is the checkpoint's tree.
    assert_eq!(server.checkpoint().root, merkle::root(&lh));

    for missing in [
        "/tile/0/002",
        "/tile/0/001",
        "/tile/0/001.p/45",
        "/tile/1/000",
        "/tile/2/000.p/1",
        "/tile/entries/001",
        "/tile/entries/002.p/1",
    ] {
        let resp = server.get(missing);
        assert_eq!(resp.status, 404, "{missing}: {}", resp.text());
        assert_eq!(resp.json()["code"], "not_found", "{missing}");
    }
    for malformed in [
        "/tile/0/1",
        "/tile/0/0001",
        "/tile/0/000.p/0",
        "/tile/0/000.p/256",
        "/tile/entries/x1/000",
        "/tile/0",
    ] {
        let resp = server.get(malformed);
        assert_eq!(resp.status, 400, "{malformed}: {}", resp.text());
        let err = resp.json();
        assert_eq!(err["code"], "invalid_tile_path", "{malformed}: {err}");
        assert!(!err["message"].as_str().unwrap().is_empty());
    }
}

#[test]
fn messagepack_bodies_are_accepted() {
    let server = Server::start(&[]);
    let one = record("input", "doc:mp", 1);
    let body = rmp_serde::to_vec_named(&one).unwrap();
    let resp = server.post("/v1/records", "application/msgpack", &body);
    let r = Receipt::from_json(&resp.ok_json());
    r.check();
    let got = server.get(&format!("/v1/records/{}", r.id)).ok_json();
    assert_eq!(got["payload"], one["payload"]);
    assert_eq!(got["entity"], "doc:mp");

    let many = vec![record("input", "doc:mp2", 2), record("input", "doc:mp3", 3)];
    let body = rmp_serde::to_vec_named(&many).unwrap();
    let resp = server.post("/v1/records", "application/msgpack", &body);
    let receipts = resp.ok_json();
    let receipts = receipts.as_array().expect("an array of receipts");
    assert_eq!(receipts.len(), 2);
    for (i, v) in receipts.iter().enumerate() {
        let r = Receipt::from_json(v);
        assert_eq!(r.index, 1 + i as u64);
        r.check();
        assert_eq!(leaf_str(&r.leaf, "entity"), format!("doc:mp{}", i + 2));
    }
}

#[test]
fn metrics_and_health() {
    let server = Server::start(&[]);
    let health = server.get("/healthz");
    assert_eq!(health.status, 200);
    let records: Vec<Value> = (0..7).map(|i| record("input", "doc:m", i)).collect();
    server.append_all(&records);
    server.append(&record("input", "doc:m", 7));
    let resp = server.get("/metrics");
    assert_eq!(resp.status, 200);
    let text = resp.text();
    assert_eq!(metric(&text, "provledger_records_appended_total"), 8.0);
    assert_eq!(metric(&text, "provledger_tree_size"), 8.0);
    assert!(
        text.contains("provledger_append_seconds_bucket"),
        "append latency histogram"
    );
    // Eight small records never fill the write buffer: the committer never waited.
    assert_eq!(
        metric(&text, "provledger_write_buffer_wait_seconds_total"),
        0.0
    );
    // Per-route HTTP metrics, labelled by route pattern (not raw path) and status.
    assert_eq!(
        metric(
            &text,
            r#"provledger_http_requests_total{method="POST",route="/v1/records",status="200"}"#
        ),
        2.0
    );
    let healthz = r#"provledger_http_requests_total{method="GET",route="/healthz",status="200"}"#;
    let before = metric(&text, healthz);
    // Several of each: every request is labelled by its own route's pattern, whichever worker
    // answers it, and a path no rule covers is `unmatched`.
    for _ in 0..5 {
        assert_eq!(server.get("/healthz").status, 200);
    }
    let _ = server.get("/v1/records/not-an-id");
    let _ = server.get("/v1/records/still-not-an-id");
    assert_eq!(server.get("/no/such/route").status, 404);
    let text = server.get("/metrics").text();
    assert_eq!(metric(&text, healthz), before + 5.0, "five more /healthz");
    assert_eq!(
        metric(
            &text,
            r#"provledger_http_requests_total{method="GET",route="/v1/records/{id}",status="400"}"#
        ),
        2.0
    );
    assert_eq!(
        metric(
            &text,
            r#"provledger_http_requests_total{method="GET",route="unmatched",status="404"}"#
        ),
        1.0
    );
    let health = server.get("/healthz").ok_json();
    assert_eq!(health["tree_size"], 8);
    // Where memory and disk go: the process and fjall's parts.
    assert!(metric(&text, "process_resident_memory_bytes") > 1e6, "RSS");
    assert_eq!(
        metric(&text, "provledger_store_block_cache_capacity_bytes"),
        32.0 * 1024.0 * 1024.0,
        "--cache-mb default"
    );
    assert!(
        metric(&text, "provledger_store_write_buffer_bytes") > 0.0,
        "8 records are in the memtables"
    );
    assert!(metric(&text, "provledger_store_journal_bytes") > 0.0);
    for partition in ["entries", "payloads", "ids", "tiles"] {
        let segments = format!(r#"provledger_store_segments{{partition="{partition}"}}"#);
        assert_eq!(
            metric(&text, &segments),
            0.0,
            "{partition}: nothing flushed yet"
        );
        let bloom = format!(r#"provledger_store_bloom_filter_bytes{{partition="{partition}"}}"#);
        assert_eq!(metric(&text, &bloom), 0.0, "{partition}");
    }
}

// ---- helpers ----------------------------------------------------------------------------

/// GET a tile; asserts 200 and an octet-stream body.
fn tile(server: &Server, path: &str) -> Vec<u8> {
    let resp = server.get(path);
    assert_eq!(resp.status, 200, "{path}: {}", resp.text());
    assert_eq!(resp.content_type, "application/octet-stream", "{path}");
    resp.body
}

/// Splits a tlog-tiles entry bundle: each entry is a 2-byte big-endian length and the bytes.
fn split_bundle(mut b: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        assert!(b.len() >= 2, "truncated length prefix");
        let len = u16::from_be_bytes([b[0], b[1]]) as usize;
        assert!(b.len() >= 2 + len, "truncated entry");
        out.push(b[2..2 + len].to_vec());
        b = &b[2 + len..];
    }
    out
}

/// Value of an unlabelled Prometheus sample.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("metric {name} missing from /metrics:\n{text}"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("metric {name} is not a number: {e}"))
}

/// RFC 8785 canonical JSON for the values these tests use (no floats): object members
/// sorted by key (ASCII keys, so UTF-16 order is byte order), no whitespace, and
/// JSON.stringify string escaping, which serde_json's matches for these strings.
fn jcs(v: &Value) -> String {
    match v {
        Value::Null | Value::Bool(_) => v.to_string(),
        Value::Number(n) => {
            assert!(!n.is_f64(), "this helper does not canonicalize floats");
            n.to_string()
        }
        Value::String(s) => {
            assert!(s.is_ascii(), "this helper handles ASCII strings only");
            serde_json::to_string(s).unwrap()
        }
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(jcs).collect();
            format!("[{}]", inner.join(","))
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let inner: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", jcs(&Value::String(k.clone())), jcs(&map[k])))
                .collect();
            format!("{{{}}}", inner.join(","))
        }
    }
}

/// The leaf as a MessagePack map with string keys, decoded with rmpv (not the server's code).
fn leaf_map(leaf: &[u8]) -> Vec<(String, rmpv::Value)> {
    let v = rmpv::decode::read_value(&mut &leaf[..]).expect("leaf is MessagePack");
    let rmpv::Value::Map(entries) = v else {
        panic!("leaf is a MessagePack map, got {v}");
    };
    entries
        .into_iter()
        .map(|(k, v)| {
            let k = k.as_str().expect("leaf keys are strings").to_owned();
            (k, v)
        })
        .collect()
}

fn leaf_field(leaf: &[u8], name: &str) -> rmpv::Value {
    leaf_map(leaf)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("leaf has no {name:?} field"))
}

fn leaf_u64(leaf: &[u8], name: &str) -> u64 {
    leaf_field(leaf, name)
        .as_u64()
        .unwrap_or_else(|| panic!("leaf field {name} is not an integer"))
}

fn leaf_str(leaf: &[u8], name: &str) -> String {
    leaf_field(leaf, name)
        .as_str()
        .unwrap_or_else(|| panic!("leaf field {name} is not a string"))
        .to_owned()
}

fn leaf_bin(leaf: &[u8], name: &str) -> Vec<u8> {
    leaf_field(leaf, name)
        .as_slice()
        .unwrap_or_else(|| panic!("leaf field {name} is not MessagePack bin"))
        .to_vec()
}

/// The leaf's `refs`: an array of maps with `role` (string) and `hash` (32-byte bin).
fn leaf_refs(leaf: &[u8]) -> Vec<(String, Vec<u8>)> {
    let refs = leaf_field(leaf, "refs");
    refs.as_array()
        .expect("refs is an array")
        .iter()
        .map(|r| {
            let map = r.as_map().expect("a ref is a map");
            let get = |name: &str| {
                map.iter()
                    .find(|(k, _)| k.as_str() == Some(name))
                    .map(|(_, v)| v.clone())
                    .unwrap_or_else(|| panic!("ref has no {name}"))
            };
            let hash = get("hash").as_slice().expect("hash is bin").to_vec();
            assert_eq!(hash.len(), 32);
            (get("role").as_str().expect("role").to_owned(), hash)
        })
        .collect()
}

/// The server raises its soft limit on open files to the hard one (at most 2^20): the store
/// sizes its cache of open segment files from it.
#[cfg(target_os = "linux")]
#[test]
fn the_server_raises_its_limit_on_open_files() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let own = getrlimit(Resource::Nofile);
    let target = own.maximum.unwrap_or(u64::MAX).min(1 << 20);
    // Start it with a soft limit below the hard one (children inherit it), so that there is
    // something to raise; the other tests' servers raise theirs again.
    let lowered = Rlimit {
        current: Some((target / 2).max(1024).min(target)),
        maximum: own.maximum,
    };
    setrlimit(Resource::Nofile, lowered).expect("lowering the soft limit is always allowed");
    let server = Server::start(&[]);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.pid()))
        .expect("read /proc/<pid>/limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a `Max open files` line");
    let soft: u64 = line
        .split_whitespace()
        .nth(3)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no soft limit in {line:?}"));
    assert_eq!(soft, target, "{line}");
    // Back to what this test process had.
    let _ = setrlimit(Resource::Nofile, own);
}
