//! Alerts (Metronome's threshold notifications): `alerts/create|archive` and
//! `customer-alerts/list|get|reset`, and the evaluation of an alert for one customer, which the
//! background evaluator (`crate::alert_evaluator`) runs as usage arrives.
//!
//! What each type compares (`threshold` is in the alert's credit type, USD cents by default,
//! except for usage, which is in the metric's units):
//! - `usage_threshold_reached`: the billable metric's quantity (its aggregation merged by core's
//!   accumulators) over the customer's events in the current billing period, restricted to the
//!   `group_values` given; in alarm when ≥ threshold. The current period is the open usage period
//!   (start ≤ now < end) of the customer's contracts, the earliest-starting one if several; with
//!   no contract in a period the usage is 0.
//! - `spend_threshold_reached`: the sum of the `total` of the customer's DRAFT usage invoices
//!   whose period holds now, in the credit type; ≥ threshold.
//! - `invoice_total_reached`: the largest `total` of one DRAFT invoice of the customer (of the
//!   `invoice_types_filter` types when given), in the credit type; ≥ threshold.
//! - `monthly_invoice_total_spend_threshold_reached`: the sum of the `total` of the customer's
//!   invoices that are not VOID and start in the current UTC calendar month; ≥ threshold.
//! - `low_credit_balance_reached`, `low_remaining_contract_credit_balance_reached`: the
//!   customer's available credit balance (getNetBalance over credits, drafts counted), ≤ threshold;
//!   `low_remaining_commit_balance_reached`: the same over commits;
//!   `low_remaining_contract_credit_and_commit_balance_reached`: over both. A customer with no
//!   balance has 0 (so it is in alarm for any threshold ≥ 0, as upstream documents).
//!
//! Invoice totals come from the invoice engine (`service::invoices::list`, the same drafts the
//! API shows, commits and credits applied) and balances from `service::balances`: no maths here.
//!
//! States and firing: an (alert, customer) is `evaluating` until first evaluated (and after a
//! reset), then `ok` or `in_alarm`. Each change is a compare-and-set on the state's version, read
//! before the value is computed, so an evaluator that read stale usage cannot overwrite a newer
//! state. A change to `in_alarm` from anything else writes one outbox message per active webhook
//! endpoint in the same transaction: that is a crossing, and it fires once however many
//! evaluators race. When the condition stops holding (a new billing period, a top-up) the state
//! goes back to `ok` and the next crossing fires again; `reset` puts it back to `evaluating` and
//! re-evaluates, so an alert still over its threshold fires again once.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tally_core::accumulate::merge_all;
use tally_core::balances::BalanceKind;
use tally_core::rollup;
use tally_core::time::format_rfc3339_ms;

use super::balances::{self, BalanceFilter, Inclusion};
use super::invoices::{self, InvoiceError, InvoiceQuery};
use super::{credit_types, require_text, Invalid, SeqPage, Write};
use crate::billing::{begun_periods, BillingError};
use crate::model::{decode, encode, kind, new_id, Contract, CreditTypeRef, Customer, Metric};
use crate::model::{LoadError, USD_ID};
use crate::store::{
    AlertState, ArchiveFilter, Env, NewDoc, NewOutboxMessage, PageReq, StoreError, OUTBOX_WEBHOOK,
};
use crate::wire::{Dec, Time};
use crate::AppState;

#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Billing(#[from] BillingError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<LoadError> for AlertError {
    fn from(e: LoadError) -> Self {
        match e {
            LoadError::NotFound(what) => AlertError::NotFound(what),
            LoadError::Store(e) => AlertError::Store(e),
        }
    }
}

impl From<InvoiceError> for AlertError {
    fn from(e: InvoiceError) -> Self {
        match e {
            InvoiceError::NotFound(w) => AlertError::NotFound(w),
            InvoiceError::Invalid(e) => AlertError::Invalid(e),
            InvoiceError::Conflict(m) => AlertError::Conflict(m),
            InvoiceError::Billing(e) => AlertError::Billing(e),
            InvoiceError::Store(e) => AlertError::Store(e),
        }
    }
}

