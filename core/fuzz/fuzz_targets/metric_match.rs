//! Arbitrary billable metrics against arbitrary events. Validation and `contributions` never
//! panic; an event contributes to exactly the metrics whose filters it passes (and, past COUNT,
//! whose aggregation property it carries in usable form), with the contribution its aggregation
//! defines; its partial key carries the metric's grain values and the event's UTC hour. The
//! oracle re-states the filter rules from the metric documentation rather than calling them.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use num_bigint::BigInt;
use std::collections::{BTreeMap, BTreeSet};
use tally_core::accumulate::Accumulator;
use tally_core::event::Event;
use tally_core::metric::*;
use tally_core::time::HOUR_MS;
use tally_core_fuzz::small_name;

const PROPS: [&str; 5] = ["a", "b", "c", "tokens", ""];
const TYPES: [&str; 3] = ["llm", "api", "job"];
const VALUES: [&str; 9] = ["1", "2.5", "-3", "1e3", "x", "", "true", "0.00", "1_000"];

fn list(u: &mut Unstructured<'_>, alphabet: &[&str]) -> arbitrary::Result<Vec<String>> {
    (0..u.int_in_range(0u8..=3)?)
        .map(|_| small_name(u, alphabet))
        .collect()
}

fn opt_list(u: &mut Unstructured<'_>, alphabet: &[&str]) -> arbitrary::Result<Option<Vec<String>>> {
    Ok(if u.arbitrary()? {
        Some(list(u, alphabet)?)
    } else {
        None
    })
}

#[derive(Debug)]
struct Metric(MetricDef);

impl<'a> Arbitrary<'a> for Metric {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let aggregation = *u.choose(&[
            Aggregation::Count,
            Aggregation::Sum,
            Aggregation::Max,
            Aggregation::Unique,
            Aggregation::Latest,
        ])?;
        let aggregation_key = if u.ratio(7u8, 8)? {
            Some(small_name(u, &PROPS)?)
        } else {
            None
        };
        let event_type_filter = if u.arbitrary()? {
            Some(EventTypeFilter {
                in_values: opt_list(u, &TYPES)?,
                not_in_values: opt_list(u, &TYPES)?,
            })
        } else {
            None
        };
        let property_filters = (0..u.int_in_range(0u8..=3)?)
            .map(|_| {
                Ok(PropertyFilter {
                    name: small_name(u, &PROPS)?,
                    exists: u.arbitrary()?,
                    in_values: opt_list(u, &VALUES)?,
                    not_in_values: opt_list(u, &VALUES)?,
                })
            })
            .collect::<arbitrary::Result<_>>()?;
        let group_keys = (0..u.int_in_range(0u8..=3)?)
            .map(|_| list(u, &PROPS))
            .collect::<arbitrary::Result<_>>()?;
        let id = format!("m{}", u.int_in_range(0u8..=9)?);
        Ok(Metric(MetricDef {
            id,
            aggregation,
            aggregation_key,
            event_type_filter,
            property_filters,
            group_keys,
        }))
    }
}

#[derive(Debug)]
struct Ev(Event);

impl<'a> Arbitrary<'a> for Ev {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let mut properties = BTreeMap::new();
        for _ in 0..u.int_in_range(0u8..=5)? {
            let value = if u.ratio(1u8, 4)? {
                numeric_text(u)?
            } else {
                small_name(u, &VALUES)?
            };
            properties.insert(small_name(u, &PROPS)?, value);
        }
        // Any i64: `contributions` is a public function of any `Event`, not only validated ones.
        let timestamp_ms = match u.int_in_range(0u8..=3)? {
            0 => u.arbitrary()?,
            1 => *u.choose(&[i64::MIN, i64::MIN + 1, i64::MAX, -1])?,
            _ => u.int_in_range(-10 * HOUR_MS..=10 * HOUR_MS)?,
        };
        Ok(Ev(Event {
            transaction_id: small_name(u, &["t1", "t2"])?,
            customer_id: small_name(u, &["c1", "c2"])?,
            event_type: small_name(u, &TYPES)?,
            timestamp_ms,
            properties,
        }))
    }
}

/// Text shaped like a number: sign, up to 40 digits around an optional point, optional exponent.
fn numeric_text(u: &mut Unstructured<'_>) -> arbitrary::Result<String> {
    let mut s = String::from(*u.choose(&["", "-", "+"])?);
    let digits = |u: &mut Unstructured<'_>, n: u8| -> arbitrary::Result<String> {
        (0..n)
            .map(|_| Ok(char::from(b'0' + u.int_in_range(0..=9)?)))
            .collect()
    };
    let int_len = u.int_in_range(0..=40)?;
    s += &digits(u, int_len)?;
    if u.arbitrary()? {
        s.push('.');
        let frac_len = u.int_in_range(0..=40)?;
        s += &digits(u, frac_len)?;
    }
    if u.ratio(1u8, 3)? {
        s += &format!("{}{}", u.choose(&["e", "E"])?, u.int_in_range(-60..=60)?);
    }
    Ok(s)
}

/// The exact value of plain or scientific decimal text as `(mantissa, scale)` (a negative scale
/// multiplies by a power of ten); `None` for anything else.
fn exact_text(s: &str) -> Option<(BigInt, i64)> {
    let (num, exp) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], s[i + 1..].parse::<i64>().ok()?),
        None => (s, 0),
    };
    let (neg, num) = match num.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, num.strip_prefix('+').unwrap_or(num)),
    };
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if int.is_empty() || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mantissa: BigInt = format!("{int}{frac}").parse().ok()?;
    let scale = i64::try_from(frac.len()).ok()? - exp;
    Some((if neg { -mantissa } else { mantissa }, scale))
}

