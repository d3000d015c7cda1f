//! Who may do what: bearer tokens, roles and tenants, against the real server.
//!
//! The matrix tests are generated from the server's own rule tables
//! (`provledger_graphql::ROUTES` and `FIELDS`): every rule needs a sample request here, so an
//! endpoint or GraphQL field added without a rule is unreachable (and its own tests fail),
//! and one added with a rule but without a sample fails `every_route_*` below.

use provledger_graphql::{Access, ROUTES};
use provledger_ledger::Role;
use serde_json::{json, Value};

use crate::common::{self, Client, Resp, Server};

const OWN: &str = "acme";
const OTHER: &str = "globex";

/// A server with one record in each of two tenants and a token per role for `acme`.
struct World {
    server: Server,
    admin: Client,
    /// Tokens of tenant `acme` by role (admin: the first-start token).
    clients: Vec<(Role, Client)>,
    own: Value,
    other: Value,
}

impl World {
    fn new() -> World {
        let server = Server::start(&[]);
        let admin = server.client();
        let mut clients = vec![(Role::Admin, admin.clone())];
        for role in [Role::Writer, Role::Auditor, Role::Regulator] {
            clients.push((role, admin.with_token(&make_token(&admin, role, OWN))));
        }
        let own = admin.append(&json!({
            "kind": "input", "tenant": OWN, "entity": "doc:own",
            "actor": {"type": "agent", "id": "a1"}, "payload": {"text": "acme's"},
        }));
        let other = admin.append(&json!({
            "kind": "input", "tenant": OTHER, "entity": "doc:other",
            "actor": {"type": "agent", "id": "g1"}, "payload": {"text": "globex's"},
        }));
        World {
            server,
            admin,
            clients,
            own,
            other,
        }
    }

    fn id(receipt: &Value) -> &str {
        receipt["id"].as_str().expect("receipt id")
    }

    fn index(receipt: &Value) -> u64 {
        receipt["index"].as_u64().expect("receipt index")
    }
}

fn make_token(admin: &Client, role: Role, tenant: &str) -> String {
    make_limited_token(admin, role, tenant, &[])
}

/// A token made by `admin` over HTTP, limited to `kinds` when some are given.
fn make_limited_token(admin: &Client, role: Role, tenant: &str, kinds: &[&str]) -> String {
    let mut body = json!({"role": role.as_str(), "tenant": tenant});
    if !kinds.is_empty() {
        body["kinds"] = json!(kinds);
    }
    let resp = admin.post(
        "/v1/tokens",
        "application/json",
        body.to_string().as_bytes(),
    );
    assert_eq!(resp.status, 201, "POST /v1/tokens: {}", resp.text());
    resp.json()["token"].as_str().expect("token").to_owned()
}

/// One request of the matrix.
struct Req {
    method: &'static str,
    path: String,
    body: Option<Value>,
}

impl Req {
    fn get(path: impl Into<String>) -> Req {
        Req {
            method: "GET",
            path: path.into(),
            body: None,
        }
    }

    fn post(path: impl Into<String>, body: Value) -> Req {
        Req {
            method: "POST",
            path: path.into(),
            body: Some(body),
        }
    }

    fn send(&self, client: &Client) -> Resp {
        let req = client.request(self.method, &self.path);
        match &self.body {
            Some(b) => client.send(
                req.set("Content-Type", "application/json"),
                Some(b.to_string().as_bytes()),
            ),
            None => client.send(req, None),
        }
    }
}

/// A route's sample: the request on the caller's own tenant and what success is; optionally
/// the same request aimed at the other tenant and what a non-admin gets for it.
struct Sample {
    own: Req,
    ok: u16,
    other: Option<(Req, u16)>,
}

