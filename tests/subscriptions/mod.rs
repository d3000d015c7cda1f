//! GraphQL subscriptions (`recordAppended`) over WebSocket with the graphql-transport-ws
//! protocol, end to end: a client written here from the protocol's text
//! (github.com/enisdenjo/graphql-ws, PROTOCOL.md) subscribes, records are appended over HTTP,
//! and exactly the matching ones arrive, in log order, each with a proof that checks against
//! its signed checkpoint.

use std::net::TcpStream;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;
use tungstenite::{Message, WebSocket};

use crate::common::{Client, Receipt, Server};

/// A read that waits longer than this fails the test instead of hanging it (a safety net,
/// not a timing assertion: every awaited message is due as soon as an append is answered).
const READ_LIMIT: Duration = Duration::from_secs(60);

/// A graphql-transport-ws connection, after `connection_init` / `connection_ack`.
struct GqlSocket {
    ws: WebSocket<TcpStream>,
}

impl GqlSocket {
    /// Opens `GET /graphql/ws` and initialises the connection with the client's token in the
    /// `connection_init` payload, as a browser must (it cannot set headers on a WebSocket).
    fn connect(client: &Client) -> GqlSocket {
        let auth = client
            .request("GET", "/graphql/ws")
            .header("Authorization")
            .map(str::to_owned);
        let mut socket = GqlSocket::open(client);
        let ack = socket.init(json!({ "Authorization": auth }));
        assert_eq!(ack["type"], "connection_ack", "{ack}");
        socket
    }

    /// Opens `GET /graphql/ws` with the graphql-transport-ws subprotocol and no credentials.
    fn open(client: &Client) -> GqlSocket {
        let url = client.url("/graphql/ws").replacen("http://", "ws://", 1);
        let mut request = url
            .as_str()
            .into_client_request()
            .expect("a WebSocket request");
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static("graphql-transport-ws"),
        );
        let host = url
            .strip_prefix("ws://")
            .and_then(|rest| rest.split('/').next())
            .expect("host:port in the URL");
        let stream = TcpStream::connect(host).expect("connect to the server");
        stream
            .set_read_timeout(Some(READ_LIMIT))
            .expect("set a read timeout");
        let (ws, response) = tungstenite::client(request, stream)
            .unwrap_or_else(|e| panic!("WebSocket handshake with {url} failed: {e}"));
        assert_eq!(
            response
                .headers()
                .get("Sec-WebSocket-Protocol")
                .and_then(|v| v.to_str().ok()),
            Some("graphql-transport-ws"),
            "the server speaks the subprotocol asked for"
        );
        GqlSocket { ws }
    }

    /// Sends `connection_init` with `payload`; returns the answer.
    fn init(&mut self, payload: Value) -> Value {
        self.send(json!({"type": "connection_init", "payload": payload}));
        self.recv()
    }

    fn send(&mut self, message: Value) {
        self.ws
            .send(Message::text(message.to_string()))
            .expect("send a WebSocket message");
    }

    /// The next protocol message (answering protocol pings on the way), within [`READ_LIMIT`]
    /// however many pings come first.
    fn recv(&mut self) -> Value {
        self.recv_within(READ_LIMIT)
            .unwrap_or_else(|| panic!("no message within {READ_LIMIT:?}"))
    }

    /// The next protocol message if one comes within `limit` (pings answered on the way).
    fn recv_within(&mut self, limit: Duration) -> Option<Value> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return None;
            }
            self.ws
                .get_ref()
                .set_read_timeout(Some(left))
                .expect("set a read timeout");
            let message = match self.ws.read() {
                Ok(message) => message,
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return None
                }
                Err(e) => panic!("reading from the WebSocket failed: {e}"),
            };
            match message {
                Message::Text(text) => {
                    let v: Value = serde_json::from_str(text.as_str())
                        .unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
                    if v["type"] == "ping" {
                        self.send(json!({"type": "pong"}));
                        continue;
                    }
                    return Some(v);
                }
                Message::Close(frame) => panic!("the server closed the WebSocket: {frame:?}"),
                // tungstenite answers WebSocket pings itself.
                _ => continue,
            }
        }
    }

    /// Sends `subscribe` with id `id`.
    fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
        self.send(json!({
            "id": id, "type": "subscribe",
            "payload": {"query": query, "variables": variables},
        }));
    }

    /// The payload of the next `next` message for `id`; fails on anything else.
    fn next(&mut self, id: &str) -> Value {
        let v = self.recv();
        assert_eq!(v["type"], "next", "expected a next message: {v}");
        assert_eq!(v["id"], id, "{v}");
        v["payload"].clone()
    }
}

