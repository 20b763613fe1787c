//! Commits and credits (`metronome-api.md` §3.7): the balances a contract's usage draws down.
//! Stage 3 of pricing (`pricing::price_invoice`): priced usage lines in, lines split into the
//! parts each balance covers (with an applied line after each covered part) and what the invoice
//! draws from each segment out.
//!
//! This module holds the types every layer shares (central builds them from its documents and
//! writes [`Deduction`]s to its ledger; the browser preview and the tests build them directly).
//!
//! Rules:
//! - A balance is a commit (PREPAID or POSTPAID) or a credit, on the contract or on its customer
//!   (`contract_id: None`, applicable to the contracts in `applicable_contract_ids`, all when
//!   empty). Its `access` segments each hold an amount usable by usage inside the segment's
//!   window `[starting_at, ending_before)`; unused amount expires at the segment's end.
//! - A segment covers a usage line when the line's whole time range lies inside the segment's
//!   window, the balance's credit type is the line's, and the balance's scope matches the line:
//!   `applicable_product_ids` contains its product, or the product has every one of
//!   `applicable_product_tags`, or any `specifiers` entry matches; no scope at all = every product.
//!   Rating splits lines at the segments' boundaries when that changes no charge (see
//!   `rating`), so a window that starts or ends inside a period covers the usage inside it.
//! - What a segment can still give before this invoice is `amount + prior_ledger[segment]`
//!   (never below zero): `prior_ledger` is the net of the ledger entries other invoices and manual
//!   entries recorded against it, which central passes in the snapshot.
//! - Burn-down order: prepaid commits and credits first, by `priority` ascending (none: after
//!   every prioritised one), then $0 cost basis (credits and free commits) before paid ones, then
//!   fewer applicable products, then the earlier segment end, then the earlier segment start,
//!   then fewer applicable contracts, then id; postpaid commits after all of them, in the same
//!   order among themselves. Each segment in that order walks the usage lines in invoice order
//!   and covers what it can.
//! - Covering: the covered part of a line is priced at the line's unit price, or at the rate's
//!   `commit_rate` when the balance has `rate_type: COMMIT_RATE` and the rate has one, or at the
//!   draw price a commit-specific override gives this balance (`InvoiceLine::draw_prices`,
//!   `overrides::draw_price`; a zero draw price covers every unit left at no cost). A part is
//!   `min(units left, available / price)` units; the covered part's total is exactly what the
//!   segment gives. `available / price` is exact when it terminates and otherwise rounded
//!   half-even to [`COVERED_UNITS_PLACES`] (12); the uncovered rest keeps the exact remainder
//!   of the line's total (at list price), so covered parts plus rest never change what the
//!   usage is worth unless a commit rate priced a part. Only positive usage charges are
//!   covered (zero-quantity lines, free units and LATEST decreases are left as they are).
//! - Lines: in place of a covered usage line, for each segment that covered some of it (in
//!   burn-down order) the covered part then its applied line (`"<name> applied"`, the
//!   balance's product, `−amount`), then the uncovered rest if any units are left.
//! - Deductions: one `AUTOMATED_INVOICE_DEDUCTION` per segment drawn from (postpaid too), and
//!   one `TRUEUP` for a postpaid commit's true-up that charges something.
//! - Recurring commits and credits ([`RecurringBalance::expand`]) become one balance per
//!   recurrence period, with deterministic ids, before pricing sees them.
//! - Prepaid commits and credits reduce the invoice total by what they cover (their applied
//!   lines are the invoice's adjustments); postpaid applied lines are shown but do not change the
//!   total, and the commit's true-up line on the invoice of its `invoice_schedule` date charges
//!   whatever of the commit is left.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::decimal::{add_exact, div_round_half_even, mul_exact, sub_exact};
use crate::invoice::{InvoiceLine, LineKind};
use crate::money::{Amount, CreditTypeId};
use crate::overrides::{Specifier, Subject};
use crate::period::Period;
use crate::pricing::PricingSnapshot;
use crate::rating::RatingError;

/// What kind of balance a commit or credit is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BalanceKind {
    PrepaidCommit,
    PostpaidCommit,
    Credit,
}

impl BalanceKind {
    /// The `type` the API shows for the commit or credit (and in `applied_commit_or_credit`).
    pub fn as_str(self) -> &'static str {
        match self {
            BalanceKind::PrepaidCommit => "PREPAID",
            BalanceKind::PostpaidCommit => "POSTPAID",
            BalanceKind::Credit => "CREDIT",
        }
    }
}

/// `rate_type` of a commit or credit: which rate its covered usage is priced at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BalanceRateType {
    #[default]
    ListRate,
    CommitRate,
}

/// One `access_schedule` item: an amount usable inside `[starting_at, ending_before)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessSegment {
    pub id: String,
    pub amount: Decimal,
    pub starting_at_ms: i64,
    pub ending_before_ms: i64,
}

