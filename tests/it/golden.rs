//! Golden invoices: each case under `tests/fixtures/<case>/` is replayed against the router,
//! in-process, on a fresh SQLite database with a fixed clock, and the customer's invoices are
//! compared with the hand-computed `expected.json`.
//!
//! A case is four files:
//! - `setup.json`: ordered API calls `{"method", "path", "body"?, "save"?}`. Each must answer 200.
//!   `"save": "name"` keeps the response's `data`; any later string (path, body, event, read) may
//!   then say `$name.field` (e.g. `"$metric.id"`, `"/v1/customers/$acme.id/invoices"`; a number
//!   indexes an array: `$contract.subscriptions.0.id`). A string
//!   that is exactly one reference is replaced by the referenced JSON value, of any type.
//! - `events.json`: an array of requests, each an array of usage events, sent in order to
//!   `POST /v1/ingest` after the setup (references are substituted here too).
//! - `case.json`: `description` (what the case proves, with the hand computation), `now` (the fixed
//!   clock), `invoice_grace_hours`, `ingest` (the expected `accepted`/`duplicates` totals; any
//!   rejected event fails the case) and `reads`, each one of:
//!   - `{"customer": "$acme.id", "query"?: "..."}`: `GET /v1/customers/{customer}/invoices[?query]`;
//!   - `{"method": "POST", "path": "/v1/contracts/customerBalances/list", "body"?: {...}}`: any
//!     call (balances, ledgers, `getNetBalance`, a contract), references substituted as in setup.
//!
//!   Either may say `"now": "<RFC 3339>"`: the clock moves there (never backwards) and a job pass
//!   runs before the read, so one case can read a draft and then the same invoice finalized
//!   after its grace. Every read must answer 200.
//! - `expected.json`: the array of read responses, normalised: every id a setup step saved is
//!   replaced by `<name>`; a commit or credit a read shows (an object with an `access_schedule`)
//!   by `<commit:NAME>`, its access segments by `<segment:NAME:J>` and its invoice schedule items
//!   by `<invoice-item:NAME:J>` (NAME its `name`, `NAME#2`, `NAME#3`, ... for later commits of a
//!   name already taken; J the item's index); invoice ids by
//!   `<invoice:N>` (first appearance order among the objects with `line_items`); any other
//!   generated UUID by `<unknown-id:N>`; everything else verbatim (numbers keep their literal
//!   digits thanks to serde_json's `arbitrary_precision`), pretty-printed with sorted keys.
//!
//! `UPDATE_EXPECT=1` rewrites `expected.json` from the server's answer instead of comparing, like
//! rust-analyzer's `expect_test`. Expected numbers are computed by hand first; review the diff.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use serde::Deserialize;
use serde_json::{Map, Value};
use tally_central::model::USD_ID;
use tally_central::store::{self, Env};
use tally_central::{auth, http, AppState, FixedClock, Settings};
use tally_core::time::{parse_rfc3339_ms, HOUR_MS};
use tower::ServiceExt;

/// Set (to anything but empty or `0`) to rewrite `expected.json` instead of comparing.
const UPDATE_ENV: &str = "UPDATE_EXPECT";

/// Largest response body read back from the router.
const MAX_RESPONSE_BYTES: usize = 16 << 20;

/// Bounds the line diff printed on a mismatch (it is quadratic in the number of lines).
const MAX_DIFF_LINES: usize = 5_000;

#[test]
fn tiers_3_5() {
    check("tiers_3_5");
}

#[test]
fn conversion_rounding() {
    check("conversion_rounding");
}

#[test]
fn seed_groups() {
    check("seed_groups");
}

#[test]
fn aggregations() {
    check("aggregations");
}

#[test]
fn rate_change_mid_period() {
    check("rate_change_mid_period");
}

#[test]
fn periods_custom_date() {
    check("periods_custom_date");
}

#[test]
fn entitlement_and_zero_lines() {
    check("entitlement_and_zero_lines");
}

#[test]
fn scheduled_3_8() {
    check("scheduled_3_8");
}

#[test]
fn overrides_3_6() {
    check("overrides_3_6");
}

#[test]
fn drawdown_3_7() {
    check("drawdown_3_7");
}

#[test]
fn rollover_renewal() {
    check("rollover_renewal");
}

#[test]
fn postpaid_trueup_3_7() {
    check("postpaid_trueup_3_7");
}

#[test]
fn burn_order_3_7() {
    check("burn_order_3_7");
}

