//! Event search (`POST /v1/events/search`): the stored events of some transaction ids, each with
//! what it matched and who it is billed to now.
//!
//! Rules:
//! - Only events whose timestamp is within the last 34 days of the service clock are found
//!   (`tally_core::ingest::BACKDATE_LIMIT_MS`, Metronome's window); older ones are not, even
//!   while retention keeps them for billing.
//! - Each id answers its counted event and, when a later delivery repeated it, the latest
//!   duplicate (`is_duplicate`).
//! - The customer is resolved at read time from the reference as sent (a customer id, else an
//!   ingest alias), as billing attributes usage; an unknown reference has no matched customer.
//! - The matched metrics are those the event contributed to when it was metered, and, for a
//!   counted event, the environment's active SQL billable metrics whose WHERE it passes (they
//!   are computed from the event store at read time, so they match at read time too).
//! - `finalized_invoice_ids` (a Tally extension): the matched customer's FINALIZED usage invoices
//!   whose period holds the event's timestamp and that were finalized at or before the event was
//!   processed (or before finalization times were recorded): the event arrived after they were
//!   frozen, so it is on none of them until one is voided and regenerated
//!   (`invoices/regenerate`), whose new invoice holds it and is not listed.
//!
//! Reads only.

use std::collections::BTreeMap;

use tally_core::event::StoredEvent;
use tally_core::sql_metric::SqlMetric;

use super::Invalid;
use crate::model::{decode, kind, load_children, Contract, Customer, Metric};
use crate::store::{
    ArchiveFilter, Env, InvoiceKind, InvoiceRow, InvoiceStatus, StoreError, MAX_EVENT_SEARCH_IDS,
};
use crate::AppState;

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One stored event as search answers it.
#[derive(Debug, Clone)]
pub struct FoundEvent {
    pub stored: StoredEvent,
    pub customer: Option<Customer>,
    /// The matched metrics that still exist, in id order.
    pub metrics: Vec<Metric>,
    /// Sorted.
    pub finalized_invoice_ids: Vec<String>,
}

/// The stored events of `transaction_ids` (1 to [`MAX_EVENT_SEARCH_IDS`]) in the search window,
/// by transaction id, the counted event before its duplicate.
pub async fn search(
    st: &AppState,
    env: Env,
    transaction_ids: &[String],
) -> Result<Vec<FoundEvent>, SearchError> {
    if transaction_ids.is_empty() {
        return Err(Invalid("transactionIds must hold at least one transaction id".into()).into());
    }
    if transaction_ids.len() > MAX_EVENT_SEARCH_IDS {
        return Err(Invalid(format!(
            "transactionIds holds {} ids; at most {MAX_EVENT_SEARCH_IDS} are searched at once",
            transaction_ids.len()
        ))
        .into());
    }
    let since = st
        .now_ms()
        .saturating_sub(tally_core::ingest::BACKDATE_LIMIT_MS);
    let rows = st
        .stores
        .usage
        .search_events(env, transaction_ids, since)
        .await?;
    // Per reference: the customer it names now and that customer's finalized usage invoices.
    let mut customers: BTreeMap<String, Option<(Customer, Vec<InvoiceRow>)>> = BTreeMap::new();
    let mut metrics: BTreeMap<String, Option<Metric>> = BTreeMap::new();
    let sql_metrics = sql_metrics(st, env).await?;
    let mut out = Vec::with_capacity(rows.len());
    for stored in rows {
        let reference = stored.event.customer_id.clone();
        if !customers.contains_key(&reference) {
            let found = match resolve_customer(st, env, &reference).await? {
                Some(c) => {
                    let invoices = finalized_usage_invoices(st, env, &c.id).await?;
                    Some((c, invoices))
                }
                None => None,
            };
            customers.insert(reference.clone(), found);
        }
        let (ts, processed) = (stored.event.timestamp_ms, stored.processed_ms);
        let (customer, mut finalized_invoice_ids) =
            match customers.get(&reference).and_then(Option::as_ref) {
                Some((c, invoices)) => (
                    Some(c.clone()),
                    invoices
                        .iter()
                        .filter(|r| r.period_start_ms <= ts && ts < r.period_end_ms)
                        // Frozen before the event was processed (a regeneration after it holds it).
                        .filter(|r| r.finalized_ms.is_none_or(|f| f <= processed))
                        .map(|r| r.id.clone())
                        .collect(),
                ),
                None => (None, Vec::new()),
            };
        finalized_invoice_ids.sort();
        let mut matched = Vec::new();
        for id in &stored.matched_metrics {
            if !metrics.contains_key(id) {
                let doc = st.stores.config.get_doc(env, kind::METRIC, id).await?;
                let metric = doc.map(|d| decode::<Metric>(&d)).transpose()?;
                metrics.insert(id.clone(), metric);
            }
            if let Some(Some(m)) = metrics.get(id) {
                matched.push(m.clone());
            }
        }
        if !stored.duplicate {
            matched.extend(
                sql_metrics
                    .iter()
                    .filter(|(_, q)| q.matches(&stored.event))
                    .map(|(m, _)| m.clone()),
            );
            matched.sort_by(|a, b| a.id.cmp(&b.id));
        }
        out.push(FoundEvent {
            stored,
            customer,
            metrics: matched,
            finalized_invoice_ids,
        });
    }
    Ok(out)
}

/// The environment's active SQL billable metrics, each with its parsed query.
async fn sql_metrics(st: &AppState, env: Env) -> Result<Vec<(Metric, SqlMetric)>, StoreError> {
    let docs = st
        .stores
        .config
        .list_docs(env, kind::METRIC, None, ArchiveFilter::Active, None)
        .await?;
    let mut out = Vec::new();
    for doc in &docs {
        let metric: Metric = decode(doc)?;
        if let Some(query) = metric.sql.as_deref().and_then(|q| SqlMetric::parse(q).ok()) {
            out.push((metric, query));
        }
    }
    Ok(out)
}

/// The customer's FINALIZED usage invoices, over all its contracts.
async fn finalized_usage_invoices(
    st: &AppState,
    env: Env,
    customer_id: &str,
) -> Result<Vec<InvoiceRow>, StoreError> {
    let contracts: Vec<Contract> =
        load_children(&st.stores, env, kind::CONTRACT, customer_id).await?;
    let mut out = Vec::new();
    for contract in contracts {
        let rows = st
            .stores
            .invoices
            .invoices_for_contract(env, &contract.id)
            .await?;
        out.extend(
            rows.into_iter()
                .filter(|r| r.kind == InvoiceKind::Usage && r.status == InvoiceStatus::Finalized),
        );
    }
    Ok(out)
}

/// The customer a reference names now: the customer of that id, else the owner of that ingest
/// alias.
async fn resolve_customer(
    st: &AppState,
    env: Env,
    reference: &str,
) -> Result<Option<Customer>, StoreError> {
    if let Some(doc) = st
        .stores
        .config
        .get_doc(env, kind::CUSTOMER, reference)
        .await?
    {
        return Ok(Some(decode(&doc)?));
    }
    let Some(owner) = st.stores.config.customer_by_alias(env, reference).await? else {
        return Ok(None);
    };
    match st
        .stores
        .config
        .get_doc(env, kind::CUSTOMER, &owner)
        .await?
    {
        Some(doc) => Ok(Some(decode(&doc)?)),
        None => Ok(None),
    }
}
