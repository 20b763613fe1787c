//! Draft invoices read through the day and month rollups (issue 17) equal the invoices core
//! prices from every hourly row, to the last digit, on both backends: seeded random events over
//! three months, a rate change, an override window and a credit's access window inside one
//! month, a contract starting mid-day (ragged hours and days), a whole calendar month (a month
//! block).

use rust_decimal::Decimal;
use serde_json::{json, Value};
use tally_central::billing::RatingContext;
use tally_central::model::{self, kind, Contract, Customer};
use tally_central::store::Env;
use tally_core::period::Period;
use tally_core::pricing::price_invoice;
use tally_core::rollup::{self, Level};
use tally_tests::bench::SplitMix64;

use crate::store_conformance::Backend;
use crate::support::*;

const SBX: Env = Env::Sandbox;
const START: &str = "2024-09-03T05:00:00Z";
const NOW: &str = "2024-12-10T00:00:00Z";

/// Seeded events between the contract's start and now, sorted by time: models × users, values
/// with up to three decimal places.
fn events(seed: u64, n: usize) -> Vec<(i64, Value)> {
    let mut rng = SplitMix64(seed);
    let from = ms(START);
    let span = u64::try_from(ms(NOW) - from).expect("span");
    let mut out: Vec<(i64, Value)> = (0..n)
        .map(|i| {
            let at = from + i64::try_from(rng.below(span)).expect("offset");
            let value = format!("{}.{:03}", rng.below(1000), rng.below(1000));
            let props = json!({
                "model": format!("m{}", rng.below(3)),
                "user": format!("u{}", rng.below(7)),
                "n": dec(&value),
            });
            (at, event(&format!("e{i}"), "acme", "call", &ts(at), props))
        })
        .collect();
    out.sort_by_key(|(at, _)| *at);
    out
}

async fn setup(app: &TestApp) -> (String, String) {
    let sum = app
        .metric(
            SBX,
            json!({ "name": "tokens", "aggregation_type": "SUM", "aggregation_key": "n",
                    "event_type_filter": { "in_values": ["call"] },
                    "group_keys": [["model", "user"]] }),
        )
        .await;
    let unique = app
        .metric(
            SBX,
            json!({ "name": "users", "aggregation_type": "UNIQUE", "aggregation_key": "user",
                    "event_type_filter": { "in_values": ["call"] } }),
        )
        .await;
    let max = app
        .metric(
            SBX,
            json!({ "name": "peak", "aggregation_type": "MAX", "aggregation_key": "n",
                    "event_type_filter": { "in_values": ["call"] } }),
        )
        .await;
    let tokens = app
        .usage_product(
            SBX,
            "Tokens",
            &sum,
            json!({ "presentation_group_key": ["model", "user"] }),
        )
        .await;
    let users = app.usage_product(SBX, "Users", &unique, json!({})).await;
    let peak = app.usage_product(SBX, "Peak", &max, json!({})).await;
    let fixed = app
        .post(
            "/v1/contract-pricing/products/create",
            json!({ "name": "Credit", "type": "FIXED" }),
        )
        .await
        .id();
    let card = app.rate_card(SBX, "card").await;
    app.flat_rate(SBX, &card, &tokens, "0.37", START).await;
    app.flat_rate(SBX, &card, &tokens, "1.1", "2024-11-12T13:00:00Z")
        .await;
    app.flat_rate(SBX, &card, &users, "3", START).await;
    app.flat_rate(SBX, &card, &peak, "2.5", START).await;
    let customer = app.customer(SBX, "acme", &["acme"]).await;
    let contract = app
        .post(
            "/v1/contracts/create",
            json!({
                "customer_id": customer, "rate_card_id": card, "starting_at": START,
                "overrides": [{ "starting_at": "2024-11-05T10:00:00Z",
                    "ending_before": "2024-11-20T00:00:00Z", "product_id": tokens,
                    "type": "MULTIPLIER", "multiplier": dec("0.333") }],
                "credits": [{ "product_id": fixed, "priority": 1,
                    "access_schedule": { "schedule_items": [{ "amount": dec("500"),
                        "starting_at": "2024-11-08T09:00:00Z",
                        "ending_before": "2024-11-23T17:00:00Z" }] } }],
            }),
        )
        .await
        .id();
    (customer, contract)
}

