//! Packages through the HTTP API (issue 12 item 4): create, get, list, archive,
//! listContractsOnPackage; a contract from a package bills exactly like the same contract
//! written out (hand-resolved offsets); bad packages and bad uses are 400s that store nothing.
//! On both backends.
//!
//! Setup as `balances`: `Calls` at FLAT 100 from 2024-11-01, FIXED product `Prepaid`, the
//! clock on 11-25.

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::balances::{lines, Setup, NOW, SBX, START};
use crate::store_conformance::Backend;
use crate::support::*;

fn days(n: i64) -> Value {
    json!({ "value": n, "unit": "DAYS" })
}

/// The package: three months on the card; a PREPAID commit of 1000 for a year, invoiced at the
/// start; a credit of 200 for the first month; MULTIPLIER 0.5 on Calls from day 15; a setup
/// charge of 50 at the start.
fn package(s: &Setup, name: &str) -> Value {
    json!({
        "name": name, "contract_name": "Starter", "rate_card_id": s.card,
        "duration": { "value": 3, "unit": "MONTHS" },
        "usage_statement_schedule": { "frequency": "MONTHLY" },
        "commits": [{ "type": "PREPAID", "product_id": s.fixed, "name": "Prepaid",
            "access_schedule": { "schedule_items": [{ "amount": 1000,
                "starting_at_offset": days(0), "duration": { "value": 1, "unit": "YEARS" } }] },
            "invoice_schedule": { "schedule_items": [{ "date_offset": days(0),
                "unit_price": 1000, "quantity": 1 }] } }],
        "credits": [{ "product_id": s.fixed, "name": "Welcome",
            "access_schedule": { "schedule_items": [{ "amount": 200,
                "starting_at_offset": days(0), "duration": { "value": 1, "unit": "MONTHS" } }] } }],
        "overrides": [{ "starting_at_offset": days(15), "type": "MULTIPLIER", "multiplier": 0.5,
            "override_specifiers": [{ "product_id": s.calls }] }],
        "scheduled_charges": [{ "product_id": s.fixed, "name": "Setup",
            "schedule": { "schedule_items": [{ "date_offset": days(0), "unit_price": 50, "quantity": 1 }] } }],
    })
}

/// The same contract written out for a start on 11-01.
fn written_out(s: &Setup, customer: &str) -> Value {
    json!({
        "customer_id": customer, "starting_at": START, "name": "Starter", "rate_card_id": s.card,
        "ending_before": "2025-02-01T00:00:00Z",
        "usage_statement_schedule": { "frequency": "MONTHLY" },
        "commits": [{ "type": "PREPAID", "product_id": s.fixed, "name": "Prepaid",
            "access_schedule": { "schedule_items": [{ "amount": 1000, "starting_at": START,
                "ending_before": "2025-11-01T00:00:00Z" }] },
            "invoice_schedule": { "schedule_items": [{ "timestamp": START, "unit_price": 1000,
                "quantity": 1 }] } }],
        "credits": [{ "product_id": s.fixed, "name": "Welcome",
            "access_schedule": { "schedule_items": [{ "amount": 200, "starting_at": START,
                "ending_before": "2024-12-01T00:00:00Z" }] } }],
        "overrides": [{ "starting_at": "2024-11-16T00:00:00Z", "type": "MULTIPLIER",
            "multiplier": 0.5, "override_specifiers": [{ "product_id": s.calls }] }],
        "scheduled_charges": [{ "product_id": s.fixed, "name": "Setup",
            "schedule": { "schedule_items": [{ "timestamp": START, "unit_price": 50, "quantity": 1 }] } }],
    })
}

/// `(type, start, total, lines with ids blanked)` of every invoice of the customer.
async fn invoices_without_ids(
    app: &TestApp,
    customer: &str,
) -> Vec<(String, String, String, Vec<[String; 4]>)> {
    app.invoices(SBX, customer, "")
        .await
        .iter()
        .map(|i| {
            let ls = lines(i)
                .into_iter()
                .map(|[t, q, p, total, _]| [t, q, p, total])
                .collect();
            (
                text(i, "type").to_string(),
                text(i, "start_timestamp").to_string(),
                num(&i["total"]),
                ls,
            )
        })
        .collect()
}