impl From<balances::BalanceError> for AlertError {
    fn from(e: balances::BalanceError) -> Self {
        match e {
            balances::BalanceError::NotFound(w) => AlertError::NotFound(w),
            balances::BalanceError::Invalid(e) => AlertError::Invalid(e),
            balances::BalanceError::Billing(e) => AlertError::Billing(e),
            balances::BalanceError::Store(e) => AlertError::Store(e),
        }
    }
}

type Result<T> = std::result::Result<T, AlertError>;

/// Longest alert name accepted.
pub const MAX_NAME_CHARS: usize = 256;
/// Invoices read per customer to compute spend (a bound on one evaluation's work).
const MAX_INVOICES: i64 = 1_000;

/// The alert types Tally evaluates (the others of upstream's enum are refused with a 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertType {
    UsageThresholdReached,
    SpendThresholdReached,
    MonthlyInvoiceTotalSpendThresholdReached,
    InvoiceTotalReached,
    LowCreditBalanceReached,
    LowRemainingCommitBalanceReached,
    LowRemainingContractCreditBalanceReached,
    LowRemainingContractCreditAndCommitBalanceReached,
}

/// Upstream's alert types Tally does not evaluate.
pub const UNSUPPORTED_TYPES: [&str; 7] = [
    "low_remaining_days_in_plan_reached",
    "low_remaining_credit_percentage_reached",
    "low_remaining_days_for_commit_segment_reached",
    "low_remaining_commit_percentage_reached",
    "low_remaining_days_for_contract_credit_segment_reached",
    "low_remaining_contract_credit_percentage_reached",
    "low_remaining_seat_balance_reached",
];

impl AlertType {
    pub const ALL: [AlertType; 8] = [
        AlertType::UsageThresholdReached,
        AlertType::SpendThresholdReached,
        AlertType::MonthlyInvoiceTotalSpendThresholdReached,
        AlertType::InvoiceTotalReached,
        AlertType::LowCreditBalanceReached,
        AlertType::LowRemainingCommitBalanceReached,
        AlertType::LowRemainingContractCreditBalanceReached,
        AlertType::LowRemainingContractCreditAndCommitBalanceReached,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AlertType::UsageThresholdReached => "usage_threshold_reached",
            AlertType::SpendThresholdReached => "spend_threshold_reached",
            AlertType::MonthlyInvoiceTotalSpendThresholdReached => {
                "monthly_invoice_total_spend_threshold_reached"
            }
            AlertType::InvoiceTotalReached => "invoice_total_reached",
            AlertType::LowCreditBalanceReached => "low_credit_balance_reached",
            AlertType::LowRemainingCommitBalanceReached => "low_remaining_commit_balance_reached",
            AlertType::LowRemainingContractCreditBalanceReached => {
                "low_remaining_contract_credit_balance_reached"
            }
            AlertType::LowRemainingContractCreditAndCommitBalanceReached => {
                "low_remaining_contract_credit_and_commit_balance_reached"
            }
        }
    }

    pub fn parse(s: &str) -> std::result::Result<AlertType, Invalid> {
        if let Some(t) = AlertType::ALL.into_iter().find(|t| t.as_str() == s) {
            return Ok(t);
        }
        let supported: Vec<&str> = AlertType::ALL.iter().map(|t| t.as_str()).collect();
        Err(Invalid(match UNSUPPORTED_TYPES.contains(&s) {
            true => format!(
                "alert_type {s:?} is not supported by Tally; supported: {}",
                supported.join(", ")
            ),
            false => format!(
                "alert_type {s:?} is unknown; supported: {}",
                supported.join(", ")
            ),
        }))
    }

    /// Balance types alarm at or below the threshold; the others at or above it.
    fn is_low_balance(self) -> bool {
        self.balance_kinds().is_some()
    }

    fn balance_kinds(self) -> Option<Vec<BalanceKind>> {
        let commits = [BalanceKind::PrepaidCommit, BalanceKind::PostpaidCommit];
        match self {
            AlertType::LowCreditBalanceReached
            | AlertType::LowRemainingContractCreditBalanceReached => {
                Some(vec![BalanceKind::Credit])
            }
            AlertType::LowRemainingCommitBalanceReached => Some(commits.to_vec()),
            AlertType::LowRemainingContractCreditAndCommitBalanceReached => {
                let mut all = commits.to_vec();
                all.push(BalanceKind::Credit);
                Some(all)
            }
            _ => None,
        }
    }
}

