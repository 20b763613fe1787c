//! Contract overrides through the HTTP API (issue 11 item 1): create and read back on v1 and
//! v2 with ids, the draft invoice priced with them (hand-computed numbers, §3.6), line
//! segments at an override boundary, `getContractRateSchedule`, the 400s (each naming its
//! field, nothing stored), concurrent creates, and both storage backends.
//!
//! Setup: metric SUM(`n`) of `use` events; product `Calls` (tags `ai`, `premium`) at FLAT 100
//! from 2024-11-01; customer `acme`; monthly contracts from 2024-11-01; the clock on 11-25.

use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::{json, Value};
use tally_central::store::Env;

use crate::store_conformance::Backend;
use crate::support::*;

const SBX: Env = Env::Sandbox;
const START: &str = "2024-11-01T00:00:00Z";
const MID: &str = "2024-11-15T00:00:00Z";
const NOW: &str = "2024-11-25T00:00:00Z";

struct Setup {
    card: String,
    product: String,
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
        let product = app
            .usage_product(SBX, "Calls", &metric, json!({ "tags": ["ai", "premium"] }))
            .await;
        let card = app.rate_card(SBX, "card").await;
        app.flat_rate(SBX, &card, &product, "100", START).await;
        let customer = app.customer(SBX, "acme", &["acme"]).await;
        Setup {
            card,
            product,
            customer,
        }
    }

    /// `contracts/create` with these extra fields; the response.
    async fn create(&self, app: &TestApp, extra: Value) -> Resp {
        let mut body = json!({
            "customer_id": self.customer, "rate_card_id": self.card, "starting_at": START,
        });
        merge(&mut body, extra);
        app.post("/v1/contracts/create", body).await
    }

    async fn contract(&self, app: &TestApp, extra: Value) -> String {
        self.create(app, extra).await.id()
    }

    /// Ingests `(timestamp, n)` events for acme.
    async fn events(&self, app: &TestApp, events: &[(&str, &str)]) {
        let events: Vec<Value> = events
            .iter()
            .enumerate()
            .map(|(i, (at, n))| event(&format!("e{i}"), "acme", "use", at, json!({ "n": n })))
            .collect();
        let r = app.ingest(SBX, Value::Array(events.clone())).await;
        assert_eq!(r["accepted"], events.len(), "{r}");
    }

    /// `(quantity, unit_price, total, starting_at, ending_before)` of each line of the November
    /// invoice of `contract`, and its total.
    async fn november(&self, app: &TestApp, contract: &str) -> (Vec<[String; 5]>, String) {
        let all = app.invoices(SBX, &self.customer, "").await;
        let inv = all
            .iter()
            .find(|i| i["contract_id"] == contract && text(i, "start_timestamp") == START)
            .unwrap_or_else(|| panic!("no November invoice of {contract}"));
        line_summary(inv)
    }

    async fn rate_schedule(&self, app: &TestApp, contract: &str, extra: Value) -> Value {
        let mut body = json!({ "customer_id": self.customer, "contract_id": contract });
        merge(&mut body, extra);
        app.post("/v1/contracts/getContractRateSchedule", body)
            .await
            .expect(StatusCode::OK)
            .body
    }
}

fn line(q: &str, p: &str, total: &str, from: &str, to: &str) -> [String; 5] {
    [q, p, total, from, to].map(String::from)
}

const DEC: &str = "2024-12-01T00:00:00Z";

