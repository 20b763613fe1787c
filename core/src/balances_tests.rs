//! Tests of the drawdown: the worked examples of `metronome-api.md` §3.7 and §3.10, one test per
//! burn-down rule, prepaid, postpaid and `COMMIT_RATE` balances, purchases, and the laws of
//! drawing down (proptests). Every expected number is computed by hand in the comments.

use super::*;
use crate::accumulate::Accumulator;
use crate::invoice::{DrawPrice, Invoice};
use crate::metric::{Aggregation, MetricDef};
use crate::overrides::{self, OverrideSpec, OverrideType, Prioritization};
use crate::pricing::{price_invoice, price_scheduled, scheduled_instants};
use crate::rating::tests::{d, metric, product, rate, row, state, t, usd, SEP};
use crate::rating::{
    ConversionOperation, Price, QuantityConversion, QuantityRounding, Rate, RatedProduct,
    RoundingMethod, Tier, UsageRow,
};
use alloc::string::ToString;
use alloc::vec;
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// Fixtures

/// A contract "c" over September with one SUM product "tokens" (metric "m") and its rates.
#[derive(Clone)]
struct Case {
    snapshot: PricingSnapshot,
    usage: Vec<UsageRow>,
}

fn snapshot(
    products: Vec<RatedProduct>,
    metrics: Vec<MetricDef>,
    rates: Vec<Rate>,
) -> PricingSnapshot {
    let mut snap = crate::pricing::tests::snapshot();
    snap.metrics = metrics.into_iter().map(|m| (m.id.clone(), m)).collect();
    snap.products = products;
    snap.rates = rates;
    snap.contract.starting_at_ms = SEP.start_ms;
    snap
}

fn sum_row(metric: &str, at: i64, v: &str) -> UsageRow {
    row(metric, &[], at, Accumulator::Sum(d(v)))
}

/// `quantity` tokens on 09-10 priced at `price`.
fn tokens(price: Price, quantity: &str) -> Case {
    let snapshot = snapshot(
        vec![product("tokens", state("m", &[], &[]))],
        vec![metric("m", Aggregation::Sum, vec![])],
        vec![rate("tokens", &[], SEP.start_ms, price)],
    );
    Case {
        snapshot,
        usage: vec![sum_row("m", t("2024-09-10T00:00:00Z"), quantity)],
    }
}

fn flat(p: &str) -> Price {
    Price::Flat(d(p))
}

/// `(price, size)` for the first tier, then `rest` for every unit after it.
fn two_tiers(first: (&str, &str), rest: &str) -> Price {
    Price::Tiered(vec![
        Tier {
            price: d(first.0),
            size: Some(d(first.1)),
        },
        Tier {
            price: d(rest),
            size: None,
        },
    ])
}

impl Case {
    fn with(mut self, balances: Vec<Balance>) -> Case {
        self.snapshot.balances.balances = balances;
        self
    }

    fn prior(mut self, segment: &str, amount: &str) -> Case {
        self.snapshot
            .balances
            .prior_ledger
            .insert(segment.into(), d(amount));
        self
    }

    fn price(&self) -> Invoice {
        self.price_in(SEP)
    }

    fn price_in(&self, period: Period) -> Invoice {
        price_invoice(&self.snapshot, &self.usage, period).unwrap()
    }
}

/// A balance of `kind` on contract "c" named after its id, for every product, with one
/// segment `"<id>/s"` of `amount` over September.
fn balance(id: &str, kind: BalanceKind, amount: &str) -> Balance {
    Balance {
        id: id.into(),
        kind,
        name: id.to_uppercase(),
        product_id: "fixed".into(),
        contract_id: Some("c".into()),
        applicable_contract_ids: vec![],
        invoice_contract_id: None,
        priority: None,
        applicable_product_ids: vec![],
        applicable_product_tags: vec![],
        specifiers: vec![],
        rate_type: BalanceRateType::ListRate,
        credit_type: usd(),
        access: vec![segment(
            &format!("{id}/s"),
            amount,
            SEP.start_ms,
            SEP.end_ms,
        )],
        invoice_schedule: vec![],
        paid: false,
        recurring_id: None,
    }
}

fn segment(id: &str, amount: &str, start: i64, end: i64) -> AccessSegment {
    AccessSegment {
        id: id.into(),
        amount: d(amount),
        starting_at_ms: start,
        ending_before_ms: end,
    }
}

fn prepaid(id: &str, amount: &str) -> Balance {
    balance(id, BalanceKind::PrepaidCommit, amount)
}

fn credit(id: &str, amount: &str) -> Balance {
    balance(id, BalanceKind::Credit, amount)
}

fn postpaid(id: &str, amount: &str, true_up_ms: i64) -> Balance {
    let mut b = balance(id, BalanceKind::PostpaidCommit, amount);
    b.invoice_schedule = vec![item(&format!("{id}/i"), true_up_ms, "1", amount)];
    b
}

fn item(id: &str, at: i64, quantity: &str, unit_price: &str) -> InvoiceItem {
    InvoiceItem {
        id: id.into(),
        timestamp_ms: at,
        quantity: d(quantity),
        unit_price: d(unit_price),
        amount: mul_exact(d(quantity), d(unit_price)).unwrap(),
    }
}

/// A line as these tests assert it: kind, quantity, unit price, total, balance id.
type Shown = (LineKind, Decimal, Decimal, Decimal, Option<String>);

fn shown(inv: &Invoice) -> Vec<Shown> {
    inv.lines
        .iter()
        .map(|l| {
            (
                l.kind,
                l.quantity,
                l.unit_price.value,
                l.total.value,
                l.balance.as_ref().map(|b| b.id.clone()),
            )
        })
        .collect()
}

fn usage(q: &str, u: &str, total: &str, balance: Option<&str>) -> Shown {
    (
        LineKind::Usage,
        d(q),
        d(u),
        d(total),
        balance.map(String::from),
    )
}

fn applied(kind: LineKind, amount: &str, balance: &str) -> Shown {
    let a = -d(amount);
    (kind, Decimal::ONE, a, a, Some(balance.into()))
}

fn commit_applied(amount: &str, balance: &str) -> Shown {
    applied(LineKind::AppliedCommit, amount, balance)
}

fn credit_applied(amount: &str, balance: &str) -> Shown {
    applied(LineKind::AppliedCredit, amount, balance)
}

/// (subtotal, adjustments, total) in USD.
fn sums(inv: &Invoice) -> (Decimal, Decimal, Decimal) {
    (
        inv.subtotal.get(&usd()),
        inv.adjustments.get(&usd()),
        inv.total.get(&usd()),
    )
}

fn deduction(balance: &Balance, entry: LedgerEntryKind, amount: &str) -> Deduction {
    Deduction {
        balance_id: balance.id.clone(),
        kind: balance.kind,
        segment_id: balance.access[0].id.clone(),
        entry,
        amount: d(amount),
    }
}

fn drawn(balance: &Balance, amount: &str) -> Deduction {
    deduction(balance, LedgerEntryKind::AutomatedInvoiceDeduction, amount)
}

// ---------------------------------------------------------------------------------------------
// Worked examples

#[test]
fn prepaid_commit_example_of_section_3_7() {
    // 80 units × 100 = 8000; the commit's 5000 covers 5000 / 100 = 50 of them.
    let c1 = prepaid("c1", "5000");
    let inv = tokens(flat("100"), "80").with(vec![c1.clone()]).price();
    assert_eq!(
        shown(&inv),
        vec![
            usage("50", "100", "5000", Some("c1")),
            commit_applied("5000", "c1"),
            usage("30", "100", "3000", None),
        ]
    );
    assert_eq!(sums(&inv), (d("8000"), d("-5000"), d("3000")));
    assert_eq!(inv.deductions, vec![drawn(&c1, "-5000")]);
    let names: Vec<&str> = inv.lines.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["TOKENS", "C1 applied", "TOKENS"]);
    let applied = &inv.lines[1];
    assert_eq!(applied.product_id, "fixed");
    assert_eq!(applied.segment, inv.lines[0].segment);
    assert_eq!(
        applied.balance,
        Some(BalanceRef {
            id: "c1".into(),
            kind: BalanceKind::PrepaidCommit,
            segment_id: Some("c1/s".into()),
        })
    );
    assert_eq!(inv.lines[0].balance, applied.balance);
}

#[test]
fn a_fractional_cover_of_section_3_7() {
    // 5050 / 100 = 50.5 units covered; 29.5 × 100 = 2950 left.
    let inv = tokens(flat("100"), "80")
        .with(vec![prepaid("c1", "5050")])
        .price();
    assert_eq!(
        shown(&inv),
        vec![
            usage("50.5", "100", "5050", Some("c1")),
            commit_applied("5050", "c1"),
            usage("29.5", "100", "2950", None),
        ]
    );
    assert_eq!(sums(&inv), (d("8000"), d("-5050"), d("2950")));
}

#[test]
fn a_balance_larger_than_the_charge_covers_it_all() {
    // 8000 of the 10000 is drawn; nothing uncovered, total 0.
    let c1 = prepaid("c1", "10000");
    let inv = tokens(flat("100"), "80").with(vec![c1.clone()]).price();
    assert_eq!(
        shown(&inv),
        vec![
            usage("80", "100", "8000", Some("c1")),
            commit_applied("8000", "c1")
        ]
    );
    assert_eq!(sums(&inv), (d("8000"), d("-8000"), d("0")));
    assert_eq!(inv.deductions, vec![drawn(&c1, "-8000")]);
}

