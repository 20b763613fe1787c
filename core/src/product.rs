//! Products over time: a product's initial attributes plus its scheduled changes give the
//! attributes in effect at any instant and the versions rating uses; and the checks a usage
//! product's configuration must pass before it is stored.
//!
//! Invariants:
//! - Changes apply in `starting_at` order; among equal times, in the order they were made (a
//!   stable sort), so the later change wins.
//! - The first rating version applies from the beginning of time (`i64::MIN`); each change adds a
//!   version from its `starting_at`, so versions are sorted by time.
//! - A usage product whose state at some instant has no billable metric has no rating versions
//!   (`None`): it cannot be rated, and the checks below refuse to store it.

use alloc::string::String;
use alloc::vec::Vec;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::composite::{CompositeConfig, CompositeProduct};
use crate::metric::MetricDef;
use crate::rating::{ProductState, QuantityConversion, QuantityRounding, RatedProduct};

/// Most decimal places `quantity_rounding` may ask for.
pub const MAX_ROUNDING_PLACES: u32 = 20;

/// What a product is at one instant (everything but bookkeeping such as who changed it).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ProductAttrs {
    pub name: String,
    pub billable_metric_id: Option<String>,
    pub pricing_group_key: Option<Vec<String>>,
    pub presentation_group_key: Option<Vec<String>>,
    pub quantity_conversion: Option<QuantityConversion>,
    pub quantity_rounding: Option<QuantityRounding>,
    pub tags: Vec<String>,
    pub is_refundable: Option<bool>,
    /// COMPOSITE products: the products and tags whose spend the composite's percentage is
    /// taken of, and whether lines at a zero unit price are left out (`composite`).
    #[serde(default)]
    pub composite_product_ids: Option<Vec<String>>,
    #[serde(default)]
    pub composite_tags: Option<Vec<String>>,
    #[serde(default)]
    pub exclude_free_usage: Option<bool>,
}

/// A scheduled change: `None` leaves a field as it was; `Some(None)` clears conversion/rounding.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ProductChange {
    pub starting_at_ms: i64,
    pub name: Option<String>,
    pub billable_metric_id: Option<String>,
    pub pricing_group_key: Option<Vec<String>>,
    pub presentation_group_key: Option<Vec<String>>,
    pub quantity_conversion: Option<Option<QuantityConversion>>,
    pub quantity_rounding: Option<Option<QuantityRounding>>,
    pub tags: Option<Vec<String>>,
    pub is_refundable: Option<bool>,
    #[serde(default)]
    pub composite_product_ids: Option<Vec<String>>,
    #[serde(default)]
    pub composite_tags: Option<Vec<String>>,
    #[serde(default)]
    pub exclude_free_usage: Option<bool>,
}

impl ProductAttrs {
    /// These attributes with `change` applied.
    pub fn apply(&self, change: &ProductChange) -> ProductAttrs {
        let c = change.clone();
        ProductAttrs {
            name: c.name.unwrap_or_else(|| self.name.clone()),
            billable_metric_id: c
                .billable_metric_id
                .or_else(|| self.billable_metric_id.clone()),
            pricing_group_key: c
                .pricing_group_key
                .or_else(|| self.pricing_group_key.clone()),
            presentation_group_key: c
                .presentation_group_key
                .or_else(|| self.presentation_group_key.clone()),
            quantity_conversion: c
                .quantity_conversion
                .unwrap_or_else(|| self.quantity_conversion.clone()),
            quantity_rounding: c
                .quantity_rounding
                .unwrap_or_else(|| self.quantity_rounding.clone()),
            tags: c.tags.unwrap_or_else(|| self.tags.clone()),
            is_refundable: c.is_refundable.or(self.is_refundable),
            composite_product_ids: c
                .composite_product_ids
                .or_else(|| self.composite_product_ids.clone()),
            composite_tags: c.composite_tags.or_else(|| self.composite_tags.clone()),
            exclude_free_usage: c.exclude_free_usage.or(self.exclude_free_usage),
        }
    }

    /// What a COMPOSITE product with these attributes takes its percentage of.
    pub fn composite_config(&self) -> CompositeConfig {
        CompositeConfig {
            product_ids: self.composite_product_ids.clone().unwrap_or_default(),
            tags: self.composite_tags.clone().unwrap_or_default(),
            exclude_free_usage: self.exclude_free_usage.unwrap_or(false),
        }
    }

    /// The rating-relevant part; `None` without a billable metric.
    pub fn rating_state(&self) -> Option<ProductState> {
        Some(ProductState {
            metric_id: self.billable_metric_id.clone()?,
            pricing_group_key: self.pricing_group_key.clone().unwrap_or_default(),
            presentation_group_key: self.presentation_group_key.clone().unwrap_or_default(),
            // The label is cosmetic: rating never sees it.
            quantity_conversion: self
                .quantity_conversion
                .clone()
                .map(|c| QuantityConversion { name: None, ..c }),
            quantity_rounding: self.quantity_rounding.clone(),
        })
    }
}

/// A product's history: its initial attributes and every change, in the order they were made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductTimeline {
    pub initial: ProductAttrs,
    pub changes: Vec<ProductChange>,
}

