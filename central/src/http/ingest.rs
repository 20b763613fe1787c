//! `POST /v1/ingest`: the native ingest path (the request contract lives in `tally_core::ingest`).
//!
//! Order of checks (the edge's too): token (401), `Content-Encoding` (415 `{"message"}` with
//! `Accept-Encoding: gzip`, by `tally_core::ingest::content_encoding`, before tower-http's gzip
//! decoding sees the request), then the body (400), then per-event outcomes.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Json;
use serde_json::{json, Value};
use tally_core::ingest::{content_encoding, MAX_BODY_BYTES};
use tower_http::decompression::RequestDecompressionLayer;

use super::error::{ApiError, ApiResult};
use super::Caller;
use super::Routes;
use crate::AppState;

pub fn routes() -> Routes {
    Routes::new().route(
        "/v1/ingest",
        post(ingest)
            .layer(RequestDecompressionLayer::new().gzip(true))
            .layer(middleware::from_fn(known_encoding)),
    )
}

/// Refuses a `Content-Encoding` ingest cannot read with Metronome's JSON error (the decompression
/// layer would answer a bare 415 with an empty body).
async fn known_encoding(req: Request, next: Next) -> Response {
    let values: Vec<String> = req
        .headers()
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    let joined = (!values.is_empty()).then(|| values.join(", "));
    match content_encoding(joined.as_deref()) {
        Ok(_) => next.run(req).await,
        Err(e) => {
            let mut resp =
                ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, e.to_string()).into_response();
            resp.headers_mut()
                .insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
            resp
        }
    }
}

async fn ingest(
    State(st): State<AppState>,
    Caller(env): Caller,
    req: Request,
) -> ApiResult<Json<Value>> {
    // One byte over the limit is enough to know the body is too large.
    let body = axum::body::to_bytes(req.into_body(), MAX_BODY_BYTES + 1)
        .await
        .map_err(|e| {
            // Reading fails either at the size limit or while decoding a gzip body.
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            match too_large {
                true => {
                    ApiError::bad_request(format!("request body exceeds {MAX_BODY_BYTES} bytes"))
                }
                false => ApiError::bad_request("request body is not valid gzip"),
            }
        })?;
    let summary = crate::service::ingest::ingest(&st, env, &body).await?;
    Ok(Json(json!({ "data": summary })))
}
