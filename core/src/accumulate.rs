//! Mergeable accumulators over UTC hour buckets.
//!
//! Every accumulator forms a commutative monoid under [`Accumulator::merge`], so partial aggregates
//! can be combined in any order and any split and still give the totals of the whole stream. That
//! is what lets the edge pre-aggregate, central merge batches, and rating re-group by any key.

use alloc::collections::BTreeSet;
use alloc::string::String;
use alloc::vec::Vec;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::decimal::add_exact;

/// A metric's group values at its grain (aligned with `MetricDef::grain`); `None` = property absent.
pub type GroupValues = Vec<Option<String>>;

/// Where a partial aggregate belongs: customer reference as sent, metric, grain values, UTC hour.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PartialKey {
    pub customer_ref: String,
    pub metric_id: String,
    pub groups: GroupValues,
    pub hour_ms: i64,
}

/// The running aggregate of one metric over some set of events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Accumulator {
    Count(u64),
    Sum(Decimal),
    Max(Decimal),
    /// The distinct values seen.
    Unique(BTreeSet<String>),
    /// The value with the greatest timestamp; ties go to the greatest transaction id, so the
    /// winner does not depend on arrival order.
    Latest {
        timestamp_ms: i64,
        transaction_id: String,
        value: Decimal,
    },
}

/// Why two accumulators could not be merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergeError {
    /// They aggregate differently (a stored row does not match its metric).
    KindMismatch,
    /// The exact total no longer fits a `Decimal` (about 7.9e28, or more than 96 bits of
    /// mantissa at the operands' scale).
    Overflow,
}

impl core::fmt::Display for MergeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            MergeError::KindMismatch => f.write_str("accumulators of different kinds"),
            MergeError::Overflow => f.write_str("usage total overflows the decimal range"),
        }
    }
}

impl Accumulator {
    pub fn unique_of(value: &str) -> Self {
        let mut set = BTreeSet::new();
        set.insert(String::from(value));
        Accumulator::Unique(set)
    }

    /// Whether [`Accumulator::merge`] of `other` would succeed, without changing anything.
    pub fn check_merge(&self, other: &Accumulator) -> Result<(), MergeError> {
        match (self, other) {
            (Accumulator::Count(a), Accumulator::Count(b)) => {
                a.checked_add(*b).map(|_| ()).ok_or(MergeError::Overflow)
            }
            (Accumulator::Sum(a), Accumulator::Sum(b)) => {
                add_exact(*a, *b).map(|_| ()).ok_or(MergeError::Overflow)
            }
            (Accumulator::Max(_), Accumulator::Max(_))
            | (Accumulator::Unique(_), Accumulator::Unique(_))
            | (Accumulator::Latest { .. }, Accumulator::Latest { .. }) => Ok(()),
            _ => Err(MergeError::KindMismatch),
        }
    }

    /// Folds `other` into `self`. On error `self` is unchanged.
    pub fn merge(&mut self, other: &Accumulator) -> Result<(), MergeError> {
        match (self, other) {
            (Accumulator::Count(a), Accumulator::Count(b)) => {
                *a = a.checked_add(*b).ok_or(MergeError::Overflow)?;
            }
            (Accumulator::Sum(a), Accumulator::Sum(b)) => {
                // Exact or refused: `checked_add` would round a total past 96 bits of mantissa.
                *a = add_exact(*a, *b).ok_or(MergeError::Overflow)?;
            }
            (Accumulator::Max(a), Accumulator::Max(b)) => {
                if *b > *a {
                    *a = *b;
                }
            }
            (Accumulator::Unique(a), Accumulator::Unique(b)) => {
                a.extend(b.iter().cloned());
            }
            (
                Accumulator::Latest {
                    timestamp_ms,
                    transaction_id,
                    value,
                },
                Accumulator::Latest {
                    timestamp_ms: t2,
                    transaction_id: id2,
                    value: v2,
                },
            ) => {
                // The value breaks the last tie only so merge stays a true monoid; dedupe means
                // one transaction id never carries two values in practice.
                if (*t2, id2.as_str(), *v2) > (*timestamp_ms, transaction_id.as_str(), *value) {
                    *timestamp_ms = *t2;
                    transaction_id.clone_from(id2);
                    *value = *v2;
                }
            }
            _ => return Err(MergeError::KindMismatch),
        }
        Ok(())
    }

