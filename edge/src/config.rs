//! The Worker's configuration, read from its bindings on every request (reading is cheap; the
//! runtime may change bindings between deployments, never within an isolate's request).
//!
//! Bindings (see `wrangler.toml`):
//! - `CENTRAL_URL` (secret or var): central's base URL, e.g. `https://billing.example.com`.
//! - `EDGE_HMAC_KEY` (secret or var): the key central was started with (`TALLY_EDGE_HMAC_KEY`).
//! - `SHARD_COUNT` (var): how many shard Durable Objects events are spread over,
//!   1..=[`MAX_SHARD_COUNT`].
//! - `FLUSH_INTERVAL_MS` (var): how long a shard lets partials accumulate before flushing,
//!   [`MIN_FLUSH_INTERVAL_MS`]..=[`MAX_FLUSH_INTERVAL_MS`].
//!
//! Invariant: a value that is present but invalid is an error, never silently replaced by a
//! default (changing `SHARD_COUNT` by accident would move keys between shards).

use worker::Env;

use crate::error::EdgeError;

/// Default number of shards when `SHARD_COUNT` is unset.
pub const DEFAULT_SHARD_COUNT: u64 = 8;
/// Upper bound on `SHARD_COUNT`: one ingest request calls at most this many shards.
pub const MAX_SHARD_COUNT: u64 = 256;
/// Default flush interval when `FLUSH_INTERVAL_MS` is unset.
pub const DEFAULT_FLUSH_INTERVAL_MS: u64 = 2_000;
/// Smallest accepted flush interval.
pub const MIN_FLUSH_INTERVAL_MS: u64 = 10;
/// Largest accepted flush interval (usage should reach invoices within minutes).
pub const MAX_FLUSH_INTERVAL_MS: u64 = 600_000;

/// The binding names.
pub const CENTRAL_URL: &str = "CENTRAL_URL";
pub const EDGE_HMAC_KEY: &str = "EDGE_HMAC_KEY";
pub const SHARD_COUNT: &str = "SHARD_COUNT";
pub const FLUSH_INTERVAL_MS: &str = "FLUSH_INTERVAL_MS";
/// The Durable Object namespace binding of the shards.
pub const SHARD_BINDING: &str = "SHARD";

/// Validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeConfig {
    /// Central's base URL without a trailing slash.
    pub central_url: String,
    pub hmac_key: Vec<u8>,
    pub shard_count: u64,
    pub flush_interval_ms: i64,
}

impl EdgeConfig {
    pub fn from_env(env: &Env) -> Result<EdgeConfig, EdgeError> {
        EdgeConfig::parse(|name| text_binding(env, name))
    }

    /// Builds the configuration from a lookup of binding values (pure, for tests).
    pub fn parse(lookup: impl Fn(&str) -> Option<String>) -> Result<EdgeConfig, EdgeError> {
        let central_url = lookup(CENTRAL_URL)
            .map(|u| u.trim().trim_end_matches('/').to_string())
            .filter(|u| !u.is_empty())
            .ok_or_else(|| EdgeError::Config(format!("{CENTRAL_URL} is not set")))?;
        if !(central_url.starts_with("http://") || central_url.starts_with("https://")) {
            return Err(EdgeError::Config(format!(
                "{CENTRAL_URL} must start with http:// or https://"
            )));
        }
        let hmac_key = lookup(EDGE_HMAC_KEY)
            .filter(|k| !k.is_empty())
            .ok_or_else(|| EdgeError::Config(format!("{EDGE_HMAC_KEY} is not set")))?
            .into_bytes();
        let shard_count = bounded(
            SHARD_COUNT,
            lookup(SHARD_COUNT),
            DEFAULT_SHARD_COUNT,
            1,
            MAX_SHARD_COUNT,
        )?;
        let flush_interval_ms = bounded(
            FLUSH_INTERVAL_MS,
            lookup(FLUSH_INTERVAL_MS),
            DEFAULT_FLUSH_INTERVAL_MS,
            MIN_FLUSH_INTERVAL_MS,
            MAX_FLUSH_INTERVAL_MS,
        )?;
        Ok(EdgeConfig {
            central_url,
            hmac_key,
            shard_count,
            // Bounded by MAX_FLUSH_INTERVAL_MS, so it fits.
            flush_interval_ms: i64::try_from(flush_interval_ms).unwrap_or(i64::MAX),
        })
    }
}

/// A string binding: a secret or a plain-text var (wrangler's `--var` makes secrets vars locally).
fn text_binding(env: &Env, name: &str) -> Option<String> {
    if let Ok(s) = env.secret(name) {
        return Some(s.to_string());
    }
    env.var(name).ok().map(|v| v.to_string())
}

fn bounded(
    name: &str,
    value: Option<String>,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, EdgeError> {
    let Some(text) = value else {
        return Ok(default);
    };
    let n: u64 = text
        .trim()
        .parse()
        .map_err(|_| EdgeError::Config(format!("{name} must be an integer, not {text:?}")))?;
    if !(min..=max).contains(&n) {
        return Err(EdgeError::Config(format!(
            "{name} must be between {min} and {max}, not {n}"
        )));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(pairs: &[(&str, &str)]) -> Result<EdgeConfig, EdgeError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        EdgeConfig::parse(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_and_trailing_slash() {
        let c = cfg(&[
            (CENTRAL_URL, "http://127.0.0.1:8080/"),
            (EDGE_HMAC_KEY, "k"),
        ])
        .unwrap();
        assert_eq!(c.central_url, "http://127.0.0.1:8080");
        assert_eq!(c.hmac_key, b"k");
        assert_eq!(c.shard_count, DEFAULT_SHARD_COUNT);
        assert_eq!(c.flush_interval_ms, 2_000);
    }

    #[test]
    fn invalid_values_are_errors_not_defaults() {
        let base = [(CENTRAL_URL, "https://c"), (EDGE_HMAC_KEY, "k")];
        assert!(cfg(&[(EDGE_HMAC_KEY, "k")]).is_err());
        assert!(cfg(&[(CENTRAL_URL, "https://c")]).is_err());
        assert!(cfg(&[(CENTRAL_URL, "ftp://c"), (EDGE_HMAC_KEY, "k")]).is_err());
        for (name, bad) in [
            (SHARD_COUNT, "0"),
            (SHARD_COUNT, "257"),
            (SHARD_COUNT, "four"),
            (FLUSH_INTERVAL_MS, "1"),
            (FLUSH_INTERVAL_MS, "-5"),
        ] {
            let mut pairs = base.to_vec();
            pairs.push((name, bad));
            assert!(cfg(&pairs).is_err(), "{name}={bad}");
        }
        let mut pairs = base.to_vec();
        pairs.push((SHARD_COUNT, "16"));
        pairs.push((FLUSH_INTERVAL_MS, "300"));
        let c = cfg(&pairs).unwrap();
        assert_eq!((c.shard_count, c.flush_interval_ms), (16, 300));
    }
}