/// One `group_values` entry: a metric group key and (optionally) its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupValue {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// An alert as stored (document kind [`kind::ALERT`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Alert {
    pub id: String,
    pub name: String,
    pub alert_type: AlertType,
    pub threshold: Dec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billable_metric_id: Option<String>,
    pub credit_type: CreditTypeRef,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group_values: Vec<GroupValue>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub invoice_types_filter: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uniqueness_key: Option<String>,
    pub created_at: Time,
    pub updated_at: Time,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived_at: Option<Time>,
}

impl Alert {
    /// The `alert` object of `customer-alerts/get|list`.
    pub fn api_json(&self) -> Value {
        let mut v = json!({
            "id": self.id,
            "name": self.name,
            "type": self.alert_type.as_str(),
            "status": if self.archived_at.is_some() { "archived" } else { "enabled" },
            "threshold": self.threshold,
            "updated_at": self.updated_at,
            "credit_type": { "id": self.credit_type.id, "name": self.credit_type.name },
        });
        if let Some(k) = &self.uniqueness_key {
            v["uniqueness_key"] = json!(k);
        }
        if !self.group_values.is_empty() {
            v["group_values"] = json!(self.group_values);
        }
        if !self.invoice_types_filter.is_empty() {
            v["invoice_types_filter"] = json!(self.invoice_types_filter);
        }
        if let Some(m) = &self.billable_metric_id {
            v["billable_metric_id"] = json!(m);
        }
        v
    }

    pub fn applies_to(&self, customer_id: &str) -> bool {
        self.customer_id.as_deref().is_none_or(|c| c == customer_id)
    }

    fn crossed(&self, value: Decimal) -> bool {
        match self.alert_type.is_low_balance() {
            true => value <= self.threshold.0,
            false => value >= self.threshold.0,
        }
    }
}

/// What `alerts/create` asks for (the wire layer has refused the fields Tally does not support).
pub struct NewAlert {
    pub alert_type: String,
    pub name: String,
    pub threshold: Decimal,
    pub customer_id: Option<String>,
    pub billable_metric_id: Option<String>,
    pub credit_type_id: Option<String>,
    pub group_values: Vec<GroupValue>,
    pub invoice_types_filter: Vec<String>,
    pub uniqueness_key: Option<String>,
    pub evaluate_on_create: bool,
}

