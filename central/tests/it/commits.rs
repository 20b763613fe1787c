//! Commits and credits through the HTTP API: contract-level ones on `contracts/create` read back
//! on v1 and v2 get/list (ids, exact amounts), the 400s (each naming its field, nothing
//! stored), customer-level create/list (filters, paging)/updateEndDate, uniqueness keys,
//! concurrent creates, what pricing is given (`service::commits::applicable_balances`), the
//! `commit_rate` of addRate, and both storage backends.
//!
//! Setup: a usage product `Calls` (FLAT 100 from 2024-11-01), a FIXED product `Prepaid
//! tokens` the commits are invoiced with; customer `acme` with a monthly contract from
//! 2024-11-01; the clock on 2024-11-25.

use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::{json, Value};
use tally_central::model::{decode, kind, BalanceRecord};
use tally_central::store::Env;
use tally_central::wire::Time;
use tally_core::balances::BalanceKind;

use crate::store_conformance::Backend;
use crate::support::*;

const SBX: Env = Env::Sandbox;
const START: &str = "2024-11-01T00:00:00Z";
const DEC: &str = "2024-12-01T00:00:00Z";
const JAN: &str = "2025-01-01T00:00:00Z";
const NOW: &str = "2024-11-25T00:00:00Z";

struct Setup {
    card: String,
    usage: String,
    fixed: String,
    customer: String,
}

impl Setup {
    async fn new(app: &TestApp) -> Setup {
        let metric = app
            .metric(
                SBX,
                json!({ "name": "n", "aggregation_type": "SUM", "aggregation_key": "n",
                        "event_type_filter": { "in_values": ["use"] } }),
            )
            .await;
        let usage = app
            .usage_product(SBX, "Calls", &metric, json!({ "tags": ["ai"] }))
            .await;
        let fixed = app
            .post(
                "/v1/contract-pricing/products/create",
                json!({ "name": "Prepaid tokens", "type": "FIXED" }),
            )
            .await
            .id();
        let card = app.rate_card(SBX, "card").await;
        app.flat_rate(SBX, &card, &usage, "100", START).await;
        let customer = app.customer(SBX, "acme", &["acme"]).await;
        Setup {
            card,
            usage,
            fixed,
            customer,
        }
    }

    async fn create(&self, app: &TestApp, extra: Value) -> Resp {
        let mut body = json!({
            "customer_id": self.customer, "rate_card_id": self.card, "starting_at": START,
        });
        merge(&mut body, extra);
        app.post("/v1/contracts/create", body).await
    }

    async fn contract(&self, app: &TestApp) -> String {
        self.create(app, json!({})).await.id()
    }

    /// A PREPAID commit of `amount` over November, with `extra` merged in.
    fn prepaid(&self, amount: &str, extra: Value) -> Value {
        let mut c = json!({
            "type": "PREPAID", "product_id": self.fixed,
            "access_schedule": { "schedule_items": [
                { "amount": dec(amount), "starting_at": START, "ending_before": DEC },
            ]},
        });
        merge(&mut c, extra);
        c
    }

    /// A credit of `amount` over November, with `extra` merged in.
    fn credit(&self, amount: &str, extra: Value) -> Value {
        let mut c = self.prepaid(amount, extra);
        c.as_object_mut().expect("credit").remove("type");
        c
    }

    /// `customer{Commits,Credits}/create` with the customer set; the response.
    async fn customer_level(&self, app: &TestApp, what: &str, mut body: Value) -> Resp {
        merge(&mut body, json!({ "customer_id": self.customer }));
        if body.get("priority").is_none() {
            merge(&mut body, json!({ "priority": 1 }));
        }
        app.post(&format!("/v1/contracts/customer{what}/create"), body)
            .await
    }

    async fn list(&self, app: &TestApp, what: &str, extra: Value) -> Value {
        let mut body = json!({ "customer_id": self.customer });
        merge(&mut body, extra);
        app.post(&format!("/v1/contracts/customer{what}/list"), body)
            .await
            .expect(StatusCode::OK)
            .body
    }

