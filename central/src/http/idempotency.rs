//! `Idempotency-Key` on every POST (metronome-api.md §1.10): the first execution's response is
//! kept for `store::IDEMPOTENCY_RETENTION_MS` and replayed for the same key (marked `Idempotent-Replayed: true`);
//! the same key with a different method, path, query or body is a 409.
//!
//! Atomic with the write it guards: the key is claimed by the request's first write transaction
//! (`store::IDEMPOTENCY`, recorded by every store write), so two requests with one key, on one
//! server or on replicas sharing a database, cannot both write: the second's write fails on the
//! claim, and it answers with the first one's response instead. A request that writes nothing
//! stores its response when it answers. The one case with no response to replay is a server that
//! died between its write and its answer: the key then answers 409 saying the outcome is unknown
//! (never a second execution, which could create a second object).
//!
//! Ingest (`/v1/ingest`) commits through the shared group-commit writer, outside the request's
//! task, so its key is stored with the response only; a re-executed ingest is harmless anyway
//! (dedupe), its events then count as duplicates.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};

use super::error::ApiError;
use crate::store::{Env, IdempotencyClaim, IdempotencyRecord, IDEMPOTENCY};
use crate::AppState;

pub const HEADER: &str = "idempotency-key";
/// Marks a replayed response.
pub const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
/// Longest key accepted.
pub const MAX_KEY_CHARS: usize = 255;
/// Largest request body a keyed request may have (bigger ones are refused by their endpoints
/// anyway; the edge batch endpoint is not under this layer).
const MAX_KEYED_BODY_BYTES: usize = 2 << 20;
/// How often a request waiting on another with the same key looks again.
const POLL: Duration = Duration::from_millis(20);

/// The layer, inside authentication (it needs the caller's environment).
pub async fn idempotency(State(st): State<AppState>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let Some(key) = req.headers().get(HEADER) else {
        return next.run(req).await;
    };
    let key = match key.to_str() {
        Ok(k) if !k.trim().is_empty() && k.chars().count() <= MAX_KEY_CHARS => k.to_string(),
        _ => {
            return ApiError::bad_request(format!(
                "Idempotency-Key must be 1 to {MAX_KEY_CHARS} visible ASCII characters"
            ))
            .into_response()
        }
    };
    let Some(env) = req.extensions().get::<Env>().copied() else {
        return next.run(req).await;
    };
    match keyed(&st, env, key, req, next).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn keyed(
    st: &AppState,
    env: Env,
    key: String,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, MAX_KEYED_BODY_BYTES)
        .await
        .map_err(|_| ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"))?;
    let fingerprint = fingerprint(&parts.method, &parts.uri, &body);
    let deadline = tokio::time::Instant::now() + st.settings.request_timeout;
    if let Some(answer) = settled(st, env, &key, &fingerprint, deadline).await? {
        return Ok(answer);
    }
    let claim = IdempotencyClaim {
        env,
        key: key.clone(),
        fingerprint: fingerprint.clone(),
        nonce: uuid::Uuid::new_v4().to_string(),
        now_ms: st.now_ms(),
    };
    let req = Request::from_parts(parts, Body::from(body));
    let response = IDEMPOTENCY.scope(claim.clone(), next.run(req)).await;
    let (head, body) = response.into_parts();
    let bytes: Bytes = body
        .collect()
        .await
        .map_err(|e| ApiError::internal(format!("reading a response: {e}")))?
        .to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let stored = st
        .stores
        .idempotency
        .complete_idempotency(&claim, head.status.as_u16(), &text, st.now_ms())
        .await?;
    if !stored {
        // Another request with this key claimed it first (our write then failed on the claim,
        // or we wrote nothing): its response is the one every request with the key gets.
        if let Some(answer) = settled(st, env, &key, &fingerprint, deadline).await? {
            return Ok(answer);
        }
    }
    Ok(Response::from_parts(head, Body::from(bytes)))
}

/// What a request with this key must answer without executing: the stored response (replayed),
/// a 409 when the key was used with other parameters or its first request's outcome is unknown,
/// or `None` when the key is free. Waits while another request holds the key unanswered.
async fn settled(
    st: &AppState,
    env: Env,
    key: &str,
    fingerprint: &str,
    deadline: tokio::time::Instant,
) -> Result<Option<Response>, ApiError> {
    loop {
        let Some(record) = st.stores.idempotency.idempotency_record(env, key).await? else {
            return Ok(None);
        };
        if record.fingerprint != fingerprint {
            return Err(ApiError::conflict(
                "this Idempotency-Key was already used with a different request (method, path, \
                 query or body)",
            ));
        }
        if let Some(answer) = replay(&record) {
            return Ok(Some(answer));
        }
        let abandoned = st.now_ms().saturating_sub(record.created_ms)
            > i64::try_from(st.settings.request_timeout.as_millis()).unwrap_or(i64::MAX) + 30_000;
        if abandoned || tokio::time::Instant::now() >= deadline {
            return Err(ApiError::conflict(
                "the first request with this Idempotency-Key has not answered (it may have \
                 been interrupted after writing); check the result before retrying with a new key",
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

fn replay(record: &IdempotencyRecord) -> Option<Response> {
    let (status, body) = record.response.as_ref()?;
    let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut headers = HeaderMap::new();
    headers.insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(REPLAYED, HeaderValue::from_static("true"));
    Some((status, headers, body.clone()).into_response())
}

/// SHA-256 (hex) of method, path and query, and body.
fn fingerprint(method: &Method, uri: &axum::http::Uri, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(method.as_str().as_bytes());
    h.update([0]);
    h.update(uri.path().as_bytes());
    h.update([0]);
    h.update(uri.query().unwrap_or("").as_bytes());
    h.update([0]);
    h.update(body);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}