/// Validates and stores an alert; its id. Nothing is stored when anything is refused. Then the
/// evaluator is asked to evaluate it for its customers: with `evaluate_on_create` (the default)
/// a customer already past the threshold fires; without it, such customers are recorded in alarm
/// silently and only later crossings fire.
pub async fn create(st: &AppState, env: Env, req: NewAlert) -> Result<String> {
    let alert_type = AlertType::parse(&req.alert_type)?;
    require_text("name", &req.name, MAX_NAME_CHARS)?;
    if req.threshold.is_sign_negative() && !req.threshold.is_zero() {
        return Err(Invalid("threshold must not be negative".into()).into());
    }
    if let Some(k) = &req.uniqueness_key {
        if k.is_empty() || k.chars().count() > 128 {
            return Err(Invalid("uniqueness_key must be 1 to 128 characters".into()).into());
        }
    }
    if let Some(c) = &req.customer_id {
        if st
            .stores
            .config
            .get_doc(env, kind::CUSTOMER, c)
            .await?
            .is_none()
        {
            return Err(AlertError::NotFound("customer"));
        }
    }
    match (alert_type, &req.billable_metric_id) {
        (AlertType::UsageThresholdReached, None) => {
            return Err(Invalid(
                "billable_metric_id is required for usage_threshold_reached".into(),
            )
            .into())
        }
        (AlertType::UsageThresholdReached, Some(m)) => {
            let doc = st.stores.config.get_doc(env, kind::METRIC, m).await?;
            let Some(doc) = doc else {
                return Err(
                    Invalid(format!("billable_metric_id {m:?} is not a billable metric")).into(),
                );
            };
            let metric: Metric = decode(&doc)?;
            check_group_values(&metric, &req.group_values)?;
        }
        (_, Some(_)) => {
            return Err(Invalid(
                "billable_metric_id is only for usage_threshold_reached alerts".into(),
            )
            .into())
        }
        (_, None) if !req.group_values.is_empty() => {
            return Err(Invalid(
                "group_values is supported only for usage_threshold_reached alerts".into(),
            )
            .into())
        }
        (_, None) => {}
    }
    for t in &req.invoice_types_filter {
        if alert_type != AlertType::InvoiceTotalReached {
            return Err(Invalid(
                "invoice_types_filter is only for invoice_total_reached alerts".into(),
            )
            .into());
        }
        if t != "USAGE" && t != "SCHEDULED" {
            return Err(Invalid(format!(
                "invoice_types_filter entries must be USAGE or SCHEDULED, not {t:?}"
            ))
            .into());
        }
    }
    let credit_type = credit_types::resolve(st, env, req.credit_type_id.as_deref())
        .await
        .map_err(|e| match e {
            credit_types::ResolveError::Invalid(Invalid(m)) => {
                AlertError::Invalid(Invalid(format!("credit_type_id: {m}")))
            }
            credit_types::ResolveError::Store(e) => AlertError::Store(e),
        })?;
    let now = Time(st.now_ms());
    let alert = Alert {
        id: new_id(),
        name: req.name,
        alert_type,
        threshold: Dec(req.threshold),
        customer_id: req.customer_id,
        billable_metric_id: req.billable_metric_id,
        credit_type,
        group_values: req.group_values,
        invoice_types_filter: req.invoice_types_filter,
        uniqueness_key: req.uniqueness_key,
        created_at: now,
        updated_at: now,
        archived_at: None,
    };
    let doc = NewDoc {
        kind: kind::ALERT,
        id: &alert.id,
        parent_id: None,
        unique_key: alert.uniqueness_key.as_deref(),
        created_ms: now.0,
        body: encode(&alert)?,
    };
    if !super::insert_unique(st, env, doc).await? {
        return Err(AlertError::Conflict(
            "an alert with this uniqueness_key already exists".into(),
        ));
    }
    st.alerts
        .alert_created(env, &alert.id, !req.evaluate_on_create);
    Ok(alert.id)
}

fn check_group_values(metric: &Metric, filters: &[GroupValue]) -> std::result::Result<(), Invalid> {
    let grain = metric.def().grain();
    let mut seen = Vec::new();
    for f in filters {
        if !grain.contains(&f.key) {
            return Err(Invalid(format!(
                "group_values key {:?} is not a group key of billable metric {} (its keys: {})",
                f.key,
                metric.id,
                grain.join(", ")
            )));
        }
        if seen.contains(&&f.key) {
            return Err(Invalid(format!("group_values names key {:?} twice", f.key)));
        }
        seen.push(&f.key);
    }
    Ok(())
}

/// Archives an alert (idempotent): it is evaluated no more and fires no more.
pub async fn archive(st: &AppState, env: Env, id: &str) -> Result<()> {
    let now = Time(st.now_ms());
    super::modify_doc(st, env, kind::ALERT, id, "alert", |a: &mut Alert| {
        if a.archived_at.is_some() {
            return Ok::<_, AlertError>(Write::Unchanged);
        }
        a.archived_at = Some(now);
        a.updated_at = now;
        Ok(Write::Save { archived: true })
    })
    .await
    .map(drop)
}

async fn customer(st: &AppState, env: Env, id: &str) -> Result<Customer> {
    Ok(crate::model::load(&st.stores, env, kind::CUSTOMER, id, "customer").await?)
}

