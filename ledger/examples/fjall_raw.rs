//! Raw fjall throughput for the ledger's key shapes, as a physical limit to compare the
//! append pipeline against: `cargo run --release -p provledger-ledger --example fjall_raw`.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // example: fixed partitions, fail loudly

use std::time::Instant;

use fjall::{Config, PartitionCreateOptions, PersistMode};
use sha2::{Digest, Sha256};

// The allocator the `provledger` binary uses, so these figures match the server's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let ks = Config::new(dir.path()).open().unwrap();
    let names = ["entries", "payloads", "ids", "versions"];
    let parts: Vec<_> = names
        .iter()
        .map(|n| {
            let o = PartitionCreateOptions::default().max_memtable_size(32 * 1024 * 1024);
            ks.open_partition(n, o).unwrap()
        })
        .collect();
    let batches = 300u64;
    for keys_per_record in [1usize, 2, 3, 4] {
        let start = Instant::now();
        for b in 0..batches {
            let mut batch = ks.batch().durability(Some(PersistMode::SyncAll));
            for i in b * 1000..(b + 1) * 1000 {
                let k = i.to_be_bytes();
                batch.insert(&parts[0], k, vec![7u8; 300]);
                if keys_per_record > 1 {
                    batch.insert(&parts[1], k, vec![9u8; 200]);
                }
                if keys_per_record > 2 {
                    let h: [u8; 32] = Sha256::digest(k).into();
                    batch.insert(&parts[2], h.to_vec(), vec![1u8; 15]);
                }
                if keys_per_record > 3 {
                    batch.insert(
                        &parts[3],
                        format!("default\0scale:{}\0{i}", i % 1000),
                        vec![2u8; 32],
                    );
                }
            }
            batch.commit().unwrap();
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{keys_per_record} keys/record: {:.0} records/s, {:.0} keys/s",
            (batches * 1000) as f64 / secs,
            (batches * 1000 * keys_per_record as u64) as f64 / secs
        );
    }
}
