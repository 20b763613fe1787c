//! Rating: the "resolve rates" and "price quantities" stages of pricing: one billing period of
//! stored usage → priced usage lines. `pricing::price_invoice` is the entry point that runs these
//! stages and then balances and totals.
//!
//! [`rate_schedule`] resolves the rate card's rate at each instant, `overrides::plan` applies the
//! contract's overrides on top of it (the effective rate, per presentation group), and
//! [`price_usage`] prices the quantities. All are
//! pure functions of their inputs, so central, the browser preview and the tests compute the same
//! lines to the last digit.
//!
//! Rules (see `metronome-api.md` §3):
//! - A product's lines are split into *segments*: maximal sub-intervals of the period in which the
//!   product's rating state (metric, pricing group keys, conversion, rounding) and the rate for a
//!   pricing combination are constant. Each segment is aggregated and priced on its own. A
//!   product update that changes nothing rating sees (name, tags, presentation keys, a
//!   conversion's label) does not split the period; lines carry the name in effect at the
//!   period's end.
//! - Rates of one product and pricing group values form a schedule: sorted by `starting_at`, each
//!   ends at its own `ending_before` or where the next one starts, whichever is first.
//! - An override boundary inside a rate's segment splits it too (unless the effective rates on
//!   both sides are identical); each piece is aggregated and priced on its own.
//! - An access segment boundary of a balance that may cover the product (same credit type, in
//!   scope) splits a piece too, but only when the pieces, each rated on its own, give every
//!   pricing and presentation group the same quantity and total as the whole: a split never
//!   changes what usage is worth (flat SUM/COUNT without rounding always split; tiers, MAX,
//!   UNIQUE, LATEST or rounding that would differ keep the line whole). Pieces without usage
//!   give no line.
//! - No rate, or a rate that is not `entitled` (after overrides) → the usage is not billed (no
//!   line). A line's `unit_price` is the effective price.
//! - Quantity = aggregate over the segment (LATEST: last value minus the last value before the
//!   segment), then conversion, then rounding (only if configured), then pricing.
//! - FLAT: `quantity × price`. TIERED: graduated, one line per tier reached.
//! - Presentation groups never change a total. The quantity (conversion and rounding included)
//!   and the tiers are computed per *pricing bucket* (UNIQUE counts distinct values over the
//!   bucket); the presentation lines then take the bucket's units in the order of their group
//!   values (sorted): line i shows `Q(groups ≤ i) − Q(groups < i)`, so a line may span tiers (one
//!   line per presentation group and tier) and the lines sum to the bucket by telescoping. For
//!   SUM and COUNT a line shows its own usage (up to rounding); for UNIQUE the distinct values
//!   not already seen in an earlier group; for MAX how far it raises the maximum; for LATEST
//!   how it moves the bucket's change.
//! - Line totals are exact; nothing is rounded that no configuration asks to round, except a
//!   `DIVIDE` conversion whose quotient does not terminate (÷3, ÷60): it is rounded half-even to
//!   [`DIVIDE_PLACES`] (12) before `quantity_rounding`, and everything after it is exact. An
//!   amount that has no exact `Decimal` (out of range, or needing more than 28 places or 96 bits
//!   of mantissa) is a [`RatingError::Overflow`], never silently rounded. A price times an
//!   override's multiplier follows the same 12-place half-even rule (`overrides`).
//! - Every line is a `LineKind::Usage` line whose amounts are in its rate's credit type.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::String;
use alloc::vec::Vec;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

use crate::accumulate::{Accumulator, GroupValues, MergeError};
use crate::balances::Balance;
use crate::decimal::{add_exact, mul_exact, sub_exact};
use crate::invoice::{DrawPrice, InvoiceLine, LineKind, TierRef};
use crate::metric::{Aggregation, MetricDef};
use crate::money::{Amount, CreditTypeId};
use crate::overrides::{self, Effective, Subject};
use crate::period::Period;
use crate::pricing::ContractTerms;

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
    /// A fraction of spend (0.1 = 10%): a COMPOSITE product's rate (`composite`). It prices no
    /// usage (rating skips it); a composite line is priced like a flat one whose quantity is
    /// the spend it is a percentage of.
    Percentage(Decimal),
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
    /// The rate's billing frequency (subscription rates); override specifiers may name it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_frequency: Option<crate::period::Frequency>,
    /// The rate's `commit_rate`: what usage covered by a `COMMIT_RATE` commit or credit is
    /// priced at (flat only; see `balances`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_rate: Option<Price>,
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
    /// `(effective from, name)`, sorted by time; the first applies from the beginning of time.
    /// Lines carry the name in effect at their period's end ([`RatedProduct::name_at_end`]).
    pub names: Vec<(i64, String)>,
    /// `(effective from, tags)`, sorted by time, like `names`. Tags never split a period:
    /// overrides that target tags see the tags in effect at the period's end
    /// ([`RatedProduct::tags_at_end`]).
    #[serde(default)]
    pub tags: Vec<(i64, Vec<String>)>,
    /// `(effective from, state)`, sorted by time; the first applies from the beginning of time.
    pub versions: Vec<(i64, ProductState)>,
}

