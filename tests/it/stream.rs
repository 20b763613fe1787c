//! A billing setup and a seeded event stream shared by the crash and fault tests, plus what they
//! check with: every customer's invoices as the API renders them (ids normalised, so two servers
//! compare byte for byte) and the quantities the stream must produce, computed independently.
//!
//! The stream's invariants, which the checks rely on:
//! - every event has a distinct transaction id, except deliberate duplicates: copies inside a
//!   request with *different* values (the first occurrence wins, whatever the timing), and copies
//!   of another request's event that are *identical* (so which copy lands first does not matter);
//! - every SUM value is distinct (`<n>.<n % 100>`), so counting any event twice changes a total;
//! - requests marked `abandonable` hold no copy of another request's event and no other request
//!   copies theirs, so whether such a request landed is visible on its own (all or nothing).

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use tally_core::time::{format_rfc3339_ms, HOUR_MS};
use tally_tests::ApiClient;

pub const CUSTOMERS: [&str; 4] = ["acme", "globex", "initech", "umbrella"];
/// Prices per unit: API calls (COUNT) and uploaded MB (SUM).
const CALL_PRICE: u32 = 3;
const MB_PRICE: u32 = 2;
/// Arguments both servers of a comparison get: nothing is finalized while a test runs (the
/// previous month's period may have ended hours ago), so every invoice is a DRAFT rated on read.
pub const SERVE_ARGS: [&str; 2] = ["--invoice-grace-hours", "10000"];

/// Whole hours in the past where events fall, and the contracts' start.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pub lo: i64,
    pub hi: i64,
    pub contract_start: i64,
}

impl Layout {
    pub fn now() -> Layout {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_millis();
        let now = i64::try_from(now).expect("ms fit i64");
        let hi = (now - HOUR_MS) / HOUR_MS * HOUR_MS;
        let lo = hi - 24 * HOUR_MS;
        Layout {
            lo,
            hi,
            contract_start: month_start(lo),
        }
    }
}

/// The first instant of the UTC month holding `ms`.
fn month_start(ms: i64) -> i64 {
    let days = ms.div_euclid(24 * HOUR_MS);
    // Civil-from-days (Howard Hinnant), then back to the 1st of that month.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day_of_month = doy - (153 * mp + 2) / 5; // 0-based
    (days - day_of_month) * 24 * HOUR_MS
}

/// What [`setup`] created on one server.
pub struct Billing {
    /// Customer ids, in [`CUSTOMERS`] order.
    pub customers: Vec<String>,
    pub call_product: String,
    pub mb_product: String,
}

async fn id(api: &ApiClient, path: &str, body: Value) -> String {
    api.create(path, &body)
        .await
        .unwrap_or_else(|e| panic!("setup: {e}"))
}

/// Two metrics (COUNT of `call`, SUM of `upload.mb`), their products on one rate card, and the
/// customers on contracts from `layout.contract_start`. Same calls in the same order on every
/// server, so normalised ids line up.
pub async fn setup(api: &ApiClient, layout: Layout) -> Billing {
    let start = format_rfc3339_ms(layout.contract_start);
    let calls = id(
        api,
        "/v1/billable-metrics/create",
        json!({ "name": "API calls", "aggregation_type": "COUNT",
                "event_type_filter": { "in_values": ["call"] } }),
    )
    .await;
    let mb = id(
        api,
        "/v1/billable-metrics/create",
        json!({ "name": "Uploaded MB", "aggregation_type": "SUM", "aggregation_key": "mb",
                "event_type_filter": { "in_values": ["upload"] } }),
    )
    .await;
    let card = id(
        api,
        "/v1/contract-pricing/rate-cards/create",
        json!({ "name": "crash card" }),
    )
    .await;
    let mut products = Vec::new();
    for (name, metric, price) in [
        ("API calls", &calls, CALL_PRICE),
        ("Uploaded MB", &mb, MB_PRICE),
    ] {
        let product = id(
            api,
            "/v1/contract-pricing/products/create",
            json!({ "name": name, "type": "USAGE", "billable_metric_id": metric }),
        )
        .await;
        api.data(
            "/v1/contract-pricing/rate-cards/addRate",
            &json!({ "rate_card_id": card, "product_id": product, "starting_at": start,
                     "entitled": true, "rate_type": "FLAT", "price": price }),
        )
        .await
        .unwrap_or_else(|e| panic!("setup: {e}"));
        products.push(product);
    }
    let mut customers = Vec::new();
    for name in CUSTOMERS {
        let customer = id(
            api,
            "/v1/customers",
            json!({ "name": name, "ingest_aliases": [name] }),
        )
        .await;
        id(
            api,
            "/v1/contracts/create",
            json!({ "customer_id": customer, "rate_card_id": card, "starting_at": start }),
        )
        .await;
        customers.push(customer);
    }
    let [call_product, mb_product] = <[String; 2]>::try_from(products).expect("two products");
    Billing {
        customers,
        call_product,
        mb_product,
    }
}

