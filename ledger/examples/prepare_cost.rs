//! CPU cost of preparing a record (validate, PII scan and scrub, canonicalize, salt and commit
//! the payload), the work the HTTP workers do per record before the writer sees it, on the
//! benchmark's ~300-byte records: `cargo run --release -p provledger-ledger --example
//! prepare_cost`.
#![allow(clippy::unwrap_used)] // example: fixed inputs, fail loudly

use provledger_ledger::{PreparedRecord, RecordInput};
use serde_json::json;
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let mk = |i: u64| {
        serde_json::from_value::<RecordInput>(json!({
            "kind": "output",
            "entity": format!("scale:{}", i % 1000),
            "actor": {"type": "agent", "id": "agent-7"},
            "attributes": {"model": "gpt-x", "policy_version": "v3", "region": "eu-west-1"},
            "payload": {"i": i, "pad": "p".repeat(160)},
        }))
        .unwrap()
    };
    let mut total = std::time::Duration::ZERO;
    for r in 0..20 {
        let ins: Vec<RecordInput> = (0..5000).map(|i| mk(r * 5000 + i)).collect();
        let t = std::time::Instant::now();
        let out: Vec<_> = ins
            .into_iter()
            .map(|i| PreparedRecord::prepare(i, "record").unwrap())
            .collect();
        total += t.elapsed();
        drop(out);
    }
    println!("prepare {:?} per record", total / 100_000);
}
