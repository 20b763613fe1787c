//! PostgreSQL's usage store: the dialect's half of `store::usage` (claiming keys, loading and
//! writing hourly rows and their rollups as `UNNEST`ed arrays, one statement shape whatever the number of rows)
//! inside one transaction that first takes the advisory lock [`USAGE_LOCK`], so the
//! read-merge-write of hourly rows never interleaves across replicas.

use std::collections::HashSet;
use std::marker::PhantomData;

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Postgres, QueryBuilder, Row};
use tally_core::accumulate::{Accumulator, PartialKey};
use tally_core::event::{Event, StoredEvent};
use tally_core::fold::{ClaimIo, RowIo};
use tally_core::rating::UsageRow;
use tally_core::rollup::{Level, Range};
use tally_core::time::DAY_MS;

use super::super::usage::{
    self, decode_acc, decode_groups, parse_env, sql, table, Claim, Compacted, DayKey, DirtyDay,
    EventColumns, EventRow, LevelKey, RowKey, RowWrite,
};
use super::super::{
    BatchApplied, DeadLetter, Env, IngestItem, ItemOutcome, StoreError, StoreResult, UsageStore,
};
use super::{PostgresStore, USAGE_LOCK};

/// The IO of one usage transaction.
struct Tx<'c, 'a> {
    conn: &'c mut PgConnection,
    now_ms: i64,
    claims: PhantomData<Claim<'a>>,
}

impl<'c> Tx<'c, '_> {
    /// Takes the usage lock for the rest of the transaction on `conn`.
    async fn lock(conn: &'c mut PgConnection, now_ms: i64) -> StoreResult<Self> {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(USAGE_LOCK)
            .execute(&mut *conn)
            .await?;
        Ok(Tx {
            conn,
            now_ms,
            claims: PhantomData,
        })
    }
}

impl RowIo for Tx<'_, '_> {
    type Row = LevelKey;
    type Error = StoreError;

    async fn load(&mut self, rows: &[LevelKey]) -> StoreResult<Vec<(LevelKey, Accumulator)>> {
        usage::load_levels(self, rows).await
    }

    async fn write(&mut self, rows: Vec<(LevelKey, Accumulator)>) -> StoreResult<()> {
        usage::write_levels(self, rows).await
    }
}

impl usage::TableIo for Tx<'_, '_> {
    async fn load_table(
        &mut self,
        table: &'static str,
        keys: &[RowKey],
    ) -> StoreResult<Vec<(RowKey, Accumulator)>> {
        load_partials(self.conn, table, keys).await
    }

    async fn write_table(&mut self, table: &'static str, rows: &[RowWrite]) -> StoreResult<()> {
        upsert_partials(self.conn, table, rows).await
    }
}

impl usage::TouchTx for Tx<'_, '_> {
    async fn touch_days(&mut self, days: &[DayKey]) -> StoreResult<()> {
        if days.is_empty() {
            return Ok(());
        }
        let envs: Vec<&str> = days.iter().map(|d| d.0.as_str()).collect();
        let refs: Vec<&str> = days.iter().map(|d| d.1.as_str()).collect();
        let metrics: Vec<&str> = days.iter().map(|d| d.2.as_str()).collect();
        let starts: Vec<i64> = days.iter().map(|d| d.3).collect();
        let statement = format!(
            "INSERT INTO usage_dirty (env, customer_ref, metric_id, day_ms, gen)
             SELECT e, c, m, d, 1 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[])
                 AS k(e, c, m, d){}",
            sql::TOUCH_DAYS_CONFLICT
        );
        sqlx::query(&statement)
            .bind(&envs)
            .bind(&refs)
            .bind(&metrics)
            .bind(&starts)
            .execute(&mut *self.conn)
            .await?;
        Ok(())
    }
}

impl usage::CompactTx for Tx<'_, '_> {
    async fn dirty_days(&mut self, limit: i64) -> StoreResult<Vec<DirtyDay>> {
        let rows = sqlx::query(sql::DIRTY_DAYS)
            .bind(limit)
            .fetch_all(&mut *self.conn)
            .await?;
        rows.iter()
            .map(|row| {
                let key = (parse_env(row.get(0))?, row.get(1), row.get(2), row.get(3));
                Ok((key, row.get(4)))
            })
            .collect()
    }

