//! `/v1/contracts/{create,get,list}` and `/v2/contracts/{get,list}`.
//!
//! Supported terms: rate card (by id or alias), start/end, usage statement schedule, uniqueness
//! key, custom fields. Terms Tally does not rate yet (commits, credits, overrides, scheduled
//! charges, subscriptions, packages, ...) are refused with a 400 rather than silently ignored,
//! so no invoice is ever wrong by omission.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::customers::load_customer;
use super::from_value;
use super::rate_cards::load_rate_card;
use super::{
    decode_cursor, id_response, offset_page, page_limit, require_hour, require_text, Body, Caller,
};
use crate::error::{ApiError, ApiResult};
use crate::model::{
    decode, encode, kind, load, new_id, Contract, RateCard, ScheduleDay, ScheduleFrequency,
    UsageStatementSchedule, CREATED_BY,
};
use crate::store::{ArchiveFilter, Env, NewDoc};
use crate::wire::{Dec, Time};
use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/contracts/create", post(create))
        .route("/v1/contracts/get", post(get_v1))
        .route("/v1/contracts/list", post(list_v1))
        .route("/v2/contracts/get", post(get_v2))
        .route("/v2/contracts/list", post(list_v2))
}

#[derive(Deserialize)]
struct ScheduleInput {
    frequency: ScheduleFrequency,
    day: Option<ScheduleDay>,
    billing_anchor_date: Option<Time>,
    invoice_generation_starting_at: Option<Time>,
}

#[derive(Deserialize)]
struct CreateContract {
    customer_id: String,
    starting_at: Time,
    ending_before: Option<Time>,
    name: Option<String>,
    rate_card_id: Option<String>,
    rate_card_alias: Option<String>,
    usage_statement_schedule: Option<ScheduleInput>,
    uniqueness_key: Option<String>,
    #[serde(default)]
    custom_fields: BTreeMap<String, String>,
    net_payment_terms_days: Option<Dec>,
}

/// Terms accepted by upstream that Tally cannot rate yet: refused when non-empty.
const UNSUPPORTED_TERMS: &[&str] = &[
    "commits",
    "credits",
    "overrides",
    "scheduled_charges",
    "recurring_commits",
    "recurring_credits",
    "subscriptions",
    "discounts",
    "professional_services",
    "reseller_royalties",
    "package_id",
    "package_alias",
    "transition",
    "usage_filter",
    "spend_threshold_configuration",
    "prepaid_balance_threshold_configuration",
    "hierarchy_configuration",
    "spend_trackers",
];

fn is_empty_value(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

fn check_supported(rest: &Map<String, Value>) -> ApiResult<()> {
    for term in UNSUPPORTED_TERMS {
        if rest.get(*term).is_some_and(|v| !is_empty_value(v)) {
            return Err(ApiError::bad_request(format!(
                "contract {term} are not supported by Tally yet"
            )));
        }
    }
    Ok(())
}

fn schedule_from(input: Option<ScheduleInput>) -> ApiResult<UsageStatementSchedule> {
    let Some(s) = input else {
        return Ok(UsageStatementSchedule {
            frequency: ScheduleFrequency::Monthly,
            day: ScheduleDay::FirstOfMonth,
            billing_anchor_date: None,
            invoice_generation_starting_at: None,
        });
    };
    let day = s.day.unwrap_or(ScheduleDay::FirstOfMonth);
    match (day, s.billing_anchor_date) {
        (ScheduleDay::CustomDate, None) => {
            return Err(ApiError::bad_request(
                "billing_anchor_date is required when day is CUSTOM_DATE",
            ))
        }
        (ScheduleDay::CustomDate, Some(anchor)) => require_hour("billing_anchor_date", anchor)?,
        _ => {}
    }
    Ok(UsageStatementSchedule {
        frequency: s.frequency,
        day,
        billing_anchor_date: s
            .billing_anchor_date
            .filter(|_| day == ScheduleDay::CustomDate),
        invoice_generation_starting_at: s.invoice_generation_starting_at,
    })
}

/// Resolves a rate card alias as of `at`: among cards holding it then, the one it was most
/// recently assigned to.
async fn rate_card_by_alias(st: &AppState, env: Env, alias: &str, at: i64) -> ApiResult<RateCard> {
    let docs = st
        .stores
        .config
        .list_docs(env, kind::RATE_CARD, None, ArchiveFilter::All, None)
        .await?;
    let mut best: Option<(Option<Time>, RateCard)> = None;
    for doc in &docs {
        let card: RateCard = decode(doc)?;
        let holding = card.aliases.iter().find(|a| {
            a.name == alias
                && a.starting_at.is_none_or(|s| s.0 <= at)
                && a.ending_before.is_none_or(|e| at < e.0)
        });
        // Later documents win ties, so `>=` keeps the most recently created among equals.
        if let Some(a) = holding {
            if best.as_ref().is_none_or(|(t, _)| a.assigned_at >= *t) {
                best = Some((a.assigned_at, card));
            }
        }
    }
    best.map(|(_, card)| card)
        .ok_or_else(|| ApiError::not_found(&format!("rate card with alias {alias:?}")))
}

async fn create(
    State(st): State<AppState>,
    Caller(env): Caller,
    Body(body): Body<Value>,
) -> ApiResult<Json<Value>> {
    if let Value::Object(map) = &body {
        check_supported(map)?;
    }
    let req: CreateContract = from_value(body)?;
    require_hour("starting_at", req.starting_at)?;
    if let Some(end) = req.ending_before {
        require_hour("ending_before", end)?;
        if end <= req.starting_at {
            return Err(ApiError::bad_request(
                "ending_before must be after starting_at",
            ));
        }
    }
    if let Some(key) = &req.uniqueness_key {
        require_text("uniqueness_key", key, 128)?;
    }
    let customer = load_customer(&st, env, &req.customer_id).await?;
    let rate_card_id = match (&req.rate_card_id, &req.rate_card_alias) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "give rate_card_id or rate_card_alias, not both",
            ))
        }
        (Some(id), None) => Some(load_rate_card(&st, env, id).await?.id),
        (None, Some(alias)) => Some(
            rate_card_by_alias(&st, env, alias, req.starting_at.0)
                .await?
                .id,
        ),
        (None, None) => None,
    };
    let now = st.now_ms();
    let contract = Contract {
        id: new_id(),
        customer_id: customer.id.clone(),
        name: req.name,
        starting_at: req.starting_at,
        ending_before: req.ending_before,
        rate_card_id,
        usage_statement_schedule: schedule_from(req.usage_statement_schedule)?,
        uniqueness_key: req.uniqueness_key,
        custom_fields: req.custom_fields,
        net_payment_terms_days: req.net_payment_terms_days,
        created_at: Time(now),
        created_by: CREATED_BY.into(),
        archived_at: None,
    };
    let doc = NewDoc {
        kind: kind::CONTRACT,
        id: &contract.id,
        parent_id: Some(&customer.id),
        unique_key: contract.uniqueness_key.as_deref(),
        created_ms: now,
        body: encode(&contract)?,
    };
    st.stores
        .config
        .insert_docs(env, &[doc])
        .await
        .map_err(|e| match e {
            crate::store::StoreError::Conflict(_) => {
                ApiError::conflict("This uniqueness key has already been used.")
            }
            other => other.into(),
        })?;
    Ok(id_response(&contract.id))
}

