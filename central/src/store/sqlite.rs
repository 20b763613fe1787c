//! The SQLite backend: the embedded default (`sqlite://tally.db`, created if missing, WAL mode).
//!
//! Durability: `synchronous = FULL`, so a committed ingest transaction survives a crash; group
//! commit (see `crate::ingest`) amortises the fsync over many requests. Write transactions start
//! with `BEGIN IMMEDIATE` so a reader never has to upgrade to a writer mid-transaction. A write
//! that fails (disk full, I/O error) rolls back whole, and the pool drops any connection it left
//! confused, so the service recovers by itself once the cause is gone.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, QueryBuilder, Row, Sqlite, SqlitePool};
use tally_core::accumulate::{Accumulator, PartialKey};
use tally_core::rating::UsageRow;

use super::merge::{self, decode_acc, decode_groups, parse_env, RowKey, RowWrite};
use super::*;

/// Row-batching sizes for multi-row statements: few distinct SQL shapes keep the statement cache hot.
const CHUNKS: [usize; 4] = [512, 64, 8, 1];

pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    pub async fn open(url: &str, pool: &PoolOptions) -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            // 8 MiB of page cache per connection: the hot upper levels of the dedupe and usage
            // indexes fit, the OS page cache holds the rest, and memory stays bounded however
            // large the database grows (64 MiB was no faster in `bench_ingest`, and made RSS
            // climb for as long as the database did).
            .pragma("cache_size", "-8192")
            .pragma("temp_store", "memory");
        let pool = SqlitePoolOptions::new()
            .max_connections(pool.max_connections.max(1))
            .acquire_timeout(pool.acquire_timeout)
            // An idle connection is never inside a transaction: sqlx rolls a dropped one back
            // before pooling the connection. But when SQLite has already rolled it back itself (a
            // COMMIT failing with SQLITE_FULL or an I/O error), that ROLLBACK fails, sqlx keeps
            // counting the transaction as open and refuses every later BEGIN on the connection.
            // Such a connection is closed instead of reused, so the pool heals once the disk has
            // room again.
            .before_acquire(|conn, _| Box::pin(async move { Ok(!conn.is_in_transaction()) }))
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(SqliteStore { pool })
    }

    async fn begin_write(&self) -> StoreResult<sqlx::Transaction<'_, Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }
}

/// Splits `n` rows into chunk sizes drawn from [`CHUNKS`].
fn chunk_sizes(mut n: usize) -> Vec<usize> {
    let mut out = Vec::new();
    for size in CHUNKS {
        while n >= size {
            out.push(size);
            n -= size;
        }
    }
    out
}

