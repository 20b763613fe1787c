//! Tests of overrides: the worked examples of `metronome-api.md` §3.6, targeting, entitlement,
//! segments at override boundaries, rounding of multiplied prices, the refusals of [`build`],
//! and the laws (splitting conserves quantity; a lowest multiplier ≤ 1 never bills more).

use super::*;
use crate::accumulate::Accumulator;
use crate::metric::Aggregation;
use crate::rating::tests::{
    d, metric, product, rate, rate_with, row, state, t, usd, RatedInvoice, SEP,
};
use crate::rating::{RatedProduct, RatingInput, UsageRow};
use alloc::string::ToString;
use alloc::vec;
use proptest::prelude::*;

const MID: &str = "2024-09-15T00:00:00Z";

fn flat(p: &str) -> Price {
    Price::Flat(d(p))
}

fn tier(price: &str, size: Option<&str>) -> Tier {
    Tier {
        price: d(price),
        size: size.map(d),
    }
}

fn mtier(multiplier: &str, size: Option<&str>) -> MultiplierTier {
    MultiplierTier {
        multiplier: d(multiplier),
        size: size.map(d),
    }
}

/// An override of product `p` from the start of September, open-ended.
fn on(p: &str, adjustment: Option<Adjustment>) -> Override {
    Override {
        id: "o".into(),
        starting_at_ms: SEP.start_ms,
        ending_before_ms: None,
        target: Target::Product(p.into()),
        adjustment,
        priority: None,
        entitled: None,
        commit_specific: None,
    }
}

fn multiplier(p: &str, m: &str) -> Override {
    on(p, Some(Adjustment::Multiplier(d(m))))
}

fn overwrite(p: &str, price: Price) -> Override {
    on(
        p,
        Some(Adjustment::Overwrite {
            price,
            credit_type: usd(),
        }),
    )
}

fn prioritised(mut o: Override, priority: &str) -> Override {
    o.priority = Some(d(priority));
    o
}

fn terms(mode: Prioritization, overrides: Vec<Override>) -> ContractTerms {
    ContractTerms {
        overrides,
        multiplier_override_prioritization: mode,
        ..ContractTerms::default()
    }
}

fn lowest(overrides: Vec<Override>) -> ContractTerms {
    terms(Prioritization::LowestMultiplier, overrides)
}

fn explicit(overrides: Vec<Override>) -> ContractTerms {
    terms(Prioritization::Explicit, overrides)
}

fn sum_rows(groups: &[Option<&str>], at: &[(i64, &str)]) -> Vec<UsageRow> {
    at.iter()
        .map(|(hour, v)| row("m", groups, *hour, Accumulator::Sum(d(v))))
        .collect()
}

/// Prices one period of products `products` (metric `m`, SUM) with `rates` and `terms`.
fn priced_with(
    products: &[RatedProduct],
    rates: &[Rate],
    usage: &[UsageRow],
    terms: &ContractTerms,
    group_keys: Vec<Vec<String>>,
) -> RatedInvoice {
    let m = metric("m", Aggregation::Sum, group_keys);
    let metrics: BTreeMap<String, crate::metric::MetricDef> =
        [(m.id.clone(), m)].into_iter().collect();
    let input = RatingInput {
        period: SEP,
        products,
        metrics: &metrics,
        rates,
        terms,
        usage,
        balances: &[],
    };
    rate_with(&input, &[], None).unwrap().0
}

/// Product `p` priced at `list`, `quantity` units used on September 2nd, with `terms`.
fn priced(list: Price, quantity: &str, terms: &ContractTerms) -> RatedInvoice {
    let products = [product("p", state("m", &[], &[]))];
    let rates = [rate("p", &[], SEP.start_ms, list)];
    let usage = sum_rows(&[], &[(t("2024-09-02T00:00:00Z"), quantity)]);
    priced_with(&products, &rates, &usage, terms, vec![])
}

/// `(quantity, unit_price, total)` of each line.
fn amounts(inv: &RatedInvoice) -> Vec<(Decimal, Decimal, Decimal)> {
    inv.lines
        .iter()
        .map(|l| (l.quantity, l.unit_price, l.total))
        .collect()
}

fn amount(q: &str, p: &str, total: &str) -> (Decimal, Decimal, Decimal) {
    (d(q), d(p), d(total))
}

