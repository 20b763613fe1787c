//! `tally backup` while ingest runs, then `tally restore`: the copy holds every event acknowledged
//! before the backup began, each later event whole or not at all, and every finalized invoice.

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tally_core::time::format_rfc3339_ms;
use tally_tests::bench::{call_billing, month_start, now_ms};
use tally_tests::{run_with_timeout, tally_bin, ApiClient, TallyServer};

const PATIENCE: Duration = Duration::from_secs(60);

fn tally(args: &[&str]) -> Result<String, String> {
    let out = run_with_timeout(Command::new(tally_bin()).args(args), PATIENCE);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    match out.status.success() {
        true => Ok(text),
        false => Err(text),
    }
}

fn events(prefix: &str, from: usize, n: usize, at: &str) -> Value {
    Value::Array(
        (from..from + n)
            .map(|i| {
                json!({ "transaction_id": format!("{prefix}{i}"), "customer_id": "acme",
                        "event_type": "call", "timestamp": at, "properties": {} })
            })
            .collect(),
    )
}

async fn ingest(api: &ApiClient, body: &Value) -> Value {
    api.data("/v1/ingest", body).await.unwrap()
}

/// The customer's invoices: (id, status, total), in period order.
async fn invoices(api: &ApiClient, customer: &str) -> Vec<(String, String, String)> {
    let (status, page) = api
        .get(&format!("/v1/customers/{customer}/invoices?limit=100"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{page}");
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["id"].as_str().unwrap().to_string(),
                i["status"].as_str().unwrap().to_string(),
                i["total"].to_string(),
            )
        })
        .collect()
}

#[test]
fn a_backup_taken_during_ingest_restores_every_acknowledged_event_and_invoice() {
    let server = TallyServer::start_with(
        &["--invoice-grace-hours", "0", "--job-interval-secs", "1"],
        &[],
    );
    let api = ApiClient::new(&server);
    let now = now_ms();
    // Now, not an hour ago: in a month's first hour an hour ago is last month, whose invoice the
    // 1 s job with no grace finalizes before these events could reach it.
    let at = format_rfc3339_ms(now);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("backup.db");

    let (customer, before) = rt.block_on(async {
        // The contract began last month, so last month's invoice finalizes (grace 0).
        let start = month_start(month_start_ms(now) - 1);
        let customer = call_billing(&api, &start).await.unwrap();
        // Phase 1: acknowledged before the backup begins.
        for batch in 0..10 {
            let r = ingest(&api, &events("p1-", batch * 100, 100, &at)).await;
            assert_eq!(r["accepted"], 100, "{r}");
        }
        let deadline = Instant::now() + PATIENCE;
        let before = loop {
            let list = invoices(&api, &customer).await;
            if list.iter().any(|(_, s, _)| s == "FINALIZED") {
                break list;
            }
            assert!(Instant::now() < deadline, "no invoice finalized: {list:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        (customer, before)
    });

    // Phase 2 runs while the backup is taken.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (stop, sent, at) = (stop.clone(), sent.clone(), at.clone());
        let api = ApiClient::new(&server);
        std::thread::spawn(move || {
            tokio::runtime::Runtime::new()
                .unwrap()
                .block_on(async move {
                    let mut batch = 0;
                    while !stop.load(Ordering::SeqCst) || batch < 5 {
                        let r = ingest(&api, &events("p2-", batch * 100, 100, &at)).await;
                        assert_eq!(r["accepted"], 100, "{r}");
                        batch += 1;
                        sent.store(batch * 100, Ordering::SeqCst);
                    }
                })
        })
    };
    while sent.load(Ordering::SeqCst) < 200 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = tally(&[
        "backup",
        "--to",
        backup.to_str().unwrap(),
        "--database",
        server.database_url(),
    ])
    .unwrap();
    assert!(out.contains("backed up"), "{out}");
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    let phase2 = sent.load(Ordering::SeqCst);
    assert!(
        tally(&[
            "backup",
            "--to",
            backup.to_str().unwrap(),
            "--database",
            server.database_url()
        ])
        .is_err(),
        "a backup never overwrites a file"
    );

    // Restore into a new place, refusing to overwrite without --force.
    let restored_dir = tempfile::tempdir().unwrap();
    let restored = format!("sqlite://{}/restored.db", restored_dir.path().display());
    tally(&[
        "restore",
        "--from",
        backup.to_str().unwrap(),
        "--database",
        &restored,
    ])
    .unwrap();
    assert!(tally(&[
        "restore",
        "--from",
        backup.to_str().unwrap(),
        "--database",
        &restored
    ])
    .is_err());
    tally(&[
        "restore",
        "--from",
        backup.to_str().unwrap(),
        "--database",
        &restored,
        "--force",
    ])
    .unwrap();
    assert!(tally(&[
        "restore",
        "--from",
        dir.path().join("missing.db").to_str().unwrap(),
        "--database",
        &restored,
        "--force"
    ])
    .is_err());
    drop(server);

    let copy = TallyServer::start_on(Some(&restored), &["--invoice-grace-hours", "0"], &[]);
    let api = ApiClient::new(&copy);
    rt.block_on(async {
        // Every finalized invoice is there, unchanged.
        let after = invoices(&api, &customer).await;
        for inv in before.iter().filter(|(_, s, _)| s == "FINALIZED") {
            assert!(after.contains(inv), "{inv:?} missing from {after:?}");
        }
        // Every phase-1 event is in the copy.
        for batch in 0..10 {
            let r = ingest(&api, &events("p1-", batch * 100, 100, &at)).await;
            assert_eq!(r["duplicates"], 100, "phase 1 batch {batch}: {r}");
        }
        // Phase 2: each event is in the copy or not; the draft counts exactly those that are.
        let draft = |list: &[(String, String, String)]| -> i64 {
            list.iter()
                .find(|(_, s, _)| s == "DRAFT")
                .unwrap()
                .2
                .parse()
                .unwrap()
        };
        let counted = draft(&invoices(&api, &customer).await);
        let mut held = 0;
        for from in (0..phase2).step_by(100) {
            let r = ingest(&api, &events("p2-", from, 100, &at)).await;
            held += r["duplicates"].as_i64().unwrap();
        }
        assert_eq!(
            counted,
            1000 + held,
            "the draft counts phase 1 and exactly the phase-2 events the copy holds"
        );
        eprintln!("phase 2: {phase2} events acknowledged, {held} of them in the copy");
        assert!(
            held >= 200,
            "events acknowledged before the backup began are in it: {held}"
        );
        let after = draft(&invoices(&api, &customer).await);
        assert_eq!(after, 1000 + i64::try_from(phase2).unwrap());
    });
}

/// Epoch milliseconds of the start of the month holding `ms`.
fn month_start_ms(ms: i64) -> i64 {
    tally_core::time::parse_rfc3339_ms(&month_start(ms)).unwrap()
}
