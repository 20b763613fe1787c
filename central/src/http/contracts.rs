//! `/v1/contracts/{create,get,list,archive,getContractRateSchedule}` and
//! `/v2/contracts/{get,list}`: the wire side. Supported terms and the rules are
//! `service::contracts`.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::routing::post;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::commit_wire::{
    contract_commits, BalanceReq, ProServiceReq, RecurringBalanceReq, ScheduledChargeReq,
};
use super::error::ApiResult;
use super::override_wire::OverrideReq;
use super::rate_wire::{price_rate_json, Selector};
use super::Routes;
use super::{
    decode_cursor, from_value, id_response, offset_page, offset_range, page_limit, Body, Caller,
    QueryMap, MAX_PAGE_SIZE,
};
use crate::model::{
    BillingProvider, Contract, ContractRecord, DeliveryMethod, MultiplierPrioritization,
    ScheduleDay, ScheduleFrequency, ScheduledChargesOnUsageInvoices,
};
use crate::service::balances::{self, Inclusion, Show};
use crate::service::billing_configs::ConfigLookup;
use crate::service::contracts::{self, ContractFilter, ContractRate, NewContract, ScheduleInput};
use crate::service::invoices;
use crate::service::packages;
use crate::service::pro_services::{self, LineInput, ScheduleRequest};
use crate::service::recurring::RecurringInput;
use crate::service::transitions::{self, TransitionInput};
use crate::store::Env;
use crate::wire::{set_opt, Dec, Time};
use crate::AppState;

pub fn routes() -> Routes {
    Routes::new()
        .route("/v1/contracts/create", post(create))
        .route("/v1/contracts/get", post(get_v1))
        .route("/v1/contracts/list", post(list_v1))
        .route("/v1/contracts/archive", post(archive))
        .route(
            "/v1/contracts/getContractRateSchedule",
            post(get_rate_schedule),
        )
        .route(
            "/v1/contracts/scheduleProServicesInvoice",
            post(schedule_pro_services_invoice),
        )
        .route("/v2/contracts/get", post(get_v2))
        .route("/v2/contracts/list", post(list_v2))
}

#[derive(Deserialize)]
struct ScheduleReq {
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
    usage_statement_schedule: Option<ScheduleReq>,
    uniqueness_key: Option<String>,
    #[serde(default)]
    custom_fields: BTreeMap<String, String>,
    net_payment_terms_days: Option<Dec>,
    salesforce_opportunity_id: Option<String>,
    netsuite_sales_order_id: Option<String>,
    total_contract_value: Option<Dec>,
    scheduled_charges_on_usage_invoices: Option<ScheduledChargesOnUsageInvoices>,
    multiplier_override_prioritization: Option<MultiplierPrioritization>,
    billing_provider_configuration: Option<ConfigLookupReq>,
    #[serde(default)]
    overrides: Vec<OverrideReq>,
    commits: Option<Vec<BalanceReq>>,
    credits: Option<Vec<BalanceReq>>,
    recurring_commits: Option<Vec<RecurringBalanceReq>>,
    recurring_credits: Option<Vec<RecurringBalanceReq>>,
    scheduled_charges: Option<Vec<ScheduledChargeReq>>,
    professional_services: Option<Vec<ProServiceReq>>,
    subscriptions: Option<Vec<super::subscriptions::SubscriptionReq>>,
    /// Set by `service::packages::contract_body` (a body naming a package is rewritten first).
    package_id: Option<String>,
    transition: Option<TransitionReq>,
}

/// `ContractTransitionInput` (`type` and `trueup` checked by `service::transitions`).
#[derive(Deserialize)]
struct TransitionReq {
    from_contract_id: String,
    #[serde(rename = "type")]
    transition_type: String,
    future_invoice_behavior: Option<FutureInvoiceBehaviorReq>,
}

#[derive(Deserialize)]
struct FutureInvoiceBehaviorReq {
    trueup: Option<String>,
}

/// `ProServiceInvoiceLineItem` (`amendment_id` and the NetSuite fields are accepted and not
/// kept).
#[derive(Deserialize)]
struct ProServiceLineReq {
    professional_service_id: String,
    amount: Option<Dec>,
    unit_price: Option<Dec>,
    quantity: Option<Dec>,
}

#[derive(Deserialize)]
struct ScheduleProServicesReq {
    customer_id: String,
    contract_id: String,
    issued_at: Time,
    line_items: Vec<ProServiceLineReq>,
}

/// `scheduleProServicesInvoice`: `{ data: [the invoice the lines are on] }`.
async fn schedule_pro_services_invoice(
    State(st): State<AppState>,
    Caller(env): Caller,
    Body(req): Body<ScheduleProServicesReq>,
) -> ApiResult<Json<Value>> {
    let at = req.issued_at;
    let request = ScheduleRequest {
        customer_id: req.customer_id,
        contract_id: req.contract_id,
        issued_at: req.issued_at,
        line_items: req
            .line_items
            .into_iter()
            .map(|l| LineInput {
                professional_service_id: l.professional_service_id,
                amount: l.amount,
                unit_price: l.unit_price,
                quantity: l.quantity,
            })
            .collect(),
    };
    let contract = pro_services::schedule_invoice(&st, env, request).await?;
    let invoice = invoices::draft_at(&st, env, &contract, at.0).await?;
    Ok(Json(json!({ "data": [invoice] })))
}

