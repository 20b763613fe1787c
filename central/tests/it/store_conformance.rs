//! One conformance suite for every store backend: each test runs once on a fresh SQLite file and
//! once on a fresh PostgreSQL database (`CREATE DATABASE tally_test_<random>` on the server of
//! `$TALLY_TEST_PG_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`, dropped after).
//!
//! `store_test!(name, |db| { ... })` defines `name::sqlite` and `name::postgres` (ripgrep's
//! `rgtest!` trick), so a behaviour one backend has and the other lacks fails by name. Tests that
//! need "another process" open a second, independent pool on the same database
//! ([`TestDb::reopen`]).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use tally_central::store::{
    self, ArchiveFilter, BatchApplied, Env, IngestItem, InvoiceRow, InvoiceStatus, ItemOutcome,
    LedgerRow, NewDoc, PageReq, PoolOptions, StoreError, StoreResult, Stores, TokenInfo,
};
use tally_central::store::{AttemptOutcome, NewOutboxMessage, OUTBOX_WEBHOOK};
use tally_core::accumulate::{Accumulator, PartialKey};
use tally_core::balances::LedgerEntryKind;
use tempfile::TempDir;

use tally_tests::pg as postgres;
pub use tally_tests::pg::pg_admin_url;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh database of one backend, removed when dropped.
pub struct TestDb {
    pub backend: Backend,
    pub stores: Stores,
    pub url: String,
    _dir: Option<TempDir>,
    pg_name: Option<String>,
}

fn test_pool() -> PoolOptions {
    PoolOptions {
        max_connections: 5,
        acquire_timeout: Duration::from_secs(5),
        connect_wait: Duration::from_secs(5),
    }
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        match backend {
            Backend::Sqlite => TestDb::sqlite().await,
            Backend::Postgres => TestDb::postgres().await,
        }
    }

    pub async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let stores = store::open(&url, &test_pool()).await.expect("open sqlite");
        TestDb {
            backend: Backend::Sqlite,
            stores,
            url,
            _dir: Some(dir),
            pg_name: None,
        }
    }

    pub async fn postgres() -> TestDb {
        let name = format!("tally_test_{}", uuid::Uuid::new_v4().simple());
        let url = postgres::create_database(&pg_admin_url(), &name)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "cannot create a PostgreSQL test database through {} ({e:#}); \
                     is PostgreSQL running? (`.ci/run` starts it)",
                    store::redact_url(&pg_admin_url())
                )
            });
        let stores = store::open(&url, &test_pool())
            .await
            .expect("open postgres");
        TestDb {
            backend: Backend::Postgres,
            stores,
            url,
            _dir: None,
            pg_name: Some(name),
        }
    }

    /// A second, independent pool on the same database: what another replica sees.
    pub async fn reopen(&self) -> Stores {
        store::open(&self.url, &test_pool())
            .await
            .expect("reopen store")
    }

    /// The PostgreSQL database's name (PostgreSQL only).
    pub fn pg_name(&self) -> &str {
        self.pg_name.as_deref().expect("a PostgreSQL test database")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        // Drop runs inside the test's runtime; do the async cleanup on a thread of its own.
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(postgres::drop_database(&pg_admin_url(), &name))
        });
        if let Ok(Err(e)) = cleanup.join() {
            eprintln!("could not drop a test database: {e:#}");
        }
    }
}

/// Runs a SQL statement on the maintenance database (outage simulation).
async fn admin_exec(sql: &str) {
    postgres::admin_execute(&pg_admin_url(), sql)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
}

macro_rules! store_test {
    ($name:ident, |$db:ident| $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn run($db: &TestDb) $body

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                run(&TestDb::new(Backend::Sqlite).await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                run(&TestDb::new(Backend::Postgres).await).await;
            }
        }
    };
}

const SBX: Env = Env::Sandbox;
const PROD: Env = Env::Production;
const HOUR: i64 = 3_600_000;
const T0: i64 = 1_726_000_000_000 / HOUR * HOUR;

fn doc<'a>(kind: &'a str, id: &'a str, parent: Option<&'a str>, body: &str) -> NewDoc<'a> {
    NewDoc {
        kind,
        id,
        parent_id: parent,
        unique_key: None,
        created_ms: T0,
        body: body.to_string(),
    }
}

fn key(customer: &str, metric: &str, hour_ms: i64) -> PartialKey {
    PartialKey {
        customer_ref: customer.to_string(),
        metric_id: metric.to_string(),
        groups: vec![Some("g".to_string()), None],
        hour_ms,
    }
}

fn count_item(env: Env, tid: &str, customer: &str, hour_ms: i64) -> IngestItem {
    IngestItem {
        env,
        transaction_id: tid.to_string(),
        contributions: vec![(key(customer, "m", hour_ms), Accumulator::Count(1))],
        event: None,
    }
}

fn sum_item(tid: &str, value: &str) -> IngestItem {
    IngestItem {
        env: SBX,
        transaction_id: tid.to_string(),
        contributions: vec![(
            key("c", "sum", T0),
            Accumulator::Sum(value.parse().expect("decimal")),
        )],
        event: None,
    }
}

/// The merged quantity of every row of `customer`'s metric `metric` in `[from, to)`.
async fn quantity(s: &Stores, env: Env, customer: &str, metric: &str) -> Decimal {
    let rows = s
        .usage
        .usage_rows(
            env,
            &[customer.to_string()],
            &[metric.to_string()],
            i64::MIN,
            i64::MAX,
        )
        .await
        .expect("usage rows");
    rows.iter().map(|r| r.acc.quantity()).sum()
}

fn ids(docs: &[store::Doc]) -> Vec<&str> {
    docs.iter().map(|d| d.id.as_str()).collect()
}

