//! Customers: create, get, list (with `customer_ids` / `ingest_alias` filters), archive, rename,
//! replace ingest aliases.
//!
//! Invariants: ingest aliases are unique per environment (archived customers keep theirs); a
//! taken alias is a conflict and nothing changes. Usage is keyed by the reference as sent, so
//! moving an alias moves its usage with it. Archiving a customer archives its contracts at the
//! same instant.

use std::collections::{BTreeMap, BTreeSet};

use super::billing_configs::{self, BillingProviderInput, RevenueSystemInput};
use super::{
    lost_race_is_false, modify_contracts_of, modify_customer, require_text, retry_conflicts,
    Invalid, SeqPage, Write,
};
use crate::model::{
    decode, encode, kind, load, new_id, BillingProvider, BillingProviderConfig, Contract, Customer,
    LegacyBillingConfig, LoadError, RevenueSystemConfig,
};
use crate::store::{ArchiveFilter, Env, NewDoc, PageReq, StoreError};
use crate::wire::Time;
use crate::AppState;

/// Longest customer name kept (longer names are truncated, as upstream does).
const MAX_NAME_CHARS: usize = 160;
pub const MAX_ALIAS_CHARS: usize = 256;
/// Most ingest aliases one customer may have.
pub const MAX_ALIASES: usize = 100;
/// Most ids one `customer_ids` filter may name.
pub const MAX_FILTER_IDS: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum CustomerError {
    #[error("customer not found")]
    NotFound,
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// An alias (or id) already taken.
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for CustomerError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => CustomerError::Conflict(m),
            other => CustomerError::Store(other),
        }
    }
}

impl From<LoadError> for CustomerError {
    fn from(e: LoadError) -> Self {
        match e {
            LoadError::NotFound(_) => CustomerError::NotFound,
            LoadError::Store(e) => e.into(),
        }
    }
}

type Result<T> = std::result::Result<T, CustomerError>;

fn clean_aliases(aliases: Vec<String>) -> Result<Vec<String>> {
    if aliases.len() > MAX_ALIASES {
        return Err(Invalid(format!("at most {MAX_ALIASES} ingest aliases are allowed")).into());
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for a in aliases {
        require_text("ingest_aliases[]", &a, MAX_ALIAS_CHARS)?;
        if seen.insert(a.clone()) {
            out.push(a);
        }
    }
    Ok(out)
}

fn truncate_name(name: &str) -> Result<String> {
    require_text("name", name, usize::MAX)?;
    Ok(name.chars().take(MAX_NAME_CHARS).collect())
}

/// A customer as a client asks for it.
pub struct NewCustomer {
    pub name: String,
    pub ingest_aliases: Vec<String>,
    /// The deprecated `external_id`: one more alias.
    pub external_id: Option<String>,
    pub custom_fields: BTreeMap<String, String>,
    /// The legacy `billing_config`: one provider type's configuration.
    pub billing_config: Option<(BillingProvider, LegacyBillingConfig)>,
    pub billing_provider_configurations: Vec<BillingProviderInput>,
    pub revenue_system_configurations: Vec<RevenueSystemInput>,
}

/// Validates the configurations of a new customer and gives each its id.
fn new_configs(
    req_billing: Vec<BillingProviderInput>,
    req_revenue: Vec<RevenueSystemInput>,
    now: Time,
) -> Result<(Vec<BillingProviderConfig>, Vec<RevenueSystemConfig>)> {
    const BILLING: &str = "customer_billing_provider_configurations";
    const REVENUE: &str = "customer_revenue_system_configurations";
    billing_configs::check_room(BILLING, req_billing.len())?;
    billing_configs::check_room(REVENUE, req_revenue.len())?;
    let billing = req_billing
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            billing_configs::new_billing_provider_config(&format!("{BILLING}[{i}]"), c, true, now)
        })
        .collect::<std::result::Result<_, _>>()?;
    let revenue = req_revenue
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            billing_configs::new_revenue_system_config(&format!("{REVENUE}[{i}]"), c, now)
        })
        .collect::<std::result::Result<_, _>>()?;
    Ok((billing, revenue))
}

pub async fn create(st: &AppState, env: Env, req: NewCustomer) -> Result<Customer> {
    let name = truncate_name(&req.name)?;
    let mut aliases = req.ingest_aliases;
    if let Some(ext) = req.external_id {
        aliases.insert(0, ext);
    }
    let aliases = clean_aliases(aliases)?;
    let now = Time(st.now_ms());
    let (billing, revenue) = new_configs(
        req.billing_provider_configurations,
        req.revenue_system_configurations,
        now,
    )?;
    let mut billing_config = BTreeMap::new();
    if let Some((provider, config)) = req.billing_config {
        billing_configs::check_legacy("billing_config", &config)?;
        billing_config.insert(provider.as_str().to_string(), config);
    }
    let customer = Customer {
        id: new_id(),
        name,
        ingest_aliases: aliases,
        custom_fields: req.custom_fields,
        created_at: now,
        updated_at: now,
        archived_at: None,
        billing_provider_configurations: billing,
        revenue_system_configurations: revenue,
        billing_config,
    };
    let doc = NewDoc {
        kind: kind::CUSTOMER,
        id: &customer.id,
        parent_id: None,
        unique_key: None,
        created_ms: now.0,
        body: encode(&customer)?,
    };
    st.stores
        .config
        .insert_customer(env, doc, &customer.ingest_aliases)
        .await?;
    Ok(customer)
}

