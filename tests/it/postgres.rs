//! Tally on PostgreSQL as deployed: several real `tally serve` replicas on one fresh database, and
//! a database that is down at start or goes away while serving.
//!
//! The replica test drives both processes at once and checks what only the database can
//! guarantee: each transaction id counted once, an edge batch merged once, each invoice finalized
//! once (the servers log `invoice finalized` exactly when their conditional update wins).

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tally_central::store::{self, Env, InvoiceStatus};
use tally_core::batch::{sign, SignedRequest, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use tally_core::time::{format_rfc3339_ms, HOUR_MS};
use tally_tests::pg as postgres;
use tally_tests::{pg_admin_url, run_with_timeout, tally_bin, ApiClient, PgDatabase, TallyServer};

const EDGE_KEY: &str = "replica-test-edge-key";
/// Distinct transaction ids; each is sent four times (twice through each replica).
const IDS: usize = 400;
/// How long background work (finalization by the 1 s job) may take to show.
const PATIENCE: Duration = Duration::from_secs(60);

/// Test-side calls on one replica: results unwrapped, failures as panics.
#[derive(Clone)]
struct Api(ApiClient);

impl Api {
    async fn get(&self, path: &str) -> (u16, Value) {
        self.0
            .get(path)
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.0
            .post(path, body)
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    async fn ok(&self, path: &str, body: Value) -> Value {
        self.0
            .data(path, &body)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    async fn id(&self, path: &str, body: Value) -> String {
        self.0
            .create(path, &body)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Delivers a signed edge batch, as an edge Worker does.
    async fn batch(&self, body: &[u8], now_ms: i64) -> (u16, Value) {
        let signed = SignedRequest {
            method: "POST",
            path_and_query: "/internal/v1/batches",
            body,
        };
        let req = self
            .0
            .http()
            .post(self.0.url("/internal/v1/batches"))
            .header(TIMESTAMP_HEADER, now_ms.to_string())
            .header(SIGNATURE_HEADER, sign(EDGE_KEY.as_bytes(), now_ms, &signed))
            .header("content-type", "application/json")
            .body(body.to_vec());
        self.0
            .send(req)
            .await
            .unwrap_or_else(|e| panic!("batch: {e}"))
    }
}

fn now_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(since.as_millis()).expect("ms fit i64")
}

fn count_lines(logs: &str, needle: &str) -> usize {
    logs.lines().filter(|l| l.contains(needle)).count()
}

#[test]
fn two_replicas_on_one_database_behave_as_one() {
    let db = PgDatabase::create();
    let args = ["--invoice-grace-hours", "0", "--job-interval-secs", "1"];
    let env = [("TALLY_EDGE_HMAC_KEY", EDGE_KEY)];
    let a = TallyServer::start_on(Some(db.url()), &args, &env);
    let b = TallyServer::start_on(Some(db.url()), &args, &env);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let (ra, rb) = (Api(ApiClient::new(&a)), Api(ApiClient::new(&b)));
        let hour = now_ms() / HOUR_MS * HOUR_MS;
        let (start, usage_at, end) = (hour - 3 * HOUR_MS, hour - 2 * HOUR_MS, hour - HOUR_MS);

        // A metric created through A meters the next event through B at once.
        let metric = ra
            .id(
                "/v1/billable-metrics/create",
                json!({
                    "name": "calls", "aggregation_type": "COUNT",
                    "event_type_filter": { "in_values": ["call"] },
                }),
            )
            .await;

        // Every id goes to both replicas twice, concurrently, in different orders and batches.
        let mut sends = Vec::new();
        for (r, api) in [&ra, &rb].into_iter().enumerate() {
            for copy in 0..2usize {
                let events: Vec<Value> = (0..IDS)
                    .map(|i| (i * 7 + r * 101 + copy * 53) % IDS)
                    .map(|n| {
                        json!({
                            "transaction_id": format!("t{n}"), "customer_id": "acme",
                            "event_type": "call", "timestamp": format_rfc3339_ms(usage_at),
                        })
                    })
                    .collect();
                let api = api.clone();
                sends.push(tokio::spawn(async move {
                    let (mut accepted, mut duplicates) = (0, 0);
                    for chunk in events.chunks(100) {
                        let data = api.ok("/v1/ingest", Value::Array(chunk.to_vec())).await;
                        accepted += data["accepted"].as_u64().expect("accepted");
                        duplicates += data["duplicates"].as_u64().expect("duplicates");
                    }
                    (accepted, duplicates)
                }));
            }
        }
        let (mut accepted, mut duplicates) = (0, 0);
        for send in sends {
            let (a, d) = send.await.expect("ingest task");
            accepted += a;
            duplicates += d;
        }
        assert_eq!((accepted, duplicates), (IDS as u64, 3 * IDS as u64));

        // One sealed edge batch delivered to both replicas at once is merged once.
        let batch = serde_json::to_vec(&json!({
            "shard_id": "shard-0", "seq": 1, "metrics_version": 1,
            "partials": [{
                "env": "sandbox",
                "key": { "customer_ref": "acme", "metric_id": metric, "groups": [], "hour_ms": usage_at },
                "acc": { "count": 100 },
            }],
        }))
        .expect("batch json");
        let sent = now_ms();
        let ((sa, aa), (sb, ab)) = tokio::join!(ra.batch(&batch, sent), rb.batch(&batch, sent));
        assert_eq!((sa, sb), (200, 200), "{aa} {ab}");
        let mut applied = [aa["applied"].clone(), ab["applied"].clone()];
        applied.sort_by_key(|v| v.to_string());
        assert_eq!(applied, [json!(false), json!(true)], "{aa} {ab}");

        // A contract whose only period has already ended: the 1 s job finalizes it (grace 0).
        let product = rb
            .id(
                "/v1/contract-pricing/products/create",
                json!({ "name": "calls", "type": "USAGE", "billable_metric_id": metric }),
            )
            .await;
        let card = ra
            .id(
                "/v1/contract-pricing/rate-cards/create",
                json!({ "name": "card" }),
            )
            .await;
        ra.ok(
            "/v1/contract-pricing/rate-cards/addRate",
            json!({
                "rate_card_id": card, "product_id": product, "starting_at": format_rfc3339_ms(start),
                "entitled": true, "rate_type": "FLAT", "price": 2,
            }),
        )
        .await;
        let customer = rb
            .id(
                "/v1/customers",
                json!({ "name": "Acme", "ingest_aliases": ["acme"] }),
            )
            .await;
        let contract = ra
            .id(
                "/v1/contracts/create",
                json!({
                    "customer_id": customer, "rate_card_id": card,
                    "starting_at": format_rfc3339_ms(start), "ending_before": format_rfc3339_ms(end),
                }),
            )
            .await;

        // Watch the database (not the API, whose reads would finalize too) until the job is done.
        let stores = store::open(db.url(), &Default::default())
            .await
            .expect("open");
        let deadline = Instant::now() + PATIENCE;
        let rows = loop {
            let rows = stores
                .invoices
                .invoices_for_contract(Env::Sandbox, &contract)
                .await
                .expect("invoices");
            if !rows.is_empty() && rows.iter().all(|r| r.status == InvoiceStatus::Finalized) {
                break rows;
            }
            assert!(
                Instant::now() < deadline,
                "invoices not finalized: {rows:?}\n--- A ---\n{}\n--- B ---\n{}",
                a.logs(),
                b.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        // Each invoice was finalized by exactly one replica (the log line follows the update).
        let finalized = || {
            count_lines(&a.logs(), "invoice finalized") + count_lines(&b.logs(), "invoice finalized")
        };
        while finalized() < rows.len() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(finalized(), rows.len(), "{}\n{}", a.logs(), b.logs());

        // Both replicas show the same frozen invoices: every event once, the batch once.
        let path = format!("/v1/customers/{customer}/invoices?limit=100");
        let (s1, via_a) = ra.get(&path).await;
        let (s2, via_b) = rb.get(&path).await;
        assert_eq!((s1, s2), (200, 200));
        assert_eq!(via_a, via_b);
        let invoices = via_a["data"].as_array().expect("invoices");
        assert_eq!(invoices.len(), rows.len());
        let total: i64 = invoices
            .iter()
            .map(|i| {
                assert_eq!(i["status"], "FINALIZED", "{i}");
                i["total"].to_string().parse::<i64>().expect("integer total")
            })
            .sum();
        assert_eq!(total, 2 * (IDS as i64 + 100), "{via_a}");
    });
}

#[test]
fn a_database_down_at_start_is_a_clear_error_after_the_connect_wait() {
    // Nothing listens on port 1.
    let url = "postgres://postgres@127.0.0.1:1/tally";
    let mut cmd = Command::new(tally_bin());
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--database", url])
        .args(["--db-connect-wait-secs", "1"]);
    let out = run_with_timeout(&mut cmd, Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("database not reachable yet; retrying"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("cannot connect to PostgreSQL at {url}")),
        "{stderr}"
    );
}

/// Runs one statement on the maintenance database.
async fn admin(sql: &str) {
    postgres::admin_execute(&pg_admin_url(), sql)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
}

#[test]
fn requests_get_503_while_the_database_is_away_and_succeed_when_it_returns() {
    let db = PgDatabase::create();
    let server = TallyServer::start_on(Some(db.url()), &["--db-acquire-timeout-secs", "2"], &[]);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let api = Api(ApiClient::new(&server));
        let list = "/v1/billable-metrics?limit=1";
        assert_eq!(api.get(list).await.0, 200);

        let name = db.name();
        let kill = format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
        );
        admin(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false")).await;
        admin(&kill).await;
        let (status, body) = api.get(list).await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["message"], "the database is unavailable; retry later");
        // Readiness follows the database; liveness does not.
        let probe = api
            .0
            .http()
            .get(api.0.url("/readyz"))
            .header("x-request-id", "outage-probe");
        assert_eq!(probe.send().await.unwrap().status(), 503);
        assert_eq!(api.0.get("/livez").await.unwrap().0, 200);
        // The request's log line carries its id.
        let logged = || {
            server
                .logs()
                .lines()
                .any(|l| l.contains("readiness check") && l.contains("id=outage-probe"))
        };
        let deadline = Instant::now() + PATIENCE;
        while !logged() {
            assert!(Instant::now() < deadline, "{}", server.logs());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let event = json!([{
            "transaction_id": "during-outage", "customer_id": "c", "event_type": "e",
            "timestamp": format_rfc3339_ms(now_ms()),
        }]);
        assert_eq!(api.post("/v1/ingest", &event).await.0, 503);

        admin(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true")).await;
        assert_eq!(api.get(list).await.0, 200, "{}", server.logs());
        assert_eq!(api.0.get("/readyz").await.unwrap().0, 200);
        // The ingest that failed stored nothing: its retry is accepted.
        let (status, body) = api.post("/v1/ingest", &event).await;
        assert_eq!(
            (status, body["data"]["accepted"].clone()),
            (200, json!(1)),
            "{body}"
        );
    });
}

/// Concurrent read-modify-writes through two replicas on one database: 60 product updates, half
/// through each, all answered 200 and all kept; concurrent alias swaps between two customers
/// never deadlock into a 5xx (a lost race is retried; a taken alias is a plain 409).
#[test]
fn two_replicas_keep_every_concurrent_document_change() {
    let db = PgDatabase::create();
    let a = TallyServer::start_on(Some(db.url()), &[], &[]);
    let b = TallyServer::start_on(Some(db.url()), &[], &[]);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let (ra, rb) = (Api(ApiClient::new(&a)), Api(ApiClient::new(&b)));
        let metric = ra
            .id(
                "/v1/billable-metrics/create",
                json!({ "name": "calls", "aggregation_type": "COUNT" }),
            )
            .await;
        let product = ra
            .id(
                "/v1/contract-pricing/products/create",
                json!({ "name": "calls", "type": "USAGE", "billable_metric_id": metric }),
            )
            .await;
        let base = now_ms() / HOUR_MS * HOUR_MS + 24 * HOUR_MS;
        let updates: Vec<_> = (0..60i64)
            .map(|i| {
                let api = if i % 2 == 0 { ra.clone() } else { rb.clone() };
                let body = json!({
                    "product_id": product, "name": format!("v{i}"),
                    "starting_at": format_rfc3339_ms(base + i * HOUR_MS),
                });
                tokio::spawn(async move {
                    api.post("/v1/contract-pricing/products/update", &body)
                        .await
                })
            })
            .collect();
        for u in updates {
            let (status, body) = u.await.expect("task");
            assert_eq!(status, 200, "{body}");
        }
        let got = rb
            .ok(
                "/v1/contract-pricing/products/get",
                json!({ "id": product }),
            )
            .await;
        let updates = got["updates"].as_array().expect("updates");
        assert_eq!(updates.len(), 60, "{got}");

        let c1 = ra
            .id(
                "/v1/customers",
                json!({ "name": "one", "ingest_aliases": ["x"] }),
            )
            .await;
        let c2 = rb
            .id(
                "/v1/customers",
                json!({ "name": "two", "ingest_aliases": ["y"] }),
            )
            .await;
        let swaps: Vec<_> = (0..40)
            .map(|i| {
                let (api, id, alias) = match i % 2 {
                    0 => (ra.clone(), c1.clone(), ["y", "x"][i / 2 % 2]),
                    _ => (rb.clone(), c2.clone(), ["x", "y"][i / 2 % 2]),
                };
                let path = format!("/v1/customers/{id}/setIngestAliases");
                let body = json!({ "ingest_aliases": [alias, format!("own-{i}")] });
                tokio::spawn(async move { api.post(&path, &body).await })
            })
            .collect();
        for s in swaps {
            let (status, body) = s.await.expect("task");
            assert!(status == 200 || status == 409, "{status} {body}");
        }
    });
}

