//! Usage queries (wire side; the use cases are `service::usage`): `POST /v1/usage`
//! (CursorPageWithoutLimit), `POST /v1/usage/groups` (CursorPage), `GET
//! /v1/customers/{id}/billable-metrics` (CursorPage) and `GET /v1/customers/{id}/costs`
//! (CursorPage). Cursors are offsets into the query's ordered list.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tally_core::invoice_json::{dec, time};

use super::error::{ApiError, ApiResult};
use super::{decode_cursor, encode_cursor, offset_range, page_limit, Body, Caller, QueryMap};
use super::{Routes, MAX_PAGE_SIZE};
use crate::model::Metric;
use crate::service::usage::{self, GroupsQuery, ListQuery, MetricQuery, WindowSize};
use crate::wire::Time;
use crate::AppState;

pub fn routes() -> Routes {
    Routes::new()
        .route("/v1/usage", post(list))
        .route("/v1/usage/groups", post(list_with_groups))
        .route("/v1/customers/{id}/billable-metrics", get(customer_metrics))
        .route("/v1/customers/{id}/costs", get(costs))
}

/// Items one `POST /v1/usage` page holds (the endpoint takes no `limit`).
pub const USAGE_PAGE_SIZE: usize = 100;

#[derive(Deserialize)]
struct GroupBy {
    key: String,
    values: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct MetricReq {
    id: String,
    group_by: Option<GroupBy>,
}

#[derive(Deserialize)]
struct UsageReq {
    starting_on: Time,
    ending_before: Time,
    window_size: WindowSize,
    customer_ids: Option<Vec<String>>,
    billable_metrics: Option<Vec<MetricReq>>,
}

fn offset(q: &QueryMap) -> ApiResult<usize> {
    Ok(usize::try_from(decode_cursor(q.one("next_page"))?).unwrap_or(usize::MAX))
}

fn opt_dec(d: Option<rust_decimal::Decimal>) -> Value {
    d.map_or(Value::Null, dec)
}

async fn list(
    State(st): State<AppState>,
    Caller(env): Caller,
    q: QueryMap,
    Body(req): Body<UsageReq>,
) -> ApiResult<Json<Value>> {
    let query = ListQuery {
        from_ms: req.starting_on.0,
        to_ms: req.ending_before.0,
        size: req.window_size,
        customer_ids: req.customer_ids,
        metrics: req.billable_metrics.map(|ms| {
            ms.into_iter()
                .map(|m| MetricQuery {
                    id: m.id,
                    group_by: m.group_by.map(|g| (g.key, g.values)),
                })
                .collect()
        }),
    };
    let (items, next) = usage::list(&st, env, &query, offset(&q)?, USAGE_PAGE_SIZE).await?;
    let data: Vec<Value> = items
        .into_iter()
        .map(|item| {
            let mut v = json!({
                "customer_id": item.customer_id,
                "billable_metric_id": item.metric_id,
                "billable_metric_name": item.metric_name,
                "start_timestamp": time(item.window.0),
                "end_timestamp": time(item.window.1),
                "value": opt_dec(item.value),
            });
            if let Some(groups) = item.groups {
                let groups: Map<String, Value> =
                    groups.into_iter().map(|(k, d)| (k, opt_dec(d))).collect();
                v["groups"] = Value::Object(groups);
            }
            v
        })
        .collect();
    let next = next.map(|n| encode_cursor(n as i64));
    Ok(Json(json!({ "data": data, "next_page": next })))
}

#[derive(Deserialize)]
struct GroupsReq {
    customer_id: String,
    billable_metric_id: String,
    window_size: WindowSize,
    starting_on: Option<Time>,
    ending_before: Option<Time>,
    #[serde(default)]
    current_period: Option<bool>,
    group_key: Option<Vec<String>>,
    group_filters: Option<BTreeMap<String, Vec<String>>>,
    group_by: Option<GroupBy>,
}

async fn list_with_groups(
    State(st): State<AppState>,
    Caller(env): Caller,
    q: QueryMap,
    Body(req): Body<GroupsReq>,
) -> ApiResult<Json<Value>> {
    let query = GroupsQuery {
        customer_id: req.customer_id,
        metric_id: req.billable_metric_id,
        size: req.window_size,
        starting_on: req.starting_on.map(|t| t.0),
        ending_before: req.ending_before.map(|t| t.0),
        current_period: req.current_period.unwrap_or(false),
        group_key: req.group_key,
        group_filters: req.group_filters,
        group_by: req.group_by.map(|g| (g.key, g.values)),
    };
    let offset = decode_cursor(q.one("next_page"))?;
    // Validated before any read; the default depends on the key.
    let limit = q.one("limit");
    page_limit(limit, MAX_PAGE_SIZE)?;
    let (items, compound) = usage::groups(&st, env, &query).await?;
    let limit = match (limit, compound) {
        (None, true) => MAX_PAGE_SIZE,
        _ => page_limit(limit, MAX_PAGE_SIZE)?,
    };
    let (range, next) = offset_range(items.len(), offset, limit);
    let data: Vec<Value> = items[range]
        .iter()
        .map(|item| {
            let (group_key, group_value) = match item.group.as_slice() {
                [(k, v)] => (json!(k), json!(v)),
                _ => (Value::Null, Value::Null),
            };
            let mut v = json!({
                "starting_on": time(item.window.0),
                "ending_before": time(item.window.1),
                "value": opt_dec(item.value),
                "group_key": group_key,
                "group_value": group_value,
            });
            if !item.group.is_empty() {
                // A property the group's events lack is left out (`group` holds strings).
                let group: Map<String, Value> = item
                    .group
                    .iter()
                    .filter_map(|(k, val)| Some((k.clone(), json!(val.as_ref()?))))
                    .collect();
                v["group"] = Value::Object(group);
            }
            v
        })
        .collect();
    Ok(Json(json!({ "data": data, "next_page": next })))
}

/// A metric as `listBillableMetrics` shows it: the metric plus its deprecated fields.
fn metric_json(m: &Metric) -> ApiResult<Value> {
    let mut v = serde_json::to_value(m).map_err(ApiError::internal)?;
    v["aggregate"] = json!(m.aggregation_type.as_str().to_ascii_lowercase());
    v["aggregate_keys"] = json!(m.aggregation_key.iter().collect::<Vec<_>>());
    v["filter"] = json!({});
    v["group_by"] = json!(m.def().grain());
    Ok(v)
}

async fn customer_metrics(
    State(st): State<AppState>,
    Caller(env): Caller,
    Path(customer_id): Path<String>,
    q: QueryMap,
) -> ApiResult<Json<Value>> {
    let limit = page_limit(q.one("limit"), MAX_PAGE_SIZE)?;
    let offset = decode_cursor(q.one("next_page"))?;
    let include_archived = q.bool("include_archived")?.unwrap_or(false);
    let on_current_plan = q.bool("on_current_plan")?.unwrap_or(false);
    let metrics =
        usage::customer_metrics(&st, env, &customer_id, include_archived, on_current_plan).await?;
    let (range, next) = offset_range(metrics.len(), offset, limit);
    let data = metrics[range]
        .iter()
        .map(metric_json)
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(Json(json!({ "data": data, "next_page": next })))
}

fn required_time(q: &QueryMap, key: &str) -> ApiResult<i64> {
    let text = q
        .one(key)
        .ok_or_else(|| ApiError::bad_request(format!("{key} is required")))?;
    tally_core::time::parse_rfc3339_ms(text)
        .map_err(|e| ApiError::bad_request(format!("{key} {e}")))
}

async fn costs(
    State(st): State<AppState>,
    Caller(env): Caller,
    Path(customer_id): Path<String>,
    q: QueryMap,
) -> ApiResult<Json<Value>> {
    let from = required_time(&q, "starting_on")?;
    let to = required_time(&q, "ending_before")?;
    let limit = page_limit(q.one("limit"), MAX_PAGE_SIZE)?;
    let offset = decode_cursor(q.one("next_page"))?;
    let periods = usage::costs(&st, env, &customer_id, from, to).await?;
    let (range, next) = offset_range(periods.len(), offset, limit);
    let data: Vec<Value> = periods[range]
        .iter()
        .map(|p| {
            let types: Map<String, Value> = p
                .credit_types
                .iter()
                .map(|(id, c)| {
                    let lines: Vec<Value> = c
                        .lines
                        .iter()
                        .map(|(name, cost)| json!({ "name": name, "cost": dec(*cost) }))
                        .collect();
                    let v = json!({
                        "name": c.name,
                        "cost": dec(c.cost),
                        "line_item_breakdown": lines,
                    });
                    (id.clone(), v)
                })
                .collect();
            json!({
                "start_timestamp": time(p.start_ms),
                "end_timestamp": time(p.end_ms),
                "credit_types": types,
            })
        })
        .collect();
    Ok(Json(json!({ "data": data, "next_page": next })))
}
