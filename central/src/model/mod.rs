//! Stored resources. Each is kept as a JSON document whose shape is the API's response shape
//! (decimals as exact JSON numbers, times as RFC 3339), plus conversions to the `tally_core` types
//! that rating uses.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tally_core::balances;
use tally_core::composite::CompositeProduct;
use tally_core::metric::{Aggregation, EventTypeFilter, MetricDef, PropertyFilter};
use tally_core::overrides::{self, Prioritization, Specifier};
use tally_core::period::{AnchorDay, Frequency, Schedule};
use tally_core::pricing::ContractTerms;
use tally_core::product::{ProductAttrs, ProductChange, ProductTimeline};
use tally_core::rating::{self, Price, RatedProduct, Tier};

use crate::service::Invalid;
use crate::store::{ArchiveFilter, Doc, Env, StoreError, StoreResult, Stores};
use crate::wire::{set_opt, Dec, Time};
use crate::wire_enum;

mod charges;
mod recurring;
mod subscriptions;
mod transitions;
pub use charges::*;
pub use recurring::*;
pub use subscriptions::*;
pub use transitions::*;

pub const USD_ID: &str = "2714e483-4ff1-48e4-9e25-ac732e8f24f2";
pub const USD_NAME: &str = "USD (cents)";
pub const CREATED_BY: &str = "tally";

/// Document kinds in the config store.
pub mod kind {
    pub const METRIC: &str = "billable_metric";
    pub const PRODUCT: &str = "product";
    pub const RATE_CARD: &str = "rate_card";
    pub const RATE: &str = "rate";
    pub const CUSTOMER: &str = "customer";
    pub const CONTRACT: &str = "contract";
    /// A customer-level commit or credit (`customerCommits/create`, `customerCredits/create`),
    /// its parent the customer. One kind for both, so a `uniqueness_key` is used once across
    /// commits and credits, as upstream.
    pub const CUSTOMER_BALANCE: &str = "customer_balance";
    /// A contract template (`/v1/packages/*`), no parent.
    pub const PACKAGE: &str = "package";
    /// A custom pricing unit (`/v1/credit-types/*`), no parent; its name is its unique key.
    pub const CREDIT_TYPE: &str = "credit_type";
    /// A contract's successor (`transition` on contracts/create): id = the contract
    /// transitioned from, parent the customer. Inserted with the new contract in one
    /// transaction, so a contract has at most one successor however many creates race.
    pub const TRANSITION: &str = "contract_transition";
    /// A webhook destination (`/v1/webhook-endpoints/*`), no parent.
    pub const WEBHOOK_ENDPOINT: &str = "webhook_endpoint";
    /// A threshold notification (`/v1/alerts/*`), no parent; its `uniqueness_key` is its unique key.
    pub const ALERT: &str = "alert";
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditTypeRef {
    pub id: String,
    pub name: String,
}

impl CreditTypeRef {
    pub fn usd() -> Self {
        CreditTypeRef {
            id: USD_ID.into(),
            name: USD_NAME.into(),
        }
    }
}

/// Resolves a fiat `credit_type_id` (default USD cents), where a custom pricing unit is not
/// allowed (a rate card's fiat credit type, invoice schedules, scheduled charges, recurring
/// commits): only USD (cents) is. Where custom units are allowed, `service::credit_types::resolve`.
pub fn credit_type(id: Option<&str>) -> Result<CreditTypeRef, Invalid> {
    match id {
        None | Some(USD_ID) => Ok(CreditTypeRef::usd()),
        Some(other) => Err(Invalid(format!(
            "credit type {other:?} is not supported here; only USD (cents) ({USD_ID}) is"
        ))),
    }
}

/// A custom pricing unit (`credit-types/create`), as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CustomCreditType {
    pub id: String,
    pub name: String,
    pub created_at: Time,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived_at: Option<Time>,
}

impl CustomCreditType {
    pub fn reference(&self) -> CreditTypeRef {
        CreditTypeRef {
            id: self.id.clone(),
            name: self.name.clone(),
        }
    }

    /// The `credit-types/list` item.
    pub fn api_json(&self) -> serde_json::Value {
        serde_json::json!({ "id": self.id, "name": self.name, "is_currency": false })
    }
}

/// One of a rate card's `credit_type_conversions`, stored in its response shape
/// (`fiat_per_custom_credit` a decimal string).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditTypeConversion {
    pub custom_credit_type: CreditTypeRef,
    pub fiat_per_custom_credit: String,
}

impl CreditTypeConversion {
    /// Core's conversion; `None` for a stored rate that is not a decimal (never written).
    pub fn core(&self) -> Option<tally_core::conversion::CreditTypeConversion> {
        Some(tally_core::conversion::CreditTypeConversion {
            custom_credit_type: tally_core::money::CreditTypeId(self.custom_credit_type.id.clone()),
            fiat_per_custom_credit: self.fiat_per_custom_credit.parse().ok()?,
        })
    }
}

pub fn decode<T: DeserializeOwned>(doc: &Doc) -> StoreResult<T> {
    serde_json::from_str(&doc.body)
        .map_err(|e| StoreError::Corrupt(format!("document {}: {e}", doc.id)))
}

/// A document that had to exist and does not (`what` names it: "customer", "rate card", ...).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Loads and decodes one document; a missing one is [`LoadError::NotFound`] naming `what`.
pub async fn load<T: DeserializeOwned>(
    stores: &Stores,
    env: Env,
    kind: &str,
    id: &str,
    what: &'static str,
) -> Result<T, LoadError> {
    match stores.config.get_doc(env, kind, id).await? {
        Some(doc) => Ok(decode(&doc)?),
        None => Err(LoadError::NotFound(what)),
    }
}

/// Every document of `kind` under `parent_id` (archived ones too), in creation order.
pub async fn load_children<T: DeserializeOwned>(
    stores: &Stores,
    env: Env,
    kind: &str,
    parent_id: &str,
) -> StoreResult<Vec<T>> {
    let docs = stores
        .config
        .list_docs(env, kind, Some(parent_id), ArchiveFilter::All, None)
        .await?;
    docs.iter().map(decode).collect()
}

pub fn encode<T: Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

// ---------------------------------------------------------------------------------------------
// Billable metrics

// `custom_sql` is what reads say for an SQL billable metric (as Metronome's events search does);
// create never takes it: giving `sql` makes a metric custom_sql.
wire_enum!(AggregationType {
    Count => "COUNT", Sum => "SUM", Max => "MAX", Unique => "UNIQUE", Latest => "LATEST",
    CustomSql => "custom_sql",
});

impl AggregationType {
    pub fn core(self) -> Aggregation {
        match self {
            AggregationType::Count => Aggregation::Count,
            AggregationType::Sum => Aggregation::Sum,
            AggregationType::Max => Aggregation::Max,
            AggregationType::Unique => Aggregation::Unique,
            AggregationType::Latest => Aggregation::Latest,
            AggregationType::CustomSql => Aggregation::Sql,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Metric {
    pub id: String,
    pub name: String,
    pub aggregation_type: AggregationType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aggregation_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_type_filter: Option<EventTypeFilter>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub property_filters: Vec<PropertyFilter>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group_keys: Vec<Vec<String>>,
    #[serde(default)]
    pub custom_fields: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archived_at: Option<Time>,
    /// An SQL billable metric's query (then `aggregation_type` is `custom_sql` and `group_keys`
    /// holds its one group key, the query's group columns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql: Option<String>,
}

impl Metric {
    pub fn def(&self) -> MetricDef {
        MetricDef {
            id: self.id.clone(),
            aggregation: self.aggregation_type.core(),
            aggregation_key: self.aggregation_key.clone(),
            event_type_filter: self.event_type_filter.clone(),
            property_filters: self.property_filters.clone(),
            group_keys: self.group_keys.clone(),
        }
    }
}

/// The definitions ingest meters with (native ingest and the edge's snapshot): every metric but
/// the SQL ones, which are computed from stored events and meter nothing.
pub async fn load_metric_defs(stores: &Stores, env: Env) -> StoreResult<Vec<MetricDef>> {
    let docs = stores
        .config
        .list_docs(env, kind::METRIC, None, ArchiveFilter::All, None)
        .await?;
    let mut defs = Vec::with_capacity(docs.len());
    for d in &docs {
        let m = decode::<Metric>(d)?;
        if m.sql.is_none() {
            defs.push(m.def());
        }
    }
    Ok(defs)
}

// ---------------------------------------------------------------------------------------------
// Products

// Create accepts `PROFESSIONAL_SERVICE` and `PRO_SERVICE` for the same type; get/list responses
// only ever say `PRO_SERVICE` (the document's `ProductListItem.type` enum), so the long spelling
// is an input alias of it.
wire_enum!(ProductType {
    Usage => "USAGE", Fixed => "FIXED", Composite => "COMPOSITE", Subscription => "SUBSCRIPTION",
    ProService => "PRO_SERVICE" | "PROFESSIONAL_SERVICE",
});
wire_enum!(ConversionOperation { Multiply => "MULTIPLY", Divide => "DIVIDE" });
wire_enum!(RoundingMethod { RoundUp => "ROUND_UP", RoundDown => "ROUND_DOWN", RoundHalfUp => "ROUND_HALF_UP" });

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QuantityConversion {
    pub conversion_factor: Dec,
    pub operation: ConversionOperation,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QuantityRounding {
    pub decimal_places: u32,
    pub rounding_method: RoundingMethod,
}

/// A product's attributes at one point of its history (`initial`, `current`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProductState {
    pub created_at: Time,
    pub created_by: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub billable_metric_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pricing_group_key: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presentation_group_key: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantity_conversion: Option<QuantityConversion>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantity_rounding: Option<QuantityRounding>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_refundable: Option<bool>,
    /// COMPOSITE products: whose spend the composite's PERCENTAGE rate is taken of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub composite_product_ids: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub composite_tags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude_free_usage: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub starting_at: Option<Time>,
}

/// A scheduled change to a product. `Some(None)` clears conversion/rounding.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProductUpdate {
    pub created_at: Time,
    pub created_by: String,
    pub starting_at: Time,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub billable_metric_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pricing_group_key: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presentation_group_key: Option<Vec<String>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "double_option"
    )]
    pub quantity_conversion: Option<Option<QuantityConversion>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "double_option"
    )]
    pub quantity_rounding: Option<Option<QuantityRounding>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_refundable: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub composite_product_ids: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub composite_tags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude_free_usage: Option<bool>,
}

