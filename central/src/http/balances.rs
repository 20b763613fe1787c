//! Balances of commits and credits: `contracts/customerBalances/list`,
//! `contracts/customerBalances/getNetBalance` and `contracts/addManualBalanceLedgerEntry`. Wire side only; the rules are `service::balances`.

use axum::body::Body as HttpBody;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tally_core::balances::BalanceKind;

use super::error::{ApiError, ApiResult};
use super::Routes;
use super::{decode_cursor, offset_range, page_limit, Body, Caller};
use crate::model::USD_ID;
use crate::service::balances::{self, BalanceFilter, Inclusion, ManualEntry, Show};
use crate::service::commits::BalanceFilter as BalanceListFilter;
use crate::wire::{Dec, Time};
use crate::{wire_enum, AppState};

pub fn routes() -> Routes {
    Routes::new()
        .route(
            "/v1/contracts/customerBalances/getNetBalance",
            post(net_balance),
        )
        .route(
            "/v1/contracts/addManualBalanceLedgerEntry",
            post(add_manual_entry),
        )
        .route("/v1/contracts/customerBalances/list", post(list_balances))
}

wire_enum!(InclusionMode {
    Finalized => "FINALIZED",
    FinalizedAndDraft => "FINALIZED_AND_DRAFT",
});

wire_enum!(BalanceType {
    PrepaidCommit => "PREPAID_COMMIT",
    PostpaidCommit => "POSTPAID_COMMIT",
    Credit => "CREDIT",
});

wire_enum!(AccessType { Spend => "SPEND", Quantity => "QUANTITY" });

impl InclusionMode {
    pub fn core(mode: Option<InclusionMode>) -> Inclusion {
        match mode {
            Some(InclusionMode::Finalized) => Inclusion::Finalized,
            _ => Inclusion::FinalizedAndDraft,
        }
    }
}

#[derive(Deserialize)]
struct FilterReq {
    balance_types: Option<Vec<BalanceType>>,
    ids: Option<Vec<String>>,
    custom_fields: Option<Value>,
}

#[derive(Deserialize)]
struct NetBalanceReq {
    customer_id: String,
    credit_type_id: Option<String>,
    #[serde(default)]
    filters: Vec<FilterReq>,
    invoice_inclusion_mode: Option<InclusionMode>,
    access_type: Option<AccessType>,
}

async fn net_balance(
    State(st): State<AppState>,
    Caller(env): Caller,
    Body(req): Body<NetBalanceReq>,
) -> ApiResult<Json<Value>> {
    if req.access_type == Some(AccessType::Quantity) {
        return Err(ApiError::bad_request(
            "access_type QUANTITY is not supported by Tally (balances are drawn by spend)",
        ));
    }
    let mut filters = Vec::with_capacity(req.filters.len());
    for (i, f) in req.filters.into_iter().enumerate() {
        if f.custom_fields
            .as_ref()
            .is_some_and(|c| c.as_object().is_none_or(|m| !m.is_empty()))
        {
            return Err(ApiError::bad_request(format!(
                "filters[{i}].custom_fields is not supported by Tally yet"
            )));
        }
        filters.push(BalanceFilter {
            kinds: f.balance_types.map(|types| {
                types
                    .into_iter()
                    .map(|t| match t {
                        BalanceType::PrepaidCommit => BalanceKind::PrepaidCommit,
                        BalanceType::PostpaidCommit => BalanceKind::PostpaidCommit,
                        BalanceType::Credit => BalanceKind::Credit,
                    })
                    .collect()
            }),
            ids: f.ids,
        });
    }
    let credit_type_id = req.credit_type_id.unwrap_or_else(|| USD_ID.to_string());
    let inclusion = InclusionMode::core(req.invoice_inclusion_mode);
    let balance = balances::net_balance(
        &st,
        env,
        &req.customer_id,
        &credit_type_id,
        &filters,
        inclusion,
    )
    .await?;
    Ok(Json(json!({
        "data": { "balance": Dec(balance), "credit_type_id": credit_type_id }
    })))
}

/// `customerBalances/list` pages hold at most this many (upstream's maximum and default).
const MAX_BALANCES_PAGE: i64 = 25;

#[derive(Deserialize)]
struct ListReq {
    customer_id: String,
    id: Option<String>,
    covering_date: Option<Time>,
    starting_at: Option<Time>,
    effective_before: Option<Time>,
    include_archived: Option<bool>,
    include_balance: Option<bool>,
    include_contract_balances: Option<bool>,
    include_ledgers: Option<bool>,
    exclude_zero_balances: Option<bool>,
    access_type: Option<AccessType>,
    next_page: Option<String>,
    limit: Option<i64>,
}

async fn list_balances(
    State(st): State<AppState>,
    Caller(env): Caller,
    Body(req): Body<ListReq>,
) -> ApiResult<Json<Value>> {
    if req.access_type == Some(AccessType::Quantity) {
        return Err(ApiError::bad_request(
            "access_type QUANTITY is not supported by Tally (balances are drawn by spend)",
        ));
    }
    let limit = match req.limit {
        None => MAX_BALANCES_PAGE,
        Some(l) => page_limit(Some(&l.to_string()), MAX_BALANCES_PAGE)?,
    };
    let offset = decode_cursor(req.next_page.as_deref())?;
    let filter = BalanceListFilter {
        customer_id: req.customer_id,
        credits: None,
        id: req.id,
        covering_date: req.covering_date,
        starting_at: req.starting_at,
        effective_before: req.effective_before,
        include_archived: req.include_archived.unwrap_or(false),
        include_contract_balances: req.include_contract_balances.unwrap_or(false),
    };
    let exclude_zero = req.exclude_zero_balances.unwrap_or(false);
    let found = balances::list(&st, env, &filter, exclude_zero).await?;
    let (range, next) = offset_range(found.len(), offset, limit);
    let show = Show {
        balance: req.include_balance.unwrap_or(false),
        ledger: req.include_ledgers.unwrap_or(false),
        inclusion: Inclusion::FinalizedAndDraft,
    };
    let data = balances::shown(&st, env, &filter.customer_id, &found[range], show).await?;
    Ok(Json(json!({ "data": data, "next_page": next })))
}

#[derive(Deserialize)]
struct ManualEntryReq {
    customer_id: String,
    id: String,
    segment_id: String,
    amount: Dec,
    reason: String,
    contract_id: Option<String>,
    timestamp: Option<Time>,
    per_group_amounts: Option<Value>,
}

async fn add_manual_entry(
    State(st): State<AppState>,
    Caller(env): Caller,
    Body(req): Body<ManualEntryReq>,
) -> ApiResult<Response> {
    if req.per_group_amounts.is_some() {
        return Err(ApiError::bad_request(
            "per_group_amounts is not supported by Tally (it has no seat-based balances)",
        ));
    }
    let entry = ManualEntry {
        customer_id: req.customer_id,
        balance_id: req.id,
        segment_id: req.segment_id,
        contract_id: req.contract_id,
        amount: req.amount.0,
        reason: req.reason,
        timestamp_ms: req.timestamp.map(|t| t.0),
    };
    balances::add_manual_entry(&st, env, entry).await?;
    Ok((StatusCode::OK, HttpBody::empty()).into_response())
}
