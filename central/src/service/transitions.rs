//! Contract transitions: `transition: {from_contract_id, type: RENEWAL, future_invoice_behavior}`
//! on `contracts/create`, and the `transitions` both contracts read back.
//!
//! Invariants:
//! - A RENEWAL starts at or after the end of the contract it renews, which must belong to the
//!   same customer, not be archived and have an `ending_before`; nothing of the renewed
//!   contract changes. `SUPERSEDE` (a client-configured value upstream, absent from the
//!   API's enum) is refused with a 400 naming it. `future_invoice_behavior.trueup: REMOVE`
//!   stops the renewed contract's POSTPAID true-ups (every one not on a finalized invoice yet:
//!   finalized invoices never change) ([`drop_removed_trueups`]).
//! - A contract has at most one successor: the new contract and the successor marker
//!   (`kind::TRANSITION`, id = the renewed contract's id) are inserted in one transaction, so
//!   of creates racing to renew one contract exactly one wins and the others are 400s.
//! - A renewed contract's end cannot move past its successor's start (`check_end_date`). That
//!   check and a renewal's own check of the end read the other's document before writing their
//!   own, so an end-date update racing the renewal's create can still slip in between (the
//!   rollover then happens at the end as it stands: amounts stay consistent).

use rust_decimal::Decimal;
use serde_json::Value;
use tally_core::balances::{Balance, BalanceKind};

use super::contracts::ContractError;
use super::Invalid;
use crate::model::{
    decode, encode, kind, load_children, new_id, AccessItem, BalanceRecord, BalanceType, Contract,
    FutureInvoiceBehavior, RolledOverFrom, TransitionMarker, TransitionRecord, TransitionType,
    TrueupBehavior,
};
use crate::store::{Env, NewDoc, StoreError};
use crate::wire::{Dec, Time};
use crate::AppState;

type Result<T> = std::result::Result<T, ContractError>;

/// A `transition` as a client gives it (`type` and `trueup` as sent, checked here so a refusal
/// can say why).
pub struct TransitionInput {
    pub from_contract_id: String,
    pub transition_type: String,
    pub trueup: Option<String>,
}

fn invalid(msg: String) -> ContractError {
    Invalid(msg).into()
}

/// A checked `transition`: what the new contract stores, and the contract it renews.
pub struct Checked {
    pub record: TransitionRecord,
    pub from: Contract,
}

impl Checked {
    /// Gives the new contract its transition and the commits and credits that roll over to it.
    pub fn apply(self, contract: &mut Contract) -> Result<()> {
        let rolled = rolled_records(&self.from, contract)?;
        for r in rolled {
            match r.balance_type {
                BalanceType::Credit => contract.credits.push(r),
                _ => contract.commits.push(r),
            }
        }
        contract.transition = Some(self.record);
        Ok(())
    }
}

/// The commits and credits of `to` made by rollover from `from` (which ends at the
/// transition): one per segment of each of `from`'s commits and credits with a
/// `rollover_fraction` above zero (recurrences begun by the end included) that has begun
/// before the end and is still usable at it. Each keeps the original's product, name, scope,
/// priority, rate type and `rollover_fraction` (so it rolls over again when the renewal is
/// renewed), is not invoiced again, and holds `0` in its record: what it
/// receives is derived on read (`service::balances::Book`). A POSTPAID commit with a
/// fraction is refused (its remainder is billed by its true-up).
fn rolled_records(from: &Contract, to: &Contract) -> Result<Vec<BalanceRecord>> {
    let end = from.ending_before.map_or(i64::MAX, |t| t.0);
    let mut out = Vec::new();
    for record in from.own_balance_records(end) {
        let fraction = match record.rollover_fraction {
            Some(f) if !f.0.is_zero() && record.archived_at.is_none() => f,
            _ => continue,
        };
        if record.balance_type == BalanceType::Postpaid {
            return Err(invalid(format!(
                "transition.from_contract_id: POSTPAID commit {} of contract {} has a                  rollover_fraction; rolling over postpaid commits is not supported by Tally                  (its remainder is billed by its true-up)",
                record.id, from.id
            )));
        }
        for seg in &record.access_schedule.schedule_items {
            if !(seg.starting_at.0 < end && end <= seg.ending_before.0) {
                continue;
            }
            let (start, stop) = tally_core::rollover::rolled_window(
                seg.starting_at.0,
                seg.ending_before.0,
                to.starting_at.0,
                to.ending_before.map(|t| t.0),
            )
            .map_err(|e| invalid(format!("transition: {e}")))?;
            let mut rolled = record.clone();
            rolled.id = new_id();
            rolled.access_schedule.schedule_items = vec![AccessItem {
                id: new_id(),
                amount: Dec(Decimal::ZERO),
                starting_at: Time(start),
                ending_before: Time(stop),
            }];
            rolled.invoice_schedule = None;
            rolled.recurring_id = None;
            rolled.uniqueness_key = None;
            rolled.created_at = to.created_at;
            rolled.rolled_over_from = Some(RolledOverFrom {
                contract_id: from.id.clone(),
                balance_id: record.id.clone(),
                segment_id: seg.id.clone(),
                fraction,
            });
            out.push(rolled);
        }
    }
    Ok(out)
}

