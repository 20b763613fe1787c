//! Tally's end-to-end tests: one integration binary, one module per area.

mod alerts;
mod backfill;
mod backup;
mod browser;
mod contract;
mod crash;
mod faults;
mod golden;
mod limits;
mod metrics;
mod postgres;
mod preview_page;
mod sdk_python;
mod security;
mod stream;
mod stripe;
mod tokens;
mod webhooks;
