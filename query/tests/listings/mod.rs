//! Listings: every filter against a brute-force reading of the whole log, across pages of
//! several sizes; citations and entity versions; the scan budget; bad cursors and page sizes.

use provledger_ledger::{Leaf, StoredRecord};
use provledger_query::{cited_by, records, versions, Page, QueryError, RecordFilter, SCAN_BUDGET};
use serde_json::json;

use crate::scenario::Scenario;

/// Every record the filter lists, page by page.
fn all_pages(s: &Scenario, filter: &RecordFilter, first: u64) -> Vec<u64> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..1000 {
        let page = Page::new(Some(first), after.as_deref()).unwrap();
        let conn = records(&s.ledger, filter, &page, None).unwrap();
        assert!(conn.items.len() as u64 <= first);
        out.extend(conn.items.iter().map(|(c, r)| {
            assert_eq!(c.0, r.index, "an edge's cursor is its record's index");
            r.index
        }));
        if !conn.has_next_page {
            return out;
        }
        after = Some(
            conn.end_cursor
                .expect("a next page has a cursor")
                .to_string(),
        );
    }
    panic!("paging did not end");
}

/// Which leaves a filter must list.
type Keep = Box<dyn Fn(&Leaf) -> bool>;

fn brute_force(s: &Scenario, keep: impl Fn(&Leaf) -> bool) -> Vec<u64> {
    (0..s.ledger.head().size)
        .filter(|i| keep(&s.ledger.record_at(*i).unwrap().leaf))
        .collect()
}

#[test]
fn filters_list_exactly_the_matching_records_oldest_first_across_pages() {
    let s = Scenario::refund_desk();
    let t_mid = s.record("policy-v3").leaf.time;
    let t_late = s.record("a0").leaf.time;
    let cases: Vec<(RecordFilter, Keep)> = vec![
        (RecordFilter::default(), Box::new(|_| true)),
        (
            RecordFilter {
                kind: Some("decision".into()),
                ..Default::default()
            },
            Box::new(|l| l.kind == "decision"),
        ),
        (
            RecordFilter {
                entity: Some("policy:refunds".into()),
                ..Default::default()
            },
            Box::new(|l| l.entity.as_deref() == Some("policy:refunds")),
        ),
        (
            RecordFilter {
                actor_id: Some("agent-b".into()),
                ..Default::default()
            },
            Box::new(|l| l.actor.id == "agent-b"),
        ),
        (
            RecordFilter {
                actor_type: Some("human".into()),
                kind: Some("approval".into()),
                ..Default::default()
            },
            Box::new(|l| l.actor.kind == "human" && l.kind == "approval"),
        ),
        (
            RecordFilter {
                from: Some(t_mid),
                ..Default::default()
            },
            Box::new(move |l| l.time >= t_mid),
        ),
        (
            RecordFilter {
                from: Some(t_mid),
                to: Some(t_late),
                ..Default::default()
            },
            Box::new(move |l| l.time >= t_mid && l.time < t_late),
        ),
        (
            RecordFilter {
                entity: Some("policy:refunds".into()),
                from: Some(t_mid),
                ..Default::default()
            },
            Box::new(move |l| l.entity.as_deref() == Some("policy:refunds") && l.time >= t_mid),
        ),
        (
            RecordFilter {
                kind: Some("no-such-kind".into()),
                ..Default::default()
            },
            Box::new(|_| false),
        ),
    ];
    for (filter, keep) in &cases {
        let want = brute_force(&s, keep);
        for first in [1, 2, 7, 100] {
            assert_eq!(
                all_pages(&s, filter, first),
                want,
                "{filter:?}, first {first}"
            );
        }
    }
}

#[test]
fn a_full_last_page_says_there_is_no_next_page() {
    let s = Scenario::refund_desk();
    let filter = RecordFilter {
        kind: Some("decision".into()),
        ..Default::default()
    };
    let first = records(&s.ledger, &filter, &Page::new(Some(3), None).unwrap(), None).unwrap();
    assert!(first.has_next_page);
    let after = first.end_cursor.unwrap().to_string();
    let second = records(
        &s.ledger,
        &filter,
        &Page::new(Some(3), Some(&after)).unwrap(),
        None,
    )
    .unwrap();
    assert_eq!(second.items.len(), 3);
    assert!(
        !second.has_next_page,
        "six decisions fill exactly two pages of three"
    );
}

