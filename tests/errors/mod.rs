//! Bad input gets a 4xx with a JSON body `{message, code, type}` that says what is wrong; the
//! log is untouched and the server stays up.

use serde_json::{json, Value};

use crate::common::{record, Resp, Server};

/// One bad request and what the answer must say.
struct Case {
    name: &'static str,
    request: Request,
    status: u16,
    code: &'static str,
    /// Substrings the message must contain (it must name the problem).
    message: &'static [&'static str],
}

enum Request {
    Get(String),
    Json(Value),
    Raw(&'static str, Vec<u8>),
}

fn send(server: &Server, request: &Request) -> Resp {
    match request {
        Request::Get(path) => server.get(path),
        Request::Json(v) => server.post_records(v),
        Request::Raw(content_type, body) => server.post("/v1/records", content_type, body),
    }
}

/// Checks the answer's status and error body, then that the log did not change and the server
/// still answers.
fn check(server: &Server, case: &Case, size_before: u64) {
    let resp = send(server, &case.request);
    let name = case.name;
    assert_eq!(
        resp.status,
        case.status,
        "{name}: status; body {}",
        String::from_utf8_lossy(&resp.body)
    );
    assert!(
        resp.content_type.starts_with("application/json"),
        "{name}: error bodies are JSON, got {:?}",
        resp.content_type
    );
    let err = resp.json();
    let obj = err.as_object().expect("error body is an object");
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["code", "message", "type"], "{name}: {err}");
    assert_eq!(err["code"], case.code, "{name}: {err}");
    assert_eq!(err["type"], "invalid_request", "{name}: {err}");
    let message = err["message"].as_str().expect("message is a string");
    for needle in case.message {
        assert!(
            message.contains(needle),
            "{name}: message {message:?} should mention {needle:?}"
        );
    }
    assert_eq!(
        server.tree_size(),
        size_before,
        "{name}: a refused request must not change the log"
    );
    server.assert_healthy();
}

fn actor() -> Value {
    json!({"type": "agent", "id": "a1"})
}

