//! A shard's SQLite storage: schema and the statements the shard runs, each group of writes inside
//! one `transactionSync` (all or nothing, committed before the shard answers).
//!
//! Tables:
//! - `meta(k, n, s)`: `shard_id` (text: name + incarnation); `next_seq`, `pending_version`,
//!   `last_prune_ms` (integers).
//! - `dedupe(env, txn, seen_ms)`: claimed keys, pruned after
//!   `tally_core::ingest::DEDUPE_RETENTION_MS` (central keeps them as long).
//! - `pending(k, acc)`: partial aggregates not yet sealed; `k` is [`row_key`], `acc` the
//!   accumulator's JSON.
//! - `pending_events(ord, env, txn, dup, rec, n)`: event records not yet sealed, in the order they
//!   were recorded: one per accepted event, written in the transaction that claims its key, and at
//!   most one per (env, txn) for its duplicate deliveries, the latest (a partial unique index,
//!   upserted); `rec` is the compact [`seal::EventRecord`] JSON, `n` its length in bytes.
//! - `sealed(seq, body)`: sealed batches, byte-exact as they are (re)sent, until acknowledged;
//!   each holds the partials and event records that sealing removed from the pending tables in
//!   the same transaction.
//! - `snapshot(env, version, body, stale)`: the metric definitions the shard meters with.
//!
//! Invariants:
//! - Statements pass lists as one JSON parameter (`json_each`), never as string-built SQL, and
//!   stay under the platform's bound-parameter limit.
//! - Accumulators are stored as JSON text written and read by serde (exact decimals), never
//!   interpreted by SQLite.
//! - A shard's incarnation is random and chosen once, when its storage is first initialised, so a
//!   shard whose storage was wiped never reuses a `(shard_id, seq)` central has already applied.

use std::collections::{BTreeMap, HashSet};

use serde::Deserialize;
use tally_core::accumulate::{Accumulator, PartialKey};
use tally_core::batch::{BatchPartial, MetricsSnapshot, MAX_BATCH_PARTIALS};
use tally_core::env::Env as Environment;
use tally_core::fold::{ClaimIo, RowIo};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use worker::{SqlStorage, SqlStorageValue, Storage};

use super::seal::{self, EventRecord, MAX_BATCH_EVENTS, MAX_SEALED_BYTES};
use crate::error::EdgeError;

/// Most dedupe keys removed by one prune statement.
pub const PRUNE_CHUNK: i64 = 20_000;

#[wasm_bindgen]
extern "C" {
    /// The storage object, for `transactionSync` (workers-rs 0.8 does not bind it).
    #[wasm_bindgen(extends = js_sys::Object)]
    type SyncStorage;

    #[wasm_bindgen(method, catch, js_name = transactionSync)]
    fn transaction_sync(
        this: &SyncStorage,
        body: &mut dyn FnMut() -> Result<JsValue, JsValue>,
    ) -> Result<JsValue, JsValue>;
}

/// Runs `f` in one synchronous SQLite transaction: committed if it returns `Ok`, rolled back
/// (every statement undone) if it returns `Err`.
pub fn transaction<T>(
    storage: &Storage,
    f: impl FnOnce() -> Result<T, EdgeError>,
) -> Result<T, EdgeError> {
    let mut f = Some(f);
    let mut out: Option<Result<T, EdgeError>> = None;
    let committed = {
        let mut body = || -> Result<JsValue, JsValue> {
            let Some(f) = f.take() else {
                return Err(JsValue::from_str("transaction body ran twice"));
            };
            let result = f();
            let failed = result.as_ref().err().map(|e| e.to_string());
            out = Some(result);
            match failed {
                // Throwing is what makes the runtime roll the transaction back.
                Some(message) => Err(JsValue::from_str(&message)),
                None => Ok(JsValue::UNDEFINED),
            }
        };
        let raw: &SyncStorage = storage.as_raw().unchecked_ref();
        raw.transaction_sync(&mut body)
    };
    match (out, committed) {
        (Some(Err(e)), _) => Err(e),
        (_, Err(js)) => Err(EdgeError::from(js)),
        (Some(Ok(v)), Ok(_)) => Ok(v),
        (None, Ok(_)) => Err(EdgeError::Unavailable(
            "the storage transaction did not run".to_string(),
        )),
    }
}

