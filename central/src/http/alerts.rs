//! `/v1/alerts/create|archive` and `/v1/customer-alerts/list|get|reset`: the wire side of
//! `service::alerts`. Fields that would change what an alert watches and that Tally does not
//! evaluate (`custom_field_filters`, `alert_specifiers`, `seat_filter`, `plan_id`,
//! `credit_grant_type_filters`, `group_key_filter`) are a 400 naming them, never ignored.

use axum::body::Body as HttpBody;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Json;
use serde::Deserialize;
use serde_json::Value;

use super::error::{ApiError, ApiResult};
use super::{decode_cursor, id_response, keyset_page, Body, Caller, QueryMap, Routes};
use crate::service::alerts::{self, GroupValue, NewAlert};
use crate::store::{ArchiveFilter, PageReq};
use crate::wire::Dec;
use crate::AppState;

/// `customer-alerts/list` returns this many per page (CursorPageWithoutLimit: no `limit`).
const LIST_PAGE: i64 = 100;

pub fn routes() -> Routes {
    Routes::new()
        .route("/v1/alerts/create", post(create))
        .route("/v1/alerts/archive", post(archive))
        .route("/v1/customer-alerts/list", post(list))
        .route("/v1/customer-alerts/get", post(get))
        .route("/v1/customer-alerts/reset", post(reset))
}

#[derive(Deserialize)]
struct CreateReq {
    alert_type: String,
    name: String,
    threshold: Dec,
    #[serde(default)]
    customer_id: Option<String>,
    #[serde(default)]
    billable_metric_id: Option<String>,
    #[serde(default)]
    credit_type_id: Option<String>,
    #[serde(default)]
    group_values: Option<Vec<GroupValue>>,
    #[serde(default)]
    invoice_types_filter: Option<Vec<String>>,
    #[serde(default)]
    uniqueness_key: Option<String>,
    #[serde(default)]
    evaluate_on_create: Option<bool>,
    #[serde(default)]
    custom_field_filters: Option<Value>,
    #[serde(default)]
    alert_specifiers: Option<Value>,
    #[serde(default)]
    seat_filter: Option<Value>,
    #[serde(default)]
    plan_id: Option<Value>,
    #[serde(default)]
    credit_grant_type_filters: Option<Value>,
    #[serde(default)]
    group_key_filter: Option<Value>,
}

/// Refuses a field Tally does not evaluate when it says anything (null and `[]` say nothing).
fn refuse(field: &str, v: &Option<Value>) -> ApiResult<()> {
    let says = match v {
        None | Some(Value::Null) => false,
        Some(Value::Array(a)) => !a.is_empty(),
        Some(_) => true,
    };
    match says {
        true => Err(ApiError::bad_request(format!(
            "{field} is not supported by Tally's alerts"
        ))),
        false => Ok(()),
    }
}

async fn create(
    State(st): State<AppState>,
    Caller(env): Caller,
    Body(req): Body<CreateReq>,
) -> ApiResult<Json<Value>> {
    refuse("custom_field_filters", &req.custom_field_filters)?;
    refuse("alert_specifiers", &req.alert_specifiers)?;
    refuse("seat_filter", &req.seat_filter)?;
    refuse("plan_id", &req.plan_id)?;
    refuse("credit_grant_type_filters", &req.credit_grant_type_filters)?;
    refuse("group_key_filter", &req.group_key_filter)?;
    let new = NewAlert {
        alert_type: req.alert_type,
        name: req.name,
        threshold: req.threshold.0,
        customer_id: req.customer_id,
        billable_metric_id: req.billable_metric_id,
        credit_type_id: req.credit_type_id,
        group_values: req.group_values.unwrap_or_default(),
        invoice_types_filter: req.invoice_types_filter.unwrap_or_default(),
        uniqueness_key: req.uniqueness_key,
        evaluate_on_create: req.evaluate_on_create.unwrap_or(true),
    };
    let id = alerts::create(&st, env, new).await?;
    Ok(id_response(&id))
}