fn chunks<T>(items: &[T]) -> impl Iterator<Item = &[T]> {
    let mut start = 0;
    chunk_sizes(items.len()).into_iter().map(move |size| {
        let chunk = &items[start..start + size];
        start += size;
        chunk
    })
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

fn doc_from_row(row: &sqlx::sqlite::SqliteRow) -> Doc {
    Doc {
        seq: row.get("seq"),
        id: row.get("id"),
        parent_id: row.get("parent_id"),
        archived: row.get::<i64, _>("archived") != 0,
        created_ms: row.get("created_ms"),
        body: row.get("body"),
        version: row.get("version"),
    }
}

async fn insert_doc(
    conn: &mut sqlx::SqliteConnection,
    env: Env,
    doc: &NewDoc<'_>,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO documents (env, kind, id, parent_id, unique_key, created_ms, body)
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(env.as_str())
    .bind(doc.kind)
    .bind(doc.id)
    .bind(doc.parent_id)
    .bind(doc.unique_key)
    .bind(doc.created_ms)
    .bind(&doc.body)
    .execute(conn)
    .await
    .map_err(|e| match is_unique_violation(&e) {
        true => StoreError::Conflict(format!("{} {} already exists", doc.kind, doc.id)),
        false => e.into(),
    })?;
    Ok(())
}

async fn insert_aliases(
    conn: &mut sqlx::SqliteConnection,
    env: Env,
    customer_id: &str,
    aliases: &[String],
) -> StoreResult<()> {
    for alias in aliases {
        // Customer ids are never deleted, so this check cannot be raced into a wrong answer.
        let is_id: Option<i64> = sqlx::query_scalar(
            "SELECT seq FROM documents WHERE env = ? AND kind = 'customer' AND id = ?",
        )
        .bind(env.as_str())
        .bind(alias)
        .fetch_optional(&mut *conn)
        .await?;
        if is_id.is_some() {
            return Err(StoreError::Conflict(format!(
                "ingest alias {alias:?} is a customer's id"
            )));
        }
        sqlx::query("INSERT INTO customer_aliases (env, alias, customer_id) VALUES (?, ?, ?)")
            .bind(env.as_str())
            .bind(alias)
            .bind(customer_id)
            .execute(&mut *conn)
            .await
            .map_err(|e| match is_unique_violation(&e) {
                true => StoreError::Conflict(format!("ingest alias {alias:?} is already in use")),
                false => e.into(),
            })?;
    }
    Ok(())
}

async fn index_card_aliases(
    conn: &mut sqlx::SqliteConnection,
    env: Env,
    card_id: &str,
    aliases: &[String],
) -> StoreResult<()> {
    sqlx::query("DELETE FROM rate_card_aliases WHERE env = ? AND rate_card_id = ?")
        .bind(env.as_str())
        .bind(card_id)
        .execute(&mut *conn)
        .await?;
    for alias in aliases {
        sqlx::query(
            "INSERT INTO rate_card_aliases (env, alias, rate_card_id) VALUES (?, ?, ?)
             ON CONFLICT DO NOTHING",
        )
        .bind(env.as_str())
        .bind(alias)
        .bind(card_id)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

#[async_trait]
impl ConfigStore for SqliteStore {
    async fn insert_docs(&self, env: Env, docs: &[NewDoc<'_>]) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        for doc in docs {
            insert_doc(&mut tx, env, doc).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn get_doc(&self, env: Env, kind: &str, id: &str) -> StoreResult<Option<Doc>> {
        let row = sqlx::query("SELECT * FROM documents WHERE env = ? AND kind = ? AND id = ?")
            .bind(env.as_str())
            .bind(kind)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(doc_from_row))
    }

    async fn update_doc(
        &self,
        env: Env,
        kind: &str,
        id: &str,
        body: &str,
        archived: bool,
        version: i64,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE documents SET body = ?, archived = ?, version = version + 1
             WHERE env = ? AND kind = ? AND id = ? AND version = ?",
        )
        .bind(body)
        .bind(i64::from(archived))
        .bind(env.as_str())
        .bind(kind)
        .bind(id)
        .bind(version)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn list_docs(
        &self,
        env: Env,
        kind: &str,
        parent_id: Option<&str>,
        filter: ArchiveFilter,
        page: Option<PageReq>,
    ) -> StoreResult<Vec<Doc>> {
        let mut q = QueryBuilder::<Sqlite>::new("SELECT * FROM documents WHERE env = ");
        q.push_bind(env.as_str())
            .push(" AND kind = ")
            .push_bind(kind);
        if let Some(parent) = parent_id {
            q.push(" AND parent_id = ").push_bind(parent);
        }
        match filter {
            ArchiveFilter::Active => q.push(" AND archived = 0"),
            ArchiveFilter::Archived => q.push(" AND archived = 1"),
            ArchiveFilter::All => &mut q,
        };
        if let Some(p) = page {
            q.push(" AND seq > ").push_bind(p.after);
        }
        q.push(" ORDER BY seq");
        if let Some(p) = page {
            q.push(" LIMIT ").push_bind(p.limit);
        }
        let rows = q.build().fetch_all(&self.pool).await?;
        Ok(rows.iter().map(doc_from_row).collect())
    }

    async fn insert_customer(
        &self,
        env: Env,
        doc: NewDoc<'_>,
        aliases: &[String],
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let taken: Option<String> = sqlx::query_scalar(
            "SELECT customer_id FROM customer_aliases WHERE env = ? AND alias = ?",
        )
        .bind(env.as_str())
        .bind(doc.id)
        .fetch_optional(&mut *tx)
        .await?;
        if taken.is_some() {
            return Err(StoreError::Conflict(format!(
                "customer id {:?} is another customer's ingest alias",
                doc.id
            )));
        }
        insert_doc(&mut tx, env, &doc).await?;
        insert_aliases(&mut tx, env, doc.id, aliases).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn set_customer_aliases(
        &self,
        env: Env,
        id: &str,
        aliases: &[String],
        body: &str,
        version: i64,
    ) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        // The document first: its row lock orders concurrent changes of one customer, and a
        // stale version stops here having changed nothing.
        let done = sqlx::query(
            "UPDATE documents SET body = ?, version = version + 1
             WHERE env = ? AND kind = 'customer' AND id = ? AND version = ?",
        )
        .bind(body)
        .bind(env.as_str())
        .bind(id)
        .bind(version)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        sqlx::query("DELETE FROM customer_aliases WHERE env = ? AND customer_id = ?")
            .bind(env.as_str())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        insert_aliases(&mut tx, env, id, aliases).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn insert_rate_card(
        &self,
        env: Env,
        doc: NewDoc<'_>,
        aliases: &[String],
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        insert_doc(&mut tx, env, &doc).await?;
        index_card_aliases(&mut tx, env, doc.id, aliases).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn update_rate_card(
        &self,
        env: Env,
        id: &str,
        body: &str,
        version: i64,
        aliases: &[String],
    ) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE documents SET body = ?, version = version + 1
             WHERE env = ? AND kind = 'rate_card' AND id = ? AND version = ?",
        )
        .bind(body)
        .bind(env.as_str())
        .bind(id)
        .bind(version)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        index_card_aliases(&mut tx, env, id, aliases).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn rate_cards_by_alias(&self, env: Env, alias: &str) -> StoreResult<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT rate_card_id FROM rate_card_aliases WHERE env = ? AND alias = ?",
        )
        .bind(env.as_str())
        .bind(alias)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn metrics_version(&self) -> StoreResult<u64> {
        let v: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(seq), 0) FROM documents WHERE kind = 'billable_metric'",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(u64::try_from(v).unwrap_or(0))
    }

    async fn customer_by_alias(&self, env: Env, alias: &str) -> StoreResult<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT customer_id FROM customer_aliases WHERE env = ? AND alias = ?",
        )
        .bind(env.as_str())
        .bind(alias)
        .fetch_optional(&self.pool)
        .await?)
    }
}

