//! The backend-independent half of the usage store: what `commit_ingest` and `apply_batch` do, the
//! row encoding, and the SQL whose text is the same in both dialects.
//!
//! Each backend (`sqlite/usage.rs`, `postgres/usage.rs`) opens the transaction, implements the IO
//! traits of `tally_core::fold` over it (claim and release dedupe keys, load and write hourly rows,
//! record a batch and its dead letters) in its own dialect, calls [`commit_ingest`] or
//! [`apply_batch`] here, and commits. The fold itself is `tally_core::fold`, the same plan the
//! edge's shards run, so both backends and the edge merge identically and nothing is ever summed
//! in SQL.
//!
//! Rollups (issue 17, `tally_core::rollup`): above the hourly rows, rows of the same columns
//! for each UTC day (`usage_daily`), aligned span of 2, 4, 8 and 16 days (`usage_days2` ..
//! `usage_days16`) and calendar month (`usage_monthly`), keyed by the block's first hour. Ingest
//! and edge batches write only the hourly rows, and in the same transaction mark each
//! (customer ref, metric, UTC day) whose hours they changed as dirty (`usage_dirty`, one row per
//! day whatever the number of groups, so ingest pays almost nothing for the rollups). The
//! compactor ([`compact`], run in the background by `crate::rollups`) brings a dirty day's
//! rollups up to its hours: it merges the day's hourly rows afresh per group, and merges the
//! growth since the stored day row (`Accumulator::growth`) into the day and every block above
//! holding it, then clears the mark if no write came since. Readers read a dirty day hour by hour
//! ([`UsageStore::dirty_days`]), so what they see never depends on how far the compactor got.
//!
//! Invariants:
//! - A block row above the hour is exactly the merge of the hourly rows inside it, for every
//!   block that holds no dirty day; a dirty day's own rows may lag its hours, never lead them.
//! - A day is marked dirty in the transaction that changes one of its hourly rows.
//! - A row key is `(env, customer_ref, metric_id, hour_ms, groups)` with `groups` as canonical
//!   JSON, and an accumulator is stored as its serde JSON text, on both backends.
//! - Statements in [`sql`] use `$N` parameters, which SQLite and PostgreSQL both read; a query is
//!   written twice only where the dialects differ (multi-row values, arrays).

use std::future::Future;

use tally_core::accumulate::{Accumulator, MergeError, PartialKey};
use tally_core::batch::BatchPartial;
use tally_core::event::{Event, StoredEvent};
use tally_core::fold::{self, ClaimIo, RowIo};
use tally_core::rollup::Level;

use super::{BatchApplied, DeadLetter, Env, IngestItem, ItemOutcome, StoreError, StoreResult};

/// A partial's storage key: the `PartialKey` plus its environment, with groups as canonical JSON.
pub type RowKey = (Env, String, String, i64, String);

/// A row of one level: the fold's row key ([`RowIo::Row`] of both backends).
pub type LevelKey = (Level, RowKey);

/// A row to write: its key and the encoded accumulator.
pub type RowWrite = (RowKey, String);

/// The table holding the rows of `level` (all of `usage_hourly`'s columns).
pub fn table(level: Level) -> &'static str {
    match level {
        Level::Hour => "usage_hourly",
        Level::Day => "usage_daily",
        Level::Days2 => "usage_days2",
        Level::Days4 => "usage_days4",
        Level::Days8 => "usage_days8",
        Level::Days16 => "usage_days16",
        Level::Month => "usage_monthly",
    }
}

/// The rollup rows holding the day row `key` (its own first): where the day's growth is merged.
pub fn rollups_of(key: &RowKey) -> [LevelKey; 6] {
    Level::ROLLUPS.map(|level| {
        let mut k = key.clone();
        k.3 = level.block_start(key.3);
        (level, k)
    })
}

/// `rows` (sorted by level) split by level, in level order, each level's keys and values.
pub fn by_level<V>(rows: Vec<(LevelKey, V)>) -> Vec<(Level, Vec<(RowKey, V)>)> {
    let mut out: Vec<(Level, Vec<(RowKey, V)>)> = Vec::new();
    for ((level, key), v) in rows {
        match out.last_mut() {
            Some((l, keys)) if *l == level => keys.push((key, v)),
            _ => out.push((level, vec![(key, v)])),
        }
    }
    out
}

