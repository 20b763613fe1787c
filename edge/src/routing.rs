//! Which shard owns a dedupe key: `fnv1a64(env || 0x00 || transaction_id) mod shard_count`.
//!
//! Invariants:
//! - Stable: the hash is FNV-1a 64 over fixed bytes, independent of platform, Rust version or
//!   process (never `std`'s randomly seeded hasher), so every isolate routes a key to the same shard.
//! - Every copy of a transaction id in an environment goes to one shard, the single writer of that
//!   key, which is what makes check-and-record atomic.
//! - The NUL separator keeps (`"ab"`, `"c"`) and (`"a"`, `"bc"`) apart; environments never contain NUL.
//! - Changing `SHARD_COUNT` moves keys between shards, so a key seen before the change may be
//!   counted again after it: change it only while no retries of old events can arrive.

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a, 64-bit, over the concatenation of `parts`.
pub fn fnv1a64(parts: &[&[u8]]) -> u64 {
    let mut hash = FNV_OFFSET;
    for part in parts {
        for byte in *part {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(FNV_PRIME);
        }
    }
    hash
}

/// The shard (in `0..shard_count`) that owns (`env`, `transaction_id`). `shard_count` 0 is taken as 1.
pub fn shard_index(env: &str, transaction_id: &str, shard_count: u64) -> u64 {
    let hash = fnv1a64(&[env.as_bytes(), b"\0", transaction_id.as_bytes()]);
    hash % shard_count.max(1)
}

/// The Durable Object name of shard `index`.
pub fn shard_name(index: u64) -> String {
    format!("shard-{index}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_fnv1a64_vectors() {
        // Reference values of FNV-1a 64 (from the FNV authors' test suite).
        assert_eq!(fnv1a64(&[b""]), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(&[b"a"]), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(&[b"foobar"]), 0x8594_4171_f739_67e8);
        assert_eq!(fnv1a64(&[b"foo", b"bar"]), fnv1a64(&[b"foobar"]));
    }

    #[test]
    fn routing_is_stable_and_separates_fields() {
        // Pinned: if this changes, deployed shards would see old keys as new.
        assert_eq!(
            shard_index("sandbox", "txn-1", 8),
            shard_index("sandbox", "txn-1", 8)
        );
        assert_eq!(
            fnv1a64(&[b"sandbox", b"\0", b"txn-1"]),
            fnv1a64(&[b"sandbox\0txn-1"])
        );
        assert_ne!(
            fnv1a64(&[b"ab", b"\0", b"c"]),
            fnv1a64(&[b"a", b"\0", b"bc"])
        );
        assert_eq!(shard_index("sandbox", "x", 1), 0);
        assert_eq!(shard_index("sandbox", "x", 0), 0);
    }

    #[test]
    fn keys_spread_over_every_shard() {
        let n = 8;
        let mut counts = [0u32; 8];
        for i in 0..8_000 {
            let s = shard_index("production", &format!("evt-{i}"), n);
            counts[usize::try_from(s).unwrap()] += 1;
        }
        // Uniform would be 1,000 each; FNV-1a is far within ±20% on sequential ids.
        assert!(
            counts.iter().all(|c| (800..=1_200).contains(c)),
            "{counts:?}"
        );
    }
}
