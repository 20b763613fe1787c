//! `bench_alerts`: event → webhook latency of alerts under ingest load (issue 14). Starts `tally
//! serve` (SQLite, or `--database`), a webhook receiver in this process, and `--alerts`
//! customers each with a usage alert at 100 calls and 99 calls already in. While `--load`
//! connections ingest batches of 100 events for other customers, each alerted customer gets its
//! 100th call at a random moment; the latency of a crossing is from the moment its ingest
//! request is sent to the moment its `alerts.usage_threshold_reached` webhook arrives. Prints
//! p50/p99/max, the load's events/s, and checks every crossing arrived exactly once.
//!
//! ```text
//! cargo build -p tally-central --bin tally && cargo build --release -p tally-tests --bin bench_alerts
//! target/release/bench_alerts --tally target/debug/tally
//! ```

// Timing statistics and rates are floats; no money or quantity is computed here.
#![allow(clippy::disallowed_types, clippy::float_arithmetic)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::routing::post;
use clap::Parser;
use serde_json::{json, Value};
use tally_tests::bench::{call_card, month_start, now_ms, ok, tally_binary, SplitMix64};
use tally_tests::{ApiClient, TallyServer};

#[derive(Parser)]
#[command(name = "bench_alerts")]
struct Args {
    /// The tally binary (default: `tally` next to this executable).
    #[arg(long, value_name = "PATH")]
    tally: Option<PathBuf>,
    /// A database URL for the server (default: a fresh SQLite file).
    #[arg(long)]
    database: Option<String>,
    /// Customers with an alert, each crossing once.
    #[arg(long, default_value_t = 40)]
    alerts: usize,
    /// Concurrent connections ingesting background load.
    #[arg(long, default_value_t = 8)]
    load: usize,
    /// Seconds over which the crossings are spread.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = tally_binary(args.tally.as_ref()) {
        eprintln!("bench_alerts: {e}");
        return ExitCode::FAILURE;
    }
    match tokio::runtime::Runtime::new()
        .map_err(|e| e.to_string())
        .and_then(|rt| rt.block_on(run(&args)))
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_alerts: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Alert id → arrival instants of its webhooks.
type Arrivals = Arc<Mutex<HashMap<String, Vec<Instant>>>>;

async fn receiver(arrivals: Arrivals) -> Result<String, String> {
    // The receiver is not part of Tally's API (no OpenAPI path to record).
    #[allow(clippy::disallowed_methods)]
    let app = axum::Router::new().route(
        "/hooks",
        post(move |body: axum::body::Bytes| {
            let arrivals = arrivals.clone();
            async move {
                let at = Instant::now();
                if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                    let alert = v["properties"]["alert_id"].as_str().unwrap_or("?");
                    let mut map = arrivals.lock().unwrap_or_else(|e| e.into_inner());
                    map.entry(alert.to_string()).or_default().push(at);
                }
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(format!("http://127.0.0.1:{port}/hooks"))
}

fn call(customer: &str, tx: String, at: &str) -> Value {
    json!({ "transaction_id": tx, "customer_id": customer, "event_type": "call", "timestamp": at })
}

async fn run(args: &Args) -> Result<(), String> {
    let server = TallyServer::start_on(args.database.as_deref(), &[], &[]);
    let api = ApiClient::new(&server);
    let arrivals: Arrivals = Arc::default();
    let url = receiver(arrivals.clone()).await?;
    api.create("/v1/webhook-endpoints/create", &json!({ "url": url }))
        .await?;
    let start = month_start(now_ms());
    let (metric, card) = call_card(&api, &start).await?;
    let now = tally_core::time::format_rfc3339_ms(now_ms());
    let mut alerted = Vec::new();
    for i in 0..args.alerts {
        let customer = api
            .create("/v1/customers", &json!({ "name": format!("alerted {i}") }))
            .await?;
        api.create(
            "/v1/contracts/create",
            &json!({ "customer_id": customer, "rate_card_id": card, "starting_at": start }),
        )
        .await?;
        let alert = api
            .create(
                "/v1/alerts/create",
                &json!({ "alert_type": "usage_threshold_reached", "name": "100 calls",
                         "threshold": 100, "customer_id": customer, "billable_metric_id": metric }),
            )
            .await?;
        let events: Vec<Value> = (0..99)
            .map(|k| call(&customer, format!("pre-{i}-{k}"), &now))
            .collect();
        ok(api.post("/v1/ingest", &Value::Array(events)).await?)?;
        alerted.push((customer, alert));
    }
    // The load: customers without alerts (whose usage still goes through the evaluator's queue).
    let mut loaders = Vec::new();
    for c in 0..args.load {
        let customer = api
            .create("/v1/customers", &json!({ "name": format!("load {c}") }))
            .await?;
        let (api, now) = (api.clone(), now.clone());
        let until = Instant::now() + Duration::from_secs(args.seconds + 2);
        loaders.push(tokio::spawn(async move {
            let mut sent = 0u64;
            let mut batch = 0u64;
            while Instant::now() < until {
                let events: Vec<Value> = (0..100)
                    .map(|k| call(&customer, format!("load-{c}-{batch}-{k}"), &now))
                    .collect();
                batch += 1;
                if let Ok((200, _)) = api.post("/v1/ingest", &Value::Array(events)).await {
                    sent += 100;
                }
            }
            sent
        }));
    }
    let load_started = Instant::now();
    let mut rng = SplitMix64(20261207);
    let spread_ms = args.seconds * 1000;
    let mut schedule: Vec<(u64, usize)> = (0..alerted.len())
        .map(|i| (rng.below(spread_ms), i))
        .collect();
    schedule.sort_unstable();
    let mut sent_at: Vec<Option<Instant>> = vec![None; alerted.len()];
    for (at_ms, i) in schedule {
        let due = load_started + Duration::from_millis(at_ms);
        tokio::time::sleep_until(due.into()).await;
        let (customer, _) = &alerted[i];
        sent_at[i] = Some(Instant::now());
        let events = vec![call(customer, format!("cross-{i}"), &now)];
        ok(api.post("/v1/ingest", &Value::Array(events)).await?)?;
    }
    let mut events = 0;
    for l in loaders {
        events += l.await.map_err(|e| e.to_string())?;
    }
    let load_secs = load_started.elapsed().as_secs_f64();
    // Wait for the last webhooks.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = arrivals.lock().unwrap_or_else(|e| e.into_inner()).len();
        if got >= alerted.len() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let map = arrivals.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut latencies = Vec::new();
    let mut problems = Vec::new();
    for (i, (_, alert)) in alerted.iter().enumerate() {
        match (map.get(alert).map(Vec::as_slice), sent_at[i]) {
            (Some([one]), Some(sent)) => latencies.push(one.saturating_duration_since(sent)),
            (got, _) => problems.push(format!(
                "alert {alert}: {} webhooks",
                got.map_or(0, <[Instant]>::len)
            )),
        }
    }
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p).round() as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "bench_alerts: {} crossings over {} s under {} load connections ({:.0} events/s of load)",
        alerted.len(),
        args.seconds,
        args.load,
        events as f64 / load_secs
    );
    println!(
        "event → webhook latency: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    if !problems.is_empty() {
        return Err(format!(
            "not exactly one webhook per crossing: {problems:?}"
        ));
    }
    Ok(())
}
