//! Group commit's bounded transactions: a request whose events make more hourly-row contributions
//! than one transaction takes (`ingest::MAX_GROUP_CONTRIBUTIONS`) is committed over several, still
//! exactly once, and the requests queued behind it are served between its parts.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::http::StatusCode;
use serde_json::{json, Value};
use tally_central::ingest::{IngestHandle, MAX_GROUP_CONTRIBUTIONS};
use tally_central::store::{
    self, BatchApplied, DeadLetter, Env, IngestItem, ItemOutcome, PoolOptions, StoreResult,
    UsageStore,
};
use tally_central::FixedClock;
use tally_core::accumulate::{Accumulator, PartialKey};
use tally_core::rating::UsageRow;
use tokio::sync::Notify;

use crate::support::*;

const NOW: &str = "2024-10-15T12:00:00Z";
const AT: &str = "2024-10-10T08:30:00Z";
const SBX: Env = Env::Sandbox;

/// 300 COUNT metrics on one event type make 100 events 30,000 contributions: two transactions.
#[tokio::test]
async fn a_request_past_one_transaction_commits_in_parts_exactly_once() {
    const METRICS: usize = 300;
    const { assert!(100 * METRICS > MAX_GROUP_CONTRIBUTIONS) };
    let app = TestApp::new(NOW).await;
    let mut metric_ids = Vec::new();
    for i in 0..METRICS {
        let body = json!({ "name": format!("calls {i}"), "event_type_filter": { "in_values": ["call"] },
                           "aggregation_type": "COUNT" });
        metric_ids.push(app.metric(SBX, body).await);
    }
    // Event 99 repeats event 0's id: they land in different transactions, and it still counts once.
    let mut events: Vec<Value> = (0..99)
        .map(|i| event(&format!("e{i}"), "acme", "call", AT, json!({})))
        .collect();
    events.push(event("e0", "acme", "call", AT, json!({})));
    let first = app.ingest(SBX, Value::Array(events.clone())).await;
    assert_eq!(
        first,
        json!({ "accepted": 99, "duplicates": 1, "rejected": [] })
    );
    // The whole request again: every event is a duplicate, nothing is counted twice.
    let again = app.ingest(SBX, Value::Array(events)).await;
    assert_eq!(
        again,
        json!({ "accepted": 0, "duplicates": 100, "rejected": [] })
    );

    let rows = app
        .state
        .stores
        .usage
        .usage_rows(
            SBX,
            &["acme".to_string()],
            &metric_ids,
            ms(AT) - DAY_MS,
            ms(AT) + DAY_MS,
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), METRICS, "one hourly row per metric");
    for row in &rows {
        assert_eq!(row.acc, Accumulator::Count(99), "metric {}", row.metric_id);
    }
    // And the API answers normally afterwards.
    app.get("/v1/billable-metrics?limit=1")
        .await
        .expect(StatusCode::OK);
}

/// A SQLite usage store whose first `commit_ingest` waits until released, recording which
/// transaction ids each commit held. Everything else is the real store.
struct Gated {
    inner: Arc<dyn UsageStore>,
    first: AtomicBool,
    entered: Notify,
    release: Notify,
    commits: Mutex<Vec<Vec<String>>>,
}