#[test]
fn the_worked_examples_of_section_3_6() {
    // List FLAT 100; A MULTIPLIER 0.8 and B MULTIPLIER 0.9 under LOWEST_MULTIPLIER: 80 a unit,
    // never 72 (no compounding).
    let ab = vec![multiplier("p", "0.8"), multiplier("p", "0.9")];
    let inv = priced(flat("100"), "150", &lowest(ab.clone()));
    assert_eq!(amounts(&inv), vec![amount("150", "80", "12000")]);
    assert_eq!(inv.total, d("12000"));
    // Listed the other way round: still the lowest.
    let ba: Vec<Override> = ab.iter().rev().cloned().collect();
    assert_eq!(priced(flat("100"), "150", &lowest(ba)).total, d("12000"));
    // Add OVERWRITE FLAT 70: it wins over both multipliers.
    let mut with_overwrite = ab;
    with_overwrite.push(overwrite("p", flat("70")));
    let inv = priced(flat("100"), "150", &lowest(with_overwrite));
    assert_eq!(amounts(&inv), vec![amount("150", "70", "10500")]);
    // EXPLICIT, TIERED [{0.5, size 100}, {1}] priority 1, usage 150: 100×50 + 50×100 = 10,000.
    let tiered = on(
        "p",
        Some(Adjustment::Tiered(vec![
            mtier("0.5", Some("100")),
            mtier("1", None),
        ])),
    );
    let inv = priced(
        flat("100"),
        "150",
        &explicit(vec![prioritised(tiered, "1")]),
    );
    assert_eq!(
        amounts(&inv),
        vec![amount("100", "50", "5000"), amount("50", "100", "5000")]
    );
    assert_eq!(inv.total, d("10000"));
    let levels: Vec<u32> = inv
        .lines
        .iter()
        .filter_map(|l| Some(l.tier.as_ref()?.level))
        .collect();
    assert_eq!(levels, vec![1, 2]);
}

#[test]
fn explicit_units_fall_through_tiered_overrides_by_priority_then_to_the_list_rate() {
    // TIERED [{0.5, size 100}] priority 1, then MULTIPLIER 0.9 priority 2: the first 100 units
    // at 50, the next 50 at 90.
    let tiered = on(
        "p",
        Some(Adjustment::Tiered(vec![mtier("0.5", Some("100"))])),
    );
    let ov = explicit(vec![
        prioritised(multiplier("p", "0.9"), "2"),
        prioritised(tiered.clone(), "1"),
    ]);
    let inv = priced(flat("100"), "150", &ov);
    assert_eq!(
        amounts(&inv),
        vec![amount("100", "50", "5000"), amount("50", "90", "4500")]
    );
    // Swap the priorities: the multiplier takes every unit first.
    let ov = explicit(vec![
        prioritised(multiplier("p", "0.9"), "1"),
        prioritised(tiered.clone(), "2"),
    ]);
    assert_eq!(
        amounts(&priced(flat("100"), "150", &ov)),
        vec![amount("150", "90", "13500")]
    );
    // Two tiered overrides count their own units: [{0.5, 100}] then [{0.8, 20}, {0.9, 10}],
    // then the list price: 100×50 + 20×80 + 10×90 + 20×100 = 9,500.
    let second = on(
        "p",
        Some(Adjustment::Tiered(vec![
            mtier("0.8", Some("20")),
            mtier("0.9", Some("10")),
        ])),
    );
    let ov = explicit(vec![
        prioritised(tiered.clone(), "1"),
        prioritised(second, "2"),
    ]);
    let inv = priced(flat("100"), "150", &ov);
    assert_eq!(
        amounts(&inv),
        vec![
            amount("100", "50", "5000"),
            amount("20", "80", "1600"),
            amount("10", "90", "900"),
            amount("20", "100", "2000"),
        ]
    );
    assert_eq!(inv.total, d("9500"));
    // A TIERED list rate: the override's tiers and the list's tiers both cut the positions.
    // List [{10, 1000}, {8}], override [{0.5, 100}], usage 1500:
    // 100×5 + 900×10 + 500×8 = 13,500.
    let list = Price::Tiered(vec![tier("10", Some("1000")), tier("8", None)]);
    let inv = priced(list, "1500", &explicit(vec![prioritised(tiered, "1")]));
    assert_eq!(
        amounts(&inv),
        vec![
            amount("100", "5", "500"),
            amount("900", "10", "9000"),
            amount("500", "8", "4000"),
        ]
    );
}

#[test]
fn a_multiplier_scales_every_tier_and_an_overwrite_ignores_the_list() {
    let list = Price::Tiered(vec![tier("10", Some("1000")), tier("8", None)]);
    let inv = priced(list.clone(), "1500", &lowest(vec![multiplier("p", "0.5")]));
    assert_eq!(
        amounts(&inv),
        vec![
            amount("1000", "5.0", "5000.0"),
            amount("500", "4.0", "2000.0")
        ]
    );
    // A tiered overwrite on a flat list rate.
    let over = Price::Tiered(vec![tier("3", Some("100")), tier("1", None)]);
    let inv = priced(flat("100"), "150", &lowest(vec![overwrite("p", over)]));
    assert_eq!(
        amounts(&inv),
        vec![amount("100", "3", "300"), amount("50", "1", "50")]
    );
    // An overwrite on a tiered list rate is flat.
    let inv = priced(list, "1500", &lowest(vec![overwrite("p", flat("2"))]));
    assert_eq!(amounts(&inv), vec![amount("1500", "2", "3000")]);
}