/// One ingest request of the stream.
pub struct Request {
    /// The exact body sent on every attempt.
    pub body: String,
    /// Events in the body (copies included).
    pub events: u64,
    /// Events in the body whose transaction id first appears in it (the rest are copies).
    pub own: u64,
    /// May be given up after a failed attempt (see the module invariants).
    pub abandonable: bool,
    /// What this request's own events bill (its copies of other requests' events excluded).
    pub totals: Totals,
}

/// Per customer: API calls and MB billed, each event once.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Totals(pub BTreeMap<String, (u64, Decimal)>);

impl Totals {
    pub fn add(&mut self, other: &Totals) {
        for (customer, (calls, mb)) in &other.0 {
            let total = self.0.entry(customer.clone()).or_default();
            total.0 += calls;
            total.1 += mb;
        }
    }
}

pub struct Stream {
    pub requests: Vec<Request>,
    pub expected: Totals,
    pub distinct_events: u64,
}

/// `requests` requests of `per_request` fresh events each (plus copies), drawn from `seed`.
/// Without `copies_across`, no request copies another's events, so any subset of requests bills
/// exactly the sum of their [`Request::totals`].
pub fn stream(
    seed: u64,
    layout: Layout,
    requests: usize,
    per_request: usize,
    copies_across: bool,
) -> Stream {
    let mut rng = StdRng::seed_from_u64(seed);
    let abandonable: Vec<bool> = (0..requests).map(|_| rng.gen_bool(0.15)).collect();
    let mut events: Vec<Vec<Value>> = Vec::with_capacity(requests);
    let mut totals: Vec<Totals> = Vec::with_capacity(requests);
    let mut expected = Totals::default();
    let mut n = 0u64;
    for _ in 0..requests {
        let mut own = Vec::with_capacity(per_request);
        let mut mine = Totals::default();
        for _ in 0..per_request {
            n += 1;
            let customer = CUSTOMERS[rng.gen_range(0..CUSTOMERS.len())];
            let ts = rng.gen_range(layout.lo..layout.hi);
            let total = mine.0.entry(customer.to_string()).or_default();
            let mut event = json!({
                "transaction_id": format!("ev-{seed}-{n}"), "customer_id": customer,
                "timestamp": format_rfc3339_ms(ts),
            });
            if rng.gen_bool(0.5) {
                event["event_type"] = json!("call");
                total.0 += 1;
            } else {
                // Distinct for every event, as text or as a JSON number.
                let mb = format!("{n}.{:02}", n % 100);
                total.1 += mb.parse::<Decimal>().expect("decimal");
                event["event_type"] = json!("upload");
                event["properties"] = match rng.gen_bool(0.5) {
                    true => json!({ "mb": mb }),
                    false => json!({ "mb": serde_json::Number::from_string_unchecked(mb) }),
                };
            }
            own.push(event);
        }
        expected.add(&mine);
        events.push(own);
        totals.push(mine);
    }
    let eligible: Vec<usize> = (0..requests).filter(|&r| !abandonable[r]).collect();
    let mut out = Vec::with_capacity(requests);
    for (r, own) in events.iter().enumerate() {
        let mut body = own.clone();
        // A copy with other values, after the original: the original wins.
        for _ in 0..2 {
            let mut copy = own[rng.gen_range(0..own.len())].clone();
            copy["properties"] = json!({ "mb": "900000.5" });
            copy["event_type"] = json!("upload");
            body.push(copy);
        }
        // Identical copies of other requests' events (possibly sent later or concurrently).
        if copies_across && !abandonable[r] && eligible.len() > 1 {
            for _ in 0..2 {
                let other = eligible[rng.gen_range(0..eligible.len())];
                if other != r {
                    body.push(events[other][rng.gen_range(0..per_request)].clone());
                }
            }
        }
        out.push(Request {
            events: body.len() as u64,
            own: own.len() as u64,
            abandonable: abandonable[r],
            totals: totals[r].clone(),
            body: Value::Array(body).to_string(),
        });
    }
    Stream {
        requests: out,
        expected,
        distinct_events: n,
    }
}