/// A (customer ref, metric, UTC day) whose hours changed: `(env, customer_ref, metric_id,
/// day_ms)`.
pub type DayKey = (Env, String, String, i64);

/// A dirty day as the compactor reads it: its key and the write count it was read at.
pub type DirtyDay = (DayKey, i64);

/// The distinct days of the hourly rows `keys`, sorted.
pub fn days_of<'a>(keys: impl Iterator<Item = &'a RowKey>) -> Vec<DayKey> {
    let days: std::collections::BTreeSet<DayKey> = keys
        .map(|k| (k.0, k.1.clone(), k.2.clone(), Level::Day.block_start(k.3)))
        .collect();
    days.into_iter().collect()
}

/// `SELECT transaction_id FROM dedupe` of `env` among `ids` (`UsageStore::claimed_transactions`).
pub fn claimed_query<'a, DB>(env: Env, ids: &'a [String]) -> sqlx::QueryBuilder<'a, DB>
where
    DB: sqlx::Database,
    &'a str: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    let mut q = sqlx::QueryBuilder::new("SELECT transaction_id FROM dedupe WHERE env = ");
    q.push_bind(env.as_str()).push(" AND transaction_id IN (");
    let mut list = q.separated(", ");
    for id in ids {
        list.push_bind(id.as_str());
    }
    list.push_unseparated(")");
    q
}

/// A dedupe key as the stores claim it.
pub type Claim<'a> = (Env, &'a str);

/// Statements with one meaning and one text on both backends.
pub mod sql {
    /// Records an edge batch; a replay inserts nothing.
    pub const RECORD_BATCH: &str = "INSERT INTO applied_batches (shard_id, seq, applied_ms)
         VALUES ($1, $2, $3) ON CONFLICT DO NOTHING";
    pub const DEAD_LETTER_COUNT: &str = "SELECT count(*) FROM dead_letters WHERE env = $1";
    pub const DEAD_LETTERS: &str =
        "SELECT shard_id, seq, partial_index, partial, reason, recorded_ms FROM dead_letters
         WHERE env = $1 ORDER BY shard_id, seq, partial_index LIMIT $2";
    pub const PRUNE_DEDUPE: &str = "DELETE FROM dedupe WHERE recorded_ms < $1";
    /// Marks a day dirty, or counts one more write to a dirty day (after `VALUES` or a select
    /// of `(env, customer_ref, metric_id, day_ms, 1)` rows).
    pub const TOUCH_DAYS_CONFLICT: &str =
        " ON CONFLICT (env, customer_ref, metric_id, day_ms) DO UPDATE SET gen = usage_dirty.gen + 1";
    /// Dirty days the compactor can take, oldest first, at most `$1`: not those that failed at
    /// their current write count.
    pub const DIRTY_DAYS: &str = "SELECT env, customer_ref, metric_id, day_ms, gen FROM usage_dirty
         WHERE failed_gen IS NULL OR failed_gen <> gen
         ORDER BY day_ms, env, customer_ref, metric_id LIMIT $1";
    /// How many dirty days the compactor can take.
    pub const DIRTY_PENDING: &str =
        "SELECT count(*) FROM usage_dirty WHERE failed_gen IS NULL OR failed_gen <> gen";
    /// The hourly rows `(groups, acc)` of one (customer ref, metric) in `[$4, $5)`.
    pub const HOURS_OF_DAY: &str = "SELECT groups, acc FROM usage_hourly
         WHERE env = $1 AND customer_ref = $2 AND metric_id = $3 AND hour_ms >= $4 AND hour_ms < $5";
    /// Clears a day's mark if no write came since the compactor read it at gen `$5`.
    pub const CLEAR_DAY: &str = "DELETE FROM usage_dirty
         WHERE env = $1 AND customer_ref = $2 AND metric_id = $3 AND day_ms = $4 AND gen = $5";
    /// Records that a day could not be rolled up at gen `$5`.
    pub const FAIL_DAY: &str = "UPDATE usage_dirty SET failed_gen = $5
         WHERE env = $1 AND customer_ref = $2 AND metric_id = $3 AND day_ms = $4";
    /// The metrics version: the number of billable metrics in every environment. Not MAX(seq):
    /// identity values of concurrent inserts (two replicas) can commit out of order, so a later
    /// commit may carry a smaller seq and leave MAX unchanged. Metrics are never deleted, so the
    /// count grows with every commit that adds one.
    pub const METRICS_VERSION: &str =
        "SELECT COUNT(*) FROM documents WHERE kind = 'billable_metric'";
    /// The columns of an `events` row, in [`super::EventRow`] order.
    pub const EVENT_COLUMNS: &str = "env, transaction_id, duplicate, customer_ref, event_type, \
         timestamp_ms, properties, matched_metrics, processed_ms";
    /// After the counted rows' `VALUES`: a row already stored (a replayed edge batch) stays.
    pub const COUNTED_CONFLICT: &str = " ON CONFLICT DO NOTHING";
    /// After the duplicate rows' `VALUES`: the latest duplicate delivery replaces the one before.
    pub const DUPLICATE_CONFLICT: &str =
        " ON CONFLICT (env, transaction_id, duplicate) DO UPDATE SET
         customer_ref = excluded.customer_ref, event_type = excluded.event_type,
         timestamp_ms = excluded.timestamp_ms, properties = excluded.properties,
         matched_metrics = excluded.matched_metrics, processed_ms = excluded.processed_ms";
    /// Deletes at most `$2` events whose timestamp is before `$1` (index `events_by_time`).
    pub const PRUNE_EVENTS: &str = "DELETE FROM events WHERE (env, transaction_id, duplicate) IN
         (SELECT env, transaction_id, duplicate FROM events WHERE timestamp_ms < $1
          ORDER BY timestamp_ms LIMIT $2)";
}