#[tokio::test]
async fn the_section_3_6_examples_price_the_draft_invoice() {
    let app = TestApp::new(NOW).await;
    let s = Setup::new(&app).await;
    s.events(&app, &[("2024-11-10T00:00:00Z", "150")]).await;
    let p = &s.product;
    // A 0.8 and B 0.9 under LOWEST_MULTIPLIER: 150 × 80 = 12,000.
    let ab = s
        .contract(
            &app,
            json!({ "overrides": [
                { "starting_at": START, "product_id": p, "type": "MULTIPLIER", "multiplier": 0.8 },
                { "starting_at": START, "applicable_product_tags": ["ai"], "type": "multiplier",
                  "multiplier": 0.9 },
            ]}),
        )
        .await;
    assert_eq!(
        s.november(&app, &ab).await,
        (vec![line("150", "80", "12000", START, DEC)], "12000".into())
    );
    // Plus OVERWRITE FLAT 70: 150 × 70 = 10,500.
    let ow = s
        .contract(
            &app,
            json!({ "overrides": [
                { "starting_at": START, "product_id": p, "type": "MULTIPLIER", "multiplier": 0.8 },
                { "starting_at": START, "product_id": p, "type": "MULTIPLIER", "multiplier": 0.9 },
                { "starting_at": START, "product_id": p, "type": "OVERWRITE",
                  "overwrite_rate": { "rate_type": "FLAT", "price": 70 } },
            ]}),
        )
        .await;
    assert_eq!(
        s.november(&app, &ow).await,
        (vec![line("150", "70", "10500", START, DEC)], "10500".into())
    );
    // EXPLICIT, TIERED [{0.5, size 100}, {1}] priority 1: 100 × 50 + 50 × 100 = 10,000.
    let tiered = s
        .contract(
            &app,
            json!({ "multiplier_override_prioritization": "EXPLICIT", "overrides": [
                { "starting_at": START, "product_id": p, "type": "TIERED", "priority": 1,
                  "tiers": [{ "multiplier": 0.5, "size": 100 }, { "multiplier": 1 }] },
            ]}),
        )
        .await;
    assert_eq!(
        s.november(&app, &tiered).await,
        (
            vec![
                line("100", "50", "5000", START, DEC),
                line("50", "100", "5000", START, DEC),
            ],
            "10000".into()
        )
    );
}

#[tokio::test]
async fn an_override_from_mid_period_splits_the_invoice_lines() {
    let app = TestApp::new(NOW).await;
    let s = Setup::new(&app).await;
    s.events(
        &app,
        &[
            ("2024-11-02T00:00:00Z", "3"),
            ("2024-11-14T23:00:00Z", "4"),
            (MID, "10"),
            ("2024-11-20T05:00:00Z", "0.5"),
        ],
    )
    .await;
    let c = s
        .contract(
            &app,
            json!({ "overrides": [{ "starting_at": MID, "product_id": s.product,
                                    "type": "MULTIPLIER", "multiplier": 0.333333 }] }),
        )
        .await;
    // 7 × 100 = 700 before; 10.5 × 33.3333 = 349.99965 after. Quantities: 7 + 10.5 = 17.5.
    assert_eq!(
        s.november(&app, &c).await,
        (
            vec![
                line("7", "100", "700", START, MID),
                line("10.5", "33.3333", "349.99965", MID, DEC),
            ],
            "1049.99965".into()
        )
    );
}

#[tokio::test]
async fn entitlement_overrides_and_specifiers_decide_what_is_billed() {
    let app = TestApp::new(NOW).await;
    let s = Setup::new(&app).await;
    s.events(&app, &[("2024-11-10T00:00:00Z", "2")]).await;
    let hidden = s
        .contract(
            &app,
            json!({ "overrides": [{ "starting_at": START, "product_id": s.product,
                                    "entitled": false }] }),
        )
        .await;
    assert_eq!(s.november(&app, &hidden).await, (vec![], "0".into()));
    // A specifier naming both tags matches; one naming a tag the product lacks does not.
    let specified = s
        .contract(
            &app,
            json!({ "overrides": [
                { "starting_at": START, "type": "MULTIPLIER", "multiplier": 0.5,
                  "override_specifiers": [{ "product_tags": ["ai", "premium"] }] },
                { "starting_at": START, "type": "MULTIPLIER", "multiplier": 0.1,
                  "override_specifiers": [{ "product_tags": ["other"] }] },
            ]}),
        )
        .await;
    assert_eq!(s.november(&app, &specified).await.1, "100", "2 × 100 × 0.5");
}

