//! The one place that turns library errors into answers: for REST a status code and a JSON
//! body `{"message", "code", "type"}` ([`ApiError`]); for GraphQL an error whose
//! `extensions.code` is one of [`GqlCode`] ([`Failure`]). Nothing else in the server chooses
//! status codes or GraphQL codes for errors.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use provledger_exporters::ExportError;
use provledger_ledger::{AccessError, LedgerError};
use provledger_query::QueryError;
use serde::Serialize;

/// An error as the API reports it.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<u32>,
}

#[derive(Serialize)]
struct Body<'a> {
    message: &'a str,
    code: &'static str,
    #[serde(rename = "type")]
    kind: &'static str,
}

impl ApiError {
    /// An error the caller caused, with a precise message.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// A resource that does not exist.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 401: no valid bearer token (answered with `WWW-Authenticate: Bearer`).
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403: the token is valid but its role or tenant does not allow this.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// Any status with a code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// A server-side failure: the details go to the log, the caller gets a generic message.
    pub fn internal(detail: &dyn std::fmt::Display) -> ApiError {
        tracing::error!(error = %detail, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; the server log has the details",
        )
    }

    /// The error as a GraphQL response (`{"errors": [{"message", "extensions": {"code"}}]}`)
    /// with its HTTP status, for requests to `/graphql` that never reach the schema.
    pub(crate) fn graphql_response(&self) -> HttpResponse {
        let code = if self.status.is_server_error() {
            GqlCode::Internal
        } else {
            GqlCode::BadInput
        };
        HttpResponse::build(self.status).json(serde_json::json!({
            "errors": [{"message": self.message, "extensions": {"code": code.as_str()}}],
        }))
    }

    fn kind(&self) -> &'static str {
        match self.status.as_u16() {
            401 | 403 => "auth",
            500..=599 if self.status != StatusCode::SERVICE_UNAVAILABLE => "internal",
            503 => "unavailable",
            _ => "invalid_request",
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.status, self.code, self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status);
        if let Some(secs) = self.retry_after {
            res.insert_header((header::RETRY_AFTER, secs.to_string()));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            res.insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"provledger\""));
        }
        res.json(Body {
            message: &self.message,
            code: self.code,
            kind: self.kind(),
        })
    }
}

impl From<AccessError> for ApiError {
    fn from(e: AccessError) -> ApiError {
        let msg = e.to_string();
        match e {
            AccessError::Invalid { .. } => ApiError::bad_request("invalid_token_request", msg),
            AccessError::UnknownToken(_) => ApiError::not_found(msg),
            AccessError::Ledger(inner) => ApiError::from(inner),
            other => ApiError::internal(&other),
        }
    }
}

impl From<LedgerError> for ApiError {
    fn from(e: LedgerError) -> ApiError {
        use LedgerError as L;
        let msg = e.to_string();
        match e {
            L::InvalidRecord { .. } => ApiError::bad_request("invalid_record", msg),
            L::UnknownRef { .. } => ApiError::bad_request("unknown_ref", msg),
            L::LeafTooLarge { .. } => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "leaf_too_large", msg)
            }
            L::IdempotencyConflict { .. } => {
                ApiError::new(StatusCode::CONFLICT, "idempotency_conflict", msg)
            }
            L::NotFound => ApiError::not_found(msg),
            L::KeyRotation(_) => ApiError::new(StatusCode::CONFLICT, "key_rotation_refused", msg),
            L::NothingToErase => ApiError::new(StatusCode::CONFLICT, "nothing_to_erase", msg),
            L::OutOfRange { .. } => ApiError::bad_request("out_of_range", msg),
            L::InvalidRange(_) => ApiError::bad_request("invalid_range", msg),
            L::Pushback => ApiError {
                retry_after: Some(1),
                ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", msg)
            },
            L::Poisoned => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "poisoned", msg),
            L::ShuttingDown => ApiError {
                retry_after: Some(5),
                ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", msg)
            },
            L::NotPublished(_) => ApiError {
                retry_after: Some(1),
                ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_published", msg)
            },
            other => ApiError::internal(&other),
        }
    }
}

impl From<ExportError> for ApiError {
    fn from(e: ExportError) -> ApiError {
        use ExportError as X;
        let msg = e.to_string();
        match e {
            X::InvalidScope(_) => ApiError::bad_request("invalid_scope", msg),
            X::UnknownFormat(_) => ApiError::bad_request("unknown_format", msg),
            X::UnknownRecord(_) | X::UnknownEntity { .. } => ApiError::not_found(msg),
            // Another tenant's record answers exactly like one that does not exist.
            X::OtherTenant { id, .. } => ApiError::not_found(X::UnknownRecord(id).to_string()),
            X::Ledger(inner) => ApiError::from(inner),
            other => ApiError::internal(&other),
        }
    }
}

impl From<actix_web::error::BlockingError> for ApiError {
    fn from(e: actix_web::error::BlockingError) -> ApiError {
        ApiError::internal(&e)
    }
}

