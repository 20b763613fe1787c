//! Contract transitions (`transition` on contracts/create): a RENEWAL reads back on both
//! contracts, every refusal names its field and creates nothing, a renewed contract's end
//! cannot pass its successor's start, and of creates racing to renew one contract exactly one
//! wins (both backends).
//!
//! Setup: product `Calls` (COUNT of `call`) at 2 cents; customer `acme`; the old contract runs
//! 2024-10-01 → 2024-12-01; the clock on 2024-11-15.

use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::{json, Value};
use tally_central::store::Env;

use crate::store_conformance::Backend;
use crate::support::*;

const SBX: Env = Env::Sandbox;
const OCT: &str = "2024-10-01T00:00:00Z";
const DEC: &str = "2024-12-01T00:00:00Z";
const JAN: &str = "2025-01-01T00:00:00Z";
const NOW: &str = "2024-11-15T00:00:00Z";

/// A customer with a contract `OCT → DEC` on a 2-cent card.
async fn setup(app: &TestApp) -> Billing {
    let b = Billing::count(app, SBX, "call", "2", "acme", OCT).await;
    app.post(
        "/v1/contracts/updateEndDate",
        json!({ "customer_id": b.customer, "contract_id": b.contract, "ending_before": DEC }),
    )
    .await
    .expect(StatusCode::OK);
    b
}

fn renewal(b: &Billing, from: &str, start: &str, extra: Value) -> Value {
    let mut body = json!({
        "customer_id": b.customer, "rate_card_id": b.card, "starting_at": start,
        "ending_before": JAN,
        "transition": { "from_contract_id": from, "type": "RENEWAL" },
    });
    merge(&mut body, extra);
    body
}

async fn get(app: &TestApp, path: &str, customer: &str, contract: &str) -> Value {
    app.post(
        path,
        json!({ "customer_id": customer, "contract_id": contract }),
    )
    .await
    .data()
}

async fn contract_count(app: &TestApp, customer: &str) -> usize {
    let list = app
        .post("/v2/contracts/list", json!({ "customer_id": customer }))
        .await
        .data();
    list.as_array().expect("list").len()
}

#[tokio::test]
async fn a_renewal_reads_back_on_both_contracts() {
    let app = TestApp::new(NOW).await;
    let b = setup(&app).await;
    let new = app
        .post(
            "/v1/contracts/create",
            renewal(
                &b,
                &b.contract,
                DEC,
                json!({ "transition": { "from_contract_id": b.contract, "type": "renewal",
                        "future_invoice_behavior": { "trueup": "AS_IS" } } }),
            ),
        )
        .await
        .id();
    let expected = json!([{ "from_contract_id": b.contract, "to_contract_id": new,
                            "type": "RENEWAL" }]);
    for id in [&b.contract, &new] {
        let v2 = get(&app, "/v2/contracts/get", &b.customer, id).await;
        assert_eq!(v2["transitions"], expected, "v2 {id}");
        let v1 = get(&app, "/v1/contracts/get", &b.customer, id).await;
        assert_eq!(v1["current"]["transitions"], expected, "v1 {id}");
        assert_eq!(v1["initial"]["transitions"], expected, "v1 {id}");
    }
    for path in ["/v1/contracts/list", "/v2/contracts/list"] {
        let list = app
            .post(path, json!({ "customer_id": b.customer }))
            .await
            .data();
        let list = list.as_array().expect("list");
        assert_eq!(list.len(), 2);
        for c in list {
            let t = if path.starts_with("/v2") {
                &c["transitions"]
            } else {
                &c["current"]["transitions"]
            };
            assert_eq!(t, &expected, "{path}");
        }
    }
    // A contract without transitions reads an empty list.
    let other = app.contract(SBX, &b.customer, &b.card, OCT).await;
    let v2 = get(&app, "/v2/contracts/get", &b.customer, &other).await;
    assert_eq!(v2["transitions"], json!([]));
    // A renewal may start after the old end too (a gap is not billed by either).
    let second = app.contract(SBX, &b.customer, &b.card, OCT).await;
    app.post(
        "/v1/contracts/updateEndDate",
        json!({ "customer_id": b.customer, "contract_id": second, "ending_before": DEC }),
    )
    .await
    .expect(StatusCode::OK);
    let later = app
        .post(
            "/v1/contracts/create",
            renewal(&b, &second, "2024-12-15T00:00:00Z", json!({})),
        )
        .await
        .id();
    let v2 = get(&app, "/v2/contracts/get", &b.customer, &later).await;
    assert_eq!(v2["transitions"][0]["from_contract_id"], second);
}