#[test]
fn end_to_end_example_of_section_3_10() {
    let calls = product("calls", state("requests", &[], &[]));
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
    let storage = product("storage", st);
    let tiers = Price::Tiered(vec![
        Tier {
            price: d("25"),
            size: Some(d("100")),
        },
        Tier {
            price: d("20"),
            size: None,
        },
    ]);
    let mut snap = snapshot(
        vec![calls, storage],
        vec![
            metric("requests", Aggregation::Count, vec![]),
            metric("bytes", Aggregation::Sum, vec![]),
        ],
        vec![
            rate("calls", &[], SEP.start_ms, flat("2")),
            rate("storage", &[], SEP.start_ms, tiers),
        ],
    );
    let half = overrides::build(
        OverrideSpec {
            id: "half".into(),
            starting_at_ms: SEP.start_ms,
            ending_before_ms: Some(t("2024-09-16T00:00:00Z")),
            kind: Some(OverrideType::Multiplier),
            product_id: Some("calls".into()),
            multiplier: Some(d("0.5")),
            ..OverrideSpec::default()
        },
        Prioritization::LowestMultiplier,
    )
    .unwrap();
    snap.contract.terms.overrides = vec![half];
    let mut credit = credit("cr", "2000");
    credit.priority = Some(d("1"));
    snap.balances.balances = vec![credit.clone()];
    let rows = vec![
        row(
            "requests",
            &[],
            t("2024-09-05T00:00:00Z"),
            Accumulator::Count(10_000),
        ),
        row(
            "requests",
            &[],
            t("2024-09-20T00:00:00Z"),
            Accumulator::Count(5_000),
        ),
        sum_row("bytes", t("2024-09-10T00:00:00Z"), "150200000000"),
    ];
    let inv = price_invoice(&snap, &rows, SEP).unwrap();
    let tier_line = |q: &str, u: &str, total: &str| usage(q, u, total, None);
    assert_eq!(
        shown(&inv),
        vec![
            // API Calls segment 1 at 2 × 0.5 = 1: 2000 covered, 8000 left.
            usage("2000", "1", "2000", Some("cr")),
            credit_applied("2000", "cr"),
            usage("8000", "1", "8000", None),
            // Segment 2: 5000 × 2.
            usage("5000", "2", "10000", None),
            // Storage: ceil(150.2) = 151: 100 × 25 + 51 × 20.
            tier_line("100", "25", "2500"),
            tier_line("51", "20", "1020"),
        ]
    );
    let seg1 = Period {
        start_ms: SEP.start_ms,
        end_ms: t("2024-09-16T00:00:00Z"),
    };
    assert!(inv.lines[..3].iter().all(|l| l.segment == seg1));
    assert_eq!(inv.lines[1].name, "CR applied");
    assert_eq!(sums(&inv), (d("23520"), d("-2000"), d("21520")));
    assert_eq!(inv.deductions, vec![drawn(&credit, "-2000")]);
}

// ---------------------------------------------------------------------------------------------
// Burn-down order: two balances of 1000 on a charge of 10 × 100 = 1000; the first in order
// takes it all, whichever of them is listed first.

fn first_to_burn(a: Balance, b: Balance) -> String {
    let run = |balances: Vec<Balance>| {
        let inv = tokens(flat("100"), "10").with(balances).price();
        assert_eq!(inv.deductions.len(), 1, "{:?}", inv.deductions);
        assert_eq!(inv.deductions[0].amount, d("-1000"));
        inv.deductions[0].balance_id.clone()
    };
    let first = run(vec![a.clone(), b.clone()]);
    assert_eq!(run(vec![b, a]), first, "listing order decided");
    first
}

fn with(mut b: Balance, f: impl FnOnce(&mut Balance)) -> Balance {
    f(&mut b);
    b
}

#[test]
fn lower_priority_burns_first_and_none_burns_last() {
    let p = |id: &str, priority: Option<&str>| {
        with(prepaid(id, "1000"), |b| b.priority = priority.map(d))
    };
    assert_eq!(first_to_burn(p("a", Some("2")), p("b", Some("1"))), "b");
    assert_eq!(first_to_burn(p("a", None), p("b", Some("100"))), "b");
    // Priority beats everything after it: a paid commit of priority 1 before a free one of 2.
    let paid = with(p("a", Some("1")), |b| b.paid = true);
    assert_eq!(first_to_burn(paid, p("b", Some("2"))), "a");
}

#[test]
fn free_burns_before_paid() {
    let paid = with(prepaid("a", "1000"), |b| b.paid = true);
    assert_eq!(first_to_burn(paid.clone(), prepaid("b", "1000")), "b");
    assert_eq!(first_to_burn(paid, credit("z", "1000")), "z");
}

#[test]
fn fewer_applicable_products_burn_first() {
    let mut case = tokens(flat("100"), "10");
    case.snapshot
        .products
        .push(product("other", state("m2", &[], &[])));
    let narrow = with(prepaid("b", "1000"), |b| {
        b.applicable_product_ids = vec!["tokens".into()]
    });
    for balances in [
        vec![prepaid("a", "1000"), narrow.clone()],
        vec![narrow, prepaid("a", "1000")],
    ] {
        let inv = case.clone().with(balances).price();
        assert_eq!(inv.deductions[0].balance_id, "b");
    }
}

/// Which of "a" and "b" burns first when their segments differ by `set` (a's value, b's).
fn first_by_segment(set: fn(&mut AccessSegment, i64), a: &str, b: &str) -> String {
    let one = |id: &str, at: &str| with(prepaid(id, "1000"), |bal| set(&mut bal.access[0], t(at)));
    first_to_burn(one("a", a), one("b", b))
}

#[test]
fn the_earlier_segment_end_burns_first() {
    let end = |s: &mut AccessSegment, at| s.ending_before_ms = at;
    let (a, b) = ("2024-11-01T00:00:00Z", "2024-10-15T00:00:00Z");
    assert_eq!(first_by_segment(end, a, b), "b");
}

#[test]
fn the_earlier_segment_start_burns_first() {
    let start = |s: &mut AccessSegment, at| s.starting_at_ms = at;
    let (a, b) = ("2024-08-01T00:00:00Z", "2024-07-01T00:00:00Z");
    assert_eq!(first_by_segment(start, a, b), "b");
}

#[test]
fn fewer_applicable_contracts_burn_first() {
    let customer = |id: &str, contracts: &[&str]| {
        with(prepaid(id, "1000"), |b| {
            b.contract_id = None;
            b.applicable_contract_ids = contracts.iter().map(|c| c.to_string()).collect();
        })
    };
    assert_eq!(first_to_burn(customer("a", &[]), prepaid("b", "1000")), "b");
    assert_eq!(
        first_to_burn(customer("a", &["c", "x"]), customer("b", &["c"])),
        "b"
    );
    assert_eq!(
        first_to_burn(customer("a", &[]), customer("b", &["c", "x", "y"])),
        "b"
    );
}

#[test]
fn the_id_breaks_the_last_tie() {
    assert_eq!(
        first_to_burn(prepaid("b", "1000"), prepaid("a", "1000")),
        "a"
    );
    assert_eq!(
        first_to_burn(credit("b", "1000"), prepaid("a", "1000")),
        "a"
    );
}

#[test]
fn postpaid_burns_after_every_prepaid_commit_and_credit() {
    let late = SEP.end_ms + 1;
    let post = with(postpaid("a", "1000", late), |b| b.priority = Some(d("1")));
    let pre = with(prepaid("b", "1000"), |b| {
        b.priority = Some(d("9"));
        b.paid = true;
    });
    assert_eq!(first_to_burn(post.clone(), pre), "b");
    assert_eq!(first_to_burn(post, credit("z", "1000")), "z");
}

#[test]
fn segments_burn_one_after_another_across_lines() {
    // Two products in card order: tokens 10 × 100 = 1000, then extra 5 × 10 = 50. Credit a
    // (priority 1) 600, credit b 800: a covers 6 tokens, b the other 4 (400) and all 50 of extra.
    let mut case = tokens(flat("100"), "10");
    case.snapshot
        .products
        .push(product("extra", state("m2", &[], &[])));
    case.snapshot
        .metrics
        .insert("m2".into(), metric("m2", Aggregation::Sum, vec![]));
    case.snapshot
        .rates
        .push(rate("extra", &[], SEP.start_ms, flat("10")));
    case.usage
        .push(sum_row("m2", t("2024-09-11T00:00:00Z"), "5"));
    let a = with(credit("a", "600"), |b| b.priority = Some(d("1")));
    let b = credit("b", "800");
    let inv = case.with(vec![b.clone(), a.clone()]).price();
    assert_eq!(
        shown(&inv),
        vec![
            usage("6", "100", "600", Some("a")),
            credit_applied("600", "a"),
            usage("4", "100", "400", Some("b")),
            credit_applied("400", "b"),
            usage("5", "10", "50", Some("b")),
            credit_applied("50", "b"),
        ]
    );
    assert_eq!(inv.deductions, vec![drawn(&a, "-600"), drawn(&b, "-450")]);
    assert_eq!(sums(&inv), (d("1050"), d("-1050"), d("0")));
}

// ---------------------------------------------------------------------------------------------
// Rates, postpaid, ledger, coverage

fn with_commit_rate(price: &str, commit: &str) -> Case {
    let mut case = tokens(flat(price), "80");
    case.snapshot.rates[0].commit_rate = Some(flat(commit));
    case
}

#[test]
fn commit_rate_covers_at_the_commit_price_and_leaves_the_rest_at_list() {
    // 3000 at the commit price 60 covers 50 units; 30 left at 100.
    let b = with(prepaid("c1", "3000"), |b| {
        b.rate_type = BalanceRateType::CommitRate
    });
    let inv = with_commit_rate("100", "60").with(vec![b.clone()]).price();
    assert_eq!(
        shown(&inv),
        vec![
            usage("50", "60", "3000", Some("c1")),
            commit_applied("3000", "c1"),
            usage("30", "100", "3000", None),
        ]
    );
    assert_eq!(sums(&inv), (d("6000"), d("-3000"), d("3000")));
    // Enough for all of it: 80 × 60 = 4800, nothing at list.
    let b = with(b, |b| b.access[0].amount = d("10000"));
    let inv = with_commit_rate("100", "60").with(vec![b]).price();
    assert_eq!(
        shown(&inv),
        vec![
            usage("80", "60", "4800", Some("c1")),
            commit_applied("4800", "c1")
        ]
    );
    assert_eq!(sums(&inv), (d("4800"), d("-4800"), d("0")));
}

