//! The background job: one pass finalizes due invoices of every contract in both environments
//! and prunes old dedupe keys and stored events, under the job lock (one replica at a time).
//!
//! Invariants:
//! - One contract that cannot be finalized (rating overflows, a corrupt document) never stops
//!   the others nor pruning: its error is logged with the contract id, counted and recorded as a
//!   *stuck contract* (`GET /v1/operations/stuck-contracts`), and the pass carries on. A stuck
//!   contract is cleared by the first pass that finalizes it.
//! - Every pass is bounded: contracts are read in pages of [`JOB_PAGE`].
//! - Every step is idempotent or conditional, so a replica killed mid-pass leaves each invoice
//!   either DRAFT or completely FINALIZED, and the next pass carries on.
//! - No HTTP here: failures are [`JobError`].

use std::collections::HashSet;

use super::invoices::{finalize_rows, sort_rows, stored_and_missing};
use crate::billing::BillingError;
use crate::model::{decode, kind, Contract};
use crate::store::{ArchiveFilter, Doc, Env, InvoiceKind, InvoiceRow, PageReq, StoreError};
use crate::AppState;

/// Contracts read per page of a pass.
pub const JOB_PAGE: i64 = 200;
/// Most stuck contracts one environment reports (and a pass reloads to clear).
pub const MAX_STUCK_LISTED: i64 = 1_000;

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PassReport {
    pub contracts: u64,
    pub finalized: u64,
    /// Contracts that failed this pass (they are recorded as stuck).
    pub failed: u64,
    pub pruned_keys: u64,
    pub pruned_idempotency_keys: u64,
    /// Finished outbox messages past [`crate::store::OUTBOX_RETENTION_MS`].
    pub pruned_outbox: u64,
    /// Stored events past the event retention (`Settings::event_retention_ms`).
    pub pruned_events: u64,
}

/// Events one prune statement deletes at most.
pub const EVENT_PRUNE_BATCH: i64 = 5_000;
/// Prune statements one pass runs at most: a pass deletes at most
/// `EVENT_PRUNE_BATCH * EVENT_PRUNE_BATCHES` events, the next pass carries on.
pub const EVENT_PRUNE_BATCHES: usize = 20;

/// One pass under the job lock. `Ok(None)` (and nothing done) when another replica holds it.
pub async fn run_jobs_once(st: &AppState) -> Result<Option<PassReport>, JobError> {
    let Some(guard) = st.stores.jobs.try_job_lock().await? else {
        return Ok(None);
    };
    // Every log line of the pass is written in its span.
    let span = tracing::info_span!("job_pass", started_ms = st.now_ms());
    let result = tracing::Instrument::instrument(run_pass(st), span).await;
    // A failed release is logged only: the guard's connection was closed, which frees the lock.
    if let Err(e) = guard.release().await {
        tracing::warn!(error = %e, "releasing the job lock failed");
    }
    result.map(Some)
}

/// The pass: each environment's contracts, then pruning, which runs whatever happened before it.
async fn run_pass(st: &AppState) -> Result<PassReport, JobError> {
    let mut report = PassReport::default();
    let mut first_error = None;
    for env in Env::ALL {
        if let Err(e) = finalize_env(st, env, &mut report).await {
            tracing::warn!(env = env.as_str(), error = %e, "finalization pass stopped early");
            first_error.get_or_insert(e);
        }
    }
    let cutoff = st
        .now_ms()
        .saturating_sub(tally_core::ingest::DEDUPE_RETENTION_MS);
    report.pruned_keys = st.stores.usage.prune_dedupe(cutoff).await?;
    let keys_cutoff = st
        .now_ms()
        .saturating_sub(crate::store::IDEMPOTENCY_RETENTION_MS);
    report.pruned_idempotency_keys = st.stores.idempotency.prune_idempotency(keys_cutoff).await?;
    // Outbox times are the wall clock (`crate::outbox`).
    let outbox_cutoff = <crate::SystemClock as crate::Clock>::now_ms(&crate::SystemClock)
        .saturating_sub(crate::store::OUTBOX_RETENTION_MS);
    report.pruned_outbox = st.stores.outbox.prune_outbox(outbox_cutoff).await?;
    // Event times are the service clock's, as the events' timestamps were validated against it.
    let events_cutoff = st.now_ms().saturating_sub(st.settings.event_retention_ms);
    for _ in 0..EVENT_PRUNE_BATCHES {
        let n = st
            .stores
            .usage
            .prune_events(events_cutoff, EVENT_PRUNE_BATCH)
            .await?;
        report.pruned_events += n;
        if n < u64::try_from(EVENT_PRUNE_BATCH).unwrap_or(u64::MAX) {
            break;
        }
    }
    if report.failed > 0 {
        tracing::warn!(
            failed = report.failed,
            "contracts could not be finalized this pass"
        );
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(report),
    }
}

