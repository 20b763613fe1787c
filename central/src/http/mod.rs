//! The HTTP surface: Metronome's paths and conventions, one module per resource.
//!
//! Conventions enforced here for every endpoint: Bearer auth mapping a token to its environment,
//! `{"message"}` errors (unknown routes and wrong methods included), an empty POST body read as
//! `{}`, unknown fields ignored, keyset cursors. Handlers parse the wire request, call one
//! `service` function and map its result; handler modules never import each other.

mod alerts;
mod balances;
mod billable_metrics;
mod billing_configs;
mod commit_wire;
mod commits;
mod config_wire;
mod contract_edits;
mod contracts;
pub mod cors;
mod credit_types;
mod customers;
pub mod error;
mod events;
pub mod idempotency;
mod ingest;
mod internal;
mod invoices;
mod openapi;
mod operations;
mod override_wire;
mod packages;
mod preview_page;
mod products;
mod rate_cards;
mod rate_wire;
mod subscriptions;
mod usage;
mod webhooks;

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::{Json, Router};
use base64::Engine;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use self::error::{ApiError, ApiResult};
use crate::store::{Env, PageReq};
use crate::AppState;

/// Largest JSON body accepted by admin endpoints.
pub const MAX_JSON_BODY_BYTES: usize = 1 << 20;

/// The whole API.
pub fn router(state: AppState) -> Router {
    let api = authenticated_routes()
        .router
        // Inside authentication: a key belongs to the caller's environment.
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            idempotency::idempotency,
        ))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    let app = Router::new()
        .merge(open_routes().router)
        .merge(api)
        .merge(internal::routes().router)
        .fallback(|| async { ApiError::not_found("route") })
        // After every route is added: axum's own 405 has an empty body; ours is `{"message"}`
        // like every other 4xx (axum still adds the `Allow` header).
        .method_not_allowed_fallback(|method: axum::http::Method| async move {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("method {method} is not allowed on this path"),
            )
        })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            limit_request_time,
        ));
    // Inside the request tracking, so preflights are counted, logged and carry a request id;
    // outside everything that can refuse a request (401, 405, 408, 429, ...), so a browser can
    // read those answers too.
    let app = match &state.settings.cors {
        Some(origins) => app.layer(cors::layer(origins)),
        None => app,
    };
    app.layer(middleware::from_fn(crate::telemetry::track_requests))
        // Every request gets an `x-request-id` (the client's, or a new UUID), echoed on the
        // response and carried by the span every log line of the request is written in.
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        // Outermost: the head is judged as the client sent it (before an id is added to it).
        .layer(middleware::from_fn(check_request_head))
        .with_state(state)
}

/// The routes that need no token.
fn open_routes() -> Routes {
    Routes::new()
        .route("/", get(info))
        .route("/livez", get(crate::telemetry::livez))
        .route("/readyz", get(crate::telemetry::readyz))
        .route("/openapi.json", get(openapi::document))
        .merge(preview_page::routes())
}

/// The routes behind Bearer authentication.
fn authenticated_routes() -> Routes {
    Routes::new()
        .merge(credit_types::routes())
        .merge(billable_metrics::routes())
        .merge(products::routes())
        .merge(rate_cards::routes())
        .merge(customers::routes())
        .merge(balances::routes())
        .merge(billing_configs::routes())
        .merge(contracts::routes())
        .merge(subscriptions::routes())
        .merge(packages::routes())
        .merge(contract_edits::routes())
        .merge(commits::routes())
        .merge(invoices::routes())
        .merge(operations::routes())
        .merge(ingest::routes())
        .merge(webhooks::routes())
        .merge(alerts::routes())
        .merge(usage::routes())
        .merge(events::routes())
}

/// A part of the router together with the path templates it serves. Every route of the API is
/// added through [`Routes::route`] (clippy's `disallowed-methods` refuses `Router::route`
/// elsewhere), so [`served_paths`] cannot miss one; the methods of each path are the router's
/// own (its 405 lists them in `Allow`).
pub struct Routes {
    router: Router<AppState>,
    paths: Vec<&'static str>,
}

impl Routes {
    fn new() -> Routes {
        Routes {
            router: Router::new(),
            paths: Vec::new(),
        }
    }

    // This is the one place a route is added to the API; see the type's documentation.
    #[allow(clippy::disallowed_methods)]
    fn route(mut self, path: &'static str, methods: MethodRouter<AppState>) -> Routes {
        self.router = self.router.route(path, methods);
        self.paths.push(path);
        self
    }

    fn merge(mut self, other: Routes) -> Routes {
        self.router = self.router.merge(other.router);
        self.paths.extend(other.paths);
        self
    }

