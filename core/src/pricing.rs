//! The pricing engine's one entry point: [`price_invoice`] turns a [`PricingSnapshot`] (everything
//! a contract prices with), the period's usage and the period into a typed [`Invoice`].
//!
//! It runs as visible stages, each its own function:
//! 1. resolve the effective rate at each instant: `rating::rate_schedule` (the rate card's
//!    schedule) with the contract's overrides applied on top (`overrides::plan`);
//! 2. price quantities: `rating::price_usage`;
//! 3. apply balances: [`apply_balances`] (`balances`): usage lines split into the parts the
//!    contract's commits and credits cover, each followed by its applied line, and the
//!    true-ups of postpaid commits due in the period; the invoice's ledger deductions;
//! 4. totals: [`totals`], per credit type, after the `cpu_conversion` lines that turn what is
//!    still owed in custom pricing units into the fiat credit type (`conversion`).
//!
//! [`price_scheduled`] prices a SCHEDULED invoice (commit purchases at one instant, stage 4
//! only); [`scheduled_instants`] lists the instants that have one.
//!
//! Invariants:
//! - A pure function of its inputs: central (drafts, finalization), the browser and the tests
//!   compute the same invoice to the last digit.
//! - `subtotal` is the per-credit-type sum of every line but the applied ones; `adjustments`
//!   the sum of the applied lines of prepaid commits and credits (never positive); postpaid
//!   applied lines count in neither; `total = subtotal + adjustments`; [`totals`] asserts it.
//! - Drawing down never changes what usage is worth at list price (a covered part and the
//!   rest sum to the line's total) unless a `COMMIT_RATE` balance prices a part at its commit
//!   rate; a balance only covers positive charges, so with non-negative lines `total >= 0`.
//! - A contract bills nothing at or after its effective end
//!   ([`ContractSnapshot::effective_end_ms`]: the earlier of `ending_before` and the hour of its
//!   archiving): its periods stop there and [`price_invoice`] rates a period only up to it.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

pub use crate::balances::{apply_balances, Drawdown};
use crate::balances::{Balance, BalanceKind, BalanceState};
use crate::charges::charge_lines;
pub use crate::charges::ScheduledCharge;
use crate::composite::{price_composites, CompositeProduct};
use crate::conversion::conversion_lines;
pub use crate::conversion::CreditTypeConversion;
use crate::decimal::add_exact;
use crate::invoice::{Invoice, InvoiceKind, InvoiceLine, LineKind};
use crate::metric::MetricDef;
use crate::money::{CreditType, CreditTypeId, MoneyError, Totals};
use crate::overrides::{Override, Prioritization};
use crate::period::{Period, Schedule, MAX_PERIODS};
use crate::rating::{price_usage, Rate, RatedProduct, RatingError, RatingInput, UsageRow};
pub use crate::subscriptions::Subscription;
use crate::time::hour_floor;

/// The contract's terms beyond its rate card: its overrides (applied in stage 1, see
/// `overrides`) and how multiplier overrides are prioritised; its scheduled charges and
/// whether they (and commit purchases) are consolidated onto usage invoices (`charges`).
/// Commits and credits come in the snapshot's `balances` (stage 3); its subscriptions are
/// charged per billing period (`subscriptions`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ContractTerms {
    /// In the order the contract lists them (the order breaks ties, see `overrides`).
    #[serde(default)]
    pub overrides: Vec<Override>,
    #[serde(default)]
    pub multiplier_override_prioritization: Prioritization,
    /// In the order the contract lists them (archived ones left out).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scheduled_charges: Vec<ScheduledCharge>,
    /// `scheduled_charges_on_usage_invoices: ALL`: items (of charges and of commit purchases)
    /// at the end of an invoiced usage period are billed on that period's usage invoice.
    #[serde(default, skip_serializing_if = "core::ops::Not::not")]
    pub consolidate_scheduled: bool,
    /// Its subscriptions, in the order the contract lists them (`subscriptions`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subscriptions: Vec<Subscription>,
}

