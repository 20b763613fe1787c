//! `/v1/contract-pricing/products/*`: create, get, list, update (time-versioned), archive.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::Value;
use tally_core::product;

use super::error::{ApiError, ApiResult};
use super::{
    id_response, keyset_page, page_from_query, require_hour, require_text, Body, Caller, QueryMap,
};
use crate::model::{
    decode, double_option, encode, kind, load, new_id, Metric, Product, ProductState, ProductType,
    ProductUpdate, QuantityConversion, QuantityRounding, CREATED_BY,
};
use crate::store::{ArchiveFilter, Env, NewDoc, PageReq};
use crate::wire::Time;
use crate::{wire_enum, AppState};

pub fn routes() -> Router<AppState> {
    Router::new()
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
    #[serde(default)]
    custom_fields: BTreeMap<String, String>,
}

/// Checks a usage product's rating attributes against its metric (the rules are core's).
/// `new_metric`: the metric is being attached now, so an archived one is refused.
async fn check_usage_state(
    st: &AppState,
    env: Env,
    state: &ProductState,
    new_metric: bool,
) -> ApiResult<()> {
    let attrs = state.attrs();
    let metric_id = product::required_metric(&attrs).map_err(bad_product)?;
    let metric: Metric = load(&st.stores, env, kind::METRIC, metric_id, "billable metric").await?;
    product::check_usage_attrs(
        &attrs,
        &metric.def(),
        metric.archived_at.is_some(),
        new_metric,
    )
    .map_err(bad_product)
}

fn bad_product(e: product::ProductError) -> ApiError {
    ApiError::bad_request(e.to_string())
}

async fn create(
    State(st): State<AppState>,
    Caller(env): Caller,
    Body(req): Body<CreateProduct>,
) -> ApiResult<Json<Value>> {
    require_text("name", &req.name, 256)?;
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
        starting_at: None,
    };
    if req.product_type == ProductType::Usage {
        check_usage_state(&st, env, &state, true).await?;
    }
    let product = Product {
        id: new_id(),
        product_type: req.product_type,
        current: state.clone(),
        initial: state,
        updates: Vec::new(),
        archived_at: None,
        custom_fields: req.custom_fields,
    };
    let doc = NewDoc {
        kind: kind::PRODUCT,
        id: &product.id,
        parent_id: None,
        unique_key: None,
        created_ms: now.0,
        body: encode(&product)?,
    };
    st.stores.config.insert_docs(env, &[doc]).await?;
    Ok(id_response(&product.id))
}

pub async fn load_product(st: &AppState, env: Env, id: &str) -> ApiResult<Product> {
    let product: Product = load(&st.stores, env, kind::PRODUCT, id, "product").await?;
    Ok(product.with_current(st.now_ms()))
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
    let product = load_product(&st, env, &req.id).await?;
    Ok(Json(serde_json::json!({ "data": product })))
}

wire_enum!(ArchiveFilterIn { Archived => "ARCHIVED", NotArchived => "NOT_ARCHIVED", All => "ALL" });

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
    let filter = match req.archive_filter {
        None | Some(ArchiveFilterIn::NotArchived) => ArchiveFilter::Active,
        Some(ArchiveFilterIn::Archived) => ArchiveFilter::Archived,
        Some(ArchiveFilterIn::All) => ArchiveFilter::All,
    };
    let fetch = PageReq {
        after: page.after,
        limit: page.limit + 1,
    };
    let docs = st
        .stores
        .config
        .list_docs(env, kind::PRODUCT, None, filter, Some(fetch))
        .await?;
    let now = st.now_ms();
    let items = docs
        .iter()
        .map(|d| {
            let p = decode::<Product>(d)?.with_current(now);
            Ok((d.seq, serde_json::to_value(p).map_err(ApiError::internal)?))
        })
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
}

async fn update(
    State(st): State<AppState>,
    Caller(env): Caller,
    Body(req): Body<UpdateReq>,
) -> ApiResult<Json<Value>> {
    require_hour("starting_at", req.starting_at)?;
    if let Some(name) = &req.name {
        require_text("name", name, 256)?;
    }
    let mut product = load_product(&st, env, &req.product_id).await?;
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
    };
    let new_metric = u.billable_metric_id.is_some();
    product.updates.push(u);
    if product.product_type == ProductType::Usage {
        // Every version from the update on must still be rateable.
        check_usage_state(&st, env, &product.state_at(req.starting_at.0), new_metric).await?;
        check_usage_state(&st, env, &product.state_at(i64::MAX), new_metric).await?;
    }
    let product = product.with_current(st.now_ms());
    st.stores
        .config
        .update_doc(
            env,
            kind::PRODUCT,
            &product.id,
            &encode(&product)?,
            product.archived_at.is_some(),
        )
        .await?;
    Ok(id_response(&product.id))
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
    let mut product = load_product(&st, env, &req.product_id).await?;
    if product.archived_at.is_none() {
        product.archived_at = Some(Time(st.now_ms()));
        st.stores
            .config
            .update_doc(env, kind::PRODUCT, &product.id, &encode(&product)?, true)
            .await?;
    }
    Ok(id_response(&product.id))
}
