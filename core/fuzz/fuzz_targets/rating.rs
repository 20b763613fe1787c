//! Random rate cards (FLAT and TIERED with arbitrary tier boundaries, entitlement, schedules),
//! products with versioned quantity conversion and rounding, and hourly usage, rated over one
//! period. Rating never panics (an amount out of range is an error); the invoice total is the exact
//! sum of its line totals and each line total is exactly quantity × unit price; with no negative
//! price, usage, or conversion (and no LATEST decrease) nothing is negative; and a valid tiered
//! price is monotone in the quantity when its prices are not negative.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use tally_core::accumulate::Accumulator;
use tally_core::metric::{Aggregation, MetricDef};
use tally_core::money::{CreditType, CreditTypeId};
use tally_core::period::{AnchorDay, Frequency, Period, Schedule};
use tally_core::pricing::{price_invoice, ContractSnapshot, PricingSnapshot};
use tally_core::rating::*;
use tally_core::time::HOUR_MS;
use tally_core_fuzz::{accumulator_of_kind, ArbDecimal, Exact};

/// 2024-09-01T00:00:00Z.
const T0: i64 = 1_725_148_800_000;
fn usd() -> CreditTypeId {
    CreditTypeId("usd".into())
}

/// The fuzzed configuration as core's pricing snapshot (one credit type).
fn snapshot(input: &Input) -> PricingSnapshot {
    PricingSnapshot {
        credit_types: vec![CreditType {
            id: usd(),
            name: "USD".into(),
        }],
        fiat_credit_type: usd(),
        metrics: input.metrics.clone(),
        products: input.products.clone(),
        // The card's order reversed, so fuzzing also runs the reordering.
        product_order: input
            .products
            .iter()
            .rev()
            .map(|p| p.product_id.clone())
            .collect(),
        rates: input.rates.clone(),
        composites: Vec::new(),
        balances: Default::default(),
        credit_type_conversions: Vec::new(),
        contract: ContractSnapshot {
            id: "c".into(),
            starting_at_ms: input.period.start_ms,
            ending_before_ms: None,
            usage_statement_schedule: Schedule {
                frequency: Frequency::Monthly,
                day: AnchorDay::FirstOfMonth,
                billing_anchor_ms: None,
            },
            invoice_generation_starting_at_ms: None,
            archived_at_ms: None,
            terms: Default::default(),
        },
    }
}

const KEYS: [&str; 3] = ["a", "b", "z"];
const VALUES: [&str; 2] = ["x", "y"];
const AGGREGATIONS: [Aggregation; 5] = [
    Aggregation::Count,
    Aggregation::Sum,
    Aggregation::Max,
    Aggregation::Unique,
    Aggregation::Latest,
];

fn dec(u: &mut Unstructured<'_>) -> arbitrary::Result<Decimal> {
    Ok(u.arbitrary::<ArbDecimal>()?.0)
}

/// An hour near the period (`hours` long), a little before and after it too.
fn hour(u: &mut Unstructured<'_>, hours: i64) -> arbitrary::Result<i64> {
    Ok(T0 + u.int_in_range(-3..=hours + 3)? * HOUR_MS)
}

fn keys(u: &mut Unstructured<'_>) -> arbitrary::Result<Vec<String>> {
    let mut out = Vec::new();
    for k in KEYS {
        if u.ratio(1u8, 3)? {
            out.push(k.to_string());
        }
    }
    Ok(out)
}

fn price(u: &mut Unstructured<'_>) -> arbitrary::Result<Price> {
    if u.arbitrary()? {
        return Ok(Price::Flat(dec(u)?));
    }
    let n = u.int_in_range(0u8..=4)?;
    let tiers = (0..n)
        .map(|i| {
            // Mostly well-formed (positive sizes, unbounded last tier), sometimes anything.
            let size = if u.ratio(1u8, 8)? {
                u.arbitrary::<Option<ArbDecimal>>()?.map(|d| d.0)
            } else if i + 1 == n {
                None
            } else {
                Some(dec(u)?.abs().max(Decimal::new(1, 28)))
            };
            Ok(Tier {
                price: dec(u)?,
                size,
            })
        })
        .collect::<arbitrary::Result<_>>()?;
    Ok(Price::Tiered(tiers))
}

#[derive(Debug)]
struct Input {
    period: Period,
    metrics: BTreeMap<String, MetricDef>,
    products: Vec<RatedProduct>,
    rates: Vec<Rate>,
    usage: Vec<UsageRow>,
    quantities: (Decimal, Decimal),
}

