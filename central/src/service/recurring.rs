//! Recurring commits and credits of a contract (`recurring_commits`, `recurring_credits` on
//! `contracts/create` and `add_recurring_commits` / `add_recurring_credits` on
//! `v2/contracts/edit`): validated into [`RecurringRecord`]s, which generate one PREPAID
//! commit or one credit per recurrence period (`model::recurring`).
//!
//! Invariants:
//! - Every stored recurring commit or credit passed [`build`]: a known, unarchived FIXED
//!   product; `access_amount` (and a commit's `invoice_amount`) with `unit_price` and
//!   `quantity` in `0..=`[`MAX_AMOUNT`] and their product too, so expanding never overflows;
//!   a `priority`; `commit_duration` a whole number of PERIODS in
//!   `1..=`[`MAX_COMMIT_DURATION`]; an hour-aligned `starting_at` inside the contract and an
//!   `ending_before` after it, never past the contract's end; scope by `specifiers` or by the
//!   `applicable_*` fields, never both.
//! - Fields that would change amounts and are not implemented (`subscription_config`,
//!   `hierarchy_configuration`) are refused with a 400 naming them, never dropped.

use rust_decimal::Decimal;
use serde_json::{Map, Value};

use super::commits::{
    check_amount, check_scope, hour, invalid, invoicing_product, path, resolve_credit_type,
    CommitError, Scope, MAX_AMOUNT,
};
use super::{require_text, Invalid};
use crate::model::{
    new_id, BalanceRateType, BillingFrequency, CommitDuration, CommitSpecifier, DurationUnit,
    Proration, ProrationRoundingRecord, RecurringAmountRecord, RecurringRecord,
    MAX_COMMIT_DURATION,
};
use crate::store::Env;
use crate::wire::{Dec, Time};
use crate::AppState;

type Result<T> = std::result::Result<T, CommitError>;

/// Most recurring commits plus recurring credits one contract may hold.
pub const MAX_RECURRING_PER_CONTRACT: usize = 20;

/// Fields of a recurring commit or credit that would change amounts and are not implemented.
const UNSUPPORTED_FIELDS: &[(&str, &str)] = &[
    (
        "subscription_config",
        "subscription-linked recurring commits are not supported by Tally yet",
    ),
    (
        "hierarchy_configuration",
        "commit hierarchies are not supported by Tally yet",
    ),
];

/// Refuses the `field` list of a request body (`recurring_commits`, or `recurring_credits`
/// when `credits`) whose entries set a field Tally cannot honour, naming it (`field[i].x`).
pub fn check_items(
    body: &Map<String, Value>,
    field: &str,
    credits: bool,
) -> std::result::Result<(), Invalid> {
    let items = body.get(field).and_then(Value::as_array);
    for (i, item) in items.into_iter().flatten().enumerate() {
        let Value::Object(map) = item else { continue };
        let at = format!("{field}[{i}]");
        let set = |f: &str| !matches!(map.get(f), None | Some(Value::Null));
        for (f, why) in UNSUPPORTED_FIELDS {
            if set(f) {
                return Err(Invalid(format!("{at}.{f}: {why}")));
            }
        }
        if credits && set("invoice_amount") {
            return Err(Invalid(format!(
                "{at}.invoice_amount: recurring credits are never invoiced"
            )));
        }
        let invoice_rounding = map.get("proration_rounding").and_then(|r| r.get("invoice"));
        if credits && !matches!(invoice_rounding, None | Some(Value::Null)) {
            return Err(Invalid(format!(
                "{at}.proration_rounding.invoice: recurring credits are never invoiced"
            )));
        }
    }
    Ok(())
}

/// `access_amount` / `invoice_amount` as a client gives it.
pub struct AmountInput {
    pub unit_price: Dec,
    pub quantity: Option<Dec>,
    pub credit_type_id: Option<String>,
}

/// `commit_duration` as a client gives it.
pub struct DurationInput {
    pub value: Dec,
    pub unit: Option<DurationUnit>,
}

