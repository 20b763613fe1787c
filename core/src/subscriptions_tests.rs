//! Subscriptions: hand-computed charges for the rules in the module docs.

use super::*;
use crate::balances::ProrationRoundingMethod;
use crate::invoice::Invoice;
use crate::pricing::{price_invoice, price_scheduled, scheduled_instants};
use crate::time::parse_rfc3339_ms;
use alloc::collections::BTreeMap;
use alloc::vec;
use proptest::prelude::*;

fn t(s: &str) -> i64 {
    parse_rfc3339_ms(s).unwrap()
}

fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

fn usd() -> CreditTypeId {
    CreditTypeId("usd".into())
}

fn rate(price: &str, frequency: Frequency, from: &str) -> Rate {
    Rate {
        product_id: "seats".into(),
        pricing_group_values: BTreeMap::new(),
        starting_at_ms: t(from),
        ending_before_ms: None,
        entitled: true,
        price: Price::Flat(d(price)),
        credit_type: usd(),
        billing_frequency: Some(frequency),
        commit_rate: None,
    }
}

fn sub(collection: Collection, is_prorated: bool, quantities: &[(&str, &str)]) -> Subscription {
    Subscription {
        id: "sub".into(),
        product_id: "seats".into(),
        name: "Seats".into(),
        product_tags: vec![],
        billing_frequency: Frequency::Monthly,
        collection,
        is_prorated,
        invoice_behavior: InvoiceBehavior::BillImmediately,
        rounding: None,
        starting_at_ms: t(quantities[0].0),
        ending_before_ms: None,
        anchor_ms: t("2024-01-01T00:00:00Z"),
        placement: Placement::OnUsageInvoice,
        quantities: quantities
            .iter()
            .map(|(at, q)| QuantityStep {
                starting_at_ms: t(at),
                quantity: d(q),
            })
            .collect(),
    }
}

/// A monthly contract from 2024-01-01 with a monthly seat rate of 3000 (cents).
fn snapshot(s: Subscription) -> PricingSnapshot {
    let mut snap = crate::pricing::tests::snapshot();
    snap.contract.starting_at_ms = t("2024-01-01T00:00:00Z");
    snap.rates = vec![rate("3000", Frequency::Monthly, "2024-01-01T00:00:00Z")];
    snap.contract.terms.subscriptions = vec![s];
    snap
}

fn month(from: &str, to: &str) -> Period {
    Period {
        start_ms: t(from),
        end_ms: t(to),
    }
}

/// `(quantity, unit_price, total, is_prorated, span start)` of each subscription line.
fn lines(inv: &Invoice) -> Vec<(Decimal, Decimal, Decimal, bool, i64)> {
    inv.lines
        .iter()
        .filter(|l| l.kind == LineKind::Subscription)
        .map(|l| {
            assert_eq!(l.subscription_id.as_deref(), Some("sub"));
            (
                l.quantity,
                l.unit_price.value,
                l.total.value,
                l.is_prorated,
                l.segment.start_ms,
            )
        })
        .collect()
}

/// The usage invoice of `[from, to)`.
fn inv(s: &PricingSnapshot, from: &str, to: &str) -> Invoice {
    price_invoice(s, &[], month(from, to)).unwrap()
}

fn usd_total(inv: &Invoice) -> Decimal {
    inv.total.get(&usd())
}

#[test]
fn advance_bills_each_month_at_its_start_on_that_months_usage_invoice() {
    let s = snapshot(sub(
        Collection::Advance,
        true,
        &[("2024-01-01T00:00:00Z", "5")],
    ));
    let jan = inv(&s, "2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z");
    assert_eq!(
        lines(&jan),
        [(
            d("5"),
            d("3000"),
            d("15000"),
            false,
            t("2024-01-01T00:00:00Z")
        )]
    );
    assert_eq!(usd_total(&jan), d("15000"));
    let feb = inv(&s, "2024-02-01T00:00:00Z", "2024-03-01T00:00:00Z");
    assert_eq!(lines(&feb)[0].2, d("15000"));
}

