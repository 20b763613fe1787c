//! Tests of custom pricing units: worked examples computed by hand in the comments, and the law
//! "conversion to fiat is exact" (proptest).

use super::*;
use crate::accumulate::Accumulator;
use crate::balances::Balance;
use crate::invoice::Invoice;
use crate::metric::Aggregation;
use crate::money::CreditType;
use crate::pricing::price_invoice;
use crate::rating::tests::{d, metric, product, rate, row, state, usd, SEP};
use crate::rating::{ConversionOperation, Price, QuantityConversion, UsageRow};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use proptest::prelude::*;

fn cpu() -> CreditTypeId {
    CreditTypeId("cpu".into())
}

fn gpu() -> CreditTypeId {
    CreditTypeId("gpu".into())
}

/// Contract from 09-01 on a card in USD with conversions for "cpu" ("AI credits") at `cpu_rate`
/// and "gpu" ("GPU hours") at 100; product "tokens" priced at `price` in `tokens_in`, product
/// "storage" at 3 USD.
fn snapshot(tokens_in: CreditTypeId, price: &str, cpu_rate: &str) -> PricingSnapshot {
    let mut snap = crate::pricing::tests::snapshot();
    snap.contract.starting_at_ms = SEP.start_ms;
    snap.credit_types.push(CreditType {
        id: cpu(),
        name: "AI credits".into(),
    });
    snap.credit_types.push(CreditType {
        id: gpu(),
        name: "GPU hours".into(),
    });
    snap.credit_type_conversions = vec![
        CreditTypeConversion {
            custom_credit_type: cpu(),
            fiat_per_custom_credit: d(cpu_rate),
        },
        CreditTypeConversion {
            custom_credit_type: gpu(),
            fiat_per_custom_credit: d("100"),
        },
    ];
    for id in ["tokens", "storage"] {
        let m = metric(id, Aggregation::Sum, vec![]);
        snap.metrics.insert(id.to_string(), m);
        snap.products.push(product(id, state(id, &[], &[])));
    }
    let mut tokens = rate("tokens", &[], SEP.start_ms, Price::Flat(d(price)));
    tokens.credit_type = tokens_in;
    snap.rates = vec![
        tokens,
        rate("storage", &[], SEP.start_ms, Price::Flat(d("3"))),
    ];
    snap
}

/// A credit of `amount` in `credit_type` over September, for every product.
fn credit(id: &str, credit_type: &CreditTypeId, amount: &str, kind: &str) -> Balance {
    serde_json::from_value(serde_json::json!({
        "id": id,
        "kind": kind,
        "name": id.to_uppercase(),
        "product_id": "fixed",
        "contract_id": "c",
        "credit_type": credit_type.as_str(),
        "access": [{
            "id": format!("{id}/s"),
            "amount": amount,
            "starting_at_ms": SEP.start_ms,
            "ending_before_ms": SEP.end_ms,
        }],
    }))
    .unwrap()
}

fn usage(tokens: &str, storage: &str) -> Vec<UsageRow> {
    vec![
        row("tokens", &[], SEP.start_ms, Accumulator::Sum(d(tokens))),
        row("storage", &[], SEP.start_ms, Accumulator::Sum(d(storage))),
    ]
}

/// A line as these tests assert it: kind, name, credit type, quantity, unit price, total.
type Shown = (LineKind, String, String, Decimal, Decimal, Decimal);

fn shown(inv: &Invoice) -> Vec<Shown> {
    inv.lines
        .iter()
        .map(|l| {
            let ct = l.total.credit_type.as_str().to_string();
            (
                l.kind,
                l.name.clone(),
                ct,
                l.quantity,
                l.unit_price.value,
                l.total.value,
            )
        })
        .collect()
}

fn line(kind: LineKind, name: &str, ct: &str, q: &str, u: &str, total: &str) -> Shown {
    (kind, name.into(), ct.into(), d(q), d(u), d(total))
}

/// (subtotal, adjustments, total) in `ct`.
fn sums(inv: &Invoice, ct: &CreditTypeId) -> (Decimal, Decimal, Decimal) {
    (
        inv.subtotal.get(ct),
        inv.adjustments.get(ct),
        inv.total.get(ct),
    )
}

