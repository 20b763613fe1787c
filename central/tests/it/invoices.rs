//! Invoices with a fixed clock: periods, the DRAFT → FINALIZED / VOID lifecycle, and exact rating.

use axum::http::StatusCode;
use serde_json::{json, Value};
use tally_central::store::{Env, InvoiceStatus};

use crate::support::*;

const SBX: Env = Env::Sandbox;

fn statuses(invoices: &[Value]) -> Vec<&str> {
    invoices.iter().map(|i| text(i, "status")).collect()
}

fn periods(invoices: &[Value]) -> Vec<(&str, &str)> {
    invoices
        .iter()
        .map(|i| (text(i, "start_timestamp"), text(i, "end_timestamp")))
        .collect()
}

/// The invoice's line for a product (panics unless exactly one).
fn line<'a>(invoice: &'a Value, product: &str) -> &'a Value {
    let lines: Vec<&Value> = invoice["line_items"]
        .as_array()
        .expect("line_items")
        .iter()
        .filter(|l| l["product_id"] == product)
        .collect();
    assert_eq!(lines.len(), 1, "lines of {product}: {lines:?}");
    lines[0]
}

/// The invoice's status as stored, read without going through HTTP (which could finalize it).
async fn stored_status(app: &TestApp, id: &str) -> InvoiceStatus {
    app.state
        .stores
        .invoices
        .invoice(SBX, id)
        .await
        .expect("store")
        .expect("invoice row")
        .status
}

#[tokio::test]
async fn one_invoice_per_begun_period_with_statuses() {
    let app = TestApp::new("2024-10-15T12:00:00Z").await;
    let b = Billing::count(&app, SBX, "call", "1", "acme", "2024-08-15T00:00:00Z").await;
    app.run_jobs().await;
    let all = app.invoices(SBX, &b.customer, "").await;
    assert_eq!(
        periods(&all),
        vec![
            ("2024-08-15T00:00:00Z", "2024-09-01T00:00:00Z"),
            ("2024-09-01T00:00:00Z", "2024-10-01T00:00:00Z"),
            ("2024-10-01T00:00:00Z", "2024-11-01T00:00:00Z"),
        ]
    );
    assert_eq!(statuses(&all), vec!["FINALIZED", "FINALIZED", "DRAFT"]);
    for inv in &all {
        assert_eq!(inv["customer_id"], b.customer.as_str());
        assert_eq!(inv["contract_id"], b.contract.as_str());
        assert_eq!(inv["type"], "USAGE");
        assert_eq!(inv["credit_type"]["name"], "USD (cents)");
        let end = ms(text(inv, "end_timestamp"));
        assert_eq!(inv["issued_at"], ts(end + DAY_MS).as_str());
    }
    // Reads are stable: same ids, no extra rows.
    let again = app.invoices(SBX, &b.customer, "").await;
    assert_eq!(
        again.iter().map(|i| &i["id"]).collect::<Vec<_>>(),
        all.iter().map(|i| &i["id"]).collect::<Vec<_>>()
    );

    let drafts = app.invoices(SBX, &b.customer, "status=DRAFT").await;
    assert_eq!(statuses(&drafts), vec!["DRAFT"]);
    assert_eq!(drafts[0]["id"], all[2]["id"]);
    let finalized = app.invoices(SBX, &b.customer, "status=FINALIZED").await;
    assert_eq!(statuses(&finalized), vec!["FINALIZED", "FINALIZED"]);
    assert!(app
        .invoices(SBX, &b.customer, "status=VOID")
        .await
        .is_empty());
    app.get(&format!(
        "/v1/customers/{}/invoices?status=PAID",
        b.customer
    ))
    .await
    .client_error(StatusCode::BAD_REQUEST);
    let desc = app.invoices(SBX, &b.customer, "sort=date_desc").await;
    assert_eq!(desc[0]["id"], all[2]["id"]);
    assert_eq!(desc[2]["id"], all[0]["id"]);

    // Paging one invoice at a time visits each once, in order.
    let mut seen = Vec::new();
    let mut url = format!("/v1/customers/{}/invoices?limit=1", b.customer);
    for _ in 0..4 {
        let body = app.get(&url).await.expect(StatusCode::OK).body;
        seen.push(body["data"][0]["id"].clone());
        match body["next_page"].as_str() {
            Some(c) => {
                url = format!(
                    "/v1/customers/{}/invoices?limit=1&next_page={c}",
                    b.customer
                )
            }
            None => break,
        }
    }
    assert_eq!(
        seen,
        all.iter().map(|i| i["id"].clone()).collect::<Vec<_>>()
    );

    // One invoice by id, and not under another customer.
    let id = text(&all[1], "id");
    let one = app
        .get(&format!("/v1/customers/{}/invoices/{id}", b.customer))
        .await
        .data();
    assert_eq!(one["status"], "FINALIZED");
    assert_eq!(one["start_timestamp"], "2024-09-01T00:00:00Z");
    let other = app.customer(SBX, "other", &[]).await;
    app.get(&format!("/v1/customers/{other}/invoices/{id}"))
        .await
        .client_error(StatusCode::NOT_FOUND);

    // A month later the October invoice is final too and November is the draft.
    app.set_now("2024-11-02T00:00:00Z");
    app.run_jobs().await;
    let all = app.invoices(SBX, &b.customer, "").await;
    assert_eq!(
        statuses(&all),
        vec!["FINALIZED", "FINALIZED", "FINALIZED", "DRAFT"]
    );
}