/// An `events` row as written and read ([`sql::EVENT_COLUMNS`] order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    pub env: Env,
    pub transaction_id: String,
    pub duplicate: bool,
    pub customer_ref: String,
    pub event_type: String,
    pub timestamp_ms: i64,
    /// Canonical JSON object of the exact text values.
    pub properties: String,
    /// Sorted JSON array of metric ids.
    pub matched_metrics: String,
    pub processed_ms: i64,
}

impl EventRow {
    pub fn new(
        env: Env,
        event: &Event,
        matched: &[&str],
        processed_ms: i64,
        duplicate: bool,
    ) -> StoreResult<Self> {
        let encode = |e: serde_json::Error| StoreError::Corrupt(format!("encoding an event: {e}"));
        Ok(EventRow {
            env,
            transaction_id: event.transaction_id.clone(),
            duplicate,
            customer_ref: event.customer_id.clone(),
            event_type: event.event_type.clone(),
            timestamp_ms: event.timestamp_ms,
            properties: serde_json::to_string(&event.properties).map_err(encode)?,
            matched_metrics: serde_json::to_string(matched).map_err(encode)?,
            processed_ms,
        })
    }

    /// A row from its [`sql::EVENT_COLUMNS`].
    pub fn from_columns(
        (
            env,
            transaction_id,
            duplicate,
            customer_ref,
            event_type,
            timestamp_ms,
            properties,
            matched_metrics,
            processed_ms,
        ): EventColumns,
    ) -> StoreResult<Self> {
        Ok(EventRow {
            env: parse_env(&env)?,
            transaction_id,
            duplicate: duplicate != 0,
            customer_ref,
            event_type,
            timestamp_ms,
            properties,
            matched_metrics,
            processed_ms,
        })
    }

    /// An edge-forwarded event's row (its environment parsed; the caller checked it).
    pub fn of_stored(e: &StoredEvent) -> StoreResult<Self> {
        let mut matched: Vec<&str> = e.matched_metrics.iter().map(String::as_str).collect();
        matched.sort_unstable();
        matched.dedup();
        EventRow::new(
            parse_env(&e.env)?,
            &e.event,
            &matched,
            e.processed_ms,
            e.duplicate,
        )
    }

    /// The row as the event store answers it.
    pub fn into_stored(self) -> StoreResult<StoredEvent> {
        let corrupt = |e: serde_json::Error| StoreError::Corrupt(format!("stored event: {e}"));
        Ok(StoredEvent {
            env: self.env.as_str().to_string(),
            event: Event {
                transaction_id: self.transaction_id,
                customer_id: self.customer_ref,
                event_type: self.event_type,
                timestamp_ms: self.timestamp_ms,
                properties: serde_json::from_str(&self.properties).map_err(corrupt)?,
            },
            matched_metrics: serde_json::from_str(&self.matched_metrics).map_err(corrupt)?,
            processed_ms: self.processed_ms,
            duplicate: self.duplicate,
        })
    }
}

