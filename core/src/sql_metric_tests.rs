use super::*;
use alloc::vec;
use core::str::FromStr;

fn ev(tx: &str, event_type: &str, ts: &str, props: &[(&str, &str)]) -> Event {
    Event {
        transaction_id: tx.into(),
        customer_id: "cust-alias".into(),
        event_type: event_type.into(),
        timestamp_ms: parse_rfc3339_ms(ts).unwrap(),
        properties: props
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn run(sql: &str, events: &[Event]) -> Vec<SqlRow> {
    SqlMetric::parse(sql)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .evaluate(events)
        .unwrap()
}

fn one(sql: &str, events: &[Event]) -> Option<Decimal> {
    let rows = run(sql, events);
    assert_eq!(rows.len(), 1, "{sql}");
    assert!(rows[0].groups.is_empty());
    rows[0].value
}

fn refused(sql: &str) -> String {
    match SqlMetric::parse(sql) {
        Ok(m) => panic!("{sql} was accepted: {m:?}"),
        Err(e) => e.message().to_string(),
    }
}

fn g(v: &[Option<&str>]) -> GroupValues {
    v.iter().map(|x| x.map(String::from)).collect()
}

/// Metronome's quickstart: unique users per region.
#[test]
fn quickstart_unique_users_per_region() {
    let t = "2024-05-01T10:00:00Z";
    let events = vec![
        ev("1", "api_call", t, &[("user_id", "u1"), ("region", "us")]),
        ev("2", "api_call", t, &[("user_id", "u1"), ("region", "us")]),
        ev("3", "api_call", t, &[("user_id", "u2"), ("region", "us")]),
        ev("4", "api_call", t, &[("user_id", "u1"), ("region", "eu")]),
        ev("5", "other", t, &[("user_id", "u9"), ("region", "eu")]),
        ev("6", "api_call", t, &[("user_id", "u3")]),
        ev("7", "api_call", t, &[("region", "eu")]),
    ];
    let sql = "SELECT count(DISTINCT properties.user_id) AS value, properties.region AS region \
               FROM events WHERE event_type = 'api_call' GROUP BY properties.region";
    let m = SqlMetric::parse(sql).unwrap();
    assert_eq!(m.group_keys(), ["region"]);
    let rows = m.evaluate(&events).unwrap();
    // NULL region (event 6) sorts first; event 7 has no user id, so eu counts u1 only.
    assert_eq!(
        rows,
        vec![
            SqlRow {
                groups: g(&[None]),
                value: Some(d("1"))
            },
            SqlRow {
                groups: g(&[Some("eu")]),
                value: Some(d("1"))
            },
            SqlRow {
                groups: g(&[Some("us")]),
                value: Some(d("2"))
            },
        ]
    );
}

#[test]
fn counts_sums_extremes_and_averages() {
    let t = "2024-05-01T10:00:00Z";
    let events = vec![
        ev("1", "x", t, &[("n", "1")]),
        ev("2", "x", t, &[("n", "1")]),
        ev("3", "x", t, &[("n", "2")]),
        ev("4", "x", t, &[("n", "oops")]),
        ev("5", "x", t, &[]),
    ];
    assert_eq!(
        one("SELECT COUNT(*) AS value FROM events", &events),
        Some(d("5"))
    );
    // COUNT(col) counts non-NULL values, numeric or not.
    assert_eq!(
        one("SELECT COUNT(properties.n) AS value FROM events", &events),
        Some(d("4"))
    );
    assert_eq!(
        one(
            "SELECT COUNT(DISTINCT properties.n) AS value FROM events",
            &events
        ),
        Some(d("3"))
    );
    // Non-numeric text is not a number: SUM/MAX/MIN/AVG skip it like a NULL.
    assert_eq!(
        one("SELECT SUM(properties.n) AS value FROM events", &events),
        Some(d("4"))
    );
    assert_eq!(
        one("SELECT MAX(properties.n) AS value FROM events", &events),
        Some(d("2"))
    );
    assert_eq!(
        one("SELECT MIN(properties.n) AS value FROM events", &events),
        Some(d("1"))
    );
    // 4 / 3 = 1.333... rounded half-even to 12 places.
    assert_eq!(
        one("SELECT AVG(properties.n) AS value FROM events", &events),
        Some(d("1.333333333333"))
    );
}

#[test]
fn averages_exact_rounded_and_huge() {
    let t = "2024-05-01T10:00:00Z";
    let avg = |vals: &[&str]| {
        let events: Vec<Event> = vals
            .iter()
            .enumerate()
            .map(|(i, v)| ev(&i.to_string(), "x", t, &[("n", v)]))
            .collect();
        one("SELECT AVG(properties.n) AS value FROM events", &events)
    };
    // 2 / 3 = 0.6666... rounds up at the 12th place.
    assert_eq!(avg(&["1", "1", "0"]), Some(d("0.666666666667")));
    // An exact quotient keeps its digits, beyond 12 places too.
    assert_eq!(
        avg(&["0.00000000000001", "0.00000000000003"]),
        Some(d("0.00000000000002"))
    );
    assert_eq!(avg(&["10", "5"]), Some(d("7.5")));
    // Huge values: 3 × 26,000,000,000,000,000,000,000,000,000 = 7.8e28 fits; their sum + 1 / 3 has
    // no room for decimals and rounds half-even to an integer.
    assert_eq!(
        avg(&[
            "26000000000000000000000000000",
            "26000000000000000000000000000",
            "26000000000000000000000000001"
        ]),
        Some(d("26000000000000000000000000000"))
    );
    // A sum past the decimal range is an error, not a wrong number.
    let big = "79000000000000000000000000000";
    let events = vec![
        ev("1", "x", t, &[("n", big)]),
        ev("2", "x", t, &[("n", big)]),
    ];
    let m = SqlMetric::parse("SELECT SUM(properties.n) AS value FROM events").unwrap();
    assert_eq!(m.evaluate(&events), Err(EvalError::Overflow));
    // Tiny values sum exactly.
    let tiny = vec![
        ev("1", "x", t, &[("n", "0.0000000000000000000000000001")]),
        ev("2", "x", t, &[("n", "0.0000000000000000000000000002")]),
        ev("3", "x", t, &[("n", "-1e-28")]),
    ];
    assert_eq!(
        one("SELECT SUM(properties.n) AS value FROM events", &tiny),
        Some(d("0.0000000000000000000000000002"))
    );
    assert_eq!(
        one("SELECT MIN(properties.n) AS value FROM events", &tiny),
        Some(d("-0.0000000000000000000000000001"))
    );
}

#[test]
fn empty_input_follows_sql() {
    // Ungrouped: one row; COUNT of nothing is 0, SUM/MAX/AVG of nothing is NULL.
    assert_eq!(
        one("SELECT COUNT(*) AS value FROM events", &[]),
        Some(d("0"))
    );
    assert_eq!(
        one("SELECT SUM(properties.n) AS value FROM events", &[]),
        None
    );
    assert_eq!(
        one("SELECT AVG(properties.n) AS value FROM events", &[]),
        None
    );
    // Grouped: no groups at all.
    assert!(run(
        "SELECT COUNT(*) AS value, properties.r FROM events GROUP BY properties.r",
        &[]
    )
    .is_empty());
    // A group whose events carry no number has a NULL sum.
    let t = "2024-05-01T10:00:00Z";
    let rows = run(
        "SELECT SUM(properties.n) AS value, properties.r AS r FROM events GROUP BY r",
        &[
            ev("1", "x", t, &[("r", "a")]),
            ev("2", "x", t, &[("r", "b"), ("n", "2.50")]),
        ],
    );
    assert_eq!(
        rows,
        vec![
            SqlRow {
                groups: g(&[Some("a")]),
                value: None
            },
            SqlRow {
                groups: g(&[Some("b")]),
                value: Some(d("2.50"))
            },
        ]
    );
}

#[test]
fn compound_groups_follow_the_sorted_grain() {
    let t = "2024-05-01T10:00:00Z";
    let events = vec![
        ev("1", "x", t, &[("region", "eu"), ("model", "b"), ("n", "1")]),
        ev("2", "x", t, &[("region", "eu"), ("model", "a"), ("n", "2")]),
        ev("3", "x", t, &[("region", "eu"), ("model", "a"), ("n", "3")]),
        ev("4", "y", t, &[("region", "us"), ("model", "a"), ("n", "4")]),
    ];
    let sql = "SELECT properties.region AS zone, SUM(properties.n) AS value, properties.model, event_type \
               FROM events GROUP BY zone, properties.model, event_type";
    let m = SqlMetric::parse(sql).unwrap();
    assert_eq!(m.group_keys(), ["zone", "model", "event_type"]);
    assert_eq!(m.grain(), ["event_type", "model", "zone"]);
    assert_eq!(
        m.evaluate(&events).unwrap(),
        vec![
            SqlRow {
                groups: g(&[Some("x"), Some("a"), Some("eu")]),
                value: Some(d("5"))
            },
            SqlRow {
                groups: g(&[Some("x"), Some("b"), Some("eu")]),
                value: Some(d("1"))
            },
            SqlRow {
                groups: g(&[Some("y"), Some("a"), Some("us")]),
                value: Some(d("4"))
            },
        ]
    );
}

#[test]
fn where_clauses() {
    let t = "2024-05-01T10:00:00Z";
    let events = vec![
        ev(
            "a",
            "call",
            t,
            &[("tier", "gold"), ("n", "10"), ("path", "/v1/x")],
        ),
        ev(
            "b",
            "call",
            t,
            &[("tier", "silver"), ("n", "9.5"), ("path", "/v2/x")],
        ),
        ev("c", "call", t, &[("tier", "gold"), ("n", "100")]),
        ev("d", "ping", t, &[("n", "x")]),
        ev("e", "call", t, &[("n", "-3")]),
    ];
    let count = |cond: &str| {
        one(
            &format!("SELECT COUNT(*) AS value FROM events WHERE {cond}"),
            &events,
        )
        .unwrap()
        .to_string()
    };
    assert_eq!(count("properties.tier = 'gold'"), "2");
    // NULL tier: neither = nor <> holds.
    assert_eq!(count("properties.tier <> 'gold'"), "1");
    assert_eq!(count("properties.tier != 'gold'"), "1");
    assert_eq!(count("properties.tier IS NULL"), "2");
    assert_eq!(count("properties.tier IS NOT NULL"), "3");
    // Number literal: numeric comparison (10 < 100, whereas '10' > '100' as text); "x" is unknown.
    assert_eq!(count("properties.n > 9.5"), "2");
    assert_eq!(count("properties.n >= 9.5"), "3");
    assert_eq!(count("properties.n < 0"), "1");
    assert_eq!(count("properties.n <= -3"), "1");
    assert_eq!(count("properties.n = 10.0"), "1");
    // Text literal: text comparison.
    assert_eq!(count("properties.n = '10.0'"), "0");
    assert_eq!(count("properties.n > '2'"), "2");
    assert_eq!(count("NOT properties.n > 9.5"), "2");
    assert_eq!(count("properties.n BETWEEN 9.5 AND 10"), "2");
    assert_eq!(count("properties.n NOT BETWEEN 9.5 AND 10"), "2");
    assert_eq!(count("event_type IN ('call', 'x')"), "4");
    assert_eq!(count("event_type NOT IN ('call')"), "1");
    // NOT IN with a NULL in the list is never true (SQL).
    assert_eq!(count("event_type NOT IN ('call', NULL)"), "0");
    assert_eq!(
        count("properties.tier IN ('gold') OR properties.n < 0"),
        "3"
    );
    assert_eq!(
        count("(properties.tier = 'gold' OR properties.tier = 'silver') AND properties.n < 50"),
        "2"
    );
    assert_eq!(count("properties.path LIKE '/v1/%'"), "1");
    assert_eq!(count("properties.path NOT LIKE '/v_/x'"), "0");
    assert_eq!(count("properties.path LIKE '%x'"), "2");
    assert_eq!(count("properties.tier = NULL"), "0");
    assert_eq!(count("transaction_id = 'c'"), "1");
    assert_eq!(count("customer_id = 'cust-alias'"), "5");
    assert_eq!(count("events.properties.tier = 'gold'"), "2");
}

#[test]
fn quoted_property_names() {
    let t = "2024-05-01T10:00:00Z";
    let events = vec![ev("1", "x", t, &[("the region", "eu"), ("Units", "3")])];
    let rows = run(
        "SELECT SUM(properties.\"Units\") AS value, properties.\"the region\" AS r FROM events GROUP BY r",
        &events,
    );
    assert_eq!(
        rows,
        vec![SqlRow {
            groups: g(&[Some("eu")]),
            value: Some(d("3"))
        }]
    );
    // An unaliased quoted column is named after the property.
    let m = SqlMetric::parse(
        "SELECT COUNT(*) AS value, properties.\"the region\" FROM events GROUP BY properties.\"the region\"",
    )
    .unwrap();
    assert_eq!(m.group_keys(), ["the region"]);
}

#[test]
fn timestamp_bounds_are_instants() {
    let events = vec![
        ev("1", "x", "2024-05-01T00:00:00Z", &[]),
        ev("2", "x", "2024-05-01T23:59:59.999Z", &[]),
        ev("3", "x", "2024-05-02T00:00:00Z", &[]),
    ];
    let count = |cond: &str| {
        one(
            &format!("SELECT COUNT(*) AS value FROM events WHERE {cond}"),
            &events,
        )
        .unwrap()
        .to_string()
    };
    assert_eq!(
        count("timestamp >= '2024-05-01T00:00:00Z' AND timestamp < '2024-05-02T00:00:00Z'"),
        "2"
    );
    // Other offsets are the same instant.
    assert_eq!(count("timestamp < '2024-05-02T02:00:00+02:00'"), "2");
    assert_eq!(count("timestamp > '2024-05-01T23:59:59.999Z'"), "1");
    assert_eq!(count("'2024-05-01T00:00:00Z' = timestamp"), "1");
    assert_eq!(
        count("timestamp BETWEEN '2024-05-01T00:00:00Z' AND '2024-05-01T23:59:59.999Z'"),
        "2"
    );
    assert_eq!(count("timestamp IN ('2024-05-02T00:00:00Z')"), "1");
    assert!(
        refused("SELECT COUNT(*) AS value FROM events WHERE timestamp > 5").contains("RFC 3339")
    );
    assert!(
        refused("SELECT COUNT(*) AS value FROM events WHERE timestamp > 'yesterday'")
            .contains("RFC 3339")
    );
    assert!(
        refused("SELECT COUNT(*) AS value FROM events WHERE timestamp = properties.t")
            .contains("RFC 3339")
    );
}

#[test]
fn like_matching() {
    let c = |s: &str| s.chars().collect::<Vec<_>>();
    assert!(like(&c("abc"), &c("a%")));
    assert!(like(&c("abc"), &c("%c")));
    assert!(like(&c("abc"), &c("a_c")));
    assert!(like(&c(""), &c("%")));
    assert!(!like(&c(""), &c("_")));
    assert!(like(&c("aXbXc"), &c("a%b%c")));
    assert!(!like(&c("abcd"), &c("a%c")));
    assert!(like(&c("mississippi"), &c("%iss%ppi")));
    assert!(!like(&c("ABC"), &c("abc")));
    // A pathological pattern stays linear-ish (no exponential backtracking).
    let long: String = "a".repeat(5_000);
    assert!(!like(&c(&long), &c("%a%a%a%a%a%a%a%a%b")));
}

#[test]
fn group_cap_is_an_error_not_a_truncation() {
    let t = "2024-05-01T10:00:00Z";
    let events: Vec<Event> = (0..=MAX_GROUPS)
        .map(|i| ev(&i.to_string(), "x", t, &[("u", &i.to_string())]))
        .collect();
    let m = SqlMetric::parse(
        "SELECT COUNT(*) AS value, properties.u FROM events GROUP BY properties.u",
    )
    .unwrap();
    assert_eq!(m.evaluate(&events), Err(EvalError::TooManyGroups));
    assert_eq!(m.evaluate(&events[..MAX_GROUPS]).unwrap().len(), MAX_GROUPS);
}

#[test]
fn case_and_trailing_semicolon() {
    let t = "2024-05-01T10:00:00Z";
    let events = vec![ev("1", "X", t, &[])];
    assert_eq!(
        one(
            "select count(*) as VALUE from EVENTS where EVENT_TYPE = 'X';",
            &events
        ),
        Some(d("1"))
    );
    assert_eq!(
        one("  SELECT COUNT(*) AS value FROM events  ", &events),
        Some(d("1"))
    );
}

#[test]
fn refusals() {
    let cases: &[(&str, &str)] = &[
        ("", "empty"),
        ("DELETE FROM events", "only a SELECT"),
        ("DROP TABLE events", "only a SELECT"),
        ("INSERT INTO events VALUES (1)", "only a SELECT"),
        ("UPDATE events SET x = 1", "only a SELECT"),
        ("CREATE TABLE t (x INT)", "only a SELECT"),
        ("SELECT COUNT(*) AS value FROM events; DROP TABLE events", "exactly one statement"),
        ("SELECT COUNT(*) AS value FROM events; SELECT 1", "exactly one statement"),
        ("SELECT COUNT(*) AS value FROM customers", "only the events table"),
        ("SELECT COUNT(*) AS value FROM public.events", "only the events table"),
        ("SELECT COUNT(*) AS value FROM events e", "no alias"),
        ("SELECT COUNT(*) AS value FROM events, customers", "no joins"),
        ("SELECT COUNT(*) AS value FROM events JOIN customers ON true", "joins"),
        ("SELECT COUNT(*) AS value FROM (SELECT * FROM events)", "subqueries"),
        ("SELECT COUNT(*) AS value FROM events WHERE event_type IN (SELECT name FROM t)", "subqueries"),
        ("SELECT COUNT(*) AS value FROM events WHERE EXISTS (SELECT 1 FROM t)", "subqueries"),
        ("WITH x AS (SELECT 1) SELECT COUNT(*) AS value FROM events", "WITH"),
        ("SELECT COUNT(*) AS value FROM events UNION SELECT COUNT(*) AS value FROM events", "UNION"),
        ("SELECT * FROM events", "SELECT *"),
        ("SELECT properties.x FROM events", "raw rows"),
        ("SELECT event_type AS value FROM events", "only the aggregate may be named value"),
        ("SELECT COUNT(*) FROM events", "AS value"),
        ("SELECT COUNT(*) AS total FROM events", "AS value"),
        ("SELECT COUNT(*) AS value, SUM(properties.n) AS value FROM events", "exactly one aggregate"),
        ("SELECT COUNT(*) AS value, SUM(properties.n) AS other FROM events", "AS value"),
        ("SELECT COUNT(*) AS value FROM events ORDER BY 1", "ORDER BY"),
        ("SELECT COUNT(*) AS value FROM events LIMIT 5", "LIMIT"),
        ("SELECT COUNT(*) AS value FROM events LIMIT 5 OFFSET 2", "LIMIT"),
        ("SELECT DISTINCT COUNT(*) AS value FROM events", "DISTINCT"),
        ("SELECT COUNT(*) AS value FROM events HAVING COUNT(*) > 1", "HAVING"),
        ("SELECT COUNT(*) OVER () AS value FROM events", "window"),
        ("SELECT pg_sleep(10) AS value FROM events", "not allowed"),
        ("SELECT LENGTH(properties.x) AS value FROM events", "not allowed"),
        ("SELECT SUM(LENGTH(properties.x)) AS value FROM events", "must be a column"),
        ("SELECT SUM(properties.a * properties.b) AS value FROM events", "must be a column"),
        ("SELECT SUM(DISTINCT properties.a) AS value FROM events", "DISTINCT is allowed only in COUNT"),
        ("SELECT SUM(event_type) AS value FROM events", "numeric property"),
        ("SELECT COUNT(properties.a, properties.b) AS value FROM events", "exactly one argument"),
        ("SELECT COUNT(*) AS value FROM events WHERE UPPER(event_type) = 'X'", "not allowed"),
        ("SELECT COUNT(*) AS value FROM events WHERE nope = 'x'", "unknown column"),
        ("SELECT COUNT(*) AS value FROM events WHERE properties = 'x'", "unknown column"),
        ("SELECT COUNT(*) AS value FROM events WHERE properties.a.b = 'x'", "unknown column"),
        ("SELECT COUNT(*) AS value FROM events WHERE properties.n + 1 > 2", "must be a column or a literal"),
        ("SELECT COUNT(*) AS value FROM events WHERE properties.n LIKE 'a%' ESCAPE '!'", "unsupported condition"),
        ("SELECT COUNT(*) AS value FROM events WHERE COUNT(*) > 1", "not allowed in WHERE"),
        ("SELECT COUNT(*) AS value, properties.r FROM events", "must appear in GROUP BY"),
        ("SELECT COUNT(*) AS value FROM events GROUP BY properties.r", "must be selected"),
        ("SELECT COUNT(*) AS value, properties.r FROM events GROUP BY 2", "only columns"),
        ("SELECT COUNT(*) AS value, properties.r AS r, event_type AS r FROM events GROUP BY r, event_type", "two columns are named r"),
        ("SELECT COUNT(*) AS value, timestamp FROM events GROUP BY timestamp", "cannot be a group key"),
        ("SELECT COUNT(*) AS value, transaction_id FROM events GROUP BY transaction_id", "cannot be a group key"),
        ("SELECT COUNT(*) AS value, UPPER(event_type) AS e FROM events GROUP BY e", "not allowed"),
        ("SELECT COUNT(*) AS value, 'x' AS k FROM events GROUP BY k", "plain column"),
        ("SELECT COUNT(*) AS value INTO t FROM events", "INTO"),
        ("SELECT COUNT(*) AS value FROM events FOR UPDATE", "unsupported clause"),
        ("SELECT COUNT(*) AS value FROM events WHERE", "not valid SQL"),
        ("SELEC COUNT(*) AS value FROM events", "not valid SQL"),
    ];
    for (sql, expected) in cases {
        let msg = refused(sql);
        assert!(
            msg.contains(expected),
            "{sql}: {msg:?} should mention {expected:?}"
        );
    }
}

#[test]
fn size_limits() {
    let cols: Vec<String> = (0..=MAX_GROUP_COLUMNS)
        .map(|i| format!("properties.p{i}"))
        .collect();
    let sql = format!(
        "SELECT COUNT(*) AS value, {} FROM events GROUP BY {}",
        cols.join(", "),
        cols.join(", ")
    );
    assert!(refused(&sql).contains("group columns"));
    let ok: Vec<String> = cols[..MAX_GROUP_COLUMNS].to_vec();
    let sql = format!(
        "SELECT COUNT(*) AS value, {} FROM events GROUP BY {}",
        ok.join(", "),
        ok.join(", ")
    );
    assert_eq!(
        SqlMetric::parse(&sql).unwrap().group_keys().len(),
        MAX_GROUP_COLUMNS
    );
    let mut long = String::from("SELECT COUNT(*) AS value FROM events WHERE event_type IN ('a'");
    while long.len() <= MAX_SQL_CHARS {
        long.push_str(", 'a'");
    }
    long.push(')');
    assert!(refused(&long).contains("longer than"));
    // Deep nesting is the parser's recursion limit, an error rather than a stack overflow.
    let deep = format!(
        "SELECT COUNT(*) AS value FROM events WHERE {}event_type = 'x'{}",
        "(".repeat(500),
        ")".repeat(500)
    );
    assert!(refused(&deep).contains("not valid SQL"));
    let nots = format!(
        "SELECT COUNT(*) AS value FROM events WHERE {} event_type = 'x'",
        "NOT ".repeat(900)
    );
    assert!(refused(&nots).contains("not valid SQL"));
    let signs = format!(
        "SELECT COUNT(*) AS value FROM events WHERE properties.n = {}1",
        "- ".repeat(1_500)
    );
    assert!(refused(&signs).contains("not valid SQL"));
    // A long flat AND chain parses iteratively into a deep tree: refused past the depth cap.
    let chain = |n: usize| {
        let terms: Vec<&str> = core::iter::repeat_n("event_type = 'x'", n).collect();
        format!(
            "SELECT COUNT(*) AS value FROM events WHERE {}",
            terms.join(" AND ")
        )
    };
    let msg = refused(&chain(190));
    assert!(msg.contains("nests more than"), "{msg}");
    let t = "2024-05-01T10:00:00Z";
    let events = vec![ev("1", "x", t, &[]), ev("2", "y", t, &[])];
    assert_eq!(one(&chain(MAX_CONDITION_DEPTH - 1), &events), Some(d("1")));
    // Eight levels of parentheses and a few NOTs are fine.
    assert_eq!(
        one(
            "SELECT COUNT(*) AS value FROM events WHERE ((((((((NOT NOT event_type = 'x'))))))))",
            &events
        ),
        Some(d("1"))
    );
}

#[test]
fn template_parses() {
    let _ = template();
}
