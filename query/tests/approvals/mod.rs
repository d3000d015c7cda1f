//! Human in the loop over the ledger's indexes: the queue of escalated decisions, oldest first
//! and tenant-scoped, and intervention figures (escalation share, approval rate, time to
//! approval) in total, per agent and per policy version, checked against the records' times.

use provledger_ledger::PolicyVersion;
use provledger_query::{intervention_stats, pending_approvals, Figures, Page};
use serde_json::{json, Value};

use crate::scenario::{rec, Scenario};

fn decision(agent: &str, entity: &str, escalate: bool, policy: Option<&str>) -> Value {
    let refs: Vec<(&str, &str)> = policy.map(|p| ("policy", p)).into_iter().collect();
    let mut r = rec("decision", entity, ("agent", agent), &refs);
    r["attributes"] = json!({"requires_approval": escalate});
    r
}

fn answer(s: &Scenario, kind: &str, decision: &str) -> Value {
    let mut r = rec(kind, &format!("{kind}:{decision}"), ("human", "bob"), &[]);
    r["refs"] = json!([{"role": "decision", "ref": s.id(decision).to_hex()}]);
    r
}

/// Two policies, seven decisions by two agents (five escalated, one in tenant t2), two
/// approvals and a rejection.
fn desk() -> Scenario {
    let mut s = Scenario::empty();
    s.append(vec![
        (
            "refunds",
            rec("policy", "policy:refunds", ("human", "ana"), &[]),
        ),
        ("kyc", rec("policy", "policy:kyc", ("human", "ana"), &[])),
    ]);
    let mut other = decision("agent-a", "d:t2", true, None);
    other["tenant"] = json!("t2");
    s.append(vec![
        (
            "d0",
            decision("agent-a", "d:0", true, Some("policy:refunds")),
        ),
        (
            "d1",
            decision("agent-a", "d:1", false, Some("policy:refunds")),
        ),
        ("d2", decision("agent-b", "d:2", true, Some("policy:kyc"))),
        ("d3", decision("agent-b", "d:3", true, None)),
        (
            "d4",
            decision("agent-a", "d:4", true, Some("policy:refunds")),
        ),
        ("d5", decision("agent-b", "d:5", true, Some("policy:kyc"))),
        ("t2", other),
    ]);
    let a0 = answer(&s, "approval", "d0");
    s.append(vec![("a0", a0)]);
    let r2 = answer(&s, "rejection", "d2");
    s.append(vec![("r2", r2)]);
    // A second answer to d2 changes nothing; d4's approval is the last record.
    let again = answer(&s, "approval", "d2");
    let a4 = answer(&s, "approval", "d4");
    s.append(vec![("again", again), ("a4", a4)]);
    s
}

fn latency(s: &Scenario, decision: &str, answer: &str) -> u64 {
    s.record(answer).leaf.time - s.record(decision).leaf.time
}

#[test]
fn pending_approvals_page_oldest_first_within_the_tenant() {
    let s = desk();
    let names = |tenant: Option<&str>, first: u64| {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = Page::new(Some(first), after.as_deref()).unwrap();
            let conn = pending_approvals(&s.ledger, &page, tenant).unwrap();
            out.extend(conn.items.iter().map(|(_, r)| s.name(&r.id)));
            if !conn.has_next_page {
                return out;
            }
            after = Some(conn.end_cursor.unwrap().to_string());
        }
    };
    for first in [1, 2, 100] {
        assert_eq!(names(None, first), ["d3", "d5", "t2"]);
        assert_eq!(names(Some("default"), first), ["d3", "d5"]);
    }
    assert_eq!(names(Some("t2"), 1), ["t2"]);
    assert!(names(Some("nobody"), 5).is_empty());
}

#[test]
fn stats_count_escalations_outcomes_and_time_to_approval_per_agent_and_policy() {
    let s = desk();
    let (l0, l4) = (latency(&s, "d0", "a0"), latency(&s, "d4", "a4"));
    let (lo, hi) = (l0.min(l4), l0.max(l4));
    let figures = |decisions, escalated, approvals, rejections, pending, p50, p95| {
        let mut f = Figures::default();
        f.decisions = decisions;
        f.escalated = escalated;
        f.approvals = approvals;
        f.rejections = rejections;
        f.pending = pending;
        f.time_to_approval_p50_ms = p50;
        f.time_to_approval_p95_ms = p95;
        f
    };
    let st = intervention_stats(&s.ledger, None, None, Some("default")).unwrap();
    assert_eq!(st.total, figures(6, 5, 2, 1, 2, Some(lo), Some(hi)));
    assert_eq!(st.total.escalation_rate(), Some(5.0 / 6.0));
    assert_eq!(st.total.approval_rate(), Some(2.0 / 3.0));
    assert_eq!(
        st.by_agent,
        [
            (
                "agent-a".to_owned(),
                figures(3, 2, 2, 0, 0, Some(lo), Some(hi))
            ),
            ("agent-b".to_owned(), figures(3, 3, 0, 1, 2, None, None)),
        ]
    );
    let refunds = PolicyVersion {
        entity: Some("policy:refunds".into()),
        index: s.record("refunds").index,
    };
    let kyc = PolicyVersion {
        entity: Some("policy:kyc".into()),
        index: s.record("kyc").index,
    };
    assert_eq!(
        st.by_policy,
        [
            (None, figures(1, 1, 0, 0, 1, None, None)),
            (Some(kyc), figures(2, 2, 0, 1, 1, None, None)),
            (Some(refunds), figures(3, 2, 2, 0, 0, Some(lo), Some(hi))),
        ]
    );
    // Unscoped: tenant t2's pending decision too.
    let all = intervention_stats(&s.ledger, None, None, None).unwrap();
    assert_eq!(all.total, figures(7, 6, 2, 1, 3, Some(lo), Some(hi)));
    // Time ranges select decisions by their own ledger time.
    let t = s.record("d0").leaf.time;
    let from_d0 = intervention_stats(&s.ledger, Some(t), None, Some("default")).unwrap();
    assert_eq!(from_d0.total, st.total);
    let before_d0 = intervention_stats(&s.ledger, None, Some(t), Some("default")).unwrap();
    assert_eq!(before_d0.total, Figures::default());
    assert!(before_d0.by_agent.is_empty() && before_d0.by_policy.is_empty());
    assert_eq!(before_d0.total.escalation_rate(), None);
}