pub async fn load_contract(
    st: &AppState,
    env: Env,
    customer_id: &str,
    id: &str,
) -> ApiResult<Contract> {
    let contract: Contract = load(&st.stores, env, kind::CONTRACT, id, "contract").await?;
    if contract.customer_id != customer_id {
        return Err(ApiError::not_found("contract"));
    }
    Ok(contract)
}

#[derive(Deserialize)]
struct GetReq {
    contract_id: String,
    customer_id: String,
}

async fn get_v1(
    State(st): State<AppState>,
    Caller(env): Caller,
    Body(req): Body<GetReq>,
) -> ApiResult<Json<Value>> {
    let c = load_contract(&st, env, &req.customer_id, &req.contract_id).await?;
    Ok(Json(json!({ "data": c.v1_json() })))
}

async fn get_v2(
    State(st): State<AppState>,
    Caller(env): Caller,
    Body(req): Body<GetReq>,
) -> ApiResult<Json<Value>> {
    let c = load_contract(&st, env, &req.customer_id, &req.contract_id).await?;
    Ok(Json(json!({ "data": c.v2_json() })))
}

#[derive(Deserialize)]
struct ListReq {
    customer_id: String,
    covering_date: Option<Time>,
    starting_at: Option<Time>,
    #[serde(default)]
    include_archived: bool,
    cursor: Option<String>,
    limit: Option<u32>,
}

/// Contracts per page of contracts/list (Python SDK's cursor paging: 1..=20, default 20).
const MAX_CONTRACTS_PAGE: i64 = 20;

async fn list_contracts(st: &AppState, env: Env, req: ListReq, v2: bool) -> ApiResult<Json<Value>> {
    if req.covering_date.is_some() && req.starting_at.is_some() {
        return Err(ApiError::bad_request(
            "covering_date and starting_at cannot be combined",
        ));
    }
    let limit_text = req.limit.map(|l| l.to_string());
    let limit = match limit_text {
        None => MAX_CONTRACTS_PAGE,
        Some(t) => page_limit(Some(&t), MAX_CONTRACTS_PAGE)?,
    };
    let offset = decode_cursor(req.cursor.as_deref())?;
    load_customer(st, env, &req.customer_id).await?;
    let filter = if req.include_archived {
        ArchiveFilter::All
    } else {
        ArchiveFilter::Active
    };
    let docs = st
        .stores
        .config
        .list_docs(env, kind::CONTRACT, Some(&req.customer_id), filter, None)
        .await?;
    let mut contracts = docs
        .iter()
        .map(decode::<Contract>)
        .collect::<ApiResult<Vec<_>>>()?;
    contracts.retain(|c| {
        let covers = req
            .covering_date
            .is_none_or(|t| c.starting_at <= t && c.ending_before.is_none_or(|e| t < e));
        covers && req.starting_at.is_none_or(|t| c.starting_at >= t)
    });
    contracts.sort_by_key(|c| (c.starting_at, c.created_at));
    let items: Vec<Value> = contracts
        .iter()
        .map(|c| if v2 { c.v2_json() } else { c.v1_json() })
        .collect();
    Ok(offset_page(items, offset, limit, "cursor"))
}

async fn list_v1(
    State(st): State<AppState>,
    Caller(env): Caller,
    Body(req): Body<ListReq>,
) -> ApiResult<Json<Value>> {
    list_contracts(&st, env, req, false).await
}

async fn list_v2(
    State(st): State<AppState>,
    Caller(env): Caller,
    Body(req): Body<ListReq>,
) -> ApiResult<Json<Value>> {
    list_contracts(&st, env, req, true).await
}
