//! Commits and credits: contract-level ones (given on `contracts/create`, stored in the contract
//! document) and customer-level ones (`contracts/customerCommits/*`, `customerCredits/*`, their
//! own documents of kind `customer_balance`, parent the customer), validated and turned into
//! core's [`Balance`]s for pricing.
//!
//! Invariants:
//! - Every stored commit or credit passed [`build`]: a known, unarchived FIXED product; an access
//!   schedule of 1..=[`MAX_SCHEDULE_ITEMS`] hour-aligned segments `[starting_at, ending_before)`
//!   with exact amounts in `0..=`[`MAX_AMOUNT`]; a POSTPAID commit has one segment and one
//!   invoice item of the same amount (its true-up); scope by `specifiers` or by the
//!   `applicable_*` fields, never both. Ids are assigned to it, its segments and its invoice
//!   items.
//! - Fields that would change amounts and are not implemented (hierarchies, payment gates,
//!   recurring invoice schedules, quantity-based access, ...) are refused with a 400 naming
//!   them ([`check_supported`]), never dropped; `rollover_fraction` acts when the contract is
//!   renewed (`service::transitions`).
//! - A `uniqueness_key` is used once per environment across customer-level commits and credits
//!   (409). `updateEndDate` only ever shortens.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde_json::{Map, Value};
use tally_core::balances::{Balance, BalanceKind};

use super::{modify_doc, require_hour, require_text, Invalid, Write};
use crate::model::{
    credit_type, decode, encode, kind, load, load_children, new_id, AccessItem, AccessSchedule,
    BalanceRateType, BalanceRecord, BalanceType, CommitSpecifier, Contract, CreditTypeRef,
    Customer, InvoiceItem, InvoiceSchedule, LoadError, Product, ProductRef, ProductType,
    CREATED_BY,
};
use crate::service::contracts::ContractError;
use crate::store::{ArchiveFilter, Env, NewDoc, StoreError};
use crate::wire::{Dec, Time};
use crate::AppState;

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("This uniqueness key has already been used.")]
    UniquenessKeyUsed,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<LoadError> for CommitError {
    fn from(e: LoadError) -> Self {
        match e {
            LoadError::NotFound(what) => CommitError::NotFound(what),
            LoadError::Store(e) => CommitError::Store(e),
        }
    }
}

/// Contract-level commits and credits are checked while a contract is created.
impl From<CommitError> for ContractError {
    fn from(e: CommitError) -> Self {
        match e {
            CommitError::NotFound(what) => ContractError::NotFound(what),
            CommitError::Invalid(e) => ContractError::Invalid(e),
            CommitError::UniquenessKeyUsed => ContractError::UniquenessKeyUsed,
            CommitError::Store(e) => ContractError::Store(e),
        }
    }
}

type Result<T> = std::result::Result<T, CommitError>;

/// Most commits plus credits one contract may hold.
pub const MAX_BALANCES_PER_CONTRACT: usize = 100;
/// Most items one access or invoice schedule may hold.
pub const MAX_SCHEDULE_ITEMS: usize = 100;
/// Most entries of `applicable_product_ids`, `applicable_product_tags`, `specifiers` and
/// `applicable_contract_ids`.
pub const MAX_SCOPE_ENTRIES: usize = 100;
/// Most customer-level commits plus credits one customer may hold (every draft of each of its
/// contracts loads them all). Concurrent creates may pass it together by a few.
pub const MAX_CUSTOMER_BALANCES: usize = 1_000;
/// Largest amount, unit price or quantity of a schedule item: 10^15 (ten trillion dollars in
/// USD cents). Far below the exact decimal range, so sums of every item of a customer's
/// balances never overflow.
pub const MAX_AMOUNT: Decimal = Decimal::from_parts(2_764_472_320, 232_830, 0, false, 0);

// ---------------------------------------------------------------------------------------------
// Refusing what Tally does not implement (on the raw body: serde would drop unknown fields)

/// Fields of a commit or credit that would change amounts or access and are not implemented.
const UNSUPPORTED_FIELDS: &[(&str, &str)] = &[
    (
        "hierarchy_configuration",
        "commit hierarchies are not supported by Tally yet",
    ),
    (
        "payment_gate_config",
        "payment gates are not supported by Tally yet",
    ),
    (
        "subscription_config",
        "subscription-linked commits are not supported by Tally yet",
    ),
    (
        "spend_tracker_attributes",
        "spend trackers are not supported by Tally yet",
    ),
    (
        "amount",
        "deprecated; give access_schedule (and invoice_schedule) instead",
    ),
];
/// Fields a credit does not have (credits are free and never invoiced).
const NOT_ON_CREDITS: &[&str] = &["invoice_schedule", "invoice_contract_id", "type"];

fn refuse_field(at: &str, field: &str, why: &str) -> Invalid {
    Invalid(format!("{}: {why}", path(at, field)))
}

fn is_set(v: Option<&Value>) -> bool {
    !matches!(v, None | Some(Value::Null))
}