impl ContractTerms {
    /// No terms: the rate card alone.
    pub const NONE: ContractTerms = ContractTerms {
        overrides: Vec::new(),
        multiplier_override_prioritization: Prioritization::LowestMultiplier,
        scheduled_charges: Vec::new(),
        consolidate_scheduled: false,
        subscriptions: Vec::new(),
    };
}

/// What pricing needs to know about the contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContractSnapshot {
    pub id: String,
    pub starting_at_ms: i64,
    pub ending_before_ms: Option<i64>,
    pub usage_statement_schedule: Schedule,
    /// Periods that end at or before this instant are not invoiced.
    pub invoice_generation_starting_at_ms: Option<i64>,
    /// When the contract was archived (itself, or with its customer): nothing after it is billed.
    #[serde(default)]
    pub archived_at_ms: Option<i64>,
    #[serde(default)]
    pub terms: ContractTerms,
}

impl ContractSnapshot {
    /// The instant the contract stops billing: the earlier of `ending_before` and its archive
    /// time. Usage is kept per UTC hour, so an archive time is taken at the start of its hour:
    /// no usage at or after the archive instant is ever billed (usage earlier in that same hour
    /// is not either), and periods stay hour-aligned. `None`: open-ended.
    pub fn effective_end_ms(&self) -> Option<i64> {
        let archived = self.archived_at_ms.map(hour_floor);
        match (self.ending_before_ms, archived) {
            (Some(end), Some(archived)) => Some(end.min(archived)),
            (end, archived) => end.or(archived),
        }
    }

    /// The part of `period` the contract bills: cut at the effective end (a period starting at
    /// or after it keeps its start and bills nothing, `[start, start)`).
    pub fn billed_part(&self, period: Period) -> Period {
        match self.effective_end_ms() {
            Some(end) if end < period.end_ms => Period {
                start_ms: period.start_ms,
                end_ms: end.max(period.start_ms),
            },
            _ => period,
        }
    }

    /// The periods that exist for this contract at `now_ms`: those begun by then and before its
    /// effective end, not before `invoice_generation_starting_at`, the most recent
    /// [`MAX_PERIODS`] of them, so a contract of any age has its current period at bounded cost.
    /// The last one is cut at the effective end.
    pub fn invoiced_periods(&self, now_ms: i64) -> Vec<Period> {
        let mut periods = self.usage_statement_schedule.recent_periods(
            self.starting_at_ms,
            self.effective_end_ms(),
            now_ms.saturating_add(1),
            MAX_PERIODS,
        );
        if let Some(from) = self.invoice_generation_starting_at_ms {
            periods.retain(|p| p.end_ms > from);
        }
        periods
    }

    /// When the contract consolidates scheduled items, the invoiced usage period whose billed
    /// part ends at `at_ms` (the one usage invoice items at that instant go on); else `None`.
    pub fn usage_period_ending_at(&self, at_ms: i64) -> Option<Period> {
        if !self.terms.consolidate_scheduled {
            return None;
        }
        let end = self.effective_end_ms();
        let p = self.usage_statement_schedule.period_containing(
            self.starting_at_ms,
            end,
            at_ms.checked_sub(1)?,
        )?;
        let billed = self.billed_part(p);
        let invoiced = self
            .invoice_generation_starting_at_ms
            .is_none_or(|from| billed.end_ms > from);
        (billed.end_ms == at_ms && billed.start_ms < billed.end_ms && invoiced).then_some(billed)
    }
}

/// Everything a contract prices with, as one serializable value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PricingSnapshot {
    /// Every credit type amounts may be in.
    pub credit_types: Vec<CreditType>,
    /// The credit type the invoice is stated in (the rate card's fiat credit type).
    pub fiat_credit_type: CreditTypeId,
    pub metrics: BTreeMap<String, MetricDef>,
    /// Usage products with their rating versions.
    pub products: Vec<RatedProduct>,
    /// COMPOSITE products on the rate card (`composite`), priced after the usage lines.
    #[serde(default)]
    pub composites: Vec<CompositeProduct>,
    /// The rate card's product order (`product_order::effective`): the invoice's lines come in
    /// this order of their products, then as rating produced them within one product. Lines of
    /// a product it does not list follow, in the order of `products`.
    #[serde(default)]
    pub product_order: Vec<String>,
    /// The rate card's rates in the order they were added.
    pub rates: Vec<Rate>,
    pub contract: ContractSnapshot,
    /// The commits and credits the contract's usage may draw on, with their prior ledger.
    #[serde(default)]
    pub balances: BalanceState,
    /// The rate card's custom pricing units and what one unit of each is worth in
    /// `fiat_credit_type` (`conversion`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credit_type_conversions: Vec<CreditTypeConversion>,
}

