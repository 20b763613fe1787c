//! The pricing rules of the decisions table, through the HTTP API with hand-computed numbers:
//! non-terminating conversions (issue 19 item 1), cosmetic product updates (item 2) and
//! presentation groups (item 3). Each product here meters SUM/MAX/UNIQUE of one property of
//! `use` events for customer `acme`, on a monthly contract from 2024-11-01.

use axum::http::StatusCode;
use serde_json::{json, Value};
use tally_central::store::Env;

use crate::support::*;

const SBX: Env = Env::Sandbox;
const START: &str = "2024-11-01T00:00:00Z";

/// One product on one card, priced by `rate` (an addRate body without ids and dates).
struct Setup {
    product: String,
    customer: String,
}

impl Setup {
    async fn new(app: &TestApp, metric: Value, product: Value, rate: Value) -> Setup {
        let mut metric_body = json!({ "name": "m", "event_type_filter": { "in_values": ["use"] } });
        merge(&mut metric_body, metric);
        let metric = app.metric(SBX, metric_body).await;
        let product = app.usage_product(SBX, "Usage", &metric, product).await;
        let card = app.rate_card(SBX, "card").await;
        let mut body = json!({
            "rate_card_id": card, "product_id": product, "starting_at": START, "entitled": true,
        });
        merge(&mut body, rate);
        app.post("/v1/contract-pricing/rate-cards/addRate", body)
            .await
            .expect(StatusCode::OK);
        let customer = app.customer(SBX, "acme", &["acme"]).await;
        app.contract(SBX, &customer, &card, START).await;
        Setup { product, customer }
    }

    /// Ingests `(timestamp, properties)` events for acme.
    async fn events(&self, app: &TestApp, events: &[(&str, Value)]) {
        let events: Vec<Value> = events
            .iter()
            .enumerate()
            .map(|(i, (at, props))| event(&format!("e{i}"), "acme", "use", at, props.clone()))
            .collect();
        let r = app.ingest(SBX, Value::Array(events.clone())).await;
        assert_eq!(r["accepted"], events.len(), "{r}");
    }

    /// The November invoice, read through the list (which must answer 200).
    async fn november(&self, app: &TestApp) -> Value {
        app.invoice_at(SBX, &self.customer, START).await
    }
}

#[tokio::test]
async fn seconds_to_minutes_is_rounded_to_12_places_and_the_list_answers() {
    let app = TestApp::new("2024-11-25T00:00:00Z").await;
    let s = Setup::new(
        &app,
        json!({ "aggregation_type": "SUM", "aggregation_key": "v" }),
        json!({ "quantity_conversion": { "conversion_factor": 60, "operation": "DIVIDE" } }),
        json!({ "rate_type": "FLAT", "price": 7 }),
    )
    .await;
    s.events(&app, &[("2024-11-10T00:00:00Z", json!({ "v": "100" }))])
        .await;
    let inv = s.november(&app).await;
    // 100 / 60 = 1.666666666667 (12 places, half-even); × 7 = 11.666666666669.
    let line = &inv["line_items"][0];
    assert_eq!(line["product_id"], s.product.as_str());
    assert_eq!(num(&line["quantity"]), "1.666666666667");
    assert_eq!(num(&inv["total"]), "11.666666666669");
}

