//! Storage behind one interface per aggregate: configuration documents, usage, invoices, tokens.
//!
//! Handlers and services only see these traits; the backend (SQLite or PostgreSQL) is picked
//! from the database URL in [`open`]. Invariants every backend keeps:
//! - every read and write is scoped by [`Env`];
//! - a dedupe key is claimed in the same transaction that merges the event's usage;
//! - usage is merged with `tally_core` accumulators in Rust (`merge`), never summed in SQL;
//! - decimals are stored as exact text, times as epoch milliseconds;
//! - several processes may share one database: usage writes serialize on the database (SQLite's
//!   write lock, PostgreSQL's transaction-scoped advisory lock) and background jobs run under
//!   [`JobLock`], so replicas behave as one.

mod documents;
pub mod postgres;
pub mod sqlite;
mod usage;

pub use usage::Compacted;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tally_core::accumulate::{Accumulator, PartialKey};
use tally_core::balances::LedgerEntryKind;
pub use tally_core::invoice::InvoiceKind;
use tally_core::rating::UsageRow;
use tally_core::rollup::Range;

/// The environment a token (and so every row it touches) belongs to: defined once, in core.
pub use tally_core::env::Env;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness constraint refused the write (alias taken, uniqueness key reused, ...).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database could not be reached or refused the operation.
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    /// Input the database cannot store (PostgreSQL refuses NUL characters in text).
    #[error("invalid input: {0}")]
    Invalid(String),
    /// Concurrent transactions got in each other's way (a PostgreSQL deadlock or serialization
    /// failure): nothing was written, and running the same transaction again is the remedy.
    #[error("contended: {0}")]
    Contended(String),
    /// The operation could not complete (a failed group commit, a stopped writer); retry later.
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            // character_not_in_repertoire, untranslatable_character: the client's text, not an outage.
            sqlx::Error::Database(db)
                if matches!(db.code().as_deref(), Some("22021" | "22P05")) =>
            {
                StoreError::Invalid("text contains a character that cannot be stored (NUL)".into())
            }
            // deadlock_detected, serialization_failure: the transaction lost a race.
            sqlx::Error::Database(db)
                if matches!(db.code().as_deref(), Some("40P01" | "40001")) =>
            {
                StoreError::Contended(db.message().to_string())
            }
            _ => StoreError::Database(e),
        }
    }
}

/// A stored configuration document (its body is the resource's JSON).
#[derive(Debug, Clone)]
pub struct Doc {
    pub seq: i64,
    pub id: String,
    pub parent_id: Option<String>,
    pub archived: bool,
    pub created_ms: i64,
    pub body: String,
    /// Bumped by every update; an update names the version it read (optimistic concurrency).
    pub version: i64,
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
    /// Replaces a document's body if it is still at `version` (and bumps the version). False,
    /// changing nothing, when it has changed since it was read (or does not exist).
    async fn update_doc(
        &self,
        env: Env,
        kind: &str,
        id: &str,
        body: &str,
        archived: bool,
        version: i64,
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
    /// Replaces a customer's aliases and body atomically if the document is still at `version`
    /// (false, changing nothing, when it is not); a taken alias is `Conflict`.
    async fn set_customer_aliases(
        &self,
        env: Env,
        id: &str,
        aliases: &[String],
        body: &str,
        version: i64,
    ) -> StoreResult<bool>;
    /// Inserts a rate card document with its alias names indexed, in one transaction.
    async fn insert_rate_card(
        &self,
        env: Env,
        doc: NewDoc<'_>,
        aliases: &[String],
    ) -> StoreResult<()>;
    /// Replaces a rate card's body and indexed alias names if it is still at `version` (false,
    /// changing nothing, when it is not).
    async fn update_rate_card(
        &self,
        env: Env,
        id: &str,
        body: &str,
        version: i64,
        aliases: &[String],
    ) -> StoreResult<bool>;
    /// Ids of the rate cards whose documents name `alias` (at any time), by index.
    async fn rate_cards_by_alias(&self, env: Env, alias: &str) -> StoreResult<Vec<String>>;
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
    /// The event itself, stored in the event store with the claim (accepted) or as the latest
    /// duplicate; `None` stores usage only (tests of the fold).
    pub event: Option<tally_core::event::Event>,
}

/// What became of one [`IngestItem`]: accepted, duplicate, or rejected at merge (its total would
/// overflow; nothing stored). The same outcomes as the edge's shards, from `tally_core::fold`.
pub use tally_core::fold::Outcome as ItemOutcome;

/// An edge batch partial central could not merge into its hourly row (its total would overflow the
/// decimal range, or the row aggregates differently): recorded instead of merged, in the
/// transaction that applies the rest of its batch, so the shard is never blocked by it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub shard_id: String,
    pub seq: u64,
    /// The partial's position in its batch.
    pub index: u64,
    pub env: Env,
    /// The partial as received, JSON `{"env","key","acc"}` (`tally_core::batch::BatchPartial`).
    pub partial: String,
    pub reason: String,
    pub recorded_ms: i64,
}

