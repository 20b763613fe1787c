//! Storage faults under a running `tally serve`, each real (no mocks): the SQLite disk full, the
//! PostgreSQL database read-only, and PostgreSQL connections dropped mid-transaction.
//!
//! For each fault: requests fail with a 5xx and the API's JSON `{"message": ...}` (never a hang,
//! never a 200 for something not stored); nothing is half-written (afterwards the invoices bill
//! exactly the events of the requests answered 200, a failed request resent is wholly new, and a
//! failed create left no document); and the service recovers by itself once the fault is removed,
//! without a restart.
//!
//! - Disk full: the SQLite database lives on a small tmpfs mounted for the test (root is needed,
//!   as for the rest of `scripts/test.sh`); a filler file takes every free page, so SQLite gets a
//!   real ENOSPC (SQLITE_FULL); deleting the filler is the operator freeing space.
//! - Read-only: `ALTER DATABASE ... SET default_transaction_read_only = on` and the server's
//!   sessions dropped (what a failover to a read-only node looks like to the server); then the
//!   setting is turned off again and nothing else is done.
//! - Dropped connections: `pg_terminate_backend` on every session of the server's database at
//!   random moments while concurrent ingest and customer creates are in flight.
//!
//! (A SQLite file cannot be made read-only under a running process: a read-only remount is
//! refused while files are open for writing, and root ignores file modes.)

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tally_tests::pg as postgres;
use tally_tests::{pg_admin_url, run_with_timeout, ApiClient, PgDatabase, TallyServer};

use crate::stream::{self, Layout, Request, Stream, Totals, SERVE_ARGS};

/// How long the service may take to recover once a fault is gone.
const RECOVERY: Duration = Duration::from_secs(15);
/// A request slower than this counts as a hang.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

fn client(server: &TallyServer) -> ApiClient {
    let http = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .expect("http client");
    ApiClient::with_http(http, server)
}

/// A tmpfs of `size` mounted on a fresh directory; unmounted (and the directory removed) on drop.
struct Tmpfs {
    dir: PathBuf,
    // Removed after the unmount (fields drop after `Drop::drop`).
    _mount_point: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let mount_point = tempfile::Builder::new()
            .prefix("tally-tmpfs-")
            .tempdir()
            .expect("mount point");
        let dir = mount_point.path().to_path_buf();
        let out = run_with_timeout(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(&dir),
            Duration::from_secs(30),
        );
        assert!(
            out.status.success(),
            "cannot mount a tmpfs on {} (the disk-full test needs root, like scripts/test.sh): {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs {
            dir,
            _mount_point: mount_point,
        }
    }

    fn path(&self) -> &Path {
        &self.dir
    }

    fn filler(&self) -> PathBuf {
        self.dir.join("filler")
    }

    /// Writes a file until the filesystem is full (ENOSPC at every size down to one byte).
    fn fill(&self) {
        let mut file = File::create(self.filler()).expect("filler");
        for size in [1 << 20, 64 << 10, 4 << 10, 512, 1] {
            let chunk = vec![0u8; size];
            loop {
                match file.write_all(&chunk) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
                    Err(e) => panic!("filling {}: {e}", self.dir.display()),
                }
            }
        }
        let probe = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("probe"))
            .and_then(|mut f| f.write_all(&[0u8; 4096]));
        assert!(probe.is_err(), "the tmpfs still has room after filling it");
    }

    fn free(&self) {
        std::fs::remove_file(self.filler()).expect("remove filler");
        let _ = std::fs::remove_file(self.dir.join("probe"));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let out = Command::new("umount").arg(&self.dir).output();
        if !out.is_ok_and(|o| o.status.success()) {
            // Something still holds a file open: detach now, the kernel frees it later.
            let _ = Command::new("umount").arg("-l").arg(&self.dir).output();
        }
    }
}

/// One ingest attempt's result: the request was answered 200 (with its counts) or failed cleanly.
enum Sent {
    Stored(u64, u64),
    Failed,
}

