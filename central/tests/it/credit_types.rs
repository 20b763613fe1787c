//! Custom pricing units through the HTTP API (issue 12 item 5): credit types created, listed
//! (paged, archived ones left out), archived and refused (409 on a name ever used, 400 on bad
//! ids); rate cards' `credit_type_conversions` (immutable once added); rates, credits and
//! overwrites in a custom unit; a draft drawn down in the unit and converted to USD exactly
//! (hand-computed), on both backends.

use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::balances::{lines, Setup, NOW, SBX, START};
use crate::store_conformance::Backend;
use crate::support::*;

const YEAR: &str = "2025-11-01T00:00:00Z";

async fn create(app: &TestApp, name: &str) -> String {
    app.post("/v1/credit-types/create", json!({ "name": name }))
        .await
        .id()
}

/// `(id, name, is_currency)` of one page, and its `next_page`.
async fn page(app: &TestApp, query: &str) -> (Vec<(String, String, bool)>, Value) {
    let body = app.get(&format!("/v1/credit-types/list{query}")).await;
    let body = body.expect(StatusCode::OK).body;
    let items = body["data"].as_array().expect("data").iter();
    let items = items.map(|c| {
        let currency = c["is_currency"].as_bool().expect("is_currency");
        (
            text(c, "id").to_string(),
            text(c, "name").to_string(),
            currency,
        )
    });
    (items.collect(), body["next_page"].clone())
}

fn usd() -> (String, String, bool) {
    (
        tally_central::model::USD_ID.into(),
        "USD (cents)".into(),
        true,
    )
}

async fn credit_types_are_created_listed_archived_and_refused(backend: Backend) {
    let app = Arc::new(TestApp::on_backend(NOW, backend).await);
    assert_eq!(page(&app, "").await, (vec![usd()], Value::Null));
    let ai = create(&app, "AI credits").await;
    let gpu = create(&app, "GPU hours").await;
    let custom = |id: &str, name: &str| (id.to_string(), name.to_string(), false);
    let all = vec![usd(), custom(&ai, "AI credits"), custom(&gpu, "GPU hours")];
    assert_eq!(page(&app, "").await, (all.clone(), Value::Null));
    // One a page: USD, then each custom unit, then no cursor.
    let mut seen = Vec::new();
    let mut query = "?limit=1".to_string();
    loop {
        let (items, next) = page(&app, &query).await;
        assert_eq!(items.len(), 1);
        seen.extend(items);
        match next.as_str() {
            Some(c) => query = format!("?limit=1&next_page={c}"),
            None => break,
        }
    }
    assert_eq!(seen, all);
    // A name used before (archived or not, or USD's) is a 409; an empty one a 400.
    for name in ["AI credits", "USD (cents)"] {
        let r = app.post("/v1/credit-types/create", json!({ "name": name }));
        let r = r.await.client_error(StatusCode::CONFLICT);
        assert!(r.message().contains("already exists"), "{}", r.message());
    }
    let r = app
        .post("/v1/credit-types/create", json!({ "name": " " }))
        .await;
    assert!(r
        .client_error(StatusCode::BAD_REQUEST)
        .message()
        .contains("name"));
    app.post("/v1/credit-types/archive", json!({ "id": gpu }))
        .await
        .expect(StatusCode::OK);
    app.post("/v1/credit-types/archive", json!({ "id": gpu }))
        .await
        .expect(StatusCode::OK);
    assert_eq!(
        page(&app, "").await.0,
        vec![usd(), custom(&ai, "AI credits")]
    );
    let r = app.post("/v1/credit-types/create", json!({ "name": "GPU hours" }));
    r.await.client_error(StatusCode::CONFLICT);
    let usd_id = tally_central::model::USD_ID;
    let r = app.post("/v1/credit-types/archive", json!({ "id": usd_id }));
    r.await.client_error(StatusCode::BAD_REQUEST);
    let r = app.post("/v1/credit-types/archive", json!({ "id": "nope" }));
    r.await.client_error(StatusCode::NOT_FOUND);
    // Eight concurrent creates of one name store one.
    let requests = (0..8)
        .map(|_| {
            (
                "/v1/credit-types/create".to_string(),
                json!({ "name": "Tokens" }),
            )
        })
        .collect();
    let statuses: Vec<StatusCode> = all_at_once(&app, requests)
        .await
        .into_iter()
        .map(|r| r.status)
        .collect();
    let created = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::CONFLICT)
        .count();
    assert_eq!((created, refused), (1, 7), "{statuses:?}");
    assert_eq!(page(&app, "").await.0.len(), 3);
}

