//! `bench_drafts`: draft-invoice read latency against the size of the period's usage (issue 17),
//! on SQLite and on PostgreSQL, in one run.
//!
//! For each backend it starts `tally serve`, creates a SUM metric on `tokens` grouped by `model`
//! and `user_id` and a product priced per `model` (10 models), and then, per shape, a customer
//! with a contract whose one period is 30 whole days in the past: the previous calendar month
//! when all of it is inside the ingest window (the first days of a month), else the 30 days
//! before today's UTC midnight (a day-aligned period; the label says which). It ingests the
//! shape's events over `/v1/ingest` (bodies of 100, 16 connections), then reads that draft
//! (`GET /v1/customers/{id}/invoices/{invoice_id}`) over 2 connections (`--period calendar|days`
//! forces one kind of period) and reports p50/p99 beside
//! the number of hourly cells and events. Every read must give the same total.
//!
//! Shapes (`--long` for the issue's full sizes; the default is short):
//! - 100 groups (10 models × 10 users), every hour filled, one event per cell;
//! - the same with many events per cell (3, `--long`: 14, so 1,008,000 events), which must read
//!   as fast;
//! - 1,000 groups (`--long`: 10,000), one filled hour per group per day.
//!
//! ```text
//! cargo build --release -p tally-central --bin tally -p tally-tests --bin bench_drafts
//! target/release/bench_drafts --long
//! ```

// Floats are only used for reporting timings: no money or quantity goes near them.
#![allow(clippy::disallowed_types, clippy::float_arithmetic)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{json, Value};
use tally_core::time::{format_rfc3339_ms, DAY_MS, HOUR_MS};
use tally_tests::bench::{
    customer_with_contract, month_start, now_ms, ok, positive, tally_binary, timed_reads,
    token_card, SplitMix64, MODELS,
};
use tally_tests::{ApiClient, PgDatabase, TallyServer};

const BATCH: usize = 100;
const INGEST_CONNECTIONS: usize = 16;
const READ_CONNECTIONS: usize = 2;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// Draft-read latency for large periods, on SQLite and PostgreSQL.
#[derive(Parser)]
#[command(name = "bench_drafts")]
struct Args {
    /// The tally binary (default: `tally` next to this executable).
    #[arg(long, value_name = "PATH")]
    tally: Option<PathBuf>,
    /// The issue's full sizes: 10,000 groups, 10 events per cell, more reads.
    #[arg(long)]
    long: bool,
    /// Draft reads per shape (default 400, `--long` 1,000; a tenth for the widest shape).
    #[arg(long, value_name = "R", value_parser = positive)]
    reads: Option<usize>,
    /// The period: `calendar` (the previous calendar month, only in a month's first days),
    /// `days` (the 30 days before today's UTC midnight), or `auto` (calendar when it can be).
    #[arg(long, default_value = "auto", value_parser = ["auto", "calendar", "days"])]
    period: String,
    /// Backends to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "sqlite,postgres")]
    backends: Vec<String>,
}

/// One shape of usage.
struct Shape {
    name: String,
    users: usize,
    /// Filled hours per group per day (24: every hour).
    hours_per_day: usize,
    events_per_cell: usize,
    reads: usize,
}

