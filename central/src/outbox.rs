//! The outbox deliverer: sends the messages state changes wrote to the `outbox` table
//! (`store::OutboxStore`), at least once, from a background task in every process. Nothing is
//! ever sent from a request handler.
//!
//! - Claim: each pass leases due messages with one conditional UPDATE (PostgreSQL: `FOR UPDATE
//!   SKIP LOCKED`), so with several replicas on one database each message is being delivered by
//!   one of them at a time. The lease outlives the request timeout; a process killed mid-delivery
//!   leaves a lease that simply expires, and the message is due again (same id: receivers
//!   dedupe).
//! - Outcome: a 2xx marks it delivered. Anything else (a non-2xx, a connection error, a timeout)
//!   records `last_error` and schedules the next attempt after an exponential backoff with jitter
//!   (`base × 2^(attempt−1)`, capped at [`MAX_DELAY`], a random half of it taken off), until
//!   [`GIVE_UP_AFTER_MS`] (about two days, as Metronome) after the message was written.
//! - Topics: `webhook` (signed POST to an endpoint, [`send_webhook`]); `stripe` (a finalized
//!   invoice pushed to Stripe, `crate::stripe::push`: several calls, all within the attempt's
//!   timeout, so the lease never expires while one runs). An unknown topic is retried later (a
//!   newer replica wrote it).
//!
//! Times here are the wall clock: delivery happens in the real world, and receivers check the
//! signed date against their own clock.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::Sha256;
use tokio::sync::Semaphore;

use crate::service::webhooks;
use crate::store::{AttemptOutcome, OutboxMessage, Stores, OUTBOX_STRIPE, OUTBOX_WEBHOOK};
use crate::{Clock, Settings, SystemClock};

/// The longest pause between two attempts (Metronome's "up to a 15-minute cadence").
pub const MAX_DELAY: Duration = Duration::from_secs(15 * 60);
/// How long after a message was written delivery is given up.
pub const GIVE_UP_AFTER_MS: i64 = 48 * 60 * 60 * 1000;
/// Messages in flight at once per process.
pub const MAX_IN_FLIGHT: usize = 32;
/// Pause between looks for due messages when none was due.
pub const POLL: Duration = Duration::from_millis(200);
/// How much longer than the request timeout a lease lasts.
const LEASE_MARGIN: Duration = Duration::from_secs(5);
/// The most of a receiver's answer kept in `last_error`.
const MAX_ERROR_CHARS: usize = 300;

/// The signature header: hex HMAC-SHA256 of `date + "\n" + body` with the secret.
pub const SIGNATURE_HEADER: &str = "Metronome-Webhook-Signature";

/// How the deliverer runs (`--webhook-retry-base-ms`, `--webhook-timeout-secs`).
#[derive(Debug, Clone, Copy)]
pub struct DeliverySettings {
    /// The first retry's delay; each later one doubles it (before jitter and the cap).
    pub retry_base: Duration,
    /// How long one delivery attempt may take.
    pub timeout: Duration,
    /// Whether this process delivers at all (`tally serve` does; `tally ingest` into a local
    /// database does not, so a short-lived process never holds a lease it may not finish).
    pub enabled: bool,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        DeliverySettings {
            retry_base: Duration::from_secs(10),
            timeout: Duration::from_secs(10),
            enabled: true,
        }
    }
}

fn wall_ms() -> i64 {
    SystemClock.now_ms()
}