#[test]
fn bad_requests_get_json_errors_and_leave_the_log_alone() {
    let server = Server::start(&[]);
    server.append_all(&[
        record("input", "doc:a", 1),
        record("input", "doc:b", 2),
        record("input", "doc:c", 3),
    ]);
    let size = server.tree_size();
    assert_eq!(size, 3);

    let cases = vec![
        Case {
            name: "malformed JSON",
            request: Request::Raw("application/json", br#"{"kind": "input","#.to_vec()),
            status: 400,
            code: "invalid_json",
            // Where parsing stopped (serde_json reports line and column).
            message: &["column 17"],
        },
        Case {
            name: "unknown field",
            request: Request::Json(json!({"kind": "input", "actor": actor(), "colour": "red"})),
            status: 400,
            code: "invalid_record",
            message: &["unknown field", "colour"],
        },
        Case {
            name: "missing kind",
            request: Request::Json(json!({"actor": actor(), "payload": {"x": 1}})),
            status: 400,
            code: "invalid_record",
            message: &["missing field", "kind"],
        },
        Case {
            name: "wrong type of kind",
            request: Request::Json(json!({"kind": 5, "actor": actor()})),
            status: 400,
            code: "invalid_record",
            message: &["invalid type"],
        },
        Case {
            name: "wrong type of actor",
            request: Request::Json(json!({"kind": "input", "actor": "bob"})),
            status: 400,
            code: "invalid_record",
            message: &["invalid type"],
        },
        Case {
            name: "wrong type of refs",
            request: Request::Json(json!({"kind": "input", "actor": actor(), "refs": "doc:a"})),
            status: 400,
            code: "invalid_record",
            message: &["invalid type"],
        },
        Case {
            name: "empty kind",
            request: Request::Json(json!({"kind": "", "actor": actor()})),
            status: 400,
            code: "invalid_record",
            message: &["kind", "empty"],
        },
        Case {
            name: "an entity that looks like a record id",
            request: Request::Json(
                json!({"kind": "input", "actor": actor(), "entity": "ab".repeat(32)}),
            ),
            status: 400,
            code: "invalid_record",
            message: &["entity"],
        },
        Case {
            name: "empty array",
            request: Request::Json(json!([])),
            status: 400,
            code: "invalid_record",
            message: &["no records"],
        },
        Case {
            name: "unknown ref by id",
            request: Request::Json(json!({
                "kind": "decision", "actor": actor(),
                "refs": [{"role": "input", "ref": "0f".repeat(32)}],
            })),
            status: 400,
            code: "unknown_ref",
            message: &["0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f"],
        },
        Case {
            name: "unknown ref by entity",
            request: Request::Json(json!({
                "kind": "decision", "actor": actor(),
                "refs": [{"role": "policy", "ref": "policy:nope"}],
            })),
            status: 400,
            code: "unknown_ref",
            message: &["policy:nope"],
        },
        Case {
            name: "invalid MessagePack",
            request: Request::Raw("application/msgpack", vec![0xc1, 0x00, 0x01]),
            status: 400,
            code: "invalid_msgpack",
            message: &["MessagePack"],
        },
        Case {
            name: "index out of range",
            request: Request::Get("/v1/proofs/inclusion?index=3&tree_size=3".into()),
            status: 400,
            code: "out_of_range",
            message: &["index 3", "out of range"],
        },
        Case {
            name: "index beyond the current tree",
            request: Request::Get("/v1/proofs/inclusion?index=7".into()),
            status: 400,
            code: "out_of_range",
            message: &["index 7", "out of range"],
        },
        Case {
            name: "tree_size out of range",
            request: Request::Get("/v1/proofs/inclusion?index=0&tree_size=4".into()),
            status: 400,
            code: "out_of_range",
            message: &["tree_size 4", "out of range"],
        },
        Case {
            name: "consistency from > to",
            request: Request::Get("/v1/proofs/consistency?from=3&to=2".into()),
            status: 400,
            code: "invalid_range",
            message: &["from", "3", "2"],
        },
        Case {
            name: "consistency to beyond the tree",
            request: Request::Get("/v1/proofs/consistency?from=1&to=4".into()),
            status: 400,
            code: "out_of_range",
            message: &["to 4", "out of range"],
        },
        Case {
            name: "missing query parameter",
            request: Request::Get("/v1/proofs/inclusion?tree_size=3".into()),
            status: 400,
            code: "invalid_query",
            message: &["index"],
        },
        Case {
            name: "record id that is not hex",
            request: Request::Get("/v1/records/not-a-record-id".into()),
            status: 400,
            code: "invalid_id",
            message: &["not-a-record-id", "hex"],
        },
        Case {
            name: "record id in upper case",
            request: Request::Get(format!("/v1/records/{}", "AB".repeat(32))),
            status: 400,
            code: "invalid_id",
            message: &["hex"],
        },
        Case {
            name: "record id that is too short",
            request: Request::Get("/v1/records/abcdef".into()),
            status: 400,
            code: "invalid_id",
            message: &["64"],
        },
    ];
    for case in &cases {
        check(&server, case, size);
    }

    // Unknown things are 404s with the same JSON shape.
    for path in [
        format!("/v1/records/{}", "cd".repeat(32)),
        "/v1/no-such-route".to_owned(),
    ] {
        let resp = server.get(&path);
        assert_eq!(resp.status, 404, "{path}: {}", resp.text());
        let err = resp.json();
        assert_eq!(err["code"], "not_found", "{path}: {err}");
        assert!(err["message"].as_str().is_some_and(|m| !m.is_empty()));
    }

    // After all that, appending still works and lands right after the first three.
    let r = server.append(&record("input", "doc:d", 4));
    assert_eq!(r["index"], 3);
}

/// In a batch, the message says which record is wrong (`records[i]`), whether the record
/// fails to parse or fails a check after parsing; the whole batch is refused.
#[test]
fn errors_in_a_batch_name_the_record() {
    let server = Server::start(&[]);
    server.append(&record("input", "doc:a", 1));
    let cases = [
        Case {
            name: "an unknown ref in the last record of a batch refuses the whole batch",
            request: Request::Json(json!([
                {"kind": "input", "actor": actor(), "entity": "doc:new"},
                {"kind": "decision", "actor": actor(), "refs": [{"role": "policy", "ref": "policy:nope"}]},
            ])),
            status: 400,
            code: "unknown_ref",
            message: &["policy:nope", "records[1]"],
        },
        Case {
            name: "missing kind in a batch names the record",
            request: Request::Json(json!([
                {"kind": "input", "actor": actor()},
                {"actor": actor()},
            ])),
            status: 400,
            code: "invalid_record",
            message: &["records[1]", "kind"],
        },
    ];
    for case in &cases {
        check(&server, case, 1);
    }
}

/// A query parameter that is not a number: the message must say which parameter.
#[test]
fn a_non_numeric_query_parameter_is_named() {
    let server = Server::start(&[]);
    server.append_all(&[record("input", "doc:a", 1), record("input", "doc:b", 2)]);
    for (path, param) in [
        ("/v1/proofs/consistency?from=one&to=2", "from"),
        ("/v1/proofs/inclusion?index=0&tree_size=-1", "tree_size"),
    ] {
        let case = Case {
            name: path,
            request: Request::Get(path.to_owned()),
            status: 400,
            code: "invalid_query",
            message: &[],
        };
        check(&server, &case, 2);
        let message = server.get(path).json()["message"]
            .as_str()
            .expect("message")
            .to_owned();
        assert!(
            message.contains(param),
            "{path}: message {message:?} should name the parameter {param:?}"
        );
    }
}

/// A body that is valid JSON but neither an object nor an array must not be reported as
/// "not valid JSON": the message should say what the body has to be.
#[test]
fn a_json_body_of_the_wrong_shape_is_explained() {
    let server = Server::start(&[]);
    for body in ["42", "\"a record\"", "null", "[1, 2]"] {
        let resp = server.post("/v1/records", "application/json", body.as_bytes());
        assert_eq!(resp.status, 400, "{body}: {}", resp.text());
        let err = resp.json();
        let message = err["message"].as_str().expect("message").to_owned();
        assert!(
            !message.contains("not valid JSON"),
            "{body} is valid JSON, but the message says {message:?}"
        );
        assert!(
            message.contains("object") || message.contains("struct RecordInput"),
            "{body}: message {message:?} should say that a record (object) or an array of records is expected"
        );
        assert_eq!(server.tree_size(), 0);
        server.assert_healthy();
    }
}

#[test]
fn an_oversize_body_is_a_413_json_error() {
    let limit = 65536;
    let server = Server::start(&["--max-body-bytes", "65536"]);
    server.append(&record("input", "doc:first", 0));

    // Just under the limit is fine.
    let mut fits = record("input", "doc:fits", 1);
    fits["payload"] = json!({"blob": "x".repeat(60_000)});
    let body = serde_json::to_vec(&fits).unwrap();
    assert!(body.len() < limit);
    let r = server.post_records(&fits);
    assert_eq!(r.status, 200, "a {}-byte body: {}", body.len(), r.text());
    let size = server.tree_size();
    assert_eq!(size, 2);

    let mut big = record("input", "doc:big", 2);
    big["payload"] = json!({"blob": "y".repeat(100_000)});
    let many: Vec<Value> = (0..400)
        .map(|i| record("input", &format!("doc:many-{i}"), i))
        .collect();
    for (name, body) in [
        ("one big record", serde_json::to_vec(&big).unwrap()),
        ("many small records", serde_json::to_vec(&many).unwrap()),
    ] {
        assert!(body.len() > limit, "{name}: {} bytes", body.len());
        let resp = server.post("/v1/records", "application/json", &body);
        assert_eq!(resp.status, 413, "{name}: {}", resp.text());
        let err = resp.json();
        assert_eq!(err["code"], "body_too_large", "{name}: {err}");
        assert_eq!(err["type"], "invalid_request", "{name}: {err}");
        assert!(
            err["message"].as_str().unwrap().contains("65536"),
            "{name}: the message names the limit: {err}"
        );
        assert_eq!(server.tree_size(), size, "{name}: log untouched");
        server.assert_healthy();
    }
    server.append(&record("input", "doc:after", 3));
    assert_eq!(server.tree_size(), size + 1);
}
