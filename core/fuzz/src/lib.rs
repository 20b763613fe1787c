//! Shared input generators and exact oracles for the tally-core fuzz targets.
//!
//! The generators turn libFuzzer's bytes (through `arbitrary`) into the core's own types, biased
//! towards values that make the laws interesting: small name alphabets so filters and groups
//! collide, decimals at the edges of the 96-bit mantissa and the 28-digit scale. The oracles compute
//! with unbounded integers ([`Exact`]), never with the `Decimal` operations under test.

use arbitrary::{Arbitrary, Unstructured};
use num_bigint::BigInt;
use rust_decimal::Decimal;
use tally_core::accumulate::Accumulator;

/// The fixed "now" every ingest target validates against: 2024-10-01T00:00:00Z.
pub const NOW_MS: i64 = 1_727_740_800_000;

/// A decimal drawn from a mix of everyday values and the extremes of the representation.
#[derive(Debug, Clone, Copy)]
pub struct ArbDecimal(pub Decimal);

impl<'a> Arbitrary<'a> for ArbDecimal {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let d = match u.int_in_range(0u8..=9)? {
            // Small numbers with a few decimal places: prices, quantities, tier sizes.
            0..=4 => Decimal::new(i64::from(u.arbitrary::<i16>()?), u.int_in_range(0..=4)?),
            5 | 6 => Decimal::new(u.arbitrary::<i64>()?, u.int_in_range(0..=28)?),
            // Any 96-bit mantissa at any scale.
            7 | 8 => Decimal::from_parts(
                u.arbitrary()?,
                u.arbitrary()?,
                u.arbitrary()?,
                u.arbitrary()?,
                u.int_in_range(0..=28)?,
            ),
            _ => *u.choose(&[
                Decimal::MAX,
                Decimal::MIN,
                Decimal::ZERO,
                Decimal::ONE,
                Decimal::NEGATIVE_ONE,
                Decimal::new(1, 28),
                Decimal::new(5, 1),
                Decimal::from_i128_with_scale(10_i128.pow(28), 0),
            ])?,
        };
        Ok(ArbDecimal(d))
    }
}

/// Scale of [`Exact`] values: 60 decimal places hold any `Decimal` (scale <= 28) and any product
/// of two of them (scale <= 56) without loss.
const EXACT_SCALE: u32 = 60;

/// An exact rational with a fixed denominator of 10^60, for oracles.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Exact(BigInt);

impl Exact {
    pub fn zero() -> Self {
        Exact(BigInt::from(0))
    }

    pub fn of(d: Decimal) -> Self {
        Exact(BigInt::from(d.mantissa()) * BigInt::from(10).pow(EXACT_SCALE - d.scale()))
    }

    /// `a * b`, exactly.
    pub fn product(a: Decimal, b: Decimal) -> Self {
        let (a, b) = (Self::of(a), Self::of(b));
        Exact(a.0 * b.0 / BigInt::from(10).pow(EXACT_SCALE))
    }

    pub fn add(&self, other: &Exact) -> Exact {
        Exact(&self.0 + &other.0)
    }

    pub fn is_negative(&self) -> bool {
        self.0 < BigInt::from(0)
    }
}

/// An accumulator of kind `kind % 5` (COUNT, SUM, MAX, UNIQUE, LATEST), with COUNTs near
/// `u64::MAX` now and then.
pub fn accumulator_of_kind(u: &mut Unstructured<'_>, kind: u8) -> arbitrary::Result<Accumulator> {
    Ok(match kind % 5 {
        0 => Accumulator::Count(if u.ratio(1u8, 8)? {
            u64::MAX - u.int_in_range(0..=3)?
        } else {
            u.arbitrary()?
        }),
        1 => Accumulator::Sum(u.arbitrary::<ArbDecimal>()?.0),
        2 => Accumulator::Max(u.arbitrary::<ArbDecimal>()?.0),
        3 => Accumulator::Unique(
            (0..u.int_in_range(0u8..=3)?)
                .map(|_| small_name(u, &["a", "b", "c", "d"]))
                .collect::<arbitrary::Result<_>>()?,
        ),
        _ => Accumulator::Latest {
            timestamp_ms: u.int_in_range(0..=3)?,
            transaction_id: small_name(u, &["t1", "t2", "t3"])?,
            value: u.arbitrary::<ArbDecimal>()?.0,
        },
    })
}

/// A string from a small alphabet most of the time (so names collide), anything otherwise.
pub fn small_name(u: &mut Unstructured<'_>, alphabet: &[&str]) -> arbitrary::Result<String> {
    if u.ratio(1u8, 16)? {
        u.arbitrary()
    } else {
        Ok(String::from(*u.choose(alphabet)?))
    }
}

