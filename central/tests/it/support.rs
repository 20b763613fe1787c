//! The harness every module shares: an app on a fresh SQLite file with a fixed clock and one token
//! per environment, raw and JSON request helpers, and builders for the usual billing setup.
//!
//! Requests go through the real router in-process (`tower::ServiceExt::oneshot`); nothing listens
//! on a socket and nothing sleeps. Numbers are read as exact JSON text, never as floats.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tally_central::store::Env;
use tally_central::{AppState, FixedClock, Settings};
use tempfile::TempDir;
use tower::ServiceExt;

/// The edge HMAC key test apps are configured with.
pub const EDGE_KEY: &[u8] = b"test-edge-key";

pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 24 * HOUR_MS;

/// Epoch milliseconds of an RFC 3339 timestamp.
pub fn ms(rfc3339: &str) -> i64 {
    tally_core::time::parse_rfc3339_ms(rfc3339)
        .unwrap_or_else(|e| panic!("bad test timestamp {rfc3339:?}: {e}"))
}

/// The RFC 3339 text the API emits for epoch milliseconds.
pub fn ts(ms: i64) -> String {
    tally_core::time::format_rfc3339_ms(ms)
}

/// The exact text of a JSON number (serde_json keeps it with `arbitrary_precision`).
pub fn num(v: &Value) -> String {
    match v {
        Value::Number(n) => n.to_string(),
        other => panic!("expected a JSON number, found {other}"),
    }
}

/// A string field, panicking with the whole value when it is missing.
pub fn text<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("no string {field:?} in {v}"))
}

/// A response, fully read.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub raw: Bytes,
    /// The parsed body; `Null` when the body is empty.
    pub body: Value,
}

impl Resp {
    /// Asserts the status and returns the response.
    #[track_caller]
    pub fn expect(self, status: StatusCode) -> Resp {
        assert_eq!(
            self.status, status,
            "unexpected status; body: {}",
            self.body
        );
        self
    }

    /// Asserts 200 and returns the `data` field.
    #[track_caller]
    pub fn data(self) -> Value {
        self.expect(StatusCode::OK).body["data"].clone()
    }

    /// Asserts 200 and returns `data.id`.
    #[track_caller]
    pub fn id(self) -> String {
        let data = self.data();
        text(&data, "id").to_string()
    }

