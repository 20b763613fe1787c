//! Billing periods from a contract's `usage_statement_schedule`.
//!
//! A schedule lays a grid of boundaries `anchor + k * step` over the whole time line (every integer
//! `k`, negative too), where the step is one, three or twelve calendar months, or seven days. A
//! contract's periods are the grid's intervals clipped to the contract `[start, end)`: the first
//! period begins at the contract start (partial when the start falls between boundaries) and the
//! last is truncated at the contract end.
//!
//! Invariants:
//! - All times are UTC epoch milliseconds and every period is half-open `[start_ms, end_ms)`.
//! - Periods are non-empty, ordered and contiguous, and every instant of the contract falls in
//!   exactly one of them; `period_containing` and `periods` always agree.
//! - Month boundaries are computed from the anchor each time (`anchor + k*n months`), never by
//!   repeated addition, so a 31st anchor clamps to short months without drifting.
//! - No input panics: arithmetic is checked, and a boundary that cannot be represented ends the
//!   sequence instead. `periods` returns at most [`MAX_PERIODS`].

use alloc::vec::Vec;
use chrono::{DateTime, Datelike, Months, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::time::DAY_MS;

/// The most periods `Schedule::periods` returns: 100 years of monthly statements, far more than
/// any caller needs, yet small enough that an absurd `until_ms` cannot make it run for long.
pub const MAX_PERIODS: usize = 1200;

const WEEK_MS: i64 = 7 * DAY_MS;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Frequency {
    Monthly,
    Quarterly,
    Annual,
    Weekly,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AnchorDay {
    FirstOfMonth,
    ContractStart,
    CustomDate,
}

/// A contract's usage statement schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    pub frequency: Frequency,
    pub day: AnchorDay,
    /// Required for `CustomDate`; ignored otherwise.
    pub billing_anchor_ms: Option<i64>,
}

/// A half-open UTC billing period `[start_ms, end_ms)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Period {
    pub start_ms: i64,
    pub end_ms: i64,
}

impl Period {
    /// True when `t_ms` falls in `[start_ms, end_ms)`.
    pub fn contains(&self, t_ms: i64) -> bool {
        self.start_ms <= t_ms && t_ms < self.end_ms
    }
}

impl Schedule {
    /// The resolved anchor reported as `billing_anchor_date`.
    ///
    /// If the contract start is outside the calendar chrono can represent, `FirstOfMonth` falls
    /// back to the contract start itself: such a contract has no month grid anyway.
    pub fn anchor_ms(&self, contract_start_ms: i64) -> i64 {
        match self.day {
            AnchorDay::FirstOfMonth => first_of_month_anchor(self.frequency, contract_start_ms)
                .unwrap_or(contract_start_ms),
            AnchorDay::ContractStart => contract_start_ms,
            AnchorDay::CustomDate => self.billing_anchor_ms.unwrap_or(contract_start_ms),
        }
    }

    /// The period containing instant `t_ms`, clipped to the contract `[start, end)`; `None` if `t_ms`
    /// is outside the contract (or on a part of the grid that cannot be represented).
    pub fn period_containing(
        &self,
        contract_start_ms: i64,
        contract_end_ms: Option<i64>,
        t_ms: i64,
    ) -> Option<Period> {
        let contract = Contract::new(contract_start_ms, contract_end_ms)?;
        if !contract.contains(t_ms) {
            return None;
        }
        let grid = self.grid(contract_start_ms);
        // `periods` stops at the first period it cannot compute, and the computable periods form
        // one run, so checking the first period is enough to agree with `periods` for every `t`.
        grid.period_at(contract, contract_start_ms)?;
        grid.period_at(contract, t_ms)
    }

