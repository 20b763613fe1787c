//! Tests of the rollup cover and its law: pricing from the blocks of [`cover`] equals pricing
//! from the hours, to the last digit, for random periods, splits and usage of every aggregation.

use super::*;
use crate::accumulate::Accumulator;
use crate::balances::{AccessSegment, Balance, BalanceKind};
use crate::metric::Aggregation;
use crate::overrides::{self, OverrideSpec, OverrideType, Prioritization};
use crate::pricing::price_invoice;
use crate::rating::tests::{d, metric, product, rate, row, state, t, usd, SEP};
use crate::rating::{merge_rows, Price, Tier, UsageRow};
use alloc::string::ToString;
use alloc::vec;
use proptest::prelude::*;
use rust_decimal::Decimal;

fn range(level: Level, from: &str, to: &str) -> Range {
    Range {
        level,
        from_ms: t(from),
        to_ms: t(to),
    }
}

#[test]
fn a_calendar_month_is_one_block_and_ragged_ends_use_spans_days_then_hours() {
    assert_eq!(
        cover(SEP.start_ms, SEP.end_ms, &[], &[]),
        vec![range(
            Level::Month,
            "2024-09-01T00:00:00Z",
            "2024-10-01T00:00:00Z"
        )]
    );
    // Epoch days: 2024-09-16 is day 19,982 (≡ 14 mod 16), 2024-11-01 day 20,028 (≡ 12).
    let from = t("2024-09-15T05:00:00Z");
    let to = t("2024-11-03T02:00:00Z");
    assert_eq!(
        cover(from, to, &[], &[]),
        vec![
            range(Level::Hour, "2024-09-15T05:00:00Z", "2024-09-16T00:00:00Z"),
            range(Level::Days2, "2024-09-16T00:00:00Z", "2024-09-18T00:00:00Z"),
            // Two aligned 16-day spans read fewer rows than days to the month, then October.
            range(
                Level::Days16,
                "2024-09-18T00:00:00Z",
                "2024-10-20T00:00:00Z"
            ),
            range(Level::Days8, "2024-10-20T00:00:00Z", "2024-10-28T00:00:00Z"),
            range(Level::Days4, "2024-10-28T00:00:00Z", "2024-11-01T00:00:00Z"),
            range(Level::Days2, "2024-11-01T00:00:00Z", "2024-11-03T00:00:00Z"),
            range(Level::Hour, "2024-11-03T00:00:00Z", "2024-11-03T02:00:00Z"),
        ]
    );
    // A cut on 09-10T12 splits September (09-01 is day 19,967, odd): a day and 8 days to
    // 09-10, hours to the cut, hours to 09-11, then 1 + 2 + 4 + 8 + 4 + 1 days to the end.
    assert_eq!(
        cover(SEP.start_ms, SEP.end_ms, &[t("2024-09-10T12:00:00Z")], &[]),
        vec![
            range(Level::Day, "2024-09-01T00:00:00Z", "2024-09-02T00:00:00Z"),
            range(Level::Days8, "2024-09-02T00:00:00Z", "2024-09-10T00:00:00Z"),
            range(Level::Hour, "2024-09-10T00:00:00Z", "2024-09-11T00:00:00Z"),
            range(Level::Day, "2024-09-11T00:00:00Z", "2024-09-12T00:00:00Z"),
            range(Level::Days2, "2024-09-12T00:00:00Z", "2024-09-14T00:00:00Z"),
            range(Level::Days4, "2024-09-14T00:00:00Z", "2024-09-18T00:00:00Z"),
            range(Level::Days8, "2024-09-18T00:00:00Z", "2024-09-26T00:00:00Z"),
            range(Level::Days4, "2024-09-26T00:00:00Z", "2024-09-30T00:00:00Z"),
            range(Level::Day, "2024-09-30T00:00:00Z", "2024-10-01T00:00:00Z"),
        ]
    );
}

#[test]
fn a_dirty_day_is_read_by_the_hour_and_no_block_holding_it_is_used() {
    // September with 09-20 dirty: no month, no span holding the 20th.
    assert_eq!(
        cover(SEP.start_ms, SEP.end_ms, &[], &[t("2024-09-20T00:00:00Z")]),
        vec![
            range(Level::Day, "2024-09-01T00:00:00Z", "2024-09-02T00:00:00Z"),
            range(
                Level::Days16,
                "2024-09-02T00:00:00Z",
                "2024-09-18T00:00:00Z"
            ),
            range(Level::Days2, "2024-09-18T00:00:00Z", "2024-09-20T00:00:00Z"),
            range(Level::Hour, "2024-09-20T00:00:00Z", "2024-09-21T00:00:00Z"),
            range(Level::Day, "2024-09-21T00:00:00Z", "2024-09-22T00:00:00Z"),
            // 4 days from the 22nd and 4 from the 26th: two blocks of one range.
            range(Level::Days4, "2024-09-22T00:00:00Z", "2024-09-30T00:00:00Z"),
            range(Level::Day, "2024-09-30T00:00:00Z", "2024-10-01T00:00:00Z"),
        ]
    );
}

