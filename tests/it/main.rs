//! Tally's end-to-end tests: one integration binary, one module per area.

mod contract;
mod golden;
mod limits;
mod postgres;
mod sdk_python;
mod security;