/// The value of a `(effective from, value)` timeline at the last instant before `end_ms` (the
/// first value if none started before it).
pub(crate) fn at_end<T>(timeline: &[(i64, T)], end_ms: i64) -> Option<&T> {
    timeline
        .iter()
        .rev()
        .find(|(from, _)| *from < end_ms)
        .or(timeline.first())
        .map(|(_, v)| v)
}

impl RatedProduct {
    /// The name in effect at the last instant of `period` (empty if the product has none).
    pub fn name_at_end(&self, period: Period) -> &str {
        at_end(&self.names, period.end_ms).map_or("", String::as_str)
    }

    /// The tags in effect at the last instant of `period` (none if the product has none).
    pub fn tags_at_end(&self, period: Period) -> &[String] {
        at_end(&self.tags, period.end_ms).map_or(&[], Vec::as_slice)
    }
}

impl ProductState {
    /// Whether two states rate alike: everything but the presentation keys, which never change
    /// an amount (so a change of them alone does not split the period either).
    fn rates_like(&self, other: &ProductState) -> bool {
        self.metric_id == other.metric_id
            && self.pricing_group_key == other.pricing_group_key
            && self.quantity_conversion == other.quantity_conversion
            && self.quantity_rounding == other.quantity_rounding
    }
}

/// One stored hourly partial, already resolved to the invoice's customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRow {
    pub metric_id: String,
    pub groups: GroupValues,
    pub hour_ms: i64,
    pub acc: Accumulator,
}

/// A usage row's key: metric, grain values, hour (or block start).
pub type RowKey = (String, GroupValues, i64);

/// Usage rows from `(key, contribution)` pairs, the contributions of one key merged in order
/// (`Accumulator::merge`), in key order.
pub fn merge_rows(
    items: impl IntoIterator<Item = (RowKey, Accumulator)>,
) -> Result<Vec<UsageRow>, MergeError> {
    let mut rows: BTreeMap<RowKey, Accumulator> = BTreeMap::new();
    for (key, acc) in items {
        match rows.get_mut(&key) {
            Some(existing) => existing.merge(&acc)?,
            None => {
                rows.insert(key, acc);
            }
        }
    }
    Ok(rows
        .into_iter()
        .map(|((metric_id, groups, hour_ms), acc)| UsageRow {
            metric_id,
            groups,
            hour_ms,
            acc,
        })
        .collect())
}

/// Everything rating needs for one period.
pub struct RatingInput<'a> {
    pub period: Period,
    /// Usage products in rate-card order (the invoice's line order).
    pub products: &'a [RatedProduct],
    pub metrics: &'a BTreeMap<String, MetricDef>,
    /// The rate card's rates in the order they were added.
    pub rates: &'a [Rate],
    /// The contract's overrides, applied on top of the rates.
    pub terms: &'a ContractTerms,
    /// Hourly usage of the period; for LATEST metrics also earlier hours (for the baseline).
    pub usage: &'a [UsageRow],
    /// The balances usage may be drawn from: rating prices draws that commit-specific
    /// overrides change (`InvoiceLine::draw_prices`); stage 3 draws them down.
    pub balances: &'a [Balance],
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
    /// An invoice owes an amount in a custom pricing unit its rate card has no conversion for.
    MissingConversion,
}

impl core::fmt::Display for RatingError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            RatingError::Overflow => "an invoice amount overflows the exact decimal range",
            RatingError::CorruptUsage => "stored usage does not match its billable metric",
            RatingError::MixedCreditTypes => "amounts in different credit types were combined",
            RatingError::MissingConversion => {
                "an amount in a custom pricing unit has no conversion on the rate card"
            }
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

