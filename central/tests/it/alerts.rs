//! Alerts in process, on a fixed clock: edge batches feed the evaluator like native ingest, a
//! new billing period re-arms a usage alert, and evaluators racing on two pools of one database
//! write one crossing's messages once. (The end-to-end delivery tests are `tests/it/alerts.rs`.)

use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use tally_central::service::alerts::{self, Trigger};
use tally_central::store::{Env, OutboxMessage};
use tally_core::batch::{sign, SignedRequest, SIGNATURE_HEADER, TIMESTAMP_HEADER};

use crate::store_conformance::Backend;
use crate::support::*;

const NOW: &str = "2024-09-20T12:00:00Z";
const SBX: Env = Env::Sandbox;

async fn endpoint(app: &TestApp) -> String {
    app.post(
        "/v1/webhook-endpoints/create",
        json!({ "url": "http://127.0.0.1:9/alerts" }),
    )
    .await
    .id()
}

async fn usage_alert(app: &TestApp, b: &Billing, threshold: u32) -> String {
    app.post(
        "/v1/alerts/create",
        json!({
            "alert_type": "usage_threshold_reached", "name": "calls", "threshold": threshold,
            "customer_id": b.customer, "billable_metric_id": b.metric,
        }),
    )
    .await
    .id()
}

/// The endpoint's messages (its delivery log, read from the store).
async fn messages(app: &TestApp, endpoint: &str) -> Vec<OutboxMessage> {
    app.state
        .stores
        .outbox
        .outbox_for_destination(SBX, endpoint, None, 100)
        .await
        .expect("outbox")
}