#[tokio::test]
async fn refused_transitions_name_the_field_and_create_nothing() {
    let app = TestApp::new(NOW).await;
    let b = setup(&app).await;
    let open_ended = app.contract(SBX, &b.customer, &b.card, OCT).await;
    let archived = app.contract(SBX, &b.customer, &b.card, OCT).await;
    app.post(
        "/v1/contracts/updateEndDate",
        json!({ "customer_id": b.customer, "contract_id": archived, "ending_before": DEC }),
    )
    .await
    .expect(StatusCode::OK);
    app.post(
        "/v1/contracts/archive",
        json!({ "customer_id": b.customer, "contract_id": archived, "void_invoices": false }),
    )
    .await
    .expect(StatusCode::OK);
    let stranger = app.customer(SBX, "stranger", &[]).await;
    let theirs = app.contract(SBX, &stranger, &b.card, OCT).await;
    let before = contract_count(&app, &b.customer).await;
    let t =
        |from: &str, ty: &str| json!({ "transition": { "from_contract_id": from, "type": ty } });
    let cases: Vec<(Value, &str)> = vec![
        (
            renewal(&b, &b.contract, DEC, t(&b.contract, "SUPERSEDE")),
            "transition.type: SUPERSEDE",
        ),
        (
            renewal(&b, &b.contract, DEC, t(&b.contract, "LATER")),
            "transition.type",
        ),
        (
            renewal(
                &b,
                &b.contract,
                DEC,
                json!({ "transition": { "from_contract_id": b.contract,
                "type": "RENEWAL", "future_invoice_behavior": { "trueup": "SOMETIMES" } } }),
            ),
            "transition.future_invoice_behavior.trueup",
        ),
        (
            renewal(&b, "nope", DEC, t("nope", "RENEWAL")),
            "transition.from_contract_id",
        ),
        (
            renewal(&b, &theirs, DEC, t(&theirs, "RENEWAL")),
            "another customer",
        ),
        (
            renewal(&b, &open_ended, DEC, t(&open_ended, "RENEWAL")),
            "open-ended",
        ),
        (
            renewal(&b, &archived, DEC, t(&archived, "RENEWAL")),
            "archived",
        ),
        // One hour before the old end.
        (
            renewal(
                &b,
                &b.contract,
                "2024-11-30T23:00:00Z",
                t(&b.contract, "RENEWAL"),
            ),
            "starting_at must not be before",
        ),
    ];
    for (body, needle) in cases {
        let r = app
            .post("/v1/contracts/create", body.clone())
            .await
            .client_error(StatusCode::BAD_REQUEST);
        assert!(r.message().contains(needle), "{needle}: {}", r.message());
    }
    assert_eq!(contract_count(&app, &b.customer).await, before);
    // A second renewal of a renewed contract is refused.
    let first = app
        .post(
            "/v1/contracts/create",
            renewal(&b, &b.contract, DEC, json!({})),
        )
        .await
        .id();
    let r = app
        .post(
            "/v1/contracts/create",
            renewal(&b, &b.contract, JAN, json!({ "ending_before": null })),
        )
        .await
        .client_error(StatusCode::BAD_REQUEST);
    assert!(
        r.message().contains("already has a RENEWAL successor"),
        "{}",
        r.message()
    );
    assert!(r.message().contains(&first), "{}", r.message());
    assert_eq!(contract_count(&app, &b.customer).await, before + 1);
}

