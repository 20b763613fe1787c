//! Contract overrides (`metronome-api.md` §3.6): which of a contract's overrides apply to a
//! rate, and the effective price they make. Stage 1 of pricing (`rating`) asks this module for
//! the effective rate of each product, pricing combination, presentation group and instant;
//! `getContractRateSchedule` asks it for the rate in effect at one instant.
//!
//! Rules:
//! - An override applies at `t` when `starting_at ≤ t < ending_before` and it targets the usage:
//!   by `product_id`, by `applicable_product_tags` (the product has all of them), or by any of
//!   its `override_specifiers` whose set fields all match (product id; all its tags; its pricing
//!   values a subset of the usage's; its presentation values a subset of the line's; the rate's
//!   billing frequency). Products' tags are those in effect at the period's end.
//! - `entitled` on an applicable override replaces the rate's entitlement; not entitled means
//!   not billed. An override never creates a rate: without a list rate nothing is billed.
//! - OVERWRITE replaces the price with `overwrite_rate` (flat or tiered, list price ignored) and
//!   always wins over multipliers. Several applicable overwrites, or several overrides setting
//!   `entitled`: the one with the lowest `priority` (none: after every prioritised one), then
//!   the one listed last.
//! - `LOWEST_MULTIPLIER` (default): the single lowest applicable MULTIPLIER applies; multipliers
//!   never compound. TIERED overrides are refused in this mode (see [`build`]).
//! - `EXPLICIT`: MULTIPLIER and TIERED overrides apply by ascending `priority` (ties: listed
//!   first). A TIERED override covers the next units of the pricing bucket up to its tiers'
//!   sizes, each at its tier's multiplier; units past its last sized tier fall to the next
//!   override, and past every override to the list price. A MULTIPLIER covers all the units
//!   still left.
//! - A multiplier scales the list price at each unit's position: a TIERED list rate has each
//!   tier price multiplied, and a multiplier follows list price changes. The effective price is
//!   one graduated price over the bucket's positions ([`Effective::price`]), so tier lines come
//!   from the breakpoints of both the list tiers and the override's tiers.
//! - A price times a multiplier is exact when the exact product has at most
//!   [`MULTIPLIED_PRICE_PLACES`] (12) decimal places, and otherwise rounded half-even to 12
//!   places (once, from the exact product): the same rule as a non-terminating `DIVIDE`
//!   conversion. Everything after (quantity × unit price, sums) is exact.
//! - An override boundary inside a rate's segment splits it; adjacent pieces whose effective
//!   rates are identical (for every presentation group priced) are merged again, so a boundary
//!   that changes no price (a second, higher multiplier starting) does not split the lines or
//!   restart the tiers.
//!
//! - Commit-specific overrides (`is_commit_specific`, [`Override::commit_specific`]) never
//!   price a line: they price the usage drawn from the balances they name ([`draw_price`]):
//!   by `commit_ids`, `recurring_commit_ids` (the recurring commit a balance was generated
//!   from) or `any_commit_or_credit_ids` (either) on a specifier, or every balance when none is
//!   given. `target: LIST_RATE` (default) joins the contract's ordinary overrides for that
//!   draw, under the same rules; `target: COMMIT_RATE` adjusts the rate's `commit_rate` for a
//!   `COMMIT_RATE` balance. They are MULTIPLIER or flat OVERWRITE only and set no entitlement.
//!   Their boundaries split flat lines (so a draw's price is constant on a line) but never a
//!   graduated price, whose tiers must not restart: there one counts for a line only when
//!   active over all of it.
//!
//! Invariants: every function here is pure and total (no panic on any input); effective prices
//! are never negative (multipliers and overwrite prices are checked non-negative by [`build`]).

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::cmp::Reverse;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::balances::{Balance, BalanceRateType};
use crate::decimal::{add_exact, mul_round_half_even, sub_exact};
use crate::money::CreditTypeId;
use crate::period::{Frequency, Period};
use crate::pricing::ContractTerms;
use crate::rate::{rate_price, RateError, RateType};
use crate::rating::{Price, Rate, RatingError, Tier};

/// Most overrides one contract may carry (each draft of the contract resolves them all).
pub const MAX_OVERRIDES: usize = 100;
/// Most tiers one TIERED override may have.
pub const MAX_OVERRIDE_TIERS: usize = 100;
/// Most `override_specifiers` one override may have.
pub const MAX_SPECIFIERS: usize = 100;
/// Largest multiplier accepted (a thousandfold markup). With list prices capped at 10^12 an
/// effective price stays within 10^15, so realistic quantities never overflow an invoice.
pub const MAX_MULTIPLIER: Decimal = Decimal::from_parts(1000, 0, 0, false, 0);
/// Decimal places a multiplied price is rounded to (half-even) when it has more.
pub const MULTIPLIED_PRICE_PLACES: u32 = 12;

/// `multiplier_override_prioritization`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Prioritization {
    #[default]
    LowestMultiplier,
    Explicit,
}

