//! What a sealed batch carries and how it is encoded: the event record each accepted event (or
//! duplicate delivery) becomes, and the batch body, assembled within its bounds. Pure functions,
//! tested natively.
//!
//! Invariants:
//! - A body is byte for byte `serde_json::to_string(&Batch)` of the batch it describes (central
//!   parses it with serde; nothing here is a dialect of its own).
//! - A body holds a prefix of the candidate partials and a prefix of the candidate events, and at
//!   most [`MAX_SEALED_BYTES`] unless its single first item alone is larger (so sealing always
//!   progresses). When both kinds are waiting, partials take at most half the bytes before the
//!   events take theirs, so a stream of large partials never starves the events.
//! - An event record is encoded once, at ingest, as the JSON of its `StoredEvent` ([`record_json`]);
//!   sealing splices those texts into the body without parsing them again. Serde's JSON never holds
//!   a raw newline (strings escape it), so records of one group commit are kept joined by `\n`
//!   ([`RECORD_SEPARATOR`]) and split there.

use serde::Serialize;
use tally_core::batch::{BatchPartial, MAX_BATCH_PARTIALS};
use tally_core::event::Event;

/// Largest sealed batch body. The platform stores at most 2 MB per value, and central takes 16 MiB.
pub const MAX_SEALED_BYTES: usize = 1_500_000;
/// Most event records in one sealed batch (a shard seals more batches when more are pending).
/// Matches [`MAX_BATCH_PARTIALS`]: central applies a batch in one transaction, and 5,000 typical
/// records (a few hundred bytes each) stay well inside [`MAX_SEALED_BYTES`].
pub const MAX_BATCH_EVENTS: usize = MAX_BATCH_PARTIALS;
/// What separates the records of one stored chunk.
pub const RECORD_SEPARATOR: char = '\n';

/// `tally_core::event::StoredEvent`, borrowed: the same fields in the same order, so its JSON is
/// the owned type's byte for byte (a test checks it) without copying the event.
#[derive(Debug, Serialize)]
struct StoredEventRef<'a> {
    env: &'a str,
    event: &'a Event,
    matched_metrics: &'a [String],
    processed_ms: i64,
    duplicate: bool,
}

/// The JSON of the `StoredEvent` of `event` in `env`: as it goes into a sealed body.
pub fn record_json(
    env: &str,
    event: &Event,
    matched_metrics: &[String],
    processed_ms: i64,
    duplicate: bool,
) -> Result<String, String> {
    serde_json::to_string(&StoredEventRef {
        env,
        event,
        matched_metrics,
        processed_ms,
        duplicate,
    })
    .map_err(|e| format!("encoding an event record: {e}"))
}

/// What sealing the first `taken` records of `chunks` (stored rows of records joined by
/// [`RECORD_SEPARATOR`], oldest first) leaves: how many rows are sealed whole, and the rest of the
/// row sealed in part (its index, its remaining records and their count), if any.
pub fn after_taking<'a>(
    chunks: impl IntoIterator<Item = &'a str>,
    taken: usize,
) -> (usize, Option<(usize, String, usize)>) {
    let mut left = taken;
    let mut whole = 0;
    for (i, chunk) in chunks.into_iter().enumerate() {
        if left == 0 {
            break;
        }
        let records: Vec<&str> = chunk.split(RECORD_SEPARATOR).collect();
        if left >= records.len() {
            left -= records.len();
            whole += 1;
        } else {
            let rest = &records[left..];
            return (
                whole,
                Some((i, rest.join(&RECORD_SEPARATOR.to_string()), rest.len())),
            );
        }
    }
    (whole, None)
}

/// The metric ids of an event's contributions, sorted and distinct.
pub fn matched_metrics<'a>(metric_ids: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut ids: Vec<String> = metric_ids.into_iter().map(str::to_string).collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// A sealed body and how many of the candidates it holds.
#[derive(Debug)]
pub struct Sealed {
    pub body: String,
    /// The first `partials` candidate partials are in the body.
    pub partials: usize,
    /// The first `events` candidate events are in the body.
    pub events: usize,
}

