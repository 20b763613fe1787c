//! Tally's end-to-end tests: one integration binary, one module per area.

mod golden;
mod limits;
mod postgres;
mod sdk_python;
mod security;