/// Distinguishes an absent field (`None`) from an explicit `null` (`Some(None)`).
pub mod double_option {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T: Serialize, S: Serializer>(
        v: &Option<Option<T>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match v {
            Some(inner) => inner.serialize(s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<T>>, D::Error> {
        Option::<T>::deserialize(d).map(Some)
    }
}

impl QuantityConversion {
    fn core(&self) -> rating::QuantityConversion {
        rating::QuantityConversion {
            conversion_factor: self.conversion_factor.0,
            operation: match self.operation {
                ConversionOperation::Multiply => rating::ConversionOperation::Multiply,
                ConversionOperation::Divide => rating::ConversionOperation::Divide,
            },
            name: self.name.clone(),
        }
    }

    fn from_core(c: rating::QuantityConversion) -> Self {
        QuantityConversion {
            conversion_factor: Dec(c.conversion_factor),
            operation: match c.operation {
                rating::ConversionOperation::Multiply => ConversionOperation::Multiply,
                rating::ConversionOperation::Divide => ConversionOperation::Divide,
            },
            name: c.name,
        }
    }
}

impl QuantityRounding {
    fn core(&self) -> rating::QuantityRounding {
        rating::QuantityRounding {
            decimal_places: self.decimal_places,
            rounding_method: match self.rounding_method {
                RoundingMethod::RoundUp => rating::RoundingMethod::RoundUp,
                RoundingMethod::RoundDown => rating::RoundingMethod::RoundDown,
                RoundingMethod::RoundHalfUp => rating::RoundingMethod::RoundHalfUp,
            },
        }
    }

    fn from_core(r: rating::QuantityRounding) -> Self {
        QuantityRounding {
            decimal_places: r.decimal_places,
            rounding_method: match r.rounding_method {
                rating::RoundingMethod::RoundUp => RoundingMethod::RoundUp,
                rating::RoundingMethod::RoundDown => RoundingMethod::RoundDown,
                rating::RoundingMethod::RoundHalfUp => RoundingMethod::RoundHalfUp,
            },
        }
    }
}

impl ProductState {
    /// Core's view of these attributes (bookkeeping left out).
    pub fn attrs(&self) -> ProductAttrs {
        ProductAttrs {
            name: self.name.clone(),
            billable_metric_id: self.billable_metric_id.clone(),
            pricing_group_key: self.pricing_group_key.clone(),
            presentation_group_key: self.presentation_group_key.clone(),
            quantity_conversion: self
                .quantity_conversion
                .as_ref()
                .map(QuantityConversion::core),
            quantity_rounding: self.quantity_rounding.as_ref().map(QuantityRounding::core),
            tags: self.tags.clone(),
            is_refundable: self.is_refundable,
            composite_product_ids: self.composite_product_ids.clone(),
            composite_tags: self.composite_tags.clone(),
            exclude_free_usage: self.exclude_free_usage,
        }
    }

    /// Core's attributes with this state's bookkeeping, as the document shows them.
    fn with_attrs(&self, a: ProductAttrs) -> ProductState {
        ProductState {
            created_at: self.created_at,
            created_by: self.created_by.clone(),
            name: a.name,
            billable_metric_id: a.billable_metric_id,
            pricing_group_key: a.pricing_group_key,
            presentation_group_key: a.presentation_group_key,
            quantity_conversion: a.quantity_conversion.map(QuantityConversion::from_core),
            quantity_rounding: a.quantity_rounding.map(QuantityRounding::from_core),
            tags: a.tags,
            is_refundable: a.is_refundable,
            composite_product_ids: a.composite_product_ids,
            composite_tags: a.composite_tags,
            exclude_free_usage: a.exclude_free_usage,
            starting_at: self.starting_at,
        }
    }
}

impl ProductUpdate {
    fn change(&self) -> ProductChange {
        ProductChange {
            starting_at_ms: self.starting_at.0,
            name: self.name.clone(),
            billable_metric_id: self.billable_metric_id.clone(),
            pricing_group_key: self.pricing_group_key.clone(),
            presentation_group_key: self.presentation_group_key.clone(),
            quantity_conversion: self
                .quantity_conversion
                .as_ref()
                .map(|c| c.as_ref().map(QuantityConversion::core)),
            quantity_rounding: self
                .quantity_rounding
                .as_ref()
                .map(|r| r.as_ref().map(QuantityRounding::core)),
            tags: self.tags.clone(),
            is_refundable: self.is_refundable,
            composite_product_ids: self.composite_product_ids.clone(),
            composite_tags: self.composite_tags.clone(),
            exclude_free_usage: self.exclude_free_usage,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Product {
    pub id: String,
    #[serde(rename = "type")]
    pub product_type: ProductType,
    pub initial: ProductState,
    /// Recomputed on every read (see [`Product::with_current`]); stored for completeness.
    pub current: ProductState,
    #[serde(default)]
    pub updates: Vec<ProductUpdate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archived_at: Option<Time>,
    #[serde(default)]
    pub custom_fields: BTreeMap<String, String>,
}

impl Product {
    /// Core's view of the product's history (initial state plus every update, as made).
    pub fn timeline(&self) -> ProductTimeline {
        ProductTimeline {
            initial: self.initial.attrs(),
            changes: self.updates.iter().map(ProductUpdate::change).collect(),
        }
    }

    /// The state in effect at `t_ms`, stamped with the last update in effect (if any).
    pub fn state_at(&self, t_ms: i64) -> ProductState {
        let timeline = self.timeline();
        let attrs = timeline.state_at(t_ms);
        let mut state = self.initial.with_attrs(attrs);
        if let Some(u) = timeline.last_applied(t_ms).map(|i| &self.updates[i]) {
            state.starting_at = Some(u.starting_at);
            state.created_at = u.created_at;
        }
        state
    }

    pub fn with_current(mut self, now_ms: i64) -> Product {
        self.current = self.state_at(now_ms);
        self
    }

    /// Rating's view of a usage product; `None` for other product types.
    pub fn rated(&self) -> Option<RatedProduct> {
        if self.product_type != ProductType::Usage {
            return None;
        }
        self.timeline().rated(&self.id)
    }

    /// Pricing's view of a COMPOSITE product; `None` for other product types.
    pub fn composite(&self) -> Option<CompositeProduct> {
        (self.product_type == ProductType::Composite).then(|| self.timeline().composite(&self.id))
    }
}

// ---------------------------------------------------------------------------------------------
// Rate cards and rates

wire_enum!(RateType {
    Flat => "FLAT", Percentage => "PERCENTAGE", Subscription => "SUBSCRIPTION", Tiered => "TIERED",
    TieredPercentage => "TIERED_PERCENTAGE", Custom => "CUSTOM",
});
impl RateType {
    pub fn core(self) -> tally_core::rate::RateType {
        use tally_core::rate::RateType as Core;
        match self {
            RateType::Flat => Core::Flat,
            RateType::Percentage => Core::Percentage,
            RateType::Subscription => Core::Subscription,
            RateType::Tiered => Core::Tiered,
            RateType::TieredPercentage => Core::TieredPercentage,
            RateType::Custom => Core::Custom,
        }
    }
}

wire_enum!(BillingFrequency { Monthly => "MONTHLY", Quarterly => "QUARTERLY", Annual => "ANNUAL", Weekly => "WEEKLY" });

impl BillingFrequency {
    pub fn core(self) -> Frequency {
        match self {
            BillingFrequency::Monthly => Frequency::Monthly,
            BillingFrequency::Quarterly => Frequency::Quarterly,
            BillingFrequency::Annual => Frequency::Annual,
            BillingFrequency::Weekly => Frequency::Weekly,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RateCardAlias {
    pub name: String,
    /// When the alias was given to this card (set by the server, never shown): an alias resolves
    /// to the card it was most recently assigned to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starting_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ending_before: Option<Time>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RateCard {
    pub id: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub aliases: Vec<RateCardAlias>,
    pub fiat_credit_type: CreditTypeRef,
    /// Custom pricing units usable on the card; only added to, never changed or removed.
    #[serde(default)]
    pub credit_type_conversions: Vec<CreditTypeConversion>,
    pub created_at: Time,
    pub created_by: String,
    #[serde(default)]
    pub custom_fields: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archived_at: Option<Time>,
    /// The product order `setRateCardProductsOrder` / `moveRateCardProducts` last stored (never
    /// shown; `tally_core::product_order::effective` makes the card's order from it and its
    /// rates). Empty until the card is first ordered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub product_order: Vec<String>,
}

impl RateCard {
    /// The card's product order given its rates in the order they were added.
    pub fn effective_product_order(&self, rates: &[RateRecord]) -> Vec<String> {
        tally_core::product_order::effective(
            &self.product_order,
            rates.iter().map(|r| r.product_id.as_str()),
        )
    }

    /// Stamps aliases new to this card with `now`; kept aliases keep their assignment time.
    pub fn assign_aliases(&mut self, mut aliases: Vec<RateCardAlias>, now_ms: i64) {
        for alias in &mut aliases {
            let kept = self.aliases.iter().find(|old| old.name == alias.name);
            alias.assigned_at = Some(kept.and_then(|old| old.assigned_at).unwrap_or(Time(now_ms)));
        }
        self.aliases = aliases;
    }

    /// The `RateCard` response shape (internal alias and order bookkeeping removed).
    pub fn api_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(card) = v.as_object_mut() {
            card.remove("product_order");
        }
        if let Some(aliases) = v
            .get_mut("aliases")
            .and_then(serde_json::Value::as_array_mut)
        {
            for a in aliases
                .iter_mut()
                .filter_map(serde_json::Value::as_object_mut)
            {
                a.remove("assigned_at");
            }
        }
        v
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireTier {
    pub price: Dec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Dec>,
}

/// A rate-card rate as stored (one schedule entry).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RateRecord {
    pub rate_card_id: String,
    pub product_id: String,
    pub starting_at: Time,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ending_before: Option<Time>,
    pub entitled: bool,
    pub rate_type: RateType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price: Option<Dec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tiers: Option<Vec<WireTier>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pricing_group_values: BTreeMap<String, String>,
    pub credit_type: CreditTypeRef,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub billing_frequency: Option<BillingFrequency>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit_rate: Option<serde_json::Value>,
    /// Subscription rates: the default quantity and `is_prorated` as given (stored and shown;
    /// a subscription's quantity and proration are its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity: Option<Dec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_prorated: Option<bool>,
}

impl RateRecord {
    pub fn price(&self) -> Option<Price> {
        match self.rate_type {
            RateType::Flat | RateType::Subscription => self.price.map(|p| Price::Flat(p.0)),
            RateType::Tiered => self.tiers.as_deref().map(|t| Price::Tiered(core_tiers(t))),
            RateType::Percentage => self.price.map(|p| Price::Percentage(p.0)),
            _ => None,
        }
    }

    pub fn core(&self) -> Option<rating::Rate> {
        Some(rating::Rate {
            product_id: self.product_id.clone(),
            pricing_group_values: self.pricing_group_values.clone(),
            starting_at_ms: self.starting_at.0,
            ending_before_ms: self.ending_before.map(|t| t.0),
            entitled: self.entitled,
            price: self.price()?,
            credit_type: tally_core::money::CreditTypeId(self.credit_type.id.clone()),
            billing_frequency: self.billing_frequency.map(BillingFrequency::core),
            commit_rate: self.commit_price(),
        })
    }

    /// The rate's `commit_rate` when it is a flat price (`{rate_type: FLAT, price}`), the only
    /// kind pricing applies (addRate refuses others).
    pub fn commit_price(&self) -> Option<Price> {
        let c = self.commit_rate.as_ref()?;
        let flat = c
            .get("rate_type")
            .and_then(serde_json::Value::as_str)
            .is_some_and(|t| t.eq_ignore_ascii_case("FLAT"));
        let price = c.get("price")?;
        let price: rust_decimal::Decimal = price.to_string().parse().ok()?;
        flat.then_some(Price::Flat(price))
    }

    /// The `Rate` object of responses.
    pub fn rate_json(&self) -> serde_json::Value {
        let mut rate =
            serde_json::json!({ "rate_type": self.rate_type, "credit_type": self.credit_type });
        if let Some(p) = self.price {
            rate["price"] = serde_json::to_value(p).unwrap_or_default();
        }
        if let Some(t) = &self.tiers {
            rate["tiers"] = serde_json::to_value(t).unwrap_or_default();
        }
        if !self.pricing_group_values.is_empty() {
            rate["pricing_group_values"] =
                serde_json::to_value(&self.pricing_group_values).unwrap_or_default();
        }
        crate::wire::set_opt(&mut rate, "quantity", self.quantity.as_ref());
        crate::wire::set_opt(&mut rate, "is_prorated", self.is_prorated.as_ref());
        rate
    }
}

// ---------------------------------------------------------------------------------------------
// Customers

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Customer {
    pub id: String,
    pub name: String,
    pub ingest_aliases: Vec<String>,
    #[serde(default)]
    pub custom_fields: BTreeMap<String, String>,
    pub created_at: Time,
    pub updated_at: Time,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archived_at: Option<Time>,
    /// Stored and read back; a contract billing through a Stripe one has its finalized invoices
    /// pushed to Stripe (`crate::stripe`), no other provider is delivered to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub billing_provider_configurations: Vec<BillingProviderConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revenue_system_configurations: Vec<RevenueSystemConfig>,
    /// The legacy (Plans) billing configuration per `billing_provider_type`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub billing_config: BTreeMap<String, LegacyBillingConfig>,
}

impl Customer {
    /// Every reference usage events may carry for this customer: its id and its aliases.
    pub fn refs(&self) -> Vec<String> {
        let mut refs = vec![self.id.clone()];
        refs.extend(self.ingest_aliases.iter().cloned());
        refs
    }

    /// The deprecated `external_id`: the first alias, else the id.
    pub fn external_id(&self) -> &str {
        self.ingest_aliases.first().map_or(&self.id, String::as_str)
    }

    /// The `Customer` shape (create and setName responses).
    pub fn summary_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "external_id": self.external_id(),
            "ingest_aliases": self.ingest_aliases,
            "name": self.name,
            "custom_fields": self.custom_fields,
        })
    }

    /// The `CustomerDetail` shape (get and list responses).
    pub fn detail_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "external_id": self.external_id(),
            "ingest_aliases": self.ingest_aliases,
            "name": self.name,
            "custom_fields": self.custom_fields,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "archived_at": self.archived_at,
            "customer_config": { "salesforce_account_id": null },
            "current_billable_status": { "value": "billable", "effective_at": null },
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Billing-provider and revenue-system configurations (stored and read back; Stripe ones are
// acted on by `crate::stripe`)

wire_enum!(BillingProvider {
    AwsMarketplace => "aws_marketplace", Stripe => "stripe", Netsuite => "netsuite",
    Custom => "custom", AzureMarketplace => "azure_marketplace",
    QuickbooksOnline => "quickbooks_online", Workday => "workday",
    GcpMarketplace => "gcp_marketplace", Metronome => "metronome",
});
wire_enum!(DeliveryMethod {
    DirectToBillingProvider => "direct_to_billing_provider", AwsSqs => "aws_sqs",
    Tackle => "tackle", AwsSns => "aws_sns",
});
wire_enum!(TaxProvider { Anrok => "anrok", Avalara => "avalara", Stripe => "stripe" });
wire_enum!(RevenueSystemProvider { Netsuite => "netsuite" });
wire_enum!(RevenueDeliveryMethod { DirectToBillingProvider => "direct_to_billing_provider" });
wire_enum!(StripeCollectionMethod {
    ChargeAutomatically => "charge_automatically", SendInvoice => "send_invoice",
    AutoChargePaymentIntent => "auto_charge_payment_intent",
    ManuallyChargePaymentIntent => "manually_charge_payment_intent",
});
wire_enum!(AwsRegion {
    AfSouth1 => "af-south-1", ApEast1 => "ap-east-1", ApNortheast1 => "ap-northeast-1",
    ApNortheast2 => "ap-northeast-2", ApNortheast3 => "ap-northeast-3",
    ApSouth1 => "ap-south-1", ApSoutheast1 => "ap-southeast-1",
    ApSoutheast2 => "ap-southeast-2", CaCentral1 => "ca-central-1",
    CnNorth1 => "cn-north-1", CnNorthwest1 => "cn-northwest-1",
    EuCentral1 => "eu-central-1", EuNorth1 => "eu-north-1", EuSouth1 => "eu-south-1",
    EuWest1 => "eu-west-1", EuWest2 => "eu-west-2", EuWest3 => "eu-west-3",
    MeSouth1 => "me-south-1", SaEast1 => "sa-east-1", UsEast1 => "us-east-1",
    UsEast2 => "us-east-2", UsGovEast1 => "us-gov-east-1", UsGovWest1 => "us-gov-west-1",
    UsWest1 => "us-west-1", UsWest2 => "us-west-2",
});

impl BillingProvider {
    /// The providers a contract may be billed through (`ContractsBillingProviderType`); the
    /// others exist only for the legacy Plans configuration and `setCustomerBillingProvider…`.
    pub fn for_contracts(self) -> bool {
        matches!(
            self,
            BillingProvider::AwsMarketplace
                | BillingProvider::AzureMarketplace
                | BillingProvider::GcpMarketplace
                | BillingProvider::Stripe
                | BillingProvider::Netsuite
        )
    }
}

impl DeliveryMethod {
    pub const ALL: [DeliveryMethod; 4] = [
        DeliveryMethod::DirectToBillingProvider,
        DeliveryMethod::AwsSqs,
        DeliveryMethod::Tackle,
        DeliveryMethod::AwsSns,
    ];
}

/// Namespace of the delivery-method ids Tally reports: `uuid5(NS, "{system}/{provider}/{method}")`.
/// Tally has no delivery-method registry of its own: each (provider, method) pair is one
/// delivery method, with this fixed id, the same in every environment.
const DELIVERY_METHOD_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x5e1f_7a11_de11_4e72_9b1e_1a77_c0de_0002);

/// The id of the delivery method `method` of `provider` in `system` ("billing" or "revenue").
pub fn delivery_method_id(system: &str, provider: &str, method: &str) -> String {
    let name = format!("{system}/{provider}/{method}");
    uuid::Uuid::new_v5(&DELIVERY_METHOD_NAMESPACE, name.as_bytes()).to_string()
}

/// A customer's billing-provider configuration (`CustomerBillingProviderConfiguration`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BillingProviderConfig {
    pub id: String,
    pub billing_provider: BillingProvider,
    #[serde(default)]
    pub configuration: serde_json::Map<String, serde_json::Value>,
    pub delivery_method: DeliveryMethod,
    pub delivery_method_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tax_provider: Option<TaxProvider>,
    pub created_at: Time,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived_at: Option<Time>,
}

impl BillingProviderConfig {
    /// The `CustomerBillingProviderConfiguration` shape (a superset of the set endpoint's
    /// `…Output`): `archived_at` is always present (nullable there), the delivery method's own
    /// configuration is empty (Tally configures no delivery).
    pub fn api_json(&self, customer_id: &str) -> serde_json::Value {
        let mut v = serde_json::json!({
            "id": self.id,
            "customer_id": customer_id,
            "billing_provider": self.billing_provider,
            "configuration": self.configuration,
            "delivery_method": self.delivery_method,
            "delivery_method_id": self.delivery_method_id,
            "delivery_method_configuration": {},
            "archived_at": self.archived_at,
        });
        set_opt(&mut v, "tax_provider", self.tax_provider);
        v
    }
}

/// A customer's revenue-system configuration (`CustomerRevenueSystemConfiguration`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RevenueSystemConfig {
    pub id: String,
    pub provider: RevenueSystemProvider,
    #[serde(default)]
    pub configuration: serde_json::Map<String, serde_json::Value>,
    pub delivery_method: RevenueDeliveryMethod,
    pub delivery_method_id: String,
    pub created_at: Time,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived_at: Option<Time>,
}

impl RevenueSystemConfig {
    pub fn api_json(&self, customer_id: &str) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "customer_id": customer_id,
            "provider": self.provider,
            "configuration": self.configuration,
            "delivery_method": self.delivery_method,
            "delivery_method_id": self.delivery_method_id,
            "delivery_method_configuration": {},
            "archived_at": self.archived_at,
        })
    }
}

/// The legacy (Plans) billing configuration of one provider type; its JSON is the
/// `GET /v1/customers/{id}/billing-config/{type}` response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LegacyBillingConfig {
    pub billing_provider_customer_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stripe_collection_method: Option<StripeCollectionMethod>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_customer_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_customer_account_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_product_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_region: Option<AwsRegion>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_is_subscription_product: Option<bool>,
}

// ---------------------------------------------------------------------------------------------
// Contracts

wire_enum!(ScheduleFrequency { Monthly => "MONTHLY", Quarterly => "QUARTERLY", Annual => "ANNUAL", Weekly => "WEEKLY" });
wire_enum!(ScheduleDay { FirstOfMonth => "FIRST_OF_MONTH", ContractStart => "CONTRACT_START", CustomDate => "CUSTOM_DATE" });

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UsageStatementSchedule {
    pub frequency: ScheduleFrequency,
    pub day: ScheduleDay,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub billing_anchor_date: Option<Time>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invoice_generation_starting_at: Option<Time>,
}

impl UsageStatementSchedule {
    pub fn core(&self) -> Schedule {
        Schedule {
            frequency: match self.frequency {
                ScheduleFrequency::Monthly => Frequency::Monthly,
                ScheduleFrequency::Quarterly => Frequency::Quarterly,
                ScheduleFrequency::Annual => Frequency::Annual,
                ScheduleFrequency::Weekly => Frequency::Weekly,
            },
            day: match self.day {
                ScheduleDay::FirstOfMonth => AnchorDay::FirstOfMonth,
                ScheduleDay::ContractStart => AnchorDay::ContractStart,
                ScheduleDay::CustomDate => AnchorDay::CustomDate,
            },
            billing_anchor_ms: self.billing_anchor_date.map(|t| t.0),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Contract {
    pub id: String,
    pub customer_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub starting_at: Time,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ending_before: Option<Time>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_card_id: Option<String>,
    pub usage_statement_schedule: UsageStatementSchedule,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uniqueness_key: Option<String>,
    #[serde(default)]
    pub custom_fields: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub net_payment_terms_days: Option<Dec>,
    pub created_at: Time,
    pub created_by: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archived_at: Option<Time>,
    /// Stored and read back; Tally does not act on them. Nested (not flattened: serde's
    /// flatten would read `total_contract_value` through a float-free but lossy buffer).
    #[serde(default)]
    pub record: ContractRecord,
    /// The contract's overrides, in the order given (validated by core at create).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<OverrideRecord>,
    /// The contract's own commits (PREPAID, POSTPAID), in the order given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commits: Vec<BalanceRecord>,
    /// The contract's own credits, in the order given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credits: Vec<BalanceRecord>,
    /// Its recurring commits, each generating a PREPAID commit per recurrence period
    /// ([`Contract::recurrences`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recurring_commits: Vec<RecurringRecord>,
    /// Its recurring credits, each generating a credit per recurrence period.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recurring_credits: Vec<RecurringRecord>,
    /// Its scheduled charges, in the order given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scheduled_charges: Vec<ScheduledChargeRecord>,
    /// Its professional services, in the order given, and the invoices scheduled for them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub professional_services: Vec<ProServiceRecord>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pro_service_invoices: Vec<ProServiceInvoiceRecord>,
    /// Its subscriptions, in the order given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subscriptions: Vec<SubscriptionRecord>,
    /// Its terms at creation and every change made since (`service::contract_edits`).
    #[serde(default, skip_serializing_if = "ContractHistory::is_empty")]
    pub history: ContractHistory,
    /// The contract it renews (`transition` on create; `service::transitions`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transition: Option<TransitionRecord>,
}

/// Contract fields Tally stores and shows but mostly does not act on (CRM ids, the contract
/// value, invoice consolidation of charges it does not bill yet); the prioritization of
/// overrides, kept here since before overrides were rated, is what pricing uses
/// ([`Contract::prioritization`]). Never silently dropped.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ContractRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salesforce_opportunity_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netsuite_sales_order_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_contract_value: Option<Dec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_charges_on_usage_invoices: Option<ScheduledChargesOnUsageInvoices>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiplier_override_prioritization: Option<MultiplierPrioritization>,
    /// The customer's billing-provider configuration the contract bills through, as resolved
    /// at create (kept in step when the customer's configuration is archived).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_provider_configuration: Option<BillingProviderConfig>,
    /// The package the contract was created from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package_id: Option<String>,
}

wire_enum!(ScheduledChargesOnUsageInvoices { All => "ALL" });
wire_enum!(MultiplierPrioritization { LowestMultiplier => "LOWEST_MULTIPLIER", Explicit => "EXPLICIT" });
wire_enum!(OverrideType { Overwrite => "OVERWRITE", Multiplier => "MULTIPLIER", Tiered => "TIERED" });

impl MultiplierPrioritization {
    pub fn core(self) -> Prioritization {
        match self {
            MultiplierPrioritization::LowestMultiplier => Prioritization::LowestMultiplier,
            MultiplierPrioritization::Explicit => Prioritization::Explicit,
        }
    }
}

impl OverrideType {
    pub fn core(self) -> overrides::OverrideType {
        match self {
            OverrideType::Overwrite => overrides::OverrideType::Overwrite,
            OverrideType::Multiplier => overrides::OverrideType::Multiplier,
            OverrideType::Tiered => overrides::OverrideType::Tiered,
        }
    }
}

/// `{id, name}` of a product, as overrides show it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProductRef {
    pub id: String,
    pub name: String,
}

/// One `override_specifiers` entry (`OverrideSpecifier`; the commit fields only on
/// commit-specific overrides, naming commits and credits by id once stored).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OverrideSpecifier {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_tags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing_group_values: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presentation_group_values: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_frequency: Option<BillingFrequency>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_ids: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recurring_commit_ids: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub any_commit_or_credit_ids: Option<Vec<String>>,
}

impl OverrideSpecifier {
    /// The id lists naming commits and credits, mutably (to resolve temporary ids).
    pub fn commit_id_lists(&mut self) -> impl Iterator<Item = &mut Vec<String>> {
        [
            &mut self.commit_ids,
            &mut self.recurring_commit_ids,
            &mut self.any_commit_or_credit_ids,
        ]
        .into_iter()
        .flatten()
    }
}

/// One tier of a TIERED override (`OverrideTier`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OverrideTier {
    pub multiplier: Dec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Dec>,
}

