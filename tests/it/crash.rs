//! Crash safety of native ingest: a real `tally serve` is killed with SIGKILL at random moments
//! while clients stream events into it, and restarted on the same database (same port, same
//! token) every time.
//!
//! The clients behave like real ones: every attempt sends the same bytes; a connection failure or
//! a 5xx is retried with a short backoff; a few requests (`abandonable`) are given up after one
//! failed attempt. The stream (see `stream`) has several customers, COUNT and SUM metrics with a
//! distinct value per event, and duplicate transaction ids inside and across requests.
//!
//! What must hold afterwards (the group commit's promise: a 200 means durable, a failed group
//! leaves nothing):
//! - every request that got a 200 is stored: resending the whole stream finds every transaction
//!   id already claimed (`accepted: 0`);
//! - a request given up is all or nothing: resent, it is either wholly new or wholly duplicate;
//! - every event of the stream is in the event store exactly once (`POST /v1/events/search`:
//!   one counted row per transaction id, at most one latest duplicate beside it);
//! - nothing is counted twice and nothing is lost: the invoices bill exactly the stream's own
//!   totals (computed here), and equal those of a second server that was never killed and got
//!   the same stream, byte for byte (ids normalised).
//!
//! The kill schedule comes from a seed, printed first so a failure can be replayed:
//! `TALLY_CRASH_SEED=<seed>`. `TALLY_CRASH_KILLS=<n>` sets the number of kills on SQLite (and a
//! half of it, at least 2, on PostgreSQL) for a longer run; the stream grows with it.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use tally_tests::{ApiClient, PgDatabase, TallyServer};

use crate::stream::{self, Layout, Request, SERVE_ARGS};

/// Kills on SQLite in CI; PostgreSQL gets half (at least 2).
const DEFAULT_KILLS: usize = 18;
/// Requests per kill (the stream's length scales with the number of kills).
const REQUESTS_PER_KILL: usize = 16;
/// Fresh events per request (each request also carries 2-4 copies).
const EVENTS_PER_REQUEST: usize = 40;
/// Concurrent clients: several requests share a group commit, so kills land inside groups.
const CLIENTS: usize = 6;
/// How long one request may take before the client counts it as failed and retries.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, not {v:?}"))
    })
}

fn kills_wanted(backend: &str) -> usize {
    let sqlite = env_number("TALLY_CRASH_KILLS").map_or(DEFAULT_KILLS, |n| n as usize);
    match backend {
        "sqlite" => sqlite,
        _ => (sqlite / 2).max(2),
    }
}

fn seed() -> u64 {
    env_number("TALLY_CRASH_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_nanos() as u64
    })
}

#[test]
fn sigkill_during_ingest_loses_and_doubles_nothing_on_sqlite() {
    let chaos = TallyServer::start_with(&SERVE_ARGS, &[]);
    let reference = TallyServer::start_with(&SERVE_ARGS, &[]);
    run("sqlite", chaos, &reference);
}

#[test]
fn sigkill_during_ingest_loses_and_doubles_nothing_on_postgres() {
    let db = PgDatabase::create();
    let reference_db = PgDatabase::create();
    let chaos = TallyServer::start_on(Some(db.url()), &SERVE_ARGS, &[]);
    let reference = TallyServer::start_on(Some(reference_db.url()), &SERVE_ARGS, &[]);
    run("postgres", chaos, &reference);
}

/// What the clients saw.
#[derive(Default)]
struct Tally {
    /// Requests answered 200 (at some attempt).
    acknowledged: AtomicU64,
    /// Attempts after the first, over all requests.
    retries: AtomicU64,
    /// Failed attempts: no answer (connection refused or reset, timeout).
    transport_errors: AtomicU64,
    /// Failed attempts: a 5xx answer.
    server_errors: AtomicU64,
    /// Retried requests whose 200 said every event was a duplicate: the first attempt had been
    /// committed, and its answer lost to the kill.
    committed_before_kill: AtomicU64,
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .expect("http client")
}