#[test]
fn a_custom_unit_credit_covers_part_and_the_rest_converts_exactly() {
    // Tokens: 100 × 2.5 = 250 AI credits; the credit's 100 covers 100 / 2.5 = 40 tokens, the
    // other 60 owe 150 AI credits. At 0.333333333333 cents per credit: 150 × 0.333333333333 =
    // 49.99999999995 cents. Storage: 7 × 3 = 21 cents. Fiat total 21 + 49.99999999995.
    let mut snap = snapshot(cpu(), "2.5", "0.333333333333");
    snap.balances.balances = vec![credit("cr", &cpu(), "100", "CREDIT")];
    let inv = price_invoice(&snap, &usage("100", "7"), SEP).unwrap();
    use LineKind::*;
    assert_eq!(
        shown(&inv),
        vec![
            line(Usage, "TOKENS", "cpu", "40", "2.5", "100"),
            line(AppliedCredit, "CR applied", "cpu", "1", "-100", "-100"),
            line(Usage, "TOKENS", "cpu", "60", "2.5", "150"),
            line(Usage, "STORAGE", "usd", "7", "3", "21"),
            line(
                CpuConversion,
                "AI credits",
                "usd",
                "150",
                "0.333333333333",
                "49.99999999995"
            ),
        ]
    );
    assert_eq!(sums(&inv, &cpu()), (d("250"), d("-100"), d("150")));
    let fiat = d("70.99999999995");
    assert_eq!(sums(&inv, &usd()), (fiat, d("0"), fiat));
    let conversion = inv.lines.last().unwrap();
    assert_eq!(conversion.segment, SEP);
    assert_eq!(conversion.product_id, "");
}

#[test]
fn a_third_of_a_credit_per_unit_and_a_divide_by_three_conversion_stay_exact() {
    // Tokens divided by 3: 100 / 3 = 33.333333333333 (12 places, half-even), at 0.3 AI credits
    // = 9.9999999999999 AI credits; at 0.75 cents per credit = 7.499999999999925 cents.
    let mut snap = snapshot(cpu(), "0.3", "0.75");
    snap.products[0].versions[0].1.quantity_conversion = Some(QuantityConversion {
        conversion_factor: d("3"),
        operation: ConversionOperation::Divide,
        name: None,
    });
    let inv = price_invoice(&snap, &usage("100", "0"), SEP).unwrap();
    let last = inv.lines.last().unwrap();
    assert_eq!(last.kind, LineKind::CpuConversion);
    assert_eq!(
        (last.quantity, last.unit_price.value, last.total.value),
        (d("9.9999999999999"), d("0.75"), d("7.499999999999925"))
    );
    assert_eq!(inv.total.get(&cpu()), d("9.9999999999999"));
    assert_eq!(inv.total.get(&usd()), d("7.499999999999925"));
}

#[test]
fn a_rate_of_a_third_converts_to_the_exact_product() {
    // 7 tokens × 0.333333333333333333 = 2.333333333333333331 AI credits; × 3 cents per
    // credit = 6.999999999999999993 cents: no rounding anywhere.
    let snap = snapshot(cpu(), "0.333333333333333333", "3");
    let inv = price_invoice(&snap, &usage("7", "0"), SEP).unwrap();
    assert_eq!(inv.total.get(&cpu()), d("2.333333333333333331"));
    assert_eq!(inv.total.get(&usd()), d("6.999999999999999993"));
}

#[test]
fn fully_covered_custom_spend_has_no_conversion_line() {
    // 100 × 2.5 = 250 AI credits, all covered by a 300 credit: nothing owed in AI credits.
    let mut snap = snapshot(cpu(), "2.5", "0.5");
    snap.balances.balances = vec![credit("cr", &cpu(), "300", "CREDIT")];
    let inv = price_invoice(&snap, &usage("100", "7"), SEP).unwrap();
    assert!(inv.lines.iter().all(|l| l.kind != LineKind::CpuConversion));
    assert_eq!(sums(&inv, &cpu()), (d("250"), d("-250"), d("0")));
    assert_eq!(inv.total.get(&usd()), d("21"));
}

#[test]
fn a_usd_credit_never_covers_custom_unit_spend() {
    // The USD credit covers only storage (21 of its 1000); the 250 AI credits convert at 0.5.
    let mut snap = snapshot(cpu(), "2.5", "0.5");
    snap.balances.balances = vec![credit("cr", &usd(), "1000", "CREDIT")];
    let inv = price_invoice(&snap, &usage("100", "7"), SEP).unwrap();
    let last = inv.lines.last().unwrap();
    assert_eq!((last.quantity, last.total.value), (d("250"), d("125")));
    // USD: 21 storage + 125 converted − 21 credited = 125.
    assert_eq!(sums(&inv, &usd()), (d("146"), d("-21"), d("125")));
}

#[test]
fn a_postpaid_custom_commit_still_bills_the_usage_it_records() {
    // A postpaid commit's applied line counts in no total: all 250 AI credits convert (× 2).
    let mut snap = snapshot(cpu(), "2.5", "2");
    snap.balances.balances = vec![credit("pc", &cpu(), "100", "POSTPAID_COMMIT")];
    let inv = price_invoice(&snap, &usage("100", "0"), SEP).unwrap();
    assert_eq!(inv.total.get(&cpu()), d("250"));
    assert_eq!(inv.total.get(&usd()), d("500"));
}