const TAIL: &str = r#"subscription Tail($filter: AppendedFilter, $from: Int) {
  recordAppended(filter: $filter, from: $from) {
    index
    record { id index leaf kind entity actor { type id } }
    checkpoint { treeSize rootHash note }
    proof { index treeSize leafHash hashes }
  }
}"#;

fn decision(actor: &str, n: u32) -> Value {
    json!({
        "kind": "decision", "entity": format!("refund:{n}"),
        "actor": {"type": "agent", "id": actor},
        "payload": {"n": n},
    })
}

fn input(actor: &str, n: u32) -> Value {
    json!({"kind": "input", "actor": {"type": "agent", "id": actor}, "payload": {"n": n}})
}

/// Checks one `recordAppended` item like a receipt: the leaf hashes to the id, the proof
/// leads from it to the root of the signed checkpoint the item names.
fn check_item(item: &Value) -> Receipt {
    let receipt = Receipt::from_json(&json!({
        "id": item["record"]["id"], "index": item["index"], "leaf": item["record"]["leaf"],
        "tree_size": item["checkpoint"]["treeSize"], "inclusion_proof": item["proof"]["hashes"],
        "checkpoint": item["checkpoint"]["note"],
    }));
    let cp = receipt.check();
    assert_eq!(item["proof"]["treeSize"], item["checkpoint"]["treeSize"]);
    assert_eq!(item["proof"]["index"], item["index"]);
    assert_eq!(
        item["checkpoint"]["rootHash"].as_str(),
        Some(B64.encode(cp.root).as_str())
    );
    receipt
}

#[test]
fn record_appended_sends_exactly_the_matching_records_in_log_order() {
    let server = Server::start(&[]);
    let client = server.client();
    client.append(&input("agent-a", 0));
    let start = client.tree_size();
    let mut socket = GqlSocket::connect(&client);
    socket.subscribe(
        "tail",
        TAIL,
        json!({"filter": {"kind": "decision", "actor": {"id": "agent-a"}}, "from": start}),
    );
    // Three requests mixing matches with records of another kind and another agent.
    let batches = [
        vec![
            decision("agent-a", 1),
            input("agent-a", 2),
            decision("agent-b", 3),
        ],
        vec![decision("agent-a", 4)],
        vec![
            decision("agent-b", 5),
            decision("agent-a", 6),
            input("agent-b", 7),
        ],
    ];
    let mut receipts = Vec::new();
    for batch in &batches {
        receipts.extend(client.append_all(batch));
    }
    let records: Vec<&Value> = batches.iter().flatten().collect();
    let want: Vec<(u64, String)> = records
        .iter()
        .zip(&receipts)
        .filter(|(r, _)| r["kind"] == "decision" && r["actor"]["id"] == "agent-a")
        .map(|(_, receipt)| {
            (
                receipt["index"].as_u64().expect("index"),
                receipt["id"].as_str().expect("id").to_owned(),
            )
        })
        .collect();
    assert_eq!(want.len(), 3);
    let mut got = Vec::new();
    for _ in 0..want.len() {
        let payload = socket.next("tail");
        assert!(payload.get("errors").is_none(), "{payload}");
        let item = &payload["data"]["recordAppended"];
        assert_eq!(item["record"]["kind"], "decision");
        assert_eq!(
            item["record"]["actor"],
            json!({"type": "agent", "id": "agent-a"})
        );
        check_item(item);
        got.push((
            item["index"].as_u64().expect("index"),
            item["record"]["id"].as_str().expect("id").to_owned(),
        ));
    }
    assert_eq!(got, want);
    // Nothing else is on its way: the next message is the next match appended.
    let sentinel = client.append(&decision("agent-a", 8));
    let payload = socket.next("tail");
    assert_eq!(
        payload["data"]["recordAppended"]["record"]["id"],
        sentinel["id"]
    );
    // Ending the subscription (the server may confirm with its own `complete`) leaves the
    // connection usable.
    socket.send(json!({"id": "tail", "type": "complete"}));
    socket.subscribe("again", TAIL, json!({"from": start}));
    let mut first = socket.recv();
    if first == json!({"id": "tail", "type": "complete"}) {
        first = socket.recv();
    }
    assert_eq!(
        (&first["type"], &first["id"]),
        (&json!("next"), &json!("again")),
        "{first}"
    );
    let first = first["payload"].clone();
    assert_eq!(
        first["data"]["recordAppended"]["index"].as_u64(),
        Some(start),
        "from resumes at the index asked for: {first}"
    );
}

