//! `POST /v1/exports`: an export made by the server and streamed back, in any format the
//! exporters crate writes (a signed bundle, PROV-JSON, a DSSE envelope).
//!
//! The export runs on the blocking pool and writes into a bounded channel of 64 KiB chunks that
//! actix streams to the client, so memory does not grow with the export (a DSSE envelope is the
//! exception: it is built whole, see `provledger_exporters::export_dsse`). The scope is resolved
//! before the first byte is sent, so an unknown record or a bad scope is an error status; a
//! failure later (a damaged store) can only cut the stream short, and a cut bundle fails
//! verification.

use std::io::Write;

use actix_web::http::header;
use actix_web::web::{self, Bytes};
use actix_web::HttpResponse;
use futures_util::StreamExt as _;
use provledger_exporters::{export_as, ExportError, ExportFormat, RangeScope, Scope};
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::auth::{Caller, Denied};
use crate::error::ApiError;
use crate::server::{body_error, parse_id};
use crate::AppState;

/// Bytes per streamed chunk, and chunks that may wait for a slow client.
const CHUNK: usize = 64 * 1024;
const CHUNKS_IN_FLIGHT: usize = 4;
/// Most record ids one lineage export may name.
const MAX_IDS: usize = 1000;

/// The body of `POST /v1/exports`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportRequest {
    /// `bundle` (default), `prov-json` or `dsse`.
    #[serde(default)]
    format: Option<String>,
    scope: ScopeRequest,
}

/// What to export; the same scopes as `provledger export`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum ScopeRequest {
    /// Records and their upstream lineage to `depth` hops.
    Lineage {
        ids: Vec<String>,
        #[serde(default)]
        depth: u32,
        #[serde(default)]
        tenant: Option<String>,
    },
    /// Every version of an entity.
    Entity {
        entity: String,
        #[serde(default)]
        tenant: Option<String>,
    },
    /// An index and/or time range, optionally of one kind.
    Range {
        #[serde(default)]
        from_index: Option<u64>,
        #[serde(default)]
        to_index: Option<u64>,
        #[serde(default)]
        from_time: Option<u64>,
        #[serde(default)]
        to_time: Option<u64>,
        #[serde(default)]
        kind: Option<String>,
        #[serde(default)]
        tenant: Option<String>,
    },
}

/// `POST /v1/exports`: see the module docs and `docs/api.md`.
pub(crate) async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    body: Result<web::Bytes, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    let body = body.map_err(|e| body_error(&e, state.settings.max_body_bytes))?;
    let request: ExportRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "invalid_export",
            format!("body is not an export request ({{\"format\", \"scope\": {{\"type\": \"lineage\" | \"entity\" | \"range\", …}}}}): {e}"),
        )
    })?;
    let format = match request.format.as_deref() {
        None => ExportFormat::Bundle,
        Some(name) => name.parse::<ExportFormat>().map_err(ApiError::from)?,
    };
    let scope = scope(request.scope, caller.tenant_scope())?;

    let (tx, mut rx) = mpsc::channel::<Result<Bytes, ExportError>>(CHUNKS_IN_FLIGHT);
    let ledger = state.ledger.clone();
    // Detached: the task ends when the export does, or when the client goes away (the channel
    // closes and the next write fails).
    drop(tokio::task::spawn_blocking(move || {
        let mut out = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        // The log's current key signs the manifest (and the envelope).
        let key = ledger.signing_key();
        let result = export_as(format, &ledger, &key, &scope, &mut out, &mut |_, _| {})
            .and_then(|_| out.flush().map_err(ExportError::from));
        if let Err(e) = result {
            let _ = tx.blocking_send(Err(e));
        }
    }));

    let first = match rx.recv().await {
        Some(Ok(chunk)) => chunk,
        Some(Err(e)) => return Err(e.into()),
        None => return Err(ApiError::internal(&"the export ended without output")),
    };
    let rest = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| {
            let item = item.map_err(|e| {
                tracing::error!(error = %e, "export failed while streaming; the response is cut short");
                std::io::Error::other(e.to_string())
            });
            (item, rx)
        })
    });
    let body =
        futures_util::stream::once(async move { Ok::<_, std::io::Error>(first) }).chain(rest);
    Ok(HttpResponse::Ok()
        .content_type(format.media_type())
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{}\"", format.file_name()),
        ))
        .streaming(body))
}

