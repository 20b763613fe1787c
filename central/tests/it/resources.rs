//! Configuration resources: billable metrics, products, rate cards and rates, customers, contracts.

use axum::http::StatusCode;
use serde_json::{json, Value};
use tally_central::store::Env;

use crate::support::*;

const NOW: &str = "2024-10-15T12:00:00Z";
const SBX: Env = Env::Sandbox;

fn ids(list: &Value) -> Vec<String> {
    list.as_array()
        .expect("list")
        .iter()
        .map(|v| text(v, "id").to_string())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Billable metrics

#[tokio::test]
async fn billable_metric_create_get_list_archive() {
    let app = TestApp::new(NOW).await;
    let a = app
        .metric(
            SBX,
            json!({
                "name": "Tokens", "aggregation_type": "SUM", "aggregation_key": "tokens",
                "event_type_filter": { "in_values": ["llm"] },
                "property_filters": [{ "name": "tokens", "exists": true }],
                "group_keys": [["model"], ["user_id"]],
                "custom_fields": { "team": "ai" },
            }),
        )
        .await;
    let b = app
        .metric(
            SBX,
            json!({ "name": "Calls", "aggregation_type": "COUNT", "aggregation_key": "ignored" }),
        )
        .await;
    let got = app.get(&format!("/v1/billable-metrics/{a}")).await.data();
    assert_eq!(got["id"], a.as_str());
    assert_eq!(got["name"], "Tokens");
    assert_eq!(got["aggregation_type"], "SUM");
    assert_eq!(got["aggregation_key"], "tokens");
    assert_eq!(got["event_type_filter"], json!({ "in_values": ["llm"] }));
    assert_eq!(got["group_keys"], json!([["model"], ["user_id"]]));
    assert_eq!(got["custom_fields"], json!({ "team": "ai" }));
    assert!(got.get("archived_at").is_none());
    // COUNT drops its aggregation key.
    let got_b = app.get(&format!("/v1/billable-metrics/{b}")).await.data();
    assert!(got_b.get("aggregation_key").is_none(), "{got_b}");

    assert_eq!(
        ids(&app.get("/v1/billable-metrics").await.data()),
        vec![a.clone(), b.clone()]
    );

    let archived = app
        .post("/v1/billable-metrics/archive", json!({ "id": a }))
        .await
        .id();
    assert_eq!(archived, a);
    assert_eq!(
        ids(&app.get("/v1/billable-metrics").await.data()),
        vec![b.clone()]
    );
    assert_eq!(
        ids(&app
            .get("/v1/billable-metrics?include_archived=false")
            .await
            .data()),
        vec![b.clone()]
    );
    assert_eq!(
        ids(&app
            .get("/v1/billable-metrics?include_archived=true")
            .await
            .data()),
        vec![a.clone(), b.clone()]
    );
    let got = app.get(&format!("/v1/billable-metrics/{a}")).await.data();
    assert_eq!(got["archived_at"], NOW);
    // An archived metric cannot be attached to a new product.
    app.post(
        "/v1/contract-pricing/products/create",
        json!({ "name": "late", "type": "USAGE", "billable_metric_id": a }),
    )
    .await
    .client_error(StatusCode::BAD_REQUEST);
    // Archiving again is harmless and keeps the first archive time.
    app.set_now("2024-10-16T00:00:00Z");
    app.post("/v1/billable-metrics/archive", json!({ "id": a }))
        .await
        .expect(StatusCode::OK);
    let got = app.get(&format!("/v1/billable-metrics/{a}")).await.data();
    assert_eq!(got["archived_at"], NOW);

    app.get("/v1/billable-metrics/00000000-0000-0000-0000-000000000000")
        .await
        .client_error(StatusCode::NOT_FOUND);
    app.post(
        "/v1/billable-metrics/archive",
        json!({ "id": "00000000-0000-0000-0000-000000000000" }),
    )
    .await
    .client_error(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn billable_metric_validation() {
    let app = TestApp::new(NOW).await;
    let bad = [
        json!({ "name": "s", "aggregation_type": "SUM" }),
        json!({ "name": "", "aggregation_type": "COUNT" }),
        json!({ "name": "n" }),
        json!({ "name": "q", "sql": "select count(*) from events" }),
        json!({ "name": "g", "aggregation_type": "COUNT", "group_keys": [[]] }),
        json!({ "name": "f", "aggregation_type": "COUNT", "event_type_filter": { "in_values": [] } }),
    ];
    for body in bad {
        app.post("/v1/billable-metrics/create", body.clone())
            .await
            .client_error(StatusCode::BAD_REQUEST);
    }
    assert_eq!(
        app.get("/v1/billable-metrics?include_archived=true")
            .await
            .data(),
        json!([])
    );
}

// ---------------------------------------------------------------------------------------------
// Products

#[tokio::test]
async fn product_create_get_list() {
    let app = TestApp::new(NOW).await;
    let metric = app
        .metric(
            SBX,
            json!({ "name": "t", "aggregation_type": "SUM", "aggregation_key": "n", "group_keys": [["region"]] }),
        )
        .await;
    let usage = app
        .usage_product(
            SBX,
            "Tokens",
            &metric,
            json!({
                "pricing_group_key": ["region"], "tags": ["ai"],
                "quantity_conversion": { "conversion_factor": 1000, "operation": "DIVIDE" },
                "custom_fields": { "sku": "T-1" },
            }),
        )
        .await;
    let fixed = app
        .post(
            "/v1/contract-pricing/products/create",
            json!({ "name": "Setup fee", "type": "FIXED" }),
        )
        .await
        .id();
    let got = app
        .post("/v1/contract-pricing/products/get", json!({ "id": usage }))
        .await
        .data();
    assert_eq!(got["type"], "USAGE");
    assert_eq!(got["current"]["name"], "Tokens");
    assert_eq!(got["initial"]["name"], "Tokens");
    assert_eq!(got["current"]["billable_metric_id"], metric.as_str());
    assert_eq!(got["current"]["pricing_group_key"], json!(["region"]));
    assert_eq!(got["current"]["tags"], json!(["ai"]));
    assert_eq!(
        num(&got["current"]["quantity_conversion"]["conversion_factor"]),
        "1000"
    );
    assert_eq!(got["current"]["created_at"], NOW);
    assert_eq!(got["updates"], json!([]));
    assert_eq!(got["custom_fields"], json!({ "sku": "T-1" }));

    let list = app
        .post("/v1/contract-pricing/products/list", json!({}))
        .await
        .data();
    assert_eq!(ids(&list), vec![usage.clone(), fixed.clone()]);

    // USAGE products need an existing metric.
    app.post(
        "/v1/contract-pricing/products/create",
        json!({ "name": "x", "type": "USAGE" }),
    )
    .await
    .client_error(StatusCode::BAD_REQUEST);
    app.post(
        "/v1/contract-pricing/products/create",
        json!({ "name": "x", "type": "USAGE", "billable_metric_id": "nope" }),
    )
    .await
    .client_error(StatusCode::NOT_FOUND);
    app.post("/v1/contract-pricing/products/get", json!({ "id": "nope" }))
        .await
        .client_error(StatusCode::NOT_FOUND);

    // Archived products leave the default list but stay under ARCHIVED and ALL.
    app.post(
        "/v1/contract-pricing/products/archive",
        json!({ "product_id": fixed }),
    )
    .await
    .expect(StatusCode::OK);
    let list = app
        .post("/v1/contract-pricing/products/list", json!({}))
        .await
        .data();
    assert_eq!(ids(&list), vec![usage.clone()]);
    let list = app
        .post(
            "/v1/contract-pricing/products/list",
            json!({ "archive_filter": "archived" }),
        )
        .await
        .data();
    assert_eq!(ids(&list), vec![fixed.clone()]);
    let list = app
        .post(
            "/v1/contract-pricing/products/list",
            json!({ "archive_filter": "ALL" }),
        )
        .await
        .data();
    assert_eq!(ids(&list), vec![usage, fixed]);
}

#[tokio::test]
async fn product_group_keys_must_come_from_the_metric() {
    let app = TestApp::new(NOW).await;
    let metric = app
        .metric(
            SBX,
            json!({
                "name": "t", "aggregation_type": "SUM", "aggregation_key": "n",
                "group_keys": [["region"], ["model", "user_id"]],
            }),
        )
        .await;
    for extra in [
        json!({ "pricing_group_key": ["tier"] }),
        json!({ "presentation_group_key": ["tier"] }),
        json!({ "pricing_group_key": ["region"], "presentation_group_key": ["nope"] }),
    ] {
        let mut body = json!({ "name": "p", "type": "USAGE", "billable_metric_id": metric });
        merge(&mut body, extra);
        let r = app
            .post("/v1/contract-pricing/products/create", body)
            .await
            .client_error(StatusCode::BAD_REQUEST);
        assert!(r.message().contains("group key"), "{}", r.message());
    }
    assert_eq!(
        app.post(
            "/v1/contract-pricing/products/list",
            json!({ "archive_filter": "ALL" })
        )
        .await
        .data(),
        json!([])
    );
    app.usage_product(
        SBX,
        "ok",
        &metric,
        json!({ "pricing_group_key": ["model"], "presentation_group_key": ["user_id", "region"] }),
    )
    .await;
}

#[tokio::test]
async fn product_update_is_time_versioned() {
    let app = TestApp::new(NOW).await;
    let metric = app
        .metric(
            SBX,
            json!({ "name": "t", "aggregation_type": "COUNT", "group_keys": [["region"]] }),
        )
        .await;
    let product = app
        .usage_product(SBX, "Old name", &metric, json!({ "tags": ["a"] }))
        .await;
    let get = || async {
        app.post(
            "/v1/contract-pricing/products/get",
            json!({ "id": product }),
        )
        .await
        .data()
    };
    let r = app
        .post(
            "/v1/contract-pricing/products/update",
            json!({
                "product_id": product, "starting_at": "2024-10-15T14:00:00Z",
                "name": "New name", "pricing_group_key": ["region"],
            }),
        )
        .await
        .id();
    assert_eq!(r, product);
    let p = get().await;
    assert_eq!(p["current"]["name"], "Old name");
    assert!(p["current"].get("pricing_group_key").is_none(), "{p}");
    assert_eq!(p["initial"]["name"], "Old name");
    let updates = p["updates"].as_array().expect("updates");
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0]["name"], "New name");
    assert_eq!(updates[0]["starting_at"], "2024-10-15T14:00:00Z");

    app.set_now("2024-10-15T13:59:59.999Z");
    assert_eq!(get().await["current"]["name"], "Old name");
    app.set_now("2024-10-15T14:00:00Z");
    let p = get().await;
    assert_eq!(p["current"]["name"], "New name");
    assert_eq!(p["current"]["pricing_group_key"], json!(["region"]));
    // Fields the update left out keep their value.
    assert_eq!(p["current"]["tags"], json!(["a"]));
    assert_eq!(p["initial"]["name"], "Old name");
    let list = app
        .post("/v1/contract-pricing/products/list", json!({}))
        .await
        .data();
    assert_eq!(list[0]["current"]["name"], "New name");
}

#[tokio::test]
async fn product_update_validation_changes_nothing() {
    let app = TestApp::new(NOW).await;
    let metric = app
        .metric(
            SBX,
            json!({ "name": "t", "aggregation_type": "COUNT", "group_keys": [["region"]] }),
        )
        .await;
    let product = app.usage_product(SBX, "P", &metric, Value::Null).await;
    let bad = [
        json!({ "product_id": product, "starting_at": "2024-10-15T14:30:00Z", "name": "x" }),
        json!({ "product_id": product, "starting_at": "2024-10-15T14:00:00.001Z", "name": "x" }),
        json!({ "product_id": product, "starting_at": "2024-10-15T14:00:00Z", "pricing_group_key": ["model"] }),
        json!({ "product_id": product, "starting_at": "2024-10-15T14:00:00Z", "presentation_group_key": ["model"] }),
        json!({ "product_id": product, "starting_at": "2024-10-15T14:00:00Z", "name": "" }),
        json!({ "product_id": product, "name": "no start" }),
    ];
    for body in bad {
        app.post("/v1/contract-pricing/products/update", body.clone())
            .await
            .client_error(StatusCode::BAD_REQUEST);
    }
    app.post(
        "/v1/contract-pricing/products/update",
        json!({ "product_id": "nope", "starting_at": "2024-10-15T14:00:00Z", "name": "x" }),
    )
    .await
    .client_error(StatusCode::NOT_FOUND);
    let p = app
        .post(
            "/v1/contract-pricing/products/get",
            json!({ "id": product }),
        )
        .await
        .data();
    assert_eq!(p["updates"], json!([]));
    assert_eq!(p["current"]["name"], "P");
}

// ---------------------------------------------------------------------------------------------
// Rate cards and rates

#[tokio::test]
async fn rate_card_create_get_list_update_archive() {
    let app = TestApp::new(NOW).await;
    let a = app
        .post(
            "/v1/contract-pricing/rate-cards/create",
            json!({
                "name": "Standard", "description": "list prices",
                "aliases": [{ "name": "std" }],
                "fiat_credit_type_id": "2714e483-4ff1-48e4-9e25-ac732e8f24f2",
                "custom_fields": { "k": "v" },
            }),
        )
        .await
        .id();
    let b = app.rate_card(SBX, "Enterprise").await;
    let got = app
        .post("/v1/contract-pricing/rate-cards/get", json!({ "id": a }))
        .await
        .data();
    assert_eq!(got["name"], "Standard");
    assert_eq!(got["description"], "list prices");
    assert_eq!(got["aliases"], json!([{ "name": "std" }]));
    assert_eq!(
        got["fiat_credit_type"],
        json!({ "id": "2714e483-4ff1-48e4-9e25-ac732e8f24f2", "name": "USD (cents)" })
    );
    assert_eq!(got["created_at"], NOW);
    assert_eq!(got["custom_fields"], json!({ "k": "v" }));
    let list = app
        .post("/v1/contract-pricing/rate-cards/list", json!({}))
        .await
        .data();
    assert_eq!(ids(&list), vec![a.clone(), b.clone()]);

    let r = app
        .post(
            "/v1/contract-pricing/rate-cards/update",
            json!({ "rate_card_id": a, "name": "Standard v2", "aliases": [{ "name": "std2" }] }),
        )
        .await
        .id();
    assert_eq!(r, a);
    let got = app
        .post("/v1/contract-pricing/rate-cards/get", json!({ "id": a }))
        .await
        .data();
    assert_eq!(got["name"], "Standard v2");
    assert_eq!(got["description"], "list prices");
    assert_eq!(got["aliases"], json!([{ "name": "std2" }]));

    app.post(
        "/v1/contract-pricing/rate-cards/update",
        json!({ "rate_card_id": "nope", "name": "x" }),
    )
    .await
    .client_error(StatusCode::NOT_FOUND);
    app.post(
        "/v1/contract-pricing/rate-cards/create",
        json!({ "name": "eur", "fiat_credit_type_id": "not-usd" }),
    )
    .await
    .client_error(StatusCode::BAD_REQUEST);

    app.post(
        "/v1/contract-pricing/rate-cards/archive",
        json!({ "id": b }),
    )
    .await
    .expect(StatusCode::OK);
    let list = app
        .post("/v1/contract-pricing/rate-cards/list", json!({}))
        .await
        .data();
    assert_eq!(ids(&list), vec![a.clone()]);
    let got = app
        .post("/v1/contract-pricing/rate-cards/get", json!({ "id": b }))
        .await
        .data();
    assert_eq!(got["archived_at"], NOW);
}

async fn plain_product(app: &TestApp, name: &str) -> String {
    let metric = app
        .metric(
            SBX,
            json!({ "name": name, "aggregation_type": "COUNT", "group_keys": [["region"]] }),
        )
        .await;
    app.usage_product(SBX, name, &metric, Value::Null).await
}

async fn regional_product(app: &TestApp, name: &str) -> String {
    let metric = app
        .metric(
            SBX,
            json!({ "name": name, "aggregation_type": "COUNT", "group_keys": [["region"]] }),
        )
        .await;
    app.usage_product(
        SBX,
        name,
        &metric,
        json!({ "pricing_group_key": ["region"] }),
    )
    .await
}

async fn rates_at(app: &TestApp, card: &str, at: &str) -> Vec<Value> {
    app.post(
        "/v1/contract-pricing/rate-cards/getRates?limit=100",
        json!({ "rate_card_id": card, "at": at }),
    )
    .await
    .data()
    .as_array()
    .expect("rates")
    .clone()
}

#[tokio::test]
async fn add_rate_add_rates_and_the_rates_add_alias() {
    let app = TestApp::new(NOW).await;
    let card = app.rate_card(SBX, "card").await;
    let p1 = plain_product(&app, "p1").await;
    let p2 = plain_product(&app, "p2").await;
    let p3 = regional_product(&app, "p3").await;

    let r = app
        .post(
            "/v1/contract-pricing/rate-cards/addRate",
            json!({
                "rate_card_id": card, "product_id": p1, "starting_at": "2024-10-01T00:00:00Z",
                "entitled": true, "rate_type": "FLAT", "price": 100,
            }),
        )
        .await
        .data();
    assert_eq!(r["rate_type"], "FLAT");
    assert_eq!(num(&r["price"]), "100");
    assert_eq!(
        r["credit_type"]["id"],
        "2714e483-4ff1-48e4-9e25-ac732e8f24f2"
    );

    let r = app
        .post(
            "/v1/contract-pricing/rate-cards/rates/add",
            json!({
                "rate_card_id": card, "product_id": p2, "starting_at": "2024-10-01T00:00:00Z",
                "entitled": false, "rate_type": "TIERED",
                "tiers": [{ "price": 10, "size": 100 }, { "price": 0.5 }],
            }),
        )
        .await
        .data();
    assert_eq!(r["rate_type"], "TIERED");
    assert_eq!(num(&r["tiers"][1]["price"]), "0.5");

    let r = app
        .post(
            "/v1/contract-pricing/rate-cards/addRates",
            json!({
                "rate_card_id": card,
                "rates": [
                    { "product_id": p3, "starting_at": "2024-10-01T00:00:00Z", "entitled": true,
                      "rate_type": "FLAT", "price": 1, "pricing_group_values": { "region": "us" } },
                    { "product_id": p3, "starting_at": "2024-10-01T00:00:00Z", "entitled": true,
                      "rate_type": "FLAT", "price": 2, "pricing_group_values": { "region": "eu" } },
                ],
            }),
        )
        .await
        .id();
    assert_eq!(r, card);

    let rates = rates_at(&app, &card, NOW).await;
    assert_eq!(rates.len(), 4);
    let summary: Vec<(String, bool, Value)> = rates
        .iter()
        .map(|r| {
            (
                text(r, "product_id").to_string(),
                r["entitled"].as_bool().expect("entitled"),
                r["pricing_group_values"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (p1.clone(), true, Value::Null),
            (p2.clone(), false, Value::Null),
            (p3.clone(), true, json!({ "region": "us" })),
            (p3.clone(), true, json!({ "region": "eu" })),
        ]
    );
    assert_eq!(rates[0]["product_name"], "p1");
    assert_eq!(rates[0]["starting_at"], "2024-10-01T00:00:00Z");
    assert_eq!(num(&rates[3]["rate"]["price"]), "2");

    // Selectors narrow the result.
    let selected = app
        .post(
            "/v1/contract-pricing/rate-cards/getRates",
            json!({
                "rate_card_id": card, "at": NOW,
                "selectors": [{ "partial_pricing_group_values": { "region": "eu" } }],
            }),
        )
        .await
        .data();
    assert_eq!(selected.as_array().map(Vec::len), Some(1));
    assert_eq!(num(&selected[0]["rate"]["price"]), "2");

    // Paging over getRates.
    let page = app
        .post(
            "/v1/contract-pricing/rate-cards/getRates?limit=3",
            json!({ "rate_card_id": card, "at": NOW }),
        )
        .await
        .expect(StatusCode::OK)
        .body;
    assert_eq!(page["data"].as_array().map(Vec::len), Some(3));
    let next = page["next_page"].as_str().expect("cursor").to_string();
    let page = app
        .post(
            &format!("/v1/contract-pricing/rate-cards/getRates?limit=3&next_page={next}"),
            json!({ "rate_card_id": card, "at": NOW }),
        )
        .await
        .expect(StatusCode::OK)
        .body;
    assert_eq!(page["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(page["next_page"], Value::Null);

    app.post(
        "/v1/contract-pricing/rate-cards/addRate",
        json!({
            "rate_card_id": "nope", "product_id": p1, "starting_at": "2024-10-01T00:00:00Z",
            "entitled": true, "rate_type": "FLAT", "price": 1,
        }),
    )
    .await
    .client_error(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn add_rates_is_all_or_nothing() {
    let app = TestApp::new(NOW).await;
    let card = app.rate_card(SBX, "card").await;
    let p = regional_product(&app, "p").await;
    let rate = |region: &str, price: Value, start: &str| {
        json!({
            "product_id": p, "starting_at": start, "entitled": true, "rate_type": "FLAT",
            "price": price, "pricing_group_values": { "region": region },
        })
    };
    let start = "2024-10-01T00:00:00Z";
    let bad_lists = [
        vec![
            rate("us", json!(1), start),
            rate("eu", json!(-1), start),
            rate("ap", json!(3), start),
        ],
        vec![
            rate("us", json!(1), start),
            rate("eu", json!(2), start),
            rate("ap", json!(3), "2024-10-01T00:30:00Z"),
        ],
        vec![
            rate("us", json!(1), start),
            json!({ "product_id": p, "starting_at": start, "entitled": true,
                    "rate_type": "FLAT", "price": 2, "pricing_group_values": { "zone": "eu" } }),
        ],
        vec![
            rate("us", json!(1), start),
            json!({ "product_id": p, "starting_at": start, "entitled": true,
                    "rate_type": "TIERED", "tiers": [{ "price": 1, "size": 10 }],
                    "pricing_group_values": { "region": "eu" } }),
        ],
    ];
    for (i, rates) in bad_lists.into_iter().enumerate() {
        let r = app
            .post(
                "/v1/contract-pricing/rate-cards/addRates",
                json!({ "rate_card_id": card, "rates": rates }),
            )
            .await
            .client_error(StatusCode::BAD_REQUEST);
        assert!(r.message().contains("rates["), "list {i}: {}", r.message());
        assert_eq!(
            rates_at(&app, &card, NOW).await,
            Vec::<Value>::new(),
            "list {i}"
        );
    }
    // An unknown product fails the whole list too.
    app.post(
        "/v1/contract-pricing/rate-cards/addRates",
        json!({ "rate_card_id": card, "rates": [
            rate("us", json!(1), start),
            { "product_id": "nope", "starting_at": start, "entitled": true, "rate_type": "FLAT", "price": 1 },
        ] }),
    )
    .await
    .client_error(StatusCode::NOT_FOUND);
    app.post(
        "/v1/contract-pricing/rate-cards/addRates",
        json!({ "rate_card_id": card, "rates": [] }),
    )
    .await
    .client_error(StatusCode::BAD_REQUEST);
    assert!(rates_at(&app, &card, NOW).await.is_empty());

    app.post(
        "/v1/contract-pricing/rate-cards/addRates",
        json!({ "rate_card_id": card, "rates": [
            rate("us", json!(1), start), rate("eu", json!(2), start), rate("ap", json!(3), start),
        ] }),
    )
    .await
    .expect(StatusCode::OK);
    assert_eq!(rates_at(&app, &card, NOW).await.len(), 3);
}

#[tokio::test]
async fn get_rates_returns_the_rate_in_effect() {
    let app = TestApp::new(NOW).await;
    let card = app.rate_card(SBX, "card").await;
    let p = plain_product(&app, "p").await;
    let q = plain_product(&app, "q").await;
    let add = |product: &str, start: &str, end: Option<&str>, price: i64| {
        let mut body = json!({
            "rate_card_id": card, "product_id": product, "starting_at": start,
            "entitled": true, "rate_type": "FLAT", "price": price,
        });
        if let Some(end) = end {
            body["ending_before"] = json!(end);
        }
        body
    };
    for body in [
        add(&p, "2024-09-01T00:00:00Z", None, 10),
        add(&p, "2024-10-10T00:00:00Z", None, 12),
        add(&q, "2024-09-01T00:00:00Z", Some("2024-10-05T00:00:00Z"), 7),
    ] {
        app.post("/v1/contract-pricing/rate-cards/addRate", body)
            .await
            .expect(StatusCode::OK);
    }
    assert!(rates_at(&app, &card, "2024-08-31T23:59:59Z")
        .await
        .is_empty());

    let sept = rates_at(&app, &card, "2024-09-15T00:00:00Z").await;
    assert_eq!(sept.len(), 2);
    assert_eq!(sept[0]["product_id"], p.as_str());
    assert_eq!(num(&sept[0]["rate"]["price"]), "10");
    assert_eq!(sept[0]["starting_at"], "2024-09-01T00:00:00Z");
    // The open-ended rate ends where the later one starts.
    assert_eq!(sept[0]["ending_before"], "2024-10-10T00:00:00Z");
    assert_eq!(sept[1]["product_id"], q.as_str());
    assert_eq!(sept[1]["ending_before"], "2024-10-05T00:00:00Z");

    let before_switch = rates_at(&app, &card, "2024-10-09T23:59:59.999Z").await;
    assert_eq!(before_switch.len(), 1);
    assert_eq!(num(&before_switch[0]["rate"]["price"]), "10");

    let oct = rates_at(&app, &card, "2024-10-10T00:00:00Z").await;
    assert_eq!(oct.len(), 1);
    assert_eq!(oct[0]["product_id"], p.as_str());
    assert_eq!(num(&oct[0]["rate"]["price"]), "12");
    assert_eq!(oct[0]["starting_at"], "2024-10-10T00:00:00Z");
    assert!(
        oct[0].get("ending_before").is_none(),
        "open-ended: {}",
        oct[0]
    );

    app.post(
        "/v1/contract-pricing/rate-cards/getRates",
        json!({ "rate_card_id": "nope", "at": NOW }),
    )
    .await
    .client_error(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn pricing_group_values_must_match_the_pricing_group_key() {
    let app = TestApp::new(NOW).await;
    let card = app.rate_card(SBX, "card").await;
    let regional = regional_product(&app, "regional").await;
    let plain = plain_product(&app, "plain").await;
    let body = |product: &str, values: Value| {
        json!({
            "rate_card_id": card, "product_id": product, "starting_at": "2024-10-01T00:00:00Z",
            "entitled": true, "rate_type": "FLAT", "price": 1, "pricing_group_values": values,
        })
    };
    for (product, values) in [
        (&regional, json!({})),
        (&regional, json!({ "zone": "us" })),
        (&regional, json!({ "region": "us", "zone": "a" })),
        (&plain, json!({ "region": "us" })),
    ] {
        let r = app
            .post(
                "/v1/contract-pricing/rate-cards/addRate",
                body(product, values),
            )
            .await
            .client_error(StatusCode::BAD_REQUEST);
        assert!(
            r.message().contains("pricing_group_values"),
            "{}",
            r.message()
        );
    }
    assert!(rates_at(&app, &card, NOW).await.is_empty());
    for (product, values) in [(&regional, json!({ "region": "us" })), (&plain, json!({}))] {
        app.post(
            "/v1/contract-pricing/rate-cards/addRate",
            body(product, values),
        )
        .await
        .expect(StatusCode::OK);
    }
    assert_eq!(rates_at(&app, &card, NOW).await.len(), 2);
}

// ---------------------------------------------------------------------------------------------
// Customers

async fn customer_ids(app: &TestApp, query: &str) -> Vec<String> {
    ids(&app.get(&format!("/v1/customers{query}")).await.data())
}

#[tokio::test]
async fn customer_create_and_alias_conflicts() {
    let app = TestApp::new(NOW).await;
    let c = app
        .post(
            "/v1/customers",
            json!({ "name": "Acme", "ingest_aliases": ["a1", "a2", "a1"], "custom_fields": { "x": "y" } }),
        )
        .await
        .data();
    let c1 = text(&c, "id").to_string();
    assert_eq!(c["name"], "Acme");
    assert_eq!(c["ingest_aliases"], json!(["a1", "a2"]));
    assert_eq!(c["external_id"], "a1");
    assert_eq!(c["custom_fields"], json!({ "x": "y" }));

    let detail = app.get(&format!("/v1/customers/{c1}")).await.data();
    assert_eq!(detail["created_at"], NOW);
    assert_eq!(detail["archived_at"], Value::Null);
    assert_eq!(detail["ingest_aliases"], json!(["a1", "a2"]));

    // A taken alias is a 409 and creates nothing.
    let r = app
        .post(
            "/v1/customers",
            json!({ "name": "Other", "ingest_aliases": ["fresh", "a2"] }),
        )
        .await
        .client_error(StatusCode::CONFLICT);
    assert!(r.message().contains("a2"), "{}", r.message());
    assert_eq!(customer_ids(&app, "").await, vec![c1.clone()]);
    // "fresh" was not reserved by the failed create.
    let c2 = app.customer(SBX, "Fresh", &["fresh"]).await;

    // The deprecated external_id is an alias too.
    app.post(
        "/v1/customers",
        json!({ "name": "Ext", "external_id": "a1" }),
    )
    .await
    .client_error(StatusCode::CONFLICT);

    // Archived customers keep their aliases.
    app.post("/v1/customers/archive", json!({ "id": c1 }))
        .await
        .expect(StatusCode::OK);
    app.post(
        "/v1/customers",
        json!({ "name": "Late", "ingest_aliases": ["a1"] }),
    )
    .await
    .client_error(StatusCode::CONFLICT);
    assert_eq!(customer_ids(&app, "").await, vec![c2.clone()]);
    assert_eq!(
        customer_ids(&app, "?only_archived=true").await,
        vec![c1.clone()]
    );

    // Long names are truncated to 160 characters; empty names are refused.
    let long = "n".repeat(200);
    let c = app
        .post("/v1/customers", json!({ "name": long }))
        .await
        .data();
    assert_eq!(text(&c, "name").chars().count(), 160);
    app.post("/v1/customers", json!({ "name": "  " }))
        .await
        .client_error(StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn set_ingest_aliases_replaces_and_409_keeps_the_old_ones() {
    let app = TestApp::new(NOW).await;
    let a = app.customer(SBX, "A", &["a1"]).await;
    let b = app.customer(SBX, "B", &["b1"]).await;
    let r = app
        .post(
            &format!("/v1/customers/{b}/setIngestAliases"),
            json!({ "ingest_aliases": ["b2", "b3"] }),
        )
        .await
        .expect(StatusCode::OK);
    assert!(r.raw.is_empty(), "setIngestAliases answers an empty body");
    let got = app.get(&format!("/v1/customers/{b}")).await.data();
    assert_eq!(got["ingest_aliases"], json!(["b2", "b3"]));
    assert_eq!(
        customer_ids(&app, "?ingest_alias=b1").await,
        Vec::<String>::new()
    );
    assert_eq!(
        customer_ids(&app, "?ingest_alias=b3").await,
        vec![b.clone()]
    );

    // An alias still held by another customer: 409, and B keeps b2 and b3.
    app.post(
        &format!("/v1/customers/{b}/setIngestAliases"),
        json!({ "ingest_aliases": ["b4", "a1"] }),
    )
    .await
    .client_error(StatusCode::CONFLICT);
    let got = app.get(&format!("/v1/customers/{b}")).await.data();
    assert_eq!(got["ingest_aliases"], json!(["b2", "b3"]));
    assert_eq!(
        customer_ids(&app, "?ingest_alias=b2").await,
        vec![b.clone()]
    );
    assert_eq!(
        customer_ids(&app, "?ingest_alias=b4").await,
        Vec::<String>::new()
    );
    assert_eq!(
        customer_ids(&app, "?ingest_alias=a1").await,
        vec![a.clone()]
    );

    // The freed b1 can be taken, idempotent re-sets are fine, and an empty list clears.
    app.customer(SBX, "C", &["b1"]).await;
    for _ in 0..2 {
        app.post(
            &format!("/v1/customers/{a}/setIngestAliases"),
            json!({ "ingest_aliases": ["a1", "a9"] }),
        )
        .await
        .expect(StatusCode::OK);
    }
    app.post(
        &format!("/v1/customers/{b}/setIngestAliases"),
        json!({ "ingest_aliases": [] }),
    )
    .await
    .expect(StatusCode::OK);
    let got = app.get(&format!("/v1/customers/{b}")).await.data();
    assert_eq!(got["ingest_aliases"], json!([]));
    assert_eq!(got["external_id"], b.as_str());
    app.post(
        "/v1/customers/00000000-0000-0000-0000-000000000000/setIngestAliases",
        json!({ "ingest_aliases": ["z"] }),
    )
    .await
    .client_error(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn set_name_and_archive() {
    let app = TestApp::new(NOW).await;
    let c = app.customer(SBX, "Old", &["x"]).await;
    app.set_now("2024-10-15T13:00:00Z");
    let r = app
        .post(
            &format!("/v1/customers/{c}/setName"),
            json!({ "name": "New" }),
        )
        .await
        .data();
    assert_eq!(r["name"], "New");
    assert_eq!(r["id"], c.as_str());
    let got = app.get(&format!("/v1/customers/{c}")).await.data();
    assert_eq!(got["name"], "New");
    assert_eq!(got["created_at"], NOW);
    assert_eq!(got["updated_at"], "2024-10-15T13:00:00Z");

    let r = app
        .post("/v1/customers/archive", json!({ "id": c }))
        .await
        .id();
    assert_eq!(r, c);
    let got = app.get(&format!("/v1/customers/{c}")).await.data();
    assert_eq!(got["archived_at"], "2024-10-15T13:00:00Z");
    assert_eq!(customer_ids(&app, "").await, Vec::<String>::new());
    app.post("/v1/customers/archive", json!({ "id": "nope" }))
        .await
        .client_error(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn customer_list_filters() {
    let app = TestApp::new(NOW).await;
    let c1 = app.customer(SBX, "c1", &["one"]).await;
    let c2 = app.customer(SBX, "c2", &["two"]).await;
    let c3 = app.customer(SBX, "c3", &["three"]).await;
    assert_eq!(
        customer_ids(&app, &format!("?customer_ids={c1},{c3}")).await,
        vec![c1.clone(), c3.clone()]
    );
    assert_eq!(
        customer_ids(&app, &format!("?customer_ids={c3}&customer_ids={c1}")).await,
        vec![c1.clone(), c3.clone()]
    );
    assert_eq!(
        customer_ids(&app, &format!("?customer_ids={c2}&ingest_alias=two")).await,
        vec![c2.clone()]
    );
    assert_eq!(
        customer_ids(&app, &format!("?customer_ids={c1}&ingest_alias=two")).await,
        Vec::<String>::new()
    );
    assert_eq!(
        customer_ids(&app, "?ingest_alias=three").await,
        vec![c3.clone()]
    );
    assert_eq!(
        customer_ids(&app, "?ingest_alias=nobody").await,
        Vec::<String>::new()
    );
    // Filters page correctly: one match per page.
    let body = app
        .get(&format!("/v1/customers?customer_ids={c1},{c3}&limit=1"))
        .await
        .expect(StatusCode::OK)
        .body;
    assert_eq!(ids(&body["data"]), vec![c1.clone()]);
    let next = body["next_page"].as_str().expect("cursor");
    let body = app
        .get(&format!(
            "/v1/customers?customer_ids={c1},{c3}&limit=1&next_page={next}"
        ))
        .await
        .expect(StatusCode::OK)
        .body;
    assert_eq!(ids(&body["data"]), vec![c3.clone()]);
    assert_eq!(body["next_page"], Value::Null);
}

// ---------------------------------------------------------------------------------------------
// Contracts

#[tokio::test]
async fn contract_create_by_rate_card_id_or_alias() {
    let app = TestApp::new(NOW).await;
    let customer = app.customer(SBX, "c", &[]).await;
    let old = app
        .post(
            "/v1/contract-pricing/rate-cards/create",
            json!({ "name": "old", "aliases": [{ "name": "std", "ending_before": "2024-10-01T00:00:00Z" }] }),
        )
        .await
        .id();
    let new = app
        .post(
            "/v1/contract-pricing/rate-cards/create",
            json!({ "name": "new", "aliases": [{ "name": "std", "starting_at": "2024-10-01T00:00:00Z" }] }),
        )
        .await
        .id();
    let create = |body: Value| app.post("/v1/contracts/create", body);
    let by_id = create(json!({
        "customer_id": customer, "rate_card_id": old, "starting_at": "2024-10-01T00:00:00Z",
    }))
    .await
    .id();
    let by_alias_sept = create(json!({
        "customer_id": customer, "rate_card_alias": "std", "starting_at": "2024-09-01T00:00:00Z",
    }))
    .await
    .id();
    let by_alias_oct = create(json!({
        "customer_id": customer, "rate_card_alias": "std", "starting_at": "2024-10-01T00:00:00Z",
    }))
    .await
    .id();
    let card_of = |contract: String| {
        let app = &app;
        let customer = customer.clone();
        async move {
            app.post(
                "/v2/contracts/get",
                json!({ "contract_id": contract, "customer_id": customer }),
            )
            .await
            .data()["rate_card_id"]
                .clone()
        }
    };
    assert_eq!(card_of(by_id).await, old.as_str());
    assert_eq!(card_of(by_alias_sept).await, old.as_str());
    assert_eq!(card_of(by_alias_oct).await, new.as_str());

    create(json!({
        "customer_id": customer, "rate_card_alias": "unknown", "starting_at": "2024-10-01T00:00:00Z",
    }))
    .await
    .client_error(StatusCode::NOT_FOUND);
    create(json!({
        "customer_id": customer, "rate_card_id": "nope", "starting_at": "2024-10-01T00:00:00Z",
    }))
    .await
    .client_error(StatusCode::NOT_FOUND);
    create(json!({
        "customer_id": customer, "rate_card_id": old, "rate_card_alias": "std",
        "starting_at": "2024-10-01T00:00:00Z",
    }))
    .await
    .client_error(StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_rate_card_alias_resolves_to_the_card_it_was_most_recently_assigned_to() {
    let app = TestApp::new(NOW).await;
    let customer = app.customer(SBX, "c", &[]).await;
    let first = app.rate_card(SBX, "first").await;
    let second = app
        .post(
            "/v1/contract-pricing/rate-cards/create",
            json!({ "name": "second", "aliases": [{ "name": "std" }] }),
        )
        .await
        .id();
    let resolve = || async {
        let contract = app
            .post(
                "/v1/contracts/create",
                json!({
                    "customer_id": customer, "rate_card_alias": "std",
                    "starting_at": "2024-10-01T00:00:00Z",
                }),
            )
            .await
            .id();
        app.post(
            "/v2/contracts/get",
            json!({ "contract_id": contract, "customer_id": customer }),
        )
        .await
        .data()["rate_card_id"]
            .clone()
    };
    assert_eq!(resolve().await, second.as_str());
    // Assigning the alias to the older card later makes it the most recent assignment.
    app.set_now("2024-10-15T13:00:00Z");
    app.post(
        "/v1/contract-pricing/rate-cards/update",
        json!({ "rate_card_id": first, "aliases": [{ "name": "std" }] }),
    )
    .await
    .expect(StatusCode::OK);
    assert_eq!(resolve().await, first.as_str());
}

#[tokio::test]
async fn contract_uniqueness_key_reuse_is_409() {
    let app = TestApp::new(NOW).await;
    let b = Billing::count(&app, SBX, "e", "1", "acme", "2024-10-01T00:00:00Z").await;
    let other = app.customer(SBX, "other", &[]).await;
    let body = |customer: &str| {
        json!({
            "customer_id": customer, "rate_card_id": b.card,
            "starting_at": "2024-10-01T00:00:00Z", "uniqueness_key": "order-42",
        })
    };
    app.post("/v1/contracts/create", body(&b.customer))
        .await
        .expect(StatusCode::OK);
    for customer in [&b.customer, &other] {
        let r = app
            .post("/v1/contracts/create", body(customer))
            .await
            .client_error(StatusCode::CONFLICT);
        assert_eq!(r.message(), "This uniqueness key has already been used.");
    }
    let list = app
        .post("/v1/contracts/list", json!({ "customer_id": b.customer }))
        .await
        .data();
    assert_eq!(list.as_array().map(Vec::len), Some(2));
    let list = app
        .post("/v1/contracts/list", json!({ "customer_id": other }))
        .await
        .data();
    assert_eq!(list, json!([]));
}

#[tokio::test]
async fn contract_create_refusals() {
    let app = TestApp::new(NOW).await;
    let b = Billing::count(&app, SBX, "e", "1", "acme", "2024-10-01T00:00:00Z").await;
    let base = json!({
        "customer_id": b.customer, "rate_card_id": b.card, "starting_at": "2024-10-01T00:00:00Z",
    });
    let with = |extra: Value| {
        let mut body = base.clone();
        merge(&mut body, extra);
        body
    };
    app.post(
        "/v1/contracts/create",
        with(json!({ "customer_id": "00000000-0000-0000-0000-000000000000" })),
    )
    .await
    .client_error(StatusCode::NOT_FOUND);
    let refused = [
        json!({ "commits": [{ "product_id": b.product, "type": "PREPAID" }] }),
        json!({ "credits": [{ "product_id": b.product }] }),
        json!({ "overrides": [{ "starting_at": "2024-10-01T00:00:00Z", "type": "MULTIPLIER", "multiplier": 0.5 }] }),
        json!({ "starting_at": "2024-10-01T00:15:00Z" }),
        json!({ "ending_before": "2024-09-01T00:00:00Z" }),
        json!({ "usage_statement_schedule": { "frequency": "MONTHLY", "day": "CUSTOM_DATE" } }),
        json!({ "uniqueness_key": "" }),
    ];
    for extra in refused {
        let r = app
            .post("/v1/contracts/create", with(extra.clone()))
            .await
            .client_error(StatusCode::BAD_REQUEST);
        if extra.get("commits").is_some() {
            assert!(r.message().contains("commits"), "{}", r.message());
        }
        if extra.get("overrides").is_some() {
            assert!(r.message().contains("overrides"), "{}", r.message());
        }
    }
    let list = app
        .post("/v1/contracts/list", json!({ "customer_id": b.customer }))
        .await
        .data();
    assert_eq!(
        list.as_array().map(Vec::len),
        Some(1),
        "only the setup contract"
    );
    // Empty unsupported terms are fine.
    app.post(
        "/v1/contracts/create",
        with(json!({ "commits": [], "overrides": [], "credits": null })),
    )
    .await
    .expect(StatusCode::OK);
}

#[tokio::test]
async fn contract_get_and_list_shapes() {
    let app = TestApp::new(NOW).await;
    let b = Billing::count(&app, SBX, "e", "1", "acme", "2024-09-01T00:00:00Z").await;
    let later = app
        .post(
            "/v1/contracts/create",
            json!({
                "customer_id": b.customer, "rate_card_id": b.card, "name": "Later",
                "starting_at": "2024-10-01T00:00:00Z", "ending_before": "2025-01-01T00:00:00Z",
                "uniqueness_key": "u1", "custom_fields": { "k": "v" },
                "usage_statement_schedule": { "frequency": "QUARTERLY" },
            }),
        )
        .await
        .id();
    let req = json!({ "contract_id": later, "customer_id": b.customer });
    let v1 = app.post("/v1/contracts/get", req.clone()).await.data();
    assert_eq!(v1["id"], later.as_str());
    assert_eq!(v1["customer_id"], b.customer.as_str());
    assert_eq!(v1["uniqueness_key"], "u1");
    assert_eq!(v1["custom_fields"], json!({ "k": "v" }));
    assert_eq!(v1["amendments"], json!([]));
    for terms in [&v1["initial"], &v1["current"]] {
        assert_eq!(terms["starting_at"], "2024-10-01T00:00:00Z");
        assert_eq!(terms["ending_before"], "2025-01-01T00:00:00Z");
        assert_eq!(terms["name"], "Later");
        assert_eq!(terms["rate_card_id"], b.card.as_str());
        assert_eq!(terms["usage_statement_schedule"]["frequency"], "QUARTERLY");
        assert_eq!(
            terms["usage_statement_schedule"]["billing_anchor_date"],
            "2024-10-01T00:00:00Z"
        );
        assert_eq!(terms["commits"], json!([]));
        assert_eq!(terms["overrides"], json!([]));
    }
    assert!(v1.get("starting_at").is_none(), "v1 nests terms: {v1}");

    let v2 = app.post("/v2/contracts/get", req).await.data();
    assert_eq!(v2["id"], later.as_str());
    assert_eq!(v2["starting_at"], "2024-10-01T00:00:00Z");
    assert_eq!(v2["rate_card_id"], b.card.as_str());
    assert_eq!(v2["usage_statement_schedule"]["frequency"], "QUARTERLY");
    assert_eq!(v2["commits"], json!([]));
    assert!(v2.get("initial").is_none(), "v2 is flat: {v2}");
    assert!(v2.get("amendments").is_none(), "v2 is flat: {v2}");

    // Lists are chronological, with the PY SDK's `cursor`.
    for (path, flat) in [("/v1/contracts/list", false), ("/v2/contracts/list", true)] {
        let body = app
            .post(path, json!({ "customer_id": b.customer }))
            .await
            .expect(StatusCode::OK)
            .body;
        assert_eq!(ids(&body["data"]), vec![b.contract.clone(), later.clone()]);
        assert_eq!(body["cursor"], Value::Null);
        let first = &body["data"][0];
        assert_eq!(first.get("initial").is_none(), flat);
        let covering = app
            .post(
                path,
                json!({ "customer_id": b.customer, "covering_date": "2024-09-15T00:00:00Z" }),
            )
            .await
            .data();
        assert_eq!(ids(&covering), vec![b.contract.clone()]);
    }
    for limit in [0, 21] {
        app.post(
            "/v1/contracts/list",
            json!({ "customer_id": b.customer, "limit": limit }),
        )
        .await
        .client_error(StatusCode::BAD_REQUEST);
    }
    let page = app
        .post(
            "/v2/contracts/list",
            json!({ "customer_id": b.customer, "limit": 1 }),
        )
        .await
        .expect(StatusCode::OK)
        .body;
    assert_eq!(ids(&page["data"]), vec![b.contract.clone()]);
    let cursor = page["cursor"].as_str().expect("cursor");
    let page = app
        .post(
            "/v2/contracts/list",
            json!({ "customer_id": b.customer, "limit": 1, "cursor": cursor }),
        )
        .await
        .expect(StatusCode::OK)
        .body;
    assert_eq!(ids(&page["data"]), vec![later.clone()]);
    assert_eq!(page["cursor"], Value::Null);
    app.post(
        "/v1/contracts/get",
        json!({ "contract_id": later, "customer_id": app.customer(SBX, "x", &[]).await }),
    )
    .await
    .client_error(StatusCode::NOT_FOUND);
}

// ---------------------------------------------------------------------------------------------
// Response shapes the contract test (tests/it/contract.rs) holds against Metronome's document

/// Optional response fields the document declares without `nullable` are left out when unset,
/// never sent as `null` (schemathesis found `null`s in contracts, invoices and rate schedules).
#[tokio::test]
async fn unset_optional_fields_are_left_out_not_null() {
    let app = TestApp::new(NOW).await;
    let b = Billing::count(&app, SBX, "e", "1", "acme", "2024-09-01T00:00:00Z").await;
    let bare = json!({ "contract_id": b.contract, "customer_id": b.customer });
    let absent = |v: &Value, keys: &[&str]| {
        for key in keys {
            assert!(v.get(*key).is_none(), "{key} should be left out: {v}");
        }
    };
    let terms = ["ending_before", "name", "net_payment_terms_days"];
    let v1 = app.post("/v1/contracts/get", bare.clone()).await.data();
    absent(&v1, &["uniqueness_key", "archived_at"]);
    absent(&v1["initial"], &terms);
    absent(&v1["current"], &terms);
    let v2 = app.post("/v2/contracts/get", bare).await.data();
    absent(&v2, &["uniqueness_key", "archived_at"]);
    absent(&v2, &terms);
    for path in ["/v1/contracts/list", "/v2/contracts/list"] {
        let list = app
            .post(path, json!({ "customer_id": b.customer }))
            .await
            .data();
        let item = if path.starts_with("/v1") {
            &list[0]["current"]
        } else {
            &list[0]
        };
        absent(item, &terms);
    }

    // Invoices: a finalized (frozen) one and the live draft alike.
    for invoice in app.invoices(SBX, &b.customer, "").await {
        absent(&invoice, &["net_payment_terms_days"]);
    }
    // An open-ended rate has no end.
    let rates = rates_at(&app, &b.card, NOW).await;
    assert_eq!(rates.len(), 1);
    absent(&rates[0], &["ending_before"]);

    // When set, the same fields are there with their values.
    let full = app
        .post(
            "/v1/contracts/create",
            json!({
                "customer_id": b.customer, "rate_card_id": b.card, "name": "Full",
                "starting_at": "2024-10-01T00:00:00Z", "ending_before": "2025-01-01T00:00:00Z",
                "uniqueness_key": "full", "net_payment_terms_days": 30,
            }),
        )
        .await
        .id();
    let v2 = app
        .post(
            "/v2/contracts/get",
            json!({ "contract_id": full, "customer_id": b.customer }),
        )
        .await
        .data();
    assert_eq!(v2["name"], "Full");
    assert_eq!(v2["ending_before"], "2025-01-01T00:00:00Z");
    assert_eq!(v2["uniqueness_key"], "full");
    assert_eq!(num(&v2["net_payment_terms_days"]), "30");
    let invoices = app
        .invoices(SBX, &b.customer, &format!("contract_id={full}"))
        .await;
    assert!(!invoices.is_empty());
    assert_eq!(num(&invoices[0]["net_payment_terms_days"]), "30");
}

/// `PROFESSIONAL_SERVICE` is accepted on create but read back as `PRO_SERVICE`, the only spelling
/// the document's `ProductListItem.type` has (it used to come back as sent).
#[tokio::test]
async fn professional_service_products_read_back_as_pro_service() {
    let app = TestApp::new(NOW).await;
    let mut ids = Vec::new();
    for spelling in [
        "PROFESSIONAL_SERVICE",
        "professional_service",
        "PRO_SERVICE",
    ] {
        ids.push(
            app.post(
                "/v1/contract-pricing/products/create",
                json!({ "name": spelling, "type": spelling }),
            )
            .await
            .id(),
        );
    }
    for id in &ids {
        let got = app
            .post("/v1/contract-pricing/products/get", json!({ "id": id }))
            .await
            .data();
        assert_eq!(got["type"], "PRO_SERVICE", "{got}");
    }
    let list = app
        .post("/v1/contract-pricing/products/list", json!({}))
        .await
        .data();
    for item in list.as_array().expect("list") {
        assert_eq!(item["type"], "PRO_SERVICE", "{item}");
    }
    let refused = app
        .post(
            "/v1/contract-pricing/products/create",
            json!({ "name": "x", "type": "CONSULTING" }),
        )
        .await
        .client_error(StatusCode::BAD_REQUEST);
    assert!(
        refused.message().contains("PROFESSIONAL_SERVICE"),
        "the error lists the accepted spellings: {}",
        refused.message()
    );
}

#[tokio::test]
async fn an_ingest_alias_equal_to_a_customer_id_is_409() {
    let app = TestApp::new(NOW).await;
    let a = app.customer(SBX, "A", &["a"]).await;
    let r = app
        .post(
            "/v1/customers",
            json!({ "name": "B", "ingest_aliases": [a.clone()] }),
        )
        .await
        .client_error(StatusCode::CONFLICT);
    assert!(r.message().contains("customer's id"), "{}", r.message());
    let b = app.customer(SBX, "B", &["b"]).await;
    app.post(
        &format!("/v1/customers/{b}/setIngestAliases"),
        json!({ "ingest_aliases": ["b2", a] }),
    )
    .await
    .client_error(StatusCode::CONFLICT);
    let got = app.get(&format!("/v1/customers/{b}")).await.data();
    assert_eq!(got["ingest_aliases"], json!(["b"]));
}

#[tokio::test]
async fn customers_create_is_the_same_call_as_post_customers() {
    let app = TestApp::new(NOW).await;
    let body =
        json!({ "name": "Quickstart", "ingest_aliases": ["qs"], "custom_fields": { "k": "v" } });
    let made = app.post("/v1/customers/create", body).await.data();
    let id = text(&made, "id").to_string();
    let got = app.get(&format!("/v1/customers/{id}")).await.data();
    assert_eq!(got["name"], "Quickstart");
    assert_eq!(got["ingest_aliases"], json!(["qs"]));
    let other = app
        .post("/v1/customers", json!({ "name": "Sdk" }))
        .await
        .data();
    let keys = |v: &Value| v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>());
    assert_eq!(keys(&made), keys(&other));
    // The same rules: a taken alias is a 409 on both spellings.
    app.post(
        "/v1/customers/create",
        json!({ "name": "Dup", "ingest_aliases": ["qs"] }),
    )
    .await
    .client_error(StatusCode::CONFLICT);
}

#[tokio::test]
async fn filtered_customer_lists_page_by_index() {
    let app = TestApp::new(NOW).await;
    let mut ids = Vec::new();
    for i in 0..30 {
        ids.push(
            app.customer(SBX, &format!("c{i}"), &[&format!("alias-{i}")])
                .await,
        );
    }
    let pick = [ids[25].clone(), ids[3].clone(), ids[17].clone()];
    let url = format!("/v1/customers?customer_ids={}&limit=2", pick.join(","));
    let first = app.get(&url).await.expect(StatusCode::OK).body;
    let names = |v: &Value| -> Vec<String> {
        v["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|c| text(c, "name").to_string())
            .collect()
    };
    assert_eq!(names(&first), ["c3", "c17"]);
    let cursor = first["next_page"].as_str().expect("a next page");
    let second = app
        .get(&format!("{url}&next_page={cursor}"))
        .await
        .expect(StatusCode::OK)
        .body;
    assert_eq!(names(&second), ["c25"]);
    assert_eq!(second["next_page"], Value::Null);

    let by_alias = app.get("/v1/customers?ingest_alias=alias-7").await.data();
    assert_eq!(by_alias.as_array().map(Vec::len), Some(1));
    assert_eq!(by_alias[0]["id"], ids[7].as_str());
    let both = format!("/v1/customers?ingest_alias=alias-7&customer_ids={}", ids[8]);
    assert_eq!(app.get(&both).await.data(), json!([]));
    assert_eq!(
        app.get("/v1/customers?ingest_alias=nobody").await.data(),
        json!([])
    );
    // Archived customers show only with only_archived=true.
    app.post("/v1/customers/archive", json!({ "id": ids[7] }))
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        app.get("/v1/customers?ingest_alias=alias-7").await.data(),
        json!([])
    );
    let archived = app
        .get("/v1/customers?ingest_alias=alias-7&only_archived=true")
        .await
        .data();
    assert_eq!(archived[0]["id"], ids[7].as_str());
}

#[tokio::test]
async fn contract_fields_tally_does_not_act_on_are_stored_and_read_back() {
    let app = TestApp::new(NOW).await;
    let customer = app.customer(SBX, "acme", &[]).await;
    let id = app
        .post(
            "/v1/contracts/create",
            json!({
                "customer_id": customer, "starting_at": "2024-10-01T00:00:00Z",
                "salesforce_opportunity_id": "006Dn00000ABC", "netsuite_sales_order_id": "SO-42",
                "total_contract_value": 1234567.891, "scheduled_charges_on_usage_invoices": "ALL",
                "multiplier_override_prioritization": "EXPLICIT",
            }),
        )
        .await
        .id();
    let get = json!({ "customer_id": customer, "contract_id": id });
    let v1 = app.post("/v1/contracts/get", get.clone()).await.data();
    let v2 = app.post("/v2/contracts/get", get).await.data();
    for terms in [&v1["initial"], &v1["current"], &v2] {
        assert_eq!(
            terms["salesforce_opportunity_id"], "006Dn00000ABC",
            "{terms}"
        );
        assert_eq!(terms["netsuite_sales_order_id"], "SO-42");
        assert_eq!(num(&terms["total_contract_value"]), "1234567.891");
        assert_eq!(terms["scheduled_charges_on_usage_invoices"], "ALL");
    }
    assert_eq!(v2["multiplier_override_prioritization"], "EXPLICIT");
    // Unset, they are left out (v2's prioritization keeps upstream's default).
    let plain = app
        .contract(SBX, &customer, &app.rate_card(SBX, "c").await, NOW_HOUR)
        .await;
    let get = json!({ "customer_id": customer, "contract_id": plain });
    let v2 = app.post("/v2/contracts/get", get).await.data();
    assert!(v2.get("salesforce_opportunity_id").is_none(), "{v2}");
    assert_eq!(
        v2["multiplier_override_prioritization"],
        "LOWEST_MULTIPLIER"
    );
    app.post(
        "/v1/contracts/create",
        json!({ "customer_id": customer, "starting_at": NOW_HOUR,
                "multiplier_override_prioritization": "HIGHEST" }),
    )
    .await
    .client_error(StatusCode::BAD_REQUEST);
}

const NOW_HOUR: &str = "2024-10-15T12:00:00Z";