    async fn hours_of(&mut self, day: &DayKey) -> StoreResult<Vec<(String, Accumulator)>> {
        let (env, customer_ref, metric_id, day_ms) = day;
        let rows = sqlx::query(sql::HOURS_OF_DAY)
            .bind(env.as_str())
            .bind(customer_ref)
            .bind(metric_id)
            .bind(*day_ms)
            .bind(day_ms.saturating_add(DAY_MS))
            .fetch_all(&mut *self.conn)
            .await?;
        rows.iter()
            .map(|row| Ok((row.get(0), decode_acc(row.get(1))?)))
            .collect()
    }

    async fn settle(&mut self, day: &DirtyDay, failed: bool) -> StoreResult<()> {
        let ((env, customer_ref, metric_id, day_ms), gen) = day;
        let statement = if failed {
            sql::FAIL_DAY
        } else {
            sql::CLEAR_DAY
        };
        sqlx::query(statement)
            .bind(env.as_str())
            .bind(customer_ref)
            .bind(metric_id)
            .bind(*day_ms)
            .bind(*gen)
            .execute(&mut *self.conn)
            .await?;
        Ok(())
    }
}

impl<'a> ClaimIo for Tx<'_, 'a> {
    type Claim = Claim<'a>;

    async fn claim(&mut self, keys: &[&Claim<'a>]) -> StoreResult<Vec<bool>> {
        let (envs, ids) = claim_columns(keys);
        let rows = sqlx::query(
            "INSERT INTO dedupe (env, transaction_id, recorded_ms)
             SELECT e, t, $3 FROM UNNEST($1::text[], $2::text[]) AS k(e, t)
             ON CONFLICT DO NOTHING RETURNING env, transaction_id",
        )
        .bind(&envs)
        .bind(&ids)
        .bind(self.now_ms)
        .fetch_all(&mut *self.conn)
        .await?;
        let claimed: HashSet<(Env, String)> = rows
            .iter()
            .map(|row| Ok((parse_env(row.get(0))?, row.get::<String, _>(1))))
            .collect::<StoreResult<_>>()?;
        Ok(keys
            .iter()
            .map(|(env, id)| claimed.contains(&(*env, id.to_string())))
            .collect())
    }

    async fn release(&mut self, keys: &[&Claim<'a>]) -> StoreResult<()> {
        let (envs, ids) = claim_columns(keys);
        sqlx::query(
            "DELETE FROM dedupe WHERE (env, transaction_id) IN
             (SELECT * FROM UNNEST($1::text[], $2::text[]))",
        )
        .bind(&envs)
        .bind(&ids)
        .execute(&mut *self.conn)
        .await?;
        Ok(())
    }
}

impl usage::EventTx for Tx<'_, '_> {
    async fn insert_events(
        &mut self,
        counted: &[EventRow],
        duplicates: &[EventRow],
    ) -> StoreResult<()> {
        for (rows, conflict) in [
            (counted, sql::COUNTED_CONFLICT),
            (duplicates, sql::DUPLICATE_CONFLICT),
        ] {
            if rows.is_empty() {
                continue;
            }
            let envs: Vec<&str> = rows.iter().map(|r| r.env.as_str()).collect();
            let ids: Vec<&str> = rows.iter().map(|r| r.transaction_id.as_str()).collect();
            let dups: Vec<i64> = rows.iter().map(|r| i64::from(r.duplicate)).collect();
            let refs: Vec<&str> = rows.iter().map(|r| r.customer_ref.as_str()).collect();
            let types: Vec<&str> = rows.iter().map(|r| r.event_type.as_str()).collect();
            let times: Vec<i64> = rows.iter().map(|r| r.timestamp_ms).collect();
            let props: Vec<&str> = rows.iter().map(|r| r.properties.as_str()).collect();
            let matched: Vec<&str> = rows.iter().map(|r| r.matched_metrics.as_str()).collect();
            let processed: Vec<i64> = rows.iter().map(|r| r.processed_ms).collect();
            let statement = format!(
                "INSERT INTO events ({})
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[],
                                      $6::bigint[], $7::text[], $8::text[], $9::bigint[]){conflict}",
                sql::EVENT_COLUMNS
            );
            sqlx::query(&statement)
                .bind(&envs)
                .bind(&ids)
                .bind(&dups)
                .bind(&refs)
                .bind(&types)
                .bind(&times)
                .bind(&props)
                .bind(&matched)
                .bind(&processed)
                .execute(&mut *self.conn)
                .await?;
        }
        Ok(())
    }
}