/// The exporters' scope for a request, confined to the caller's tenant: a non-admin exports
/// their own tenant only (naming another is refused), an admin any.
fn scope(request: ScopeRequest, own: Option<&str>) -> Result<Scope, ApiError> {
    let tenant = |named: Option<String>| -> Result<Option<String>, ApiError> {
        match (own, named) {
            (None, named) => Ok(named),
            (Some(own), None) => Ok(Some(own.to_owned())),
            (Some(own), Some(t)) if t == own => Ok(Some(t)),
            (Some(own), Some(t)) => Err(Denied(format!(
                "scope.tenant: a token of tenant {own:?} cannot export tenant {t:?}"
            ))
            .into()),
        }
    };
    match request {
        ScopeRequest::Lineage {
            ids,
            depth,
            tenant: t,
        } => {
            if ids.is_empty() || ids.len() > MAX_IDS {
                return Err(ApiError::bad_request(
                    "invalid_scope",
                    format!(
                        "scope.ids must name 1 to {MAX_IDS} records, not {}",
                        ids.len()
                    ),
                ));
            }
            let ids = ids
                .iter()
                .enumerate()
                .map(|(i, id)| {
                    parse_id(id).ok_or_else(|| {
                        ApiError::bad_request(
                            "invalid_id",
                            format!("scope.ids[{i}] {id:?} must be 64 lowercase hex digits"),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Scope::Records {
                tenant: tenant(t)?,
                ids,
                depth,
            })
        }
        ScopeRequest::Entity { entity, tenant: t } => {
            Ok(Scope::entity(tenant(t)?.as_deref(), &entity))
        }
        ScopeRequest::Range {
            from_index,
            to_index,
            from_time,
            to_time,
            kind,
            tenant: t,
        } => {
            let range = RangeScope {
                from_index,
                to_index,
                from_time,
                to_time,
                kind,
                tenant: tenant(t)?,
            };
            if range.from_index.is_none()
                && range.to_index.is_none()
                && range.from_time.is_none()
                && range.to_time.is_none()
            {
                return Err(ApiError::bad_request(
                    "invalid_scope",
                    "a range scope needs at least one of from_index, to_index, from_time, to_time",
                ));
            }
            Ok(Scope::Range(range))
        }
    }
}

/// The export's output: chunks of [`CHUNK`] bytes into the response's channel.
struct ChannelWriter {
    tx: mpsc::Sender<Result<Bytes, ExportError>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the client closed the export response",
            )
        })
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<ExportRequest, serde_json::Error> {
        serde_json::from_str(body)
    }

    #[test]
    fn scopes_parse_strictly_and_stay_in_the_callers_tenant() {
        let id = "ab".repeat(32);
        let r = parse(&format!(
            r#"{{"format": "dsse", "scope": {{"type": "lineage", "ids": ["{id}"], "depth": 2}}}}"#
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.format.as_deref(), Some("dsse"));
        match scope(r.scope, Some("acme")) {
            Ok(Scope::Records { tenant, ids, depth }) => {
                assert_eq!(tenant.as_deref(), Some("acme"));
                assert_eq!(ids.len(), 1);
                assert_eq!(depth, 2);
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(r#"{"scope": {"type": "entity", "entity": "e", "x": 1}}"#).is_err());
        assert!(parse(r#"{"scope": {"type": "everything"}}"#).is_err());

        let other = parse(r#"{"scope": {"type": "entity", "entity": "e", "tenant": "b"}}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        let err = scope(other.scope, Some("acme"))
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("403 Forbidden (forbidden): scope.tenant: a token of tenant \"acme\" cannot export tenant \"b\"")
        );
        let empty = parse(r#"{"scope": {"type": "range"}}"#).unwrap_or_else(|e| panic!("{e}"));
        assert!(scope(empty.scope, None).is_err());
    }
}
