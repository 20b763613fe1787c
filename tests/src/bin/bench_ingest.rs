//! `bench_ingest`: how many usage events per second `POST /v1/ingest` durably commits, compared
//! with how fast the same bytes can merely be parsed.
//!
//! What it does:
//! 1. Starts `tally serve` on an ephemeral port with a fresh SQLite database (through the
//!    [`tally_tests::TallyServer`] harness), or targets a running server given `--url` and
//!    `--token`. It creates two billable metrics (SUM of `tokens` grouped by `model` and by
//!    `user_id`, and a COUNT) and one customer with an ingest alias, so every event is matched
//!    and pre-aggregated for real.
//! 2. Pre-generates every request body before any timing: `--events` events in JSON arrays of
//!    `--batch` events, unique transaction ids, timestamps spread over the last three hours,
//!    10 models, 1,000 users, `tokens` as strings of integers, `customer_id` = the alias.
//! 3. Phase 1, parse only: `tally_core::ingest::parse_batch` over every body on one thread.
//! 4. Phase 2, ingest: `--concurrency` tasks (one keep-alive HTTP/1.1 connection each) take
//!    bodies from a shared queue and POST them. Every response must be a 200 whose `accepted`
//!    counts are summed; a 200 means the events are committed (group commit, `synchronous =
//!    FULL`). Reports wall time, events/s and per-request latency percentiles, and fails unless
//!    the server accepted exactly `--events` events.
//! 5. Phase 3, replay: re-sends the first 10% of bodies; every event must come back a duplicate.
//! 6. Prints a summary (with the core count, and the CPU time the server and this process used
//!    during each phase, read from `/proc` on Linux) and kills the server, also on failure.
//!
//! Run it (release builds both this program and the `tally` binary next to it):
//!
//! ```text
//! cargo build --release -p tally-central --bin tally
//! cargo run --release -p tally-tests --bin bench_ingest -- --events 1000000
//! ```
//!
//! Options: `--tally PATH` (default: `tally` next to this executable), `--events N` (default
//! 1,000,000), `--concurrency C` (default 32), `--batch B` (default 100, at most 100), and
//! `--url URL --token TOKEN` to benchmark an already-running server instead of spawning one.
//! The client runs on the same machine as the server and competes with it for CPU.

// Floats are only used for reporting timings and rates: no money or quantity goes near them.
#![allow(clippy::disallowed_types, clippy::float_arithmetic)]

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tally_core::ingest::{parse_batch, IngestSummary, MAX_BATCH_EVENTS};
use tally_core::time::{format_rfc3339_ms, HOUR_MS};
use tally_tests::bench::{positive, SplitMix64};
use tally_tests::TallyServer;

const EVENT_TYPE: &str = "llm_request";
const MODELS: [&str; 10] = [
    "gpt-4o",
    "gpt-4o-mini",
    "o3",
    "o4-mini",
    "claude-sonnet-4",
    "claude-haiku-3.5",
    "gemini-2.5-pro",
    "gemini-2.5-flash",
    "llama-3.3-70b",
    "mistral-large",
];
const USERS: u64 = 1_000;
/// Event timestamps fall within this long before generation time.
const TIMESTAMP_SPREAD_MS: i64 = 3 * HOUR_MS;
/// Largest `tokens` value of one event.
const MAX_TOKENS: u64 = 8_000;
/// Per-request time limit: a request slower than this fails the run.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Clock ticks per second in `/proc/<pid>/stat` (`USER_HZ`, 100 on every Linux ABI).
const PROC_TICKS_PER_SEC: u64 = 100;
/// Server log lines shown when the run fails.
const LOG_TAIL_LINES: usize = 30;

fn main() -> ExitCode {
    let args = Args::parse();
    // `run` owns the server, so it is killed (dropped) before we get here, error or not.
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let bar = "!".repeat(78);
            eprintln!("\n{bar}\nBENCH FAILED: {e}\n{bar}");
            ExitCode::FAILURE
        }
    }
}

