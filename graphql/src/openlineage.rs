//! `POST /api/v1/lineage`: OpenLineage run events (<https://openlineage.io/spec>), the path the
//! OpenLineage HTTP transport posts to, mapped to records and refs so that pipelines that
//! already emit OpenLineage land in the ledger without code changes (`docs/openlineage.md`).
//!
//! One event is one append: the job and the input datasets the log does not know yet get a
//! first version, then the run's record (entity `run:<runId>`, one version per event) cites
//! the job (role `job`) and every input dataset (role `input`); on `COMPLETE`, every output
//! dataset gets a new version citing the run (role `generated_by`). Each record carries an
//! idempotency key derived from the event, so a client's retry of the same event changes
//! nothing and answers the same receipts. Facet *names* go into leaf attributes; facet
//! contents (anything at all) only into payloads, which the ledger scrubs and can erase.

use std::collections::BTreeSet;

use actix_web::{web, HttpResponse};
use provledger_ledger::{RecordInput, DEFAULT_TENANT};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::server::{body_error, ReceiptJson, MAX_RECORDS_PER_REQUEST};
use crate::AppState;

/// The actor of every record made from OpenLineage events.
const ACTOR: (&str, &str) = ("service", "openlineage");

/// A run event as the OpenLineage spec defines it (the fields the mapping reads; others are
/// kept in the run's payload).
#[derive(Debug, Deserialize)]
struct RunEvent {
    #[serde(rename = "eventType", default)]
    event_type: Option<EventType>,
    #[serde(rename = "eventTime")]
    event_time: String,
    run: Run,
    job: Job,
    #[serde(default)]
    inputs: Vec<Dataset>,
    #[serde(default)]
    outputs: Vec<Dataset>,
    producer: String,
    #[serde(rename = "schemaURL", default)]
    schema_url: Option<String>,
}

/// The spec's run states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
enum EventType {
    Start,
    Running,
    Complete,
    Abort,
    Fail,
    Other,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Start => "START",
            EventType::Running => "RUNNING",
            EventType::Complete => "COMPLETE",
            EventType::Abort => "ABORT",
            EventType::Fail => "FAIL",
            EventType::Other => "OTHER",
        }
    }
}

#[derive(Debug, Deserialize)]
struct Run {
    #[serde(rename = "runId")]
    run_id: String,
    #[serde(default)]
    facets: Option<Map<String, Value>>,
}

#[derive(Debug, Deserialize)]
struct Job {
    namespace: String,
    name: String,
    #[serde(default)]
    facets: Option<Map<String, Value>>,
}

#[derive(Debug, Deserialize)]
struct Dataset {
    namespace: String,
    name: String,
    #[serde(default)]
    facets: Option<Map<String, Value>>,
    #[serde(rename = "inputFacets", default)]
    input_facets: Option<Map<String, Value>>,
    #[serde(rename = "outputFacets", default)]
    output_facets: Option<Map<String, Value>>,
}

/// What the answer says about each record of the event.
#[derive(Serialize)]
struct Mapped {
    /// `job`, `input` (a dataset's first version), `run` or `output`.
    role: &'static str,
    kind: &'static str,
    entity: String,
    receipt: ReceiptJson,
}