    /// Applies `layer` to these routes (see [`Router::layer`]).
    fn layer<L>(mut self, layer: L) -> Routes
    where
        L: tower::Layer<axum::routing::Route> + Clone + Send + Sync + 'static,
        L::Service: tower::Service<Request> + Clone + Send + Sync + 'static,
        <L::Service as tower::Service<Request>>::Response: IntoResponse + 'static,
        <L::Service as tower::Service<Request>>::Error: Into<std::convert::Infallible> + 'static,
        <L::Service as tower::Service<Request>>::Future: Send + 'static,
    {
        self.router = self.router.layer(layer);
        self
    }
}

/// The path templates the router serves (`{id}` for a path parameter), by who may call them.
#[derive(Debug)]
pub struct ServedPaths {
    /// Served without a token.
    pub open: Vec<&'static str>,
    /// Behind Bearer authentication.
    pub authenticated: Vec<&'static str>,
    /// The edge endpoints (HMAC-signed, not public, not in `/openapi.json`).
    pub internal: Vec<&'static str>,
}

/// Every path [`router`] serves; `central/tests/it/openapi.rs` checks them, and the methods the
/// router serves on each, against `/openapi.json`.
pub fn served_paths() -> ServedPaths {
    ServedPaths {
        open: open_routes().paths,
        authenticated: authenticated_routes().paths,
        internal: internal::routes().paths,
    }
}

/// The span a request's log lines are written in: its id, method and path.
fn request_span(req: &Request) -> tracing::Span {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    tracing::info_span!("request", id = %id, method = %req.method(), path = %req.uri().path())
}

/// Answers 408 when a request (reading its body included) takes longer than the configured
/// request timeout, so a client trickling its body cannot hold a connection and a handler
/// indefinitely. An ingest cut off here may still commit; its retry is then a duplicate, which is
/// why dedupe, not the response, is what guarantees exactly-once.
async fn limit_request_time(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let limit = state.settings.request_timeout;
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!("the request was not completed within {} s", limit.as_secs()),
        )
        .into_response(),
    }
}

/// Longest request target (path and query) served; longer is a 414 with a `{"message"}` body.
/// hyper's own limit (65,534 bytes) sits above it and answers with an empty body.
pub const MAX_URI_BYTES: usize = 16 * 1024;
/// Most request headers served; more is a 431 with a `{"message"}` body. hyper parses up to
/// [`HYPER_MAX_HEADERS`] (`server.rs`), so this check, not hyper's bare 431, answers first.
pub const MAX_HEADERS: usize = 100;
/// The number of headers hyper parses before its own, empty-bodied 431.
pub const HYPER_MAX_HEADERS: usize = 400;
/// Largest total of header names and values served; more is a 431 with a `{"message"}` body
/// (hyper's own limit, its ~400 KiB read buffer, sits above it).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Checks the request head before any handler: its size (414/431 with a `{"message"}` body, where
/// hyper's own answers to the same have none), and an encoded NUL (`%00`) in the path or query
/// (400 on both backends: PostgreSQL cannot store NUL, so an id with one can never exist).
async fn check_request_head(req: Request, next: Next) -> Response {
    let uri = req.uri();
    let target_len = uri.path().len() + uri.query().map_or(0, |q| q.len() + 1);
    if target_len > MAX_URI_BYTES {
        return ApiError::new(
            StatusCode::URI_TOO_LONG,
            format!("the request target is {target_len} bytes; at most {MAX_URI_BYTES} are served"),
        )
        .into_response();
    }
    let headers = req.headers();
    if headers.len() > MAX_HEADERS {
        return ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!(
                "the request has {} headers; at most {MAX_HEADERS} are served",
                headers.len()
            ),
        )
        .into_response();
    }
    let header_bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if header_bytes > MAX_HEADER_BYTES {
        return ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!(
                "the request's headers total {header_bytes} bytes; at most {MAX_HEADER_BYTES} are served"
            ),
        )
        .into_response();
    }
    let has_nul = |s: &str| s.contains("%00") || s.contains('\0');
    if has_nul(uri.path()) || uri.query().is_some_and(has_nul) {
        return ApiError::bad_request("the path or query contains a NUL character").into_response();
    }
    next.run(req).await
}

async fn info() -> Json<Value> {
    Json(json!({
        "service": "tally",
        "version": env!("CARGO_PKG_VERSION"),
        "status": "ok",
        "api": "Metronome-compatible; point an official Metronome SDK's base URL here",
    }))
}

