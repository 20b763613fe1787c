//! The one ingest fold: claim → outcomes → keys → load → fold → write, as a single plan that
//! central's two backends (native ingest and edge batch merge, `central/src/store`) and the edge
//! shard (`edge/src/shard`) all run. Storage supplies only IO, through [`RowIo`] (load and write
//! rows) and [`ClaimIo`] (claim and release dedupe keys), inside one transaction of its own;
//! [`ingest`] and [`merge`] decide everything else.
//!
//! Invariants:
//! - Within one operation, the first item of a dedupe key is its candidate; later copies are
//!   duplicates. Across operations, whichever claimed the key first wins.
//! - Folding is all or nothing per item ([`Fold::add`]): an item whose merge fails changes no row;
//!   an ingested event becomes [`Outcome::Rejected`] and its key is released, a batch partial is
//!   reported back to the caller (a dead letter).
//! - Only rows some item changed or created are written, each once, in key order.
//! - Merging uses `Accumulator::merge` only (checked, associative, commutative), so any split of
//!   the items, folded in any number of operations, gives the same rows.
//!
//! The IO traits return futures so central's database drivers can await; synchronous storage (the
//! edge's `transactionSync`) answers with ready futures and runs a plan with [`run_ready`].

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::future::Future;
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

/// Rows of usage as a storage holds them: the IO half of a fold, run inside the caller's
/// transaction. `Row` is the storage's own spelling of a row key (ordered, so folds are in key
/// order and each row is loaded and written once).
pub trait RowIo {
    type Row: Ord + Clone;
    type Error;
    /// The stored accumulators of those of `rows` (sorted, distinct) that exist.
    fn load(
        &mut self,
        rows: &[Self::Row],
    ) -> impl Future<Output = Result<Vec<(Self::Row, Accumulator)>, Self::Error>>;
    /// Inserts or replaces `rows` (sorted, distinct; every row some item changed or created).
    fn write(
        &mut self,
        rows: Vec<(Self::Row, Accumulator)>,
    ) -> impl Future<Output = Result<(), Self::Error>>;
}

/// Dedupe keys as a storage holds them, claimed in the transaction that writes their usage.
pub trait ClaimIo: RowIo {
    type Claim: Ord + Clone;
    /// Claims each of `keys` (distinct) not claimed yet; one flag per key, in order: `true` when
    /// this call claimed it, `false` when it was already taken.
    fn claim(
        &mut self,
        keys: &[&Self::Claim],
    ) -> impl Future<Output = Result<Vec<bool>, Self::Error>>;
    /// Gives back keys this transaction claimed for items it then could not count.
    fn release(&mut self, keys: &[&Self::Claim]) -> impl Future<Output = Result<(), Self::Error>>;
}

/// One event of an ingest: its dedupe key and its usage, under the storage's row keys.
#[derive(Debug, Clone)]
pub struct Item<'a, C, R> {
    pub claim: C,
    pub contributions: Vec<(R, &'a Accumulator)>,
}

