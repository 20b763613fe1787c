//! A rate card's product order (`setRateCardProductsOrder`, `moveRateCardProducts`): invoice
//! lines follow it (and totals never change), refused input changes nothing, and concurrent
//! reorders all land.

use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::{json, Value};
use tally_central::store::Env;

use crate::support::*;

const SBX: Env = Env::Sandbox;
const NOW: &str = "2024-10-15T12:00:00Z";
const FROM: &str = "2024-10-01T00:00:00Z";
const SET: &str = "/v1/contract-pricing/rate-cards/setRateCardProductsOrder";
const MOVE: &str = "/v1/contract-pricing/rate-cards/moveRateCardProducts";
const SCHEDULE: &str = "/v1/contract-pricing/rate-cards/getRateSchedule?limit=100";

/// Three products on one card, added Alpha, Beta, Gamma, all on one COUNT metric grouped by
/// region, and a customer whose October draft has (cents, computed by hand):
/// - Alpha, priced by region: eu 2 calls × 3 = 6, us 3 calls × 1 = 3 (rating lists eu, us);
/// - Beta: 5 calls × 10 = 50;
/// - Gamma, TIERED [2 × 2, then 1]: tier 1 2 × 2 = 4, tier 2 3 × 1 = 3;
/// - total 66.
struct Card {
    card: String,
    alpha: String,
    beta: String,
    gamma: String,
    customer: String,
}

async fn setup(app: &TestApp) -> Card {
    let metric = app
        .metric(
            SBX,
            json!({
                "name": "calls", "aggregation_type": "COUNT",
                "event_type_filter": { "in_values": ["call"] }, "group_keys": [["region"]],
            }),
        )
        .await;
    let regional = json!({ "pricing_group_key": ["region"] });
    let alpha = app.usage_product(SBX, "Alpha", &metric, regional).await;
    let beta = app.usage_product(SBX, "Beta", &metric, Value::Null).await;
    let gamma = app.usage_product(SBX, "Gamma", &metric, Value::Null).await;
    let card = app.rate_card(SBX, "card").await;
    let rate = |product: &str, extra: Value| {
        let mut r = json!({
            "product_id": product, "starting_at": FROM, "entitled": true, "rate_type": "FLAT",
        });
        merge(&mut r, extra);
        r
    };
    app.post(
        "/v1/contract-pricing/rate-cards/addRates",
        json!({ "rate_card_id": card, "rates": [
            rate(&alpha, json!({ "price": 1, "pricing_group_values": { "region": "us" } })),
            rate(&alpha, json!({ "price": 3, "pricing_group_values": { "region": "eu" } })),
            rate(&beta, json!({ "price": 10 })),
            rate(&gamma, json!({
                "rate_type": "TIERED", "tiers": [{ "price": 2, "size": 2 }, { "price": 1 }],
            })),
        ]}),
    )
    .await
    .expect(StatusCode::OK);
    let customer = app.customer(SBX, "acme", &["acme"]).await;
    app.contract(SBX, &customer, &card, FROM).await;
    let calls: Vec<Value> = ["us", "us", "us", "eu", "eu"]
        .iter()
        .enumerate()
        .map(|(i, region)| {
            let at = ts(ms("2024-10-10T00:00:00Z") + i as i64 * HOUR_MS);
            event(
                &format!("c{i}"),
                "acme",
                "call",
                &at,
                json!({ "region": region }),
            )
        })
        .collect();
    app.ingest(SBX, Value::Array(calls)).await;
    Card {
        card,
        alpha,
        beta,
        gamma,
        customer,
    }
}

/// The draft's lines as `(name, region or tier level, total)`, and its total.
async fn draft_lines(app: &TestApp, c: &Card) -> (Vec<(String, String, String)>, String) {
    let inv = app.invoice_at(SBX, &c.customer, NOW).await;
    let lines = inv["line_items"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|l| {
            let detail = match (&l["pricing_group_values"]["region"], &l["tier"]["level"]) {
                (Value::String(region), _) => region.clone(),
                (_, Value::Number(level)) => format!("tier {level}"),
                _ => String::new(),
            };
            (text(l, "name").to_string(), detail, num(&l["total"]))
        })
        .collect();
    (lines, num(&inv["total"]))
}