fn run(backend: &str, mut chaos: TallyServer, reference: &TallyServer) {
    let seed = seed();
    let kills = kills_wanted(backend);
    println!(
        "crash test on {backend}: seed {seed} (TALLY_CRASH_SEED={seed} replays it), {kills} kills"
    );
    let layout = Layout::now();
    let stream = Arc::new(stream::stream(
        seed,
        layout,
        kills * REQUESTS_PER_KILL,
        EVENTS_PER_REQUEST,
        true,
    ));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let api = ApiClient::with_http(http_client(), &chaos);
    let billing = rt.block_on(stream::setup(&api, layout));
    let started = Instant::now();

    // The killer: kill points are progress marks (requests finished), so every kill lands while
    // the stream is being sent; a random delay after the mark picks the moment.
    let finished = Arc::new(AtomicUsize::new(0));
    let total = stream.requests.len();
    let mut rng = StdRng::seed_from_u64(seed ^ 0x6b69_6c6c);
    let mut marks: Vec<usize> = (0..kills)
        .map(|_| rng.gen_range(total / 20..total * 9 / 10))
        .collect();
    marks.sort_unstable();
    let killer = {
        let finished = Arc::clone(&finished);
        thread::spawn(move || {
            let mut downtime = Duration::ZERO;
            for mark in marks {
                while finished.load(Ordering::SeqCst) < mark {
                    thread::sleep(Duration::from_millis(2));
                }
                thread::sleep(Duration::from_millis(rng.gen_range(0..40)));
                chaos.kill();
                let down = Instant::now();
                // Sometimes stay down a little, so clients also meet refused connections.
                if rng.gen_bool(0.3) {
                    thread::sleep(Duration::from_millis(rng.gen_range(10..150)));
                }
                chaos.restart();
                downtime += down.elapsed();
            }
            (chaos, downtime)
        })
    };

    let tally = Arc::new(Tally::default());
    let abandoned: Vec<usize> = rt.block_on(async {
        let mut clients = Vec::new();
        for c in 0..CLIENTS {
            let (api, stream, tally, finished) = (
                api.clone(),
                Arc::clone(&stream),
                Arc::clone(&tally),
                Arc::clone(&finished),
            );
            clients.push(tokio::spawn(async move {
                let mut abandoned = Vec::new();
                for r in (c..stream.requests.len()).step_by(CLIENTS) {
                    if !send_until_answered(&api, &stream.requests[r], &tally).await {
                        abandoned.push(r);
                    }
                    finished.fetch_add(1, Ordering::SeqCst);
                }
                abandoned
            }));
        }
        let mut all = Vec::new();
        for client in clients {
            all.extend(client.await.expect("client task"));
        }
        all
    });
    let (chaos, downtime) = killer.join().expect("killer thread");
    let chaos_secs = started.elapsed().as_secs_f64();

    rt.block_on(async {
        // Given-up requests landed wholly or not at all; resending completes the stream.
        let (mut were_stored, mut were_not) = (0, 0);
        for &r in &abandoned {
            let req = &stream.requests[r];
            let (status, body) = api
                .post_text("/v1/ingest", req.body.clone())
                .await
                .unwrap_or_else(|e| panic!("resending request {r}: {e}"));
            assert_eq!(status, 200, "resending request {r}: {body}");
            let got = counts(&body);
            if got == (0, req.events) {
                were_stored += 1;
            } else if got == (req.own, req.events - req.own) {
                were_not += 1;
            } else {
                panic!(
                    "request {r} was half-written: resent, {got:?} (accepted, duplicates); \
                     expected (0, {}) or ({}, {})\n{}",
                    req.events,
                    req.own,
                    req.events - req.own,
                    chaos.logs()
                );
            }
        }

        // Every acknowledged (and now every) event is stored: nothing in the stream is new.
        for (r, req) in stream.requests.iter().enumerate() {
            let (status, body) = api
                .post_text("/v1/ingest", req.body.clone())
                .await
                .unwrap_or_else(|e| panic!("replaying request {r}: {e}"));
            assert_eq!(status, 200, "replaying request {r}: {body}");
            assert_eq!(
                counts(&body),
                (0, req.events),
                "request {r} (acknowledged) is not wholly stored after the crashes"
            );
        }

        // The event store holds every event of the stream exactly once as counted (claimed
        // with its dedupe key in one transaction), and at most its latest duplicate beside it.
        let mut ids: Vec<String> = stream
            .requests
            .iter()
            .flat_map(|req| {
                let body: Value = serde_json::from_str(&req.body).expect("request body");
                body.as_array()
                    .expect("an array of events")
                    .iter()
                    .map(|e| e["transaction_id"].as_str().expect("id").to_string())
                    .collect::<Vec<_>>()
            })
            .collect();
        ids.sort();
        ids.dedup();
        assert_eq!(u64::try_from(ids.len()).unwrap(), stream.distinct_events);
        let mut counted = std::collections::BTreeMap::<String, (u32, u32)>::new();
        for chunk in ids.chunks(100) {
            let (status, body) = api
                .post("/v1/events/search", &serde_json::json!({ "transactionIds": chunk }))
                .await
                .unwrap_or_else(|e| panic!("searching events: {e}"));
            assert_eq!(status, 200, "searching events: {body}");
            for row in body.as_array().expect("search answers an array") {
                let id = row["transaction_id"].as_str().expect("id").to_string();
                let entry = counted.entry(id).or_default();
                match row["is_duplicate"].as_bool() {
                    Some(false) => entry.0 += 1,
                    _ => entry.1 += 1,
                }
            }
        }
        for id in &ids {
            let (n, dups) = counted.get(id).copied().unwrap_or_default();
            assert!(
                n == 1 && dups <= 1,
                "event {id} is stored {n} times counted and {dups} as duplicate after the crashes"
            );
        }
        assert_eq!(counted.len(), ids.len());

        // The uninterrupted run of the same stream.
        let reference_api = ApiClient::with_http(http_client(), reference);
        let reference_billing = stream::setup(&reference_api, layout).await;
        for (r, req) in stream.requests.iter().enumerate() {
            let (status, body) = reference_api
                .post_text("/v1/ingest", req.body.clone())
                .await
                .unwrap_or_else(|e| panic!("reference request {r}: {e}"));
            assert_eq!(status, 200, "reference request {r}: {body}");
        }

        let got = stream::invoices(&api, &billing).await;
        let want = stream::invoices(&reference_api, &reference_billing).await;
        let billed = stream::billed(&got, &billing);
        assert_eq!(
            billed, stream.expected,
            "the crashed server bills other totals than the stream's (calls, MB) per customer"
        );
        assert_eq!(stream::billed(&want, &reference_billing), stream.expected);
        let (got, want) = (
            stream::normalize_ids(&got.join("\n")),
            stream::normalize_ids(&want.join("\n")),
        );
        assert!(got == want, "invoices differ from the uninterrupted run's\n--- crashed ---\n{got}\n--- uninterrupted ---\n{want}");

        let events: u64 = stream.requests.iter().map(|r| r.events).sum();
        println!(
            "crash test on {backend}: {kills} SIGKILLs in {chaos_secs:.1}s (down {:.1}s in all); \
             {} requests ({events} events, {} distinct) from {CLIENTS} clients: {} acknowledged, \
             {} retries ({} refused/reset/timeouts, {} 5xx), {} answered all-duplicate on retry \
             (committed, answer lost), {} given up ({were_stored} had landed, {were_not} had not); \
             billed per customer (calls, MB): {:?}",
            downtime.as_secs_f64(),
            stream.requests.len(),
            stream.distinct_events,
            tally.acknowledged.load(Ordering::SeqCst),
            tally.retries.load(Ordering::SeqCst),
            tally.transport_errors.load(Ordering::SeqCst),
            tally.server_errors.load(Ordering::SeqCst),
            tally.committed_before_kill.load(Ordering::SeqCst),
            abandoned.len(),
            billed.0,
        );
    });
    drop(chaos);
}

