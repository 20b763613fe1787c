//! Contract changes through the HTTP API: `contracts/amend`, `contracts/updateEndDate`,
//! `v2/contracts/edit` and `getEditHistory`. Draft invoices priced with the changed terms
//! (hand-computed), finalized invoices never changed, end dates that hide or cut drafts, the
//! 400s (each naming its field, the contract unchanged), uniqueness keys, the history in order,
//! and concurrent amends on both backends.
//!
//! Setup: metric SUM(`n`) of `use` events; product `Calls` at FLAT 100 from 2024-10-01;
//! customer `acme`; a monthly contract from 2024-10-01; the clock on 2024-11-05, so October is
//! past its 24 h grace (finalized by a job pass) and November is the open draft.

use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::{json, Value};
use tally_central::store::Env;

use crate::store_conformance::Backend;
use crate::support::*;

const SBX: Env = Env::Sandbox;
const OCT: &str = "2024-10-01T00:00:00Z";
const NOV: &str = "2024-11-01T00:00:00Z";
const MID: &str = "2024-11-03T00:00:00Z";
const DEC: &str = "2024-12-01T00:00:00Z";
const NOW: &str = "2024-11-05T00:00:00Z";

struct Setup {
    product: String,
    card: String,
    customer: String,
    contract: String,
}

impl Setup {
    async fn new(app: &TestApp) -> Setup {
        Setup::with_contract(app, |_| json!({})).await
    }

    /// The setup with a contract created with the extra fields `extra` makes of the product id.
    async fn with_contract(app: &TestApp, extra: impl FnOnce(&str) -> Value) -> Setup {
        let metric = app
            .metric(
                SBX,
                json!({ "name": "n", "aggregation_type": "SUM", "aggregation_key": "n",
                        "event_type_filter": { "in_values": ["use"] } }),
            )
            .await;
        let product = app.usage_product(SBX, "Calls", &metric, Value::Null).await;
        let card = app.rate_card(SBX, "card").await;
        app.flat_rate(SBX, &card, &product, "100", OCT).await;
        let customer = app.customer(SBX, "acme", &["acme"]).await;
        let mut body = json!({ "customer_id": customer, "rate_card_id": card, "starting_at": OCT });
        merge(&mut body, extra(&product));
        let contract = app.post("/v1/contracts/create", body).await.id();
        Setup {
            product,
            card,
            customer,
            contract,
        }
    }

    /// Another contract like the first, for the same customer.
    async fn another_contract(&self, app: &TestApp) -> Setup {
        let body = json!({ "customer_id": self.customer, "rate_card_id": self.card,
                           "starting_at": OCT });
        Setup {
            product: self.product.clone(),
            card: self.card.clone(),
            customer: self.customer.clone(),
            contract: app.post("/v1/contracts/create", body).await.id(),
        }
    }

    /// Ingests `(timestamp, n)` events for acme (`tag` keeps transaction ids unique).
    async fn events(&self, app: &TestApp, tag: &str, events: &[(&str, &str)]) {
        let events: Vec<Value> = events
            .iter()
            .enumerate()
            .map(|(i, (at, n))| event(&format!("{tag}{i}"), "acme", "use", at, json!({ "n": n })))
            .collect();
        let r = app.ingest(SBX, Value::Array(events.clone())).await;
        assert_eq!(r["accepted"], events.len(), "{r}");
    }

    /// POST to `path` with this contract's ids and `extra`.
    async fn post(&self, app: &TestApp, path: &str, extra: Value) -> Resp {
        let mut body = json!({ "customer_id": self.customer, "contract_id": self.contract });
        merge(&mut body, extra);
        app.post(path, body).await
    }

    async fn amend(&self, app: &TestApp, extra: Value) -> Resp {
        self.post(app, "/v1/contracts/amend", extra).await
    }

    async fn edit(&self, app: &TestApp, extra: Value) -> Resp {
        self.post(app, "/v2/contracts/edit", extra).await
    }

    async fn v1(&self, app: &TestApp) -> Value {
        self.post(app, "/v1/contracts/get", json!({})).await.data()
    }

    async fn v2(&self, app: &TestApp) -> Value {
        self.post(app, "/v2/contracts/get", json!({})).await.data()
    }

