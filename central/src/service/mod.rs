//! Services: one module per use case (billable metrics, customers, contracts, invoices, the
//! background job). Handlers in `http/` parse the wire request, call one function here and map
//! its result; everything a use case decides (what to load, what to check, what to write
//! together) reads here as prose, over the `store` traits and `tally_core`.
//!
//! Invariants: services never speak HTTP (no statuses, no `ApiError`); each area returns its own
//! error enum, and `http::error` alone maps those to statuses. GET use cases never write.

pub mod contracts;
pub mod customers;
pub mod invoices;
pub mod jobs;
pub mod metrics;

use tally_core::time::is_hour_aligned;

use crate::wire::Time;

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
