//! Cost previews (`POST /v1/customers/{id}/previewEvents` and the browser page): hypothetical
//! events priced against a customer's contracts, by the same [`price_invoice`] and the same
//! renderer (`invoice_json`) as its draft invoices, storing nothing.
//!
//! Central builds a [`PreviewSnapshot`] (each contract's pricing snapshot, its open draft usage
//! periods with their balances' prior ledger and, for `merge`, their stored usage rows as draft
//! invoices read them) and calls [`preview`]; the browser fetches the same snapshot
//! (`GET /v1/customers/{id}/pricingSnapshot`) and calls the same function compiled to WASM, so
//! both show the same bytes.
//!
//! Invariants:
//! - A pure function of the snapshot and the request: nothing is read or written.
//! - Events become usage exactly as on ingest: [`validate_event`] (the path's customer as
//!   `customer_id`, `timestamp` defaulting to the caller's now) then `metric::contributions`.
//! - `replace` prices only the request's events; `merge` adds the stored rows of the snapshot.
//! - A contract's invoices in the response are its open draft periods that hold a request
//!   event, and always its latest open draft period, in time order.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::cell::OnceCell;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::event::Event;
use crate::ingest::validate_event;
use crate::invoice::Invoice;
use crate::invoice_json::{self, InvoiceHeader, InvoiceView, ProductView, Times};
use crate::metric::{contributions, MetricDef};
use crate::money::CreditType;
use crate::period::Period;
use crate::pricing::{price_invoice, PricingSnapshot};
use crate::rating::{merge_rows, UsageRow};
use crate::time::format_rfc3339_ms;

/// At most this many events per request (the document's `maxItems`).
pub const MAX_EVENTS: usize = 100;

/// Everything a customer's previews price with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviewSnapshot {
    pub customer_id: String,
    /// The customer's contracts that have an open draft usage period, in contract order.
    pub contracts: Vec<ContractPreview>,
}

/// One contract: its pricing, what its invoices show of products, and its open drafts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContractPreview {
    pub pricing: PricingSnapshot,
    #[serde(default)]
    pub products: BTreeMap<String, ProductView>,
    /// Open draft usage periods, in time order.
    pub periods: Vec<PreviewPeriod>,
}

/// One open draft usage period of a contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviewPeriod {
    /// The draft's id, period and the fields it shows from its contract and customer.
    pub header: InvoiceHeader,
    /// Each balance segment's ledger as it stands before this draft.
    #[serde(default)]
    pub prior_ledger: BTreeMap<String, Decimal>,
    /// The stored usage the draft prices (the rollup cover's rows and LATEST baselines);
    /// `merge` adds the request's events to it. Empty when the snapshot was built without.
    #[serde(default)]
    pub usage: Vec<UsageRow>,
}

/// How the request's events combine with stored usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Replace,
    Merge,
}

/// A checked `previewEvents` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviewRequest {
    pub events: Vec<Event>,
    pub mode: Mode,
    pub skip_zero_qty_line_items: bool,
}

/// Why a preview failed: a bad request (400), or pricing refused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreviewError {
    Invalid(String),
    Rating(String),
}

impl core::fmt::Display for PreviewError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PreviewError::Invalid(m) => f.write_str(m),
            PreviewError::Rating(m) => write!(f, "rating failed: {m}"),
        }
    }
}

fn invalid<T>(message: String) -> Result<T, PreviewError> {
    Err(PreviewError::Invalid(message))
}

/// Checks a `previewEvents` body: `events` (1 to 100, each an ingest event without
/// `customer_id`), `mode` (`replace`, the default, or `merge`), `skip_zero_qty_line_items`;
/// no other field; no transaction id twice. An event without `transaction_id` gets
/// `preview-{index}`, one without `timestamp` gets `now_ms`.
pub fn parse_request(
    body: &Value,
    customer_id: &str,
    now_ms: i64,
) -> Result<PreviewRequest, PreviewError> {
    parse_request_owned(body.clone(), customer_id, now_ms)
}

