//! Customer invoices (list, get), `/v1/invoices/void` and `/v1/invoices/regenerate`: the wire side of `service::invoices`.
//! The GETs never write: drafts are computed on read.

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::Routes;
use super::MAX_PAGE_SIZE;
use super::{decode_cursor, encode_cursor, id_response, page_limit, Body, Caller, QueryMap};
use crate::service::invoices::{self, InvoiceQuery};
use crate::service::previews;
use crate::store::InvoiceStatus;
use crate::AppState;

pub fn routes() -> Routes {
    Routes::new()
        .route("/v1/customers/{id}/invoices", get(list))
        .route("/v1/customers/{id}/invoices/{invoice_id}", get(retrieve))
        .route("/v1/invoices/void", post(void))
        .route("/v1/invoices/regenerate", post(regenerate))
        .route("/v1/customers/{id}/previewEvents", post(preview_events))
        .route("/v1/customers/{id}/pricingSnapshot", get(pricing_snapshot))
}

fn time_param(q: &QueryMap, key: &str) -> ApiResult<Option<i64>> {
    q.one(key)
        .map(|v| {
            tally_core::time::parse_rfc3339_ms(v)
                .map_err(|e| ApiError::bad_request(format!("{key} {e}")))
        })
        .transpose()
}

fn invoice_query(q: &QueryMap) -> ApiResult<InvoiceQuery> {
    let status = match q.one("status") {
        None => None,
        Some(s) => Some(InvoiceStatus::parse(s).ok_or_else(|| {
            ApiError::bad_request("status must be one of DRAFT, FINALIZED, VOID")
        })?),
    };
    let descending = match q.one("sort") {
        None => false,
        Some(s) if s.eq_ignore_ascii_case("date_asc") => false,
        Some(s) if s.eq_ignore_ascii_case("date_desc") => true,
        Some(_) => return Err(ApiError::bad_request("sort must be date_asc or date_desc")),
    };
    Ok(InvoiceQuery {
        contract_id: q.one("contract_id").map(String::from),
        status,
        starting_on: time_param(q, "starting_on")?,
        ending_before: time_param(q, "ending_before")?,
        descending,
        invoice_type: q.one("type").map(String::from),
        credit_type_id: q.one("credit_type_id").map(String::from),
        skip_zero_lines: q.bool("skip_zero_qty_line_items")?.unwrap_or(false),
    })
}

async fn list(
    State(st): State<AppState>,
    Caller(env): Caller,
    Path(customer_id): Path<String>,
    q: QueryMap,
) -> ApiResult<Json<Value>> {
    let limit = page_limit(q.one("limit"), MAX_PAGE_SIZE)?;
    let offset = decode_cursor(q.one("next_page"))?;
    let query = invoice_query(&q)?;
    let page = invoices::list(&st, env, &customer_id, &query, offset, limit).await?;
    let next = page.next_offset.map(encode_cursor);
    Ok(Json(json!({ "data": page.items, "next_page": next })))
}

async fn retrieve(
    State(st): State<AppState>,
    Caller(env): Caller,
    Path((customer_id, invoice_id)): Path<(String, String)>,
    q: QueryMap,
) -> ApiResult<Json<Value>> {
    let skip_zero = q.bool("skip_zero_qty_line_items")?.unwrap_or(false);
    let inv = invoices::get(&st, env, &customer_id, &invoice_id, skip_zero).await?;
    Ok(Json(json!({ "data": inv })))
}

#[derive(Deserialize)]
struct VoidReq {
    id: String,
}

async fn void(
    State(st): State<AppState>,
    Caller(env): Caller,
    Body(req): Body<VoidReq>,
) -> ApiResult<Json<Value>> {
    invoices::void(&st, env, &req.id).await?;
    Ok(id_response(&req.id))
}

/// `regenerate`: a new invoice for a voided one's period; answers the new invoice's id.
async fn regenerate(
    State(st): State<AppState>,
    Caller(env): Caller,
    Body(req): Body<VoidReq>,
) -> ApiResult<Json<Value>> {
    let id = invoices::regenerate(&st, env, &req.id).await?;
    Ok(id_response(&id))
}

/// `previewEvents`: the customer's draft invoices with hypothetical events, stored nowhere.
async fn preview_events(
    State(st): State<AppState>,
    Caller(env): Caller,
    Path(customer_id): Path<String>,
    Body(body): Body<Value>,
) -> ApiResult<Json<Value>> {
    Ok(Json(
        previews::preview_events(&st, env, &customer_id, &body).await?,
    ))
}

/// Tally extension: what the browser preview prices with (`tally_core::preview`'s snapshot);
/// `include_usage=false` leaves out the stored usage `merge` needs.
async fn pricing_snapshot(
    State(st): State<AppState>,
    Caller(env): Caller,
    Path(customer_id): Path<String>,
    q: QueryMap,
) -> ApiResult<Json<Value>> {
    let with_usage = q.bool("include_usage")?.unwrap_or(true);
    let snapshot = previews::snapshot(&st, env, &customer_id, with_usage).await?;
    let data = serde_json::to_value(&snapshot).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(json!({ "data": data })))
}
