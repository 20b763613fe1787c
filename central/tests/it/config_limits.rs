//! Named configuration limits: group keys per metric, tiers per rate, rates per card, aliases per
//! customer, and prices too large to ever rate. At the limit is accepted; one past it is a 400
//! naming the limit, and changes nothing.

use axum::http::StatusCode;
use serde_json::{json, Value};
use tally_central::service::{customers, metrics, rate_cards};
use tally_central::store::Env;

use crate::support::*;

const NOW: &str = "2024-10-15T12:00:00Z";
const FROM: &str = "2024-10-01T00:00:00Z";
const SBX: Env = Env::Sandbox;

fn metric_with_keys(n: usize) -> Value {
    let keys: Vec<Vec<String>> = (0..n).map(|i| vec![format!("k{i}")]).collect();
    json!({ "name": "m", "aggregation_type": "COUNT", "group_keys": keys })
}

#[tokio::test]
async fn group_keys_per_metric() {
    let app = TestApp::new(NOW).await;
    app.metric(SBX, metric_with_keys(metrics::MAX_GROUP_KEYS))
        .await;
    let r = app
        .post(
            "/v1/billable-metrics/create",
            metric_with_keys(metrics::MAX_GROUP_KEYS + 1),
        )
        .await
        .client_error(StatusCode::BAD_REQUEST);
    assert!(r.message().contains("group_keys"), "{}", r.message());
    let wide: Vec<String> = (0..=metrics::MAX_GROUP_KEY_PROPERTIES)
        .map(|i| format!("p{i}"))
        .collect();
    app.post(
        "/v1/billable-metrics/create",
        json!({ "name": "m", "aggregation_type": "COUNT", "group_keys": [wide] }),
    )
    .await
    .client_error(StatusCode::BAD_REQUEST);
    let listed = app.get("/v1/billable-metrics").await.data();
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
}

async fn product_and_card(app: &TestApp) -> (String, String) {
    let metric = app
        .metric(SBX, json!({ "name": "calls", "aggregation_type": "COUNT" }))
        .await;
    let product = app.usage_product(SBX, "calls", &metric, Value::Null).await;
    (product, app.rate_card(SBX, "card").await)
}

fn tiered(card: &str, product: &str, tiers: usize) -> Value {
    let mut ts: Vec<Value> = (1..tiers)
        .map(|_| json!({ "price": 1, "size": 10 }))
        .collect();
    ts.push(json!({ "price": 1 }));
    json!({
        "rate_card_id": card, "product_id": product, "starting_at": FROM,
        "entitled": true, "rate_type": "TIERED", "tiers": ts,
    })
}

#[tokio::test]
async fn tiers_per_rate_and_price_magnitude() {
    let app = TestApp::new(NOW).await;
    let (product, card) = product_and_card(&app).await;
    let add = "/v1/contract-pricing/rate-cards/addRate";
    app.post(add, tiered(&card, &product, rate_cards::MAX_TIERS_PER_RATE))
        .await
        .expect(StatusCode::OK);
    let r = app
        .post(
            add,
            tiered(&card, &product, rate_cards::MAX_TIERS_PER_RATE + 1),
        )
        .await
        .client_error(StatusCode::BAD_REQUEST);
    assert!(r.message().contains("tiers"), "{}", r.message());
    // The price that made every job pass stop (issue 19 item 9) is refused when configured.
    let flat = |price: &str| {
        json!({
            "rate_card_id": card, "product_id": product, "starting_at": "2024-10-02T00:00:00Z",
            "entitled": true, "rate_type": "FLAT", "price": dec(price),
        })
    };
    let r = app
        .post(add, flat("79228162514264337593543950335"))
        .await
        .client_error(StatusCode::BAD_REQUEST);
    assert!(r.message().contains("price"), "{}", r.message());
    app.post(add, flat("-1000000000000.5"))
        .await
        .client_error(StatusCode::BAD_REQUEST);
    app.post(add, flat("1000000000000"))
        .await
        .expect(StatusCode::OK);
    let rates = app
        .post(
            "/v1/contract-pricing/rate-cards/getRates",
            json!({ "rate_card_id": card, "at": FROM }),
        )
        .await;
    assert_eq!(rates.status, StatusCode::OK, "{}", rates.body);
}

#[tokio::test]
async fn rates_per_card() {
    let app = TestApp::new(NOW).await;
    let (product, card) = product_and_card(&app).await;
    let rate = |i: usize| {
        json!({
            "product_id": product, "entitled": true, "rate_type": "FLAT", "price": 1,
            "starting_at": ts(ms(FROM) + i as i64 * HOUR_MS),
        })
    };
    let max = rate_cards::MAX_RATES_PER_CARD;
    for chunk in (0..max).collect::<Vec<_>>().chunks(1_000) {
        let rates: Vec<Value> = chunk.iter().map(|i| rate(*i)).collect();
        app.post(
            "/v1/contract-pricing/rate-cards/addRates",
            json!({ "rate_card_id": card, "rates": rates }),
        )
        .await
        .expect(StatusCode::OK);
    }
    let mut one_more = rate(max);
    one_more["rate_card_id"] = json!(card);
    let r = app
        .post("/v1/contract-pricing/rate-cards/addRate", one_more)
        .await
        .client_error(StatusCode::BAD_REQUEST);
    assert!(r.message().contains("at most"), "{}", r.message());
}

#[tokio::test]
async fn aliases_per_customer() {
    let app = TestApp::new(NOW).await;
    let aliases = |n: usize| (0..n).map(|i| format!("a{i}")).collect::<Vec<_>>();
    app.post(
        "/v1/customers",
        json!({ "name": "max", "ingest_aliases": aliases(customers::MAX_ALIASES) }),
    )
    .await
    .expect(StatusCode::OK);
    app.post(
        "/v1/customers",
        json!({ "name": "over", "ingest_aliases": aliases(customers::MAX_ALIASES + 1) }),
    )
    .await
    .client_error(StatusCode::BAD_REQUEST);
}
