//! `getRateSchedule` (every schedule segment overlapping a range) and `getRates` (the segment in
//! effect at an instant): segments across rate changes at their boundaries, the card's product
//! order, selectors, cursors, refused input, and the cost of a full card (timings printed).

use std::time::Instant;

use axum::http::StatusCode;
use serde_json::{json, Value};
use tally_central::service::rate_cards::{MAX_RATES_PER_CARD, MAX_SELECTORS};
use tally_central::store::Env;

use crate::support::*;

const SBX: Env = Env::Sandbox;
const NOW: &str = "2024-10-15T12:00:00Z";
const OCT1: &str = "2024-10-01T00:00:00Z";
const OCT15: &str = "2024-10-15T00:00:00Z";
const NOV1: &str = "2024-11-01T00:00:00Z";
const DEC1: &str = "2024-12-01T00:00:00Z";
const PATH: &str = "/v1/contract-pricing/rate-cards/getRateSchedule";

/// Product P (plain) and Q (priced by region) on one card, rates added in this order:
/// 1. P 10 from Oct 1, open;        2. Q/us 1 from Oct 1 to Nov 1;
/// 3. P 12 from Oct 15, open;       4. Q/eu 2 from Oct 1, open;
/// 5. P 15 from Nov 1 to Dec 1;     6. Q/us 3 from Nov 1, open.
///
/// So the schedule is (by hand): P [Oct 1, Oct 15) 10, [Oct 15, Nov 1) 12 (3 ends where 5
/// starts), [Nov 1, Dec 1) 15, nothing after; Q/us [Oct 1, Nov 1) 1, [Nov 1, ∞) 3; Q/eu
/// [Oct 1, ∞) 2. Product order P, Q; within Q, us (first rated) before eu.
struct Card {
    card: String,
    p: String,
    q: String,
}

async fn setup(app: &TestApp) -> Card {
    let metric = app
        .metric(
            SBX,
            json!({ "name": "calls", "aggregation_type": "COUNT", "group_keys": [["region"]] }),
        )
        .await;
    let p = app.usage_product(SBX, "P", &metric, Value::Null).await;
    let regional = json!({ "pricing_group_key": ["region"], "tags": ["regional"] });
    let q = app.usage_product(SBX, "Q", &metric, regional).await;
    let card = app.rate_card(SBX, "card").await;
    let rate = |product: &str, price: u32, from: &str, to: Option<&str>, region: Option<&str>| {
        let mut r = json!({
            "product_id": product, "starting_at": from, "entitled": true,
            "rate_type": "FLAT", "price": price,
        });
        if let Some(to) = to {
            r["ending_before"] = json!(to);
        }
        if let Some(region) = region {
            r["pricing_group_values"] = json!({ "region": region });
        }
        r
    };
    let rates = json!([
        rate(&p, 10, OCT1, None, None),
        rate(&q, 1, OCT1, Some(NOV1), Some("us")),
        rate(&p, 12, OCT15, None, None),
        rate(&q, 2, OCT1, None, Some("eu")),
        rate(&p, 15, NOV1, Some(DEC1), None),
        rate(&q, 3, NOV1, None, Some("us")),
    ]);
    app.post(
        "/v1/contract-pricing/rate-cards/addRates",
        json!({ "rate_card_id": card, "rates": rates }),
    )
    .await
    .expect(StatusCode::OK);
    Card { card, p, q }
}

/// A segment as `(product name, region, price, starting_at, ending_before)`.
type Seg = (String, String, String, String, String);

fn seg(name: &str, region: &str, price: &str, from: &str, to: &str) -> Seg {
    (
        name.into(),
        region.into(),
        price.into(),
        from.into(),
        to.into(),
    )
}

fn segs(items: &Value) -> Vec<Seg> {
    items
        .as_array()
        .expect("items")
        .iter()
        .map(|i| {
            let region = i["pricing_group_values"]["region"].as_str().unwrap_or("");
            let to = i.get("ending_before").and_then(Value::as_str).unwrap_or("");
            seg(
                text(i, "product_name"),
                region,
                &num(&i["rate"]["price"]),
                text(i, "starting_at"),
                to,
            )
        })
        .collect()
}

