//! When a shard seals, retries and wakes up: pure functions of its counters, so they can be tested
//! without a runtime.
//!
//! Invariants:
//! - A shard seals pending partials only when nothing sealed is waiting, or when the pending set is
//!   full and the sealed backlog has room. So while central is down, events keep merging into the
//!   same pending partials instead of fragmenting into many small batches, and the backlog stays
//!   bounded by [`MAX_SEALED_BATCHES`].
//! - Retries back off exponentially from the flush interval up to [`MAX_BACKOFF_MS`].
//! - Ingest is refused (503, safe to retry) only when pending partials reach
//!   [`MAX_PENDING_PARTIALS`], which needs the backlog to be full first.

use tally_core::batch::MAX_BATCH_PARTIALS;

/// Pending partials that make a shard flush at once rather than after the flush interval.
pub const FLUSH_PARTIALS: u64 = MAX_BATCH_PARTIALS as u64;
/// Pending partials at which ingest is refused until central catches up.
pub const MAX_PENDING_PARTIALS: u64 = 4 * FLUSH_PARTIALS;
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

/// Whether to seal now, given the pending partials and sealed batches waiting.
pub fn should_seal(pending: u64, sealed: u64) -> bool {
    pending > 0 && (sealed == 0 || (pending >= FLUSH_PARTIALS && sealed < MAX_SEALED_BATCHES))
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
    pending: u64,
    current_alarm_ms: Option<i64>,
) -> Option<i64> {
    if pending == 0 {
        return None;
    }
    let due = if pending >= FLUSH_PARTIALS {
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
    pending: u64,
    sealed: u64,
    has_dedupe_keys: bool,
    last_prune_ms: i64,
) -> Option<i64> {
    if sealed > 0 || pending >= FLUSH_PARTIALS {
        Some(now_ms)
    } else if pending > 0 {
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

    #[test]
    fn sealing_waits_for_the_backlog_unless_full() {
        assert!(!should_seal(0, 0));
        assert!(should_seal(1, 0));
        assert!(!should_seal(1, 1));
        assert!(should_seal(FLUSH_PARTIALS, 1));
        assert!(!should_seal(FLUSH_PARTIALS, MAX_SEALED_BATCHES));
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
        assert_eq!(flush_due(1_000, 300, 0, None), None);
        assert_eq!(flush_due(1_000, 300, 5, None), Some(1_300));
        assert_eq!(flush_due(1_000, 300, 5, Some(1_200)), None);
        assert_eq!(flush_due(1_000, 300, 5, Some(5_000)), Some(1_300));
        assert_eq!(
            flush_due(1_000, 300, FLUSH_PARTIALS, Some(1_200)),
            Some(1_000)
        );
    }

    #[test]
    fn idle_shards_wake_only_to_prune() {
        assert_eq!(next_wake(10, 300, 0, 1, false, 0), Some(10));
        assert_eq!(next_wake(10, 300, 3, 0, false, 0), Some(310));
        assert_eq!(next_wake(10, 300, 0, 0, true, 0), Some(PRUNE_INTERVAL_MS));
        assert_eq!(
            next_wake(PRUNE_INTERVAL_MS * 3, 300, 0, 0, true, 0),
            Some(PRUNE_INTERVAL_MS * 3)
        );
        assert_eq!(next_wake(10, 300, 0, 0, false, 0), None);
    }
}
