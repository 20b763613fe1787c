//! What the benchmark binaries share: the wall clock in epoch milliseconds, the billing setup
//! they measure against (an LLM-token SUM metric priced per model), and the value parsers of
//! their clap command lines.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tally_core::time::format_rfc3339_ms;

use crate::ApiClient;

/// Models the benchmark events spread over (`model-0` .. `model-9`).
pub const MODELS: usize = 10;

/// A positive count for a clap flag; `_` and `,` separators are allowed (`1_000_000`).
pub fn positive(text: &str) -> Result<usize, String> {
    let digits: String = text.chars().filter(|c| *c != '_' && *c != ',').collect();
    match digits.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("must be a positive integer, got {text:?}")),
    }
}

/// A positive number of seconds for a clap flag.
pub fn seconds(text: &str) -> Result<Duration, String> {
    let n = positive(text)?;
    Ok(Duration::from_secs(
        u64::try_from(n).map_err(|e| e.to_string())?,
    ))
}

pub fn now_ms() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

/// The first instant of the UTC month containing `ms`, as RFC 3339.
pub fn month_start(ms: i64) -> String {
    format!("{}-01T00:00:00Z", &format_rfc3339_ms(ms)[..7])
}

/// The tally binary a benchmark runs: `arg`, else `tally` next to this executable; also set as
/// `$TALLY_BIN` for the harness (call before any thread is started).
pub fn tally_binary(arg: Option<&PathBuf>) -> Result<PathBuf, String> {
    let bin = match arg {
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
    // The servers run in their own directories: a relative path must not depend on that.
    let bin = std::fs::canonicalize(&bin)
        .map_err(|e| format!("cannot resolve {}: {e}", bin.display()))?;
    std::env::set_var("TALLY_BIN", &bin);
    Ok(bin)
}

/// The body of a 200; anything else fails the run.
pub fn ok((status, body): (u16, Value)) -> Result<Value, String> {
    match status {
        200 => Ok(body),
        _ => Err(format!("{status}: {body}")),
    }
}

/// A small deterministic generator (SplitMix64), so every run makes the same data.
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform enough in `0..n` for test and benchmark data (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// A SUM metric on `tokens` of `llm_request` events grouped by `model` and `user_id`, a product
/// priced per model (`prices[m]`, a JSON number, for `model-{m}`), a rate card, a customer with
/// the ingest alias `alias`, and a contract from `start`. Returns the customer's id.
pub async fn token_billing(
    api: &ApiClient,
    alias: &str,
    start: &str,
    prices: &[Value],
) -> Result<String, String> {
    let card = token_card(api, start, prices).await?;
    let contract = json!({ "rate_card_id": card, "starting_at": start });
    customer_with_contract(api, alias, contract).await
}

/// A customer with the ingest alias `alias` and a contract of the fields `contract` (the
/// customer's id added). Returns the customer's id.
pub async fn customer_with_contract(
    api: &ApiClient,
    alias: &str,
    mut contract: Value,
) -> Result<String, String> {
    let customer = api
        .create(
            "/v1/customers",
            &json!({ "name": alias, "ingest_aliases": [alias] }),
        )
        .await?;
    contract["customer_id"] = json!(customer);
    api.create("/v1/contracts/create", &contract).await?;
    Ok(customer)
}

/// `n` GETs of `path` over `connections` concurrent tasks, each answer a 200 passing `check`.
/// Returns every read's latency.
pub async fn timed_reads<F>(
    api: &ApiClient,
    path: &str,
    n: usize,
    connections: usize,
    check: F,
) -> Result<Vec<Duration>, String>
where
    F: Fn(&Value) -> Result<(), String> + Clone + Send + 'static,
{
    let left = Arc::new(AtomicUsize::new(n));
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (api, left, path, check) = (api.clone(), left.clone(), path.to_string(), check.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
            {
                let t = Instant::now();
                let res = ok(api.get(&path).await?)?;
                latencies.push(t.elapsed());
                check(&res)?;
            }
            Ok::<_, String>(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.map_err(|e| e.to_string())??);
    }
    Ok(latencies)
}

/// The metric, product and rate card of [`token_billing`]; returns the card's id.
pub async fn token_card(api: &ApiClient, start: &str, prices: &[Value]) -> Result<String, String> {
    let metric = api
        .create(
            "/v1/billable-metrics/create",
            &json!({
                "name": "tokens", "aggregation_type": "SUM", "aggregation_key": "tokens",
                "event_type_filter": { "in_values": ["llm_request"] },
                "group_keys": [["model"], ["user_id"]],
            }),
        )
        .await?;
    let product = api
        .create(
            "/v1/contract-pricing/products/create",
            &json!({
                "name": "tokens", "type": "USAGE", "billable_metric_id": metric,
                "pricing_group_key": ["model"],
            }),
        )
        .await?;
    let card = api
        .create(
            "/v1/contract-pricing/rate-cards/create",
            &json!({ "name": "card" }),
        )
        .await?;
    let rates: Vec<Value> = prices
        .iter()
        .enumerate()
        .map(|(m, price)| {
            json!({
                "product_id": product, "starting_at": start, "entitled": true,
                "rate_type": "FLAT", "price": price,
                "pricing_group_values": { "model": format!("model-{m}") },
            })
        })
        .collect();
    api.data(
        "/v1/contract-pricing/rate-cards/addRates",
        &json!({ "rate_card_id": card, "rates": rates }),
    )
    .await?;
    Ok(card)
}

/// A COUNT metric on `call` events, a product priced 1 per event (FLAT) from `start` and a rate
/// card holding it. Returns the metric's and the card's ids.
pub async fn call_card(api: &ApiClient, start: &str) -> Result<(String, String), String> {
    let metric = api
        .create(
            "/v1/billable-metrics/create",
            &json!({ "name": "calls", "event_type_filter": { "in_values": ["call"] },
                     "aggregation_type": "COUNT" }),
        )
        .await?;
    let product = api
        .create(
            "/v1/contract-pricing/products/create",
            &json!({ "name": "calls", "type": "USAGE", "billable_metric_id": metric }),
        )
        .await?;
    let card = api
        .create(
            "/v1/contract-pricing/rate-cards/create",
            &json!({ "name": "card" }),
        )
        .await?;
    api.data(
        "/v1/contract-pricing/rate-cards/addRate",
        &json!({ "rate_card_id": card, "product_id": product, "starting_at": start,
                 "entitled": true, "rate_type": "FLAT", "price": 1 }),
    )
    .await?;
    Ok((metric, card))
}

/// [`call_card`], a customer with the ingest alias `acme` and a monthly contract from `start`
/// on it. Returns the customer's id.
pub async fn call_billing(api: &ApiClient, start: &str) -> Result<String, String> {
    let (_, card) = call_card(api, start).await?;
    let customer = api
        .create(
            "/v1/customers",
            &json!({ "name": "Acme", "ingest_aliases": ["acme"] }),
        )
        .await?;
    api.create(
        "/v1/contracts/create",
        &json!({ "customer_id": customer, "rate_card_id": card, "starting_at": start }),
    )
    .await?;
    Ok(customer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_positive_and_may_have_separators() {
        assert_eq!(positive("1_000,000"), Ok(1_000_000));
        assert!(positive("0").is_err());
        assert!(positive("-1").is_err());
        assert!(positive("ten").is_err());
        assert_eq!(seconds("90"), Ok(Duration::from_secs(90)));
    }
}
