//! Commits, credits and their balances through the HTTP API (issue 11 items 2, 3 and 5): drafts
//! drawn down in the documented order (hand-computed numbers, §3.7 and §3.10), postpaid true-ups,
//! commit rates, the ledger written once at finalization (also by two finalizers), balances that
//! follow usage ingested a moment ago, manual entries under concurrency, on both backends.
//!
//! Setup: metric SUM(`n`) of `use` events; product `Calls` at FLAT 100 (commit rate FLAT 80) from
//! 2024-11-01; FIXED product `Prepaid`; customer `acme`; monthly contracts from 2024-11-01; the
//! clock on 11-25 (grace 24 h).

use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::{json, Value};
use tally_central::model::{kind, load, Contract};
use tally_central::service::invoices::finalize_due;
use tally_central::store::Env;
use tally_central::AppState;

use crate::store_conformance::Backend;
use crate::support::*;

pub(crate) const SBX: Env = Env::Sandbox;
pub(crate) const START: &str = "2024-11-01T00:00:00Z";
pub(crate) const DEC: &str = "2024-12-01T00:00:00Z";
pub(crate) const JAN: &str = "2025-01-01T00:00:00Z";
const YEAR: &str = "2025-11-01T00:00:00Z";
pub(crate) const NOW: &str = "2024-11-25T00:00:00Z";

pub(crate) struct Setup {
    pub card: String,
    pub calls: String,
    pub fixed: String,
    pub customer: String,
}

impl Setup {
    pub(crate) async fn new(app: &TestApp) -> Setup {
        let metric = app
            .metric(
                SBX,
                json!({ "name": "n", "aggregation_type": "SUM", "aggregation_key": "n",
                        "event_type_filter": { "in_values": ["use"] } }),
            )
            .await;
        let calls = app.usage_product(SBX, "Calls", &metric, json!({})).await;
        let fixed = app
            .post(
                "/v1/contract-pricing/products/create",
                json!({ "name": "Prepaid", "type": "FIXED" }),
            )
            .await
            .id();
        let card = app.rate_card(SBX, "card").await;
        app.post(
            "/v1/contract-pricing/rate-cards/addRate",
            json!({
                "rate_card_id": card, "product_id": calls, "starting_at": START,
                "entitled": true, "rate_type": "FLAT", "price": 100,
                "commit_rate": { "rate_type": "FLAT", "price": 80 },
            }),
        )
        .await
        .expect(StatusCode::OK);
        let customer = app.customer(SBX, "acme", &["acme"]).await;
        Setup {
            card,
            calls,
            fixed,
            customer,
        }
    }

    /// A contract from START with these extra fields; its id.
    pub(crate) async fn contract(&self, app: &TestApp, extra: Value) -> String {
        let mut body = json!({
            "customer_id": self.customer, "rate_card_id": self.card, "starting_at": START,
        });
        merge(&mut body, extra);
        app.post("/v1/contracts/create", body).await.id()
    }

    /// `(kind, amount)` access schedule of one segment `[from, to)`.
    fn access(amount: &str, from: &str, to: &str) -> Value {
        json!({ "schedule_items": [{ "amount": dec(amount), "starting_at": from, "ending_before": to }] })
    }

    fn credit(&self, name: &str, amount: &str, priority: i64) -> Value {
        json!({ "product_id": self.fixed, "name": name, "priority": priority,
                "access_schedule": Self::access(amount, START, YEAR) })
    }

    fn prepaid(&self, name: &str, amount: &str, priority: i64) -> Value {
        json!({ "product_id": self.fixed, "type": "PREPAID", "name": name, "priority": priority,
                "access_schedule": Self::access(amount, START, YEAR),
                "invoice_schedule": { "schedule_items": [{ "timestamp": START, "amount": dec(amount) }] } })
    }

    /// Ingests `(timestamp, n)` events for acme with fresh transaction ids.
    pub(crate) async fn events(&self, app: &TestApp, tag: &str, events: &[(&str, &str)]) {
        let events: Vec<Value> = events
            .iter()
            .enumerate()
            .map(|(i, (at, n))| event(&format!("{tag}{i}"), "acme", "use", at, json!({ "n": n })))
            .collect();
        let r = app.ingest(SBX, Value::Array(events.clone())).await;
        assert_eq!(r["accepted"], events.len(), "{r}");
    }

