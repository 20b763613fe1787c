//! The messages between the Worker and its shard Durable Objects (never seen outside the edge).
//!
//! Invariants:
//! - A [`ShardIngest`] holds events of one environment, all owned by the addressed shard, in
//!   request order, each with its index in the client's request.
//! - A [`ShardReply`] has exactly one [`Outcome`] per event, in the same order.

use serde::{Deserialize, Serialize};
use tally_core::env::Env;
use tally_core::event::Event;

/// Path of the call that marks the shard's metric snapshots stale.
pub const INVALIDATE_PATH: &str = "/invalidate";
/// The URL host used for calls to a shard (the runtime routes by stub, not by host).
pub const SHARD_ORIGIN: &str = "https://shard.tally.internal";

/// Events for one shard to dedupe and aggregate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardIngest {
    /// The shard's name (`shard-N`); the shard keeps it to name its batches.
    pub shard: String,
    pub env: Env,
    /// `(index in the client's request, validated event)`.
    pub events: Vec<(usize, Event)>,
}

/// A [`ShardIngest`] borrowed from the Worker's parsed request, for sending: the same JSON, without
/// copying the events.
#[derive(Debug, Serialize)]
pub struct ShardIngestRef<'a> {
    pub shard: &'a str,
    pub env: Env,
    pub events: &'a [(usize, Event)],
}

/// What became of one event: the same outcomes as central's native path (`tally_core::fold`).
pub use tally_core::fold::Outcome;

/// The shard's answer to a [`ShardIngest`], sent only after its storage transaction committed.
/// An empty `outcomes` means every event was accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardReply {
    pub outcomes: Vec<Outcome>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn the_borrowed_message_is_the_same_json() {
        let events = vec![(
            3,
            Event {
                transaction_id: "t".into(),
                customer_id: "c".into(),
                event_type: "e".into(),
                timestamp_ms: 7,
                properties: BTreeMap::from([("k".to_string(), "1.50".to_string())]),
            },
        )];
        let owned = ShardIngest {
            shard: "shard-1".into(),
            env: Env::Sandbox,
            events: events.clone(),
        };
        let borrowed = ShardIngestRef {
            shard: "shard-1",
            env: Env::Sandbox,
            events: &events,
        };
        let text = serde_json::to_string(&borrowed).unwrap();
        assert_eq!(text, serde_json::to_string(&owned).unwrap());
        assert_eq!(serde_json::from_str::<ShardIngest>(&text).unwrap(), owned);
    }
}