/// One Idempotency-Key sent to two replicas at once, 20 times each: one customer is created and
/// every request gets its answer.
#[test]
fn one_idempotency_key_on_two_replicas_creates_one_object() {
    let db = PgDatabase::create();
    let a = TallyServer::start_on(Some(db.url()), &[], &[]);
    let b = TallyServer::start_on(Some(db.url()), &[], &[]);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let (ca, cb) = (ApiClient::new(&a), ApiClient::new(&b));
        let send = |api: ApiClient| async move {
            let req = api
                .http()
                .post(api.url("/v1/customers"))
                .header("idempotency-key", "one-customer")
                .header("content-type", "application/json")
                .body(r#"{"name":"Replicated"}"#);
            api.send(req).await.expect("response")
        };
        let mut tasks = Vec::new();
        for i in 0..40 {
            let api = if i % 2 == 0 {
                ApiClient::new(&a)
            } else {
                ApiClient::new(&b)
            };
            tasks.push(tokio::spawn(send(api)));
        }
        let mut answers = Vec::new();
        for t in tasks {
            answers.push(t.await.expect("task"));
        }
        for (status, body) in &answers {
            assert_eq!(*status, 200, "{body}");
            assert_eq!(body, &answers[0].1);
        }
        let (_, list) = ca.get("/v1/customers?limit=100").await.expect("list");
        let named = list["data"]
            .as_array()
            .expect("data")
            .iter()
            .filter(|c| c["name"] == "Replicated")
            .count();
        assert_eq!(named, 1, "{list}");
        let (_, again) = cb.get("/v1/customers?limit=100").await.expect("list");
        assert_eq!(list, again);
    });
}
