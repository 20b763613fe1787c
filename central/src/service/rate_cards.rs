//! Rate cards and their rates: create, list, update (name, description, aliases), archive, add
//! rates, order the card's products, read a card's rate schedule (`getRates`,
//! `getRateSchedule`).
//!
//! Invariants: every change of a card document is a read-modify-write with optimistic
//! concurrency, so concurrent changes are all kept, and its alias index is written in the same
//! transaction; a rate is validated by core's rules against its product and by the configuration
//! limits (tiers per rate, rates per card, price magnitude) before it is stored; a list of rates
//! is stored all or nothing; a card's schedule is read in O(n log n) of its rates, in the card's
//! product order (`tally_core::product_order`), the same order its invoices' lines take.

use std::collections::BTreeMap;

use serde_json::Value;
use tally_core::period::Period;
use tally_core::product_order::{self, ProductMove};
use tally_core::rate;
use tally_core::rating::{self, Tier};

use super::credit_types::{self, ConversionInput};
use super::{lost_race_is_false, modify_doc, require_hour, require_text, retry_conflicts};
use super::{products, Invalid, SeqPage, Write};
use crate::model::{
    credit_type, decode, encode, kind, load, new_id, BillingFrequency, LoadError, Product,
    ProductType, RateCard, RateCardAlias, RateRecord, RateType, WireTier, CREATED_BY,
};
use crate::store::{ArchiveFilter, Env, NewDoc, PageReq, StoreError};
use crate::wire::{Dec, Time};
use crate::AppState;

#[derive(Debug, thiserror::Error)]
pub enum RateCardError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// One rate of an `addRates` list was refused; nothing was stored.
    #[error("rates[{index}]: {source}")]
    AtIndex {
        index: usize,
        source: Box<RateCardError>,
    },
}

impl From<products::ProductError> for RateCardError {
    fn from(e: products::ProductError) -> Self {
        match e {
            products::ProductError::NotFound(what) => RateCardError::NotFound(what),
            products::ProductError::Invalid(e) => RateCardError::Invalid(e),
            products::ProductError::Store(e) => RateCardError::Store(e),
        }
    }
}

impl From<rate::RateError> for RateCardError {
    fn from(e: rate::RateError) -> Self {
        RateCardError::Invalid(Invalid(e.to_string()))
    }
}

impl From<LoadError> for RateCardError {
    fn from(e: LoadError) -> Self {
        match e {
            LoadError::NotFound(what) => RateCardError::NotFound(what),
            LoadError::Store(e) => RateCardError::Store(e),
        }
    }
}

type Result<T> = std::result::Result<T, RateCardError>;

/// Most tiers one TIERED rate may have.
pub const MAX_TIERS_PER_RATE: usize = 100;
/// Most rates one rate card may hold (every draft of a contract on it loads them all).
pub const MAX_RATES_PER_CARD: usize = 5_000;
/// Largest price (and tier price) magnitude accepted, in the pricing unit (USD cents: ten
/// billion dollars a unit). Above it a few units already overflow the exact decimal range of an
/// invoice, so the contract could never be rated; refusing it here keeps the job unblocked.
pub const MAX_PRICE_ABS: rust_decimal::Decimal = rust_decimal::Decimal::from_parts(
    3_567_587_328, // 10^12 = 232 * 2^32 + 3_567_587_328
    232,
    0,
    false,
    0,
);

/// Refuses a rate whose tiers or prices pass the configured limits, naming the field.
pub fn check_rate_limits(
    price: Option<rust_decimal::Decimal>,
    tier_prices: &[rust_decimal::Decimal],
) -> std::result::Result<(), Invalid> {
    if tier_prices.len() > MAX_TIERS_PER_RATE {
        return Err(Invalid(format!(
            "tiers: at most {MAX_TIERS_PER_RATE} tiers are allowed per rate"
        )));
    }
    let too_big = |p: &rust_decimal::Decimal| p.abs() > MAX_PRICE_ABS;
    if price.as_ref().is_some_and(too_big) || tier_prices.iter().any(too_big) {
        return Err(Invalid(format!(
            "price: prices are limited to {MAX_PRICE_ABS} in magnitude (larger ones cannot be \
             rated without overflowing an invoice)"
        )));
    }
    Ok(())
}

