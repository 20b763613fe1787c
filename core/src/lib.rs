//! `tally-core`: all of Tally's billing logic, as pure functions of their inputs.
//!
//! The same crate runs natively in central and compiled to WASM in the edge Worker, so what both
//! compute is the same to the last digit. It builds for the browser's target too (wasm32, and
//! without std at all); the optional `wasm` feature adds the browser preview's bindings (`wasm`:
//! `preview::preview_json` through wasm-bindgen), off by default.
//!
//! Invariants:
//! - No IO, no clock, no threads: "now" is always a parameter (`now_ms`).
//! - `no_std` + `alloc`; the `std` feature only forwards to dependencies.
//! - Money and quantities are `rust_decimal::Decimal` with checked arithmetic; floats never appear.
//! - Times are UTC epoch milliseconds (`i64`); every window is half-open `[start, end)`.
#![no_std]
#![deny(clippy::float_arithmetic)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod accumulate;
pub mod balances;
pub mod batch;
pub mod charges;
pub mod composite;
pub mod conversion;
pub mod decimal;
pub mod env;
pub mod event;
pub mod fold;
pub mod ingest;
pub mod invoice;
pub mod invoice_json;
pub mod metric;
pub mod money;
pub mod overrides;
pub mod period;
pub mod preview;
pub mod pricing;
pub mod product;
pub mod product_order;
pub mod rate;
pub mod rating;
pub mod rollover;
pub mod rollup;
pub mod schedule;
#[cfg(feature = "sql")]
pub mod sql_metric;
pub mod subscriptions;
pub mod time;
#[cfg(feature = "wasm")]
pub mod wasm;