/// Sends `req` once. A failure must be a 5xx with the API's JSON message, retryable.
async fn ingest(api: &ApiClient, req: &Request) -> Sent {
    match api.post_text("/v1/ingest", req.body.clone()).await {
        Ok((200, body)) => {
            let data = &body["data"];
            assert_eq!(data["rejected"], json!([]), "{body}");
            Sent::Stored(
                data["accepted"].as_u64().expect("accepted"),
                data["duplicates"].as_u64().expect("duplicates"),
            )
        }
        Ok((status, body)) => {
            assert_clean_failure(status, &body);
            Sent::Failed
        }
        Err(e) => panic!("ingest got no answer (a hang or a dropped connection): {e}"),
    }
}

fn assert_clean_failure(status: u16, body: &Value) {
    assert!(
        (500..600).contains(&status),
        "a storage fault must be a 5xx, got {status}: {body}"
    );
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        !message.is_empty(),
        "{status} without a JSON message: {body}"
    );
}

/// The requests sent during a fault scenario: which were answered 200 and which failed.
#[derive(Default)]
struct Ledger {
    stored: Totals,
    stored_requests: usize,
    failed: Vec<usize>,
}

impl Ledger {
    /// Sends request `r` once and records the outcome (a first send: everything in it is new).
    async fn send(&mut self, api: &ApiClient, stream: &Stream, r: usize) -> bool {
        let req = &stream.requests[r];
        match ingest(api, req).await {
            Sent::Stored(accepted, duplicates) => {
                assert_eq!((accepted, duplicates), (req.own, req.events - req.own));
                self.stored.add(&req.totals);
                self.stored_requests += 1;
                true
            }
            Sent::Failed => {
                self.failed.push(r);
                false
            }
        }
    }