/// Refuses adding `adding` rates to a card that already holds `existing`.
pub fn check_card_capacity(existing: usize, adding: usize) -> std::result::Result<(), Invalid> {
    if existing.saturating_add(adding) > MAX_RATES_PER_CARD {
        return Err(Invalid(format!(
            "a rate card holds at most {MAX_RATES_PER_CARD} rates; this one has {existing}"
        )));
    }
    Ok(())
}

/// Refuses alias names that are empty or too long, and windows that end before they start.
pub fn check_aliases(aliases: &[RateCardAlias]) -> std::result::Result<(), Invalid> {
    for a in aliases {
        require_text("aliases[].name", &a.name, 256)?;
        if let (Some(s), Some(e)) = (a.starting_at, a.ending_before) {
            if e <= s {
                return Err(Invalid(
                    "alias ending_before must be after starting_at".into(),
                ));
            }
        }
    }
    Ok(())
}

/// Most rates one `addRates` call may add.
pub const MAX_RATES_PER_CALL: usize = 1_000;

/// A rate card as a client creates it.
pub struct NewRateCard {
    pub name: String,
    pub description: Option<String>,
    pub aliases: Vec<RateCardAlias>,
    pub fiat_credit_type_id: Option<String>,
    /// The custom pricing units the card prices in (`credit_types::add_conversions`).
    pub credit_type_conversions: Vec<ConversionInput>,
    pub custom_fields: BTreeMap<String, String>,
}

pub async fn create(st: &AppState, env: Env, req: NewRateCard) -> Result<String> {
    require_text("name", &req.name, 256)?;
    check_aliases(&req.aliases)?;
    let fiat_credit_type = credit_type(req.fiat_credit_type_id.as_deref())
        .map_err(|e| Invalid(format!("fiat_credit_type_id: {}", e.0)))?;
    let conversions = req.credit_type_conversions;
    let credit_type_conversions =
        credit_types::add_conversions(st, env, "credit_type_conversions", &[], conversions).await?;
    let now = st.now_ms();
    let mut card = RateCard {
        id: new_id(),
        name: req.name,
        description: req.description,
        aliases: Vec::new(),
        fiat_credit_type,
        credit_type_conversions,
        created_at: Time(now),
        created_by: CREATED_BY.into(),
        custom_fields: req.custom_fields,
        archived_at: None,
        product_order: Vec::new(),
    };
    card.assign_aliases(req.aliases, now);
    let doc = NewDoc {
        kind: kind::RATE_CARD,
        id: &card.id,
        parent_id: None,
        unique_key: None,
        created_ms: now,
        body: encode(&card)?,
    };
    let names = alias_names(&card);
    st.stores.config.insert_rate_card(env, doc, &names).await?;
    Ok(card.id)
}

/// One keyset page of active cards (`limit + 1` fetched, so the caller knows whether more follow).
pub async fn list(st: &AppState, env: Env, page: PageReq) -> Result<SeqPage<RateCard>> {
    let fetch = PageReq {
        after: page.after,
        limit: page.limit + 1,
    };
    let docs = st
        .stores
        .config
        .list_docs(
            env,
            kind::RATE_CARD,
            None,
            ArchiveFilter::Active,
            Some(fetch),
        )
        .await?;
    docs.iter().map(|d| Ok((d.seq, decode(d)?))).collect()
}