/// 10 calls on 11-10 (1000) and 10 on 11-20 at half price (500): the credit takes 200 and the
/// commit 1000 of it, 300 is left; the SCHEDULED invoice of 11-01 is the commit's 1000 and the
/// setup's 50. The contract from the package and the written-out one agree on every line.
async fn a_contract_from_a_package_bills_like_one_written_out(backend: Backend) {
    let app = TestApp::on_backend(NOW, backend).await;
    let s = Setup::new(&app).await;
    let id = app
        .post("/v1/packages/create", package(&s, "Starter"))
        .await
        .id();
    let p = app
        .post("/v1/packages/get", json!({ "package_id": id }))
        .await
        .data();
    assert_eq!(
        (p["name"].as_str(), p["contract_name"].as_str()),
        (Some("Starter"), Some("Starter"))
    );
    assert_eq!(p["duration"], json!({ "value": 3, "unit": "MONTHS" }));
    assert_eq!(p["overrides"][0]["starting_at_offset"], days(15));

    let from_package = s.customer.clone();
    let other = app.customer(SBX, "other", &["other"]).await;
    let a = app
        .post(
            "/v1/contracts/create",
            json!({ "customer_id": from_package, "starting_at": START, "package_id": id }),
        )
        .await
        .id();
    app.post("/v1/contracts/create", written_out(&s, &other))
        .await
        .expect(StatusCode::OK);
    let va = s.v2(&app, &a).await;
    assert_eq!(va["package_id"], id.as_str());
    assert_eq!(va["ending_before"], "2025-02-01T00:00:00Z");
    assert_eq!(va["name"], "Starter");
    assert_eq!(va["overrides"][0]["starting_at"], "2024-11-16T00:00:00Z");

    for (tag, alias) in [("a", "acme"), ("b", "other")] {
        let events = json!([
            event(
                &format!("{tag}1"),
                alias,
                "use",
                "2024-11-10T00:00:00Z",
                json!({ "n": 10 })
            ),
            event(
                &format!("{tag}2"),
                alias,
                "use",
                "2024-11-20T00:00:00Z",
                json!({ "n": 10 })
            ),
        ]);
        assert_eq!(app.ingest(SBX, events).await["accepted"], 2);
    }
    let (ia, ib) = (
        invoices_without_ids(&app, &from_package).await,
        invoices_without_ids(&app, &other).await,
    );
    assert_eq!(
        ia, ib,
        "the package's contract bills differently from the written-out one"
    );
    let totals: Vec<(&str, &str)> = ia
        .iter()
        .map(|(t, _, total, _)| (t.as_str(), total.as_str()))
        .collect();
    assert_eq!(totals, [("SCHEDULED", "1050"), ("USAGE", "300")]);

    let on = app
        .post(
            "/v1/packages/listContractsOnPackage",
            json!({ "package_id": id }),
        )
        .await
        .data();
    assert_eq!(on.as_array().map(Vec::len), Some(1), "{on}");
    assert_eq!(
        (on[0]["contract_id"].as_str(), on[0]["customer_id"].as_str()),
        (Some(a.as_str()), Some(from_package.as_str()))
    );
    let later = app
        .post(
            "/v1/packages/listContractsOnPackage",
            json!({ "package_id": id, "starting_at": "2024-12-01T00:00:00Z" }),
        )
        .await
        .data();
    assert_eq!(later, json!([]));
}