/// Most transaction ids one event search takes (`POST /v1/events/search`).
pub const MAX_EVENT_SEARCH_IDS: usize = 100;

/// What [`UsageStore::apply_batch`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchApplied {
    /// False when `(shard_id, seq)` had already been applied (a replay): nothing changed.
    pub applied: bool,
    /// The partials recorded as dead letters instead of merged (empty for a replay).
    pub dead_letters: Vec<DeadLetter>,
}

/// Logs the one-time rollup of hourly rows stored before the rollups existed (`open` runs it).
/// Usage: dedupe keys, hourly partial aggregates and their rollups (`store::usage`).
#[async_trait]
pub trait UsageStore: Send + Sync {
    /// In one transaction: claim each item's dedupe key and merge the usage of every item whose
    /// key was new. Outcomes are in item order. On error nothing is stored.
    async fn commit_ingest(
        &self,
        items: &[IngestItem],
        now_ms: i64,
    ) -> StoreResult<Vec<ItemOutcome>>;
    /// Rolls up at most `limit` dirty days (`store::usage::compact`) in one usage transaction;
    /// nothing (and no write transaction) when no day is dirty. `crate::rollups` runs it in the
    /// background.
    async fn compact_rollups(&self, limit: i64) -> StoreResult<Compacted>;
    /// How many dirty days the compactor can take now (its backlog).
    async fn rollup_backlog(&self) -> StoreResult<u64>;
    /// The starts of the UTC days in `[from_ms, to_ms)` (the day holding `from_ms` included)
    /// dirty for any of these customer references and metrics: their rollups may lag, so a
    /// reader reads them hour by hour (`tally_core::rollup::cover`).
    async fn dirty_days(
        &self,
        env: Env,
        customer_refs: &[String],
        metric_ids: &[String],
        from_ms: i64,
        to_ms: i64,
    ) -> StoreResult<Vec<i64>>;
    /// Hourly rows of these customer references and metrics with `from_ms <= hour < to_ms`.
    async fn usage_rows(
        &self,
        env: Env,
        customer_refs: &[String],
        metric_ids: &[String],
        from_ms: i64,
        to_ms: i64,
    ) -> StoreResult<Vec<UsageRow>> {
        let level = tally_core::rollup::Level::Hour;
        let range = Range {
            level,
            from_ms,
            to_ms,
        };
        self.level_rows(env, customer_refs, metric_ids, range).await
    }
    /// Rows of `range.level` (hourly rows, or the day or month rollups of `tally_core::rollup`)
    /// of these customer references and metrics whose block starts in `[range.from_ms,
    /// range.to_ms)`, each placed at its block's start.
    async fn level_rows(
        &self,
        env: Env,
        customer_refs: &[String],
        metric_ids: &[String],
        range: Range,
    ) -> StoreResult<Vec<UsageRow>>;
    /// The rows of every range of `ranges` (a `tally_core::rollup::cover`): what rating needs of
    /// the hours they cover, in O(blocks) rows per grain.
    async fn usage_blocks(
        &self,
        env: Env,
        customer_refs: &[String],
        metric_ids: &[String],
        ranges: &[Range],
    ) -> StoreResult<Vec<UsageRow>> {
        let mut out = Vec::new();
        for range in ranges {
            out.extend(
                self.level_rows(env, customer_refs, metric_ids, *range)
                    .await?,
            );
        }
        Ok(out)
    }
    /// For each (customer reference, metric, grain values) of these references and metrics, the
    /// most recent hourly row with `hour < before_ms` (the LATEST baseline; index
    /// `usage_hourly_by_grain`). Merging these gives what merging every earlier row gives.
    async fn latest_rows_before(
        &self,
        env: Env,
        customer_refs: &[String],
        metric_ids: &[String],
        before_ms: i64,
    ) -> StoreResult<Vec<UsageRow>>;
    /// In one transaction: record `(shard_id, seq)`, merge the batch's partials, record those
    /// that cannot be merged as dead letters, and store the batch's events (counted ones kept if
    /// already stored, a duplicate replacing its id's earlier duplicate). When that batch was
    /// already applied, changes nothing and answers `applied: false`. Every event's `env` must
    /// parse (`Env::parse`).
    async fn apply_batch(
        &self,
        shard_id: &str,
        seq: u64,
        partials: &[(Env, PartialKey, Accumulator)],
        events: &[tally_core::event::StoredEvent],
        now_ms: i64,
    ) -> StoreResult<BatchApplied>;
    /// The counted events (not duplicates) of any of `customer_refs` with `from_ms <=
    /// timestamp < to_ms`, ordered by `(timestamp_ms, transaction_id)` (SQL billable metrics).
    async fn events_between(
        &self,
        env: Env,
        customer_refs: &[String],
        from_ms: i64,
        to_ms: i64,
    ) -> StoreResult<Vec<tally_core::event::Event>>;
    /// Every stored row (counted and latest duplicate) of these transaction ids with
    /// `timestamp >= since_ms`, ordered by `(transaction_id, duplicate)`. At most
    /// [`MAX_EVENT_SEARCH_IDS`] ids.
    async fn search_events(
        &self,
        env: Env,
        transaction_ids: &[String],
        since_ms: i64,
    ) -> StoreResult<Vec<tally_core::event::StoredEvent>>;
    /// Deletes at most `limit` events (of any environment) whose timestamp is before
    /// `before_ms`, oldest first. Returns how many.
    async fn prune_events(&self, before_ms: i64, limit: i64) -> StoreResult<u64>;
    /// How many dead letters `env` has.
    async fn dead_letter_count(&self, env: Env) -> StoreResult<u64>;
    /// `env`'s dead letters in `(shard_id, seq, index)` order, at most `limit`.
    async fn dead_letters(&self, env: Env, limit: i64) -> StoreResult<Vec<DeadLetter>>;
    /// Forgets dedupe keys recorded before `before_ms`. Returns how many.
    async fn prune_dedupe(&self, before_ms: i64) -> StoreResult<u64>;
    /// Which of `transaction_ids` are claimed dedupe keys of `env` (ingested natively and not
    /// yet pruned), in no particular order. At most 100 ids (a `previewEvents` request).
    async fn claimed_transactions(
        &self,
        env: Env,
        transaction_ids: &[String],
    ) -> StoreResult<Vec<String>>;
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
    /// A billing period's USAGE invoice, or the SCHEDULED invoice of one instant (its period is
    /// `[t, t]`). Draft rows stored by `ensure_invoices` are USAGE ones.
    pub kind: InvoiceKind,
    pub contract_id: String,
    pub customer_id: String,
    pub period_start_ms: i64,
    pub period_end_ms: i64,
    pub status: InvoiceStatus,
    /// The frozen invoice JSON (FINALIZED and VOID only).
    pub body: Option<String>,
    /// Which invoice of its (contract, kind, period) this is: 0 the first, one more for each
    /// regeneration of a voided one.
    pub revision: i64,
    /// The voided invoice this one regenerated (`POST /v1/invoices/regenerate`).
    pub regenerated_from: Option<String>,
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
    /// Starts a unit of work: one write transaction for changes that must land together.
    async fn begin(&self) -> StoreResult<Box<dyn UnitOfWork>>;
    /// Records that the job could not finalize a contract (counting repeats).
    async fn record_job_failure(
        &self,
        env: Env,
        contract_id: &str,
        error: &str,
        now_ms: i64,
    ) -> StoreResult<()>;
    /// Forgets a contract's job failure once it finalizes again.
    async fn clear_job_failure(&self, env: Env, contract_id: &str) -> StoreResult<()>;
    /// `env`'s stuck contracts, oldest failure first, at most `limit`.
    async fn job_failures(&self, env: Env, limit: i64) -> StoreResult<Vec<JobFailure>>;
}