    async fn history(&self, app: &TestApp) -> Vec<Value> {
        let data = self
            .post(app, "/v2/contracts/getEditHistory", json!({}))
            .await
            .data();
        data.as_array().expect("edit history").clone()
    }

    /// Every invoice of the contract, in period order.
    async fn invoices(&self, app: &TestApp) -> Vec<Value> {
        let query = format!("contract_id={}", self.contract);
        let mut all = app.invoices(SBX, &self.customer, &query).await;
        all.sort_by_key(|i| ms(text(i, "start_timestamp")));
        all
    }

    /// `(status, start, end, total)` of each of the contract's invoices.
    async fn summary(&self, app: &TestApp) -> Vec<[String; 4]> {
        self.invoices(app)
            .await
            .iter()
            .map(|i| {
                [
                    text(i, "status").to_string(),
                    text(i, "start_timestamp").to_string(),
                    text(i, "end_timestamp").to_string(),
                    num(&i["total"]),
                ]
            })
            .collect()
    }

    /// The invoice of the period starting at `start`.
    async fn invoice(&self, app: &TestApp, start: &str) -> Value {
        let all = self.invoices(app).await;
        let found = all.iter().find(|i| text(i, "start_timestamp") == start);
        found
            .unwrap_or_else(|| panic!("no invoice from {start} in {all:?}"))
            .clone()
    }

    /// `(quantity, unit_price, total, starting_at, ending_before)` of each line of the invoice
    /// from `start`, and its total.
    async fn lines(&self, app: &TestApp, start: &str) -> (Vec<[String; 5]>, String) {
        let inv = self.invoice(app, start).await;
        line_summary(&inv)
    }

    fn multiplier(&self, from: &str, multiplier: &str) -> Value {
        json!({ "starting_at": from, "product_id": self.product, "type": "MULTIPLIER",
                "multiplier": dec(multiplier) })
    }
}

fn line(q: &str, p: &str, total: &str, from: &str, to: &str) -> [String; 5] {
    [q, p, total, from, to].map(String::from)
}

fn inv(status: &str, from: &str, to: &str, total: &str) -> [String; 4] {
    [status, from, to, total].map(String::from)
}

#[tokio::test]
async fn an_amendment_from_the_period_start_prices_the_draft() {
    let app = TestApp::new(NOW).await;
    let s = Setup::new(&app).await;
    s.events(&app, "e", &[("2024-11-02T00:00:00Z", "80")]).await;
    assert_eq!(s.lines(&app, NOV).await.1, "8000", "80 × 100 before");
    let id = s
        .amend(
            &app,
            json!({ "starting_at": NOV, "overrides": [s.multiplier(NOV, "0.8")],
                    "custom_fields": { "deal": "renewal" } }),
        )
        .await
        .id();
    // 80 × (100 × 0.8) = 6,400.
    assert_eq!(
        s.lines(&app, NOV).await,
        (vec![line("80", "80", "6400", NOV, DEC)], "6400".into())
    );
    let v1 = s.v1(&app).await;
    assert_eq!(v1["initial"]["overrides"], json!([]), "{v1}");
    let current = v1["current"]["overrides"].as_array().expect("overrides");
    assert_eq!(current.len(), 1);
    assert_eq!(num(&current[0]["multiplier"]), "0.8");
    let amendments = v1["amendments"].as_array().expect("amendments");
    assert_eq!(amendments.len(), 1);
    let a = &amendments[0];
    assert_eq!(text(a, "id"), id);
    assert_eq!(text(a, "starting_at"), NOV);
    assert_eq!(text(a, "created_at"), NOW);
    assert_eq!(a["overrides"][0]["id"], current[0]["id"]);
    assert_eq!(a["commits"], json!([]));
    assert_eq!(a["custom_fields"], json!({ "deal": "renewal" }));
    // v2 is flat: the current terms.
    assert_eq!(s.v2(&app).await["overrides"][0]["id"], current[0]["id"]);
    // An odd multiplier: 80 × (100 × 0.3333) = 2,666.4 (the lowest multiplier wins).
    s.amend(
        &app,
        json!({ "starting_at": NOV, "overrides": [s.multiplier(NOV, "0.3333")] }),
    )
    .await
    .id();
    assert_eq!(s.lines(&app, NOV).await.1, "2666.4");
}