#[tokio::test]
async fn a_renewed_contract_cannot_end_after_its_successor_starts() {
    let app = TestApp::new(NOW).await;
    let b = setup(&app).await;
    let new = app
        .post(
            "/v1/contracts/create",
            renewal(&b, &b.contract, "2024-12-15T00:00:00Z", json!({})),
        )
        .await
        .id();
    let end = |v: Value| {
        let mut body = json!({ "customer_id": b.customer, "contract_id": b.contract });
        merge(&mut body, v);
        body
    };
    for bad in [
        json!({ "ending_before": "2024-12-15T01:00:00Z" }),
        json!({}),
    ] {
        let r = app
            .post("/v1/contracts/updateEndDate", end(bad))
            .await
            .client_error(StatusCode::BAD_REQUEST);
        assert!(r.message().contains(&new), "{}", r.message());
    }
    let r = app
        .post(
            "/v2/contracts/edit",
            end(json!({ "update_contract_end_date": "2025-02-01T00:00:00Z" })),
        )
        .await
        .client_error(StatusCode::BAD_REQUEST);
    assert!(
        r.message().contains("update_contract_end_date"),
        "{}",
        r.message()
    );
    let old = get(&app, "/v2/contracts/get", &b.customer, &b.contract).await;
    assert_eq!(old["ending_before"], DEC);
    // Up to the successor's start, and earlier, are fine.
    for ok in ["2024-12-15T00:00:00Z", "2024-11-20T00:00:00Z"] {
        app.post(
            "/v1/contracts/updateEndDate",
            end(json!({ "ending_before": ok })),
        )
        .await
        .expect(StatusCode::OK);
        let old = get(&app, "/v2/contracts/get", &b.customer, &b.contract).await;
        assert_eq!(old["ending_before"], ok);
    }
}

async fn racing_renewals_on(backend: Backend) {
    let app = Arc::new(TestApp::on_backend(NOW, backend).await);
    let b = setup(&app).await;
    let requests = (0..8)
        .map(|_| {
            let body = renewal(&b, &b.contract, DEC, json!({}));
            ("/v1/contracts/create".to_string(), body)
        })
        .collect();
    let results = all_at_once(&app, requests).await;
    let won: Vec<String> = results
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .map(|r| text(&r.body["data"], "id").to_string())
        .collect();
    assert_eq!(
        won.len(),
        1,
        "{:?}",
        results.iter().map(|r| &r.body).collect::<Vec<_>>()
    );
    for r in results.iter().filter(|r| r.status != StatusCode::OK) {
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
        assert!(
            r.message().contains("already has a RENEWAL successor"),
            "{}",
            r.body
        );
    }
    // Exactly the old contract and its one successor exist.
    assert_eq!(contract_count(&app, &b.customer).await, 2);
    let old = get(&app, "/v2/contracts/get", &b.customer, &b.contract).await;
    assert_eq!(
        old["transitions"],
        json!([{ "from_contract_id": b.contract, "to_contract_id": won[0], "type": "RENEWAL" }])
    );
}

both_backends!(racing_renewals_on);

/// `n` `call` events for acme at `at` (`tag` keeps transaction ids unique).
async fn calls(app: &TestApp, tag: &str, at: &str, n: usize) {
    let events: Vec<Value> = (0..n)
        .map(|i| event(&format!("{tag}-{i}"), "acme", "call", at, json!({})))
        .collect();
    for chunk in events.chunks(100) {
        let r = app.ingest(SBX, Value::Array(chunk.to_vec())).await;
        assert_eq!(r["accepted"], chunk.len(), "{}", r["rejected"][0]);
    }
}

/// A contract `OCT → DEC` for `b`'s customer with one commit: `extra` merged into a commit
/// of 1000 over the term on a new FIXED product.
async fn contract_with_commit(app: &TestApp, b: &Billing, extra: Value) -> String {
    let fixed = app
        .post(
            "/v1/contract-pricing/products/create",
            json!({ "name": "Commit", "type": "FIXED" }),
        )
        .await
        .id();
    let mut commit = json!({
        "product_id": fixed,
        "access_schedule": { "schedule_items": [
            { "amount": 1000, "starting_at": OCT, "ending_before": DEC },
        ]},
    });
    merge(&mut commit, extra);
    app.post(
        "/v1/contracts/create",
        json!({
            "customer_id": b.customer, "rate_card_id": b.card, "starting_at": OCT,
            "ending_before": DEC, "commits": [commit],
        }),
    )
    .await
    .id()
}

/// The old contract with a free PREPAID commit of 1000 over its term at `fraction`.
async fn setup_with_commit(app: &TestApp, fraction: &str) -> (Billing, String) {
    let b = Billing::count(app, SBX, "call", "2", "acme", OCT).await;
    let commit = json!({ "type": "PREPAID", "name": "Upfront", "priority": 1,
                         "rollover_fraction": dec(fraction) });
    let old = contract_with_commit(app, &b, commit).await;
    (b, old)
}