/// How many usage events per second `POST /v1/ingest` durably commits.
#[derive(Parser)]
#[command(name = "bench_ingest")]
struct Args {
    /// The tally binary to spawn (default: `tally` next to this executable).
    #[arg(long, value_name = "PATH")]
    tally: Option<PathBuf>,
    /// Events to send.
    #[arg(long, value_name = "N", default_value = "1000000", value_parser = positive)]
    events: usize,
    /// Concurrent ingest tasks, one keep-alive connection each.
    #[arg(long, value_name = "C", default_value = "32", value_parser = positive)]
    concurrency: usize,
    /// Events per request.
    #[arg(long, value_name = "B", default_value_t = MAX_BATCH_EVENTS, value_parser = batch_size)]
    batch: usize,
    /// Benchmark this running server instead of spawning one.
    #[arg(long, value_name = "URL", requires = "token", value_parser = without_trailing_slash)]
    url: Option<String>,
    /// The API token for `--url`.
    #[arg(long, value_name = "TOKEN", requires = "url")]
    token: Option<String>,
}

/// A request size: positive and at most what `/v1/ingest` accepts.
fn batch_size(text: &str) -> Result<usize, String> {
    match positive(text)? {
        n if n > MAX_BATCH_EVENTS => Err(format!("is at most {MAX_BATCH_EVENTS}")),
        n => Ok(n),
    }
}

fn without_trailing_slash(text: &str) -> Result<String, String> {
    Ok(text.trim_end_matches('/').to_string())
}

/// The server under test: spawned here (killed on drop) or already running elsewhere.
enum Target {
    Spawned(TallyServer),
    External { url: String, token: String },
}

impl Target {
    fn base_url(&self) -> &str {
        match self {
            Target::Spawned(s) => s.base_url(),
            Target::External { url, .. } => url,
        }
    }

    fn token(&self) -> &str {
        match self {
            Target::Spawned(s) => s.token(),
            Target::External { token, .. } => token,
        }
    }

    fn pid(&self) -> Option<u32> {
        match self {
            Target::Spawned(s) => Some(s.pid()),
            Target::External { .. } => None,
        }
    }

