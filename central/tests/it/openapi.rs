//! `GET /openapi.json` is true of the router: the document's operations are exactly the
//! (method, path) pairs the router serves, and the ones it marks `security: []` are exactly the
//! routes served without a token.
//!
//! The router's side is read from the router itself: [`tally_central::http::served_paths`] lists
//! every path template added (every API route goes through `http::Routes::route`; clippy's
//! `disallowed-methods` refuses `Router::route` anywhere else), and the methods served on a path
//! are the ones its 405 lists in `Allow`. So a route added without documenting it, a documented
//! operation that is not served, or a method or token requirement that differs all fail here.

use std::collections::BTreeSet;

use axum::http::{Method, StatusCode};
use serde_json::Value;
use tally_central::http::served_paths;
use tally_central::store::Env;

use crate::support::TestApp;

const NOW: &str = "2026-11-15T12:00:00Z";

/// The committed document the binary embeds.
fn committed() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("central/openapi.json"))
        .expect("central/openapi.json is JSON")
}

/// `/v1/customers/{customer_id}` and `/v1/customers/{id}` are the same route.
fn normalize(path: &str) -> String {
    let mut out = String::new();
    let mut in_param = false;
    for c in path.chars() {
        match c {
            '{' => {
                in_param = true;
                out.push_str("{}");
            }
            '}' => in_param = false,
            _ if !in_param => out.push(c),
            _ => {}
        }
    }
    out
}

/// One operation: method, normalized path, whether it needs a token.
type Op = (String, String, bool);

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn documented(doc: &Value) -> BTreeSet<Op> {
    let global_security = !doc["security"]
        .as_array()
        .expect("global security")
        .is_empty();
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            if !METHODS.contains(&method.as_str()) {
                continue;
            }
            let needs_token = match op.get("security") {
                Some(Value::Array(reqs)) => !reqs.is_empty(),
                _ => global_security,
            };
            ops.insert((method.to_uppercase(), normalize(path), needs_token));
        }
    }
    ops
}

/// What the router serves on `path`, from the `Allow` of its 405 to a method no route uses.
async fn served_methods(app: &TestApp, path: &str) -> Vec<String> {
    let concrete = normalize(path).replace("{}", "x");
    let r = app
        .send(
            Method::TRACE,
            &concrete,
            Some(app.token(Env::Sandbox)),
            None,
            &[],
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::METHOD_NOT_ALLOWED,
        "TRACE {concrete} (route {path}) is not a 405: {}",
        r.body
    );
    let allow = r
        .header("allow")
        .unwrap_or_else(|| panic!("no Allow on {path}"));
    let methods: Vec<String> = allow
        .split(',')
        .map(|m| m.trim().to_string())
        // axum serves HEAD wherever it serves GET; the document lists GET.
        .filter(|m| m != "HEAD")
        .collect();
    assert!(!methods.is_empty(), "{path} serves no method");
    methods
}

async fn served(app: &TestApp) -> BTreeSet<Op> {
    let paths = served_paths();
    let mut ops = BTreeSet::new();
    let groups = [(&paths.open, false), (&paths.authenticated, true)];
    for (group, needs_token) in groups {
        for path in group.iter() {
            for method in served_methods(app, path).await {
                ops.insert((method, normalize(path), needs_token));
            }
        }
    }
    ops
}

#[tokio::test]
async fn the_document_describes_exactly_the_operations_served() {
    let app = TestApp::new(NOW).await;
    let doc = committed();
    let served = served(&app).await;
    let documented = documented(&doc);
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty() && unserved.is_empty(),
        "the router and central/openapi.json disagree (method, path, needs a token):\n\
         served but not documented: {undocumented:?}\n\
         documented but not served: {unserved:?}\n\
         (add the operation to scripts/openapi.py and run it)"
    );
    // Both sides are what they should be, not two empty sets.
    assert!(served.len() > 50, "{served:?}");
    for (method, path) in [
        ("GET", "/openapi.json"),
        ("GET", "/livez"),
        ("GET", "/readyz"),
    ] {
        assert!(served.contains(&(method.to_string(), path.to_string(), false)));
    }
}

#[tokio::test]
async fn internal_edge_endpoints_are_served_but_not_documented() {
    let app = TestApp::new(NOW).await;
    let doc = committed();
    let internal = served_paths().internal;
    assert!(!internal.is_empty());
    for path in &internal {
        assert!(path.starts_with("/internal/"), "{path}");
        assert!(!served_methods(&app, path).await.is_empty());
    }
    for path in doc["paths"].as_object().expect("paths").keys() {
        assert!(!path.starts_with("/internal"), "{path} is documented");
    }
}

/// Every `{name}` in a documented path is a declared path parameter, every operation has an
/// operationId, and no two share one (clients generate method names from them).
#[test]
fn the_documents_operations_are_well_formed() {
    let doc = committed();
    let mut ids = BTreeSet::new();
    let resolve = |p: &Value| -> Value {
        match p["$ref"].as_str() {
            Some(r) => {
                let name = r
                    .strip_prefix("#/components/parameters/")
                    .expect("a parameter ref");
                doc["components"]["parameters"][name].clone()
            }
            None => p.clone(),
        }
    };
    for (path, item) in doc["paths"].as_object().expect("paths") {
        let names: Vec<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .collect();
        for (method, op) in item.as_object().expect("path item") {
            if !METHODS.contains(&method.as_str()) {
                continue;
            }
            let id = op["operationId"].as_str().expect("operationId");
            assert!(ids.insert(id.to_string()), "operationId {id} twice");
            let declared: Vec<Value> = item["parameters"]
                .as_array()
                .into_iter()
                .chain(op["parameters"].as_array())
                .flatten()
                .map(resolve)
                .filter(|p| p["in"] == "path")
                .collect();
            for name in &names {
                assert!(
                    declared.iter().any(|p| p["name"] == *name),
                    "{method} {path}: path parameter {name} is not declared"
                );
            }
        }
    }
}

#[tokio::test]
async fn openapi_json_is_served_without_a_token_as_json() {
    let app = TestApp::new(NOW).await;
    let r = app
        .send(Method::GET, "/openapi.json", None, None, &[])
        .await
        .expect(StatusCode::OK);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.body, committed());
    assert_eq!(r.body["info"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(r.body["openapi"]
        .as_str()
        .is_some_and(|v| v.starts_with("3.")));
    // Relative, so a client reading it calls this server, not Metronome's.
    assert_eq!(r.body["servers"][0]["url"], "/");
}