#[test]
fn citations_page_through_the_reverse_index_with_roles() {
    let s = Scenario::refund_desk();
    let mut seen: Vec<(Vec<String>, StoredRecord)> = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = Page::new(Some(2), after.as_deref()).unwrap();
        let conn = cited_by(&s.ledger, &s.id("model-v1"), &page, None).unwrap();
        seen.extend(conn.items.into_iter().map(|(_, x)| x));
        if !conn.has_next_page {
            break;
        }
        after = conn.end_cursor.map(|c| c.to_string());
    }
    let got: Vec<_> = seen
        .iter()
        .map(|(roles, r)| (roles.join(","), s.name(&r.id)))
        .collect();
    let want: Vec<_> = ["d0", "d1", "d2"]
        .iter()
        .map(|d| ("model".into(), (*d).into()))
        .collect();
    assert_eq!(got, want);
    let none = cited_by(
        &s.ledger,
        &s.id("o0"),
        &Page::new(None, None).unwrap(),
        None,
    )
    .unwrap();
    assert!(none.items.is_empty() && !none.has_next_page);
    assert!(matches!(
        cited_by(
            &s.ledger,
            &provledger_signer::Hash([1; 32]),
            &Page::new(None, None).unwrap(),
            None
        ),
        Err(QueryError::NotFound { .. })
    ));
}

#[test]
fn versions_of_an_entity_oldest_first_within_its_tenant() {
    let s = Scenario::refund_desk();
    let page = Page::new(None, None).unwrap();
    let v = versions(&s.ledger, "default", "policy:refunds", &page).unwrap();
    let got: Vec<_> = v.items.iter().map(|(_, r)| s.name(&r.id)).collect();
    assert_eq!(got, ["policy-v1", "policy-v2", "policy-v3"]);
    assert!(versions(&s.ledger, "acme", "policy:refunds", &page)
        .unwrap()
        .items
        .is_empty());
}

#[test]
fn bad_cursors_and_page_sizes_are_refused() {
    assert!(matches!(
        Page::new(None, Some("abc")),
        Err(QueryError::InvalidCursor(_))
    ));
    assert!(matches!(
        Page::new(Some(101), None),
        Err(QueryError::LimitTooLarge { what: "first", .. })
    ));
}

#[test]
fn an_indexed_filter_needs_no_scan_budget_and_an_unindexed_scan_stops_at_it() {
    let mut s = Scenario::empty();
    let noise = SCAN_BUDGET + 50;
    let mut batch: Vec<(&str, serde_json::Value)> = (0..noise)
        .map(|_| {
            (
                "noise",
                json!({"kind": "input", "actor": {"type": "agent", "id": "a"}}),
            )
        })
        .collect();
    batch.push((
        "needle",
        json!({"kind": "needle", "actor": {"type": "robot", "id": "r"}}),
    ));
    s.append(batch);
    let page = Page::new(Some(10), None).unwrap();
    // The kind index finds the needle at once, whatever lies before it.
    let by_kind = RecordFilter {
        kind: Some("needle".into()),
        ..Default::default()
    };
    let found = records(&s.ledger, &by_kind, &page, None).unwrap();
    assert_eq!(found.items.len(), 1);
    assert_eq!(found.items[0].1.id, s.id("needle"));
    assert!(!found.has_next_page);
    // An actor type alone has no index: a scan that stops at its budget.
    let filter = RecordFilter {
        actor_type: Some("robot".into()),
        ..Default::default()
    };
    let first = records(&s.ledger, &filter, &page, None).unwrap();
    assert!(first.items.is_empty(), "the needle lies beyond the budget");
    assert!(first.has_next_page);
    assert_eq!(first.end_cursor.map(|c| c.0), Some(SCAN_BUDGET as u64 - 1));
    let after = first.end_cursor.unwrap().to_string();
    let second = records(
        &s.ledger,
        &filter,
        &Page::new(Some(10), Some(&after)).unwrap(),
        None,
    )
    .unwrap();
    assert_eq!(second.items.len(), 1);
    assert_eq!(second.items[0].1.id, s.id("needle"));
    assert!(!second.has_next_page);
}