impl<'a> Arbitrary<'a> for Input {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let hours = u.int_in_range(1..=72)?;
        let period = Period {
            start_ms: T0,
            end_ms: T0 + hours * HOUR_MS,
        };
        let mut metrics = BTreeMap::new();
        for id in ["m0", "m1"] {
            let group_keys = (0..u.int_in_range(0u8..=2)?)
                .map(|_| keys(u))
                .collect::<arbitrary::Result<Vec<_>>>()?
                .into_iter()
                .filter(|k| !k.is_empty())
                .collect();
            metrics.insert(
                id.to_string(),
                MetricDef {
                    id: id.to_string(),
                    aggregation: *u.choose(&AGGREGATIONS)?,
                    aggregation_key: Some("v".into()),
                    event_type_filter: None,
                    property_filters: vec![],
                    group_keys,
                },
            );
        }
        let products = (0..u.int_in_range(1u8..=2)?)
            .map(|p| {
                let mut froms: Vec<i64> = (0..u.int_in_range(0u8..=2)?)
                    .map(|_| hour(u, hours))
                    .collect::<arbitrary::Result<_>>()?;
                froms.sort_unstable();
                froms.insert(0, i64::MIN);
                let versions = froms
                    .into_iter()
                    .map(|from| {
                        let state = ProductState {
                            metric_id: u.choose(&["m0", "m1", "m2"])?.to_string(),
                            pricing_group_key: keys(u)?,
                            presentation_group_key: keys(u)?,
                            quantity_conversion: if u.arbitrary()? {
                                Some(QuantityConversion {
                                    conversion_factor: dec(u)?,
                                    operation: *u.choose(&[
                                        ConversionOperation::Multiply,
                                        ConversionOperation::Divide,
                                    ])?,
                                    name: None,
                                })
                            } else {
                                None
                            },
                            quantity_rounding: if u.arbitrary()? {
                                Some(QuantityRounding {
                                    decimal_places: if u.ratio(1u8, 16)? {
                                        u.arbitrary()?
                                    } else {
                                        u.int_in_range(0..=4)?
                                    },
                                    rounding_method: *u.choose(&[
                                        RoundingMethod::RoundUp,
                                        RoundingMethod::RoundDown,
                                        RoundingMethod::RoundHalfUp,
                                    ])?,
                                })
                            } else {
                                None
                            },
                        };
                        Ok((from, state))
                    })
                    .collect::<arbitrary::Result<_>>()?;
                Ok(RatedProduct {
                    product_id: format!("p{p}"),
                    names: vec![(i64::MIN, format!("P{p}"))],
                    tags: vec![],
                    versions,
                })
            })
            .collect::<arbitrary::Result<_>>()?;
        let rates = (0..u.int_in_range(0u8..=6)?)
            .map(|_| {
                let mut pricing_group_values = BTreeMap::new();
                for k in keys(u)? {
                    pricing_group_values.insert(k, u.choose(&VALUES)?.to_string());
                }
                let starting_at_ms = if u.ratio(1u8, 4)? {
                    i64::MIN
                } else {
                    hour(u, hours)?
                };
                Ok(Rate {
                    product_id: u.choose(&["p0", "p1"])?.to_string(),
                    pricing_group_values,
                    starting_at_ms,
                    ending_before_ms: if u.arbitrary()? {
                        Some(hour(u, hours)?)
                    } else {
                        None
                    },
                    entitled: u.ratio(7u8, 8)?,
                    price: price(u)?,
                    credit_type: usd(),
                    billing_frequency: None,
                    commit_rate: None,
                })
            })
            .collect::<arbitrary::Result<_>>()?;
        let usage = (0..u.int_in_range(0u8..=16)?)
            .map(|_| {
                let metric = &metrics[*u.choose(&["m0", "m1"])?];
                let grain_len = metric.grain().len();
                let groups = (0..grain_len)
                    .map(|_| Ok(u.choose(&[Some("x"), Some("y"), None])?.map(String::from)))
                    .collect::<arbitrary::Result<_>>()?;
                let kind = if u.ratio(1u8, 32)? {
                    u.arbitrary()?
                } else {
                    AGGREGATIONS
                        .iter()
                        .position(|a| *a == metric.aggregation)
                        .unwrap() as u8
                };
                Ok(UsageRow {
                    metric_id: metric.id.clone(),
                    groups,
                    hour_ms: hour(u, hours)?,
                    acc: accumulator_of_kind(u, kind)?,
                })
            })
            .collect::<arbitrary::Result<_>>()?;
        Ok(Input {
            period,
            metrics,
            products,
            rates,
            usage,
            quantities: (dec(u)?, dec(u)?),
        })
    }
}

fn kind_matches(acc: &Accumulator, aggregation: Aggregation) -> bool {
    matches!(
        (acc, aggregation),
        (Accumulator::Count(_), Aggregation::Count)
            | (Accumulator::Sum(_), Aggregation::Sum)
            | (Accumulator::Max(_), Aggregation::Max)
            | (Accumulator::Unique(_), Aggregation::Unique)
            | (Accumulator::Latest { .. }, Aggregation::Latest)
    )
}

fn prices_of(price: &Price) -> Vec<Decimal> {
    match price {
        Price::Flat(p) | Price::Percentage(p) => vec![*p],
        Price::Tiered(tiers) => tiers.iter().map(|t| t.price).collect(),
    }
}