/// An OVERWRITE override's rate (`OverwriteRate`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OverwriteRate {
    pub rate_type: RateType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<Dec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tiers: Option<Vec<WireTier>>,
    pub credit_type: CreditTypeRef,
}

/// A contract override as stored and shown (`Override` in v1, `OverrideV2` in v2: the same
/// fields, v1's deprecated flattened rate fields left out).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OverrideRecord {
    pub id: String,
    pub created_at: Time,
    pub starting_at: Time,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ending_before: Option<Time>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub override_type: Option<OverrideType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<ProductRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applicable_product_tags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub override_specifiers: Option<Vec<OverrideSpecifier>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiplier: Option<Dec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overwrite_rate: Option<OverwriteRate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub override_tiers: Option<Vec<OverrideTier>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Dec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entitled: Option<bool>,
    pub is_commit_specific: bool,
    /// Commit-specific overrides: whether they adjust the list or the commit rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<BalanceRateType>,
}

fn core_tiers(tiers: &[WireTier]) -> Vec<Tier> {
    tiers
        .iter()
        .map(|t| Tier {
            price: t.price.0,
            size: t.size.map(|s| s.0),
        })
        .collect()
}

impl OverrideRecord {
    /// The override's parts as core's checks take them.
    pub fn spec(&self) -> overrides::OverrideSpec {
        overrides::OverrideSpec {
            id: self.id.clone(),
            starting_at_ms: self.starting_at.0,
            ending_before_ms: self.ending_before.map(|t| t.0),
            kind: self.override_type.map(OverrideType::core),
            product_id: self.product.as_ref().map(|p| p.id.clone()),
            applicable_product_tags: self.applicable_product_tags.clone(),
            override_specifiers: self.override_specifiers.as_ref().map(|specs| {
                specs
                    .iter()
                    .map(|s| overrides::Specifier {
                        product_id: s.product_id.clone(),
                        product_tags: s.product_tags.clone(),
                        pricing_group_values: s.pricing_group_values.clone(),
                        presentation_group_values: s.presentation_group_values.clone(),
                        billing_frequency: s.billing_frequency.map(BillingFrequency::core),
                        commit_ids: s.commit_ids.clone(),
                        recurring_commit_ids: s.recurring_commit_ids.clone(),
                        any_commit_or_credit_ids: s.any_commit_or_credit_ids.clone(),
                    })
                    .collect()
            }),
            multiplier: self.multiplier.map(|m| m.0),
            overwrite_rate: self
                .overwrite_rate
                .as_ref()
                .map(|o| overrides::OverwriteSpec {
                    rate_type: o.rate_type.core(),
                    price: o.price.map(|p| p.0),
                    tiers: o.tiers.as_deref().map(core_tiers),
                    credit_type: tally_core::money::CreditTypeId(o.credit_type.id.clone()),
                }),
            tiers: self.override_tiers.as_ref().map(|tiers| {
                tiers
                    .iter()
                    .map(|t| overrides::MultiplierTier {
                        multiplier: t.multiplier.0,
                        size: t.size.map(|s| s.0),
                    })
                    .collect()
            }),
            priority: self.priority.map(|p| p.0),
            entitled: self.entitled,
            is_commit_specific: self.is_commit_specific,
            target: self.target.map(BalanceRateType::core),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Contract changes: v1 amendments, v2 edits, end-date updates (`service::contract_edits`)

/// The terms a change can alter, as they were when the contract was created (v1 `initial`).
/// Captured by the first change; a term a new kind of change alters is added here too.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InitialTerms {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ending_before: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_payment_terms_days: Option<Dec>,
    #[serde(default)]
    pub overrides: Vec<OverrideRecord>,
    #[serde(default)]
    pub commits: Vec<BalanceRecord>,
    #[serde(default)]
    pub credits: Vec<BalanceRecord>,
    #[serde(default)]
    pub recurring_commits: Vec<RecurringRecord>,
    #[serde(default)]
    pub recurring_credits: Vec<RecurringRecord>,
    /// Absent in terms captured before amendments could add services (then: the current ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub professional_services: Option<Vec<ProServiceRecord>>,
}

/// What a v1 amendment carries besides the terms it adds (stored and shown, not acted on).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AmendmentInfo {
    pub starting_at: Time,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub custom_fields: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salesforce_opportunity_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netsuite_sales_order_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_contract_value: Option<Dec>,
}

/// One change made to a contract after its creation, as applied: a v1 amendment (`amendment`
/// set), a v2 edit or an end-date update. `Some(None)` in an `update_*` field cleared the term.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContractChange {
    pub id: String,
    pub timestamp: Time,
    pub created_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amendment: Option<AmendmentInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uniqueness_key: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add_overrides: Vec<OverrideRecord>,
    /// Ids of the overrides removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove_overrides: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "double_option"
    )]
    pub update_contract_end_date: Option<Option<Time>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "double_option"
    )]
    pub update_contract_name: Option<Option<String>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "double_option"
    )]
    pub update_net_payment_terms_days: Option<Option<Dec>>,
    /// Commits and credits the change adds (validated as on create, ids assigned).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add_commits: Vec<BalanceRecord>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add_credits: Vec<BalanceRecord>,
    /// Ids of the commits and credits the change archives.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub archive_commits: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub archive_credits: Vec<String>,
    /// Recurring commits and credits the change adds (v2 edits only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add_recurring_commits: Vec<RecurringRecord>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add_recurring_credits: Vec<RecurringRecord>,
    /// Scheduled charges the change adds, and the ids of those it archives.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add_scheduled_charges: Vec<ScheduledChargeRecord>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub archive_scheduled_charges: Vec<String>,
    /// Subscriptions the change adds, and its updates of existing ones (v2 edits only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add_subscriptions: Vec<SubscriptionRecord>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub update_subscriptions: Vec<SubscriptionUpdate>,
    /// Professional services the change adds (amendments).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add_professional_services: Vec<ProServiceRecord>,
    /// Changes to scheduled charges' schedules (v2 edits).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub update_scheduled_charges: Vec<ChargeScheduleUpdate>,
}

