//! The edge → central wire formats: sealed partial-aggregate batches, their acknowledgement, the
//! metric snapshot the edge meters with, and the HMAC-SHA256 signature both sides compute.
//!
//! Invariants:
//! - A batch is identified by `(shard_id, seq)`; a sealed batch never changes, so central can treat
//!   a second delivery as a replay (a no-op that still acknowledges).
//! - The signature covers the timestamp, the method, the path with its query and the body, exactly
//!   as sent: none can be altered, and a signed request cannot be replayed to another endpoint,
//!   another environment (`?env=`) or outside the accepted clock skew.
//! - The headers (present, well formed, timestamp inside the skew) are checked by
//!   [`SignatureHeaders::parse`] before the body is read; the body only by [`SignatureHeaders::verify`].

use alloc::format;
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
    /// The events whose usage the partials hold (and duplicates seen), for central's event
    /// store. Absent (empty) from older shards.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<crate::event::StoredEvent>,
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

/// What a signature covers besides the timestamp: the request's method, its path with query exactly
/// as sent (relative to central's root, e.g. `/internal/v1/metrics?env=sandbox`), and its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignedRequest<'a> {
    /// Upper-case HTTP method (`GET`, `POST`).
    pub method: &'a str,
    pub path_and_query: &'a str,
    pub body: &'a [u8],
}

/// The signed message is `timestamp "\n" method "\n" path_and_query "\n" body`. Neither a decimal
/// timestamp, an HTTP method nor a request target can hold a newline, so the fields cannot be
/// shifted into one another.
fn mac(key: &[u8], timestamp_ms: i64, req: &SignedRequest<'_>) -> HmacSha256 {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail.
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC-SHA256 takes keys of any length"),
    };
    let head = format!("{timestamp_ms}\n{}\n{}\n", req.method, req.path_and_query);
    mac.update(head.as_bytes());
    mac.update(req.body);
    mac
}

/// The lowercase hex HMAC-SHA256 of `req` signed at `timestamp_ms` under `key`.
pub fn sign(key: &[u8], timestamp_ms: i64, req: &SignedRequest<'_>) -> String {
    let tag = mac(key, timestamp_ms, req).finalize().into_bytes();
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

/// A request's signature headers, well formed and with a timestamp inside the accepted skew:
/// everything a verifier can check before it reads (and buffers) the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureHeaders {
    timestamp_ms: i64,
    tag: Vec<u8>,
}

impl SignatureHeaders {
    /// Parses the two header values and checks the timestamp against `now_ms`.
    pub fn parse(
        timestamp: &str,
        signature_hex: &str,
        now_ms: i64,
    ) -> Result<SignatureHeaders, SignatureError> {
        let timestamp_ms: i64 = timestamp.parse().map_err(|_| SignatureError::Malformed)?;
        let tag = decode_hex(signature_hex).ok_or(SignatureError::Malformed)?;
        if (now_ms.saturating_sub(timestamp_ms)).abs() > MAX_SKEW_MS {
            return Err(SignatureError::Stale);
        }
        Ok(SignatureHeaders { timestamp_ms, tag })
    }

    /// Checks, in constant time, that the signature is `req`'s under `key`.
    pub fn verify(&self, key: &[u8], req: &SignedRequest<'_>) -> Result<(), SignatureError> {
        mac(key, self.timestamp_ms, req)
            .verify_slice(&self.tag)
            .map_err(|_| SignatureError::Mismatch)
    }
}

/// Parses the headers, checks the timestamp against `now_ms` and verifies the signature of `req`.
pub fn verify(
    key: &[u8],
    timestamp: &str,
    signature_hex: &str,
    req: &SignedRequest<'_>,
    now_ms: i64,
) -> Result<(), SignatureError> {
    SignatureHeaders::parse(timestamp, signature_hex, now_ms)?.verify(key, req)
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

    const POST_BATCH: SignedRequest<'static> = SignedRequest {
        method: "POST",
        path_and_query: "/internal/v1/batches",
        body: b"{}",
    };

    #[test]
    fn sign_then_verify() {
        let sig = sign(b"k", 1_000, &POST_BATCH);
        assert_eq!(sig.len(), 64);
        assert_eq!(verify(b"k", "1000", &sig, &POST_BATCH, 1_000), Ok(()));
        let other_body = SignedRequest {
            body: b"{ }",
            ..POST_BATCH
        };
        assert_eq!(
            verify(b"k", "1000", &sig, &other_body, 1_000),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"other", "1000", &sig, &POST_BATCH, 1_000),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"k", "1001", &sig, &POST_BATCH, 1_000),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"k", "1000", &sig, &POST_BATCH, 1_000 + MAX_SKEW_MS + 1),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(b"k", "x", &sig, &POST_BATCH, 0),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(b"k", "1000", "zz", &POST_BATCH, 1_000),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn a_signature_is_bound_to_its_method_path_and_query() {
        let sandbox = SignedRequest {
            method: "GET",
            path_and_query: "/internal/v1/metrics?env=sandbox",
            body: b"",
        };
        let sig = sign(b"k", 1_000, &sandbox);
        let replays = [
            SignedRequest {
                path_and_query: "/internal/v1/metrics?env=production",
                ..sandbox
            },
            SignedRequest {
                path_and_query: "/internal/v1/stats",
                ..sandbox
            },
            SignedRequest {
                path_and_query: "/internal/v1/metrics",
                ..sandbox
            },
            SignedRequest {
                method: "POST",
                ..sandbox
            },
            // The separators are part of the message: moving bytes between fields changes it.
            SignedRequest {
                path_and_query: "/internal/v1/metrics?env=sandbox\n",
                body: b"",
                ..sandbox
            },
        ];
        for replay in replays {
            assert_eq!(
                verify(b"k", "1000", &sig, &replay, 1_000),
                Err(SignatureError::Mismatch),
                "{replay:?}"
            );
        }
        assert_eq!(verify(b"k", "1000", &sig, &sandbox, 1_000), Ok(()));
    }

    #[test]
    fn headers_are_checked_before_the_body() {
        let sig = sign(b"k", 1_000, &POST_BATCH);
        let headers = SignatureHeaders::parse("1000", &sig, 1_000 + MAX_SKEW_MS).unwrap();
        assert_eq!(headers.verify(b"k", &POST_BATCH), Ok(()));
        assert_eq!(
            SignatureHeaders::parse("1000", &sig, 1_000 - MAX_SKEW_MS - 1),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            SignatureHeaders::parse("", "", 1_000),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            SignatureHeaders::parse("1000", &sig[..63], 1_000),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn known_vector() {
        // `printf '0\nPOST\n/internal/v1/batches\nwhat do ya want for nothing?' |
        //  openssl dgst -sha256 -hmac Jefe`
        let req = SignedRequest {
            method: "POST",
            path_and_query: "/internal/v1/batches",
            body: b"what do ya want for nothing?",
        };
        assert_eq!(
            sign(b"Jefe", 0, &req),
            "aaaaba0cb6cdf36f46f75fcda5247fea145cfad0b13d47b51f6e0998a3b3c4f5"
        );
    }
}