/// Checks a new contract's `transition` (for `customer_id`, starting at `starting_at`).
pub async fn check(
    st: &AppState,
    env: Env,
    input: TransitionInput,
    customer_id: &str,
    starting_at: Time,
) -> Result<Checked> {
    let transition_type = match TransitionType::parse(&input.transition_type) {
        Some(t) => t,
        None if input.transition_type.eq_ignore_ascii_case("SUPERSEDE") => {
            return Err(invalid(
                "transition.type: SUPERSEDE is not supported by Tally (the API's enum is \
                 RENEWAL)"
                    .into(),
            ))
        }
        None => {
            return Err(invalid(format!(
                "transition.type: {:?} is not one of RENEWAL",
                input.transition_type
            )))
        }
    };
    let trueup = match input.trueup.as_deref() {
        None => None,
        Some(t) => match TrueupBehavior::parse(t) {
            Some(t) => Some(t),
            None => {
                return Err(invalid(format!(
                    "transition.future_invoice_behavior.trueup: {t:?} is not one of REMOVE, AS_IS"
                )))
            }
        },
    };
    let from = &input.from_contract_id;
    let field = "transition.from_contract_id";
    let old = match st.stores.config.get_doc(env, kind::CONTRACT, from).await? {
        Some(doc) => decode::<Contract>(&doc)?,
        None => return Err(invalid(format!("{field}: contract {from} not found"))),
    };
    if old.customer_id != customer_id {
        return Err(invalid(format!(
            "{field}: contract {from} belongs to another customer"
        )));
    }
    if old.archived_at.is_some() {
        return Err(invalid(format!(
            "{field}: contract {from} is archived; an archived contract cannot be renewed"
        )));
    }
    let Some(end) = old.ending_before else {
        return Err(invalid(format!(
            "{field}: contract {from} is open-ended; a RENEWAL starts at or after the end of \
             the contract it renews (give it an ending_before with contracts/updateEndDate)"
        )));
    };
    if starting_at < end {
        return Err(invalid(format!(
            "starting_at must not be before the ending_before ({}) of contract {from}, which \
             this contract renews",
            tally_core::time::format_rfc3339_ms(end.0)
        )));
    }
    if let Some(m) = successor(st, env, from).await? {
        return Err(already_renewed(&m));
    }
    let record = TransitionRecord {
        from_contract_id: from.clone(),
        transition_type,
        future_invoice_behavior: trueup.map(|t| FutureInvoiceBehavior { trueup: Some(t) }),
    };
    Ok(Checked { record, from: old })
}

fn already_renewed(m: &TransitionMarker) -> ContractError {
    invalid(format!(
        "transition.from_contract_id: contract {} already has a {} successor ({})",
        m.from_contract_id,
        m.transition_type.as_str(),
        m.to_contract_id
    ))
}

/// The successor of `contract_id`, if it has one.
pub async fn successor(
    st: &AppState,
    env: Env,
    contract_id: &str,
) -> Result<Option<TransitionMarker>> {
    match st
        .stores
        .config
        .get_doc(env, kind::TRANSITION, contract_id)
        .await?
    {
        Some(doc) => Ok(Some(decode(&doc)?)),
        None => Ok(None),
    }
}

/// Inserts a new contract (`doc`) and, when it renews one, its successor marker in the same
/// transaction. A taken uniqueness key is `Ok(false)`; a contract renewed meanwhile is a 400.
pub async fn insert(st: &AppState, env: Env, contract: &Contract, doc: NewDoc<'_>) -> Result<bool> {
    let Some(t) = &contract.transition else {
        return Ok(super::insert_unique(st, env, doc).await?);
    };
    let marker = TransitionMarker {
        from_contract_id: t.from_contract_id.clone(),
        to_contract_id: contract.id.clone(),
        transition_type: t.transition_type,
        to_starting_at: contract.starting_at,
        remove_trueups: t
            .future_invoice_behavior
            .as_ref()
            .is_some_and(|f| f.trueup == Some(TrueupBehavior::Remove)),
    };
    let body = encode(&marker)?;
    let marker_doc = NewDoc {
        kind: kind::TRANSITION,
        id: &t.from_contract_id,
        parent_id: Some(&contract.customer_id),
        unique_key: None,
        created_ms: doc.created_ms,
        body,
    };
    match st.stores.config.insert_docs(env, &[doc, marker_doc]).await {
        Ok(()) => Ok(true),
        Err(StoreError::Conflict(_)) => match successor(st, env, &t.from_contract_id).await? {
            Some(m) => Err(already_renewed(&m)),
            None => Ok(false),
        },
        Err(e) => Err(e.into()),
    }
}