#[test]
fn commit_rate_without_a_commit_price_and_list_rate_balances_use_the_list_price() {
    let commit = with(prepaid("c1", "3000"), |b| {
        b.rate_type = BalanceRateType::CommitRate
    });
    let inv = tokens(flat("100"), "80").with(vec![commit]).price();
    assert_eq!(inv.lines[0].quantity, d("30"));
    // A LIST_RATE balance ignores the rate's commit_rate.
    let inv = with_commit_rate("100", "60")
        .with(vec![prepaid("c2", "3000")])
        .price();
    assert_eq!(inv.lines[0].commit_unit_price, Some(d("60")));
    assert_eq!(shown(&inv)[0], usage("30", "100", "3000", Some("c2")));
}

#[test]
fn commit_rate_after_a_list_rate_cover_keeps_the_charge_exact() {
    // Credit a (list, priority 1) 1000 covers 10 units at 100; commit b (commit rate 60) 1200
    // covers 20 more; 50 left at 100 = 5000 (= 8000 − 1000 − 20 × 100).
    let a = with(credit("a", "1000"), |b| b.priority = Some(d("1")));
    let b = with(prepaid("b", "1200"), |b| {
        b.rate_type = BalanceRateType::CommitRate
    });
    let inv = with_commit_rate("100", "60").with(vec![a, b]).price();
    assert_eq!(
        shown(&inv),
        vec![
            usage("10", "100", "1000", Some("a")),
            credit_applied("1000", "a"),
            usage("20", "60", "1200", Some("b")),
            commit_applied("1200", "b"),
            usage("50", "100", "5000", None),
        ]
    );
    assert_eq!(sums(&inv), (d("7200"), d("-2200"), d("5000")));
}

#[test]
fn postpaid_commit_shows_its_use_and_trues_up_the_rest_on_its_date() {
    // 10000 committed, 8000 used: the applied line changes nothing; the true-up bills 2000.
    let p = postpaid("pp", "10000", SEP.end_ms);
    let inv = tokens(flat("100"), "80").with(vec![p.clone()]).price();
    let true_up = (
        LineKind::TrueUp,
        d("1"),
        d("2000"),
        d("2000"),
        Some("pp".into()),
    );
    assert_eq!(
        shown(&inv),
        vec![
            usage("80", "100", "8000", Some("pp")),
            commit_applied("8000", "pp"),
            true_up,
        ]
    );
    assert_eq!(sums(&inv), (d("10000"), d("0"), d("10000")));
    assert_eq!(
        inv.deductions,
        vec![
            drawn(&p, "-8000"),
            deduction(&p, LedgerEntryKind::Trueup, "-2000")
        ]
    );
    let line = &inv.lines[2];
    assert_eq!((line.name.as_str(), line.segment), ("PP true-up", SEP));
    assert_eq!(line.product_id, "fixed");
    assert_eq!(
        line.balance.as_ref().and_then(|b| b.segment_id.as_deref()),
        Some("pp/s")
    );
    // What an earlier invoice drew (−1000) is not trued up again: 10000 − 1000 − 8000.
    let inv = tokens(flat("100"), "80")
        .with(vec![p.clone()])
        .prior("pp/s", "-1000")
        .price();
    assert_eq!(inv.lines[2].total.value, d("1000"));
}

#[test]
fn an_overconsumed_postpaid_commit_trues_up_zero() {
    // 5000 committed, 8000 used: 50 units drawn, 30 billed as usual, true-up 0, no entry.
    let p = postpaid("pp", "5000", SEP.end_ms);
    let inv = tokens(flat("100"), "80").with(vec![p.clone()]).price();
    assert_eq!(
        shown(&inv),
        vec![
            usage("50", "100", "5000", Some("pp")),
            commit_applied("5000", "pp"),
            usage("30", "100", "3000", None),
            (LineKind::TrueUp, d("1"), d("0"), d("0"), Some("pp".into())),
        ]
    );
    assert_eq!(sums(&inv), (d("8000"), d("0"), d("8000")));
    assert_eq!(inv.deductions, vec![drawn(&p, "-5000")]);
}

#[test]
fn a_true_up_lands_only_in_the_period_holding_its_date() {
    let oct = Period {
        start_ms: SEP.end_ms,
        end_ms: t("2024-11-01T00:00:00Z"),
    };
    let case = |at: i64| tokens(flat("100"), "80").with(vec![postpaid("pp", "10000", at)]);
    let has_true_up = |inv: &Invoice| inv.lines.iter().any(|l| l.kind == LineKind::TrueUp);
    // (start, end]: the period's start belongs to the period before.
    assert!(!has_true_up(&case(SEP.start_ms).price()));
    assert!(has_true_up(&case(SEP.start_ms + 1).price()));
    assert!(has_true_up(&case(SEP.end_ms).price()));
    assert!(!has_true_up(&case(SEP.end_ms).price_in(oct)));
    assert!(has_true_up(&case(SEP.end_ms + 1).price_in(oct)));
    // Invoiced on another contract: never here.
    let other = with(postpaid("pp", "10000", SEP.end_ms), |b| {
        b.contract_id = None;
        b.invoice_contract_id = Some("other".into());
    });
    let inv = tokens(flat("100"), "80").with(vec![other]).price();
    assert!(!has_true_up(&inv));
    assert_eq!(inv.lines[0].balance.as_ref().unwrap().id, "pp");
}

#[test]
fn the_prior_ledger_reduces_what_a_segment_can_give() {
    // 5000 − 2000 drawn before = 3000: 30 units.
    let case = || tokens(flat("100"), "80").with(vec![prepaid("c1", "5000")]);
    let inv = case().prior("c1/s", "-2000").price();
    assert_eq!(
        shown(&inv),
        vec![
            usage("30", "100", "3000", Some("c1")),
            commit_applied("3000", "c1"),
            usage("50", "100", "5000", None),
        ]
    );
    // A manual +1000 adds to it: 60 units.
    let inv = case().prior("c1/s", "1000").price();
    assert_eq!(inv.lines[0].quantity, d("60"));
    // Drawn past its amount (−6000 of 5000): nothing available, never a negative cover.
    let inv = case().prior("c1/s", "-6000").price();
    assert_eq!(shown(&inv), vec![usage("80", "100", "8000", None)]);
    assert!(inv.deductions.is_empty());
    let inv = case().prior("c1/s", "-5000").price();
    assert_eq!(shown(&inv), vec![usage("80", "100", "8000", None)]);
}

#[test]
fn tiered_lines_are_covered_tier_by_tier() {
    // 150 units over [10 × 100, 5 × rest]: 1000 + 250. Credit 1100 covers tier 1 (1000), then
    // 100 / 5 = 20 units of tier 2; 30 × 5 = 150 left.
    let tiers = two_tiers(("10", "100"), "5");
    let inv = tokens(tiers, "150")
        .with(vec![credit("cr", "1100")])
        .price();
    assert_eq!(
        shown(&inv),
        vec![
            usage("100", "10", "1000", Some("cr")),
            credit_applied("1000", "cr"),
            usage("20", "5", "100", Some("cr")),
            credit_applied("100", "cr"),
            usage("30", "5", "150", None),
        ]
    );
    let levels: Vec<Option<u32>> = inv
        .lines
        .iter()
        .map(|l| l.tier.as_ref().map(|t| t.level))
        .collect();
    assert_eq!(levels, [Some(1), None, Some(2), None, Some(2)]);
    assert_eq!(sums(&inv), (d("1250"), d("-1100"), d("150")));
}

#[test]
fn a_non_terminating_cover_rounds_the_units_and_keeps_the_amounts_exact() {
    // 1000 at price 3: 333.333333333333 units (half-even at 12 places) for exactly 1000; the
    // rest 666.666666666667 units charge exactly 3000 − 1000 = 2000.
    let inv = tokens(flat("3"), "1000")
        .with(vec![credit("a", "1000")])
        .price();
    assert_eq!(
        shown(&inv),
        vec![
            usage("333.333333333333", "3", "1000", Some("a")),
            credit_applied("1000", "a"),
            usage("666.666666666667", "3", "2000", None),
        ]
    );
    assert_eq!(sums(&inv), (d("3000"), d("-1000"), d("2000")));
    // A second balance covering the rest takes exactly 2000 (not 666.666666666667 × 3).
    let b = with(credit("b", "5000"), |b| b.priority = Some(d("9")));
    let a = with(credit("a", "1000"), |b| b.priority = Some(d("1")));
    let inv = tokens(flat("3"), "1000").with(vec![a, b.clone()]).price();
    assert_eq!(
        shown(&inv)[2],
        usage("666.666666666667", "3", "2000", Some("b"))
    );
    assert_eq!(inv.lines.len(), 4);
    assert_eq!(inv.deductions[1], drawn(&b, "-2000"));
    assert_eq!(sums(&inv), (d("3000"), d("-3000"), d("0")));
}

#[test]
fn customer_level_balances_apply_to_the_contracts_they_name() {
    let customer = |contracts: &[&str]| {
        with(credit("cr", "1000"), |b| {
            b.contract_id = None;
            b.applicable_contract_ids = contracts.iter().map(|c| c.to_string()).collect();
        })
    };
    let covered = |b: Balance| {
        !tokens(flat("100"), "80")
            .with(vec![b])
            .price()
            .deductions
            .is_empty()
    };
    assert!(covered(customer(&[])));
    assert!(covered(customer(&["x", "c"])));
    assert!(!covered(customer(&["x"])));
    assert!(!covered(with(credit("cr", "1000"), |b| {
        b.contract_id = Some("x".into())
    })));
}