#[tokio::test]
async fn overrides_read_back_on_v1_and_v2_with_ids() {
    let app = TestApp::new(NOW).await;
    let s = Setup::new(&app).await;
    let c = s
        .contract(
            &app,
            json!({ "multiplier_override_prioritization": "explicit", "overrides": [
                { "starting_at": START, "ending_before": MID, "product_id": s.product,
                  "type": "MULTIPLIER", "multiplier": 0.9, "priority": 2 },
                { "starting_at": START, "product_id": s.product, "type": "OVERWRITE",
                  "overwrite_rate": { "rate_type": "TIERED",
                                      "tiers": [{ "price": 3, "size": 10 }, { "price": 1 }] },
                  "entitled": true },
                { "starting_at": MID, "type": "TIERED", "priority": 1,
                  "override_specifiers": [{ "product_id": s.product,
                                            "pricing_group_values": {} }],
                  "tiers": [{ "multiplier": 0.5, "size": 100 }] },
            ]}),
        )
        .await;
    let get = json!({ "customer_id": s.customer, "contract_id": c });
    let v1 = app.post("/v1/contracts/get", get.clone()).await.data();
    let v2 = app.post("/v2/contracts/get", get).await.data();
    let list = json!({ "customer_id": s.customer });
    let v1_list = app.post("/v1/contracts/list", list.clone()).await.data();
    let v2_list = app.post("/v2/contracts/list", list).await.data();
    let overrides = v2["overrides"].as_array().expect("v2 overrides").clone();
    assert_eq!(overrides.len(), 3);
    assert_eq!(v1["initial"]["overrides"], v2["overrides"]);
    assert_eq!(v1["current"]["overrides"], v2["overrides"]);
    assert_eq!(v1_list[0]["current"]["overrides"], v2["overrides"]);
    assert_eq!(v2_list[0]["overrides"], v2["overrides"]);
    assert_eq!(v2["multiplier_override_prioritization"], "EXPLICIT");
    let ids: Vec<&str> = overrides.iter().map(|o| text(o, "id")).collect();
    assert!(
        ids.iter().all(|id| uuid::Uuid::parse_str(id).is_ok()),
        "{ids:?}"
    );
    assert!(ids[0] != ids[1] && ids[1] != ids[2]);
    let [multiplier, overwrite, tiered] = [&overrides[0], &overrides[1], &overrides[2]];
    assert_eq!(
        multiplier["product"],
        json!({ "id": s.product, "name": "Calls" })
    );
    assert_eq!(
        (
            &multiplier["type"],
            num(&multiplier["multiplier"]),
            num(&multiplier["priority"])
        ),
        (&json!("MULTIPLIER"), "0.9".into(), "2".into())
    );
    assert_eq!(text(multiplier, "starting_at"), START);
    assert_eq!(text(multiplier, "ending_before"), MID);
    assert_eq!(text(multiplier, "created_at"), NOW);
    assert_eq!(multiplier["is_commit_specific"], false);
    assert_eq!(overwrite["entitled"], true);
    assert_eq!(overwrite["overwrite_rate"]["rate_type"], "TIERED");
    assert_eq!(num(&overwrite["overwrite_rate"]["tiers"][0]["price"]), "3");
    assert_eq!(
        overwrite["overwrite_rate"]["credit_type"]["name"],
        "USD (cents)"
    );
    assert!(tiered.get("product").is_none());
    assert_eq!(num(&tiered["override_tiers"][0]["multiplier"]), "0.5");
    assert_eq!(num(&tiered["override_tiers"][0]["size"]), "100");
    assert_eq!(
        tiered["override_specifiers"][0]["product_id"],
        s.product.as_str()
    );
    // A contract without overrides shows none.
    let plain = s.contract(&app, json!({})).await;
    let v2 = app
        .post(
            "/v2/contracts/get",
            json!({ "customer_id": s.customer, "contract_id": plain }),
        )
        .await
        .data();
    assert_eq!(v2["overrides"], json!([]));
    assert_eq!(
        v2["multiplier_override_prioritization"],
        "LOWEST_MULTIPLIER"
    );
}

