//! The API's JSON of a priced [`Invoice`]: the one place an invoice is shaped for the wire, so
//! central's invoices, `previewEvents` and the browser preview (the `wasm` feature) show the
//! same bytes for the same pricing.
//!
//! [`invoice_view`] borrows a priced invoice as typed views whose fields are declared in the
//! order `serde_json::Map` sorts keys, so serializing a view straight to text
//! (`serde_json::to_writer`, what previews do) writes the same bytes as serializing the
//! `Value` that [`invoice`] makes of it (what central's invoices do).
//!
//! Invariants:
//! - Amounts and quantities are JSON numbers holding the decimal's exact, normalized text
//!   (serde_json's `arbitrary_precision`), never floats; instants are RFC 3339 (`Z`).
//! - Optional fields the document declares non-nullable are left out when absent, never `null`.

use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Number, Value};

use crate::balances::{BalanceKind, BalanceRef};
use crate::invoice::{Invoice, InvoiceKind, InvoiceLine, LineKind};
use crate::money::{CreditType, CreditTypeId};
use crate::time::format_rfc3339_ms;

/// What the invoice shows of a product besides what pricing uses.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ProductView {
    /// Its tags as they are now.
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub custom_fields: BTreeMap<String, String>,
    /// A COMPOSITE product (its percentage lines are `CompositeProductListItem`s).
    #[serde(default)]
    pub composite: bool,
}

/// The invoice's fields that come from the stored row, the contract and the customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceHeader {
    pub id: String,
    pub customer_id: String,
    pub contract_id: String,
    /// `DRAFT`, `FINALIZED` or `VOID`.
    pub status: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub issued_at_ms: i64,
    #[serde(default)]
    pub contract_custom_fields: BTreeMap<String, String>,
    #[serde(default)]
    pub customer_custom_fields: BTreeMap<String, String>,
    /// The contract's `net_payment_terms_days`, exact; left out when the contract sets none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_payment_terms_days: Option<Decimal>,
}

/// Why an invoice could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenderError {
    /// A line or the invoice names a credit type the snapshot does not have.
    UnknownCreditType(String),
}

impl core::fmt::Display for RenderError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RenderError::UnknownCreditType(id) => {
                write!(f, "credit type {id} is not in the snapshot")
            }
        }
    }
}

/// An exact decimal as a JSON number (its normalized text).
pub fn dec(d: Decimal) -> Value {
    let text = d.normalize().to_string();
    // A normalized Decimal's text is always a valid JSON number.
    Number::from_str(&text).map_or(Value::String(text), Value::Number)
}

/// An instant as RFC 3339.
pub fn time(ms: i64) -> Value {
    Value::String(format_rfc3339_ms(ms))
}

/// A decimal serialized as [`dec`] makes it: a JSON number of its normalized text.
#[derive(Debug, Clone, Copy)]
pub struct Dec(pub Decimal);

impl Serialize for Dec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = self.0.normalize().to_string();
        match Number::from_str(&text) {
            Ok(n) => n.serialize(s),
            Err(_) => s.serialize_str(&text),
        }
    }
}

/// The RFC 3339 text of every instant an invoice shows, formatted once each (a preview's lines
/// mostly share their period's two instants).
#[derive(Debug, Default)]
pub struct Times(BTreeMap<i64, String>);

impl Times {
    /// The instants of `priced`'s lines and `header`.
    pub fn of(header: &InvoiceHeader, priced: &Invoice) -> Times {
        let mut t = Times::default();
        t.add(header.start_ms);
        t.add(header.end_ms);
        t.add(header.issued_at_ms);
        for l in &priced.lines {
            t.add(l.segment.start_ms);
            t.add(l.segment.end_ms);
        }
        t
    }

    fn add(&mut self, ms: i64) {
        self.0.entry(ms).or_insert_with(|| format_rfc3339_ms(ms));
    }

    fn get(&self, ms: i64) -> &str {
        self.0.get(&ms).map_or("invalid-time", String::as_str)
    }
}

static NO_FIELDS: BTreeMap<String, String> = BTreeMap::new();

/// `{id, name}` of a credit type.
#[derive(Debug, Serialize)]
pub struct CreditTypeView<'a> {
    id: &'a str,
    name: &'a str,
}

