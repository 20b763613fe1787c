//! Concurrent read-modify-writes of one document on one process: every acknowledged change is
//! there afterwards (optimistic concurrency: a version checked on update, retried on conflict).

use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::{json, Value};
use tally_central::store::Env;

use crate::support::*;

const SBX: Env = Env::Sandbox;
const NOW: &str = "2024-10-15T12:00:00Z";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_concurrent_product_updates_are_all_kept() {
    let app = Arc::new(TestApp::new(NOW).await);
    let metric = app
        .metric(SBX, json!({ "name": "calls", "aggregation_type": "COUNT" }))
        .await;
    let product = app.usage_product(SBX, "calls", &metric, Value::Null).await;
    let updates = (0..60)
        .map(|i| {
            let at = ts(ms("2025-01-01T00:00:00Z") + i * HOUR_MS);
            let body = json!({ "product_id": product, "starting_at": at, "name": format!("v{i}") });
            ("/v1/contract-pricing/products/update".to_string(), body)
        })
        .collect();
    for r in all_at_once(&app, updates).await {
        r.expect(StatusCode::OK);
    }
    let got = app
        .post(
            "/v1/contract-pricing/products/get",
            json!({ "id": product }),
        )
        .await
        .data();
    let mut names: Vec<String> = got["updates"]
        .as_array()
        .expect("updates")
        .iter()
        .map(|u| text(u, "name").to_string())
        .collect();
    names.sort_by_key(|n| n[1..].parse::<u32>().expect("vN"));
    let expected: Vec<String> = (0..60).map(|i| format!("v{i}")).collect();
    assert_eq!(names, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_customer_changes_are_all_kept() {
    let app = Arc::new(TestApp::new(NOW).await);
    let ids: Vec<String> = {
        let mut ids = Vec::new();
        for i in 0..20 {
            ids.push(app.customer(SBX, &format!("c{i}"), &[]).await);
        }
        ids
    };
    // On each customer at once: a rename and a new alias list.
    let mut requests = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        requests.push((
            format!("/v1/customers/{id}/setName"),
            json!({ "name": format!("renamed {i}") }),
        ));
        requests.push((
            format!("/v1/customers/{id}/setIngestAliases"),
            json!({ "ingest_aliases": [format!("alias-{i}")] }),
        ));
    }
    for r in all_at_once(&app, requests).await {
        r.expect(StatusCode::OK);
    }
    for (i, id) in ids.iter().enumerate() {
        let c = app.get(&format!("/v1/customers/{id}")).await.data();
        assert_eq!(c["name"], format!("renamed {i}").as_str(), "{c}");
        assert_eq!(c["ingest_aliases"], json!([format!("alias-{i}")]), "{c}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_rate_card_updates_are_all_kept() {
    let app = Arc::new(TestApp::new(NOW).await);
    let card = app.rate_card(SBX, "card").await;
    let path = "/v1/contract-pricing/rate-cards/update".to_string();
    let requests = vec![
        (
            path.clone(),
            json!({ "rate_card_id": card, "name": "renamed" }),
        ),
        (
            path.clone(),
            json!({ "rate_card_id": card, "description": "described" }),
        ),
        (
            path.clone(),
            json!({ "rate_card_id": card, "aliases": [{ "name": "std" }] }),
        ),
        (
            "/v1/contract-pricing/rate-cards/archive".to_string(),
            json!({ "id": card }),
        ),
    ];
    for r in all_at_once(&app, requests).await {
        r.expect(StatusCode::OK);
    }
    let got = app
        .post("/v1/contract-pricing/rate-cards/get", json!({ "id": card }))
        .await
        .data();
    assert_eq!(got["name"], "renamed", "{got}");
    assert_eq!(got["description"], "described", "{got}");
    assert_eq!(got["aliases"][0]["name"], "std", "{got}");
    let doc = app.state.stores.config.get_doc(SBX, "rate_card", &card);
    let doc = doc.await.expect("store").expect("the card");
    assert!(doc.archived, "the archive was lost: {}", doc.body);
}