impl PricingSnapshot {
    /// Every product that has lines, usage and composite, with its tags at the period's end.
    pub fn product_tags(&self, period: Period) -> impl Iterator<Item = (&str, &[String])> {
        let usage = self
            .products
            .iter()
            .map(move |p| (p.product_id.as_str(), p.tags_at_end(period)));
        let composite = self
            .composites
            .iter()
            .map(move |c| (c.product_id.as_str(), c.tags_at_end(period)));
        usage.chain(composite)
    }

    /// The metrics whose pricing needs a baseline before the period: LATEST bills the change
    /// from the last value before it, so for these the usage passed to [`price_invoice`] must
    /// also hold, per customer reference and grain, the most recent hourly row before the period.
    pub fn baseline_metric_ids(&self) -> Vec<String> {
        self.metrics
            .values()
            .filter(|m| m.aggregation == crate::metric::Aggregation::Latest)
            .map(|m| m.id.clone())
            .collect()
    }

    /// The credit type with this id, if the snapshot has it.
    pub fn credit_type(&self, id: &CreditTypeId) -> Option<&CreditType> {
        self.credit_types.iter().find(|c| &c.id == id)
    }
}

impl From<MoneyError> for RatingError {
    fn from(e: MoneyError) -> Self {
        match e {
            MoneyError::Overflow => RatingError::Overflow,
            MoneyError::CreditTypeMismatch => RatingError::MixedCreditTypes,
        }
    }
}

/// Prices one period of the snapshot's contract, up to the contract's effective end (the
/// invoice's period is the billed part). `usage` holds the period's hourly rows and, for LATEST
/// metrics, the baseline rows before it (see `rating`).
pub fn price_invoice(
    snapshot: &PricingSnapshot,
    usage: &[UsageRow],
    period: Period,
) -> Result<Invoice, RatingError> {
    let period = snapshot.contract.billed_part(period);
    let balances: Vec<Balance> = snapshot
        .balances
        .balances
        .iter()
        .filter(|b| b.applies_to(&snapshot.contract.id))
        .cloned()
        .collect();
    let input = RatingInput {
        period,
        products: &snapshot.products,
        metrics: &snapshot.metrics,
        rates: &snapshot.rates,
        terms: &snapshot.contract.terms,
        usage,
        balances: &balances,
    };
    let mut lines = price_usage(&input)?;
    let composites = price_composites(snapshot, period, &lines)?;
    lines.extend(composites);
    lines.extend(crate::subscriptions::usage_lines(snapshot, period)?);
    order_lines(&mut lines, &snapshot.product_order);
    let mut drawn = apply_balances(snapshot, period, lines)?;
    let consolidated = snapshot.contract.usage_period_ending_at(period.end_ms);
    if consolidated.is_some_and(|p| p.start_ms == period.start_ms) {
        drawn.lines.extend(scheduled_lines(snapshot, period.end_ms));
    }
    invoice(snapshot, InvoiceKind::Usage, period, drawn)
}

/// The lines of what is scheduled at `at_ms`: commit purchases, then scheduled charges.
fn scheduled_lines(snapshot: &PricingSnapshot, at_ms: i64) -> Vec<InvoiceLine> {
    let mut lines = crate::balances::purchase_lines(snapshot, at_ms);
    lines.extend(charge_lines(
        &snapshot.contract.terms.scheduled_charges,
        at_ms,
    ));
    lines
}

