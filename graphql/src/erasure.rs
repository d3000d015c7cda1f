//! Erasure endpoints: `POST /v1/records/{id}/erase` and `POST /v1/erasures`. They parse and
//! translate; `provledger-ledger` plans and commits the erasure (see its `erase` module and
//! `docs/api.md`).

use actix_web::{web, HttpResponse};
use provledger_ledger::{Actor, ErasurePolicy, ErasureRequest, ErasureTarget};
use serde::Deserialize;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::server::{body_error, AppState};

/// Body of `POST /v1/records/{id}/erase`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EraseOne {
    reason: String,
}

/// Body of `POST /v1/erasures`: exactly one of `entity` and `subject`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EraseMany {
    #[serde(default)]
    entity: Option<String>,
    #[serde(default)]
    subject: Option<String>,
    /// The tenant whose entity or subject is meant; `default` when absent.
    #[serde(default)]
    tenant: Option<String>,
    reason: String,
}

/// Who erases, recorded as the erasure record's actor: the token's public id.
fn caller_actor(caller: &Caller) -> Actor {
    match caller {
        Caller::Token(t) => Actor {
            kind: "token".into(),
            id: t.id.clone(),
        },
        Caller::Anonymous => Actor {
            kind: "service".into(),
            id: "http-api".into(),
        },
    }
}

fn parse_body<T: serde::de::DeserializeOwned>(
    state: &AppState,
    body: Result<web::Bytes, actix_web::Error>,
) -> Result<T, ApiError> {
    let body = body.map_err(|e| body_error(&e, state.settings.max_body_bytes))?;
    serde_json::from_slice(&body).map_err(|e| {
        let code = if e.is_data() {
            "invalid_erasure"
        } else {
            "invalid_json"
        };
        ApiError::bad_request(code, format!("body is not a valid erasure request: {e}"))
    })
}

/// `POST /v1/records/{id}/erase` with `{"reason"}`: the receipt of the erasure record (of the
/// existing one when the record was erased before).
pub(crate) async fn erase_record(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
    body: Result<web::Bytes, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    let hash = crate::server::id_param(&id.into_inner())?;
    let req: EraseOne = parse_body(&state, body)?;
    // Admins reach every tenant; anyone else only their own (others' records are not found).
    let tenant = caller.tenant_scope();
    let receipts = state
        .ledger
        .erase(ErasureRequest {
            target: ErasureTarget::Record(hash),
            tenant: tenant.map(str::to_owned),
            reason: req.reason,
            policy: ErasurePolicy::Requested,
            actor: caller_actor(&caller),
        })
        .await?;
    if receipts.len() != 1 {
        return Err(ApiError::internal(&format!(
            "an erasure of one record answered {} receipts",
            receipts.len()
        )));
    }
    Ok(crate::receipts::response(&receipts, true))
}

/// `POST /v1/erasures` with `{"entity" | "subject", "tenant"?, "reason"}`: one receipt per
/// erased record, oldest first.
pub(crate) async fn erase_many(
    state: web::Data<AppState>,
    caller: Caller,
    body: Result<web::Bytes, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    let req: EraseMany = parse_body(&state, body)?;
    let target = match (req.entity, req.subject) {
        (Some(e), None) => ErasureTarget::Entity(e),
        (None, Some(s)) => ErasureTarget::Subject(s),
        _ => {
            return Err(ApiError::bad_request(
                "invalid_erasure",
                "name exactly one of \"entity\" and \"subject\"",
            ))
        }
    };
    // Admins name any tenant (`default` when absent); anyone else erases in their own only.
    let tenant = match (caller.tenant_scope(), req.tenant) {
        (None, named) => named,
        (Some(own), Some(named)) if named != own => {
            return Err(ApiError::forbidden(format!(
                "this token may not erase in tenant {named:?}"
            )))
        }
        (Some(own), _) => Some(own.to_owned()),
    };
    let receipts = state
        .ledger
        .erase(ErasureRequest {
            target,
            tenant,
            reason: req.reason,
            policy: ErasurePolicy::Requested,
            actor: caller_actor(&caller),
        })
        .await?;
    Ok(crate::receipts::response(&receipts, false))
}
