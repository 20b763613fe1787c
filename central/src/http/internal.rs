//! Internal endpoints for edge Workers, authenticated by HMAC-SHA256 (see `tally_core::batch`),
//! not by API tokens. They answer 404 when no edge key is configured.
//!
//! Invariants:
//! - A signature is checked against this request's method, path and query, so one signed request
//!   answers only itself: not another endpoint, not another `?env=`.
//! - Nothing of a body is read before the configuration and the signature headers (present, well
//!   formed, timestamp inside the skew) have been checked; a declared `content-length` over the
//!   limit is refused unread; and all bodies being read before their signature is verified hold at
//!   most [`MAX_UNVERIFIED_BYTES`] together (per router, so per process), so unauthenticated
//!   uploads cannot exhaust memory.
//!
//! Endpoints:
//! - `POST /internal/v1/batches`: apply a sealed batch exactly once; a replay answers 200 with
//!   `applied: false`. A partial that cannot be merged (its hourly total would overflow) becomes a
//!   dead letter (logged at warn, counted in the ack) and the rest applies, still 200: a batch
//!   answered with an error is resent forever and would block every later batch of its shard.
//! - `GET /internal/v1/stats`: operational counters (dead letters per environment).
//! - `GET /internal/v1/metrics?env=`: the metric snapshot the edge meters with.
//! - `POST /internal/v1/tokens/lookup` `{"token_hash"}`: the environment of an API token.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{OriginalUri, Request, State};
use axum::http::{header, StatusCode};
use axum::routing::{get, post};
use axum::{Extension, Json};
use serde::Deserialize;
use tally_core::batch::{
    self, Batch, BatchAck, MetricsSnapshot, SignatureHeaders, SignedRequest, TokenInfo,
};
use tokio::sync::Semaphore;

use super::error::{ApiError, ApiResult};
use super::Routes;
use super::{from_value, read_body, QueryMap};
use crate::store::Env;
use crate::AppState;

/// Largest accepted batch body.
const MAX_BATCH_BYTES: usize = 16 << 20;
/// Largest accepted token lookup body.
const MAX_LOOKUP_BYTES: usize = 4096;
/// Most bytes that all bodies being read, and not yet verified, may reserve at once in this
/// process: four full batches.
pub const MAX_UNVERIFIED_BYTES: usize = 4 * MAX_BATCH_BYTES;
/// How long a body waits for room in that budget before it is answered 503 (the edge resends).
const BUDGET_WAIT: Duration = Duration::from_secs(5);

/// The budget of [`MAX_UNVERIFIED_BYTES`], one permit per byte, shared by every request to one
/// router (a process builds one).
#[derive(Clone)]
struct UploadBudget(Arc<Semaphore>);

pub fn routes() -> Routes {
    let budget = UploadBudget(Arc::new(Semaphore::new(MAX_UNVERIFIED_BYTES)));
    Routes::new()
        .route("/internal/v1/batches", post(apply_batch))
        .route("/internal/v1/metrics", get(metrics))
        .route("/internal/v1/stats", get(stats))
        .route("/internal/v1/tokens/lookup", post(token_lookup))
        .layer(Extension(budget))
}

/// A request whose signature headers passed: the edge is configured, the headers are well formed
/// and their timestamp is inside the skew. Only the MAC, over method, target and body, is left.
struct Unverified {
    key: Vec<u8>,
    headers: SignatureHeaders,
    method: String,
    path_and_query: String,
}

impl Unverified {
    /// Checks what can be checked without the body; 404 when the edge is not configured.
    fn check(st: &AppState, req: &Request) -> ApiResult<Unverified> {
        let Some(key) = &st.settings.edge_hmac_key else {
            return Err(ApiError::not_found("route"));
        };
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
        };
        let headers = SignatureHeaders::parse(
            header(batch::TIMESTAMP_HEADER),
            header(batch::SIGNATURE_HEADER),
            st.now_ms(),
        )
        .map_err(refused)?;
        // The target as the client sent it, even if a router above this one rewrote the URI.
        let uri = req
            .extensions()
            .get::<OriginalUri>()
            .map_or(req.uri(), |o| &o.0);
        let path_and_query = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
        Ok(Unverified {
            key: key.0.clone(),
            headers,
            method: req.method().as_str().to_string(),
            path_and_query: path_and_query.to_string(),
        })
    }

    fn verify(&self, body: &[u8]) -> ApiResult<()> {
        let req = SignedRequest {
            method: &self.method,
            path_and_query: &self.path_and_query,
            body,
        };
        self.headers.verify(&self.key, &req).map_err(refused)
    }
}

fn refused(e: batch::SignatureError) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, e.to_string())
}

/// Verifies a request that has no body to read.
fn verify_bodiless(st: &AppState, req: &Request) -> ApiResult<()> {
    Unverified::check(st, req)?.verify(b"")
}