fn line(name: &str, detail: &str, total: &str) -> (String, String, String) {
    (name.into(), detail.into(), total.into())
}

/// The lines of each product in rating's order (`alpha`, `beta`, `gamma`).
fn lines_of(name: &str) -> Vec<(String, String, String)> {
    match name {
        "Alpha" => vec![line("Alpha", "eu", "6"), line("Alpha", "us", "3")],
        "Beta" => vec![line("Beta", "", "50")],
        _ => vec![line("Gamma", "tier 1", "4"), line("Gamma", "tier 2", "3")],
    }
}

fn in_order(names: &[&str]) -> Vec<(String, String, String)> {
    names.iter().flat_map(|n| lines_of(n)).collect()
}

/// The card's product order as `getRateSchedule` lists it (first appearance of each product).
async fn schedule_order(app: &TestApp, card: &str) -> Vec<String> {
    let data = app
        .post(
            SCHEDULE,
            json!({ "rate_card_id": card, "starting_at": FROM }),
        )
        .await
        .data();
    let mut order: Vec<String> = Vec::new();
    for item in data.as_array().expect("items") {
        let p = text(item, "product_id").to_string();
        if !order.contains(&p) {
            order.push(p);
        }
    }
    order
}

async fn expect_order(app: &TestApp, c: &Card, names: &[&str]) {
    let (lines, total) = draft_lines(app, c).await;
    assert_eq!(lines, in_order(names));
    assert_eq!(total, "66", "order never changes a total");
    let id = |n: &&str| match *n {
        "Alpha" => c.alpha.clone(),
        "Beta" => c.beta.clone(),
        _ => c.gamma.clone(),
    };
    let want: Vec<String> = names.iter().map(id).collect();
    assert_eq!(schedule_order(app, &c.card).await, want);
}

#[tokio::test]
async fn invoice_lines_follow_the_product_order_and_totals_never_change() {
    let app = TestApp::new(NOW).await;
    let c = setup(&app).await;
    // Default: the order products were first given a rate (what lines did before ordering).
    expect_order(&app, &c, &["Alpha", "Beta", "Gamma"]).await;

    // Gamma then Alpha first; Beta, not named, keeps its place after them.
    let r = app
        .post(
            SET,
            json!({ "rate_card_id": c.card, "product_order": [c.gamma, c.alpha] }),
        )
        .await
        .id();
    assert_eq!(r, c.card);
    expect_order(&app, &c, &["Gamma", "Alpha", "Beta"]).await;

    // Moves at both ends: Beta to the front, then Gamma to the last position.
    let to = |p: &str, position: u64| json!({ "product_id": p, "position": position });
    let r = app
        .post(
            MOVE,
            json!({ "rate_card_id": c.card, "product_moves": [to(&c.beta, 0)] }),
        )
        .await
        .id();
    assert_eq!(r, c.card);
    expect_order(&app, &c, &["Beta", "Gamma", "Alpha"]).await;
    app.post(
        MOVE,
        json!({ "rate_card_id": c.card, "product_moves": [to(&c.gamma, 2)] }),
    )
    .await
    .expect(StatusCode::OK);
    expect_order(&app, &c, &["Beta", "Alpha", "Gamma"]).await;

    // Several moves apply one after another: Alpha to 0 gives Alpha, Beta, Gamma; then Beta
    // to 2 gives Alpha, Gamma, Beta.
    app.post(
        MOVE,
        json!({ "rate_card_id": c.card, "product_moves": [to(&c.alpha, 0), to(&c.beta, 2)] }),
    )
    .await
    .expect(StatusCode::OK);
    expect_order(&app, &c, &["Alpha", "Gamma", "Beta"]).await;

    // Empty lists change nothing.
    for (path, body) in [
        (SET, json!({ "rate_card_id": c.card, "product_order": [] })),
        (MOVE, json!({ "rate_card_id": c.card, "product_moves": [] })),
    ] {
        app.post(path, body).await.expect(StatusCode::OK);
    }
    expect_order(&app, &c, &["Alpha", "Gamma", "Beta"]).await;

    // The order is not part of the card's response shape.
    let card = app
        .post(
            "/v1/contract-pricing/rate-cards/get",
            json!({ "id": c.card }),
        )
        .await
        .data();
    assert!(card.get("product_order").is_none(), "{card}");
}

