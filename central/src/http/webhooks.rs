//! `/v1/webhook-endpoints/*` (Tally's own: Metronome configures destinations in its dashboard),
//! the delivery log `/v1/webhook-endpoints/{id}/deliveries`, and Metronome's
//! `/v1/client/config/webhook_secret`: the wire side of `service::webhooks`.

use axum::body::Body as HttpBody;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::{
    id_response, keyset_page, page_from_query, page_limit, ArchiveFilterIn, Body, Caller, QueryMap,
    Routes, MAX_PAGE_SIZE,
};
use crate::service::webhooks;
use crate::AppState;

pub fn routes() -> Routes {
    Routes::new()
        .route("/v1/webhook-endpoints", get(list))
        .route("/v1/webhook-endpoints/create", post(create))
        .route("/v1/webhook-endpoints/archive", post(archive))
        .route("/v1/webhook-endpoints/{id}/deliveries", get(deliveries))
        .route("/v1/client/config/webhook_secret", post(set_secret))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateReq {
    url: String,
    #[serde(default)]
    description: Option<String>,
}

async fn create(
    State(st): State<AppState>,
    Caller(env): Caller,
    Body(req): Body<CreateReq>,
) -> ApiResult<Json<Value>> {
    let id = webhooks::create(&st, env, &req.url, req.description.as_deref()).await?;
    Ok(id_response(&id))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ArchiveReq {
    id: String,
}

async fn archive(
    State(st): State<AppState>,
    Caller(env): Caller,
    Body(req): Body<ArchiveReq>,
) -> ApiResult<Json<Value>> {
    webhooks::archive(&st, env, &req.id).await?;
    Ok(id_response(&req.id))
}

/// `GET /v1/webhook-endpoints?limit&next_page&archive_filter`: keyset pages in creation order,
/// active endpoints unless `archive_filter` says otherwise.
async fn list(
    State(st): State<AppState>,
    Caller(env): Caller,
    q: QueryMap,
) -> ApiResult<Json<Value>> {
    let page = page_from_query(&q)?;
    let filter = match q.one("archive_filter") {
        None => None,
        Some(f) => Some(ArchiveFilterIn::parse(f).ok_or_else(|| {
            ApiError::bad_request("archive_filter must be one of ARCHIVED, NOT_ARCHIVED, ALL")
        })?),
    };
    let items = webhooks::list(&st, env, ArchiveFilterIn::filter(filter), page).await?;
    let items = items
        .into_iter()
        .map(|(seq, e)| (seq, e.api_json()))
        .collect();
    Ok(keyset_page(items, page.limit))
}

/// `GET /v1/webhook-endpoints/{id}/deliveries?limit&next_page`: the endpoint's messages, oldest
/// first, with their delivery status, attempts and last error.
async fn deliveries(
    State(st): State<AppState>,
    Caller(env): Caller,
    Path(id): Path<String>,
    q: QueryMap,
) -> ApiResult<Json<Value>> {
    let limit = page_limit(q.one("limit"), MAX_PAGE_SIZE)?;
    let after = decode_position(q.one("next_page"))?;
    let mut items = webhooks::deliveries(&st, env, &id, after, limit).await?;
    let more = items.len() as i64 > limit;
    items.truncate(usize::try_from(limit).unwrap_or(0));
    let next = match more {
        true => items.last().map(|m| encode_position(m.created_ms, &m.id)),
        false => None,
    };
    let data: Vec<Value> = items.iter().map(webhooks::delivery_json).collect();
    Ok(Json(json!({ "data": data, "next_page": next })))
}

fn encode_position(created_ms: i64, id: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("d{created_ms}/{id}"))
}

fn decode_position(cursor: Option<&str>) -> ApiResult<Option<(i64, String)>> {
    let Some(cursor) = cursor.filter(|c| !c.is_empty()) else {
        return Ok(None);
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| {
            let (ms, id) = s.strip_prefix('d')?.split_once('/')?;
            Some((ms.parse().ok()?, id.to_string()))
        })
        .map(Some)
        .ok_or_else(|| ApiError::bad_request("next_page is not a valid cursor"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretReq {
    webhook_secret: String,
}

/// Sets the environment's signing secret: 200 with an empty body (as upstream). The secret is
/// never echoed.
async fn set_secret(
    State(st): State<AppState>,
    Caller(env): Caller,
    Body(req): Body<SecretReq>,
) -> ApiResult<Response> {
    webhooks::set_secret(&st, env, &req.webhook_secret).await?;
    Ok((StatusCode::OK, HttpBody::empty()).into_response())
}
