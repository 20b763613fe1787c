//! Recurring schedules (`ScheduleInput.recurring_schedule`, `metronome-api.md` §3.8): a prepaid
//! commit's invoice schedule (and later a scheduled charge's) given as "an amount every
//! `frequency` from `starting_at` until `ending_before`", expanded into the items it stands for.
//!
//! Rules:
//! - Items fall at `starting_at + k × frequency` (k = 0, 1, …) while before `ending_before`;
//!   months are counted from `starting_at` each time, so a 31st clamps to short months without
//!   drifting (the rule of `period`).
//! - `EACH`: every item carries the whole amount (its `unit_price` and `quantity` as given).
//! - `DIVIDED`: the amount is split evenly over the items: each is `amount / n`, exact when that
//!   terminates and otherwise half-even to [`DIVIDED_PLACES`] (12), the last taking the exact
//!   rest, so the items always sum to the amount.
//! - `DIVIDED_ROUNDED`: the same, each item rounded half-even to whole units of the credit type
//!   (a whole cent for USD cents), the last taking the rest.
//! - Divided items have quantity 1 and their amount as unit price.
//!
//! Invariants: pure and total; at most [`MAX_ITEMS`] items (more is an error, never a silent cut);
//! divided items sum exactly to `unit_price × quantity`.

use alloc::vec::Vec;
use chrono::{DateTime, Months};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::decimal::{div_round_half_even, mul_exact, sub_exact};

/// Most items one recurring schedule may expand into (a century of months).
pub const MAX_ITEMS: usize = crate::period::MAX_PERIODS;
/// Decimal places of a `DIVIDED` item whose quotient does not terminate.
pub const DIVIDED_PLACES: u32 = 12;

/// `amount_distribution`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Distribution {
    Divided,
    DividedRounded,
    Each,
}

/// `frequency` of a recurring schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ScheduleFrequency {
    Monthly,
    Quarterly,
    SemiAnnual,
    Annual,
}

impl ScheduleFrequency {
    fn months(self) -> u32 {
        match self {
            ScheduleFrequency::Monthly => 1,
            ScheduleFrequency::Quarterly => 3,
            ScheduleFrequency::SemiAnnual => 6,
            ScheduleFrequency::Annual => 12,
        }
    }
}

/// A `recurring_schedule` as configured (amount-only input: `unit_price = amount`,
/// `quantity = 1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecurringSchedule {
    pub amount_distribution: Distribution,
    pub frequency: ScheduleFrequency,
    pub starting_at_ms: i64,
    pub ending_before_ms: i64,
    pub unit_price: Decimal,
    pub quantity: Decimal,
}

/// One expanded item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduledItem {
    pub timestamp_ms: i64,
    pub unit_price: Decimal,
    pub quantity: Decimal,
    /// `unit_price × quantity`.
    pub amount: Decimal,
}

/// Why a recurring schedule cannot be expanded. Its text names the field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleError {
    /// `ending_before` is not after `starting_at`.
    EmptyWindow,
    /// More than [`MAX_ITEMS`] items.
    TooManyItems,
    /// An instant or amount outside what can be computed exactly.
    Overflow,
}

impl core::fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ScheduleError::EmptyWindow => f.write_str("ending_before: must be after starting_at"),
            ScheduleError::TooManyItems => write!(
                f,
                "ending_before: a recurring schedule may have at most {MAX_ITEMS} items"
            ),
            ScheduleError::Overflow => {
                f.write_str("amount: out of the range Tally can compute exactly")
            }
        }
    }
}