/// The blocks (rows per group) a cover reads.
fn blocks(ranges: &[Range]) -> usize {
    ranges
        .iter()
        .map(|r| {
            let mut n = 0;
            let mut at = r.from_ms;
            while at < r.to_ms {
                at = r.level.block_end(at).unwrap();
                n += 1;
            }
            n
        })
        .sum()
}

proptest! {
    /// A period of up to 31 days starting at any midnight reads at most ten blocks per group.
    #[test]
    fn a_month_long_period_at_any_midnight_reads_at_most_ten_blocks(
        day in 0..3_000i64, len in 1..=31i64,
    ) {
        let from = t("2020-01-01T00:00:00Z") + day * DAY_MS;
        let n = blocks(&cover(from, from + len * DAY_MS, &[], &[]));
        prop_assert!(n <= 10, "{} blocks for {} days from day {}", n, len, day);
    }
}

#[test]
fn cuts_are_taken_to_the_next_hour_and_kept_inside_the_period() {
    let mut snap = crate::pricing::tests::snapshot();
    snap.rates = vec![
        rate("p", &[], t("2024-08-01T00:00:00Z"), Price::Flat(d("1"))),
        rate("p", &[], t("2024-09-10T00:30:00Z"), Price::Flat(d("2"))),
    ];
    assert_eq!(cuts(&snap, SEP), vec![t("2024-09-10T01:00:00Z")]);
}

proptest! {
    /// The cover tiles `[from, to)` with whole blocks of their level, none across a cut, none
    /// above the hour holding a dirty day.
    #[test]
    fn the_cover_tiles_the_window_without_crossing_a_cut(
        from_h in 0..2_000i64,
        len_h in 1..3_000i64,
        cut_hours in prop::collection::vec(0..5_000i64, 0..6),
        dirty_days in prop::collection::vec(0..210i64, 0..4),
    ) {
        let base = t("2024-01-01T00:00:00Z");
        let from = base + from_h * HOUR_MS;
        let to = from + len_h * HOUR_MS;
        let cuts: Vec<i64> = cut_hours.iter().map(|h| base + h * HOUR_MS).collect();
        let dirty: Vec<i64> = dirty_days.iter().map(|d| base + d * DAY_MS).collect();
        let ranges = cover(from, to, &cuts, &dirty);
        let mut at = from;
        for r in &ranges {
            prop_assert_eq!(r.from_ms, at);
            prop_assert!(r.from_ms < r.to_ms);
            let mut block = r.from_ms;
            while block < r.to_ms {
                prop_assert_eq!(r.level.block_start(block), block);
                let end = r.level.block_end(block).unwrap();
                prop_assert!(end <= r.to_ms);
                for c in &cuts {
                    prop_assert!(!(block < *c && *c < end), "{:?} crosses {}", r, c);
                }
                for d in &dirty {
                    let holds = block <= *d && *d < end;
                    prop_assert!(r.level == Level::Hour || !holds, "{:?} holds {}", r, d);
                }
                block = end;
            }
            at = r.to_ms;
        }
        prop_assert_eq!(at, to);
    }
}

// ---------------------------------------------------------------------------------------------
// The law

/// Merges the hourly rows inside `period` into the blocks of its cover (rows outside stay).
fn rolled(rows: &[UsageRow], period: Period, cuts: &[i64], dirty: &[i64]) -> Vec<UsageRow> {
    let ranges = cover(period.start_ms, period.end_ms, cuts, dirty);
    let mut out: Vec<UsageRow> = rows
        .iter()
        .filter(|r| !period.contains(r.hour_ms))
        .cloned()
        .collect();
    let blocks = rows.iter().filter(|r| period.contains(r.hour_ms)).map(|r| {
        let range = ranges
            .iter()
            .find(|g| g.from_ms <= r.hour_ms && r.hour_ms < g.to_ms)
            .unwrap();
        let key = (
            r.metric_id.clone(),
            r.groups.clone(),
            range.level.block_start(r.hour_ms),
        );
        (key, r.acc.clone())
    });
    out.extend(merge_rows(blocks).unwrap());
    out
}