/// One tier of a TIERED override: `multiplier` for the next `size` units (the last may be
/// unbounded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MultiplierTier {
    pub multiplier: Decimal,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Decimal>,
}

/// What an override does to the price.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Adjustment {
    Multiplier(Decimal),
    Overwrite {
        price: Price,
        credit_type: CreditTypeId,
    },
    Tiered(Vec<MultiplierTier>),
}

/// One `override_specifiers` entry: every field set must match.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Specifier {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_tags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing_group_values: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presentation_group_values: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_frequency: Option<Frequency>,
    /// Commit-specific overrides only: the commits and credits (by id) whose draws it prices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_ids: Option<Vec<String>>,
    /// Commit-specific overrides only: the recurring commits whose generated commits it prices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recurring_commit_ids: Option<Vec<String>>,
    /// Commit-specific overrides only: commits, credits, recurring commits or recurring credits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub any_commit_or_credit_ids: Option<Vec<String>>,
}

/// What an override applies to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    Product(String),
    /// Products carrying all of these tags.
    Tags(Vec<String>),
    /// Usage matching any of these.
    Specifiers(Vec<Specifier>),
}

/// A validated contract override, as pricing sees it (built by [`build`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Override {
    pub id: String,
    pub starting_at_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ending_before_ms: Option<i64>,
    pub target: Target,
    /// `None`: an entitlement-only override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adjustment: Option<Adjustment>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entitled: Option<bool>,
    /// `Some(target)`: a commit-specific override (`is_commit_specific`), pricing only usage
    /// drawn from the balances it names, on the list rate (`ListRate`) or on the commit rate
    /// (`CommitRate`, `target: COMMIT_RATE`). See [`draw_price`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_specific: Option<BalanceRateType>,
}

/// The usage a rate prices, as override targeting sees it.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'s> {
    pub product_id: &'s str,
    pub product_tags: &'s [String],
    pub pricing_group_values: &'s BTreeMap<String, String>,
    pub billing_frequency: Option<Frequency>,
}

/// A line's presentation group values (`None` for a line without presentation groups).
pub type Presentation<'p> = Option<&'p BTreeMap<String, Option<String>>>;

/// The rate in effect once overrides are applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    /// The unit price over the pricing bucket's positions.
    pub price: Price,
    pub credit_type: CreditTypeId,
    /// Whether an override changed the price (the list rate's price otherwise).
    pub overridden: bool,
}

fn has_all(tags: &[String], wanted: &[String]) -> bool {
    wanted.iter().all(|t| tags.contains(t))
}

impl Specifier {
    /// Whether the usage matches, presentation values aside.
    pub(crate) fn matches_usage(&self, s: &Subject<'_>) -> bool {
        self.product_id.as_deref().is_none_or(|p| p == s.product_id)
            && self
                .product_tags
                .as_deref()
                .is_none_or(|t| has_all(s.product_tags, t))
            && self.pricing_group_values.as_ref().is_none_or(|want| {
                want.iter()
                    .all(|(k, v)| s.pricing_group_values.get(k) == Some(v))
            })
            && self
                .billing_frequency
                .is_none_or(|f| s.billing_frequency == Some(f))
    }

    /// Whether a commit-specific override's specifier names this balance: no commit field
    /// set names every balance.
    fn names_balance(&self, b: &Balance) -> bool {
        let listed = |ids: &Option<Vec<String>>, id: Option<&str>| {
            ids.as_ref()
                .is_some_and(|ids| id.is_some_and(|id| ids.iter().any(|i| i == id)))
        };
        let recurring = b.recurring_id.as_deref();
        if self.commit_ids.is_none()
            && self.recurring_commit_ids.is_none()
            && self.any_commit_or_credit_ids.is_none()
        {
            return true;
        }
        listed(&self.commit_ids, Some(&b.id))
            || listed(&self.recurring_commit_ids, recurring)
            || listed(&self.any_commit_or_credit_ids, Some(&b.id))
            || listed(&self.any_commit_or_credit_ids, recurring)
    }

    fn names_commits(&self) -> bool {
        self.commit_ids.is_some()
            || self.recurring_commit_ids.is_some()
            || self.any_commit_or_credit_ids.is_some()
    }

    pub(crate) fn matches_line(&self, presentation: Presentation<'_>) -> bool {
        let Some(want) = &self.presentation_group_values else {
            return true;
        };
        let Some(line) = presentation else {
            return false;
        };
        want.iter()
            .all(|(k, v)| line.get(k).is_some_and(|l| l.as_ref() == Some(v)))
    }
}

impl Override {
    pub fn active_at(&self, t_ms: i64) -> bool {
        self.starting_at_ms <= t_ms && self.ending_before_ms.is_none_or(|e| t_ms < e)
    }

    /// Whether it is active over the whole of `span`.
    fn active_over(&self, span: Period) -> bool {
        self.starting_at_ms <= span.start_ms
            && self.ending_before_ms.is_none_or(|e| span.end_ms <= e)
    }

