//! The GraphQL API of issue 3 (`POST /graphql`), end to end on a refund desk built through the
//! API itself: customer messages, model and policy versions, decisions by two agents citing
//! five messages, the model and the policy, an approval, a rejection and an output. Every
//! lineage node's proof is checked with the independent RFC 9162 code in tests/common against
//! the one checkpoint the answer returns.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use crate::common::merkle::{verify_consistency, verify_inclusion};
use crate::common::note::Checkpoint;
use crate::common::{b64, hash32, hashes, Receipt, Resp, Server, ORIGIN};

/// POSTs a GraphQL request; returns the HTTP answer.
fn post(server: &Server, query: &str, variables: Value) -> Resp {
    let body = json!({"query": query, "variables": variables});
    server.post(
        "/graphql",
        "application/json",
        &serde_json::to_vec(&body).expect("encodable"),
    )
}

/// Runs a query that must succeed; returns `data`.
fn gql(server: &Server, query: &str, variables: Value) -> Value {
    let v = post(server, query, variables).ok_json();
    assert!(v.get("errors").is_none(), "errors for {query}: {v}");
    v["data"].clone()
}

/// Runs a query that must fail; returns the `extensions.code` of its first error.
fn gql_error(server: &Server, query: &str, variables: Value) -> String {
    let v = post(server, query, variables).ok_json();
    let errors = v["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("expected errors for {query}: {v}"));
    let first = &errors[0];
    assert!(first["message"].as_str().is_some_and(|m| !m.is_empty()));
    first["extensions"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("error without a code: {v}"))
        .to_owned()
}

const RECEIPT: &str = "id index leaf treeSize inclusionProof checkpoint";

/// A GraphQL receipt in the REST field names, checked like a REST receipt.
fn check_receipt(v: &Value) -> Receipt {
    let r = Receipt::from_json(&json!({
        "id": v["id"], "index": v["index"], "leaf": v["leaf"], "tree_size": v["treeSize"],
        "inclusion_proof": v["inclusionProof"], "checkpoint": v["checkpoint"],
    }));
    r.check();
    r
}

fn record(kind: &str, entity: &str, actor: (&str, &str), refs: &[(&str, &str)]) -> Value {
    json!({
        "kind": kind,
        "entity": entity,
        "actor": {"type": actor.0, "id": actor.1},
        "refs": refs.iter().map(|(role, r)| json!({"role": role, "ref": r})).collect::<Vec<_>>(),
        "attributes": {"source": "e2e"},
        "payload": {"text": format!("{kind} {entity}")},
    })
}

/// The refund desk, appended through `appendBatch` and `append`; names → ids, and the tree
/// size right after decision d0.
struct Desk {
    ids: BTreeMap<String, String>,
    after_d0: u64,
    /// The checkpoint d0's receipt was signed against (d0 was appended alone, so its size is
    /// `after_d0`).
    d0_checkpoint: String,
}

impl Desk {
    fn id(&self, name: &str) -> &str {
        &self.ids[name]
    }

    fn name(&self, id: &str) -> String {
        self.ids
            .iter()
            .find(|(_, v)| *v == id)
            .map(|(k, _)| k.clone())
            .unwrap_or_else(|| id.to_owned())
    }
}

fn build_desk(server: &Server) -> Desk {
    let mut ids = BTreeMap::new();
    let batch = format!(
        "mutation($records: [RecordInput!]!) {{ appendBatch(records: $records) {{ {RECEIPT} }} }}"
    );
    let one =
        format!("mutation($record: RecordInput!) {{ append(record: $record) {{ {RECEIPT} }} }}");
    let mut setup = vec![
        (
            "model-v1",
            record("model", "model:refund-llm", ("service", "registry"), &[]),
        ),
        (
            "policy-v1",
            record("policy", "policy:refunds", ("human", "alice"), &[]),
        ),
        (
            "policy-v2",
            record(
                "policy",
                "policy:refunds",
                ("human", "alice"),
                &[("parent", "policy:refunds")],
            ),
        ),
    ];
    let msgs: Vec<(String, Value)> = (0..10)
        .map(|i| {
            let r = record("input", &format!("msg:{i}"), ("service", "inbox"), &[]);
            (format!("msg-{i}"), r)
        })
        .collect();
    setup.extend(msgs.iter().map(|(n, r)| (n.as_str(), r.clone())));
    let records: Vec<Value> = setup.iter().map(|(_, r)| r.clone()).collect();
    let receipts = gql(server, &batch, json!({"records": records}))["appendBatch"].clone();
    let receipts = receipts.as_array().expect("a list of receipts");
    assert_eq!(receipts.len(), setup.len());
    for (i, ((name, _), r)) in setup.iter().zip(receipts).enumerate() {
        let r = check_receipt(r);
        assert_eq!(r.index, i as u64, "receipts in request order");
        assert_eq!(r.tree_size, setup.len() as u64, "one atomic batch");
        ids.insert((*name).to_owned(), r.id);
    }
    let append = |r: Value| check_receipt(&gql(server, &one, json!({"record": r}))["append"]);
    let decision = |i: usize, agent: &str| {
        let mut refs: Vec<(&str, String)> = (5 * (i % 2)..5 * (i % 2) + 5)
            .map(|m| ("input", format!("msg:{m}")))
            .collect();
        refs.push(("model", "model:refund-llm".into()));
        refs.push(("policy", "policy:refunds".into()));
        let refs: Vec<(&str, &str)> = refs.iter().map(|(r, t)| (*r, t.as_str())).collect();
        let mut r = record("decision", &format!("refund:{i}"), ("agent", agent), &refs);
        r["attributes"] = json!({"requires_approval": true, "amount_eur": 40 + i});
        r
    };
    let d0 = append(decision(0, "agent-a"));
    assert_eq!(d0.tree_size, d0.index + 1, "d0 is appended alone");
    let d1 = append(decision(1, "agent-a"));
    let v3 = append(record(
        "policy",
        "policy:refunds",
        ("human", "alice"),
        &[("parent", "policy:refunds")],
    ));
    let d2 = append(decision(2, "agent-b"));
    let mut approval = record(
        "approval",
        "approval:d0",
        ("human", "bob"),
        &[("decision", &d0.id)],
    );
    approval["attributes"] = json!({"outcome": "approved"});
    let a0 = append(approval);
    let mut rejection = record(
        "approval",
        "approval:d1",
        ("human", "bob"),
        &[("decision", &d1.id)],
    );
    rejection["attributes"] = json!({"outcome": "rejected"});
    let a1 = append(rejection);
    let o0 = append(record(
        "output",
        "reply:0",
        ("agent", "mailer"),
        &[("decision", &d0.id), ("approval", &a0.id)],
    ));
    for (name, r) in [
        ("d0", &d0),
        ("d1", &d1),
        ("policy-v3", &v3),
        ("d2", &d2),
        ("a0", &a0),
        ("a1", &a1),
        ("o0", &o0),
    ] {
        ids.insert(name.to_owned(), r.id.clone());
    }
    Desk {
        ids,
        after_d0: d0.index + 1,
        d0_checkpoint: d0.checkpoint.clone(),
    }
}

#[test]
fn records_refs_citations_versions_and_paging_over_graphql() {
    let server = Server::start(&[]);
    let desk = build_desk(&server);
    let q = r#"query($id: ID!) { record(id: $id) {
        id index kind entity tenant actor { type id } attributes payload classification time
        leaf commitment
        refs { role id record { id kind entity } }
        citedBy(first: 10) { edges { cursor roles node { id kind } } pageInfo { hasNextPage endCursor } }
        versions { edges { node { id } } }
        proof { index treeSize leafHash hashes }
    } }"#;
    let d0 = gql(&server, q, json!({"id": desk.id("d0")}))["record"].clone();
    assert_eq!(d0["id"], desk.id("d0"));
    assert_eq!(d0["kind"], "decision");
    assert_eq!(d0["entity"], "refund:0");
    assert_eq!(d0["tenant"], "default");
    assert_eq!(d0["actor"], json!({"type": "agent", "id": "agent-a"}));
    assert_eq!(
        d0["attributes"],
        json!({"requires_approval": true, "amount_eur": 40})
    );
    assert_eq!(d0["payload"], json!({"text": "decision refund:0"}));
    assert_eq!(d0["classification"], "internal");
    assert!(
        d0["time"].as_u64().is_some_and(|t| t > 1_600_000_000_000),
        "ms since epoch"
    );
    // The leaf is the record's commitment: its hash is the id.
    let leaf = b64(d0["leaf"].as_str().unwrap());
    assert_eq!(
        hex::encode(crate::common::merkle::leaf_hash(&leaf)),
        desk.id("d0")
    );
    // refs in the record's order, each resolved to the exact version cited.
    let refs: Vec<(String, String)> = d0["refs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["id"], r["record"]["id"]);
            (
                r["role"].as_str().unwrap().to_owned(),
                desk.name(r["id"].as_str().unwrap()),
            )
        })
        .collect();
    let mut want: Vec<(String, String)> = (0..5)
        .map(|m| ("input".to_owned(), format!("msg-{m}")))
        .collect();
    want.push(("model".into(), "model-v1".into()));
    want.push(("policy".into(), "policy-v2".into()));
    assert_eq!(refs, want);
    // Who cites d0, oldest first: the approval, then the output.
    let cited: Vec<(String, Value)> = d0["citedBy"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                desk.name(e["node"]["id"].as_str().unwrap()),
                e["roles"].clone(),
            )
        })
        .collect();
    assert_eq!(
        cited,
        [
            ("a0".to_owned(), json!(["decision"])),
            ("o0".to_owned(), json!(["decision"]))
        ]
    );
    assert_eq!(d0["citedBy"]["pageInfo"]["hasNextPage"], false);
    assert_eq!(d0["versions"]["edges"].as_array().unwrap().len(), 1);
    // The proof, against the current checkpoint.
    let cp = server.checkpoint();
    let p = &d0["proof"];
    assert_eq!(p["treeSize"].as_u64(), Some(cp.size));
    assert_eq!(
        hex::encode(hash32(p["leafHash"].as_str().unwrap())),
        desk.id("d0")
    );
    assert!(verify_inclusion(
        &hash32(p["leafHash"].as_str().unwrap()),
        p["index"].as_u64().unwrap(),
        cp.size,
        &hashes(&p["hashes"]),
        &cp.root
    ));

    // Versions of an entity, oldest first, from any of them.
    let v = gql(
        &server,
        "query($id: ID!) { record(id: $id) { versions(first: 2) { edges { node { id } } pageInfo { hasNextPage endCursor } } } }",
        json!({"id": desk.id("policy-v1")}),
    );
    let page = &v["record"]["versions"];
    let got: Vec<String> = page["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| desk.name(e["node"]["id"].as_str().unwrap()))
        .collect();
    assert_eq!(got, ["policy-v1", "policy-v2"]);
    assert_eq!(page["pageInfo"]["hasNextPage"], true);

    // Pagination across pages: the ten messages, three at a time, in log order.
    let list = "query($filter: RecordFilter, $after: String) {
        records(filter: $filter, first: 3, after: $after) {
            edges { cursor node { id index kind } } pageInfo { hasNextPage endCursor } } }";
    let all_pages = |filter: Value| {
        let mut names = Vec::new();
        let mut after = Value::Null;
        for _ in 0..20 {
            let v = gql(&server, list, json!({"filter": filter, "after": after}));
            let conn = &v["records"];
            for e in conn["edges"].as_array().unwrap() {
                assert_eq!(
                    e["cursor"].as_str().unwrap(),
                    e["node"]["index"].to_string()
                );
                names.push(desk.name(e["node"]["id"].as_str().unwrap()));
            }
            if conn["pageInfo"]["hasNextPage"] == false {
                return names;
            }
            after = conn["pageInfo"]["endCursor"].clone();
        }
        panic!("paging did not end");
    };
    let msgs: Vec<String> = (0..10).map(|i| format!("msg-{i}")).collect();
    assert_eq!(all_pages(json!({"kind": "input"})), msgs);
    assert_eq!(all_pages(json!({"actor": {"id": "agent-b"}})), ["d2"]);
    assert_eq!(
        all_pages(json!({"entity": "policy:refunds"})),
        ["policy-v1", "policy-v2", "policy-v3"]
    );
    assert_eq!(
        all_pages(json!({"kind": "decision", "actor": {"type": "agent", "id": "agent-a"}})),
        ["d0", "d1"]
    );
    assert_eq!(all_pages(Value::Null).len(), desk.ids.len());

    // The REST API is still there, and agrees.
    let rest = server
        .get(&format!("/v1/records/{}", desk.id("d0")))
        .ok_json();
    assert_eq!(rest["leaf"], d0["leaf"]);
}

