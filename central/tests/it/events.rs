//! The event store and `POST /v1/events/search`: what each event matched (customer, metrics),
//! duplicates, the 34-day window, rejected events, finalized periods, retention and exactly-once
//! storage under concurrent ingest, on both backends.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::{json, Value};
use tally_central::store::Env;
use tally_core::time::{DAY_MS, HOUR_MS};

use crate::store_conformance::Backend;
use crate::support::*;

const NOW: &str = "2024-10-15T12:00:00Z";
const START: &str = "2024-09-01T00:00:00Z";
const AT: &str = "2024-10-10T08:30:00Z";
const SBX: Env = Env::Sandbox;

async fn search(app: &TestApp, ids: &[&str]) -> Vec<Value> {
    let r = app
        .post("/v1/events/search", json!({ "transactionIds": ids }))
        .await
        .expect(StatusCode::OK);
    r.body.as_array().expect("a bare array").clone()
}

fn row<'a>(rows: &'a [Value], tid: &str, duplicate: bool) -> &'a Value {
    let mut hits = rows
        .iter()
        .filter(|r| r["transaction_id"] == tid && r["is_duplicate"] == duplicate);
    let found = hits
        .next()
        .unwrap_or_else(|| panic!("no row {tid} {duplicate}"));
    assert!(hits.next().is_none(), "two rows {tid} {duplicate}");
    found
}

/// Counted rows of `env` in the event store, per transaction id.
async fn stored_counts(app: &TestApp, customer_refs: &[&str]) -> BTreeMap<String, usize> {
    let refs: Vec<String> = customer_refs.iter().map(|r| r.to_string()).collect();
    let events = app
        .state
        .stores
        .usage
        .events_between(SBX, &refs, 0, i64::MAX)
        .await
        .unwrap();
    let mut counts = BTreeMap::new();
    for e in events {
        *counts.entry(e.transaction_id).or_insert(0) += 1;
    }
    counts
}