/// [`parse_request`] of a body the caller gives up: its events are validated in place, not
/// copied.
pub fn parse_request_owned(
    body: Value,
    customer_id: &str,
    now_ms: i64,
) -> Result<PreviewRequest, PreviewError> {
    let Value::Object(mut fields) = body else {
        return invalid("request body must be a JSON object".into());
    };
    if let Some(k) = fields
        .keys()
        .find(|k| !["events", "mode", "skip_zero_qty_line_items"].contains(&k.as_str()))
    {
        return invalid(format!("unknown field {k:?}"));
    }
    let mode = match fields.get("mode") {
        None | Some(Value::Null) => Mode::Replace,
        Some(Value::String(m)) if m == "replace" => Mode::Replace,
        Some(Value::String(m)) if m == "merge" => Mode::Merge,
        Some(other) => {
            return invalid(format!(
                "mode must be \"replace\" or \"merge\", not {other}"
            ))
        }
    };
    let skip_zero_qty_line_items = match fields.get("skip_zero_qty_line_items") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return invalid("skip_zero_qty_line_items must be a boolean".into()),
    };
    let items = match fields.remove("events") {
        None | Some(Value::Null) => return invalid("events is required".into()),
        Some(Value::Array(items)) => items,
        Some(_) => return invalid("events must be an array".into()),
    };
    if items.is_empty() {
        return invalid("events must hold at least one event".into());
    }
    if items.len() > MAX_EVENTS {
        return invalid(format!(
            "events holds {} events; at most {MAX_EVENTS} are allowed",
            items.len()
        ));
    }
    let mut seen = BTreeSet::new();
    let mut events = Vec::with_capacity(items.len());
    let mut now_text: Option<String> = None;
    for (i, item) in items.into_iter().enumerate() {
        let Value::Object(mut map) = item else {
            return invalid(format!("events[{i}] must be a JSON object"));
        };
        if map.contains_key("customer_id") {
            return invalid(format!(
                "events[{i}]: customer_id is not allowed (the path names the customer)"
            ));
        }
        map.insert("customer_id".into(), Value::String(customer_id.into()));
        if map.get("transaction_id").is_none_or(Value::is_null) {
            map.insert(
                "transaction_id".into(),
                Value::String(format!("preview-{i}")),
            );
        }
        if map.get("timestamp").is_none_or(Value::is_null) {
            let now = now_text.get_or_insert_with(|| format_rfc3339_ms(now_ms));
            map.insert("timestamp".into(), Value::String(now.clone()));
        }
        let event = validate_event(Value::Object(map), now_ms)
            .map_err(|e| PreviewError::Invalid(format!("events[{i}]: {}", e.message)))?;
        if !seen.insert(event.transaction_id.clone()) {
            return invalid(format!(
                "events[{i}]: transaction_id {:?} appears more than once in the request",
                event.transaction_id
            ));
        }
        events.push(event);
    }
    Ok(PreviewRequest {
        events,
        mode,
        skip_zero_qty_line_items,
    })
}

/// The usage the events make under `metrics`: one row per metric, grain values and UTC hour,
/// merged as ingest merges them.
pub fn usage_rows(
    metrics: &BTreeMap<String, MetricDef>,
    events: &[Event],
) -> Result<Vec<UsageRow>, PreviewError> {
    rows_of(&MetricIndex::new(metrics), events)
}

/// A contract's metrics by the event types they may meter: an event is matched only against
/// the metrics its type may pass (`event_type_filter.in_values` naming it, or no `in_values`),
/// in the metrics' order, so it makes the same contributions as against all of them.
#[derive(Debug, Clone, Default)]
struct MetricIndex<'a> {
    by_type: BTreeMap<&'a str, Vec<&'a MetricDef>>,
    /// Metrics without `in_values`: candidates for every event type.
    any_type: Vec<&'a MetricDef>,
}

