//! The internal edge endpoints: signed batches applied exactly once, the metric snapshot, token lookup.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, Method, Request, StatusCode};
use serde_json::{json, Value};
use tally_central::store::Env;
use tally_central::Settings;
use tally_core::batch::{sign, SignedRequest, SIGNATURE_HEADER, TIMESTAMP_HEADER};

use crate::limits::Stalled;
use crate::support::*;

const NOW: &str = "2024-09-20T12:00:00Z";

async fn signed(
    app: &TestApp,
    method: Method,
    path: &str,
    body: &[u8],
    key: &[u8],
    at_ms: i64,
) -> Resp {
    let sig = signature(method.as_str(), path, body, key, at_ms);
    send_signed(app, method, path, body, at_ms, &sig).await
}

/// The signature of `method path body` at `at_ms`.
fn signature(method: &str, path: &str, body: &[u8], key: &[u8], at_ms: i64) -> String {
    let req = SignedRequest {
        method,
        path_and_query: path,
        body,
    };
    sign(key, at_ms, &req)
}

/// Sends `method path body` with the given timestamp and signature headers.
async fn send_signed(
    app: &TestApp,
    method: Method,
    path: &str,
    body: &[u8],
    at_ms: i64,
    sig: &str,
) -> Resp {
    let ts = at_ms.to_string();
    let body = (method == Method::POST).then(|| body.to_vec());
    app.send(
        method,
        path,
        None,
        body,
        &[(TIMESTAMP_HEADER, &ts), (SIGNATURE_HEADER, sig)],
    )
    .await
}

fn batch(shard: &str, seq: u64, customer: &str, metric: &str, hour: &str, count: u64) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "shard_id": shard, "seq": seq, "metrics_version": 1,
        "partials": [{
            "env": "sandbox",
            "key": { "customer_ref": customer, "metric_id": metric, "groups": [], "hour_ms": ms(hour) },
            "acc": { "count": count },
        }],
    }))
    .unwrap()
}

#[tokio::test]
async fn a_signed_batch_is_merged_once_and_replays_change_nothing() {
    let app = TestApp::new(NOW).await;
    let b = Billing::count(
        &app,
        Env::Sandbox,
        "api_call",
        "2",
        "acme",
        "2024-09-01T00:00:00Z",
    )
    .await;
    let body = batch("shard-0", 1, "acme", &b.metric, "2024-09-20T10:00:00Z", 7);
    let ack = signed(
        &app,
        Method::POST,
        "/internal/v1/batches",
        &body,
        EDGE_KEY,
        ms(NOW),
    )
    .await
    .expect(StatusCode::OK);
    assert_eq!(ack.body["applied"], json!(true));
    assert!(ack.body["metrics_version"].as_u64().unwrap() >= 1);
    let total = |inv: Value| num(&inv["total"]);
    assert_eq!(
        total(
            app.invoice_at(Env::Sandbox, &b.customer, "2024-09-01T00:00:00Z")
                .await
        ),
        "14"
    );

    // The same (shard, seq) again, even with different content, is a no-op that still answers 200.
    let replay = batch(
        "shard-0",
        1,
        "acme",
        &b.metric,
        "2024-09-20T10:00:00Z",
        1000,
    );
    let ack = signed(
        &app,
        Method::POST,
        "/internal/v1/batches",
        &replay,
        EDGE_KEY,
        ms(NOW),
    )
    .await
    .expect(StatusCode::OK);
    assert_eq!(ack.body["applied"], json!(false));
    assert_eq!(
        total(
            app.invoice_at(Env::Sandbox, &b.customer, "2024-09-01T00:00:00Z")
                .await
        ),
        "14"
    );

    // The next seq merges with what is there.
    let next = batch("shard-0", 2, "acme", &b.metric, "2024-09-20T10:00:00Z", 3);
    signed(
        &app,
        Method::POST,
        "/internal/v1/batches",
        &next,
        EDGE_KEY,
        ms(NOW),
    )
    .await
    .expect(StatusCode::OK);
    assert_eq!(
        total(
            app.invoice_at(Env::Sandbox, &b.customer, "2024-09-01T00:00:00Z")
                .await
        ),
        "20"
    );
}