/// A contract the background job could not finalize.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFailure {
    pub contract_id: String,
    pub error: String,
    pub first_failed_ms: i64,
    pub last_failed_ms: i64,
    pub failures: i64,
}

/// One write transaction through which invoice state changes (and, as they arrive, ledger
/// entries and outbox rows) are written together: all of them commit, or none. Dropping it
/// without [`UnitOfWork::commit`] rolls everything back.
#[async_trait]
pub trait UnitOfWork: Send {
    /// Inserts `row`; false, changing nothing, when a row with its id, its (contract, kind,
    /// period, revision) or its `regenerated_from` exists.
    async fn insert_invoice(&mut self, env: Env, row: &InvoiceRow) -> StoreResult<bool>;
    /// Stores `row` with its status and frozen body if it is still `from`: inserted when the
    /// period has no row yet (drafts are not stored until they need to be), else moved from
    /// `from`. False, changing nothing, when the row exists in another status (someone else
    /// finalized or voided it first).
    async fn put_invoice(
        &mut self,
        env: Env,
        row: &InvoiceRow,
        from: InvoiceStatus,
    ) -> StoreResult<bool>;
    /// Records ledger entries of invoices this unit of work finalizes. An entry an invoice
    /// already recorded (same invoice, segment and kind) is left as it is.
    async fn put_ledger_entries(&mut self, env: Env, entries: &[LedgerRow]) -> StoreResult<()>;
    /// Adds a message to the outbox, to be delivered once this unit of work commits (never if it
    /// does not). A message whose id is already there is left as it is.
    async fn put_outbox(&mut self, msg: &NewOutboxMessage) -> StoreResult<()>;
    /// Records that `push`'s invoice is to be pushed to Stripe (status QUEUED); a push already
    /// recorded for the invoice is left as it is.
    async fn put_stripe_push(&mut self, env: Env, push: &NewStripePush) -> StoreResult<()>;
    /// Stores an (alert, customer) state if it is still at `expected` (its version as read;
    /// `None`: no row yet), bumping the version. False, changing nothing, when another writer
    /// changed it since it was read (the compare-and-set that makes each crossing fire once).
    async fn put_alert_state(
        &mut self,
        env: Env,
        state: &AlertState,
        expected: Option<i64>,
    ) -> StoreResult<bool>;
    async fn commit(self: Box<Self>) -> StoreResult<()>;
}

