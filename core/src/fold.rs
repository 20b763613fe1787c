//! Folding usage into stored partial aggregates: which copy of a dedupe key is accepted, and what
//! each touched row becomes. The one implementation behind central's native ingest and batch
//! merge (`central/src/store`, both backends) and the edge shard's ingest (`edge/src/shard`).
//!
//! Callers own storage and the row key's encoding (`K`): they claim dedupe keys, load the current
//! rows an operation touches, fold here, and write [`Fold::into_touched`], all in one transaction.
//!
//! Invariants:
//! - Within one operation, the first item of a dedupe key is its candidate; later copies are
//!   duplicates. Across operations, whichever claimed the key first wins ([`accepted_by_claim`]).
//! - Folding is all or nothing per item ([`Fold::add`]): an item whose merge fails changes no row,
//!   and the caller reports it (an ingested event becomes [`Outcome::Rejected`] and its key is
//!   released; a batch partial becomes a dead letter).
//! - Merging uses `Accumulator::merge` only (checked, associative, commutative), so any split of
//!   the items, folded in any number of operations, gives the same rows.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::accumulate::{Accumulator, MergeError};

/// What became of one ingested event (or store item).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Accepted,
    Duplicate,
    /// Valid, but its usage could not be merged (a total would overflow); nothing was recorded
    /// and its dedupe key stays free, so a corrected retry can land.
    Rejected(String),
}

impl Outcome {
    /// The rejection of an event whose merge failed.
    pub fn not_counted(e: MergeError) -> Outcome {
        Outcome::Rejected(format!("event not counted: {e}"))
    }
}

/// `true` for each key that is the first of its value in `keys`.
pub fn first_occurrences<K: Ord>(keys: impl IntoIterator<Item = K>) -> Vec<bool> {
    let mut seen = BTreeSet::new();
    keys.into_iter().map(|k| seen.insert(k)).collect()
}

/// Outcomes once the claim is known: the first item of a key this operation claimed is accepted
/// (pending its merge); every other item is a duplicate.
pub fn accepted_by_claim<K: Ord>(
    keys: impl IntoIterator<Item = K>,
    claimed: impl Fn(&K) -> bool,
) -> Vec<Outcome> {
    let mut seen = BTreeSet::new();
    keys.into_iter()
        .map(|k| {
            if claimed(&k) && seen.insert(k) {
                Outcome::Accepted
            } else {
                Outcome::Duplicate
            }
        })
        .collect()
}

/// The sorted, distinct row keys the accepted items contribute to (the rows to load before
/// folding). `keyed(i)` gives item `i`'s row keys.
pub fn accepted_keys<K: Ord, E>(
    outcomes: &[Outcome],
    mut keyed: impl FnMut(usize) -> Result<Vec<K>, E>,
) -> Result<Vec<K>, E> {
    let mut keys = Vec::new();
    for (i, outcome) in outcomes.iter().enumerate() {
        if *outcome == Outcome::Accepted {
            keys.extend(keyed(i)?);
        }
    }
    keys.sort();
    keys.dedup();
    Ok(keys)
}

/// Rows being folded into: the loaded rows plus those created, each marked when changed.
#[derive(Debug, Clone)]
pub struct Fold<K> {
    rows: BTreeMap<K, (Accumulator, bool)>,
}

impl<K: Ord + Clone> Fold<K> {
    /// Starts from the current stored rows (at least those the items touch).
    pub fn new(existing: impl IntoIterator<Item = (K, Accumulator)>) -> Self {
        Fold {
            rows: existing.into_iter().map(|(k, a)| (k, (a, false))).collect(),
        }
    }

    /// Folds one item's contributions, all or nothing: on error no row changed.
    ///
    /// An item's contributions normally land on distinct rows (one per metric); should two share
    /// a row they are combined first, so checking each against its row stays exact. Checking all
    /// before merging any avoids cloning rows (a UNIQUE set can be large).
    pub fn add(&mut self, contributions: &[(K, &Accumulator)]) -> Result<(), MergeError> {
        let mut keys: Vec<&K> = contributions.iter().map(|(k, _)| k).collect();
        keys.sort();
        if keys.windows(2).any(|w| w[0] == w[1]) {
            let mut combined: BTreeMap<K, Accumulator> = BTreeMap::new();
            for (k, acc) in contributions {
                match combined.get_mut(k) {
                    Some(cur) => cur.merge(acc)?,
                    None => {
                        combined.insert(k.clone(), (*acc).clone());
                    }
                }
            }
            let refs: Vec<(K, &Accumulator)> =
                combined.iter().map(|(k, a)| (k.clone(), a)).collect();
            return self.add(&refs);
        }
        for (k, acc) in contributions {
            if let Some((cur, _)) = self.rows.get(k) {
                cur.check_merge(acc)?;
            }
        }
        for (k, acc) in contributions {
            match self.rows.get_mut(k) {
                // `check_merge` predicts `merge` exactly (a tested law), so this cannot fail.
                Some((cur, changed)) => {
                    cur.merge(acc)?;
                    *changed = true;
                }
                None => {
                    self.rows.insert(k.clone(), ((*acc).clone(), true));
                }
            }
        }
        Ok(())
    }

    /// The rows some item changed or created, in key order (the rows to write).
    pub fn into_touched(self) -> Vec<(K, Accumulator)> {
        self.rows
            .into_iter()
            .filter_map(|(k, (acc, changed))| changed.then_some((k, acc)))
            .collect()
    }
}