    /// Whether it targets some line of this usage (presentation values aside).
    pub fn may_target(&self, s: &Subject<'_>) -> bool {
        match &self.target {
            Target::Product(p) => p == s.product_id,
            Target::Tags(tags) => has_all(s.product_tags, tags),
            Target::Specifiers(specs) => specs.iter().any(|sp| sp.matches_usage(s)),
        }
    }

    /// Whether it targets the line of this usage with these presentation values.
    pub fn targets(&self, s: &Subject<'_>, presentation: Presentation<'_>) -> bool {
        match &self.target {
            Target::Specifiers(specs) => specs
                .iter()
                .any(|sp| sp.matches_usage(s) && sp.matches_line(presentation)),
            _ => self.may_target(s),
        }
    }

    /// Whether this commit-specific override prices draws from `b` on this line.
    fn prices_draw(&self, s: &Subject<'_>, presentation: Presentation<'_>, b: &Balance) -> bool {
        match &self.target {
            Target::Specifiers(specs) => specs.iter().any(|sp| {
                sp.matches_usage(s) && sp.matches_line(presentation) && sp.names_balance(b)
            }),
            _ => self.may_target(s),
        }
    }

    fn multiplier(&self) -> Option<Decimal> {
        match self.adjustment {
            Some(Adjustment::Multiplier(m)) => Some(m),
            _ => None,
        }
    }
}

/// The override that decides among several (overwrites, entitlements): lowest priority, no
/// priority after every prioritised one, then the one listed last.
fn decisive<'o>(candidates: impl Iterator<Item = (usize, &'o Override)>) -> Option<&'o Override> {
    candidates
        .min_by_key(|(i, o)| (o.priority.is_none(), o.priority, Reverse(*i)))
        .map(|(_, o)| o)
}

/// The contract's overrides that are not commit-specific and apply to this line at `t_ms`,
/// with their positions in the contract's list.
fn ordinary<'t>(
    terms: &'t ContractTerms,
    s: &'t Subject<'_>,
    presentation: Presentation<'t>,
    t_ms: i64,
) -> impl Iterator<Item = (usize, &'t Override)> {
    terms.overrides.iter().enumerate().filter(move |(_, o)| {
        o.commit_specific.is_none() && o.active_at(t_ms) && o.targets(s, presentation)
    })
}

/// The effective rate of `rate` for this usage and line at `t_ms`; `None` when not entitled.
pub fn effective(
    terms: &ContractTerms,
    rate: &Rate,
    s: &Subject<'_>,
    presentation: Presentation<'_>,
    t_ms: i64,
) -> Result<Option<Effective>, RatingError> {
    let applicable: Vec<(usize, &Override)> = ordinary(terms, s, presentation, t_ms).collect();
    let entitled = decisive(
        applicable
            .iter()
            .copied()
            .filter(|(_, o)| o.entitled.is_some()),
    )
    .and_then(|o| o.entitled)
    .unwrap_or(rate.entitled);
    if !entitled {
        return Ok(None);
    }
    let mode = terms.multiplier_override_prioritization;
    apply(mode, &applicable, &rate.price, &rate.credit_type).map(Some)
}

/// `base` (in `credit_type`) with the `applicable` overrides' adjustments: the decisive
/// overwrite if any, else the multiplier layers of `mode`.
fn apply(
    mode: Prioritization,
    applicable: &[(usize, &Override)],
    base: &Price,
    credit_type: &CreditTypeId,
) -> Result<Effective, RatingError> {
    let overwrite = decisive(
        applicable
            .iter()
            .copied()
            .filter(|(_, o)| matches!(o.adjustment, Some(Adjustment::Overwrite { .. }))),
    );
    if let Some(Adjustment::Overwrite { price, credit_type }) =
        overwrite.and_then(|o| o.adjustment.as_ref())
    {
        return Ok(Effective {
            price: price.clone(),
            credit_type: credit_type.clone(),
            overridden: true,
        });
    }
    let layers = layers(mode, applicable);
    let price = match layers.is_empty() {
        true => base.clone(),
        false => compose(base, &layers)?,
    };
    Ok(Effective {
        price,
        credit_type: credit_type.clone(),
        overridden: !layers.is_empty(),
    })
}

/// Whether any of the contract's overrides is commit-specific (rating skips [`draw_price`]
/// otherwise).
pub fn any_commit_specific(terms: &ContractTerms) -> bool {
    terms.overrides.iter().any(|o| o.commit_specific.is_some())
}