/// A rate as a client adds it.
pub struct NewRate {
    pub product_id: String,
    pub starting_at: Time,
    pub ending_before: Option<Time>,
    pub entitled: bool,
    pub rate_type: RateType,
    pub price: Option<Dec>,
    pub tiers: Option<Vec<WireTier>>,
    pub pricing_group_values: BTreeMap<String, String>,
    pub credit_type_id: Option<String>,
    pub billing_frequency: Option<BillingFrequency>,
    pub commit_rate: Option<Value>,
    pub quantity: Option<Dec>,
    pub is_prorated: Option<bool>,
}

/// Validates one rate against its product and the limits; returns the record to store.
async fn build_rate(
    st: &AppState,
    env: Env,
    card: &RateCard,
    input: NewRate,
) -> Result<RateRecord> {
    require_hour("starting_at", input.starting_at)?;
    if let Some(end) = input.ending_before {
        require_hour("ending_before", end)?;
    }
    rate::check_window(input.starting_at.0, input.ending_before.map(|t| t.0))?;
    let product = products::get(st, env, &input.product_id).await?;
    let composite = product.product_type == ProductType::Composite;
    rate::check_rate_for_product(composite, input.rate_type.core())?;
    let subscription = product.product_type == ProductType::Subscription;
    rate::check_subscription_rate(
        subscription,
        input.rate_type.core(),
        input.billing_frequency.is_some(),
    )?;
    if input.is_prorated == Some(false) {
        return Err(Invalid(
            "is_prorated: must be true when given (a subscription's own proration decides)".into(),
        )
        .into());
    }
    if (input.quantity.is_some() || input.is_prorated.is_some()) && !subscription {
        return Err(Invalid(
            "quantity and is_prorated are only for the rates of SUBSCRIPTION products".into(),
        )
        .into());
    }
    if input
        .quantity
        .is_some_and(|q| q.0 < rust_decimal::Decimal::ZERO)
    {
        return Err(Invalid("quantity: must not be negative".into()).into());
    }
    if input.rate_type == RateType::Percentage
        && input.commit_rate.as_ref().is_some_and(|c| !c.is_null())
    {
        return Err(Invalid("commit_rate: not allowed on PERCENTAGE rates".into()).into());
    }
    let record = RateRecord {
        rate_card_id: card.id.clone(),
        product_id: product.id.clone(),
        starting_at: input.starting_at,
        ending_before: input.ending_before,
        entitled: input.entitled,
        rate_type: input.rate_type,
        price: input.price,
        tiers: input.tiers,
        pricing_group_values: input.pricing_group_values,
        credit_type: rate_credit_type(st, env, card, input.credit_type_id.as_deref()).await?,
        billing_frequency: input.billing_frequency,
        commit_rate: commit_rate(input.commit_rate)?,
        quantity: input.quantity,
        is_prorated: input.is_prorated,
    };
    let tier_prices: Vec<_> = record.tiers.iter().flatten().map(|t| t.price.0).collect();
    check_rate_limits(record.price.map(|p| p.0), &tier_prices)?;
    check_price(&record)?;
    check_pricing_values(&product, &record)?;
    Ok(record)
}

/// A rate's credit type: the card's fiat one (the default) or a custom unit it converts.
async fn rate_credit_type(
    st: &AppState,
    env: Env,
    card: &RateCard,
    id: Option<&str>,
) -> Result<crate::model::CreditTypeRef> {
    let id = id.or(Some(card.fiat_credit_type.id.as_str()));
    let ct = credit_types::resolve(st, env, id)
        .await
        .map_err(|e| e.at("credit_type_id"))?;
    credit_types::check_priced_in("credit_type_id", &ct, Some(card))?;
    Ok(ct)
}