/// `CustomerBillingProviderConfigurationLookup`.
#[derive(Deserialize)]
struct ConfigLookupReq {
    billing_provider_configuration_id: Option<String>,
    billing_provider: Option<BillingProvider>,
    delivery_method: Option<DeliveryMethod>,
}

async fn create(
    State(st): State<AppState>,
    Caller(env): Caller,
    Body(body): Body<Value>,
) -> ApiResult<Json<Value>> {
    let body = match body {
        Value::Object(map)
            if map.contains_key("package_id") || map.contains_key("package_alias") =>
        {
            Value::Object(packages::contract_body(&st, env, map).await?)
        }
        other => other,
    };
    let new = new_contract(body)?;
    Ok(id_response(&contracts::create(&st, env, new).await?))
}

/// A `contracts/create` body as the service takes it (what Tally refuses checked first).
pub(super) fn new_contract(body: Value) -> ApiResult<NewContract> {
    if let Value::Object(map) = &body {
        contracts::check_supported(map)?;
    }
    let req: CreateContract = from_value(body)?;
    Ok(NewContract {
        customer_id: req.customer_id,
        starting_at: req.starting_at,
        ending_before: req.ending_before,
        name: req.name,
        rate_card_id: req.rate_card_id,
        rate_card_alias: req.rate_card_alias,
        usage_statement_schedule: req.usage_statement_schedule.map(|s| ScheduleInput {
            frequency: s.frequency,
            day: s.day,
            billing_anchor_date: s.billing_anchor_date,
            invoice_generation_starting_at: s.invoice_generation_starting_at,
        }),
        uniqueness_key: req.uniqueness_key,
        custom_fields: req.custom_fields,
        net_payment_terms_days: req.net_payment_terms_days,
        billing_provider_configuration: req.billing_provider_configuration.map(|l| ConfigLookup {
            billing_provider_configuration_id: l.billing_provider_configuration_id,
            billing_provider: l.billing_provider,
            delivery_method: l.delivery_method,
        }),
        record: ContractRecord {
            salesforce_opportunity_id: req.salesforce_opportunity_id,
            netsuite_sales_order_id: req.netsuite_sales_order_id,
            total_contract_value: req.total_contract_value,
            scheduled_charges_on_usage_invoices: req.scheduled_charges_on_usage_invoices,
            multiplier_override_prioritization: req.multiplier_override_prioritization,
            billing_provider_configuration: None,
            package_id: req.package_id,
        },
        overrides: req.overrides.into_iter().map(OverrideReq::domain).collect(),
        commits: contract_commits(req.commits.unwrap_or_default())?,
        credits: req
            .credits
            .into_iter()
            .flatten()
            .map(BalanceReq::credit)
            .collect(),
        recurring_commits: recurring(req.recurring_commits),
        recurring_credits: recurring(req.recurring_credits),
        scheduled_charges: req
            .scheduled_charges
            .into_iter()
            .flatten()
            .map(ScheduledChargeReq::domain)
            .collect(),
        professional_services: req
            .professional_services
            .into_iter()
            .flatten()
            .map(ProServiceReq::domain)
            .collect(),
        subscriptions: super::subscriptions::inputs(req.subscriptions),
        transition: req.transition.map(|t| TransitionInput {
            from_contract_id: t.from_contract_id,
            transition_type: t.transition_type,
            trueup: t.future_invoice_behavior.and_then(|f| f.trueup),
        }),
    })
}

fn recurring(reqs: Option<Vec<RecurringBalanceReq>>) -> Vec<RecurringInput> {
    reqs.into_iter()
        .flatten()
        .map(RecurringBalanceReq::domain)
        .collect()
}

#[derive(Deserialize)]
struct GetReq {
    contract_id: String,
    customer_id: String,
    include_balance: Option<bool>,
    include_ledgers: Option<bool>,
}

/// What a contract read shows of its commits' and credits' balances (drafts counted).
fn show(include_balance: Option<bool>, include_ledgers: Option<bool>) -> Show {
    Show {
        balance: include_balance.unwrap_or(false),
        ledger: include_ledgers.unwrap_or(false),
        inclusion: Inclusion::FinalizedAndDraft,
    }
}

async fn get_contract(st: &AppState, env: Env, req: GetReq, v2: bool) -> ApiResult<Json<Value>> {
    let c = contracts::get(st, env, &req.customer_id, &req.contract_id).await?;
    let now = st.now_ms();
    let mut v = if v2 { c.v2_json(now) } else { c.v1_json(now) };
    let show = show(req.include_balance, req.include_ledgers);
    let markers = transitions::of_customer(st, env, &req.customer_id).await?;
    transitions::decorate(&markers, &mut [(&c, &mut v)], v2);
    balances::decorate_contracts(st, env, &req.customer_id, &mut [(&c, &mut v)], show).await?;
    Ok(Json(json!({ "data": v })))
}

