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
        let store = PostgresStore { pool: pg };
        Ok(store)
    }

    async fn begin_write(&self) -> StoreResult<sqlx::Transaction<'static, Postgres>> {
        Ok(self.pool.begin().await?)
    }

    /// Draft invoice rows in one statement over arrays.
    async fn insert_draft_invoices(&self, env: Env, rows: &[InvoiceRow]) -> StoreResult<()> {
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

/// Leases due outbox messages: the rows are locked `FOR UPDATE SKIP LOCKED`, so replicas
/// claiming at once take disjoint messages, and a row leased meanwhile is re-checked (READ
/// COMMITTED re-evaluates the WHERE on its new version) and left out.
const CLAIM_OUTBOX: &str = "UPDATE outbox
     SET lease_owner = $1, lease_until_ms = $2, attempts = attempts + 1
     WHERE id IN (SELECT id FROM outbox
                  WHERE delivered_ms IS NULL AND failed_ms IS NULL AND next_attempt_ms <= $3
                    AND (lease_until_ms IS NULL OR lease_until_ms <= $3)
                  ORDER BY next_attempt_ms LIMIT $4
                  FOR UPDATE SKIP LOCKED)
     RETURNING *";

super::documents::document_stores!(PostgresStore, PostgresWork, Postgres, PgRow, PgConnection);

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
