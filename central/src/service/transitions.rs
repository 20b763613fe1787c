//! Contract transitions: `transition: {from_contract_id, type: RENEWAL, future_invoice_behavior}`
//! on `contracts/create`, and the `transitions` both contracts read back.
//!
//! Invariants:
//! - A RENEWAL starts at or after the end of the contract it renews, which must belong to the
//!   same customer, not be archived and have an `ending_before`; nothing of the renewed
//!   contract changes. `SUPERSEDE` (a client-configured value upstream, absent from the
//!   API's enum) and `future_invoice_behavior.trueup: REMOVE` are refused with a 400 naming
//!   them.
//! - A contract has at most one successor: the new contract and the successor marker
//!   (`kind::TRANSITION`, id = the renewed contract's id) are inserted in one transaction, so
//!   of creates racing to renew one contract exactly one wins and the others are 400s.
//! - A renewed contract's end cannot move past its successor's start (`check_end_date`).

use serde_json::Value;

use super::contracts::ContractError;
use super::Invalid;
use crate::model::{
    decode, encode, kind, load_children, Contract, FutureInvoiceBehavior, TransitionMarker,
    TransitionRecord, TransitionType, TrueupBehavior,
};
use crate::store::{Env, NewDoc, StoreError};
use crate::wire::Time;
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

/// Checks a new contract's `transition` (for `customer_id`, starting at `starting_at`) and
/// returns what the contract stores.
pub async fn check(
    st: &AppState,
    env: Env,
    input: TransitionInput,
    customer_id: &str,
    starting_at: Time,
) -> Result<TransitionRecord> {
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
            Some(TrueupBehavior::AsIs) => Some(TrueupBehavior::AsIs),
            Some(TrueupBehavior::Remove) => {
                return Err(invalid(
                    "transition.future_invoice_behavior.trueup: REMOVE is not supported by \
                     Tally yet (only AS_IS: the renewed contract's true-ups bill as scheduled)"
                        .into(),
                ))
            }
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
    Ok(TransitionRecord {
        from_contract_id: from.clone(),
        transition_type,
        future_invoice_behavior: trueup.map(|t| FutureInvoiceBehavior { trueup: Some(t) }),
    })
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
