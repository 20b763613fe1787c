//! Environment isolation: a token sees only its own environment's data, usage and invoices.

use axum::http::StatusCode;
use serde_json::json;
use tally_central::store::Env;

use crate::support::*;

const NOW: &str = "2024-10-15T12:00:00Z";
const START: &str = "2024-08-01T00:00:00Z";

#[tokio::test]
async fn sandbox_data_is_invisible_to_production() {
    let app = TestApp::new(NOW).await;
    let sbx = Env::Sandbox;
    let prd = Env::Production;
    let b = Billing::count(&app, sbx, "api_call", "2", "acme", START).await;
    app.ingest(
        sbx,
        json!([event(
            "e1",
            "acme",
            "api_call",
            "2024-10-10T00:00:00Z",
            json!({})
        )]),
    )
    .await;
    let sbx_invoices = app.invoices(sbx, &b.customer, "").await;
    assert_eq!(sbx_invoices.len(), 3);
    let invoice_id = text(&sbx_invoices[2], "id").to_string();

    // Direct reads are 404 in production...
    app.get_as(prd, &format!("/v1/billable-metrics/{}", b.metric))
        .await
        .client_error(StatusCode::NOT_FOUND);
    app.post_as(
        prd,
        "/v1/contract-pricing/products/get",
        json!({ "id": b.product }),
    )
    .await
    .client_error(StatusCode::NOT_FOUND);
    app.post_as(
        prd,
        "/v1/contract-pricing/rate-cards/get",
        json!({ "id": b.card }),
    )
    .await
    .client_error(StatusCode::NOT_FOUND);
    app.get_as(prd, &format!("/v1/customers/{}", b.customer))
        .await
        .client_error(StatusCode::NOT_FOUND);
    for path in ["/v1/contracts/get", "/v2/contracts/get"] {
        app.post_as(
            prd,
            path,
            json!({ "contract_id": b.contract, "customer_id": b.customer }),
        )
        .await
        .client_error(StatusCode::NOT_FOUND);
    }
    app.post_as(
        prd,
        "/v1/contracts/list",
        json!({ "customer_id": b.customer }),
    )
    .await
    .client_error(StatusCode::NOT_FOUND);
    app.get_as(prd, &format!("/v1/customers/{}/invoices", b.customer))
        .await
        .client_error(StatusCode::NOT_FOUND);
    app.get_as(
        prd,
        &format!("/v1/customers/{}/invoices/{invoice_id}", b.customer),
    )
    .await
    .client_error(StatusCode::NOT_FOUND);
    app.post_as(prd, "/v1/invoices/void", json!({ "id": invoice_id }))
        .await
        .client_error(StatusCode::NOT_FOUND);
    app.post_as(
        prd,
        "/v1/contract-pricing/rate-cards/getRates",
        json!({ "rate_card_id": b.card, "at": NOW }),
    )
    .await
    .client_error(StatusCode::NOT_FOUND);
    // ...writes against sandbox ids fail too...
    app.post_as(
        prd,
        "/v1/contract-pricing/rate-cards/addRate",
        json!({
            "rate_card_id": b.card, "product_id": b.product, "starting_at": START,
            "entitled": true, "rate_type": "FLAT", "price": 1,
        }),
    )
    .await
    .client_error(StatusCode::NOT_FOUND);
    app.post_as(
        prd,
        "/v1/contracts/create",
        json!({ "customer_id": b.customer, "rate_card_id": b.card, "starting_at": START }),
    )
    .await
    .client_error(StatusCode::NOT_FOUND);
    app.post_as(
        prd,
        "/v1/billable-metrics/archive",
        json!({ "id": b.metric }),
    )
    .await
    .client_error(StatusCode::NOT_FOUND);

    // ...and every list is empty.
    let empty = json!([]);
    assert_eq!(app.get_as(prd, "/v1/billable-metrics").await.data(), empty);
    assert_eq!(
        app.get_as(prd, "/v1/billable-metrics?include_archived=true")
            .await
            .data(),
        empty
    );
    assert_eq!(app.get_as(prd, "/v1/customers").await.data(), empty);
    assert_eq!(
        app.get_as(prd, "/v1/customers?ingest_alias=acme")
            .await
            .data(),
        empty
    );
    assert_eq!(
        app.post_as(
            prd,
            "/v1/contract-pricing/products/list",
            json!({ "archive_filter": "ALL" })
        )
        .await
        .data(),
        empty
    );
    assert_eq!(
        app.post_as(prd, "/v1/contract-pricing/rate-cards/list", json!({}))
            .await
            .data(),
        empty
    );

    // The sandbox still sees all of it, untouched by the refused production writes.
    app.get(&format!("/v1/billable-metrics/{}", b.metric))
        .await
        .expect(StatusCode::OK);
    let metrics = app.get("/v1/billable-metrics").await.data();
    assert_eq!(metrics.as_array().map(Vec::len), Some(1));
    let rates = app
        .post(
            "/v1/contract-pricing/rate-cards/getRates",
            json!({ "rate_card_id": b.card, "at": NOW }),
        )
        .await
        .data();
    assert_eq!(rates.as_array().map(Vec::len), Some(1));
    assert_eq!(num(&rates[0]["rate"]["price"]), "2");
    let contracts = app
        .post("/v1/contracts/list", json!({ "customer_id": b.customer }))
        .await
        .data();
    assert_eq!(contracts.as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn usage_and_aliases_are_per_environment() {
    let app = TestApp::new(NOW).await;
    let sbx = Env::Sandbox;
    let prd = Env::Production;
    // The same alias is free in each environment.
    let s = Billing::count(&app, sbx, "api_call", "2", "acme", START).await;
    let p = Billing::count(&app, prd, "api_call", "3", "acme", START).await;
    assert_ne!(s.customer, p.customer);

    let at = "2024-10-10T05:00:00Z";
    let events = json!([
        event("t1", "acme", "api_call", at, json!({})),
        event("t2", "acme", "api_call", at, json!({})),
    ]);
    let r = app.ingest(sbx, events.clone()).await;
    assert_eq!(r["accepted"], 2);

    let sbx_inv = app.invoice_at(sbx, &s.customer, at).await;
    let prd_inv = app.invoice_at(prd, &p.customer, at).await;
    assert_eq!(num(&sbx_inv["total"]), "4");
    assert_eq!(num(&prd_inv["total"]), "0");
    assert_ne!(sbx_inv["id"], prd_inv["id"]);

    // The same transaction ids are new in production: dedupe is per environment.
    let r = app.ingest(prd, events).await;
    assert_eq!(r["accepted"], 2);
    assert_eq!(r["duplicates"], 0);
    let prd_inv = app.invoice_at(prd, &p.customer, at).await;
    assert_eq!(num(&prd_inv["total"]), "6");
    // Production usage did not leak back into the sandbox either.
    let sbx_inv = app.invoice_at(sbx, &s.customer, at).await;
    assert_eq!(num(&sbx_inv["total"]), "4");

    // A customer-id reference from the other environment meters nothing here.
    let r = app
        .ingest(
            prd,
            json!([event("t3", &s.customer, "api_call", at, json!({}))]),
        )
        .await;
    assert_eq!(r["accepted"], 1);
    let sbx_inv = app.invoice_at(sbx, &s.customer, at).await;
    assert_eq!(num(&sbx_inv["total"]), "4");

    // Each environment's alias lookup finds only its own customer.
    let found = app
        .get_as(prd, "/v1/customers?ingest_alias=acme")
        .await
        .data();
    assert_eq!(found.as_array().map(Vec::len), Some(1));
    assert_eq!(found[0]["id"], p.customer.as_str());
    let found = app
        .get_as(sbx, "/v1/customers?ingest_alias=acme")
        .await
        .data();
    assert_eq!(found[0]["id"], s.customer.as_str());
}

#[tokio::test]
async fn uniqueness_keys_are_per_environment() {
    let app = TestApp::new(NOW).await;
    let s = Billing::count(&app, Env::Sandbox, "x", "1", "a", START).await;
    let p = Billing::count(&app, Env::Production, "x", "1", "a", START).await;
    for (env, b) in [(Env::Sandbox, &s), (Env::Production, &p)] {
        app.post_as(
            env,
            "/v1/contracts/create",
            json!({
                "customer_id": b.customer, "rate_card_id": b.card,
                "starting_at": START, "uniqueness_key": "shared-key",
            }),
        )
        .await
        .expect(StatusCode::OK);
    }
}