#[derive(Deserialize)]
struct ArchiveReq {
    id: String,
    #[serde(default)]
    release_uniqueness_key: Option<bool>,
}

async fn archive(
    State(st): State<AppState>,
    Caller(env): Caller,
    Body(req): Body<ArchiveReq>,
) -> ApiResult<Json<Value>> {
    if req.release_uniqueness_key == Some(true) {
        return Err(ApiError::bad_request(
            "release_uniqueness_key is not supported by Tally: an alert's uniqueness_key stays taken",
        ));
    }
    alerts::archive(&st, env, &req.id).await?;
    Ok(id_response(&req.id))
}

#[derive(Deserialize)]
struct ListReq {
    customer_id: String,
    #[serde(default)]
    alert_statuses: Option<Vec<String>>,
}

/// Which stored alerts `alert_statuses` selects (default: enabled only). Tally's alerts are
/// enabled or archived; DISABLED selects none.
fn status_filter(statuses: Option<&[String]>) -> ApiResult<Option<ArchiveFilter>> {
    let Some(statuses) = statuses else {
        return Ok(Some(ArchiveFilter::Active));
    };
    if statuses.is_empty() {
        return Err(ApiError::bad_request(
            "alert_statuses must name at least one status",
        ));
    }
    let (mut enabled, mut archived) = (false, false);
    for s in statuses {
        match s.to_ascii_uppercase().as_str() {
            "ENABLED" => enabled = true,
            "ARCHIVED" => archived = true,
            "DISABLED" => {}
            _ => {
                return Err(ApiError::bad_request(format!(
                    "alert_statuses entries must be ENABLED, DISABLED or ARCHIVED, not {s:?}"
                )))
            }
        }
    }
    Ok(match (enabled, archived) {
        (true, true) => Some(ArchiveFilter::All),
        (true, false) => Some(ArchiveFilter::Active),
        (false, true) => Some(ArchiveFilter::Archived),
        (false, false) => None,
    })
}

/// `POST /v1/customer-alerts/list?next_page`: the alerts that apply to the customer, in creation
/// order, each with the customer's status.
async fn list(
    State(st): State<AppState>,
    Caller(env): Caller,
    q: QueryMap,
    Body(req): Body<ListReq>,
) -> ApiResult<Json<Value>> {
    let page = PageReq {
        after: decode_cursor(q.one("next_page"))?,
        limit: LIST_PAGE,
    };
    let filter = status_filter(req.alert_statuses.as_deref())?;
    let items = match filter {
        Some(f) => alerts::list(&st, env, &req.customer_id, f, page).await?,
        None => {
            // Still a 404 for an unknown customer.
            alerts::list(&st, env, &req.customer_id, ArchiveFilter::Active, page).await?;
            Vec::new()
        }
    };
    Ok(keyset_page(items, page.limit))
}

#[derive(Deserialize)]
struct CustomerAlertReq {
    customer_id: String,
    alert_id: String,
    #[serde(default)]
    group_values: Option<Value>,
    #[serde(default)]
    seat_filter: Option<Value>,
    #[serde(default)]
    alert_specifiers: Option<Value>,
}

async fn get(
    State(st): State<AppState>,
    Caller(env): Caller,
    Body(req): Body<CustomerAlertReq>,
) -> ApiResult<Json<Value>> {
    refuse("group_values", &req.group_values)?;
    refuse("seat_filter", &req.seat_filter)?;
    refuse("alert_specifiers", &req.alert_specifiers)?;
    let data = alerts::get(&st, env, &req.customer_id, &req.alert_id).await?;
    Ok(Json(serde_json::json!({ "data": data })))
}

#[derive(Deserialize)]
struct ResetReq {
    customer_id: String,
    alert_id: String,
}

/// Re-arms the alert for the customer: 200 with an empty body, as upstream.
async fn reset(
    State(st): State<AppState>,
    Caller(env): Caller,
    Body(req): Body<ResetReq>,
) -> ApiResult<Response> {
    alerts::reset(&st, env, &req.customer_id, &req.alert_id).await?;
    Ok((StatusCode::OK, HttpBody::empty()).into_response())
}