#[tokio::test]
async fn a_draft_recomputes_then_finalizes_and_freezes() {
    let app = TestApp::new("2024-09-20T00:00:00Z").await;
    let sept = "2024-09-01T00:00:00Z";
    let b = Billing::count(&app, SBX, "call", "7", "acme", sept).await;
    let at = |i: usize| format!("2024-09-1{i}T0{i}:00:00Z");
    let batch = |ids: std::ops::Range<usize>| {
        Value::Array(
            ids.map(|i| event(&format!("e{i}"), "acme", "call", &at(i), json!({})))
                .collect(),
        )
    };
    let sept_invoice = || app.invoice_at(SBX, &b.customer, "2024-09-15T00:00:00Z");

    let inv = sept_invoice().await;
    assert_eq!(inv["status"], "DRAFT");
    assert_eq!(num(&inv["total"]), "0");
    let id = text(&inv, "id").to_string();
    app.ingest(SBX, batch(0..3)).await;
    assert_eq!(num(&sept_invoice().await["total"]), "21");
    app.ingest(SBX, batch(3..5)).await;
    let inv = sept_invoice().await;
    assert_eq!(num(&inv["total"]), "35");
    assert_eq!(num(&line(&inv, &b.product)["quantity"]), "5");
    assert_eq!(num(&line(&inv, &b.product)["unit_price"]), "7");

    // One millisecond before end + grace the job leaves it a draft...
    app.set_now("2024-10-01T23:59:59.999Z");
    tally_central::service::jobs::run_jobs_once(&app.state)
        .await
        .expect("jobs");
    assert_eq!(stored_status(&app, &id).await, InvoiceStatus::Draft);
    // ...and at end + grace the job (not a read) finalizes it.
    app.set_now("2024-10-02T00:00:00Z");
    tally_central::service::jobs::run_jobs_once(&app.state)
        .await
        .expect("jobs");
    assert_eq!(stored_status(&app, &id).await, InvoiceStatus::Finalized);
    let inv = sept_invoice().await;
    assert_eq!(inv["status"], "FINALIZED");
    assert_eq!(inv["id"], id.as_str());
    assert_eq!(num(&inv["total"]), "35");
    assert_eq!(inv["issued_at"], "2024-10-02T00:00:00Z");

    // Events backdated into the finalized period are accepted but do not change it.
    let r = app.ingest(SBX, batch(5..9)).await;
    assert_eq!(r["accepted"], 4);
    let inv = sept_invoice().await;
    assert_eq!(inv["status"], "FINALIZED");
    assert_eq!(num(&inv["total"]), "35");
    assert_eq!(num(&line(&inv, &b.product)["quantity"]), "5");
    tally_central::service::jobs::run_jobs_once(&app.state)
        .await
        .expect("jobs");
    let one = app
        .get(&format!("/v1/customers/{}/invoices/{id}", b.customer))
        .await
        .data();
    assert_eq!(num(&one["total"]), "35");

    // The late events were stored: a contract created now rates September with all nine.
    let second = app.contract(SBX, &b.customer, &b.card, sept).await;
    app.run_jobs().await;
    let invs = app
        .invoices(SBX, &b.customer, &format!("contract_id={second}"))
        .await;
    assert_eq!(periods(&invs)[0], (sept, "2024-10-01T00:00:00Z"));
    assert_eq!(invs[0]["status"], "FINALIZED");
    assert_eq!(num(&invs[0]["total"]), "63");
    // The first contract's invoice is still the frozen one.
    let first = app
        .invoices(SBX, &b.customer, &format!("contract_id={}", b.contract))
        .await;
    assert_eq!(num(&first[0]["total"]), "35");
}

