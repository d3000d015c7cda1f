//! Human in the loop, end to end (issue 3): decisions with and without `requires_approval`
//! by two agents under two policies, approvals and a rejection appended through the API; the
//! `pendingApprovals` queue pages oldest first, `stats` gives exact figures (latencies checked
//! against the records' own ledger times), `/metrics` carries the counters, and after a
//! restart `provledger verify` re-derives every index.

use serde_json::{json, Value};

use crate::common::{assert_verifies, Server};

fn gql(server: &Server, query: &str, variables: Value) -> Value {
    let body = json!({"query": query, "variables": variables});
    let v = server
        .post(
            "/graphql",
            "application/json",
            &serde_json::to_vec(&body).expect("encodable"),
        )
        .ok_json();
    assert!(v.get("errors").is_none(), "errors for {query}: {v}");
    v["data"].clone()
}

fn decision(agent: &str, entity: &str, escalate: bool, policy: Option<&str>) -> Value {
    let refs: Vec<Value> = policy
        .map(|p| json!({"role": "policy", "ref": p}))
        .into_iter()
        .collect();
    json!({
        "kind": "decision",
        "entity": entity,
        "actor": {"type": "agent", "id": agent},
        "refs": refs,
        "attributes": {"requires_approval": escalate},
    })
}

fn answer(kind: &str, target: &str) -> Value {
    json!({
        "kind": kind,
        "actor": {"type": "human", "id": "bob"},
        "refs": [{"role": "decision", "ref": target}],
    })
}

/// Pages through `pendingApprovals`; the entities of the decisions, in order.
fn pending(server: &Server, first: u32) -> Vec<String> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let data = gql(
            server,
            "query($first: Int, $after: String) { pendingApprovals(first: $first, after: $after) {
                edges { cursor node { entity index kind } } pageInfo { hasNextPage endCursor } } }",
            json!({"first": first, "after": after}),
        );
        let conn = &data["pendingApprovals"];
        let edges = conn["edges"].as_array().expect("edges");
        assert!(edges.len() <= first as usize);
        for e in edges {
            assert_eq!(e["node"]["kind"], "decision");
            assert_eq!(e["cursor"], e["node"]["index"].to_string());
            out.push(e["node"]["entity"].as_str().expect("entity").to_owned());
        }
        if conn["pageInfo"]["hasNextPage"] != true {
            return out;
        }
        after = Some(
            conn["pageInfo"]["endCursor"]
                .as_str()
                .expect("cursor")
                .to_owned(),
        );
    }
}

/// Sum of the samples of a metric whose labels include all of `labels`.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

const FIGURES: &str = "decisions escalated escalationRate approvals rejections pending approvalRate
    timeToApprovalP50Ms timeToApprovalP95Ms";