/// One `invoice_schedule` item: a PREPAID commit's purchase (a `commit_purchase` line on the
/// SCHEDULED invoice at `timestamp`) or a POSTPAID commit's true-up date.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceItem {
    pub id: String,
    pub timestamp_ms: i64,
    pub quantity: Decimal,
    pub unit_price: Decimal,
    /// `quantity × unit_price`.
    pub amount: Decimal,
}

/// A validated commit or credit, as pricing sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    pub id: String,
    pub kind: BalanceKind,
    /// The applied line is named `"<name> applied"`. Central sets the commit's name, or its
    /// product's name when it has none.
    pub name: String,
    /// The FIXED product the commit is invoiced with (purchase and true-up lines).
    pub product_id: String,
    /// `Some`: a contract-level balance of that contract. `None`: a customer-level one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contract_id: Option<String>,
    /// Customer-level only: the contracts it applies to (empty: all of the customer's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub applicable_contract_ids: Vec<String>,
    /// The contract whose invoices carry its purchase and true-up lines (a contract-level
    /// commit's own contract; a customer-level commit's `invoice_contract_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoice_contract_id: Option<String>,
    /// Lower burns first; `None` after every prioritised one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub applicable_product_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub applicable_product_tags: Vec<String>,
    /// Usage matching any of these (product, tags, pricing and presentation values; their
    /// `billing_frequency` is always `None`). Not combined with the `applicable_*` fields.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub specifiers: Vec<Specifier>,
    #[serde(default)]
    pub rate_type: BalanceRateType,
    pub credit_type: CreditTypeId,
    /// Sorted by `starting_at`.
    pub access: Vec<AccessSegment>,
    /// PREPAID: the purchase items (empty: a free commit). POSTPAID: one item, the true-up date.
    /// Credits: empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub invoice_schedule: Vec<InvoiceItem>,
    /// Whether it was paid for (a PREPAID commit with an invoiced schedule; never a credit). A
    /// $0 cost basis burns before a paid one at equal priority.
    #[serde(default)]
    pub paid: bool,
    /// The `recurring_commits` / `recurring_credits` entry that generated it
    /// ([`RecurringBalance::expand`]); commit-specific overrides may name it
    /// (`recurring_commit_ids`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recurring_id: Option<String>,
}

/// Which balance a line belongs to: a covered usage line, an applied line, a purchase or a
/// true-up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalanceRef {
    pub id: String,
    pub kind: BalanceKind,
    /// The access segment (covered and applied lines) or invoice schedule item (purchase lines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment_id: Option<String>,
}

/// The kind of a ledger entry, spelled as the API shows it once prefixed with the balance's
/// kind (`PREPAID_COMMIT_`, `POSTPAID_COMMIT_`, `CREDIT_`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LedgerEntryKind {
    /// `+amount` at the segment's start (POSTPAID: `INITIAL_BALANCE`).
    SegmentStart,
    /// What an invoice draws (negative).
    AutomatedInvoiceDeduction,
    /// What a true-up bills of a postpaid commit's remainder (negative: it brings it to zero).
    Trueup,
    /// What is left at the segment's end (negative).
    Expiration,
    /// `addManualBalanceLedgerEntry` (either sign).
    Manual,
    /// What a contract transition moves from a renewed contract's segment (negative) to the
    /// renewal's (positive) (`rollover`).
    Rollover,
}

impl LedgerEntryKind {
    /// The API's entry `type` for a balance of `kind`.
    pub fn wire_name(self, kind: BalanceKind) -> &'static str {
        use BalanceKind::*;
        use LedgerEntryKind::*;
        match (kind, self) {
            (PrepaidCommit, SegmentStart) => "PREPAID_COMMIT_SEGMENT_START",
            (PrepaidCommit, AutomatedInvoiceDeduction) => {
                "PREPAID_COMMIT_AUTOMATED_INVOICE_DEDUCTION"
            }
            (PrepaidCommit, Trueup) => "PREPAID_COMMIT_MANUAL",
            (PrepaidCommit, Expiration) => "PREPAID_COMMIT_EXPIRATION",
            (PrepaidCommit, Manual) => "PREPAID_COMMIT_MANUAL",
            (PostpaidCommit, SegmentStart) => "POSTPAID_COMMIT_INITIAL_BALANCE",
            (PostpaidCommit, AutomatedInvoiceDeduction) => {
                "POSTPAID_COMMIT_AUTOMATED_INVOICE_DEDUCTION"
            }
            (PostpaidCommit, Trueup) => "POSTPAID_COMMIT_TRUEUP",
            (PostpaidCommit, Expiration) => "POSTPAID_COMMIT_EXPIRATION",
            (PostpaidCommit, Manual) => "POSTPAID_COMMIT_MANUAL",
            (Credit, SegmentStart) => "CREDIT_SEGMENT_START",
            (Credit, AutomatedInvoiceDeduction) => "CREDIT_AUTOMATED_INVOICE_DEDUCTION",
            (Credit, Trueup) => "CREDIT_MANUAL",
            (Credit, Expiration) => "CREDIT_EXPIRATION",
            (Credit, Manual) => "CREDIT_MANUAL",
            (PrepaidCommit, Rollover) => "PREPAID_COMMIT_ROLLOVER",
            (PostpaidCommit, Rollover) => "POSTPAID_COMMIT_ROLLOVER",
            (Credit, Rollover) => "CREDIT_ROLLOVER",
        }
    }
}

