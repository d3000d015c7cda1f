//! Routes and handlers. Handlers parse and translate; the ledger does the work. Blocking
//! ledger reads run on actix's blocking pool (`web::block`), never on the executor.

use std::sync::Arc;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use provledger_ledger::{Ledger, RecordInput, StoredRecord};
use provledger_signer::Hash;
use serde::Serialize;

use crate::error::ApiError;
pub use crate::receipts::ReceiptJson;
use crate::schema::ProvSchema;
use crate::tiles::TilePath;

/// Most records one append request may carry.
pub const MAX_RECORDS_PER_REQUEST: usize = 10_000;

/// Server settings the handlers need.
#[derive(Clone, Debug)]
pub struct ServerSettings {
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Serve entry bundles (`/tile/entries/…`, every tenant's leaf metadata) without a token.
    pub public_log: bool,
    /// The signing key file, which `POST /v1/keys/rotate` replaces (rotation is refused
    /// without one).
    pub key_file: Option<std::path::PathBuf>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            max_body_bytes: 16 * 1024 * 1024,
            public_log: false,
            key_file: None,
        }
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The log.
    pub ledger: Ledger,
    /// Metrics registry served at `/metrics`.
    pub registry: prometheus::Registry,
    /// Per-request HTTP metrics (registered in `registry`).
    pub http: crate::HttpMetrics,
    /// Settings.
    pub settings: Arc<ServerSettings>,
    /// Bearer tokens: who may call what (see `crate::auth`).
    pub tokens: Arc<provledger_ledger::TokenStore>,
}

/// Registers every route of the provledger HTTP API on an actix `App`.
pub fn configure(state: AppState) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg: &mut web::ServiceConfig| {
        let limit = state.settings.max_body_bytes;
        let schema = crate::schema::build(state.ledger.clone());
        cfg.app_data(web::Data::new(state))
            .app_data(web::Data::new(schema))
            .app_data(web::Data::new(crate::auth::RouteTable::new()))
            .app_data(web::PayloadConfig::new(limit));
        // Every route sits behind the authorization middleware, which refuses any request
        // that no rule in `auth::ROUTES` covers: add the rule with the route.
        // actix tries routes in order, and patterns with parameters are regexes: the append
        // route, the hottest, comes first so that it is matched by a string comparison alone.
        let routes = web::scope("")
            .wrap(actix_web::middleware::from_fn(crate::auth::authorize))
            .route("/v1/records", web::post().to(append))
            .route("/healthz", web::get().to(healthz))
            .route("/metrics", web::get().to(metrics))
            .route("/checkpoint", web::get().to(checkpoint))
            .route("/tile/{rest:.*}", web::get().to(tile))
            .route("/v1/key", web::get().to(crate::keys::key_text))
            .route("/v1/keys", web::get().to(crate::keys::keys_json))
            .route("/v1/keys/rotate", web::post().to(crate::keys::rotate))
            .route("/v1/keys/{key}/retire", web::post().to(crate::keys::retire))
            .route("/v1/records/{id}", web::get().to(record))
            .route("/v1/proofs/inclusion", web::get().to(inclusion_proof))
            .route("/v1/proofs/consistency", web::get().to(consistency_proof))
            .route("/graphql", web::post().to(graphql))
            // GraphiQL (GET /graphql, /graphql/assets/…) and subscriptions (/graphql/ws).
            .configure(crate::console::routes)
            .configure(crate::subscription::routes)
            .route("/v1/tokens", web::post().to(crate::tokens::create))
            .route("/v1/tokens", web::get().to(crate::tokens::list))
            .route("/v1/tokens/{id}", web::delete().to(crate::tokens::revoke))
            .route("/v1/exports", web::post().to(crate::exports::create))
            .route(
                "/v1/records/{id}/erase",
                web::post().to(crate::erasure::erase_record),
            )
            .route("/v1/erasures", web::post().to(crate::erasure::erase_many))
            .route(
                "/api/v1/lineage",
                web::post().to(crate::openlineage::ingest),
            )
            .default_service(web::to(not_found));
        cfg.service(routes);
    }
}