/// Every customer's invoices (`GET /v1/customers/{id}/invoices`): the raw response texts, one
/// `name: text` line per customer in [`CUSTOMERS`] order.
pub async fn invoices(api: &ApiClient, billing: &Billing) -> Vec<String> {
    let mut texts = Vec::new();
    for (name, id) in CUSTOMERS.iter().zip(&billing.customers) {
        let res = api
            .http()
            .get(api.url(&format!("/v1/customers/{id}/invoices?limit=100")))
            .bearer_auth(api.token())
            .send()
            .await
            .unwrap_or_else(|e| panic!("invoices of {name}: {e}"));
        let status = res.status();
        let text = res.text().await.expect("invoice body");
        assert_eq!(status, 200, "invoices of {name}: {text}");
        texts.push(format!("{name}: {text}"));
    }
    texts
}

/// Per customer, the API calls and MB on its invoices (all line items of all invoices).
pub fn billed(invoices: &[String], billing: &Billing) -> Totals {
    let mut out = Totals::default();
    for line in invoices {
        let (name, text) = line.split_once(": ").expect("name: body");
        let body: Value = serde_json::from_str(text).expect("invoice JSON");
        let total = out.0.entry(name.to_string()).or_default();
        for invoice in body["data"].as_array().expect("data") {
            for item in invoice["line_items"].as_array().expect("line_items") {
                let quantity: Decimal = item["quantity"].to_string().parse().expect("quantity");
                let product = item["product_id"].as_str().unwrap_or_default();
                if product == billing.call_product {
                    total.0 += u64::try_from(quantity).expect("integer count");
                } else if product == billing.mb_product {
                    total.1 += quantity;
                }
            }
        }
    }
    out
}

/// Replaces every UUID by `<id:N>`, N counting distinct UUIDs in order of first appearance.
pub fn normalize_ids(text: &str) -> String {
    let mut seen: Vec<String> = Vec::new();
    let mut out = String::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if i + 36 <= bytes.len() && is_uuid(&bytes[i..i + 36]) {
            let id = &text[i..i + 36];
            let n = match seen.iter().position(|s| s == id) {
                Some(n) => n,
                None => {
                    seen.push(id.to_string());
                    seen.len() - 1
                }
            };
            out.push_str(&format!("<id:{n}>"));
            i += 36;
        } else {
            let c = text[i..].chars().next().expect("a char");
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

fn is_uuid(b: &[u8]) -> bool {
    b.iter().enumerate().all(|(i, c)| match i {
        8 | 13 | 18 | 23 => *c == b'-',
        _ => c.is_ascii_hexdigit(),
    })
}