#[test]
fn composite_3_5() {
    check("composite_3_5");
}

#[test]
fn subscriptions_3_8() {
    check("subscriptions_3_8");
}

#[test]
fn custom_units_1_7() {
    check("custom_units_1_7");
}

#[test]
fn end_to_end_3_10() {
    check("end_to_end_3_10");
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Step {
    /// An HTTP method, or `FINALIZE` with path `CUSTOMER/CONTRACT`: what a job pass does to that
    /// one contract (its due periods are finalized).
    method: String,
    #[serde(default)]
    path: String,
    #[serde(default)]
    body: Option<Value>,
    #[serde(default)]
    save: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    /// What the case proves and the hand computation; shown when the case fails.
    description: String,
    now: String,
    invoice_grace_hours: i64,
    ingest: IngestTotals,
    reads: Vec<Read>,
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct IngestTotals {
    accepted: u64,
    duplicates: u64,
}

/// One read of `case.json` (module docs): a customer's invoices, or any call.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Read {
    Invoices(InvoicesRead),
    Call(CallRead),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InvoicesRead {
    customer: String,
    #[serde(default)]
    query: Option<String>,
    #[serde(default)]
    now: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CallRead {
    method: String,
    path: String,
    #[serde(default)]
    body: Option<Value>,
    #[serde(default)]
    now: Option<String>,
}

impl Read {
    fn now(&self) -> Option<&str> {
        match self {
            Read::Invoices(r) => r.now.as_deref(),
            Read::Call(r) => r.now.as_deref(),
        }
    }
}

fn fixture_dir(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(case)
}

fn read_json<T: serde::de::DeserializeOwned>(dir: &Path, file: &str) -> T {
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

fn update_requested() -> bool {
    std::env::var(UPDATE_ENV).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Runs one golden case and compares (or, with `UPDATE_EXPECT=1`, rewrites) `expected.json`.
fn check(case: &str) {
    let dir = fixture_dir(case);
    let setup: Vec<Step> = read_json(&dir, "setup.json");
    let events: Vec<Value> = read_json(&dir, "events.json");
    let spec: Case = read_json(&dir, "case.json");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let actual = runtime.block_on(run_case(case, &setup, &events, &spec));
    let rendered = render(&actual);

    let expected_path = dir.join("expected.json");
    if update_requested() {
        std::fs::write(&expected_path, &rendered)
            .unwrap_or_else(|e| panic!("writing {}: {e}", expected_path.display()));
        return;
    }
    let expected_text = std::fs::read_to_string(&expected_path).unwrap_or_else(|e| {
        panic!(
            "reading {}: {e} (hand-write it, or run with {UPDATE_ENV}=1 and review)",
            expected_path.display()
        )
    });
    // Re-rendered so only content matters, never whitespace; numbers keep their literal digits.
    let expected: Value = serde_json::from_str(&expected_text)
        .unwrap_or_else(|e| panic!("parsing {}: {e}", expected_path.display()));
    let expected = render(&expected);
    if expected != rendered {
        panic!(
            "golden case {case:?} differs from {} (- expected, + actual):\n{}\n\
             The case: {}\n\
             If the new output is right, rerun with {UPDATE_ENV}=1 and review the diff.",
            expected_path.display(),
            line_diff(&expected, &rendered),
            spec.description
        );
    }
}

/// An in-process Tally: the router, its token, and the database directory it must outlive.
struct Server {
    router: Router,
    state: AppState,
    clock: Arc<FixedClock>,
    token: String,
    _db_dir: tempfile::TempDir,
}

impl Server {
    async fn start(now_ms: i64, grace_hours: i64) -> Server {
        let db_dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", db_dir.path().join("tally.db").display());
        let stores = store::open(&url, &Default::default())
            .await
            .expect("open database");
        let token = auth::create_token(stores.tokens.as_ref(), Env::Sandbox, None, now_ms)
            .await
            .expect("create token");
        let settings = Settings {
            invoice_grace_ms: grace_hours * HOUR_MS,
            ..Settings::default()
        };
        let clock = Arc::new(FixedClock::new(now_ms));
        let state = AppState::new(stores, clock.clone(), settings);
        Server {
            router: http::router(state.clone()),
            state,
            clock,
            token,
            _db_dir: db_dir,
        }
    }

    /// One pass of the background job; it must run and not fail.
    async fn run_job(&self, case: &str) {
        let pass = tally_central::service::jobs::run_jobs_once(&self.state).await;
        assert!(
            matches!(&pass, Ok(Some(r)) if r.failed == 0),
            "{case}: job pass: {pass:?}"
        );
    }

    /// Finalizes the due periods of one contract (`CUSTOMER/CONTRACT`), as a job pass would.
    async fn finalize(&self, case: &str, path: &str) {
        use tally_central::service::{contracts, invoices};
        let (customer, contract) = path
            .split_once('/')
            .unwrap_or_else(|| panic!("{case}: FINALIZE path {path:?} is not CUSTOMER/CONTRACT"));
        let contract = contracts::get(&self.state, Env::Sandbox, customer, contract)
            .await
            .unwrap_or_else(|e| panic!("{case}: FINALIZE {path}: {e}"));
        invoices::finalize_due(&self.state, Env::Sandbox, &contract)
            .await
            .unwrap_or_else(|e| panic!("{case}: FINALIZE {path}: {e}"));
    }

    /// Sends one request and returns its status and JSON body (`null` when empty).
    async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (StatusCode, Value) {
        let method = Method::from_bytes(method.as_bytes())
            .unwrap_or_else(|e| panic!("bad method {method:?}: {e}"));
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token));
        let body = match body {
            Some(b) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Body::from(serde_json::to_vec(b).expect("encode request body"))
            }
            None => Body::empty(),
        };
        let resp = self
            .router
            .clone()
            .oneshot(req.body(body).expect("build request"))
            .await
            .expect("router is infallible");
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), MAX_RESPONSE_BYTES)
            .await
            .expect("read response body");
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!(
                    "{path}: response is not JSON ({e}): {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        (status, value)
    }
}

/// Replays setup, events and reads; returns the normalised read responses.
async fn run_case(case: &str, setup: &[Step], events: &[Value], spec: &Case) -> Value {
    let now_ms = parse_rfc3339_ms(&spec.now)
        .unwrap_or_else(|e| panic!("{case}: case.json now {:?}: {e}", spec.now));
    let server = Server::start(now_ms, spec.invoice_grace_hours).await;
    let mut saved: BTreeMap<String, Value> = BTreeMap::new();

    for (i, step) in setup.iter().enumerate() {
        if step.method == "FINALIZE" {
            let path = substitute_text(&step.path, &saved);
            server.finalize(case, &path).await;
            continue;
        }
        let path = substitute_text(&step.path, &saved);
        let body = step.body.as_ref().map(|b| substitute(b, &saved));
        let (status, resp) = server.call(&step.method, &path, body.as_ref()).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{case}: setup step {i} ({} {path}) answered {resp}",
            step.method
        );
        if let Some(name) = &step.save {
            let data = resp.get("data").cloned().unwrap_or(Value::Null);
            assert!(
                saved.insert(name.clone(), data).is_none(),
                "{case}: setup step {i} saves {name:?} twice"
            );
        }
    }

    let mut totals = IngestTotals {
        accepted: 0,
        duplicates: 0,
    };
    for (i, request) in events.iter().enumerate() {
        let batch = substitute(request, &saved);
        let (status, resp) = server.call("POST", "/v1/ingest", Some(&batch)).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{case}: ingest request {i} answered {resp}"
        );
        let summary = &resp["data"];
        let rejected = summary["rejected"].as_array().map_or(0, Vec::len);
        assert_eq!(
            rejected, 0,
            "{case}: ingest request {i} rejected events: {summary}"
        );
        totals.accepted += count(&summary["accepted"]);
        totals.duplicates += count(&summary["duplicates"]);
    }
    assert_eq!(
        totals, spec.ingest,
        "{case}: ingest totals differ from case.json"
    );

    // Reads never finalize: one job pass, as `tally serve` runs it, finalizes the due periods.
    server.run_job(case).await;
    let mut clock_ms = now_ms;
    let mut responses = Vec::new();
    for (i, read) in spec.reads.iter().enumerate() {
        if let Some(at) = read.now() {
            let at_ms =
                parse_rfc3339_ms(at).unwrap_or_else(|e| panic!("{case}: read {i} now {at:?}: {e}"));
            assert!(
                at_ms >= clock_ms,
                "{case}: read {i} moves the clock backwards to {at}"
            );
            clock_ms = at_ms;
            server.clock.set(at_ms);
            server.run_job(case).await;
        }
        let (method, path, body) = match read {
            Read::Invoices(r) => {
                let customer = substitute_text(&r.customer, &saved);
                let mut path = format!("/v1/customers/{customer}/invoices");
                if let Some(q) = &r.query {
                    path.push('?');
                    path.push_str(&substitute_text(q, &saved));
                }
                ("GET", path, None)
            }
            Read::Call(r) => (
                r.method.as_str(),
                substitute_text(&r.path, &saved),
                r.body.as_ref().map(|b| substitute(b, &saved)),
            ),
        };
        let (status, resp) = server.call(method, &path, body.as_ref()).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{case}: read {i} ({method} {path}) answered {resp}"
        );
        responses.push(resp);
    }
    normalise(Value::Array(responses), &saved)
}

