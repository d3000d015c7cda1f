//! A load generator for a running provledger server, used for `docs/benchmarks.md`.
//!
//! ```text
//! cargo run --release --example loadgen -- URL CLIENTS RECORDS_PER_REQUEST SECONDS [RATE]
//! ```
//! Each of CLIENTS threads posts requests of RECORDS_PER_REQUEST records (~300 bytes of JSON
//! each) to `URL/v1/records` for SECONDS. With RATE (records/s over all clients) the clients
//! pace themselves (open-loop schedule: latency counts from the scheduled send time, so a
//! stalled server is not hidden by coordinated omission). Prints records/s and latency
//! percentiles of full receipts. Bounded in count and time; loopback only. A writer or admin
//! token comes from `PROVLEDGER_TOKEN` (e.g. `PROVLEDGER_TOKEN=$(cat data/admin.token)`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // a tool: fail loudly

use std::time::{Duration, Instant};

fn body(client: usize, seq: u64, n: usize) -> String {
    let records: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"kind":"output","entity":"scale:{}","actor":{{"type":"agent","id":"agent-{client}"}},"attributes":{{"model":"gpt-x","policy_version":"v3"}},"payload":{{"i":{},"pad":"{}"}}}}"#,
                (seq as usize * n + i) % 1000,
                seq as usize * n + i,
                "p".repeat(160)
            )
        })
        .collect();
    if n == 1 {
        records.into_iter().next().unwrap()
    } else {
        format!("[{}]", records.join(","))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        eprintln!("usage: loadgen URL CLIENTS RECORDS_PER_REQUEST SECONDS [RATE]");
        std::process::exit(2);
    }
    let url = format!("{}/v1/records", args[1].trim_end_matches('/'));
    let clients: usize = args[2].parse().expect("CLIENTS");
    let per_request: usize = args[3].parse().expect("RECORDS_PER_REQUEST");
    let seconds: u64 = args[4].parse().expect("SECONDS");
    let rate: Option<f64> = args.get(5).map(|r| r.parse().expect("RATE"));
    let interval = rate.map(|r| Duration::from_secs_f64(clients as f64 * per_request as f64 / r));
    let auth = format!(
        "Bearer {}",
        std::env::var("PROVLEDGER_TOKEN").unwrap_or_default().trim()
    );
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let results: Vec<(Vec<Duration>, u64, u64)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                let url = url.clone();
                let auth = auth.clone();
                s.spawn(move || {
                    let agent = ureq::AgentBuilder::new()
                        .timeout(Duration::from_secs(30))
                        .build();
                    let mut latencies = Vec::new();
                    let (mut ok, mut failed) = (0u64, 0u64);
                    let mut seq = 0u64;
                    let first = Instant::now()
                        + interval
                            .map(|i| i.mul_f64(c as f64 / clients as f64))
                            .unwrap_or_default();
                    let mut next = first;
                    while Instant::now() < deadline {
                        if interval.is_some() {
                            let now = Instant::now();
                            if next > now {
                                std::thread::sleep(next - now);
                            }
                        }
                        let scheduled = if interval.is_some() {
                            next
                        } else {
                            Instant::now()
                        };
                        let b = body(c, seq, per_request);
                        seq += 1;
                        match agent
                            .post(&url)
                            .set("Content-Type", "application/json")
                            .set("Authorization", &auth)
                            .send_string(&b)
                        {
                            Ok(resp) => {
                                let _ = resp.into_string();
                                ok += per_request as u64;
                                latencies.push(scheduled.elapsed());
                            }
                            Err(_) => failed += 1,
                        }
                        if let Some(i) = interval {
                            next += i;
                        }
                    }
                    (latencies, ok, failed)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let elapsed = started.elapsed().as_secs_f64();
    let mut all: Vec<Duration> = results.iter().flat_map(|r| r.0.iter().copied()).collect();
    all.sort_unstable();
    let ok: u64 = results.iter().map(|r| r.1).sum();
    let failed: u64 = results.iter().map(|r| r.2).sum();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(f64::NAN)
    };
    println!(
        "clients={clients} records/request={per_request} rate={} -> {:.0} records/s acknowledged, {} requests failed; latency ms p50 {:.2} p90 {:.2} p99 {:.2} max {:.2}",
        rate.map(|r| format!("{r:.0}/s")).unwrap_or_else(|| "max".into()),
        ok as f64 / elapsed,
        failed,
        pct(0.50),
        pct(0.90),
        pct(0.99),
        all.last().map(|d| d.as_secs_f64() * 1000.0).unwrap_or(f64::NAN)
    );
}
