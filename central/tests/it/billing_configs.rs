//! Billing-provider, revenue-system and legacy billing configurations: stored on customer
//! create and by their own endpoints, read back in Metronome's shapes, refused with a 400 naming
//! the field when invalid (changing nothing), and resolved onto contracts.

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use tally_central::store::Env;

use crate::support::*;

const SBX: Env = Env::Sandbox;
const NOW: &str = "2024-10-15T12:00:00Z";
const SET: &str = "/v1/setCustomerBillingProviderConfigurations";
const GET: &str = "/v1/getCustomerBillingProviderConfigurations";
const ARCHIVE: &str = "/v1/archiveCustomerBillingProviderConfigurations";

async fn configs(app: &TestApp, customer: &str, include_archived: bool) -> Vec<Value> {
    let body = json!({ "customer_id": customer, "include_archived": include_archived });
    let data = app.post(GET, body).await.data();
    data.as_array().expect("configurations").clone()
}

fn ids(configs: &[Value]) -> Vec<&str> {
    configs.iter().map(|c| text(c, "id")).collect()
}

#[tokio::test]
async fn customer_create_stores_every_configuration_and_reads_them_back() {
    let app = TestApp::new(NOW).await;
    let customer = app
        .post(
            "/v1/customers",
            json!({
                "name": "acme",
                "billing_config": {
                    "billing_provider_type": "stripe", "billing_provider_customer_id": "cus_1",
                    "stripe_collection_method": "send_invoice",
                },
                "customer_billing_provider_configurations": [
                    { "billing_provider": "stripe", "delivery_method": "direct_to_billing_provider",
                      "configuration": { "stripe_customer_id": "cus_1", "rate": dec("0.1000000000000000000001") },
                      "tax_provider": "anrok" },
                    { "billing_provider": "AWS_MARKETPLACE", "delivery_method": "tackle" },
                ],
                "customer_revenue_system_configurations": [
                    { "provider": "netsuite", "delivery_method": "direct_to_billing_provider",
                      "configuration": { "netsuite_customer_id": "12345" } },
                ],
            }),
        )
        .await
        .id();
    let got = configs(&app, &customer, false).await;
    assert_eq!(got.len(), 2);
    let stripe = &got[0];
    assert_eq!(stripe["customer_id"], customer.as_str());
    assert_eq!(stripe["billing_provider"], "stripe");
    assert_eq!(stripe["delivery_method"], "direct_to_billing_provider");
    assert_eq!(stripe["tax_provider"], "anrok");
    assert_eq!(stripe["archived_at"], Value::Null);
    assert_eq!(stripe["delivery_method_configuration"], json!({}));
    assert_eq!(stripe["configuration"]["stripe_customer_id"], "cus_1");
    assert_eq!(
        num(&stripe["configuration"]["rate"]),
        "0.1000000000000000000001"
    );
    assert!(uuid::Uuid::parse_str(text(stripe, "id")).is_ok());
    assert!(uuid::Uuid::parse_str(text(stripe, "delivery_method_id")).is_ok());
    assert_eq!(got[1]["billing_provider"], "aws_marketplace");
    assert_eq!(got[1]["configuration"], json!({}));
    assert!(got[1].get("tax_provider").is_none());

    let revenue = app
        .post(
            "/v1/getCustomerRevenueSystemConfigurations",
            json!({ "customer_id": customer, "provider": "netsuite" }),
        )
        .await
        .data();
    assert_eq!(revenue.as_array().map(Vec::len), Some(1));
    assert_eq!(revenue[0]["provider"], "netsuite");
    assert_eq!(revenue[0]["configuration"]["netsuite_customer_id"], "12345");
    assert_eq!(revenue[0]["customer_id"], customer.as_str());

    let legacy = app
        .get(&format!("/v1/customers/{customer}/billing-config/stripe"))
        .await
        .data();
    assert_eq!(
        legacy,
        json!({ "billing_provider_customer_id": "cus_1", "stripe_collection_method": "send_invoice" })
    );
    // The customer's own shapes are unchanged.
    let detail = app.get(&format!("/v1/customers/{customer}")).await.data();
    assert!(detail.get("billing_provider_configurations").is_none());
}

