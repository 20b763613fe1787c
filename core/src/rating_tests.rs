//! Tests of rating: worked examples from the contract document and the laws of pricing.

use super::*;
use crate::metric::{Aggregation, MetricDef};
use crate::time::{parse_rfc3339_ms, HOUR_MS};
use alloc::string::ToString;
use alloc::vec;
use core::str::FromStr;
use proptest::prelude::*;

pub(crate) fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

pub(crate) fn t(s: &str) -> i64 {
    parse_rfc3339_ms(s).unwrap()
}

fn tiers_3_5() -> Vec<Tier> {
    vec![
        Tier {
            price: d("10"),
            size: Some(d("1000")),
        },
        Tier {
            price: d("8"),
            size: Some(d("9000")),
        },
        Tier {
            price: d("5"),
            size: None,
        },
    ]
}

pub(crate) fn metric(
    id: &str,
    aggregation: Aggregation,
    group_keys: Vec<Vec<String>>,
) -> MetricDef {
    MetricDef {
        id: id.into(),
        aggregation,
        aggregation_key: Some("v".into()),
        event_type_filter: None,
        property_filters: vec![],
        group_keys,
    }
}

pub(crate) fn state(metric_id: &str, pricing: &[&str], presentation: &[&str]) -> ProductState {
    ProductState {
        metric_id: metric_id.into(),
        pricing_group_key: pricing.iter().map(|s| s.to_string()).collect(),
        presentation_group_key: presentation.iter().map(|s| s.to_string()).collect(),
        quantity_conversion: None,
        quantity_rounding: None,
    }
}

pub(crate) fn product(id: &str, st: ProductState) -> RatedProduct {
    RatedProduct {
        product_id: id.into(),
        names: vec![(i64::MIN, id.to_uppercase())],
        tags: vec![],
        versions: vec![(i64::MIN, st)],
    }
}

pub(crate) fn rate(product: &str, pricing: &[(&str, &str)], start: i64, price: Price) -> Rate {
    Rate {
        product_id: product.into(),
        pricing_group_values: pricing
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        starting_at_ms: start,
        ending_before_ms: None,
        entitled: true,
        price,
        credit_type: usd(),
        billing_frequency: None,
        commit_rate: None,
    }
}

pub(crate) fn row(
    metric: &str,
    groups: &[Option<&str>],
    hour_ms: i64,
    acc: Accumulator,
) -> UsageRow {
    UsageRow {
        metric_id: metric.into(),
        groups: groups.iter().map(|g| g.map(String::from)).collect(),
        hour_ms,
        acc,
    }
}

pub(crate) fn usd() -> CreditTypeId {
    CreditTypeId("usd".into())
}

/// The fields of a priced line these tests assert, as plain decimals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Line {
    pub(crate) product_id: String,
    pub(crate) name: String,
    pub(crate) quantity: Decimal,
    pub(crate) unit_price: Decimal,
    pub(crate) total: Decimal,
    pub(crate) starting_at_ms: i64,
    pub(crate) ending_before_ms: i64,
    pub(crate) pricing_group_values: Option<BTreeMap<String, String>>,
    pub(crate) presentation_group_values: Option<BTreeMap<String, Option<String>>>,
    pub(crate) tier: Option<TierRef>,
}

/// A priced period in one credit type, as these tests assert it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RatedInvoice {
    pub(crate) lines: Vec<Line>,
    pub(crate) subtotal: Decimal,
    pub(crate) total: Decimal,
}

/// Prices `input` through the pricing entry point (`pricing::price_invoice`), in USD.
pub(crate) fn rate_period(input: &RatingInput<'_>) -> Result<RatedInvoice, RatingError> {
    rate_with(input, &[], None).map(|(inv, _)| inv)
}

/// [`rate_period`] with the rate card's product order `order`.
fn rate_period_in_order(
    input: &RatingInput<'_>,
    order: &[&str],
) -> Result<RatedInvoice, RatingError> {
    rate_with(input, order, None).map(|(inv, _)| inv)
}

/// [`rate_period`] for a contract archived at `archived_at_ms`; also returns the invoice's period.
fn rate_archived(
    input: &RatingInput<'_>,
    archived_at_ms: Option<i64>,
) -> Result<(RatedInvoice, Period), RatingError> {
    rate_with(input, &[], archived_at_ms)
}

/// Prices `input` through core's entry point, with a product order and an archive time.
pub(crate) fn rate_with(
    input: &RatingInput<'_>,
    order: &[&str],
    archived_at_ms: Option<i64>,
) -> Result<(RatedInvoice, Period), RatingError> {
    let snapshot = crate::pricing::PricingSnapshot {
        credit_types: vec![crate::money::CreditType {
            id: usd(),
            name: "USD".into(),
        }],
        fiat_credit_type: usd(),
        metrics: input.metrics.clone(),
        products: input.products.to_vec(),
        composites: vec![],
        product_order: order.iter().map(|p| p.to_string()).collect(),
        rates: input.rates.to_vec(),
        balances: Default::default(),
        credit_type_conversions: vec![],
        contract: crate::pricing::ContractSnapshot {
            id: "c".into(),
            starting_at_ms: input.period.start_ms,
            ending_before_ms: None,
            usage_statement_schedule: crate::period::Schedule {
                frequency: crate::period::Frequency::Monthly,
                day: crate::period::AnchorDay::FirstOfMonth,
                billing_anchor_ms: None,
            },
            invoice_generation_starting_at_ms: None,
            archived_at_ms,
            terms: input.terms.clone(),
        },
    };
    let inv = crate::pricing::price_invoice(&snapshot, input.usage, input.period)?;
    let lines = inv
        .lines
        .into_iter()
        .map(|l| {
            assert_eq!((&l.kind, &l.total.credit_type), (&LineKind::Usage, &usd()));
            Line {
                product_id: l.product_id,
                name: l.name,
                quantity: l.quantity,
                unit_price: l.unit_price.value,
                total: l.total.value,
                starting_at_ms: l.segment.start_ms,
                ending_before_ms: l.segment.end_ms,
                pricing_group_values: l.pricing_group_values,
                presentation_group_values: l.presentation_group_values,
                tier: l.tier,
            }
        })
        .collect();
    let rated = RatedInvoice {
        lines,
        subtotal: inv.subtotal.get(&usd()),
        total: inv.total.get(&usd()),
    };
    Ok((rated, inv.period))
}