/// `POST /api/v1/lineage`: see the module docs.
pub(crate) async fn ingest(
    state: web::Data<AppState>,
    caller: Caller,
    body: Result<web::Bytes, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    // actix decodes `Content-Encoding: gzip` bodies in the extractor, within the body limit.
    let body = body.map_err(|e| body_error(&e, state.settings.max_body_bytes))?;
    let raw: Value =
        serde_json::from_slice(&body).map_err(|e| invalid(format!("body is not JSON: {e}")))?;
    let event = parse(raw)?;
    drop(body);
    let tenant = caller.tenant_scope().unwrap_or(DEFAULT_TENANT).to_owned();

    let job_entity = job_entity(&event.job);
    let inputs: Vec<String> = unique(event.inputs.iter().map(dataset_entity));
    let mut wanted = vec![job_entity.clone()];
    wanted.extend(inputs.iter().cloned());
    let ledger = state.ledger.clone();
    let check_tenant = tenant.clone();
    let missing: Vec<bool> = web::block(move || {
        wanted
            .iter()
            .map(|e| {
                ledger
                    .entity_versions(&check_tenant, e, None, 1)
                    .map(|v| v.is_empty())
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .await??;

    let mut plan: Vec<(&'static str, &'static str, String, Value)> = Vec::new();
    if missing.first().copied().unwrap_or(true) {
        plan.push((
            "job",
            "job",
            job_entity.clone(),
            first_version("job", &job_entity, &event.job.namespace, &event.job.name),
        ));
    }
    for (i, entity) in inputs.iter().enumerate() {
        if missing.get(i + 1).copied().unwrap_or(true) {
            let ds = event
                .inputs
                .iter()
                .find(|d| dataset_entity(d) == *entity)
                .ok_or_else(|| ApiError::internal(&"an input dataset vanished"))?;
            plan.push((
                "input",
                "dataset",
                entity.clone(),
                first_version("dataset", entity, &ds.namespace, &ds.name),
            ));
        }
    }
    let run_entity = format!("run:{}", event.run.run_id);
    plan.push((
        "run",
        "run",
        run_entity.clone(),
        run_record(&event, &run_entity, &job_entity, &inputs),
    ));
    if event.event_type == Some(EventType::Complete) {
        for ds in &event.outputs {
            let entity = dataset_entity(ds);
            plan.push((
                "output",
                "dataset",
                entity.clone(),
                output_record(&event, ds, &entity, &run_entity),
            ));
        }
    }
    if plan.len() > MAX_RECORDS_PER_REQUEST {
        return Err(ApiError::new(
            actix_web::http::StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_records",
            format!(
                "the event maps to {} records, at most {MAX_RECORDS_PER_REQUEST} are allowed",
                plan.len()
            ),
        ));
    }

    let mut prepared = Vec::with_capacity(plan.len());
    for (i, (role, _, _, record)) in plan.iter().enumerate() {
        let field = format!("{role} record {i}");
        let mut input: RecordInput = serde_json::from_value(record.clone())
            .map_err(|e| ApiError::internal(&format!("{field} does not build: {e}")))?;
        caller.claim_record(&mut input, &field)?;
        prepared.push(state.ledger.prepare(input, &field)?);
    }
    let receipts = state.ledger.append(prepared).await?;
    let records: Vec<Mapped> = plan
        .into_iter()
        .zip(receipts)
        .map(|((role, kind, entity, _), receipt)| Mapped {
            role,
            kind,
            entity,
            receipt: ReceiptJson::from(receipt),
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "records": records })))
}

fn invalid(message: String) -> ApiError {
    ApiError::bad_request("invalid_openlineage_event", message)
}

/// Decodes and checks a run event, naming what is wrong.
fn parse(raw: Value) -> Result<RunEvent, ApiError> {
    let Some(obj) = raw.as_object() else {
        return Err(invalid("an OpenLineage event is a JSON object".into()));
    };
    if !obj.contains_key("run") {
        let what = if obj.contains_key("dataset") {
            "a DatasetEvent"
        } else if obj.contains_key("job") {
            "a JobEvent"
        } else {
            "not a RunEvent"
        };
        return Err(invalid(format!(
            "the event has no `run`: it is {what}; only OpenLineage RunEvents are recorded"
        )));
    }
    let event: RunEvent = serde_json::from_value(raw)
        .map_err(|e| invalid(format!("not an OpenLineage RunEvent: {e}")))?;
    if !is_rfc3339(&event.event_time) {
        return Err(invalid(format!(
            "eventTime {:?} is not an RFC 3339 date-time (e.g. 2024-05-01T12:00:00.000Z)",
            event.event_time
        )));
    }
    if !is_uuid(&event.run.run_id) {
        return Err(invalid(format!(
            "run.runId {:?} is not a UUID",
            event.run.run_id
        )));
    }
    nonempty("job.namespace", &event.job.namespace)?;
    nonempty("job.name", &event.job.name)?;
    nonempty("producer", &event.producer)?;
    for (side, list) in [("inputs", &event.inputs), ("outputs", &event.outputs)] {
        for (i, d) in list.iter().enumerate() {
            nonempty(&format!("{side}[{i}].namespace"), &d.namespace)?;
            nonempty(&format!("{side}[{i}].name"), &d.name)?;
        }
    }
    Ok(event)
}

fn nonempty(field: &str, value: &str) -> Result<(), ApiError> {
    if value.trim().is_empty() {
        return Err(invalid(format!("{field} must not be empty")));
    }
    Ok(())
}

/// `YYYY-MM-DDTHH:MM:SS` followed by optional fractions and a zone (`Z` or `±HH:MM`).
fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| {
        b.get(r)
            .is_some_and(|d| !d.is_empty() && d.iter().all(u8::is_ascii_digit))
    };
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    if !(digits(0..4)
        && at(4, b'-')
        && digits(5..7)
        && at(7, b'-')
        && digits(8..10)
        && (at(10, b'T') || at(10, b't') || at(10, b' '))
        && digits(11..13)
        && at(13, b':')
        && digits(14..16)
        && at(16, b':')
        && digits(17..19))
    {
        return false;
    }
    let mut rest = b.get(19..).unwrap_or_default();
    if let Some((b'.', frac)) = rest.split_first() {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return false;
        }
        rest = frac.get(n..).unwrap_or_default();
    }
    match rest {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit()),
        _ => false,
    }
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

