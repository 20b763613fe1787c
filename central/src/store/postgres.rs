//! The PostgreSQL backend: production storage, shared by several stateless `tally serve` replicas.
//!
//! Schema: `migrations/postgres`, the same tables and columns as SQLite's; times are BIGINT epoch
//! milliseconds, decimals and JSON bodies are TEXT so every number literal survives byte for byte.
//!
//! Replicas behave as one:
//! - Usage writes (`commit_ingest`, `apply_batch`) take the transaction-scoped advisory lock
//!   [`USAGE_LOCK`] before claiming dedupe keys or applied batches, so the read-merge-write of
//!   hourly partials never interleaves across processes; the lock goes with the transaction, so a
//!   killed replica holds nothing and leaves nothing half-written.
//! - Background jobs run under the session advisory lock [`JOB_LOCK`], held on one connection for
//!   the pass (`pg_try_advisory_lock`: a replica that cannot take it skips the pass).
//! - Invoice finalization is a conditional UPDATE (DRAFT → FINALIZED), so exactly one wins.
//!
//! Connections: a bounded pool (`PoolOptions`); idle connections are checked before use (alive and
//! writable), so after the database comes back, or becomes writable again, the pool reconnects by
//! itself. Until then requests fail with `StoreError::Database` (a 503).

mod usage;

use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{Connection, PgConnection, PgPool, Postgres, QueryBuilder, Row};

use super::*;

/// Advisory lock key serializing usage writes across replicas ("tally" + 1).
pub const USAGE_LOCK: i64 = 0x7a11_7900_0001;
/// Advisory lock key of the background jobs ("tally" + 2).
pub const JOB_LOCK: i64 = 0x7a11_7900_0002;

/// How long to wait between attempts to reach a database that is not up yet.
const CONNECT_RETRY: Duration = Duration::from_secs(1);

pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects (waiting up to `pool.connect_wait` for the server), then runs the migrations.
    /// Several replicas may start at once: sqlx serializes migrations with an advisory lock.
    pub async fn open(url: &str, pool: &PoolOptions) -> anyhow::Result<Self> {
        let options = PgConnectOptions::from_str(url)
            .with_context(|| format!("invalid PostgreSQL URL {}", redact_url(url)))?;
        wait_until_reachable(&options, url, pool.connect_wait).await?;
        let pg = PgPoolOptions::new()
            // The job lock holds one connection for a whole pass while the pass uses others.
            .max_connections(pool.max_connections.max(2))
            .acquire_timeout(pool.acquire_timeout)
            // An idle connection is checked before use, and replaced if it fails the check: a
            // dead one (the server restarted or dropped the session), and a read-only one. A
            // session opened while the database was read-only (`default_transaction_read_only`,
            // a standby before promotion) stays read-only for its whole life, so keeping it
            // would refuse writes long after the database is writable again. The query replaces
            // sqlx's ping: one round trip either way.
            .test_before_acquire(false)
            .before_acquire(|conn, _| {
                Box::pin(async move {
                    let read_only: String =
                        sqlx::query_scalar("SELECT current_setting('transaction_read_only')")
                            .fetch_one(&mut *conn)
                            .await?;
                    Ok(read_only == "off")
                })
            })
            .connect_lazy_with(options);
        sqlx::migrate!("./migrations/postgres")
            .run(&pg)
            .await
            .context("running PostgreSQL migrations")?;
        Ok(PostgresStore { pool: pg })
    }
}

/// Tries to connect until it works or `wait` has passed; only "not up yet" errors are retried.
async fn wait_until_reachable(
    options: &PgConnectOptions,
    url: &str,
    wait: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + wait;
    loop {
        let error = match PgConnection::connect_with(options).await {
            Ok(conn) => {
                let _ = conn.close().await;
                return Ok(());
            }
            Err(e) => e,
        };
        if !not_up_yet(&error) || Instant::now() >= deadline {
            anyhow::bail!(
                "cannot connect to PostgreSQL at {} (waited up to {}s): {error}",
                redact_url(url),
                wait.as_secs()
            );
        }
        tracing::warn!(database = %redact_url(url), %error, "database not reachable yet; retrying");
        tokio::time::sleep(CONNECT_RETRY).await;
    }
}

/// Errors a starting or briefly unreachable server gives; anything else (a wrong password, a
/// missing database) will not fix itself.
fn not_up_yet(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut => true,
        // cannot_connect_now (starting up or shutting down), too_many_connections
        sqlx::Error::Database(db) => matches!(db.code().as_deref(), Some("57P03" | "53300")),
        _ => false,
    }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