    /// Every period of the contract whose start is `< until_ms`, in order (so "periods that have
    /// begun" when `until_ms = now + 1`). At most [`MAX_PERIODS`], the earliest ones.
    pub fn periods(
        &self,
        contract_start_ms: i64,
        contract_end_ms: Option<i64>,
        until_ms: i64,
    ) -> Vec<Period> {
        let mut out = Vec::new();
        let Some(contract) = Contract::new(contract_start_ms, contract_end_ms) else {
            return out;
        };
        let grid = self.grid(contract_start_ms);
        let mut from_ms = contract_start_ms;
        while out.len() < MAX_PERIODS && from_ms < until_ms && contract.contains(from_ms) {
            let Some(period) = grid.period_at(contract, from_ms) else {
                break;
            };
            out.push(period);
            from_ms = period.end_ms;
        }
        out
    }

    /// The most recent `max` periods whose start is `< until_ms`, in order: what a contract of any
    /// age invoices. Walks back from the period holding the last instant before `until_ms` (or the
    /// contract end), so the cost is O(`max`) however old the contract is.
    pub fn recent_periods(
        &self,
        contract_start_ms: i64,
        contract_end_ms: Option<i64>,
        until_ms: i64,
        max: usize,
    ) -> Vec<Period> {
        let mut out = Vec::new();
        let last_ms = contract_end_ms.map_or(until_ms, |end| end.min(until_ms));
        let mut t_ms = last_ms.saturating_sub(1);
        while out.len() < max && t_ms >= contract_start_ms && t_ms < last_ms {
            let Some(p) = self.period_containing(contract_start_ms, contract_end_ms, t_ms) else {
                break;
            };
            out.push(p);
            t_ms = p.start_ms.saturating_sub(1);
        }
        out.reverse();
        out
    }

    /// The whole grid step holding `t_ms`, unclipped by any contract (what a partial period is
    /// prorated against); `None` where the grid cannot be represented.
    pub fn full_period_containing(&self, t_ms: i64) -> Option<Period> {
        // A contract starting over a year earlier holds the whole step around `t` (the longest
        // step is a year).
        let from = t_ms.checked_sub(400 * DAY_MS)?;
        self.period_containing(from, None, t_ms)
    }

    fn grid(&self, contract_start_ms: i64) -> Grid {
        let step = match self.frequency {
            Frequency::Monthly => Step::Months(1),
            Frequency::Quarterly => Step::Months(3),
            Frequency::Annual => Step::Months(12),
            Frequency::Weekly => Step::Week,
        };
        Grid {
            anchor_ms: self.anchor_ms(contract_start_ms),
            step,
        }
    }
}

/// 00:00 UTC on the 1st of the month, quarter or year containing the contract start. Weekly
/// schedules use the month, as Metronome does for `FIRST_OF_MONTH`.
fn first_of_month_anchor(frequency: Frequency, contract_start_ms: i64) -> Option<i64> {
    let start = DateTime::<Utc>::from_timestamp_millis(contract_start_ms)?;
    let month = match frequency {
        Frequency::Monthly | Frequency::Weekly => start.month(),
        Frequency::Quarterly => start.month0() / 3 * 3 + 1,
        Frequency::Annual => 1,
    };
    let midnight = NaiveDate::from_ymd_opt(start.year(), month, 1)?.and_hms_opt(0, 0, 0)?;
    Some(midnight.and_utc().timestamp_millis())
}

/// A non-empty contract window `[start_ms, end_ms)`; `end_ms = None` means open-ended.
#[derive(Clone, Copy)]
struct Contract {
    start_ms: i64,
    end_ms: Option<i64>,
}

impl Contract {
    /// `None` for an empty or inverted window, which has no periods.
    fn new(start_ms: i64, end_ms: Option<i64>) -> Option<Self> {
        match end_ms {
            Some(end) if end <= start_ms => None,
            _ => Some(Contract { start_ms, end_ms }),
        }
    }

    fn contains(&self, t_ms: i64) -> bool {
        self.start_ms <= t_ms && self.end_ms.is_none_or(|end| t_ms < end)
    }
}

#[derive(Clone, Copy)]
enum Step {
    Months(u32),
    Week,
}

