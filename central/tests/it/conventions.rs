//! Conventions shared by every endpoint (contract §1): auth, error shape, body and enum parsing,
//! pagination.

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use tally_central::store::Env;

use crate::support::*;

const NOW: &str = "2024-10-15T12:00:00Z";

#[tokio::test]
async fn missing_or_bad_token_is_401_json_without_retry() {
    let app = TestApp::new(NOW).await;
    let paths = [
        (Method::GET, "/v1/billable-metrics"),
        (Method::POST, "/v1/contract-pricing/rate-cards/list"),
        (Method::GET, "/v1/credit-types/list"),
    ];
    for (method, path) in paths {
        let none = app.send(method.clone(), path, None, None, &[]).await;
        none.client_error(StatusCode::UNAUTHORIZED);
        let bad = app
            .send(
                method.clone(),
                path,
                Some("tally_sbx_not-a-token"),
                None,
                &[],
            )
            .await;
        bad.client_error(StatusCode::UNAUTHORIZED);
        // A real token under another scheme is not a bearer token.
        let scheme = format!("Basic {}", app.token(Env::Sandbox));
        let basic = app
            .send(method, path, None, None, &[("authorization", &scheme)])
            .await;
        basic.client_error(StatusCode::UNAUTHORIZED);
    }
    // The same request with the token succeeds, so the 401s were about the token.
    app.get("/v1/billable-metrics").await.expect(StatusCode::OK);
}

#[tokio::test]
async fn root_needs_no_token_and_unknown_routes_are_json_404() {
    let app = TestApp::new(NOW).await;
    let root = app.send(Method::GET, "/", None, None, &[]).await;
    let root = root.expect(StatusCode::OK);
    assert_eq!(root.body["status"], "ok");

    let r = app.get("/v1/no-such-thing").await;
    r.client_error(StatusCode::NOT_FOUND);
    let r = app
        .send(Method::POST, "/v2/nothing/here", None, None, &[])
        .await;
    r.client_error(StatusCode::NOT_FOUND);
}

/// A known path with the wrong method is a JSON 405 naming the method, with `Allow` (axum's own
/// 405 has an empty body; the contract test's unexpected-method cases found it).
#[tokio::test]
async fn a_wrong_method_is_a_json_405_with_allow() {
    let app = TestApp::new(NOW).await;
    let token = app.token(Env::Sandbox).to_string();
    for (method, path, allow) in [
        (Method::DELETE, "/v1/customers", "POST,GET,HEAD"),
        (Method::GET, "/v1/contracts/create", "POST"),
        (Method::PUT, "/v1/ingest", "POST"),
    ] {
        let r = app
            .send(method.clone(), path, Some(&token), None, &[])
            .await;
        assert_eq!(r.header("allow"), Some(allow), "{method} {path}");
        let r = r.client_error(StatusCode::METHOD_NOT_ALLOWED);
        assert!(
            r.message().contains(method.as_str()),
            "{method} {path}: {}",
            r.message()
        );
    }
}

#[tokio::test]
async fn an_empty_post_body_reads_as_an_empty_object() {
    let app = TestApp::new(NOW).await;
    let card = app.rate_card(Env::Sandbox, "Default").await;
    // The TS SDK's `rateCards.list()` sends no body at all.
    let data = app
        .post_raw("/v1/contract-pricing/rate-cards/list", None)
        .await
        .data();
    assert_eq!(data.as_array().map(Vec::len), Some(1));
    assert_eq!(data[0]["id"], card.as_str());
    let data = app
        .post_raw("/v1/contract-pricing/products/list", Some(b"  \n"))
        .await
        .data();
    assert_eq!(data, json!([]));
}

#[tokio::test]
async fn malformed_json_is_400_with_a_message_naming_the_problem() {
    let app = TestApp::new(NOW).await;
    let r = app
        .post_raw("/v1/billable-metrics/create", Some(b"{\"name\": "))
        .await
        .client_error(StatusCode::BAD_REQUEST);
    assert!(
        r.message().contains("invalid request body"),
        "{}",
        r.message()
    );

    let r = app
        .post(
            "/v1/billable-metrics/create",
            json!({ "aggregation_type": "COUNT" }),
        )
        .await
        .client_error(StatusCode::BAD_REQUEST);
    assert!(r.message().contains("name"), "{}", r.message());

    let r = app
        .post(
            "/v1/billable-metrics/create",
            json!({ "name": "m", "aggregation_type": "AVERAGE" }),
        )
        .await
        .client_error(StatusCode::BAD_REQUEST);
    assert!(r.message().contains("aggregation_type"), "{}", r.message());
    assert!(r.message().contains("AVERAGE"), "{}", r.message());

    let r = app
        .post(
            "/v1/customers",
            json!({ "name": "x", "ingest_aliases": "not-a-list" }),
        )
        .await
        .client_error(StatusCode::BAD_REQUEST);
    assert!(r.message().contains("ingest_aliases"), "{}", r.message());

    // Nothing was created by any of them.
    let list = app.get("/v1/billable-metrics").await.data();
    assert_eq!(list, json!([]));
}

