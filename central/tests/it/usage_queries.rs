//! Usage queries (`POST /v1/usage`, `POST /v1/usage/groups`), the customer's billable metrics
//! and costs, against hand-computed values on both backends: HOUR, DAY and NONE windows across a
//! day boundary with ÷3-style decimals, COUNT/SUM/MAX/UNIQUE, `group_by` with and without
//! values, compound `group_key` with `group_filters`, events sent under an alias counted for the
//! customer, every page walked, the same answers before and after the rollups are compacted, and
//! the 400s.

use std::collections::BTreeSet;

use axum::http::StatusCode;
use serde_json::{json, Value};
use tally_central::store::Env;

use crate::store_conformance::Backend;
use crate::support::*;

const SBX: Env = Env::Sandbox;
const NOW: &str = "2024-06-10T00:00:00Z";
const FROM: &str = "2024-06-03T22:00:00Z";
const TO: &str = "2024-06-05T02:00:00Z";

struct Setup {
    acme: String,
    beta: String,
    calls: String,
    tokens: String,
    peak: String,
    users: String,
}

async fn setup(app: &TestApp) -> Setup {
    let keys = json!([["region"], ["region", "tier"]]);
    let calls = app
        .metric(
            SBX,
            json!({ "name": "calls", "aggregation_type": "COUNT",
                    "event_type_filter": { "in_values": ["call"] }, "group_keys": keys }),
        )
        .await;
    let tokens = app
        .metric(
            SBX,
            json!({ "name": "tokens", "aggregation_type": "SUM", "aggregation_key": "n",
                    "event_type_filter": { "in_values": ["call"] }, "group_keys": keys }),
        )
        .await;
    let peak = app
        .metric(
            SBX,
            json!({ "name": "peak", "aggregation_type": "MAX", "aggregation_key": "n",
                    "event_type_filter": { "in_values": ["call"] } }),
        )
        .await;
    let users = app
        .metric(
            SBX,
            json!({ "name": "users", "aggregation_type": "unique", "aggregation_key": "user",
                    "event_type_filter": { "in_values": ["call"] } }),
        )
        .await;
    let acme = app.customer(SBX, "acme", &["acme", "acme-alt"]).await;
    let beta = app.customer(SBX, "beta", &["beta"]).await;
    let calls_p = app.usage_product(SBX, "Calls", &calls, json!({})).await;
    let tokens_p = app.usage_product(SBX, "Tokens", &tokens, json!({})).await;
    let card = app.rate_card(SBX, "card").await;
    app.flat_rate(SBX, &card, &calls_p, "2", "2024-06-01T00:00:00Z")
        .await;
    app.flat_rate(SBX, &card, &tokens_p, "0.5", "2024-06-01T00:00:00Z")
        .await;
    app.contract(SBX, &acme, &card, "2024-06-01T00:00:00Z")
        .await;

    let e = |tid: &str, who: &str, at: &str, props: Value| event(tid, who, "call", at, props);
    let got = app
        .ingest(
            SBX,
            json!([
                e(
                    "e1",
                    "acme",
                    "2024-06-03T22:10:00Z",
                    json!({ "region": "us", "tier": "a", "n": "0.333", "user": "u1" })
                ),
                e(
                    "e2",
                    "acme-alt",
                    "2024-06-03T22:50:00Z",
                    json!({ "region": "eu", "tier": "a", "n": "0.333", "user": "u2" })
                ),
                e(
                    "e3",
                    "acme",
                    "2024-06-03T23:05:00Z",
                    json!({ "region": "us", "tier": "b", "n": "0.334", "user": "u1" })
                ),
                e(
                    "e4",
                    "acme-alt",
                    "2024-06-04T00:30:00Z",
                    json!({ "region": "us", "tier": "a", "n": "1.001", "user": "u3" })
                ),
                e(
                    "e5",
                    "acme",
                    "2024-06-04T13:59:00Z",
                    json!({ "tier": "b", "n": "2.5", "user": "u2" })
                ),
                e(
                    "e6",
                    "acme",
                    "2024-06-05T01:15:00Z",
                    json!({ "region": "eu", "tier": "b", "n": "0.333", "user": "u4" })
                ),
                // Outside the queried range on either side.
                e(
                    "e7",
                    "acme",
                    "2024-06-05T02:30:00Z",
                    json!({ "region": "us", "n": "100", "user": "u1" })
                ),
                e(
                    "e8",
                    "acme",
                    "2024-06-03T21:59:00Z",
                    json!({ "region": "us", "n": "100", "user": "u1" })
                ),
                e(
                    "b1",
                    "beta",
                    "2024-06-04T00:10:00Z",
                    json!({ "region": "us", "tier": "a", "n": "7", "user": "u9" })
                ),
                // No metric matches it.
                event(
                    "x1",
                    "acme",
                    "other",
                    "2024-06-04T00:10:00Z",
                    json!({ "n": "5" })
                ),
            ]),
        )
        .await;
    assert_eq!(num(&got["accepted"]), "10", "{got}");
    Setup {
        acme,
        beta,
        calls,
        tokens,
        peak,
        users,
    }
}

