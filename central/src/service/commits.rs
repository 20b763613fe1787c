//! Commits and credits: contract-level ones (given on `contracts/create`, stored in the contract
//! document) and customer-level ones (`contracts/customerCommits/*`, `customerCredits/*`, their
//! own documents), validated and turned into core's [`Balance`]s for pricing.
//!
//! Today the stub: no contract has any (contracts/create still refuses `commits` and `credits`).

use tally_core::balances::Balance;

use crate::model::Contract;
use crate::store::{Env, StoreError};
use crate::AppState;

/// The commits and credits the contract's usage may draw on: its own and those of its customer
/// that apply to it (`applicable_contract_ids` empty or naming it), archived ones left out.
pub async fn applicable_balances(
    _st: &AppState,
    _env: Env,
    _contract: &Contract,
) -> Result<Vec<Balance>, StoreError> {
    Ok(Vec::new())
}

/// Every commit and credit of the customer: its contracts' and its own, archived ones left out.
pub async fn customer_balances(
    _st: &AppState,
    _env: Env,
    _customer_id: &str,
) -> Result<Vec<Balance>, StoreError> {
    Ok(Vec::new())
}
