//! SQL billable metrics (issue 13): create/get/list with `sql`, the refusals (escapes, other
//! tables, functions off the list, raw rows, mutually exclusive fields), ingest never metering
//! them (natively or in the edge's snapshot), products grouping by their columns, and previews
//! refusing them.

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use tally_central::store::Env;

use crate::edge_internal::signed;
use crate::store_conformance::Backend;
use crate::support::*;

const SBX: Env = Env::Sandbox;
const NOW: &str = "2024-10-15T12:00:00Z";
const START: &str = "2024-10-01T00:00:00Z";

const QUICKSTART: &str =
    "SELECT count(DISTINCT properties.user_id) AS value, properties.region AS region \
                          FROM events WHERE event_type = 'api_call' GROUP BY properties.region";

async fn sql_metric(app: &TestApp, name: &str, sql: &str) -> String {
    app.metric(SBX, json!({ "name": name, "sql": sql })).await
}

#[tokio::test]
async fn create_get_and_list_show_the_query() {
    let app = TestApp::new(NOW).await;
    let id = sql_metric(&app, "unique users", QUICKSTART).await;
    let got = app
        .get(&format!("/v1/billable-metrics/{id}"))
        .await
        .expect(StatusCode::OK)
        .data();
    assert_eq!(
        got,
        json!({
            "id": id, "name": "unique users", "aggregation_type": "custom_sql",
            "sql": QUICKSTART, "group_keys": [["region"]], "custom_fields": {},
        })
    );
    // Without group columns there are no group keys; custom fields are kept.
    let total = app
        .metric(
            SBX,
            json!({
                "name": "total", "custom_fields": { "team": "a" },
                "sql": "SELECT SUM(properties.n) AS value FROM events WHERE properties.n > 0",
            }),
        )
        .await;
    let listed = app
        .get("/v1/billable-metrics")
        .await
        .expect(StatusCode::OK)
        .data();
    let listed = listed.as_array().expect("list");
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0], got);
    assert_eq!(listed[1]["id"], json!(total));
    assert_eq!(listed[1]["aggregation_type"], json!("custom_sql"));
    assert_eq!(listed[1]["custom_fields"], json!({ "team": "a" }));
    assert!(listed[1].get("group_keys").is_none(), "{}", listed[1]);
    // Archiving works as for any metric.
    app.post("/v1/billable-metrics/archive", json!({ "id": total }))
        .await
        .expect(StatusCode::OK);
    let active = app.get("/v1/billable-metrics").await.data();
    assert_eq!(active.as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn refusals_name_the_problem_and_create_nothing() {
    let app = TestApp::new(NOW).await;
    let ok = "SELECT COUNT(*) AS value FROM events";
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({ "name": "a", "sql": ok, "aggregation_type": "COUNT" }),
            "aggregation_type",
        ),
        (
            json!({ "name": "a", "sql": ok, "aggregation_key": "n", "group_keys": [["r"]] }),
            "aggregation_key, group_keys",
        ),
        (
            json!({ "name": "a", "sql": ok, "event_type_filter": { "in_values": ["x"] } }),
            "event_type_filter",
        ),
        (
            json!({ "name": "a", "sql": ok, "property_filters": [{ "name": "x", "exists": true }] }),
            "property_filters",
        ),
        (
            json!({ "name": "a", "aggregation_type": "custom_sql" }),
            "custom_sql",
        ),
        (
            json!({ "name": "a", "sql": "DROP TABLE events" }),
            "only a SELECT",
        ),
        (
            json!({ "name": "a", "sql": "DELETE FROM usage_hourly" }),
            "only a SELECT",
        ),
        (
            json!({ "name": "a", "sql": format!("{ok}; DELETE FROM events") }),
            "exactly one statement",
        ),
        (
            json!({ "name": "a", "sql": "SELECT COUNT(*) AS value FROM tokens" }),
            "only the events table",
        ),
        (
            json!({ "name": "a", "sql": "SELECT COUNT(*) AS value FROM events JOIN customers ON 1 = 1" }),
            "joins",
        ),
        (
            json!({ "name": "a", "sql": "SELECT COUNT(*) AS value FROM events WHERE customer_id IN (SELECT id FROM customers)" }),
            "subqueries",
        ),
        (
            json!({ "name": "a", "sql": "SELECT pg_read_file('/etc/passwd') AS value FROM events" }),
            "not allowed",
        ),
        (
            json!({ "name": "a", "sql": "SELECT * FROM events" }),
            "SELECT *",
        ),
        (
            json!({ "name": "a", "sql": "SELECT properties.user_id FROM events" }),
            "raw rows",
        ),
        (
            json!({ "name": "a", "sql": "SELECT COUNT(*) FROM events" }),
            "AS value",
        ),
        (
            json!({ "name": "a", "sql": format!("{ok} LIMIT 10") }),
            "LIMIT",
        ),
        (
            json!({ "name": "a", "sql": format!("{ok} WHERE event_type IN ({})", vec!["'x'"; 1500].join(",")) }),
            "4096 characters",
        ),
        (json!({ "name": "a", "sql": "" }), "empty"),
    ];
    for (body, expected) in cases {
        let r = app
            .post("/v1/billable-metrics/create", body.clone())
            .await
            .client_error(StatusCode::BAD_REQUEST);
        assert!(
            r.message().contains(expected),
            "{body}: {:?} should mention {expected:?}",
            r.message()
        );
    }
    let all = app
        .get("/v1/billable-metrics?include_archived=true")
        .await
        .data();
    assert_eq!(all, json!([]));
}

