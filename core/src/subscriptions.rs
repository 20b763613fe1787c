//! Subscriptions (`metronome-api.md` §3.8): a SUBSCRIPTION product charged per billing period
//! for a quantity (seats, licences, a platform fee of quantity 1) at its rate card's
//! subscription rate for the subscription's `billing_frequency`, with the contract's overrides.
//!
//! The rules (where upstream is silent they are Tally's, documented in `ARCHITECTURE.md`):
//! - Billing periods are the grid of `billing_frequency` steps from the subscription's anchor
//!   (`billing_cycle_config.anchor_date`, else the contract's usage-statement anchor), clipped
//!   to the subscription's `[starting_at, ending_before)` and to the contract's effective end.
//! - A period is charged at the price in effect at its start: the quantity at its start
//!   (`quantity × unit price`), plus, for each quantity increase inside it above the highest
//!   quantity charged so far in that period, the increase. Decreases never credit; they take
//!   effect from the next period (a later increase back up to a level already charged for in
//!   the same period charges nothing).
//! - Proration (`is_prorated`): a period shorter than a full step (a start off the grid, an end
//!   inside a step) and every mid-period increase are charged at `unit price × its part / the
//!   full step` (UTC milliseconds), rounded as `proration.rounding` says, else exact, or
//!   half-even to 12 places when that does not terminate (as recurring commits are prorated);
//!   the line's total is `quantity × that unit price`, exact. Without proration a partial
//!   period and an increase cost the full unit price.
//! - When: `ADVANCE` charges the period's start quantity at its start; an increase at its
//!   instant (`BILL_IMMEDIATELY`) or at the period's end (`BILL_ON_NEXT_COLLECTION_DATE`).
//!   `ARREARS` charges everything at the period's end.
//! - Where: `ON_SCHEDULED_INVOICE` bills each charge on the SCHEDULED invoice at its instant;
//!   `ON_USAGE_INVOICE` (the default) on the usage invoice whose period holds the instant, a
//!   charge at a period's end going on the usage invoice of the period it pays for (the one
//!   holding the instant just before its end).
//!
//! Invariants:
//! - A pure function of the subscription, the rates and the contract: every reader (drafts,
//!   finalization, previews) sees the same charges.
//! - Each charge is billed exactly once: on one SCHEDULED invoice or one usage invoice.
//! - A full period's charge is exactly `quantity × unit price` (proration of a full step is
//!   the full price).

use alloc::string::String;
use alloc::vec::Vec;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::balances::{prorate, ProrationRounding};
use crate::decimal::mul_exact;
use crate::invoice::{InvoiceLine, LineKind};
use crate::money::CreditTypeId;
use crate::overrides::{effective, Subject};
use crate::period::{AnchorDay, Frequency, Period, Schedule, MAX_PERIODS};
use crate::pricing::{ContractSnapshot, PricingSnapshot};
use crate::rating::{price_total, rate_schedule, Price, Rate, RatingError};

/// `collection_schedule`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Collection {
    Advance,
    Arrears,
}

/// `proration.invoice_behavior`: when an ADVANCE subscription's mid-period increase is billed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InvoiceBehavior {
    #[default]
    BillImmediately,
    BillOnNextCollectionDate,
}

/// `billing_cycle_config.invoice_placement`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Placement {
    #[default]
    OnUsageInvoice,
    OnScheduledInvoice,
}

/// The quantity from `starting_at_ms` on (until the next change).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuantityStep {
    pub starting_at_ms: i64,
    pub quantity: Decimal,
}

/// A validated subscription, as pricing sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    pub id: String,
    pub product_id: String,
    /// Its lines' name: the subscription's `name`, or its product's.
    pub name: String,
    /// Its product's tags (overrides may target them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub product_tags: Vec<String>,
    pub billing_frequency: Frequency,
    pub collection: Collection,
    pub is_prorated: bool,
    #[serde(default)]
    pub invoice_behavior: InvoiceBehavior,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rounding: Option<ProrationRounding>,
    pub starting_at_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ending_before_ms: Option<i64>,
    /// The billing grid's anchor.
    pub anchor_ms: i64,
    #[serde(default)]
    pub placement: Placement,
    /// Sorted by `starting_at_ms`, the first at `starting_at_ms`; a later entry at the same
    /// instant replaces an earlier one.
    pub quantities: Vec<QuantityStep>,
}