/// One metric per aggregation, each grouped by `g`, and a product on each: `sum` flat with a
/// rate change, `tiered` graduated with an override, `max`, `unique`, `latest` flat.
fn law_snapshot(change_h: i64, window: (i64, i64), access: (i64, i64)) -> PricingSnapshot {
    let mut snap = crate::pricing::tests::snapshot();
    let hour = |h: i64| SEP.start_ms - 5 * DAY_MS + h * HOUR_MS;
    let aggregations = [
        ("sum", Aggregation::Sum),
        ("tiered", Aggregation::Sum),
        ("max", Aggregation::Max),
        ("unique", Aggregation::Unique),
        ("latest", Aggregation::Latest),
    ];
    for (id, aggregation) in aggregations {
        let m = metric(id, aggregation, vec![vec!["g".to_string()]]);
        snap.metrics.insert(id.to_string(), m);
        let presentation: &[&str] = if id == "sum" { &["g"] } else { &[] };
        let pricing: &[&str] = if id == "max" { &["g"] } else { &[] };
        snap.products
            .push(product(id, state(id, pricing, presentation)));
    }
    let flat = |p: &str| Price::Flat(d(p));
    let tiers = Price::Tiered(vec![
        Tier {
            price: d("3"),
            size: Some(d("40")),
        },
        Tier {
            price: d("1.5"),
            size: None,
        },
    ]);
    let from = SEP.start_ms - 60 * DAY_MS;
    snap.rates = vec![
        rate("sum", &[], from, flat("2")),
        rate("sum", &[], hour(change_h), flat("0.7")),
        rate("tiered", &[], from, tiers),
        rate("max", &[("g", "a")], from, flat("5")),
        rate("max", &[("g", "b")], from, flat("4")),
        rate("unique", &[], from, flat("9")),
        rate("latest", &[], from, flat("1")),
    ];
    let o = overrides::build(
        OverrideSpec {
            id: "o".into(),
            starting_at_ms: hour(window.0),
            ending_before_ms: Some(hour(window.0 + window.1)),
            kind: Some(OverrideType::Multiplier),
            product_id: Some("tiered".into()),
            multiplier: Some(d("0.5")),
            ..OverrideSpec::default()
        },
        Prioritization::LowestMultiplier,
    )
    .unwrap();
    snap.contract.terms.overrides = vec![o];
    snap.contract.starting_at_ms = from;
    snap.balances.balances = vec![Balance {
        id: "cr".into(),
        kind: BalanceKind::Credit,
        name: "CR".into(),
        product_id: "fixed".into(),
        contract_id: Some(snap.contract.id.clone()),
        applicable_contract_ids: vec![],
        invoice_contract_id: None,
        priority: Some(d("1")),
        applicable_product_ids: vec![],
        applicable_product_tags: vec![],
        specifiers: vec![],
        rate_type: Default::default(),
        credit_type: usd(),
        access: vec![AccessSegment {
            id: "cr/s".into(),
            amount: d("250"),
            starting_at_ms: hour(access.0),
            ending_before_ms: hour(access.0 + access.1),
        }],
        invoice_schedule: vec![],
        paid: false,
        recurring_id: None,
    }];
    snap
}

prop_compose! {
    fn arb_rows()(
        raw in prop::collection::vec(
            (0..5usize, 0..(50 * 24i64), prop::bool::ANY, 1..10_000i64),
            1..60,
        ),
    ) -> Vec<UsageRow> {
        let start = SEP.start_ms - 5 * DAY_MS;
        raw.into_iter()
            .map(|(m, h, b, v)| {
                let hour_ms = start + h * HOUR_MS;
                let g = if b { "a" } else { "b" };
                let value = Decimal::new(v, 2);
                let (id, acc) = match m {
                    0 => ("sum", Accumulator::Sum(value)),
                    1 => ("tiered", Accumulator::Sum(value)),
                    2 => ("max", Accumulator::Max(value)),
                    3 => ("unique", Accumulator::Unique([alloc::format!("u{}", v % 7)].into())),
                    _ => ("latest", Accumulator::Latest {
                        timestamp_ms: hour_ms + v,
                        transaction_id: alloc::format!("t{v}"),
                        value,
                    }),
                };
                row(id, &[Some(g)], hour_ms, acc)
            })
            .collect()
    }
}

/// Rows of one key and hour merged into one, as the store keeps them.
fn stored(rows: Vec<UsageRow>) -> Vec<UsageRow> {
    merge_rows(
        rows.into_iter()
            .map(|r| ((r.metric_id, r.groups, r.hour_ms), r.acc)),
    )
    .unwrap()
}

proptest! {
    /// Pricing the blocks of the cover equals pricing the hours, for random periods (aligned to
    /// the month or not), rate changes, override windows, access windows, dirty days and usage.
    #[test]
    fn pricing_blocks_equals_pricing_hours(
        rows in arb_rows(),
        start_h in prop_oneof![Just(5 * 24i64), 0..(10 * 24i64)],
        len_h in prop_oneof![Just(30 * 24i64), 1..(40 * 24i64)],
        change_h in 0..(50 * 24i64),
        window in (0..(50 * 24i64), 1..(20 * 24i64)),
        access in (0..(50 * 24i64), 1..(30 * 24i64)),
        dirty_days in prop::collection::vec(0..50i64, 0..3),
    ) {
        let snap = law_snapshot(change_h, window, access);
        let start = SEP.start_ms - 5 * DAY_MS + start_h * HOUR_MS;
        let period = Period { start_ms: start, end_ms: start + len_h * HOUR_MS };
        let hourly = stored(rows);
        let first_day = SEP.start_ms - 5 * DAY_MS;
        let dirty: Vec<i64> = dirty_days.iter().map(|d| first_day + d * DAY_MS).collect();
        let blocks = rolled(&hourly, period, &cuts(&snap, period), &dirty);
        let by_hour = price_invoice(&snap, &hourly, period);
        let by_block = price_invoice(&snap, &blocks, period);
        prop_assert_eq!(by_block, by_hour);
    }
}
