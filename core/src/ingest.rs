//! The `/v1/ingest` request contract, shared by central's native path and the edge.
//!
//! A request is refused as a whole (400, nothing stored) only when it is not a JSON array of 1 to
//! [`MAX_BATCH_EVENTS`] items or its body exceeds [`MAX_BODY_BYTES`]. Otherwise each item is judged on
//! its own: valid events go on to dedupe and aggregation, invalid ones are reported by index with a
//! reason, and the rest of the batch is unaffected.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::Event;
use crate::fold::Outcome;
use crate::time::{parse_rfc3339_ms, DAY_MS};

/// Largest accepted request body, in bytes (after gzip decoding).
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// Most events in one request.
pub const MAX_BATCH_EVENTS: usize = 100;
/// Most properties on one event.
pub const MAX_PROPERTIES: usize = 2_000;
/// Longest `transaction_id`, in characters (Metronome's limit).
pub const MAX_TRANSACTION_ID_CHARS: usize = 128;
/// Longest `customer_id` and `event_type`, in characters.
pub const MAX_ID_CHARS: usize = 256;
/// Longest property name, in characters.
pub const MAX_PROPERTY_NAME_CHARS: usize = 256;
/// Longest property value text, in characters.
pub const MAX_PROPERTY_VALUE_CHARS: usize = 4_096;
/// How far back an event may be dated.
pub const BACKDATE_LIMIT_MS: i64 = 34 * DAY_MS;
/// How far ahead an event may be dated.
pub const FUTURE_LIMIT_MS: i64 = DAY_MS;
/// How long a dedupe key is kept after it was claimed, by central and by the edge's shards: 36
/// days. A retry passes validation only while its timestamp is at most [`BACKDATE_LIMIT_MS`] old,
/// and that timestamp was at most [`FUTURE_LIMIT_MS`] ahead of the first copy's arrival, so 35 days
/// after a key was claimed no copy of its event can be accepted again. One more day covers the
/// clocks of different machines: at the edge the Worker validates and the shard records the key.
pub const DEDUPE_RETENTION_MS: i64 = BACKDATE_LIMIT_MS + FUTURE_LIMIT_MS + DAY_MS;

/// How a request body is encoded, from its `Content-Encoding` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentEncoding {
    Identity,
    Gzip,
}

/// A `Content-Encoding` ingest does not accept (answered 415, with `Accept-Encoding: gzip`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsupportedEncoding(pub String);

impl core::fmt::Display for UnsupportedEncoding {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "unsupported Content-Encoding {:?}: send gzip or an unencoded body",
            self.0
        )
    }
}

/// The ingest rule for `Content-Encoding` (all its values joined by `", "`, as received): absent
/// or exactly `identity` is the body as is, exactly `gzip` is gzip; anything else (another
/// coding, a list, another spelling) is refused before the body is read.
pub fn content_encoding(header: Option<&str>) -> Result<ContentEncoding, UnsupportedEncoding> {
    match header {
        None | Some("identity") => Ok(ContentEncoding::Identity),
        Some("gzip") => Ok(ContentEncoding::Gzip),
        Some(other) => Err(UnsupportedEncoding(other.to_string())),
    }
}

/// Why a whole request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchError {
    BodyTooLarge,
    NotJson(String),
    NotArray,
    Empty,
    TooManyEvents(usize),
}

impl core::fmt::Display for BatchError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BatchError::BodyTooLarge => {
                write!(f, "request body exceeds {MAX_BODY_BYTES} bytes")
            }
            BatchError::NotJson(e) => write!(f, "request body is not valid JSON: {e}"),
            BatchError::NotArray => {
                f.write_str("request body must be a JSON array of usage events")
            }
            BatchError::Empty => f.write_str("request must contain at least one usage event"),
            BatchError::TooManyEvents(n) => write!(
                f,
                "request contains {n} usage events; at most {MAX_BATCH_EVENTS} are allowed"
            ),
        }
    }
}

/// An event refused on its own, reported back to the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub index: usize,
    pub transaction_id: Option<String>,
    pub message: String,
    /// Why, as one of a few fixed codes (for counting; not on the wire, where `message` says it).
    #[serde(skip)]
    pub reason: RejectReason,
}

