//! Bearer-token authentication at the edge: the token's SHA-256 is looked up at central
//! (`/internal/v1/tokens/lookup`) and the answer cached in isolate memory.
//!
//! Invariants:
//! - Parsing matches central's `authenticate`: `Authorization: <scheme> <token>` with the scheme
//!   `bearer` in any case, the token trimmed; anything else is a 401.
//! - Only positive answers are cached, for at most [`TOKEN_TTL_MS`]; an unknown token is asked
//!   again every time, so a token created a moment ago works at once. A token revoked at central
//!   may keep working at the edge for up to [`TOKEN_TTL_MS`].
//! - The cache holds at most [`MAX_CACHED_TOKENS`] entries: when full, expired entries are dropped,
//!   and if none are, the whole cache is (it refills from central).
//! - Only hashes are kept, never tokens.

use std::cell::RefCell;
use std::collections::HashMap;

use sha2::{Digest, Sha256};
use worker::Headers;

use crate::config::EdgeConfig;
use crate::error::EdgeError;

/// How long a positive lookup is trusted.
pub const TOKEN_TTL_MS: i64 = 60_000;
/// Most token hashes cached per isolate.
pub const MAX_CACHED_TOKENS: usize = 10_000;

thread_local! {
    /// token hash -> (environment, expiry in epoch ms). Workers isolates are single-threaded.
    static CACHE: RefCell<TokenCache> = RefCell::new(TokenCache::default());
}

/// A bounded, expiring map of token hash to environment.
#[derive(Debug, Default)]
pub struct TokenCache {
    entries: HashMap<String, (String, i64)>,
}

impl TokenCache {
    pub fn get(&self, hash: &str, now_ms: i64) -> Option<String> {
        match self.entries.get(hash) {
            Some((env, expires_ms)) if *expires_ms > now_ms => Some(env.clone()),
            _ => None,
        }
    }

    pub fn insert(&mut self, hash: String, env: String, now_ms: i64) {
        if self.entries.len() >= MAX_CACHED_TOKENS && !self.entries.contains_key(&hash) {
            self.entries
                .retain(|_, (_, expires_ms)| *expires_ms > now_ms);
            if self.entries.len() >= MAX_CACHED_TOKENS {
                self.entries.clear();
            }
        }
        self.entries
            .insert(hash, (env, now_ms.saturating_add(TOKEN_TTL_MS)));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The token of `Authorization: Bearer <token>`, parsed exactly as central does.
pub fn bearer(authorization: Option<&str>) -> Option<String> {
    let (scheme, token) = authorization?.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

/// Lowercase hex SHA-256 of a token, as central stores it.
pub fn hash_token(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push(hex_digit(b >> 4));
        out.push(hex_digit(b & 0xf));
    }
    out
}

fn hex_digit(n: u8) -> char {
    char::from_digit(u32::from(n), 16).unwrap_or('0')
}

/// The environment (`sandbox` or `production`) of the request's token, or 401.
pub async fn environment(
    cfg: &EdgeConfig,
    headers: &Headers,
    now_ms: i64,
) -> Result<String, EdgeError> {
    let authorization = headers.get("authorization")?;
    let token = bearer(authorization.as_deref()).ok_or(EdgeError::Unauthorized)?;
    let hash = hash_token(&token);
    if let Some(env) = CACHE.with(|c| c.borrow().get(&hash, now_ms)) {
        return Ok(env);
    }
    let env = crate::central::token_env(cfg, &hash)
        .await?
        .ok_or(EdgeError::Unauthorized)?;
    if env != "sandbox" && env != "production" {
        return Err(EdgeError::Unavailable(format!(
            "central named an unknown environment {env:?}"
        )));
    }
    CACHE.with(|c| c.borrow_mut().insert(hash, env.clone(), now_ms));
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_parsing_matches_central() {
        assert_eq!(bearer(Some("Bearer abc")), Some("abc".into()));
        assert_eq!(bearer(Some("bearer  abc ")), Some("abc".into()));
        assert_eq!(bearer(Some("BEARER abc")), Some("abc".into()));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(Some("Bearer")), None);
        assert_eq!(bearer(None), None);
        assert_eq!(bearer(Some("Bearer ")), Some(String::new()));
    }

    #[test]
    fn sha256_hex() {
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn cache_expires_and_stays_bounded() {
        let mut c = TokenCache::default();
        c.insert("h".into(), "sandbox".into(), 0);
        assert_eq!(c.get("h", TOKEN_TTL_MS - 1), Some("sandbox".into()));
        assert_eq!(c.get("h", TOKEN_TTL_MS), None);
        for i in 0..MAX_CACHED_TOKENS + 10 {
            c.insert(format!("t{i}"), "production".into(), 1);
            assert!(c.len() <= MAX_CACHED_TOKENS);
        }
        // Inserting past the bound with nothing expired starts over rather than growing.
        assert!(c.len() <= MAX_CACHED_TOKENS);
        assert_eq!(
            c.get(&format!("t{}", MAX_CACHED_TOKENS + 9), 2),
            Some("production".into())
        );
    }
}