/// The price usage of `rate` on this line at `t_ms` is drawn from `balance` at, when a
/// commit-specific override makes it differ from the default (`None`: the line's unit price,
/// or for a `COMMIT_RATE` balance the rate's `commit_rate`, as without such overrides):
/// - a `COMMIT_RATE` balance on a rate with a flat `commit_rate`: the commit rate with the
///   applicable `target: COMMIT_RATE` overrides naming the balance (the decisive overwrite,
///   else the multipliers as the contract prioritises them);
/// - otherwise: the list rate with the contract's ordinary overrides together with the
///   applicable `target: LIST_RATE` overrides naming the balance, by the usual rules.
///
/// Only overrides active over the whole of `span` (the line's time range) count. An overwrite
/// in another credit type than the rate's is left out (a draw is in the line's credit type).
/// Commit-specific overrides are MULTIPLIER or flat OVERWRITE ([`build`]), so the price changes
/// only where the line's own tiers do: rating reads it at the line's first unit.
pub fn draw_price(
    terms: &ContractTerms,
    rate: &Rate,
    s: &Subject<'_>,
    presentation: Presentation<'_>,
    span: Period,
    balance: &Balance,
) -> Result<Option<Price>, RatingError> {
    let commit_rate = match (&rate.commit_rate, balance.rate_type) {
        (Some(Price::Flat(c)), BalanceRateType::CommitRate) => Some(Price::Flat(*c)),
        _ => None,
    };
    let target = match commit_rate {
        Some(_) => BalanceRateType::CommitRate,
        None => BalanceRateType::ListRate,
    };
    let same_unit = |o: &Override| match &o.adjustment {
        Some(Adjustment::Overwrite { credit_type, .. }) => credit_type == &rate.credit_type,
        _ => true,
    };
    let specific: Vec<(usize, &Override)> = terms
        .overrides
        .iter()
        .enumerate()
        .filter(|(_, o)| {
            o.commit_specific == Some(target)
                && o.active_over(span)
                && same_unit(o)
                && o.prices_draw(s, presentation, balance)
        })
        .collect();
    if specific.is_empty() {
        return Ok(None);
    }
    let mode = terms.multiplier_override_prioritization;
    if let Some(commit) = commit_rate {
        return Ok(Some(
            apply(mode, &specific, &commit, &rate.credit_type)?.price,
        ));
    }
    let mut applicable: Vec<(usize, &Override)> = ordinary(terms, s, presentation, span.start_ms)
        .chain(specific)
        .collect();
    applicable.sort_by_key(|(i, _)| *i);
    Ok(Some(
        apply(mode, &applicable, &rate.price, &rate.credit_type)?.price,
    ))
}

/// The multiplier overrides that apply, in the order they take units.
fn layers<'o>(mode: Prioritization, applicable: &[(usize, &'o Override)]) -> Vec<&'o Adjustment> {
    match mode {
        Prioritization::LowestMultiplier => applicable
            .iter()
            .filter_map(|(_, o)| Some((o.multiplier()?, o)))
            .min_by_key(|(m, _)| *m)
            .and_then(|(_, o)| o.adjustment.as_ref())
            .into_iter()
            .collect(),
        Prioritization::Explicit => {
            let mut ranked: Vec<(usize, &Override)> = applicable
                .iter()
                .copied()
                .filter(|(_, o)| {
                    matches!(
                        o.adjustment,
                        Some(Adjustment::Multiplier(_) | Adjustment::Tiered(_))
                    )
                })
                .collect();
            ranked.sort_by_key(|(i, o)| (o.priority.is_none(), o.priority, *i));
            ranked
                .into_iter()
                .filter_map(|(_, o)| o.adjustment.as_ref())
                .collect()
        }
    }
}

/// A piecewise-constant value over a bucket's positions: `(end, value)` pieces in order, the
/// last unbounded (`None`).
type Pieces = Vec<(Option<Decimal>, Decimal)>;

/// Appends the pieces of consecutive sized items (`(size, value)`, the last possibly unbounded)
/// starting at `*at`; `true` once an unbounded one closed the pieces.
fn push_sized(
    items: impl Iterator<Item = (Option<Decimal>, Decimal)>,
    at: &mut Decimal,
    out: &mut Pieces,
) -> Result<bool, RatingError> {
    for (size, value) in items {
        let Some(size) = size else {
            out.push((None, value));
            return Ok(true);
        };
        *at = add_exact(*at, size).ok_or(RatingError::Overflow)?;
        out.push((Some(*at), value));
    }
    Ok(false)
}

fn list_pieces(price: &Price) -> Result<Pieces, RatingError> {
    let tiers = match price {
        Price::Flat(p) | Price::Percentage(p) => return Ok(alloc::vec![(None, *p)]),
        Price::Tiered(tiers) => tiers,
    };
    let mut out = Vec::with_capacity(tiers.len());
    let mut at = Decimal::ZERO;
    if !push_sized(tiers.iter().map(|t| (t.size, t.price)), &mut at, &mut out)? {
        // A validated tiered price ends with an unbounded tier; a snapshot that does not keeps
        // its last price for the rest, as graduated pricing does.
        let last = out.last().map_or(Decimal::ZERO, |(_, p)| *p);
        out.push((None, last));
    }
    Ok(out)
}

