//! The background alert evaluator: re-evaluates the alerts of customers that just got usage,
//! within about a second of the ingest that stored it, plus new alerts (`evaluate_on_create`)
//! and a periodic sweep of every alert for what time alone changes (a new billing period, a
//! credit expiring). The evaluation itself, and the compare-and-set that makes each crossing
//! fire once, is `service::alerts`.
//!
//! - Ingest (`service::ingest`, and edge batches in `http::internal`) calls
//!   [`AlertsHandle::touch`] after its commit with the customer references that got usage. The
//!   set coalesces: a burst of requests for one customer is one evaluation.
//! - The queue is bounded ([`MAX_PENDING`] customers); past it, the set is dropped and the next
//!   pass sweeps every alert instead, so nothing is missed and memory stays bounded.
//! - Every replica runs one; a replica evaluates the usage it ingested. Two evaluating one
//!   customer at once (the sweep, a reset) is safe: the state change is conditional.
//! - Correctness never waits on memory: a process killed between an ingest and its evaluation
//!   leaves the crossing to the next sweep (one runs at startup).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

use crate::model::kind;
use crate::service::alerts::{self, Trigger};
use crate::store::Env;
use crate::AppState;

/// Most customers waiting for evaluation before the queue falls back to a sweep.
pub const MAX_PENDING: usize = 100_000;
/// How long after the first touch a pass starts, so a burst is evaluated once.
pub const COALESCE: Duration = Duration::from_millis(100);

#[derive(Default)]
struct Pending {
    customers: HashSet<(Env, String)>,
    /// New alerts: (env, id, silent).
    alerts: Vec<(Env, String, bool)>,
    sweep: bool,
}

/// Where ingest and alert creation tell the evaluator what to look at; cheap to clone (one
/// pointer, so `AppState` stays small).
#[derive(Clone, Default)]
pub struct AlertsHandle(Arc<Queue>);

#[derive(Default)]
struct Queue {
    pending: Mutex<Pending>,
    wake: Notify,
}

impl AlertsHandle {
    fn with<T>(&self, f: impl FnOnce(&mut Pending) -> T) -> T {
        let mut p = self
            .0
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        f(&mut p)
    }

    /// Usage arrived for these customer references (ids or ingest aliases) of `env`.
    pub fn touch<I: IntoIterator<Item = String>>(&self, env: Env, refs: I) {
        let mut any = false;
        self.with(|p| {
            for r in refs {
                any = true;
                if p.sweep {
                    continue;
                }
                p.customers.insert((env, r));
                if p.customers.len() > MAX_PENDING {
                    p.customers.clear();
                    p.sweep = true;
                }
            }
        });
        if any {
            self.0.wake.notify_one();
        }
    }

    /// An alert was created: evaluate it for its customers (`silent`: record, send nothing).
    pub fn alert_created(&self, env: Env, id: &str, silent: bool) {
        self.with(|p| p.alerts.push((env, id.to_string(), silent)));
        self.0.wake.notify_one();
    }

    fn take(&self) -> Pending {
        self.with(std::mem::take)
    }
}

/// Starts the evaluator (needs a Tokio runtime); it runs until the runtime stops.
pub fn spawn(st: AppState) {
    let every = st.settings.alert_sweep;
    tokio::spawn(async move {
        let handle = st.alerts.clone();
        handle.with(|p| p.sweep = true);
        let mut next_sweep = tokio::time::Instant::now();
        loop {
            tokio::select! {
                () = handle.0.wake.notified() => tokio::time::sleep(COALESCE).await,
                () = tokio::time::sleep_until(next_sweep) => handle.with(|p| p.sweep = true),
            }
            let pending = handle.take();
            if pending.sweep {
                next_sweep = tokio::time::Instant::now() + every;
            }
            pass(&st, pending).await;
        }
    });
}

