//! Invoice computation: which periods a contract has, and a period's invoice priced by core's one
//! entry point (`tally_core::pricing::price_invoice`) from stored usage, rendered to the API's JSON in
//! one place. The lifecycle (DRAFT → FINALIZED / VOID, the job) is `service::invoices` and
//! `service::jobs`; nothing here writes.
//!
//! Invariants:
//! - Invoice ids are deterministic (`uuid5(env/contract/period start)`), so a draft that has no
//!   row yet has the same id as the row the job later stores for it.
//! - A DRAFT has no stored body: it is computed on read from rolled-up usage (the rows of
//!   `tally_core::rollup::cover`: hours, days, spans of days, months), so its cost is
//!   O(groups × blocks) rows, where a period has a few blocks per instant pricing splits it at
//!   (plus the hours of days not yet rolled up), independent of the number of events and of the
//!   number of hours.
//! - A FINALIZED or VOID invoice is shown from its frozen body, never recomputed.
use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde_json::{json, Value};
use tally_core::accumulate::Accumulator;
use tally_core::event::Event;
use tally_core::invoice::{Invoice, InvoiceKind};
use tally_core::invoice_json::{self, InvoiceHeader, ProductView};
use tally_core::money::{CreditType, CreditTypeId};
use tally_core::period::Period;
use tally_core::pricing::{price_invoice, PricingSnapshot};
use tally_core::rating::UsageRow;
use tally_core::rollup;
use tally_core::sql_metric::SqlMetric;

use crate::model::{
    decode, kind, Contract, CreditTypeRef, Customer, LoadError, Metric, Product, ProductType,
    RateCard, RateRecord,
};
use crate::store::{ArchiveFilter, Env, InvoiceRow, InvoiceStatus, StoreError};
use crate::AppState;

/// Why an invoice could not be computed. No HTTP here: `http::error` maps it to a status.
#[derive(Debug, thiserror::Error)]
pub enum BillingError {
    #[error("{0} not found")]
    NotFound(&'static str),
    /// Core refused to price the period (an amount overflows the exact decimal range, ...).
    #[error("rating failed: {0}")]
    Rating(String),
    /// The period's usage cannot be computed from what was ingested (an SQL billable metric
    /// with more groups than `tally_core::sql_metric::MAX_GROUPS`, or a sum past the exact
    /// decimal range): a clear client-visible error, never a truncated invoice.
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<LoadError> for BillingError {
    fn from(e: LoadError) -> Self {
        match e {
            LoadError::NotFound(what) => BillingError::NotFound(what),
            LoadError::Store(e) => BillingError::Store(e),
        }
    }
}

pub type BillingResult<T> = Result<T, BillingError>;

/// Namespace of invoice ids: `uuid5(NS, "{env}/{contract}/{period start}")`.
const INVOICE_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x5e1f_7a11_7a11_4c0d_9b1e_1a77_c0de_0001);

pub fn invoice_id(env: Env, contract_id: &str, period_start_ms: i64) -> String {
    let name = format!("{}/{contract_id}/{period_start_ms}", env.as_str());
    uuid::Uuid::new_v5(&INVOICE_NAMESPACE, name.as_bytes()).to_string()
}

/// The id of the contract's SCHEDULED invoice at `at_ms`: `uuid5(NS, "{env}/{contract}/scheduled/{at}")`.
pub fn scheduled_invoice_id(env: Env, contract_id: &str, at_ms: i64) -> String {
    let name = format!("{}/{contract_id}/scheduled/{at_ms}", env.as_str());
    uuid::Uuid::new_v5(&INVOICE_NAMESPACE, name.as_bytes()).to_string()
}

/// The id of the invoice regenerating the voided invoice `voided_id`:
/// `uuid5(NS, "{env}/{voided}/regenerated")`, so a voided invoice has one regeneration however
/// many requests race to make it.
pub fn regenerated_invoice_id(env: Env, voided_id: &str) -> String {
    let name = format!("{}/{voided_id}/regenerated", env.as_str());
    uuid::Uuid::new_v5(&INVOICE_NAMESPACE, name.as_bytes()).to_string()
}

/// Every period of the contract that is invoiced at `now_ms` (core decides which).
pub fn begun_periods(contract: &Contract, now_ms: i64) -> Vec<Period> {
    contract.snapshot().invoiced_periods(now_ms)
}

/// What pricing needs, loaded once per contract: core's snapshot plus what only the API's JSON
/// shows (the customer and the products' documents).
pub struct RatingContext {
    customer: Customer,
    snapshot: PricingSnapshot,
    product_info: BTreeMap<String, Product>,
    /// The SQL billable metrics the snapshot's products meter with, compiled.
    sql_metrics: BTreeMap<String, SqlMetric>,
}

impl RatingContext {
    /// Core's view of the contract and its rate card.
    pub fn snapshot(&self) -> &PricingSnapshot {
        &self.snapshot
    }

