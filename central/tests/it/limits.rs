//! Limits that keep one client from hurting the others: per-token rate limiting (429 with
//! `retry-after`), the whole-request timeout (408) and the string length cap on admin bodies.
//! Each refused request must change nothing. Connection-level limits (header and I/O timeouts,
//! the connection cap) need a real socket and are tested in `tests/it/limits.rs`.

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{header, Method, Request, StatusCode};
use serde_json::json;
use tally_central::store::Env;
use tally_central::{RateLimit, Settings};

use crate::support::*;

const NOW: &str = "2024-10-15T12:00:00Z";
const START: &str = "2024-08-01T00:00:00Z";
const AT: &str = "2024-10-10T05:00:00Z";

fn limited(per_second: u32, burst: u32) -> Settings {
    Settings {
        rate_limit: Some(RateLimit {
            per_second: NonZeroU32::new(per_second).expect("non-zero"),
            burst: NonZeroU32::new(burst).expect("non-zero"),
        }),
        ..TestApp::settings()
    }
}

/// Sends requests as `env` until one is refused with 429, and returns that response.
async fn exhaust(app: &TestApp, env: Env) -> Resp {
    for _ in 0..1_000 {
        let r = app.get_as(env, "/v1/billable-metrics").await;
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            return r;
        }
        r.expect(StatusCode::OK);
    }
    panic!("1,000 requests and no 429");
}

#[tokio::test]
async fn a_token_over_its_rate_gets_429_with_retry_after_and_others_do_not() {
    let app = TestApp::with_settings(NOW, limited(1, 20)).await;
    let r = exhaust(&app, Env::Sandbox).await;
    assert_eq!(r.header("retry-after"), Some("1"), "{:?}", r.headers);
    assert_eq!(r.header("x-should-retry"), Some("true"));
    assert!(r.message().contains("rate limit"), "{}", r.message());
    assert!(r
        .header("content-type")
        .is_some_and(|c| c.contains("application/json")));

    // Another token has its own bucket.
    app.get_as(Env::Production, "/v1/billable-metrics")
        .await
        .expect(StatusCode::OK);
    // A request without a valid token is refused as unauthenticated, not rate limited.
    app.send(Method::GET, "/v1/billable-metrics", Some("nope"), None, &[])
        .await
        .client_error(StatusCode::UNAUTHORIZED);
}

/// Repeats `request` every 100 ms until it is not refused with 429 (10 s at most).
async fn until_allowed<F, Fut>(request: F) -> Resp
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Resp>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = request().await;
        if r.status != StatusCode::TOO_MANY_REQUESTS {
            return r;
        }
        assert!(Instant::now() < deadline, "still rate limited after 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_rate_limited_ingest_changes_nothing_and_its_retry_counts_once() {
    let app = TestApp::with_settings(NOW, limited(1, 20)).await;
    let b = Billing::count(&app, Env::Sandbox, "api_call", "2", "acme", START).await;
    exhaust(&app, Env::Sandbox).await;

    let events = json!([
        event("r1", "acme", "api_call", AT, json!({})),
        event("r2", "acme", "api_call", AT, json!({})),
    ]);
    let r = app
        .post_as(Env::Sandbox, "/v1/ingest", events.clone())
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);

    // Retry as an SDK does, after `retry-after`, until the bucket lets the request through.
    let accepted = until_allowed(|| app.post_as(Env::Sandbox, "/v1/ingest", events.clone()))
        .await
        .data();
    // The refused attempt stored nothing: the retry's events are new, not duplicates.
    assert_eq!(accepted["accepted"], 2, "{accepted}");
    assert_eq!(accepted["duplicates"], 0, "{accepted}");

    let path = format!("/v1/customers/{}/invoices?limit=100", b.customer);
    let invoice = until_allowed(|| app.get_as(Env::Sandbox, &path))
        .await
        .data();
    let totals: Vec<String> = invoice
        .as_array()
        .expect("invoices")
        .iter()
        .map(|inv| num(&inv["total"]))
        .collect();
    assert!(totals.contains(&"4".to_string()), "{totals:?}");
}

