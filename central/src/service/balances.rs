//! Balances of commits and credits: the customer's *book* (which invoice draws what from each
//! segment, finalized and pending), the ledger it writes at finalization, and the balance reads.
//!
//! Invariants:
//! - Invoices draw on a segment in one order, the same for every reader: by period end, then
//!   contract start, then contract id. A draft is priced with the ledger as it stands before it:
//!   every stored entry (finalized invoices' deductions and true-ups, manual entries) plus the
//!   pending deductions of the open drafts ordered before it. Core's drawdown never takes more
//!   than a segment has left, so no order of reads can overdraw it.
//! - A finalized invoice's entries are written in the unit of work that finalizes it, and only by
//!   the finalizer whose conditional status change won (`put_invoice`), with deterministic ids:
//!   finalizing twice, on any number of replicas, writes them once.
//! - A voided invoice's entries no longer count: voiding gives back what it drew.
//! - Reads never write.

use std::collections::{BTreeMap, BTreeSet};

use rust_decimal::Decimal;
use serde_json::{json, Value};
use tally_core::balances::{Balance, BalanceKind, Deduction, LedgerEntryKind};
use tally_core::invoice::Invoice;
use tally_core::period::Period;

use super::commits;
use super::invoices::contract_invoices;
use super::transitions::{self, Rollover};
use super::Invalid;
use crate::billing::{BillingError, BillingResult, RatingContext};
use crate::model::{decode, kind, load, BalanceRecord, Contract, Customer, LoadError};
use crate::store::{
    ArchiveFilter, Env, InvoiceKind, InvoiceRow, InvoiceStatus, LedgerRow, StoreError,
};
use crate::wire::{set_opt, Dec, Time};
use crate::AppState;

/// Namespace of ledger entry ids written by invoices: `uuid5(NS, "{invoice}/{segment}/{entry}")`.
const LEDGER_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x5e1f_7a11_7a11_4c0d_9b1e_1a77_c0de_0002);

/// One open draft of the customer, priced in burn order.
pub struct PricedDraft {
    pub contract: Contract,
    pub row: InvoiceRow,
    /// The ledger of each segment as it stood before this draft.
    pub prior: BTreeMap<String, Decimal>,
    pub invoice: Invoice,
}

/// Which invoices count in a balance (`invoice_inclusion_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inclusion {
    Finalized,
    FinalizedAndDraft,
}

/// The customer's balances and what their invoices draw from them.
#[derive(Default)]
pub struct Book {
    pub balances: Vec<Balance>,
    /// Entries that count: manual ones and those of invoices that are not void.
    pub stored: Vec<LedgerRow>,
    /// Open drafts of contracts that have balances, in burn order.
    pub drafts: Vec<PricedDraft>,
    /// Rollovers to renewals, derived in burn order (`service::transitions`): each counts in
    /// every balance and ledger, whatever the inclusion.
    pub rollovers: Vec<Rollover>,
    contexts: BTreeMap<String, RatingContext>,
}

/// Moves a rollover's amount from its original segment to its rolled one.
fn apply_rollover(running: &mut BTreeMap<String, Decimal>, r: &Rollover) {
    *running.entry(r.from_segment.clone()).or_default() -= r.amount;
    *running.entry(r.to_segment.clone()).or_default() += r.amount;
}

/// Adds each deduction to the running ledger of its segment.
fn apply(running: &mut BTreeMap<String, Decimal>, deductions: &[Deduction]) {
    for d in deductions {
        *running.entry(d.segment_id.clone()).or_default() += d.amount;
    }
}

