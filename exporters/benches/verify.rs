//! Offline verification throughput: a bundle of 20,000 records (about 300-byte JSON records with
//! payloads, as in the ledger benches, and decisions citing earlier records) is exported once,
//! then `verify_bundle` checks it end to end: parsing, every inclusion proof, every payload
//! commitment, refs, the signed manifest. The target (issue 4) is ≥ 50,000 records/s.
//!
//! `PROVLEDGER_BENCH_BUNDLE_RECORDS` changes the number of records.
// A bench harness: panics are failures, and criterion_group! generates undocumented items.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use provledger_exporters::{export, verify_bundle, RangeScope, Scope};
use provledger_ledger::{Ledger, LedgerConfig, PreparedRecord, RecordInput};
use provledger_signer::SigningKey;
use serde_json::json;

fn record(i: u64) -> PreparedRecord {
    let refs = if i >= 1000 && i.is_multiple_of(2) {
        // Entity refs resolve to the latest version: a hash-linked DAG like real lineage.
        json!([{"role": "input", "ref": format!("scale:{}", (i - 1) % 1000)}])
    } else {
        json!([])
    };
    let input: RecordInput = serde_json::from_value(json!({
        "kind": if i.is_multiple_of(2) { "decision" } else { "input" },
        "entity": format!("scale:{}", i % 1000),
        "actor": {"type": "agent", "id": "agent-7"},
        "refs": refs,
        "attributes": {"model": "gpt-x", "policy_version": "v3", "region": "eu-west-1"},
        "payload": {"i": i, "pad": "p".repeat(160)},
    }))
    .unwrap();
    PreparedRecord::prepare(input, "record").unwrap()
}

fn verify(c: &mut Criterion) {
    let n: u64 = std::env::var("PROVLEDGER_BENCH_BUNDLE_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate("bench.example/log").unwrap();
    let ledger = Ledger::open(
        &LedgerConfig::new(dir.path()),
        SigningKey::from_skey(&key.to_skey()).unwrap(),
        &prometheus::Registry::new(),
    )
    .unwrap();
    let mut next = 0;
    while next < n {
        let end = (next + 1000).min(n);
        ledger
            .append_blocking((next..end).map(record).collect())
            .unwrap();
        next = end;
    }
    let mut bundle = Vec::new();
    export(
        &ledger,
        &key,
        &Scope::Range(RangeScope::default()),
        &mut bundle,
        &mut |_, _| {},
    )
    .unwrap();
    let trusted = [key.verifier()];
    let report = verify_bundle(bundle.as_slice(), &trusted, None).unwrap();
    assert_eq!(report.records(), n);
    eprintln!(
        "bundle: {n} records, {} bytes ({} bytes/record), {} internal refs",
        bundle.len(),
        bundle.len() as u64 / n,
        report.internal_refs()
    );

    let mut g = c.benchmark_group("verify_bundle");
    g.throughput(Throughput::Elements(n));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(15));
    g.bench_function(format!("{n}_records"), |b| {
        b.iter(|| verify_bundle(bundle.as_slice(), &trusted, None).unwrap())
    });
    g.finish();
}

criterion_group!(benches, verify);
criterion_main!(benches);