#[tokio::test]
async fn bad_configurations_are_refused_naming_the_field_and_change_nothing() {
    let app = TestApp::new(NOW).await;
    let stripe = json!({ "billing_provider": "stripe", "delivery_method": "aws_sqs" });
    let cases = [
        (
            json!({ "billing_provider": "paypal", "delivery_method": "aws_sqs" }),
            "billing_provider",
        ),
        (
            json!({ "billing_provider": "stripe", "delivery_method": "fax" }),
            "delivery_method",
        ),
        (json!({ "billing_provider": "stripe" }), "delivery_method"),
        (
            json!({ "billing_provider": "stripe", "delivery_method_id": "5b9e3072-415b-4842-94f0-0b6700c8b6be" }),
            "delivery_method_id",
        ),
        (
            json!({ "billing_provider": "stripe", "delivery_method": "tackle", "tax_provider": "irs" }),
            "tax_provider",
        ),
        (
            json!({ "billing_provider": "workday", "delivery_method": "tackle" }),
            "billing_provider",
        ),
        (
            json!({ "billing_provider": "stripe", "delivery_method": "tackle", "configuration": [1] }),
            "configuration",
        ),
    ];
    for (bad, field) in &cases {
        let body = json!({
            "name": "acme", "ingest_aliases": ["acme"],
            "customer_billing_provider_configurations": [stripe, bad],
        });
        let r = app
            .post("/v1/customers", body)
            .await
            .client_error(StatusCode::BAD_REQUEST);
        assert!(r.message().contains(field), "{field}: {}", r.message());
    }
    let r = app
        .post(
            "/v1/customers",
            json!({ "name": "acme", "customer_revenue_system_configurations": [{ "provider": "sap" }] }),
        )
        .await
        .client_error(StatusCode::BAD_REQUEST);
    assert!(r.message().contains("provider"), "{}", r.message());
    let r = app
        .post(
            "/v1/customers",
            json!({ "name": "acme", "billing_config": { "billing_provider_type": "stripe", "billing_provider_customer_id": " " } }),
        )
        .await
        .client_error(StatusCode::BAD_REQUEST);
    assert!(r.message().contains("billing_provider_customer_id"));
    // No customer was created by any of them: the alias is still free.
    let listed = app.get("/v1/customers").await.data();
    assert_eq!(listed, json!([]));
    app.customer(SBX, "acme", &["acme"]).await;

    // Too many configurations on create.
    let many: Vec<Value> = (0..51).map(|_| stripe.clone()).collect();
    let r = app
        .post(
            "/v1/customers",
            json!({ "name": "big", "customer_billing_provider_configurations": many }),
        )
        .await
        .client_error(StatusCode::BAD_REQUEST);
    assert!(r.message().contains("at most 50"), "{}", r.message());
}