    async fn listed_ids(&self, app: &TestApp, what: &str, extra: Value) -> Vec<String> {
        let page = self.list(app, what, extra).await;
        page["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|c| text(c, "id").to_string())
            .collect()
    }
}

fn items(v: &Value) -> &Vec<Value> {
    v["schedule_items"].as_array().expect("schedule_items")
}

/// `(amount, starting_at, ending_before)` of each access item, after checking it has an id.
fn access(commit: &Value) -> Vec<(String, String, String)> {
    items(&commit["access_schedule"])
        .iter()
        .map(|i| {
            assert!(!text(i, "id").is_empty(), "{i}");
            (
                num(&i["amount"]),
                text(i, "starting_at").to_string(),
                text(i, "ending_before").to_string(),
            )
        })
        .collect()
}

/// `(timestamp, amount, unit_price, quantity)` of each invoice item, after checking its id.
fn invoiced(commit: &Value) -> Vec<[String; 4]> {
    items(&commit["invoice_schedule"])
        .iter()
        .map(|i| {
            assert!(!text(i, "id").is_empty(), "{i}");
            [
                text(i, "timestamp").to_string(),
                num(&i["amount"]),
                num(&i["unit_price"]),
                num(&i["quantity"]),
            ]
        })
        .collect()
}

fn row(a: &str, from: &str, to: &str) -> (String, String, String) {
    (a.into(), from.into(), to.into())
}

fn inv(at: &str, amount: &str, unit_price: &str, quantity: &str) -> [String; 4] {
    [at, amount, unit_price, quantity].map(String::from)
}

async fn contract_level_read_back(backend: Backend) {
    let app = TestApp::on_backend(NOW, backend).await;
    let s = Setup::new(&app).await;
    let prepaid = s.prepaid(
        "1000.333",
        json!({
            "name": "Upfront", "priority": 2.5, "rate_type": "commit_rate",
            "description": "paid in two parts", "custom_fields": { "deal": "x1" },
            "applicable_product_ids": [s.usage], "rollover_fraction": 0.5,
            "access_schedule": { "credit_type_id": "2714e483-4ff1-48e4-9e25-ac732e8f24f2",
                "schedule_items": [
                    { "amount": dec("1000.333"), "starting_at": START, "ending_before": DEC },
                    { "amount": 0, "starting_at": DEC, "ending_before": JAN },
            ]},
            "invoice_schedule": { "schedule_items": [
                { "timestamp": START, "amount": dec("500.5") },
                // 33.3333 × 3 = 99.9999, exactly.
                { "timestamp": DEC, "unit_price": dec("33.3333"), "quantity": 3 },
            ]},
        }),
    );
    let postpaid = json!({
        "type": "postpaid", "product_id": s.fixed,
        "access_schedule": { "schedule_items": [
            { "amount": 300, "starting_at": START, "ending_before": JAN },
        ]},
        "invoice_schedule": { "schedule_items": [{ "timestamp": JAN, "amount": 300 }] },
    });
    let credit = s.credit("7.25", json!({ "applicable_product_tags": ["ai"] }));
    let c = s
        .create(
            &app,
            json!({ "commits": [prepaid, postpaid], "credits": [credit] }),
        )
        .await
        .id();
    let ids = json!({ "customer_id": s.customer, "contract_id": c });
    let v1 = app.post("/v1/contracts/get", ids.clone()).await.data();
    let v2 = app.post("/v2/contracts/get", ids).await.data();
    assert_eq!(v1["initial"]["commits"], v1["current"]["commits"]);
    assert_eq!(v1["initial"]["credits"], v2["credits"]);
    assert_eq!(v1["current"]["commits"], v2["commits"]);
    let commits = v2["commits"].as_array().expect("commits");
    assert_eq!(commits.len(), 2);
    let (up, post) = (&commits[0], &commits[1]);
    assert_eq!(up["type"], "PREPAID");
    assert_eq!(
        up["product"],
        json!({ "id": s.fixed, "name": "Prepaid tokens" })
    );
    assert_eq!(up["contract"], json!({ "id": c }));
    assert_eq!(up["invoice_contract"], json!({ "id": c }));
    assert_eq!(up["name"], "Upfront");
    assert_eq!(up["description"], "paid in two parts");
    assert_eq!(num(&up["priority"]), "2.5");
    assert_eq!(num(&up["rollover_fraction"]), "0.5");
    assert_eq!(up["rate_type"], "COMMIT_RATE");
    assert_eq!(up["applicable_product_ids"], json!([s.usage]));
    assert_eq!(up["custom_fields"], json!({ "deal": "x1" }));
    assert_eq!(
        up["access_schedule"]["credit_type"],
        json!({ "id": "2714e483-4ff1-48e4-9e25-ac732e8f24f2", "name": "USD (cents)" })
    );
    assert_eq!(
        access(up),
        vec![row("1000.333", START, DEC), row("0", DEC, JAN)]
    );
    assert_eq!(
        invoiced(up),
        vec![
            inv(START, "500.5", "500.5", "1"),
            inv(DEC, "99.9999", "33.3333", "3"),
        ]
    );
    assert_eq!(post["type"], "POSTPAID");
    assert_eq!(post["rate_type"], "LIST_RATE");
    assert_eq!(access(post), vec![row("300", START, JAN)]);
    assert_eq!(invoiced(post), vec![inv(JAN, "300", "300", "1")]);
    let credit = &v2["credits"][0];
    assert_eq!(credit["type"], "CREDIT");
    assert_eq!(credit["contract"], json!({ "id": c }));
    assert_eq!(credit["applicable_product_tags"], json!(["ai"]));
    assert!(credit.get("invoice_schedule").is_none(), "{credit}");
    assert!(credit.get("invoice_contract").is_none(), "{credit}");
    assert_eq!(access(credit), vec![row("7.25", START, DEC)]);
    // Every id is distinct.
    let mut all: Vec<String> = [up, post, credit]
        .iter()
        .flat_map(|b| {
            let mut ids = vec![text(b, "id").to_string()];
            for schedule in ["access_schedule", "invoice_schedule"] {
                if let Some(list) = b[schedule]["schedule_items"].as_array() {
                    ids.extend(list.iter().map(|i| text(i, "id").to_string()));
                }
            }
            ids
        })
        .collect();
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!((n, all.len()), (10, 10));
    // The lists show the same.
    let body = json!({ "customer_id": s.customer });
    let l1 = app.post("/v1/contracts/list", body.clone()).await.data();
    let l2 = app.post("/v2/contracts/list", body).await.data();
    assert_eq!(l1[0]["current"]["commits"], v2["commits"]);
    assert_eq!(l2[0]["credits"], v2["credits"]);
    // Pricing gets all three: the contract's own, invoiced on it.
    let contract = tally_central::service::contracts::get(&app.state, SBX, &s.customer, &c)
        .await
        .expect("contract");
    let got = tally_central::service::commits::applicable_balances(&app.state, SBX, &contract)
        .await
        .expect("balances");
    let kinds: Vec<_> = got.iter().map(|b| (b.kind, b.paid)).collect();
    assert_eq!(
        kinds,
        vec![
            (BalanceKind::PrepaidCommit, true),
            (BalanceKind::PostpaidCommit, false),
            (BalanceKind::Credit, false),
        ]
    );
    assert!(got
        .iter()
        .all(|b| b.contract_id.as_deref() == Some(c.as_str())
            && b.invoice_contract_id.as_deref() == Some(c.as_str())));
    assert_eq!(got[0].name, "Upfront");
    assert_eq!(got[1].name, "Prepaid tokens");
    assert_eq!(got[0].invoice_schedule[1].amount.to_string(), "99.9999");
}

#[tokio::test]
async fn contract_commits_read_back_on_sqlite() {
    contract_level_read_back(Backend::Sqlite).await;
}

#[tokio::test]
async fn contract_commits_read_back_on_postgres() {
    contract_level_read_back(Backend::Postgres).await;
}

#[tokio::test]
async fn bad_contract_commits_are_400s_naming_the_field_and_store_nothing() {
    let app = TestApp::new(NOW).await;
    let s = Setup::new(&app).await;
    let unknown = uuid::Uuid::new_v4().to_string();
    let p = |extra: Value| json!({ "commits": [s.prepaid("10", extra)] });
    let two_items = json!({ "schedule_items": [
        { "amount": 1, "starting_at": START, "ending_before": DEC },
        { "amount": 1, "starting_at": DEC, "ending_before": JAN },
    ]});
    let one_item = json!({ "schedule_items": [
        { "amount": 300, "starting_at": START, "ending_before": JAN },
    ]});
    let many: Vec<Value> = (0..101)
        .map(|_| json!({ "amount": 1, "starting_at": START, "ending_before": DEC }))
        .collect();
    let too_many: Vec<Value> = (0..101).map(|_| s.prepaid("1", json!({}))).collect();
    let cases: Vec<(Value, &str)> = vec![
        (p(json!({ "product_id": unknown })), "commits[0].product_id: product"),
        (p(json!({ "product_id": s.usage })), "commits[0].product_id: product"),
        (p(json!({ "type": null })), "commits[0].type: required"),
        (p(json!({ "type": "CREDIT" })), "CREDIT"),
        (p(json!({ "access_schedule": null })), "commits[0].access_schedule: required"),
        (
            p(json!({ "access_schedule": { "schedule_items": [] } })),
            "commits[0].access_schedule.schedule_items: between 1 and 100",
        ),
        (
            p(json!({ "access_schedule": { "schedule_items": many } })),
            "commits[0].access_schedule.schedule_items: between 1 and 100",
        ),
        (
            p(json!({ "access_schedule": { "schedule_items": [
                { "amount": 1, "starting_at": START, "ending_before": DEC },
                { "amount": 1, "starting_at": DEC, "ending_before": DEC },
            ]}})),
            "commits[0].access_schedule.schedule_items[1].ending_before: must be after starting_at",
        ),
        (
            p(json!({ "access_schedule": { "schedule_items": [
                { "amount": 1, "starting_at": "2024-11-01T00:30:00Z", "ending_before": DEC },
            ]}})),
            "commits[0].access_schedule.schedule_items[0].starting_at must be on an hour boundary",
        ),
        (
            p(json!({ "access_schedule": { "schedule_items": [
                { "amount": dec("-0.01"), "starting_at": START, "ending_before": DEC },
            ]}})),
            "commits[0].access_schedule.schedule_items[0].amount: must not be negative",
        ),
        (
            p(json!({ "access_schedule": { "schedule_items": [
                { "amount": dec("1000000000000000.01"), "starting_at": START, "ending_before": DEC },
            ]}})),
            "commits[0].access_schedule.schedule_items[0].amount: must be at most",
        ),
        (
            p(json!({ "access_schedule": { "credit_type_id": unknown, "schedule_items": [
                { "amount": 1, "starting_at": START, "ending_before": DEC },
            ]}})),
            "commits[0].access_schedule.credit_type_id: credit type",
        ),
        (
            p(json!({ "invoice_schedule": { "schedule_items": [
                { "timestamp": START, "amount": 1, "unit_price": 1, "quantity": 1 }] } })),
            "commits[0].invoice_schedule.schedule_items[0].amount: give amount, or unit_price",
        ),
        (
            p(json!({ "invoice_schedule": { "schedule_items": [
                { "timestamp": START, "unit_price": 1 }] } })),
            "commits[0].invoice_schedule.schedule_items[0].amount: give amount, or both",
        ),
        (
            p(json!({ "invoice_schedule": { "schedule_items": [] } })),
            "commits[0].invoice_schedule.schedule_items: between 1 and 100",
        ),
        (
            p(json!({ "invoice_schedule": { "recurring_schedule": {
                "amount_distribution": "EVERY", "frequency": "MONTHLY", "starting_at": START,
                "ending_before": JAN, "amount": 1 } } })),
            "EVERY",
        ),
        (
            json!({ "commits": [{ "type": "POSTPAID", "product_id": s.fixed,
                "access_schedule": two_items,
                "invoice_schedule": { "schedule_items": [{ "timestamp": JAN, "amount": 2 }] } }] }),
            "commits[0].access_schedule.schedule_items: a POSTPAID commit has exactly one",
        ),
        (
            json!({ "commits": [{ "type": "POSTPAID", "product_id": s.fixed,
                "access_schedule": one_item }] }),
            "commits[0].invoice_schedule: required for POSTPAID",
        ),
        (
            json!({ "commits": [{ "type": "POSTPAID", "product_id": s.fixed,
                "access_schedule": one_item,
                "invoice_schedule": { "schedule_items": [{ "timestamp": JAN, "amount": 299 }] } }] }),
            "commits[0].invoice_schedule.schedule_items[0].amount: must equal the access amount (300)",
        ),
        (
            p(json!({ "specifiers": [{ "product_id": s.usage }], "applicable_product_tags": ["ai"] })),
            "commits[0].specifiers: cannot be combined",
        ),
        (
            p(json!({ "applicable_product_ids": [s.usage, unknown] })),
            "commits[0].applicable_product_ids[1]: product",
        ),
        (
            p(json!({ "specifiers": [{ "product_id": unknown }] })),
            "commits[0].specifiers[0].product_id: product",
        ),
        (
            p(json!({ "specifiers": [{ "product_tags": ["ai"], "exclude": [{}] }] })),
            "commits[0].specifiers[0].exclude: not supported",
        ),
        (p(json!({ "rate_type": "DISCOUNTED" })), "DISCOUNTED"),
        (p(json!({ "rollover_fraction": 1.5 })), "commits[0].rollover_fraction: must be between 0 and 1"),
        (p(json!({ "hierarchy_configuration": { "child_access": { "type": "ALL" } } })), "commits[0].hierarchy_configuration: "),
        (p(json!({ "payment_gate_config": { "payment_gate_type": "NONE" } })), "commits[0].payment_gate_config: "),
        (p(json!({ "spend_tracker_attributes": { "counts_as_discounted": true } })), "commits[0].spend_tracker_attributes: "),
        (p(json!({ "amount": 10 })), "commits[0].amount: deprecated"),
        (p(json!({ "name": "" })), "commits[0].name must not be empty"),
        (
            json!({ "credits": [s.credit("1", json!({})), s.credit("1", json!({ "invoice_schedule": {
                "schedule_items": [{ "timestamp": START, "amount": 1 }] } }))] }),
            "credits[1].invoice_schedule: credits have no such field",
        ),
        (
            json!({ "credits": [s.credit("1", json!({ "access_schedule": null }))] }),
            "credits[0].access_schedule: required",
        ),
        (json!({ "commits": too_many }), "at most 100 commits and credits are allowed per contract"),
        (
            json!({ "recurring_commits": [{ "product_id": s.fixed }] }),
            "recurring_commits[0].access_amount: required",
        ),
        (
            json!({ "recurring_credits": [{ "product_id": s.fixed }] }),
            "recurring_credits[0].access_amount: required",
        ),
    ];
    for (extra, want) in cases {
        let r = s
            .create(&app, extra.clone())
            .await
            .client_error(StatusCode::BAD_REQUEST);
        assert!(
            r.message().contains(want),
            "{extra}: expected {want:?} in {:?}",
            r.message()
        );
    }
    let listed = app
        .post("/v1/contracts/list", json!({ "customer_id": s.customer }))
        .await
        .data();
    assert_eq!(listed, json!([]), "a refused create stored a contract");
    // A free PREPAID commit (no invoice schedule) and do_not_invoice are fine; archived
    // products are not.
    s.create(
        &app,
        json!({ "commits": [s.prepaid("10", json!({})), s.prepaid("10", json!({
            "invoice_schedule": { "do_not_invoice": true,
                "schedule_items": [{ "timestamp": START, "amount": 10 }] } }))] }),
    )
    .await
    .expect(StatusCode::OK);
    app.post(
        "/v1/contract-pricing/products/archive",
        json!({ "product_id": s.fixed }),
    )
    .await
    .expect(StatusCode::OK);
    let r = s
        .create(&app, json!({ "commits": [s.prepaid("10", json!({}))] }))
        .await
        .client_error(StatusCode::BAD_REQUEST);
    assert!(r.message().contains("is archived"), "{}", r.message());
}

#[tokio::test]
async fn customer_commits_and_credits_create_list_filter_and_page() {
    let app = TestApp::new(NOW).await;
    let s = Setup::new(&app).await;
    let c1 = s.contract(&app).await;
    let c2 = s.contract(&app).await;
    // November, December and (two segments) Nov+Jan commits; a credit scoped to c1.
    let nov = s
        .customer_level(&app, "Commits", s.prepaid("100", json!({ "name": "nov" })))
        .await
        .id();
    let dec_commit = s
        .customer_level(
            &app,
            "Commits",
            s.prepaid(
                "200",
                json!({ "access_schedule": { "schedule_items": [
                    { "amount": 200, "starting_at": DEC, "ending_before": JAN }] },
                    "invoice_schedule": { "schedule_items": [{ "timestamp": DEC, "amount": 150 }] },
                    "invoice_contract_id": c2, "applicable_contract_ids": [c2] }),
            ),
        )
        .await
        .id();
    let post = s
        .customer_level(
            &app,
            "Commits",
            json!({ "type": "POSTPAID", "product_id": s.fixed, "priority": dec("0.1"),
                "access_schedule": { "schedule_items": [
                    { "amount": dec("1000.333"), "starting_at": START, "ending_before": JAN }] },
                "invoice_schedule": { "schedule_items": [
                    { "timestamp": JAN, "amount": dec("1000.333") }] },
                "invoice_contract_id": c1 }),
        )
        .await
        .id();
    let credit = s
        .customer_level(
            &app,
            "Credits",
            s.credit("5", json!({ "applicable_contract_ids": [c1] })),
        )
        .await
        .id();
    // Commits only on the commits list, in creation order; the credit on the credits list.
    assert_eq!(
        s.listed_ids(&app, "Commits", json!({})).await,
        vec![nov.clone(), dec_commit.clone(), post.clone()]
    );
    let credits = s.list(&app, "Credits", json!({})).await;
    assert_eq!(credits["next_page"], Value::Null);
    let shown = &credits["data"][0];
    assert_eq!(text(shown, "id"), credit);
    assert_eq!(shown["type"], "CREDIT");
    assert_eq!(shown["applicable_contract_ids"], json!([c1]));
    assert!(shown.get("contract").is_none(), "{shown}");
    let page = s.list(&app, "Commits", json!({ "commit_id": post })).await;
    let p = &page["data"][0];
    assert_eq!(num(&p["priority"]), "0.1");
    assert_eq!(p["invoice_contract"], json!({ "id": c1 }));
    assert_eq!(access(p), vec![row("1000.333", START, JAN)]);
    assert_eq!(invoiced(p), vec![inv(JAN, "1000.333", "1000.333", "1")]);
    // Date filters.
    let ids = |v: &[&String]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let cover_dec = json!({ "covering_date": "2024-12-15T00:00:00Z" });
    assert_eq!(
        s.listed_ids(&app, "Commits", cover_dec).await,
        ids(&[&dec_commit, &post])
    );
    // Access on or after Dec 1: not the November one (its access ends at Dec 1, exclusive).
    assert_eq!(
        s.listed_ids(&app, "Commits", json!({ "starting_at": DEC }))
            .await,
        ids(&[&dec_commit, &post])
    );
    // Access before Dec 1: not the December one (it starts there).
    assert_eq!(
        s.listed_ids(&app, "Commits", json!({ "effective_before": DEC }))
            .await,
        ids(&[&nov, &post])
    );
    // Contract-level ones too, after the customer's, with `contract: {id}`.
    let with_contract = s
        .create(&app, json!({ "commits": [s.prepaid("9", json!({}))] }))
        .await
        .id();
    let all = s
        .list(&app, "Commits", json!({ "include_contract_commits": true }))
        .await;
    let data = all["data"].as_array().expect("data");
    assert_eq!(data.len(), 4);
    assert_eq!(data[3]["contract"], json!({ "id": with_contract }));
    assert_eq!(
        s.listed_ids(
            &app,
            "Commits",
            json!({ "include_contract_commits": false })
        )
        .await
        .len(),
        3
    );
    // Paging: 2 + 2 with the body cursor, then the end.
    let first = s
        .list(
            &app,
            "Commits",
            json!({ "include_contract_commits": true, "limit": 2 }),
        )
        .await;
    let next = text(&first, "next_page").to_string();
    let second = s
        .list(
            &app,
            "Commits",
            json!({ "include_contract_commits": true, "limit": 2, "next_page": next }),
        )
        .await;
    assert_eq!(second["next_page"], Value::Null);
    let paged: Vec<&Value> = first["data"]
        .as_array()
        .into_iter()
        .chain(second["data"].as_array())
        .flatten()
        .collect();
    assert_eq!(paged, data.iter().collect::<Vec<_>>());
    for limit in [0, 101] {
        app.post(
            "/v1/contracts/customerCommits/list",
            json!({ "customer_id": s.customer, "limit": limit }),
        )
        .await
        .client_error(StatusCode::BAD_REQUEST);
    }
    let unknown = uuid::Uuid::new_v4().to_string();
    app.post(
        "/v1/contracts/customerCommits/list",
        json!({ "customer_id": unknown }),
    )
    .await
    .client_error(StatusCode::NOT_FOUND);

    // What pricing gets: c1 draws on nov, post (invoiced on c1) and the credit (scoped to c1);
    // c2 on nov, the December commit (scoped to c2) and post.
    let balances_of = |id: String| {
        let app = &app;
        let customer = s.customer.clone();
        async move {
            let contract = tally_central::service::contracts::get(&app.state, SBX, &customer, &id)
                .await
                .expect("contract");
            tally_central::service::commits::applicable_balances(&app.state, SBX, &contract)
                .await
                .expect("balances")
                .into_iter()
                .map(|b| (b.id, b.contract_id, b.invoice_contract_id))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        balances_of(c1.clone()).await,
        vec![
            (nov.clone(), None, None),
            (post.clone(), None, Some(c1.clone())),
            (credit.clone(), None, None),
        ]
    );
    assert_eq!(
        balances_of(c2.clone()).await,
        vec![
            (nov.clone(), None, None),
            (dec_commit.clone(), None, Some(c2.clone())),
            (post.clone(), None, Some(c1.clone())),
        ]
    );
    // An archived one is left out (and listed only with include_archived).
    archive_balance(&app, &nov).await;
    assert_eq!(
        balances_of(c2.clone()).await,
        vec![
            (dec_commit.clone(), None, Some(c2.clone())),
            (post.clone(), None, Some(c1.clone())),
        ]
    );
    assert_eq!(
        s.listed_ids(&app, "Commits", json!({})).await,
        ids(&[&dec_commit, &post])
    );
    assert_eq!(
        s.listed_ids(&app, "Commits", json!({ "include_archived": true }))
            .await,
        ids(&[&nov, &dec_commit, &post])
    );
    let everything =
        tally_central::service::commits::customer_balances(&app.state, SBX, &s.customer)
            .await
            .expect("customer balances");
    // The contract's own one (on with_contract) and the three unarchived customer-level ones.
    assert_eq!(everything.len(), 4);
    assert_eq!(
        everything[0].contract_id.as_deref(),
        Some(with_contract.as_str())
    );
}

/// Archives a customer-level commit or credit in the store (no endpoint archives them yet).
async fn archive_balance(app: &TestApp, id: &str) {
    let config = &app.state.stores.config;
    let doc = config
        .get_doc(SBX, kind::CUSTOMER_BALANCE, id)
        .await
        .expect("read")
        .expect("document");
    let mut record: BalanceRecord = decode(&doc).expect("decode");
    record.archived_at = Some(Time(ms(NOW)));
    let body = serde_json::to_string(&record).expect("encode");
    let written = config
        .update_doc(SBX, kind::CUSTOMER_BALANCE, id, &body, true, doc.version)
        .await
        .expect("write");
    assert!(written);
}

#[tokio::test]
async fn bad_customer_level_creates_are_400s_and_store_nothing() {
    let app = TestApp::new(NOW).await;
    let s = Setup::new(&app).await;
    let mine = s.contract(&app).await;
    let other_customer = app.customer(SBX, "globex", &["globex"]).await;
    let theirs = app.contract(SBX, &other_customer, &s.card, START).await;
    let invoiced = json!({ "invoice_schedule": { "schedule_items": [
        { "timestamp": START, "amount": 10 }] } });
    let mut typed_credit = s.credit("1", json!({}));
    merge(&mut typed_credit, json!({ "type": "PREPAID" }));
    let mut with_invoice = s.prepaid("10", invoiced.clone());
    merge(&mut with_invoice, json!({ "invoice_contract_id": theirs }));
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "Commits",
            s.prepaid("10", invoiced.clone()),
            "invoice_contract_id: required",
        ),
        ("Commits", with_invoice, "invoice_contract_id: contract"),
        (
            "Commits",
            s.prepaid("10", json!({ "applicable_contract_ids": [mine, theirs] })),
            "applicable_contract_ids[1]: contract",
        ),
        (
            "Commits",
            s.prepaid("10", json!({ "priority": null })),
            "priority: required",
        ),
        (
            "Commits",
            s.prepaid("10", json!({ "type": null })),
            "type: required",
        ),
        (
            "Commits",
            s.prepaid("10", json!({ "uniqueness_key": "" })),
            "uniqueness_key must not be empty",
        ),
        (
            "Credits",
            s.credit("1", json!({ "invoice_contract_id": mine })),
            "invoice_contract_id: credits have no such field",
        ),
        ("Credits", typed_credit, "type: credits have no such field"),
        (
            "Credits",
            s.credit("1", json!({ "product_id": s.usage })),
            "product_id: product",
        ),
    ];
    for (what, body, want) in cases {
        let r = s
            .customer_level(&app, what, body.clone())
            .await
            .client_error(StatusCode::BAD_REQUEST);
        assert!(
            r.message().contains(want),
            "{body}: expected {want:?} in {:?}",
            r.message()
        );
    }
    for what in ["Commits", "Credits"] {
        assert_eq!(
            s.listed_ids(&app, what, json!({})).await,
            Vec::<String>::new()
        );
    }
    // An invoiced PREPAID commit on the customer's own contract is fine; an unknown customer is
    // a 404, an archived one a 400.
    let mut ok = s.prepaid("10", invoiced);
    merge(&mut ok, json!({ "invoice_contract_id": mine }));
    s.customer_level(&app, "Commits", ok)
        .await
        .expect(StatusCode::OK);
    let mut body = s.credit("1", json!({ "priority": 1 }));
    merge(
        &mut body,
        json!({ "customer_id": uuid::Uuid::new_v4().to_string() }),
    );
    app.post("/v1/contracts/customerCredits/create", body.clone())
        .await
        .client_error(StatusCode::NOT_FOUND);
    app.post("/v1/customers/archive", json!({ "id": other_customer }))
        .await
        .expect(StatusCode::OK);
    merge(&mut body, json!({ "customer_id": other_customer }));
    let r = app
        .post("/v1/contracts/customerCredits/create", body)
        .await
        .client_error(StatusCode::BAD_REQUEST);
    assert!(r.message().contains("archived"), "{}", r.message());
}

