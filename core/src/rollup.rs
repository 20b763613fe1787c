//! Rolled-up usage: the hourly partials of a UTC day, of aligned spans of 2, 4, 8 and 16 days,
//! and of a UTC calendar month, each merged into one partial, so any hour-aligned window (a
//! billing period of any length and start, a rate or override segment) is read from a few rows
//! per group instead of one per hour. Central keeps the rollups from the hours (`store::usage`);
//! this module says which blocks a reader may use.
//!
//! Rules:
//! - A block of a level covers `[start, end)`: an hour, a UTC day, a span of 2^k days aligned
//!   on the epoch's day count, or a UTC calendar month. Its row is the merge of the hourly rows
//!   inside it, keyed by the block's start (so rating, which reads a row's `hour_ms` only to
//!   place it in time, places the block at its start).
//! - Rating compares a row's time with the instants where it splits a period: the period's ends,
//!   product version changes, rate starts and ends, override starts and ends, and the access
//!   boundaries of balances ([`cuts`]). A block lying wholly between two consecutive such
//!   instants is placed on the same side of every comparison as each hour inside it, and
//!   merging is associative, so pricing the blocks equals pricing the hours to the last digit
//!   (the law `rollup_tests` checks). An instant inside an hour counts from the next hour, as
//!   rating places that hour's row before it.
//! - A day whose hours changed since its rollups were last computed is dirty: its rollup rows
//!   may lag, so no block holding it is read (the reader reads its hours instead).
//! - [`cover`] splits `[from, to)` at the cuts and covers each piece greedily with the coarsest
//!   clean block that starts at each instant: hours up to the first day boundary, then months,
//!   spans and days, then hours to the end. A 30-day period starting at midnight on any day
//!   takes at most ten rows per group (two of each span at most), a calendar month one.
//!
//! Invariants: pure and total; the cover's blocks are disjoint, lie inside `[from, to)`, and
//! cover every hour of it; no block contains a cut in its interior, and no block above the hour
//! holds a dirty day.

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
    /// Two days: the blocks of 2, 4, 8 and 16 days are aligned on the Unix epoch's day count,
    /// so any run of days is covered by at most two blocks of each span.
    Days2,
    Days4,
    Days8,
    Days16,
    /// A UTC calendar month.
    Month,
}

impl Level {
    /// Every level, finest first.
    pub const ALL: [Level; 7] = [
        Level::Hour,
        Level::Day,
        Level::Days2,
        Level::Days4,
        Level::Days8,
        Level::Days16,
        Level::Month,
    ];

    /// The levels above the hour, whose rows roll up whole days.
    pub const ROLLUPS: [Level; 6] = [
        Level::Day,
        Level::Days2,
        Level::Days4,
        Level::Days8,
        Level::Days16,
        Level::Month,
    ];

    /// The stored number of the level (0 hour, 1 day, 2 to 5 the spans of days, 6 month).
    pub fn code(self) -> i64 {
        match self {
            Level::Hour => 0,
            Level::Day => 1,
            Level::Days2 => 2,
            Level::Days4 => 3,
            Level::Days8 => 4,
            Level::Days16 => 5,
            Level::Month => 6,
        }
    }

    /// The days in a block of a span level.
    fn span_days(self) -> Option<i64> {
        match self {
            Level::Day => Some(1),
            Level::Days2 => Some(2),
            Level::Days4 => Some(4),
            Level::Days8 => Some(8),
            Level::Days16 => Some(16),
            Level::Hour | Level::Month => None,
        }
    }

    /// The start of the block of this level holding the hour starting at `hour_ms`.
    pub fn block_start(self, hour_ms: i64) -> i64 {
        match (self, self.span_days()) {
            (_, Some(days)) => {
                let span = days * DAY_MS;
                hour_ms.div_euclid(span) * span
            }
            (Level::Month, None) => month_start(hour_ms).unwrap_or(i64::MIN),
            _ => hour_ms,
        }
    }

    /// The end of the block of this level starting at `start_ms` (`None` beyond the calendar).
    pub fn block_end(self, start_ms: i64) -> Option<i64> {
        match (self, self.span_days()) {
            (_, Some(days)) => start_ms.checked_add(days * DAY_MS),
            (Level::Month, None) => DateTime::from_timestamp_millis(start_ms)?
                .checked_add_months(Months::new(1))
                .map(|t| t.timestamp_millis()),
            _ => start_ms.checked_add(HOUR_MS),
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
/// (module docs; `cuts` in any order), in time order. `dirty_days` are the starts of the UTC
/// days whose rollups may lag their hours (their hours were written since the day was last
/// rolled up): no block above the hour holding one of them is used, so those days are read
/// hour by hour.
pub fn cover(from_ms: i64, to_ms: i64, cuts: &[i64], dirty_days: &[i64]) -> Vec<Range> {
    let mut out = Vec::new();
    let mut inner: Vec<i64> = cuts
        .iter()
        .copied()
        .filter(|&c| from_ms < c && c < to_ms)
        .collect();
    inner.sort_unstable();
    inner.dedup();
    let mut dirty = dirty_days.to_vec();
    dirty.sort_unstable();
    dirty.dedup();
    let starts = core::iter::once(from_ms).chain(inner.iter().copied());
    let ends = inner.iter().copied().chain(core::iter::once(to_ms));
    for (a, b) in starts.zip(ends) {
        cover_piece(a, b, &dirty, &mut out);
    }
    out
}

/// Whether the sorted `dirty` days hold one inside `[start, end)`.
fn holds_dirty(dirty: &[i64], start: i64, end: i64) -> bool {
    let i = dirty.partition_point(|&d| d < start);
    dirty.get(i).is_some_and(|&d| d < end)
}

/// Covers `[a, b)` greedily: at each instant the coarsest clean block that starts there and
/// ends by `b`, consecutive blocks of a level merged into one range. Aligned blocks taken
/// coarsest first cover any run of days with at most two of each span.
fn cover_piece(a: i64, b: i64, dirty: &[i64], out: &mut Vec<Range>) {
    let mut at = a;
    while at < b {
        let (level, end) = Level::ALL
            .into_iter()
            .rev()
            .find_map(|level| {
                let end = level.block_end(at)?;
                let clean = level == Level::Hour || !holds_dirty(dirty, at, end);
                (level.block_start(at) == at && end <= b && clean).then_some((level, end))
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
