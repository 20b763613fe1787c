//! Contract transitions as stored: the new contract's `transition` (what it was created with)
//! and the successor marker document (`kind::TRANSITION`) that makes a contract's successor
//! unique. Semantics in `service::transitions`.

use serde::{Deserialize, Serialize};

use crate::wire::Time;
use crate::wire_enum;

wire_enum!(TransitionType { Renewal => "RENEWAL" });
wire_enum!(TrueupBehavior { Remove => "REMOVE", AsIs => "AS_IS" });

/// `future_invoice_behavior` as given (only `AS_IS` is accepted).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FutureInvoiceBehavior {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trueup: Option<TrueupBehavior>,
}

/// A contract's `transition`: the contract it renews.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TransitionRecord {
    pub from_contract_id: String,
    #[serde(rename = "type")]
    pub transition_type: TransitionType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub future_invoice_behavior: Option<FutureInvoiceBehavior>,
}

/// The body of a successor marker: upstream's `ContractTransition` plus the successor's start
/// (what bounds the renewed contract's end date afterwards).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TransitionMarker {
    pub from_contract_id: String,
    pub to_contract_id: String,
    #[serde(rename = "type")]
    pub transition_type: TransitionType,
    pub to_starting_at: Time,
    /// `future_invoice_behavior.trueup: REMOVE`: the renewed contract's POSTPAID true-ups are
    /// no longer billed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub remove_trueups: bool,
}

impl TransitionMarker {
    /// The `ContractTransition` shape.
    pub fn api_json(&self) -> serde_json::Value {
        serde_json::json!({
            "from_contract_id": self.from_contract_id,
            "to_contract_id": self.to_contract_id,
            "type": self.transition_type,
        })
    }
}

/// A commit or credit of a renewal made by rollover (`service::transitions`): the renewed
/// contract's commit or credit and segment it comes from, and the fraction of that segment's
/// remainder it receives (its access amount is derived on read, `service::balances::Book`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RolledOverFrom {
    pub contract_id: String,
    pub balance_id: String,
    pub segment_id: String,
    pub fraction: crate::wire::Dec,
}

impl RolledOverFrom {
    /// Upstream's `rolled_over_from`: `{commit_id, contract_id}` or `{credit_id, contract_id}`.
    pub fn api_json(&self, credit: bool) -> serde_json::Value {
        let id = if credit { "credit_id" } else { "commit_id" };
        serde_json::json!({ id: self.balance_id, "contract_id": self.contract_id })
    }
}
