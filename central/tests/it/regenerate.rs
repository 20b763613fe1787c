//! `POST /v1/invoices/regenerate`: a voided invoice's period re-rated into a new invoice, late
//! events included, once however many requests race; drafts voided in their grace included.

use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::{json, Value};
use tally_central::store::{Env, InvoiceStatus};

use crate::store_conformance::Backend;
use crate::support::*;

const SBX: Env = Env::Sandbox;

fn statuses(invoices: &[Value]) -> Vec<(&str, &str)> {
    invoices
        .iter()
        .map(|i| (text(i, "start_timestamp"), text(i, "status")))
        .collect()
}

fn calls(prefix: &str, times: &[&str]) -> Value {
    let events: Vec<Value> = times
        .iter()
        .enumerate()
        .map(|(i, at)| event(&format!("{prefix}{i}"), "acme", "call", at, json!({})))
        .collect();
    Value::Array(events)
}

async fn get_invoice(app: &TestApp, customer: &str, id: &str) -> Value {
    app.get(&format!("/v1/customers/{customer}/invoices/{id}"))
        .await
        .data()
}

/// A late event for a finalized September changes nothing until September is voided and
/// regenerated; the new invoice (a new id, `regenerated_from_invoice_id`) holds it, and is
/// final at once (its period is past its grace). Its own void can be regenerated again.
async fn late_event_billed_by_regeneration(backend: Backend) {
    // September is final from October 2 (its 24 h grace); the 34-day window reaches August 29.
    let app = TestApp::on_backend("2024-10-02T12:00:00Z", backend).await;
    // 1.10 a call: three calls 3.3, four 4.4.
    let b = Billing::count(&app, SBX, "call", "1.10", "acme", "2024-09-01T00:00:00Z").await;
    app.ingest(
        SBX,
        calls(
            "s",
            &[
                "2024-09-01T00:00:00Z",
                "2024-09-15T00:00:00Z",
                "2024-09-30T23:59:59.999Z",
            ],
        ),
    )
    .await;
    app.run_jobs().await;
    let all = app.invoices(SBX, &b.customer, "").await;
    assert_eq!(
        statuses(&all),
        vec![
            ("2024-09-01T00:00:00Z", "FINALIZED"),
            ("2024-10-01T00:00:00Z", "DRAFT")
        ]
    );
    let sept = text(&all[0], "id").to_string();
    assert_eq!(num(&all[0]["total"]), "3.3");

    // Late, inside the 34-day window: accepted, but September is final.
    app.ingest(SBX, calls("late", &["2024-09-20T00:00:00Z"]))
        .await;
    assert_eq!(
        num(&get_invoice(&app, &b.customer, &sept).await["total"]),
        "3.3"
    );
    // Only a voided invoice can be regenerated.
    let r = app
        .post("/v1/invoices/regenerate", json!({ "id": sept }))
        .await
        .client_error(StatusCode::BAD_REQUEST);
    assert!(
        r.message().contains("only a voided invoice"),
        "{}",
        r.message()
    );
    app.post("/v1/invoices/void", json!({ "id": sept }))
        .await
        .expect(StatusCode::OK);

    let regen = app
        .post("/v1/invoices/regenerate", json!({ "id": sept }))
        .await
        .id();
    assert_ne!(regen, sept);
    let inv = get_invoice(&app, &b.customer, &regen).await;
    assert_eq!(text(&inv, "status"), "FINALIZED");
    assert_eq!(num(&inv["total"]), "4.4");
    assert_eq!(inv["regenerated_from_invoice_id"], json!(sept));
    assert_eq!(text(&inv, "start_timestamp"), "2024-09-01T00:00:00Z");
    assert_eq!(text(&inv, "end_timestamp"), "2024-10-01T00:00:00Z");
    let old = get_invoice(&app, &b.customer, &sept).await;
    assert_eq!(text(&old, "status"), "VOID");
    assert_eq!(num(&old["total"]), "3.3");
    assert!(old.get("regenerated_from_invoice_id").is_none());
    let all = app.invoices(SBX, &b.customer, "").await;
    assert_eq!(
        statuses(&all),
        vec![
            ("2024-09-01T00:00:00Z", "VOID"),
            ("2024-09-01T00:00:00Z", "FINALIZED"),
            ("2024-10-01T00:00:00Z", "DRAFT")
        ]
    );
    // A job pass changes nothing, and the finalized regeneration no longer follows usage.
    app.run_jobs().await;
    app.ingest(SBX, calls("later", &["2024-09-21T00:00:00Z"]))
        .await;
    assert_eq!(
        num(&get_invoice(&app, &b.customer, &regen).await["total"]),
        "4.4"
    );

    // Once per voided invoice; a regeneration voided in turn regenerates again.
    let r = app
        .post("/v1/invoices/regenerate", json!({ "id": sept }))
        .await
        .client_error(StatusCode::BAD_REQUEST);
    assert!(r.message().contains(&regen), "{}", r.message());
    app.post("/v1/invoices/void", json!({ "id": regen }))
        .await
        .expect(StatusCode::OK);
    let third = app
        .post("/v1/invoices/regenerate", json!({ "id": regen }))
        .await
        .id();
    assert!(third != regen && third != sept);
    let inv = get_invoice(&app, &b.customer, &third).await;
    assert_eq!(num(&inv["total"]), "5.5");
    assert_eq!(inv["regenerated_from_invoice_id"], json!(regen));
    let row = app
        .state
        .stores
        .invoices
        .invoice(SBX, &third)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((row.revision, row.status), (2, InvoiceStatus::Finalized));

    // Bad requests change nothing.
    app.post(
        "/v1/invoices/regenerate",
        json!({ "id": "00000000-0000-0000-0000-000000000000" }),
    )
    .await
    .client_error(StatusCode::NOT_FOUND);
    app.post("/v1/invoices/regenerate", json!({}))
        .await
        .client_error(StatusCode::BAD_REQUEST);
    app.post("/v1/invoices/regenerate", json!({ "id": 7 }))
        .await
        .client_error(StatusCode::BAD_REQUEST);
    assert_eq!(app.invoices(SBX, &b.customer, "").await.len(), 4);
}

