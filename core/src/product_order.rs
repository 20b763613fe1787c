//! A rate card's product order: the order its products' lines take on an invoice (and its rates
//! in `getRates` / `getRateSchedule`). `setRateCardProductsOrder` and `moveRateCardProducts`
//! change it; [`effective`] says what it is.
//!
//! Invariants:
//! - The order of a card is a permutation of the products that have a rate on it: the products
//!   an explicit order names first, then every other one in the order it was first given a
//!   rate. So a card nobody ordered lists its products as they were added,
//!   and a product added after an ordering goes last.
//! - A change names only products on the card, each at most once, and positions inside the
//!   order; anything else is refused whole ([`OrderError`]), changing nothing.
//! - Every operation is O(n log n) in the products of the card (a move: O(n)).

use alloc::collections::BTreeSet;
use alloc::string::String;
use alloc::vec::Vec;

/// Why a change of a product order was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderError {
    /// The product has no rate on the card (or does not exist).
    NotOnCard { field: String, product_id: String },
    /// `product_order` names the product twice.
    Duplicate { field: String, product_id: String },
    /// A move's position is past the last one (`products - 1`).
    PositionOutOfRange {
        field: String,
        position: u64,
        products: usize,
    },
}

impl core::fmt::Display for OrderError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            OrderError::NotOnCard { field, product_id } => write!(
                f,
                "{field}: product {product_id} has no rate on this rate card"
            ),
            OrderError::Duplicate { field, product_id } => {
                write!(f, "{field}: product {product_id} is listed more than once")
            }
            OrderError::PositionOutOfRange {
                field,
                position,
                products,
            } => write!(
                f,
                "{field}: position {position} is past the end (the rate card has {products} \
                 products, positions 0 to {})",
                products.saturating_sub(1)
            ),
        }
    }
}

/// The card's order from its stored explicit order and its products in the order they were
/// first given a rate (`first_added` may repeat a product; only its first occurrence counts).
///
/// A stored product is kept even when `first_added` lacks it: rates are never removed from a
/// card, so it is on the card, and `first_added` was read before its rate was added (a
/// concurrent writer). Dropping it would lose that writer's order.
pub fn effective<'a>(
    stored: &[String],
    first_added: impl IntoIterator<Item = &'a str>,
) -> Vec<String> {
    let mut placed = BTreeSet::new();
    let mut out: Vec<String> = stored
        .iter()
        .filter(|p| placed.insert(p.as_str()))
        .cloned()
        .collect();
    for p in first_added {
        if placed.insert(p) {
            out.push(String::from(p));
        }
    }
    out
}

/// `setRateCardProductsOrder`: the products of `requested` first, in that order, then the rest
/// of `current` in their current relative order.
pub fn set_order(current: &[String], requested: &[String]) -> Result<Vec<String>, OrderError> {
    let on_card: BTreeSet<&str> = current.iter().map(String::as_str).collect();
    let mut named = BTreeSet::new();
    for (i, p) in requested.iter().enumerate() {
        let field = || alloc::format!("product_order[{i}]");
        if !on_card.contains(p.as_str()) {
            return Err(OrderError::NotOnCard {
                field: field(),
                product_id: p.clone(),
            });
        }
        if !named.insert(p.as_str()) {
            return Err(OrderError::Duplicate {
                field: field(),
                product_id: p.clone(),
            });
        }
    }
    let mut out = requested.to_vec();
    out.extend(
        current
            .iter()
            .filter(|p| !named.contains(p.as_str()))
            .cloned(),
    );
    Ok(out)
}

/// One move of `moveRateCardProducts`: the product ends at `position` (0-based) of the order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductMove {
    pub product_id: String,
    pub position: u64,
}