fn credit_type_view<'a>(
    credit_types: &'a [CreditType],
    id: &CreditTypeId,
) -> Result<CreditTypeView<'a>, RenderError> {
    let c = credit_types
        .iter()
        .find(|c| &c.id == id)
        .ok_or_else(|| RenderError::UnknownCreditType(id.as_str().to_string()))?;
    Ok(CreditTypeView {
        id: c.id.as_str(),
        name: &c.name,
    })
}

/// The API's invoice: fields in `Map`'s (byte-wise) key order.
#[derive(Debug, Serialize)]
pub struct InvoiceView<'a> {
    contract_custom_fields: &'a BTreeMap<String, String>,
    contract_id: &'a str,
    credit_type: CreditTypeView<'a>,
    custom_fields: &'a BTreeMap<String, String>,
    customer_custom_fields: &'a BTreeMap<String, String>,
    customer_id: &'a str,
    end_timestamp: &'a str,
    id: &'a str,
    issued_at: &'a str,
    line_items: Vec<LineView<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    net_payment_terms_days: Option<Dec>,
    start_timestamp: &'a str,
    status: &'a str,
    subtotal: Dec,
    total: Dec,
    #[serde(rename = "type")]
    kind: &'static str,
}

/// One line item: fields in `Map`'s (byte-wise) key order; absent ones are left out.
#[derive(Debug, Serialize)]
pub struct LineView<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    applied_commit_or_credit: Option<AppliedView<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    commit_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    commit_segment_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    commit_type: Option<&'static str>,
    credit_type: CreditTypeView<'a>,
    ending_before: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    is_prorated: Option<bool>,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    postpaid_commit: Option<IdView<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presentation_group_values: Option<&'a BTreeMap<String, Option<String>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pricing_group_values: Option<&'a BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    product_custom_fields: Option<&'a BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    product_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    product_tags: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    product_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    professional_service_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    quantity: Option<Dec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scheduled_charge_id: Option<&'a str>,
    starting_at: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    subscription_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tier: Option<TierView>,
    total: Dec,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    unit_price: Option<Dec>,
}

#[derive(Debug, Serialize)]
struct AppliedView<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Debug, Serialize)]
struct IdView<'a> {
    id: &'a str,
}

/// A line's tier; `size` is `null` on the last, unbounded one.
#[derive(Debug, Serialize)]
struct TierView {
    level: u32,
    size: Option<String>,
    starting_at: String,
}

/// The API's invoice JSON: the header's fields, then the priced invoice's lines and totals.
pub fn invoice(
    header: &InvoiceHeader,
    priced: &Invoice,
    products: &BTreeMap<String, ProductView>,
    credit_types: &[CreditType],
) -> Result<Value, RenderError> {
    let times = Times::of(header, priced);
    let view = invoice_view(header, priced, products, credit_types, &times)?;
    // Serializing these views cannot fail: every key is a string, every number valid.
    Ok(serde_json::to_value(view).unwrap_or(Value::Null))
}

/// [`invoice`] as a typed view borrowing its parts (`times` must be `Times::of` the same
/// header and invoice); serialized, it is the same bytes as [`invoice`]'s `Value`.
pub fn invoice_view<'a>(
    header: &'a InvoiceHeader,
    priced: &'a Invoice,
    products: &'a BTreeMap<String, ProductView>,
    credit_types: &'a [CreditType],
    times: &'a Times,
) -> Result<InvoiceView<'a>, RenderError> {
    let line_items = priced
        .lines
        .iter()
        .map(|l| line(l, products.get(&l.product_id), credit_types, times))
        .collect::<Result<Vec<_>, RenderError>>()?;
    Ok(InvoiceView {
        contract_custom_fields: &header.contract_custom_fields,
        contract_id: &header.contract_id,
        credit_type: credit_type_view(credit_types, &priced.credit_type)?,
        custom_fields: &NO_FIELDS,
        customer_custom_fields: &header.customer_custom_fields,
        customer_id: &header.customer_id,
        end_timestamp: times.get(header.end_ms),
        id: &header.id,
        issued_at: times.get(header.issued_at_ms),
        line_items,
        net_payment_terms_days: header.net_payment_terms_days.map(Dec),
        start_timestamp: times.get(header.start_ms),
        status: &header.status,
        subtotal: Dec(priced.subtotal.get(&priced.credit_type)),
        total: Dec(priced.total.get(&priced.credit_type)),
        kind: match priced.kind {
            InvoiceKind::Usage => "USAGE",
            InvoiceKind::Scheduled => "SCHEDULED",
        },
    })
}