#[tokio::test]
async fn an_amendment_from_mid_period_splits_the_lines() {
    let app = TestApp::new(NOW).await;
    let s = Setup::new(&app).await;
    s.events(
        &app,
        "e",
        &[
            ("2024-11-01T05:00:00Z", "50"),
            ("2024-11-02T23:00:00Z", "0.5"),
            (MID, "30"),
            ("2024-11-04T10:00:00Z", "0.25"),
        ],
    )
    .await;
    s.edit(&app, json!({ "add_overrides": [s.multiplier(MID, "0.8")] }))
        .await
        .expect(StatusCode::OK);
    // 50.5 × 100 = 5,050 before the override; 30.25 × 80 = 2,420 from it.
    assert_eq!(
        s.lines(&app, NOV).await,
        (
            vec![
                line("50.5", "100", "5050", NOV, MID),
                line("30.25", "80", "2420", MID, DEC),
            ],
            "7470".into()
        )
    );
}

#[tokio::test]
async fn a_finalized_invoice_is_unchanged_by_a_later_edit() {
    let app = TestApp::new(NOW).await;
    let s = Setup::new(&app).await;
    s.events(
        &app,
        "e",
        &[
            ("2024-10-10T00:00:00Z", "80"),
            ("2024-11-02T00:00:00Z", "10"),
        ],
    )
    .await;
    app.run_jobs().await;
    let october = s.invoice(&app, OCT).await;
    assert_eq!(october["status"], "FINALIZED");
    assert_eq!(num(&october["total"]), "8000");
    // A multiplier over both months, an end-date change and a rename: October stays as frozen.
    s.edit(
        &app,
        json!({ "add_overrides": [s.multiplier(OCT, "0.5")], "update_contract_name": "new",
                "update_contract_end_date": "2025-01-01T00:00:00Z" }),
    )
    .await
    .expect(StatusCode::OK);
    s.amend(
        &app,
        json!({ "starting_at": OCT, "overrides": [s.multiplier(OCT, "0.25")] }),
    )
    .await
    .expect(StatusCode::OK);
    app.run_jobs().await;
    assert_eq!(s.invoice(&app, OCT).await, october);
    // November's draft follows: 10 × 25.
    assert_eq!(s.lines(&app, NOV).await.1, "250");
}

#[tokio::test]
async fn removing_an_override_restores_the_list_price() {
    let app = TestApp::new(NOW).await;
    let s = Setup::with_contract(&app, |product| {
        json!({ "overrides": [{ "starting_at": OCT, "type": "MULTIPLIER", "multiplier": 0.8,
                                "product_id": product }] })
    })
    .await;
    s.events(&app, "e", &[("2024-11-02T00:00:00Z", "3")]).await;
    // 3 × 80.
    assert_eq!(s.lines(&app, NOV).await.1, "240");
    let created = s.v2(&app).await["overrides"][0]["id"].clone();
    let edit = s
        .edit(&app, json!({ "remove_overrides": [{ "id": created }] }))
        .await
        .data();
    assert_eq!(edit["edit"]["remove_overrides"], json!([{ "id": created }]));
    assert_eq!(s.lines(&app, NOV).await.1, "300");
    let v1 = s.v1(&app).await;
    assert_eq!(v1["current"]["overrides"], json!([]));
    assert_eq!(v1["initial"]["overrides"][0]["id"], created, "{v1}");
    assert_eq!(v1["amendments"], json!([]), "an edit is not an amendment");
    // Removing it again: it is gone (400, nothing changed).
    let before = s.v1(&app).await;
    let r = s
        .edit(&app, json!({ "remove_overrides": [{ "id": created }] }))
        .await
        .client_error(StatusCode::BAD_REQUEST);
    assert!(
        r.message().contains("remove_overrides[0].id"),
        "{}",
        r.message()
    );
    assert_eq!(s.v1(&app).await, before);
}