/// Why an event was refused, as a small fixed set (operators count rejections by it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RejectReason {
    /// The item is not a JSON object.
    NotAnObject,
    /// `transaction_id`, `customer_id`, `event_type` or `timestamp` is absent or null.
    MissingField,
    /// One of those is empty, not a string, too long or holds NUL.
    InvalidField,
    /// `timestamp` is not RFC 3339.
    InvalidTimestamp,
    /// `timestamp` is more than 34 days in the past or 24 hours in the future.
    OutsideWindow,
    /// `properties` is not an object, has too many entries, or one is too long or nested.
    InvalidProperties,
    /// Its usage cannot be merged (a total would overflow the exact decimal range).
    Unmergeable,
    /// Read back from a summary on the wire, which carries no code.
    #[default]
    Unknown,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::NotAnObject => "not_an_object",
            RejectReason::MissingField => "missing_field",
            RejectReason::InvalidField => "invalid_field",
            RejectReason::InvalidTimestamp => "invalid_timestamp",
            RejectReason::OutsideWindow => "outside_window",
            RejectReason::InvalidProperties => "invalid_properties",
            RejectReason::Unmergeable => "unmergeable",
            RejectReason::Unknown => "unknown",
        }
    }
}

/// Why one event is invalid: a code and a human-readable message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub reason: RejectReason,
    pub message: String,
}

fn invalid(reason: RejectReason, message: String) -> Invalid {
    Invalid { reason, message }
}

/// The outcome of parsing and validating a request body.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParsedBatch {
    /// Valid events in request order, each with its index in the request.
    pub events: Vec<(usize, Event)>,
    pub rejected: Vec<Rejection>,
}

/// What the client is told: the body of a 200 from `/v1/ingest`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct IngestSummary {
    pub accepted: usize,
    pub duplicates: usize,
    pub rejected: Vec<Rejection>,
}

impl IngestSummary {
    /// The summary of a request whose invalid items were `rejected`, before any event's outcome.
    pub fn new(rejected: Vec<Rejection>) -> Self {
        IngestSummary {
            rejected,
            ..IngestSummary::default()
        }
    }

    /// Counts the outcomes of `events` (pairs of request index and event), one outcome each in order.
    pub fn tally(
        &mut self,
        events: &[(usize, Event)],
        outcomes: impl IntoIterator<Item = Outcome>,
    ) {
        for ((index, event), outcome) in events.iter().zip(outcomes) {
            match outcome {
                Outcome::Accepted => self.accepted += 1,
                Outcome::Duplicate => self.duplicates += 1,
                Outcome::Rejected(message) => self.rejected.push(Rejection {
                    index: *index,
                    transaction_id: Some(event.transaction_id.clone()),
                    message,
                    reason: RejectReason::Unmergeable,
                }),
            }
        }
    }

    /// The summary as answered: rejections in request order.
    pub fn finish(mut self) -> Self {
        self.rejected.sort_by_key(|r| r.index);
        self
    }
}

/// Parses and validates an ingest request body against `now_ms`.
pub fn parse_batch(body: &[u8], now_ms: i64) -> Result<ParsedBatch, BatchError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(BatchError::BodyTooLarge);
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| BatchError::NotJson(e.to_string()))?;
    let Value::Array(items) = value else {
        return Err(BatchError::NotArray);
    };
    if items.is_empty() {
        return Err(BatchError::Empty);
    }
    if items.len() > MAX_BATCH_EVENTS {
        return Err(BatchError::TooManyEvents(items.len()));
    }
    let mut batch = ParsedBatch::default();
    for (index, item) in items.into_iter().enumerate() {
        let transaction_id = item
            .get("transaction_id")
            .and_then(Value::as_str)
            .map(str::to_string);
        match validate_event(item, now_ms) {
            Ok(event) => batch.events.push((index, event)),
            Err(e) => batch.rejected.push(Rejection {
                index,
                transaction_id,
                message: e.message,
                reason: e.reason,
            }),
        }
    }
    Ok(batch)
}