#[test]
fn thirds_tiny_and_huge_multipliers_stay_exact_or_round_at_12_places() {
    // 0.333333 terminates: 100 × 0.333333 = 33.3333 exactly; 3 units = 99.9999.
    let inv = priced(flat("100"), "3", &lowest(vec![multiplier("p", "0.333333")]));
    assert_eq!(amounts(&inv), vec![amount("3", "33.3333", "99.9999")]);
    // A 15-place third times a 7-place price needs 22 places: rounded half-even to 12.
    // 0.0000007 × 0.333333333333333 = 0.000000233333333333333 → 0.000000233333.
    let inv = priced(
        flat("0.0000007"),
        "3000000",
        &lowest(vec![multiplier("p", "0.333333333333333")]),
    );
    assert_eq!(
        amounts(&inv),
        vec![amount("3000000", "0.000000233333", "0.699999000000")]
    );
    // Tiny: one millionth of a millionth.
    let inv = priced(
        flat("1"),
        "5",
        &lowest(vec![multiplier("p", "0.000000000001")]),
    );
    assert_eq!(
        amounts(&inv),
        vec![amount("5", "0.000000000001", "0.000000000005")]
    );
    // Zero: free, but still a line.
    let inv = priced(flat("100"), "5", &lowest(vec![multiplier("p", "0")]));
    assert_eq!(inv.total, Decimal::ZERO);
    assert_eq!(inv.lines.len(), 1);
    // Huge: the largest list price times the largest multiplier, a million units.
    let inv = priced(
        flat("1000000000000"),
        "1000000",
        &lowest(vec![multiplier("p", "1000")]),
    );
    assert_eq!(
        amounts(&inv),
        vec![amount(
            "1000000",
            "1000000000000000",
            "1000000000000000000000"
        )]
    );
}

#[test]
fn an_override_starting_mid_period_splits_the_lines_and_conserves_quantity() {
    let mut half = multiplier("p", "0.5");
    half.starting_at_ms = t(MID);
    let products = [product("p", state("m", &[], &[]))];
    let rates = [rate("p", &[], SEP.start_ms, flat("100"))];
    let usage = sum_rows(
        &[],
        &[
            (t("2024-09-02T00:00:00Z"), "10"),
            (t("2024-09-14T23:00:00Z"), "5"),
            (t(MID), "20"),
            (t("2024-09-29T00:00:00Z"), "1"),
        ],
    );
    let inv = priced_with(&products, &rates, &usage, &lowest(vec![half]), vec![]);
    let spans: Vec<(i64, i64, Decimal, Decimal)> = inv
        .lines
        .iter()
        .map(|l| (l.starting_at_ms, l.ending_before_ms, l.quantity, l.total))
        .collect();
    assert_eq!(
        spans,
        vec![
            (SEP.start_ms, t(MID), d("15"), d("1500")),
            (t(MID), SEP.end_ms, d("21"), d("1050.0")),
        ]
    );
    // Ending mid-period too: three pieces, back to the list price after it.
    let mut window = multiplier("p", "0.5");
    window.starting_at_ms = t("2024-09-10T00:00:00Z");
    window.ending_before_ms = Some(t("2024-09-20T00:00:00Z"));
    let inv = priced_with(&products, &rates, &usage, &lowest(vec![window]), vec![]);
    let unit: Vec<(Decimal, Decimal)> = inv
        .lines
        .iter()
        .map(|l| (l.quantity, l.unit_price))
        .collect();
    assert_eq!(
        unit,
        vec![
            (d("10"), d("100")),
            (d("25"), d("50.0")),
            (d("1"), d("100"))
        ]
    );
}

#[test]
fn a_boundary_that_changes_no_price_does_not_split() {
    // A 0.8 all month; B 0.9 from mid-month: 0.8 stays the lowest, so one line.
    let mut b = multiplier("p", "0.9");
    b.starting_at_ms = t(MID);
    let products = [product("p", state("m", &[], &[]))];
    let rates = [rate("p", &[], SEP.start_ms, flat("100"))];
    let usage = sum_rows(&[], &[(t("2024-09-02T00:00:00Z"), "1"), (t(MID), "2")]);
    let inv = priced_with(
        &products,
        &rates,
        &usage,
        &lowest(vec![multiplier("p", "0.8"), b]),
        vec![],
    );
    assert_eq!(amounts(&inv), vec![amount("3", "80.0", "240.0")]);
    assert_eq!(
        (inv.lines[0].starting_at_ms, inv.lines[0].ending_before_ms),
        (SEP.start_ms, SEP.end_ms)
    );
}

