//! Cost previews: `previewEvents` and the pricing snapshot the browser preview page prices with.
//! Both are built here from what draft invoices read, and priced by core
//! (`tally_core::preview`), so the server's and the browser's previews are the same bytes.
//!
//! Invariants:
//! - Reads only: nothing a preview is given or computes is stored.
//! - A customer with a contract (with open drafts) whose rate card prices an SQL billable
//!   metric gets a 400, as in Metronome: an SQL metric is computed from stored events, which a
//!   preview (and the browser) does not have.
//! - A snapshot holds, per contract of the customer with an open draft usage period, its
//!   pricing snapshot, what its invoices show of products, and each open draft period with its
//!   balances' prior ledger (as the customer's `balances::Book` prices drafts) and, when asked,
//!   its stored usage read through `RatingContext::stored_usage`, the rollup cover reads drafts
//!   use (no other scan).

use std::collections::BTreeMap;

use serde_json::Value;
use tally_core::period::Period;
use tally_core::preview::{
    self, ContractPreview, Mode, PreviewError, PreviewPeriod, PreviewSnapshot,
};

use super::balances::Book;
use super::invoices::{contract_invoices, InvoiceError};
use super::Invalid;
use crate::billing::{header, RatingContext};
use crate::model::{kind, load, load_children, Contract, Customer};
use crate::store::{Env, InvoiceKind, InvoiceStatus};
use crate::AppState;

type Result<T> = std::result::Result<T, InvoiceError>;

/// The customer's preview snapshot; `with_usage` adds each open draft period's stored usage
/// (what `merge` adds the request's events to).
pub async fn snapshot(
    st: &AppState,
    env: Env,
    customer_id: &str,
    with_usage: bool,
) -> Result<PreviewSnapshot> {
    let _: Customer = load(&st.stores, env, kind::CUSTOMER, customer_id, "customer").await?;
    let contracts: Vec<Contract> =
        load_children(&st.stores, env, kind::CONTRACT, customer_id).await?;
    let grace = st.settings.invoice_grace_ms;
    let mut book: Option<Book> = None;
    let mut out = Vec::new();
    for contract in contracts {
        let drafts: Vec<_> = contract_invoices(st, env, &contract)
            .await?
            .into_iter()
            .filter(|r| r.status == InvoiceStatus::Draft && r.kind == InvoiceKind::Usage)
            .collect();
        if drafts.is_empty() {
            continue;
        }
        let ctx = RatingContext::load(st, env, &contract).await?;
        if let Some(id) = ctx.sql_metric_ids().first() {
            // As Metronome: previews price hourly usage, which an SQL metric does not have.
            return Err(InvoiceError::Invalid(Invalid(format!(
                "previews do not support SQL billable metrics: contract {} prices SQL billable metric {id}",
                contract.id
            ))));
        }
        if ctx.has_balances() && book.is_none() {
            book = Some(Book::load(st, env, customer_id).await?);
        }
        let mut periods = Vec::with_capacity(drafts.len());
        for row in &drafts {
            let prior_ledger = match (&book, ctx.has_balances()) {
                (Some(book), true) => match book.draft(&row.id) {
                    Some((draft, _)) => draft.prior.clone(),
                    None => book.stored_net(),
                },
                _ => BTreeMap::new(),
            };
            let period = Period {
                start_ms: row.period_start_ms,
                end_ms: row.period_end_ms,
            };
            let usage = match with_usage {
                true => ctx.stored_usage(st, env, ctx.snapshot(), period).await?,
                false => Vec::new(),
            };
            periods.push(PreviewPeriod {
                header: header(&contract, row, &ctx, grace),
                prior_ledger,
                usage,
            });
        }
        out.push(ContractPreview {
            pricing: ctx.snapshot().clone(),
            products: ctx.product_views(),
            periods,
        });
    }
    Ok(PreviewSnapshot {
        customer_id: customer_id.to_string(),
        contracts: out,
    })
}

/// `POST /v1/customers/{id}/previewEvents`: the customer's draft invoices as they would be with
/// `body`'s events (`replace`: only them; `merge`: added to stored usage), stored nowhere. In
/// `merge`, an event whose `transaction_id` was already ingested (a claimed dedupe key, so
/// within the dedupe window) is already in the stored usage and is left out, as ingest would
/// leave it out; events sent without a transaction id are always new.
pub async fn preview_events(
    st: &AppState,
    env: Env,
    customer_id: &str,
    body: &Value,
) -> Result<Value> {
    let mut req = preview::parse_request(body, customer_id, st.now_ms()).map_err(preview_error)?;
    if req.mode == Mode::Merge {
        let given: Vec<String> = body["events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e.get("transaction_id")?.as_str().map(str::to_string))
            .collect();
        let claimed: std::collections::BTreeSet<String> = st
            .stores
            .usage
            .claimed_transactions(env, &given)
            .await?
            .into_iter()
            .collect();
        req.events.retain(|e| !claimed.contains(&e.transaction_id));
    }
    let snapshot = snapshot(st, env, customer_id, req.mode == Mode::Merge).await?;
    preview::preview(&snapshot, &req).map_err(preview_error)
}

fn preview_error(e: PreviewError) -> InvoiceError {
    match e {
        PreviewError::Invalid(m) => InvoiceError::Invalid(Invalid(m)),
        // The hypothetical usage is the request's: what pricing refuses of it (an amount past
        // the exact decimal range) is a bad request.
        PreviewError::Rating(m) => {
            InvoiceError::Invalid(Invalid(format!("the events cannot be priced: {m}")))
        }
    }
}