/// Ingests `items` in one transaction of `io`: claims the candidate keys, folds the usage of every
/// accepted item into the stored rows, releases the keys of items whose merge failed, and writes
/// the touched rows. One outcome per item, in order. On an IO error the caller rolls back.
pub async fn ingest<Io: ClaimIo>(
    io: &mut Io,
    items: &[Item<'_, Io::Claim, Io::Row>],
) -> Result<Vec<Outcome>, Io::Error> {
    let mut outcomes = claim_outcomes(io, items).await?;
    let contributions: Vec<&[(Io::Row, &Accumulator)]> =
        items.iter().map(|i| i.contributions.as_slice()).collect();
    let accepted: Vec<bool> = outcomes.iter().map(|o| *o == Outcome::Accepted).collect();
    let failed = fold_rows(io, &contributions, &accepted).await?;
    let mut released = Vec::with_capacity(failed.len());
    for (i, e) in failed {
        outcomes[i] = Outcome::not_counted(e);
        released.push(&items[i].claim);
    }
    if !released.is_empty() {
        io.release(&released).await?;
    }
    Ok(outcomes)
}

/// Merges pre-aggregated partials (an edge batch, already deduplicated by the edge) into the
/// stored rows, each on its own, and writes the touched rows. Returns the partials whose merge
/// failed (by index, in order): they changed nothing, and the caller keeps them as dead letters.
pub async fn merge<Io: RowIo>(
    io: &mut Io,
    partials: &[(Io::Row, &Accumulator)],
) -> Result<Vec<(usize, MergeError)>, Io::Error> {
    let contributions: Vec<&[(Io::Row, &Accumulator)]> =
        partials.iter().map(core::slice::from_ref).collect();
    merge_items(io, &contributions).await
}

/// [`merge`] of items that each land on several rows (a partial and the rollup rows holding its
/// hour, `crate::rollup`), each item all or nothing: the items whose merge failed (by index, in
/// order) changed no row.
pub async fn merge_items<Io: RowIo>(
    io: &mut Io,
    items: &[&[(Io::Row, &Accumulator)]],
) -> Result<Vec<(usize, MergeError)>, Io::Error> {
    fold_rows(io, items, &alloc::vec![true; items.len()]).await
}

/// The claim step: the first item of each key is its candidate; a candidate whose key this call
/// claimed is accepted (pending its merge); every other item is a duplicate.
async fn claim_outcomes<Io: ClaimIo>(
    io: &mut Io,
    items: &[Item<'_, Io::Claim, Io::Row>],
) -> Result<Vec<Outcome>, Io::Error> {
    let first = first_occurrences(items.iter().map(|i| &i.claim));
    let candidates: Vec<&Io::Claim> = items
        .iter()
        .zip(&first)
        .filter_map(|(item, is_first)| is_first.then_some(&item.claim))
        .collect();
    let claimed = io.claim(&candidates).await?;
    debug_assert_eq!(claimed.len(), candidates.len(), "one claim flag per key");
    let mut claimed = claimed.into_iter();
    Ok(first
        .iter()
        .map(|is_first| match *is_first && claimed.next() == Some(true) {
            true => Outcome::Accepted,
            false => Outcome::Duplicate,
        })
        .collect())
}

/// keys → load → fold → write for the items flagged in `fold`; returns those whose merge failed.
async fn fold_rows<Io: RowIo>(
    io: &mut Io,
    items: &[&[(Io::Row, &Accumulator)]],
    fold: &[bool],
) -> Result<Vec<(usize, MergeError)>, Io::Error> {
    let mut keys: Vec<Io::Row> = items
        .iter()
        .zip(fold)
        .filter(|(_, f)| **f)
        .flat_map(|(c, _)| c.iter().map(|(k, _)| k.clone()))
        .collect();
    keys.sort();
    keys.dedup();
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let mut rows = Fold::new(io.load(&keys).await?);
    let mut failed = Vec::new();
    for (i, contributions) in items.iter().enumerate() {
        if fold[i] {
            if let Err(e) = rows.add(contributions) {
                failed.push((i, e));
            }
        }
    }
    let touched = rows.into_touched();
    if !touched.is_empty() {
        io.write(touched).await?;
    }
    Ok(failed)
}

/// Runs a future whose IO is synchronous (every await is already ready) to completion, without an
/// executor: `None` if it was not ready when first polled, which synchronous IO never causes.
pub fn run_ready<F: Future>(future: F) -> Option<F::Output> {
    let mut future = core::pin::pin!(future);
    let mut cx = core::task::Context::from_waker(core::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        core::task::Poll::Ready(out) => Some(out),
        core::task::Poll::Pending => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accumulate::merge_all;
    use alloc::vec;
    use core::convert::Infallible;
    use proptest::prelude::*;
    use rust_decimal::Decimal;

    /// Storage in memory, recording what the plan asked of it.
    #[derive(Default)]
    struct MemoryIo {
        claimed: BTreeSet<&'static str>,
        rows: BTreeMap<u8, Accumulator>,
        loads: Vec<Vec<u8>>,
        writes: Vec<Vec<u8>>,
        released: Vec<&'static str>,
    }

    impl RowIo for MemoryIo {
        type Row = u8;
        type Error = Infallible;
        async fn load(&mut self, rows: &[u8]) -> Result<Vec<(u8, Accumulator)>, Infallible> {
            self.loads.push(rows.to_vec());
            Ok(rows
                .iter()
                .filter_map(|k| self.rows.get(k).map(|a| (*k, a.clone())))
                .collect())
        }
        async fn write(&mut self, rows: Vec<(u8, Accumulator)>) -> Result<(), Infallible> {
            self.writes.push(rows.iter().map(|(k, _)| *k).collect());
            self.rows.extend(rows);
            Ok(())
        }
    }

    impl ClaimIo for MemoryIo {
        type Claim = &'static str;
        async fn claim(&mut self, keys: &[&&'static str]) -> Result<Vec<bool>, Infallible> {
            Ok(keys.iter().map(|k| self.claimed.insert(**k)).collect())
        }
        async fn release(&mut self, keys: &[&&'static str]) -> Result<(), Infallible> {
            for k in keys {
                self.claimed.remove(**k);
                self.released.push(**k);
            }
            Ok(())
        }
    }

    fn item<'a>(
        claim: &'static str,
        contributions: &[(u8, &'a Accumulator)],
    ) -> Item<'a, &'static str, u8> {
        Item {
            claim,
            contributions: contributions.to_vec(),
        }
    }

    fn ingest_now(io: &mut MemoryIo, items: &[Item<'_, &'static str, u8>]) -> Vec<Outcome> {
        let result = run_ready(ingest(io, items)).expect("memory IO is ready");
        result.unwrap_or_else(|never| match never {})
    }

    #[test]
    fn first_copy_in_an_operation_is_the_candidate_and_the_first_claim_wins() {
        assert_eq!(first_occurrences(["a", "b", "a"]), [true, true, false]);
        let one = Accumulator::Count(1);
        let mut io = MemoryIo::default();
        io.claimed.insert("b");
        let got = ingest_now(
            &mut io,
            &[
                item("a", &[(1, &one)]),
                item("b", &[(1, &one)]),
                item("a", &[(1, &one)]),
            ],
        );
        assert_eq!(
            got,
            [Outcome::Accepted, Outcome::Duplicate, Outcome::Duplicate]
        );
        assert_eq!(io.rows, BTreeMap::from([(1, Accumulator::Count(1))]));
    }

    #[test]
    fn only_accepted_rows_are_loaded_sorted_and_distinct() {
        let one = Accumulator::Count(1);
        let mut io = MemoryIo::default();
        io.claimed.insert("dup");
        ingest_now(
            &mut io,
            &[
                item("a", &[(3, &one), (1, &one)]),
                item("dup", &[(9, &one)]),
                item("c", &[(1, &one), (2, &one)]),
            ],
        );
        assert_eq!(io.loads, [vec![1, 2, 3]]);
        assert_eq!(io.writes, [vec![1, 2, 3]]);
        // Nothing accepted: nothing loaded or written.
        let mut io = MemoryIo::default();
        io.claimed.insert("dup");
        ingest_now(&mut io, &[item("dup", &[(9, &one)])]);
        assert!(io.loads.is_empty() && io.writes.is_empty());
    }

    #[test]
    fn an_event_that_cannot_merge_changes_nothing_and_gives_its_key_back() {
        let one = Accumulator::Count(1);
        let huge = Accumulator::Sum(Decimal::MAX);
        let mut io = MemoryIo::default();
        io.rows.insert(0, Accumulator::Count(10));
        io.rows.insert(1, Accumulator::Sum(Decimal::ONE));
        io.rows.insert(2, Accumulator::Count(5));
        let got = ingest_now(
            &mut io,
            &[
                item("a", &[(0, &one)]),
                // Overflows the stored sum: the whole event must contribute nothing.
                item("b", &[(0, &one), (1, &huge)]),
                item("a", &[(0, &one)]),
                item("d", &[(0, &one)]),
            ],
        );
        assert!(matches!(&got[1], Outcome::Rejected(m) if m.starts_with("event not counted")));
        assert_eq!(
            (&got[2], &got[3]),
            (&Outcome::Duplicate, &Outcome::Accepted)
        );
        assert_eq!(io.released, ["b"]);
        assert!(!io.claimed.contains("b"));
        assert_eq!(io.writes, [vec![0]]);
        assert_eq!(io.rows[&0], Accumulator::Count(12));
        assert_eq!(io.rows[&1], Accumulator::Sum(Decimal::ONE));
    }

    #[test]
    fn merge_reports_the_partials_it_could_not_fold_and_applies_the_rest() {
        let two = Accumulator::Sum(Decimal::TWO);
        let huge = Accumulator::Sum(Decimal::MAX);
        let mut io = MemoryIo::default();
        io.rows.insert(0, Accumulator::Sum(Decimal::ONE));
        let failed = run_ready(merge(&mut io, &[(0, &two), (0, &huge), (4, &two)]))
            .expect("ready")
            .unwrap_or_else(|never| match never {});
        assert_eq!(failed, [(1, MergeError::Overflow)]);
        assert_eq!(io.rows[&0], Accumulator::Sum(Decimal::from(3)));
        assert_eq!(io.rows[&4], Accumulator::Sum(Decimal::TWO));
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
            let mut io = MemoryIo::default();
            for part in [&accs[..cut], &accs[cut..]] {
                let partials: Vec<(u8, &Accumulator)> = part.iter().map(|a| (0u8, a)).collect();
                let failed = run_ready(merge(&mut io, &partials)).expect("ready");
                prop_assert_eq!(failed, Ok(Vec::new()));
            }
            let whole = merge_all(&accs).unwrap().unwrap();
            prop_assert_eq!(io.rows, BTreeMap::from([(0u8, whole)]));
        }
    }
}