/// Where one (alert, customer) stands (`alert_states`; `service::alerts`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertState {
    pub alert_id: String,
    pub customer_id: String,
    /// `evaluating`, `ok` or `in_alarm`.
    pub status: String,
    /// How many times it went to `in_alarm` (the n-th crossing's messages derive their ids from n).
    pub fires: i64,
    /// The exact decimal the alert compared at the last change.
    pub value: Option<String>,
    pub triggered_by: Option<String>,
    /// Bumped by every change (compare-and-set).
    pub version: i64,
    pub updated_ms: i64,
}

/// Reads and resets of alert states; changes that fire go through [`UnitOfWork::put_alert_state`].
#[async_trait]
pub trait AlertStore: Send + Sync {
    /// The customer's states (of every alert), in alert id order.
    async fn alert_states(&self, env: Env, customer_id: &str) -> StoreResult<Vec<AlertState>>;
    async fn alert_state(
        &self,
        env: Env,
        alert_id: &str,
        customer_id: &str,
    ) -> StoreResult<Option<AlertState>>;
    /// Puts an (alert, customer) back to `evaluating` (bumping its version); nothing when it has
    /// no state yet (it is evaluating already).
    async fn reset_alert_state(
        &self,
        env: Env,
        alert_id: &str,
        customer_id: &str,
        now_ms: i64,
    ) -> StoreResult<()>;
}