/// The laws of `tally_core::ingest::parse_batch` on any body, checked against an independent
/// parse of the same bytes. Returns the parsed batch when the request was not refused.
pub fn check_parse_batch(body: &[u8]) -> Option<tally_core::ingest::ParsedBatch> {
    use serde_json::Value;
    use tally_core::ingest::{parse_batch, validate_event, BatchError, MAX_BATCH_EVENTS};

    let result = parse_batch(body, NOW_MS);
    let items = match (&result, serde_json::from_slice::<Value>(body)) {
        (Err(BatchError::BodyTooLarge), _) => {
            assert!(body.len() > tally_core::ingest::MAX_BODY_BYTES);
            return None;
        }
        (Err(BatchError::NotJson(msg)), Err(_)) => {
            assert!(!msg.is_empty());
            return None;
        }
        (r, Err(e)) => panic!("not JSON ({e}) but parse_batch said {r:?}"),
        (Err(BatchError::NotJson(m)), Ok(v)) => panic!("valid JSON {v} refused as not JSON: {m}"),
        (r, Ok(Value::Array(items))) => {
            let n = items.len();
            match r {
                Err(BatchError::Empty) => assert_eq!(n, 0),
                Err(BatchError::TooManyEvents(k)) => {
                    assert_eq!(*k, n);
                    assert!(n > MAX_BATCH_EVENTS);
                }
                Err(e) => panic!("array of {n} refused as {e:?}"),
                Ok(_) => assert!((1..=MAX_BATCH_EVENTS).contains(&n), "{n} items accepted"),
            }
            items
        }
        (r, Ok(other)) => {
            assert_eq!(r, &Err(BatchError::NotArray), "body {other}");
            return None;
        }
    };
    let batch = result.ok()?;

    // Every index is judged exactly once, and both lists are in request order.
    let accepted: Vec<usize> = batch.events.iter().map(|(i, _)| *i).collect();
    let rejected: Vec<usize> = batch.rejected.iter().map(|r| r.index).collect();
    assert!(accepted.windows(2).all(|w| w[0] < w[1]), "{accepted:?}");
    assert!(rejected.windows(2).all(|w| w[0] < w[1]), "{rejected:?}");
    let mut all: Vec<usize> = accepted.iter().chain(&rejected).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..items.len()).collect::<Vec<_>>());

    for r in &batch.rejected {
        let item = &items[r.index];
        let sent_id = item.get("transaction_id").and_then(Value::as_str);
        assert_eq!(r.transaction_id.as_deref(), sent_id);
        assert!(!r.message.is_empty());
        assert_eq!(
            validate_event(item.clone(), NOW_MS).map_err(|e| (e.reason, e.message)),
            Err((r.reason, r.message.clone()))
        );
    }

    for (i, event) in &batch.events {
        assert_eq!(
            validate_event(items[*i].clone(), NOW_MS).as_ref(),
            Ok(event)
        );
        check_event_invariants(event);
        // The stored form (Event's own serde) and the wire form both give the event back.
        let stored = serde_json::to_vec(event).expect("an event serialises");
        let back: tally_core::event::Event = serde_json::from_slice(&stored).expect("and back");
        assert_eq!(&back, event);
        assert_eq!(validate_event(wire_form(event), NOW_MS).as_ref(), Ok(event));
    }

    // The accepted events alone, re-sent as a batch, are all accepted unchanged.
    if !batch.events.is_empty() {
        let again: Vec<Value> = batch.events.iter().map(|(_, e)| wire_form(e)).collect();
        let body = serde_json::to_vec(&again).expect("serialises");
        let reparsed = parse_batch(&body, NOW_MS).expect("re-sent batch is accepted");
        assert!(reparsed.rejected.is_empty(), "{:?}", reparsed.rejected);
        let events: Vec<_> = reparsed.events.into_iter().map(|(_, e)| e).collect();
        let want: Vec<_> = batch.events.iter().map(|(_, e)| e.clone()).collect();
        assert_eq!(events, want);
    }
    Some(batch)
}

/// An accepted event as a client would send it: timestamp as RFC 3339, properties as strings.
pub fn wire_form(e: &tally_core::event::Event) -> serde_json::Value {
    serde_json::json!({
        "transaction_id": e.transaction_id,
        "customer_id": e.customer_id,
        "event_type": e.event_type,
        "timestamp": tally_core::time::format_rfc3339_ms(e.timestamp_ms),
        "properties": e.properties,
    })
}

/// What the `Event` type promises about every validated event.
pub fn check_event_invariants(e: &tally_core::event::Event) {
    use tally_core::ingest::*;
    for (id, max) in [
        (&e.transaction_id, MAX_TRANSACTION_ID_CHARS),
        (&e.customer_id, MAX_ID_CHARS),
        (&e.event_type, MAX_ID_CHARS),
    ] {
        assert!(
            !id.is_empty() && !id.contains('\0') && id.chars().count() <= max,
            "{id:?}"
        );
    }
    assert!(e.timestamp_ms >= NOW_MS - BACKDATE_LIMIT_MS);
    assert!(e.timestamp_ms <= NOW_MS + FUTURE_LIMIT_MS);
    assert!(e.properties.len() <= MAX_PROPERTIES);
    for (k, v) in &e.properties {
        assert!(k.chars().count() <= MAX_PROPERTY_NAME_CHARS);
        assert!(v.chars().count() <= MAX_PROPERTY_VALUE_CHARS);
    }
}