#[tokio::test]
async fn bad_signatures_and_stale_timestamps_are_refused_and_change_nothing() {
    let app = TestApp::new(NOW).await;
    let b = Billing::count(
        &app,
        Env::Sandbox,
        "api_call",
        "2",
        "acme",
        "2024-09-01T00:00:00Z",
    )
    .await;
    let body = batch("shard-0", 1, "acme", &b.metric, "2024-09-20T10:00:00Z", 7);
    let wrong_key = signed(
        &app,
        Method::POST,
        "/internal/v1/batches",
        &body,
        b"not-the-key",
        ms(NOW),
    )
    .await;
    assert_eq!(wrong_key.status, StatusCode::UNAUTHORIZED);
    let stale = signed(
        &app,
        Method::POST,
        "/internal/v1/batches",
        &body,
        EDGE_KEY,
        ms(NOW) - 10 * 60 * 1000,
    )
    .await;
    assert_eq!(stale.status, StatusCode::UNAUTHORIZED);
    let unsigned = app
        .send(
            Method::POST,
            "/internal/v1/batches",
            None,
            Some(body.clone()),
            &[],
        )
        .await;
    assert_eq!(unsigned.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        num(&app
            .invoice_at(Env::Sandbox, &b.customer, "2024-09-01T00:00:00Z")
            .await["total"]),
        "0"
    );
    // A refused batch did not burn its seq: the genuine delivery still applies.
    let ok = signed(
        &app,
        Method::POST,
        "/internal/v1/batches",
        &body,
        EDGE_KEY,
        ms(NOW),
    )
    .await
    .expect(StatusCode::OK);
    assert_eq!(ok.body["applied"], json!(true));
}

#[tokio::test]
async fn metric_snapshot_and_token_lookup() {
    let app = TestApp::new(NOW).await;
    let b = Billing::count(
        &app,
        Env::Sandbox,
        "api_call",
        "2",
        "acme",
        "2024-09-01T00:00:00Z",
    )
    .await;
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
    let metrics = snap.body["metrics"].as_array().unwrap();
    assert_eq!(metrics.len(), 1);
    assert_eq!(metrics[0]["id"], json!(b.metric));
    let v1 = snap.body["version"].as_u64().unwrap();
    let prod = signed(
        &app,
        Method::GET,
        "/internal/v1/metrics?env=production",
        b"",
        EDGE_KEY,
        ms(NOW),
    )
    .await
    .expect(StatusCode::OK);
    assert_eq!(prod.body["metrics"], json!([]));
    app.metric(
        Env::Production,
        json!({ "name": "n", "aggregation_type": "COUNT" }),
    )
    .await;
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
    assert!(
        snap.body["version"].as_u64().unwrap() > v1,
        "creating a metric anywhere bumps the version"
    );

    let hash = tally_central::auth::hash_token(app.token(Env::Production));
    let body = serde_json::to_vec(&json!({ "token_hash": hash })).unwrap();
    let found = signed(
        &app,
        Method::POST,
        "/internal/v1/tokens/lookup",
        &body,
        EDGE_KEY,
        ms(NOW),
    )
    .await
    .expect(StatusCode::OK);
    assert_eq!(found.body["env"], json!("production"));
    let body = serde_json::to_vec(&json!({ "token_hash": "00" })).unwrap();
    let missing = signed(
        &app,
        Method::POST,
        "/internal/v1/tokens/lookup",
        &body,
        EDGE_KEY,
        ms(NOW),
    )
    .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let forged = signed(
        &app,
        Method::POST,
        "/internal/v1/tokens/lookup",
        &body,
        b"guess",
        ms(NOW),
    )
    .await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED);
}