    /// What, merged into `old`, gives `new`, where `new` is `old` with more merged into it (a
    /// stored row only ever grows): the difference for COUNT and SUM, `new` itself for MAX,
    /// UNIQUE and LATEST, whose merge is idempotent (merging what is already in changes
    /// nothing). `None` when nothing changed. So a rollup holding `old` is brought to hold
    /// `new` by merging the growth, without reading the rest of its block.
    ///
    /// Errors: `KindMismatch` when the kinds differ or `new` is not a growth of `old` (a
    /// smaller count or sum, a smaller maximum, a lost unique value, an earlier latest).
    pub fn growth(
        old: Option<&Accumulator>,
        new: &Accumulator,
    ) -> Result<Option<Accumulator>, MergeError> {
        let Some(old) = old else {
            return Ok(Some(new.clone()));
        };
        if old == new {
            return Ok(None);
        }
        let grown = match (old, new) {
            (Accumulator::Count(a), Accumulator::Count(b)) => {
                Accumulator::Count(b.checked_sub(*a).ok_or(MergeError::KindMismatch)?)
            }
            (Accumulator::Sum(a), Accumulator::Sum(b)) => {
                Accumulator::Sum(b.checked_sub(*a).ok_or(MergeError::Overflow)?)
            }
            (Accumulator::Max(_), Accumulator::Max(_))
            | (Accumulator::Unique(_), Accumulator::Unique(_))
            | (Accumulator::Latest { .. }, Accumulator::Latest { .. }) => new.clone(),
            _ => return Err(MergeError::KindMismatch),
        };
        // Whatever the kind, merging the growth must land exactly on `new`.
        let mut check = old.clone();
        check.merge(&grown)?;
        if check == *new {
            Ok(Some(grown))
        } else {
            Err(MergeError::KindMismatch)
        }
    }

    /// The metric quantity this accumulator represents on its own.
    pub fn quantity(&self) -> Decimal {
        match self {
            Accumulator::Count(n) => Decimal::from(*n),
            Accumulator::Sum(s) => *s,
            Accumulator::Max(m) => *m,
            Accumulator::Unique(set) => Decimal::from(set.len() as u64),
            Accumulator::Latest { value, .. } => *value,
        }
    }
}

