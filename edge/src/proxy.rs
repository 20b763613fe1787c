//! Every path the edge does not serve itself goes to central unchanged: method, headers (including
//! `Authorization`), body and query; central's response comes back as it is, status and headers
//! included. So an official Metronome SDK pointed at the edge works for the whole API.
//!
//! Invariants:
//! - The request is re-addressed, never rewritten: `new Request(central + path + query, original)`.
//! - When a billable metric is created or archived through the edge, every shard is told its metric
//!   snapshot is stale before the response is returned, so events ingested after the client saw the
//!   response are metered with the new metric. (Metrics changed at central directly reach the
//!   shards through the version in batch acknowledgements instead.)
//! - Central unreachable is a 503 `{"message"}` with `x-should-retry: true`.

use futures_util::future::join_all;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use worker::{Env, Method, Request, RequestInit, Response};

use crate::config::{EdgeConfig, SHARD_BINDING};
use crate::error::EdgeError;
use crate::protocol::{INVALIDATE_PATH, SHARD_ORIGIN};
use crate::routing::shard_name;

/// Paths whose success changes the metric snapshot.
const METRIC_WRITES: [&str; 2] = [
    "/v1/billable-metrics/create",
    "/v1/billable-metrics/archive",
];

/// Forwards `req` to central and returns central's response.
pub async fn forward(req: Request, env: &Env, cfg: &EdgeConfig) -> Result<Response, EdgeError> {
    let raw_url = req.inner().url();
    let target = format!("{}{}", cfg.central_url, path_and_query(&raw_url));
    let path = req.path();
    let method = req.method();
    // `new Request(url, request)` copies method, headers, body and redirect mode.
    let init: &web_sys::RequestInit = req.inner().unchecked_ref();
    let outgoing = web_sys::Request::new_with_str_and_init(&target, init)?;
    let global: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
    let resp = JsFuture::from(global.fetch_with_request(&outgoing))
        .await
        .map_err(|e| {
            EdgeError::Unavailable(format!(
                "central is unreachable: {}",
                worker::Error::from(e)
            ))
        })?;
    let resp: web_sys::Response = resp.dyn_into()?;
    if method == Method::Post
        && METRIC_WRITES.contains(&path.as_str())
        && (200..300).contains(&resp.status())
    {
        // Central has already changed the metric: the client must see that answer, whatever
        // happens here. A shard that missed the news learns it from its next acknowledgement.
        if let Err(e) = invalidate_snapshots(env, cfg.shard_count).await {
            worker::console_warn!("could not tell every shard about a metric change: {e}");
        }
    }
    Ok(Response::from(resp))
}

/// The path and query of a serialized WHATWG URL (`https://host/p?q#f` -> `/p?q`), without
/// re-parsing it: after `scheme://host`, the first `/` starts the path, and a serialized URL
/// percent-encodes any `#` before the fragment.
pub fn path_and_query(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[after_scheme..];
    let Some(slash) = rest.find('/') else {
        return "/";
    };
    let tail = &rest[slash..];
    match tail.find('#') {
        Some(hash) => &tail[..hash],
        None => tail,
    }
}

/// Tells every shard that its metric snapshots are stale (concurrently).
async fn invalidate_snapshots(env: &Env, shard_count: u64) -> Result<(), EdgeError> {
    let namespace = env.durable_object(SHARD_BINDING)?;
    let calls = (0..shard_count).map(|index| {
        let namespace = &namespace;
        async move {
            let mut init = RequestInit::new();
            init.with_method(Method::Post);
            let req = Request::new_with_init(&format!("{SHARD_ORIGIN}{INVALIDATE_PATH}"), &init)?;
            let stub = namespace.id_from_name(&shard_name(index))?.get_stub()?;
            let resp = stub.fetch_with_request(req).await?;
            if resp.status_code() == 200 {
                Ok(())
            } else {
                Err(EdgeError::Unavailable(format!(
                    "shard {index} did not take the new metric (status {})",
                    resp.status_code()
                )))
            }
        }
    });
    for result in join_all(calls).await {
        result?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::path_and_query;

    #[test]
    fn path_and_query_of_serialized_urls() {
        assert_eq!(path_and_query("https://edge.example/"), "/");
        assert_eq!(path_and_query("https://edge.example"), "/");
        assert_eq!(
            path_and_query("http://127.0.0.1:8787/v1/customers?limit=2&next_page=a%2Fb"),
            "/v1/customers?limit=2&next_page=a%2Fb"
        );
        assert_eq!(path_and_query("https://h/a/b?x=1#frag"), "/a/b?x=1");
        assert_eq!(path_and_query("https://h/a%20b"), "/a%20b");
    }
}
