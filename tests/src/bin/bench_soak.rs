//! `bench_soak`: a bounded soak on loopback: steady native ingest at a fixed rate with concurrent
//! draft-invoice reads, reporting throughput, p50/p99 latency and the server's memory over time.
//!
//! 1. Starts `tally serve` (rate limiting off) on a fresh SQLite file or PostgreSQL database and
//!    creates a SUM metric on `tokens` grouped by `model`, priced per model, for one customer.
//! 2. For `--duration-secs`, schedules bodies of 100 events at `--rate` events/s (body i is due at
//!    start + i × 100 / rate); `--concurrency` tasks send them as they fall due. 1 body in 50 is a
//!    resend of an earlier one (a client retry), which must come back all duplicates.
//!    Meanwhile `--readers` tasks read the customer's draft invoices back to back.
//! 3. Every `--sample-secs` prints one line: events/s achieved, ingest p50/p99, reads/s, read
//!    p50/p99, and the server's resident memory (VmRSS from /proc).
//! 4. Afterwards: every unique event must have been accepted exactly once (the resends all
//!    duplicates), the invoices' total must equal the exact total computed here from the events
//!    sent, and memory must be flat: the mean RSS of the last third of the samples may exceed the
//!    mean of the middle third by at most `--max-growth-pct` (the first third is warm-up, while
//!    caches fill). Any failure exits non-zero.
//!
//! ```text
//! cargo build --release -p tally-central --bin tally
//! cargo run --release -p tally-tests --bin bench_soak -- --duration-secs 300 --rate 10000
//! ```
//!
//! Options: `--tally PATH`, `--backend sqlite|postgres` (sqlite), `--duration-secs S` (120),
//! `--rate EVENTS_PER_SEC` (10,000), `--concurrency C` (16), `--readers R` (2), `--users U`
//! (100), `--sample-secs S` (10), `--max-growth-pct P` (10). Client and server share the cores.

// Floats are only used for reporting timings and rates: no money or quantity goes near them; the
// expected invoice total is computed with exact decimals.
#![allow(clippy::disallowed_types, clippy::float_arithmetic)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use tally_core::time::format_rfc3339_ms;
use tally_tests::bench::{month_start, now_ms, positive, seconds, token_billing, MODELS};
use tally_tests::{ApiClient, PgDatabase, TallyServer};

const BATCH: usize = 100;
/// One body in this many is a resend of an earlier body.
const RESEND_EVERY: usize = 50;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A steady ingest rate with concurrent draft reads for a bounded time.
#[derive(Parser)]
#[command(name = "bench_soak")]
struct Args {
    /// The tally binary (default: `tally` next to this executable).
    #[arg(long, value_name = "PATH")]
    tally: Option<PathBuf>,
    /// `sqlite` or `postgres`.
    #[arg(long, default_value = "sqlite")]
    backend: String,
    /// How long to hold the rate.
    #[arg(long = "duration-secs", value_name = "S", default_value = "120", value_parser = seconds)]
    duration: Duration,
    /// Events per second to send (at least one body of 100 per second).
    #[arg(long, value_name = "EVENTS_PER_SEC", default_value = "10000", value_parser = positive)]
    rate: usize,
    /// Concurrent ingest tasks.
    #[arg(long, value_name = "C", default_value = "16", value_parser = positive)]
    concurrency: usize,
    /// Concurrent draft readers (0 for none).
    #[arg(long, value_name = "R", default_value = "2")]
    readers: usize,
    /// Users the events spread over.
    #[arg(long, value_name = "U", default_value = "100", value_parser = positive)]
    users: usize,
    /// Seconds between report lines.
    #[arg(long = "sample-secs", value_name = "S", default_value = "10", value_parser = seconds)]
    sample: Duration,
    /// Largest accepted growth of memory from the middle to the last third, in percent.
    #[arg(long, value_name = "P", default_value = "10", value_parser = positive)]
    max_growth_pct: usize,
}

fn main() -> ExitCode {
    let mut args = Args::parse();
    args.rate = args.rate.max(BATCH);
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\nSOAK FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    let bin = match &args.tally {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .map_err(|e| format!("cannot find this executable: {e}"))?
            .with_file_name(format!("tally{}", std::env::consts::EXE_SUFFIX)),
    };
    if !bin.is_file() {
        return Err(format!(
            "no tally binary at {} (build it with `cargo build --release -p tally-central --bin tally`, or pass --tally)",
            bin.display()
        ));
    }
    // The harness takes the binary from $TALLY_BIN; set before any thread is started.
    std::env::set_var("TALLY_BIN", &bin);
    let db = match args.backend.as_str() {
        "sqlite" => None,
        "postgres" => Some(PgDatabase::create()),
        other => return Err(format!("unknown backend {other:?}")),
    };
    let server = TallyServer::start_on(
        db.as_ref().map(PgDatabase::url),
        &["--rate-limit-rps", "0"],
        &[],
    );
    println!(
        "bench_soak: {} for {} s at {} events/s (bodies of {BATCH}, 1 in {RESEND_EVERY} resent), \
         {} ingest connections, {} draft readers, {} cores, binary {}",
        args.backend,
        args.duration.as_secs(),
        args.rate,
        args.concurrency,
        args.readers,
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        bin.display()
    );
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let result = rt.block_on(soak(&server, args));
    result.map_err(|e| {
        let logs = server.logs();
        let lines: Vec<&str> = logs.lines().collect();
        format!(
            "{e}\n--- server log ---\n{}",
            lines[lines.len().saturating_sub(30)..].join("\n")
        )
    })
}

