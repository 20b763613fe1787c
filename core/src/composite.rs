//! Composite products (`metronome-api.md` §3.5): a COMPOSITE product with a PERCENTAGE rate
//! charges a fraction of the spend of other products on the same invoice. Pricing
//! (`pricing::price_invoice`) calls [`price_composites`] after the usage lines are priced and
//! before balances are drawn down, so a composite line is itself eligible for drawdown like any
//! charge whose product a balance covers.
//!
//! Rules:
//! - The *base* of a composite is the sum of the totals of the invoice's usage lines whose
//!   product is in `composite_product_ids` or carries **any** of `composite_tags` (a union,
//!   as the two lists are: each id or tag adds products; unlike an override's or a commit's
//!   `applicable_product_tags`, which narrow a scope and need all of their tags). Product tags
//!   are those in effect at the period's end, as everywhere in pricing.
//! - Line totals are taken as rated (the list or override price, before commits and credits):
//!   the base is what the products cost, not what is left to pay after balances.
//! - Only usage lines count: a composite never takes a percentage of another composite's line
//!   (upstream's `include_composite_spend`, default false, is not supported), so there are no
//!   cycles whatever the configuration.
//! - `exclude_free_usage`: lines whose unit price is zero (a free rate, a free tier, a
//!   zero multiplier) are left out of the base. Without it they are in it, and add nothing; the
//!   difference shows only in the line's `quantity`, which is the base.
//! - The composite's rate: its PERCENTAGE rates on the card (other rate types price nothing
//!   here), resolved as a schedule like any rate (`rating::rate_schedule`) and cut by override
//!   boundaries. Each piece of that schedule inside the period gives one line; a base line
//!   counts in the piece that holds its own segment's start.
//! - Overrides: MULTIPLIER overrides scale the percentage (0.1 × 0.5 = 0.05, the same
//!   12-place half-even rule as any multiplied price), entitlement overrides apply as
//!   usual. OVERWRITE and TIERED overrides price units, which a composite has none of: they
//!   never apply to it (central refuses them when they name a composite by `product_id`).
//!   Commit-specific overrides price draws of usage lines and never a composite's.
//! - A line: `LineKind::Usage`, `quantity` = the base, `unit_price` = the effective
//!   fraction, `total` = fraction × base, exact (no rounding; an amount that has no exact
//!   `Decimal` is a [`RatingError::Overflow`]). Only lines in the rate's credit type count in
//!   its base. An entitled composite whose base is zero shows a zero line, like an entitled
//!   usage product without usage; one that is not entitled shows nothing.
//! - Composite configuration (ids, tags, `exclude_free_usage`) is the one in effect at the
//!   period's end, like names and tags.
//!
//! Invariant: every composite line's total is exactly its unit price times its quantity, and
//! its quantity is exactly the sum of the selected base lines' totals (asserted).

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::decimal::{add_exact, mul_exact};
use crate::invoice::{InvoiceLine, LineKind};
use crate::overrides::{self, Adjustment, Subject};
use crate::period::Period;
use crate::pricing::{ContractTerms, PricingSnapshot};
use crate::rating::{at_end, price_range, rate_schedule, Price, Rate, RatingError};

/// What a composite takes its percentage of.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CompositeConfig {
    /// Products whose lines are in the base.
    #[serde(default)]
    pub product_ids: Vec<String>,
    /// Products carrying any of these tags have their lines in the base.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Leave lines at a zero unit price out of the base.
    #[serde(default)]
    pub exclude_free_usage: bool,
}

impl CompositeConfig {
    /// Whether a line of this product (with these tags) is in the base.
    pub fn selects(&self, product_id: &str, product_tags: &[String]) -> bool {
        self.product_ids.iter().any(|p| p == product_id)
            || self.tags.iter().any(|t| product_tags.contains(t))
    }
}

/// A COMPOSITE product as pricing sees it: names, tags and configuration over time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompositeProduct {
    pub product_id: String,
    /// `(effective from, name)`, sorted by time; the first applies from the beginning of time.
    pub names: Vec<(i64, String)>,
    /// `(effective from, tags)`, sorted by time, like `names`.
    #[serde(default)]
    pub tags: Vec<(i64, Vec<String>)>,
    /// `(effective from, configuration)`, sorted by time, like `names`.
    pub configs: Vec<(i64, CompositeConfig)>,
}

impl CompositeProduct {
    pub fn name_at_end(&self, period: Period) -> &str {
        at_end(&self.names, period.end_ms).map_or("", String::as_str)
    }

    pub fn tags_at_end(&self, period: Period) -> &[String] {
        at_end(&self.tags, period.end_ms).map_or(&[], Vec::as_slice)
    }

    pub fn config_at_end(&self, period: Period) -> CompositeConfig {
        at_end(&self.configs, period.end_ms)
            .cloned()
            .unwrap_or_default()
    }
}