/// What one invoice records against one segment: central writes these to the ledger in the
/// transaction that finalizes the invoice (and shows them as pending while it is a draft).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deduction {
    pub balance_id: String,
    pub kind: BalanceKind,
    pub segment_id: String,
    pub entry: LedgerEntryKind,
    /// Negative: what the invoice took from the segment.
    pub amount: Decimal,
}

/// The balances one invoice may draw on, and what other invoices and manual entries already
/// did to them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BalanceState {
    /// The contract's own commits and credits and its customer's that apply to it.
    #[serde(default)]
    pub balances: Vec<Balance>,
    /// Per segment id: the net of the ledger entries recorded against it by other invoices (and
    /// manual entries) ordered before this one. A segment not listed has none.
    #[serde(default)]
    pub prior_ledger: BTreeMap<String, Decimal>,
}

// ---------------------------------------------------------------------------------------------
// Stage 3: drawing an invoice's usage down against the balances

/// Decimal places a covered quantity is rounded to (half-even) when `available / price` does
/// not terminate: the same rule as a `DIVIDE` conversion (`rating::DIVIDE_PLACES`).
pub const COVERED_UNITS_PLACES: u32 = crate::rating::DIVIDE_PLACES;

/// What stage 3 makes of an invoice's priced lines: the lines split into covered parts (each
/// followed by its applied line) and uncovered rests, postpaid true-ups at the end, and what
/// the invoice records in each segment's ledger. The adjustments are the sum of the prepaid
/// applied lines (`pricing::totals` computes them from the lines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drawdown {
    pub lines: Vec<InvoiceLine>,
    /// In burn-down order of the segments, then the true-ups in the order of the balances.
    pub deductions: Vec<Deduction>,
}

impl Balance {
    /// Whether it may cover usage of `contract_id`.
    pub fn applies_to(&self, contract_id: &str) -> bool {
        match &self.contract_id {
            Some(own) => own == contract_id,
            None => {
                self.applicable_contract_ids.is_empty()
                    || self
                        .applicable_contract_ids
                        .iter()
                        .any(|c| c == contract_id)
            }
        }
    }

    /// Whether `contract_id`'s invoices carry its purchase and true-up lines.
    pub fn invoiced_on(&self, contract_id: &str) -> bool {
        self.invoice_contract_id
            .as_deref()
            .or(self.contract_id.as_deref())
            == Some(contract_id)
    }

    fn scoped(&self) -> bool {
        !self.applicable_product_ids.is_empty()
            || !self.applicable_product_tags.is_empty()
            || !self.specifiers.is_empty()
    }

    /// The product-level part of the scope: by id or tags, not by specifiers.
    fn scope_names(&self, product_id: &str, tags: &[String]) -> bool {
        self.applicable_product_ids.iter().any(|p| p == product_id)
            || (!self.applicable_product_tags.is_empty()
                && has_all(tags, &self.applicable_product_tags))
    }

    /// Whether the scope may match some usage of the product (a specifier's product and tags;
    /// its group values aside). Counts the applicable products of the burn-down order.
    pub(crate) fn may_cover_product(&self, product_id: &str, tags: &[String]) -> bool {
        !self.scoped()
            || self.scope_names(product_id, tags)
            || self.specifiers.iter().any(|s| {
                s.product_id.as_deref().is_none_or(|p| p == product_id)
                    && s.product_tags.as_deref().is_none_or(|t| has_all(tags, t))
            })
    }

    /// Whether the scope matches this usage line (of a product with these tags).
    fn covers_line(&self, line: &InvoiceLine, tags: &[String]) -> bool {
        if !self.scoped() || self.scope_names(&line.product_id, tags) {
            return true;
        }
        let no_values = BTreeMap::new();
        let subject = Subject {
            product_id: &line.product_id,
            product_tags: tags,
            pricing_group_values: line.pricing_group_values.as_ref().unwrap_or(&no_values),
            billing_frequency: None,
        };
        let presentation = line.presentation_group_values.as_ref();
        self.specifiers
            .iter()
            .any(|s| s.matches_usage(&subject) && s.matches_line(presentation))
    }

    /// The "fewer applicable contracts" rank: a contract-level balance applies to one, a
    /// customer-level one to those listed, or to all of them.
    fn contract_count(&self) -> usize {
        match (&self.contract_id, self.applicable_contract_ids.len()) {
            (Some(_), _) => 1,
            (None, 0) => usize::MAX,
            (None, n) => n,
        }
    }

