//! Customers' billing-provider configurations (`set/get/archiveCustomerBillingProviderConfigurations`,
//! and `customer_billing_provider_configurations` on customer create), revenue-system
//! configurations (stored at create, read by `getCustomerRevenueSystemConfigurations`), and the
//! legacy per-provider billing configuration (`billing_config` on create and
//! `/v1/customers/{id}/billing-config/{type}`).
//!
//! Tally stores these and reads them back; only Stripe configurations are acted on (`crate::stripe`
//! pushes finalized invoices of contracts billing through one). They live inside
//! the customer's document, so every change is one versioned read-modify-write
//! (`service::modify_doc`) and concurrent writers never lose one another's configuration.
//!
//! Invariants:
//! - Every configuration has a delivery method and its id: a client gives either (upstream
//!   requires one); Tally has no delivery-method registry, so each (provider, method) pair is one
//!   delivery method with a fixed id (`model::delivery_method_id`), and any other id is refused.
//! - A customer holds at most [`MAX_CONFIGURATIONS`] configurations of each kind, archived ones
//!   included (archiving keeps a configuration readable, so it still takes room).
//! - A set naming several customers validates every item and every customer before writing any;
//!   if a write still fails (a concurrent set took the last room), the configurations already
//!   added by this call are removed again, so the call changes nothing.
//! - Archiving a configuration archives it on the contracts that bill through it.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::{modify_contracts_of, modify_customer, require_text, Invalid, Write};
use crate::model::{
    delivery_method_id, kind, load, new_id, BillingProvider, BillingProviderConfig, Contract,
    Customer, DeliveryMethod, LegacyBillingConfig, LoadError, RevenueDeliveryMethod,
    RevenueSystemConfig, RevenueSystemProvider, TaxProvider,
};
use crate::store::{ArchiveFilter, Env, StoreError};
use crate::wire::Time;
use crate::AppState;

