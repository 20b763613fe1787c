//! Tests of composite pricing: hand-computed invoices and the percentage law.

use super::*;
use crate::accumulate::Accumulator;
use crate::invoice::Invoice;
use crate::metric::Aggregation;
use crate::overrides::{Override, Target};
use crate::pricing::{price_invoice, tests::snapshot};
use crate::rating::tests::{d, metric, product, rate, row, state, t, usd};
use crate::rating::UsageRow;
use alloc::string::ToString;
use alloc::vec;
use proptest::prelude::*;

fn september() -> Period {
    Period {
        start_ms: t("2024-09-01T00:00:00Z"),
        end_ms: t("2024-10-01T00:00:00Z"),
    }
}

fn composite(id: &str, ids: &[&str], tags: &[&str], exclude_free_usage: bool) -> CompositeProduct {
    CompositeProduct {
        product_id: id.into(),
        names: vec![(i64::MIN, "Support".into())],
        tags: vec![],
        configs: vec![(
            i64::MIN,
            CompositeConfig {
                product_ids: ids.iter().map(|s| s.to_string()).collect(),
                tags: tags.iter().map(|s| s.to_string()).collect(),
                exclude_free_usage,
            },
        )],
    }
}

/// Usage products `(id, tags, unit price, units)`, each on its own SUM metric with its units in
/// one hour of September, plus the given composites with their percentage rates.
fn snap(
    usage: &[(&str, &[&str], &str, &str)],
    composites: Vec<(CompositeProduct, &str)>,
) -> (PricingSnapshot, Vec<UsageRow>) {
    let mut s = snapshot();
    let mut rows = Vec::new();
    let start = september().start_ms;
    for (id, tags, price, units) in usage {
        let metric_id = alloc::format!("m_{id}");
        s.metrics.insert(
            metric_id.clone(),
            metric(&metric_id, Aggregation::Sum, vec![]),
        );
        let mut p = product(id, state(&metric_id, &[], &[]));
        p.tags = vec![(i64::MIN, tags.iter().map(|s| s.to_string()).collect())];
        s.products.push(p);
        s.rates.push(rate(id, &[], start, Price::Flat(d(price))));
        rows.push(row(&metric_id, &[], start, Accumulator::Sum(d(units))));
    }
    for (c, fraction) in composites {
        s.rates.push(rate(
            &c.product_id,
            &[],
            start,
            Price::Percentage(d(fraction)),
        ));
        s.composites.push(c);
    }
    (s, rows)
}

fn price(s: &PricingSnapshot, rows: &[UsageRow]) -> Invoice {
    price_invoice(s, rows, september()).unwrap()
}

/// `(product, quantity, unit price, total)` of each line.
fn lines(inv: &Invoice) -> Vec<(String, Decimal, Decimal, Decimal)> {
    inv.lines
        .iter()
        .map(|l| {
            (
                l.product_id.clone(),
                l.quantity,
                l.unit_price.value,
                l.total.value,
            )
        })
        .collect()
}

fn line(p: &str, q: &str, unit: &str, total: &str) -> (String, Decimal, Decimal, Decimal) {
    (p.into(), d(q), d(unit), d(total))
}

const THREE: [(&str, &[&str], &str, &str); 3] = [
    ("a", &["ai"], "2", "100"),
    ("b", &["gpu"], "3", "50"),
    ("c", &["ai"], "0", "30"),
];

#[test]
fn ten_percent_of_three_products_one_of_them_free() {
    // a: 100 × 2 = 200; b: 50 × 3 = 150; c: 30 × 0 = 0. Base 350; 10% = 35. Total 385.
    let (s, rows) = snap(
        &THREE,
        vec![(composite("s", &["a", "b", "c"], &[], false), "0.1")],
    );
    let inv = price(&s, &rows);
    assert_eq!(
        lines(&inv),
        vec![
            line("a", "100", "2", "200"),
            line("b", "50", "3", "150"),
            line("c", "30", "0", "0"),
            line("s", "350", "0.1", "35"),
        ]
    );
    assert_eq!(inv.total.get(&usd()), d("385"));
    let support = &inv.lines[3];
    assert_eq!(support.kind, LineKind::Usage);
    assert_eq!(support.name, "Support");
    assert_eq!(support.segment, september());
    // Free usage adds nothing to a percentage's base: leaving it out changes no amount.
    let (s, rows) = snap(
        &THREE,
        vec![(composite("s", &["a", "b", "c"], &[], true), "0.1")],
    );
    assert_eq!(price(&s, &rows), inv);
}

#[test]
fn tags_select_products_carrying_any_of_them() {
    let cases: [(&[&str], &[&str], &str, &str); 4] = [
        // Any of the tags: a (ai), b (gpu), c (ai, free) → 350.
        (&[], &["ai", "gpu"], "350", "35"),
        // One tag: a and c → 200.
        (&[], &["ai"], "200", "20"),
        // Ids and tags add up (a union): b by id, a and c by tag → 350, once each.
        (&["b", "a"], &["ai"], "350", "35"),
        // A tag no product carries: an entitled zero line.
        (&[], &["none"], "0", "0"),
    ];
    for (ids, tags, base, total) in cases {
        let (s, rows) = snap(&THREE, vec![(composite("s", ids, tags, false), "0.1")]);
        let inv = price(&s, &rows);
        assert_eq!(
            lines(&inv).last(),
            Some(&line("s", base, "0.1", total)),
            "{ids:?} {tags:?}"
        );
    }
}