/// Checks a lineage answer: the checkpoint is one (size, root), the note (when present) says
/// the same, and every node's proof leads from its id to that root. Returns node names.
fn check_lineage(desk: &Desk, l: &Value) -> BTreeSet<String> {
    let size = l["checkpoint"]["treeSize"].as_u64().expect("treeSize");
    let root = hash32(l["checkpoint"]["rootHash"].as_str().expect("rootHash"));
    if let Some(note) = l["checkpoint"]["note"].as_str() {
        let cp = Checkpoint::parse(note);
        assert_eq!((cp.origin.as_str(), cp.size, cp.root), (ORIGIN, size, root));
    }
    let nodes = l["nodes"].as_array().expect("nodes");
    let mut names = BTreeSet::new();
    for n in nodes {
        let id = n["id"].as_str().unwrap();
        let index = n["index"].as_u64().unwrap();
        assert!(index < size);
        let proof = &n["proof"];
        assert_eq!(
            proof["treeSize"].as_u64(),
            Some(size),
            "one checkpoint for all"
        );
        let leaf_hash = hash32(proof["leafHash"].as_str().unwrap());
        assert_eq!(hex::encode(leaf_hash), id, "the leaf hash is the id");
        assert!(
            verify_inclusion(&leaf_hash, index, size, &hashes(&proof["hashes"]), &root),
            "proof of {} does not lead to the checkpoint root",
            desk.name(id)
        );
        names.insert(desk.name(id));
    }
    for e in l["edges"].as_array().expect("edges") {
        for end in ["from", "to"] {
            let id = e[end].as_str().unwrap();
            assert!(
                nodes.iter().any(|n| n["id"] == id),
                "edge end {id} is a node"
            );
        }
    }
    names
}