    /// The tail of the server's output, when we spawned it.
    fn log_tail(&self) -> String {
        match self {
            Target::Spawned(s) => {
                let logs = s.logs();
                let lines: Vec<&str> = logs.lines().collect();
                let from = lines.len().saturating_sub(LOG_TAIL_LINES);
                format!("\n--- last server output ---\n{}", lines[from..].join("\n"))
            }
            Target::External { .. } => String::new(),
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let target = match (&args.url, &args.token) {
        (Some(url), Some(token)) => Target::External {
            url: url.clone(),
            token: token.clone(),
        },
        _ => {
            let bin = match &args.tally {
                Some(path) => path.clone(),
                None => default_tally_bin()?,
            };
            if !bin.is_file() {
                return Err(format!(
                    "tally binary not found at {}: build it with \
                     `cargo build --release -p tally-central --bin tally` or pass --tally PATH",
                    bin.display()
                ));
            }
            // The harness takes the binary from $TALLY_BIN; set before any thread is started.
            std::env::set_var("TALLY_BIN", &bin);
            println!(
                "starting {} serve with a fresh SQLite database",
                bin.display()
            );
            Target::Spawned(TallyServer::start())
        }
    };
    println!("server: {}", target.base_url());
    if let Target::Spawned(server) = &target {
        println!("database: {}", server.database_url());
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the tokio runtime: {e}"))?;
    let result = runtime.block_on(bench(args, &target, cores));
    result.map_err(|e| format!("{e}{}", target.log_tail()))
    // `target` drops here: a spawned server is killed and its temp dir removed.
}

async fn bench(args: &Args, target: &Target, cores: usize) -> Result<(), String> {
    let client = reqwest::Client::builder()
        .http1_only()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(args.concurrency)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let api = Api {
        client,
        base_url: target.base_url().to_string(),
        auth: format!("Bearer {}", target.token()),
    };

    // Setup: two metrics and a customer, named per run so reruns against one server never clash.
    let run_id = format!("{:x}", now_ms());
    let alias = format!("bench-{run_id}");
    let sum_metric = api
        .create(
            "/v1/billable-metrics/create",
            &json!({
                "name": format!("bench tokens {run_id}"),
                "aggregation_type": "SUM",
                "aggregation_key": "tokens",
                "event_type_filter": { "in_values": [EVENT_TYPE] },
                "group_keys": [["model"], ["user_id"]],
            }),
        )
        .await?;
    let count_metric = api
        .create(
            "/v1/billable-metrics/create",
            &json!({
                "name": format!("bench requests {run_id}"),
                "aggregation_type": "COUNT",
                "event_type_filter": { "in_values": [EVENT_TYPE] },
            }),
        )
        .await?;
    let customer = api
        .create(
            "/v1/customers",
            &json!({ "name": format!("Bench {run_id}"), "ingest_aliases": [alias] }),
        )
        .await?;
    println!(
        "setup: metrics {sum_metric} (SUM tokens by model, user_id) and {count_metric} (COUNT), \
         customer {customer} (alias {alias})"
    );

    // Payloads, generated before any timing. Leaked so requests borrow them for 'static without
    // copying each body: this process lives only as long as the benchmark.
    let gen_start = Instant::now();
    let payloads: &'static [Vec<u8>] = Box::leak(
        generate_payloads(args.events, args.batch, &run_id, &alias, now_ms())?.into_boxed_slice(),
    );
    let bytes: usize = payloads.iter().map(Vec::len).sum();
    println!(
        "generated {} events in {} bodies ({:.1} MiB, {} bytes/event) in {:.1} s",
        args.events,
        payloads.len(),
        bytes as f64 / (1024.0 * 1024.0),
        bytes / args.events,
        gen_start.elapsed().as_secs_f64()
    );

    // Phase 1: parse only, one thread, the same bytes the server will get.
    println!("\nphase 1: parse_batch on one thread ...");
    let parse_now = now_ms();
    let parse_start = Instant::now();
    let mut parsed = 0usize;
    for (i, body) in payloads.iter().enumerate() {
        let batch =
            parse_batch(black_box(body), parse_now).map_err(|e| format!("body {i}: {e}"))?;
        if let Some(r) = batch.rejected.first() {
            return Err(format!(
                "body {i}: event {} rejected: {}",
                r.index, r.message
            ));
        }
        parsed += black_box(batch).events.len();
    }
    let parse_time = parse_start.elapsed();
    if parsed != args.events {
        return Err(format!("parsed {parsed} events, expected {}", args.events));
    }
    let parse_rate = rate(args.events, parse_time);
    println!(
        "  {} events in {:.2} s = {} events/s",
        args.events,
        parse_time.as_secs_f64(),
        human(parse_rate)
    );

    // Phase 2: ingest.
    println!(
        "\nphase 2: ingest over {} connections, batches of {} ...",
        args.concurrency, args.batch
    );
    let cpu = CpuMeter::start(target.pid());
    let ingest = drive(&api, payloads, args.concurrency, Expect::Accepted).await?;
    let ingest_cpu = cpu.stop();
    let ingest_rate = rate(args.events, ingest.wall);
    println!(
        "  {} events in {:.2} s = {} events/s; {} requests; latency {}",
        ingest.accepted,
        ingest.wall.as_secs_f64(),
        human(ingest_rate),
        ingest.latencies.len(),
        ingest.latency_line()
    );
    if ingest.accepted != args.events {
        // `main` prints this in a banner and exits non-zero.
        return Err(format!(
            "ERROR: the server accepted {} of {} events ({} duplicates)",
            ingest.accepted, args.events, ingest.duplicates
        ));
    }

    // Phase 3: replay the first 10% (at least one body); everything must be a duplicate.
    let replay = &payloads[..(payloads.len() / 10).max(1)];
    // Every body holds `batch` events but the last, which holds what is left.
    let replay_events: usize = (0..replay.len())
        .map(|j| args.batch.min(args.events - j * args.batch))
        .sum();
    println!(
        "\nphase 3: replay {} bodies ({replay_events} events), all duplicates ...",
        replay.len()
    );
    let cpu = CpuMeter::start(target.pid());
    let dup = drive(&api, replay, args.concurrency, Expect::Duplicates).await?;
    let dup_cpu = cpu.stop();
    if dup.duplicates != replay_events || dup.accepted != 0 {
        return Err(format!(
            "replay: {} duplicates and {} accepted, expected {replay_events} duplicates",
            dup.duplicates, dup.accepted
        ));
    }
    let dup_rate = rate(dup.duplicates, dup.wall);
    println!(
        "  {} duplicates in {:.2} s = {} events/s; latency {}",
        dup.duplicates,
        dup.wall.as_secs_f64(),
        human(dup_rate),
        dup.latency_line()
    );

    let bar = "=".repeat(78);
    println!("\n{bar}");
    println!(
        "native ingest: {} events in {:.1} s = {} events/s (batches of {}, {} connections, \
         durable acks); parse only: {} events/s; ratio ingest/parse = {:.2}; p50 {} p99 {}",
        args.events,
        ingest.wall.as_secs_f64(),
        human(ingest_rate),
        args.batch,
        args.concurrency,
        human(parse_rate),
        ingest_rate / parse_rate,
        ms(ingest.percentile(500)),
        ms(ingest.percentile(990)),
    );
    println!(
        "duplicate replay: {} events in {:.2} s = {} events/s; p50 {} p99 {}",
        dup.duplicates,
        dup.wall.as_secs_f64(),
        human(dup_rate),
        ms(dup.percentile(500)),
        ms(dup.percentile(990)),
    );
    println!("machine: {cores} cores; the bench client shares them with the server");
    println!("cpu during ingest: {}", ingest_cpu.line(ingest.wall));
    println!("cpu during replay: {}", dup_cpu.line(dup.wall));
    if let Target::Spawned(server) = target {
        println!(
            "database on disk after the run: {:.1} MiB",
            dir_bytes(server.data_dir()) as f64 / (1024.0 * 1024.0)
        );
    }
    println!("{bar}");
    Ok(())
}

fn default_tally_bin() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    Ok(exe.with_file_name(format!("tally{}", std::env::consts::EXE_SUFFIX)))
}

/// A client of the API under test.
struct Api {
    client: reqwest::Client,
    base_url: String,
    /// `Bearer <token>`.
    auth: String,
}

impl Api {
    /// POSTs a create request and returns the new object's `data.id`.
    async fn create(&self, path: &str, body: &Value) -> Result<String, String> {
        let body = serde_json::to_vec(body).map_err(|e| e.to_string())?;
        let resp = self
            .client
            .post(format!("{}{path}", self.base_url))
            .header("authorization", &self.auth)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| format!("POST {path}: {e}"))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| format!("POST {path}: reading the response: {e}"))?;
        if !status.is_success() {
            return Err(format!("POST {path}: {status}: {text}"));
        }
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| format!("POST {path}: response is not JSON ({e}): {text}"))?;
        value["data"]["id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("POST {path}: no data.id in {text}"))
    }
}