impl Book {
    /// Loads the customer's balances and ledger and prices its open drafts in burn order. A
    /// customer without commits or credits costs one read.
    pub async fn load(st: &AppState, env: Env, customer_id: &str) -> BillingResult<Book> {
        let balances = commits::customer_balances(st, env, customer_id).await?;
        if balances.is_empty() {
            return Ok(Book::default());
        }
        let entries = st.stores.ledger.customer_ledger(env, customer_id).await?;
        let docs = st
            .stores
            .config
            .list_docs(
                env,
                kind::CONTRACT,
                Some(customer_id),
                ArchiveFilter::All,
                None,
            )
            .await?;
        let mut void = BTreeSet::new();
        let mut open = Vec::new();
        let contracts = docs
            .iter()
            .map(decode::<Contract>)
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let pending = transitions::pending_rollovers(&contracts, st.now_ms()).into_iter();
        for contract in contracts {
            if !balances.iter().any(|b| b.applies_to(&contract.id)) {
                continue;
            }
            for row in contract_invoices(st, env, &contract).await? {
                match row.status {
                    InvoiceStatus::Void => {
                        void.insert(row.id.clone());
                    }
                    // Scheduled invoices (commit purchases) draw on nothing.
                    InvoiceStatus::Draft if row.kind == InvoiceKind::Usage => {
                        open.push((contract.clone(), row))
                    }
                    InvoiceStatus::Draft => {}
                    InvoiceStatus::Finalized => {}
                }
            }
        }
        let stored: Vec<LedgerRow> = entries
            .into_iter()
            .filter(|e| e.invoice_id.as_ref().is_none_or(|i| !void.contains(i)))
            .collect();
        open.sort_by(|(ca, a), (cb, b)| {
            (a.period_end_ms, ca.starting_at.0, &ca.id).cmp(&(
                b.period_end_ms,
                cb.starting_at.0,
                &cb.id,
            ))
        });
        let mut book = Book {
            balances,
            stored,
            drafts: Vec::with_capacity(open.len()),
            rollovers: Vec::new(),
            contexts: BTreeMap::new(),
        };
        let mut running = book.stored_net();
        let mut pending = pending.peekable();
        for (contract, row) in open {
            // A renewed contract's last invoice ends at the transition, its renewal's first
            // after it: what rolls over is what the first one left.
            while let Some(r) = pending.next_if(|r| r.at_ms < row.period_end_ms) {
                book.roll(r, &mut running)?;
            }
            if !book.contexts.contains_key(&contract.id) {
                let ctx = RatingContext::load(st, env, &contract).await?;
                book.contexts.insert(contract.id.clone(), ctx);
            }
            let ctx = &book.contexts[&contract.id];
            let period = Period {
                start_ms: row.period_start_ms,
                end_ms: row.period_end_ms,
            };
            let invoice = ctx.rate_with_prior(st, env, period, &running).await?;
            let prior = running.clone();
            apply(&mut running, &invoice.deductions);
            book.drafts.push(PricedDraft {
                contract,
                row,
                prior,
                invoice,
            });
        }
        for r in pending {
            book.roll(r, &mut running)?;
        }
        Ok(book)
    }

    /// Derives one rollover from the running ledger and records it there: nothing when the
    /// original is archived or its segment had not begun by the transition.
    fn roll(
        &mut self,
        mut r: Rollover,
        running: &mut BTreeMap<String, Decimal>,
    ) -> BillingResult<()> {
        let segment = self
            .balances
            .iter()
            .filter(|b| b.id == r.from_balance)
            .flat_map(|b| &b.access)
            .find(|s| s.id == r.from_segment && s.starting_at_ms < r.at_ms);
        let Some(segment) = segment else {
            return Ok(());
        };
        let net = running.get(&r.from_segment).copied().unwrap_or_default();
        r.amount = tally_core::rollover::rolled_amount(segment.amount, net, r.fraction)
            .map_err(|e| BillingError::Rating(e.to_string()))?;
        apply_rollover(running, &r);
        self.rollovers.push(r);
        Ok(())
    }

    /// What the rolled segment `segment_id` received, if it is one.
    pub fn rolled_into(&self, segment_id: &str) -> Option<Decimal> {
        self.rollovers
            .iter()
            .find(|r| r.to_segment == segment_id)
            .map(|r| r.amount)
    }

    /// Whether the book prices this contract's drafts (it has commits or credits).
    pub fn covers(&self, contract_id: &str) -> bool {
        self.balances.iter().any(|b| b.applies_to(contract_id))
    }

