//! Lineage traversal on the refund desk: what an output rests on, what a policy version caused,
//! as of earlier tree sizes, within depth and node limits, through kind and role filters.

use std::collections::BTreeSet;

use provledger_query::{trace, Direction, Limits, Lineage, QueryError, TraceOptions};

use crate::scenario::Scenario;

fn names(s: &Scenario, l: &Lineage) -> BTreeSet<String> {
    l.nodes.iter().map(|n| s.name(&n.id)).collect()
}

fn edges(s: &Scenario, l: &Lineage) -> BTreeSet<(String, String, String)> {
    l.edges
        .iter()
        .map(|e| (s.name(&e.from), s.name(&e.to), e.role.clone()))
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// Every edge joins two returned nodes, and every node but the start is reached by one.
fn assert_closed(l: &Lineage) {
    let ids: BTreeSet<_> = l.nodes.iter().map(|n| n.id).collect();
    assert_eq!(ids.len(), l.nodes.len(), "a node appears once");
    for e in &l.edges {
        assert!(
            ids.contains(&e.from) && ids.contains(&e.to),
            "edge {e:?} leaves the answer"
        );
    }
    for n in l.nodes.iter().skip(1) {
        assert!(
            l.edges.iter().any(|e| e.from == n.id || e.to == n.id),
            "node {} has no edge",
            n.index
        );
    }
}

fn opts(direction: Direction) -> TraceOptions<'static> {
    TraceOptions::new(direction)
}

#[test]
fn upstream_from_an_output_reaches_decision_inputs_model_policy_and_approval() {
    let s = Scenario::refund_desk();
    let l = trace(&s.ledger, &s.id("o0"), &opts(Direction::Upstream)).unwrap();
    assert_eq!(l.nodes[0].id, s.id("o0"), "the start record comes first");
    assert_eq!(l.nodes[0].depth, 0);
    assert_eq!(l.tree_size, s.ledger.head().size);
    assert!(!l.truncated);
    assert!(l.hidden.is_empty());
    let mut want = set(&["o0", "d0", "a0", "model-v1", "policy-v2", "policy-v1"]);
    want.extend((0..5).map(|m| format!("msg-{m}")));
    assert_eq!(names(&s, &l), want);
    let mut want_edges: BTreeSet<_> = [
        ("o0", "d0", "decision"),
        ("o0", "a0", "approval"),
        ("a0", "d0", "decision"),
        ("d0", "model-v1", "model"),
        ("d0", "policy-v2", "policy"),
        ("policy-v2", "policy-v1", "parent"),
    ]
    .iter()
    .map(|(a, b, c)| ((*a).to_owned(), (*b).to_owned(), (*c).to_owned()))
    .collect();
    want_edges.extend((0..5).map(|m| ("d0".into(), format!("msg-{m}"), "input".into())));
    assert_eq!(
        edges(&s, &l),
        want_edges,
        "from = citing record, to = cited record"
    );
    assert_closed(&l);
    // Breadth first: depth never decreases along `nodes`, and matches the shortest path.
    assert!(l.nodes.windows(2).all(|w| w[0].depth <= w[1].depth));
    let depth = |name: &str| l.nodes.iter().find(|n| n.id == s.id(name)).unwrap().depth;
    assert_eq!(
        (depth("d0"), depth("a0"), depth("msg-3"), depth("policy-v1")),
        (1, 1, 2, 3)
    );
    // Node details come from the record.
    let d0 = l.nodes.iter().find(|n| n.id == s.id("d0")).unwrap();
    let stored = s.record("d0");
    assert_eq!((d0.index, d0.kind.as_str()), (stored.index, "decision"));
    assert_eq!(d0.entity.as_deref(), Some("refund:0"));
    assert_eq!(
        (d0.actor.kind.as_str(), d0.actor.id.as_str()),
        ("agent", "agent-a")
    );
    assert_eq!(d0.time, stored.leaf.time);
    assert_eq!(d0.payload, provledger_query::PayloadState::Present);
}

