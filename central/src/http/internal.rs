//! Internal endpoints for edge Workers, authenticated by HMAC-SHA256 (see `tally_core::batch`),
//! not by API tokens. They answer 404 when no edge key is configured.
//!
//! - `POST /internal/v1/batches`: apply a sealed batch exactly once; a replay answers 200 with
//!   `applied: false`. A partial that cannot be merged (its hourly total would overflow) becomes a
//!   dead letter (logged at warn, counted in the ack) and the rest applies, still 200: a batch
//!   answered with an error is resent forever and would block every later batch of its shard.
//! - `GET /internal/v1/stats`: operational counters (dead letters per environment).
//! - `GET /internal/v1/metrics?env=`: the metric snapshot the edge meters with.
//! - `POST /internal/v1/tokens/lookup` `{"token_hash"}`: the environment of an API token.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use tally_core::batch::{self, Batch, BatchAck, MetricsSnapshot, TokenInfo};

use super::error::{ApiError, ApiResult};
use super::{from_value, read_body, QueryMap};
use crate::store::Env;
use crate::AppState;

/// Largest accepted batch body.
const MAX_BATCH_BYTES: usize = 16 << 20;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/internal/v1/batches", post(apply_batch))
        .route("/internal/v1/metrics", get(metrics))
        .route("/internal/v1/stats", get(stats))
        .route("/internal/v1/tokens/lookup", post(token_lookup))
}

/// Checks the request's signature over `body`; 404 when the edge is not configured.
fn verify(st: &AppState, headers: &HeaderMap, body: &[u8]) -> ApiResult<()> {
    let Some(key) = &st.settings.edge_hmac_key else {
        return Err(ApiError::not_found("route"));
    };
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    batch::verify(
        &key.0,
        header(batch::TIMESTAMP_HEADER),
        header(batch::SIGNATURE_HEADER),
        body,
        st.now_ms(),
    )
    .map_err(|e| ApiError::new(StatusCode::UNAUTHORIZED, e.to_string()))
}

async fn apply_batch(State(st): State<AppState>, req: Request) -> ApiResult<Json<BatchAck>> {
    let headers = req.headers().clone();
    let body = read_body(req, MAX_BATCH_BYTES).await?;
    verify(&st, &headers, &body)?;
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
    let done = st
        .stores
        .usage
        .apply_batch(&b.shard_id, b.seq, &partials, st.now_ms())
        .await?;
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
    let metrics_version = st.stores.config.metrics_version().await?;
    Ok(Json(BatchAck {
        applied: done.applied,
        metrics_version,
        dead_letters: u64::try_from(done.dead_letters.len()).unwrap_or(u64::MAX),
    }))
}

/// Operational counters, read from the database so every replica answers the same.
async fn stats(State(st): State<AppState>, req: Request) -> ApiResult<Json<serde_json::Value>> {
    verify(&st, req.headers(), b"")?;
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
    verify(&st, req.headers(), b"")?;
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

async fn token_lookup(State(st): State<AppState>, req: Request) -> ApiResult<Json<TokenInfo>> {
    let headers = req.headers().clone();
    let body = read_body(req, 4096).await?;
    verify(&st, &headers, &body)?;
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