/// Most billing-provider configurations (and, separately, revenue-system configurations) one
/// customer may hold, archived ones included.
pub const MAX_CONFIGURATIONS: usize = 50;
/// Most items one `setCustomerBillingProviderConfigurations` call may carry.
pub const MAX_SET_ITEMS: usize = 100;
const MAX_ID_CHARS: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum BillingConfigError {
    /// A customer named in a request body (at this field) that does not exist: upstream
    /// documents a 400 for these endpoints.
    #[error("{0}: customer not found")]
    UnknownCustomer(String),
    /// A customer or configuration named in the path that does not exist.
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<LoadError> for BillingConfigError {
    fn from(e: LoadError) -> Self {
        match e {
            LoadError::NotFound(what) => BillingConfigError::NotFound(what),
            LoadError::Store(e) => BillingConfigError::Store(e),
        }
    }
}

type Result<T> = std::result::Result<T, BillingConfigError>;

/// A billing-provider configuration as a client gives it.
pub struct BillingProviderInput {
    pub billing_provider: BillingProvider,
    pub configuration: Map<String, Value>,
    pub delivery_method: Option<DeliveryMethod>,
    pub delivery_method_id: Option<String>,
    pub tax_provider: Option<TaxProvider>,
}

/// A revenue-system configuration as a client gives it.
pub struct RevenueSystemInput {
    pub provider: RevenueSystemProvider,
    pub configuration: Map<String, Value>,
    pub delivery_method: Option<RevenueDeliveryMethod>,
    pub delivery_method_id: Option<String>,
}

/// Which of a customer's billing-provider configurations a contract bills through: by id, or
/// by provider and delivery method.
pub struct ConfigLookup {
    pub billing_provider_configuration_id: Option<String>,
    pub billing_provider: Option<BillingProvider>,
    pub delivery_method: Option<DeliveryMethod>,
}

/// The delivery method a configuration names, from its method or its id (either is required;
/// both must agree). `methods` are the methods `provider` may use in `system`.
fn resolve_delivery<M: Copy + PartialEq>(
    field: &str,
    system: &str,
    provider: &str,
    methods: &[(M, &str)],
    method: Option<M>,
    id: Option<&str>,
) -> std::result::Result<(M, String), Invalid> {
    let id_of = |name: &str| delivery_method_id(system, provider, name);
    match (method, id) {
        (None, None) => Err(Invalid(format!(
            "{field}: give delivery_method or delivery_method_id"
        ))),
        (Some(m), None) => {
            let name = methods
                .iter()
                .find(|(x, _)| *x == m)
                .map_or("", |(_, n)| *n);
            Ok((m, id_of(name)))
        }
        (given, Some(id)) => {
            let found = methods.iter().find(|(_, name)| id_of(name) == id);
            match found {
                Some((m, _)) if given.is_none_or(|g| g == *m) => Ok((*m, id.to_string())),
                Some(_) => Err(Invalid(format!(
                    "{field}: delivery_method_id {id:?} is not the id of that delivery_method"
                ))),
                None => Err(Invalid(format!(
                    "{field}: delivery_method_id {id:?} is not a delivery method of {provider}; \
                     give delivery_method instead (Tally reports each method's id)"
                ))),
            }
        }
    }
}

/// Validates a billing-provider configuration and gives it its id. `contracts_only`: the
/// customer-create spelling, which accepts only the providers contracts bill through.
pub fn new_billing_provider_config(
    field: &str,
    input: BillingProviderInput,
    contracts_only: bool,
    now: Time,
) -> std::result::Result<BillingProviderConfig, Invalid> {
    let provider = input.billing_provider;
    if contracts_only && !provider.for_contracts() {
        return Err(Invalid(format!(
            "{field}.billing_provider: {} is not one of aws_marketplace, azure_marketplace, \
             gcp_marketplace, stripe, netsuite",
            provider.as_str()
        )));
    }
    let methods = DeliveryMethod::ALL.map(|m| (m, m.as_str()));
    let (delivery_method, delivery_method_id) = resolve_delivery(
        field,
        "billing",
        provider.as_str(),
        &methods,
        input.delivery_method,
        input.delivery_method_id.as_deref(),
    )?;
    Ok(BillingProviderConfig {
        id: new_id(),
        billing_provider: provider,
        configuration: input.configuration,
        delivery_method,
        delivery_method_id,
        tax_provider: input.tax_provider,
        created_at: now,
        archived_at: None,
    })
}

/// Validates a revenue-system configuration and gives it its id.
pub fn new_revenue_system_config(
    field: &str,
    input: RevenueSystemInput,
    now: Time,
) -> std::result::Result<RevenueSystemConfig, Invalid> {
    let methods = [(
        RevenueDeliveryMethod::DirectToBillingProvider,
        RevenueDeliveryMethod::DirectToBillingProvider.as_str(),
    )];
    let (delivery_method, delivery_method_id) = resolve_delivery(
        field,
        "revenue",
        input.provider.as_str(),
        &methods,
        input.delivery_method,
        input.delivery_method_id.as_deref(),
    )?;
    Ok(RevenueSystemConfig {
        id: new_id(),
        provider: input.provider,
        configuration: input.configuration,
        delivery_method,
        delivery_method_id,
        created_at: now,
        archived_at: None,
    })
}

/// Refuses more than [`MAX_CONFIGURATIONS`] configurations of one kind on a customer.
pub fn check_room(field: &str, count: usize) -> std::result::Result<(), Invalid> {
    match count <= MAX_CONFIGURATIONS {
        true => Ok(()),
        false => Err(Invalid(format!(
            "{field}: a customer may hold at most {MAX_CONFIGURATIONS} configurations \
             (archived ones included)"
        ))),
    }
}

/// Refuses a legacy billing configuration without its provider's customer id.
pub fn check_legacy(field: &str, config: &LegacyBillingConfig) -> std::result::Result<(), Invalid> {
    require_text(
        &format!("{field}.billing_provider_customer_id"),
        &config.billing_provider_customer_id,
        MAX_ID_CHARS * 2,
    )
}

/// The customer named by a request body's `field` (a 400 when it does not exist).
async fn body_customer(st: &AppState, env: Env, field: &str, id: &str) -> Result<Customer> {
    match load(&st.stores, env, kind::CUSTOMER, id, "customer").await {
        Err(LoadError::NotFound(_)) => Err(BillingConfigError::UnknownCustomer(field.to_string())),
        other => Ok(other?),
    }
}

/// Adds billing-provider configurations to one or several customers, all or nothing; returns
/// `(customer id, configuration)` in request order.
pub async fn set(
    st: &AppState,
    env: Env,
    items: Vec<(String, BillingProviderInput)>,
) -> Result<Vec<(String, BillingProviderConfig)>> {
    if items.is_empty() || items.len() > MAX_SET_ITEMS {
        return Err(Invalid(format!(
            "data must hold 1 to {MAX_SET_ITEMS} configurations"
        ))
        .into());
    }
    let now = Time(st.now_ms());
    let mut made = Vec::with_capacity(items.len());
    for (i, (customer_id, input)) in items.into_iter().enumerate() {
        let field = format!("data[{i}]");
        require_text(&format!("{field}.customer_id"), &customer_id, MAX_ID_CHARS)?;
        made.push((
            customer_id,
            new_billing_provider_config(&field, input, false, now)?,
        ));
    }
    let customers: BTreeSet<&str> = made.iter().map(|(c, _)| c.as_str()).collect();
    for id in &customers {
        let at = made.iter().position(|(c, _)| c == id).unwrap_or(0);
        let customer = body_customer(st, env, &format!("data[{at}].customer_id"), id).await?;
        let adding = made.iter().filter(|(c, _)| c == id).count();
        check_room(
            "data",
            customer.billing_provider_configurations.len() + adding,
        )?;
    }
    let mut written: Vec<&str> = Vec::new();
    for id in &customers {
        let mine: Vec<BillingProviderConfig> = made
            .iter()
            .filter(|(c, _)| c == id)
            .map(|(_, cfg)| cfg.clone())
            .collect();
        let added = modify_customer(st, env, id, |c: &mut Customer| {
            check_room("data", c.billing_provider_configurations.len() + mine.len())?;
            c.billing_provider_configurations
                .extend(mine.iter().cloned());
            Ok::<_, BillingConfigError>(saved_if(true, c, now))
        })
        .await;
        if let Err(e) = added {
            let ids: BTreeSet<&str> = made.iter().map(|(_, cfg)| cfg.id.as_str()).collect();
            undo_set(st, env, &written, &ids).await;
            return Err(e);
        }
        written.push(id);
    }
    Ok(made)
}

/// Removes the configurations `ids` from `customers` again (best effort: a failure is logged).
async fn undo_set(st: &AppState, env: Env, customers: &[&str], ids: &BTreeSet<&str>) {
    for id in customers {
        let undone = modify_customer(st, env, id, |c: &mut Customer| {
            c.billing_provider_configurations
                .retain(|cfg| !ids.contains(cfg.id.as_str()));
            Ok::<_, BillingConfigError>(Write::Save {
                archived: c.archived_at.is_some(),
            })
        })
        .await;
        if let Err(e) = undone {
            tracing::error!(customer = id, error = %e,
                "could not remove the configurations of a failed set");
        }
    }
}

/// A customer's billing-provider configurations, in creation order (archived ones on request).
pub async fn list(
    st: &AppState,
    env: Env,
    customer_id: &str,
    include_archived: bool,
) -> Result<Vec<BillingProviderConfig>> {
    let customer = body_customer(st, env, "customer_id", customer_id).await?;
    let mut configs = customer.billing_provider_configurations;
    configs.retain(|c| include_archived || c.archived_at.is_none());
    Ok(configs)
}

/// Archives configurations of one customer now (idempotent; an id the customer does not hold
/// refuses the whole call), and on the contracts that bill through them.
pub async fn archive(st: &AppState, env: Env, customer_id: &str, ids: &[String]) -> Result<()> {
    if ids.is_empty() {
        return Err(Invalid(
            "customer_billing_provider_configuration_ids must not be empty".into(),
        )
        .into());
    }
    let customer = body_customer(st, env, "customer_id", customer_id).await?;
    let held = |id: &str| {
        customer
            .billing_provider_configurations
            .iter()
            .any(|c| c.id == id)
    };
    if let Some(unknown) = ids.iter().find(|id| !held(id)) {
        return Err(Invalid(format!(
            "customer_billing_provider_configuration_ids: {unknown:?} is not a configuration \
             of customer {customer_id}"
        ))
        .into());
    }
    let now = Time(st.now_ms());
    let customer = modify_customer(st, env, customer_id, |c: &mut Customer| {
        let mut changed = false;
        for cfg in &mut c.billing_provider_configurations {
            if ids.contains(&cfg.id) && cfg.archived_at.is_none() {
                cfg.archived_at = Some(now);
                changed = true;
            }
        }
        Ok::<_, BillingConfigError>(saved_if(changed, c, now))
    })
    .await?;
    archive_on_contracts(st, env, &customer).await
}

/// Brings the copies of the customer's configurations kept on its contracts in step with their
/// archival (a contract created while one was being archived included).
pub async fn archive_on_contracts(st: &AppState, env: Env, customer: &Customer) -> Result<()> {
    modify_contracts_of(
        st,
        env,
        &customer.id,
        ArchiveFilter::All,
        |c: &mut Contract| {
            let Some(archived) = archived_copy(customer, c) else {
                return Ok::<_, BillingConfigError>(Write::Unchanged);
            };
            if let Some(cfg) = c.record.billing_provider_configuration.as_mut() {
                cfg.archived_at = Some(archived);
            }
            Ok(Write::Save {
                archived: c.archived_at.is_some(),
            })
        },
    )
    .await
}

/// When the contract's copy of a configuration is still active but the customer's is archived:
/// the archive time.
fn archived_copy(customer: &Customer, contract: &Contract) -> Option<Time> {
    let copy = contract.record.billing_provider_configuration.as_ref()?;
    if copy.archived_at.is_some() {
        return None;
    }
    customer
        .billing_provider_configurations
        .iter()
        .find(|c| c.id == copy.id)?
        .archived_at
}

/// The active configuration of `customer` a contract asks for (400 when none or several match).
pub fn resolve_for_contract(
    customer: &Customer,
    lookup: ConfigLookup,
) -> std::result::Result<BillingProviderConfig, Invalid> {
    const FIELD: &str = "billing_provider_configuration";
    let active = customer
        .billing_provider_configurations
        .iter()
        .filter(|c| c.archived_at.is_none());
    let by = (
        lookup.billing_provider_configuration_id,
        lookup.billing_provider,
        lookup.delivery_method,
    );
    let matches: Vec<&BillingProviderConfig> = match by {
        (Some(id), None, None) => active.filter(|c| c.id == id).collect(),
        (None, Some(provider), Some(method)) => {
            if !provider.for_contracts() {
                return Err(Invalid(format!(
                    "{FIELD}.billing_provider: {} cannot bill a contract",
                    provider.as_str()
                )));
            }
            active
                .filter(|c| c.billing_provider == provider && c.delivery_method == method)
                .collect()
        }
        (Some(_), _, _) => {
            return Err(Invalid(format!(
                "{FIELD}: give billing_provider_configuration_id or billing_provider with \
                 delivery_method, not both"
            )))
        }
        _ => {
            return Err(Invalid(format!(
                "{FIELD}: give billing_provider_configuration_id, or both billing_provider and \
                 delivery_method"
            )))
        }
    };
    match matches.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(Invalid(format!(
            "{FIELD}: the customer has no active billing provider configuration matching it"
        ))),
        _ => Err(Invalid(format!(
            "{FIELD}: several of the customer's active configurations match; give \
             billing_provider_configuration_id"
        ))),
    }
}