/// A body being filled: the JSON of the items taken so far, from the front of each list.
struct Filling {
    head: String,
    partials: Vec<String>,
    events: Vec<String>,
    /// Bytes of the items taken and the commas between them.
    items_bytes: usize,
}

/// `,"events":[]`: what the event list adds around its items when it has any.
const EVENTS_FRAME: usize = 12;

impl Filling {
    /// The body's size with `extra` more bytes of items, and the event list if `with_events`.
    fn size(&self, extra: usize, with_events: bool) -> usize {
        // `]` closes the partials and `}` the body.
        let frame = self.head.len() + 2 + if with_events { EVENTS_FRAME } else { 0 };
        frame + self.items_bytes + extra
    }

    fn is_empty(&self) -> bool {
        self.partials.is_empty() && self.events.is_empty()
    }

    /// Takes the next of `all` (as `json` encodes them) into the partials (`events` false) or the
    /// events while the body stays within `limit`; the first item of an empty body is taken
    /// whatever its size.
    fn take<T>(
        &mut self,
        all: &[T],
        json: impl Fn(&T) -> Result<String, String>,
        events: bool,
        limit: usize,
    ) -> Result<(), String> {
        loop {
            let taken = if events { &self.events } else { &self.partials };
            let Some(item) = all.get(taken.len()) else {
                return Ok(());
            };
            let json = json(item)?;
            let cost = json.len() + usize::from(!taken.is_empty());
            let with_events = events || !self.events.is_empty();
            if !self.is_empty() && self.size(cost, with_events) > limit {
                return Ok(());
            }
            self.items_bytes += cost;
            if events {
                self.events.push(json);
            } else {
                self.partials.push(json);
            }
        }
    }
}

