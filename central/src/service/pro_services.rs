//! Professional services of a contract (`professional_services` on `contracts/create`) and the
//! invoices scheduled for them (`/v1/contracts/scheduleProServicesInvoice`), billed like
//! scheduled charges: each line an item at `issued_at` (`tally_core::charges`).
//!
//! Invariants:
//! - Every stored service passed [`build`]: a known, unarchived PRO_SERVICE product and exact
//!   `unit_price`, `quantity`, `max_amount` in `0..=MAX_AMOUNT`.
//! - What is invoiced for a service never exceeds its `max_amount`, however many requests
//!   schedule invoices at once: the check and the write are one `modify_doc` of the contract.
//! - An invoice is only ever scheduled onto an invoice still in its draft window
//!   (`issued_at + grace` after now, inside the contract), so no finalized invoice changes.

use std::collections::BTreeMap;

use rust_decimal::Decimal;

use super::commits::{check_amount, hour, invalid, item_amount, path, product, CommitError};
use super::contracts::ContractError;
use super::{modify_doc, Invalid, Write};
use crate::model::{
    kind, new_id, Contract, ProServiceInvoiceRecord, ProServiceItem, ProServiceRecord, ProductType,
};
use crate::store::Env;
use crate::wire::{Dec, Time};
use crate::AppState;

type Result<T> = std::result::Result<T, CommitError>;

/// Most professional services one contract may hold, and most invoices scheduled for them.
pub const MAX_SERVICES_PER_CONTRACT: usize = 100;
pub const MAX_INVOICES_PER_CONTRACT: usize = 1_000;
/// Most lines of one scheduled invoice.
pub const MAX_LINES: usize = 100;

/// A professional service as a client gives it (`ProServiceInput`).
pub struct ProServiceInput {
    pub product_id: String,
    pub unit_price: Option<Dec>,
    pub quantity: Option<Dec>,
    pub max_amount: Option<Dec>,
    pub description: Option<String>,
    pub custom_fields: BTreeMap<String, String>,
    pub netsuite_sales_order_id: Option<String>,
}

fn required(at: &str, field: &str, v: Option<Dec>) -> Result<Dec> {
    let v = v.ok_or_else(|| invalid(at, field, "required"))?;
    check_amount(at, field, v)?;
    Ok(v)
}

/// Checks one professional service (`at` names it) and makes its record, id assigned.
pub async fn build(
    st: &AppState,
    env: Env,
    at: &str,
    input: ProServiceInput,
) -> Result<ProServiceRecord> {
    let field = path(at, "product_id");
    let p = product(st, env, &field, &input.product_id).await?;
    if p.archived_at.is_some() {
        return Err(Invalid(format!("{field}: product {} is archived", p.id)).into());
    }
    if p.product_type != ProductType::ProService {
        return Err(Invalid(format!(
            "{field}: product {} is a {} product; a PRO_SERVICE product is required",
            p.id,
            p.product_type.as_str()
        ))
        .into());
    }
    if let Some(d) = &input.description {
        super::require_text(&path(at, "description"), d, 1_000)?;
    }
    Ok(ProServiceRecord {
        id: new_id(),
        product_id: p.id,
        unit_price: required(at, "unit_price", input.unit_price)?,
        quantity: required(at, "quantity", input.quantity)?,
        max_amount: required(at, "max_amount", input.max_amount)?,
        description: input.description,
        custom_fields: input.custom_fields,
        netsuite_sales_order_id: input.netsuite_sales_order_id,
        product_name: p.current.name,
    })
}

/// A contract's `professional_services` as records.
pub async fn build_all(
    st: &AppState,
    env: Env,
    inputs: Vec<ProServiceInput>,
    existing: usize,
) -> Result<Vec<ProServiceRecord>> {
    let mut out = Vec::with_capacity(inputs.len());
    for (i, input) in inputs.into_iter().enumerate() {
        out.push(build(st, env, &format!("professional_services[{i}]"), input).await?);
    }
    check_room(existing, &out)?;
    Ok(out)
}

/// Refuses adding `added` to a contract holding `existing` services past the limit.
pub fn check_room(existing: usize, added: &[ProServiceRecord]) -> std::result::Result<(), Invalid> {
    if existing + added.len() > MAX_SERVICES_PER_CONTRACT {
        return Err(Invalid(format!(
            "professional_services: at most {MAX_SERVICES_PER_CONTRACT} are allowed per contract"
        )));
    }
    Ok(())
}

/// One line of a `scheduleProServicesInvoice` request.
pub struct LineInput {
    pub professional_service_id: String,
    pub amount: Option<Dec>,
    pub unit_price: Option<Dec>,
    pub quantity: Option<Dec>,
}