/// The composite lines of one period, priced from the period's usage `lines` (see the module
/// docs), in the order of `snapshot.composites`.
pub fn price_composites(
    snapshot: &PricingSnapshot,
    period: Period,
    lines: &[InvoiceLine],
) -> Result<Vec<InvoiceLine>, RatingError> {
    let mut out = Vec::new();
    if snapshot.composites.is_empty() {
        return Ok(out);
    }
    let tags: BTreeMap<&str, &[String]> = snapshot
        .products
        .iter()
        .map(|p| (p.product_id.as_str(), p.tags_at_end(period)))
        .collect();
    let terms = unit_free_terms(&snapshot.contract.terms);
    for composite in &snapshot.composites {
        let config = composite.config_at_end(period);
        let base: Vec<&InvoiceLine> = lines
            .iter()
            .filter(|l| l.kind == LineKind::Usage)
            .filter(|l| {
                let product_tags = tags.get(l.product_id.as_str()).copied().unwrap_or(&[]);
                config.selects(&l.product_id, product_tags)
            })
            .filter(|l| !(config.exclude_free_usage && l.unit_price.value.is_zero()))
            .collect();
        let ctx = Pricing {
            composite,
            period,
            terms: &terms,
            base: &base,
        };
        for (span, rate) in rate_schedule(&snapshot.rates, &composite.product_id, &BTreeMap::new())
        {
            if matches!(rate.price, Price::Percentage(_)) {
                ctx.price_segment(span, rate, &mut out)?;
            }
        }
    }
    Ok(out)
}

/// The contract's overrides that may adjust a percentage: MULTIPLIER and entitlement-only
/// ones that are not commit-specific.
fn unit_free_terms(terms: &ContractTerms) -> ContractTerms {
    ContractTerms {
        overrides: terms
            .overrides
            .iter()
            .filter(|o| o.commit_specific.is_none())
            .filter(|o| matches!(o.adjustment, None | Some(Adjustment::Multiplier(_))))
            .cloned()
            .collect(),
        multiplier_override_prioritization: terms.multiplier_override_prioritization,
        ..ContractTerms::default()
    }
}

struct Pricing<'a> {
    composite: &'a CompositeProduct,
    period: Period,
    terms: &'a ContractTerms,
    base: &'a [&'a InvoiceLine],
}

impl Pricing<'_> {
    /// The lines of one segment of the composite's rate schedule: one per override piece in
    /// which it is entitled.
    fn price_segment(
        &self,
        span: Period,
        rate: &Rate,
        out: &mut Vec<InvoiceLine>,
    ) -> Result<(), RatingError> {
        let sub = Period {
            start_ms: span.start_ms.max(self.period.start_ms),
            end_ms: span.end_ms.min(self.period.end_ms),
        };
        if sub.start_ms >= sub.end_ms {
            return Ok(());
        }
        let no_values = BTreeMap::new();
        let subject = Subject {
            product_id: &self.composite.product_id,
            product_tags: self.composite.tags_at_end(self.period),
            pricing_group_values: &no_values,
            billing_frequency: None,
        };
        let plan = overrides::plan(self.terms, rate, &subject, sub, &[None])?;
        for (piece, rates) in plan {
            let Some(Some(effective)) = rates.first() else {
                continue;
            };
            let Price::Percentage(unit) = effective.price else {
                // Only multipliers reach here, and they keep a percentage a percentage.
                debug_assert!(false, "a composite's effective price is a percentage");
                continue;
            };
            let spend = self.spend(piece, &rate.credit_type)?;
            let zero = (Decimal::ZERO, Decimal::ZERO, Decimal::ZERO);
            let line = InvoiceLine::plain(
                LineKind::Usage,
                &self.composite.product_id,
                self.composite.name_at_end(self.period),
                &rate.credit_type,
                zero,
                piece,
            );
            let from = out.len();
            price_range(&Price::Percentage(unit), line, (Decimal::ZERO, spend), out)?;
            for l in &out[from..] {
                assert!(
                    l.quantity == spend && mul_exact(spend, unit) == Some(l.total.value),
                    "a composite line is its percentage of its base, exactly"
                );
            }
        }
        Ok(())
    }

    /// The base of one piece: the selected lines in this credit type whose segment starts in it.
    fn spend(
        &self,
        piece: Period,
        credit_type: &crate::money::CreditTypeId,
    ) -> Result<Decimal, RatingError> {
        let mut sum = Decimal::ZERO;
        for l in self.base {
            if &l.total.credit_type == credit_type && piece.contains(l.segment.start_ms) {
                sum = add_exact(sum, l.total.value).ok_or(RatingError::Overflow)?;
            }
        }
        Ok(sum)
    }
}

#[cfg(test)]
#[path = "composite_tests.rs"]
mod tests;
