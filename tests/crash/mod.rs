//! Crash safety: SIGKILL the real server while clients append, restart it on the same data
//! directory, and check every acknowledged receipt and every checkpoint handed out before.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::merkle::{leaf_hash, verify_consistency, verify_inclusion};
use crate::common::note::Checkpoint;
use crate::common::{assert_verifies, hash32, hashes, Client, Receipt, Server};

const CLIENTS: usize = 8;
const RECEIPTS_PER_CYCLE: usize = 300;
const CYCLES: usize = 3;
/// Bound on waiting for a cycle's receipts; the appends normally take a second or two.
const CYCLE_LIMIT: Duration = Duration::from_secs(120);

#[derive(Default)]
struct Collected {
    receipts: Vec<Receipt>,
    /// Answers that were neither 200 nor 503 pushback, or transport failures before the kill.
    unexpected: Vec<String>,
    /// Requests cut off by the kill (connection reset mid-request rather than refused).
    cut_off: usize,
}

#[test]
fn sigkill_during_appends_loses_no_acknowledged_record() {
    let mut server = Server::start(&[]);
    let next_number = Arc::new(AtomicU64::new(0));
    let mut acked: Vec<Receipt> = Vec::new();
    // Every checkpoint any client was handed: size → root. One size, one root, or the log forked.
    let mut checkpoints: HashMap<u64, Checkpoint> = HashMap::new();

    for cycle in 0..CYCLES {
        let collected = Arc::new(Mutex::new(Collected::default()));
        let killing = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..CLIENTS)
            .map(|t| {
                let client = server.client();
                let collected = Arc::clone(&collected);
                let killing = Arc::clone(&killing);
                let next_number = Arc::clone(&next_number);
                std::thread::spawn(move || {
                    append_until_the_server_dies(&client, t, &next_number, &collected, &killing)
                })
            })
            .collect();

        let deadline = Instant::now() + CYCLE_LIMIT;
        loop {
            let got = collected.lock().unwrap().receipts.len();
            if got >= RECEIPTS_PER_CYCLE {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "cycle {cycle}: only {got} receipts within {CYCLE_LIMIT:?}; server log:\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        killing.store(true, Ordering::SeqCst);
        server.kill();
        for w in workers {
            w.join().expect("a client thread panicked");
        }
        let collected = std::mem::take(&mut *collected.lock().unwrap());
        assert!(
            collected.unexpected.is_empty(),
            "cycle {cycle}: unexpected answers before the kill: {:#?}",
            collected.unexpected
        );
        assert!(collected.receipts.len() >= RECEIPTS_PER_CYCLE);
        eprintln!(
            "cycle {cycle}: {} receipts, {} requests cut off by SIGKILL",
            collected.receipts.len(),
            collected.cut_off
        );

        // Every receipt was valid when it was handed out.
        for r in &collected.receipts {
            let cp = r.check();
            remember(&mut checkpoints, cp);
        }
        acked.extend(collected.receipts);
        let mut by_index: HashMap<u64, &str> = HashMap::new();
        for r in &acked {
            if let Some(other) = by_index.insert(r.index, &r.id) {
                assert_eq!(
                    other, r.id,
                    "two acknowledged records share index {}",
                    r.index
                );
            }
        }

        server.restart();
        let max_acked = acked.iter().map(|r| r.index).max().unwrap_or(0);
        eprintln!(
            "cycle {cycle}: restarted at tree size {} (highest acknowledged index {max_acked})",
            server.tree_size()
        );
        check_after_restart(&server, &acked, &checkpoints, cycle);

        // The log takes appends again, right after what it had.
        let size = server.tree_size();
        let r = Receipt::from_json(&server.append(&json!({
            "kind": "input",
            "entity": format!("after-restart:{cycle}"),
            "actor": {"type": "service", "id": "crash-test"},
            "payload": {"cycle": cycle},
        })));
        assert_eq!(r.index, size, "cycle {cycle}: first append after restart");
        remember(&mut checkpoints, r.check());
        acked.push(r);

        server.kill();
        assert_verifies(&server.data_dir());
        server.restart();
    }
}

/// One client: appends single records and small batches until the server stops answering.
fn append_until_the_server_dies(
    client: &Client,
    thread: usize,
    next_number: &AtomicU64,
    collected: &Mutex<Collected>,
    killing: &AtomicBool,
) {
    let entity = format!("crash:{thread}");
    let mut have_version = false;
    for round in 0u64.. {
        let batch = if round % 3 == 0 { 1 } else { 1 + round % 6 };
        let records: Vec<Value> = (0..batch)
            .map(|_| {
                let n = next_number.fetch_add(1, Ordering::Relaxed);
                let mut rec = json!({
                    "kind": "decision",
                    "entity": entity,
                    "actor": {"type": "agent", "id": format!("client-{thread}")},
                    "attributes": {"n": n},
                    "payload": {"n": n, "text": format!("thread {thread} round {round}")},
                });
                if have_version {
                    rec["refs"] = json!([{"role": "parent", "ref": entity}]);
                }
                rec
            })
            .collect();
        let (body, single) = if batch == 1 {
            (records[0].clone(), true)
        } else {
            (Value::Array(records), false)
        };
        let body = serde_json::to_vec(&body).expect("encodable");
        match client.try_post("/v1/records", "application/json", &body) {
            Ok(resp) if resp.status == 200 => {
                let v = resp.json();
                let receipts: Vec<Receipt> = if single {
                    vec![Receipt::from_json(&v)]
                } else {
                    v.as_array()
                        .expect("an array of receipts")
                        .iter()
                        .map(Receipt::from_json)
                        .collect()
                };
                assert_eq!(receipts.len() as u64, batch, "one receipt per record");
                collected.lock().unwrap().receipts.extend(receipts);
                have_version = true;
            }
            // Pushback is allowed under load: try again.
            Ok(resp) if resp.status == 503 => {}
            Ok(resp) => {
                collected.lock().unwrap().unexpected.push(format!(
                    "status {}: {}",
                    resp.status,
                    String::from_utf8_lossy(&resp.body)
                ));
                return;
            }
            Err(e) => {
                let mut c = collected.lock().unwrap();
                if !killing.load(Ordering::SeqCst) {
                    c.unexpected
                        .push(format!("transport error before the kill: {e}"));
                } else if !e.contains("Connection Failed") {
                    c.cut_off += 1;
                }
                return;
            }
        }
    }
}

/// Records a checkpoint a client saw; two checkpoints of one size must have one root.
fn remember(checkpoints: &mut HashMap<u64, Checkpoint>, cp: Checkpoint) {
    if let Some(old) = checkpoints.get(&cp.size) {
        assert_eq!(
            old.root, cp.root,
            "two checkpoints for tree size {} with different roots: the log forked",
            cp.size
        );
        return;
    }
    checkpoints.insert(cp.size, cp);
}

fn check_after_restart(
    server: &Server,
    acked: &[Receipt],
    checkpoints: &HashMap<u64, Checkpoint>,
    cycle: usize,
) {
    let head = server.checkpoint();
    let n = head.size;
    let max_index = acked.iter().map(|r| r.index).max().unwrap_or(0);
    assert!(
        n > max_index,
        "cycle {cycle}: tree size {n} after restart, but index {max_index} was acknowledged"
    );
    for r in acked {
        let got = server.get(&format!("/v1/records/{}", r.id));
        assert_eq!(
            got.status,
            200,
            "cycle {cycle}: acknowledged record {} (index {}) is gone: {}",
            r.id,
            r.index,
            got.text()
        );
        let got = got.json();
        assert_eq!(got["index"], r.index, "cycle {cycle}: index of {}", r.id);
        assert_eq!(
            crate::common::b64(got["leaf"].as_str().unwrap()),
            r.leaf,
            "cycle {cycle}: leaf of {}",
            r.id
        );
        let p = server
            .get(&format!(
                "/v1/proofs/inclusion?index={}&tree_size={n}",
                r.index
            ))
            .ok_json();
        let lh = hash32(p["leaf_hash"].as_str().unwrap());
        assert_eq!(
            lh,
            leaf_hash(&r.leaf),
            "cycle {cycle}: leaf hash at {}",
            r.index
        );
        assert!(
            verify_inclusion(&lh, r.index, n, &hashes(&p["hashes"]), &head.root),
            "cycle {cycle}: inclusion of {} in the restarted tree of size {n}",
            r.index
        );
    }
    for old in checkpoints.values() {
        assert!(
            old.size <= n,
            "cycle {cycle}: the tree shrank below {}",
            old.size
        );
        let p = server
            .get(&format!("/v1/proofs/consistency?from={}&to={n}", old.size))
            .ok_json();
        assert!(
            verify_consistency(old.size, n, &hashes(&p["hashes"]), &old.root, &head.root),
            "cycle {cycle}: checkpoint of size {} is not consistent with the restarted tree of size {n}",
            old.size
        );
    }
}