/// Claims dedupe keys; returns the set of keys this transaction inserted.
async fn claim_keys(
    conn: &mut sqlx::SqliteConnection,
    items: &[IngestItem],
    now_ms: i64,
) -> StoreResult<HashSet<(Env, String)>> {
    // Inside the write transaction nobody else can claim a key, so "not there yet" followed by a
    // plain INSERT is a claim. Asking which keys exist returns only the (rare) duplicates, which
    // is far cheaper than streaming every inserted key back with RETURNING.
    let mut seen: HashSet<(Env, &str)> = HashSet::with_capacity(items.len());
    let mut fresh: Vec<&IngestItem> = Vec::with_capacity(items.len());
    for chunk in chunks(items) {
        let mut q = QueryBuilder::<Sqlite>::new("WITH k (e, t) AS (");
        q.push_values(chunk, |mut b, item| {
            b.push_bind(item.env.as_str())
                .push_bind(&item.transaction_id);
        });
        q.push(
            ") SELECT d.env, d.transaction_id FROM k
             JOIN dedupe d ON d.env = k.e AND d.transaction_id = k.t",
        );
        let existing: HashSet<(Env, String)> = q
            .build()
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|row| Ok((parse_env(row.get(0))?, row.get::<String, _>(1))))
            .collect::<StoreResult<_>>()?;
        for item in chunk {
            let known = existing.contains(&(item.env, item.transaction_id.clone()));
            if !known && seen.insert((item.env, item.transaction_id.as_str())) {
                fresh.push(item);
            }
        }
    }
    for chunk in chunks(&fresh) {
        let mut q =
            QueryBuilder::<Sqlite>::new("INSERT INTO dedupe (env, transaction_id, recorded_ms) ");
        q.push_values(chunk, |mut b, item| {
            b.push_bind(item.env.as_str())
                .push_bind(&item.transaction_id)
                .push_bind(now_ms);
        });
        q.build().execute(&mut *conn).await?;
    }
    Ok(fresh
        .into_iter()
        .map(|i| (i.env, i.transaction_id.clone()))
        .collect())
}

