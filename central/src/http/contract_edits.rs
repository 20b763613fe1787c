//! `/v1/contracts/{amend,updateEndDate}` and `/v2/contracts/{edit,getEditHistory}`: the wire
//! side. What a change may do and its rules are `service::contract_edits`.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::routing::post;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::commit_wire::{
    BalanceReq, InvoiceItemReq, ProServiceReq, RecurringBalanceReq, ScheduledChargeReq,
};
use super::error::ApiResult;
use super::override_wire::OverrideReq;
use super::subscriptions::{inputs as subscription_inputs, SubscriptionReq, SubscriptionUpdateReq};
use super::{from_value, id_response, Body, Caller, Routes};
use crate::model::{double_option, AmendmentInfo};
use crate::service::charges::{ChargeInput, ChargeUpdateInput, ItemUpdateInput};
use crate::service::commits::BalanceInput;
use crate::service::contract_edits::{self, Amendment, BalanceChanges, Edit, EndDate};
use crate::service::recurring::RecurringInput;
use crate::wire::{Dec, Time};
use crate::AppState;

pub fn routes() -> Routes {
    Routes::new()
        .route("/v1/contracts/amend", post(amend))
        .route("/v1/contracts/updateEndDate", post(update_end_date))
        .route("/v2/contracts/edit", post(edit))
        .route("/v2/contracts/getEditHistory", post(edit_history))
}

/// `AmendContractPayload`.
#[derive(Deserialize)]
struct AmendReq {
    customer_id: String,
    contract_id: String,
    starting_at: Time,
    #[serde(default)]
    overrides: Vec<OverrideReq>,
    #[serde(default)]
    commits: Vec<BalanceReq>,
    #[serde(default)]
    credits: Vec<BalanceReq>,
    #[serde(default)]
    scheduled_charges: Vec<ScheduledChargeReq>,
    #[serde(default)]
    professional_services: Vec<ProServiceReq>,
    #[serde(default)]
    custom_fields: BTreeMap<String, String>,
    salesforce_opportunity_id: Option<String>,
    netsuite_sales_order_id: Option<String>,
    total_contract_value: Option<Dec>,
}

async fn amend(
    State(st): State<AppState>,
    Caller(env): Caller,
    Body(body): Body<Value>,
) -> ApiResult<Json<Value>> {
    // A body that is not an object fails the typed parse that follows.
    if let Some(map) = body.as_object() {
        contract_edits::check_amend_supported(map)?;
    }
    let req: AmendReq = from_value(body)?;
    let amendment = Amendment {
        customer_id: req.customer_id,
        contract_id: req.contract_id,
        info: AmendmentInfo {
            starting_at: req.starting_at,
            custom_fields: req.custom_fields,
            salesforce_opportunity_id: req.salesforce_opportunity_id,
            netsuite_sales_order_id: req.netsuite_sales_order_id,
            total_contract_value: req.total_contract_value,
        },
        overrides: req.overrides.into_iter().map(OverrideReq::domain).collect(),
        professional_services: req
            .professional_services
            .into_iter()
            .map(ProServiceReq::domain)
            .collect(),
        balances: BalanceChanges {
            add_commits: ("commits", balance_inputs(req.commits, "commits")?),
            add_credits: ("credits", credit_inputs(req.credits)),
            add_scheduled_charges: ("scheduled_charges", charge_inputs(req.scheduled_charges)),
            ..BalanceChanges::default()
        },
    };
    Ok(id_response(
        &contract_edits::amend(&st, env, amendment).await?,
    ))
}

/// `UpdateContractEndDatePayload`.
#[derive(Deserialize)]
struct UpdateEndDateReq {
    customer_id: String,
    contract_id: String,
    ending_before: Option<Time>,
    allow_ending_before_finalized_invoice: Option<bool>,
}

