//! The internal edge endpoints: signed batches applied exactly once, the metric snapshot, token lookup.

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use tally_central::store::Env;
use tally_core::batch::{sign, SIGNATURE_HEADER, TIMESTAMP_HEADER};

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
    let ts = at_ms.to_string();
    let sig = sign(key, at_ms, body);
    let body = (method == Method::POST).then(|| body.to_vec());
    app.send(
        method,
        path,
        None,
        body,
        &[(TIMESTAMP_HEADER, &ts), (SIGNATURE_HEADER, &sig)],
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
