//! Structured ingest bodies: JSON arrays of events that are valid by construction, valid but for
//! one known defect, or arbitrary JSON values, so the fuzzer explores validation rather than JSON
//! syntax. Besides the general laws (see `check_parse_batch`), a valid event must be accepted with
//! exactly the fields that were sent (numbers keep their literal digits, any offset is normalised
//! to UTC), and an event with one defect must be rejected.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use tally_core::ingest::*;
use tally_core_fuzz::{check_parse_batch, ArbDecimal, NOW_MS};

const FIELDS: [&str; 4] = ["transaction_id", "customer_id", "event_type", "timestamp"];

/// An event that passes validation, with the values validation must produce.
#[derive(Debug)]
struct ValidEvent {
    ids: [String; 3],
    timestamp_ms: i64,
    timestamp: String,
    /// Name → (JSON value sent, text expected); `None` text for null.
    properties: Vec<(String, Value, Option<String>)>,
}

/// A non-empty id of at most `max` characters without NUL.
fn id(u: &mut Unstructured<'_>, max: usize) -> arbitrary::Result<String> {
    let s: String = u.arbitrary()?;
    let s: String = s.chars().filter(|c| *c != '\0').take(max).collect();
    Ok(if s.is_empty() { "t".into() } else { s })
}

impl<'a> Arbitrary<'a> for ValidEvent {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let ids = [
            id(u, MAX_TRANSACTION_ID_CHARS)?,
            id(u, MAX_ID_CHARS)?,
            id(u, MAX_ID_CHARS)?,
        ];
        let timestamp_ms = u.int_in_range(NOW_MS - BACKDATE_LIMIT_MS..=NOW_MS + FUTURE_LIMIT_MS)?;
        let utc = DateTime::<Utc>::from_timestamp_millis(timestamp_ms).expect("in range");
        let timestamp = match u.int_in_range(0u8..=3)? {
            0 => tally_core::time::format_rfc3339_ms(timestamp_ms),
            1 => {
                // Any whole-minute offset RFC 3339 allows.
                let minutes = u.int_in_range(-(23 * 60 + 59)..=23 * 60 + 59)?;
                let tz = FixedOffset::east_opt(minutes * 60).expect("valid offset");
                utc.with_timezone(&tz)
                    .to_rfc3339_opts(SecondsFormat::Millis, u.arbitrary()?)
            }
            // Naive timestamps are read as UTC, with `T` or a space.
            2 => utc.format("%Y-%m-%dT%H:%M:%S%.3f").to_string(),
            _ => utc.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
        };
        let mut properties = Vec::new();
        for _ in 0..u.int_in_range(0u8..=6)? {
            let name: String = if u.arbitrary()? {
                u.arbitrary::<String>()?
                    .chars()
                    .take(MAX_PROPERTY_NAME_CHARS)
                    .collect()
            } else {
                String::from(*u.choose(&["tokens", "model", "region", ""])?)
            };
            let (value, text) = match u.int_in_range(0u8..=5)? {
                0 => {
                    let s: String = u.arbitrary()?;
                    let s: String = s.chars().take(MAX_PROPERTY_VALUE_CHARS).collect();
                    (Value::String(s.clone()), Some(s))
                }
                1 => {
                    let d = u.arbitrary::<ArbDecimal>()?.0.to_string();
                    (number(&d), Some(d))
                }
                2 => {
                    let n: i64 = u.arbitrary()?;
                    (number(&n.to_string()), Some(n.to_string()))
                }
                3 => {
                    // Scientific notation keeps its digits; serde_json spells the exponent
                    // `e+N`/`e-N` whether it was sent as `eN`, `E+N` or `e+N`.
                    let (m, e) = (u.arbitrary::<i32>()?, u.int_in_range(-40..=40)?);
                    let marker = u.choose(&["e", "E", "e+", "E+"])?;
                    let sent = if e < 0 {
                        format!("{m}e{e}")
                    } else {
                        format!("{m}{marker}{e}")
                    };
                    (number(&sent), Some(format!("{m}e{e:+}")))
                }
                4 => {
                    let b: bool = u.arbitrary()?;
                    (Value::Bool(b), Some(b.to_string()))
                }
                _ => (Value::Null, None),
            };
            // A later duplicate name wins, as in a JSON object.
            properties.retain(|(n, _, _)| n != &name);
            properties.push((name, value, text));
        }
        Ok(ValidEvent {
            ids,
            timestamp_ms,
            timestamp,
            properties,
        })
    }
}

fn number(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{text} is a JSON number: {e}"))
}

impl ValidEvent {
    fn to_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        for (field, value) in FIELDS.iter().zip(self.ids.iter().chain([&self.timestamp])) {
            m.insert(field.to_string(), Value::String(value.clone()));
        }
        if !self.properties.is_empty() {
            let props = self
                .properties
                .iter()
                .map(|(n, v, _)| (n.clone(), v.clone()))
                .collect();
            m.insert("properties".into(), Value::Object(props));
        }
        m
    }

    fn expected_properties(&self) -> BTreeMap<String, String> {
        self.properties
            .iter()
            .filter_map(|(n, _, t)| Some((n.clone(), t.clone()?)))
            .collect()
    }
}

/// One defect that must get a valid event rejected.
#[derive(Debug, Arbitrary)]
enum Defect {
    Missing(u8),
    Null(u8),
    Empty(u8),
    Nul(u8),
    TooLong(u8),
    NotAString(u8, bool),
    TooOld(u32),
    TooNew(u32),
    Unparseable(String),
    PropertiesNotObject(bool),
    NestedProperty,
    LongPropertyName,
    LongPropertyValue,
}