/// A body that sends its first chunk and then never ends, like a client that stalls mid-upload.
pub(crate) struct Stalled(pub(crate) Option<Bytes>);

impl futures_core::Stream for Stalled {
    type Item = Result<Bytes, std::io::Error>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        match self.0.take() {
            Some(chunk) => std::task::Poll::Ready(Some(Ok(chunk))),
            // Never woken again: the timeout, not this stream, ends the request.
            None => std::task::Poll::Pending,
        }
    }
}

#[tokio::test]
async fn a_request_that_stalls_its_body_gets_408_and_changes_nothing() {
    let settings = Settings {
        request_timeout: Duration::from_millis(300),
        ..TestApp::settings()
    };
    let app = TestApp::with_settings(NOW, settings).await;
    let b = Billing::count(&app, Env::Sandbox, "api_call", "2", "acme", START).await;
    let cases: [(&str, &'static [u8]); 2] = [
        (
            "/v1/ingest",
            br#"[{"transaction_id":"s1","customer_id":"acme","event_type":"api_call","timestamp":"2024-10-10T05:00:00Z","properties":{}}"#,
        ),
        ("/v1/customers", br#"{"name":"half a customer""#),
    ];
    for (path, first) in cases {
        let req = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(
                header::AUTHORIZATION,
                format!("Bearer {}", app.token(Env::Sandbox)),
            )
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from_stream(Stalled(Some(Bytes::from_static(first)))))
            .expect("request");
        let r = app.request(req).await;
        assert_eq!(
            r.status,
            StatusCode::REQUEST_TIMEOUT,
            "{path}: {:?}",
            r.body
        );
        assert!(r.message().contains("not completed"), "{}", r.message());
    }
    // Neither half-sent request left anything behind.
    let customers = app.get("/v1/customers").await.data();
    assert_eq!(customers.as_array().map(Vec::len), Some(1), "{customers}");
    assert_eq!(
        num(&app.invoice_at(Env::Sandbox, &b.customer, AT).await["total"]),
        "0"
    );
    let r = app
        .ingest(
            Env::Sandbox,
            json!([event("s1", "acme", "api_call", AT, json!({}))]),
        )
        .await;
    assert_eq!(r["accepted"], 1, "{r}");
}

#[tokio::test]
async fn an_over_long_string_anywhere_in_an_admin_body_is_400_and_stores_nothing() {
    let app = TestApp::new(NOW).await;
    let long = "x".repeat(tally_central::http::MAX_STRING_CHARS + 1);
    let r = app
        .post(
            "/v1/customers",
            json!({ "name": "ok", "custom_fields": { "note": long } }),
        )
        .await
        .client_error(StatusCode::BAD_REQUEST);
    assert!(
        r.message().contains("custom_fields.note") && r.message().contains("4096"),
        "{}",
        r.message()
    );
    let r = app
        .post(
            "/v1/customers",
            json!({ "name": "ok", "ingest_aliases": ["a", long] }),
        )
        .await
        .client_error(StatusCode::BAD_REQUEST);
    assert!(r.message().contains("ingest_aliases[1]"), "{}", r.message());
    let mut body = json!({ "name": "ok" });
    body[&long] = json!(1);
    app.post("/v1/customers", body)
        .await
        .client_error(StatusCode::BAD_REQUEST);
    assert_eq!(app.get("/v1/customers").await.data(), json!([]));

    // Exactly at the limit is fine.
    let at_limit = "y".repeat(tally_central::http::MAX_STRING_CHARS);
    app.post(
        "/v1/customers",
        json!({ "name": "ok", "custom_fields": { "note": at_limit } }),
    )
    .await
    .expect(StatusCode::OK);
}