async fn schedule(app: &TestApp, body: Value) -> Vec<Seg> {
    segs(&app.post(&format!("{PATH}?limit=100"), body).await.data())
}

fn p10() -> Seg {
    seg("P", "", "10", OCT1, OCT15)
}
fn p12() -> Seg {
    seg("P", "", "12", OCT15, NOV1)
}
fn p15() -> Seg {
    seg("P", "", "15", NOV1, DEC1)
}
fn q_us1() -> Seg {
    seg("Q", "us", "1", OCT1, NOV1)
}
fn q_eu2() -> Seg {
    seg("Q", "eu", "2", OCT1, "")
}
fn q_us3() -> Seg {
    seg("Q", "us", "3", NOV1, "")
}

#[tokio::test]
async fn segments_overlapping_a_range_across_rate_changes() {
    let app = TestApp::new(NOW).await;
    let c = setup(&app).await;
    let body = |from: &str, to: Option<&str>| {
        let mut b = json!({ "rate_card_id": c.card, "starting_at": from });
        if let Some(to) = to {
            b["ending_before"] = json!(to);
        }
        b
    };
    // Everything from Oct 1 on: product order, then starting_at, then first-rated values.
    let all = vec![p10(), p12(), p15(), q_us1(), q_eu2(), q_us3()];
    assert_eq!(schedule(&app, body(OCT1, None)).await, all);
    // From before any rate: the same.
    assert_eq!(
        schedule(&app, body("2024-01-01T00:00:00Z", None)).await,
        all
    );
    // Half-open at both ends: [Oct 15, Nov 1) meets neither P 10 (ends Oct 15) nor the Nov 1
    // segments.
    assert_eq!(
        schedule(&app, body(OCT15, Some(NOV1))).await,
        vec![p12(), q_us1(), q_eu2()]
    );
    // The last hour before the change sees the old P rate only.
    assert_eq!(
        schedule(&app, body("2024-10-14T23:00:00Z", Some(OCT15))).await,
        vec![p10(), q_us1(), q_eu2()]
    );
    // After P's last segment ended only Q is priced; Q/eu (from Oct 1) sorts before Q/us (Nov 1).
    assert_eq!(
        schedule(&app, body(DEC1, None)).await,
        vec![q_eu2(), q_us3()]
    );
    // A range may start off an hour boundary.
    assert_eq!(
        schedule(&app, body("2024-11-30T23:59:59.999Z", Some(DEC1))).await,
        vec![p15(), q_eu2(), q_us3()]
    );

    // Selectors: any of them; each field narrows.
    let select = |selectors: Value| json!({ "rate_card_id": c.card, "starting_at": OCT1, "selectors": selectors });
    assert_eq!(
        schedule(
            &app,
            select(
                json!([{ "product_id": c.q, "partial_pricing_group_values": { "region": "us" } }])
            )
        )
        .await,
        vec![q_us1(), q_us3()]
    );
    assert_eq!(
        schedule(
            &app,
            select(json!([
                { "pricing_group_values": { "region": "eu" } },
                { "product_id": c.p },
            ]))
        )
        .await,
        vec![p10(), p12(), p15(), q_eu2()]
    );
    assert_eq!(
        schedule(&app, select(json!([{ "product_tags": ["regional"] }]))).await,
        vec![q_us1(), q_eu2(), q_us3()]
    );
    assert_eq!(
        schedule(&app, select(json!([{ "billing_frequency": "monthly" }]))).await,
        Vec::<Seg>::new()
    );
    assert_eq!(schedule(&app, select(json!([{}]))).await, all);

    // The item shape: getRates' (open-ended segments have no ending_before).
    let items = app
        .post(
            &format!("{PATH}?limit=100"),
            json!({ "rate_card_id": c.card, "starting_at": DEC1 }),
        )
        .await
        .data();
    let eu = &items[0];
    assert_eq!(eu["product_id"], c.q.as_str());
    assert_eq!(eu["product_tags"], json!(["regional"]));
    assert_eq!(eu["entitled"], true);
    assert_eq!(eu["rate"]["rate_type"], "FLAT");
    assert_eq!(eu["pricing_group_values"], json!({ "region": "eu" }));
    assert!(eu.get("ending_before").is_none(), "{eu}");

    // The card's product order applies, to getRateSchedule and getRates alike.
    app.post(
        "/v1/contract-pricing/rate-cards/setRateCardProductsOrder",
        json!({ "rate_card_id": c.card, "product_order": [c.q] }),
    )
    .await
    .expect(StatusCode::OK);
    assert_eq!(
        schedule(&app, body(OCT1, None)).await,
        vec![q_us1(), q_eu2(), q_us3(), p10(), p12(), p15()]
    );
    let at = app
        .post(
            "/v1/contract-pricing/rate-cards/getRates",
            json!({ "rate_card_id": c.card, "at": "2024-10-20T00:00:00Z" }),
        )
        .await
        .data();
    assert_eq!(segs(&at), vec![q_us1(), q_eu2(), p12()]);
}

