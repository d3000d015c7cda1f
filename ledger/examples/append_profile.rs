//! Appends batches of 1,000 records in process and prints where the time goes, using the
//! ledger's own Prometheus histograms. `cargo run --release -p provledger-ledger --example
//! append_profile -- [batches] [callers]`; `MAX_BATCH=N` overrides the group-commit cap,
//! `APPEND_DIR=DIR` writes the log to a new directory DIR and keeps it, `REFS=N` makes each
//! record cite N earlier records by entity name (`REF_BY=id`: by record id) out of `SOURCES`
//! (default 1,000) appended before the timing.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // example

use std::time::Instant;

use provledger_ledger::{Ledger, LedgerConfig, PreparedRecord, RecordInput};
use provledger_signer::SigningKey;
use serde_json::json;

// The allocator the `provledger` binary uses, so these figures match the server's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Counts fjall's stall and halt messages (it logs them at `info` through the `log` crate).
struct StallCounter(std::sync::Mutex<std::collections::BTreeMap<String, u64>>);

impl log::Log for StallCounter {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::Level::Info
    }

    fn log(&self, r: &log::Record<'_>) {
        let msg = r.args().to_string();
        if msg.contains("stall") || msg.contains("halt") || msg.contains("Stalling") {
            // One line per kind of stall, whatever the numbers in it.
            let kind: String = msg.chars().filter(|c| !c.is_ascii_digit()).collect();
            *self.0.lock().unwrap().entry(kind).or_default() += 1;
        }
    }

    fn flush(&self) {}
}

static STALLS: std::sync::LazyLock<StallCounter> =
    std::sync::LazyLock::new(|| StallCounter(Default::default()));