/// Refuses a commit or credit body (`at` names it: `commits[0]`, or `""` at the top level)
/// that sets a field Tally cannot honour.
pub fn check_body(
    at: &str,
    body: &Map<String, Value>,
    kind: BalanceType,
) -> std::result::Result<(), Invalid> {
    for (field, why) in UNSUPPORTED_FIELDS {
        if is_set(body.get(*field)) {
            return Err(refuse_field(at, field, why));
        }
    }
    if kind == BalanceType::Credit {
        for field in NOT_ON_CREDITS {
            if is_set(body.get(*field)) {
                return Err(refuse_field(at, field, "credits have no such field"));
            }
        }
    }
    let access = body.get("access_schedule");
    let access_type = access.and_then(|a| a.get("access_type"));
    let spend = |t: &Value| t.as_str().is_some_and(|t| t.eq_ignore_ascii_case("SPEND"));
    if access_type.is_some_and(|t| !t.is_null() && !spend(t)) {
        return Err(refuse_field(
            at,
            "access_schedule.access_type",
            "only SPEND access is supported by Tally yet",
        ));
    }
    let specifiers = body.get("specifiers").and_then(Value::as_array);
    for (j, spec) in specifiers.into_iter().flatten().enumerate() {
        if is_set(spec.get("exclude")) {
            let field = format!("specifiers[{j}].exclude");
            return Err(refuse_field(at, &field, "not supported by Tally yet"));
        }
    }
    Ok(())
}

/// Refuses `contracts/create`'s `commits` and `credits` entries that set a field Tally cannot
/// honour, naming it (`commits[2].hierarchy_configuration: ...`).
pub fn check_supported(body: &Map<String, Value>) -> std::result::Result<(), Invalid> {
    check_items(body, "commits", false)?;
    check_items(body, "credits", true)
}