pub(crate) const SEP: Period = Period {
    start_ms: 1_725_148_800_000,
    end_ms: 1_727_740_800_000,
};

fn rate_one(
    products: &[RatedProduct],
    metrics: &[MetricDef],
    rates: &[Rate],
    usage: &[UsageRow],
) -> RatedInvoice {
    let metrics: BTreeMap<String, MetricDef> =
        metrics.iter().map(|m| (m.id.clone(), m.clone())).collect();
    rate_period(&RatingInput {
        period: SEP,
        products,
        metrics: &metrics,
        rates,
        terms: &crate::pricing::ContractTerms::NONE,
        usage,
        balances: &[],
    })
    .unwrap()
}

#[test]
fn tier_example_of_section_3_5() {
    let price = Price::Tiered(tiers_3_5());
    assert_eq!(price_total(&price, d("12500")).unwrap(), d("94500"));
    let tiers = tiers_3_5();
    let split = tier_split(&tiers, d("12500")).unwrap();
    let parts: Vec<(u32, Decimal, Decimal)> = split
        .iter()
        .map(|p| (p.level, p.start, p.quantity))
        .collect();
    assert_eq!(
        parts,
        vec![
            (1, d("0"), d("1000")),
            (2, d("1000"), d("9000")),
            (3, d("10000"), d("2500"))
        ]
    );
}

#[test]
fn flat_example_and_conversion_with_rounding() {
    // §3.5: 80 API calls × 100 = 8000. §3.3: 2.5e9 bytes / 1e9 → 2.5 → ROUND_UP → 3 × 25 = 75.
    let m = metric("bytes", Aggregation::Sum, vec![]);
    let mut st = state("bytes", &[], &[]);
    st.quantity_conversion = Some(QuantityConversion {
        conversion_factor: d("1000000000"),
        operation: ConversionOperation::Divide,
        name: None,
    });
    st.quantity_rounding = Some(QuantityRounding {
        decimal_places: 0,
        rounding_method: RoundingMethod::RoundUp,
    });
    let usage = [
        row(
            "bytes",
            &[],
            SEP.start_ms,
            Accumulator::Sum(d("2000000000")),
        ),
        row(
            "bytes",
            &[],
            SEP.start_ms + HOUR_MS,
            Accumulator::Sum(d("500000000")),
        ),
    ];
    let inv = rate_one(
        &[product("storage", st)],
        &[m],
        &[rate("storage", &[], SEP.start_ms, Price::Flat(d("25")))],
        &usage,
    );
    assert_eq!(inv.lines.len(), 1);
    assert_eq!(
        (inv.lines[0].quantity, inv.lines[0].unit_price, inv.total),
        (d("3"), d("25"), d("75"))
    );
}

#[test]
fn pricing_and_presentation_groups_from_the_seed_example() {
    // Metric keys [["model"],["user_id"]]; product pricing ["model"], presentation ["user_id"].
    let m = metric(
        "tok",
        Aggregation::Sum,
        vec![vec!["model".into()], vec!["user_id".into()]],
    );
    let usage = [
        row(
            "tok",
            &[Some("a"), Some("u1")],
            SEP.start_ms,
            Accumulator::Sum(d("100")),
        ),
        row(
            "tok",
            &[Some("a"), Some("u2")],
            SEP.start_ms,
            Accumulator::Sum(d("50")),
        ),
        row(
            "tok",
            &[Some("b"), Some("u1")],
            SEP.start_ms + HOUR_MS,
            Accumulator::Sum(d("10")),
        ),
        // Missing model: no rate can match, not billed.
        row(
            "tok",
            &[None, Some("u1")],
            SEP.start_ms,
            Accumulator::Sum(d("999")),
        ),
        // Outside the period: ignored.
        row(
            "tok",
            &[Some("a"), Some("u1")],
            SEP.end_ms,
            Accumulator::Sum(d("1000")),
        ),
    ];
    let rates = [
        rate("p", &[("model", "a")], 0, Price::Flat(d("2"))),
        rate("p", &[("model", "b")], 0, Price::Flat(d("3"))),
        rate("p", &[("model", "c")], 0, Price::Flat(d("4"))),
    ];
    let inv = rate_one(
        &[product("p", state("tok", &["model"], &["user_id"]))],
        &[m],
        &rates,
        &usage,
    );
    let got: Vec<(String, Option<String>, Decimal, Decimal)> = inv
        .lines
        .iter()
        .map(|l| {
            let model = l.pricing_group_values.as_ref().unwrap()["model"].clone();
            let user = l
                .presentation_group_values
                .as_ref()
                .and_then(|p| p["user_id"].clone());
            (model, user, l.quantity, l.total)
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("a".into(), Some("u1".into()), d("100"), d("200")),
            ("a".into(), Some("u2".into()), d("50"), d("100")),
            ("b".into(), Some("u1".into()), d("10"), d("30")),
            // Model c is priced but unused: a zero line.
            ("c".into(), None, d("0"), d("0")),
        ]
    );
    assert_eq!(inv.total, d("330"));
}

