//! `/v1/contract-pricing/products/*`: create, get, list, update (time-versioned), archive; the
//! wire side of `service::products`.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::routing::post;
use axum::Json;
use serde::Deserialize;
use serde_json::Value;

use super::error::{ApiError, ApiResult};
use super::Routes;
use super::{id_response, keyset_page, page_from_query, ArchiveFilterIn, Body, Caller, QueryMap};
use crate::model::{
    double_option, ProductState, ProductType, ProductUpdate, QuantityConversion, QuantityRounding,
    CREATED_BY,
};
use crate::service::products::{self, NewProduct};
use crate::wire::Time;
use crate::AppState;

pub fn routes() -> Routes {
    Routes::new()
        .route("/v1/contract-pricing/products/create", post(create))
        .route("/v1/contract-pricing/products/get", post(retrieve))
        .route("/v1/contract-pricing/products/list", post(list))
        .route("/v1/contract-pricing/products/update", post(update))
        .route("/v1/contract-pricing/products/archive", post(archive))
}

#[derive(Deserialize)]
struct CreateProduct {
    name: String,
    #[serde(rename = "type")]
    product_type: ProductType,
    billable_metric_id: Option<String>,
    pricing_group_key: Option<Vec<String>>,
    presentation_group_key: Option<Vec<String>>,
    quantity_conversion: Option<QuantityConversion>,
    quantity_rounding: Option<QuantityRounding>,
    #[serde(default)]
    tags: Vec<String>,
    is_refundable: Option<bool>,
    composite_product_ids: Option<Vec<String>>,
    composite_tags: Option<Vec<String>>,
    exclude_free_usage: Option<bool>,
    include_composite_spend: Option<bool>,
    #[serde(default)]
    custom_fields: BTreeMap<String, String>,
}

async fn create(
    State(st): State<AppState>,
    Caller(env): Caller,
    Body(req): Body<CreateProduct>,
) -> ApiResult<Json<Value>> {
    let now = Time(st.now_ms());
    let state = ProductState {
        created_at: now,
        created_by: CREATED_BY.into(),
        name: req.name,
        billable_metric_id: req.billable_metric_id,
        pricing_group_key: req.pricing_group_key,
        presentation_group_key: req.presentation_group_key,
        quantity_conversion: req.quantity_conversion,
        quantity_rounding: req.quantity_rounding,
        tags: req.tags,
        is_refundable: req.is_refundable,
        composite_product_ids: req.composite_product_ids,
        composite_tags: req.composite_tags,
        exclude_free_usage: req.exclude_free_usage,
        starting_at: None,
    };
    products::refuse_composite_spend(req.include_composite_spend)?;
    let new = NewProduct {
        product_type: req.product_type,
        state,
        custom_fields: req.custom_fields,
    };
    Ok(id_response(&products::create(&st, env, new).await?))
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
    let product = products::get(&st, env, &req.id).await?;
    Ok(Json(serde_json::json!({ "data": product })))
}

#[derive(Deserialize)]
struct ListReq {
    archive_filter: Option<ArchiveFilterIn>,
}

async fn list(
    State(st): State<AppState>,
    Caller(env): Caller,
    q: QueryMap,
    Body(req): Body<ListReq>,
) -> ApiResult<Json<Value>> {
    let page = page_from_query(&q)?;
    let filter = ArchiveFilterIn::filter(req.archive_filter);
    let items = products::list(&st, env, filter, page)
        .await?
        .into_iter()
        .map(|(seq, p)| Ok((seq, serde_json::to_value(p).map_err(ApiError::internal)?)))
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(keyset_page(items, page.limit))
}

#[derive(Deserialize)]
struct UpdateReq {
    product_id: String,
    starting_at: Time,
    name: Option<String>,
    billable_metric_id: Option<String>,
    pricing_group_key: Option<Vec<String>>,
    presentation_group_key: Option<Vec<String>>,
    #[serde(default, with = "double_option")]
    quantity_conversion: Option<Option<QuantityConversion>>,
    #[serde(default, with = "double_option")]
    quantity_rounding: Option<Option<QuantityRounding>>,
    tags: Option<Vec<String>>,
    is_refundable: Option<bool>,
    composite_product_ids: Option<Vec<String>>,
    composite_tags: Option<Vec<String>>,
    exclude_free_usage: Option<bool>,
    include_composite_spend: Option<bool>,
}

async fn update(
    State(st): State<AppState>,
    Caller(env): Caller,
    Body(req): Body<UpdateReq>,
) -> ApiResult<Json<Value>> {
    let u = ProductUpdate {
        created_at: Time(st.now_ms()),
        created_by: CREATED_BY.into(),
        starting_at: req.starting_at,
        name: req.name,
        billable_metric_id: req.billable_metric_id,
        pricing_group_key: req.pricing_group_key,
        presentation_group_key: req.presentation_group_key,
        quantity_conversion: req.quantity_conversion,
        quantity_rounding: req.quantity_rounding,
        tags: req.tags,
        is_refundable: req.is_refundable,
        composite_product_ids: req.composite_product_ids,
        composite_tags: req.composite_tags,
        exclude_free_usage: req.exclude_free_usage,
    };
    products::refuse_composite_spend(req.include_composite_spend)?;
    products::update(&st, env, &req.product_id, u).await?;
    Ok(id_response(&req.product_id))
}

#[derive(Deserialize)]
struct ArchiveReq {
    product_id: String,
}

async fn archive(
    State(st): State<AppState>,
    Caller(env): Caller,
    Body(req): Body<ArchiveReq>,
) -> ApiResult<Json<Value>> {
    products::archive(&st, env, &req.product_id).await?;
    Ok(id_response(&req.product_id))
}
