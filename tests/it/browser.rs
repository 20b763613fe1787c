//! What API tools and browser clients see of a real `tally serve`: `/openapi.json` served without
//! a token, and CORS configured by flag or environment (the in-process tests in
//! `central/tests/it/cors.rs` cover the headers in detail).

use std::process::Command;
use std::time::Duration;

use tally_tests::{run_with_timeout, tally_bin, TallyServer};

const APP: &str = "https://app.example.com";

/// The `access-control-allow-origin` a preflight from `origin` gets.
async fn preflight(server: &TallyServer, origin: &str) -> (u16, Option<String>) {
    let res = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, server.url("/v1/customers"))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .send()
        .await
        .expect("the server answers");
    let allow = res
        .headers()
        .get("access-control-allow-origin")
        .map(|v| v.to_str().expect("ascii").to_string());
    (res.status().as_u16(), allow)
}

fn block_on<F: std::future::Future>(job: F) -> F::Output {
    tokio::runtime::Runtime::new()
        .expect("a runtime")
        .block_on(job)
}

#[test]
fn openapi_json_is_served_and_cors_is_off_by_default() {
    let server = TallyServer::start();
    block_on(async {
        let res = reqwest::get(server.url("/openapi.json")).await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], "application/json");
        let doc: serde_json::Value = serde_json::from_str(&res.text().await.unwrap()).unwrap();
        assert!(doc["paths"]["/v1/ingest"]["post"].is_object());
        assert!(doc["paths"].get("/internal/v1/batches").is_none());

        assert_eq!(preflight(&server, APP).await, (405, None));
    });
}

#[test]
fn cors_origins_come_from_the_flag_or_the_environment() {
    let by_flag = TallyServer::start_with(
        &[
            "--cors-allow-origin",
            APP,
            "--cors-allow-origin",
            "http://localhost:3000",
        ],
        &[],
    );
    let by_env = TallyServer::start_with(
        &[],
        &[(
            "TALLY_CORS_ALLOW_ORIGINS",
            "https://app.example.com,http://localhost:3000",
        )],
    );
    block_on(async {
        for server in [&by_flag, &by_env] {
            for origin in [APP, "http://localhost:3000"] {
                assert_eq!(
                    preflight(server, origin).await,
                    (200, Some(origin.to_string()))
                );
            }
            assert_eq!(
                preflight(server, "https://other.example").await,
                (200, None)
            );
        }
    });
}

#[test]
fn a_malformed_cors_origin_stops_the_server_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/tally.db", dir.path().display());
    for bad in [
        "https://app.example.com/",
        "app.example.com",
        "*,https://a.example",
    ] {
        let out = run_with_timeout(
            Command::new(tally_bin()).args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--database",
                &db,
                "--cors-allow-origin",
                bad,
            ]),
            Duration::from_secs(30),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bad} was accepted");
        assert!(stderr.contains("CORS origin"), "{bad}: {stderr}");
    }
}
