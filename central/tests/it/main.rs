//! In-process HTTP tests of the central router: one integration binary, one module per area.

#[macro_use]
mod support;

mod alerts;
mod balances;
mod billing_configs;
mod charges;
mod commits;
mod composite;
mod concurrency;
mod config_limits;
mod contract_edits;
mod conventions;
mod cors;
mod credit_types;
mod edge_internal;
mod events;
mod group_commit;
mod idempotency;
mod ingest;
mod invoices;
mod isolation;
mod lifecycle;
mod limits;
mod openapi;
mod overrides;
mod packages;
mod previews;
mod pricing_rules;
mod product_order;
mod rate_schedule;
mod recurring;
mod regenerate;
mod resources;
mod rollups;
mod store_conformance;
mod subscriptions;
mod transitions;
mod usage_queries;
