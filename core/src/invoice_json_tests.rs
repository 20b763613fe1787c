//! The renderer `invoice_json` had before it serialized typed views: each invoice and line
//! built as a `serde_json::Value` tree, field by field. Kept as the oracle the views must match
//! byte for byte (random invoices of every line kind, below).

use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::str::FromStr;

use rust_decimal::Decimal;
use serde_json::{json, Map, Number, Value};

use super::{InvoiceHeader, ProductView, RenderError};
use crate::balances::{BalanceKind, BalanceRef};
use crate::invoice::{Invoice, InvoiceKind, InvoiceLine, LineKind};
use crate::money::{CreditType, CreditTypeId};
use crate::time::format_rfc3339_ms;

/// An exact decimal as a JSON number (its normalized text).
fn dec(d: Decimal) -> Value {
    let text = d.normalize().to_string();
    // A normalized Decimal's text is always a valid JSON number.
    Number::from_str(&text).map_or(Value::String(text), Value::Number)
}

/// An instant as RFC 3339.
fn time(ms: i64) -> Value {
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
pub fn old_invoice(
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
fn line(
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

mod views_match_the_old_renderer {
    use super::*;
    use crate::balances::BalanceKind;
    use crate::invoice::TierRef;
    use crate::money::{Amount, CreditType, Totals};
    use crate::period::Period;
    use alloc::vec;
    use proptest::prelude::*;

    use crate::invoice_json::{invoice, invoice_view, Times};

    const KINDS: [LineKind; 9] = [
        LineKind::Usage,
        LineKind::Scheduled,
        LineKind::ProfessionalService,
        LineKind::Subscription,
        LineKind::CommitPurchase,
        LineKind::AppliedCommit,
        LineKind::AppliedCredit,
        LineKind::TrueUp,
        LineKind::CpuConversion,
    ];
    const BALANCES: [BalanceKind; 3] = [
        BalanceKind::PrepaidCommit,
        BalanceKind::PostpaidCommit,
        BalanceKind::Credit,
    ];

    /// Text that needs escaping too, and keys whose order differs by byte and by char.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z_]{0,6}",
            Just("\"quoted\"\\ \u{1}\n\t é €".to_string()),
            Just("Z".to_string()),
            Just("_".to_string()),
        ]
    }

    fn decimal() -> impl Strategy<Value = Decimal> {
        prop_oneof![
            (any::<i64>(), 0u32..28).prop_map(|(m, s)| Decimal::new(m, s)),
            Just(Decimal::ZERO),
            Just(Decimal::MAX),
            Just(Decimal::MIN),
            Just(Decimal::new(-0, 3)),
            Just(Decimal::new(15000, 4)),
        ]
    }

    fn instant() -> impl Strategy<Value = i64> {
        prop_oneof![
            Just(1_733_011_200_000i64),
            Just(1_735_689_600_000i64),
            0i64..4_102_444_800_000,
            Just(i64::MAX),
        ]
    }

    fn balance() -> impl Strategy<Value = Option<BalanceRef>> {
        proptest::option::of((text(), 0usize..3, proptest::option::of(text())).prop_map(
            |(id, k, segment_id)| BalanceRef {
                id,
                kind: BALANCES[k],
                segment_id,
            },
        ))
    }

    fn tier() -> impl Strategy<Value = Option<TierRef>> {
        proptest::option::of(
            (0u32..5, decimal(), proptest::option::of(decimal())).prop_map(
                |(level, starting_at, size)| TierRef {
                    level,
                    starting_at,
                    size,
                },
            ),
        )
    }

    prop_compose! {
        fn line()(
            kind in 0usize..9,
            product in 0usize..4,
            name in text(),
            amounts in (decimal(), decimal(), decimal()),
            credit in 0usize..3,
            segment in (instant(), instant()),
            pricing in proptest::option::of(proptest::collection::btree_map(text(), text(), 0..3)),
            presentation in proptest::option::of(
                proptest::collection::btree_map(text(), proptest::option::of(text()), 0..3)),
            tier in tier(),
            balance in balance(),
            ids in (proptest::option::of(text()), proptest::option::of(text())),
            is_prorated in any::<bool>(),
        ) -> InvoiceLine {
            let credit_type = CreditTypeId(["usd", "cpu", "missing"][credit].into());
            InvoiceLine {
                kind: KINDS[kind],
                product_id: ["p0", "p1", "p2", "none"][product].into(),
                name,
                quantity: amounts.0,
                unit_price: Amount::new(credit_type.clone(), amounts.1),
                total: Amount::new(credit_type, amounts.2),
                segment: Period { start_ms: segment.0, end_ms: segment.1 },
                pricing_group_values: pricing,
                presentation_group_values: presentation,
                tier,
                balance,
                commit_unit_price: None,
                draw_prices: Vec::new(),
                scheduled_charge_id: ids.0,
                subscription_id: ids.1,
                is_prorated,
            }
        }
    }

    fn product() -> impl Strategy<Value = ProductView> {
        (
            proptest::collection::vec(text(), 0..3),
            proptest::collection::btree_map(text(), text(), 0..3),
            any::<bool>(),
        )
            .prop_map(|(tags, custom_fields, composite)| ProductView {
                tags,
                custom_fields,
                composite,
            })
    }

    prop_compose! {
        fn case()(
            lines in proptest::collection::vec(line(), 0..12),
            products in proptest::collection::vec(product(), 3),
            header in (text(), text(), text(), instant(), instant(), instant()),
            fields in (
                proptest::collection::btree_map(text(), text(), 0..3),
                proptest::collection::btree_map(text(), text(), 0..3),
                proptest::option::of(decimal()),
            ),
            totals in (decimal(), decimal()),
            scheduled in any::<bool>(),
            invoice_credit in 0usize..4,
        ) -> (InvoiceHeader, Invoice, BTreeMap<String, ProductView>) {
            let credit_type = CreditTypeId(["usd", "usd", "cpu", "missing"][invoice_credit].into());
            let mut subtotal = Totals::default();
            let _ = subtotal.add(&Amount::new(credit_type.clone(), totals.0));
            let mut total = Totals::default();
            let _ = total.add(&Amount::new(credit_type.clone(), totals.1));
            let header = InvoiceHeader {
                id: header.0,
                customer_id: header.1,
                contract_id: header.2,
                status: "DRAFT".into(),
                start_ms: header.3,
                end_ms: header.4,
                issued_at_ms: header.5,
                contract_custom_fields: fields.0,
                customer_custom_fields: fields.1,
                net_payment_terms_days: fields.2,
            };
            let priced = Invoice {
                kind: if scheduled { InvoiceKind::Scheduled } else { InvoiceKind::Usage },
                contract_id: "c".into(),
                period: Period { start_ms: header.start_ms, end_ms: header.end_ms },
                credit_type,
                lines,
                subtotal,
                adjustments: Totals::default(),
                total,
                deductions: vec![],
            };
            let products = ["p0", "p1", "p2"].iter().map(|p| String::from(*p)).zip(products).collect();
            (header, priced, products)
        }
    }

    fn credit_types() -> Vec<CreditType> {
        vec![
            CreditType {
                id: CreditTypeId("usd".into()),
                name: "USD (cents)".into(),
            },
            CreditType {
                id: CreditTypeId("cpu".into()),
                name: "CPU \"units\"".into(),
            },
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn same_bytes_and_same_value((header, priced, products) in case()) {
            let credit_types = credit_types();
            let old = old_invoice(&header, &priced, &products, &credit_types);
            let times = Times::of(&header, &priced);
            let view = invoice_view(&header, &priced, &products, &credit_types, &times);
            match (old, view) {
                (Ok(old), Ok(view)) => {
                    prop_assert_eq!(
                        serde_json::to_string(&old).unwrap(),
                        serde_json::to_string(&view).unwrap()
                    );
                    prop_assert_eq!(
                        invoice(&header, &priced, &products, &credit_types),
                        Ok(old)
                    );
                }
                (Err(old), Err(view)) => prop_assert_eq!(old, view),
                (old, view) => prop_assert!(false, "old {:?}, view {:?}", old.is_ok(), view.is_ok()),
            }
        }
    }
}