/// A card converting `ai` at `rate`; its id.
async fn card_with(app: &TestApp, ai: &str, rate: &str) -> String {
    let body = json!({ "name": "credits card", "credit_type_conversions": [
        { "custom_credit_type_id": ai, "fiat_per_custom_credit": dec(rate) } ] });
    app.post("/v1/contract-pricing/rate-cards/create", body)
        .await
        .id()
}

async fn card(app: &TestApp, id: &str) -> Value {
    app.post("/v1/contract-pricing/rate-cards/get", json!({ "id": id }))
        .await
        .data()
}

async fn rate_cards_convert_custom_units_and_refuse_what_they_cannot_price(backend: Backend) {
    let app = TestApp::on_backend(NOW, backend).await;
    let s = Setup::new(&app).await;
    let ai = create(&app, "AI credits").await;
    let gpu = create(&app, "GPU hours").await;
    let old = create(&app, "Old").await;
    app.post("/v1/credit-types/archive", json!({ "id": old }))
        .await
        .expect(StatusCode::OK);
    let id = card_with(&app, &ai, "0.333333333333").await;
    let want = json!([{ "custom_credit_type": { "id": ai, "name": "AI credits" },
                        "fiat_per_custom_credit": "0.333333333333" }]);
    assert_eq!(card(&app, &id).await["credit_type_conversions"], want);
    // Refused conversions, naming the field; nothing is stored.
    let usd_id = tally_central::model::USD_ID;
    let conv = |ct: &str, rate: &str| json!({ "custom_credit_type_id": ct, "fiat_per_custom_credit": dec(rate) });
    for (conversions, want_msg) in [
        (
            json!([conv("nope", "1")]),
            "credit_type_conversions[0].custom_credit_type_id: credit type \"nope\" is unknown",
        ),
        (json!([conv(&old, "1")]), "is archived"),
        (json!([conv(usd_id, "1")]), "is fiat"),
        (
            json!([conv(&gpu, "0")]),
            "fiat_per_custom_credit: must be greater than 0",
        ),
        (
            json!([conv(&gpu, "-1")]),
            "fiat_per_custom_credit: must be greater than 0",
        ),
        (
            json!([conv(&gpu, "1"), conv(&gpu, "1")]),
            "[1].custom_credit_type_id: given more",
        ),
    ] {
        let body = json!({ "name": "bad", "credit_type_conversions": conversions });
        let r = app
            .post("/v1/contract-pricing/rate-cards/create", body)
            .await;
        let r = r.client_error(StatusCode::BAD_REQUEST);
        assert!(
            r.message().contains(want_msg),
            "{conversions}: {}",
            r.message()
        );
    }
    // Adding: the same conversion again changes nothing, a changed one is refused, a new one
    // is kept after the first.
    let update =
        |adding: Value| json!({ "rate_card_id": id, "add_credit_type_conversions": adding });
    let path = "/v1/contract-pricing/rate-cards/update";
    app.post(path, update(json!([conv(&ai, "0.333333333333")])))
        .await
        .expect(StatusCode::OK);
    let r = app
        .post(path, update(json!([conv(&gpu, "100"), conv(&ai, "0.5")])))
        .await;
    let r = r.client_error(StatusCode::BAD_REQUEST);
    assert!(r.message().contains("cannot be changed"), "{}", r.message());
    assert_eq!(card(&app, &id).await["credit_type_conversions"], want);
    app.post(path, update(json!([conv(&gpu, "100")])))
        .await
        .expect(StatusCode::OK);
    let got = card(&app, &id).await["credit_type_conversions"].clone();
    assert_eq!(got[1]["custom_credit_type"]["name"], "GPU hours");
    assert_eq!(got[1]["fiat_per_custom_credit"], "100");
    // Once archived, a unit the card converts may still be given again at its rate (100.0 is
    // 100), not at another one.
    app.post("/v1/credit-types/archive", json!({ "id": gpu }))
        .await
        .expect(StatusCode::OK);
    app.post(path, update(json!([conv(&gpu, "100.0")])))
        .await
        .expect(StatusCode::OK);
    let r = app.post(path, update(json!([conv(&gpu, "101")]))).await;
    r.client_error(StatusCode::BAD_REQUEST);
    assert_eq!(card(&app, &id).await["credit_type_conversions"], got);

    // Rates: in a unit the card converts, not in one it does not.
    let rate = |card: &str, ct: &str| {
        json!({ "rate_card_id": card, "product_id": s.calls, "starting_at": START,
                "entitled": true, "rate_type": "FLAT", "price": 2.5, "credit_type_id": ct })
    };
    let added = app
        .post("/v1/contract-pricing/rate-cards/addRate", rate(&id, &ai))
        .await
        .data();
    assert_eq!(
        added["credit_type"],
        json!({ "id": ai, "name": "AI credits" })
    );
    for (card_id, ct, want_msg) in [
        (
            &s.card,
            &ai,
            "credit_type_id: the rate card has no credit_type_conversions entry",
        ),
        (&id, &old, "credit_type_id: credit type"),
        (
            &id,
            &"nope".to_string(),
            "credit_type_id: credit type \"nope\" is unknown",
        ),
    ] {
        let r = app
            .post("/v1/contract-pricing/rate-cards/addRate", rate(card_id, ct))
            .await;
        let r = r.client_error(StatusCode::BAD_REQUEST);
        assert!(r.message().contains(want_msg), "{}", r.message());
    }
    // A credit in an unknown or archived unit, an overwrite in a unit the card does not
    // convert: 400s, no contract.
    let credit = |ct: &str| {
        json!({ "credits": [{ "product_id": s.fixed, "access_schedule": {
            "credit_type_id": ct,
            "schedule_items": [{ "amount": 100, "starting_at": START, "ending_before": YEAR }] } }] })
    };
    let plain = plain_card(&app).await;
    let tpu = create(&app, "TPU hours").await;
    for (extra, want_msg) in [
        (
            credit("nope"),
            "credits[0].access_schedule.credit_type_id: credit type \"nope\" is unknown",
        ),
        (credit(&old), "is archived"),
        (
            json!({ "rate_card_id": plain, "overrides": [{ "product_id": s.calls, "starting_at": START,
                    "type": "OVERWRITE", "overwrite_rate": { "rate_type": "FLAT", "price": 1,
                    "credit_type_id": tpu } }] }),
            "overrides[0].overwrite_rate.credit_type_id: the rate card has no",
        ),
    ] {
        let mut body =
            json!({ "customer_id": s.customer, "rate_card_id": id, "starting_at": START });
        merge(&mut body, extra);
        let r = app.post("/v1/contracts/create", body).await;
        let r = r.client_error(StatusCode::BAD_REQUEST);
        assert!(r.message().contains(want_msg), "{}", r.message());
    }
    let contracts = app
        .post("/v1/contracts/list", json!({ "customer_id": s.customer }))
        .await
        .data();
    assert_eq!(contracts, json!([]));
    // Customer-level credits take custom units too, archived ones not.
    let customer_credit = |ct: &str| {
        json!({ "customer_id": s.customer, "product_id": s.fixed, "priority": 1,
                "access_schedule": { "credit_type_id": ct, "schedule_items": [
                    { "amount": 7.5, "starting_at": START, "ending_before": YEAR }] } })
    };
    let path = "/v1/contracts/customerCredits/create";
    app.post(path, customer_credit(&ai))
        .await
        .expect(StatusCode::OK);
    let r = app.post(path, customer_credit(&old)).await;
    let r = r.client_error(StatusCode::BAD_REQUEST);
    assert!(
        r.message().contains("access_schedule.credit_type_id"),
        "{}",
        r.message()
    );
    let listed = app
        .post(
            "/v1/contracts/customerCredits/list",
            json!({ "customer_id": s.customer }),
        )
        .await
        .data();
    let units: Vec<&Value> = listed
        .as_array()
        .expect("credits")
        .iter()
        .map(|c| &c["access_schedule"]["credit_type"])
        .collect();
    assert_eq!(
        units,
        [&json!({ "id": ai, "name": "AI credits" })],
        "{listed}"
    );
}