async fn update_end_date(
    State(st): State<AppState>,
    Caller(env): Caller,
    Body(req): Body<UpdateEndDateReq>,
) -> ApiResult<Json<Value>> {
    let end = EndDate {
        ending_before: req.ending_before,
        allow_before_finalized: req.allow_ending_before_finalized_invoice.unwrap_or(true),
    };
    contract_edits::update_end_date(&st, env, &req.customer_id, &req.contract_id, end).await?;
    Ok(id_response(&req.contract_id))
}

#[derive(Deserialize)]
struct IdReq {
    id: String,
}

/// `EditContractPayload` (fields Tally refuses are checked on the raw body first).
#[derive(Deserialize)]
struct EditReq {
    customer_id: String,
    contract_id: String,
    uniqueness_key: Option<String>,
    #[serde(default)]
    add_overrides: Vec<OverrideReq>,
    #[serde(default)]
    remove_overrides: Vec<IdReq>,
    #[serde(default, with = "double_option")]
    update_contract_end_date: Option<Option<Time>>,
    #[serde(default, with = "double_option")]
    update_contract_name: Option<Option<String>>,
    #[serde(default, with = "double_option")]
    update_net_payment_terms_days: Option<Option<Dec>>,
    allow_contract_ending_before_finalized_invoice: Option<bool>,
    #[serde(default)]
    add_commits: Vec<BalanceReq>,
    #[serde(default)]
    add_credits: Vec<BalanceReq>,
    #[serde(default)]
    update_commits: Vec<Value>,
    #[serde(default)]
    update_credits: Vec<Value>,
    #[serde(default)]
    archive_commits: Vec<IdReq>,
    #[serde(default)]
    archive_credits: Vec<IdReq>,
    #[serde(default)]
    add_recurring_commits: Vec<RecurringBalanceReq>,
    #[serde(default)]
    add_recurring_credits: Vec<RecurringBalanceReq>,
    #[serde(default)]
    add_scheduled_charges: Vec<ScheduledChargeReq>,
    #[serde(default)]
    archive_scheduled_charges: Vec<IdReq>,
    #[serde(default)]
    add_subscriptions: Vec<SubscriptionReq>,
    #[serde(default)]
    update_subscriptions: Vec<SubscriptionUpdateReq>,
    #[serde(default)]
    update_scheduled_charges: Vec<ChargeUpdateReq>,
}

/// `UpdateScheduledChargeInput` (`netsuite_sales_order_id` is accepted and not kept).
#[derive(Deserialize)]
struct ChargeUpdateReq {
    scheduled_charge_id: String,
    invoice_schedule: Option<ScheduleUpdateReq>,
}

/// `UpdateInvoiceScheduleInput`.
#[derive(Deserialize, Default)]
struct ScheduleUpdateReq {
    #[serde(default)]
    add_schedule_items: Vec<InvoiceItemReq>,
    #[serde(default)]
    remove_schedule_items: Vec<IdReq>,
    #[serde(default)]
    update_schedule_items: Vec<ItemUpdateReq>,
}

#[derive(Deserialize)]
struct ItemUpdateReq {
    id: String,
    timestamp: Option<Time>,
    amount: Option<Dec>,
    unit_price: Option<Dec>,
    quantity: Option<Dec>,
}

impl ChargeUpdateReq {
    fn domain(self) -> ChargeUpdateInput {
        let s = self.invoice_schedule.unwrap_or_default();
        ChargeUpdateInput {
            scheduled_charge_id: self.scheduled_charge_id,
            add_items: s
                .add_schedule_items
                .into_iter()
                .map(InvoiceItemReq::domain)
                .collect(),
            remove_items: s.remove_schedule_items.into_iter().map(|r| r.id).collect(),
            update_items: s
                .update_schedule_items
                .into_iter()
                .map(|u| ItemUpdateInput {
                    id: u.id,
                    timestamp: u.timestamp,
                    amount: u.amount,
                    unit_price: u.unit_price,
                    quantity: u.quantity,
                })
                .collect(),
        }
    }
}

