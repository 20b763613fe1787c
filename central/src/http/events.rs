//! `POST /v1/events/search` (wire side; the use case is `service::events`): a bare JSON array,
//! one item per stored event (the counted one and the latest duplicate of each id).
//!
//! Properties are answered as the strings they are stored as: Tally keeps every property value
//! as exact text (a JSON number's literal digits), so `60` sent as a number reads back `"60"`.

use axum::extract::State;
use axum::routing::post;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tally_core::invoice_json::time;

use super::error::ApiResult;
use super::{Body, Caller, Routes};
use crate::service::events::{self, FoundEvent};
use crate::store::Env;
use crate::AppState;

pub fn routes() -> Routes {
    Routes::new().route("/v1/events/search", post(search))
}

#[derive(Deserialize)]
struct SearchReq {
    #[serde(rename = "transactionIds")]
    transaction_ids: Vec<String>,
}

async fn search(
    State(st): State<AppState>,
    Caller(env): Caller,
    Body(req): Body<SearchReq>,
) -> ApiResult<Json<Value>> {
    let found = events::search(&st, env, &req.transaction_ids).await?;
    Ok(Json(Value::Array(
        found.iter().map(|f| render(env, f)).collect(),
    )))
}

/// A stable id of a stored row: UUID v5 of its environment, transaction id and duplicate flag.
fn event_id(env: Env, transaction_id: &str, duplicate: bool) -> String {
    let name = format!(
        "{}\n{}\n{}",
        env.as_str(),
        u8::from(duplicate),
        transaction_id
    );
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, name.as_bytes()).to_string()
}

fn render(env: Env, f: &FoundEvent) -> Value {
    let e = &f.stored.event;
    json!({
        "id": event_id(env, &e.transaction_id, f.stored.duplicate),
        "transaction_id": e.transaction_id,
        "customer_id": e.customer_id,
        "event_type": e.event_type,
        "timestamp": time(e.timestamp_ms),
        "properties": e.properties,
        "is_duplicate": f.stored.duplicate,
        "processed_at": time(f.stored.processed_ms),
        "matched_customer": f.customer.as_ref().map(|c| json!({ "id": c.id, "name": c.name })),
        "matched_billable_metrics": f.metrics,
        "finalized_invoice_ids": f.finalized_invoice_ids,
    })
}