/// The `extensions.code` of a GraphQL error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GqlCode {
    /// The caller named something that does not exist.
    NotFound,
    /// The caller sent something malformed or out of range (including documents that do not
    /// parse or validate).
    BadInput,
    /// The query exceeds the depth or complexity limit.
    TooComplex,
    /// The idempotency key was used for a different record.
    Conflict,
    /// The append queue is full; retry after `extensions.retryAfter` seconds.
    Overloaded,
    /// The ledger cannot take writes (poisoned, shutting down).
    Unavailable,
    /// A server-side failure; the server log has the details.
    Internal,
    /// The request carries no valid bearer token.
    Unauthenticated,
    /// The token's role or tenant does not allow this field.
    Forbidden,
}

impl GqlCode {
    fn as_str(self) -> &'static str {
        match self {
            GqlCode::NotFound => "NOT_FOUND",
            GqlCode::BadInput => "BAD_INPUT",
            GqlCode::TooComplex => "TOO_COMPLEX",
            GqlCode::Conflict => "CONFLICT",
            GqlCode::Overloaded => "OVERLOADED",
            GqlCode::Unavailable => "UNAVAILABLE",
            GqlCode::Internal => "INTERNAL",
            GqlCode::Unauthenticated => "UNAUTHENTICATED",
            GqlCode::Forbidden => "FORBIDDEN",
        }
    }
}

/// A GraphQL resolver's error: a message and its code. Resolvers return it, and the library
/// errors convert into it only through the tables below.
#[derive(Debug)]
pub(crate) struct Failure {
    code: GqlCode,
    message: String,
    retry_after: Option<u32>,
}

impl Failure {
    pub(crate) fn new(code: GqlCode, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub(crate) fn bad_input(message: impl Into<String>) -> Failure {
        Failure::new(GqlCode::BadInput, message)
    }

    /// A server-side failure: the details go to the log, the caller gets a generic message.
    pub(crate) fn internal(detail: &dyn std::fmt::Display) -> Failure {
        tracing::error!(error = %detail, "internal error");
        Failure::new(
            GqlCode::Internal,
            "internal error; the server log has the details",
        )
    }
}

impl From<Failure> for async_graphql::Error {
    fn from(f: Failure) -> async_graphql::Error {
        let mut e = async_graphql::Error::new(f.message);
        let ext = e.extensions.get_or_insert_with(Default::default);
        ext.set("code", f.code.as_str());
        if let Some(secs) = f.retry_after {
            ext.set("retryAfter", secs);
        }
        e
    }
}

impl From<LedgerError> for Failure {
    fn from(e: LedgerError) -> Failure {
        use LedgerError as L;
        let msg = e.to_string();
        match e {
            L::InvalidRecord { .. }
            | L::UnknownRef { .. }
            | L::LeafTooLarge { .. }
            | L::OutOfRange { .. }
            | L::InvalidRange(_) => Failure::bad_input(msg),
            L::IdempotencyConflict { .. } => Failure::new(GqlCode::Conflict, msg),
            L::NotFound => Failure::new(GqlCode::NotFound, msg),
            L::NothingToErase => Failure::new(GqlCode::Conflict, msg),
            L::Pushback => Failure {
                retry_after: Some(1),
                ..Failure::new(GqlCode::Overloaded, msg)
            },
            L::Poisoned => Failure::new(GqlCode::Unavailable, msg),
            L::ShuttingDown => Failure {
                retry_after: Some(5),
                ..Failure::new(GqlCode::Unavailable, msg)
            },
            L::NotPublished(_) => Failure {
                retry_after: Some(1),
                ..Failure::new(GqlCode::Unavailable, msg)
            },
            other => Failure::internal(&other),
        }
    }
}

impl From<QueryError> for Failure {
    fn from(e: QueryError) -> Failure {
        use QueryError as Q;
        let msg = e.to_string();
        match e {
            Q::NotFound { .. } => Failure::new(GqlCode::NotFound, msg),
            Q::LimitTooLarge { .. } | Q::AsOfAhead { .. } | Q::InvalidCursor(_) => {
                Failure::bad_input(msg)
            }
            Q::Ledger(inner) => Failure::from(inner),
            other => Failure::internal(&other),
        }
    }
}

impl From<tokio::task::JoinError> for Failure {
    fn from(e: tokio::task::JoinError) -> Failure {
        Failure::internal(&e)
    }
}

/// Gives a code to the errors async-graphql raises itself, before any resolver runs: documents
/// that do not parse or validate, arguments of the wrong type, and the depth and complexity
/// limits. All are the caller's; resolver errors already carry a code.
pub(crate) fn code_library_errors(errors: &mut [async_graphql::ServerError]) {
    for e in errors {
        let ext = e.extensions.get_or_insert_with(Default::default);
        if ext.get("code").is_some() {
            continue;
        }
        // async-graphql's wording for its two limits (validation/mod.rs).
        let code =
            if e.message == "Query is nested too deep." || e.message == "Query is too complex." {
                GqlCode::TooComplex
            } else {
                GqlCode::BadInput
            };
        ext.set("code", code.as_str());
    }
}
