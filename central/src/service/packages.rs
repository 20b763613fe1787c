//! Packages (`/v1/packages/*`, `metronome-api.md` §2.10): contract templates whose times are
//! relative to the contract's start. A package is kept as the terms it was given; a contract
//! created from it (`package_id` / `package_alias` on `contracts/create`) gets those terms with
//! every offset resolved against its `starting_at` ([`instantiate`]) and then goes through the
//! one contract create path, so it bills exactly as the same contract written out.
//!
//! Invariants:
//! - A stored package's terms passed every contract check when it was created (instantiated at
//!   the hour it was created, [`contracts::validate`]); packages never change after, except
//!   being archived.
//! - Offsets (`RelativeDate`: DAYS, WEEKS, MONTHS, YEARS, whole and non-negative) resolve on
//!   the calendar (`tally_core::time::add_relative`); a segment's, override's or recurring
//!   term's `duration` counts from its own start, the package's from the contract's.
//! - A subscription's `duration` counts from its `starting_at_offset`, or from the contract's
//!   start without one.
//! - Terms Tally does not implement (thresholds, spend trackers) are refused
//!   with a 400 naming them, never dropped.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tally_core::time::{add_relative, format_rfc3339_ms, RelativeUnit};

use super::{require_text, Invalid, Write};
use crate::model::{decode, encode, kind, load, new_id, Contract, CREATED_BY};
use crate::service::contracts::{is_empty_value, ContractError};
use crate::store::{ArchiveFilter, Env, NewDoc};
use crate::wire::Time;
use crate::AppState;

/// Template terms a package may hold (`PackageInput` less its identity fields).
const TEMPLATE_TERMS: &[&str] = &[
    "contract_name",
    "net_payment_terms_days",
    "rate_card_id",
    "rate_card_alias",
    "duration",
    "commits",
    "credits",
    "recurring_commits",
    "recurring_credits",
    "multiplier_override_prioritization",
    "overrides",
    "scheduled_charges",
    "scheduled_charges_on_usage_invoices",
    "subscriptions",
    "usage_statement_schedule",
    "billing_provider",
    "delivery_method",
];

/// Package terms Tally cannot apply yet: refused when set.
const UNSUPPORTED: &[&str] = &[
    "spend_threshold_configuration",
    "prepaid_balance_threshold_configuration",
    "spend_trackers",
];

/// Fields a `contracts/create` from a package may give besides the package's terms.
const CONTRACT_OWN_FIELDS: &[&str] = &[
    "customer_id",
    "starting_at",
    "package_id",
    "package_alias",
    "uniqueness_key",
    "custom_fields",
    "name",
    "salesforce_opportunity_id",
    "netsuite_sales_order_id",
    "total_contract_value",
    "billing_provider_configuration",
    "transition",
];

/// `PackageAlias`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PackageAlias {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starting_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ending_before: Option<Time>,
}

/// A package as stored: its identity and its template terms as given.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PackageRecord {
    pub id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<PackageAlias>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uniqueness_key: Option<String>,
    pub terms: Map<String, Value>,
    pub created_at: Time,
    pub created_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived_at: Option<Time>,
}

impl PackageRecord {
    /// The `Package` response shape: its terms at the top level, the lists it may leave out
    /// as empty ones.
    pub fn api_json(&self) -> Value {
        let mut v = Map::new();
        for list in ["commits", "credits", "overrides", "scheduled_charges"] {
            v.insert(list.into(), Value::Array(Vec::new()));
        }
        v.insert(
            "usage_statement_schedule".into(),
            serde_json::json!({ "frequency": "MONTHLY", "day": "FIRST_OF_MONTH" }),
        );
        v.extend(self.terms.clone());
        v.insert("id".into(), Value::String(self.id.clone()));
        v.insert("name".into(), Value::String(self.name.clone()));
        v.insert("aliases".into(), serde_json::json!(self.aliases));
        v.insert("created_at".into(), serde_json::json!(self.created_at));
        v.insert("created_by".into(), Value::String(self.created_by.clone()));
        if let Some(key) = &self.uniqueness_key {
            v.insert("uniqueness_key".into(), Value::String(key.clone()));
        }
        if let Some(at) = self.archived_at {
            v.insert("archived_at".into(), serde_json::json!(at));
        }
        Value::Object(v)
    }
}

