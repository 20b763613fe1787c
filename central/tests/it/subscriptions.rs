//! Subscriptions through the HTTP API (issue 12 item 2): SUBSCRIPTION products priced by a
//! rate for their billing frequency; contract `subscriptions` charged per billing period
//! (ADVANCE at the start, ARREARS at the end), prorated for partial periods and mid-period
//! increases, decreases waiting for the next period; `add_subscriptions` and
//! `update_subscriptions` edits (also dozens at once); `getSubscriptionQuantityHistory`; bad
//! input refused with nothing stored. Hand-computed numbers, on both backends.
//!
//! Setup as `balances` (monthly contracts from 2024-11-01, the clock on 11-25), plus a
//! SUBSCRIPTION product `Seats` at 3000 MONTHLY and 30000 ANNUAL.

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::balances::{l, lines, Setup, DEC, JAN, NOW, SBX, START};
use crate::store_conformance::Backend;
use crate::support::*;

struct Seats {
    s: Setup,
    seats: String,
}

async fn setup(app: &TestApp) -> Seats {
    let s = Setup::new(app).await;
    let seats = app
        .post(
            "/v1/contract-pricing/products/create",
            json!({ "name": "Seats", "type": "SUBSCRIPTION" }),
        )
        .await
        .id();
    for (frequency, price) in [("MONTHLY", 3000), ("ANNUAL", 30000)] {
        app.post(
            "/v1/contract-pricing/rate-cards/addRate",
            json!({ "rate_card_id": s.card, "product_id": seats, "starting_at": START,
                    "entitled": true, "rate_type": "SUBSCRIPTION", "price": price,
                    "billing_frequency": frequency, "is_prorated": true }),
        )
        .await
        .expect(StatusCode::OK);
    }
    Seats { s, seats }
}

impl Seats {
    fn sub(&self, extra: Value) -> Value {
        let mut v = json!({
            "collection_schedule": "ADVANCE",
            "proration": { "is_prorated": true },
            "subscription_rate": { "billing_frequency": "MONTHLY", "product_id": self.seats },
            "initial_quantity": 5,
        });
        merge(&mut v, extra);
        v
    }

    async fn edit(&self, app: &TestApp, contract: &str, extra: Value) -> Resp {
        let mut body = json!({ "customer_id": self.s.customer, "contract_id": contract });
        merge(&mut body, extra);
        app.post("/v2/contracts/edit", body).await
    }
}

/// The subscription lines of an invoice.
fn sub_lines(inv: &Value) -> Vec<[String; 5]> {
    lines(inv)
        .into_iter()
        .filter(|l| l[0] == "subscription")
        .collect()
}

