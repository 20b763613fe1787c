//! The one error type handlers return: Metronome's `{"message": ...}` with the right status.
//!
//! Deterministic client errors carry `x-should-retry: false` so the SDKs do not retry them.
//! Database failures become a generic 5xx; their detail goes to the log only.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("{what} not found"))
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }

    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "missing or invalid API token")
    }

    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(%detail, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal server error")
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => ApiError::conflict(m),
            StoreError::Invalid(m) => ApiError::bad_request(m),
            StoreError::Database(e) => {
                tracing::error!(error = %e, "database error");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the database is unavailable; retry later",
                )
            }
            StoreError::Unavailable(m) => {
                tracing::error!(error = %m, "store unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the service is temporarily unavailable; retry later",
                )
            }
            StoreError::Corrupt(m) => ApiError::internal(format!("corrupt stored data: {m}")),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let retryable = self.status.is_server_error()
            || self.status == StatusCode::TOO_MANY_REQUESTS
            || self.status == StatusCode::REQUEST_TIMEOUT;
        let mut res = (
            self.status,
            Json(serde_json::json!({ "message": self.message })),
        )
            .into_response();
        let flag = if retryable { "true" } else { "false" };
        res.headers_mut()
            .insert("x-should-retry", HeaderValue::from_static(flag));
        res
    }
}