#[tokio::test]
async fn shortening_the_end_hides_later_drafts_and_clearing_it_brings_them_back() {
    let app = TestApp::new(NOW).await;
    let s = Setup::new(&app).await;
    s.events(
        &app,
        "e",
        &[
            ("2024-10-10T00:00:00Z", "1"),
            ("2024-11-01T00:00:00Z", "2"),
            ("2024-11-04T00:00:00Z", "4"),
        ],
    )
    .await;
    // The job stores November's draft row and finalizes October.
    app.run_jobs().await;
    let full = vec![
        inv("FINALIZED", OCT, NOV, "100"),
        inv("DRAFT", NOV, DEC, "600"),
    ];
    assert_eq!(s.summary(&app).await, full);
    let end = |at: Value| json!({ "ending_before": at });
    let ok = |r: Resp| {
        assert_eq!(
            r.expect(StatusCode::OK).body["data"]["id"],
            json!(s.contract)
        );
    };
    ok(s.post(&app, "/v1/contracts/updateEndDate", end(json!(NOV)))
        .await);
    assert_eq!(
        s.summary(&app).await,
        full[..1].to_vec(),
        "November is gone"
    );
    app.run_jobs().await;
    assert_eq!(s.summary(&app).await, full[..1].to_vec(), "and stays gone");
    // Cut mid-period: the stored draft is rated to the new end (the 4 of 11-04 left out).
    ok(s.post(&app, "/v1/contracts/updateEndDate", end(json!(MID)))
        .await);
    assert_eq!(
        s.summary(&app).await,
        vec![full[0].clone(), inv("DRAFT", NOV, MID, "200")]
    );
    assert_eq!(text(&s.v1(&app).await["current"], "ending_before"), MID);
    // Omitted: open-ended again, the whole month.
    ok(s.post(&app, "/v1/contracts/updateEndDate", json!({})).await);
    assert_eq!(s.summary(&app).await, full);
    let v1 = s.v1(&app).await;
    assert!(v1["current"].get("ending_before").is_none(), "{v1}");
    // The cut period's draft finalizes at the new end plus grace (the job's pass at 11-04 01:00
    // is past MID + 24 h), at the cut amount.
    s.edit(&app, json!({ "update_contract_end_date": MID }))
        .await
        .expect(StatusCode::OK);
    app.set_now("2024-11-04T01:00:00Z");
    app.run_jobs().await;
    assert_eq!(
        s.summary(&app).await,
        vec![full[0].clone(), inv("FINALIZED", NOV, MID, "200")]
    );
}

#[tokio::test]
async fn a_draft_stored_before_an_end_is_extended_covers_the_new_period() {
    let app = TestApp::new(NOW).await;
    let s =
        Setup::with_contract(&app, |_| json!({ "ending_before": "2024-11-04T00:00:00Z" })).await;
    s.events(
        &app,
        "e",
        &[("2024-11-02T00:00:00Z", "2"), ("2024-11-04T03:00:00Z", "5")],
    )
    .await;
    app.set_now("2024-11-03T00:00:00Z");
    app.run_jobs().await;
    app.set_now(NOW);
    let stored = s.invoice(&app, NOV).await;
    assert_eq!(
        (text(&stored, "end_timestamp"), num(&stored["total"])),
        ("2024-11-04T00:00:00Z", "200".to_string())
    );
    s.edit(&app, json!({ "update_contract_end_date": null }))
        .await
        .expect(StatusCode::OK);
    // The draft row stored with the old end is read over the whole month now: 7 × 100.
    let extended = s.invoice(&app, NOV).await;
    assert_eq!(text(&extended, "end_timestamp"), DEC);
    assert_eq!(num(&extended["total"]), "700");
    assert_eq!(extended["id"], stored["id"]);
}

