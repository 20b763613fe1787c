//! Contracts: create (validating terms, resolving the rate card and the billing-provider
//! configuration), get, list, archive.
//!
//! Overrides are checked here (store lookups, limits) and by core (`tally_core::overrides::build`)
//! and stored in the contract document with ids; core prices them. Commits and credits are
//! checked by `service::commits` and stored in the document with ids too.
//!
//! Invariants: terms Tally does not rate yet (scheduled charges, commit-specific overrides, ...)
//! are refused rather than silently ignored, so no invoice is ever wrong by omission; a `uniqueness_key` is
//! used once per environment. No contract is created on an archived customer or rate card (400);
//! a customer archived while a contract is being created archives that contract too, at the
//! customer's archive instant, as if it had been created just before. An archived contract
//! bills nothing from its archive time on (core's `ContractSnapshot::effective_end_ms`).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use super::billing_configs::{self, BillingConfigError, ConfigLookup};
use super::charges::{self, ChargeInput};
use super::commits::{self, BalanceInput};
use super::invoices::{self, InvoiceError};
use super::pro_services::{self, ProServiceInput};
use super::rate_cards::{self, check_rate_limits, RateCardError, RateSelector, ScheduleWindow};
use super::recurring::{self, RecurringInput};
use super::subscriptions::{self, SubscriptionInput};
use super::transitions::{self, TransitionInput};
use super::{modify_doc, require_hour, require_text, Invalid, Write};
use crate::model::{
    decode, encode, kind, load, new_id, BalanceRateType, Contract, ContractRecord, CreditTypeRef,
    Customer, LoadError, MultiplierPrioritization, OverrideRecord, OverrideSpecifier, OverrideTier,
    OverrideType, OverwriteRate, Product, ProductRef, ProductType, RateCard, RateRecord, RateType,
    ScheduleDay, ScheduleFrequency, UsageStatementSchedule, WireTier, CREATED_BY,
};
use crate::store::{ArchiveFilter, Env, InvoiceStatus, NewDoc, StoreError};
use crate::wire::{Dec, Time};
use crate::AppState;
use tally_core::overrides::{self, Subject};
use tally_core::period::Period;
use tally_core::pricing::ContractTerms;
use tally_core::rating::Price;

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
    /// Reading the contract's rate card failed.
    #[error(transparent)]
    RateCard(#[from] RateCardError),
    /// Core could not resolve an effective rate (an amount overflows).
    #[error("rating failed: {0}")]
    Rating(String),
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
    "discounts",
    "reseller_royalties",
    "usage_filter",
    "spend_threshold_configuration",
    "prepaid_balance_threshold_configuration",
    "hierarchy_configuration",
    "spend_trackers",
    "revenue_system_configuration",
];

