//! The background compactor of usage rollups: brings the rollup rows of the days ingest marked
//! dirty up to their hours (`store::usage::compact`), so draft reads read a few rows per group
//! instead of every hour of the period.
//!
//! It runs in every process (each replica's compactor takes the usage lock, so they never
//! interleave on a day). Correctness never waits on it: readers read dirty days hour by hour.
//! Only speed does: under steady ingest the current day is dirty again after each run, and a run
//! rereads that day's hours, so the compactor pauses between runs for at least
//! [`MIN_PAUSE`] and twice its last run's time, keeping it to a third of one writer's time at
//! most.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::store::UsageStore;

/// Dirty days rolled up per transaction (bounds its length and memory).
pub const DAYS_PER_RUN: i64 = 64;
/// The shortest pause between two runs.
pub const MIN_PAUSE: Duration = Duration::from_millis(200);

/// Starts the compactor task (needs a Tokio runtime); it runs until the runtime stops.
pub fn spawn(store: Arc<dyn UsageStore>) {
    tokio::spawn(async move {
        loop {
            let started = Instant::now();
            // The backlog before the run, so a long run shows as one (not as the last run's 0).
            let backlog = match store.rollup_backlog().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the usage rollup backlog failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            set_backlog(backlog);
            if backlog == 0 {
                tokio::time::sleep(MIN_PAUSE).await;
                continue;
            }
            let pause = match store.compact_rollups(DAYS_PER_RUN).await {
                Ok(done) => {
                    if done.failed > 0 {
                        tracing::warn!(
                            days = done.failed,
                            "usage days whose rollup would pass the decimal range are read by the hour"
                        );
                    }
                    metrics::counter!("tally_rollup_days_total")
                        .increment(u64::try_from(done.days).unwrap_or(0));
                    set_backlog(done.left());
                    // A full run means more are waiting: go on after the pause.
                    MIN_PAUSE.max(started.elapsed() * 2)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "usage rollup compaction failed; retrying");
                    MIN_PAUSE.max(Duration::from_secs(1))
                }
            };
            tokio::time::sleep(pause).await;
        }
    });
}

/// The backlog gauge: dirty days whose reads go by the hour until rolled up.
fn set_backlog(days: u64) {
    metrics::gauge!("tally_rollup_days_pending").set(u32::try_from(days).unwrap_or(u32::MAX));
}