/// Laws of one price on its own: exact totals, tier split, monotonicity.
fn check_price(price: &Price, quantities: (Decimal, Decimal)) {
    let valid = price.validate().is_ok();
    let non_negative = prices_of(price)
        .iter()
        .all(|p| !p.is_sign_negative() || p.is_zero());
    let mut totals = Vec::new();
    for q in [quantities.0, quantities.1] {
        let total = price_total(price, q);
        if let Price::Tiered(tiers) = price {
            if let Ok(parts) = tier_split(tiers, q) {
                if valid {
                    assert!(!parts.is_empty());
                    let sum = parts
                        .iter()
                        .fold(Exact::zero(), |s, p| s.add(&Exact::of(p.quantity)));
                    assert_eq!(sum, Exact::of(q), "{q} split over {tiers:?}: {parts:?}");
                    let mut start = Exact::zero();
                    for (i, part) in parts.iter().enumerate() {
                        assert_eq!(part.level as usize, i + 1);
                        assert_eq!(Exact::of(part.start), start);
                        if let Some(size) = part.tier.size {
                            assert!(part.quantity <= size);
                            start = start.add(&Exact::of(size));
                        }
                    }
                }
                if let Ok(t) = &total {
                    let want = parts.iter().fold(Exact::zero(), |s, p| {
                        s.add(&Exact::product(p.quantity, p.tier.price))
                    });
                    assert_eq!(Exact::of(*t), want, "{q} priced at {tiers:?}");
                }
            }
        }
        if let (Price::Flat(p), Ok(t)) = (price, &total) {
            assert_eq!(Exact::of(*t), Exact::product(q, *p));
        }
        totals.push((q, total));
    }
    if valid && non_negative {
        if let [(q1, Ok(t1)), (q2, Ok(t2))] = &totals[..] {
            if q1 <= q2 {
                assert!(t1 <= t2, "{price:?}: {q1} costs {t1}, {q2} costs {t2}");
            } else {
                assert!(t1 >= t2, "{price:?}: {q1} costs {t1}, {q2} costs {t2}");
            }
        }
    }
}

fuzz_target!(|input: Input| {
    for rate in &input.rates {
        check_price(&rate.price, input.quantities);
    }

    let snapshot = snapshot(&input);
    let result = price_invoice(&snapshot, &input.usage, input.period);
    assert_eq!(
        price_invoice(&snapshot, &input.usage, input.period),
        result,
        "rating is a pure function"
    );

    let rows_match = input
        .usage
        .iter()
        .all(|r| kind_matches(&r.acc, input.metrics[&r.metric_id].aggregation));
    let invoice = match result {
        Ok(invoice) => invoice,
        Err(RatingError::CorruptUsage) => {
            assert!(!rows_match, "only usage of the wrong kind is corrupt");
            return;
        }
        Err(RatingError::Overflow) => return,
        Err(RatingError::MixedCreditTypes) => panic!("every amount is in the one credit type"),
        Err(RatingError::MissingConversion) => panic!("no amount is in a custom pricing unit"),
    };
    let total = invoice.total.get(&usd());
    let subtotal = invoice.subtotal.get(&usd());

    // Σ line totals, exactly, and each line total is exactly its quantity × unit price.
    let mut sum = Exact::zero();
    for line in &invoice.lines {
        assert_eq!(
            Exact::of(line.total.value),
            Exact::product(line.quantity, line.unit_price.value),
            "{line:?}"
        );
        sum = sum.add(&Exact::of(line.total.value));
        assert!(input.period.start_ms <= line.segment.start_ms);
        assert!(line.segment.start_ms < line.segment.end_ms);
        assert!(line.segment.end_ms <= input.period.end_ms);
        assert!(input
            .products
            .iter()
            .any(|p| p.product_id == line.product_id));
    }
    assert_eq!(total, subtotal);
    assert_eq!(Exact::of(total), sum, "{invoice:?}");

    // Nothing negative goes in, nothing negative comes out.
    let not_negative = |d: &Decimal| !d.is_sign_negative() || d.is_zero();
    let inputs_non_negative = input
        .rates
        .iter()
        .all(|r| r.price.validate().is_ok() && prices_of(&r.price).iter().all(not_negative))
        && input
            .metrics
            .values()
            .all(|m| m.aggregation != Aggregation::Latest)
        && input.usage.iter().all(|r| match &r.acc {
            Accumulator::Sum(d) | Accumulator::Max(d) => not_negative(d),
            _ => true,
        })
        && input
            .products
            .iter()
            .flat_map(|p| &p.versions)
            .all(|(_, s)| {
                s.quantity_conversion
                    .as_ref()
                    .is_none_or(|c| not_negative(&c.conversion_factor))
            });
    if inputs_non_negative && rows_match {
        assert!(not_negative(&total), "{invoice:?}");
        for line in &invoice.lines {
            assert!(not_negative(&line.total.value), "{line:?}");
        }
    }
});
