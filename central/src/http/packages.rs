//! `/v1/packages/{create,get,list,archive,listContractsOnPackage}`: the wire side of
//! `service::packages`. A package's terms are checked on create by instantiating them at the
//! current hour and running the contract checks (`contracts::new_contract`, then
//! `service::contracts::validate`), so a package that is stored always makes a valid contract.

use axum::extract::State;
use axum::routing::post;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::contracts::new_contract;
use super::error::{ApiError, ApiResult};
use super::{
    decode_cursor, id_response, offset_page, page_limit, ArchiveFilterIn, Body, Caller, QueryMap,
    Routes, MAX_PAGE_SIZE,
};
use crate::service::contracts;
use crate::service::packages::{self, NewPackage, PackageAlias};
use crate::wire::{set_opt, Time};
use crate::AppState;

pub fn routes() -> Routes {
    Routes::new()
        .route("/v1/packages/create", post(create))
        .route("/v1/packages/get", post(get))
        .route("/v1/packages/list", post(list))
        .route("/v1/packages/archive", post(archive))
        .route("/v1/packages/listContractsOnPackage", post(list_contracts))
}

#[derive(Deserialize)]
struct Identity {
    name: String,
    #[serde(default)]
    aliases: Vec<PackageAlias>,
    uniqueness_key: Option<String>,
}

async fn create(
    State(st): State<AppState>,
    Caller(env): Caller,
    Body(body): Body<Map<String, Value>>,
) -> ApiResult<Json<Value>> {
    let identity: Identity = super::from_value(Value::Object(body.clone()))?;
    let terms = packages::template_terms(&body)?;
    // Instantiated at this hour for a placeholder customer: every contract check but the
    // customer's own.
    let start = tally_core::time::hour_floor(st.now_ms());
    let mut sample = packages::instantiate(&terms, start)?;
    sample.insert("customer_id".into(), Value::String(String::new()));
    sample.insert("starting_at".into(), json!(Time(start)));
    let checked = new_contract(Value::Object(sample))?;
    contracts::validate(&st, env, checked).await?;
    let new = NewPackage {
        name: identity.name,
        aliases: identity.aliases,
        uniqueness_key: identity.uniqueness_key,
        body,
    };
    Ok(id_response(&packages::store(&st, env, new, terms).await?))
}

#[derive(Deserialize)]
struct PackageIdReq {
    package_id: String,
}

async fn get(
    State(st): State<AppState>,
    Caller(env): Caller,
    Body(req): Body<PackageIdReq>,
) -> ApiResult<Json<Value>> {
    let p = packages::get(&st, env, &req.package_id).await?;
    Ok(Json(json!({ "data": p.api_json() })))
}

#[derive(Deserialize)]
struct ListReq {
    archive_filter: Option<ArchiveFilterIn>,
}

async fn list(
    State(st): State<AppState>,
    Caller(env): Caller,
    q: QueryMap,
    Body(req): Body<ListReq>,
) -> ApiResult<Json<Value>> {
    let limit = page_limit(q.one("limit"), MAX_PAGE_SIZE)?;
    let offset = decode_cursor(q.one("next_page"))?;
    let filter = ArchiveFilterIn::filter(req.archive_filter);
    let items = packages::list(&st, env, filter)
        .await?
        .iter()
        .map(|p| p.api_json())
        .collect();
    Ok(offset_page(items, offset, limit, "next_page"))
}

async fn archive(
    State(st): State<AppState>,
    Caller(env): Caller,
    Body(req): Body<PackageIdReq>,
) -> ApiResult<Json<Value>> {
    packages::archive(&st, env, &req.package_id).await?;
    Ok(id_response(&req.package_id))
}

#[derive(Deserialize)]
struct ContractsReq {
    package_id: String,
    covering_date: Option<Time>,
    starting_at: Option<Time>,
    #[serde(default)]
    include_archived: bool,
}

async fn list_contracts(
    State(st): State<AppState>,
    Caller(env): Caller,
    q: QueryMap,
    Body(req): Body<ContractsReq>,
) -> ApiResult<Json<Value>> {
    if req.covering_date.is_some() && req.starting_at.is_some() {
        return Err(ApiError::bad_request(
            "give covering_date or starting_at, not both",
        ));
    }
    let limit = page_limit(q.one("limit"), MAX_PAGE_SIZE)?;
    let offset = decode_cursor(q.one("next_page"))?;
    let found = packages::contracts_on(
        &st,
        env,
        &req.package_id,
        req.covering_date,
        req.starting_at,
        req.include_archived,
    )
    .await?;
    let items = found
        .iter()
        .map(|c| {
            let mut v = json!({ "contract_id": c.id, "customer_id": c.customer_id,
                                "starting_at": c.starting_at });
            set_opt(&mut v, "ending_before", c.ending_before);
            set_opt(&mut v, "archived_at", c.archived_at);
            v
        })
        .collect();
    Ok(offset_page(items, offset, limit, "next_page"))
}