/// The boundaries `anchor + k * step` for every integer `k`.
#[derive(Clone, Copy)]
struct Grid {
    anchor_ms: i64,
    step: Step,
}

impl Grid {
    /// Boundary number `k`, or `None` when it falls outside what `i64` milliseconds (weekly) or
    /// chrono's calendar (monthly steps) can represent.
    fn boundary(&self, k: i64) -> Option<i64> {
        match self.step {
            Step::Week => k.checked_mul(WEEK_MS)?.checked_add(self.anchor_ms),
            Step::Months(n) => {
                let anchor = DateTime::<Utc>::from_timestamp_millis(self.anchor_ms)?;
                let months = k.checked_mul(i64::from(n))?;
                // From the anchor each time: chrono clamps the day to the target month's last
                // day, and starting over from the anchor keeps a 31st anchor on the 31st later.
                let moved = if months >= 0 {
                    anchor.checked_add_months(Months::new(u32::try_from(months).ok()?))?
                } else {
                    let back = u32::try_from(months.checked_neg()?).ok()?;
                    anchor.checked_sub_months(Months::new(back))?
                };
                Some(moved.timestamp_millis())
            }
        }
    }

    /// The `k` with `boundary(k) <= t_ms < boundary(k + 1)`.
    fn index_of(&self, t_ms: i64) -> Option<i64> {
        let estimate = match self.step {
            // Exact: floor division in i128 cannot overflow for any pair of i64.
            Step::Week => {
                let k =
                    (i128::from(t_ms) - i128::from(self.anchor_ms)).div_euclid(i128::from(WEEK_MS));
                i64::try_from(k).ok()?
            }
            Step::Months(n) => {
                let anchor = DateTime::<Utc>::from_timestamp_millis(self.anchor_ms)?;
                let t = DateTime::<Utc>::from_timestamp_millis(t_ms)?;
                month_number(t)
                    .checked_sub(month_number(anchor))?
                    .div_euclid(i64::from(n))
            }
        };
        // A month estimate puts `t` in the right step unless `t` is in the boundary's own month
        // but before its day and time; then the period containing `t` is the previous one. The
        // next boundary lies in a later month than `t`, so one step back is all it can take.
        if self.boundary(estimate)? > t_ms {
            estimate.checked_sub(1)
        } else {
            Some(estimate)
        }
    }

    /// The grid interval containing `t_ms`, clipped to the contract. `t_ms` must be inside it.
    fn period_at(&self, contract: Contract, t_ms: i64) -> Option<Period> {
        let k = self.index_of(t_ms)?;
        let lower_ms = self.boundary(k)?;
        let upper_ms = k.checked_add(1).and_then(|next| self.boundary(next));
        // An unrepresentable next boundary is fine if the contract ends first; otherwise the
        // period would have no end, and the sequence stops here.
        let end_ms = match (upper_ms, contract.end_ms) {
            (Some(upper), Some(end)) => upper.min(end),
            (Some(upper), None) => upper,
            (None, Some(end)) => end,
            (None, None) => return None,
        };
        Some(Period {
            start_ms: lower_ms.max(contract.start_ms),
            end_ms,
        })
    }
}