#[test]
fn approvals_queue_stats_and_metrics() {
    let server = Server::start(&[]);
    // 0 policy:refunds, 1 policy:kyc.
    server.append_all(&[
        json!({"kind": "policy", "entity": "policy:refunds", "actor": {"type": "human", "id": "ana"}}),
        json!({"kind": "policy", "entity": "policy:kyc", "actor": {"type": "human", "id": "ana"}}),
    ]);
    // 2..=7: six decisions; d5 is approved (8, citing it by entity) in the same request.
    let r = server.append_all(&[
        decision("agent-a", "d:0", true, Some("policy:refunds")),
        decision("agent-a", "d:1", false, Some("policy:refunds")),
        decision("agent-b", "d:2", true, Some("policy:kyc")),
        decision("agent-b", "d:3", true, Some("policy:kyc")),
        decision("agent-a", "d:4", true, None),
        decision("agent-b", "d:5", true, Some("policy:kyc")),
        answer("approval", "d:5"),
    ]);
    let id = |i: usize| r[i]["id"].as_str().expect("id").to_owned();
    assert_eq!(pending(&server, 2), ["d:0", "d:2", "d:3", "d:4"]);
    // 9: d0 approved; 10: d2 rejected; 11: a late approval of d2 changes nothing.
    server.append_all(&[answer("approval", &id(0))]);
    server.append_all(&[answer("rejection", &id(2)), answer("approval", &id(2))]);
    for first in [1, 3, 100] {
        assert_eq!(pending(&server, first), ["d:3", "d:4"], "first {first}");
    }

    // Latencies from the records' own ledger times.
    let time = |entity: &str| -> u64 {
        let data = gql(
            &server,
            "query($e: String) { records(filter: {entity: $e}) { edges { node { time } } } }",
            json!({"e": entity}),
        );
        data["records"]["edges"][0]["node"]["time"]
            .as_u64()
            .expect("time")
    };
    let answered = |index: u64| -> u64 {
        let data = gql(
            &server,
            "query($k: String) { records(filter: {kind: $k}, first: 100) { edges { node { index time } } } }",
            json!({"k": "approval"}),
        );
        data["records"]["edges"]
            .as_array()
            .expect("edges")
            .iter()
            .find(|e| e["node"]["index"] == index)
            .and_then(|e| e["node"]["time"].as_u64())
            .expect("the approval")
    };
    let l0 = answered(9) - time("d:0");
    let l5 = answered(8) - time("d:5");
    let (lo, hi) = (l0.min(l5), l0.max(l5));

    let data = gql(
        &server,
        &format!(
            "{{ stats {{ from to total {{ {FIGURES} }}
                byAgent {{ agent stats {{ {FIGURES} }} }}
                byPolicy {{ policy {{ entity index label }} stats {{ decisions escalated approvals rejections pending }} }} }} }}"
        ),
        json!({}),
    );
    let st = &data["stats"];
    assert_eq!(st["from"], Value::Null);
    assert_eq!(
        st["total"],
        json!({
            "decisions": 6, "escalated": 5, "escalationRate": 5.0 / 6.0,
            "approvals": 2, "rejections": 1, "pending": 2, "approvalRate": 2.0 / 3.0,
            "timeToApprovalP50Ms": lo, "timeToApprovalP95Ms": hi,
        })
    );
    assert_eq!(
        st["byAgent"],
        json!([
            {"agent": "agent-a", "stats": {
                "decisions": 3, "escalated": 2, "escalationRate": 2.0 / 3.0,
                "approvals": 1, "rejections": 0, "pending": 1, "approvalRate": 1.0,
                "timeToApprovalP50Ms": l0, "timeToApprovalP95Ms": l0}},
            {"agent": "agent-b", "stats": {
                "decisions": 3, "escalated": 3, "escalationRate": 1.0,
                "approvals": 1, "rejections": 1, "pending": 1, "approvalRate": 0.5,
                "timeToApprovalP50Ms": l5, "timeToApprovalP95Ms": l5}},
        ])
    );
    let counts = |d: u64, e: u64, a: u64, r: u64, p: u64| json!({"decisions": d, "escalated": e, "approvals": a, "rejections": r, "pending": p});
    assert_eq!(
        st["byPolicy"],
        json!([
            {"policy": null, "stats": counts(1, 1, 0, 0, 1)},
            {"policy": {"entity": "policy:kyc", "index": 1, "label": "policy:kyc@1"},
             "stats": counts(3, 3, 1, 1, 1)},
            {"policy": {"entity": "policy:refunds", "index": 0, "label": "policy:refunds@0"},
             "stats": counts(2, 1, 1, 0, 0)},
        ])
    );
    // A range before the decisions holds none.
    let empty = gql(
        &server,
        &format!(
            "query($to: Int) {{ stats(to: $to) {{ total {{ {FIGURES} }} byAgent {{ agent }} }} }}"
        ),
        json!({"to": time("d:0")}),
    );
    assert_eq!(
        empty["stats"]["total"],
        json!({
            "decisions": 0, "escalated": 0, "escalationRate": null, "approvals": 0,
            "rejections": 0, "pending": 0, "approvalRate": null,
            "timeToApprovalP50Ms": null, "timeToApprovalP95Ms": null,
        })
    );
    assert_eq!(empty["stats"]["byAgent"], json!([]));

    let text = server.get("/metrics").text();
    let refunds = ("policy", "policy:refunds@0");
    let kyc = ("policy", "policy:kyc@1");
    assert_eq!(
        metric(&text, "provledger_decisions_total", &[]),
        6.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "provledger_decisions_total",
            &[("agent", "agent-a"), refunds]
        ),
        2.0
    );
    assert_eq!(
        metric(
            &text,
            "provledger_decisions_total",
            &[("agent", "agent-a"), ("policy", "none")]
        ),
        1.0
    );
    assert_eq!(metric(&text, "provledger_escalations_total", &[]), 5.0);
    assert_eq!(
        metric(
            &text,
            "provledger_escalations_total",
            &[("agent", "agent-b"), kyc]
        ),
        3.0
    );
    assert_eq!(
        metric(
            &text,
            "provledger_approvals_total",
            &[("outcome", "approved")]
        ),
        2.0
    );
    assert_eq!(
        metric(
            &text,
            "provledger_approvals_total",
            &[("outcome", "rejected"), ("agent", "agent-b"), kyc]
        ),
        1.0
    );
    assert_eq!(
        metric(&text, "provledger_approval_latency_seconds_count", &[]),
        3.0
    );

    // The indexes survive a restart, and the offline checker re-derives them all.
    let mut server = server;
    server.stop();
    server.restart();
    assert_eq!(pending(&server, 10), ["d:3", "d:4"]);
    server.stop();
    assert_verifies(&server.data_dir());
}
