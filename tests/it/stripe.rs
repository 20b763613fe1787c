//! Finalized invoices pushed to Stripe, end to end: a real `tally serve` (grace 0, a 1 s job)
//! pushes to localstripe (PyPI `localstripe`, pinned below; started per test on a free port by
//! tests/stripe/localstripe_tally.py, which adds the one-off invoice calls localstripe lacks).
//! Exactly one Stripe invoice with the hand-computed cent amounts, across a kill -9 and restart,
//! a kill -9 in the middle of a push, and a redelivery whose record of what was sent is gone; an unknown Stripe customer
//! raises one `invoice.billing_provider_error` webhook and the invoice shows the error.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tally_core::time::{format_rfc3339_ms, HOUR_MS};
use tally_tests::{python_package_ready, workspace_root, ApiClient, PgDatabase, TallyServer};

const LOCALSTRIPE_VERSION: &str = "1.15.10";
const STRIPE_KEY: &str = "sk_test_tally_4c1d9e7a2b-never-log-me";

/// localstripe with Tally's additions, on a free port.
struct LocalStripe {
    child: Child,
    base: String,
    /// Its stdout after the first line (`hanging` when `--hang-after-item` holds a response).
    said: Arc<Mutex<Vec<String>>>,
}

impl LocalStripe {
    fn start() -> LocalStripe {
        LocalStripe::start_with(&[])
    }

    fn start_with(args: &[&str]) -> LocalStripe {
        python_package_ready("localstripe", "localstripe", LOCALSTRIPE_VERSION);
        let script = workspace_root().join("tests/stripe/localstripe_tally.py");
        let dir = tempfile::tempdir().expect("temp dir");
        let mut child = Command::new("python3")
            .arg(&script)
            .args(args)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn localstripe");
        let mut line = String::new();
        let mut out = BufReader::new(child.stdout.take().expect("piped stdout"));
        out.read_line(&mut line).expect("localstripe's first line");
        let said = Arc::new(Mutex::new(Vec::new()));
        let keep = said.clone();
        std::thread::spawn(move || {
            for l in out.lines().map_while(Result::ok) {
                keep.lock().expect("lock").push(l);
            }
        });
        let port: u16 = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("localstripe said {line:?}"));
        LocalStripe {
            child,
            base: format!("http://127.0.0.1:{port}"),
            said,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, form: &[(&str, &str)]) -> Value {
        let http = reqwest::Client::new();
        let mut req = http
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(STRIPE_KEY);
        if method == reqwest::Method::GET {
            req = req.query(form);
        } else {
            let body: Vec<String> = form.iter().map(|(k, v)| format!("{k}={v}")).collect();
            req = req
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body.join("&"));
        }
        let res = req.send().await.expect("localstripe request");
        let text = res.text().await.expect("localstripe body");
        serde_json::from_str(&text).expect("localstripe JSON")
    }

    async fn customer(&self, name: &str) -> String {
        let c = self
            .call(reqwest::Method::POST, "/v1/customers", &[("name", name)])
            .await;
        c["id"].as_str().expect("a Stripe customer id").to_string()
    }

    async fn invoices(&self, customer: &str) -> Vec<Value> {
        let page = self
            .call(
                reqwest::Method::GET,
                "/v1/invoices",
                &[("customer", customer), ("limit", "100")],
            )
            .await;
        page["data"].as_array().cloned().unwrap_or_default()
    }
}

impl Drop for LocalStripe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A webhook receiver that answers 200 and keeps every body.
struct Receiver {
    port: u16,
    bodies: Arc<Mutex<Vec<Value>>>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind receiver");
        let port = listener.local_addr().expect("addr").port();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let kept = bodies.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    let lower = line.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_ok() {
                    if let Ok(v) = serde_json::from_slice(&body) {
                        kept.lock().expect("lock").push(v);
                    }
                }
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
            }
        });
        Receiver { port, bodies }
    }

    fn of_type(&self, kind: &str) -> Vec<Value> {
        let bodies = self.bodies.lock().expect("lock");
        bodies
            .iter()
            .filter(|b| b["type"] == json!(kind))
            .cloned()
            .collect()
    }
}

