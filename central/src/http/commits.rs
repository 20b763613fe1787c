//! `/v1/contracts/customerCommits/{create,list,updateEndDate}` and
//! `/v1/contracts/customerCredits/{create,list,updateEndDate}`: customer-level commits and
//! credits, the wire side. The rules are `service::commits`.

use axum::extract::State;
use axum::routing::post;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::commit_wire::BalanceReq;
use super::error::ApiResult;
use super::{decode_cursor, from_value, id_response, offset_range, page_limit, Body, Caller};
use super::{Routes, MAX_PAGE_SIZE};
use crate::model::BalanceType;
use crate::service::balances::{self, Inclusion, Show};
use crate::service::commits::{self, BalanceFilter, EndDateUpdate, NewCustomerBalance};
use crate::store::Env;
use crate::wire::Time;
use crate::AppState;

pub fn routes() -> Routes {
    Routes::new()
        .route("/v1/contracts/customerCommits/create", post(create_commit))
        .route("/v1/contracts/customerCredits/create", post(create_credit))
        .route("/v1/contracts/customerCommits/list", post(list_commits))
        .route("/v1/contracts/customerCredits/list", post(list_credits))
        .route(
            "/v1/contracts/customerCommits/updateEndDate",
            post(update_commit_end),
        )
        .route(
            "/v1/contracts/customerCredits/updateEndDate",
            post(update_credit_end),
        )
}

/// The customer-level fields of `CreateCustomerCommitPayload` / `…CreditPayload` (the rest is
/// a [`BalanceReq`], read from the same body).
#[derive(Deserialize)]
struct CustomerFields {
    customer_id: String,
    invoice_contract_id: Option<String>,
    applicable_contract_ids: Option<Vec<String>>,
    uniqueness_key: Option<String>,
}

async fn create(st: &AppState, env: Env, body: Value, kind: BalanceType) -> ApiResult<Json<Value>> {
    if let Value::Object(map) = &body {
        commits::check_body("", map, kind)?;
    }
    let fields: CustomerFields = from_value(body.clone())?;
    let req: BalanceReq = from_value(body)?;
    let balance = match kind {
        BalanceType::Credit => req.credit(),
        _ => req.commit("")?,
    };
    let new = NewCustomerBalance {
        customer_id: fields.customer_id,
        balance,
        invoice_contract_id: fields.invoice_contract_id,
        applicable_contract_ids: fields.applicable_contract_ids,
        uniqueness_key: fields.uniqueness_key,
    };
    Ok(id_response(&commits::create(st, env, new).await?))
}

async fn create_commit(
    State(st): State<AppState>,
    Caller(env): Caller,
    Body(body): Body<Value>,
) -> ApiResult<Json<Value>> {
    create(&st, env, body, BalanceType::Prepaid).await
}

async fn create_credit(
    State(st): State<AppState>,
    Caller(env): Caller,
    Body(body): Body<Value>,
) -> ApiResult<Json<Value>> {
    create(&st, env, body, BalanceType::Credit).await
}

/// The list filters.
#[derive(Deserialize)]
struct ListReq {
    customer_id: String,
    commit_id: Option<String>,
    credit_id: Option<String>,
    covering_date: Option<Time>,
    starting_at: Option<Time>,
    effective_before: Option<Time>,
    include_archived: Option<bool>,
    include_contract_commits: Option<bool>,
    include_contract_credits: Option<bool>,
    include_balance: Option<bool>,
    include_ledgers: Option<bool>,
    next_page: Option<String>,
    limit: Option<i64>,
}

/// One body-cursor page (`next_page`, `limit` in the body) of the customer's commits or credits.
async fn list(st: &AppState, env: Env, req: ListReq, credits: bool) -> ApiResult<Json<Value>> {
    let limit = page_limit(req.limit.map(|l| l.to_string()).as_deref(), MAX_PAGE_SIZE)?;
    let offset = decode_cursor(req.next_page.as_deref())?;
    let (id, include_contract) = match credits {
        true => (req.credit_id, req.include_contract_credits),
        false => (req.commit_id, req.include_contract_commits),
    };
    let show = Show {
        balance: req.include_balance.unwrap_or(false),
        ledger: req.include_ledgers.unwrap_or(false),
        inclusion: Inclusion::FinalizedAndDraft,
    };
    let filter = BalanceFilter {
        customer_id: req.customer_id,
        credits: Some(credits),
        id,
        covering_date: req.covering_date,
        starting_at: req.starting_at,
        effective_before: req.effective_before,
        include_archived: req.include_archived.unwrap_or(false),
        include_contract_balances: include_contract.unwrap_or(false),
    };
    let found = commits::list(st, env, &filter).await?;
    let (range, next) = offset_range(found.len(), offset, limit);
    let data = balances::shown(st, env, &filter.customer_id, &found[range], show).await?;
    Ok(Json(json!({ "data": data, "next_page": next })))
}

async fn list_commits(
    State(st): State<AppState>,
    Caller(env): Caller,
    Body(req): Body<ListReq>,
) -> ApiResult<Json<Value>> {
    list(&st, env, req, false).await
}

async fn list_credits(
    State(st): State<AppState>,
    Caller(env): Caller,
    Body(req): Body<ListReq>,
) -> ApiResult<Json<Value>> {
    list(&st, env, req, true).await
}

#[derive(Deserialize)]
struct CommitEndReq {
    customer_id: String,
    commit_id: String,
    access_ending_before: Option<Time>,
    invoices_ending_before: Option<Time>,
}

#[derive(Deserialize)]
struct CreditEndReq {
    customer_id: String,
    credit_id: String,
    access_ending_before: Time,
}

async fn update_commit_end(
    State(st): State<AppState>,
    Caller(env): Caller,
    Body(req): Body<CommitEndReq>,
) -> ApiResult<Json<Value>> {
    let update = EndDateUpdate {
        customer_id: req.customer_id,
        id: req.commit_id,
        credits: false,
        access_ending_before: req.access_ending_before,
        invoices_ending_before: req.invoices_ending_before,
    };
    commits::update_end_date(&st, env, &update).await?;
    Ok(id_response(&update.id))
}

async fn update_credit_end(
    State(st): State<AppState>,
    Caller(env): Caller,
    Body(req): Body<CreditEndReq>,
) -> ApiResult<Json<Value>> {
    let update = EndDateUpdate {
        customer_id: req.customer_id,
        id: req.credit_id,
        credits: true,
        access_ending_before: Some(req.access_ending_before),
        invoices_ending_before: None,
    };
    commits::update_end_date(&st, env, &update).await?;
    Ok(id_response(&update.id))
}
