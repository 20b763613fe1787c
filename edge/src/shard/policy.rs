//! When a shard seals, retries and wakes up: pure functions of its counters, so they can be tested
//! without a runtime.
//!
//! Invariants:
//! - A shard seals only when nothing sealed is waiting, or when its pending work fills a batch
//!   (partials, event records or their bytes) and the sealed backlog has room. So while central is
//!   down, events keep merging into the same pending partials instead of fragmenting into many
//!   small batches, and the backlog stays bounded by [`MAX_SEALED_BATCHES`].
//! - Retries back off exponentially from the flush interval up to [`MAX_BACKOFF_MS`].
//! - Ingest is refused (503, safe to retry) only when pending partials reach
//!   [`MAX_PENDING_PARTIALS`] or pending event records reach [`MAX_PENDING_EVENTS`] or
//!   [`MAX_PENDING_EVENT_BYTES`], which needs the backlog to be full first.

use tally_core::batch::MAX_BATCH_PARTIALS;

use super::seal::{MAX_BATCH_EVENTS, MAX_SEALED_BYTES};

/// Pending partials that make a shard flush at once rather than after the flush interval.
pub const FLUSH_PARTIALS: u64 = MAX_BATCH_PARTIALS as u64;
/// Pending partials at which ingest is refused until central catches up.
pub const MAX_PENDING_PARTIALS: u64 = 4 * FLUSH_PARTIALS;
/// Pending event records that make a shard flush at once (a batch's worth).
pub const FLUSH_EVENTS: u64 = MAX_BATCH_EVENTS as u64;
/// Bytes of pending event records that make a shard flush at once: what one sealed body holds
/// (records are stored as the JSON they are sealed as).
pub const FLUSH_EVENT_BYTES: u64 = MAX_SEALED_BYTES as u64;
/// Pending event records at which ingest is refused until central catches up. Unlike partials,
/// records do not merge, so this is what bounds a shard's storage through a long central outage
/// (with the sealed backlog: 64 × 5,000 + 320,000 events per shard).
pub const MAX_PENDING_EVENTS: u64 = 64 * FLUSH_EVENTS;
/// Bytes of pending event records at which ingest is refused (a Durable Object holds 10 GB).
pub const MAX_PENDING_EVENT_BYTES: u64 = 256 << 20;
/// Most sealed, unacknowledged batches a shard keeps.
pub const MAX_SEALED_BATCHES: u64 = 64;
/// Most batches one alarm delivers before yielding (it re-arms itself at once if more remain).
pub const MAX_BATCHES_PER_ALARM: usize = 16;
/// Most ingest calls one storage transaction commits (group commit; the rest wait for the next).
pub const MAX_GROUP_CALLS: usize = 64;
/// Most ingest calls a shard holds waiting to commit; beyond it, calls get 503 (safe to retry).
pub const MAX_QUEUED_CALLS: usize = 1024;
/// Longest wait between delivery attempts.
pub const MAX_BACKOFF_MS: i64 = 10_000;
/// How often dedupe keys are pruned.
pub const PRUNE_INTERVAL_MS: i64 = 60 * 60 * 1000;
/// Most prune statements one alarm runs.
pub const MAX_PRUNE_ROUNDS: usize = 8;

/// What a shard holds that is not sealed yet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Pending partials.
    pub partials: u64,
    /// Pending event records (accepted events and duplicate deliveries).
    pub events: u64,
    /// Their stored size in bytes.
    pub event_bytes: u64,
}

impl Backlog {
    pub fn is_empty(&self) -> bool {
        self.partials == 0 && self.events == 0
    }

    /// Whether the pending work fills a sealed batch by any of its bounds.
    pub fn fills_a_batch(&self) -> bool {
        self.partials >= FLUSH_PARTIALS
            || self.events >= FLUSH_EVENTS
            || self.event_bytes >= FLUSH_EVENT_BYTES
    }

    /// Whether ingest must wait for central to catch up.
    pub fn refuses_ingest(&self) -> bool {
        self.partials >= MAX_PENDING_PARTIALS
            || self.events >= MAX_PENDING_EVENTS
            || self.event_bytes >= MAX_PENDING_EVENT_BYTES
    }
}

/// Whether to seal now, given the pending work and the sealed batches waiting.
pub fn should_seal(pending: &Backlog, sealed: u64) -> bool {
    !pending.is_empty() && (sealed == 0 || (pending.fills_a_batch() && sealed < MAX_SEALED_BATCHES))
}

/// Delay before the next delivery attempt after `failures` consecutive failures (≥ 1).
pub fn backoff_ms(flush_interval_ms: i64, failures: u32) -> i64 {
    let base = flush_interval_ms.clamp(100, MAX_BACKOFF_MS);
    let exponent = failures.saturating_sub(1).min(20);
    base.saturating_mul(1i64 << exponent).min(MAX_BACKOFF_MS)
}

/// When the shard should next wake after ingest added partials, if it must move its alarm
/// earlier; `None` keeps the current alarm.
pub fn flush_due(
    now_ms: i64,
    flush_interval_ms: i64,
    pending: &Backlog,
    current_alarm_ms: Option<i64>,
) -> Option<i64> {
    if pending.is_empty() {
        return None;
    }
    let due = if pending.fills_a_batch() {
        now_ms
    } else {
        now_ms.saturating_add(flush_interval_ms)
    };
    match current_alarm_ms {
        Some(at) if at <= due => None,
        _ => Some(due),
    }
}