fn ledger(commit: &Value) -> Vec<(String, String, String)> {
    commit["ledger"]
        .as_array()
        .expect("ledger")
        .iter()
        .map(|e| {
            (
                text(e, "type").to_string(),
                num(&e["amount"]),
                text(e, "timestamp").to_string(),
            )
        })
        .collect()
}

fn entries(list: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    list.iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect()
}

/// The contract's invoice starting at `start`.
async fn contract_invoice(app: &TestApp, customer: &str, contract: &str, start: &str) -> Value {
    let all = app.invoices(SBX, customer, "").await;
    let found: Vec<Value> = all
        .into_iter()
        .filter(|i| i["contract_id"] == contract && i["start_timestamp"] == start)
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    found[0].clone()
}

async fn with_balances(app: &TestApp, customer: &str, contract: &str) -> Value {
    app.post(
        "/v2/contracts/get",
        json!({ "customer_id": customer, "contract_id": contract, "include_balance": true,
                "include_ledgers": true }),
    )
    .await
    .data()
}

/// Old contract Oct–Nov with 1000 at 0.333333: October draws 200 (100 calls at 2), November
/// 100; 700 is left, 233.3331 rolls over (exact), 466.6669 expires. December's 150 calls (300)
/// draw the rolled 233.3331 (116.66655 calls) and bill the other 33.33345 calls: 66.6669.
#[tokio::test]
async fn a_renewal_rolls_over_the_fraction_of_what_is_left() {
    let app = TestApp::new("2024-10-20T00:00:00Z").await;
    let (b, old) = setup_with_commit(&app, "0.333333").await;
    calls(&app, "oct", "2024-10-10T00:00:00Z", 100).await;
    app.set_now("2024-11-20T00:00:00Z");
    let new = app
        .post(
            "/v1/contracts/create",
            renewal(
                &b,
                &old,
                DEC,
                json!({ "ending_before": "2025-02-01T00:00:00Z" }),
            ),
        )
        .await
        .id();
    // Derived on read: with only October's 200 drawn, 800 × 0.333333 = 266.6664.
    let v = with_balances(&app, &b.customer, &new).await;
    let rolled = &v["commits"][0];
    assert_eq!(
        rolled["rolled_over_from"],
        json!({ "commit_id": with_balances(&app, &b.customer, &old).await["commits"][0]["id"], "contract_id": old })
    );
    assert_eq!(
        num(&rolled["access_schedule"]["schedule_items"][0]["amount"]),
        "266.6664"
    );
    assert_eq!(
        rolled["access_schedule"]["schedule_items"][0]["starting_at"],
        DEC
    );
    assert_eq!(
        rolled["access_schedule"]["schedule_items"][0]["ending_before"],
        "2025-02-01T00:00:00Z"
    );
    assert_eq!(rolled["name"], "Upfront");
    assert_eq!(num(&rolled["rollover_fraction"]), "0.333333", "{rolled}");
    assert!(rolled.get("invoice_schedule").is_none(), "{rolled}");
    // November's usage, still on the open draft, lowers it at once.
    calls(&app, "nov", "2024-11-10T00:00:00Z", 50).await;
    let v = with_balances(&app, &b.customer, &new).await;
    assert_eq!(
        num(&v["commits"][0]["access_schedule"]["schedule_items"][0]["amount"]),
        "233.3331"
    );

    app.set_now("2024-12-15T00:00:00Z");
    calls(&app, "dec", "2024-12-10T00:00:00Z", 150).await;
    app.set_now("2025-01-05T00:00:00Z");
    app.run_jobs().await;
    let old_v = with_balances(&app, &b.customer, &old).await;
    assert_eq!(
        ledger(&old_v["commits"][0]),
        entries(&[
            ("PREPAID_COMMIT_SEGMENT_START", "1000", OCT),
            (
                "PREPAID_COMMIT_AUTOMATED_INVOICE_DEDUCTION",
                "-200",
                "2024-11-01T00:00:00Z"
            ),
            ("PREPAID_COMMIT_AUTOMATED_INVOICE_DEDUCTION", "-100", DEC),
            ("PREPAID_COMMIT_ROLLOVER", "-233.3331", DEC),
            ("PREPAID_COMMIT_EXPIRATION", "-466.6669", DEC),
        ])
    );
    assert_eq!(num(&old_v["commits"][0]["balance"]), "0");
    let new_v = with_balances(&app, &b.customer, &new).await;
    let rolled = &new_v["commits"][0];
    assert_eq!(
        ledger(rolled),
        entries(&[
            ("PREPAID_COMMIT_ROLLOVER", "233.3331", DEC),
            (
                "PREPAID_COMMIT_AUTOMATED_INVOICE_DEDUCTION",
                "-233.3331",
                JAN
            ),
        ])
    );
    assert_eq!(num(&rolled["balance"]), "0");
    let dec_invoice = contract_invoice(&app, &b.customer, &new, DEC).await;
    assert_eq!(dec_invoice["status"], "FINALIZED", "{dec_invoice}");
    assert_eq!(num(&dec_invoice["total"]), "66.6669");
    let nov = contract_invoice(&app, &b.customer, &old, "2024-11-01T00:00:00Z").await;
    assert_eq!(num(&nov["total"]), "0");
    // customerBalances/list shows the rolled commit with its amount too.
    let list = app
        .post(
            "/v1/contracts/customerBalances/list",
            json!({ "customer_id": b.customer, "include_contract_balances": true }),
        )
        .await;
    let list = list.body["data"].as_array().expect("data").clone();
    let shown = list
        .iter()
        .find(|c| c["id"] == rolled["id"])
        .expect("rolled listed");
    assert_eq!(
        num(&shown["access_schedule"]["schedule_items"][0]["amount"]),
        "233.3331"
    );
}