impl<'a> MetricIndex<'a> {
    fn new(metrics: &'a BTreeMap<String, MetricDef>) -> MetricIndex<'a> {
        let mut index = MetricIndex::default();
        for m in metrics.values() {
            match m
                .event_type_filter
                .as_ref()
                .and_then(|f| f.in_values.as_ref())
            {
                None => {
                    index.any_type.push(m);
                    for list in index.by_type.values_mut() {
                        list.push(m);
                    }
                }
                Some(types) => {
                    for t in types {
                        let list = index
                            .by_type
                            .entry(t.as_str())
                            .or_insert_with(|| index.any_type.clone());
                        // `in_values` may name a type twice.
                        if !list.last().is_some_and(|l| core::ptr::eq(*l, m)) {
                            list.push(m);
                        }
                    }
                }
            }
        }
        index
    }

    fn candidates(&self, event_type: &str) -> &[&'a MetricDef] {
        self.by_type.get(event_type).unwrap_or(&self.any_type)
    }
}

fn rows_of(index: &MetricIndex<'_>, events: &[Event]) -> Result<Vec<UsageRow>, PreviewError> {
    let items = events.iter().flat_map(|event| {
        contributions(index.candidates(&event.event_type).iter().copied(), event)
            .into_iter()
            .map(|(key, acc)| ((key.metric_id, key.groups, key.hour_ms), acc))
    });
    merge_rows(items).map_err(|e| PreviewError::Rating(format!("{e:?}")))
}

/// A snapshot ready to price request after request (what the browser keeps per loaded
/// snapshot): each period's pricing with its prior ledger in place, built once.
#[derive(Debug, Clone)]
pub struct PreparedSnapshot {
    snapshot: PreviewSnapshot,
    /// Per contract and period: the contract's pricing with the period's prior ledger, `None`
    /// where that is the contract's pricing as it is.
    ledgered: Vec<Vec<Option<PricingSnapshot>>>,
}

impl PreparedSnapshot {
    pub fn new(snapshot: PreviewSnapshot) -> PreparedSnapshot {
        let ledgered = snapshot
            .contracts
            .iter()
            .map(|c| c.periods.iter().map(|p| with_ledger(c, p)).collect())
            .collect();
        PreparedSnapshot { snapshot, ledgered }
    }

    pub fn snapshot(&self) -> &PreviewSnapshot {
        &self.snapshot
    }
}

/// The contract's pricing with `period`'s prior ledger, `None` when it already has it.
fn with_ledger(contract: &ContractPreview, period: &PreviewPeriod) -> Option<PricingSnapshot> {
    if contract.pricing.balances.prior_ledger == period.prior_ledger {
        return None;
    }
    let mut pricing = contract.pricing.clone();
    pricing.balances.prior_ledger = period.prior_ledger.clone();
    Some(pricing)
}

/// One invoice of a preview, priced, with what renders it.
struct Priced<'a> {
    header: &'a InvoiceHeader,
    products: &'a BTreeMap<String, ProductView>,
    credit_types: &'a [CreditType],
    invoice: Invoice,
}

/// The invoices of a preview, in response order (see [`preview`]); `ledgered` gives a
/// contract's period its pricing when that is not the contract's (`with_ledger`).
fn price_all<'a>(
    snapshot: &'a PreviewSnapshot,
    req: &PreviewRequest,
    ledgered: impl Fn(usize, usize) -> Option<&'a PricingSnapshot>,
) -> Result<Vec<Priced<'a>>, PreviewError> {
    let mut out = Vec::new();
    for (c, contract) in snapshot.contracts.iter().enumerate() {
        let Some(last) = contract.periods.len().checked_sub(1) else {
            continue;
        };
        let rows = rows_of(&MetricIndex::new(&contract.pricing.metrics), &req.events)?;
        for (i, period) in contract.periods.iter().enumerate() {
            let (start, end) = (period.header.start_ms, period.header.end_ms);
            let holds_event = req
                .events
                .iter()
                .any(|e| e.timestamp_ms >= start && e.timestamp_ms < end);
            if i != last && !holds_event {
                continue;
            }
            let pricing = ledgered(c, i).unwrap_or(&contract.pricing);
            out.push(Priced {
                header: &period.header,
                products: &contract.products,
                credit_types: &pricing.credit_types,
                invoice: price_period(pricing, period, &rows, req)?,
            });
        }
    }
    Ok(out)
}