#[test]
fn a_segment_covers_the_usage_inside_its_window() {
    // The segment starts 09-12: the flat SUM line is split there (80 on 09-10 before it, 40 on
    // 09-20 after it); the credit covers 1000 / 100 = 10 of the 40 after.
    let late = with(credit("cr", "1000"), |b| {
        b.access[0].starting_at_ms = t("2024-09-12T00:00:00Z")
    });
    let mut case = tokens(flat("100"), "80");
    case.usage
        .push(sum_row("m", t("2024-09-20T00:00:00Z"), "40"));
    let inv = case.clone().with(vec![late.clone()]).price();
    assert_eq!(
        shown(&inv),
        vec![
            usage("80", "100", "8000", None),
            usage("10", "100", "1000", Some("cr")),
            credit_applied("1000", "cr"),
            usage("30", "100", "3000", None),
        ]
    );
    assert_eq!(inv.lines[0].segment.end_ms, t("2024-09-12T00:00:00Z"));
    assert_eq!(inv.lines[1].segment.start_ms, t("2024-09-12T00:00:00Z"));
    assert_eq!(sums(&inv), (d("12000"), d("-1000"), d("11000")));
    // Ends 09-15: it covers the usage of 09-10 (10 units), not that of 09-20.
    let early = with(credit("cr", "1000"), |b| {
        b.access[0].ending_before_ms = t("2024-09-15T00:00:00Z")
    });
    let inv = case.clone().with(vec![early]).price();
    assert_eq!(
        shown(&inv),
        vec![
            usage("10", "100", "1000", Some("cr")),
            credit_applied("1000", "cr"),
            usage("70", "100", "7000", None),
            usage("40", "100", "4000", None),
        ]
    );
    // No usage before the window: no empty line for it.
    let only_late = tokens(flat("100"), "80").with(vec![with(late.clone(), |b| {
        b.access[0].starting_at_ms = t("2024-09-05T00:00:00Z")
    })]);
    let inv = only_late.price();
    assert_eq!(inv.lines.len(), 3);
    assert_eq!(inv.lines[0].segment.start_ms, t("2024-09-05T00:00:00Z"));
    // A balance for another product, or in another credit type, splits nothing.
    let elsewhere = with(late.clone(), |b| {
        b.applicable_product_ids = vec!["other".into()]
    });
    let inv = case.clone().with(vec![elsewhere]).price();
    assert_eq!(shown(&inv), vec![usage("120", "100", "12000", None)]);
    let other_unit = with(late.clone(), |b| b.credit_type = CreditTypeId("cpu".into()));
    assert_eq!(case.clone().with(vec![other_unit]).price().lines.len(), 1);
    // A split that would change a charge is not made, and the segment covers nothing: tiers
    // would restart ([100 for 100 units, then 50]: 100 × 100 + 20 × 50 whole, not 80 × 100 +
    // 40 × 100), so would MAX (max 80 whole; 80 + 40 split) and ROUND_UP.
    let mut tiered = case.clone();
    tiered.snapshot.rates[0].price = two_tiers(("100", "100"), "50");
    let inv = tiered.with(vec![late.clone()]).price();
    assert_eq!(
        shown(&inv),
        vec![
            usage("100", "100", "10000", None),
            usage("20", "50", "1000", None)
        ]
    );
    let mut max = case.clone();
    max.snapshot.metrics.get_mut("m").unwrap().aggregation = Aggregation::Max;
    max.usage = vec![
        row(
            "m",
            &[],
            t("2024-09-10T00:00:00Z"),
            Accumulator::Max(d("80")),
        ),
        row(
            "m",
            &[],
            t("2024-09-20T00:00:00Z"),
            Accumulator::Max(d("40")),
        ),
    ];
    let inv = max.with(vec![late.clone()]).price();
    assert_eq!(shown(&inv), vec![usage("80", "100", "8000", None)]);
    let mut rounded = case.clone();
    rounded.snapshot.products[0].versions[0].1.quantity_rounding = Some(QuantityRounding {
        decimal_places: 0,
        rounding_method: RoundingMethod::RoundUp,
    });
    rounded.usage = vec![
        sum_row("m", t("2024-09-10T00:00:00Z"), "80.5"),
        sum_row("m", t("2024-09-20T00:00:00Z"), "40.5"),
    ];
    // Whole: 121 units; split: 81 + 41 = 122. Not split, not covered.
    let inv = rounded.with(vec![late.clone()]).price();
    assert_eq!(shown(&inv), vec![usage("121", "100", "12100", None)]);
    // A rate change on 09-10 splits the line: the segment covers the second one only.
    let mut case = tokens(flat("100"), "80");
    case.snapshot
        .rates
        .push(rate("tokens", &[], t("2024-09-10T00:00:00Z"), flat("50")));
    case.usage
        .push(sum_row("m", t("2024-09-05T00:00:00Z"), "10"));
    let from_the_10th = with(late, |b| {
        b.access[0].starting_at_ms = t("2024-09-10T00:00:00Z")
    });
    let inv = case.with(vec![from_the_10th]).price();
    assert_eq!(
        shown(&inv),
        vec![
            usage("10", "100", "1000", None),
            usage("20", "50", "1000", Some("cr")),
            credit_applied("1000", "cr"),
            usage("60", "50", "3000", None),
        ]
    );
}

#[test]
fn scope_by_product_tags_specifiers_and_credit_type() {
    // Two products: tokens (tags ai, gpu) and other (tag ai), each 10 × 100.
    let mut case = tokens(flat("100"), "10");
    case.snapshot.products[0].tags = vec![(i64::MIN, vec!["ai".into(), "gpu".into()])];
    let mut other = product("other", state("m2", &[], &[]));
    other.tags = vec![(i64::MIN, vec!["ai".into()])];
    case.snapshot.products.push(other);
    case.snapshot
        .metrics
        .insert("m2".into(), metric("m2", Aggregation::Sum, vec![]));
    case.snapshot
        .rates
        .push(rate("other", &[], SEP.start_ms, flat("100")));
    case.usage
        .push(sum_row("m2", t("2024-09-11T00:00:00Z"), "10"));
    let covered = |b: Balance| -> Vec<String> {
        let inv = case.clone().with(vec![b]).price();
        inv.lines
            .iter()
            .filter(|l| l.kind == LineKind::Usage && l.balance.is_some())
            .map(|l| l.product_id.clone())
            .collect()
    };
    let all = credit("cr", "100000");
    assert_eq!(covered(all.clone()), ["tokens", "other"]);
    let tagged = |tags: &[&str]| {
        with(all.clone(), |b| {
            b.applicable_product_tags = tags.iter().map(|t| t.to_string()).collect()
        })
    };
    assert_eq!(covered(tagged(&["ai"])), ["tokens", "other"]);
    assert_eq!(covered(tagged(&["ai", "gpu"])), ["tokens"]);
    assert!(covered(tagged(&["tpu"])).is_empty());
    // Ids or tags: either one matching is enough.
    let both = with(tagged(&["tpu"]), |b| {
        b.applicable_product_ids = vec!["other".into()]
    });
    assert_eq!(covered(both), ["other"]);
    let spec = with(all.clone(), |b| {
        b.specifiers = vec![Specifier {
            product_tags: Some(vec!["gpu".into()]),
            ..Specifier::default()
        }]
    });
    assert_eq!(covered(spec), ["tokens"]);
    let credits = with(all, |b| b.credit_type = CreditTypeId("credits".into()));
    assert!(covered(credits).is_empty());
}

#[test]
fn specifiers_match_presentation_values_of_the_line() {
    // Presentation key "user": u1 uses 3, u2 uses 5, at 100; the credit only covers u2.
    let mut case = tokens(flat("100"), "0");
    case.snapshot.products = vec![product("tokens", state("m", &[], &["user"]))];
    case.snapshot.metrics = [(
        "m".to_string(),
        metric("m", Aggregation::Sum, vec![vec!["user".into()]]),
    )]
    .into_iter()
    .collect();
    let at = t("2024-09-10T00:00:00Z");
    case.usage = vec![
        row("m", &[Some("u1")], at, Accumulator::Sum(d("3"))),
        row("m", &[Some("u2")], at, Accumulator::Sum(d("5"))),
    ];
    let spec = with(credit("cr", "100000"), |b| {
        b.specifiers = vec![Specifier {
            presentation_group_values: Some([("user".to_string(), "u2".to_string())].into()),
            ..Specifier::default()
        }]
    });
    let inv = case.with(vec![spec]).price();
    assert_eq!(
        shown(&inv),
        vec![
            usage("3", "100", "300", None),
            usage("5", "100", "500", Some("cr")),
            credit_applied("500", "cr"),
        ]
    );
}

#[test]
fn zero_quantity_lines_and_zero_prices_are_left_alone() {
    // An entitled product without usage shows a zero line; a free product costs nothing.
    let inv = tokens(flat("100"), "0")
        .with(vec![credit("cr", "1000")])
        .price();
    assert_eq!(shown(&inv), vec![usage("0", "100", "0", None)]);
    assert!(inv.deductions.is_empty());
    let inv = tokens(flat("0"), "80")
        .with(vec![credit("cr", "1000")])
        .price();
    assert_eq!(shown(&inv), vec![usage("80", "0", "0", None)]);
    // A commit price of 0 cannot cover anything either.
    let free = with(credit("cr", "1000"), |b| {
        b.rate_type = BalanceRateType::CommitRate
    });
    let inv = with_commit_rate("100", "0").with(vec![free]).price();
    assert_eq!(shown(&inv), vec![usage("80", "100", "8000", None)]);
}

// ---------------------------------------------------------------------------------------------
// Commit-specific overrides: they price only the usage drawn from the balances they name

/// A commit-specific override of product "tokens" from September, refined by `f`.
fn commit_specific(id: &str, f: impl FnOnce(&mut OverrideSpec)) -> overrides::Override {
    let mut spec = OverrideSpec {
        id: id.into(),
        starting_at_ms: SEP.start_ms,
        product_id: Some("tokens".into()),
        kind: Some(OverrideType::Multiplier),
        multiplier: Some(d("0.5")),
        is_commit_specific: true,
        ..OverrideSpec::default()
    };
    f(&mut spec);
    overrides::build(spec, Prioritization::LowestMultiplier).unwrap()
}