/// `moveRateCardProducts`: the moves applied one after another, in the order given (a product
/// may move more than once). A position past the last one is refused, not clamped: upstream is
/// silent, and a silently different order is worse than a 400.
pub fn apply_moves(current: &[String], moves: &[ProductMove]) -> Result<Vec<String>, OrderError> {
    let mut out = current.to_vec();
    for (i, m) in moves.iter().enumerate() {
        let field = || alloc::format!("product_moves[{i}]");
        let Some(from) = out.iter().position(|p| *p == m.product_id) else {
            return Err(OrderError::NotOnCard {
                field: field(),
                product_id: m.product_id.clone(),
            });
        };
        let to = usize::try_from(m.position)
            .ok()
            .filter(|&to| to < out.len())
            .ok_or_else(|| OrderError::PositionOutOfRange {
                field: field(),
                position: m.position,
                products: out.len(),
            })?;
        let product = out.remove(from);
        out.insert(to, product);
    }
    debug_assert_eq!(out.len(), current.len());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(s: &[&str]) -> Vec<String> {
        s.iter().map(|p| String::from(*p)).collect()
    }

    fn mv(p: &str, position: u64) -> ProductMove {
        ProductMove {
            product_id: p.into(),
            position,
        }
    }

    #[test]
    fn the_default_order_is_first_added_and_new_products_go_last() {
        assert_eq!(effective(&[], ["a", "b", "a", "c"]), ids(&["a", "b", "c"]));
        let stored = ids(&["c", "a", "c"]);
        assert_eq!(
            effective(&stored, ["a", "b", "c", "d"]),
            ids(&["c", "a", "b", "d"])
        );
        // A product ordered by a writer that saw a rate this reader did not yet is kept.
        assert_eq!(
            effective(&ids(&["n", "a"]), ["a", "b"]),
            ids(&["n", "a", "b"])
        );
    }

    #[test]
    fn set_order_puts_the_named_first_and_keeps_the_rest() {
        let cur = ids(&["a", "b", "c", "d"]);
        assert_eq!(
            set_order(&cur, &ids(&["c", "a"])),
            Ok(ids(&["c", "a", "b", "d"]))
        );
        assert_eq!(set_order(&cur, &[]), Ok(cur.clone()));
        assert_eq!(
            set_order(&cur, &ids(&["c", "x"])),
            Err(OrderError::NotOnCard {
                field: "product_order[1]".into(),
                product_id: "x".into()
            })
        );
        assert_eq!(
            set_order(&cur, &ids(&["c", "a", "c"])),
            Err(OrderError::Duplicate {
                field: "product_order[2]".into(),
                product_id: "c".into()
            })
        );
    }

    #[test]
    fn moves_apply_in_order_and_positions_stay_inside() {
        let cur = ids(&["a", "b", "c", "d"]);
        assert_eq!(
            apply_moves(&cur, &[mv("d", 0)]),
            Ok(ids(&["d", "a", "b", "c"]))
        );
        assert_eq!(
            apply_moves(&cur, &[mv("a", 3)]),
            Ok(ids(&["b", "c", "d", "a"]))
        );
        assert_eq!(
            apply_moves(&cur, &[mv("a", 3), mv("a", 1), mv("d", 0)]),
            Ok(ids(&["d", "b", "a", "c"]))
        );
        assert_eq!(
            apply_moves(&cur, &[mv("b", 1), mv("a", 4)]),
            Err(OrderError::PositionOutOfRange {
                field: "product_moves[1]".into(),
                position: 4,
                products: 4
            })
        );
        assert!(matches!(
            apply_moves(&cur, &[mv("x", 0)]),
            Err(OrderError::NotOnCard { .. })
        ));
        assert_eq!(apply_moves(&cur, &[]), Ok(cur.clone()));
        assert_eq!(
            apply_moves(&cur, &[mv("c", u64::MAX)]).map_err(|e| alloc::format!("{e}")),
            Err(alloc::format!(
                "product_moves[0]: position {} is past the end (the rate card has 4 products, \
                 positions 0 to 3)",
                u64::MAX
            ))
        );
    }
}