/// The wire names of a line's kind: its `type` and `product_type`.
fn kind_names(kind: LineKind) -> (&'static str, &'static str) {
    match kind {
        LineKind::Usage => ("usage", "UsageProductListItem"),
        LineKind::Scheduled => ("scheduled", "FixedProductListItem"),
        LineKind::ProfessionalService => ("professional_service", "ProServiceProductListItem"),
        LineKind::Subscription => ("subscription", "SubscriptionProductListItem"),
        LineKind::CommitPurchase => ("commit_purchase", "FixedProductListItem"),
        LineKind::AppliedCommit | LineKind::AppliedCredit => {
            ("applied_commit_or_credit", "FixedProductListItem")
        }
        LineKind::TrueUp => ("postpaid_trueup", "FixedProductListItem"),
        LineKind::CpuConversion => ("cpu_conversion", ""),
    }
}

/// One line item as the API shows it.
fn line<'a>(
    l: &'a InvoiceLine,
    product: Option<&'a ProductView>,
    credit_types: &'a [CreditType],
    times: &'a Times,
) -> Result<LineView<'a>, RenderError> {
    let (line_type, mut product_type) = kind_names(l.kind);
    // A composite's percentage line is a `usage` line of a COMPOSITE product (the document's
    // `InvoiceLineItem.type`: "usage product or composite product").
    if l.kind == LineKind::Usage && product.is_some_and(|p| p.composite) {
        product_type = "CompositeProductListItem";
    }
    // A conversion belongs to no product: units of a custom credit type at its rate.
    let of_product = l.kind != LineKind::CpuConversion;
    let mut v = LineView {
        applied_commit_or_credit: None,
        commit_id: None,
        commit_segment_id: None,
        commit_type: None,
        credit_type: credit_type_view(credit_types, &l.total.credit_type)?,
        ending_before: times.get(l.segment.end_ms),
        is_prorated: (l.kind == LineKind::Subscription).then_some(l.is_prorated),
        name: &l.name,
        postpaid_commit: None,
        presentation_group_values: l.presentation_group_values.as_ref(),
        pricing_group_values: l.pricing_group_values.as_ref(),
        product_custom_fields: of_product.then(|| product.map_or(&NO_FIELDS, |p| &p.custom_fields)),
        product_id: of_product.then_some(l.product_id.as_str()),
        product_tags: of_product.then(|| product.map_or(&[][..], |p| p.tags.as_slice())),
        product_type: of_product.then_some(product_type),
        professional_service_id: None,
        quantity: Some(Dec(l.quantity)),
        scheduled_charge_id: None,
        starting_at: times.get(l.segment.start_ms),
        subscription_id: None,
        tier: l.tier.as_ref().map(|t| TierView {
            level: t.level,
            size: t.size.map(|s| s.normalize().to_string()),
            starting_at: t.starting_at.normalize().to_string(),
        }),
        total: Dec(l.total.value),
        kind: line_type,
        unit_price: Some(Dec(l.unit_price.value)),
    };
    if let Some(b) = &l.balance {
        balance_fields(&mut v, l.kind, b);
    }
    let id = l.scheduled_charge_id.as_deref();
    match l.kind {
        LineKind::ProfessionalService => v.professional_service_id = id,
        _ => v.scheduled_charge_id = id,
    }
    if l.kind == LineKind::Subscription {
        v.subscription_id = l.subscription_id.as_deref();
    }
    Ok(v)
}

/// The fields naming the commit or credit a line belongs to (§2.14 `LineItem`).
fn balance_fields<'a>(v: &mut LineView<'a>, kind: LineKind, b: &'a BalanceRef) {
    match kind {
        LineKind::AppliedCommit | LineKind::AppliedCredit => {
            v.applied_commit_or_credit = Some(AppliedView {
                id: &b.id,
                kind: b.kind.as_str(),
            });
            // An applied line is an amount, not units at a price.
            v.quantity = None;
            v.unit_price = None;
        }
        LineKind::TrueUp => v.postpaid_commit = Some(IdView { id: &b.id }),
        _ => {
            v.commit_id = Some(&b.id);
            v.commit_segment_id = b.segment_id.as_deref();
            v.commit_type = match b.kind {
                BalanceKind::PrepaidCommit => Some("PrepaidCommit"),
                BalanceKind::PostpaidCommit => Some("PostpaidCommit"),
                BalanceKind::Credit => None,
            };
        }
    }
}

#[cfg(test)]
#[path = "invoice_json_tests.rs"]
mod invoice_json_tests;
