//! Rating: the "resolve rates" and "price quantities" stages of pricing: one billing period of
//! stored usage → priced usage lines. `pricing::price_invoice` is the entry point that runs these
//! stages and then balances and totals.
//!
//! [`rate_schedule`] resolves the effective rate at each instant (the rate card's schedule now;
//! contract overrides will be layered on it) and [`price_usage`] prices the quantities. Both are
//! pure functions of their inputs, so central, the browser preview and the tests compute the same
//! lines to the last digit.
//!
//! Rules (see `metronome-api.md` §3):
//! - A product's lines are split into *segments*: maximal sub-intervals of the period in which the
//!   product's rating state (metric, group keys, conversion, rounding) and the rate for a pricing
//!   combination are constant. Each segment is aggregated and priced on its own.
//! - Rates of one product and pricing group values form a schedule: sorted by `starting_at`, each
//!   ends at its own `ending_before` or where the next one starts, whichever is first.
//! - No rate, or a rate that is not `entitled` → the usage is not billed (no line).
//! - Quantity = aggregate over the segment (LATEST: last value minus the last value before the
//!   segment), then conversion, then rounding (only if configured), then pricing.
//! - FLAT: `quantity × price`. TIERED: graduated, one line per tier reached.
//! - Line totals are exact; nothing is rounded that no configuration asks to round (a division
//!   conversion gives 28 decimal places). An amount that has no exact `Decimal` (out of range, or
//!   needing more than 28 places or 96 bits of mantissa) is a [`RatingError::Overflow`], never
//!   silently rounded.
//! - Every line is a `LineKind::Usage` line whose amounts are in its rate's credit type.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::String;
use alloc::vec::Vec;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

use crate::accumulate::{Accumulator, GroupValues, MergeError};
use crate::decimal::{add_exact, mul_exact, sub_exact};
use crate::invoice::{InvoiceLine, LineKind, TierRef};
use crate::metric::{Aggregation, MetricDef};
use crate::money::{Amount, CreditTypeId};
use crate::period::Period;

/// One tier of a graduated price; the last tier has no size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tier {
    pub price: Decimal,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Decimal>,
}

/// How a quantity is priced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Price {
    Flat(Decimal),
    Tiered(Vec<Tier>),
}

/// Why a price was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PriceError {
    NoTiers,
    NonPositiveTierSize,
    UnboundedTierNotLast,
    LastTierBounded,
}

impl core::fmt::Display for PriceError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            PriceError::NoTiers => "tiers must contain at least one tier",
            PriceError::NonPositiveTierSize => "tier size must be greater than zero",
            PriceError::UnboundedTierNotLast => "only the last tier may omit size",
            PriceError::LastTierBounded => "the last tier must not have a size",
        })
    }
}

impl Price {
    pub fn validate(&self) -> Result<(), PriceError> {
        let Price::Tiered(tiers) = self else {
            return Ok(());
        };
        let Some((last, rest)) = tiers.split_last() else {
            return Err(PriceError::NoTiers);
        };
        for t in rest {
            match t.size {
                None => return Err(PriceError::UnboundedTierNotLast),
                Some(s) if s <= Decimal::ZERO => return Err(PriceError::NonPositiveTierSize),
                Some(_) => {}
            }
        }
        if last.size.is_some() {
            return Err(PriceError::LastTierBounded);
        }
        Ok(())
    }
}

/// A rate-card rate, as rating sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rate {
    pub product_id: String,
    pub pricing_group_values: BTreeMap<String, String>,
    pub starting_at_ms: i64,
    pub ending_before_ms: Option<i64>,
    pub entitled: bool,
    pub price: Price,
    /// The pricing unit of `price`.
    pub credit_type: CreditTypeId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConversionOperation {
    Multiply,
    Divide,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuantityConversion {
    pub conversion_factor: Decimal,
    pub operation: ConversionOperation,
    /// A label shown to people (e.g. "bytes to GB"); never used by rating.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RoundingMethod {
    RoundUp,
    RoundDown,
    RoundHalfUp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuantityRounding {
    pub decimal_places: u32,
    pub rounding_method: RoundingMethod,
}

/// The parts of a usage product that change how it is rated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductState {
    pub metric_id: String,
    pub pricing_group_key: Vec<String>,
    pub presentation_group_key: Vec<String>,
    pub quantity_conversion: Option<QuantityConversion>,
    pub quantity_rounding: Option<QuantityRounding>,
}

/// A usage product with its time-versioned rating state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RatedProduct {
    pub product_id: String,
    /// Shown on invoice lines (the product's current name).
    pub name: String,
    /// `(effective from, state)`, sorted by time; the first applies from the beginning of time.
    pub versions: Vec<(i64, ProductState)>,
}