#[test]
fn a_later_rate_supersedes_and_splits_the_period() {
    let m = metric("n", Aggregation::Count, vec![]);
    let mid = t("2024-09-16T00:00:00Z");
    let usage = [
        row("n", &[], SEP.start_ms, Accumulator::Count(10)),
        row("n", &[], mid - HOUR_MS, Accumulator::Count(5)),
        row("n", &[], mid, Accumulator::Count(7)),
    ];
    let rates = [
        rate("p", &[], 0, Price::Flat(d("1"))),
        rate("p", &[], mid, Price::Flat(d("2"))),
    ];
    let inv = rate_one(&[product("p", state("n", &[], &[]))], &[m], &rates, &usage);
    let got: Vec<(i64, i64, Decimal, Decimal)> = inv
        .lines
        .iter()
        .map(|l| (l.starting_at_ms, l.ending_before_ms, l.quantity, l.total))
        .collect();
    assert_eq!(
        got,
        vec![
            (SEP.start_ms, mid, d("15"), d("15")),
            (mid, SEP.end_ms, d("7"), d("14"))
        ]
    );
}

#[test]
fn not_entitled_or_unpriced_usage_is_not_billed() {
    let m = metric("n", Aggregation::Count, vec![]);
    let usage = [row("n", &[], SEP.start_ms, Accumulator::Count(3))];
    let mut r = rate("p", &[], 0, Price::Flat(d("1")));
    r.entitled = false;
    let products = [product("p", state("n", &[], &[]))];
    assert!(rate_one(&products, core::slice::from_ref(&m), &[r], &usage)
        .lines
        .is_empty());
    assert!(rate_one(&products, &[m], &[], &usage).lines.is_empty());
}

#[test]
fn an_archived_contract_bills_only_the_hours_before_its_archive_hour() {
    // Archived at 10:30 on Sep 3: rows of 09:00 (3 events) and 10:00 (4) and 12:00 (5) exist.
    // Billing stops at 10:00: only the 3 events of 09:00 are billed, at 2 each.
    let archived = t("2024-09-03T10:30:00Z");
    let m = metric("n", Aggregation::Count, vec![]);
    let metrics: BTreeMap<String, MetricDef> = [("n".to_string(), m)].into_iter().collect();
    let usage = [
        row("n", &[], t("2024-09-03T09:00:00Z"), Accumulator::Count(3)),
        row("n", &[], t("2024-09-03T10:00:00Z"), Accumulator::Count(4)),
        row("n", &[], t("2024-09-03T12:00:00Z"), Accumulator::Count(5)),
    ];
    let products = [product("p", state("n", &[], &[]))];
    let rates = [rate("p", &[], 0, Price::Flat(d("2")))];
    let input = RatingInput {
        period: SEP,
        products: &products,
        metrics: &metrics,
        rates: &rates,
        terms: &crate::pricing::ContractTerms::NONE,
        usage: &usage,
        balances: &[],
    };
    let (inv, period) = rate_archived(&input, Some(archived)).unwrap();
    assert_eq!(period.end_ms, t("2024-09-03T10:00:00Z"));
    assert_eq!(inv.total, d("6"));
    assert_eq!(inv.lines.len(), 1);
    assert_eq!(inv.lines[0].quantity, d("3"));
    assert_eq!(inv.lines[0].ending_before_ms, t("2024-09-03T10:00:00Z"));
    // Not archived: all 12 events, 24.
    let (all, period) = rate_archived(&input, None).unwrap();
    assert_eq!((all.total, period), (d("24"), SEP));
    // Archived before the period: the period bills nothing and keeps its start.
    let (none, period) = rate_archived(&input, Some(SEP.start_ms - HOUR_MS)).unwrap();
    assert_eq!(none.total, d("0"));
    assert_eq!(
        (period.start_ms, period.end_ms),
        (SEP.start_ms, SEP.start_ms)
    );
}

#[test]
fn aggregations_over_a_period() {
    let hours = [
        SEP.start_ms,
        SEP.start_ms + HOUR_MS,
        SEP.start_ms + 5 * HOUR_MS,
    ];
    let latest = |h: usize, v: &str| Accumulator::Latest {
        timestamp_ms: hours[h] + 1,
        transaction_id: "x".into(),
        value: d(v),
    };
    let cases: Vec<(Aggregation, Vec<Accumulator>, Vec<Accumulator>, &str)> = vec![
        (
            Aggregation::Count,
            vec![
                Accumulator::Count(2),
                Accumulator::Count(3),
                Accumulator::Count(4),
            ],
            vec![],
            "9",
        ),
        (
            Aggregation::Sum,
            vec![
                Accumulator::Sum(d("1.5")),
                Accumulator::Sum(d("2")),
                Accumulator::Sum(d("-0.5")),
            ],
            vec![],
            "3",
        ),
        (
            Aggregation::Max,
            vec![
                Accumulator::Max(d("7")),
                Accumulator::Max(d("9")),
                Accumulator::Max(d("8")),
            ],
            vec![],
            "9",
        ),
        (
            Aggregation::Unique,
            vec![
                Accumulator::unique_of("a"),
                Accumulator::unique_of("b"),
                Accumulator::unique_of("a"),
            ],
            vec![],
            "2",
        ),
        // LATEST bills the change since the last value before the period: 10 → 14 = 4.
        (
            Aggregation::Latest,
            vec![latest(0, "12"), latest(2, "14"), latest(1, "20")],
            vec![Accumulator::Latest {
                timestamp_ms: SEP.start_ms - 1,
                transaction_id: "p".into(),
                value: d("10"),
            }],
            "4",
        ),
    ];
    for (agg, accs, prior, want) in cases {
        let m = metric("m", agg, vec![]);
        let mut usage: Vec<UsageRow> = accs
            .into_iter()
            .zip(hours)
            .map(|(a, h)| row("m", &[], h, a))
            .collect();
        usage.extend(
            prior
                .into_iter()
                .map(|a| row("m", &[], SEP.start_ms - HOUR_MS, a)),
        );
        let inv = rate_one(
            &[product("p", state("m", &[], &[]))],
            &[m],
            &[rate("p", &[], 0, Price::Flat(d("1")))],
            &usage,
        );
        assert_eq!(inv.total, d(want), "{agg:?}");
    }
}