/// Names only the balances in `ids` (`commit_ids` on a specifier of "tokens").
fn naming(ids: &'static [&'static str]) -> impl FnOnce(&mut OverrideSpec) {
    move |s: &mut OverrideSpec| {
        s.product_id = None;
        s.override_specifiers = Some(vec![Specifier {
            product_id: Some("tokens".into()),
            commit_ids: Some(ids.iter().map(|i| i.to_string()).collect()),
            ..Specifier::default()
        }]);
    }
}

impl Case {
    fn overriding(mut self, list: Vec<overrides::Override>) -> Case {
        self.snapshot.contract.terms.overrides = list;
        self
    }
}

#[test]
fn a_commit_specific_multiplier_prices_only_the_draws_of_the_commit_it_names() {
    // 80 × 100. c1 (priority 1, named, draws at 100 × 0.5 = 50): 2000 / 50 = 40 units.
    // c2 (priority 2, not named, list 100): 1000 / 100 = 10 units. Rest 30 × 100 = 3000.
    // Subtotal 2000 + 1000 + 3000 = 6000, adjustments −3000, total 3000.
    let c1 = with(prepaid("c1", "2000"), |b| b.priority = Some(d("1")));
    let c2 = with(prepaid("c2", "1000"), |b| b.priority = Some(d("2")));
    let case = tokens(flat("100"), "80")
        .with(vec![c1.clone(), c2.clone()])
        .overriding(vec![commit_specific("half", naming(&["c1"]))]);
    let inv = case.price();
    assert_eq!(
        shown(&inv),
        vec![
            usage("40", "50", "2000", Some("c1")),
            commit_applied("2000", "c1"),
            usage("10", "100", "1000", Some("c2")),
            commit_applied("1000", "c2"),
            usage("30", "100", "3000", None),
        ]
    );
    assert_eq!(sums(&inv), (d("6000"), d("-3000"), d("3000")));
    assert_eq!(
        inv.deductions,
        vec![drawn(&c1, "-2000"), drawn(&c2, "-1000")]
    );
    // Without balances the override changes nothing: 80 × 100.
    let bare = case.with(vec![]).price();
    assert_eq!(shown(&bare), vec![usage("80", "100", "8000", None)]);
}

#[test]
fn without_commit_ids_a_commit_specific_override_prices_every_balance() {
    // Product-targeted: any commit or credit. The credit (priority 1) 1000 at 50 covers 20
    // units, the commit 1000 at 50 covers 20 more; 40 left at list = 4000.
    let cr = with(credit("cr", "1000"), |b| b.priority = Some(d("1")));
    let c = with(prepaid("c", "1000"), |b| b.priority = Some(d("2")));
    let inv = tokens(flat("100"), "80")
        .with(vec![cr, c])
        .overriding(vec![commit_specific("half", |_| {})])
        .price();
    assert_eq!(
        shown(&inv),
        vec![
            usage("20", "50", "1000", Some("cr")),
            credit_applied("1000", "cr"),
            usage("20", "50", "1000", Some("c")),
            commit_applied("1000", "c"),
            usage("40", "100", "4000", None),
        ]
    );
    assert_eq!(sums(&inv), (d("6000"), d("-2000"), d("4000")));
}

#[test]
fn a_commit_rate_target_changes_the_commit_rate_and_a_list_rate_one_does_not() {
    // Rate 100, commit_rate 80; the COMMIT_RATE commit draws at 80 × 0.5 = 40 (the LIST_RATE
    // 0.1 override names it too but does not apply to commit-rate draws): 1000 / 40 = 25 units.
    // Rest 55 × 100 = 5500. Subtotal 1000 + 5500, total 5500.
    let c1 = with(prepaid("c1", "1000"), |b| {
        b.rate_type = BalanceRateType::CommitRate
    });
    let commit_half = commit_specific("commit-half", |s| {
        s.target = Some(BalanceRateType::CommitRate);
    });
    let list_tenth = commit_specific("list-tenth", |s| s.multiplier = Some(d("0.1")));
    let case = with_commit_rate("100", "80")
        .with(vec![c1])
        .overriding(vec![commit_half.clone(), list_tenth.clone()]);
    let inv = case.price();
    assert_eq!(
        shown(&inv),
        vec![
            usage("25", "40", "1000", Some("c1")),
            commit_applied("1000", "c1"),
            usage("55", "100", "5500", None),
        ]
    );
    assert_eq!(sums(&inv), (d("6500"), d("-1000"), d("5500")));
    // A LIST_RATE balance draws at the list rate with the LIST_RATE override: 100 × 0.1 = 10;
    // 1000 / 10 = 100 units ≥ 80, so all 80 are covered for 800.
    let inv = case.clone().with(vec![prepaid("c2", "1000")]).price();
    assert_eq!(
        shown(&inv),
        vec![
            usage("80", "10", "800", Some("c2")),
            commit_applied("800", "c2")
        ]
    );
    assert_eq!(sums(&inv), (d("800"), d("-800"), d("0")));
}

#[test]
fn commit_specific_overrides_combine_with_the_contracts_by_its_prioritization() {
    // LOWEST_MULTIPLIER: an ordinary 0.8 and a commit-specific 0.9: the draw takes the lowest,
    // 0.8 (= the line's own price, 80); a commit-specific flat OVERWRITE 30 wins over both.
    let ordinary = overrides::build(
        OverrideSpec {
            id: "ordinary".into(),
            starting_at_ms: SEP.start_ms,
            product_id: Some("tokens".into()),
            kind: Some(OverrideType::Multiplier),
            multiplier: Some(d("0.8")),
            ..OverrideSpec::default()
        },
        Prioritization::LowestMultiplier,
    )
    .unwrap();
    let ninety = commit_specific("ninety", |s| s.multiplier = Some(d("0.9")));
    // 80 units at 80 = 6400; the commit's 1600 covers 20 at 80; 60 × 80 = 4800 left.
    let inv = tokens(flat("100"), "80")
        .with(vec![prepaid("c1", "1600")])
        .overriding(vec![ordinary.clone(), ninety])
        .price();
    assert_eq!(
        shown(&inv),
        vec![
            usage("20", "80", "1600", Some("c1")),
            commit_applied("1600", "c1"),
            usage("60", "80", "4800", None),
        ]
    );
    let overwrite = commit_specific("thirty", |s| {
        s.kind = Some(OverrideType::Overwrite);
        s.multiplier = None;
        s.overwrite_rate = Some(overrides::OverwriteSpec {
            rate_type: crate::rate::RateType::Flat,
            price: Some(d("30")),
            tiers: None,
            credit_type: usd(),
        });
    });
    // 1600 / 30 = 53.333333333333 units (half-even, 12 places) for exactly 1600; the rest
    // 26.666666666667 units keep the exact remainder 6400 − 53.333333333333 × 80
    // = 6400 − 4266.66666666664 = 2133.33333333336.
    let inv = tokens(flat("100"), "80")
        .with(vec![prepaid("c1", "1600")])
        .overriding(vec![ordinary, overwrite])
        .price();
    assert_eq!(
        shown(&inv),
        vec![
            usage("53.333333333333", "30", "1600", Some("c1")),
            commit_applied("1600", "c1"),
            usage("26.666666666667", "80", "2133.33333333336", None),
        ]
    );
    assert_eq!(
        sums(&inv),
        (d("3733.33333333336"), d("-1600"), d("2133.33333333336"))
    );
}

#[test]
fn a_free_commit_specific_draw_covers_everything_and_takes_nothing() {
    // Multiplier 0: usage drawn from c1 costs nothing while c1 has something left.
    let c1 = prepaid("c1", "1");
    let inv = tokens(flat("100"), "80")
        .with(vec![c1])
        .overriding(vec![commit_specific("free", |s| {
            s.multiplier = Some(d("0"))
        })])
        .price();
    assert_eq!(
        shown(&inv),
        vec![usage("80", "0", "0", Some("c1")), commit_applied("0", "c1")]
    );
    assert_eq!(sums(&inv), (d("0"), d("0"), d("0")));
    assert!(inv.deductions.is_empty());
    assert_eq!(inv.lines[1].total.value.to_string(), "0");
}

#[test]
fn recurring_and_any_ids_name_generated_balances() {
    // A generated balance is named by its recurring id (recurring_commit_ids,
    // any_commit_or_credit_ids) or its own id (any_commit_or_credit_ids); another id names
    // nothing. Named: 1000 at 50 covers 20 units.
    let generated = with(prepaid("r/0", "1000"), |b| {
        b.recurring_id = Some("r".into())
    });
    let by = |f: fn(&mut Specifier, Vec<String>)| {
        commit_specific("o", move |s| {
            s.product_id = None;
            let mut spec = Specifier {
                product_id: Some("tokens".into()),
                ..Specifier::default()
            };
            f(&mut spec, vec!["r".into(), "r/0".into()]);
            s.override_specifiers = Some(vec![spec]);
        })
    };
    let price_with = |o| {
        let inv = tokens(flat("100"), "80")
            .with(vec![generated.clone()])
            .overriding(vec![o])
            .price();
        inv.lines[0].quantity
    };
    assert_eq!(
        price_with(by(|s, ids| s.recurring_commit_ids = Some(ids))),
        d("20")
    );
    assert_eq!(
        price_with(by(|s, ids| s.any_commit_or_credit_ids = Some(ids))),
        d("20")
    );
    assert_eq!(
        price_with(by(|s, _| s.commit_ids = Some(vec!["other".into()]))),
        d("10")
    );
    assert_eq!(
        price_with(by(|s, _| s.recurring_commit_ids = Some(vec!["r/0".into()]))),
        d("10")
    );
}