impl RecurringSchedule {
    /// The items, in time order (rules in the module docs).
    pub fn expand(&self) -> Result<Vec<ScheduledItem>, ScheduleError> {
        if self.ending_before_ms <= self.starting_at_ms {
            return Err(ScheduleError::EmptyWindow);
        }
        let times = self.timestamps()?;
        let total = mul_exact(self.unit_price, self.quantity).ok_or(ScheduleError::Overflow)?;
        let places = match self.amount_distribution {
            Distribution::Each => {
                return Ok(times
                    .into_iter()
                    .map(|timestamp_ms| ScheduledItem {
                        timestamp_ms,
                        unit_price: self.unit_price,
                        quantity: self.quantity,
                        amount: total,
                    })
                    .collect())
            }
            Distribution::Divided => DIVIDED_PLACES,
            Distribution::DividedRounded => 0,
        };
        let n = Decimal::from(times.len());
        let each = match places {
            0 => whole_half_even(total, n),
            _ => div_round_half_even(total, n, places),
        }
        .ok_or(ScheduleError::Overflow)?;
        let before_last = Decimal::from(times.len() - 1);
        let rest = mul_exact(each, before_last)
            .and_then(|given| sub_exact(total, given))
            .ok_or(ScheduleError::Overflow)?;
        let last = times.len() - 1;
        Ok(times
            .into_iter()
            .enumerate()
            .map(|(i, timestamp_ms)| {
                let amount = if i == last { rest } else { each };
                ScheduledItem {
                    timestamp_ms,
                    unit_price: amount,
                    quantity: Decimal::ONE,
                    amount,
                }
            })
            .collect())
    }

    /// `starting_at + k × frequency` before `ending_before` (at least the first).
    fn timestamps(&self) -> Result<Vec<i64>, ScheduleError> {
        let start =
            DateTime::from_timestamp_millis(self.starting_at_ms).ok_or(ScheduleError::Overflow)?;
        let step = self.frequency.months();
        let mut out = Vec::new();
        for k in 0u32.. {
            let months = k.checked_mul(step).ok_or(ScheduleError::Overflow)?;
            let at = start
                .checked_add_months(Months::new(months))
                .ok_or(ScheduleError::Overflow)?
                .timestamp_millis();
            if at >= self.ending_before_ms {
                break;
            }
            if out.len() == MAX_ITEMS {
                return Err(ScheduleError::TooManyItems);
            }
            out.push(at);
        }
        Ok(out)
    }
}