fn text(s: &str) -> SqlStorageValue {
    SqlStorageValue::String(s.to_string())
}

fn int(n: i64) -> SqlStorageValue {
    SqlStorageValue::Integer(n)
}

fn json_param<T: serde::Serialize>(value: &T) -> Result<SqlStorageValue, EdgeError> {
    serde_json::to_string(value)
        .map(SqlStorageValue::String)
        .map_err(|e| EdgeError::Unavailable(format!("encoding a statement parameter: {e}")))
}

fn corrupt(what: &str, e: impl core::fmt::Display) -> EdgeError {
    EdgeError::Unavailable(format!("shard storage holds an invalid {what}: {e}"))
}

/// The storage key of a pending partial: canonical JSON of `[env, key]`, so equal keys always
/// meet in one row and key order is stable.
pub fn row_key(env: &str, key: &PartialKey) -> Result<String, EdgeError> {
    serde_json::to_string(&(env, key))
        .map_err(|e| EdgeError::Unavailable(format!("encoding a partial key: {e}")))
}

/// Decodes a [`row_key`].
pub fn parse_row_key(text: &str) -> Result<(String, PartialKey), String> {
    serde_json::from_str(text).map_err(|e| format!("stored partial key {text:?}: {e}"))
}

/// Creates the tables if they do not exist.
pub fn init_schema(sql: &SqlStorage) -> Result<(), EdgeError> {
    for stmt in [
        "CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, n INTEGER, s TEXT) WITHOUT ROWID",
        "CREATE TABLE IF NOT EXISTS dedupe (env TEXT NOT NULL, txn TEXT NOT NULL, \
         seen_ms INTEGER NOT NULL, PRIMARY KEY (env, txn)) WITHOUT ROWID",
        "CREATE INDEX IF NOT EXISTS dedupe_seen ON dedupe (seen_ms)",
        "CREATE TABLE IF NOT EXISTS pending (k TEXT PRIMARY KEY, acc TEXT NOT NULL) WITHOUT ROWID",
        "CREATE TABLE IF NOT EXISTS pending_events (ord INTEGER PRIMARY KEY, env TEXT NOT NULL, \
         txn TEXT NOT NULL, dup INTEGER NOT NULL, rec TEXT NOT NULL, n INTEGER NOT NULL)",
        "CREATE UNIQUE INDEX IF NOT EXISTS pending_events_dup ON pending_events (env, txn) \
         WHERE dup = 1",
        "CREATE TABLE IF NOT EXISTS sealed (seq INTEGER PRIMARY KEY, body TEXT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS snapshot (env TEXT PRIMARY KEY, version INTEGER NOT NULL, \
         body TEXT NOT NULL, stale INTEGER NOT NULL)",
    ] {
        sql.exec(stmt, None)?;
    }
    Ok(())
}

#[derive(Deserialize)]
struct IntRow {
    n: i64,
}

#[derive(Deserialize)]
struct TextRow {
    s: String,
}

// JavaScript numbers reach SQLite as REAL; the INTEGER affinity of `meta.n` stores whole numbers
// as integers, so reads below see exact integers.
fn meta_int(sql: &SqlStorage, key: &str) -> Result<Option<i64>, EdgeError> {
    let rows: Vec<IntRow> = sql
        .exec(
            "SELECT n FROM meta WHERE k = ? AND n IS NOT NULL",
            vec![text(key)],
        )?
        .to_array()?;
    Ok(rows.first().map(|r| r.n))
}

fn meta_text(sql: &SqlStorage, key: &str) -> Result<Option<String>, EdgeError> {
    let rows: Vec<TextRow> = sql
        .exec(
            "SELECT s FROM meta WHERE k = ? AND s IS NOT NULL",
            vec![text(key)],
        )?
        .to_array()?;
    Ok(rows.into_iter().next().map(|r| r.s))
}

fn meta_set_int(sql: &SqlStorage, key: &str, value: i64) -> Result<(), EdgeError> {
    sql.exec(
        "INSERT INTO meta (k, n) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET n = excluded.n",
        vec![text(key), int(value)],
    )?;
    Ok(())
}

fn meta_set_text(sql: &SqlStorage, key: &str, value: &str) -> Result<(), EdgeError> {
    sql.exec(
        "INSERT INTO meta (k, s) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET s = excluded.s",
        vec![text(key), text(value)],
    )?;
    Ok(())
}