#[tokio::test]
async fn an_end_before_a_finalized_invoice_is_refused_unless_allowed() {
    let app = TestApp::new(NOW).await;
    let s = Setup::new(&app).await;
    s.events(&app, "e", &[("2024-10-10T00:00:00Z", "1")]).await;
    app.run_jobs().await;
    let before = s.v1(&app).await;
    let invoices = s.summary(&app).await;
    let refused = [
        (
            "/v1/contracts/updateEndDate",
            json!({ "ending_before": "2024-10-15T00:00:00Z",
                    "allow_ending_before_finalized_invoice": false }),
            "ending_before is before the end",
        ),
        (
            "/v2/contracts/edit",
            json!({ "update_contract_end_date": "2024-10-31T23:00:00Z",
                    "allow_contract_ending_before_finalized_invoice": false }),
            "update_contract_end_date is before the end",
        ),
    ];
    for (path, body, want) in refused {
        let r = s
            .post(&app, path, body.clone())
            .await
            .client_error(StatusCode::BAD_REQUEST);
        assert!(r.message().contains(want), "{body}: {}", r.message());
        assert_eq!(s.v1(&app).await, before, "{body} changed the contract");
        assert_eq!(s.summary(&app).await, invoices);
    }
    assert!(s.history(&app).await.is_empty());
    // At the finalized period's end exactly: allowed.
    s.post(
        &app,
        "/v1/contracts/updateEndDate",
        json!({ "ending_before": NOV, "allow_ending_before_finalized_invoice": false }),
    )
    .await
    .expect(StatusCode::OK);
    // Allowed by default: October's finalized invoice stays as it was; nothing after the end.
    s.post(
        &app,
        "/v1/contracts/updateEndDate",
        json!({ "ending_before": "2024-10-15T00:00:00Z" }),
    )
    .await
    .expect(StatusCode::OK);
    assert_eq!(s.summary(&app).await, invoices[..1].to_vec());
}