/// Ingest never meters an SQL metric: no usage rows, no place in the edge's metric snapshot,
/// while a COUNT metric beside it meters as usual.
#[tokio::test]
async fn ingest_skips_sql_metrics() {
    let app = TestApp::new(NOW).await;
    let sql = sql_metric(&app, "unique users", QUICKSTART).await;
    let count = app
        .metric(SBX, json!({ "name": "calls", "aggregation_type": "COUNT" }))
        .await;
    let customer = app.customer(SBX, "acme", &["acme"]).await;
    let data = app
        .ingest(
            SBX,
            json!([
                event(
                    "t1",
                    "acme",
                    "api_call",
                    "2024-10-15T10:00:00Z",
                    json!({ "user_id": "u1", "region": "eu" })
                ),
                event(
                    "t2",
                    &customer,
                    "api_call",
                    "2024-10-15T11:00:00Z",
                    json!({ "user_id": "u2", "region": "eu" })
                ),
            ]),
        )
        .await;
    assert_eq!(data["accepted"], json!(2), "{data}");
    let refs = vec!["acme".to_string(), customer.clone()];
    let rows = |metric: String| {
        let st = app.state.clone();
        let refs = refs.clone();
        async move {
            st.stores
                .usage
                .usage_rows(SBX, &refs, &[metric], ms(START), ms("2024-11-01T00:00:00Z"))
                .await
                .expect("rows")
        }
    };
    assert!(rows(sql.clone()).await.is_empty());
    assert_eq!(rows(count.clone()).await.len(), 2);
    let snap = signed(
        &app,
        Method::GET,
        "/internal/v1/metrics?env=sandbox",
        b"",
        EDGE_KEY,
        ms(NOW),
    )
    .await
    .expect(StatusCode::OK);
    let ids: Vec<&Value> = snap.body["metrics"]
        .as_array()
        .expect("metrics")
        .iter()
        .map(|m| &m["id"])
        .collect();
    assert_eq!(ids, [&json!(count)]);
}

/// A product on an SQL metric groups by the query's columns, and only by them.
#[tokio::test]
async fn products_group_by_the_query_columns() {
    let app = TestApp::new(NOW).await;
    let metric = sql_metric(&app, "unique users", QUICKSTART).await;
    app.usage_product(
        SBX,
        "users",
        &metric,
        json!({ "pricing_group_key": ["region"] }),
    )
    .await;
    app.usage_product(
        SBX,
        "users shown",
        &metric,
        json!({ "presentation_group_key": ["region"] }),
    )
    .await;
    let r = app
        .post(
            "/v1/contract-pricing/products/create",
            json!({
                "name": "bad", "type": "USAGE", "billable_metric_id": metric,
                "pricing_group_key": ["user_id"],
            }),
        )
        .await
        .client_error(StatusCode::BAD_REQUEST);
    assert!(r.message().contains("group"), "{}", r.message());
}

