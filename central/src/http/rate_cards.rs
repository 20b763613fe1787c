//! `/v1/contract-pricing/rate-cards/*`: rate cards and their rate schedules.

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tally_core::rate;
use tally_core::rating::Tier;

use super::error::{ApiError, ApiResult};
use super::from_value;
use super::{
    decode_cursor, id_response, keyset_page, offset_page, page_from_query, page_limit,
    require_hour, require_text, Body, Caller, QueryMap, MAX_PAGE_SIZE,
};
use crate::model::{
    credit_type, decode, encode, kind, new_id, BillingFrequency, Product, RateCard, RateCardAlias,
    RateRecord, RateType, WireTier, CREATED_BY,
};
use crate::service::products;
use crate::service::rate_cards::{self, CardChange};
use crate::store::{ArchiveFilter, Env, NewDoc, PageReq};
use crate::wire::{set_opt, Dec, Time};
use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/contract-pricing/rate-cards/create", post(create))
        .route("/v1/contract-pricing/rate-cards/get", post(retrieve))
        .route("/v1/contract-pricing/rate-cards/list", post(list))
        .route("/v1/contract-pricing/rate-cards/update", post(update))
        .route("/v1/contract-pricing/rate-cards/archive", post(archive))
        .route("/v1/contract-pricing/rate-cards/addRate", post(add_rate))
        // The seed's spelling of addRate.
        .route("/v1/contract-pricing/rate-cards/rates/add", post(add_rate))
        .route("/v1/contract-pricing/rate-cards/addRates", post(add_rates))
        .route("/v1/contract-pricing/rate-cards/getRates", post(get_rates))
}

#[derive(Deserialize)]
struct CreateRateCard {
    name: String,
    description: Option<String>,
    #[serde(default)]
    aliases: Vec<RateCardAlias>,
    fiat_credit_type_id: Option<String>,
    #[serde(default)]
    credit_type_conversions: Vec<Value>,
    #[serde(default)]
    custom_fields: BTreeMap<String, String>,
}

async fn create(
    State(st): State<AppState>,
    Caller(env): Caller,
    Body(req): Body<CreateRateCard>,
) -> ApiResult<Json<Value>> {
    require_text("name", &req.name, 256)?;
    rate_cards::check_aliases(&req.aliases)?;
    if !req.credit_type_conversions.is_empty() {
        return Err(ApiError::bad_request(
            "custom pricing units (credit_type_conversions) are not supported yet",
        ));
    }
    let now = st.now_ms();
    let mut card = RateCard {
        id: new_id(),
        name: req.name,
        description: req.description,
        aliases: Vec::new(),
        fiat_credit_type: credit_type(req.fiat_credit_type_id.as_deref())?,
        credit_type_conversions: Vec::new(),
        created_at: Time(now),
        created_by: CREATED_BY.into(),
        custom_fields: req.custom_fields,
        archived_at: None,
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
    let names = rate_cards::alias_names(&card);
    st.stores.config.insert_rate_card(env, doc, &names).await?;
    Ok(id_response(&card.id))
}

async fn load_rate_card(st: &AppState, env: Env, id: &str) -> ApiResult<RateCard> {
    Ok(rate_cards::get(st, env, id).await?)
}

#[derive(Deserialize)]
struct GetReq {
    id: String,
}

async fn retrieve(
    State(st): State<AppState>,
    Caller(env): Caller,
    Body(req): Body<GetReq>,
) -> ApiResult<Json<Value>> {
    let card = load_rate_card(&st, env, &req.id).await?;
    Ok(Json(json!({ "data": card.api_json() })))
}

async fn list(
    State(st): State<AppState>,
    Caller(env): Caller,
    q: QueryMap,
    Body(_): Body<Value>,
) -> ApiResult<Json<Value>> {
    let page = page_from_query(&q)?;
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
    let items = docs
        .iter()
        .map(|d| Ok((d.seq, decode::<RateCard>(d)?.api_json())))
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(keyset_page(items, page.limit))
}

#[derive(Deserialize)]
struct UpdateReq {
    rate_card_id: String,
    name: Option<String>,
    description: Option<String>,
    aliases: Option<Vec<RateCardAlias>>,
    #[serde(default)]
    add_credit_type_conversions: Vec<Value>,
}

async fn update(
    State(st): State<AppState>,
    Caller(env): Caller,
    Body(req): Body<UpdateReq>,
) -> ApiResult<Json<Value>> {
    if !req.add_credit_type_conversions.is_empty() {
        return Err(ApiError::bad_request(
            "custom pricing units (credit_type_conversions) are not supported yet",
        ));
    }
    let change = CardChange {
        name: req.name,
        description: req.description,
        aliases: req.aliases,
    };
    rate_cards::update(&st, env, &req.rate_card_id, change).await?;
    Ok(id_response(&req.rate_card_id))
}

async fn archive(
    State(st): State<AppState>,
    Caller(env): Caller,
    Body(req): Body<GetReq>,
) -> ApiResult<Json<Value>> {
    rate_cards::archive(&st, env, &req.id).await?;
    Ok(id_response(&req.id))
}

/// One rate as sent to addRate / addRates.
#[derive(Deserialize)]
struct RateInput {
    product_id: String,
    starting_at: Time,
    ending_before: Option<Time>,
    entitled: bool,
    rate_type: RateType,
    price: Option<Dec>,
    tiers: Option<Vec<WireTier>>,
    #[serde(default)]
    pricing_group_values: BTreeMap<String, String>,
    credit_type_id: Option<String>,
    billing_frequency: Option<BillingFrequency>,
    commit_rate: Option<Value>,
}

#[derive(Deserialize)]
struct AddRateReq {
    rate_card_id: String,
}

/// Validates one rate against its product and returns the record to store.
async fn build_rate(
    st: &AppState,
    env: Env,
    card: &RateCard,
    input: RateInput,
) -> ApiResult<RateRecord> {
    require_hour("starting_at", input.starting_at)?;
    if let Some(end) = input.ending_before {
        require_hour("ending_before", end)?;
    }
    rate::check_window(input.starting_at.0, input.ending_before.map(|t| t.0)).map_err(bad_rate)?;
    let product = products::get(st, env, &input.product_id).await?;
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
        credit_type: credit_type(input.credit_type_id.as_deref())?,
        billing_frequency: input.billing_frequency,
        commit_rate: input.commit_rate,
    };
    let tier_prices: Vec<_> = record.tiers.iter().flatten().map(|t| t.price.0).collect();
    rate_cards::check_rate_limits(record.price.map(|p| p.0), &tier_prices)?;
    check_price(&record)?;
    check_pricing_values(&product, &record)?;
    Ok(record)
}

