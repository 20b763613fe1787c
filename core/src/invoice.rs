//! The typed invoice core's pricing produces: every line has a kind, a credit type on each
//! amount, its product, pricing/presentation groups, tier and rate segment; the invoice has a
//! subtotal, adjustments and total per credit type. The API's JSON is made from this type in one
//! place (central's renderer); nothing reads amounts back from JSON.
//!
//! Invariants (checked by `pricing::totals` when it builds an invoice):
//! - `subtotal` is the per-credit-type sum of the totals of every line but the applied ones
//!   (`AppliedCommit`, `AppliedCredit`); `adjustments` is the sum of the applied lines of
//!   prepaid commits and credits; postpaid applied lines are shown but count in neither;
//!   `total = subtotal + adjustments`.
//! - A custom pricing unit's sums are what the invoice owed in it; its `CpuConversion` line (in
//!   the fiat credit type, `conversion`) carries that amount into the fiat sums.
//! - A line's `total` and `unit_price` are in the same credit type.
//! - A usage line a balance covers is split in place: each covered part (`balance` set) is
//!   followed by its applied line, and the uncovered rest comes last; the parts' quantities sum
//!   to the original line's.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::balances::{BalanceRef, Deduction, InvoiceItem};
use crate::money::{Amount, CreditTypeId, Totals};
use crate::period::Period;

/// What a line charges for: usage (whole, or the part a balance covers), what a commit or
/// credit applied to it, a prepaid commit's purchase, a postpaid commit's true-up, an item of a
/// scheduled charge or professional service, a subscription's charge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineKind {
    Usage,
    Scheduled,
    /// An item of a professional service's scheduled invoice (`scheduleProServicesInvoice`).
    ProfessionalService,
    Subscription,
    CommitPurchase,
    AppliedCommit,
    AppliedCredit,
    TrueUp,
    /// What the invoice owes in a custom pricing unit, converted to its fiat credit type
    /// (`conversion`): quantity in custom units, unit price and total in fiat.
    CpuConversion,
}

/// Which tier a line prices (tier lines only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierRef {
    pub level: u32,
    pub starting_at: Decimal,
    pub size: Option<Decimal>,
}

/// One priced invoice line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceLine {
    pub kind: LineKind,
    pub product_id: String,
    pub name: String,
    pub quantity: Decimal,
    pub unit_price: Amount,
    pub total: Amount,
    /// The rate segment this line prices: a sub-interval of the period.
    pub segment: Period,
    pub pricing_group_values: Option<BTreeMap<String, String>>,
    pub presentation_group_values: Option<BTreeMap<String, Option<String>>>,
    pub tier: Option<TierRef>,
    /// The commit or credit this line belongs to: the part of a usage line a balance covers,
    /// the applied line after it, a purchase or a true-up (`balances`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balance: Option<BalanceRef>,
    /// Usage lines: the rate's flat `commit_rate`, the unit price of the part a `COMMIT_RATE`
    /// balance covers. Never shown; set by rating.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_unit_price: Option<Decimal>,
    /// Usage lines: the unit price of the part a balance covers where a commit-specific
    /// override makes it differ from `unit_price` / `commit_unit_price` (one entry per such
    /// balance, `overrides::draw_price`). Never shown; set by rating.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub draw_prices: Vec<DrawPrice>,
    /// Scheduled and professional-service lines: the scheduled charge or professional service
    /// the line bills an item of (`charges`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_charge_id: Option<String>,
    /// Subscription lines: the subscription they charge (`subscriptions`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription_id: Option<String>,
    /// Subscription lines: whether the charge is prorated (a partial period or a mid-period
    /// increase, `unit_price` the prorated price).
    #[serde(default, skip_serializing_if = "core::ops::Not::not")]
    pub is_prorated: bool,
}

impl InvoiceLine {
    /// A line of `quantity` at `unit_price` (in `credit_type`) totalling `total`, over
    /// `segment`, with no groups, tier or balance.
    pub fn plain(
        kind: LineKind,
        product_id: &str,
        name: &str,
        credit_type: &CreditTypeId,
        (quantity, unit_price, total): (Decimal, Decimal, Decimal),
        segment: Period,
    ) -> InvoiceLine {
        InvoiceLine {
            kind,
            product_id: product_id.into(),
            name: name.into(),
            quantity,
            unit_price: Amount::new(credit_type.clone(), unit_price),
            total: Amount::new(credit_type.clone(), total),
            segment,
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

    /// The line of one scheduled item (a commit purchase, a scheduled charge): its quantity,
    /// unit price and exact amount, over `[timestamp, timestamp]`, belonging to nothing yet.
    pub fn of_item(
        kind: LineKind,
        product_id: &str,
        name: &str,
        credit_type: &CreditTypeId,
        item: &InvoiceItem,
    ) -> InvoiceLine {
        let at = item.timestamp_ms;
        let segment = Period {
            start_ms: at,
            end_ms: at,
        };
        let amounts = (item.quantity, item.unit_price, item.amount);
        InvoiceLine::plain(kind, product_id, name, credit_type, amounts, segment)
    }
}

/// The unit price usage of a line is drawn from one balance at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrawPrice {
    pub balance_id: String,
    pub unit_price: Decimal,
}

/// Which invoice of a contract: a billing period's USAGE invoice, or the SCHEDULED invoice of
/// one instant (commit purchases, and later scheduled charges).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InvoiceKind {
    #[default]
    Usage,
    Scheduled,
}

/// A priced billing period of one contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invoice {
    #[serde(default)]
    pub kind: InvoiceKind,
    pub contract_id: String,
    pub period: Period,
    /// The credit type the invoice is stated in (the rate card's fiat credit type).
    pub credit_type: CreditTypeId,
    pub lines: Vec<InvoiceLine>,
    pub subtotal: Totals,
    /// What prepaid commits and credits took off (the sum of their applied lines, negative).
    pub adjustments: Totals,
    pub total: Totals,
    /// What this invoice records in each balance segment's ledger (`balances`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deductions: Vec<Deduction>,
}

impl Invoice {
    /// Drops the lines with zero quantity (`skip_zero_qty_line_items`). Zero-quantity lines have
    /// zero totals, so the sums stay right.
    pub fn without_zero_quantity_lines(mut self) -> Invoice {
        self.lines.retain(|l| !l.quantity.is_zero());
        self
    }
}