fn shapes(args: &Args) -> Vec<Shape> {
    let reads = args.reads.unwrap_or(if args.long { 1_000 } else { 400 });
    let (many, wide_users) = if args.long { (14, 1_000) } else { (3, 100) };
    vec![
        Shape {
            name: "100 groups, every hour, 1 event/cell".into(),
            users: 10,
            hours_per_day: 24,
            events_per_cell: 1,
            reads,
        },
        Shape {
            name: format!("100 groups, every hour, {many} events/cell"),
            users: 10,
            hours_per_day: 24,
            events_per_cell: many,
            reads,
        },
        Shape {
            name: format!("{} groups, 1 hour/day, 1 event/cell", wide_users * MODELS),
            users: wide_users,
            hours_per_day: 1,
            events_per_cell: 1,
            reads: (reads / 10).max(20),
        },
    ]
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

/// The period every shape reads: `(start, end, label)`.
fn period(now: i64, choice: &str) -> Result<(i64, i64, &'static str), String> {
    let this_month = tally_core::time::parse_rfc3339_ms(&month_start(now)).unwrap_or(now);
    let previous = tally_core::time::parse_rfc3339_ms(&month_start(this_month - 1)).unwrap_or(0);
    let calendar = now - previous <= 33 * DAY_MS;
    match (choice, calendar) {
        ("calendar", false) => {
            Err("the previous calendar month is outside the ingest window".into())
        }
        ("calendar" | "auto", true) => Ok((previous, this_month, "previous calendar month")),
        _ => {
            let midnight = now.div_euclid(DAY_MS) * DAY_MS;
            Ok((
                midnight - 30 * DAY_MS,
                midnight,
                "30 days to today's midnight",
            ))
        }
    }
}

struct Row {
    backend: String,
    shape: String,
    cells: usize,
    events: usize,
    p50: Duration,
    p99: Duration,
    total: String,
}

fn run(args: &Args) -> Result<(), String> {
    let bin = tally_binary(args.tally.as_ref())?;
    let (start, end, label) = period(now_ms(), &args.period)?;
    println!(
        "bench_drafts: period {} .. {} ({label}, {} days), {READ_CONNECTIONS} read connections, binary {}",
        format_rfc3339_ms(start),
        format_rfc3339_ms(end),
        (end - start) / DAY_MS,
        bin.display()
    );
    let mut rows = Vec::new();
    for backend in &args.backends {
        println!("\n== {backend}");
        let db = match backend.as_str() {
            "sqlite" => None,
            "postgres" => Some(PgDatabase::create()),
            other => return Err(format!("unknown backend {other:?}")),
        };
        let server = TallyServer::start_on(
            db.as_ref().map(PgDatabase::url),
            // The period has ended: a grace past the run keeps it a DRAFT (the job would
            // finalize it, and a finalized invoice is read from its frozen body).
            &[
                "--rate-limit-rps",
                "0",
                "--invoice-grace-hours",
                "2000",
                "--metrics-listen",
                "127.0.0.1:0",
            ],
            &[],
        );
        let metrics = server.metrics_url();
        let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
        let measured = rt.block_on(measure(backend, &server, &metrics, args, (start, end)));
        let measured = measured.map_err(|e| format!("{backend}: {e}\n{}", server.logs()))?;
        rows.extend(measured);
        drop(server);
    }
    println!("\n== summary");
    println!(
        "{:<10} {:<42} {:>10} {:>10} {:>12} {:>12}  total",
        "backend", "shape", "cells", "events", "read p50", "read p99"
    );
    for r in &rows {
        println!(
            "{:<10} {:<42} {:>10} {:>10} {:>12} {:>12}  {}",
            r.backend,
            r.shape,
            r.cells,
            r.events,
            ms(r.p50),
            ms(r.p99),
            r.total
        );
    }
    Ok(())
}

/// Waits until the compactor's backlog (`tally_rollup_days_pending` on `GET /metrics`) has been
/// 0 in scrapes a second apart, 3 times running (a run that began before the ingest ended may
/// report 0 once); at most 10 minutes.
async fn rolled_up(api: &ApiClient, metrics: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut zeros = 0;
    while zeros < 3 {
        if Instant::now() > deadline {
            return Err("the rollup backlog did not clear in 10 minutes".into());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let text = api
            .http()
            .get(metrics)
            .send()
            .await
            .map_err(|e| e.to_string())?
            .text()
            .await
            .map_err(|e| e.to_string())?;
        let pending = text
            .lines()
            .find_map(|l| l.strip_prefix("tally_rollup_days_pending "))
            .map(str::trim);
        zeros = match pending {
            Some("0") => zeros + 1,
            _ => 0,
        };
    }
    Ok(())
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// The shape's events in bodies of `BATCH`, and the number of cells they fill.
fn bodies(shape: &Shape, alias: &str, (start, end): (i64, i64)) -> (Vec<String>, usize) {
    let mut rng = SplitMix64(0x5eed_7a11);
    let mut events = Vec::new();
    let mut cells = 0;
    let days = (end - start) / DAY_MS;
    for day in 0..days {
        for m in 0..MODELS {
            for u in 0..shape.users {
                for h in 0..shape.hours_per_day {
                    let hour = start + day * DAY_MS + i64::try_from(h).unwrap_or(0) * HOUR_MS;
                    cells += 1;
                    for _ in 0..shape.events_per_cell {
                        let r = rng.next_u64();
                        let at = hour + i64::try_from(r % 3_600_000).unwrap_or(0);
                        events.push(json!({
                            "transaction_id": format!("{alias}-{}", events.len()),
                            "customer_id": alias, "event_type": "llm_request",
                            "timestamp": format_rfc3339_ms(at),
                            "properties": {
                                "model": format!("model-{m}"), "user_id": format!("user-{u}"),
                                "tokens": ((r >> 40) % 8_000 + 1).to_string(),
                            },
                        }));
                    }
                }
            }
        }
    }
    let bodies = events
        .chunks(BATCH)
        .map(|c| Value::Array(c.to_vec()).to_string())
        .collect();
    (bodies, cells)
}

async fn ingest(api: &ApiClient, bodies: Vec<String>) -> Result<usize, String> {
    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..INGEST_CONNECTIONS {
        let (api, bodies, next) = (api.clone(), bodies.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut accepted = 0usize;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i) else {
                    return Ok::<_, String>(accepted);
                };
                let res = ok(api.post_text("/v1/ingest", body.clone()).await?)?;
                let n = res["data"]["accepted"].as_u64().unwrap_or(0);
                accepted += usize::try_from(n).unwrap_or(0);
            }
        }));
    }
    let mut accepted = 0;
    for t in tasks {
        accepted += t.await.map_err(|e| e.to_string())??;
    }
    Ok(accepted)
}