/// Resolves `Authorization: Bearer <token>` to an environment, stored in request extensions.
async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim().to_string());
    let Some(token) = token else {
        return ApiError::unauthorized().into_response();
    };
    let hash = crate::auth::hash_token(&token);
    match state.token_env(&hash).await {
        Ok(Some(env)) => {
            if let Some(limited) = rate_limited(&state, hash) {
                return limited;
            }
            req.extensions_mut().insert(env);
            next.run(req).await
        }
        Ok(None) => ApiError::unauthorized().into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// Spends one request from the token's bucket; when it is empty, the 429 to answer instead, with
/// `retry-after` (whole seconds, rounded up) saying when the next request will be let through.
fn rate_limited(state: &AppState, token_hash: String) -> Option<Response> {
    let limiter = state.limiter.as_ref()?;
    let not_until = limiter.check_key(&token_hash).err()?;
    let wait = not_until.wait_time_from(governor::clock::Clock::now(limiter.clock()));
    let retry_after_secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let retry_after_secs = retry_after_secs.max(1);
    let mut res = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        format!("rate limit exceeded for this API token; retry after {retry_after_secs} s"),
    )
    .into_response();
    res.headers_mut()
        .insert(header::RETRY_AFTER, retry_after_secs.into());
    Some(res)
}

/// The caller's environment, set by [`authenticate`].
pub struct Caller(pub Env);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Env>()
            .copied()
            .map(Caller)
            .ok_or_else(ApiError::unauthorized)
    }
}

/// A JSON request body: empty means `{}`, errors name the offending field.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        let bytes = read_body(req, MAX_JSON_BODY_BYTES).await?;
        let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let value: Value = serde_path_to_error::deserialize(&mut de).map_err(body_error)?;
        // One JSON value and nothing after it (whitespace aside): `{}x` is not a valid body.
        de.end()
            .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))?;
        check_string_lengths(&value, &mut String::new())?;
        from_value(value).map(Body)
    }
}

/// Longest string (key or value) accepted anywhere in an admin request body. Fields with their own,
/// tighter limits (names, aliases, keys) check those too.
pub const MAX_STRING_CHARS: usize = 4_096;

/// Refuses a body holding a string longer than [`MAX_STRING_CHARS`], naming where it is, so no
/// stored document can grow unboundedly from one field.
fn check_string_lengths(value: &Value, path: &mut String) -> ApiResult<()> {
    let too_long = |s: &str| s.chars().count() > MAX_STRING_CHARS;
    let refuse = |path: &str| {
        let at = if path.is_empty() { "." } else { path };
        Err(ApiError::bad_request(format!(
            "invalid request body at {at}: strings are limited to {MAX_STRING_CHARS} characters"
        )))
    };
    let at = |path: &str| {
        if path.is_empty() {
            ".".to_string()
        } else {
            path.to_string()
        }
    };
    match value {
        Value::String(s) if too_long(s) => refuse(path),
        // Both backends must answer alike: PostgreSQL cannot store NUL, so no one stores it.
        Value::String(s) if s.contains('\0') => Err(ApiError::bad_request(format!(
            "invalid request body at {}: strings may not contain NUL characters",
            at(path)
        ))),
        Value::Array(items) => items.iter().enumerate().try_for_each(|(i, item)| {
            let len = path.len();
            path.push_str(&format!("[{i}]"));
            check_string_lengths(item, path)?;
            path.truncate(len);
            Ok(())
        }),
        Value::Object(fields) => fields.iter().try_for_each(|(key, item)| {
            let len = path.len();
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(key);
            if too_long(key) {
                return refuse(path);
            }
            if key.contains('\0') {
                return Err(ApiError::bad_request(format!(
                    "invalid request body at {path}: keys may not contain NUL characters"
                )));
            }
            check_string_lengths(item, path)?;
            path.truncate(len);
            Ok(())
        }),
        _ => Ok(()),
    }
}

/// Reads a typed request from an already-parsed JSON body, with the same error messages as [`Body`].
pub fn from_value<T: DeserializeOwned>(value: Value) -> ApiResult<T> {
    serde_path_to_error::deserialize(value).map_err(body_error)
}

fn body_error<E: std::fmt::Display>(e: serde_path_to_error::Error<E>) -> ApiError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    match path.as_str() {
        "." | "" => ApiError::bad_request(format!("invalid request body: {inner}")),
        _ => ApiError::bad_request(format!("invalid request body at {path}: {inner}")),
    }
}

/// Reads a request body of at most `limit` bytes.
pub async fn read_body(req: Request, limit: usize) -> ApiResult<Bytes> {
    axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body exceeds {limit} bytes"),
            )
        })
}

/// Query parameters, accepting both repeated keys and comma-joined lists.
pub struct QueryMap(pub HashMap<String, Vec<String>>);

impl<S: Send + Sync> FromRequestParts<S> for QueryMap {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let raw = parts.uri.query().unwrap_or("");
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw)
            .map_err(|e| ApiError::bad_request(format!("invalid query string: {e}")))?;
        let mut map: HashMap<String, Vec<String>> = HashMap::new();
        for (k, v) in pairs {
            map.entry(k).or_default().push(v);
        }
        Ok(QueryMap(map))
    }
}