/// Every item of a `POST /v1/usage` query, walking its pages; also the page count.
async fn usage_all(app: &TestApp, body: Value) -> (Vec<Value>, usize) {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/usage?next_page={c}"),
            None => "/v1/usage".to_string(),
        };
        let r = app.post(&path, body.clone()).await.expect(StatusCode::OK);
        pages += 1;
        items.extend(r.body["data"].as_array().expect("data").iter().cloned());
        match r.body["next_page"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => {
                assert!(r.body["next_page"].is_null(), "{}", r.body);
                return (items, pages);
            }
        }
    }
}

/// Every item of a `POST /v1/usage/groups` query with `limit` (none: the default).
async fn groups_all(app: &TestApp, body: Value, limit: Option<usize>) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut query = Vec::new();
        if let Some(l) = limit {
            query.push(format!("limit={l}"));
        }
        if let Some(c) = &cursor {
            query.push(format!("next_page={c}"));
        }
        let path = format!("/v1/usage/groups?{}", query.join("&"));
        let r = app.post(&path, body.clone()).await.expect(StatusCode::OK);
        let page = r.body["data"].as_array().expect("data").clone();
        if let Some(l) = limit {
            assert!(page.len() <= l);
        }
        items.extend(page);
        match r.body["next_page"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return items,
        }
    }
}

/// `value` as exact text, `null` as "null".
fn val(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        other => num(other),
    }
}

