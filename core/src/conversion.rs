//! Custom pricing units (`metronome-api.md` §1.7, §3.9): the conversion of what an invoice still
//! owes in a custom credit type into its fiat credit type, after balances (stage 3) and before
//! totals (stage 4).
//!
//! A rate card's `credit_type_conversions` give, per custom credit type, its
//! `fiat_per_custom_credit` (how many fiat units, e.g. USD cents, one custom unit is worth).
//! Usage priced in a custom unit is drawn down by commits and credits in that same unit first
//! (`balances`: a segment covers only lines of its own credit type); what is left is the custom
//! unit's total on the invoice (charges + prepaid and credit applied lines; postpaid applied lines
//! count in neither, so usage a postpaid commit covers is still converted, and its true-up in the
//! custom unit too).
//!
//! Rules:
//! - One `cpu_conversion` line per custom credit type whose total is not zero, in the order of
//!   the card's conversions (the order they were added), after every other line: `quantity` = that total (custom units), `unit_price` =
//!   `fiat_per_custom_credit` and `total` = their exact product, both in the fiat credit type,
//!   over the invoice's period; its name is the custom credit type's.
//! - Exact or an error: the product is `decimal::mul_exact` (no rounding, ever); a total with no
//!   exact fiat value is [`RatingError::Overflow`].
//! - A custom total with no conversion on the card is [`RatingError::MissingConversion`] (central
//!   refuses rates, overrides and balances that could lead there, so only a corrupt snapshot can).
//! - The fiat total is then the sum of the fiat lines, conversion lines included; the custom
//!   unit's own total stays what the invoice owed in it before conversion.

use alloc::vec::Vec;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::decimal::mul_exact;
use crate::invoice::{InvoiceLine, LineKind};
use crate::money::CreditTypeId;
use crate::period::Period;
use crate::pricing::{totals, PricingSnapshot};
use crate::rating::RatingError;

/// One of a rate card's `credit_type_conversions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditTypeConversion {
    pub custom_credit_type: CreditTypeId,
    /// Fiat units (of the card's fiat credit type) one custom unit is worth.
    pub fiat_per_custom_credit: Decimal,
}

/// The `cpu_conversion` lines of an invoice whose other lines are `lines` (see the module docs).
pub fn conversion_lines(
    snapshot: &PricingSnapshot,
    period: Period,
    lines: &[InvoiceLine],
) -> Result<Vec<InvoiceLine>, RatingError> {
    let fiat = &snapshot.fiat_credit_type;
    let sums = totals(lines)?;
    let converts = |ct: &CreditTypeId| {
        let mut all = snapshot.credit_type_conversions.iter();
        all.any(|c| &c.custom_credit_type == ct)
    };
    let owed_elsewhere = sums.total.amounts().any(|owed| {
        &owed.credit_type != fiat && !owed.value.is_zero() && !converts(&owed.credit_type)
    });
    if owed_elsewhere {
        return Err(RatingError::MissingConversion);
    }
    let mut out = Vec::new();
    for c in &snapshot.credit_type_conversions {
        let owed = sums.total.get(&c.custom_credit_type);
        if &c.custom_credit_type == fiat || owed.is_zero() {
            continue;
        }
        let rate = c.fiat_per_custom_credit;
        let total = mul_exact(owed, rate).ok_or(RatingError::Overflow)?;
        let name = snapshot
            .credit_type(&c.custom_credit_type)
            .map_or(c.custom_credit_type.as_str(), |t| t.name.as_str());
        out.push(InvoiceLine::plain(
            LineKind::CpuConversion,
            "",
            name,
            fiat,
            (owed, rate, total),
            period,
        ));
    }
    Ok(out)
}

#[cfg(test)]
#[path = "conversion_tests.rs"]
mod tests;