    fn applied_kind(&self) -> LineKind {
        match self.kind {
            BalanceKind::Credit => LineKind::AppliedCredit,
            BalanceKind::PrepaidCommit | BalanceKind::PostpaidCommit => LineKind::AppliedCommit,
        }
    }

    fn reference(&self, segment_id: Option<&str>) -> BalanceRef {
        BalanceRef {
            id: self.id.clone(),
            kind: self.kind,
            segment_id: segment_id.map(String::from),
        }
    }
}

fn has_all(tags: &[String], wanted: &[String]) -> bool {
    wanted.iter().all(|t| tags.contains(t))
}

impl BalanceState {
    /// What the ledger already holds against a segment.
    fn prior(&self, segment_id: &str) -> Decimal {
        self.prior_ledger
            .get(segment_id)
            .copied()
            .unwrap_or(Decimal::ZERO)
    }
}

/// One access segment of a balance, as the drawdown walks it.
#[derive(Clone, Copy)]
struct Candidate<'b> {
    balance: &'b Balance,
    segment: &'b AccessSegment,
}

/// The burn-down rank of a segment (module docs): lower burns first.
type Rank<'b> = (
    bool,
    bool,
    Option<Decimal>,
    bool,
    usize,
    i64,
    i64,
    usize,
    &'b str,
    &'b str,
);

fn rank<'b>(c: &Candidate<'b>, products: usize) -> Rank<'b> {
    let b = c.balance;
    (
        b.kind == BalanceKind::PostpaidCommit,
        b.priority.is_none(),
        b.priority,
        b.paid,
        products,
        c.segment.ending_before_ms,
        c.segment.starting_at_ms,
        b.contract_count(),
        b.id.as_str(),
        c.segment.id.as_str(),
    )
}

/// The segments that may cover usage of the snapshot's contract, in burn-down order.
fn burn_down_order(snapshot: &PricingSnapshot, period: Period) -> Vec<Candidate<'_>> {
    let contract = snapshot.contract.id.as_str();
    let mut ranked: Vec<(Rank<'_>, Candidate<'_>)> = Vec::new();
    for balance in snapshot
        .balances
        .balances
        .iter()
        .filter(|b| b.applies_to(contract))
    {
        let products = snapshot
            .product_tags(period)
            .filter(|(id, tags)| balance.may_cover_product(id, tags))
            .count();
        for segment in &balance.access {
            let c = Candidate { balance, segment };
            ranked.push((rank(&c, products), c));
        }
    }
    ranked.sort_by(|a, b| a.0.cmp(&b.0));
    ranked.into_iter().map(|(_, c)| c).collect()
}

/// The part of a usage line one segment covers.
struct Cover<'b> {
    candidate: Candidate<'b>,
    units: Decimal,
    price: Decimal,
    amount: Decimal,
}

/// A usage line while segments cover it: the units not covered yet, what they charge at the
/// list price (the line's total less what the covers took off it, so the charge stays exact),
/// and the covers so far.
struct Drawing<'b> {
    units_left: Decimal,
    rest_total: Decimal,
    covers: Vec<Cover<'b>>,
}

fn overflow<T>(v: Option<T>) -> Result<T, RatingError> {
    v.ok_or(RatingError::Overflow)
}

impl<'b> Drawing<'b> {
    fn new(line: &InvoiceLine) -> Self {
        Drawing {
            units_left: line.quantity,
            rest_total: line.total.value,
            covers: Vec::new(),
        }
    }

    /// Covers what `available` can of the units left at the segment's price; returns what it
    /// took (zero when it covers nothing).
    fn cover(
        &mut self,
        candidate: &Candidate<'b>,
        line: &InvoiceLine,
        available: Decimal,
    ) -> Result<Decimal, RatingError> {
        let balance = candidate.balance;
        let draw = line
            .draw_prices
            .iter()
            .find(|d| d.balance_id == balance.id)
            .map(|d| d.unit_price);
        let commit_price = draw.or(match balance.rate_type {
            BalanceRateType::CommitRate => line.commit_unit_price,
            BalanceRateType::ListRate => None,
        });
        let price = commit_price.unwrap_or(line.unit_price.value);
        if self.units_left <= Decimal::ZERO || price < Decimal::ZERO {
            return Ok(Decimal::ZERO);
        }
        if price.is_zero() {
            // Only a commit-specific override makes a draw free: the balance covers the units
            // left at no cost and keeps its amount.
            if draw.is_some() {
                self.take_all_free(candidate);
            }
            return Ok(Decimal::ZERO);
        }
        let need = match commit_price {
            Some(p) => overflow(mul_exact(self.units_left, p))?,
            None => self.rest_total,
        };
        if need <= Decimal::ZERO {
            return Ok(Decimal::ZERO);
        }
        let (units, amount) = if available >= need {
            (self.units_left, need)
        } else {
            (self.partial_units(available, price)?, available)
        };
        self.rest_total = if units == self.units_left {
            Decimal::ZERO
        } else if commit_price.is_some() {
            let at_list = overflow(mul_exact(units, line.unit_price.value))?;
            overflow(sub_exact(self.rest_total, at_list))?
        } else {
            overflow(sub_exact(self.rest_total, amount))?
        };
        self.units_left = overflow(sub_exact(self.units_left, units))?;
        self.covers.push(Cover {
            candidate: *candidate,
            units,
            price,
            amount,
        });
        Ok(amount)
    }