/// The alert `id` as it applies to `customer_id` (404 when it is for another customer).
async fn alert_for(st: &AppState, env: Env, id: &str, customer_id: &str) -> Result<Alert> {
    let alert: Alert = crate::model::load(&st.stores, env, kind::ALERT, id, "alert").await?;
    if !alert.applies_to(customer_id) {
        return Err(AlertError::NotFound("alert"));
    }
    Ok(alert)
}

/// `customer-alerts/get`: the alert and where the customer stands.
pub async fn get(st: &AppState, env: Env, customer_id: &str, alert_id: &str) -> Result<Value> {
    customer(st, env, customer_id).await?;
    let alert = alert_for(st, env, alert_id, customer_id).await?;
    let state = st
        .stores
        .alerts
        .alert_state(env, alert_id, customer_id)
        .await?;
    Ok(customer_alert_json(&alert, state.as_ref()))
}

fn customer_alert_json(alert: &Alert, state: Option<&AlertState>) -> Value {
    let status = match alert.archived_at {
        Some(_) => Value::Null,
        None => json!(state.map_or("evaluating", |s| s.status.as_str())),
    };
    json!({
        "alert": alert.api_json(),
        "customer_status": status,
        "triggered_by": state.and_then(|s| s.triggered_by.clone()),
    })
}

/// `customer-alerts/list`: one keyset page (`limit + 1` fetched) of the alerts that apply to
/// the customer, in creation order, archived ones included when `filter` says so.
pub async fn list(
    st: &AppState,
    env: Env,
    customer_id: &str,
    filter: ArchiveFilter,
    page: PageReq,
) -> Result<SeqPage<Value>> {
    customer(st, env, customer_id).await?;
    let states: BTreeMap<String, AlertState> = st
        .stores
        .alerts
        .alert_states(env, customer_id)
        .await?
        .into_iter()
        .map(|s| (s.alert_id.clone(), s))
        .collect();
    let mut out = Vec::new();
    let mut after = page.after;
    // Alerts of other customers are skipped, so read on until the page is full.
    loop {
        let fetch = PageReq { after, limit: 200 };
        let docs = st
            .stores
            .config
            .list_docs(env, kind::ALERT, None, filter, Some(fetch))
            .await?;
        for d in &docs {
            after = d.seq;
            let alert: Alert = decode(d)?;
            if alert.applies_to(customer_id) {
                out.push((d.seq, customer_alert_json(&alert, states.get(&alert.id))));
                if out.len() as i64 > page.limit {
                    return Ok(out);
                }
            }
        }
        if docs.len() < 200 {
            return Ok(out);
        }
    }
}

/// `customer-alerts/reset`: back to `evaluating`, then evaluated again at once (an alert still
/// over its threshold fires again, once).
pub async fn reset(st: &AppState, env: Env, customer_id: &str, alert_id: &str) -> Result<()> {
    customer(st, env, customer_id).await?;
    alert_for(st, env, alert_id, customer_id).await?;
    st.stores
        .alerts
        .reset_alert_state(env, alert_id, customer_id, st.now_ms())
        .await?;
    evaluate_customer(st, env, customer_id, Some(alert_id), Trigger::Reset).await?;
    Ok(())
}

/// The active alerts of `env`.
pub async fn active_alerts(st: &AppState, env: Env) -> Result<Vec<Alert>> {
    let docs = st
        .stores
        .config
        .list_docs(env, kind::ALERT, None, ArchiveFilter::Active, None)
        .await?;
    Ok(docs
        .iter()
        .map(decode)
        .collect::<std::result::Result<_, _>>()?)
}

/// The ids of the customers an alert applies to (every customer of the environment when it
/// names none).
pub async fn target_customers(st: &AppState, env: Env, alert: &Alert) -> Result<Vec<String>> {
    if let Some(c) = &alert.customer_id {
        return Ok(vec![c.clone()]);
    }
    let docs = st
        .stores
        .config
        .list_docs(env, kind::CUSTOMER, None, ArchiveFilter::Active, None)
        .await?;
    Ok(docs.into_iter().map(|d| d.id).collect())
}

