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
use tally_core::metric::{Aggregation, MetricDef};
use tally_core::period::Period;
use tally_core::rating::{rate_period, Line, RatedInvoice, RatedProduct, RatingInput};

use crate::error::{ApiError, ApiResult};
use crate::model::{decode, kind, Contract, CreditTypeRef, Customer, Metric, Product, RateRecord};
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

/// Every period of the contract that has begun by `now_ms` and is invoiced.
pub fn begun_periods(contract: &Contract, now_ms: i64) -> Vec<Period> {
    let schedule = contract.schedule();
    let end = contract.ending_before.map(|t| t.0);
    let mut periods = schedule.periods(contract.starting_at.0, end, now_ms.saturating_add(1));
    if let Some(from) = contract
        .usage_statement_schedule
        .invoice_generation_starting_at
    {
        periods.retain(|p| p.end_ms > from.0);
    }
    periods
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

/// What rating needs from configuration, loaded once per contract.
pub struct RatingContext {
    customer: Customer,
    rates: Vec<tally_core::rating::Rate>,
    products: Vec<RatedProduct>,
    product_info: BTreeMap<String, Product>,
    metrics: BTreeMap<String, MetricDef>,
    credit_type: CreditTypeRef,
}

impl RatingContext {
    pub async fn load(st: &AppState, env: Env, contract: &Contract) -> ApiResult<RatingContext> {
        let now = st.now_ms();
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
            rates: Vec::new(),
            products: Vec::new(),
            product_info: BTreeMap::new(),
            metrics: BTreeMap::new(),
            credit_type: CreditTypeRef::usd(),
        };
        let Some(card_id) = &contract.rate_card_id else {
            return Ok(ctx);
        };
        let docs = st
            .stores
            .config
            .list_docs(env, kind::RATE, Some(card_id), ArchiveFilter::All, None)
            .await?;
        let records: Vec<RateRecord> = docs.iter().map(decode).collect::<ApiResult<_>>()?;
        ctx.rates = records.iter().filter_map(RateRecord::core).collect();
        // Line order = the order products were first given a rate on the card.
        for r in &records {
            if ctx.product_info.contains_key(&r.product_id) {
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
            if let Some(rated) = product.rated(now) {
                for (_, state) in &rated.versions {
                    ctx.load_metric(st, env, &state.metric_id).await?;
                }
                ctx.products.push(rated);
            }
            ctx.product_info.insert(product.id.clone(), product);
        }
        Ok(ctx)
    }

    async fn load_metric(&mut self, st: &AppState, env: Env, id: &str) -> ApiResult<()> {
        if self.metrics.contains_key(id) {
            return Ok(());
        }
        if let Some(doc) = st.stores.config.get_doc(env, kind::METRIC, id).await? {
            self.metrics
                .insert(id.to_string(), decode::<Metric>(&doc)?.def());
        }
        Ok(())
    }

    /// Rates one period from stored usage.
    pub async fn rate(&self, st: &AppState, env: Env, period: Period) -> ApiResult<RatedInvoice> {
        let refs = self.customer.refs();
        let ids: Vec<String> = self.metrics.keys().cloned().collect();
        let mut usage = st
            .stores
            .usage
            .usage_rows(env, &refs, &ids, period.start_ms, period.end_ms)
            .await?;
        let latest: Vec<String> = self
            .metrics
            .values()
            .filter(|m| m.aggregation == Aggregation::Latest)
            .map(|m| m.id.clone())
            .collect();
        if !latest.is_empty() {
            // LATEST bills changes, so it needs the last value before the period.
            usage.extend(
                st.stores
                    .usage
                    .usage_rows(env, &refs, &latest, i64::MIN, period.start_ms)
                    .await?,
            );
        }
        let input = RatingInput {
            period,
            products: &self.products,
            metrics: &self.metrics,
            rates: &self.rates,
            usage: &usage,
        };
        rate_period(&input).map_err(ApiError::internal)
    }
}

async fn render_computed(
    st: &AppState,
    env: Env,
    contract: &Contract,
    row: &InvoiceRow,
    ctx: &RatingContext,
) -> ApiResult<Value> {
    let period = Period {
        start_ms: row.period_start_ms,
        end_ms: row.period_end_ms,
    };
    let rated = ctx.rate(st, env, period).await?;
    Ok(render(
        contract,
        row,
        &rated,
        ctx,
        st.settings.invoice_grace_ms,
    ))
}

fn render(
    contract: &Contract,
    row: &InvoiceRow,
    rated: &RatedInvoice,
    ctx: &RatingContext,
    grace_ms: i64,
) -> Value {
    let lines: Vec<Value> = rated.lines.iter().map(|l| line_json(l, ctx)).collect();
    let mut invoice = json!({
        "id": row.id,
        "customer_id": row.customer_id,
        "contract_id": contract.id,
        "type": "USAGE",
        "status": row.status.as_str(),
        "start_timestamp": Time(row.period_start_ms),
        "end_timestamp": Time(row.period_end_ms),
        "issued_at": Time(row.period_end_ms.saturating_add(grace_ms)),
        "credit_type": ctx.credit_type,
        "line_items": lines,
        "subtotal": Dec(rated.subtotal),
        "total": Dec(rated.total),
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
    invoice
}

fn line_json(l: &Line, ctx: &RatingContext) -> Value {
    let product = ctx.product_info.get(&l.product_id);
    let mut v = json!({
        "name": l.name,
        "type": "usage",
        "product_id": l.product_id,
        "product_type": "UsageProductListItem",
        "product_tags": product.map(|p| p.current.tags.clone()).unwrap_or_default(),
        "product_custom_fields": product.map(|p| p.custom_fields.clone()).unwrap_or_default(),
        "quantity": Dec(l.quantity),
        "unit_price": Dec(l.unit_price),
        "total": Dec(l.total),
        "credit_type": ctx.credit_type,
        "starting_at": Time(l.starting_at_ms),
        "ending_before": Time(l.ending_before_ms),
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
    v
}

/// The invoice as the API shows it: drafts computed now, others from their frozen body.
pub async fn invoice_json(
    st: &AppState,
    env: Env,
    contract: &Contract,
    row: &InvoiceRow,
) -> ApiResult<Value> {
    let mut body = match (&row.status, &row.body) {
        (InvoiceStatus::Draft, _) | (_, None) => {
            let ctx = RatingContext::load(st, env, contract).await?;
            render_computed(st, env, contract, row, &ctx).await?
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
            frozen
        }
    };
    body["status"] = json!(row.status.as_str());
    Ok(body)
}

/// Drops zero-quantity lines (the `skip_zero_qty_line_items` option).
pub fn skip_zero_lines(invoice: &mut Value) {
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
    let mut body = invoice_json(st, env, &contract, &row).await?;
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
    // The retention both central and the edge keep (`tally_core::ingest::DEDUPE_RETENTION_MS`).
    let cutoff = st
        .now_ms()
        .saturating_sub(tally_core::ingest::DEDUPE_RETENTION_MS);
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