impl usage::BatchTx for Tx<'_, '_> {
    async fn record_batch(&mut self, shard_id: &str, seq: i64, now_ms: i64) -> StoreResult<bool> {
        let done = sqlx::query(sql::RECORD_BATCH)
            .bind(shard_id)
            .bind(seq)
            .bind(now_ms)
            .execute(&mut *self.conn)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn insert_dead_letters(&mut self, dead: &[DeadLetter]) -> StoreResult<()> {
        let column = |f: fn(&DeadLetter) -> i64| dead.iter().map(f).collect::<Vec<i64>>();
        let seqs = column(|d| i64::try_from(d.seq).unwrap_or(i64::MAX));
        let indexes = column(|d| i64::try_from(d.index).unwrap_or(i64::MAX));
        let times = column(|d| d.recorded_ms);
        let shards: Vec<&str> = dead.iter().map(|d| d.shard_id.as_str()).collect();
        let envs: Vec<&str> = dead.iter().map(|d| d.env.as_str()).collect();
        let bodies: Vec<&str> = dead.iter().map(|d| d.partial.as_str()).collect();
        let reasons: Vec<&str> = dead.iter().map(|d| d.reason.as_str()).collect();
        sqlx::query(
            "INSERT INTO dead_letters (shard_id, seq, partial_index, env, partial, reason, recorded_ms)
             SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::text[],
                                  $6::text[], $7::bigint[])",
        )
        .bind(&shards)
        .bind(&seqs)
        .bind(&indexes)
        .bind(&envs)
        .bind(&bodies)
        .bind(&reasons)
        .bind(&times)
        .execute(&mut *self.conn)
        .await?;
        Ok(())
    }
}

fn claim_columns<'a>(keys: &[&Claim<'a>]) -> (Vec<&'static str>, Vec<&'a str>) {
    keys.iter().map(|(env, id)| (env.as_str(), *id)).unzip()
}

/// Row keys as column arrays, for `UNNEST`: one statement shape whatever the number of rows.
#[derive(Default)]
struct KeyColumns<'a> {
    env: Vec<&'static str>,
    customer_ref: Vec<&'a str>,
    metric_id: Vec<&'a str>,
    hour_ms: Vec<i64>,
    groups: Vec<&'a str>,
}

impl<'a> KeyColumns<'a> {
    fn of(keys: impl Iterator<Item = &'a RowKey>) -> Self {
        let mut c = KeyColumns::default();
        for k in keys {
            c.env.push(k.0.as_str());
            c.customer_ref.push(&k.1);
            c.metric_id.push(&k.2);
            c.hour_ms.push(k.3);
            c.groups.push(&k.4);
        }
        c
    }
}

/// A row's key and accumulator from columns `(env, customer_ref, metric_id, hour_ms, groups, acc)`.
fn key_and_acc(row: &PgRow) -> StoreResult<(RowKey, Accumulator)> {
    let key = (
        parse_env(row.get(0))?,
        row.get(1),
        row.get(2),
        row.get(3),
        row.get(4),
    );
    Ok((key, decode_acc(row.get(5))?))
}

async fn load_partials(
    conn: &mut PgConnection,
    table: &str,
    keys: &[RowKey],
) -> StoreResult<Vec<(RowKey, Accumulator)>> {
    let c = KeyColumns::of(keys.iter());
    let statement = format!(
        "SELECT u.env, u.customer_ref, u.metric_id, u.hour_ms, u.groups, u.acc
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[])
              AS k(env, customer_ref, metric_id, hour_ms, groups)
         JOIN {table} u USING (env, customer_ref, metric_id, hour_ms, groups)"
    );
    let rows = sqlx::query(&statement)
        .bind(&c.env)
        .bind(&c.customer_ref)
        .bind(&c.metric_id)
        .bind(&c.hour_ms)
        .bind(&c.groups)
        .fetch_all(&mut *conn)
        .await?;
    rows.iter().map(key_and_acc).collect()
}