impl ContractChange {
    /// Whether the change touches the contract's commits or credits.
    pub fn touches_balances(&self) -> bool {
        !(self.add_commits.is_empty()
            && self.add_credits.is_empty()
            && self.add_recurring_commits.is_empty()
            && self.add_recurring_credits.is_empty()
            && self.archive_commits.is_empty()
            && self.archive_credits.is_empty())
    }

    /// The change as `getEditHistory` and the edit response show it (`ContractEdit`).
    pub fn edit_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({ "id": self.id, "timestamp": self.timestamp });
        set_opt(&mut v, "uniqueness_key", self.uniqueness_key.as_ref());
        if !self.add_overrides.is_empty() {
            v["add_overrides"] = serde_json::json!(self.add_overrides);
        }
        if !self.remove_overrides.is_empty() {
            let ids: Vec<_> = self
                .remove_overrides
                .iter()
                .map(|id| serde_json::json!({ "id": id }))
                .collect();
            v["remove_overrides"] = serde_json::Value::Array(ids);
        }
        for (key, added) in [
            ("add_commits", &self.add_commits),
            ("add_credits", &self.add_credits),
        ] {
            if !added.is_empty() {
                let items: Vec<_> = added.iter().map(|b| b.api_json(None)).collect();
                v[key] = serde_json::Value::Array(items);
            }
        }
        for (key, added) in [
            ("add_recurring_commits", &self.add_recurring_commits),
            ("add_recurring_credits", &self.add_recurring_credits),
        ] {
            if !added.is_empty() {
                let items: Vec<_> = added.iter().map(|r| r.api_json(None)).collect();
                v[key] = serde_json::Value::Array(items);
            }
        }
        if !self.add_scheduled_charges.is_empty() {
            let items: Vec<_> = self
                .add_scheduled_charges
                .iter()
                .map(ScheduledChargeRecord::api_json)
                .collect();
            v["add_scheduled_charges"] = serde_json::Value::Array(items);
        }
        if !self.add_subscriptions.is_empty() {
            // As created; billing periods are shown on contract reads.
            let items: Vec<_> = self
                .add_subscriptions
                .iter()
                .map(|s| s.api_json(None, self.timestamp.0))
                .collect();
            v["add_subscriptions"] = serde_json::Value::Array(items);
        }
        if !self.update_subscriptions.is_empty() {
            let items: Vec<_> = self
                .update_subscriptions
                .iter()
                .map(SubscriptionUpdate::api_json)
                .collect();
            v["update_subscriptions"] = serde_json::Value::Array(items);
        }
        if !self.update_scheduled_charges.is_empty() {
            let items: Vec<_> = self
                .update_scheduled_charges
                .iter()
                .map(ChargeScheduleUpdate::api_json)
                .collect();
            v["update_scheduled_charges"] = serde_json::Value::Array(items);
        }
        for (key, ids) in [
            ("archive_commits", &self.archive_commits),
            ("archive_credits", &self.archive_credits),
            ("archive_scheduled_charges", &self.archive_scheduled_charges),
        ] {
            if !ids.is_empty() {
                let items: Vec<_> = ids
                    .iter()
                    .map(|id| serde_json::json!({ "id": id }))
                    .collect();
                v[key] = serde_json::Value::Array(items);
            }
        }
        // Present (possibly `null`, a cleared term) exactly when the change set it.
        let updates = [
            (
                "update_contract_end_date",
                self.update_contract_end_date.map(|t| serde_json::json!(t)),
            ),
            (
                "update_contract_name",
                self.update_contract_name
                    .as_ref()
                    .map(|n| serde_json::json!(n)),
            ),
            (
                "update_net_payment_terms_days",
                self.update_net_payment_terms_days
                    .map(|d| serde_json::json!(d)),
            ),
        ];
        for (key, value) in updates {
            if let Some(value) = value {
                v[key] = value;
            }
        }
        v
    }

    /// The change as a v1 `ContractAmendment`, if it is an amendment.
    fn amendment_json(&self) -> Option<serde_json::Value> {
        let info = self.amendment.as_ref()?;
        let mut v = serde_json::json!({
            "id": self.id,
            "starting_at": info.starting_at,
            "created_at": self.timestamp,
            "created_by": self.created_by,
            "commits": self.add_commits.iter().map(|b| b.api_json(None)).collect::<Vec<_>>(),
            "credits": self.add_credits.iter().map(|b| b.api_json(None)).collect::<Vec<_>>(),
            "overrides": self.add_overrides,
            "scheduled_charges": self
                .add_scheduled_charges
                .iter()
                .map(ScheduledChargeRecord::api_json)
                .collect::<Vec<_>>(),
            "discounts": [],
            "professional_services": self
                .add_professional_services
                .iter()
                .map(ProServiceRecord::api_json)
                .collect::<Vec<_>>(),
            "reseller_royalties": [],
        });
        if !info.custom_fields.is_empty() {
            v["custom_fields"] = serde_json::json!(info.custom_fields);
        }
        set_opt(
            &mut v,
            "salesforce_opportunity_id",
            info.salesforce_opportunity_id.as_ref(),
        );
        set_opt(
            &mut v,
            "netsuite_sales_order_id",
            info.netsuite_sales_order_id.as_ref(),
        );
        set_opt(&mut v, "total_contract_value", info.total_contract_value);
        Some(v)
    }
}

