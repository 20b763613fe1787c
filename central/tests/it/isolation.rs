//! Environment isolation: a token sees only its own environment's data, usage and invoices.

use axum::http::StatusCode;
use serde_json::{json, Value};
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

/// One environment's complete setup, with usage, so every kind of id exists.
struct World {
    b: Billing,
    invoice: String,
    billing_config: String,
}

impl World {
    async fn build(app: &TestApp, env: Env) -> World {
        let b = Billing::count(app, env, "api_call", "2", "acme", START).await;
        app.ingest(
            env,
            json!([event(
                "w1",
                "acme",
                "api_call",
                "2024-10-10T00:00:00Z",
                json!({})
            )]),
        )
        .await;
        let invoices = app.invoices(env, &b.customer, "").await;
        let invoice = text(&invoices[2], "id").to_string();
        let set = json!({ "data": [{
            "customer_id": b.customer, "billing_provider": "stripe", "delivery_method": "aws_sqs",
        }] });
        let made = app
            .post_as(env, "/v1/setCustomerBillingProviderConfigurations", set)
            .await
            .data();
        let billing_config = text(&made[0], "id").to_string();
        app.post_as(
            env,
            &format!("/v1/customers/{}/billing-config/stripe", b.customer),
            json!({ "billing_provider_customer_id": "cus_w" }),
        )
        .await
        .expect(StatusCode::OK);
        World {
            b,
            invoice,
            billing_config,
        }
    }

    fn ids(&self) -> [&str; 7] {
        [
            &self.billing_config,
            &self.b.metric,
            &self.b.product,
            &self.b.card,
            &self.b.customer,
            &self.b.contract,
            &self.invoice,
        ]
    }
}

/// Everything `env` can read about its world, through every read endpoint.
async fn snapshot(app: &TestApp, env: Env, w: &World) -> Vec<Value> {
    let b = &w.b;
    let mut reads = vec![
        app.get_as(env, &format!("/v1/billable-metrics/{}", b.metric))
            .await,
        app.get_as(env, "/v1/billable-metrics?include_archived=true")
            .await,
        app.post_as(
            env,
            "/v1/contract-pricing/products/get",
            json!({ "id": b.product }),
        )
        .await,
        app.post_as(
            env,
            "/v1/contract-pricing/products/list",
            json!({ "archive_filter": "ALL" }),
        )
        .await,
        app.post_as(
            env,
            "/v1/contract-pricing/rate-cards/get",
            json!({ "id": b.card }),
        )
        .await,
        app.post_as(env, "/v1/contract-pricing/rate-cards/list", json!({}))
            .await,
        app.post_as(
            env,
            "/v1/contract-pricing/rate-cards/getRates",
            json!({ "rate_card_id": b.card, "at": NOW }),
        )
        .await,
        app.post_as(
            env,
            "/v1/contract-pricing/rate-cards/getRateSchedule",
            json!({ "rate_card_id": b.card, "starting_at": START }),
        )
        .await,
        app.get_as(env, &format!("/v1/customers/{}", b.customer))
            .await,
        app.get_as(env, "/v1/customers?only_archived=false").await,
        app.post_as(
            env,
            "/v2/contracts/list",
            json!({ "customer_id": b.customer }),
        )
        .await,
        app.post_as(
            env,
            "/v2/contracts/get",
            json!({ "customer_id": b.customer, "contract_id": b.contract }),
        )
        .await,
        app.get_as(
            env,
            &format!("/v1/customers/{}/invoices?limit=100", b.customer),
        )
        .await,
        app.post_as(
            env,
            "/v1/getCustomerBillingProviderConfigurations",
            json!({ "customer_id": b.customer, "include_archived": true }),
        )
        .await,
        app.get_as(
            env,
            &format!("/v1/customers/{}/billing-config/stripe", b.customer),
        )
        .await,
    ];
    let mut out = Vec::new();
    for r in reads.drain(..) {
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        out.push(r.body);
    }
    out
}

