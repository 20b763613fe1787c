//! Tests of rating: worked examples from the contract document and the laws of pricing.

use super::*;
use crate::metric::{Aggregation, MetricDef};
use crate::time::{parse_rfc3339_ms, HOUR_MS};
use alloc::string::ToString;
use alloc::vec;
use core::str::FromStr;
use proptest::prelude::*;

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn t(s: &str) -> i64 {
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

fn metric(id: &str, aggregation: Aggregation, group_keys: Vec<Vec<String>>) -> MetricDef {
    MetricDef {
        id: id.into(),
        aggregation,
        aggregation_key: Some("v".into()),
        event_type_filter: None,
        property_filters: vec![],
        group_keys,
    }
}

fn state(metric_id: &str, pricing: &[&str], presentation: &[&str]) -> ProductState {
    ProductState {
        metric_id: metric_id.into(),
        pricing_group_key: pricing.iter().map(|s| s.to_string()).collect(),
        presentation_group_key: presentation.iter().map(|s| s.to_string()).collect(),
        quantity_conversion: None,
        quantity_rounding: None,
    }
}

fn product(id: &str, st: ProductState) -> RatedProduct {
    RatedProduct {
        product_id: id.into(),
        name: id.to_uppercase(),
        versions: vec![(i64::MIN, st)],
    }
}

fn rate(product: &str, pricing: &[(&str, &str)], start: i64, price: Price) -> Rate {
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
    }
}

fn row(metric: &str, groups: &[Option<&str>], hour_ms: i64, acc: Accumulator) -> UsageRow {
    UsageRow {
        metric_id: metric.into(),
        groups: groups.iter().map(|g| g.map(String::from)).collect(),
        hour_ms,
        acc,
    }
}

fn usd() -> CreditTypeId {
    CreditTypeId("usd".into())
}

/// The fields of a priced line these tests assert, as plain decimals.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Line {
    product_id: String,
    name: String,
    quantity: Decimal,
    unit_price: Decimal,
    total: Decimal,
    starting_at_ms: i64,
    ending_before_ms: i64,
    pricing_group_values: Option<BTreeMap<String, String>>,
    presentation_group_values: Option<BTreeMap<String, Option<String>>>,
    tier: Option<TierRef>,
}

/// A priced period in one credit type, as these tests assert it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RatedInvoice {
    lines: Vec<Line>,
    subtotal: Decimal,
    total: Decimal,
}

/// Prices `input` through the pricing entry point (`pricing::price_invoice`), in USD.
fn rate_period(input: &RatingInput<'_>) -> Result<RatedInvoice, RatingError> {
    let snapshot = crate::pricing::PricingSnapshot {
        credit_types: vec![crate::money::CreditType {
            id: usd(),
            name: "USD".into(),
        }],
        fiat_credit_type: usd(),
        metrics: input.metrics.clone(),
        products: input.products.to_vec(),
        rates: input.rates.to_vec(),
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
            terms: Default::default(),
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
    Ok(RatedInvoice {
        lines,
        subtotal: inv.subtotal.get(&usd()),
        total: inv.total.get(&usd()),
    })
}

const SEP: Period = Period {
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
        usage,
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
        name: "P".into(),
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
        usage: &usage,
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