/// A rate's `commit_rate` (the price usage covered by a `COMMIT_RATE` commit is drawn at): only
/// a flat one, `{rate_type: FLAT, price ≥ 0}`, stored in that canonical form.
fn commit_rate(value: Option<Value>) -> Result<Option<Value>> {
    let Some(v) = value.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let bad = |why: &str| RateCardError::from(Invalid(format!("commit_rate.{why}")));
    let Value::Object(fields) = &v else {
        return Err(bad(
            "rate_type: required (a commit rate is {rate_type, price})",
        ));
    };
    let rate_type = fields.get("rate_type").and_then(Value::as_str);
    match rate_type.and_then(RateType::parse) {
        Some(RateType::Flat) => {}
        Some(RateType::Tiered) => {
            return Err(bad("rate_type: TIERED commit rates are not supported yet"))
        }
        Some(other) => {
            return Err(bad(&format!(
                "rate_type: {} commit rates are not supported; only FLAT",
                other.as_str()
            )))
        }
        None => return Err(bad("rate_type: required (FLAT)")),
    }
    if fields.get("tiers").is_some_and(|t| !t.is_null()) {
        return Err(bad("tiers: not allowed on a FLAT commit rate"));
    }
    let price = fields
        .get("price")
        .filter(|p| !p.is_null())
        .ok_or_else(|| bad("price: required for a FLAT commit rate"))?;
    let price: Dec =
        serde_json::from_value(price.clone()).map_err(|e| bad(&format!("price: {e}")))?;
    if price.0 < rust_decimal::Decimal::ZERO {
        return Err(bad("price: must not be negative"));
    }
    check_rate_limits(Some(price.0), &[]).map_err(|e| bad(&e.0))?;
    Ok(Some(
        serde_json::json!({ "rate_type": RateType::Flat, "price": price }),
    ))
}

/// The rate's price as core checks it (type, price, tiers).
fn check_price(r: &RateRecord) -> Result<()> {
    let tiers = r.tiers.as_ref().map(|ts| {
        ts.iter()
            .map(|t| Tier {
                price: t.price.0,
                size: t.size.map(|s| s.0),
            })
            .collect()
    });
    rate::rate_price(r.rate_type.core(), r.price.map(|p| p.0), tiers)?;
    Ok(())
}

fn check_pricing_values(product: &Product, r: &RateRecord) -> Result<()> {
    let state = product.state_at(r.starting_at.0);
    rate::check_pricing_values(state.pricing_group_key.as_deref(), &r.pricing_group_values)?;
    Ok(())
}

async fn insert_rates(st: &AppState, env: Env, rates: &[RateRecord]) -> Result<()> {
    if let Some(first) = rates.first() {
        // Concurrent adds to one card may pass this together by at most one call's rates.
        let existing = load_rates(st, env, &first.rate_card_id).await?.len();
        check_card_capacity(existing, rates.len())?;
    }
    let now = st.now_ms();
    let ids: Vec<String> = rates.iter().map(|_| new_id()).collect();
    let bodies = rates
        .iter()
        .map(encode)
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let docs: Vec<NewDoc> = rates
        .iter()
        .zip(&ids)
        .zip(bodies)
        .map(|((r, id), body)| NewDoc {
            kind: kind::RATE,
            id,
            parent_id: Some(&r.rate_card_id),
            unique_key: None,
            created_ms: now,
            body,
        })
        .collect();
    st.stores.config.insert_docs(env, &docs).await?;
    Ok(())
}

/// Adds one rate (`addRate`) and returns it as stored.
pub async fn add_rate(st: &AppState, env: Env, card_id: &str, rate: NewRate) -> Result<RateRecord> {
    let card = get(st, env, card_id).await?;
    let record = build_rate(st, env, &card, rate).await?;
    insert_rates(st, env, std::slice::from_ref(&record)).await?;
    Ok(record)
}

/// Adds a list of rates (`addRates`), all or nothing; a refused one is named by its index.
pub async fn add_rates(st: &AppState, env: Env, card_id: &str, rates: Vec<NewRate>) -> Result<()> {
    if rates.is_empty() || rates.len() > MAX_RATES_PER_CALL {
        return Err(Invalid(format!(
            "rates must contain 1 to {MAX_RATES_PER_CALL} rates"
        ))
        .into());
    }
    let card = get(st, env, card_id).await?;
    let mut records = Vec::with_capacity(rates.len());
    for (index, input) in rates.into_iter().enumerate() {
        let r = build_rate(st, env, &card, input)
            .await
            .map_err(|e| RateCardError::AtIndex {
                index,
                source: Box::new(e),
            })?;
        records.push(r);
    }
    insert_rates(st, env, &records).await
}