/// A `scheduleProServicesInvoice` request.
pub struct ScheduleRequest {
    pub customer_id: String,
    pub contract_id: String,
    pub issued_at: Time,
    pub line_items: Vec<LineInput>,
}

/// Schedules an invoice of professional services at `issued_at` on the contract; returns the
/// contract as stored and the instant.
pub async fn schedule_invoice(
    st: &AppState,
    env: Env,
    req: ScheduleRequest,
) -> std::result::Result<Contract, ContractError> {
    hour("", "issued_at", req.issued_at)?;
    let n = req.line_items.len();
    if n == 0 || n > MAX_LINES {
        return Err(Invalid(format!(
            "line_items: between 1 and {MAX_LINES} lines are required"
        ))
        .into());
    }
    let mut lines = Vec::with_capacity(n);
    for (i, line) in req.line_items.into_iter().enumerate() {
        let at = format!("line_items[{i}]");
        let (amount, unit_price, quantity) =
            item_amount(&at, line.amount, line.unit_price, line.quantity)?;
        lines.push(ProServiceItem {
            id: new_id(),
            professional_service_id: line.professional_service_id,
            quantity,
            unit_price,
            amount,
        });
    }
    let now = st.now_ms();
    let grace = st.settings.invoice_grace_ms;
    let issued_at = req.issued_at;
    let customer_id = req.customer_id.clone();
    let contract = modify_doc(
        st,
        env,
        kind::CONTRACT,
        &req.contract_id,
        "contract",
        |c: &mut Contract| -> std::result::Result<Write, ContractError> {
            if c.customer_id != customer_id {
                return Err(ContractError::NotFound("contract"));
            }
            check_window(c, issued_at, now, grace)?;
            check_max_amounts(c, &lines)?;
            if c.pro_service_invoices.len() >= MAX_INVOICES_PER_CONTRACT {
                return Err(Invalid(format!(
                    "at most {MAX_INVOICES_PER_CONTRACT} professional-services invoices are \
                     allowed per contract"
                ))
                .into());
            }
            c.pro_service_invoices.push(ProServiceInvoiceRecord {
                id: new_id(),
                issued_at,
                items: lines.clone(),
            });
            Ok(Write::Save {
                archived: c.archived_at.is_some(),
            })
        },
    )
    .await?;
    Ok(contract)
}

/// `issued_at` inside the contract's billed time and its invoice still in its draft window.
fn check_window(
    c: &Contract,
    at: Time,
    now_ms: i64,
    grace_ms: i64,
) -> std::result::Result<(), Invalid> {
    let snapshot = c.snapshot();
    let end = snapshot.effective_end_ms();
    if at.0 < c.starting_at.0 || end.is_some_and(|e| at.0 > e) {
        return Err(Invalid(
            "issued_at: must be inside the contract (from its starting_at to its end)".into(),
        ));
    }
    let at_usage_end = snapshot.usage_period_ending_at(at.0).is_some();
    if end == Some(at.0) && !at_usage_end {
        return Err(Invalid(
            "issued_at: nothing is billed at the contract's end unless it is consolidated onto \
             its last usage invoice"
                .into(),
        ));
    }
    if at.0.saturating_add(grace_ms) <= now_ms {
        return Err(Invalid(
            "issued_at: the invoice at that time is past its grace period (it is or is about to \
             be finalized); schedule it later"
                .into(),
        ));
    }
    Ok(())
}

/// Every line names one of the contract's services, and no service is invoiced past its
/// `max_amount` counting what is already scheduled.
fn check_max_amounts(c: &Contract, lines: &[ProServiceItem]) -> std::result::Result<(), Invalid> {
    let mut totals: BTreeMap<&str, Decimal> = BTreeMap::new();
    for inv in &c.pro_service_invoices {
        for i in &inv.items {
            *totals
                .entry(i.professional_service_id.as_str())
                .or_default() += i.amount.0;
        }
    }
    for (j, line) in lines.iter().enumerate() {
        let id = line.professional_service_id.as_str();
        let Some(service) = c.professional_services.iter().find(|s| s.id == id) else {
            return Err(Invalid(format!(
                "line_items[{j}].professional_service_id: the contract has no professional \
                 service {id}"
            )));
        };
        let total = totals.entry(id).or_default();
        *total += line.amount.0;
        if *total > service.max_amount.0 {
            return Err(Invalid(format!(
                "line_items[{j}].amount: professional service {id} would be invoiced {} in all, \
                 more than its max_amount {}",
                total.normalize(),
                service.max_amount.0.normalize()
            )));
        }
    }
    Ok(())
}
