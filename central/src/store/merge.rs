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
use tally_core::fold::{self, Fold};

use super::{Env, IngestItem, ItemOutcome, StoreError, StoreResult};

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

/// Merges a batch's partials into the stored rows `existing`; the rows to write, in key order.
/// A merge failure fails the whole batch (the edge sealed it; it cannot be partly applied).
pub fn merge_batch(
    partials: &[(Env, PartialKey, Accumulator)],
    existing: HashMap<RowKey, Accumulator>,
) -> StoreResult<Vec<RowWrite>> {
    let mut fold = Fold::new(existing);
    for (env, key, acc) in partials {
        fold.add(&[(row_key(*env, key)?, acc)])
            .map_err(|e| StoreError::Corrupt(format!("batch merge: {e}")))?;
    }
    fold.into_touched()
        .into_iter()
        .map(|(key, acc)| Ok((key, encode_acc(&acc)?)))
        .collect()
}