/// Aliases, month offsets on the calendar, archiving, and every refusal storing nothing.
async fn packages_resolve_aliases_and_refuse_what_they_cannot_make(backend: Backend) {
    let app = TestApp::on_backend(NOW, backend).await;
    let s = Setup::new(&app).await;
    let mut monthly = json!({ "name": "Monthly", "rate_card_id": s.card,
                              "duration": { "value": 1, "unit": "MONTHS" },
                              "aliases": [{ "name": "monthly" }] });
    let id = app.post("/v1/packages/create", monthly.clone()).await.id();
    // From 01-31, one month later is 02-28 (clamped).
    let k = app
        .post(
            "/v1/contracts/create",
            json!({ "customer_id": s.customer, "starting_at": "2025-01-31T00:00:00Z",
                    "package_alias": "monthly" }),
        )
        .await
        .id();
    let c = s.v2(&app, &k).await;
    assert_eq!(
        (c["package_id"].as_str(), c["ending_before"].as_str()),
        (Some(id.as_str()), Some("2025-02-28T00:00:00Z"))
    );

    let listed = |filter: &'static str| {
        let app = &app;
        async move {
            let r = app
                .post("/v1/packages/list", json!({ "archive_filter": filter }))
                .await
                .data();
            r.as_array().map(Vec::len).unwrap_or_default()
        }
    };
    assert_eq!(listed("NOT_ARCHIVED").await, 1);
    let before = app.post("/v1/packages/list", json!({})).await.data();
    let contracts_before = app
        .post("/v1/contracts/list", json!({ "customer_id": s.customer }))
        .await
        .data();
    let mut bad_override = package(&s, "Bad");
    bad_override["overrides"][0]["override_specifiers"][0]["product_id"] = json!("nope");
    let mut subscriptions = package(&s, "Subs");
    subscriptions["subscriptions"] = json!([{ "collection_schedule": "ADVANCE" }]);
    let mut bad_offset = package(&s, "Offset");
    bad_offset["credits"][0]["access_schedule"]["schedule_items"][0]["starting_at_offset"] =
        json!({ "value": -1, "unit": "DAYS" });
    monthly["uniqueness_key"] = json!("k1");
    app.post("/v1/packages/create", monthly.clone())
        .await
        .expect(StatusCode::OK);
    let after_first = app.post("/v1/packages/list", json!({})).await.data();
    for (body, want) in [
        (bad_override, "overrides[0]"),
        (subscriptions, "subscriptions[0].proration: required"),
        (
            bad_offset,
            "credits[0].access_schedule.schedule_items[0].starting_at_offset",
        ),
        (json!({ "rate_card_id": s.card }), "name"),
    ] {
        let r = app
            .post("/v1/packages/create", body.clone())
            .await
            .client_error(StatusCode::BAD_REQUEST);
        assert!(r.message().contains(want), "{body}: {}", r.message());
    }
    app.post("/v1/packages/create", monthly)
        .await
        .expect(StatusCode::CONFLICT);
    assert_eq!(
        app.post("/v1/packages/list", json!({})).await.data(),
        after_first
    );
    assert_eq!(
        after_first.as_array().map(Vec::len),
        before.as_array().map(|b| b.len() + 1)
    );

    for (body, want) in [
        (
            json!({ "customer_id": s.customer, "starting_at": START, "package_id": id,
                    "commits": [{ "type": "PREPAID" }] }),
            "commits: a contract created from a package takes its terms from the package",
        ),
        (
            json!({ "customer_id": s.customer, "starting_at": START, "package_id": "nope" }),
            "package_id: package nope not found",
        ),
        (
            json!({ "customer_id": s.customer, "starting_at": START, "package_alias": "none" }),
            "package_alias: no package has the alias",
        ),
    ] {
        let r = app
            .post("/v1/contracts/create", body.clone())
            .await
            .client_error(StatusCode::BAD_REQUEST);
        assert!(r.message().contains(want), "{body}: {}", r.message());
    }
    app.post("/v1/packages/archive", json!({ "package_id": id }))
        .await
        .expect(StatusCode::OK);
    assert_eq!(listed("ARCHIVED").await, 1);
    let r = app
        .post(
            "/v1/contracts/create",
            json!({ "customer_id": s.customer, "starting_at": START, "package_id": id }),
        )
        .await
        .client_error(StatusCode::BAD_REQUEST);
    assert!(r.message().contains("is archived"), "{}", r.message());
    let contracts_after = app
        .post("/v1/contracts/list", json!({ "customer_id": s.customer }))
        .await
        .data();
    assert_eq!(contracts_before, contracts_after);
}

/// A civil UTC date-hour, for writing a package's contract out independently of the server.
#[derive(Clone, Copy)]
struct Civil {
    y: i32,
    m: u32,
    d: u32,
    h: u32,
}