/// One stored hourly partial, already resolved to the invoice's customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRow {
    pub metric_id: String,
    pub groups: GroupValues,
    pub hour_ms: i64,
    pub acc: Accumulator,
}

/// Everything rating needs for one period.
pub struct RatingInput<'a> {
    pub period: Period,
    /// Usage products in rate-card order (the invoice's line order).
    pub products: &'a [RatedProduct],
    pub metrics: &'a BTreeMap<String, MetricDef>,
    /// The rate card's rates in the order they were added.
    pub rates: &'a [Rate],
    /// Hourly usage of the period; for LATEST metrics also earlier hours (for the baseline).
    pub usage: &'a [UsageRow],
}

/// Why a period could not be rated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RatingError {
    /// An amount left the exact decimal range (about 7.9e28, or it would need rounding).
    Overflow,
    /// Stored usage does not match its metric's aggregation.
    CorruptUsage,
    /// Amounts of different credit types were to be combined.
    MixedCreditTypes,
}

impl core::fmt::Display for RatingError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            RatingError::Overflow => "an invoice amount overflows the exact decimal range",
            RatingError::CorruptUsage => "stored usage does not match its billable metric",
            RatingError::MixedCreditTypes => "amounts in different credit types were combined",
        })
    }
}

impl From<MergeError> for RatingError {
    fn from(e: MergeError) -> Self {
        match e {
            MergeError::Overflow => RatingError::Overflow,
            MergeError::KindMismatch => RatingError::CorruptUsage,
        }
    }
}

/// Prices one period's usage (stage 2; stage 1, [`rate_schedule`], runs per pricing
/// combination inside it). See the module docs for the rules. Lines come in product order, then
/// segment, pricing combination, rate and presentation group.
pub fn price_usage(input: &RatingInput<'_>) -> Result<Vec<InvoiceLine>, RatingError> {
    let mut lines = Vec::new();
    for product in input.products {
        for (span, state) in state_segments(product, input.period) {
            if let Some(metric) = input.metrics.get(&state.metric_id) {
                let ctx = SegmentCtx {
                    input,
                    product,
                    state,
                    metric,
                    span,
                };
                ctx.rate_into(&mut lines)?;
            }
        }
    }
    Ok(lines)
}

/// The product's states clipped to the period, as `(interval, state)` in time order.
fn state_segments(product: &RatedProduct, period: Period) -> Vec<(Period, &ProductState)> {
    let mut out = Vec::new();
    for (i, (from, state)) in product.versions.iter().enumerate() {
        let start = if i == 0 {
            period.start_ms
        } else {
            (*from).max(period.start_ms)
        };
        let end = product
            .versions
            .get(i + 1)
            .map_or(period.end_ms, |(next, _)| (*next).min(period.end_ms));
        if start < end {
            out.push((
                Period {
                    start_ms: start,
                    end_ms: end,
                },
                state,
            ));
        }
    }
    out
}

