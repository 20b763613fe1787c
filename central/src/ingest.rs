//! Native ingest with group commit.
//!
//! Handlers validate and pre-compute each event's contributions (CPU work, in parallel), then hand
//! them to one writer task. The writer takes everything queued at that moment, commits it in one
//! transaction (claim dedupe keys + merge usage, see `UsageStore::commit_ingest`), and only then
//! answers each request. Concurrent requests therefore share one fsync, and a 200 still means the
//! events are durable. If the commit fails, every request in the group gets the error and nothing
//! of the group is stored; the client's retry is safe because dedupe keys were not claimed.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::store::{IngestItem, ItemOutcome, StoreError, StoreResult, UsageStore};
use crate::Clock;

/// Most events one group commit takes (bounds the transaction's size and latency).
pub const MAX_GROUP_EVENTS: usize = 20_000;
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

async fn writer(mut rx: mpsc::Receiver<Job>, store: Arc<dyn UsageStore>, clock: Arc<dyn Clock>) {
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        let mut events = jobs[0].items.len();
        while events < MAX_GROUP_EVENTS {
            match rx.try_recv() {
                Ok(job) => {
                    events += job.items.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        let mut items: Vec<IngestItem> = Vec::with_capacity(events);
        let mut replies = Vec::with_capacity(jobs.len());
        for job in jobs {
            replies.push((job.items.len(), job.reply));
            items.extend(job.items);
        }
        let result = store.commit_ingest(&items, clock.now_ms()).await;
        match result {
            Ok(outcomes) => {
                let mut rest = outcomes.into_iter();
                for (len, reply) in replies {
                    let mine: Vec<ItemOutcome> = rest.by_ref().take(len).collect();
                    let _ = reply.send(Ok(mine));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, requests = replies.len(), "ingest group commit failed");
                for (_, reply) in replies {
                    let _ = reply.send(Err(e.to_string()));
                }
            }
        }
    }
}