fn names(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

const LINEAGE: &str =
    "query($id: ID!, $dir: LineageDirection!, $depth: Int, $asOf: Int, $roles: [String!]) {
    lineage(id: $id, direction: $dir, depth: $depth, asOf: $asOf, roles: $roles) {
        checkpoint { treeSize rootHash note }
        nodes { id index kind entity depth proof { index treeSize leafHash hashes } }
        edges { from to role }
        truncated
    } }";

#[test]
fn lineage_upstream_downstream_and_as_of_verify_against_one_checkpoint() {
    let server = Server::start(&[]);
    let desk = build_desk(&server);

    // Upstream from the output: the decision, its approval, the five messages it read, the
    // model and the policy version it ran under (and that version's parent).
    let up = gql(
        &server,
        LINEAGE,
        json!({"id": desk.id("o0"), "dir": "UPSTREAM"}),
    )["lineage"]
        .clone();
    let mut want = names(&["o0", "d0", "a0", "model-v1", "policy-v2", "policy-v1"]);
    want.extend((0..5).map(|m| format!("msg-{m}")));
    assert_eq!(check_lineage(&desk, &up), want);
    assert_eq!(
        up["nodes"][0]["id"],
        desk.id("o0"),
        "the start record comes first"
    );
    assert_eq!(up["truncated"], false);
    let cp = server.checkpoint();
    assert_eq!(up["checkpoint"]["treeSize"].as_u64(), Some(cp.size));
    assert_eq!(up["checkpoint"]["note"].as_str(), Some(cp.text.as_str()));
    let edge = |from: &str, to: &str, role: &str| json!({"from": desk.id(from), "to": desk.id(to), "role": role});
    let edges = up["edges"].as_array().unwrap();
    for e in [
        edge("o0", "d0", "decision"),
        edge("o0", "a0", "approval"),
        edge("a0", "d0", "decision"),
        edge("d0", "policy-v2", "policy"),
        edge("policy-v2", "policy-v1", "parent"),
    ] {
        assert!(edges.contains(&e), "missing {e}");
    }
    assert_eq!(edges.len(), 2 + 1 + 7 + 1);

    // Depth bounds the walk.
    let shallow = gql(
        &server,
        LINEAGE,
        json!({"id": desk.id("o0"), "dir": "UPSTREAM", "depth": 1}),
    );
    assert_eq!(
        check_lineage(&desk, &shallow["lineage"]),
        names(&["o0", "d0", "a0"])
    );
    assert_eq!(shallow["lineage"]["truncated"], true);

    // Downstream from policy v2 along decisions: what it caused.
    let roles = json!(["policy", "decision", "approval"]);
    let down = gql(
        &server,
        LINEAGE,
        json!({"id": desk.id("policy-v2"), "dir": "DOWNSTREAM", "roles": roles}),
    )["lineage"]
        .clone();
    assert_eq!(
        check_lineage(&desk, &down),
        names(&["policy-v2", "d0", "d1", "a0", "a1", "o0"])
    );
    assert!(down["edges"]
        .as_array()
        .unwrap()
        .contains(&edge("d1", "policy-v2", "policy")));

    // As of the tree right after d0: only d0 had been decided under v2. The answer's root is
    // the tree at that size: every proof leads to it, and it is consistent with the signed
    // checkpoint of today.
    let as_of = desk.after_d0;
    let past = gql(
        &server,
        LINEAGE,
        json!({"id": desk.id("policy-v2"), "dir": "DOWNSTREAM", "roles": roles, "asOf": as_of}),
    )["lineage"]
        .clone();
    assert_eq!(check_lineage(&desk, &past), names(&["policy-v2", "d0"]));
    assert_eq!(past["checkpoint"]["treeSize"].as_u64(), Some(as_of));
    // A batch ended at that size (d0 was appended alone), so the archived note is served.
    assert_eq!(
        past["checkpoint"]["note"].as_str(),
        Some(desk.d0_checkpoint.as_str())
    );
    let old_root = hash32(past["checkpoint"]["rootHash"].as_str().unwrap());
    let c = gql(
        &server,
        "query($from: Int!, $to: Int!) { consistencyProof(from: $from, to: $to) { from to hashes } }",
        json!({"from": as_of, "to": cp.size}),
    );
    assert!(verify_consistency(
        as_of,
        cp.size,
        &hashes(&c["consistencyProof"]["hashes"]),
        &old_root,
        &cp.root
    ));
    // A record appended later does not exist as of that size.
    let code = gql_error(
        &server,
        LINEAGE,
        json!({"id": desk.id("d2"), "dir": "UPSTREAM", "asOf": as_of}),
    );
    assert_eq!(code, "NOT_FOUND");
    let code = gql_error(
        &server,
        LINEAGE,
        json!({"id": desk.id("d2"), "dir": "UPSTREAM", "asOf": cp.size + 1}),
    );
    assert_eq!(code, "BAD_INPUT");

    // The standalone proof queries agree with the checkpoint.
    let v = gql(
        &server,
        "query($i: Int!) { checkpoint { treeSize rootHash note } inclusionProof(index: $i) { index treeSize leafHash hashes } }",
        json!({"i": 3}),
    );
    assert_eq!(v["checkpoint"]["note"].as_str(), Some(cp.text.as_str()));
    let p = &v["inclusionProof"];
    assert!(verify_inclusion(
        &hash32(p["leafHash"].as_str().unwrap()),
        3,
        cp.size,
        &hashes(&p["hashes"]),
        &cp.root
    ));
}

