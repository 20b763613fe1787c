//! Scheduled charges through the HTTP API (issue 12 item 1): each item a `scheduled` line on the
//! SCHEDULED invoice at its timestamp, or consolidated onto the usage invoice ending then
//! (`scheduled_charges_on_usage_invoices: ALL`, commit purchases too); added by amendments and
//! edits, archived by edits (drafts only); bad ones are 400s that store nothing. Hand-computed
//! numbers, on both backends.
//!
//! Setup as `balances`: `Calls` at FLAT 100 from 2024-11-01, FIXED product `Prepaid`, monthly
//! contracts from 2024-11-01, the clock on 11-25 (grace 24 h).

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::balances::{l, lines, Setup, DEC, JAN, NOW, SBX, START};
use crate::store_conformance::Backend;
use crate::support::*;

const FEB: &str = "2025-02-01T00:00:00Z";

fn charge(s: &Setup, name: &str, schedule: Value) -> Value {
    json!({ "product_id": s.fixed, "name": name, "schedule": schedule })
}

fn items(items: &[(&str, &str)]) -> Value {
    let items: Vec<Value> = items
        .iter()
        .map(|(at, amount)| json!({ "timestamp": at, "amount": dec(amount) }))
        .collect();
    json!({ "schedule_items": items })
}