#[async_trait]
impl UsageStore for Gated {
    async fn commit_ingest(
        &self,
        items: &[IngestItem],
        now_ms: i64,
    ) -> StoreResult<Vec<ItemOutcome>> {
        let ids = items.iter().map(|i| i.transaction_id.clone()).collect();
        self.commits.lock().unwrap().push(ids);
        if self.first.swap(false, Ordering::SeqCst) {
            self.entered.notify_one();
            self.release.notified().await;
        }
        self.inner.commit_ingest(items, now_ms).await
    }
    async fn usage_rows(
        &self,
        env: Env,
        refs: &[String],
        metrics: &[String],
        from_ms: i64,
        to_ms: i64,
    ) -> StoreResult<Vec<UsageRow>> {
        self.inner
            .usage_rows(env, refs, metrics, from_ms, to_ms)
            .await
    }
    async fn level_rows(
        &self,
        env: Env,
        refs: &[String],
        metrics: &[String],
        range: tally_core::rollup::Range,
    ) -> StoreResult<Vec<UsageRow>> {
        self.inner.level_rows(env, refs, metrics, range).await
    }
    async fn compact_rollups(&self, limit: i64) -> StoreResult<tally_central::store::Compacted> {
        self.inner.compact_rollups(limit).await
    }
    async fn dirty_days(
        &self,
        env: Env,
        refs: &[String],
        metrics: &[String],
        from_ms: i64,
        to_ms: i64,
    ) -> StoreResult<Vec<i64>> {
        self.inner
            .dirty_days(env, refs, metrics, from_ms, to_ms)
            .await
    }
    async fn latest_rows_before(
        &self,
        env: Env,
        refs: &[String],
        metrics: &[String],
        before_ms: i64,
    ) -> StoreResult<Vec<UsageRow>> {
        self.inner
            .latest_rows_before(env, refs, metrics, before_ms)
            .await
    }
    async fn apply_batch(
        &self,
        shard_id: &str,
        seq: u64,
        partials: &[(Env, PartialKey, Accumulator)],
        events: &[tally_core::event::StoredEvent],
        now_ms: i64,
    ) -> StoreResult<BatchApplied> {
        self.inner
            .apply_batch(shard_id, seq, partials, events, now_ms)
            .await
    }
    async fn events_between(
        &self,
        env: Env,
        refs: &[String],
        from_ms: i64,
        to_ms: i64,
    ) -> StoreResult<Vec<tally_core::event::Event>> {
        self.inner.events_between(env, refs, from_ms, to_ms).await
    }
    async fn search_events(
        &self,
        env: Env,
        ids: &[String],
        since_ms: i64,
    ) -> StoreResult<Vec<tally_core::event::StoredEvent>> {
        self.inner.search_events(env, ids, since_ms).await
    }
    async fn prune_events(&self, before_ms: i64, limit: i64) -> StoreResult<u64> {
        self.inner.prune_events(before_ms, limit).await
    }
    async fn dead_letter_count(&self, env: Env) -> StoreResult<u64> {
        self.inner.dead_letter_count(env).await
    }
    async fn dead_letters(&self, env: Env, limit: i64) -> StoreResult<Vec<DeadLetter>> {
        self.inner.dead_letters(env, limit).await
    }
    async fn prune_dedupe(&self, before_ms: i64) -> StoreResult<u64> {
        self.inner.prune_dedupe(before_ms).await
    }
    async fn rollup_backlog(&self) -> StoreResult<u64> {
        self.inner.rollup_backlog().await
    }
    async fn claimed_transactions(&self, env: Env, ids: &[String]) -> StoreResult<Vec<String>> {
        self.inner.claimed_transactions(env, ids).await
    }
}

/// An event's item with `n` contributions (distinct hours of one metric).
fn item(env: Env, id: &str, n: usize) -> IngestItem {
    let contributions = (0..n)
        .map(|h| {
            let key = PartialKey {
                customer_ref: "acme".into(),
                metric_id: "m".into(),
                groups: Vec::new(),
                hour_ms: i64::try_from(h).unwrap() * HOUR_MS,
            };
            (key, Accumulator::Count(1))
        })
        .collect();
    IngestItem {
        env,
        transaction_id: id.into(),
        contributions,
        event: None,
    }
}

#[tokio::test]
async fn requests_queued_behind_a_heavy_one_are_served_between_its_parts() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let pool = PoolOptions {
        max_connections: 4,
        acquire_timeout: Duration::from_secs(10),
        connect_wait: Duration::from_secs(10),
    };
    let stores = store::open(&url, &pool).await.unwrap();
    let gated = Arc::new(Gated {
        inner: stores.usage.clone(),
        first: AtomicBool::new(true),
        entered: Notify::new(),
        release: Notify::new(),
        commits: Mutex::new(Vec::new()),
    });
    let handle = IngestHandle::spawn(gated.clone(), Arc::new(FixedClock::new(ms(NOW))));

    // Two heavy events that do not fit one transaction together, then a light request from the
    // other environment, queued while the first part is being committed.
    let part = MAX_GROUP_CONTRIBUTIONS / 2 + 1;
    let heavy = {
        let handle = handle.clone();
        tokio::spawn(async move {
            let items = vec![item(SBX, "h1", part), item(SBX, "h2", part)];
            handle.submit(items).await
        })
    };
    gated.entered.notified().await;
    let mut light = Box::pin(handle.submit(vec![item(Env::Production, "l1", 1)]));
    // One poll queues it (the queue has room), then it waits for its commit.
    assert!(tokio::time::timeout(Duration::from_millis(1), &mut light)
        .await
        .is_err());
    gated.release.notify_one();

    let light = light.await.unwrap();
    let heavy = heavy.await.unwrap().unwrap();
    assert_eq!(light, vec![ItemOutcome::Accepted]);
    assert_eq!(heavy, vec![ItemOutcome::Accepted, ItemOutcome::Accepted]);
    let commits = gated.commits.lock().unwrap().clone();
    assert_eq!(
        commits,
        vec![
            vec!["h1".to_string()],
            vec!["h2".to_string(), "l1".to_string()]
        ],
        "the light request rides in the heavy one's second part, not after all of it"
    );
}