    /// The contract's usage invoice starting at `start`.
    pub(crate) async fn invoice(&self, app: &TestApp, contract: &str, start: &str) -> Value {
        let all = app.invoices(SBX, &self.customer, "").await;
        all.into_iter()
            .find(|i| {
                i["contract_id"] == contract
                    && i["type"] == "USAGE"
                    && text(i, "start_timestamp") == start
            })
            .unwrap_or_else(|| panic!("no invoice of {contract} from {start}"))
    }

    /// `(timestamp, amount)` of the invoice schedule items of the contract's first commit.
    async fn invoice_items(&self, app: &TestApp, contract: &str) -> Vec<(String, String)> {
        let c = app
            .post(
                "/v2/contracts/get",
                json!({ "customer_id": self.customer, "contract_id": contract }),
            )
            .await
            .data();
        c["commits"][0]["invoice_schedule"]["schedule_items"]
            .as_array()
            .expect("schedule items")
            .iter()
            .map(|i| (text(i, "timestamp").to_string(), num(&i["amount"])))
            .collect()
    }

    /// The contract as `v2/contracts/get` shows it.
    pub(crate) async fn v2(&self, app: &TestApp, contract: &str) -> Value {
        app.post(
            "/v2/contracts/get",
            json!({ "customer_id": self.customer, "contract_id": contract }),
        )
        .await
        .data()
    }

    /// The ids of the contract's commits and credits, by name, from v2 get.
    pub(crate) async fn ids(&self, app: &TestApp, contract: &str) -> Vec<(String, String, String)> {
        let c = app
            .post(
                "/v2/contracts/get",
                json!({ "customer_id": self.customer, "contract_id": contract }),
            )
            .await
            .data();
        let mut out = Vec::new();
        for key in ["commits", "credits"] {
            for b in c[key].as_array().into_iter().flatten() {
                let seg = b["access_schedule"]["schedule_items"][0]["id"]
                    .as_str()
                    .unwrap();
                out.push((
                    text(b, "name").to_string(),
                    text(b, "id").to_string(),
                    seg.to_string(),
                ));
            }
        }
        out
    }

    pub(crate) async fn net(&self, app: &TestApp, extra: Value) -> String {
        let mut body = json!({ "customer_id": self.customer });
        merge(&mut body, extra);
        let d = app
            .post("/v1/contracts/customerBalances/getNetBalance", body)
            .await
            .data();
        num(&d["balance"])
    }
}

/// `(type, quantity, unit_price, total, commit or applied id)` of each line.
pub(crate) fn lines(inv: &Value) -> Vec<[String; 5]> {
    inv["line_items"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|l| {
            let id = l["commit_id"]
                .as_str()
                .or(l["applied_commit_or_credit"]["id"].as_str())
                .or(l["postpaid_commit"]["id"].as_str())
                .unwrap_or("-");
            let opt = |v: &Value| if v.is_null() { "-".to_string() } else { num(v) };
            [
                text(l, "type").to_string(),
                opt(&l["quantity"]),
                opt(&l["unit_price"]),
                num(&l["total"]),
                id.to_string(),
            ]
        })
        .collect()
}

pub(crate) fn l(t: &str, q: &str, p: &str, total: &str, id: &str) -> [String; 5] {
    [t, q, p, total, id].map(String::from)
}

fn id_of<'a>(ids: &'a [(String, String, String)], name: &str) -> &'a str {
    &ids.iter().find(|(n, _, _)| n == name).expect(name).1
}

fn segment_of<'a>(ids: &'a [(String, String, String)], name: &str) -> &'a str {
    &ids.iter().find(|(n, _, _)| n == name).expect(name).2
}