fn main() {
    log::set_logger(&*STALLS).unwrap();
    log::set_max_level(log::LevelFilter::Info);
    let batches: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let threads: u64 = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    // `APPEND_DIR=DIR` keeps the log (a fresh DIR) for `proof_latency` to read afterwards.
    let tmp = tempfile::tempdir().unwrap();
    let dir = std::env::var_os("APPEND_DIR").map_or_else(|| tmp.path().to_path_buf(), Into::into);
    let registry = prometheus::Registry::new();
    std::fs::create_dir_all(&dir).unwrap();
    let key = SigningKey::create_new(&dir.join("signing.key"), "bench.example/log").unwrap();
    let mut config = LedgerConfig::new(&dir);
    if let Some(m) = std::env::var("MAX_BATCH").ok().and_then(|s| s.parse().ok()) {
        config.max_batch_records = m;
    }
    let ledger = Ledger::open(&config, key, &registry).unwrap();
    // `REFS=N`: each record cites N of 1,000 source records appended before the timing, by
    // entity name (`REF_BY=name`, the default) or by record id (`REF_BY=id`).
    let refs: usize = std::env::var("REFS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let by_id = std::env::var("REF_BY").is_ok_and(|s| s == "id");
    // `SOURCES=N` (default 1,000): how many source records there are. Each record's refs are
    // the next sources in turn, so with many sources (e.g. 100,000) no source is cited again
    // before ~N/REFS records have passed: the writer's maps of recent records miss.
    let source_count: usize = std::env::var("SOURCES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let mut sources: Vec<String> = Vec::new();
    if refs > 0 {
        for start in (0..source_count).step_by(1000) {
            let end = (start + 1000).min(source_count);
            let batch = (start..end)
                .map(|k| {
                    let input: RecordInput = serde_json::from_value(json!({
                        "kind": "input", "entity": format!("source:{k}"),
                        "actor": {"type": "system", "id": "crm"}, "payload": {"k": k},
                    }))
                    .unwrap();
                    PreparedRecord::prepare(input, "record").unwrap()
                })
                .collect();
            let receipts = ledger.append_blocking(batch).unwrap();
            sources.extend((start..end).zip(&receipts).map(|(k, r)| {
                if by_id {
                    r.id.to_string()
                } else {
                    format!("source:{k}")
                }
            }));
        }
    }
    let before_size = ledger.head().size;
    let prepared: Vec<Vec<PreparedRecord>> = (0..batches)
        .map(|b| {
            (b * 1000..(b + 1) * 1000)
                .map(|i| {
                    let cited: Vec<_> = (0..refs)
                        .map(|r| {
                            let k = (i as usize * refs + r) % source_count;
                            json!({"role": "input", "ref": sources[k]})
                        })
                        .collect();
                    let input: RecordInput = serde_json::from_value(json!({
                    "kind": "output",
                    "entity": format!("scale:{}", i % 1000),
                    "actor": {"type": "agent", "id": "agent-7"},
                    "refs": cited,
                    "attributes": {"model": "gpt-x", "policy_version": "v3", "region": "eu-west-1"},
                    "payload": {"i": i, "pad": "p".repeat(160)},
                }))
                .unwrap();
                    PreparedRecord::prepare(input, "record").unwrap()
                })
                .collect()
        })
        .collect();
    // Preparing the records (above) is the main thread's; callers are named apart.
    let before = thread_ticks();
    let started = Instant::now();
    std::thread::scope(|s| {
        let mut work = prepared.into_iter();
        let per = (batches / threads).max(1) as usize;
        for _ in 0..threads {
            let mine: Vec<_> = work.by_ref().take(per).collect();
            let l = ledger.clone();
            let caller = std::thread::Builder::new().name("caller".into());
            caller
                .spawn_scoped(s, move || {
                    for b in mine {
                        l.append_blocking(b).unwrap();
                    }
                })
                .unwrap();
        }
    });
    let total = started.elapsed().as_secs_f64();
    let n = (ledger.head().size - before_size) as f64;
    println!(
        "records: {n}, threads {threads}, append {total:.2}s = {:.0} records/s",
        n / total
    );
    for mf in registry.gather() {
        for m in mf.get_metric() {
            // Counters too: time the committer waited for flushes, stalls, rotations.
            let c = m.get_counter().get_value();
            if c > 0.0 && mf.get_field_type() == prometheus::proto::MetricType::COUNTER {
                println!("{}: {c:.3}", mf.get_name());
            }
            let h = m.get_histogram();
            if h.get_sample_count() > 0 {
                println!(
                    "{}: count {} sum {:.3}s",
                    mf.get_name(),
                    h.get_sample_count(),
                    h.get_sample_sum()
                );
                // How the time is spread: a few slow batches (storage stalls) or all of them.
                let mut below = 0;
                let buckets: Vec<String> = h
                    .get_bucket()
                    .iter()
                    .filter_map(|b| {
                        let n = b.get_cumulative_count() - below;
                        below = b.get_cumulative_count();
                        (n > 0).then(|| format!("≤{}s: {n}", b.get_upper_bound()))
                    })
                    .collect();
                println!("  {}", buckets.join(", "));
            }
        }
    }
    for (what, n) in STALLS.0.lock().unwrap().iter() {
        println!("fjall: {n} × {what}");
    }
    println!(
        "CPU by thread while appending (µs per record): {}",
        thread_cpu(&before, n)
    );
}

/// CPU ticks (user + system) used so far by each thread name and by the whole process
/// (`process`); Linux only (`/proc/self`), empty elsewhere.
fn thread_ticks() -> std::collections::BTreeMap<String, f64> {
    let mut by_name = std::collections::BTreeMap::<String, f64>::new();
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    by_name.insert("process".into(), ticks(&stat));
    for task in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        *by_name.entry(comm.trim().to_owned()).or_default() += ticks(&stat);
    }
    by_name
}

/// User + system ticks in a `/proc/…/stat` line.
fn ticks(stat: &str) -> f64 {
    // Fields after the parenthesised name: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    f.get(11).unwrap_or(&0.0) + f.get(12).unwrap_or(&0.0)
}

/// CPU time used since `before` by each thread name, per record appended. `process` is the
/// whole process, threads that have exited included: the callers, and fjall's flush threads
/// (one per partition flushed, so most of the flushing is there and not under `flusher`).
fn thread_cpu(before: &std::collections::BTreeMap<String, f64>, records: f64) -> String {
    let tick = 1e6 / 100.0; // USER_HZ is 100 on every Linux platform Rust targets.
    let used: Vec<(String, f64)> = thread_ticks()
        .into_iter()
        .map(|(name, t)| {
            let us = (t - before.get(&name).unwrap_or(&0.0)) * tick / records;
            (name, us)
        })
        .filter(|(_, us)| *us >= 0.05)
        .collect();
    let each: Vec<String> = used
        .iter()
        .map(|(name, us)| format!("{name} {us:.2}"))
        .collect();
    each.join(", ")
}