/// `a / n` rounded half-even to a whole number, exactly (from the remainder, not from a
/// rounded quotient), for `a ≥ 0` and `n ≥ 1`.
fn whole_half_even(a: Decimal, n: Decimal) -> Option<Decimal> {
    let r = a.checked_rem(n)?;
    let q = a.checked_sub(r)?.checked_div(n)?;
    let twice = r.checked_mul(Decimal::TWO)?;
    let up = twice > n || (twice == n && q % Decimal::TWO == Decimal::ONE);
    Some(if up { q.checked_add(Decimal::ONE)? } else { q }.normalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rating::tests::{d, t};
    use proptest::prelude::*;

    fn schedule(
        distribution: Distribution,
        amount: &str,
        from: &str,
        to: &str,
    ) -> RecurringSchedule {
        RecurringSchedule {
            amount_distribution: distribution,
            frequency: ScheduleFrequency::Monthly,
            starting_at_ms: t(from),
            ending_before_ms: t(to),
            unit_price: d(amount),
            quantity: Decimal::ONE,
        }
    }

    fn amounts(items: &[ScheduledItem]) -> Vec<Decimal> {
        items.iter().map(|i| i.amount).collect()
    }

    #[test]
    fn each_item_carries_the_amount_on_every_month_from_the_start() {
        // 01-31 monthly until 05-01: 01-31, 02-29 (2024 leap, clamped), 03-31, 04-30.
        let s = schedule(
            Distribution::Each,
            "1000",
            "2024-01-31T00:00:00Z",
            "2024-05-01T00:00:00Z",
        );
        let items = s.expand().unwrap();
        let times: Vec<i64> = items.iter().map(|i| i.timestamp_ms).collect();
        assert_eq!(
            times,
            [
                t("2024-01-31T00:00:00Z"),
                t("2024-02-29T00:00:00Z"),
                t("2024-03-31T00:00:00Z"),
                t("2024-04-30T00:00:00Z"),
            ]
        );
        assert_eq!(amounts(&items), [d("1000"); 4]);
        // unit_price × quantity kept as given.
        let s = RecurringSchedule {
            unit_price: d("2.5"),
            quantity: d("4"),
            ..s
        };
        let first = &s.expand().unwrap()[0];
        assert_eq!(
            (first.unit_price, first.quantity, first.amount),
            (d("2.5"), d("4"), d("10"))
        );
    }

    #[test]
    fn divided_splits_exactly_and_the_last_takes_the_rest() {
        // 1000 over 3 months: 333.333333333333 twice, then 333.333333333334.
        let s = schedule(
            Distribution::Divided,
            "1000",
            "2024-01-01T00:00:00Z",
            "2024-04-01T00:00:00Z",
        );
        assert_eq!(
            amounts(&s.expand().unwrap()),
            [
                d("333.333333333333"),
                d("333.333333333333"),
                d("333.333333333334")
            ]
        );
        // Rounded to whole cents: 333, 333, 334.
        let s = RecurringSchedule {
            amount_distribution: Distribution::DividedRounded,
            ..s
        };
        assert_eq!(
            amounts(&s.expand().unwrap()),
            [d("333"), d("333"), d("334")]
        );
        // 1000 over 6: 166.67 → 167 (half-even of 166.666…) five times, 165 last.
        let s = RecurringSchedule {
            ending_before_ms: t("2024-07-01T00:00:00Z"),
            ..s
        };
        assert_eq!(
            amounts(&s.expand().unwrap()),
            [d("167"), d("167"), d("167"), d("167"), d("167"), d("165")]
        );
    }

    #[test]
    fn quarterly_semi_annual_and_annual_steps() {
        let count = |f| {
            RecurringSchedule {
                frequency: f,
                ..schedule(
                    Distribution::Each,
                    "1",
                    "2024-01-01T00:00:00Z",
                    "2026-01-01T00:00:00Z",
                )
            }
            .expand()
            .unwrap()
            .len()
        };
        assert_eq!(count(ScheduleFrequency::Monthly), 24);
        assert_eq!(count(ScheduleFrequency::Quarterly), 8);
        assert_eq!(count(ScheduleFrequency::SemiAnnual), 4);
        assert_eq!(count(ScheduleFrequency::Annual), 2);
    }

    #[test]
    fn bad_windows_and_too_many_items_are_errors() {
        let s = schedule(
            Distribution::Each,
            "1",
            "2024-01-01T00:00:00Z",
            "2024-01-01T00:00:00Z",
        );
        assert_eq!(s.expand(), Err(ScheduleError::EmptyWindow));
        let s = schedule(
            Distribution::Each,
            "1",
            "2024-01-01T00:00:00Z",
            "2124-01-02T00:00:00Z",
        );
        assert_eq!(s.expand(), Err(ScheduleError::TooManyItems));
        // Exactly 1200 months is allowed.
        let s = schedule(
            Distribution::Each,
            "1",
            "2024-01-01T00:00:00Z",
            "2124-01-01T00:00:00Z",
        );
        assert_eq!(s.expand().unwrap().len(), MAX_ITEMS);
    }

    proptest! {
        #[test]
        fn divided_items_sum_to_the_amount(
            cents in 0..10_000_000_000i64,
            places in 0..4u32,
            months in 1..40u32,
            rounded: bool,
        ) {
            let start = t("2024-01-01T00:00:00Z");
            let end = DateTime::from_timestamp_millis(start)
                .unwrap()
                .checked_add_months(Months::new(months))
                .unwrap()
                .timestamp_millis();
            let s = RecurringSchedule {
                amount_distribution: if rounded { Distribution::DividedRounded } else { Distribution::Divided },
                frequency: ScheduleFrequency::Monthly,
                starting_at_ms: start,
                ending_before_ms: end,
                unit_price: Decimal::new(cents, places),
                quantity: Decimal::ONE,
            };
            let items = s.expand().unwrap();
            prop_assert_eq!(items.len(), months as usize);
            let sum: Decimal = items.iter().map(|i| i.amount).sum();
            prop_assert_eq!(sum, s.unit_price);
            for i in &items[..items.len() - 1] {
                prop_assert_eq!(i.amount, items[0].amount);
                if rounded {
                    prop_assert_eq!(i.amount.fract(), Decimal::ZERO);
                }
            }
        }
    }
}
