//! Secrets never reach the logs: a real `tally serve` on PostgreSQL (its URL carrying a password),
//! with an edge HMAC key, logging at debug level (trace for Tally's own crates), is driven through
//! authenticated, unauthenticated, failing and internally-signed requests; afterwards no API token,
//! refused token guess, HMAC key, Stripe API key or database password appears anywhere in its
//! output.

use serde_json::json;
use tally_tests::{on_runtime, ApiClient, PgDatabase, TallyServer};

const HMAC_KEY: &str = "edge-key-4f1c2a9b7e-never-log-me";
const DB_PASSWORD: &str = "db-pw-9d8c7b6a-never-log-me";
const GUESSED_TOKEN: &str = "tally_sbx_guessed-token-never-log-me";
const STRIPE_KEY: &str = "sk_test_stripe-key-3e8a5c1f-never-log-me";

#[test]
fn no_secret_appears_in_the_logs() {
    let db = PgDatabase::create();
    let url = db.url().replacen(
        "postgres://postgres@",
        &format!("postgres://postgres:{DB_PASSWORD}@"),
        1,
    );
    assert_ne!(
        url,
        db.url(),
        "the test database URL has an unexpected shape"
    );
    let server = TallyServer::start_on(
        Some(&url),
        &[],
        &[
            ("TALLY_EDGE_HMAC_KEY", HMAC_KEY),
            ("TALLY_STRIPE_API_KEY", STRIPE_KEY),
            // Nothing listens there: a push would fail, and its error must not carry the key.
            ("TALLY_STRIPE_API_BASE", "http://127.0.0.1:9"),
            ("RUST_LOG", "debug,tally=trace,tally_central=trace"),
        ],
    );
    let token = server.token().to_string();
    let api = ApiClient::new(&server);
    let base = server.base_url().to_string();
    let token_hash = tally_central::auth::hash_token(&token);
    on_runtime(move || async move {
        let metric = json!({
            "name": "calls", "aggregation_type": "COUNT",
            "event_type_filter": { "in_values": ["call"] },
        });
        api.create("/v1/billable-metrics/create", &metric)
            .await
            .expect("metric");
        let events = json!([{
            "transaction_id": "s1", "customer_id": "c", "event_type": "call",
            "timestamp": "2099-01-01T00:00:00Z", "properties": {},
        }]);
        let (status, _) = api.post("/v1/ingest", &events).await.expect("ingest");
        assert_eq!(status, 200);
        // Client errors and a refused token.
        let (status, _) = api
            .post("/v1/customers", &json!({ "name": 5 }))
            .await
            .expect("400");
        assert_eq!(status, 400);
        let http = reqwest::Client::new();
        let r = http
            .get(format!("{base}/v1/customers"))
            .bearer_auth(GUESSED_TOKEN)
            .send()
            .await
            .expect("request");
        assert_eq!(r.status().as_u16(), 401);
        // The internal endpoints, correctly signed and with a wrong key.
        let body = serde_json::to_vec(&json!({ "token_hash": token_hash })).expect("json");
        for key in [HMAC_KEY, "wrong-key"] {
            let now_ms = i64::try_from(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .expect("clock")
                    .as_millis(),
            )
            .expect("ms");
            let r = http
                .post(format!("{base}/internal/v1/tokens/lookup"))
                .header(tally_core::batch::TIMESTAMP_HEADER, now_ms.to_string())
                .header(
                    tally_core::batch::SIGNATURE_HEADER,
                    tally_core::batch::sign(
                        key.as_bytes(),
                        now_ms,
                        &tally_core::batch::SignedRequest {
                            method: "POST",
                            path_and_query: "/internal/v1/tokens/lookup",
                            body: &body,
                        },
                    ),
                )
                .body(body.clone())
                .send()
                .await
                .expect("request");
            let expected = if key == HMAC_KEY { 200 } else { 401 };
            assert_eq!(r.status().as_u16(), expected);
        }
    });

    let logs = server.logs();
    let lines = logs.lines().count();
    assert!(
        lines < tally_tests::LOG_LINES_KEPT,
        "{lines} log lines: the harness keeps only the last {}, so some could not be checked",
        tally_tests::LOG_LINES_KEPT
    );
    assert!(lines > 10, "debug logging produced almost nothing:\n{logs}");
    for secret in [
        token.as_str(),
        GUESSED_TOKEN,
        HMAC_KEY,
        DB_PASSWORD,
        STRIPE_KEY,
    ] {
        assert!(
            !logs.contains(secret),
            "{secret:?} appears in the logs:\n{logs}"
        );
    }
}