/// A message for the outbox (`crate::outbox`), written with the state change that causes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOutboxMessage {
    /// Stable across retries (the webhook payload's `id`): receivers dedupe on it.
    pub id: String,
    pub env: Env,
    /// How it is delivered: [`OUTBOX_WEBHOOK`] or [`OUTBOX_STRIPE`].
    pub topic: String,
    /// What it says: `invoice.finalized`, `alerts.*`, ...
    pub kind: String,
    /// Where it goes: a webhook endpoint's id (a Stripe customer id for [`OUTBOX_STRIPE`]).
    pub destination: String,
    /// The exact body sent.
    pub payload: String,
    /// Wall-clock time it was written; it is due at once.
    pub created_ms: i64,
}

/// A finalized invoice to push to Stripe, recorded in its finalization's unit of work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewStripePush {
    pub invoice_id: String,
    pub customer_id: String,
    pub stripe_customer_id: Option<String>,
    pub created_ms: i64,
}

/// What was sent to Stripe for one Tally invoice (`stripe_pushes`, `stripe_push_items`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripePush {
    pub invoice_id: String,
    pub customer_id: String,
    pub stripe_customer_id: Option<String>,
    /// Recorded as soon as Stripe created the invoice.
    pub stripe_invoice_id: Option<String>,
    /// The external status: `QUEUED`, `DRAFT`, `FINALIZED` or `INVALID_REQUEST_ERROR`.
    pub status: String,
    /// The billing provider's last error, while the status is `INVALID_REQUEST_ERROR`.
    pub error: Option<String>,
    pub updated_ms: i64,
    /// `(line index, Stripe invoice item id)` of every item Stripe created, by line index
    /// (filled by [`StripeStore::stripe_push`] only).
    pub items: Vec<(i64, String)>,
}

/// The record of Stripe pushes the deliverer keeps, so a retried or duplicated delivery never
/// creates a Stripe invoice or item twice.
#[async_trait]
pub trait StripeStore: Send + Sync {
    /// The push of one invoice with its items.
    async fn stripe_push(&self, env: Env, invoice_id: &str) -> StoreResult<Option<StripePush>>;
    /// Every push of a customer's invoices (without items), for invoice reads.
    async fn customer_stripe_pushes(
        &self,
        env: Env,
        customer_id: &str,
    ) -> StoreResult<Vec<StripePush>>;
    /// Records the Stripe invoice created for `invoice_id` unless one is recorded already;
    /// returns the one recorded (the first).
    async fn record_stripe_invoice(
        &self,
        env: Env,
        invoice_id: &str,
        stripe_invoice_id: &str,
        now_ms: i64,
    ) -> StoreResult<Option<String>>;
    /// Records a Stripe invoice item created for line `line_index` (an item already recorded
    /// for that line is left as it is).
    async fn record_stripe_item(
        &self,
        env: Env,
        invoice_id: &str,
        line_index: i64,
        stripe_item_id: &str,
        amount: i64,
        now_ms: i64,
    ) -> StoreResult<()>;
    /// Sets the push's external status and error.
    async fn set_stripe_status(
        &self,
        env: Env,
        invoice_id: &str,
        status: &str,
        error: Option<&str>,
        now_ms: i64,
    ) -> StoreResult<()>;
}

/// How long a finished (delivered or given-up) outbox message stays in the delivery log after
/// it was written; the background job prunes older ones.
pub const OUTBOX_RETENTION_MS: i64 = 30 * 24 * 60 * 60 * 1000;

/// The outbox topic of webhook deliveries (destination: a webhook endpoint id).
pub const OUTBOX_WEBHOOK: &str = "webhook";

/// The outbox topic of Stripe pushes (destination: the Stripe customer id; `crate::stripe`).
pub const OUTBOX_STRIPE: &str = "stripe";