/// Refuses moving a renewed contract's end past its successor's start (or clearing it).
pub async fn check_end_date(
    st: &AppState,
    env: Env,
    contract: &Contract,
    ending_before: Option<Time>,
    field: &str,
) -> Result<()> {
    let Some(m) = successor(st, env, &contract.id).await? else {
        return Ok(());
    };
    if ending_before.is_none_or(|end| end > m.to_starting_at) {
        return Err(invalid(format!(
            "{field}: contract {} is renewed by {}, which starts at {}; its end cannot be \
             after that",
            contract.id,
            m.to_contract_id,
            tally_core::time::format_rfc3339_ms(m.to_starting_at.0)
        )));
    }
    Ok(())
}

/// The customer's transitions (every successor marker), for contract reads.
pub async fn of_customer(
    st: &AppState,
    env: Env,
    customer_id: &str,
) -> Result<Vec<TransitionMarker>> {
    Ok(load_children(&st.stores, env, kind::TRANSITION, customer_id).await?)
}

/// Sets `transitions` (the ones the contract is either side of) on contract read shapes: the
/// flat v2 shape, or v1's `initial` and `current`.
pub fn decorate(markers: &[TransitionMarker], items: &mut [(&Contract, &mut Value)], v2: bool) {
    for (contract, v) in items.iter_mut() {
        let list: Vec<Value> = markers
            .iter()
            .filter(|m| m.from_contract_id == contract.id || m.to_contract_id == contract.id)
            .map(TransitionMarker::api_json)
            .collect();
        if v2 {
            v["transitions"] = Value::Array(list);
        } else {
            for part in ["initial", "current"] {
                if let Some(terms) = v.get_mut(part) {
                    terms["transitions"] = Value::Array(list.clone());
                }
            }
        }
    }
}

/// One rollover of a renewal's commit or credit: `amount` moves at `at_ms` (the renewed
/// contract's effective end) from the original segment to the rolled one (usable from
/// `to_start_ms`). Derived by `service::balances::Book` whenever it is loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollover {
    pub from_balance: String,
    pub from_segment: String,
    pub from_contract: String,
    pub to_balance: String,
    pub to_segment: String,
    pub to_contract: String,
    pub fraction: Decimal,
    pub at_ms: i64,
    pub to_start_ms: i64,
    /// Set when derived.
    pub amount: Decimal,
}

/// The rollovers of these contracts (one customer's, all of them), by transition instant.
pub fn pending_rollovers(contracts: &[Contract], now_ms: i64) -> Vec<Rollover> {
    let mut out = Vec::new();
    for to in contracts {
        for r in to.own_balance_records(now_ms) {
            let (Some(f), None) = (&r.rolled_over_from, r.archived_at) else {
                continue;
            };
            let Some(from) = contracts.iter().find(|c| c.id == f.contract_id) else {
                continue;
            };
            let (Some(at_ms), Some(seg)) = (
                from.snapshot().effective_end_ms(),
                r.access_schedule.schedule_items.first(),
            ) else {
                continue;
            };
            out.push(Rollover {
                from_balance: f.balance_id.clone(),
                from_segment: f.segment_id.clone(),
                from_contract: from.id.clone(),
                to_balance: r.id.clone(),
                to_segment: seg.id.clone(),
                to_contract: to.id.clone(),
                fraction: f.fraction.0,
                at_ms,
                to_start_ms: seg.starting_at.0,
                amount: Decimal::ZERO,
            });
        }
    }
    out.sort_by_key(|r| r.at_ms);
    out
}

/// Clears the true-up of every POSTPAID commit invoiced on a contract renewed with
/// `trueup: REMOVE` (among `markers`); the commit's remainder then expires at its end.
pub fn drop_removed_trueups(balances: &mut [Balance], markers: &[TransitionMarker]) {
    for m in markers.iter().filter(|m| m.remove_trueups) {
        for b in balances.iter_mut() {
            if b.kind == BalanceKind::PostpaidCommit && b.invoiced_on(&m.from_contract_id) {
                b.invoice_schedule.clear();
            }
        }
    }
}