/// Every rate of a rate card, in the order added (at most [`MAX_RATES_PER_CARD`]).
pub async fn load_rates(st: &AppState, env: Env, rate_card_id: &str) -> Result<Vec<RateRecord>> {
    let docs = st
        .stores
        .config
        .list_docs(
            env,
            kind::RATE,
            Some(rate_card_id),
            ArchiveFilter::All,
            None,
        )
        .await?;
    Ok(docs
        .iter()
        .map(decode)
        .collect::<std::result::Result<_, _>>()?)
}

/// Most selectors one `getRates` / `getRateSchedule` call may give.
pub const MAX_SELECTORS: usize = 100;
/// Most entries of one `product_order` or `product_moves` list (a card has at most as many
/// products as rates).
pub const MAX_ORDER_ENTRIES: usize = MAX_RATES_PER_CARD;

/// One selector of `getRates` / `getRateSchedule`: a rate matches when it meets every field
/// given (none given: every rate).
#[derive(Debug, Clone, Default)]
pub struct RateSelector {
    pub product_id: Option<String>,
    /// Any of these tags on the product (its current version).
    pub product_tags: Option<Vec<String>>,
    /// Exactly these pricing values.
    pub pricing_group_values: Option<BTreeMap<String, String>>,
    /// At least these pricing values.
    pub partial_pricing_group_values: Option<BTreeMap<String, String>>,
    pub billing_frequency: Option<BillingFrequency>,
}

impl RateSelector {
    fn matches(&self, r: &RateRecord, product: &Product) -> bool {
        self.product_id.as_ref().is_none_or(|p| *p == r.product_id)
            && self
                .product_tags
                .as_ref()
                .is_none_or(|tags| tags.iter().any(|t| product.current.tags.contains(t)))
            && self
                .pricing_group_values
                .as_ref()
                .is_none_or(|v| *v == r.pricing_group_values)
            && self.partial_pricing_group_values.as_ref().is_none_or(|v| {
                v.iter()
                    .all(|(k, val)| r.pricing_group_values.get(k) == Some(val))
            })
            && self
                .billing_frequency
                .is_none_or(|f| r.billing_frequency == Some(f))
    }
}

/// Which schedule segments a read wants.
#[derive(Debug, Clone, Copy)]
pub enum ScheduleWindow {
    /// `getRates`: the segment in effect at this instant, per product and pricing values.
    At(Time),
    /// `getRateSchedule`: every segment overlapping `[starting_at, ending_before)`.
    Range {
        starting_at: Time,
        ending_before: Option<Time>,
    },
}

impl ScheduleWindow {
    fn overlaps(&self, span: Period) -> bool {
        match *self {
            ScheduleWindow::At(t) => span.contains(t.0),
            ScheduleWindow::Range {
                starting_at,
                ending_before,
            } => span.end_ms > starting_at.0 && ending_before.is_none_or(|e| span.start_ms < e.0),
        }
    }
}

/// A card's schedule segments selected by a read, in the card's product order, then
/// `starting_at`, then the order the product's pricing values were first given a rate.
pub struct CardSchedule {
    /// The card's rates in the order added; `segments` point into it.
    pub records: Vec<RateRecord>,
    /// The products of `records`, by id.
    pub products: BTreeMap<String, Product>,
    /// `(index into records, span)` of each selected segment, in order.
    pub segments: Vec<(usize, Period)>,
}

