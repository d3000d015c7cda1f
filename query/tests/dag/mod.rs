//! Lineage is a DAG because every reference points to an earlier leaf; these tests prove it on
//! random graphs appended to the real ledger (refs by id across batches, by entity name inside
//! a batch) instead of assuming it, and check traversal against an in-memory closure.

use std::collections::{BTreeMap, VecDeque};

use proptest::prelude::*;
use provledger_ledger::{LedgerError, PreparedRecord, RecordInput};
use provledger_query::{trace, Direction, Limits, TraceOptions};
use serde_json::json;

use crate::scenario::Scenario;

/// Record i: whether it starts a new batch, and the earlier records it cites (picked from
/// 0..i), each by id or by entity name.
#[derive(Clone, Debug)]
struct Spec {
    records: Vec<(bool, Vec<(prop::sample::Index, bool)>)>,
}

fn spec() -> impl Strategy<Value = Spec> {
    prop::collection::vec(
        (
            prop::bool::weighted(0.3),
            prop::collection::vec((any::<prop::sample::Index>(), any::<bool>()), 0..4),
        ),
        1..24,
    )
    .prop_map(|records| Spec { records })
}

/// Appends the graph; returns, per record, the indexes of the records it cites.
fn build(spec: &Spec) -> (Scenario, Vec<Vec<usize>>) {
    let mut s = Scenario::empty();
    let mut cites: Vec<Vec<usize>> = Vec::new();
    let mut batch: Vec<(String, serde_json::Value)> = Vec::new();
    let flush = |s: &mut Scenario, batch: &mut Vec<(String, serde_json::Value)>| {
        if !batch.is_empty() {
            let named: Vec<(&str, serde_json::Value)> =
                batch.iter().map(|(n, v)| (n.as_str(), v.clone())).collect();
            s.append(named);
            batch.clear();
        }
    };
    for (i, (new_batch, picks)) in spec.records.iter().enumerate() {
        if *new_batch {
            flush(&mut s, &mut batch);
        }
        let committed = s.ledger.head().size as usize;
        let mut targets = Vec::new();
        let mut refs = Vec::new();
        if i > 0 {
            for (pick, by_id) in picks {
                let j = pick.index(i);
                targets.push(j);
                // Ids are known only once a batch is committed; inside a batch, cite by name.
                let target = if *by_id && j < committed {
                    s.id(&format!("r{j}")).to_hex()
                } else {
                    format!("node:{j}")
                };
                refs.push(json!({"role": format!("role{}", j % 3), "ref": target}));
            }
        }
        cites.push(targets);
        batch.push((
            format!("r{i}"),
            json!({"kind": "step", "entity": format!("node:{i}"),
                   "actor": {"type": "agent", "id": "gen"}, "refs": refs}),
        ));
    }
    flush(&mut s, &mut batch);
    (s, cites)
}