async fn get_v1(
    State(st): State<AppState>,
    Caller(env): Caller,
    Body(req): Body<GetReq>,
) -> ApiResult<Json<Value>> {
    get_contract(&st, env, req, false).await
}

async fn get_v2(
    State(st): State<AppState>,
    Caller(env): Caller,
    Body(req): Body<GetReq>,
) -> ApiResult<Json<Value>> {
    get_contract(&st, env, req, true).await
}

#[derive(Deserialize)]
struct ArchiveReq {
    contract_id: String,
    customer_id: String,
    void_invoices: bool,
}

async fn archive(
    State(st): State<AppState>,
    Caller(env): Caller,
    Body(req): Body<ArchiveReq>,
) -> ApiResult<Json<Value>> {
    contracts::archive(
        &st,
        env,
        &req.customer_id,
        &req.contract_id,
        req.void_invoices,
    )
    .await?;
    Ok(id_response(&req.contract_id))
}

#[derive(Deserialize)]
struct ListReq {
    customer_id: String,
    covering_date: Option<Time>,
    starting_at: Option<Time>,
    #[serde(default)]
    include_archived: bool,
    include_balance: Option<bool>,
    include_ledgers: Option<bool>,
    cursor: Option<String>,
    limit: Option<u32>,
}

/// Contracts per page of contracts/list (Python SDK's cursor paging: 1..=20, default 20).
const MAX_CONTRACTS_PAGE: i64 = 20;

async fn list_contracts(st: &AppState, env: Env, req: ListReq, v2: bool) -> ApiResult<Json<Value>> {
    let limit = match req.limit.map(|l| l.to_string()) {
        None => MAX_CONTRACTS_PAGE,
        Some(t) => page_limit(Some(&t), MAX_CONTRACTS_PAGE)?,
    };
    let offset = decode_cursor(req.cursor.as_deref())?;
    let customer_id = req.customer_id.clone();
    let filter = ContractFilter {
        customer_id: req.customer_id,
        covering_date: req.covering_date,
        starting_at: req.starting_at,
        include_archived: req.include_archived,
    };
    let found = contracts::list(st, env, filter).await?;
    let now = st.now_ms();
    let mut items: Vec<Value> = found
        .iter()
        .map(|c| if v2 { c.v2_json(now) } else { c.v1_json(now) })
        .collect();
    let mut pairs: Vec<(&Contract, &mut Value)> = found.iter().zip(items.iter_mut()).collect();
    let markers = transitions::of_customer(st, env, &customer_id).await?;
    transitions::decorate(&markers, &mut pairs, v2);
    let show = show(req.include_balance, req.include_ledgers);
    balances::decorate_contracts(st, env, &customer_id, &mut pairs, show).await?;
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

#[derive(Deserialize)]
struct RateScheduleReq {
    customer_id: String,
    contract_id: String,
    at: Option<Time>,
    #[serde(default)]
    selectors: Vec<Selector>,
}

/// `getContractRateSchedule`: one offset page (`limit`, `next_page` in the query) of the
/// contract's effective rates at `at`.
async fn get_rate_schedule(
    State(st): State<AppState>,
    Caller(env): Caller,
    q: QueryMap,
    Body(req): Body<RateScheduleReq>,
) -> ApiResult<Json<Value>> {
    let limit = page_limit(q.one("limit"), MAX_PAGE_SIZE)?;
    let offset = decode_cursor(q.one("next_page"))?;
    let selectors = Selector::domain_all(req.selectors);
    let (card_id, rates) = contracts::rate_schedule(
        &st,
        env,
        &req.customer_id,
        &req.contract_id,
        req.at,
        &selectors,
    )
    .await?;
    let (range, next) = offset_range(rates.len(), offset, limit);
    let items: Vec<Value> = rates[range]
        .iter()
        .map(|r| contract_rate_json(card_id.as_deref().unwrap_or_default(), r))
        .collect();
    Ok(Json(json!({ "data": items, "next_page": next })))
}

/// A `ContractRateSchedule` item.
fn contract_rate_json(card_id: &str, r: &ContractRate) -> Value {
    let rate = &r.rate;
    let mut item = json!({
        "rate_card_id": card_id,
        "product_id": rate.product_id,
        "product_name": r.product.current.name,
        "product_tags": r.product.current.tags,
        "product_custom_fields": r.product.custom_fields,
        "entitled": true,
        "list_rate": rate.rate_json(),
        "starting_at": Time(r.span.start_ms),
    });
    // An open-ended piece has no `ending_before` (optional, non-nullable upstream).
    let ending = (r.span.end_ms != i64::MAX).then_some(Time(r.span.end_ms));
    set_opt(&mut item, "ending_before", ending);
    if !rate.pricing_group_values.is_empty() {
        item["pricing_group_values"] = json!(rate.pricing_group_values);
    }
    set_opt(&mut item, "billing_frequency", rate.billing_frequency);
    set_opt(&mut item, "commit_rate", rate.commit_rate.as_ref());
    if let Some((price, credit_type)) = &r.override_price {
        item["override_rate"] = price_rate_json(price, credit_type);
    }
    item
}