    /// Sends request `r` until it is answered 200 (the service is back), retrying within
    /// [`RECOVERY`] like a client would. Returns how long recovery took.
    async fn until_recovered(
        &mut self,
        api: &ApiClient,
        stream: &Stream,
        r: usize,
        server: &TallyServer,
    ) -> Duration {
        let req = &stream.requests[r];
        let started = Instant::now();
        loop {
            if let Sent::Stored(accepted, duplicates) = ingest(api, req).await {
                assert_eq!((accepted, duplicates), (req.own, req.events - req.own));
                self.stored.add(&req.totals);
                self.stored_requests += 1;
                return started.elapsed();
            }
            assert!(
                started.elapsed() < RECOVERY,
                "the service did not recover within {RECOVERY:?} of the fault's removal\n{}",
                server.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// After recovery: every failed request stored nothing (resent, all of it is new); then the
    /// invoices bill exactly every request sent.
    async fn settle(&mut self, api: &ApiClient, stream: &Stream, billing: &stream::Billing) {
        for r in std::mem::take(&mut self.failed) {
            let req = &stream.requests[r];
            match ingest(api, req).await {
                Sent::Stored(accepted, duplicates) => assert_eq!(
                    (accepted, duplicates),
                    (req.own, req.events - req.own),
                    "request {r} failed, yet part or all of it had been stored"
                ),
                Sent::Failed => panic!("request {r} still fails after recovery"),
            }
            self.stored.add(&req.totals);
        }
        let invoices = stream::invoices(api, billing).await;
        assert_eq!(
            stream::billed(&invoices, billing),
            self.stored,
            "the invoices do not bill exactly the acknowledged events"
        );
    }
}

/// Customers named `name` (the list is small: a handful per test).
async fn customers_named(api: &ApiClient, name: &str) -> usize {
    let (status, body) = api
        .get("/v1/customers?limit=100")
        .await
        .expect("list customers");
    assert_eq!(status, 200, "{body}");
    body["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter(|c| c["name"] == name)
        .count()
}

/// A customer create that must fail under the fault; afterwards nothing of it may exist.
async fn create_fails(api: &ApiClient, name: &str) {
    let (status, body) = api
        .post(
            "/v1/customers",
            &json!({ "name": name, "ingest_aliases": [name] }),
        )
        .await
        .expect("create answered");
    assert_clean_failure(status, &body);
}

/// After recovery: the failed create left no customer and no alias (creating it again works,
/// once).
async fn create_left_nothing(api: &ApiClient, name: &str) {
    assert_eq!(
        customers_named(api, name).await,
        0,
        "a failed create left a customer"
    );
    api.create(
        "/v1/customers",
        &json!({ "name": name, "ingest_aliases": [name] }),
    )
    .await
    .unwrap_or_else(|e| panic!("creating {name} after recovery (alias left behind?): {e}"));
    assert_eq!(customers_named(api, name).await, 1);
}

#[test]
fn sqlite_disk_full_fails_cleanly_and_recovers_when_space_returns() {
    let disk = Tmpfs::mount("24m");
    let url = format!("sqlite://{}/tally.db", disk.path().display());
    let server = TallyServer::start_on(Some(&url), &SERVE_ARGS, &[]);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let api = client(&server);
        let layout = Layout::now();
        let billing = stream::setup(&api, layout).await;
        let stream = stream::stream(11, layout, 60, 80, false);
        let mut ledger = Ledger::default();
        for r in 0..5 {
            assert!(
                ledger.send(&api, &stream, r).await,
                "request {r} before the fault"
            );
        }

        disk.fill();
        for r in 5..30 {
            ledger.send(&api, &stream, r).await;
        }
        let failed = ledger.failed.len();
        assert!(failed > 0, "no request failed on a full disk");
        create_fails(&api, "doomed").await;

        disk.free();
        let took = ledger.until_recovered(&api, &stream, 30, &server).await;
        for r in 31..stream.requests.len() {
            assert!(
                ledger.send(&api, &stream, r).await,
                "request {r} after recovery"
            );
        }
        create_left_nothing(&api, "doomed").await;
        ledger.settle(&api, &stream, &billing).await;
        println!(
            "disk full: {failed} of 25 requests failed with a JSON 5xx while full, recovered {:?} \
             after space returned; {} requests billed exactly",
            took,
            stream.requests.len()
        );
    });
    drop(server);
}

/// Runs one statement on the maintenance database.
async fn admin(sql: &str) {
    postgres::admin_execute(&pg_admin_url(), sql)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
}

/// Drops every session of database `name` (the server's pool), as a failover or an operator does.
fn terminate_sessions(name: &str) -> String {
    format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = '{name}' AND pid <> pg_backend_pid()"
    )
}

#[test]
fn postgres_read_only_fails_cleanly_and_recovers_when_writable_again() {
    let db = PgDatabase::create();
    let server = TallyServer::start_on(Some(db.url()), &SERVE_ARGS, &[]);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let api = client(&server);
        let layout = Layout::now();
        let billing = stream::setup(&api, layout).await;
        let stream = stream::stream(12, layout, 30, 40, false);
        let mut ledger = Ledger::default();
        // Concurrent requests first, so the pool holds several connections.
        for r in 0..5 {
            assert!(
                ledger.send(&api, &stream, r).await,
                "request {r} before the fault"
            );
        }
        let name = db.name();
        admin(&format!(
            "ALTER DATABASE {name} SET default_transaction_read_only = on"
        ))
        .await;
        admin(&terminate_sessions(name)).await;
        for r in 5..10 {
            assert!(
                !ledger.send(&api, &stream, r).await,
                "request {r} was answered 200 by a read-only database"
            );
        }
        create_fails(&api, "doomed").await;
        // Reads still work.
        let (status, body) = api.get("/v1/billable-metrics?limit=1").await.expect("read");
        assert_eq!(status, 200, "{body}");

        // Writable again; the server is told nothing and its sessions are left alone.
        admin(&format!(
            "ALTER DATABASE {name} SET default_transaction_read_only = off"
        ))
        .await;
        let took = ledger.until_recovered(&api, &stream, 10, &server).await;
        for r in 11..stream.requests.len() {
            assert!(
                ledger.send(&api, &stream, r).await,
                "request {r} after recovery"
            );
        }
        create_left_nothing(&api, "doomed").await;
        ledger.settle(&api, &stream, &billing).await;
        println!(
            "read-only: every write failed with a JSON 5xx, reads kept working, recovered {took:?} \
             after the database became writable"
        );
    });
    drop(server);
}