fn now_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(since.as_millis()).expect("ms fit i64")
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().expect("runtime")
}

fn start_tally(database: Option<&str>, stripe: &LocalStripe) -> TallyServer {
    start_tally_with(database, stripe, &[])
}

fn start_tally_with(database: Option<&str>, stripe: &LocalStripe, extra: &[&str]) -> TallyServer {
    let mut args = vec![
        "--invoice-grace-hours",
        "0",
        "--job-interval-secs",
        "1",
        "--webhook-retry-base-ms",
        "100",
        "--stripe-api-base",
        &stripe.base,
    ];
    args.extend_from_slice(extra);
    TallyServer::start_on(database, &args, &[("TALLY_STRIPE_API_KEY", STRIPE_KEY)])
}

/// A customer billing through Stripe customer `stripe_customer`, 10 calls in a period that
/// ended an hour ago, priced at 100/3, 200/3 and 250 cents a call (the first two through a ÷3
/// conversion), and then its contract: the job finalizes its invoice. (customer, contract).
async fn billed_customer(api: &ApiClient, stripe_customer: &str) -> (String, String) {
    billed_through(api, stripe_customer, Route::Configuration).await
}

/// How a test customer's contract bills.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    /// Through the customer's Stripe billing-provider configuration, named by the contract.
    Configuration,
    /// Through the customer's legacy `billing_config` (the contract names none).
    Legacy,
    /// Through no provider.
    None,
}

async fn billed_through(api: &ApiClient, stripe_customer: &str, route: Route) -> (String, String) {
    let hour = now_ms() / HOUR_MS * HOUR_MS;
    let (start, end) = (hour - 3 * HOUR_MS, hour - HOUR_MS);
    let metric = api
        .create(
            "/v1/billable-metrics/create",
            &json!({
                "name": format!("calls {stripe_customer}"), "aggregation_type": "COUNT",
                "event_type_filter": { "in_values": ["call"] },
            }),
        )
        .await
        .expect("metric");
    let card = api
        .create(
            "/v1/contract-pricing/rate-cards/create",
            &json!({ "name": format!("card {stripe_customer}") }),
        )
        .await
        .expect("rate card");
    for (name, divide, price) in [
        ("A thirds", true, 100),
        ("B two thirds", true, 200),
        ("C flat", false, 250),
    ] {
        let mut product = json!({ "name": name, "type": "USAGE", "billable_metric_id": metric });
        if divide {
            product["quantity_conversion"] =
                json!({ "conversion_factor": 3, "operation": "DIVIDE" });
        }
        let product = api
            .create("/v1/contract-pricing/products/create", &product)
            .await
            .expect("product");
        let (status, body) = api
            .post(
                "/v1/contract-pricing/rate-cards/addRate",
                &json!({
                    "rate_card_id": card, "product_id": product,
                    "starting_at": format_rfc3339_ms(start), "entitled": true,
                    "rate_type": "FLAT", "price": price,
                }),
            )
            .await
            .expect("addRate");
        assert_eq!(status, 200, "{body}");
    }
    let mut customer = json!({ "name": format!("Acme {stripe_customer}") });
    match route {
        Route::Configuration => {
            customer["customer_billing_provider_configurations"] = json!([{
                "billing_provider": "stripe", "delivery_method": "direct_to_billing_provider",
                "configuration": {
                    "stripe_customer_id": stripe_customer,
                    "stripe_collection_method": "charge_automatically",
                },
            }]);
        }
        Route::Legacy => {
            customer["billing_config"] = json!({
                "billing_provider_type": "stripe",
                "billing_provider_customer_id": stripe_customer,
                "stripe_collection_method": "send_invoice",
            });
        }
        Route::None => {}
    }
    let customer = api
        .create("/v1/customers", &customer)
        .await
        .expect("customer");
    // Usage before the contract, so the job cannot finalize the period without it.
    let events: Vec<Value> = (0..10)
        .map(|i| {
            json!({
                "transaction_id": format!("{customer}-{i}"), "customer_id": customer,
                "event_type": "call", "timestamp": format_rfc3339_ms(start + i * 60_000),
                "properties": {},
            })
        })
        .collect();
    let (status, body) = api
        .post("/v1/ingest", &json!(events))
        .await
        .expect("ingest");
    assert_eq!(status, 200, "{body}");
    let mut contract = json!({
        "customer_id": customer, "rate_card_id": card,
        "starting_at": format_rfc3339_ms(start), "ending_before": format_rfc3339_ms(end),
    });
    if route == Route::Configuration {
        contract["billing_provider_configuration"] = json!({
            "billing_provider": "stripe", "delivery_method": "direct_to_billing_provider",
        });
    }
    let contract = api
        .create("/v1/contracts/create", &contract)
        .await
        .expect("contract");
    (customer, contract)
}

