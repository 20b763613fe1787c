//! The edge's one error type and its mapping to Metronome-style responses.
//!
//! Invariants:
//! - Every error answers `{"message": ...}` as `application/json` with `x-should-retry`: `false`
//!   for deterministic client errors (4xx other than 408/429), `true` for everything retrying may
//!   fix (5xx), exactly like central's `ApiError`, so SDKs behave the same against either.
//! - `worker::Error` never escapes: it becomes [`EdgeError::Unavailable`] (the runtime or a
//!   dependency failed; a retry is safe because ingest is deduplicated).

use serde::Serialize;
use worker::{Headers, Response};

/// Why a request failed at the edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EdgeError {
    /// A malformed request: 400 with the reason.
    BadRequest(String),
    /// A missing or unknown API token: 401, the same message as central's.
    Unauthorized,
    /// Any other client error with its own status (for example 415 for an unknown encoding).
    Client(u16, String),
    /// Central, a shard or the runtime failed; 503, safe to retry.
    Unavailable(String),
    /// The Worker is misconfigured (a missing secret or an invalid variable); 500.
    Config(String),
}

impl EdgeError {
    pub fn status(&self) -> u16 {
        match self {
            EdgeError::BadRequest(_) => 400,
            EdgeError::Unauthorized => 401,
            EdgeError::Client(status, _) => *status,
            EdgeError::Unavailable(_) => 503,
            EdgeError::Config(_) => 500,
        }
    }

    pub fn message(&self) -> String {
        match self {
            EdgeError::BadRequest(m) | EdgeError::Client(_, m) => m.clone(),
            EdgeError::Unauthorized => "missing or invalid API token".to_string(),
            EdgeError::Unavailable(m) => format!("{m}; retry later"),
            EdgeError::Config(m) => format!("the edge is misconfigured: {m}"),
        }
    }

    /// Whether the client should retry (the `x-should-retry` header).
    pub fn retryable(&self) -> bool {
        let status = self.status();
        status >= 500 || status == 408 || status == 429
    }

    /// The JSON error response. Falls back to a plain response only if building headers fails.
    pub fn into_response(self) -> worker::Result<Response> {
        if self.status() >= 500 {
            worker::console_error!("edge error: {self:?}");
        }
        let body = serde_json::json!({ "message": self.message() });
        let retry = if self.retryable() { "true" } else { "false" };
        match json_response(self.status(), &body) {
            Ok(resp) => {
                let _ = resp.headers().set("x-should-retry", retry);
                if self.status() == 415 {
                    // As central's decompression layer does: say which encoding is accepted.
                    let _ = resp.headers().set("accept-encoding", "gzip");
                }
                Ok(resp)
            }
            Err(_) => Response::error(self.message(), self.status()),
        }
    }
}

impl core::fmt::Display for EdgeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} {}", self.status(), self.message())
    }
}

impl From<worker::Error> for EdgeError {
    fn from(e: worker::Error) -> Self {
        EdgeError::Unavailable(format!("the edge runtime failed: {e}"))
    }
}

impl From<wasm_bindgen::JsValue> for EdgeError {
    fn from(e: wasm_bindgen::JsValue) -> Self {
        EdgeError::from(worker::Error::from(e))
    }
}

/// A JSON response with `status`, serialized with serde_json (exact numbers preserved).
pub fn json_response<T: Serialize>(status: u16, body: &T) -> Result<Response, EdgeError> {
    let bytes = serde_json::to_vec(body)
        .map_err(|e| EdgeError::Unavailable(format!("could not encode a response: {e}")))?;
    let headers = Headers::new();
    headers.set("content-type", "application/json")?;
    Ok(Response::from_bytes(bytes)?
        .with_status(status)
        .with_headers(headers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_retry_flags_match_central() {
        assert_eq!(EdgeError::BadRequest("x".into()).status(), 400);
        assert!(!EdgeError::BadRequest("x".into()).retryable());
        assert!(!EdgeError::Unauthorized.retryable());
        assert_eq!(
            EdgeError::Unauthorized.message(),
            "missing or invalid API token"
        );
        assert!(EdgeError::Unavailable("central is down".into()).retryable());
        assert_eq!(
            EdgeError::Unavailable("central is down".into()).message(),
            "central is down; retry later"
        );
        assert!(EdgeError::Client(429, "slow down".into()).retryable());
        assert!(!EdgeError::Client(415, "nope".into()).retryable());
    }
}
