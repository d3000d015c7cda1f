//! Token management over HTTP, for admins: `POST /v1/tokens`, `GET /v1/tokens`,
//! `DELETE /v1/tokens/{id}`. The same operations exist offline as `provledger token …`.

use actix_web::{web, HttpResponse};
use provledger_ledger::{parse_expiry, NewToken, Role, TokenInfo};
use serde::Deserialize;

use crate::error::ApiError;
use crate::AppState;

/// Body of `POST /v1/tokens`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateToken {
    role: Role,
    tenant: String,
    #[serde(default)]
    kinds: Option<Vec<String>>,
    /// A duration from now (`30d`) or an RFC 3339 time.
    #[serde(default)]
    expires: Option<String>,
    #[serde(default)]
    label: Option<String>,
}

pub(crate) async fn create(
    state: web::Data<AppState>,
    body: Result<web::Json<CreateToken>, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    let body = body
        .map_err(|e| {
            ApiError::bad_request(
                "invalid_token_request",
                format!(
                    "body must be {{\"role\", \"tenant\", \"kinds\"?, \"expires\"?, \"label\"?}}: {e}"
                ),
            )
        })?
        .into_inner();
    let expires = body.expires.as_deref().map(parse_expiry).transpose()?;
    let new = NewToken {
        role: body.role,
        tenant: body.tenant,
        kinds: body.kinds,
        expires,
        label: body.label,
    };
    let tokens = state.tokens.clone();
    let issued = web::block(move || tokens.create(new)).await??;
    tracing::info!(id = %issued.info.id, role = %issued.info.role, tenant = %issued.info.tenant, "token created");
    let mut json = serde_json::to_value(&issued.info).map_err(|e| ApiError::internal(&e))?;
    if let Some(obj) = json.as_object_mut() {
        obj.insert("token".into(), issued.token.into());
    }
    Ok(HttpResponse::Created().json(json))
}

pub(crate) async fn list(state: web::Data<AppState>) -> HttpResponse {
    let tokens: Vec<TokenInfo> = state.tokens.list();
    HttpResponse::Ok().json(serde_json::json!({ "tokens": tokens }))
}

pub(crate) async fn revoke(
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let tokens = state.tokens.clone();
    let revoked = web::block(move || tokens.revoke(&id)).await??;
    tracing::info!(id = %revoked.id, "token revoked");
    Ok(HttpResponse::Ok().json(revoked))
}