/// An `events` row as selected ([`sql::EVENT_COLUMNS`]).
pub type EventColumns = (
    String,
    String,
    i64,
    String,
    String,
    i64,
    String,
    String,
    i64,
);

/// Selected rows as stored events.
pub fn stored_events(rows: Vec<EventColumns>) -> StoreResult<Vec<StoredEvent>> {
    rows.into_iter()
        .map(|r| EventRow::from_columns(r)?.into_stored())
        .collect()
}

/// Splits event rows into counted rows and duplicate rows, keeping the last duplicate row of
/// each transaction id (one statement may not upsert a row twice on PostgreSQL).
pub fn split_events(rows: Vec<EventRow>) -> (Vec<EventRow>, Vec<EventRow>) {
    let (mut duplicates, counted): (Vec<EventRow>, Vec<EventRow>) =
        rows.into_iter().partition(|r| r.duplicate);
    let mut seen = std::collections::HashSet::new();
    duplicates.reverse();
    duplicates.retain(|r| seen.insert((r.env, r.transaction_id.clone())));
    duplicates.reverse();
    (counted, duplicates)
}

/// A transaction that writes the event store.
pub trait EventTx {
    /// Inserts `counted` rows ([`sql::COUNTED_CONFLICT`]) and upserts `duplicates` (at most one
    /// per transaction id, [`sql::DUPLICATE_CONFLICT`]).
    fn insert_events(
        &mut self,
        counted: &[EventRow],
        duplicates: &[EventRow],
    ) -> impl Future<Output = StoreResult<()>> + Send;
}

/// Writes `rows` through `tx` (nothing when there are none).
pub async fn write_events<T: EventTx>(tx: &mut T, rows: Vec<EventRow>) -> StoreResult<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let (counted, duplicates) = split_events(rows);
    tx.insert_events(&counted, &duplicates).await
}

/// A transaction that marks the days whose hours it changed ([`sql::TOUCH_DAYS_CONFLICT`]).
pub trait TouchTx {
    fn touch_days(&mut self, days: &[DayKey]) -> impl Future<Output = StoreResult<()>> + Send;
}

/// A transaction that can apply an edge batch: the rows, plus its two batch-only writes.
pub trait BatchTx: RowIo<Row = LevelKey, Error = StoreError> + TouchTx + EventTx {
    /// Records `(shard_id, seq)` ([`sql::RECORD_BATCH`]); false when it was already applied.
    fn record_batch(
        &mut self,
        shard_id: &str,
        seq: i64,
        now_ms: i64,
    ) -> impl Future<Output = StoreResult<bool>> + Send;
    fn insert_dead_letters(
        &mut self,
        dead: &[DeadLetter],
    ) -> impl Future<Output = StoreResult<()>> + Send;
}

/// Native ingest in the caller's transaction `tx`: the core plan over the items' hourly row
/// keys, then the days of the accepted items marked dirty, then the items' events stored (an
/// accepted event as counted, a duplicate as its id's latest duplicate; a rejected one not at
/// all), each with the ids of the metrics it contributes to and `processed_ms`.
pub async fn commit_ingest<'a, T>(
    tx: &mut T,
    items: &'a [IngestItem],
    processed_ms: i64,
) -> StoreResult<Vec<ItemOutcome>>
where
    T: ClaimIo<Row = LevelKey, Claim = Claim<'a>, Error = StoreError> + TouchTx + EventTx,
{
    let keyed = items
        .iter()
        .map(|item| {
            let contributions = item
                .contributions
                .iter()
                .map(|(key, acc)| Ok(((Level::Hour, row_key(item.env, key)?), acc)))
                .collect::<StoreResult<Vec<_>>>()?;
            Ok(fold::Item {
                claim: (item.env, item.transaction_id.as_str()),
                contributions,
            })
        })
        .collect::<StoreResult<Vec<_>>>()?;
    let outcomes = fold::ingest(tx, &keyed).await?;
    let days = days_of(
        keyed
            .iter()
            .zip(&outcomes)
            .filter(|(_, o)| **o == ItemOutcome::Accepted)
            .flat_map(|(item, _)| item.contributions.iter().map(|((_, key), _)| key)),
    );
    tx.touch_days(&days).await?;
    let mut events = Vec::new();
    for (item, outcome) in items.iter().zip(&outcomes) {
        let duplicate = match outcome {
            ItemOutcome::Accepted => false,
            ItemOutcome::Duplicate => true,
            ItemOutcome::Rejected(_) => continue,
        };
        let Some(event) = &item.event else { continue };
        let mut matched: Vec<&str> = item
            .contributions
            .iter()
            .map(|(key, _)| key.metric_id.as_str())
            .collect();
        matched.sort_unstable();
        matched.dedup();
        events.push(EventRow::new(
            item.env,
            event,
            &matched,
            processed_ms,
            duplicate,
        )?);
    }
    write_events(tx, events).await?;
    Ok(outcomes)
}