#[tokio::test]
async fn uniqueness_keys_are_used_once_across_commits_and_credits() {
    let app = TestApp::new(NOW).await;
    let s = Setup::new(&app).await;
    let key = json!({ "uniqueness_key": "deal-7" });
    let id = s
        .customer_level(&app, "Credits", s.credit("1", key.clone()))
        .await
        .id();
    let shown = s.list(&app, "Credits", json!({})).await;
    assert_eq!(shown["data"][0]["uniqueness_key"], "deal-7");
    for what in ["Credits", "Commits"] {
        let body = match what {
            "Credits" => s.credit("2", key.clone()),
            _ => s.prepaid("2", key.clone()),
        };
        s.customer_level(&app, what, body)
            .await
            .client_error(StatusCode::CONFLICT);
    }
    assert_eq!(s.listed_ids(&app, "Credits", json!({})).await, vec![id]);
    assert!(s.listed_ids(&app, "Commits", json!({})).await.is_empty());
}

#[tokio::test]
async fn update_end_date_only_shortens() {
    let app = TestApp::new(NOW).await;
    let s = Setup::new(&app).await;
    let contract = s.contract(&app).await;
    // Segments Nov and Dec-Jan, invoiced Nov 1 and Dec 1.
    let mut body = s.prepaid(
        "10",
        json!({
            "access_schedule": { "schedule_items": [
                { "amount": 10, "starting_at": START, "ending_before": DEC },
                { "amount": 20, "starting_at": DEC, "ending_before": "2025-02-01T00:00:00Z" },
            ]},
            "invoice_schedule": { "schedule_items": [
                { "timestamp": START, "amount": 10 }, { "timestamp": DEC, "amount": 20 },
            ]},
        }),
    );
    merge(&mut body, json!({ "invoice_contract_id": contract }));
    let commit = s.customer_level(&app, "Commits", body).await.id();
    let credit = s
        .customer_level(&app, "Credits", s.credit("3", json!({})))
        .await
        .id();
    let update = |what: &str, body: Value| {
        let mut full = json!({ "customer_id": s.customer });
        merge(&mut full, body);
        let path = format!("/v1/contracts/customer{what}/updateEndDate");
        let app = &app;
        async move { app.post(&path, full).await }
    };
    // Later than the end, not hour-aligned, at the start, nothing given: 400s, nothing changed.
    for (body, want) in [
        (
            json!({ "commit_id": commit, "access_ending_before": "2025-02-01T01:00:00Z" }),
            "can only be moved earlier",
        ),
        (
            json!({ "commit_id": commit, "access_ending_before": "2025-01-01T00:30:00Z" }),
            "hour boundary",
        ),
        (
            json!({ "commit_id": commit, "access_ending_before": START }),
            "must be after",
        ),
        (
            json!({ "commit_id": commit }),
            "give access_ending_before or invoices_ending_before",
        ),
    ] {
        let r = update("Commits", body)
            .await
            .client_error(StatusCode::BAD_REQUEST);
        assert!(r.message().contains(want), "{want:?} in {:?}", r.message());
    }
    // The credit is not a commit, and another customer's id is not found.
    update(
        "Commits",
        json!({ "commit_id": credit, "access_ending_before": DEC }),
    )
    .await
    .client_error(StatusCode::NOT_FOUND);
    let before = s.list(&app, "Commits", json!({})).await;
    assert_eq!(access(&before["data"][0]).len(), 2);
    // Mid-December: the second segment is cut there; invoices from Dec 1 on are dropped.
    update(
        "Commits",
        json!({ "commit_id": commit, "access_ending_before": "2024-12-15T00:00:00Z",
                "invoices_ending_before": DEC }),
    )
    .await
    .expect(StatusCode::OK);
    let after = s.list(&app, "Commits", json!({})).await;
    let c = &after["data"][0];
    assert_eq!(
        access(c),
        vec![
            row("10", START, DEC),
            row("20", DEC, "2024-12-15T00:00:00Z")
        ]
    );
    assert_eq!(invoiced(c), vec![inv(START, "10", "10", "1")]);
    // Then at Dec 1: the second segment is gone. The same end again changes nothing.
    for _ in 0..2 {
        update(
            "Commits",
            json!({ "commit_id": commit, "access_ending_before": DEC }),
        )
        .await
        .expect(StatusCode::OK);
        let c = s.list(&app, "Commits", json!({})).await;
        assert_eq!(access(&c["data"][0]), vec![row("10", START, DEC)]);
    }
    // Credits: shortened, never lengthened.
    update(
        "Credits",
        json!({ "credit_id": credit, "access_ending_before": JAN }),
    )
    .await
    .client_error(StatusCode::BAD_REQUEST);
    update(
        "Credits",
        json!({ "credit_id": credit, "access_ending_before": "2024-11-20T00:00:00Z" }),
    )
    .await
    .expect(StatusCode::OK);
    let credits = s.list(&app, "Credits", json!({})).await;
    assert_eq!(
        access(&credits["data"][0]),
        vec![row("3", START, "2024-11-20T00:00:00Z")]
    );
}