    /// Covers every unit left at a zero draw price.
    fn take_all_free(&mut self, candidate: &Candidate<'b>) {
        self.covers.push(Cover {
            candidate: *candidate,
            units: self.units_left,
            price: Decimal::ZERO,
            amount: Decimal::ZERO,
        });
        self.units_left = Decimal::ZERO;
        self.rest_total = Decimal::ZERO;
    }

    /// `available / price` units, when that is less than the units left: exact when it
    /// terminates, else half-even to [`COVERED_UNITS_PLACES`]. Should that rounding reach the
    /// units left (the exact quotient is within half a unit of the last place below them), one
    /// unit of the last place stays uncovered, so a part that does not pay for the whole line
    /// never shows all of it.
    fn partial_units(&self, available: Decimal, price: Decimal) -> Result<Decimal, RatingError> {
        let units = overflow(div_round_half_even(available, price, COVERED_UNITS_PLACES))?;
        if units < self.units_left {
            return Ok(units);
        }
        let ulp = Decimal::new(1, COVERED_UNITS_PLACES);
        Ok(overflow(sub_exact(self.units_left, ulp))?.max(Decimal::ZERO))
    }

    /// The line's parts in place of it: each covered part then its applied line, then the
    /// uncovered rest (the line untouched when nothing covered it).
    fn emit(self, line: InvoiceLine, out: &mut Vec<InvoiceLine>) {
        if self.covers.is_empty() {
            out.push(line);
            return;
        }
        let credit_type = &line.total.credit_type;
        for cover in &self.covers {
            let (balance, segment) = (cover.candidate.balance, cover.candidate.segment);
            let reference = balance.reference(Some(&segment.id));
            out.push(InvoiceLine {
                quantity: cover.units,
                unit_price: Amount::new(credit_type.clone(), cover.price),
                total: Amount::new(credit_type.clone(), cover.amount),
                balance: Some(reference.clone()),
                ..line.clone()
            });
            let taken = match cover.amount.is_zero() {
                true => Decimal::ZERO,
                false => -cover.amount,
            };
            let applied = Amount::new(credit_type.clone(), taken);
            out.push(InvoiceLine {
                kind: balance.applied_kind(),
                product_id: balance.product_id.clone(),
                name: format!("{} applied", balance.name),
                quantity: Decimal::ONE,
                unit_price: applied.clone(),
                total: applied,
                segment: line.segment,
                pricing_group_values: None,
                presentation_group_values: None,
                tier: None,
                balance: Some(reference),
                commit_unit_price: None,
                draw_prices: Vec::new(),
                scheduled_charge_id: None,
                subscription_id: None,
                is_prorated: false,
            });
        }
        if self.units_left > Decimal::ZERO {
            out.push(InvoiceLine {
                quantity: self.units_left,
                total: Amount::new(credit_type.clone(), self.rest_total),
                ..line
            });
        }
    }
}

/// Whether a segment may cover this line: a positive usage charge not covered by anything
/// yet, in the balance's credit type, inside the segment's window and the balance's scope.
fn eligible(c: &Candidate<'_>, line: &InvoiceLine, tags: &[String]) -> bool {
    line.kind == LineKind::Usage
        && line.balance.is_none()
        && line.quantity > Decimal::ZERO
        && line.total.value > Decimal::ZERO
        && line.total.credit_type == c.balance.credit_type
        && line.segment.start_ms >= c.segment.starting_at_ms
        && line.segment.end_ms <= c.segment.ending_before_ms
        && c.balance.covers_line(line, tags)
}

