//! `/v1/credit-types/{list,create,archive}`: pricing units, the wire side of
//! `service::credit_types`. The list is USD (cents) first, then the environment's unarchived
//! custom units in creation order, paged by keyset (USD on the first page only).

use axum::extract::State;
use axum::routing::{get, post};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiResult;
use super::{id_response, keyset_page, page_from_query, Body, Caller, QueryMap, Routes};
use crate::model::{USD_ID, USD_NAME};
use crate::service::credit_types;
use crate::AppState;

pub fn routes() -> Routes {
    Routes::new()
        .route("/v1/credit-types/list", get(list))
        .route("/v1/credit-types/create", post(create))
        .route("/v1/credit-types/archive", post(archive))
}

async fn list(
    State(st): State<AppState>,
    Caller(env): Caller,
    q: QueryMap,
) -> ApiResult<Json<Value>> {
    let mut page = page_from_query(&q)?;
    let first = q.one("next_page").is_none_or(str::is_empty);
    let mut items = Vec::new();
    if first {
        // USD stands at position 0, before every custom unit (their positions start at 1).
        items.push((
            0,
            json!({ "id": USD_ID, "name": USD_NAME, "is_currency": true }),
        ));
        page.limit -= 1;
    }
    let custom = credit_types::list(&st, env, page).await?;
    items.extend(custom.into_iter().map(|(seq, c)| (seq, c.api_json())));
    Ok(keyset_page(items, page.limit + i64::from(first)))
}

#[derive(Deserialize)]
struct CreateReq {
    name: String,
}

async fn create(
    State(st): State<AppState>,
    Caller(env): Caller,
    Body(req): Body<CreateReq>,
) -> ApiResult<Json<Value>> {
    Ok(id_response(
        &credit_types::create(&st, env, &req.name).await?,
    ))
}

#[derive(Deserialize)]
struct ArchiveReq {
    id: String,
}

async fn archive(
    State(st): State<AppState>,
    Caller(env): Caller,
    Body(req): Body<ArchiveReq>,
) -> ApiResult<Json<Value>> {
    credit_types::archive(&st, env, &req.id).await?;
    Ok(id_response(&req.id))
}