#[tokio::test]
async fn refused_changes_name_the_field_and_change_nothing() {
    let app = TestApp::new(NOW).await;
    let s = Setup::new(&app).await;
    let m = s.multiplier(NOV, "0.8");
    let item = json!([{ "product_id": s.product }]);
    let amend = "/v1/contracts/amend";
    let edit = "/v2/contracts/edit";
    let end = "/v1/contracts/updateEndDate";
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            amend,
            json!({ "starting_at": NOV, "commits": item }),
            "commits[0].type",
        ),
        (
            amend,
            json!({ "starting_at": NOV, "credits": item }),
            "credits[0]",
        ),
        (
            amend,
            json!({ "starting_at": NOV, "scheduled_charges": item }),
            "scheduled_charges",
        ),
        (
            amend,
            json!({ "starting_at": NOV, "discounts": item }),
            "discounts",
        ),
        (
            amend,
            json!({ "starting_at": NOV, "professional_services": item }),
            "professional_services",
        ),
        (
            amend,
            json!({ "starting_at": NOV, "reseller_royalties": item }),
            "reseller_royalties",
        ),
        (
            amend,
            json!({ "starting_at": "2024-11-01T00:30:00Z" }),
            "starting_at must be on an hour",
        ),
        (
            amend,
            json!({ "starting_at": "2024-09-01T00:00:00Z" }),
            "starting_at must be within",
        ),
        (amend, json!({ "overrides": [m] }), "starting_at"),
        (
            amend,
            json!({ "starting_at": NOV, "overrides": [m, { "starting_at": NOV, "type": "MULTIPLIER",
                    "multiplier": -1, "product_id": s.product }] }),
            "overrides[1].",
        ),
        (
            amend,
            json!({ "starting_at": NOV, "overrides": [{ "starting_at": NOV, "type": "MULTIPLIER",
                    "multiplier": 0.5, "product_id": "00000000-0000-0000-0000-000000000000" }] }),
            "overrides[0].product_id",
        ),
        (
            amend,
            json!({ "starting_at": NOV, "overrides": [{ "starting_at": NOV, "type": "MULTIPLIER",
                    "multiplier": 0.5, "is_commit_specific": true, "override_specifiers":
                    [{ "product_id": s.product, "commit_ids": ["nope"] }] }] }),
            "overrides[0].override_specifiers[0].commit_ids: nope is not a commit",
        ),
        (edit, json!({}), "the edit changes nothing"),
        (
            edit,
            json!({ "add_overrides": [], "remove_overrides": [] }),
            "changes nothing",
        ),
        (
            edit,
            json!({ "uniqueness_key": "k", "allow_contract_ending_before_finalized_invoice": true }),
            "changes nothing",
        ),
        (edit, json!({ "add_commits": item }), "add_commits[0].type"),
        (edit, json!({ "add_credits": item }), "add_credits"),
        (
            edit,
            json!({ "update_commits": [{ "commit_id": "x" }] }),
            "update_commits",
        ),
        (
            edit,
            json!({ "update_credits": [{ "credit_id": "x" }] }),
            "update_credits",
        ),
        (
            edit,
            json!({ "archive_commits": [{ "id": "x" }] }),
            "archive_commits",
        ),
        (
            edit,
            json!({ "archive_credits": [{ "id": "x" }] }),
            "archive_credits",
        ),
        (
            edit,
            json!({ "add_scheduled_charges": item }),
            "add_scheduled_charges",
        ),
        (
            edit,
            json!({ "add_subscriptions": item }),
            "add_subscriptions",
        ),
        (
            edit,
            json!({ "update_recurring_commits": item }),
            "update_recurring_commits",
        ),
        (
            edit,
            json!({ "update_subscriptions": item }),
            "update_subscriptions",
        ),
        (
            edit,
            json!({ "add_spend_threshold_configuration": { "x": 1 } }),
            "add_spend_threshold_configuration",
        ),
        (
            edit,
            json!({ "remove_overrides": [{ "id": "nope" }] }),
            "remove_overrides[0].id",
        ),
        (
            edit,
            json!({ "add_overrides": [{ "starting_at": NOV, "type": "TIERED",
                       "product_id": s.product, "tiers": [{ "multiplier": 0.5 }], "priority": 1 }] }),
            "add_overrides[0].",
        ),
        (
            edit,
            json!({ "add_overrides": [m, { "starting_at": "2024-11-01T00:00:01Z",
                       "product_id": s.product, "type": "MULTIPLIER", "multiplier": 0.5 }] }),
            "add_overrides[1].starting_at must be on an hour",
        ),
        (
            edit,
            json!({ "add_overrides": [m], "remove_overrides": [{ "id": "nope" }] }),
            "remove_overrides[0].id",
        ),
        (
            edit,
            json!({ "update_contract_end_date": "2024-11-15T00:00:30Z" }),
            "update_contract_end_date must be on an hour",
        ),
        (
            edit,
            json!({ "update_contract_end_date": OCT }),
            "update_contract_end_date must be after",
        ),
        (
            edit,
            json!({ "update_contract_name": " " }),
            "update_contract_name must not be empty",
        ),
        (
            edit,
            json!({ "update_net_payment_terms_days": -1 }),
            "update_net_payment_terms_days",
        ),
        (
            edit,
            json!({ "uniqueness_key": "", "update_contract_name": "x" }),
            "uniqueness_key",
        ),
        (
            edit,
            json!({ "update_contract_name": "x", "add_commits": [{}] }),
            "add_commits",
        ),
        (
            end,
            json!({ "ending_before": "2024-11-15T00:00:00.001Z" }),
            "ending_before must be on an hour",
        ),
        (
            end,
            json!({ "ending_before": "2024-09-01T00:00:00Z" }),
            "ending_before must be after",
        ),
        (end, json!({ "ending_before": 5 }), "ending_before"),
    ];
    let before = s.v1(&app).await;
    for (path, body, want) in cases {
        let r = s
            .post(&app, path, body.clone())
            .await
            .client_error(StatusCode::BAD_REQUEST);
        assert!(
            r.message().contains(want),
            "{path} {body}: expected {want:?} in {:?}",
            r.message()
        );
        assert_eq!(
            s.v1(&app).await,
            before,
            "{path} {body} changed the contract"
        );
    }
    assert!(s.history(&app).await.is_empty());
    // Another customer's contract, or none: 404, for every operation.
    for path in [amend, edit, end, "/v2/contracts/getEditHistory"] {
        let other = json!({ "customer_id": "someone", "contract_id": s.contract,
                            "starting_at": NOV, "update_contract_name": "x" });
        app.post(path, other)
            .await
            .client_error(StatusCode::NOT_FOUND);
    }
    // An archived contract cannot be changed.
    s.post(
        &app,
        "/v1/contracts/archive",
        json!({ "void_invoices": false }),
    )
    .await
    .expect(StatusCode::OK);
    let archived = s.v1(&app).await;
    let r = s
        .edit(&app, json!({ "update_contract_name": "x" }))
        .await
        .client_error(StatusCode::BAD_REQUEST);
    assert!(r.message().contains("archived"), "{}", r.message());
    assert_eq!(s.v1(&app).await, archived);
}