/// The multiplier at each position: the layers take units in turn, then the list price (×1).
fn multiplier_pieces(layers: &[&Adjustment]) -> Result<Pieces, RatingError> {
    let mut out = Vec::new();
    let mut at = Decimal::ZERO;
    for layer in layers {
        let closed = match layer {
            Adjustment::Multiplier(m) => {
                push_sized(core::iter::once((None, *m)), &mut at, &mut out)?
            }
            Adjustment::Tiered(tiers) => push_sized(
                tiers.iter().map(|t| (t.size, t.multiplier)),
                &mut at,
                &mut out,
            )?,
            Adjustment::Overwrite { .. } => false,
        };
        if closed {
            return Ok(out);
        }
    }
    out.push((None, Decimal::ONE));
    Ok(out)
}

/// The list price with the multiplier layers applied, as one graduated price (flat when the
/// list is flat and the layers are one unbounded multiplier).
fn compose(list: &Price, layers: &[&Adjustment]) -> Result<Price, RatingError> {
    let prices = list_pieces(list)?;
    let multipliers = multiplier_pieces(layers)?;
    let (mut i, mut j) = (0, 0);
    let mut start = Decimal::ZERO;
    let mut tiers = Vec::with_capacity(prices.len() + multipliers.len());
    // Each step consumes at least one bounded piece; both end unbounded, so this ends.
    while let (Some(&(p_end, price)), Some(&(m_end, multiplier))) =
        (prices.get(i), multipliers.get(j))
    {
        let unit = mul_round_half_even(price, multiplier, MULTIPLIED_PRICE_PLACES)
            .ok_or(RatingError::Overflow)?;
        let end = match (p_end, m_end) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let Some(end) = end else {
            tiers.push(Tier {
                price: unit,
                size: None,
            });
            break;
        };
        if end > start {
            let size = sub_exact(end, start).ok_or(RatingError::Overflow)?;
            tiers.push(Tier {
                price: unit,
                size: Some(size),
            });
            start = end;
        }
        i += usize::from(p_end == Some(end));
        j += usize::from(m_end == Some(end));
    }
    Ok(match (list, tiers.as_slice()) {
        (Price::Flat(_), [only]) if only.size.is_none() => Price::Flat(only.price),
        // A multiplier scales a composite's percentage (it has no units for tiers to split).
        (Price::Percentage(_), [only]) if only.size.is_none() => Price::Percentage(only.price),
        _ => Price::Tiered(tiers),
    })
}

/// The instants inside `span` where an override that may target this usage starts or ends,
/// sorted and without repeats.
fn boundaries(terms: &ContractTerms, s: &Subject<'_>, span: Period) -> Vec<i64> {
    let mut cuts: Vec<i64> = terms
        .overrides
        .iter()
        .filter(|o| o.may_target(s))
        .flat_map(|o| [Some(o.starting_at_ms), o.ending_before_ms])
        .flatten()
        .filter(|&t| span.start_ms < t && t < span.end_ms)
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

/// Pieces of a rate's span, each with the effective rate of each line asked for (`None`: not
/// entitled).
pub type Plan = Vec<(Period, Vec<Option<Effective>>)>;

/// `rate`'s part `span` split where its effective rates change: `(piece, effective rate of each
/// line in `lines`)` in time order, adjacent pieces with identical rates merged.
pub fn plan(
    terms: &ContractTerms,
    rate: &Rate,
    s: &Subject<'_>,
    span: Period,
    lines: &[Presentation<'_>],
) -> Result<Plan, RatingError> {
    let mut out: Plan = Vec::new();
    let cuts = boundaries(terms, s, span);
    let starts = core::iter::once(span.start_ms).chain(cuts.iter().copied());
    let ends = cuts.iter().copied().chain(core::iter::once(span.end_ms));
    let mut last_specific = Vec::new();
    for (start, end) in starts.zip(ends) {
        let rates = lines
            .iter()
            .map(|p| effective(terms, rate, s, *p, start))
            .collect::<Result<Vec<_>, _>>()?;
        // Commit-specific overrides price draws, not the line: where the line's price is flat,
        // a piece where another set of them is active stays its own, so a draw's price is
        // constant over each line. A graduated price is not split (that would restart its
        // tiers and change what undrawn usage costs): there a commit-specific override prices
        // a line's draws only when active over all of the line (`draw_price`).
        let specific: Vec<usize> = terms
            .overrides
            .iter()
            .enumerate()
            .filter(|(_, o)| o.commit_specific.is_some() && o.active_at(start) && o.may_target(s))
            .map(|(i, _)| i)
            .collect();
        let flat = rates
            .iter()
            .flatten()
            .all(|e| matches!(e.price, Price::Flat(_)));
        let same_specific =
            core::mem::replace(&mut last_specific, specific) == last_specific || !flat;
        match out.last_mut() {
            Some((piece, last)) if *last == rates && same_specific => piece.end_ms = end,
            _ => out.push((
                Period {
                    start_ms: start,
                    end_ms: end,
                },
                rates,
            )),
        }
    }
    Ok(out)
}

/// The piece of a rate's schedule segment `span` that holds `t_ms`, and its effective rate for
/// a line without presentation groups (`None`: not entitled then). `None` if `t_ms` is outside.
pub fn at_instant(
    terms: &ContractTerms,
    rate: &Rate,
    s: &Subject<'_>,
    span: Period,
    t_ms: i64,
) -> Result<Option<(Period, Option<Effective>)>, RatingError> {
    Ok(plan(terms, rate, s, span, &[None])?
        .into_iter()
        .find(|(piece, _)| piece.contains(t_ms))
        .map(|(piece, mut rates)| (piece, rates.pop().flatten())))
}

// ---------------------------------------------------------------------------------------------
// Building a validated override from its parts as configured

/// `type` of an override as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverrideType {
    Overwrite,
    Multiplier,
    Tiered,
}

/// An `overwrite_rate` as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverwriteSpec {
    pub rate_type: RateType,
    pub price: Option<Decimal>,
    pub tiers: Option<Vec<Tier>>,
    pub credit_type: CreditTypeId,
}