#[tokio::test]
async fn a_product_first_rated_after_an_ordering_goes_last() {
    let app = TestApp::new(NOW).await;
    let c = setup(&app).await;
    app.post(
        SET,
        json!({ "rate_card_id": c.card, "product_order": [c.gamma] }),
    )
    .await
    .expect(StatusCode::OK);
    let metric = app
        .metric(SBX, json!({ "name": "other", "aggregation_type": "COUNT" }))
        .await;
    let delta = app.usage_product(SBX, "Delta", &metric, Value::Null).await;
    app.flat_rate(SBX, &c.card, &delta, "1", FROM).await;
    let want = vec![
        c.gamma.clone(),
        c.alpha.clone(),
        c.beta.clone(),
        delta.clone(),
    ];
    assert_eq!(schedule_order(&app, &c.card).await, want);
    // Delta, with no usage, is a zero line after the others.
    let (lines, total) = draft_lines(&app, &c).await;
    let mut want = in_order(&["Gamma", "Alpha", "Beta"]);
    want.push(line("Delta", "", "0"));
    assert_eq!((lines, total.as_str()), (want, "66"));
    // Now it can be moved like any other.
    app.post(
        MOVE,
        json!({ "rate_card_id": c.card, "product_moves": [{ "product_id": delta, "position": 0 }] }),
    )
    .await
    .expect(StatusCode::OK);
    assert_eq!(schedule_order(&app, &c.card).await[0], delta);
}

