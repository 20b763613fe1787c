//! CORS: off by default (an `OPTIONS` preflight is the JSON 405 of any unserved method); with
//! origins configured, a preflight from an allowed origin is answered with the methods and headers
//! the API uses, and the API's answers (errors included) carry the allow-origin and exposed
//! headers; a refused origin gets no allow-origin anywhere, which a browser treats as a refusal.

use axum::http::{Method, StatusCode};
use tally_central::http::cors::AllowedOrigins;
use tally_central::store::Env;

use crate::support::{Resp, TestApp};

const NOW: &str = "2026-11-15T12:00:00Z";
const APP: &str = "https://app.example.com";

async fn app_allowing(origins: &[&str]) -> TestApp {
    let cors = AllowedOrigins::parse(origins).expect("valid origins");
    TestApp::with_settings(
        NOW,
        tally_central::Settings {
            cors,
            ..TestApp::settings()
        },
    )
    .await
}

async fn preflight(app: &TestApp, origin: &str, path: &str, method: &str) -> Resp {
    app.send(
        Method::OPTIONS,
        path,
        None,
        None,
        &[
            ("origin", origin),
            ("access-control-request-method", method),
            (
                "access-control-request-headers",
                "authorization,content-type,content-encoding,idempotency-key,x-request-id",
            ),
        ],
    )
    .await
}

/// `GET /v1/customers` with the sandbox token from a page at `origin`; asserts 200.
async fn list_customers_from(app: &TestApp, origin: &str) -> Resp {
    app.send(
        Method::GET,
        "/v1/customers",
        Some(app.token(Env::Sandbox)),
        None,
        &[("origin", origin)],
    )
    .await
    .expect(StatusCode::OK)
}

/// The comma-separated items of a header, lower-cased.
fn items(r: &Resp, name: &str) -> Vec<String> {
    r.header(name)
        .unwrap_or_else(|| panic!("no {name} in {:?}", r.headers))
        .split(',')
        .map(|s| s.trim().to_ascii_lowercase())
        .collect()
}

#[tokio::test]
async fn cors_is_off_by_default_and_a_preflight_is_a_json_405() {
    let app = TestApp::new(NOW).await;
    for path in ["/v1/customers", "/v1/ingest", "/openapi.json"] {
        let r = preflight(&app, APP, path, "POST").await;
        assert_eq!(r.header("access-control-allow-origin"), None, "{path}");
        r.client_error(StatusCode::METHOD_NOT_ALLOWED);
    }
    let r = list_customers_from(&app, APP).await;
    assert_eq!(r.header("access-control-allow-origin"), None);
    assert_eq!(r.header("access-control-expose-headers"), None);
}

#[tokio::test]
async fn an_allowed_origin_gets_its_preflight_and_readable_answers() {
    let app = app_allowing(&[APP, "http://localhost:3000"]).await;
    for origin in [APP, "http://localhost:3000"] {
        let r = preflight(&app, origin, "/v1/customers", "POST")
            .await
            .expect(StatusCode::OK);
        assert_eq!(r.header("access-control-allow-origin"), Some(origin));
        let methods = items(&r, "access-control-allow-methods");
        for m in ["get", "post", "delete"] {
            assert!(methods.contains(&m.to_string()), "{methods:?}");
        }
        let headers = items(&r, "access-control-allow-headers");
        for h in [
            "authorization",
            "content-type",
            "content-encoding",
            "idempotency-key",
            "x-request-id",
        ] {
            assert!(headers.contains(&h.to_string()), "{headers:?}");
        }
        assert_eq!(r.header("access-control-max-age"), Some("3600"));
        assert_eq!(r.header("access-control-allow-credentials"), None);
        assert!(items(&r, "vary").contains(&"origin".to_string()));
    }

    // The actual request, and an error (no token): both readable by the page.
    let token = app.token(Env::Sandbox).to_string();
    for (token, status) in [
        (Some(token.as_str()), StatusCode::OK),
        (None, StatusCode::UNAUTHORIZED),
    ] {
        let r = app
            .send(
                Method::GET,
                "/v1/customers",
                token,
                None,
                &[("origin", APP)],
            )
            .await
            .expect(status);
        assert_eq!(r.header("access-control-allow-origin"), Some(APP));
        let exposed = items(&r, "access-control-expose-headers");
        for h in ["x-request-id", "retry-after", "x-should-retry"] {
            assert!(exposed.contains(&h.to_string()), "{exposed:?}");
        }
        assert!(r.header("x-request-id").is_some());
    }

    // A request with no Origin (not a browser) is served as always.
    app.get("/v1/customers").await.expect(StatusCode::OK);
}

#[tokio::test]
async fn a_refused_origin_gets_no_allow_origin() {
    let app = app_allowing(&[APP]).await;
    for origin in [
        "https://evil.example.com",
        "https://app.example.com.evil.example",
        "http://app.example.com",
        "null",
    ] {
        let r = preflight(&app, origin, "/v1/customers", "POST").await;
        assert_eq!(r.header("access-control-allow-origin"), None, "{origin}");
        let r = list_customers_from(&app, origin).await;
        assert_eq!(r.header("access-control-allow-origin"), None, "{origin}");
    }
}

#[tokio::test]
async fn a_star_allows_every_origin() {
    let app = app_allowing(&["*"]).await;
    let r = preflight(&app, "https://anyone.example", "/v1/ingest", "POST")
        .await
        .expect(StatusCode::OK);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
}
