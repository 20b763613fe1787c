//! `GET /openapi.json`: the OpenAPI document of the operations this Tally serves, unauthenticated.
//!
//! The document is `central/openapi.json`, built by `scripts/openapi.py` from Metronome's document
//! (the subset Tally implements) plus Tally's own endpoints, committed and embedded at compile
//! time, so the binary serves it with nothing beside it. `central/tests/it/openapi.rs` keeps it
//! equal to what the router serves: every path and method, and which need a token.

use axum::http::{header, HeaderValue};
use axum::response::IntoResponse;

/// The document, as committed.
pub const DOCUMENT: &str = include_str!("../../openapi.json");

pub async fn document() -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        DOCUMENT,
    )
}
