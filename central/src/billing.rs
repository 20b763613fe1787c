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
use tally_core::invoice::{Invoice, InvoiceKind};
use tally_core::invoice_json::{self, InvoiceHeader, ProductView};
use tally_core::money::{CreditType, CreditTypeId};
use tally_core::period::Period;
use tally_core::pricing::{price_invoice, PricingSnapshot};
use tally_core::rating::UsageRow;
use tally_core::rollup;

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
            self.snapshot
                .metrics
                .insert(id.to_string(), decode::<Metric>(&doc)?.def());
        }
        Ok(())
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
    /// baselines. Drafts and
    /// `merge` previews read usage only through here.
    pub async fn stored_usage(
        &self,
        st: &AppState,
        env: Env,
        snapshot: &PricingSnapshot,
        period: Period,
    ) -> BillingResult<Vec<UsageRow>> {
        let refs = self.customer.refs();
        let metrics = &self.snapshot.metrics;
        let ids: Vec<String> = metrics.keys().cloned().collect();
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
        Ok(usage)
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