/// One usage event as sent on the wire.
#[derive(Serialize)]
struct WireEvent<'a> {
    transaction_id: String,
    customer_id: &'a str,
    event_type: &'a str,
    timestamp: String,
    properties: WireProperties<'a>,
}

#[derive(Serialize)]
struct WireProperties<'a> {
    model: &'a str,
    user_id: String,
    tokens: String,
}

/// `events` events as JSON array bodies of `batch` events (the last one may be shorter).
fn generate_payloads(
    events: usize,
    batch: usize,
    run_id: &str,
    alias: &str,
    now_ms: i64,
) -> Result<Vec<Vec<u8>>, String> {
    let mut rng = SplitMix64(0x7a11_b3e5_0000_0001);
    // A second of margin so no event is ever dated after the server's "now".
    let newest_ms = now_ms - 1_000;
    let mut bodies = Vec::with_capacity(events.div_ceil(batch));
    let mut next = 0usize;
    while next < events {
        let end = (next + batch).min(events);
        let chunk: Vec<WireEvent<'_>> = (next..end)
            .map(|i| {
                let age_ms = rng.below(TIMESTAMP_SPREAD_MS.unsigned_abs());
                WireEvent {
                    transaction_id: format!("bench-{run_id}-{i}"),
                    customer_id: alias,
                    event_type: EVENT_TYPE,
                    timestamp: format_rfc3339_ms(newest_ms - age_ms as i64),
                    properties: WireProperties {
                        model: MODELS[rng.below(MODELS.len() as u64) as usize],
                        user_id: format!("user-{:04}", rng.below(USERS)),
                        tokens: (1 + rng.below(MAX_TOKENS)).to_string(),
                    },
                }
            })
            .collect();
        bodies.push(serde_json::to_vec(&chunk).map_err(|e| e.to_string())?);
        next = end;
    }
    Ok(bodies)
}