/// The segments of a card's rate schedule that `window` and `selectors` (any of them; none:
/// all) select. O(n log n) in the card's rates (plus one read per product).
pub async fn schedule(
    st: &AppState,
    env: Env,
    card_id: &str,
    window: ScheduleWindow,
    selectors: &[RateSelector],
) -> Result<CardSchedule> {
    if selectors.len() > MAX_SELECTORS {
        return Err(Invalid(format!("selectors: at most {MAX_SELECTORS} are allowed")).into());
    }
    if let ScheduleWindow::Range {
        starting_at,
        ending_before: Some(end),
    } = window
    {
        if end.0 <= starting_at.0 {
            return Err(Invalid("ending_before must be after starting_at".into()).into());
        }
    }
    let card = get(st, env, card_id).await?;
    let records = load_rates(st, env, card_id).await?;
    let mut products = BTreeMap::new();
    for r in &records {
        if !products.contains_key(&r.product_id) {
            let product = products::get(st, env, &r.product_id).await?;
            products.insert(r.product_id.clone(), product);
        }
    }
    let rank: BTreeMap<String, usize> = card
        .effective_product_order(&records)
        .into_iter()
        .enumerate()
        .map(|(i, p)| (p, i))
        .collect();
    // Where each (product, pricing values) was first given a rate: the order within a product.
    let mut first_of_key: BTreeMap<(&str, &BTreeMap<String, String>), usize> = BTreeMap::new();
    for (i, r) in records.iter().enumerate() {
        first_of_key
            .entry((&r.product_id, &r.pricing_group_values))
            .or_insert(i);
    }
    let (indices, cores): (Vec<usize>, Vec<rating::Rate>) = records
        .iter()
        .enumerate()
        .filter_map(|(i, r)| Some((i, r.core()?)))
        .unzip();
    let mut segments: Vec<(usize, Period)> = rating::rate_schedules(&cores)
        .into_iter()
        .map(|s| (indices[s.rate], s.span))
        .filter(|&(i, span)| {
            let r = &records[i];
            window.overlaps(span)
                && products.get(&r.product_id).is_some_and(|p| {
                    selectors.is_empty() || selectors.iter().any(|s| s.matches(r, p))
                })
        })
        .collect();
    let sort_key = |&(i, span): &(usize, Period)| {
        let r = &records[i];
        let key = (r.product_id.as_str(), &r.pricing_group_values);
        (
            rank.get(&r.product_id).copied().unwrap_or(usize::MAX),
            span.start_ms,
            first_of_key.get(&key).copied().unwrap_or(i),
        )
    };
    segments.sort_by_cached_key(sort_key);
    Ok(CardSchedule {
        records,
        products,
        segments,
    })
}

/// `setRateCardProductsOrder`: the products named first, in that order, the rest after in
/// their previous relative order. A product not on the card, or named twice, is a 400 naming
/// it, and nothing changes.
pub async fn set_products_order(
    st: &AppState,
    env: Env,
    card_id: &str,
    product_order: Vec<String>,
) -> Result<()> {
    check_order_entries("product_order", product_order.len())?;
    reorder(st, env, card_id, |current| {
        product_order::set_order(current, &product_order)
    })
    .await
}

/// `moveRateCardProducts`: each product moved to its 0-based position, one move after the
/// other in the order given. A product not on the card or a position past the last one is a
/// 400 naming it, and nothing changes.
pub async fn move_products(
    st: &AppState,
    env: Env,
    card_id: &str,
    moves: Vec<ProductMove>,
) -> Result<()> {
    check_order_entries("product_moves", moves.len())?;
    reorder(st, env, card_id, |current| {
        product_order::apply_moves(current, &moves)
    })
    .await
}

fn check_order_entries(field: &str, len: usize) -> std::result::Result<(), Invalid> {
    match len <= MAX_ORDER_ENTRIES {
        true => Ok(()),
        false => Err(Invalid(format!(
            "{field}: at most {MAX_ORDER_ENTRIES} entries are allowed"
        ))),
    }
}

