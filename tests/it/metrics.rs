//! Operators' view of a real `tally serve`: Prometheus metrics on `--metrics-listen` after a known
//! ingest, request ids, liveness and readiness (the database outage case is in `postgres.rs`).

use std::collections::BTreeMap;

use serde_json::json;
use tally_core::time::{format_rfc3339_ms, DAY_MS};
use tally_tests::bench::now_ms;
use tally_tests::{ApiClient, TallyServer};

/// One sample line of the Prometheus text format: name, labels, value text.
type Sample = (String, BTreeMap<String, String>, String);

fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("a value");
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let body = rest.strip_suffix('}').expect("closing brace");
                    let labels = body
                        .split("\",")
                        .filter(|kv| !kv.is_empty())
                        .map(|kv| {
                            let (k, v) = kv.split_once("=\"").expect("k=\"v\"");
                            (k.to_string(), v.trim_end_matches('"').to_string())
                        })
                        .collect();
                    (name.to_string(), labels)
                }
                None => (series.to_string(), BTreeMap::new()),
            };
            (name, labels, value.to_string())
        })
        .collect()
}

/// The value of the one sample named `name` whose labels include `want`.
fn value(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> Option<String> {
    samples
        .iter()
        .find(|(n, labels, _)| {
            n == name
                && want
                    .iter()
                    .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(v))
        })
        .map(|(_, _, v)| v.clone())
}

#[test]
fn metrics_count_a_known_ingest_and_requests_carry_ids() {
    let server = TallyServer::start_with(&["--metrics-listen", "127.0.0.1:0"], &[]);
    let metrics_url = server.metrics_url();
    let api = ApiClient::new(&server);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let now = now_ms();
        let at = format_rfc3339_ms(now);
        let old = format_rfc3339_ms(now - 40 * DAY_MS);
        let body = json!([
            { "transaction_id": "a", "customer_id": "c", "event_type": "e", "timestamp": at },
            { "transaction_id": "b", "customer_id": "c", "event_type": "e", "timestamp": at },
            { "transaction_id": "c", "customer_id": "c", "event_type": "e", "timestamp": at },
            { "transaction_id": "a", "customer_id": "c", "event_type": "e", "timestamp": at },
            { "customer_id": "c", "event_type": "e", "timestamp": at },
            { "transaction_id": "old", "customer_id": "c", "event_type": "e", "timestamp": old },
        ]);
        let r = api.data("/v1/ingest", &body).await.unwrap();
        assert_eq!(
            (r["accepted"].clone(), r["duplicates"].clone()),
            (json!(3), json!(1))
        );
        assert_eq!(api.get("/v1/customers/nope").await.unwrap().0, 404);

        // Request ids: a client's is echoed; otherwise one is made.
        let res = api
            .http()
            .get(api.url("/livez"))
            .header("x-request-id", "trace-me-42")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["x-request-id"], "trace-me-42");
        let res = api.http().get(api.url("/readyz")).send().await.unwrap();
        assert_eq!(res.status(), 200, "readiness needs no token");
        let made = res.headers()["x-request-id"].to_str().unwrap().to_string();
        assert_eq!(made.len(), 36, "a UUID: {made}");

        let res = reqwest::get(&metrics_url).await.unwrap();
        assert_eq!(res.status(), 200);
        let text = res.text().await.unwrap();
        let s = parse(&text);
        let events = |outcome: &str, reason: &str| {
            value(
                &s,
                "tally_ingest_events_total",
                &[("env", "sandbox"), ("outcome", outcome), ("reason", reason)],
            )
        };
        assert_eq!(events("accepted", "").as_deref(), Some("3"), "{text}");
        assert_eq!(events("duplicate", "").as_deref(), Some("1"), "{text}");
        assert_eq!(
            events("rejected", "missing_field").as_deref(),
            Some("1"),
            "{text}"
        );
        assert_eq!(
            events("rejected", "outside_window").as_deref(),
            Some("1"),
            "{text}"
        );
        assert_eq!(
            value(
                &s,
                "tally_http_requests_total",
                &[
                    ("route", "/v1/ingest"),
                    ("method", "POST"),
                    ("status", "200")
                ]
            )
            .as_deref(),
            Some("1"),
            "{text}"
        );
        assert_eq!(
            value(
                &s,
                "tally_http_requests_total",
                &[("route", "/v1/customers/{id}"), ("status", "404")]
            )
            .as_deref(),
            Some("1"),
            "routes are templates, never raw paths: {text}"
        );
        assert!(
            !text.contains("/v1/customers/nope"),
            "no raw path becomes a label"
        );
        // One group commit held the 4 claimed events (3 new, 1 duplicate of them).
        assert_eq!(
            value(&s, "tally_ingest_group_commit_events_count", &[]).as_deref(),
            Some("1"),
            "{text}"
        );
        assert_eq!(
            value(&s, "tally_ingest_group_commit_events_sum", &[]).as_deref(),
            Some("4"),
            "{text}"
        );
        assert!(value(
            &s,
            "tally_ingest_group_commit_seconds_bucket",
            &[("le", "+Inf")]
        )
        .is_some());
        assert!(
            value(&s, "tally_db_pool_connections", &[("state", "idle")]).is_some(),
            "{text}"
        );
        assert!(text.contains("# HELP tally_ingest_events_total"), "{text}");
    });
}