#[test]
fn a_mid_month_start_is_prorated_by_its_share_of_the_month() {
    // Starts 2024-01-11: 21 of January's 31 days, 3000 × 21/31 = 2032.258064516129032… → 12
    // places half-even: 2032.258064516129; × 4 seats = 8129.032258064516.
    let s = snapshot(sub(
        Collection::Advance,
        true,
        &[("2024-01-11T00:00:00Z", "4")],
    ));
    let jan = inv(&s, "2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z");
    assert_eq!(
        lines(&jan),
        [(
            d("4"),
            d("2032.258064516129"),
            d("8129.032258064516"),
            true,
            t("2024-01-11T00:00:00Z")
        )]
    );
    // Not prorated: the full price for the partial month.
    let s = snapshot(sub(
        Collection::Advance,
        false,
        &[("2024-01-11T00:00:00Z", "4")],
    ));
    let jan = inv(&s, "2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z");
    assert_eq!(
        lines(&jan),
        [(
            d("4"),
            d("3000"),
            d("12000"),
            false,
            t("2024-01-11T00:00:00Z")
        )]
    );
}

#[test]
fn proration_rounding_applies_to_the_prorated_unit_price() {
    // 3000 × 10/31 = 967.741935…: HALF_UP to 0 places 968, FLOOR at −2 places 900, CEILING at
    // 2 places 967.75.
    for (method, places, unit) in [
        (ProrationRoundingMethod::HalfUp, 0, "968"),
        (ProrationRoundingMethod::Floor, -2, "900"),
        (ProrationRoundingMethod::Ceiling, 2, "967.75"),
    ] {
        let mut s = sub(Collection::Advance, true, &[("2024-01-22T00:00:00Z", "3")]);
        s.rounding = Some(ProrationRounding {
            method,
            decimal_places: places,
        });
        let inv = price_invoice(
            &snapshot(s),
            &[],
            month("2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z"),
        )
        .unwrap();
        assert_eq!(lines(&inv)[0].1, d(unit));
        assert_eq!(lines(&inv)[0].2, d(unit) * d("3"));
    }
}

#[test]
fn seat_increases_bill_the_rest_of_the_month_and_decreases_wait_for_the_next() {
    // April 2024 has 30 days. 10 seats from 04-01; 13 from 04-16 (15 days left); 11 from 04-21;
    // 14 from 04-26 (5 days left: only 1 seat above the 13 already charged).
    let mut s = sub(
        Collection::Advance,
        true,
        &[
            ("2024-04-01T00:00:00Z", "10"),
            ("2024-04-16T00:00:00Z", "13"),
            ("2024-04-21T00:00:00Z", "11"),
            ("2024-04-26T00:00:00Z", "14"),
        ],
    );
    s.starting_at_ms = t("2024-01-01T00:00:00Z");
    s.quantities[0].starting_at_ms = t("2024-01-01T00:00:00Z");
    let snap = snapshot(s);
    let apr = inv(&snap, "2024-04-01T00:00:00Z", "2024-05-01T00:00:00Z");
    assert_eq!(
        lines(&apr),
        [
            (
                d("10"),
                d("3000"),
                d("30000"),
                false,
                t("2024-04-01T00:00:00Z")
            ),
            // 3000 × 15/30 = 1500
            (
                d("3"),
                d("1500"),
                d("4500"),
                true,
                t("2024-04-16T00:00:00Z")
            ),
            // 3000 × 5/30 = 500
            (d("1"), d("500"), d("500"), true, t("2024-04-26T00:00:00Z")),
        ]
    );
    assert_eq!(usd_total(&apr), d("35000"));
    // May starts from the quantity at its start (14).
    let may = inv(&snap, "2024-05-01T00:00:00Z", "2024-06-01T00:00:00Z");
    assert_eq!(
        lines(&may),
        [(
            d("14"),
            d("3000"),
            d("42000"),
            false,
            t("2024-05-01T00:00:00Z")
        )]
    );
}

#[test]
fn a_third_of_a_month_prorates_to_twelve_places() {
    // A 30-day month, increase of 1 seat at 04-21 00:00 + 0h: 10 days left = 1/3 of the
    // month: 100 × 1/3 = 33.333333333333 (half-even at 12 places).
    let mut s = sub(
        Collection::Advance,
        true,
        &[("2024-04-01T00:00:00Z", "1"), ("2024-04-21T00:00:00Z", "2")],
    );
    s.starting_at_ms = t("2024-04-01T00:00:00Z");
    let mut snap = snapshot(s);
    snap.rates = vec![rate("100", Frequency::Monthly, "2024-01-01T00:00:00Z")];
    let apr = inv(&snap, "2024-04-01T00:00:00Z", "2024-05-01T00:00:00Z");
    assert_eq!(
        lines(&apr)[1],
        (
            d("1"),
            d("33.333333333333"),
            d("33.333333333333"),
            true,
            t("2024-04-21T00:00:00Z")
        )
    );
    assert_eq!(usd_total(&apr), d("133.333333333333"));
}