/// An override's parts as configured, before [`build`] checks them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OverrideSpec {
    pub id: String,
    pub starting_at_ms: i64,
    pub ending_before_ms: Option<i64>,
    pub kind: Option<OverrideType>,
    pub product_id: Option<String>,
    pub applicable_product_tags: Option<Vec<String>>,
    pub override_specifiers: Option<Vec<Specifier>>,
    pub multiplier: Option<Decimal>,
    pub overwrite_rate: Option<OverwriteSpec>,
    pub tiers: Option<Vec<MultiplierTier>>,
    pub priority: Option<Decimal>,
    pub entitled: Option<bool>,
    /// `is_commit_specific`.
    pub is_commit_specific: bool,
    /// `target` (commit-specific overrides only; absent: `LIST_RATE`).
    pub target: Option<BalanceRateType>,
}

/// Why an override was refused. Its text starts with the field it is about (relative to the
/// override), so callers can prefix the override's position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OverrideError {
    EmptyWindow,
    NoTarget,
    ProductAndTags,
    SpecifiersAndProduct,
    EmptySpecifier(usize),
    TooManySpecifiers,
    /// A field the override's type does not take: (field, type).
    FieldNotAllowed(&'static str, &'static str),
    /// A field the override's type requires: (field, type).
    FieldRequired(&'static str, &'static str),
    NothingToDo,
    Multiplier(&'static str),
    TieredNeedsExplicit,
    PriorityRequired(&'static str),
    NonPositivePriority,
    NoTiers,
    TooManyTiers,
    TierSize(usize),
    UnboundedTierNotLast(usize),
    Overwrite(RateError),
    /// A commit-specific field on an override that is not commit-specific.
    NotCommitSpecific(String),
    /// `any_commit_or_credit_ids` with `commit_ids` or `recurring_commit_ids` (specifier index).
    AnyWithCommitIds(usize),
    /// What a commit-specific override cannot be: (field, why).
    CommitSpecific(&'static str, &'static str),
}

impl core::fmt::Display for OverrideError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        use OverrideError as E;
        match self {
            E::EmptyWindow => f.write_str("ending_before: must be after starting_at"),
            E::NoTarget => f.write_str(
                "product_id: an override must target product_id, applicable_product_tags or \
                 override_specifiers",
            ),
            E::ProductAndTags => f.write_str(
                "applicable_product_tags: give product_id or applicable_product_tags, not both",
            ),
            E::SpecifiersAndProduct => f.write_str(
                "override_specifiers: cannot be combined with product_id or \
                 applicable_product_tags",
            ),
            E::EmptySpecifier(i) => write!(
                f,
                "override_specifiers[{i}]: must set product_id, product_tags, \
                 pricing_group_values, presentation_group_values or billing_frequency"
            ),
            E::TooManySpecifiers => write!(
                f,
                "override_specifiers: at most {MAX_SPECIFIERS} are allowed per override"
            ),
            E::FieldNotAllowed(field, kind) => {
                write!(f, "{field}: not allowed on {kind} overrides")
            }
            E::FieldRequired(field, kind) => write!(f, "{field}: required for {kind} overrides"),
            E::NothingToDo => f.write_str("type: an override without a type must set entitled"),
            E::Multiplier(field) => write!(
                f,
                "{field}: multiplier must be between 0 and {MAX_MULTIPLIER}"
            ),
            E::TieredNeedsExplicit => f.write_str(
                "type: TIERED overrides need multiplier_override_prioritization EXPLICIT",
            ),
            E::PriorityRequired(kind) => write!(
                f,
                "priority: required for {kind} overrides under EXPLICIT prioritization"
            ),
            E::NonPositivePriority => f.write_str("priority: must be greater than 0"),
            E::NoTiers => f.write_str("tiers: a TIERED override needs at least one tier"),
            E::TooManyTiers => write!(
                f,
                "tiers: at most {MAX_OVERRIDE_TIERS} tiers are allowed per override"
            ),
            E::TierSize(i) => write!(f, "tiers[{i}].size: must be greater than 0"),
            E::UnboundedTierNotLast(i) => {
                write!(f, "tiers[{i}].size: only the last tier may omit size")
            }
            E::Overwrite(e) => write!(f, "overwrite_rate: {e}"),
            E::NotCommitSpecific(field) => write!(
                f,
                "{field}: only allowed on commit-specific overrides (is_commit_specific: true)"
            ),
            E::AnyWithCommitIds(i) => write!(
                f,
                "override_specifiers[{i}].any_commit_or_credit_ids: give it instead of \
                 commit_ids and recurring_commit_ids, not with them"
            ),
            E::CommitSpecific(field, why) => write!(f, "{field}: {why}"),
        }
    }
}