/// ADVANCE, monthly, from 11-11 (20 of November's 30 days): 3000 × 20/30 = 2000 a seat, 5 seats
/// 10000. +3 seats from 11-21 (10 days left): 3 × 1000. −2 from 11-26 changes nothing in
/// November; December charges the 6 seats at its start: 18000.
async fn advance_subscription_prorates_and_bills_increases(backend: Backend) {
    let app = TestApp::on_backend(NOW, backend).await;
    let x = setup(&app).await;
    let k =
        x.s.contract(
            &app,
            json!({ "subscriptions": [x.sub(json!({ "starting_at": "2024-11-11T00:00:00Z",
                                                   "name": "Team seats" }))] }),
        )
        .await;
    let c = x.s.v2(&app, &k).await;
    let sub = &c["subscriptions"][0];
    let sub_id = text(sub, "id").to_string();
    assert_eq!(sub["collection_schedule"], "ADVANCE", "{sub}");
    assert_eq!(sub["quantity_management_mode"], "QUANTITY_ONLY");
    assert_eq!(sub["proration"]["invoice_behavior"], "BILL_IMMEDIATELY");
    assert_eq!(sub["subscription_rate"]["product"]["name"], "Seats");
    assert_eq!(
        sub["billing_cycle_config"]["invoice_placement"],
        "ON_USAGE_INVOICE"
    );
    assert_eq!(sub["billing_cycle_config"]["anchor_date"], START);
    assert_eq!(
        sub["billing_periods"]["current"]["starting_at"],
        "2024-11-11T00:00:00Z"
    );
    assert_eq!(sub["billing_periods"]["current"]["ending_before"], DEC);
    assert_eq!(sub["billing_periods"]["next"]["starting_at"], DEC);
    assert_eq!(sub["quantity_schedule"][0]["quantity"], 5);

    let nov = x.s.invoice(&app, &k, START).await;
    assert_eq!(
        sub_lines(&nov),
        [l("subscription", "5", "2000", "10000", "-")]
    );
    let line = nov["line_items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["type"] == "subscription")
        .unwrap()
        .clone();
    assert_eq!(line["subscription_id"], sub_id.as_str());
    assert_eq!(line["is_prorated"], true);
    assert_eq!(line["name"], "Team seats");
    assert_eq!(line["starting_at"], "2024-11-11T00:00:00Z");

    x.edit(
        &app,
        &k,
        json!({ "update_subscriptions": [{ "subscription_id": sub_id, "quantity_updates": [
            { "starting_at": "2024-11-21T00:00:00Z", "quantity_delta": 3 },
            { "starting_at": "2024-11-26T00:00:00Z", "quantity": 6 },
        ] }] }),
    )
    .await
    .expect(StatusCode::OK);
    let nov = x.s.invoice(&app, &k, START).await;
    assert_eq!(
        sub_lines(&nov),
        [
            l("subscription", "5", "2000", "10000", "-"),
            l("subscription", "3", "1000", "3000", "-"),
        ]
    );
    assert_eq!(num(&nov["total"]), "13000");
    // The schedule shows the quantity now (11-25: 8) and the change to come.
    let c = x.s.v2(&app, &k).await;
    let schedule: Vec<(String, String)> = c["subscriptions"][0]["quantity_schedule"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| (num(&q["quantity"]), text(q, "starting_at").to_string()))
        .collect();
    assert_eq!(
        schedule,
        [
            ("8".to_string(), "2024-11-21T00:00:00Z".to_string()),
            ("6".to_string(), "2024-11-26T00:00:00Z".to_string())
        ]
    );
    // History: up to now only (the 11-26 change is in the future).
    let h = app
        .post(
            "/v1/contracts/getSubscriptionQuantityHistory",
            json!({ "customer_id": x.s.customer, "contract_id": k, "subscription_id": sub_id }),
        )
        .await
        .data();
    let history: Vec<(String, String, String, String)> = h["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let d = &e["data"][0];
            (
                text(e, "starting_at").to_string(),
                num(&d["quantity"]),
                num(&d["unit_price"]),
                num(&d["total"]),
            )
        })
        .collect();
    assert_eq!(
        history,
        [
            (
                "2024-11-11T00:00:00Z".into(),
                "5".into(),
                "3000".into(),
                "15000".into()
            ),
            (
                "2024-11-21T00:00:00Z".into(),
                "8".into(),
                "3000".into(),
                "24000".into()
            ),
        ]
    );

    // December: 6 seats in full, on December's draft; November's finalizes after its grace.
    app.set_now("2024-12-02T01:00:00Z");
    app.run_jobs().await;
    let dec = x.s.invoice(&app, &k, DEC).await;
    assert_eq!(
        sub_lines(&dec),
        [l("subscription", "6", "3000", "18000", "-")]
    );
    let nov = x.s.invoice(&app, &k, START).await;
    assert_eq!(nov["status"], "FINALIZED");
    assert_eq!(num(&nov["total"]), "13000");
}

/// ARREARS on SCHEDULED invoices: November's charge (4 seats, full month, 12000) is on the
/// SCHEDULED invoice of 12-01, not on the usage invoice. An ANNUAL subscription added by an
/// edit from 12-01 is on the grid anchored at the contract's 11-01, so its first year
/// [12-01, 2025-11-01) is 335 of 365 days: 30000 × 335/365 = 27534.246575342466 (12 places),
/// charged in advance on December's usage invoice.
async fn arrears_on_scheduled_invoices_and_annual_added_by_edit(backend: Backend) {
    let app = TestApp::on_backend(NOW, backend).await;
    let x = setup(&app).await;
    let k =
        x.s.contract(
            &app,
            json!({ "subscriptions": [x.sub(json!({ "collection_schedule": "ARREARS",
                "initial_quantity": 4,
                "billing_cycle_config": { "invoice_placement": "ON_SCHEDULED_INVOICE" } }))] }),
        )
        .await;
    let nov = x.s.invoice(&app, &k, START).await;
    assert!(sub_lines(&nov).is_empty(), "{nov}");
    let scheduled = |inv: &[Value]| -> Vec<(String, Vec<[String; 5]>)> {
        inv.iter()
            .filter(|i| i["type"] == "SCHEDULED" && i["contract_id"] == k.as_str())
            .map(|i| (text(i, "start_timestamp").to_string(), lines(i)))
            .collect()
    };
    assert!(scheduled(&app.invoices(SBX, &x.s.customer, "").await).is_empty());
    x.edit(
        &app,
        &k,
        json!({ "add_subscriptions": [x.sub(json!({ "starting_at": DEC, "initial_quantity": 1,
            "subscription_rate": { "billing_frequency": "ANNUAL", "product_id": x.seats } }))] }),
    )
    .await
    .expect(StatusCode::OK);
    app.set_now("2024-12-01T01:00:00Z");
    let all = app.invoices(SBX, &x.s.customer, "").await;
    assert_eq!(
        scheduled(&all),
        [(
            DEC.to_string(),
            vec![l("subscription", "4", "3000", "12000", "-")]
        )]
    );
    let dec = x.s.invoice(&app, &k, DEC).await;
    assert_eq!(
        sub_lines(&dec),
        [l(
            "subscription",
            "1",
            "27534.246575342466",
            "27534.246575342466",
            "-"
        )]
    );
    // January's usage invoice has no annual charge.
    app.set_now("2025-01-01T01:00:00Z");
    let jan = x.s.invoice(&app, &k, JAN).await;
    assert!(sub_lines(&jan).is_empty(), "{jan}");
}

