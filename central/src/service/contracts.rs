//! Contracts: create (validating terms, resolving the rate card and the billing-provider
//! configuration), get, list, archive.
//!
//! Invariants: terms Tally does not rate yet (commits, credits, overrides, ...) are refused
//! rather than silently ignored, so no invoice is ever wrong by omission; a `uniqueness_key` is
//! used once per environment. No contract is created on an archived customer or rate card (400);
//! a customer archived while a contract is being created archives that contract too, at the
//! customer's archive instant, as if it had been created just before. An archived contract
//! bills nothing from its archive time on (core's `ContractSnapshot::effective_end_ms`).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::billing_configs::{self, BillingConfigError, ConfigLookup};
use super::invoices::{self, InvoiceError};
use super::{modify_doc, require_hour, require_text, Invalid, Write};
use crate::model::{
    decode, encode, kind, load, new_id, Contract, ContractRecord, Customer, LoadError, RateCard,
    ScheduleDay, ScheduleFrequency, UsageStatementSchedule, CREATED_BY,
};
use crate::store::{ArchiveFilter, Env, InvoiceStatus, NewDoc, StoreError};
use crate::wire::{Dec, Time};
use crate::AppState;

#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("rate card with alias {0:?} not found")]
    NoRateCardWithAlias(String),
    #[error("This uniqueness key has already been used.")]
    UniquenessKeyUsed,
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Voiding the invoices of a contract being archived failed.
    #[error(transparent)]
    Invoice(#[from] InvoiceError),
    #[error(transparent)]
    BillingConfig(#[from] BillingConfigError),
}

impl From<LoadError> for ContractError {
    fn from(e: LoadError) -> Self {
        match e {
            LoadError::NotFound(what) => ContractError::NotFound(what),
            LoadError::Store(e) => ContractError::Store(e),
        }
    }
}

type Result<T> = std::result::Result<T, ContractError>;

/// Terms accepted by upstream that Tally cannot rate yet: refused when non-empty.
const UNSUPPORTED_TERMS: &[&str] = &[
    "commits",
    "credits",
    "overrides",
    "scheduled_charges",
    "recurring_commits",
    "recurring_credits",
    "subscriptions",
    "discounts",
    "professional_services",
    "reseller_royalties",
    "package_id",
    "package_alias",
    "transition",
    "usage_filter",
    "spend_threshold_configuration",
    "prepaid_balance_threshold_configuration",
    "hierarchy_configuration",
    "spend_trackers",
    "revenue_system_configuration",
];

fn is_empty_value(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// Refuses a request body that sets a term Tally cannot honour, naming it.
pub fn check_supported(body: &Map<String, Value>) -> std::result::Result<(), Invalid> {
    for term in UNSUPPORTED_TERMS {
        if body.get(*term).is_some_and(|v| !is_empty_value(v)) {
            return Err(Invalid(format!(
                "contract {term} is not supported by Tally yet"
            )));
        }
    }
    Ok(())
}

/// A usage statement schedule as a client gives it.
pub struct ScheduleInput {
    pub frequency: ScheduleFrequency,
    pub day: Option<ScheduleDay>,
    pub billing_anchor_date: Option<Time>,
    pub invoice_generation_starting_at: Option<Time>,
}

fn schedule_from(input: Option<ScheduleInput>) -> Result<UsageStatementSchedule> {
    let Some(s) = input else {
        return Ok(UsageStatementSchedule {
            frequency: ScheduleFrequency::Monthly,
            day: ScheduleDay::FirstOfMonth,
            billing_anchor_date: None,
            invoice_generation_starting_at: None,
        });
    };
    let day = s.day.unwrap_or(ScheduleDay::FirstOfMonth);
    match (day, s.billing_anchor_date) {
        (ScheduleDay::CustomDate, None) => {
            return Err(
                Invalid("billing_anchor_date is required when day is CUSTOM_DATE".into()).into(),
            )
        }
        (ScheduleDay::CustomDate, Some(anchor)) => require_hour("billing_anchor_date", anchor)?,
        _ => {}
    }
    Ok(UsageStatementSchedule {
        frequency: s.frequency,
        day,
        billing_anchor_date: s
            .billing_anchor_date
            .filter(|_| day == ScheduleDay::CustomDate),
        invoice_generation_starting_at: s.invoice_generation_starting_at,
    })
}

/// Resolves a rate card alias as of `at`: among cards holding it then, the one it was most
/// recently assigned to.
async fn rate_card_by_alias(st: &AppState, env: Env, alias: &str, at: i64) -> Result<RateCard> {
    // The index names the candidates; documents in creation order decide among them.
    let mut docs = Vec::new();
    for id in st.stores.config.rate_cards_by_alias(env, alias).await? {
        if let Some(doc) = st.stores.config.get_doc(env, kind::RATE_CARD, &id).await? {
            docs.push(doc);
        }
    }
    docs.sort_by_key(|d| d.seq);
    let mut best: Option<(Option<Time>, RateCard)> = None;
    for doc in &docs {
        let card: RateCard = decode(doc)?;
        let holding = card.aliases.iter().find(|a| {
            a.name == alias
                && a.starting_at.is_none_or(|s| s.0 <= at)
                && a.ending_before.is_none_or(|e| at < e.0)
        });
        // Later documents win ties, so `>=` keeps the most recently created among equals.
        if let Some(a) = holding {
            if best.as_ref().is_none_or(|(t, _)| a.assigned_at >= *t) {
                best = Some((a.assigned_at, card));
            }
        }
    }
    best.map(|(_, card)| card)
        .ok_or_else(|| ContractError::NoRateCardWithAlias(alias.to_string()))
}

/// A contract as a client asks for it.
pub struct NewContract {
    pub customer_id: String,
    pub starting_at: Time,
    pub ending_before: Option<Time>,
    pub name: Option<String>,
    pub rate_card_id: Option<String>,
    pub rate_card_alias: Option<String>,
    pub usage_statement_schedule: Option<ScheduleInput>,
    pub uniqueness_key: Option<String>,
    pub custom_fields: BTreeMap<String, String>,
    pub net_payment_terms_days: Option<Dec>,
    pub billing_provider_configuration: Option<ConfigLookup>,
    pub record: ContractRecord,
}

fn check_window(req: &NewContract) -> Result<()> {
    require_hour("starting_at", req.starting_at)?;
    if let Some(end) = req.ending_before {
        require_hour("ending_before", end)?;
        if end <= req.starting_at {
            return Err(Invalid("ending_before must be after starting_at".into()).into());
        }
    }
    if let Some(key) = &req.uniqueness_key {
        require_text("uniqueness_key", key, 128)?;
    }
    Ok(())
}

async fn resolve_rate_card(st: &AppState, env: Env, req: &NewContract) -> Result<Option<String>> {
    match (&req.rate_card_id, &req.rate_card_alias) {
        (Some(_), Some(_)) => {
            Err(Invalid("give rate_card_id or rate_card_alias, not both".into()).into())
        }
        (Some(id), None) => {
            let card: RateCard = load(&st.stores, env, kind::RATE_CARD, id, "rate card").await?;
            active_card(card)
        }
        (None, Some(alias)) => {
            active_card(rate_card_by_alias(st, env, alias, req.starting_at.0).await?)
        }
        (None, None) => Ok(None),
    }
}

fn active_card(card: RateCard) -> Result<Option<String>> {
    match card.archived_at {
        None => Ok(Some(card.id)),
        Some(_) => Err(Invalid(format!(
            "rate card {} is archived; contracts cannot be created on it",
            card.id
        ))
        .into()),
    }
}

/// Validates and stores a contract. Its periods already past their grace are finalized by the
/// job's next pass, not here: backdated usage sent right after the create still counts.
pub async fn create(st: &AppState, env: Env, req: NewContract) -> Result<String> {
    check_window(&req)?;
    let customer: Customer = load(
        &st.stores,
        env,
        kind::CUSTOMER,
        &req.customer_id,
        "customer",
    )
    .await?;
    if customer.archived_at.is_some() {
        return Err(Invalid(format!(
            "customer {} is archived; contracts cannot be created for it",
            customer.id
        ))
        .into());
    }
    let rate_card_id = resolve_rate_card(st, env, &req).await?;
    let billing_provider_configuration = req
        .billing_provider_configuration
        .map(|lookup| billing_configs::resolve_for_contract(&customer, lookup))
        .transpose()?;
    let mut record = req.record;
    record.billing_provider_configuration = billing_provider_configuration;
    let now = st.now_ms();
    let contract = Contract {
        id: new_id(),
        customer_id: customer.id.clone(),
        name: req.name,
        starting_at: req.starting_at,
        ending_before: req.ending_before,
        rate_card_id,
        usage_statement_schedule: schedule_from(req.usage_statement_schedule)?,
        uniqueness_key: req.uniqueness_key,
        custom_fields: req.custom_fields,
        net_payment_terms_days: req.net_payment_terms_days,
        created_at: Time(now),
        created_by: CREATED_BY.into(),
        archived_at: None,
        record,
    };
    let doc = NewDoc {
        kind: kind::CONTRACT,
        id: &contract.id,
        parent_id: Some(&customer.id),
        unique_key: contract.uniqueness_key.as_deref(),
        created_ms: now,
        body: encode(&contract)?,
    };
    st.stores
        .config
        .insert_docs(env, &[doc])
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => ContractError::UniquenessKeyUsed,
            other => other.into(),
        })?;
    follow_customer(st, env, &contract).await?;
    Ok(contract.id)
}

