//! Services: one module per use case (billable metrics, customers, contracts, invoices, the
//! background job). Handlers in `http/` parse the wire request, call one function here and map
//! its result; everything a use case decides (what to load, what to check, what to write
//! together) reads here as prose, over the `store` traits and `tally_core`.
//!
//! Invariants: services never speak HTTP (no statuses, no `ApiError`); each area returns its own
//! error enum, and `http::error` alone maps those to statuses. GET use cases never write.

pub mod alerts;
pub mod balances;
pub mod billing_configs;
pub mod charges;
pub mod commits;
pub mod contract_edits;
pub mod contracts;
pub mod credit_types;
pub mod customers;
pub mod events;
pub mod ingest;
pub mod invoices;
pub mod jobs;
pub mod metrics;
pub mod packages;
pub mod previews;
pub mod pro_services;
pub mod products;
pub mod rate_cards;
pub mod recurring;
pub mod subscriptions;
pub mod transitions;
pub mod usage;
pub mod webhooks;

use std::future::Future;
use std::time::Duration;

use rand::Rng;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tally_core::time::is_hour_aligned;

use crate::model::{decode, encode, kind, Contract, Customer, LoadError};
use crate::store::{ArchiveFilter, Env, StoreError, StoreResult};
use crate::wire::Time;
use crate::AppState;

/// Input a use case refuses, with a message naming the field. Every area error converts from it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// Refuses an empty or whitespace-only required string, or one over `max_chars`.
pub fn require_text(field: &str, value: &str, max_chars: usize) -> Result<(), Invalid> {
    if value.trim().is_empty() {
        return Err(Invalid(format!("{field} must not be empty")));
    }
    if value.chars().count() > max_chars {
        return Err(Invalid(format!(
            "{field} is longer than {max_chars} characters"
        )));
    }
    Ok(())
}

/// Refuses a timestamp that is not on a UTC hour boundary.
pub fn require_hour(field: &str, t: Time) -> Result<(), Invalid> {
    match is_hour_aligned(t.0) {
        true => Ok(()),
        false => Err(Invalid(format!(
            "{field} must be on an hour boundary (UTC)"
        ))),
    }
}

/// A keyset page of documents: items with their sequence number, at most `limit + 1` fetched so
/// the caller can tell whether another page follows.
pub type SeqPage<T> = Vec<(i64, T)>;

/// Most attempts one read-modify-write of a document makes before it answers a conflict. Every
/// round of a contended document lets at least one writer through, so this many concurrent
/// writers of one document all succeed.
pub const MAX_UPDATE_ATTEMPTS: u32 = 128;
/// Upper bound of the random pause between attempts (it grows with the attempt number).
const MAX_BACKOFF_US: u64 = 4_000;

/// Runs `attempt` until it reports done (`Some`), re-running it when it lost a race (`None`:
/// the document changed since it was read, or the database broke a deadlock). After
/// [`MAX_UPDATE_ATTEMPTS`] lost races, a `StoreError::Contended` (a 409).
pub async fn retry_conflicts<T, E, F, Fut>(mut attempt: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, E>>,
    E: From<StoreError>,
{
    for n in 0..MAX_UPDATE_ATTEMPTS {
        if let Some(done) = attempt().await? {
            return Ok(done);
        }
        let cap_us = (u64::from(n) + 1).saturating_mul(100).min(MAX_BACKOFF_US);
        let pause_us = rand::thread_rng().gen_range(0..=cap_us);
        tokio::time::sleep(Duration::from_micros(pause_us)).await;
    }
    Err(StoreError::Contended(format!(
        "the document changed concurrently {MAX_UPDATE_ATTEMPTS} times in a row"
    ))
    .into())
}

/// A conditional write's outcome with a lost deadlock counted as a lost race (`false`).
pub fn lost_race_is_false(written: StoreResult<bool>) -> StoreResult<bool> {
    match written {
        Err(StoreError::Contended(_)) => Ok(false),
        other => other,
    }
}

/// Inserts one document; `Ok(false)`, storing nothing, when its `unique_key` is taken.
pub async fn insert_unique(
    st: &AppState,
    env: Env,
    doc: crate::store::NewDoc<'_>,
) -> Result<bool, StoreError> {
    match st.stores.config.insert_docs(env, &[doc]).await {
        Ok(()) => Ok(true),
        Err(StoreError::Conflict(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// What a change to a document decided.
pub enum Write {
    /// Nothing to store (the change was already there).
    Unchanged,
    /// Store the changed document, archived or not.
    Save { archived: bool },
}

/// Read-modify-write of one document with optimistic concurrency: read it with its version,
/// apply `change`, store it only if nobody changed it meanwhile, else start again (bounded by
/// [`retry_conflicts`]). Returns the document as stored.
pub async fn modify_doc<T, E, F>(
    st: &AppState,
    env: Env,
    kind: &str,
    id: &str,
    what: &'static str,
    change: F,
) -> Result<T, E>
where
    T: Serialize + DeserializeOwned,
    E: From<StoreError> + From<LoadError>,
    F: Fn(&mut T) -> Result<Write, E>,
{
    let change = &change;
    retry_conflicts(move || async move {
        let doc = st.stores.config.get_doc(env, kind, id).await?;
        let doc = doc.ok_or(LoadError::NotFound(what))?;
        let mut value: T = decode(&doc)?;
        let archived = match change(&mut value)? {
            Write::Unchanged => return Ok(Some(value)),
            Write::Save { archived } => archived,
        };
        let body = encode(&value)?;
        let written = st
            .stores
            .config
            .update_doc(env, kind, id, &body, archived, doc.version)
            .await;
        Ok(lost_race_is_false(written)?.then_some(value))
    })
    .await
}

/// [`modify_doc`] of one customer.
pub async fn modify_customer<E, F>(
    st: &AppState,
    env: Env,
    id: &str,
    change: F,
) -> Result<Customer, E>
where
    E: From<StoreError> + From<LoadError>,
    F: Fn(&mut Customer) -> Result<Write, E>,
{
    modify_doc(st, env, kind::CUSTOMER, id, "customer", change).await
}

/// [`modify_doc`] of each of a customer's contracts (`filter` picks which), one after another.
pub async fn modify_contracts_of<E, F>(
    st: &AppState,
    env: Env,
    customer_id: &str,
    filter: ArchiveFilter,
    change: F,
) -> Result<(), E>
where
    E: From<StoreError> + From<LoadError>,
    F: Fn(&mut Contract) -> Result<Write, E>,
{
    let docs = st
        .stores
        .config
        .list_docs(env, kind::CONTRACT, Some(customer_id), filter, None)
        .await?;
    for doc in docs {
        modify_doc(st, env, kind::CONTRACT, &doc.id, "contract", &change).await?;
    }
    Ok(())
}