fn job_entity(job: &Job) -> String {
    format!("job:{}/{}", job.namespace, job.name)
}

fn dataset_entity(d: &Dataset) -> String {
    format!("dataset:{}/{}", d.namespace, d.name)
}

fn unique(items: impl Iterator<Item = String>) -> Vec<String> {
    let mut seen = BTreeSet::new();
    items.filter(|i| seen.insert(i.clone())).collect()
}

fn names(facets: Option<&Map<String, Value>>) -> Value {
    Value::from(
        facets
            .map(|f| f.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default(),
    )
}

/// An idempotency key from the parts that identify a record of an event.
fn key(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    format!("openlineage:{}", hex::encode(h.finalize()))
}

/// The first version of a job or dataset the log does not know yet. It depends only on the
/// name, so two events racing to create it make one record.
fn first_version(kind: &str, entity: &str, namespace: &str, name: &str) -> Value {
    json!({
        "kind": kind,
        "entity": entity,
        "actor": {"type": ACTOR.0, "id": ACTOR.1},
        "attributes": {"openlineage.namespace": namespace, "openlineage.name": name},
        "idempotency_key": key(&["first", entity]),
    })
}

fn run_record(event: &RunEvent, entity: &str, job: &str, inputs: &[String]) -> Value {
    let event_type = event.event_type.map_or("", EventType::as_str);
    let mut refs = vec![json!({"role": "job", "ref": job})];
    refs.extend(inputs.iter().map(|i| json!({"role": "input", "ref": i})));
    let mut attributes = json!({
        "openlineage.eventTime": event.event_time,
        "openlineage.producer": event.producer,
        "openlineage.runId": event.run.run_id,
        "openlineage.job": format!("{}/{}", event.job.namespace, event.job.name),
        "openlineage.runFacets": names(event.run.facets.as_ref()),
        "openlineage.jobFacets": names(event.job.facets.as_ref()),
    });
    if let Some(map) = attributes.as_object_mut() {
        if let Some(t) = event.event_type {
            map.insert("openlineage.eventType".into(), t.as_str().into());
        }
        if let Some(url) = &event.schema_url {
            map.insert("openlineage.schemaURL".into(), url.clone().into());
        }
    }
    // Facet contents, of the run, the job and the inputs: payload only.
    let inputs_facets: Vec<Value> = event
        .inputs
        .iter()
        .map(|d| {
            json!({"dataset": dataset_entity(d), "facets": d.facets, "inputFacets": d.input_facets})
        })
        .collect();
    let inputs_facets: Vec<Value> = inputs_facets
        .into_iter()
        .filter(|i| !i["facets"].is_null() || !i["inputFacets"].is_null())
        .collect();
    let mut record = json!({
        "kind": "run",
        "entity": entity,
        "actor": {"type": ACTOR.0, "id": ACTOR.1},
        "refs": refs,
        "attributes": attributes,
        "idempotency_key": key(&["run", &event.run.run_id, event_type, &event.event_time]),
    });
    let payload = facets_payload([
        ("runFacets", event.run.facets.clone().map(Value::Object)),
        ("jobFacets", event.job.facets.clone().map(Value::Object)),
        (
            "inputs",
            (!inputs_facets.is_empty()).then(|| Value::from(inputs_facets)),
        ),
    ]);
    if let (Some(p), Some(map)) = (payload, record.as_object_mut()) {
        map.insert("payload".into(), p);
    }
    record
}

/// A payload of the facet groups that are present, or none when no facets came at all.
fn facets_payload<const N: usize>(groups: [(&str, Option<Value>); N]) -> Option<Value> {
    let map: Map<String, Value> = groups
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v)))
        .collect();
    (!map.is_empty()).then_some(Value::Object(map))
}