/// The customer's finalized invoices as Tally shows them.
async fn finalized(api: &ApiClient, customer: &str) -> Vec<Value> {
    let (status, body) = api
        .get(&format!(
            "/v1/customers/{customer}/invoices?status=FINALIZED"
        ))
        .await
        .expect("list invoices");
    assert_eq!(status, 200, "{body}");
    body["data"].as_array().cloned().unwrap_or_default()
}

/// Waits until the customer's one finalized invoice shows `external_status`; that invoice.
async fn wait_external(
    api: &ApiClient,
    customer: &str,
    status: &str,
    server: &TallyServer,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let invoices = finalized(api, customer).await;
        if let [one] = invoices.as_slice() {
            if one["external_invoice"]["external_status"] == json!(status) {
                return one.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "no invoice reached external status {status}: {invoices:#?}\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The one Stripe invoice of the customer, with its lines as description → cents.
async fn one_stripe_invoice(
    stripe: &LocalStripe,
    customer: &str,
) -> (Value, BTreeMap<String, i64>) {
    let invoices = stripe.invoices(customer).await;
    assert_eq!(
        invoices.len(),
        1,
        "exactly one Stripe invoice: {invoices:#?}"
    );
    let inv = invoices[0].clone();
    let lines = inv["lines"]["data"].as_array().cloned().unwrap_or_default();
    let by_name: BTreeMap<String, i64> = lines
        .iter()
        .map(|l| {
            (
                l["description"].as_str().unwrap_or("?").to_string(),
                l["amount"].as_i64().expect("integer cents"),
            )
        })
        .collect();
    assert_eq!(lines.len(), by_name.len(), "no duplicate items: {lines:#?}");
    (inv, by_name)
}

/// Forgets what Tally recorded of the push and makes its message due again, as if central had
/// died after Stripe answered and before anything was recorded (central is stopped meanwhile).
async fn forget_the_record(database: &str) {
    let statements = [
        "DELETE FROM stripe_push_items",
        "UPDATE stripe_pushes SET stripe_invoice_id = NULL, status = 'QUEUED'",
        "UPDATE outbox SET delivered_ms = NULL, next_attempt_ms = 0, lease_owner = NULL, \
         lease_until_ms = NULL WHERE topic = 'stripe'",
    ];
    if database.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(database)
            .await
            .expect("open sqlite");
        for s in statements {
            sqlx::query(s).execute(&pool).await.expect(s);
        }
        pool.close().await;
    } else {
        let pool = sqlx::PgPool::connect(database)
            .await
            .expect("open postgres");
        for s in statements {
            sqlx::query(s).execute(&pool).await.expect(s);
        }
        pool.close().await;
    }
}

/// The expected lines (see `exactly_once`).
fn expected_lines() -> BTreeMap<String, i64> {
    [
        ("A thirds".to_string(), 333),
        ("B two thirds".to_string(), 667),
        ("C flat".to_string(), 2500),
    ]
    .into_iter()
    .collect()
}

fn exactly_once(database: Option<&str>) {
    let stripe = LocalStripe::start();
    let mut server = start_tally(database, &stripe);
    let api = ApiClient::new(&server);
    let rt = rt();
    let (cus, customer) = rt.block_on(async {
        let cus = stripe.customer("Acme").await;
        let (customer, _) = billed_customer(&api, &cus).await;
        (cus, customer)
    });
    let check = |server: &TallyServer| {
        let api = ApiClient::new(server);
        rt.block_on(async {
            let tally = wait_external(&api, &customer, "FINALIZED", server).await;
            let (inv, lines) = one_stripe_invoice(&stripe, &cus).await;
            // Hand-computed: 10 calls ÷ 3 = 3.333333333333 (12 places) × 100 = 333.3333333333
            // and × 200 = 666.6666666666; 10 × 250 = 2500. Cumulative half-even rounding:
            // 333, round(999.9999999999) − 333 = 667, 2500; total 3500 = Tally's 3499.9999999999
            // rounded to the cent.
            assert_eq!(lines, expected_lines(), "{inv:#}");
            assert_eq!(tally["total"].to_string(), "3499.9999999999", "{tally:#}");
            assert_eq!(inv["total"], json!(3500), "{inv:#}");
            assert_eq!(inv["status"], json!("open"), "finalized in Stripe: {inv:#}");
            assert_eq!(inv["currency"], json!("usd"));
            assert_eq!(inv["customer"], json!(cus));
            assert_eq!(inv["metadata"]["tally_invoice_id"], tally["id"]);
            assert_eq!(
                tally["external_invoice"]["billing_provider_type"],
                json!("stripe")
            );
            assert_eq!(tally["external_invoice"]["invoice_id"], inv["id"]);
        });
    };
    check(&server);

    // kill -9 and restart: nothing is pushed again.
    server.kill();
    server.restart();
    std::thread::sleep(Duration::from_secs(3));
    check(&server);

    // A redelivery whose record is gone finds the invoice and its items in Stripe by metadata.
    let before = count(&server.logs(), "kind=stripe.invoice");
    server.kill();
    rt.block_on(forget_the_record(server.database_url()));
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(&server.logs(), "kind=stripe.invoice") <= before {
        assert!(
            Instant::now() < deadline,
            "no redelivery: {}",
            server.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    check(&server);
    assert!(
        !server.logs().contains(STRIPE_KEY),
        "the Stripe key never reaches the logs"
    );
}

fn count(logs: &str, needle: &str) -> usize {
    logs.lines().filter(|l| l.contains(needle)).count()
}

#[test]
fn sqlite_pushes_each_finalized_invoice_to_stripe_exactly_once() {
    exactly_once(None);
}

#[test]
fn postgres_pushes_each_finalized_invoice_to_stripe_exactly_once() {
    let db = PgDatabase::create();
    exactly_once(Some(db.url()));
}

/// central is killed (-9) while Stripe holds its answer to the second item (created in Stripe,
/// not yet recorded by Tally): after a restart the lease expires, the push continues from its
/// record, finds the second item on the Stripe invoice by its metadata, and creates only the third.
fn survives_kill_mid_push(database: Option<&str>) {
    let stripe = LocalStripe::start_with(&["--hang-after-item", "2"]);
    let mut server = start_tally_with(database, &stripe, &["--webhook-timeout-secs", "5"]);
    let api = ApiClient::new(&server);
    let rt = rt();
    let (cus, customer) = rt.block_on(async {
        let cus = stripe.customer("Crash").await;
        let (customer, _) = billed_customer(&api, &cus).await;
        (cus, customer)
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while !stripe
        .said
        .lock()
        .expect("lock")
        .iter()
        .any(|l| l == "hanging")
    {
        assert!(
            Instant::now() < deadline,
            "the push never reached the second item"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server.kill();
    server.restart();
    let api = ApiClient::new(&server);
    rt.block_on(async {
        let tally = wait_external(&api, &customer, "FINALIZED", &server).await;
        let (inv, lines) = one_stripe_invoice(&stripe, &cus).await;
        assert_eq!(lines, expected_lines(), "{inv:#}");
        assert_eq!(inv["total"], json!(3500));
        assert_eq!(inv["metadata"]["tally_invoice_id"], tally["id"]);
    });
}

#[test]
fn sqlite_stripe_push_survives_kill_mid_push() {
    survives_kill_mid_push(None);
}

#[test]
fn postgres_stripe_push_survives_kill_mid_push() {
    let db = PgDatabase::create();
    survives_kill_mid_push(Some(db.url()));
}

/// A contract naming no configuration bills through the customer's legacy `billing_config` of
/// type stripe (here `send_invoice`); a customer with neither is not pushed and shows no
/// `external_invoice`.
#[test]
fn legacy_billing_config_pushes_and_no_configuration_does_not() {
    let stripe = LocalStripe::start();
    let server = start_tally(None, &stripe);
    let api = ApiClient::new(&server);
    rt().block_on(async {
        let cus = stripe.customer("Legacy").await;
        let (customer, _) = billed_through(&api, &cus, Route::Legacy).await;
        let (plain, _) = billed_through(&api, "cus_unused", Route::None).await;
        wait_external(&api, &customer, "FINALIZED", &server).await;
        let (inv, lines) = one_stripe_invoice(&stripe, &cus).await;
        assert_eq!(lines, expected_lines(), "{inv:#}");
        assert_eq!(inv["collection_method"], json!("send_invoice"), "{inv:#}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let plain_invoices = loop {
            let invoices = finalized(&api, &plain).await;
            if !invoices.is_empty() {
                break invoices;
            }
            assert!(
                Instant::now() < deadline,
                "the plain invoice never finalized"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert!(
            plain_invoices[0].get("external_invoice").is_none(),
            "{:#}",
            plain_invoices[0]
        );
    });
}

/// An unknown Stripe customer: the push fails with Stripe's 404, is retried with backoff, the
/// invoice shows INVALID_REQUEST_ERROR with Stripe's message, and every endpoint gets one
/// `invoice.billing_provider_error` however many retries fail.
#[test]
fn unknown_stripe_customer_raises_one_billing_provider_error() {
    let stripe = LocalStripe::start();
    let receiver = Receiver::start();
    let server = start_tally(None, &stripe);
    let api = ApiClient::new(&server);
    rt().block_on(async {
        api.create(
            "/v1/webhook-endpoints/create",
            &json!({ "url": format!("http://127.0.0.1:{}/hooks", receiver.port) }),
        )
        .await
        .expect("endpoint");
        let (customer, contract) = billed_customer(&api, "cus_doesnotexist").await;
        let tally = wait_external(&api, &customer, "INVALID_REQUEST_ERROR", &server).await;
        let error = tally["external_invoice"]["billing_provider_error"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(error.contains("HTTP 404"), "{tally:#}");
        assert!(
            tally["external_invoice"].get("invoice_id").is_none(),
            "{tally:#}"
        );

        // Let the push fail a few more times.
        let deadline = Instant::now() + Duration::from_secs(30);
        while count(&server.logs(), "kind=stripe.invoice") < 4 {
            assert!(Instant::now() < deadline, "no retries: {}", server.logs());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let errors = receiver.of_type("invoice.billing_provider_error");
        assert_eq!(errors.len(), 1, "one error webhook: {errors:#?}");
        let e = &errors[0]["properties"];
        assert_eq!(e["invoice_id"], tally["id"]);
        assert_eq!(e["customer_id"], json!(customer));
        assert_eq!(e["contract_id"], json!(contract));
        assert_eq!(e["billing_provider"], json!("stripe"));
        assert_eq!(e["billing_provider_error"], json!(error));
        assert_eq!(receiver.of_type("invoice.finalized").len(), 1);

        // The single invoice read shows it too.
        let (status, one) = api
            .get(&format!(
                "/v1/customers/{customer}/invoices/{}",
                tally["id"].as_str().expect("id")
            ))
            .await
            .expect("get invoice");
        assert_eq!(status, 200, "{one}");
        assert_eq!(
            one["data"]["external_invoice"]["external_status"],
            json!("INVALID_REQUEST_ERROR")
        );
    });
    assert!(stripe.invoices_blocking("cus_doesnotexist").is_empty());
}

impl LocalStripe {
    fn invoices_blocking(&self, customer: &str) -> Vec<Value> {
        rt().block_on(async {
            let page = self
                .call(
                    reqwest::Method::GET,
                    "/v1/invoices",
                    &[("customer", customer)],
                )
                .await;
            page["data"].as_array().cloned().unwrap_or_default()
        })
    }
}