/// A recurring commit or credit as a client gives it (`RecurringCommitInput` /
/// `RecurringCreditInput`); required fields are options so a missing one gets a 400 naming it.
pub struct RecurringInput {
    pub product_id: String,
    pub access_amount: Option<AmountInput>,
    pub invoice_amount: Option<AmountInput>,
    pub priority: Option<Dec>,
    pub commit_duration: Option<DurationInput>,
    pub starting_at: Option<Time>,
    pub ending_before: Option<Time>,
    pub rate_type: Option<BalanceRateType>,
    pub recurrence_frequency: Option<BillingFrequency>,
    pub proration: Option<Proration>,
    pub proration_rounding: Option<ProrationRoundingRecord>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub applicable_product_ids: Option<Vec<String>>,
    pub applicable_product_tags: Option<Vec<String>>,
    pub specifiers: Option<Vec<CommitSpecifier>>,
    pub rollover_fraction: Option<Dec>,
    pub netsuite_sales_order_id: Option<String>,
    /// How commit-specific overrides of the same request name it; not stored.
    pub temporary_id: Option<String>,
}

/// The contract window a recurring commit or credit must fit in.
#[derive(Clone, Copy)]
pub struct Window {
    pub starting_at: Time,
    pub ending_before: Option<Time>,
}

fn amount(at: &str, field: &str, input: Option<AmountInput>) -> Result<RecurringAmountRecord> {
    let Some(input) = input else {
        return Err(invalid(at, field, "required"));
    };
    let at = path(at, field);
    check_amount(&at, "unit_price", input.unit_price)?;
    if let Some(q) = input.quantity {
        check_amount(&at, "quantity", q)?;
    }
    let quantity = input.quantity.map_or(Decimal::ONE, |q| q.0);
    let total = input.unit_price.0.checked_mul(quantity);
    if total.is_none_or(|t| t > MAX_AMOUNT) {
        return Err(invalid(
            &at,
            "unit_price",
            format!("unit_price × quantity must be at most {MAX_AMOUNT}"),
        ));
    }
    let credit_type = resolve_credit_type(&at, "credit_type_id", input.credit_type_id.as_deref())?;
    Ok(RecurringAmountRecord {
        unit_price: input.unit_price,
        quantity: input.quantity,
        credit_type_id: credit_type.id,
    })
}

fn duration(at: &str, input: Option<DurationInput>) -> Result<CommitDuration> {
    let Some(input) = input else {
        return Err(invalid(at, "commit_duration", "required"));
    };
    let v = input.value.0;
    if v.fract() != Decimal::ZERO || v < Decimal::ONE || v > Decimal::from(MAX_COMMIT_DURATION) {
        return Err(invalid(
            at,
            "commit_duration.value",
            format!("must be a whole number of periods from 1 to {MAX_COMMIT_DURATION}"),
        ));
    }
    Ok(CommitDuration {
        value: Dec(v.normalize()),
        unit: input.unit.unwrap_or(DurationUnit::Periods),
    })
}

fn check_rounding(at: &str, rounding: Option<&ProrationRoundingRecord>) -> Result<()> {
    let Some(r) = rounding else { return Ok(()) };
    for (name, config) in [("access", r.access), ("invoice", r.invoice)] {
        check_rounding_places(at, &format!("proration_rounding.{name}"), config)?;
    }
    Ok(())
}

/// Refuses a `ProrationRoundingConfig` (request field `at.field`) whose `decimal_places` is
/// out of core's range.
pub(super) fn check_rounding_places(
    at: &str,
    field: &str,
    config: Option<crate::model::ProrationRoundingConfig>,
) -> Result<()> {
    let limit = tally_core::balances::MAX_PRORATION_PLACES;
    if config.is_some_and(|c| c.decimal_places.abs() > limit) {
        return Err(invalid(
            at,
            &format!("{field}.decimal_places"),
            format!("must be between -{limit} and {limit}"),
        ));
    }
    Ok(())
}

