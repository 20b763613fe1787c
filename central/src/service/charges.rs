//! Scheduled charges of a contract (`scheduled_charges` on `contracts/create` and amendments,
//! `add_scheduled_charges` / `archive_scheduled_charges` on `v2/contracts/edit`): validated into
//! [`ScheduledChargeRecord`]s, priced by core (`tally_core::charges`).
//!
//! Invariants:
//! - Every stored charge passed [`build`]: a known, unarchived FIXED product; a schedule of
//!   1..=`MAX_SCHEDULE_ITEMS` hour-aligned items (given, or expanded from a
//!   `recurring_schedule`) with exact amounts in `0..=MAX_AMOUNT`, as commits' invoice
//!   schedules are checked (`service::commits`).
//! - A contract holds at most [`MAX_CHARGES_PER_CONTRACT`] of them; archiving one removes its
//!   items from drafts, never from a finalized invoice.
//! - `update_scheduled_charges` adds, removes and rewrites items of a charge's schedule, never
//!   one whose invoice is past its grace ([`build_updates`]).

use std::collections::BTreeMap;

use super::commits::{
    invalid, invoice_item, invoice_schedule, invoicing_product, path, CommitError, InvoiceInput,
    InvoiceItemInput, MAX_SCHEDULE_ITEMS,
};
use super::{require_text, Invalid};
use crate::model::{new_id, ChargeScheduleUpdate, ScheduledChargeRecord};
use crate::store::Env;
use crate::wire::{Dec, Time};
use crate::AppState;

type Result<T> = std::result::Result<T, CommitError>;

/// Most scheduled charges one contract may hold.
pub const MAX_CHARGES_PER_CONTRACT: usize = 100;

/// A scheduled charge as a client gives it (`ScheduledChargeInput`).
pub struct ChargeInput {
    pub product_id: String,
    pub schedule: Option<InvoiceInput>,
    pub name: Option<String>,
    pub custom_fields: BTreeMap<String, String>,
    pub netsuite_sales_order_id: Option<String>,
}

/// Checks one scheduled charge (`at` names it in the request) and makes its record, ids
/// assigned to it and its items.
pub async fn build(
    st: &AppState,
    env: Env,
    at: &str,
    input: ChargeInput,
) -> Result<ScheduledChargeRecord> {
    let product = invoicing_product(st, env, at, &input.product_id).await?;
    let Some(schedule) = input.schedule else {
        return Err(invalid(at, "schedule", "required"));
    };
    // The schedule's own checks name `invoice_schedule`; a charge's field is `schedule`.
    let schedule = invoice_schedule(at, schedule).map_err(|e| match e {
        CommitError::Invalid(Invalid(m)) => CommitError::Invalid(Invalid(m.replacen(
            &path(at, "invoice_schedule"),
            &path(at, "schedule"),
            1,
        ))),
        other => other,
    })?;
    if let Some(name) = &input.name {
        require_text(&path(at, "name"), name, 256)?;
    }
    Ok(ScheduledChargeRecord {
        id: new_id(),
        product,
        schedule,
        name: input.name,
        custom_fields: input.custom_fields,
        netsuite_sales_order_id: input.netsuite_sales_order_id,
        archived_at: None,
    })
}

/// The charges of the list `field` of a request (`field[i]` in errors), at most `room` of them.
pub async fn build_all(
    st: &AppState,
    env: Env,
    field: &str,
    inputs: Vec<ChargeInput>,
    room: usize,
) -> Result<Vec<ScheduledChargeRecord>> {
    if inputs.len() > room {
        return Err(Invalid(format!(
            "{field}: at most {MAX_CHARGES_PER_CONTRACT} scheduled charges are allowed per \
             contract"
        ))
        .into());
    }
    let mut out = Vec::with_capacity(inputs.len());
    for (i, input) in inputs.into_iter().enumerate() {
        out.push(build(st, env, &format!("{field}[{i}]"), input).await?);
    }
    Ok(out)
}

/// One `update_scheduled_charges` entry as a client gives it (`UpdateScheduledChargeInput`).
pub struct ChargeUpdateInput {
    pub scheduled_charge_id: String,
    pub add_items: Vec<InvoiceItemInput>,
    pub remove_items: Vec<String>,
    pub update_items: Vec<ItemUpdateInput>,
}

/// An `update_schedule_items` entry: the fields given replace the item's.
pub struct ItemUpdateInput {
    pub id: String,
    pub timestamp: Option<Time>,
    pub amount: Option<Dec>,
    pub unit_price: Option<Dec>,
    pub quantity: Option<Dec>,
}