/// Every endpoint, called as `actor` with `victim`'s ids: each answer is a 404 or an empty or
/// own-environment result that names none of the victim's ids.
async fn attack(app: &TestApp, actor: Env, victim: &World) -> usize {
    let b = &victim.b;
    let get = |path: String| async move { app.get_as(actor, &path).await };
    let post =
        |path: &'static str, body: Value| async move { app.post_as(actor, path, body).await };
    let responses =
        vec![
        get(format!("/v1/billable-metrics/{}", b.metric)).await,
        get("/v1/billable-metrics?include_archived=true".into()).await,
        post("/v1/billable-metrics/archive", json!({ "id": b.metric })).await,
        post(
            "/v1/contract-pricing/products/create",
            json!({ "name": "p", "type": "USAGE", "billable_metric_id": b.metric }),
        )
        .await,
        post(
            "/v1/contract-pricing/products/get",
            json!({ "id": b.product }),
        )
        .await,
        post(
            "/v1/contract-pricing/products/list",
            json!({ "archive_filter": "ALL" }),
        )
        .await,
        post(
            "/v1/contract-pricing/products/update",
            json!({ "product_id": b.product, "starting_at": START, "name": "stolen" }),
        )
        .await,
        post(
            "/v1/contract-pricing/products/archive",
            json!({ "product_id": b.product }),
        )
        .await,
        post(
            "/v1/contract-pricing/rate-cards/get",
            json!({ "id": b.card }),
        )
        .await,
        post("/v1/contract-pricing/rate-cards/list", json!({})).await,
        post(
            "/v1/contract-pricing/rate-cards/update",
            json!({ "rate_card_id": b.card, "name": "stolen" }),
        )
        .await,
        post(
            "/v1/contract-pricing/rate-cards/archive",
            json!({ "id": b.card }),
        )
        .await,
        post(
            "/v1/contract-pricing/rate-cards/getRates",
            json!({ "rate_card_id": b.card, "at": NOW }),
        )
        .await,
        post(
            "/v1/contract-pricing/rate-cards/getRateSchedule",
            json!({ "rate_card_id": b.card, "starting_at": START }),
        )
        .await,
        post(
            "/v1/contract-pricing/rate-cards/setRateCardProductsOrder",
            json!({ "rate_card_id": b.card, "product_order": [b.product] }),
        )
        .await,
        post(
            "/v1/contract-pricing/rate-cards/moveRateCardProducts",
            json!({ "rate_card_id": b.card,
                    "product_moves": [{ "product_id": b.product, "position": 0 }] }),
        )
        .await,
        post(
            "/v1/contract-pricing/rate-cards/addRate",
            json!({
                "rate_card_id": b.card, "product_id": b.product, "starting_at": START,
                "entitled": true, "rate_type": "FLAT", "price": 1,
            }),
        )
        .await,
        post(
            "/v1/contract-pricing/rate-cards/rates/add",
            json!({
                "rate_card_id": b.card, "product_id": b.product, "starting_at": START,
                "entitled": true, "rate_type": "FLAT", "price": 1,
            }),
        )
        .await,
        post(
            "/v1/contract-pricing/rate-cards/addRates",
            json!({ "rate_card_id": b.card, "rates": [{
                "product_id": b.product, "starting_at": START,
                "entitled": true, "rate_type": "FLAT", "price": 1,
            }]}),
        )
        .await,
        get(format!("/v1/customers/{}", b.customer)).await,
        get("/v1/customers".into()).await,
        get("/v1/customers?ingest_alias=acme".into()).await,
        get(format!("/v1/customers?customer_ids={}", b.customer)).await,
        post("/v1/customers/archive", json!({ "id": b.customer })).await,
        app.post_as(
            actor,
            &format!("/v1/customers/{}/setName", b.customer),
            json!({ "name": "stolen" }),
        )
        .await,
        app.post_as(
            actor,
            &format!("/v1/customers/{}/setIngestAliases", b.customer),
            json!({ "ingest_aliases": ["stolen"] }),
        )
        .await,
        post(
            "/v1/contracts/create",
            json!({ "customer_id": b.customer, "rate_card_id": b.card, "starting_at": START }),
        )
        .await,
        post(
            "/v1/contracts/get",
            json!({ "customer_id": b.customer, "contract_id": b.contract }),
        )
        .await,
        post(
            "/v2/contracts/get",
            json!({ "customer_id": b.customer, "contract_id": b.contract }),
        )
        .await,
        post("/v1/contracts/list", json!({ "customer_id": b.customer })).await,
        post("/v2/contracts/list", json!({ "customer_id": b.customer })).await,
        get(format!("/v1/customers/{}/invoices", b.customer)).await,
        get(format!(
            "/v1/customers/{}/invoices/{}",
            b.customer, victim.invoice
        ))
        .await,
        post("/v1/invoices/void", json!({ "id": victim.invoice })).await,
        post(
            "/v1/contracts/archive",
            json!({ "customer_id": b.customer, "contract_id": b.contract, "void_invoices": true }),
        )
        .await,
        post(
            "/v1/setCustomerBillingProviderConfigurations",
            json!({ "data": [{ "customer_id": b.customer, "billing_provider": "stripe",
                               "delivery_method": "tackle" }] }),
        )
        .await,
        post(
            "/v1/getCustomerBillingProviderConfigurations",
            json!({ "customer_id": b.customer, "include_archived": true }),
        )
        .await,
        post(
            "/v1/archiveCustomerBillingProviderConfigurations",
            json!({ "customer_id": b.customer,
                    "customer_billing_provider_configuration_ids": [victim.billing_config] }),
        )
        .await,
        post(
            "/v1/getCustomerRevenueSystemConfigurations",
            json!({ "customer_id": b.customer }),
        )
        .await,
        get(format!("/v1/customers/{}/billing-config/stripe", b.customer)).await,
        app.post_as(
            actor,
            &format!("/v1/customers/{}/billing-config/stripe", b.customer),
            json!({ "billing_provider_customer_id": "stolen" }),
        )
        .await,
        app.send(
            axum::http::Method::DELETE,
            &format!("/v1/customers/{}/billing-config/stripe", b.customer),
            Some(app.token(actor)),
            None,
            &[],
        )
        .await,
        // Usage addressed to the victim's customer id and alias meters nothing of the victim's.
        post(
            "/v1/ingest",
            json!([
                event(
                    "x1",
                    &b.customer,
                    "api_call",
                    "2024-10-10T00:00:00Z",
                    json!({})
                ),
                event("x2", "acme", "api_call", "2024-10-10T00:00:00Z", json!({})),
                event("w1", "acme", "api_call", "2024-10-10T00:00:00Z", json!({})),
            ]),
        )
        .await,
    ];
    for r in &responses {
        // The configuration endpoints answer an unknown customer with a 400, as upstream does.
        let message = &r.body["message"];
        let unknown_customer = r.status == StatusCode::BAD_REQUEST
            && (message == "customer_id: customer not found"
                || message == "data[0].customer_id: customer not found");
        assert!(
            r.status == StatusCode::NOT_FOUND || r.status == StatusCode::OK || unknown_customer,
            "{} {:?}",
            r.status,
            r.body
        );
        let raw = String::from_utf8_lossy(&r.raw);
        for id in victim.ids() {
            assert!(
                !raw.contains(id),
                "a {} answer names the other environment's {id}: {raw}",
                r.status
            );
        }
    }
    responses.len()
}

#[tokio::test]
async fn every_endpoint_keeps_each_environment_out_of_the_other_both_ways() {
    let app = TestApp::new(NOW).await;
    let sbx = World::build(&app, Env::Sandbox).await;
    let prd = World::build(&app, Env::Production).await;
    for (actor, victim, world) in [
        (Env::Production, Env::Sandbox, &sbx),
        (Env::Sandbox, Env::Production, &prd),
    ] {
        let before = snapshot(&app, victim, world).await;
        let calls = attack(&app, actor, world).await;
        assert!(calls >= 43, "{calls} endpoint calls");
        let after = snapshot(&app, victim, world).await;
        assert_eq!(before, after, "{actor:?} changed {victim:?} data");
    }
    // Each environment counted its own `w1` and, as the attacker, its own `acme`'s `x2`; the
    // `x1` addressed to the other environment's customer id counted nowhere (FLAT 2 per call).
    for (env, world) in [(Env::Sandbox, &sbx), (Env::Production, &prd)] {
        let inv = app
            .invoice_at(env, &world.b.customer, "2024-10-10T00:00:00Z")
            .await;
        assert_eq!(num(&inv["total"]), "4", "{env:?}");
    }
}