#[tokio::test]
async fn unknown_request_fields_are_ignored() {
    let app = TestApp::new(NOW).await;
    let id = app
        .metric(
            Env::Sandbox,
            json!({
                "name": "calls", "aggregation_type": "COUNT",
                "some_future_field": { "nested": [1, 2] }, "another": true,
            }),
        )
        .await;
    let got = app.get(&format!("/v1/billable-metrics/{id}")).await.data();
    assert_eq!(got["name"], "calls");
    assert!(got.get("some_future_field").is_none());
    let customer = app
        .post(
            "/v1/customers",
            json!({ "name": "acme", "future_setting": { "billing_provider_type": "stripe" } }),
        )
        .await
        .data();
    assert_eq!(customer["name"], "acme");
}

#[tokio::test]
async fn enums_are_case_insensitive_in_and_canonical_out() {
    let app = TestApp::new(NOW).await;
    let env = Env::Sandbox;
    let metric = app
        .metric(
            env,
            json!({ "name": "tokens", "aggregation_type": "sum", "aggregation_key": "tokens" }),
        )
        .await;
    let got = app
        .get(&format!("/v1/billable-metrics/{metric}"))
        .await
        .data();
    assert_eq!(got["aggregation_type"], "SUM");

    let product = app
        .usage_product(
            env,
            "Tokens",
            &metric,
            json!({ "type": "usage", "quantity_rounding": { "decimal_places": 0, "rounding_method": "round_up" } }),
        )
        .await;
    let got = app
        .post(
            "/v1/contract-pricing/products/get",
            json!({ "id": product }),
        )
        .await
        .data();
    assert_eq!(got["type"], "USAGE");
    assert_eq!(
        got["current"]["quantity_rounding"]["rounding_method"],
        "ROUND_UP"
    );

    let card = app.rate_card(env, "card").await;
    let rate = app
        .post(
            "/v1/contract-pricing/rate-cards/addRate",
            json!({
                "rate_card_id": card, "product_id": product, "starting_at": "2024-10-01T00:00:00Z",
                "entitled": true, "rate_type": "flat", "price": 3,
            }),
        )
        .await
        .data();
    assert_eq!(rate["rate_type"], "FLAT");

    let customer = app.customer(env, "acme", &[]).await;
    let contract = app
        .post(
            "/v1/contracts/create",
            json!({
                "customer_id": customer, "rate_card_id": card,
                "starting_at": "2024-10-01T00:00:00Z",
                "usage_statement_schedule": { "frequency": "monthly", "day": "first_of_month" },
            }),
        )
        .await
        .id();
    let got = app
        .post(
            "/v1/contracts/get",
            json!({ "contract_id": contract, "customer_id": customer }),
        )
        .await
        .data();
    assert_eq!(
        got["current"]["usage_statement_schedule"]["frequency"],
        "MONTHLY"
    );

    // Case-insensitive query enums too.
    let drafts = app.invoices(env, &customer, "status=draft").await;
    assert_eq!(drafts.len(), 1);
    assert_eq!(drafts[0]["status"], "DRAFT");
}

#[tokio::test]
async fn limit_outside_1_to_100_is_400() {
    let app = TestApp::new(NOW).await;
    for limit in ["0", "101", "-1", "ten"] {
        app.get(&format!("/v1/billable-metrics?limit={limit}"))
            .await
            .client_error(StatusCode::BAD_REQUEST);
        app.get(&format!("/v1/customers?limit={limit}"))
            .await
            .client_error(StatusCode::BAD_REQUEST);
        app.post(
            &format!("/v1/contract-pricing/products/list?limit={limit}"),
            json!({}),
        )
        .await
        .client_error(StatusCode::BAD_REQUEST);
    }
    for limit in ["1", "100"] {
        app.get(&format!("/v1/billable-metrics?limit={limit}"))
            .await
            .expect(StatusCode::OK);
    }
}

/// Follows `next_page` from the first page to the last, returning every id in order.
async fn walk(app: &TestApp, method: Method, path: &str, limit: usize) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut url = format!("{path}{sep}limit={limit}");
        if let Some(c) = &cursor {
            url.push_str(&format!("&next_page={c}"));
        }
        let r = match method {
            Method::GET => app.get(&url).await,
            _ => app.post(&url, json!({})).await,
        };
        let body = r.expect(StatusCode::OK).body;
        let page = body["data"].as_array().expect("data array").clone();
        assert!(page.len() <= limit, "page larger than limit");
        ids.extend(page.iter().map(|v| text(v, "id").to_string()));
        match &body["next_page"] {
            Value::Null => return ids,
            Value::String(c) => {
                assert_eq!(page.len(), limit, "a non-final page must be full");
                cursor = Some(c.clone());
            }
            other => panic!("bad next_page {other}"),
        }
    }
    panic!("pagination did not end");
}