async fn load_partials(
    conn: &mut sqlx::SqliteConnection,
    keys: &[RowKey],
) -> StoreResult<HashMap<RowKey, Accumulator>> {
    let mut out = HashMap::new();
    for chunk in chunks(keys) {
        // A join on the VALUES list lets SQLite search the primary key per row (a row-value
        // `IN (VALUES ...)` would scan the whole table). The rows come back as one JSON array,
        // not one result row each: sqlx hands every result row across threads, which costs more
        // than SQLite's own work here (measured: ingest throughput ×1.8).
        let mut q = QueryBuilder::<Sqlite>::new("WITH k (i, e, c, m, h, g) AS (");
        q.push_values(chunk.iter().enumerate(), |mut b, (i, k)| {
            b.push_bind(i64::try_from(i).unwrap_or(i64::MAX))
                .push_bind(k.0.as_str())
                .push_bind(&k.1)
                .push_bind(&k.2)
                .push_bind(k.3)
                .push_bind(&k.4);
        });
        q.push(
            ") SELECT json_group_array(json_array(k.i, u.acc)) FROM k JOIN usage_hourly u
             ON u.env = k.e AND u.customer_ref = k.c AND u.metric_id = k.m
             AND u.hour_ms = k.h AND u.groups = k.g",
        );
        let found: String = q.build_query_scalar().fetch_one(&mut *conn).await?;
        let found: Vec<(usize, String)> = serde_json::from_str(&found)
            .map_err(|e| StoreError::Corrupt(format!("loaded partials: {e}")))?;
        for (i, acc) in found {
            let key = chunk
                .get(i)
                .ok_or_else(|| StoreError::Corrupt("loaded partial index".into()))?;
            out.insert(key.clone(), decode_acc(&acc)?);
        }
    }
    Ok(out)
}

async fn upsert_partials(conn: &mut sqlx::SqliteConnection, rows: &[RowWrite]) -> StoreResult<()> {
    for chunk in chunks(rows) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO usage_hourly (env, customer_ref, metric_id, hour_ms, groups, acc) ",
        );
        q.push_values(chunk, |mut b, (k, acc)| {
            b.push_bind(k.0.as_str())
                .push_bind(&k.1)
                .push_bind(&k.2)
                .push_bind(k.3)
                .push_bind(&k.4)
                .push_bind(acc);
        });
        q.push(
            " ON CONFLICT (env, customer_ref, metric_id, hour_ms, groups) DO UPDATE SET acc = excluded.acc",
        );
        q.build().execute(&mut *conn).await?;
    }
    Ok(())
}