/// The product's rating segments within the period, as `(interval, state)` in time order: the
/// versions clipped to the period, with consecutive versions that rate alike merged into one
/// (a change of name, tags or presentation keys alone never splits the period). A merged
/// segment presents with the state in effect at its end.
fn state_segments(product: &RatedProduct, period: Period) -> Vec<(Period, &ProductState)> {
    let mut out: Vec<(Period, &ProductState)> = Vec::new();
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
        if start >= end {
            continue;
        }
        match out.last_mut() {
            Some((span, last)) if span.end_ms == start && last.rates_like(state) => {
                span.end_ms = end;
                *last = state;
            }
            _ => out.push((
                Period {
                    start_ms: start,
                    end_ms: end,
                },
                state,
            )),
        }
    }
    out
}

/// Stage 1: the rate card's rate at each instant for one product + pricing combination, as
/// `(interval, rate)`; `overrides::plan` then applies the contract's overrides to each.
pub fn rate_schedule<'r>(
    rates: &'r [Rate],
    product_id: &str,
    pricing: &BTreeMap<String, String>,
) -> Vec<(Period, &'r Rate)> {
    let mut candidates: Vec<usize> = (0..rates.len())
        .filter(|&i| rates[i].product_id == product_id && &rates[i].pricing_group_values == pricing)
        .collect();
    // Stable sort: among equal starts the later-added rate comes last and supersedes.
    candidates.sort_by_key(|&i| rates[i].starting_at_ms);
    let mut out = Vec::new();
    push_segments(rates, &candidates, &mut out);
    out.into_iter().map(|s| (s.span, &rates[s.rate])).collect()
}

/// One segment of a rate card's schedule: `rates[rate]` is in effect over `span`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduleSegment {
    /// Index of the rate in the slice given to [`rate_schedules`].
    pub rate: usize,
    pub span: Period,
}

/// Every schedule of a rate card at once: the non-empty segments of each product + pricing
/// combination (+ billing frequency, for subscription rates), grouped by combination (product
/// id, then pricing values, then frequency) and in time order
/// within one. The same rule as [`rate_schedule`], in O(n log n) for n rates where calling it
/// per combination costs O(n) each.
pub fn rate_schedules(rates: &[Rate]) -> Vec<ScheduleSegment> {
    let key = |i: usize| {
        let r = &rates[i];
        (
            &r.product_id,
            &r.pricing_group_values,
            r.billing_frequency,
            r.starting_at_ms,
        )
    };
    let mut order: Vec<usize> = (0..rates.len()).collect();
    // Stable: among equal keys and starts the later-added rate comes last and supersedes.
    order.sort_by(|&a, &b| key(a).cmp(&key(b)));
    let mut out = Vec::with_capacity(rates.len());
    let mut rest = order.as_slice();
    while let Some(&first) = rest.first() {
        let same = |&i: &usize| {
            rates[i].product_id == rates[first].product_id
                && rates[i].pricing_group_values == rates[first].pricing_group_values
                && rates[i].billing_frequency == rates[first].billing_frequency
        };
        let len = rest.iter().take_while(|i| same(i)).count();
        push_segments(rates, &rest[..len], &mut out);
        rest = &rest[len..];
    }
    out
}

/// The segments of one combination's rates (`group`, sorted by start, later-added last among
/// equal starts): each ends at its own `ending_before` or where the next starts, whichever is
/// first; empty ones are left out.
fn push_segments(rates: &[Rate], group: &[usize], out: &mut Vec<ScheduleSegment>) {
    for (n, &i) in group.iter().enumerate() {
        let rate = &rates[i];
        let next_start = group.get(n + 1).map(|&j| rates[j].starting_at_ms);
        let end = match (rate.ending_before_ms, next_start) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) => a,
            (None, Some(b)) => b,
            (None, None) => i64::MAX,
        };
        if rate.starting_at_ms < end {
            out.push(ScheduleSegment {
                rate: i,
                span: Period {
                    start_ms: rate.starting_at_ms,
                    end_ms: end,
                },
            });
        }
    }
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

/// What pricing a draw needs about a piece of a rate's span: the list rate, the usage, the
/// effective rate's lines' presentation values (as `overrides::plan` got them) and the piece.
struct Draws<'d> {
    rate: &'d Rate,
    subject: &'d Subject<'d>,
    presentations: &'d [overrides::Presentation<'d>],
    piece: Period,
}