impl OverrideType {
    pub fn as_str(self) -> &'static str {
        match self {
            OverrideType::Overwrite => "OVERWRITE",
            OverrideType::Multiplier => "MULTIPLIER",
            OverrideType::Tiered => "TIERED",
        }
    }
}

fn check_multiplier(m: Decimal, field: &'static str) -> Result<Decimal, OverrideError> {
    match m >= Decimal::ZERO && m <= MAX_MULTIPLIER {
        true => Ok(m),
        false => Err(OverrideError::Multiplier(field)),
    }
}

fn target_of(spec: &mut OverrideSpec) -> Result<Target, OverrideError> {
    let tags = spec
        .applicable_product_tags
        .take()
        .filter(|t| !t.is_empty());
    let specifiers = spec.override_specifiers.take().filter(|s| !s.is_empty());
    match (spec.product_id.take(), tags, specifiers) {
        (Some(_), Some(_), _) => Err(OverrideError::ProductAndTags),
        (Some(_), None, Some(_)) | (None, Some(_), Some(_)) => {
            Err(OverrideError::SpecifiersAndProduct)
        }
        (Some(p), None, None) => Ok(Target::Product(p)),
        (None, Some(t), None) => Ok(Target::Tags(t)),
        (None, None, Some(specs)) => {
            if specs.len() > MAX_SPECIFIERS {
                return Err(OverrideError::TooManySpecifiers);
            }
            let empty = |s: &Specifier| {
                s.product_id.is_none()
                    && s.product_tags.as_ref().is_none_or(Vec::is_empty)
                    && s.pricing_group_values
                        .as_ref()
                        .is_none_or(BTreeMap::is_empty)
                    && s.presentation_group_values
                        .as_ref()
                        .is_none_or(BTreeMap::is_empty)
                    && s.billing_frequency.is_none()
            };
            if let Some(i) = specs.iter().position(empty) {
                return Err(OverrideError::EmptySpecifier(i));
            }
            Ok(Target::Specifiers(specs))
        }
        (None, None, None) => Err(OverrideError::NoTarget),
    }
}

fn check_tiers(tiers: Vec<MultiplierTier>) -> Result<Vec<MultiplierTier>, OverrideError> {
    if tiers.is_empty() {
        return Err(OverrideError::NoTiers);
    }
    if tiers.len() > MAX_OVERRIDE_TIERS {
        return Err(OverrideError::TooManyTiers);
    }
    let last = tiers.len() - 1;
    for (i, t) in tiers.iter().enumerate() {
        check_multiplier(t.multiplier, "tiers")?;
        match t.size {
            Some(s) if s <= Decimal::ZERO => return Err(OverrideError::TierSize(i)),
            None if i != last => return Err(OverrideError::UnboundedTierNotLast(i)),
            _ => {}
        }
    }
    Ok(tiers)
}

/// The adjustment of a typed override, checking its type's fields are there and no other's.
fn adjustment_of(spec: &mut OverrideSpec, kind: OverrideType) -> Result<Adjustment, OverrideError> {
    let name = kind.as_str();
    let not_allowed = |present: bool, field| match present {
        true => Err(OverrideError::FieldNotAllowed(field, name)),
        false => Ok(()),
    };
    not_allowed(
        kind != OverrideType::Multiplier && spec.multiplier.is_some(),
        "multiplier",
    )?;
    not_allowed(
        kind != OverrideType::Overwrite && spec.overwrite_rate.is_some(),
        "overwrite_rate",
    )?;
    not_allowed(
        kind != OverrideType::Tiered && spec.tiers.is_some(),
        "tiers",
    )?;
    Ok(match kind {
        OverrideType::Multiplier => {
            let m = spec
                .multiplier
                .ok_or(OverrideError::FieldRequired("multiplier", name))?;
            Adjustment::Multiplier(check_multiplier(m, "multiplier")?)
        }
        OverrideType::Overwrite => {
            let o = spec
                .overwrite_rate
                .take()
                .ok_or(OverrideError::FieldRequired("overwrite_rate", name))?;
            if o.rate_type == RateType::Percentage {
                // A composite's percentage is adjusted by a MULTIPLIER; overwriting it (or a
                // unit price with a percentage) is not implemented.
                return Err(OverrideError::Overwrite(RateError::Unsupported(
                    o.rate_type,
                )));
            }
            let price =
                rate_price(o.rate_type, o.price, o.tiers).map_err(OverrideError::Overwrite)?;
            Adjustment::Overwrite {
                price,
                credit_type: o.credit_type,
            }
        }
        OverrideType::Tiered => {
            let tiers = spec
                .tiers
                .take()
                .ok_or(OverrideError::FieldRequired("tiers", name))?;
            Adjustment::Tiered(check_tiers(tiers)?)
        }
    })
}

