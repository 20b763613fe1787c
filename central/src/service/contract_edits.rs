//! Changes to a contract after its creation: v1 `contracts/amend` (adds terms from an effective
//! time), v1 `contracts/updateEndDate`, v2 `contracts/edit` (adds and removes overrides, changes
//! the end date, the name and the payment terms) and v2 `getEditHistory`.
//!
//! Every change is one read-modify-write of the contract document through [`modify_doc`]
//! (conditional on the version read, retried), so concurrent changes never lose one another.
//! Each is recorded in the document's history ([`crate::model::ContractHistory`]) as applied, with an id;
//! the first one also keeps the terms as created (v1 `initial`).
//!
//! Invariants:
//! - A change either applies whole or not at all: every check (store lookups, core's override
//!   rules, the finalized-invoice rule) runs before the write or inside it, and a refused
//!   change (400, 404, 409) leaves the contract exactly as it was.
//! - Pricing reads the contract as it is now: drafts are computed on read, so they follow an
//!   edit at once; finalized and voided invoices are frozen bodies, never changed by an edit.
//! - Terms Tally does not rate yet are refused naming the field, never dropped; commits and
//!   credits are refused in one place ([`balance_changes`]) until they are wired in.
//! - Archived contracts are not changed (400).

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::charges::{self, ChargeInput, ChargeUpdateInput};
use super::commits::{self, BalanceInput, MAX_BALANCES_PER_CONTRACT};
use super::contracts::{self, build_overrides, CommitNames, ContractError, OverrideInput};
use super::pro_services::{self, ProServiceInput};
use super::recurring::{self, RecurringInput, MAX_RECURRING_PER_CONTRACT};
use super::subscriptions::{self, SubscriptionInput, SubscriptionUpdateInput};
use super::{modify_doc, require_hour, require_text, Invalid, Write};
use crate::model::{kind, new_id, AmendmentInfo, Contract, ContractChange, CREATED_BY};
use crate::store::{Env, InvoiceStatus};
use crate::wire::{Dec, Time};
use crate::AppState;
use tally_core::overrides::MAX_OVERRIDES;

type Result<T> = std::result::Result<T, ContractError>;

/// Most changes (amendments, edits, end-date updates) one contract keeps: its document, read on
/// every invoice, stays bounded.
pub const MAX_CONTRACT_CHANGES: usize = 500;

/// Longest contract name an edit sets.
const MAX_NAME_CHARS: usize = 256;

/// Amendment terms Tally cannot rate yet: refused when non-empty.
const UNSUPPORTED_AMEND_TERMS: &[&str] = &["discounts", "reseller_royalties"];

/// Edit fields Tally cannot apply yet (`EditContractPayload`, and `ContractEdit`'s spellings):
/// refused when non-empty. Commits and credits are [`balance_changes`]'.
const UNSUPPORTED_EDIT_FIELDS: &[&str] = &[
    "add_discounts",
    "add_professional_services",
    "add_pro_services",
    "add_reseller_royalties",
    "add_spend_trackers",
    "add_spend_threshold_configuration",
    "add_prepaid_balance_threshold_configuration",
    "add_billing_provider_configuration_update",
    "add_revenue_system_configuration_update",
    "add_usage_filters",
    "archive_spend_trackers",
    "update_recurring_commits",
    "update_recurring_credits",
    "update_discounts",
    "update_refund_invoices",
    "update_spend_threshold_configuration",
    "update_prepaid_balance_threshold_configuration",
];

fn refuse_unsupported(
    body: &Map<String, Value>,
    fields: &[&str],
    what: &str,
) -> std::result::Result<(), Invalid> {
    let set = |v: &Value| match v {
        Value::Null => false,
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        _ => true,
    };
    match fields.iter().find(|f| body.get(**f).is_some_and(set)) {
        Some(field) => Err(Invalid(format!(
            "{field}: {what} is not supported by Tally yet"
        ))),
        None => Ok(()),
    }
}

