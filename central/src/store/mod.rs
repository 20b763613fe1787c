//! Storage behind one interface per aggregate: configuration documents, usage, invoices, tokens.
//!
//! Handlers and services only see these traits; the backend (SQLite today, PostgreSQL next) is
//! picked from the database URL in [`open`]. Invariants every backend keeps:
//! - every read and write is scoped by [`Env`];
//! - a dedupe key is claimed in the same transaction that merges the event's usage;
//! - usage is merged with `tally_core` accumulators in Rust, never summed in SQL;
//! - decimals are stored as exact text, times as epoch milliseconds.

pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tally_core::accumulate::{Accumulator, PartialKey};
use tally_core::rating::UsageRow;

/// The environment a token (and so every row it touches) belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Env {
    Sandbox,
    Production,
}

impl Env {
    pub const ALL: [Env; 2] = [Env::Sandbox, Env::Production];

    pub fn as_str(self) -> &'static str {
        match self {
            Env::Sandbox => "sandbox",
            Env::Production => "production",
        }
    }

    pub fn parse(s: &str) -> Option<Env> {
        match s.to_ascii_lowercase().as_str() {
            "sandbox" => Some(Env::Sandbox),
            "production" => Some(Env::Production),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness constraint refused the write (alias taken, uniqueness key reused, ...).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database could not be reached or refused the operation.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The operation could not complete (a failed group commit, a stopped writer); retry later.
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A stored configuration document (its body is the resource's JSON).
#[derive(Debug, Clone)]
pub struct Doc {
    pub seq: i64,
    pub id: String,
    pub parent_id: Option<String>,
    pub archived: bool,
    pub created_ms: i64,
    pub body: String,
}

/// A new document to insert.
#[derive(Debug, Clone)]
pub struct NewDoc<'a> {
    pub kind: &'a str,
    pub id: &'a str,
    pub parent_id: Option<&'a str>,
    pub unique_key: Option<&'a str>,
    pub created_ms: i64,
    pub body: String,
}

/// Which documents a list returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFilter {
    Active,
    Archived,
    All,
}

/// Keyset page request: documents with `seq > after`, at most `limit`.
#[derive(Debug, Clone, Copy)]
pub struct PageReq {
    pub after: i64,
    pub limit: i64,
}

/// Configuration: metrics, products, rate cards, rates, customers (with aliases), contracts.
#[async_trait]
pub trait ConfigStore: Send + Sync {
    /// Inserts documents atomically (all or none). A taken unique key is `Conflict`.
    async fn insert_docs(&self, env: Env, docs: &[NewDoc<'_>]) -> StoreResult<()>;
    async fn get_doc(&self, env: Env, kind: &str, id: &str) -> StoreResult<Option<Doc>>;
    async fn update_doc(
        &self,
        env: Env,
        kind: &str,
        id: &str,
        body: &str,
        archived: bool,
    ) -> StoreResult<bool>;
    async fn list_docs(
        &self,
        env: Env,
        kind: &str,
        parent_id: Option<&str>,
        filter: ArchiveFilter,
        page: Option<PageReq>,
    ) -> StoreResult<Vec<Doc>>;
    /// Inserts a customer document with its aliases; a taken alias is `Conflict`.
    async fn insert_customer(
        &self,
        env: Env,
        doc: NewDoc<'_>,
        aliases: &[String],
    ) -> StoreResult<()>;
    /// Replaces a customer's aliases and body atomically; a taken alias is `Conflict`.
    async fn set_customer_aliases(
        &self,
        env: Env,
        id: &str,
        aliases: &[String],
        body: &str,
    ) -> StoreResult<()>;
    /// A number that grows whenever a billable metric is created (in any environment).
    async fn metrics_version(&self) -> StoreResult<u64>;
    /// The customer owning an ingest alias.
    async fn customer_by_alias(&self, env: Env, alias: &str) -> StoreResult<Option<String>>;
}

/// One event's part of a group commit.
#[derive(Debug, Clone)]
pub struct IngestItem {
    pub env: Env,
    pub transaction_id: String,
    pub contributions: Vec<(PartialKey, Accumulator)>,
}

/// What became of one [`IngestItem`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemOutcome {
    Accepted,
    Duplicate,
    /// Accepted by validation but refused at merge (its total would overflow); nothing stored.
    Rejected(String),
}

/// Usage: dedupe keys and hourly partial aggregates.
#[async_trait]
pub trait UsageStore: Send + Sync {
    /// In one transaction: claim each item's dedupe key and merge the usage of every item whose
    /// key was new. Outcomes are in item order. On error nothing is stored.
    async fn commit_ingest(
        &self,
        items: &[IngestItem],
        now_ms: i64,
    ) -> StoreResult<Vec<ItemOutcome>>;
    /// Hourly rows of these customer references and metrics with `from_ms <= hour < to_ms`.
    async fn usage_rows(
        &self,
        env: Env,
        customer_refs: &[String],
        metric_ids: &[String],
        from_ms: i64,
        to_ms: i64,
    ) -> StoreResult<Vec<UsageRow>>;
    /// In one transaction: record `(shard_id, seq)` and merge the batch's partials. Returns false
    /// (and changes nothing) when that batch was already applied.
    async fn apply_batch(
        &self,
        shard_id: &str,
        seq: u64,
        partials: &[(Env, PartialKey, Accumulator)],
        now_ms: i64,
    ) -> StoreResult<bool>;
    /// Forgets dedupe keys recorded before `before_ms`. Returns how many.
    async fn prune_dedupe(&self, before_ms: i64) -> StoreResult<u64>;
}

/// Invoice status as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InvoiceStatus {
    Draft,
    Finalized,
    Void,
}

impl InvoiceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            InvoiceStatus::Draft => "DRAFT",
            InvoiceStatus::Finalized => "FINALIZED",
            InvoiceStatus::Void => "VOID",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_uppercase().as_str() {
            "DRAFT" => Some(InvoiceStatus::Draft),
            "FINALIZED" => Some(InvoiceStatus::Finalized),
            "VOID" => Some(InvoiceStatus::Void),
            _ => None,
        }
    }
}