/// Assembles the body of batch `(shard_id, seq)` from prefixes of `partials` and `events` (event
/// records as [`record_json`] wrote them; each list already at most a batch's count), within
/// `max_bytes`: partials first (up to half the bytes when events are waiting), then events, then
/// more partials in what is left.
pub fn assemble(
    shard_id: &str,
    seq: u64,
    metrics_version: u64,
    partials: &[BatchPartial],
    events: &[&str],
    max_bytes: usize,
) -> Result<Sealed, String> {
    let id = serde_json::to_string(shard_id).map_err(|e| e.to_string())?;
    let mut fill = Filling {
        head: format!(
            "{{\"shard_id\":{id},\"seq\":{seq},\"metrics_version\":{metrics_version},\"partials\":["
        ),
        partials: Vec::new(),
        events: Vec::new(),
        items_bytes: 0,
    };
    let first_limit = if events.is_empty() {
        max_bytes
    } else {
        max_bytes / 2
    };
    let partial_json = |p: &BatchPartial| serde_json::to_string(p).map_err(|e| e.to_string());
    fill.take(partials, partial_json, false, first_limit)?;
    fill.take(events, |e: &&str| Ok((*e).to_string()), true, max_bytes)?;
    fill.take(partials, partial_json, false, max_bytes)?;
    let size = fill.size(0, !fill.events.is_empty());
    let mut body = String::with_capacity(size);
    body.push_str(&fill.head);
    body.push_str(&fill.partials.join(","));
    body.push(']');
    if !fill.events.is_empty() {
        body.push_str(",\"events\":[");
        body.push_str(&fill.events.join(","));
        body.push(']');
    }
    body.push('}');
    debug_assert_eq!(body.len(), size, "the body's size as counted");
    Ok(Sealed {
        body,
        partials: fill.partials.len(),
        events: fill.events.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_core::accumulate::{Accumulator, PartialKey};
    use tally_core::batch::Batch;
    use tally_core::event::StoredEvent;

    fn partial(i: usize, unique_values: usize) -> BatchPartial {
        BatchPartial {
            env: "sandbox".into(),
            key: PartialKey {
                customer_ref: format!("c{i}"),
                metric_id: "m".into(),
                groups: vec![Some("eu".into())],
                hour_ms: 3_600_000,
            },
            acc: if unique_values == 0 {
                Accumulator::Count(i as u64 + 1)
            } else {
                Accumulator::Unique((0..unique_values).map(|v| format!("v{i}-{v}")).collect())
            },
        }
    }

    fn event(i: usize, duplicate: bool) -> StoredEvent {
        StoredEvent {
            env: if i.is_multiple_of(2) {
                "sandbox"
            } else {
                "production"
            }
            .into(),
            event: Event {
                transaction_id: format!("t{i}"),
                customer_id: format!("cust \"{i}\""),
                event_type: "api_call".into(),
                timestamp_ms: 1_700_000_000_000 + i as i64,
                properties: [("region".to_string(), "eu-west".to_string())].into(),
            },
            matched_metrics: if i.is_multiple_of(3) {
                Vec::new()
            } else {
                vec!["m1".into(), "m2".into()]
            },
            processed_ms: 1_700_000_001_000,
            duplicate,
        }
    }

    fn batch(partials: &[BatchPartial], events: &[StoredEvent]) -> Batch {
        Batch {
            shard_id: "shard-3.ab12".into(),
            seq: 42,
            metrics_version: 7,
            partials: partials.to_vec(),
            events: events.to_vec(),
        }
    }

    fn json(e: &StoredEvent) -> String {
        record_json(
            &e.env,
            &e.event,
            &e.matched_metrics,
            e.processed_ms,
            e.duplicate,
        )
        .unwrap()
    }

    fn seal(partials: &[BatchPartial], events: &[StoredEvent], max: usize) -> Sealed {
        let texts: Vec<String> = events.iter().map(json).collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        assemble("shard-3.ab12", 42, 7, partials, &refs, max).unwrap()
    }

    /// The body is exactly serde's encoding of the prefixes it claims to hold.
    fn check(sealed: &Sealed, partials: &[BatchPartial], events: &[StoredEvent]) {
        let expected = batch(&partials[..sealed.partials], &events[..sealed.events]);
        assert_eq!(sealed.body, serde_json::to_string(&expected).unwrap());
        let parsed: Batch = serde_json::from_str(&sealed.body).unwrap();
        assert_eq!(parsed, expected);
    }

    #[test]
    fn a_body_is_serdes_encoding_of_the_batch() {
        let ps: Vec<_> = (0..3).map(|i| partial(i, 0)).collect();
        let es: Vec<_> = (0..4).map(|i| event(i, i == 3)).collect();
        for (p, e) in [
            (&ps[..], &es[..]),
            (&ps[..], &[][..]),
            (&[][..], &es[..]),
            (&ps[..1], &es[..1]),
        ] {
            let sealed = seal(p, e, MAX_SEALED_BYTES);
            assert_eq!((sealed.partials, sealed.events), (p.len(), e.len()));
            check(&sealed, p, e);
        }
        // No events: the field is absent, as older shards sent it (and older centrals expect).
        assert!(!seal(&ps, &[], MAX_SEALED_BYTES).body.contains("events"));
    }

    #[test]
    fn the_byte_bound_is_exact() {
        let ps: Vec<_> = (0..5).map(|i| partial(i, 0)).collect();
        let size_of = |n: usize| serde_json::to_string(&batch(&ps[..n], &[])).unwrap().len();
        for n in 1..=5 {
            let exact = seal(&ps, &[], size_of(n));
            assert_eq!(exact.partials, n);
            assert_eq!(exact.body.len(), size_of(n));
            check(&exact, &ps, &[]);
            if n > 1 {
                assert_eq!(seal(&ps, &[], size_of(n) - 1).partials, n - 1);
            }
        }
        let es: Vec<_> = (0..5).map(|i| event(i, false)).collect();
        let size_of = |n: usize| serde_json::to_string(&batch(&[], &es[..n])).unwrap().len();
        for n in 1..=5 {
            assert_eq!(seal(&[], &es, size_of(n)).events, n);
            if n > 1 {
                assert_eq!(seal(&[], &es, size_of(n) - 1).events, n - 1);
            }
        }
    }

    #[test]
    fn an_oversized_first_item_is_sealed_alone() {
        let big = vec![partial(0, 2_000), partial(1, 0)];
        let sealed = seal(&big, &[event(0, false)], 1_000);
        assert_eq!((sealed.partials, sealed.events), (1, 0));
        check(&sealed, &big, &[event(0, false)]);
        let sealed = seal(&[], &[event(0, false), event(1, false)], 10);
        assert_eq!((sealed.partials, sealed.events), (0, 1));
    }

    #[test]
    fn large_partials_leave_half_the_body_to_events() {
        // Each partial ~2.4 kB: 1,000 of them would fill 1.5 MB alone.
        let ps: Vec<_> = (0..1_000).map(|i| partial(i, 200)).collect();
        let es: Vec<_> = (0..5_000).map(|i| event(i, i.is_multiple_of(7))).collect();
        let sealed = seal(&ps, &es, MAX_SEALED_BYTES);
        check(&sealed, &ps, &es);
        assert!(sealed.body.len() <= MAX_SEALED_BYTES);
        assert!(sealed.partials > 0 && sealed.partials < 1_000);
        assert!(sealed.events > 0 && sealed.events < 5_000);
        let partial_bytes = serde_json::to_string(&ps[..sealed.partials]).unwrap().len();
        assert!(partial_bytes <= MAX_SEALED_BYTES / 2, "{partial_bytes}");
        // The events fill what the partials left: one more would not fit.
        let one_more = serde_json::to_string(&es[sealed.events]).unwrap().len() + 1;
        assert!(sealed.body.len() + one_more > MAX_SEALED_BYTES);
    }

    #[test]
    fn partials_take_what_few_events_leave() {
        let ps: Vec<_> = (0..1_000).map(|i| partial(i, 200)).collect();
        let es: Vec<_> = (0..3).map(|i| event(i, false)).collect();
        let sealed = seal(&ps, &es, MAX_SEALED_BYTES);
        check(&sealed, &ps, &es);
        assert_eq!(sealed.events, 3);
        let partial_bytes = serde_json::to_string(&ps[..sealed.partials]).unwrap().len();
        assert!(partial_bytes > MAX_SEALED_BYTES / 2 + MAX_SEALED_BYTES / 4);
        assert!(sealed.body.len() <= MAX_SEALED_BYTES);
    }

    #[test]
    fn a_full_count_of_typical_events_fits_one_body() {
        let es: Vec<_> = (0..MAX_BATCH_EVENTS).map(|i| event(i, false)).collect();
        let sealed = seal(&[], &es, MAX_SEALED_BYTES);
        assert_eq!(sealed.events, MAX_BATCH_EVENTS);
        assert!(sealed.body.len() <= MAX_SEALED_BYTES);
    }

    #[test]
    fn a_record_is_the_stored_events_json() {
        for (i, dup) in [(0, false), (1, true), (2, false), (5, true)] {
            let original = event(i, dup);
            let text = json(&original);
            assert_eq!(text, serde_json::to_string(&original).unwrap());
            assert!(!text.contains(RECORD_SEPARATOR));
            assert_eq!(
                serde_json::from_str::<StoredEvent>(&text).unwrap(),
                original
            );
        }
        // A newline inside a value is escaped, so it never splits a chunk.
        let mut e = event(1, false);
        e.event
            .properties
            .insert("note".into(), "two\nlines".into());
        assert!(!json(&e).contains(RECORD_SEPARATOR));
    }

    #[test]
    fn sealing_part_of_a_chunk_keeps_the_rest() {
        let chunks = ["a", "b\nc\nd", "e\nf"];
        assert_eq!(after_taking(chunks, 0), (0, None));
        assert_eq!(after_taking(chunks, 1), (1, None));
        assert_eq!(after_taking(chunks, 2), (1, Some((1, "c\nd".into(), 2))));
        assert_eq!(after_taking(chunks, 3), (1, Some((1, "d".into(), 1))));
        assert_eq!(after_taking(chunks, 4), (2, None));
        assert_eq!(after_taking(chunks, 5), (2, Some((2, "f".into(), 1))));
        assert_eq!(after_taking(chunks, 6), (3, None));
        assert_eq!(after_taking(chunks, 9), (3, None));
    }

    #[test]
    fn matched_metrics_are_sorted_and_distinct() {
        assert_eq!(matched_metrics(["b", "a", "b", "c", "a"]), ["a", "b", "c"]);
        assert!(matched_metrics([]).is_empty());
    }
}