/// The (start, value) of the items of one customer and metric.
fn series(items: &[Value], customer: &str, metric: &str) -> Vec<(String, String)> {
    items
        .iter()
        .filter(|i| i["customer_id"] == customer && i["billable_metric_id"] == metric)
        .map(|i| (text(i, "start_timestamp").to_string(), val(&i["value"])))
        .collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// Every answer the test checks, as JSON (compared before and after compaction).
async fn answers(app: &TestApp, s: &Setup) -> Vec<Value> {
    let mut out = Vec::new();
    for window in ["day", "NONE", "Hour"] {
        let (items, _) = usage_all(
            app,
            json!({ "starting_on": FROM, "ending_before": TO, "window_size": window }),
        )
        .await;
        out.push(Value::Array(items));
    }
    let grouped = json!({
        "starting_on": FROM, "ending_before": TO, "window_size": "DAY",
        "customer_ids": [s.acme],
        "billable_metrics": [
            { "id": s.tokens, "group_by": { "key": "region" } },
            { "id": s.calls, "group_by": { "key": "region", "values": ["us", "apac"] } },
        ],
    });
    out.push(Value::Array(usage_all(app, grouped).await.0));
    let base = json!({ "customer_id": s.acme, "billable_metric_id": s.tokens,
                       "starting_on": FROM, "ending_before": TO });
    let with = |extra: Value| {
        let mut b = base.clone();
        merge(&mut b, extra);
        b
    };
    let q = with(json!({ "window_size": "NONE", "group_key": ["region", "tier"] }));
    out.push(Value::Array(groups_all(app, q, None).await));
    let q = with(
        json!({ "window_size": "none", "group_key": ["tier", "region"],
                         "group_filters": { "region": ["us"] } }),
    );
    out.push(Value::Array(groups_all(app, q, Some(1)).await));
    let q = with(json!({ "window_size": "DAY", "group_key": ["region"] }));
    out.push(Value::Array(groups_all(app, q, Some(2)).await));
    let q = with(json!({ "window_size": "DAY" }));
    out.push(Value::Array(groups_all(app, q, None).await));
    out
}

async fn usage_queries(backend: Backend) {
    let app = TestApp::on_backend(NOW, backend).await;
    let s = setup(&app).await;
    let before = answers(&app, &s).await;
    // Roll every dirty day up (the background compactor may have taken some already): the DAY
    // and NONE reads then take day blocks, not hours.
    let usage = &app.state.stores.usage;
    while usage.compact_rollups(64).await.expect("compact").days > 0 {}
    let refs: Vec<String> = ["acme", "acme-alt", s.acme.as_str()]
        .map(String::from)
        .to_vec();
    let ids = [s.tokens.clone()];
    let dirty = usage.dirty_days(SBX, &refs, &ids, ms(FROM), ms(TO)).await;
    assert_eq!(dirty.expect("dirty days"), Vec::<i64>::new());
    let after = answers(&app, &s).await;
    assert_eq!(before, after, "answers changed with the compaction");

    // DAY windows: the first and last cut at the range's ends.
    let day = after[0].as_array().expect("day").clone();
    let (w1, w2, w3) = (FROM, "2024-06-04T00:00:00Z", "2024-06-05T00:00:00Z");
    assert_eq!(
        series(&day, &s.acme, &s.calls),
        pairs(&[(w1, "3"), (w2, "2"), (w3, "1")])
    );
    assert_eq!(
        series(&day, &s.acme, &s.tokens),
        pairs(&[(w1, "1"), (w2, "3.501"), (w3, "0.333")])
    );
    assert_eq!(
        series(&day, &s.acme, &s.peak),
        pairs(&[(w1, "0.334"), (w2, "2.5"), (w3, "0.333")])
    );
    assert_eq!(
        series(&day, &s.acme, &s.users),
        pairs(&[(w1, "2"), (w2, "2"), (w3, "1")])
    );
    assert_eq!(
        series(&day, &s.beta, &s.tokens),
        pairs(&[(w1, "null"), (w2, "7"), (w3, "null")])
    );
    let last = day.last().expect("items");
    assert_eq!(text(last, "end_timestamp"), TO);
    assert_eq!(day.len(), 2 * 4 * 3);
    assert!(day.iter().all(|i| i.get("groups").is_none()));
    let names: BTreeSet<&str> = day
        .iter()
        .map(|i| text(i, "billable_metric_name"))
        .collect();
    assert_eq!(names, BTreeSet::from(["calls", "tokens", "peak", "users"]));

    // NONE: one window for the whole range.
    let none = after[1].as_array().expect("none").clone();
    assert_eq!(none.len(), 8);
    assert_eq!(series(&none, &s.acme, &s.calls), pairs(&[(FROM, "6")]));
    assert_eq!(series(&none, &s.acme, &s.tokens), pairs(&[(FROM, "4.834")]));
    assert_eq!(series(&none, &s.acme, &s.peak), pairs(&[(FROM, "2.5")]));
    assert_eq!(series(&none, &s.acme, &s.users), pairs(&[(FROM, "4")]));
    assert_eq!(series(&none, &s.beta, &s.users), pairs(&[(FROM, "1")]));

    // HOUR: 28 windows per (customer, metric), 224 items over three pages, none twice.
    let hour = after[2].as_array().expect("hour").clone();
    assert_eq!(hour.len(), 2 * 4 * 28);
    let keys: BTreeSet<(String, String, String)> = hour
        .iter()
        .map(|i| {
            (
                text(i, "customer_id").to_string(),
                text(i, "billable_metric_id").to_string(),
                text(i, "start_timestamp").to_string(),
            )
        })
        .collect();
    assert_eq!(keys.len(), hour.len(), "an item appears twice");
    let tokens: Vec<(String, String)> = series(&hour, &s.acme, &s.tokens)
        .into_iter()
        .filter(|(_, v)| v != "null")
        .collect();
    assert_eq!(
        tokens,
        pairs(&[
            ("2024-06-03T22:00:00Z", "0.666"),
            ("2024-06-03T23:00:00Z", "0.334"),
            ("2024-06-04T00:00:00Z", "1.001"),
            ("2024-06-04T13:00:00Z", "2.5"),
            ("2024-06-05T01:00:00Z", "0.333"),
        ])
    );
    let (_, pages) = usage_all(
        &app,
        json!({ "starting_on": FROM, "ending_before": TO, "window_size": "HOUR" }),
    )
    .await;
    assert_eq!(pages, 3);

    // group_by without values: every value seen (the event without a region is in the total
    // only); with values: exactly those, null without usage.
    let grouped = after[3].as_array().expect("grouped").clone();
    assert_eq!(grouped.len(), 6);
    let groups = |metric: &str| -> Vec<Value> {
        grouped
            .iter()
            .filter(|i| i["billable_metric_id"] == metric)
            .map(|i| i["groups"].clone())
            .collect()
    };
    assert_eq!(
        groups(&s.tokens),
        vec![
            json!({ "eu": dec("0.333"), "us": dec("0.667") }),
            json!({ "us": dec("1.001") }),
            json!({ "eu": dec("0.333") }),
        ]
    );
    assert_eq!(
        groups(&s.calls),
        vec![
            json!({ "us": 2, "apac": null }),
            json!({ "us": 1, "apac": null }),
            json!({ "us": null, "apac": null }),
        ]
    );

    // Compound group key, one window: groups in value order, the absent region first.
    let compound = after[4].as_array().expect("compound").clone();
    let shown: Vec<(Value, String)> = compound
        .iter()
        .map(|i| (i["group"].clone(), val(&i["value"])))
        .collect();
    assert_eq!(
        shown,
        vec![
            (json!({ "tier": "b" }), "2.5".to_string()),
            (json!({ "region": "eu", "tier": "a" }), "0.333".to_string()),
            (json!({ "region": "eu", "tier": "b" }), "0.333".to_string()),
            (json!({ "region": "us", "tier": "a" }), "1.334".to_string()),
            (json!({ "region": "us", "tier": "b" }), "0.334".to_string()),
        ]
    );
    assert!(compound
        .iter()
        .all(|i| i["group_key"].is_null() && i["group_value"].is_null()));
    assert!(compound
        .iter()
        .all(|i| text(i, "starting_on") == FROM && text(i, "ending_before") == TO));
    // group_filters, walked one item a page.
    let filtered = after[5].as_array().expect("filtered").clone();
    let shown: Vec<(Value, String)> = filtered
        .iter()
        .map(|i| (i["group"].clone(), val(&i["value"])))
        .collect();
    assert_eq!(
        shown,
        vec![
            (json!({ "region": "us", "tier": "a" }), "1.334".to_string()),
            (json!({ "region": "us", "tier": "b" }), "0.334".to_string()),
        ]
    );
    // Simple key by day, two a page: the deprecated single-key fields too.
    let simple = after[6].as_array().expect("simple").clone();
    let shown: Vec<(String, Value, String)> = simple
        .iter()
        .map(|i| {
            assert_eq!(i["group_key"], "region");
            let in_group = i["group"].get("region").cloned().unwrap_or(Value::Null);
            assert_eq!(in_group, i["group_value"]);
            (
                text(i, "starting_on").to_string(),
                i["group_value"].clone(),
                val(&i["value"]),
            )
        })
        .collect();
    assert_eq!(
        shown,
        vec![
            (w1.to_string(), json!("eu"), "0.333".to_string()),
            (w1.to_string(), json!("us"), "0.667".to_string()),
            (w2.to_string(), Value::Null, "2.5".to_string()),
            (w2.to_string(), json!("us"), "1.001".to_string()),
            (w3.to_string(), json!("eu"), "0.333".to_string()),
        ]
    );
    // No grouping: one item per window.
    let plain = after[7].as_array().expect("plain").clone();
    let shown: Vec<String> = plain.iter().map(|i| val(&i["value"])).collect();
    assert_eq!(shown, ["1", "3.501", "0.333"]);
    assert!(plain.iter().all(|i| i.get("group").is_none()));

    // current_period: the contract's June period (every acme event, e7 and e8 included).
    let current = groups_all(
        &app,
        json!({ "customer_id": s.acme, "billable_metric_id": s.calls, "window_size": "NONE",
                "current_period": true }),
        None,
    )
    .await;
    assert_eq!(current.len(), 1);
    assert_eq!(text(&current[0], "starting_on"), "2024-06-01T00:00:00Z");
    assert_eq!(text(&current[0], "ending_before"), "2024-07-01T00:00:00Z");
    assert_eq!(val(&current[0]["value"]), "8");

    // Filters: one customer, one metric.
    let (only, _) = usage_all(
        &app,
        json!({ "starting_on": FROM, "ending_before": TO, "window_size": "NONE",
                "customer_ids": [s.beta], "billable_metrics": [{ "id": s.peak }] }),
    )
    .await;
    assert_eq!(only.len(), 1);
    assert_eq!(val(&only[0]["value"]), "7");

    // The customer's metrics: those on its contract's products.
    let listed = app
        .get(&format!("/v1/customers/{}/billable-metrics", s.acme))
        .await
        .data();
    let names: Vec<&str> = listed
        .as_array()
        .expect("list")
        .iter()
        .map(|m| text(m, "name"))
        .collect();
    assert_eq!(names, ["calls", "tokens"]);
    assert_eq!(listed[0]["aggregation_type"], "COUNT");
    assert_eq!(listed[1]["group_by"], json!(["region", "tier"]));
    let page = app
        .get(&format!(
            "/v1/customers/{}/billable-metrics?limit=1&on_current_plan=true",
            s.acme
        ))
        .await
        .expect(StatusCode::OK);
    assert_eq!(page.body["data"][0]["name"], "calls");
    let next = text(&page.body, "next_page").to_string();
    let page = app
        .get(&format!(
            "/v1/customers/{}/billable-metrics?limit=1&on_current_plan=true&next_page={next}",
            s.acme
        ))
        .await
        .expect(StatusCode::OK);
    assert_eq!(page.body["data"][0]["name"], "tokens");
    assert!(page.body["next_page"].is_null());
    let none = app
        .get(&format!("/v1/customers/{}/billable-metrics", s.beta))
        .await
        .data();
    assert_eq!(none, json!([]));

    // Costs: the June draft, 8 calls × 2 + 204.834 tokens × 0.5.
    let costs = app
        .get(&format!(
            "/v1/customers/{}/costs?starting_on=2024-06-01T00:00:00Z&ending_before=2024-07-01T00:00:00Z",
            s.acme
        ))
        .await
        .data();
    assert_eq!(costs.as_array().map(Vec::len), Some(1), "{costs}");
    let (_, usd) = costs[0]["credit_types"]
        .as_object()
        .and_then(|m| m.iter().next())
        .expect("a credit type");
    assert_eq!(num(&usd["cost"]), "118.417", "{costs}");
    let lines: Vec<String> = usd["line_item_breakdown"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|l| format!("{}={}", text(l, "name"), num(&l["cost"])))
        .collect();
    assert!(lines.contains(&"Calls=16".to_string()), "{lines:?}");
    assert!(lines.contains(&"Tokens=102.417".to_string()), "{lines:?}");

    bad_input(&app, &s).await;
}

async fn bad_input(app: &TestApp, s: &Setup) {
    let usage = |body: Value| async move { app.post("/v1/usage", body).await };
    let base = json!({ "starting_on": FROM, "ending_before": TO, "window_size": "DAY" });
    let with = |extra: Value| {
        let mut b = base.clone();
        merge(&mut b, extra);
        b
    };
    for (body, needle) in [
        (
            with(json!({ "starting_on": "2024-06-03T22:30:00Z" })),
            "hour",
        ),
        (with(json!({ "ending_before": FROM })), "after"),
        (with(json!({ "window_size": "WEEK" })), "window_size"),
        (
            with(json!({ "billable_metrics": [{ "id": "00000000-0000-0000-0000-000000000000" }] })),
            "not found",
        ),
        (
            with(
                json!({ "billable_metrics": [{ "id": s.peak, "group_by": { "key": "region" } }] }),
            ),
            "group key",
        ),
        (
            with(json!({ "customer_ids": ["00000000-0000-0000-0000-000000000000"] })),
            "customer",
        ),
        (json!({ "window_size": "DAY" }), "starting_on"),
    ] {
        let r = usage(body.clone())
            .await
            .client_error(StatusCode::BAD_REQUEST);
        assert!(r.message().contains(needle), "{body}: {}", r.message());
    }
    let groups = json!({ "customer_id": s.acme, "billable_metric_id": s.tokens,
                         "window_size": "DAY", "starting_on": FROM, "ending_before": TO });
    let with = |extra: Value| {
        let mut b = groups.clone();
        merge(&mut b, extra);
        b
    };
    for (body, needle) in [
        (with(json!({ "group_key": ["tier"] })), "group key"),
        (
            with(json!({ "group_key": ["region", "user"] })),
            "group key",
        ),
        (
            with(json!({ "group_key": ["region"], "group_filters": { "tier": ["a"] } })),
            "group_filters",
        ),
        (with(json!({ "current_period": true })), "current_period"),
        (
            with(json!({ "ending_before": "2024-06-03T22:00:01Z" })),
            "hour",
        ),
        (
            json!({ "customer_id": s.beta, "billable_metric_id": s.tokens,
                    "window_size": "DAY", "current_period": true }),
            "contract",
        ),
        (
            json!({ "customer_id": s.acme, "billable_metric_id": s.tokens, "window_size": "DAY" }),
            "starting_on",
        ),
    ] {
        let r = app
            .post("/v1/usage/groups", body.clone())
            .await
            .client_error(StatusCode::BAD_REQUEST);
        assert!(r.message().contains(needle), "{body}: {}", r.message());
    }
    let r = app.post("/v1/usage/groups?limit=101", groups.clone()).await;
    r.client_error(StatusCode::BAD_REQUEST);
    let r = app
        .get(&format!("/v1/customers/{}/costs", s.acme))
        .await
        .client_error(StatusCode::BAD_REQUEST);
    assert!(r.message().contains("starting_on"));
    app.get("/v1/customers/00000000-0000-0000-0000-000000000000/billable-metrics")
        .await
        .client_error(StatusCode::NOT_FOUND);
}

both_backends!(usage_queries);