/// The quantity of `customer`'s rows of `metric` in the hour starting at `hour`, as stored.
async fn stored(app: &TestApp, customer: &str, metric: &str, hour: &str) -> String {
    let rows = app
        .state
        .stores
        .usage
        .usage_rows(
            Env::Sandbox,
            &[customer.to_string()],
            &[metric.to_string()],
            ms(hour),
            ms(hour) + 3_600_000,
        )
        .await
        .unwrap();
    rows.iter()
        .map(|r| r.acc.quantity())
        .sum::<rust_decimal::Decimal>()
        .to_string()
}

#[tokio::test]
async fn an_overflowing_partial_is_a_dead_letter_and_its_shard_moves_on() {
    let app = TestApp::new(NOW).await;
    let metric = app
        .metric(
            Env::Sandbox,
            json!({ "name": "tokens", "aggregation_type": "SUM", "aggregation_key": "tokens" }),
        )
        .await;
    let max = rust_decimal::Decimal::MAX.to_string();
    let (h10, h11) = ("2024-09-20T10:00:00Z", "2024-09-20T11:00:00Z");
    let ev = |tid: &str, tokens: &str| {
        event(
            tid,
            "acme",
            "api_call",
            "2024-09-20T10:30:00Z",
            json!({ "tokens": dec(tokens) }),
        )
    };
    // Native ingest fills the hour to the top of the range; one more token there is refused per
    // event (nothing stored, its key given back), while the request still answers 200.
    let out = app.ingest(Env::Sandbox, json!([ev("full", &max)])).await;
    assert_eq!(out["accepted"], json!(1));
    let out = app.ingest(Env::Sandbox, json!([ev("one-more", "1")])).await;
    assert_eq!(out["accepted"], json!(0));
    assert_eq!(
        out["rejected"][0]["message"],
        json!("event not counted: usage total overflows the decimal range")
    );

    // The edge's batch: its first and third partials would overflow the same row, its second
    // is fine (another customer).
    let partial_of = |customer: &str, hour: &str, sum: &str| {
        json!({
            "env": "sandbox",
            "key": { "customer_ref": customer, "metric_id": metric, "groups": [], "hour_ms": ms(hour) },
            "acc": { "sum": sum },
        })
    };
    let partial = |hour: &str, sum: &str| partial_of("acme", hour, sum);
    let batch = |seq: u64, partials: Value| {
        serde_json::to_vec(&json!({
            "shard_id": "shard-3.0f", "seq": seq, "metrics_version": 1, "partials": partials,
        }))
        .unwrap()
    };
    let post = |body: Vec<u8>| {
        let app = &app;
        async move {
            signed(
                app,
                Method::POST,
                "/internal/v1/batches",
                &body,
                EDGE_KEY,
                ms(NOW),
            )
            .await
            .expect(StatusCode::OK)
        }
    };
    let stats = || async {
        signed(
            &app,
            Method::GET,
            "/internal/v1/stats",
            b"",
            EDGE_KEY,
            ms(NOW),
        )
        .await
        .expect(StatusCode::OK)
        .body
    };
    assert_eq!(
        stats().await,
        json!({ "dead_letters": { "sandbox": 0, "production": 0 } })
    );
    let first = batch(
        1,
        json!([
            partial(h10, "5"),
            partial_of("beta", h11, "3"),
            partial(h10, "1")
        ]),
    );
    let ack = post(first.clone()).await;
    assert_eq!(ack.body["applied"], json!(true));
    assert_eq!(ack.body["dead_letters"], json!(2));
    assert_eq!(stored(&app, "acme", &metric, h10).await, max);
    assert_eq!(stored(&app, "beta", &metric, h11).await, "3");
    assert_eq!(stored(&app, "acme", &metric, h11).await, "0");
    assert_eq!(
        stats().await,
        json!({ "dead_letters": { "sandbox": 2, "production": 0 } })
    );
    let dead = app
        .state
        .stores
        .usage
        .dead_letters(Env::Sandbox, 10)
        .await
        .unwrap();
    assert_eq!(dead.len(), 2);
    assert_eq!(
        (dead[0].shard_id.as_str(), dead[0].seq, dead[0].index),
        ("shard-3.0f", 1, 0)
    );
    assert_eq!((dead[1].seq, dead[1].index), (1, 2));
    let kept: Value = serde_json::from_str(&dead[0].partial).unwrap();
    assert_eq!(kept, partial(h10, "5"));

    // A replay is still a no-op: nothing merged again, no second dead letter.
    let ack = post(first).await;
    assert_eq!(
        (&ack.body["applied"], &ack.body["dead_letters"]),
        (&json!(false), &json!(0))
    );
    assert_eq!(stored(&app, "beta", &metric, h11).await, "3");
    assert_eq!(stats().await["dead_letters"]["sandbox"], json!(2));

    // The shard's next batch is not blocked.
    let ack = post(batch(2, json!([partial_of("beta", h11, "4")]))).await;
    assert_eq!(
        (&ack.body["applied"], &ack.body["dead_letters"]),
        (&json!(true), &json!(0))
    );
    assert_eq!(stored(&app, "beta", &metric, h11).await, "7");

    // Stats are internal: signed like every edge endpoint.
    let unsigned = app
        .send(Method::GET, "/internal/v1/stats", None, None, &[])
        .await;
    assert_eq!(unsigned.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_signature_answers_only_its_own_method_path_and_query() {
    let app = TestApp::new(NOW).await;
    let sandbox = "/internal/v1/metrics?env=sandbox";
    let sig = signature("GET", sandbox, b"", EDGE_KEY, ms(NOW));
    for (method, path) in [
        (Method::GET, "/internal/v1/metrics?env=production"),
        (
            Method::GET,
            "/internal/v1/metrics?env=sandbox&env=production",
        ),
        (Method::GET, "/internal/v1/metrics"),
        (Method::GET, "/internal/v1/stats"),
        (Method::POST, "/internal/v1/tokens/lookup"),
    ] {
        let replay = send_signed(&app, method, path, b"", ms(NOW), &sig).await;
        assert_eq!(replay.status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(replay.message(), "signature does not match", "{path}");
    }
    send_signed(&app, Method::GET, sandbox, b"", ms(NOW), &sig)
        .await
        .expect(StatusCode::OK);

    // A signed token lookup is not a signed batch, even with the same body.
    let hash = tally_central::auth::hash_token(app.token(Env::Sandbox));
    let body = serde_json::to_vec(&json!({ "token_hash": hash })).unwrap();
    let lookup = "/internal/v1/tokens/lookup";
    let sig = signature("POST", lookup, &body, EDGE_KEY, ms(NOW));
    let replay = send_signed(
        &app,
        Method::POST,
        "/internal/v1/batches",
        &body,
        ms(NOW),
        &sig,
    )
    .await;
    assert_eq!(replay.status, StatusCode::UNAUTHORIZED);
    let found = send_signed(&app, Method::POST, lookup, &body, ms(NOW), &sig)
        .await
        .expect(StatusCode::OK);
    assert_eq!(found.body["env"], json!("sandbox"));
}

/// Request headers as name and value.
type Headers = Vec<(&'static str, String)>;

/// A POST to `path` whose body sends a first chunk and then stalls, with `headers`.
fn stalled_post(path: &str, headers: &[(&str, String)]) -> Request<Body> {
    let mut b = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json");
    for (k, v) in headers {
        b = b.header(*k, v);
    }
    b.body(Body::from_stream(Stalled(Some(Bytes::from_static(b"{")))))
        .expect("request")
}

/// Well-formed signature headers with a fresh timestamp and a made-up signature: what anyone
/// without the key can send.
fn forged_headers(app: &TestApp, content_length: usize) -> Headers {
    vec![
        (TIMESTAMP_HEADER, app.state.now_ms().to_string()),
        (SIGNATURE_HEADER, "ab".repeat(32)),
        ("content-length", content_length.to_string()),
    ]
}

/// Settings whose request timeout (408) would end a handler that waited for a stalled body.
fn short_timeout(edge_hmac_key: Option<tally_central::Secret>) -> Settings {
    Settings {
        request_timeout: Duration::from_secs(3),
        edge_hmac_key,
        ..TestApp::settings()
    }
}

#[tokio::test]
async fn no_body_is_read_before_the_configuration_and_signature_headers_pass() {
    let unconfigured = TestApp::with_settings(NOW, short_timeout(None)).await;
    for path in ["/internal/v1/batches", "/internal/v1/tokens/lookup"] {
        let r = unconfigured
            .request(stalled_post(path, &forged_headers(&unconfigured, 1000)))
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}: {:?}", r.body);
    }

    let app = TestApp::with_settings(
        NOW,
        short_timeout(Some(tally_central::Secret(EDGE_KEY.to_vec()))),
    )
    .await;
    let now = ms(NOW);
    let cases: [(&str, Headers, StatusCode); 4] = [
        ("no headers", vec![], StatusCode::UNAUTHORIZED),
        (
            "stale timestamp",
            vec![
                (TIMESTAMP_HEADER, (now - 10 * 60 * 1000).to_string()),
                (SIGNATURE_HEADER, "ab".repeat(32)),
            ],
            StatusCode::UNAUTHORIZED,
        ),
        (
            "short signature",
            vec![
                (TIMESTAMP_HEADER, now.to_string()),
                (SIGNATURE_HEADER, "ab".to_string()),
            ],
            StatusCode::UNAUTHORIZED,
        ),
        (
            "declared length over the limit",
            forged_headers(&app, (16 << 20) + 1),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ];
    for (what, headers, status) in cases {
        let r = app
            .request(stalled_post("/internal/v1/batches", &headers))
            .await;
        assert_eq!(r.status, status, "{what}: {:?}", r.body);
    }
}

/// Polls `fut` once, so it runs as far as it can without waiting.
async fn poll_once<F: std::future::Future + Unpin>(fut: &mut F) -> std::task::Poll<F::Output> {
    std::future::poll_fn(|cx| std::task::Poll::Ready(std::pin::Pin::new(&mut *fut).poll(cx))).await
}

#[tokio::test]
async fn unverified_uploads_hold_a_bounded_budget_and_genuine_batches_proceed_after() {
    let settings = Settings {
        request_timeout: Duration::from_secs(30),
        ..TestApp::settings()
    };
    let app = TestApp::with_settings(NOW, settings).await;
    // `MAX_UNVERIFIED_BYTES / MAX_BATCH_BYTES` in `http/internal.rs`: if the budget grew, the
    // extra upload below would not be refused and this test would say so.
    let (full, holders) = (16 << 20, 4);
    // Forged uploads that declare a full batch and stall: each holds its reservation.
    let mut held = Vec::new();
    for _ in 0..holders {
        let req = stalled_post("/internal/v1/batches", &forged_headers(&app, full));
        let mut fut = Box::pin(app.request(req));
        assert!(poll_once(&mut fut).await.is_pending());
        held.push(fut);
    }
    // The budget is spent: one more waits a bounded time and is answered 503, retryable.
    let started = std::time::Instant::now();
    let r = app
        .request(stalled_post(
            "/internal/v1/batches",
            &forged_headers(&app, full),
        ))
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", r.body);
    assert_eq!(r.header("x-should-retry"), Some("true"));
    assert!(started.elapsed() < Duration::from_secs(20));

    // Once the stalled uploads end, their reservations return and a genuine batch applies.
    drop(held);
    let b = Billing::count(
        &app,
        Env::Sandbox,
        "api_call",
        "2",
        "acme",
        "2024-09-01T00:00:00Z",
    )
    .await;
    let body = batch("shard-0", 1, "acme", &b.metric, "2024-09-20T10:00:00Z", 7);
    let ack = signed(
        &app,
        Method::POST,
        "/internal/v1/batches",
        &body,
        EDGE_KEY,
        ms(NOW),
    )
    .await
    .expect(StatusCode::OK);
    assert_eq!(ack.body["applied"], json!(true));
}

/// A batch of one partial carrying `events` (`Batch::events`).
fn batch_with_events(shard: &str, seq: u64, metric: &str, events: Value) -> Vec<u8> {
    let mut body: Value = serde_json::from_slice(&batch(
        shard,
        seq,
        "acme",
        metric,
        "2024-09-20T10:00:00Z",
        1,
    ))
    .unwrap();
    body["events"] = events;
    serde_json::to_vec(&body).unwrap()
}

fn stored_event(tid: &str, duplicate: bool, metric: &str, ty: &str) -> Value {
    json!({
        "env": "sandbox",
        "event": {
            "transaction_id": tid, "customer_id": "acme", "event_type": ty,
            "timestamp_ms": ms("2024-09-20T10:30:00Z"), "properties": { "region": "eu" },
        },
        "matched_metrics": [metric],
        "processed_ms": ms("2024-09-20T10:31:00Z"),
        "duplicate": duplicate,
    })
}

#[tokio::test]
async fn a_batch_stores_its_events_once_and_search_finds_them() {
    let app = TestApp::new(NOW).await;
    let b = Billing::count(
        &app,
        Env::Sandbox,
        "call",
        "2",
        "acme",
        "2024-09-01T00:00:00Z",
    )
    .await;
    let post = |body: Vec<u8>| {
        let app = &app;
        async move {
            signed(
                app,
                Method::POST,
                "/internal/v1/batches",
                &body,
                EDGE_KEY,
                ms(NOW),
            )
            .await
        }
    };
    let events = json!([
        stored_event("e1", false, &b.metric, "call"),
        stored_event("e1", true, &b.metric, "call"),
    ]);
    let ack = post(batch_with_events("shard-0", 1, &b.metric, events))
        .await
        .expect(StatusCode::OK);
    assert_eq!(ack.body["applied"], json!(true));
    // A replay with other events stores nothing.
    let other = json!([stored_event("e2", false, &b.metric, "call")]);
    let ack = post(batch_with_events("shard-0", 1, &b.metric, other))
        .await
        .expect(StatusCode::OK);
    assert_eq!(ack.body["applied"], json!(false));
    // An event of an unknown environment refuses the batch, changing nothing.
    let mut bad = stored_event("e3", false, &b.metric, "call");
    bad["env"] = json!("staging");
    post(batch_with_events("shard-0", 2, &b.metric, json!([bad])))
        .await
        .client_error(StatusCode::BAD_REQUEST);

    let rows = app
        .post(
            "/v1/events/search",
            json!({ "transactionIds": ["e1", "e2", "e3"] }),
        )
        .await
        .expect(StatusCode::OK)
        .body;
    let rows = rows.as_array().unwrap();
    let got: Vec<(&str, bool)> = rows
        .iter()
        .map(|r| {
            (
                r["transaction_id"].as_str().unwrap(),
                r["is_duplicate"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, [("e1", false), ("e1", true)]);
    assert_eq!(rows[0]["matched_customer"]["id"], b.customer.as_str());
    assert_eq!(
        rows[0]["matched_billable_metrics"][0]["id"],
        b.metric.as_str()
    );
    assert_eq!(rows[0]["processed_at"], "2024-09-20T10:31:00Z");
    assert_eq!(rows[0]["properties"], json!({ "region": "eu" }));
    // The batch after the refused one applies.
    let ack = post(batch_with_events("shard-0", 2, &b.metric, json!([])))
        .await
        .expect(StatusCode::OK);
    assert_eq!(ack.body["applied"], json!(true));
}
