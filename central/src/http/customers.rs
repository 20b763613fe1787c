//! `/v1/customers` (and `/v1/customers/create`, the quickstart's spelling of the same call):
//! create, get, list, archive, setIngestAliases, setName. Wire side only; the rules are
//! `service::customers`.

use std::collections::BTreeMap;

use axum::body::Body as HttpBody;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::config_wire::{BillingProviderReq, LegacyBillingReq, RevenueSystemReq};
use super::error::{ApiError, ApiResult};
use super::Routes;
use super::{id_response, keyset_page, page_from_query, Body, Caller, QueryMap};
use crate::service::customers::{self, CustomerFilter, NewCustomer};
use crate::AppState;

pub fn routes() -> Routes {
    Routes::new()
        .route("/v1/customers", post(create).get(list))
        .route("/v1/customers/create", post(create))
        .route("/v1/customers/archive", post(archive))
        .route("/v1/customers/{id}", get(retrieve))
        .route(
            "/v1/customers/{id}/setIngestAliases",
            post(set_ingest_aliases),
        )
        .route("/v1/customers/{id}/setName", post(set_name))
}

#[derive(Deserialize)]
struct CreateCustomer {
    name: String,
    #[serde(default)]
    ingest_aliases: Vec<String>,
    external_id: Option<String>,
    #[serde(default)]
    custom_fields: BTreeMap<String, String>,
    billing_config: Option<LegacyBillingReq>,
    #[serde(default)]
    customer_billing_provider_configurations: Vec<BillingProviderReq>,
    #[serde(default)]
    customer_revenue_system_configurations: Vec<RevenueSystemReq>,
}

async fn create(
    State(st): State<AppState>,
    Caller(env): Caller,
    Body(req): Body<CreateCustomer>,
) -> ApiResult<Json<Value>> {
    let billing_config = match req.billing_config {
        None => None,
        Some(b) => {
            let provider = b.billing_provider_type.ok_or_else(|| {
                ApiError::bad_request("billing_config.billing_provider_type is required")
            })?;
            Some((provider, b.config()))
        }
    };
    let new = NewCustomer {
        name: req.name,
        ingest_aliases: req.ingest_aliases,
        external_id: req.external_id,
        custom_fields: req.custom_fields,
        billing_config,
        billing_provider_configurations: req
            .customer_billing_provider_configurations
            .into_iter()
            .map(BillingProviderReq::input)
            .collect(),
        revenue_system_configurations: req
            .customer_revenue_system_configurations
            .into_iter()
            .map(RevenueSystemReq::input)
            .collect(),
    };
    let customer = customers::create(&st, env, new).await?;
    Ok(Json(json!({ "data": customer.summary_json() })))
}

async fn retrieve(
    State(st): State<AppState>,
    Caller(env): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let customer = customers::get(&st, env, &id).await?;
    Ok(Json(json!({ "data": customer.detail_json() })))
}

async fn list(
    State(st): State<AppState>,
    Caller(env): Caller,
    q: QueryMap,
) -> ApiResult<Json<Value>> {
    let page = page_from_query(&q)?;
    let filter = CustomerFilter {
        ids: q.list("customer_ids"),
        ingest_alias: q.one("ingest_alias").map(String::from),
        only_archived: q.bool("only_archived")?.unwrap_or(false),
    };
    let items = customers::list(&st, env, filter, page).await?;
    let items = items
        .into_iter()
        .map(|(seq, c)| (seq, c.detail_json()))
        .collect();
    Ok(keyset_page(items, page.limit))
}

#[derive(Deserialize)]
struct ArchiveReq {
    id: String,
}

async fn archive(
    State(st): State<AppState>,
    Caller(env): Caller,
    Body(req): Body<ArchiveReq>,
) -> ApiResult<Json<Value>> {
    customers::archive(&st, env, &req.id).await?;
    Ok(id_response(&req.id))
}

#[derive(Deserialize)]
struct SetAliases {
    ingest_aliases: Vec<String>,
}

async fn set_ingest_aliases(
    State(st): State<AppState>,
    Caller(env): Caller,
    Path(id): Path<String>,
    Body(req): Body<SetAliases>,
) -> ApiResult<Response> {
    customers::set_ingest_aliases(&st, env, &id, req.ingest_aliases).await?;
    Ok((StatusCode::OK, HttpBody::empty()).into_response())
}

#[derive(Deserialize)]
struct SetName {
    name: String,
}

async fn set_name(
    State(st): State<AppState>,
    Caller(env): Caller,
    Path(id): Path<String>,
    Body(req): Body<SetName>,
) -> ApiResult<Json<Value>> {
    let customer = customers::set_name(&st, env, &id, &req.name).await?;
    Ok(Json(json!({ "data": customer.summary_json() })))
}