    /// The open draft with this invoice id, priced, and its contract's rating context.
    pub fn draft(&self, invoice_id: &str) -> Option<(&PricedDraft, &RatingContext)> {
        let d = self.drafts.iter().find(|d| d.row.id == invoice_id)?;
        Some((d, self.contexts.get(&d.contract.id)?))
    }

    /// The rating context of a contract whose drafts the book priced.
    pub fn context(&self, contract_id: &str) -> Option<&RatingContext> {
        self.contexts.get(contract_id)
    }

    /// Per segment, the net of the stored entries that count.
    pub fn stored_net(&self) -> BTreeMap<String, Decimal> {
        let mut net = BTreeMap::new();
        for e in &self.stored {
            *net.entry(e.segment_id.clone()).or_default() += e.amount;
        }
        net
    }

    /// Per segment, the net of the entries `inclusion` counts.
    pub fn net(&self, inclusion: Inclusion) -> BTreeMap<String, Decimal> {
        let mut net = self.stored_net();
        for r in &self.rollovers {
            apply_rollover(&mut net, r);
        }
        if inclusion == Inclusion::FinalizedAndDraft {
            for d in &self.drafts {
                apply(&mut net, &d.invoice.deductions);
            }
        }
        net
    }
}

/// The ledger rows a finalized invoice writes: one per deduction, with an id fixed by the
/// invoice, segment and entry kind (so a second write of it is a no-op).
pub fn ledger_rows(
    customer_id: &str,
    row: &InvoiceRow,
    deductions: &[Deduction],
    now_ms: i64,
) -> Vec<LedgerRow> {
    deductions
        .iter()
        .map(|d| {
            let entry = LedgerRow::entry_name(d.entry);
            let name = format!("{}/{}/{entry}", row.id, d.segment_id);
            LedgerRow {
                id: uuid::Uuid::new_v5(&LEDGER_NAMESPACE, name.as_bytes()).to_string(),
                customer_id: customer_id.to_string(),
                balance_id: d.balance_id.clone(),
                segment_id: d.segment_id.clone(),
                entry: d.entry,
                amount: d.amount,
                timestamp_ms: row.period_end_ms,
                invoice_id: Some(row.id.clone()),
                contract_id: Some(row.contract_id.clone()),
                reason: None,
                created_ms: now_ms,
            }
        })
        .collect()
}

/// One entry of a balance's ledger as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerView {
    pub entry: LedgerEntryKind,
    pub amount: Decimal,
    pub timestamp_ms: i64,
    pub segment_id: String,
    pub invoice_id: Option<String>,
    pub contract_id: Option<String>,
    pub reason: Option<String>,
}

impl LedgerView {
    /// The entry in the shape of upstream's `*LedgerEntry` objects.
    pub fn json(&self, kind: BalanceKind) -> Value {
        let mut v = json!({
            "type": self.entry.wire_name(kind),
            "amount": Dec(self.amount),
            "timestamp": Time(self.timestamp_ms),
            "segment_id": self.segment_id,
        });
        set_opt(&mut v, "invoice_id", self.invoice_id.as_ref());
        set_opt(&mut v, "contract_id", self.contract_id.as_ref());
        set_opt(&mut v, "reason", self.reason.as_ref());
        v
    }
}