/// `update_scheduled_charges` on a charge of 50 on 11-20 (past its grace at 11-25), 100 on
/// 12-01 and 200 on 01-01: adding 33.33 on 12-15, rewriting January's as 3 × 66.67 = 200.01 and
/// removing December's bills 50, 33.33 and 200.01 on their SCHEDULED invoices; the edit reads
/// back the update. Refused, changing nothing: touching the 11-20 item or adding one at a time
/// past its grace, an unknown item or charge, `amount` with `unit_price`, and removing every
/// item.
#[tokio::test]
async fn an_edit_changes_a_scheduled_charges_items() {
    let app = TestApp::new(NOW).await;
    let s = Setup::new(&app).await;
    let nov20 = "2024-11-20T00:00:00Z";
    let k = s
        .contract(
            &app,
            json!({ "scheduled_charges": [charge(&s, "Fee", items(&[(nov20, "50"), (DEC, "100"), (JAN, "200")]))] }),
        )
        .await;
    let c = s.v2(&app, &k).await;
    let charge_id = text(&c["scheduled_charges"][0], "id").to_string();
    let item = |j: usize| {
        text(
            &c["scheduled_charges"][0]["schedule"]["schedule_items"][j],
            "id",
        )
        .to_string()
    };
    let (past, dec_item, jan_item) = (item(0), item(1), item(2));
    let edit = |schedule: Value| {
        json!({ "customer_id": s.customer, "contract_id": k, "update_scheduled_charges": [
            { "scheduled_charge_id": charge_id, "invoice_schedule": schedule }] })
    };
    let bad = [
        (
            json!({ "remove_schedule_items": [{ "id": past }] }),
            "remove_schedule_items[0].id: the invoice at that time is past its grace",
        ),
        (
            json!({ "update_schedule_items": [{ "id": past, "amount": 1 }] }),
            "update_schedule_items[0].id: the invoice at that time is past its grace",
        ),
        (
            json!({ "add_schedule_items": [{ "timestamp": "2024-11-24T00:00:00Z", "amount": 1 }] }),
            "add_schedule_items[0].timestamp: the invoice",
        ),
        (
            json!({ "update_schedule_items": [{ "id": jan_item, "timestamp": nov20 }] }),
            "update_schedule_items[0].timestamp: the invoice",
        ),
        (
            json!({ "remove_schedule_items": [{ "id": "nope" }] }),
            "nope is not an item of the charge",
        ),
        (
            json!({ "update_schedule_items": [{ "id": jan_item, "amount": 1, "unit_price": 1 }] }),
            "not both",
        ),
        (
            json!({ "add_schedule_items": [{ "timestamp": "2024-12-15T00:30:00Z", "amount": 1 }] }),
            "add_schedule_items[0].timestamp",
        ),
    ];
    for (schedule, want) in bad {
        let r = app
            .post("/v2/contracts/edit", edit(schedule.clone()))
            .await
            .client_error(StatusCode::BAD_REQUEST);
        assert!(r.message().contains(want), "{schedule}: {}", r.message());
    }
    let r = app
        .post(
            "/v2/contracts/edit",
            json!({ "customer_id": s.customer, "contract_id": k, "update_scheduled_charges": [
                { "scheduled_charge_id": "nope", "invoice_schedule": {} }] }),
        )
        .await
        .client_error(StatusCode::BAD_REQUEST);
    assert!(
        r.message()
            .contains("update_scheduled_charges[0].scheduled_charge_id"),
        "{}",
        r.message()
    );
    assert_eq!(
        s.v2(&app, &k).await,
        c,
        "a refused edit changed the contract"
    );

    let r = app
        .post(
            "/v2/contracts/edit",
            edit(json!({
                "add_schedule_items": [{ "timestamp": "2024-12-15T00:00:00Z", "amount": dec("33.33") }],
                "update_schedule_items": [{ "id": jan_item, "unit_price": dec("66.67"), "quantity": 3 }],
                "remove_schedule_items": [{ "id": dec_item }],
            })),
        )
        .await
        .data();
    let recorded = &r["edit"]["update_scheduled_charges"][0];
    assert_eq!(recorded["id"], charge_id.as_str());
    assert_eq!(
        recorded["invoice_schedule"]["remove_schedule_items"],
        json!([{ "id": dec_item }])
    );
    assert_eq!(
        num(&recorded["invoice_schedule"]["update_schedule_items"][0]["amount"]),
        "200.01"
    );
    let after = s.v2(&app, &k).await;
    let got: Vec<(String, String, String, String)> = after["scheduled_charges"][0]["schedule"]
        ["schedule_items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| {
            (
                text(i, "timestamp").to_string(),
                num(&i["amount"]),
                num(&i["unit_price"]),
                num(&i["quantity"]),
            )
        })
        .collect();
    let want = [
        (nov20, "50", "50", "1"),
        ("2024-12-15T00:00:00Z", "33.33", "33.33", "1"),
        (JAN, "200.01", "66.67", "3"),
    ]
    .map(|(a, b, c, d)| (a.to_string(), b.to_string(), c.to_string(), d.to_string()));
    assert_eq!(got, want);
    assert_eq!(
        text(
            &after["scheduled_charges"][0]["schedule"]["schedule_items"][2],
            "id"
        ),
        jan_item
    );
    // Removing a charge's every item is refused: archive the charge instead.
    let k2 = s
        .contract(
            &app,
            json!({ "scheduled_charges": [charge(&s, "One", items(&[(JAN, "7")]))] }),
        )
        .await;
    let c2 = s.v2(&app, &k2).await;
    let only = &c2["scheduled_charges"][0];
    let r = app
        .post(
            "/v2/contracts/edit",
            json!({ "customer_id": s.customer, "contract_id": k2, "update_scheduled_charges": [
                { "scheduled_charge_id": only["id"], "invoice_schedule": {
                    "remove_schedule_items": [{ "id": only["schedule"]["schedule_items"][0]["id"] }] } }] }),
        )
        .await
        .client_error(StatusCode::BAD_REQUEST);
    assert!(r.message().contains("between 1 and"), "{}", r.message());
    app.set_now("2025-01-02T00:00:00Z");
    let totals: Vec<(String, String)> = scheduled(&app, &s, &k)
        .await
        .into_iter()
        .map(|(at, total, _)| (at, total))
        .collect();
    let want = [
        (nov20, "50"),
        ("2024-12-15T00:00:00Z", "33.33"),
        (JAN, "200.01"),
    ]
    .map(|(a, b)| (a.to_string(), b.to_string()));
    assert_eq!(totals, want);
}