/// The SCHEDULED invoice of the snapshot's contract at `at_ms`: the `commit_purchase` lines of
/// its PREPAID commits' `invoice_schedule` items at that instant (`balances::purchase_lines`)
/// and the `scheduled` lines of its scheduled charges' items (`charges`), over the period
/// `[at, at]`. Empty when nothing is scheduled then, or when what is goes on a usage invoice.
pub fn price_scheduled(snapshot: &PricingSnapshot, at_ms: i64) -> Result<Invoice, RatingError> {
    let period = Period {
        start_ms: at_ms,
        end_ms: at_ms,
    };
    let mut lines = match snapshot.contract.usage_period_ending_at(at_ms) {
        Some(_) => Vec::new(),
        None => scheduled_lines(snapshot, at_ms),
    };
    lines.extend(crate::subscriptions::scheduled_lines(snapshot, at_ms)?);
    let drawn = Drawdown {
        lines,
        deductions: Vec::new(),
    };
    invoice(snapshot, InvoiceKind::Scheduled, period, drawn)
}

/// The instants up to `until_ms` the contract has a SCHEDULED invoice at (sorted, without
/// repeats): those of its PREPAID commits' `invoice_schedule` items and of its scheduled
/// charges' items, but those consolidated onto a usage invoice, and those its
/// `ON_SCHEDULED_INVOICE` subscriptions bill at.
pub fn scheduled_instants(snapshot: &PricingSnapshot, until_ms: i64) -> Vec<i64> {
    let purchases = crate::balances::purchases(snapshot).map(|(_, i)| i.timestamp_ms);
    let contract = &snapshot.contract;
    let subs = crate::subscriptions::scheduled_instants(
        contract,
        &contract.terms.subscriptions,
        contract.starting_at_ms,
        until_ms,
    );
    let mut at =
        crate::charges::scheduled_instants(contract, &contract.terms.scheduled_charges, purchases);
    at.retain(|t| *t <= until_ms);
    at.extend(subs);
    at.sort_unstable();
    at.dedup();
    at
}

/// The conversion of custom pricing units, stage 4 and the invoice around the lines.
fn invoice(
    snapshot: &PricingSnapshot,
    kind: InvoiceKind,
    period: Period,
    mut drawn: Drawdown,
) -> Result<Invoice, RatingError> {
    let converted = conversion_lines(snapshot, period, &drawn.lines)?;
    drawn.lines.extend(converted);
    let sums = totals(&drawn.lines)?;
    Ok(Invoice {
        kind,
        contract_id: snapshot.contract.id.clone(),
        period,
        credit_type: snapshot.fiat_credit_type.clone(),
        lines: drawn.lines,
        subtotal: sums.subtotal,
        adjustments: sums.adjustments,
        total: sums.total,
        deductions: drawn.deductions,
    })
}

/// Puts lines in the card's product order. Stable, so a product's lines keep the order rating
/// gave them (segment, pricing combination, rate, presentation group, tier), and lines of
/// unlisted products keep theirs after the listed ones. Order never changes an amount.
fn order_lines(lines: &mut [InvoiceLine], order: &[String]) {
    let rank: BTreeMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(i, p)| (p.as_str(), i))
        .collect();
    lines.sort_by_key(|l| {
        rank.get(l.product_id.as_str())
            .copied()
            .unwrap_or(order.len())
    });
}

/// An invoice's sums, per credit type (see [`totals`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Sums {
    pub subtotal: Totals,
    pub adjustments: Totals,
    pub total: Totals,
}