impl ProductTimeline {
    /// Indices of `changes` in the order they apply.
    pub fn order(&self) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.changes.len()).collect();
        idx.sort_by_key(|&i| self.changes[i].starting_at_ms);
        idx
    }

    /// The index of the last change in effect at `t_ms`, if any.
    pub fn last_applied(&self, t_ms: i64) -> Option<usize> {
        self.order()
            .into_iter()
            .rev()
            .find(|&i| self.changes[i].starting_at_ms <= t_ms)
    }

    /// The attributes in effect at `t_ms`.
    pub fn state_at(&self, t_ms: i64) -> ProductAttrs {
        self.order()
            .into_iter()
            .map(|i| &self.changes[i])
            .filter(|c| c.starting_at_ms <= t_ms)
            .fold(self.initial.clone(), |state, c| state.apply(c))
    }

    /// `(effective from, rating state)` in time order; `None` if some version has no metric.
    pub fn rating_versions(&self) -> Option<Vec<(i64, ProductState)>> {
        let mut versions = Vec::with_capacity(self.changes.len() + 1);
        versions.push((i64::MIN, self.initial.rating_state()?));
        let mut state = self.initial.clone();
        for i in self.order() {
            let change = &self.changes[i];
            state = state.apply(change);
            versions.push((change.starting_at_ms, state.rating_state()?));
        }
        Some(versions)
    }

    /// `(effective from, name)` in time order, the first from the beginning of time.
    pub fn names(&self) -> Vec<(i64, String)> {
        self.history(self.initial.name.clone(), |c| c.name.as_ref())
    }

    /// `(effective from, tags)` in time order, the first from the beginning of time.
    pub fn tags(&self) -> Vec<(i64, Vec<String>)> {
        self.history(self.initial.tags.clone(), |c| c.tags.as_ref())
    }

    /// One attribute over time: `initial` from the beginning of time, then each change that
    /// sets it, in the order changes take effect.
    fn history<T: Clone>(
        &self,
        initial: T,
        field: impl Fn(&ProductChange) -> Option<&T>,
    ) -> Vec<(i64, T)> {
        let mut out = Vec::with_capacity(self.changes.len() + 1);
        out.push((i64::MIN, initial));
        for i in self.order() {
            let change = &self.changes[i];
            if let Some(v) = field(change) {
                out.push((change.starting_at_ms, v.clone()));
            }
        }
        out
    }

    /// `(effective from, composite configuration)` in time order, the first from the beginning
    /// of time; a change adds a version when it sets a composite field.
    pub fn composite_configs(&self) -> Vec<(i64, CompositeConfig)> {
        let mut out = Vec::with_capacity(self.changes.len() + 1);
        out.push((i64::MIN, self.initial.composite_config()));
        let mut state = self.initial.clone();
        for i in self.order() {
            let change = &self.changes[i];
            state = state.apply(change);
            let sets = change.composite_product_ids.is_some()
                || change.composite_tags.is_some()
                || change.exclude_free_usage.is_some();
            if sets {
                out.push((change.starting_at_ms, state.composite_config()));
            }
        }
        out
    }

    /// Pricing's view of this (COMPOSITE) product: its names, tags and configuration over time.
    pub fn composite(&self, product_id: &str) -> CompositeProduct {
        CompositeProduct {
            product_id: product_id.into(),
            names: self.names(),
            tags: self.tags(),
            configs: self.composite_configs(),
        }
    }

    /// Rating's view of this (usage) product: its names, tags and rating versions over time.
    pub fn rated(&self, product_id: &str) -> Option<RatedProduct> {
        Some(RatedProduct {
            product_id: product_id.into(),
            names: self.names(),
            tags: self.tags(),
            versions: self.rating_versions()?,
        })
    }
}

/// Why a usage product's configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProductError {
    MissingMetric,
    ArchivedMetric,
    UnknownGroupKey(String),
    NonPositiveConversion,
    TooManyRoundingPlaces,
}

impl core::fmt::Display for ProductError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ProductError::MissingMetric => {
                f.write_str("billable_metric_id is required for USAGE products")
            }
            ProductError::ArchivedMetric => {
                f.write_str("an archived billable metric cannot be attached to a product")
            }
            ProductError::UnknownGroupKey(key) => write!(
                f,
                "group key {key:?} is not one of the billable metric's group keys"
            ),
            ProductError::NonPositiveConversion => {
                f.write_str("quantity_conversion.conversion_factor must be greater than zero")
            }
            ProductError::TooManyRoundingPlaces => write!(
                f,
                "quantity_rounding.decimal_places must be between 0 and {MAX_ROUNDING_PLACES}"
            ),
        }
    }
}

/// The billable metric a usage product's attributes name (checked before loading it).
pub fn required_metric(attrs: &ProductAttrs) -> Result<&str, ProductError> {
    attrs
        .billable_metric_id
        .as_deref()
        .ok_or(ProductError::MissingMetric)
}

/// Checks a usage product's attributes against their (loaded) metric. `attaching`: the metric is
/// being attached by this change, so an archived one is refused.
pub fn check_usage_attrs(
    attrs: &ProductAttrs,
    metric: &MetricDef,
    metric_archived: bool,
    attaching: bool,
) -> Result<(), ProductError> {
    if metric_archived && attaching {
        return Err(ProductError::ArchivedMetric);
    }
    let grain = metric.grain();
    let keys = attrs
        .pricing_group_key
        .iter()
        .chain(&attrs.presentation_group_key)
        .flatten();
    for key in keys {
        if !grain.contains(key) {
            return Err(ProductError::UnknownGroupKey(key.clone()));
        }
    }
    if let Some(c) = &attrs.quantity_conversion {
        if c.conversion_factor <= Decimal::ZERO {
            return Err(ProductError::NonPositiveConversion);
        }
    }
    if let Some(r) = &attrs.quantity_rounding {
        if r.decimal_places > MAX_ROUNDING_PLACES {
            return Err(ProductError::TooManyRoundingPlaces);
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "product_tests.rs"]
mod tests;