/// A `packages/create` request: the template terms (the body's other fields) and identity.
pub struct NewPackage {
    pub name: String,
    pub aliases: Vec<PackageAlias>,
    pub uniqueness_key: Option<String>,
    pub body: Map<String, Value>,
}

/// The template terms of a `packages/create` body, refusing what Tally cannot apply.
pub fn template_terms(body: &Map<String, Value>) -> Result<Map<String, Value>, Invalid> {
    for field in UNSUPPORTED {
        if body.get(*field).is_some_and(|v| !is_empty_value(v)) {
            return Err(Invalid(format!(
                "{field}: this package term is not supported by Tally yet"
            )));
        }
    }
    Ok(body
        .iter()
        .filter(|(k, v)| TEMPLATE_TERMS.contains(&k.as_str()) && !v.is_null())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect())
}

// ---------------------------------------------------------------------------------------------
// Offsets

/// `RelativeDate` at `at` (a path for errors) added to `from_ms`.
fn offset(at: &str, v: &Value, from_ms: i64) -> Result<i64, Invalid> {
    let bad = || {
        Invalid(format!(
            "{at}: give {{ \"value\": a whole number >= 0, \"unit\": DAYS, WEEKS, MONTHS or YEARS }}"
        ))
    };
    let value = v.get("value").and_then(Value::as_i64).ok_or_else(bad)?;
    let unit = match v
        .get("unit")
        .and_then(Value::as_str)
        .map(str::to_ascii_uppercase)
    {
        Some(u) if u == "DAYS" => RelativeUnit::Days,
        Some(u) if u == "WEEKS" => RelativeUnit::Weeks,
        Some(u) if u == "MONTHS" => RelativeUnit::Months,
        Some(u) if u == "YEARS" => RelativeUnit::Years,
        _ => return Err(bad()),
    };
    add_relative(from_ms, value, unit).ok_or_else(bad)
}

fn time(ms: i64) -> Value {
    Value::String(format_rfc3339_ms(ms))
}

