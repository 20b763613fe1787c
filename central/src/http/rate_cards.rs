//! `/v1/contract-pricing/rate-cards/*`: rate cards and their rate schedules; the wire side of
//! `service::rate_cards`.

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiResult;
use super::from_value;
use super::{
    decode_cursor, id_response, keyset_page, offset_page, page_from_query, page_limit, Body,
    Caller, QueryMap, MAX_PAGE_SIZE,
};
use crate::model::{BillingFrequency, Product, RateCardAlias, RateRecord, RateType, WireTier};
use crate::service::rate_cards::{self, CardChange, NewRate, NewRateCard};
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
    let new = NewRateCard {
        name: req.name,
        description: req.description,
        aliases: req.aliases,
        fiat_credit_type_id: req.fiat_credit_type_id,
        credit_type_conversions: req.credit_type_conversions,
        custom_fields: req.custom_fields,
    };
    Ok(id_response(&rate_cards::create(&st, env, new).await?))
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
    let card = rate_cards::get(&st, env, &req.id).await?;
    Ok(Json(json!({ "data": card.api_json() })))
}

async fn list(
    State(st): State<AppState>,
    Caller(env): Caller,
    q: QueryMap,
    Body(_): Body<Value>,
) -> ApiResult<Json<Value>> {
    let page = page_from_query(&q)?;
    let items = rate_cards::list(&st, env, page)
        .await?
        .into_iter()
        .map(|(seq, card)| (seq, card.api_json()))
        .collect();
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
    let change = CardChange {
        name: req.name,
        description: req.description,
        aliases: req.aliases,
        add_credit_type_conversions: req.add_credit_type_conversions,
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

impl RateInput {
    fn domain(self) -> NewRate {
        NewRate {
            product_id: self.product_id,
            starting_at: self.starting_at,
            ending_before: self.ending_before,
            entitled: self.entitled,
            rate_type: self.rate_type,
            price: self.price,
            tiers: self.tiers,
            pricing_group_values: self.pricing_group_values,
            credit_type_id: self.credit_type_id,
            billing_frequency: self.billing_frequency,
            commit_rate: self.commit_rate,
        }
    }
}

async fn add_rate(
    State(st): State<AppState>,
    Caller(env): Caller,
    Body(body): Body<Value>,
) -> ApiResult<Json<Value>> {
    // addRate is one rate plus its card id; both read the same body (unknown fields ignored).
    let req: AddRateReq = from_value(body.clone())?;
    let rate: RateInput = from_value(body)?;
    let record = rate_cards::add_rate(&st, env, &req.rate_card_id, rate.domain()).await?;
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

async fn add_rates(
    State(st): State<AppState>,
    Caller(env): Caller,
    Body(req): Body<AddRatesReq>,
) -> ApiResult<Json<Value>> {
    let rates = req.rates.into_iter().map(RateInput::domain).collect();
    rate_cards::add_rates(&st, env, &req.rate_card_id, rates).await?;
    Ok(id_response(&req.rate_card_id))
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
    let (records, products) = rate_cards::rates_with_products(&st, env, &req.rate_card_id).await?;
    let cores: Vec<tally_core::rating::Rate> =
        records.iter().filter_map(RateRecord::core).collect();
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
        let Some(product) = products.get(&active.product_id) else {
            continue;
        };
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