/// A stored outbox message and how its delivery is going.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    pub id: String,
    pub env: Env,
    pub topic: String,
    pub kind: String,
    pub destination: String,
    pub payload: String,
    /// Delivery attempts begun (counted when claimed).
    pub attempts: i64,
    pub next_attempt_ms: i64,
    pub delivered_ms: Option<i64>,
    /// Set when delivery was given up.
    pub failed_ms: Option<i64>,
    pub last_error: Option<String>,
    pub created_ms: i64,
}

/// What became of one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    Delivered,
    /// Try again at `next_attempt_ms`.
    Retry {
        error: String,
        next_attempt_ms: i64,
    },
    /// No more attempts.
    GiveUp {
        error: String,
    },
}

/// The outbox's delivery side and the webhook signing secret.
#[async_trait]
pub trait OutboxStore: Send + Sync {
    /// Leases at most `limit` due messages (undelivered, not given up, `next_attempt_ms <= now`,
    /// no unexpired lease) to `owner` until `lease_until_ms`, counting an attempt on each. Each
    /// message is leased to one claimer at a time, across processes sharing the database.
    async fn claim_outbox(
        &self,
        owner: &str,
        now_ms: i64,
        lease_until_ms: i64,
        limit: i64,
    ) -> StoreResult<Vec<OutboxMessage>>;
    /// Records an attempt's outcome and releases the lease. A retry or give-up is recorded only
    /// while `owner` still holds the lease; a delivery always (it happened).
    async fn finish_attempt(
        &self,
        id: &str,
        owner: &str,
        outcome: &AttemptOutcome,
        now_ms: i64,
    ) -> StoreResult<()>;
    /// The messages of one destination in `(created_ms, id)` order after `after`, at most `limit`.
    async fn outbox_for_destination(
        &self,
        env: Env,
        destination: &str,
        after: Option<(i64, String)>,
        limit: i64,
    ) -> StoreResult<Vec<OutboxMessage>>;
    /// Forgets delivered and given-up messages written before `before_ms`. Returns how many.
    async fn prune_outbox(&self, before_ms: i64) -> StoreResult<u64>;
    async fn set_webhook_secret(&self, env: Env, secret: &str, now_ms: i64) -> StoreResult<()>;
    async fn webhook_secret(&self, env: Env) -> StoreResult<Option<String>>;
}

/// One stored entry of a commit or credit segment's ledger (`balance_ledger`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerRow {
    pub id: String,
    pub customer_id: String,
    pub balance_id: String,
    pub segment_id: String,
    pub entry: LedgerEntryKind,
    pub amount: Decimal,
    pub timestamp_ms: i64,
    pub invoice_id: Option<String>,
    pub contract_id: Option<String>,
    pub reason: Option<String>,
    pub created_ms: i64,
}

impl LedgerRow {
    const ENTRIES: [(LedgerEntryKind, &'static str); 6] = [
        (LedgerEntryKind::SegmentStart, "SEGMENT_START"),
        (
            LedgerEntryKind::AutomatedInvoiceDeduction,
            "AUTOMATED_INVOICE_DEDUCTION",
        ),
        (LedgerEntryKind::Trueup, "TRUEUP"),
        (LedgerEntryKind::Expiration, "EXPIRATION"),
        (LedgerEntryKind::Manual, "MANUAL"),
        (LedgerEntryKind::Rollover, "ROLLOVER"),
    ];

    pub fn entry_name(kind: LedgerEntryKind) -> &'static str {
        Self::ENTRIES
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or("MANUAL", |(_, n)| n)
    }

    pub fn parse_entry(name: &str) -> Option<LedgerEntryKind> {
        Self::ENTRIES
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(k, _)| *k)
    }
}

/// The ledger of commits and credits: entries written by finalization (in its unit of work) and
/// by manual adjustments.
#[async_trait]
pub trait LedgerStore: Send + Sync {
    /// Every entry of the customer's balances (contract- and customer-level), in time order.
    async fn customer_ledger(&self, env: Env, customer_id: &str) -> StoreResult<Vec<LedgerRow>>;
    /// Records a manual entry (with the request's Idempotency-Key claim, like every write).
    async fn insert_manual_entry(&self, env: Env, entry: &LedgerRow) -> StoreResult<()>;
}