#[test]
fn postgres_sessions_dropped_mid_transaction_lose_and_double_nothing() {
    let db = PgDatabase::create();
    let server = TallyServer::start_on(Some(db.url()), &SERVE_ARGS, &[]);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let api = client(&server);
        let layout = Layout::now();
        let billing = stream::setup(&api, layout).await;
        let stream = Arc::new(stream::stream(13, layout, 120, 40, true));
        let failures = Arc::new(AtomicU64::new(0));
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));

        // Ingest clients: retry a failed request until it is answered 200.
        let mut clients = Vec::new();
        for c in 0..4usize {
            let (api, stream, failures) = (api.clone(), Arc::clone(&stream), Arc::clone(&failures));
            clients.push(tokio::spawn(async move {
                for r in (c..stream.requests.len()).step_by(4) {
                    let req = &stream.requests[r];
                    loop {
                        match ingest(&api, req).await {
                            Sent::Stored(accepted, duplicates) => {
                                assert_eq!(accepted + duplicates, req.events);
                                break;
                            }
                            Sent::Failed => {
                                failures.fetch_add(1, Ordering::SeqCst);
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                        }
                    }
                }
            }));
        }
        // An admin writer: customers (a document and its alias in one transaction), retried until
        // created. A retry of a create whose commit landed but whose answer was lost with the
        // session meets its own alias (409): that is the create having happened once.
        let creator = {
            let (api, failures, done) = (api.clone(), Arc::clone(&failures), Arc::clone(&done));
            tokio::spawn(async move {
                let mut created = Vec::new();
                let mut ambiguous = 0;
                // At least 10, at most 40 (one page of customers).
                for i in 0..40 {
                    if done.load(Ordering::SeqCst) && i >= 10 {
                        break;
                    }
                    let name = format!("dropped-{i}");
                    let body = json!({ "name": name, "ingest_aliases": [name] });
                    for attempt in 1.. {
                        let (status, res) = api.post("/v1/customers", &body).await.expect("answer");
                        match status {
                            200 => break,
                            409 if attempt > 1 => {
                                ambiguous += 1;
                                break;
                            }
                            _ => {
                                assert_clean_failure(status, &res);
                                failures.fetch_add(1, Ordering::SeqCst);
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                        }
                    }
                    created.push(name);
                }
                (created, ambiguous)
            })
        };

        // The fault: every session of the database dropped at random moments.
        let mut rng = StdRng::seed_from_u64(13);
        let terminations = 12;
        for _ in 0..terminations {
            tokio::time::sleep(Duration::from_millis(rng.gen_range(30..200))).await;
            admin(&terminate_sessions(db.name())).await;
        }
        for c in clients {
            c.await.expect("ingest client");
        }
        done.store(true, Ordering::SeqCst);
        let (created, ambiguous) = creator.await.expect("creator");
        let failed = failures.load(Ordering::SeqCst);
        assert!(failed > 0, "no request met a dropped session");

        // Every event once: the whole stream is now duplicate, and billed exactly.
        for (r, req) in stream.requests.iter().enumerate() {
            match ingest(&api, req).await {
                Sent::Stored(accepted, duplicates) => {
                    assert_eq!((accepted, duplicates), (0, req.events), "request {r}")
                }
                Sent::Failed => panic!("request {r} fails after the faults"),
            }
        }
        let invoices = stream::invoices(&api, &billing).await;
        assert_eq!(stream::billed(&invoices, &billing), stream.expected);
        // Every customer exactly once, alias included.
        for name in &created {
            assert_eq!(customers_named(&api, name).await, 1, "{name}");
            let (status, body) = api
                .post(
                    "/v1/customers",
                    &json!({ "name": "other", "ingest_aliases": [name] }),
                )
                .await
                .expect("answer");
            assert_eq!(
                status, 409,
                "alias {name} was not stored with its customer: {body}"
            );
        }
        println!(
            "dropped sessions: {terminations} rounds of pg_terminate_backend; {failed} requests \
             failed with a JSON 5xx and were retried; {} requests and {} customer creates \
             ({ambiguous} committed with the answer lost) all landed exactly once",
            stream.requests.len(),
            created.len()
        );
    });
    drop(server);
}