#[test]
fn arrears_bills_at_the_period_end_on_the_invoice_of_the_period_it_pays_for() {
    let mut s = sub(
        Collection::Arrears,
        true,
        &[
            ("2024-04-01T00:00:00Z", "10"),
            ("2024-04-16T00:00:00Z", "12"),
        ],
    );
    s.placement = Placement::OnUsageInvoice;
    let snap = snapshot(s);
    let apr = inv(&snap, "2024-04-01T00:00:00Z", "2024-05-01T00:00:00Z");
    assert_eq!(
        lines(&apr),
        [
            (
                d("10"),
                d("3000"),
                d("30000"),
                false,
                t("2024-04-01T00:00:00Z")
            ),
            (
                d("2"),
                d("1500"),
                d("3000"),
                true,
                t("2024-04-16T00:00:00Z")
            ),
        ]
    );
    // Nothing of April on May's invoice (the charge at 05-01 belongs to April).
    let may = inv(&snap, "2024-05-01T00:00:00Z", "2024-06-01T00:00:00Z");
    assert_eq!(
        lines(&may),
        [(
            d("12"),
            d("3000"),
            d("36000"),
            false,
            t("2024-05-01T00:00:00Z")
        )]
    );
}

#[test]
fn scheduled_placement_bills_on_scheduled_invoices_at_each_instant() {
    let mut s = sub(
        Collection::Advance,
        true,
        &[
            ("2024-04-01T00:00:00Z", "10"),
            ("2024-04-16T00:00:00Z", "12"),
        ],
    );
    s.placement = Placement::OnScheduledInvoice;
    s.ending_before_ms = Some(t("2024-06-01T00:00:00Z"));
    let snap = snapshot(s);
    assert_eq!(
        scheduled_instants(&snap, t("2030-01-01T00:00:00Z")),
        [
            t("2024-04-01T00:00:00Z"),
            t("2024-04-16T00:00:00Z"),
            t("2024-05-01T00:00:00Z")
        ]
    );
    // Bounded by `until`.
    assert_eq!(
        scheduled_instants(&snap, t("2024-04-20T00:00:00Z")).len(),
        2
    );
    let inc = price_scheduled(&snap, t("2024-04-16T00:00:00Z")).unwrap();
    assert_eq!(
        lines(&inc),
        [(
            d("2"),
            d("1500"),
            d("3000"),
            true,
            t("2024-04-16T00:00:00Z")
        )]
    );
    let usage = inv(&snap, "2024-04-01T00:00:00Z", "2024-05-01T00:00:00Z");
    assert!(lines(&usage).is_empty());

    // BILL_ON_NEXT_COLLECTION_DATE moves the increase to the period's end.
    let mut s = snap.contract.terms.subscriptions[0].clone();
    s.invoice_behavior = InvoiceBehavior::BillOnNextCollectionDate;
    let snap = snapshot(s);
    let may = price_scheduled(&snap, t("2024-05-01T00:00:00Z")).unwrap();
    assert_eq!(
        lines(&may),
        [
            (
                d("2"),
                d("1500"),
                d("3000"),
                true,
                t("2024-04-16T00:00:00Z")
            ),
            (
                d("12"),
                d("3000"),
                d("36000"),
                false,
                t("2024-05-01T00:00:00Z")
            ),
        ]
    );
    assert!(price_scheduled(&snap, t("2024-04-16T00:00:00Z"))
        .unwrap()
        .lines
        .is_empty());
}

#[test]
fn an_end_inside_a_month_is_prorated_and_nothing_is_billed_after_it() {
    let mut s = sub(Collection::Advance, true, &[("2024-04-01T00:00:00Z", "2")]);
    s.ending_before_ms = Some(t("2024-04-11T00:00:00Z"));
    let snap = snapshot(s);
    let apr = inv(&snap, "2024-04-01T00:00:00Z", "2024-05-01T00:00:00Z");
    // 10 of 30 days: 3000 / 3 = 1000.
    assert_eq!(
        lines(&apr),
        [(
            d("2"),
            d("1000"),
            d("2000"),
            true,
            t("2024-04-01T00:00:00Z")
        )]
    );
    let may = inv(&snap, "2024-05-01T00:00:00Z", "2024-06-01T00:00:00Z");
    assert!(lines(&may).is_empty());
    // The contract's end cuts it too.
    let mut snap = snapshot(sub(
        Collection::Advance,
        true,
        &[("2024-04-01T00:00:00Z", "2")],
    ));
    snap.contract.ending_before_ms = Some(t("2024-04-11T00:00:00Z"));
    let apr = inv(&snap, "2024-04-01T00:00:00Z", "2024-05-01T00:00:00Z");
    assert_eq!(lines(&apr)[0].2, d("2000"));
}