/// §3.7's example: a 5,000 prepaid commit, 80 units at 100 → 50 covered, −5,000 applied, 30 not
/// covered: total 3,000; the balance follows the draft, and FINALIZED mode ignores it.
async fn prepaid_commit_covers_the_first_units(backend: Backend) {
    let app = TestApp::on_backend(NOW, backend).await;
    let s = Setup::new(&app).await;
    let k = s
        .contract(
            &app,
            json!({ "commits": [s.prepaid("Prepaid Tokens", "5000", 1)] }),
        )
        .await;
    let ids = s.ids(&app, &k).await;
    let c = id_of(&ids, "Prepaid Tokens");
    assert_eq!(s.net(&app, json!({})).await, "5000");
    s.events(&app, "a", &[("2024-11-10T00:00:00Z", "80")]).await;
    let inv = s.invoice(&app, &k, START).await;
    assert_eq!(
        lines(&inv),
        vec![
            l("usage", "50", "100", "5000", c),
            l("applied_commit_or_credit", "-", "-", "-5000", c),
            l("usage", "30", "100", "3000", "-"),
        ]
    );
    assert_eq!(
        (num(&inv["total"]), num(&inv["subtotal"])),
        ("3000".into(), "8000".into())
    );
    let applied = &inv["line_items"][1];
    assert_eq!(text(applied, "name"), "Prepaid Tokens applied");
    assert_eq!(applied["applied_commit_or_credit"]["type"], "PREPAID");
    assert_eq!(inv["line_items"][0]["commit_type"], "PrepaidCommit");
    // The balance reflects the draft a moment after ingest; FINALIZED mode does not count it.
    assert_eq!(s.net(&app, json!({})).await, "0");
    assert_eq!(
        s.net(&app, json!({ "invoice_inclusion_mode": "FINALIZED" }))
            .await,
        "5000"
    );
    // 5,050 of balance: 50.5 units covered.
    let s2 = s
        .contract(&app, json!({ "commits": [s.prepaid("Big", "5050", 1)] }))
        .await;
    let inv = s.invoice(&app, &s2, START).await;
    let big = id_of(&s.ids(&app, &s2).await, "Big").to_string();
    assert_eq!(
        lines(&inv),
        vec![
            l("usage", "50.5", "100", "5050", &big),
            l("applied_commit_or_credit", "-", "-", "-5050", &big),
            l("usage", "29.5", "100", "2950", "-"),
        ]
    );
}

/// Several balances compete for one line: priority first, then credits ($0 cost basis) before
/// paid commits at equal priority; what is left over stays for the next invoice.
async fn balances_burn_in_the_documented_order(backend: Backend) {
    let app = TestApp::on_backend(NOW, backend).await;
    let s = Setup::new(&app).await;
    let k = s
        .contract(
            &app,
            json!({
                "credits": [s.credit("Late credit", "1000", 2), s.credit("Free credit", "500", 1)],
                "commits": [s.prepaid("Paid commit", "2000", 1)],
            }),
        )
        .await;
    let ids = s.ids(&app, &k).await;
    s.events(&app, "b", &[("2024-11-10T00:00:00Z", "30")]).await;
    let inv = s.invoice(&app, &k, START).await;
    let (free, paid, late) = (
        id_of(&ids, "Free credit"),
        id_of(&ids, "Paid commit"),
        id_of(&ids, "Late credit"),
    );
    assert_eq!(
        lines(&inv),
        vec![
            l("usage", "5", "100", "500", free),
            l("applied_commit_or_credit", "-", "-", "-500", free),
            l("usage", "20", "100", "2000", paid),
            l("applied_commit_or_credit", "-", "-", "-2000", paid),
            l("usage", "5", "100", "500", late),
            l("applied_commit_or_credit", "-", "-", "-500", late),
        ]
    );
    assert_eq!(num(&inv["total"]), "0");
    assert_eq!(s.net(&app, json!({})).await, "500");
    assert_eq!(
        s.net(
            &app,
            json!({ "filters": [{ "balance_types": ["PREPAID_COMMIT"] }] })
        )
        .await,
        "0"
    );
    assert_eq!(
        s.net(&app, json!({ "filters": [{ "ids": [late] }] })).await,
        "500"
    );
}