/// One contract period's invoice row.
#[derive(Debug, Clone)]
pub struct InvoiceRow {
    pub id: String,
    pub contract_id: String,
    pub customer_id: String,
    pub period_start_ms: i64,
    pub period_end_ms: i64,
    pub status: InvoiceStatus,
    /// The frozen invoice JSON (FINALIZED and VOID only).
    pub body: Option<String>,
}

/// Invoices: one row per begun contract period.
#[async_trait]
pub trait InvoiceStore: Send + Sync {
    /// Inserts DRAFT rows that do not exist yet (idempotent).
    async fn ensure_invoices(&self, env: Env, rows: &[InvoiceRow]) -> StoreResult<()>;
    async fn invoices_for_contract(
        &self,
        env: Env,
        contract_id: &str,
    ) -> StoreResult<Vec<InvoiceRow>>;
    async fn invoice(&self, env: Env, id: &str) -> StoreResult<Option<InvoiceRow>>;
    /// Moves a row from `from` to `to` with a frozen body; false if it was not in `from`.
    async fn transition_invoice(
        &self,
        env: Env,
        id: &str,
        from: InvoiceStatus,
        to: InvoiceStatus,
        body: &str,
    ) -> StoreResult<bool>;
}

/// API tokens, stored as hashes.
#[async_trait]
pub trait TokenStore: Send + Sync {
    async fn insert_token(&self, hash: &str, env: Env, now_ms: i64) -> StoreResult<()>;
    async fn token_env(&self, hash: &str) -> StoreResult<Option<Env>>;
    async fn token_count(&self) -> StoreResult<i64>;
}

/// Every store, as the service uses them.
#[derive(Clone)]
pub struct Stores {
    pub config: Arc<dyn ConfigStore>,
    pub usage: Arc<dyn UsageStore>,
    pub invoices: Arc<dyn InvoiceStore>,
    pub tokens: Arc<dyn TokenStore>,
}

/// Opens (creating if needed) and migrates the database named by `url`.
pub async fn open(url: &str) -> anyhow::Result<Stores> {
    if url.starts_with("sqlite:") {
        let db = Arc::new(sqlite::SqliteStore::open(url).await?);
        return Ok(Stores {
            config: db.clone(),
            usage: db.clone(),
            invoices: db.clone(),
            tokens: db,
        });
    }
    anyhow::bail!("unsupported database URL {url:?}: expected sqlite://PATH")
}