/// Starts the deliverer (needs a Tokio runtime); it runs until the runtime stops.
pub fn spawn(stores: Stores, settings: Arc<Settings>) {
    let delivery = settings.delivery;
    if !delivery.enabled {
        return;
    }
    let http = match reqwest::Client::builder()
        .timeout(delivery.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("tally-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(http) => http,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the webhook HTTP client; outbox not delivered");
            return;
        }
    };
    let owner = uuid::Uuid::new_v4().to_string();
    let lease = delivery.timeout + LEASE_MARGIN;
    tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        loop {
            let free = slots.available_permits();
            if free == 0 {
                // Wait for one delivery to finish.
                drop(slots.clone().acquire_owned().await);
                continue;
            }
            let now = wall_ms();
            let lease_until = now.saturating_add(i64::try_from(lease.as_millis()).unwrap_or(0));
            let limit = i64::try_from(free).unwrap_or(1);
            match stores
                .outbox
                .claim_outbox(&owner, now, lease_until, limit)
                .await
            {
                Ok(claimed) => {
                    let full = claimed.len() == free;
                    for msg in claimed {
                        let Ok(permit) = slots.clone().try_acquire_owned() else {
                            break;
                        };
                        let (stores, http, owner) = (stores.clone(), http.clone(), owner.clone());
                        let settings = settings.clone();
                        tokio::spawn(async move {
                            deliver(&stores, &http, &owner, &settings, msg).await;
                            drop(permit);
                        });
                    }
                    if !full {
                        tokio::time::sleep(POLL).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "claiming outbox messages failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    });
}

/// One attempt at one claimed message, and its outcome recorded.
async fn deliver(
    stores: &Stores,
    http: &reqwest::Client,
    owner: &str,
    all: &Settings,
    msg: OutboxMessage,
) {
    let settings = all.delivery;
    let result = attempt(stores, http, all, &msg).await;
    let now = wall_ms();
    let outcome = match result {
        Ok(()) => AttemptOutcome::Delivered,
        Err(Failure::Final(error)) => AttemptOutcome::GiveUp { error },
        Err(Failure::Retry(error)) if now.saturating_sub(msg.created_ms) >= GIVE_UP_AFTER_MS => {
            AttemptOutcome::GiveUp { error }
        }
        Err(Failure::Retry(error)) => {
            let delay = backoff(settings.retry_base, msg.attempts, &mut rand::thread_rng());
            let next_attempt_ms =
                now.saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
            AttemptOutcome::Retry {
                error,
                next_attempt_ms,
            }
        }
    };
    let label = match &outcome {
        AttemptOutcome::Delivered => "delivered",
        AttemptOutcome::Retry { .. } => "retry",
        AttemptOutcome::GiveUp { .. } => "given_up",
    };
    metrics::counter!("tally_outbox_attempts_total", "outcome" => label).increment(1);
    match &outcome {
        AttemptOutcome::Delivered => tracing::info!(
            outbox_id = %msg.id, kind = %msg.kind, destination = %msg.destination,
            attempts = msg.attempts, "outbox message delivered"
        ),
        AttemptOutcome::Retry { error, .. } | AttemptOutcome::GiveUp { error } => {
            tracing::warn!(
                outbox_id = %msg.id, kind = %msg.kind, destination = %msg.destination,
                attempts = msg.attempts, outcome = label, %error, "outbox delivery failed"
            )
        }
    }
    if let Err(e) = stores
        .outbox
        .finish_attempt(&msg.id, owner, &outcome, now)
        .await
    {
        // The lease expires and the message is attempted again: at least once holds.
        tracing::warn!(outbox_id = %msg.id, error = %e, "recording an outbox attempt failed");
    }
}

/// Why an attempt did not deliver.
enum Failure {
    Retry(String),
    /// Nothing to deliver to any more (the endpoint was archived or removed).
    Final(String),
}

async fn attempt(
    stores: &Stores,
    http: &reqwest::Client,
    settings: &Settings,
    msg: &OutboxMessage,
) -> Result<(), Failure> {
    match msg.topic.as_str() {
        OUTBOX_WEBHOOK => send_webhook(stores, http, msg).await,
        OUTBOX_STRIPE => {
            let budget = settings.delivery.timeout;
            crate::stripe::push(stores, http, settings.stripe.as_ref(), budget, msg)
                .await
                .map_err(|e| match e {
                    crate::stripe::PushError::Retry(e) => Failure::Retry(e),
                    crate::stripe::PushError::Provider(e) => {
                        Failure::Retry(format!("billing provider error: {e}"))
                    }
                    crate::stripe::PushError::Final(e) => Failure::Final(e),
                })
        }
        other => Err(Failure::Retry(format!(
            "topic {other:?} is not delivered by this version of tally"
        ))),
    }
}

/// POSTs a webhook message to its endpoint, signed with the environment's secret (unsigned when
/// none is set: no `Metronome-Webhook-Signature` header).
async fn send_webhook(
    stores: &Stores,
    http: &reqwest::Client,
    msg: &OutboxMessage,
) -> Result<(), Failure> {
    let store_err = |e: crate::store::StoreError| Failure::Retry(format!("database: {e}"));
    let endpoint = webhooks::get_in(stores, msg.env, &msg.destination)
        .await
        .map_err(store_err)?;
    let endpoint = match endpoint {
        Some(e) if e.archived_at.is_none() => e,
        Some(_) => return Err(Failure::Final("the webhook endpoint was archived".into())),
        None => return Err(Failure::Final("the webhook endpoint does not exist".into())),
    };
    let secret = stores
        .outbox
        .webhook_secret(msg.env)
        .await
        .map_err(store_err)?;
    let date = httpdate::fmt_http_date(SystemTime::now());
    let mut req = http
        .post(&endpoint.url)
        .header("content-type", "application/json")
        .header("date", &date)
        .header("x-metronome-date", &date);
    if let Some(secret) = secret {
        req = req.header(
            SIGNATURE_HEADER,
            sign(secret.as_bytes(), &date, &msg.payload),
        );
    }
    let res = req
        .body(msg.payload.clone())
        .send()
        .await
        .map_err(|e| Failure::Retry(describe(&e)))?;
    let status = res.status();
    if status.is_success() {
        return Ok(());
    }
    let text = res.text().await.unwrap_or_default();
    let text: String = text.chars().take(MAX_ERROR_CHARS).collect();
    Err(Failure::Retry(match text.trim().is_empty() {
        true => format!("HTTP {}", status.as_u16()),
        false => format!("HTTP {}: {}", status.as_u16(), text.trim()),
    }))
}

/// A transport error without its source chain's noise.
fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    match detail.is_empty() {
        true => what.to_string(),
        false => format!("{what}: {detail}"),
    }
}

/// `hex(HMAC-SHA256(secret, date + "\n" + body))`, as Metronome signs (and the SDKs'
/// `webhooks.unwrap` verify).
pub fn sign(secret: &[u8], date: &str, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(date.as_bytes());
    mac.update(b"\n");
    mac.update(body.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The pause before the attempt after attempt number `attempts` (1-based): `base × 2^(n−1)`
/// capped at [`MAX_DELAY`], minus a random part of up to half of it (jitter, so receivers
/// recovering from an outage are not hit by every retry at once).
pub fn backoff(base: Duration, attempts: i64, rng: &mut impl Rng) -> Duration {
    let exp = u32::try_from(attempts.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
    let full = base.saturating_mul(1u32 << exp).min(MAX_DELAY);
    let half = full / 2;
    let jitter_ms = rng.gen_range(0..=u64::try_from(half.as_millis()).unwrap_or(0));
    full.saturating_sub(Duration::from_millis(jitter_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_as_metronome() {
        // hex(HMAC-SHA256("secret", "Mon, 07 Dec 2026 14:00:00 GMT\n{}")), from Python's hmac.
        let sig = sign(b"secret", "Mon, 07 Dec 2026 14:00:00 GMT", "{}");
        assert_eq!(
            sig,
            "a07d8a04142be334890f18d8e17f281d60d56f762119c150487bf1abf3b8e0cf"
        );
        assert_ne!(sig, sign(b"other", "Mon, 07 Dec 2026 14:00:00 GMT", "{}"));
    }

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let mut rng = rand::thread_rng();
        let base = Duration::from_millis(100);
        for n in 1..=40 {
            let d = backoff(base, n, &mut rng);
            let full = base
                .saturating_mul(1u32 << (n - 1).min(30) as u32)
                .min(MAX_DELAY);
            assert!(d <= full && d >= full / 2, "attempt {n}: {d:?} vs {full:?}");
        }
        assert!(backoff(base, 0, &mut rng) <= base);
    }
}