/// What every response of a phase must say.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Ingest: no event rejected (accepted events are counted and checked by the caller).
    Accepted,
    /// Replay: every event a duplicate.
    Duplicates,
}

#[derive(Deserialize)]
struct IngestResponse {
    data: IngestSummary,
}

#[derive(Default)]
struct PhaseStats {
    wall: Duration,
    accepted: usize,
    duplicates: usize,
    /// Per-request times, sorted ascending once the phase ends.
    latencies: Vec<Duration>,
}

impl PhaseStats {
    /// The nearest-rank percentile, in thousandths (500 = p50, 990 = p99).
    fn percentile(&self, permille: usize) -> Duration {
        let n = self.latencies.len();
        if n == 0 {
            return Duration::ZERO;
        }
        let rank = (n * permille).div_ceil(1000).clamp(1, n);
        self.latencies[rank - 1]
    }

    fn latency_line(&self) -> String {
        format!(
            "p50 {} p90 {} p99 {} max {}",
            ms(self.percentile(500)),
            ms(self.percentile(900)),
            ms(self.percentile(990)),
            ms(self.percentile(1000))
        )
    }
}

/// POSTs every body in `bodies` to `/v1/ingest` from `concurrency` tasks sharing one queue.
async fn drive(
    api: &Api,
    bodies: &'static [Vec<u8>],
    concurrency: usize,
    expect: Expect,
) -> Result<PhaseStats, String> {
    let url: Arc<str> = format!("{}/v1/ingest", api.base_url).into();
    let auth: Arc<str> = api.auth.as_str().into();
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let tasks: Vec<_> = (0..concurrency.min(bodies.len()))
        .map(|_| {
            let (client, url, auth) = (api.client.clone(), Arc::clone(&url), Arc::clone(&auth));
            let (next, failed) = (Arc::clone(&next), Arc::clone(&failed));
            tokio::spawn(async move {
                let mut stats = PhaseStats::default();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= bodies.len() || failed.load(Ordering::Relaxed) {
                        return Ok(stats);
                    }
                    let sent = Instant::now();
                    let outcome = post_batch(&client, &url, &auth, &bodies[i], expect).await;
                    stats.latencies.push(sent.elapsed());
                    match outcome {
                        Ok(summary) => {
                            stats.accepted += summary.accepted;
                            stats.duplicates += summary.duplicates;
                        }
                        Err(e) => {
                            failed.store(true, Ordering::Relaxed);
                            return Err(format!("body {i}: {e}"));
                        }
                    }
                }
            })
        })
        .collect();
    let mut total = PhaseStats::default();
    let mut first_error = None;
    for task in tasks {
        match task.await {
            Ok(Ok(stats)) => {
                total.accepted += stats.accepted;
                total.duplicates += stats.duplicates;
                total.latencies.extend(stats.latencies);
            }
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(e) => {
                first_error.get_or_insert(format!("a client task died: {e}"));
            }
        }
    }
    total.wall = start.elapsed();
    if let Some(e) = first_error {
        return Err(e);
    }
    total.latencies.sort_unstable();
    Ok(total)
}

