//! `records(filter)` served by the kind, actor and entity indexes and time ranges: on random
//! logs (several tenants, kinds, actors, entities, batches), every filter and tenant scope lists
//! exactly what a brute-force reading of the whole log keeps, oldest first, across pages.

use proptest::prelude::*;
use provledger_ledger::{Leaf, DEFAULT_TENANT};
use provledger_query::{records, Page, RecordFilter};
use serde_json::json;

use crate::scenario::Scenario;

const TENANTS: [&str; 3] = ["default", "t1", "t2"];
const KINDS: [&str; 2] = ["input", "decision"];
const ACTOR_TYPES: [&str; 2] = ["agent", "human"];
const ACTOR_IDS: [&str; 2] = ["a", "b"];
const ENTITIES: [&str; 2] = ["e:1", "e:2"];

/// One record: (starts a batch, tenant, kind, actor type, actor id, entity).
type Spec = (bool, usize, usize, usize, usize, Option<usize>);

/// A filter as indexes into the constants; times as record positions whose time is used.
#[derive(Clone, Debug)]
struct FilterSpec {
    tenant: Option<usize>,
    kind: Option<usize>,
    entity: Option<usize>,
    actor_type: Option<usize>,
    actor_id: Option<usize>,
    from: Option<prop::sample::Index>,
    to: Option<prop::sample::Index>,
    first: u64,
}

fn record_spec() -> impl Strategy<Value = Spec> {
    (
        prop::bool::weighted(0.25),
        0..3usize,
        0..2usize,
        0..2usize,
        0..2usize,
        prop::option::of(0..2usize),
    )
}

fn filter_spec() -> impl Strategy<Value = FilterSpec> {
    (
        prop::option::of(0..3usize),
        prop::option::weighted(0.6, 0..2usize),
        prop::option::weighted(0.3, 0..2usize),
        prop::option::weighted(0.6, 0..2usize),
        prop::option::weighted(0.6, 0..2usize),
        prop::option::weighted(0.3, any::<prop::sample::Index>()),
        prop::option::weighted(0.3, any::<prop::sample::Index>()),
        prop::sample::select(vec![1u64, 2, 5, 100]),
    )
        .prop_map(
            |(tenant, kind, entity, actor_type, actor_id, from, to, first)| FilterSpec {
                tenant,
                kind,
                entity,
                actor_type,
                actor_id,
                from,
                to,
                first,
            },
        )
}

fn build(specs: &[Spec]) -> Scenario {
    let mut s = Scenario::empty();
    let mut batch: Vec<(&str, serde_json::Value)> = Vec::new();
    for (i, (new_batch, tenant, kind, actor_type, actor_id, entity)) in specs.iter().enumerate() {
        if *new_batch && !batch.is_empty() {
            s.append(std::mem::take(&mut batch));
        }
        let mut r = json!({
            "kind": KINDS[*kind],
            "tenant": TENANTS[*tenant],
            "actor": {"type": ACTOR_TYPES[*actor_type], "id": ACTOR_IDS[*actor_id]},
        });
        if let Some(e) = entity {
            r["entity"] = json!(ENTITIES[*e]);
        }
        batch.push((Box::leak(format!("r{i}").into_boxed_str()), r));
    }
    if !batch.is_empty() {
        s.append(batch);
    }
    s
}

/// Every record listed, page by page.
fn all_pages(s: &Scenario, filter: &RecordFilter, tenant: Option<&str>, first: u64) -> Vec<u64> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..1000 {
        let page = Page::new(Some(first), after.as_deref()).unwrap();
        let conn = records(&s.ledger, filter, &page, tenant).unwrap();
        assert!(conn.items.len() as u64 <= first);
        out.extend(conn.items.iter().map(|(_, r)| r.index));
        if !conn.has_next_page {
            return out;
        }
        after = Some(conn.end_cursor.unwrap().to_string());
    }
    panic!("paging did not end");
}

fn keep(leaf: &Leaf, f: &RecordFilter, tenant: Option<&str>) -> bool {
    let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
    tenant.is_none_or(|t| t == leaf.tenant)
        && eq(&f.kind, &leaf.kind)
        && eq(&f.actor_type, &leaf.actor.kind)
        && eq(&f.actor_id, &leaf.actor.id)
        // An entity is looked up in the caller's tenant, the default one for an unscoped caller.
        && f.entity.as_deref().is_none_or(|e| {
            leaf.entity.as_deref() == Some(e) && leaf.tenant == tenant.unwrap_or(DEFAULT_TENANT)
        })
        && f.from.is_none_or(|t| leaf.time >= t)
        && f.to.is_none_or(|t| leaf.time < t)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn indexed_listings_equal_a_brute_force_filter(
        specs in prop::collection::vec(record_spec(), 1..60),
        filters in prop::collection::vec(filter_spec(), 12),
    ) {
        let s = build(&specs);
        let leaves: Vec<Leaf> = (0..s.ledger.head().size)
            .map(|i| s.ledger.record_at(i).unwrap().leaf)
            .collect();
        for fs in &filters {
            let time = |at: &Option<prop::sample::Index>| {
                at.as_ref().map(|i| leaves[i.index(leaves.len())].time)
            };
            let filter = RecordFilter {
                kind: fs.kind.map(|k| KINDS[k].to_owned()),
                entity: fs.entity.map(|e| ENTITIES[e].to_owned()),
                actor_type: fs.actor_type.map(|a| ACTOR_TYPES[a].to_owned()),
                actor_id: fs.actor_id.map(|a| ACTOR_IDS[a].to_owned()),
                from: time(&fs.from),
                to: time(&fs.to),
            };
            let tenant = fs.tenant.map(|t| TENANTS[t]);
            let want: Vec<u64> = leaves
                .iter()
                .filter(|l| keep(l, &filter, tenant))
                .map(|l| l.index)
                .collect();
            prop_assert_eq!(
                all_pages(&s, &filter, tenant, fs.first),
                want,
                "{:?} tenant {:?} first {}", filter, tenant, fs.first
            );
        }
    }
}
