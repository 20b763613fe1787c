//! Invoices: listing and reading a customer's invoices, voiding one, and finalizing due periods.
//!
//! Invariants:
//! - Reads never write. A begun period without a stored row is shown as a DRAFT computed on
//!   read; its id is deterministic (`billing::invoice_id`), so it is the id the row gets later.
//! - Only writes finalize: the background job (`service::jobs`) and a void (which finalizes a
//!   due draft before voiding it). A period past `end + grace` that neither has reached yet
//!   reads as DRAFT. Contract creation does not finalize: tests, fixtures and clients create a
//!   contract with a past start and then send its backdated usage, which must still count.
//! - Finalization and voiding go through one `UnitOfWork` and are conditional on the stored
//!   status, so concurrent finalizers (replicas, a void racing the job) agree on one body.
//! - FINALIZED and VOID invoices are shown from their frozen body, never recomputed.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use serde_json::{json, Value};
use tally_core::balances::purchases_of;
use tally_core::charges::scheduled_instants;
use tally_core::period::Period;

use super::balances::{self, Book};
use super::{commits, Invalid};
use crate::billing::{
    begun_periods, invoice_id, invoice_json, render_computed, render_priced, scheduled_invoice_id,
    BillingError, RatingContext,
};
use crate::model::{decode, kind, load, Contract, Customer, LoadError, USD_ID};
use crate::store::{
    ArchiveFilter, Env, InvoiceKind, InvoiceRow, InvoiceStatus, LedgerRow, NewOutboxMessage,
    NewStripePush, PageReq, StoreError,
};
use crate::{AppState, Clock};

#[derive(Debug, thiserror::Error)]
pub enum InvoiceError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// The invoice changed status while this request was changing it.
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Billing(#[from] BillingError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<LoadError> for InvoiceError {
    fn from(e: LoadError) -> Self {
        match e {
            LoadError::NotFound(what) => InvoiceError::NotFound(what),
            LoadError::Store(e) => InvoiceError::Store(e),
        }
    }
}

type Result<T> = std::result::Result<T, InvoiceError>;

fn draft_row(env: Env, contract: &Contract, start_ms: i64, end_ms: i64) -> InvoiceRow {
    InvoiceRow {
        id: invoice_id(env, &contract.id, start_ms),
        kind: InvoiceKind::Usage,
        contract_id: contract.id.clone(),
        customer_id: contract.customer_id.clone(),
        period_start_ms: start_ms,
        period_end_ms: end_ms,
        status: InvoiceStatus::Draft,
        body: None,
        revision: 0,
        regenerated_from: None,
    }
}