async fn upsert_partials(
    conn: &mut PgConnection,
    table: &str,
    rows: &[RowWrite],
) -> StoreResult<()> {
    let c = KeyColumns::of(rows.iter().map(|(k, _)| k));
    let accs: Vec<&str> = rows.iter().map(|(_, a)| a.as_str()).collect();
    let statement = format!(
        "INSERT INTO {table} (env, customer_ref, metric_id, hour_ms, groups, acc)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[])
         ON CONFLICT (env, customer_ref, metric_id, hour_ms, groups) DO UPDATE SET acc = excluded.acc"
    );
    sqlx::query(&statement)
        .bind(&c.env)
        .bind(&c.customer_ref)
        .bind(&c.metric_id)
        .bind(&c.hour_ms)
        .bind(&c.groups)
        .bind(&accs)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// One `(metric_id, hour_ms, groups, acc)` row as rating reads it.
fn usage_row(row: &PgRow) -> StoreResult<UsageRow> {
    Ok(UsageRow {
        metric_id: row.get(0),
        hour_ms: row.get(1),
        groups: decode_groups(row.get(2))?,
        acc: decode_acc(row.get(3))?,
    })
}

#[async_trait]
impl UsageStore for PostgresStore {
    async fn commit_ingest(
        &self,
        items: &[IngestItem],
        now_ms: i64,
    ) -> StoreResult<Vec<ItemOutcome>> {
        let mut tx = self.pool.begin().await?;
        let outcomes =
            usage::commit_ingest(&mut Tx::lock(&mut tx, now_ms).await?, items, now_ms).await?;
        tx.commit().await?;
        Ok(outcomes)
    }

    async fn rollup_backlog(&self) -> StoreResult<u64> {
        let pending: i64 = sqlx::query_scalar(sql::DIRTY_PENDING)
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(pending).unwrap_or(0))
    }

    async fn compact_rollups(&self, limit: i64) -> StoreResult<Compacted> {
        let pending = self.rollup_backlog().await?;
        if pending == 0 {
            return Ok(Compacted::default());
        }
        let mut tx = self.pool.begin().await?;
        let mut done = usage::compact(&mut Tx::lock(&mut tx, 0).await?, limit).await?;
        tx.commit().await?;
        done.pending = pending;
        Ok(done)
    }

    async fn dirty_days(
        &self,
        env: Env,
        customer_refs: &[String],
        metric_ids: &[String],
        from_ms: i64,
        to_ms: i64,
    ) -> StoreResult<Vec<i64>> {
        if customer_refs.is_empty() || metric_ids.is_empty() {
            return Ok(Vec::new());
        }
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT day_ms FROM usage_dirty
             WHERE env = $1 AND customer_ref = ANY($2) AND metric_id = ANY($3)
               AND day_ms >= $4 AND day_ms < $5",
        )
        .bind(env.as_str())
        .bind(customer_refs)
        .bind(metric_ids)
        .bind(Level::Day.block_start(from_ms))
        .bind(to_ms)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn level_rows(
        &self,
        env: Env,
        customer_refs: &[String],
        metric_ids: &[String],
        range: Range,
    ) -> StoreResult<Vec<UsageRow>> {
        self.usage_blocks(env, customer_refs, metric_ids, &[range])
            .await
    }

    async fn usage_blocks(
        &self,
        env: Env,
        customer_refs: &[String],
        metric_ids: &[String],
        ranges: &[Range],
    ) -> StoreResult<Vec<UsageRow>> {
        if customer_refs.is_empty() || metric_ids.is_empty() || ranges.is_empty() {
            return Ok(Vec::new());
        }
        // Every range in one statement, answered as one JSON array (`usage::decode_rows`);
        // `json` (not `jsonb`) keeps the stored text as it is.
        let mut q = QueryBuilder::<Postgres>::new(
            "SELECT coalesce(json_agg(json_build_array(metric_id, hour_ms, groups::json, acc::json)), '[]')::text FROM (",
        );
        for (i, range) in ranges.iter().enumerate() {
            if i > 0 {
                q.push(" UNION ALL ");
            }
            q.push(format!(
                "SELECT metric_id, hour_ms, groups, acc FROM {} WHERE env = ",
                table(range.level)
            ));
            q.push_bind(env.as_str())
                .push(" AND customer_ref = ANY(")
                .push_bind(customer_refs)
                .push(") AND metric_id = ANY(")
                .push_bind(metric_ids)
                .push(") AND hour_ms >= ")
                .push_bind(range.from_ms)
                .push(" AND hour_ms < ")
                .push_bind(range.to_ms);
        }
        q.push(") r");
        let found: String = q.build_query_scalar().fetch_one(&self.pool).await?;
        usage::decode_rows(&found)
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
        let rows = sqlx::query(
            "SELECT DISTINCT ON (customer_ref, metric_id, groups) metric_id, hour_ms, groups, acc
             FROM usage_hourly
             WHERE env = $1 AND customer_ref = ANY($2) AND metric_id = ANY($3) AND hour_ms < $4
             ORDER BY customer_ref, metric_id, groups, hour_ms DESC",
        )
        .bind(env.as_str())
        .bind(customer_refs)
        .bind(metric_ids)
        .bind(before_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(usage_row).collect()
    }

    async fn apply_batch(
        &self,
        shard_id: &str,
        seq: u64,
        partials: &[(Env, PartialKey, Accumulator)],
        events: &[StoredEvent],
        now_ms: i64,
    ) -> StoreResult<BatchApplied> {
        let mut tx = self.pool.begin().await?;
        let mut io = Tx::lock(&mut tx, now_ms).await?;
        let done = usage::apply_batch(&mut io, shard_id, seq, partials, events, now_ms).await?;
        if done.applied {
            tx.commit().await?;
        }
        Ok(done)
    }

    async fn events_between(
        &self,
        env: Env,
        customer_refs: &[String],
        from_ms: i64,
        to_ms: i64,
    ) -> StoreResult<Vec<Event>> {
        if customer_refs.is_empty() || from_ms >= to_ms {
            return Ok(Vec::new());
        }
        let statement = format!(
            "SELECT {} FROM events WHERE env = $1 AND customer_ref = ANY($2) AND duplicate = 0
             AND timestamp_ms >= $3 AND timestamp_ms < $4 ORDER BY timestamp_ms, transaction_id",
            sql::EVENT_COLUMNS
        );
        let rows: Vec<EventColumns> = sqlx::query_as(&statement)
            .bind(env.as_str())
            .bind(customer_refs)
            .bind(from_ms)
            .bind(to_ms)
            .fetch_all(&self.pool)
            .await?;
        Ok(usage::stored_events(rows)?
            .into_iter()
            .map(|e| e.event)
            .collect())
    }

    async fn search_events(
        &self,
        env: Env,
        transaction_ids: &[String],
        since_ms: i64,
    ) -> StoreResult<Vec<StoredEvent>> {
        if transaction_ids.is_empty() {
            return Ok(Vec::new());
        }
        let statement = format!(
            "SELECT {} FROM events WHERE env = $1 AND transaction_id = ANY($2)
             AND timestamp_ms >= $3 ORDER BY transaction_id, duplicate",
            sql::EVENT_COLUMNS
        );
        let rows: Vec<EventColumns> = sqlx::query_as(&statement)
            .bind(env.as_str())
            .bind(transaction_ids)
            .bind(since_ms)
            .fetch_all(&self.pool)
            .await?;
        usage::stored_events(rows)
    }

    async fn prune_events(&self, before_ms: i64, limit: i64) -> StoreResult<u64> {
        let done = sqlx::query(sql::PRUNE_EVENTS)
            .bind(before_ms)
            .bind(limit)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn dead_letter_count(&self, env: Env) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar(sql::DEAD_LETTER_COUNT)
            .bind(env.as_str())
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn dead_letters(&self, env: Env, limit: i64) -> StoreResult<Vec<DeadLetter>> {
        let rows: Vec<(String, i64, i64, String, String, i64)> = sqlx::query_as(sql::DEAD_LETTERS)
            .bind(env.as_str())
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| usage::dead_letter_row(env, row))
            .collect())
    }

    async fn prune_dedupe(&self, before_ms: i64) -> StoreResult<u64> {
        let done = sqlx::query(sql::PRUNE_DEDUPE)
            .bind(before_ms)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn claimed_transactions(
        &self,
        env: Env,
        transaction_ids: &[String],
    ) -> StoreResult<Vec<String>> {
        if transaction_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut q = usage::claimed_query::<Postgres>(env, transaction_ids);
        Ok(q.build_query_scalar().fetch_all(&self.pool).await?)
    }
}