/// Sample requests for every rule in `ROUTES`; `None` fails the matrix (add one).
fn sample(w: &World, method: &str, path: &str, n: usize) -> Option<Sample> {
    let own_id = World::id(&w.own);
    let other_id = World::id(&w.other);
    let s = |own: Req, ok: u16, other: Option<(Req, u16)>| Some(Sample { own, ok, other });
    let record = |tenant: Option<&str>| {
        let mut r = json!({
            "kind": "input", "entity": format!("doc:m{n}"),
            "actor": {"type": "agent", "id": "a1"}, "payload": {"n": n},
        });
        if let Some(t) = tenant {
            r["tenant"] = json!(t);
        }
        r
    };
    match (method, path) {
        ("GET", "/healthz") => s(Req::get("/healthz"), 200, None),
        ("GET", "/checkpoint") => s(Req::get("/checkpoint"), 200, None),
        ("GET", "/tile/entries/{rest:.*}") => s(Req::get("/tile/entries/000.p/1"), 200, None),
        ("GET", "/tile/{rest:.*}") => s(Req::get("/tile/0/000.p/1"), 200, None),
        ("GET", "/v1/key") => s(Req::get("/v1/key"), 200, None),
        ("GET", "/v1/keys") => s(Req::get("/v1/keys"), 200, None),
        ("POST", "/v1/keys/rotate") => s(Req::post("/v1/keys/rotate", json!({})), 200, None),
        ("POST", "/v1/keys/{key}/retire") => {
            // The oldest key, once a rotation made it a previous one (retiring is idempotent).
            let keys = w.admin.get("/v1/keys").json();
            let oldest = keys["keys"].as_array()?.last()?["key_hash"]
                .as_str()?
                .to_owned();
            let status = if keys["keys"].as_array()?.len() > 1 {
                200
            } else {
                409
            };
            s(
                Req::post(format!("/v1/keys/{oldest}/retire"), json!({})),
                status,
                None,
            )
        }
        ("GET", "/metrics") => s(Req::get("/metrics"), 200, None),
        ("POST", "/v1/records") => s(
            Req::post("/v1/records", record(None)),
            200,
            Some((Req::post("/v1/records", record(Some(OTHER))), 403)),
        ),
        ("GET", "/v1/records/{id}") => s(
            Req::get(format!("/v1/records/{own_id}")),
            200,
            Some((Req::get(format!("/v1/records/{other_id}")), 404)),
        ),
        ("GET", "/v1/proofs/inclusion") => s(
            Req::get(format!(
                "/v1/proofs/inclusion?index={}",
                World::index(&w.own)
            )),
            200,
            Some((
                Req::get(format!(
                    "/v1/proofs/inclusion?index={}",
                    World::index(&w.other)
                )),
                404,
            )),
        ),
        ("GET", "/v1/proofs/consistency") => {
            s(Req::get("/v1/proofs/consistency?from=1&to=2"), 200, None)
        }
        ("POST", "/graphql") => s(
            Req::post("/graphql", json!({"query": "{ __typename }"})),
            200,
            None,
        ),
        ("GET", "/graphql") => s(Req::get("/graphql"), 200, None),
        ("GET", "/graphql/assets/{file}") => {
            let html = w.admin.anonymous().get("/graphql").text();
            let start = html.find("/graphql/assets/")?;
            let end = html[start..].find(['"', '\''])? + start;
            s(Req::get(&html[start..end]), 200, None)
        }
        // Not a WebSocket upgrade: the handshake is refused, but not for want of a token
        // (the token travels in `connection_init`).
        ("GET", "/graphql/ws") => s(Req::get("/graphql/ws"), 400, None),
        ("POST", "/v1/tokens") => s(
            Req::post("/v1/tokens", json!({"role": "auditor", "tenant": OWN})),
            201,
            None,
        ),
        ("GET", "/v1/tokens") => s(Req::get("/v1/tokens"), 200, None),
        ("POST", "/v1/records/{id}/erase") => {
            let target = w.admin.append(&record(Some(OWN)));
            s(
                Req::post(
                    format!("/v1/records/{}/erase", World::id(&target)),
                    json!({"reason": "matrix"}),
                ),
                200,
                None,
            )
        }
        ("POST", "/v1/erasures") => {
            w.admin.append(&record(Some(OWN)));
            s(
                Req::post(
                    "/v1/erasures",
                    json!({"entity": format!("doc:m{n}"), "tenant": OWN, "reason": "matrix"}),
                ),
                200,
                None,
            )
        }
        ("POST", "/v1/exports") => {
            let export = |id: &str| {
                Req::post(
                    "/v1/exports",
                    json!({"format": "bundle", "scope": {"type": "lineage", "ids": [id]}}),
                )
            };
            s(export(own_id), 200, Some((export(other_id), 404)))
        }
        ("POST", "/api/v1/lineage") => s(
            Req::post(
                "/api/v1/lineage",
                json!({
                    "eventType": "START", "eventTime": "2026-11-25T08:00:00.000Z",
                    "run": {"runId": format!("0195c8a2-7d3e-7f1a-9b2c-{n:012}")},
                    "job": {"namespace": "airflow", "name": "matrix"},
                    "inputs": [], "outputs": [],
                    "producer": "https://example.com/matrix",
                    "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
                }),
            ),
            200,
            None,
        ),
        ("DELETE", "/v1/tokens/{id}") => {
            let resp = w.admin.post(
                "/v1/tokens",
                "application/json",
                json!({"role": "auditor", "tenant": OWN})
                    .to_string()
                    .as_bytes(),
            );
            let id = resp.json()["id"].as_str()?.to_owned();
            s(
                Req {
                    method: "DELETE",
                    path: format!("/v1/tokens/{id}"),
                    body: None,
                },
                200,
                None,
            )
        }
        _ => None,
    }
}

