//! The messages between the Worker and its shard Durable Objects (never seen outside the edge).
//!
//! Invariants:
//! - A [`ShardIngest`] holds events of one environment, all owned by the addressed shard, in
//!   request order, each with its index in the client's request.
//! - A [`ShardReply`] has exactly one [`Outcome`] per event, in the same order.

use serde::{Deserialize, Serialize};
use tally_core::event::Event;

/// Path of the shard's ingest call.
pub const INGEST_PATH: &str = "/ingest";
/// Path of the call that marks the shard's metric snapshots stale.
pub const INVALIDATE_PATH: &str = "/invalidate";
/// The URL host used for calls to a shard (the runtime routes by stub, not by host).
pub const SHARD_ORIGIN: &str = "https://shard.tally.internal";

/// Events for one shard to dedupe and aggregate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardIngest {
    /// The shard's name (`shard-N`); the shard keeps it to name its batches.
    pub shard: String,
    /// `sandbox` or `production`.
    pub env: String,
    /// `(index in the client's request, validated event)`.
    pub events: Vec<(usize, Event)>,
}

/// What became of one event: the same outcomes as central's native path (`tally_core::fold`).
pub use tally_core::fold::Outcome;

/// The shard's answer to a [`ShardIngest`], sent only after its storage transaction committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardReply {
    pub outcomes: Vec<Outcome>,
}
