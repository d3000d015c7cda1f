//! The log's keys over HTTP: `GET /v1/key` (verifier keys, one per line, current first),
//! `GET /v1/keys` (the same as JSON, with when each key signed and its rotation statement),
//! and for admins `POST /v1/keys/rotate` and `POST /v1/keys/{key}/retire`.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use provledger_ledger::{key_hash, Actor, KeyEntry};
use provledger_signer::SigningKey;
use serde::Serialize;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::AppState;

/// One key as `GET /v1/keys` shows it.
#[derive(Serialize)]
struct KeyJson {
    vkey: String,
    key_hash: String,
    current: bool,
    /// First tree size it signed.
    first_size: u64,
    /// Last tree size it signed (absent for the current key).
    #[serde(skip_serializing_if = "Option::is_none")]
    last_size: Option<u64>,
    created: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    retired: Option<u64>,
    /// The rotation statement (a signed note, signed by the previous key and this one).
    #[serde(skip_serializing_if = "Option::is_none")]
    rotation: Option<String>,
}

fn json(entry: &KeyEntry, current: bool) -> KeyJson {
    KeyJson {
        vkey: entry.vkey.clone(),
        key_hash: key_hash(&entry.vkey).unwrap_or_default().to_owned(),
        current,
        first_size: entry.first_size,
        last_size: entry.last_size,
        created: entry.created,
        retired: entry.retired,
        rotation: entry.rotation.clone(),
    }
}

/// The keys, current first.
fn newest_first(state: &AppState) -> Vec<(KeyEntry, bool)> {
    let ring = state.ledger.keys();
    let last = ring.entries().len().saturating_sub(1);
    let mut keys: Vec<(KeyEntry, bool)> = ring
        .entries()
        .iter()
        .enumerate()
        .map(|(i, k)| (k.clone(), i == last))
        .collect();
    keys.reverse();
    keys
}

/// `GET /v1/key`: one verifier key per line, current first, retired keys left out.
pub(crate) async fn key_text(state: web::Data<AppState>) -> HttpResponse {
    let body: String = newest_first(&state)
        .into_iter()
        .filter(|(k, _)| k.retired.is_none())
        .map(|(k, _)| format!("{}\n", k.vkey))
        .collect();
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body(body)
}

/// `GET /v1/keys`: every key with its validity range, current first.
pub(crate) async fn keys_json(state: web::Data<AppState>) -> HttpResponse {
    let keys: Vec<KeyJson> = newest_first(&state)
        .iter()
        .map(|(k, current)| json(k, *current))
        .collect();
    HttpResponse::Ok().json(serde_json::json!({ "keys": keys }))
}

/// `POST /v1/keys/rotate`: a new key signs from now on (admin).
pub(crate) async fn rotate(
    state: web::Data<AppState>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    let Some(key_file) = state.settings.key_file.clone() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "rotation_unavailable",
            "this server was started without a key file to rotate",
        ));
    };
    let actor = Actor {
        kind: "human".into(),
        id: match &caller {
            Caller::Token(t) => format!("token:{}", t.id),
            Caller::Anonymous => "anonymous".into(),
        },
    };
    let ledger = state.ledger.clone();
    let entry = web::block(move || {
        let new = SigningKey::generate(ledger.signing_key().name())
            .map_err(|e| provledger_ledger::LedgerError::Signing(e.to_string()))?;
        ledger.rotate_key(new, &key_file, actor)
    })
    .await??;
    Ok(HttpResponse::Ok().json(json(&entry, true)))
}

/// `POST /v1/keys/{key}/retire`: stop publishing a key that no longer signs (admin).
pub(crate) async fn retire(
    state: web::Data<AppState>,
    which: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let which = which.into_inner();
    let ledger = state.ledger.clone();
    let entry = web::block(move || ledger.retire_key(&which)).await??;
    Ok(HttpResponse::Ok().json(json(&entry, false)))
}