impl Book {
    /// The ledger of `balance` at `now_ms`, oldest first: for each segment begun by then, its
    /// start, the entries that count under `inclusion` (a draft's pending deductions dated at its
    /// period's end), and its expiration once it has ended with something left. Entries of one
    /// instant are in the order of [`rank_within_instant`] (stored ones are ordered by id too,
    /// which says nothing), so an invoice's deduction always precedes its true-up. The entries
    /// of a balance sum to [`Book::balance`].
    pub fn ledger(&self, balance: &Balance, inclusion: Inclusion, now_ms: i64) -> Vec<LedgerView> {
        let mut out = Vec::new();
        for seg in balance.access.iter().filter(|s| s.starting_at_ms <= now_ms) {
            let mut entries = Vec::new();
            // A rolled segment starts with what it received, not with its nominal zero.
            if self.rolled_into(&seg.id).is_none() {
                entries.push(LedgerView {
                    entry: LedgerEntryKind::SegmentStart,
                    amount: seg.amount,
                    timestamp_ms: seg.starting_at_ms,
                    segment_id: seg.id.clone(),
                    invoice_id: None,
                    contract_id: None,
                    reason: None,
                });
            }
            for r in &self.rollovers {
                let (amount, timestamp_ms, contract) = if r.from_segment == seg.id {
                    (-r.amount, r.at_ms, &r.from_contract)
                } else if r.to_segment == seg.id {
                    (r.amount, r.to_start_ms, &r.to_contract)
                } else {
                    continue;
                };
                entries.push(LedgerView {
                    entry: LedgerEntryKind::Rollover,
                    amount,
                    timestamp_ms,
                    segment_id: seg.id.clone(),
                    invoice_id: None,
                    contract_id: Some(contract.clone()),
                    reason: None,
                });
            }
            for e in self.stored.iter().filter(|e| e.segment_id == seg.id) {
                entries.push(LedgerView {
                    entry: e.entry,
                    amount: e.amount,
                    timestamp_ms: e.timestamp_ms,
                    segment_id: seg.id.clone(),
                    invoice_id: e.invoice_id.clone(),
                    contract_id: e.contract_id.clone(),
                    reason: e.reason.clone(),
                });
            }
            if inclusion == Inclusion::FinalizedAndDraft {
                for d in &self.drafts {
                    for x in d
                        .invoice
                        .deductions
                        .iter()
                        .filter(|x| x.segment_id == seg.id)
                    {
                        entries.push(LedgerView {
                            entry: x.entry,
                            amount: x.amount,
                            timestamp_ms: d.row.period_end_ms,
                            segment_id: seg.id.clone(),
                            invoice_id: Some(d.row.id.clone()),
                            contract_id: Some(d.contract.id.clone()),
                            reason: None,
                        });
                    }
                }
            }
            // What is left at the end expires (a segment a manual entry overdrew expires its
            // negative remainder too), so an ended segment's entries sum to zero.
            let left: Decimal = entries.iter().map(|e| e.amount).sum();
            if seg.ending_before_ms <= now_ms && !left.is_zero() {
                entries.push(LedgerView {
                    entry: LedgerEntryKind::Expiration,
                    amount: -left,
                    timestamp_ms: seg.ending_before_ms,
                    segment_id: seg.id.clone(),
                    invoice_id: None,
                    contract_id: None,
                    reason: None,
                });
            }
            entries.sort_by_key(|e| (e.timestamp_ms, rank_within_instant(e.entry)));
            out.extend(entries);
        }
        out
    }

    /// What `balance` has left to use at `now_ms`: the sum over its segments whose window holds
    /// `now_ms` of their amount and the entries `inclusion` counts.
    pub fn balance(&self, balance: &Balance, inclusion: Inclusion, now_ms: i64) -> Decimal {
        let net = self.net(inclusion);
        balance
            .access
            .iter()
            .filter(|s| s.starting_at_ms <= now_ms && now_ms < s.ending_before_ms)
            .map(|s| s.amount + net.get(&s.id).copied().unwrap_or_default())
            .sum()
    }

    /// What `getNetBalance` counts of `balance` at `now_ms`: [`Book::balance`] with a segment
    /// driven below zero (by manual entries) counted as zero, as upstream documents.
    pub fn available(&self, balance: &Balance, inclusion: Inclusion, now_ms: i64) -> Decimal {
        let net = self.net(inclusion);
        balance
            .access
            .iter()
            .filter(|s| s.starting_at_ms <= now_ms && now_ms < s.ending_before_ms)
            .map(|s| (s.amount + net.get(&s.id).copied().unwrap_or_default()).max(Decimal::ZERO))
            .sum()
    }
}

