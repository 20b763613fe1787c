//! Subscriptions of a contract (`subscriptions` on `contracts/create`, `add_subscriptions` and
//! `update_subscriptions` on `v2/contracts/edit`, `getSubscriptionQuantityHistory`): validated
//! into [`SubscriptionRecord`]s, priced by core (`tally_core::subscriptions`).
//!
//! Invariants:
//! - Every stored subscription passed [`build`]: an unarchived SUBSCRIPTION product with a rate
//!   on the contract's rate card for its `billing_frequency`; hour-aligned instants inside the
//!   contract; a quantity that is never negative at any instant (checked again by
//!   [`update`] after every quantity update).
//! - SEAT_BASED subscriptions take `seat_updates` and QUANTITY_ONLY ones `quantity_updates`,
//!   never the other (`model::Seats` says how seats make the quantity).
//! - Fields that would change amounts and are not implemented (`quantity_management_mode_update`,
//!   payment gates, `proration_rounding` updates) are refused with a 400 naming them.
//! - A contract holds at most [`MAX_SUBSCRIPTIONS_PER_CONTRACT`] subscriptions, and a
//!   subscription at most [`MAX_QUANTITY_UPDATES`] quantity updates.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde_json::Value;

use super::commits::{check_amount, hour, invalid, path, product, CommitError};
use super::{require_text, Invalid};
use crate::model::{
    kind, new_id, BillingCycleConfig, BillingFrequency, CollectionSchedule, Contract,
    InvoiceBehavior, InvoicePlacement, ProductRef, ProductType, ProrationRoundingConfig,
    QuantityChange, QuantityManagementMode, QuantityUpdate, RateRecord, SubscriptionProration,
    SubscriptionRateRecord, SubscriptionRecord, SubscriptionUpdate, USD_ID,
};
use crate::store::{ArchiveFilter, Env};
use crate::wire::{Dec, Time};
use crate::AppState;

type Result<T> = std::result::Result<T, CommitError>;

/// Most subscriptions one contract may hold.
pub const MAX_SUBSCRIPTIONS_PER_CONTRACT: usize = 50;
/// Most quantity updates (the initial quantity included) one subscription may hold.
pub const MAX_QUANTITY_UPDATES: usize = 1000;

/// `proration` as a client gives it.
#[derive(Default)]
pub struct ProrationInput {
    pub is_prorated: Option<bool>,
    pub invoice_behavior: Option<InvoiceBehavior>,
    pub rounding: Option<ProrationRoundingConfig>,
}

/// A subscription as a client gives it (`SubscriptionInput`).
pub struct SubscriptionInput {
    pub collection_schedule: Option<CollectionSchedule>,
    pub proration: Option<ProrationInput>,
    pub billing_frequency: Option<BillingFrequency>,
    pub product_id: Option<String>,
    pub initial_quantity: Option<Dec>,
    pub quantity_management_mode: Option<QuantityManagementMode>,
    pub starting_at: Option<Time>,
    pub ending_before: Option<Time>,
    pub anchor_date: Option<Time>,
    pub invoice_placement: Option<InvoicePlacement>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub custom_fields: BTreeMap<String, String>,
    /// SEAT_BASED: `seat_config`.
    pub seat_config: Option<SeatConfigInput>,
    /// Fields set that Tally refuses (`payment_gate_config`), by name.
    pub refused: Vec<&'static str>,
}

/// `seat_config` as a client gives it.
pub struct SeatConfigInput {
    pub seat_group_key: Option<String>,
    pub initial_seat_ids: Option<Vec<String>>,
    pub initial_unassigned_seats: Option<Dec>,
}

/// A seat change as a client gives it (`seat_ids` for assigned seats, `quantity` for
/// unassigned ones).
pub struct SeatChangeInput {
    pub starting_at: Option<Time>,
    pub seat_ids: Option<Vec<String>>,
    pub quantity: Option<Dec>,
}