/// Stage 3 (module docs): draws the priced, ordered lines of `period` down against the
/// snapshot's balances, segment by segment in burn-down order, and adds the true-ups of the
/// postpaid commits due in the period.
pub fn apply_balances(
    snapshot: &PricingSnapshot,
    period: Period,
    lines: Vec<InvoiceLine>,
) -> Result<Drawdown, RatingError> {
    let state = &snapshot.balances;
    if state.balances.is_empty() {
        return Ok(Drawdown {
            lines,
            deductions: Vec::new(),
        });
    }
    let tags: BTreeMap<&str, &[String]> = snapshot.product_tags(period).collect();
    let mut drawings: Vec<Drawing<'_>> = lines.iter().map(Drawing::new).collect();
    let mut deductions = Vec::new();
    for candidate in burn_down_order(snapshot, period) {
        let prior = state.prior(&candidate.segment.id);
        let mut available =
            overflow(add_exact(candidate.segment.amount, prior))?.max(Decimal::ZERO);
        let mut taken = Decimal::ZERO;
        for (line, drawing) in lines.iter().zip(drawings.iter_mut()) {
            if available.is_zero() {
                break;
            }
            let product_tags = tags.get(line.product_id.as_str()).copied().unwrap_or(&[]);
            if !eligible(&candidate, line, product_tags) {
                continue;
            }
            let amount = drawing.cover(&candidate, line, available)?;
            available = overflow(sub_exact(available, amount))?;
            taken = overflow(add_exact(taken, amount))?;
        }
        if taken > Decimal::ZERO {
            deductions.push(Deduction {
                balance_id: candidate.balance.id.clone(),
                kind: candidate.balance.kind,
                segment_id: candidate.segment.id.clone(),
                entry: LedgerEntryKind::AutomatedInvoiceDeduction,
                amount: -taken,
            });
        }
    }
    let mut out = Vec::with_capacity(lines.len());
    for (line, drawing) in lines.into_iter().zip(drawings) {
        drawing.emit(line, &mut out);
    }
    let true_ups = true_ups(snapshot, period, &deductions)?;
    for (line, deduction) in true_ups {
        out.push(line);
        deductions.extend(deduction);
    }
    Ok(Drawdown {
        lines: out,
        deductions,
    })
}

/// The true-up of each POSTPAID commit invoiced on this contract whose true-up date (its first
/// `invoice_schedule` item) lies in `(period.start, period.end]`: a line charging what is left
/// of the commit after this invoice's deductions, never below zero, and its `Trueup` ledger
/// entry on the first segment when it charges something.
fn true_ups(
    snapshot: &PricingSnapshot,
    period: Period,
    deductions: &[Deduction],
) -> Result<Vec<(InvoiceLine, Option<Deduction>)>, RatingError> {
    let state = &snapshot.balances;
    let mut out = Vec::new();
    let due = state.balances.iter().filter(|b| {
        b.kind == BalanceKind::PostpaidCommit
            && b.invoiced_on(&snapshot.contract.id)
            && b.invoice_schedule.first().is_some_and(|i| {
                period.start_ms < i.timestamp_ms && i.timestamp_ms <= period.end_ms
            })
    });
    for balance in due {
        let mut remaining = Decimal::ZERO;
        for segment in &balance.access {
            let drawn = deductions
                .iter()
                .filter(|d| d.balance_id == balance.id && d.segment_id == segment.id)
                .try_fold(Decimal::ZERO, |sum, d| add_exact(sum, d.amount));
            for part in [segment.amount, state.prior(&segment.id), overflow(drawn)?] {
                remaining = overflow(add_exact(remaining, part))?;
            }
        }
        let charge = remaining.max(Decimal::ZERO);
        let first = balance.access.first();
        let amount = Amount::new(balance.credit_type.clone(), charge);
        let line = InvoiceLine {
            kind: LineKind::TrueUp,
            product_id: balance.product_id.clone(),
            name: format!("{} true-up", balance.name),
            quantity: Decimal::ONE,
            unit_price: amount.clone(),
            total: amount,
            segment: period,
            pricing_group_values: None,
            presentation_group_values: None,
            tier: None,
            balance: Some(balance.reference(first.map(|s| s.id.as_str()))),
            commit_unit_price: None,
            draw_prices: Vec::new(),
            scheduled_charge_id: None,
            subscription_id: None,
            is_prorated: false,
        };
        let deduction = first.filter(|_| charge > Decimal::ZERO).map(|s| Deduction {
            balance_id: balance.id.clone(),
            kind: balance.kind,
            segment_id: s.id.clone(),
            entry: LedgerEntryKind::Trueup,
            amount: -charge,
        });
        out.push((line, deduction));
    }
    Ok(out)
}

/// The `commit_purchase` lines of the SCHEDULED invoice at `at_ms`: one per `invoice_schedule`
/// item at exactly that instant of each PREPAID commit invoiced on this contract.
pub fn purchase_lines(snapshot: &PricingSnapshot, at_ms: i64) -> Vec<InvoiceLine> {
    let mut out = Vec::new();
    for (balance, item) in purchases(snapshot).filter(|(_, i)| i.timestamp_ms == at_ms) {
        out.push(InvoiceLine {
            balance: Some(balance.reference(Some(&item.id))),
            ..InvoiceLine::of_item(
                LineKind::CommitPurchase,
                &balance.product_id,
                &balance.name,
                &balance.credit_type,
                item,
            )
        });
    }
    out
}

/// The purchase items of the PREPAID commits invoiced on the snapshot's contract.
pub fn purchases(snapshot: &PricingSnapshot) -> impl Iterator<Item = (&Balance, &InvoiceItem)> {
    purchases_of(&snapshot.balances.balances, &snapshot.contract.id)
}