fn price(model: usize) -> Decimal {
    Decimal::new(i64::try_from(model).unwrap_or(0) + 1, 3)
}

/// Body `i`: 100 events with ids `soak-{i}-{k}`, stamped now, and their exact expected charge.
fn body(i: usize, users: usize) -> (String, Decimal) {
    let mut x = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let now = now_ms();
    let mut charge = Decimal::ZERO;
    let events: Vec<Value> = (0..BATCH)
        .map(|k| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let model = (x >> 20) as usize % MODELS;
            let tokens = (x >> 40) % 8_000 + 1;
            charge += Decimal::from(tokens) * price(model);
            json!({
                "transaction_id": format!("soak-{i}-{k}"), "customer_id": "soak",
                "event_type": "llm_request",
                "timestamp": format_rfc3339_ms(now - 1 - (x % 60_000) as i64),
                "properties": {
                    "model": format!("model-{model}"),
                    "user_id": format!("user-{}", (x >> 32) as usize % users),
                    "tokens": tokens.to_string(),
                },
            })
        })
        .collect();
    (Value::Array(events).to_string(), charge)
}

/// The body a resend at index `i` repeats: an earlier one that was sent as an original.
fn original(i: usize) -> usize {
    let j = i / 2;
    if j % RESEND_EVERY == RESEND_EVERY - 1 {
        j - 1
    } else {
        j
    }
}

#[derive(Default)]
struct Window {
    ingest: Vec<Duration>,
    reads: Vec<Duration>,
    events: usize,
}

fn pct(sorted: &[Duration], p: f64) -> String {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted
        .get(at)
        .map_or("-".into(), |d| format!("{:.1}", d.as_secs_f64() * 1000.0))
}

fn rss_kib(pid: u32) -> Result<u64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("reading the server's memory: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| "no VmRSS in /proc status".to_string())
}