/// Finalization writes the ledger once (two finalizers, and a job pass run again), the next
/// period draws on what is left, and voiding gives back what an invoice drew.
async fn finalization_writes_the_ledger_once(backend: Backend) {
    let app = TestApp::on_backend(NOW, backend).await;
    let s = Setup::new(&app).await;
    let k = s
        .contract(&app, json!({ "credits": [s.credit("Credit", "5000", 1)] }))
        .await;
    let ids = s.ids(&app, &k).await;
    let credit = id_of(&ids, "Credit").to_string();
    s.events(&app, "c", &[("2024-11-10T00:00:00Z", "30")]).await;
    app.set_now("2024-12-02T01:00:00Z");
    // Two replicas finalize at once, each several times; then a job pass runs again.
    let replica = app.replica().await;
    let contract: Contract = load(&app.state.stores, SBX, kind::CONTRACT, &k, "contract")
        .await
        .unwrap();
    let finalize = |st: AppState| {
        let contract = contract.clone();
        async move {
            let mut won = 0;
            for _ in 0..3 {
                won += finalize_due(&st, SBX, &contract).await.unwrap();
            }
            won
        }
    };
    let (a, b) = tokio::join!(finalize(app.state.clone()), finalize(replica));
    assert_eq!(a + b, 1, "one finalizer wins November");
    app.run_jobs().await;
    let ledger = app
        .state
        .stores
        .ledger
        .customer_ledger(SBX, &s.customer)
        .await
        .unwrap();
    assert_eq!(ledger.len(), 1, "{ledger:?}");
    assert_eq!(ledger[0].amount, "-3000".parse().unwrap());
    let nov = s.invoice(&app, &k, START).await;
    assert_eq!(text(&nov, "status"), "FINALIZED");
    assert_eq!(num(&nov["total"]), "0");
    assert_eq!(
        s.net(&app, json!({ "invoice_inclusion_mode": "FINALIZED" }))
            .await,
        "2000"
    );
    // December: 30 more units, 2,000 left → 20 covered, 10 billed.
    s.events(&app, "d", &[("2024-12-01T05:00:00Z", "30")]).await;
    let dec_inv = s.invoice(&app, &k, DEC).await;
    assert_eq!(
        lines(&dec_inv),
        vec![
            l("usage", "20", "100", "2000", &credit),
            l("applied_commit_or_credit", "-", "-", "-2000", &credit),
            l("usage", "10", "100", "1000", "-"),
        ]
    );
    assert_eq!(s.net(&app, json!({})).await, "0");
    // Voiding November gives its 3,000 back: the December draft now covers all 30.
    app.post("/v1/invoices/void", json!({ "id": nov["id"] }))
        .await
        .expect(StatusCode::OK);
    assert_eq!(num(&s.invoice(&app, &k, DEC).await["total"]), "0");
    assert_eq!(s.net(&app, json!({})).await, "2000");
    // Regenerating November re-rates it with the credit as it stands now: it is first in burn
    // order (it ends before December), so it draws the 3,000 again, once, and December is back
    // to 20 covered and 10 billed.
    let regen = app
        .post("/v1/invoices/regenerate", json!({ "id": nov["id"] }))
        .await
        .id();
    assert_ne!(regen, text(&nov, "id"));
    let invoice = app
        .get(&format!("/v1/customers/{}/invoices/{regen}", s.customer))
        .await
        .data();
    assert_eq!(text(&invoice, "status"), "FINALIZED");
    assert_eq!(invoice["regenerated_from_invoice_id"], nov["id"]);
    assert_eq!(
        lines(&invoice),
        vec![
            l("usage", "30", "100", "3000", &credit),
            l("applied_commit_or_credit", "-", "-", "-3000", &credit),
        ]
    );
    app.run_jobs().await;
    let ledger = app
        .state
        .stores
        .ledger
        .customer_ledger(SBX, &s.customer)
        .await
        .unwrap();
    let counted: Vec<_> = ledger
        .iter()
        .filter(|e| e.invoice_id.as_deref() == Some(regen.as_str()))
        .collect();
    assert_eq!(counted.len(), 1, "{ledger:?}");
    assert_eq!(counted[0].amount, "-3000".parse().unwrap());
    assert_eq!(num(&s.invoice(&app, &k, DEC).await["total"]), "1000");
    assert_eq!(s.net(&app, json!({})).await, "0");
    assert_eq!(
        s.net(&app, json!({ "invoice_inclusion_mode": "FINALIZED" }))
            .await,
        "2000"
    );
}