/// The purchase items of those of `balances` that are PREPAID commits invoiced on `contract_id`.
pub fn purchases_of<'b>(
    balances: &'b [Balance],
    contract_id: &'b str,
) -> impl Iterator<Item = (&'b Balance, &'b InvoiceItem)> {
    balances
        .iter()
        .filter(move |b| b.kind == BalanceKind::PrepaidCommit && b.invoiced_on(contract_id))
        .flat_map(|b| b.invoice_schedule.iter().map(move |i| (b, i)))
}

// ---------------------------------------------------------------------------------------------
// Recurring commits and credits

/// `proration` of a recurring commit or credit: which partial recurrence periods have their
/// amounts scaled by the part of the full period they span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Proration {
    None,
    First,
    Last,
    #[default]
    FirstAndLast,
}

/// `access_amount` / `invoice_amount` of a recurring commit or credit: `unit_price × quantity`
/// per recurrence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecurringAmount {
    pub unit_price: Decimal,
    /// Absent in the API: 1.
    pub quantity: Decimal,
}

impl RecurringAmount {
    fn total(&self) -> Option<Decimal> {
        mul_exact(self.unit_price, self.quantity)
    }
}

/// A validated `recurring_commits` / `recurring_credits` entry of a contract (§2.8): one
/// commit or credit per recurrence period from `starting_at`, each usable for
/// `commit_duration` periods from the start of its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecurringBalance {
    pub id: String,
    /// `PrepaidCommit` (recurring commits) or `Credit` (recurring credits).
    pub kind: BalanceKind,
    pub name: String,
    pub product_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub applicable_product_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub applicable_product_tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub specifiers: Vec<Specifier>,
    #[serde(default)]
    pub rate_type: BalanceRateType,
    pub credit_type: CreditTypeId,
    pub starting_at_ms: i64,
    /// No recurrence starts at or after it (absent: the contract's end, if any); it cuts the
    /// last recurrence period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ending_before_ms: Option<i64>,
    pub access_amount: RecurringAmount,
    /// Commits only: what each recurrence is invoiced (absent: free).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoice_amount: Option<RecurringAmount>,
    /// `commit_duration.value` (unit PERIODS, at least 1): how many recurrence periods each
    /// access segment spans.
    pub commit_duration_periods: u32,
    /// Absent: the contract's usage statement cadence (its grid, not restarted at
    /// `starting_at`). Set: that frequency from `starting_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recurrence_frequency: Option<crate::period::Frequency>,
    #[serde(default)]
    pub proration: Proration,
    /// `proration_rounding.access`: how a prorated access amount is rounded (absent: exact, or
    /// half-even to [`PRORATED_PLACES`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_rounding: Option<ProrationRounding>,
    /// `proration_rounding.invoice` (commits only): how a prorated invoice unit price is
    /// rounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoice_rounding: Option<ProrationRounding>,
}

/// `rounding_method` of a `ProrationRoundingConfig`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ProrationRoundingMethod {
    HalfUp,
    Floor,
    Ceiling,
}

/// A `ProrationRoundingConfig`: a prorated amount rounded to `decimal_places` (−5..=5; a
/// negative count rounds to a power of ten: −2 to the nearest 100) with `method`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProrationRounding {
    pub method: ProrationRoundingMethod,
    pub decimal_places: i32,
}

/// Most decimal places either way a [`ProrationRounding`] may ask for.
pub const MAX_PRORATION_PLACES: i32 = 5;

impl ProrationRounding {
    /// `amount` rounded as configured; `None` when `decimal_places` is out of range or the
    /// result overflows.
    pub fn apply(self, amount: Decimal) -> Option<Decimal> {
        use rust_decimal::RoundingStrategy;
        if self.decimal_places.unsigned_abs() > MAX_PRORATION_PLACES as u32 {
            return None;
        }
        let strategy = match self.method {
            ProrationRoundingMethod::HalfUp => RoundingStrategy::MidpointAwayFromZero,
            ProrationRoundingMethod::Floor => RoundingStrategy::ToNegativeInfinity,
            ProrationRoundingMethod::Ceiling => RoundingStrategy::ToPositiveInfinity,
        };
        if self.decimal_places >= 0 {
            return Some(amount.round_dp_with_strategy(self.decimal_places as u32, strategy));
        }
        let unit = Decimal::from(10i64.pow(self.decimal_places.unsigned_abs()));
        let whole = amount
            .checked_div(unit)?
            .round_dp_with_strategy(0, strategy);
        whole.checked_mul(unit)
    }
}

/// Decimal places a prorated amount is rounded to (half-even) when it is not exact.
pub const PRORATED_PLACES: u32 = 12;

/// Long enough before any instant for a period search to hold the whole period containing it
/// (the longest step is a year).
const LONGEST_PERIOD_MS: i64 = 400 * crate::time::DAY_MS;