/// After a contract's insert: if its customer was archived meanwhile (its archive listed its
/// contracts before this one existed), archives the contract at the customer's archive instant;
/// if its billing-provider configuration was archived meanwhile, archives the contract's copy.
async fn follow_customer(st: &AppState, env: Env, contract: &Contract) -> Result<()> {
    let customer: Customer = load(
        &st.stores,
        env,
        kind::CUSTOMER,
        &contract.customer_id,
        "customer",
    )
    .await?;
    if let Some(at) = customer.archived_at {
        modify_doc(
            st,
            env,
            kind::CONTRACT,
            &contract.id,
            "contract",
            |c: &mut Contract| archive_at(c, at),
        )
        .await?;
    }
    Ok(billing_configs::archive_on_contracts(st, env, &customer).await?)
}

/// Archives a contract at `at` unless it already is (its first archive time stays).
fn archive_at(c: &mut Contract, at: Time) -> Result<Write> {
    if c.archived_at.is_some() {
        return Ok(Write::Unchanged);
    }
    c.archived_at = Some(at);
    Ok(Write::Save { archived: true })
}

/// Archives a contract now (idempotent): it bills nothing from now on (its open period is rated
/// up to the archive time and finalizes after its grace, like any other). `void_invoices` also
/// voids every invoice it has, the open draft included.
pub async fn archive(
    st: &AppState,
    env: Env,
    customer_id: &str,
    id: &str,
    void_invoices: bool,
) -> Result<()> {
    get(st, env, customer_id, id).await?;
    let now = Time(st.now_ms());
    let contract: Contract = modify_doc(st, env, kind::CONTRACT, id, "contract", |c| {
        archive_at(c, now)
    })
    .await?;
    if !void_invoices {
        return Ok(());
    }
    for row in invoices::contract_invoices(st, env, &contract).await? {
        if row.status != InvoiceStatus::Void {
            invoices::void(st, env, &row.id).await?;
        }
    }
    Ok(())
}