#[tokio::test]
async fn pages_reuse_their_cursor_with_the_same_filters() {
    let app = TestApp::new(NOW).await;
    let c = setup(&app).await;
    let body = json!({ "rate_card_id": c.card, "starting_at": OCT1 });
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let query = match &cursor {
            Some(next) => format!("{PATH}?limit=4&next_page={next}"),
            None => format!("{PATH}?limit=4"),
        };
        let page = app
            .post(&query, body.clone())
            .await
            .expect(StatusCode::OK)
            .body;
        seen.extend(segs(&page["data"]));
        pages += 1;
        match page["next_page"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => {
                assert_eq!(page["next_page"], Value::Null);
                break;
            }
        }
    }
    assert_eq!(pages, 2);
    assert_eq!(seen, vec![p10(), p12(), p15(), q_us1(), q_eu2(), q_us3()]);
    // Without a limit: the default page (25) holds all six.
    let page = app.post(PATH, body).await.expect(StatusCode::OK).body;
    assert_eq!(segs(&page["data"]).len(), 6);
    assert_eq!(page["next_page"], Value::Null);
}

#[tokio::test]
async fn bad_ranges_selectors_and_pages_are_400s_and_an_unknown_card_is_a_404() {
    let app = TestApp::new(NOW).await;
    let c = setup(&app).await;
    let card = c.card.as_str();
    let too_many: Vec<Value> = (0..=MAX_SELECTORS).map(|_| json!({})).collect();
    let bad: Vec<(String, Value, &str)> = vec![
        (
            PATH.into(),
            json!({ "rate_card_id": card, "starting_at": NOV1, "ending_before": NOV1 }),
            "ending_before",
        ),
        (
            PATH.into(),
            json!({ "rate_card_id": card, "starting_at": NOV1, "ending_before": OCT1 }),
            "ending_before",
        ),
        (PATH.into(), json!({ "rate_card_id": card }), "starting_at"),
        (
            PATH.into(),
            json!({ "rate_card_id": card, "starting_at": "last tuesday" }),
            "",
        ),
        (PATH.into(), json!({ "starting_at": OCT1 }), "rate_card_id"),
        (
            PATH.into(),
            json!({ "rate_card_id": card, "starting_at": OCT1, "selectors": too_many }),
            "selectors",
        ),
        (
            PATH.into(),
            json!({ "rate_card_id": card, "starting_at": OCT1,
                    "selectors": [{ "billing_frequency": "DAILY" }] }),
            "",
        ),
        (
            PATH.into(),
            json!({ "rate_card_id": card, "starting_at": OCT1, "selectors": { "product_id": c.p } }),
            "",
        ),
        (
            format!("{PATH}?limit=0"),
            json!({ "rate_card_id": card, "starting_at": OCT1 }),
            "limit",
        ),
        (
            format!("{PATH}?limit=101"),
            json!({ "rate_card_id": card, "starting_at": OCT1 }),
            "limit",
        ),
        (
            format!("{PATH}?next_page=not-a-cursor"),
            json!({ "rate_card_id": card, "starting_at": OCT1 }),
            "next_page",
        ),
    ];
    for (path, body, needle) in bad {
        let r = app
            .post(&path, body.clone())
            .await
            .client_error(StatusCode::BAD_REQUEST);
        assert!(
            r.message().contains(needle),
            "{path} {body}: {}",
            r.message()
        );
    }
    for env in [SBX, Env::Production] {
        let card = match env {
            SBX => "3f0c8a4e-9a57-4a8e-9d0e-6b1f2c3d4e5f",
            _ => card,
        };
        app.post_as(
            env,
            PATH,
            json!({ "rate_card_id": card, "starting_at": OCT1 }),
        )
        .await
        .client_error(StatusCode::NOT_FOUND);
    }
}

