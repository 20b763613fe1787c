//! `tally ingest FILE|-`: bulk backfill through the ingest contract, to a running server and into
//! a local database; rejects written with their reasons; a re-run (also after the backfill was
//! killed midway) counts nothing twice; 429s are retried until every batch is in.
//!
//! Totals are summed over every invoice; the servers run their job once, at start, so no
//! period is finalized (frozen) while its events are still arriving, whatever the date.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tally_core::time::{format_rfc3339_ms, DAY_MS, HOUR_MS};
use tally_tests::bench::{call_billing, month_start, now_ms};
use tally_tests::{run_with_timeout, tally_bin, ApiClient, TallyServer};

const PATIENCE: Duration = Duration::from_secs(120);

fn event(id: &str, at: &str) -> Value {
    json!({ "transaction_id": id, "customer_id": "acme", "event_type": "call", "timestamp": at,
            "properties": { "n": 1 } })
}

/// The `call` billing of `bench::call_billing`, from last month's start, so events up to 34
/// days old are inside the contract.
async fn billing(api: &ApiClient) -> String {
    let start = month_start(now_ms() - 35 * DAY_MS);
    call_billing(api, &start).await.unwrap()
}

/// Events billed so far: the sum of the customer's invoice totals (price 1 each).
async fn billed(api: &ApiClient, customer: &str) -> i64 {
    let deadline = Instant::now() + PATIENCE;
    let page = loop {
        let (status, page) = api
            .get(&format!("/v1/customers/{customer}/invoices?limit=100"))
            .await
            .unwrap();
        // The rate-limited server may ask this read to wait too.
        if status == 429 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(250)).await;
            continue;
        }
        assert_eq!(status, 200, "{page}");
        break page;
    };
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["total"].to_string().parse::<i64>().unwrap())
        .sum()
}

fn ingest_cli(args: &[&str], stdin: Option<&[u8]>) -> (bool, String) {
    let mut cmd = Command::new(tally_bin());
    cmd.arg("ingest").args(args);
    let out = match stdin {
        None => run_with_timeout(&mut cmd, PATIENCE),
        Some(bytes) => {
            let mut child = cmd
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            child.stdin.take().unwrap().write_all(bytes).unwrap();
            child.wait_with_output().unwrap()
        }
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn a_gzip_ndjson_backfill_reports_rejects_and_a_rerun_counts_nothing_twice() {
    // A tight rate limit: the backfill meets 429s and must retry them until every batch is in.
    let server = TallyServer::start_with(
        &[
            "--rate-limit-rps",
            "4",
            "--rate-limit-burst",
            "10",
            "--job-interval-secs",
            "86400",
        ],
        &[],
    );
    let api = ApiClient::new(&server);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let customer = rt.block_on(billing(&api));
    let now = now_ms();
    let dir = tempfile::tempdir().unwrap();
    // 1,200 events over the last 30 days (both periods), 2 of them twice, and 3 invalid ones.
    let mut lines: Vec<Value> = (0..1200)
        .map(|i| {
            let at = format_rfc3339_ms(now - (i % 720) * HOUR_MS - HOUR_MS);
            event(&format!("e{i}"), &at)
        })
        .collect();
    lines.insert(10, event("e3", &format_rfc3339_ms(now - HOUR_MS)));
    lines.insert(500, event("e4", &format_rfc3339_ms(now - HOUR_MS)));
    lines.insert(
        7,
        json!({ "customer_id": "acme", "event_type": "call", "timestamp": "2024-01-01T00:00:00Z" }),
    );
    lines.insert(300, event("too-old", &format_rfc3339_ms(now - 40 * DAY_MS)));
    lines.push(json!("not an event"));
    let path = dir.path().join("events.ndjson.gz");
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&path).unwrap(),
        flate2::Compression::default(),
    );
    for l in &lines {
        writeln!(gz, "{l}").unwrap();
    }
    gz.finish().unwrap();
    let rejects = dir.path().join("rejects.ndjson");
    let args = [
        path.to_str().unwrap(),
        "--url",
        server.base_url(),
        "--token",
        server.token(),
        "--rejects",
        rejects.to_str().unwrap(),
        "--concurrency",
        "8",
        "--max-retries",
        "100",
    ];
    let (ok, out) = ingest_cli(&args, None);
    assert!(ok, "{out}");
    assert!(
        out.contains("1205 events: 1200 accepted, 2 duplicates, 3 rejected"),
        "{out}"
    );
    let retries: u64 = out
        .split(" retries)")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(retries > 0, "the rate limit was met and retried: {out}");
    let rejected: Vec<Value> = std::fs::read_to_string(&rejects)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut at: Vec<u64> = rejected
        .iter()
        .map(|r| r["line"].as_u64().unwrap())
        .collect();
    at.sort_unstable();
    assert_eq!(at, [8, 301, 1205], "1-based input lines: {rejected:?}");
    let old = rejected.iter().find(|r| r["line"] == 301).unwrap();
    assert_eq!(old["event"]["transaction_id"], "too-old");
    assert!(
        old["message"].as_str().unwrap().contains("34 days"),
        "{old}"
    );
    rt.block_on(async { assert_eq!(billed(&api, &customer).await, 1200) });

    // Again: everything is a duplicate, nothing is billed twice.
    let (ok, out) = ingest_cli(&args, None);
    assert!(ok, "{out}");
    assert!(
        out.contains("1205 events: 0 accepted, 1202 duplicates, 3 rejected"),
        "{out}"
    );
    rt.block_on(async { assert_eq!(billed(&api, &customer).await, 1200) });

    // A bad token stops at once with the server's reason, and a missing file is an error.
    let (ok, out) = ingest_cli(
        &[
            path.to_str().unwrap(),
            "--url",
            server.base_url(),
            "--token",
            "nope",
        ],
        None,
    );
    assert!(!ok && out.contains("401"), "{out}");
    let (ok, _) = ingest_cli(
        &[
            "/nonexistent.ndjson",
            "--url",
            server.base_url(),
            "--token",
            "x",
        ],
        None,
    );
    assert!(!ok);
}