/// The contract's stored invoice rows, and a DRAFT row (not stored) for every begun period and
/// every reached instant of its scheduled invoices that has none yet. Reads only. Periods are as
/// the contract bills them now: a draft stored before the contract was archived ends at its
/// effective end (core's `billed_part`), so it is rated up to it and finalizes after its grace
/// from there. A draft stored before the contract's end date was changed takes its period as it
/// is now: a period starting at or after the new end has no invoice (its stored draft is not
/// shown), and one the new end cuts or extends is rated to its new end. Finalized and voided
/// invoices never change.
pub async fn stored_and_missing(
    st: &AppState,
    env: Env,
    contract: &Contract,
) -> std::result::Result<(Vec<InvoiceRow>, Vec<InvoiceRow>), StoreError> {
    let snapshot = contract.snapshot();
    let periods = begun_periods(contract, st.now_ms());
    let mut stored = st
        .stores
        .invoices
        .invoices_for_contract(env, &contract.id)
        .await?;
    let end = snapshot.effective_end_ms();
    stored.retain(|row| {
        let before_end = |end: i64| match row.kind {
            // At the end itself only a subscription's arrears can be scheduled.
            InvoiceKind::Scheduled => row.period_start_ms <= end,
            InvoiceKind::Usage => row.period_start_ms < end,
        };
        row.status != InvoiceStatus::Draft || end.is_none_or(before_end)
    });
    for row in stored.iter_mut().filter(|r| r.kind == InvoiceKind::Usage) {
        let now_period = periods.iter().find(|p| p.start_ms == row.period_start_ms);
        row.period_end_ms = match (row.status, now_period) {
            (InvoiceStatus::Draft, Some(period)) => period.end_ms,
            _ => {
                let billed = snapshot.billed_part(Period {
                    start_ms: row.period_start_ms,
                    end_ms: row.period_end_ms,
                });
                billed.end_ms
            }
        };
    }
    let now = st.now_ms();
    let mut missing: Vec<InvoiceRow> = periods
        .into_iter()
        .filter(|p| {
            !stored
                .iter()
                .any(|r| r.kind == InvoiceKind::Usage && r.period_start_ms == p.start_ms)
        })
        .map(|p| draft_row(env, contract, p.start_ms, p.end_ms))
        .collect();
    let balances = commits::applicable_balances(st, env, contract).await?;
    let end = end.unwrap_or(i64::MAX);
    let purchases = purchases_of(&balances, &contract.id).map(|(_, item)| item.timestamp_ms);
    let mut instants = scheduled_instants(&snapshot, &contract.core_charges(), purchases);
    instants.retain(|at| *at < end);
    // A subscription charged in arrears bills its last period at the contract's end.
    instants.extend(
        tally_core::subscriptions::scheduled_instants(
            &snapshot,
            &contract.core_subscriptions()?,
            contract.starting_at.0,
            now,
        )
        .into_iter()
        .filter(|at| *at <= end),
    );
    instants.sort_unstable();
    instants.dedup();
    for at in instants {
        let id = scheduled_invoice_id(env, &contract.id, at);
        if at <= now && !stored.iter().any(|r| r.id == id) {
            missing.push(InvoiceRow {
                id,
                kind: InvoiceKind::Scheduled,
                period_start_ms: at,
                period_end_ms: at,
                ..draft_row(env, contract, at, at)
            });
        }
    }
    Ok((stored, missing))
}

/// The contract's invoices in time order (a scheduled invoice after the usage period starting
/// at its instant): its stored rows, plus a DRAFT for every one that has none yet. Reads only.
pub async fn contract_invoices(
    st: &AppState,
    env: Env,
    contract: &Contract,
) -> std::result::Result<Vec<InvoiceRow>, StoreError> {
    let (mut rows, missing) = stored_and_missing(st, env, contract).await?;
    rows.extend(missing);
    sort_rows(&mut rows);
    Ok(rows)
}

/// Time order of a contract's invoices.
pub fn sort_rows(rows: &mut [InvoiceRow]) {
    rows.sort_by_key(|r| {
        (
            r.period_start_ms,
            r.kind == InvoiceKind::Scheduled,
            r.revision,
        )
    });
}

/// Finalizes every period of the contract past `end + grace` that is still a draft, all in one
/// unit of work; returns how many this call finalized (another finalizer's wins are skipped).
pub async fn finalize_due(
    st: &AppState,
    env: Env,
    contract: &Contract,
) -> std::result::Result<usize, BillingError> {
    let rows = contract_invoices(st, env, contract).await?;
    finalize_rows(st, env, contract, &rows).await
}

