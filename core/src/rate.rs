//! Rate-card rates as configured: which rate types price, how a rate's price, tiers and window
//! are checked, which rate types a product takes, and that a rate names exactly its product's
//! pricing keys. Central calls these before storing a rate, and the browser can call them
//! before sending one.
//!
//! Invariants:
//! - A rate that passes [`rate_price`] has a [`Price`] that `Price::validate` accepts, with no
//!   negative price anywhere; a PERCENTAGE price is a fraction in `[0, 1]` (0.1 = 10%).
//! - PERCENTAGE rates are the rates of COMPOSITE products, and COMPOSITE products take only
//!   PERCENTAGE rates ([`check_rate_for_product`]): a percentage prices spend, never units.
//! - Every check is a pure function of the values given; none reads a store or the clock.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::String;
use alloc::vec::Vec;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::rating::{Price, PriceError, Tier};

/// Every rate type the API names; FLAT, TIERED and PERCENTAGE (composite products) are priced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RateType {
    Flat,
    Percentage,
    Subscription,
    Tiered,
    TieredPercentage,
    Custom,
}

impl RateType {
    pub fn as_str(self) -> &'static str {
        match self {
            RateType::Flat => "FLAT",
            RateType::Percentage => "PERCENTAGE",
            RateType::Subscription => "SUBSCRIPTION",
            RateType::Tiered => "TIERED",
            RateType::TieredPercentage => "TIERED_PERCENTAGE",
            RateType::Custom => "CUSTOM",
        }
    }
}

/// Why a rate was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateError {
    FlatWithoutPrice,
    NegativePrice,
    TiersOnFlat,
    TieredWithoutTiers,
    NegativeTierPrice,
    PercentageWithoutPrice,
    /// A PERCENTAGE price outside `[0, 1]`.
    PercentageOutOfRange,
    TiersOnPercentage,
    /// A PERCENTAGE rate on a product that is not COMPOSITE.
    PercentageNeedsComposite,
    /// A COMPOSITE product's rate that is not PERCENTAGE.
    CompositeNeedsPercentage(RateType),
    Unsupported(RateType),
    /// A SUBSCRIPTION product's rate that is not FLAT or SUBSCRIPTION.
    SubscriptionNeedsFlat(RateType),
    /// A SUBSCRIPTION product's rate without a `billing_frequency`.
    SubscriptionWithoutFrequency,
    /// A SUBSCRIPTION rate (or a `billing_frequency`) on a product that is not SUBSCRIPTION.
    SubscriptionRateNeedsSubscription,
    Price(PriceError),
    EmptyWindow,
    /// The product's pricing keys, which the rate's values must give exactly.
    PricingValues(Vec<String>),
}

impl core::fmt::Display for RateError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RateError::FlatWithoutPrice => f.write_str("price is required for FLAT rates"),
            RateError::NegativePrice => f.write_str("price must not be negative"),
            RateError::TiersOnFlat => f.write_str("tiers are only allowed on TIERED rates"),
            RateError::TieredWithoutTiers => f.write_str("tiers are required for TIERED rates"),
            RateError::NegativeTierPrice => f.write_str("tier prices must not be negative"),
            RateError::PercentageWithoutPrice => {
                f.write_str("price is required for PERCENTAGE rates (a fraction: 0.1 = 10%)")
            }
            RateError::PercentageOutOfRange => {
                f.write_str("price of a PERCENTAGE rate is a fraction between 0 and 1 (0.1 = 10%)")
            }
            RateError::TiersOnPercentage => {
                f.write_str("tiers are not allowed on PERCENTAGE rates")
            }
            RateError::PercentageNeedsComposite => f.write_str(
                "rate_type PERCENTAGE is only for COMPOSITE products (it prices their spend)",
            ),
            RateError::CompositeNeedsPercentage(t) => write!(
                f,
                "rate_type {} is not allowed on a COMPOSITE product; use PERCENTAGE",
                t.as_str()
            ),
            RateError::Unsupported(t) => write!(f, "rate_type {} is not supported yet", t.as_str()),
            RateError::SubscriptionNeedsFlat(t) => write!(
                f,
                "rate_type {} is not allowed on a SUBSCRIPTION product; use FLAT or SUBSCRIPTION",
                t.as_str()
            ),
            RateError::SubscriptionWithoutFrequency => {
                f.write_str("billing_frequency is required for the rates of SUBSCRIPTION products")
            }
            RateError::SubscriptionRateNeedsSubscription => f.write_str(
                "rate_type SUBSCRIPTION and billing_frequency are only for SUBSCRIPTION products",
            ),
            RateError::Price(e) => write!(f, "{e}"),
            RateError::EmptyWindow => f.write_str("ending_before must be after starting_at"),
            RateError::PricingValues(keys) => write!(
                f,
                "pricing_group_values must give exactly the product's pricing_group_key [{}]",
                keys.join(", ")
            ),
        }
    }
}