#[test]
fn product_versions_split_segments() {
    let m = metric("n", Aggregation::Count, vec![]);
    let mid = t("2024-09-10T00:00:00Z");
    let mut doubled = state("n", &[], &[]);
    doubled.quantity_conversion = Some(QuantityConversion {
        conversion_factor: d("2"),
        operation: ConversionOperation::Multiply,
        name: None,
    });
    let p = RatedProduct {
        product_id: "p".into(),
        names: vec![(i64::MIN, "P".into())],
        tags: vec![],
        versions: vec![(i64::MIN, state("n", &[], &[])), (mid, doubled)],
    };
    let usage = [
        row("n", &[], SEP.start_ms, Accumulator::Count(1)),
        row("n", &[], mid, Accumulator::Count(1)),
    ];
    let inv = rate_one(
        &[p],
        &[m],
        &[rate("p", &[], 0, Price::Flat(d("1")))],
        &usage,
    );
    assert_eq!(inv.lines.len(), 2);
    assert_eq!(inv.total, d("3"));
}

/// Found by fuzzing (`rating`): `716.9 × 32636311728855213276135424` was silently rounded to a
/// whole number; an amount with no exact `Decimal` is an overflow error instead.
#[test]
fn an_amount_that_would_need_rounding_is_an_overflow() {
    let q = d("32636311728855213276135424");
    assert_eq!(
        price_total(&Price::Flat(d("716.9")), q),
        Err(RatingError::Overflow)
    );
    assert_eq!(
        price_total(&Price::Flat(d("716")), q),
        Ok(d("23367599197860332705712963584"))
    );
    let tiers = vec![Tier {
        price: d("716.9"),
        size: None,
    }];
    assert_eq!(
        price_total(&Price::Tiered(tiers), q),
        Err(RatingError::Overflow)
    );
    // The same through rate_period: the invoice is refused, not rounded.
    let m = metric("tok", Aggregation::Sum, vec![]);
    let usage = [row("tok", &[], SEP.start_ms, Accumulator::Sum(q))];
    let rates = [rate("p", &[], 0, Price::Flat(d("716.9")))];
    let products = [product("p", state("tok", &[], &[]))];
    let metrics: BTreeMap<String, MetricDef> = [(m.id.clone(), m)].into_iter().collect();
    let input = RatingInput {
        period: SEP,
        products: &products,
        metrics: &metrics,
        rates: &rates,
        terms: &crate::pricing::ContractTerms::NONE,
        usage: &usage,
        balances: &[],
    };
    assert_eq!(rate_period(&input), Err(RatingError::Overflow));
}

#[test]
fn price_validation() {
    assert_eq!(Price::Tiered(vec![]).validate(), Err(PriceError::NoTiers));
    let bad = vec![
        Tier {
            price: d("1"),
            size: None,
        },
        Tier {
            price: d("1"),
            size: None,
        },
    ];
    assert_eq!(
        Price::Tiered(bad).validate(),
        Err(PriceError::UnboundedTierNotLast)
    );
    let bad = vec![
        Tier {
            price: d("1"),
            size: Some(d("0")),
        },
        Tier {
            price: d("1"),
            size: None,
        },
    ];
    assert_eq!(
        Price::Tiered(bad).validate(),
        Err(PriceError::NonPositiveTierSize)
    );
    assert_eq!(Price::Tiered(tiers_3_5()).validate(), Ok(()));
}

fn arb_tiers() -> impl Strategy<Value = Vec<Tier>> {
    prop::collection::vec((0i64..10_000, 1i64..5_000), 0..5).prop_flat_map(|bounded| {
        (0i64..10_000).prop_map(move |last| {
            let mut tiers: Vec<Tier> = bounded
                .iter()
                .map(|(p, s)| Tier {
                    price: Decimal::new(*p, 2),
                    size: Some(Decimal::from(*s)),
                })
                .collect();
            tiers.push(Tier {
                price: Decimal::new(last, 2),
                size: None,
            });
            tiers
        })
    })
}

proptest! {
    /// With non-negative prices, more usage never costs less.
    #[test]
    fn tiers_are_monotone(tiers in arb_tiers(), a in 0i64..100_000, b in 0i64..100_000) {
        let price = Price::Tiered(tiers);
        let (lo, hi) = (Decimal::new(a.min(b), 1), Decimal::new(a.max(b), 1));
        prop_assert!(price_total(&price, lo).unwrap() <= price_total(&price, hi).unwrap());
    }

    /// Graduated tiers are continuous: one more unit costs exactly the price of the tier it lands in,
    /// including at tier edges.
    #[test]
    fn tiers_are_continuous(tiers in arb_tiers(), q in 0i64..50_000) {
        let price = Price::Tiered(tiers.clone());
        let q = Decimal::from(q);
        let step = d("0.001");
        let delta = price_total(&price, q + step).unwrap() - price_total(&price, q).unwrap();
        // The unit that starts at q belongs to the first tier whose end lies beyond q.
        let mut start = Decimal::ZERO;
        let mut unit_price = tiers.last().unwrap().price;
        for tier in &tiers {
            match tier.size {
                Some(s) if q < start + s => { unit_price = tier.price; break; }
                Some(s) => start += s,
                None => { unit_price = tier.price; break; }
            }
        }
        prop_assert_eq!(delta, step * unit_price);
    }

    /// The invoice total is the sum of its lines, and the tier lines of a quantity add up to it.
    #[test]
    fn total_is_sum_of_lines(
        tiers in arb_tiers(),
        counts in prop::collection::vec((0usize..3, 0i64..700, 0u64..5_000), 0..30),
    ) {
        let m = metric("tok", Aggregation::Sum, vec![vec!["model".into()]]);
        let models = ["a", "b", "c"];
        let usage: Vec<UsageRow> = counts
            .iter()
            .map(|(mi, h, v)| row("tok", &[Some(models[*mi])], SEP.start_ms + h * HOUR_MS, Accumulator::Sum(Decimal::from(*v))))
            .collect();
        let rates = [
            rate("p", &[("model", "a")], 0, Price::Tiered(tiers.clone())),
            rate("p", &[("model", "b")], 0, Price::Flat(d("0.25"))),
        ];
        let inv = rate_one(&[product("p", state("tok", &["model"], &[]))], &[m], &rates, &usage);
        let sum: Decimal = inv.lines.iter().map(|l| l.total).sum();
        prop_assert_eq!(inv.total, sum);
        prop_assert_eq!(inv.subtotal, sum);
        for l in &inv.lines {
            prop_assert_eq!(l.total, l.quantity * l.unit_price);
        }
        let billed_a: Decimal = inv.lines.iter()
            .filter(|l| l.pricing_group_values.as_ref().unwrap()["model"] == "a")
            .map(|l| l.quantity).sum();
        let used_a: Decimal = counts.iter().filter(|c| c.0 == 0 && c.1 < 720).map(|c| Decimal::from(c.2)).sum();
        prop_assert_eq!(billed_a, used_a);
    }
}

