//! Invoices: which periods a contract has, computing a period's invoice from stored usage with
//! `tally_core::rating`, and the lifecycle DRAFT → FINALIZED (after the grace period) or VOID.
//!
//! Invariants:
//! - One invoice row per begun contract period, with a deterministic id, created idempotently.
//! - A DRAFT has no stored body: it is computed on read from hourly usage, so its cost is
//!   O(hours × groups) rows, independent of the number of events.
//! - Finalization freezes the computed body; a FINALIZED or VOID invoice is never recomputed.
//! - A period past `end + grace` is finalized before it is ever shown, whether the background
//!   job or a read gets there first.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde_json::{json, Value};
use tally_core::invoice::{Invoice, InvoiceLine, LineKind};
use tally_core::money::{CreditType, CreditTypeId};
use tally_core::period::Period;
use tally_core::pricing::{price_invoice, PricingSnapshot};

use crate::error::{ApiError, ApiResult};
use crate::model::{
    decode, kind, Contract, CreditTypeRef, Customer, Metric, Product, RateCard, RateRecord,
};
use crate::store::{ArchiveFilter, Env, InvoiceRow, InvoiceStatus};
use crate::wire::{set_opt, Dec, Time};
use crate::AppState;

/// Namespace of invoice ids: `uuid5(NS, "{env}/{contract}/{period start}")`.
const INVOICE_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x5e1f_7a11_7a11_4c0d_9b1e_1a77_c0de_0001);

pub fn invoice_id(env: Env, contract_id: &str, period_start_ms: i64) -> String {
    let name = format!("{}/{contract_id}/{period_start_ms}", env.as_str());
    uuid::Uuid::new_v5(&INVOICE_NAMESPACE, name.as_bytes()).to_string()
}

/// Every period of the contract that is invoiced at `now_ms` (core decides which).
pub fn begun_periods(contract: &Contract, now_ms: i64) -> Vec<Period> {
    contract.snapshot().invoiced_periods(now_ms)
}

/// Ensures the contract's rows exist, finalizes the due ones, and returns all rows in period order.
pub async fn sync_contract(
    st: &AppState,
    env: Env,
    contract: &Contract,
) -> ApiResult<Vec<InvoiceRow>> {
    let now = st.now_ms();
    let mut rows = st
        .stores
        .invoices
        .invoices_for_contract(env, &contract.id)
        .await?;
    if contract.archived_at.is_none() {
        let missing: Vec<InvoiceRow> = begun_periods(contract, now)
            .into_iter()
            .filter(|p| !rows.iter().any(|r| r.period_start_ms == p.start_ms))
            .map(|p| InvoiceRow {
                id: invoice_id(env, &contract.id, p.start_ms),
                contract_id: contract.id.clone(),
                customer_id: contract.customer_id.clone(),
                period_start_ms: p.start_ms,
                period_end_ms: p.end_ms,
                status: InvoiceStatus::Draft,
                body: None,
            })
            .collect();
        if !missing.is_empty() {
            st.stores.invoices.ensure_invoices(env, &missing).await?;
            rows = st
                .stores
                .invoices
                .invoices_for_contract(env, &contract.id)
                .await?;
        }
    }
    let grace = st.settings.invoice_grace_ms;
    let mut ctx = None;
    for row in rows.iter_mut() {
        if row.status != InvoiceStatus::Draft || row.period_end_ms.saturating_add(grace) > now {
            continue;
        }
        if ctx.is_none() {
            ctx = Some(RatingContext::load(st, env, contract).await?);
        }
        let body = render_computed(
            st,
            env,
            contract,
            row,
            ctx.as_ref().unwrap_or_else(|| unreachable!()),
            false,
        )
        .await?;
        let text = serde_json::to_string(&body).map_err(ApiError::internal)?;
        // Conditional: if another worker got there first, re-read its frozen body.
        if !st
            .stores
            .invoices
            .transition_invoice(
                env,
                &row.id,
                InvoiceStatus::Draft,
                InvoiceStatus::Finalized,
                &text,
            )
            .await?
        {
            if let Some(fresh) = st.stores.invoices.invoice(env, &row.id).await? {
                *row = fresh;
            }
            continue;
        }
        tracing::info!(env = env.as_str(), invoice = %row.id, "invoice finalized");
        row.status = InvoiceStatus::Finalized;
        row.body = Some(text);
    }
    Ok(rows)
}

/// What pricing needs, loaded once per contract: core's snapshot plus what only the API's JSON
/// shows (the customer and the products' documents).
pub struct RatingContext {
    customer: Customer,
    snapshot: PricingSnapshot,
    product_info: BTreeMap<String, Product>,
}

