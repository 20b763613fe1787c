//! Composite products through the HTTP API (issue 12 item 3): a COMPOSITE product with a
//! PERCENTAGE rate charges its fraction of the spend of the products it names (by id or by any
//! of its tags) on the same invoice, with hand-computed numbers, on both storage backends; and
//! the 400s of a bad composite configuration, each naming its field, storing nothing.
//!
//! Setup: one SUM(`n`) metric per product (event types `a`, `b`, `c`); products `A` (tag `ai`)
//! at FLAT 2, `B` (tag `gpu`) at FLAT 3, `C` (tag `ai`) at FLAT 0; customer `acme`; a monthly
//! contract from 2024-11-01; the clock on 11-25.

use axum::http::StatusCode;
use serde_json::{json, Value};
use tally_central::store::Env;

use crate::store_conformance::Backend;
use crate::support::*;

const SBX: Env = Env::Sandbox;
const START: &str = "2024-11-01T00:00:00Z";
const NOW: &str = "2024-11-25T00:00:00Z";

struct Setup {
    card: String,
    /// A, B, C.
    products: Vec<String>,
    customer: String,
}

impl Setup {
    async fn new(app: &TestApp) -> Setup {
        let card = app.rate_card(SBX, "card").await;
        let mut products = Vec::new();
        for (name, tag, price) in [("A", "ai", "2"), ("B", "gpu", "3"), ("C", "ai", "0")] {
            let event_type = name.to_lowercase();
            let metric = app
                .metric(
                    SBX,
                    json!({ "name": event_type, "aggregation_type": "SUM", "aggregation_key": "n",
                            "event_type_filter": { "in_values": [event_type] } }),
                )
                .await;
            let product = app
                .usage_product(SBX, name, &metric, json!({ "tags": [tag] }))
                .await;
            app.flat_rate(SBX, &card, &product, price, START).await;
            products.push(product);
        }
        let customer = app.customer(SBX, "acme", &["acme"]).await;
        Setup {
            card,
            products,
            customer,
        }
    }

    /// The setup and a COMPOSITE product over the `ai` products (no rate).
    async fn with_composite(app: &TestApp) -> (Setup, String) {
        let s = Setup::new(app).await;
        let support = s
            .composite(app, json!({ "composite_tags": ["ai"] }))
            .await
            .id();
        (s, support)
    }

    /// Ingests one event of each `(event type, n)` for acme on 11-10.
    async fn ingest(&self, app: &TestApp, usage: &[(&str, &str)]) {
        let events: Vec<Value> = usage
            .iter()
            .map(|(t, n)| event(t, "acme", t, "2024-11-10T00:00:00Z", json!({ "n": n })))
            .collect();
        let accepted = app.ingest(SBX, Value::Array(events)).await["accepted"].clone();
        assert_eq!(accepted, usage.len());
    }

    /// Prices `composite` at 10% on the card.
    async fn ten_percent(&self, app: &TestApp, composite: &str) {
        let rate = json!({ "rate_type": "PERCENTAGE", "price": 0.1 });
        self.add_rate(app, composite, rate)
            .await
            .expect(StatusCode::OK);
    }

    /// A COMPOSITE product with these extra fields; the response.
    async fn composite(&self, app: &TestApp, extra: Value) -> Resp {
        let mut body = json!({ "name": "Support", "type": "COMPOSITE" });
        merge(&mut body, extra);
        app.post("/v1/contract-pricing/products/create", body).await
    }

    async fn add_rate(&self, app: &TestApp, product: &str, rate: Value) -> Resp {
        let mut body = json!({
            "rate_card_id": self.card, "product_id": product, "starting_at": START,
            "entitled": true,
        });
        merge(&mut body, rate);
        app.post("/v1/contract-pricing/rate-cards/addRate", body)
            .await
    }

    async fn product_count(&self, app: &TestApp) -> usize {
        let data = app
            .post("/v1/contract-pricing/products/list", json!({}))
            .await
            .data();
        data.as_array().map_or(0, Vec::len)
    }

    async fn rate_count(&self, app: &TestApp) -> usize {
        let data = app
            .post(
                "/v1/contract-pricing/rate-cards/getRates",
                json!({ "rate_card_id": self.card, "at": NOW }),
            )
            .await
            .data();
        data.as_array().map_or(0, Vec::len)
    }
}