fn days_in_month(y: i32, m: u32) -> u32 {
    match m {
        4 | 6 | 9 | 11 => 30,
        2 if y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) => 29,
        2 => 28,
        _ => 31,
    }
}

impl Civil {
    fn iso(self) -> String {
        format!(
            "{:04}-{:02}-{:02}T{:02}:00:00Z",
            self.y, self.m, self.d, self.h
        )
    }

    /// `n` calendar months later, the day clamped to the month's last.
    fn plus_months(self, n: u32) -> Civil {
        let months = self.m - 1 + n;
        let (y, m) = (self.y + (months / 12) as i32, months % 12 + 1);
        Civil {
            y,
            m,
            d: self.d.min(days_in_month(y, m)),
            h: self.h,
        }
    }

    /// The civil date-hour of an hour-aligned instant.
    fn at(ms: i64) -> Civil {
        let t = tally_core::time::format_rfc3339_ms(ms);
        let n = |a: usize, b: usize| t[a..b].parse::<u32>().expect("digits");
        Civil {
            y: n(0, 4) as i32,
            m: n(5, 7),
            d: n(8, 10),
            h: n(11, 13),
        }
    }

    fn plus_days(self, n: i64) -> String {
        let ms = tally_core::time::parse_rfc3339_ms(&self.iso()).expect("a date");
        tally_core::time::format_rfc3339_ms(ms + n * 86_400_000)
    }
}

/// The package's contract written out by hand for a start at `s`: the same terms as
/// [`written_out`], every offset resolved on the calendar here.
fn written_out_at(setup: &Setup, customer: &str, s: Civil) -> Value {
    let start = s.iso();
    json!({
        "customer_id": customer, "starting_at": start, "name": "Starter", "rate_card_id": setup.card,
        "ending_before": s.plus_months(3).iso(),
        "usage_statement_schedule": { "frequency": "MONTHLY" },
        "commits": [{ "type": "PREPAID", "product_id": setup.fixed, "name": "Prepaid",
            "access_schedule": { "schedule_items": [{ "amount": 1000, "starting_at": start,
                "ending_before": s.plus_months(12).iso() }] },
            "invoice_schedule": { "schedule_items": [{ "timestamp": start, "unit_price": 1000,
                "quantity": 1 }] } }],
        "credits": [{ "product_id": setup.fixed, "name": "Welcome",
            "access_schedule": { "schedule_items": [{ "amount": 200, "starting_at": start,
                "ending_before": s.plus_months(1).iso() }] } }],
        "overrides": [{ "starting_at": s.plus_days(15), "type": "MULTIPLIER",
            "multiplier": 0.5, "override_specifiers": [{ "product_id": setup.calls }] }],
        "scheduled_charges": [{ "product_id": setup.fixed, "name": "Setup",
            "schedule": { "schedule_items": [{ "timestamp": start, "unit_price": 50, "quantity": 1 }] } }],
    })
}