/// Where an entry goes among those of the same instant: the segment's start, then what invoices
/// draw, then true-ups (which bill what the deductions left), then manual entries, then what
/// rolls over to a renewal, and the expiration of what is left last.
fn rank_within_instant(entry: LedgerEntryKind) -> u8 {
    match entry {
        LedgerEntryKind::SegmentStart => 0,
        LedgerEntryKind::AutomatedInvoiceDeduction => 1,
        LedgerEntryKind::Trueup => 2,
        LedgerEntryKind::Manual => 3,
        LedgerEntryKind::Rollover => 4,
        LedgerEntryKind::Expiration => 5,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BalanceError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    Billing(#[from] BillingError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<LoadError> for BalanceError {
    fn from(e: LoadError) -> Self {
        match e {
            LoadError::NotFound(what) => BalanceError::NotFound(what),
            LoadError::Store(e) => BalanceError::Store(e),
        }
    }
}

type Result<T> = std::result::Result<T, BalanceError>;

/// One `filters` entry of getNetBalance: a balance matches when every set field matches.
#[derive(Debug, Clone, Default)]
pub struct BalanceFilter {
    pub kinds: Option<Vec<BalanceKind>>,
    pub ids: Option<Vec<String>>,
}

impl BalanceFilter {
    fn matches(&self, b: &Balance) -> bool {
        self.kinds.as_ref().is_none_or(|k| k.contains(&b.kind))
            && self.ids.as_ref().is_none_or(|ids| ids.contains(&b.id))
    }
}

/// The customer's book, after checking the customer exists.
pub async fn customer_book(st: &AppState, env: Env, customer_id: &str) -> Result<Book> {
    let _: Customer = load(&st.stores, env, kind::CUSTOMER, customer_id, "customer").await?;
    Ok(Book::load(st, env, customer_id).await?)
}

/// `getNetBalance`: what the customer can use now across its commits and credits in
/// `credit_type_id` that match any of `filters` (all of them without filters).
pub async fn net_balance(
    st: &AppState,
    env: Env,
    customer_id: &str,
    credit_type_id: &str,
    filters: &[BalanceFilter],
    inclusion: Inclusion,
) -> Result<Decimal> {
    let book = customer_book(st, env, customer_id).await?;
    let now = st.now_ms();
    Ok(book
        .balances
        .iter()
        .filter(|b| b.credit_type.as_str() == credit_type_id)
        .filter(|b| filters.is_empty() || filters.iter().any(|f| f.matches(b)))
        .map(|b| book.available(b, inclusion, now))
        .sum())
}

/// `addManualBalanceLedgerEntry`.
pub struct ManualEntry {
    pub customer_id: String,
    pub balance_id: String,
    pub segment_id: String,
    pub contract_id: Option<String>,
    pub amount: Decimal,
    pub reason: String,
    pub timestamp_ms: Option<i64>,
}

/// Records a manual entry on one segment of one of the customer's commits or credits (dated at
/// the segment's start unless a timestamp is given). A write that reads nothing it depends on:
/// concurrent entries all land.
pub async fn add_manual_entry(st: &AppState, env: Env, e: ManualEntry) -> Result<()> {
    super::require_text("reason", &e.reason, 1_000)?;
    let book = customer_book(st, env, &e.customer_id).await?;
    let balance = book
        .balances
        .iter()
        .find(|b| b.id == e.balance_id)
        .ok_or(BalanceError::NotFound("commit or credit"))?;
    let segment = balance
        .access
        .iter()
        .find(|s| s.id == e.segment_id)
        .ok_or_else(|| {
            Invalid(format!(
                "segment_id {} is not a segment of {}",
                e.segment_id, balance.id
            ))
        })?;
    if let Some(c) = &e.contract_id {
        if balance.contract_id.as_ref() != Some(c) {
            return Err(Invalid(format!(
                "{} is not a commit or credit of contract {c}",
                balance.id
            ))
            .into());
        }
    }
    let now = st.now_ms();
    let row = LedgerRow {
        id: crate::model::new_id(),
        customer_id: e.customer_id,
        balance_id: balance.id.clone(),
        segment_id: segment.id.clone(),
        entry: LedgerEntryKind::Manual,
        amount: e.amount,
        timestamp_ms: e.timestamp_ms.unwrap_or(segment.starting_at_ms),
        invoice_id: None,
        contract_id: balance.contract_id.clone(),
        reason: Some(e.reason),
        created_ms: now,
    };
    st.stores.ledger.insert_manual_entry(env, &row).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_core::balances::AccessSegment;
    use tally_core::money::CreditTypeId;

    fn segment(id: &str, amount: &str, start: i64, end: i64) -> AccessSegment {
        AccessSegment {
            id: id.into(),
            amount: amount.parse().unwrap(),
            starting_at_ms: start,
            ending_before_ms: end,
        }
    }

    fn entry(segment: &str, amount: &str, at: i64) -> LedgerRow {
        LedgerRow {
            id: format!("{segment}{amount}{at}"),
            customer_id: "c".into(),
            balance_id: "b".into(),
            segment_id: segment.into(),
            entry: LedgerEntryKind::AutomatedInvoiceDeduction,
            amount: amount.parse().unwrap(),
            timestamp_ms: at,
            invoice_id: Some("i".into()),
            contract_id: None,
            reason: None,
            created_ms: at,
        }
    }

    /// A USD credit `b` with these segments.
    fn test_credit(access: Vec<AccessSegment>) -> Balance {
        Balance {
            id: "b".into(),
            kind: BalanceKind::Credit,
            name: "Credit".into(),
            product_id: "p".into(),
            contract_id: None,
            applicable_contract_ids: vec![],
            invoice_contract_id: None,
            priority: None,
            applicable_product_ids: vec![],
            applicable_product_tags: vec![],
            specifiers: vec![],
            rate_type: Default::default(),
            credit_type: CreditTypeId("usd".into()),
            access,
            invoice_schedule: vec![],
            paid: false,
            recurring_id: None,
        }
    }

    /// A credit of three segments: ended (400 of 1000 used), current (1000.333, 0.333 used),
    /// future (500), read at every instant around their bounds.
    #[test]
    fn a_balance_is_the_sum_of_its_ledger_at_every_instant() {
        let balance = test_credit(vec![
            segment("s1", "1000", 0, 10),
            segment("s2", "1000.333", 10, 20),
            segment("s3", "500", 20, 30),
        ]);
        let book = Book {
            balances: vec![balance.clone()],
            stored: vec![
                entry("s1", "-400", 5),
                entry("s2", "-0.333", 12),
                entry("s2", "-600", 25),
            ],
            drafts: vec![],
            rollovers: vec![],
            contexts: BTreeMap::new(),
        };
        let expected = [
            (0, "600"),
            (9, "600"),
            (10, "400"),
            (19, "400"),
            (20, "500"),
            (30, "0"),
        ];
        for (now, want) in expected {
            let ledger = book.ledger(&balance, Inclusion::FinalizedAndDraft, now);
            let sum: Decimal = ledger.iter().map(|e| e.amount).sum();
            let got = book.balance(&balance, Inclusion::FinalizedAndDraft, now);
            assert_eq!(got, want.parse::<Decimal>().unwrap(), "balance at {now}");
            assert_eq!(sum, got, "ledger at {now}: {ledger:?}");
        }
        // Once s1 ended, its 600 left expires at its end.
        let ledger = book.ledger(&balance, Inclusion::Finalized, 10);
        let expiry: Vec<_> = ledger
            .iter()
            .filter(|e| e.entry == LedgerEntryKind::Expiration)
            .map(|e| (e.segment_id.as_str(), e.amount, e.timestamp_ms))
            .collect();
        assert_eq!(expiry, vec![("s1", "-600".parse().unwrap(), 10)]);
    }

    /// A manual entry may drive a segment below zero: its balance shows it (the sum of its
    /// ledger), the net balance counts it as zero and still counts the other segments.
    #[test]
    fn a_negative_segment_counts_as_zero_in_the_net_balance() {
        let balance = test_credit(vec![
            segment("s1", "1000", 0, 10),
            segment("s2", "300", 0, 10),
        ]);
        let book = Book {
            balances: vec![balance.clone()],
            stored: vec![entry("s1", "-1500", 5)],
            drafts: vec![],
            rollovers: vec![],
            contexts: BTreeMap::new(),
        };
        let at = |now| {
            (
                book.balance(&balance, Inclusion::FinalizedAndDraft, now),
                book.available(&balance, Inclusion::FinalizedAndDraft, now),
            )
        };
        assert_eq!(at(6), ("-200".parse().unwrap(), "300".parse().unwrap()));
    }

    /// A postpaid commit's invoice records its deduction and its true-up at the period's end;
    /// stored, they come back ordered by id, which must not decide how the ledger reads.
    #[test]
    fn entries_of_one_instant_read_deduction_then_true_up_then_expiration() {
        let balance = Balance {
            id: "b".into(),
            kind: BalanceKind::PostpaidCommit,
            name: "Minimum".into(),
            product_id: "p".into(),
            contract_id: Some("k".into()),
            applicable_contract_ids: vec![],
            invoice_contract_id: None,
            priority: None,
            applicable_product_ids: vec![],
            applicable_product_tags: vec![],
            specifiers: vec![],
            rate_type: Default::default(),
            credit_type: CreditTypeId("usd".into()),
            access: vec![segment("s1", "1000", 0, 10)],
            invoice_schedule: vec![],
            paid: false,
            recurring_id: None,
        };
        let true_up = LedgerRow {
            entry: LedgerEntryKind::Trueup,
            ..entry("s1", "-300", 10)
        };
        let manual = LedgerRow {
            entry: LedgerEntryKind::Manual,
            invoice_id: None,
            ..entry("s1", "-100", 10)
        };
        let book = Book {
            balances: vec![balance.clone()],
            stored: vec![manual, true_up, entry("s1", "-500", 10)],
            drafts: vec![],
            rollovers: vec![],
            contexts: BTreeMap::new(),
        };
        let ledger = book.ledger(&balance, Inclusion::Finalized, 10);
        let got: Vec<_> = ledger.iter().map(|e| (e.entry, e.amount)).collect();
        use LedgerEntryKind::*;
        let want: Vec<(LedgerEntryKind, Decimal)> = [
            (SegmentStart, "1000"),
            (AutomatedInvoiceDeduction, "-500"),
            (Trueup, "-300"),
            (Manual, "-100"),
            (Expiration, "-100"),
        ]
        .into_iter()
        .map(|(k, a)| (k, a.parse().unwrap()))
        .collect();
        assert_eq!(got, want);
    }
}

/// What a read of commits and credits shows beyond their terms (`include_balance`,
/// `include_ledgers`) and which invoices it counts.
#[derive(Debug, Clone, Copy)]
pub struct Show {
    pub balance: bool,
    pub ledger: bool,
    pub inclusion: Inclusion,
}

impl Show {
    pub fn anything(&self) -> bool {
        self.balance || self.ledger
    }
}

impl Book {
    /// Shows what a rolled commit or credit received as its access amount (its record holds 0).
    pub fn show_rolled(&self, balance: &Balance, v: &mut Value) {
        for (i, seg) in balance.access.iter().enumerate() {
            if let Some(amount) = self.rolled_into(&seg.id) {
                v["access_schedule"]["schedule_items"][i]["amount"] = json!(Dec(amount));
            }
        }
    }

    /// Adds `balance` and/or `ledger` to the API object `v` of the commit or credit `balance`.
    pub fn decorate(&self, balance: &Balance, v: &mut Value, show: Show, now_ms: i64) {
        if show.balance {
            v["balance"] = json!(Dec(self.balance(balance, show.inclusion, now_ms)));
        }
        if show.ledger {
            let ledger: Vec<Value> = self
                .ledger(balance, show.inclusion, now_ms)
                .iter()
                .map(|e| e.json(balance.kind))
                .collect();
            v["ledger"] = Value::Array(ledger);
        }
    }

    /// Decorates every commit and credit object inside a contract's API JSON (v2's `commits` /
    /// `credits`, v1's `initial` / `current` ones), matched by id to the contract's balances.
    pub fn decorate_contract(&self, contract: &Contract, v: &mut Value, show: Show, now_ms: i64) {
        let own: Vec<Balance> = contract
            .own_balance_records(now_ms)
            .iter()
            .map(|b| b.balance(Some(&contract.id)))
            .collect();
        let mut lists: Vec<&mut Value> = Vec::new();
        let Some(map) = v.as_object_mut() else {
            return;
        };
        for (key, value) in map.iter_mut() {
            match key.as_str() {
                "commits" | "credits" => lists.push(value),
                "initial" | "current" => {
                    if let Some(inner) = value.as_object_mut() {
                        for (k, list) in inner.iter_mut() {
                            if k == "commits" || k == "credits" {
                                lists.push(list);
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        for item in lists.into_iter().filter_map(Value::as_array_mut).flatten() {
            let id = item.get("id").and_then(Value::as_str).unwrap_or_default();
            if let Some(b) = own.iter().find(|b| b.id == id) {
                self.show_rolled(b, item);
                self.decorate(b, item, show, now_ms);
            }
        }
    }
}

/// The API objects of these commits and credits (each with its contract, `None` for a
/// customer-level one), with their balance and ledger when `show` asks for them.
pub async fn shown(
    st: &AppState,
    env: Env,
    customer_id: &str,
    found: &[(Option<String>, BalanceRecord)],
    show: Show,
) -> Result<Vec<Value>> {
    let rolled = found.iter().any(|(_, r)| r.rolled_over_from.is_some());
    let book = match show.anything() || rolled {
        true => Book::load(st, env, customer_id).await?,
        false => Book::default(),
    };
    let now = st.now_ms();
    Ok(found
        .iter()
        .map(|(contract, record)| {
            let mut v = record.api_json(contract.as_deref());
            let balance = record.balance(contract.as_deref());
            book.show_rolled(&balance, &mut v);
            book.decorate(&balance, &mut v, show, now);
            v
        })
        .collect())
}

/// `customerBalances/list`: the customer's commits and credits matching `filter`, zero
/// balances left out when asked (a balance counts drafts).
pub async fn list(
    st: &AppState,
    env: Env,
    filter: &commits::BalanceFilter,
    exclude_zero: bool,
) -> Result<Vec<(Option<String>, BalanceRecord)>> {
    let mut found = commits::list(st, env, filter).await.map_err(|e| match e {
        commits::CommitError::NotFound(what) => BalanceError::NotFound(what),
        commits::CommitError::Store(e) => BalanceError::Store(e),
        other => BalanceError::Invalid(Invalid(other.to_string())),
    })?;
    if exclude_zero {
        let book = Book::load(st, env, &filter.customer_id).await?;
        let now = st.now_ms();
        found.retain(|(contract, record)| {
            let b = record.balance(contract.as_deref());
            !book
                .balance(&b, Inclusion::FinalizedAndDraft, now)
                .is_zero()
        });
    }
    Ok(found)
}

/// Adds balances and ledgers (as `show` asks) to the commits and credits inside these
/// contracts' API objects, all of one customer.
pub async fn decorate_contracts(
    st: &AppState,
    env: Env,
    customer_id: &str,
    items: &mut [(&Contract, &mut Value)],
    show: Show,
) -> Result<()> {
    let rolled = items.iter().any(|(c, _)| c.transition.is_some());
    if !(show.anything() || rolled) || items.is_empty() {
        return Ok(());
    }
    let book = Book::load(st, env, customer_id).await?;
    let now = st.now_ms();
    for (contract, v) in items.iter_mut() {
        book.decorate_contract(contract, v, show, now);
    }
    Ok(())
}
