//! The browser cost preview (`GET /preview`): a static page and the WASM build of core it prices
//! with (`scripts/preview-wasm.sh` builds `central/assets/preview/`, which is committed and
//! embedded here). The page needs no token to load; it asks for one to fetch a customer's
//! pricing snapshot from the API.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use super::Routes;

const PAGE: &str = include_str!("../../assets/preview/index.html");
const GLUE: &str = include_str!("../../assets/preview/tally_core.js");
const MODULE: &[u8] = include_bytes!("../../assets/preview/tally_core_bg.wasm");

pub fn routes() -> Routes {
    Routes::new()
        .route("/preview", get(page))
        .route("/preview/tally_core.js", get(glue))
        .route("/preview/tally_core_bg.wasm", get(module))
}

async fn page() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE)
}

async fn glue() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        GLUE,
    )
}

async fn module() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/wasm")], MODULE)
}