/// `seat_updates` as a client gives it.
#[derive(Default)]
pub struct SeatUpdatesInput {
    pub add_seat_ids: Vec<SeatChangeInput>,
    pub remove_seat_ids: Vec<SeatChangeInput>,
    pub add_unassigned_seats: Vec<SeatChangeInput>,
    pub remove_unassigned_seats: Vec<SeatChangeInput>,
}

/// Most seat ids one change may name.
pub const MAX_SEAT_IDS: usize = 1000;

fn seat_ids(at: &str, field: &str, ids: Option<Vec<String>>) -> Result<Vec<String>> {
    let ids = ids.ok_or_else(|| invalid(at, field, "required"))?;
    if ids.len() > MAX_SEAT_IDS {
        return Err(invalid(
            at,
            field,
            format!("at most {MAX_SEAT_IDS} seat ids"),
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, id) in ids.iter().enumerate() {
        require_text(&format!("{}[{i}]", path(at, field)), id, 256)?;
        if !seen.insert(id) {
            return Err(invalid(
                at,
                &format!("{field}[{i}]"),
                format!("{id} is named twice"),
            ));
        }
    }
    Ok(ids)
}

/// A whole number of seats, `> 0` (`positive`) or `>= 0`.
fn seat_count(at: &str, field: &str, q: Dec, positive: bool) -> Result<Dec> {
    check_amount(at, field, q)?;
    if q.0.fract() != Decimal::ZERO || (positive && q.0.is_zero()) {
        let what = if positive {
            "a whole number above 0"
        } else {
            "a whole number"
        };
        return Err(invalid(at, field, format!("must be {what}")));
    }
    Ok(Dec(q.0.normalize()))
}

/// The seat changes of `seat_updates` (`at` names it), each an update in the order given.
fn seat_changes(at: &str, input: SeatUpdatesInput, from: Time) -> Result<Vec<QuantityUpdate>> {
    let mut out = Vec::new();
    for (field, list) in [
        ("add_seat_ids", input.add_seat_ids),
        ("remove_seat_ids", input.remove_seat_ids),
        ("add_unassigned_seats", input.add_unassigned_seats),
        ("remove_unassigned_seats", input.remove_unassigned_seats),
    ] {
        for (i, c) in list.into_iter().enumerate() {
            let at = format!("{}[{i}]", path(at, field));
            let starting_at = c
                .starting_at
                .ok_or_else(|| invalid(&at, "starting_at", "required"))?;
            hour(&at, "starting_at", starting_at)?;
            if starting_at.0 < from.0 {
                return Err(invalid(
                    &at,
                    "starting_at",
                    "must not be before the subscription's starting_at",
                ));
            }
            let change = match field {
                "add_seat_ids" => QuantityChange::AddSeats(seat_ids(&at, "seat_ids", c.seat_ids)?),
                "remove_seat_ids" => {
                    QuantityChange::RemoveSeats(seat_ids(&at, "seat_ids", c.seat_ids)?)
                }
                _ => {
                    let q = c
                        .quantity
                        .ok_or_else(|| invalid(&at, "quantity", "required"))?;
                    let q = seat_count(&at, "quantity", q, true)?;
                    match field {
                        "add_unassigned_seats" => QuantityChange::AddUnassigned(q),
                        _ => QuantityChange::RemoveUnassigned(q),
                    }
                }
            };
            out.push(QuantityUpdate {
                starting_at,
                change,
            });
        }
    }
    Ok(out)
}

/// What a subscription is checked against: its contract's window, rate card and usage anchor.
pub struct ContractWindow<'a> {
    pub starting_at: Time,
    pub ending_before: Option<Time>,
    pub rate_card_id: Option<&'a str>,
    /// The contract's usage-statement anchor (a subscription's default billing anchor).
    pub anchor: Time,
}

impl<'a> ContractWindow<'a> {
    pub fn of(contract: &'a Contract) -> Self {
        ContractWindow {
            starting_at: contract.starting_at,
            ending_before: contract.ending_before,
            rate_card_id: contract.rate_card_id.as_deref(),
            anchor: Time(contract.schedule().anchor_ms(contract.starting_at.0)),
        }
    }
}

fn check_instant(at: &str, field: &str, t: Time, w: &ContractWindow<'_>) -> Result<()> {
    hour(at, field, t)?;
    if t.0 < w.starting_at.0 || w.ending_before.is_some_and(|end| t.0 >= end.0) {
        return Err(invalid(
            at,
            field,
            "must be within the contract's [starting_at, ending_before)",
        ));
    }
    Ok(())
}

/// The SUBSCRIPTION product `id`, unarchived, with a rate for `frequency` on the card.
async fn subscription_product(
    st: &AppState,
    env: Env,
    at: &str,
    id: &str,
    frequency: BillingFrequency,
    w: &ContractWindow<'_>,
) -> Result<(ProductRef, Vec<String>)> {
    let field = path(at, "subscription_rate.product_id");
    let p = product(st, env, &field, id).await?;
    if p.archived_at.is_some() {
        return Err(Invalid(format!("{field}: product {id} is archived")).into());
    }
    if p.product_type != ProductType::Subscription {
        return Err(Invalid(format!(
            "{field}: product {id} is a {} product; a SUBSCRIPTION product is required",
            p.product_type.as_str()
        ))
        .into());
    }
    let Some(card) = w.rate_card_id else {
        return Err(Invalid(format!(
            "{field}: the contract has no rate card to price it"
        ))
        .into());
    };
    let rates = st
        .stores
        .config
        .list_docs(env, kind::RATE, Some(card), ArchiveFilter::All, None)
        .await?;
    let priced = rates.iter().any(|d| {
        crate::model::decode::<RateRecord>(d)
            .is_ok_and(|r| r.product_id == id && r.billing_frequency == Some(frequency))
    });
    if !priced {
        return Err(Invalid(format!(
            "{}: the rate card has no rate for product {id} billed {}",
            path(at, "subscription_rate"),
            frequency.as_str()
        ))
        .into());
    }
    Ok((
        ProductRef {
            id: p.id,
            name: p.current.name,
        },
        p.current.tags.clone(),
    ))
}

/// Checks one subscription (`at` names it in the request) and makes its record, id assigned.
pub async fn build(
    st: &AppState,
    env: Env,
    at: &str,
    input: SubscriptionInput,
    w: &ContractWindow<'_>,
) -> Result<SubscriptionRecord> {
    if let Some(field) = input.refused.first() {
        return Err(invalid(at, field, "is not supported by Tally yet"));
    }
    let mode = input
        .quantity_management_mode
        .unwrap_or(QuantityManagementMode::QuantityOnly);
    let collection = input
        .collection_schedule
        .ok_or_else(|| invalid(at, "collection_schedule", "required (ADVANCE or ARREARS)"))?;
    let proration = input
        .proration
        .ok_or_else(|| invalid(at, "proration", "required"))?;
    let invoice_behavior = match (collection, proration.invoice_behavior) {
        (CollectionSchedule::Arrears, Some(InvoiceBehavior::BillImmediately)) => {
            return Err(invalid(
                at,
                "proration.invoice_behavior",
                "BILL_IMMEDIATELY is only available with collection_schedule ADVANCE",
            ))
        }
        (CollectionSchedule::Arrears, _) => InvoiceBehavior::BillOnNextCollectionDate,
        (CollectionSchedule::Advance, b) => b.unwrap_or(InvoiceBehavior::BillImmediately),
    };
    super::recurring::check_rounding_places(at, "proration.rounding", proration.rounding)?;
    let frequency = input
        .billing_frequency
        .ok_or_else(|| invalid(at, "subscription_rate.billing_frequency", "required"))?;
    let product_id = input
        .product_id
        .ok_or_else(|| invalid(at, "subscription_rate.product_id", "required"))?;
    let (product, tags) = subscription_product(st, env, at, &product_id, frequency, w).await?;
    let starting_at = input.starting_at.unwrap_or(w.starting_at);
    check_instant(at, "starting_at", starting_at, w)?;
    let (initial, seat_group_key) = match (mode, input.seat_config) {
        (QuantityManagementMode::QuantityOnly, Some(_)) => {
            return Err(invalid(
                at,
                "seat_config",
                "only with quantity_management_mode SEAT_BASED",
            ))
        }
        (QuantityManagementMode::QuantityOnly, None) => {
            let quantity = input
                .initial_quantity
                .ok_or_else(|| invalid(at, "initial_quantity", "required with QUANTITY_ONLY"))?;
            check_amount(at, "initial_quantity", quantity)?;
            let set = QuantityChange::Set(Dec(quantity.0.normalize()));
            (vec![set], None)
        }
        (QuantityManagementMode::SeatBased, None) => {
            return Err(invalid(at, "seat_config", "required with SEAT_BASED"))
        }
        (QuantityManagementMode::SeatBased, Some(config)) => {
            if input.initial_quantity.is_some() {
                return Err(invalid(
                    at,
                    "initial_quantity",
                    "not with SEAT_BASED (the seats are the quantity)",
                ));
            }
            let key = config
                .seat_group_key
                .ok_or_else(|| invalid(at, "seat_config.seat_group_key", "required"))?;
            require_text(&path(at, "seat_config.seat_group_key"), &key, 256)?;
            // None assigned when not given (a package's seat configuration has no ids).
            let given = Some(config.initial_seat_ids.unwrap_or_default());
            let ids = seat_ids(at, "seat_config.initial_seat_ids", given)?;
            let mut initial = vec![QuantityChange::AddSeats(ids)];
            if let Some(q) = config.initial_unassigned_seats {
                let q = seat_count(at, "seat_config.initial_unassigned_seats", q, false)?;
                if !q.0.is_zero() {
                    // After the ids, which would otherwise fill them.
                    initial.push(QuantityChange::AddUnassigned(q));
                }
            }
            (initial, Some(key))
        }
    };
    if let Some(end) = input.ending_before {
        hour(at, "ending_before", end)?;
        if end.0 <= starting_at.0 {
            return Err(invalid(at, "ending_before", "must be after starting_at"));
        }
    }
    let anchor = input.anchor_date.unwrap_or(w.anchor);
    hour(at, "billing_cycle_config.anchor_date", anchor)?;
    for (field, text, limit) in [
        ("name", &input.name, 256),
        ("description", &input.description, 1024),
    ] {
        if let Some(text) = text {
            require_text(&path(at, field), text, limit)?;
        }
    }
    Ok(SubscriptionRecord {
        id: new_id(),
        subscription_rate: SubscriptionRateRecord {
            billing_frequency: frequency,
            product,
        },
        product_tags: tags,
        name: input.name,
        description: input.description,
        collection_schedule: collection,
        proration: SubscriptionProration {
            is_prorated: proration.is_prorated.unwrap_or(true),
            invoice_behavior,
            rounding: proration.rounding,
        },
        quantity_management_mode: mode,
        seat_group_key,
        quantity_updates: initial
            .into_iter()
            .map(|change| QuantityUpdate {
                starting_at,
                change,
            })
            .collect(),
        starting_at,
        ending_before: input.ending_before,
        billing_cycle_config: BillingCycleConfig {
            anchor_date: anchor,
            invoice_placement: input
                .invoice_placement
                .unwrap_or(InvoicePlacement::OnUsageInvoice),
        },
        fiat_credit_type_id: USD_ID.into(),
        custom_fields: input.custom_fields,
    })
}

/// The subscriptions of the list `field` of a request (`field[i]` in errors), at most `room`.
pub async fn build_all(
    st: &AppState,
    env: Env,
    field: &str,
    inputs: Vec<SubscriptionInput>,
    room: usize,
    w: &ContractWindow<'_>,
) -> Result<Vec<SubscriptionRecord>> {
    if inputs.len() > room {
        return Err(Invalid(format!(
            "{field}: at most {MAX_SUBSCRIPTIONS_PER_CONTRACT} subscriptions are allowed per \
             contract"
        ))
        .into());
    }
    let mut out = Vec::with_capacity(inputs.len());
    for (i, input) in inputs.into_iter().enumerate() {
        out.push(build(st, env, &format!("{field}[{i}]"), input, w).await?);
    }
    Ok(out)
}

/// One `quantity_updates` entry as a client gives it.
pub struct QuantityUpdateInput {
    pub starting_at: Option<Time>,
    pub quantity: Option<Dec>,
    pub quantity_delta: Option<Dec>,
}

/// One `update_subscriptions` entry as a client gives it.
pub struct SubscriptionUpdateInput {
    pub subscription_id: String,
    /// `Some(None)`: `ending_before: null` (open-ended).
    pub ending_before: Option<Option<Time>>,
    pub quantity_updates: Vec<QuantityUpdateInput>,
    /// SEAT_BASED subscriptions only.
    pub seat_updates: Option<SeatUpdatesInput>,
    pub name: Option<String>,
    /// Fields set that Tally refuses (`quantity_management_mode_update`, ...).
    pub refused: Vec<&'static str>,
}

/// Checks an update of `sub` (`at` names it): hour-aligned instants inside the subscription,
/// exactly one of `quantity` / a non-zero `quantity_delta`, and no instant where the result
/// would be negative.
pub fn check_update(
    at: &str,
    sub: &SubscriptionRecord,
    input: SubscriptionUpdateInput,
) -> Result<SubscriptionUpdate> {
    if let Some(field) = input.refused.first() {
        return Err(invalid(at, field, "is not supported by Tally yet"));
    }
    let seat_based = sub.quantity_management_mode == QuantityManagementMode::SeatBased;
    if seat_based && !input.quantity_updates.is_empty() {
        return Err(invalid(
            at,
            "quantity_updates",
            "not for a SEAT_BASED subscription; use seat_updates",
        ));
    }
    let mut updates = Vec::with_capacity(input.quantity_updates.len());
    match input.seat_updates {
        Some(_) if !seat_based => {
            return Err(invalid(
                at,
                "seat_updates",
                "only for a SEAT_BASED subscription; use quantity_updates",
            ))
        }
        Some(seats) => updates.extend(seat_changes(
            &path(at, "seat_updates"),
            seats,
            sub.starting_at,
        )?),
        None => {}
    }
    for (i, u) in input.quantity_updates.into_iter().enumerate() {
        let at = format!("{at}.quantity_updates[{i}]");
        let starting_at = u
            .starting_at
            .ok_or_else(|| invalid(&at, "starting_at", "required"))?;
        hour(&at, "starting_at", starting_at)?;
        if starting_at.0 < sub.starting_at.0 {
            return Err(invalid(
                &at,
                "starting_at",
                "must not be before the subscription's starting_at",
            ));
        }
        let change = match (u.quantity, u.quantity_delta) {
            (Some(q), None) => {
                check_amount(&at, "quantity", q)?;
                QuantityChange::Set(Dec(q.0.normalize()))
            }
            (None, Some(d)) if d.0.is_zero() => {
                return Err(invalid(&at, "quantity_delta", "must not be zero"))
            }
            (None, Some(d)) => {
                check_amount(&at, "quantity_delta", Dec(d.0.abs()))?;
                QuantityChange::Delta(Dec(d.0.normalize()))
            }
            _ => {
                return Err(invalid(
                    &at,
                    "quantity",
                    "exactly one of quantity and quantity_delta is required",
                ))
            }
        };
        updates.push(QuantityUpdate {
            starting_at,
            change,
        });
    }
    if let Some(Some(end)) = input.ending_before {
        hour(at, "ending_before", end)?;
        if end.0 <= sub.starting_at.0 {
            return Err(invalid(
                at,
                "ending_before",
                "must be after the subscription's starting_at",
            ));
        }
    }
    if let Some(name) = &input.name {
        require_text(&path(at, "name"), name, 256)?;
    }
    let update = SubscriptionUpdate {
        subscription_id: input.subscription_id,
        ending_before: input.ending_before,
        quantity_updates: updates,
        name: input.name,
    };
    let mut after = sub.clone();
    after.apply(&update);
    check_applied(at, &after)?;
    Ok(update)
}

/// Refuses a subscription (`at` names the update that made it) holding too many updates or
/// a quantity that is negative (or out of range) from some instant.
pub fn check_applied(at: &str, sub: &SubscriptionRecord) -> std::result::Result<(), Invalid> {
    if sub.quantity_updates.len() > MAX_QUANTITY_UPDATES {
        return Err(Invalid(format!(
            "{}: a subscription holds at most {MAX_QUANTITY_UPDATES} quantity updates",
            path(at, "quantity_updates")
        )));
    }
    let in_range = sub.quantity_updates.iter().all(|u| {
        sub.quantity_at(u.starting_at.0)
            .is_some_and(|q| q >= Decimal::ZERO && q <= super::commits::MAX_AMOUNT)
    });
    if !in_range {
        return Err(Invalid(format!(
            "{}: the subscription's quantity would be negative (or out of range) from some \
             instant",
            path(at, "quantity_updates")
        )));
    }
    Ok(())
}

/// Checks the `update_subscriptions` of an edit against `contract`, in order (several updates
/// of one subscription apply one after the other).
pub fn check_updates(
    contract: &Contract,
    inputs: Vec<SubscriptionUpdateInput>,
) -> Result<Vec<SubscriptionUpdate>> {
    let mut working = contract.subscriptions.clone();
    let mut out = Vec::with_capacity(inputs.len());
    for (i, input) in inputs.into_iter().enumerate() {
        let at = format!("update_subscriptions[{i}]");
        let Some(sub) = working.iter_mut().find(|s| s.id == input.subscription_id) else {
            return Err(invalid(
                &at,
                "subscription_id",
                format!("the contract has no subscription {}", input.subscription_id),
            ));
        };
        let update = check_update(&at, sub, input)?;
        sub.apply(&update);
        out.push(update);
    }
    Ok(out)
}

/// The `data` of `getSubscriptionQuantityHistory`: for each instant up to `now_ms` where the
/// quantity changes, the quantity, the unit price of the subscription's rate then (overrides
/// applied) and their product.
pub fn quantity_history(
    sub: &SubscriptionRecord,
    snapshot: &tally_core::pricing::PricingSnapshot,
    now_ms: i64,
) -> std::result::Result<Value, tally_core::rating::RatingError> {
    let core = sub
        .core()
        .ok_or(tally_core::rating::RatingError::Overflow)?;
    let mut history = Vec::new();
    for step in core
        .quantities
        .iter()
        .filter(|s| s.starting_at_ms <= now_ms)
    {
        let price = tally_core::subscriptions::unit_price(snapshot, &core, step.starting_at_ms)?;
        let data: Vec<Value> = price
            .map(|(unit, _)| {
                serde_json::json!({
                    "quantity": Dec(step.quantity),
                    "unit_price": Dec(unit),
                    "total": Dec(step.quantity.checked_mul(unit).unwrap_or_default()),
                })
            })
            .into_iter()
            .collect();
        history.push(serde_json::json!({
            "starting_at": Time(step.starting_at_ms),
            "data": data,
        }));
    }
    Ok(serde_json::json!({
        "subscription_id": sub.id,
        "fiat_credit_type_id": sub.fiat_credit_type_id,
        "history": history,
    }))
}