impl QueryMap {
    pub fn one(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.last()).map(String::as_str)
    }

    /// Every value of a list parameter (`a,b` and repeated keys alike).
    pub fn list(&self, key: &str) -> Vec<String> {
        self.0
            .get(key)
            .into_iter()
            .flatten()
            .flat_map(|v| v.split(','))
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    }

    pub fn bool(&self, key: &str) -> ApiResult<Option<bool>> {
        match self.one(key) {
            None => Ok(None),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(v) => Err(ApiError::bad_request(format!(
                "{key} must be true or false, not {v:?}"
            ))),
        }
    }
}

pub const DEFAULT_PAGE_SIZE: i64 = 25;
pub const MAX_PAGE_SIZE: i64 = 100;

/// Validates a `limit` (default 25, 1..=max).
pub fn page_limit(limit: Option<&str>, max: i64) -> ApiResult<i64> {
    let Some(text) = limit else {
        return Ok(DEFAULT_PAGE_SIZE.min(max));
    };
    match text.parse::<i64>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(ApiError::bad_request(format!(
            "limit must be an integer between 1 and {max}"
        ))),
    }
}

/// Cursors are opaque: base64 of a position (a document sequence number or a list offset).
pub fn encode_cursor(position: i64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("p{position}"))
}

pub fn decode_cursor(cursor: Option<&str>) -> ApiResult<i64> {
    let Some(cursor) = cursor.filter(|c| !c.is_empty()) else {
        return Ok(0);
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.strip_prefix('p').and_then(|n| n.parse().ok()))
        .filter(|n: &i64| *n >= 0)
        .ok_or_else(|| ApiError::bad_request("next_page is not a valid cursor"))
}

/// A keyset page request from query parameters `limit` and `next_page`.
pub fn page_from_query(q: &QueryMap) -> ApiResult<PageReq> {
    Ok(PageReq {
        after: decode_cursor(q.one("next_page"))?,
        limit: page_limit(q.one("limit"), MAX_PAGE_SIZE)?,
    })
}

/// `{data, next_page}` for a keyset page fetched with `limit + 1` rows.
pub fn keyset_page(mut items: Vec<(i64, Value)>, limit: i64) -> Json<Value> {
    let more = items.len() as i64 > limit;
    items.truncate(limit as usize);
    let next = if more {
        items.last().map(|(seq, _)| encode_cursor(*seq))
    } else {
        None
    };
    let data: Vec<Value> = items.into_iter().map(|(_, v)| v).collect();
    Json(json!({ "data": data, "next_page": next }))
}

/// `{data, next_page}` for an in-memory list paged by offset.
pub fn offset_page(items: Vec<Value>, offset: i64, limit: i64, cursor_field: &str) -> Json<Value> {
    let (range, next) = offset_range(items.len(), offset, limit);
    let data: Vec<Value> = items[range].to_vec();
    Json(json!({ "data": data, cursor_field: next }))
}

/// The slice of a `total`-item list one offset page shows, and the cursor of the next page
/// (`None` on the last).
pub fn offset_range(
    total: usize,
    offset: i64,
    limit: i64,
) -> (std::ops::Range<usize>, Option<String>) {
    let start = usize::try_from(offset).unwrap_or(usize::MAX).min(total);
    let end = start
        .saturating_add(usize::try_from(limit).unwrap_or(0))
        .min(total);
    let next = (end < total).then(|| encode_cursor(end as i64));
    (start..end, next)
}

/// `{"data": {"id": ...}}`.
pub fn id_response(id: &str) -> Json<Value> {
    Json(json!({ "data": { "id": id } }))
}

/// Refuses a timestamp that is not on a UTC hour boundary.
pub fn require_hour(field: &str, t: crate::wire::Time) -> ApiResult<()> {
    Ok(crate::service::require_hour(field, t)?)
}

/// Refuses an empty or whitespace-only required string.
pub fn require_text(field: &str, value: &str, max_chars: usize) -> ApiResult<()> {
    Ok(crate::service::require_text(field, value, max_chars)?)
}

crate::wire_enum!(
    /// `archive_filter` of the list endpoints that take one (default NOT_ARCHIVED).
    ArchiveFilterIn { Archived => "ARCHIVED", NotArchived => "NOT_ARCHIVED", All => "ALL" }
);

impl ArchiveFilterIn {
    pub fn filter(f: Option<ArchiveFilterIn>) -> crate::store::ArchiveFilter {
        use crate::store::ArchiveFilter;
        match f {
            None | Some(ArchiveFilterIn::NotArchived) => ArchiveFilter::Active,
            Some(ArchiveFilterIn::Archived) => ArchiveFilter::Archived,
            Some(ArchiveFilterIn::All) => ArchiveFilter::All,
        }
    }
}
