//! `POST /v1/ingest` at the edge: authenticate, validate with core, fan out to the shards that own
//! the events' keys, and answer with the same summary central's native path gives.
//!
//! Invariants:
//! - The order of checks is central's: token (401), then `Content-Encoding` (415), then the body
//!   and its contract (400 from `tally_core::ingest`), then per-event outcomes.
//! - 200 only after every shard called has answered that its storage transaction committed; if
//!   any shard fails, the answer is 503 with `x-should-retry: true`. Events a successful shard
//!   recorded stay recorded, and the client's retry reports them as duplicates, which is the
//!   contract's meaning of a retried request.
//! - At most `SHARD_COUNT` (≤ `MAX_SHARD_COUNT`) shard calls per request, all concurrent.

use futures_util::future::join_all;
use serde_json::json;
use tally_core::env::Env as Environment;
use tally_core::event::Event;
use tally_core::ingest::{parse_batch, IngestSummary, MAX_BODY_BYTES};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use worker::{Env, Request, Response};

use crate::config::{EdgeConfig, SHARD_BINDING};
use crate::error::{json_response, EdgeError};
use crate::protocol::{Outcome, ShardIngestRef, ShardReply};
use crate::routing::{shard_index, shard_name};

/// Serves one ingest request.
pub async fn handle(mut req: Request, env: &Env, cfg: &EdgeConfig) -> Result<Response, EdgeError> {
    let now_ms = crate::now_ms();
    let named = crate::tokens::environment(cfg, req.headers(), now_ms).await?;
    let environment = Environment::parse(&named).ok_or_else(|| {
        EdgeError::Unavailable(format!("central named an unknown environment {named:?}"))
    })?;
    let body = crate::body::read_limited(&mut req, MAX_BODY_BYTES).await?;
    let batch = parse_batch(&body, now_ms).map_err(|e| EdgeError::BadRequest(e.to_string()))?;

    let groups = group_by_shard(environment.as_str(), batch.events, cfg.shard_count);
    let namespace = env.durable_object(SHARD_BINDING)?;
    let calls = groups.into_iter().map(|(index, events)| {
        let namespace = &namespace;
        async move {
            let replies = call_shard(namespace, index, environment, &events).await?;
            Ok::<_, EdgeError>((events, replies))
        }
    });
    let mut summary = IngestSummary::new(batch.rejected);
    for result in join_all(calls).await {
        let (events, outcomes) = result?;
        summary.tally(&events, outcomes);
    }
    json_response(200, &json!({ "data": summary.finish() }))
}

/// Valid events grouped by owning shard, each group in request order; only non-empty groups.
pub fn group_by_shard(
    environment: &str,
    events: Vec<(usize, Event)>,
    shard_count: u64,
) -> Vec<(u64, Vec<(usize, Event)>)> {
    let mut groups: std::collections::BTreeMap<u64, Vec<(usize, Event)>> = Default::default();
    for (index, event) in events {
        let shard = shard_index(environment, &event.transaction_id, shard_count);
        groups.entry(shard).or_default().push((index, event));
    }
    groups.into_iter().collect()
}

fn shard_failed(index: u64, why: impl core::fmt::Display) -> EdgeError {
    EdgeError::Unavailable(format!(
        "shard {index} could not record its events ({why}); retrying the request is safe, \
         events already recorded are reported as duplicates"
    ))
}

#[wasm_bindgen]
extern "C" {
    /// A shard's Durable Object stub, for its RPC methods (`crate::shard::Shard`).
    #[wasm_bindgen(extends = js_sys::Object)]
    type ShardStub;

    #[wasm_bindgen(method, catch, js_name = ingestEvents)]
    fn ingest_events(this: &ShardStub, body: &str) -> Result<js_sys::Promise, JsValue>;
}

async fn call_shard(
    namespace: &worker::ObjectNamespace,
    index: u64,
    environment: Environment,
    events: &[(usize, Event)],
) -> Result<Vec<Outcome>, EdgeError> {
    let name = shard_name(index);
    let msg = ShardIngestRef {
        shard: &name,
        env: environment,
        events,
    };
    let body = serde_json::to_string(&msg).map_err(|e| shard_failed(index, e))?;
    let stub: ShardStub = namespace
        .get_by_name(&name)
        .map_err(|e| shard_failed(index, e))?
        .into_rpc();
    let call = stub
        .ingest_events(&body)
        .map_err(|e| shard_failed(index, EdgeError::from(e)))?;
    let text = JsFuture::from(call)
        .await
        .map_err(|e| shard_failed(index, EdgeError::from(e)))?
        .as_string()
        .ok_or_else(|| shard_failed(index, "a reply that is not text"))?;
    let reply: ShardReply = serde_json::from_str(&text).map_err(|e| shard_failed(index, e))?;
    if reply.outcomes.is_empty() {
        return Ok(vec![Outcome::Accepted; events.len()]);
    }
    if reply.outcomes.len() != events.len() {
        return Err(shard_failed(index, "a reply of the wrong length"));
    }
    Ok(reply.outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn ev(txn: &str) -> Event {
        Event {
            transaction_id: txn.into(),
            customer_id: "c".into(),
            event_type: "e".into(),
            timestamp_ms: 0,
            properties: BTreeMap::new(),
        }
    }

    #[test]
    fn groups_keep_request_order_and_route_by_key() {
        let events: Vec<(usize, Event)> =
            (0..50).map(|i| (i, ev(&format!("t{}", i % 20)))).collect();
        let groups = group_by_shard("sandbox", events, 4);
        let mut total = 0;
        for (shard, items) in &groups {
            assert!(!items.is_empty());
            assert!(items.windows(2).all(|w| w[0].0 < w[1].0));
            for (_, e) in items {
                assert_eq!(shard_index("sandbox", &e.transaction_id, 4), *shard);
            }
            total += items.len();
        }
        assert_eq!(total, 50);
    }
}