/// Shortest distances from `start` following `next`.
fn bfs(start: usize, next: impl Fn(usize) -> Vec<usize>) -> BTreeMap<usize, u32> {
    let mut dist = BTreeMap::from([(start, 0)]);
    let mut queue = VecDeque::from([start]);
    while let Some(n) = queue.pop_front() {
        let d = dist[&n];
        for m in next(n) {
            dist.entry(m).or_insert_with(|| {
                queue.push_back(m);
                d + 1
            });
        }
    }
    dist
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn refs_point_to_earlier_leaves_and_traces_match_the_closure(spec in spec()) {
        let (s, cites) = build(&spec);
        let n = cites.len();
        prop_assert_eq!(s.ledger.head().size as usize, n);
        // The ordering itself: every ref of every leaf names a strictly earlier index, so no
        // path can return to where it started.
        for (i, cited) in cites.iter().enumerate() {
            let r = s.ledger.record_at(i as u64).unwrap();
            for lr in &r.leaf.refs {
                let (j, _) = s.ledger.locate(&provledger_signer::Hash(lr.hash)).unwrap().unwrap();
                prop_assert!(j < i as u64, "record {} cites {}", i, j);
            }
            let got: Vec<u64> = r.leaf.refs.iter()
                .map(|lr| s.ledger.locate(&provledger_signer::Hash(lr.hash)).unwrap().unwrap().0)
                .collect();
            let want: Vec<u64> = cited.iter().map(|j| *j as u64).collect();
            prop_assert_eq!(got, want);
        }
        let limits = Limits::new(Some(50), Some(10_000)).unwrap();
        for start in 0..n {
            for direction in [Direction::Upstream, Direction::Downstream] {
                let want = bfs(start, |k| match direction {
                    Direction::Upstream => cites[k].clone(),
                    _ => (0..n).filter(|c| cites[*c].contains(&k)).collect(),
                });
                let mut o = TraceOptions::new(direction);
                o.limits = limits;
                let l = trace(&s.ledger, &s.id(&format!("r{start}")), &o).unwrap();
                let got: BTreeMap<usize, u32> =
                    l.nodes.iter().map(|x| (x.index as usize, x.depth)).collect();
                prop_assert_eq!(got.len(), l.nodes.len(), "each node once");
                prop_assert_eq!(&got, &want);
                prop_assert!(!l.truncated);
                // Every reference among reached records, once per ref, citing → cited.
                let edges: Vec<(u64, u64)> = l.edges.iter().map(|e| {
                    let from = s.ledger.locate(&e.from).unwrap().unwrap().0;
                    let to = s.ledger.locate(&e.to).unwrap().unwrap().0;
                    (from, to)
                }).collect();
                prop_assert!(edges.iter().all(|(f, t)| f > t), "edges point back in the log");
                let mut want_edges: Vec<(u64, u64)> = want.keys()
                    .flat_map(|k| cites[*k].iter().map(move |c| (*k, *c)))
                    .filter(|(f, t)| want.contains_key(f) && want.contains_key(t))
                    .filter(|(f, t)| match direction {
                        Direction::Upstream => want.contains_key(f),
                        _ => want.contains_key(t),
                    })
                    .map(|(f, t)| (f as u64, t as u64))
                    .collect();
                let mut edges = edges;
                edges.sort_unstable();
                want_edges.sort_unstable();
                prop_assert_eq!(edges, want_edges);
            }
        }
    }
}

#[test]
fn a_ref_to_a_record_not_yet_in_the_log_is_refused() {
    let s = Scenario::empty();
    let ahead = |target: &str| {
        let input: RecordInput = serde_json::from_value(json!({
            "kind": "step", "entity": "node:0", "actor": {"type": "agent", "id": "gen"},
            "refs": [{"role": "parent", "ref": target}],
        }))
        .unwrap();
        PreparedRecord::prepare(input, "record").unwrap()
    };
    // An id nobody has appended (a future record's hash cannot be known before it exists).
    let unknown = provledger_signer::Hash([9; 32]).to_hex();
    assert!(matches!(
        s.ledger.append_blocking(vec![ahead(&unknown)]),
        Err(LedgerError::UnknownRef { .. })
    ));
    // Inside one batch, a name only a later record of the batch defines.
    let later: RecordInput = serde_json::from_value(json!({
        "kind": "step", "entity": "node:later", "actor": {"type": "agent", "id": "gen"},
    }))
    .unwrap();
    let batch = vec![
        ahead("node:later"),
        PreparedRecord::prepare(later, "record").unwrap(),
    ];
    assert!(matches!(
        s.ledger.append_blocking(batch),
        Err(LedgerError::UnknownRef { .. })
    ));
    // A record citing itself by its own entity name cites its previous version, or nothing.
    assert!(matches!(
        s.ledger.append_blocking(vec![ahead("node:0")]),
        Err(LedgerError::UnknownRef { .. })
    ));
    assert_eq!(s.ledger.head().size, 0, "refused batches leave no trace");
}