/// Months since year 0, so month differences are plain subtraction.
fn month_number(t: DateTime<Utc>) -> i64 {
    i64::from(t.year()) * 12 + i64::from(t.month0())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::{format_rfc3339_ms, parse_rfc3339_ms};
    use alloc::string::String;
    use proptest::prelude::*;

    fn ms(s: &str) -> i64 {
        parse_rfc3339_ms(s).unwrap()
    }

    fn schedule(frequency: Frequency, day: AnchorDay, anchor: Option<&str>) -> Schedule {
        Schedule {
            frequency,
            day,
            billing_anchor_ms: anchor.map(ms),
        }
    }

    /// Periods as `(start, end)` RFC 3339 strings, so failures read as dates.
    fn show(periods: &[Period]) -> Vec<(String, String)> {
        periods
            .iter()
            .map(|p| (format_rfc3339_ms(p.start_ms), format_rfc3339_ms(p.end_ms)))
            .collect()
    }

    /// Asserts the first periods of an open-ended contract, given as consecutive boundaries.
    fn check(s: Schedule, start: &str, boundaries: &[&str]) {
        let last = ms(boundaries[boundaries.len() - 1]);
        let got = s.periods(ms(start), None, last);
        let want: Vec<(String, String)> = boundaries
            .windows(2)
            .map(|w| (String::from(w[0]), String::from(w[1])))
            .collect();
        assert_eq!(show(&got), want, "{s:?}");
    }

    const START: &str = "2024-09-15T00:00:00Z";

    #[test]
    fn monthly_for_each_anchor() {
        use AnchorDay::*;
        let m = Frequency::Monthly;
        check(
            schedule(m, FirstOfMonth, None),
            START,
            &[
                START,
                "2024-10-01T00:00:00Z",
                "2024-11-01T00:00:00Z",
                "2024-12-01T00:00:00Z",
            ],
        );
        check(
            schedule(m, ContractStart, None),
            START,
            &[START, "2024-10-15T00:00:00Z", "2024-11-15T00:00:00Z"],
        );
        check(
            schedule(m, CustomDate, Some("2024-09-10T00:00:00Z")),
            START,
            &[START, "2024-10-10T00:00:00Z", "2024-11-10T00:00:00Z"],
        );
    }

    #[test]
    fn quarterly_for_each_anchor() {
        use AnchorDay::*;
        let q = Frequency::Quarterly;
        check(
            schedule(q, FirstOfMonth, None),
            START,
            &[
                START,
                "2024-10-01T00:00:00Z",
                "2025-01-01T00:00:00Z",
                "2025-04-01T00:00:00Z",
            ],
        );
        check(
            schedule(q, ContractStart, None),
            START,
            &[START, "2024-12-15T00:00:00Z", "2025-03-15T00:00:00Z"],
        );
        check(
            schedule(q, CustomDate, Some("2024-08-20T00:00:00Z")),
            START,
            &[START, "2024-11-20T00:00:00Z", "2025-02-20T00:00:00Z"],
        );
    }

    #[test]
    fn annual_for_each_anchor() {
        use AnchorDay::*;
        let a = Frequency::Annual;
        check(
            schedule(a, FirstOfMonth, None),
            START,
            &[START, "2025-01-01T00:00:00Z", "2026-01-01T00:00:00Z"],
        );
        check(
            schedule(a, ContractStart, None),
            START,
            &[START, "2025-09-15T00:00:00Z", "2026-09-15T00:00:00Z"],
        );
        check(
            schedule(a, CustomDate, Some("2024-03-01T00:00:00Z")),
            START,
            &[START, "2025-03-01T00:00:00Z", "2026-03-01T00:00:00Z"],
        );
    }

    #[test]
    fn weekly_for_each_anchor() {
        use AnchorDay::*;
        let w = Frequency::Weekly;
        // 2024-09-01 + 2 weeks = 09-15, so the start is on a boundary.
        check(
            schedule(w, FirstOfMonth, None),
            START,
            &[START, "2024-09-22T00:00:00Z", "2024-09-29T00:00:00Z"],
        );
        check(
            schedule(w, FirstOfMonth, None),
            "2024-09-17T12:00:00Z",
            &[
                "2024-09-17T12:00:00Z",
                "2024-09-22T00:00:00Z",
                "2024-09-29T00:00:00Z",
            ],
        );
        check(
            schedule(w, ContractStart, None),
            START,
            &[START, "2024-09-22T00:00:00Z", "2024-09-29T00:00:00Z"],
        );
        check(
            schedule(w, CustomDate, Some("2024-09-10T00:00:00Z")),
            START,
            &[START, "2024-09-17T00:00:00Z", "2024-09-24T00:00:00Z"],
        );
    }

    #[test]
    fn resolved_anchor() {
        use AnchorDay::*;
        use Frequency::*;
        let start = ms("2024-08-15T13:30:00Z");
        let anchor = |f, d, a| format_rfc3339_ms(schedule(f, d, a).anchor_ms(start));
        assert_eq!(anchor(Monthly, FirstOfMonth, None), "2024-08-01T00:00:00Z");
        assert_eq!(anchor(Weekly, FirstOfMonth, None), "2024-08-01T00:00:00Z");
        assert_eq!(
            anchor(Quarterly, FirstOfMonth, None),
            "2024-07-01T00:00:00Z"
        );
        assert_eq!(anchor(Annual, FirstOfMonth, None), "2024-01-01T00:00:00Z");
        assert_eq!(anchor(Monthly, ContractStart, None), "2024-08-15T13:30:00Z");
        let custom = Some("2023-02-28T06:00:00Z");
        assert_eq!(anchor(Monthly, CustomDate, custom), "2023-02-28T06:00:00Z");
        // A custom anchor that was never given falls back to the contract start.
        assert_eq!(anchor(Monthly, CustomDate, None), "2024-08-15T13:30:00Z");
        // Contract start already on a boundary: the quarter of a December start is October.
        let dec = ms("2024-12-01T00:00:00Z");
        let q = schedule(Quarterly, FirstOfMonth, None).anchor_ms(dec);
        assert_eq!(format_rfc3339_ms(q), "2024-10-01T00:00:00Z");
    }

    #[test]
    fn month_end_anchor_clamps_without_drift() {
        let s = schedule(Frequency::Monthly, AnchorDay::ContractStart, None);
        let start = "2023-12-31T08:00:00Z";
        check(
            s,
            start,
            &[
                start,
                "2024-01-31T08:00:00Z",
                "2024-02-29T08:00:00Z",
                "2024-03-31T08:00:00Z",
                "2024-04-30T08:00:00Z",
                "2024-05-31T08:00:00Z",
            ],
        );
    }

    #[test]
    fn leap_day_anchor_in_later_years() {
        let s = schedule(Frequency::Annual, AnchorDay::ContractStart, None);
        let start = "2024-02-29T00:00:00Z";
        check(
            s,
            start,
            &[
                start,
                "2025-02-28T00:00:00Z",
                "2026-02-28T00:00:00Z",
                "2027-02-28T00:00:00Z",
                "2028-02-29T00:00:00Z",
            ],
        );
        // A quarterly 30th anchor passes through February and comes back to the 30th.
        let q = schedule(
            Frequency::Quarterly,
            AnchorDay::CustomDate,
            Some("2023-11-30T00:00:00Z"),
        );
        check(
            q,
            "2023-12-01T00:00:00Z",
            &[
                "2023-12-01T00:00:00Z",
                "2024-02-29T00:00:00Z",
                "2024-05-30T00:00:00Z",
            ],
        );
    }

    #[test]
    fn truncated_at_contract_end() {
        let s = schedule(Frequency::Monthly, AnchorDay::FirstOfMonth, None);
        let got = s.periods(ms(START), Some(ms("2024-11-20T00:00:00Z")), i64::MAX);
        let want = [
            (START, "2024-10-01T00:00:00Z"),
            ("2024-10-01T00:00:00Z", "2024-11-01T00:00:00Z"),
            ("2024-11-01T00:00:00Z", "2024-11-20T00:00:00Z"),
        ];
        let want: Vec<_> = want
            .iter()
            .map(|(a, b)| (String::from(*a), String::from(*b)))
            .collect();
        assert_eq!(show(&got), want);
        // An end on a boundary leaves no empty trailing period.
        let got = s.periods(ms(START), Some(ms("2024-11-01T00:00:00Z")), i64::MAX);
        assert_eq!(got.len(), 2);
        // A contract shorter than one period is one partial period.
        let got = s.periods(ms(START), Some(ms("2024-09-20T00:00:00Z")), i64::MAX);
        assert_eq!(
            show(&got),
            [(String::from(START), String::from("2024-09-20T00:00:00Z"))]
        );
    }

    #[test]
    fn anchor_after_contract_start() {
        // Boundaries before the anchor (negative k) still follow the anchor's cadence.
        let monthly = schedule(
            Frequency::Monthly,
            AnchorDay::CustomDate,
            Some("2025-03-31T00:00:00Z"),
        );
        check(
            monthly,
            "2024-12-15T00:00:00Z",
            &[
                "2024-12-15T00:00:00Z",
                "2024-12-31T00:00:00Z",
                "2025-01-31T00:00:00Z",
                "2025-02-28T00:00:00Z",
                "2025-03-31T00:00:00Z",
            ],
        );
        let weekly = schedule(
            Frequency::Weekly,
            AnchorDay::CustomDate,
            Some("2030-01-01T00:00:00Z"),
        );
        let start = ms(START);
        let first = weekly.periods(start, None, start + 1)[0];
        assert_eq!(first.start_ms, start);
        assert_eq!((ms("2030-01-01T00:00:00Z") - first.end_ms) % WEEK_MS, 0);
        assert!(first.end_ms - start <= WEEK_MS);
    }

    #[test]
    fn until_limits_to_periods_that_have_begun() {
        let s = schedule(Frequency::Monthly, AnchorDay::FirstOfMonth, None);
        let start = ms(START);
        assert!(s.periods(start, None, start).is_empty());
        assert_eq!(s.periods(start, None, start + 1).len(), 1);
        let oct = ms("2024-10-01T00:00:00Z");
        assert_eq!(s.periods(start, None, oct).len(), 1);
        assert_eq!(s.periods(start, None, oct + 1).len(), 2);
    }

    #[test]
    fn period_containing_clips_and_rejects_outside() {
        let s = schedule(Frequency::Monthly, AnchorDay::FirstOfMonth, None);
        let (start, end) = (ms(START), ms("2024-11-20T00:00:00Z"));
        let p = s
            .period_containing(start, Some(end), ms("2024-09-30T23:59:59.999Z"))
            .unwrap();
        assert_eq!(
            p,
            Period {
                start_ms: start,
                end_ms: ms("2024-10-01T00:00:00Z")
            }
        );
        let p = s
            .period_containing(start, Some(end), ms("2024-11-01T00:00:00Z"))
            .unwrap();
        assert_eq!(
            p,
            Period {
                start_ms: ms("2024-11-01T00:00:00Z"),
                end_ms: end
            }
        );
        assert_eq!(s.period_containing(start, Some(end), start - 1), None);
        assert_eq!(s.period_containing(start, Some(end), end), None);
    }

    #[test]
    fn empty_and_inverted_contracts_have_no_periods() {
        let s = schedule(Frequency::Weekly, AnchorDay::ContractStart, None);
        let start = ms(START);
        for end in [start, start - 1, i64::MIN] {
            assert!(s.periods(start, Some(end), i64::MAX).is_empty());
            assert_eq!(s.period_containing(start, Some(end), start), None);
        }
    }

    #[test]
    fn bounded_by_max_periods() {
        let s = schedule(Frequency::Weekly, AnchorDay::ContractStart, None);
        let start = ms(START);
        let got = s.periods(start, None, i64::MAX);
        assert_eq!(got.len(), MAX_PERIODS);
        assert_eq!(got[0].start_ms, start);
        assert_eq!(
            got[MAX_PERIODS - 1].end_ms,
            start + WEEK_MS * MAX_PERIODS as i64
        );
    }

    #[test]
    fn an_old_weekly_contract_keeps_its_recent_periods() {
        // Issue 19 item 4: WEEKLY from 2000-01-03; "now" is 2026-12-01.
        let s = schedule(Frequency::Weekly, AnchorDay::ContractStart, None);
        let start = ms("2000-01-03T00:00:00Z");
        let now = ms("2026-12-01T10:00:00Z");
        let got = s.recent_periods(start, None, now + 1, MAX_PERIODS);
        assert_eq!(got.len(), MAX_PERIODS);
        let last = got[MAX_PERIODS - 1];
        assert!(last.contains(now), "{:?}", show(&[last]));
        assert_eq!(show(&[last])[0].0, "2026-11-30T00:00:00Z");
        for w in got.windows(2) {
            assert_eq!(w[0].end_ms, w[1].start_ms);
        }
        // The earliest, capped sequence never reached today.
        let capped = s.periods(start, None, now + 1);
        assert!(capped[MAX_PERIODS - 1].end_ms < now);
    }

    #[test]
    fn recent_periods_stop_at_the_contract_and_before_it_starts() {
        let s = schedule(Frequency::Monthly, AnchorDay::FirstOfMonth, None);
        let start = ms(START);
        assert!(s.recent_periods(start, None, start, 10).is_empty());
        let end = ms("2024-11-10T00:00:00Z");
        let got = s.recent_periods(start, Some(end), i64::MAX, 10);
        assert_eq!(
            show(&got),
            [
                (String::from(START), String::from("2024-10-01T00:00:00Z")),
                ("2024-10-01T00:00:00Z".into(), "2024-11-01T00:00:00Z".into()),
                ("2024-11-01T00:00:00Z".into(), "2024-11-10T00:00:00Z".into()),
            ]
        );
        assert_eq!(s.recent_periods(start, Some(end), i64::MAX, 1), got[2..]);
    }

    #[test]
    fn extreme_inputs_end_the_sequence_without_panicking() {
        let s = schedule(Frequency::Monthly, AnchorDay::ContractStart, None);
        // Beyond chrono's calendar there is no month grid at all.
        assert!(s.periods(i64::MIN, None, i64::MAX).is_empty());
        assert_eq!(s.period_containing(i64::MIN, None, 0), None);
        // Near the top of i64 the weekly grid runs out; a contract end still closes the period.
        let w = schedule(Frequency::Weekly, AnchorDay::ContractStart, None);
        let start = i64::MAX - WEEK_MS;
        assert_eq!(w.periods(start, None, i64::MAX).len(), 1);
        assert!(w.periods(start + 1, None, i64::MAX).is_empty());
        let end = Some(i64::MAX);
        assert_eq!(
            w.periods(start + 1, end, i64::MAX),
            [Period {
                start_ms: start + 1,
                end_ms: i64::MAX
            }]
        );
    }

    fn frequency() -> impl Strategy<Value = Frequency> {
        prop_oneof![
            Just(Frequency::Monthly),
            Just(Frequency::Quarterly),
            Just(Frequency::Annual),
            Just(Frequency::Weekly),
        ]
    }

    fn anchor_day() -> impl Strategy<Value = AnchorDay> {
        prop_oneof![
            Just(AnchorDay::FirstOfMonth),
            Just(AnchorDay::ContractStart),
            Just(AnchorDay::CustomDate),
        ]
    }

    const YEAR_MS: i64 = 366 * DAY_MS;

    /// Contracts between 1970 and 2100, up to 10 years long, with anchors up to 5 years either
    /// side of the start: at most 520 weekly periods, so `MAX_PERIODS` never cuts them short.
    fn case() -> impl Strategy<Value = (Schedule, i64, Option<i64>)> {
        let anchor = proptest::option::of(-5 * YEAR_MS..5 * YEAR_MS);
        let length = proptest::option::of(1..10 * YEAR_MS);
        (frequency(), anchor_day(), anchor, 0..130 * YEAR_MS, length).prop_map(
            |(frequency, day, anchor_offset, start, length)| {
                let billing_anchor_ms = anchor_offset.map(|off| start + off);
                let end = length.map(|len| start + len);
                (
                    Schedule {
                        frequency,
                        day,
                        billing_anchor_ms,
                    },
                    start,
                    end,
                )
            },
        )
    }

    /// The longest a period of each frequency can be: 31 days, a 92-day quarter, a leap year, a week.
    fn max_len_ms(f: Frequency) -> i64 {
        match f {
            Frequency::Monthly => 31 * DAY_MS,
            Frequency::Quarterly => 92 * DAY_MS,
            Frequency::Annual => 366 * DAY_MS,
            Frequency::Weekly => WEEK_MS,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn periods_tile_the_contract((s, start, end) in case(), span in 1..10 * YEAR_MS) {
            let until = start + span;
            let got = s.periods(start, end, until);
            prop_assert!(!got.is_empty());
            prop_assert!(got.len() < MAX_PERIODS);
            prop_assert_eq!(got[0].start_ms, start);
            for w in got.windows(2) {
                prop_assert_eq!(w[0].end_ms, w[1].start_ms);
            }
            for p in &got {
                prop_assert!(p.start_ms < p.end_ms);
                prop_assert!(p.start_ms < until);
                prop_assert!(p.end_ms - p.start_ms <= max_len_ms(s.frequency));
            }
            // Covered up to `until` or the contract end, whichever comes first.
            let last = got[got.len() - 1].end_ms;
            prop_assert!(last >= until || Some(last) == end);
            prop_assert!(end.is_none_or(|e| last <= e));
        }

        #[test]
        fn each_instant_in_exactly_one_period(
            (s, start, end) in case(),
            offset in 0..10 * YEAR_MS,
        ) {
            let t = start + offset;
            let got = s.periods(start, end, t + 1);
            let holding: Vec<&Period> = got.iter().filter(|p| p.contains(t)).collect();
            let inside = end.is_none_or(|e| t < e);
            prop_assert_eq!(holding.len(), usize::from(inside));
            prop_assert_eq!(s.period_containing(start, end, t), holding.first().copied().copied());
        }

        /// The recent periods are the tail of all periods, and each instant from the first one's
        /// start to the last one's end falls in exactly one of them.
        #[test]
        fn recent_periods_are_the_tail_and_tile(
            (s, start, end) in case(),
            span in 1..10 * YEAR_MS,
            max in 1usize..40,
            probe in 0u32..1000,
        ) {
            let until = start + span;
            let all = s.periods(start, end, until);
            let recent = s.recent_periods(start, end, until, max);
            let tail = &all[all.len().saturating_sub(max)..];
            prop_assert_eq!(&recent[..], tail);
            let (first, last) = (recent[0].start_ms, recent[recent.len() - 1].end_ms);
            let t = first + (last - first) / 1000 * i64::from(probe);
            let holding = recent.iter().filter(|p| p.contains(t)).count();
            prop_assert_eq!(holding, 1);
        }

        #[test]
        fn period_containing_is_on_the_anchor_grid((s, start, end) in case(), offset in 0..10 * YEAR_MS) {
            let t = start + offset;
            let Some(p) = s.period_containing(start, end, t) else {
                prop_assert!(end.is_some_and(|e| t >= e));
                return Ok(());
            };
            // Every boundary that is not the contract's own start or end is a grid boundary,
            // so the period containing it starts exactly there.
            for b in [p.start_ms, p.end_ms] {
                if b != start && Some(b) != end {
                    let grid = s.grid(start);
                    let k = grid.index_of(b).unwrap();
                    prop_assert_eq!(grid.boundary(k), Some(b));
                }
            }
        }

        #[test]
        fn never_panics(
            f in frequency(),
            day in anchor_day(),
            anchor in any::<Option<i64>>(),
            start in any::<i64>(),
            end in any::<Option<i64>>(),
            t in any::<i64>(),
        ) {
            let s = Schedule { frequency: f, day, billing_anchor_ms: anchor };
            let got = s.periods(start, end, t);
            prop_assert!(got.len() <= MAX_PERIODS);
            let _ = s.period_containing(start, end, t);
            let _ = s.anchor_ms(start);
        }
    }
}