impl RatingContext {
    pub async fn load(st: &AppState, env: Env, contract: &Contract) -> ApiResult<RatingContext> {
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
                rates: Vec::new(),
                contract: contract.snapshot(),
            },
            product_info: BTreeMap::new(),
        };
        let fiat = match &contract.rate_card_id {
            Some(card_id) => ctx.load_rate_card(st, env, card_id).await?,
            None => CreditTypeRef::usd(),
        };
        ctx.add_credit_type(&fiat);
        ctx.snapshot.fiat_credit_type = CreditTypeId(fiat.id);
        Ok(ctx)
    }

    /// Loads the card's rates, products (line order = the order products were first given a
    /// rate on the card) and metrics; returns the card's fiat credit type.
    async fn load_rate_card(
        &mut self,
        st: &AppState,
        env: Env,
        card_id: &str,
    ) -> ApiResult<CreditTypeRef> {
        let now = st.now_ms();
        let card = st
            .stores
            .config
            .get_doc(env, kind::RATE_CARD, card_id)
            .await?;
        let fiat = match card {
            Some(doc) => decode::<RateCard>(&doc)?.fiat_credit_type,
            None => CreditTypeRef::usd(),
        };
        let docs = st
            .stores
            .config
            .list_docs(env, kind::RATE, Some(card_id), ArchiveFilter::All, None)
            .await?;
        let records: Vec<RateRecord> = docs.iter().map(decode).collect::<ApiResult<_>>()?;
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

    async fn load_metric(&mut self, st: &AppState, env: Env, id: &str) -> ApiResult<()> {
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

    /// Prices one period from stored usage through core's entry point.
    pub async fn rate(&self, st: &AppState, env: Env, period: Period) -> ApiResult<Invoice> {
        let refs = self.customer.refs();
        let metrics = &self.snapshot.metrics;
        let ids: Vec<String> = metrics.keys().cloned().collect();
        let mut usage = st
            .stores
            .usage
            .usage_rows(env, &refs, &ids, period.start_ms, period.end_ms)
            .await?;
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
        price_invoice(&self.snapshot, &usage, period).map_err(ApiError::internal)
    }

    /// A credit type as the API shows it (`{id, name}`).
    fn credit_type_json(&self, id: &CreditTypeId) -> ApiResult<Value> {
        let c = self.snapshot.credit_type(id).ok_or_else(|| {
            ApiError::internal(format!(
                "credit type {} is not in the snapshot",
                id.as_str()
            ))
        })?;
        serde_json::to_value(c).map_err(ApiError::internal)
    }
}

async fn render_computed(
    st: &AppState,
    env: Env,
    contract: &Contract,
    row: &InvoiceRow,
    ctx: &RatingContext,
    skip_zero: bool,
) -> ApiResult<Value> {
    let period = Period {
        start_ms: row.period_start_ms,
        end_ms: row.period_end_ms,
    };
    let mut priced = ctx.rate(st, env, period).await?;
    if skip_zero {
        priced = priced.without_zero_quantity_lines();
    }
    render(contract, row, &priced, ctx, st.settings.invoice_grace_ms)
}

/// The API's invoice JSON, made from core's typed invoice: the one place it is shaped.
fn render(
    contract: &Contract,
    row: &InvoiceRow,
    priced: &Invoice,
    ctx: &RatingContext,
    grace_ms: i64,
) -> ApiResult<Value> {
    let lines = priced
        .lines
        .iter()
        .map(|l| line_json(l, ctx))
        .collect::<ApiResult<Vec<Value>>>()?;
    let mut invoice = json!({
        "id": row.id,
        "customer_id": row.customer_id,
        "contract_id": contract.id,
        "type": "USAGE",
        "status": row.status.as_str(),
        "start_timestamp": Time(row.period_start_ms),
        "end_timestamp": Time(row.period_end_ms),
        "issued_at": Time(row.period_end_ms.saturating_add(grace_ms)),
        "credit_type": ctx.credit_type_json(&priced.credit_type)?,
        "line_items": lines,
        "subtotal": Dec(priced.subtotal.get(&priced.credit_type)),
        "total": Dec(priced.total.get(&priced.credit_type)),
        "contract_custom_fields": contract.custom_fields,
        "customer_custom_fields": ctx.customer.custom_fields,
        "custom_fields": {},
    });
    // Optional and non-nullable in the document: left out when the contract sets no terms.
    set_opt(
        &mut invoice,
        "net_payment_terms_days",
        contract.net_payment_terms_days,
    );
    Ok(invoice)
}

/// The wire names of a line's kind: its `type` and `product_type`.
fn kind_names(kind: LineKind) -> (&'static str, &'static str) {
    match kind {
        LineKind::Usage => ("usage", "UsageProductListItem"),
        LineKind::Scheduled => ("scheduled", "FixedProductListItem"),
        LineKind::Subscription => ("subscription", "SubscriptionProductListItem"),
        LineKind::CommitPurchase => ("commit_purchase", "FixedProductListItem"),
        LineKind::AppliedCommit => ("applied_commit", "FixedProductListItem"),
        LineKind::AppliedCredit => ("applied_credit", "FixedProductListItem"),
        LineKind::TrueUp => ("true_up", "FixedProductListItem"),
    }
}

fn line_json(l: &InvoiceLine, ctx: &RatingContext) -> ApiResult<Value> {
    let product = ctx.product_info.get(&l.product_id);
    let (line_type, product_type) = kind_names(l.kind);
    let mut v = json!({
        "name": l.name,
        "type": line_type,
        "product_id": l.product_id,
        "product_type": product_type,
        "product_tags": product.map(|p| p.current.tags.clone()).unwrap_or_default(),
        "product_custom_fields": product.map(|p| p.custom_fields.clone()).unwrap_or_default(),
        "quantity": Dec(l.quantity),
        "unit_price": Dec(l.unit_price.value),
        "total": Dec(l.total.value),
        "credit_type": ctx.credit_type_json(&l.total.credit_type)?,
        "starting_at": Time(l.segment.start_ms),
        "ending_before": Time(l.segment.end_ms),
    });
    if let Some(p) = &l.pricing_group_values {
        v["pricing_group_values"] = json!(p);
    }
    if let Some(p) = &l.presentation_group_values {
        v["presentation_group_values"] = json!(p);
    }
    if let Some(t) = &l.tier {
        v["tier"] = json!({
            "level": t.level,
            "starting_at": t.starting_at.normalize().to_string(),
            "size": t.size.map(|s| s.normalize().to_string()),
        });
    }
    Ok(v)
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
) -> ApiResult<Value> {
    let mut body = match (&row.status, &row.body) {
        (InvoiceStatus::Draft, _) | (_, None) => {
            let ctx = RatingContext::load(st, env, contract).await?;
            render_computed(st, env, contract, row, &ctx, skip_zero).await?
        }
        (_, Some(text)) => {
            let mut frozen: Value = serde_json::from_str(text).map_err(ApiError::internal)?;
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

/// Voids an invoice: a draft is frozen as computed now; a finalized one keeps its body.
pub async fn void_invoice(st: &AppState, env: Env, id: &str) -> ApiResult<()> {
    let row = st
        .stores
        .invoices
        .invoice(env, id)
        .await?
        .ok_or_else(|| ApiError::not_found("invoice"))?;
    let contract: Contract = crate::model::load(
        &st.stores,
        env,
        kind::CONTRACT,
        &row.contract_id,
        "contract",
    )
    .await?;
    // Finalize first if due, so a void never freezes a draft that should have been final.
    let rows = sync_contract(st, env, &contract).await?;
    let row = rows.into_iter().find(|r| r.id == id).unwrap_or(row);
    if row.status == InvoiceStatus::Void {
        return Ok(());
    }
    let mut body = invoice_json(st, env, &contract, &row, false).await?;
    body["status"] = json!(InvoiceStatus::Void.as_str());
    let text = serde_json::to_string(&body).map_err(ApiError::internal)?;
    if !st
        .stores
        .invoices
        .transition_invoice(env, id, row.status, InvoiceStatus::Void, &text)
        .await?
    {
        return Err(ApiError::conflict(
            "the invoice changed while voiding it; retry",
        ));
    }
    Ok(())
}

/// One pass of the background work under the job lock: finalize due invoices everywhere, prune
/// old dedupe keys. Returns false (and does nothing) when another replica holds the lock.
pub async fn run_jobs_once(st: &AppState) -> ApiResult<bool> {
    let Some(guard) = st.stores.jobs.try_job_lock().await? else {
        return Ok(false);
    };
    let result = run_jobs_locked(st).await;
    // A failed release is logged only: the guard's connection was closed, which frees the lock.
    if let Err(e) = guard.release().await {
        tracing::warn!(error = %e, "releasing the job lock failed");
    }
    result.map(|()| true)
}

/// The pass itself. Every step is idempotent or conditional, so a replica killed mid-pass leaves
/// each invoice either DRAFT or completely FINALIZED, and the next pass carries on.
async fn run_jobs_locked(st: &AppState) -> ApiResult<()> {
    for env in Env::ALL {
        let docs = st
            .stores
            .config
            .list_docs(env, kind::CONTRACT, None, ArchiveFilter::Active, None)
            .await?;
        for doc in docs {
            let contract: Contract = decode(&doc)?;
            sync_contract(st, env, &contract).await?;
        }
    }
    // Keys are kept 35 days: the 34-day backdating window plus a day of margin.
    let cutoff = st.now_ms().saturating_sub(35 * tally_core::time::DAY_MS);
    st.stores.usage.prune_dedupe(cutoff).await?;
    Ok(())
}

/// Runs [`run_jobs_once`] forever at the configured interval.
pub async fn run_jobs(st: AppState) {
    let mut tick = tokio::time::interval(st.settings.job_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match run_jobs_once(&st).await {
            Ok(true) => {}
            Ok(false) => tracing::debug!("another replica holds the job lock; skipping this pass"),
            Err(e) => {
                tracing::warn!(status = %e.status, message = %e.message, "background jobs failed; will retry");
            }
        }
    }
}
