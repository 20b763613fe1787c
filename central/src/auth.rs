//! API tokens: random, shown once, stored as SHA-256 hashes, each bound to one environment.
//!
//! A presented token is never compared with a stored one: its SHA-256 digest is looked up. How
//! long that lookup takes depends only on the digest of what the caller sent, so timing reveals
//! nothing about any real token (finding a token from digest bytes is a preimage attack); this is
//! what makes the check constant-time with respect to the secret. The edge's HMAC signatures are
//! verified with `Mac::verify_slice`, which compares in constant time.

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::store::{Env, StoreResult, TokenStore};

/// Hex SHA-256 of a token. Tokens carry 256 random bits, so an unsalted hash is enough to make a
/// leaked database useless for authentication.
pub fn hash_token(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Creates, stores and returns a new token for `env`, optionally named.
pub async fn create_token(
    store: &dyn TokenStore,
    env: Env,
    name: Option<&str>,
    now_ms: i64,
) -> StoreResult<String> {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let prefix = match env {
        Env::Sandbox => "tally_sbx_",
        Env::Production => "tally_prd_",
    };
    let token = format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    store
        .insert_token(&hash_token(&token), env, name, now_ms)
        .await?;
    Ok(token)
}
