//! The pure half of a shard's ingest: which events are first of their key, and what each touched
//! pending partial becomes, merged with `tally_core` accumulators. The shard runs these between
//! its SQL statements, inside one storage transaction.
//!
//! Invariants (the same as central's native path, `central/src/store/merge.rs`):
//! - Within a request, the first event of a transaction id is the candidate; later copies are
//!   duplicates. Across requests, whichever claimed the dedupe key first wins.
//! - Folding is all or nothing per event: an event whose merge fails contributes nothing, becomes
//!   `Rejected("event not counted: ...")`, and its key must be released by the caller.
//! - A pending partial is stored under [`row_key`] (environment + `PartialKey`, canonical JSON),
//!   so equal keys always meet in one row.

use std::collections::{BTreeMap, HashMap, HashSet};

use tally_core::accumulate::{Accumulator, PartialKey};
use tally_core::event::Event;

use crate::protocol::Outcome;

/// The storage key of a pending partial: canonical JSON of `[env, key]`.
pub fn row_key(env: &str, key: &PartialKey) -> Result<String, String> {
    serde_json::to_string(&(env, key)).map_err(|e| format!("encoding a partial key: {e}"))
}

/// Decodes a [`row_key`].
pub fn parse_row_key(text: &str) -> Result<(String, PartialKey), String> {
    serde_json::from_str(text).map_err(|e| format!("stored partial key {text:?}: {e}"))
}

/// `true` for each event that is the first of its transaction id in `events`.
pub fn first_occurrences(events: &[(usize, Event)]) -> Vec<bool> {
    let mut seen: HashSet<&str> = HashSet::with_capacity(events.len());
    events
        .iter()
        .map(|(_, e)| seen.insert(e.transaction_id.as_str()))
        .collect()
}

/// Outcomes once the claim is known: a first occurrence whose key this transaction claimed is
/// accepted (pending its merge); everything else is a duplicate.
pub fn claim_outcomes(
    events: &[(usize, Event)],
    first: &[bool],
    claimed: &HashSet<String>,
) -> Vec<Outcome> {
    events
        .iter()
        .zip(first)
        .map(|((_, e), is_first)| {
            if *is_first && claimed.contains(&e.transaction_id) {
                Outcome::Accepted
            } else {
                Outcome::Duplicate
            }
        })
        .collect()
}