/// A postpaid commit: applied lines are shown but do not lower the total; the true-up on the
/// invoice of its date bills what was not consumed.
async fn postpaid_commit_trues_up(backend: Backend) {
    let app = TestApp::on_backend(NOW, backend).await;
    let s = Setup::new(&app).await;
    let post = json!({ "product_id": s.fixed, "type": "POSTPAID", "name": "Minimum",
        "access_schedule": Setup::access("10000", START, JAN),
        "invoice_schedule": { "schedule_items": [{ "timestamp": JAN, "amount": 10000 }] } });
    let k = s.contract(&app, json!({ "commits": [post] })).await;
    let m = id_of(&s.ids(&app, &k).await, "Minimum").to_string();
    s.events(&app, "e", &[("2024-11-10T00:00:00Z", "30")]).await;
    let nov = s.invoice(&app, &k, START).await;
    assert_eq!(
        lines(&nov),
        vec![
            l("usage", "30", "100", "3000", &m),
            l("applied_commit_or_credit", "-", "-", "-3000", &m),
        ]
    );
    assert_eq!(num(&nov["total"]), "3000");
    app.set_now("2024-12-20T00:00:00Z");
    s.events(&app, "f", &[("2024-12-10T00:00:00Z", "20")]).await;
    let dec_inv = s.invoice(&app, &k, DEC).await;
    assert_eq!(
        lines(&dec_inv),
        vec![
            l("usage", "20", "100", "2000", &m),
            l("applied_commit_or_credit", "-", "-", "-2000", &m),
            l("postpaid_trueup", "1", "5000", "5000", &m),
        ]
    );
    assert_eq!(num(&dec_inv["total"]), "7000");
}

/// COMMIT_RATE: covered units are priced at the rate's commit rate (80), the rest at list (100).
async fn commit_rate_prices_the_covered_units(backend: Backend) {
    let app = TestApp::on_backend(NOW, backend).await;
    let s = Setup::new(&app).await;
    let mut commit = s.prepaid("At commit rate", "4000", 1);
    commit["rate_type"] = json!("COMMIT_RATE");
    let k = s.contract(&app, json!({ "commits": [commit] })).await;
    let c = id_of(&s.ids(&app, &k).await, "At commit rate").to_string();
    s.events(&app, "f", &[("2024-11-10T00:00:00Z", "60")]).await;
    let inv = s.invoice(&app, &k, START).await;
    assert_eq!(
        lines(&inv),
        vec![
            l("usage", "50", "80", "4000", &c),
            l("applied_commit_or_credit", "-", "-", "-4000", &c),
            l("usage", "10", "100", "1000", "-"),
        ]
    );
    assert_eq!(
        (num(&inv["total"]), num(&inv["subtotal"])),
        ("1000".into(), "5000".into())
    );
}

/// Manual entries: 30 at once all land, the balance is their sum, and bad ones change nothing.
async fn manual_entries_all_land(backend: Backend) {
    let app = Arc::new(TestApp::on_backend(NOW, backend).await);
    let s = Setup::new(&app).await;
    let k = s
        .contract(&app, json!({ "credits": [s.credit("Credit", "1000", 1)] }))
        .await;
    let ids = s.ids(&app, &k).await;
    let (credit, seg) = (id_of(&ids, "Credit"), segment_of(&ids, "Credit"));
    let entry = |amount: &str| {
        json!({ "customer_id": s.customer, "id": credit, "segment_id": seg,
                "amount": dec(amount), "reason": "goodwill" })
    };
    let requests = (0..30)
        .map(|_| {
            (
                "/v1/contracts/addManualBalanceLedgerEntry".to_string(),
                entry("33.333"),
            )
        })
        .collect();
    for r in all_at_once(&app, requests).await {
        r.expect(StatusCode::OK);
    }
    assert_eq!(s.net(&app, json!({})).await, "1999.99");
    for bad in [
        json!({ "customer_id": s.customer, "id": credit, "segment_id": "nope", "amount": 1, "reason": "x" }),
        json!({ "customer_id": s.customer, "id": "nope", "segment_id": seg, "amount": 1, "reason": "x" }),
        json!({ "customer_id": s.customer, "id": credit, "segment_id": seg, "amount": 1, "reason": " " }),
        json!({ "customer_id": s.customer, "id": credit, "segment_id": seg, "amount": 1.5 }),
    ] {
        let r = app
            .post("/v1/contracts/addManualBalanceLedgerEntry", bad)
            .await;
        assert!(r.status.is_client_error(), "{:?}", r.body);
    }
    assert_eq!(s.net(&app, json!({})).await, "1999.99");
    // 25 units at 100 draw 2,500 of the 1,999.99: 19.9999 units covered.
    s.events(&app, "g", &[("2024-11-10T00:00:00Z", "25")]).await;
    let inv = s.invoice(&app, &k, START).await;
    assert_eq!(num(&inv["total"]), "500.01");
    assert_eq!(num(&inv["line_items"][0]["quantity"]), "19.9999");
    assert_eq!(s.net(&app, json!({})).await, "0");
}

