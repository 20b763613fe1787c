//! The edge → central wire formats: sealed partial-aggregate batches, their acknowledgement, the
//! metric snapshot the edge meters with, and the HMAC-SHA256 signature both sides compute.
//!
//! Invariants:
//! - A batch is identified by `(shard_id, seq)`; a sealed batch never changes, so central can treat
//!   a second delivery as a replay (a no-op that still acknowledges).
//! - The signature covers `timestamp || "." || body` exactly as sent, so neither the body nor the
//!   timestamp can be altered or replayed outside the accepted clock skew.

use alloc::string::String;
use alloc::vec::Vec;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::accumulate::{Accumulator, PartialKey};
use crate::metric::MetricDef;

/// Header carrying the signing time (epoch milliseconds, decimal).
pub const TIMESTAMP_HEADER: &str = "x-tally-timestamp";
/// Header carrying the lowercase hex HMAC-SHA256 signature.
pub const SIGNATURE_HEADER: &str = "x-tally-signature";
/// Largest accepted difference between the signing time and the verifier's clock.
pub const MAX_SKEW_MS: i64 = 5 * 60 * 1000;
/// Most partials in one sealed batch (a shard seals more than one batch if it has more pending).
pub const MAX_BATCH_PARTIALS: usize = 5_000;

/// One pre-aggregated partial: usage of one customer reference, metric, grain values and hour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchPartial {
    /// `sandbox` or `production`.
    pub env: String,
    pub key: PartialKey,
    pub acc: Accumulator,
}

/// A sealed, numbered batch from one shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    pub shard_id: String,
    /// Strictly increasing per shard, starting at 1.
    pub seq: u64,
    /// The metric snapshot version the partials were computed with.
    pub metrics_version: u64,
    pub partials: Vec<BatchPartial>,
}

/// Central's answer to a delivered batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchAck {
    /// False when `(shard_id, seq)` had already been applied (a replay; nothing changed).
    pub applied: bool,
    /// Central's current metric snapshot version; a shard behind it refreshes before sealing.
    pub metrics_version: u64,
    /// Partials central could not merge (their total would overflow) and kept as dead letters
    /// instead; the rest of the batch was applied. Absent (0) from older centrals.
    #[serde(default)]
    pub dead_letters: u64,
}

/// The metric definitions of one environment, as the edge meters with them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricsSnapshot {
    pub version: u64,
    pub metrics: Vec<MetricDef>,
}

/// Central's answer to a token lookup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// `sandbox` or `production`.
    pub env: String,
}

type HmacSha256 = Hmac<Sha256>;

fn mac(key: &[u8], timestamp_ms: i64, body: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail.
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC-SHA256 takes keys of any length"),
    };
    let mut ts = itoa_i64(timestamp_ms);
    ts.push('.');
    mac.update(ts.as_bytes());
    mac.update(body);
    mac
}

fn itoa_i64(n: i64) -> String {
    use core::fmt::Write;
    let mut s = String::new();
    let _ = write!(s, "{n}");
    s
}

/// The lowercase hex HMAC-SHA256 of `timestamp_ms || "." || body` under `key`.
pub fn sign(key: &[u8], timestamp_ms: i64, body: &[u8]) -> String {
    let tag = mac(key, timestamp_ms, body).finalize().into_bytes();
    let mut out = String::with_capacity(tag.len() * 2);
    for b in tag {
        out.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
        out.push(char::from_digit(u32::from(b & 0xf), 16).unwrap_or('0'));
    }
    out
}

/// Why a signed request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureError {
    Malformed,
    Stale,
    Mismatch,
}

impl core::fmt::Display for SignatureError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            SignatureError::Malformed => "missing or malformed signature headers",
            SignatureError::Stale => "signature timestamp outside the accepted clock skew",
            SignatureError::Mismatch => "signature does not match",
        })
    }
}

/// Verifies a signature in constant time and checks the timestamp against `now_ms`.
pub fn verify(
    key: &[u8],
    timestamp: &str,
    signature_hex: &str,
    body: &[u8],
    now_ms: i64,
) -> Result<(), SignatureError> {
    let ts: i64 = timestamp.parse().map_err(|_| SignatureError::Malformed)?;
    if (now_ms.saturating_sub(ts)).abs() > MAX_SKEW_MS {
        return Err(SignatureError::Stale);
    }
    let tag = decode_hex(signature_hex).ok_or(SignatureError::Malformed)?;
    mac(key, ts, body)
        .verify_slice(&tag)
        .map_err(|_| SignatureError::Mismatch)
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 {
        return None;
    }
    let digits: Option<Vec<u8>> = s.chars().map(|c| c.to_digit(16).map(|d| d as u8)).collect();
    Some(digits?.chunks(2).map(|p| (p[0] << 4) | p[1]).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_then_verify() {
        let sig = sign(b"k", 1_000, b"{}");
        assert_eq!(sig.len(), 64);
        assert_eq!(verify(b"k", "1000", &sig, b"{}", 1_000), Ok(()));
        assert_eq!(
            verify(b"k", "1000", &sig, b"{ }", 1_000),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"other", "1000", &sig, b"{}", 1_000),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"k", "1001", &sig, b"{}", 1_000),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"k", "1000", &sig, b"{}", 1_000 + MAX_SKEW_MS + 1),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(b"k", "x", &sig, b"{}", 0),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(b"k", "1000", "zz", b"{}", 1_000),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn known_vector() {
        // `printf '0.what do ya want for nothing?' | openssl dgst -sha256 -hmac Jefe`
        assert_eq!(
            sign(b"Jefe", 0, b"what do ya want for nothing?"),
            "37f471929915ccd2cbbe79feb84ffcff4f2bb25e15fc41c2506687331ae179cc"
        );
    }
}