/// [`finalize_due`] over rows already read with [`contract_invoices`]. When the contract's usage
/// draws on commits or credits, the due drafts of every contract of the customer that shares
/// them are finalized together, in burn order, with their ledger entries (`balances::Book`).
/// Everything is rated before the transaction opens, so no write lock is held while rating; an
/// invoice's entries are written only if this call's status change of it won.
pub async fn finalize_rows(
    st: &AppState,
    env: Env,
    contract: &Contract,
    rows: &[InvoiceRow],
) -> std::result::Result<usize, BillingError> {
    let now = st.now_ms();
    let grace = st.settings.invoice_grace_ms;
    let is_due = |r: &InvoiceRow| {
        r.status == InvoiceStatus::Draft && r.period_end_ms.saturating_add(grace) <= now
    };
    let mut due: Vec<&InvoiceRow> = rows.iter().filter(|r| is_due(r)).collect();
    if due.is_empty() {
        return Ok(0);
    }
    // Stripe pushes are written only while Stripe is connected, for contracts billing through it.
    let customer: Option<Customer> = match st.settings.stripe {
        Some(_) => Some(
            load(
                &st.stores,
                env,
                kind::CUSTOMER,
                &contract.customer_id,
                "customer",
            )
            .await?,
        ),
        None => None,
    };
    let wall = crate::SystemClock.now_ms();
    let stripe_of = |c: &Contract, row: &InvoiceRow, body: &Value| {
        let target = crate::stripe::target(customer.as_ref()?, c)?;
        Some(crate::stripe::messages(env, row, body, &target, wall))
    };
    let mut finals: Vec<Final> = Vec::with_capacity(due.len());
    let book = Book::load(st, env, &contract.customer_id).await?;
    if book.covers(&contract.id) {
        for d in book.drafts.iter().filter(|d| is_due(&d.row)) {
            let Some(ctx) = book.context(&d.contract.id) else {
                continue;
            };
            let mut row = d.row.clone();
            row.status = InvoiceStatus::Finalized;
            let body = render_priced(st, &d.contract, &row, ctx, d.invoice.clone(), false)?;
            let stripe = stripe_of(&d.contract, &row, &body);
            row.body = Some(body.to_string());
            let entries =
                balances::ledger_rows(&d.contract.customer_id, &row, &d.invoice.deductions, now);
            finals.push((row, entries, stripe));
        }
        // The book prices usage drafts; scheduled ones are rendered below.
        due.retain(|r| r.kind == InvoiceKind::Scheduled);
    }
    if !due.is_empty() {
        let ctx = RatingContext::load(st, env, contract).await?;
        for row in due {
            let mut row = row.clone();
            row.status = InvoiceStatus::Finalized;
            let body = render_computed(st, env, contract, &row, &ctx, false).await?;
            let stripe = stripe_of(contract, &row, &body);
            row.body = Some(body.to_string());
            finals.push((row, Vec::new(), stripe));
        }
    }
    // The destinations of the `invoice.finalized` messages: the endpoints active now. An endpoint
    // created while this runs may miss these invoices; it was not there when they finalized.
    let endpoints = super::webhooks::active_endpoint_ids(st, env).await?;
    let mut work = st.stores.invoices.begin().await?;
    let mut finalized = 0;
    for (row, entries, stripe) in &finals {
        if work.put_invoice(env, row, InvoiceStatus::Draft).await? {
            work.put_ledger_entries(env, entries).await?;
            // Only the finalizer whose status change won tells the endpoints (and Stripe), in
            // its transaction.
            for msg in super::webhooks::invoice_finalized(env, &endpoints, row, now, wall) {
                work.put_outbox(&msg).await?;
            }
            if let Some((msg, push)) = stripe {
                work.put_outbox(msg).await?;
                work.put_stripe_push(env, push).await?;
            }
            finalized += 1;
            tracing::info!(
                env = env.as_str(),
                invoice = %row.id,
                ledger_entries = entries.len(),
                stripe = stripe.is_some(),
                "invoice finalized"
            );
        }
    }
    work.commit().await?;
    Ok(finalized)
}

/// A finalized invoice to store: its row, its ledger entries, and its Stripe push if it has one.
type Final = (
    InvoiceRow,
    Vec<LedgerRow>,
    Option<(NewOutboxMessage, NewStripePush)>,
);

/// Which of a customer's invoices `GET /v1/customers/{id}/invoices` returns.
pub struct InvoiceQuery {
    pub contract_id: Option<String>,
    pub status: Option<InvoiceStatus>,
    pub starting_on: Option<i64>,
    pub ending_before: Option<i64>,
    pub descending: bool,
    pub invoice_type: Option<String>,
    pub credit_type_id: Option<String>,
    pub skip_zero_lines: bool,
}