/// Folds each accepted event's contributions into `partials` (the current pending rows of the
/// keys involved), all or nothing per event. Returns the touched rows in key order.
pub fn fold(
    env: &str,
    contributions: &[Vec<(PartialKey, Accumulator)>],
    outcomes: &mut [Outcome],
    mut partials: HashMap<String, Accumulator>,
) -> Result<Vec<(String, Accumulator)>, String> {
    let mut touched: BTreeMap<String, ()> = BTreeMap::new();
    for (contribs, outcome) in contributions.iter().zip(outcomes.iter_mut()) {
        if *outcome != Outcome::Accepted {
            continue;
        }
        let mut staged: Vec<(String, Accumulator)> = Vec::with_capacity(contribs.len());
        let mut failed = None;
        for (key, acc) in contribs {
            let rk = row_key(env, key)?;
            let current = staged
                .iter()
                .rev()
                .find(|(k, _)| *k == rk)
                .map(|(_, a)| a.clone())
                .or_else(|| partials.get(&rk).cloned());
            let merged = match current {
                None => Ok(acc.clone()),
                Some(mut cur) => cur.merge(acc).map(|()| cur),
            };
            match merged {
                Ok(m) => staged.push((rk, m)),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        match failed {
            Some(e) => *outcome = Outcome::Rejected(format!("event not counted: {e}")),
            None => {
                for (rk, acc) in staged {
                    touched.insert(rk.clone(), ());
                    partials.insert(rk, acc);
                }
            }
        }
    }
    let mut rows = Vec::with_capacity(touched.len());
    for key in touched.into_keys() {
        if let Some(acc) = partials.remove(&key) {
            rows.push((key, acc));
        }
    }
    Ok(rows)
}

/// The distinct row keys the contributions of accepted events touch (the rows to load).
pub fn accepted_row_keys(
    env: &str,
    contributions: &[Vec<(PartialKey, Accumulator)>],
    outcomes: &[Outcome],
) -> Result<Vec<String>, String> {
    let mut keys = Vec::new();
    for (contribs, outcome) in contributions.iter().zip(outcomes) {
        if *outcome == Outcome::Accepted {
            for (key, _) in contribs {
                keys.push(row_key(env, key)?);
            }
        }
    }
    keys.sort();
    keys.dedup();
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap as Map;
    use tally_core::accumulate::merge_all;

    fn event(txn: &str) -> (usize, Event) {
        (
            0,
            Event {
                transaction_id: txn.into(),
                customer_id: "c".into(),
                event_type: "e".into(),
                timestamp_ms: 0,
                properties: Map::new(),
            },
        )
    }

    fn key(metric: &str, hour_ms: i64) -> PartialKey {
        PartialKey {
            customer_ref: "c".into(),
            metric_id: metric.into(),
            groups: vec![Some("g".into()), None],
            hour_ms,
        }
    }

    #[test]
    fn row_keys_round_trip_and_separate_environments() {
        let k = key("m", 3_600_000);
        let a = row_key("sandbox", &k).unwrap();
        assert_ne!(a, row_key("production", &k).unwrap());
        assert_eq!(parse_row_key(&a).unwrap(), ("sandbox".to_string(), k));
    }

    #[test]
    fn first_copy_in_a_request_is_the_candidate() {
        let events = [event("a"), event("b"), event("a")];
        let first = first_occurrences(&events);
        assert_eq!(first, [true, true, false]);
        let claimed: HashSet<String> = ["a".to_string()].into();
        assert_eq!(
            claim_outcomes(&events, &first, &claimed),
            [Outcome::Accepted, Outcome::Duplicate, Outcome::Duplicate]
        );
    }

    #[test]
    fn folding_merges_into_existing_rows_all_or_nothing() {
        let k1 = key("count", 0);
        let k2 = key("sum", 0);
        let contributions = vec![
            vec![(k1.clone(), Accumulator::Count(1))],
            vec![
                (k1.clone(), Accumulator::Count(1)),
                // Overflows the stored sum: the whole event must contribute nothing.
                (k2.clone(), Accumulator::Sum(rust_decimal::Decimal::MAX)),
            ],
            vec![(k1.clone(), Accumulator::Count(1))],
            vec![(k1.clone(), Accumulator::Count(1))],
        ];
        let mut outcomes = vec![
            Outcome::Accepted,
            Outcome::Accepted,
            Outcome::Duplicate,
            Outcome::Accepted,
        ];
        let existing: HashMap<String, Accumulator> = [
            (row_key("sandbox", &k1).unwrap(), Accumulator::Count(10)),
            (
                row_key("sandbox", &k2).unwrap(),
                Accumulator::Sum(rust_decimal::Decimal::ONE),
            ),
        ]
        .into();
        let rows = fold("sandbox", &contributions, &mut outcomes, existing).unwrap();
        assert_eq!(
            rows,
            [(row_key("sandbox", &k1).unwrap(), Accumulator::Count(12))]
        );
        assert!(matches!(&outcomes[1], Outcome::Rejected(m) if m.starts_with("event not counted")));
        assert_eq!(outcomes[3], Outcome::Accepted);
    }

    #[test]
    fn folding_in_any_split_equals_folding_the_whole() {
        // Three requests folded one after another give the same row as one request with all.
        let k = key("latest", 0);
        let accs: Vec<Accumulator> = (0..9)
            .map(|i| Accumulator::Latest {
                timestamp_ms: (i * 7) % 5,
                transaction_id: format!("t{i}"),
                value: rust_decimal::Decimal::from(i),
            })
            .collect();
        let mut stored: HashMap<String, Accumulator> = HashMap::new();
        for part in accs.chunks(3) {
            let contributions: Vec<_> = part.iter().map(|a| vec![(k.clone(), a.clone())]).collect();
            let mut outcomes = vec![Outcome::Accepted; part.len()];
            for (rk, acc) in fold("sandbox", &contributions, &mut outcomes, stored.clone()).unwrap()
            {
                stored.insert(rk, acc);
            }
        }
        let whole = merge_all(&accs).unwrap().unwrap();
        assert_eq!(stored.into_values().collect::<Vec<_>>(), [whole]);
    }
}