/// Applies an edge batch in the caller's transaction `tx`: records `(shard_id, seq)`, merges each
/// partial on its own, keeps those that cannot merge as dead letters, and marks the days of the
/// rest dirty.
///
/// A partial is the pre-aggregate of events the edge already acknowledged, so unlike an ingested
/// event it cannot be refused to its sender; and failing the whole batch would make its shard
/// resend it forever, blocking every later batch. So a partial whose merge fails changes no row
/// and is kept as a dead letter, and the rest of the batch applies.
pub async fn apply_batch<T: BatchTx>(
    tx: &mut T,
    shard_id: &str,
    seq: u64,
    partials: &[(Env, PartialKey, Accumulator)],
    events: &[StoredEvent],
    now_ms: i64,
) -> StoreResult<BatchApplied> {
    let seq_i =
        i64::try_from(seq).map_err(|_| StoreError::Corrupt("batch seq out of range".into()))?;
    if !tx.record_batch(shard_id, seq_i, now_ms).await? {
        return Ok(BatchApplied {
            applied: false,
            dead_letters: Vec::new(),
        });
    }
    let rows = partials
        .iter()
        .map(|(env, key, acc)| Ok([((Level::Hour, row_key(*env, key)?), acc)]))
        .collect::<StoreResult<Vec<_>>>()?;
    let items: Vec<&[(LevelKey, &Accumulator)]> = rows.iter().map(|r| r.as_slice()).collect();
    let failed = fold::merge_items(tx, &items).await?;
    let dead: std::collections::BTreeSet<usize> = failed.iter().map(|(i, _)| *i).collect();
    let days = days_of(
        rows.iter()
            .enumerate()
            .filter(|(i, _)| !dead.contains(i))
            .map(|(_, [((_, key), _)])| key),
    );
    tx.touch_days(&days).await?;
    let events = events
        .iter()
        .map(EventRow::of_stored)
        .collect::<StoreResult<Vec<_>>>()?;
    write_events(tx, events).await?;
    let dead_letters = failed
        .into_iter()
        .map(|(index, e)| dead_letter(shard_id, seq, index, &partials[index], e, now_ms))
        .collect::<StoreResult<Vec<_>>>()?;
    if !dead_letters.is_empty() {
        tx.insert_dead_letters(&dead_letters).await?;
    }
    Ok(BatchApplied {
        applied: true,
        dead_letters,
    })
}

/// The tables of one usage transaction, in the backend's dialect: what [`load_levels`] and
/// [`write_levels`] (the backends' `RowIo`) run per level.
pub trait TableIo {
    /// The stored accumulators of those of `keys` that exist in `table`.
    fn load_table(
        &mut self,
        table: &'static str,
        keys: &[RowKey],
    ) -> impl Future<Output = StoreResult<Vec<(RowKey, Accumulator)>>> + Send;
    /// Inserts or replaces `rows` in `table`.
    fn write_table(
        &mut self,
        table: &'static str,
        rows: &[RowWrite],
    ) -> impl Future<Output = StoreResult<()>> + Send;
}

