//! `/v1/customers`: create, get, list, archive, setIngestAliases, setName.
//!
//! Ingest aliases are unique per environment (archived customers keep theirs): a taken alias is a
//! 409 and nothing changes. Usage is keyed by the reference as sent, so moving an alias moves its
//! usage with it.

use std::collections::{BTreeMap, BTreeSet};

use axum::body::Body as HttpBody;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{id_response, keyset_page, page_from_query, require_text, Body, Caller, QueryMap};
use crate::error::{ApiError, ApiResult};
use crate::model::{decode, encode, kind, load, new_id, Contract, Customer};
use crate::store::{ArchiveFilter, Env, NewDoc, PageReq};
use crate::wire::Time;
use crate::AppState;

/// Longest customer name kept (longer names are truncated, as upstream does).
const MAX_NAME_CHARS: usize = 160;
const MAX_ALIAS_CHARS: usize = 256;
const MAX_ALIASES: usize = 100;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/customers", post(create).get(list))
        .route("/v1/customers/archive", post(archive))
        .route("/v1/customers/{id}", get(retrieve))
        .route(
            "/v1/customers/{id}/setIngestAliases",
            post(set_ingest_aliases),
        )
        .route("/v1/customers/{id}/setName", post(set_name))
}

fn clean_aliases(aliases: Vec<String>) -> ApiResult<Vec<String>> {
    if aliases.len() > MAX_ALIASES {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_ALIASES} ingest aliases are allowed"
        )));
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for a in aliases {
        require_text("ingest_aliases[]", &a, MAX_ALIAS_CHARS)?;
        if seen.insert(a.clone()) {
            out.push(a);
        }
    }
    Ok(out)
}

fn truncate_name(name: &str) -> ApiResult<String> {
    require_text("name", name, usize::MAX)?;
    Ok(name.chars().take(MAX_NAME_CHARS).collect())
}

#[derive(Deserialize)]
struct CreateCustomer {
    name: String,
    #[serde(default)]
    ingest_aliases: Vec<String>,
    external_id: Option<String>,
    #[serde(default)]
    custom_fields: BTreeMap<String, String>,
}

async fn create(
    State(st): State<AppState>,
    Caller(env): Caller,
    Body(req): Body<CreateCustomer>,
) -> ApiResult<Json<Value>> {
    let name = truncate_name(&req.name)?;
    let mut aliases = req.ingest_aliases;
    // The deprecated external_id is one more alias.
    if let Some(ext) = req.external_id {
        aliases.insert(0, ext);
    }
    let aliases = clean_aliases(aliases)?;
    let now = Time(st.now_ms());
    let customer = Customer {
        id: new_id(),
        name,
        ingest_aliases: aliases,
        custom_fields: req.custom_fields,
        created_at: now,
        updated_at: now,
        archived_at: None,
    };
    let doc = NewDoc {
        kind: kind::CUSTOMER,
        id: &customer.id,
        parent_id: None,
        unique_key: None,
        created_ms: now.0,
        body: encode(&customer)?,
    };
    st.stores
        .config
        .insert_customer(env, doc, &customer.ingest_aliases)
        .await?;
    Ok(Json(json!({ "data": customer.summary_json() })))
}

pub async fn load_customer(st: &AppState, env: Env, id: &str) -> ApiResult<Customer> {
    load(&st.stores, env, kind::CUSTOMER, id, "customer").await
}

async fn retrieve(
    State(st): State<AppState>,
    Caller(env): Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let customer = load_customer(&st, env, &id).await?;
    Ok(Json(json!({ "data": customer.detail_json() })))
}

async fn list(
    State(st): State<AppState>,
    Caller(env): Caller,
    q: QueryMap,
) -> ApiResult<Json<Value>> {
    let page = page_from_query(&q)?;
    let ids = q.list("customer_ids");
    if ids.len() > 100 {
        return Err(ApiError::bad_request(
            "customer_ids accepts at most 100 ids",
        ));
    }
    let filter = match q.bool("only_archived")? {
        Some(true) => ArchiveFilter::Archived,
        _ => ArchiveFilter::Active,
    };
    let alias_owner = match q.one("ingest_alias") {
        Some(alias) => Some(
            st.stores
                .config
                .customer_by_alias(env, alias)
                .await?
                .unwrap_or_default(),
        ),
        None => None,
    };
    // Filters are applied after the keyset fetch, so page through until the page fills.
    let mut items = Vec::new();
    let mut after = page.after;
    loop {
        let fetch = PageReq { after, limit: 200 };
        let docs = st
            .stores
            .config
            .list_docs(env, kind::CUSTOMER, None, filter, Some(fetch))
            .await?;
        let exhausted = docs.len() < 200;
        for d in &docs {
            after = d.seq;
            let keep = (ids.is_empty() || ids.contains(&d.id))
                && alias_owner.as_ref().is_none_or(|o| *o == d.id);
            if keep {
                items.push((d.seq, decode::<Customer>(d)?.detail_json()));
            }
            if items.len() as i64 > page.limit {
                break;
            }
        }
        if exhausted || items.len() as i64 > page.limit {
            break;
        }
    }
    Ok(keyset_page(items, page.limit))
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
    let mut customer = load_customer(&st, env, &req.id).await?;
    if customer.archived_at.is_some() {
        return Ok(id_response(&req.id));
    }
    let now = Time(st.now_ms());
    // Archiving a customer archives its contracts; aliases stay reserved.
    let contracts = st
        .stores
        .config
        .list_docs(
            env,
            kind::CONTRACT,
            Some(&req.id),
            ArchiveFilter::Active,
            None,
        )
        .await?;
    for doc in contracts {
        let mut contract: Contract = decode(&doc)?;
        contract.archived_at = Some(now);
        st.stores
            .config
            .update_doc(env, kind::CONTRACT, &contract.id, &encode(&contract)?, true)
            .await?;
    }
    customer.archived_at = Some(now);
    customer.updated_at = now;
    st.stores
        .config
        .update_doc(env, kind::CUSTOMER, &customer.id, &encode(&customer)?, true)
        .await?;
    Ok(id_response(&req.id))
}

#[derive(Deserialize)]
struct SetAliases {
    ingest_aliases: Vec<String>,
}

async fn set_ingest_aliases(
    State(st): State<AppState>,
    Caller(env): Caller,
    Path(id): Path<String>,
    Body(req): Body<SetAliases>,
) -> ApiResult<Response> {
    let mut customer = load_customer(&st, env, &id).await?;
    customer.ingest_aliases = clean_aliases(req.ingest_aliases)?;
    customer.updated_at = Time(st.now_ms());
    st.stores
        .config
        .set_customer_aliases(env, &id, &customer.ingest_aliases, &encode(&customer)?)
        .await?;
    Ok((StatusCode::OK, HttpBody::empty()).into_response())
}

#[derive(Deserialize)]
struct SetName {
    name: String,
}

async fn set_name(
    State(st): State<AppState>,
    Caller(env): Caller,
    Path(id): Path<String>,
    Body(req): Body<SetName>,
) -> ApiResult<Json<Value>> {
    let mut customer = load_customer(&st, env, &id).await?;
    customer.name = truncate_name(&req.name)?;
    customer.updated_at = Time(st.now_ms());
    st.stores
        .config
        .update_doc(
            env,
            kind::CUSTOMER,
            &id,
            &encode(&customer)?,
            customer.archived_at.is_some(),
        )
        .await?;
    Ok(Json(json!({ "data": customer.summary_json() })))
}
