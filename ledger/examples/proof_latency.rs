//! Inclusion-proof latency percentiles on an existing data directory (e.g. one filled through
//! the server): `cargo run --release -p provledger-ledger --example proof_latency -- DIR [N]`.
//! Opens the log with the directory's `signing.key`, asks N proofs for random indexes against
//! the current tree size, verifies each, and prints p50/p99/max. Then, for N / 10 random
//! records: reading the record with its payload (`record_at`, as `GET /v1/records/{id}` does
//! after the id lookup), and the two index reads appends and queries make: an id lookup
//! (`locate`, the `ids` partition) and the next version of the record's entity
//! (`entity_versions`, `versions`).
#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // example

use std::path::PathBuf;
use std::time::{Duration, Instant};

use provledger_ledger::{Ledger, LedgerConfig};
use provledger_signer::{verify_inclusion, SigningKey};

fn main() {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .expect("usage: proof_latency DIR [N]"),
    );
    let n: usize = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let key = SigningKey::load(&dir.join("signing.key")).unwrap();
    let started = Instant::now();
    let ledger = Ledger::open(&LedgerConfig::new(&dir), key, &prometheus::Registry::new()).unwrap();
    let head = ledger.head();
    println!(
        "opened a log of {} entries in {:?}",
        head.size,
        started.elapsed()
    );
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut random_index = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % head.size
    };
    let mut times: Vec<Duration> = Vec::with_capacity(n);
    for _ in 0..n {
        let index = random_index();
        let t = Instant::now();
        let p = ledger.inclusion_proof(index, Some(head.size)).unwrap();
        times.push(t.elapsed());
        verify_inclusion(&p.leaf_hash, index, head.size, &p.hashes, &head.root).unwrap();
    }
    report(
        &format!("{n} inclusion proofs (random index of {})", head.size),
        times,
    );

    let (mut ids, mut versions, mut records) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n / 10 {
        let t = Instant::now();
        let record = ledger.record_at(random_index()).unwrap();
        records.push(t.elapsed());
        let t = Instant::now();
        let found = ledger.locate(&record.id).unwrap();
        ids.push(t.elapsed());
        assert_eq!(found.map(|(i, _)| i), Some(record.index));
        if let Some(entity) = &record.leaf.entity {
            let t = Instant::now();
            let next = ledger
                .entity_versions(&record.leaf.tenant, entity, Some(record.index), 1)
                .unwrap();
            versions.push(t.elapsed());
            assert!(next.iter().all(|(i, _)| *i > record.index));
        }
    }
    report("records with their payloads (record_at)", records);
    report("id lookups (locate)", ids);
    report("next version of the entity (entity_versions)", versions);
}

fn report(what: &str, mut times: Vec<Duration>) {
    if times.is_empty() {
        println!("{what}: none");
        return;
    }
    times.sort_unstable();
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    println!(
        "{what}: p50 {:?} p99 {:?} max {:?}",
        at(0.50),
        at(0.99),
        times[times.len() - 1]
    );
}