/// The shard's batch name: kept if set, else `"{name}.{incarnation}"` is stored and returned.
pub fn shard_id(
    storage: &Storage,
    name: Option<&str>,
    incarnation: &str,
) -> Result<Option<String>, EdgeError> {
    let sql = storage.sql();
    if let Some(id) = meta_text(&sql, "shard_id")? {
        return Ok(Some(id));
    }
    let Some(name) = name else {
        return Ok(None);
    };
    let id = format!("{name}.{incarnation}");
    transaction(storage, || {
        meta_set_text(&sql, "shard_id", &id)?;
        meta_set_int(&sql, "next_seq", 1)
    })?;
    Ok(Some(id))
}

#[derive(Deserialize)]
struct CountRow {
    n: i64,
}

fn count(sql: &SqlStorage, table_query: &str) -> Result<u64, EdgeError> {
    let rows: Vec<CountRow> = sql.exec(table_query, None)?.to_array()?;
    Ok(rows
        .first()
        .map(|r| u64::try_from(r.n).unwrap_or(0))
        .unwrap_or(0))
}

pub fn pending_count(sql: &SqlStorage) -> Result<u64, EdgeError> {
    count(sql, "SELECT count(*) AS n FROM pending")
}

pub fn sealed_count(sql: &SqlStorage) -> Result<u64, EdgeError> {
    count(sql, "SELECT count(*) AS n FROM sealed")
}

pub fn has_dedupe_keys(sql: &SqlStorage) -> Result<bool, EdgeError> {
    Ok(count(
        sql,
        "SELECT count(*) AS n FROM (SELECT 1 FROM dedupe LIMIT 1)",
    )? > 0)
}

#[derive(Deserialize)]
struct TxnRow {
    txn: String,
}

/// Claims the keys of `txns` (distinct ids) in `env`; returns those this call claimed.
pub fn claim(
    sql: &SqlStorage,
    env: &str,
    txns: &[&str],
    now_ms: i64,
) -> Result<HashSet<String>, EdgeError> {
    if txns.is_empty() {
        return Ok(HashSet::new());
    }
    // `WHERE true` resolves the parsing ambiguity of INSERT ... SELECT ... ON CONFLICT.
    let rows: Vec<TxnRow> = sql
        .exec(
            "INSERT INTO dedupe (env, txn, seen_ms) \
             SELECT ?, value, ? FROM json_each(?) WHERE true \
             ON CONFLICT DO NOTHING RETURNING txn",
            vec![text(env), int(now_ms), json_param(&txns)?],
        )?
        .to_array()?;
    Ok(rows.into_iter().map(|r| r.txn).collect())
}

/// Gives keys back (events that were claimed but could not be merged).
pub fn release(sql: &SqlStorage, env: &str, txns: &[&str]) -> Result<(), EdgeError> {
    if txns.is_empty() {
        return Ok(());
    }
    sql.exec(
        "DELETE FROM dedupe WHERE env = ? AND txn IN (SELECT value FROM json_each(?))",
        vec![text(env), json_param(&txns)?],
    )?;
    Ok(())
}

/// The IO of one ingest transaction, for `tally_core::fold::ingest`: keys are claimed and released
/// in storage, rows are read from the pending mirror (which equals storage) and written to both
/// storage and, after the commit, the mirror ([`ShardTx::into_written`]). Every call is
/// synchronous, so the plan runs with `fold::run_ready` inside `transactionSync`.
pub struct ShardTx<'s, 'a> {
    sql: &'s SqlStorage,
    now_ms: i64,
    pending: &'s BTreeMap<String, Accumulator>,
    lower_version: Option<u64>,
    written: Vec<(String, Accumulator)>,
    claims: core::marker::PhantomData<&'a str>,
}

impl<'s> ShardTx<'s, '_> {
    /// `lower_version`: the snapshot version to lower `pending_version` to, if the rows written
    /// were computed with an older snapshot than those pending.
    pub fn new(
        sql: &'s SqlStorage,
        now_ms: i64,
        pending: &'s BTreeMap<String, Accumulator>,
        lower_version: Option<u64>,
    ) -> Self {
        ShardTx {
            sql,
            now_ms,
            pending,
            lower_version,
            written: Vec::new(),
            claims: core::marker::PhantomData,
        }
    }

    /// The rows written, for the mirror once the transaction committed.
    pub fn into_written(self) -> Vec<(String, Accumulator)> {
        self.written
    }
}