async fn finalize_env(st: &AppState, env: Env, report: &mut PassReport) -> Result<(), JobError> {
    let stuck: HashSet<String> = st
        .stores
        .invoices
        .job_failures(env, MAX_STUCK_LISTED)
        .await?
        .into_iter()
        .map(|f| f.contract_id)
        .collect();
    let mut after = 0;
    loop {
        let page = PageReq {
            after,
            limit: JOB_PAGE,
        };
        let docs = st
            .stores
            .config
            .list_docs(env, kind::CONTRACT, None, ArchiveFilter::All, Some(page))
            .await?;
        for doc in &docs {
            after = doc.seq;
            report.contracts += 1;
            match sync_contract(st, env, doc).await {
                Ok(n) => {
                    report.finalized += n as u64;
                    if stuck.contains(&doc.id) {
                        st.stores.invoices.clear_job_failure(env, &doc.id).await?;
                    }
                }
                Err(e) => {
                    report.failed += 1;
                    record_failure(st, env, &doc.id, &e).await?;
                }
            }
        }
        if (docs.len() as i64) < JOB_PAGE {
            return Ok(());
        }
    }
}

/// Stores the drafts of every begun period and finalizes the due ones.
async fn sync_contract(st: &AppState, env: Env, doc: &Doc) -> Result<usize, BillingError> {
    let contract: Contract = decode(doc)?;
    let (mut rows, missing) = stored_and_missing(st, env, &contract).await?;
    // Usage drafts are stored once, when their period begins (only this job writes them); a
    // scheduled invoice gets its row when it is finalized or voided.
    let usage: Vec<InvoiceRow> = missing
        .iter()
        .filter(|r| r.kind == InvoiceKind::Usage)
        .cloned()
        .collect();
    st.stores.invoices.ensure_invoices(env, &usage).await?;
    rows.extend(missing);
    sort_rows(&mut rows);
    finalize_rows(st, env, &contract, &rows).await
}

async fn record_failure(
    st: &AppState,
    env: Env,
    contract_id: &str,
    e: &BillingError,
) -> Result<(), JobError> {
    tracing::error!(env = env.as_str(), contract = contract_id, error = %e,
        "contract could not be finalized; recorded as stuck");
    // A database outage is not the contract's fault: the pass stops and retries next time.
    if let BillingError::Store(StoreError::Database(_) | StoreError::Unavailable(_)) = e {
        return Err(JobError::Store(StoreError::Unavailable(e.to_string())));
    }
    st.stores
        .invoices
        .record_job_failure(env, contract_id, &e.to_string(), st.now_ms())
        .await?;
    Ok(())
}

/// Runs [`run_jobs_once`] forever at the configured interval.
pub async fn run_jobs(st: AppState) {
    let mut tick = tokio::time::interval(st.settings.job_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let started = std::time::Instant::now();
        let result = match run_jobs_once(&st).await {
            Ok(Some(report)) => {
                metrics::counter!("tally_invoices_finalized_total").increment(report.finalized);
                metrics::gauge!("tally_job_failed_contracts")
                    .set(u32::try_from(report.failed).unwrap_or(u32::MAX));
                "ok"
            }
            Ok(None) => {
                tracing::debug!("another replica holds the job lock; skipping this pass");
                "skipped"
            }
            Err(e) => {
                tracing::warn!(error = %e, "background jobs failed; will retry");
                "error"
            }
        };
        metrics::counter!("tally_job_passes_total", "result" => result).increment(1);
        if result != "skipped" {
            metrics::histogram!("tally_job_pass_seconds").record(started.elapsed());
        }
    }
}

/// The environment's stuck contracts (at most [`MAX_STUCK_LISTED`]), oldest failure first.
pub async fn stuck_contracts(
    st: &AppState,
    env: Env,
) -> Result<Vec<crate::store::JobFailure>, JobError> {
    Ok(st
        .stores
        .invoices
        .job_failures(env, MAX_STUCK_LISTED)
        .await?)
}