/// Stage 1: the effective rate at each instant for one product + pricing combination, as
/// `(interval, rate)` (the rate card's schedule; overrides will be applied here).
pub fn rate_schedule<'r>(
    rates: &'r [Rate],
    product_id: &str,
    pricing: &BTreeMap<String, String>,
) -> Vec<(Period, &'r Rate)> {
    let mut candidates: Vec<&Rate> = rates
        .iter()
        .filter(|r| r.product_id == product_id && &r.pricing_group_values == pricing)
        .collect();
    // Stable sort: among equal starts the later-added rate comes last and supersedes.
    candidates.sort_by_key(|r| r.starting_at_ms);
    let mut out = Vec::new();
    for (i, rate) in candidates.iter().enumerate() {
        let next_start = candidates.get(i + 1).map(|n| n.starting_at_ms);
        let end = match (rate.ending_before_ms, next_start) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) => a,
            (None, Some(b)) => b,
            (None, None) => i64::MAX,
        };
        if rate.starting_at_ms < end {
            out.push((
                Period {
                    start_ms: rate.starting_at_ms,
                    end_ms: end,
                },
                *rate,
            ));
        }
    }
    out
}

struct SegmentCtx<'a> {
    input: &'a RatingInput<'a>,
    product: &'a RatedProduct,
    state: &'a ProductState,
    metric: &'a MetricDef,
    span: Period,
}

/// Hourly rows of one segment grouped by pricing then presentation values.
type Buckets<'a> = BTreeMap<GroupValues, BTreeMap<GroupValues, Vec<&'a UsageRow>>>;

impl<'a> SegmentCtx<'a> {
    fn rate_into(&self, lines: &mut Vec<InvoiceLine>) -> Result<(), RatingError> {
        let grain = self.metric.grain();
        let pricing_idx = positions(&grain, &self.state.pricing_group_key);
        let presentation_idx = positions(&grain, &self.state.presentation_group_key);
        let project = |row: &UsageRow, idx: &[Option<usize>]| -> GroupValues {
            idx.iter()
                .map(|i| i.and_then(|i| row.groups.get(i).cloned().flatten()))
                .collect()
        };
        let mut in_span: Buckets<'a> = BTreeMap::new();
        let mut before: Buckets<'a> = BTreeMap::new();
        for row in self
            .input
            .usage
            .iter()
            .filter(|r| r.metric_id == self.metric.id)
        {
            let target = if row.hour_ms >= self.span.start_ms && row.hour_ms < self.span.end_ms {
                &mut in_span
            } else if row.hour_ms < self.span.start_ms
                && self.metric.aggregation == Aggregation::Latest
            {
                &mut before
            } else {
                continue;
            };
            target
                .entry(project(row, &pricing_idx))
                .or_default()
                .entry(project(row, &presentation_idx))
                .or_default()
                .push(row);
        }
        for pricing in self.pricing_combos(&in_span) {
            let Some(pricing_map) = self.pricing_map(&pricing) else {
                continue;
            };
            let schedule = rate_schedule(self.input.rates, &self.product.product_id, &pricing_map);
            for (rate_span, rate) in schedule {
                let sub = Period {
                    start_ms: rate_span.start_ms.max(self.span.start_ms),
                    end_ms: rate_span.end_ms.min(self.span.end_ms),
                };
                if sub.start_ms >= sub.end_ms || !rate.entitled {
                    continue;
                }
                let groups = in_span.get(&pricing);
                let baseline = before.get(&pricing);
                self.rate_sub(lines, sub, rate, &pricing_map, groups, baseline)?;
            }
        }
        Ok(())
    }

    /// Pricing combinations to consider: those with usage, plus those the rate card prices (so an
    /// entitled product shows a zero line), plus the empty one for ungrouped products.
    fn pricing_combos(&self, in_span: &Buckets<'a>) -> BTreeSet<GroupValues> {
        let keys = &self.state.pricing_group_key;
        let mut combos: BTreeSet<GroupValues> = in_span.keys().cloned().collect();
        for rate in self
            .input
            .rates
            .iter()
            .filter(|r| r.product_id == self.product.product_id)
        {
            if rate.pricing_group_values.len() == keys.len() {
                let combo: Option<GroupValues> = keys
                    .iter()
                    .map(|k| rate.pricing_group_values.get(k).map(|v| Some(v.clone())))
                    .collect();
                combos.extend(combo);
            }
        }
        combos
    }

