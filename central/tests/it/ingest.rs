//! `POST /v1/ingest`: per-event results, whole-request refusals, gzip, dedupe, the time window,
//! concurrency through group commit, and alias attribution.

use std::collections::HashSet;
use std::io::Write;
use std::sync::Arc;

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use tally_central::store::Env;

use crate::support::*;

const NOW: &str = "2024-10-15T12:00:00Z";
const START: &str = "2024-10-01T00:00:00Z";
const AT: &str = "2024-10-10T08:30:00Z";
const SBX: Env = Env::Sandbox;

/// The current (October) invoice's total for the customer.
async fn october_total(app: &TestApp, customer: &str) -> String {
    num(&app.invoice_at(SBX, customer, AT).await["total"])
}

fn calls(prefix: &str, n: usize, customer: &str) -> Value {
    Value::Array(
        (0..n)
            .map(|i| event(&format!("{prefix}{i}"), customer, "call", AT, json!({})))
            .collect(),
    )
}

#[tokio::test]
async fn per_event_results() {
    let app = TestApp::new(NOW).await;
    let b = Billing::count(&app, SBX, "call", "1", "acme", START).await;
    let events = json!([
        event("ok-1", "acme", "call", AT, json!({})),
        { "customer_id": "acme", "event_type": "call", "timestamp": AT },
        event("ok-1", "acme", "call", AT, json!({})),
        event("bad-ts", "acme", "call", "yesterday", json!({})),
        event("ok-2", &b.customer, "call", AT, json!({ "n": 1.5, "flag": true })),
        "not an object",
        event("bad-props", "acme", "call", AT, json!({ "nested": { "a": 1 } })),
        { "transaction_id": "no-type", "customer_id": "acme", "timestamp": AT },
    ]);
    let r = app
        .post("/v1/ingest", events)
        .await
        .expect(StatusCode::OK)
        .body;
    let data = &r["data"];
    assert_eq!(data["accepted"], 2);
    assert_eq!(data["duplicates"], 1);
    let rejected = data["rejected"].as_array().expect("rejected");
    let summary: Vec<(u64, Value)> = rejected
        .iter()
        .map(|x| {
            (
                x["index"].as_u64().expect("index"),
                x["transaction_id"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, Value::Null),
            (3, json!("bad-ts")),
            (5, Value::Null),
            (6, json!("bad-props")),
            (7, json!("no-type")),
        ]
    );
    for x in rejected {
        assert!(!text(x, "message").is_empty());
    }
    assert!(text(&rejected[0], "message").contains("transaction_id"));
    assert!(text(&rejected[1], "message").contains("timestamp"));
    assert!(text(&rejected[4], "message").contains("event_type"));
    // Both accepted events count, by alias and by customer id.
    assert_eq!(october_total(&app, &b.customer).await, "2");
    // A rejected event's id was not claimed: a corrected resend is accepted.
    let r = app
        .ingest(SBX, json!([event("bad-ts", "acme", "call", AT, json!({}))]))
        .await;
    assert_eq!(r, json!({ "accepted": 1, "duplicates": 0, "rejected": [] }));
    assert_eq!(october_total(&app, &b.customer).await, "3");
}

#[tokio::test]
async fn whole_request_refusals_store_nothing() {
    let app = TestApp::new(NOW).await;
    let b = Billing::count(&app, SBX, "call", "1", "acme", START).await;
    let big_padding = " ".repeat(1 << 20);
    let one = serde_json::to_string(&calls("pad-", 1, "acme")).expect("json");
    let oversized = format!("{}{big_padding}]", &one[..one.len() - 1]);
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("object", br#"{"transaction_id":"x"}"#.to_vec()),
        ("empty array", b"[]".to_vec()),
        ("not json", b"[{".to_vec()),
        ("empty body", Vec::new()),
        (
            "101 events",
            serde_json::to_vec(&calls("many-", 101, "acme")).expect("json"),
        ),
        ("over 1 MiB", oversized.into_bytes()),
    ];
    for (what, body) in bodies {
        let r = app
            .post_raw("/v1/ingest", Some(&body))
            .await
            .client_error(StatusCode::BAD_REQUEST);
        assert!(!r.message().is_empty(), "{what}");
    }
    assert_eq!(october_total(&app, &b.customer).await, "0");
    // None of the refused requests claimed its transaction ids.
    let r = app.ingest(SBX, calls("many-", 100, "acme")).await;
    assert_eq!(r["accepted"], 100);
    let r = app.ingest(SBX, calls("pad-", 1, "acme")).await;
    assert_eq!(r["accepted"], 1);
    assert_eq!(october_total(&app, &b.customer).await, "101");
}

#[tokio::test]
async fn a_gzip_body_is_accepted() {
    let app = TestApp::new(NOW).await;
    let b = Billing::count(&app, SBX, "call", "1", "acme", START).await;
    let json = serde_json::to_vec(&calls("gz-", 30, "acme")).expect("json");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&json).expect("gzip");
    let gz = enc.finish().expect("gzip");
    assert_ne!(gz, json);
    let r = app
        .send(
            Method::POST,
            "/v1/ingest",
            Some(app.token(SBX)),
            Some(gz.clone()),
            &[("content-encoding", "gzip")],
        )
        .await
        .data();
    assert_eq!(r["accepted"], 30);
    assert_eq!(october_total(&app, &b.customer).await, "30");
    // The same compressed request again: all duplicates.
    let r = app
        .send(
            Method::POST,
            "/v1/ingest",
            Some(app.token(SBX)),
            Some(gz),
            &[("content-encoding", "gzip")],
        )
        .await
        .data();
    assert_eq!(r["duplicates"], 30);
    assert_eq!(october_total(&app, &b.customer).await, "30");
}