/// A SUM product converted by `DIVIDE factor`, no rounding, priced at `price`, over `values`.
fn divided(factor: &str, price: Price, values: &[&str]) -> RatedInvoice {
    let m = metric("secs", Aggregation::Sum, vec![]);
    let mut st = state("secs", &[], &[]);
    st.quantity_conversion = Some(QuantityConversion {
        conversion_factor: d(factor),
        operation: ConversionOperation::Divide,
        name: None,
    });
    let usage: Vec<UsageRow> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let hour = SEP.start_ms + i64::try_from(i).unwrap() * HOUR_MS;
            row("secs", &[], hour, Accumulator::Sum(d(v)))
        })
        .collect();
    rate_one(
        &[product("p", st)],
        &[m],
        &[rate("p", &[], 0, price)],
        &usage,
    )
}

/// Issue 19 item 1: a division that does not terminate (seconds → minutes) made the whole
/// invoice an overflow. It is rounded half-even to 12 places; everything after is exact.
#[test]
fn a_non_terminating_division_is_rounded_to_12_places() {
    let inv = divided("60", Price::Flat(d("7")), &["100"]);
    // 100 / 60 = 1.6666… → 1.666666666667; × 7 = 11.666666666669.
    assert_eq!(inv.lines[0].quantity, d("1.666666666667"));
    assert_eq!(inv.total, d("11.666666666669"));
    for (price, want) in [
        ("7", "233.333333333331"),
        ("0.5", "16.6666666666665"),
        ("3", "99.999999999999"),
        ("1.5", "49.9999999999995"),
    ] {
        // 100 / 3 = 33.333333333333 (half-even keeps the 3).
        let inv = divided("3", Price::Flat(d(price)), &["100"]);
        assert_eq!(inv.lines[0].quantity, d("33.333333333333"), "{price}");
        assert_eq!(inv.total, d(want), "{price}");
    }
    // 2 / 3 = 0.6666… → 0.666666666667 (the 13th place is 6: rounded up).
    assert_eq!(
        divided("3", Price::Flat(d("1")), &["2"]).total,
        d("0.666666666667")
    );
    // Tiers: 100 / 3 over [{10, size 10}, {1}] = 10 × 10 + 23.333333333333 × 1.
    let tiers = vec![
        Tier {
            price: d("10"),
            size: Some(d("10")),
        },
        Tier {
            price: d("1"),
            size: None,
        },
    ];
    let inv = divided("3", Price::Tiered(tiers), &["100"]);
    assert_eq!(inv.total, d("123.333333333333"));
    // A terminating quotient keeps every place it has: 1 / 1024 = 0.0009765625.
    assert_eq!(
        divided("1024", Price::Flat(d("1")), &["1"]).total,
        d("0.0009765625")
    );
}

proptest! {
    /// Realistic divisions never fail an invoice: factors up to 1e9 (up to 4 places), quantities
    /// up to 1e11 (up to 6 places; 100 billion seconds in one bucket and period), flat and tiered
    /// prices with up to 6 significant digits. The converted quantity is within half a unit of
    /// the 12th place of the true quotient, and the total is the sum of exact lines. (Beyond
    /// these, a 12-place quotient times a price can need more than 28 digits: no exact decimal.)
    #[test]
    fn realistic_divisions_always_price(
        factor in (1i64..1_000_000_000, 0u32..5),
        value in (0i64..100_000_000_000, 0u32..7),
        price in (0i64..1_000_000, 0u32..6),
        tiered in any::<bool>(),
    ) {
        let factor = Decimal::new(factor.0, factor.1);
        let value = Decimal::new(value.0, value.1);
        let p = Decimal::new(price.0, price.1);
        let price = if tiered {
            Price::Tiered(vec![Tier { price: p, size: Some(d("1000")) }, Tier { price: d("0.5"), size: None }])
        } else {
            Price::Flat(p)
        };
        let inv = divided(&factor.to_string(), price, &[&value.to_string()]);
        let quantity: Decimal = inv.lines.iter().map(|l| l.quantity).sum();
        let error = (quantity * factor - value).abs();
        prop_assert!(error <= factor * d("0.0000000000005"), "{quantity} × {factor} vs {value}");
        let sum: Decimal = inv.lines.iter().map(|l| l.total).sum();
        prop_assert_eq!(inv.total, sum);
    }
}