#[tokio::test]
async fn set_get_archive_across_customers_all_or_nothing() {
    let app = TestApp::new(NOW).await;
    let a = app.customer(SBX, "a", &[]).await;
    let b = app.customer(SBX, "b", &[]).await;
    let item = |customer: &str, provider: &str| {
        json!({ "customer_id": customer, "billing_provider": provider, "delivery_method": "direct_to_billing_provider",
                "configuration": { "who": customer } })
    };
    // A bad item (unknown customer, bad enum) refuses the whole call: nothing is written.
    let r = app
        .post(
            SET,
            json!({ "data": [item(&a, "stripe"), item("8a0ae9b8-7c12-4c3f-9f5b-000000000000", "stripe")] }),
        )
        .await
        .client_error(StatusCode::BAD_REQUEST);
    assert!(r.message().contains("customer"), "{}", r.message());
    let r = app
        .post(
            SET,
            json!({ "data": [item(&a, "stripe"), item(&b, "venmo")] }),
        )
        .await
        .client_error(StatusCode::BAD_REQUEST);
    assert!(
        r.message().contains("data[1].billing_provider"),
        "{}",
        r.message()
    );
    app.post(SET, json!({ "data": [] }))
        .await
        .client_error(StatusCode::BAD_REQUEST);
    assert!(configs(&app, &a, true).await.is_empty());

    let made = app
        .post(
            SET,
            json!({ "data": [item(&a, "stripe"), item(&b, "netsuite"), item(&a, "custom")] }),
        )
        .await
        .data();
    let made = made.as_array().expect("configurations").clone();
    assert_eq!(made.len(), 3);
    assert_eq!(made[1]["customer_id"], b.as_str());
    assert_eq!(made[1]["billing_provider"], "netsuite");
    assert_eq!(made[2]["billing_provider"], "custom");
    let of_a = configs(&app, &a, false).await;
    assert_eq!(ids(&of_a), vec![text(&made[0], "id"), text(&made[2], "id")]);
    assert_eq!(of_a[0]["configuration"]["who"], a.as_str());
    // The same delivery method has the same id everywhere; giving the id alone names it.
    assert_eq!(made[0]["delivery_method_id"], of_a[0]["delivery_method_id"]);
    let by_id = app
        .post(
            SET,
            json!({ "data": [{ "customer_id": b, "billing_provider": "stripe",
                               "delivery_method_id": made[0]["delivery_method_id"] }] }),
        )
        .await
        .data();
    assert_eq!(by_id[0]["delivery_method"], "direct_to_billing_provider");

    // Archive: an id of another customer refuses the call; archived ones are listed on request.
    let r = app
        .post(
            ARCHIVE,
            json!({ "customer_id": a, "customer_billing_provider_configuration_ids": [made[0]["id"], made[1]["id"]] }),
        )
        .await
        .client_error(StatusCode::BAD_REQUEST);
    assert!(r.message().contains(text(&made[1], "id")));
    assert_eq!(configs(&app, &a, false).await.len(), 2);
    let archived = app
        .post(
            ARCHIVE,
            json!({ "customer_id": a, "customer_billing_provider_configuration_ids": [made[0]["id"]] }),
        )
        .await
        .data();
    assert_eq!(archived["customer_id"], a.as_str());
    assert_eq!(
        archived["customer_billing_provider_configuration_ids"],
        json!([made[0]["id"]])
    );
    let active = configs(&app, &a, false).await;
    assert_eq!(ids(&active), vec![text(&made[2], "id")]);
    let all = configs(&app, &a, true).await;
    assert_eq!(all.len(), 2);
    assert_eq!(all[0]["archived_at"], NOW);
    // Unknown customer on get: a 400, as upstream documents.
    app.post(GET, json!({ "customer_id": "nobody" }))
        .await
        .client_error(StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sets_on_one_customer_lose_no_configuration() {
    let app = Arc::new(TestApp::new(NOW).await);
    let customer = app.customer(SBX, "acme", &[]).await;
    let requests = (0..40)
        .map(|i| {
            let body = json!({ "data": [{
                "customer_id": customer, "billing_provider": "stripe",
                "delivery_method": "direct_to_billing_provider",
                "configuration": { "n": i },
            }] });
            (SET.to_string(), body)
        })
        .collect();
    let mut acknowledged = Vec::new();
    for r in all_at_once(&app, requests).await {
        let data = r.data();
        acknowledged.push(text(&data[0], "id").to_string());
    }
    let stored = configs(&app, &customer, false).await;
    assert_eq!(stored.len(), 40);
    for id in &acknowledged {
        assert!(ids(&stored).contains(&id.as_str()), "lost {id}");
    }
    // The limit holds under concurrency too: 10 more fit, then every further one is refused.
    let more = (0..15)
        .map(|_| {
            let body = json!({ "data": [{ "customer_id": customer, "billing_provider": "netsuite",
                                          "delivery_method": "aws_sns" }] });
            (SET.to_string(), body)
        })
        .collect();
    let ok = all_at_once(&app, more)
        .await
        .into_iter()
        .filter(|r| r.status == StatusCode::OK)
        .count();
    assert_eq!(ok, 10);
    assert_eq!(configs(&app, &customer, true).await.len(), 50);
}

#[tokio::test]
async fn legacy_billing_config_set_get_delete() {
    let app = TestApp::new(NOW).await;
    let customer = app.customer(SBX, "acme", &[]).await;
    let path = format!("/v1/customers/{customer}/billing-config/aws_marketplace");
    app.get(&path).await.client_error(StatusCode::NOT_FOUND);
    let r = app
        .post(
            &path,
            json!({ "billing_provider_customer_id": "c1", "aws_region": "mars-1" }),
        )
        .await
        .client_error(StatusCode::BAD_REQUEST);
    assert!(r.message().contains("aws_region"), "{}", r.message());
    let set = app
        .post(
            &path,
            json!({ "billing_provider_customer_id": "c1", "aws_region": "us-east-1",
                    "aws_product_code": "p", "aws_customer_id": "ac" }),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(set.body, Value::Null);
    let got = app.get(&path).await.data();
    assert_eq!(
        got,
        json!({ "billing_provider_customer_id": "c1", "aws_region": "us-east-1",
                "aws_product_code": "p", "aws_customer_id": "ac" })
    );
    app.get(&format!("/v1/customers/{customer}/billing-config/fax"))
        .await
        .client_error(StatusCode::BAD_REQUEST);
    app.get("/v1/customers/nobody/billing-config/stripe")
        .await
        .client_error(StatusCode::NOT_FOUND);
    let token = app.token(SBX).to_string();
    app.send(Method::DELETE, &path, Some(&token), None, &[])
        .await
        .expect(StatusCode::OK);
    app.get(&path).await.client_error(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_contract_bills_through_one_of_the_customers_configurations() {
    let app = TestApp::new(NOW).await;
    let b = Billing::count(&app, SBX, "call", "1", "acme", "2024-10-01T00:00:00Z").await;
    let made = app
        .post(
            SET,
            json!({ "data": [
                { "customer_id": b.customer, "billing_provider": "stripe", "delivery_method": "direct_to_billing_provider" },
                { "customer_id": b.customer, "billing_provider": "aws_marketplace", "delivery_method": "tackle" },
                { "customer_id": b.customer, "billing_provider": "aws_marketplace", "delivery_method": "tackle" },
            ] }),
        )
        .await
        .data();
    let create = |lookup: Value| {
        json!({ "customer_id": b.customer, "rate_card_id": b.card, "starting_at": "2024-10-01T00:00:00Z",
                "billing_provider_configuration": lookup })
    };
    let refused = [
        (
            json!({ "billing_provider": "netsuite", "delivery_method": "aws_sqs" }),
            "no active",
        ),
        (
            json!({ "billing_provider": "aws_marketplace", "delivery_method": "tackle" }),
            "several",
        ),
        (
            json!({ "billing_provider": "stripe" }),
            "billing_provider_configuration",
        ),
        (
            json!({ "billing_provider_configuration_id": made[0]["id"], "billing_provider": "stripe",
                 "delivery_method": "direct_to_billing_provider" }),
            "not both",
        ),
        (
            json!({ "billing_provider_configuration_id": "9b0c7f43-0d5e-4b35-8d3b-7d4b1cf5e0a1" }),
            "no active",
        ),
        (
            json!({ "billing_provider": "paypal", "delivery_method": "tackle" }),
            "billing_provider",
        ),
    ];
    let before = app
        .post("/v1/contracts/list", json!({ "customer_id": b.customer }))
        .await
        .data();
    for (lookup, says) in refused {
        let r = app
            .post("/v1/contracts/create", create(lookup))
            .await
            .client_error(StatusCode::BAD_REQUEST);
        assert!(r.message().contains(says), "{says}: {}", r.message());
    }
    let by_pair = app
        .post(
            "/v1/contracts/create",
            create(json!({ "billing_provider": "stripe", "delivery_method": "direct_to_billing_provider" })),
        )
        .await
        .id();
    let by_id = app
        .post(
            "/v1/contracts/create",
            create(json!({ "billing_provider_configuration_id": made[2]["id"] })),
        )
        .await
        .id();
    let get = |path: &'static str, id: String| {
        let app = &app;
        let customer = b.customer.clone();
        async move {
            app.post(path, json!({ "customer_id": customer, "contract_id": id }))
                .await
                .data()
        }
    };
    let v1 = get("/v1/contracts/get", by_pair.clone()).await;
    let cfg = &v1["customer_billing_provider_configuration"];
    assert_eq!(cfg["id"], made[0]["id"]);
    assert_eq!(cfg["billing_provider"], "stripe");
    assert_eq!(cfg["customer_id"], b.customer.as_str());
    assert_eq!(cfg["archived_at"], Value::Null);
    let v2 = get("/v2/contracts/get", by_id.clone()).await;
    assert_eq!(
        v2["customer_billing_provider_configuration"]["id"],
        made[2]["id"]
    );
    // The first contract has none; refused creates left nothing behind.
    let first = get("/v1/contracts/get", b.contract.clone()).await;
    assert!(first
        .get("customer_billing_provider_configuration")
        .is_none());
    let after = app
        .post("/v1/contracts/list", json!({ "customer_id": b.customer }))
        .await
        .data();
    assert_eq!(
        after.as_array().map(Vec::len),
        before.as_array().map(|v| v.len() + 2)
    );

    // Archiving the configuration archives it on the contract; it can no longer be chosen.
    app.post(
        ARCHIVE,
        json!({ "customer_id": b.customer, "customer_billing_provider_configuration_ids": [made[2]["id"]] }),
    )
    .await
    .expect(StatusCode::OK);
    let v2 = get("/v2/contracts/get", by_id).await;
    assert_eq!(
        v2["customer_billing_provider_configuration"]["archived_at"],
        NOW
    );
    let listed = app
        .post("/v2/contracts/list", json!({ "customer_id": b.customer }))
        .await
        .data();
    assert!(listed
        .as_array()
        .expect("contracts")
        .iter()
        .any(|c| c["customer_billing_provider_configuration"]["id"] == made[0]["id"]));
    let r = app
        .post(
            "/v1/contracts/create",
            create(json!({ "billing_provider_configuration_id": made[2]["id"] })),
        )
        .await
        .client_error(StatusCode::BAD_REQUEST);
    assert!(r.message().contains("no active"));
    // With one tackle configuration left, the pair is no longer ambiguous.
    app.post(
        "/v1/contracts/create",
        create(json!({ "billing_provider": "aws_marketplace", "delivery_method": "tackle" })),
    )
    .await
    .expect(StatusCode::OK);
    // revenue_system_configuration on a contract is refused, not dropped.
    let mut body = create(Value::Null);
    body["revenue_system_configuration"] = json!({ "provider": "netsuite" });
    let r = app
        .post("/v1/contracts/create", body)
        .await
        .client_error(StatusCode::BAD_REQUEST);
    assert!(r.message().contains("revenue_system_configuration"));
}