/// The response of `previewEvents`: `{data: [invoice, ...]}`, per contract in snapshot order,
/// its periods that hold a request event and its latest open draft period, in time order.
pub fn preview(snapshot: &PreviewSnapshot, req: &PreviewRequest) -> Result<Value, PreviewError> {
    // Only the periods priced need their ledger in place.
    let ledgered: Vec<Vec<OnceCell<Option<PricingSnapshot>>>> = snapshot
        .contracts
        .iter()
        .map(|c| c.periods.iter().map(|_| OnceCell::new()).collect())
        .collect();
    let priced = price_all(snapshot, req, |c, p| {
        let contract = &snapshot.contracts[c];
        ledgered[c][p]
            .get_or_init(|| with_ledger(contract, &contract.periods[p]))
            .as_ref()
    })?;
    let data = priced
        .iter()
        .map(|p| invoice_json::invoice(p.header, &p.invoice, p.products, p.credit_types))
        .collect::<Result<Vec<Value>, _>>()
        .map_err(|e| PreviewError::Rating(e.to_string()))?;
    // Built by hand: `json!` would serialize every invoice into a copy.
    let mut out = Map::new();
    out.insert("data".into(), Value::Array(data));
    Ok(Value::Object(out))
}

/// [`preview`] against a prepared snapshot, as JSON text: the same bytes as serializing
/// [`preview`]'s value, written straight from the invoices' typed views.
pub fn preview_prepared_json(
    prepared: &PreparedSnapshot,
    req: &PreviewRequest,
) -> Result<String, PreviewError> {
    let priced = price_all(&prepared.snapshot, req, |c, p| {
        prepared.ledgered[c][p].as_ref()
    })?;
    let times: Vec<Times> = priced
        .iter()
        .map(|p| Times::of(p.header, &p.invoice))
        .collect();
    let data = priced
        .iter()
        .zip(&times)
        .map(|(p, t)| {
            invoice_json::invoice_view(p.header, &p.invoice, p.products, p.credit_types, t)
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PreviewError::Rating(e.to_string()))?;
    #[derive(Serialize)]
    struct Response<'a> {
        data: Vec<InvoiceView<'a>>,
    }
    serde_json::to_string(&Response { data }).map_err(|e| PreviewError::Rating(e.to_string()))
}

/// One period's priced invoice with the request's usage rows (and, in `merge`, the stored
/// ones); `pricing` is the contract's with the period's prior ledger.
fn price_period(
    pricing: &PricingSnapshot,
    period: &PreviewPeriod,
    rows: &[UsageRow],
    req: &PreviewRequest,
) -> Result<Invoice, PreviewError> {
    let merged: Vec<UsageRow>;
    let usage = match req.mode {
        Mode::Replace => rows,
        Mode::Merge => {
            merged = period.usage.iter().chain(rows).cloned().collect();
            &merged
        }
    };
    let bounds = Period {
        start_ms: period.header.start_ms,
        end_ms: period.header.end_ms,
    };
    let priced =
        price_invoice(pricing, usage, bounds).map_err(|e| PreviewError::Rating(e.to_string()))?;
    Ok(if req.skip_zero_qty_line_items {
        priced.without_zero_quantity_lines()
    } else {
        priced
    })
}

/// A `pricingSnapshot` response's `data` as the engine reads it.
pub fn parse_snapshot(snapshot: &str) -> Result<PreviewSnapshot, PreviewError> {
    serde_json::from_str(snapshot).map_err(|e| PreviewError::Invalid(format!("snapshot: {e}")))
}

/// [`parse_request`] then [`preview`] of a request's JSON text against a prepared snapshot,
/// answered as JSON text: what the page calls on every keystroke (see `wasm::Previewer`).
pub fn preview_request_json(
    prepared: &PreparedSnapshot,
    request: &str,
    now_ms: i64,
) -> Result<String, PreviewError> {
    let body: Value = serde_json::from_str(request)
        .map_err(|e| PreviewError::Invalid(format!("request: {e}")))?;
    let req = parse_request_owned(body, &prepared.snapshot.customer_id, now_ms)?;
    preview_prepared_json(prepared, &req)
}

/// [`parse_snapshot`] then [`preview_request_json`]: JSON text in and out.
pub fn preview_json(snapshot: &str, request: &str, now_ms: i64) -> Result<String, PreviewError> {
    preview_request_json(
        &PreparedSnapshot::new(parse_snapshot(snapshot)?),
        request,
        now_ms,
    )
}
