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
//! - `pending_events(ord, env, txn, dup, k, n, body)`: event records not yet sealed, in the order
//!   they were recorded, as the JSON of their `StoredEvent` ([`seal::record_json`]). The records of
//!   the events one ingest transaction accepted are one row (`dup` 0, `k` records joined by
//!   [`seal::RECORD_SEPARATOR`], `env` and `txn` empty), written in the transaction that claims
//!   their keys; a duplicate delivery is a row of its own (`dup` 1, `k` 1), one per (env, txn), the
//!   latest (a partial unique index, upserted). `n` is the body's length in bytes.
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

use super::seal::{self, MAX_BATCH_EVENTS, MAX_SEALED_BYTES, RECORD_SEPARATOR};
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
         txn TEXT NOT NULL, dup INTEGER NOT NULL, k INTEGER NOT NULL, n INTEGER NOT NULL, \
         body TEXT NOT NULL)",
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
/// and its JSON ([`seal::record_json`]).
pub type EventRow<'a> = (&'a str, &'a str, bool, String);

fn len_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Appends event records, in order (inside the ingest transaction that claimed their keys, or
/// found them taken): the accepted ones as one row, each duplicate upserted into its key's row (a
/// key keeps one pending duplicate record, the latest delivery's, as central keeps its latest
/// duplicate). Returns how many records were added and by how many bytes (`n`) the pending rows
/// grew.
pub fn record_events(sql: &SqlStorage, rows: &[EventRow<'_>]) -> Result<(u64, i64), EdgeError> {
    let (dups, counted): (Vec<&EventRow<'_>>, Vec<&EventRow<'_>>) = rows.iter().partition(|r| r.2);
    let (mut added, mut bytes) = (0u64, 0i64);
    if !counted.is_empty() {
        let mut body = String::with_capacity(counted.iter().map(|r| r.3.len() + 1).sum());
        for (i, r) in counted.iter().enumerate() {
            if i > 0 {
                body.push(RECORD_SEPARATOR);
            }
            body.push_str(&r.3);
        }
        let n = len_i64(body.len());
        sql.exec(
            "INSERT INTO pending_events (env, txn, dup, k, n, body) VALUES ('', '', 0, ?, ?, ?)",
            vec![
                int(len_i64(counted.len())),
                int(n),
                SqlStorageValue::String(body),
            ],
        )?;
        added += u64::try_from(counted.len()).unwrap_or(u64::MAX);
        bytes += n;
    }
    // The last duplicate of each key in this group.
    let mut last: BTreeMap<(&str, &str), &EventRow<'_>> = BTreeMap::new();
    for r in dups {
        last.insert((r.0, r.1), r);
    }
    for ((env, txn), r) in last {
        let before: Vec<IntRow> = sql
            .exec(
                "SELECT n FROM pending_events WHERE env = ? AND txn = ? AND dup = 1",
                vec![text(env), text(txn)],
            )?
            .to_array()?;
        let n = len_i64(r.3.len());
        sql.exec(
            "INSERT INTO pending_events (env, txn, dup, k, n, body) VALUES (?, ?, 1, 1, ?, ?) \
             ON CONFLICT (env, txn) WHERE dup = 1 DO UPDATE SET n = excluded.n, body = excluded.body",
            vec![text(env), text(txn), int(n), text(&r.3)],
        )?;
        match before.first() {
            Some(old) => bytes += n - old.n,
            None => {
                added += 1;
                bytes += n;
            }
        }
    }
    Ok((added, bytes))
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
            "SELECT coalesce(sum(k), 0) AS n, coalesce(sum(n), 0) AS b FROM pending_events",
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
struct ChunkHead {
    ord: i64,
    k: i64,
    n: i64,
}

#[derive(Deserialize)]
struct ChunkBody {
    ord: i64,
    body: String,
}

/// What one seal took from the pending tables.
#[derive(Debug)]
pub struct SealedWork {
    /// The greatest partial key sealed (every pending key up to it was sealed), if any.
    pub last_partial: Option<String>,
    /// Event records sealed (the oldest pending ones) and the `n` bytes they freed.
    pub events: u64,
    pub event_bytes: u64,
}

/// The oldest pending event rows that hold the next batch's candidates: as many rows, in order,
/// as make up [`MAX_BATCH_EVENTS`] records or [`MAX_SEALED_BYTES`] bytes.
fn event_candidates(sql: &SqlStorage) -> Result<Vec<ChunkBody>, EdgeError> {
    let heads: Vec<ChunkHead> = sql
        .exec("SELECT ord, k, n FROM pending_events ORDER BY ord", None)?
        .to_array()?;
    let (mut k, mut n, mut upto) = (0i64, 0i64, None);
    for h in &heads {
        upto = Some(h.ord);
        k += h.k;
        n += h.n;
        if k >= len_i64(MAX_BATCH_EVENTS) || n >= len_i64(MAX_SEALED_BYTES) {
            break;
        }
    }
    let Some(upto) = upto else {
        return Ok(Vec::new());
    };
    Ok(sql
        .exec(
            "SELECT ord, body FROM pending_events WHERE ord <= ? ORDER BY ord",
            vec![int(upto)],
        )?
        .to_array()?)
}

/// Seals the next batch: up to [`tally_core::batch::MAX_BATCH_PARTIALS`] pending partials (in key
/// order) and up to [`MAX_BATCH_EVENTS`] pending event records (oldest first), within
/// [`MAX_SEALED_BYTES`] ([`seal::assemble`]); stores its bytes, removes what it holds from the
/// pending tables (a row of records sealed in part keeps the rest), advances `next_seq`. Must run
/// inside a transaction. `None` when nothing was pending.
pub fn seal(sql: &SqlStorage, shard_id: &str) -> Result<Option<SealedWork>, EdgeError> {
    let rows: Vec<PendingRow> = sql
        .exec(
            "SELECT k, acc FROM pending ORDER BY k LIMIT ?",
            vec![int(len_i64(MAX_BATCH_PARTIALS))],
        )?
        .to_array()?;
    let chunks = event_candidates(sql)?;
    if rows.is_empty() && chunks.is_empty() {
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
    let texts: Vec<&str> = chunks
        .iter()
        .flat_map(|c| c.body.split(RECORD_SEPARATOR))
        .take(MAX_BATCH_EVENTS)
        .collect();
    let sealed = seal::assemble(
        shard_id,
        u64::try_from(seq).unwrap_or(1),
        u64::try_from(metrics_version).unwrap_or(0),
        &partials,
        &texts,
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
    let (whole, part) = seal::after_taking(chunks.iter().map(|c| c.body.as_str()), sealed.events);
    let mut freed: usize = chunks[..whole].iter().map(|c| c.body.len()).sum();
    if let Some(last) = whole.checked_sub(1).and_then(|i| chunks.get(i)) {
        sql.exec(
            "DELETE FROM pending_events WHERE ord <= ?",
            vec![int(last.ord)],
        )?;
    }
    if let Some((i, rest, k)) = part {
        let chunk = &chunks[i];
        freed += chunk.body.len() - rest.len();
        sql.exec(
            "UPDATE pending_events SET k = ?, n = ?, body = ? WHERE ord = ?",
            vec![
                int(len_i64(k)),
                int(len_i64(rest.len())),
                SqlStorageValue::String(rest),
                int(chunk.ord),
            ],
        )?;
    }
    meta_set_int(sql, "next_seq", seq.saturating_add(1))?;
    if pending_count(sql)? == 0 {
        sql.exec("DELETE FROM meta WHERE k = 'pending_version'", None)?;
    }
    Ok(Some(SealedWork {
        last_partial,
        events: u64::try_from(sealed.events).unwrap_or(u64::MAX),
        event_bytes: u64::try_from(freed).unwrap_or(u64::MAX),
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