/// Rewrites one term object: `starting_at_offset` (from the contract's start) and its
/// `duration` (from that start) into `starting_at` / `ending_before`; `date_offset` into
/// `timestamp`; then the same inside every nested object and list.
fn resolve(at: &str, v: &mut Value, start_ms: i64) -> Result<(), Invalid> {
    match v {
        Value::Object(map) => {
            if let Some(o) = map.remove("starting_at_offset") {
                let from = offset(&format!("{at}.starting_at_offset"), &o, start_ms)?;
                map.insert("starting_at".into(), time(from));
                if let Some(d) = map.remove("duration") {
                    let to = offset(&format!("{at}.duration"), &d, from)?;
                    map.insert("ending_before".into(), time(to));
                }
            }
            if let Some(o) = map.remove("date_offset") {
                let t = offset(&format!("{at}.date_offset"), &o, start_ms)?;
                map.insert("timestamp".into(), time(t));
            }
            for (k, inner) in map.iter_mut() {
                resolve(&format!("{at}.{k}"), inner, start_ms)?;
            }
        }
        Value::Array(items) => {
            for (i, inner) in items.iter_mut().enumerate() {
                resolve(&format!("{at}[{i}]"), inner, start_ms)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// A package's terms as `contracts/create` fields for a contract starting at `start_ms`.
pub fn instantiate(
    terms: &Map<String, Value>,
    start_ms: i64,
) -> Result<Map<String, Value>, Invalid> {
    let mut out = Map::new();
    for (key, value) in terms {
        let mut value = value.clone();
        match key.as_str() {
            "contract_name" => {
                out.insert("name".into(), value);
            }
            "duration" => {
                out.insert(
                    "ending_before".into(),
                    time(offset("duration", &value, start_ms)?),
                );
            }
            "usage_statement_schedule" => {
                if let Some(map) = value.as_object_mut() {
                    if let Some(o) = map.remove("invoice_generation_starting_at_offset") {
                        let at = "usage_statement_schedule.invoice_generation_starting_at_offset";
                        let t = offset(at, &o, start_ms)?;
                        map.insert("invoice_generation_starting_at".into(), time(t));
                    }
                }
                out.insert(key.clone(), value);
            }
            "billing_provider" | "delivery_method" => {
                let lookup = out
                    .entry("billing_provider_configuration")
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Some(map) = lookup.as_object_mut() {
                    map.insert(key.clone(), value);
                }
            }
            "subscriptions" => {
                // A subscription starts with the contract unless it says otherwise; its
                // duration counts from its start either way.
                for sub in value.as_array_mut().into_iter().flatten() {
                    if let Some(map) = sub.as_object_mut() {
                        if map.contains_key("duration") && !map.contains_key("starting_at_offset") {
                            let zero = serde_json::json!({ "value": 0, "unit": "DAYS" });
                            map.insert("starting_at_offset".into(), zero);
                        }
                    }
                }
                resolve(key, &mut value, start_ms)?;
                out.insert(key.clone(), value);
            }
            _ => {
                resolve(key, &mut value, start_ms)?;
                out.insert(key.clone(), value);
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Storage

/// Stores a package whose terms were validated; its id. A used `uniqueness_key` is a 409.
pub async fn store(
    st: &AppState,
    env: Env,
    p: NewPackage,
    terms: Map<String, Value>,
) -> Result<String, ContractError> {
    require_text("name", &p.name, 256)?;
    for (i, a) in p.aliases.iter().enumerate() {
        require_text(&format!("aliases[{i}].name"), &a.name, 256)?;
    }
    if let Some(key) = &p.uniqueness_key {
        require_text("uniqueness_key", key, 128)?;
    }
    let now = st.now_ms();
    let record = PackageRecord {
        id: new_id(),
        name: p.name,
        aliases: p.aliases,
        uniqueness_key: p.uniqueness_key,
        terms,
        created_at: Time(now),
        created_by: CREATED_BY.into(),
        archived_at: None,
    };
    let doc = NewDoc {
        kind: kind::PACKAGE,
        id: &record.id,
        parent_id: None,
        unique_key: record.uniqueness_key.as_deref(),
        created_ms: now,
        body: encode(&record)?,
    };
    if !super::insert_unique(st, env, doc).await? {
        return Err(ContractError::UniquenessKeyUsed);
    }
    Ok(record.id)
}

pub async fn get(st: &AppState, env: Env, id: &str) -> Result<PackageRecord, ContractError> {
    Ok(load(&st.stores, env, kind::PACKAGE, id, "package").await?)
}

/// Packages in creation order (`filter` on their archive state).
pub async fn list(
    st: &AppState,
    env: Env,
    filter: ArchiveFilter,
) -> Result<Vec<PackageRecord>, ContractError> {
    let docs = st
        .stores
        .config
        .list_docs(env, kind::PACKAGE, None, filter, None)
        .await?;
    Ok(docs.iter().map(decode).collect::<Result<_, _>>()?)
}

pub async fn archive(st: &AppState, env: Env, id: &str) -> Result<(), ContractError> {
    let now = Time(st.now_ms());
    super::modify_doc(
        st,
        env,
        kind::PACKAGE,
        id,
        "package",
        |p: &mut PackageRecord| {
            if p.archived_at.is_some() {
                return Ok::<_, ContractError>(Write::Unchanged);
            }
            p.archived_at = Some(now);
            Ok(Write::Save { archived: true })
        },
    )
    .await
    .map(drop)
}

/// The unarchived package `alias` names at `at`: among those holding it then, the most
/// recently created.
async fn by_alias(
    st: &AppState,
    env: Env,
    alias: &str,
    at: i64,
) -> Result<PackageRecord, ContractError> {
    let mut found = list(st, env, ArchiveFilter::Active).await?;
    found.retain(|p| {
        p.aliases.iter().any(|a| {
            a.name == alias
                && a.starting_at.is_none_or(|s| s.0 <= at)
                && a.ending_before.is_none_or(|e| at < e.0)
        })
    });
    found
        .pop()
        .ok_or_else(|| Invalid(format!("package_alias: no package has the alias {alias:?}")).into())
}

/// A `contracts/create` body naming a package, as the body of the same contract written out:
/// the package's terms resolved at the body's `starting_at`, the body's own fields on top,
/// `package_id` set. A body with terms of its own beside the package is refused.
pub async fn contract_body(
    st: &AppState,
    env: Env,
    mut body: Map<String, Value>,
) -> Result<Map<String, Value>, ContractError> {
    if let Some((field, _)) = body
        .iter()
        .find(|(k, v)| !CONTRACT_OWN_FIELDS.contains(&k.as_str()) && !is_empty_value(v))
    {
        return Err(Invalid(format!(
            "{field}: a contract created from a package takes its terms from the package; \
             create it without package_id to give your own"
        ))
        .into());
    }
    let start = body
        .get("starting_at")
        .cloned()
        .map(serde_json::from_value::<Time>)
        .transpose()
        .map_err(|e| Invalid(format!("starting_at: {e}")))?
        .ok_or_else(|| Invalid("starting_at: required".into()))?;
    let id = body.remove("package_id").filter(|v| !v.is_null());
    let alias = body.remove("package_alias").filter(|v| !v.is_null());
    let package = match (id, alias) {
        (Some(_), Some(_)) => {
            return Err(Invalid("give package_id or package_alias, not both".into()).into())
        }
        (Some(Value::String(id)), None) => match get(st, env, &id).await {
            Err(ContractError::NotFound(_)) => {
                return Err(Invalid(format!("package_id: package {id} not found")).into())
            }
            other => other?,
        },
        (None, Some(Value::String(alias))) => by_alias(st, env, &alias, start.0).await?,
        _ => return Err(Invalid("package_id / package_alias: must be a string".into()).into()),
    };
    if package.archived_at.is_some() {
        return Err(Invalid(format!(
            "package {} is archived; contracts cannot be created from it",
            package.id
        ))
        .into());
    }
    let mut out = instantiate(&package.terms, start.0)?;
    out.extend(body);
    out.insert("package_id".into(), Value::String(package.id));
    Ok(out)
}

/// `listContractsOnPackage`: the contracts created from the package (archived ones with
/// `include_archived`), those covering `covering_date` or starting at or after `starting_at`.
pub async fn contracts_on(
    st: &AppState,
    env: Env,
    package_id: &str,
    covering_date: Option<Time>,
    starting_at: Option<Time>,
    include_archived: bool,
) -> Result<Vec<Contract>, ContractError> {
    get(st, env, package_id).await?;
    let filter = match include_archived {
        true => ArchiveFilter::All,
        false => ArchiveFilter::Active,
    };
    let docs = st
        .stores
        .config
        .list_docs(env, kind::CONTRACT, None, filter, None)
        .await?;
    let mut out = Vec::new();
    for doc in &docs {
        let c: Contract = decode(doc)?;
        let covers = |t: Time| c.starting_at <= t && c.ending_before.is_none_or(|e| t < e);
        if c.record.package_id.as_deref() == Some(package_id)
            && covering_date.is_none_or(covers)
            && starting_at.is_none_or(|t| c.starting_at >= t)
        {
            out.push(c);
        }
    }
    Ok(out)
}