impl Defect {
    fn apply(&self, m: &mut Map<String, Value>) {
        let field = |i: &u8| FIELDS[usize::from(*i) % FIELDS.len()];
        match self {
            Defect::Missing(i) => {
                m.remove(field(i));
            }
            Defect::Null(i) => {
                m.insert(field(i).into(), Value::Null);
            }
            Defect::Empty(i) => {
                m.insert(field(i).into(), Value::String(String::new()));
            }
            Defect::Nul(i) => {
                let f = field(i);
                let s = format!("{}\0", m[f].as_str().unwrap_or_default());
                m.insert(f.into(), Value::String(s));
            }
            Defect::TooLong(i) => {
                m.insert(field(i).into(), Value::String("x".repeat(MAX_ID_CHARS + 1)));
            }
            Defect::NotAString(i, b) => {
                let v = if *b { Value::Bool(true) } else { number("7") };
                m.insert(field(i).into(), v);
            }
            Defect::TooOld(ms) => {
                let t = NOW_MS - BACKDATE_LIMIT_MS - 1 - i64::from(*ms);
                let ts = tally_core::time::format_rfc3339_ms(t);
                m.insert("timestamp".into(), Value::String(ts));
            }
            Defect::TooNew(ms) => {
                let t = NOW_MS + FUTURE_LIMIT_MS + 1 + i64::from(*ms);
                let ts = tally_core::time::format_rfc3339_ms(t);
                m.insert("timestamp".into(), Value::String(ts));
            }
            Defect::Unparseable(s) => {
                // A leading letter is never a timestamp, whatever follows.
                m.insert("timestamp".into(), Value::String(format!("x{s}")));
            }
            Defect::PropertiesNotObject(b) => {
                let v = if *b {
                    Value::Array(vec![])
                } else {
                    Value::String("p".into())
                };
                m.insert("properties".into(), v);
            }
            Defect::NestedProperty => {
                let nested = serde_json::json!({"a": {"b": 1}});
                m.insert("properties".into(), nested);
            }
            Defect::LongPropertyName => {
                let name = "n".repeat(MAX_PROPERTY_NAME_CHARS + 1);
                m.insert("properties".into(), serde_json::json!({ name: 1 }));
            }
            Defect::LongPropertyValue => {
                let value = "v".repeat(MAX_PROPERTY_VALUE_CHARS + 1);
                m.insert("properties".into(), serde_json::json!({ "p": value }));
            }
        }
    }
}

#[derive(Debug, Arbitrary)]
enum Item {
    Valid(ValidEvent),
    Defective(ValidEvent, Defect),
    Raw(RawJson),
}

/// An arbitrary JSON value, shallow enough to stay cheap.
#[derive(Debug)]
struct RawJson(Value);

impl<'a> Arbitrary<'a> for RawJson {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        fn value(u: &mut Unstructured<'_>, depth: u8) -> arbitrary::Result<Value> {
            let top = if depth == 0 { 3 } else { 5 };
            Ok(match u.int_in_range(0u8..=top)? {
                0 => Value::Null,
                1 => Value::Bool(u.arbitrary()?),
                2 => Value::String(u.arbitrary()?),
                3 => number(&u.arbitrary::<ArbDecimal>()?.0.to_string()),
                4 => Value::Array(
                    (0..u.int_in_range(0u8..=3)?)
                        .map(|_| value(u, depth - 1))
                        .collect::<Result<_, _>>()?,
                ),
                _ => {
                    let mut m = Map::new();
                    for _ in 0..u.int_in_range(0u8..=5)? {
                        let k = if u.arbitrary()? {
                            String::from(*u.choose(&FIELDS)?)
                        } else {
                            u.arbitrary()?
                        };
                        m.insert(k, value(u, depth - 1)?);
                    }
                    Value::Object(m)
                }
            })
        }
        Ok(RawJson(value(u, 3)?))
    }
}

#[derive(Debug, Arbitrary)]
struct Input {
    items: Vec<Item>,
    /// Pad the batch past the limit with copies of the last item, on one value in 256: the
    /// refusal is cheap to reach and a 101-item body is slow to build.
    overfill: u8,
}

fuzz_target!(|input: Input| {
    let mut items: Vec<Value> = input
        .items
        .iter()
        .map(|item| match item {
            Item::Valid(v) => Value::Object(v.to_json()),
            Item::Defective(v, d) => {
                let mut m = v.to_json();
                d.apply(&mut m);
                Value::Object(m)
            }
            Item::Raw(r) => r.0.clone(),
        })
        .collect();
    if input.overfill == 0x5a {
        if let Some(last) = items.last().cloned() {
            items.resize(MAX_BATCH_EVENTS + 1, last);
        }
    }
    let body = serde_json::to_vec(&items).expect("serialises");
    let Some(batch) = check_parse_batch(&body) else {
        assert!(items.is_empty() || items.len() > MAX_BATCH_EVENTS);
        return;
    };
    for (index, item) in input.items.iter().enumerate() {
        let accepted = batch.events.iter().find(|(i, _)| *i == index);
        match item {
            Item::Valid(v) => {
                let (_, e) = accepted.unwrap_or_else(|| panic!("valid {v:?} rejected: {batch:?}"));
                let [t, c, ty] = &v.ids;
                assert_eq!(
                    (&e.transaction_id, &e.customer_id, &e.event_type),
                    (t, c, ty)
                );
                assert_eq!(e.timestamp_ms, v.timestamp_ms, "{}", v.timestamp);
                assert_eq!(e.properties, v.expected_properties());
            }
            Item::Defective(v, d) => {
                assert!(accepted.is_none(), "{v:?} with {d:?} accepted");
            }
            Item::Raw(_) => {}
        }
    }
});