/// An amendment adds a credit, which the open draft draws on at once; an edit archives it and
/// the draft is back to its list total; a finalized invoice never changes.
async fn amendments_add_and_archive_credits(backend: Backend) {
    let app = TestApp::on_backend(NOW, backend).await;
    let s = Setup::new(&app).await;
    let k = s.contract(&app, json!({})).await;
    s.events(&app, "h", &[("2024-11-10T00:00:00Z", "30")]).await;
    assert_eq!(num(&s.invoice(&app, &k, START).await["total"]), "3000");
    let body = json!({ "customer_id": s.customer, "contract_id": k, "starting_at": START,
                       "credits": [s.credit("Goodwill", "1000.5", 1)] });
    app.post("/v1/contracts/amend", body)
        .await
        .expect(StatusCode::OK);
    let ids = s.ids(&app, &k).await;
    let goodwill = id_of(&ids, "Goodwill").to_string();
    let inv = s.invoice(&app, &k, START).await;
    assert_eq!(
        lines(&inv),
        vec![
            l("usage", "10.005", "100", "1000.5", &goodwill),
            l("applied_commit_or_credit", "-", "-", "-1000.5", &goodwill),
            l("usage", "19.995", "100", "1999.5", "-"),
        ]
    );
    assert_eq!(num(&inv["total"]), "1999.5");
    // v1 shows the credit in `current` and in the amendment, not in `initial`.
    let v1 = app
        .post(
            "/v1/contracts/get",
            json!({ "customer_id": s.customer, "contract_id": k }),
        )
        .await
        .data();
    assert_eq!(v1["initial"]["credits"], json!([]));
    assert_eq!(v1["current"]["credits"][0]["id"], json!(goodwill));
    assert_eq!(v1["amendments"][0]["credits"][0]["id"], json!(goodwill));
    // A bad credit changes nothing.
    let bad = json!({ "customer_id": s.customer, "contract_id": k,
                      "add_credits": [{ "product_id": s.fixed, "priority": 1 }] });
    let r = app.post("/v2/contracts/edit", bad).await;
    assert!(
        r.message().contains("add_credits[0].access_schedule"),
        "{}",
        r.message()
    );
    assert_eq!(s.ids(&app, &k).await.len(), 1);
    // Archived: the draft bills the list price again.
    let archive = json!({ "customer_id": s.customer, "contract_id": k,
                          "archive_credits": [{ "id": goodwill }] });
    app.post("/v2/contracts/edit", archive.clone())
        .await
        .expect(StatusCode::OK);
    assert_eq!(num(&s.invoice(&app, &k, START).await["total"]), "3000");
    let again = app.post("/v2/contracts/edit", archive).await;
    assert!(
        again.message().contains("archived already"),
        "{}",
        again.message()
    );
}

