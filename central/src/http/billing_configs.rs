//! Customers' billing-provider and revenue-system configurations:
//! `/v1/{set,get,archive}CustomerBillingProviderConfigurations`,
//! `/v1/getCustomerRevenueSystemConfigurations` and the legacy
//! `GET/POST/DELETE /v1/customers/{customer_id}/billing-config/{billing_provider_type}`. Wire side
//! only; the rules are `service::billing_configs`.

use axum::body::Body as HttpBody;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::config_wire::{BillingProviderReq, LegacyBillingReq};
use super::error::{ApiError, ApiResult};
use super::Routes;
use super::{Body, Caller};
use crate::model::{BillingProvider, RevenueSystemProvider};
use crate::service::billing_configs;
use crate::AppState;

pub fn routes() -> Routes {
    Routes::new()
        .route(
            "/v1/setCustomerBillingProviderConfigurations",
            post(set_configs),
        )
        .route(
            "/v1/getCustomerBillingProviderConfigurations",
            post(get_configs),
        )
        .route(
            "/v1/archiveCustomerBillingProviderConfigurations",
            post(archive_configs),
        )
        .route(
            "/v1/getCustomerRevenueSystemConfigurations",
            post(get_revenue_configs),
        )
        .route(
            "/v1/customers/{id}/billing-config/{billing_provider_type}",
            get(get_legacy).post(set_legacy).delete(delete_legacy),
        )
}

#[derive(Deserialize)]
struct SetReq {
    data: Vec<BillingProviderReq>,
}

async fn set_configs(
    State(st): State<AppState>,
    Caller(env): Caller,
    Body(req): Body<SetReq>,
) -> ApiResult<Json<Value>> {
    let mut items = Vec::with_capacity(req.data.len());
    for (i, mut item) in req.data.into_iter().enumerate() {
        let customer = item
            .customer_id
            .take()
            .ok_or_else(|| ApiError::bad_request(format!("data[{i}].customer_id is required")))?;
        items.push((customer, item.input()));
    }
    let made = billing_configs::set(&st, env, items).await?;
    let data: Vec<Value> = made
        .iter()
        .map(|(customer, cfg)| cfg.api_json(customer))
        .collect();
    Ok(Json(json!({ "data": data })))
}

#[derive(Deserialize)]
struct GetReq {
    customer_id: String,
    #[serde(default)]
    include_archived: bool,
}

async fn get_configs(
    State(st): State<AppState>,
    Caller(env): Caller,
    Body(req): Body<GetReq>,
) -> ApiResult<Json<Value>> {
    let configs = billing_configs::list(&st, env, &req.customer_id, req.include_archived).await?;
    let data: Vec<Value> = configs
        .iter()
        .map(|c| c.api_json(&req.customer_id))
        .collect();
    Ok(Json(json!({ "data": data })))
}

#[derive(Deserialize)]
struct ArchiveReq {
    customer_id: String,
    customer_billing_provider_configuration_ids: Vec<String>,
}

async fn archive_configs(
    State(st): State<AppState>,
    Caller(env): Caller,
    Body(req): Body<ArchiveReq>,
) -> ApiResult<Json<Value>> {
    let ids = &req.customer_billing_provider_configuration_ids;
    billing_configs::archive(&st, env, &req.customer_id, ids).await?;
    Ok(Json(json!({ "data": {
        "customer_id": req.customer_id,
        "customer_billing_provider_configuration_ids": ids,
    } })))
}

#[derive(Deserialize)]
struct GetRevenueReq {
    customer_id: String,
    provider: Option<RevenueSystemProvider>,
    #[serde(default)]
    include_archived: bool,
}

async fn get_revenue_configs(
    State(st): State<AppState>,
    Caller(env): Caller,
    Body(req): Body<GetRevenueReq>,
) -> ApiResult<Json<Value>> {
    let configs = billing_configs::list_revenue_systems(
        &st,
        env,
        &req.customer_id,
        req.provider,
        req.include_archived,
    )
    .await?;
    let data: Vec<Value> = configs
        .iter()
        .map(|c| c.api_json(&req.customer_id))
        .collect();
    Ok(Json(json!({ "data": data })))
}

/// The path's customer and provider type (an unknown type is a 400 naming it).
fn legacy_path((customer_id, provider): (String, String)) -> ApiResult<(String, BillingProvider)> {
    let provider = BillingProvider::parse(&provider).ok_or_else(|| {
        ApiError::bad_request(format!(
            "billing_provider_type {provider:?} is not a billing provider type"
        ))
    })?;
    Ok((customer_id, provider))
}

async fn get_legacy(
    State(st): State<AppState>,
    Caller(env): Caller,
    Path(path): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let (customer_id, provider) = legacy_path(path)?;
    let config = billing_configs::legacy(&st, env, &customer_id, provider).await?;
    Ok(Json(json!({ "data": config })))
}

async fn set_legacy(
    State(st): State<AppState>,
    Caller(env): Caller,
    Path(path): Path<(String, String)>,
    Body(req): Body<LegacyBillingReq>,
) -> ApiResult<Response> {
    let (customer_id, provider) = legacy_path(path)?;
    billing_configs::put_legacy(&st, env, &customer_id, provider, Some(req.config())).await?;
    Ok((StatusCode::OK, HttpBody::empty()).into_response())
}

async fn delete_legacy(
    State(st): State<AppState>,
    Caller(env): Caller,
    Path(path): Path<(String, String)>,
) -> ApiResult<Response> {
    let (customer_id, provider) = legacy_path(path)?;
    billing_configs::put_legacy(&st, env, &customer_id, provider, None).await?;
    Ok((StatusCode::OK, HttpBody::empty()).into_response())
}