async fn edit(
    State(st): State<AppState>,
    Caller(env): Caller,
    Body(body): Body<Value>,
) -> ApiResult<Json<Value>> {
    // A body that is not an object fails the typed parse that follows.
    if let Some(map) = body.as_object() {
        contract_edits::check_edit_supported(map)?;
    }
    let req: EditReq = from_value(body)?;
    let allow = req
        .allow_contract_ending_before_finalized_invoice
        .unwrap_or(true);
    let edit = Edit {
        customer_id: req.customer_id,
        contract_id: req.contract_id,
        uniqueness_key: req.uniqueness_key,
        add_overrides: req
            .add_overrides
            .into_iter()
            .map(OverrideReq::domain)
            .collect(),
        remove_overrides: req.remove_overrides.into_iter().map(|r| r.id).collect(),
        end_date: req.update_contract_end_date.map(|ending_before| EndDate {
            ending_before,
            allow_before_finalized: allow,
        }),
        name: req.update_contract_name,
        net_payment_terms_days: req.update_net_payment_terms_days,
        balances: BalanceChanges {
            add_commits: (
                "add_commits",
                balance_inputs(req.add_commits, "add_commits")?,
            ),
            add_credits: ("add_credits", credit_inputs(req.add_credits)),
            archive_commits: req.archive_commits.into_iter().map(|r| r.id).collect(),
            archive_credits: req.archive_credits.into_iter().map(|r| r.id).collect(),
            add_recurring_commits: recurring_inputs(req.add_recurring_commits),
            add_recurring_credits: recurring_inputs(req.add_recurring_credits),
            add_scheduled_charges: (
                "add_scheduled_charges",
                charge_inputs(req.add_scheduled_charges),
            ),
            archive_scheduled_charges: req
                .archive_scheduled_charges
                .into_iter()
                .map(|r| r.id)
                .collect(),
            update_scheduled_charges: req
                .update_scheduled_charges
                .into_iter()
                .map(ChargeUpdateReq::domain)
                .collect(),
            refused: [
                ("update_commits", req.update_commits.is_empty()),
                ("update_credits", req.update_credits.is_empty()),
            ]
            .into_iter()
            .filter(|(_, empty)| !empty)
            .map(|(field, _)| field)
            .collect(),
        },
        add_subscriptions: subscription_inputs(Some(req.add_subscriptions)),
        update_subscriptions: req
            .update_subscriptions
            .into_iter()
            .map(SubscriptionUpdateReq::domain)
            .collect(),
    };
    let change = contract_edits::edit(&st, env, edit).await?;
    Ok(Json(
        json!({ "data": { "id": change.id, "edit": change.edit_json() } }),
    ))
}

#[derive(Deserialize)]
struct HistoryReq {
    customer_id: String,
    contract_id: String,
}

async fn edit_history(
    State(st): State<AppState>,
    Caller(env): Caller,
    Body(req): Body<HistoryReq>,
) -> ApiResult<Json<Value>> {
    let changes = contract_edits::history(&st, env, &req.customer_id, &req.contract_id).await?;
    let data: Vec<Value> = changes.iter().map(|c| c.edit_json()).collect();
    Ok(Json(json!({ "data": data })))
}

/// Commits of an amendment or edit (`field[i]`), each needing its `type`.
fn balance_inputs(reqs: Vec<BalanceReq>, field: &str) -> ApiResult<Vec<BalanceInput>> {
    reqs.into_iter()
        .enumerate()
        .map(|(i, r)| r.commit(&format!("{field}[{i}]")))
        .collect()
}

fn charge_inputs(reqs: Vec<ScheduledChargeReq>) -> Vec<ChargeInput> {
    reqs.into_iter().map(ScheduledChargeReq::domain).collect()
}

fn recurring_inputs(reqs: Vec<RecurringBalanceReq>) -> Vec<RecurringInput> {
    reqs.into_iter().map(RecurringBalanceReq::domain).collect()
}

fn credit_inputs(reqs: Vec<BalanceReq>) -> Vec<BalanceInput> {
    reqs.into_iter().map(BalanceReq::credit).collect()
}