/// Previews price hourly usage, which an SQL metric does not have: a customer whose contract
/// prices one gets a 400 from previewEvents and from the browser's pricing snapshot.
#[tokio::test]
async fn previews_refuse_sql_metrics() {
    let app = TestApp::new(NOW).await;
    let metric = sql_metric(&app, "unique users", QUICKSTART).await;
    let product = app.usage_product(SBX, "users", &metric, json!({})).await;
    let card = app.rate_card(SBX, "card").await;
    app.flat_rate(SBX, &card, &product, "2", START).await;
    let customer = app.customer(SBX, "acme", &["acme"]).await;
    app.contract(SBX, &customer, &card, START).await;
    let events =
        json!({ "events": [{ "event_type": "api_call", "properties": { "user_id": "u1" } }] });
    let r = app
        .post(&format!("/v1/customers/{customer}/previewEvents"), events)
        .await
        .client_error(StatusCode::BAD_REQUEST);
    assert!(
        r.message().contains("SQL billable metric"),
        "{}",
        r.message()
    );
    assert!(r.message().contains(&metric), "{}", r.message());
    let r = app
        .get(&format!("/v1/customers/{customer}/pricingSnapshot"))
        .await
        .client_error(StatusCode::BAD_REQUEST);
    assert!(
        r.message().contains("SQL billable metric"),
        "{}",
        r.message()
    );
}

// ---------------------------------------------------------------------------------------------
// Rating: SQL metrics priced on invoices from the event store, on both backends.

/// `(product, presentation groups, quantity, unit price, total)` of each line.
fn lines(inv: &Value) -> Vec<(String, Value, String, String, String)> {
    inv["line_items"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|l| {
            (
                text(l, "product_id").to_string(),
                l["presentation_group_values"].clone(),
                num(&l["quantity"]),
                num(&l["unit_price"]),
                num(&l["total"]),
            )
        })
        .collect()
}

/// A card pricing `metric`'s product (with `extra` fields) FLAT `price` from START, and a
/// monthly contract for a customer with alias `acme`: (customer, product, rate card).
async fn priced(
    app: &TestApp,
    metric: &str,
    price: &str,
    extra: Value,
) -> (String, String, String) {
    let product = app.usage_product(SBX, "sql product", metric, extra).await;
    let card = app.rate_card(SBX, "card").await;
    app.flat_rate(SBX, &card, &product, price, START).await;
    let customer = app.customer(SBX, "acme", &["acme"]).await;
    app.contract(SBX, &customer, &card, START).await;
    (customer, product, card)
}