fn doc_from_row(row: &PgRow) -> Doc {
    Doc {
        seq: row.get("seq"),
        id: row.get("id"),
        parent_id: row.get("parent_id"),
        archived: row.get("archived"),
        created_ms: row.get("created_ms"),
        body: row.get("body"),
        version: row.get("version"),
    }
}

async fn insert_doc(conn: &mut PgConnection, env: Env, doc: &NewDoc<'_>) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO documents (env, kind, id, parent_id, unique_key, created_ms, body)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
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
    conn: &mut PgConnection,
    env: Env,
    customer_id: &str,
    aliases: &[String],
) -> StoreResult<()> {
    for alias in aliases {
        // Customer ids are never deleted, so this check cannot be raced into a wrong answer.
        let is_id: Option<i64> = sqlx::query_scalar(
            "SELECT seq FROM documents WHERE env = $1 AND kind = 'customer' AND id = $2",
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
        sqlx::query("INSERT INTO customer_aliases (env, alias, customer_id) VALUES ($1, $2, $3)")
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
    conn: &mut PgConnection,
    env: Env,
    card_id: &str,
    aliases: &[String],
) -> StoreResult<()> {
    sqlx::query("DELETE FROM rate_card_aliases WHERE env = $1 AND rate_card_id = $2")
        .bind(env.as_str())
        .bind(card_id)
        .execute(&mut *conn)
        .await?;
    for alias in aliases {
        sqlx::query(
            "INSERT INTO rate_card_aliases (env, alias, rate_card_id) VALUES ($1, $2, $3)
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
impl ConfigStore for PostgresStore {
    async fn insert_docs(&self, env: Env, docs: &[NewDoc<'_>]) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        for doc in docs {
            insert_doc(&mut tx, env, doc).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn get_doc(&self, env: Env, kind: &str, id: &str) -> StoreResult<Option<Doc>> {
        let row = sqlx::query("SELECT * FROM documents WHERE env = $1 AND kind = $2 AND id = $3")
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
            "UPDATE documents SET body = $1, archived = $2, version = version + 1
             WHERE env = $3 AND kind = $4 AND id = $5 AND version = $6",
        )
        .bind(body)
        .bind(archived)
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
        let mut q = QueryBuilder::<Postgres>::new("SELECT * FROM documents WHERE env = ");
        q.push_bind(env.as_str())
            .push(" AND kind = ")
            .push_bind(kind);
        if let Some(parent) = parent_id {
            q.push(" AND parent_id = ").push_bind(parent);
        }
        match filter {
            ArchiveFilter::Active => q.push(" AND NOT archived"),
            ArchiveFilter::Archived => q.push(" AND archived"),
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
        let mut tx = self.pool.begin().await?;
        let taken: Option<String> = sqlx::query_scalar(
            "SELECT customer_id FROM customer_aliases WHERE env = $1 AND alias = $2",
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
        let mut tx = self.pool.begin().await?;
        // The document first: its row lock orders concurrent changes of one customer, and a
        // stale version stops here having changed nothing.
        let done = sqlx::query(
            "UPDATE documents SET body = $1, version = version + 1
             WHERE env = $2 AND kind = 'customer' AND id = $3 AND version = $4",
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
        sqlx::query("DELETE FROM customer_aliases WHERE env = $1 AND customer_id = $2")
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
        let mut tx = self.pool.begin().await?;
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
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE documents SET body = $1, version = version + 1
             WHERE env = $2 AND kind = 'rate_card' AND id = $3 AND version = $4",
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
            "SELECT rate_card_id FROM rate_card_aliases WHERE env = $1 AND alias = $2",
        )
        .bind(env.as_str())
        .bind(alias)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn metrics_version(&self) -> StoreResult<u64> {
        let v: i64 = sqlx::query_scalar(super::usage::sql::METRICS_VERSION)
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(v).unwrap_or(0))
    }

    async fn customer_by_alias(&self, env: Env, alias: &str) -> StoreResult<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT customer_id FROM customer_aliases WHERE env = $1 AND alias = $2",
        )
        .bind(env.as_str())
        .bind(alias)
        .fetch_optional(&self.pool)
        .await?)
    }
}

/// [`UnitOfWork`] over one write transaction.
struct PostgresWork(sqlx::Transaction<'static, Postgres>);

#[async_trait]
impl UnitOfWork for PostgresWork {
    async fn put_invoice(
        &mut self,
        env: Env,
        row: &InvoiceRow,
        from: InvoiceStatus,
    ) -> StoreResult<bool> {
        let inserted = sqlx::query(
            "INSERT INTO invoices
                 (env, id, contract_id, customer_id, period_start_ms, period_end_ms, status, body)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
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
            "UPDATE invoices SET status = $1, body = $2 WHERE env = $3 AND id = $4 AND status = $5",
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

fn invoice_from_row(row: &PgRow) -> StoreResult<InvoiceRow> {
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
impl InvoiceStore for PostgresStore {
    async fn ensure_invoices(&self, env: Env, rows: &[InvoiceRow]) -> StoreResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        let contracts: Vec<&str> = rows.iter().map(|r| r.contract_id.as_str()).collect();
        let customers: Vec<&str> = rows.iter().map(|r| r.customer_id.as_str()).collect();
        let starts: Vec<i64> = rows.iter().map(|r| r.period_start_ms).collect();
        let ends: Vec<i64> = rows.iter().map(|r| r.period_end_ms).collect();
        sqlx::query(
            "INSERT INTO invoices
                 (env, id, contract_id, customer_id, period_start_ms, period_end_ms, status)
             SELECT $1, i, c, u, s, e, $7
             FROM UNNEST($2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[])
                  AS r(i, c, u, s, e)
             ON CONFLICT DO NOTHING",
        )
        .bind(env.as_str())
        .bind(&ids)
        .bind(&contracts)
        .bind(&customers)
        .bind(&starts)
        .bind(&ends)
        .bind(InvoiceStatus::Draft.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn invoices_for_contract(
        &self,
        env: Env,
        contract_id: &str,
    ) -> StoreResult<Vec<InvoiceRow>> {
        let rows = sqlx::query(
            "SELECT * FROM invoices WHERE env = $1 AND contract_id = $2 ORDER BY period_start_ms",
        )
        .bind(env.as_str())
        .bind(contract_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(invoice_from_row).collect()
    }

    async fn invoice(&self, env: Env, id: &str) -> StoreResult<Option<InvoiceRow>> {
        let row = sqlx::query("SELECT * FROM invoices WHERE env = $1 AND id = $2")
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
        // Under READ COMMITTED a concurrent finalizer waits for the first, re-checks `status`
        // on the committed row and updates nothing: exactly one transition wins.
        let done = sqlx::query(
            "UPDATE invoices SET status = $1, body = $2 WHERE env = $3 AND id = $4 AND status = $5",
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
        Ok(Box::new(PostgresWork(self.pool.begin().await?)))
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
             VALUES ($1, $2, $3, $4, $5, 1)
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
        sqlx::query("DELETE FROM job_failures WHERE env = $1 AND contract_id = $2")
            .bind(env.as_str())
            .bind(contract_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn job_failures(&self, env: Env, limit: i64) -> StoreResult<Vec<JobFailure>> {
        let rows = sqlx::query(
            "SELECT * FROM job_failures WHERE env = $1
             ORDER BY first_failed_ms, contract_id LIMIT $2",
        )
        .bind(env.as_str())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r: &PgRow| JobFailure {
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
impl TokenStore for PostgresStore {
    async fn insert_token(&self, hash: &str, env: Env, now_ms: i64) -> StoreResult<()> {
        sqlx::query("INSERT INTO tokens (hash, env, created_ms) VALUES ($1, $2, $3)")
            .bind(hash)
            .bind(env.as_str())
            .bind(now_ms)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn token_env(&self, hash: &str) -> StoreResult<Option<Env>> {
        let env: Option<String> = sqlx::query_scalar("SELECT env FROM tokens WHERE hash = $1")
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
impl JobLock for PostgresStore {
    async fn try_job_lock(&self) -> StoreResult<Option<JobGuard>> {
        let mut conn = self.pool.acquire().await?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(JOB_LOCK)
            .fetch_one(&mut *conn)
            .await?;
        Ok(got.then(|| JobGuard::holding(Box::new(HeldJobLock(Some(conn))))))
    }
}

/// The connection whose session holds [`JOB_LOCK`].
struct HeldJobLock(Option<PoolConnection<Postgres>>);

#[async_trait]
impl HeldLock for HeldJobLock {
    async fn release(mut self: Box<Self>) -> StoreResult<()> {
        let Some(mut conn) = self.0.take() else {
            return Ok(());
        };
        let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(JOB_LOCK)
            .execute(&mut *conn)
            .await;
        if unlocked.is_err() {
            // Never hand a connection that may still hold the lock back to the pool.
            drop(conn.detach());
        }
        unlocked?;
        Ok(())
    }
}

impl Drop for HeldJobLock {
    fn drop(&mut self) {
        // Dropped without `release` (a failed or cancelled pass): closing the session frees the lock.
        if let Some(conn) = self.0.take() {
            drop(conn.detach());
        }
    }
}
