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

use std::collections::BTreeMap;

use super::commits::{
    invalid, invoice_schedule, invoicing_product, path, CommitError, InvoiceInput,
};
use super::{require_text, Invalid};
use crate::model::{new_id, ScheduledChargeRecord};
use crate::store::Env;
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