/// The price of a rate from its parts as configured, or why it cannot price.
pub fn rate_price(
    rate_type: RateType,
    price: Option<Decimal>,
    tiers: Option<Vec<Tier>>,
) -> Result<Price, RateError> {
    let priced = match rate_type {
        // A subscription rate is the flat price of one unit per billing period.
        RateType::Flat | RateType::Subscription => {
            let p = price.ok_or(RateError::FlatWithoutPrice)?;
            if p < Decimal::ZERO {
                return Err(RateError::NegativePrice);
            }
            if tiers.is_some() {
                return Err(RateError::TiersOnFlat);
            }
            Price::Flat(p)
        }
        RateType::Tiered => {
            let tiers = tiers.ok_or(RateError::TieredWithoutTiers)?;
            if tiers.iter().any(|t| t.price < Decimal::ZERO) {
                return Err(RateError::NegativeTierPrice);
            }
            Price::Tiered(tiers)
        }
        RateType::Percentage => {
            let p = price.ok_or(RateError::PercentageWithoutPrice)?;
            if p < Decimal::ZERO || p > Decimal::ONE {
                return Err(RateError::PercentageOutOfRange);
            }
            if tiers.is_some() {
                return Err(RateError::TiersOnPercentage);
            }
            Price::Percentage(p)
        }
        other => return Err(RateError::Unsupported(other)),
    };
    priced.validate().map_err(RateError::Price)?;
    Ok(priced)
}

/// The rate types a product takes: a COMPOSITE product only PERCENTAGE, any other product
/// anything but PERCENTAGE (which prices the spend of other products, not units).
pub fn check_rate_for_product(composite: bool, rate_type: RateType) -> Result<(), RateError> {
    match (composite, rate_type == RateType::Percentage) {
        (true, true) | (false, false) => Ok(()),
        (true, false) => Err(RateError::CompositeNeedsPercentage(rate_type)),
        (false, true) => Err(RateError::PercentageNeedsComposite),
    }
}

/// The rates a SUBSCRIPTION product takes: FLAT or SUBSCRIPTION, with a `billing_frequency`
/// (its rates form one schedule per frequency); no other product takes either.
pub fn check_subscription_rate(
    subscription_product: bool,
    rate_type: RateType,
    has_billing_frequency: bool,
) -> Result<(), RateError> {
    match (subscription_product, rate_type) {
        (true, RateType::Flat | RateType::Subscription) if has_billing_frequency => Ok(()),
        (true, RateType::Flat | RateType::Subscription) => {
            Err(RateError::SubscriptionWithoutFrequency)
        }
        (true, other) => Err(RateError::SubscriptionNeedsFlat(other)),
        (false, RateType::Subscription) => Err(RateError::SubscriptionRateNeedsSubscription),
        (false, _) if has_billing_frequency => Err(RateError::SubscriptionRateNeedsSubscription),
        (false, _) => Ok(()),
    }
}

/// A rate's window `[starting_at, ending_before)` must not be empty.
pub fn check_window(starting_at_ms: i64, ending_before_ms: Option<i64>) -> Result<(), RateError> {
    match ending_before_ms {
        Some(end) if end <= starting_at_ms => Err(RateError::EmptyWindow),
        _ => Ok(()),
    }
}