#[test]
fn each_custom_unit_converts_on_its_own_line_in_the_cards_order() {
    // Tokens in GPU hours: 4 × 1.5 = 6 GPU hours at 100 = 600 cents; nothing is owed in AI
    // credits, so one conversion line, named after its unit.
    let snap = snapshot(gpu(), "1.5", "0.5");
    let inv = price_invoice(&snap, &usage("4", "1"), SEP).unwrap();
    let conversions: Vec<Shown> = shown(&inv)
        .into_iter()
        .filter(|l| l.0 == LineKind::CpuConversion)
        .collect();
    assert_eq!(
        conversions,
        vec![line(
            LineKind::CpuConversion,
            "GPU hours",
            "usd",
            "6",
            "100",
            "600"
        )]
    );
    // Two units: storage moved to AI credits at 3 each = 3 AI credits, × 0.5 = 1.5 cents.
    let mut snap = snap;
    snap.rates[1].credit_type = cpu();
    let inv = price_invoice(&snap, &usage("4", "1"), SEP).unwrap();
    let names: Vec<&str> = inv
        .lines
        .iter()
        .filter(|l| l.kind == LineKind::CpuConversion)
        .map(|l| l.name.as_str())
        .collect();
    assert_eq!(names, ["AI credits", "GPU hours"]);
    assert_eq!(inv.total.get(&usd()), d("601.5"));
    snap.credit_type_conversions.reverse();
    let inv = price_invoice(&snap, &usage("4", "1"), SEP).unwrap();
    let last = inv.lines.last().unwrap();
    assert_eq!(
        (last.name.as_str(), last.total.value),
        ("AI credits", d("1.5"))
    );
}

#[test]
fn a_custom_total_without_a_conversion_is_an_error() {
    let mut snap = snapshot(cpu(), "2.5", "0.5");
    snap.credit_type_conversions
        .retain(|c| c.custom_credit_type != cpu());
    let err = price_invoice(&snap, &usage("100", "0"), SEP).unwrap_err();
    assert_eq!(err, RatingError::MissingConversion);
    // No custom spend, no conversion needed.
    assert!(price_invoice(&snap, &usage("0", "1"), SEP).is_ok());
}

#[test]
fn a_conversion_with_no_exact_product_is_an_overflow() {
    let snap = snapshot(cpu(), "1000000000000", "79228162514264337593543950335");
    let err = price_invoice(&snap, &usage("1", "0"), SEP).unwrap_err();
    assert_eq!(err, RatingError::Overflow);
}

proptest! {
    /// Conversion to fiat is exact: the conversion line's amount is the uncovered custom units
    /// times `fiat_per_custom_credit` exactly, and the fiat total is the fiat lines plus it.
    #[test]
    fn conversion_to_fiat_is_exact(
        tokens in 0u64..1_000_000,
        price in (1i64..10_000_000, 0u32..9),
        rate in (1i64..1_000_000_000_000, 0u32..13),
        storage in 0u64..10_000,
        covered in 0u64..3_000_000,
    ) {
        let price = Decimal::new(price.0, price.1).normalize().to_string();
        let rate = Decimal::new(rate.0, rate.1);
        let mut snap = snapshot(cpu(), &price, &rate.to_string());
        let amount = Decimal::from(covered);
        snap.balances.balances = vec![credit("cr", &cpu(), &amount.to_string(), "CREDIT")];
        let usage = usage(&tokens.to_string(), &storage.to_string());
        let inv = price_invoice(&snap, &usage, SEP).unwrap();
        let charge = Decimal::from(tokens) * d(&price);
        let owed = charge - amount.min(charge);
        let conversions: Vec<&InvoiceLine> =
            inv.lines.iter().filter(|l| l.kind == LineKind::CpuConversion).collect();
        prop_assert_eq!(inv.total.get(&cpu()), owed);
        if owed.is_zero() {
            prop_assert!(conversions.is_empty());
        } else {
            prop_assert_eq!(conversions.len(), 1);
            let c = conversions[0];
            prop_assert_eq!(c.quantity, owed);
            prop_assert_eq!(c.unit_price.value, rate);
            prop_assert_eq!(c.total.value, mul_exact(owed, rate).unwrap());
            prop_assert_eq!(&c.total.credit_type, &usd());
        }
        let fiat_lines = inv
            .lines
            .iter()
            .filter(|l| l.total.credit_type == usd() && l.kind != LineKind::CpuConversion)
            .fold(Decimal::ZERO, |s, l| s + l.total.value);
        let converted = conversions.iter().fold(Decimal::ZERO, |s, l| s + l.total.value);
        prop_assert_eq!(fiat_lines, Decimal::from(storage * 3));
        prop_assert_eq!(inv.total.get(&usd()), fiat_lines + converted);
    }
}
