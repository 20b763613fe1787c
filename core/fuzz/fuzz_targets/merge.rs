//! Accumulators of every kind, merged whole and in a random split and order. `check_merge`
//! predicts every `merge` (and a refused merge changes nothing); merging the parts in any order
//! gives what merging the whole gives; and the merged value is what the aggregation means, computed
//! exactly (COUNT and SUM as unbounded integers, MAX, UNIQUE and LATEST from their definitions).
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeSet;
use tally_core::accumulate::{merge_all, Accumulator, MergeError};
use tally_core_fuzz::{accumulator_of_kind, Exact};

#[derive(Debug)]
struct Input {
    items: Vec<Accumulator>,
    /// Split points into the item list.
    cuts: Vec<usize>,
    /// Order the parts are merged in (a permutation seed).
    order: Vec<u8>,
}

impl<'a> Arbitrary<'a> for Input {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let kind: u8 = u.arbitrary()?;
        let n = u.int_in_range(1usize..=24)?;
        let items = (0..n)
            .map(|_| {
                // Now and then one of another kind: a stored row that does not match its metric.
                let k = if u.ratio(1u8, 32)? {
                    u.arbitrary()?
                } else {
                    kind
                };
                accumulator_of_kind(u, k)
            })
            .collect::<arbitrary::Result<_>>()?;
        let cuts = (0..u.int_in_range(0u8..=4)?)
            .map(|_| u.int_in_range(0..=n))
            .collect::<arbitrary::Result<_>>()?;
        Ok(Input {
            items,
            cuts,
            order: u.arbitrary()?,
        })
    }
}

fn kind(a: &Accumulator) -> u8 {
    match a {
        Accumulator::Count(_) => 0,
        Accumulator::Sum(_) => 1,
        Accumulator::Max(_) => 2,
        Accumulator::Unique(_) => 3,
        Accumulator::Latest { .. } => 4,
    }
}

/// Merges left to right with `merge`, checking that `check_merge` predicted each step and that a
/// refused merge left the accumulator as it was.
fn fold(items: &[Accumulator]) -> Result<Option<Accumulator>, MergeError> {
    let mut out: Option<Accumulator> = None;
    for item in items {
        match &mut out {
            None => out = Some(item.clone()),
            Some(acc) => {
                let before = acc.clone();
                let predicted = acc.check_merge(item);
                let got = acc.merge(item);
                assert_eq!(predicted, got, "{before:?} + {item:?}");
                if got.is_err() {
                    assert_eq!(acc, &before, "a refused merge changed the accumulator");
                }
                got?;
            }
        }
    }
    Ok(out)
}

/// What merging all of `items` means, when they are all of one kind (not SUM).
fn meaning(items: &[Accumulator]) -> Result<Accumulator, MergeError> {
    Ok(match &items[0] {
        Accumulator::Count(_) => {
            let total: u128 = items
                .iter()
                .map(|a| match a {
                    Accumulator::Count(n) => u128::from(*n),
                    _ => unreachable!(),
                })
                .sum();
            Accumulator::Count(u64::try_from(total).map_err(|_| MergeError::Overflow)?)
        }
        Accumulator::Sum(_) => unreachable!("SUM is checked against `Exact`"),
        Accumulator::Max(_) => Accumulator::Max(
            items
                .iter()
                .map(|a| match a {
                    Accumulator::Max(d) => *d,
                    _ => unreachable!(),
                })
                .max()
                .expect("non-empty"),
        ),
        Accumulator::Unique(_) => Accumulator::Unique(
            items
                .iter()
                .flat_map(|a| match a {
                    Accumulator::Unique(s) => s.iter().cloned(),
                    _ => unreachable!(),
                })
                .collect::<BTreeSet<String>>(),
        ),
        Accumulator::Latest { .. } => items
            .iter()
            .max_by(|a, b| {
                let key = |x: &Accumulator| match x {
                    Accumulator::Latest {
                        timestamp_ms,
                        transaction_id,
                        value,
                    } => (*timestamp_ms, transaction_id.clone(), *value),
                    _ => unreachable!(),
                };
                key(a).cmp(&key(b))
            })
            .expect("non-empty")
            .clone(),
    })
}

fn exact_sum(items: &[Accumulator]) -> Exact {
    items.iter().fold(Exact::zero(), |t, a| match a {
        Accumulator::Sum(d) => t.add(&Exact::of(*d)),
        _ => unreachable!(),
    })
}

fuzz_target!(|input: Input| {
    let items = &input.items;
    let whole = fold(items);
    assert_eq!(merge_all(items), whole);
    let mixed = items.iter().any(|a| kind(a) != kind(&items[0]));
    if mixed {
        // Some pair of different kinds is merged unless an overflow stops the fold first.
        assert!(whole.is_err(), "{items:?}");
    }

    // The parts of a random split, merged in a random order.
    let mut cuts = input.cuts.clone();
    cuts.push(0);
    cuts.push(items.len());
    cuts.sort_unstable();
    let mut parts: Vec<Result<Option<Accumulator>, MergeError>> =
        cuts.windows(2).map(|w| fold(&items[w[0]..w[1]])).collect();
    for (i, r) in input.order.iter().enumerate() {
        let (a, b) = (i % parts.len(), usize::from(*r) % parts.len());
        parts.swap(a, b);
    }
    let split: Result<Vec<Accumulator>, MergeError> =
        parts.into_iter().filter_map(Result::transpose).collect();
    let split = split.and_then(|p| fold(&p));

    if mixed {
        return;
    }
    match kind(&items[0]) {
        // COUNT and SUM: the exact total decides. COUNT's parts are never larger than the total;
        // SUM's intermediate totals can leave the range even when the total fits, so only a fold
        // that succeeded is checked against it.
        0 => {
            let want = meaning(items);
            assert_eq!(whole, want.clone().map(Some));
            assert_eq!(split, want.map(Some));
        }
        1 => {
            let exact = exact_sum(items);
            for got in [&whole, &split].into_iter().flatten() {
                let Some(Accumulator::Sum(total)) = got else {
                    panic!("{got:?}");
                };
                assert_eq!(Exact::of(*total), exact, "{items:?} summed to {total}");
            }
        }
        _ => {
            let want = meaning(items).expect("MAX, UNIQUE and LATEST cannot overflow");
            assert_eq!(whole, Ok(Some(want.clone())));
            assert_eq!(split, Ok(Some(want)));
        }
    }
});