/// A rate gives a value for exactly the product's pricing keys (in effect at its start).
pub fn check_pricing_values(
    pricing_group_key: Option<&[String]>,
    values: &BTreeMap<String, String>,
) -> Result<(), RateError> {
    let keys: BTreeSet<&String> = pricing_group_key.into_iter().flatten().collect();
    let given: BTreeSet<&String> = values.keys().collect();
    if keys == given {
        return Ok(());
    }
    Err(RateError::PricingValues(
        keys.into_iter().cloned().collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;
    use core::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn tier(price: &str, size: Option<&str>) -> Tier {
        Tier {
            price: d(price),
            size: size.map(d),
        }
    }

    #[test]
    fn flat_rates() {
        assert_eq!(
            rate_price(RateType::Flat, Some(d("2.5")), None),
            Ok(Price::Flat(d("2.5")))
        );
        assert_eq!(
            rate_price(RateType::Flat, None, None),
            Err(RateError::FlatWithoutPrice)
        );
        assert_eq!(
            rate_price(RateType::Flat, Some(d("-1")), None),
            Err(RateError::NegativePrice)
        );
        assert_eq!(
            rate_price(RateType::Flat, Some(d("1")), Some(vec![tier("1", None)])),
            Err(RateError::TiersOnFlat)
        );
    }

    #[test]
    fn tiered_rates() {
        let good = vec![tier("10", Some("100")), tier("8", None)];
        assert_eq!(
            rate_price(RateType::Tiered, None, Some(good.clone())),
            Ok(Price::Tiered(good))
        );
        assert_eq!(
            rate_price(RateType::Tiered, Some(d("1")), None),
            Err(RateError::TieredWithoutTiers)
        );
        assert_eq!(
            rate_price(RateType::Tiered, None, Some(vec![tier("-1", None)])),
            Err(RateError::NegativeTierPrice)
        );
        let err = rate_price(RateType::Tiered, None, Some(vec![tier("1", Some("5"))]));
        assert_eq!(err, Err(RateError::Price(PriceError::LastTierBounded)));
        assert_eq!(
            err.unwrap_err().to_string(),
            "the last tier must not have a size"
        );
        assert_eq!(
            rate_price(RateType::Tiered, None, Some(vec![])),
            Err(RateError::Price(PriceError::NoTiers))
        );
    }

    #[test]
    fn percentage_rates_are_fractions_of_one() {
        assert_eq!(
            rate_price(RateType::Percentage, Some(d("0.1")), None),
            Ok(Price::Percentage(d("0.1")))
        );
        assert_eq!(
            rate_price(RateType::Percentage, Some(d("1")), None),
            Ok(Price::Percentage(d("1")))
        );
        assert_eq!(
            rate_price(RateType::Percentage, Some(d("0")), None),
            Ok(Price::Percentage(d("0")))
        );
        assert_eq!(
            rate_price(RateType::Percentage, None, None),
            Err(RateError::PercentageWithoutPrice)
        );
        for bad in ["1.0001", "-0.1", "10"] {
            assert_eq!(
                rate_price(RateType::Percentage, Some(d(bad)), None),
                Err(RateError::PercentageOutOfRange)
            );
        }
        assert_eq!(
            rate_price(
                RateType::Percentage,
                Some(d("0.1")),
                Some(vec![tier("1", None)])
            ),
            Err(RateError::TiersOnPercentage)
        );
    }

    #[test]
    fn percentage_rates_belong_to_composite_products() {
        assert_eq!(check_rate_for_product(true, RateType::Percentage), Ok(()));
        assert_eq!(check_rate_for_product(false, RateType::Flat), Ok(()));
        assert_eq!(check_rate_for_product(false, RateType::Tiered), Ok(()));
        let err = check_rate_for_product(false, RateType::Percentage).unwrap_err();
        assert_eq!(
            err.to_string(),
            "rate_type PERCENTAGE is only for COMPOSITE products (it prices their spend)"
        );
        let err = check_rate_for_product(true, RateType::Flat).unwrap_err();
        assert_eq!(
            err.to_string(),
            "rate_type FLAT is not allowed on a COMPOSITE product; use PERCENTAGE"
        );
    }

    #[test]
    fn other_types_are_not_priced_yet() {
        let err = rate_price(RateType::TieredPercentage, Some(d("1")), None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "rate_type TIERED_PERCENTAGE is not supported yet"
        );
    }

    #[test]
    fn subscription_products_take_flat_prices_per_billing_frequency() {
        assert_eq!(
            rate_price(RateType::Subscription, Some(d("3000")), None),
            Ok(Price::Flat(d("3000")))
        );
        assert_eq!(
            rate_price(RateType::Subscription, None, None),
            Err(RateError::FlatWithoutPrice)
        );
        for t in [RateType::Flat, RateType::Subscription] {
            assert_eq!(check_subscription_rate(true, t, true), Ok(()));
            assert_eq!(
                check_subscription_rate(true, t, false),
                Err(RateError::SubscriptionWithoutFrequency)
            );
        }
        assert_eq!(
            check_subscription_rate(true, RateType::Tiered, true)
                .unwrap_err()
                .to_string(),
            "rate_type TIERED is not allowed on a SUBSCRIPTION product; use FLAT or SUBSCRIPTION"
        );
        assert_eq!(
            check_subscription_rate(false, RateType::Subscription, false),
            Err(RateError::SubscriptionRateNeedsSubscription)
        );
        assert_eq!(
            check_subscription_rate(false, RateType::Flat, true),
            Err(RateError::SubscriptionRateNeedsSubscription)
        );
        assert_eq!(
            check_subscription_rate(false, RateType::Tiered, false),
            Ok(())
        );
    }

    #[test]
    fn windows() {
        assert_eq!(check_window(10, None), Ok(()));
        assert_eq!(check_window(10, Some(11)), Ok(()));
        assert_eq!(check_window(10, Some(10)), Err(RateError::EmptyWindow));
        assert_eq!(check_window(10, Some(9)), Err(RateError::EmptyWindow));
    }

    #[test]
    fn pricing_values_must_match_keys_exactly() {
        let keys = vec!["model".to_string(), "region".to_string()];
        let mut values = BTreeMap::new();
        values.insert("model".to_string(), "a".to_string());
        let err = check_pricing_values(Some(&keys), &values).unwrap_err();
        assert_eq!(
            err.to_string(),
            "pricing_group_values must give exactly the product's pricing_group_key [model, region]"
        );
        values.insert("region".to_string(), "eu".to_string());
        assert_eq!(check_pricing_values(Some(&keys), &values), Ok(()));
        assert_eq!(check_pricing_values(None, &BTreeMap::new()), Ok(()));
        assert!(check_pricing_values(None, &values).is_err());
    }
}