#[test]
fn every_route_refuses_whom_its_rule_refuses_and_serves_whom_it_allows() {
    let w = World::new();
    let mut n = 0;
    for rule in ROUTES {
        let callers = std::iter::once((None, w.admin.anonymous()))
            .chain(w.clients.iter().map(|(r, c)| (Some(*r), c.clone())));
        for (role, client) in callers {
            n += 1;
            let sample = sample(&w, rule.method, rule.path, n).unwrap_or_else(|| {
                panic!(
                    "{} {} has an access rule but no sample request in tests/auth: add one",
                    rule.method, rule.path
                )
            });
            let allowed = match (rule.access, role) {
                (Access::Public, _) => true,
                (Access::Entries, r) => r == Some(Role::Admin),
                (Access::Roles(roles), Some(r)) => roles.contains(&r),
                (Access::Roles(_), None) => false,
            };
            let who = role.map_or("anonymous", Role::as_str);
            let resp = sample.own.send(&client);
            let expected = match (allowed, role) {
                (true, _) => sample.ok,
                (false, None) => 401,
                (false, Some(_)) => 403,
            };
            assert_eq!(
                resp.status,
                expected,
                "{who} {} {}: {}",
                sample.own.method,
                sample.own.path,
                resp.text()
            );
            if !allowed {
                let code = resp.json()["code"].clone();
                assert!(
                    code == "unauthorized" || code == "forbidden",
                    "{who} {}: code {code}",
                    rule.path
                );
                continue;
            }
            if let Some((other, denied)) = &sample.other {
                let resp = other.send(&client);
                let expected = if role == Some(Role::Admin) {
                    sample.ok
                } else {
                    *denied
                };
                assert_eq!(
                    resp.status,
                    expected,
                    "{who} on the other tenant: {} {}: {}",
                    other.method,
                    other.path,
                    resp.text()
                );
            }
        }
    }
    w.admin.assert_healthy();
}

