//! `/v1/billable-metrics`: create, get, list, archive (wire side; the use cases are
//! `service::metrics`). Metrics are immutable once created.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::Json;
use serde::Deserialize;
use serde_json::Value;
use tally_core::metric::{EventTypeFilter, PropertyFilter};

use super::error::{ApiError, ApiResult};
use super::Routes;
use super::{id_response, keyset_page, page_from_query, Body, Caller, QueryMap};
use crate::model::AggregationType;
use crate::service::metrics::{self, NewMetric};
use crate::AppState;

pub fn routes() -> Routes {
    Routes::new()
        .route("/v1/billable-metrics/create", post(create))
        .route("/v1/billable-metrics/archive", post(archive))
        .route("/v1/billable-metrics", get(list))
        .route("/v1/billable-metrics/{id}", get(retrieve))
}

#[derive(Deserialize)]
struct CreateMetric {
    name: String,
    aggregation_type: Option<AggregationType>,
    aggregation_key: Option<String>,
    event_type_filter: Option<EventTypeFilter>,
    #[serde(default)]
    property_filters: Vec<PropertyFilter>,
    #[serde(default)]
    group_keys: Vec<Vec<String>>,
    #[serde(default)]
    custom_fields: BTreeMap<String, String>,
    sql: Option<String>,
}

async fn create(
    State(st): State<AppState>,
    Caller(env): Caller,
    Body(req): Body<CreateMetric>,
) -> ApiResult<Json<Value>> {
    let new = NewMetric {
        name: req.name,
        aggregation_type: req.aggregation_type,
        aggregation_key: req.aggregation_key,
        event_type_filter: req.event_type_filter,
        property_filters: req.property_filters,
        group_keys: req.group_keys,
        custom_fields: req.custom_fields,
        sql: req.sql,
    };
    Ok(id_response(&metrics::create(&st, env, new).await?))
}

async fn retrieve(
    State(st): State<AppState>,
    Caller(env): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let metric = metrics::get(&st, env, &id).await?;
    Ok(Json(serde_json::json!({ "data": metric })))
}

async fn list(
    State(st): State<AppState>,
    Caller(env): Caller,
    q: QueryMap,
) -> ApiResult<Json<Value>> {
    let page = page_from_query(&q)?;
    let include_archived = q.bool("include_archived")?.unwrap_or(false);
    let items = metrics::list(&st, env, include_archived, page)
        .await?
        .into_iter()
        .map(|(seq, m)| Ok((seq, serde_json::to_value(m).map_err(ApiError::internal)?)))
        .collect::<ApiResult<Vec<_>>>()?;
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
    metrics::archive(&st, env, &req.id).await?;
    Ok(id_response(&req.id))
}
