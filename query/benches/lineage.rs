//! Lineage at scale: an upstream trace of depth 10 and downstream paging from a hot policy
//! version, on a log shaped like an agent deployment. Results and commands are in
//! `docs/benchmarks.md`.
//!
//! The log (built once under `target/bench-data/lineage-<N>` and reused) repeats an episode of
//! six records: five inputs (`msg:<e>:<k>`), then a decision citing the five inputs, a model
//! version (one of 20), a policy version (one of 20, or `policy:hot` for the first 100,000
//! decisions that draw it) and, as `parent`, the previous decision of its chain. Chains are ten
//! decisions long, so the last decision of a chain rests on ten levels of decisions, each with
//! its own inputs: about 80 records upstream.
//!
//! `PROVLEDGER_BENCH_LOG_SIZE` (default 1,000,000) sets N. The same directory serves the HTTP
//! measurement (`examples/lineage_http.rs` in the root package), so a `signing.key` lives in it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // bench harness

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use provledger_ledger::{Ledger, LedgerConfig, PreparedRecord, RecordInput};
use provledger_query::{cited_by, trace, Direction, Limits, Page, TraceOptions};
use provledger_signer::{Hash, SigningKey};
use serde_json::json;

/// Records per episode: five inputs and a decision.
const EPISODE: u64 = 6;
/// Chains run in parallel; each is `CHAIN_LEN` decisions long before a new one starts.
const CHAINS: u64 = 64;
const CHAIN_LEN: u64 = 10;
/// Decisions citing the hot policy version.
const HOT: u64 = 100_000;

fn log_size() -> u64 {
    std::env::var("PROVLEDGER_BENCH_LOG_SIZE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000)
}

fn open(dir: &Path) -> Ledger {
    let key_path = dir.join("signing.key");
    let key = if key_path.exists() {
        SigningKey::load(&key_path).unwrap()
    } else {
        std::fs::create_dir_all(dir).unwrap();
        SigningKey::create_new(&key_path, "bench.example/log").unwrap()
    };
    Ledger::open(&LedgerConfig::new(dir), key, &prometheus::Registry::new()).unwrap()
}

fn actor(id: &str) -> serde_json::Value {
    json!({"type": "agent", "id": id})
}

/// The records of episode `e` (decision last). `hot` says whether the decision cites the hot
/// policy version.
fn episode(e: u64, hot: bool) -> Vec<RecordInput> {
    let chain = e % CHAINS;
    let step = e / CHAINS;
    let (generation, position) = (step / CHAIN_LEN, step % CHAIN_LEN);
    let mut out = Vec::with_capacity(EPISODE as usize);
    for k in 0..5 {
        out.push(
            serde_json::from_value(json!({
                "kind": "input",
                "entity": format!("msg:{e}:{k}"),
                "actor": actor("ingest"),
                "attributes": {"channel": "chat", "k": k},
                "payload": {"text": format!("customer message {e}/{k} about order {}", e * 7 + k)},
            }))
            .unwrap(),
        );
    }
    let mut refs: Vec<serde_json::Value> = (0..5)
        .map(|k| json!({"role": "input", "ref": format!("msg:{e}:{k}")}))
        .collect();
    refs.push(json!({"role": "model", "ref": format!("model:m{}", e % 20)}));
    let policy = if hot {
        "policy:hot".to_owned()
    } else {
        format!("policy:p{}", e % 20)
    };
    refs.push(json!({"role": "policy", "ref": policy}));
    let entity = format!("chain:{chain}:{generation}");
    if position > 0 {
        refs.push(json!({"role": "parent", "ref": entity}));
    }
    out.push(
        serde_json::from_value(json!({
            "kind": "decision",
            "entity": entity,
            "actor": actor(&format!("agent-{}", chain % 8)),
            "refs": refs,
            "attributes": {"position": position, "action": "refund"},
            "payload": {"amount_eur": e % 500, "reason": "policy allows"},
        }))
        .unwrap(),
    );
    out
}

fn prepare(inputs: Vec<RecordInput>) -> Vec<PreparedRecord> {
    inputs
        .into_iter()
        .map(|i| PreparedRecord::prepare(i, "record").unwrap())
        .collect()
}

/// The cached log, built on first use; returns it with the ids of some last-of-chain decisions
/// and of the hot policy version.
fn lineage_log() -> (Ledger, Vec<Hash>, Hash) {
    let size = log_size();
    let dir: PathBuf = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/bench-data")
        .join(format!("lineage-{size}"));
    let ledger = open(&dir);
    if ledger.head().size == 0 {
        eprintln!(
            "building a lineage log of {size} records under {} (once)",
            dir.display()
        );
        let started = Instant::now();
        let mut setup = Vec::new();
        for m in 0..20 {
            setup.push(json!({"kind": "model", "entity": format!("model:m{m}"), "actor": actor("mlops"), "attributes": {"digest": format!("sha256:{m:064x}")}}));
            setup.push(json!({"kind": "policy", "entity": format!("policy:p{m}"), "actor": actor("governance"), "attributes": {"version": format!("v{m}")}}));
        }
        setup.push(json!({"kind": "policy", "entity": "policy:hot", "actor": actor("governance"), "attributes": {"version": "v3"}}));
        let setup = setup
            .into_iter()
            .map(|v| serde_json::from_value(v).unwrap())
            .collect();
        ledger.append_blocking(prepare(setup)).unwrap();
        let episodes = (size.saturating_sub(41)) / EPISODE;
        let mut hot = 0;
        let mut e = 0;
        while e < episodes {
            let mut batch = Vec::new();
            while e < episodes && batch.len() < 6_000 {
                let is_hot = hot < HOT && e % 10 == 3;
                hot += u64::from(is_hot);
                batch.extend(episode(e, is_hot));
                e += 1;
            }
            ledger.append_blocking(prepare(batch)).unwrap();
            if e % 100_000 < 1_000 {
                eprintln!(
                    "  {} records, {:.0} records/s",
                    ledger.head().size,
                    ledger.head().size as f64 / started.elapsed().as_secs_f64()
                );
            }
        }
        eprintln!(
            "built {} records in {:.0} s",
            ledger.head().size,
            started.elapsed().as_secs_f64()
        );
    }
    // Last decisions of complete chains: episode e with position 9 is at index
    // 41 + 6e + 5; take them from the second half of the log.
    let episodes = (ledger.head().size - 41) / EPISODE;
    let mut deep = Vec::new();
    let mut e = episodes / 2;
    while deep.len() < 200 && e < episodes {
        if (e / CHAINS) % CHAIN_LEN == CHAIN_LEN - 1 {
            let r = ledger.record_at(41 + EPISODE * e + 5).unwrap();
            assert_eq!(r.leaf.kind, "decision");
            deep.push(r.id);
        }
        e += 7;
    }
    let hot = ledger.record_at(40).unwrap();
    assert_eq!(hot.leaf.entity.as_deref(), Some("policy:hot"));
    std::fs::write(
        dir.join("bench-ids.txt"),
        deep.iter()
            .map(|h| format!("{}\n", h.to_hex()))
            .collect::<String>(),
    )
    .unwrap();
    (ledger, deep, hot.id)
}

fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    (at(0.5), at(0.99))
}