/// Stage 4: the subtotal is the sum of every line but the applied ones (usage, covered parts
/// included, purchases, true-ups); the adjustments are the sum of the applied lines of prepaid
/// commits and credits (negative); postpaid applied lines count in neither (the commit is paid
/// by its true-up); `total = subtotal + adjustments`.
pub fn totals(lines: &[InvoiceLine]) -> Result<Sums, RatingError> {
    let mut sums = Sums::default();
    for line in lines {
        if line.unit_price.credit_type != line.total.credit_type {
            return Err(RatingError::MixedCreditTypes);
        }
        let postpaid = line
            .balance
            .as_ref()
            .is_some_and(|b| b.kind == BalanceKind::PostpaidCommit);
        match line.kind {
            LineKind::AppliedCommit | LineKind::AppliedCredit if postpaid => {}
            LineKind::AppliedCommit | LineKind::AppliedCredit => {
                sums.adjustments.add(&line.total)?
            }
            _ => sums.subtotal.add(&line.total)?,
        }
    }
    sums.total = sums.subtotal.checked_add(&sums.adjustments)?;
    let (subtotal, adjustments) = (&sums.subtotal, &sums.adjustments);
    debug_assert!(sums.total.amounts().all(|a| {
        let ct = &a.credit_type;
        add_exact(subtotal.get(ct), adjustments.get(ct)) == Some(a.value)
    }));
    Ok(sums)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::invoice::LineKind;
    use crate::money::Amount;
    use alloc::vec;
    use rust_decimal::Decimal;

    fn usd() -> CreditTypeId {
        CreditTypeId("usd".into())
    }

    fn line(total: i64, credit_type: CreditTypeId) -> InvoiceLine {
        InvoiceLine {
            kind: LineKind::Usage,
            product_id: "p".into(),
            name: "P".into(),
            quantity: Decimal::from(total),
            unit_price: Amount::new(credit_type.clone(), Decimal::ONE),
            total: Amount::new(credit_type, Decimal::from(total)),
            segment: Period {
                start_ms: 0,
                end_ms: 1,
            },
            pricing_group_values: None,
            presentation_group_values: None,
            tier: None,
            balance: None,
            commit_unit_price: None,
            draw_prices: Vec::new(),
            scheduled_charge_id: None,
            subscription_id: None,
            is_prorated: false,
        }
    }

    /// An empty snapshot: contract "c" from 0, monthly, USD, no products or balances.
    pub(crate) fn snapshot() -> PricingSnapshot {
        PricingSnapshot {
            credit_types: vec![CreditType {
                id: usd(),
                name: "USD".into(),
            }],
            fiat_credit_type: usd(),
            metrics: BTreeMap::new(),
            products: vec![],
            composites: vec![],
            product_order: vec![],
            rates: vec![],
            balances: BalanceState::default(),
            credit_type_conversions: vec![],
            contract: ContractSnapshot {
                id: "c".into(),
                starting_at_ms: 0,
                ending_before_ms: None,
                usage_statement_schedule: Schedule {
                    frequency: crate::period::Frequency::Monthly,
                    day: crate::period::AnchorDay::FirstOfMonth,
                    billing_anchor_ms: None,
                },
                invoice_generation_starting_at_ms: None,
                archived_at_ms: None,
                terms: ContractTerms::default(),
            },
        }
    }

    #[test]
    fn invoiced_periods_are_recent_and_respect_invoice_generation_start() {
        let mut c = snapshot().contract;
        let day = crate::time::DAY_MS;
        c.starting_at_ms = crate::time::parse_rfc3339_ms("2000-01-03T00:00:00Z").unwrap();
        c.usage_statement_schedule.frequency = crate::period::Frequency::Weekly;
        c.usage_statement_schedule.day = crate::period::AnchorDay::ContractStart;
        let now = crate::time::parse_rfc3339_ms("2026-12-01T10:00:00Z").unwrap();
        let periods = c.invoiced_periods(now);
        assert_eq!(periods.len(), MAX_PERIODS);
        assert!(periods[MAX_PERIODS - 1].contains(now));
        c.invoice_generation_starting_at_ms = Some(now - 10 * day);
        let periods = c.invoiced_periods(now);
        // Weeks from Mondays: 11-16 (holding 11-21), 11-23, 11-30 (holding today).
        assert_eq!(periods.len(), 3);
        assert!(periods[0].contains(now - 10 * day) && periods[2].contains(now));
    }

    #[test]
    fn archiving_ends_the_contract_at_the_start_of_the_archive_hour() {
        let t = |s: &str| crate::time::parse_rfc3339_ms(s).unwrap();
        let mut c = snapshot().contract;
        c.starting_at_ms = t("2024-09-15T00:00:00Z");
        assert_eq!(c.effective_end_ms(), None);
        c.archived_at_ms = Some(t("2024-10-20T10:30:00.250Z"));
        assert_eq!(c.effective_end_ms(), Some(t("2024-10-20T10:00:00Z")));
        // An earlier ending_before wins; a later one does not.
        c.ending_before_ms = Some(t("2024-10-10T00:00:00Z"));
        assert_eq!(c.effective_end_ms(), Some(t("2024-10-10T00:00:00Z")));
        c.ending_before_ms = Some(t("2025-01-01T00:00:00Z"));
        assert_eq!(c.effective_end_ms(), Some(t("2024-10-20T10:00:00Z")));
        // Months later the periods still stop at the archive hour: the last one is cut there.
        let periods = c.invoiced_periods(t("2025-03-01T00:00:00Z"));
        let spans: Vec<(i64, i64)> = periods.iter().map(|p| (p.start_ms, p.end_ms)).collect();
        assert_eq!(
            spans,
            vec![
                (t("2024-09-15T00:00:00Z"), t("2024-10-01T00:00:00Z")),
                (t("2024-10-01T00:00:00Z"), t("2024-10-20T10:00:00Z")),
            ]
        );
        let october = Period {
            start_ms: t("2024-10-01T00:00:00Z"),
            end_ms: t("2024-11-01T00:00:00Z"),
        };
        assert_eq!(c.billed_part(october), periods[1]);
        // Archived in the first hour of a period: that period bills nothing.
        c.archived_at_ms = Some(t("2024-10-01T00:59:59Z"));
        let late = c.billed_part(october);
        assert_eq!(
            (late.start_ms, late.end_ms),
            (october.start_ms, october.start_ms)
        );
        assert_eq!(c.invoiced_periods(t("2025-03-01T00:00:00Z")).len(), 1);
        // Archived before the contract starts: no period at all.
        c.archived_at_ms = Some(t("2024-09-01T00:00:00Z"));
        assert!(c.invoiced_periods(t("2025-03-01T00:00:00Z")).is_empty());
    }

    #[test]
    fn no_balances_leave_the_lines_as_they_are() {
        let lines = vec![line(3, usd()), line(0, usd())];
        let period = Period {
            start_ms: 0,
            end_ms: 1,
        };
        let drawn = apply_balances(&snapshot(), period, lines.clone()).unwrap();
        assert_eq!(drawn.lines, lines);
        assert!(drawn.deductions.is_empty());
    }

    #[test]
    fn totals_are_per_credit_type() {
        let credits = CreditTypeId("credits".into());
        let mut applied = line(-2, usd());
        applied.kind = LineKind::AppliedCredit;
        let lines = vec![
            line(3, usd()),
            line(4, credits.clone()),
            line(5, usd()),
            applied,
        ];
        let sums = totals(&lines).unwrap();
        assert_eq!(sums.subtotal.get(&usd()), Decimal::from(8));
        assert_eq!(sums.subtotal.get(&credits), Decimal::from(4));
        assert_eq!(sums.adjustments.get(&usd()), Decimal::from(-2));
        assert_eq!(sums.total.get(&usd()), Decimal::from(6));
        assert_eq!(sums.total.get(&credits), Decimal::from(4));
    }

    #[test]
    fn a_line_mixing_credit_types_is_refused() {
        let mut bad = line(3, usd());
        bad.unit_price.credit_type = CreditTypeId("credits".into());
        assert_eq!(totals(&[bad]), Err(RatingError::MixedCreditTypes));
    }

    #[test]
    fn an_empty_snapshot_prices_to_zero_and_round_trips_through_serde() {
        let snap = snapshot();
        let period = Period {
            start_ms: 0,
            end_ms: 10,
        };
        let inv = price_invoice(&snap, &[], period).unwrap();
        assert!(inv.lines.is_empty());
        assert_eq!(inv.total.get(&usd()), Decimal::ZERO);
        assert_eq!((inv.contract_id.as_str(), inv.period), ("c", period));
        let text = serde_json::to_string(&snap).unwrap();
        let back: PricingSnapshot = serde_json::from_str(&text).unwrap();
        assert_eq!(back, snap);
        assert_eq!(
            snap.credit_type(&usd()).map(|c| c.name.as_str()),
            Some("USD")
        );
    }
}
