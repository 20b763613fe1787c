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
//!   `commit_rate` when the balance has `rate_type: COMMIT_RATE` and the rate has one. A part is
//!   `min(units left, available / price)` units; the covered part's total is exactly what the
//!   segment gives.
//! - Prepaid commits and credits reduce the invoice total by what they cover (their applied
//!   lines are the invoice's adjustments); postpaid applied lines are shown but do not change the
//!   total, and the commit's true-up line on the invoice of its `invoice_schedule` date charges
//!   whatever of the commit is left.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::money::CreditTypeId;
use crate::overrides::Specifier;

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
