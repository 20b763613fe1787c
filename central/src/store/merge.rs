//! The backend-independent half of writing usage: which items a commit accepts and what each
//! touched hourly row becomes, computed with `tally_core` accumulators.
//!
//! A backend claims dedupe keys, loads the current rows of [`accepted_keys`] and writes what
//! [`fold_items`] or [`merge_batch`] return, all in one transaction. Keeping the merge here means
//! both backends merge identically and nothing is ever summed in SQL.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use tally_core::accumulate::{Accumulator, PartialKey};

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
    mut claimed: HashSet<(Env, String)>,
) -> Vec<ItemOutcome> {
    items
        .iter()
        .map(
            |item| match claimed.remove(&(item.env, item.transaction_id.clone())) {
                true => ItemOutcome::Accepted,
                false => ItemOutcome::Duplicate,
            },
        )
        .collect()
}

/// The sorted, distinct rows the accepted items contribute to (the rows to load before folding).
pub fn accepted_keys(items: &[IngestItem], outcomes: &[ItemOutcome]) -> StoreResult<Vec<RowKey>> {
    let mut keys: Vec<RowKey> = Vec::new();
    for (item, outcome) in items.iter().zip(outcomes) {
        if *outcome == ItemOutcome::Accepted {
            for (key, _) in &item.contributions {
                keys.push(row_key(item.env, key)?);
            }
        }
    }
    keys.sort();
    keys.dedup();
    Ok(keys)
}

/// Folds each accepted item's contributions into `partials` (the stored rows), all or nothing per
/// item: an item whose merge fails becomes `Rejected` and contributes nothing. Returns the touched
/// rows to write, in key order.
///
/// An item's contributions land on distinct rows (one per metric), so checking every merge first
/// and then merging in place is atomic per item without cloning accumulators (a UNIQUE set can
/// be large).
pub fn fold_items(
    items: &[IngestItem],
    outcomes: &mut [ItemOutcome],
    mut partials: HashMap<RowKey, Accumulator>,
) -> StoreResult<Vec<RowWrite>> {
    let mut touched = BTreeSet::new();
    for (item, outcome) in items.iter().zip(outcomes.iter_mut()) {
        if *outcome != ItemOutcome::Accepted {
            continue;
        }
        let keys = item
            .contributions
            .iter()
            .map(|(key, _)| row_key(item.env, key))
            .collect::<StoreResult<Vec<_>>>()?;
        let check = item
            .contributions
            .iter()
            .zip(&keys)
            .try_for_each(|((_, acc), rk)| {
                partials.get(rk).map_or(Ok(()), |cur| cur.check_merge(acc))
            });
        if let Err(e) = check {
            *outcome = ItemOutcome::Rejected(format!("event not counted: {e}"));
            continue;
        }
        for ((_, acc), rk) in item.contributions.iter().zip(keys) {
            match partials.get_mut(&rk) {
                Some(cur) => cur
                    .merge(acc)
                    .map_err(|e| StoreError::Corrupt(format!("merge after check: {e}")))?,
                None => {
                    partials.insert(rk.clone(), acc.clone());
                }
            }
            touched.insert(rk);
        }
    }
    touched
        .into_iter()
        .map(|key| {
            let acc = encode_acc(&partials[&key])?;
            Ok((key, acc))
        })
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
    existing: &HashMap<RowKey, Accumulator>,
) -> StoreResult<Vec<RowWrite>> {
    let mut merged: BTreeMap<RowKey, Accumulator> = BTreeMap::new();
    for (env, key, acc) in partials {
        let rk = row_key(*env, key)?;
        let current = merged.remove(&rk).or_else(|| existing.get(&rk).cloned());
        let next = match current {
            None => acc.clone(),
            Some(mut cur) => {
                cur.merge(acc)
                    .map_err(|e| StoreError::Corrupt(format!("batch merge: {e}")))?;
                cur
            }
        };
        merged.insert(rk, next);
    }
    merged
        .into_iter()
        .map(|(key, acc)| Ok((key, encode_acc(&acc)?)))
        .collect()
}