/// One `POST /v1/ingest`: a 200 whose summary meets `expect`, or why not.
async fn post_batch(
    client: &reqwest::Client,
    url: &str,
    auth: &str,
    body: &'static [u8],
    expect: Expect,
) -> Result<IngestSummary, String> {
    let resp = client
        .post(url)
        .header("authorization", auth)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| format!("POST /v1/ingest: {e}"))?;
    let status = resp.status();
    let text = resp
        .bytes()
        .await
        .map_err(|e| format!("POST /v1/ingest: reading the response: {e}"))?;
    if status != reqwest::StatusCode::OK {
        return Err(format!(
            "POST /v1/ingest: {status}: {}",
            String::from_utf8_lossy(&text)
        ));
    }
    let summary = serde_json::from_slice::<IngestResponse>(&text)
        .map_err(|e| {
            format!(
                "POST /v1/ingest: unexpected response ({e}): {}",
                String::from_utf8_lossy(&text)
            )
        })?
        .data;
    if let Some(r) = summary.rejected.first() {
        return Err(format!(
            "{} events rejected, first at index {}: {}",
            summary.rejected.len(),
            r.index,
            r.message
        ));
    }
    let events = summary.accepted + summary.duplicates;
    if expect == Expect::Duplicates && summary.accepted != 0 {
        return Err(format!(
            "replay accepted {} of {events} events: they should all be duplicates",
            summary.accepted
        ));
    }
    Ok(summary)
}

/// CPU time used by the server process and by this process over one phase (Linux `/proc`).
struct CpuMeter {
    server_pid: Option<u32>,
    server_ticks: Option<u64>,
    own_ticks: Option<u64>,
}

struct CpuUsed {
    server: Option<Duration>,
    own: Option<Duration>,
}

impl CpuMeter {
    fn start(server_pid: Option<u32>) -> CpuMeter {
        CpuMeter {
            server_pid,
            server_ticks: server_pid.and_then(|pid| cpu_ticks(&format!("/proc/{pid}/stat"))),
            own_ticks: cpu_ticks("/proc/self/stat"),
        }
    }

    fn stop(self) -> CpuUsed {
        let used = |before: Option<u64>, after: Option<u64>| {
            let ticks = after?.checked_sub(before?)?;
            Some(Duration::from_millis(ticks * 1000 / PROC_TICKS_PER_SEC))
        };
        let server_after = self
            .server_pid
            .and_then(|pid| cpu_ticks(&format!("/proc/{pid}/stat")));
        CpuUsed {
            server: used(self.server_ticks, server_after),
            own: used(self.own_ticks, cpu_ticks("/proc/self/stat")),
        }
    }
}

impl CpuUsed {
    fn line(&self, wall: Duration) -> String {
        let part = |who: &str, cpu: Option<Duration>| match cpu {
            Some(cpu) => format!(
                "{who} {:.1} s CPU = {:.2} cores",
                cpu.as_secs_f64(),
                cpu.as_secs_f64() / wall.as_secs_f64().max(1e-9)
            ),
            None => format!("{who} n/a"),
        };
        format!(
            "{}; {} (over {:.1} s wall)",
            part("server", self.server),
            part("bench client", self.own),
            wall.as_secs_f64()
        )
    }
}

/// User + system CPU ticks of a process from its `/proc/<pid>/stat`.
fn cpu_ticks(stat_path: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(stat_path).ok()?;
    // Fields after the parenthesised command name: state is field 3, utime 14 and stime 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Total size of the files directly in `dir` (the database, its WAL and shared memory).
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Events per second.
fn rate(events: usize, time: Duration) -> f64 {
    events as f64 / time.as_secs_f64().max(1e-9)
}

/// `1.23M`, `123k`, `950`.
fn human(per_sec: f64) -> String {
    if per_sec >= 1e6 {
        format!("{:.2}M", per_sec / 1e6)
    } else if per_sec >= 1e4 {
        format!("{:.0}k", per_sec / 1e3)
    } else if per_sec >= 1e3 {
        format!("{:.1}k", per_sec / 1e3)
    } else {
        format!("{per_sec:.0}")
    }
}

/// A duration in milliseconds, e.g. `12.3 ms`.
fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}