impl RecurringBalance {
    /// The commits or credits of the recurrence periods that start before `until_ms` (at most
    /// `period::MAX_PERIODS`), with deterministic ids: balance `"{id}/{n}"` (n from 0), its
    /// segment `"{id}/{n}/access"` and purchase item `"{id}/{n}/invoice"` at the period's start.
    /// A partial first or last period (cut by `starting_at` off the contract's grid, or by
    /// `ending_before`) scales the access amount and the invoice unit price by
    /// `its length / the full period's length` when `proration` says so: exact, or half-even
    /// to [`PRORATED_PLACES`] when not.
    pub fn expand(
        &self,
        contract: &crate::pricing::ContractSnapshot,
        until_ms: i64,
    ) -> Result<Vec<Balance>, RatingError> {
        let cadence = self.cadence(contract);
        let end_ms = self.ending_before_ms.or(contract.ending_before_ms);
        let full = |t_ms: i64| {
            cadence.period_containing(t_ms.saturating_sub(LONGEST_PERIOD_MS), None, t_ms)
        };
        let mut out = Vec::new();
        for (n, period) in cadence
            .periods(self.starting_at_ms, end_ms, until_ms)
            .into_iter()
            .enumerate()
        {
            let whole = overflow(full(period.start_ms))?;
            let mut access_end = period.end_ms;
            for _ in 1..self.commit_duration_periods {
                access_end = overflow(full(access_end))?.end_ms;
            }
            let fraction = self.fraction(period, whole);
            let access = prorate(
                overflow(self.access_amount.total())?,
                fraction,
                self.access_rounding,
            )?;
            let id = format!("{}/{n}", self.id);
            let invoice_schedule = match (&self.invoice_amount, self.kind) {
                (Some(amount), BalanceKind::PrepaidCommit) => {
                    let unit_price = prorate(amount.unit_price, fraction, self.invoice_rounding)?;
                    alloc::vec![InvoiceItem {
                        id: format!("{id}/invoice"),
                        timestamp_ms: period.start_ms,
                        quantity: amount.quantity,
                        unit_price,
                        amount: overflow(mul_exact(amount.quantity, unit_price))?,
                    }]
                }
                _ => Vec::new(),
            };
            out.push(Balance {
                kind: self.kind,
                name: self.name.clone(),
                product_id: self.product_id.clone(),
                contract_id: Some(contract.id.clone()),
                applicable_contract_ids: Vec::new(),
                invoice_contract_id: None,
                priority: self.priority,
                applicable_product_ids: self.applicable_product_ids.clone(),
                applicable_product_tags: self.applicable_product_tags.clone(),
                specifiers: self.specifiers.clone(),
                rate_type: self.rate_type,
                credit_type: self.credit_type.clone(),
                access: alloc::vec![AccessSegment {
                    id: format!("{id}/access"),
                    amount: access,
                    starting_at_ms: period.start_ms,
                    ending_before_ms: access_end,
                }],
                paid: invoice_schedule.iter().any(|i| i.amount > Decimal::ZERO),
                invoice_schedule,
                recurring_id: Some(self.id.clone()),
                id,
            });
        }
        Ok(out)
    }

    /// The recurrence grid: its own frequency from `starting_at`, or the contract's.
    fn cadence(&self, contract: &crate::pricing::ContractSnapshot) -> crate::period::Schedule {
        let own = &contract.usage_statement_schedule;
        let (frequency, anchor_ms) = match self.recurrence_frequency {
            Some(f) => (f, self.starting_at_ms),
            None => (own.frequency, own.anchor_ms(contract.starting_at_ms)),
        };
        crate::period::Schedule {
            frequency,
            day: crate::period::AnchorDay::CustomDate,
            billing_anchor_ms: Some(anchor_ms),
        }
    }

    /// `(prorated length, full length)` of a recurrence period, or `None` when it is charged
    /// in full.
    fn fraction(&self, period: Period, whole: Period) -> Option<(i64, i64)> {
        let first = matches!(self.proration, Proration::First | Proration::FirstAndLast);
        let last = matches!(self.proration, Proration::Last | Proration::FirstAndLast);
        let start = if first {
            period.start_ms
        } else {
            whole.start_ms
        };
        let end = if last { period.end_ms } else { whole.end_ms };
        let (part, full) = (end - start, whole.end_ms - whole.start_ms);
        (part < full && full > 0).then_some((part, full))
    }
}

/// `amount × part / full`: rounded as `rounding` says, or else exact or half-even to
/// [`PRORATED_PLACES`]. An amount charged in full is never rounded.
pub(crate) fn prorate(
    amount: Decimal,
    fraction: Option<(i64, i64)>,
    rounding: Option<ProrationRounding>,
) -> Result<Decimal, RatingError> {
    let Some((part, full)) = fraction else {
        return Ok(amount);
    };
    let scaled = overflow(mul_exact(amount, Decimal::from(part)))?;
    match rounding {
        Some(r) => overflow(
            scaled
                .checked_div(Decimal::from(full))
                .and_then(|q| r.apply(q)),
        ),
        None => overflow(div_round_half_even(
            scaled,
            Decimal::from(full),
            PRORATED_PLACES,
        )),
    }
}

#[cfg(test)]
#[path = "balances_tests.rs"]
mod balances_tests;
