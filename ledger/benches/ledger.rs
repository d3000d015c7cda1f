//! In-process benchmarks of the ledger: a record's ingress work (parse, scrub, validate), durable
//! batch appends and inclusion proofs on a large log. Results and the commands that produce
//! them are recorded in `docs/benchmarks.md`.
//!
//! `PROVLEDGER_BENCH_LOG_SIZE` (default 1,000,000) sets the size of the log the proof bench
//! reads; it is built once under `target/bench-data/` and reused by later runs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // bench harness

use std::path::PathBuf;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use provledger_ledger::{Ledger, LedgerConfig, PreparedRecord, RecordInput};
use provledger_signer::SigningKey;
use serde_json::json;

// The allocator the `provledger` binary uses, so these figures match the server's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn record(i: u64) -> PreparedRecord {
    // ~300 bytes of JSON, like the HTTP benchmark's records.
    let input: RecordInput = serde_json::from_value(json!({
        "kind": "output",
        "entity": format!("scale:{}", i % 1000),
        "actor": {"type": "agent", "id": "agent-7"},
        "attributes": {"model": "gpt-x", "policy_version": "v3", "region": "eu-west-1"},
        "payload": {"i": i, "pad": "p".repeat(160)},
    }))
    .unwrap();
    PreparedRecord::prepare(input, "record").unwrap()
}

fn open(dir: &std::path::Path) -> Ledger {
    let key_path = dir.join("signing.key");
    let key = if key_path.exists() {
        SigningKey::load(&key_path).unwrap()
    } else {
        std::fs::create_dir_all(dir).unwrap();
        SigningKey::create_new(&key_path, "bench.example/log").unwrap()
    };
    Ledger::open(&LedgerConfig::new(dir), key, &prometheus::Registry::new()).unwrap()
}

fn append(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(dir.path());
    let mut g = c.benchmark_group("append");
    g.throughput(Throughput::Elements(1000));
    g.measurement_time(Duration::from_secs(20));
    g.sample_size(20);
    let mut next = 0u64;
    g.bench_function("batch_of_1000_fsynced_with_receipts", |b| {
        b.iter_batched(
            || {
                let batch: Vec<_> = (next..next + 1000).map(record).collect();
                next += 1000;
                batch
            },
            |batch| ledger.append_blocking(batch).unwrap(),
            BatchSize::PerIteration,
        )
    });
    // Group commit with several callers: what a server's workers do. Each caller appends its
    // own batches of 1,000; one iteration is one batch from each of the four.
    let ledger = std::sync::Arc::new(ledger);
    let mut seed = 1u64 << 40;
    g.throughput(Throughput::Elements(4000));
    g.bench_function("4_callers_batches_of_1000_fsynced_with_receipts", |b| {
        b.iter_custom(|iters| {
            let batches: Vec<Vec<Vec<PreparedRecord>>> = (0..4)
                .map(|_| {
                    (0..iters)
                        .map(|_| {
                            let batch = (seed..seed + 1000).map(record).collect();
                            seed += 1000;
                            batch
                        })
                        .collect()
                })
                .collect();
            let start = std::time::Instant::now();
            std::thread::scope(|s| {
                for mine in batches {
                    let ledger = std::sync::Arc::clone(&ledger);
                    s.spawn(move || {
                        for batch in mine {
                            ledger.append_blocking(batch).unwrap();
                        }
                    });
                }
            });
            start.elapsed()
        })
    });
    g.finish();
}

/// What the server does to each submitted record before it reaches the pipeline: parse the JSON,
/// scrub the payload with the built-in policy, validate, commit to the payload. The record is
/// the HTTP benchmark's (`bench/wrk-records.lua`).
fn prepare(c: &mut Criterion) {
    let body = format!(
        r#"{{"kind":"output","entity":"scale:7","actor":{{"type":"agent","id":"agent-1"}},"attributes":{{"model":"gpt-x","policy_version":"v3"}},"payload":{{"i":12345,"pad":"{}"}}}}"#,
        "p".repeat(160)
    );
    let mut g = c.benchmark_group("ingress");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_and_prepare_one_record", |b| {
        b.iter(|| {
            let input: RecordInput = serde_json::from_str(&body).unwrap();
            PreparedRecord::prepare(input, "record").unwrap()
        })
    });
    g.bench_function("scan_160_letters", |b| {
        let text = "p".repeat(160);
        b.iter(|| provledger_ledger::scan(&text, &provledger_ledger::PiiKind::ALL))
    });
    g.finish();
}

fn proofs(c: &mut Criterion) {
    let size: u64 = std::env::var("PROVLEDGER_BENCH_LOG_SIZE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/bench-data")
        .join(format!("log-{size}"));
    let ledger = open(&dir);
    let have = ledger.head().size;
    if have < size {
        eprintln!(
            "building a log of {size} entries under {} (once)",
            dir.display()
        );
        let mut i = have;
        while i < size {
            let n = (size - i).min(5000);
            ledger
                .append_blocking((i..i + n).map(record).collect())
                .unwrap();
            i += n;
        }
    }
    let size = ledger.head().size;
    let mut g = c.benchmark_group("proofs");
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    g.bench_function(format!("inclusion_random_index_of_{size}"), |b| {
        b.iter(|| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ledger.inclusion_proof(x % size, None).unwrap()
        })
    });
    g.bench_function(format!("consistency_random_sizes_of_{size}"), |b| {
        b.iter(|| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let from = 1 + x % (size - 1);
            ledger.consistency_proof(from, size).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, prepare, append, proofs);
criterion_main!(benches);