#[tokio::test]
async fn nothing_rolls_without_a_fraction_or_with_nothing_left_and_postpaid_is_refused() {
    let app = TestApp::new("2024-10-20T00:00:00Z").await;
    let (b, old) = setup_with_commit(&app, "1").await;
    // 600 calls at 2 = 1200 > 1000: nothing is left, nothing rolls.
    calls(&app, "oct", "2024-10-10T00:00:00Z", 600).await;
    app.set_now("2024-12-05T00:00:00Z");
    let new = app
        .post("/v1/contracts/create", renewal(&b, &old, DEC, json!({})))
        .await
        .id();
    let v = with_balances(&app, &b.customer, &new).await;
    assert_eq!(
        num(&v["commits"][0]["access_schedule"]["schedule_items"][0]["amount"]),
        "0"
    );
    assert_eq!(num(&v["commits"][0]["balance"]), "0");
    // A contract with a commit without a fraction renews with no rolled commit.
    let plain = app.contract(SBX, &b.customer, &b.card, OCT).await;
    app.post(
        "/v1/contracts/updateEndDate",
        json!({ "customer_id": b.customer, "contract_id": plain, "ending_before": DEC }),
    )
    .await
    .expect(StatusCode::OK);
    let renewed = app
        .post("/v1/contracts/create", renewal(&b, &plain, DEC, json!({})))
        .await
        .id();
    let v = with_balances(&app, &b.customer, &renewed).await;
    assert_eq!(v["commits"], json!([]));
    // A POSTPAID commit with a fraction cannot be rolled over.
    let post = contract_with_commit(
        &app,
        &b,
        json!({ "type": "POSTPAID", "rollover_fraction": 0.5,
                "invoice_schedule": { "schedule_items": [
                    { "amount": 1000, "timestamp": "2024-11-30T00:00:00Z" },
                ]} }),
    )
    .await;
    let before = contract_count(&app, &b.customer).await;
    let r = app
        .post("/v1/contracts/create", renewal(&b, &post, DEC, json!({})))
        .await
        .client_error(StatusCode::BAD_REQUEST);
    assert!(r.message().contains("POSTPAID"), "{}", r.message());
    assert_eq!(contract_count(&app, &b.customer).await, before);
}

