//! The environment a token, and so every event, row and document it touches, belongs to.
//!
//! Defined once here so central's stores, its native ingest and the edge's shards agree on the
//! names and their spelling on the wire (`"sandbox"`, `"production"`, lowercase).
//!
//! Invariants: exactly two environments; data of one is never visible through the other.

use serde::{Deserialize, Serialize};

/// Sandbox or production.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Env {
    Sandbox,
    Production,
}

impl Env {
    pub const ALL: [Env; 2] = [Env::Sandbox, Env::Production];

    pub fn as_str(self) -> &'static str {
        match self {
            Env::Sandbox => "sandbox",
            Env::Production => "production",
        }
    }

    /// The environment named `s`, in any letter case.
    pub fn parse(s: &str) -> Option<Env> {
        Env::ALL
            .into_iter()
            .find(|env| env.as_str().eq_ignore_ascii_case(s))
    }
}

impl core::fmt::Display for Env {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_in_any_case_and_nothing_else_parses() {
        for env in Env::ALL {
            assert_eq!(Env::parse(env.as_str()), Some(env));
            assert_eq!(Env::parse(&env.as_str().to_ascii_uppercase()), Some(env));
            let json = serde_json::to_string(&env).unwrap();
            assert_eq!(json, alloc::format!("\"{}\"", env.as_str()));
        }
        for other in ["", "prod", "sandbox ", "staging"] {
            assert_eq!(Env::parse(other), None);
        }
    }
}
