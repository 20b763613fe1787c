//! `bench_preview`: the browser cost preview's speed and size (issue 15). Starts `tally serve`,
//! creates a rate card of 20 products (20 SUM metrics grouped by `user`; FLAT and 3-tier
//! TIERED rates alternating, half the products shown per user, a quarter priced per user) and a
//! customer on it, fetches its pricing snapshot (`GET /v1/customers/{id}/pricingSnapshot`) and
//! a `previewEvents` body of 100 events in 50 usage groups (metric × user), checks that the
//! WASM module answers exactly what `previewEvents` does, then runs `tests/preview/bench.mjs`
//! (the module in Node) for evaluations per second and the module's gzipped size.
//!
//! ```text
//! cargo build -p tally-central --bin tally && cargo build --release -p tally-tests --bin bench_preview
//! target/release/bench_preview --tally target/debug/tally
//! ```

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use clap::Parser;
use serde_json::{json, Value};
use tally_tests::bench::{month_start, now_ms, ok, tally_binary};
use tally_tests::{workspace_root, ApiClient, TallyServer};

const RATES: usize = 20;
const GROUPS: usize = 50;

#[derive(Parser)]
#[command(name = "bench_preview")]
struct Args {
    /// The tally binary (default: `tally` next to this executable).
    #[arg(long, value_name = "PATH")]
    tally: Option<PathBuf>,
    /// How long to measure, in seconds.
    #[arg(long, default_value_t = 3)]
    seconds: u32,
    /// Also write the snapshot and request here (`snapshot.json`, `request.json`), to profile
    /// the engine with them.
    #[arg(long, value_name = "DIR")]
    save: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_preview: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    tally_binary(args.tally.as_ref())?;
    let server = TallyServer::start();
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let (snapshot, request, native) = rt.block_on(setup(&server))?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let snapshot_file = dir.path().join("snapshot.json");
    let request_file = dir.path().join("request.json");
    std::fs::write(&snapshot_file, &snapshot).map_err(|e| e.to_string())?;
    std::fs::write(&request_file, &request).map_err(|e| e.to_string())?;
    if let Some(save) = &args.save {
        std::fs::create_dir_all(save).map_err(|e| e.to_string())?;
        std::fs::copy(&snapshot_file, save.join("snapshot.json")).map_err(|e| e.to_string())?;
        std::fs::copy(&request_file, save.join("request.json")).map_err(|e| e.to_string())?;
    }
    let root = workspace_root();
    // Once: the module's answer must be the server's, byte for byte.
    let check = Command::new("node")
        .arg("--input-type=module")
        .arg("-e")
        .arg(format!(
            "import {{ readFileSync }} from 'node:fs';\
             import {{ initSync, preview }} from '{}';\
             initSync({{ module: readFileSync('{}') }});\
             process.stdout.write(preview(readFileSync('{}', 'utf8'), readFileSync('{}', 'utf8'), new Date().toISOString()));",
            root.join("central/assets/preview/tally_core.js").display(),
            root.join("central/assets/preview/tally_core_bg.wasm").display(),
            snapshot_file.display(),
            request_file.display(),
        ))
        .output()
        .map_err(|e| format!("cannot run node: {e}"))?;
    let wasm_answer = String::from_utf8_lossy(&check.stdout);
    if wasm_answer != native {
        return Err(format!(
            "the WASM preview differs from previewEvents\nwasm: {wasm_answer}\nnative: {native}\n{}",
            String::from_utf8_lossy(&check.stderr)
        ));
    }
    let out = Command::new("node")
        .arg(root.join("tests/preview/bench.mjs"))
        .arg(&snapshot_file)
        .arg(&request_file)
        .arg(args.seconds.to_string())
        .output()
        .map_err(|e| format!("cannot run node: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let report: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    println!("{report}");
    println!(
        "{RATES}-rate card, {GROUPS} usage groups ({} line items): {} evaluations/s (mean {} us) \
         with the snapshot parsed once, {} evaluations/s (mean {} us) parsing it each time; \
         module {} bytes, {} bytes gzipped (glue {} bytes gzipped); the WASM answer equals previewEvents'",
        report["line_items"],
        report["evaluations_per_second"],
        report["mean_us"],
        report["one_shot_evaluations_per_second"],
        report["one_shot_mean_us"],
        report["wasm_bytes"],
        report["wasm_gzip_bytes"],
        report["glue_gzip_bytes"],
    );
    Ok(())
}

/// The card, the customer, its snapshot text, the request text and `previewEvents`' answer.
async fn setup(server: &TallyServer) -> Result<(String, String, String), String> {
    let api = ApiClient::new(server);
    let start = month_start(now_ms());
    let card = api
        .create(
            "/v1/contract-pricing/rate-cards/create",
            &json!({ "name": "bench" }),
        )
        .await?;
    for i in 0..RATES {
        let metric = api
            .create(
                "/v1/billable-metrics/create",
                &json!({
                    "name": format!("m{i}"), "aggregation_type": "SUM", "aggregation_key": "v",
                    "event_type_filter": { "in_values": [format!("e{i}")] },
                    "group_keys": [["user"]],
                }),
            )
            .await?;
        let mut product =
            json!({ "name": format!("P{i}"), "type": "USAGE", "billable_metric_id": metric });
        match i % 4 {
            0 | 1 => product["presentation_group_key"] = json!(["user"]),
            2 => product["pricing_group_key"] = json!(["user"]),
            _ => {}
        }
        let product = api
            .create("/v1/contract-pricing/products/create", &product)
            .await?;
        let mut rate = json!({
            "rate_card_id": card, "product_id": product, "starting_at": start, "entitled": true,
        });
        if i % 2 == 0 {
            rate["rate_type"] = json!("FLAT");
            rate["price"] = json!(format!("0.{:03}5", i + 1)
                .parse::<serde_json::Number>()
                .map_err(|e| e.to_string())?);
        } else {
            rate["rate_type"] = json!("TIERED");
            rate["tiers"] =
                json!([{ "price": 3, "size": 10 }, { "price": 2, "size": 90 }, { "price": 1 }]);
        }
        if i % 4 == 2 {
            // Priced per user: a rate for each user whose events this metric takes.
            for g in (i..GROUPS).step_by(RATES) {
                let mut rate = rate.clone();
                rate["pricing_group_values"] = json!({ "user": format!("u{g}") });
                ok(api
                    .post("/v1/contract-pricing/rate-cards/addRate", &rate)
                    .await?)?;
            }
        } else {
            ok(api
                .post("/v1/contract-pricing/rate-cards/addRate", &rate)
                .await?)?;
        }
    }
    let customer = api
        .create(
            "/v1/customers",
            &json!({ "name": "bench", "ingest_aliases": ["bench"] }),
        )
        .await?;
    api.create(
        "/v1/contracts/create",
        &json!({ "customer_id": customer, "rate_card_id": card, "starting_at": start }),
    )
    .await?;
    let snapshot = ok(api
        .get(&format!("/v1/customers/{customer}/pricingSnapshot"))
        .await?)?;
    let snapshot = serde_json::to_string(&snapshot["data"]).map_err(|e| e.to_string())?;
    let events: Vec<Value> = (0..2 * GROUPS)
        .map(|k| {
            let g = k % GROUPS;
            json!({
                "event_type": format!("e{}", g % RATES), "transaction_id": format!("t{k}"),
                "properties": { "v": format!("{}.25", 7 * k + 3), "user": format!("u{g}") },
            })
        })
        .collect();
    let request = json!({ "events": events, "mode": "replace" });
    let native = ok(api
        .post(&format!("/v1/customers/{customer}/previewEvents"), &request)
        .await?)?;
    let native = serde_json::to_string(&native).map_err(|e| e.to_string())?;
    Ok((snapshot, request.to_string(), native))
}
