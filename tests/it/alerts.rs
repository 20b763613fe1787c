//! Alerts end to end: a real `tally serve` evaluates alerts as usage arrives and sends
//! `alerts.*` webhooks through the outbox to the real receiver of tests/webhooks (verified with
//! the official TypeScript SDK's `webhooks.unwrap`). Counts are by message id: each crossing
//! must arrive exactly once, within 5 s of the event that crossed it. SQLite and PostgreSQL;
//! two replicas on one PostgreSQL database.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tally_core::time::{format_rfc3339_ms, HOUR_MS};
use tally_tests::{ApiClient, PgDatabase, TallyServer};

use crate::webhooks::{endpoint, now_ms, rt, serve_args, Receiver};

/// The latency the issue asks for: event → webhook.
const WITHIN: Duration = Duration::from_secs(5);

/// A metric counting `call` events (grouped by `region`), a product priced FLAT `price` cents
/// per call on a rate card, and a customer with a contract whose current period holds now.
/// Returns (customer id, metric id).
async fn priced_customer(api: &ApiClient, name: &str, price: &str) -> (String, String) {
    let start = now_ms() / HOUR_MS * HOUR_MS - HOUR_MS;
    let metric = api
        .create(
            "/v1/billable-metrics/create",
            &json!({
                "name": format!("calls {name}"), "aggregation_type": "COUNT",
                "event_type_filter": { "in_values": ["call"] }, "group_keys": [["region"]],
            }),
        )
        .await
        .expect("metric");
    let product = api
        .create(
            "/v1/contract-pricing/products/create",
            &json!({ "name": format!("calls {name}"), "type": "USAGE", "billable_metric_id": metric }),
        )
        .await
        .expect("product");
    let card = api
        .create(
            "/v1/contract-pricing/rate-cards/create",
            &json!({ "name": format!("card {name}") }),
        )
        .await
        .expect("card");
    let price: Value = serde_json::from_str(price).expect("a JSON number");
    api.data(
        "/v1/contract-pricing/rate-cards/addRate",
        &json!({
            "rate_card_id": card, "product_id": product, "starting_at": format_rfc3339_ms(start),
            "entitled": true, "rate_type": "FLAT", "price": price,
        }),
    )
    .await
    .expect("rate");
    let customer = api
        .create("/v1/customers", &json!({ "name": name }))
        .await
        .expect("customer");
    api.create(
        "/v1/contracts/create",
        &json!({
            "customer_id": customer, "rate_card_id": card,
            "starting_at": format_rfc3339_ms(start),
        }),
    )
    .await
    .expect("contract");
    (customer, metric)
}

/// Sends `n` call events for the customer (in requests of at most 100); the instant the last
/// request was answered.
async fn calls(api: &ApiClient, customer: &str, n: usize, tag: &str, region: &str) -> Instant {
    let now = format_rfc3339_ms(now_ms());
    let events: Vec<Value> = (0..n)
        .map(|i| {
            json!({
                "transaction_id": format!("{customer}-{tag}-{i}"), "customer_id": customer,
                "event_type": "call", "timestamp": now, "properties": { "region": region },
            })
        })
        .collect();
    for chunk in events.chunks(100) {
        let data = api
            .data("/v1/ingest", &Value::Array(chunk.to_vec()))
            .await
            .expect("ingest");
        assert_eq!(data["accepted"], json!(chunk.len()), "{data}");
    }
    Instant::now()
}

async fn create_alert(api: &ApiClient, body: Value) -> String {
    api.create("/v1/alerts/create", &body)
        .await
        .expect("create alert")
}

async fn status(api: &ApiClient, customer: &str, alert: &str) -> Value {
    let data = api
        .data(
            "/v1/customer-alerts/get",
            &json!({ "customer_id": customer, "alert_id": alert }),
        )
        .await
        .expect("get customer alert");
    data["customer_status"].clone()
}

/// The delivered messages of `alert`, by id.
fn fired(receiver: &Receiver, alert: &str) -> Vec<Value> {
    let mut seen = BTreeSet::new();
    receiver
        .entries()
        .into_iter()
        .filter(|e| e["answered"] == json!(200) && e["properties"]["alert_id"] == json!(alert))
        .filter(|e| seen.insert(e["id"].as_str().unwrap_or("?").to_string()))
        .collect()
}