/// Waits until the endpoint has `n` messages (the evaluator runs in the background).
async fn wait_messages(app: &TestApp, endpoint: &str, n: usize) -> Vec<OutboxMessage> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = messages(app, endpoint).await;
        if got.len() >= n || Instant::now() > deadline {
            assert_eq!(got.len(), n, "{got:?}");
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn calls(app: &TestApp, alias: &str, n: usize, tag: &str, at: &str) {
    let events: Vec<Value> = (0..n)
        .map(|i| {
            json!({ "transaction_id": format!("{tag}-{i}"), "customer_id": alias,
                    "event_type": "call", "timestamp": at })
        })
        .collect();
    let data = app.ingest(SBX, Value::Array(events)).await;
    assert_eq!(data["accepted"], json!(n), "{data}");
}

async fn customer_status(app: &TestApp, b: &Billing, alert: &str) -> Value {
    app.post(
        "/v1/customer-alerts/get",
        json!({ "customer_id": b.customer, "alert_id": alert }),
    )
    .await
    .data()["customer_status"]
        .clone()
}

#[tokio::test]
async fn an_edge_batch_crossing_a_threshold_fires_through_the_alias() {
    let app = TestApp::new(NOW).await;
    let ep = endpoint(&app).await;
    let b = Billing::count(&app, SBX, "call", "1", "acme", "2024-09-01T00:00:00Z").await;
    let alert = usage_alert(&app, &b, 10).await;
    let batch = |seq: u64, count: u64| {
        serde_json::to_vec(&json!({
            "shard_id": "shard-0", "seq": seq, "metrics_version": 1,
            "partials": [{
                "env": "sandbox",
                "key": { "customer_ref": "acme", "metric_id": b.metric, "groups": [],
                         "hour_ms": ms("2024-09-20T10:00:00Z") },
                "acc": { "count": count },
            }],
        }))
        .unwrap()
    };
    let send = |body: Vec<u8>| {
        let app = &app;
        async move {
            let path = "/internal/v1/batches";
            let req = SignedRequest {
                method: "POST",
                path_and_query: path,
                body: &body,
            };
            let at = ms(NOW);
            let sig = sign(EDGE_KEY, at, &req);
            let ts = at.to_string();
            app.send(
                Method::POST,
                path,
                None,
                Some(body.clone()),
                &[(TIMESTAMP_HEADER, &ts), (SIGNATURE_HEADER, &sig)],
            )
            .await
            .expect(StatusCode::OK)
        }
    };
    send(batch(1, 9)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(messages(&app, &ep).await.is_empty());
    assert_eq!(customer_status(&app, &b, &alert).await, json!("ok"));
    send(batch(2, 1)).await;
    let got = wait_messages(&app, &ep, 1).await;
    assert_eq!(got[0].kind, "alerts.usage_threshold_reached");
    let payload: Value = serde_json::from_str(&got[0].payload).unwrap();
    assert_eq!(payload["id"], json!(got[0].id));
    assert_eq!(payload["properties"]["customer_id"], json!(b.customer));
    assert_eq!(payload["properties"]["current_value"], json!(10));
    // A replayed batch changes no usage and fires nothing.
    send(batch(2, 1)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(messages(&app, &ep).await.len(), 1);
    assert_eq!(customer_status(&app, &b, &alert).await, json!("in_alarm"));
}

#[tokio::test]
async fn a_new_billing_period_rearms_a_usage_alert() {
    let app = TestApp::new(NOW).await;
    let ep = endpoint(&app).await;
    let b = Billing::count(&app, SBX, "call", "1", "acme", "2024-09-01T00:00:00Z").await;
    let alert = usage_alert(&app, &b, 3).await;
    calls(&app, "acme", 3, "sep", "2024-09-20T11:00:00Z").await;
    wait_messages(&app, &ep, 1).await;

    // October: the period's usage is 0 again, so the alert is ok (the sweep sees time pass).
    app.set_now("2024-10-02T12:00:00Z");
    let fired = alerts::evaluate_customer(&app.state, SBX, &b.customer, None, Trigger::Schedule)
        .await
        .unwrap();
    assert_eq!(fired, 0);
    assert_eq!(customer_status(&app, &b, &alert).await, json!("ok"));
    calls(&app, "acme", 2, "oct-a", "2024-10-02T11:00:00Z").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(messages(&app, &ep).await.len(), 1);
    calls(&app, "acme", 1, "oct-b", "2024-10-02T11:00:00Z").await;
    let got = wait_messages(&app, &ep, 2).await;
    assert_ne!(got[0].id, got[1].id, "a new crossing is a new message");
}

/// Evaluators on two replicas (independent pools of one database), many at once, all seeing
/// the crossing: one message per endpoint.
async fn racing_evaluators_fire_once(backend: Backend) {
    let app = TestApp::on_backend(NOW, backend).await;
    let eps = [endpoint(&app).await, endpoint(&app).await];
    let b = Billing::count(&app, SBX, "call", "1", "acme", "2024-09-01T00:00:00Z").await;
    // Created silently: nothing is in alarm yet, and the evaluator has nothing to do on its own.
    let alert = app
        .post(
            "/v1/alerts/create",
            json!({
                "alert_type": "spend_threshold_reached", "name": "spend", "threshold": 5,
                "customer_id": b.customer, "evaluate_on_create": false,
            }),
        )
        .await
        .id();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Usage written straight to the store: no evaluator was told, the racers below are alone.
    let metrics = app.state.metric_defs(SBX).await.unwrap();
    let events = (0..5).map(|i| {
        json!({ "transaction_id": format!("r{i}"), "customer_id": "acme", "event_type": "call",
                "timestamp": "2024-09-20T11:00:00Z" })
    });
    let body = serde_json::to_vec(&events.collect::<Vec<_>>()).unwrap();
    let parsed = tally_core::ingest::parse_batch(&body, ms(NOW)).unwrap();
    let items: Vec<_> = parsed
        .events
        .iter()
        .map(|(_, e)| tally_central::store::IngestItem {
            env: SBX,
            transaction_id: e.transaction_id.clone(),
            contributions: tally_core::metric::contributions(metrics.iter(), e),
            event: None,
        })
        .collect();
    app.state
        .stores
        .usage
        .commit_ingest(&items, ms(NOW))
        .await
        .unwrap();
    let replica = app.replica().await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let st = if i % 2 == 0 {
            app.state.clone()
        } else {
            replica.clone()
        };
        let customer = b.customer.clone();
        tasks.push(tokio::spawn(async move {
            alerts::evaluate_customer(&st, SBX, &customer, None, Trigger::Usage)
                .await
                .unwrap()
        }));
    }
    let mut fired = 0;
    for t in tasks {
        fired += t.await.unwrap();
    }
    // The replica's evaluator sweeps at startup, so it may be the one that fired.
    assert!(fired <= 1, "{fired} evaluators fired");
    for ep in &eps {
        let got = messages(&app, ep).await;
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].kind, "alerts.spend_threshold_reached");
    }
    assert_eq!(customer_status(&app, &b, &alert).await, json!("in_alarm"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_evaluators_fire_once_sqlite() {
    racing_evaluators_fire_once(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_evaluators_fire_once_postgres() {
    racing_evaluators_fire_once(Backend::Postgres).await;
}

/// Every supported type compares the value its engine shows through the API (the draft's
/// `total`, getNetBalance), inclusive at the threshold: an alert at exactly the value is in
/// alarm, one a cent past it is ok. Then a manual entry tops up the credit: its low-balance
/// alert goes back to ok.
#[tokio::test]
async fn each_type_compares_what_the_api_shows_inclusively() {
    const START: &str = "2024-11-01T00:00:00Z";
    const DEC: &str = "2024-12-01T00:00:00Z";
    let app = TestApp::new("2024-11-25T00:00:00Z").await;
    let metric = app
        .metric(
            SBX,
            json!({ "name": "calls", "aggregation_type": "COUNT",
                    "event_type_filter": { "in_values": ["call"] } }),
        )
        .await;
    let usage = app.usage_product(SBX, "Calls", &metric, Value::Null).await;
    let fixed = app
        .post(
            "/v1/contract-pricing/products/create",
            json!({ "name": "Prepaid", "type": "FIXED" }),
        )
        .await
        .id();
    let card = app.rate_card(SBX, "card").await;
    app.flat_rate(SBX, &card, &usage, "33.33", START).await;
    let customer = app.customer(SBX, "acme", &["acme"]).await;
    let access = |amount: &str| json!({ "schedule_items": [{ "amount": dec(amount), "starting_at": START, "ending_before": DEC }] });
    app.post(
        "/v1/contracts/create",
        json!({
            "customer_id": customer, "rate_card_id": card, "starting_at": START,
            "commits": [{ "type": "PREPAID", "product_id": fixed, "priority": 2,
                          "access_schedule": access("200") }],
            "credits": [{ "product_id": fixed, "priority": 1, "access_schedule": access("50") }],
        }),
    )
    .await
    .expect(StatusCode::OK);
    calls(&app, "acme", 10, "n", "2024-11-24T10:00:00Z").await;

    let draft = app.invoice_at(SBX, &customer, "2024-11-24T10:00:00Z").await;
    let total = num(&draft["total"]);
    let net = |types: Value| {
        let app = &app;
        let customer = customer.clone();
        async move {
            let body = json!({ "customer_id": customer, "filters": [{ "balance_types": types }] });
            num(&app
                .post("/v1/contracts/customerBalances/getNetBalance", body)
                .await
                .data()["balance"])
        }
    };
    let credit = net(json!(["CREDIT"])).await;
    let commit = net(json!(["PREPAID_COMMIT", "POSTPAID_COMMIT"])).await;
    let both = net(json!(["PREPAID_COMMIT", "POSTPAID_COMMIT", "CREDIT"])).await;
    // 10 × 33.33 = 333.3: the credit's 50 first, then 200 of the commit; 83.3 left to pay.
    assert_eq!(
        (
            total.as_str(),
            credit.as_str(),
            commit.as_str(),
            both.as_str()
        ),
        ("83.3", "0", "0", "0")
    );
    let cent = |v: &str, by: &str| {
        (v.parse::<rust_decimal::Decimal>().unwrap() + by.parse::<rust_decimal::Decimal>().unwrap())
            .to_string()
    };
    let mut cases = Vec::new();
    for (alert_type, value, past) in [
        ("spend_threshold_reached", total.as_str(), "0.01"),
        ("invoice_total_reached", total.as_str(), "0.01"),
        (
            "monthly_invoice_total_spend_threshold_reached",
            total.as_str(),
            "0.01",
        ),
        ("low_credit_balance_reached", credit.as_str(), "-0.01"),
        (
            "low_remaining_contract_credit_balance_reached",
            credit.as_str(),
            "-0.01",
        ),
        (
            "low_remaining_commit_balance_reached",
            commit.as_str(),
            "-0.01",
        ),
        (
            "low_remaining_contract_credit_and_commit_balance_reached",
            both.as_str(),
            "-0.01",
        ),
        ("usage_threshold_reached", "10", "1"),
    ] {
        for (threshold, want) in [(value.to_string(), "in_alarm"), (cent(value, past), "ok")] {
            if threshold.starts_with('-') {
                continue; // a balance of 0 cannot be undercut by a valid threshold
            }
            let mut body = json!({
                "alert_type": alert_type, "name": alert_type, "customer_id": customer,
                "threshold": dec(&threshold), "evaluate_on_create": false,
            });
            if alert_type == "usage_threshold_reached" {
                body["billable_metric_id"] = json!(metric);
            }
            let id = app.post("/v1/alerts/create", body).await.id();
            cases.push((alert_type, threshold, want, id));
        }
    }
    alerts::evaluate_customer(&app.state, SBX, &customer, None, Trigger::Schedule)
        .await
        .unwrap();
    let status_of = |id: String| {
        let app = &app;
        let customer = customer.clone();
        async move {
            app.post(
                "/v1/customer-alerts/get",
                json!({ "customer_id": customer, "alert_id": id }),
            )
            .await
            .data()["customer_status"]
                .clone()
        }
    };
    for (alert_type, threshold, want, id) in &cases {
        assert_eq!(
            status_of(id.clone()).await,
            json!(want),
            "{alert_type} at {threshold}"
        );
    }

    // A top-up of the credit lifts its balance over 0 (a 1,000 manual entry): its low-balance
    // alerts are ok again.
    let v2 = app
        .post(
            "/v2/contracts/get",
            json!({ "customer_id": customer, "contract_id": draft["contract_id"] }),
        )
        .await
        .data();
    let credit_id = v2["credits"][0]["id"].as_str().unwrap().to_string();
    let segment = v2["credits"][0]["access_schedule"]["schedule_items"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    app.post(
        "/v1/contracts/addManualBalanceLedgerEntry",
        json!({
            "customer_id": customer, "contract_id": draft["contract_id"], "id": credit_id,
            "segment_id": segment, "amount": 1000, "reason": "top-up",
        }),
    )
    .await
    .expect(StatusCode::OK);
    // 1,050 of credit now covers the whole 333.3.
    assert_eq!(net(json!(["CREDIT"])).await, "716.7");
    alerts::evaluate_customer(&app.state, SBX, &customer, None, Trigger::Schedule)
        .await
        .unwrap();
    for (alert_type, threshold, _, id) in &cases {
        if alert_type.starts_with("low_credit")
            || alert_type.starts_with("low_remaining_contract_credit_balance")
        {
            assert_eq!(
                status_of(id.clone()).await,
                json!("ok"),
                "{alert_type} at {threshold}"
            );
        }
    }
}
