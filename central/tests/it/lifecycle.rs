//! Archived customers and contracts: billing stops at the start of the archive's hour, the open
//! period's draft is rated up to it and finalizes after its grace, nothing can be created on an
//! archived customer or rate card, and archiving racing other writes leaves consistent state.
//! SCHEDULED and USAGE invoices both finalize at their instant (or period end) plus the grace.

use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::{json, Value};
use tally_central::store::{ArchiveFilter, Env};

use crate::store_conformance::Backend;
use crate::support::*;

const SBX: Env = Env::Sandbox;

/// `n` COUNT events for `alias` at `at`, with transaction ids `{tag}-0..n`.
fn events(tag: &str, alias: &str, at: &str, n: usize) -> Value {
    Value::Array(
        (0..n)
            .map(|i| event(&format!("{tag}-{i}"), alias, "call", at, json!({})))
            .collect(),
    )
}

async fn contract_json(app: &TestApp, customer: &str, contract: &str) -> Value {
    app.post(
        "/v1/contracts/get",
        json!({ "customer_id": customer, "contract_id": contract }),
    )
    .await
    .data()
}

#[tokio::test]
async fn an_archived_customer_is_billed_up_to_the_archive_hour_and_finalizes_after_grace() {
    let app = TestApp::new("2024-10-15T09:00:00Z").await;
    let b = Billing::count(&app, SBX, "call", "2", "acme", "2024-10-01T00:00:00Z").await;
    // The job stores October's draft (ending 11-01) before the archive.
    app.run_jobs().await;
    app.ingest(SBX, events("early", "acme", "2024-10-10T08:15:00Z", 3))
        .await;
    app.set_now("2024-10-15T12:30:00Z");
    app.ingest(SBX, events("eleven", "acme", "2024-10-15T11:45:00Z", 2))
        .await;
    // Same hour as the archive, before its instant: usage is hourly, so billing stops at 12:00.
    app.ingest(SBX, events("twelve", "acme", "2024-10-15T12:10:00Z", 4))
        .await;
    app.post("/v1/customers/archive", json!({ "id": b.customer }))
        .await
        .expect(StatusCode::OK);
    // After the archive: later events are not billed, a backdated one still is.
    app.set_now("2024-10-15T18:00:00Z");
    app.ingest(SBX, events("late", "acme", "2024-10-15T13:00:00Z", 5))
        .await;
    app.ingest(SBX, events("backdated", "acme", "2024-10-12T00:00:00Z", 1))
        .await;

    let c = contract_json(&app, &b.customer, &b.contract).await;
    assert_eq!(c["archived_at"], "2024-10-15T12:30:00Z");
    // 3 + 2 + 1 events at 2 cents: 12. The draft's period ends at the archive hour.
    let all = app.invoices(SBX, &b.customer, "").await;
    assert_eq!(all.len(), 1, "{all:?}");
    let draft = &all[0];
    assert_eq!(draft["status"], "DRAFT");
    assert_eq!(draft["start_timestamp"], "2024-10-01T00:00:00Z");
    assert_eq!(draft["end_timestamp"], "2024-10-15T12:00:00Z");
    assert_eq!(draft["issued_at"], "2024-10-16T12:00:00Z");
    assert_eq!(num(&draft["total"]), "12");
    assert_eq!(num(&draft["line_items"][0]["quantity"]), "6");

    // Grace runs from the archive hour: still a draft a minute before, final at it.
    app.set_now("2024-10-16T11:59:00Z");
    app.run_jobs().await;
    assert_eq!(
        app.invoices(SBX, &b.customer, "").await[0]["status"],
        "DRAFT"
    );
    app.set_now("2024-10-16T12:00:00Z");
    app.run_jobs().await;
    let all = app.invoices(SBX, &b.customer, "").await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["status"], "FINALIZED");
    assert_eq!(all[0]["id"], draft["id"]);
    assert_eq!(num(&all[0]["total"]), "12");
    assert_eq!(all[0]["end_timestamp"], "2024-10-15T12:00:00Z");

    // Months later: no new period, nothing left in DRAFT, nothing stuck.
    app.set_now("2025-01-15T00:00:00Z");
    app.run_jobs().await;
    let all = app.invoices(SBX, &b.customer, "").await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["status"], "FINALIZED");
    let stuck = app.get("/v1/operations/stuck-contracts").await.data();
    assert_eq!(stuck, json!([]));
}