/// A POSTPAID commit of 1000 over the old contract's term, trued up on 11-30 (November's
/// invoice): October's 100 calls draw 200, so November's draft charges the 800 left. A renewal
/// with `trueup: REMOVE` drops it (November's total 0, the 800 expires at 12-01 instead);
/// October's finalized invoice is unchanged.
#[tokio::test]
async fn a_renewal_with_trueup_remove_drops_the_renewed_contracts_true_up() {
    let app = TestApp::new("2024-10-20T00:00:00Z").await;
    let b = Billing::count(&app, SBX, "call", "2", "acme", OCT).await;
    let old = contract_with_commit(
        &app,
        &b,
        json!({ "type": "POSTPAID", "name": "Minimum",
                "invoice_schedule": { "schedule_items": [
                    { "amount": 1000, "timestamp": "2024-11-30T00:00:00Z" },
                ]} }),
    )
    .await;
    calls(&app, "oct", "2024-10-10T00:00:00Z", 100).await;
    app.set_now("2024-11-20T00:00:00Z");
    app.run_jobs().await;
    const NOV: &str = "2024-11-01T00:00:00Z";
    let before = contract_invoice(&app, &b.customer, &old, NOV).await;
    assert_eq!(num(&before["total"]), "800", "{before}");
    let oct = contract_invoice(&app, &b.customer, &old, OCT).await;
    assert_eq!(
        (oct["status"].as_str(), num(&oct["total"]).as_str()),
        (Some("FINALIZED"), "200")
    );
    app.post(
        "/v1/contracts/create",
        renewal(
            &b,
            &old,
            DEC,
            json!({ "transition": { "from_contract_id": old, "type": "RENEWAL",
                    "future_invoice_behavior": { "trueup": "REMOVE" } } }),
        ),
    )
    .await
    .expect(StatusCode::OK);
    let after = contract_invoice(&app, &b.customer, &old, NOV).await;
    assert_eq!(num(&after["total"]), "0", "{after}");
    assert_eq!(contract_invoice(&app, &b.customer, &old, OCT).await, oct);
    app.set_now("2024-12-05T00:00:00Z");
    app.run_jobs().await;
    let final_nov = contract_invoice(&app, &b.customer, &old, NOV).await;
    assert_eq!(
        (
            final_nov["status"].as_str(),
            num(&final_nov["total"]).as_str()
        ),
        (Some("FINALIZED"), "0")
    );
    let v = with_balances(&app, &b.customer, &old).await;
    assert_eq!(
        ledger(&v["commits"][0]),
        entries(&[
            ("POSTPAID_COMMIT_INITIAL_BALANCE", "1000", OCT),
            (
                "POSTPAID_COMMIT_AUTOMATED_INVOICE_DEDUCTION",
                "-200",
                "2024-11-01T00:00:00Z"
            ),
            ("POSTPAID_COMMIT_EXPIRATION", "-800", DEC),
        ])
    );
}

/// A renewal of a renewal: 1000 at 0.5 with nothing drawn rolls 500 into the first renewal
/// (which keeps the fraction) and 250 from there into the second; each original expires the
/// other half.
#[tokio::test]
async fn a_rolled_commit_rolls_over_again_when_its_contract_is_renewed() {
    let app = TestApp::new("2024-10-20T00:00:00Z").await;
    let (b, first) = setup_with_commit(&app, "0.5").await;
    let second = app
        .post("/v1/contracts/create", renewal(&b, &first, DEC, json!({})))
        .await
        .id();
    let third = app
        .post(
            "/v1/contracts/create",
            renewal(
                &b,
                &second,
                JAN,
                json!({ "ending_before": "2025-02-01T00:00:00Z" }),
            ),
        )
        .await
        .id();
    app.set_now("2025-02-05T00:00:00Z");
    app.run_jobs().await;
    let amount =
        |v: &Value| num(&v["commits"][0]["access_schedule"]["schedule_items"][0]["amount"]);
    let (v2, v3) = (
        with_balances(&app, &b.customer, &second).await,
        with_balances(&app, &b.customer, &third).await,
    );
    assert_eq!(
        (amount(&v2), amount(&v3)),
        ("500".to_string(), "250".to_string())
    );
    assert_eq!(
        ledger(&v2["commits"][0]),
        entries(&[
            ("PREPAID_COMMIT_ROLLOVER", "500", DEC),
            ("PREPAID_COMMIT_ROLLOVER", "-250", JAN),
            ("PREPAID_COMMIT_EXPIRATION", "-250", JAN),
        ])
    );
    assert_eq!(
        ledger(&v3["commits"][0]),
        entries(&[
            ("PREPAID_COMMIT_ROLLOVER", "250", JAN),
            ("PREPAID_COMMIT_EXPIRATION", "-250", "2025-02-01T00:00:00Z"),
        ])
    );
    assert_eq!(
        v3["commits"][0]["rolled_over_from"]["contract_id"],
        second.as_str()
    );
}