/// Checks an override as configured under the contract's prioritization and builds it: window,
/// one kind of target, the fields its type takes (and only those), multipliers within
/// `[0, MAX_MULTIPLIER]`, priorities `> 0` and present where required (every TIERED override;
/// MULTIPLIER ones under EXPLICIT), TIERED only under EXPLICIT.
pub fn build(mut spec: OverrideSpec, mode: Prioritization) -> Result<Override, OverrideError> {
    if spec
        .ending_before_ms
        .is_some_and(|e| e <= spec.starting_at_ms)
    {
        return Err(OverrideError::EmptyWindow);
    }
    check_commit_specific(&spec)?;
    let commit_specific = spec
        .is_commit_specific
        .then(|| spec.target.unwrap_or_default());
    let target = target_of(&mut spec)?;
    let adjustment = match spec.kind {
        Some(kind) => Some(adjustment_of(&mut spec, kind)?),
        None => {
            for (present, field) in [
                (spec.multiplier.is_some(), "multiplier"),
                (spec.overwrite_rate.is_some(), "overwrite_rate"),
                (spec.tiers.is_some(), "tiers"),
            ] {
                if present {
                    return Err(OverrideError::FieldRequired("type", field_owner(field)));
                }
            }
            if spec.entitled.is_none() {
                return Err(OverrideError::NothingToDo);
            }
            None
        }
    };
    if spec.priority.is_some_and(|p| p <= Decimal::ZERO) {
        return Err(OverrideError::NonPositivePriority);
    }
    match (spec.kind, mode) {
        (Some(OverrideType::Tiered), Prioritization::LowestMultiplier) => {
            return Err(OverrideError::TieredNeedsExplicit)
        }
        (Some(k @ (OverrideType::Tiered | OverrideType::Multiplier)), Prioritization::Explicit)
            if spec.priority.is_none() =>
        {
            return Err(OverrideError::PriorityRequired(k.as_str()))
        }
        _ => {}
    }
    Ok(Override {
        id: spec.id,
        starting_at_ms: spec.starting_at_ms,
        ending_before_ms: spec.ending_before_ms,
        target,
        adjustment,
        priority: spec.priority,
        entitled: spec.entitled,
        commit_specific,
    })
}

/// The commit-specific rules: `target` and the specifiers' commit fields only on
/// commit-specific overrides; `any_commit_or_credit_ids` instead of the other two; a
/// commit-specific override is a MULTIPLIER or a flat OVERWRITE and sets no entitlement (it
/// prices draws, which need a billed line).
fn check_commit_specific(spec: &OverrideSpec) -> Result<(), OverrideError> {
    let specs = spec.override_specifiers.as_deref().unwrap_or_default();
    for (i, sp) in specs.iter().enumerate() {
        if sp.any_commit_or_credit_ids.is_some()
            && (sp.commit_ids.is_some() || sp.recurring_commit_ids.is_some())
        {
            return Err(OverrideError::AnyWithCommitIds(i));
        }
    }
    if !spec.is_commit_specific {
        if spec.target.is_some() {
            return Err(OverrideError::NotCommitSpecific("target".into()));
        }
        if let Some(i) = specs.iter().position(Specifier::names_commits) {
            return Err(OverrideError::NotCommitSpecific(alloc::format!(
                "override_specifiers[{i}]"
            )));
        }
        return Ok(());
    }
    const KINDS: &str = "a commit-specific override must be a MULTIPLIER or a FLAT OVERWRITE";
    match spec.kind {
        Some(OverrideType::Multiplier) => {}
        Some(OverrideType::Overwrite) => {
            if spec
                .overwrite_rate
                .as_ref()
                .is_some_and(|o| o.rate_type != RateType::Flat)
            {
                return Err(OverrideError::CommitSpecific(
                    "overwrite_rate.rate_type",
                    KINDS,
                ));
            }
        }
        _ => return Err(OverrideError::CommitSpecific("type", KINDS)),
    }
    if spec.entitled.is_some() {
        return Err(OverrideError::CommitSpecific(
            "entitled",
            "not allowed on commit-specific overrides",
        ));
    }
    Ok(())
}

/// The type a type-specific field belongs to (for "type is required" messages).
fn field_owner(field: &str) -> &'static str {
    match field {
        "multiplier" => "MULTIPLIER",
        "overwrite_rate" => "OVERWRITE",
        _ => "TIERED",
    }
}

#[cfg(test)]
#[path = "overrides_tests.rs"]
mod tests;