/// Issue 19 item 2: `products/update` with only a new name (or only tags) at 11-16, events on
/// 11-10 and 11-20. Each case: metric, product, rate, the two events' properties, the total.
#[tokio::test]
async fn a_cosmetic_product_update_changes_no_amount() {
    let tiers = json!({
        "rate_type": "TIERED", "tiers": [{ "price": 10, "size": 100 }, { "price": 1 }],
    });
    let sum = json!({ "aggregation_type": "SUM", "aggregation_key": "v" });
    let per_1000 = json!({
        "quantity_conversion": { "conversion_factor": 1000, "operation": "DIVIDE" },
        "quantity_rounding": { "decimal_places": 0, "rounding_method": "ROUND_UP" },
    });
    let flat = |p: u32| json!({ "rate_type": "FLAT", "price": p });
    let cases = [
        // 200 over [{10, size 100}, {1}] = 1000 + 100.
        (sum.clone(), Value::Null, tiers, ["100", "100"], "1100"),
        // 200 / 1000 = 0.2 → ROUND_UP → 1 × 100.
        (sum, per_1000, flat(100), ["100", "100"], "100"),
        // MAX(9, 7) = 9.
        (
            json!({ "aggregation_type": "MAX", "aggregation_key": "v" }),
            Value::Null,
            flat(1),
            ["9", "7"],
            "9",
        ),
        // One user on both days: 1.
        (
            json!({ "aggregation_type": "UNIQUE", "aggregation_key": "v" }),
            Value::Null,
            flat(1),
            ["u", "u"],
            "1",
        ),
    ];
    for update in [json!({ "name": "Renamed" }), json!({ "tags": ["t"] })] {
        for (metric, product, rate, values, total) in cases.clone() {
            let app = TestApp::new("2024-11-25T00:00:00Z").await;
            let s = Setup::new(&app, metric, product, rate).await;
            let mut body =
                json!({ "product_id": s.product, "starting_at": "2024-11-16T00:00:00Z" });
            merge(&mut body, update.clone());
            app.post("/v1/contract-pricing/products/update", body)
                .await
                .expect(StatusCode::OK);
            s.events(
                &app,
                &[
                    ("2024-11-10T00:00:00Z", json!({ "v": values[0] })),
                    ("2024-11-20T00:00:00Z", json!({ "v": values[1] })),
                ],
            )
            .await;
            let inv = s.november(&app).await;
            assert_eq!(num(&inv["total"]), total, "{update} {inv}");
            let name = if update.get("name").is_some() {
                "Renamed"
            } else {
                "Usage"
            };
            for line in inv["line_items"].as_array().expect("lines") {
                assert_eq!(line["name"], name, "{inv}");
                assert_eq!(line["starting_at"], START);
            }
        }
    }
}

/// Issue 19 item 3: presentation groups never change a total. Users a and b with 100 each over
/// `[{10, size 100}, {1}]` bill 1000 + 100 (tiers fill over the bucket, a then b); a UNIQUE
/// value seen by two users counts once.
#[tokio::test]
async fn presentation_groups_never_change_a_total() {
    let app = TestApp::new("2024-11-25T00:00:00Z").await;
    let s = Setup::new(
        &app,
        json!({ "aggregation_type": "SUM", "aggregation_key": "v", "group_keys": [["user"]] }),
        json!({ "presentation_group_key": ["user"] }),
        json!({ "rate_type": "TIERED", "tiers": [{ "price": 10, "size": 100 }, { "price": 1 }] }),
    )
    .await;
    s.events(
        &app,
        &[
            ("2024-11-10T00:00:00Z", json!({ "v": "100", "user": "b" })),
            ("2024-11-11T00:00:00Z", json!({ "v": "100", "user": "a" })),
        ],
    )
    .await;
    let inv = s.november(&app).await;
    assert_eq!(num(&inv["total"]), "1100", "{inv}");
    let got: Vec<(Value, String, String)> = inv["line_items"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|l| {
            (
                l["presentation_group_values"].clone(),
                num(&l["quantity"]),
                num(&l["total"]),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (json!({ "user": "a" }), "100".into(), "1000".into()),
            (json!({ "user": "b" }), "100".into(), "100".into()),
        ]
    );

    let app = TestApp::new("2024-11-25T00:00:00Z").await;
    let s = Setup::new(
        &app,
        json!({ "aggregation_type": "UNIQUE", "aggregation_key": "v", "group_keys": [["user"]] }),
        json!({ "presentation_group_key": ["user"] }),
        json!({ "rate_type": "FLAT", "price": 5 }),
    )
    .await;
    s.events(
        &app,
        &[
            ("2024-11-10T00:00:00Z", json!({ "v": "x", "user": "a" })),
            ("2024-11-10T00:00:00Z", json!({ "v": "x", "user": "b" })),
        ],
    )
    .await;
    assert_eq!(num(&s.november(&app).await["total"]), "5");
}
