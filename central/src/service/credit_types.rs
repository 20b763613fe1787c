//! Credit types (pricing units, `metronome-api.md` §1.7, §2.5): USD (cents), built in, and the
//! environment's custom pricing units (`credit-types/create|archive|list`), and the checks that
//! name one: a rate, a commit's or credit's access schedule, an override's `overwrite_rate` may
//! be in a custom unit; a rate card converts it to its fiat credit type
//! (`credit_type_conversions`), which rates and overrides in that unit require.
//!
//! Invariants:
//! - A custom unit's name is unique in its environment among every custom unit ever created
//!   (archived ones keep theirs) and differs from USD's: the name is the document's unique key,
//!   so two concurrent creates of one name store one (the other is a 409).
//! - Archiving only stops new uses (a new rate, commit, credit, override or conversion naming
//!   the unit is a 400); what already uses it keeps pricing, since conversions are never
//!   removed. Archived units are left out of `credit-types/list`.
//! - A conversion on a rate card is only ever added (changing one is a 400), so a check that a
//!   card converts a unit stays true once made.

use crate::model::{
    decode, encode, kind, new_id, CreditTypeConversion, CreditTypeRef, CustomCreditType, LoadError,
    OverrideRecord, RateCard, USD_ID, USD_NAME,
};
use crate::store::{ArchiveFilter, Env, NewDoc, PageReq, StoreError};
use crate::wire::Time;
use crate::AppState;

use super::{modify_doc, require_text, Invalid, SeqPage, Write};

#[derive(Debug, thiserror::Error)]
pub enum CreditTypeError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// The name is taken (by a custom unit, archived or not, or by USD).
    #[error("a credit type named {0:?} already exists")]
    NameTaken(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<LoadError> for CreditTypeError {
    fn from(e: LoadError) -> Self {
        match e {
            LoadError::NotFound(what) => CreditTypeError::NotFound(what),
            LoadError::Store(e) => CreditTypeError::Store(e),
        }
    }
}

type Result<T> = std::result::Result<T, CreditTypeError>;

/// Creates a custom pricing unit; its id.
pub async fn create(st: &AppState, env: Env, name: &str) -> Result<String> {
    require_text("name", name, 256)?;
    if name == USD_NAME {
        return Err(CreditTypeError::NameTaken(name.into()));
    }
    let now = st.now_ms();
    let record = CustomCreditType {
        id: new_id(),
        name: name.into(),
        created_at: Time(now),
        archived_at: None,
    };
    let doc = NewDoc {
        kind: kind::CREDIT_TYPE,
        id: &record.id,
        parent_id: None,
        unique_key: Some(&record.name),
        created_ms: now,
        body: encode(&record)?,
    };
    if !super::insert_unique(st, env, doc).await? {
        return Err(CreditTypeError::NameTaken(record.name));
    }
    Ok(record.id)
}

/// Archives a custom pricing unit (idempotent). USD cannot be archived.
pub async fn archive(st: &AppState, env: Env, id: &str) -> Result<()> {
    if id == USD_ID {
        return Err(Invalid("id: USD (cents) cannot be archived".into()).into());
    }
    let now = Time(st.now_ms());
    modify_doc(
        st,
        env,
        kind::CREDIT_TYPE,
        id,
        "credit type",
        |c: &mut CustomCreditType| {
            if c.archived_at.is_some() {
                return Ok::<_, CreditTypeError>(Write::Unchanged);
            }
            c.archived_at = Some(now);
            Ok(Write::Save { archived: true })
        },
    )
    .await
    .map(drop)
}

/// One keyset page of the active custom units (`limit + 1` fetched, so the caller knows whether
/// more follow), in creation order.
pub async fn list(st: &AppState, env: Env, page: PageReq) -> Result<SeqPage<CustomCreditType>> {
    let fetch = PageReq {
        after: page.after,
        limit: page.limit + 1,
    };
    let docs = st
        .stores
        .config
        .list_docs(
            env,
            kind::CREDIT_TYPE,
            None,
            ArchiveFilter::Active,
            Some(fetch),
        )
        .await?;
    docs.iter().map(|d| Ok((d.seq, decode(d)?))).collect()
}

/// The credit type `id` names for a new use (default USD cents): USD or an unarchived custom
/// unit of the environment. The message names no field; callers prefix theirs.
pub async fn resolve(
    st: &AppState,
    env: Env,
    id: Option<&str>,
) -> std::result::Result<CreditTypeRef, ResolveError> {
    let id = match id {
        None | Some(USD_ID) => return Ok(CreditTypeRef::usd()),
        Some(id) => id,
    };
    let Some(doc) = st.stores.config.get_doc(env, kind::CREDIT_TYPE, id).await? else {
        return Err(Invalid(format!(
            "credit type {id:?} is unknown (neither USD (cents) nor a custom pricing unit)"
        ))
        .into());
    };
    let c: CustomCreditType = decode(&doc)?;
    match c.archived_at {
        Some(_) => Err(Invalid(format!("credit type {id:?} is archived")).into()),
        None => Ok(c.reference()),
    }
}

/// Why a credit type could not be resolved: a bad id (a 400 for the field naming it) or the store.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ResolveError {
    /// The error with `field: ` before an invalid id's message.
    pub fn at(self, field: &str) -> ResolveError {
        match self {
            ResolveError::Invalid(Invalid(m)) => Invalid(format!("{field}: {m}")).into(),
            other => other,
        }
    }
}

