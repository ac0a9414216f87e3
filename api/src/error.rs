//! The one place domain errors become HTTP responses: every error is the two-field JSON body
//! `{"code", "message"}` with the status its code carries. Client errors are logged at debug
//! level; internal ones at error level, with their details, which the client never sees.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use berth_core::ErrorCode;
use berth_core::runtime::RuntimeError;
use berth_core::validate::Violations;
use berth_core::wire::ErrorResponse;

/// An error answered to a client.
#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// The stable code (decides the status).
    pub code: ErrorCode,
    /// What the client reads.
    pub message: String,
    /// What only the log reads (internal errors).
    pub detail: Option<String>,
}

impl ApiError {
    /// An error with a message for the client.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            detail: None,
        }
    }
}

impl From<Violations> for ApiError {
    fn from(v: Violations) -> Self {
        let body = v.to_error_response();
        Self {
            code: v.code(),
            message: body.message,
            detail: None,
        }
    }
}

impl From<RuntimeError> for ApiError {
    fn from(e: RuntimeError) -> Self {
        let body = e.to_error_response();
        let detail = matches!(e, RuntimeError::Internal { .. }).then(|| e.to_string());
        Self {
            code: e.code(),
            message: body.message,
            detail,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::error!(code = %self.code, message = %self.message, detail = self.detail.as_deref().unwrap_or(""), "request failed");
        } else {
            tracing::debug!(code = %self.code, message = %self.message, "request refused");
        }
        let body = ErrorResponse {
            code: self.code.as_str().to_owned(),
            message: self.message,
        };
        (status, Json(body)).into_response()
    }
}
