//! `GET /v1/operations/stuck-contracts`: Tally's own operator read (not a Metronome path). Lists
//! the token environment's contracts the background job could not finalize, with the last error
//! and how many passes failed, so a stuck contract is visible without reading logs.

use axum::extract::State;
use axum::routing::get;
use axum::Json;
use serde_json::{json, Value};

use super::error::ApiResult;
use super::Caller;
use super::Routes;
use crate::service::jobs;
use crate::wire::Time;
use crate::AppState;

pub fn routes() -> Routes {
    Routes::new().route("/v1/operations/stuck-contracts", get(stuck_contracts))
}

async fn stuck_contracts(
    State(st): State<AppState>,
    Caller(env): Caller,
) -> ApiResult<Json<Value>> {
    let stuck = jobs::stuck_contracts(&st, env).await?;
    let data: Vec<Value> = stuck
        .into_iter()
        .map(|f| {
            json!({
                "contract_id": f.contract_id,
                "error": f.error,
                "first_failed_at": Time(f.first_failed_ms),
                "last_failed_at": Time(f.last_failed_ms),
                "failed_passes": f.failures,
            })
        })
        .collect();
    Ok(Json(json!({ "data": data })))
}