#[test]
fn a_killed_backfill_rerun_from_the_start_counts_every_event_once() {
    let server = TallyServer::start_with(&["--job-interval-secs", "86400"], &[]);
    let api = ApiClient::new(&server);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let customer = rt.block_on(billing(&api));
    let now = now_ms();
    let dir = tempfile::tempdir().unwrap();
    const N: i64 = 30_000;
    let events: Vec<Value> = (0..N)
        .map(|i| {
            event(
                &format!("k{i}"),
                &format_rfc3339_ms(now - (i % 500) * HOUR_MS - HOUR_MS),
            )
        })
        .collect();
    let path = dir.path().join("events.json");
    std::fs::write(&path, serde_json::to_vec(&events).unwrap()).unwrap();
    let args = [
        path.to_str().unwrap(),
        "--url",
        server.base_url(),
        "--token",
        server.token(),
        "--concurrency",
        "2",
    ];
    let mut child = Command::new(tally_bin())
        .arg("ingest")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once some, but not all, events are in.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let so_far = rt.block_on(billed(&api, &customer));
        if so_far > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the backfill never got going");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let partial = rt.block_on(billed(&api, &customer));
    assert!(partial < N, "killed before the end: {partial}");
    let (ok, out) = ingest_cli(&args, None);
    assert!(ok, "{out}");
    assert!(out.contains(&format!("{N} events: ")), "{out}");
    assert!(out.contains(" 0 rejected"), "{out}");
    rt.block_on(async { assert_eq!(billed(&api, &customer).await, N) });
}

#[test]
fn a_json_array_from_stdin_backfills_a_local_database() {
    let mut server = TallyServer::start();
    let api = ApiClient::new(&server);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let customer = rt.block_on(billing(&api));
    let at = format_rfc3339_ms(now_ms() - HOUR_MS);
    let events: Vec<Value> = (0..250).map(|i| event(&format!("s{i}"), &at)).collect();
    server.kill();
    let body = serde_json::to_vec(&events).unwrap();
    let db = server.database_url().to_string();
    let (ok, out) = ingest_cli(&["-", "--database", &db, "--env", "sandbox"], Some(&body));
    assert!(ok, "{out}");
    assert!(
        out.contains("250 events: 250 accepted, 0 duplicates, 0 rejected"),
        "{out}"
    );
    // Without --env or --url it says what is missing; a malformed array stops with the reason.
    let (ok, out) = ingest_cli(&["-", "--database", &db], Some(&body));
    assert!(!ok && out.contains("--env"), "{out}");
    let (ok, out) = ingest_cli(
        &["-", "--database", &db, "--env", "sandbox"],
        Some(b"[{\"a\": 1},"),
    );
    assert!(!ok && out.contains("JSON array"), "{out}");
    server.restart();
    let api = ApiClient::new(&server);
    rt.block_on(async { assert_eq!(billed(&api, &customer).await, 250) });
}