#[test]
fn odd_percentages_are_exact() {
    // A third, to 12 places, of 350: 116.666666666550, no rounding.
    let (s, rows) = snap(
        &THREE,
        vec![(composite("s", &["a", "b"], &[], false), "0.333333333333")],
    );
    let inv = price(&s, &rows);
    assert_eq!(
        lines(&inv).last(),
        Some(&line("s", "350", "0.333333333333", "116.66666666655"))
    );
    assert_eq!(inv.total.get(&usd()), d("466.66666666655"));
    // 7% of 3 × 1.1 = 3.3 is 0.231; 100% of it is all of it.
    let usage: [(&str, &[&str], &str, &str); 1] = [("a", &[], "1.1", "3")];
    let (s, rows) = snap(
        &usage,
        vec![
            (composite("s", &["a"], &[], false), "0.07"),
            (composite("all", &["a"], &[], false), "1"),
        ],
    );
    let inv = price(&s, &rows);
    assert_eq!(
        lines(&inv),
        vec![
            line("a", "3", "1.1", "3.3"),
            line("s", "3.3", "0.07", "0.231"),
            line("all", "3.3", "1", "3.3"),
        ]
    );
}

#[test]
fn a_composite_never_takes_a_percentage_of_a_composite() {
    // "t" names "s": s's line is not usage, so t's base is a alone.
    let usage: [(&str, &[&str], &str, &str); 1] = [("a", &[], "1", "100")];
    let (s, rows) = snap(
        &usage,
        vec![
            (composite("s", &["a"], &[], false), "0.1"),
            (composite("t", &["a", "s"], &[], false), "0.5"),
        ],
    );
    assert_eq!(
        lines(&price(&s, &rows))[1..],
        [line("s", "100", "0.1", "10"), line("t", "100", "0.5", "50")]
    );
}

#[test]
fn entitlement_rates_and_product_order() {
    let (mut s, rows) = snap(&THREE, vec![(composite("s", &["a"], &[], false), "0.1")]);
    // The card lists the composite first: its line comes first.
    s.product_order = vec!["s".into(), "a".into()];
    assert_eq!(lines(&price(&s, &rows))[0], line("s", "200", "0.1", "20"));
    // Not entitled: no line.
    s.rates.last_mut().unwrap().entitled = false;
    assert!(price(&s, &rows).lines.iter().all(|l| l.product_id != "s"));
    // No percentage rate (a FLAT rate on a composite prices nothing): no line.
    let last = s.rates.last_mut().unwrap();
    last.entitled = true;
    last.price = Price::Flat(d("5"));
    assert!(price(&s, &rows).lines.iter().all(|l| l.product_id != "s"));
}

fn on_composite(adjustment: Option<Adjustment>, entitled: Option<bool>) -> Override {
    Override {
        id: "o".into(),
        starting_at_ms: september().start_ms,
        ending_before_ms: None,
        target: Target::Product("s".into()),
        adjustment,
        priority: None,
        entitled,
        commit_specific: None,
    }
}

#[test]
fn multipliers_scale_the_percentage_and_unit_overrides_do_not_apply() {
    let (mut s, rows) = snap(
        &THREE,
        vec![(composite("s", &["a", "b"], &[], false), "0.1")],
    );
    let multiplier = on_composite(Some(Adjustment::Multiplier(d("0.5"))), None);
    s.contract.terms.overrides = vec![multiplier.clone()];
    assert_eq!(
        lines(&price(&s, &rows)).last(),
        Some(&line("s", "350", "0.05", "17.5"))
    );
    // An OVERWRITE prices units; it never applies to a composite.
    let overwrite = on_composite(
        Some(Adjustment::Overwrite {
            price: Price::Flat(d("7")),
            credit_type: usd(),
        }),
        None,
    );
    s.contract.terms.overrides = vec![overwrite, multiplier];
    assert_eq!(
        lines(&price(&s, &rows)).last(),
        Some(&line("s", "350", "0.05", "17.5"))
    );
    // An entitlement override switches it off.
    s.contract.terms.overrides = vec![on_composite(None, Some(false))];
    assert!(price(&s, &rows).lines.iter().all(|l| l.product_id != "s"));
}