/// A PRO_SERVICE product `Consulting`.
async fn consulting_product(app: &TestApp) -> String {
    app.post(
        "/v1/contract-pricing/products/create",
        json!({ "name": "Consulting", "type": "PRO_SERVICE" }),
    )
    .await
    .id()
}

/// `(start, total, lines)` of the customer's SCHEDULED invoices of `contract`.
async fn scheduled(
    app: &TestApp,
    s: &Setup,
    contract: &str,
) -> Vec<(String, String, Vec<[String; 5]>)> {
    app.invoices(SBX, &s.customer, "")
        .await
        .into_iter()
        .filter(|i| i["type"] == "SCHEDULED" && i["contract_id"] == contract)
        .map(|i| {
            (
                text(&i, "start_timestamp").to_string(),
                num(&i["total"]),
                lines(&i),
            )
        })
        .collect()
}

/// A setup fee of 5000 on 11-01 and a platform fee of 3 × 333.33 (EACH, monthly from 11-01 to
/// 02-01: 11-01, 12-01, 01-01): the SCHEDULED invoice of 11-01 is 5000 + 999.99 = 5999.99, the
/// one of 12-01 appears on 12-01 (999.99), each finalized after its grace; usage invoices carry
/// neither.
async fn scheduled_charges_bill_on_their_own_invoices(backend: Backend) {
    let app = TestApp::on_backend(NOW, backend).await;
    let s = Setup::new(&app).await;
    let platform = json!({ "recurring_schedule": { "amount_distribution": "EACH",
        "frequency": "MONTHLY", "starting_at": START, "ending_before": FEB,
        "unit_price": dec("333.33"), "quantity": 3 } });
    let k = s
        .contract(
            &app,
            json!({ "ending_before": FEB, "scheduled_charges": [
                charge(&s, "Setup", items(&[(START, "5000")])),
                charge(&s, "Platform", platform),
            ] }),
        )
        .await;
    let c = s.v2(&app, &k).await;
    let charges = c["scheduled_charges"].as_array().expect("charges");
    assert_eq!(charges.len(), 2, "{c}");
    let (setup, platform) = (text(&charges[0], "id"), text(&charges[1], "id"));
    let platform_items = charges[1]["schedule"]["schedule_items"]
        .as_array()
        .expect("items");
    let at: Vec<&str> = platform_items
        .iter()
        .map(|i| text(i, "timestamp"))
        .collect();
    assert_eq!(at, [START, DEC, JAN]);
    assert_eq!(num(&platform_items[0]["amount"]), "999.99");
    assert_eq!(charges[0]["product"]["name"], "Prepaid");

    let now = scheduled(&app, &s, &k).await;
    assert_eq!(
        now,
        [(
            START.to_string(),
            "5999.99".to_string(),
            vec![
                l("scheduled", "1", "5000", "5000", "-"),
                l("scheduled", "3", "333.33", "999.99", "-"),
            ]
        )]
    );
    let inv = app.invoices(SBX, &s.customer, "").await;
    let first = inv
        .iter()
        .find(|i| i["type"] == "SCHEDULED")
        .expect("scheduled");
    let ids: Vec<&str> = first["line_items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| text(l, "scheduled_charge_id"))
        .collect();
    assert_eq!(ids, [setup, platform]);
    assert_eq!(first["line_items"][0]["name"], "Setup");
    s.events(&app, "a", &[("2024-11-10T00:00:00Z", "2")]).await;
    let nov = s.invoice(&app, &k, START).await;
    assert_eq!(lines(&nov), vec![l("usage", "2", "100", "200", "-")]);

    // Half a day into December: November's is past its grace, December's is not.
    app.set_now("2024-12-01T12:00:00Z");
    app.run_jobs().await;
    let later = scheduled(&app, &s, &k).await;
    let totals: Vec<(&str, &str)> = later
        .iter()
        .map(|(at, total, _)| (at.as_str(), total.as_str()))
        .collect();
    assert_eq!(totals, [(START, "5999.99"), (DEC, "999.99")]);
    let statuses: Vec<String> = app
        .invoices(SBX, &s.customer, "")
        .await
        .iter()
        .filter(|i| i["type"] == "SCHEDULED")
        .map(|i| text(i, "status").to_string())
        .collect();
    assert_eq!(statuses, ["FINALIZED", "DRAFT"]);
}

/// Consolidated (`ALL`): a charge of 700 and a commit purchase of 300 at 12-01 (November's
/// end) go on November's usage invoice: 2 units (200) covered by the commit, −200 applied,
/// purchase 300, charge 700: total 1000. A charge of 100 on 11-15 ends no period: it stays a
/// SCHEDULED invoice.
async fn consolidated_items_go_on_the_usage_invoice(backend: Backend) {
    let app = TestApp::on_backend(NOW, backend).await;
    let s = Setup::new(&app).await;
    let commit = json!({ "product_id": s.fixed, "type": "PREPAID", "name": "Prepaid",
        "priority": 1, "access_schedule": { "schedule_items": [
            { "amount": 300, "starting_at": START, "ending_before": FEB }] },
        "invoice_schedule": { "schedule_items": [{ "timestamp": DEC, "amount": 300 }] } });
    let k = s
        .contract(
            &app,
            json!({ "scheduled_charges_on_usage_invoices": "ALL", "commits": [commit],
                    "scheduled_charges": [
                        charge(&s, "Monthly", items(&[(DEC, "700")])),
                        charge(&s, "Mid", items(&[("2024-11-15T00:00:00Z", "100")])),
                    ] }),
        )
        .await;
    s.events(&app, "a", &[("2024-11-10T00:00:00Z", "2")]).await;
    let nov = s.invoice(&app, &k, START).await;
    let got = lines(&nov);
    let c = got[0][4].clone();
    assert_eq!(
        got,
        vec![
            l("usage", "2", "100", "200", &c),
            l("applied_commit_or_credit", "-", "-", "-200", &c),
            l("commit_purchase", "1", "300", "300", &c),
            l("scheduled", "1", "700", "700", "-"),
        ]
    );
    assert_eq!(
        (num(&nov["subtotal"]), num(&nov["total"])),
        ("1200".into(), "1000".into())
    );
    let only = scheduled(&app, &s, &k).await;
    assert_eq!(
        only,
        [(
            "2024-11-15T00:00:00Z".to_string(),
            "100".to_string(),
            vec![l("scheduled", "1", "100", "100", "-")]
        )]
    );
    // Still so once finalized.
    app.set_now("2024-12-10T00:00:00Z");
    app.run_jobs().await;
    let nov = s.invoice(&app, &k, START).await;
    assert_eq!(
        (text(&nov, "status"), num(&nov["total"])),
        ("FINALIZED", "1000".into())
    );
    assert_eq!(scheduled(&app, &s, &k).await.len(), 1);
}

/// An amendment adds a charge (10 on 12-01); a v2 edit archives it before it is billed and adds
/// another (20 on 12-15); the archived one leaves the drafts; bad changes are 400s.
async fn amendments_and_edits_add_and_archive_charges(backend: Backend) {
    let app = TestApp::on_backend(NOW, backend).await;
    let s = Setup::new(&app).await;
    let k = s.contract(&app, json!({})).await;
    app.post(
        "/v1/contracts/amend",
        json!({ "customer_id": s.customer, "contract_id": k, "starting_at": START,
                "scheduled_charges": [charge(&s, "Ten", items(&[(DEC, "10")]))] }),
    )
    .await
    .expect(StatusCode::OK);
    let v1 = app
        .post(
            "/v1/contracts/get",
            json!({ "customer_id": s.customer, "contract_id": k }),
        )
        .await
        .data();
    let ten = text(&v1["amendments"][0]["scheduled_charges"][0], "id").to_string();
    assert_eq!(v1["current"]["scheduled_charges"][0]["id"], ten.as_str());
    app.set_now("2024-12-02T00:00:00Z");
    assert_eq!(scheduled(&app, &s, &k).await[0].1, "10");
    let edit = json!({ "customer_id": s.customer, "contract_id": k,
                       "archive_scheduled_charges": [{ "id": ten }],
                       "add_scheduled_charges": [charge(&s, "Twenty", items(&[("2024-12-15T00:00:00Z", "20")]))] });
    let r = app.post("/v2/contracts/edit", edit).await.data();
    assert_eq!(
        r["edit"]["archive_scheduled_charges"][0]["id"],
        ten.as_str()
    );
    assert_eq!(r["edit"]["add_scheduled_charges"][0]["name"], "Twenty");
    assert!(scheduled(&app, &s, &k).await.is_empty());
    app.set_now("2024-12-20T00:00:00Z");
    let now = scheduled(&app, &s, &k).await;
    let totals: Vec<&str> = now.iter().map(|(_, t, _)| t.as_str()).collect();
    assert_eq!(totals, ["20"]);
    let c = s.v2(&app, &k).await;
    assert!(c["scheduled_charges"][0]["archived_at"].is_string(), "{c}");

    let before = c;
    let bad = [
        (
            json!({ "archive_scheduled_charges": [{ "id": ten }] }),
            "archive_scheduled_charges[0].id: ",
        ),
        (
            json!({ "archive_scheduled_charges": [{ "id": "nope" }] }),
            "the contract has no such scheduled charge",
        ),
        (
            json!({ "add_scheduled_charges": [{ "product_id": s.calls,
                      "schedule": { "schedule_items": [{ "timestamp": DEC, "amount": 1 }] } }] }),
            "add_scheduled_charges[0].product_id",
        ),
        (
            json!({ "add_scheduled_charges": [{ "product_id": s.fixed }] }),
            "add_scheduled_charges[0].schedule: required",
        ),
        (
            json!({ "add_scheduled_charges": [charge(&s, "Half hour",
                      items(&[("2024-12-01T00:30:00Z", "1")]))] }),
            "add_scheduled_charges[0].schedule.schedule_items[0].timestamp",
        ),
        (
            json!({ "add_scheduled_charges": [charge(&s, "Negative", items(&[(DEC, "-1")]))] }),
            "must not be negative",
        ),
        (
            json!({ "update_scheduled_charges": [{ "scheduled_charge_id": "x" }] }),
            "update_scheduled_charges",
        ),
    ];
    for (change, want) in bad {
        let mut body = json!({ "customer_id": s.customer, "contract_id": k });
        merge(&mut body, change.clone());
        let r = app
            .post("/v2/contracts/edit", body)
            .await
            .client_error(StatusCode::BAD_REQUEST);
        assert!(r.message().contains(want), "{change}: {}", r.message());
    }
    let create = json!({ "customer_id": s.customer, "rate_card_id": s.card, "starting_at": START,
        "scheduled_charges": [{ "product_id": s.fixed, "schedule": { "schedule_items": [] } }] });
    let r = app
        .post("/v1/contracts/create", create)
        .await
        .client_error(StatusCode::BAD_REQUEST);
    assert!(
        r.message()
            .contains("scheduled_charges[0].schedule.schedule_items"),
        "{}",
        r.message()
    );
    let after = s.v2(&app, &k).await;
    assert_eq!(before, after, "a refused edit changed the contract");
}

/// Professional services: Onboarding (PRO_SERVICE, 150 × 10, max 2000) invoiced through
/// `scheduleProServicesInvoice`: 4 × 150 = 600 on 11-26 (its own SCHEDULED invoice, a
/// `professional_service` line), 1400 on 11-28 (2000 in all); a cent more is refused. 20
/// requests of 100 at once against a max of 1000: exactly 10 land and 1000 is invoiced.
async fn professional_services_invoice_up_to_their_max(backend: Backend) {
    let app = std::sync::Arc::new(TestApp::on_backend(NOW, backend).await);
    let s = Setup::new(&app).await;
    let consulting = consulting_product(&app).await;
    let service = |description: &str, max: &str| {
        json!({ "product_id": consulting, "unit_price": 150, "quantity": 10,
                "max_amount": dec(max), "description": description })
    };
    let k = s
        .contract(
            &app,
            json!({ "professional_services": [service("Onboarding", "2000"), service("Support", "1000")] }),
        )
        .await;
    let c = s.v2(&app, &k).await;
    let services = c["professional_services"].as_array().expect("services");
    assert_eq!(services.len(), 2, "{c}");
    assert!(services[0].get("product_name").is_none(), "{c}");
    assert_eq!(services[0]["max_amount"], 2000);
    let (onboarding, support) = (text(&services[0], "id"), text(&services[1], "id"));
    let schedule = |at: &str, line: Value| {
        json!({ "customer_id": s.customer, "contract_id": k, "issued_at": at,
                "line_items": [line] })
    };
    let path = "/v1/contracts/scheduleProServicesInvoice";
    let r = app
        .post(
            path,
            schedule(
                "2024-11-26T00:00:00Z",
                json!({ "professional_service_id": onboarding, "unit_price": 150, "quantity": 4 }),
            ),
        )
        .await
        .data();
    let inv = &r[0];
    assert_eq!(
        (inv["type"].as_str(), num(&inv["total"])),
        (Some("SCHEDULED"), "600".into())
    );
    let line = &inv["line_items"][0];
    assert_eq!(line["type"], "professional_service");
    assert_eq!(line["professional_service_id"], onboarding);
    assert_eq!(line["name"], "Onboarding");
    assert_eq!(
        (num(&line["quantity"]), num(&line["unit_price"])),
        ("4".into(), "150".into())
    );
    app.post(
        path,
        schedule(
            "2024-11-28T00:00:00Z",
            json!({ "professional_service_id": onboarding, "amount": 1400 }),
        ),
    )
    .await
    .expect(StatusCode::OK);
    let bad = [
        (
            schedule(
                "2024-11-28T00:00:00Z",
                json!({ "professional_service_id": onboarding, "amount": 0.01 }),
            ),
            "more than its max_amount 2000",
        ),
        (
            schedule(
                "2024-11-01T00:00:00Z",
                json!({ "professional_service_id": onboarding, "amount": 1 }),
            ),
            "issued_at: the invoice at that time is past its grace period",
        ),
        (
            schedule(
                "2024-11-28T00:00:00Z",
                json!({ "professional_service_id": "nope", "amount": 1 }),
            ),
            "line_items[0].professional_service_id",
        ),
        (
            schedule(
                "2024-11-28T00:30:00Z",
                json!({ "professional_service_id": onboarding, "amount": 1 }),
            ),
            "issued_at",
        ),
        (
            schedule(
                "2024-11-28T00:00:00Z",
                json!({ "professional_service_id": onboarding }),
            ),
            "line_items[0].amount: give amount, or both unit_price and quantity",
        ),
    ];
    let before = s.v2(&app, &k).await;
    for (body, want) in bad {
        let r = app
            .post(path, body.clone())
            .await
            .client_error(StatusCode::BAD_REQUEST);
        assert!(r.message().contains(want), "{body}: {}", r.message());
    }
    assert_eq!(
        s.v2(&app, &k).await,
        before,
        "a refused schedule changed the contract"
    );

    // 20 at once, 100 each, against Support's max of 1000.
    let requests = (0..20)
        .map(|_| {
            let line = json!({ "professional_service_id": support, "amount": 100 });
            (path.to_string(), schedule("2024-11-29T00:00:00Z", line))
        })
        .collect();
    let responses = all_at_once(&app, requests).await;
    let ok = responses
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .count();
    assert_eq!(
        ok,
        10,
        "{:?}",
        responses.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert!(responses
        .iter()
        .all(|r| r.status == StatusCode::OK || r.status == StatusCode::BAD_REQUEST));
    // Listed once its instant is reached.
    app.set_now("2024-11-29T01:00:00Z");
    let invoices = app.invoices(SBX, &s.customer, "").await;
    let at_29 = invoices
        .iter()
        .find(|i| i["type"] == "SCHEDULED" && text(i, "start_timestamp") == "2024-11-29T00:00:00Z")
        .expect("the invoice of 11-29");
    assert_eq!(num(&at_29["total"]), "1000");
    assert_eq!(at_29["line_items"].as_array().map(Vec::len), Some(10));
    // A non-PRO_SERVICE product is refused at create.
    let r = app
        .post(
            "/v1/contracts/create",
            json!({ "customer_id": s.customer, "starting_at": START,
                    "professional_services": [{ "product_id": s.fixed, "unit_price": 1,
                                                "quantity": 1, "max_amount": 1 }] }),
        )
        .await
        .client_error(StatusCode::BAD_REQUEST);
    assert!(
        r.message().contains("professional_services[0].product_id"),
        "{}",
        r.message()
    );
}

/// `contracts/amend` adds a professional service (checked as on create): v1 shows it in the
/// amendment and in `current` (not in `initial`), and it invoices like one given at create:
/// 2 × 333.33 = 666.66 on 11-27. A non-PRO_SERVICE product is a 400 naming the field that
/// stores nothing.
#[tokio::test]
async fn an_amendment_adds_a_professional_service() {
    let app = TestApp::new(NOW).await;
    let s = Setup::new(&app).await;
    let consulting = consulting_product(&app).await;
    let k = s.contract(&app, json!({})).await;
    let ids = json!({ "customer_id": s.customer, "contract_id": k });
    let amend = |service: Value| {
        let mut body = ids.clone();
        merge(
            &mut body,
            json!({ "starting_at": START, "professional_services": [service] }),
        );
        body
    };
    let get = || app.post("/v1/contracts/get", ids.clone());
    let r = app
        .post(
            "/v1/contracts/amend",
            amend(
                json!({ "product_id": s.fixed, "unit_price": 1, "quantity": 1, "max_amount": 1 }),
            ),
        )
        .await
        .client_error(StatusCode::BAD_REQUEST);
    assert!(
        r.message().contains("professional_services[0]"),
        "{}",
        r.message()
    );
    assert_eq!(get().await.data()["amendments"], json!([]));
    app.post(
        "/v1/contracts/amend",
        amend(
            json!({ "product_id": consulting, "unit_price": dec("333.33"), "quantity": 4,
                      "max_amount": 1000, "description": "Tuning" }),
        ),
    )
    .await
    .expect(StatusCode::OK);
    let c = get().await.data();
    let current = c["current"]["professional_services"]
        .as_array()
        .expect("current");
    assert_eq!(current.len(), 1, "{c}");
    assert_eq!(c["initial"]["professional_services"], json!([]), "{c}");
    assert_eq!(
        c["amendments"][0]["professional_services"],
        json!(current),
        "{c}"
    );
    let service = text(&current[0], "id").to_string();
    let r = app
        .post(
            "/v1/contracts/scheduleProServicesInvoice",
            json!({ "customer_id": s.customer, "contract_id": k, "issued_at": "2024-11-27T00:00:00Z",
                    "line_items": [{ "professional_service_id": service, "unit_price": dec("333.33"),
                                     "quantity": 2 }] }),
        )
        .await
        .data();
    assert_eq!(num(&r[0]["total"]), "666.66");
    assert_eq!(r[0]["line_items"][0]["name"], "Tuning");
}

both_backends!(
    professional_services_invoice_up_to_their_max,
    scheduled_charges_bill_on_their_own_invoices,
    consolidated_items_go_on_the_usage_invoice,
    amendments_and_edits_add_and_archive_charges,
);