#[tokio::test]
async fn contracts_archive_stops_billing_and_can_void_every_invoice() {
    let app = TestApp::new("2024-10-15T12:00:00Z").await;
    let b = Billing::count(&app, SBX, "call", "3", "acme", "2024-09-01T00:00:00Z").await;
    app.ingest(SBX, events("sep", "acme", "2024-09-20T00:00:00Z", 2))
        .await;
    app.ingest(SBX, events("oct", "acme", "2024-10-02T00:00:00Z", 1))
        .await;
    app.run_jobs().await;
    let path = "/v1/contracts/archive";
    // Bad input changes nothing.
    app.post(
        path,
        json!({ "customer_id": b.customer, "contract_id": b.contract }),
    )
    .await
    .client_error(StatusCode::BAD_REQUEST);
    let other = app.customer(SBX, "other", &[]).await;
    app.post(
        path,
        json!({ "customer_id": other, "contract_id": b.contract, "void_invoices": false }),
    )
    .await
    .client_error(StatusCode::NOT_FOUND);
    assert!(contract_json(&app, &b.customer, &b.contract).await["archived_at"].is_null());

    app.set_now("2024-10-15T12:45:00Z");
    let id = app
        .post(
            path,
            json!({ "customer_id": b.customer, "contract_id": b.contract, "void_invoices": false }),
        )
        .await
        .id();
    assert_eq!(id, b.contract);
    app.ingest(SBX, events("after", "acme", "2024-10-15T13:00:00Z", 7))
        .await;
    let all = app.invoices(SBX, &b.customer, "").await;
    let summary: Vec<(&str, &str, String)> = all
        .iter()
        .map(|i| {
            (
                text(i, "status"),
                text(i, "end_timestamp"),
                num(&i["total"]),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("FINALIZED", "2024-10-01T00:00:00Z", "6".to_string()),
            ("DRAFT", "2024-10-15T12:00:00Z", "3".to_string()),
        ]
    );
    // Archived contracts leave the default list; the archive time stays the first one.
    let listed = app
        .post("/v1/contracts/list", json!({ "customer_id": b.customer }))
        .await
        .data();
    assert_eq!(listed, json!([]));
    app.set_now("2024-10-15T14:00:00Z");
    app.post(
        path,
        json!({ "customer_id": b.customer, "contract_id": b.contract, "void_invoices": true }),
    )
    .await
    .expect(StatusCode::OK);
    let v2 = app
        .post(
            "/v2/contracts/get",
            json!({ "customer_id": b.customer, "contract_id": b.contract }),
        )
        .await
        .data();
    assert_eq!(v2["archived_at"], "2024-10-15T12:45:00Z");
    // void_invoices voids the finalized invoice and the open draft alike.
    let all = app.invoices(SBX, &b.customer, "").await;
    let statuses: Vec<&str> = all.iter().map(|i| text(i, "status")).collect();
    assert_eq!(statuses, vec!["VOID", "VOID"]);
    app.set_now("2024-12-01T00:00:00Z");
    app.run_jobs().await;
    assert_eq!(app.invoices(SBX, &b.customer, "").await.len(), 2);
}

/// Every contract document of the customer, archived or not, read from the store (no paging).
async fn stored_contracts(app: &TestApp, customer: &str) -> Vec<Value> {
    let docs = app
        .state
        .stores
        .config
        .list_docs(SBX, "contract", Some(customer), ArchiveFilter::All, None)
        .await
        .expect("store");
    docs.iter()
        .map(|d| serde_json::from_str(&d.body).expect("contract JSON"))
        .collect()
}

async fn contract_count(app: &TestApp, customer: &str) -> usize {
    stored_contracts(app, customer).await.len()
}

#[tokio::test]
async fn no_contract_on_an_archived_customer_or_rate_card() {
    let app = TestApp::new("2024-10-15T12:00:00Z").await;
    let b = Billing::count(&app, SBX, "call", "1", "acme", "2024-10-01T00:00:00Z").await;
    let fresh = app.customer(SBX, "fresh", &[]).await;
    app.post(
        "/v1/contract-pricing/rate-cards/update",
        json!({ "rate_card_id": b.card, "aliases": [{ "name": "standard" }] }),
    )
    .await
    .expect(StatusCode::OK);
    app.post(
        "/v1/contract-pricing/rate-cards/archive",
        json!({ "id": b.card }),
    )
    .await
    .expect(StatusCode::OK);
    for body in [
        json!({ "customer_id": fresh, "rate_card_id": b.card, "starting_at": "2024-10-01T00:00:00Z" }),
        json!({ "customer_id": fresh, "rate_card_alias": "standard", "starting_at": "2024-10-01T00:00:00Z" }),
    ] {
        let r = app
            .post("/v1/contracts/create", body)
            .await
            .client_error(StatusCode::BAD_REQUEST);
        assert!(r.message().contains("archived"), "{}", r.message());
    }
    assert_eq!(contract_count(&app, &fresh).await, 0);

    let card = app.rate_card(SBX, "live card").await;
    app.post("/v1/customers/archive", json!({ "id": b.customer }))
        .await
        .expect(StatusCode::OK);
    let r = app
        .post(
            "/v1/contracts/create",
            json!({ "customer_id": b.customer, "rate_card_id": card, "starting_at": "2024-10-01T00:00:00Z" }),
        )
        .await
        .client_error(StatusCode::BAD_REQUEST);
    assert!(r.message().contains("archived"), "{}", r.message());
    assert_eq!(contract_count(&app, &b.customer).await, 1);
    // The live card still takes contracts on a live customer.
    app.contract(SBX, &fresh, &card, "2024-10-01T00:00:00Z")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_archived_while_contracts_are_created_keeps_no_active_contract() {
    let app = Arc::new(TestApp::new("2024-10-15T12:00:00Z").await);
    let b = Billing::count(&app, SBX, "call", "1", "acme", "2024-10-01T00:00:00Z").await;
    let mut requests: Vec<(String, Value)> = (0..30)
        .map(|_| {
            let body = json!({
                "customer_id": b.customer, "rate_card_id": b.card,
                "starting_at": "2024-10-01T00:00:00Z",
            });
            ("/v1/contracts/create".to_string(), body)
        })
        .collect();
    requests.insert(
        15,
        (
            "/v1/customers/archive".to_string(),
            json!({ "id": b.customer }),
        ),
    );
    let mut created = vec![b.contract.clone()];
    for r in all_at_once(&app, requests).await {
        match r.status {
            StatusCode::OK if r.body["data"]["id"] != b.customer.as_str() => {
                created.push(text(&r.body["data"], "id").to_string())
            }
            StatusCode::OK => {}
            _ => assert!(r
                .client_error(StatusCode::BAD_REQUEST)
                .message()
                .contains("archived")),
        }
    }
    let all = stored_contracts(&app, &b.customer).await;
    // Every acknowledged contract exists, none of the refused ones do, and all are archived at
    // the customer's archive instant.
    assert_eq!(all.len(), created.len());
    for c in &all {
        assert!(created.contains(&text(c, "id").to_string()));
        assert_eq!(c["archived_at"], "2024-10-15T12:00:00Z", "{c}");
    }
}

/// Ingest racing an archive: whatever the interleaving, the invoice bills exactly the events
/// before the archive hour, and finalizes after its grace.
async fn archive_racing_ingest(backend: Backend) {
    let app = Arc::new(TestApp::on_backend("2024-10-15T12:30:00Z", backend).await);
    let b = Billing::count(&app, SBX, "call", "5", "acme", "2024-10-01T00:00:00Z").await;
    app.run_jobs().await;
    let mut requests = Vec::new();
    for i in 0..20 {
        // Odd requests carry usage before the archive hour, even ones usage after it.
        let at = if i % 2 == 1 {
            "2024-10-15T11:00:00Z"
        } else {
            "2024-10-15T13:00:00Z"
        };
        requests.push((
            "/v1/ingest".to_string(),
            events(&format!("r{i}"), "acme", at, 5),
        ));
        if i == 10 {
            let archive = json!({
                "customer_id": b.customer, "contract_id": b.contract, "void_invoices": false,
            });
            requests.push(("/v1/contracts/archive".to_string(), archive));
        }
    }
    for r in all_at_once(&app, requests).await {
        r.expect(StatusCode::OK);
    }
    // 10 requests × 5 events before 12:00, at 5 cents: 250, draft and final alike.
    let draft = app
        .invoice_at(SBX, &b.customer, "2024-10-15T11:00:00Z")
        .await;
    assert_eq!(
        (text(&draft, "status"), num(&draft["total"])),
        ("DRAFT", "250".to_string())
    );
    assert_eq!(draft["end_timestamp"], "2024-10-15T12:00:00Z");
    app.set_now("2024-10-16T12:00:00Z");
    app.run_jobs().await;
    let all = app.invoices(SBX, &b.customer, "").await;
    assert_eq!(all.len(), 1);
    assert_eq!(
        (text(&all[0], "status"), num(&all[0]["total"])),
        ("FINALIZED", "250".to_string())
    );
    assert_eq!(all[0]["id"], draft["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_racing_ingest_sqlite() {
    archive_racing_ingest(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_racing_ingest_postgres() {
    archive_racing_ingest(Backend::Postgres).await;
}

/// `(type, status, start, total)` of each of the customer's invoices.
async fn statuses(app: &TestApp, customer: &str) -> Vec<(String, String, String, String)> {
    let mut all: Vec<_> = app
        .invoices(SBX, customer, "")
        .await
        .iter()
        .map(|i| {
            (
                text(i, "type").to_string(),
                text(i, "status").to_string(),
                text(i, "start_timestamp").to_string(),
                num(&i["total"]),
            )
        })
        .collect();
    all.sort();
    all
}

fn row(kind: &str, status: &str, start: &str, total: &str) -> (String, String, String, String) {
    (kind.into(), status.into(), start.into(), total.into())
}

/// A commit purchase of 300 on 11-01 and a scheduled charge of 33.33 on 11-15 (SCHEDULED
/// invoices at those instants) and November's usage (3 calls at 2 = 6): each is DRAFT until
/// its instant (or period end) plus the 24 h grace, FINALIZED from then on, the minute before
/// and the instant itself checked.
#[tokio::test]
async fn scheduled_and_usage_invoices_both_finalize_after_the_grace() {
    const NOV: &str = "2024-11-01T00:00:00Z";
    const MID: &str = "2024-11-15T00:00:00Z";
    let app = TestApp::new("2024-11-01T06:00:00Z").await;
    let b = Billing::count(&app, SBX, "call", "2", "acme", "2024-10-01T00:00:00Z").await;
    let fixed = app
        .post(
            "/v1/contract-pricing/products/create",
            json!({ "name": "Fees", "type": "FIXED" }),
        )
        .await
        .id();
    let customer = app.customer(SBX, "fees", &["fees"]).await;
    app.post(
        "/v1/contracts/create",
        json!({
            "customer_id": customer, "rate_card_id": b.card, "starting_at": NOV,
            "ending_before": "2024-12-01T00:00:00Z",
            "commits": [{
                "type": "PREPAID", "product_id": fixed, "name": "Upfront",
                "access_schedule": { "schedule_items": [
                    { "amount": 1, "starting_at": NOV, "ending_before": "2024-12-01T00:00:00Z" },
                ]},
                "invoice_schedule": { "schedule_items": [{ "amount": 300, "timestamp": NOV }] },
            }],
            "scheduled_charges": [{ "product_id": fixed, "name": "Fee",
                "schedule": { "schedule_items": [{ "amount": dec("33.33"), "timestamp": MID }] } }],
        }),
    )
    .await
    .expect(StatusCode::OK);
    app.ingest(
        SBX,
        Value::Array(
            (0..3)
                .map(|i| {
                    event(
                        &format!("f{i}"),
                        "fees",
                        "call",
                        "2024-11-01T03:00:00Z",
                        json!({}),
                    )
                })
                .collect(),
        ),
    )
    .await;
    // 3 calls = 6, 1 of it covered by the commit: 5.
    let steps = [
        (
            "2024-11-01T23:59:00Z",
            vec![
                row("SCHEDULED", "DRAFT", NOV, "300"),
                row("USAGE", "DRAFT", NOV, "5"),
            ],
        ),
        (
            "2024-11-02T00:00:00Z",
            vec![
                row("SCHEDULED", "FINALIZED", NOV, "300"),
                row("USAGE", "DRAFT", NOV, "5"),
            ],
        ),
        (
            "2024-11-15T00:00:00Z",
            vec![
                row("SCHEDULED", "DRAFT", MID, "33.33"),
                row("SCHEDULED", "FINALIZED", NOV, "300"),
                row("USAGE", "DRAFT", NOV, "5"),
            ],
        ),
        (
            "2024-11-16T00:00:00Z",
            vec![
                row("SCHEDULED", "FINALIZED", NOV, "300"),
                row("SCHEDULED", "FINALIZED", MID, "33.33"),
                row("USAGE", "DRAFT", NOV, "5"),
            ],
        ),
        (
            "2024-12-01T23:59:00Z",
            vec![
                row("SCHEDULED", "FINALIZED", NOV, "300"),
                row("SCHEDULED", "FINALIZED", MID, "33.33"),
                row("USAGE", "DRAFT", NOV, "5"),
            ],
        ),
        (
            "2024-12-02T00:00:00Z",
            vec![
                row("SCHEDULED", "FINALIZED", NOV, "300"),
                row("SCHEDULED", "FINALIZED", MID, "33.33"),
                row("USAGE", "FINALIZED", NOV, "5"),
            ],
        ),
    ];
    for (now, want) in steps {
        app.set_now(now);
        app.run_jobs().await;
        assert_eq!(statuses(&app, &customer).await, want, "at {now}");
    }
}

/// The ids `path` lists for `customer` with `extra` in the body.
async fn list_ids(app: &TestApp, path: &str, customer: &str, extra: Value) -> Vec<String> {
    let mut body = json!({ "customer_id": customer });
    merge(&mut body, extra);
    let data = app.post(path, body).await.data();
    data.as_array()
        .expect("list")
        .iter()
        .map(|c| text(c, "id").to_string())
        .collect()
}

/// contracts/list filters on both versions: chronological by start (not creation), archived
/// ones only with `include_archived`, `covering_date` inclusive of the start and exclusive of
/// the end, `starting_at` on or after, and `covering_date` with `starting_at` a 400.
#[tokio::test]
async fn contract_lists_filter_by_date_and_archival_in_chronological_order() {
    let app = TestApp::new("2024-11-15T00:00:00Z").await;
    let b = Billing::count(&app, SBX, "call", "1", "acme", "2024-09-01T00:00:00Z").await;
    let other = app.customer(SBX, "lists", &[]).await;
    let create = |start: &str, end: Option<&str>| {
        let mut body =
            json!({ "customer_id": other, "rate_card_id": b.card, "starting_at": start });
        if let Some(end) = end {
            body["ending_before"] = json!(end);
        }
        app.post("/v1/contracts/create", body)
    };
    let oct = create("2024-10-01T00:00:00Z", Some("2024-12-01T00:00:00Z"))
        .await
        .id();
    let sep = create("2024-09-01T00:00:00Z", Some("2024-10-01T00:00:00Z"))
        .await
        .id();
    let nov = create("2024-11-01T00:00:00Z", None).await.id();
    app.post(
        "/v1/contracts/archive",
        json!({ "customer_id": other, "contract_id": nov, "void_invoices": false }),
    )
    .await
    .expect(StatusCode::OK);
    let cases: Vec<(Value, Vec<&String>)> = vec![
        (json!({}), vec![&sep, &oct]),
        (json!({ "include_archived": true }), vec![&sep, &oct, &nov]),
        (
            json!({ "covering_date": "2024-10-01T00:00:00Z" }),
            vec![&oct],
        ),
        (
            json!({ "covering_date": "2024-09-30T23:00:00Z" }),
            vec![&sep],
        ),
        (json!({ "covering_date": "2024-12-01T00:00:00Z" }), vec![]),
        (
            json!({ "covering_date": "2024-12-01T00:00:00Z", "include_archived": true }),
            vec![&nov],
        ),
        (json!({ "starting_at": "2024-10-01T00:00:00Z" }), vec![&oct]),
        (
            json!({ "starting_at": "2024-10-01T00:00:00Z", "include_archived": true }),
            vec![&oct, &nov],
        ),
    ];
    for path in ["/v1/contracts/list", "/v2/contracts/list"] {
        for (extra, want) in &cases {
            let got = list_ids(&app, path, &other, extra.clone()).await;
            let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
            assert_eq!(got, want, "{path} {extra}");
        }
        let r = app
            .post(
                path,
                json!({ "customer_id": other, "covering_date": "2024-10-01T00:00:00Z",
                        "starting_at": "2024-10-01T00:00:00Z" }),
            )
            .await
            .client_error(StatusCode::BAD_REQUEST);
        assert!(
            r.message().contains("covering_date and starting_at"),
            "{}",
            r.message()
        );
    }
}
