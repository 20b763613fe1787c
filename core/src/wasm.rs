//! The browser preview's bindings (the `wasm` feature): [`preview`] is
//! `preview::preview_json` for JavaScript, JSON text in and out, so the page prices exactly as
//! `previewEvents` does. Built with `scripts/preview-wasm.sh` (wasm-bindgen `--target web`).

use alloc::string::String;
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::JsValue;

use crate::time::parse_rfc3339_ms;

/// Prices `request` (a `previewEvents` body) against `snapshot` (a `pricingSnapshot`
/// response's `data`) with `now` (RFC 3339) as the default event timestamp and the ingest
/// window's reference; returns the `previewEvents` response as JSON text, or throws an `Error`
/// whose message says what is wrong.
#[wasm_bindgen]
pub fn preview(snapshot: &str, request: &str, now: &str) -> Result<String, JsValue> {
    let now_ms = parse_now(now)?;
    crate::preview::preview_json(snapshot, request, now_ms).map_err(js_error)
}

/// A snapshot parsed once, priced against request after request (the page makes one per
/// loaded or pasted snapshot, and prices every keystroke with it): [`preview`] without
/// reading the snapshot each time, with the same answers and messages.
#[wasm_bindgen]
pub struct Previewer {
    snapshot: crate::preview::PreparedSnapshot,
}

#[wasm_bindgen]
impl Previewer {
    /// Reads `snapshot` (a `pricingSnapshot` response's `data`); throws an `Error` saying what
    /// is wrong with it.
    #[wasm_bindgen(constructor)]
    pub fn new(snapshot: &str) -> Result<Previewer, JsValue> {
        let snapshot = crate::preview::parse_snapshot(snapshot).map_err(js_error)?;
        Ok(Previewer {
            snapshot: crate::preview::PreparedSnapshot::new(snapshot),
        })
    }

    /// [`preview`] of `request` with this snapshot.
    pub fn preview(&self, request: &str, now: &str) -> Result<String, JsValue> {
        let now_ms = parse_now(now)?;
        crate::preview::preview_request_json(&self.snapshot, request, now_ms).map_err(js_error)
    }
}

fn parse_now(now: &str) -> Result<i64, JsValue> {
    parse_rfc3339_ms(now)
        .map_err(|e| js_sys::Error::new(&alloc::format!("now {e}: {now:?}")).into())
}

fn js_error(e: crate::preview::PreviewError) -> JsValue {
    js_sys::Error::new(&alloc::string::ToString::to_string(&e)).into()
}

/// The crate's version, so the page can say which engine priced it.
#[wasm_bindgen]
pub fn version() -> String {
    String::from(env!("CARGO_PKG_VERSION"))
}