/// API tokens, stored as hashes.
#[async_trait]
pub trait TokenStore: Send + Sync {
    async fn insert_token(
        &self,
        hash: &str,
        env: Env,
        name: Option<&str>,
        now_ms: i64,
    ) -> StoreResult<()>;
    /// The environment of the token with this hash, unless it is unknown or revoked.
    async fn token_env(&self, hash: &str) -> StoreResult<Option<Env>>;
    /// How many tokens exist, revoked ones included.
    async fn token_count(&self) -> StoreResult<i64>;
    /// Every token, revoked ones included, oldest first.
    async fn list_tokens(&self) -> StoreResult<Vec<TokenInfo>>;
    /// Revokes the token whose id ([`TokenInfo::id`]) is `id`; false when there is none not
    /// revoked yet.
    async fn revoke_token(&self, id: &str, now_ms: i64) -> StoreResult<bool>;
    /// Records that the token was used at `now_ms` (never moves the time backwards).
    async fn touch_token(&self, hash: &str, now_ms: i64) -> StoreResult<()>;
}

/// A token as operators see it: never the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// The first [`TOKEN_ID_CHARS`] hex digits of the token's SHA-256 (a digest says nothing
    /// about the token; this names it in `tally token list` and `revoke`).
    pub id: String,
    pub name: Option<String>,
    pub env: Env,
    pub created_ms: i64,
    pub last_used_ms: Option<i64>,
    pub revoked_ms: Option<i64>,
}

/// How many hex digits of a token's hash form its id.
pub const TOKEN_ID_CHARS: usize = 16;

/// The right to run the background jobs (finalization, pruning) for one pass.
#[async_trait]
pub trait JobLock: Send + Sync {
    /// Takes the job lock without waiting: `None` when another process holds it (it is doing the
    /// pass; skip this one). A process that dies while holding it releases it.
    async fn try_job_lock(&self) -> StoreResult<Option<JobGuard>>;
}

/// A held [`JobLock`]. Give it back with [`JobGuard::release`]; a guard dropped without that
/// still releases the lock, by closing the connection that holds it.
pub struct JobGuard(Option<Box<dyn HeldLock>>);

/// What a backend keeps while the job lock is held.
#[async_trait]
pub trait HeldLock: Send {
    async fn release(self: Box<Self>) -> StoreResult<()>;
}

impl JobGuard {
    /// A guard that holds nothing (a backend with one process per database).
    pub fn unshared() -> Self {
        JobGuard(None)
    }

    pub fn holding(lock: Box<dyn HeldLock>) -> Self {
        JobGuard(Some(lock))
    }

    pub async fn release(mut self) -> StoreResult<()> {
        match self.0.take() {
            Some(lock) => lock.release().await,
            None => Ok(()),
        }
    }
}

/// The `Idempotency-Key` claim of the request being served, if it sent one (set by
/// `http::idempotency` around the handler). Every store write transaction records it first
/// ([`IdempotencyStore`]), so a request's writes and its key commit together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyClaim {
    pub env: Env,
    pub key: String,
    /// SHA-256 (hex) of the request's method, path, query and body.
    pub fingerprint: String,
    /// Names this request's claim (a fresh UUID), telling it from another with the same key.
    pub nonce: String,
    pub now_ms: i64,
}

tokio::task_local! {
    /// The claim in scope for the current request's task.
    pub static IDEMPOTENCY: IdempotencyClaim;
}

/// How long an Idempotency-Key and its response are kept (at least the 24 hours upstream
/// promises); the background job prunes older ones.
pub const IDEMPOTENCY_RETENTION_MS: i64 = 25 * 60 * 60 * 1000;

/// The claim in scope, if any.
pub fn current_claim() -> Option<IdempotencyClaim> {
    IDEMPOTENCY.try_with(Clone::clone).ok()
}

/// A stored `Idempotency-Key`: who claimed it, and the response once there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    pub fingerprint: String,
    pub nonce: String,
    pub created_ms: i64,
    /// The response's status and body, once the request that claimed the key answered.
    pub response: Option<(u16, String)>,
}

