//! The backend-independent half of writing usage: which items a commit accepts and what each
//! touched hourly row becomes, computed with `tally_core` accumulators.
//!
//! A backend claims dedupe keys, loads the current rows of [`accepted_keys`] and writes what
//! [`fold_items`] or [`merge_batch`] return, all in one transaction. The fold itself is
//! `tally_core::fold`, the same code the edge's shards run; this module only maps items to the
//! backends' row keys and text encodings, so both backends merge identically and nothing is ever
//! summed in SQL.

use std::collections::{HashMap, HashSet};

use tally_core::accumulate::{Accumulator, PartialKey};
use tally_core::batch::BatchPartial;
use tally_core::fold::{self, Fold};

use super::{DeadLetter, Env, IngestItem, ItemOutcome, StoreError, StoreResult};

/// A partial's storage key: the `PartialKey` plus its environment, with groups as canonical JSON.
pub type RowKey = (Env, String, String, i64, String);

/// A row to write: its key and the encoded accumulator.
pub type RowWrite = (RowKey, String);

pub fn row_key(env: Env, key: &PartialKey) -> StoreResult<RowKey> {
    let groups =
        serde_json::to_string(&key.groups).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok((
        env,
        key.customer_ref.clone(),
        key.metric_id.clone(),
        key.hour_ms,
        groups,
    ))
}

pub fn decode_acc(text: &str) -> StoreResult<Accumulator> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("accumulator: {e}")))
}

pub fn encode_acc(acc: &Accumulator) -> StoreResult<String> {
    serde_json::to_string(acc).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub fn decode_groups(text: &str) -> StoreResult<Vec<Option<String>>> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("groups: {e}")))
}

pub fn parse_env(text: &str) -> StoreResult<Env> {
    Env::parse(text).ok_or_else(|| StoreError::Corrupt(format!("environment {text:?}")))
}

/// The first item of each key this transaction claimed is accepted; every other is a duplicate.
pub fn outcomes_from_claims(
    items: &[IngestItem],
    claimed: &HashSet<(Env, String)>,
) -> Vec<ItemOutcome> {
    fold::accepted_by_claim(
        items.iter().map(|i| (i.env, i.transaction_id.clone())),
        |k| claimed.contains(k),
    )
}

fn keyed_contributions(item: &IngestItem) -> StoreResult<Vec<(RowKey, &Accumulator)>> {
    item.contributions
        .iter()
        .map(|(key, acc)| Ok((row_key(item.env, key)?, acc)))
        .collect()
}

/// The sorted, distinct rows the accepted items contribute to (the rows to load before folding).
pub fn accepted_keys(items: &[IngestItem], outcomes: &[ItemOutcome]) -> StoreResult<Vec<RowKey>> {
    fold::accepted_keys(outcomes, |i| {
        items[i]
            .contributions
            .iter()
            .map(|(key, _)| row_key(items[i].env, key))
            .collect()
    })
}

/// Folds each accepted item's contributions into `partials` (the stored rows), all or nothing per
/// item (`tally_core::fold`): an item whose merge fails becomes `Rejected` and contributes
/// nothing. Returns the touched rows to write, in key order.
pub fn fold_items(
    items: &[IngestItem],
    outcomes: &mut [ItemOutcome],
    partials: HashMap<RowKey, Accumulator>,
) -> StoreResult<Vec<RowWrite>> {
    fold::fold_accepted(partials, outcomes, |i| keyed_contributions(&items[i]))?
        .into_iter()
        .map(|(key, acc)| Ok((key, encode_acc(&acc)?)))
        .collect()
}

/// The sorted, distinct rows a batch's partials land on.
pub fn batch_keys(partials: &[(Env, PartialKey, Accumulator)]) -> StoreResult<Vec<RowKey>> {
    let mut keys = partials
        .iter()
        .map(|(env, key, _)| row_key(*env, key))
        .collect::<StoreResult<Vec<_>>>()?;
    keys.sort();
    keys.dedup();
    Ok(keys)
}

/// Merges a batch's partials into the stored rows `existing`, each partial on its own: the rows to
/// write (in key order) and the partials that could not be merged, as dead letters.
///
/// A partial is the pre-aggregate of events the edge already acknowledged, so unlike an ingested
/// event it cannot be refused to its sender; and failing the whole batch would make its shard
/// resend it forever, blocking every later batch. So a partial whose merge fails (the same check
/// that makes native ingest reject an event: `tally_core::fold`) changes no row and is kept as a
/// dead letter, and the rest of the batch applies.
pub fn merge_batch(
    shard_id: &str,
    seq: u64,
    partials: &[(Env, PartialKey, Accumulator)],
    existing: HashMap<RowKey, Accumulator>,
    now_ms: i64,
) -> StoreResult<(Vec<RowWrite>, Vec<DeadLetter>)> {
    let mut fold = Fold::new(existing);
    let mut dead = Vec::new();
    for (index, (env, key, acc)) in partials.iter().enumerate() {
        if let Err(e) = fold.add(&[(row_key(*env, key)?, acc)]) {
            let partial = serde_json::to_string(&BatchPartial {
                env: env.as_str().to_string(),
                key: key.clone(),
                acc: acc.clone(),
            })
            .map_err(|e| StoreError::Corrupt(format!("encoding a dead letter: {e}")))?;
            dead.push(DeadLetter {
                shard_id: shard_id.to_string(),
                seq,
                index: u64::try_from(index).unwrap_or(u64::MAX),
                env: *env,
                partial,
                reason: format!("partial not merged: {e}"),
                recorded_ms: now_ms,
            });
        }
    }
    let rows = fold
        .into_touched()
        .into_iter()
        .map(|(key, acc)| Ok((key, encode_acc(&acc)?)))
        .collect::<StoreResult<_>>()?;
    Ok((rows, dead))
}