/// api.md's subscription examples, as written: the websocat session's two messages (with a
/// real token for `<token>`) and the GraphQL block, on one connection. A decision by
/// `refund-bot` reaches both subscriptions, another agent's decision only the one that filters
/// by kind, an input neither, and nothing else arrives.
#[test]
fn the_subscriptions_of_api_md_work_as_written() {
    let doc = crate::docs::read_doc("api.md");
    let blocks = crate::docs::blocks(&doc);
    let session = blocks
        .iter()
        .find(|b| b.lang == "sh" && b.text.starts_with("websocat "))
        .expect("api.md's websocat session");
    let messages: Vec<&str> = session.text.lines().skip(1).collect();
    assert_eq!(messages.len(), 2, "connection_init and subscribe");
    let query = blocks
        .iter()
        .find(|b| b.lang == "graphql" && b.text.trim_start().starts_with("subscription"))
        .expect("api.md's subscription");

    let server = Server::start(&[]);
    let client = server.client();
    let token = server.admin_token().expect("the admin token");
    let mut socket = GqlSocket::open(&client);
    let init: Value =
        serde_json::from_str(&messages[0].replace("<token>", &token)).expect("JSON message");
    socket.send(init);
    assert_eq!(socket.recv()["type"], "connection_ack");
    let subscribe: Value = serde_json::from_str(messages[1]).expect("JSON message");
    let websocat_id = subscribe["id"].as_str().expect("an id").to_owned();
    socket.send(subscribe);
    socket.subscribe("doc", &query.text, json!({}));
    // Neither subscription says when it is live (they start at the next append): append
    // refund-bot decisions of a warm-up entity until both have sent one, then ignore those.
    let mut live = std::collections::BTreeSet::new();
    for n in 0.. {
        assert!(n < 600, "the subscriptions never went live: {live:?}");
        client.append(&json!({
            "kind": "decision", "entity": format!("warmup:{n}"),
            "actor": {"type": "agent", "id": "refund-bot"},
        }));
        while let Some(v) = socket.recv_within(Duration::from_millis(100)) {
            assert_eq!(v["type"], "next", "{v}");
            live.insert(v["id"].as_str().expect("an id").to_owned());
        }
        if live.len() == 2 {
            break;
        }
    }

    let mut escalation = decision("refund-bot", 42);
    escalation["attributes"] = json!({"requires_approval": true});
    let appended =
        client.append_all(&[input("refund-bot", 1), decision("other-bot", 2), escalation]);
    let mut by_id: std::collections::BTreeMap<String, Vec<Value>> = Default::default();
    let mut received = 0;
    while received < 3 {
        let v = socket.recv();
        assert_eq!(v["type"], "next", "{v}");
        assert!(v["payload"].get("errors").is_none(), "{v}");
        let item = v["payload"]["data"]["recordAppended"].clone();
        if item["record"]["entity"]
            .as_str()
            .is_some_and(|e| e.starts_with("warmup:"))
        {
            continue;
        }
        received += 1;
        let id = v["id"].as_str().expect("an id").to_owned();
        by_id.entry(id).or_default().push(item);
    }
    // And nothing more is on its way: the next append's item comes next, on both.
    let sentinel = client.append(&decision("refund-bot", 43));
    for _ in 0..2 {
        let v = socket.recv();
        assert_eq!(
            v["payload"]["data"]["recordAppended"]["record"]["id"], sentinel["id"],
            "{v}"
        );
    }
    // websocat's subscription: decisions of any agent, in log order.
    let tail: Vec<&Value> = by_id[&websocat_id]
        .iter()
        .map(|i| &i["record"]["id"])
        .collect();
    assert_eq!(tail, [&appended[1]["id"], &appended[2]["id"]]);
    // The GraphQL block's: refund-bot's decisions, with the fields it asks for.
    let item = &by_id["doc"][..];
    assert_eq!(item.len(), 1, "{item:?}");
    assert_eq!(item[0]["record"]["id"], appended[2]["id"]);
    assert_eq!(item[0]["record"]["attributes"]["requires_approval"], true);
    assert_eq!(item[0]["checkpoint"]["treeSize"], appended[2]["tree_size"]);
    assert!(item[0]["proof"]["hashes"].is_array(), "{item:?}");
}