/// A GraphQL document per root field: on the caller's own tenant, and (optionally) aimed at
/// the other tenant with the code a non-admin gets.
fn field_sample(w: &World, field: &str) -> Option<(String, Option<(String, &'static str)>)> {
    let (own_id, other_id) = (World::id(&w.own), World::id(&w.other));
    let (own_ix, other_ix) = (World::index(&w.own), World::index(&w.other));
    let input = |tenant: &str| {
        format!(
            r#"{{kind: "input", entity: "doc:gql", tenant: "{tenant}", actor: {{type: "agent", id: "a1"}}}}"#
        )
    };
    Some(match field {
        "Query.record" => (
            format!(r#"{{ record(id: "{own_id}") {{ id }} }}"#),
            Some((
                format!(r#"{{ record(id: "{other_id}") {{ id }} }}"#),
                "NOT_FOUND",
            )),
        ),
        "Query.records" => (
            "{ records(first: 5) { edges { node { id } } } }".into(),
            None,
        ),
        "Query.pendingApprovals" => (
            "{ pendingApprovals(first: 5) { edges { node { id } } } }".into(),
            None,
        ),
        "Query.stats" => ("{ stats { __typename } }".into(), None),
        "Query.lineage" => (
            format!(r#"{{ lineage(id: "{own_id}", direction: UPSTREAM) {{ nodes {{ id }} }} }}"#),
            Some((
                format!(
                    r#"{{ lineage(id: "{other_id}", direction: UPSTREAM) {{ nodes {{ id }} }} }}"#
                ),
                "NOT_FOUND",
            )),
        ),
        "Query.checkpoint" => ("{ checkpoint { treeSize } }".into(), None),
        "Query.consistencyProof" => (
            "{ consistencyProof(from: 1, to: 2) { hashes } }".into(),
            None,
        ),
        "Query.inclusionProof" => (
            format!("{{ inclusionProof(index: {own_ix}) {{ hashes }} }}"),
            Some((
                format!("{{ inclusionProof(index: {other_ix}) {{ hashes }} }}"),
                "NOT_FOUND",
            )),
        ),
        "Mutation.append" => (
            format!("mutation {{ append(record: {}) {{ id }} }}", input(OWN)),
            Some((
                format!("mutation {{ append(record: {}) {{ id }} }}", input(OTHER)),
                "FORBIDDEN",
            )),
        ),
        "Mutation.appendBatch" => (
            format!(
                "mutation {{ appendBatch(records: [{}]) {{ id }} }}",
                input(OWN)
            ),
            Some((
                format!(
                    "mutation {{ appendBatch(records: [{}]) {{ id }} }}",
                    input(OTHER)
                ),
                "FORBIDDEN",
            )),
        ),
        _ => return None,
    })
}

fn graphql(client: &Client, query: &str) -> Value {
    let resp = client.post(
        "/graphql",
        "application/json",
        json!({ "query": query }).to_string().as_bytes(),
    );
    assert_eq!(resp.status, 200, "POST /graphql {query}: {}", resp.text());
    resp.json()
}

fn error_code(answer: &Value) -> Option<String> {
    answer["errors"][0]["extensions"]["code"]
        .as_str()
        .map(str::to_owned)
}

#[test]
fn every_graphql_root_field_refuses_whom_its_rule_refuses() {
    let w = World::new();
    for (field, roles) in provledger_graphql::FIELDS {
        if field.starts_with("Subscription.") {
            // Checked over WebSocket by the subscription tests.
            continue;
        }
        let (own, other) = field_sample(&w, field).unwrap_or_else(|| {
            panic!("{field} has an access rule but no sample in tests/auth: add one")
        });
        for (role, client) in &w.clients {
            let answer = graphql(client, &own);
            if roles.contains(role) {
                assert_eq!(error_code(&answer), None, "{role:?} {field}: {answer}");
                if let Some((other, code)) = &other {
                    let answer = graphql(client, other);
                    let expected = (*role != Role::Admin).then(|| (*code).to_owned());
                    assert_eq!(
                        error_code(&answer),
                        expected,
                        "{role:?} {field} on the other tenant: {answer}"
                    );
                }
            } else {
                assert_eq!(
                    error_code(&answer).as_deref(),
                    Some("FORBIDDEN"),
                    "{role:?} {field}: {answer}"
                );
            }
        }
        // No token: refused before GraphQL runs.
        let resp = w.admin.anonymous().post(
            "/graphql",
            "application/json",
            json!({ "query": own }).to_string().as_bytes(),
        );
        assert_eq!(resp.status, 401, "anonymous {field}: {}", resp.text());
    }
}

#[test]
fn listings_and_lineage_show_only_the_callers_tenant() {
    let w = World::new();
    let auditor = &w.clients[2].1;
    let answer = graphql(
        auditor,
        "{ records(first: 100) { edges { node { tenant } } } }",
    );
    let tenants: Vec<&str> = answer["data"]["records"]["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| e["node"]["tenant"].as_str().expect("tenant"))
        .collect();
    assert!(!tenants.is_empty(), "{answer}");
    assert!(tenants.iter().all(|t| *t == OWN), "{tenants:?}");

    // An admin sees both tenants.
    let answer = graphql(
        &w.admin,
        "{ records(first: 100) { edges { node { tenant } } } }",
    );
    let all = answer["data"]["records"]["edges"]
        .as_array()
        .expect("edges")
        .len();
    assert!(all > tenants.len(), "{answer}");

    // A writer of one tenant cannot cite another tenant's record: it is unknown to it, with
    // the same answer as an id that exists nowhere.
    let writer = &w.clients[1].1;
    let cite = |id: &str| {
        writer.post_records(&json!({
            "kind": "decision", "actor": {"type": "agent", "id": "a1"},
            "refs": [{"role": "input", "ref": id}],
        }))
    };
    let foreign = cite(World::id(&w.other));
    let nowhere = cite(&"ab".repeat(32));
    assert_eq!(foreign.status, 400, "{}", foreign.text());
    assert_eq!(foreign.json()["code"], "unknown_ref");
    assert_eq!(nowhere.json()["code"], "unknown_ref");
    assert_eq!(cite(World::id(&w.own)).status, 200);

    // The log's own records (key rotations, the redaction policy) live in the default tenant
    // and every tenant may read them; nobody may append to their entities.
    assert_eq!(
        w.admin
            .post("/v1/keys/rotate", "application/json", b"")
            .status,
        200
    );
    let answer = graphql(
        &w.admin,
        r#"{ records(filter: {kind: "key-rotation"}) { edges { node { id tenant } } } }"#,
    );
    let rotation = answer["data"]["records"]["edges"][0]["node"].clone();
    assert_eq!(rotation["tenant"], "default", "{answer}");
    let id = rotation["id"].as_str().expect("id");
    let seen = auditor.get(&format!("/v1/records/{id}"));
    assert_eq!(seen.status, 200, "{}", seen.text());
    for entity in ["log-key", "redaction-policy"] {
        let forged = writer.post_records(&json!({
            "kind": "key-rotation", "entity": entity, "actor": {"type": "agent", "id": "a1"},
        }));
        assert_eq!(forged.status, 400, "{}", forged.text());
        assert!(forged.text().contains("reserved"), "{}", forged.text());
    }
}

#[test]
fn first_start_makes_one_private_admin_token_and_tokens_are_stored_as_hashes() {
    let mut w = World::new();
    let dir = w.server.data_dir();
    let token = w.server.admin_token().expect("admin.token exists");
    assert!(token.starts_with("plt_"), "{token}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.join("admin.token"))
            .expect("admin.token")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert!(
        w.server.log().contains(&token),
        "the admin token is printed once"
    );
    let stored = std::fs::read_to_string(dir.join("tokens.json")).expect("tokens.json");
    assert!(!stored.contains(token.trim_start_matches("plt_")));

    // A restart makes no new admin token and prints none.
    w.server.stop();
    w.server.restart();
    assert_eq!(w.server.admin_token().as_deref(), Some(token.as_str()));
    assert!(!w.server.log().contains(&token));
    let listed = w.server.client().get("/v1/tokens").ok_json();
    let admins = listed["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .filter(|t| t["role"] == "admin")
        .count();
    assert_eq!(admins, 1, "{listed}");
}

#[test]
fn bad_missing_revoked_and_expired_tokens_get_401() {
    let w = World::new();
    let anon = w.admin.anonymous();
    let resp = anon.get("/v1/tokens");
    assert_eq!(resp.status, 401);
    assert_eq!(resp.json()["code"], "unauthorized");
    let raw = ureq::get(&anon.url("/v1/tokens")).call();
    match raw {
        Err(ureq::Error::Status(401, r)) => {
            assert_eq!(
                r.header("WWW-Authenticate"),
                Some("Bearer realm=\"provledger\"")
            )
        }
        other => panic!("expected a 401, got {other:?}"),
    }
    for bad in ["plt_nope", "", "Basic abc"] {
        let r = anon
            .request("GET", "/v1/tokens")
            .set("Authorization", &format!("Bearer {bad}"));
        assert_eq!(anon.send(r, None).status, 401, "{bad:?}");
    }

    // Revoked: works, then stops working at once.
    let resp = w.admin.post(
        "/v1/tokens",
        "application/json",
        br#"{"role": "auditor", "tenant": "acme", "label": "short-lived"}"#,
    );
    let created = resp.json();
    let auditor = w
        .admin
        .with_token(created["token"].as_str().expect("token"));
    assert_eq!(
        auditor.get("/v1/proofs/consistency?from=1&to=2").status,
        200
    );
    let id = created["id"].as_str().expect("id");
    let r = w.admin.request("DELETE", &format!("/v1/tokens/{id}"));
    assert_eq!(w.admin.send(r, None).status, 200);
    assert_eq!(
        auditor.get("/v1/proofs/consistency?from=1&to=2").status,
        401
    );
    let r = w.admin.request("DELETE", &format!("/v1/tokens/{id}"));
    assert_eq!(w.admin.send(r, None).status, 404);

    // Expiry: an expiry in the past is refused at creation; one in a second works, then not.
    let resp = w.admin.post(
        "/v1/tokens",
        "application/json",
        br#"{"role": "auditor", "tenant": "acme", "expires": "2001-01-01T00:00:00Z"}"#,
    );
    assert_eq!(resp.status, 400, "{}", resp.text());
    let resp = w.admin.post(
        "/v1/tokens",
        "application/json",
        br#"{"role": "auditor", "tenant": "acme", "expires": "1s"}"#,
    );
    let brief = w
        .admin
        .with_token(resp.json()["token"].as_str().expect("token"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let status = brief.get("/v1/proofs/consistency?from=1&to=2").status;
        if status == 401 {
            break;
        }
        assert_eq!(status, 200);
        assert!(
            std::time::Instant::now() < deadline,
            "the token never expired"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }

    // Malformed token requests are 400s that name the problem.
    for (body, needle) in [
        (r#"{"role": "root", "tenant": "acme"}"#, "role"),
        (r#"{"role": "writer", "tenant": "a b"}"#, "tenant"),
        (
            r#"{"role": "writer", "tenant": "acme", "extra": 1}"#,
            "extra",
        ),
    ] {
        let resp = w
            .admin
            .post("/v1/tokens", "application/json", body.as_bytes());
        assert_eq!(resp.status, 400, "{body}: {}", resp.text());
        assert!(resp.text().contains(needle), "{body}: {}", resp.text());
    }
}

#[test]
fn kind_limits_and_tenant_claims_bind_writers() {
    let w = World::new();
    let writer = w.admin.with_token(&make_limited_token(
        &w.admin,
        Role::Writer,
        OWN,
        &["decision"],
    ));
    let size = w.admin.tree_size();
    let denied = writer.post_records(&common::record("input", "doc:x", 1));
    assert_eq!(denied.status, 403, "{}", denied.text());
    assert!(denied.text().contains("kind"), "{}", denied.text());
    let mut other = common::record("decision", "doc:x", 2);
    other["tenant"] = json!(OTHER);
    assert_eq!(writer.post_records(&other).status, 403);
    assert_eq!(
        w.admin.tree_size(),
        size,
        "refused appends leave the log alone"
    );

    // The tenant comes from the token when the body names none.
    let receipt = writer.append(&common::record("decision", "doc:x", 3));
    let stored = w
        .admin
        .get(&format!("/v1/records/{}", World::id(&receipt)))
        .ok_json();
    assert_eq!(stored["tenant"], OWN);
    // An auditor of the other tenant cannot see it, and gets the answer of a missing record.
    let spy = w
        .admin
        .with_token(&make_token(&w.admin, Role::Auditor, OTHER));
    let seen = spy.get(&format!("/v1/records/{}", World::id(&receipt)));
    let missing = spy.get(&format!("/v1/records/{}", "cd".repeat(32)));
    assert_eq!(seen.status, 404);
    assert_eq!(seen.body, missing.body, "no existence leak");

    // An auditor limited to inputs reads no decision figures and no listing of other kinds.
    let narrow = w.admin.with_token(&make_limited_token(
        &w.admin,
        Role::Auditor,
        OWN,
        &["input"],
    ));
    for query in [
        "{ pendingApprovals { edges { node { id } } } }",
        "{ stats { __typename } }",
        "{ records { edges { node { id } } } }",
    ] {
        let answer = graphql(&narrow, query);
        assert_eq!(
            error_code(&answer).as_deref(),
            Some("FORBIDDEN"),
            "{query}: {answer}"
        );
    }
    let inputs = graphql(
        &narrow,
        r#"{ records(filter: {kind: "input"}) { edges { node { kind } } } }"#,
    );
    assert_eq!(error_code(&inputs), None, "{inputs}");
}

#[test]
fn tokens_are_managed_offline_only_while_the_server_is_down() {
    let mut w = World::new();
    let dir = w.server.data_dir();
    let run = |args: &[&str]| {
        std::process::Command::new(common::bin())
            .arg("token")
            .args(args)
            .arg("--data-dir")
            .arg(&dir)
            .output()
            .expect("run provledger token")
    };
    let busy = run(&["list"]);
    assert!(!busy.status.success());
    assert!(
        String::from_utf8_lossy(&busy.stderr).contains("in use"),
        "{}",
        common::describe(&busy)
    );
    w.server.stop();
    let made = run(&[
        "create",
        "--role",
        "auditor",
        "--tenant",
        OWN,
        "--expires",
        "30d",
    ]);
    assert!(made.status.success(), "{}", common::describe(&made));
    let token = String::from_utf8_lossy(&made.stdout).trim().to_owned();
    let listed = run(&["list", "--json"]);
    let lines = String::from_utf8_lossy(&listed.stdout).to_string();
    assert!(lines.contains("\"role\":\"auditor\""), "{lines}");
    assert!(!lines.contains(token.trim_start_matches("plt_")), "{lines}");
    let bad = run(&["create", "--role", "root"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a role"));

    w.server.restart();
    let auditor = w.server.client().with_token(&token);
    assert_eq!(
        auditor
            .get(&format!("/v1/records/{}", World::id(&w.own)))
            .status,
        200
    );
}

#[test]
fn a_public_log_serves_entry_bundles_without_a_token() {
    let server = Server::start(&["--public-log"]);
    server.client().append(&common::record("input", "doc:p", 1));
    let anon = server.client().anonymous();
    assert_eq!(anon.get("/tile/entries/000.p/1").status, 200);
    assert_eq!(anon.get("/v1/tokens").status, 401);
}