/// The law of issue 12: a package instantiated at any start bills like its contract written
/// out. Random hour-aligned starts from 2024-11 to 2026-12 (month ends and leap days included,
/// seeded so a failure reproduces), each with usage on both sides of the override's start; the
/// two customers' invoices agree on every line.
async fn a_package_at_any_start_bills_like_its_written_out_contract(backend: Backend) {
    use rand::{Rng, SeedableRng};
    let app = TestApp::on_backend(NOW, backend).await;
    let s = Setup::new(&app).await;
    // Both sides also carry a subscription: 3 seats at 3000 a month in advance from day 5,
    // for 2 months, prorated (so a start off the month's first prorates both ends).
    let seats = app
        .post(
            "/v1/contract-pricing/products/create",
            json!({ "name": "Seats", "type": "SUBSCRIPTION" }),
        )
        .await
        .id();
    app.post(
        "/v1/contract-pricing/rate-cards/addRate",
        json!({ "rate_card_id": s.card, "product_id": seats, "starting_at": START,
                "entitled": true, "rate_type": "SUBSCRIPTION", "price": 3000,
                "billing_frequency": "MONTHLY" }),
    )
    .await
    .expect(StatusCode::OK);
    let subscription = |extra: Value| {
        let mut v = json!({ "collection_schedule": "ADVANCE", "proration": { "is_prorated": true },
            "subscription_rate": { "billing_frequency": "MONTHLY", "product_id": seats },
            "initial_quantity": 3 });
        merge(&mut v, extra);
        v
    };
    let mut template = package(&s, "Seated");
    template["subscriptions"] = json!([subscription(json!({ "starting_at_offset": days(5),
        "duration": { "value": 2, "unit": "MONTHS" } }))]);
    let id = app.post("/v1/packages/create", template).await.id();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x7a11_0012);
    let mut starts: Vec<Civil> = vec![
        Civil {
            y: 2025,
            m: 1,
            d: 31,
            h: 0,
        },
        Civil {
            y: 2025,
            m: 11,
            d: 30,
            h: 23,
        },
    ];
    for _ in 0..6 {
        let y = rng.gen_range(2025..=2026);
        let m = rng.gen_range(1..=12);
        starts.push(Civil {
            y,
            m,
            d: rng.gen_range(1..=days_in_month(y, m)),
            h: rng.gen_range(0..24),
        });
    }
    for (n, start) in starts.into_iter().enumerate() {
        app.set_now(&start.plus_days(20));
        let (a, b) = (format!("pkg{n}"), format!("out{n}"));
        let from_package = app.customer(SBX, &a, &[&a]).await;
        let by_hand = app.customer(SBX, &b, &[&b]).await;
        let ka = app
            .post(
                "/v1/contracts/create",
                json!({ "customer_id": from_package, "starting_at": start.iso(), "package_id": id }),
            )
            .await
            .id();
        let mut body = written_out_at(&s, &by_hand, start);
        let from = tally_core::time::parse_rfc3339_ms(&start.plus_days(5)).expect("a date");
        let from = Civil::at(from);
        body["subscriptions"] = json!([subscription(json!({ "starting_at": from.iso(),
            "ending_before": from.plus_months(2).iso() }))]);
        let kb = app.post("/v1/contracts/create", body).await.id();
        // The terms' instants agree too (the calendar months of the contract, commit and credit).
        let terms = |c: Value| {
            let seg = |b: &Value| b["access_schedule"]["schedule_items"][0].clone();
            json!([
                c["ending_before"],
                seg(&c["commits"][0])["starting_at"],
                seg(&c["commits"][0])["ending_before"],
                seg(&c["credits"][0])["ending_before"],
                c["overrides"][0]["starting_at"],
                c["scheduled_charges"][0]["schedule"]["schedule_items"][0]["timestamp"],
            ])
        };
        let get = |customer: &str, k: &str| {
            app.post(
                "/v2/contracts/get",
                json!({ "customer_id": customer, "contract_id": k }),
            )
        };
        let (ta, tb) = (
            terms(get(&from_package, &ka).await.data()),
            terms(get(&by_hand, &kb).await.data()),
        );
        assert_eq!(
            ta,
            tb,
            "start {}: the package resolves differently",
            start.iso()
        );
        for alias in [&a, &b] {
            let events = json!([
                event(
                    &format!("{alias}-1"),
                    alias,
                    "use",
                    &start.plus_days(2),
                    json!({ "n": 7 })
                ),
                event(
                    &format!("{alias}-2"),
                    alias,
                    "use",
                    &start.plus_days(17),
                    json!({ "n": 3 })
                ),
            ]);
            assert_eq!(app.ingest(SBX, events).await["accepted"], 2);
        }
        let (ia, ib) = (
            invoices_without_ids(&app, &from_package).await,
            invoices_without_ids(&app, &by_hand).await,
        );
        let subscribed = ia
            .iter()
            .flat_map(|(_, _, _, lines)| lines)
            .any(|l| l[0] == "subscription");
        assert!(
            subscribed,
            "start {}: no subscription line: {ia:?}",
            start.iso()
        );
        assert_eq!(
            ia,
            ib,
            "start {}: the package bills differently",
            start.iso()
        );
    }
}

both_backends!(
    a_contract_from_a_package_bills_like_one_written_out,
    a_package_at_any_start_bills_like_its_written_out_contract,
    packages_resolve_aliases_and_refuse_what_they_cannot_make,
);