/// A draft voided inside its period is frozen; its regeneration is a draft again that follows
/// usage until its period ends and its grace passes, then finalizes like any other.
async fn regenerated_draft_follows_usage_until_final(backend: Backend) {
    let app = TestApp::on_backend("2024-10-15T12:00:00Z", backend).await;
    let b = Billing::count(
        &app,
        SBX,
        "call",
        "0.333333",
        "acme",
        "2024-10-01T00:00:00Z",
    )
    .await;
    app.ingest(
        SBX,
        calls("o", &["2024-10-01T00:00:00Z", "2024-10-02T00:00:00Z"]),
    )
    .await;
    let oct = text(&app.invoices(SBX, &b.customer, "").await[0], "id").to_string();
    app.post("/v1/invoices/void", json!({ "id": oct }))
        .await
        .expect(StatusCode::OK);
    let regen = app
        .post("/v1/invoices/regenerate", json!({ "id": oct }))
        .await
        .id();
    let inv = get_invoice(&app, &b.customer, &regen).await;
    assert_eq!(text(&inv, "status"), "DRAFT");
    assert_eq!(num(&inv["total"]), "0.666666");
    app.ingest(SBX, calls("p", &["2024-10-15T11:59:59.999Z"]))
        .await;
    assert_eq!(
        num(&get_invoice(&app, &b.customer, &regen).await["total"]),
        "0.999999"
    );
    assert_eq!(
        num(&get_invoice(&app, &b.customer, &oct).await["total"]),
        "0.666666"
    );
    app.set_now("2024-11-02T00:00:01Z");
    app.run_jobs().await;
    let all = app.invoices(SBX, &b.customer, "").await;
    assert_eq!(
        statuses(&all),
        vec![
            ("2024-10-01T00:00:00Z", "VOID"),
            ("2024-10-01T00:00:00Z", "FINALIZED"),
            ("2024-11-01T00:00:00Z", "DRAFT")
        ]
    );
    assert_eq!(num(&all[1]["total"]), "0.999999");
}

/// Dozens of regenerations of one voided invoice at once, on two replicas: exactly one makes
/// the new invoice, the rest are told it exists.
async fn racing_regenerations_make_one_invoice(backend: Backend) {
    let app = TestApp::on_backend("2024-10-02T12:00:00Z", backend).await;
    let b = Billing::count(&app, SBX, "call", "2", "acme", "2024-09-01T00:00:00Z").await;
    app.ingest(SBX, calls("s", &["2024-09-10T00:00:00Z"])).await;
    app.run_jobs().await;
    let sept = text(&app.invoices(SBX, &b.customer, "").await[0], "id").to_string();
    app.post("/v1/invoices/void", json!({ "id": sept }))
        .await
        .expect(StatusCode::OK);
    let replica = tally_central::service::invoices::regenerate;
    let other = app.replica().await;
    let app = Arc::new(app);
    let mut tasks = Vec::new();
    for i in 0..32 {
        let (app, other, sept) = (app.clone(), other.clone(), sept.clone());
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                let r = app
                    .post("/v1/invoices/regenerate", json!({ "id": sept }))
                    .await;
                (r.status == StatusCode::OK).then(|| text(&r.body["data"], "id").to_string())
            } else {
                replica(&other, SBX, &sept).await.ok()
            }
        }));
    }
    let mut won = Vec::new();
    for t in tasks {
        if let Some(id) = t.await.unwrap() {
            won.push(id);
        }
    }
    assert_eq!(won.len(), 1, "{won:?}");
    let all = app.invoices(SBX, &b.customer, "").await;
    assert_eq!(
        statuses(&all),
        vec![
            ("2024-09-01T00:00:00Z", "VOID"),
            ("2024-09-01T00:00:00Z", "FINALIZED"),
            ("2024-10-01T00:00:00Z", "DRAFT")
        ]
    );
    assert_eq!(text(&all[1], "id"), won[0]);
    assert_eq!(num(&all[1]["total"]), "2");
}

both_backends!(
    late_event_billed_by_regeneration,
    regenerated_draft_follows_usage_until_final,
    racing_regenerations_make_one_invoice,
);