/// Issue 19 item 12: `getRates` was quadratic in a card's rates (12,000 rates: 4.2 s even with
/// `limit=1`). Reads of a full card (the limit, 5,000 rates over 1,000 pricing combinations of
/// 5 products, each priced at five times) are now O(n log n); the timings are printed (run
/// with `--no-capture`), not asserted.
#[tokio::test]
async fn reads_of_a_full_card_are_n_log_n_timings_printed() {
    let app = TestApp::new(NOW).await;
    let metric = app
        .metric(
            SBX,
            json!({ "name": "calls", "aggregation_type": "COUNT", "group_keys": [["region"]] }),
        )
        .await;
    let mut products = Vec::new();
    for i in 0..5 {
        let regional = json!({ "pricing_group_key": ["region"] });
        products.push(
            app.usage_product(SBX, &format!("p{i}"), &metric, regional)
                .await,
        );
    }
    let card = app.rate_card(SBX, "full").await;
    // Rate n: product n % 5, region (n / 5) % 200, from Oct 1 + (n / 1000) days.
    let rates: Vec<Value> = (0..MAX_RATES_PER_CARD)
        .map(|n| {
            let from = ts(ms(OCT1) + (n / 1_000) as i64 * DAY_MS);
            json!({
                "product_id": products[n % 5], "starting_at": from, "entitled": true,
                "rate_type": "FLAT", "price": n, "pricing_group_values": { "region": format!("r{}", (n / 5) % 200) },
            })
        })
        .collect();
    let started = Instant::now();
    for chunk in rates.chunks(1_000) {
        app.post(
            "/v1/contract-pricing/rate-cards/addRates",
            json!({ "rate_card_id": card, "rates": chunk }),
        )
        .await
        .expect(StatusCode::OK);
    }
    println!(
        "added {MAX_RATES_PER_CARD} rates in {:?}",
        started.elapsed()
    );

    let timed = |path: &'static str, body: Value| {
        let app = &app;
        async move {
            let started = Instant::now();
            let page = app.post(path, body).await.expect(StatusCode::OK).body;
            println!("{path}: {:?}", started.elapsed());
            page
        }
    };
    let at = timed(
        "/v1/contract-pricing/rate-cards/getRates?limit=1",
        json!({ "rate_card_id": card, "at": NOW }),
    )
    .await;
    // At Oct 15 the last rates of each combination (from Oct 5) are in effect.
    assert_eq!(num(&at["data"][0]["rate"]["price"]), "4000");
    assert!(at["next_page"].is_string());
    let all = timed(
        "/v1/contract-pricing/rate-cards/getRateSchedule?limit=100",
        json!({ "rate_card_id": card, "starting_at": OCT1 }),
    )
    .await;
    // Product p0 first (first rated), its segments from Oct 1 first, in first-rated order of
    // their regions: r0 (rate 0), r1 (rate 5), r2 (rate 10), ...
    let first: Vec<String> = all["data"].as_array().expect("items")[..6]
        .iter()
        .map(|i| num(&i["rate"]["price"]))
        .collect();
    assert_eq!(first, ["0", "5", "10", "15", "20", "25"]);
    timed(
        "/v1/contract-pricing/rate-cards/getRateSchedule?limit=1",
        json!({ "rate_card_id": card, "starting_at": OCT1,
                "selectors": [{ "partial_pricing_group_values": { "region": "r7" } }] }),
    )
    .await;
}