/// A: 100 × 2 = 200; B: 50 × 3 = 150; C: 30 × 0 = 0 (free, and left out). Support is 10% of
/// A (by id) and of the `gpu` products (B): 10% × 350 = 35. Total 385.
async fn ten_percent_of_the_named_spend(backend: Backend) {
    let app = TestApp::on_backend(NOW, backend).await;
    let s = Setup::new(&app).await;
    let support = s
        .composite(
            &app,
            json!({ "composite_product_ids": [s.products[0]], "composite_tags": ["gpu"],
                    "exclude_free_usage": true, "tags": ["support"] }),
        )
        .await
        .id();
    let rate = s
        .add_rate(
            &app,
            &support,
            json!({ "rate_type": "percentage", "price": 0.1 }),
        )
        .await
        .data();
    assert_eq!(rate["rate_type"], "PERCENTAGE");
    assert_eq!(num(&rate["price"]), "0.1");
    let product = app
        .post(
            "/v1/contract-pricing/products/get",
            json!({ "id": support }),
        )
        .await
        .data();
    assert_eq!(product["type"], "COMPOSITE");
    assert_eq!(
        product["current"]["composite_product_ids"],
        json!([s.products[0]])
    );
    assert_eq!(product["current"]["composite_tags"], json!(["gpu"]));
    assert_eq!(product["current"]["exclude_free_usage"], true);
    app.contract(SBX, &s.customer, &s.card, START).await;
    s.ingest(&app, &[("a", "100"), ("b", "50"), ("c", "30")])
        .await;
    let inv = app.invoice_at(SBX, &s.customer, START).await;
    let (lines, total) = line_summary(&inv);
    let amounts: Vec<[&str; 3]> = lines
        .iter()
        .map(|l| [l[0].as_str(), l[1].as_str(), l[2].as_str()])
        .collect();
    assert_eq!(
        amounts,
        [
            ["100", "2", "200"],
            ["50", "3", "150"],
            ["30", "0", "0"],
            ["350", "0.1", "35"],
        ]
    );
    assert_eq!(total, "385");
    let line = &inv["line_items"][3];
    assert_eq!(line["name"], "Support");
    assert_eq!(line["type"], "usage");
    assert_eq!(line["product_id"], support.as_str());
    assert_eq!(line["product_type"], "CompositeProductListItem");
    assert_eq!(line["product_tags"], json!(["support"]));
    assert_eq!(inv["line_items"][0]["product_type"], "UsageProductListItem");
}

/// A MULTIPLIER override halves the percentage: 5% of 350 = 17.5.
async fn a_multiplier_scales_the_percentage(backend: Backend) {
    let app = TestApp::on_backend(NOW, backend).await;
    let s = Setup::new(&app).await;
    let support = s
        .composite(&app, json!({ "composite_tags": ["ai", "gpu"] }))
        .await
        .id();
    s.ten_percent(&app, &support).await;
    app.post(
        "/v1/contracts/create",
        json!({ "customer_id": s.customer, "rate_card_id": s.card, "starting_at": START,
                "overrides": [{ "starting_at": START, "product_id": support,
                                "type": "MULTIPLIER", "multiplier": 0.5 }] }),
    )
    .await
    .expect(StatusCode::OK);
    s.ingest(&app, &[("a", "100"), ("b", "50")]).await;
    let inv = app.invoice_at(SBX, &s.customer, START).await;
    let (lines, total) = line_summary(&inv);
    // A, B, C (no usage: an entitled zero line), Support.
    assert_eq!(lines[3][..3], ["350", "0.05", "17.5"]);
    assert_eq!(total, "367.5");
}

/// `products/update` moves Support from the `ai` products to B from 11-16: the configuration in
/// effect at the period's end prices November (10% of B's 150 = 15). getContractRateSchedule
/// shows the percentage, listed and halved by a multiplier.
#[tokio::test]
async fn a_composite_update_and_the_contract_rate_schedule() {
    let app = TestApp::new(NOW).await;
    let (s, support) = Setup::with_composite(&app).await;
    s.ten_percent(&app, &support).await;
    app.post(
        "/v1/contract-pricing/products/update",
        json!({ "product_id": support, "starting_at": "2024-11-16T00:00:00Z",
                "composite_tags": [], "composite_product_ids": [s.products[1]] }),
    )
    .await
    .expect(StatusCode::OK);
    let contract = app
        .post(
            "/v1/contracts/create",
            json!({ "customer_id": s.customer, "rate_card_id": s.card, "starting_at": START,
                    "overrides": [{ "starting_at": START, "product_id": support,
                                    "type": "MULTIPLIER", "multiplier": 0.5 }] }),
        )
        .await
        .id();
    s.ingest(&app, &[("a", "100"), ("b", "50")]).await;
    let inv = app.invoice_at(SBX, &s.customer, START).await;
    let (lines, total) = line_summary(&inv);
    // A 200, B 150, C 0, Support 5% of B's 150.
    assert_eq!(lines[3][..3], ["150", "0.05", "7.5"]);
    assert_eq!(total, "357.5");
    let schedule = app
        .post(
            "/v1/contracts/getContractRateSchedule",
            json!({ "customer_id": s.customer, "contract_id": contract, "at": NOW }),
        )
        .await
        .data();
    let item = schedule
        .as_array()
        .expect("items")
        .iter()
        .find(|i| i["product_id"] == support.as_str())
        .expect("the composite's rate")
        .clone();
    assert_eq!(item["list_rate"]["rate_type"], "PERCENTAGE");
    assert_eq!(num(&item["list_rate"]["price"]), "0.1");
    assert_eq!(item["override_rate"]["rate_type"], "PERCENTAGE");
    assert_eq!(num(&item["override_rate"]["price"]), "0.05");
}

both_backends!(
    ten_percent_of_the_named_spend,
    a_multiplier_scales_the_percentage
);