/// A product on metric `m` whose timeline has one change at 09-16: `change` (name or tags only,
/// so nothing rating sees), with `conversion`/`rounding` from the start; events on 09-10 and
/// 09-20 with the given accumulators.
fn cosmetic_case(
    aggregation: Aggregation,
    conversion: Option<QuantityConversion>,
    rounding: Option<QuantityRounding>,
    change: crate::product::ProductChange,
    price: Price,
    accs: [Accumulator; 2],
) -> RatedInvoice {
    let initial = crate::product::ProductAttrs {
        name: "Old".into(),
        billable_metric_id: Some("m".into()),
        pricing_group_key: None,
        presentation_group_key: None,
        quantity_conversion: conversion,
        quantity_rounding: rounding,
        tags: vec![],
        ..Default::default()
    };
    let timeline = crate::product::ProductTimeline {
        initial,
        changes: vec![crate::product::ProductChange {
            starting_at_ms: t("2024-09-16T00:00:00Z"),
            ..change
        }],
    };
    let p = timeline.rated("p").unwrap();
    let [a, b] = accs;
    let usage = [
        row("m", &[], t("2024-09-10T00:00:00Z"), a),
        row("m", &[], t("2024-09-20T00:00:00Z"), b),
    ];
    let m = metric("m", aggregation, vec![]);
    rate_one(&[p], &[m], &[rate("p", &[], 0, price)], &usage)
}

/// Issue 19 item 2: a product update that changes only the name (or tags) does not split the
/// period; the lines carry the name in effect at the period's end.
#[test]
fn a_cosmetic_product_update_changes_no_amount() {
    let renamed = crate::product::ProductChange {
        name: Some("New".into()),
        ..Default::default()
    };
    let retagged = crate::product::ProductChange {
        tags: Some(vec!["t".into()]),
        ..Default::default()
    };
    let sum100 = || [Accumulator::Sum(d("100")), Accumulator::Sum(d("100"))];
    let tiers = vec![
        Tier {
            price: d("10"),
            size: Some(d("100")),
        },
        Tier {
            price: d("1"),
            size: None,
        },
    ];
    for change in [renamed.clone(), retagged] {
        // TIERED over 200: 100 × 10 + 100 × 1 = 1100 (not 2 × 1000).
        let inv = cosmetic_case(
            Aggregation::Sum,
            None,
            None,
            change.clone(),
            Price::Tiered(tiers.clone()),
            sum100(),
        );
        assert_eq!(inv.total, d("1100"), "{change:?}");
        // ÷1000 ROUND_UP 0: 200 / 1000 = 0.2 → 1 × 100 (not 1 + 1).
        let inv = cosmetic_case(
            Aggregation::Sum,
            Some(QuantityConversion {
                conversion_factor: d("1000"),
                operation: ConversionOperation::Divide,
                name: None,
            }),
            Some(QuantityRounding {
                decimal_places: 0,
                rounding_method: RoundingMethod::RoundUp,
            }),
            change.clone(),
            Price::Flat(d("100")),
            sum100(),
        );
        assert_eq!(inv.total, d("100"), "{change:?}");
        // MAX of 9 and 7 is 9 (not 9 + 7).
        let maxes = [Accumulator::Max(d("9")), Accumulator::Max(d("7"))];
        let inv = cosmetic_case(
            Aggregation::Max,
            None,
            None,
            change.clone(),
            Price::Flat(d("1")),
            maxes,
        );
        assert_eq!(inv.total, d("9"), "{change:?}");
        // UNIQUE: one user on both days is 1.
        let users = [Accumulator::unique_of("u"), Accumulator::unique_of("u")];
        let inv = cosmetic_case(
            Aggregation::Unique,
            None,
            None,
            change.clone(),
            Price::Flat(d("1")),
            users,
        );
        assert_eq!(inv.total, d("1"), "{change:?}");
        assert_eq!(inv.lines.len(), 1);
        assert_eq!(
            (inv.lines[0].starting_at_ms, inv.lines[0].ending_before_ms),
            (SEP.start_ms, SEP.end_ms)
        );
    }
    // The name in effect at the period's end: renamed inside September → "New".
    let inv = cosmetic_case(
        Aggregation::Sum,
        None,
        None,
        renamed.clone(),
        Price::Flat(d("1")),
        sum100(),
    );
    assert_eq!(inv.lines[0].name, "New");
    // Renamed from October on: September's lines keep "Old".
    let later = crate::product::ProductTimeline {
        initial: crate::product::ProductAttrs {
            name: "Old".into(),
            billable_metric_id: Some("m".into()),
            pricing_group_key: None,
            presentation_group_key: None,
            quantity_conversion: None,
            quantity_rounding: None,
            tags: vec![],
            ..Default::default()
        },
        changes: vec![crate::product::ProductChange {
            starting_at_ms: SEP.end_ms,
            ..renamed
        }],
    };
    let m = metric("m", Aggregation::Count, vec![]);
    let usage = [row("m", &[], SEP.start_ms, Accumulator::Count(1))];
    let p = later.rated("p").unwrap();
    let inv = rate_one(
        &[p],
        &[m],
        &[rate("p", &[], 0, Price::Flat(d("1")))],
        &usage,
    );
    assert_eq!(inv.lines[0].name, "Old");
}

fn tiers_10_then_1() -> Vec<Tier> {
    vec![
        Tier {
            price: d("10"),
            size: Some(d("100")),
        },
        Tier {
            price: d("1"),
            size: None,
        },
    ]
}

/// Rates a product on metric `m` (group key `user`, aggregation `agg`), presented by `user`
/// when `presented`, priced by `price`, over `(user, accumulator)` rows in one hour.
fn presented(
    agg: Aggregation,
    presented: bool,
    price: Price,
    rows: &[(&str, Accumulator)],
) -> RatedInvoice {
    let m = metric("m", agg, vec![vec!["user".into()]]);
    let presentation: &[&str] = if presented { &["user"] } else { &[] };
    let usage: Vec<UsageRow> = rows
        .iter()
        .map(|(u, acc)| row("m", &[Some(u)], SEP.start_ms, acc.clone()))
        .collect();
    rate_one(
        &[product("p", state("m", &[], presentation))],
        &[m],
        &[rate("p", &[], 0, price)],
        &usage,
    )
}