#[async_trait]
impl UsageStore for SqliteStore {
    async fn commit_ingest(
        &self,
        items: &[IngestItem],
        now_ms: i64,
    ) -> StoreResult<Vec<ItemOutcome>> {
        let mut tx = self.begin_write().await?;
        let claimed = claim_keys(&mut tx, items, now_ms).await?;
        let mut outcomes = merge::outcomes_from_claims(items, &claimed);
        let keys = merge::accepted_keys(items, &outcomes)?;
        let partials = load_partials(&mut tx, &keys).await?;
        let rows = merge::fold_items(items, &mut outcomes, partials)?;
        // An item refused at merge gives its dedupe key back, so a corrected retry can land.
        for (item, outcome) in items.iter().zip(&outcomes) {
            if matches!(outcome, ItemOutcome::Rejected(_)) {
                sqlx::query("DELETE FROM dedupe WHERE env = ? AND transaction_id = ?")
                    .bind(item.env.as_str())
                    .bind(&item.transaction_id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        upsert_partials(&mut tx, &rows).await?;
        tx.commit().await?;
        Ok(outcomes)
    }

    async fn usage_rows(
        &self,
        env: Env,
        customer_refs: &[String],
        metric_ids: &[String],
        from_ms: i64,
        to_ms: i64,
    ) -> StoreResult<Vec<UsageRow>> {
        if customer_refs.is_empty() || metric_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut q = QueryBuilder::<Sqlite>::new(
            "SELECT metric_id, hour_ms, groups, acc FROM usage_hourly WHERE env = ",
        );
        q.push_bind(env.as_str()).push(" AND customer_ref IN (");
        let mut sep = q.separated(", ");
        for r in customer_refs {
            sep.push_bind(r);
        }
        q.push(") AND metric_id IN (");
        let mut sep = q.separated(", ");
        for m in metric_ids {
            sep.push_bind(m);
        }
        q.push(") AND hour_ms >= ")
            .push_bind(from_ms)
            .push(" AND hour_ms < ")
            .push_bind(to_ms);
        let rows = q.build().fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| {
                Ok(UsageRow {
                    metric_id: row.get(0),
                    hour_ms: row.get(1),
                    groups: decode_groups(row.get(2))?,
                    acc: decode_acc(row.get(3))?,
                })
            })
            .collect()
    }

    async fn latest_rows_before(
        &self,
        env: Env,
        customer_refs: &[String],
        metric_ids: &[String],
        before_ms: i64,
    ) -> StoreResult<Vec<UsageRow>> {
        if customer_refs.is_empty() || metric_ids.is_empty() {
            return Ok(Vec::new());
        }
        // With one MAX() aggregate, SQLite takes the bare columns (acc) from the row holding the
        // maximum: the most recent row of each group.
        let mut q = QueryBuilder::<Sqlite>::new(
            "SELECT metric_id, MAX(hour_ms), groups, acc FROM usage_hourly WHERE env = ",
        );
        q.push_bind(env.as_str()).push(" AND customer_ref IN (");
        let mut sep = q.separated(", ");
        for r in customer_refs {
            sep.push_bind(r);
        }
        q.push(") AND metric_id IN (");
        let mut sep = q.separated(", ");
        for m in metric_ids {
            sep.push_bind(m);
        }
        q.push(") AND hour_ms < ")
            .push_bind(before_ms)
            .push(" GROUP BY customer_ref, metric_id, groups");
        let rows = q.build().fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| {
                Ok(UsageRow {
                    metric_id: row.get(0),
                    hour_ms: row.get(1),
                    groups: decode_groups(row.get(2))?,
                    acc: decode_acc(row.get(3))?,
                })
            })
            .collect()
    }

    async fn apply_batch(
        &self,
        shard_id: &str,
        seq: u64,
        partials: &[(Env, PartialKey, Accumulator)],
        now_ms: i64,
    ) -> StoreResult<BatchApplied> {
        let seq_i =
            i64::try_from(seq).map_err(|_| StoreError::Corrupt("batch seq out of range".into()))?;
        let mut tx = self.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO applied_batches (shard_id, seq, applied_ms) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(shard_id)
        .bind(seq_i)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Ok(BatchApplied {
                applied: false,
                dead_letters: Vec::new(),
            });
        }
        let existing = load_partials(&mut tx, &merge::batch_keys(partials)?).await?;
        let (rows, dead_letters) = merge::merge_batch(shard_id, seq, partials, existing, now_ms)?;
        upsert_partials(&mut tx, &rows).await?;
        for chunk in chunks(&dead_letters) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO dead_letters (shard_id, seq, partial_index, env, partial, reason, recorded_ms) ",
            );
            q.push_values(chunk, |mut b, d| {
                b.push_bind(&d.shard_id)
                    .push_bind(seq_i)
                    .push_bind(i64::try_from(d.index).unwrap_or(i64::MAX))
                    .push_bind(d.env.as_str())
                    .push_bind(&d.partial)
                    .push_bind(&d.reason)
                    .push_bind(d.recorded_ms);
            });
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(BatchApplied {
            applied: true,
            dead_letters,
        })
    }

    async fn dead_letter_count(&self, env: Env) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters WHERE env = ?")
            .bind(env.as_str())
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn dead_letters(&self, env: Env, limit: i64) -> StoreResult<Vec<DeadLetter>> {
        let rows = sqlx::query(
            "SELECT shard_id, seq, partial_index, partial, reason, recorded_ms FROM dead_letters
             WHERE env = ? ORDER BY shard_id, seq, partial_index LIMIT ?",
        )
        .bind(env.as_str())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(DeadLetter {
                    shard_id: row.get(0),
                    seq: u64::try_from(row.get::<i64, _>(1)).unwrap_or(0),
                    index: u64::try_from(row.get::<i64, _>(2)).unwrap_or(0),
                    env,
                    partial: row.get(3),
                    reason: row.get(4),
                    recorded_ms: row.get(5),
                })
            })
            .collect()
    }

    async fn prune_dedupe(&self, before_ms: i64) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM dedupe WHERE recorded_ms < ?")
            .bind(before_ms)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}

