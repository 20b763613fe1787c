//! `Idempotency-Key` on POST: the first response replayed for the same key, a 409 for the same key
//! with other parameters, one execution however many concurrent requests share a key (SQLite and
//! PostgreSQL), keys scoped per environment, pruned after their retention.

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use tally_central::store::{Env, IDEMPOTENCY_RETENTION_MS};

use crate::store_conformance::Backend;
use crate::support::*;

const NOW: &str = "2024-10-15T12:00:00Z";

async fn keyed(app: &TestApp, env: Env, path: &str, body: &Value, key: &str) -> Resp {
    let bytes = serde_json::to_vec(body).unwrap();
    app.send(
        Method::POST,
        path,
        Some(app.token(env)),
        Some(bytes),
        &[("idempotency-key", key)],
    )
    .await
}

async fn customers_named(app: &TestApp, env: Env, name: &str) -> usize {
    let page = app
        .get_as(env, "/v1/customers?limit=100")
        .await
        .expect(StatusCode::OK)
        .body;
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"] == name)
        .count()
}

#[tokio::test]
async fn the_first_response_is_replayed_and_other_parameters_are_a_409() {
    let app = TestApp::new(NOW).await;
    let body = json!({ "name": "Acme", "ingest_aliases": ["acme"] });
    let first = keyed(&app, Env::Sandbox, "/v1/customers", &body, "k-1").await;
    assert_eq!(first.status, StatusCode::OK, "{:?}", first.body);
    assert_eq!(first.header("idempotent-replayed"), None);
    let again = keyed(&app, Env::Sandbox, "/v1/customers", &body, "k-1").await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body, first.body, "the same customer, not a new one");
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(customers_named(&app, Env::Sandbox, "Acme").await, 1);

    // Same key, another body or path: refused, nothing created.
    let other = json!({ "name": "Other" });
    let r = keyed(&app, Env::Sandbox, "/v1/customers", &other, "k-1").await;
    r.client_error(StatusCode::CONFLICT);
    let r = keyed(&app, Env::Sandbox, "/v1/customers/create", &body, "k-1").await;
    assert!(r
        .client_error(StatusCode::CONFLICT)
        .message()
        .contains("Idempotency-Key"));
    assert_eq!(customers_named(&app, Env::Sandbox, "Other").await, 0);

    // Another key executes again (here: the alias is taken, a 409 of its own).
    let r = keyed(&app, Env::Sandbox, "/v1/customers", &body, "k-2").await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    // A failed first execution is replayed too.
    let again = keyed(&app, Env::Sandbox, "/v1/customers", &body, "k-2").await;
    assert_eq!(
        (again.status, again.header("idempotent-replayed")),
        (StatusCode::CONFLICT, Some("true"))
    );
    assert_eq!(again.body, r.body);

    // Keys belong to an environment: production's k-1 is its own.
    let prod = keyed(&app, Env::Production, "/v1/customers", &body, "k-1").await;
    assert_eq!(prod.status, StatusCode::OK);
    assert_eq!(prod.header("idempotent-replayed"), None);
    assert_eq!(customers_named(&app, Env::Production, "Acme").await, 1);

    // Without the header, or on GET, nothing is remembered.
    app.post("/v1/customers", json!({ "name": "Free" }))
        .await
        .expect(StatusCode::OK);
    app.post("/v1/customers", json!({ "name": "Free" }))
        .await
        .expect(StatusCode::OK);
    assert_eq!(customers_named(&app, Env::Sandbox, "Free").await, 2);
    let r = app
        .send(
            Method::GET,
            "/v1/customers",
            Some(app.token(Env::Sandbox)),
            None,
            &[("idempotency-key", "k-1")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);

    // A key too long is a 400 and executes nothing.
    let long = "x".repeat(256);
    let r = keyed(
        &app,
        Env::Sandbox,
        "/v1/customers",
        &json!({ "name": "Long" }),
        &long,
    )
    .await;
    r.client_error(StatusCode::BAD_REQUEST);
    assert_eq!(customers_named(&app, Env::Sandbox, "Long").await, 0);
}

#[tokio::test]
async fn a_key_is_kept_for_its_retention_then_pruned() {
    let app = TestApp::new(NOW).await;
    let body = json!({ "name": "Acme" });
    let first = keyed(&app, Env::Sandbox, "/v1/customers", &body, "k")
        .await
        .expect(StatusCode::OK);
    app.set_now_ms(ms(NOW) + IDEMPOTENCY_RETENTION_MS - 1);
    app.run_jobs().await;
    let again = keyed(&app, Env::Sandbox, "/v1/customers", &body, "k").await;
    assert_eq!(again.body, first.body);
    app.set_now_ms(ms(NOW) + IDEMPOTENCY_RETENTION_MS + 1);
    app.run_jobs().await;
    let later = keyed(&app, Env::Sandbox, "/v1/customers", &body, "k")
        .await
        .expect(StatusCode::OK);
    assert_ne!(later.body, first.body, "pruned: the request executes again");
    assert_eq!(customers_named(&app, Env::Sandbox, "Acme").await, 2);
}

async fn concurrent_requests_with_one_key_execute_once(backend: Backend) {
    let app = Arc::new(TestApp::on_backend(NOW, backend).await);
    // Creates (a document insert) and updates (a versioned read-modify-write).
    // No alias: nothing but the key stops a second customer being created.
    let body = json!({ "name": "Racer" });
    let tasks: Vec<_> = (0..40)
        .map(|_| {
            let (app, body) = (app.clone(), body.clone());
            tokio::spawn(
                async move { keyed(&app, Env::Sandbox, "/v1/customers", &body, "race").await },
            )
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    for a in &answers {
        assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
        assert_eq!(
            a.body, answers[0].body,
            "every request gets the one execution's answer"
        );
    }
    assert_eq!(customers_named(&app, Env::Sandbox, "Racer").await, 1);
    let id = answers[0].body["data"]["id"].as_str().unwrap().to_string();

    // setName 40 times at once with one key: one update, every answer the same.
    let path = format!("/v1/customers/{id}/setName");
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let (app, path) = (app.clone(), path.clone());
            tokio::spawn(async move {
                // Half send another name: those are refused (409), never applied.
                let name = if i % 2 == 0 { "Renamed" } else { "Intruder" };
                keyed(
                    &app,
                    Env::Sandbox,
                    &path,
                    &json!({ "name": name }),
                    "rename",
                )
                .await
            })
        })
        .collect();
    let mut ok = Vec::new();
    for t in tasks {
        let r = t.await.unwrap();
        match r.status {
            StatusCode::OK => ok.push(r.body),
            StatusCode::CONFLICT => {}
            other => panic!("unexpected {other}: {:?}", r.body),
        }
    }
    assert!(!ok.is_empty());
    assert!(ok.iter().all(|b| *b == ok[0]));
    let name = ok[0]["data"]["name"].as_str().unwrap().to_string();
    let got = app
        .get(&format!("/v1/customers/{id}"))
        .await
        .expect(StatusCode::OK)
        .body;
    assert_eq!(
        got["data"]["name"],
        name.as_str(),
        "the answered name is the stored one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_with_one_key_execute_once_on_sqlite() {
    concurrent_requests_with_one_key_execute_once(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_with_one_key_execute_once_on_postgres() {
    concurrent_requests_with_one_key_execute_once(Backend::Postgres).await;
}