fn count(v: &Value) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("ingest count is not a whole number: {v}"))
}

// ---------------------------------------------------------------------------------------------
// `$name.field` references

/// Replaces references in every string of `v` (object keys are left alone).
fn substitute(v: &Value, saved: &BTreeMap<String, Value>) -> Value {
    match v {
        Value::String(s) => match whole_reference(s) {
            Some(reference) => resolve(reference, saved).clone(),
            None => Value::String(substitute_text(s, saved)),
        },
        Value::Array(items) => Value::Array(items.iter().map(|x| substitute(x, saved)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, x)| (k.clone(), substitute(x, saved)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The length of the reference starting at `s[0] == '$'` (`$name(.field)*`), if any.
fn reference_len(s: &str) -> Option<usize> {
    let rest = s.strip_prefix('$')?;
    let mut len = 1;
    let mut segment_start = true;
    for c in rest.chars() {
        if is_ident_char(c) {
            segment_start = false;
        } else if c == '.' && !segment_start {
            segment_start = true;
        } else {
            break;
        }
        len += c.len_utf8();
    }
    // A trailing dot belongs to the surrounding text, not the reference.
    if segment_start {
        len -= 1;
    }
    (len > 1).then_some(len)
}

fn whole_reference(s: &str) -> Option<&str> {
    (reference_len(s)? == s.len()).then_some(s)
}

/// Looks up `$name.a.b` in the saved responses; panics on an unknown reference.
fn resolve<'a>(reference: &str, saved: &'a BTreeMap<String, Value>) -> &'a Value {
    let mut parts = reference[1..].split('.');
    let name = parts.next().unwrap_or_default();
    let mut value = saved
        .get(name)
        .unwrap_or_else(|| panic!("reference {reference}: nothing saved as {name:?}"));
    for field in parts {
        // A number indexes an array (`$contract.subscriptions.0.id`).
        let next = match field.parse::<usize>() {
            Ok(i) if value.is_array() => value.get(i),
            _ => value.get(field),
        };
        value =
            next.unwrap_or_else(|| panic!("reference {reference}: no field {field:?} in {value}"));
    }
    value
}

/// Replaces every reference inside `s` by its value, which must be a string.
fn substitute_text(s: &str, saved: &BTreeMap<String, Value>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        match reference_len(tail) {
            Some(len) => {
                let reference = &tail[..len];
                match resolve(reference, saved) {
                    Value::String(v) => out.push_str(v),
                    other => panic!("reference {reference} inside {s:?} is not a string: {other}"),
                }
                rest = &tail[len..];
            }
            None => {
                out.push('$');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

// ---------------------------------------------------------------------------------------------
// Normalisation and rendering

/// Replaces generated ids by stable placeholders (see the module docs).
fn normalise(reads: Value, saved: &BTreeMap<String, Value>) -> Value {
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    for (name, data) in saved {
        if let Some(id) = data.get("id").and_then(Value::as_str) {
            names.insert(id.to_string(), format!("<{name}>"));
        }
    }
    name_balances(&reads, &mut names, &mut BTreeMap::new());
    let mut invoices = Vec::new();
    collect_invoice_ids(&reads, &mut invoices);
    let mut n = 0;
    for id in invoices {
        names.entry(id).or_insert_with(|| {
            n += 1;
            format!("<invoice:{n}>")
        });
    }
    let mut unknown = 0;
    replace_ids(reads, &mut names, &mut unknown)
}

/// Names every commit or credit inside `v` (an object with an `access_schedule`) and its
/// schedule items after its `name` (module docs); an id a setup step saved keeps its name.
/// `labels` holds the label each commit got, so a second commit of a name gets `NAME#2`.
fn name_balances(
    v: &Value,
    names: &mut BTreeMap<String, String>,
    labels: &mut BTreeMap<String, String>,
) {
    match v {
        Value::Array(items) => items.iter().for_each(|x| name_balances(x, names, labels)),
        Value::Object(map) => {
            let id = map.get("id").and_then(Value::as_str);
            if let (Some(id), Some(access)) = (id, map.get("access_schedule")) {
                let name = map.get("name").and_then(Value::as_str).unwrap_or("unnamed");
                let label = match labels.get(id) {
                    Some(label) => label.clone(),
                    None => {
                        let mut label = name.to_string();
                        for k in 2.. {
                            if !labels.values().any(|l| *l == label) {
                                break;
                            }
                            label = format!("{name}#{k}");
                        }
                        labels.insert(id.to_string(), label.clone());
                        label
                    }
                };
                names
                    .entry(id.to_string())
                    .or_insert_with(|| format!("<commit:{label}>"));
                let schedules = [
                    ("segment", Some(access)),
                    ("invoice-item", map.get("invoice_schedule")),
                ];
                for (what, schedule) in schedules {
                    let items = schedule.and_then(|s| s["schedule_items"].as_array());
                    for (j, item) in items.into_iter().flatten().enumerate() {
                        if let Some(item_id) = item["id"].as_str() {
                            names
                                .entry(item_id.to_string())
                                .or_insert_with(|| format!("<{what}:{label}:{j}>"));
                        }
                    }
                }
            }
            map.values().for_each(|x| name_balances(x, names, labels));
        }
        _ => {}
    }
}

/// The ids of the invoices inside `v` (objects with `line_items`), in order of appearance.
fn collect_invoice_ids(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Array(items) => items.iter().for_each(|x| collect_invoice_ids(x, out)),
        Value::Object(map) => {
            if map.contains_key("line_items") {
                if let Some(id) = map.get("id").and_then(Value::as_str) {
                    out.push(id.to_string());
                }
            }
            map.values().for_each(|x| collect_invoice_ids(x, out));
        }
        _ => {}
    }
}

fn replace_ids(v: Value, names: &mut BTreeMap<String, String>, unknown: &mut usize) -> Value {
    match v {
        Value::String(s) => {
            if let Some(placeholder) = names.get(&s) {
                return Value::String(placeholder.clone());
            }
            if s != USD_ID && looks_like_uuid(&s) {
                *unknown += 1;
                let placeholder = format!("<unknown-id:{unknown}>");
                names.insert(s, placeholder.clone());
                return Value::String(placeholder);
            }
            Value::String(s)
        }
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|x| replace_ids(x, names, unknown))
                .collect(),
        ),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, x)| (k, replace_ids(x, names, unknown)))
                .collect(),
        ),
        other => other,
    }
}