/// [`UnitOfWork`] over one write transaction.
struct SqliteWork(sqlx::Transaction<'static, Sqlite>);

#[async_trait]
impl UnitOfWork for SqliteWork {
    async fn put_invoice(
        &mut self,
        env: Env,
        row: &InvoiceRow,
        from: InvoiceStatus,
    ) -> StoreResult<bool> {
        let inserted = sqlx::query(
            "INSERT INTO invoices
                 (env, id, contract_id, customer_id, period_start_ms, period_end_ms, status, body)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(env.as_str())
        .bind(&row.id)
        .bind(&row.contract_id)
        .bind(&row.customer_id)
        .bind(row.period_start_ms)
        .bind(row.period_end_ms)
        .bind(row.status.as_str())
        .bind(&row.body)
        .execute(&mut *self.0)
        .await?;
        if inserted.rows_affected() == 1 {
            return Ok(true);
        }
        let moved = sqlx::query(
            "UPDATE invoices SET status = ?, body = ? WHERE env = ? AND id = ? AND status = ?",
        )
        .bind(row.status.as_str())
        .bind(&row.body)
        .bind(env.as_str())
        .bind(&row.id)
        .bind(from.as_str())
        .execute(&mut *self.0)
        .await?;
        Ok(moved.rows_affected() == 1)
    }

    async fn commit(self: Box<Self>) -> StoreResult<()> {
        Ok(self.0.commit().await?)
    }
}

fn invoice_from_row(row: &sqlx::sqlite::SqliteRow) -> StoreResult<InvoiceRow> {
    let status: String = row.get("status");
    Ok(InvoiceRow {
        id: row.get("id"),
        contract_id: row.get("contract_id"),
        customer_id: row.get("customer_id"),
        period_start_ms: row.get("period_start_ms"),
        period_end_ms: row.get("period_end_ms"),
        status: InvoiceStatus::parse(&status).ok_or(StoreError::Corrupt(status))?,
        body: row.get("body"),
    })
}

#[async_trait]
impl InvoiceStore for SqliteStore {
    async fn ensure_invoices(&self, env: Env, rows: &[InvoiceRow]) -> StoreResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        for chunk in chunks(rows) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO invoices (env, id, contract_id, customer_id, period_start_ms, period_end_ms, status) ",
            );
            q.push_values(chunk, |mut b, r| {
                b.push_bind(env.as_str())
                    .push_bind(&r.id)
                    .push_bind(&r.contract_id)
                    .push_bind(&r.customer_id)
                    .push_bind(r.period_start_ms)
                    .push_bind(r.period_end_ms)
                    .push_bind(InvoiceStatus::Draft.as_str());
            });
            q.push(" ON CONFLICT DO NOTHING");
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn invoices_for_contract(
        &self,
        env: Env,
        contract_id: &str,
    ) -> StoreResult<Vec<InvoiceRow>> {
        let rows = sqlx::query(
            "SELECT * FROM invoices WHERE env = ? AND contract_id = ? ORDER BY period_start_ms",
        )
        .bind(env.as_str())
        .bind(contract_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(invoice_from_row).collect()
    }

    async fn invoice(&self, env: Env, id: &str) -> StoreResult<Option<InvoiceRow>> {
        let row = sqlx::query("SELECT * FROM invoices WHERE env = ? AND id = ?")
            .bind(env.as_str())
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(invoice_from_row).transpose()
    }

    async fn transition_invoice(
        &self,
        env: Env,
        id: &str,
        from: InvoiceStatus,
        to: InvoiceStatus,
        body: &str,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE invoices SET status = ?, body = ? WHERE env = ? AND id = ? AND status = ?",
        )
        .bind(to.as_str())
        .bind(body)
        .bind(env.as_str())
        .bind(id)
        .bind(from.as_str())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn begin(&self) -> StoreResult<Box<dyn UnitOfWork>> {
        Ok(Box::new(SqliteWork(
            self.pool.begin_with("BEGIN IMMEDIATE").await?,
        )))
    }

    async fn record_job_failure(
        &self,
        env: Env,
        contract_id: &str,
        error: &str,
        now_ms: i64,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO job_failures
                 (env, contract_id, error, first_failed_ms, last_failed_ms, failures)
             VALUES (?, ?, ?, ?, ?, 1)
             ON CONFLICT (env, contract_id) DO UPDATE SET error = excluded.error,
                 last_failed_ms = excluded.last_failed_ms, failures = job_failures.failures + 1",
        )
        .bind(env.as_str())
        .bind(contract_id)
        .bind(error)
        .bind(now_ms)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn clear_job_failure(&self, env: Env, contract_id: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM job_failures WHERE env = ? AND contract_id = ?")
            .bind(env.as_str())
            .bind(contract_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn job_failures(&self, env: Env, limit: i64) -> StoreResult<Vec<JobFailure>> {
        let rows = sqlx::query(
            "SELECT * FROM job_failures WHERE env = ?
             ORDER BY first_failed_ms, contract_id LIMIT ?",
        )
        .bind(env.as_str())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r: &sqlx::sqlite::SqliteRow| JobFailure {
                contract_id: r.get("contract_id"),
                error: r.get("error"),
                first_failed_ms: r.get("first_failed_ms"),
                last_failed_ms: r.get("last_failed_ms"),
                failures: r.get("failures"),
            })
            .collect())
    }
}

#[async_trait]
impl TokenStore for SqliteStore {
    async fn insert_token(&self, hash: &str, env: Env, now_ms: i64) -> StoreResult<()> {
        sqlx::query("INSERT INTO tokens (hash, env, created_ms) VALUES (?, ?, ?)")
            .bind(hash)
            .bind(env.as_str())
            .bind(now_ms)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn token_env(&self, hash: &str) -> StoreResult<Option<Env>> {
        let env: Option<String> = sqlx::query_scalar("SELECT env FROM tokens WHERE hash = ?")
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?;
        Ok(env.as_deref().and_then(Env::parse))
    }

    async fn token_count(&self) -> StoreResult<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM tokens")
            .fetch_one(&self.pool)
            .await?)
    }
}

#[async_trait]
impl JobLock for SqliteStore {
    /// A SQLite file has one `tally serve`; jobs are safe to overlap anyway (every step is a
    /// conditional or idempotent write), so there is nothing to lock.
    async fn try_job_lock(&self) -> StoreResult<Option<JobGuard>> {
        Ok(Some(JobGuard::unshared()))
    }
}