/// Read-modify-write of a card's product order (retried on a concurrent change of the card).
/// The rates are read once: rates are never removed, and a product whose first rate lands
/// after this read is simply not in the order this change stores, so it stays last.
async fn reorder<F>(st: &AppState, env: Env, card_id: &str, change: F) -> Result<()>
where
    F: Fn(&[String]) -> std::result::Result<Vec<String>, product_order::OrderError>,
{
    get(st, env, card_id).await?;
    let rates = load_rates(st, env, card_id).await?;
    modify_doc(
        st,
        env,
        kind::RATE_CARD,
        card_id,
        "rate card",
        |card: &mut RateCard| {
            let current = card.effective_product_order(&rates);
            let next = change(&current).map_err(|e| Invalid(e.to_string()))?;
            if next == current {
                return Ok::<_, RateCardError>(Write::Unchanged);
            }
            card.product_order = next;
            Ok(Write::Save {
                archived: card.archived_at.is_some(),
            })
        },
    )
    .await?;
    Ok(())
}

pub async fn get(st: &AppState, env: Env, id: &str) -> Result<RateCard> {
    Ok(load(&st.stores, env, kind::RATE_CARD, id, "rate card").await?)
}

/// The fields `rate-cards/update` may change (absent ones are kept).
pub struct CardChange {
    pub name: Option<String>,
    pub description: Option<String>,
    pub aliases: Option<Vec<RateCardAlias>>,
    /// Custom pricing units to add (`credit_types::add_conversions`; existing ones immutable).
    pub add_credit_type_conversions: Vec<ConversionInput>,
}

/// Applies a change to a card, retried on a concurrent change of the same card. The card's
/// alias index changes in the same transaction as its document.
pub async fn update(st: &AppState, env: Env, id: &str, change: CardChange) -> Result<()> {
    if let Some(name) = &change.name {
        require_text("name", name, 256)?;
    }
    if let Some(aliases) = &change.aliases {
        check_aliases(aliases)?;
    }
    let change = &change;
    retry_conflicts(move || async move {
        let doc = st.stores.config.get_doc(env, kind::RATE_CARD, id).await?;
        let doc = doc.ok_or(RateCardError::NotFound("rate card"))?;
        let mut card: RateCard = decode(&doc)?;
        if let Some(name) = &change.name {
            card.name = name.clone();
        }
        if let Some(d) = &change.description {
            card.description = Some(d.clone());
        }
        if let Some(aliases) = &change.aliases {
            card.assign_aliases(aliases.clone(), st.now_ms());
        }
        let adding = change.add_credit_type_conversions.clone();
        card.credit_type_conversions = credit_types::add_conversions(
            st,
            env,
            "add_credit_type_conversions",
            &card.credit_type_conversions,
            adding,
        )
        .await?;
        let names = alias_names(&card);
        let written = st
            .stores
            .config
            .update_rate_card(env, id, &encode(&card)?, doc.version, &names)
            .await;
        Ok(lost_race_is_false(written)?.then_some(()))
    })
    .await
}

/// The alias names a card's document holds, as the alias index keeps them.
pub fn alias_names(card: &RateCard) -> Vec<String> {
    card.aliases.iter().map(|a| a.name.clone()).collect()
}

/// Archives a card (idempotent).
pub async fn archive(st: &AppState, env: Env, id: &str) -> Result<()> {
    let now = Time(st.now_ms());
    modify_doc(
        st,
        env,
        kind::RATE_CARD,
        id,
        "rate card",
        |card: &mut RateCard| {
            if card.archived_at.is_some() {
                return Ok::<_, RateCardError>(Write::Unchanged);
            }
            card.archived_at = Some(now);
            Ok(Write::Save { archived: true })
        },
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::MAX_PRICE_ABS;

    #[test]
    fn the_price_limit_is_ten_to_the_twelfth() {
        assert_eq!(
            MAX_PRICE_ABS,
            rust_decimal::Decimal::from(1_000_000_000_000_i64)
        );
    }
}