#[test]
fn a_commit_specific_boundary_splits_the_lines_and_prices_each_side() {
    // Usage 40 on 09-10 and 40 on 09-20; the override (any balance at 0.5) ends 09-15. c1's
    // 3000 walks the lines in order: before 09-15 all 40 units at 50 = 2000; after it, at list,
    // 1000 / 100 = 10 units; 30 × 100 = 3000 left. Subtotal 2000 + 1000 + 3000 = 6000.
    let mut case = tokens(flat("100"), "40").with(vec![prepaid("c1", "3000")]);
    case.usage
        .push(sum_row("m", t("2024-09-20T00:00:00Z"), "40"));
    let case = case.overriding(vec![commit_specific("half", |s| {
        s.ending_before_ms = Some(t("2024-09-15T00:00:00Z"));
    })]);
    let inv = case.price();
    assert_eq!(
        shown(&inv),
        vec![
            usage("40", "50", "2000", Some("c1")),
            commit_applied("2000", "c1"),
            usage("10", "100", "1000", Some("c1")),
            commit_applied("1000", "c1"),
            usage("30", "100", "3000", None),
        ]
    );
    assert_eq!(inv.lines[0].segment.end_ms, t("2024-09-15T00:00:00Z"));
    assert_eq!(inv.lines[2].segment.start_ms, t("2024-09-15T00:00:00Z"));
    // The split conserves quantity: 40 + 10 + 30 = 80.
    assert_eq!(sums(&inv), (d("6000"), d("-3000"), d("3000")));
    // Without balances the flat lines stay split at the commit-specific boundary (so a draw's
    // price is constant on each line); the total is the same.
    let bare = case.with(vec![]).price();
    assert_eq!(
        shown(&bare),
        vec![
            usage("40", "100", "4000", None),
            usage("40", "100", "4000", None)
        ]
    );
}

#[test]
fn tiered_lines_draw_at_each_tiers_price_times_the_multiplier() {
    // Tiers 100 for 50 units, then 60. 80 units: 50 × 100 + 30 × 60 = 6800. The commit (3000,
    // draws at half: 50 and 30) covers 3000 / 50 = 60 > 50 → all 50 of tier 1 for 2500, then
    // 500 / 30 = 16.666666666667 units of tier 2 for 500; 13.333333333333 × 60 =
    // 1800 − 16.666666666667 × 60 = 1800 − 1000.00000000002 = 799.99999999998 left.
    let tiers = two_tiers(("100", "50"), "60");
    let inv = tokens(tiers, "80")
        .with(vec![prepaid("c1", "3000")])
        .overriding(vec![commit_specific("half", |_| {})])
        .price();
    assert_eq!(
        shown(&inv),
        vec![
            usage("50", "50", "2500", Some("c1")),
            commit_applied("2500", "c1"),
            usage("16.666666666667", "30", "500", Some("c1")),
            commit_applied("500", "c1"),
            usage("13.333333333333", "60", "799.99999999998", None),
        ]
    );
    assert_eq!(
        sums(&inv),
        (d("3799.99999999998"), d("-3000"), d("799.99999999998"))
    );
}

#[test]
fn a_commit_specific_window_never_restarts_tiers() {
    // Tiers 100 for 50 units, then 60; 40 units on 09-10 and 40 on 09-20 are one graduated
    // bucket: 50 × 100 + 30 × 60 = 6800, as without the override. The override (ends 09-15)
    // is not active over the whole line, so c1 draws at list: 1000 / 100 = 10 units.
    let tiers = two_tiers(("100", "50"), "60");
    let mut case = tokens(tiers, "40").with(vec![prepaid("c1", "1000")]);
    case.usage
        .push(sum_row("m", t("2024-09-20T00:00:00Z"), "40"));
    let inv = case
        .overriding(vec![commit_specific("half", |s| {
            s.ending_before_ms = Some(t("2024-09-15T00:00:00Z"));
        })])
        .price();
    assert_eq!(
        shown(&inv),
        vec![
            usage("10", "100", "1000", Some("c1")),
            commit_applied("1000", "c1"),
            usage("40", "100", "4000", None),
            usage("30", "60", "1800", None),
        ]
    );
    assert_eq!(sums(&inv), (d("6800"), d("-1000"), d("5800")));
}

/// Targets "tokens" by a specifier that `f` refines.
fn names(s: &mut OverrideSpec, f: fn(&mut Specifier)) {
    s.product_id = None;
    let mut sp = Specifier {
        product_id: Some("tokens".into()),
        ..Specifier::default()
    };
    f(&mut sp);
    s.override_specifiers = Some(vec![sp]);
}

#[test]
fn build_refuses_what_a_commit_specific_override_cannot_be() {
    let refused = |f: fn(&mut OverrideSpec)| {
        let mut spec = OverrideSpec {
            id: "o".into(),
            starting_at_ms: SEP.start_ms,
            product_id: Some("tokens".into()),
            kind: Some(OverrideType::Multiplier),
            multiplier: Some(d("0.5")),
            ..OverrideSpec::default()
        };
        f(&mut spec);
        overrides::build(spec, Prioritization::Explicit)
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        refused(|s| s.target = Some(BalanceRateType::CommitRate)),
        "target: only allowed on commit-specific overrides (is_commit_specific: true)"
    );
    assert_eq!(
        refused(|s| names(s, |sp| sp.commit_ids = Some(vec!["c".into()]))),
        "override_specifiers[0]: only allowed on commit-specific overrides \
         (is_commit_specific: true)"
    );
    assert!(refused(|s| {
        s.is_commit_specific = true;
        names(s, |sp| {
            sp.commit_ids = Some(vec!["c".into()]);
            sp.any_commit_or_credit_ids = Some(vec!["c".into()]);
        })
    })
    .starts_with("override_specifiers[0].any_commit_or_credit_ids: "));
    assert!(refused(|s| {
        s.is_commit_specific = true;
        s.kind = Some(OverrideType::Tiered);
        s.multiplier = None;
        s.priority = Some(d("1"));
        s.tiers = Some(vec![overrides::MultiplierTier {
            multiplier: d("0.5"),
            size: None,
        }]);
    })
    .starts_with("type: a commit-specific override must be"));
    assert!(refused(|s| {
        s.is_commit_specific = true;
        s.entitled = Some(true);
        s.priority = Some(d("1"));
    })
    .starts_with("entitled: "));
    // Commit ids alone are no target: the specifier still needs a product, tags or groups.
    assert!(refused(|s| {
        s.is_commit_specific = true;
        s.priority = Some(d("1"));
        s.product_id = None;
        s.override_specifiers = Some(vec![Specifier {
            commit_ids: Some(vec!["c".into()]),
            ..Specifier::default()
        }]);
    })
    .starts_with("override_specifiers[0]: must set product_id"));
}

// ---------------------------------------------------------------------------------------------
// Purchases: the SCHEDULED invoice

#[test]
fn prepaid_purchases_make_the_scheduled_invoices() {
    let at1 = t("2024-09-01T00:00:00Z");
    let at2 = t("2024-10-01T00:00:00Z");
    let a = with(prepaid("a", "5000"), |b| {
        b.paid = true;
        b.invoice_schedule = vec![item("a/1", at1, "1", "2500"), item("a/2", at2, "2", "1250")];
    });
    let b = with(prepaid("b", "300"), |b| {
        b.contract_id = None;
        b.invoice_contract_id = Some("c".into());
        b.invoice_schedule = vec![item("b/1", at1, "3", "100")];
    });
    // Not invoiced here, or not a purchase: no scheduled invoice from them.
    let elsewhere = with(prepaid("x", "1"), |b| {
        b.contract_id = None;
        b.invoice_contract_id = Some("other".into());
        b.invoice_schedule = vec![item("x/1", at1 + 1, "1", "1")];
    });
    let post = postpaid("pp", "1000", at1 + 2);
    let case = tokens(flat("1"), "1").with(vec![a, b, elsewhere, post]);
    assert_eq!(scheduled_instants(&case.snapshot, i64::MAX), vec![at1, at2]);
    let inv = price_scheduled(&case.snapshot, at1).unwrap();
    assert_eq!(inv.kind, crate::invoice::InvoiceKind::Scheduled);
    assert_eq!((inv.period.start_ms, inv.period.end_ms), (at1, at1));
    let purchase = |q: &str, u: &str, total: &str, b: &str| {
        (
            LineKind::CommitPurchase,
            d(q),
            d(u),
            d(total),
            Some(b.to_string()),
        )
    };
    assert_eq!(
        shown(&inv),
        vec![
            purchase("1", "2500", "2500", "a"),
            purchase("3", "100", "300", "b")
        ]
    );
    assert_eq!(inv.lines[0].name, "A");
    assert_eq!(
        inv.lines[1].balance.as_ref().unwrap().segment_id.as_deref(),
        Some("b/1")
    );
    assert_eq!(sums(&inv), (d("2800"), d("0"), d("2800")));
    let inv = price_scheduled(&case.snapshot, at2).unwrap();
    assert_eq!(shown(&inv), vec![purchase("2", "1250", "2500", "a")]);
    assert!(price_scheduled(&case.snapshot, at1 + 1)
        .unwrap()
        .lines
        .is_empty());
}

// ---------------------------------------------------------------------------------------------
// Laws

/// Sub-windows of [0, 100) a line or segment may cover.
const WINDOWS: [(i64, i64); 4] = [(0, 100), (0, 50), (50, 100), (25, 75)];

fn synthetic_line(
    i: usize,
    product: &str,
    q: Decimal,
    u: Decimal,
    cp: Option<Decimal>,
    w: usize,
) -> InvoiceLine {
    let (start_ms, end_ms) = WINDOWS[w];
    InvoiceLine {
        kind: LineKind::Usage,
        product_id: product.into(),
        name: format!("l{i}"),
        quantity: q,
        unit_price: Amount::new(usd(), u),
        total: Amount::new(usd(), mul_exact(q, u).unwrap()),
        segment: Period { start_ms, end_ms },
        pricing_group_values: None,
        presentation_group_values: None,
        tier: None,
        balance: None,
        commit_unit_price: cp,
        draw_prices: Vec::new(),
        scheduled_charge_id: None,
        subscription_id: None,
        is_prorated: false,
    }
}

fn money(max: i64, places: u32) -> impl Strategy<Value = Decimal> {
    (0..=max).prop_map(move |m| Decimal::new(m, places))
}

