//! The wire side of subscriptions: the `SubscriptionInput` and `update_subscriptions` request
//! shapes shared by `contracts/create` and `v2/contracts/edit`, and
//! `/v1/contracts/getSubscriptionQuantityHistory`. The rules are `service::subscriptions`.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::routing::post;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::Routes;
use super::{Body, Caller};
use crate::billing::RatingContext;
use crate::model::{
    double_option, BillingFrequency, CollectionSchedule, InvoiceBehavior, InvoicePlacement,
    ProrationRoundingConfig, QuantityManagementMode,
};
use crate::service::contracts;
use crate::service::subscriptions::{
    self, ProrationInput, QuantityUpdateInput, SeatChangeInput, SeatConfigInput, SeatUpdatesInput,
    SubscriptionInput, SubscriptionUpdateInput,
};
use crate::wire::{Dec, Time};
use crate::AppState;

pub fn routes() -> Routes {
    Routes::new().route(
        "/v1/contracts/getSubscriptionQuantityHistory",
        post(quantity_history),
    )
}

#[derive(Deserialize)]
struct ProrationReq {
    is_prorated: Option<bool>,
    invoice_behavior: Option<InvoiceBehavior>,
    rounding: Option<ProrationRoundingConfig>,
}

#[derive(Deserialize)]
struct SubscriptionRateReq {
    billing_frequency: Option<BillingFrequency>,
    product_id: Option<String>,
}

#[derive(Deserialize)]
struct BillingCycleReq {
    anchor_date: Option<Time>,
    invoice_placement: Option<InvoicePlacement>,
}