/// Lowercase hyphenated 8-4-4-4-12 hex, as Tally generates.
fn looks_like_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Pretty JSON with keys sorted at every level, ending in a newline.
fn render(v: &Value) -> String {
    let mut text = serde_json::to_string_pretty(&sorted(v)).expect("render JSON");
    text.push('\n');
    text
}

/// A copy with object keys in sorted order (explicit, so it holds even if some crate turns on
/// serde_json's `preserve_order`).
fn sorted(v: &Value) -> Value {
    match v {
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let mut out = Map::new();
            for k in keys {
                out.insert(k.clone(), sorted(&map[k]));
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

/// Lines of unchanged context shown around each difference.
const DIFF_CONTEXT: usize = 3;

/// A minimal line diff (longest common subsequence): `-` expected only, `+` actual only, with a
/// few lines of context around each change.
fn line_diff(expected: &str, actual: &str) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = actual.lines().collect();
    if a.len() > MAX_DIFF_LINES || b.len() > MAX_DIFF_LINES {
        return format!("--- expected ---\n{expected}\n--- actual ---\n{actual}");
    }
    // lcs[i][j] = LCS length of a[i..] and b[j..].
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut ops: Vec<(char, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            ops.push((' ', a[i]));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            ops.push(('-', a[i]));
            i += 1;
        } else {
            ops.push(('+', b[j]));
            j += 1;
        }
    }
    let changed: Vec<usize> = (0..ops.len()).filter(|&k| ops[k].0 != ' ').collect();
    let near_change = |k: usize| changed.iter().any(|&c| c.abs_diff(k) <= DIFF_CONTEXT);
    let mut out = String::new();
    let mut skipped = false;
    for (k, (tag, line)) in ops.iter().enumerate() {
        if near_change(k) {
            out.push_str(&format!("{tag} {line}\n"));
            skipped = false;
        } else if !skipped {
            out.push_str("  ...\n");
            skipped = true;
        }
    }
    out
}