fn lineage(c: &mut Criterion) {
    let (ledger, deep, hot) = lineage_log();
    let upstream = |id: &Hash| {
        let opts = TraceOptions {
            limits: Limits::new(Some(10), Some(10_000)).unwrap(),
            ..TraceOptions::new(Direction::Upstream)
        };
        trace(&ledger, id, &opts).unwrap()
    };
    // Shape check, and a plain percentile read-out beside criterion's estimate.
    let nodes = upstream(&deep[0]).nodes.len();
    let samples: Vec<Duration> = deep
        .iter()
        .cycle()
        .take(1000)
        .map(|id| {
            let t = Instant::now();
            let _ = upstream(id);
            t.elapsed()
        })
        .collect();
    let (p50, p99) = percentiles(samples);
    eprintln!(
        "upstream depth 10 on {} records: {nodes} nodes, p50 {p50:?}, p99 {p99:?}",
        ledger.head().size
    );

    let mut g = c.benchmark_group("lineage");
    g.sample_size(100);
    g.measurement_time(Duration::from_secs(10));
    let mut i = 0;
    g.bench_function("upstream_depth_10", |b| {
        b.iter(|| {
            i = (i + 1) % deep.len();
            upstream(&deep[i])
        })
    });

    // Downstream from the hot policy: page 100 at a time; each page costs the same wherever
    // it starts, whatever the total.
    let mut after: Option<String> = None;
    let mut pages = Vec::new();
    let mut total = 0;
    loop {
        let page = Page::new(Some(100), after.as_deref()).unwrap();
        let t = Instant::now();
        let conn = cited_by(&ledger, &hot, &page, None).unwrap();
        pages.push(t.elapsed());
        total += conn.items.len();
        match (conn.has_next_page, conn.end_cursor) {
            (true, Some(c)) => after = Some(c.to_string()),
            _ => break,
        }
    }
    let count = pages.len();
    let (p50, p99) = percentiles(pages);
    eprintln!("downstream from policy:hot: {total} citing decisions in {count} pages of 100, page p50 {p50:?}, p99 {p99:?}");
    let deep_cursor = {
        let page = Page::new(Some(100), None).unwrap();
        let mut conn = cited_by(&ledger, &hot, &page, None).unwrap();
        // Jump far in: the cursor is a log position, so page 500 costs what page 1 costs.
        for _ in 0..(total / 200).min(500) {
            let next =
                Page::new(Some(100), conn.end_cursor.map(|c| c.to_string()).as_deref()).unwrap();
            conn = cited_by(&ledger, &hot, &next, None).unwrap();
        }
        conn.end_cursor.map(|c| c.to_string())
    };
    g.bench_function("downstream_page_of_100_mid_listing", |b| {
        b.iter(|| {
            let page = Page::new(Some(100), deep_cursor.as_deref()).unwrap();
            cited_by(&ledger, &hot, &page, None).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, lineage);
criterion_main!(benches);