/// `(accepted, duplicates)` of an ingest answer (with nothing rejected).
fn counts(body: &Value) -> (u64, u64) {
    let data = &body["data"];
    assert_eq!(data["rejected"], serde_json::json!([]), "{body}");
    (
        data["accepted"].as_u64().expect("accepted"),
        data["duplicates"].as_u64().expect("duplicates"),
    )
}

/// Sends one request until it is answered 200, like a client with retries. Returns false if it
/// was given up (an abandonable request whose first attempt failed).
async fn send_until_answered(api: &ApiClient, req: &Request, tally: &Tally) -> bool {
    for attempt in 1u64.. {
        let failure = match api.post_text("/v1/ingest", req.body.clone()).await {
            Ok((200, body)) => {
                let (accepted, duplicates) = counts(&body);
                assert_eq!(accepted + duplicates, req.events, "{body}");
                if attempt > 1 && accepted == 0 {
                    tally.committed_before_kill.fetch_add(1, Ordering::SeqCst);
                }
                tally.acknowledged.fetch_add(1, Ordering::SeqCst);
                return true;
            }
            Ok((status, body)) if status >= 500 => {
                // A failure must still be the API's JSON error, never a hang or a bare 5xx.
                assert!(
                    body["message"].is_string(),
                    "{status} without a message: {body}"
                );
                &tally.server_errors
            }
            Ok((status, body)) => panic!("ingest answered {status}: {body}"),
            Err(e) if e.contains("non-JSON body") => panic!("ingest answered {e}"),
            Err(_) => &tally.transport_errors,
        };
        failure.fetch_add(1, Ordering::SeqCst);
        if req.abandonable {
            return false;
        }
        tally.retries.fetch_add(1, Ordering::SeqCst);
        // Back off a little more after each failure, up to 100 ms.
        tokio::time::sleep(Duration::from_millis(5 * attempt.min(20))).await;
    }
    unreachable!("the retry loop only ends by returning")
}
