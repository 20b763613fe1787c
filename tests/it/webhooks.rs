//! Webhooks through the outbox, end to end: a real `tally serve` finalizes invoices (grace 0, a
//! 1 s job) and a real local receiver (tests/webhooks/receiver.mjs) verifies every request with
//! Metronome's official SDK (`webhooks.unwrap`, TypeScript: the Python SDK 4.12.0 has no webhook
//! helpers) and logs it. SQLite and PostgreSQL alike; two replicas on one PostgreSQL database.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tally_core::time::{format_rfc3339_ms, HOUR_MS};
use tally_tests::{workspace_root, ApiClient, PgDatabase, TallyServer};
use tempfile::TempDir;

pub(crate) const SECRET: &str = "whsec_tally_test_4d8144d2098bdb3e5f";

/// `tally serve` arguments: invoices finalize as soon as their period ends, the job runs every
/// second, and a failed delivery is retried after ~100 ms (doubling).
pub(crate) fn serve_args(extra: &[&'static str]) -> Vec<&'static str> {
    let mut args = vec![
        "--invoice-grace-hours",
        "0",
        "--job-interval-secs",
        "1",
        "--webhook-retry-base-ms",
        "100",
    ];
    args.extend_from_slice(extra);
    args
}

/// Installs tests/webhooks' `@metronome/sdk` (pinned in its package-lock.json) if missing: into a
/// directory of its own, then renamed into place, so concurrent test processes never see half an
/// install.
fn ts_sdk_ready() -> PathBuf {
    let dir = workspace_root().join("tests/webhooks");
    let installed = |d: &Path| d.join("node_modules/@metronome/sdk/package.json").is_file();
    if installed(&dir) {
        return dir;
    }
    let tmp = tempfile::Builder::new()
        .prefix(".install-")
        .tempdir_in(&dir)
        .expect("a temp dir in tests/webhooks");
    for f in ["package.json", "package-lock.json"] {
        std::fs::copy(dir.join(f), tmp.path().join(f)).expect("copy the package files");
    }
    let out = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--ignore-scripts"])
        .current_dir(tmp.path())
        .stdin(Stdio::null())
        .output()
        .expect("run npm ci");
    assert!(
        out.status.success(),
        "npm ci in tests/webhooks failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Another process may have won the race: theirs is as good as ours.
    let _ = std::fs::rename(tmp.path().join("node_modules"), dir.join("node_modules"));
    assert!(
        installed(&dir),
        "@metronome/sdk is not installed in tests/webhooks"
    );
    dir
}

/// The receiver process and its log.
pub(crate) struct Receiver {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: TempDir,
}

impl Receiver {
    pub(crate) fn start(fail_first: u32, hang_first: u32) -> Receiver {
        let sdk = ts_sdk_ready();
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("received.ndjson");
        std::fs::write(&log, "").expect("create the log");
        let mut child = Command::new("node")
            .arg(sdk.join("receiver.mjs"))
            .args(["--secret", SECRET, "--log"])
            .arg(&log)
            .args(["--fail-first", &fail_first.to_string()])
            .args(["--hang-first", &hang_first.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn node receiver.mjs");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout"))
            .read_line(&mut line)
            .expect("the receiver's first line");
        let port = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("receiver said {line:?}"));
        Receiver {
            child,
            port,
            log,
            _dir: dir,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hooks", self.port)
    }

    /// Every request received so far, in order.
    pub(crate) fn entries(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .expect("read the receiver log")
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("a JSON log line"))
            .collect()
    }

    /// Message id → the answers the receiver gave it, in order (`200`, `500`, `"hang"`).
    pub(crate) fn answers(&self) -> BTreeMap<String, Vec<Value>> {
        let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for e in self.entries() {
            let id = e["id"].as_str().unwrap_or("?").to_string();
            out.entry(id).or_default().push(e["answered"].clone());
        }
        out
    }

    /// Waits until `n` distinct messages were answered 200.
    pub(crate) fn wait_delivered(&self, n: usize, timeout: Duration, what: &str) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let delivered: Vec<Value> = self
                .entries()
                .into_iter()
                .filter(|e| e["answered"] == json!(200))
                .collect();
            let ids: BTreeSet<&str> = delivered.iter().filter_map(|e| e["id"].as_str()).collect();
            if ids.len() >= n {
                return delivered;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: {} of {n} messages delivered within {timeout:?}; received {:#?}",
                ids.len(),
                self.entries()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn now_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(since.as_millis()).expect("ms fit i64")
}

pub(crate) fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().expect("runtime")
}

/// Sets the secret and creates an endpoint for `url`; its id.
pub(crate) async fn endpoint(api: &ApiClient, url: &str) -> String {
    let (status, body) = api
        .post(
            "/v1/client/config/webhook_secret",
            &json!({ "webhook_secret": SECRET }),
        )
        .await
        .expect("set secret");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, Value::Null, "the secret is never echoed");
    api.create(
        "/v1/webhook-endpoints/create",
        &json!({ "url": url, "description": "test receiver" }),
    )
    .await
    .expect("create endpoint")
}

/// A customer with a contract whose only period ended an hour ago: the 1 s job finalizes its
/// invoice. Returns (customer id, contract id).
async fn finished_contract(api: &ApiClient, name: &str) -> (String, String) {
    let hour = now_ms() / HOUR_MS * HOUR_MS;
    let (start, end) = (hour - 3 * HOUR_MS, hour - HOUR_MS);
    let card = api
        .create(
            "/v1/contract-pricing/rate-cards/create",
            &json!({ "name": format!("card {name}") }),
        )
        .await
        .expect("rate card");
    let customer = api
        .create("/v1/customers", &json!({ "name": name }))
        .await
        .expect("customer");
    let contract = api
        .create(
            "/v1/contracts/create",
            &json!({
                "customer_id": customer, "rate_card_id": card,
                "starting_at": format_rfc3339_ms(start), "ending_before": format_rfc3339_ms(end),
            }),
        )
        .await
        .expect("contract");
    (customer, contract)
}

async fn finalized_invoice_ids(api: &ApiClient, customer: &str) -> Vec<String> {
    let (status, body) = api
        .get(&format!(
            "/v1/customers/{customer}/invoices?status=FINALIZED"
        ))
        .await
        .expect("list invoices");
    assert_eq!(status, 200, "{body}");
    body["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|i| i["id"].as_str().expect("invoice id").to_string())
        .collect()
}

async fn deliveries(api: &ApiClient, endpoint: &str) -> Vec<Value> {
    let (status, body) = api
        .get(&format!("/v1/webhook-endpoints/{endpoint}/deliveries"))
        .await
        .expect("deliveries");
    assert_eq!(status, 200, "{body}");
    body["data"].as_array().expect("data").clone()
}

/// One invoice finalizes: its endpoint receives one verified `invoice.finalized`, an archived
/// endpoint receives nothing, and the delivery log says delivered after one attempt.
fn delivers_signed_invoice_finalized_once(database: Option<&str>) {
    let receiver = Receiver::start(0, 0);
    let server = TallyServer::start_on(database, &serve_args(&[]), &[]);
    let api = ApiClient::new(&server);
    rt().block_on(async {
        let ep = endpoint(&api, &receiver.url()).await;
        let archived = api
            .create(
                "/v1/webhook-endpoints/create",
                &json!({ "url": format!("{}?archived", receiver.url()) }),
            )
            .await
            .expect("second endpoint");
        api.data("/v1/webhook-endpoints/archive", &json!({ "id": archived }))
            .await
            .expect("archive");
        let (customer, contract) = finished_contract(&api, "Acme").await;

        let delivered = receiver.wait_delivered(1, Duration::from_secs(30), "invoice.finalized");
        let invoices = finalized_invoice_ids(&api, &customer).await;
        assert_eq!(invoices.len(), 1, "{invoices:?}");
        let e = &delivered[0];
        assert_eq!(e["verified"], json!(true), "{e}");
        assert_eq!(e["type"], json!("invoice.finalized"));
        assert_eq!(e["properties"]["invoice_id"], json!(invoices[0]));
        assert_eq!(e["properties"]["customer_id"], json!(customer));
        assert_eq!(e["properties"]["contract_id"], json!(contract));
        assert!(e["properties"]["invoice_finalized_date"].is_string(), "{e}");
        assert_eq!(
            e["date"], e["date_header"],
            "Date and X-Metronome-Date agree"
        );

        // Later job passes finalize nothing again, so nothing more is sent.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let answers = receiver.answers();
        assert_eq!(answers.len(), 1, "one message in all: {answers:?}");
        assert_eq!(answers.values().next(), Some(&vec![json!(200)]));

        let log = deliveries(&api, &ep).await;
        assert_eq!(log.len(), 1, "{log:?}");
        assert_eq!(log[0]["id"], e["id"]);
        assert_eq!(log[0]["type"], json!("invoice.finalized"));
        assert_eq!(log[0]["status"], json!("delivered"));
        assert_eq!(log[0]["attempts"], json!(1));
        assert!(log[0]["delivered_at"].is_string(), "{}", log[0]);
        assert!(deliveries(&api, &archived).await.is_empty());
    });
    let logs = server.logs();
    assert!(!logs.contains(SECRET), "the secret never reaches the logs");
}

#[test]
fn sqlite_delivers_signed_invoice_finalized_once() {
    delivers_signed_invoice_finalized_once(None);
}

#[test]
fn postgres_delivers_signed_invoice_finalized_once() {
    let db = PgDatabase::create();
    delivers_signed_invoice_finalized_once(Some(db.url()));
}

/// The receiver answers 500 twice, then 200: the same message is retried with backoff and
/// delivered on the third attempt, which the delivery log shows.
fn retries_until_the_receiver_recovers(database: Option<&str>) {
    let receiver = Receiver::start(2, 0);
    let server = TallyServer::start_on(database, &serve_args(&[]), &[]);
    let api = ApiClient::new(&server);
    rt().block_on(async {
        let ep = endpoint(&api, &receiver.url()).await;
        finished_contract(&api, "Retry").await;
        receiver.wait_delivered(1, Duration::from_secs(30), "after two 500s");
        let entries = receiver.entries();
        let answers: Vec<&Value> = entries.iter().map(|e| &e["answered"]).collect();
        assert_eq!(answers, [&json!(500), &json!(500), &json!(200)]);
        let ids: BTreeSet<&str> = entries.iter().filter_map(|e| e["id"].as_str()).collect();
        assert_eq!(ids.len(), 1, "one id across the retries: {entries:?}");
        assert!(entries.iter().all(|e| e["verified"] == json!(true)));

        // The log may trail the receiver by the time it takes to record the outcome.
        let deadline = Instant::now() + Duration::from_secs(10);
        let log = loop {
            let log = deliveries(&api, &ep).await;
            if log[0]["status"] == json!("delivered") || Instant::now() > deadline {
                break log;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(log[0]["status"], json!("delivered"), "{log:?}");
        assert_eq!(log[0]["attempts"], json!(3), "{log:?}");
        let error = log[0]["last_error"].as_str().unwrap_or_default();
        assert!(error.contains("HTTP 500"), "{error}");
    });
}

#[test]
fn sqlite_retries_until_the_receiver_recovers() {
    retries_until_the_receiver_recovers(None);
}

#[test]
fn postgres_retries_until_the_receiver_recovers() {
    let db = PgDatabase::create();
    retries_until_the_receiver_recovers(Some(db.url()));
}

/// central is killed (-9) while the receiver holds the delivery open: after a restart the lease
/// expires and the same message is delivered.
fn survives_kill_mid_delivery(database: Option<&str>) {
    let receiver = Receiver::start(0, 1);
    let args = serve_args(&["--webhook-timeout-secs", "2"]);
    let mut server = TallyServer::start_on(database, &args, &[]);
    let api = ApiClient::new(&server);
    let ep = rt().block_on(async {
        let ep = endpoint(&api, &receiver.url()).await;
        finished_contract(&api, "Crash").await;
        ep
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while !receiver
        .entries()
        .iter()
        .any(|e| e["answered"] == json!("hang"))
    {
        assert!(Instant::now() < deadline, "no delivery began");
        std::thread::sleep(Duration::from_millis(50));
    }
    server.kill();
    server.restart();
    let delivered = receiver.wait_delivered(1, Duration::from_secs(40), "after kill -9");
    let answers = receiver.answers();
    assert_eq!(
        answers.len(),
        1,
        "the same id before and after: {answers:?}"
    );
    assert_eq!(
        answers.values().next(),
        Some(&vec![json!("hang"), json!(200)])
    );
    assert_eq!(delivered[0]["verified"], json!(true));
    let api = ApiClient::new(&server);
    rt().block_on(async {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = deliveries(&api, &ep).await;
            if log[0]["status"] == json!("delivered") {
                assert_eq!(log[0]["attempts"], json!(2), "{log:?}");
                break;
            }
            assert!(Instant::now() < deadline, "{log:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

#[test]
fn sqlite_delivery_survives_kill_mid_delivery() {
    survives_kill_mid_delivery(None);
}

#[test]
fn postgres_delivery_survives_kill_mid_delivery() {
    let db = PgDatabase::create();
    survives_kill_mid_delivery(Some(db.url()));
}

/// Two replicas on one database, both finalizing and delivering: every invoice's message
/// arrives once.
#[test]
fn two_replicas_deliver_each_message_once() {
    const CONTRACTS: usize = 12;
    let receiver = Receiver::start(0, 0);
    let db = PgDatabase::create();
    let a = TallyServer::start_on(Some(db.url()), &serve_args(&[]), &[]);
    let b = TallyServer::start_on(Some(db.url()), &serve_args(&[]), &[]);
    let (ra, rb) = (ApiClient::new(&a), ApiClient::new(&b));
    rt().block_on(async {
        endpoint(&ra, &receiver.url()).await;
        let mut customers = Vec::new();
        for i in 0..CONTRACTS {
            let api = if i % 2 == 0 { &ra } else { &rb };
            customers.push(finished_contract(api, &format!("c{i}")).await.0);
        }
        receiver.wait_delivered(CONTRACTS, Duration::from_secs(60), "two replicas");
        tokio::time::sleep(Duration::from_secs(3)).await;
        let mut invoices = BTreeSet::new();
        for c in &customers {
            invoices.extend(finalized_invoice_ids(&rb, c).await);
        }
        assert_eq!(invoices.len(), CONTRACTS);
        let answers = receiver.answers();
        assert_eq!(answers.len(), CONTRACTS, "{answers:?}");
        for (id, a) in &answers {
            assert_eq!(a, &vec![json!(200)], "message {id} delivered once");
        }
        let received: BTreeSet<String> = receiver
            .entries()
            .iter()
            .map(|e| {
                e["properties"]["invoice_id"]
                    .as_str()
                    .unwrap_or("?")
                    .to_string()
            })
            .collect();
        assert_eq!(received, invoices);
    });
}

/// Bad input is a clear 4xx and changes nothing.
#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let server = TallyServer::start_on(None, &serve_args(&[]), &[]);
    let api = ApiClient::new(&server);
    rt().block_on(async {
        let ep = api
            .create(
                "/v1/webhook-endpoints/create",
                &json!({ "url": "https://hooks.example.com/tally" }),
            )
            .await
            .expect("create");
        for bad in [
            json!({ "url": "ftp://example.com/x" }),
            json!({ "url": "not a url" }),
            json!({ "url": "/relative/path" }),
            json!({ "url": "" }),
            json!({ "url": "https://user:pw@example.com/" }),
            json!({ "url": 5 }),
            json!({}),
            json!({ "url": "https://example.com/", "secret": "x" }),
        ] {
            let (status, body) = api
                .post("/v1/webhook-endpoints/create", &bad)
                .await
                .expect("post");
            assert_eq!(status, 400, "{bad} → {body}");
            assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
        }
        let (status, body) = api
            .post(
                "/v1/webhook-endpoints/archive",
                &json!({ "id": "00000000-0000-0000-0000-000000000000" }),
            )
            .await
            .expect("archive");
        assert_eq!(status, 404, "{body}");
        let (status, _) = api
            .get("/v1/webhook-endpoints/00000000-0000-0000-0000-000000000000/deliveries")
            .await
            .expect("deliveries");
        assert_eq!(status, 404);
        let (status, _) = api
            .post(
                "/v1/client/config/webhook_secret",
                &json!({ "webhook_secret": "" }),
            )
            .await
            .expect("secret");
        assert_eq!(status, 400);
        let (status, _) = api
            .get("/v1/webhook-endpoints?limit=0")
            .await
            .expect("list");
        assert_eq!(status, 400);

        let (status, list) = api.get("/v1/webhook-endpoints").await.expect("list");
        assert_eq!(status, 200);
        assert_eq!(
            list["data"],
            json!([{
                "id": ep, "url": "https://hooks.example.com/tally",
                "created_at": list["data"][0]["created_at"], "archived_at": null,
            }])
        );
        assert_eq!(list["next_page"], Value::Null);

        // Paging and archiving.
        let second = api
            .create(
                "/v1/webhook-endpoints/create",
                &json!({ "url": "http://127.0.0.1:9/x", "description": "two" }),
            )
            .await
            .expect("second");
        let (_, page) = api
            .get("/v1/webhook-endpoints?limit=1")
            .await
            .expect("page");
        assert_eq!(page["data"][0]["id"], json!(ep));
        let next = page["next_page"].as_str().expect("a next page").to_string();
        let (_, page) = api
            .get(&format!("/v1/webhook-endpoints?limit=1&next_page={next}"))
            .await
            .expect("page 2");
        assert_eq!(page["data"][0]["id"], json!(second));
        assert_eq!(page["data"][0]["description"], json!("two"));
        for _ in 0..2 {
            api.data("/v1/webhook-endpoints/archive", &json!({ "id": ep }))
                .await
                .expect("archive is idempotent");
        }
        let (_, list) = api.get("/v1/webhook-endpoints").await.expect("list");
        assert_eq!(list["data"].as_array().map(Vec::len), Some(1));
        let (_, all) = api
            .get("/v1/webhook-endpoints?archive_filter=ALL")
            .await
            .expect("all");
        assert_eq!(all["data"].as_array().map(Vec::len), Some(2));
    });
}