#[test]
fn refs_by_entity_name_resolve_to_the_version_current_at_append_time() {
    let s = Scenario::refund_desk();
    let later = trace(&s.ledger, &s.id("d4"), &opts(Direction::Upstream)).unwrap();
    let n = names(&s, &later);
    assert!(n.contains("policy-v3") && n.contains("model-v2"), "{n:?}");
    assert!(
        n.contains("policy-v2") && n.contains("policy-v1"),
        "v3 cites v2 cites v1: {n:?}"
    );
    assert!(!n.contains("model-v1"), "{n:?}");
}

#[test]
fn depth_bounds_the_walk_and_says_so() {
    let s = Scenario::refund_desk();
    let at = |depth| {
        let mut o = opts(Direction::Upstream);
        o.limits = Limits::new(Some(depth), None).unwrap();
        trace(&s.ledger, &s.id("o0"), &o).unwrap()
    };
    let zero = at(0);
    assert_eq!(names(&s, &zero), set(&["o0"]));
    assert!(zero.edges.is_empty() && zero.truncated);
    let one = at(1);
    assert_eq!(names(&s, &one), set(&["o0", "d0", "a0"]));
    assert!(one.truncated, "d0 has sources beyond depth 1");
    assert_closed(&one);
    let two = at(2);
    assert_eq!(
        two.nodes.len(),
        3 + 5 + 2,
        "inputs, model and policy-v2 join at depth 2"
    );
    assert!(two.truncated, "policy-v1 is one step further");
    let three = at(3);
    assert!(!three.truncated, "nothing lies beyond policy-v1");
    assert!(matches!(
        Limits::new(Some(51), None),
        Err(QueryError::LimitTooLarge {
            what: "depth",
            max: 50,
            ..
        })
    ));
    assert!(matches!(
        Limits::new(None, Some(10_001)),
        Err(QueryError::LimitTooLarge {
            what: "max_nodes",
            ..
        })
    ));
}

#[test]
fn the_node_cap_truncates_and_keeps_the_answer_consistent() {
    let s = Scenario::refund_desk();
    for cap in [1, 2, 3, 7] {
        let mut o = opts(Direction::Downstream);
        o.limits = Limits::new(None, Some(cap)).unwrap();
        let l = trace(&s.ledger, &s.id("model-v1"), &o).unwrap();
        assert_eq!(l.nodes.len() as u64, cap);
        assert!(l.truncated, "cap {cap}");
        assert_closed(&l);
    }
}

#[test]
fn downstream_from_a_policy_version_finds_its_decisions_and_their_consequences() {
    let s = Scenario::refund_desk();
    let roles = [
        "policy".to_owned(),
        "decision".to_owned(),
        "approval".to_owned(),
    ];
    let mut o = opts(Direction::Downstream);
    o.roles = &roles;
    let l = trace(&s.ledger, &s.id("policy-v2"), &o).unwrap();
    assert_eq!(
        names(&s, &l),
        set(&["policy-v2", "d0", "d1", "d2", "a0", "a1", "a2", "o0", "o1"])
    );
    assert!(edges(&s, &l).contains(&("d1".into(), "policy-v2".into(), "policy".into())));
    assert!(edges(&s, &l).contains(&("o1".into(), "a1".into(), "approval".into())));
    assert_closed(&l);
    // Without the role filter the next policy version (which cites v2 as its parent) and every
    // decision made under it are consequences too.
    let all = trace(&s.ledger, &s.id("policy-v2"), &opts(Direction::Downstream)).unwrap();
    let n = names(&s, &all);
    assert!(
        n.contains("policy-v3") && n.contains("d5") && n.contains("o3"),
        "{n:?}"
    );
    assert!(
        !n.contains("policy-v1") && !n.contains("msg-0"),
        "only consequences: {n:?}"
    );
}