#[tokio::test]
async fn a_reused_uniqueness_key_is_a_409() {
    let app = TestApp::new(NOW).await;
    let s = Setup::new(&app).await;
    s.edit(
        &app,
        json!({ "uniqueness_key": "k1", "update_contract_name": "one" }),
    )
    .await
    .expect(StatusCode::OK);
    let before = s.v1(&app).await;
    let r = s
        .edit(
            &app,
            json!({ "uniqueness_key": "k1", "update_contract_name": "two" }),
        )
        .await
        .client_error(StatusCode::CONFLICT);
    assert!(r.message().contains("uniqueness key"), "{}", r.message());
    assert_eq!(s.v1(&app).await, before);
    assert_eq!(s.history(&app).await.len(), 1);
    // Another key, or the same key on another contract, is fine.
    s.edit(
        &app,
        json!({ "uniqueness_key": "k2", "update_contract_name": "two" }),
    )
    .await
    .expect(StatusCode::OK);
    let other = s.another_contract(&app).await;
    other
        .edit(
            &app,
            json!({ "uniqueness_key": "k1", "update_contract_name": "x" }),
        )
        .await
        .expect(StatusCode::OK);
}

#[tokio::test]
async fn the_edit_history_lists_every_change_in_order() {
    let app = TestApp::new(NOW).await;
    let s = Setup::with_contract(&app, |_| {
        json!({ "name": "first", "net_payment_terms_days": 30,
                "ending_before": "2025-10-01T00:00:00Z" })
    })
    .await;
    let amended = s
        .amend(
            &app,
            json!({ "starting_at": NOV, "overrides": [s.multiplier(NOV, "0.9")] }),
        )
        .await
        .id();
    app.set_now("2024-11-05T01:00:00Z");
    let renamed = s
        .edit(
            &app,
            json!({ "update_contract_name": "second", "uniqueness_key": "rename",
                    "add_overrides": [s.multiplier(DEC, "0.5")] }),
        )
        .await
        .data();
    let added = renamed["edit"]["add_overrides"][0]["id"].clone();
    app.set_now("2024-11-05T02:00:00Z");
    s.post(
        &app,
        "/v1/contracts/updateEndDate",
        json!({ "ending_before": "2025-01-01T00:00:00Z" }),
    )
    .await
    .expect(StatusCode::OK);
    app.set_now("2024-11-05T03:00:00Z");
    let cleared = s
        .edit(
            &app,
            json!({ "update_contract_end_date": null, "update_contract_name": null,
                    "update_net_payment_terms_days": null, "remove_overrides": [{ "id": added }] }),
        )
        .await
        .data();
    let history = s.history(&app).await;
    let ids: Vec<&str> = history.iter().map(|e| text(e, "id")).collect();
    assert_eq!(ids.len(), 4);
    assert_eq!(ids[0], amended);
    assert_eq!(ids[1], text(&renamed, "id"));
    assert_eq!(ids[3], text(&cleared, "id"));
    let stamps: Vec<&str> = history.iter().map(|e| text(e, "timestamp")).collect();
    assert_eq!(
        stamps,
        [
            NOW,
            "2024-11-05T01:00:00Z",
            "2024-11-05T02:00:00Z",
            "2024-11-05T03:00:00Z"
        ]
    );
    assert_eq!(num(&history[0]["add_overrides"][0]["multiplier"]), "0.9");
    assert_eq!(history[1]["update_contract_name"], "second");
    assert_eq!(history[1]["uniqueness_key"], "rename");
    assert_eq!(history[1]["add_overrides"][0]["id"], added);
    assert_eq!(
        history[1], renamed["edit"],
        "the response echoes the edit as recorded"
    );
    assert_eq!(
        history[2]["update_contract_end_date"],
        "2025-01-01T00:00:00Z"
    );
    let last = &history[3];
    assert_eq!(last["remove_overrides"], json!([{ "id": added }]));
    for cleared_term in [
        "update_contract_end_date",
        "update_contract_name",
        "update_net_payment_terms_days",
    ] {
        assert_eq!(last.get(cleared_term), Some(&Value::Null), "{last}");
    }
    assert!(last.get("add_overrides").is_none() && last.get("uniqueness_key").is_none());
    // v1: `initial` is the contract as created, `current` with every change.
    let v1 = s.v1(&app).await;
    let (initial, current) = (&v1["initial"], &v1["current"]);
    assert_eq!(initial["name"], "first");
    assert_eq!(num(&initial["net_payment_terms_days"]), "30");
    assert_eq!(initial["ending_before"], "2025-10-01T00:00:00Z");
    assert_eq!(initial["overrides"], json!([]));
    for gone in ["name", "net_payment_terms_days", "ending_before"] {
        assert!(current.get(gone).is_none(), "{gone} in {current}");
    }
    assert_eq!(current["overrides"].as_array().map(Vec::len), Some(1));
    assert_eq!(v1["amendments"].as_array().map(Vec::len), Some(1));
    // getEditHistory of a contract never changed: empty.
    let fresh = s.another_contract(&app).await;
    assert!(fresh.history(&app).await.is_empty());
    assert_eq!(
        fresh.v1(&app).await["initial"],
        fresh.v1(&app).await["current"]
    );
}