/// One charge of a subscription: `quantity` over `span`, billed at `billed_at_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Charge {
    /// The SCHEDULED invoice instant (`ON_SCHEDULED_INVOICE`).
    pub billed_at_ms: i64,
    /// The instant whose usage period takes the charge (`ON_USAGE_INVOICE`).
    pub usage_instant_ms: i64,
    /// The part of the billing period it pays for.
    pub span: Period,
    /// The billing period's start: the price is the one in effect then.
    pub priced_at_ms: i64,
    pub quantity: Decimal,
    /// `(part, full step)` when prorated.
    pub fraction: Option<(i64, i64)>,
}

impl Subscription {
    /// The quantity in effect at `t_ms` (zero before the first step).
    pub fn quantity_at(&self, t_ms: i64) -> Decimal {
        self.quantities
            .iter()
            .take_while(|q| q.starting_at_ms <= t_ms)
            .last()
            .map_or(Decimal::ZERO, |q| q.quantity)
    }

    /// Where the subscription stops: its own end or the contract's effective end.
    pub fn end_ms(&self, contract: &ContractSnapshot) -> Option<i64> {
        match (self.ending_before_ms, contract.effective_end_ms()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn grid(&self) -> Schedule {
        Schedule {
            frequency: self.billing_frequency,
            day: AnchorDay::CustomDate,
            billing_anchor_ms: Some(self.anchor_ms),
        }
    }

    /// The billing periods that overlap `[from_ms, to_ms]` (closed: a period ending at
    /// `from_ms` is included, its end-of-period charges are at that instant), in order.
    pub fn billing_periods(
        &self,
        contract: &ContractSnapshot,
        from_ms: i64,
        to_ms: i64,
    ) -> Vec<Period> {
        let grid = self.grid();
        let end = self.end_ms(contract);
        let mut out = Vec::new();
        let mut t = from_ms.saturating_sub(1).max(self.starting_at_ms);
        while out.len() < MAX_PERIODS && t <= to_ms {
            let Some(p) = grid.period_containing(self.starting_at_ms, end, t) else {
                break;
            };
            out.push(p);
            t = p.end_ms;
        }
        out
    }

    /// The charges of the billing periods overlapping `[from_ms, to_ms]`.
    pub fn charges(&self, contract: &ContractSnapshot, from_ms: i64, to_ms: i64) -> Vec<Charge> {
        let grid = self.grid();
        let mut out = Vec::new();
        for period in self.billing_periods(contract, from_ms, to_ms) {
            let Some(whole) = grid.full_period_containing(period.start_ms) else {
                continue;
            };
            let full = whole.end_ms - whole.start_ms;
            let part = |from: i64| {
                let len = period.end_ms - from;
                (self.is_prorated && len < full).then_some((len, full))
            };
            let at_end = (period.end_ms, period.end_ms - 1);
            let mut charged = self.quantity_at(period.start_ms);
            let (billed_at_ms, usage_instant_ms) = match self.collection {
                Collection::Advance => (period.start_ms, period.start_ms),
                Collection::Arrears => at_end,
            };
            out.push(Charge {
                billed_at_ms,
                usage_instant_ms,
                span: period,
                priced_at_ms: period.start_ms,
                quantity: charged,
                fraction: part(period.start_ms),
            });
            let inside = self
                .quantities
                .iter()
                .filter(|q| period.start_ms < q.starting_at_ms && q.starting_at_ms < period.end_ms);
            for step in inside {
                let t = step.starting_at_ms;
                // Steps at one instant: only the last counts.
                let now = self.quantity_at(t);
                if now <= charged {
                    continue;
                }
                let (billed_at_ms, usage_instant_ms) =
                    match (self.collection, self.invoice_behavior) {
                        (Collection::Advance, InvoiceBehavior::BillImmediately) => (t, t),
                        _ => at_end,
                    };
                out.push(Charge {
                    billed_at_ms,
                    usage_instant_ms,
                    span: Period {
                        start_ms: t,
                        end_ms: period.end_ms,
                    },
                    priced_at_ms: period.start_ms,
                    quantity: now - charged,
                    fraction: part(t),
                });
                charged = now;
            }
        }
        out.retain(|c| c.quantity > Decimal::ZERO);
        out
    }
}

/// The subscription rate of `sub` in effect at `t_ms` with the contract's overrides: its unit
/// price (a flat price, or the price of one unit of a graduated one) and credit type; `None`
/// when the card has no such rate then or the contract is not entitled to it.
pub fn unit_price(
    snapshot: &PricingSnapshot,
    sub: &Subscription,
    t_ms: i64,
) -> Result<Option<(Decimal, CreditTypeId)>, RatingError> {
    let rates: Vec<Rate> = snapshot
        .rates
        .iter()
        .filter(|r| {
            r.product_id == sub.product_id && r.billing_frequency == Some(sub.billing_frequency)
        })
        .cloned()
        .collect();
    let none = alloc::collections::BTreeMap::new();
    let Some((_, rate)) = rate_schedule(&rates, &sub.product_id, &none)
        .into_iter()
        .find(|(span, _)| span.contains(t_ms))
    else {
        return Ok(None);
    };
    let subject = Subject {
        product_id: &sub.product_id,
        product_tags: &sub.product_tags,
        pricing_group_values: &none,
        billing_frequency: Some(sub.billing_frequency),
    };
    let Some(eff) = effective(&snapshot.contract.terms, rate, &subject, None, t_ms)? else {
        return Ok(None);
    };
    let price = match eff.price {
        Price::Flat(p) => p,
        other => price_total(&other, Decimal::ONE)?,
    };
    Ok(Some((price, eff.credit_type)))
}

/// The `subscription` line of one charge, or `None` when it has no price.
fn line(
    snapshot: &PricingSnapshot,
    sub: &Subscription,
    charge: &Charge,
) -> Result<Option<InvoiceLine>, RatingError> {
    let Some((price, credit_type)) = unit_price(snapshot, sub, charge.priced_at_ms)? else {
        return Ok(None);
    };
    let unit = prorate(price, charge.fraction, sub.rounding)?;
    let total = mul_exact(charge.quantity, unit).ok_or(RatingError::Overflow)?;
    let amounts = (charge.quantity, unit, total);
    Ok(Some(InvoiceLine {
        subscription_id: Some(sub.id.clone()),
        is_prorated: charge.fraction.is_some(),
        ..InvoiceLine::plain(
            LineKind::Subscription,
            &sub.product_id,
            &sub.name,
            &credit_type,
            amounts,
            charge.span,
        )
    }))
}

/// The `subscription` lines of the usage invoice over `period` (the billed part): the charges
/// of `ON_USAGE_INVOICE` subscriptions whose usage instant is in it, in subscription then
/// time order.
pub fn usage_lines(
    snapshot: &PricingSnapshot,
    period: Period,
) -> Result<Vec<InvoiceLine>, RatingError> {
    let mut out = Vec::new();
    if period.start_ms >= period.end_ms {
        return Ok(out);
    }
    let contract = &snapshot.contract;
    for sub in contract
        .terms
        .subscriptions
        .iter()
        .filter(|s| s.placement == Placement::OnUsageInvoice)
    {
        for c in sub.charges(contract, period.start_ms, period.end_ms) {
            if period.contains(c.usage_instant_ms) {
                out.extend(line(snapshot, sub, &c)?);
            }
        }
    }
    Ok(out)
}

/// The `subscription` lines of the SCHEDULED invoice at `at_ms`: the charges of
/// `ON_SCHEDULED_INVOICE` subscriptions billed then.
pub fn scheduled_lines(
    snapshot: &PricingSnapshot,
    at_ms: i64,
) -> Result<Vec<InvoiceLine>, RatingError> {
    let mut out = Vec::new();
    let contract = &snapshot.contract;
    for sub in contract
        .terms
        .subscriptions
        .iter()
        .filter(|s| s.placement == Placement::OnScheduledInvoice)
    {
        for c in sub.charges(contract, at_ms, at_ms) {
            if c.billed_at_ms == at_ms {
                out.extend(line(snapshot, sub, &c)?);
            }
        }
    }
    Ok(out)
}

/// The instants in `[from_ms, until_ms]` at which `ON_SCHEDULED_INVOICE` subscriptions bill a
/// charge (unsorted, with repeats). Prices aside: a charge without a rate still has its
/// (then empty) invoice instant left out only by its quantity.
pub fn scheduled_instants(
    contract: &ContractSnapshot,
    subs: &[Subscription],
    from_ms: i64,
    until_ms: i64,
) -> Vec<i64> {
    subs.iter()
        .filter(|s| s.placement == Placement::OnScheduledInvoice)
        .flat_map(|s| s.charges(contract, from_ms, until_ms))
        .map(|c| c.billed_at_ms)
        .filter(|t| (from_ms..=until_ms).contains(t))
        .collect()
}

#[cfg(test)]
#[path = "subscriptions_tests.rs"]
mod subscriptions_tests;