/// Refusals: each a 400 naming the field, the contract or card unchanged.
async fn bad_subscriptions_are_refused(backend: Backend) {
    let app = TestApp::on_backend(NOW, backend).await;
    let x = setup(&app).await;
    let create = |sub: Value| {
        json!({ "customer_id": x.s.customer, "rate_card_id": x.s.card, "starting_at": START,
                "subscriptions": [sub] })
    };
    let weekly =
        json!({ "subscription_rate": { "billing_frequency": "WEEKLY", "product_id": x.seats } });
    let usage =
        json!({ "subscription_rate": { "billing_frequency": "MONTHLY", "product_id": x.s.calls } });
    let cases = [
        (x.sub(weekly), "subscriptions[0].subscription_rate: the rate card has no rate"),
        (x.sub(usage), "a SUBSCRIPTION product is required"),
        (x.sub(json!({ "initial_quantity": null })), "subscriptions[0].initial_quantity: required"),
        (x.sub(json!({ "initial_quantity": -1 })), "initial_quantity: must not be negative"),
        (
            x.sub(json!({ "quantity_management_mode": "SEAT_BASED", "initial_quantity": null })),
            "subscriptions[0].seat_config: required with SEAT_BASED",
        ),
        (
            x.sub(json!({ "seat_config": { "seat_group_key": "user", "initial_seat_ids": [] } })),
            "seat_config: only with quantity_management_mode SEAT_BASED",
        ),
        (
            x.sub(json!({ "quantity_management_mode": "SEAT_BASED",
                          "seat_config": { "seat_group_key": "user", "initial_seat_ids": ["a"] } })),
            "initial_quantity: not with SEAT_BASED",
        ),
        (
            x.sub(json!({ "quantity_management_mode": "SEAT_BASED", "initial_quantity": null,
                          "seat_config": { "seat_group_key": "user", "initial_seat_ids": ["a", "a"] } })),
            "seat_config.initial_seat_ids[1]: a is named twice",
        ),
        (
            x.sub(json!({ "quantity_management_mode": "SEAT_BASED", "initial_quantity": null,
                          "seat_config": { "seat_group_key": "user", "initial_seat_ids": [],
                                           "initial_unassigned_seats": 1.5 } })),
            "seat_config.initial_unassigned_seats: must be a whole number",
        ),
        (
            x.sub(json!({ "collection_schedule": "ARREARS",
                          "proration": { "invoice_behavior": "BILL_IMMEDIATELY" } })),
            "BILL_IMMEDIATELY is only available with collection_schedule ADVANCE",
        ),
        (x.sub(json!({ "starting_at": "2024-11-11T00:30:00Z" })), "subscriptions[0].starting_at"),
        (x.sub(json!({ "starting_at": "2024-10-01T00:00:00Z" })), "within the contract"),
        (x.sub(json!({ "collection_schedule": null })), "collection_schedule: required"),
        (x.sub(json!({ "proration": null })), "proration: required"),
        (
            x.sub(json!({ "proration": { "rounding": { "rounding_method": "HALF_UP", "decimal_places": 6 } } })),
            "proration.rounding.decimal_places",
        ),
    ];
    for (sub, want) in cases {
        let r = app
            .post("/v1/contracts/create", create(sub.clone()))
            .await
            .client_error(StatusCode::BAD_REQUEST);
        assert!(r.message().contains(want), "{sub}: {}", r.message());
    }
    let listed = app
        .post("/v1/contracts/list", json!({ "customer_id": x.s.customer }))
        .await
        .data();
    assert_eq!(
        listed.as_array().map(Vec::len),
        Some(0),
        "a refused create stored a contract"
    );

    // Rates of SUBSCRIPTION products need a frequency and a flat price; no other product takes them.
    let rate = |product: &str, extra: Value| {
        let mut v = json!({ "rate_card_id": x.s.card, "product_id": product, "starting_at": START,
                            "entitled": true, "rate_type": "FLAT", "price": 1 });
        merge(&mut v, extra);
        v
    };
    for (body, want) in [
        (rate(&x.seats, json!({})), "billing_frequency is required"),
        (
            rate(
                &x.seats,
                json!({ "rate_type": "TIERED", "billing_frequency": "MONTHLY",
                                   "tiers": [{ "price": 1 }], "price": null }),
            ),
            "not allowed on a SUBSCRIPTION product",
        ),
        (
            rate(&x.s.calls, json!({ "rate_type": "SUBSCRIPTION" })),
            "only for SUBSCRIPTION products",
        ),
        (
            rate(
                &x.seats,
                json!({ "billing_frequency": "MONTHLY", "is_prorated": false }),
            ),
            "is_prorated: must be true",
        ),
    ] {
        let r = app
            .post("/v1/contract-pricing/rate-cards/addRate", body.clone())
            .await
            .client_error(StatusCode::BAD_REQUEST);
        assert!(r.message().contains(want), "{body}: {}", r.message());
    }

    // Updates: a quantity that would go negative, an unknown id, both or neither of quantity
    // and delta, a zero delta; nothing changes.
    let k =
        x.s.contract(&app, json!({ "subscriptions": [x.sub(json!({}))] }))
            .await;
    let before = x.s.v2(&app, &k).await;
    let sub_id = text(&before["subscriptions"][0], "id").to_string();
    let update = |u: Value| json!({ "update_subscriptions": [u] });
    let at = "2024-11-15T00:00:00Z";
    for (body, want) in [
        (
            update(json!({ "subscription_id": sub_id, "quantity_updates": [{ "starting_at": at, "quantity_delta": -6 }] })),
            "update_subscriptions[0].quantity_updates: the subscription's quantity would be negative",
        ),
        (
            update(json!({ "subscription_id": "nope", "quantity_updates": [{ "starting_at": at, "quantity": 1 }] })),
            "update_subscriptions[0].subscription_id: the contract has no subscription nope",
        ),
        (
            update(json!({ "subscription_id": sub_id, "quantity_updates": [{ "starting_at": at, "quantity": 1, "quantity_delta": 1 }] })),
            "exactly one of quantity and quantity_delta",
        ),
        (
            update(json!({ "subscription_id": sub_id, "quantity_updates": [{ "starting_at": at, "quantity_delta": 0 }] })),
            "quantity_delta: must not be zero",
        ),
        (
            update(json!({ "subscription_id": sub_id, "seat_updates": { "add_seat_ids": [] , "add_unassigned_seats": [{ "starting_at": at, "quantity": 1 }] } })),
            "seat_updates: only for a SEAT_BASED subscription",
        ),
    ] {
        let r = x.edit(&app, &k, body.clone()).await.client_error(StatusCode::BAD_REQUEST);
        assert!(r.message().contains(want), "{body}: {}", r.message());
    }
    assert_eq!(
        x.s.v2(&app, &k).await,
        before,
        "a refused edit changed the contract"
    );
}