async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found(format!(
        "no route for {} {}",
        req.method(),
        req.path()
    )))
}

/// `POST /graphql`: a GraphQL-over-HTTP request as JSON (`{"query", "operationName",
/// "variables"}`), within the server's body limit. Answers 200 with `{"data", "errors"}`; a body
/// that is not such a request gets 400 (413 when too large) with the same shape.
async fn graphql(
    state: web::Data<AppState>,
    schema: web::Data<ProvSchema>,
    caller: crate::auth::Caller,
    body: Result<web::Bytes, actix_web::Error>,
) -> HttpResponse {
    let request = body
        .map_err(|e| body_error(&e, state.settings.max_body_bytes))
        .and_then(|body| {
            serde_json::from_slice::<async_graphql::Request>(&body).map_err(|e| {
                ApiError::bad_request(
                    "invalid_json",
                    format!("body is not a GraphQL request ({{\"query\", \"variables\", …}}): {e}"),
                )
            })
        });
    match request {
        Ok(request) => {
            HttpResponse::Ok().json(crate::schema::execute(&schema, request.data(caller)).await)
        }
        Err(e) => e.graphql_response(),
    }
}

async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    let head = state.ledger.head();
    let poisoned = state.ledger.is_poisoned();
    let status = if poisoned {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    HttpResponse::build(status).json(serde_json::json!({
        "status": if poisoned { "poisoned" } else { "ok" },
        "tree_size": head.size,
    }))
}

async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let encoder = prometheus::TextEncoder::new();
    let body = encoder
        .encode_to_string(&state.registry.gather())
        .map_err(|e| ApiError::internal(&e))?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(body))
}

async fn checkpoint(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(state.ledger.head().checkpoint.clone())
}

async fn tile(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let tile = TilePath::parse(&path.into_inner())
        .map_err(|e| ApiError::bad_request("invalid_tile_path", e))?;
    let ledger = state.ledger.clone();
    let bytes = web::block(move || match tile.level {
        Some(level) => ledger.tile(level, tile.index, tile.width),
        None => ledger.entry_bundle(tile.index, tile.width),
    })
    .await??;
    let Some(bytes) = bytes else {
        return Err(ApiError::not_found("the log does not have that tile yet"));
    };
    let cache = if tile.width.is_none() {
        "public, max-age=31536000, immutable"
    } else {
        "public, max-age=60"
    };
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .insert_header((header::CACHE_CONTROL, cache))
        .body(bytes))
}

async fn append(
    state: web::Data<AppState>,
    req: HttpRequest,
    caller: crate::auth::Caller,
    body: Result<web::Bytes, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    let body = body.map_err(|e| body_error(&e, state.settings.max_body_bytes))?;
    let (inputs, single) = if is_msgpack(&req) {
        parse_msgpack(&body)?
    } else {
        parse_json(&body)?
    };
    // The records are parsed; the raw body need not wait for the answer (queued memory is
    // bounded by the ledger in record bytes).
    drop(body);
    if inputs.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_record",
            "the array holds no records",
        ));
    }
    if inputs.len() > MAX_RECORDS_PER_REQUEST {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_records",
            format!(
                "{} records in one request, at most {MAX_RECORDS_PER_REQUEST} are allowed",
                inputs.len()
            ),
        ));
    }
    let mut prepared = Vec::with_capacity(inputs.len());
    for (i, mut input) in inputs.into_iter().enumerate() {
        let field = if single {
            "record".to_owned()
        } else {
            format!("records[{i}]")
        };
        caller.claim_record(&mut input, &field)?;
        prepared.push(state.ledger.prepare(input, &field)?);
    }
    let receipts = state.ledger.append(prepared).await?;
    Ok(crate::receipts::response(&receipts, single))
}