/// `RowIo::load` of both backends: each level's keys from its table.
pub async fn load_levels<T: TableIo>(
    tx: &mut T,
    rows: &[LevelKey],
) -> StoreResult<Vec<(LevelKey, Accumulator)>> {
    let mut out = Vec::new();
    for (level, keys) in by_level(rows.iter().map(|k| (k.clone(), ())).collect()) {
        let keys: Vec<RowKey> = keys.into_iter().map(|(k, ())| k).collect();
        let found = tx.load_table(table(level), &keys).await?;
        out.extend(found.into_iter().map(|(k, acc)| ((level, k), acc)));
    }
    Ok(out)
}

/// `RowIo::write` of both backends: each level's rows into its table.
pub async fn write_levels<T: TableIo>(
    tx: &mut T,
    rows: Vec<(LevelKey, Accumulator)>,
) -> StoreResult<()> {
    for (level, rows) in by_level(rows) {
        tx.write_table(table(level), &encode_rows(rows)?).await?;
    }
    Ok(())
}

/// A usage transaction the compactor runs in ([`compact`]).
pub trait CompactTx: RowIo<Row = LevelKey, Error = StoreError> {
    /// At most `limit` dirty days ([`sql::DIRTY_DAYS`]).
    fn dirty_days(&mut self, limit: i64)
        -> impl Future<Output = StoreResult<Vec<DirtyDay>>> + Send;
    /// The hourly rows `(groups, acc)` of a day ([`sql::HOURS_OF_DAY`]).
    fn hours_of(
        &mut self,
        day: &DayKey,
    ) -> impl Future<Output = StoreResult<Vec<(String, Accumulator)>>> + Send;
    /// Clears the day's mark at `gen`, or records that it failed there ([`sql::CLEAR_DAY`],
    /// [`sql::FAIL_DAY`]).
    fn settle(
        &mut self,
        day: &DirtyDay,
        failed: bool,
    ) -> impl Future<Output = StoreResult<()>> + Send;
}

/// What one [`compact`] run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Compacted {
    /// Dirty days taken.
    pub days: usize,
    /// Of those, days that could not be rolled up (a block's total past the decimal range):
    /// they stay dirty, read hour by hour, until written again.
    pub failed: usize,
    /// Days the compactor could take when the run began (its backlog; set by
    /// `UsageStore::compact_rollups`).
    pub pending: u64,
}

impl Compacted {
    /// Days still waiting after this run (writes since it began not counted).
    pub fn left(&self) -> u64 {
        let rolled = u64::try_from(self.days.saturating_sub(self.failed)).unwrap_or(u64::MAX);
        self.pending.saturating_sub(rolled)
    }
}

/// Rolls up at most `limit` dirty days in the caller's usage transaction `tx` (module docs):
/// per day and group, the growth from the stored day row to the merge of the day's hours is
/// merged into the day row and every block above holding it, with the same fold as ingest.
pub async fn compact<T: CompactTx>(tx: &mut T, limit: i64) -> StoreResult<Compacted> {
    let days = tx.dirty_days(limit).await?;
    let mut failed = vec![false; days.len()];
    // Each day's groups merged afresh from its hours.
    let mut fresh: Vec<(usize, RowKey, Accumulator)> = Vec::new();
    for (i, ((env, customer_ref, metric_id, day_ms), _)) in days.iter().enumerate() {
        let day = (*env, customer_ref.clone(), metric_id.clone(), *day_ms);
        let mut groups: std::collections::BTreeMap<String, Accumulator> = Default::default();
        for (g, acc) in tx.hours_of(&day).await? {
            match groups.get_mut(&g) {
                Some(total) => {
                    if total.merge(&acc).is_err() {
                        failed[i] = true;
                    }
                }
                None => {
                    groups.insert(g, acc);
                }
            }
        }
        fresh.extend(groups.into_iter().map(|(g, acc)| {
            let key = (*env, customer_ref.clone(), metric_id.clone(), *day_ms, g);
            (i, key, acc)
        }));
    }
    let day_keys: Vec<LevelKey> = fresh
        .iter()
        .map(|(_, key, _)| (Level::Day, key.clone()))
        .collect();
    let stored: std::collections::HashMap<LevelKey, Accumulator> =
        tx.load(&day_keys).await?.into_iter().collect();
    let mut growths: Vec<(usize, RowKey, Accumulator)> = Vec::new();
    for (i, key, acc) in fresh {
        if failed[i] {
            continue;
        }
        match Accumulator::growth(stored.get(&(Level::Day, key.clone())), &acc) {
            Ok(Some(g)) => growths.push((i, key, g)),
            Ok(None) => {}
            Err(_) => failed[i] = true,
        }
    }
    growths.retain(|(i, _, _)| !failed[*i]);
    let rows: Vec<Vec<(LevelKey, &Accumulator)>> = growths
        .iter()
        .map(|(_, key, g)| rollups_of(key).into_iter().map(|k| (k, g)).collect())
        .collect();
    let items: Vec<&[(LevelKey, &Accumulator)]> = rows.iter().map(|r| r.as_slice()).collect();
    for (index, _) in fold::merge_items(tx, &items).await? {
        failed[growths[index].0] = true;
    }
    for (day, failed) in days.iter().zip(&failed) {
        tx.settle(day, *failed).await?;
    }
    Ok(Compacted {
        days: days.len(),
        failed: failed.iter().filter(|f| **f).count(),
        pending: 0,
    })
}