    pub async fn load(
        st: &AppState,
        env: Env,
        contract: &Contract,
    ) -> BillingResult<RatingContext> {
        let customer: Customer = crate::model::load(
            &st.stores,
            env,
            kind::CUSTOMER,
            &contract.customer_id,
            "customer",
        )
        .await?;
        let mut ctx = RatingContext {
            customer,
            snapshot: PricingSnapshot {
                credit_types: Vec::new(),
                fiat_credit_type: CreditTypeId(String::new()),
                metrics: BTreeMap::new(),
                products: Vec::new(),
                composites: Vec::new(),
                product_order: Vec::new(),
                rates: Vec::new(),
                contract: contract.pricing_snapshot()?,
                balances: Default::default(),
                credit_type_conversions: Vec::new(),
            },
            product_info: BTreeMap::new(),
            sql_metrics: BTreeMap::new(),
        };
        let fiat = match &contract.rate_card_id {
            Some(card_id) => ctx.load_rate_card(st, env, card_id).await?,
            None => CreditTypeRef::usd(),
        };
        ctx.add_credit_type(&fiat);
        ctx.snapshot.fiat_credit_type = CreditTypeId(fiat.id);
        ctx.snapshot.balances.balances =
            crate::service::commits::applicable_balances(st, env, contract).await?;
        Ok(ctx)
    }

    /// Loads the card's rates, products, product order (the invoice's line order, which core
    /// applies) and metrics; returns the card's fiat credit type.
    async fn load_rate_card(
        &mut self,
        st: &AppState,
        env: Env,
        card_id: &str,
    ) -> BillingResult<CreditTypeRef> {
        let now = st.now_ms();
        let card = st
            .stores
            .config
            .get_doc(env, kind::RATE_CARD, card_id)
            .await?;
        let card: Option<RateCard> = card.as_ref().map(decode).transpose()?;
        let docs = st
            .stores
            .config
            .list_docs(env, kind::RATE, Some(card_id), ArchiveFilter::All, None)
            .await?;
        let records: Vec<RateRecord> =
            docs.iter().map(decode).collect::<Result<_, StoreError>>()?;
        let fiat = match &card {
            Some(card) => {
                self.snapshot.product_order = card.effective_product_order(&records);
                for c in &card.credit_type_conversions {
                    self.add_credit_type(&c.custom_credit_type);
                }
                let conversions = card.credit_type_conversions.iter();
                self.snapshot.credit_type_conversions =
                    conversions.filter_map(|c| c.core()).collect();
                card.fiat_credit_type.clone()
            }
            None => CreditTypeRef::usd(),
        };
        for r in &records {
            self.add_credit_type(&r.credit_type);
        }
        self.snapshot.rates = records.iter().filter_map(RateRecord::core).collect();
        for r in &records {
            if self.product_info.contains_key(&r.product_id) {
                continue;
            }
            let Some(doc) = st
                .stores
                .config
                .get_doc(env, kind::PRODUCT, &r.product_id)
                .await?
            else {
                continue;
            };
            let product: Product = decode::<Product>(&doc)?.with_current(now);
            if let Some(rated) = product.rated() {
                for (_, state) in &rated.versions {
                    self.load_metric(st, env, &state.metric_id).await?;
                }
                self.snapshot.products.push(rated);
            }
            if let Some(composite) = product.composite() {
                self.snapshot.composites.push(composite);
            }
            self.product_info.insert(product.id.clone(), product);
        }
        Ok(fiat)
    }

    fn add_credit_type(&mut self, c: &CreditTypeRef) {
        let id = CreditTypeId(c.id.clone());
        if self.snapshot.credit_type(&id).is_none() {
            self.snapshot.credit_types.push(CreditType {
                id,
                name: c.name.clone(),
            });
        }
    }

    async fn load_metric(&mut self, st: &AppState, env: Env, id: &str) -> BillingResult<()> {
        if self.snapshot.metrics.contains_key(id) {
            return Ok(());
        }
        if let Some(doc) = st.stores.config.get_doc(env, kind::METRIC, id).await? {
            let metric = decode::<Metric>(&doc)?;
            if let Some(sql) = &metric.sql {
                // Validated when the metric was created; a stored query that no longer compiles
                // is a rating error, never a silent zero.
                let query = SqlMetric::parse(sql)
                    .map_err(|e| BillingError::Rating(format!("billable metric {id}: {e}")))?;
                self.sql_metrics.insert(id.to_string(), query);
            }
            self.snapshot.metrics.insert(id.to_string(), metric.def());
        }
        Ok(())
    }

