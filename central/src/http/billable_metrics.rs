//! `/v1/billable-metrics`: create, get, list, archive. Metrics are immutable once created.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::Value;
use tally_core::metric::{EventTypeFilter, PropertyFilter};

use super::{id_response, keyset_page, page_from_query, require_text, Body, Caller, QueryMap};
use crate::error::{ApiError, ApiResult};
use crate::model::{decode, encode, kind, load, new_id, AggregationType, Metric};
use crate::store::{ArchiveFilter, NewDoc, PageReq};
use crate::wire::Time;
use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
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
    require_text("name", &req.name, 256)?;
    if req.sql.is_some() {
        return Err(ApiError::bad_request(
            "sql billable metrics are not supported yet",
        ));
    }
    let aggregation_type = req
        .aggregation_type
        .ok_or_else(|| ApiError::bad_request("aggregation_type is required"))?;
    let metric = Metric {
        id: new_id(),
        name: req.name,
        aggregation_type,
        // COUNT ignores any aggregation key; keeping it would suggest otherwise.
        aggregation_key: req
            .aggregation_key
            .filter(|_| aggregation_type != AggregationType::Count),
        event_type_filter: req.event_type_filter,
        property_filters: req.property_filters,
        group_keys: req.group_keys,
        custom_fields: req.custom_fields,
        archived_at: None,
    };
    metric
        .def()
        .validate()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let doc = NewDoc {
        kind: kind::METRIC,
        id: &metric.id,
        parent_id: None,
        unique_key: None,
        created_ms: st.now_ms(),
        body: encode(&metric)?,
    };
    st.stores.config.insert_docs(env, &[doc]).await?;
    st.invalidate_metrics(env).await;
    Ok(id_response(&metric.id))
}

async fn retrieve(
    State(st): State<AppState>,
    Caller(env): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let metric: Metric = load(&st.stores, env, kind::METRIC, &id, "billable metric").await?;
    Ok(Json(serde_json::json!({ "data": metric })))
}

async fn list(
    State(st): State<AppState>,
    Caller(env): Caller,
    q: QueryMap,
) -> ApiResult<Json<Value>> {
    let page = page_from_query(&q)?;
    let filter = match q.bool("include_archived")? {
        Some(true) => ArchiveFilter::All,
        _ => ArchiveFilter::Active,
    };
    let fetch = PageReq {
        after: page.after,
        limit: page.limit + 1,
    };
    let docs = st
        .stores
        .config
        .list_docs(env, kind::METRIC, None, filter, Some(fetch))
        .await?;
    let items = docs
        .iter()
        .map(|d| {
            Ok((
                d.seq,
                serde_json::to_value(decode::<Metric>(d)?).map_err(ApiError::internal)?,
            ))
        })
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
    let mut metric: Metric =
        load(&st.stores, env, kind::METRIC, &req.id, "billable metric").await?;
    if metric.archived_at.is_none() {
        metric.archived_at = Some(Time(st.now_ms()));
        st.stores
            .config
            .update_doc(env, kind::METRIC, &req.id, &encode(&metric)?, true)
            .await?;
    }
    Ok(id_response(&req.id))
}