#[tokio::test]
async fn zero_grace_finalizes_at_period_end() {
    let app = TestApp::with_grace("2024-09-30T23:00:00Z", 0).await;
    let b = Billing::count(&app, SBX, "call", "3", "acme", "2024-09-01T00:00:00Z").await;
    app.ingest(
        SBX,
        json!([event(
            "e1",
            "acme",
            "call",
            "2024-09-30T22:00:00Z",
            json!({})
        )]),
    )
    .await;
    app.set_now("2024-09-30T23:59:59.999Z");
    let all = app.invoices(SBX, &b.customer, "").await;
    assert_eq!(statuses(&all), vec!["DRAFT"]);
    assert_eq!(all[0]["issued_at"], "2024-10-01T00:00:00Z");
    app.set_now("2024-10-01T00:00:00Z");
    app.run_jobs().await;
    let all = app.invoices(SBX, &b.customer, "").await;
    assert_eq!(statuses(&all), vec!["FINALIZED", "DRAFT"]);
    assert_eq!(num(&all[0]["total"]), "3");
    assert_eq!(all[0]["issued_at"], all[0]["end_timestamp"]);
    // Still inside the backdating window, but too late for the final invoice.
    let r = app
        .ingest(
            SBX,
            json!([event(
                "e2",
                "acme",
                "call",
                "2024-09-30T22:30:00Z",
                json!({})
            )]),
        )
        .await;
    assert_eq!(r["accepted"], 1);
    let all = app.invoices(SBX, &b.customer, "").await;
    assert_eq!(num(&all[0]["total"]), "3");
}

