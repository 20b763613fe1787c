//! Small helpers over the runtime's own APIs where workers-rs would copy through Rust instead.
//!
//! `worker::Response::text`/`bytes` read a streamed body chunk by chunk through WASM; the
//! runtime's `Response.text()`/`arrayBuffer()` read it natively in one call, which the profile of
//! the ingest path showed to matter (every ingest reads one reply per shard).

use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

use crate::error::EdgeError;

/// The status and whole body text of a response, read by the runtime.
pub async fn text(resp: worker::Response) -> Result<(u16, String), EdgeError> {
    let raw: web_sys::Response = resp.into();
    let status = raw.status();
    let value = JsFuture::from(raw.text()?).await?;
    Ok((status, value.as_string().unwrap_or_default()))
}

/// The status and whole body of a response, read by the runtime.
pub async fn bytes(resp: worker::Response) -> Result<(u16, Vec<u8>), EdgeError> {
    let raw: web_sys::Response = resp.into();
    let status = raw.status();
    let buffer = JsFuture::from(raw.array_buffer()?).await?;
    let array = js_sys::Uint8Array::new(&buffer.unchecked_into::<js_sys::ArrayBuffer>());
    Ok((status, array.to_vec()))
}
