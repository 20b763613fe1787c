//! Rollover of commits and credits at a contract transition (`metronome-api.md` §2.14,
//! `rollover_fraction`): when a contract is renewed, `rollover_fraction` of what each of its
//! commit and credit segments has left at the renewed contract's end becomes a commit or
//! credit of the renewal.
//!
//! Rules:
//! - What rolls over is `fraction × (amount + net)` of the segment at the transition, exact
//!   (no rounding: `0.333333 × 1000 = 333.333`); nothing when the segment has nothing left
//!   (a remainder at or below zero rolls nothing, never a negative amount).
//! - The old segment records `−rolled` and the new one `+rolled` (`LedgerEntryKind::Rollover`);
//!   what the old segment still has after that expires at its end as usual.
//! - The rolled segment is usable from the renewal's start to the renewal's end, or, for an
//!   open-ended renewal, for as long as the original segment was.

use rust_decimal::Decimal;

use crate::decimal::{add_exact, mul_exact};
use crate::rating::RatingError;

/// What a segment holding `amount`, with ledger entries netting `net`, rolls over at `fraction`
/// (between 0 and 1).
pub fn rolled_amount(
    amount: Decimal,
    net: Decimal,
    fraction: Decimal,
) -> Result<Decimal, RatingError> {
    let left = add_exact(amount, net).ok_or(RatingError::Overflow)?;
    if left <= Decimal::ZERO {
        return Ok(Decimal::ZERO);
    }
    mul_exact(left, fraction).ok_or(RatingError::Overflow)
}

/// The window `[start, end)` of a rolled segment: from the renewal's start to its end, or (open
/// ended) for the original segment's length.
pub fn rolled_window(
    segment_start_ms: i64,
    segment_end_ms: i64,
    renewal_start_ms: i64,
    renewal_end_ms: Option<i64>,
) -> Result<(i64, i64), RatingError> {
    let end = match renewal_end_ms {
        Some(end) => end,
        None => segment_end_ms
            .checked_sub(segment_start_ms)
            .and_then(|length| renewal_start_ms.checked_add(length))
            .ok_or(RatingError::Overflow)?,
    };
    Ok((renewal_start_ms, end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// What rolls over plus what then expires is exactly what was left (when something
        /// was), never more than it and never negative, for any amount, ledger and fraction
        /// (six places, as clients send them).
        #[test]
        fn rolled_and_expired_sum_to_what_was_left(
            amount in 0i64..=1_000_000_000_000,
            amount_scale in 0u32..=6,
            drawn in 0i64..=1_000_000_000_000,
            drawn_scale in 0u32..=6,
            millionths in 0i64..=1_000_000,
        ) {
            let amount = Decimal::new(amount, amount_scale);
            let net = -Decimal::new(drawn, drawn_scale);
            let fraction = Decimal::new(millionths, 6);
            let rolled = rolled_amount(amount, net, fraction).unwrap();
            let left = amount + net;
            prop_assert!(rolled >= Decimal::ZERO);
            if left <= Decimal::ZERO {
                prop_assert_eq!(rolled, Decimal::ZERO);
            } else {
                prop_assert!(rolled <= left);
                prop_assert_eq!(rolled, left * fraction);
                let expired = left - rolled;
                prop_assert_eq!(rolled + expired, left);
                prop_assert_eq!(expired, left * (Decimal::ONE - fraction));
            }
        }
    }

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn a_third_of_a_thousand_is_exact() {
        assert_eq!(
            rolled_amount(d("1000"), d("0"), d("0.333333")).unwrap(),
            d("333.333")
        );
        // 1000 − 400.5 drawn = 599.5 left; 599.5 × 0.333333 = 199.8331335.
        assert_eq!(
            rolled_amount(d("1000"), d("-400.5"), d("0.333333")).unwrap(),
            d("199.8331335")
        );
    }

    #[test]
    fn nothing_left_rolls_nothing() {
        assert_eq!(rolled_amount(d("100"), d("-100"), d("1")).unwrap(), d("0"));
        assert_eq!(
            rolled_amount(d("100"), d("-150"), d("0.5")).unwrap(),
            d("0")
        );
        assert_eq!(rolled_amount(d("100"), d("-20"), d("0")).unwrap(), d("0"));
        assert_eq!(rolled_amount(d("100"), d("-20"), d("1")).unwrap(), d("80"));
    }

    #[test]
    fn tiny_and_huge_amounts() {
        assert_eq!(
            rolled_amount(d("0.000000000001"), d("0"), d("0.5")).unwrap(),
            d("0.0000000000005")
        );
        assert_eq!(
            rolled_amount(d("1000000000000000"), d("-1"), d("0.999999")).unwrap(),
            d("999998999999999.000001")
        );
        assert!(rolled_amount(Decimal::MAX, Decimal::MAX, d("1")).is_err());
    }

    #[test]
    fn the_window_runs_to_the_renewal_end_or_for_the_original_length() {
        assert_eq!(rolled_window(0, 10, 20, Some(50)).unwrap(), (20, 50));
        assert_eq!(rolled_window(0, 10, 20, None).unwrap(), (20, 30));
    }
}