fn dead_letter(
    shard_id: &str,
    seq: u64,
    index: usize,
    (env, key, acc): &(Env, PartialKey, Accumulator),
    e: MergeError,
    now_ms: i64,
) -> StoreResult<DeadLetter> {
    let partial = serde_json::to_string(&BatchPartial {
        env: env.as_str().to_string(),
        key: key.clone(),
        acc: acc.clone(),
    })
    .map_err(|e| StoreError::Corrupt(format!("encoding a dead letter: {e}")))?;
    Ok(DeadLetter {
        shard_id: shard_id.to_string(),
        seq,
        index: u64::try_from(index).unwrap_or(u64::MAX),
        env: *env,
        partial,
        reason: format!("partial not merged: {e}"),
        recorded_ms: now_ms,
    })
}

pub fn row_key(env: Env, key: &PartialKey) -> StoreResult<RowKey> {
    let groups =
        serde_json::to_string(&key.groups).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok((
        env,
        key.customer_ref.clone(),
        key.metric_id.clone(),
        key.hour_ms,
        groups,
    ))
}

/// Rows as written: accumulators encoded as their JSON text.
pub fn encode_rows(rows: Vec<(RowKey, Accumulator)>) -> StoreResult<Vec<RowWrite>> {
    rows.into_iter()
        .map(|(key, acc)| Ok((key, encode_acc(&acc)?)))
        .collect()
}

pub fn decode_acc(text: &str) -> StoreResult<Accumulator> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("accumulator: {e}")))
}

pub fn encode_acc(acc: &Accumulator) -> StoreResult<String> {
    serde_json::to_string(acc).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Usage rows sent as one JSON array of `[metric_id, hour_ms, groups, acc]` (the stores'
/// `usage_blocks`: one value instead of a result row each, which the drivers hand over one by
/// one at a cost above reading them).
pub fn decode_rows(text: &str) -> StoreResult<Vec<tally_core::rating::UsageRow>> {
    let rows: Vec<(String, i64, Vec<Option<String>>, Accumulator)> =
        serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("usage rows: {e}")))?;
    Ok(rows
        .into_iter()
        .map(
            |(metric_id, hour_ms, groups, acc)| tally_core::rating::UsageRow {
                metric_id,
                hour_ms,
                groups,
                acc,
            },
        )
        .collect())
}

pub fn decode_groups(text: &str) -> StoreResult<Vec<Option<String>>> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("groups: {e}")))
}

pub fn parse_env(text: &str) -> StoreResult<Env> {
    Env::parse(text).ok_or_else(|| StoreError::Corrupt(format!("environment {text:?}")))
}

/// A stored dead letter from its columns `(shard_id, seq, partial_index, partial, reason,
/// recorded_ms)`, in [`sql::DEAD_LETTERS`] order.
pub fn dead_letter_row(
    env: Env,
    (shard_id, seq, index, partial, reason, recorded_ms): (String, i64, i64, String, String, i64),
) -> DeadLetter {
    DeadLetter {
        shard_id,
        seq: u64::try_from(seq).unwrap_or(0),
        index: u64::try_from(index).unwrap_or(0),
        env,
        partial,
        reason,
        recorded_ms,
    }
}