fn output_record(event: &RunEvent, ds: &Dataset, entity: &str, run: &str) -> Value {
    let event_type = event.event_type.map_or("", EventType::as_str);
    let mut record = json!({
        "kind": "dataset",
        "entity": entity,
        "actor": {"type": ACTOR.0, "id": ACTOR.1},
        "refs": [{"role": "generated_by", "ref": run}],
        "attributes": {
            "openlineage.namespace": ds.namespace,
            "openlineage.name": ds.name,
            "openlineage.runId": event.run.run_id,
            "openlineage.facets": names(ds.facets.as_ref()),
            "openlineage.outputFacets": names(ds.output_facets.as_ref()),
        },
        "idempotency_key": key(&["output", &event.run.run_id, event_type, &event.event_time, entity]),
    });
    let payload = facets_payload([
        ("facets", ds.facets.clone().map(Value::Object)),
        ("outputFacets", ds.output_facets.clone().map(Value::Object)),
    ]);
    if let (Some(p), Some(map)) = (payload, record.as_object_mut()) {
        map.insert("payload".into(), p);
    }
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(v: Value) -> Result<RunEvent, String> {
        parse(v).map_err(|e| e.to_string())
    }

    fn base() -> Value {
        json!({
            "eventType": "START",
            "eventTime": "2024-05-01T12:00:00.123+02:00",
            "run": {"runId": "3f5e83fa-3480-44ff-99c5-ff943904e5e8"},
            "job": {"namespace": "spark", "name": "daily"},
            "producer": "https://github.com/OpenLineage/OpenLineage/tree/1.9.1/integration/spark",
        })
    }

    #[test]
    fn malformed_events_are_named() {
        assert!(event(base()).is_ok());
        let mut v = base();
        v["run"]["runId"] = "42".into();
        assert_eq!(
            event(v).err().as_deref(),
            Some("400 Bad Request (invalid_openlineage_event): run.runId \"42\" is not a UUID")
        );
        let mut v = base();
        v["eventType"] = "DONE".into();
        assert!(event(v)
            .err()
            .is_some_and(|e| e.contains("unknown variant `DONE`")));
        let mut v = base();
        v["eventTime"] = "yesterday".into();
        assert!(event(v)
            .err()
            .is_some_and(|e| e.contains("eventTime \"yesterday\"")));
        let dataset_event =
            json!({"eventTime": "2024-05-01T12:00:00Z", "producer": "p", "dataset": {}});
        assert!(event(dataset_event)
            .err()
            .is_some_and(|e| e.contains("a DatasetEvent")));
        let mut v = base();
        v["inputs"] = json!([{"namespace": "s3", "name": " "}]);
        assert!(event(v)
            .err()
            .is_some_and(|e| e.contains("inputs[0].name must not be empty")));
    }

    #[test]
    fn rfc3339_and_uuid_checks() {
        for ok in [
            "2024-05-01T12:00:00Z",
            "2024-05-01T12:00:00.1-07:00",
            "2024-05-01 12:00:00z",
        ] {
            assert!(is_rfc3339(ok), "{ok}");
        }
        for bad in [
            "2024-05-01",
            "2024-05-01T12:00:00",
            "2024-05-01T12:00:00.Z",
            "2024-05-01T12:00:00+0200",
        ] {
            assert!(!is_rfc3339(bad), "{bad}");
        }
        assert!(is_uuid("3f5e83fa-3480-44ff-99c5-ff943904e5e8"));
        assert!(!is_uuid("3f5e83fa-3480-44ff-99c5-ff943904e5e"));
        assert!(!is_uuid("3f5e83fa_3480-44ff-99c5-ff943904e5e8"));
    }

    #[test]
    fn payloads_hold_only_the_facets_that_came() {
        assert_eq!(
            facets_payload([("facets", None), ("outputFacets", None)]),
            None
        );
        assert_eq!(
            facets_payload([("facets", None), ("outputFacets", Some(json!({"a": 1})))]),
            Some(json!({"outputFacets": {"a": 1}}))
        );
        let mut e = parse(base()).unwrap_or_else(|e| panic!("{e}"));
        e.inputs = vec![Dataset {
            namespace: "n".into(),
            name: "d".into(),
            facets: None,
            input_facets: None,
            output_facets: None,
        }];
        let run = run_record(&e, "run:x", "job:a/b", &["dataset:n/d".into()]);
        assert!(run.get("payload").is_none(), "{run}");
        assert_eq!(
            run["refs"][1],
            json!({"role": "input", "ref": "dataset:n/d"})
        );
    }

    #[test]
    fn idempotency_keys_separate_their_parts() {
        assert_ne!(key(&["ab", "c"]), key(&["a", "bc"]));
        assert_eq!(key(&["run", "x"]).len(), "openlineage:".len() + 64);
    }
}
