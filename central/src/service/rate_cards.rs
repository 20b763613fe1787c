//! Rate cards: the read-modify-writes of a card document (update of name, description and
//! aliases; archive), with optimistic concurrency so concurrent changes are all kept. Creating
//! cards and their rates is still done by `http::rate_cards` (to be moved here).

use super::{modify_doc, require_text, Invalid, Write};
use crate::model::{kind, load, LoadError, RateCard, RateCardAlias};
use crate::store::{Env, StoreError};
use crate::wire::Time;
use crate::AppState;

#[derive(Debug, thiserror::Error)]
pub enum RateCardError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<LoadError> for RateCardError {
    fn from(e: LoadError) -> Self {
        match e {
            LoadError::NotFound(what) => RateCardError::NotFound(what),
            LoadError::Store(e) => RateCardError::Store(e),
        }
    }
}

type Result<T> = std::result::Result<T, RateCardError>;

/// Refuses alias names that are empty or too long, and windows that end before they start.
pub fn check_aliases(aliases: &[RateCardAlias]) -> std::result::Result<(), Invalid> {
    for a in aliases {
        require_text("aliases[].name", &a.name, 256)?;
        if let (Some(s), Some(e)) = (a.starting_at, a.ending_before) {
            if e <= s {
                return Err(Invalid(
                    "alias ending_before must be after starting_at".into(),
                ));
            }
        }
    }
    Ok(())
}

pub async fn get(st: &AppState, env: Env, id: &str) -> Result<RateCard> {
    Ok(load(&st.stores, env, kind::RATE_CARD, id, "rate card").await?)
}

/// The fields `rate-cards/update` may change (absent ones are kept).
pub struct CardChange {
    pub name: Option<String>,
    pub description: Option<String>,
    pub aliases: Option<Vec<RateCardAlias>>,
}

/// Applies a change to a card, retried on a concurrent change of the same card.
pub async fn update(st: &AppState, env: Env, id: &str, change: CardChange) -> Result<()> {
    if let Some(name) = &change.name {
        require_text("name", name, 256)?;
    }
    if let Some(aliases) = &change.aliases {
        check_aliases(aliases)?;
    }
    let now = st.now_ms();
    modify_doc(
        st,
        env,
        kind::RATE_CARD,
        id,
        "rate card",
        |card: &mut RateCard| {
            if let Some(name) = &change.name {
                card.name = name.clone();
            }
            if let Some(d) = &change.description {
                card.description = Some(d.clone());
            }
            if let Some(aliases) = &change.aliases {
                card.assign_aliases(aliases.clone(), now);
            }
            Ok::<_, RateCardError>(Write::Save {
                archived: card.archived_at.is_some(),
            })
        },
    )
    .await?;
    Ok(())
}

/// Archives a card (idempotent).
pub async fn archive(st: &AppState, env: Env, id: &str) -> Result<()> {
    let now = Time(st.now_ms());
    modify_doc(
        st,
        env,
        kind::RATE_CARD,
        id,
        "rate card",
        |card: &mut RateCard| {
            if card.archived_at.is_some() {
                return Ok::<_, RateCardError>(Write::Unchanged);
            }
            card.archived_at = Some(now);
            Ok(Write::Save { archived: true })
        },
    )
    .await?;
    Ok(())
}
