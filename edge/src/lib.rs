//! `tally-edge`: Tally's Cloudflare Worker, `tally-core` compiled to WASM.
//!
//! What it serves:
//! - `POST /v1/ingest`: the same request contract as central's native ingest (both come from
//!   `tally_core::ingest`). The Worker authenticates the Bearer token against central (cached),
//!   validates the batch with core, routes each event to a shard Durable Object by
//!   [`routing::shard_index`] of (environment, `transaction_id`), calls the shards in parallel and
//!   answers 200 only once every shard has durably recorded its part.
//! - `GET /`: 200 once the Worker is configured (readiness).
//! - Every other path is forwarded to central unchanged ([`proxy`]).
//!
//! The shard ([`shard::Shard`]) dedupes and pre-aggregates in its SQLite storage and flushes sealed,
//! numbered, HMAC-signed batches to central on an alarm.
//!
//! Invariants:
//! - Exactly once: a dedupe key (environment, `transaction_id`) is claimed in the same storage
//!   transaction that merges the event into the shard's pending partials; a sealed batch never
//!   changes and is resent with the same `(shard_id, seq)` until central acknowledges it.
//! - Nothing here panics on any input: no `unwrap`/`expect`, every `worker::Error` becomes an
//!   [`error::EdgeError`] with a Metronome-style `{"message"}` body (a panic would abort the isolate).
//! - No floats near quantities: usage stays in `tally_core` accumulators (exact decimals); the only
//!   floating-point values are JavaScript's clock and numbers at the JS boundary, converted at once.
//! - Every loop, cache and queue is bounded by a named constant.

pub mod body;
pub mod central;
pub mod config;
pub mod error;
pub mod ingest;
pub mod js;
pub mod protocol;
pub mod proxy;
pub mod routing;
pub mod shard;
pub mod tokens;

use worker::{event, Context, Env, Method, Request, Response};

use crate::config::EdgeConfig;
use crate::error::EdgeError;

/// The Worker's entry point: ingest, readiness, or proxy to central.
#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> worker::Result<Response> {
    let result = route(req, &env).await;
    match result {
        Ok(resp) => Ok(resp),
        Err(e) => e.into_response(),
    }
}

async fn route(req: Request, env: &Env) -> Result<Response, EdgeError> {
    let cfg = EdgeConfig::from_env(env)?;
    let path = req.path();
    match (req.method(), path.as_str()) {
        (Method::Post, "/v1/ingest") => ingest::handle(req, env, &cfg).await,
        (Method::Get, "/") => ready(&cfg),
        _ => proxy::forward(req, env, &cfg).await,
    }
}

/// Readiness: the Worker is running and configured.
fn ready(cfg: &EdgeConfig) -> Result<Response, EdgeError> {
    let body = serde_json::json!({
        "service": "tally-edge",
        "version": env!("CARGO_PKG_VERSION"),
        "status": "ok",
        "shards": cfg.shard_count,
    });
    error::json_response(200, &body)
}

/// The current time in epoch milliseconds, from the JavaScript clock.
pub fn now_ms() -> i64 {
    // `Date.now()` is an integral number of milliseconds well inside i64's range.
    js_sys::Date::now() as i64
}