/// Checks `update_scheduled_charges` against the contract as read and the clock: each names an
/// unarchived charge of the contract once; added and rewritten items pass the checks of
/// create; no item whose invoice is past its grace at `now_ms` (one removed or changed, or a
/// new timestamp) is touched, so no finalized invoice is ever contradicted. Returns the
/// updates as recorded (they are applied again, with [`apply_update`], to the contract as
/// written).
pub fn build_updates(
    charges: &[ScheduledChargeRecord],
    inputs: Vec<ChargeUpdateInput>,
    now_ms: i64,
    grace_ms: i64,
) -> Result<Vec<ChargeScheduleUpdate>> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::with_capacity(inputs.len());
    for (i, input) in inputs.into_iter().enumerate() {
        let at = format!("update_scheduled_charges[{i}]");
        let id = input.scheduled_charge_id;
        if !seen.insert(id.clone()) {
            return Err(invalid(
                &at,
                "scheduled_charge_id",
                format!("{id} is named twice"),
            ));
        }
        let Some(charge) = charges
            .iter()
            .find(|c| c.id == id && c.archived_at.is_none())
        else {
            return Err(invalid(
                &at,
                "scheduled_charge_id",
                format!("the contract has no unarchived scheduled charge {id}"),
            ));
        };
        let open = |field: &str, t: Time| -> Result<()> {
            match t.0.saturating_add(grace_ms) <= now_ms {
                true => Err(invalid(
                    &at,
                    field,
                    "the invoice at that time is past its grace period; finalized invoices \
                     never change",
                )),
                false => Ok(()),
            }
        };
        let item_of = |id: &str, field: &str| {
            let found = charge.schedule.schedule_items.iter().find(|x| x.id == id);
            found.ok_or_else(|| invalid(&at, field, format!("{id} is not an item of the charge")))
        };
        let mut update = ChargeScheduleUpdate {
            scheduled_charge_id: id.clone(),
            add_schedule_items: Vec::new(),
            remove_schedule_items: Vec::new(),
            update_schedule_items: Vec::new(),
        };
        for (j, item) in input.add_items.into_iter().enumerate() {
            let field = format!("invoice_schedule.add_schedule_items[{j}]");
            let built = invoice_item(&path(&at, &field), item)?;
            open(&format!("{field}.timestamp"), built.timestamp)?;
            update.add_schedule_items.push(built);
        }
        for (j, removed) in input.remove_items.into_iter().enumerate() {
            let field = format!("invoice_schedule.remove_schedule_items[{j}].id");
            open(&field, item_of(&removed, &field)?.timestamp)?;
            update.remove_schedule_items.push(removed);
        }
        for (j, u) in input.update_items.into_iter().enumerate() {
            let field = format!("invoice_schedule.update_schedule_items[{j}]");
            let old = item_of(&u.id, &format!("{field}.id"))?;
            open(&format!("{field}.id"), old.timestamp)?;
            let (amount, unit_price, quantity) = match (u.amount, u.unit_price, u.quantity) {
                (None, None, None) => (Some(old.amount), None, None),
                (Some(a), None, None) => (Some(a), None, None),
                (None, up, q) => (
                    None,
                    Some(up.unwrap_or(old.unit_price)),
                    Some(q.unwrap_or(old.quantity)),
                ),
                (a, up, q) => (a, up, q),
            };
            let input = InvoiceItemInput {
                timestamp: u.timestamp.unwrap_or(old.timestamp),
                amount,
                unit_price,
                quantity,
            };
            let mut built = invoice_item(&path(&at, &field), input)?;
            open(&format!("{field}.timestamp"), built.timestamp)?;
            built.id = u.id;
            update.update_schedule_items.push(built);
        }
        let mut check = charge.clone();
        apply_update(&mut check, &update, &at)?;
        out.push(update);
    }
    Ok(out)
}

/// Applies one recorded update to its charge (items named must still be there; the schedule
/// keeps 1..=`MAX_SCHEDULE_ITEMS` items, in time order).
pub fn apply_update(
    charge: &mut ScheduledChargeRecord,
    update: &ChargeScheduleUpdate,
    at: &str,
) -> std::result::Result<(), Invalid> {
    let items = &mut charge.schedule.schedule_items;
    for id in update
        .remove_schedule_items
        .iter()
        .chain(update.update_schedule_items.iter().map(|u| &u.id))
    {
        if !items.iter().any(|x| &x.id == id) {
            return Err(Invalid(format!(
                "{at}.invoice_schedule: {id} is not an item of the charge"
            )));
        }
    }
    items.retain(|x| !update.remove_schedule_items.contains(&x.id));
    for u in &update.update_schedule_items {
        if let Some(x) = items.iter_mut().find(|x| x.id == u.id) {
            *x = u.clone();
        }
    }
    items.extend(update.add_schedule_items.iter().cloned());
    items.sort_by_key(|x| x.timestamp);
    if items.is_empty() || items.len() > MAX_SCHEDULE_ITEMS {
        return Err(Invalid(format!(
            "{at}.invoice_schedule: a scheduled charge keeps between 1 and {MAX_SCHEDULE_ITEMS} \
             items (archive it with archive_scheduled_charges to stop it)"
        )));
    }
    Ok(())
}
