//! Rate cards: the read-modify-writes of a card document (update of name, description and
//! aliases; archive), with optimistic concurrency so concurrent changes are all kept, and the
//! configuration limits of rates (tiers per rate, rates per card, price magnitude). Creating
//! cards and their rates is still done by `http::rate_cards` (to be moved here).

use super::{lost_race_is_false, modify_doc, require_text, retry_conflicts, Invalid, Write};
use crate::model::{decode, encode, kind, load, LoadError, RateCard, RateCardAlias};
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

/// Most tiers one TIERED rate may have.
pub const MAX_TIERS_PER_RATE: usize = 100;
/// Most rates one rate card may hold (every draft of a contract on it loads them all).
pub const MAX_RATES_PER_CARD: usize = 5_000;
/// Largest price (and tier price) magnitude accepted, in the pricing unit (USD cents: ten
/// billion dollars a unit). Above it a few units already overflow the exact decimal range of an
/// invoice, so the contract could never be rated; refusing it here keeps the job unblocked.
pub const MAX_PRICE_ABS: rust_decimal::Decimal = rust_decimal::Decimal::from_parts(
    3_567_587_328, // 10^12 = 232 * 2^32 + 3_567_587_328
    232,
    0,
    false,
    0,
);

/// Refuses a rate whose tiers or prices pass the configured limits, naming the field.
pub fn check_rate_limits(
    price: Option<rust_decimal::Decimal>,
    tier_prices: &[rust_decimal::Decimal],
) -> std::result::Result<(), Invalid> {
    if tier_prices.len() > MAX_TIERS_PER_RATE {
        return Err(Invalid(format!(
            "tiers: at most {MAX_TIERS_PER_RATE} tiers are allowed per rate"
        )));
    }
    let too_big = |p: &rust_decimal::Decimal| p.abs() > MAX_PRICE_ABS;
    if price.as_ref().is_some_and(too_big) || tier_prices.iter().any(too_big) {
        return Err(Invalid(format!(
            "price: prices are limited to {MAX_PRICE_ABS} in magnitude (larger ones cannot be \
             rated without overflowing an invoice)"
        )));
    }
    Ok(())
}

/// Refuses adding `adding` rates to a card that already holds `existing`.
pub fn check_card_capacity(existing: usize, adding: usize) -> std::result::Result<(), Invalid> {
    if existing.saturating_add(adding) > MAX_RATES_PER_CARD {
        return Err(Invalid(format!(
            "a rate card holds at most {MAX_RATES_PER_CARD} rates; this one has {existing}"
        )));
    }
    Ok(())
}

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

/// Applies a change to a card, retried on a concurrent change of the same card. The card's
/// alias index changes in the same transaction as its document.
pub async fn update(st: &AppState, env: Env, id: &str, change: CardChange) -> Result<()> {
    if let Some(name) = &change.name {
        require_text("name", name, 256)?;
    }
    if let Some(aliases) = &change.aliases {
        check_aliases(aliases)?;
    }
    let change = &change;
    retry_conflicts(move || async move {
        let doc = st.stores.config.get_doc(env, kind::RATE_CARD, id).await?;
        let doc = doc.ok_or(RateCardError::NotFound("rate card"))?;
        let mut card: RateCard = decode(&doc)?;
        if let Some(name) = &change.name {
            card.name = name.clone();
        }
        if let Some(d) = &change.description {
            card.description = Some(d.clone());
        }
        if let Some(aliases) = &change.aliases {
            card.assign_aliases(aliases.clone(), st.now_ms());
        }
        let names = alias_names(&card);
        let written = st
            .stores
            .config
            .update_rate_card(env, id, &encode(&card)?, doc.version, &names)
            .await;
        Ok(lost_race_is_false(written)?.then_some(()))
    })
    .await
}

/// The alias names a card's document holds, as the alias index keeps them.
pub fn alias_names(card: &RateCard) -> Vec<String> {
    card.aliases.iter().map(|a| a.name.clone()).collect()
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

#[cfg(test)]
mod tests {
    use super::MAX_PRICE_ABS;

    #[test]
    fn the_price_limit_is_ten_to_the_twelfth() {
        assert_eq!(
            MAX_PRICE_ABS,
            rust_decimal::Decimal::from(1_000_000_000_000_i64)
        );
    }
}