/// `keys` grouped by environment, each group in order (one statement per environment).
fn by_env<'a>(keys: &[&(Environment, &'a str)]) -> BTreeMap<Environment, Vec<&'a str>> {
    let mut out: BTreeMap<Environment, Vec<&'a str>> = BTreeMap::new();
    for (env, txn) in keys {
        out.entry(*env).or_default().push(txn);
    }
    out
}

impl RowIo for ShardTx<'_, '_> {
    type Row = String;
    type Error = EdgeError;

    async fn load(&mut self, rows: &[String]) -> Result<Vec<(String, Accumulator)>, EdgeError> {
        Ok(rows
            .iter()
            .filter_map(|k| self.pending.get(k).map(|acc| (k.clone(), acc.clone())))
            .collect())
    }

    async fn write(&mut self, rows: Vec<(String, Accumulator)>) -> Result<(), EdgeError> {
        write_pending(self.sql, &rows, self.lower_version)?;
        self.written = rows;
        Ok(())
    }
}

impl<'a> ClaimIo for ShardTx<'_, 'a> {
    type Claim = (Environment, &'a str);

    async fn claim(&mut self, keys: &[&(Environment, &'a str)]) -> Result<Vec<bool>, EdgeError> {
        let mut claimed = BTreeMap::new();
        for (env, txns) in by_env(keys) {
            claimed.insert(env, claim(self.sql, env.as_str(), &txns, self.now_ms)?);
        }
        Ok(keys
            .iter()
            .map(|(env, txn)| claimed.get(env).is_some_and(|set| set.contains(*txn)))
            .collect())
    }

    async fn release(&mut self, keys: &[&(Environment, &'a str)]) -> Result<(), EdgeError> {
        for (env, txns) in by_env(keys) {
            release(self.sql, env.as_str(), &txns)?;
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct PendingRow {
    k: String,
    acc: String,
}

/// Every pending partial (at most `policy::MAX_PENDING_PARTIALS` plus one group commit's worth) and
/// the metric version they were computed with.
pub fn load_all_pending(
    sql: &SqlStorage,
) -> Result<(BTreeMap<String, Accumulator>, Option<u64>), EdgeError> {
    let rows: Vec<PendingRow> = sql.exec("SELECT k, acc FROM pending", None)?.to_array()?;
    let mut out = BTreeMap::new();
    for row in rows {
        let acc: Accumulator =
            serde_json::from_str(&row.acc).map_err(|e| corrupt("pending accumulator", e))?;
        out.insert(row.k, acc);
    }
    let version = meta_int(sql, "pending_version")?.and_then(|v| u64::try_from(v).ok());
    Ok((out, version))
}

/// Writes pending rows (insert or replace); when `lower_version` is given, also lowers the stored
/// `pending_version` to it.
pub fn write_pending(
    sql: &SqlStorage,
    rows: &[(String, Accumulator)],
    lower_version: Option<u64>,
) -> Result<(), EdgeError> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut encoded: Vec<(&str, String)> = Vec::with_capacity(rows.len());
    for (k, acc) in rows {
        let text = serde_json::to_string(acc)
            .map_err(|e| EdgeError::Unavailable(format!("encoding an accumulator: {e}")))?;
        encoded.push((k.as_str(), text));
    }
    sql.exec(
        "INSERT INTO pending (k, acc) \
         SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?) WHERE true \
         ON CONFLICT (k) DO UPDATE SET acc = excluded.acc",
        vec![json_param(&encoded)?],
    )?;
    let Some(version) = lower_version else {
        return Ok(());
    };
    let version = i64::try_from(version).unwrap_or(i64::MAX);
    sql.exec(
        "INSERT INTO meta (k, n) VALUES ('pending_version', ?) \
         ON CONFLICT (k) DO UPDATE SET n = min(n, excluded.n)",
        vec![int(version)],
    )?;
    Ok(())
}

/// One event record to append: environment, transaction id, whether it is a duplicate delivery,
/// and the record.
pub type EventRow<'a> = (&'a str, &'a str, bool, EventRecord<'a>);

/// Appends event records, in order (inside the ingest transaction that claimed their keys, or
/// found them taken). Duplicates are upserted: a key keeps one pending duplicate record, the latest
/// delivery's (as central keeps its latest duplicate). Returns how many rows were added and by how
/// many bytes (`n`) the pending records grew.
pub fn record_events(sql: &SqlStorage, rows: &[EventRow<'_>]) -> Result<(u64, i64), EdgeError> {
    let (dups, counted): (Vec<&EventRow<'_>>, Vec<&EventRow<'_>>) = rows.iter().partition(|r| r.2);
    // The last duplicate of each key in this group.
    let mut last: BTreeMap<(&str, &str), &EventRow<'_>> = BTreeMap::new();
    for r in &dups {
        last.insert((r.0, r.1), r);
    }
    let dups: Vec<&EventRow<'_>> = last.into_values().collect();
    let (mut added, mut bytes) = (0u64, 0i64);
    if !counted.is_empty() {
        let (param, n) = encode_event_rows(&counted)?;
        sql.exec(
            "INSERT INTO pending_events (env, txn, dup, rec, n) \
             SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), 0, \
             json_extract(value, '$[2]'), json_extract(value, '$[3]') FROM json_each(?)",
            vec![SqlStorageValue::String(param)],
        )?;
        added += u64::try_from(counted.len()).unwrap_or(u64::MAX);
        bytes += n;
    }
    if !dups.is_empty() {
        let keys: Vec<(&str, &str)> = dups.iter().map(|r| (r.0, r.1)).collect();
        let replaced: Vec<IntRow> = sql
            .exec(
                "SELECT p.n AS n FROM json_each(?) AS j JOIN pending_events AS p \
                 ON p.env = json_extract(j.value, '$[0]') AND p.txn = json_extract(j.value, '$[1]') \
                 AND p.dup = 1",
                vec![json_param(&keys)?],
            )?
            .to_array()?;
        let (param, n) = encode_event_rows(&dups)?;
        sql.exec(
            "INSERT INTO pending_events (env, txn, dup, rec, n) \
             SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), 1, \
             json_extract(value, '$[2]'), json_extract(value, '$[3]') FROM json_each(?) WHERE true \
             ON CONFLICT (env, txn) WHERE dup = 1 DO UPDATE SET rec = excluded.rec, n = excluded.n",
            vec![SqlStorageValue::String(param)],
        )?;
        let fresh = dups.len().saturating_sub(replaced.len());
        added += u64::try_from(fresh).unwrap_or(u64::MAX);
        bytes += n - replaced.iter().map(|r| r.n).sum::<i64>();
    }
    Ok((added, bytes))
}

/// `[[env, txn, {record}, n], ...]` and the sum of the `n`: the record embedded as an object
/// (`json_extract` gives its text back without a second layer of escaping), `n` its length.
fn encode_event_rows(rows: &[&EventRow<'_>]) -> Result<(String, i64), EdgeError> {
    let encode =
        |e: serde_json::Error| EdgeError::Unavailable(format!("encoding an event record: {e}"));
    let mut param = String::from("[");
    let mut total = 0i64;
    for (i, (env, txn, _, record)) in rows.iter().enumerate() {
        let rec = serde_json::to_string(record).map_err(encode)?;
        if i > 0 {
            param.push(',');
        }
        param.push('[');
        param.push_str(&serde_json::to_string(env).map_err(encode)?);
        param.push(',');
        param.push_str(&serde_json::to_string(txn).map_err(encode)?);
        param.push(',');
        param.push_str(&rec);
        param.push(',');
        param.push_str(&rec.len().to_string());
        param.push(']');
        total += i64::try_from(rec.len()).unwrap_or(i64::MAX);
    }
    param.push(']');
    Ok((param, total))
}

#[derive(Deserialize)]
struct StatsRow {
    n: i64,
    b: i64,
}

/// How many event records are pending and their `n` bytes (read once per instance).
pub fn pending_event_stats(sql: &SqlStorage) -> Result<(u64, u64), EdgeError> {
    let rows: Vec<StatsRow> = sql
        .exec(
            "SELECT count(*) AS n, coalesce(sum(n), 0) AS b FROM pending_events",
            None,
        )?
        .to_array()?;
    Ok(rows.first().map_or((0, 0), |r| {
        (
            u64::try_from(r.n).unwrap_or(0),
            u64::try_from(r.b).unwrap_or(0),
        )
    }))
}

#[derive(Deserialize)]
struct EventRowStored {
    ord: i64,
    env: String,
    txn: String,
    dup: i64,
    rec: String,
    n: i64,
}

/// What one seal took from the pending tables.
#[derive(Debug)]
pub struct SealedWork {
    /// The greatest partial key sealed (every pending key up to it was sealed), if any.
    pub last_partial: Option<String>,
    /// Event records sealed (the oldest pending ones) and their `n` bytes.
    pub events: u64,
    pub event_bytes: u64,
}

/// Seals the next batch: up to [`tally_core::batch::MAX_BATCH_PARTIALS`] pending partials (in key
/// order) and up to [`MAX_BATCH_EVENTS`] pending event records (oldest first), within
/// [`MAX_SEALED_BYTES`] ([`seal::assemble`]); stores its bytes, removes what it holds from the
/// pending tables, advances `next_seq`. Must run inside a transaction. `None` when nothing was
/// pending.
pub fn seal(sql: &SqlStorage, shard_id: &str) -> Result<Option<SealedWork>, EdgeError> {
    let limit = |n: usize| int(i64::try_from(n).unwrap_or(i64::MAX));
    let rows: Vec<PendingRow> = sql
        .exec(
            "SELECT k, acc FROM pending ORDER BY k LIMIT ?",
            vec![limit(MAX_BATCH_PARTIALS)],
        )?
        .to_array()?;
    let event_rows: Vec<EventRowStored> = sql
        .exec(
            "SELECT ord, env, txn, dup, rec, n FROM pending_events ORDER BY ord LIMIT ?",
            vec![limit(MAX_BATCH_EVENTS)],
        )?
        .to_array()?;
    if rows.is_empty() && event_rows.is_empty() {
        return Ok(None);
    }
    // `next_seq` is written with the shard id, so it is never absent here. Never reuse a number:
    // central would take the batch for a replay and drop it.
    let next =
        meta_int(sql, "next_seq")?.ok_or_else(|| corrupt("meta row", "next_seq is missing"))?;
    let seq = next.max(max_sealed_seq(sql)?.saturating_add(1)).max(1);
    let metrics_version = meta_int(sql, "pending_version")?.unwrap_or(0).max(0);
    let mut partials = Vec::with_capacity(rows.len());
    for row in &rows {
        let (env, key) = parse_row_key(&row.k).map_err(|e| corrupt("pending key", e))?;
        let acc: Accumulator =
            serde_json::from_str(&row.acc).map_err(|e| corrupt("pending accumulator", e))?;
        partials.push(BatchPartial { env, key, acc });
    }
    let mut events = Vec::with_capacity(event_rows.len());
    for row in &event_rows {
        events.push(
            seal::stored_event(row.env.clone(), row.txn.clone(), row.dup != 0, &row.rec)
                .map_err(|e| corrupt("pending event", e))?,
        );
    }
    let sealed = seal::assemble(
        shard_id,
        u64::try_from(seq).unwrap_or(1),
        u64::try_from(metrics_version).unwrap_or(0),
        &partials,
        &events,
        MAX_SEALED_BYTES,
    )
    .map_err(|e| EdgeError::Unavailable(format!("encoding a batch: {e}")))?;
    sql.exec(
        "INSERT INTO sealed (seq, body) VALUES (?, ?)",
        vec![int(seq), SqlStorageValue::String(sealed.body)],
    )?;
    let last_partial = match sealed.partials.checked_sub(1).and_then(|i| rows.get(i)) {
        Some(last) => {
            sql.exec("DELETE FROM pending WHERE k <= ?", vec![text(&last.k)])?;
            Some(last.k.clone())
        }
        None => None,
    };
    let taken = &event_rows[..sealed.events.min(event_rows.len())];
    if let Some(last) = taken.last() {
        sql.exec(
            "DELETE FROM pending_events WHERE ord <= ?",
            vec![int(last.ord)],
        )?;
    }
    meta_set_int(sql, "next_seq", seq.saturating_add(1))?;
    if pending_count(sql)? == 0 {
        sql.exec("DELETE FROM meta WHERE k = 'pending_version'", None)?;
    }
    Ok(Some(SealedWork {
        last_partial,
        events: u64::try_from(taken.len()).unwrap_or(u64::MAX),
        event_bytes: taken.iter().map(|r| u64::try_from(r.n).unwrap_or(0)).sum(),
    }))
}

fn max_sealed_seq(sql: &SqlStorage) -> Result<i64, EdgeError> {
    let rows: Vec<IntRow> = sql
        .exec("SELECT coalesce(max(seq), 0) AS n FROM sealed", None)?
        .to_array()?;
    Ok(rows.first().map_or(0, |r| r.n))
}

#[derive(Deserialize)]
struct SealedRow {
    seq: i64,
    body: String,
}

/// The oldest sealed batch, if any: `(seq, body)`.
pub fn oldest_sealed(sql: &SqlStorage) -> Result<Option<(i64, String)>, EdgeError> {
    let rows: Vec<SealedRow> = sql
        .exec("SELECT seq, body FROM sealed ORDER BY seq LIMIT 1", None)?
        .to_array()?;
    Ok(rows.into_iter().next().map(|r| (r.seq, r.body)))
}

/// Forgets an acknowledged batch.
pub fn delete_sealed(sql: &SqlStorage, seq: i64) -> Result<(), EdgeError> {
    sql.exec("DELETE FROM sealed WHERE seq = ?", vec![int(seq)])?;
    Ok(())
}

/// Removes dedupe keys first seen before `before_ms`, at most [`PRUNE_CHUNK`]; returns how many.
pub fn prune(sql: &SqlStorage, before_ms: i64) -> Result<usize, EdgeError> {
    let cursor = sql.exec(
        "DELETE FROM dedupe WHERE (env, txn) IN \
         (SELECT env, txn FROM dedupe WHERE seen_ms < ? LIMIT ?)",
        vec![int(before_ms), int(PRUNE_CHUNK)],
    )?;
    // Drain the cursor so the statement runs to completion before counting.
    let _ = cursor.to_array::<serde_json::Value>()?;
    Ok(cursor.rows_written())
}

pub fn last_prune_ms(sql: &SqlStorage) -> Result<Option<i64>, EdgeError> {
    meta_int(sql, "last_prune_ms")
}

pub fn set_last_prune_ms(sql: &SqlStorage, at_ms: i64) -> Result<(), EdgeError> {
    meta_set_int(sql, "last_prune_ms", at_ms)
}

#[derive(Deserialize)]
struct SnapshotRow {
    body: String,
    stale: i64,
}

/// A stored metric snapshot and whether it was marked stale.
pub fn load_snapshot(
    sql: &SqlStorage,
    env: &str,
) -> Result<Option<(MetricsSnapshot, bool)>, EdgeError> {
    let rows: Vec<SnapshotRow> = sql
        .exec(
            "SELECT body, stale FROM snapshot WHERE env = ?",
            vec![text(env)],
        )?
        .to_array()?;
    let Some(row) = rows.into_iter().next() else {
        return Ok(None);
    };
    let snap: MetricsSnapshot =
        serde_json::from_str(&row.body).map_err(|e| corrupt("metric snapshot", e))?;
    Ok(Some((snap, row.stale != 0)))
}

pub fn save_snapshot(sql: &SqlStorage, env: &str, snap: &MetricsSnapshot) -> Result<(), EdgeError> {
    let version = i64::try_from(snap.version).unwrap_or(i64::MAX);
    sql.exec(
        "INSERT INTO snapshot (env, version, body, stale) VALUES (?, ?, ?, 0) \
         ON CONFLICT (env) DO UPDATE SET version = excluded.version, body = excluded.body, stale = 0",
        vec![text(env), int(version), json_param(snap)?],
    )?;
    Ok(())
}

pub fn mark_snapshots_stale(sql: &SqlStorage) -> Result<(), EdgeError> {
    sql.exec("UPDATE snapshot SET stale = 1", None)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_keys_round_trip_and_separate_environments() {
        let k = PartialKey {
            customer_ref: "c".into(),
            metric_id: "m".into(),
            groups: vec![Some("g".into()), None],
            hour_ms: 3_600_000,
        };
        let a = row_key("sandbox", &k).unwrap();
        assert_ne!(a, row_key("production", &k).unwrap());
        assert_eq!(parse_row_key(&a).unwrap(), ("sandbox".to_string(), k));
    }
}