#[test]
fn a_rate_change_splits_the_composite_and_base_lines_count_where_they_start() {
    let (mut s, mut rows) = snap(&[], vec![(composite("s", &["a"], &[], false), "0.1")]);
    s.metrics
        .insert("m".into(), metric("m", Aggregation::Sum, vec![]));
    s.products.push(product("a", state("m", &[], &[])));
    let mid = t("2024-09-16T00:00:00Z");
    // a: 2 until the 16th, 4 after; 10 units in each half.
    let mut first = rate("a", &[], september().start_ms, Price::Flat(d("2")));
    first.ending_before_ms = Some(mid);
    s.rates.push(first);
    s.rates.push(rate("a", &[], mid, Price::Flat(d("4"))));
    // The composite: 10% until the 16th, 20% after.
    s.rates
        .push(rate("s", &[], mid, Price::Percentage(d("0.2"))));
    rows.push(row(
        "m",
        &[],
        september().start_ms,
        Accumulator::Sum(d("10")),
    ));
    rows.push(row("m", &[], mid, Accumulator::Sum(d("10"))));
    let inv = price(&s, &rows);
    assert_eq!(
        lines(&inv),
        vec![
            line("a", "10", "2", "20"),
            line("a", "10", "4", "40"),
            line("s", "20", "0.1", "2"),
            line("s", "40", "0.2", "8"),
        ]
    );
    assert_eq!(inv.lines[2].segment.end_ms, mid);
    assert_eq!(inv.total.get(&usd()), d("70"));
}

fn arb_usage() -> impl Strategy<Value = Vec<(i64, u32, i64, u32, bool)>> {
    // (price mantissa, scale, units mantissa, scale, selected)
    prop::collection::vec(
        (
            0i64..100_000,
            0u32..4,
            0i64..1_000_000,
            0u32..4,
            any::<bool>(),
        ),
        1..6,
    )
}

proptest! {
    /// The composite's total is exactly its percentage of the sum of the selected lines'
    /// totals, whatever the prices, quantities, selection and percentage; and the invoice total
    /// is the sum of its lines.
    #[test]
    fn composite_total_is_the_percentage_of_the_selected_totals(
        usage in arb_usage(),
        fraction in 0i64..=1_000_000,
        exclude in any::<bool>(),
    ) {
        let ids: Vec<String> = (0..usage.len()).map(|i| alloc::format!("p{i}")).collect();
        let owned: Vec<(String, String)> = usage
            .iter()
            .map(|&(p, ps, q, qs, _)| {
                (Decimal::new(p, ps).to_string(), Decimal::new(q, qs).to_string())
            })
            .collect();
        let table: Vec<(&str, &[&str], &str, &str)> = ids
            .iter()
            .zip(&owned)
            .map(|(id, (p, q))| (id.as_str(), &[][..], p.as_str(), q.as_str()))
            .collect();
        let selected: Vec<&str> = ids
            .iter()
            .zip(&usage)
            .filter(|(_, u)| u.4)
            .map(|(id, _)| id.as_str())
            .collect();
        let fraction = Decimal::new(fraction, 6);
        let (s, rows) = snap(
            &table,
            vec![(composite("s", &selected, &[], exclude), &fraction.to_string())],
        );
        let inv = price(&s, &rows);
        let mut base = Decimal::ZERO;
        for l in inv.lines.iter().filter(|l| selected.contains(&l.product_id.as_str())) {
            base += l.total.value;
        }
        let support = inv.lines.iter().find(|l| l.product_id == "s").unwrap();
        prop_assert_eq!(support.quantity, base);
        prop_assert_eq!(support.unit_price.value, fraction);
        prop_assert_eq!(support.total.value, fraction * base);
        let sum: Decimal = inv.lines.iter().map(|l| l.total.value).sum();
        prop_assert_eq!(inv.total.get(&usd()), sum);
    }
}

#[test]
fn the_base_is_before_balances_and_a_composite_line_draws_down_like_any_charge() {
    use crate::balances::{AccessSegment, Balance, BalanceKind, BalanceRateType};
    let (mut s, rows) = snap(
        &THREE,
        vec![(composite("s", &["a", "b"], &[], false), "0.1")],
    );
    let sep = september();
    // A credit of 210 for a and s only: it takes a's 200 first (card order), then 10 of s's 35.
    s.balances.balances = vec![Balance {
        id: "cr".into(),
        kind: BalanceKind::Credit,
        name: "Credit".into(),
        product_id: "fixed".into(),
        contract_id: Some("c".into()),
        applicable_contract_ids: vec![],
        invoice_contract_id: None,
        priority: None,
        applicable_product_ids: vec!["a".into(), "s".into()],
        applicable_product_tags: vec![],
        specifiers: vec![],
        rate_type: BalanceRateType::ListRate,
        credit_type: usd(),
        access: vec![AccessSegment {
            id: "cr/s".into(),
            amount: d("210"),
            starting_at_ms: sep.start_ms,
            ending_before_ms: sep.end_ms,
        }],
        invoice_schedule: vec![],
        paid: false,
        recurring_id: None,
    }];
    s.contract.starting_at_ms = sep.start_ms;
    let inv = price(&s, &rows);
    assert_eq!(
        lines(&inv),
        vec![
            line("a", "100", "2", "200"),
            line("fixed", "1", "-200", "-200"),
            line("b", "50", "3", "150"),
            line("c", "30", "0", "0"),
            // The base is a + b at list price (350), though the credit paid for a.
            line("s", "100", "0.1", "10"),
            line("fixed", "1", "-10", "-10"),
            line("s", "250", "0.1", "25"),
        ]
    );
    assert_eq!(inv.total.get(&usd()), d("175"));
}