/// `SubscriptionInput` (`temporary_id` is accepted: only subscription-linked recurring
/// commits, which Tally refuses, would name it).
#[derive(Deserialize)]
pub struct SubscriptionReq {
    collection_schedule: Option<CollectionSchedule>,
    proration: Option<ProrationReq>,
    subscription_rate: Option<SubscriptionRateReq>,
    initial_quantity: Option<Dec>,
    quantity_management_mode: Option<QuantityManagementMode>,
    seat_config: Option<SeatConfigReq>,
    payment_gate_config: Option<Value>,
    starting_at: Option<Time>,
    ending_before: Option<Time>,
    billing_cycle_config: Option<BillingCycleReq>,
    name: Option<String>,
    description: Option<String>,
    #[serde(default)]
    custom_fields: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct SeatConfigReq {
    seat_group_key: Option<String>,
    initial_seat_ids: Option<Vec<String>>,
    initial_unassigned_seats: Option<Dec>,
}

/// `SubscriptionSeatUpdateAssignedSeat` / `...UnassignedSeat`.
#[derive(Deserialize)]
struct SeatChangeReq {
    starting_at: Option<Time>,
    seat_ids: Option<Vec<String>>,
    quantity: Option<Dec>,
}

impl SeatChangeReq {
    fn domain(self) -> SeatChangeInput {
        SeatChangeInput {
            starting_at: self.starting_at,
            seat_ids: self.seat_ids,
            quantity: self.quantity,
        }
    }
}

/// `SubscriptionSeatUpdateInput`.
#[derive(Deserialize)]
struct SeatUpdatesReq {
    #[serde(default)]
    add_seat_ids: Vec<SeatChangeReq>,
    #[serde(default)]
    remove_seat_ids: Vec<SeatChangeReq>,
    #[serde(default)]
    add_unassigned_seats: Vec<SeatChangeReq>,
    #[serde(default)]
    remove_unassigned_seats: Vec<SeatChangeReq>,
}

fn changes(list: Vec<SeatChangeReq>) -> Vec<SeatChangeInput> {
    list.into_iter().map(SeatChangeReq::domain).collect()
}

fn set(v: &Option<Value>) -> bool {
    v.as_ref().is_some_and(|v| !v.is_null())
}

impl SubscriptionReq {
    pub fn domain(self) -> SubscriptionInput {
        let mut refused = Vec::new();
        if set(&self.payment_gate_config) {
            refused.push("payment_gate_config");
        }
        let (billing_frequency, product_id) = match self.subscription_rate {
            Some(r) => (r.billing_frequency, r.product_id),
            None => (None, None),
        };
        let (anchor_date, invoice_placement) = match self.billing_cycle_config {
            Some(c) => (c.anchor_date, c.invoice_placement),
            None => (None, None),
        };
        SubscriptionInput {
            collection_schedule: self.collection_schedule,
            proration: self.proration.map(|p| ProrationInput {
                is_prorated: p.is_prorated,
                invoice_behavior: p.invoice_behavior,
                rounding: p.rounding,
            }),
            billing_frequency,
            product_id,
            initial_quantity: self.initial_quantity,
            quantity_management_mode: self.quantity_management_mode,
            starting_at: self.starting_at,
            ending_before: self.ending_before,
            anchor_date,
            invoice_placement,
            name: self.name,
            description: self.description,
            custom_fields: self.custom_fields,
            seat_config: self.seat_config.map(|c| SeatConfigInput {
                seat_group_key: c.seat_group_key,
                initial_seat_ids: c.initial_seat_ids,
                initial_unassigned_seats: c.initial_unassigned_seats,
            }),
            refused,
        }
    }
}

pub fn inputs(reqs: Option<Vec<SubscriptionReq>>) -> Vec<SubscriptionInput> {
    reqs.into_iter()
        .flatten()
        .map(SubscriptionReq::domain)
        .collect()
}

#[derive(Deserialize)]
struct QuantityUpdateReq {
    starting_at: Option<Time>,
    quantity: Option<Dec>,
    quantity_delta: Option<Dec>,
}

/// One `update_subscriptions` entry (`UpdateSubscriptionInput`).
#[derive(Deserialize)]
pub struct SubscriptionUpdateReq {
    subscription_id: String,
    #[serde(default, with = "double_option")]
    ending_before: Option<Option<Time>>,
    #[serde(default)]
    quantity_updates: Vec<QuantityUpdateReq>,
    name: Option<String>,
    seat_updates: Option<SeatUpdatesReq>,
    quantity_management_mode_update: Option<Value>,
    proration_rounding: Option<Value>,
}

impl SubscriptionUpdateReq {
    pub fn domain(self) -> SubscriptionUpdateInput {
        let mut refused = Vec::new();
        for (field, v) in [
            (
                "quantity_management_mode_update",
                &self.quantity_management_mode_update,
            ),
            ("proration_rounding", &self.proration_rounding),
        ] {
            if set(v) {
                refused.push(field);
            }
        }
        SubscriptionUpdateInput {
            subscription_id: self.subscription_id,
            ending_before: self.ending_before,
            quantity_updates: self
                .quantity_updates
                .into_iter()
                .map(|u| QuantityUpdateInput {
                    starting_at: u.starting_at,
                    quantity: u.quantity,
                    quantity_delta: u.quantity_delta,
                })
                .collect(),
            seat_updates: self.seat_updates.map(|u| SeatUpdatesInput {
                add_seat_ids: changes(u.add_seat_ids),
                remove_seat_ids: changes(u.remove_seat_ids),
                add_unassigned_seats: changes(u.add_unassigned_seats),
                remove_unassigned_seats: changes(u.remove_unassigned_seats),
            }),
            name: self.name,
            refused,
        }
    }
}

#[derive(Deserialize)]
struct HistoryReq {
    customer_id: String,
    contract_id: String,
    subscription_id: String,
}

async fn quantity_history(
    State(st): State<AppState>,
    Caller(env): Caller,
    Body(req): Body<HistoryReq>,
) -> ApiResult<Json<Value>> {
    let contract = contracts::get(&st, env, &req.customer_id, &req.contract_id).await?;
    let Some(sub) = contract
        .subscriptions
        .iter()
        .find(|s| s.id == req.subscription_id)
    else {
        return Err(ApiError::not_found("subscription"));
    };
    let ctx = RatingContext::load(&st, env, &contract).await?;
    let data = subscriptions::quantity_history(sub, ctx.snapshot(), st.now_ms())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(json!({ "data": data })))
}