#[test]
fn annual_subscriptions_bill_once_a_year_on_the_usage_invoice_holding_the_instant() {
    let mut s = sub(Collection::Advance, true, &[("2024-03-01T00:00:00Z", "1")]);
    s.billing_frequency = Frequency::Annual;
    let mut snap = snapshot(s);
    snap.rates = vec![
        rate("120000", Frequency::Annual, "2024-01-01T00:00:00Z"),
        // A monthly rate of the same product is not the subscription's.
        rate("1", Frequency::Monthly, "2024-01-01T00:00:00Z"),
    ];
    // Anchor 2024-01-01: the first year is cut to [03-01, 2025-01-01): 306 of 366 days.
    // 120000 × 306/366 = 100327.868852459016393… → 100327.868852459016.
    let mar = inv(&snap, "2024-03-01T00:00:00Z", "2024-04-01T00:00:00Z");
    assert_eq!(
        lines(&mar),
        [(
            d("1"),
            d("100327.868852459016"),
            d("100327.868852459016"),
            true,
            t("2024-03-01T00:00:00Z")
        )]
    );
    let apr = inv(&snap, "2024-04-01T00:00:00Z", "2024-05-01T00:00:00Z");
    assert!(lines(&apr).is_empty());
    let jan = inv(&snap, "2025-01-01T00:00:00Z", "2025-02-01T00:00:00Z");
    assert_eq!(lines(&jan)[0].2, d("120000"));
}

#[test]
fn a_price_change_applies_from_the_next_period_and_overrides_apply() {
    let mut snap = snapshot(sub(
        Collection::Advance,
        true,
        &[("2024-04-01T00:00:00Z", "2"), ("2024-04-16T00:00:00Z", "3")],
    ));
    snap.rates
        .push(rate("4000", Frequency::Monthly, "2024-04-10T00:00:00Z"));
    let apr = inv(&snap, "2024-04-01T00:00:00Z", "2024-05-01T00:00:00Z");
    // The increase is priced at April 1st's rate: 3000 × 15/30.
    assert_eq!(lines(&apr)[1].1, d("1500"));
    let may = inv(&snap, "2024-05-01T00:00:00Z", "2024-06-01T00:00:00Z");
    assert_eq!(
        lines(&may)[0],
        (
            d("3"),
            d("4000"),
            d("12000"),
            false,
            t("2024-05-01T00:00:00Z")
        )
    );
    // Not entitled: no charge.
    for r in &mut snap.rates {
        r.entitled = false;
    }
    let may = inv(&snap, "2024-05-01T00:00:00Z", "2024-06-01T00:00:00Z");
    assert!(lines(&may).is_empty());
}

proptest! {
    /// Proration of a full step is the full price, whatever the month; and the prorated parts of
    /// a period split at any hour sum to within rounding of the full price.
    #[test]
    fn a_full_period_costs_the_full_price(month_n in 0u32..120, price in 0u64..10_000_000, q in 1u32..500) {
        let year = 2020 + (month_n / 12) as i32;
        let m = month_n % 12 + 1;
        let start = chrono::NaiveDate::from_ymd_opt(year, m, 1).unwrap().and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp_millis();
        let end = crate::period::Schedule { frequency: Frequency::Monthly, day: AnchorDay::FirstOfMonth, billing_anchor_ms: None }
            .full_period_containing(start).unwrap().end_ms;
        let mut s = sub(Collection::Advance, true, &[("2020-01-01T00:00:00Z", "1")]);
        s.quantities[0].quantity = Decimal::from(q);
        let mut snap = snapshot(s);
        snap.contract.starting_at_ms = t("2020-01-01T00:00:00Z");
        snap.rates = vec![rate(&alloc::format!("{}", Decimal::new(price as i64, 2)), Frequency::Monthly, "2020-01-01T00:00:00Z")];
        let inv = price_invoice(&snap, &[], Period { start_ms: start, end_ms: end }).unwrap();
        let got = lines(&inv);
        prop_assert_eq!(got.len(), 1);
        prop_assert_eq!(got[0].2, Decimal::new(price as i64, 2) * Decimal::from(q));
        prop_assert!(!got[0].3);
    }
}
