//! Rolled-up usage: the hourly partials of a UTC day, and of a UTC calendar month, merged into
//! one partial each, so a billing period is read from O(1) rows per group instead of one per
//! hour. Central keeps the three levels (hour, day, month) in step in the transaction that
//! merges an hour; this module says which blocks a reader may use.
//!
//! Rules:
//! - A block of a level covers `[start, end)`: an hour, a UTC day, or a UTC calendar month.
//!   Its row is the merge of the hourly rows inside it, keyed by the block's start (so rating,
//!   which reads a row's `hour_ms` only to place it in time, places the block at its start).
//! - Rating compares a row's time with the instants where it splits a period: the period's ends,
//!   product version changes, rate starts and ends, override starts and ends, and the access
//!   boundaries of balances ([`cuts`]). A block lying wholly between two consecutive such
//!   instants is placed on the same side of every comparison as each hour inside it, and
//!   merging is associative, so pricing the blocks equals pricing the hours to the last digit
//!   (the law `rollup_tests` checks). An instant inside an hour counts from the next hour, as
//!   rating places that hour's row before it.
//! - [`cover`] splits `[from, to)` at the cuts and covers each piece with the fewest blocks:
//!   hours up to the first day boundary, days up to the first month boundary, whole months,
//!   then days and hours to the end.
//!
//! Invariants: pure and total; the cover's blocks are disjoint, lie inside `[from, to)`, and
//! cover every hour of it; no block contains a cut in its interior.

use alloc::vec::Vec;
use chrono::{DateTime, Datelike, Months, NaiveDate};
use serde::{Deserialize, Serialize};

use crate::period::Period;
use crate::pricing::PricingSnapshot;
use crate::time::{hour_floor, DAY_MS, HOUR_MS};

/// A rollup level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Level {
    Hour,
    Day,
    Month,
}

impl Level {
    /// Every level, finest first.
    pub const ALL: [Level; 3] = [Level::Hour, Level::Day, Level::Month];

    /// The stored number of the level (0 hour, 1 day, 2 month).
    pub fn code(self) -> i64 {
        match self {
            Level::Hour => 0,
            Level::Day => 1,
            Level::Month => 2,
        }
    }

    /// The start of the block of this level holding the hour starting at `hour_ms`.
    pub fn block_start(self, hour_ms: i64) -> i64 {
        match self {
            Level::Hour => hour_ms,
            Level::Day => hour_ms.div_euclid(DAY_MS) * DAY_MS,
            Level::Month => month_start(hour_ms).unwrap_or(i64::MIN),
        }
    }

    /// The end of the block of this level starting at `start_ms` (`None` beyond the calendar).
    fn block_end(self, start_ms: i64) -> Option<i64> {
        match self {
            Level::Hour => start_ms.checked_add(HOUR_MS),
            Level::Day => start_ms.checked_add(DAY_MS),
            Level::Month => DateTime::from_timestamp_millis(start_ms)?
                .checked_add_months(Months::new(1))
                .map(|t| t.timestamp_millis()),
        }
    }
}

/// The start of the UTC month holding `ms`.
fn month_start(ms: i64) -> Option<i64> {
    let t = DateTime::from_timestamp_millis(ms)?;
    let first = NaiveDate::from_ymd_opt(t.year(), t.month(), 1)?;
    Some(first.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis())
}

/// Rows of `level` whose block starts in `[from_ms, to_ms)`: whole blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range {
    pub level: Level,
    pub from_ms: i64,
    pub to_ms: i64,
}

/// The smallest hour at or after `ms`.
fn hour_ceil(ms: i64) -> i64 {
    let floor = hour_floor(ms);
    if floor == ms {
        ms
    } else {
        floor.saturating_add(HOUR_MS)
    }
}

/// The instants inside `period` where pricing `snapshot` may split it (module docs), each
/// taken to the next hour, sorted and without repeats.
pub fn cuts(snapshot: &PricingSnapshot, period: Period) -> Vec<i64> {
    let rates = snapshot
        .rates
        .iter()
        .flat_map(|r| [Some(r.starting_at_ms), r.ending_before_ms]);
    let overrides = snapshot
        .contract
        .terms
        .overrides
        .iter()
        .flat_map(|o| [Some(o.starting_at_ms), o.ending_before_ms]);
    let versions = snapshot
        .products
        .iter()
        .flat_map(|p| p.versions.iter().map(|(from, _)| Some(*from)));
    let access = snapshot
        .balances
        .balances
        .iter()
        .flat_map(|b| b.access.iter())
        .flat_map(|a| [Some(a.starting_at_ms), Some(a.ending_before_ms)]);
    let end = snapshot.contract.billed_part(period).end_ms;
    let mut out: Vec<i64> = rates
        .chain(overrides)
        .chain(versions)
        .chain(access)
        .chain([Some(end)])
        .flatten()
        .map(hour_ceil)
        .filter(|&t| period.start_ms < t && t < period.end_ms)
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The ranges of blocks that cover `[from_ms, to_ms)` (hour-aligned) without crossing a cut
/// (module docs; `cuts` in any order), in time order.
pub fn cover(from_ms: i64, to_ms: i64, cuts: &[i64]) -> Vec<Range> {
    let mut out = Vec::new();
    let mut inner: Vec<i64> = cuts
        .iter()
        .copied()
        .filter(|&c| from_ms < c && c < to_ms)
        .collect();
    inner.sort_unstable();
    inner.dedup();
    let starts = core::iter::once(from_ms).chain(inner.iter().copied());
    let ends = inner.iter().copied().chain(core::iter::once(to_ms));
    for (a, b) in starts.zip(ends) {
        cover_piece(a, b, &mut out);
    }
    out
}

/// Covers `[a, b)` greedily: at each instant the coarsest block that starts there and ends by
/// `b`, consecutive blocks of a level merged into one range.
fn cover_piece(a: i64, b: i64, out: &mut Vec<Range>) {
    let mut at = a;
    while at < b {
        let (level, end) = [Level::Month, Level::Day, Level::Hour]
            .into_iter()
            .find_map(|level| {
                let end = level.block_end(at)?;
                (level.block_start(at) == at && end <= b).then_some((level, end))
            })
            .unwrap_or((Level::Hour, b));
        match out.last_mut() {
            Some(r) if r.level == level && r.to_ms == at => r.to_ms = end,
            _ => out.push(Range {
                level,
                from_ms: at,
                to_ms: end,
            }),
        }
        at = end;
    }
}

#[cfg(test)]
#[path = "rollup_tests.rs"]
mod rollup_tests;
