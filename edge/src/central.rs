//! A client for central's internal endpoints (`/internal/v1/...`), signed with
//! `tally_core::batch::sign` (HMAC-SHA256 over the timestamp, method, path with query, and body).
//!
//! Invariants:
//! - Every call carries a fresh timestamp and signature; the method, the path with its query and
//!   the body are sent exactly as signed, so central refuses the signature anywhere else.
//! - Every call is bounded by [`CENTRAL_TIMEOUT_MS`], so a hung central cannot hold a shard's
//!   alarm or an ingest request forever.
//! - A transport failure or a 5xx is [`EdgeError::Unavailable`]; a 401 means the edge and central
//!   disagree on the key and is reported as a configuration error.

use tally_core::batch::{
    sign, BatchAck, MetricsSnapshot, SignedRequest, SIGNATURE_HEADER, TIMESTAMP_HEADER,
};
use wasm_bindgen::JsValue;
use worker::{AbortSignal, Fetch, Headers, Method, Request, RequestInit};

use crate::config::EdgeConfig;
use crate::error::EdgeError;

/// Longest wait for one call to central.
pub const CENTRAL_TIMEOUT_MS: u32 = 10_000;
/// Largest response body read from central's internal endpoints.
pub const MAX_RESPONSE_BYTES: usize = 16 << 20;

/// A response from central: status and body.
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Sends a signed request to `path` (with its query, relative to central's root) and reads the reply.
pub async fn call(
    cfg: &EdgeConfig,
    method: Method,
    path: &str,
    body: &[u8],
) -> Result<Reply, EdgeError> {
    let ts = crate::now_ms();
    let headers = Headers::new();
    headers.set(TIMESTAMP_HEADER, &ts.to_string())?;
    let signed = SignedRequest {
        method: method.as_ref(),
        path_and_query: path,
        body,
    };
    headers.set(SIGNATURE_HEADER, &sign(&cfg.hmac_key, ts, &signed))?;
    let post = method == Method::Post;
    if post {
        headers.set("content-type", "application/json")?;
    }
    let mut init = RequestInit::new();
    init.with_method(method).with_headers(headers);
    if post {
        init.with_body(Some(JsValue::from(js_sys::Uint8Array::from(body))));
    }
    let url = format!("{}{}", cfg.central_url, path);
    let req = Request::new_with_init(&url, &init)?;
    let signal = AbortSignal::from(web_sys::AbortSignal::timeout_with_u32(CENTRAL_TIMEOUT_MS));
    let resp = Fetch::Request(req)
        .send_with_signal(&signal)
        .await
        .map_err(|e| EdgeError::Unavailable(format!("central is unreachable: {e}")))?;
    let (status, body) = crate::js::bytes(resp)
        .await
        .map_err(|e| EdgeError::Unavailable(format!("central's reply was cut short: {e}")))?;
    if body.len() > MAX_RESPONSE_BYTES {
        return Err(EdgeError::Unavailable(
            "central's reply is too large".to_string(),
        ));
    }
    if status == 401 {
        return Err(EdgeError::Config(format!(
            "central refused the edge's signature on {path} (is EDGE_HMAC_KEY the key central runs with?)"
        )));
    }
    Ok(Reply { status, body })
}

/// Decodes a 200 reply as `T`; any other status is [`EdgeError::Unavailable`].
fn decode<T: serde::de::DeserializeOwned>(what: &str, reply: &Reply) -> Result<T, EdgeError> {
    if reply.status != 200 {
        return Err(EdgeError::Unavailable(format!(
            "central answered {} to {what}: {}",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        )));
    }
    serde_json::from_slice(&reply.body)
        .map_err(|e| EdgeError::Unavailable(format!("central's {what} reply is invalid: {e}")))
}

/// `GET /internal/v1/metrics?env=`: the metric snapshot of one environment.
pub async fn metrics(cfg: &EdgeConfig, env: &str) -> Result<MetricsSnapshot, EdgeError> {
    let reply = call(
        cfg,
        Method::Get,
        &format!("/internal/v1/metrics?env={env}"),
        b"",
    )
    .await?;
    decode("the metric snapshot request", &reply)
}

/// `POST /internal/v1/batches`: delivers one sealed batch, exactly the bytes that were sealed.
pub async fn deliver(cfg: &EdgeConfig, sealed: &[u8]) -> Result<BatchAck, EdgeError> {
    let reply = call(cfg, Method::Post, "/internal/v1/batches", sealed).await?;
    decode("a batch", &reply)
}

/// `POST /internal/v1/tokens/lookup`: the environment of a token hash, `None` if unknown (404).
pub async fn token_env(cfg: &EdgeConfig, token_hash: &str) -> Result<Option<String>, EdgeError> {
    let body = serde_json::to_vec(&serde_json::json!({ "token_hash": token_hash }))
        .map_err(|e| EdgeError::Unavailable(format!("could not encode a token lookup: {e}")))?;
    let reply = call(cfg, Method::Post, "/internal/v1/tokens/lookup", &body).await?;
    if reply.status == 404 {
        return Ok(None);
    }
    let info: tally_core::batch::TokenInfo = decode("a token lookup", &reply)?;
    Ok(Some(info.env))
}