/// `Idempotency-Key` records.
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    async fn idempotency_record(
        &self,
        env: Env,
        key: &str,
    ) -> StoreResult<Option<IdempotencyRecord>>;
    /// Stores the response of `claim`'s request: on its own claim row, or on a new row when the
    /// request wrote nothing. A row another request claimed is left alone (false).
    async fn complete_idempotency(
        &self,
        claim: &IdempotencyClaim,
        status: u16,
        body: &str,
        now_ms: i64,
    ) -> StoreResult<bool>;
    /// Forgets keys created before `before_ms`. Returns how many.
    async fn prune_idempotency(&self, before_ms: i64) -> StoreResult<u64>;
}

/// The database as operators watch it: its pool, and whether it answers.
#[async_trait]
pub trait Health: Send + Sync {
    fn pool_stats(&self) -> PoolStats;
    /// One round trip (`SELECT 1`).
    async fn ping(&self) -> StoreResult<()>;
}

/// Connections in the pool now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    pub size: u32,
    pub idle: u32,
}

/// Connection pool settings (`--db-max-connections`, `--db-acquire-timeout-secs`, ...).
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// Most connections the pool opens.
    pub max_connections: u32,
    /// How long a request waits for a free connection before it fails (a 503).
    pub acquire_timeout: Duration,
    /// How long [`open`] keeps retrying a database it cannot reach yet before giving up.
    pub connect_wait: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(5),
            connect_wait: Duration::from_secs(30),
        }
    }
}

/// Every store, as the service uses them.
#[derive(Clone)]
pub struct Stores {
    pub config: Arc<dyn ConfigStore>,
    pub usage: Arc<dyn UsageStore>,
    pub invoices: Arc<dyn InvoiceStore>,
    pub tokens: Arc<dyn TokenStore>,
    pub jobs: Arc<dyn JobLock>,
    pub health: Arc<dyn Health>,
    pub idempotency: Arc<dyn IdempotencyStore>,
    pub ledger: Arc<dyn LedgerStore>,
    pub outbox: Arc<dyn OutboxStore>,
    pub stripe: Arc<dyn StripeStore>,
    pub alerts: Arc<dyn AlertStore>,
    /// Other processes may write the same database (PostgreSQL replicas), so in-memory snapshots
    /// must be checked against it; a SQLite file has one writer process.
    pub shared: bool,
}

impl Stores {
    fn of<S>(db: S, shared: bool) -> Stores
    where
        S: ConfigStore
            + UsageStore
            + InvoiceStore
            + TokenStore
            + JobLock
            + Health
            + IdempotencyStore
            + LedgerStore
            + OutboxStore
            + StripeStore
            + AlertStore
            + 'static,
    {
        let db = Arc::new(db);
        Stores {
            config: db.clone(),
            usage: db.clone(),
            invoices: db.clone(),
            tokens: db.clone(),
            jobs: db.clone(),
            health: db.clone(),
            idempotency: db.clone(),
            ledger: db.clone(),
            outbox: db.clone(),
            stripe: db.clone(),
            alerts: db,
            shared,
        }
    }
}

/// Opens (creating a SQLite file if needed) and migrates the database named by `url`:
/// `sqlite://PATH` or `postgres://...` (`postgresql://...`).
pub async fn open(url: &str, options: &PoolOptions) -> anyhow::Result<Stores> {
    if url.starts_with("sqlite:") {
        return Ok(Stores::of(
            sqlite::SqliteStore::open(url, options).await?,
            false,
        ));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Stores::of(
            postgres::PostgresStore::open(url, options).await?,
            true,
        ));
    }
    anyhow::bail!(
        "unsupported database URL {:?}: expected sqlite://PATH or postgres://USER@HOST/DB",
        redact_url(url)
    )
}

/// The URL with any password replaced by `***`, for logs and error messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{path}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(
            redact_url("postgres://tally:s3cret@db:5432/tally?sslmode=require"),
            "postgres://tally:***@db:5432/tally?sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://postgres@127.0.0.1/x"),
            "postgres://postgres@127.0.0.1/x"
        );
        assert_eq!(redact_url("sqlite://tally.db"), "sqlite://tally.db");
    }
}