#[tokio::test]
async fn thirty_concurrent_credit_creates_are_all_kept() {
    let app = Arc::new(TestApp::new(NOW).await);
    let s = Setup::new(&app).await;
    let requests: Vec<(String, Value)> = (0..30)
        .map(|i| {
            let mut body = s.credit(&format!("{i}.5"), json!({ "priority": i }));
            merge(&mut body, json!({ "customer_id": s.customer }));
            ("/v1/contracts/customerCredits/create".to_string(), body)
        })
        .collect();
    let mut ids: Vec<String> = all_at_once(&app, requests)
        .await
        .into_iter()
        .map(Resp::id)
        .collect();
    let listed = s.list(&app, "Credits", json!({ "limit": 100 })).await;
    let data = listed["data"].as_array().expect("data");
    let mut got: Vec<String> = data.iter().map(|c| text(c, "id").to_string()).collect();
    let mut amounts: Vec<String> = data.iter().map(|c| access(c)[0].0.clone()).collect();
    ids.sort();
    got.sort();
    amounts.sort();
    assert_eq!(got, ids);
    let mut want: Vec<String> = (0..30).map(|i| format!("{i}.5")).collect();
    want.sort();
    assert_eq!(amounts, want);
}

#[tokio::test]
async fn commit_rates_are_flat_prices() {
    let app = TestApp::new(NOW).await;
    let s = Setup::new(&app).await;
    let add = |commit_rate: Value| {
        let body = json!({
            "rate_card_id": s.card, "product_id": s.usage, "starting_at": DEC,
            "entitled": true, "rate_type": "FLAT", "price": 100, "commit_rate": commit_rate,
        });
        let app = &app;
        async move {
            app.post("/v1/contract-pricing/rate-cards/addRate", body)
                .await
        }
    };
    let ok = add(json!({ "rate_type": "flat", "price": dec("80.125") }))
        .await
        .data();
    assert_eq!(
        ok["commit_rate"],
        json!({ "rate_type": "FLAT", "price": dec("80.125") })
    );
    for (bad, want) in [
        (
            json!({ "rate_type": "TIERED", "tiers": [{ "price": 1 }] }),
            "commit_rate.rate_type: TIERED commit rates are not supported yet",
        ),
        (
            json!({ "rate_type": "FLAT", "price": -1 }),
            "commit_rate.price: must not be negative",
        ),
        (
            json!({ "rate_type": "FLAT" }),
            "commit_rate.price: required",
        ),
        (json!({ "price": 1 }), "commit_rate.rate_type: required"),
        (
            json!({ "rate_type": "FLAT", "price": 1, "tiers": [{ "price": 1 }] }),
            "commit_rate.tiers",
        ),
        (
            json!({ "rate_type": "FLAT", "price": 10_000_000_000_000u64 }),
            "commit_rate.price: prices are limited",
        ),
    ] {
        let r = add(bad.clone()).await.client_error(StatusCode::BAD_REQUEST);
        assert!(
            r.message().contains(want),
            "{bad}: {want:?} in {:?}",
            r.message()
        );
    }
}