prop_compose! {
    fn arb_line()(
        product in prop::sample::select(vec!["p", "q"]),
        q in money(100_000, 2),
        u in prop_oneof![money(5_000, 2), Just(d("3")), Just(d("7")), Just(Decimal::ZERO)],
        cp in prop::option::of(money(3_000, 2)),
        w in 0..WINDOWS.len(),
        draw in prop::option::of((0..5usize, prop_oneof![money(3_000, 2), Just(Decimal::ZERO)])),
    ) -> (String, Decimal, Decimal, Option<Decimal>, usize, Option<(usize, Decimal)>) {
        (product.to_string(), q, u, cp, w, draw)
    }
}

prop_compose! {
    fn arb_balance()(
        kind in prop::sample::select(vec![
            BalanceKind::PrepaidCommit, BalanceKind::PostpaidCommit, BalanceKind::Credit,
        ]),
        priority in prop::option::of(1..4i64),
        paid: bool,
        scope in 0..3usize,
        commit_rate: bool,
        segments in prop::collection::vec((money(500_000, 2), 0..WINDOWS.len(), -300_000..100_000i64), 1..3),
        true_up in prop::option::of(0..=100i64),
    ) -> (BalanceKind, Option<i64>, bool, usize, bool, Vec<(Decimal, usize, i64)>, Option<i64>) {
        (kind, priority, paid, scope, commit_rate, segments, true_up)
    }
}

type ArbBalance = (
    BalanceKind,
    Option<i64>,
    bool,
    usize,
    bool,
    Vec<(Decimal, usize, i64)>,
    Option<i64>,
);

fn law_snapshot(balances: &[ArbBalance]) -> PricingSnapshot {
    let mut snap = snapshot(
        vec![
            product("p", state("m", &[], &[])),
            product("q", state("m", &[], &[])),
        ],
        vec![],
        vec![],
    );
    for (n, (kind, priority, paid, scope, commit_rate, segments, true_up)) in
        balances.iter().enumerate()
    {
        let id = format!("b{n}");
        let mut b = balance(&id, *kind, "0");
        b.priority = priority.map(Decimal::from);
        b.paid = *paid;
        b.applicable_product_ids = match scope {
            0 => vec![],
            1 => vec!["p".into()],
            _ => vec!["q".into()],
        };
        if *commit_rate {
            b.rate_type = BalanceRateType::CommitRate;
        }
        b.access = segments
            .iter()
            .enumerate()
            .map(|(k, (amount, w, prior))| {
                let seg = format!("{id}/{k}");
                snap.balances
                    .prior_ledger
                    .insert(seg.clone(), Decimal::new(*prior, 2));
                let (start, end) = WINDOWS[*w];
                AccessSegment {
                    id: seg,
                    amount: *amount,
                    starting_at_ms: start,
                    ending_before_ms: end,
                }
            })
            .collect();
        if let (BalanceKind::PostpaidCommit, Some(at)) = (kind, true_up) {
            b.invoice_schedule = vec![item(&format!("{id}/i"), *at, "1", "1")];
        }
        snap.balances.balances.push(b);
    }
    snap
}

proptest! {
    #[test]
    fn drawing_down_keeps_the_laws(
        raw_lines in prop::collection::vec(arb_line(), 1..6),
        raw_balances in prop::collection::vec(arb_balance(), 0..5),
    ) {
        let period = Period { start_ms: 0, end_ms: 100 };
        let snap = law_snapshot(&raw_balances);
        let lines: Vec<InvoiceLine> = raw_lines
            .iter()
            .enumerate()
            .map(|(i, (p, q, u, cp, w, draw))| {
                // A commit-specific override's price for draws of balance `b{k}`.
                let mut line = synthetic_line(i, p, *q, *u, *cp, *w);
                line.draw_prices = draw
                    .iter()
                    .map(|(k, price)| DrawPrice { balance_id: format!("b{k}"), unit_price: *price })
                    .collect();
                line
            })
            .collect();
        let drawn = apply_balances(&snap, period, lines.clone()).unwrap();
        // Deterministic.
        prop_assert_eq!(&apply_balances(&snap, period, lines.clone()).unwrap(), &drawn);
        let sums = crate::pricing::totals(&drawn.lines).unwrap();
        let total = sums.total.get(&usd());
        prop_assert!(total >= Decimal::ZERO, "total {}", total);
        prop_assert_eq!(
            total,
            add_exact(sums.subtotal.get(&usd()), sums.adjustments.get(&usd())).unwrap()
        );
        // Quantity conserved per line; the charge too when every balance is LIST_RATE and no
        // draw has its own price.
        let list_only = snap.balances.balances.iter().all(|b| b.rate_type == BalanceRateType::ListRate)
            && lines.iter().all(|l| l.draw_prices.is_empty());
        let mut billed = Decimal::ZERO;
        for line in &lines {
            let parts = drawn.lines.iter().filter(|l| l.kind == LineKind::Usage && l.name == line.name);
            let (mut q, mut charge) = (Decimal::ZERO, Decimal::ZERO);
            for part in parts {
                prop_assert!(part.quantity >= Decimal::ZERO && part.total.value >= Decimal::ZERO);
                q += part.quantity;
                charge += part.total.value;
            }
            prop_assert_eq!(q, line.quantity, "{}", line.name);
            if list_only {
                prop_assert_eq!(charge, line.total.value, "{}", line.name);
            }
            billed += charge;
        }
        let true_ups: Decimal = drawn.lines.iter().filter(|l| l.kind == LineKind::TrueUp).map(|l| l.total.value).sum();
        prop_assert_eq!(sums.subtotal.get(&usd()), billed + true_ups);
        // Each segment gives at most what it has, and the applied lines say what it gave.
        for d in &drawn.deductions {
            prop_assert!(d.amount < Decimal::ZERO);
            if d.entry != LedgerEntryKind::AutomatedInvoiceDeduction {
                continue;
            }
            let b = snap.balances.balances.iter().find(|b| b.id == d.balance_id).unwrap();
            let seg = b.access.iter().find(|s| s.id == d.segment_id).unwrap();
            let available = (seg.amount + snap.balances.prior(&seg.id)).max(Decimal::ZERO);
            prop_assert!(d.amount >= -available, "{:?} of {}", d, available);
            let applied: Decimal = drawn.lines.iter()
                .filter(|l| matches!(l.kind, LineKind::AppliedCommit | LineKind::AppliedCredit))
                .filter(|l| l.balance.as_ref().and_then(|r| r.segment_id.as_deref()) == Some(&seg.id))
                .map(|l| l.total.value)
                .sum();
            prop_assert_eq!(applied, d.amount);
        }
        // Listing order of the balances never changes the drawdown (ids break every tie).
        let mut reversed = snap.clone();
        reversed.balances.balances.reverse();
        let again = apply_balances(&reversed, period, lines).unwrap();
        let usage_only = |v: &[InvoiceLine]| v.iter().filter(|l| l.kind != LineKind::TrueUp).cloned().collect::<Vec<_>>();
        prop_assert_eq!(usage_only(&again.lines), usage_only(&drawn.lines));
    }
}

// ---------------------------------------------------------------------------------------------
// Recurring commits and credits

/// A recurring commit of 1000 a period, invoiced 500, one period long, from 09-15 on a
/// contract starting 09-15 that bills on the 1st of each month.
fn recurring() -> RecurringBalance {
    RecurringBalance {
        id: "r".into(),
        kind: BalanceKind::PrepaidCommit,
        name: "Monthly".into(),
        product_id: "fixed".into(),
        priority: Some(d("1")),
        applicable_product_ids: vec![],
        applicable_product_tags: vec![],
        specifiers: vec![],
        rate_type: BalanceRateType::ListRate,
        credit_type: usd(),
        starting_at_ms: t("2024-09-15T00:00:00Z"),
        ending_before_ms: None,
        access_amount: RecurringAmount {
            unit_price: d("1000"),
            quantity: d("1"),
        },
        invoice_amount: Some(RecurringAmount {
            unit_price: d("500"),
            quantity: d("1"),
        }),
        commit_duration_periods: 1,
        recurrence_frequency: None,
        proration: Proration::default(),
        access_rounding: None,
        invoice_rounding: None,
    }
}

fn mid_september_contract() -> crate::pricing::ContractSnapshot {
    let mut c = crate::pricing::tests::snapshot().contract;
    c.starting_at_ms = t("2024-09-15T00:00:00Z");
    c
}

/// (id, access start, access end, access amount, invoice unit price) of each recurrence.
fn recurrences(
    r: &RecurringBalance,
    until: &str,
) -> Vec<(String, i64, i64, Decimal, Option<Decimal>)> {
    recurrences_on(r, &mid_september_contract(), until)
}

fn recurrences_on(
    r: &RecurringBalance,
    contract: &crate::pricing::ContractSnapshot,
    until: &str,
) -> Vec<(String, i64, i64, Decimal, Option<Decimal>)> {
    r.expand(contract, t(until))
        .unwrap()
        .into_iter()
        .map(|b| {
            assert_eq!(b.access.len(), 1);
            let s = &b.access[0];
            let price = b.invoice_schedule.first().map(|i| i.unit_price);
            (
                b.id.clone(),
                s.starting_at_ms,
                s.ending_before_ms,
                s.amount,
                price,
            )
        })
        .collect()
}

fn rec(
    id: &str,
    start: &str,
    end: &str,
    amount: &str,
    price: Option<&str>,
) -> (String, i64, i64, Decimal, Option<Decimal>) {
    (id.into(), t(start), t(end), d(amount), price.map(d))
}

