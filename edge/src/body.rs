//! Reading an ingest request body: at most a limit of bytes, gzip decoded like central.
//!
//! The edge accepts the `Content-Encoding` values central accepts, by the same rule
//! (`tally_core::ingest::content_encoding`): absent, `identity` (the body as is) and `gzip`
//! (decoded with the runtime's `DecompressionStream`); any other value is the same 415.
//!
//! Invariants:
//! - Never more than `limit + 1` decoded bytes are held: reading stops (and the stream is
//!   cancelled) as soon as the limit is passed, so a small gzip bomb cannot exhaust memory.
//! - The read loop is bounded by [`MAX_READS`] chunk reads.

use js_sys::{Reflect, Uint8Array};
use tally_core::ingest::{content_encoding, ContentEncoding};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{ReadableStream, ReadableStreamDefaultReader, ReadableWritablePair};
use worker::Request;

use crate::error::EdgeError;

/// Most chunk reads of one body (chunks are normally kilobytes; this only stops a stream of empty
/// chunks from spinning forever).
pub const MAX_READS: usize = 1 << 20;

#[wasm_bindgen]
extern "C" {
    /// The runtime's `DecompressionStream` (web-sys marks it unstable, so it is bound here).
    #[wasm_bindgen(extends = js_sys::Object, js_name = DecompressionStream)]
    type DecompressionStream;

    #[wasm_bindgen(constructor, catch, js_class = DecompressionStream)]
    fn new(format: &str) -> Result<DecompressionStream, JsValue>;
}

/// `tally_core::ingest::content_encoding`, central's rule: anything but absent, `identity` or
/// `gzip` is a 415.
pub fn encoding(header: Option<&str>) -> Result<ContentEncoding, EdgeError> {
    content_encoding(header).map_err(|e| EdgeError::Client(415, e.to_string()))
}

fn too_large(limit: usize) -> EdgeError {
    EdgeError::BadRequest(format!("request body exceeds {limit} bytes"))
}

/// The decoded body, at most `limit` bytes (more is the same 400 central gives).
pub async fn read_limited(req: &mut Request, limit: usize) -> Result<Vec<u8>, EdgeError> {
    let enc = encoding(req.headers().get("content-encoding")?.as_deref())?;
    let declared: Option<usize> = req
        .headers()
        .get("content-length")?
        .and_then(|v| v.trim().parse().ok());
    if enc == ContentEncoding::Identity {
        if let Some(n) = declared {
            if n > limit {
                return Err(too_large(limit));
            }
            // The runtime enforces the declared length, so reading it whole is bounded.
            return Ok(req.bytes().await?);
        }
    }
    let Some(stream) = req.inner().body() else {
        return Ok(Vec::new());
    };
    match enc {
        ContentEncoding::Identity => read_stream(stream, limit, false).await,
        ContentEncoding::Gzip => {
            let ds = DecompressionStream::new("gzip")?;
            let pair: &ReadableWritablePair = ds.unchecked_ref();
            read_stream(stream.pipe_through(pair), limit, true).await
        }
    }
}

async fn read_stream(
    stream: ReadableStream,
    limit: usize,
    gzip: bool,
) -> Result<Vec<u8>, EdgeError> {
    let reader: ReadableStreamDefaultReader = stream.get_reader().unchecked_into();
    let mut out = Vec::new();
    for _ in 0..MAX_READS {
        let result = JsFuture::from(reader.read()).await.map_err(|e| {
            if gzip {
                EdgeError::BadRequest("request body is not valid gzip".to_string())
            } else {
                EdgeError::from(e)
            }
        })?;
        let done = Reflect::get(&result, &JsValue::from_str("done"))?
            .as_bool()
            .unwrap_or(true);
        if done {
            return Ok(out);
        }
        let chunk: Uint8Array =
            Reflect::get(&result, &JsValue::from_str("value"))?.unchecked_into();
        let len = usize::try_from(chunk.length()).unwrap_or(usize::MAX);
        if out.len().saturating_add(len) > limit {
            // Stop the upload (and any decompression) now; the error below is the answer.
            let _ = reader.cancel();
            return Err(too_large(limit));
        }
        let start = out.len();
        out.resize(start + len, 0);
        chunk.copy_to(&mut out[start..]);
    }
    let _ = reader.cancel();
    Err(too_large(limit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_follow_central_byte_for_byte() {
        assert_eq!(encoding(None), Ok(ContentEncoding::Identity));
        assert_eq!(encoding(Some("identity")), Ok(ContentEncoding::Identity));
        assert_eq!(encoding(Some("gzip")), Ok(ContentEncoding::Gzip));
        for other in ["br", "deflate", "x-gzip", "GZIP", "gzip, br"] {
            assert_eq!(encoding(Some(other)).map_err(|e| e.status()), Err(415));
        }
    }
}