/// The contract, which must belong to `customer_id`.
pub async fn get(st: &AppState, env: Env, customer_id: &str, id: &str) -> Result<Contract> {
    let contract: Contract = load(&st.stores, env, kind::CONTRACT, id, "contract").await?;
    if contract.customer_id != customer_id {
        return Err(ContractError::NotFound("contract"));
    }
    Ok(contract)
}

/// What contracts/list filters on.
pub struct ContractFilter {
    pub customer_id: String,
    pub covering_date: Option<Time>,
    pub starting_at: Option<Time>,
    pub include_archived: bool,
}

/// A customer's contracts matching `filter`, by start then creation (a customer's contracts are
/// few; the caller pages the result).
pub async fn list(st: &AppState, env: Env, filter: ContractFilter) -> Result<Vec<Contract>> {
    if filter.covering_date.is_some() && filter.starting_at.is_some() {
        return Err(Invalid("covering_date and starting_at cannot be combined".into()).into());
    }
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
    let docs = st
        .stores
        .config
        .list_docs(
            env,
            kind::CONTRACT,
            Some(&filter.customer_id),
            archived,
            None,
        )
        .await?;
    let mut contracts = docs
        .iter()
        .map(decode::<Contract>)
        .collect::<std::result::Result<Vec<_>, _>>()?;
    contracts.retain(|c| {
        let covers = filter
            .covering_date
            .is_none_or(|t| c.starting_at <= t && c.ending_before.is_none_or(|e| t < e));
        covers && filter.starting_at.is_none_or(|t| c.starting_at >= t)
    });
    contracts.sort_by_key(|c| (c.starting_at, c.created_at));
    Ok(contracts)
}
