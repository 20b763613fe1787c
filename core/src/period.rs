//! Billing periods from a contract's `usage_statement_schedule`.
//!
//! (Being written: see the interface below.)

use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Frequency {
    Monthly,
    Quarterly,
    Annual,
    Weekly,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AnchorDay {
    FirstOfMonth,
    ContractStart,
    CustomDate,
}

/// A contract's usage statement schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    pub frequency: Frequency,
    pub day: AnchorDay,
    /// Required for `CustomDate`; ignored otherwise.
    pub billing_anchor_ms: Option<i64>,
}

/// A half-open UTC billing period `[start_ms, end_ms)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Period {
    pub start_ms: i64,
    pub end_ms: i64,
}

impl Schedule {
    pub fn anchor_ms(&self, contract_start_ms: i64) -> i64 {
        let _ = self;
        contract_start_ms
    }

    pub fn periods(
        &self,
        contract_start_ms: i64,
        contract_end_ms: Option<i64>,
        until_ms: i64,
    ) -> Vec<Period> {
        let _ = (contract_end_ms, until_ms);
        let _ = contract_start_ms;
        Vec::new()
    }
}