async fn soak(server: &TallyServer, args: &Args) -> Result<(), String> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency + args.readers)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| e.to_string())?;
    let api = ApiClient::with_http(http, server);
    let prices: Vec<Value> = (0..MODELS)
        .map(|m| Value::from_str(&price(m).to_string()).unwrap_or(json!(0)))
        .collect();
    let customer = token_billing(
        &api,
        "soak",
        &month_start(now_ms() - 31 * tally_core::time::DAY_MS),
        &prices,
    )
    .await?;
    let invoices_path = format!("/v1/customers/{customer}/invoices?limit=100");

    let bodies_total = (args.duration.as_secs_f64() * args.rate as f64 / BATCH as f64) as usize;
    let interval = Duration::from_secs_f64(BATCH as f64 / args.rate as f64);
    let window = Arc::new(Mutex::new(Window::default()));
    let next = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(AtomicU64::new(0));
    let duplicates = Arc::new(AtomicU64::new(0));
    let charges = Arc::new(Mutex::new(vec![Decimal::ZERO; bodies_total]));
    let done = Arc::new(AtomicBool::new(false));
    let started = tokio::time::Instant::now();

    let mut senders = Vec::new();
    for _ in 0..args.concurrency {
        let (api, window, next, accepted, duplicates, charges) = (
            api.clone(),
            window.clone(),
            next.clone(),
            accepted.clone(),
            duplicates.clone(),
            charges.clone(),
        );
        let users = args.users;
        senders.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= bodies_total {
                    return Ok::<_, String>(());
                }
                tokio::time::sleep_until(started + interval * i as u32).await;
                // A retry of an earlier body, already acknowledged: all duplicates.
                let resend = i % RESEND_EVERY == RESEND_EVERY - 1;
                let (text, charge) = body(if resend { original(i) } else { i }, users);
                let t = Instant::now();
                let (status, res) = api.post_text("/v1/ingest", text).await?;
                let took = t.elapsed();
                if status != 200 {
                    return Err(format!("ingest answered {status}: {res}"));
                }
                // Counted over all bodies, so it does not matter whether a resend or its original
                // arrives first.
                let data = &res["data"];
                accepted.fetch_add(data["accepted"].as_u64().unwrap_or(0), Ordering::Relaxed);
                duplicates.fetch_add(data["duplicates"].as_u64().unwrap_or(0), Ordering::Relaxed);
                if !resend {
                    if let Some(slot) = charges.lock().map_err(|e| e.to_string())?.get_mut(i) {
                        *slot = charge;
                    }
                }
                let mut w = window.lock().map_err(|e| e.to_string())?;
                w.ingest.push(took);
                w.events += BATCH;
            }
        }));
    }
    let mut readers = Vec::new();
    for _ in 0..args.readers {
        let (api, window, done, path) = (
            api.clone(),
            window.clone(),
            done.clone(),
            invoices_path.clone(),
        );
        readers.push(tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                let t = Instant::now();
                let (status, res) = api.get(&path).await?;
                if status != 200 {
                    return Err(format!("draft read answered {status}: {res}"));
                }
                window
                    .lock()
                    .map_err(|e| e.to_string())?
                    .reads
                    .push(t.elapsed());
            }
            Ok::<_, String>(())
        }));
    }

    println!(
        "{:>7} {:>10} {:>10} {:>10} {:>8} {:>9} {:>9} {:>10}",
        "t (s)",
        "events/s",
        "ingest p50",
        "p99 (ms)",
        "reads/s",
        "read p50",
        "p99 (ms)",
        "RSS (MiB)"
    );
    let mut rss = Vec::new();
    let mut last = Instant::now();
    while senders.iter().any(|s| !s.is_finished()) {
        tokio::time::sleep(args.sample.min(Duration::from_millis(250))).await;
        if last.elapsed() < args.sample && senders.iter().any(|s| !s.is_finished()) {
            continue;
        }
        let secs = last.elapsed().as_secs_f64();
        last = Instant::now();
        let mut w = std::mem::take(&mut *window.lock().map_err(|e| e.to_string())?);
        w.ingest.sort();
        w.reads.sort();
        let kib = rss_kib(server.pid())?;
        rss.push(kib);
        println!(
            "{:>7.0} {:>10.0} {:>10} {:>10} {:>8.1} {:>9} {:>9} {:>10.1}",
            started.elapsed().as_secs_f64(),
            w.events as f64 / secs,
            pct(&w.ingest, 0.5),
            pct(&w.ingest, 0.99),
            w.reads.len() as f64 / secs,
            pct(&w.reads, 0.5),
            pct(&w.reads, 0.99),
            kib as f64 / 1024.0,
        );
    }
    let elapsed = started.elapsed();
    done.store(true, Ordering::Relaxed);
    for s in senders {
        s.await.map_err(|e| e.to_string())??;
    }
    for r in readers {
        r.await.map_err(|e| e.to_string())??;
    }

    // Exactly once: every unique event accepted once, every resend all duplicates.
    let resends = (0..bodies_total)
        .filter(|i| i % RESEND_EVERY == RESEND_EVERY - 1)
        .count();
    let unique = (bodies_total - resends) * BATCH;
    let (got, dupes) = (
        accepted.load(Ordering::Relaxed),
        duplicates.load(Ordering::Relaxed),
    );
    println!(
        "\nsent {} bodies in {:.1} s ({:.0} events/s offered): {got} events accepted of {unique} unique, \
         {dupes} duplicates of {} resent",
        bodies_total,
        elapsed.as_secs_f64(),
        (bodies_total * BATCH) as f64 / elapsed.as_secs_f64(),
        resends * BATCH
    );
    if got != unique as u64 || dupes != (resends * BATCH) as u64 {
        return Err("events were lost or counted twice".into());
    }
    let expected: Decimal = charges.lock().map_err(|e| e.to_string())?.iter().sum();
    let (status, res) = api.get(&invoices_path).await?;
    if status != 200 {
        return Err(format!("invoice read answered {status}: {res}"));
    }
    let mut billed = Decimal::ZERO;
    for inv in res["data"].as_array().into_iter().flatten() {
        billed += Decimal::from_str(&inv["total"].to_string()).map_err(|e| e.to_string())?;
    }
    println!("invoices total {billed}; expected from the events sent {expected}");
    if billed != expected.normalize() && billed.normalize() != expected.normalize() {
        return Err(format!("invoice total {billed} != expected {expected}"));
    }

    // Flat memory: the last third against the middle third (the first third is warm-up).
    let third = rss.len() / 3;
    if third == 0 {
        println!("memory: too few samples to judge (raise --duration-secs or lower --sample-secs)");
        return Ok(());
    }
    let mean = |s: &[u64]| s.iter().sum::<u64>() as f64 / s.len() as f64;
    let middle = mean(&rss[third..2 * third]);
    let end = mean(&rss[2 * third..]);
    let growth = (end - middle) / middle * 100.0;
    println!(
        "memory: mean RSS {:.1} MiB (middle third) -> {:.1} MiB (last third), {growth:+.1}% \
         (limit +{}%), peak {:.1} MiB",
        middle / 1024.0,
        end / 1024.0,
        args.max_growth_pct,
        rss.iter().max().copied().unwrap_or(0) as f64 / 1024.0
    );
    if growth > args.max_growth_pct as f64 {
        return Err(format!("memory grew {growth:.1}% during the soak"));
    }
    Ok(())
}