pub async fn get(st: &AppState, env: Env, id: &str) -> Result<Customer> {
    Ok(load(&st.stores, env, kind::CUSTOMER, id, "customer").await?)
}

/// What `GET /v1/customers` filters on.
pub struct CustomerFilter {
    pub ids: Vec<String>,
    pub ingest_alias: Option<String>,
    pub only_archived: bool,
}

/// One keyset page of customers matching `filter` (`limit + 1` items when more follow). Filters
/// are indexed lookups: an alias through the alias table, ids by primary key; only an unfiltered
/// list walks the documents, one page at a time.
pub async fn list(
    st: &AppState,
    env: Env,
    filter: CustomerFilter,
    page: PageReq,
) -> Result<SeqPage<Customer>> {
    if filter.ids.len() > MAX_FILTER_IDS {
        return Err(Invalid(format!("customer_ids accepts at most {MAX_FILTER_IDS} ids")).into());
    }
    let archived = match filter.only_archived {
        true => ArchiveFilter::Archived,
        false => ArchiveFilter::Active,
    };
    let candidates: Option<Vec<String>> = match &filter.ingest_alias {
        Some(alias) => {
            let owner = st.stores.config.customer_by_alias(env, alias).await?;
            let owner = owner.filter(|o| filter.ids.is_empty() || filter.ids.contains(o));
            Some(owner.into_iter().collect())
        }
        None if !filter.ids.is_empty() => Some(filter.ids.clone()),
        None => None,
    };
    let Some(candidates) = candidates else {
        let fetch = PageReq {
            after: page.after,
            limit: page.limit + 1,
        };
        let docs = st
            .stores
            .config
            .list_docs(env, kind::CUSTOMER, None, archived, Some(fetch))
            .await?;
        return docs.iter().map(|d| Ok((d.seq, decode(d)?))).collect();
    };
    let mut items = Vec::new();
    for id in BTreeSet::from_iter(candidates) {
        let Some(doc) = st.stores.config.get_doc(env, kind::CUSTOMER, &id).await? else {
            continue;
        };
        if doc.seq > page.after && doc.archived == filter.only_archived {
            items.push((doc.seq, decode::<Customer>(&doc)?));
        }
    }
    items.sort_by_key(|(seq, _)| *seq);
    items.truncate(page.limit as usize + 1);
    Ok(items)
}

/// Archives a customer and its contracts at one instant (idempotent); aliases stay reserved.
/// The customer is marked first, then its contracts: a contract inserted concurrently is either
/// listed here or sees the archived customer when its create re-reads it
/// (`service::contracts`), so none is left active. Archiving again re-applies the first archive
/// instant to any contract an interrupted archive left behind.
pub async fn archive(st: &AppState, env: Env, id: &str) -> Result<()> {
    let now = Time(st.now_ms());
    let customer = modify_customer(st, env, id, |c: &mut Customer| {
        if c.archived_at.is_some() {
            return Ok::<_, CustomerError>(Write::Unchanged);
        }
        c.archived_at = Some(now);
        c.updated_at = now;
        Ok(Write::Save { archived: true })
    })
    .await?;
    let at = customer.archived_at.unwrap_or(now);
    modify_contracts_of(st, env, id, ArchiveFilter::Active, |c: &mut Contract| {
        if c.archived_at.is_some() {
            return Ok::<_, CustomerError>(Write::Unchanged);
        }
        c.archived_at = Some(at);
        Ok(Write::Save { archived: true })
    })
    .await
}

/// Replaces a customer's ingest aliases; a taken one is a conflict and nothing changes. Retried
/// on a concurrent change of the customer or a deadlock with a concurrent alias swap.
pub async fn set_ingest_aliases(
    st: &AppState,
    env: Env,
    id: &str,
    aliases: Vec<String>,
) -> Result<()> {
    let aliases = &clean_aliases(aliases)?;
    retry_conflicts(move || async move {
        let doc = st.stores.config.get_doc(env, kind::CUSTOMER, id).await?;
        let doc = doc.ok_or(CustomerError::NotFound)?;
        let mut customer: Customer = decode(&doc)?;
        customer.ingest_aliases = aliases.clone();
        customer.updated_at = Time(st.now_ms());
        let written = st
            .stores
            .config
            .set_customer_aliases(env, id, aliases, &encode(&customer)?, doc.version)
            .await;
        Ok(lost_race_is_false(written)?.then_some(()))
    })
    .await
}

pub async fn set_name(st: &AppState, env: Env, id: &str, name: &str) -> Result<Customer> {
    let name = truncate_name(name)?;
    let now = Time(st.now_ms());
    modify_customer(st, env, id, |c: &mut Customer| {
        c.name = name.clone();
        c.updated_at = now;
        Ok::<_, CustomerError>(Write::Save {
            archived: c.archived_at.is_some(),
        })
    })
    .await
}