/// A JSON body holds one record (an object) or an array of them; which one is decided by the
/// first non-blank byte so each parses straight into records, with line and column in errors.
fn parse_json(body: &[u8]) -> Result<(Vec<RecordInput>, bool), ApiError> {
    let invalid = |e: serde_json::Error| {
        let code = if e.is_data() {
            "invalid_record"
        } else {
            "invalid_json"
        };
        ApiError::bad_request(
            code,
            format!("body is not a valid record or array of records: {e}"),
        )
    };
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => match serde_json::from_slice(body) {
            Ok(v) => Ok((v, false)),
            Err(e) if e.is_data() => Err(name_failing_record(body).unwrap_or_else(|| invalid(e))),
            Err(e) => Err(invalid(e)),
        },
        Some(b'{') => serde_json::from_slice(body)
            .map(|r| (vec![r], true))
            .map_err(invalid),
        _ => Err(ApiError::bad_request(
            "invalid_json",
            "body must be a JSON object (one record) or an array of records",
        )),
    }
}

/// On the error path only: finds which element of a JSON array is not a valid record, so the
/// message can say `records[i]: …`.
fn name_failing_record(body: &[u8]) -> Option<ApiError> {
    let values: Vec<serde_json::Value> = serde_json::from_slice(body).ok()?;
    values.into_iter().enumerate().find_map(|(i, v)| {
        serde_json::from_value::<RecordInput>(v)
            .err()
            .map(|e| ApiError::bad_request("invalid_record", format!("records[{i}]: {e}")))
    })
}

/// The MessagePack twin of [`parse_json`]: an array marker means many records.
fn parse_msgpack(body: &[u8]) -> Result<(Vec<RecordInput>, bool), ApiError> {
    let invalid = |e: rmp_serde::decode::Error| {
        ApiError::bad_request(
            "invalid_msgpack",
            format!("body is not a valid MessagePack record or array of records: {e}"),
        )
    };
    match body.first() {
        Some(0x90..=0x9f | 0xdc | 0xdd) => rmp_serde::from_slice(body)
            .map(|v| (v, false))
            .map_err(invalid),
        Some(_) => rmp_serde::from_slice(body)
            .map(|r| (vec![r], true))
            .map_err(invalid),
        None => Err(ApiError::bad_request("invalid_msgpack", "body is empty")),
    }
}

fn is_msgpack(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            let v = v.to_ascii_lowercase();
            v.starts_with("application/msgpack")
                || v.starts_with("application/x-msgpack")
                || v.starts_with("application/vnd.msgpack")
        })
        .unwrap_or(false)
}

pub(crate) fn body_error(e: &actix_web::Error, limit: usize) -> ApiError {
    // Covers actix's payload overflow and any other extractor error that means "too large".
    if e.as_response_error().status_code() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!(
                "request body exceeds the limit of {limit} bytes; split it into smaller requests"
            ),
        );
    }
    ApiError::bad_request(
        "invalid_body",
        format!("request body could not be read: {e}"),
    )
}

/// A stored record as JSON.
#[derive(Serialize)]
struct RecordJson {
    id: String,
    index: u64,
    leaf: String,
    kind: String,
    tenant: String,
    entity: Option<String>,
    actor: provledger_ledger::Actor,
    refs: Vec<RefJson>,
    attributes: std::collections::BTreeMap<String, serde_json::Value>,
    classification: String,
    time: u64,
    commitment: Option<String>,
    payload: Option<serde_json::Value>,
    salt: Option<String>,
    /// The redaction policy that scrubbed the record (absent in leaves older than policies).
    #[serde(skip_serializing_if = "Option::is_none")]
    redaction: Option<RedactionJson>,
}

/// A leaf's `redaction` as JSON: policy version, digest and policy record id in hex.
#[derive(Serialize)]
struct RedactionJson {
    version: String,
    digest: String,
    policy: Option<String>,
}

#[derive(Serialize)]
struct RefJson {
    role: String,
    id: String,
}