/// Refuses an amend body that sets a term Tally cannot honour, naming it.
pub fn check_amend_supported(body: &Map<String, Value>) -> std::result::Result<(), Invalid> {
    refuse_unsupported(body, UNSUPPORTED_AMEND_TERMS, "this amendment term")?;
    commits::check_items(body, "commits", false)?;
    commits::check_items(body, "credits", true)?;
    contracts::check_overrides_supported("overrides", body.get("overrides"))
}

/// Refuses an edit body that sets a field Tally cannot apply, naming it.
pub fn check_edit_supported(body: &Map<String, Value>) -> std::result::Result<(), Invalid> {
    refuse_unsupported(body, UNSUPPORTED_EDIT_FIELDS, "this edit")?;
    commits::check_items(body, "add_commits", false)?;
    commits::check_items(body, "add_credits", true)?;
    recurring::check_items(body, "add_recurring_commits", false)?;
    recurring::check_items(body, "add_recurring_credits", true)?;
    contracts::check_overrides_supported("add_overrides", body.get("add_overrides"))
}

/// The commit and credit parts of an amendment or edit, as given.
#[derive(Default)]
pub struct BalanceChanges {
    /// `(request field, inputs)`: `commits` / `credits` (amend), `add_commits` / `add_credits`
    /// (edit).
    pub add_commits: (&'static str, Vec<BalanceInput>),
    pub add_credits: (&'static str, Vec<BalanceInput>),
    pub archive_commits: Vec<String>,
    pub archive_credits: Vec<String>,
    /// `add_recurring_commits` / `add_recurring_credits` (v2 edits only).
    pub add_recurring_commits: Vec<RecurringInput>,
    pub add_recurring_credits: Vec<RecurringInput>,
    /// `(request field, inputs)`: `scheduled_charges` (amend), `add_scheduled_charges` (edit).
    pub add_scheduled_charges: (&'static str, Vec<ChargeInput>),
    /// `archive_scheduled_charges` (v2 edits only).
    pub archive_scheduled_charges: Vec<String>,
    /// `update_scheduled_charges` (v2 edits only).
    pub update_scheduled_charges: Vec<ChargeUpdateInput>,
    /// Fields given that Tally cannot apply yet (`update_commits`, `update_credits`).
    pub refused: Vec<&'static str>,
}

/// Validates the commit and credit parts into `change`: new ones exactly as on create
/// (`service::commits::build`, ids assigned), archivals naming the contract's own; then the
/// commits the change's overrides (request field `overrides_field`) name, as on create.
async fn balance_changes(
    st: &AppState,
    env: Env,
    contract: &Contract,
    changes: BalanceChanges,
    change: &mut ContractChange,
    overrides_field: &str,
) -> Result<()> {
    if let Some(field) = changes.refused.first() {
        return Err(Invalid(format!(
            "{field}: changing an existing commit or credit is not supported by Tally yet \
             (archive it and add a new one)"
        ))
        .into());
    }
    let mut temporary = contracts::temporary_ids(&[&changes.add_commits.1, &changes.add_credits.1]);
    for ((field, inputs), out) in [
        (changes.add_commits, &mut change.add_commits),
        (changes.add_credits, &mut change.add_credits),
    ] {
        for (i, input) in inputs.into_iter().enumerate() {
            let at = format!("{field}[{i}]");
            out.push(commits::build(st, env, &at, input, change.timestamp).await?);
        }
    }
    let window = recurring::Window {
        starting_at: contract.starting_at,
        ending_before: contract.ending_before,
    };
    let (recurring_commits, recurring_credits, recurring_temporary) = recurring::build_all(
        st,
        env,
        ["add_recurring_commits", "add_recurring_credits"],
        changes.add_recurring_commits,
        changes.add_recurring_credits,
        window,
        change.timestamp,
    )
    .await?;
    temporary.extend(recurring_temporary);
    let (field, inputs) = changes.add_scheduled_charges;
    let room = charges::MAX_CHARGES_PER_CONTRACT.saturating_sub(contract.scheduled_charges.len());
    change.add_scheduled_charges = charges::build_all(st, env, field, inputs, room).await?;
    change.archive_scheduled_charges = changes.archive_scheduled_charges;
    change.update_scheduled_charges = charges::build_updates(
        &contract.scheduled_charges,
        changes.update_scheduled_charges,
        change.timestamp.0,
        st.settings.invoice_grace_ms,
    )?;
    change.add_recurring_commits = recurring_commits;
    change.add_recurring_credits = recurring_credits;
    change.archive_commits = changes.archive_commits;
    change.archive_credits = changes.archive_credits;
    check_archivals(contract, change)?;
    let added: Vec<&str> = change
        .add_commits
        .iter()
        .chain(&change.add_credits)
        .map(|b| b.id.as_str())
        .chain(
            change
                .add_recurring_commits
                .iter()
                .chain(&change.add_recurring_credits)
                .map(|r| r.id.as_str()),
        )
        .collect();
    let mut names = CommitNames {
        temporary: contracts::temporary_map(&temporary, &added)?,
        known: contracts::known_balances(st, env, contract).await?,
    };
    names.known.extend(added.iter().map(|id| id.to_string()));
    contracts::resolve_commit_names(overrides_field, &mut change.add_overrides, &names)?;
    Ok(())
}

/// Refuses archivals naming a commit, credit or scheduled charge the contract does not have,
/// one archived already, or one twice; and more of them than a contract may carry.
fn check_archivals(
    contract: &Contract,
    change: &ContractChange,
) -> std::result::Result<(), Invalid> {
    let archived = |list: &[crate::model::BalanceRecord], id: &str| {
        list.iter()
            .find(|b| b.id == id)
            .map(|b| b.archived_at.is_some())
    };
    check_archive_ids(
        "archive_commits",
        &change.archive_commits,
        "commit or credit",
        |id| archived(&contract.commits, id),
    )?;
    check_archive_ids(
        "archive_credits",
        &change.archive_credits,
        "commit or credit",
        |id| archived(&contract.credits, id),
    )?;
    check_archive_ids(
        "archive_scheduled_charges",
        &change.archive_scheduled_charges,
        "scheduled charge",
        |id| {
            let charges = &contract.scheduled_charges;
            charges
                .iter()
                .find(|c| c.id == id)
                .map(|c| c.archived_at.is_some())
        },
    )?;
    let total = contract.commits.len()
        + contract.credits.len()
        + change.add_commits.len()
        + change.add_credits.len();
    if total > MAX_BALANCES_PER_CONTRACT {
        return Err(Invalid(format!(
            "commits, credits: at most {MAX_BALANCES_PER_CONTRACT} commits and credits are \
             allowed per contract"
        )));
    }
    let recurring = contract.recurring_commits.len()
        + contract.recurring_credits.len()
        + change.add_recurring_commits.len()
        + change.add_recurring_credits.len();
    if recurring > MAX_RECURRING_PER_CONTRACT {
        return Err(Invalid(format!(
            "add_recurring_commits, add_recurring_credits: at most \
             {MAX_RECURRING_PER_CONTRACT} recurring commits and credits are allowed per contract"
        )));
    }
    let charges = contract.scheduled_charges.len() + change.add_scheduled_charges.len();
    if charges > charges::MAX_CHARGES_PER_CONTRACT {
        return Err(Invalid(format!(
            "scheduled_charges: at most {} scheduled charges are allowed per contract",
            charges::MAX_CHARGES_PER_CONTRACT
        )));
    }
    Ok(())
}

/// Refuses an archival list (`field`) naming an id twice, one the contract has no `what` of,
/// or one archived already (`archived(id)`: `None` when the contract has no such one).
fn check_archive_ids(
    field: &str,
    ids: &[String],
    what: &str,
    archived: impl Fn(&str) -> Option<bool>,
) -> std::result::Result<(), Invalid> {
    let mut seen = BTreeSet::new();
    for (i, id) in ids.iter().enumerate() {
        if !seen.insert(id) {
            return Err(Invalid(format!("{field}[{i}].id: {id} is named twice")));
        }
        match archived(id) {
            None => {
                return Err(Invalid(format!(
                    "{field}[{i}].id: the contract has no such {what} {id}"
                )))
            }
            Some(true) => {
                return Err(Invalid(format!(
                    "{field}[{i}].id: {id} is archived already"
                )))
            }
            Some(false) => {}
        }
    }
    Ok(())
}

/// Applies a change's subscription parts to the contract as stored now: the updates were
/// checked against an earlier read, so each is checked again on the subscription it finds.
fn apply_subscriptions(c: &mut Contract, change: &ContractChange) -> Result<()> {
    let total = c.subscriptions.len() + change.add_subscriptions.len();
    if total > subscriptions::MAX_SUBSCRIPTIONS_PER_CONTRACT {
        return Err(Invalid(format!(
            "add_subscriptions: at most {} subscriptions are allowed per contract",
            subscriptions::MAX_SUBSCRIPTIONS_PER_CONTRACT
        ))
        .into());
    }
    for (i, update) in change.update_subscriptions.iter().enumerate() {
        let at = format!("update_subscriptions[{i}]");
        let Some(sub) = c
            .subscriptions
            .iter_mut()
            .find(|s| s.id == update.subscription_id)
        else {
            return Err(Invalid(format!(
                "{at}.subscription_id: the contract has no subscription {}",
                update.subscription_id
            ))
            .into());
        };
        sub.apply(update);
        subscriptions::check_applied(&at, sub)?;
    }
    c.subscriptions
        .extend(change.add_subscriptions.iter().cloned());
    Ok(())
}

/// A v1 amendment as a client gives it.
pub struct Amendment {
    pub customer_id: String,
    pub contract_id: String,
    pub info: AmendmentInfo,
    pub overrides: Vec<OverrideInput>,
    /// Professional services the amendment adds (checked as on create).
    pub professional_services: Vec<ProServiceInput>,
    pub balances: BalanceChanges,
}

/// A new end date: `None` makes the contract open-ended. `allow_before_finalized` false refuses
/// an end before the end of a finalized invoice's period.
pub struct EndDate {
    pub ending_before: Option<Time>,
    pub allow_before_finalized: bool,
}

/// A v2 edit as a client gives it. `Some(None)` clears a term.
pub struct Edit {
    pub customer_id: String,
    pub contract_id: String,
    pub uniqueness_key: Option<String>,
    pub add_overrides: Vec<OverrideInput>,
    pub remove_overrides: Vec<String>,
    pub end_date: Option<EndDate>,
    pub name: Option<Option<String>>,
    pub net_payment_terms_days: Option<Option<Dec>>,
    pub balances: BalanceChanges,
    /// `add_subscriptions` and `update_subscriptions` (`service::subscriptions`).
    pub add_subscriptions: Vec<SubscriptionInput>,
    pub update_subscriptions: Vec<SubscriptionUpdateInput>,
}

/// The contract, which must belong to `customer_id` and not be archived.
async fn changeable(st: &AppState, env: Env, customer_id: &str, id: &str) -> Result<Contract> {
    let contract = contracts::get(st, env, customer_id, id).await?;
    refuse_archived(&contract)?;
    Ok(contract)
}

fn refuse_archived(c: &Contract) -> std::result::Result<(), Invalid> {
    match c.archived_at {
        Some(_) => Err(Invalid(format!(
            "contract {} is archived; it cannot be changed",
            c.id
        ))),
        None => Ok(()),
    }
}

/// A change's shell: its id, now, by Tally.
fn new_change(st: &AppState) -> ContractChange {
    ContractChange {
        id: new_id(),
        timestamp: Time(st.now_ms()),
        created_by: CREATED_BY.into(),
        amendment: None,
        uniqueness_key: None,
        add_overrides: Vec::new(),
        remove_overrides: Vec::new(),
        update_contract_end_date: None,
        update_contract_name: None,
        update_net_payment_terms_days: None,
        add_commits: Vec::new(),
        add_credits: Vec::new(),
        archive_commits: Vec::new(),
        archive_credits: Vec::new(),
        add_recurring_commits: Vec::new(),
        add_recurring_credits: Vec::new(),
        add_scheduled_charges: Vec::new(),
        archive_scheduled_charges: Vec::new(),
        add_subscriptions: Vec::new(),
        update_subscriptions: Vec::new(),
        add_professional_services: Vec::new(),
        update_scheduled_charges: Vec::new(),
    }
}

/// A new change adding these overrides (request field `field`), validated exactly as on create.
async fn adding_overrides(
    st: &AppState,
    env: Env,
    contract: &Contract,
    field: &str,
    inputs: Vec<OverrideInput>,
) -> Result<ContractChange> {
    let mut change = new_change(st);
    let mode = contract.prioritization();
    change.add_overrides = build_overrides(st, env, field, mode, inputs, change.timestamp).await?;
    let card = contract.rate_card_id.as_deref();
    super::credit_types::check_overrides_priced(st, env, field, card, &change.add_overrides)
        .await?;
    Ok(change)
}

/// `contracts/amend`: adds the amendment's overrides to the contract (validated exactly as on
/// create) and records the amendment; returns its id.
pub async fn amend(st: &AppState, env: Env, req: Amendment) -> Result<String> {
    let contract = changeable(st, env, &req.customer_id, &req.contract_id).await?;
    let starting_at = req.info.starting_at;
    require_hour("starting_at", starting_at)?;
    let within = starting_at >= contract.starting_at
        && contract.ending_before.is_none_or(|end| starting_at < end);
    if !within {
        return Err(Invalid(
            "starting_at must be within the contract (not before its starting_at, before its \
             ending_before)"
                .into(),
        )
        .into());
    }
    let mut change = adding_overrides(st, env, &contract, "overrides", req.overrides).await?;
    balance_changes(st, env, &contract, req.balances, &mut change, "overrides").await?;
    let existing = contract.professional_services.len();
    change.add_professional_services =
        pro_services::build_all(st, env, req.professional_services, existing).await?;
    change.amendment = Some(req.info);
    apply(st, env, &contract.id, change).await.map(|c| c.id)
}

/// `contracts/updateEndDate`: sets or clears the contract's end; recorded like an edit.
pub async fn update_end_date(
    st: &AppState,
    env: Env,
    customer_id: &str,
    contract_id: &str,
    end: EndDate,
) -> Result<()> {
    let contract = changeable(st, env, customer_id, contract_id).await?;
    check_end_date(st, env, &contract, &end, "ending_before").await?;
    let mut change = new_change(st);
    change.update_contract_end_date = Some(end.ending_before);
    apply(st, env, contract_id, change).await.map(drop)
}

/// `v2/contracts/edit`: applies the edit whole and returns it as recorded (ids assigned).
pub async fn edit(st: &AppState, env: Env, req: Edit) -> Result<ContractChange> {
    let contract = changeable(st, env, &req.customer_id, &req.contract_id).await?;
    let b = &req.balances;
    let nothing = req.add_overrides.is_empty()
        && b.add_commits.1.is_empty()
        && b.add_credits.1.is_empty()
        && b.archive_commits.is_empty()
        && b.archive_credits.is_empty()
        && b.add_recurring_commits.is_empty()
        && b.add_recurring_credits.is_empty()
        && b.add_scheduled_charges.1.is_empty()
        && b.archive_scheduled_charges.is_empty()
        && b.update_scheduled_charges.is_empty()
        && b.refused.is_empty()
        && req.remove_overrides.is_empty()
        && req.add_subscriptions.is_empty()
        && req.update_subscriptions.is_empty()
        && req.end_date.is_none()
        && req.name.is_none()
        && req.net_payment_terms_days.is_none();
    if nothing {
        return Err(Invalid(
            "the edit changes nothing: give add_overrides, remove_overrides, \
             update_contract_end_date, update_contract_name, update_net_payment_terms_days, \
             add_commits, add_credits, add_recurring_commits, add_recurring_credits, \
             add_scheduled_charges, update_scheduled_charges, add_subscriptions, \
             update_subscriptions, archive_commits, \
             archive_credits or archive_scheduled_charges"
                .into(),
        )
        .into());
    }
    if let Some(key) = &req.uniqueness_key {
        require_text("uniqueness_key", key, 128)?;
    }
    check_removals(&contract, &req.remove_overrides)?;
    if let Some(Some(name)) = &req.name {
        require_text("update_contract_name", name, MAX_NAME_CHARS)?;
    }
    if let Some(Some(days)) = req.net_payment_terms_days {
        if days.0.is_sign_negative() && !days.0.is_zero() {
            return Err(
                Invalid("update_net_payment_terms_days must not be negative".into()).into(),
            );
        }
    }
    if let Some(end) = &req.end_date {
        check_end_date(st, env, &contract, end, "update_contract_end_date").await?;
    }
    let mut change =
        adding_overrides(st, env, &contract, "add_overrides", req.add_overrides).await?;
    balance_changes(
        st,
        env,
        &contract,
        req.balances,
        &mut change,
        "add_overrides",
    )
    .await?;
    let room =
        subscriptions::MAX_SUBSCRIPTIONS_PER_CONTRACT.saturating_sub(contract.subscriptions.len());
    change.add_subscriptions = subscriptions::build_all(
        st,
        env,
        "add_subscriptions",
        req.add_subscriptions,
        room,
        &subscriptions::ContractWindow::of(&contract),
    )
    .await?;
    change.update_subscriptions =
        subscriptions::check_updates(&contract, req.update_subscriptions)?;
    change.uniqueness_key = req.uniqueness_key;
    change.remove_overrides = req.remove_overrides;
    change.update_contract_end_date = req.end_date.map(|e| e.ending_before);
    change.update_contract_name = req.name;
    change.update_net_payment_terms_days = req.net_payment_terms_days;
    apply(st, env, &contract.id, change).await
}

/// `v2/contracts/getEditHistory`: every change made to the contract since its creation
/// (amendments and end-date updates included), oldest first.
pub async fn history(
    st: &AppState,
    env: Env,
    customer_id: &str,
    contract_id: &str,
) -> Result<Vec<ContractChange>> {
    let contract = contracts::get(st, env, customer_id, contract_id).await?;
    Ok(contract.history.changes)
}

/// Refuses removals naming an override the contract does not have, or one twice.
fn check_removals(contract: &Contract, ids: &[String]) -> std::result::Result<(), Invalid> {
    let mut seen = BTreeSet::new();
    for (i, id) in ids.iter().enumerate() {
        if !seen.insert(id) {
            return Err(Invalid(format!(
                "remove_overrides[{i}].id: override {id} is named twice"
            )));
        }
        if !contract.overrides.iter().any(|o| &o.id == id) {
            return Err(Invalid(format!(
                "remove_overrides[{i}].id: the contract has no override {id}"
            )));
        }
    }
    Ok(())
}

/// An end date's rules: hour-aligned, after the contract's start, and, unless allowed, not
/// before the end of a finalized invoice's period (`field` names it in errors).
async fn check_end_date(
    st: &AppState,
    env: Env,
    contract: &Contract,
    end: &EndDate,
    field: &str,
) -> Result<()> {
    super::transitions::check_end_date(st, env, contract, end.ending_before, field).await?;
    let Some(at) = end.ending_before else {
        return Ok(());
    };
    require_hour(field, at)?;
    if at <= contract.starting_at {
        return Err(Invalid(format!("{field} must be after the contract's starting_at")).into());
    }
    if end.allow_before_finalized {
        return Ok(());
    }
    let rows = st
        .stores
        .invoices
        .invoices_for_contract(env, &contract.id)
        .await?;
    let finalized = rows
        .iter()
        .filter(|r| r.status == InvoiceStatus::Finalized)
        .find(|r| at.0 < r.period_end_ms);
    match finalized {
        Some(row) => Err(Invalid(format!(
            "{field} is before the end ({}) of finalized invoice {}; \
             allow_ending_before_finalized_invoice is false",
            tally_core::time::format_rfc3339_ms(row.period_end_ms),
            row.id
        ))
        .into()),
        None => Ok(()),
    }
}

/// Writes `change` into the contract (conditional on the version read, retried on a race) and
/// returns it. The checks that depend on the document as written run here, on every attempt.
async fn apply(
    st: &AppState,
    env: Env,
    contract_id: &str,
    change: ContractChange,
) -> Result<ContractChange> {
    modify_doc(
        st,
        env,
        kind::CONTRACT,
        contract_id,
        "contract",
        |c: &mut Contract| {
            apply_to(c, &change)?;
            Ok::<_, ContractError>(Write::Save { archived: false })
        },
    )
    .await?;
    Ok(change)
}

/// Applies `change` to the contract as read, or refuses it (nothing changed).
fn apply_to(c: &mut Contract, change: &ContractChange) -> Result<()> {
    refuse_archived(c)?;
    if c.history.changes.len() >= MAX_CONTRACT_CHANGES {
        return Err(Invalid(format!(
            "the contract has had {MAX_CONTRACT_CHANGES} changes, the most Tally keeps"
        ))
        .into());
    }
    if let Some(key) = &change.uniqueness_key {
        let used = c.history.changes.iter();
        if used
            .filter_map(|x| x.uniqueness_key.as_ref())
            .any(|k| k == key)
        {
            return Err(ContractError::UniquenessKeyUsed);
        }
    }
    // Removals were checked against an earlier read; another change may have removed them since.
    check_removals(c, &change.remove_overrides)?;
    let kept = c.overrides.len() - change.remove_overrides.len();
    if kept + change.add_overrides.len() > MAX_OVERRIDES {
        let field = match change.amendment {
            Some(_) => "overrides",
            None => "add_overrides",
        };
        return Err(Invalid(format!(
            "{field}: at most {MAX_OVERRIDES} overrides are allowed per contract (it has {})",
            c.overrides.len()
        ))
        .into());
    }
    // Archivals were checked against an earlier read too.
    check_archivals(c, change)?;
    c.keep_initial_terms();
    for (ids, own) in [
        (&change.archive_commits, &mut c.commits),
        (&change.archive_credits, &mut c.credits),
    ] {
        for b in own.iter_mut().filter(|b| ids.contains(&b.id)) {
            b.archived_at = Some(change.timestamp);
        }
    }
    c.commits.extend(change.add_commits.iter().cloned());
    c.credits.extend(change.add_credits.iter().cloned());
    let archived = &change.archive_scheduled_charges;
    for charge in c.scheduled_charges.iter_mut() {
        if archived.contains(&charge.id) {
            charge.archived_at = Some(change.timestamp);
        }
    }
    c.scheduled_charges
        .extend(change.add_scheduled_charges.iter().cloned());
    apply_subscriptions(c, change)?;
    for (i, u) in change.update_scheduled_charges.iter().enumerate() {
        let at = format!("update_scheduled_charges[{i}]");
        let charge = c
            .scheduled_charges
            .iter_mut()
            .find(|x| x.id == u.scheduled_charge_id && x.archived_at.is_none())
            .ok_or_else(|| {
                Invalid(format!(
                    "{at}.scheduled_charge_id: the contract has no unarchived scheduled charge {}",
                    u.scheduled_charge_id
                ))
            })?;
        charges::apply_update(charge, u, &at)?;
    }
    pro_services::check_room(
        c.professional_services.len(),
        &change.add_professional_services,
    )?;
    c.professional_services
        .extend(change.add_professional_services.iter().cloned());
    c.recurring_commits
        .extend(change.add_recurring_commits.iter().cloned());
    c.recurring_credits
        .extend(change.add_recurring_credits.iter().cloned());
    c.overrides
        .retain(|o| !change.remove_overrides.contains(&o.id));
    c.overrides.extend(change.add_overrides.iter().cloned());
    if let Some(end) = change.update_contract_end_date {
        c.ending_before = end;
    }
    if let Some(name) = &change.update_contract_name {
        c.name.clone_from(name);
    }
    if let Some(days) = change.update_net_payment_terms_days {
        c.net_payment_terms_days = days;
    }
    c.history.changes.push(change.clone());
    Ok(())
}