/// A contract's terms at creation and the changes made since, oldest first.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ContractHistory {
    /// The changeable terms at creation, captured by the first change (`None`: no change yet,
    /// so they are the contract's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial: Option<InitialTerms>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<ContractChange>,
}

impl ContractHistory {
    pub fn is_empty(&self) -> bool {
        self.initial.is_none() && self.changes.is_empty()
    }
}

impl Contract {
    pub fn schedule(&self) -> Schedule {
        self.usage_statement_schedule.core()
    }

    pub fn prioritization(&self) -> MultiplierPrioritization {
        self.record
            .multiplier_override_prioritization
            .unwrap_or(MultiplierPrioritization::LowestMultiplier)
    }

    /// The contract's terms as core prices them: its overrides rebuilt through core's checks
    /// (they passed them at create, under the same prioritization, which never changes). One
    /// that fails them now is a corrupt document, never silently dropped.
    /// The credit types the contract's OVERWRITE overrides price in.
    pub fn overwrite_credit_types(&self) -> Vec<CreditTypeRef> {
        let rates = self
            .overrides
            .iter()
            .filter_map(|o| o.overwrite_rate.as_ref());
        rates.map(|r| r.credit_type.clone()).collect()
    }

    pub fn terms(&self) -> StoreResult<ContractTerms> {
        let mode = self.prioritization().core();
        let overrides = self
            .overrides
            .iter()
            .map(|o| {
                overrides::build(o.spec(), mode).map_err(|e| {
                    StoreError::Corrupt(format!("contract {} override {}: {e}", self.id, o.id))
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(ContractTerms {
            overrides,
            multiplier_override_prioritization: mode,
            scheduled_charges: self.core_charges(),
            subscriptions: self.core_subscriptions()?,
            ..self.snapshot().terms
        })
    }

    /// What pricing sees of its subscriptions.
    pub fn core_subscriptions(&self) -> StoreResult<Vec<tally_core::subscriptions::Subscription>> {
        self.subscriptions
            .iter()
            .map(|s| {
                s.core().ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "contract {} subscription {}: its quantity overflows",
                        self.id, s.id
                    ))
                })
            })
            .collect()
    }