    /// The pricing combination as rate-lookup values; `None` when a value is missing (no rate can
    /// match an absent property, so that usage is not billed).
    fn pricing_map(&self, pricing: &GroupValues) -> Option<BTreeMap<String, String>> {
        self.state
            .pricing_group_key
            .iter()
            .zip(pricing)
            .map(|(k, v)| Some((k.clone(), v.clone()?)))
            .collect()
    }

    fn rate_sub(
        &self,
        lines: &mut Vec<InvoiceLine>,
        sub: Period,
        rate: &Rate,
        pricing_map: &BTreeMap<String, String>,
        groups: Option<&BTreeMap<GroupValues, Vec<&UsageRow>>>,
        baseline: Option<&BTreeMap<GroupValues, Vec<&UsageRow>>>,
    ) -> Result<(), RatingError> {
        let mut buckets: Vec<(Option<&GroupValues>, Decimal)> = Vec::new();
        for (presentation, rows) in groups.into_iter().flatten() {
            let rows_in: Vec<&UsageRow> = rows
                .iter()
                .copied()
                .filter(|r| r.hour_ms >= sub.start_ms && r.hour_ms < sub.end_ms)
                .collect();
            if rows_in.is_empty() {
                continue;
            }
            let earlier = rows.iter().copied().filter(|r| r.hour_ms < sub.start_ms);
            let base = baseline
                .and_then(|b| b.get(presentation))
                .into_iter()
                .flatten()
                .copied();
            let quantity = segment_quantity(&rows_in, earlier.chain(base))?;
            buckets.push((Some(presentation), self.adjust(quantity)?));
        }
        if buckets.is_empty() {
            buckets.push((None, Decimal::ZERO));
        }
        for (presentation, quantity) in buckets {
            let zero = Amount::new(rate.credit_type.clone(), Decimal::ZERO);
            let base = InvoiceLine {
                kind: LineKind::Usage,
                product_id: self.product.product_id.clone(),
                name: self.product.name.clone(),
                quantity,
                unit_price: zero.clone(),
                total: zero,
                segment: sub,
                pricing_group_values: (!self.state.pricing_group_key.is_empty())
                    .then(|| pricing_map.clone()),
                presentation_group_values: self.presentation_map(presentation),
                tier: None,
            };
            price_lines(&rate.price, base, lines)?;
        }
        Ok(())
    }

    fn presentation_map(
        &self,
        presentation: Option<&GroupValues>,
    ) -> Option<BTreeMap<String, Option<String>>> {
        let keys = &self.state.presentation_group_key;
        if keys.is_empty() {
            return None;
        }
        let values = presentation?;
        Some(keys.iter().cloned().zip(values.iter().cloned()).collect())
    }

    /// Conversion, then rounding.
    fn adjust(&self, quantity: Decimal) -> Result<Decimal, RatingError> {
        let converted = match &self.state.quantity_conversion {
            None => quantity,
            Some(c) => match c.operation {
                ConversionOperation::Multiply => mul_exact(quantity, c.conversion_factor),
                // A quotient such as 1/3 has no exact decimal; 28 places is what the
                // configured division gives.
                ConversionOperation::Divide => quantity.checked_div(c.conversion_factor),
            }
            .ok_or(RatingError::Overflow)?,
        };
        Ok(match &self.state.quantity_rounding {
            None => converted,
            Some(r) => {
                converted.round_dp_with_strategy(r.decimal_places, strategy(r.rounding_method))
            }
        })
    }
}

fn strategy(method: RoundingMethod) -> RoundingStrategy {
    match method {
        RoundingMethod::RoundUp => RoundingStrategy::ToPositiveInfinity,
        RoundingMethod::RoundDown => RoundingStrategy::ToNegativeInfinity,
        RoundingMethod::RoundHalfUp => RoundingStrategy::MidpointAwayFromZero,
    }
}

fn positions(grain: &[String], keys: &[String]) -> Vec<Option<usize>> {
    keys.iter()
        .map(|k| grain.iter().position(|g| g == k))
        .collect()
}