/// One page of invoices: the rendered items and the offset of the next page, if any.
pub struct InvoicePage {
    pub items: Vec<Value>,
    pub next_offset: Option<i64>,
}

async fn customer_contracts(st: &AppState, env: Env, customer_id: &str) -> Result<Vec<Contract>> {
    Ok(crate::model::load_children(&st.stores, env, kind::CONTRACT, customer_id).await?)
}

/// The customer's invoices matching `q`, sorted by issue date then contract, paged by offset;
/// only the page's invoices are rendered.
pub async fn list(
    st: &AppState,
    env: Env,
    customer_id: &str,
    q: &InvoiceQuery,
    offset: i64,
    limit: i64,
) -> Result<InvoicePage> {
    let _: Customer = load(&st.stores, env, kind::CUSTOMER, customer_id, "customer").await?;
    let kind_ok = |kind: InvoiceKind| {
        q.invoice_type.as_deref().is_none_or(|t| match kind {
            InvoiceKind::Usage => t.eq_ignore_ascii_case("USAGE"),
            InvoiceKind::Scheduled => t.eq_ignore_ascii_case("SCHEDULED"),
        })
    };
    let credit_ok = q.credit_type_id.as_deref().is_none_or(|c| c == USD_ID);
    let mut selected = Vec::new();
    for contract in customer_contracts(st, env, customer_id).await? {
        if q.contract_id.as_ref().is_some_and(|id| *id != contract.id) || !credit_ok {
            continue;
        }
        for row in contract_invoices(st, env, &contract).await? {
            let keep = kind_ok(row.kind)
                && q.status.is_none_or(|s| s == row.status)
                && q.starting_on.is_none_or(|t| row.period_start_ms >= t)
                && q.ending_before.is_none_or(|t| row.period_end_ms <= t);
            if keep {
                selected.push((row, contract.clone()));
            }
        }
    }
    selected.sort_by(|a, b| {
        (a.0.period_end_ms, &a.0.contract_id).cmp(&(b.0.period_end_ms, &b.0.contract_id))
    });
    if q.descending {
        selected.reverse();
    }
    let start = (offset.max(0) as usize).min(selected.len());
    let end = (start + limit.max(0) as usize).min(selected.len());
    let page = &selected[start..end];
    let book = match page
        .iter()
        .any(|(row, _)| row.status == InvoiceStatus::Draft)
    {
        true => Book::load(st, env, customer_id).await?,
        false => Book::default(),
    };
    let mut items = Vec::with_capacity(end - start);
    let mut contexts = Contexts::default();
    for (row, contract) in page {
        let body = render(
            st,
            env,
            contract,
            row,
            &book,
            &mut contexts,
            q.skip_zero_lines,
        );
        items.push(body.await?);
    }
    add_external_invoices(st, env, customer_id, &mut items).await?;
    let next_offset = (end < selected.len()).then_some(end as i64);
    Ok(InvoicePage { items, next_offset })
}

/// Sets `external_invoice` (the Stripe push's status) on the rendered invoices that were pushed
/// or are queued to be; one read of the customer's pushes, only when a shown invoice is final.
async fn add_external_invoices(
    st: &AppState,
    env: Env,
    customer_id: &str,
    items: &mut [Value],
) -> Result<()> {
    if items.iter().all(|i| i["status"] == json!("DRAFT")) {
        return Ok(());
    }
    let pushes = st
        .stores
        .stripe
        .customer_stripe_pushes(env, customer_id)
        .await?;
    if pushes.is_empty() {
        return Ok(());
    }
    let by_id: HashMap<&str, &crate::store::StripePush> =
        pushes.iter().map(|p| (p.invoice_id.as_str(), p)).collect();
    for item in items.iter_mut() {
        let push = item["id"].as_str().and_then(|id| by_id.get(id).copied());
        if let Some(push) = push {
            item["external_invoice"] = crate::stripe::external_invoice(push);
        }
    }
    Ok(())
}