async fn measure(
    backend: &str,
    server: &TallyServer,
    metrics: &str,
    args: &Args,
    (start, end): (i64, i64),
) -> Result<Vec<Row>, String> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(INGEST_CONNECTIONS)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| e.to_string())?;
    let api = ApiClient::with_http(http, server);
    let prices: Vec<Value> = (0..MODELS)
        .map(|m| format!("0.00{}", m + 1).parse().unwrap_or(json!(1)))
        .collect();
    let card = token_card(&api, &format_rfc3339_ms(start), &prices).await?;
    let mut rows = Vec::new();
    for (i, shape) in shapes(args).iter().enumerate() {
        let alias = format!("bench-{i}");
        let contract = json!({
            "rate_card_id": card, "starting_at": format_rfc3339_ms(start),
            "ending_before": format_rfc3339_ms(end),
            "usage_statement_schedule": { "frequency": "MONTHLY", "day": "CONTRACT_START" },
        });
        let customer = customer_with_contract(&api, &alias, contract).await?;
        let (bodies, cells) = bodies(shape, &alias, (start, end));
        let events = cells * shape.events_per_cell;
        let t = Instant::now();
        let accepted = ingest(&api, bodies).await?;
        if accepted != events {
            return Err(format!("accepted {accepted} of {events} events"));
        }
        println!(
            "{}: {events} events ({cells} cells) ingested in {:.1} s",
            shape.name,
            t.elapsed().as_secs_f64()
        );
        let list = ok(api
            .get(&format!(
                "/v1/customers/{customer}/invoices?status=DRAFT&limit=10"
            ))
            .await?)?;
        let id = list["data"][0]["id"]
            .as_str()
            .ok_or_else(|| format!("no draft: {list}"))?
            .to_string();
        let path = format!("/v1/customers/{customer}/invoices/{id}");
        // Read at once, the just-ingested days are dirty (read hour by hour); then the
        // background compactor rolls them up and reads take a few rows per group.
        let t = Instant::now();
        let first = ok(api.get(&path).await?)?;
        let total = first["data"]["total"].to_string();
        println!(
            "{}: first read {} (days not rolled up yet)",
            shape.name,
            ms(t.elapsed())
        );
        let t = Instant::now();
        rolled_up(&api, metrics).await?;
        println!(
            "{}: rollups caught up {:.1} s after the ingest",
            shape.name,
            t.elapsed().as_secs_f64()
        );
        let again = ok(api.get(&path).await?)?;
        if again["data"]["total"] != first["data"]["total"] {
            return Err(format!(
                "the total changed once rolled up: {again} vs {first}"
            ));
        }
        let (p50, p99) = reads(&api, &path, &total, shape.reads).await?;
        println!(
            "{}: {} reads, p50 {} p99 {}, total {total}",
            shape.name,
            shape.reads,
            ms(p50),
            ms(p99)
        );
        rows.push(Row {
            backend: backend.to_string(),
            shape: shape.name.clone(),
            cells,
            events,
            p50,
            p99,
            total,
        });
    }
    Ok(rows)
}

/// `n` reads of `path` over [`READ_CONNECTIONS`]; each must show `want`. Returns p50 and p99.
async fn reads(
    api: &ApiClient,
    path: &str,
    want: &str,
    n: usize,
) -> Result<(Duration, Duration), String> {
    let want = want.to_string();
    let mut latencies = timed_reads(api, path, n, READ_CONNECTIONS, move |res| {
        if res["data"]["status"] != "DRAFT" {
            return Err(format!("not a draft: {}", res["data"]["status"]));
        }
        let total = res["data"]["total"].to_string();
        match total == want {
            true => Ok(()),
            false => Err(format!("draft total changed: {total} != {want}")),
        }
    })
    .await?;
    latencies.sort();
    let at = |p: f64| {
        let i = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies.get(i).copied().unwrap_or_default()
    };
    Ok((at(0.5), at(0.99)))
}
