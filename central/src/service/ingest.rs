//! Native ingest as a use case: a decoded request body → validated events (core) → their usage
//! contributions (core, against the environment's metrics) → one durable group commit → the
//! summary the client is told. `POST /v1/ingest` and `tally ingest --database` (backfill on a
//! local database) both run exactly this.

use tally_core::ingest::{parse_batch, IngestSummary};
use tally_core::metric::contributions;

use super::Invalid;
use crate::store::{Env, IngestItem, StoreError};
use crate::AppState;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The whole request is refused (not an array, empty, too many events, too large).
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Ingests one request body (JSON, already decompressed) for `env`.
pub async fn ingest(st: &AppState, env: Env, body: &[u8]) -> Result<IngestSummary, IngestError> {
    let batch = parse_batch(body, st.now_ms()).map_err(|e| Invalid(e.to_string()))?;
    let metrics = st.metric_defs(env).await?;
    let items = batch
        .events
        .iter()
        .map(|(_, event)| IngestItem {
            env,
            transaction_id: event.transaction_id.clone(),
            contributions: contributions(metrics.iter(), event),
            event: Some(event.clone()),
        })
        .collect();
    let outcomes = st.ingest.submit(items).await?;
    // The customers whose usage changed: their alerts are evaluated within about a second.
    let touched = batch
        .events
        .iter()
        .zip(&outcomes)
        .filter(|(_, o)| matches!(o, crate::store::ItemOutcome::Accepted))
        .map(|((_, event), _)| event.customer_id.clone());
    st.alerts.touch(env, touched);
    let mut summary = IngestSummary::new(batch.rejected);
    summary.tally(&batch.events, outcomes);
    let summary = summary.finish();
    record(env, &summary);
    Ok(summary)
}

/// Counts the request's outcomes (`tally_ingest_events_total`).
fn record(env: Env, summary: &IngestSummary) {
    let count = |outcome: &'static str, reason: &'static str, n: usize| {
        if n > 0 {
            metrics::counter!("tally_ingest_events_total", "env" => env.as_str(), "outcome" => outcome, "reason" => reason)
                .increment(u64::try_from(n).unwrap_or(u64::MAX));
        }
    };
    count("accepted", "", summary.accepted);
    count("duplicate", "", summary.duplicates);
    for r in &summary.rejected {
        count("rejected", r.reason.as_str(), 1);
    }
}