/// Quantity and total per pricing and presentation group, over some lines.
type Charges<'l> = BTreeMap<
    (
        &'l Option<BTreeMap<String, String>>,
        &'l Option<BTreeMap<String, Option<String>>>,
    ),
    (Decimal, Decimal),
>;

fn charges(lines: &[InvoiceLine]) -> Result<Charges<'_>, RatingError> {
    let mut out = Charges::new();
    for l in lines {
        let sum = out
            .entry((&l.pricing_group_values, &l.presentation_group_values))
            .or_default();
        sum.0 = add_exact(sum.0, l.quantity).ok_or(RatingError::Overflow)?;
        sum.1 = add_exact(sum.1, l.total.value).ok_or(RatingError::Overflow)?;
    }
    Ok(out)
}

/// The unit price at bucket position `position` (the tier holding it; positions below zero
/// are the first tier's).
fn price_at(price: &Price, position: Decimal) -> Decimal {
    let tiers = match price {
        Price::Flat(p) | Price::Percentage(p) => return *p,
        Price::Tiered(tiers) => tiers,
    };
    let mut end = Decimal::ZERO;
    for tier in tiers {
        match tier.size.and_then(|size| end.checked_add(size)) {
            Some(next) if position >= next => end = next,
            _ => return tier.price,
        }
    }
    tiers.last().map_or(Decimal::ZERO, |t| t.price)
}