    /// The `message` of an error body.
    #[track_caller]
    pub fn message(&self) -> &str {
        self.body["message"]
            .as_str()
            .unwrap_or_else(|| panic!("no message in {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts a deterministic client error: this status, a JSON `message`, `x-should-retry: false`.
    #[track_caller]
    pub fn client_error(self, status: StatusCode) -> Resp {
        let r = self.expect(status);
        assert!(!r.message().is_empty());
        assert_eq!(r.header("x-should-retry"), Some("false"));
        assert!(
            r.header("content-type")
                .is_some_and(|c| c.contains("application/json")),
            "error without a JSON content type: {:?}",
            r.headers
        );
        r
    }
}

pub struct TestApp {
    pub state: AppState,
    pub clock: Arc<FixedClock>,
    pub router: Router,
    sandbox: String,
    production: String,
    _dir: Option<TempDir>,
    _db: Option<crate::store_conformance::TestDb>,
}

impl TestApp {
    /// An app whose clock reads `now` and whose invoices have the default 24 h grace.
    pub async fn new(now: &str) -> TestApp {
        TestApp::with_grace(now, DAY_MS).await
    }

    pub async fn with_grace(now: &str, invoice_grace_ms: i64) -> TestApp {
        TestApp::with_settings(
            now,
            Settings {
                invoice_grace_ms,
                ..TestApp::settings()
            },
        )
        .await
    }

    /// The settings [`TestApp::new`] uses: a job that never runs on its own, the test edge key.
    pub fn settings() -> Settings {
        Settings {
            job_interval: std::time::Duration::from_secs(3600),
            edge_hmac_key: Some(tally_central::Secret(EDGE_KEY.to_vec())),
            ..Settings::default()
        }
    }

    pub async fn with_settings(now: &str, settings: Settings) -> TestApp {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let stores = tally_central::store::open(&url, &Default::default())
            .await
            .expect("open store");
        TestApp::on_stores(now, settings, stores, Some(dir), None).await
    }

    /// An app like [`TestApp::new`] on a fresh database of `backend` (PostgreSQL: a throwaway
    /// database on the test server, dropped with the app).
    pub async fn on_backend(now: &str, backend: crate::store_conformance::Backend) -> TestApp {
        let db = crate::store_conformance::TestDb::new(backend).await;
        let stores = db.stores.clone();
        TestApp::on_stores(now, TestApp::settings(), stores, None, Some(db)).await
    }

    async fn on_stores(
        now: &str,
        settings: Settings,
        stores: tally_central::store::Stores,
        dir: Option<TempDir>,
        db: Option<crate::store_conformance::TestDb>,
    ) -> TestApp {
        let now_ms = ms(now);
        let clock = Arc::new(FixedClock::new(now_ms));
        let state = AppState::new(stores.clone(), clock.clone(), settings);
        let router = tally_central::http::router(state.clone());
        let sandbox =
            tally_central::auth::create_token(stores.tokens.as_ref(), Env::Sandbox, None, now_ms)
                .await
                .expect("sandbox token");
        let production = tally_central::auth::create_token(
            stores.tokens.as_ref(),
            Env::Production,
            None,
            now_ms,
        )
        .await
        .expect("production token");
        TestApp {
            state,
            clock,
            router,
            sandbox,
            production,
            _dir: dir,
            _db: db,
        }
    }

    /// Another replica on the same database: its own pool (PostgreSQL; the same stores on a
    /// SQLite file, which has one process), the same clock and settings.
    pub async fn replica(&self) -> AppState {
        let stores = match &self._db {
            Some(db) => db.reopen().await,
            None => self.state.stores.clone(),
        };
        AppState::new(stores, self.clock.clone(), (*self.state.settings).clone())
    }

    pub fn set_now(&self, now: &str) {
        self.clock.set(ms(now));
    }

    /// One pass of the background job (finalization, pruning), as `tally serve` runs it.
    pub async fn run_jobs(&self) {
        tally_central::service::jobs::run_jobs_once(&self.state)
            .await
            .expect("job pass")
            .expect("the job lock is free");
    }

    pub fn set_now_ms(&self, now_ms: i64) {
        self.clock.set(now_ms);
    }

    pub fn token(&self, env: Env) -> &str {
        match env {
            Env::Sandbox => &self.sandbox,
            Env::Production => &self.production,
        }
    }

    /// Sends any request through the router.
    pub async fn request(&self, req: Request<Body>) -> Resp {
        let res = self
            .router
            .clone()
            .oneshot(req)
            .await
            .expect("the router is infallible");
        let status = res.status();
        let headers = res.headers().clone();
        let raw = res
            .into_body()
            .collect()
            .await
            .expect("read body")
            .to_bytes();
        let body = if raw.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            serde_json::from_slice(&raw).unwrap_or_else(|e| {
                panic!(
                    "response is not JSON ({e}): {:?}",
                    String::from_utf8_lossy(&raw)
                )
            })
        };
        Resp {
            status,
            headers,
            raw,
            body,
        }
    }

    /// A request with an optional bearer token, raw body and extra headers.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut b = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if body.is_some() {
            b = b.header(header::CONTENT_TYPE, "application/json");
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b
            .body(body.map_or_else(Body::empty, Body::from))
            .expect("request");
        self.request(req).await
    }

    pub async fn post_as(&self, env: Env, path: &str, body: Value) -> Resp {
        let bytes = serde_json::to_vec(&body).expect("json");
        self.send(Method::POST, path, Some(self.token(env)), Some(bytes), &[])
            .await
    }

    pub async fn get_as(&self, env: Env, path: &str) -> Resp {
        self.send(Method::GET, path, Some(self.token(env)), None, &[])
            .await
    }

    /// POST with the sandbox token.
    pub async fn post(&self, path: &str, body: Value) -> Resp {
        self.post_as(Env::Sandbox, path, body).await
    }

    /// GET with the sandbox token.
    pub async fn get(&self, path: &str) -> Resp {
        self.get_as(Env::Sandbox, path).await
    }

    /// POST with the sandbox token and a raw body (or none at all).
    pub async fn post_raw(&self, path: &str, body: Option<&[u8]>) -> Resp {
        self.send(
            Method::POST,
            path,
            Some(&self.sandbox),
            body.map(<[u8]>::to_vec),
            &[],
        )
        .await
    }

    // -----------------------------------------------------------------------------------------
    // Builders (each asserts success)

    pub async fn metric(&self, env: Env, body: Value) -> String {
        self.post_as(env, "/v1/billable-metrics/create", body)
            .await
            .id()
    }

    /// A USAGE product on `metric_id`; `extra` fields are merged into the request.
    pub async fn usage_product(
        &self,
        env: Env,
        name: &str,
        metric_id: &str,
        extra: Value,
    ) -> String {
        let mut body = json!({ "name": name, "type": "USAGE", "billable_metric_id": metric_id });
        merge(&mut body, extra);
        self.post_as(env, "/v1/contract-pricing/products/create", body)
            .await
            .id()
    }

    pub async fn rate_card(&self, env: Env, name: &str) -> String {
        self.post_as(
            env,
            "/v1/contract-pricing/rate-cards/create",
            json!({ "name": name }),
        )
        .await
        .id()
    }

    /// Adds an open-ended entitled FLAT rate.
    pub async fn flat_rate(&self, env: Env, card: &str, product: &str, price: &str, from: &str) {
        self.post_as(
            env,
            "/v1/contract-pricing/rate-cards/addRate",
            json!({
                "rate_card_id": card, "product_id": product, "starting_at": from,
                "entitled": true, "rate_type": "FLAT", "price": dec(price),
            }),
        )
        .await
        .expect(StatusCode::OK);
    }

    pub async fn customer(&self, env: Env, name: &str, aliases: &[&str]) -> String {
        self.post_as(
            env,
            "/v1/customers",
            json!({ "name": name, "ingest_aliases": aliases }),
        )
        .await
        .id()
    }

    pub async fn contract(&self, env: Env, customer: &str, card: &str, from: &str) -> String {
        self.post_as(
            env,
            "/v1/contracts/create",
            json!({ "customer_id": customer, "rate_card_id": card, "starting_at": from }),
        )
        .await
        .id()
    }

    /// Ingests `events`, asserts 200, returns `data` (accepted, duplicates, rejected).
    pub async fn ingest(&self, env: Env, events: Value) -> Value {
        self.post_as(env, "/v1/ingest", events).await.data()
    }

    /// Every invoice of a customer (one page of up to 100), with an optional extra query.
    pub async fn invoices(&self, env: Env, customer: &str, query: &str) -> Vec<Value> {
        let sep = if query.is_empty() { "" } else { "&" };
        let data = self
            .get_as(
                env,
                &format!("/v1/customers/{customer}/invoices?limit=100{sep}{query}"),
            )
            .await
            .data();
        data.as_array().expect("invoice list").clone()
    }

    /// The customer's one invoice covering `at` (panics unless exactly one does).
    pub async fn invoice_at(&self, env: Env, customer: &str, at: &str) -> Value {
        let at_ms = ms(at);
        let all = self.invoices(env, customer, "").await;
        let mut hits = all.into_iter().filter(|inv| {
            ms(text(inv, "start_timestamp")) <= at_ms && at_ms < ms(text(inv, "end_timestamp"))
        });
        let inv = hits
            .next()
            .unwrap_or_else(|| panic!("no invoice covers {at}"));
        assert!(hits.next().is_none(), "several invoices cover {at}");
        inv
    }
}

/// `(quantity, unit_price, total, starting_at, ending_before)` of each line of an invoice, and
/// its total, as exact text.
pub fn line_summary(inv: &Value) -> (Vec<[String; 5]>, String) {
    let lines = inv["line_items"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|l| {
            [
                num(&l["quantity"]),
                num(&l["unit_price"]),
                num(&l["total"]),
                text(l, "starting_at").to_string(),
                text(l, "ending_before").to_string(),
            ]
        })
        .collect();
    (lines, num(&inv["total"]))
}

/// A JSON number with exactly this text.
pub fn dec(text: &str) -> Value {
    Value::Number(text.parse().unwrap_or_else(|_| panic!("bad number {text}")))
}

/// Shallow-merges the fields of `extra` (an object or null) into `body`.
pub fn merge(body: &mut Value, extra: Value) {
    if let (Some(obj), Value::Object(more)) = (body.as_object_mut(), extra) {
        obj.extend(more);
    }
}

/// One usage event.
pub fn event(tid: &str, customer: &str, event_type: &str, at: &str, properties: Value) -> Value {
    json!({
        "transaction_id": tid, "customer_id": customer, "event_type": event_type,
        "timestamp": at, "properties": properties,
    })
}

/// The usual setup: a COUNT metric on `event_type`, a product priced FLAT `price` from
/// `contract_start`, a customer with `alias`, and a monthly contract from `contract_start`.
pub struct Billing {
    pub metric: String,
    pub product: String,
    pub card: String,
    pub customer: String,
    pub contract: String,
}

impl Billing {
    pub async fn count(
        app: &TestApp,
        env: Env,
        event_type: &str,
        price: &str,
        alias: &str,
        contract_start: &str,
    ) -> Billing {
        let metric = app
            .metric(
                env,
                json!({
                    "name": format!("{event_type} count"), "aggregation_type": "COUNT",
                    "event_type_filter": { "in_values": [event_type] },
                }),
            )
            .await;
        let product = app
            .usage_product(env, &format!("{event_type} product"), &metric, Value::Null)
            .await;
        let card = app.rate_card(env, &format!("{event_type} card")).await;
        app.flat_rate(env, &card, &product, price, contract_start)
            .await;
        let customer = app.customer(env, &format!("{alias} inc"), &[alias]).await;
        let contract = app.contract(env, &customer, &card, contract_start).await;
        Billing {
            metric,
            product,
            card,
            customer,
            contract,
        }
    }
}

/// Sends every request at once (one task each) and returns the responses in order.
pub async fn all_at_once(app: &Arc<TestApp>, requests: Vec<(String, Value)>) -> Vec<Resp> {
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|(path, body)| {
            let app = app.clone();
            tokio::spawn(async move { app.post(&path, body).await })
        })
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.expect("request task"));
    }
    out
}

/// Runs each `async fn name(backend: Backend)` as two tests, `name::sqlite` and
/// `name::postgres` (the caller's module must have `Backend` in scope).
macro_rules! both_backends {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                use super::*;
                #[tokio::test]
                async fn sqlite() {
                    super::$name(Backend::Sqlite).await;
                }
                #[tokio::test]
                async fn postgres() {
                    super::$name(Backend::Postgres).await;
                }
            }
        )+
    };
}