store_test!(documents_round_trip_list_and_page, |db| {
    let c = &db.stores.config;
    c.insert_docs(
        SBX,
        &[
            doc("product", "p1", None, r#"{"n":1}"#),
            doc("product", "p2", None, r#"{"n":2}"#),
            doc("rate", "r1", Some("card"), "{}"),
            doc("product", "p3", None, r#"{"n":3}"#),
        ],
    )
    .await
    .expect("insert");
    let p1 = c.get_doc(SBX, "product", "p1").await.unwrap().unwrap();
    assert_eq!(
        (p1.body.as_str(), p1.archived, p1.created_ms),
        (r#"{"n":1}"#, false, T0)
    );
    assert!(c.get_doc(PROD, "product", "p1").await.unwrap().is_none());
    assert!(c.get_doc(SBX, "rate", "p1").await.unwrap().is_none());

    assert!(c
        .update_doc(SBX, "product", "p2", r#"{"n":22}"#, true, 0)
        .await
        .unwrap());
    assert!(!c
        .update_doc(PROD, "product", "p2", "{}", true, 0)
        .await
        .unwrap());
    // Optimistic concurrency: an update naming a version already replaced changes nothing.
    assert!(!c
        .update_doc(SBX, "product", "p2", r#"{"n":"stale"}"#, false, 0)
        .await
        .unwrap());
    let p2 = c.get_doc(SBX, "product", "p2").await.unwrap().unwrap();
    assert_eq!(
        (p2.body.as_str(), p2.archived, p2.version),
        (r#"{"n":22}"#, true, 1)
    );
    let list = |f| c.list_docs(SBX, "product", None, f, None);
    assert_eq!(
        ids(&list(ArchiveFilter::Active).await.unwrap()),
        ["p1", "p3"]
    );
    assert_eq!(ids(&list(ArchiveFilter::Archived).await.unwrap()), ["p2"]);
    let all = list(ArchiveFilter::All).await.unwrap();
    assert_eq!(ids(&all), ["p1", "p2", "p3"]);
    assert_eq!(all[1].body, r#"{"n":22}"#);
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));

    let page = |after, limit| {
        c.list_docs(
            SBX,
            "product",
            None,
            ArchiveFilter::All,
            Some(PageReq { after, limit }),
        )
    };
    let first = page(0, 2).await.unwrap();
    assert_eq!(ids(&first), ["p1", "p2"]);
    assert_eq!(ids(&page(first[1].seq, 2).await.unwrap()), ["p3"]);
    let rates = c
        .list_docs(SBX, "rate", Some("card"), ArchiveFilter::All, None)
        .await
        .unwrap();
    assert_eq!(ids(&rates), ["r1"]);
    assert!(c
        .list_docs(SBX, "rate", Some("other"), ArchiveFilter::All, None)
        .await
        .unwrap()
        .is_empty());
    assert!(c
        .list_docs(PROD, "product", None, ArchiveFilter::All, None)
        .await
        .unwrap()
        .is_empty());
});

store_test!(inserts_are_atomic_and_conflicts_are_reported, |db| {
    let c = &db.stores.config;
    c.insert_docs(SBX, &[doc("product", "p1", None, "{}")])
        .await
        .unwrap();
    let err = c
        .insert_docs(
            SBX,
            &[
                doc("product", "p2", None, "{}"),
                doc("product", "p1", None, "{}"),
            ],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    assert!(c.get_doc(SBX, "product", "p2").await.unwrap().is_none());
    // The same id in the other environment is a different document.
    c.insert_docs(PROD, &[doc("product", "p1", None, "{}")])
        .await
        .unwrap();

    let with_key = |id| NewDoc {
        unique_key: Some("uk"),
        ..doc("contract", id, Some("cust"), "{}")
    };
    c.insert_docs(SBX, &[with_key("k1")]).await.unwrap();
    let err = c.insert_docs(SBX, &[with_key("k2")]).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    // Documents without a unique key never collide on it.
    c.insert_docs(
        SBX,
        &[
            doc("contract", "k3", None, "{}"),
            doc("contract", "k4", None, "{}"),
        ],
    )
    .await
    .unwrap();
});

store_test!(an_alias_never_equals_a_customer_id, |db| {
    let c = &db.stores.config;
    let aliases = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    c.insert_customer(SBX, doc("customer", "c1", None, "{}"), &aliases(&["a"]))
        .await
        .unwrap();
    // An alias that is a customer's id: refused on create and on replace, changing nothing.
    let err = c
        .insert_customer(SBX, doc("customer", "c2", None, "{}"), &aliases(&["c1"]))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    assert!(c.get_doc(SBX, "customer", "c2").await.unwrap().is_none());
    let err = c
        .set_customer_aliases(SBX, "c1", &aliases(&["c1"]), "{}", 0)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    assert_eq!(
        c.customer_by_alias(SBX, "a").await.unwrap().as_deref(),
        Some("c1")
    );
    // A customer whose id is an existing alias: refused.
    let err = c
        .insert_customer(SBX, doc("customer", "a", None, "{}"), &[])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    // Other environments' ids do not count.
    c.insert_customer(PROD, doc("customer", "p1", None, "{}"), &aliases(&["c1"]))
        .await
        .unwrap();
});

store_test!(customer_aliases_are_unique_and_replaceable, |db| {
    let c = &db.stores.config;
    let aliases = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    c.insert_customer(
        SBX,
        doc("customer", "c1", None, "{}"),
        &aliases(&["a", "b"]),
    )
    .await
    .unwrap();
    let err = c
        .insert_customer(
            SBX,
            doc("customer", "c2", None, "{}"),
            &aliases(&["x", "b"]),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    assert!(c.get_doc(SBX, "customer", "c2").await.unwrap().is_none());
    assert_eq!(c.customer_by_alias(SBX, "x").await.unwrap(), None);
    assert_eq!(
        c.customer_by_alias(SBX, "b").await.unwrap().as_deref(),
        Some("c1")
    );
    assert_eq!(c.customer_by_alias(PROD, "b").await.unwrap(), None);

    assert!(c
        .set_customer_aliases(SBX, "c1", &aliases(&["b", "c"]), r#"{"v":2}"#, 0)
        .await
        .unwrap());
    // A stale version changes neither the aliases nor the body.
    assert!(!c
        .set_customer_aliases(SBX, "c1", &aliases(&["z"]), r#"{"v":"stale"}"#, 0)
        .await
        .unwrap());
    assert_eq!(c.customer_by_alias(SBX, "z").await.unwrap(), None);
    assert_eq!(c.customer_by_alias(SBX, "a").await.unwrap(), None);
    assert_eq!(
        c.customer_by_alias(SBX, "c").await.unwrap().as_deref(),
        Some("c1")
    );
    let body = c
        .get_doc(SBX, "customer", "c1")
        .await
        .unwrap()
        .unwrap()
        .body;
    assert_eq!(body, r#"{"v":2}"#);

    c.insert_customer(SBX, doc("customer", "c2", None, "{}"), &aliases(&["a"]))
        .await
        .unwrap();
    let err = c
        .set_customer_aliases(SBX, "c2", &aliases(&["c"]), "{}", 0)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    // The failed replacement changed nothing.
    assert_eq!(
        c.customer_by_alias(SBX, "a").await.unwrap().as_deref(),
        Some("c2")
    );
});

store_test!(metrics_version_grows_with_each_metric, |db| {
    let c = &db.stores.config;
    let v0 = c.metrics_version().await.unwrap();
    c.insert_docs(SBX, &[doc("billable_metric", "m1", None, "{}")])
        .await
        .unwrap();
    let v1 = c.metrics_version().await.unwrap();
    c.insert_docs(PROD, &[doc("product", "p", None, "{}")])
        .await
        .unwrap();
    assert_eq!(c.metrics_version().await.unwrap(), v1);
    c.insert_docs(PROD, &[doc("billable_metric", "m2", None, "{}")])
        .await
        .unwrap();
    let v2 = c.metrics_version().await.unwrap();
    assert!(v0 < v1 && v1 < v2, "{v0} {v1} {v2}");
});

store_test!(ingest_claims_each_transaction_id_once, |db| {
    let u = &db.stores.usage;
    let out = u
        .commit_ingest(
            &[
                count_item(SBX, "t1", "c", T0),
                count_item(SBX, "t2", "c", T0),
                count_item(SBX, "t1", "c", T0),
                count_item(PROD, "t1", "c", T0),
            ],
            T0,
        )
        .await
        .unwrap();
    use ItemOutcome::*;
    assert_eq!(out, [Accepted, Accepted, Duplicate, Accepted]);
    let out = u
        .commit_ingest(
            &[
                count_item(SBX, "t2", "c", T0),
                count_item(SBX, "t3", "c", T0 + HOUR),
            ],
            T0,
        )
        .await
        .unwrap();
    assert_eq!(out, [Duplicate, Accepted]);
    assert_eq!(quantity(&db.stores, SBX, "c", "m").await, Decimal::from(3));
    assert_eq!(quantity(&db.stores, PROD, "c", "m").await, Decimal::from(1));
    assert!(u.commit_ingest(&[], T0).await.unwrap().is_empty());
});

store_test!(
    usage_rows_select_by_reference_metric_and_half_open_window,
    |db| {
        let u = &db.stores.usage;
        let mut items = vec![
            count_item(SBX, "a", "alias", T0),
            count_item(SBX, "b", "uuid", T0 + HOUR),
            count_item(SBX, "c", "uuid", T0 + 2 * HOUR),
            count_item(SBX, "d", "other", T0),
        ];
        items.push(IngestItem {
            env: SBX,
            transaction_id: "e".into(),
            contributions: vec![(key("uuid", "m2", T0), Accumulator::Count(5))],
            event: None,
        });
        u.commit_ingest(&items, T0).await.unwrap();
        let refs = ["alias".to_string(), "uuid".to_string()];
        let rows = u
            .usage_rows(SBX, &refs, &["m".to_string()], T0, T0 + 2 * HOUR)
            .await
            .unwrap();
        let hours: BTreeSet<i64> = rows.iter().map(|r| r.hour_ms).collect();
        assert_eq!(hours, BTreeSet::from([T0, T0 + HOUR]));
        assert!(rows.iter().all(|r| r.metric_id == "m"));
        assert_eq!(rows[0].groups, vec![Some("g".to_string()), None]);
        assert!(u
            .usage_rows(SBX, &[], &["m".to_string()], i64::MIN, i64::MAX)
            .await
            .unwrap()
            .is_empty());
        assert!(u
            .usage_rows(PROD, &refs, &["m".to_string()], i64::MIN, i64::MAX)
            .await
            .unwrap()
            .is_empty());
    }
);

store_test!(decimals_and_bodies_survive_exactly, |db| {
    let u = &db.stores.usage;
    u.commit_ingest(
        &[
            sum_item("a", "0.1"),
            sum_item("b", "0.2"),
            sum_item("c", "12345678901234567.000000000001"),
        ],
        T0,
    )
    .await
    .unwrap();
    let total = quantity(&db.stores, SBX, "c", "sum").await;
    assert_eq!(total.to_string(), "12345678901234567.300000000001");

    // Number literals beyond any float, and key order, are kept byte for byte.
    let body = r#"{"z":1.000000000000000000000000000000000001,"a":1e400,"price":0.10}"#;
    db.stores
        .config
        .insert_docs(SBX, &[doc("product", "exact", None, body)])
        .await
        .unwrap();
    let got = db.stores.config.get_doc(SBX, "product", "exact").await;
    assert_eq!(got.unwrap().unwrap().body, body);
});

store_test!(
    an_overflowing_event_is_rejected_and_gives_its_key_back,
    |db| {
        let u = &db.stores.usage;
        let max = Decimal::MAX.to_string();
        let out = u
            .commit_ingest(&[sum_item("big", &max), sum_item("more", &max)], T0)
            .await
            .unwrap();
        assert_eq!(out[0], ItemOutcome::Accepted);
        assert!(matches!(out[1], ItemOutcome::Rejected(_)), "{out:?}");
        // The rejected key was released: a corrected retry lands.
        let out = u.commit_ingest(&[sum_item("more", "1")], T0).await;
        assert!(matches!(out.unwrap()[0], ItemOutcome::Rejected(_)));
        let out = u.commit_ingest(&[sum_item("big", "1")], T0).await.unwrap();
        assert_eq!(out, [ItemOutcome::Duplicate]);
        assert_eq!(quantity(&db.stores, SBX, "c", "sum").await, Decimal::MAX);
    }
);

store_test!(batches_apply_once, |db| {
    let u = &db.stores.usage;
    let partials = vec![
        (SBX, key("c", "m", T0), Accumulator::Count(3)),
        (SBX, key("c", "m", T0), Accumulator::Count(4)),
        (PROD, key("c", "m", T0), Accumulator::Count(1)),
    ];
    let applied = |r: StoreResult<BatchApplied>| r.unwrap().applied;
    assert!(applied(
        u.apply_batch("shard-0", 1, &partials, &[], T0).await
    ));
    assert!(!applied(
        u.apply_batch("shard-0", 1, &partials, &[], T0).await
    ));
    assert!(applied(
        u.apply_batch("shard-1", 1, &partials[..1], &[], T0).await
    ));
    assert_eq!(quantity(&db.stores, SBX, "c", "m").await, Decimal::from(10));
    assert_eq!(quantity(&db.stores, PROD, "c", "m").await, Decimal::from(1));
    // Batches and native ingest merge into the same rows.
    u.commit_ingest(&[count_item(SBX, "t", "c", T0)], T0)
        .await
        .unwrap();
    assert_eq!(quantity(&db.stores, SBX, "c", "m").await, Decimal::from(11));
    let err = u.apply_batch("shard-2", u64::MAX, &partials, &[], T0).await;
    assert!(err.is_err());
});

store_test!(
    an_unmergeable_batch_partial_is_a_dead_letter_and_the_rest_applies,
    |db| {
        let u = &db.stores.usage;
        let max = Decimal::MAX.to_string();
        // Native ingest fills the hourly SUM row to the top of the decimal range.
        let out = u.commit_ingest(&[sum_item("big", &max)], T0).await;
        assert_eq!(out.unwrap(), [ItemOutcome::Accepted]);
        let sum = |v: i64| Accumulator::Sum(Decimal::from(v));
        let partials = vec![
            (SBX, key("c", "m", T0), Accumulator::Count(3)),
            // Overflows the stored row: recorded, not merged.
            (SBX, key("c", "sum", T0), sum(5)),
            (SBX, key("c", "m", T0 + HOUR), Accumulator::Count(4)),
            // Mergeable (a negative SUM): the row takes it.
            (SBX, key("c", "sum", T0), sum(-7)),
            (PROD, key("c", "sum", T0), sum(2)),
        ];
        let done = u
            .apply_batch("shard-9.ab", 4, &partials, &[], T0 + 5)
            .await
            .unwrap();
        assert!(done.applied);
        assert_eq!(done.dead_letters.len(), 1);
        let d = &done.dead_letters[0];
        assert_eq!(
            (d.shard_id.as_str(), d.seq, d.index, d.env),
            ("shard-9.ab", 4, 1, SBX)
        );
        assert_eq!(
            d.reason,
            "partial not merged: usage total overflows the decimal range"
        );
        let body: serde_json::Value = serde_json::from_str(&d.partial).unwrap();
        assert_eq!(body["env"], "sandbox");
        assert_eq!(body["key"]["metric_id"], "sum");
        assert_eq!(body["acc"], serde_json::json!({ "sum": "5" }));

        assert_eq!(quantity(&db.stores, SBX, "c", "m").await, Decimal::from(7));
        assert_eq!(
            quantity(&db.stores, SBX, "c", "sum").await,
            Decimal::MAX - Decimal::from(7)
        );
        assert_eq!(
            quantity(&db.stores, PROD, "c", "sum").await,
            Decimal::from(2)
        );
        assert_eq!(u.dead_letters(SBX, 10).await.unwrap(), done.dead_letters);
        assert_eq!(u.dead_letter_count(SBX).await.unwrap(), 1);
        assert_eq!(u.dead_letter_count(PROD).await.unwrap(), 0);

        // A replay is still a no-op: no second dead letter, no change to any row.
        let again = u
            .apply_batch("shard-9.ab", 4, &partials, &[], T0 + 9)
            .await
            .unwrap();
        assert_eq!(
            again,
            BatchApplied {
                applied: false,
                dead_letters: vec![]
            }
        );
        assert_eq!(u.dead_letter_count(SBX).await.unwrap(), 1);
        assert_eq!(quantity(&db.stores, SBX, "c", "m").await, Decimal::from(7));
        // The shard's next batch lands normally.
        let next = u
            .apply_batch("shard-9.ab", 5, &partials[..1], &[], T0)
            .await
            .unwrap();
        assert_eq!((next.applied, next.dead_letters.len()), (true, 0));
        assert_eq!(quantity(&db.stores, SBX, "c", "m").await, Decimal::from(10));
    }
);

store_test!(pruning_forgets_only_old_keys, |db| {
    let u = &db.stores.usage;
    u.commit_ingest(&[count_item(SBX, "old", "c", T0)], T0)
        .await
        .unwrap();
    u.commit_ingest(&[count_item(SBX, "new", "c", T0)], T0 + 10)
        .await
        .unwrap();
    assert_eq!(u.prune_dedupe(T0 + 10).await.unwrap(), 1);
    let out = u
        .commit_ingest(
            &[
                count_item(SBX, "old", "c", T0),
                count_item(SBX, "new", "c", T0),
            ],
            T0 + 20,
        )
        .await
        .unwrap();
    assert_eq!(out, [ItemOutcome::Accepted, ItemOutcome::Duplicate]);
});

fn invoice(id: &str, start: i64) -> InvoiceRow {
    InvoiceRow {
        id: id.to_string(),
        kind: store::InvoiceKind::Usage,
        contract_id: "k".to_string(),
        customer_id: "c".to_string(),
        period_start_ms: start,
        period_end_ms: start + HOUR,
        status: InvoiceStatus::Draft,
        body: None,
        revision: 0,
        regenerated_from: None,
    }
}

store_test!(
    invoices_are_created_once_and_transition_conditionally,
    |db| {
        let inv = &db.stores.invoices;
        let rows = [invoice("i2", T0 + HOUR), invoice("i1", T0)];
        inv.ensure_invoices(SBX, &rows).await.unwrap();
        inv.ensure_invoices(SBX, &rows).await.unwrap();
        inv.ensure_invoices(SBX, &[]).await.unwrap();
        let list = inv.invoices_for_contract(SBX, "k").await.unwrap();
        assert_eq!(
            list.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["i1", "i2"]
        );
        assert!(list
            .iter()
            .all(|r| r.status == InvoiceStatus::Draft && r.body.is_none()));
        assert!(inv
            .invoices_for_contract(PROD, "k")
            .await
            .unwrap()
            .is_empty());

        let body = r#"{"total":12.50,"x":1e-30}"#;
        use InvoiceStatus::*;
        assert!(inv
            .transition_invoice(SBX, "i1", Draft, Finalized, body)
            .await
            .unwrap());
        assert!(!inv
            .transition_invoice(SBX, "i1", Draft, Finalized, "{}")
            .await
            .unwrap());
        let row = inv.invoice(SBX, "i1").await.unwrap().unwrap();
        assert_eq!(
            (row.status, row.body.as_deref(), row.period_end_ms),
            (Finalized, Some(body), T0 + HOUR)
        );
        assert!(inv.invoice(PROD, "i1").await.unwrap().is_none());
        assert!(inv
            .transition_invoice(SBX, "i1", Finalized, Void, "{}")
            .await
            .unwrap());
        assert_eq!(inv.invoice(SBX, "i1").await.unwrap().unwrap().status, Void);
    }
);

store_test!(
    a_scheduled_invoice_may_share_its_instant_with_a_usage_period_start,
    |db| {
        // A commit bought on the contract's first day: its SCHEDULED invoice is at the instant
        // the first USAGE period starts, and both must be stored and finalized.
        let inv = &db.stores.invoices;
        let usage = invoice("usage", T0);
        inv.ensure_invoices(SBX, std::slice::from_ref(&usage))
            .await
            .unwrap();
        let scheduled = InvoiceRow {
            id: "scheduled".to_string(),
            kind: store::InvoiceKind::Scheduled,
            period_end_ms: T0,
            status: InvoiceStatus::Finalized,
            body: Some("{}".to_string()),
            ..usage.clone()
        };
        let mut work = inv.begin().await.unwrap();
        assert!(work
            .put_invoice(SBX, &scheduled, InvoiceStatus::Draft)
            .await
            .unwrap());
        work.commit().await.unwrap();
        let list = inv.invoices_for_contract(SBX, "k").await.unwrap();
        let mut got: Vec<(&str, InvoiceStatus)> =
            list.iter().map(|r| (r.id.as_str(), r.status)).collect();
        got.sort_by_key(|(id, _)| *id);
        assert_eq!(
            got,
            [
                ("scheduled", InvoiceStatus::Finalized),
                ("usage", InvoiceStatus::Draft)
            ]
        );
        // Still one row per kind and instant: a second scheduled row there is refused.
        let twin = InvoiceRow {
            id: "scheduled-twin".to_string(),
            ..scheduled.clone()
        };
        let mut work = inv.begin().await.unwrap();
        assert!(!work
            .put_invoice(SBX, &twin, InvoiceStatus::Draft)
            .await
            .unwrap());
        work.commit().await.unwrap();
        assert_eq!(inv.invoices_for_contract(SBX, "k").await.unwrap().len(), 2);
    }
);

fn ledger_entry(id: &str, invoice: Option<&str>, amount: &str, at: i64) -> LedgerRow {
    LedgerRow {
        id: id.to_string(),
        customer_id: "c".to_string(),
        balance_id: "b".to_string(),
        segment_id: "s".to_string(),
        entry: match invoice {
            Some(_) => LedgerEntryKind::AutomatedInvoiceDeduction,
            None => LedgerEntryKind::Manual,
        },
        amount: amount.parse().unwrap(),
        timestamp_ms: at,
        invoice_id: invoice.map(str::to_string),
        contract_id: invoice.map(|_| "k".to_string()),
        reason: invoice.is_none().then(|| "goodwill".to_string()),
        created_ms: at,
    }
}

store_test!(
    ledger_entries_of_an_invoice_are_written_once_with_its_finalization,
    |db| {
        let first = ledger_entry("e1", Some("i1"), "-1000.333333333333", T0 + HOUR);
        // A second finalizer computes the same entry (same invoice, segment, kind) under
        // another id: the unique index keeps the first.
        let again = LedgerRow {
            id: "e1-again".into(),
            amount: "-5".parse().unwrap(),
            ..first.clone()
        };
        for entries in [vec![first.clone()], vec![first.clone(), again]] {
            let mut work = db.stores.invoices.begin().await.unwrap();
            work.put_ledger_entries(SBX, &entries).await.unwrap();
            work.commit().await.unwrap();
        }
        // Rolled back with its unit of work: nothing lands.
        let mut work = db.stores.invoices.begin().await.unwrap();
        work.put_ledger_entries(SBX, &[ledger_entry("e2", Some("i2"), "-1", T0)])
            .await
            .unwrap();
        drop(work);
        let manual = ledger_entry("m1", None, "250.5", T0);
        db.stores
            .ledger
            .insert_manual_entry(SBX, &manual)
            .await
            .unwrap();
        let rows = db.stores.ledger.customer_ledger(SBX, "c").await.unwrap();
        assert_eq!(rows, vec![manual, first]);
        assert!(db
            .stores
            .ledger
            .customer_ledger(PROD, "c")
            .await
            .unwrap()
            .is_empty());
        assert!(db
            .stores
            .ledger
            .customer_ledger(SBX, "other")
            .await
            .unwrap()
            .is_empty());
    }
);

store_test!(tokens_map_hashes_to_environments, |db| {
    let t = &db.stores.tokens;
    assert_eq!(t.token_count().await.unwrap(), 0);
    t.insert_token("h1", SBX, None, T0).await.unwrap();
    t.insert_token("h2", PROD, None, T0).await.unwrap();
    assert_eq!(t.token_env("h1").await.unwrap(), Some(SBX));
    assert_eq!(t.token_env("h2").await.unwrap(), Some(PROD));
    assert_eq!(t.token_env("nope").await.unwrap(), None);
    assert_eq!(t.token_count().await.unwrap(), 2);
    assert!(t.insert_token("h1", PROD, None, T0).await.is_err());
});

store_test!(tokens_are_listed_touched_and_revoked, |db| {
    let t = &db.stores.tokens;
    let (a, b) = (
        "a".repeat(64),
        format!("{}{}", "b".repeat(16), "c".repeat(48)),
    );
    t.insert_token(&a, SBX, Some("ci"), T0).await.unwrap();
    t.insert_token(&b, PROD, None, T0 + 1).await.unwrap();
    let listed = t.list_tokens().await.unwrap();
    assert_eq!(
        listed,
        vec![
            TokenInfo {
                id: "a".repeat(16),
                name: Some("ci".into()),
                env: SBX,
                created_ms: T0,
                last_used_ms: None,
                revoked_ms: None,
            },
            TokenInfo {
                id: "b".repeat(16),
                name: None,
                env: PROD,
                created_ms: T0 + 1,
                last_used_ms: None,
                revoked_ms: None,
            },
        ]
    );
    // Use times only move forward.
    t.touch_token(&a, T0 + 50).await.unwrap();
    t.touch_token(&a, T0 + 10).await.unwrap();
    assert_eq!(
        t.list_tokens().await.unwrap()[0].last_used_ms,
        Some(T0 + 50)
    );
    // Revoking names the token by id; a second revoke finds nothing to revoke.
    assert!(!t.revoke_token("0000000000000000", T0 + 60).await.unwrap());
    assert!(t.revoke_token(&"b".repeat(16), T0 + 60).await.unwrap());
    assert!(!t.revoke_token(&"b".repeat(16), T0 + 70).await.unwrap());
    assert_eq!(
        t.token_env(&b).await.unwrap(),
        None,
        "a revoked token authenticates nothing"
    );
    assert_eq!(t.token_env(&a).await.unwrap(), Some(SBX));
    let listed = t.list_tokens().await.unwrap();
    assert_eq!(listed[1].revoked_ms, Some(T0 + 60));
    assert_eq!(
        t.token_count().await.unwrap(),
        2,
        "revoked tokens still count"
    );
    // Another process sees the revocation at once (nothing is cached in the store).
    let other = db.reopen().await;
    assert_eq!(other.tokens.token_env(&b).await.unwrap(), None);
});

store_test!(
    two_processes_ingesting_overlapping_duplicates_count_each_once,
    |db| {
        let other = db.reopen().await;
        let mut tasks = Vec::new();
        // Four writers (two per "process") send every id twice, in different orders and groupings.
        for w in 0..4u32 {
            let stores = if w % 2 == 0 {
                db.stores.clone()
            } else {
                other.clone()
            };
            tasks.push(tokio::spawn(async move {
                let mut accepted = 0;
                for round in 0..10u32 {
                    let mut items = Vec::new();
                    for i in 0..50u32 {
                        let n = (i * 7 + round * 50 + w * 13) % 500;
                        items.push(count_item(
                            SBX,
                            &format!("t{n}"),
                            "c",
                            T0 + i64::from(n % 3) * HOUR,
                        ));
                    }
                    let out = stores
                        .usage
                        .commit_ingest(&items, T0)
                        .await
                        .expect("commit");
                    accepted += out.iter().filter(|o| **o == ItemOutcome::Accepted).count();
                }
                accepted
            }));
        }
        let mut accepted = 0;
        for t in tasks {
            accepted += t.await.expect("task");
        }
        // Every writer covers all 500 ids over its 10 rounds; each id is accepted exactly once.
        assert_eq!(accepted, 500);
        assert_eq!(
            quantity(&db.stores, SBX, "c", "m").await,
            Decimal::from(500)
        );
        assert_eq!(quantity(&other, SBX, "c", "m").await, Decimal::from(500));
    }
);

store_test!(
    two_processes_racing_for_a_batch_or_an_invoice_apply_it_once,
    |db| {
        let other = db.reopen().await;
        let partials = vec![(SBX, key("c", "m", T0), Accumulator::Count(2))];
        let (a, b) = tokio::join!(
            db.stores.usage.apply_batch("s", 7, &partials, &[], T0),
            other.usage.apply_batch("s", 7, &partials, &[], T0),
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!([a.applied, b.applied].iter().filter(|x| **x).count(), 1);
        assert_eq!(quantity(&db.stores, SBX, "c", "m").await, Decimal::from(2));

        db.stores
            .invoices
            .ensure_invoices(SBX, &[invoice("i", T0)])
            .await
            .unwrap();
        use InvoiceStatus::*;
        let (a, b) = tokio::join!(
            db.stores
                .invoices
                .transition_invoice(SBX, "i", Draft, Finalized, r#"{"by":"a"}"#),
            other
                .invoices
                .transition_invoice(SBX, "i", Draft, Finalized, r#"{"by":"b"}"#),
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert!(a ^ b, "exactly one finalizer wins: {a} {b}");
        let body = db
            .stores
            .invoices
            .invoice(SBX, "i")
            .await
            .unwrap()
            .unwrap()
            .body;
        assert_eq!(
            body.as_deref(),
            Some(if a { r#"{"by":"a"}"# } else { r#"{"by":"b"}"# })
        );
    }
);

store_test!(the_job_lock_admits_one_process_at_a_time, |db| {
    let other = db.reopen().await;
    let held = db.stores.jobs.try_job_lock().await.unwrap().expect("free");
    let second = other.jobs.try_job_lock().await.unwrap();
    match db.backend {
        // One process per SQLite file: there is no one to exclude.
        Backend::Sqlite => assert!(second.is_some()),
        Backend::Postgres => assert!(second.is_none(), "two replicas held the job lock"),
    }
    if let Some(g) = second {
        g.release().await.unwrap();
    }
    held.release().await.unwrap();
    let again = other.jobs.try_job_lock().await.unwrap().expect("released");
    // A guard dropped without release (a cancelled pass) frees the lock by closing its session.
    drop(again);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(g) = db.stores.jobs.try_job_lock().await.unwrap() {
            g.release().await.unwrap();
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a dropped guard kept the job lock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
});

/// PostgreSQL only: text it cannot store is the client's error (400), not an outage (503).
#[tokio::test]
async fn postgres_refuses_nul_text_as_invalid_input() {
    let db = TestDb::postgres().await;
    let err = db
        .stores
        .config
        .insert_customer(SBX, doc("customer", "c", None, "{}"), &["a\0b".to_string()])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err}");
}

/// PostgreSQL only: connections killed or refused fail requests with `Database` errors (503s),
/// and the same store works again once the database is back, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_recovers_after_the_database_comes_back() {
    let db = TestDb::postgres().await;
    let tokens = &db.stores.tokens;
    tokens.insert_token("h", SBX, None, T0).await.unwrap();
    let name = db.pg_name();
    let kill =
        format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'");

    // Every pooled connection dies: the pool notices and reconnects.
    admin_exec(&kill).await;
    assert_eq!(tokens.token_env("h").await.unwrap(), Some(SBX));

    // The database refuses connections: a clear database error, not a panic or a hang.
    admin_exec(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false")).await;
    admin_exec(&kill).await;
    let err = tokens.token_env("h").await.unwrap_err();
    assert!(matches!(err, StoreError::Database(_)), "{err}");

    admin_exec(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true")).await;
    assert_eq!(tokens.token_env("h").await.unwrap(), Some(SBX));
    assert_eq!(tokens.token_count().await.unwrap(), 1);
}

/// One LATEST value of `customer`'s metric "lat" at `hour`, for grain value `g`.
fn latest_item(tid: &str, customer: &str, g: &str, hour: i64, value: i64) -> IngestItem {
    let key = PartialKey {
        customer_ref: customer.to_string(),
        metric_id: "lat".to_string(),
        groups: vec![Some(g.to_string())],
        hour_ms: T0 + hour * 3_600_000,
    };
    let acc = Accumulator::Latest {
        timestamp_ms: key.hour_ms + 60_000,
        transaction_id: tid.to_string(),
        value: Decimal::from(value),
    };
    IngestItem {
        env: SBX,
        transaction_id: tid.to_string(),
        contributions: vec![(key, acc)],
        event: None,
    }
}

store_test!(latest_rows_before_are_the_most_recent_row_per_grain, |db| {
    let u = &db.stores.usage;
    let items = [
        latest_item("a1", "c", "x", 0, 5),
        latest_item("a2", "c", "x", 3, 7),
        latest_item("a3", "c", "x", 9, 11), // at the bound: not before it
        latest_item("b1", "c", "y", 1, 2),
        latest_item("b2", "alias", "x", 2, 4),
        latest_item("b3", "other", "x", 4, 100), // another customer's reference
    ];
    u.commit_ingest(&items, T0).await.unwrap();
    let refs = ["c".to_string(), "alias".to_string()];
    let metric = ["lat".to_string()];
    let before = T0 + 9 * 3_600_000;
    let mut got: Vec<(i64, Vec<Option<String>>, Decimal)> = u
        .latest_rows_before(SBX, &refs, &metric, before)
        .await
        .unwrap()
        .into_iter()
        .map(|r| ((r.hour_ms - T0) / 3_600_000, r.groups, r.acc.quantity()))
        .collect();
    got.sort();
    let g = |v: &str| vec![Some(v.to_string())];
    let want = vec![
        (1, g("y"), Decimal::from(2)),
        (2, g("x"), Decimal::from(4)),
        (3, g("x"), Decimal::from(7)),
    ];
    assert_eq!(got, want);
    // The same answer as merging every earlier row, per grain.
    let all = u
        .usage_rows(SBX, &refs, &metric, i64::MIN, before)
        .await
        .unwrap();
    for grain in ["x", "y"] {
        let merge = |rows: Vec<&tally_core::rating::UsageRow>| {
            tally_core::accumulate::merge_all(rows.into_iter().map(|r| &r.acc)).unwrap()
        };
        let latest = u
            .latest_rows_before(SBX, &refs, &metric, before)
            .await
            .unwrap();
        let pick = |rows: &[tally_core::rating::UsageRow]| -> Vec<_> {
            rows.iter()
                .filter(|r| r.groups == g(grain))
                .cloned()
                .collect()
        };
        let (a, b) = (pick(&all), pick(&latest));
        assert_eq!(merge(a.iter().collect()), merge(b.iter().collect()));
    }
    assert!(u
        .latest_rows_before(PROD, &refs, &metric, before)
        .await
        .unwrap()
        .is_empty());
    assert!(u
        .latest_rows_before(SBX, &refs, &metric, T0)
        .await
        .unwrap()
        .is_empty());
});

// ---------------------------------------------------------------------------------------------
// Rollups (issue 17): the day and month rows are the merge of their hours.

/// Seeded usage of every aggregation over ~50 days from `T0`: `(key, accumulator)` pairs.
fn seeded_usage(seed: u64, n: u64) -> Vec<(PartialKey, Accumulator)> {
    let mut s = seed;
    let mut next = move |m: u64| {
        s = s
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (s >> 33) % m
    };
    (0..n)
        .map(|i| {
            let hour_ms = T0 + i64::try_from(next(50 * 24)).unwrap() * HOUR;
            let value = Decimal::new(i64::try_from(next(100_000)).unwrap(), 3);
            let (metric, acc) = match next(5) {
                0 => ("c", Accumulator::Count(next(9) + 1)),
                1 => ("s", Accumulator::Sum(value)),
                2 => ("x", Accumulator::Max(value)),
                3 => ("u", Accumulator::Unique([format!("v{}", next(11))].into())),
                _ => (
                    "l",
                    Accumulator::Latest {
                        timestamp_ms: hour_ms + i64::try_from(next(HOUR as u64)).unwrap(),
                        transaction_id: format!("t{i}"),
                        value,
                    },
                ),
            };
            let key = PartialKey {
                customer_ref: "c".into(),
                metric_id: metric.into(),
                groups: vec![Some(format!("g{}", next(3)))],
                hour_ms,
            };
            (key, acc)
        })
        .collect()
}

const ROLLUP_METRICS: [&str; 5] = ["c", "s", "x", "u", "l"];

/// The rows of `level`, keyed by (metric, groups, block start), as stored or as merged from the
/// hourly rows.
async fn level_map(
    s: &Stores,
    level: tally_core::rollup::Level,
    from_hours: bool,
) -> std::collections::BTreeMap<(String, Vec<Option<String>>, i64), Accumulator> {
    let metrics: Vec<String> = ROLLUP_METRICS.iter().map(|m| m.to_string()).collect();
    let read = if from_hours {
        tally_core::rollup::Level::Hour
    } else {
        level
    };
    let range = tally_core::rollup::Range {
        level: read,
        from_ms: i64::MIN,
        to_ms: i64::MAX,
    };
    let rows = s
        .usage
        .level_rows(SBX, &["c".to_string()], &metrics, range)
        .await
        .unwrap();
    let mut out = std::collections::BTreeMap::new();
    for r in rows {
        let key = (r.metric_id, r.groups, level.block_start(r.hour_ms));
        match out.get_mut(&key) {
            Some(acc) => Accumulator::merge(acc, &r.acc).unwrap(),
            None => {
                out.insert(key, r.acc);
            }
        }
    }
    out
}

/// Runs the compactor until no day is dirty; returns the days it rolled up.
async fn compact_all(s: &Stores) -> usize {
    let mut days = 0;
    loop {
        let done = s.usage.compact_rollups(16).await.unwrap();
        assert_eq!(done.failed, 0);
        if done.days == 0 {
            return days;
        }
        days += done.days;
    }
}

async fn assert_rollups_in_step(s: &Stores) {
    use tally_core::rollup::Level;
    for level in Level::ROLLUPS {
        let stored = level_map(s, level, false).await;
        assert!(stored.len() > 10, "{level:?}: {} rows", stored.len());
        assert_eq!(stored, level_map(s, level, true).await, "{level:?}");
    }
}

store_test!(
    rollups_are_the_merge_of_their_hours_by_ingest_and_batch,
    |db| {
        let u = &db.stores.usage;
        let usage = seeded_usage(7, 1_200);
        let (native, batched) = usage.split_at(700);
        for (n, chunk) in native.chunks(90).enumerate() {
            let items: Vec<IngestItem> = chunk
                .iter()
                .enumerate()
                .map(|(i, (key, acc))| IngestItem {
                    env: SBX,
                    transaction_id: format!("n{n}-{i}"),
                    contributions: vec![(key.clone(), acc.clone())],
                    event: None,
                })
                .collect();
            let outcomes = u.commit_ingest(&items, T0).await.unwrap();
            assert!(outcomes.iter().all(|o| *o == ItemOutcome::Accepted));
        }
        for (seq, chunk) in batched.chunks(120).enumerate() {
            let partials: Vec<(Env, PartialKey, Accumulator)> = chunk
                .iter()
                .map(|(k, a)| (SBX, k.clone(), a.clone()))
                .collect();
            let done = u
                .apply_batch("shard-r", u64::try_from(seq).unwrap(), &partials, &[], T0)
                .await
                .unwrap();
            assert!(done.applied && done.dead_letters.is_empty());
        }
        // Ingest wrote hours only and marked their days; the compactor rolls them up, in runs
        // of 16 days, and a second pass finds nothing left.
        assert!(compact_all(&db.stores).await > 16);
        assert_eq!(compact_all(&db.stores).await, 0);
        assert_rollups_in_step(&db.stores).await;
        // Nothing leaks into the other environment.
        let range = tally_core::rollup::Range {
            level: tally_core::rollup::Level::Month,
            from_ms: i64::MIN,
            to_ms: i64::MAX,
        };
        let metrics: Vec<String> = ROLLUP_METRICS.iter().map(|m| m.to_string()).collect();
        assert!(u
            .level_rows(PROD, &["c".to_string()], &metrics, range)
            .await
            .unwrap()
            .is_empty());
    }
);

store_test!(
    a_day_whose_rollup_would_overflow_stays_dirty_and_is_read_by_the_hour,
    |db| {
        let u = &db.stores.usage;
        let big = |tid: &str, hour_ms: i64, v: Decimal| IngestItem {
            env: SBX,
            transaction_id: tid.into(),
            contributions: vec![(key("c", "s", hour_ms), Accumulator::Sum(v))],
            event: None,
        };
        let near = Decimal::MAX - Decimal::from(10);
        let first = u.commit_ingest(&[big("a", T0, near)], T0).await.unwrap();
        assert_eq!(first, [ItemOutcome::Accepted]);
        let day = tally_core::rollup::Level::Day.block_start(T0);
        let dirty = || async {
            u.dirty_days(
                SBX,
                &["c".to_string()],
                &["s".to_string()],
                T0,
                T0 + HOUR * 48,
            )
            .await
            .unwrap()
        };
        assert_eq!(dirty().await, [day]);
        assert_eq!(compact_all(&db.stores).await, 1);
        assert!(dirty().await.is_empty());
        // Another hour of the same day: its hourly row is new and fits, but the day's total
        // would pass the decimal range. The hour is kept; the day cannot be rolled up, so it
        // stays dirty (readers read it by the hour) and the compactor skips it until it is
        // written again.
        let second = u
            .commit_ingest(&[big("b", T0 + HOUR, Decimal::from(11))], T0)
            .await
            .unwrap();
        assert_eq!(second, [ItemOutcome::Accepted]);
        let done = u.compact_rollups(16).await.unwrap();
        assert_eq!((done.days, done.failed), (1, 1));
        assert_eq!(dirty().await, [day]);
        assert_eq!(u.compact_rollups(16).await.unwrap().days, 0);
        let range = tally_core::rollup::Range {
            level: tally_core::rollup::Level::Day,
            from_ms: i64::MIN,
            to_ms: i64::MAX,
        };
        let rows = u
            .level_rows(SBX, &["c".to_string()], &["s".to_string()], range)
            .await
            .unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].acc, Accumulator::Sum(near));
        let hours = u
            .usage_rows(
                SBX,
                &["c".to_string()],
                &["s".to_string()],
                T0,
                T0 + 2 * HOUR,
            )
            .await
            .unwrap();
        assert_eq!(hours.len(), 2);
    }
);

/// Runs SQL statements on the test database directly (what an older version left behind).
async fn raw_exec(db: &TestDb, statements: &[&str]) {
    use sqlx::Connection;
    match db.backend {
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
            for s in statements {
                sqlx::query(s).execute(&mut c).await.unwrap();
            }
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
            for s in statements {
                sqlx::query(s).execute(&mut c).await.unwrap();
            }
        }
    }
}

store_test!(
    hourly_rows_without_rollups_are_rolled_up_once_marked,
    |db| {
        let u = &db.stores.usage;
        let items: Vec<IngestItem> = seeded_usage(11, 500)
            .into_iter()
            .enumerate()
            .map(|(i, (key, acc))| IngestItem {
                env: SBX,
                transaction_id: format!("t{i}"),
                contributions: vec![(key, acc)],
                event: None,
            })
            .collect();
        u.commit_ingest(&items, T0).await.unwrap();
        compact_all(&db.stores).await;
        // What migration 0018 leaves: no rollup rows, every day with hours marked.
        raw_exec(
            db,
            &[
                "DELETE FROM usage_daily",
                "DELETE FROM usage_days2",
                "DELETE FROM usage_days4",
                "DELETE FROM usage_days8",
                "DELETE FROM usage_days16",
                "DELETE FROM usage_monthly",
                "INSERT INTO usage_dirty (env, customer_ref, metric_id, day_ms, gen)
                 SELECT DISTINCT env, customer_ref, metric_id, hour_ms - (hour_ms % 86400000), 1
                 FROM usage_hourly",
            ],
        )
        .await;
        let reopened = db.reopen().await;
        assert!(compact_all(&reopened).await > 0);
        assert_rollups_in_step(&reopened).await;
        // Rolled up once: compacting again changes nothing.
        assert_eq!(compact_all(&reopened).await, 0);
        assert_rollups_in_step(&reopened).await;
    }
);

store_test!(
    compaction_racing_ingest_and_batches_leaves_every_rollup_the_merge_of_its_hours,
    |db| {
        let usage = seeded_usage(23, 1_600);
        let u = db.stores.usage.clone();
        // Compaction runs without pause while 16 writers ingest and apply batches into the same
        // days: a day written during a run must stay dirty, never lose its new hours.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let compactor = {
            let (u, stop) = (u.clone(), stop.clone());
            tokio::spawn(async move {
                let mut runs = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    u.compact_rollups(4).await.unwrap();
                    runs += 1;
                }
                runs
            })
        };
        let mut writers = Vec::new();
        for (w, chunk) in usage.chunks(100).enumerate() {
            let (u, chunk) = (u.clone(), chunk.to_vec());
            writers.push(tokio::spawn(async move {
                for (n, part) in chunk.chunks(10).enumerate() {
                    if w % 2 == 0 {
                        let items: Vec<IngestItem> = part
                            .iter()
                            .enumerate()
                            .map(|(i, (key, acc))| IngestItem {
                                env: SBX,
                                transaction_id: format!("w{w}-{n}-{i}"),
                                contributions: vec![(key.clone(), acc.clone())],
                                event: None,
                            })
                            .collect();
                        u.commit_ingest(&items, T0).await.unwrap();
                    } else {
                        let partials: Vec<(Env, PartialKey, Accumulator)> = part
                            .iter()
                            .map(|(k, a)| (SBX, k.clone(), a.clone()))
                            .collect();
                        let seq = u64::try_from(n).unwrap();
                        u.apply_batch(&format!("shard-{w}"), seq, &partials, &[], T0)
                            .await
                            .unwrap();
                    }
                }
            }));
        }
        for w in writers {
            w.await.unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(compactor.await.unwrap() > 0);
        compact_all(&db.stores).await;
        assert_rollups_in_step(&db.stores).await;
    }
);

fn outbox_msg(id: &str, at: i64) -> NewOutboxMessage {
    NewOutboxMessage {
        id: id.to_string(),
        env: SBX,
        topic: OUTBOX_WEBHOOK.to_string(),
        kind: "invoice.finalized".to_string(),
        destination: "ep".to_string(),
        payload: format!(r#"{{"id":"{id}"}}"#),
        created_ms: at,
    }
}

store_test!(
    outbox_messages_commit_with_their_unit_of_work_and_are_claimed_once,
    |db| {
        // Rolled back with its unit of work: never delivered.
        let mut work = db.stores.invoices.begin().await.unwrap();
        work.put_outbox(&outbox_msg("lost", T0)).await.unwrap();
        drop(work);
        const N: usize = 40;
        let mut work = db.stores.invoices.begin().await.unwrap();
        for i in 0..N {
            let m = outbox_msg(&format!("m{i:02}"), T0);
            work.put_outbox(&m).await.unwrap();
            // The same id twice is one message.
            work.put_outbox(&m).await.unwrap();
        }
        work.commit().await.unwrap();
        assert!(
            db.stores
                .outbox
                .claim_outbox("early", T0 - 1, T0 + 1_000, 100)
                .await
                .unwrap()
                .is_empty(),
            "nothing is due before it was written"
        );

        // Claimers on two independent pools, many at once, small batches: each message once.
        let other = db.reopen().await;
        let mut tasks = Vec::new();
        for c in 0..8 {
            let stores = if c % 2 == 0 {
                db.stores.clone()
            } else {
                other.clone()
            };
            tasks.push(tokio::spawn(async move {
                let owner = format!("owner{c}");
                let mut got = Vec::new();
                loop {
                    let batch = stores
                        .outbox
                        .claim_outbox(&owner, T0, T0 + 60_000, 3)
                        .await
                        .unwrap();
                    if batch.is_empty() {
                        return (owner, got);
                    }
                    got.extend(batch);
                }
            }));
        }
        let mut claimed = Vec::new();
        for t in tasks {
            let (owner, got) = t.await.unwrap();
            claimed.extend(got.into_iter().map(|m| (owner.clone(), m)));
        }
        let ids: BTreeSet<&str> = claimed.iter().map(|(_, m)| m.id.as_str()).collect();
        assert_eq!(claimed.len(), N, "each message leased once");
        assert_eq!(ids.len(), N);
        assert!(!ids.contains("lost"));
        assert!(claimed.iter().all(|(_, m)| m.attempts == 1 && m.env == SBX));

        // Outcomes: delivered, retried later, given up; a retry by a process that lost the lease is
        // ignored.
        let (o0, m0) = &claimed[0];
        let (o1, m1) = &claimed[1];
        let (o2, m2) = &claimed[2];
        let outbox = &db.stores.outbox;
        outbox
            .finish_attempt(&m0.id, o0, &AttemptOutcome::Delivered, T0 + 5)
            .await
            .unwrap();
        let retry = AttemptOutcome::Retry {
            error: "HTTP 500".into(),
            next_attempt_ms: T0 + 100,
        };
        outbox
            .finish_attempt(&m1.id, "not-the-owner", &retry, T0 + 5)
            .await
            .unwrap();
        outbox
            .finish_attempt(&m1.id, o1, &retry, T0 + 5)
            .await
            .unwrap();
        let give_up = AttemptOutcome::GiveUp {
            error: "archived".into(),
        };
        outbox
            .finish_attempt(&m2.id, o2, &give_up, T0 + 6)
            .await
            .unwrap();

        // At T0 + 100 only the retried message is due (the others are leased for a minute).
        let again = outbox
            .claim_outbox("later", T0 + 100, T0 + 200, 100)
            .await
            .unwrap();
        assert_eq!(
            again.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
            [m1.id.as_str()]
        );
        assert_eq!(again[0].attempts, 2);
        assert_eq!(again[0].last_error.as_deref(), Some("HTTP 500"));
        // When the leases expire (their holders died), the undelivered ones are due again.
        let expired = outbox
            .claim_outbox("heir", T0 + 60_000, T0 + 70_000, 100)
            .await
            .unwrap();
        assert_eq!(
            expired.len(),
            N - 2,
            "all but the delivered and the given-up one"
        );

        let log = outbox
            .outbox_for_destination(SBX, "ep", None, 100)
            .await
            .unwrap();
        assert_eq!(log.len(), N);
        let by_id = |id: &str| log.iter().find(|m| m.id == id).unwrap().clone();
        assert_eq!(by_id(&m0.id).delivered_ms, Some(T0 + 5));
        assert_eq!(by_id(&m2.id).failed_ms, Some(T0 + 6));
        assert_eq!(by_id(&m2.id).last_error.as_deref(), Some("archived"));
        let page = outbox
            .outbox_for_destination(SBX, "ep", Some((T0, "m09".into())), 5)
            .await
            .unwrap();
        assert_eq!(
            page.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
            ["m10", "m11", "m12", "m13", "m14"]
        );
        assert!(outbox
            .outbox_for_destination(PROD, "ep", None, 100)
            .await
            .unwrap()
            .is_empty());

        // Pruning forgets finished messages written before the cutoff, never pending ones.
        assert_eq!(outbox.prune_outbox(T0).await.unwrap(), 0);
        assert_eq!(
            outbox.prune_outbox(T0 + 1).await.unwrap(),
            2,
            "the delivered and the given-up one"
        );
        let left = outbox
            .outbox_for_destination(SBX, "ep", None, 100)
            .await
            .unwrap();
        assert_eq!(left.len(), N - 2);
        assert!(left
            .iter()
            .all(|m| m.delivered_ms.is_none() && m.failed_ms.is_none()));

        // The secret: per environment, replaced by a second set.
        assert_eq!(outbox.webhook_secret(SBX).await.unwrap(), None);
        outbox.set_webhook_secret(SBX, "one", T0).await.unwrap();
        outbox.set_webhook_secret(SBX, "two", T0 + 1).await.unwrap();
        assert_eq!(
            outbox.webhook_secret(SBX).await.unwrap().as_deref(),
            Some("two")
        );
        assert_eq!(outbox.webhook_secret(PROD).await.unwrap(), None);
    }
);

fn alert_state(status: &str, fires: i64, version: i64) -> store::AlertState {
    store::AlertState {
        alert_id: "alert".into(),
        customer_id: "cust".into(),
        status: status.into(),
        fires,
        value: Some("100".into()),
        triggered_by: Some("usage".into()),
        version,
        updated_ms: T0,
    }
}

store_test!(
    alert_states_change_by_compare_and_set_with_their_messages,
    |db| {
        assert_eq!(
            db.stores
                .alerts
                .alert_state(SBX, "alert", "cust")
                .await
                .unwrap(),
            None
        );
        // Evaluators on two independent pools, all having read "no state yet", race to put the
        // first crossing, each with its message: one wins, and only its message exists.
        let other = db.reopen().await;
        let mut tasks = Vec::new();
        for c in 0..8 {
            let stores = if c % 2 == 0 {
                db.stores.clone()
            } else {
                other.clone()
            };
            tasks.push(tokio::spawn(async move {
                let mut work = stores.invoices.begin().await.unwrap();
                let won = work
                    .put_alert_state(SBX, &alert_state("in_alarm", 1, 1), None)
                    .await
                    .unwrap();
                if won {
                    work.put_outbox(&outbox_msg(&format!("fire-{c}"), T0))
                        .await
                        .unwrap();
                    work.commit().await.unwrap();
                }
                won
            }));
        }
        let mut winners = 0;
        for t in tasks {
            winners += usize::from(t.await.unwrap());
        }
        assert_eq!(winners, 1, "one evaluator changes the state");
        let fired = db
            .stores
            .outbox
            .claim_outbox("o", T0, T0 + 1_000, 100)
            .await
            .unwrap();
        assert_eq!(fired.len(), 1, "{fired:?}");
        let s = db
            .stores
            .alerts
            .alert_state(SBX, "alert", "cust")
            .await
            .unwrap()
            .expect("a state");
        assert_eq!((s.status.as_str(), s.fires, s.version), ("in_alarm", 1, 1));

        // A stale version changes nothing; the read one does, once.
        let mut work = db.stores.invoices.begin().await.unwrap();
        assert!(!work
            .put_alert_state(SBX, &alert_state("ok", 1, 2), Some(7))
            .await
            .unwrap());
        assert!(work
            .put_alert_state(SBX, &alert_state("ok", 1, 2), Some(1))
            .await
            .unwrap());
        assert!(!work
            .put_alert_state(SBX, &alert_state("in_alarm", 2, 2), Some(1))
            .await
            .unwrap());
        work.commit().await.unwrap();
        // Rolled back with its unit of work: the state is as it was.
        let mut work = db.stores.invoices.begin().await.unwrap();
        assert!(work
            .put_alert_state(SBX, &alert_state("in_alarm", 2, 3), Some(2))
            .await
            .unwrap());
        drop(work);
        let s = db.stores.alerts.alert_state(SBX, "alert", "cust").await;
        let s = s.unwrap().expect("a state");
        assert_eq!((s.status.as_str(), s.version), ("ok", 2));

        // A reset bumps the version (so an evaluation that read before it cannot land) and is
        // scoped by environment.
        db.stores
            .alerts
            .reset_alert_state(SBX, "alert", "cust", T0 + 1)
            .await
            .unwrap();
        db.stores
            .alerts
            .reset_alert_state(PROD, "alert", "cust", T0 + 1)
            .await
            .unwrap();
        let states = db.stores.alerts.alert_states(SBX, "cust").await.unwrap();
        assert_eq!(states.len(), 1);
        assert_eq!(
            (
                states[0].status.as_str(),
                states[0].version,
                states[0].fires
            ),
            ("evaluating", 3, 1)
        );
        assert!(db
            .stores
            .alerts
            .alert_states(PROD, "cust")
            .await
            .unwrap()
            .is_empty());
    }
);

store_test!(stripe_pushes_record_what_was_sent_once, |db| {
    use tally_central::store::NewStripePush;
    let push = |invoice: &str| NewStripePush {
        invoice_id: invoice.to_string(),
        customer_id: "cust".to_string(),
        stripe_customer_id: Some("cus_1".to_string()),
        created_ms: T0,
    };
    // Rolled back with its unit of work: no push.
    let mut work = db.stores.invoices.begin().await.unwrap();
    work.put_stripe_push(SBX, &push("lost")).await.unwrap();
    drop(work);
    let mut work = db.stores.invoices.begin().await.unwrap();
    work.put_stripe_push(SBX, &push("inv1")).await.unwrap();
    work.put_stripe_push(SBX, &push("inv1")).await.unwrap();
    work.put_stripe_push(SBX, &push("inv2")).await.unwrap();
    work.commit().await.unwrap();
    let stripe = &db.stores.stripe;
    assert!(stripe.stripe_push(SBX, "lost").await.unwrap().is_none());
    assert!(stripe.stripe_push(PROD, "inv1").await.unwrap().is_none());
    let p = stripe.stripe_push(SBX, "inv1").await.unwrap().unwrap();
    assert_eq!(
        (p.status.as_str(), p.stripe_invoice_id.clone()),
        ("QUEUED", None)
    );
    assert_eq!(p.stripe_customer_id.as_deref(), Some("cus_1"));

    // The first Stripe invoice recorded wins; items once per line.
    let first = stripe
        .record_stripe_invoice(SBX, "inv1", "in_a", T0 + 1)
        .await
        .unwrap();
    let second = stripe
        .record_stripe_invoice(SBX, "inv1", "in_b", T0 + 2)
        .await
        .unwrap();
    assert_eq!(
        (first.as_deref(), second.as_deref()),
        (Some("in_a"), Some("in_a"))
    );
    for (line, item) in [(1, "ii_1"), (0, "ii_0"), (1, "ii_other")] {
        stripe
            .record_stripe_item(SBX, "inv1", line, item, 100, T0 + 3)
            .await
            .unwrap();
    }
    stripe
        .set_stripe_status(
            SBX,
            "inv1",
            "INVALID_REQUEST_ERROR",
            Some("HTTP 404"),
            T0 + 4,
        )
        .await
        .unwrap();
    let p = stripe.stripe_push(SBX, "inv1").await.unwrap().unwrap();
    assert_eq!(
        p.items,
        vec![(0, "ii_0".to_string()), (1, "ii_1".to_string())]
    );
    assert_eq!(p.status, "INVALID_REQUEST_ERROR");
    assert_eq!(p.error.as_deref(), Some("HTTP 404"));
    stripe
        .set_stripe_status(SBX, "inv1", "FINALIZED", None, T0 + 5)
        .await
        .unwrap();
    let all = stripe.customer_stripe_pushes(SBX, "cust").await.unwrap();
    let mut seen: Vec<(String, String, Option<String>)> = all
        .into_iter()
        .map(|p| (p.invoice_id, p.status, p.error))
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("inv1".to_string(), "FINALIZED".to_string(), None),
            ("inv2".to_string(), "QUEUED".to_string(), None),
        ]
    );
    assert!(stripe
        .customer_stripe_pushes(PROD, "cust")
        .await
        .unwrap()
        .is_empty());
});

/// An event of `customer` at `ts` with one property, and its item contributing to `metrics`.
fn event_item(env: Env, tid: &str, customer: &str, ts: i64, metrics: &[&str]) -> IngestItem {
    let event = tally_core::event::Event {
        transaction_id: tid.to_string(),
        customer_id: customer.to_string(),
        event_type: "call".to_string(),
        timestamp_ms: ts,
        properties: [("n".to_string(), "1.50".to_string())].into(),
    };
    IngestItem {
        env,
        transaction_id: tid.to_string(),
        contributions: metrics
            .iter()
            .map(|m| (key(customer, m, ts / HOUR * HOUR), Accumulator::Count(1)))
            .collect(),
        event: Some(event),
    }
}

fn tids(events: &[tally_core::event::Event]) -> Vec<&str> {
    events.iter().map(|e| e.transaction_id.as_str()).collect()
}

store_test!(
    events_between_reads_counted_events_of_the_refs_in_time_order,
    |db| {
        let u = &db.stores.usage;
        let items = vec![
            event_item(SBX, "b", "c1", T0 + 5, &["m"]),
            event_item(SBX, "a", "c1", T0 + 5, &[]),
            event_item(SBX, "z", "alias", T0 + 1, &["m"]),
            // Before the range, at its end, another customer, another environment.
            event_item(SBX, "early", "c1", T0 - 1, &["m"]),
            event_item(SBX, "end", "c1", T0 + HOUR, &["m"]),
            event_item(SBX, "other", "c2", T0 + 2, &["m"]),
            event_item(PROD, "prod", "c1", T0 + 2, &["m"]),
        ];
        let outcomes = u.commit_ingest(&items, T0 + 7).await.unwrap();
        assert!(outcomes.iter().all(|o| *o == ItemOutcome::Accepted));
        // A duplicate delivery of "b" with other contents: stored as a duplicate, never counted.
        let mut dup = event_item(SBX, "b", "c1", T0 + 9, &["m"]);
        dup.event.as_mut().unwrap().event_type = "late".into();
        assert_eq!(
            u.commit_ingest(&[dup], T0 + 8).await.unwrap(),
            vec![ItemOutcome::Duplicate]
        );
        let refs = ["c1".to_string(), "alias".to_string()];
        let found = u.events_between(SBX, &refs, T0, T0 + HOUR).await.unwrap();
        assert_eq!(tids(&found), ["z", "a", "b"]);
        assert_eq!(found[2], items[0].event.clone().unwrap());
        assert_eq!(found[2].property("n"), Some("1.50"));
        // Bounds: from inclusive, to exclusive.
        let found = u
            .events_between(SBX, &refs, T0 - 1, T0 + HOUR + 1)
            .await
            .unwrap();
        assert_eq!(tids(&found), ["early", "z", "a", "b", "end"]);
        assert!(u
            .events_between(SBX, &refs, T0 + 6, T0 + HOUR)
            .await
            .unwrap()
            .is_empty());
        assert!(u
            .events_between(SBX, &[], T0, T0 + HOUR)
            .await
            .unwrap()
            .is_empty());
        let prod = u.events_between(PROD, &refs, T0, T0 + HOUR).await.unwrap();
        assert_eq!(tids(&prod), ["prod"]);

        // Search answers the counted row and the latest duplicate, with what each matched.
        let ids = ["b".to_string(), "a".to_string(), "nope".to_string()];
        let rows = u.search_events(SBX, &ids, T0).await.unwrap();
        let got: Vec<(&str, bool, &str, Vec<String>, i64)> = rows
            .iter()
            .map(|r| {
                (
                    r.event.transaction_id.as_str(),
                    r.duplicate,
                    r.event.event_type.as_str(),
                    r.matched_metrics.clone(),
                    r.processed_ms,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("a", false, "call", vec![], T0 + 7),
                ("b", false, "call", vec!["m".to_string()], T0 + 7),
                ("b", true, "late", vec!["m".to_string()], T0 + 8),
            ]
        );
        // The search window: a row whose timestamp is before `since` is not found.
        let rows = u.search_events(SBX, &ids, T0 + 6).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert!(rows[0].duplicate);
        // The next duplicate replaces the stored one; the counted row is untouched.
        let mut dup = event_item(SBX, "b", "c1", T0 + 3, &[]);
        dup.event.as_mut().unwrap().event_type = "later".into();
        let two = vec![dup.clone(), {
            let mut d = dup.clone();
            d.event.as_mut().unwrap().event_type = "latest".into();
            d
        }];
        assert_eq!(
            u.commit_ingest(&two, T0 + 10).await.unwrap(),
            vec![ItemOutcome::Duplicate, ItemOutcome::Duplicate]
        );
        let rows = u.search_events(SBX, &ids[..1], 0).await.unwrap();
        let types: Vec<(&str, bool)> = rows
            .iter()
            .map(|r| (r.event.event_type.as_str(), r.duplicate))
            .collect();
        assert_eq!(types, [("call", false), ("latest", true)]);
    }
);

store_test!(
    edge_batches_store_their_events_once_and_rejected_events_are_not_stored,
    |db| {
        let u = &db.stores.usage;
        let stored = |tid: &str, duplicate: bool, ty: &str| tally_core::event::StoredEvent {
            env: "sandbox".into(),
            event: tally_core::event::Event {
                transaction_id: tid.into(),
                customer_id: "c".into(),
                event_type: ty.into(),
                timestamp_ms: T0,
                properties: Default::default(),
            },
            matched_metrics: vec!["m2".into(), "m1".into()],
            processed_ms: T0 + 1,
            duplicate,
        };
        let events = vec![stored("e1", false, "a"), stored("e1", true, "b")];
        let partials = vec![(SBX, key("c", "m", T0), Accumulator::Count(1))];
        assert!(
            u.apply_batch("s", 1, &partials, &events, T0)
                .await
                .unwrap()
                .applied
        );
        // A replay changes nothing, even with other contents.
        let other = vec![stored("e1", false, "x"), stored("e2", false, "x")];
        assert!(
            !u.apply_batch("s", 1, &partials, &other, T0)
                .await
                .unwrap()
                .applied
        );
        // A later batch re-sending a counted event keeps the first; a duplicate replaces.
        let later = vec![stored("e1", false, "y"), stored("e1", true, "z")];
        assert!(
            u.apply_batch("s", 2, &[], &later, T0)
                .await
                .unwrap()
                .applied
        );
        let ids = ["e1".to_string(), "e2".to_string()];
        let rows = u.search_events(SBX, &ids, 0).await.unwrap();
        let got: Vec<(&str, bool, &str)> = rows
            .iter()
            .map(|r| {
                (
                    r.event.transaction_id.as_str(),
                    r.duplicate,
                    r.event.event_type.as_str(),
                )
            })
            .collect();
        assert_eq!(got, [("e1", false, "a"), ("e1", true, "z")]);
        assert_eq!(rows[0].matched_metrics, ["m1", "m2"]);

        // A native event whose merge overflows is rejected and not stored.
        let big = |tid: &str| {
            let mut item = event_item(SBX, tid, "c", T0, &[]);
            item.contributions = vec![(key("c", "s", T0), Accumulator::Sum(Decimal::MAX))];
            item
        };
        let outcomes = u
            .commit_ingest(&[big("ok"), big("over")], T0)
            .await
            .unwrap();
        assert_eq!(outcomes[0], ItemOutcome::Accepted);
        assert!(matches!(outcomes[1], ItemOutcome::Rejected(_)));
        let ids = ["ok".to_string(), "over".to_string()];
        let rows = u.search_events(SBX, &ids, 0).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].event.transaction_id, "ok");
    }
);

store_test!(prune_events_deletes_old_events_in_bounded_batches, |db| {
    let u = &db.stores.usage;
    let items: Vec<IngestItem> = (0..5)
        .map(|i| event_item(SBX, &format!("t{i}"), "c", T0 + i, &[]))
        .collect();
    u.commit_ingest(&items, T0).await.unwrap();
    assert_eq!(u.prune_events(T0 + 3, 2).await.unwrap(), 2);
    assert_eq!(u.prune_events(T0 + 3, 2).await.unwrap(), 1);
    assert_eq!(u.prune_events(T0 + 3, 2).await.unwrap(), 0);
    let left = u
        .events_between(SBX, &["c".to_string()], 0, T0 + 10)
        .await
        .unwrap();
    assert_eq!(tids(&left), ["t3", "t4"]);
});