/// 24 edits at once, each +1 seat at its own hour of 11-20: every acknowledged one is kept
/// (the quantity ends at 5 + 24 = 29), none lost to a concurrent write.
async fn concurrent_quantity_updates_are_all_kept(backend: Backend) {
    let app = std::sync::Arc::new(TestApp::on_backend(NOW, backend).await);
    let x = setup(&app).await;
    let k =
        x.s.contract(&app, json!({ "subscriptions": [x.sub(json!({}))] }))
            .await;
    let c = x.s.v2(&app, &k).await;
    let sub_id = text(&c["subscriptions"][0], "id").to_string();
    let requests = (0..24)
        .map(|h| {
            let at = format!("2024-11-20T{h:02}:00:00Z");
            let body = json!({ "customer_id": x.s.customer, "contract_id": k,
                "update_subscriptions": [{ "subscription_id": sub_id,
                    "quantity_updates": [{ "starting_at": at, "quantity_delta": 1 }] }] });
            ("/v2/contracts/edit".to_string(), body)
        })
        .collect();
    let responses = all_at_once(&app, requests).await;
    assert!(
        responses.iter().all(|r| r.status == StatusCode::OK),
        "{:?}",
        responses.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    let c = x.s.v2(&app, &k).await;
    assert_eq!(
        c["subscriptions"][0]["quantity_schedule"][0]["quantity"], 29,
        "{c}"
    );
    // November: 5 seats in full (15000) + 24 increases of 1 seat, each for the rest of the
    // month from its hour: 264 − h of November's 720 hours, 3000 × (264 − h)/720 each
    // (rounded at 12 places; the roundings cancel over each 6 hours), so
    // Σ = 3000/720 × (24 × 264 − 276) = 3000/720 × 6060 = 25250.
    let nov = x.s.invoice(&app, &k, START).await;
    assert_eq!(num(&nov["total"]), "40250", "{}", nov);
}

/// SEAT_BASED, ADVANCE, prorated, from 11-01: seats a, b, c and 1 unassigned (4: 12000).
/// d on 11-11 fills the unassigned seat (still 4, nothing billed); e and f on 11-16 make 6:
/// 2 × 3000 × 15/30 = 3000; removing a on 11-21 (5) credits nothing; 1 unassigned on 11-26
/// (6) is not above the 6 already charged: November is 15000. December: 6 × 3000 = 18000.
async fn seat_based_subscriptions_count_assigned_and_unassigned_seats(backend: Backend) {
    let app = TestApp::on_backend(NOW, backend).await;
    let x = setup(&app).await;
    let seats = x.sub(
        json!({ "quantity_management_mode": "SEAT_BASED", "initial_quantity": null,
        "seat_config": { "seat_group_key": "user", "initial_seat_ids": ["a", "b", "c"],
                         "initial_unassigned_seats": 1 } }),
    );
    let k =
        x.s.contract(&app, json!({ "subscriptions": [seats] }))
            .await;
    let c = x.s.v2(&app, &k).await;
    let sub = &c["subscriptions"][0];
    assert_eq!(sub["quantity_management_mode"], "SEAT_BASED", "{sub}");
    assert_eq!(sub["seat_config"], json!({ "seat_group_key": "user" }));
    assert_eq!(sub["quantity_schedule"][0]["quantity"], 4);
    let sub_id = text(sub, "id").to_string();
    let change = |ids: &[&str], at: &str| json!({ "seat_ids": ids, "starting_at": at });
    x.edit(
        &app,
        &k,
        json!({ "update_subscriptions": [{ "subscription_id": sub_id, "seat_updates": {
            "add_seat_ids": [change(&["d"], "2024-11-11T00:00:00Z"),
                             change(&["e", "f"], "2024-11-16T00:00:00Z")],
            "remove_seat_ids": [change(&["a", "zz"], "2024-11-21T00:00:00Z")],
            "add_unassigned_seats": [{ "quantity": 1, "starting_at": "2024-11-26T00:00:00Z" }],
        } }] }),
    )
    .await
    .expect(StatusCode::OK);
    let nov = x.s.invoice(&app, &k, START).await;
    assert_eq!(
        sub_lines(&nov),
        [
            l("subscription", "4", "3000", "12000", "-"),
            l("subscription", "2", "1500", "3000", "-"),
        ]
    );
    let c = x.s.v2(&app, &k).await;
    let schedule: Vec<String> = c["subscriptions"][0]["quantity_schedule"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| num(&q["quantity"]))
        .collect();
    assert_eq!(schedule, ["5", "6"], "{c}");
    // Quantity updates do not apply to seats, and vice versa.
    let r = x
        .edit(
            &app,
            &k,
            json!({ "update_subscriptions": [{ "subscription_id": sub_id, "quantity_updates": [
                { "starting_at": "2024-11-27T00:00:00Z", "quantity": 9 }] }] }),
        )
        .await
        .client_error(StatusCode::BAD_REQUEST);
    assert!(r.message().contains("use seat_updates"), "{}", r.message());
    app.set_now("2024-12-02T01:00:00Z");
    let dec = x.s.invoice(&app, &k, DEC).await;
    assert_eq!(
        sub_lines(&dec),
        [l("subscription", "6", "3000", "18000", "-")]
    );
}

both_backends!(
    seat_based_subscriptions_count_assigned_and_unassigned_seats,
    advance_subscription_prorates_and_bills_increases,
    arrears_on_scheduled_invoices_and_annual_added_by_edit,
    bad_subscriptions_are_refused,
    concurrent_quantity_updates_are_all_kept,
);