    /// The `subscriptions` of responses, as of `now_ms`.
    pub fn subscriptions_json(&self, now_ms: i64) -> Vec<serde_json::Value> {
        let snapshot = self.snapshot();
        self.subscriptions
            .iter()
            .map(|s| s.api_json(Some(&snapshot), now_ms))
            .collect()
    }

    /// What pricing sees of its unarchived scheduled charges and of its professional services'
    /// scheduled invoices.
    pub fn core_charges(&self) -> Vec<tally_core::charges::ScheduledCharge> {
        self.scheduled_charges
            .iter()
            .filter(|c| c.archived_at.is_none())
            .map(ScheduledChargeRecord::core)
            .chain(pro_service_charges(
                &self.professional_services,
                &self.pro_service_invoices,
            ))
            .collect()
    }

    /// What core needs to know about this contract to find its periods and where scheduled
    /// items go (of its terms only whether they are consolidated; [`Contract::terms`] has the
    /// rest, [`Contract::core_charges`] the charges).
    pub fn snapshot(&self) -> tally_core::pricing::ContractSnapshot {
        tally_core::pricing::ContractSnapshot {
            id: self.id.clone(),
            starting_at_ms: self.starting_at.0,
            ending_before_ms: self.ending_before.map(|t| t.0),
            usage_statement_schedule: self.schedule(),
            invoice_generation_starting_at_ms: self
                .usage_statement_schedule
                .invoice_generation_starting_at
                .map(|t| t.0),
            archived_at_ms: self.archived_at.map(|t| t.0),
            terms: ContractTerms {
                consolidate_scheduled: self.record.scheduled_charges_on_usage_invoices
                    == Some(ScheduledChargesOnUsageInvoices::All),
                ..ContractTerms::default()
            },
        }
    }