/// When to wake after an alarm that delivered everything it could without failing.
pub fn next_wake(
    now_ms: i64,
    flush_interval_ms: i64,
    pending: &Backlog,
    sealed: u64,
    has_dedupe_keys: bool,
    last_prune_ms: i64,
) -> Option<i64> {
    if sealed > 0 || pending.fills_a_batch() {
        Some(now_ms)
    } else if !pending.is_empty() {
        Some(now_ms.saturating_add(flush_interval_ms))
    } else if has_dedupe_keys {
        Some(last_prune_ms.saturating_add(PRUNE_INTERVAL_MS).max(now_ms))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partials(n: u64) -> Backlog {
        Backlog {
            partials: n,
            ..Backlog::default()
        }
    }

    fn events(n: u64, bytes: u64) -> Backlog {
        Backlog {
            partials: 0,
            events: n,
            event_bytes: bytes,
        }
    }

    #[test]
    fn sealing_waits_for_the_backlog_unless_full() {
        assert!(!should_seal(&partials(0), 0));
        assert!(should_seal(&partials(1), 0));
        assert!(!should_seal(&partials(1), 1));
        assert!(should_seal(&partials(FLUSH_PARTIALS), 1));
        assert!(!should_seal(&partials(FLUSH_PARTIALS - 1), 1));
        assert!(!should_seal(&partials(FLUSH_PARTIALS), MAX_SEALED_BATCHES));
        assert!(should_seal(
            &partials(FLUSH_PARTIALS),
            MAX_SEALED_BATCHES - 1
        ));
    }

    #[test]
    fn many_events_seal_even_with_few_partials() {
        // Only duplicates pending (no partial): still sealed when nothing waits.
        assert!(should_seal(&events(1, 100), 0));
        assert!(!should_seal(&events(FLUSH_EVENTS - 1, 100), 1));
        assert!(should_seal(&events(FLUSH_EVENTS, 100), 1));
        assert!(!should_seal(&events(10, FLUSH_EVENT_BYTES - 1), 1));
        assert!(should_seal(&events(10, FLUSH_EVENT_BYTES), 1));
        let mixed = Backlog {
            partials: 3,
            events: FLUSH_EVENTS,
            event_bytes: 0,
        };
        assert!(should_seal(&mixed, 5));
        assert!(!should_seal(&mixed, MAX_SEALED_BATCHES));
    }

    #[test]
    fn ingest_is_refused_only_at_a_bound() {
        assert!(!partials(MAX_PENDING_PARTIALS - 1).refuses_ingest());
        assert!(partials(MAX_PENDING_PARTIALS).refuses_ingest());
        assert!(!events(MAX_PENDING_EVENTS - 1, MAX_PENDING_EVENT_BYTES - 1).refuses_ingest());
        assert!(events(MAX_PENDING_EVENTS, 0).refuses_ingest());
        assert!(events(1, MAX_PENDING_EVENT_BYTES).refuses_ingest());
        // The refusal bounds lie beyond the sealing bounds: a shard seals before it refuses.
        const { assert!(MAX_PENDING_EVENTS > FLUSH_EVENTS) };
        const { assert!(MAX_PENDING_EVENT_BYTES > FLUSH_EVENT_BYTES) };
    }

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff_ms(300, 1), 300);
        assert_eq!(backoff_ms(300, 2), 600);
        assert_eq!(backoff_ms(300, 3), 1_200);
        assert_eq!(backoff_ms(300, 10), MAX_BACKOFF_MS);
        assert_eq!(backoff_ms(300, u32::MAX), MAX_BACKOFF_MS);
        assert_eq!(backoff_ms(10, 1), 100);
        assert_eq!(backoff_ms(600_000, 1), MAX_BACKOFF_MS);
    }

    #[test]
    fn alarms_only_move_earlier() {
        assert_eq!(flush_due(1_000, 300, &partials(0), None), None);
        assert_eq!(flush_due(1_000, 300, &partials(5), None), Some(1_300));
        assert_eq!(flush_due(1_000, 300, &partials(5), Some(1_200)), None);
        assert_eq!(
            flush_due(1_000, 300, &partials(5), Some(5_000)),
            Some(1_300)
        );
        assert_eq!(
            flush_due(1_000, 300, &partials(FLUSH_PARTIALS), Some(1_200)),
            Some(1_000)
        );
        // Event records alone set the alarm, and a batch's worth of them makes it due now.
        assert_eq!(flush_due(1_000, 300, &events(1, 50), None), Some(1_300));
        assert_eq!(
            flush_due(1_000, 300, &events(FLUSH_EVENTS, 50), Some(1_200)),
            Some(1_000)
        );
        assert_eq!(
            flush_due(1_000, 300, &events(2, FLUSH_EVENT_BYTES), Some(1_200)),
            Some(1_000)
        );
    }

    #[test]
    fn idle_shards_wake_only_to_prune() {
        assert_eq!(next_wake(10, 300, &partials(0), 1, false, 0), Some(10));
        assert_eq!(next_wake(10, 300, &partials(3), 0, false, 0), Some(310));
        assert_eq!(next_wake(10, 300, &events(3, 9), 0, false, 0), Some(310));
        assert_eq!(
            next_wake(10, 300, &events(FLUSH_EVENTS, 9), 0, false, 0),
            Some(10)
        );
        assert_eq!(
            next_wake(10, 300, &partials(0), 0, true, 0),
            Some(PRUNE_INTERVAL_MS)
        );
        assert_eq!(
            next_wake(PRUNE_INTERVAL_MS * 3, 300, &partials(0), 0, true, 0),
            Some(PRUNE_INTERVAL_MS * 3)
        );
        assert_eq!(next_wake(10, 300, &partials(0), 0, false, 0), None);
    }
}