async fn pass(st: &AppState, pending: Pending) {
    for (env, id, silent) in pending.alerts {
        let trigger = match silent {
            true => Trigger::SilentBaseline,
            false => Trigger::Creation,
        };
        if let Err(e) = evaluate_alert(st, env, &id, trigger).await {
            tracing::warn!(env = env.as_str(), alert = %id, error = %e, "evaluating a new alert failed");
        }
    }
    for env in Env::ALL {
        let refs: Vec<&String> = pending
            .customers
            .iter()
            .filter(|(e, _)| *e == env)
            .map(|(_, r)| r)
            .collect();
        if refs.is_empty() || pending.sweep {
            continue; // the sweep below evaluates everyone
        }
        if let Err(e) = evaluate_touched(st, env, &refs).await {
            tracing::warn!(env = env.as_str(), error = %e, "evaluating alerts failed; the sweep retries");
        }
    }
    if pending.sweep {
        for env in Env::ALL {
            if let Err(e) = sweep(st, env).await {
                tracing::warn!(env = env.as_str(), error = %e, "alert sweep failed");
            }
        }
    }
}

/// Evaluates the alerts of the customers these usage references name; one read when the
/// environment has no alert (the common case costs ingest nothing more).
async fn evaluate_touched(
    st: &AppState,
    env: Env,
    refs: &[&String],
) -> Result<(), alerts::AlertError> {
    let active = alerts::active_alerts(st, env).await?;
    if active.is_empty() {
        return Ok(());
    }
    let mut customers: Vec<String> = Vec::new();
    for r in refs {
        if let Some(c) = resolve(st, env, r).await? {
            customers.push(c);
        }
    }
    customers.sort();
    customers.dedup();
    for c in customers {
        let theirs: Vec<alerts::Alert> = active
            .iter()
            .filter(|a| a.applies_to(&c))
            .cloned()
            .collect();
        if let Err(e) = alerts::evaluate_alerts(st, env, &c, &theirs, Trigger::Usage).await {
            tracing::warn!(env = env.as_str(), customer = %c, error = %e, "evaluating a customer's alerts failed; the sweep retries");
        }
    }
    Ok(())
}

/// The customer id a usage reference names (its id or an ingest alias).
async fn resolve(
    st: &AppState,
    env: Env,
    customer_ref: &str,
) -> Result<Option<String>, alerts::AlertError> {
    let doc = st
        .stores
        .config
        .get_doc(env, kind::CUSTOMER, customer_ref)
        .await?;
    if doc.is_some() {
        return Ok(Some(customer_ref.to_string()));
    }
    Ok(st
        .stores
        .config
        .customer_by_alias(env, customer_ref)
        .await?)
}

async fn evaluate_alert(
    st: &AppState,
    env: Env,
    id: &str,
    trigger: Trigger,
) -> Result<(), alerts::AlertError> {
    let Some(alert) = alerts::active_alerts(st, env)
        .await?
        .into_iter()
        .find(|a| a.id == id)
    else {
        return Ok(());
    };
    for customer in alerts::target_customers(st, env, &alert).await? {
        alerts::evaluate_alerts(st, env, &customer, std::slice::from_ref(&alert), trigger).await?;
    }
    Ok(())
}

/// Every active alert of `env` for every customer it applies to.
async fn sweep(st: &AppState, env: Env) -> Result<(), alerts::AlertError> {
    let all = alerts::active_alerts(st, env).await?;
    if all.is_empty() {
        return Ok(());
    }
    let mut customers: Vec<String> = Vec::new();
    for a in &all {
        customers.extend(alerts::target_customers(st, env, a).await?);
    }
    customers.sort();
    customers.dedup();
    for c in customers {
        if let Err(e) = alerts::evaluate_customer(st, env, &c, None, Trigger::Schedule).await {
            tracing::warn!(env = env.as_str(), customer = %c, error = %e, "sweeping a customer's alerts failed");
        }
    }
    Ok(())
}
