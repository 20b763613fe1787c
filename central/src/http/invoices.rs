//! Customer invoices (list, get) and `/v1/invoices/void`.

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::customers::load_customer;
use super::{
    decode_cursor, id_response, offset_page, page_limit, Body, Caller, QueryMap, MAX_PAGE_SIZE,
};
use crate::billing::{invoice_json, sync_contract, void_invoice};
use crate::error::{ApiError, ApiResult};
use crate::model::{decode, kind, load, Contract, USD_ID};
use crate::store::{ArchiveFilter, InvoiceStatus};
use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/customers/{id}/invoices", get(list))
        .route("/v1/customers/{id}/invoices/{invoice_id}", get(retrieve))
        .route("/v1/invoices/void", post(void))
}

fn time_param(q: &QueryMap, key: &str) -> ApiResult<Option<i64>> {
    q.one(key)
        .map(|v| {
            tally_core::time::parse_rfc3339_ms(v)
                .map_err(|e| ApiError::bad_request(format!("{key} {e}")))
        })
        .transpose()
}

async fn list(
    State(st): State<AppState>,
    Caller(env): Caller,
    Path(customer_id): Path<String>,
    q: QueryMap,
) -> ApiResult<Json<Value>> {
    let limit = page_limit(q.one("limit"), MAX_PAGE_SIZE)?;
    let offset = decode_cursor(q.one("next_page"))?;
    let status = match q.one("status") {
        None => None,
        Some(s) => Some(InvoiceStatus::parse(s).ok_or_else(|| {
            ApiError::bad_request("status must be one of DRAFT, FINALIZED, VOID")
        })?),
    };
    let starting_on = time_param(&q, "starting_on")?;
    let ending_before = time_param(&q, "ending_before")?;
    let descending = match q.one("sort") {
        None => false,
        Some(s) if s.eq_ignore_ascii_case("date_asc") => false,
        Some(s) if s.eq_ignore_ascii_case("date_desc") => true,
        Some(_) => return Err(ApiError::bad_request("sort must be date_asc or date_desc")),
    };
    let type_ok = q
        .one("type")
        .is_none_or(|t| t.eq_ignore_ascii_case("USAGE"));
    let credit_ok = q.one("credit_type_id").is_none_or(|c| c == USD_ID);
    let skip_zero = q.bool("skip_zero_qty_line_items")?.unwrap_or(false);
    load_customer(&st, env, &customer_id).await?;

    let docs = st
        .stores
        .config
        .list_docs(
            env,
            kind::CONTRACT,
            Some(&customer_id),
            ArchiveFilter::All,
            None,
        )
        .await?;
    let mut selected = Vec::new();
    for doc in &docs {
        let contract: Contract = decode(doc)?;
        if q.one("contract_id").is_some_and(|id| id != contract.id) || !type_ok || !credit_ok {
            continue;
        }
        for row in sync_contract(&st, env, &contract).await? {
            let keep = status.is_none_or(|s| s == row.status)
                && starting_on.is_none_or(|t| row.period_start_ms >= t)
                && ending_before.is_none_or(|t| row.period_end_ms <= t);
            if keep {
                selected.push((row, contract.clone()));
            }
        }
    }
    // Sorted by issue date (period end), then contract, for a stable order across pages.
    selected.sort_by(|a, b| {
        (a.0.period_end_ms, &a.0.contract_id).cmp(&(b.0.period_end_ms, &b.0.contract_id))
    });
    if descending {
        selected.reverse();
    }
    let start = (offset as usize).min(selected.len());
    let end = (start + limit as usize).min(selected.len());
    // Only the page's invoices are rendered; the others are placeholders for paging maths.
    let mut items = vec![Value::Null; selected.len()];
    for (i, (row, contract)) in selected.iter().enumerate().take(end).skip(start) {
        items[i] = invoice_json(&st, env, contract, row, skip_zero).await?;
    }
    Ok(offset_page(items, offset, limit, "next_page"))
}

async fn retrieve(
    State(st): State<AppState>,
    Caller(env): Caller,
    Path((customer_id, invoice_id)): Path<(String, String)>,
    q: QueryMap,
) -> ApiResult<Json<Value>> {
    let skip_zero = q.bool("skip_zero_qty_line_items")?.unwrap_or(false);
    let row = st.stores.invoices.invoice(env, &invoice_id).await?;
    let row = row
        .filter(|r| r.customer_id == customer_id)
        .ok_or_else(|| ApiError::not_found("invoice"))?;
    let contract: Contract = load(
        &st.stores,
        env,
        kind::CONTRACT,
        &row.contract_id,
        "contract",
    )
    .await?;
    let rows = sync_contract(&st, env, &contract).await?;
    let row = rows.into_iter().find(|r| r.id == invoice_id).unwrap_or(row);
    let inv = invoice_json(&st, env, &contract, &row, skip_zero).await?;
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
    void_invoice(&st, env, &req.id).await?;
    Ok(id_response(&req.id))
}