/// The rating contexts of the contracts one read renders drafts of, each loaded once however
/// many of its invoices the read shows.
#[derive(Default)]
struct Contexts(HashMap<String, RatingContext>);

impl Contexts {
    async fn of(&mut self, st: &AppState, env: Env, contract: &Contract) -> Result<&RatingContext> {
        let ctx = match self.0.entry(contract.id.clone()) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(RatingContext::load(st, env, contract).await?),
        };
        Ok(ctx)
    }
}

/// The invoice as the API shows it: a draft the customer's book priced (it draws on commits or
/// credits) from the book; any other draft computed with its contract's context (loaded once per
/// read, `contexts`); a finalized or voided one from its frozen body (`billing::invoice_json`).
async fn render(
    st: &AppState,
    env: Env,
    contract: &Contract,
    row: &InvoiceRow,
    book: &Book,
    contexts: &mut Contexts,
    skip_zero: bool,
) -> Result<Value> {
    if row.status == InvoiceStatus::Draft {
        if let Some((d, ctx)) = book.draft(&row.id) {
            return Ok(render_priced(
                st,
                contract,
                row,
                ctx,
                d.invoice.clone(),
                skip_zero,
            )?);
        }
    }
    if row.status == InvoiceStatus::Draft || row.body.is_none() {
        let ctx = contexts.of(st, env, contract).await?;
        let mut body = render_computed(st, env, contract, row, ctx, skip_zero).await?;
        body["status"] = json!(row.status.as_str());
        return Ok(body);
    }
    Ok(invoice_json(st, env, contract, row, skip_zero).await?)
}

/// The invoice the contract's items scheduled at `at_ms` are on, as a draft (it may lie ahead
/// of now, before it is listed): the usage invoice of the period ending then when the contract
/// consolidates, else the SCHEDULED invoice of that instant.
pub async fn draft_at(st: &AppState, env: Env, contract: &Contract, at_ms: i64) -> Result<Value> {
    let row = match contract.snapshot().usage_period_ending_at(at_ms) {
        Some(p) => draft_row(env, contract, p.start_ms, p.end_ms),
        None => InvoiceRow {
            id: scheduled_invoice_id(env, &contract.id, at_ms),
            kind: InvoiceKind::Scheduled,
            ..draft_row(env, contract, at_ms, at_ms)
        },
    };
    let book = Book::load(st, env, &contract.customer_id).await?;
    let mut contexts = Contexts::default();
    render(st, env, contract, &row, &book, &mut contexts, false).await
}

/// One of the customer's invoices by id, stored or a computed draft.
pub async fn get(
    st: &AppState,
    env: Env,
    customer_id: &str,
    invoice_id: &str,
    skip_zero: bool,
) -> Result<Value> {
    for contract in customer_contracts(st, env, customer_id).await? {
        let rows = contract_invoices(st, env, &contract).await?;
        if let Some(row) = rows.iter().find(|r| r.id == invoice_id) {
            let book = match row.status {
                InvoiceStatus::Draft => Book::load(st, env, customer_id).await?,
                _ => Book::default(),
            };
            let mut contexts = Contexts::default();
            let body = render(st, env, &contract, row, &book, &mut contexts, skip_zero).await?;
            let mut items = [body];
            add_external_invoices(st, env, customer_id, &mut items).await?;
            let [body] = items;
            return Ok(body);
        }
    }
    Err(InvoiceError::NotFound("invoice"))
}

/// Contracts read per page while looking for an invoice that has no row yet.
const FIND_PAGE: i64 = 200;

