//! The wire shape of an override as clients give it (`OverrideInput`, `OverrideInputV2`), shared
//! by `contracts/create`, `contracts/amend` and `v2/contracts/edit`; what Tally refuses in one is
//! checked on the raw body first (`service::contracts::check_overrides_supported`).

use serde::Deserialize;

use crate::model::{
    BalanceRateType, OverrideSpecifier, OverrideTier, OverrideType, RateType, WireTier,
};
use crate::service::contracts::{OverrideInput, OverwriteInput};
use crate::wire::{Dec, Time};

/// `OverrideInput` (the fields Tally refuses are checked on the raw body first).
#[derive(Deserialize)]
pub struct OverrideReq {
    starting_at: Time,
    ending_before: Option<Time>,
    #[serde(rename = "type")]
    override_type: Option<OverrideType>,
    product_id: Option<String>,
    applicable_product_tags: Option<Vec<String>>,
    override_specifiers: Option<Vec<OverrideSpecifier>>,
    multiplier: Option<Dec>,
    overwrite_rate: Option<OverwriteRateReq>,
    tiers: Option<Vec<OverrideTier>>,
    priority: Option<Dec>,
    entitled: Option<bool>,
    #[serde(default)]
    is_commit_specific: bool,
    target: Option<BalanceRateType>,
}

/// `OverwriteRateInput`.
#[derive(Deserialize)]
struct OverwriteRateReq {
    rate_type: RateType,
    price: Option<Dec>,
    tiers: Option<Vec<WireTier>>,
    credit_type_id: Option<String>,
}

impl OverrideReq {
    pub fn domain(self) -> OverrideInput {
        OverrideInput {
            starting_at: self.starting_at,
            ending_before: self.ending_before,
            override_type: self.override_type,
            product_id: self.product_id,
            applicable_product_tags: self.applicable_product_tags,
            override_specifiers: self.override_specifiers,
            multiplier: self.multiplier,
            overwrite_rate: self.overwrite_rate.map(|r| OverwriteInput {
                rate_type: r.rate_type,
                price: r.price,
                tiers: r.tiers,
                credit_type_id: r.credit_type_id,
            }),
            tiers: self.tiers,
            priority: self.priority,
            entitled: self.entitled,
            is_commit_specific: self.is_commit_specific,
            target: self.target,
        }
    }
}