/// Merges a sequence of accumulators; `None` for an empty sequence.
pub fn merge_all<'a>(
    items: impl IntoIterator<Item = &'a Accumulator>,
) -> Result<Option<Accumulator>, MergeError> {
    let mut out: Option<Accumulator> = None;
    for item in items {
        match &mut out {
            None => out = Some(item.clone()),
            Some(acc) => acc.merge(item)?,
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use proptest::prelude::*;

    fn dec() -> impl Strategy<Value = Decimal> {
        (-1_000_000_000i64..1_000_000_000, 0u32..6).prop_map(|(m, s)| Decimal::new(m, s))
    }

    fn acc_of(kind: u8) -> BoxedStrategy<Accumulator> {
        match kind {
            0 => (0u64..1000).prop_map(Accumulator::Count).boxed(),
            1 => dec().prop_map(Accumulator::Sum).boxed(),
            2 => dec().prop_map(Accumulator::Max).boxed(),
            3 => prop::collection::btree_set("[a-e]", 0..4)
                .prop_map(Accumulator::Unique)
                .boxed(),
            _ => (0i64..50, "[a-c]", dec())
                .prop_map(|(t, id, v)| Accumulator::Latest {
                    timestamp_ms: t,
                    transaction_id: id,
                    value: v,
                })
                .boxed(),
        }
    }

    fn stream() -> impl Strategy<Value = Vec<Accumulator>> {
        (0u8..5).prop_flat_map(|k| prop::collection::vec(acc_of(k), 1..40))
    }

    proptest! {
        /// Merge in any split = merge of the whole: split the stream at two points, merge each part,
        /// then merge the parts in reverse order.
        #[test]
        fn any_split_equals_whole(items in stream(), a in 0usize..40, b in 0usize..40) {
            let whole = merge_all(&items).unwrap().unwrap();
            let (i, j) = (a.min(b).min(items.len()), a.max(b).min(items.len()));
            let parts = [&items[..i], &items[i..j], &items[j..]];
            let mut merged: Vec<Accumulator> = parts
                .iter()
                .filter_map(|p| merge_all(p.iter()).unwrap())
                .collect();
            merged.reverse();
            prop_assert_eq!(merge_all(&merged).unwrap().unwrap(), whole);
        }

        /// Merging the same partial twice is not idempotent for COUNT/SUM: replay protection must
        /// come from dedupe, never from the accumulator. (Documented as a law so nobody relies on it.)
        #[test]
        fn count_doubles_on_replay(n in 1u64..100) {
            let mut a = Accumulator::Count(n);
            a.merge(&Accumulator::Count(n)).unwrap();
            prop_assert_eq!(a, Accumulator::Count(2 * n));
        }
    }

    proptest! {
        /// The rollup law of `growth`: a block holding `rest` and a day's old total, given the
        /// growth from the old total to the new one, holds exactly `rest` and the new total —
        /// what merging the block's parts afresh gives. Split a stream into the block's other
        /// days, the day as last rolled up, and what came in since.
        #[test]
        fn merging_the_growth_equals_merging_afresh(
            items in stream(), a in 0usize..40, b in 0usize..40,
        ) {
            let (i, j) = (a.min(b).min(items.len()), a.max(b).min(items.len()));
            let (rest, old, since) = (&items[..i], &items[i..j], &items[j..]);
            let old_day = merge_all(old).unwrap();
            let new_day = merge_all(old.iter().chain(since)).unwrap();
            let Some(new_day) = new_day else { return Ok(()) };
            let grown = Accumulator::growth(old_day.as_ref(), &new_day).unwrap();
            let before = merge_all(rest.iter().chain(old)).unwrap();
            let afresh = merge_all(items.iter()).unwrap();
            let updated = match (before, grown) {
                (Some(mut block), Some(g)) => { block.merge(&g).unwrap(); Some(block) }
                (None, g) => g,
                (block, None) => block,
            };
            prop_assert_eq!(updated, afresh);
            // Nothing since: no growth.
            if since.is_empty() {
                prop_assert_eq!(Accumulator::growth(old_day.as_ref(), &new_day).unwrap(), None);
            }
        }
    }

    #[test]
    fn growth_refuses_what_did_not_grow_from_the_old_total() {
        let growth = |a: Accumulator, b: Accumulator| Accumulator::growth(Some(&a), &b);
        assert_eq!(
            growth(Accumulator::Count(5), Accumulator::Count(3)),
            Err(MergeError::KindMismatch)
        );
        assert_eq!(
            growth(
                Accumulator::Max(Decimal::TWO),
                Accumulator::Max(Decimal::ONE)
            ),
            Err(MergeError::KindMismatch)
        );
        assert_eq!(
            growth(Accumulator::unique_of("a"), Accumulator::unique_of("b")),
            Err(MergeError::KindMismatch)
        );
        assert_eq!(
            growth(Accumulator::Count(1), Accumulator::Sum(Decimal::ONE)),
            Err(MergeError::KindMismatch)
        );
        assert_eq!(
            growth(
                Accumulator::Sum(Decimal::new(15, 1)),
                Accumulator::Sum(Decimal::new(250, 2))
            ),
            Ok(Some(Accumulator::Sum(Decimal::new(100, 2))))
        );
    }

    proptest! {
        /// `check_merge` predicts exactly whether `merge` succeeds.
        #[test]
        fn check_merge_predicts_merge(a in acc_of(1), b in acc_of(1)) {
            let mut x = a.clone();
            prop_assert_eq!(a.check_merge(&b), x.merge(&b));
        }
    }

    #[test]
    fn check_merge_refuses_what_merge_refuses() {
        let max = Accumulator::Sum(Decimal::MAX);
        assert_eq!(
            max.check_merge(&Accumulator::Sum(Decimal::ONE)),
            Err(MergeError::Overflow)
        );
        assert_eq!(
            Accumulator::Count(1).check_merge(&Accumulator::unique_of("a")),
            Err(MergeError::KindMismatch)
        );
        assert_eq!(
            Accumulator::Count(1).check_merge(&Accumulator::Count(2)),
            Ok(())
        );
    }

    #[test]
    fn latest_tie_breaks_on_transaction_id() {
        let a = Accumulator::Latest {
            timestamp_ms: 5,
            transaction_id: "a".into(),
            value: Decimal::ONE,
        };
        let b = Accumulator::Latest {
            timestamp_ms: 5,
            transaction_id: "b".into(),
            value: Decimal::TWO,
        };
        let mut x = a.clone();
        x.merge(&b).unwrap();
        let mut y = b.clone();
        y.merge(&a).unwrap();
        assert_eq!(x, y);
        assert_eq!(x.quantity(), Decimal::TWO);
    }

    #[test]
    fn overflow_is_an_error_and_leaves_self_unchanged() {
        let mut a = Accumulator::Sum(Decimal::MAX);
        assert_eq!(
            a.merge(&Accumulator::Sum(Decimal::ONE)),
            Err(MergeError::Overflow)
        );
        assert_eq!(a, Accumulator::Sum(Decimal::MAX));
        assert_eq!(
            Accumulator::Count(1).merge(&Accumulator::Sum(Decimal::ONE)),
            Err(MergeError::KindMismatch)
        );
    }

    /// Found by fuzzing (`merge`): the total was silently rounded to a whole number, so merging in
    /// another order gave another total.
    #[test]
    fn sum_that_needs_rounding_is_an_overflow() {
        let minus = Accumulator::Sum(Decimal::new(-9472, 2));
        let max = Accumulator::Sum(Decimal::MAX);
        assert_eq!(minus.check_merge(&max), Err(MergeError::Overflow));
        let mut a = minus.clone();
        assert_eq!(a.merge(&max), Err(MergeError::Overflow));
        assert_eq!(a, minus);
        // Whole cents still fit next to a large integer part.
        let mut b = Accumulator::Sum(Decimal::new(-9472, 2));
        b.merge(&Accumulator::Sum(Decimal::from(10_i64.pow(18))))
            .unwrap();
        assert_eq!(
            b.quantity(),
            Decimal::from_i128_with_scale(99_999_999_999_999_990_528, 2)
        );
    }

    #[test]
    fn unique_counts_distinct() {
        let all = merge_all(&vec![
            Accumulator::unique_of("a"),
            Accumulator::unique_of("b"),
            Accumulator::unique_of("a"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(all.quantity(), Decimal::TWO);
    }
}