#[tokio::test]
async fn an_unsupported_content_encoding_is_a_json_415_that_changes_nothing() {
    let app = TestApp::new(NOW).await;
    let b = Billing::count(&app, SBX, "call", "1", "acme", START).await;
    let json = serde_json::to_vec(&calls("br-", 3, "acme")).expect("json");
    for encoding in ["br", "deflate", "x-gzip", "GZIP", "gzip, br"] {
        let r = app
            .send(
                Method::POST,
                "/v1/ingest",
                Some(app.token(SBX)),
                Some(json.clone()),
                &[("content-encoding", encoding)],
            )
            .await;
        assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{encoding}");
        assert_eq!(
            r.message(),
            format!("unsupported Content-Encoding {encoding:?}: send gzip or an unencoded body")
        );
        assert_eq!(r.header("accept-encoding"), Some("gzip"));
        assert_eq!(r.header("x-should-retry"), Some("false"));
        assert_eq!(
            r.header("content-type"),
            Some("application/json"),
            "{encoding}"
        );
    }
    // Two Content-Encoding headers are read as their list, as a proxy would join them.
    let r = app
        .send(
            Method::POST,
            "/v1/ingest",
            Some(app.token(SBX)),
            Some(json.clone()),
            &[("content-encoding", "gzip"), ("content-encoding", "gzip")],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(
        r.message(),
        r#"unsupported Content-Encoding "gzip, gzip": send gzip or an unencoded body"#
    );
    // The token is checked first; `identity` is the body as is.
    let r = app
        .send(
            Method::POST,
            "/v1/ingest",
            Some("tally_sbx_wrong"),
            Some(json.clone()),
            &[("content-encoding", "br")],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(october_total(&app, &b.customer).await, "0");
    let r = app
        .send(
            Method::POST,
            "/v1/ingest",
            Some(app.token(SBX)),
            Some(json),
            &[("content-encoding", "identity")],
        )
        .await
        .data();
    assert_eq!(r["accepted"], 3);
    assert_eq!(october_total(&app, &b.customer).await, "3");
}

#[tokio::test]
async fn a_corrupt_gzip_body_is_a_clear_400_and_a_gzip_bomb_hits_the_size_limit() {
    let app = TestApp::new(NOW).await;
    let b = Billing::count(&app, SBX, "call", "1", "acme", START).await;
    let send = |body: Vec<u8>| {
        app.send(
            Method::POST,
            "/v1/ingest",
            Some(app.token(SBX)),
            Some(body),
            &[("content-encoding", "gzip")],
        )
    };
    let r = send(b"not gzip at all".to_vec()).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.message(), "request body is not valid gzip");
    // 4 MiB of spaces compress to a few KiB; decoded, they exceed the 1 MiB limit.
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(&vec![b' '; 4 << 20]).expect("gzip");
    let r = send(enc.finish().expect("gzip")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.message().contains("exceeds"), "{}", r.message());
    assert_eq!(october_total(&app, &b.customer).await, "0");
}

#[tokio::test]
async fn duplicates_count_once() {
    let app = TestApp::new(NOW).await;
    let b = Billing::count(&app, SBX, "call", "5", "acme", START).await;
    // Within one request.
    let r = app
        .ingest(
            SBX,
            json!([
                event("a", "acme", "call", AT, json!({})),
                event("a", "acme", "call", AT, json!({})),
                event("b", "acme", "call", AT, json!({})),
                event("a", "acme", "call", "2024-10-11T00:00:00Z", json!({})),
            ]),
        )
        .await;
    assert_eq!(r["accepted"], 2);
    assert_eq!(r["duplicates"], 2);
    assert_eq!(october_total(&app, &b.customer).await, "10");
    // Across requests (by alias or by customer id, the key is the transaction id).
    let r = app
        .ingest(
            SBX,
            json!([
                event("b", &b.customer, "call", AT, json!({})),
                event("c", "acme", "call", AT, json!({})),
            ]),
        )
        .await;
    assert_eq!(r["accepted"], 1);
    assert_eq!(r["duplicates"], 1);
    assert_eq!(october_total(&app, &b.customer).await, "15");
    // A retry of a whole request.
    let batch = calls("retry-", 20, "acme");
    let first = app.ingest(SBX, batch.clone()).await;
    assert_eq!(first["accepted"], 20);
    for _ in 0..3 {
        let again = app.ingest(SBX, batch.clone()).await;
        assert_eq!(
            again,
            json!({ "accepted": 0, "duplicates": 20, "rejected": [] })
        );
    }
    assert_eq!(october_total(&app, &b.customer).await, "115");
}

#[tokio::test]
async fn the_34_day_and_24_hour_window_edges() {
    // A long grace keeps September a draft, so backdated events stay visible on its invoice.
    let app = TestApp::with_grace(NOW, 40 * DAY_MS).await;
    let b = Billing::count(&app, SBX, "call", "1", "acme", "2024-09-01T00:00:00Z").await;
    let now = ms(NOW);
    let oldest = now - 34 * DAY_MS;
    let newest = now + DAY_MS;
    let cases = [
        ("too-old", oldest - 1, false),
        ("oldest", oldest, true),
        ("newest", newest, true),
        ("too-new", newest + 1, false),
    ];
    let events: Vec<Value> = cases
        .iter()
        .map(|(tid, at, _)| event(tid, "acme", "call", &ts(*at), json!({})))
        .collect();
    let r = app.ingest(SBX, Value::Array(events)).await;
    assert_eq!(r["accepted"], 2);
    let rejected = r["rejected"].as_array().expect("rejected");
    assert_eq!(rejected.len(), 2);
    assert_eq!(rejected[0]["index"], 0);
    assert_eq!(rejected[0]["transaction_id"], "too-old");
    assert!(text(&rejected[0], "message").contains("34 days"));
    assert_eq!(rejected[1]["index"], 3);
    assert_eq!(rejected[1]["transaction_id"], "too-new");
    assert!(text(&rejected[1], "message").contains("24 hours"));

    // 2024-09-11T12:00Z is in September, 2024-10-16T12:00Z in October: one each.
    let sept = app
        .invoice_at(SBX, &b.customer, "2024-09-11T12:00:00Z")
        .await;
    assert_eq!(sept["status"], "DRAFT");
    assert_eq!(num(&sept["total"]), "1");
    assert_eq!(num(&sept["line_items"][0]["quantity"]), "1");
    assert_eq!(october_total(&app, &b.customer).await, "1");

    // The window moves with the clock: a day later the "oldest" instant is too old.
    app.set_now_ms(now + DAY_MS);
    let r = app
        .ingest(
            SBX,
            json!([
                event("later-old", "acme", "call", &ts(oldest), json!({})),
                event("later-new", "acme", "call", &ts(newest + 1), json!({})),
            ]),
        )
        .await;
    assert_eq!(r["accepted"], 1);
    assert_eq!(r["rejected"][0]["transaction_id"], "later-old");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_count_each_distinct_event_once() {
    const TASKS: usize = 40;
    const PER_TASK: usize = 50;
    const POOL: usize = 300;
    let app = Arc::new(TestApp::new(NOW).await);
    let sum_metric = app
        .metric(
            SBX,
            json!({
                "name": "units", "aggregation_type": "SUM", "aggregation_key": "units",
                "event_type_filter": { "in_values": ["call"] },
            }),
        )
        .await;
    let b = Billing::count(&app, SBX, "call", "1", "acme", START).await;
    let units = app
        .usage_product(SBX, "units", &sum_metric, Value::Null)
        .await;
    app.flat_rate(SBX, &b.card, &units, "1", START).await;

    // Heavy overlap: each id of the pool is sent by several tasks, always with the same content.
    let id_of = |task: usize, j: usize| (task * 29 + j * 11) % POOL;
    let mut handles = Vec::new();
    for task in 0..TASKS {
        let app = app.clone();
        handles.push(tokio::spawn(async move {
            let events: Vec<Value> = (0..PER_TASK)
                .map(|j| {
                    let k = id_of(task, j);
                    event(
                        &format!("tx-{k}"),
                        "acme",
                        "call",
                        AT,
                        json!({ "units": k.to_string() }),
                    )
                })
                .collect();
            app.ingest(SBX, Value::Array(events)).await
        }));
    }
    let mut accepted = 0;
    let mut duplicates = 0;
    for h in handles {
        let r = h.await.expect("task");
        assert_eq!(r["rejected"], json!([]));
        accepted += r["accepted"].as_u64().expect("accepted");
        duplicates += r["duplicates"].as_u64().expect("duplicates");
    }
    let distinct: HashSet<usize> = (0..TASKS)
        .flat_map(|t| (0..PER_TASK).map(move |j| id_of(t, j)))
        .collect();
    assert!(
        distinct.len() < TASKS * PER_TASK / 2,
        "the test needs overlap"
    );
    assert_eq!(accepted as usize, distinct.len());
    assert_eq!((accepted + duplicates) as usize, TASKS * PER_TASK);

    let inv = app.invoice_at(SBX, &b.customer, AT).await;
    let lines = inv["line_items"].as_array().expect("lines");
    let line = |product: &str| {
        lines
            .iter()
            .find(|l| l["product_id"] == product)
            .unwrap_or_else(|| panic!("no line for {product}"))
    };
    let expected_sum: usize = distinct.iter().sum();
    assert_eq!(
        num(&line(&b.product)["quantity"]),
        distinct.len().to_string()
    );
    assert_eq!(num(&line(&units)["quantity"]), expected_sum.to_string());
    assert_eq!(
        num(&inv["total"]),
        (distinct.len() + expected_sum).to_string()
    );
}

#[tokio::test]
async fn unknown_customer_usage_follows_its_alias() {
    let app = TestApp::new(NOW).await;
    let b = Billing::count(&app, SBX, "call", "1", "acme", START).await;
    let other = app.customer(SBX, "other", &["other"]).await;
    app.contract(SBX, &other, &b.card, START).await;

    // Usage for an alias nobody has yet is accepted and kept.
    let r = app.ingest(SBX, calls("orphan-", 4, "future")).await;
    assert_eq!(r["accepted"], 4);
    assert_eq!(october_total(&app, &b.customer).await, "0");
    assert_eq!(october_total(&app, &other).await, "0");

    // Once the alias is set, the usage is attributed.
    app.post(
        &format!("/v1/customers/{}/setIngestAliases", b.customer),
        json!({ "ingest_aliases": ["acme", "future"] }),
    )
    .await
    .expect(StatusCode::OK);
    assert_eq!(october_total(&app, &b.customer).await, "4");
    app.ingest(SBX, calls("direct-", 2, "acme")).await;
    assert_eq!(october_total(&app, &b.customer).await, "6");

    // Moving the alias moves its usage, and only its usage.
    app.post(
        &format!("/v1/customers/{other}/setIngestAliases"),
        json!({ "ingest_aliases": ["other", "future"] }),
    )
    .await
    .client_error(StatusCode::CONFLICT);
    assert_eq!(october_total(&app, &b.customer).await, "6");
    app.post(
        &format!("/v1/customers/{}/setIngestAliases", b.customer),
        json!({ "ingest_aliases": ["acme"] }),
    )
    .await
    .expect(StatusCode::OK);
    app.post(
        &format!("/v1/customers/{other}/setIngestAliases"),
        json!({ "ingest_aliases": ["other", "future"] }),
    )
    .await
    .expect(StatusCode::OK);
    assert_eq!(october_total(&app, &b.customer).await, "2");
    assert_eq!(october_total(&app, &other).await, "4");
}

#[tokio::test]
async fn dedupe_keys_outlive_the_backdating_window() {
    let app = TestApp::with_grace(NOW, 60 * DAY_MS).await;
    let b = Billing::count(&app, SBX, "call", "1", "acme", START).await;
    let sent = ms(NOW);
    // Dated as far ahead as allowed, so it stays ingestible for as long as possible.
    let at = ts(sent + DAY_MS);
    let ev = json!([event("edge", "acme", "call", &at, json!({}))]);
    assert_eq!(app.ingest(SBX, ev.clone()).await["accepted"], 1);

    // 35 days later the event is exactly 34 days old: still ingestible, so still a duplicate,
    // even after the pruning job has run.
    app.set_now_ms(sent + 35 * DAY_MS);
    tally_central::service::jobs::run_jobs_once(&app.state)
        .await
        .expect("jobs");
    let r = app.ingest(SBX, ev.clone()).await;
    assert_eq!(r["duplicates"], 1, "{r}");
    // One millisecond later the key may be pruned, but the event is now too old to count.
    app.set_now_ms(sent + 35 * DAY_MS + 1);
    tally_central::service::jobs::run_jobs_once(&app.state)
        .await
        .expect("jobs");
    let r = app.ingest(SBX, ev).await;
    assert_eq!(r["accepted"], 0, "{r}");
    assert_eq!(r["rejected"][0]["transaction_id"], "edge");
    assert_eq!(october_total(&app, &b.customer).await, "1");
}

#[tokio::test]
async fn a_metric_meters_events_that_arrive_after_it_exists() {
    let app = TestApp::new(NOW).await;
    let b = Billing::count(&app, SBX, "call", "1", "acme", START).await;
    // The first ingest loads (and caches) the environment's metric definitions.
    app.ingest(SBX, calls("before-", 2, "acme")).await;
    assert_eq!(october_total(&app, &b.customer).await, "2");
    let sum = app
        .metric(
            SBX,
            json!({ "name": "units", "aggregation_type": "SUM", "aggregation_key": "units" }),
        )
        .await;
    let units = app.usage_product(SBX, "units", &sum, Value::Null).await;
    app.flat_rate(SBX, &b.card, &units, "10", START).await;
    let ev = |tid: &str| event(tid, "acme", "call", AT, json!({ "units": "4" }));
    app.ingest(SBX, json!([ev("after-0"), ev("after-1")])).await;
    let inv = app.invoice_at(SBX, &b.customer, AT).await;
    let line = inv["line_items"]
        .as_array()
        .expect("lines")
        .iter()
        .find(|l| l["product_id"] == units.as_str())
        .expect("units line")
        .clone();
    // Only the two events sent after the metric existed: 8 units at 10.
    assert_eq!(num(&line["quantity"]), "8");
    assert_eq!(num(&inv["total"]), "84");
}

/// Issue 19 item 6: a metric created while ingest requests run meters every event sent after its
/// create returned. An ingest that loaded the metric list before the create committed, and
/// cached it after the create cleared the cache, must not hide the new metric.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_metric_created_under_concurrent_ingest_meters_the_next_event() {
    const INGESTERS: usize = 8;
    const TRIALS: usize = 20;
    let app = Arc::new(TestApp::new(NOW).await);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut handles = Vec::new();
    for task in 0..INGESTERS {
        let (app, stop) = (app.clone(), stop.clone());
        handles.push(tokio::spawn(async move {
            let mut n = 0usize;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let events: Vec<Value> = (0..5)
                    .map(|j| {
                        json!({"transaction_id": format!("noise-{task}-{n}-{j}"), "customer_id": "acme",
                               "event_type": "noise", "timestamp": AT})
                    })
                    .collect();
                app.post("/v1/ingest", json!(events)).await.expect(StatusCode::OK);
                n += 1;
            }
        }));
    }
    let mut unmetered = Vec::new();
    for trial in 0..TRIALS {
        let kind = format!("kind-{trial}");
        // A first create makes every ingester reload the list; the second lands while they do.
        app.metric(
            SBX,
            json!({"name": "decoy", "aggregation_type": "COUNT",
                   "event_type_filter": {"in_values": ["decoy"]}}),
        )
        .await;
        let metric = app
            .metric(
                SBX,
                json!({"name": kind, "aggregation_type": "COUNT",
                       "event_type_filter": {"in_values": [kind]}}),
            )
            .await;
        let event = json!([{"transaction_id": format!("after-{trial}"), "customer_id": "acme",
                            "event_type": kind, "timestamp": AT}]);
        app.post("/v1/ingest", event).await.expect(StatusCode::OK);
        let rows = app
            .state
            .stores
            .usage
            .usage_rows(SBX, &["acme".into()], &[metric], 0, i64::MAX)
            .await
            .expect("usage rows");
        if rows.is_empty() {
            unmetered.push(trial);
        }
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for h in handles {
        h.await.expect("ingester");
    }
    assert!(
        unmetered.is_empty(),
        "trials whose new metric metered nothing: {unmetered:?}"
    );
}
