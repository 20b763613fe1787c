//! `/v1/contract-pricing/rate-cards/*`: rate cards, their rates and rate schedules (`getRates`,
//! `getRateSchedule`, offset cursors reusable with the same filters) and their product order
//! (`setRateCardProductsOrder`, `moveRateCardProducts`); the wire side of `service::rate_cards`.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::routing::post;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiResult;
use super::from_value;
use super::rate_wire::Selector;
use super::Routes;
use super::{
    decode_cursor, id_response, keyset_page, offset_range, page_from_query, page_limit, Body,
    Caller, QueryMap, MAX_PAGE_SIZE,
};
use crate::model::{BillingFrequency, Product, RateCardAlias, RateRecord, RateType, WireTier};
use crate::service::credit_types::ConversionInput;
use crate::service::rate_cards::{self, CardChange, NewRate, NewRateCard, ScheduleWindow};
use crate::store::Env;
use crate::wire::{set_opt, Dec, Time};
use crate::AppState;
use tally_core::period::Period;
use tally_core::product_order::ProductMove;

pub fn routes() -> Routes {
    Routes::new()
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
        .route(
            "/v1/contract-pricing/rate-cards/getRateSchedule",
            post(get_rate_schedule),
        )
        .route(
            "/v1/contract-pricing/rate-cards/setRateCardProductsOrder",
            post(set_products_order),
        )
        .route(
            "/v1/contract-pricing/rate-cards/moveRateCardProducts",
            post(move_products),
        )
}

#[derive(Deserialize)]
struct CreateRateCard {
    name: String,
    description: Option<String>,
    #[serde(default)]
    aliases: Vec<RateCardAlias>,
    fiat_credit_type_id: Option<String>,
    #[serde(default)]
    credit_type_conversions: Vec<ConversionInput>,
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
    add_credit_type_conversions: Vec<ConversionInput>,
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
    quantity: Option<Dec>,
    is_prorated: Option<bool>,
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
            quantity: self.quantity,
            is_prorated: self.is_prorated,
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
    let window = ScheduleWindow::At(req.at);
    schedule_page(&st, env, &q, &req.rate_card_id, window, req.selectors).await
}

#[derive(Deserialize)]
struct GetRateScheduleReq {
    rate_card_id: String,
    starting_at: Time,
    ending_before: Option<Time>,
    #[serde(default)]
    selectors: Vec<Selector>,
}

async fn get_rate_schedule(
    State(st): State<AppState>,
    Caller(env): Caller,
    q: QueryMap,
    Body(req): Body<GetRateScheduleReq>,
) -> ApiResult<Json<Value>> {
    let window = ScheduleWindow::Range {
        starting_at: req.starting_at,
        ending_before: req.ending_before,
    };
    schedule_page(&st, env, &q, &req.rate_card_id, window, req.selectors).await
}

/// One offset page of a card's selected schedule segments; only the page's items are rendered.
async fn schedule_page(
    st: &AppState,
    env: Env,
    q: &QueryMap,
    card_id: &str,
    window: ScheduleWindow,
    selectors: Vec<Selector>,
) -> ApiResult<Json<Value>> {
    let limit = page_limit(q.one("limit"), MAX_PAGE_SIZE)?;
    let offset = decode_cursor(q.one("next_page"))?;
    let selectors = Selector::domain_all(selectors);
    let found = rate_cards::schedule(st, env, card_id, window, &selectors).await?;
    let (range, next) = offset_range(found.segments.len(), offset, limit);
    let items: Vec<Value> = found.segments[range]
        .iter()
        .filter_map(|&(i, span)| {
            let record = &found.records[i];
            let product = found.products.get(&record.product_id)?;
            Some(schedule_item(record, product, span))
        })
        .collect();
    Ok(Json(json!({ "data": items, "next_page": next })))
}

/// A `getRates` / `getRateSchedule` item: one schedule segment of one rate.
fn schedule_item(r: &RateRecord, product: &Product, span: Period) -> Value {
    let mut item = json!({
        "product_id": r.product_id,
        "product_name": product.current.name,
        "product_tags": product.current.tags,
        "product_custom_fields": product.custom_fields,
        "entitled": r.entitled,
        "rate": r.rate_json(),
        "starting_at": Time(span.start_ms),
    });
    // An open-ended segment has no `ending_before` (optional, non-nullable upstream).
    let ending = (span.end_ms != i64::MAX).then_some(Time(span.end_ms));
    set_opt(&mut item, "ending_before", ending);
    if !r.pricing_group_values.is_empty() {
        item["pricing_group_values"] = json!(r.pricing_group_values);
    }
    if let Some(f) = r.billing_frequency {
        item["billing_frequency"] = json!(f);
    }
    set_opt(&mut item, "commit_rate", r.commit_rate.as_ref());
    item
}

#[derive(Deserialize)]
struct SetOrderReq {
    rate_card_id: String,
    product_order: Vec<String>,
}

async fn set_products_order(
    State(st): State<AppState>,
    Caller(env): Caller,
    Body(req): Body<SetOrderReq>,
) -> ApiResult<Json<Value>> {
    rate_cards::set_products_order(&st, env, &req.rate_card_id, req.product_order).await?;
    Ok(id_response(&req.rate_card_id))
}

#[derive(Deserialize)]
struct MoveReq {
    rate_card_id: String,
    product_moves: Vec<MoveInput>,
}

#[derive(Deserialize)]
struct MoveInput {
    product_id: String,
    /// 0-based; a negative or fractional number is refused by the body extractor (400).
    position: u64,
}

async fn move_products(
    State(st): State<AppState>,
    Caller(env): Caller,
    Body(req): Body<MoveReq>,
) -> ApiResult<Json<Value>> {
    let moves = req
        .product_moves
        .into_iter()
        .map(|m| ProductMove {
            product_id: m.product_id,
            position: m.position,
        })
        .collect();
    rate_cards::move_products(&st, env, &req.rate_card_id, moves).await?;
    Ok(id_response(&req.rate_card_id))
}