/// Metronome's quickstart, unique users per region, on October's invoice: events under the
/// customer's alias and its id both count; the period's first and last milliseconds are in,
/// the next period's first and the previous period's last are out, and so are other event
/// types and other customers' events.
async fn quickstart_unique_users_per_region_on_the_invoice(backend: Backend) {
    let app = TestApp::on_backend("2024-10-31T12:00:00Z", backend).await;
    let metric = sql_metric(&app, "unique users", QUICKSTART).await;
    let (customer, product, _) = priced(
        &app,
        &metric,
        "2",
        json!({ "presentation_group_key": ["region"] }),
    )
    .await;
    let other = app.customer(SBX, "other", &["other"]).await;
    let call = |tid: &str, who: &str, at: &str, user: &str, region: &str| {
        event(
            tid,
            who,
            "api_call",
            at,
            json!({ "user_id": user, "region": region }),
        )
    };
    let data = app
        .ingest(
            SBX,
            json!([
                call("t1", "acme", "2024-10-01T00:00:00Z", "u1", "eu"),
                call("t2", "acme", "2024-10-05T10:00:00Z", "u1", "eu"),
                call("t3", &customer, "2024-10-06T10:00:00Z", "u2", "eu"),
                call("t4", "acme", "2024-10-07T10:00:00Z", "u1", "us"),
                call("t5", "acme", "2024-10-31T23:59:59.999Z", "u3", "us"),
                call("t6", "acme", "2024-11-01T00:00:00Z", "u4", "eu"),
                call("t7", "acme", "2024-09-30T23:59:59.999Z", "u5", "us"),
                event(
                    "t8",
                    "acme",
                    "login",
                    "2024-10-08T10:00:00Z",
                    json!({ "user_id": "u9", "region": "eu" })
                ),
                call("t9", &other, "2024-10-08T10:00:00Z", "u6", "eu"),
                call("t10", "acme", "2024-10-09T10:00:00Z", "u7", "eu"),
                call("t10", "acme", "2024-10-09T10:00:00Z", "u8", "eu"),
            ]),
        )
        .await;
    // t10 twice: the second is a duplicate, counted nowhere.
    assert_eq!(data["accepted"], json!(10), "{data}");
    // Event search names the SQL metric for the api_call events its WHERE passes, not for the
    // login or the duplicate delivery.
    let found = app
        .post(
            "/v1/events/search",
            json!({ "transactionIds": ["t1", "t8", "t10"] }),
        )
        .await
        .expect(StatusCode::OK)
        .body;
    let matched: Vec<(String, bool, Vec<Value>)> = found
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let ms = e["matched_billable_metrics"].as_array().unwrap();
            (
                text(e, "transaction_id").to_string(),
                e["is_duplicate"].as_bool().unwrap(),
                ms.iter()
                    .map(|m| json!([m["id"], m["aggregation_type"], m["sql"]]))
                    .collect(),
            )
        })
        .collect();
    let sql = json!([metric, "custom_sql", QUICKSTART]);
    assert_eq!(
        matched,
        [
            ("t1".to_string(), false, vec![sql.clone()]),
            ("t10".to_string(), false, vec![sql]),
            ("t10".to_string(), true, vec![]),
            ("t8".to_string(), false, vec![]),
        ]
    );
    // October: eu = {u1, u2, u7} = 3 users, us = {u1, u3} = 2; FLAT 2 each: 6 + 4 = 10.
    let oct = app.invoice_at(SBX, &customer, "2024-10-15T00:00:00Z").await;
    assert_eq!(
        lines(&oct),
        [
            (
                product.clone(),
                json!({ "region": "eu" }),
                "3".into(),
                "2".into(),
                "6".into()
            ),
            (
                product.clone(),
                json!({ "region": "us" }),
                "2".into(),
                "2".into(),
                "4".into()
            ),
        ],
        "{oct}"
    );
    assert_eq!(num(&oct["total"]), "10");
    // November (now begun): t6 alone, eu = {u4}.
    app.set_now("2024-11-01T12:00:00Z");
    let nov = app.invoice_at(SBX, &customer, "2024-11-01T00:00:00Z").await;
    assert_eq!(
        lines(&nov),
        [(
            product.clone(),
            json!({ "region": "eu" }),
            "1".into(),
            "2".into(),
            "2".into()
        )],
        "{nov}"
    );
    // Finalized after the grace period, October keeps its numbers.
    app.set_now("2024-11-02T01:00:00Z");
    app.run_jobs().await;
    let oct = app.invoice_at(SBX, &customer, "2024-10-15T00:00:00Z").await;
    assert_eq!(text(&oct, "status"), "FINALIZED");
    assert_eq!(num(&oct["total"]), "10");
}

/// A SUM with a WHERE: only `model = 'gpt'` events with more than 10 tokens, numerically
/// (10 is not more than 10; "abc" is no number; 1e2 is 100).
async fn sum_with_where_on_the_invoice(backend: Backend) {
    let app = TestApp::on_backend("2024-10-20T12:00:00Z", backend).await;
    let metric = sql_metric(
        &app,
        "gpt tokens",
        "SELECT SUM(properties.tokens) AS value FROM events \
         WHERE properties.model = 'gpt' AND properties.tokens > 10",
    )
    .await;
    let (customer, product, _) = priced(&app, &metric, "0.1", Value::Null).await;
    let llm = |tid: &str, model: &str, tokens: Value| {
        event(
            tid,
            "acme",
            "llm",
            "2024-10-10T10:00:00Z",
            json!({ "model": model, "tokens": tokens }),
        )
    };
    app.ingest(
        SBX,
        json!([
            llm("a", "gpt", json!(10)),
            llm("b", "gpt", dec("10.5")),
            llm("c", "gpt", dec("0.25")),
            llm("d", "gpt", json!("abc")),
            llm("e", "gpt", dec("1e2")),
            llm("f", "claude", json!(1000)),
            event(
                "g",
                "acme",
                "llm",
                "2024-10-10T10:00:00Z",
                json!({ "tokens": 500 })
            ),
        ]),
    )
    .await;
    // 10.5 + 100 = 110.5 tokens at 0.1 = 11.05.
    let inv = app.invoice_at(SBX, &customer, "2024-10-15T00:00:00Z").await;
    assert_eq!(
        lines(&inv),
        [(
            product,
            Value::Null,
            "110.5".into(),
            "0.1".into(),
            "11.05".into()
        )],
        "{inv}"
    );
    assert_eq!(num(&inv["total"]), "11.05");
}