/// Validates one JSON item as a usage event. The error carries a code and a human-readable reason.
pub fn validate_event(item: Value, now_ms: i64) -> Result<Event, Invalid> {
    use RejectReason::*;
    let Value::Object(mut fields) = item else {
        return Err(invalid(
            NotAnObject,
            "usage event must be a JSON object".to_string(),
        ));
    };
    let transaction_id = required_str(&fields, "transaction_id", MAX_TRANSACTION_ID_CHARS)?;
    let customer_id = required_str(&fields, "customer_id", MAX_ID_CHARS)?;
    let event_type = required_str(&fields, "event_type", MAX_ID_CHARS)?;
    let timestamp = required_str(&fields, "timestamp", 64)?;
    let timestamp_ms = parse_rfc3339_ms(&timestamp)
        .map_err(|e| invalid(InvalidTimestamp, format!("timestamp {e}: {timestamp:?}")))?;
    if timestamp_ms < now_ms.saturating_sub(BACKDATE_LIMIT_MS) {
        return Err(invalid(
            OutsideWindow,
            format!("timestamp {timestamp} is more than 34 days in the past"),
        ));
    }
    if timestamp_ms > now_ms.saturating_add(FUTURE_LIMIT_MS) {
        return Err(invalid(
            OutsideWindow,
            format!("timestamp {timestamp} is more than 24 hours in the future"),
        ));
    }
    let properties = match fields.remove("properties") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(map)) => {
            properties_from(map).map_err(|message| invalid(InvalidProperties, message))?
        }
        Some(_) => {
            return Err(invalid(
                InvalidProperties,
                "properties must be a JSON object".to_string(),
            ))
        }
    };
    Ok(Event {
        transaction_id,
        customer_id,
        event_type,
        timestamp_ms,
        properties,
    })
}

fn required_str(
    fields: &serde_json::Map<String, Value>,
    name: &str,
    max_chars: usize,
) -> Result<String, Invalid> {
    let bad = |message: String| Err(invalid(RejectReason::InvalidField, message));
    match fields.get(name) {
        None | Some(Value::Null) => Err(invalid(
            RejectReason::MissingField,
            format!("{name} is required"),
        )),
        Some(Value::String(s)) if s.is_empty() => bad(format!("{name} must not be empty")),
        // Keys and references are stored as database text; PostgreSQL cannot hold NUL.
        Some(Value::String(s)) if s.contains('\0') => {
            bad(format!("{name} must not contain NUL characters"))
        }
        Some(Value::String(s)) if s.chars().count() > max_chars => {
            bad(format!("{name} is longer than {max_chars} characters"))
        }
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => bad(format!("{name} must be a string")),
    }
}