impl From<StoredRecord> for RecordJson {
    fn from(r: StoredRecord) -> Self {
        let l = r.leaf;
        RecordJson {
            id: r.id.to_hex(),
            index: r.index,
            leaf: B64.encode(&r.leaf_bytes),
            kind: l.kind,
            tenant: l.tenant,
            entity: l.entity,
            actor: l.actor,
            refs: l
                .refs
                .into_iter()
                .map(|x| RefJson {
                    role: x.role,
                    id: hex::encode(x.hash),
                })
                .collect(),
            attributes: l.attributes,
            classification: l.classification,
            time: l.time,
            commitment: l.commitment.map(|c| B64.encode(c)),
            payload: r.payload,
            salt: r.salt.map(|s| B64.encode(s)),
            redaction: l.redaction.map(|x| RedactionJson {
                version: x.version,
                digest: hex::encode(x.digest),
                policy: x.policy.map(hex::encode),
            }),
        }
    }
}

async fn record(
    state: web::Data<AppState>,
    caller: crate::auth::Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let hash = id_param(&id.into_inner())?;
    let ledger = state.ledger.clone();
    let tenant = caller.tenant_scope().map(str::to_owned);
    let rec = web::block(move || ledger.record(&hash, tenant.as_deref())).await??;
    if !caller.may_read_kind(&rec.leaf.kind) {
        // Answered like a record that does not exist: a kind limit must not leak existence.
        return Err(ApiError::from(provledger_ledger::LedgerError::NotFound));
    }
    Ok(HttpResponse::Ok().json(RecordJson::from(rec)))
}

/// A record id from a path segment, or the 400 that says what it must be.
pub(crate) fn id_param(id: &str) -> Result<Hash, ApiError> {
    parse_id(id).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_id",
            format!("record id {id:?} must be 64 lowercase hex digits"),
        )
    })
}

/// A record id: exactly 64 lowercase hex digits.
pub(crate) fn parse_id(id: &str) -> Option<Hash> {
    (id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .then(|| Hash::from_hex(id).ok())
        .flatten()
}

/// Query parameters, each a decimal u64; unknown parameters are refused by name.
struct Params(std::collections::HashMap<String, String>);

impl Params {
    fn parse(req: &HttpRequest, allowed: &[&str]) -> Result<Params, ApiError> {
        let map =
            web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string())
                .map_err(|e| {
                    ApiError::bad_request(
                        "invalid_query",
                        format!("query string does not parse: {e}"),
                    )
                })?
                .into_inner();
        if let Some(unknown) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!(
                    "unknown query parameter {unknown:?}; expected {}",
                    allowed.join(", ")
                ),
            ));
        }
        Ok(Params(map))
    }

    fn u64(&self, name: &str) -> Result<Option<u64>, ApiError> {
        self.0
            .get(name)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    ApiError::bad_request(
                        "invalid_query",
                        format!("query parameter {name}={v:?} must be a non-negative integer"),
                    )
                })
            })
            .transpose()
    }

    fn required(&self, name: &str) -> Result<u64, ApiError> {
        self.u64(name)?.ok_or_else(|| {
            ApiError::bad_request(
                "invalid_query",
                format!("query parameter {name} is required"),
            )
        })
    }
}

async fn inclusion_proof(
    state: web::Data<AppState>,
    caller: crate::auth::Caller,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let params = Params::parse(&req, &["index", "tree_size"])?;
    let (index, tree_size) = (params.required("index")?, params.u64("tree_size")?);
    let ledger = state.ledger.clone();
    let tenant = caller.tenant_scope().map(str::to_owned);
    let p = web::block(move || ledger.tenant_inclusion_proof(index, tree_size, tenant.as_deref()))
        .await??;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "index": p.index,
        "tree_size": p.tree_size,
        "leaf_hash": p.leaf_hash.to_base64(),
        "hashes": p.hashes.iter().map(Hash::to_base64).collect::<Vec<_>>(),
    })))
}

async fn consistency_proof(
    state: web::Data<AppState>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let params = Params::parse(&req, &["from", "to"])?;
    let (from, to) = (params.required("from")?, params.required("to")?);
    let ledger = state.ledger.clone();
    let hashes = web::block(move || ledger.consistency_proof(from, to)).await??;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "from": from,
        "to": to,
        "hashes": hashes.iter().map(Hash::to_base64).collect::<Vec<_>>(),
    })))
}