#[test]
fn subscription_errors_carry_codes() {
    let server = Server::start(&[]);
    let client = server.client();
    let size = client.tree_size();
    let mut socket = GqlSocket::connect(&client);
    socket.subscribe("ahead", TAIL, json!({"from": size + 5}));
    let payload = socket.next("ahead");
    let error = &payload["errors"][0];
    assert_eq!(error["extensions"]["code"], "BAD_INPUT", "{payload}");
    assert_eq!(
        error["message"],
        format!("from {} is beyond the current tree size {size}", size + 5)
    );
    let done = socket.recv();
    assert_eq!(done, json!({"id": "ahead", "type": "complete"}));
    socket.subscribe("bad", "subscription { recordAppended { nope } }", json!({}));
    let payload = socket.next("bad");
    assert_eq!(
        payload["errors"][0]["extensions"]["code"], "BAD_INPUT",
        "{payload}"
    );
}

#[test]
fn the_websocket_endpoint_refuses_plain_requests() {
    let server = Server::start(&[]);
    let resp = server.client().get("/graphql/ws");
    assert_eq!(resp.status, 400, "{}", resp.text());
    assert_eq!(resp.json()["code"], "invalid_websocket");
}

#[test]
fn subscriptions_need_a_reader_token() {
    let server = Server::start(&[]);
    let client = server.client();
    // Without a token the connection opens, but the subscription is refused.
    let mut anonymous = GqlSocket::open(&client.anonymous());
    assert_eq!(anonymous.init(json!({}))["type"], "connection_ack");
    anonymous.subscribe("t", TAIL, json!({}));
    let payload = anonymous.next("t");
    assert_eq!(
        payload["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
        "{payload}"
    );
    // A token that does not authenticate closes the connection (1002, with the reason).
    let mut forged = GqlSocket::open(&client.anonymous());
    forged.send(json!({"type": "connection_init", "payload": {"Authorization": "Bearer nope"}}));
    let close = loop {
        match forged.ws.read() {
            Ok(Message::Close(frame)) => break frame,
            Ok(_) => continue,
            Err(e) => panic!("expected a close frame, got {e}"),
        }
    };
    let close = close.expect("a close frame with a code");
    assert_eq!(u16::from(close.code), 1002);
    assert!(close.reason.contains("unauthorized"), "{close:?}");
}

#[test]
fn a_revoked_token_ends_its_open_subscription() {
    let server = Server::start(&[]);
    let admin = server.client();
    let created = admin
        .post(
            "/v1/tokens",
            "application/json",
            br#"{"role": "auditor", "tenant": "default"}"#,
        )
        .json();
    let auditor = admin.with_token(created["token"].as_str().expect("token"));
    let mut socket = GqlSocket::connect(&auditor);
    socket.subscribe("t", TAIL, json!({}));
    admin.append(&input("agent-1", 1));
    let first = socket.next("t");
    assert!(first["errors"].is_null(), "{first}");
    assert_eq!(first["data"]["recordAppended"]["record"]["kind"], "input");

    let id = created["id"].as_str().expect("id");
    let revoke = admin.request("DELETE", &format!("/v1/tokens/{id}"));
    assert_eq!(admin.send(revoke, None).status, 200);
    admin.append(&input("agent-1", 2));
    let last = socket.next("t");
    assert_eq!(
        last["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
        "{last}"
    );
    assert!(
        last["data"].is_null() || last["data"]["recordAppended"].is_null(),
        "{last}"
    );
}

/// A subscriber that stops reading holds its subscriptions back instead of making the server
/// buffer what it has not read: 50 subscriptions to 500 records of ~8 KB payloads make ~220
/// MB of messages, yet the server's memory grows by less than 100 MB while the client reads
/// nothing (measured: ~68 MB, of which the appends themselves take ~40 MB; each subscription
/// holds at most 16 records ready, and 1,500 records grow it to only ~89 MB), other requests
/// are answered, and once the client reads again every record arrives on every subscription,
/// in order. (Before the transport waited for each send, the whole backlog was queued in the
/// server.)
#[test]
fn a_subscriber_that_stops_reading_is_held_back_not_buffered() {
    const SUBSCRIPTIONS: usize = 50;
    const RECORDS: u64 = 500;
    let server = Server::start(&[]);
    let client = server.client();
    client.append(&input("agent-a", 0));
    let start = client.tree_size();
    let mut socket = GqlSocket::connect(&client);
    let query =
        "subscription($from: Int) { recordAppended(from: $from) { index record { payload } } }";
    for s in 0..SUBSCRIPTIONS {
        socket.subscribe(&format!("s{s}"), query, json!({"from": start}));
    }
    let before = server.rss_kib();
    let blob = "a few words of text, ".repeat(400);
    for chunk in 0..RECORDS / 50 {
        let records: Vec<Value> = (0..50)
            .map(|n| {
                json!({"kind": "input", "actor": {"type": "agent", "id": "a"},
                       "payload": {"n": chunk * 50 + n, "text": blob}})
            })
            .collect();
        client.append_all(&records);
    }
    client.assert_healthy();
    // Let the server produce whatever it would queue (a wait, not a timing assertion).
    std::thread::sleep(Duration::from_secs(2));
    let after = server.rss_kib();
    assert!(
        after < before + 100 * 1024,
        "server memory grew from {before} KiB to {after} KiB while a subscriber read nothing"
    );
    let mut next_index = vec![start; SUBSCRIPTIONS];
    for _ in 0..SUBSCRIPTIONS as u64 * RECORDS {
        let v = socket.recv();
        assert_eq!(v["type"], "next", "{v}");
        let id = v["id"].as_str().expect("a subscription id");
        let s: usize = id[1..].parse().expect("s<n>");
        let item = &v["payload"]["data"]["recordAppended"];
        assert_eq!(item["index"], next_index[s], "subscription {id}");
        assert_eq!(
            item["record"]["payload"]["n"],
            next_index[s] - start,
            "{id}"
        );
        next_index[s] += 1;
    }
    assert!(next_index.iter().all(|&i| i == start + RECORDS));
}