/// Reads and verifies a signed body of at most `limit` bytes: headers first, then the body within
/// the process-wide budget of unverified bytes, then the MAC.
async fn read_signed(
    st: &AppState,
    budget: &UploadBudget,
    req: Request,
    limit: usize,
) -> ApiResult<Bytes> {
    let pending = Unverified::check(st, &req)?;
    let reserve = declared_length(&req, limit)?;
    let permits = u32::try_from(reserve).unwrap_or(u32::MAX);
    let _permit = tokio::time::timeout(BUDGET_WAIT, budget.0.acquire_many(permits))
        .await
        .ok()
        .and_then(Result::ok)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many internal uploads in progress; retry later",
            )
        })?;
    let body = read_body(req, reserve).await?;
    pending.verify(&body)?;
    Ok(body)
}

/// The bytes to reserve for a body: its declared `content-length` (413 unread when over `limit`),
/// or `limit` when it declares none.
fn declared_length(req: &Request, limit: usize) -> ApiResult<usize> {
    let Some(value) = req.headers().get(header::CONTENT_LENGTH) else {
        return Ok(limit);
    };
    let n: usize = value
        .to_str()
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| ApiError::bad_request("invalid content-length"))?;
    if n > limit {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body exceeds {limit} bytes"),
        ));
    }
    Ok(n)
}

async fn apply_batch(
    State(st): State<AppState>,
    Extension(budget): Extension<UploadBudget>,
    req: Request,
) -> ApiResult<Json<BatchAck>> {
    let body = read_signed(&st, &budget, req, MAX_BATCH_BYTES).await?;
    let value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid batch: {e}")))?;
    let b: Batch = from_value(value)?;
    if b.shard_id.is_empty() || b.seq == 0 || b.partials.len() > batch::MAX_BATCH_PARTIALS {
        return Err(ApiError::bad_request(
            "invalid batch: empty shard_id, seq 0 or too many partials",
        ));
    }
    let mut partials = Vec::with_capacity(b.partials.len());
    for p in b.partials {
        let env = Env::parse(&p.env)
            .ok_or_else(|| ApiError::bad_request(format!("unknown env {:?}", p.env)))?;
        partials.push((env, p.key, p.acc));
    }
    if let Some(e) = b.events.iter().find(|e| Env::parse(&e.env).is_none()) {
        return Err(ApiError::bad_request(format!("unknown env {:?}", e.env)));
    }
    let done = st
        .stores
        .usage
        .apply_batch(&b.shard_id, b.seq, &partials, &b.events, st.now_ms())
        .await?;
    if done.applied {
        for env in crate::store::Env::ALL {
            let refs = partials.iter().filter(|(e, _, _)| *e == env);
            st.alerts
                .touch(env, refs.map(|(_, key, _)| key.customer_ref.clone()));
        }
    }
    for d in &done.dead_letters {
        tracing::warn!(
            shard_id = %d.shard_id,
            seq = d.seq,
            partial_index = d.index,
            env = d.env.as_str(),
            reason = %d.reason,
            partial = %d.partial,
            "edge batch partial not merged; recorded as a dead letter",
        );
    }
    let applied = if done.applied { "true" } else { "false" };
    metrics::counter!("tally_edge_batches_total", "applied" => applied).increment(1);
    metrics::counter!("tally_dead_letters_total")
        .increment(u64::try_from(done.dead_letters.len()).unwrap_or(u64::MAX));
    let metrics_version = st.stores.config.metrics_version().await?;
    Ok(Json(BatchAck {
        applied: done.applied,
        metrics_version,
        dead_letters: u64::try_from(done.dead_letters.len()).unwrap_or(u64::MAX),
    }))
}

/// Operational counters, read from the database so every replica answers the same.
async fn stats(State(st): State<AppState>, req: Request) -> ApiResult<Json<serde_json::Value>> {
    verify_bodiless(&st, &req)?;
    let mut dead_letters = serde_json::Map::new();
    for env in Env::ALL {
        let n = st.stores.usage.dead_letter_count(env).await?;
        dead_letters.insert(env.as_str().to_string(), n.into());
    }
    Ok(Json(serde_json::json!({ "dead_letters": dead_letters })))
}

async fn metrics(
    State(st): State<AppState>,
    q: QueryMap,
    req: Request,
) -> ApiResult<Json<MetricsSnapshot>> {
    verify_bodiless(&st, &req)?;
    let env = q
        .one("env")
        .and_then(Env::parse)
        .ok_or_else(|| ApiError::bad_request("env must be sandbox or production"))?;
    // Read the version first: a metric created in between is picked up on the next refresh.
    let version = st.stores.config.metrics_version().await?;
    let metrics = crate::model::load_metric_defs(&st.stores, env).await?;
    Ok(Json(MetricsSnapshot { version, metrics }))
}

#[derive(Deserialize)]
struct LookupReq {
    token_hash: String,
}

async fn token_lookup(
    State(st): State<AppState>,
    Extension(budget): Extension<UploadBudget>,
    req: Request,
) -> ApiResult<Json<TokenInfo>> {
    let body = read_signed(&st, &budget, req, MAX_LOOKUP_BYTES).await?;
    let value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))?;
    let r: LookupReq = from_value(value)?;
    match st.token_env(&r.token_hash).await? {
        Some(env) => Ok(Json(TokenInfo {
            env: env.as_str().to_string(),
        })),
        None => Err(ApiError::not_found("token")),
    }
}