fn properties_from(
    map: serde_json::Map<String, Value>,
) -> Result<BTreeMap<String, String>, String> {
    if map.len() > MAX_PROPERTIES {
        return Err(format!(
            "event has {} properties; at most {MAX_PROPERTIES} are allowed",
            map.len()
        ));
    }
    let mut out = BTreeMap::new();
    for (name, value) in map {
        if name.chars().count() > MAX_PROPERTY_NAME_CHARS {
            return Err(format!(
                "property name is longer than {MAX_PROPERTY_NAME_CHARS} characters"
            ));
        }
        let text = match value {
            // An explicit null is the same as an absent property.
            Value::Null => continue,
            Value::String(s) => s,
            // With `arbitrary_precision`, a number's text is exactly the digits that were sent
            // (serde_json spells an exponent `e+N` or `e-N`, however it was sent).
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Array(_) | Value::Object(_) => {
                return Err(format!(
                    "property {name:?} must be a string, number or boolean"
                ))
            }
        };
        if text.chars().count() > MAX_PROPERTY_VALUE_CHARS {
            return Err(format!(
                "property {name:?} is longer than {MAX_PROPERTY_VALUE_CHARS} characters"
            ));
        }
        out.insert(name, text);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::HOUR_MS;

    const NOW: i64 = 1_727_740_800_000; // 2024-10-01T00:00:00Z

    #[test]
    fn only_absent_identity_and_gzip_encodings_are_read() {
        assert_eq!(content_encoding(None), Ok(ContentEncoding::Identity));
        assert_eq!(
            content_encoding(Some("identity")),
            Ok(ContentEncoding::Identity)
        );
        assert_eq!(content_encoding(Some("gzip")), Ok(ContentEncoding::Gzip));
        for other in ["br", "deflate", "x-gzip", "GZIP", "gzip, br", ""] {
            assert_eq!(
                content_encoding(Some(other)),
                Err(UnsupportedEncoding(other.to_string()))
            );
        }
        assert_eq!(
            UnsupportedEncoding("br".into()).to_string(),
            r#"unsupported Content-Encoding "br": send gzip or an unencoded body"#
        );
    }

    fn one(event: &str) -> ParsedBatch {
        parse_batch(format!("[{event}]").as_bytes(), NOW).unwrap()
    }

    #[test]
    fn accepts_a_complete_event_with_exact_numbers() {
        let b = one(
            r#"{"transaction_id":"t1","customer_id":"c","event_type":"e","timestamp":"2024-09-30T12:00:00Z",
                "properties":{"tokens":"100","n":0.1000000000000000055511151231257827,"ok":true,"gone":null}}"#,
        );
        assert!(b.rejected.is_empty(), "{:?}", b.rejected);
        let e = &b.events[0].1;
        assert_eq!(e.property("tokens"), Some("100"));
        assert_eq!(
            e.property("n"),
            Some("0.1000000000000000055511151231257827")
        );
        assert_eq!(e.property("ok"), Some("true"));
        assert_eq!(e.property("gone"), None);
    }

    #[test]
    fn nul_characters_in_ids_are_refused() {
        for field in ["transaction_id", "customer_id", "event_type"] {
            let mut event = serde_json::json!({
                "transaction_id": "t", "customer_id": "c", "event_type": "e",
                "timestamp": "2024-09-30T12:00:00Z",
            });
            event[field] = serde_json::json!("a\u{0}b");
            let b = one(&event.to_string());
            assert!(b.events.is_empty(), "{field}");
            assert!(b.rejected[0].message.contains("NUL"), "{field}: {b:?}");
        }
        // Property values go into JSON text, where NUL is escaped; they stay accepted.
        let b = one(
            r#"{"transaction_id":"t","customer_id":"c","event_type":"e","timestamp":"2024-09-30T12:00:00Z","properties":{"p":"a\u0000b"}}"#,
        );
        assert_eq!(b.events.len(), 1);
    }

    #[test]
    fn whole_request_errors() {
        assert_eq!(parse_batch(b"{}", NOW), Err(BatchError::NotArray));
        assert_eq!(parse_batch(b"[]", NOW), Err(BatchError::Empty));
        assert!(matches!(
            parse_batch(b"[", NOW),
            Err(BatchError::NotJson(_))
        ));
        let many = format!("[{}]", ["1"; 101].join(","));
        assert_eq!(
            parse_batch(many.as_bytes(), NOW),
            Err(BatchError::TooManyEvents(101))
        );
        let big = alloc::vec![b' '; MAX_BODY_BYTES + 1];
        assert_eq!(parse_batch(&big, NOW), Err(BatchError::BodyTooLarge));
    }

    #[test]
    fn per_event_rejections_keep_the_rest() {
        let body = r#"[
            {"customer_id":"c","event_type":"e","timestamp":"2024-09-30T12:00:00Z"},
            {"transaction_id":"ok","customer_id":"c","event_type":"e","timestamp":"2024-09-30T12:00:00Z"},
            {"transaction_id":"old","customer_id":"c","event_type":"e","timestamp":"2024-08-01T00:00:00Z"},
            {"transaction_id":"future","customer_id":"c","event_type":"e","timestamp":"2024-10-03T00:00:00Z"},
            {"transaction_id":"bad","customer_id":"c","event_type":"e","timestamp":"last tuesday"},
            {"transaction_id":7,"customer_id":"c","event_type":"e","timestamp":"2024-09-30T12:00:00Z"},
            {"transaction_id":"nested","customer_id":"c","event_type":"e","timestamp":"2024-09-30T12:00:00Z","properties":{"a":{"b":1}}},
            "not an object"
        ]"#;
        let b = parse_batch(body.as_bytes(), NOW).unwrap();
        assert_eq!(b.events.len(), 1);
        assert_eq!(b.events[0].1.transaction_id, "ok");
        assert_eq!(b.events[0].0, 1);
        let idx: Vec<usize> = b.rejected.iter().map(|r| r.index).collect();
        assert_eq!(idx, [0, 2, 3, 4, 5, 6, 7]);
        assert!(b.rejected[0].message.contains("transaction_id is required"));
        assert!(b.rejected[1].message.contains("34 days"));
        assert!(b.rejected[2].message.contains("24 hours"));
        assert_eq!(b.rejected[1].transaction_id.as_deref(), Some("old"));
        use RejectReason::*;
        let reasons: Vec<RejectReason> = b.rejected.iter().map(|r| r.reason).collect();
        assert_eq!(
            reasons,
            [
                MissingField,
                OutsideWindow,
                OutsideWindow,
                InvalidTimestamp,
                InvalidField,
                InvalidProperties,
                NotAnObject
            ]
        );
    }

    #[test]
    fn window_edges_are_inclusive() {
        let at = |ms: i64| {
            let ts = crate::time::format_rfc3339_ms(ms);
            one(&format!(
                r#"{{"transaction_id":"t","customer_id":"c","event_type":"e","timestamp":"{ts}"}}"#
            ))
            .events
            .len()
        };
        assert_eq!(at(NOW - BACKDATE_LIMIT_MS), 1);
        assert_eq!(at(NOW - BACKDATE_LIMIT_MS - 1), 0);
        assert_eq!(at(NOW + FUTURE_LIMIT_MS), 1);
        assert_eq!(at(NOW + FUTURE_LIMIT_MS + 1), 0);
        assert_eq!(at(NOW - HOUR_MS), 1);
    }

    #[test]
    fn a_summary_counts_outcomes_and_lists_rejections_in_request_order() {
        let b = one(
            r#"{"transaction_id":"t","customer_id":"c","event_type":"e","timestamp":"2024-09-30T12:00:00Z"}"#,
        );
        let event = b.events[0].1.clone();
        let events = [(3, event.clone()), (5, event.clone()), (1, event)];
        let early = Rejection {
            index: 2,
            transaction_id: None,
            message: "bad".into(),
            reason: RejectReason::InvalidField,
        };
        let mut s = IngestSummary::new(alloc::vec![early]);
        s.tally(
            &events,
            [
                Outcome::Accepted,
                Outcome::Duplicate,
                Outcome::Rejected("event not counted: x".into()),
            ],
        );
        let s = s.finish();
        assert_eq!((s.accepted, s.duplicates), (1, 1));
        let order: Vec<usize> = s.rejected.iter().map(|r| r.index).collect();
        assert_eq!(order, [1, 2]);
        assert_eq!(s.rejected[0].transaction_id.as_deref(), Some("t"));
        assert_eq!(s.rejected[0].reason, RejectReason::Unmergeable);
    }

    #[test]
    fn dedupe_keys_outlive_every_retry_that_could_pass_validation() {
        // First copy dated as far ahead as allowed; a retry passes while its timestamp is within
        // the backdating window, so the key must outlive that by the clock margin.
        let last_valid_retry = FUTURE_LIMIT_MS + BACKDATE_LIMIT_MS;
        assert!(DEDUPE_RETENTION_MS > last_valid_retry);
        assert_eq!(DEDUPE_RETENTION_MS, 36 * DAY_MS);
    }

    #[test]
    fn property_count_limit() {
        let props: Vec<String> = (0..=MAX_PROPERTIES)
            .map(|i| format!("\"p{i}\":1"))
            .collect();
        let b = one(&format!(
            r#"{{"transaction_id":"t","customer_id":"c","event_type":"e","timestamp":"2024-09-30T00:00:00Z","properties":{{{}}}}}"#,
            props.join(",")
        ));
        assert_eq!(b.rejected.len(), 1);
        assert!(b.rejected[0].message.contains("2000"));
    }
}