/// Folds every accepted item into `existing`, all or nothing per item; an item whose merge fails
/// becomes [`Outcome::not_counted`]. `keyed(i)` gives item `i`'s contributions under their row
/// keys. Returns the touched rows in key order.
pub fn fold_accepted<'a, K: Ord + Clone, E>(
    existing: impl IntoIterator<Item = (K, Accumulator)>,
    outcomes: &mut [Outcome],
    mut keyed: impl FnMut(usize) -> Result<Vec<(K, &'a Accumulator)>, E>,
) -> Result<Vec<(K, Accumulator)>, E> {
    let mut fold = Fold::new(existing);
    for (i, outcome) in outcomes.iter_mut().enumerate() {
        if *outcome != Outcome::Accepted {
            continue;
        }
        if let Err(e) = fold.add(&keyed(i)?) {
            *outcome = Outcome::not_counted(e);
        }
    }
    Ok(fold.into_touched())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accumulate::merge_all;
    use alloc::vec;
    use core::convert::Infallible;
    use proptest::prelude::*;
    use rust_decimal::Decimal;

    #[test]
    fn first_copy_in_an_operation_is_the_candidate() {
        assert_eq!(first_occurrences(["a", "b", "a"]), [true, true, false]);
        let claimed = |k: &&str| *k == "a";
        assert_eq!(
            accepted_by_claim(["a", "b", "a"], claimed),
            [Outcome::Accepted, Outcome::Duplicate, Outcome::Duplicate]
        );
    }

    #[test]
    fn accepted_keys_are_sorted_distinct_and_skip_the_rest() {
        let outcomes = [Outcome::Accepted, Outcome::Duplicate, Outcome::Accepted];
        let keys = [vec![3, 1], vec![9], vec![1, 2]];
        let got = accepted_keys(&outcomes, |i| Ok::<_, Infallible>(keys[i].clone()));
        assert_eq!(got, Ok(vec![1, 2, 3]));
    }

    #[test]
    fn folding_merges_into_existing_rows_all_or_nothing() {
        let one = Accumulator::Count(1);
        let huge = Accumulator::Sum(Decimal::MAX);
        let contributions: Vec<Vec<(&str, &Accumulator)>> = vec![
            vec![("count", &one)],
            // Overflows the stored sum: the whole event must contribute nothing.
            vec![("count", &one), ("sum", &huge)],
            vec![("count", &one)],
            vec![("count", &one)],
        ];
        let mut outcomes = vec![
            Outcome::Accepted,
            Outcome::Accepted,
            Outcome::Duplicate,
            Outcome::Accepted,
        ];
        let existing = [
            ("count", Accumulator::Count(10)),
            ("sum", Accumulator::Sum(Decimal::ONE)),
            ("untouched", Accumulator::Count(5)),
        ];
        let rows = fold_accepted(existing, &mut outcomes, |i| {
            Ok::<_, Infallible>(contributions[i].clone())
        })
        .unwrap();
        assert_eq!(rows, [("count", Accumulator::Count(12))]);
        assert!(matches!(&outcomes[1], Outcome::Rejected(m) if m.starts_with("event not counted")));
        assert_eq!(outcomes[3], Outcome::Accepted);
    }

    #[test]
    fn an_item_hitting_one_row_twice_is_still_all_or_nothing() {
        let six = Accumulator::Sum(Decimal::from(6));
        let eleven = Accumulator::Sum(Decimal::from(11));
        let mut fold = Fold::new([("s", Accumulator::Sum(Decimal::MAX - Decimal::TEN))]);
        // Each alone fits on top of the row; together they do not.
        assert_eq!(
            fold.add(&[("s", &six), ("s", &six)]),
            Err(MergeError::Overflow)
        );
        // The new row must not be created when another contribution of the item fails.
        assert_eq!(
            fold.add(&[("new", &six), ("s", &eleven)]),
            Err(MergeError::Overflow)
        );
        assert!(fold.clone().into_touched().is_empty());
        fold.add(&[("t", &six), ("t", &six), ("s", &six)]).unwrap();
        assert_eq!(
            fold.into_touched(),
            [
                ("s", Accumulator::Sum(Decimal::MAX - Decimal::from(4))),
                ("t", Accumulator::Sum(Decimal::from(12)))
            ]
        );
    }

    #[test]
    fn new_rows_are_written_and_unchanged_loaded_rows_are_not() {
        let c = Accumulator::Count(2);
        let mut fold = Fold::new([("a", Accumulator::Count(1)), ("b", Accumulator::Count(1))]);
        fold.add(&[("a", &c), ("z", &c)]).unwrap();
        assert_eq!(
            fold.into_touched(),
            [("a", Accumulator::Count(3)), ("z", Accumulator::Count(2))]
        );
    }

    fn latest(i: i64) -> Accumulator {
        Accumulator::Latest {
            timestamp_ms: (i * 7) % 5,
            transaction_id: format!("t{i}"),
            value: Decimal::from(i),
        }
    }

    proptest! {
        /// Folding in any number of operations equals folding the whole at once (and merging all).
        #[test]
        fn any_split_of_operations_equals_the_whole(n in 1i64..30, cut in 0usize..30) {
            let accs: Vec<Accumulator> = (0..n).map(latest).collect();
            let cut = cut.min(accs.len());
            let mut stored: Vec<(u8, Accumulator)> = Vec::new();
            for part in [&accs[..cut], &accs[cut..]] {
                let mut outcomes = vec![Outcome::Accepted; part.len()];
                let rows = fold_accepted(stored.clone(), &mut outcomes, |i| {
                    Ok::<_, Infallible>(vec![(0u8, &part[i])])
                })
                .unwrap();
                for (k, acc) in rows {
                    stored.retain(|(s, _)| *s != k);
                    stored.push((k, acc));
                }
            }
            let whole = merge_all(&accs).unwrap().unwrap();
            prop_assert_eq!(stored, vec![(0u8, whole)]);
        }
    }
}