pub(super) fn is_empty_value(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// Override fields Tally cannot honour yet: the subscription and custom parts of an overwrite
/// rate need those rate types, and `exclude` specifiers are a gated upstream feature. Refused
/// when set.
const UNSUPPORTED_SPECIFIER_FIELDS: &[&str] = &["exclude"];
const UNSUPPORTED_OVERWRITE_FIELDS: &[&str] =
    &["quantity", "is_prorated", "custom_rate", "minimum_config"];

/// Refuses a request body that sets a term Tally cannot honour, naming it.
pub fn check_supported(body: &Map<String, Value>) -> std::result::Result<(), Invalid> {
    for term in UNSUPPORTED_TERMS {
        if body.get(*term).is_some_and(|v| !is_empty_value(v)) {
            return Err(Invalid(format!(
                "contract {term} is not supported by Tally yet"
            )));
        }
    }
    check_overrides_supported("overrides", body.get("overrides"))?;
    recurring::check_items(body, "recurring_commits", false)?;
    recurring::check_items(body, "recurring_credits", true)?;
    commits::check_supported(body)
}

/// Refuses an overrides list (the raw `field` of a request body) that sets an override field
/// Tally cannot honour, naming it (`field[i].x`).
pub fn check_overrides_supported(
    field: &str,
    overrides: Option<&Value>,
) -> std::result::Result<(), Invalid> {
    let overrides = overrides.and_then(Value::as_array);
    for (i, o) in overrides.into_iter().flatten().enumerate() {
        check_override_supported(&format!("{field}[{i}]"), o)?;
    }
    Ok(())
}

fn refuse_set(
    at: &str,
    value: &Value,
    fields: &[&str],
    why: &str,
) -> std::result::Result<(), Invalid> {
    for field in fields {
        if value.get(*field).is_some_and(|v| !is_empty_value(v)) {
            return Err(Invalid(format!("{at}.{field}: {why}")));
        }
    }
    Ok(())
}

fn check_override_supported(at: &str, o: &Value) -> std::result::Result<(), Invalid> {
    const EXCLUDE: &str = "exclude specifiers are not supported by Tally yet";
    let specifiers = o.get("override_specifiers").and_then(Value::as_array);
    for (j, spec) in specifiers.into_iter().flatten().enumerate() {
        let at = format!("{at}.override_specifiers[{j}]");
        refuse_set(&at, spec, UNSUPPORTED_SPECIFIER_FIELDS, EXCLUDE)?;
    }
    if let Some(rate) = o.get("overwrite_rate") {
        let at = format!("{at}.overwrite_rate");
        refuse_set(
            &at,
            rate,
            UNSUPPORTED_OVERWRITE_FIELDS,
            "not supported by Tally yet (only FLAT and TIERED overwrite rates are)",
        )?;
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
    pub overrides: Vec<OverrideInput>,
    /// Contract-level commits and credits (checked by `service::commits`).
    pub commits: Vec<BalanceInput>,
    pub credits: Vec<BalanceInput>,
    /// Recurring commits and credits (checked by `service::recurring`).
    pub recurring_commits: Vec<RecurringInput>,
    pub recurring_credits: Vec<RecurringInput>,
    /// Scheduled charges (checked by `service::charges`).
    pub scheduled_charges: Vec<ChargeInput>,
    /// Professional services (checked by `service::pro_services`).
    pub professional_services: Vec<ProServiceInput>,
    /// Subscriptions (checked by `service::subscriptions`).
    pub subscriptions: Vec<SubscriptionInput>,
    /// The contract it renews (checked by `service::transitions`).
    pub transition: Option<TransitionInput>,
}

/// An `overwrite_rate` as a client gives it.
pub struct OverwriteInput {
    pub rate_type: RateType,
    pub price: Option<Dec>,
    pub tiers: Option<Vec<WireTier>>,
    pub credit_type_id: Option<String>,
}

/// An override as a client gives it (`OverrideInput`; what Tally refuses is checked by
/// [`check_supported`]).
pub struct OverrideInput {
    pub starting_at: Time,
    pub ending_before: Option<Time>,
    pub override_type: Option<OverrideType>,
    pub product_id: Option<String>,
    pub applicable_product_tags: Option<Vec<String>>,
    pub override_specifiers: Option<Vec<OverrideSpecifier>>,
    pub multiplier: Option<Dec>,
    pub overwrite_rate: Option<OverwriteInput>,
    pub tiers: Option<Vec<OverrideTier>>,
    pub priority: Option<Dec>,
    pub entitled: Option<bool>,
    pub is_commit_specific: bool,
    pub target: Option<BalanceRateType>,
}

/// Checks a contract's overrides and makes their records (ids assigned, products named): the
/// count, hour-aligned windows, known products, overwrite prices within the rate limits, then
/// core's rules (`tally_core::overrides::build`). Errors name `{field}[i].x` (`field` is the
/// request's: `overrides` on create and amend, `add_overrides` on edit).
pub async fn build_overrides(
    st: &AppState,
    env: Env,
    field: &str,
    mode: MultiplierPrioritization,
    inputs: Vec<OverrideInput>,
    now: Time,
) -> Result<Vec<OverrideRecord>> {
    if inputs.len() > overrides::MAX_OVERRIDES {
        return Err(Invalid(format!(
            "{field}: at most {} overrides are allowed per contract",
            overrides::MAX_OVERRIDES
        ))
        .into());
    }
    let mut records = Vec::with_capacity(inputs.len());
    for (i, input) in inputs.into_iter().enumerate() {
        let at = format!("{field}[{i}]");
        let record = override_record(st, env, &at, input, now).await?;
        overrides::build(record.spec(), mode.core()).map_err(|e| Invalid(format!("{at}.{e}")))?;
        records.push(record);
    }
    Ok(records)
}

/// The product an override names, and whether it is COMPOSITE.
async fn named_product(
    st: &AppState,
    env: Env,
    field: &str,
    id: &str,
) -> Result<(ProductRef, bool)> {
    match st.stores.config.get_doc(env, kind::PRODUCT, id).await? {
        Some(doc) => {
            let product = decode::<Product>(&doc)?.with_current(st.now_ms());
            let composite = product.product_type == ProductType::Composite;
            let named = ProductRef {
                id: product.id,
                name: product.current.name,
            };
            Ok((named, composite))
        }
        None => Err(Invalid(format!("{field}: product {id} not found")).into()),
    }
}

/// OVERWRITE and TIERED overrides price units; a COMPOSITE product has none (its PERCENTAGE
/// rate takes a fraction of spend), so naming one is refused. MULTIPLIER overrides scale the
/// percentage.
fn check_composite_target(field: &str, kind: Option<OverrideType>) -> Result<()> {
    match kind {
        Some(k @ (OverrideType::Overwrite | OverrideType::Tiered)) => Err(Invalid(format!(
            "{field}: {} overrides do not apply to COMPOSITE products (a percentage has no \
             units); use a MULTIPLIER override",
            k.as_str()
        ))
        .into()),
        _ => Ok(()),
    }
}

/// One override's record, after the checks that need the store or the API's limits.
async fn override_record(
    st: &AppState,
    env: Env,
    at: &str,
    o: OverrideInput,
    now: Time,
) -> Result<OverrideRecord> {
    require_hour(&format!("{at}.starting_at"), o.starting_at)?;
    if let Some(end) = o.ending_before {
        require_hour(&format!("{at}.ending_before"), end)?;
    }
    let product = match &o.product_id {
        Some(id) => {
            let field = format!("{at}.product_id");
            let (named, composite) = named_product(st, env, &field, id).await?;
            if composite {
                check_composite_target(&field, o.override_type)?;
            }
            Some(named)
        }
        None => None,
    };
    for (j, spec) in o.override_specifiers.iter().flatten().enumerate() {
        if let Some(id) = &spec.product_id {
            let field = format!("{at}.override_specifiers[{j}].product_id");
            if named_product(st, env, &field, id).await?.1 {
                check_composite_target(&field, o.override_type)?;
            }
        }
    }
    let overwrite_rate = match o.overwrite_rate {
        Some(r) => {
            let field = format!("{at}.overwrite_rate.credit_type_id");
            let credit_type = super::credit_types::resolve(st, env, r.credit_type_id.as_deref())
                .await
                .map_err(|e| e.at(&field))?;
            let tier_prices: Vec<_> = r.tiers.iter().flatten().map(|t| t.price.0).collect();
            check_rate_limits(r.price.map(|p| p.0), &tier_prices)
                .map_err(|e| Invalid(format!("{at}.overwrite_rate.{}", e.0)))?;
            Some(OverwriteRate {
                rate_type: r.rate_type,
                price: r.price,
                tiers: r.tiers,
                credit_type,
            })
        }
        None => None,
    };
    Ok(OverrideRecord {
        id: new_id(),
        created_at: now,
        starting_at: o.starting_at,
        ending_before: o.ending_before,
        override_type: o.override_type,
        product,
        applicable_product_tags: o.applicable_product_tags,
        override_specifiers: o.override_specifiers,
        multiplier: o.multiplier,
        overwrite_rate,
        override_tiers: o.tiers,
        priority: o.priority,
        entitled: o.entitled,
        is_commit_specific: o.is_commit_specific,
        target: o.target,
    })
}

/// How a contract's commit-specific overrides name the commits and credits whose draws they
/// price (`commit_ids`, `recurring_commit_ids`, `any_commit_or_credit_ids`): by id, or by the
/// `temporary_id` of one created in the same request. Stored overrides hold ids only.
pub struct CommitNames {
    /// `temporary_id` → id, for the commits and credits of the request.
    pub temporary: BTreeMap<String, String>,
    /// The commits and credits the contract's usage may draw on (its own, the request's, its
    /// customer's that apply to it).
    pub known: BTreeSet<String>,
}

/// The `temporary_id` of each input, in order, over the lists given.
pub fn temporary_ids(lists: &[&Vec<BalanceInput>]) -> Vec<Option<String>> {
    lists
        .iter()
        .flat_map(|l| l.iter())
        .map(|b| b.temporary_id.clone())
        .collect()
}

/// `temporary_id` → id of the records built from those inputs (same order); a temporary id
/// given twice is refused.
pub fn temporary_map(
    temporary: &[Option<String>],
    ids: &[&str],
) -> std::result::Result<BTreeMap<String, String>, Invalid> {
    let mut out = BTreeMap::new();
    for (temp, id) in temporary.iter().zip(ids) {
        let Some(temp) = temp else { continue };
        if out.insert(temp.clone(), id.to_string()).is_some() {
            return Err(Invalid(format!(
                "temporary_id: {temp} is given to more than one commit or credit"
            )));
        }
    }
    Ok(out)
}

/// The ids of the commits and credits `contract`'s usage may draw on.
pub async fn known_balances(
    st: &AppState,
    env: Env,
    contract: &Contract,
) -> Result<BTreeSet<String>> {
    let balances = commits::applicable_balances(st, env, contract).await?;
    let recurring = contract.recurring_ids().map(str::to_string);
    Ok(balances
        .into_iter()
        .map(|b| b.id)
        .chain(recurring)
        .collect())
}

/// Replaces temporary ids by ids in the overrides' specifiers and refuses a name that is not a
/// commit or credit the contract's usage may draw on (`field[i].override_specifiers[j].x`).
pub fn resolve_commit_names(
    field: &str,
    overrides: &mut [OverrideRecord],
    names: &CommitNames,
) -> std::result::Result<(), Invalid> {
    for (i, o) in overrides.iter_mut().enumerate() {
        for (j, spec) in o.override_specifiers.iter_mut().flatten().enumerate() {
            let at = format!("{field}[{i}].override_specifiers[{j}]");
            for (name, list) in [
                ("commit_ids", &mut spec.commit_ids),
                ("recurring_commit_ids", &mut spec.recurring_commit_ids),
                (
                    "any_commit_or_credit_ids",
                    &mut spec.any_commit_or_credit_ids,
                ),
            ] {
                for id in list.iter_mut().flatten() {
                    if let Some(real) = names.temporary.get(id.as_str()) {
                        *id = real.clone();
                    }
                    if !names.known.contains(id.as_str()) {
                        return Err(Invalid(format!(
                            "{at}.{name}: {id} is not a commit or credit this contract's usage \
                             can draw on"
                        )));
                    }
                }
            }
        }
    }
    Ok(())
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
pub async fn create(st: &AppState, env: Env, mut req: NewContract) -> Result<String> {
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
    let transition = match req.transition.take() {
        Some(t) => Some(transitions::check(st, env, t, &customer.id, req.starting_at).await?),
        None => None,
    };
    let mut contract = build(st, env, req, Some(&customer)).await?;
    if let Some(t) = transition {
        t.apply(&mut contract)?;
    }
    let now = contract.created_at.0;
    let doc = NewDoc {
        kind: kind::CONTRACT,
        id: &contract.id,
        parent_id: Some(&customer.id),
        unique_key: contract.uniqueness_key.as_deref(),
        created_ms: now,
        body: encode(&contract)?,
    };
    if !transitions::insert(st, env, &contract, doc).await? {
        return Err(ContractError::UniquenessKeyUsed);
    }
    follow_customer(st, env, &contract).await?;
    Ok(contract.id)
}

/// Checks terms exactly as [`create`] would, without a customer and without storing anything
/// (a package's terms, instantiated at some start; a billing-provider lookup is not resolved).
pub async fn validate(st: &AppState, env: Env, req: NewContract) -> Result<()> {
    check_window(&req)?;
    build(st, env, req, None).await.map(drop)
}

/// The contract `req` describes, every term validated, ids assigned (for `customer`: its
/// billing-provider configuration resolved; `None` when only validating).
async fn build(
    st: &AppState,
    env: Env,
    req: NewContract,
    customer: Option<&Customer>,
) -> Result<Contract> {
    let rate_card_id = resolve_rate_card(st, env, &req).await?;
    let billing_provider_configuration = match (customer, req.billing_provider_configuration) {
        (Some(customer), Some(lookup)) => {
            Some(billing_configs::resolve_for_contract(customer, lookup)?)
        }
        _ => None,
    };
    let mut record = req.record;
    record.billing_provider_configuration = billing_provider_configuration;
    let now = st.now_ms();
    let mode = record
        .multiplier_override_prioritization
        .unwrap_or(MultiplierPrioritization::LowestMultiplier);
    let overrides = build_overrides(st, env, "overrides", mode, req.overrides, Time(now)).await?;
    let card = rate_card_id.as_deref();
    super::credit_types::check_overrides_priced(st, env, "overrides", card, &overrides).await?;
    let mut temporary: Vec<Option<String>> = temporary_ids(&[&req.commits, &req.credits]);
    let (commits, credits) =
        commits::build_contract_balances(st, env, req.commits, req.credits, Time(now)).await?;
    let window = recurring::Window {
        starting_at: req.starting_at,
        ending_before: req.ending_before,
    };
    let (recurring_commits, recurring_credits, recurring_temporary) = recurring::build_all(
        st,
        env,
        ["recurring_commits", "recurring_credits"],
        req.recurring_commits,
        req.recurring_credits,
        window,
        Time(now),
    )
    .await?;
    temporary.extend(recurring_temporary);
    let scheduled_charges = charges::build_all(
        st,
        env,
        "scheduled_charges",
        req.scheduled_charges,
        charges::MAX_CHARGES_PER_CONTRACT,
    )
    .await?;
    let professional_services =
        pro_services::build_all(st, env, req.professional_services, 0).await?;
    let usage_statement_schedule = schedule_from(req.usage_statement_schedule)?;
    let window = subscriptions::ContractWindow {
        starting_at: req.starting_at,
        ending_before: req.ending_before,
        rate_card_id: rate_card_id.as_deref(),
        anchor: Time(usage_statement_schedule.core().anchor_ms(req.starting_at.0)),
    };
    let subscriptions = subscriptions::build_all(
        st,
        env,
        "subscriptions",
        req.subscriptions,
        subscriptions::MAX_SUBSCRIPTIONS_PER_CONTRACT,
        &window,
    )
    .await?;
    let mut contract = Contract {
        id: new_id(),
        customer_id: customer.map(|c| c.id.clone()).unwrap_or_default(),
        name: req.name,
        starting_at: req.starting_at,
        ending_before: req.ending_before,
        rate_card_id,
        usage_statement_schedule,
        uniqueness_key: req.uniqueness_key,
        custom_fields: req.custom_fields,
        net_payment_terms_days: req.net_payment_terms_days,
        created_at: Time(now),
        created_by: CREATED_BY.into(),
        archived_at: None,
        record,
        overrides,
        commits,
        credits,
        recurring_commits,
        recurring_credits,
        scheduled_charges,
        professional_services,
        pro_service_invoices: Vec::new(),
        subscriptions,
        history: Default::default(),
        transition: None,
    };
    let built: Vec<&str> = contract
        .commits
        .iter()
        .chain(&contract.credits)
        .map(|b| b.id.as_str())
        .chain(contract.recurring_ids())
        .collect();
    let names = CommitNames {
        temporary: temporary_map(&temporary, &built)?,
        known: known_balances(st, env, &contract).await?,
    };
    resolve_commit_names("overrides", &mut contract.overrides, &names)?;
    Ok(contract)
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

/// One entry of a contract's rate schedule at an instant: a rate-card rate in effect then, the
/// piece of its schedule segment in which the contract's overrides are constant, and the price
/// an override makes of it (`None`: the list price applies).
pub struct ContractRate {
    pub rate: RateRecord,
    pub product: Product,
    pub span: Period,
    pub override_price: Option<(Price, CreditTypeRef)>,
}

/// `getContractRateSchedule`: the contract's effective rates at `at` (default now), rates that
/// `selectors` select (any of them; none: all), in the card's order. Only entitled rates (after
/// overrides) are listed. Overrides are resolved for a line without presentation groups (a
/// specifier naming presentation values applies to invoice lines only), with the product's
/// tags in effect at `at`. A contract without a rate card has none.
pub async fn rate_schedule(
    st: &AppState,
    env: Env,
    customer_id: &str,
    contract_id: &str,
    at: Option<Time>,
    selectors: &[RateSelector],
) -> Result<(Option<String>, Vec<ContractRate>)> {
    let contract = get(st, env, customer_id, contract_id).await?;
    let at = at.unwrap_or(Time(st.now_ms()));
    let Some(card_id) = contract.rate_card_id.clone() else {
        return Ok((None, Vec::new()));
    };
    let terms = contract.terms()?;
    let named = contract.overwrite_credit_types();
    let found = rate_cards::schedule(st, env, &card_id, ScheduleWindow::At(at), selectors).await?;
    let mut out = Vec::with_capacity(found.segments.len());
    for &(i, span) in &found.segments {
        let record = &found.records[i];
        let Some(product) = found.products.get(&record.product_id) else {
            continue;
        };
        let Some(entry) = effective_at(&terms, &named, record, product, span, at)? else {
            continue;
        };
        out.push(entry);
    }
    Ok((Some(card_id), out))
}

/// The contract's effective rate of one schedule segment at `at`, if entitled then. A rate type
/// core does not price is shown with its list rate and entitlement.
fn effective_at(
    terms: &ContractTerms,
    credit_types: &[CreditTypeRef],
    record: &RateRecord,
    product: &Product,
    span: Period,
    at: Time,
) -> Result<Option<ContractRate>> {
    let entry = |span, override_price| ContractRate {
        rate: record.clone(),
        product: product.clone(),
        span,
        override_price,
    };
    let Some(rate) = record.core() else {
        return Ok(record.entitled.then(|| entry(span, None)));
    };
    // An overwrite's credit type is the rate's or one an override names.
    let named = |id: &tally_core::money::CreditTypeId| {
        let mut known = std::iter::once(&record.credit_type).chain(credit_types);
        known
            .find(|c| c.id == id.0)
            .cloned()
            .unwrap_or_else(CreditTypeRef::usd)
    };
    let tags = product.state_at(at.0).tags;
    let subject = Subject {
        product_id: &record.product_id,
        product_tags: &tags,
        pricing_group_values: &record.pricing_group_values,
        billing_frequency: rate.billing_frequency,
    };
    let found = overrides::at_instant(terms, &rate, &subject, span, at.0)
        .map_err(|e| ContractError::Rating(e.to_string()))?;
    let Some((piece, Some(effective))) = found else {
        return Ok(None);
    };
    let price = match effective.overridden {
        true => Some((effective.price, named(&effective.credit_type))),
        false => None,
    };
    Ok(Some(entry(piece, price)))
}