#[tokio::test]
async fn bad_composite_products_are_refused_and_nothing_is_stored() {
    let app = TestApp::new(NOW).await;
    let (s, support) = Setup::with_composite(&app).await;
    let before = s.product_count(&app).await;
    let missing = "00000000-0000-4000-8000-000000000000";
    let cases = [
        (
            json!({ "composite_product_ids": [s.products[0], missing] }),
            format!("composite_product_ids[1]: product {missing} not found"),
        ),
        (
            json!({ "composite_product_ids": [support] }),
            format!(
                "composite_product_ids[0]: {support} is a COMPOSITE product; a composite takes \
                 a percentage of other products' spend, never of a composite's"
            ),
        ),
        (
            json!({}),
            "composite_product_ids: a COMPOSITE product needs composite_product_ids or \
             composite_tags (the products whose spend its percentage is of)"
                .to_string(),
        ),
        (
            json!({ "composite_tags": [""] }),
            "composite_tags[0] must not be empty".to_string(),
        ),
        (
            json!({ "composite_tags": ["ai"], "include_composite_spend": true }),
            "include_composite_spend: not supported; a composite never includes the spend of \
             other COMPOSITE products"
                .to_string(),
        ),
    ];
    for (extra, message) in cases {
        let r = s.composite(&app, extra).await;
        let r = r.client_error(StatusCode::BAD_REQUEST);
        assert_eq!(r.message(), message);
    }
    // Composite fields on a product of another type.
    let metric = app
        .metric(
            SBX,
            json!({ "name": "x", "aggregation_type": "COUNT",
                    "event_type_filter": { "in_values": ["x"] } }),
        )
        .await;
    let r = app
        .post(
            "/v1/contract-pricing/products/create",
            json!({ "name": "X", "type": "USAGE", "billable_metric_id": metric,
                    "composite_tags": ["ai"] }),
        )
        .await
        .client_error(StatusCode::BAD_REQUEST);
    assert_eq!(
        r.message(),
        "composite_tags: only COMPOSITE products take it"
    );
    assert_eq!(s.product_count(&app).await, before);
    // An update naming a composite (itself) is refused and leaves no update behind.
    let r = app
        .post(
            "/v1/contract-pricing/products/update",
            json!({ "product_id": support, "starting_at": START,
                    "composite_product_ids": [support] }),
        )
        .await
        .client_error(StatusCode::BAD_REQUEST);
    assert!(
        r.message().starts_with("composite_product_ids[0]: "),
        "{}",
        r.message()
    );
    let product = app
        .post(
            "/v1/contract-pricing/products/get",
            json!({ "id": support }),
        )
        .await
        .data();
    assert_eq!(product["updates"], json!([]));
}

#[tokio::test]
async fn percentage_rates_belong_to_composite_products_and_bad_ones_store_nothing() {
    let app = TestApp::new(NOW).await;
    let (s, support) = Setup::with_composite(&app).await;
    let before = s.rate_count(&app).await;
    let cases = [
        (
            s.products[0].clone(),
            json!({ "rate_type": "PERCENTAGE", "price": 0.1 }),
            "rate_type PERCENTAGE is only for COMPOSITE products (it prices their spend)",
        ),
        (
            support.clone(),
            json!({ "rate_type": "FLAT", "price": 10 }),
            "rate_type FLAT is not allowed on a COMPOSITE product; use PERCENTAGE",
        ),
        (
            support.clone(),
            json!({ "rate_type": "PERCENTAGE", "price": 1.5 }),
            "price of a PERCENTAGE rate is a fraction between 0 and 1 (0.1 = 10%)",
        ),
        (
            support.clone(),
            json!({ "rate_type": "PERCENTAGE" }),
            "price is required for PERCENTAGE rates (a fraction: 0.1 = 10%)",
        ),
        (
            support.clone(),
            json!({ "rate_type": "PERCENTAGE", "price": 0.1,
                    "commit_rate": { "rate_type": "FLAT", "price": 1 } }),
            "commit_rate: not allowed on PERCENTAGE rates",
        ),
    ];
    for (product, rate, message) in cases {
        let r = s.add_rate(&app, &product, rate).await;
        assert_eq!(r.client_error(StatusCode::BAD_REQUEST).message(), message);
    }
    assert_eq!(s.rate_count(&app).await, before);
    // An OVERWRITE override of a composite prices units it has none of: refused, no contract.
    let r = app
        .post(
            "/v1/contracts/create",
            json!({ "customer_id": s.customer, "rate_card_id": s.card, "starting_at": START,
                    "overrides": [{ "starting_at": START, "product_id": support,
                                    "type": "OVERWRITE",
                                    "overwrite_rate": { "rate_type": "FLAT", "price": 1 } }] }),
        )
        .await
        .client_error(StatusCode::BAD_REQUEST);
    assert_eq!(
        r.message(),
        "overrides[0].product_id: OVERWRITE overrides do not apply to COMPOSITE products (a \
         percentage has no units); use a MULTIPLIER override"
    );
    let contracts = app
        .post("/v1/contracts/list", json!({ "customer_id": s.customer }))
        .await
        .data();
    assert_eq!(contracts, json!([]));
}
