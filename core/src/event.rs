//! A validated usage event.
//!
//! Invariants of an [`Event`]: every id is non-empty and within its length limit, the timestamp is
//! inside the accepted window relative to the `now` it was validated against, and every property
//! value is kept as exact text (JSON numbers keep their literal digits; booleans are `true`/`false`).

use alloc::collections::BTreeMap;
use alloc::string::String;
use serde::{Deserialize, Serialize};

/// One usage event after validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub transaction_id: String,
    /// The customer reference exactly as sent: a customer id or an ingest alias.
    pub customer_id: String,
    pub event_type: String,
    pub timestamp_ms: i64,
    pub properties: BTreeMap<String, String>,
}

impl Event {
    pub fn property(&self, name: &str) -> Option<&str> {
        self.properties.get(name).map(String::as_str)
    }
}

/// An accepted (or duplicate) event as the event store keeps it: the event as validated, the
/// billable metrics it matched when it was metered, and when it was processed. The edge forwards
/// these inside its sealed batches ([`crate::batch::Batch::events`]) so central stores events
/// ingested at the edge exactly as it stores its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// `sandbox` or `production`.
    pub env: String,
    pub event: Event,
    /// Ids of the billable metrics the event contributed to, sorted.
    pub matched_metrics: alloc::vec::Vec<String>,
    /// When the event was accepted (epoch milliseconds, the ingesting node's clock).
    pub processed_ms: i64,
    /// True for a later delivery of an already claimed transaction id (counted nowhere).
    #[serde(default)]
    pub duplicate: bool,
}
