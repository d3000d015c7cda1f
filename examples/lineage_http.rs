//! Upstream lineage over HTTP: GraphQL `lineage` queries against a running server, one at a
//! time, with every node's inclusion proof, for `docs/benchmarks.md`.
//!
//! ```text
//! PROVLEDGER_TOKEN=$(cat DIR/admin.token) \
//!   cargo run --release --example lineage_http -- URL IDS_FILE REQUESTS
//! ```
//! IDS_FILE holds record ids, one per line (the lineage bench writes `bench-ids.txt` beside its
//! log). Prints the node count and latency percentiles of complete answers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // a tool: fail loudly

use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: lineage_http URL IDS_FILE REQUESTS");
        std::process::exit(2);
    }
    let url = format!("{}/graphql", args[1].trim_end_matches('/'));
    let ids: Vec<String> = std::fs::read_to_string(&args[2])
        .expect("IDS_FILE")
        .lines()
        .map(str::to_owned)
        .collect();
    let requests: usize = args[3].parse().expect("REQUESTS");
    let auth = format!(
        "Bearer {}",
        std::env::var("PROVLEDGER_TOKEN").unwrap_or_default().trim()
    );
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build();
    let mut latencies = Vec::with_capacity(requests);
    let mut nodes = 0;
    for i in 0..requests {
        let query = format!(
            r#"{{ lineage(id: "{}", direction: UPSTREAM, depth: 10) {{ checkpoint {{ treeSize rootHash }} nodes {{ id index kind proof {{ hashes }} }} edges {{ from to role }} }} }}"#,
            ids[i % ids.len()]
        );
        let started = Instant::now();
        let answer: serde_json::Value = agent
            .post(&url)
            .set("Authorization", &auth)
            .send_json(serde_json::json!({ "query": query }))
            .expect("POST /graphql")
            .into_json()
            .expect("JSON");
        latencies.push(started.elapsed());
        assert!(answer["errors"].is_null(), "{answer}");
        nodes = answer["data"]["lineage"]["nodes"].as_array().unwrap().len();
    }
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    println!(
        "{requests} upstream traces of depth 10 ({nodes} nodes each, with proofs): p50 {:?}, p90 {:?}, p99 {:?}",
        at(0.5),
        at(0.9),
        at(0.99)
    );
}