async fn rolled_up_drafts_equal_hourly_pricing(backend: Backend) {
    let app = TestApp::on_backend(NOW, backend).await;
    let (customer_id, contract_id) = setup(&app).await;
    // Each chunk is ingested an hour after its last event (inside the ingest window).
    for chunk in events(17, 900).chunks(100) {
        app.set_now_ms(chunk.last().map(|(at, _)| at + HOUR_MS).expect("chunk"));
        let batch: Vec<Value> = chunk.iter().map(|(_, e)| e.clone()).collect();
        let got = app.ingest(SBX, Value::Array(batch)).await;
        assert_eq!(num(&got["accepted"]), "100", "{got}");
    }
    app.set_now(NOW);

    let st = &app.state;
    // Roll every dirty day up now (the background compactor may be anywhere in its work): the
    // reads below then take the spans and months, not the hours.
    while st
        .stores
        .usage
        .compact_rollups(64)
        .await
        .expect("compact")
        .days
        > 0
    {}
    let contract: Contract = model::load(&st.stores, SBX, kind::CONTRACT, &contract_id, "c")
        .await
        .expect("contract");
    let customer: Customer = model::load(&st.stores, SBX, kind::CUSTOMER, &customer_id, "c")
        .await
        .expect("customer");
    let ctx = RatingContext::load(st, SBX, &contract)
        .await
        .expect("context");
    let snapshot = ctx.snapshot();
    let ids: Vec<String> = snapshot.metrics.keys().cloned().collect();
    let periods = tally_central::billing::begun_periods(&contract, ms(NOW));
    assert_eq!(periods.len(), 4, "September to December: {periods:?}");
    let mut levels = std::collections::BTreeSet::new();
    let mut november_cuts = 0;
    for period in periods {
        let cuts = rollup::cuts(snapshot, period);
        levels.extend(
            rollup::cover(period.start_ms, period.end_ms, &cuts, &[])
                .iter()
                .map(|r| r.level),
        );
        if period.start_ms == ms("2024-11-01T00:00:00Z") {
            november_cuts = cuts.len();
        }
        let hourly = st
            .stores
            .usage
            .usage_rows(SBX, &customer.refs(), &ids, period.start_ms, period.end_ms)
            .await
            .expect("hourly rows");
        assert!(hourly.len() > 100, "{} hourly rows", hourly.len());
        let expected = price_invoice(snapshot, &hourly, period).expect("priced from hours");
        let got = ctx
            .rate(st, SBX, period)
            .await
            .expect("priced from rollups");
        assert_eq!(got, expected, "period {period:?}");
        assert!(!expected.lines.is_empty());
    }
    // A rate start, the override's two ends, the credit's two ends.
    assert_eq!(november_cuts, 5);
    // Ragged ends by the hour, whole months, and spans of days between.
    for level in [Level::Hour, Level::Day, Level::Days2, Level::Month] {
        assert!(levels.contains(&level), "{level:?} not in {levels:?}");
    }

    // The same through the API: September (no prior ledger) line by line.
    let september = Period {
        start_ms: ms(START),
        end_ms: ms("2024-10-01T00:00:00Z"),
    };
    let hourly = st
        .stores
        .usage
        .usage_rows(
            SBX,
            &customer.refs(),
            &ids,
            september.start_ms,
            september.end_ms,
        )
        .await
        .expect("hourly rows");
    let expected = price_invoice(snapshot, &hourly, september).expect("priced");
    let inv = app
        .invoice_at(SBX, &customer_id, "2024-09-10T00:00:00Z")
        .await;
    let exact = |v: &Value| -> Decimal { num(v).parse().expect("decimal") };
    let totals: Vec<Decimal> = inv["line_items"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|l| exact(&l["total"]))
        .collect();
    let want: Vec<Decimal> = expected.lines.iter().map(|l| l.total.value).collect();
    assert_eq!(totals, want);
    assert_eq!(
        exact(&inv["total"]),
        expected.total.get(&expected.credit_type)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolled_up_drafts_equal_hourly_pricing_sqlite() {
    rolled_up_drafts_equal_hourly_pricing(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolled_up_drafts_equal_hourly_pricing_postgres() {
    rolled_up_drafts_equal_hourly_pricing(Backend::Postgres).await;
}