/// `parse_decimal` either refuses text or gives exactly the number it spells.
fn check_parse_decimal(s: &str) {
    let Some(d) = tally_core::decimal::parse_decimal(s) else {
        return;
    };
    let Some((m, scale)) = exact_text(s) else {
        return;
    };
    // Zero with any exponent ("0e9999999999") is zero; no power of ten is needed to say so.
    if m == BigInt::from(0) {
        assert!(d.is_zero(), "{s:?} parsed as {d}");
        return;
    }
    // Compare m * 10^-scale with d.mantissa * 10^-d.scale over a common denominator.
    let common = scale.max(i64::from(d.scale())).max(0);
    let ten = BigInt::from(10);
    let lhs = m * ten.pow(u32::try_from(common - scale).expect("small"));
    let rhs = BigInt::from(d.mantissa())
        * ten.pow(u32::try_from(common - i64::from(d.scale())).expect("small"));
    assert_eq!(lhs, rhs, "{s:?} parsed as {d}");
}

/// The filter rules as the metric documentation states them.
fn oracle_matches(m: &MetricDef, e: &Event) -> bool {
    if let Some(f) = &m.event_type_filter {
        if let Some(ins) = &f.in_values {
            if !ins.contains(&e.event_type) {
                return false;
            }
        }
        if let Some(outs) = &f.not_in_values {
            if outs.contains(&e.event_type) {
                return false;
            }
        }
    }
    m.property_filters.iter().all(|pf| {
        let v = e.properties.get(&pf.name);
        let exists_ok = pf.exists.is_none_or(|want| want == v.is_some());
        let in_ok = pf
            .in_values
            .as_ref()
            .is_none_or(|ins| v.is_some_and(|v| ins.contains(v)));
        let out_ok = pf
            .not_in_values
            .as_ref()
            .is_none_or(|outs| v.is_none_or(|v| !outs.contains(v)));
        exists_ok && in_ok && out_ok
    })
}

/// The contribution the aggregation defines for a matching event.
fn oracle_contribution(m: &MetricDef, e: &Event) -> Option<Accumulator> {
    let value = m.aggregation_key.as_ref().and_then(|k| e.properties.get(k));
    let number = value.and_then(|v| tally_core::decimal::parse_decimal(v));
    Some(match m.aggregation {
        Aggregation::Count => Accumulator::Count(1),
        Aggregation::Sum => Accumulator::Sum(number?),
        Aggregation::Max => Accumulator::Max(number?),
        Aggregation::Unique => Accumulator::Unique(BTreeSet::from([value?.clone()])),
        Aggregation::Latest => Accumulator::Latest {
            timestamp_ms: e.timestamp_ms,
            transaction_id: e.transaction_id.clone(),
            value: number?,
        },
        // SQL metrics are computed from stored events; ingest never meters them.
        Aggregation::Sql => return None,
    })
}

#[derive(Debug, Arbitrary)]
struct Input {
    metrics: Vec<Metric>,
    events: Vec<Ev>,
}

fuzz_target!(|input: Input| {
    let metrics: Vec<MetricDef> = input.metrics.into_iter().map(|m| m.0).collect();
    for m in &metrics {
        let valid = m.validate();
        // What is stored is what comes back.
        let json = serde_json::to_string(m).expect("serialises");
        assert_eq!(
            &serde_json::from_str::<MetricDef>(&json).expect("parses"),
            m
        );
        let grain = m.grain();
        let mut want: Vec<String> = m.group_keys.iter().flatten().cloned().collect();
        want.sort();
        want.dedup();
        assert_eq!(grain, want);
        if valid.is_ok() {
            assert!(!grain.iter().any(String::is_empty));
        }
    }
    for Ev(event) in &input.events {
        for value in event.properties.values() {
            check_parse_decimal(value);
        }
        let got = tally_core::metric::contributions(&metrics, event);
        let want: Vec<(&MetricDef, Accumulator)> = metrics
            .iter()
            .filter(|m| oracle_matches(m, event))
            .filter_map(|m| Some((m, oracle_contribution(m, event)?)))
            .collect();
        assert_eq!(got.len(), want.len(), "{event:?}\n{got:?}\n{want:?}");
        for ((key, acc), (metric, want_acc)) in got.iter().zip(&want) {
            assert!(metric.matches(event));
            assert_eq!(&key.metric_id, &metric.id);
            assert_eq!(acc, want_acc);
            assert_eq!(key.customer_ref, event.customer_id);
            let grain = metric.grain();
            let values: Vec<Option<String>> = grain
                .iter()
                .map(|p| event.properties.get(p).cloned())
                .collect();
            assert_eq!(key.groups, values);
            // The hour bucket contains the event.
            assert!(key.hour_ms <= event.timestamp_ms, "{key:?}");
            // Whole hours, except in the first partial hour of the i64 range.
            assert!(tally_core::time::is_hour_aligned(key.hour_ms) || key.hour_ms == i64::MIN);
            assert!(i128::from(event.timestamp_ms) < i128::from(key.hour_ms) + i128::from(HOUR_MS));
        }
        for m in &metrics {
            assert_eq!(
                m.matches(event),
                oracle_matches(m, event),
                "{m:?} {event:?}"
            );
        }
    }
});