/// Checks one recurring commit (`credit` false) or credit (`at` names it in the request) and
/// makes its record, id assigned.
pub async fn build(
    st: &AppState,
    env: Env,
    at: &str,
    credit: bool,
    input: RecurringInput,
    window: Window,
    now: Time,
) -> Result<RecurringRecord> {
    let product = invoicing_product(st, env, at, &input.product_id).await?;
    let access_amount = amount(at, "access_amount", input.access_amount)?;
    let invoice_amount = match (credit, input.invoice_amount) {
        (true, Some(_)) => {
            return Err(invalid(
                at,
                "invoice_amount",
                "recurring credits are never invoiced",
            ))
        }
        (_, i) => i
            .map(|i| amount(at, "invoice_amount", Some(i)))
            .transpose()?,
    };
    let Some(priority) = input.priority else {
        return Err(invalid(at, "priority", "required"));
    };
    let commit_duration = duration(at, input.commit_duration)?;
    let Some(starting_at) = input.starting_at else {
        return Err(invalid(at, "starting_at", "required"));
    };
    hour(at, "starting_at", starting_at)?;
    if starting_at < window.starting_at || window.ending_before.is_some_and(|e| starting_at >= e) {
        return Err(invalid(
            at,
            "starting_at",
            "must be inside the contract (at or after its starting_at, before its ending_before)",
        ));
    }
    if let Some(end) = input.ending_before {
        hour(at, "ending_before", end)?;
        if end <= starting_at {
            return Err(invalid(at, "ending_before", "must be after starting_at"));
        }
        if window.ending_before.is_some_and(|e| end > e) {
            return Err(invalid(
                at,
                "ending_before",
                "must not be after the contract's ending_before",
            ));
        }
    }
    check_rounding(at, input.proration_rounding.as_ref())?;
    if let Some(name) = &input.name {
        require_text(&path(at, "name"), name, 256)?;
    }
    if let Some(f) = input.rollover_fraction {
        if f.0 < Decimal::ZERO || f.0 > Decimal::ONE {
            return Err(invalid(at, "rollover_fraction", "must be between 0 and 1"));
        }
    }
    let scope = Scope {
        applicable_product_ids: input.applicable_product_ids.as_ref(),
        applicable_product_tags: input.applicable_product_tags.as_ref(),
        specifiers: input.specifiers.as_ref(),
    };
    check_scope(st, env, at, scope).await?;
    Ok(RecurringRecord {
        id: new_id(),
        product,
        access_amount,
        invoice_amount,
        priority,
        commit_duration,
        starting_at,
        ending_before: input.ending_before,
        rate_type: input.rate_type.unwrap_or(BalanceRateType::ListRate),
        recurrence_frequency: input.recurrence_frequency,
        proration: input.proration,
        proration_rounding: input.proration_rounding,
        name: input.name,
        description: input.description,
        applicable_product_ids: input.applicable_product_ids,
        applicable_product_tags: input.applicable_product_tags,
        specifiers: input.specifiers,
        rollover_fraction: input.rollover_fraction,
        netsuite_sales_order_id: input.netsuite_sales_order_id,
        created_at: now,
    })
}

/// A contract's `recurring_commits` and `recurring_credits` as records (errors name
/// `field[i].x`, the fields given), with each input's `temporary_id` in order.
pub async fn build_all(
    st: &AppState,
    env: Env,
    fields: [&str; 2],
    commits: Vec<RecurringInput>,
    credits: Vec<RecurringInput>,
    window: Window,
    now: Time,
) -> Result<(
    Vec<RecurringRecord>,
    Vec<RecurringRecord>,
    Vec<Option<String>>,
)> {
    if commits.len() + credits.len() > MAX_RECURRING_PER_CONTRACT {
        return Err(Invalid(format!(
            "{}, {}: at most {MAX_RECURRING_PER_CONTRACT} recurring commits and credits are \
             allowed per contract",
            fields[0], fields[1]
        ))
        .into());
    }
    let mut out = (Vec::new(), Vec::new(), Vec::new());
    for (field, credit, inputs) in [(fields[0], false, commits), (fields[1], true, credits)] {
        for (i, mut input) in inputs.into_iter().enumerate() {
            out.2.push(input.temporary_id.take());
            let at = format!("{field}[{i}]");
            let record = build(st, env, &at, credit, input, window, now).await?;
            match credit {
                false => out.0.push(record),
                true => out.1.push(record),
            }
        }
    }
    Ok(out)
}