/// One pricing bucket of a segment: its pricing values, its rows by presentation group, and
/// (LATEST) its rows before the segment.
struct Bucket<'m, 'a> {
    pricing_map: &'m BTreeMap<String, String>,
    groups: Option<&'m BTreeMap<GroupValues, Vec<&'a UsageRow>>>,
    baseline: Option<&'m BTreeMap<GroupValues, Vec<&'a UsageRow>>>,
}

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
            let groups = in_span.get(&pricing);
            let baseline = before.get(&pricing);
            let presentations: Vec<Option<BTreeMap<String, Option<String>>>> = groups
                .into_iter()
                .flat_map(BTreeMap::keys)
                .map(|g| self.presentation_map(Some(g)))
                .chain(core::iter::once(None))
                .collect();
            let presentations: Vec<overrides::Presentation<'_>> =
                presentations.iter().map(Option::as_ref).collect();
            for (rate_span, rate) in schedule {
                if matches!(rate.price, Price::Percentage(_)) {
                    // A percentage prices spend, never units (`composite`): no usage line.
                    continue;
                }
                let sub = Period {
                    start_ms: rate_span.start_ms.max(self.span.start_ms),
                    end_ms: rate_span.end_ms.min(self.span.end_ms),
                };
                if sub.start_ms >= sub.end_ms {
                    continue;
                }
                let subject = Subject {
                    product_id: &self.product.product_id,
                    product_tags: self.product.tags_at_end(self.input.period),
                    pricing_group_values: &pricing_map,
                    billing_frequency: rate.billing_frequency,
                };
                let plan = overrides::plan(self.input.terms, rate, &subject, sub, &presentations)?;
                let commit_unit_price = match &rate.commit_rate {
                    Some(Price::Flat(p)) => Some(*p),
                    _ => None,
                };
                for (piece, rates) in plan {
                    let bucket = Bucket {
                        pricing_map: &pricing_map,
                        groups,
                        baseline,
                    };
                    let draws = Draws {
                        rate,
                        subject: &subject,
                        presentations: &presentations,
                        piece,
                    };
                    let from = lines.len();
                    self.rate_sub(lines, piece, &rates, &bucket, &draws)?;
                    self.split_at_access(lines, from, (&rates, &bucket, &draws))?;
                    for line in &mut lines[from..] {
                        line.commit_unit_price = commit_unit_price;
                    }
                }
            }
        }
        Ok(())
    }

    /// Splits the lines `lines[from..]` of one piece where an access segment of a balance that
    /// may cover the product starts or ends inside it, so a segment whose window holds only part
    /// of the piece covers the usage inside its window. Only when the split changes no charge:
    /// the pieces, rated on their own, give every pricing and presentation group the same
    /// quantity and total as the whole piece (SUM and COUNT usage at a flat price, with no
    /// rounding, always do; a graduated price, MAX, UNIQUE, LATEST or rounding usually do not,
    /// and those lines stay whole). Pieces without usage give no line.
    fn split_at_access(
        &self,
        lines: &mut Vec<InvoiceLine>,
        from: usize,
        (rates, bucket, draws): (&[Option<Effective>], &Bucket<'_, '_>, &Draws<'_>),
    ) -> Result<(), RatingError> {
        let piece = draws.piece;
        let whole = &lines[from..];
        if whole.is_empty() || whole.iter().any(|l| l.quantity.is_zero()) {
            return Ok(());
        }
        let tags = self.product.tags_at_end(self.input.period);
        let mut cuts: Vec<i64> = self
            .input
            .balances
            .iter()
            .filter(|b| {
                b.credit_type == draws.rate.credit_type
                    && b.may_cover_product(&self.product.product_id, tags)
            })
            .flat_map(|b| b.access.iter())
            .flat_map(|a| [a.starting_at_ms, a.ending_before_ms])
            .filter(|&t| piece.start_ms < t && t < piece.end_ms)
            .collect();
        if cuts.is_empty() {
            return Ok(());
        }
        cuts.sort_unstable();
        cuts.dedup();
        let starts = core::iter::once(piece.start_ms).chain(cuts.iter().copied());
        let ends = cuts.iter().copied().chain(core::iter::once(piece.end_ms));
        let mut split = Vec::new();
        for (start_ms, end_ms) in starts.zip(ends) {
            let sub = Period { start_ms, end_ms };
            let sub_draws = Draws {
                piece: sub,
                ..*draws
            };
            self.rate_sub(&mut split, sub, rates, bucket, &sub_draws)?;
        }
        split.retain(|l| !l.quantity.is_zero());
        if charges(&split)? == charges(whole)? {
            lines.truncate(from);
            lines.extend(split);
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

    /// Prices one pricing bucket over one piece of a rate's part of the segment: the bucket's
    /// quantity is aggregated over all its presentation groups, and each presentation line (in
    /// the order of its group values) takes the units it adds to those before it, at its own
    /// effective rate (`rates`: one per presentation group, then the one of a line without
    /// usage; `None`: not entitled, no line).
    fn rate_sub(
        &self,
        lines: &mut Vec<InvoiceLine>,
        sub: Period,
        rates: &[Option<Effective>],
        bucket: &Bucket<'_, '_>,
        draws: &Draws<'_>,
    ) -> Result<(), RatingError> {
        let (pricing_map, groups, baseline) = (bucket.pricing_map, bucket.groups, bucket.baseline);
        let mut running = Running::default();
        let mut filled = Decimal::ZERO;
        let mut any = false;
        for (i, (presentation, rows)) in groups.into_iter().flatten().enumerate() {
            let inside = rows
                .iter()
                .filter(|r| r.hour_ms >= sub.start_ms && r.hour_ms < sub.end_ms);
            let earlier = rows.iter().filter(|r| r.hour_ms < sub.start_ms);
            let base = baseline
                .and_then(|b| b.get(presentation))
                .into_iter()
                .flatten();
            if !running.add(inside, earlier.chain(base))? {
                continue;
            }
            let upto = self.adjust(running.quantity()?)?;
            if let Some(Some(rate)) = rates.get(i) {
                let base = self.base_line(sub, rate, pricing_map, Some(presentation));
                let from = lines.len();
                price_range(&rate.price, base, (filled, upto), lines)?;
                let presentation = draws.presentations.get(i).copied().flatten();
                self.price_draws(&mut lines[from..], filled, draws, presentation)?;
            }
            filled = upto;
            any = true;
        }
        if let (false, Some(Some(rate))) = (any, rates.last()) {
            let base = self.base_line(sub, rate, pricing_map, None);
            price_range(&rate.price, base, (Decimal::ZERO, Decimal::ZERO), lines)?;
        }
        Ok(())
    }

    /// Sets the draw prices of the lines one presentation group's units (from position
    /// `from`) just made, for each balance a commit-specific override prices differently
    /// (`overrides::draw_price`, read at each line's first unit).
    fn price_draws(
        &self,
        lines: &mut [InvoiceLine],
        from: Decimal,
        draws: &Draws<'_>,
        presentation: overrides::Presentation<'_>,
    ) -> Result<(), RatingError> {
        let terms = self.input.terms;
        if self.input.balances.is_empty() || !overrides::any_commit_specific(terms) {
            return Ok(());
        }
        for balance in self.input.balances {
            let Some(price) = overrides::draw_price(
                terms,
                draws.rate,
                draws.subject,
                presentation,
                draws.piece,
                balance,
            )?
            else {
                continue;
            };
            let mut position = from;
            for line in lines.iter_mut() {
                if line.quantity > Decimal::ZERO {
                    line.draw_prices.push(DrawPrice {
                        balance_id: balance.id.clone(),
                        unit_price: price_at(&price, position),
                    });
                }
                position = add_exact(position, line.quantity).ok_or(RatingError::Overflow)?;
            }
        }
        Ok(())
    }

    /// A zero line of this segment, rate and groups, for [`price_range`] to fill in.
    fn base_line(
        &self,
        sub: Period,
        rate: &Effective,
        pricing_map: &BTreeMap<String, String>,
        presentation: Option<&GroupValues>,
    ) -> InvoiceLine {
        let zero = Amount::new(rate.credit_type.clone(), Decimal::ZERO);
        InvoiceLine {
            kind: LineKind::Usage,
            product_id: self.product.product_id.clone(),
            name: self.product.name_at_end(self.input.period).into(),
            quantity: Decimal::ZERO,
            unit_price: zero.clone(),
            total: zero,
            segment: sub,
            pricing_group_values: (!self.state.pricing_group_key.is_empty())
                .then(|| pricing_map.clone()),
            presentation_group_values: self.presentation_map(presentation),
            tier: None,
            balance: None,
            commit_unit_price: None,
            draw_prices: Vec::new(),
            scheduled_charge_id: None,
            subscription_id: None,
            is_prorated: false,
        }
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
            Some(c) => convert(quantity, c).ok_or(RatingError::Overflow)?,
        };
        Ok(match &self.state.quantity_rounding {
            None => converted,
            Some(r) => {
                converted.round_dp_with_strategy(r.decimal_places, strategy(r.rounding_method))
            }
        })
    }
}

/// Decimal places a non-terminating `DIVIDE` conversion is rounded to (half-even).
pub const DIVIDE_PLACES: u32 = 12;

/// Applies a quantity conversion. `MULTIPLY` is exact or `None`. `DIVIDE` keeps an exact
/// quotient as it is (1 / 1024 = 0.0009765625); a quotient that does not terminate (100 / 60)
/// is rounded half-even to [`DIVIDE_PLACES`], so the amounts priced from it stay exact
/// (28 places of 1.666… times a price would leave the exact range).
pub fn convert(quantity: Decimal, conversion: &QuantityConversion) -> Option<Decimal> {
    let factor = conversion.conversion_factor;
    match conversion.operation {
        ConversionOperation::Multiply => mul_exact(quantity, factor),
        ConversionOperation::Divide => {
            let quotient = quantity.checked_div(factor)?;
            if mul_exact(quotient, factor) == Some(quantity) {
                return Some(quotient);
            }
            Some(
                quotient
                    .round_dp_with_strategy(DIVIDE_PLACES, RoundingStrategy::MidpointNearestEven),
            )
        }
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

/// The usage of a pricing bucket's presentation groups taken so far: the merged rows inside the
/// rate's part of the segment and, for LATEST, the merged rows before it (the baseline).
#[derive(Default)]
struct Running {
    inside: Option<Accumulator>,
    before: Option<Accumulator>,
}

impl Running {
    /// Adds one presentation group's rows; `false` (and nothing added) when it has none inside.
    fn add<'r>(
        &mut self,
        inside: impl Iterator<Item = &'r &'r UsageRow>,
        before: impl Iterator<Item = &'r &'r UsageRow>,
    ) -> Result<bool, RatingError> {
        let Some(acc) = crate::accumulate::merge_all(inside.map(|r| &r.acc))? else {
            return Ok(false);
        };
        merge_into(&mut self.inside, &acc)?;
        if matches!(acc, Accumulator::Latest { .. }) {
            if let Some(prior) = crate::accumulate::merge_all(before.map(|r| &r.acc))? {
                merge_into(&mut self.before, &prior)?;
            }
        }
        Ok(true)
    }

    /// The metric quantity of the rows so far. LATEST bills the change of the latest value:
    /// the last value inside minus the last value before (zero when there is none).
    fn quantity(&self) -> Result<Decimal, RatingError> {
        let Some(acc) = &self.inside else {
            return Ok(Decimal::ZERO);
        };
        if !matches!(acc, Accumulator::Latest { .. }) {
            return Ok(acc.quantity());
        }
        let prior = self.before.as_ref().map_or(Decimal::ZERO, |p| p.quantity());
        sub_exact(acc.quantity(), prior).ok_or(RatingError::Overflow)
    }
}

fn merge_into(target: &mut Option<Accumulator>, acc: &Accumulator) -> Result<(), RatingError> {
    match target {
        None => *target = Some(acc.clone()),
        Some(t) => t.merge(acc)?,
    }
    Ok(())
}

/// Prices the units of a bucket's quantity from `range.0` to `range.1` (a presentation line's
/// share) and appends the line(s): FLAT one line, TIERED one line per tier the range crosses.
/// A PERCENTAGE price makes one line like FLAT (`composite`: the range is the spend).
pub(crate) fn price_range(
    price: &Price,
    base: InvoiceLine,
    range: (Decimal, Decimal),
    lines: &mut Vec<InvoiceLine>,
) -> Result<(), RatingError> {
    match price {
        Price::Flat(p) | Price::Percentage(p) => {
            let quantity = sub_exact(range.1, range.0).ok_or(RatingError::Overflow)?;
            let total = mul_exact(quantity, *p).ok_or(RatingError::Overflow)?;
            let credit_type = &base.total.credit_type;
            lines.push(InvoiceLine {
                quantity,
                unit_price: Amount::new(credit_type.clone(), *p),
                total: Amount::new(credit_type.clone(), total),
                ..base
            });
            Ok(())
        }
        Price::Tiered(tiers) => {
            for part in tier_range_split(tiers, range.0, range.1)? {
                tier_line(&base, &part, lines)?;
            }
            Ok(())
        }
    }
}

fn tier_line(
    base: &InvoiceLine,
    part: &TierPart<'_>,
    lines: &mut Vec<InvoiceLine>,
) -> Result<(), RatingError> {
    let credit_type = &base.total.credit_type;
    let total = mul_exact(part.quantity, part.tier.price).ok_or(RatingError::Overflow)?;
    lines.push(InvoiceLine {
        quantity: part.quantity,
        unit_price: Amount::new(credit_type.clone(), part.tier.price),
        total: Amount::new(credit_type.clone(), total),
        tier: Some(TierRef {
            level: part.level,
            starting_at: part.start,
            size: part.tier.size,
        }),
        ..base.clone()
    });
    Ok(())
}

/// Splits the units between positions `from` and `to` of a quantity over graduated tiers, one
/// part per tier the range crosses (negative parts when `to < from`). The first tier also holds
/// everything below zero, as in [`tier_split`]. An empty range gives one empty part at the tier
/// holding `from`. The parts priced sum to `price_total(to) - price_total(from)`.
pub fn tier_range_split(
    tiers: &[Tier],
    from: Decimal,
    to: Decimal,
) -> Result<Vec<TierPart<'_>>, RatingError> {
    let mut out = Vec::new();
    let mut holding = None;
    let mut start = Decimal::ZERO;
    for (i, tier) in tiers.iter().enumerate() {
        let level = u32::try_from(i + 1).map_err(|_| RatingError::Overflow)?;
        let end = match tier.size {
            Some(size) => Some(add_exact(start, size).ok_or(RatingError::Overflow)?),
            None => None,
        };
        let low = (i > 0).then_some(start);
        let clamp = |x: Decimal| {
            let x = low.map_or(x, |l| x.max(l));
            end.map_or(x, |e| x.min(e))
        };
        let quantity = sub_exact(clamp(to), clamp(from)).ok_or(RatingError::Overflow)?;
        let part = TierPart {
            level,
            tier,
            start,
            quantity,
        };
        if holding.is_none() && end.is_none_or(|e| from < e) {
            holding = Some(TierPart {
                quantity: Decimal::ZERO,
                ..part.clone()
            });
        }
        if !quantity.is_zero() {
            out.push(part);
        }
        match end {
            Some(e) => start = e,
            None => break,
        }
    }
    if out.is_empty() {
        out.extend(holding);
    }
    Ok(out)
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
        Price::Flat(p) | Price::Percentage(p) => {
            mul_exact(quantity, *p).ok_or(RatingError::Overflow)
        }
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
pub(crate) mod tests;
