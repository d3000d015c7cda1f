//! Entity history with what changed between versions (`Record.changes` in GraphQL), end to
//! end: three versions of a policy appended over HTTP, compared field by field, the payload
//! as an RFC 6902 JSON Patch.

use serde_json::{json, Value};

use crate::common::Server;

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

const CHANGES: &str = r#"query($id: ID!) {
  record(id: $id) {
    index
    changes {
      previous { id index }
      kind { old new }
      actor { old { type id } new { type id } }
      classification { old new }
      attributes { key change old new }
      refsAdded { role id }
      refsRemoved { role id }
      payload { state patch paths }
    }
    versions { edges { node { index changes { previous { index } payload { state paths } } } } }
  }
}"#;

#[test]
fn record_changes_describe_each_version_against_the_one_before() {
    let server = Server::start(&[]);
    let client = server.client();
    let source = |n: u32| {
        json!({"kind": "input", "entity": format!("doc:{n}"),
        "actor": {"type": "service", "id": "wiki"}})
    };
    let docs = client.append_all(&[source(1), source(2)]);
    let v1 = client.append(&json!({
        "kind": "policy", "entity": "policy:refunds", "actor": {"type": "human", "id": "alice"},
        "refs": [{"role": "input", "ref": "doc:1"}],
        "attributes": {"version": "v1", "owner": "alice", "draft": true},
        "payload": {"limit": 100, "regions": ["eu"], "a/b": {"x": 1}},
    }));
    // Another entity in between: versions are per entity, not neighbours in the log.
    client.append(&source(3));
    let v2 = client.append(&json!({
        "kind": "policy", "entity": "policy:refunds", "actor": {"type": "human", "id": "bob"},
        "refs": [{"role": "input", "ref": "doc:2"}, {"role": "parent", "ref": "policy:refunds"}],
        "attributes": {"version": "v2", "owner": "alice", "approved_by": "carol"},
        "payload": {"limit": 250, "regions": ["eu", "us"], "a/b": {}},
        "classification": "confidential",
    }));
    let v3 = client.append(&json!({
        "kind": "policy", "entity": "policy:refunds", "actor": {"type": "human", "id": "bob"},
        "refs": [{"role": "input", "ref": "doc:2"}, {"role": "parent", "ref": "policy:refunds"}],
        "attributes": {"version": "v2", "owner": "alice", "approved_by": "carol"},
        "payload": {"limit": 250, "regions": ["eu", "us"], "a/b": {}},
        "classification": "confidential",
    }));

    let d2 = gql(&server, CHANGES, json!({"id": v2["id"]}))["record"].clone();
    let c = &d2["changes"];
    assert_eq!(c["previous"], json!({"id": v1["id"], "index": v1["index"]}));
    assert_eq!(c["kind"], Value::Null);
    assert_eq!(
        c["actor"],
        json!({"old": {"type": "human", "id": "alice"}, "new": {"type": "human", "id": "bob"}})
    );
    assert_eq!(
        c["classification"],
        json!({"old": "internal", "new": "confidential"})
    );
    assert_eq!(
        c["attributes"],
        json!([
            {"key": "approved_by", "change": "ADDED", "old": null, "new": "carol"},
            {"key": "draft", "change": "REMOVED", "old": true, "new": null},
            {"key": "version", "change": "CHANGED", "old": "v1", "new": "v2"},
        ])
    );
    assert_eq!(
        c["refsAdded"],
        json!([
            {"role": "input", "id": docs[1]["id"]},
            {"role": "parent", "id": v1["id"]},
        ])
    );
    assert_eq!(
        c["refsRemoved"],
        json!([{"role": "input", "id": docs[0]["id"]}])
    );
    assert_eq!(
        c["payload"],
        json!({
            "state": "CHANGED",
            "patch": [
                {"op": "remove", "path": "/a~1b/x"},
                {"op": "replace", "path": "/limit", "value": 250},
                {"op": "add", "path": "/regions/1", "value": "us"},
            ],
            "paths": ["/a~1b/x", "/limit", "/regions/1"],
        })
    );

    // v3 repeats v2 except that its parent is now v2 itself.
    let d3 = gql(&server, CHANGES, json!({"id": v3["id"]}))["record"].clone();
    let c = &d3["changes"];
    assert_eq!(c["previous"]["id"], v2["id"]);
    assert_eq!(c["attributes"], json!([]));
    assert_eq!(c["actor"], Value::Null);
    assert_eq!(c["classification"], Value::Null);
    assert_eq!(c["refsAdded"], json!([{"role": "parent", "id": v2["id"]}]));
    assert_eq!(
        c["refsRemoved"],
        json!([{"role": "parent", "id": v1["id"]}])
    );
    assert_eq!(
        c["payload"],
        json!({"state": "UNCHANGED", "patch": [], "paths": []})
    );
    // The history, oldest first, each version with its changes (none for the first).
    let index = |v: &Value| v["index"].as_u64().expect("index");
    assert_eq!(
        d3["versions"]["edges"],
        json!([
            {"node": {"index": index(&v1), "changes": null}},
            {"node": {"index": index(&v2), "changes": {"previous": {"index": index(&v1)},
                "payload": {"state": "CHANGED", "paths": ["/a~1b/x", "/limit", "/regions/1"]}}}},
            {"node": {"index": index(&v3), "changes": {"previous": {"index": index(&v2)},
                "payload": {"state": "UNCHANGED", "paths": []}}}},
        ])
    );
    // The first version of an entity has nothing to compare with.
    let none = gql(&server, CHANGES, json!({"id": docs[0]["id"]}))["record"].clone();
    assert_eq!(none["changes"], Value::Null);
}