/// The metric quantity of a segment. LATEST bills the change of the latest value: last value in
/// the segment minus the last value before it (zero when there is none).
fn segment_quantity<'r>(
    rows: &[&'r UsageRow],
    earlier: impl Iterator<Item = &'r UsageRow>,
) -> Result<Decimal, RatingError> {
    let merged = crate::accumulate::merge_all(rows.iter().map(|r| &r.acc))?;
    let Some(acc) = merged else {
        return Ok(Decimal::ZERO);
    };
    if !matches!(acc, Accumulator::Latest { .. }) {
        return Ok(acc.quantity());
    }
    let earlier: Vec<&UsageRow> = earlier.collect();
    let prior = crate::accumulate::merge_all(earlier.iter().map(|r| &r.acc))?;
    let prior_value = prior.map_or(Decimal::ZERO, |p| p.quantity());
    sub_exact(acc.quantity(), prior_value).ok_or(RatingError::Overflow)
}

/// Prices `base.quantity` and appends the resulting line(s).
fn price_lines(
    price: &Price,
    base: InvoiceLine,
    lines: &mut Vec<InvoiceLine>,
) -> Result<(), RatingError> {
    let credit_type = base.total.credit_type.clone();
    let amount = |value: Decimal| Amount::new(credit_type.clone(), value);
    match price {
        Price::Flat(p) => {
            let total = mul_exact(base.quantity, *p).ok_or(RatingError::Overflow)?;
            lines.push(InvoiceLine {
                unit_price: amount(*p),
                total: amount(total),
                ..base
            });
        }
        Price::Tiered(tiers) => {
            for part in tier_split(tiers, base.quantity)? {
                let total =
                    mul_exact(part.quantity, part.tier.price).ok_or(RatingError::Overflow)?;
                lines.push(InvoiceLine {
                    quantity: part.quantity,
                    unit_price: amount(part.tier.price),
                    total: amount(total),
                    tier: Some(TierRef {
                        level: part.level,
                        starting_at: part.start,
                        size: part.tier.size,
                    }),
                    ..base.clone()
                });
            }
        }
    }
    Ok(())
}

/// The units of a quantity that fall in one tier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierPart<'t> {
    /// 1-based tier number.
    pub level: u32,
    pub tier: &'t Tier,
    /// Where the tier starts (the sum of the sizes before it).
    pub start: Decimal,
    pub quantity: Decimal,
}

/// Splits a quantity over graduated tiers, one part per tier reached. Zero gives one empty
/// first-tier part; a negative quantity (a LATEST decrease) is priced wholly at the first tier.
pub fn tier_split(tiers: &[Tier], quantity: Decimal) -> Result<Vec<TierPart<'_>>, RatingError> {
    let mut out = Vec::new();
    let mut start = Decimal::ZERO;
    for (i, tier) in tiers.iter().enumerate() {
        let level = u32::try_from(i + 1).map_err(|_| RatingError::Overflow)?;
        if i == 0 && quantity <= Decimal::ZERO {
            out.push(TierPart {
                level,
                tier,
                start,
                quantity,
            });
            break;
        }
        let remaining = sub_exact(quantity, start).ok_or(RatingError::Overflow)?;
        let in_tier = match tier.size {
            Some(size) => remaining.min(size),
            None => remaining,
        };
        if in_tier <= Decimal::ZERO {
            break;
        }
        out.push(TierPart {
            level,
            tier,
            start,
            quantity: in_tier,
        });
        match tier.size {
            Some(size) => start = add_exact(start, size).ok_or(RatingError::Overflow)?,
            None => break,
        }
    }
    Ok(out)
}

/// The total price of a quantity (sum of its tier or flat lines).
pub fn price_total(price: &Price, quantity: Decimal) -> Result<Decimal, RatingError> {
    match price {
        Price::Flat(p) => mul_exact(quantity, *p).ok_or(RatingError::Overflow),
        Price::Tiered(tiers) => {
            let mut total = Decimal::ZERO;
            for part in tier_split(tiers, quantity)? {
                let t = mul_exact(part.quantity, part.tier.price).ok_or(RatingError::Overflow)?;
                total = add_exact(total, t).ok_or(RatingError::Overflow)?;
            }
            Ok(total)
        }
    }
}

#[cfg(test)]
#[path = "rating_tests.rs"]
mod tests;