/// The rate's price as core checks it (type, price, tiers).
fn check_price(r: &RateRecord) -> ApiResult<()> {
    let tiers = r.tiers.as_ref().map(|ts| {
        ts.iter()
            .map(|t| Tier {
                price: t.price.0,
                size: t.size.map(|s| s.0),
            })
            .collect()
    });
    rate::rate_price(r.rate_type.core(), r.price.map(|p| p.0), tiers)
        .map(|_| ())
        .map_err(bad_rate)
}

fn check_pricing_values(product: &Product, r: &RateRecord) -> ApiResult<()> {
    let state = product.state_at(r.starting_at.0);
    rate::check_pricing_values(state.pricing_group_key.as_deref(), &r.pricing_group_values)
        .map_err(bad_rate)
}

fn bad_rate(e: rate::RateError) -> ApiError {
    ApiError::bad_request(e.to_string())
}

async fn insert_rates(st: &AppState, env: Env, rates: &[RateRecord]) -> ApiResult<()> {
    if let Some(first) = rates.first() {
        // Concurrent adds to one card may pass this together by at most one call's rates.
        let existing = load_rates(st, env, &first.rate_card_id).await?.len();
        rate_cards::check_card_capacity(existing, rates.len())?;
    }
    let now = st.now_ms();
    let ids: Vec<String> = rates.iter().map(|_| new_id()).collect();
    let bodies = rates.iter().map(encode).collect::<Result<Vec<_>, _>>()?;
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

async fn add_rate(
    State(st): State<AppState>,
    Caller(env): Caller,
    Body(body): Body<Value>,
) -> ApiResult<Json<Value>> {
    // addRate is one rate plus its card id; both read the same body (unknown fields ignored).
    let req: AddRateReq = from_value(body.clone())?;
    let rate: RateInput = from_value(body)?;
    let card = load_rate_card(&st, env, &req.rate_card_id).await?;
    let record = build_rate(&st, env, &card, rate).await?;
    insert_rates(&st, env, std::slice::from_ref(&record)).await?;
    let mut data = record.rate_json();
    if let Some(c) = &record.commit_rate {
        data["commit_rate"] = c.clone();
    }
    Ok(Json(json!({ "data": data })))
}

#[derive(Deserialize)]
struct AddRatesReq {
    rate_card_id: String,
    rates: Vec<RateInput>,
}

/// Most rates accepted by one addRates call.
const MAX_RATES_PER_CALL: usize = 1_000;

async fn add_rates(
    State(st): State<AppState>,
    Caller(env): Caller,
    Body(req): Body<AddRatesReq>,
) -> ApiResult<Json<Value>> {
    if req.rates.is_empty() || req.rates.len() > MAX_RATES_PER_CALL {
        return Err(ApiError::bad_request(format!(
            "rates must contain 1 to {MAX_RATES_PER_CALL} rates"
        )));
    }
    let card = load_rate_card(&st, env, &req.rate_card_id).await?;
    let mut records = Vec::with_capacity(req.rates.len());
    for (i, input) in req.rates.into_iter().enumerate() {
        let r = build_rate(&st, env, &card, input)
            .await
            .map_err(|e| ApiError::new(e.status, format!("rates[{i}]: {}", e.message)))?;
        records.push(r);
    }
    // All or nothing: one transaction for the whole list.
    insert_rates(&st, env, &records).await?;
    Ok(id_response(&card.id))
}

/// Every rate of a rate card, in the order added.
pub async fn load_rates(st: &AppState, env: Env, rate_card_id: &str) -> ApiResult<Vec<RateRecord>> {
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
    Ok(docs.iter().map(decode).collect::<Result<_, _>>()?)
}

#[derive(Deserialize, Default)]
struct Selector {
    product_id: Option<String>,
    product_tags: Option<Vec<String>>,
    pricing_group_values: Option<BTreeMap<String, String>>,
    partial_pricing_group_values: Option<BTreeMap<String, String>>,
}

impl Selector {
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
    }
}