#[tokio::test]
async fn get_contract_rate_schedule_shows_list_and_override_rates() {
    let app = TestApp::new(NOW).await;
    let s = Setup::new(&app).await;
    let metric = app
        .metric(SBX, json!({ "name": "c", "aggregation_type": "COUNT" }))
        .await;
    let other = app.usage_product(SBX, "Other", &metric, json!({})).await;
    app.flat_rate(SBX, &s.card, &other, "5", START).await;
    let c = s
        .contract(
            &app,
            json!({ "overrides": [
                { "starting_at": MID, "product_id": s.product, "type": "MULTIPLIER",
                  "multiplier": 0.5 },
                { "starting_at": START, "product_id": other, "entitled": false },
            ]}),
        )
        .await;
    // Before the multiplier: the list rate only, up to its start; Other is not entitled.
    let before = s
        .rate_schedule(&app, &c, json!({ "at": "2024-11-10T00:00:00Z" }))
        .await;
    let items = before["data"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{before}");
    let item = &items[0];
    assert_eq!(item["rate_card_id"], s.card.as_str());
    assert_eq!(item["product_id"], s.product.as_str());
    assert_eq!(item["product_name"], "Calls");
    assert_eq!(item["product_tags"], json!(["ai", "premium"]));
    assert_eq!(item["entitled"], true);
    assert_eq!(item["list_rate"]["rate_type"], "FLAT");
    assert_eq!(num(&item["list_rate"]["price"]), "100");
    assert!(item.get("override_rate").is_none(), "{item}");
    assert_eq!(text(item, "starting_at"), START);
    assert_eq!(text(item, "ending_before"), MID);
    assert_eq!(before["next_page"], Value::Null);
    // From the multiplier on (the default `at` is now): open-ended, overridden to 50.
    let after = s.rate_schedule(&app, &c, json!({})).await;
    let item = &after["data"][0];
    assert_eq!(text(item, "starting_at"), MID);
    assert!(item.get("ending_before").is_none(), "{item}");
    assert_eq!(item["override_rate"]["rate_type"], "FLAT");
    assert_eq!(num(&item["override_rate"]["price"]), "50");
    assert_eq!(
        item["override_rate"]["credit_type"]["id"],
        tally_central::model::USD_ID
    );
    assert_eq!(num(&item["list_rate"]["price"]), "100");
    // Selectors filter; an unknown contract is a 404.
    let none = s
        .rate_schedule(
            &app,
            &c,
            json!({ "selectors": [{ "product_tags": ["nothing"] }] }),
        )
        .await;
    assert_eq!(none["data"], json!([]));
    app.post(
        "/v1/contracts/getContractRateSchedule",
        json!({ "customer_id": s.customer, "contract_id": uuid::Uuid::new_v4().to_string() }),
    )
    .await
    .client_error(StatusCode::NOT_FOUND);
    // Paging: two entitled rates with no overrides, one a page.
    let plain = s.contract(&app, json!({})).await;
    let first = app
        .post(
            "/v1/contracts/getContractRateSchedule?limit=1",
            json!({ "customer_id": s.customer, "contract_id": plain }),
        )
        .await
        .expect(StatusCode::OK)
        .body;
    assert_eq!(first["data"].as_array().map(Vec::len), Some(1));
    let next = text(&first, "next_page").to_string();
    let second = app
        .post(
            &format!("/v1/contracts/getContractRateSchedule?limit=1&next_page={next}"),
            json!({ "customer_id": s.customer, "contract_id": plain }),
        )
        .await
        .expect(StatusCode::OK)
        .body;
    assert_eq!(second["data"][0]["product_id"], other.as_str());
    assert_eq!(second["next_page"], Value::Null);
}

#[tokio::test]
async fn bad_overrides_are_400s_naming_the_field_and_store_nothing() {
    let app = TestApp::new(NOW).await;
    let s = Setup::new(&app).await;
    let p = s.product.clone();
    let m = |extra: Value| {
        let mut o = json!({ "starting_at": START, "product_id": p, "type": "MULTIPLIER",
                            "multiplier": 0.5 });
        merge(&mut o, extra);
        o
    };
    let unknown = uuid::Uuid::new_v4().to_string();
    let too_many: Vec<Value> = (0..101).map(|_| m(json!({}))).collect();
    let many_tiers: Vec<Value> = (0..101)
        .map(|_| json!({ "multiplier": 1, "size": 1 }))
        .collect();
    let cases: Vec<(Value, &str)> = vec![
        (json!({ "overrides": [m(json!({ "product_id": unknown }))] }), "overrides[0].product_id: product"),
        (
            json!({ "overrides": [m(json!({})), m(json!({ "product_id": null,
                "override_specifiers": [{ "product_id": unknown }] }))] }),
            "overrides[1].override_specifiers[0].product_id: product",
        ),
        (json!({ "overrides": [m(json!({ "multiplier": -0.1 }))] }), "overrides[0].multiplier: multiplier must be between 0 and 1000"),
        (json!({ "overrides": [m(json!({ "multiplier": null }))] }), "overrides[0].multiplier: required for MULTIPLIER overrides"),
        (
            json!({ "overrides": [m(json!({ "overwrite_rate": { "rate_type": "FLAT", "price": 1 } }))] }),
            "overrides[0].overwrite_rate: not allowed on MULTIPLIER overrides",
        ),
        (
            json!({ "overrides": [m(json!({ "type": "OVERWRITE", "multiplier": null }))] }),
            "overrides[0].overwrite_rate: required for OVERWRITE overrides",
        ),
        (
            json!({ "overrides": [m(json!({ "type": "OVERWRITE", "multiplier": null,
                "overwrite_rate": { "rate_type": "FLAT", "price": 10_000_000_000_000u64 } }))] }),
            "overrides[0].overwrite_rate.price: prices are limited",
        ),
        (
            json!({ "overrides": [m(json!({ "type": "TIERED", "multiplier": null,
                "tiers": [{ "multiplier": 0.5 }], "priority": 1 }))] }),
            "overrides[0].type: TIERED overrides need multiplier_override_prioritization EXPLICIT",
        ),
        (
            json!({ "multiplier_override_prioritization": "EXPLICIT", "overrides": [m(json!({}))] }),
            "overrides[0].priority: required for MULTIPLIER overrides under EXPLICIT prioritization",
        ),
        (
            json!({ "multiplier_override_prioritization": "EXPLICIT", "overrides": [m(json!({
                "type": "TIERED", "multiplier": null, "priority": 1, "tiers": many_tiers }))] }),
            "overrides[0].tiers: at most 100 tiers are allowed per override",
        ),
        (json!({ "overrides": [m(json!({ "priority": 0 }))] }), "overrides[0].priority: must be greater than 0"),
        (json!({ "overrides": [m(json!({ "starting_at": "2024-11-01T00:30:00Z" }))] }), "overrides[0].starting_at must be on an hour boundary"),
        (json!({ "overrides": [m(json!({ "ending_before": "2024-11-02T00:00:01Z" }))] }), "overrides[0].ending_before must be on an hour boundary"),
        (json!({ "overrides": [m(json!({ "ending_before": START }))] }), "overrides[0].ending_before: must be after starting_at"),
        (json!({ "overrides": [m(json!({ "applicable_product_tags": ["ai"] }))] }), "overrides[0].applicable_product_tags: give product_id or applicable_product_tags, not both"),
        (json!({ "overrides": [m(json!({ "product_id": null }))] }), "overrides[0].product_id: an override must target"),
        (json!({ "overrides": [m(json!({ "type": null, "multiplier": null }))] }), "overrides[0].type: an override without a type must set entitled"),
        (json!({ "overrides": [m(json!({ "target": "COMMIT_RATE" }))] }), "overrides[0].target: only allowed on commit-specific overrides (is_commit_specific: true)"),
        (
            json!({ "overrides": [m(json!({ "product_id": null,
                "override_specifiers": [{ "product_id": p, "commit_ids": ["x"] }] }))] }),
            "overrides[0].override_specifiers[0]: only allowed on commit-specific overrides",
        ),
        (
            json!({ "overrides": [m(json!({ "product_id": null, "is_commit_specific": true,
                "override_specifiers": [{ "product_id": p, "commit_ids": ["x"] }] }))] }),
            "overrides[0].override_specifiers[0].commit_ids: x is not a commit or credit this contract's usage can draw on",
        ),
        (
            json!({ "overrides": [m(json!({ "is_commit_specific": true, "entitled": false }))] }),
            "overrides[0].entitled: not allowed on commit-specific overrides",
        ),
        (
            json!({ "overrides": [m(json!({ "product_id": null,
                "override_specifiers": [{ "product_id": p, "exclude": [{"product_id": p}] }] }))] }),
            "overrides[0].override_specifiers[0].exclude: exclude specifiers are not supported",
        ),
        (
            json!({ "overrides": [m(json!({ "type": "OVERWRITE", "multiplier": null,
                "overwrite_rate": { "rate_type": "FLAT", "price": 1, "quantity": 2 } }))] }),
            "overrides[0].overwrite_rate.quantity: not supported",
        ),
        (json!({ "overrides": too_many }), "overrides: at most 100 overrides are allowed per contract"),
        (json!({ "overrides": [m(json!({ "type": "DISCOUNT" }))] }), "DISCOUNT"),
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
    // `is_commit_specific: false` is the default and accepted.
    s.contract(
        &app,
        json!({ "overrides": [m(json!({ "is_commit_specific": false }))] }),
    )
    .await;
}

#[tokio::test]
async fn concurrent_creates_with_overrides_all_keep_theirs() {
    let app = Arc::new(TestApp::new(NOW).await);
    let s = Setup::new(&app).await;
    // 20: one page of contracts/list.
    let requests: Vec<(String, Value)> = (0..20)
        .map(|i| {
            let body = json!({
                "customer_id": s.customer, "rate_card_id": s.card, "starting_at": START,
                "uniqueness_key": format!("k{i}"),
                "overrides": [{ "starting_at": START, "product_id": s.product,
                                "type": "MULTIPLIER", "multiplier": dec(&format!("0.{:02}", i + 1)) }],
            });
            ("/v1/contracts/create".to_string(), body)
        })
        .collect();
    for r in all_at_once(&app, requests).await {
        r.expect(StatusCode::OK);
    }
    let listed = app
        .post("/v2/contracts/list", json!({ "customer_id": s.customer }))
        .await
        .data();
    let mut multipliers: Vec<String> = listed
        .as_array()
        .expect("contracts")
        .iter()
        .map(|c| num(&c["overrides"][0]["multiplier"]))
        .collect();
    multipliers.sort();
    // The multipliers as sent, read back as exact numbers (0.10 reads back as 0.1).
    let mut want: Vec<String> = (1..=20)
        .map(|i| rust_decimal::Decimal::new(i, 2).normalize().to_string())
        .collect();
    want.sort();
    assert_eq!(multipliers, want);
}

async fn priced_on(backend: Backend) {
    let app = TestApp::on_backend(NOW, backend).await;
    let s = Setup::new(&app).await;
    s.events(&app, &[("2024-11-10T00:00:00Z", "150")]).await;
    let c = s
        .contract(
            &app,
            json!({ "overrides": [
                { "starting_at": START, "product_id": s.product, "type": "MULTIPLIER",
                  "multiplier": 0.8 },
                { "starting_at": START, "product_id": s.product, "type": "MULTIPLIER",
                  "multiplier": 0.9 },
            ]}),
        )
        .await;
    assert_eq!(s.november(&app, &c).await.1, "12000");
    let v2 = app
        .post(
            "/v2/contracts/get",
            json!({ "customer_id": s.customer, "contract_id": c }),
        )
        .await
        .data();
    assert_eq!(v2["overrides"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn overrides_price_on_sqlite() {
    priced_on(Backend::Sqlite).await;
}

#[tokio::test]
async fn overrides_price_on_postgres() {
    priced_on(Backend::Postgres).await;
}