/// Waits until `alert` has `n` delivered messages; fails after [`WITHIN`] from `since`.
async fn wait_fired(receiver: &Receiver, alert: &str, n: usize, since: Instant) -> Vec<Value> {
    loop {
        let got = fired(receiver, alert);
        if got.len() >= n {
            return got;
        }
        assert!(
            since.elapsed() < WITHIN,
            "alert {alert}: {} of {n} webhooks within {WITHIN:?}; received {:#?}",
            got.len(),
            receiver.entries()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits long enough for an evaluation and a delivery that should not happen.
async fn settle() {
    tokio::time::sleep(Duration::from_secs(2)).await;
}

/// The sweep is an hour away, so anything that fires here was evaluated as usage arrived.
fn args() -> Vec<&'static str> {
    serve_args(&["--alert-sweep-secs", "3600"])
}

/// 99 calls: nothing; the 100th: one verified webhook within 5 s; more calls: nothing more;
/// reset: one more (still over). A group-filtered alert counts only its group.
fn usage_alert_fires_once_per_crossing(database: Option<&str>) {
    let receiver = Receiver::start(0, 0);
    let server = TallyServer::start_on(database, &args(), &[]);
    let api = ApiClient::new(&server);
    rt().block_on(async {
        endpoint(&api, &receiver.url()).await;
        let (customer, metric) = priced_customer(&api, "Usage", "1").await;
        let alert = create_alert(
            &api,
            json!({
                "alert_type": "usage_threshold_reached", "name": "100 calls", "threshold": 100,
                "customer_id": customer, "billable_metric_id": metric,
            }),
        )
        .await;
        let eu = create_alert(
            &api,
            json!({
                "alert_type": "usage_threshold_reached", "name": "3 EU calls", "threshold": 3,
                "customer_id": customer, "billable_metric_id": metric,
                "group_values": [{ "key": "region", "value": "eu" }],
            }),
        )
        .await;
        calls(&api, &customer, 99, "a", "us").await;
        settle().await;
        assert!(
            fired(&receiver, &alert).is_empty(),
            "{:?}",
            receiver.entries()
        );
        assert_eq!(status(&api, &customer, &alert).await, json!("ok"));

        let crossed = calls(&api, &customer, 1, "b", "us").await;
        let got = wait_fired(&receiver, &alert, 1, crossed).await;
        let e = &got[0];
        assert_eq!(e["verified"], json!(true), "{e}");
        assert_eq!(e["type"], json!("alerts.usage_threshold_reached"));
        let p = &e["properties"];
        assert_eq!(p["customer_id"], json!(customer));
        assert_eq!(p["alert_name"], json!("100 calls"));
        assert_eq!(p["threshold"], json!(100));
        assert_eq!(p["current_value"], json!(100));
        assert_eq!(p["triggered_by"], json!("usage"));
        assert_eq!(status(&api, &customer, &alert).await, json!("in_alarm"));

        calls(&api, &customer, 10, "c", "us").await;
        settle().await;
        assert_eq!(fired(&receiver, &alert).len(), 1, "no second webhook");
        assert!(
            fired(&receiver, &eu).is_empty(),
            "110 US calls are no EU calls"
        );

        let (code, body) = api
            .post(
                "/v1/customer-alerts/reset",
                &json!({ "customer_id": customer, "alert_id": alert }),
            )
            .await
            .expect("reset");
        assert_eq!((code, &body), (200, &Value::Null));
        let got = wait_fired(&receiver, &alert, 2, Instant::now()).await;
        assert_eq!(got[1]["properties"]["triggered_by"], json!("reset"));
        assert_ne!(got[0]["id"], got[1]["id"]);
        settle().await;
        assert_eq!(fired(&receiver, &alert).len(), 2, "reset fires once");

        let crossed = calls(&api, &customer, 3, "d", "eu").await;
        wait_fired(&receiver, &eu, 1, crossed).await;

        let list = api
            .data(
                "/v1/customer-alerts/list",
                &json!({ "customer_id": customer }),
            )
            .await
            .expect("list");
        let list = list.as_array().expect("data");
        assert_eq!(list.len(), 2, "{list:?}");
        assert_eq!(list[0]["alert"]["id"], json!(alert));
        assert_eq!(list[0]["alert"]["status"], json!("enabled"));
        assert_eq!(list[0]["customer_status"], json!("in_alarm"));

        api.data("/v1/alerts/archive", &json!({ "id": eu }))
            .await
            .expect("archive");
        let list = api
            .data(
                "/v1/customer-alerts/list",
                &json!({ "customer_id": customer }),
            )
            .await
            .expect("list");
        assert_eq!(list.as_array().map(Vec::len), Some(1));
        let all = api
            .data(
                "/v1/customer-alerts/list",
                &json!({ "customer_id": customer, "alert_statuses": ["ENABLED", "ARCHIVED"] }),
            )
            .await
            .expect("list all");
        assert_eq!(all.as_array().map(Vec::len), Some(2));
    });
}

#[test]
fn sqlite_usage_alert_fires_once_per_crossing() {
    usage_alert_fires_once_per_crossing(None);
}

#[test]
fn postgres_usage_alert_fires_once_per_crossing() {
    let db = PgDatabase::create();
    usage_alert_fires_once_per_crossing(Some(db.url()));
}

/// FLAT 0.3333 cents a call: 3 calls spend 0.9999 (< 1, no alarm; = 0.9999, an
/// invoice_total_reached alarm); the 4th spends 1.3332 (≥ 1: the spend alert fires).
fn spend_alerts_compare_exact_totals(database: Option<&str>) {
    let receiver = Receiver::start(0, 0);
    let server = TallyServer::start_on(database, &args(), &[]);
    let api = ApiClient::new(&server);
    rt().block_on(async {
        endpoint(&api, &receiver.url()).await;
        let (customer, _) = priced_customer(&api, "Spend", "0.3333").await;
        let spend = create_alert(
            &api,
            json!({
                "alert_type": "spend_threshold_reached", "name": "1 cent", "threshold": 1,
                "customer_id": customer,
            }),
        )
        .await;
        let invoice = create_alert(
            &api,
            json!({
                "alert_type": "invoice_total_reached", "name": "0.9999 cents",
                "threshold": 0.9999, "customer_id": customer,
            }),
        )
        .await;
        let crossed = calls(&api, &customer, 3, "a", "us").await;
        let got = wait_fired(&receiver, &invoice, 1, crossed).await;
        assert_eq!(got[0]["type"], json!("alerts.invoice_total_reached"));
        assert_eq!(got[0]["properties"]["current_value"], json!(0.9999));
        settle().await;
        assert!(fired(&receiver, &spend).is_empty(), "0.9999 < 1");
        assert_eq!(status(&api, &customer, &spend).await, json!("ok"));

        let crossed = calls(&api, &customer, 1, "b", "us").await;
        let got = wait_fired(&receiver, &spend, 1, crossed).await;
        assert_eq!(got[0]["type"], json!("alerts.spend_threshold_reached"));
        assert_eq!(got[0]["properties"]["current_value"], json!(1.3332));
        assert_eq!(
            got[0]["properties"]["credit_type_id"],
            json!("2714e483-4ff1-48e4-9e25-ac732e8f24f2")
        );
        settle().await;
        assert_eq!(fired(&receiver, &invoice).len(), 1);
        assert_eq!(fired(&receiver, &spend).len(), 1);
    });
}

#[test]
fn sqlite_spend_alerts_compare_exact_totals() {
    spend_alerts_compare_exact_totals(None);
}

#[test]
fn postgres_spend_alerts_compare_exact_totals() {
    let db = PgDatabase::create();
    spend_alerts_compare_exact_totals(Some(db.url()));
}

/// An alert created on a customer already past its threshold fires once (evaluate_on_create),
/// unless created with `evaluate_on_create: false`; a customer with no credits is at a 0
/// balance, so a low-balance alert for all customers fires for it at once.
fn evaluate_on_create(database: Option<&str>) {
    let receiver = Receiver::start(0, 0);
    let server = TallyServer::start_on(database, &args(), &[]);
    let api = ApiClient::new(&server);
    rt().block_on(async {
        endpoint(&api, &receiver.url()).await;
        let (customer, metric) = priced_customer(&api, "Create", "1").await;
        calls(&api, &customer, 5, "a", "us").await;
        settle().await;
        let body = |on_create: bool| {
            json!({
                "alert_type": "usage_threshold_reached", "name": "5 calls", "threshold": 5,
                "customer_id": customer, "billable_metric_id": metric,
                "evaluate_on_create": on_create,
            })
        };
        let created = Instant::now();
        let alert = create_alert(&api, body(true)).await;
        let quiet = create_alert(&api, body(false)).await;
        let got = wait_fired(&receiver, &alert, 1, created).await;
        assert_eq!(
            got[0]["properties"]["triggered_by"],
            json!("alert_creation")
        );
        let low = create_alert(
            &api,
            json!({ "alert_type": "low_credit_balance_reached", "name": "low", "threshold": 0 }),
        )
        .await;
        let got = wait_fired(&receiver, &low, 1, Instant::now()).await;
        assert_eq!(got[0]["properties"]["remaining_balance"], json!(0));
        assert_eq!(got[0]["properties"]["customer_id"], json!(customer));
        settle().await;
        assert_eq!(fired(&receiver, &alert).len(), 1);
        assert!(fired(&receiver, &quiet).is_empty());
        assert_eq!(status(&api, &customer, &quiet).await, json!("in_alarm"));
        calls(&api, &customer, 1, "b", "us").await;
        settle().await;
        assert_eq!(fired(&receiver, &alert).len(), 1);
        assert!(fired(&receiver, &quiet).is_empty());
    });
}

#[test]
fn sqlite_evaluate_on_create_fires_once() {
    evaluate_on_create(None);
}

#[test]
fn postgres_evaluate_on_create_fires_once() {
    let db = PgDatabase::create();
    evaluate_on_create(Some(db.url()));
}

/// Two replicas on one database, both ingesting the events that cross and both sweeping every
/// second: each crossing arrives once.
#[test]
fn two_replicas_fire_each_crossing_once() {
    let receiver = Receiver::start(0, 0);
    let db = PgDatabase::create();
    let args = serve_args(&["--alert-sweep-secs", "1"]);
    let a = TallyServer::start_on(Some(db.url()), &args, &[]);
    let b = TallyServer::start_on(Some(db.url()), &args, &[]);
    let (ra, rb) = (ApiClient::new(&a), ApiClient::new(&b));
    rt().block_on(async {
        endpoint(&ra, &receiver.url()).await;
        let (customer, metric) = priced_customer(&ra, "Replicas", "1").await;
        let alert = create_alert(
            &rb,
            json!({
                "alert_type": "usage_threshold_reached", "name": "100 calls", "threshold": 100,
                "customer_id": customer, "billable_metric_id": metric,
            }),
        )
        .await;
        calls(&ra, &customer, 98, "a", "us").await;
        settle().await;
        let (ta, tb) = tokio::join!(
            calls(&ra, &customer, 1, "b", "us"),
            calls(&rb, &customer, 1, "c", "us")
        );
        wait_fired(&receiver, &alert, 1, ta.min(tb)).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(
            fired(&receiver, &alert).len(),
            1,
            "{:?}",
            receiver.answers()
        );
        let (code, _) = rb
            .post(
                "/v1/customer-alerts/reset",
                &json!({ "customer_id": customer, "alert_id": alert }),
            )
            .await
            .expect("reset");
        assert_eq!(code, 200);
        wait_fired(&receiver, &alert, 2, Instant::now()).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let answers = receiver.answers();
        assert_eq!(fired(&receiver, &alert).len(), 2, "{answers:?}");
        for (id, a) in &answers {
            assert_eq!(a, &vec![json!(200)], "message {id} delivered once");
        }
    });
}

/// Bad input is a clear 4xx and stores nothing.
#[test]
fn bad_alerts_are_refused_and_store_nothing() {
    let server = TallyServer::start_on(None, &args(), &[]);
    let api = ApiClient::new(&server);
    rt().block_on(async {
        let (customer, metric) = priced_customer(&api, "Bad", "1").await;
        let unknown = "00000000-0000-0000-0000-000000000000";
        let usage = |extra: Value| {
            let mut body = json!({
                "alert_type": "usage_threshold_reached", "name": "x", "threshold": 10,
                "customer_id": customer, "billable_metric_id": metric,
            });
            for (k, v) in extra.as_object().expect("object") {
                if v.is_null() {
                    body.as_object_mut().expect("object").remove(k);
                } else {
                    body[k] = v.clone();
                }
            }
            body
        };
        let cases = [
            (usage(json!({ "alert_type": "no_such_type" })), 400),
            (usage(json!({ "alert_type": "low_remaining_seat_balance_reached" })), 400),
            (usage(json!({ "billable_metric_id": null })), 400),
            (usage(json!({ "billable_metric_id": unknown })), 400),
            (usage(json!({ "threshold": -1 })), 400),
            (usage(json!({ "threshold": "ten" })), 400),
            (usage(json!({ "threshold": null })), 400),
            (usage(json!({ "name": "" })), 400),
            (usage(json!({ "name": null })), 400),
            (usage(json!({ "customer_id": unknown })), 404),
            (usage(json!({ "group_values": [{ "key": "nope", "value": "x" }] })), 400),
            (usage(json!({ "custom_field_filters": [{ "entity": "Contract", "key": "k", "value": "v" }] })), 400),
            (usage(json!({ "uniqueness_key": "" })), 400),
            (
                json!({ "alert_type": "spend_threshold_reached", "name": "x", "threshold": 1,
                        "billable_metric_id": metric }),
                400,
            ),
            (
                json!({ "alert_type": "spend_threshold_reached", "name": "x", "threshold": 1,
                        "credit_type_id": unknown }),
                400,
            ),
            (
                json!({ "alert_type": "spend_threshold_reached", "name": "x", "threshold": 1,
                        "group_values": [{ "key": "region" }] }),
                400,
            ),
        ];
        for (body, want) in &cases {
            let (code, res) = api.post("/v1/alerts/create", body).await.expect("post");
            assert_eq!(code, *want, "{body} → {res}");
            assert!(
                res["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{res}"
            );
        }
        let all = json!({ "customer_id": customer, "alert_statuses": ["ENABLED", "ARCHIVED"] });
        let list = api
            .data("/v1/customer-alerts/list", &all)
            .await
            .expect("list");
        assert_eq!(list, json!([]), "nothing stored");

        // A uniqueness key is used once.
        let keyed = usage(json!({ "uniqueness_key": "once" }));
        create_alert(&api, keyed.clone()).await;
        let (code, _) = api.post("/v1/alerts/create", &keyed).await.expect("post");
        assert_eq!(code, 409);
        for (path, body, want) in [
            ("/v1/alerts/archive", json!({ "id": unknown }), 404),
            (
                "/v1/customer-alerts/get",
                json!({ "customer_id": customer, "alert_id": unknown }),
                404,
            ),
            (
                "/v1/customer-alerts/get",
                json!({ "customer_id": unknown, "alert_id": unknown }),
                404,
            ),
            (
                "/v1/customer-alerts/reset",
                json!({ "customer_id": customer, "alert_id": unknown }),
                404,
            ),
            ("/v1/customer-alerts/list", json!({ "customer_id": unknown }), 404),
            (
                "/v1/customer-alerts/list",
                json!({ "customer_id": customer, "alert_statuses": ["NOPE"] }),
                400,
            ),
            ("/v1/customer-alerts/list", json!({}), 400),
        ] {
            let (code, res) = api.post(path, &body).await.expect("post");
            assert_eq!(code, want, "{path} {body} → {res}");
        }
        let list = api
            .data("/v1/customer-alerts/list", &all)
            .await
            .expect("list");
        assert_eq!(list.as_array().map(Vec::len), Some(1));
    });
}