/// Why an evaluation runs (the webhook's `triggered_by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// Usage arrived for the customer.
    Usage,
    /// The alert was just created (`evaluate_on_create`).
    Creation,
    /// The alert was created with `evaluate_on_create: false`: the state is recorded, nothing
    /// is sent.
    SilentBaseline,
    /// `customer-alerts/reset`.
    Reset,
    /// The periodic sweep (time passed: a new period, an expired credit).
    Schedule,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Usage => "usage",
            Trigger::Creation | Trigger::SilentBaseline => "alert_creation",
            Trigger::Reset => "reset",
            Trigger::Schedule => "schedule",
        }
    }
}

/// Evaluates the active alerts that apply to `customer_id` (only `only` when given); how many
/// fired. A customer that does not exist (an unattributed ingest reference) has none.
pub async fn evaluate_customer(
    st: &AppState,
    env: Env,
    customer_id: &str,
    only: Option<&str>,
    trigger: Trigger,
) -> Result<usize> {
    let alerts: Vec<Alert> = active_alerts(st, env)
        .await?
        .into_iter()
        .filter(|a| a.applies_to(customer_id) && only.is_none_or(|id| id == a.id))
        .collect();
    evaluate_alerts(st, env, customer_id, &alerts, trigger).await
}

/// Evaluates `alerts` (all applying to `customer_id`) for one customer, the customer's
/// invoices and balances computed at most once.
pub async fn evaluate_alerts(
    st: &AppState,
    env: Env,
    customer_id: &str,
    alerts: &[Alert],
    trigger: Trigger,
) -> Result<usize> {
    if alerts.is_empty() {
        return Ok(0);
    }
    let Some(doc) = st
        .stores
        .config
        .get_doc(env, kind::CUSTOMER, customer_id)
        .await?
    else {
        return Ok(0);
    };
    let customer: Customer = decode(&doc)?;
    let mut facts = Facts {
        customer,
        contracts: None,
        invoices: None,
    };
    let mut fired = 0;
    for alert in alerts {
        // The state first: a value computed after reading it is at least as new as the state.
        let state = st
            .stores
            .alerts
            .alert_state(env, &alert.id, customer_id)
            .await?;
        let value = facts.value(st, env, alert).await?;
        if settle(st, env, alert, customer_id, state, value, trigger).await? {
            fired += 1;
        }
    }
    Ok(fired)
}

/// Moves the state to what `value` says, if that is a change; true when this call fired.
async fn settle(
    st: &AppState,
    env: Env,
    alert: &Alert,
    customer_id: &str,
    state: Option<AlertState>,
    value: Decimal,
    trigger: Trigger,
) -> Result<bool> {
    let crossed = alert.crossed(value);
    let current = state.as_ref().map_or("evaluating", |s| s.status.as_str());
    let target = if crossed { "in_alarm" } else { "ok" };
    if current == target {
        return Ok(false);
    }
    let now = st.now_ms();
    let fires = state.as_ref().map_or(0, |s| s.fires) + i64::from(crossed);
    let next = AlertState {
        alert_id: alert.id.clone(),
        customer_id: customer_id.to_string(),
        status: target.to_string(),
        fires,
        value: Some(value.normalize().to_string()),
        triggered_by: crossed.then(|| trigger.as_str().to_string()),
        version: state.as_ref().map_or(1, |s| s.version + 1),
        updated_ms: now,
    };
    let notify = crossed && trigger != Trigger::SilentBaseline;
    let endpoints = match notify {
        true => super::webhooks::active_endpoint_ids(st, env).await?,
        false => Vec::new(),
    };
    let wall = crate::Clock::now_ms(&crate::SystemClock);
    let mut work = st.stores.invoices.begin().await?;
    let expected = state.as_ref().map(|s| s.version);
    if !work.put_alert_state(env, &next, expected).await? {
        // Another evaluator changed it first (and fired, if it was a crossing).
        return Ok(false);
    }
    for msg in alert_messages(env, &endpoints, alert, &next, value, trigger, now, wall) {
        work.put_outbox(&msg).await?;
    }
    work.commit().await?;
    if crossed {
        tracing::info!(
            env = env.as_str(), alert = %alert.id, customer = customer_id,
            alert_type = alert.alert_type.as_str(), value = %value, fires,
            messages = endpoints.len(), "alert in alarm"
        );
        metrics::counter!("tally_alerts_fired_total", "type" => alert.alert_type.as_str())
            .increment(u64::from(notify));
    }
    Ok(notify)
}