    /// The SQL billable metrics this contract's rate card prices (ids, sorted).
    pub fn sql_metric_ids(&self) -> Vec<&str> {
        self.sql_metrics.keys().map(String::as_str).collect()
    }

    /// Whether the contract's usage may draw on any commit or credit.
    pub fn has_balances(&self) -> bool {
        !self.snapshot.balances.balances.is_empty()
    }

    /// Prices one period with its balances' ledger as it stands before this invoice
    /// (`service::balances::Book` works that out across the customer's invoices).
    pub async fn rate_with_prior(
        &self,
        st: &AppState,
        env: Env,
        period: Period,
        prior_ledger: &BTreeMap<String, Decimal>,
    ) -> BillingResult<Invoice> {
        if !self.has_balances() {
            return self.rate(st, env, period).await;
        }
        let mut snapshot = self.snapshot.clone();
        snapshot.balances.prior_ledger = prior_ledger.clone();
        self.rate_snapshot(st, env, &snapshot, period).await
    }

    /// Prices one period from stored usage through core's entry point, with no prior ledger.
    pub async fn rate(&self, st: &AppState, env: Env, period: Period) -> BillingResult<Invoice> {
        self.rate_snapshot(st, env, &self.snapshot, period).await
    }

    async fn rate_snapshot(
        &self,
        st: &AppState,
        env: Env,
        snapshot: &PricingSnapshot,
        period: Period,
    ) -> BillingResult<Invoice> {
        let usage = self.stored_usage(st, env, snapshot, period).await?;
        price_invoice(snapshot, &usage, period).map_err(|e| BillingError::Rating(e.to_string()))
    }

    /// The stored usage a period's invoice prices: the fewest rollup rows that cover the period
    /// without crossing an instant where pricing splits it, days not yet rolled up read by the
    /// hour (pricing them equals pricing every hour, core's law), plus LATEST metrics'
    /// baselines, plus the SQL metrics' rows computed from the customer's stored events
    /// ([`sql_rows`]). Drafts and `merge` previews read usage only through here.
    pub async fn stored_usage(
        &self,
        st: &AppState,
        env: Env,
        snapshot: &PricingSnapshot,
        period: Period,
    ) -> BillingResult<Vec<UsageRow>> {
        let refs = self.customer.refs();
        let metrics = &self.snapshot.metrics;
        // SQL metrics have no hourly rows: they are computed from stored events (below).
        let ids: Vec<String> = metrics
            .keys()
            .filter(|id| !self.sql_metrics.contains_key(*id))
            .cloned()
            .collect();
        let cuts = rollup::cuts(snapshot, period);
        let usage_store = &st.stores.usage;
        let dirty = usage_store
            .dirty_days(env, &refs, &ids, period.start_ms, period.end_ms)
            .await?;
        let blocks = rollup::cover(period.start_ms, period.end_ms, &cuts, &dirty);
        let mut usage = usage_store.usage_blocks(env, &refs, &ids, &blocks).await?;
        let latest = self.snapshot.baseline_metric_ids();
        if !latest.is_empty() {
            // LATEST bills changes, so it needs the last value before the period: only the
            // most recent earlier row of each grain, whatever the contract's age.
            usage.extend(
                st.stores
                    .usage
                    .latest_rows_before(env, &refs, &latest, period.start_ms)
                    .await?,
            );
        }
        usage.extend(self.sql_usage(st, env, period, &cuts).await?);
        Ok(usage)
    }

    /// The usage rows of the snapshot's SQL metrics over `period`: see [`sql_rows`].
    async fn sql_usage(
        &self,
        st: &AppState,
        env: Env,
        period: Period,
        cuts: &[i64],
    ) -> BillingResult<Vec<UsageRow>> {
        if self.sql_metrics.is_empty() {
            return Ok(Vec::new());
        }
        let refs = self.customer.refs();
        let events = st
            .stores
            .usage
            .events_between(env, &refs, period.start_ms, period.end_ms)
            .await?;
        sql_rows(&self.sql_metrics, &events, period, cuts)
    }

