//! Raw fjall throughput for the ledger's key shapes, as a physical limit to compare the
//! append pipeline against: `cargo run --release -p provledger-ledger --example fjall_raw --
//! [memtable MiB, default 16]`.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // example: fixed partitions, fail loudly

use std::time::Instant;

use fjall::{Config, PartitionCreateOptions, PersistMode};
use sha2::{Digest, Sha256};

// The allocator the `provledger` binary uses, so these figures match the server's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let batches = 300u64;
    let memtable_mib: u32 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(16);
    // The ledger's four keys a record (entries, payloads, ids, versions) one at a time, then the
    // same four with the leaves of `chunk` records sharing one key and their payloads one key
    // per `chunk` or per 16 (the ledger's shape since session 16: leaves in runs of 64,
    // payloads in runs of 16).
    let shapes = [
        (1usize, 1u64, 1u64),
        (2, 1, 1),
        (3, 1, 1),
        (4, 1, 1),
        (4, 16, 16),
        (4, 64, 64),
        (4, 64, 16),
    ];
    for (keys_per_record, chunk, payload_chunk) in shapes {
        // A fresh keyspace each, so one variant's flushes and compactions do not slow the next.
        let dir = tempfile::tempdir().unwrap();
        let ks = Config::new(dir.path()).open().unwrap();
        let names = ["entries", "payloads", "ids", "versions"];
        let parts: Vec<_> = names
            .iter()
            .map(|n| {
                let o =
                    PartitionCreateOptions::default().max_memtable_size(memtable_mib * 1024 * 1024);
                ks.open_partition(n, o).unwrap()
            })
            .collect();
        let start = Instant::now();
        for b in 0..batches {
            let mut batch = ks.batch().durability(Some(PersistMode::SyncAll));
            // The random keys go in sorted, as the ledger adds them (`pipeline.rs`, `Scattered`).
            let mut scattered: [Vec<(Vec<u8>, Vec<u8>)>; 2] = Default::default();
            for i in b * 1000..(b + 1) * 1000 {
                let k = i.to_be_bytes();
                if chunk > 1 {
                    if (i + 1) % chunk == 0 {
                        let first = (i + 1 - chunk).to_be_bytes();
                        batch.insert(&parts[0], first, vec![7u8; 302 * chunk as usize]);
                    }
                    if (i + 1) % payload_chunk == 0 {
                        let first = (i + 1 - payload_chunk).to_be_bytes();
                        let run = vec![9u8; 236 * payload_chunk as usize];
                        batch.insert(&parts[1], first, run);
                    }
                } else {
                    batch.insert(&parts[0], k, vec![7u8; 300]);
                    if keys_per_record > 1 {
                        batch.insert(&parts[1], k, vec![9u8; 200]);
                    }
                }
                if keys_per_record > 2 {
                    let h: [u8; 32] = Sha256::digest(k).into();
                    scattered[0].push((h.to_vec(), vec![1u8; 15]));
                }
                if keys_per_record > 3 {
                    // `entity_versions` (session 17): a 12-byte digest of the name ‖ index.
                    let name = format!("default\0scale:{}\0", i % 1000);
                    let mut version = Sha256::digest(name)[..12].to_vec();
                    version.extend_from_slice(&k);
                    scattered[1].push((version, vec![2u8; 52]));
                }
            }
            for (part, mut writes) in parts[2..].iter().zip(scattered) {
                writes.sort_unstable();
                for (key, value) in writes {
                    batch.insert(part, key, value);
                }
            }
            batch.commit().unwrap();
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{keys_per_record} keys/record, leaves chunked by {chunk}, payloads by {payload_chunk}: {:.0} records/s",
            (batches * 1000) as f64 / secs,
        );
    }
}