#[derive(Deserialize)]
struct GetRatesReq {
    rate_card_id: String,
    at: Time,
    #[serde(default)]
    selectors: Vec<Selector>,
}

async fn get_rates(
    State(st): State<AppState>,
    Caller(env): Caller,
    q: QueryMap,
    Body(req): Body<GetRatesReq>,
) -> ApiResult<Json<Value>> {
    let limit = page_limit(q.one("limit"), MAX_PAGE_SIZE)?;
    let offset = decode_cursor(q.one("next_page"))?;
    load_rate_card(&st, env, &req.rate_card_id).await?;
    let records = load_rates(&st, env, &req.rate_card_id).await?;
    let cores: Vec<tally_core::rating::Rate> =
        records.iter().filter_map(RateRecord::core).collect();
    let mut products: BTreeMap<String, Product> = BTreeMap::new();
    let mut items = Vec::new();
    let mut seen = BTreeSet::new();
    for r in &records {
        if !seen.insert((r.product_id.clone(), r.pricing_group_values.clone())) {
            continue;
        }
        let schedule =
            tally_core::rating::rate_schedule(&cores, &r.product_id, &r.pricing_group_values);
        let Some((span, _)) = schedule
            .iter()
            .find(|(p, _)| p.start_ms <= req.at.0 && req.at.0 < p.end_ms)
        else {
            continue;
        };
        // Find the record behind the active span (same product, values and start).
        let Some(active) = records.iter().rev().find(|x| {
            x.product_id == r.product_id
                && x.pricing_group_values == r.pricing_group_values
                && x.starting_at.0 == span.start_ms
        }) else {
            continue;
        };
        if !products.contains_key(&active.product_id) {
            products.insert(
                active.product_id.clone(),
                products::get(&st, env, &active.product_id).await?,
            );
        }
        let product = &products[&active.product_id];
        if !req.selectors.is_empty() && !req.selectors.iter().any(|s| s.matches(active, product)) {
            continue;
        }
        let ending = (span.end_ms != i64::MAX).then_some(Time(span.end_ms));
        let mut item = json!({
            "product_id": active.product_id,
            "product_name": product.current.name,
            "product_tags": product.current.tags,
            "product_custom_fields": product.custom_fields,
            "entitled": active.entitled,
            "rate": active.rate_json(),
            "starting_at": Time(span.start_ms),
        });
        // An open-ended rate has no `ending_before` (optional, non-nullable upstream).
        set_opt(&mut item, "ending_before", ending);
        if !active.pricing_group_values.is_empty() {
            item["pricing_group_values"] = json!(active.pricing_group_values);
        }
        if let Some(f) = active.billing_frequency {
            item["billing_frequency"] = json!(f);
        }
        items.push(item);
    }
    Ok(offset_page(items, offset, limit, "next_page"))
}