/// A customer's revenue-system configurations, optionally of one provider (archived ones on
/// request).
pub async fn list_revenue_systems(
    st: &AppState,
    env: Env,
    customer_id: &str,
    provider: Option<RevenueSystemProvider>,
    include_archived: bool,
) -> Result<Vec<RevenueSystemConfig>> {
    let customer = body_customer(st, env, "customer_id", customer_id).await?;
    let mut configs = customer.revenue_system_configurations;
    configs.retain(|c| {
        (include_archived || c.archived_at.is_none()) && provider.is_none_or(|p| p == c.provider)
    });
    Ok(configs)
}

/// The customer's legacy billing configuration for `provider` (404 when it has none).
pub async fn legacy(
    st: &AppState,
    env: Env,
    customer_id: &str,
    provider: BillingProvider,
) -> Result<LegacyBillingConfig> {
    let customer: Customer = load(&st.stores, env, kind::CUSTOMER, customer_id, "customer").await?;
    customer
        .billing_config
        .get(provider.as_str())
        .cloned()
        .ok_or(BillingConfigError::NotFound("billing configuration"))
}

/// Sets (replaces) the customer's legacy billing configuration for `provider`, or removes it
/// (`None`; removing one that is not there is a no-op).
pub async fn put_legacy(
    st: &AppState,
    env: Env,
    customer_id: &str,
    provider: BillingProvider,
    config: Option<LegacyBillingConfig>,
) -> Result<()> {
    if let Some(c) = &config {
        check_legacy("body", c)?;
    }
    let key = provider.as_str();
    let now = Time(st.now_ms());
    modify_customer(st, env, customer_id, |c: &mut Customer| {
        let changed = match &config {
            Some(cfg) => {
                c.billing_config.insert(key.to_string(), cfg.clone());
                true
            }
            None => c.billing_config.remove(key).is_some(),
        };
        Ok::<_, BillingConfigError>(saved_if(changed, c, now))
    })
    .await?;
    Ok(())
}

/// A customer change to store (stamped `updated_at`), or none.
fn saved_if(changed: bool, c: &mut Customer, now: Time) -> Write {
    if !changed {
        return Write::Unchanged;
    }
    c.updated_at = now;
    Write::Save {
        archived: c.archived_at.is_some(),
    }
}