/// The `alerts.<type>` messages of a crossing, one per endpoint; ids derive from the crossing's
/// number, so a retry or a racing evaluator writes the same ids, and a re-armed alert's next
/// crossing new ones.
#[allow(clippy::too_many_arguments)] // every argument is a part of the payload
fn alert_messages(
    env: Env,
    endpoints: &[String],
    alert: &Alert,
    state: &AlertState,
    value: Decimal,
    trigger: Trigger,
    now_ms: i64,
    wall_ms: i64,
) -> Vec<NewOutboxMessage> {
    let kind = format!("alerts.{}", alert.alert_type.as_str());
    let subject = format!("{}/{}/{}", alert.id, state.customer_id, state.fires);
    endpoints
        .iter()
        .map(|endpoint| {
            let id = super::webhooks::message_id(env, &kind, &subject, endpoint);
            let mut properties = json!({
                "customer_id": state.customer_id,
                "alert_id": alert.id,
                "alert_name": alert.name,
                "alert_type": alert.alert_type.as_str(),
                "threshold": alert.threshold,
                "timestamp": format_rfc3339_ms(now_ms),
                "triggered_by": trigger.as_str(),
                "current_value": Dec(value),
            });
            match alert.alert_type {
                AlertType::UsageThresholdReached => {
                    properties["billable_metric_id"] = json!(alert.billable_metric_id);
                    if !alert.group_values.is_empty() {
                        properties["group_values"] = json!(alert.group_values);
                    }
                }
                t => {
                    properties["credit_type_id"] = json!(alert.credit_type.id);
                    if t.is_low_balance() {
                        properties["remaining_balance"] = json!(Dec(value));
                    }
                }
            }
            let payload = json!({ "id": id, "type": kind, "properties": properties });
            NewOutboxMessage {
                id,
                env,
                topic: OUTBOX_WEBHOOK.into(),
                kind: kind.clone(),
                destination: endpoint.clone(),
                payload: payload.to_string(),
                created_ms: wall_ms,
            }
        })
        .collect()
}

/// What one evaluation of a customer reads, each part at most once.
struct Facts {
    customer: Customer,
    contracts: Option<Vec<Contract>>,
    invoices: Option<Vec<Value>>,
}

impl Facts {
    async fn contracts(&mut self, st: &AppState, env: Env) -> Result<&[Contract]> {
        if self.contracts.is_none() {
            let loaded =
                crate::model::load_children(&st.stores, env, kind::CONTRACT, &self.customer.id)
                    .await?;
            self.contracts = Some(loaded);
        }
        Ok(self.contracts.as_deref().unwrap_or_default())
    }

    /// Every invoice of the customer as the API renders it (drafts priced now).
    async fn invoices(&mut self, st: &AppState, env: Env) -> Result<&[Value]> {
        if self.invoices.is_none() {
            let q = InvoiceQuery {
                contract_id: None,
                status: None,
                starting_on: None,
                ending_before: None,
                descending: false,
                invoice_type: None,
                credit_type_id: None,
                skip_zero_lines: false,
            };
            let page = invoices::list(st, env, &self.customer.id, &q, 0, MAX_INVOICES).await?;
            self.invoices = Some(page.items);
        }
        Ok(self.invoices.as_deref().unwrap_or_default())
    }