/// A card with no conversions; its id.
async fn plain_card(app: &TestApp) -> String {
    app.rate_card(SBX, "plain").await
}

/// 100 calls at 2.5 AI credits = 250; a 100 AI-credit credit covers 100 / 2.5 = 40 calls, the
/// other 60 owe 150 AI credits, converted at 0.333333333333 cents each: 49.99999999995 cents.
/// An OVERWRITE in GPU hours (2 a call at 100 cents) from 11-20 prices 10 more calls: 20 GPU
/// hours = 2000 cents. Total 2049.99999999995.
async fn a_draft_draws_custom_units_and_converts_the_rest_exactly(backend: Backend) {
    let app = TestApp::on_backend(NOW, backend).await;
    let s = Setup::new(&app).await;
    let ai = create(&app, "AI credits").await;
    let gpu = create(&app, "GPU hours").await;
    let id = card_with(&app, &ai, "0.333333333333").await;
    let update = json!({ "rate_card_id": id, "add_credit_type_conversions": [
        { "custom_credit_type_id": gpu, "fiat_per_custom_credit": 100 }] });
    app.post("/v1/contract-pricing/rate-cards/update", update)
        .await
        .expect(StatusCode::OK);
    app.post(
        "/v1/contract-pricing/rate-cards/addRate",
        json!({ "rate_card_id": id, "product_id": s.calls, "starting_at": START,
                "entitled": true, "rate_type": "FLAT", "price": 2.5, "credit_type_id": ai }),
    )
    .await
    .expect(StatusCode::OK);
    let contract = s
        .contract(
            &app,
            json!({ "rate_card_id": id,
                "credits": [{ "product_id": s.fixed, "name": "AI grant", "access_schedule": {
                    "credit_type_id": ai,
                    "schedule_items": [{ "amount": 100, "starting_at": START, "ending_before": YEAR }] } }],
                "overrides": [{ "product_id": s.calls, "starting_at": "2024-11-20T00:00:00Z",
                    "type": "OVERWRITE", "overwrite_rate": { "rate_type": "FLAT", "price": 2,
                    "credit_type_id": gpu } }] }),
        )
        .await;
    s.events(
        &app,
        "cpu",
        &[
            ("2024-11-10T05:00:00Z", "100"),
            ("2024-11-21T05:00:00Z", "10"),
        ],
    )
    .await;
    let inv = s.invoice(&app, &contract, START).await;
    let row =
        |t: &str, q: &str, u: &str, total: &str, id: &str| [t, q, u, total, id].map(String::from);
    let credit = inv["line_items"][1]["applied_commit_or_credit"]["id"]
        .as_str()
        .expect("applied line")
        .to_string();
    assert_eq!(
        lines(&inv),
        vec![
            row("usage", "40", "2.5", "100", &credit),
            row("applied_commit_or_credit", "-", "-", "-100", &credit),
            row("usage", "60", "2.5", "150", "-"),
            row("usage", "10", "2", "20", "-"),
            row(
                "cpu_conversion",
                "150",
                "0.333333333333",
                "49.99999999995",
                "-"
            ),
            row("cpu_conversion", "20", "100", "2000", "-"),
        ],
        "{inv}"
    );
    let names: Vec<&str> = inv["line_items"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|l| l["credit_type"]["name"].as_str().expect("credit type"))
        .collect();
    assert_eq!(
        names,
        [
            "AI credits",
            "AI credits",
            "AI credits",
            "GPU hours",
            "USD (cents)",
            "USD (cents)"
        ]
    );
    let conversion = &inv["line_items"][4];
    assert_eq!(conversion["name"], "AI credits");
    assert!(conversion.get("product_id").is_none(), "{conversion}");
    assert_eq!(inv["credit_type"]["name"], "USD (cents)");
    assert_eq!(num(&inv["subtotal"]), "2049.99999999995");
    assert_eq!(num(&inv["total"]), "2049.99999999995");
    // The rate schedule on 11-21: the list rate in AI credits, the overwrite in GPU hours.
    let schedule = app
        .post(
            "/v1/contracts/getContractRateSchedule",
            json!({ "customer_id": s.customer, "contract_id": contract,
                    "at": "2024-11-21T00:00:00Z" }),
        )
        .await
        .data();
    let rate = &schedule[0];
    assert_eq!(
        rate["list_rate"]["credit_type"]["name"], "AI credits",
        "{schedule}"
    );
    assert_eq!(
        rate["override_rate"]["credit_type"]["name"], "GPU hours",
        "{schedule}"
    );
    assert_eq!(num(&rate["override_rate"]["price"]), "2", "{schedule}");
    // The credit's balance is in AI credits: 100, all of it drawn by the draft; none in USD.
    let net = |ct: &str, mode: &str| json!({ "customer_id": s.customer, "credit_type_id": ct, "invoice_inclusion_mode": mode });
    let path = "/v1/contracts/customerBalances/getNetBalance";
    for (ct, mode, want) in [
        (ai.as_str(), "FINALIZED", "100"),
        (ai.as_str(), "FINALIZED_AND_DRAFT", "0"),
        (tally_central::model::USD_ID, "FINALIZED", "0"),
    ] {
        let got = app.post(path, net(ct, mode)).await.data();
        assert_eq!(num(&got["balance"]), want, "{ct} {mode}: {got}");
    }
}

both_backends!(
    credit_types_are_created_listed_archived_and_refused,
    rate_cards_convert_custom_units_and_refuse_what_they_cannot_price,
    a_draft_draws_custom_units_and_converts_the_rest_exactly,
);