fn tagged(id: &str, tags: &[&str]) -> RatedProduct {
    let mut p = product(id, state("m", &[], &[]));
    p.tags = vec![(i64::MIN, tags.iter().map(|t| t.to_string()).collect())];
    p
}

#[test]
fn tags_target_products_carrying_all_of_them() {
    let products = [tagged("p", &["ai", "premium"]), tagged("q", &["ai"])];
    let rates = [
        rate("p", &[], SEP.start_ms, flat("100")),
        rate("q", &[], SEP.start_ms, flat("100")),
    ];
    let usage = sum_rows(&[], &[(t("2024-09-02T00:00:00Z"), "1")]);
    let by_tags = |tags: &[&str]| {
        let o = Override {
            target: Target::Tags(tags.iter().map(|t| t.to_string()).collect()),
            ..multiplier("", "0.5")
        };
        let inv = priced_with(&products, &rates, &usage, &lowest(vec![o]), vec![]);
        inv.lines
            .iter()
            .map(|l| (l.product_id.clone(), l.unit_price))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        by_tags(&["ai"]),
        vec![("p".into(), d("50.0")), ("q".into(), d("50.0"))]
    );
    assert_eq!(
        by_tags(&["ai", "premium"]),
        vec![("p".into(), d("50.0")), ("q".into(), d("100"))]
    );
    assert_eq!(
        by_tags(&["premium", "other"]),
        vec![("p".into(), d("100")), ("q".into(), d("100"))]
    );
}

#[test]
fn tags_in_effect_at_the_period_end_decide() {
    let mut p = tagged("p", &[]);
    p.tags.push((t(MID), vec!["ai".into()]));
    let products = [p];
    let rates = [rate("p", &[], SEP.start_ms, flat("100"))];
    let usage = sum_rows(&[], &[(t("2024-09-02T00:00:00Z"), "1")]);
    let o = Override {
        target: Target::Tags(vec!["ai".into()]),
        ..multiplier("", "0.5")
    };
    let inv = priced_with(&products, &rates, &usage, &lowest(vec![o]), vec![]);
    assert_eq!(amounts(&inv), vec![amount("1", "50.0", "50.0")]);
}