/// [`check_body`] for each entry of the list `field` of a request body (commits, or credits
/// when `credits`), naming it `field[i]`.
pub fn check_items(
    body: &Map<String, Value>,
    field: &str,
    credits: bool,
) -> std::result::Result<(), Invalid> {
    let kind = match credits {
        true => BalanceType::Credit,
        false => BalanceType::Prepaid,
    };
    let items = body.get(field).and_then(Value::as_array);
    for (i, item) in items.into_iter().flatten().enumerate() {
        if let Value::Object(map) = item {
            check_body(&format!("{field}[{i}]"), map, kind)?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Validation

/// One `access_schedule` item as a client gives it.
pub struct AccessItemInput {
    pub amount: Dec,
    pub starting_at: Time,
    pub ending_before: Time,
}

/// `ScheduleDurationInput`.
pub struct AccessInput {
    pub credit_type_id: Option<String>,
    pub schedule_items: Vec<AccessItemInput>,
}

/// One `invoice_schedule` item: `amount`, or `unit_price` and `quantity`.
pub struct InvoiceItemInput {
    pub timestamp: Time,
    pub amount: Option<Dec>,
    pub unit_price: Option<Dec>,
    pub quantity: Option<Dec>,
}

/// `SchedulePointInTimeInput`: `schedule_items`, or a `recurring_schedule` expanded into them.
pub struct InvoiceInput {
    pub credit_type_id: Option<String>,
    pub do_not_invoice: bool,
    pub schedule_items: Vec<InvoiceItemInput>,
    pub recurring_schedule: Option<RecurringInput>,
}

/// A `recurring_schedule`: `amount`, or `unit_price` and `quantity`, every `frequency` from
/// `starting_at` until `ending_before` (`tally_core::schedule`).
pub struct RecurringInput {
    pub distribution: tally_core::schedule::Distribution,
    pub frequency: tally_core::schedule::ScheduleFrequency,
    pub starting_at: Time,
    pub ending_before: Time,
    pub amount: Option<Dec>,
    pub unit_price: Option<Dec>,
    pub quantity: Option<Dec>,
}

/// A commit or credit as a client gives it (contract- or customer-level).
pub struct BalanceInput {
    pub balance_type: BalanceType,
    pub product_id: String,
    pub access_schedule: Option<AccessInput>,
    pub invoice_schedule: Option<InvoiceInput>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub priority: Option<Dec>,
    pub rate_type: Option<BalanceRateType>,
    pub applicable_product_ids: Option<Vec<String>>,
    pub applicable_product_tags: Option<Vec<String>>,
    pub specifiers: Option<Vec<CommitSpecifier>>,
    pub rollover_fraction: Option<Dec>,
    pub custom_fields: BTreeMap<String, String>,
    pub netsuite_sales_order_id: Option<String>,
    pub salesforce_opportunity_id: Option<String>,
    /// How commit-specific overrides of the same request name it (`service::contracts::
    /// CommitNames`); not stored.
    pub temporary_id: Option<String>,
}

/// `field` inside the commit or credit at `at` (`""`: the request itself).
pub(super) fn path(at: &str, field: &str) -> String {
    match at {
        "" => field.to_string(),
        _ => format!("{at}.{field}"),
    }
}

pub(super) fn invalid(at: &str, field: &str, why: impl std::fmt::Display) -> CommitError {
    Invalid(format!("{}: {why}", path(at, field))).into()
}

/// Refuses an amount, unit price or quantity below zero or above [`MAX_AMOUNT`].
pub(super) fn check_amount(at: &str, field: &str, d: Dec) -> Result<()> {
    if d.0 < Decimal::ZERO {
        return Err(invalid(at, field, "must not be negative"));
    }
    if d.0 > MAX_AMOUNT {
        return Err(invalid(at, field, format!("must be at most {MAX_AMOUNT}")));
    }
    Ok(())
}

pub(super) fn hour(at: &str, field: &str, t: Time) -> Result<()> {
    Ok(require_hour(&path(at, field), t)?)
}

pub(super) fn resolve_credit_type(
    at: &str,
    field: &str,
    id: Option<&str>,
) -> Result<CreditTypeRef> {
    credit_type(id).map_err(|e| invalid(at, field, e.0))
}

/// The product `id`, which must exist (400 otherwise: it is a field of the request).
pub(super) async fn product(st: &AppState, env: Env, field: &str, id: &str) -> Result<Product> {
    match st.stores.config.get_doc(env, kind::PRODUCT, id).await? {
        Some(doc) => Ok(decode::<Product>(&doc)?.with_current(st.now_ms())),
        None => Err(Invalid(format!("{field}: product {id} not found")).into()),
    }
}

/// The FIXED, unarchived product a commit, credit or scheduled charge is invoiced with.
pub(super) async fn invoicing_product(
    st: &AppState,
    env: Env,
    at: &str,
    id: &str,
) -> Result<ProductRef> {
    let field = path(at, "product_id");
    let p = product(st, env, &field, id).await?;
    if p.archived_at.is_some() {
        return Err(Invalid(format!("{field}: product {id} is archived")).into());
    }
    if p.product_type != ProductType::Fixed {
        return Err(Invalid(format!(
            "{field}: product {id} is a {} product; a FIXED product is required",
            p.product_type.as_str()
        ))
        .into());
    }
    Ok(ProductRef {
        id: p.id,
        name: p.current.name,
    })
}

/// The access schedule in `credit_type` (USD or a custom unit, resolved by the caller).
fn access_schedule(
    at: &str,
    input: Option<AccessInput>,
    credit_type: CreditTypeRef,
) -> Result<AccessSchedule> {
    let Some(input) = input else {
        return Err(invalid(at, "access_schedule", "required"));
    };
    let n = input.schedule_items.len();
    if n == 0 || n > MAX_SCHEDULE_ITEMS {
        return Err(invalid(
            at,
            "access_schedule.schedule_items",
            format!("between 1 and {MAX_SCHEDULE_ITEMS} items are required"),
        ));
    }
    let mut items = Vec::with_capacity(n);
    for (j, item) in input.schedule_items.into_iter().enumerate() {
        let at_item = path(at, &format!("access_schedule.schedule_items[{j}]"));
        check_amount(&at_item, "amount", item.amount)?;
        hour(&at_item, "starting_at", item.starting_at)?;
        hour(&at_item, "ending_before", item.ending_before)?;
        if item.ending_before <= item.starting_at {
            return Err(invalid(
                &at_item,
                "ending_before",
                "must be after starting_at",
            ));
        }
        items.push(AccessItem {
            id: new_id(),
            amount: item.amount,
            starting_at: item.starting_at,
            ending_before: item.ending_before,
        });
    }
    Ok(AccessSchedule {
        credit_type,
        schedule_items: items,
    })
}

/// One invoice item: `amount` alone (unit price = amount, quantity 1), or `unit_price` and
/// `quantity` (amount = their product, exact).
pub(super) fn invoice_item(at: &str, item: InvoiceItemInput) -> Result<InvoiceItem> {
    hour(at, "timestamp", item.timestamp)?;
    let (amount, unit_price, quantity) =
        item_amount(at, item.amount, item.unit_price, item.quantity)?;
    Ok(InvoiceItem {
        id: new_id(),
        timestamp: item.timestamp,
        amount,
        quantity,
        unit_price,
    })
}

/// `(amount, unit_price, quantity)` from `amount` alone or `unit_price` and `quantity`.
pub(super) fn item_amount(
    at: &str,
    amount: Option<Dec>,
    unit_price: Option<Dec>,
    quantity: Option<Dec>,
) -> Result<(Dec, Dec, Dec)> {
    let (amount, unit_price, quantity) = match (amount, unit_price, quantity) {
        (Some(amount), None, None) => (amount, amount, Dec(Decimal::ONE)),
        (None, Some(unit_price), Some(quantity)) => {
            check_amount(at, "unit_price", unit_price)?;
            check_amount(at, "quantity", quantity)?;
            let amount = unit_price
                .0
                .checked_mul(quantity.0)
                .ok_or_else(|| invalid(at, "amount", "unit_price × quantity overflows"))?;
            (Dec(amount), unit_price, quantity)
        }
        (Some(_), _, _) => {
            return Err(invalid(
                at,
                "amount",
                "give amount, or unit_price and quantity, not both",
            ))
        }
        (None, _, _) => {
            return Err(invalid(
                at,
                "amount",
                "give amount, or both unit_price and quantity",
            ))
        }
    };
    check_amount(at, "amount", amount)?;
    Ok((amount, unit_price, quantity))
}

/// The items a `recurring_schedule` stands for (`tally_core::schedule`), each with its id.
fn recurring_items(at: &str, r: RecurringInput) -> Result<Vec<InvoiceItem>> {
    let at = path(at, "invoice_schedule.recurring_schedule");
    hour(&at, "starting_at", r.starting_at)?;
    hour(&at, "ending_before", r.ending_before)?;
    let (_, unit_price, quantity) = item_amount(&at, r.amount, r.unit_price, r.quantity)?;
    let schedule = tally_core::schedule::RecurringSchedule {
        amount_distribution: r.distribution,
        frequency: r.frequency,
        starting_at_ms: r.starting_at.0,
        ending_before_ms: r.ending_before.0,
        unit_price: unit_price.0,
        quantity: quantity.0,
    };
    let items = schedule
        .expand()
        .map_err(|e| CommitError::Invalid(Invalid(format!("{at}.{e}"))))?;
    if items.len() > MAX_SCHEDULE_ITEMS {
        return Err(invalid(
            &at,
            "ending_before",
            format!("a recurring schedule may have at most {MAX_SCHEDULE_ITEMS} items"),
        ));
    }
    Ok(items
        .into_iter()
        .map(|i| InvoiceItem {
            id: new_id(),
            timestamp: Time(i.timestamp_ms),
            amount: Dec(i.amount),
            quantity: Dec(i.quantity),
            unit_price: Dec(i.unit_price),
        })
        .collect())
}

pub(super) fn invoice_schedule(at: &str, input: InvoiceInput) -> Result<InvoiceSchedule> {
    let credit_type = resolve_credit_type(
        at,
        "invoice_schedule.credit_type_id",
        input.credit_type_id.as_deref(),
    )?;
    if let Some(recurring) = input.recurring_schedule {
        if !input.schedule_items.is_empty() {
            return Err(invalid(
                at,
                "invoice_schedule.recurring_schedule",
                "give schedule_items or recurring_schedule, not both",
            ));
        }
        return Ok(InvoiceSchedule {
            credit_type,
            do_not_invoice: input.do_not_invoice,
            schedule_items: recurring_items(at, recurring)?,
        });
    }
    let n = input.schedule_items.len();
    if n == 0 || n > MAX_SCHEDULE_ITEMS {
        return Err(invalid(
            at,
            "invoice_schedule.schedule_items",
            format!("between 1 and {MAX_SCHEDULE_ITEMS} items are required"),
        ));
    }
    let items = input
        .schedule_items
        .into_iter()
        .enumerate()
        .map(|(j, item)| {
            invoice_item(
                &path(at, &format!("invoice_schedule.schedule_items[{j}]")),
                item,
            )
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(InvoiceSchedule {
        credit_type,
        do_not_invoice: input.do_not_invoice,
        schedule_items: items,
    })
}

/// A POSTPAID commit: one segment, and one invoice item (its true-up date) of the same amount.
fn check_postpaid(
    at: &str,
    access: &AccessSchedule,
    invoice: Option<&InvoiceSchedule>,
) -> Result<()> {
    if access.schedule_items.len() != 1 {
        return Err(invalid(
            at,
            "access_schedule.schedule_items",
            "a POSTPAID commit has exactly one access item",
        ));
    }
    let Some(invoice) = invoice else {
        return Err(invalid(
            at,
            "invoice_schedule",
            "required for POSTPAID commits (its one item is the true-up date)",
        ));
    };
    if invoice.schedule_items.len() != 1 {
        return Err(invalid(
            at,
            "invoice_schedule.schedule_items",
            "a POSTPAID commit has exactly one invoice item (the true-up date)",
        ));
    }
    if invoice.do_not_invoice {
        return Err(invalid(
            at,
            "invoice_schedule.do_not_invoice",
            "a POSTPAID commit is always invoiced at its true-up",
        ));
    }
    let (paid, owed) = (
        invoice.schedule_items[0].amount,
        access.schedule_items[0].amount,
    );
    if paid != owed {
        return Err(invalid(
            at,
            "invoice_schedule.schedule_items[0].amount",
            format!(
                "must equal the access amount ({}) for a POSTPAID commit",
                owed.0.normalize()
            ),
        ));
    }
    Ok(())
}

pub(super) fn check_list_len<T>(at: &str, field: &str, list: Option<&Vec<T>>) -> Result<()> {
    if list.is_some_and(|l| l.len() > MAX_SCOPE_ENTRIES) {
        return Err(invalid(
            at,
            field,
            format!("at most {MAX_SCOPE_ENTRIES} entries are allowed"),
        ));
    }
    Ok(())
}

/// What usage a commit or credit applies to.
pub(super) struct Scope<'a> {
    pub applicable_product_ids: Option<&'a Vec<String>>,
    pub applicable_product_tags: Option<&'a Vec<String>>,
    pub specifiers: Option<&'a Vec<CommitSpecifier>>,
}

/// Which usage it applies to: `specifiers`, or `applicable_product_ids` / `_tags`, every named
/// product existing.
pub(super) async fn check_scope(st: &AppState, env: Env, at: &str, input: Scope<'_>) -> Result<()> {
    check_list_len(at, "applicable_product_ids", input.applicable_product_ids)?;
    check_list_len(at, "applicable_product_tags", input.applicable_product_tags)?;
    check_list_len(at, "specifiers", input.specifiers)?;
    let scoped = input.applicable_product_ids.is_some() || input.applicable_product_tags.is_some();
    if scoped && input.specifiers.is_some() {
        return Err(invalid(
            at,
            "specifiers",
            "cannot be combined with applicable_product_ids or applicable_product_tags",
        ));
    }
    for (j, id) in input
        .applicable_product_ids
        .into_iter()
        .flatten()
        .enumerate()
    {
        product(
            st,
            env,
            &path(at, &format!("applicable_product_ids[{j}]")),
            id,
        )
        .await?;
    }
    for (j, spec) in input.specifiers.into_iter().flatten().enumerate() {
        if let Some(id) = &spec.product_id {
            product(
                st,
                env,
                &path(at, &format!("specifiers[{j}].product_id")),
                id,
            )
            .await?;
        }
    }
    Ok(())
}

/// Checks one commit or credit (`at` names it in the request) and makes its record, ids
/// assigned; the customer-level fields are left for the caller.
pub async fn build(
    st: &AppState,
    env: Env,
    at: &str,
    input: BalanceInput,
    now: Time,
) -> Result<BalanceRecord> {
    let product = invoicing_product(st, env, at, &input.product_id).await?;
    let access_credit_type = input.access_schedule.as_ref();
    let access_credit_type = access_credit_type.and_then(|a| a.credit_type_id.as_deref());
    let credit_type = super::credit_types::resolve(st, env, access_credit_type)
        .await
        .map_err(|e| e.at(&path(at, "access_schedule.credit_type_id")))?;
    let access = access_schedule(at, input.access_schedule, credit_type)?;
    let invoice = match input.invoice_schedule {
        Some(i) if input.balance_type.is_commit() => Some(invoice_schedule(at, i)?),
        Some(_) => {
            return Err(invalid(
                at,
                "invoice_schedule",
                "credits are never invoiced",
            ))
        }
        None => None,
    };
    if input.balance_type == BalanceType::Postpaid {
        check_postpaid(at, &access, invoice.as_ref())?;
    }
    if let Some(name) = &input.name {
        require_text(&path(at, "name"), name, 256)?;
    }
    if let Some(f) = input.rollover_fraction {
        if f.0 < Decimal::ZERO || f.0 > Decimal::ONE {
            return Err(invalid(at, "rollover_fraction", "must be between 0 and 1"));
        }
    }
    let scope = BalanceInput {
        access_schedule: None,
        invoice_schedule: None,
        ..input
    };
    let scope_of = Scope {
        applicable_product_ids: scope.applicable_product_ids.as_ref(),
        applicable_product_tags: scope.applicable_product_tags.as_ref(),
        specifiers: scope.specifiers.as_ref(),
    };
    check_scope(st, env, at, scope_of).await?;
    Ok(BalanceRecord {
        id: new_id(),
        balance_type: scope.balance_type,
        product,
        access_schedule: access,
        invoice_schedule: invoice,
        name: scope.name,
        description: scope.description,
        priority: scope.priority,
        rate_type: scope.rate_type.unwrap_or(BalanceRateType::ListRate),
        applicable_product_ids: scope.applicable_product_ids,
        applicable_product_tags: scope.applicable_product_tags,
        specifiers: scope.specifiers,
        customer_id: None,
        invoice_contract_id: None,
        applicable_contract_ids: None,
        rollover_fraction: scope.rollover_fraction,
        custom_fields: scope.custom_fields,
        netsuite_sales_order_id: scope.netsuite_sales_order_id,
        salesforce_opportunity_id: scope.salesforce_opportunity_id,
        created_at: now,
        created_by: CREATED_BY.into(),
        archived_at: None,
        uniqueness_key: None,
        recurring_id: None,
        rolled_over_from: None,
    })
}

/// A contract's `commits` and `credits` as records (errors name `commits[i].field`).
pub async fn build_contract_balances(
    st: &AppState,
    env: Env,
    commits: Vec<BalanceInput>,
    credits: Vec<BalanceInput>,
    now: Time,
) -> Result<(Vec<BalanceRecord>, Vec<BalanceRecord>)> {
    if commits.len() + credits.len() > MAX_BALANCES_PER_CONTRACT {
        return Err(Invalid(format!(
            "commits, credits: at most {MAX_BALANCES_PER_CONTRACT} commits and credits are \
             allowed per contract"
        ))
        .into());
    }
    let mut out = (Vec::new(), Vec::new());
    for (field, inputs, records) in [
        ("commits", commits, &mut out.0),
        ("credits", credits, &mut out.1),
    ] {
        for (i, input) in inputs.into_iter().enumerate() {
            records.push(build(st, env, &format!("{field}[{i}]"), input, now).await?);
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Customer-level commits and credits

/// `customerCommits/create` / `customerCredits/create` as a client gives it.
pub struct NewCustomerBalance {
    pub customer_id: String,
    pub balance: BalanceInput,
    pub invoice_contract_id: Option<String>,
    pub applicable_contract_ids: Option<Vec<String>>,
    pub uniqueness_key: Option<String>,
}

/// The customer, which must exist (404) and not be archived (400).
async fn active_customer(st: &AppState, env: Env, id: &str) -> Result<Customer> {
    let customer: Customer = load(&st.stores, env, kind::CUSTOMER, id, "customer").await?;
    if customer.archived_at.is_some() {
        return Err(Invalid(format!(
            "customer {id} is archived; commits and credits cannot be created for it"
        ))
        .into());
    }
    Ok(customer)
}

/// The customer's contract `id` (`field` names it in the request; 400 when it is not one).
async fn customer_contract(
    st: &AppState,
    env: Env,
    customer_id: &str,
    field: &str,
    id: &str,
) -> Result<Contract> {
    let found = st.stores.config.get_doc(env, kind::CONTRACT, id).await?;
    let contract = found.as_ref().map(decode::<Contract>).transpose()?;
    match contract {
        Some(c) if c.customer_id == customer_id => Ok(c),
        _ => Err(Invalid(format!(
            "{field}: contract {id} is not a contract of customer {customer_id}"
        ))
        .into()),
    }
}

/// Whether a commit needs an invoice contract: POSTPAID, or PREPAID with an invoiced schedule.
fn needs_invoice_contract(b: &BalanceRecord) -> bool {
    match b.balance_type {
        BalanceType::Postpaid => true,
        BalanceType::Prepaid => b
            .invoice_schedule
            .as_ref()
            .is_some_and(|s| !s.do_not_invoice),
        BalanceType::Credit => false,
    }
}

async fn customer_balance_docs(
    st: &AppState,
    env: Env,
    customer_id: &str,
    filter: ArchiveFilter,
) -> Result<Vec<BalanceRecord>> {
    let docs = st
        .stores
        .config
        .list_docs(env, kind::CUSTOMER_BALANCE, Some(customer_id), filter, None)
        .await?;
    Ok(docs
        .iter()
        .map(decode)
        .collect::<std::result::Result<_, _>>()?)
}

/// Validates and stores a customer-level commit or credit; its id.
pub async fn create(st: &AppState, env: Env, req: NewCustomerBalance) -> Result<String> {
    if let Some(key) = &req.uniqueness_key {
        require_text("uniqueness_key", key, 128)?;
    }
    if req.balance.priority.is_none() {
        return Err(invalid("", "priority", "required"));
    }
    let customer = active_customer(st, env, &req.customer_id).await?;
    let now = st.now_ms();
    let mut record = build(st, env, "", req.balance, Time(now)).await?;
    match &req.invoice_contract_id {
        Some(id) => {
            customer_contract(st, env, &customer.id, "invoice_contract_id", id).await?;
        }
        None if needs_invoice_contract(&record) => {
            return Err(invalid(
                "",
                "invoice_contract_id",
                "required for POSTPAID commits and for invoiced PREPAID commits",
            ))
        }
        None => {}
    }
    check_list_len(
        "",
        "applicable_contract_ids",
        req.applicable_contract_ids.as_ref(),
    )?;
    for (j, id) in req.applicable_contract_ids.iter().flatten().enumerate() {
        let field = format!("applicable_contract_ids[{j}]");
        customer_contract(st, env, &customer.id, &field, id).await?;
    }
    let existing = customer_balance_docs(st, env, &customer.id, ArchiveFilter::All).await?;
    if existing.len() >= MAX_CUSTOMER_BALANCES {
        return Err(Invalid(format!(
            "a customer holds at most {MAX_CUSTOMER_BALANCES} customer-level commits and credits"
        ))
        .into());
    }
    record.customer_id = Some(customer.id.clone());
    record.invoice_contract_id = req.invoice_contract_id;
    record.applicable_contract_ids = req.applicable_contract_ids;
    record.uniqueness_key = req.uniqueness_key;
    let doc = NewDoc {
        kind: kind::CUSTOMER_BALANCE,
        id: &record.id,
        parent_id: Some(&customer.id),
        unique_key: record.uniqueness_key.as_deref(),
        created_ms: now,
        body: encode(&record)?,
    };
    if !super::insert_unique(st, env, doc).await? {
        return Err(CommitError::UniquenessKeyUsed);
    }
    Ok(record.id)
}

/// What `customerCommits/list` / `customerCredits/list` filter on.
pub struct BalanceFilter {
    pub customer_id: String,
    /// Credits (`Some(true)`), commits (PREPAID and POSTPAID, `Some(false)`) or both.
    pub credits: Option<bool>,
    pub id: Option<String>,
    /// Some segment covers it: `starting_at <= t < ending_before`.
    pub covering_date: Option<Time>,
    /// Some segment has access on or after it (`ending_before > t`).
    pub starting_at: Option<Time>,
    /// Some segment has access before it (`starting_at < t`).
    pub effective_before: Option<Time>,
    /// Archived ones, and those of archived contracts, too.
    pub include_archived: bool,
    /// The customer's contracts' own too (after the customer-level ones).
    pub include_contract_balances: bool,
}

impl BalanceFilter {
    fn keeps(&self, b: &BalanceRecord) -> bool {
        let items = &b.access_schedule.schedule_items;
        let any = |f: &dyn Fn(&AccessItem) -> bool| items.iter().any(f);
        self.credits
            .is_none_or(|credits| (b.balance_type == BalanceType::Credit) == credits)
            && (self.include_archived || b.archived_at.is_none())
            && self.id.as_ref().is_none_or(|id| *id == b.id)
            && self
                .covering_date
                .is_none_or(|t| any(&|s| s.starting_at <= t && t < s.ending_before))
            && self
                .starting_at
                .is_none_or(|t| any(&|s| s.ending_before > t))
            && self
                .effective_before
                .is_none_or(|t| any(&|s| s.starting_at < t))
    }
}

/// The customer's commits or credits matching `filter`, each with its contract (`None`:
/// customer-level): customer-level ones in creation order, then each contract's (contracts by
/// start, then creation) in the order given.
pub async fn list(
    st: &AppState,
    env: Env,
    filter: &BalanceFilter,
) -> Result<Vec<(Option<String>, BalanceRecord)>> {
    let _: Customer = load(
        &st.stores,
        env,
        kind::CUSTOMER,
        &filter.customer_id,
        "customer",
    )
    .await?;
    let archived = match filter.include_archived {
        true => ArchiveFilter::All,
        false => ArchiveFilter::Active,
    };
    let mut out: Vec<(Option<String>, BalanceRecord)> =
        customer_balance_docs(st, env, &filter.customer_id, archived)
            .await?
            .into_iter()
            .filter(|b| filter.keeps(b))
            .map(|b| (None, b))
            .collect();
    if filter.include_contract_balances {
        for c in customer_contracts(st, env, &filter.customer_id, archived).await? {
            let own = c.own_balance_records(st.now_ms());
            out.extend(
                own.into_iter()
                    .filter(|b| filter.keeps(b))
                    .map(|b| (Some(c.id.clone()), b)),
            );
        }
    }
    Ok(out)
}

async fn customer_contracts(
    st: &AppState,
    env: Env,
    customer_id: &str,
    filter: ArchiveFilter,
) -> Result<Vec<Contract>> {
    let docs = st
        .stores
        .config
        .list_docs(env, kind::CONTRACT, Some(customer_id), filter, None)
        .await?;
    let mut contracts = docs
        .iter()
        .map(decode::<Contract>)
        .collect::<std::result::Result<Vec<_>, _>>()?;
    contracts.sort_by_key(|c| (c.starting_at, c.created_at));
    Ok(contracts)
}

/// What `customerCommits/updateEndDate` / `customerCredits/updateEndDate` change.
pub struct EndDateUpdate {
    pub customer_id: String,
    pub id: String,
    pub credits: bool,
    pub access_ending_before: Option<Time>,
    pub invoices_ending_before: Option<Time>,
}

/// Ends a customer-level commit's or credit's access (segments from then on dropped, the one
/// running then cut there) and, for a PREPAID commit, its invoicing (items from then on
/// dropped) earlier. Never later: a later access end is a 400.
pub async fn update_end_date(st: &AppState, env: Env, req: &EndDateUpdate) -> Result<()> {
    let what = if req.credits { "credit" } else { "commit" };
    if req.access_ending_before.is_none() && req.invoices_ending_before.is_none() {
        return Err(Invalid(
            "give access_ending_before or invoices_ending_before (or both)".into(),
        )
        .into());
    }
    if let Some(t) = req.access_ending_before {
        hour("", "access_ending_before", t)?;
    }
    if let Some(t) = req.invoices_ending_before {
        hour("", "invoices_ending_before", t)?;
    }
    modify_doc(
        st,
        env,
        kind::CUSTOMER_BALANCE,
        &req.id,
        what,
        |b: &mut BalanceRecord| {
            let mine = b.customer_id.as_deref() == Some(req.customer_id.as_str());
            if !mine || (b.balance_type == BalanceType::Credit) != req.credits {
                return Err(CommitError::NotFound(what));
            }
            if b.balance_type == BalanceType::Postpaid {
                return Err(
                    Invalid("only PREPAID commits' end dates can be updated".into()).into(),
                );
            }
            if let Some(t) = req.access_ending_before {
                cut_access(&mut b.access_schedule, t)?;
            }
            if let Some(t) = req.invoices_ending_before {
                let Some(schedule) = b.invoice_schedule.as_mut() else {
                    return Err(invalid(
                        "",
                        "invoices_ending_before",
                        "the commit has no invoice schedule",
                    ));
                };
                schedule.schedule_items.retain(|i| i.timestamp < t);
            }
            Ok(Write::Save {
                archived: b.archived_at.is_some(),
            })
        },
    )
    .await?;
    Ok(())
}

/// Ends access at `t`: segments starting at or after it are dropped, one running past it ends
/// there. `t` after the current end, or at or before the first start, is refused.
fn cut_access(access: &mut AccessSchedule, t: Time) -> Result<()> {
    let items = &access.schedule_items;
    let end = items.iter().map(|s| s.ending_before).max();
    let start = items.iter().map(|s| s.starting_at).min();
    let (Some(end), Some(start)) = (end, start) else {
        return Err(invalid(
            "",
            "access_ending_before",
            "the schedule has no access",
        ));
    };
    if t > end {
        return Err(invalid(
            "",
            "access_ending_before",
            format!(
                "access ends at {}; an end date can only be moved earlier",
                tally_core::time::format_rfc3339_ms(end.0)
            ),
        ));
    }
    if t <= start {
        return Err(invalid(
            "",
            "access_ending_before",
            "must be after the access schedule's first starting_at",
        ));
    }
    access.schedule_items.retain(|s| s.starting_at < t);
    for s in &mut access.schedule_items {
        s.ending_before = s.ending_before.min(t);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Pricing input

/// The commits and credits the contract's usage may draw on: its own and those of its customer
/// that apply to it (`applicable_contract_ids` empty or naming it), archived ones left out.
pub async fn applicable_balances(
    st: &AppState,
    env: Env,
    contract: &Contract,
) -> std::result::Result<Vec<Balance>, StoreError> {
    let mut out = own_balances(contract, st.now_ms());
    let docs = st
        .stores
        .config
        .list_docs(
            env,
            kind::CUSTOMER_BALANCE,
            Some(&contract.customer_id),
            ArchiveFilter::Active,
            None,
        )
        .await?;
    for doc in &docs {
        let b: BalanceRecord = decode(doc)?;
        let applies = b
            .applicable_contract_ids
            .as_ref()
            .is_none_or(|ids| ids.is_empty() || ids.contains(&contract.id));
        if b.archived_at.is_none() && applies {
            out.push(b.balance(None));
        }
    }
    if out.iter().any(|b| b.kind == BalanceKind::PostpaidCommit) {
        let doc = st
            .stores
            .config
            .get_doc(env, kind::TRANSITION, &contract.id)
            .await?;
        let marker: Option<crate::model::TransitionMarker> =
            doc.as_ref().map(decode).transpose()?;
        super::transitions::drop_removed_trueups(&mut out, marker.as_slice());
    }
    Ok(out)
}

/// The contract's own unarchived commits and credits, those its recurring ones generated by
/// `now_ms` included.
fn own_balances(contract: &Contract, now_ms: i64) -> Vec<Balance> {
    contract
        .own_balance_records(now_ms)
        .iter()
        .filter(|b| b.archived_at.is_none())
        .map(|b| b.balance(Some(&contract.id)))
        .collect()
}

/// Every unarchived commit and credit of the customer: each of its contracts' (archived
/// contracts included, contracts by start then creation) and its customer-level ones.
pub async fn customer_balances(
    st: &AppState,
    env: Env,
    customer_id: &str,
) -> std::result::Result<Vec<Balance>, StoreError> {
    let contracts = customer_contracts(st, env, customer_id, ArchiveFilter::All)
        .await
        .map_err(store_only)?;
    let now = st.now_ms();
    let mut out: Vec<Balance> = contracts
        .iter()
        .flat_map(|c| own_balances(c, now))
        .collect();
    let customer_level = customer_balance_docs(st, env, customer_id, ArchiveFilter::Active)
        .await
        .map_err(store_only)?;
    out.extend(
        customer_level
            .iter()
            .filter(|b| b.archived_at.is_none())
            .map(|b| b.balance(None)),
    );
    if out.iter().any(|b| b.kind == BalanceKind::PostpaidCommit) {
        let markers: Vec<crate::model::TransitionMarker> =
            load_children(&st.stores, env, kind::TRANSITION, customer_id).await?;
        super::transitions::drop_removed_trueups(&mut out, &markers);
    }
    Ok(out)
}

/// The store error of a read that can fail no other way.
fn store_only(e: CommitError) -> StoreError {
    match e {
        CommitError::Store(e) => e,
        other => StoreError::Corrupt(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_amount_is_ten_to_the_fifteenth() {
        assert_eq!(MAX_AMOUNT, Decimal::from(1_000_000_000_000_000_i64));
    }
}