#[test]
fn limits_and_bad_input_answer_with_codes() {
    let server = Server::start(&[]);
    let desk = build_desk(&server);
    let id = json!({"id": desk.id("o0")});
    // Too deep, however cheap: nested past the depth limit.
    let mut deep = "name".to_owned();
    for _ in 0..16 {
        deep = format!("ofType {{ {deep} }}");
    }
    let q = format!("{{ __type(name: \"Query\") {{ fields {{ type {{ {deep} }} }} }} }}");
    assert_eq!(gql_error(&server, &q, Value::Null), "TOO_COMPLEX");
    let v = post(&server, &q, Value::Null).ok_json();
    assert!(
        v["errors"][0]["message"].as_str().unwrap().contains("deep"),
        "{v}"
    );
    // refs of refs of refs… multiplies the cost past the complexity limit.
    let mut nested = "id".to_owned();
    for _ in 0..5 {
        nested = format!("refs {{ record {{ {nested} }} }}");
    }
    let q = format!("query($id: ID!) {{ record(id: $id) {{ {nested} }} }}");
    assert_eq!(gql_error(&server, &q, id.clone()), "TOO_COMPLEX");
    // Within the limits the same shape is fine.
    let q = "query($id: ID!) { record(id: $id) { refs { record { refs { record { id } } } } } }";
    assert!(gql(&server, q, id.clone())["record"]["refs"].is_array());
    // Too much: pages of pages of pages.
    let q = "{ records(first: 100) { edges { node { citedBy(first: 100) { edges { node {
        versions(first: 100) { edges { node { id } } } } } } } } } }";
    assert_eq!(gql_error(&server, q, Value::Null), "TOO_COMPLEX");
    // Limits of the arguments themselves.
    assert_eq!(
        gql_error(
            &server,
            "{ records(first: 101) { edges { cursor } } }",
            Value::Null
        ),
        "BAD_INPUT"
    );
    assert_eq!(
        gql_error(
            &server,
            "{ records(after: \"x\") { edges { cursor } } }",
            Value::Null
        ),
        "BAD_INPUT"
    );
    assert_eq!(
        gql_error(
            &server,
            LINEAGE,
            json!({"id": desk.id("o0"), "dir": "UPSTREAM", "depth": 51})
        ),
        "BAD_INPUT"
    );
    assert_eq!(
        gql_error(
            &server,
            "{ records(first: -1) { edges { cursor } } }",
            Value::Null
        ),
        "BAD_INPUT"
    );
    // Ids: malformed, uppercase, unknown.
    let rec = "query($id: ID!) { record(id: $id) { id } }";
    assert_eq!(gql_error(&server, rec, json!({"id": "xyz"})), "BAD_INPUT");
    assert_eq!(
        gql_error(&server, rec, json!({"id": desk.id("o0").to_uppercase()})),
        "BAD_INPUT"
    );
    assert_eq!(
        gql_error(&server, rec, json!({"id": "0".repeat(64)})),
        "NOT_FOUND"
    );
    let v = post(&server, rec, json!({"id": "0".repeat(64)})).ok_json();
    assert_eq!(
        v["data"]["record"],
        Value::Null,
        "a nullable field, null with its error"
    );
    // Documents that do not parse or validate, and bodies that are not GraphQL requests.
    assert_eq!(
        gql_error(&server, "{ record(id: ", Value::Null),
        "BAD_INPUT"
    );
    assert_eq!(gql_error(&server, "{ nope }", Value::Null), "BAD_INPUT");
    let resp = server.post("/graphql", "application/json", b"{not json");
    assert_eq!(resp.status, 400);
    assert_eq!(resp.json()["errors"][0]["extensions"]["code"], "BAD_INPUT");
    // Appends the ledger refuses.
    let append = "mutation($r: RecordInput!) { append(record: $r) { id } }";
    let unknown_ref = record(
        "decision",
        "refund:x",
        ("agent", "a"),
        &[("policy", "policy:none")],
    );
    assert_eq!(
        gql_error(&server, append, json!({"r": unknown_ref})),
        "BAD_INPUT"
    );
    let mut bad_attrs = record("input", "msg:x", ("agent", "a"), &[]);
    bad_attrs["attributes"] = json!([1, 2]);
    assert_eq!(
        gql_error(&server, append, json!({"r": bad_attrs})),
        "BAD_INPUT"
    );
    assert_eq!(
        gql_error(
            &server,
            "mutation { appendBatch(records: []) { id } }",
            Value::Null
        ),
        "BAD_INPUT"
    );
    // Nothing above was appended, and the server is still healthy.
    assert_eq!(server.tree_size(), desk.ids.len() as u64);
    server.assert_healthy();
}
