//! The one table that turns library errors into HTTP answers: a status code and a JSON body
//! `{"message", "code", "type"}`. Nothing else in the server chooses status codes for errors.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use provledger_ledger::LedgerError;
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
        res.json(Body {
            message: &self.message,
            code: self.code,
            kind: self.kind(),
        })
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
            other => ApiError::internal(&other),
        }
    }
}

impl From<actix_web::error::BlockingError> for ApiError {
    fn from(e: actix_web::error::BlockingError) -> ApiError {
        ApiError::internal(&e)
    }
}