#[tokio::test]
async fn refused_reorders_are_400s_naming_the_problem_and_change_nothing() {
    let app = TestApp::new(NOW).await;
    let c = setup(&app).await;
    app.post(
        SET,
        json!({ "rate_card_id": c.card, "product_order": [c.beta] }),
    )
    .await
    .expect(StatusCode::OK);
    let before = ["Beta", "Alpha", "Gamma"];
    expect_order(&app, &c, &before).await;

    let metric = app
        .metric(
            SBX,
            json!({ "name": "elsewhere", "aggregation_type": "COUNT" }),
        )
        .await;
    let off_card = app.usage_product(SBX, "Off", &metric, Value::Null).await;
    let unknown = "3f0c8a4e-9a57-4a8e-9d0e-6b1f2c3d4e5f";
    let to = |p: &str, position: Value| json!({ "product_id": p, "position": position });
    let refused: Vec<(&str, Value, Vec<String>)> = vec![
        (
            SET,
            json!({ "rate_card_id": c.card, "product_order": [c.alpha, unknown] }),
            vec!["product_order[1]".into(), unknown.into()],
        ),
        (
            SET,
            json!({ "rate_card_id": c.card, "product_order": [off_card] }),
            vec![off_card.clone(), "no rate on this rate card".into()],
        ),
        (
            SET,
            json!({ "rate_card_id": c.card, "product_order": [c.gamma, c.alpha, c.gamma] }),
            vec![
                "product_order[2]".into(),
                c.gamma.clone(),
                "more than once".into(),
            ],
        ),
        (SET, json!({ "rate_card_id": c.card }), vec![]),
        (SET, json!({ "product_order": [c.alpha] }), vec![]),
        (
            SET,
            json!({ "rate_card_id": c.card, "product_order": "x" }),
            vec![],
        ),
        (
            MOVE,
            json!({ "rate_card_id": c.card, "product_moves": [to(&c.alpha, json!(3))] }),
            vec!["position 3".into(), "positions 0 to 2".into()],
        ),
        // The first move is fine; the second is refused, so neither happens.
        (
            MOVE,
            json!({ "rate_card_id": c.card,
                    "product_moves": [to(&c.gamma, json!(0)), to(unknown, json!(1))] }),
            vec!["product_moves[1]".into(), unknown.into()],
        ),
        (
            MOVE,
            json!({ "rate_card_id": c.card, "product_moves": [to(&c.alpha, json!(-1))] }),
            vec![],
        ),
        (
            MOVE,
            json!({ "rate_card_id": c.card, "product_moves": [to(&c.alpha, dec("1.5"))] }),
            vec![],
        ),
        (
            MOVE,
            json!({ "rate_card_id": c.card, "product_moves": [{ "product_id": c.alpha }] }),
            vec![],
        ),
    ];
    for (path, body, needles) in refused {
        let r = app
            .post(path, body.clone())
            .await
            .client_error(StatusCode::BAD_REQUEST);
        for needle in &needles {
            assert!(
                r.message().contains(needle.as_str()),
                "{body}: {}",
                r.message()
            );
        }
        expect_order(&app, &c, &before).await;
    }

    // An unknown card is a 404, and another environment's card is unknown there.
    for path in [SET, MOVE] {
        let body = json!({ "rate_card_id": unknown, "product_order": [], "product_moves": [] });
        app.post(path, body)
            .await
            .client_error(StatusCode::NOT_FOUND);
        let body = json!({ "rate_card_id": c.card, "product_order": [c.gamma],
                           "product_moves": [to(&c.gamma, json!(0))] });
        app.post_as(Env::Production, path, body)
            .await
            .client_error(StatusCode::NOT_FOUND);
    }
    expect_order(&app, &c, &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_concurrent_reorders_are_all_kept() {
    let app = Arc::new(TestApp::new(NOW).await);
    let metric = app
        .metric(SBX, json!({ "name": "calls", "aggregation_type": "COUNT" }))
        .await;
    let mut products = Vec::new();
    for i in 0..60 {
        products.push(
            app.usage_product(SBX, &format!("p{i}"), &metric, Value::Null)
                .await,
        );
    }
    let card = app.rate_card(SBX, "card").await;
    let rates: Vec<Value> = products
        .iter()
        .map(|p| {
            json!({ "product_id": p, "starting_at": FROM, "entitled": true,
                    "rate_type": "FLAT", "price": 1 })
        })
        .collect();
    app.post(
        "/v1/contract-pricing/rate-cards/addRates",
        json!({ "rate_card_id": card, "rates": rates }),
    )
    .await
    .expect(StatusCode::OK);

    // Products 20..60 each go to the front, half by a set and half by a move, all at once.
    let tasks: Vec<_> = (20..60)
        .map(|i| {
            let app = app.clone();
            let p = products[i].clone();
            let card = card.clone();
            tokio::spawn(async move {
                match i % 2 {
                    0 => {
                        let body = json!({ "rate_card_id": card, "product_order": [p] });
                        app.post(SET, body).await
                    }
                    _ => {
                        let moves = [json!({ "product_id": p, "position": 0 })];
                        let body = json!({ "rate_card_id": card, "product_moves": moves });
                        app.post(MOVE, body).await
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task").expect(StatusCode::OK);
    }

    // Every change landed: the 40 moved products lead (in whichever order they were
    // serialized), and the 20 others follow in their original order. A lost change would
    // leave its product among the last 20.
    let order = schedule_order(&app, &card).await;
    assert_eq!(order.len(), 60);
    let mut front = order[..40].to_vec();
    front.sort();
    let mut moved = products[20..60].to_vec();
    moved.sort();
    assert_eq!(front, moved);
    assert_eq!(order[40..], products[..20]);
}