both_backends!(
    quickstart_unique_users_per_region_on_the_invoice,
    sum_with_where_on_the_invoice
);

/// A rate change inside the period splits it: each side runs the query on its own events and
/// is priced at its own rate. u1 is active on both sides, so it counts on each.
#[tokio::test]
async fn a_rate_change_splits_the_query_window() {
    let app = TestApp::new("2024-10-25T12:00:00Z").await;
    let metric = sql_metric(
        &app,
        "users",
        "SELECT COUNT(DISTINCT properties.user_id) AS value FROM events",
    )
    .await;
    let (customer, product, card) = priced(&app, &metric, "2", Value::Null).await;
    let user = |tid: &str, at: &str, u: &str| event(tid, "acme", "x", at, json!({ "user_id": u }));
    app.ingest(
        SBX,
        json!([
            user("a", "2024-10-02T00:00:00Z", "u1"),
            user("b", "2024-10-03T00:00:00Z", "u2"),
            user("c", "2024-10-15T23:59:59.999Z", "u2"),
            user("d", "2024-10-16T00:00:00Z", "u1"),
            user("e", "2024-10-21T00:00:00Z", "u3"),
        ]),
    )
    .await;
    // Before the change the invoice is one window: {u1, u2, u3} = 3 at 2 = 6.
    let inv = app.invoice_at(SBX, &customer, "2024-10-15T00:00:00Z").await;
    assert_eq!(num(&inv["total"]), "6", "{inv}");
    app.flat_rate(SBX, &card, &product, "3", "2024-10-16T00:00:00Z")
        .await;
    // [Oct 1, Oct 16): {u1, u2} = 2 at 2 = 4; [Oct 16, Nov 1): {u1, u3} = 2 at 3 = 6.
    let inv = app.invoice_at(SBX, &customer, "2024-10-15T00:00:00Z").await;
    let (lines, total) = line_summary(&inv);
    let qpt: Vec<[&str; 3]> = lines
        .iter()
        .map(|l| [l[0].as_str(), l[1].as_str(), l[2].as_str()])
        .collect();
    assert_eq!(qpt, [["2", "2", "4"], ["2", "3", "6"]], "{inv}");
    assert_eq!(total, "10");
}

/// More groups than `MAX_GROUPS` in one window: the invoice read fails with a message naming
/// the metric (422), rather than billing a truncated list of groups.
#[tokio::test]
async fn too_many_groups_is_a_clear_error() {
    let app = TestApp::new("2024-10-20T12:00:00Z").await;
    let metric = sql_metric(
        &app,
        "per user",
        "SELECT COUNT(*) AS value, properties.u AS u FROM events GROUP BY u",
    )
    .await;
    let (customer, _, _) = priced(&app, &metric, "1", Value::Null).await;
    let n = tally_core::sql_metric::MAX_GROUPS + 1;
    for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
        let events: Vec<Value> = chunk
            .iter()
            .map(|i| {
                event(
                    &format!("t{i}"),
                    "acme",
                    "x",
                    "2024-10-10T00:00:00Z",
                    json!({ "u": i.to_string() }),
                )
            })
            .collect();
        app.ingest(SBX, Value::Array(events)).await;
    }
    let r = app
        .get(&format!("/v1/customers/{customer}/invoices"))
        .await
        .client_error(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.message().contains(&metric), "{}", r.message());
    assert!(
        r.message().contains("more than 10000 groups"),
        "{}",
        r.message()
    );
}
