//! Native ingest with group commit.
//!
//! Handlers validate and pre-compute each event's contributions (CPU work, in parallel), then hand
//! them to one writer task. The writer takes what is queued at that moment, commits it in one
//! transaction (claim dedupe keys + merge usage, see `UsageStore::commit_ingest`), and only then
//! answers each request. Concurrent requests therefore share one fsync, and a 200 still means the
//! events are durable.
//!
//! A transaction holds at most [`MAX_GROUP_CONTRIBUTIONS`] hourly-row contributions (whole events,
//! at least one). A request past that (100 events matching hundreds of metrics) is committed over
//! several transactions, and between two of them the writer serves the requests queued behind it,
//! so one heavy request delays every other (in any environment) by one bounded transaction, not by
//! its whole cost. Exactly-once holds across the split because each event's dedupe claim commits
//! with its rows: if a later part fails, the request answers an error, the client retries it whole,
//! and the events already committed come back as duplicates.
//!
//! If a commit fails, every request with events in it gets the error; the events of that
//! transaction are not stored and their dedupe keys not claimed, so the retry is safe.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::store::{IngestItem, ItemOutcome, StoreError, StoreResult, UsageStore};
use crate::Clock;

/// Most hourly-row contributions one transaction takes (bounds its size and latency, and so how
/// long one request can hold the writer from the others). An event counts as at least one.
pub const MAX_GROUP_CONTRIBUTIONS: usize = 20_000;
/// Most requests waiting for the writer before submitters wait for room.
pub const QUEUE_DEPTH: usize = 4_096;

struct Job {
    items: Vec<IngestItem>,
    /// The error side is the group's failure, shared by every request in it.
    reply: oneshot::Sender<Result<Vec<ItemOutcome>, String>>,
}

/// A handle on the writer task.
#[derive(Clone)]
pub struct IngestHandle {
    tx: mpsc::Sender<Job>,
}

impl IngestHandle {
    pub fn spawn(store: Arc<dyn UsageStore>, clock: Arc<dyn Clock>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        tokio::spawn(writer(rx, store, clock));
        IngestHandle { tx }
    }

    /// Commits `items` durably; outcomes are in item order.
    pub async fn submit(&self, items: Vec<IngestItem>) -> StoreResult<Vec<ItemOutcome>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, rx) = oneshot::channel();
        let closed = || StoreError::Unavailable("the ingest writer has stopped".into());
        self.tx
            .send(Job { items, reply })
            .await
            .map_err(|_| closed())?;
        rx.await
            .map_err(|_| closed())?
            .map_err(StoreError::Unavailable)
    }
}

/// A request being committed: its uncommitted items (in order), the outcomes of those committed
/// so far, and its reply.
struct InFlight {
    rest: Vec<IngestItem>,
    outcomes: Vec<ItemOutcome>,
    reply: oneshot::Sender<Result<Vec<ItemOutcome>, String>>,
}

impl InFlight {
    fn new(job: Job) -> Self {
        InFlight {
            outcomes: Vec::with_capacity(job.items.len()),
            rest: job.items,
            reply: job.reply,
        }
    }

    /// How many of the uncommitted items fit in `budget` (at least one when `take_one`), and
    /// what they weigh.
    fn fits(&self, budget: usize, take_one: bool) -> (usize, usize) {
        let mut used = 0;
        let mut n = 0;
        for item in &self.rest {
            let w = item.contributions.len().max(1);
            if used + w > budget && !(take_one && n == 0) {
                break;
            }
            used += w;
            n += 1;
        }
        (n, used)
    }
}

async fn writer(mut rx: mpsc::Receiver<Job>, store: Arc<dyn UsageStore>, clock: Arc<dyn Clock>) {
    // Requests taken from the queue and not yet answered, in the order they are served.
    let mut open: VecDeque<InFlight> = VecDeque::new();
    loop {
        if open.is_empty() {
            let Some(job) = rx.recv().await else { return };
            open.push_back(InFlight::new(job));
        }
        // Fill one transaction: the open requests first, then whatever else is queued.
        let mut budget = MAX_GROUP_CONTRIBUTIONS;
        let mut takes: Vec<usize> = Vec::new();
        while budget > 0 || takes.is_empty() {
            if takes.len() == open.len() {
                match rx.try_recv() {
                    Ok(job) => open.push_back(InFlight::new(job)),
                    Err(_) => break,
                }
            }
            let (n, used) = open[takes.len()].fits(budget, takes.is_empty());
            if n == 0 {
                break;
            }
            budget = budget.saturating_sub(used);
            takes.push(n);
        }
        let mut items: Vec<IngestItem> = Vec::new();
        for (job, &n) in open.iter_mut().zip(&takes) {
            items.extend(job.rest.drain(..n));
        }
        let started = std::time::Instant::now();
        let result = store.commit_ingest(&items, clock.now_ms()).await;
        metrics::histogram!("tally_ingest_group_commit_seconds").record(started.elapsed());
        metrics::histogram!("tally_ingest_group_commit_events")
            .record(u32::try_from(items.len()).unwrap_or(u32::MAX));
        let served: Vec<InFlight> = open.drain(..takes.len()).collect();
        match result {
            Ok(outcomes) => {
                let mut outcomes = outcomes.into_iter();
                for (mut job, n) in served.into_iter().zip(takes) {
                    job.outcomes.extend(outcomes.by_ref().take(n));
                    if job.rest.is_empty() {
                        let _ = job.reply.send(Ok(job.outcomes));
                    } else {
                        // Partly committed: to the back, behind the requests that waited.
                        open.push_back(job);
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, requests = served.len(), "ingest group commit failed");
                metrics::counter!("tally_ingest_group_commit_failures_total").increment(1);
                for job in served {
                    let _ = job.reply.send(Err(e.to_string()));
                }
            }
        }
    }
}
