//! Money with its unit: an [`Amount`] is an exact decimal in one credit type (pricing unit, e.g.
//! USD cents), and [`Totals`] sums amounts per credit type.
//!
//! Invariants:
//! - Amounts of different credit types are never added: [`Amount::checked_add`] refuses it and
//!   [`Totals`] keeps one sum per credit type.
//! - Arithmetic is exact (`decimal::add_exact`): a sum that would need rounding is an error.
//! - Core knows no particular credit type: which ones exist comes with the pricing snapshot.

use alloc::collections::BTreeMap;
use alloc::string::String;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::decimal::add_exact;

/// The id of a credit type (pricing unit).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CreditTypeId(pub String);

impl CreditTypeId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A credit type as invoices name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditType {
    pub id: CreditTypeId,
    pub name: String,
}

/// An exact amount in one credit type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Amount {
    pub credit_type: CreditTypeId,
    pub value: Decimal,
}

/// Why amounts could not be combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoneyError {
    /// The sum has no exact decimal.
    Overflow,
    /// The amounts are in different credit types.
    CreditTypeMismatch,
}

impl Amount {
    pub fn new(credit_type: CreditTypeId, value: Decimal) -> Amount {
        Amount { credit_type, value }
    }

    /// The exact sum of two amounts of the same credit type.
    pub fn checked_add(&self, other: &Amount) -> Result<Amount, MoneyError> {
        if self.credit_type != other.credit_type {
            return Err(MoneyError::CreditTypeMismatch);
        }
        let value = add_exact(self.value, other.value).ok_or(MoneyError::Overflow)?;
        Ok(Amount::new(self.credit_type.clone(), value))
    }
}

/// Sums per credit type. A credit type with no amount added reads as zero.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Totals(BTreeMap<CreditTypeId, Decimal>);

impl Totals {
    /// Adds `amount` to its credit type's sum.
    pub fn add(&mut self, amount: &Amount) -> Result<(), MoneyError> {
        let sum = self.0.entry(amount.credit_type.clone()).or_default();
        *sum = add_exact(*sum, amount.value).ok_or(MoneyError::Overflow)?;
        Ok(())
    }

    /// The exact per-credit-type sum of two totals.
    pub fn checked_add(&self, other: &Totals) -> Result<Totals, MoneyError> {
        let mut out = self.clone();
        for amount in other.amounts() {
            out.add(&amount)?;
        }
        Ok(out)
    }

    /// The sum in `credit_type` (zero when none was added).
    pub fn get(&self, credit_type: &CreditTypeId) -> Decimal {
        self.0.get(credit_type).copied().unwrap_or_default()
    }

    /// Each credit type's sum, ordered by credit type id.
    pub fn amounts(&self) -> impl Iterator<Item = Amount> + '_ {
        self.0.iter().map(|(ct, v)| Amount::new(ct.clone(), *v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn ct(s: &str) -> CreditTypeId {
        CreditTypeId(s.into())
    }

    #[test]
    fn amounts_add_only_within_a_credit_type() {
        let a = Amount::new(ct("usd"), Decimal::new(15, 1));
        let b = Amount::new(ct("usd"), Decimal::new(25, 1));
        assert_eq!(
            a.checked_add(&b),
            Ok(Amount::new(ct("usd"), Decimal::from(4)))
        );
        let c = Amount::new(ct("credits"), Decimal::ONE);
        assert_eq!(a.checked_add(&c), Err(MoneyError::CreditTypeMismatch));
        let max = Amount::new(ct("usd"), Decimal::MAX);
        assert_eq!(max.checked_add(&a), Err(MoneyError::Overflow));
    }

    #[test]
    fn totals_keep_one_sum_per_credit_type() {
        let mut t = Totals::default();
        assert_eq!(t.get(&ct("usd")), Decimal::ZERO);
        t.add(&Amount::new(ct("usd"), Decimal::from(2))).unwrap();
        t.add(&Amount::new(ct("credits"), Decimal::from(5)))
            .unwrap();
        t.add(&Amount::new(ct("usd"), Decimal::from(3))).unwrap();
        assert_eq!(t.get(&ct("usd")), Decimal::from(5));
        assert_eq!(t.get(&ct("credits")), Decimal::from(5));
        let doubled = t.checked_add(&t).unwrap();
        assert_eq!(doubled.get(&ct("usd")), Decimal::from(10));
        let ids: Vec<CreditTypeId> = doubled.amounts().map(|a| a.credit_type).collect();
        assert_eq!(ids, [ct("credits"), ct("usd")]);
        let mut full = Totals::default();
        full.add(&Amount::new(ct("usd"), Decimal::MAX)).unwrap();
        assert_eq!(
            full.add(&Amount::new(ct("usd"), Decimal::ONE)),
            Err(MoneyError::Overflow)
        );
    }
}