#[test]
fn as_of_a_tree_size_sees_only_what_the_ledger_knew_then() {
    let s = Scenario::refund_desk();
    // After the first decisions, before any approval or policy v3.
    let mut o = opts(Direction::Downstream);
    o.as_of = Some(s.sizes[1]);
    let l = trace(&s.ledger, &s.id("policy-v2"), &o).unwrap();
    assert_eq!(l.tree_size, s.sizes[1]);
    assert_eq!(names(&s, &l), set(&["policy-v2", "d0", "d1", "d2"]));
    assert!(l.nodes.iter().all(|n| n.index < s.sizes[1]));
    // A record appended later does not exist as of that size.
    let mut o = opts(Direction::Upstream);
    o.as_of = Some(s.sizes[1]);
    let err = trace(&s.ledger, &s.id("d3"), &o).unwrap_err();
    assert!(matches!(err, QueryError::NotFound { tree_size, .. } if tree_size == s.sizes[1]));
    // The start record is the last one of the tree at that size.
    let mut o = opts(Direction::Upstream);
    o.as_of = Some(s.record("d2").index + 1);
    assert_eq!(
        trace(&s.ledger, &s.id("d2"), &o).unwrap().nodes.len(),
        1 + 5 + 3
    );
    // A size the log has not reached is refused.
    let mut o = opts(Direction::Upstream);
    o.as_of = Some(s.ledger.head().size + 1);
    assert!(matches!(
        trace(&s.ledger, &s.id("d2"), &o),
        Err(QueryError::AsOfAhead { .. })
    ));
}

#[test]
fn kind_filters_prune_what_is_followed() {
    let s = Scenario::refund_desk();
    let kinds = ["decision".to_owned(), "input".to_owned()];
    let mut o = opts(Direction::Upstream);
    o.kinds = &kinds;
    let l = trace(&s.ledger, &s.id("o0"), &o).unwrap();
    let mut want = set(&["o0", "d0"]);
    want.extend((0..5).map(|m| format!("msg-{m}")));
    assert_eq!(
        names(&s, &l),
        want,
        "the start record is kept whatever its kind"
    );
    assert_closed(&l);
}

#[test]
fn tenants_see_only_their_own_records() {
    let mut s = Scenario::refund_desk();
    let mut other = crate::scenario::rec("input", "msg:x", ("service", "inbox"), &[]);
    other["tenant"] = "acme".into();
    s.append(vec![("acme-msg", other)]);
    let mut o = opts(Direction::Upstream);
    o.tenant = Some("acme");
    assert!(matches!(
        trace(&s.ledger, &s.id("o0"), &o),
        Err(QueryError::NotFound { .. })
    ));
    assert_eq!(
        trace(&s.ledger, &s.id("acme-msg"), &o).unwrap().nodes.len(),
        1
    );
    o.tenant = Some("default");
    assert_eq!(trace(&s.ledger, &s.id("o0"), &o).unwrap().nodes.len(), 11);
    // Lineage cannot cross tenants today: the ledger refuses a ref to another tenant's record,
    // so `hidden` stays empty until cross-tenant citations exist.
    let mut cross = crate::scenario::rec("decision", "refund:x", ("agent", "a"), &[]);
    cross["tenant"] = "acme".into();
    cross["refs"] = serde_json::json!([{"role": "input", "ref": s.id("msg-0").to_hex()}]);
    let input = serde_json::from_value(cross).unwrap();
    let prepared = provledger_ledger::PreparedRecord::prepare(input, "record").unwrap();
    assert!(matches!(
        s.ledger.append_blocking(vec![prepared]),
        Err(provledger_ledger::LedgerError::UnknownRef { .. })
    ));
}

#[test]
fn an_unknown_id_is_not_found() {
    let s = Scenario::refund_desk();
    let nobody = provledger_signer::Hash([7; 32]);
    assert!(matches!(
        trace(&s.ledger, &nobody, &opts(Direction::Downstream)),
        Err(QueryError::NotFound { .. })
    ));
}
