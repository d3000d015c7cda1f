//! Appends N records (batches of 5,000) to the ledger in DIR, opening it as it is: run it twice
//! on the same directory to check that appends go on after a reopen.
//!
//! ```text
//! cargo run --release -p provledger-ledger --example reopen_under_load -- DIR 200000
//! cargo run --release -p provledger-ledger --example reopen_under_load -- DIR 100000
//! ```
//! Before `store::unstall_flushes`, the second run stalled forever inside fjall (flush-permit
//! starvation after recovery, see that function); with it, it runs at the first run's rate.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // a tool: fail loudly
use provledger_ledger::{Ledger, LedgerConfig, PreparedRecord, RecordInput};
use provledger_signer::SigningKey;
use serde_json::json;
use std::time::Instant;

fn record(i: u64) -> PreparedRecord {
    let input: RecordInput = serde_json::from_value(json!({
        "kind": "output", "entity": format!("scale:{}", i % 1000),
        "actor": {"type": "agent", "id": format!("agent-{}", i % 7)},
        "attributes": {"model": "gpt-x"},
        "payload": {"i": i, "pad": "p".repeat(160)},
    }))
    .unwrap();
    PreparedRecord::prepare(input, "record").unwrap()
}

fn main() {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).unwrap());
    let n: u64 = std::env::args().nth(2).unwrap().parse().unwrap();
    let key_path = dir.join("signing.key");
    let key = if key_path.exists() {
        SigningKey::load(&key_path).unwrap()
    } else {
        std::fs::create_dir_all(&dir).unwrap();
        SigningKey::create_new(&key_path, "x/log").unwrap()
    };
    let ledger = Ledger::open(&LedgerConfig::new(&dir), key, &prometheus::Registry::new()).unwrap();
    let start = ledger.head().size;
    let t = Instant::now();
    let mut i = start;
    while i < start + n {
        ledger
            .append_blocking((i..i + 5000).map(record).collect())
            .unwrap();
        i += 5000;
        if i.is_multiple_of(50000) {
            eprintln!("{i} at {:?}", t.elapsed());
        }
    }
    eprintln!("done {} in {:?}", ledger.head().size, t.elapsed());
}