/// Refuses a credit type a rate card cannot price in: not its fiat one and not converted by it.
pub fn check_priced_in(
    field: &str,
    credit_type: &CreditTypeRef,
    card: Option<&RateCard>,
) -> std::result::Result<(), Invalid> {
    let fiat = card.map_or(USD_ID, |c| c.fiat_credit_type.id.as_str());
    let converted = card.is_some_and(|c| {
        c.credit_type_conversions
            .iter()
            .any(|k| k.custom_credit_type.id == credit_type.id)
    });
    match credit_type.id == fiat || converted {
        true => Ok(()),
        false => Err(Invalid(format!(
            "{field}: the rate card has no credit_type_conversions entry for credit type {:?} \
             ({}); add one with rate-cards/update add_credit_type_conversions",
            credit_type.id, credit_type.name
        ))),
    }
}

/// Refuses OVERWRITE overrides (`field[i]`) priced in a credit type the contract's rate card
/// (`None`: no card, USD only) cannot price in.
pub async fn check_overrides_priced(
    st: &AppState,
    env: Env,
    field: &str,
    rate_card_id: Option<&str>,
    overrides: &[OverrideRecord],
) -> std::result::Result<(), ResolveError> {
    let card: Option<RateCard> = match rate_card_id {
        Some(id) => match st.stores.config.get_doc(env, kind::RATE_CARD, id).await? {
            Some(doc) => Some(decode(&doc)?),
            None => None,
        },
        None => None,
    };
    for (i, o) in overrides.iter().enumerate() {
        if let Some(r) = &o.overwrite_rate {
            let at = format!("{field}[{i}].overwrite_rate.credit_type_id");
            check_priced_in(&at, &r.credit_type, card.as_ref())?;
        }
    }
    Ok(())
}

/// A conversion as sent (`credit_type_conversions[]`, `add_credit_type_conversions[]`).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ConversionInput {
    pub custom_credit_type_id: String,
    pub fiat_per_custom_credit: crate::wire::Dec,
}

/// `existing` with `adding` added (errors name `field[i]`): each an unarchived custom unit
/// other than the card's fiat one, at a rate > 0; one already on the card must be given with
/// the same rate (conversions are immutable), one given twice is refused.
pub async fn add_conversions(
    st: &AppState,
    env: Env,
    field: &str,
    existing: &[CreditTypeConversion],
    adding: Vec<ConversionInput>,
) -> std::result::Result<Vec<CreditTypeConversion>, ResolveError> {
    let mut out = existing.to_vec();
    let mut seen = std::collections::BTreeSet::new();
    for (i, c) in adding.into_iter().enumerate() {
        let at = format!("{field}[{i}]");
        let rate = c.fiat_per_custom_credit.0;
        if rate <= rust_decimal::Decimal::ZERO {
            return Err(Invalid(format!(
                "{at}.fiat_per_custom_credit: must be greater than 0"
            ))
            .into());
        }
        if rate > super::rate_cards::MAX_PRICE_ABS {
            return Err(Invalid(format!(
                "{at}.fiat_per_custom_credit: must be at most {}",
                super::rate_cards::MAX_PRICE_ABS
            ))
            .into());
        }
        let id_field = format!("{at}.custom_credit_type_id");
        if c.custom_credit_type_id == USD_ID {
            return Err(Invalid(format!(
                "{id_field}: USD (cents) is fiat, not a custom unit"
            ))
            .into());
        }
        if !seen.insert(c.custom_credit_type_id.clone()) {
            return Err(Invalid(format!("{id_field}: given more than once")).into());
        }
        let text = rate.normalize().to_string();
        // One the card has: the same rate again changes nothing (even if the unit was archived
        // since); another rate is refused.
        let id = c.custom_credit_type_id.as_str();
        if let Some(k) = out.iter().find(|k| k.custom_credit_type.id == id) {
            if k.fiat_per_custom_credit == text {
                continue;
            }
            return Err(Invalid(format!(
                "{at}.fiat_per_custom_credit: the rate card already converts {} at {}; \
                 conversions cannot be changed",
                k.custom_credit_type.name, k.fiat_per_custom_credit
            ))
            .into());
        }
        let custom = resolve(st, env, Some(id))
            .await
            .map_err(|e| e.at(&id_field))?;
        out.push(CreditTypeConversion {
            custom_credit_type: custom,
            fiat_per_custom_credit: text,
        });
    }
    Ok(out)
}

/// A resolve error in an area's own error type: `Invalid` stays a 400, the store's error its own.
macro_rules! from_resolve_error {
    ($($area:ty),+) => {$(
        impl From<ResolveError> for $area {
            fn from(e: ResolveError) -> Self {
                match e {
                    ResolveError::Invalid(e) => e.into(),
                    ResolveError::Store(e) => e.into(),
                }
            }
        }
    )+};
}

from_resolve_error!(
    CreditTypeError,
    super::rate_cards::RateCardError,
    super::commits::CommitError,
    super::contracts::ContractError
);
