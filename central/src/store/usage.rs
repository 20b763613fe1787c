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
//! Rollups (issue 17, `tally_core::rollup`): every hourly row has a day row (`usage_daily`) and a
//! month row (`usage_monthly`) holding it, of the same columns, keyed by the block's first hour.
//! Each contribution to an hour is folded into its three rows as one item ([`at_levels`]), so
//! the levels change together or not at all (an event or partial that would overflow its month
//! total is refused like one overflowing its hour), in the transaction that merges the hour.
//! Rows stored before the rollups existed are rolled up once at start ([`build_rollups`]).
//!
//! Invariants:
//! - The day and month rows are exactly the merge of the hourly rows inside their block.
//! - A row key is `(env, customer_ref, metric_id, hour_ms, groups)` with `groups` as canonical
//!   JSON, and an accumulator is stored as its serde JSON text, on both backends.
//! - Statements in [`sql`] use `$N` parameters, which SQLite and PostgreSQL both read; a query is
//!   written twice only where the dialects differ (multi-row values, arrays).

use std::future::Future;

use tally_core::accumulate::{Accumulator, MergeError, PartialKey};
use tally_core::batch::BatchPartial;
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
        Level::Month => "usage_monthly",
    }
}

/// The hourly row `key` and the day and month rows holding it: where a contribution to the hour
/// is folded.
pub fn at_levels(key: RowKey) -> [LevelKey; 3] {
    Level::ALL.map(|level| {
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
    /// Takes the one-time rollup build ([`super::build_rollups`]): one row deleted when pending.
    pub const TAKE_ROLLUP_BUILD: &str = "DELETE FROM usage_rollups_pending";
    /// The hourly rows after the key `($1..$5)` in key order, at most `$6`.
    pub const HOURLY_PAGE: &str =
        "SELECT env, customer_ref, metric_id, hour_ms, groups, acc FROM usage_hourly
         WHERE (env, customer_ref, metric_id, hour_ms, groups) > ($1, $2, $3, $4, $5)
         ORDER BY env, customer_ref, metric_id, hour_ms, groups LIMIT $6";
    /// The metrics version: the number of billable metrics in every environment. Not MAX(seq):
    /// identity values of concurrent inserts (two replicas) can commit out of order, so a later
    /// commit may carry a smaller seq and leave MAX unchanged. Metrics are never deleted, so the
    /// count grows with every commit that adds one.
    pub const METRICS_VERSION: &str =
        "SELECT COUNT(*) FROM documents WHERE kind = 'billable_metric'";
}

/// A transaction that can apply an edge batch: the rows, plus its two batch-only writes.
pub trait BatchTx: RowIo<Row = LevelKey, Error = StoreError> {
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

/// Native ingest in the caller's transaction `tx`: the core plan over the items' row keys.
pub async fn commit_ingest<'a, T>(
    tx: &mut T,
    items: &'a [IngestItem],
) -> StoreResult<Vec<ItemOutcome>>
where
    T: ClaimIo<Row = LevelKey, Claim = Claim<'a>, Error = StoreError>,
{
    let items = items
        .iter()
        .map(|item| {
            let mut contributions = Vec::with_capacity(3 * item.contributions.len());
            for (key, acc) in &item.contributions {
                let rows = at_levels(row_key(item.env, key)?);
                contributions.extend(rows.into_iter().map(|k| (k, acc)));
            }
            Ok(fold::Item {
                claim: (item.env, item.transaction_id.as_str()),
                contributions,
            })
        })
        .collect::<StoreResult<Vec<_>>>()?;
    fold::ingest(tx, &items).await
}

/// Applies an edge batch in the caller's transaction `tx`: records `(shard_id, seq)`, merges each
/// partial on its own, and keeps those that cannot merge as dead letters.
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
        .map(|(env, key, acc)| Ok(at_levels(row_key(*env, key)?).map(|k| (k, acc))))
        .collect::<StoreResult<Vec<_>>>()?;
    let items: Vec<&[(LevelKey, &Accumulator)]> = rows.iter().map(|r| r.as_slice()).collect();
    let dead_letters = fold::merge_items(tx, &items)
        .await?
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

/// A usage transaction that can build the rollups of rows stored before them.
pub trait RollupTx: RowIo<Row = LevelKey, Error = StoreError> {
    /// Takes the pending build ([`sql::TAKE_ROLLUP_BUILD`]); false when there is none.
    fn take_rollup_build(&mut self) -> impl Future<Output = StoreResult<bool>> + Send;
    /// The hourly rows after `after` (from the first when `None`) in key order, at most `limit`
    /// ([`sql::HOURLY_PAGE`]).
    fn hourly_page(
        &mut self,
        after: Option<&RowKey>,
        limit: i64,
    ) -> impl Future<Output = StoreResult<Vec<(RowKey, Accumulator)>>> + Send;
}

/// Hourly rows rolled up per page of [`build_rollups`] (bounds its memory).
const BUILD_PAGE: i64 = 10_000;

/// The one-time build of the day and month rows of the hourly rows stored before the rollups
/// existed, in the caller's usage transaction `tx`: merged into the rollup rows page by page
/// with the same fold as ingest. Returns how many hourly rows it rolled up (0 when no build was
/// pending: already done, or by another replica).
pub async fn build_rollups<T: RollupTx>(tx: &mut T) -> StoreResult<u64> {
    if !tx.take_rollup_build().await? {
        return Ok(0);
    }
    let mut after: Option<RowKey> = None;
    let mut done = 0u64;
    loop {
        let page = tx.hourly_page(after.as_ref(), BUILD_PAGE).await?;
        let Some((last, _)) = page.last() else {
            return Ok(done);
        };
        after = Some(last.clone());
        let rows: Vec<[(LevelKey, &Accumulator); 2]> = page
            .iter()
            .map(|(key, acc)| {
                let [_, day, month] = at_levels(key.clone());
                [(day, acc), (month, acc)]
            })
            .collect();
        let items: Vec<&[(LevelKey, &Accumulator)]> = rows.iter().map(|r| r.as_slice()).collect();
        if let Some((i, e)) = fold::merge_items(tx, &items).await?.first() {
            return Err(StoreError::Corrupt(format!(
                "rolling up hourly row {:?}: {e}",
                page[*i].0
            )));
        }
        done += u64::try_from(page.len()).unwrap_or(u64::MAX);
    }
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