    /// What core's pricing needs to know about this contract, terms included.
    pub fn pricing_snapshot(&self) -> StoreResult<tally_core::pricing::ContractSnapshot> {
        Ok(tally_core::pricing::ContractSnapshot {
            terms: self.terms()?,
            ..self.snapshot()
        })
    }

    fn schedule_json(&self) -> serde_json::Value {
        serde_json::json!({
            "frequency": self.usage_statement_schedule.frequency,
            "billing_anchor_date": Time(self.schedule().anchor_ms(self.starting_at.0)),
        })
    }

    /// The terms shared by v1 `initial`/`current` and the flat v2 shape, as of `now_ms` (the
    /// commits and credits recurring ones have generated by then are listed after the
    /// contract's own). Unset optional terms are left out, not `null`: the document declares
    /// them optional and non-nullable.
    fn terms_json(&self, now_ms: i64) -> serde_json::Value {
        let (mut commits, mut credits) = (
            self.balances_json(&self.commits),
            self.balances_json(&self.credits),
        );
        for b in self.recurrences(now_ms) {
            match b.balance_type {
                BalanceType::Credit => credits.push(b.api_json(Some(&self.id))),
                _ => commits.push(b.api_json(Some(&self.id))),
            }
        }
        let recurring = |list: &[RecurringRecord]| -> Vec<serde_json::Value> {
            list.iter().map(|r| r.api_json(Some(&self.id))).collect()
        };
        let mut v = serde_json::json!({
            "starting_at": self.starting_at,
            "usage_statement_schedule": self.schedule_json(),
            "created_at": self.created_at,
            "created_by": self.created_by,
            "commits": commits,
            "credits": credits,
            "overrides": self.overrides, "transitions": [],
            "professional_services": self
                .professional_services
                .iter()
                .map(ProServiceRecord::api_json)
                .collect::<Vec<_>>(),
            "scheduled_charges": self
                .scheduled_charges
                .iter()
                .map(ScheduledChargeRecord::api_json)
                .collect::<Vec<_>>(),
            "recurring_commits": recurring(&self.recurring_commits),
            "recurring_credits": recurring(&self.recurring_credits),
        });
        set_opt(&mut v, "ending_before", self.ending_before);
        set_opt(&mut v, "name", self.name.as_ref());
        set_opt(&mut v, "rate_card_id", self.rate_card_id.as_ref());
        set_opt(
            &mut v,
            "net_payment_terms_days",
            self.net_payment_terms_days,
        );
        let r = &self.record;
        set_opt(
            &mut v,
            "salesforce_opportunity_id",
            r.salesforce_opportunity_id.as_ref(),
        );
        set_opt(
            &mut v,
            "netsuite_sales_order_id",
            r.netsuite_sales_order_id.as_ref(),
        );
        set_opt(&mut v, "total_contract_value", r.total_contract_value);
        set_opt(&mut v, "package_id", r.package_id.as_ref());
        set_opt(
            &mut v,
            "scheduled_charges_on_usage_invoices",
            r.scheduled_charges_on_usage_invoices,
        );
        v
    }

    /// The contract's own commits or credits in the §2.14 shape (`contract: {id}` set).
    fn balances_json(&self, records: &[BalanceRecord]) -> Vec<serde_json::Value> {
        records.iter().map(|b| b.api_json(Some(&self.id))).collect()
    }

    /// `uniqueness_key`, `archived_at` and `customer_billing_provider_configuration`, when set
    /// (optional, non-nullable upstream; top-level in both v1 and v2).
    fn set_optional_identity(&self, v: &mut serde_json::Value) {
        set_opt(v, "uniqueness_key", self.uniqueness_key.as_ref());
        set_opt(v, "archived_at", self.archived_at);
        let config = self.record.billing_provider_configuration.as_ref();
        set_opt(
            v,
            "customer_billing_provider_configuration",
            config.map(|c| c.api_json(&self.customer_id)),
        );
    }

    /// Records, before the first change, the terms changes can alter as they are at creation.
    pub fn keep_initial_terms(&mut self) {
        if self.history.initial.is_none() {
            self.history.initial = Some(InitialTerms {
                ending_before: self.ending_before,
                name: self.name.clone(),
                net_payment_terms_days: self.net_payment_terms_days,
                overrides: self.overrides.clone(),
                commits: self.commits.clone(),
                credits: self.credits.clone(),
                recurring_commits: self.recurring_commits.clone(),
                recurring_credits: self.recurring_credits.clone(),
                professional_services: Some(self.professional_services.clone()),
            });
        }
    }

    /// v1 `initial`: the terms at creation, without amendments or edits.
    fn initial_terms_json(&self, now_ms: i64) -> serde_json::Value {
        let Some(initial) = &self.history.initial else {
            return self.terms_json(now_ms);
        };
        let at_creation = Contract {
            ending_before: initial.ending_before,
            name: initial.name.clone(),
            net_payment_terms_days: initial.net_payment_terms_days,
            overrides: initial.overrides.clone(),
            commits: initial.commits.clone(),
            credits: initial.credits.clone(),
            recurring_commits: initial.recurring_commits.clone(),
            recurring_credits: initial.recurring_credits.clone(),
            professional_services: initial
                .professional_services
                .clone()
                .unwrap_or_else(|| self.professional_services.clone()),
            ..self.clone()
        };
        at_creation.terms_json(now_ms)
    }

    /// The v1 `Contract` shape as of `now_ms`.
    pub fn v1_json(&self, now_ms: i64) -> serde_json::Value {
        let amendments: Vec<_> = self
            .history
            .changes
            .iter()
            .filter_map(ContractChange::amendment_json)
            .collect();
        let mut v = serde_json::json!({
            "id": self.id,
            "customer_id": self.customer_id,
            "initial": self.initial_terms_json(now_ms),
            "current": self.terms_json(now_ms),
            "amendments": amendments,
            "custom_fields": self.custom_fields,
            "subscriptions": self.subscriptions_json(now_ms),
        });
        self.set_optional_identity(&mut v);
        v
    }

    /// The v2 `ContractV2` shape as of `now_ms`.
    pub fn v2_json(&self, now_ms: i64) -> serde_json::Value {
        let mut v = self.terms_json(now_ms);
        let extra = serde_json::json!({
            "id": self.id,
            "customer_id": self.customer_id,
            "usage_filter": [],
            "subscriptions": self.subscriptions_json(now_ms),
            "custom_fields": self.custom_fields,
            "multiplier_override_prioritization": self.prioritization(),
        });
        if let (Some(obj), serde_json::Value::Object(extra)) = (v.as_object_mut(), extra) {
            obj.extend(extra);
        }
        self.set_optional_identity(&mut v);
        v
    }
}

// ---------------------------------------------------------------------------------------------
// Commits and credits

wire_enum!(BalanceType { Prepaid => "PREPAID", Postpaid => "POSTPAID", Credit => "CREDIT" });
wire_enum!(BalanceRateType { CommitRate => "COMMIT_RATE", ListRate => "LIST_RATE" });

impl BalanceType {
    pub fn core(self) -> balances::BalanceKind {
        match self {
            BalanceType::Prepaid => balances::BalanceKind::PrepaidCommit,
            BalanceType::Postpaid => balances::BalanceKind::PostpaidCommit,
            BalanceType::Credit => balances::BalanceKind::Credit,
        }
    }

    pub fn is_commit(self) -> bool {
        self != BalanceType::Credit
    }
}

impl BalanceRateType {
    pub fn core(self) -> balances::BalanceRateType {
        match self {
            BalanceRateType::CommitRate => balances::BalanceRateType::CommitRate,
            BalanceRateType::ListRate => balances::BalanceRateType::ListRate,
        }
    }
}

fn list_rate() -> BalanceRateType {
    BalanceRateType::ListRate
}

/// One `access_schedule` item (a segment), with its id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessItem {
    pub id: String,
    pub amount: Dec,
    pub starting_at: Time,
    pub ending_before: Time,
}

