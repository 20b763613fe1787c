//! The API's JSON of a priced [`Invoice`]: the one place an invoice is shaped for the wire, so
//! central's invoices, `previewEvents` and the browser preview (the `wasm` feature) show the
//! same bytes for the same pricing.
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
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Number, Value};

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

/// Sets `key` when `value` is `Some`, removes it when `None`.
fn set_opt(obj: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    match value {
        Some(v) => {
            obj.insert(key.to_string(), v);
        }
        None => {
            obj.remove(key);
        }
    }
}

fn credit_type_json(credit_types: &[CreditType], id: &CreditTypeId) -> Result<Value, RenderError> {
    let c = credit_types
        .iter()
        .find(|c| &c.id == id)
        .ok_or_else(|| RenderError::UnknownCreditType(id.as_str().to_string()))?;
    Ok(json!({ "id": c.id.as_str(), "name": c.name }))
}

/// The API's invoice JSON: the header's fields, then the priced invoice's lines and totals.
pub fn invoice(
    header: &InvoiceHeader,
    priced: &Invoice,
    products: &BTreeMap<String, ProductView>,
    credit_types: &[CreditType],
) -> Result<Value, RenderError> {
    let lines = priced
        .lines
        .iter()
        .map(|l| line(l, products.get(&l.product_id), credit_types))
        .collect::<Result<Vec<Value>, RenderError>>()?;
    let mut v = json!({
        "id": header.id,
        "customer_id": header.customer_id,
        "contract_id": header.contract_id,
        "type": match priced.kind {
            InvoiceKind::Usage => "USAGE",
            InvoiceKind::Scheduled => "SCHEDULED",
        },
        "status": header.status,
        "start_timestamp": time(header.start_ms),
        "end_timestamp": time(header.end_ms),
        "issued_at": time(header.issued_at_ms),
        "credit_type": credit_type_json(credit_types, &priced.credit_type)?,
        "line_items": Value::Null,
        "subtotal": dec(priced.subtotal.get(&priced.credit_type)),
        "total": dec(priced.total.get(&priced.credit_type)),
        "contract_custom_fields": header.contract_custom_fields,
        "customer_custom_fields": header.customer_custom_fields,
        "custom_fields": {},
    });
    if let Some(map) = v.as_object_mut() {
        // Moved in, not through `json!` (which would serialize every line into a copy).
        map.insert("line_items".into(), Value::Array(lines));
        set_opt(
            map,
            "net_payment_terms_days",
            header.net_payment_terms_days.map(dec),
        );
    }
    Ok(v)
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
pub fn line(
    l: &InvoiceLine,
    product: Option<&ProductView>,
    credit_types: &[CreditType],
) -> Result<Value, RenderError> {
    let (line_type, mut product_type) = kind_names(l.kind);
    // A composite's percentage line is a `usage` line of a COMPOSITE product (the document's
    // `InvoiceLineItem.type`: "usage product or composite product").
    if l.kind == LineKind::Usage && product.is_some_and(|p| p.composite) {
        product_type = "CompositeProductListItem";
    }
    // Built field by field: `json!` would serialize each value into a copy.
    let mut map = Map::new();
    let mut put = |k: &str, v: Value| {
        map.insert(k.into(), v);
    };
    put("name", Value::String(l.name.clone()));
    put("type", Value::String(line_type.into()));
    put("quantity", dec(l.quantity));
    put("unit_price", dec(l.unit_price.value));
    put("total", dec(l.total.value));
    put(
        "credit_type",
        credit_type_json(credit_types, &l.total.credit_type)?,
    );
    put("starting_at", time(l.segment.start_ms));
    put("ending_before", time(l.segment.end_ms));
    // A conversion belongs to no product: units of a custom credit type at its rate.
    if l.kind != LineKind::CpuConversion {
        put("product_id", Value::String(l.product_id.clone()));
        put("product_type", Value::String(product_type.into()));
        let tags = product.map(|p| p.tags.iter().cloned().map(Value::String).collect());
        put("product_tags", Value::Array(tags.unwrap_or_default()));
        let fields = product.map(|p| {
            p.custom_fields
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect()
        });
        put(
            "product_custom_fields",
            Value::Object(fields.unwrap_or_default()),
        );
    }
    if let Some(p) = &l.pricing_group_values {
        let values = p.iter().map(|(k, v)| (k.clone(), Value::String(v.clone())));
        map.insert(
            "pricing_group_values".into(),
            Value::Object(values.collect()),
        );
    }
    if let Some(p) = &l.presentation_group_values {
        let values = p.iter().map(|(k, v)| {
            let v = v.clone().map_or(Value::Null, Value::String);
            (k.clone(), v)
        });
        map.insert(
            "presentation_group_values".into(),
            Value::Object(values.collect()),
        );
    }
    if let Some(t) = &l.tier {
        map.insert(
            "tier".into(),
            json!({
                "level": t.level,
                "starting_at": t.starting_at.normalize().to_string(),
                "size": t.size.map(|s| s.normalize().to_string()),
            }),
        );
    }
    if let Some(b) = &l.balance {
        balance_fields(&mut map, l.kind, b);
    }
    let id_field = match l.kind {
        LineKind::ProfessionalService => "professional_service_id",
        _ => "scheduled_charge_id",
    };
    set_opt(
        &mut map,
        id_field,
        l.scheduled_charge_id.clone().map(Value::String),
    );
    if l.kind == LineKind::Subscription {
        set_opt(
            &mut map,
            "subscription_id",
            l.subscription_id.clone().map(Value::String),
        );
        map.insert("is_prorated".into(), Value::Bool(l.is_prorated));
    }
    Ok(Value::Object(map))
}

/// The fields naming the commit or credit a line belongs to (§2.14 `LineItem`).
fn balance_fields(v: &mut Map<String, Value>, kind: LineKind, b: &BalanceRef) {
    match kind {
        LineKind::AppliedCommit | LineKind::AppliedCredit => {
            v.insert(
                "applied_commit_or_credit".into(),
                json!({ "id": b.id, "type": b.kind.as_str() }),
            );
            // An applied line is an amount, not units at a price.
            v.remove("quantity");
            v.remove("unit_price");
        }
        LineKind::TrueUp => {
            v.insert("postpaid_commit".into(), json!({ "id": b.id }));
        }
        _ => {
            v.insert("commit_id".into(), Value::String(b.id.clone()));
            set_opt(
                v,
                "commit_segment_id",
                b.segment_id.clone().map(Value::String),
            );
            let commit_type = match b.kind {
                BalanceKind::PrepaidCommit => Some("PrepaidCommit"),
                BalanceKind::PostpaidCommit => Some("PostpaidCommit"),
                BalanceKind::Credit => None,
            };
            set_opt(
                v,
                "commit_type",
                commit_type.map(|t| Value::String(t.into())),
            );
        }
    }
}