#[test]
fn recurring_commits_follow_the_contract_cadence_and_prorate_a_partial_first_period() {
    // [09-15, 10-01) is 16 of September's 30 days: 1000 × 16/30 = 533.333333333333 (half-even
    // at 12 places), invoiced 500 × 16/30 = 266.666666666667; then whole months.
    assert_eq!(
        recurrences(&recurring(), "2024-12-01T00:00:00Z"),
        vec![
            rec(
                "r/0",
                "2024-09-15T00:00:00Z",
                "2024-10-01T00:00:00Z",
                "533.333333333333",
                Some("266.666666666667")
            ),
            rec(
                "r/1",
                "2024-10-01T00:00:00Z",
                "2024-11-01T00:00:00Z",
                "1000",
                Some("500")
            ),
            rec(
                "r/2",
                "2024-11-01T00:00:00Z",
                "2024-12-01T00:00:00Z",
                "1000",
                Some("500")
            ),
        ]
    );
    let expanded = recurring()
        .expand(&mid_september_contract(), t("2024-10-02T00:00:00Z"))
        .unwrap();
    let b = &expanded[0];
    assert_eq!(
        (b.access[0].id.as_str(), b.invoice_schedule[0].id.as_str()),
        ("r/0/access", "r/0/invoice")
    );
    assert_eq!(b.invoice_schedule[0].amount, d("266.666666666667"));
    assert_eq!(
        b.invoice_schedule[0].timestamp_ms,
        t("2024-09-15T00:00:00Z")
    );
    assert!(b.paid && b.contract_id.as_deref() == Some("c") && b.priority == Some(d("1")));
    assert_eq!(expanded.len(), 2);
}

#[test]
fn proration_rounding_rounds_only_prorated_amounts() {
    use super::{ProrationRounding, ProrationRoundingMethod as M};
    let round = |method, decimal_places| {
        Some(ProrationRounding {
            method,
            decimal_places,
        })
    };
    // First period [09-15, 10-01): access 1000 × 16/30 = 533.33…, invoice 500 × 16/30 =
    // 266.66…; later periods are whole and never rounded.
    let cases = [
        (round(M::HalfUp, 0), round(M::HalfUp, 0), "533", "267"),
        (round(M::Floor, 2), round(M::Ceiling, 1), "533.33", "266.7"),
        (round(M::Ceiling, -2), round(M::Floor, -2), "600", "200"),
        (round(M::HalfUp, -3), None, "1000", "266.666666666667"),
        (
            round(M::HalfUp, 5),
            round(M::Floor, 5),
            "533.33333",
            "266.66666",
        ),
    ];
    for (access, invoice, want_access, want_price) in cases {
        let r = RecurringBalance {
            access_rounding: access,
            invoice_rounding: invoice,
            ..recurring()
        };
        let got = recurrences(&r, "2024-11-01T00:00:00Z");
        assert_eq!(
            (got[0].3, got[0].4),
            (d(want_access), Some(d(want_price))),
            "{access:?} {invoice:?}"
        );
        assert_eq!((got[1].3, got[1].4), (d("1000"), Some(d("500"))));
    }
    // Out of range: refused by the API, an overflow error here.
    let bad = RecurringBalance {
        access_rounding: round(M::HalfUp, 6),
        ..recurring()
    };
    assert!(bad
        .expand(&mid_september_contract(), t("2024-10-01T00:00:00Z"))
        .is_err());
    // Exact halves: HALF_UP goes away from zero.
    let half = ProrationRounding {
        method: M::HalfUp,
        decimal_places: 0,
    };
    assert_eq!(half.apply(d("2.5")), Some(d("3")));
    assert_eq!(half.apply(d("-2.5")), Some(d("-3")));
}

#[test]
fn recurring_proration_modes_and_a_cut_last_period() {
    // Ending 11-16: the last period is [11-01, 11-16), 15 of 30 days: 1000 → 500, 500 → 250.
    let cut = |proration| RecurringBalance {
        ending_before_ms: Some(t("2024-11-16T00:00:00Z")),
        proration,
        ..recurring()
    };
    let amounts = |r: RecurringBalance| -> Vec<Decimal> {
        recurrences(&r, "2025-06-01T00:00:00Z")
            .into_iter()
            .map(|r| r.3)
            .collect()
    };
    let third = d("533.333333333333");
    assert_eq!(
        amounts(cut(Proration::FirstAndLast)),
        [third, d("1000"), d("500")]
    );
    assert_eq!(
        amounts(cut(Proration::First)),
        [third, d("1000"), d("1000")]
    );
    assert_eq!(
        amounts(cut(Proration::Last)),
        [d("1000"), d("1000"), d("500")]
    );
    assert_eq!(
        amounts(cut(Proration::None)),
        [d("1000"), d("1000"), d("1000")]
    );
    let last = recurrences(&cut(Proration::FirstAndLast), "2025-06-01T00:00:00Z")
        .pop()
        .unwrap();
    assert_eq!(
        last,
        rec(
            "r/2",
            "2024-11-01T00:00:00Z",
            "2024-11-16T00:00:00Z",
            "500",
            Some("250")
        )
    );
}

#[test]
fn recurring_commit_duration_spans_several_periods() {
    let r = RecurringBalance {
        commit_duration_periods: 2,
        ..recurring()
    };
    let got = recurrences(&r, "2024-10-02T00:00:00Z");
    assert_eq!(
        got,
        vec![
            rec(
                "r/0",
                "2024-09-15T00:00:00Z",
                "2024-11-01T00:00:00Z",
                "533.333333333333",
                Some("266.666666666667")
            ),
            rec(
                "r/1",
                "2024-10-01T00:00:00Z",
                "2024-12-01T00:00:00Z",
                "1000",
                Some("500")
            ),
        ]
    );
}

#[test]
fn recurring_frequency_restarts_at_starting_at() {
    // Weekly from Sunday 09-15 to 09-25: [09-15, 09-22) whole, [09-22, 09-25) 3 of 7 days:
    // 3000 / 7 = 428.571428571428|571… → 428.571428571429.
    let r = RecurringBalance {
        recurrence_frequency: Some(crate::period::Frequency::Weekly),
        ending_before_ms: Some(t("2024-09-25T00:00:00Z")),
        invoice_amount: None,
        ..recurring()
    };
    assert_eq!(
        recurrences(&r, "2025-01-01T00:00:00Z"),
        vec![
            rec(
                "r/0",
                "2024-09-15T00:00:00Z",
                "2024-09-22T00:00:00Z",
                "1000",
                None
            ),
            rec(
                "r/1",
                "2024-09-22T00:00:00Z",
                "2024-09-25T00:00:00Z",
                "428.571428571429",
                None
            ),
        ]
    );
    assert!(r
        .expand(&mid_september_contract(), t("2025-01-01T00:00:00Z"))
        .unwrap()
        .iter()
        .all(|b| !b.paid));
}

#[test]
fn recurring_on_a_contract_start_cadence_is_cut_by_its_own_start() {
    // The contract bills from the 15th; a commit from 10-01 first covers [10-01, 10-15): 14 of
    // the 30 days of [09-15, 10-15) → 466.666666666667; then [10-15, 11-15) and [11-15, 12-15).
    let mut contract = mid_september_contract();
    contract.usage_statement_schedule.day = crate::period::AnchorDay::ContractStart;
    let r = RecurringBalance {
        kind: BalanceKind::Credit,
        starting_at_ms: t("2024-10-01T00:00:00Z"),
        ..recurring()
    };
    assert_eq!(
        recurrences_on(&r, &contract, "2024-11-20T00:00:00Z"),
        vec![
            rec(
                "r/0",
                "2024-10-01T00:00:00Z",
                "2024-10-15T00:00:00Z",
                "466.666666666667",
                None
            ),
            rec(
                "r/1",
                "2024-10-15T00:00:00Z",
                "2024-11-15T00:00:00Z",
                "1000",
                None
            ),
            rec(
                "r/2",
                "2024-11-15T00:00:00Z",
                "2024-12-15T00:00:00Z",
                "1000",
                None
            ),
        ]
    );
    // Nothing before the commit starts; the contract's end stops it too.
    assert!(recurrences_on(&r, &contract, "2024-10-01T00:00:00Z").is_empty());
    contract.ending_before_ms = Some(t("2024-10-15T00:00:00Z"));
    assert_eq!(
        recurrences_on(&r, &contract, "2025-01-01T00:00:00Z").len(),
        1
    );
}

proptest! {
    /// Splitting lines at access boundaries never changes what usage is worth: with a balance
    /// that has nothing to give (amount 0), every line total sums to the same subtotal as
    /// without it, whatever the aggregation, price shape, rounding and window.
    #[test]
    fn access_splits_never_change_a_charge(
        hours in prop::collection::vec((0..720i64, 1..5_000i64), 1..12),
        max: bool,
        tiered: bool,
        round: bool,
        window in (0..720i64, 1..720i64),
    ) {
        let mut case = tokens(
            if tiered { two_tiers(("7", "100"), "3") } else { flat("7") },
            "0",
        );
        if max {
            case.snapshot.metrics.get_mut("m").unwrap().aggregation = Aggregation::Max;
        }
        if round {
            case.snapshot.products[0].versions[0].1.quantity_rounding = Some(QuantityRounding {
                decimal_places: 0,
                rounding_method: RoundingMethod::RoundUp,
            });
        }
        case.usage = hours
            .iter()
            .map(|(h, v)| {
                let at = SEP.start_ms + h * crate::time::HOUR_MS;
                let v = Decimal::new(*v, 1);
                let acc = if max { Accumulator::Max(v) } else { Accumulator::Sum(v) };
                row("m", &[], at, acc)
            })
            .collect();
        let bare = case.price();
        let (from, len) = window;
        let nothing = with(credit("cr", "0"), |b| {
            b.access[0].starting_at_ms = SEP.start_ms + from * crate::time::HOUR_MS;
            b.access[0].ending_before_ms =
                b.access[0].starting_at_ms + len * crate::time::HOUR_MS;
        });
        let split = case.with(vec![nothing]).price();
        prop_assert_eq!(sums(&split), sums(&bare));
        let quantity = |inv: &Invoice| inv.lines.iter().map(|l| l.quantity).sum::<Decimal>();
        prop_assert_eq!(quantity(&split), quantity(&bare));
    }
}