/// The invoice `id` of `env` and its contract: its stored row, or else the begun period whose
/// deterministic id it is (drafts the job has not stored yet), found by paging through contracts.
async fn find_invoice(st: &AppState, env: Env, id: &str) -> Result<(Contract, InvoiceRow)> {
    if let Some(row) = st.stores.invoices.invoice(env, id).await? {
        let contract: Contract = load(
            &st.stores,
            env,
            kind::CONTRACT,
            &row.contract_id,
            "contract",
        )
        .await?;
        return Ok((contract, row));
    }
    let mut after = 0;
    loop {
        let page = PageReq {
            after,
            limit: FIND_PAGE,
        };
        let docs = st
            .stores
            .config
            .list_docs(env, kind::CONTRACT, None, ArchiveFilter::All, Some(page))
            .await?;
        for doc in &docs {
            after = doc.seq;
            let contract: Contract = decode(doc)?;
            let rows = contract_invoices(st, env, &contract).await?;
            if let Some(row) = rows.into_iter().find(|r| r.id == id) {
                return Ok((contract, row));
            }
        }
        if (docs.len() as i64) < FIND_PAGE {
            return Err(InvoiceError::NotFound("invoice"));
        }
    }
}

/// Voids an invoice: a draft is frozen as computed now; a finalized one keeps its body. A draft
/// already past its grace is finalized first, so a void never freezes what should have been final.
pub async fn void(st: &AppState, env: Env, id: &str) -> Result<()> {
    let (contract, row) = find_invoice(st, env, id).await?;
    if row.status == InvoiceStatus::Void {
        return Ok(());
    }
    let rows = contract_invoices(st, env, &contract).await?;
    finalize_rows(st, env, &contract, &rows).await?;
    let (_, row) = find_invoice(st, env, id).await?;
    if row.status == InvoiceStatus::Void {
        return Ok(());
    }
    let book = Book::load(st, env, &contract.customer_id).await?;
    let mut body = render(
        st,
        env,
        &contract,
        &row,
        &book,
        &mut Contexts::default(),
        false,
    )
    .await?;
    body["status"] = json!(InvoiceStatus::Void.as_str());
    let from = row.status;
    let voided = InvoiceRow {
        status: InvoiceStatus::Void,
        body: Some(body.to_string()),
        ..row
    };
    let mut work = st.stores.invoices.begin().await?;
    if !work.put_invoice(env, &voided, from).await? {
        return Err(InvoiceError::Conflict(
            "the invoice changed while voiding it; retry".into(),
        ));
    }
    work.commit().await?;
    Ok(())
}

/// Regenerates a voided invoice (`POST /v1/invoices/regenerate`): a new invoice of the same
/// contract, kind and period, with a new id and `regenerated_from_invoice_id`, priced from what
/// is stored now (usage, late events included; rates; the balances the voided one gave back).
/// It is a stored draft, finalized at once when its period is past its grace (as every
/// regenerated period of a finalized invoice is), through the one finalization path: ledger
/// entries, webhooks and Stripe pushes as for any invoice. A voided invoice is regenerated once:
/// of racing requests exactly one inserts the new row (its id is derived from the voided one),
/// the others and any later request get a 400 naming it.
pub async fn regenerate(st: &AppState, env: Env, id: &str) -> Result<String> {
    let (contract, row) = find_invoice(st, env, id).await?;
    if row.status != InvoiceStatus::Void {
        return Err(Invalid(format!(
            "invoice {id} is {}; only a voided invoice can be regenerated",
            row.status.as_str()
        ))
        .into());
    }
    let new = InvoiceRow {
        id: crate::billing::regenerated_invoice_id(env, &row.id),
        status: InvoiceStatus::Draft,
        body: None,
        revision: row.revision.saturating_add(1),
        regenerated_from: Some(row.id.clone()),
        ..row
    };
    let mut work = st.stores.invoices.begin().await?;
    if !work.insert_invoice(env, &new).await? {
        return Err(Invalid(format!(
            "invoice {id} was already regenerated as invoice {}",
            new.id
        ))
        .into());
    }
    work.commit().await?;
    tracing::info!(env = env.as_str(), voided = %id, invoice = %new.id, "invoice regenerated");
    finalize_due(st, env, &contract).await?;
    Ok(new.id)
}