/// `(user, tier level, quantity, total)` of each line.
fn by_user(inv: &RatedInvoice) -> Vec<(String, u32, Decimal, Decimal)> {
    inv.lines
        .iter()
        .map(|l| {
            let user = l.presentation_group_values.as_ref().unwrap()["user"]
                .clone()
                .unwrap();
            (
                user,
                l.tier.as_ref().map_or(0, |t| t.level),
                l.quantity,
                l.total,
            )
        })
        .collect()
}

/// Issue 19 item 3: presentation groups never change a total. Tiers fill over the pricing
/// bucket and the presentation lines take its units in the order of their group values.
#[test]
fn presentation_groups_share_the_bucket_tiers() {
    let sum = |v: &str| Accumulator::Sum(d(v));
    let tiers = Price::Tiered(tiers_10_then_1());
    let inv = presented(
        Aggregation::Sum,
        true,
        tiers.clone(),
        &[("b", sum("100")), ("a", sum("100"))],
    );
    assert_eq!(inv.total, d("1100"));
    let u = |s: &str| s.to_string();
    assert_eq!(
        by_user(&inv),
        vec![
            (u("a"), 1, d("100"), d("1000")),
            (u("b"), 2, d("100"), d("100"))
        ]
    );
    // A presentation line may span tiers: a takes 50 of tier 1, b the other 50 and 50 of tier 2.
    let inv = presented(
        Aggregation::Sum,
        true,
        tiers,
        &[("a", sum("50")), ("b", sum("100"))],
    );
    assert_eq!(inv.total, d("1050"));
    assert_eq!(
        by_user(&inv),
        vec![
            (u("a"), 1, d("50"), d("500")),
            (u("b"), 1, d("50"), d("500")),
            (u("b"), 2, d("50"), d("50")),
        ]
    );
    let tier2 = inv.lines[2].tier.clone().unwrap();
    assert_eq!((tier2.starting_at, tier2.size), (d("100"), None));
}

/// UNIQUE counts a value seen by two presentation groups once: each line shows the distinct
/// values it adds to those of the groups before it (in sorted order), so the lines sum to the
/// bucket's distinct count.
#[test]
fn unique_counts_a_value_once_across_presentation_groups() {
    let mut ab = Accumulator::unique_of("x");
    ab.merge(&Accumulator::unique_of("y")).unwrap();
    let rows = [
        ("a", ab),
        ("b", Accumulator::unique_of("x")),
        ("c", Accumulator::unique_of("z")),
    ];
    let inv = presented(Aggregation::Unique, true, Price::Flat(d("5")), &rows);
    let u = |s: &str| s.to_string();
    assert_eq!(
        by_user(&inv),
        vec![
            (u("a"), 0, d("2"), d("10")),
            (u("b"), 0, d("0"), d("0")),
            (u("c"), 0, d("1"), d("5")),
        ]
    );
    assert_eq!(inv.total, d("15"));
    assert_eq!(
        presented(Aggregation::Unique, false, Price::Flat(d("5")), &rows).total,
        d("15")
    );
}

/// Random hourly usage over users and models for the presentation laws: `(model, user, hour,
/// value)`.
fn arb_usage() -> impl Strategy<Value = Vec<(usize, usize, i64, u64)>> {
    prop::collection::vec((0usize..2, 0usize..3, 0i64..700, 0u64..300), 0..20)
}

/// Rates the usage on a product priced by model (a: tiers, b: flat 0.25), presented by user or
/// not, with aggregation `agg` and an optional ÷7 ROUND_HALF_UP 1 conversion.
fn rate_models(
    agg: Aggregation,
    tiers: &[Tier],
    rows: &[(usize, usize, i64, u64)],
    presented: bool,
    converted: bool,
) -> RatedInvoice {
    let m = metric("m", agg, vec![vec!["model".into(), "user".into()]]);
    let (models, users) = (["a", "b"], ["u1", "u2", "u3"]);
    let usage: Vec<UsageRow> = rows
        .iter()
        .map(|(mi, ui, h, v)| {
            let acc = match agg {
                Aggregation::Unique => Accumulator::unique_of(&(v % 7).to_string()),
                Aggregation::Max => Accumulator::Max(Decimal::from(*v)),
                _ => Accumulator::Sum(Decimal::from(*v)),
            };
            row(
                "m",
                &[Some(models[*mi]), Some(users[*ui])],
                SEP.start_ms + h * HOUR_MS,
                acc,
            )
        })
        .collect();
    let mut st = state("m", &["model"], if presented { &["user"] } else { &[] });
    if converted {
        st.quantity_conversion = Some(QuantityConversion {
            conversion_factor: d("7"),
            operation: ConversionOperation::Divide,
            name: None,
        });
        st.quantity_rounding = Some(QuantityRounding {
            decimal_places: 1,
            rounding_method: RoundingMethod::RoundHalfUp,
        });
    }
    let rates = [
        rate("p", &[("model", "a")], 0, Price::Tiered(tiers.to_vec())),
        rate("p", &[("model", "b")], 0, Price::Flat(d("0.25"))),
    ];
    rate_one(&[product("p", st)], &[m], &rates, &usage)
}

/// Σ quantity and Σ total of the lines of one model.
fn model_sums(inv: &RatedInvoice, model: &str) -> (Decimal, Decimal) {
    inv.lines
        .iter()
        .filter(|l| l.pricing_group_values.as_ref().unwrap()["model"] == model)
        .fold((Decimal::ZERO, Decimal::ZERO), |(q, t), l| {
            (q + l.quantity, t + l.total)
        })
}