/// `ScheduleDuration`: what the balance gives, when.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessSchedule {
    pub credit_type: CreditTypeRef,
    pub schedule_items: Vec<AccessItem>,
}

/// One `invoice_schedule` item, with its id (`amount = unit_price × quantity`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InvoiceItem {
    pub id: String,
    pub timestamp: Time,
    pub amount: Dec,
    pub quantity: Dec,
    pub unit_price: Dec,
}

/// `SchedulePointInTime`: when a commit is invoiced (PREPAID purchases, POSTPAID true-up).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InvoiceSchedule {
    pub credit_type: CreditTypeRef,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub do_not_invoice: bool,
    pub schedule_items: Vec<InvoiceItem>,
}

impl InvoiceSchedule {
    /// Its items as core's (whether it is invoiced at all is the caller's question).
    pub fn core_items(&self) -> Vec<balances::InvoiceItem> {
        self.schedule_items
            .iter()
            .map(|i| balances::InvoiceItem {
                id: i.id.clone(),
                timestamp_ms: i.timestamp.0,
                quantity: i.quantity.0,
                unit_price: i.unit_price.0,
                amount: i.amount.0,
            })
            .collect()
    }
}

/// One `specifiers` entry of a commit or credit (`CommitSpecifier`; `exclude` is refused).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CommitSpecifier {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_tags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing_group_values: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presentation_group_values: Option<BTreeMap<String, String>>,
}

impl CommitSpecifier {
    /// What pricing sees of it.
    pub fn core(&self) -> Specifier {
        Specifier {
            product_id: self.product_id.clone(),
            product_tags: self.product_tags.clone(),
            pricing_group_values: self.pricing_group_values.clone(),
            presentation_group_values: self.presentation_group_values.clone(),
            ..Specifier::default()
        }
    }
}

/// A commit or credit as stored: a contract's (in its document's `commits` / `credits`) or a
/// customer's (its own document, [`kind::CUSTOMER_BALANCE`]). Validated by `service::commits`
/// at create; [`BalanceRecord::api_json`] is its one rendering, [`BalanceRecord::balance`] what
/// pricing sees of it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BalanceRecord {
    pub id: String,
    #[serde(rename = "type")]
    pub balance_type: BalanceType,
    /// The FIXED product it is invoiced with, named as it was at create.
    pub product: ProductRef,
    pub access_schedule: AccessSchedule,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoice_schedule: Option<InvoiceSchedule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Dec>,
    #[serde(default = "list_rate")]
    pub rate_type: BalanceRateType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applicable_product_ids: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applicable_product_tags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub specifiers: Option<Vec<CommitSpecifier>>,
    /// Customer-level: the customer it belongs to (contract-level ones belong to their contract).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
    /// Customer-level: the contract whose invoices carry its purchases and true-up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoice_contract_id: Option<String>,
    /// Customer-level: the contracts it applies to (absent or empty: all of the customer's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applicable_contract_ids: Option<Vec<String>>,
    /// What of each segment's remainder rolls over to a renewal (`service::transitions`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollover_fraction: Option<Dec>,
    /// Made by rollover at a renewal: where from (shown as `rolled_over_from`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_over_from: Option<RolledOverFrom>,
    #[serde(default)]
    pub custom_fields: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netsuite_sales_order_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salesforce_opportunity_id: Option<String>,
    pub created_at: Time,
    pub created_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uniqueness_key: Option<String>,
    /// Generated by a recurring commit or credit: its id (never stored: generated records
    /// are derived from the recurring one whenever read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recurring_id: Option<String>,
}

impl BalanceRecord {
    /// The `Commit` / `Credit` response shape (§2.14; v1 and v2 alike). `contract_id`: the
    /// contract of a contract-level one (shown as `contract: {id}`), `None` for a customer's.
    pub fn api_json(&self, contract_id: Option<&str>) -> serde_json::Value {
        let mut v = serde_json::json!({
            "id": self.id,
            "type": self.balance_type,
            "product": self.product,
            "access_schedule": self.access_schedule,
            "rate_type": self.rate_type,
            "custom_fields": self.custom_fields,
            "created_at": self.created_at,
            "created_by": self.created_by,
        });
        if self.balance_type.is_commit() {
            set_opt(&mut v, "invoice_schedule", self.invoice_schedule.as_ref());
            let invoice_contract = self.invoice_contract_id.as_deref().or(contract_id);
            set_opt(
                &mut v,
                "invoice_contract",
                invoice_contract.map(|id| serde_json::json!({ "id": id })),
            );
        }
        set_opt(
            &mut v,
            "contract",
            contract_id.map(|id| serde_json::json!({ "id": id })),
        );
        set_opt(&mut v, "name", self.name.as_ref());
        set_opt(&mut v, "description", self.description.as_ref());
        set_opt(&mut v, "priority", self.priority);
        set_opt(
            &mut v,
            "applicable_product_ids",
            self.applicable_product_ids.as_ref(),
        );
        set_opt(
            &mut v,
            "applicable_product_tags",
            self.applicable_product_tags.as_ref(),
        );
        set_opt(&mut v, "specifiers", self.specifiers.as_ref());
        set_opt(
            &mut v,
            "applicable_contract_ids",
            self.applicable_contract_ids.as_ref(),
        );
        set_opt(&mut v, "rollover_fraction", self.rollover_fraction);
        set_opt(
            &mut v,
            "netsuite_sales_order_id",
            self.netsuite_sales_order_id.as_ref(),
        );
        set_opt(
            &mut v,
            "salesforce_opportunity_id",
            self.salesforce_opportunity_id.as_ref(),
        );
        set_opt(&mut v, "archived_at", self.archived_at);
        set_opt(&mut v, "uniqueness_key", self.uniqueness_key.as_ref());
        let recurring_field = match self.balance_type {
            BalanceType::Credit => "recurring_credit_id",
            _ => "recurring_commit_id",
        };
        set_opt(&mut v, recurring_field, self.recurring_id.as_ref());
        let credit = self.balance_type == BalanceType::Credit;
        set_opt(
            &mut v,
            "rolled_over_from",
            self.rolled_over_from.as_ref().map(|r| r.api_json(credit)),
        );
        v
    }

    /// Whether it was paid for: a PREPAID commit whose invoice schedule is invoiced and charges
    /// something.
    pub fn is_paid(&self) -> bool {
        self.balance_type == BalanceType::Prepaid
            && self.invoice_schedule.as_ref().is_some_and(|s| {
                !s.do_not_invoice && s.schedule_items.iter().any(|i| !i.amount.0.is_zero())
            })
    }

    /// What pricing sees of it. `contract_id`: the contract of a contract-level one (which is
    /// also its invoice contract); `None` for a customer-level one.
    pub fn balance(&self, contract_id: Option<&str>) -> balances::Balance {
        let mut access: Vec<balances::AccessSegment> = self
            .access_schedule
            .schedule_items
            .iter()
            .map(|s| balances::AccessSegment {
                id: s.id.clone(),
                amount: s.amount.0,
                starting_at_ms: s.starting_at.0,
                ending_before_ms: s.ending_before.0,
            })
            .collect();
        access.sort_by_key(|s| (s.starting_at_ms, s.ending_before_ms));
        let invoiced = self.invoice_schedule.as_ref().filter(|s| !s.do_not_invoice);
        let invoice_schedule = invoiced
            .map(InvoiceSchedule::core_items)
            .unwrap_or_default();
        let specifiers = self.specifiers.iter().flatten().map(CommitSpecifier::core);
        balances::Balance {
            id: self.id.clone(),
            kind: self.balance_type.core(),
            name: self
                .name
                .clone()
                .unwrap_or_else(|| self.product.name.clone()),
            product_id: self.product.id.clone(),
            contract_id: contract_id.map(str::to_string),
            applicable_contract_ids: match contract_id {
                Some(_) => Vec::new(),
                None => self.applicable_contract_ids.clone().unwrap_or_default(),
            },
            invoice_contract_id: contract_id
                .map(str::to_string)
                .or_else(|| self.invoice_contract_id.clone()),
            priority: self.priority.map(|p| p.0),
            applicable_product_ids: self.applicable_product_ids.clone().unwrap_or_default(),
            applicable_product_tags: self.applicable_product_tags.clone().unwrap_or_default(),
            specifiers: specifiers.collect(),
            rate_type: self.rate_type.core(),
            credit_type: tally_core::money::CreditTypeId(
                self.access_schedule.credit_type.id.clone(),
            ),
            access,
            invoice_schedule,
            paid: self.is_paid(),
            recurring_id: self.recurring_id.clone(),
        }
    }
}
