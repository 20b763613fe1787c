//! `tally-central`: the Metronome-compatible admin API, storage, native ingest, rating and invoices.
//!
//! Layout: `http` (one module per resource, routes beside handlers; the only place HTTP statuses
//! exist) → `service` (one module per use case, each with its domain error; `ingest` group commit;
//! `billing` invoice computation) → `store` (one trait per aggregate; SQLite and PostgreSQL). All billing arithmetic is `tally_core`; this crate moves data and enforces the
//! API contract.
//!
//! Invariants: every row is scoped by the token's environment; a 200 from ingest means the events
//! are durable; a FINALIZED invoice never changes; money is exact decimal end to end.

pub mod auth;
pub mod billing;
pub mod http;
pub mod ingest;
pub mod model;
pub mod server;
pub mod service;
pub mod store;
pub mod wire;

use std::collections::HashMap;
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

/// Service settings that handlers and jobs read.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long after a period ends its invoice stays DRAFT before it is FINALIZED.
    pub invoice_grace_ms: i64,
    /// How often the finalization and pruning job runs.
    pub job_interval: Duration,
    /// The key edge Workers sign batches with; the internal endpoints are off without it.
    pub edge_hmac_key: Option<Secret>,
    /// Per-token request rate limit; `None` turns limiting off.
    pub rate_limit: Option<RateLimit>,
    /// How long one request (reading its body included) may take before it is answered 408.
    pub request_timeout: Duration,
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
            edge_hmac_key: None,
            rate_limit: None,
            request_timeout: Duration::from_secs(60),
        }
    }
}

/// One rate-limit bucket per token, keyed by the token's hash (only tokens that authenticated get a
/// bucket, so the map is bounded by the number of tokens).
pub type TokenLimiter = governor::DefaultKeyedRateLimiter<String>;

/// Per environment: the metrics version a snapshot was loaded at, and the snapshot.
type MetricSnapshots = HashMap<Env, (u64, Arc<Vec<MetricDef>>)>;

/// Everything a handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub stores: Stores,
    pub clock: Arc<dyn Clock>,
    pub settings: Arc<Settings>,
    pub ingest: ingest::IngestHandle,
    pub limiter: Option<Arc<TokenLimiter>>,
    metrics: Arc<RwLock<MetricSnapshots>>,
    tokens: Arc<RwLock<HashMap<String, Env>>>,
}

impl AppState {
    /// Builds the state and starts the ingest writer task (needs a Tokio runtime).
    pub fn new(stores: Stores, clock: Arc<dyn Clock>, settings: Settings) -> Self {
        let ingest = ingest::IngestHandle::spawn(stores.usage.clone(), clock.clone());
        let limiter = settings.rate_limit.map(|limit| {
            let quota = governor::Quota::per_second(limit.per_second).allow_burst(limit.burst);
            Arc::new(governor::RateLimiter::keyed(quota))
        });
        AppState {
            stores,
            clock,
            settings: Arc::new(settings),
            ingest,
            limiter,
            metrics: Arc::default(),
            tokens: Arc::default(),
        }
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The metering definitions of every metric in `env` (archived ones keep metering).
    ///
    /// Metrics never change once created, so the snapshot stays valid until one is added. This
    /// process drops it when it adds one; when other processes share the database (replicas), the
    /// stored metrics version is compared on every call, so a metric created through any replica
    /// meters the very next event on all of them.
    pub async fn metric_defs(&self, env: Env) -> store::StoreResult<Arc<Vec<MetricDef>>> {
        let version = match self.stores.shared {
            true => self.stores.config.metrics_version().await?,
            false => 0,
        };
        if let Some((cached, defs)) = self.metrics.read().await.get(&env) {
            if *cached == version {
                return Ok(defs.clone());
            }
        }
        let defs = Arc::new(model::load_metric_defs(&self.stores, env).await?);
        self.metrics
            .write()
            .await
            .insert(env, (version, defs.clone()));
        Ok(defs)
    }

    /// Drops the cached metric snapshot after a metric is created.
    pub async fn invalidate_metrics(&self, env: Env) {
        self.metrics.write().await.remove(&env);
    }

    /// The environment of a token, by its hash (tokens are never revoked, so caching is safe).
    pub async fn token_env(&self, hash: &str) -> store::StoreResult<Option<Env>> {
        if let Some(env) = self.tokens.read().await.get(hash) {
            return Ok(Some(*env));
        }
        let env = self.stores.tokens.token_env(hash).await?;
        if let Some(env) = env {
            self.tokens.write().await.insert(hash.to_string(), env);
        }
        Ok(env)
    }
}