    async fn value(&mut self, st: &AppState, env: Env, alert: &Alert) -> Result<Decimal> {
        let now = st.now_ms();
        let credit = alert.credit_type.id.as_str();
        let t = alert.alert_type;
        if let Some(kinds) = t.balance_kinds() {
            let filter = BalanceFilter {
                kinds: Some(kinds),
                ids: None,
            };
            return Ok(balances::net_balance(
                st,
                env,
                &self.customer.id,
                credit,
                &[filter],
                Inclusion::FinalizedAndDraft,
            )
            .await?);
        }
        if t == AlertType::UsageThresholdReached {
            return self.usage(st, env, alert, now).await;
        }
        let month_start = month_start_ms(now);
        let mut sum = Decimal::ZERO;
        let mut max = Decimal::ZERO;
        for inv in self.invoices(st, env).await? {
            if inv["credit_type"]["id"].as_str().unwrap_or(USD_ID) != credit {
                continue;
            }
            let total = number(&inv["total"]);
            let status = inv["status"].as_str().unwrap_or("");
            let start = time_ms(&inv["start_timestamp"]);
            let end = time_ms(&inv["end_timestamp"]);
            let usage = inv["type"].as_str() == Some("USAGE");
            let counts = match t {
                AlertType::SpendThresholdReached => {
                    status == "DRAFT" && usage && start <= now && now < end
                }
                AlertType::InvoiceTotalReached => {
                    let ty = inv["type"].as_str().unwrap_or("");
                    status == "DRAFT"
                        && (alert.invoice_types_filter.is_empty()
                            || alert.invoice_types_filter.iter().any(|f| f == ty))
                }
                _ => status != "VOID" && start >= month_start && start <= now,
            };
            if counts {
                sum += total;
                max = max.max(total);
            }
        }
        Ok(match t {
            AlertType::InvoiceTotalReached => max,
            _ => sum,
        })
    }

    /// The metric's quantity over the current billing period, restricted to the alert's
    /// group values, from the stored usage rows merged by core's accumulators.
    async fn usage(&mut self, st: &AppState, env: Env, alert: &Alert, now: i64) -> Result<Decimal> {
        let Some(metric_id) = alert.billable_metric_id.clone() else {
            return Ok(Decimal::ZERO);
        };
        let period = self
            .contracts(st, env)
            .await?
            .iter()
            .flat_map(|c| begun_periods(c, now))
            .filter(|p| p.start_ms <= now && now < p.end_ms)
            .min_by_key(|p| p.start_ms);
        let Some(period) = period else {
            return Ok(Decimal::ZERO);
        };
        let Some(doc) = st
            .stores
            .config
            .get_doc(env, kind::METRIC, &metric_id)
            .await?
        else {
            return Ok(Decimal::ZERO);
        };
        let metric: Metric = decode(&doc)?;
        let grain = metric.def().grain();
        let refs = self.customer.refs();
        let ids = [metric_id];
        let usage = &st.stores.usage;
        let dirty = usage
            .dirty_days(env, &refs, &ids, period.start_ms, period.end_ms)
            .await?;
        let blocks = rollup::cover(period.start_ms, period.end_ms, &[], &dirty);
        let rows = usage.usage_blocks(env, &refs, &ids, &blocks).await?;
        let wanted = |groups: &[Option<String>]| {
            alert.group_values.iter().all(|f| {
                let i = grain.iter().position(|k| *k == f.key);
                let got = i.and_then(|i| groups.get(i)).and_then(Option::as_deref);
                match &f.value {
                    Some(v) => got == Some(v.as_str()),
                    None => got.is_some(),
                }
            })
        };
        let merged = merge_all(rows.iter().filter(|r| wanted(&r.groups)).map(|r| &r.acc))
            .map_err(|e| BillingError::Rating(e.to_string()))?;
        Ok(merged.map_or(Decimal::ZERO, |a| a.quantity()))
    }
}

/// A JSON number (exact, `arbitrary_precision`) as a decimal; 0 when it is not one.
fn number(v: &Value) -> Decimal {
    v.to_string().parse().unwrap_or_default()
}

fn time_ms(v: &Value) -> i64 {
    v.as_str()
        .and_then(|s| tally_core::time::parse_rfc3339_ms(s).ok())
        .unwrap_or(i64::MIN)
}

/// The start of the UTC calendar month holding `ms` (its RFC 3339 `YYYY-MM` with day 1).
fn month_start_ms(ms: i64) -> i64 {
    let text = format_rfc3339_ms(ms);
    let month = text.get(..7).unwrap_or("1970-01");
    tally_core::time::parse_rfc3339_ms(&format!("{month}-01T00:00:00Z")).unwrap_or(i64::MIN)
}