    /// What invoices show of the card's products besides pricing (tags now, custom fields,
    /// whether COMPOSITE).
    pub fn product_views(&self) -> BTreeMap<String, ProductView> {
        self.product_info
            .iter()
            .map(|(id, p)| {
                let view = ProductView {
                    tags: p.current.tags.clone(),
                    custom_fields: p.custom_fields.clone(),
                    composite: p.product_type == ProductType::Composite,
                };
                (id.clone(), view)
            })
            .collect()
    }
}

/// SQL billable metrics as the usage rows core prices: the period is split at its `cuts` (where
/// pricing may split it: rates, overrides, product versions, balances' access, the contract's
/// end), each metric's query runs over the events of each window (`[from, to)`, by timestamp),
/// and each result group becomes one `Sum` row holding its value at the window's start (a
/// `NULL` value, e.g. a SUM of no number, is no row). Core then prices these rows as any other:
/// a window's rows are never merged with another window's unless a product's line spans both,
/// and then they add (exact for COUNT and SUM; for the others, the value of each window, summed).
pub fn sql_rows(
    metrics: &BTreeMap<String, SqlMetric>,
    events: &[Event],
    period: Period,
    cuts: &[i64],
) -> BillingResult<Vec<UsageRow>> {
    let mut bounds = vec![period.start_ms];
    bounds.extend(
        cuts.iter()
            .copied()
            .filter(|&c| period.start_ms < c && c < period.end_ms),
    );
    bounds.push(period.end_ms);
    let mut out = Vec::new();
    for w in bounds.windows(2) {
        let (from, to) = (w[0], w[1]);
        let inside: Vec<&Event> = events
            .iter()
            .filter(|e| from <= e.timestamp_ms && e.timestamp_ms < to)
            .collect();
        for (id, query) in metrics {
            let rows = query
                .evaluate(inside.iter().copied())
                .map_err(|e| BillingError::Usage(format!("billable metric {id}: {e}")))?;
            out.extend(rows.into_iter().filter_map(|r| {
                Some(UsageRow {
                    metric_id: id.clone(),
                    groups: r.groups,
                    hour_ms: from,
                    acc: Accumulator::Sum(r.value?),
                })
            }));
        }
    }
    Ok(out)
}

/// The API's JSON of an invoice already priced (by `service::balances::Book`).
pub fn render_priced(
    st: &AppState,
    contract: &Contract,
    row: &InvoiceRow,
    ctx: &RatingContext,
    mut priced: Invoice,
    skip_zero: bool,
) -> BillingResult<Value> {
    if skip_zero {
        priced = priced.without_zero_quantity_lines();
    }
    render(contract, row, &priced, ctx, st.settings.invoice_grace_ms)
}

pub async fn render_computed(
    st: &AppState,
    env: Env,
    contract: &Contract,
    row: &InvoiceRow,
    ctx: &RatingContext,
    skip_zero: bool,
) -> BillingResult<Value> {
    let period = Period {
        start_ms: row.period_start_ms,
        end_ms: row.period_end_ms,
    };
    let mut priced = match row.kind {
        InvoiceKind::Usage => ctx.rate(st, env, period).await?,
        InvoiceKind::Scheduled => {
            tally_core::pricing::price_scheduled(&ctx.snapshot, period.start_ms)
                .map_err(|e| BillingError::Rating(e.to_string()))?
        }
    };
    if skip_zero {
        priced = priced.without_zero_quantity_lines();
    }
    render(contract, row, &priced, ctx, st.settings.invoice_grace_ms)
}

/// The fields an invoice shows from its row, contract and customer (core's `InvoiceHeader`).
pub fn header(
    contract: &Contract,
    row: &InvoiceRow,
    ctx: &RatingContext,
    grace_ms: i64,
) -> InvoiceHeader {
    InvoiceHeader {
        id: row.id.clone(),
        customer_id: row.customer_id.clone(),
        contract_id: contract.id.clone(),
        status: row.status.as_str().to_string(),
        start_ms: row.period_start_ms,
        end_ms: row.period_end_ms,
        issued_at_ms: row.period_end_ms.saturating_add(grace_ms),
        contract_custom_fields: contract.custom_fields.clone(),
        customer_custom_fields: ctx.customer.custom_fields.clone(),
        net_payment_terms_days: contract.net_payment_terms_days.map(|d| d.0),
    }
}

/// The API's invoice JSON, made from core's typed invoice by core's one renderer
/// (`tally_core::invoice_json`, which previews use too).
fn render(
    contract: &Contract,
    row: &InvoiceRow,
    priced: &Invoice,
    ctx: &RatingContext,
    grace_ms: i64,
) -> BillingResult<Value> {
    let header = header(contract, row, ctx, grace_ms);
    let mut body = invoice_json::invoice(
        &header,
        priced,
        &ctx.product_views(),
        &ctx.snapshot.credit_types,
    )
    .map_err(|e| BillingError::Rating(e.to_string()))?;
    if let (Some(from), Some(map)) = (&row.regenerated_from, body.as_object_mut()) {
        map.insert(
            "regenerated_from_invoice_id".into(),
            Value::from(from.as_str()),
        );
    }
    Ok(body)
}

/// The invoice as the API shows it: drafts computed now, others from their frozen body.
/// `skip_zero` drops zero-quantity lines (`skip_zero_qty_line_items`): from the typed invoice for
/// a computed one; a frozen body is the API JSON rendered when it was frozen, its only record.
pub async fn invoice_json(
    st: &AppState,
    env: Env,
    contract: &Contract,
    row: &InvoiceRow,
    skip_zero: bool,
) -> BillingResult<Value> {
    let mut body = match (&row.status, &row.body) {
        (InvoiceStatus::Draft, _) | (_, None) => {
            let ctx = RatingContext::load(st, env, contract).await?;
            render_computed(st, env, contract, row, &ctx, skip_zero).await?
        }
        (_, Some(text)) => {
            let mut frozen: Value = serde_json::from_str(text)
                .map_err(|e| StoreError::Corrupt(format!("invoice {}: {e}", row.id)))?;
            // Bodies frozen before unset terms were left out carry `null` here; show them the
            // same way as new ones.
            if let Some(map) = frozen.as_object_mut() {
                if map.get("net_payment_terms_days") == Some(&Value::Null) {
                    map.remove("net_payment_terms_days");
                }
            }
            if skip_zero {
                skip_zero_frozen_lines(&mut frozen);
            }
            frozen
        }
    };
    body["status"] = json!(row.status.as_str());
    Ok(body)
}

/// Drops zero-quantity lines from a frozen body.
fn skip_zero_frozen_lines(invoice: &mut Value) {
    if let Some(lines) = invoice.get_mut("line_items").and_then(Value::as_array_mut) {
        lines.retain(|l| {
            let q = l.get("quantity").map(|q| q.to_string());
            q.as_deref()
                .and_then(|t| t.parse::<Decimal>().ok())
                .is_none_or(|d| !d.is_zero())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_core::time::parse_rfc3339_ms as ms;

    fn ev(tx: &str, at: &str, user: &str) -> Event {
        Event {
            transaction_id: tx.into(),
            customer_id: "c".into(),
            event_type: "call".into(),
            timestamp_ms: ms(at).unwrap(),
            properties: [("user".to_string(), user.to_string())].into(),
        }
    }

    /// Each window between cuts is its own evaluation, its rows at the window's start; the
    /// period's first and last milliseconds are in, the end is out.
    #[test]
    fn sql_rows_split_at_cuts() {
        let metrics: BTreeMap<String, SqlMetric> = [
            (
                "distinct".to_string(),
                SqlMetric::parse("SELECT COUNT(DISTINCT properties.user) AS value FROM events")
                    .unwrap(),
            ),
            (
                "sum".to_string(),
                SqlMetric::parse("SELECT SUM(properties.user) AS value FROM events").unwrap(),
            ),
        ]
        .into();
        let period = Period {
            start_ms: ms("2024-10-01T00:00:00Z").unwrap(),
            end_ms: ms("2024-11-01T00:00:00Z").unwrap(),
        };
        let cut = ms("2024-10-16T00:00:00Z").unwrap();
        let events = [
            ev("1", "2024-10-01T00:00:00Z", "1"),
            ev("2", "2024-10-15T23:59:59.999Z", "1"),
            ev("3", "2024-10-16T00:00:00Z", "1"),
            ev("4", "2024-10-31T23:59:59.999Z", "2"),
            ev("5", "2024-11-01T00:00:00Z", "3"),
            ev("6", "2024-09-30T23:59:59.999Z", "4"),
        ];
        let rows = sql_rows(
            &metrics,
            &events,
            period,
            &[period.start_ms, cut, period.end_ms],
        )
        .unwrap();
        let got: Vec<(&str, i64, Decimal)> = rows
            .iter()
            .map(|r| (r.metric_id.as_str(), r.hour_ms, r.acc.quantity()))
            .collect();
        assert_eq!(
            got,
            [
                ("distinct", period.start_ms, Decimal::from(1)),
                ("sum", period.start_ms, Decimal::from(2)),
                ("distinct", cut, Decimal::from(2)),
                ("sum", cut, Decimal::from(3)),
            ]
        );
        // A NULL value (SUM of nothing) is no row; COUNT of nothing is a zero row.
        let rows = sql_rows(&metrics, &[], period, &[]).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].metric_id, "distinct");
        assert_eq!(rows[0].acc, Accumulator::Sum(Decimal::ZERO));
    }
}
