//! `tally-central`: the Metronome-compatible admin API, storage, native ingest, rating and invoices.
//!
//! Layout: `http` (one module per resource, routes beside handlers; the only place HTTP statuses
//! exist) → `service` (one module per use case, each with its domain error; `ingest` group commit;
//! `billing` invoice computation) → `store` (one trait per aggregate; SQLite and PostgreSQL). All billing arithmetic is `tally_core`; this crate moves data and enforces the
//! API contract.
//!
//! Invariants: every row is scoped by the token's environment; a 200 from ingest means the events
//! are durable; a FINALIZED invoice never changes; money is exact decimal end to end.

pub mod alert_evaluator;
pub mod auth;
pub mod backfill;
pub mod billing;
pub mod http;
pub mod ingest;
pub mod model;
pub mod outbox;
pub mod rollups;
pub mod server;
pub mod service;
pub mod store;
pub mod stripe;
pub mod telemetry;
pub mod wire;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tally_core::metric::MetricDef;
use tokio::sync::RwLock;

use crate::store::{Env, Stores};

/// Where "now" comes from: the system clock in production, a fixed one in tests.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> i64;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
    }
}

/// A clock tests set by hand.
pub struct FixedClock(pub std::sync::atomic::AtomicI64);

impl FixedClock {
    pub fn new(ms: i64) -> Self {
        FixedClock(std::sync::atomic::AtomicI64::new(ms))
    }
    pub fn set(&self, ms: i64) {
        self.0.store(ms, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for FixedClock {
    fn now_ms(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A secret that never appears in logs or `Debug` output.
#[derive(Clone, Default)]
pub struct Secret(pub Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The event store's default retention in days: the 34-day backdating window plus 366 days, the
/// longest billing period (annual, leap year) an event can fall in, so an event is kept at least
/// until every period it can count in has ended and a late event can no longer reach it.
pub const DEFAULT_EVENT_RETENTION_DAYS: u32 = 400;
/// The shortest retention `--event-retention-days` accepts: past the 34-day search window.
pub const MIN_EVENT_RETENTION_DAYS: u32 = 35;

/// Service settings that handlers and jobs read.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long after a period ends its invoice stays DRAFT before it is FINALIZED.
    pub invoice_grace_ms: i64,
    /// How often the finalization and pruning job runs.
    pub job_interval: Duration,
    /// How long the event store keeps an event, counted from the event's timestamp
    /// (`--event-retention-days`; the job prunes older ones).
    pub event_retention_ms: i64,
    /// The key edge Workers sign batches with; the internal endpoints are off without it.
    pub edge_hmac_key: Option<Secret>,
    /// Per-token request rate limit; `None` turns limiting off.
    pub rate_limit: Option<RateLimit>,
    /// How long one request (reading its body included) may take before it is answered 408.
    pub request_timeout: Duration,
    /// The origins browser clients may call the API from; `None` turns CORS off.
    pub cors: Option<http::cors::AllowedOrigins>,
    /// How the outbox deliverer retries and times out (`crate::outbox`).
    pub delivery: outbox::DeliverySettings,
    /// How often every alert is re-evaluated for what time alone changes (`crate::alert_evaluator`).
    pub alert_sweep: Duration,
    /// Where finalized invoices billing through Stripe are pushed; `None`: Stripe is not
    /// connected and nothing is pushed (`--stripe-api-key`).
    pub stripe: Option<stripe::StripeSettings>,
}

/// A token's sustained request rate and the burst it may spend at once (GCRA, via `governor`).
#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    pub per_second: std::num::NonZeroU32,
    pub burst: std::num::NonZeroU32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            invoice_grace_ms: 24 * tally_core::time::HOUR_MS,
            job_interval: Duration::from_secs(60),
            event_retention_ms: i64::from(DEFAULT_EVENT_RETENTION_DAYS) * tally_core::time::DAY_MS,
            edge_hmac_key: None,
            rate_limit: None,
            request_timeout: Duration::from_secs(60),
            cors: None,
            delivery: outbox::DeliverySettings::default(),
            alert_sweep: Duration::from_secs(60),
            stripe: None,
        }
    }
}

/// One rate-limit bucket per token, keyed by the token's hash (only tokens that authenticated get a
/// bucket, so the map is bounded by the number of tokens).
pub type TokenLimiter = governor::DefaultKeyedRateLimiter<String>;

/// The metric snapshots handlers meter with, one per environment, each stamped with what it was
/// loaded at: this process's metric generation (bumped after every metric this process creates)
/// and, when replicas share the database, the stored metrics version.
///
/// Invariant: a snapshot is used only while its stamp is current, and a stamp is read *before*
/// the list it stamps is loaded. A create bumps the generation only after its write committed, so
/// any snapshot stamped with the new generation (or a newer stored version) was loaded after the
/// metric existed: an event that arrives after a create returned is always metered by it, even
/// when an ingest that loaded the old list finishes (and caches it) later.
#[derive(Default)]
struct MetricCache {
    generation: std::sync::atomic::AtomicU64,
    snapshots: RwLock<HashMap<Env, StampedMetrics>>,
}

/// A snapshot and the stamp read before it was loaded.
type StampedMetrics = (MetricStamp, Arc<Vec<MetricDef>>);

/// (this process's metric generation, the stored metrics version or 0 when unshared).
type MetricStamp = (u64, u64);

/// Everything a handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub stores: Stores,
    pub clock: Arc<dyn Clock>,
    pub settings: Arc<Settings>,
    pub ingest: ingest::IngestHandle,
    pub limiter: Option<Arc<TokenLimiter>>,
    /// Tells the alert evaluator which customers got usage (`crate::alert_evaluator`).
    pub alerts: alert_evaluator::AlertsHandle,
    metrics: Arc<MetricCache>,
    /// When this process last recorded each token's use (hash → ms), to write it at most once
    /// per [`TOKEN_TOUCH_INTERVAL_MS`]. Only tokens that authenticated get an entry.
    token_touches: Arc<std::sync::Mutex<HashMap<String, i64>>>,
}

/// How often one process records that a token was used (`tally token list`'s "last used").
pub const TOKEN_TOUCH_INTERVAL_MS: i64 = 60_000;

impl AppState {
    /// Builds the state and starts the ingest writer, rollup compactor, outbox deliverer and
    /// alert evaluator tasks (needs a Tokio runtime).
    pub fn new(stores: Stores, clock: Arc<dyn Clock>, settings: Settings) -> Self {
        let ingest = ingest::IngestHandle::spawn(stores.usage.clone(), clock.clone());
        rollups::spawn(stores.usage.clone());
        let settings = Arc::new(settings);
        outbox::spawn(stores.clone(), settings.clone());
        let limiter = settings.rate_limit.map(|limit| {
            let quota = governor::Quota::per_second(limit.per_second).allow_burst(limit.burst);
            Arc::new(governor::RateLimiter::keyed(quota))
        });
        let state = AppState {
            stores,
            clock,
            settings,
            ingest,
            limiter,
            alerts: alert_evaluator::AlertsHandle::default(),
            metrics: Arc::default(),
            token_touches: Arc::default(),
        };
        alert_evaluator::spawn(state.clone());
        state
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The metering definitions of every metric in `env` (archived ones keep metering), from
    /// the cache while its stamp is current (see [`MetricCache`]). Metrics never change once
    /// created, so only a new one makes a snapshot stale; when other processes share the database
    /// (replicas), the stored metrics version is read on every call, so a metric created through
    /// any replica meters the very next event on all of them.
    pub async fn metric_defs(&self, env: Env) -> store::StoreResult<Arc<Vec<MetricDef>>> {
        let generation = self.metrics.generation.load(Ordering::SeqCst);
        let version = match self.stores.shared {
            true => self.stores.config.metrics_version().await?,
            false => 0,
        };
        let stamp = (generation, version);
        if let Some((cached, defs)) = self.metrics.snapshots.read().await.get(&env) {
            if *cached == stamp {
                return Ok(defs.clone());
            }
        }
        let defs = Arc::new(model::load_metric_defs(&self.stores, env).await?);
        let mut snapshots = self.metrics.snapshots.write().await;
        // Never replace a snapshot loaded at a newer stamp with this one.
        if snapshots
            .get(&env)
            .is_none_or(|(cached, _)| *cached <= stamp)
        {
            snapshots.insert(env, (stamp, defs.clone()));
        }
        Ok(defs)
    }

    /// Makes every cached metric snapshot stale; call it after a metric's create committed.
    pub async fn invalidate_metrics(&self, env: Env) {
        self.metrics.generation.fetch_add(1, Ordering::SeqCst);
        self.metrics.snapshots.write().await.remove(&env);
    }

    /// The environment of a token, by its hash; `None` when it is unknown or revoked. Read from
    /// the database on every request (one primary-key lookup), never cached, so a revocation
    /// takes effect at once on every replica. Records the token's use at most once a minute, in
    /// the background.
    pub async fn token_env(&self, hash: &str) -> store::StoreResult<Option<Env>> {
        let env = self.stores.tokens.token_env(hash).await?;
        if env.is_some() {
            let now = self.now_ms();
            let due = {
                let mut touches = self
                    .token_touches
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let last = touches.get(hash).copied();
                let due = last.is_none_or(|t| now.saturating_sub(t) >= TOKEN_TOUCH_INTERVAL_MS);
                if due {
                    touches.insert(hash.to_string(), now);
                }
                due
            };
            if due {
                let (tokens, hash) = (self.stores.tokens.clone(), hash.to_string());
                tokio::spawn(async move {
                    if let Err(e) = tokens.touch_token(&hash, now).await {
                        tracing::warn!(error = %e, "could not record a token's last use");
                    }
                });
            }
        }
        Ok(env)
    }
}