#[tokio::test]
async fn an_edit_may_not_push_the_contract_past_its_override_limit() {
    let app = TestApp::new(NOW).await;
    let s = Setup::new(&app).await;
    let hundred: Vec<Value> = (0..100).map(|_| s.multiplier(NOV, "0.9")).collect();
    s.amend(&app, json!({ "starting_at": NOV, "overrides": hundred }))
        .await
        .expect(StatusCode::OK);
    let before = s.v1(&app).await;
    let r = s
        .edit(&app, json!({ "add_overrides": [s.multiplier(NOV, "0.5")] }))
        .await
        .client_error(StatusCode::BAD_REQUEST);
    assert!(
        r.message().contains("add_overrides: at most 100"),
        "{}",
        r.message()
    );
    assert_eq!(s.v1(&app).await, before);
    // Removing one makes room for one.
    let first = before["current"]["overrides"][0]["id"].clone();
    s.edit(
        &app,
        json!({ "add_overrides": [s.multiplier(NOV, "0.5")], "remove_overrides": [{ "id": first }] }),
    )
    .await
    .expect(StatusCode::OK);
    assert_eq!(
        s.v2(&app).await["overrides"].as_array().map(Vec::len),
        Some(100)
    );
}

async fn concurrent_amends_on(backend: Backend) {
    let app = Arc::new(TestApp::on_backend(NOW, backend).await);
    let s = Setup::new(&app).await;
    s.events(&app, "e", &[("2024-11-02T00:00:00Z", "10")]).await;
    let requests: Vec<(String, Value)> = (1..=30)
        .map(|i| {
            let body = json!({
                "customer_id": s.customer, "contract_id": s.contract, "starting_at": NOV,
                "overrides": [s.multiplier(NOV, &format!("0.{:02}", 30 + i))],
            });
            ("/v1/contracts/amend".to_string(), body)
        })
        .collect();
    let mut ids: Vec<String> = all_at_once(&app, requests)
        .await
        .into_iter()
        .map(Resp::id)
        .collect();
    let v1 = s.v1(&app).await;
    let mut multipliers: Vec<String> = v1["current"]["overrides"]
        .as_array()
        .expect("overrides")
        .iter()
        .map(|o| num(&o["multiplier"]))
        .collect();
    multipliers.sort();
    let want: Vec<String> = (31..=60)
        .map(|i| rust_decimal::Decimal::new(i, 2).normalize().to_string())
        .collect();
    assert_eq!(multipliers, want, "every amendment's override is there");
    let mut amended: Vec<String> = v1["amendments"]
        .as_array()
        .expect("amendments")
        .iter()
        .map(|a| text(a, "id").to_string())
        .collect();
    ids.sort();
    amended.sort();
    assert_eq!(amended, ids);
    assert_eq!(s.history(&app).await.len(), 30);
    // The lowest multiplier prices the draft: 10 × 31.
    assert_eq!(s.lines(&app, NOV).await.1, "310");
}

#[tokio::test]
async fn concurrent_amends_all_apply_on_sqlite() {
    concurrent_amends_on(Backend::Sqlite).await;
}

#[tokio::test]
async fn concurrent_amends_all_apply_on_postgres() {
    concurrent_amends_on(Backend::Postgres).await;
}
