//! `bench_backends`: native ingest and draft-invoice reads on SQLite and on PostgreSQL, in one run,
//! so the two backends are compared on the same machine, binary and data.
//!
//! For each backend (SQLite file, then a fresh PostgreSQL database on `$TALLY_TEST_PG_URL`):
//! 1. Starts `tally serve` (the [`tally_tests::TallyServer`] harness) and creates a SUM metric on
//!    `tokens` grouped by `model` and `user_id`, a product priced per `model`, a rate card, a
//!    customer with an ingest alias and a monthly contract from the start of the current month.
//! 2. Ingest: pre-generates `--events` events (unique transaction ids, timestamps over the last
//!    three hours, 10 models × `--users` users) in bodies of 100, then `--concurrency` tasks POST
//!    them to `/v1/ingest` over keep-alive connections. Every response must be a 200 (a durable
//!    commit); the run fails unless exactly `--events` were accepted. Reports events/s and
//!    per-request p50/p99.
//! 3. Draft reads: `--read-concurrency` tasks GET `/v1/customers/{id}/invoices` `--reads` times
//!    in all; each read rates the current draft from the hourly partials (10 × users × 3 hours
//!    rows at most). Every read must be a 200 with the same total. Reports reads/s and p50/p99.
//!
//! ```text
//! cargo build --release -p tally-central --bin tally
//! cargo run --release -p tally-tests --bin bench_backends -- --events 200000
//! ```
//!
//! Options: `--tally PATH` (default: `tally` next to this executable), `--events N` (200,000),
//! `--concurrency C` (32), `--users U` (100), `--reads R` (2,000), `--read-concurrency C` (8),
//! `--backends sqlite,postgres`. Client and server share the machine's cores.

// Floats are only used for reporting timings and rates: no money or quantity goes near them.
#![allow(clippy::disallowed_types, clippy::float_arithmetic)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{json, Value};
use tally_core::time::{format_rfc3339_ms, HOUR_MS};
use tally_tests::bench::{month_start, now_ms, positive, timed_reads, token_billing, MODELS};
use tally_tests::{ApiClient, PgDatabase, TallyServer};

const BATCH: usize = 100;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Native ingest and draft-invoice reads on SQLite and PostgreSQL, in one run.
#[derive(Parser)]
#[command(name = "bench_backends")]
struct Args {
    /// The tally binary (default: `tally` next to this executable).
    #[arg(long, value_name = "PATH")]
    tally: Option<PathBuf>,
    /// Events to ingest per backend.
    #[arg(long, value_name = "N", default_value = "200000", value_parser = positive)]
    events: usize,
    /// Concurrent ingest tasks.
    #[arg(long, value_name = "C", default_value = "32", value_parser = positive)]
    concurrency: usize,
    /// Users the events spread over (times 10 models).
    #[arg(long, value_name = "U", default_value = "100", value_parser = positive)]
    users: usize,
    /// Draft invoice reads per backend.
    #[arg(long, value_name = "R", default_value = "2000", value_parser = positive)]
    reads: usize,
    /// Concurrent read tasks.
    #[arg(long, value_name = "C", default_value = "8", value_parser = positive)]
    read_concurrency: usize,
    /// Backends to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "sqlite,postgres")]
    backends: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\nBENCH FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What one backend measured.
struct Report {
    backend: String,
    ingest: Timing,
    reads: Timing,
    draft_total: String,
}

struct Timing {
    ops: usize,
    wall: Duration,
    latencies: Vec<Duration>,
}

impl Timing {
    fn rate(&self) -> f64 {
        self.ops as f64 / self.wall.as_secs_f64()
    }

    fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        sorted.get(at).copied().unwrap_or_default()
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
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "bench_backends: {} events in bodies of {BATCH}, {} ingest connections, {MODELS} models x {} users, \
         {} draft reads over {} connections, {cores} cores, binary {}",
        args.events, args.concurrency, args.users, args.reads, args.read_concurrency, bin.display()
    );
    let mut reports = Vec::new();
    for backend in &args.backends {
        println!("\n== {backend}");
        let db = match backend.as_str() {
            "sqlite" => None,
            "postgres" => Some(PgDatabase::create()),
            other => return Err(format!("unknown backend {other:?}")),
        };
        let server = TallyServer::start_on(db.as_ref().map(PgDatabase::url), &[], &[]);
        let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
        let report = rt
            .block_on(measure(backend, &server, args))
            .map_err(|e| format!("{backend}: {e}\n--- server log ---\n{}", tail(&server)))?;
        print_report(&report);
        reports.push(report);
        drop(server);
    }
    println!("\n== summary");
    println!(
        "{:<10} {:>14} {:>12} {:>12} {:>12} {:>12} {:>12}",
        "backend", "ingest ev/s", "ingest p50", "ingest p99", "reads/s", "read p50", "read p99"
    );
    for r in &reports {
        println!(
            "{:<10} {:>14.0} {:>12} {:>12} {:>12.1} {:>12} {:>12}",
            r.backend,
            r.ingest.rate(),
            ms(r.ingest.percentile(0.5)),
            ms(r.ingest.percentile(0.99)),
            r.reads.rate(),
            ms(r.reads.percentile(0.5)),
            ms(r.reads.percentile(0.99)),
        );
    }
    Ok(())
}

