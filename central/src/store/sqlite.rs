//! The SQLite backend: the embedded default (`sqlite://tally.db`, created if missing, WAL mode).
//!
//! Durability: `synchronous = FULL`, so a committed ingest transaction survives a crash; group
//! commit (see `crate::ingest`) amortises the fsync over many requests. Write transactions start
//! with `BEGIN IMMEDIATE` so a reader never has to upgrade to a writer mid-transaction. A write
//! that fails (disk full, I/O error) rolls back whole, and the pool drops any connection it left
//! confused, so the service recovers by itself once the cause is gone.

mod usage;

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, QueryBuilder, Row, Sqlite, SqlitePool};

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
        let store = SqliteStore { pool };
        Ok(store)
    }

    async fn begin_write(&self) -> StoreResult<sqlx::Transaction<'static, Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// Draft invoice rows in chunked multi-row `VALUES` statements, one transaction.
    async fn insert_draft_invoices(&self, env: Env, rows: &[InvoiceRow]) -> StoreResult<()> {
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

/// Leases due outbox messages: one conditional UPDATE under SQLite's write lock, so two claimers
/// never lease one message.
const CLAIM_OUTBOX: &str = "UPDATE outbox
     SET lease_owner = $1, lease_until_ms = $2, attempts = attempts + 1
     WHERE id IN (SELECT id FROM outbox
                  WHERE delivered_ms IS NULL AND failed_ms IS NULL AND next_attempt_ms <= $3
                    AND (lease_until_ms IS NULL OR lease_until_ms <= $3)
                  ORDER BY next_attempt_ms LIMIT $4)
     RETURNING *";

super::documents::document_stores!(
    SqliteStore,
    SqliteWork,
    Sqlite,
    sqlx::sqlite::SqliteRow,
    sqlx::SqliteConnection
);

#[async_trait]
impl JobLock for SqliteStore {
    /// A SQLite file has one `tally serve`; jobs are safe to overlap anyway (every step is a
    /// conditional or idempotent write), so there is nothing to lock.
    async fn try_job_lock(&self) -> StoreResult<Option<JobGuard>> {
        Ok(Some(JobGuard::unshared()))
    }
}

/// The file a `sqlite://` URL names.
fn database_path(url: &str) -> anyhow::Result<std::path::PathBuf> {
    Ok(SqliteConnectOptions::from_str(url)?
        .get_filename()
        .to_path_buf())
}

/// Writes a consistent copy of the Tally database at `url` to `to` (which must not exist) while
/// other processes keep reading and writing it. `VACUUM INTO` copies from one read transaction,
/// so the copy holds exactly the transactions committed before it began: an acknowledged ingest
/// is in it whole or (if acknowledged later) not at all, never in part. Returns the copy's size.
pub async fn backup(url: &str, to: &std::path::Path) -> anyhow::Result<u64> {
    anyhow::ensure!(
        !to.exists(),
        "{} already exists; back up to a new file",
        to.display()
    );
    let options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(false)
        .busy_timeout(Duration::from_secs(30));
    let path = database_path(url)?;
    let mut conn = sqlx::SqliteConnection::connect_with(&options)
        .await
        .with_context(|| format!("opening {}", path.display()))?;
    check_tally_database(&mut conn).await?;
    let target = to
        .to_str()
        .with_context(|| format!("{} is not a UTF-8 path", to.display()))?;
    sqlx::query("VACUUM INTO ?1")
        .bind(target)
        .execute(&mut conn)
        .await
        .with_context(|| format!("copying into {}", to.display()))?;
    conn.close().await?;
    Ok(std::fs::metadata(to)?.len())
}

/// Replaces the database at `url` with the backup `from`, after checking the backup is an intact
/// Tally database. Run it with no `tally serve` using `url`. Refuses to overwrite an existing
/// database unless `force`. The copy is written beside the target and renamed over it, and the
/// target's stale `-wal`/`-shm` files are removed, so a crash leaves the old or the new database.
pub async fn restore(from: &std::path::Path, url: &str, force: bool) -> anyhow::Result<()> {
    let source = SqliteConnectOptions::new()
        .filename(from)
        .create_if_missing(false)
        .read_only(true);
    let mut conn = sqlx::SqliteConnection::connect_with(&source)
        .await
        .with_context(|| format!("opening backup {}", from.display()))?;
    check_tally_database(&mut conn).await?;
    let integrity: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut conn)
        .await?;
    anyhow::ensure!(
        integrity == "ok",
        "backup {} fails its integrity check: {integrity}",
        from.display()
    );
    conn.close().await?;
    let target = database_path(url)?;
    anyhow::ensure!(
        force || !target.exists(),
        "{} already exists; pass --force to replace it (stop every tally serve using it first)",
        target.display()
    );
    let partial = target.with_extension("restoring");
    std::fs::copy(from, &partial)
        .with_context(|| format!("copying {} to {}", from.display(), partial.display()))?;
    std::fs::File::open(&partial)?.sync_all()?;
    for suffix in ["-wal", "-shm"] {
        let mut stale = target.clone().into_os_string();
        stale.push(suffix);
        match std::fs::remove_file(&stale) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
    }
    std::fs::rename(&partial, &target)
        .with_context(|| format!("moving the restored copy to {}", target.display()))?;
    if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Fails unless the open database has Tally's migrations applied.
async fn check_tally_database(conn: &mut sqlx::SqliteConnection) -> anyhow::Result<()> {
    let applied: Option<i64> =
        sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(&mut *conn)
            .await
            .map_err(|_| anyhow::anyhow!("not a Tally database (no migrations table)"))?;
    anyhow::ensure!(
        applied.is_some(),
        "not a Tally database (no migrations applied)"
    );
    Ok(())
}