/// Commit-specific overrides: a MULTIPLIER naming credit A by its `temporary_id` prices only
/// A's draws (100 × 0.5 = 50); commit B draws at list; the rest is billed at list. A `target:
/// COMMIT_RATE` override halves a COMMIT_RATE commit's rate (80 → 40). An edit names an
/// existing commit by id; an amendment names one it adds by temporary id.
async fn commit_specific_overrides_price_only_their_draws(backend: Backend) {
    let app = TestApp::on_backend(NOW, backend).await;
    let s = Setup::new(&app).await;
    let mut a = s.credit("A", "2000", 1);
    a["temporary_id"] = json!("credit-a");
    let half_for_a = json!({
        "starting_at": START, "type": "MULTIPLIER", "multiplier": 0.5, "is_commit_specific": true,
        "override_specifiers": [{ "product_id": s.calls, "commit_ids": ["credit-a"] }],
    });
    let k = s
        .contract(
            &app,
            json!({ "credits": [a], "commits": [s.prepaid("B", "1000", 2)],
                    "overrides": [half_for_a] }),
        )
        .await;
    let ids = s.ids(&app, &k).await;
    let (a, b) = (id_of(&ids, "A"), id_of(&ids, "B"));
    // 80 units: A 2000 / 50 = 40 units; B 1000 / 100 = 10; 30 × 100 = 3000 left.
    s.events(&app, "cs", &[("2024-11-10T00:00:00Z", "80")])
        .await;
    let inv = s.invoice(&app, &k, START).await;
    assert_eq!(
        lines(&inv),
        vec![
            l("usage", "40", "50", "2000", a),
            l("applied_commit_or_credit", "-", "-", "-2000", a),
            l("usage", "10", "100", "1000", b),
            l("applied_commit_or_credit", "-", "-", "-1000", b),
            l("usage", "30", "100", "3000", "-"),
        ]
    );
    assert_eq!(
        (num(&inv["total"]), num(&inv["subtotal"])),
        ("3000".into(), "6000".into())
    );
    // Read back: the override names A by its id, not the temporary one.
    let v2 = app
        .post(
            "/v2/contracts/get",
            json!({ "customer_id": s.customer, "contract_id": k }),
        )
        .await
        .data();
    let o = &v2["overrides"][0];
    assert_eq!(o["is_commit_specific"], true);
    assert_eq!(o["override_specifiers"][0]["commit_ids"], json!([a]));

    // An edit adds a COMMIT_RATE-target override naming B by id; B is LIST_RATE, so nothing
    // changes; an amendment adds a COMMIT_RATE commit C (temporary id) and halves its rate.
    let b_commit_rate = json!({
        "starting_at": START, "type": "MULTIPLIER", "multiplier": 0.5, "is_commit_specific": true,
        "target": "COMMIT_RATE",
        "override_specifiers": [{ "product_id": s.calls, "commit_ids": [b] }],
    });
    app.post(
        "/v2/contracts/edit",
        json!({ "customer_id": s.customer, "contract_id": k, "add_overrides": [b_commit_rate] }),
    )
    .await
    .expect(StatusCode::OK);
    assert_eq!(num(&s.invoice(&app, &k, START).await["total"]), "3000");
    let mut c = s.prepaid("C", "1000", 3);
    c["rate_type"] = json!("COMMIT_RATE");
    c["temporary_id"] = json!("commit-c");
    let c_commit_rate = json!({
        "starting_at": START, "type": "OVERWRITE", "is_commit_specific": true,
        "target": "COMMIT_RATE", "overwrite_rate": { "rate_type": "FLAT", "price": 40 },
        "override_specifiers": [{ "product_id": s.calls, "commit_ids": ["commit-c"] }],
    });
    app.post(
        "/v1/contracts/amend",
        json!({ "customer_id": s.customer, "contract_id": k, "starting_at": START,
                "commits": [c], "overrides": [c_commit_rate] }),
    )
    .await
    .expect(StatusCode::OK);
    let ids = s.ids(&app, &k).await;
    let c = id_of(&ids, "C");
    // The 30 units left: C draws at 40 (overwrite of its commit rate 80): 1000 / 40 = 25
    // units; 5 × 100 = 500 left. Subtotal 2000 + 1000 + 1000 + 500 = 4500, total 500.
    let inv = s.invoice(&app, &k, START).await;
    assert_eq!(
        lines(&inv)[4..],
        [
            l("usage", "25", "40", "1000", c),
            l("applied_commit_or_credit", "-", "-", "-1000", c),
            l("usage", "5", "100", "500", "-"),
        ]
    );
    assert_eq!(
        (num(&inv["total"]), num(&inv["subtotal"])),
        ("500".into(), "4500".into())
    );
    // A name that is no balance of the contract is a 400 and changes nothing.
    let r = app
        .post(
            "/v2/contracts/edit",
            json!({ "customer_id": s.customer, "contract_id": k, "add_overrides": [{
                "starting_at": START, "type": "MULTIPLIER", "multiplier": 0.1,
                "is_commit_specific": true,
                "override_specifiers": [{ "product_id": s.calls, "any_commit_or_credit_ids": ["zz"] }],
            }] }),
        )
        .await
        .client_error(StatusCode::BAD_REQUEST);
    assert!(
        r.message()
            .contains("add_overrides[0].override_specifiers[0].any_commit_or_credit_ids: zz"),
        "{}",
        r.message()
    );
    assert_eq!(num(&s.invoice(&app, &k, START).await["total"]), "500");
}

