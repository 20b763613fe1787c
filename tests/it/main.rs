//! Tally's end-to-end tests: one integration binary, one module per area.

mod crash;
mod faults;
mod golden;
mod postgres;
mod sdk_python;
mod stream;
