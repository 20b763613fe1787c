//! What operators watch: Prometheus metrics (served on `--metrics-listen`, off by default) and the
//! request-id, liveness and readiness plumbing.
//!
//! Metrics are recorded through the `metrics` facade at the place each thing happens (ingest
//! outcomes in `http::ingest`, group commits in `ingest`, HTTP requests in [`track_requests`], job
//! passes in `service::jobs`, edge batches in `http::internal`); without an installed recorder
//! the calls do nothing. [`install`] installs the Prometheus recorder once per process; [`render`]
//! refreshes the gauges read at scrape time (database pool) and renders the text format.
//!
//! Every series has bounded labels: environments, outcomes, fixed reason codes, matched route
//! templates (never raw paths), status codes.
//!
//! Floats appear only here, as histogram bucket bounds in seconds: timings, never money.
#![allow(clippy::disallowed_types)]

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use serde_json::json;

use crate::AppState;

/// Upper bounds (seconds) of the latency histograms: 0.5 ms to 10 s.
const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Upper bounds of the group-commit size histogram (events per transaction).
const EVENTS_BUCKETS: &[f64] = &[
    1.0, 10.0, 100.0, 500.0, 1_000.0, 5_000.0, 10_000.0, 20_000.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process's Prometheus recorder (once; later calls return the same handle).
pub fn install() -> Result<PrometheusHandle, BuildError> {
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)?
        .set_buckets_for_metric(
            Matcher::Full("tally_ingest_group_commit_events".into()),
            EVENTS_BUCKETS,
        )?
        .install_recorder()?;
    describe();
    Ok(HANDLE.get_or_init(|| handle).clone())
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "tally_ingest_events_total",
        "Usage events by environment and outcome (accepted, duplicate, rejected with a reason)"
    );
    describe_histogram!(
        "tally_ingest_group_commit_events",
        Unit::Count,
        "Events per group-commit transaction"
    );
    describe_histogram!(
        "tally_ingest_group_commit_seconds",
        Unit::Seconds,
        "Time to commit one group-commit transaction"
    );
    describe_counter!(
        "tally_ingest_group_commit_failures_total",
        "Group-commit transactions that failed (their requests got an error)"
    );
    describe_counter!(
        "tally_http_requests_total",
        "HTTP requests by matched route, method and status"
    );
    describe_histogram!(
        "tally_http_request_seconds",
        Unit::Seconds,
        "HTTP request latency by matched route"
    );
    describe_gauge!(
        "tally_db_pool_connections",
        "Database pool connections by state (idle, in_use)"
    );
    describe_counter!(
        "tally_job_passes_total",
        "Background job passes by result (ok, error, skipped: another replica held the lock)"
    );
    describe_histogram!(
        "tally_job_pass_seconds",
        Unit::Seconds,
        "Duration of one background job pass"
    );
    describe_counter!(
        "tally_invoices_finalized_total",
        "Invoices finalized by the background job"
    );
    describe_counter!(
        "tally_rollup_days_total",
        "Dirty usage days the rollup compactor has taken"
    );
    describe_gauge!(
        "tally_rollup_days_pending",
        "Dirty usage days left after the compactor's last run (read hour by hour until rolled up)"
    );
    describe_gauge!(
        "tally_job_failed_contracts",
        "Contracts that failed the last job pass (see /v1/operations/stuck-contracts)"
    );
    describe_counter!(
        "tally_edge_batches_total",
        "Edge batches received, by whether they were applied (false: a replay)"
    );
    describe_counter!(
        "tally_dead_letters_total",
        "Edge batch partials recorded as dead letters instead of merged"
    );
}

/// The metrics as Prometheus text, with the scrape-time gauges refreshed first.
pub fn render(state: &AppState, handle: &PrometheusHandle) -> String {
    let pool = state.stores.health.pool_stats();
    let in_use = pool.size.saturating_sub(pool.idle);
    metrics::gauge!("tally_db_pool_connections", "state" => "idle").set(pool.idle);
    metrics::gauge!("tally_db_pool_connections", "state" => "in_use").set(in_use);
    handle.render()
}

/// The router served on `--metrics-listen`: `GET /metrics`, unauthenticated.
// Its own listener for operators, not part of the API that `/openapi.json` describes.
#[allow(clippy::disallowed_methods)]
pub fn metrics_router(state: AppState, handle: PrometheusHandle) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move |State(st): State<AppState>| {
                let handle = handle.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            HeaderValue::from_static("text/plain; version=0.0.4"),
                        )],
                        render(&st, &handle),
                    )
                }
            }),
        )
        .with_state(state)
}

/// Counts every request by its matched route template, method and status, and times it.
pub async fn track_requests(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = req.method().as_str().to_string();
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("tally_http_requests_total", "route" => route.clone(), "method" => method, "status" => status)
        .increment(1);
    metrics::histogram!("tally_http_request_seconds", "route" => route).record(started.elapsed());
    response
}

/// `GET /livez`: the process is up and serving.
pub async fn livez() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: the database answers (migrations ran before the server started listening), so
/// this replica can take traffic; a 503 otherwise.
pub async fn readyz(State(st): State<AppState>) -> Response {
    match st.stores.health.ping().await {
        Ok(()) => Json(json!({ "status": "ok" })).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check: the database does not answer");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "message": "the database is unavailable" })),
            )
                .into_response()
        }
    }
}