#[tokio::test]
async fn pagination_walks_every_item_exactly_once() {
    let app = TestApp::new(NOW).await;
    let env = Env::Sandbox;
    let mut metrics = Vec::new();
    let mut products = Vec::new();
    let mut customers = Vec::new();
    for i in 0..7 {
        let m = app
            .metric(
                env,
                json!({ "name": format!("m{i}"), "aggregation_type": "COUNT" }),
            )
            .await;
        products.push(
            app.usage_product(env, &format!("p{i}"), &m, Value::Null)
                .await,
        );
        metrics.push(m);
        customers.push(app.customer(env, &format!("c{i}"), &[]).await);
    }
    for limit in [1, 3, 7, 100] {
        assert_eq!(
            walk(&app, Method::GET, "/v1/billable-metrics", limit).await,
            metrics
        );
        assert_eq!(
            walk(&app, Method::GET, "/v1/customers", limit).await,
            customers
        );
        assert_eq!(
            walk(
                &app,
                Method::POST,
                "/v1/contract-pricing/products/list",
                limit
            )
            .await,
            products
        );
    }
    // The default page is 25, so all seven fit and there is no next page.
    let body = app.get("/v1/customers").await.expect(StatusCode::OK).body;
    assert_eq!(body["data"].as_array().map(Vec::len), Some(7));
    assert_eq!(body["next_page"], Value::Null);
}

#[tokio::test]
async fn a_garbage_cursor_is_400() {
    let app = TestApp::new(NOW).await;
    app.metric(
        Env::Sandbox,
        json!({ "name": "m", "aggregation_type": "COUNT" }),
    )
    .await;
    for cursor in ["garbage!!", "bm90LWEtY3Vyc29y", "cC01"] {
        let r = app
            .get(&format!("/v1/billable-metrics?next_page={cursor}"))
            .await
            .client_error(StatusCode::BAD_REQUEST);
        assert!(r.message().contains("next_page"), "{}", r.message());
        app.get(&format!("/v1/customers?next_page={cursor}"))
            .await
            .client_error(StatusCode::BAD_REQUEST);
        app.post(
            &format!("/v1/contract-pricing/products/list?next_page={cursor}"),
            json!({}),
        )
        .await
        .client_error(StatusCode::BAD_REQUEST);
    }
}

#[tokio::test]
async fn an_oversized_admin_body_is_413_json() {
    let app = TestApp::new(NOW).await;
    let name = "n".repeat(1 << 20);
    let r = app
        .post("/v1/customers", json!({ "name": name }))
        .await
        .client_error(StatusCode::PAYLOAD_TOO_LARGE);
    assert!(r.message().contains("bytes"), "{}", r.message());
    assert_eq!(app.get("/v1/customers").await.data(), json!([]));
}

#[tokio::test]
async fn trailing_bytes_after_a_json_body_are_400_and_store_nothing() {
    let app = TestApp::new(NOW).await;
    for body in [
        &br#"{"name": "A"} x"#[..],
        br#"{"name": "A"}{}"#,
        br#"{"name": "A"}]"#,
    ] {
        app.post_raw("/v1/customers", Some(body))
            .await
            .client_error(StatusCode::BAD_REQUEST);
    }
    // Trailing whitespace is still fine.
    app.post_raw("/v1/customers", Some(b"{\"name\": \"B\"} \n"))
        .await
        .expect(StatusCode::OK);
    let names: Vec<Value> = app
        .get("/v1/customers")
        .await
        .data()
        .as_array()
        .expect("list")
        .iter()
        .map(|c| c["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("B")]);
}

#[tokio::test]
async fn nul_in_an_id_or_a_body_is_400() {
    let app = TestApp::new(NOW).await;
    app.get("/v1/customers/abc%00def")
        .await
        .client_error(StatusCode::BAD_REQUEST);
    app.get("/v1/customers?ingest_alias=a%00b")
        .await
        .client_error(StatusCode::BAD_REQUEST);
    app.post("/v1/customers", json!({ "name": "a\u{0}b" }))
        .await
        .client_error(StatusCode::BAD_REQUEST);
    app.post(
        "/v1/customers",
        json!({ "name": "ok", "custom_fields": { "k\u{0}": "v" } }),
    )
    .await
    .client_error(StatusCode::BAD_REQUEST);
    assert_eq!(app.get("/v1/customers").await.data(), json!([]));
}