async fn search_explains_each_event(backend: Backend) {
    let app = TestApp::on_backend(NOW, backend).await;
    let b = Billing::count(&app, SBX, "call", "1", "acme", START).await;
    let old_at = ts(ms(NOW) - 34 * DAY_MS + HOUR_MS);
    let r = app
        .ingest(
            SBX,
            json!([
                // Sent under the alias, matching the metric.
                event(
                    "m1",
                    "acme",
                    "call",
                    AT,
                    json!({ "n": 1.5, "flag": true, "s": "x" })
                ),
                // The customer's id, matching no metric.
                event("u1", &b.customer, "other", AT, json!({})),
                // An unknown customer: stored, metered under its reference, no customer.
                event("x1", "nobody", "call", AT, json!({})),
                // A later delivery of m1 with another timestamp: a duplicate.
                event("m1", "acme", "call", "2024-10-11T00:00:00Z", json!({})),
                // Rejected: never stored.
                event("bad", "acme", "call", "yesterday", json!({})),
                // Accepted now, out of the window two hours later.
                event("old", "acme", "call", &old_at, json!({})),
            ]),
        )
        .await;
    assert_eq!(
        (r["accepted"].as_u64(), r["duplicates"].as_u64()),
        (Some(4), Some(1))
    );
    let processed_at = ts(ms(NOW));
    app.set_now_ms(ms(NOW) + 2 * HOUR_MS);
    let rows = search(&app, &["m1", "u1", "x1", "bad", "old", "never"]).await;
    let tids: Vec<(&str, bool)> = rows
        .iter()
        .map(|r| {
            (
                r["transaction_id"].as_str().unwrap(),
                r["is_duplicate"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        tids,
        [("m1", false), ("m1", true), ("u1", false), ("x1", false)]
    );

    let m1 = row(&rows, "m1", false);
    assert_eq!(m1["customer_id"], "acme");
    assert_eq!(m1["event_type"], "call");
    assert_eq!(m1["timestamp"], AT);
    assert_eq!(m1["processed_at"], processed_at);
    assert_eq!(
        m1["properties"],
        json!({ "n": "1.5", "flag": "true", "s": "x" })
    );
    assert_eq!(
        m1["matched_customer"],
        json!({ "id": b.customer, "name": "acme inc" })
    );
    let metrics = m1["matched_billable_metrics"].as_array().unwrap();
    assert_eq!(metrics.len(), 1);
    assert_eq!(metrics[0]["id"], b.metric.as_str());
    assert_eq!(metrics[0]["name"], "call count");
    assert_eq!(metrics[0]["aggregation_type"], "COUNT");
    assert_eq!(m1["finalized_invoice_ids"], json!([]));

    let dup = row(&rows, "m1", true);
    assert_eq!(dup["timestamp"], "2024-10-11T00:00:00Z");
    assert_eq!(dup["properties"], json!({}));
    assert_ne!(dup["id"], m1["id"]);
    // Stable ids.
    let again = search(&app, &["m1"]).await;
    assert_eq!(again[0]["id"], m1["id"]);
    assert_eq!(again[1]["id"], dup["id"]);

    let u1 = row(&rows, "u1", false);
    assert_eq!(u1["matched_billable_metrics"], json!([]));
    assert_eq!(u1["matched_customer"]["id"], b.customer.as_str());

    let x1 = row(&rows, "x1", false);
    assert_eq!(x1["customer_id"], "nobody");
    assert!(x1["matched_customer"].is_null());
    assert_eq!(x1["matched_billable_metrics"][0]["id"], b.metric.as_str());

    // The customer is resolved at read time: the alias given to a customer later attributes
    // the earlier event to it, as billing does.
    let other = app.customer(SBX, "nobody corp", &["nobody"]).await;
    let rows = search(&app, &["x1"]).await;
    assert_eq!(rows[0]["matched_customer"]["id"], other.as_str());
    // The old event is still stored (retention), only out of search's window.
    assert_eq!(stored_counts(&app, &["acme"]).await.get("old"), Some(&1));
    // Another environment sees nothing.
    let prod = app
        .post_as(
            Env::Production,
            "/v1/events/search",
            json!({ "transactionIds": ["m1"] }),
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(prod.body, json!([]));
}

async fn a_finalized_period_is_flagged(backend: Backend) {
    let app = TestApp::on_backend("2024-10-02T12:00:00Z", backend).await;
    let b = Billing::count(&app, SBX, "call", "1", "acme", START).await;
    app.ingest(
        SBX,
        json!([event(
            "sept-early",
            "acme",
            "call",
            "2024-09-20T10:00:00Z",
            json!({})
        )]),
    )
    .await;
    // September's invoice is past its 24 h grace: the job finalizes it.
    app.run_jobs().await;
    let sept = app
        .invoice_at(SBX, &b.customer, "2024-09-20T10:00:00Z")
        .await;
    assert_eq!(sept["status"], "FINALIZED");
    assert_eq!(num(&sept["total"]), "1");
    app.ingest(
        SBX,
        json!([
            event(
                "sept-late",
                "acme",
                "call",
                "2024-09-21T10:00:00Z",
                json!({})
            ),
            event("oct", "acme", "call", "2024-10-01T10:00:00Z", json!({})),
        ]),
    )
    .await;
    let rows = search(&app, &["sept-early", "sept-late", "oct"]).await;
    let flags: Vec<(&str, &Value)> = rows
        .iter()
        .map(|r| {
            (
                r["transaction_id"].as_str().unwrap(),
                &r["finalized_invoice_ids"],
            )
        })
        .collect();
    let sept_id = json!([sept["id"]]);
    assert_eq!(
        flags,
        [
            ("oct", &json!([])),
            ("sept-early", &sept_id),
            ("sept-late", &sept_id)
        ]
    );
}

async fn retention_prunes_old_events(backend: Backend) {
    let app = TestApp::on_backend(NOW, backend).await;
    app.ingest(
        SBX,
        json!([
            event("a", "acme", "call", &ts(ms(NOW) - 10 * DAY_MS), json!({})),
            event("b", "acme", "call", NOW, json!({})),
        ]),
    )
    .await;
    // The default retention (400 days) keeps both after 300 days.
    app.set_now_ms(ms(NOW) + 300 * DAY_MS);
    app.run_jobs().await;
    assert_eq!(stored_counts(&app, &["acme"]).await.len(), 2);
    // 395 days after NOW, "a" is 405 days old: pruned; "b" (395 days) stays; then both go.
    app.set_now_ms(ms(NOW) + 395 * DAY_MS);
    app.run_jobs().await;
    let left: Vec<String> = stored_counts(&app, &["acme"]).await.into_keys().collect();
    assert_eq!(left, ["b"]);
    app.set_now_ms(ms(NOW) + 400 * DAY_MS + 1);
    app.run_jobs().await;
    assert!(stored_counts(&app, &["acme"]).await.is_empty());
}

async fn concurrent_ingest_stores_each_event_once(backend: Backend) {
    let app = Arc::new(TestApp::on_backend(NOW, backend).await);
    Billing::count(&app, SBX, "call", "1", "acme", START).await;
    // 40 requests of 10 events over 150 distinct ids: every id is sent by several requests.
    let requests: Vec<(String, Value)> = (0..40)
        .map(|r| {
            let events: Vec<Value> = (0..10)
                .map(|i| {
                    let id = (r * 7 + i * 13) % 150;
                    event(&format!("t{id}"), "acme", "call", AT, json!({}))
                })
                .collect();
            ("/v1/ingest".to_string(), Value::Array(events))
        })
        .collect();
    let sent: BTreeSet<String> = requests
        .iter()
        .flat_map(|(_, b)| b.as_array().unwrap().iter())
        .map(|e| e["transaction_id"].as_str().unwrap().to_string())
        .collect();
    let mut accepted = 0;
    for r in all_at_once(&app, requests).await {
        accepted += r.expect(StatusCode::OK).data()["accepted"]
            .as_u64()
            .unwrap();
    }
    let counts = stored_counts(&app, &["acme"]).await;
    assert_eq!(accepted, u64::try_from(sent.len()).unwrap());
    assert_eq!(counts.keys().cloned().collect::<BTreeSet<_>>(), sent);
    assert!(counts.values().all(|n| *n == 1));
    // And the invoice counts each once.
    let total = num(&app.invoice_at(SBX, &app_customer(&app).await, AT).await["total"]);
    assert_eq!(total, sent.len().to_string());
}

async fn app_customer(app: &TestApp) -> String {
    let data = app.get("/v1/customers").await.data();
    data[0]["id"].as_str().unwrap().to_string()
}

both_backends!(
    search_explains_each_event,
    a_finalized_period_is_flagged,
    retention_prunes_old_events,
    concurrent_ingest_stores_each_event_once,
);

#[tokio::test]
async fn bad_search_requests_are_400() {
    let app = TestApp::new(NOW).await;
    let too_many: Vec<String> = (0..101).map(|i| format!("t{i}")).collect();
    for body in [
        json!({}),
        json!({ "transactionIds": [] }),
        json!({ "transactionIds": "t1" }),
        json!({ "transactionIds": [1] }),
        json!({ "transaction_ids": ["t1"] }),
        json!({ "transactionIds": too_many }),
    ] {
        app.post("/v1/events/search", body)
            .await
            .client_error(StatusCode::BAD_REQUEST);
    }
    let hundred: Vec<String> = (0..100).map(|i| format!("t{i}")).collect();
    let r = app
        .post("/v1/events/search", json!({ "transactionIds": hundred }))
        .await
        .expect(StatusCode::OK);
    assert_eq!(r.body, json!([]));
}