proptest! {
    /// Presentation groups split a pricing bucket without changing it: per model, the presented
    /// lines' quantities and totals sum to the unpresented ones, for every aggregation, with and
    /// without conversion and rounding; the invoice total is the sum of the lines.
    #[test]
    fn presentation_split_conserves_the_bucket(
        tiers in arb_tiers(),
        rows in arb_usage(),
        agg in prop::sample::select(vec![Aggregation::Sum, Aggregation::Max, Aggregation::Unique]),
        converted in any::<bool>(),
    ) {
        let plain = rate_models(agg, &tiers, &rows, false, converted);
        let split = rate_models(agg, &tiers, &rows, true, converted);
        for model in ["a", "b"] {
            prop_assert_eq!(model_sums(&split, model), model_sums(&plain, model));
        }
        prop_assert_eq!(split.total, plain.total);
        let sum: Decimal = split.lines.iter().map(|l| l.total).sum();
        prop_assert_eq!(split.total, sum);
        for l in &split.lines {
            prop_assert_eq!(l.total, l.quantity * l.unit_price);
            prop_assert!(l.quantity >= Decimal::ZERO);
        }
    }

    /// Rating is monotone in quantity: with non-negative prices and usage, more usage (one more
    /// row) never costs less, presented or not.
    #[test]
    fn more_usage_never_costs_less(
        tiers in arb_tiers(),
        rows in arb_usage(),
        extra in (0usize..2, 0usize..3, 0i64..700, 0u64..300),
        agg in prop::sample::select(vec![Aggregation::Sum, Aggregation::Max, Aggregation::Unique]),
        presented in any::<bool>(),
    ) {
        let before = rate_models(agg, &tiers, &rows, presented, true);
        let mut more = rows.clone();
        more.push(extra);
        let after = rate_models(agg, &tiers, &more, presented, true);
        prop_assert!(before.total <= after.total, "{} > {}", before.total, after.total);
    }
}

fn arb_schedule_rates() -> impl Strategy<Value = Vec<Rate>> {
    let one = (0..3usize, 0..3usize, 0..6i64, proptest::option::of(1..4i64));
    proptest::collection::vec(one, 0..40).prop_map(|specs| {
        specs
            .into_iter()
            .enumerate()
            .map(|(n, (p, region, start, len))| {
                let product = ["a", "b", "c"][p];
                let regions = [&[][..], &[("region", "us")][..], &[("region", "eu")][..]];
                let mut r = rate(
                    product,
                    regions[region],
                    start * HOUR_MS,
                    Price::Flat(d("1")),
                );
                r.ending_before_ms = len.map(|l| (start + l) * HOUR_MS);
                // Prices tell the rates apart, so a wrong pick shows.
                r.price = Price::Flat(Decimal::from(n as i64));
                r
            })
            .collect()
    })
}

proptest! {
    /// The whole card's schedules at once are exactly each combination's schedule.
    #[test]
    fn rate_schedules_agree_with_rate_schedule(rates in arb_schedule_rates()) {
        let all = rate_schedules(&rates);
        let mut keys: Vec<(String, BTreeMap<String, String>)> = rates
            .iter()
            .map(|r| (r.product_id.clone(), r.pricing_group_values.clone()))
            .collect();
        keys.sort();
        keys.dedup();
        let mut expected = Vec::new();
        for (product, pricing) in &keys {
            for (span, rate) in rate_schedule(&rates, product, pricing) {
                expected.push((span, rate.clone()));
            }
        }
        let got: Vec<(Period, Rate)> = all.iter().map(|s| (s.span, rates[s.rate].clone())).collect();
        prop_assert_eq!(got, expected);
    }
}

#[test]
fn lines_follow_the_card_product_order_and_keep_their_order_within_a_product() {
    let calls = metric("calls", Aggregation::Count, vec![vec!["region".into()]]);
    let metrics: BTreeMap<String, MetricDef> = [(calls.id.clone(), calls)].into_iter().collect();
    let products = [
        product("a", state("calls", &["region"], &[])),
        product("b", state("calls", &[], &[])),
        product("c", state("calls", &[], &[])),
    ];
    let rates = [
        rate("a", &[("region", "us")], SEP.start_ms, Price::Flat(d("1"))),
        rate("a", &[("region", "eu")], SEP.start_ms, Price::Flat(d("2"))),
        rate("b", &[], SEP.start_ms, Price::Flat(d("3"))),
        rate("c", &[], SEP.start_ms, Price::Flat(d("5"))),
    ];
    let usage = [
        row("calls", &[Some("us")], SEP.start_ms, Accumulator::Count(4)),
        row("calls", &[Some("eu")], SEP.start_ms, Accumulator::Count(10)),
    ];
    let input = RatingInput {
        period: SEP,
        products: &products,
        metrics: &metrics,
        rates: &rates,
        terms: &crate::pricing::ContractTerms::NONE,
        usage: &usage,
        balances: &[],
    };
    let summary = |inv: &RatedInvoice| -> Vec<(String, Option<String>, Decimal)> {
        inv.lines
            .iter()
            .map(|l| {
                let region = l.pricing_group_values.as_ref().map(|v| v["region"].clone());
                (l.product_id.clone(), region, l.total)
            })
            .collect()
    };
    let unordered = rate_period(&input).unwrap();
    // Rating's own order: products as given, a's combinations sorted by value (eu before us).
    let a_lines = [
        ("a".to_string(), Some("eu".to_string()), d("20")),
        ("a".to_string(), Some("us".to_string()), d("4")),
    ];
    let (b, c) = (
        ("b".to_string(), None, d("42")),
        ("c".to_string(), None, d("70")),
    );
    assert_eq!(
        summary(&unordered),
        [a_lines.to_vec(), vec![b.clone(), c.clone()]].concat()
    );
    // "c" first, then "a"; "b" is not listed and follows.
    let ordered = rate_period_in_order(&input, &["c", "a"]).unwrap();
    assert_eq!(
        summary(&ordered),
        [vec![c.clone()], a_lines.to_vec(), vec![b.clone()]].concat()
    );
    assert_eq!(
        (ordered.subtotal, ordered.total),
        (unordered.subtotal, unordered.total)
    );
    assert_eq!(ordered.total, d("136"));
}