fn tail(server: &TallyServer) -> String {
    let logs = server.logs();
    let lines: Vec<&str> = logs.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn print_report(r: &Report) {
    println!(
        "ingest: {} events in {:.2} s = {:.0} events/s; request p50 {} p99 {}",
        r.ingest.ops,
        r.ingest.wall.as_secs_f64(),
        r.ingest.rate(),
        ms(r.ingest.percentile(0.5)),
        ms(r.ingest.percentile(0.99)),
    );
    println!(
        "draft reads: {} in {:.2} s = {:.1} reads/s; p50 {} p99 {}; draft total {}",
        r.reads.ops,
        r.reads.wall.as_secs_f64(),
        r.reads.rate(),
        ms(r.reads.percentile(0.5)),
        ms(r.reads.percentile(0.99)),
        r.draft_total,
    );
}

/// The body of a 200; anything else fails the run.
fn ok((status, body): (u16, Value)) -> Result<Value, String> {
    match status {
        200 => Ok(body),
        _ => Err(format!("{status}: {body}")),
    }
}

/// Request bodies of `BATCH` events each, generated before any timing.
fn bodies(events: usize, users: usize) -> Vec<String> {
    let now = now_ms();
    // A cheap deterministic mix (fixed seed): no two runs differ in what they send.
    let mut x: u64 = 0x5eed_7a11;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..events)
        .collect::<Vec<_>>()
        .chunks(BATCH)
        .map(|chunk| {
            let events: Vec<Value> = chunk
                .iter()
                .map(|i| {
                    let r = next();
                    let at = now - 1 - (r % (3 * HOUR_MS as u64 - 60_000)) as i64;
                    json!({
                        "transaction_id": format!("bench-{i}"), "customer_id": "bench",
                        "event_type": "llm_request", "timestamp": format_rfc3339_ms(at),
                        "properties": {
                            "model": format!("model-{}", (r >> 20) as usize % MODELS),
                            "user_id": format!("user-{}", (r >> 32) as usize % users),
                            "tokens": ((r >> 40) % 8_000 + 1).to_string(),
                        },
                    })
                })
                .collect();
            Value::Array(events).to_string()
        })
        .collect()
}

async fn measure(backend: &str, server: &TallyServer, args: &Args) -> Result<Report, String> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency.max(args.read_concurrency))
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| e.to_string())?;
    let api = ApiClient::with_http(http, server);
    let prices: Vec<Value> = (0..MODELS)
        .map(|m| {
            format!("0.00{}", m + 1)
                .parse::<Value>()
                .unwrap_or(json!(1))
        })
        .collect();
    let customer = token_billing(&api, "bench", &month_start(now_ms()), &prices).await?;

    let bodies = Arc::new(bodies(args.events, args.users));
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (api, bodies, next) = (api.clone(), bodies.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let (mut accepted, mut latencies) = (0u64, Vec::new());
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i) else {
                    return Ok::<_, String>((accepted, latencies));
                };
                let t = Instant::now();
                let res = ok(api.post_text("/v1/ingest", body.clone()).await?)?;
                latencies.push(t.elapsed());
                accepted += res["data"]["accepted"].as_u64().unwrap_or(0);
            }
        }));
    }
    let (mut accepted, mut latencies) = (0u64, Vec::new());
    for t in tasks {
        let (a, l) = t.await.map_err(|e| e.to_string())??;
        accepted += a;
        latencies.extend(l);
    }
    let ingest = Timing {
        ops: args.events,
        wall: started.elapsed(),
        latencies,
    };
    if accepted != args.events as u64 {
        return Err(format!(
            "accepted {accepted} of {} events on {backend}",
            args.events
        ));
    }

    let path = format!("/v1/customers/{customer}/invoices?status=DRAFT&limit=10");
    let first = ok(api.get(&path).await?)?;
    let draft_total = first["data"][0]["total"].to_string();
    let started = Instant::now();
    let want = draft_total.clone();
    let latencies = timed_reads(&api, &path, args.reads, args.read_concurrency, move |res| {
        let total = res["data"][0]["total"].to_string();
        match total == want {
            true => Ok(()),
            false => Err(format!("draft total changed: {total} != {want}")),
        }
    })
    .await?;
    let reads = Timing {
        ops: args.reads,
        wall: started.elapsed(),
        latencies,
    };
    Ok(Report {
        backend: backend.to_string(),
        ingest,
        reads,
        draft_total,
    })
}