fn spec(f: impl FnOnce(&mut Specifier)) -> Specifier {
    let mut s = Specifier::default();
    f(&mut s);
    s
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn specifiers_match_pricing_and_presentation_values_and_billing_frequency() {
    // Pricing key model, presentation key user: model a for u1 and u2, model b for u1.
    let products = [product("p", state("m", &["model"], &["user"]))];
    let rates = [
        rate("p", &[("model", "a")], SEP.start_ms, flat("10")),
        rate("p", &[("model", "b")], SEP.start_ms, flat("10")),
    ];
    let at = t("2024-09-02T00:00:00Z");
    let mut usage = sum_rows(&[Some("a"), Some("u1")], &[(at, "1")]);
    usage.extend(sum_rows(&[Some("a"), Some("u2")], &[(at, "2")]));
    usage.extend(sum_rows(&[Some("b"), Some("u1")], &[(at, "4")]));
    let keys = vec![vec!["model".to_string()], vec!["user".to_string()]];
    let run = |specs: Vec<Specifier>| {
        let o = Override {
            target: Target::Specifiers(specs),
            ..multiplier("", "0.5")
        };
        let inv = priced_with(&products, &rates, &usage, &lowest(vec![o]), keys.clone());
        inv.lines.iter().map(|l| l.total).collect::<Vec<_>>()
    };
    // Lines: (a, u1), (a, u2), (b, u1).
    let pricing_a = spec(|s| s.pricing_group_values = Some(map(&[("model", "a")])));
    assert_eq!(run(vec![pricing_a]), vec![d("5.0"), d("10.0"), d("40")]);
    let user_1 = spec(|s| s.presentation_group_values = Some(map(&[("user", "u1")])));
    assert_eq!(
        run(vec![user_1.clone()]),
        vec![d("5.0"), d("20"), d("20.0")]
    );
    // Within one specifier every field must match; across specifiers any.
    let a_and_u1 = spec(|s| {
        s.pricing_group_values = Some(map(&[("model", "a")]));
        s.presentation_group_values = Some(map(&[("user", "u1")]));
    });
    assert_eq!(run(vec![a_and_u1]), vec![d("5.0"), d("20"), d("40")]);
    let b_only = spec(|s| s.pricing_group_values = Some(map(&[("model", "b")])));
    let u2_only = spec(|s| s.presentation_group_values = Some(map(&[("user", "u2")])));
    assert_eq!(
        run(vec![b_only, u2_only]),
        vec![d("10"), d("10.0"), d("20.0")]
    );
    // Product id and tags.
    let other = spec(|s| s.product_id = Some("q".into()));
    assert_eq!(run(vec![other]), vec![d("10"), d("20"), d("40")]);
    let this = spec(|s| s.product_id = Some("p".into()));
    assert_eq!(run(vec![this]), vec![d("5.0"), d("10.0"), d("20.0")]);
    let tag = spec(|s| s.product_tags = Some(vec!["ai".into()]));
    assert_eq!(run(vec![tag]), vec![d("10"), d("20"), d("40")]);
    // Usage rates have no billing frequency: a specifier naming one matches none of them.
    let monthly = spec(|s| s.billing_frequency = Some(Frequency::Monthly));
    assert_eq!(run(vec![monthly]), vec![d("10"), d("20"), d("40")]);
    // An absent presentation value does not match a specifier value.
    let mut none_user = sum_rows(&[Some("a"), None], &[(at, "3")]);
    none_user.extend(usage.iter().cloned());
    let o = Override {
        target: Target::Specifiers(vec![user_1]),
        ..multiplier("", "0.5")
    };
    let inv = priced_with(
        &products,
        &rates,
        &none_user,
        &lowest(vec![o]),
        keys.clone(),
    );
    let by_line: Vec<(Option<String>, Decimal)> = inv
        .lines
        .iter()
        .map(|l| {
            let user = l
                .presentation_group_values
                .as_ref()
                .and_then(|p| p["user"].clone());
            (user, l.total)
        })
        .collect();
    assert_eq!(
        by_line,
        vec![
            (None, d("30")),
            (Some("u1".into()), d("5.0")),
            (Some("u2".into()), d("20")),
            (Some("u1".into()), d("20.0")),
        ]
    );
}

#[test]
fn billing_frequency_specifiers_match_rates_of_that_frequency() {
    let mut monthly = rate("p", &[], SEP.start_ms, flat("10"));
    monthly.billing_frequency = Some(Frequency::Monthly);
    let products = [product("p", state("m", &[], &[]))];
    let usage = sum_rows(&[], &[(t("2024-09-02T00:00:00Z"), "1")]);
    let o = |f| Override {
        target: Target::Specifiers(vec![spec(|s| s.billing_frequency = Some(f))]),
        ..multiplier("", "0.5")
    };
    let run = |o: Override| {
        priced_with(
            &products,
            &[monthly.clone()],
            &usage,
            &lowest(vec![o]),
            vec![],
        )
        .total
    };
    assert_eq!(run(o(Frequency::Monthly)), d("5.0"));
    assert_eq!(run(o(Frequency::Annual)), d("10"));
}

#[test]
fn entitled_overrides_replace_the_rate_entitlement() {
    let products = [product("p", state("m", &[], &[]))];
    let usage = sum_rows(&[], &[(t("2024-09-02T00:00:00Z"), "2")]);
    let mut hidden = rate("p", &[], SEP.start_ms, flat("100"));
    hidden.entitled = false;
    let shown = rate("p", &[], SEP.start_ms, flat("100"));
    let entitle = |e: bool| Override {
        entitled: Some(e),
        ..on("p", None)
    };
    let run = |r: &Rate, ov: Vec<Override>| {
        amounts(&priced_with(
            &products,
            core::slice::from_ref(r),
            &usage,
            &lowest(ov),
            vec![],
        ))
    };
    assert_eq!(run(&hidden, vec![]), vec![]);
    assert_eq!(
        run(&hidden, vec![entitle(true)]),
        vec![amount("2", "100", "200")]
    );
    assert_eq!(run(&shown, vec![entitle(false)]), vec![]);
    // An entitling multiplier prices and entitles.
    let both = Override {
        entitled: Some(true),
        ..multiplier("p", "0.5")
    };
    assert_eq!(run(&hidden, vec![both]), vec![amount("2", "50.0", "100.0")]);
    // Several set entitled: the lowest priority decides, then the one listed last.
    let ranked = vec![
        prioritised(entitle(false), "2"),
        prioritised(entitle(true), "1"),
    ];
    assert_eq!(run(&hidden, ranked).len(), 1);
    assert_eq!(run(&hidden, vec![entitle(true), entitle(false)]), vec![]);
    // Entitlement ends with the override: only the usage inside its window is billed.
    let mut window = entitle(true);
    window.ending_before_ms = Some(t(MID));
    let late = sum_rows(&[], &[(t("2024-09-02T00:00:00Z"), "2"), (t(MID), "5")]);
    let inv = priced_with(&products, &[hidden], &late, &lowest(vec![window]), vec![]);
    assert_eq!(amounts(&inv), vec![amount("2", "100", "200")]);
    // No list rate: an override bills nothing.
    let inv = priced_with(&products, &[], &usage, &lowest(vec![entitle(true)]), vec![]);
    assert!(inv.lines.is_empty());
}

#[test]
fn several_overwrites_lowest_priority_then_last_listed() {
    let a = overwrite("p", flat("70"));
    let b = overwrite("p", flat("60"));
    let run = |ov| priced(flat("100"), "1", &lowest(ov)).total;
    assert_eq!(run(vec![a.clone(), b.clone()]), d("60"));
    assert_eq!(run(vec![b.clone(), a.clone()]), d("70"));
    assert_eq!(run(vec![prioritised(a.clone(), "1"), b.clone()]), d("70"));
    assert_eq!(run(vec![prioritised(b, "2"), prioritised(a, "3")]), d("60"));
}

#[test]
fn the_rate_at_an_instant_is_the_piece_holding_it() {
    let mut half = multiplier("p", "0.5");
    half.starting_at_ms = t(MID);
    let terms = lowest(vec![half]);
    let r = rate("p", &[], SEP.start_ms, flat("100"));
    let none = BTreeMap::new();
    let s = Subject {
        product_id: "p",
        product_tags: &[],
        pricing_group_values: &none,
        billing_frequency: None,
    };
    let span = Period {
        start_ms: SEP.start_ms,
        end_ms: i64::MAX,
    };
    let (piece, eff) = at_instant(&terms, &r, &s, span, t("2024-09-02T00:00:00Z"))
        .unwrap()
        .unwrap();
    assert_eq!((piece.start_ms, piece.end_ms), (SEP.start_ms, t(MID)));
    let eff = eff.unwrap();
    assert_eq!((eff.price, eff.overridden), (flat("100"), false));
    let (piece, eff) = at_instant(&terms, &r, &s, span, t(MID)).unwrap().unwrap();
    assert_eq!((piece.start_ms, piece.end_ms), (t(MID), i64::MAX));
    let eff = eff.unwrap();
    assert_eq!((eff.price, eff.overridden), (flat("50.0"), true));
    assert_eq!(
        at_instant(&terms, &r, &s, span, SEP.start_ms - 1).unwrap(),
        None
    );
}

// ---------------------------------------------------------------------------------------------
// build

fn base_spec() -> OverrideSpec {
    OverrideSpec {
        id: "o".into(),
        starting_at_ms: SEP.start_ms,
        product_id: Some("p".into()),
        kind: Some(OverrideType::Multiplier),
        multiplier: Some(d("0.9")),
        ..OverrideSpec::default()
    }
}

fn refused(f: impl FnOnce(&mut OverrideSpec), mode: Prioritization) -> String {
    let mut s = base_spec();
    f(&mut s);
    build(s, mode).unwrap_err().to_string()
}

#[test]
fn build_accepts_each_type_and_refuses_bad_combinations() {
    let lo = Prioritization::LowestMultiplier;
    let ok = build(base_spec(), lo).unwrap();
    assert_eq!(ok.adjustment, Some(Adjustment::Multiplier(d("0.9"))));
    assert_eq!(ok.target, Target::Product("p".into()));
    let cases: Vec<(String, &str)> = vec![
        (
            refused(|s| s.ending_before_ms = Some(SEP.start_ms), lo),
            "ending_before: must be after starting_at",
        ),
        (
            refused(|s| s.product_id = None, lo),
            "product_id: an override must target product_id, applicable_product_tags or override_specifiers",
        ),
        (
            refused(|s| s.applicable_product_tags = Some(vec!["x".into()]), lo),
            "applicable_product_tags: give product_id or applicable_product_tags, not both",
        ),
        (
            refused(|s| s.override_specifiers = Some(vec![spec(|x| x.product_id = Some("p".into()))]), lo),
            "override_specifiers: cannot be combined with product_id or applicable_product_tags",
        ),
        (
            refused(|s| {
                s.product_id = None;
                s.override_specifiers = Some(vec![spec(|x| x.product_id = Some("p".into())), Specifier::default()]);
            }, lo),
            "override_specifiers[1]: must set product_id, product_tags, pricing_group_values, presentation_group_values or billing_frequency",
        ),
        (refused(|s| s.multiplier = Some(d("-0.1")), lo), "multiplier: multiplier must be between 0 and 1000"),
        (refused(|s| s.multiplier = Some(d("1000.1")), lo), "multiplier: multiplier must be between 0 and 1000"),
        (refused(|s| s.multiplier = None, lo), "multiplier: required for MULTIPLIER overrides"),
        (
            refused(|s| s.tiers = Some(vec![mtier("1", None)]), lo),
            "tiers: not allowed on MULTIPLIER overrides",
        ),
        (
            refused(|s| s.kind = Some(OverrideType::Overwrite), lo),
            "multiplier: not allowed on OVERWRITE overrides",
        ),
        (
            refused(|s| { s.kind = Some(OverrideType::Overwrite); s.multiplier = None; }, lo),
            "overwrite_rate: required for OVERWRITE overrides",
        ),
        (
            refused(|s| {
                s.kind = Some(OverrideType::Overwrite);
                s.multiplier = None;
                s.overwrite_rate = Some(OverwriteSpec { rate_type: RateType::Flat, price: Some(d("-1")), tiers: None, credit_type: usd() });
            }, lo),
            "overwrite_rate: price must not be negative",
        ),
        (
            refused(|s| {
                s.kind = Some(OverrideType::Overwrite);
                s.multiplier = None;
                s.overwrite_rate = Some(OverwriteSpec { rate_type: RateType::Percentage, price: Some(d("0.1")), tiers: None, credit_type: usd() });
            }, lo),
            "overwrite_rate: rate_type PERCENTAGE is not supported yet",
        ),
        (
            refused(|s| { s.kind = None; }, lo),
            "type: required for MULTIPLIER overrides",
        ),
        (
            refused(|s| { s.kind = None; s.multiplier = None; }, lo),
            "type: an override without a type must set entitled",
        ),
        (refused(|s| s.priority = Some(d("0")), lo), "priority: must be greater than 0"),
        (
            refused(|s| s.priority = None, Prioritization::Explicit),
            "priority: required for MULTIPLIER overrides under EXPLICIT prioritization",
        ),
    ];
    for (got, want) in &cases {
        assert_eq!(got, want);
    }
}

#[test]
fn build_checks_tiered_overrides() {
    let ex = Prioritization::Explicit;
    let tiered = |tiers: Vec<MultiplierTier>| {
        move |s: &mut OverrideSpec| {
            s.kind = Some(OverrideType::Tiered);
            s.multiplier = None;
            s.tiers = Some(tiers);
            s.priority = Some(d("1"));
        }
    };
    let mut good = base_spec();
    tiered(vec![mtier("0.5", Some("100")), mtier("1", None)])(&mut good);
    assert!(build(good.clone(), ex).is_ok());
    // All sized: allowed (the units past them fall through).
    let mut sized = base_spec();
    tiered(vec![mtier("0.5", Some("100"))])(&mut sized);
    assert!(build(sized, ex).is_ok());
    assert_eq!(
        build(good.clone(), Prioritization::LowestMultiplier)
            .unwrap_err()
            .to_string(),
        "type: TIERED overrides need multiplier_override_prioritization EXPLICIT"
    );
    let mut unprioritised = good;
    unprioritised.priority = None;
    assert_eq!(
        build(unprioritised, ex).unwrap_err().to_string(),
        "priority: required for TIERED overrides under EXPLICIT prioritization"
    );
    let cases = [
        (vec![], "tiers: a TIERED override needs at least one tier"),
        (
            vec![mtier("1", None), mtier("1", None)],
            "tiers[0].size: only the last tier may omit size",
        ),
        (
            vec![mtier("1", Some("0"))],
            "tiers[0].size: must be greater than 0",
        ),
        (
            vec![mtier("-1", None)],
            "tiers: multiplier must be between 0 and 1000",
        ),
        (
            (0..=MAX_OVERRIDE_TIERS)
                .map(|_| mtier("1", Some("1")))
                .collect(),
            "tiers: at most 100 tiers are allowed per override",
        ),
    ];
    for (tiers, want) in cases {
        assert_eq!(refused(tiered(tiers), ex), want);
    }
    // Entitlement-only overrides need no type.
    let mut entitlement = base_spec();
    entitlement.kind = None;
    entitlement.multiplier = None;
    entitlement.entitled = Some(false);
    assert_eq!(build(entitlement, ex).unwrap().adjustment, None);
}

#[test]
fn terms_round_trip_through_serde() {
    let mut o = prioritised(multiplier("p", "0.5"), "1");
    o.ending_before_ms = Some(t(MID));
    let terms = explicit(vec![
        o,
        overwrite(
            "p",
            Price::Tiered(vec![tier("3", Some("1")), tier("2", None)]),
        ),
        Override {
            target: Target::Specifiers(vec![spec(|s| s.product_tags = Some(vec!["x".into()]))]),
            ..on("", Some(Adjustment::Tiered(vec![mtier("0.5", None)])))
        },
    ]);
    let text = serde_json::to_string(&terms).unwrap();
    let back: ContractTerms = serde_json::from_str(&text).unwrap();
    assert_eq!(back, terms);
    // A snapshot stored before overrides existed reads as no terms.
    let old: ContractTerms = serde_json::from_str("{}").unwrap();
    assert_eq!(old, ContractTerms::NONE);
}

// ---------------------------------------------------------------------------------------------
// Laws

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Splitting a period at override boundaries conserves quantity: the lines' quantities sum
    /// to the usage, and each hour's usage lands in the piece that holds it.
    #[test]
    fn splitting_at_override_boundaries_conserves_quantity(
        hours in prop::collection::vec((0i64..720, 1u32..1000), 1..20),
        windows in prop::collection::vec((0i64..720, 1i64..720, 0u32..200), 0..4),
    ) {
        let products = [product("p", state("m", &[], &[]))];
        let rates = [rate("p", &[], SEP.start_ms, flat("7"))];
        let usage: Vec<UsageRow> = hours
            .iter()
            .map(|(h, v)| row("m", &[], SEP.start_ms + h * crate::time::HOUR_MS, Accumulator::Sum(Decimal::from(*v))))
            .collect();
        let overrides: Vec<Override> = windows
            .iter()
            .map(|(start, len, m)| Override {
                starting_at_ms: SEP.start_ms + start * crate::time::HOUR_MS,
                ending_before_ms: Some(SEP.start_ms + (start + len) * crate::time::HOUR_MS),
                ..multiplier("p", &(Decimal::from(*m) / Decimal::from(100)).to_string())
            })
            .collect();
        let inv = priced_with(&products, &rates, &usage, &lowest(overrides.clone()), vec![]);
        let used: Decimal = hours.iter().map(|(_, v)| Decimal::from(*v)).sum();
        let billed: Decimal = inv.lines.iter().map(|l| l.quantity).sum();
        prop_assert_eq!(billed, used);
        let mut at = SEP.start_ms;
        for l in &inv.lines {
            prop_assert_eq!(l.starting_at_ms, at);
            at = l.ending_before_ms;
            let inside: Decimal = hours
                .iter()
                .filter(|(h, _)| {
                    let ms = SEP.start_ms + h * crate::time::HOUR_MS;
                    l.starting_at_ms <= ms && ms < l.ending_before_ms
                })
                .map(|(_, v)| Decimal::from(*v))
                .sum();
            prop_assert_eq!(l.quantity, inside);
            // The effective price is the lowest multiplier active in the piece, times 7.
            let m = overrides
                .iter()
                .filter(|o| o.active_at(l.starting_at_ms))
                .filter_map(Override::multiplier)
                .min()
                .unwrap_or(Decimal::ONE);
            prop_assert_eq!(l.unit_price, Decimal::from(7) * m);
        }
        prop_assert_eq!(at, SEP.end_ms);
        let sum: Decimal = inv.lines.iter().map(|l| l.total).sum();
        prop_assert_eq!(inv.total, sum);
    }

    /// The lowest of multipliers ≤ 1 never bills more than the list price, on flat or tiered
    /// list rates.
    #[test]
    fn a_lowest_multiplier_of_at_most_one_never_bills_more_than_the_list(
        multipliers in prop::collection::vec(0u32..=1_000_000, 1..5),
        quantity in 0u32..100_000,
        tiered in any::<bool>(),
    ) {
        let list = match tiered {
            true => Price::Tiered(vec![tier("3.3", Some("1000")), tier("1.7", Some("5000")), tier("0.9", None)]),
            false => flat("2.25"),
        };
        let overrides: Vec<Override> = multipliers
            .iter()
            .map(|m| multiplier("p", &(Decimal::from(*m) / Decimal::from(1_000_000)).to_string()))
            .collect();
        let q = quantity.to_string();
        let with = priced(list.clone(), &q, &lowest(overrides));
        let without = priced(list, &q, &ContractTerms::NONE);
        prop_assert!(with.total <= without.total);
        let lowest_m = multipliers.iter().min().map(|m| Decimal::from(*m) / Decimal::from(1_000_000)).unwrap();
        // Exactly the lowest multiplier times the list total (no rounding: ≤ 6 + 2 places).
        prop_assert_eq!(with.total, without.total * lowest_m);
    }
}