/// A prepaid commit paid by a `recurring_schedule`: 1000 DIVIDED_ROUNDED monthly over three
/// months is 333, 333, 334 at 11-01, 12-01, 01-01 (the last takes the rest); the item due by now
/// (11-01) is a SCHEDULED invoice of 333. Bad schedules are 400s that store nothing.
async fn recurring_invoice_schedules_expand_into_items(backend: Backend) {
    let app = TestApp::on_backend(NOW, backend).await;
    let s = Setup::new(&app).await;
    let commit = |schedule: Value| {
        json!({ "product_id": s.fixed, "type": "PREPAID", "name": "Paid monthly", "priority": 1,
                "access_schedule": Setup::access("1000", START, YEAR),
                "invoice_schedule": schedule })
    };
    let recurring = |distribution: &str, from: &str| {
        json!({ "recurring_schedule": { "amount_distribution": distribution,
                "frequency": "MONTHLY", "starting_at": from,
                "ending_before": "2025-02-01T00:00:00Z", "amount": 1000 } })
    };
    let k = s
        .contract(
            &app,
            json!({ "commits": [commit(recurring("DIVIDED_ROUNDED", START))] }),
        )
        .await;
    assert_eq!(
        s.invoice_items(&app, &k).await,
        [
            (START.to_string(), "333".to_string()),
            (DEC.to_string(), "333".to_string()),
            (JAN.to_string(), "334".to_string()),
        ]
    );
    let scheduled: Vec<Value> = app
        .invoices(SBX, &s.customer, "")
        .await
        .into_iter()
        .filter(|i| i["type"] == "SCHEDULED")
        .collect();
    assert_eq!(scheduled.len(), 1, "{scheduled:?}");
    assert_eq!(num(&scheduled[0]["total"]), "333");
    assert_eq!(scheduled[0]["line_items"][0]["type"], "commit_purchase");
    // EACH: 1000 at each of the three months.
    let each = s
        .contract(
            &app,
            json!({ "commits": [commit(recurring("EACH", START))] }),
        )
        .await;
    let amounts: Vec<String> = s
        .invoice_items(&app, &each)
        .await
        .into_iter()
        .map(|(_, amount)| amount)
        .collect();
    assert_eq!(amounts, ["1000", "1000", "1000"]);
    let before = app
        .post("/v1/contracts/list", json!({ "customer_id": s.customer }))
        .await
        .data();
    let mut both = recurring("DIVIDED", START);
    both["schedule_items"] = json!([{ "timestamp": START, "amount": 1 }]);
    let cases = [
        (
            recurring("DIVIDED", "2024-11-01T00:30:00Z"),
            "commits[0].invoice_schedule.recurring_schedule.starting_at",
        ),
        (
            both,
            "commits[0].invoice_schedule.recurring_schedule: give schedule_items or recurring_schedule, not both",
        ),
        (
            json!({ "recurring_schedule": { "amount_distribution": "EACH", "frequency": "MONTHLY",
                    "starting_at": START, "ending_before": START, "amount": 1 } }),
            "commits[0].invoice_schedule.recurring_schedule.ending_before: must be after starting_at",
        ),
        (
            json!({ "recurring_schedule": { "amount_distribution": "EACH", "frequency": "MONTHLY",
                    "starting_at": START, "ending_before": "2040-01-01T00:00:00Z", "amount": 1 } }),
            "at most 100 items",
        ),
        (
            json!({ "recurring_schedule": { "amount_distribution": "EACH", "frequency": "MONTHLY",
                    "starting_at": START, "ending_before": JAN, "unit_price": 1 } }),
            "commits[0].invoice_schedule.recurring_schedule.amount: give amount, or both",
        ),
    ];
    for (schedule, want) in cases {
        let body = json!({ "customer_id": s.customer, "rate_card_id": s.card,
                           "starting_at": START, "commits": [commit(schedule.clone())] });
        let r = app
            .post("/v1/contracts/create", body)
            .await
            .client_error(StatusCode::BAD_REQUEST);
        assert!(r.message().contains(want), "{schedule}: {}", r.message());
    }
    let after = app
        .post("/v1/contracts/list", json!({ "customer_id": s.customer }))
        .await
        .data();
    assert_eq!(before, after, "a refused create stored something");
}

both_backends!(
    prepaid_commit_covers_the_first_units,
    balances_burn_in_the_documented_order,
    finalization_writes_the_ledger_once,
    postpaid_commit_trues_up,
    commit_rate_prices_the_covered_units,
    manual_entries_all_land,
    amendments_add_and_archive_credits,
    commit_specific_overrides_price_only_their_draws,
    recurring_invoice_schedules_expand_into_items,
);
