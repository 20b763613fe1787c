//! Wire types of rate reads shared by the rate-card handlers (`getRates`, `getRateSchedule`) and
//! the contract handlers (`getContractRateSchedule`), and the `Rate` object of a price. Not a
//! handler module.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{json, Value};
use tally_core::rating::Price;

use crate::model::{BillingFrequency, CreditTypeRef};
use crate::service::rate_cards::RateSelector;
use crate::wire::Dec;

/// `RateSelector` / `RateSelectorWithProductTags`.
#[derive(Deserialize, Default)]
pub struct Selector {
    product_id: Option<String>,
    product_tags: Option<Vec<String>>,
    pricing_group_values: Option<BTreeMap<String, String>>,
    partial_pricing_group_values: Option<BTreeMap<String, String>>,
    billing_frequency: Option<BillingFrequency>,
}

impl Selector {
    fn domain(self) -> RateSelector {
        RateSelector {
            product_id: self.product_id,
            product_tags: self.product_tags,
            pricing_group_values: self.pricing_group_values,
            partial_pricing_group_values: self.partial_pricing_group_values,
            billing_frequency: self.billing_frequency,
        }
    }

    pub fn domain_all(selectors: Vec<Selector>) -> Vec<RateSelector> {
        selectors.into_iter().map(Selector::domain).collect()
    }
}

/// The `Rate` object of a price core computed (an override's effective price): FLAT or
/// PERCENTAGE with `price`, or TIERED with `tiers`.
pub fn price_rate_json(price: &Price, credit_type: &CreditTypeRef) -> Value {
    match price {
        Price::Flat(p) => {
            json!({ "rate_type": "FLAT", "price": Dec(*p), "credit_type": credit_type })
        }
        Price::Percentage(p) => {
            json!({ "rate_type": "PERCENTAGE", "price": Dec(*p), "credit_type": credit_type })
        }
        Price::Tiered(tiers) => {
            let tiers: Vec<Value> = tiers
                .iter()
                .map(|t| {
                    let mut v = json!({ "price": Dec(t.price) });
                    if let Some(size) = t.size {
                        v["size"] = json!(Dec(size));
                    }
                    v
                })
                .collect();
            json!({ "rate_type": "TIERED", "tiers": tiers, "credit_type": credit_type })
        }
    }
}