#[tokio::test]
async fn void_a_draft_and_a_finalized_invoice() {
    let app = TestApp::new("2024-10-15T12:00:00Z").await;
    let b = Billing::count(&app, SBX, "call", "5", "acme", "2024-09-01T00:00:00Z").await;
    let events: Vec<Value> = (0..3)
        .map(|i| {
            event(
                &format!("s{i}"),
                "acme",
                "call",
                "2024-09-20T00:00:00Z",
                json!({}),
            )
        })
        .chain((0..2).map(|i| {
            event(
                &format!("o{i}"),
                "acme",
                "call",
                "2024-10-05T00:00:00Z",
                json!({}),
            )
        }))
        .collect();
    app.ingest(SBX, Value::Array(events)).await;
    app.run_jobs().await;
    let all = app.invoices(SBX, &b.customer, "").await;
    assert_eq!(statuses(&all), vec!["FINALIZED", "DRAFT"]);
    let (sept, oct) = (
        text(&all[0], "id").to_string(),
        text(&all[1], "id").to_string(),
    );
    assert_eq!(num(&all[0]["total"]), "15");
    assert_eq!(num(&all[1]["total"]), "10");

    for id in [&oct, &sept] {
        let r = app
            .post("/v1/invoices/void", json!({ "id": id }))
            .await
            .id();
        assert_eq!(&r, id);
    }
    let all = app.invoices(SBX, &b.customer, "").await;
    assert_eq!(statuses(&all), vec!["VOID", "VOID"]);
    assert_eq!(num(&all[0]["total"]), "15");
    assert_eq!(num(&all[1]["total"]), "10");

    // A voided draft no longer follows usage, the job leaves it alone, and voiding again is a no-op.
    app.ingest(
        SBX,
        json!([event(
            "o9",
            "acme",
            "call",
            "2024-10-06T00:00:00Z",
            json!({})
        )]),
    )
    .await;
    app.set_now("2024-11-03T00:00:00Z");
    tally_central::service::jobs::run_jobs_once(&app.state)
        .await
        .expect("jobs");
    assert_eq!(stored_status(&app, &oct).await, InvoiceStatus::Void);
    app.post("/v1/invoices/void", json!({ "id": oct }))
        .await
        .expect(StatusCode::OK);
    let all = app.invoices(SBX, &b.customer, "").await;
    assert_eq!(statuses(&all), vec!["VOID", "VOID", "DRAFT"]);
    assert_eq!(num(&all[1]["total"]), "10");
    let voided = app.invoices(SBX, &b.customer, "status=VOID").await;
    assert_eq!(voided.len(), 2);
    let one = app
        .get(&format!("/v1/customers/{}/invoices/{oct}", b.customer))
        .await
        .data();
    assert_eq!(one["status"], "VOID");
    assert_eq!(num(&one["total"]), "10");

    app.post(
        "/v1/invoices/void",
        json!({ "id": "00000000-0000-0000-0000-000000000000" }),
    )
    .await
    .client_error(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn skip_zero_qty_line_items_drops_zero_lines() {
    let app = TestApp::new("2024-10-15T12:00:00Z").await;
    let b = Billing::count(&app, SBX, "call", "2", "acme", "2024-10-01T00:00:00Z").await;
    let idle_metric = app
        .metric(
            SBX,
            json!({ "name": "idle", "aggregation_type": "COUNT", "event_type_filter": { "in_values": ["idle"] } }),
        )
        .await;
    let idle = app
        .usage_product(SBX, "Idle", &idle_metric, Value::Null)
        .await;
    app.flat_rate(SBX, &b.card, &idle, "9", "2024-10-01T00:00:00Z")
        .await;
    app.ingest(
        SBX,
        json!([event(
            "e",
            "acme",
            "call",
            "2024-10-02T00:00:00Z",
            json!({})
        )]),
    )
    .await;
    let products = |inv: &Value| -> Vec<String> {
        inv["line_items"]
            .as_array()
            .expect("lines")
            .iter()
            .map(|l| text(l, "product_id").to_string())
            .collect()
    };
    app.run_jobs().await;
    let all = app.invoices(SBX, &b.customer, "").await;
    assert_eq!(products(&all[0]), vec![b.product.clone(), idle.clone()]);
    assert_eq!(num(&line(&all[0], &idle)["quantity"]), "0");
    let skipped = app
        .invoices(SBX, &b.customer, "skip_zero_qty_line_items=true")
        .await;
    assert_eq!(products(&skipped[0]), vec![b.product.clone()]);
    assert_eq!(num(&skipped[0]["total"]), "2");
    let id = text(&all[0], "id");
    let one = app
        .get(&format!(
            "/v1/customers/{}/invoices/{id}?skip_zero_qty_line_items=true",
            b.customer
        ))
        .await
        .data();
    assert_eq!(products(&one), vec![b.product.clone()]);
    let kept = app
        .invoices(SBX, &b.customer, "skip_zero_qty_line_items=false")
        .await;
    assert_eq!(products(&kept[0]).len(), 2);
}

#[tokio::test]
async fn exact_sum_max_unique_latest_over_several_hours() {
    let app = TestApp::new("2024-10-15T12:00:00Z").await;
    let start = "2024-10-01T00:00:00Z";
    let card = app.rate_card(SBX, "card").await;
    let mut products = Vec::new();
    for (name, agg, key, extra, price) in [
        (
            "storage",
            "SUM",
            "bytes",
            json!({
                "quantity_conversion": { "conversion_factor": 1000, "operation": "DIVIDE" },
                "quantity_rounding": { "decimal_places": 2, "rounding_method": "ROUND_UP" },
            }),
            "12.5",
        ),
        ("load", "MAX", "load", Value::Null, "3"),
        ("login", "UNIQUE", "user", Value::Null, "100"),
        ("seats", "LATEST", "seats", Value::Null, "10"),
    ] {
        let metric = app
            .metric(
                SBX,
                json!({
                    "name": name, "aggregation_type": agg, "aggregation_key": key,
                    "event_type_filter": { "in_values": [name] },
                }),
            )
            .await;
        let product = app.usage_product(SBX, name, &metric, extra).await;
        app.flat_rate(SBX, &card, &product, price, start).await;
        products.push(product);
    }
    let customer = app.customer(SBX, "acme", &["acme"]).await;
    app.contract(SBX, &customer, &card, start).await;
    let e = |tid: &str, kind: &str, at: &str, props: Value| event(tid, "acme", kind, at, props);
    let r = app
        .ingest(
            SBX,
            json!([
                e(
                    "b1",
                    "storage",
                    "2024-10-02T01:00:00Z",
                    json!({ "bytes": "1500" })
                ),
                e(
                    "b2",
                    "storage",
                    "2024-10-03T05:00:00Z",
                    json!({ "bytes": "700.5" })
                ),
                e(
                    "b3",
                    "storage",
                    "2024-10-03T05:30:00Z",
                    json!({ "bytes": dec("0.25") })
                ),
                e(
                    "b4",
                    "storage",
                    "2024-10-03T06:00:00Z",
                    json!({ "bytes": "not a number" })
                ),
                e("l1", "load", "2024-10-02T01:00:00Z", json!({ "load": "5" })),
                e(
                    "l2",
                    "load",
                    "2024-10-05T03:00:00Z",
                    json!({ "load": dec("12") })
                ),
                e("l3", "load", "2024-10-09T00:00:00Z", json!({ "load": "7" })),
                e(
                    "u1",
                    "login",
                    "2024-10-02T01:00:00Z",
                    json!({ "user": "a" })
                ),
                e(
                    "u2",
                    "login",
                    "2024-10-02T01:10:00Z",
                    json!({ "user": "b" })
                ),
                e(
                    "u3",
                    "login",
                    "2024-10-04T10:00:00Z",
                    json!({ "user": "b" })
                ),
                e(
                    "u4",
                    "login",
                    "2024-10-04T10:00:00Z",
                    json!({ "user": "c" })
                ),
                e(
                    "u5",
                    "login",
                    "2024-10-09T00:00:00Z",
                    json!({ "user": "a" })
                ),
                e(
                    "s1",
                    "seats",
                    "2024-10-02T01:00:00Z",
                    json!({ "seats": "7" })
                ),
                e(
                    "s2",
                    "seats",
                    "2024-10-05T03:00:00Z",
                    json!({ "seats": "9" })
                ),
                e(
                    "s3",
                    "seats",
                    "2024-10-09T00:00:00Z",
                    json!({ "seats": "4" })
                ),
            ]),
        )
        .await;
    assert_eq!(r["accepted"], 15);
    let inv = app.invoice_at(SBX, &customer, "2024-10-10T00:00:00Z").await;
    let expect = [
        // 2200.75 / 1000 = 2.20075, rounded up at 2 places = 2.21; × 12.5 = 27.625.
        (&products[0], "2.21", "12.5", "27.625"),
        (&products[1], "12", "3", "36"),
        (&products[2], "3", "100", "300"),
        // LATEST bills the last value (4) minus the value before the period (none).
        (&products[3], "4", "10", "40"),
    ];
    for (product, quantity, unit_price, total) in expect {
        let l = line(&inv, product);
        assert_eq!(num(&l["quantity"]), quantity, "{l}");
        assert_eq!(num(&l["unit_price"]), unit_price, "{l}");
        assert_eq!(num(&l["total"]), total, "{l}");
        assert_eq!(l["starting_at"], start);
        assert_eq!(l["ending_before"], "2024-11-01T00:00:00Z");
    }
    assert_eq!(num(&inv["subtotal"]), "403.625");
    assert_eq!(num(&inv["total"]), "403.625");
    // Line order is rate-card order.
    let order: Vec<&str> = inv["line_items"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|l| text(l, "product_id"))
        .collect();
    assert_eq!(
        order,
        products.iter().map(String::as_str).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn tiered_rate_crossing_tiers() {
    let app = TestApp::new("2024-10-15T12:00:00Z").await;
    let start = "2024-10-01T00:00:00Z";
    let metric = app
        .metric(
            SBX,
            json!({ "name": "calls", "aggregation_type": "SUM", "aggregation_key": "n" }),
        )
        .await;
    let product = app.usage_product(SBX, "Calls", &metric, Value::Null).await;
    let card = app.rate_card(SBX, "card").await;
    app.post(
        "/v1/contract-pricing/rate-cards/addRate",
        json!({
            "rate_card_id": card, "product_id": product, "starting_at": start,
            "entitled": true, "rate_type": "TIERED",
            "tiers": [{ "price": 10, "size": 1000 }, { "price": 8, "size": 9000 }, { "price": 5 }],
        }),
    )
    .await
    .expect(StatusCode::OK);
    let customer = app.customer(SBX, "acme", &["acme"]).await;
    app.contract(SBX, &customer, &card, start).await;
    let at = "2024-10-10T00:00:00Z";
    app.ingest(
        SBX,
        json!([event(
            "a",
            "acme",
            "x",
            "2024-10-02T00:00:00Z",
            json!({ "n": "999" })
        )]),
    )
    .await;
    // Below the first edge: one tier-1 line.
    let inv = app.invoice_at(SBX, &customer, at).await;
    let lines = inv["line_items"].as_array().expect("lines");
    assert_eq!(lines.len(), 1);
    assert_eq!(
        lines[0]["tier"],
        json!({ "level": 1, "starting_at": "0", "size": "1000" })
    );
    assert_eq!(num(&inv["total"]), "9990");

    app.ingest(
        SBX,
        json!([
            event(
                "b",
                "acme",
                "x",
                "2024-10-03T07:00:00Z",
                json!({ "n": "3001" })
            ),
            event(
                "c",
                "acme",
                "x",
                "2024-10-08T23:00:00Z",
                json!({ "n": "8500" })
            ),
        ]),
    )
    .await;
    let inv = app.invoice_at(SBX, &customer, at).await;
    let lines = inv["line_items"].as_array().expect("lines");
    let got: Vec<(String, String, String, Value)> = lines
        .iter()
        .map(|l| {
            (
                num(&l["quantity"]),
                num(&l["unit_price"]),
                num(&l["total"]),
                l["tier"].clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "1000".into(),
                "10".into(),
                "10000".into(),
                json!({ "level": 1, "starting_at": "0", "size": "1000" })
            ),
            (
                "9000".into(),
                "8".into(),
                "72000".into(),
                json!({ "level": 2, "starting_at": "1000", "size": "9000" })
            ),
            (
                "2500".into(),
                "5".into(),
                "12500".into(),
                json!({ "level": 3, "starting_at": "10000", "size": null })
            ),
        ]
    );
    assert_eq!(num(&inv["total"]), "94500");
}

#[tokio::test]
async fn latest_bills_the_change_across_periods() {
    let app = TestApp::new("2024-10-10T00:00:00Z").await;
    let start = "2024-09-01T00:00:00Z";
    let metric = app
        .metric(
            SBX,
            json!({ "name": "seats", "aggregation_type": "latest", "aggregation_key": "seats" }),
        )
        .await;
    let product = app.usage_product(SBX, "Seats", &metric, Value::Null).await;
    let card = app.rate_card(SBX, "card").await;
    app.flat_rate(SBX, &card, &product, "10", start).await;
    let customer = app.customer(SBX, "acme", &["acme"]).await;
    app.contract(SBX, &customer, &card, start).await;
    app.ingest(
        SBX,
        json!([
            event(
                "s1",
                "acme",
                "seats",
                "2024-09-20T00:00:00Z",
                json!({ "seats": "7" })
            ),
            event(
                "s2",
                "acme",
                "seats",
                "2024-09-25T03:00:00Z",
                json!({ "seats": "10" })
            ),
            event(
                "s3",
                "acme",
                "seats",
                "2024-10-02T00:00:00Z",
                json!({ "seats": "4" })
            ),
        ]),
    )
    .await;
    app.run_jobs().await;
    let all = app.invoices(SBX, &customer, "").await;
    assert_eq!(statuses(&all), vec!["FINALIZED", "DRAFT"]);
    assert_eq!(num(&line(&all[0], &product)["quantity"]), "10");
    assert_eq!(num(&all[0]["total"]), "100");
    // October: 4 − 10 = −6 seats, credited back.
    assert_eq!(num(&line(&all[1], &product)["quantity"]), "-6");
    assert_eq!(num(&all[1]["total"]), "-60");
}

#[tokio::test]
async fn a_rate_change_within_the_period_splits_the_line() {
    let app = TestApp::new("2024-10-15T12:00:00Z").await;
    let start = "2024-10-01T00:00:00Z";
    let b = Billing::count(&app, SBX, "call", "2", "acme", start).await;
    app.flat_rate(SBX, &b.card, &b.product, "3", "2024-10-10T00:00:00Z")
        .await;
    let events: Vec<Value> = ["2024-10-02T00:00:00Z", "2024-10-09T23:59:59Z"]
        .iter()
        .chain(&[
            "2024-10-10T00:00:00Z",
            "2024-10-11T00:00:00Z",
            "2024-10-12T00:00:00Z",
        ])
        .enumerate()
        .map(|(i, at)| event(&format!("e{i}"), "acme", "call", at, json!({})))
        .collect();
    app.ingest(SBX, Value::Array(events)).await;
    let inv = app.invoice_at(SBX, &b.customer, start).await;
    let got: Vec<(&str, &str, String, String, String)> = inv["line_items"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|l| {
            (
                text(l, "starting_at"),
                text(l, "ending_before"),
                num(&l["quantity"]),
                num(&l["unit_price"]),
                num(&l["total"]),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                start,
                "2024-10-10T00:00:00Z",
                "2".into(),
                "2".into(),
                "4".into()
            ),
            (
                "2024-10-10T00:00:00Z",
                "2024-11-01T00:00:00Z",
                "3".into(),
                "3".into(),
                "9".into()
            ),
        ]
    );
    assert_eq!(num(&inv["total"]), "13");
}

#[tokio::test]
async fn reads_never_write_invoice_rows() {
    let app = TestApp::new("2024-10-15T12:00:00Z").await;
    let b = Billing::count(&app, SBX, "call", "2", "acme", "2024-08-01T00:00:00Z").await;
    let all = app.invoices(SBX, &b.customer, "").await;
    // Due periods read as DRAFT until the job runs, and nothing was stored by the reads.
    assert_eq!(statuses(&all), vec!["DRAFT", "DRAFT", "DRAFT"]);
    let id = text(&all[0], "id").to_string();
    app.get(&format!("/v1/customers/{}/invoices/{id}", b.customer))
        .await
        .expect(StatusCode::OK);
    let stored = app
        .state
        .stores
        .invoices
        .invoices_for_contract(SBX, &b.contract);
    assert!(stored.await.expect("store").is_empty());
    // The job stores every period and finalizes the due ones, under the same ids.
    app.run_jobs().await;
    let after = app.invoices(SBX, &b.customer, "").await;
    assert_eq!(statuses(&after), vec!["FINALIZED", "FINALIZED", "DRAFT"]);
    assert_eq!(after[0]["id"], id.as_str());
    let stored = app
        .state
        .stores
        .invoices
        .invoices_for_contract(SBX, &b.contract);
    assert_eq!(stored.await.expect("store").len(), 3);
}

#[tokio::test]
async fn voiding_a_draft_the_job_has_not_stored_yet() {
    let app = TestApp::new("2024-10-15T12:00:00Z").await;
    let b = Billing::count(&app, SBX, "call", "2", "acme", "2024-10-01T00:00:00Z").await;
    let id = text(&app.invoices(SBX, &b.customer, "").await[0], "id").to_string();
    assert_eq!(
        app.post("/v1/invoices/void", json!({ "id": id }))
            .await
            .id(),
        id
    );
    assert_eq!(stored_status(&app, &id).await, InvoiceStatus::Void);
    app.post("/v1/invoices/void", json!({ "id": "no-such-invoice" }))
        .await
        .client_error(StatusCode::NOT_FOUND);
}

/// Largest decimal: one event rates, two overflow the invoice's exact range.
const HUGE_PRICE: &str = "79228162514264337593543950335";

/// Rewrites the price of every rate of `card` in the store, past the API's validation.
async fn force_price(app: &TestApp, env: Env, card: &str, price: &str) {
    use tally_central::store::ArchiveFilter;
    let config = &app.state.stores.config;
    let rates = config.list_docs(env, "rate", Some(card), ArchiveFilter::All, None);
    for doc in rates.await.expect("rates") {
        let mut body: Value = serde_json::from_str(&doc.body).expect("rate body");
        body["price"] = dec(price);
        let text = body.to_string();
        let written = config.update_doc(env, "rate", &doc.id, &text, false, doc.version);
        assert!(written.await.expect("store"));
    }
}

#[tokio::test]
async fn a_contract_that_cannot_be_rated_stops_no_other_finalization() {
    let app = TestApp::new("2024-10-15T12:00:00Z").await;
    let sept = "2024-09-01T00:00:00Z";
    let mut stuck = Vec::new();
    let mut fine = Vec::new();
    for env in [Env::Sandbox, Env::Production] {
        // The broken contract is created first, so a pass meets it before the healthy one.
        // Such a price is refused when configured now; this stands for one stored before that.
        let bad = Billing::count(&app, env, "big", "1", "bad", sept).await;
        force_price(&app, env, &bad.card, HUGE_PRICE).await;
        let good = Billing::count(&app, env, "call", "3", "good", sept).await;
        let events = json!([
            event("b1", "bad", "big", "2024-09-20T00:00:00Z", json!({})),
            event("b2", "bad", "big", "2024-09-21T00:00:00Z", json!({})),
            event("g1", "good", "call", "2024-09-22T00:00:00Z", json!({})),
        ]);
        assert_eq!(app.ingest(env, events).await["accepted"], 3);
        stuck.push((env, bad));
        fine.push((env, good));
    }
    let report = tally_central::service::jobs::run_jobs_once(&app.state)
        .await
        .expect("a failing contract does not fail the pass")
        .expect("lock");
    assert_eq!(report.failed, 2, "{report:?}");
    for (env, good) in &fine {
        let path = format!("/v1/customers/{}/invoices", good.customer);
        let all = app.get_as(*env, &path).await.data();
        assert_eq!(all[0]["status"], "FINALIZED", "{env:?}");
        assert_eq!(num(&all[0]["total"]), "3");
    }
    for (env, bad) in &stuck {
        let listed = app
            .get_as(*env, "/v1/operations/stuck-contracts")
            .await
            .data();
        assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
        assert_eq!(listed[0]["contract_id"], bad.contract.as_str());
        assert_eq!(listed[0]["failed_passes"], 1);
        assert!(text(&listed[0], "error").contains("overflow"), "{listed}");
    }
    // A second pass counts the failure again; the healthy contracts stay final.
    app.run_jobs().await;
    let listed = app.get("/v1/operations/stuck-contracts").await.data();
    assert_eq!(listed[0]["failed_passes"], 2);
}
