//! Webhook endpoints (Tally's own `webhook-endpoints/create|archive|list`, where Metronome has a
//! dashboard), the environment's signing secret (`client/config/webhook_secret`), the delivery
//! log, and the messages a state change puts in the outbox for them (`crate::outbox` delivers).
//!
//! Invariants:
//! - One outbox message per (event, endpoint active when the event happened), written in the
//!   transaction of the event (`invoices::finalize_rows`): its id is a UUID v5 of the
//!   environment, type, subject and endpoint, so it is the same however often it is retried and
//!   the same if two finalizers race (only the one whose status change won writes it anyway).
//! - The secret is stored, used to sign, and never returned or logged.
//! - An archived endpoint gets nothing new; its pending messages are given up at their next attempt.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::model::{decode, encode, kind, new_id, LoadError};
use crate::store::{
    ArchiveFilter, Env, InvoiceRow, NewDoc, NewOutboxMessage, OutboxMessage, PageReq, StoreError,
    StoreResult, OUTBOX_WEBHOOK,
};
use crate::wire::Time;
use crate::AppState;

use super::{modify_doc, require_text, Invalid, SeqPage, Write};

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<LoadError> for WebhookError {
    fn from(e: LoadError) -> Self {
        match e {
            LoadError::NotFound(what) => WebhookError::NotFound(what),
            LoadError::Store(e) => WebhookError::Store(e),
        }
    }
}

type Result<T> = std::result::Result<T, WebhookError>;

/// Longest endpoint URL accepted.
pub const MAX_URL_CHARS: usize = 2_048;
/// Longest signing secret accepted.
pub const MAX_SECRET_CHARS: usize = 1_024;

/// A webhook endpoint as stored (document kind [`kind::WEBHOOK_ENDPOINT`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WebhookEndpoint {
    pub id: String,
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub created_at: Time,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived_at: Option<Time>,
}

impl WebhookEndpoint {
    pub fn api_json(&self) -> Value {
        let mut v = json!({
            "id": self.id,
            "url": self.url,
            "created_at": self.created_at,
            "archived_at": self.archived_at,
        });
        if let Some(d) = &self.description {
            v["description"] = json!(d);
        }
        v
    }
}

/// Refuses anything but an absolute `http` or `https` URL with a host.
pub fn check_url(url: &str) -> std::result::Result<(), Invalid> {
    require_text("url", url, MAX_URL_CHARS)?;
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| Invalid(format!("url must be an absolute http(s) URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(Invalid(format!(
            "url must use http or https, not {:?}",
            parsed.scheme()
        )));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(Invalid("url must name a host".into()));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(Invalid(
            "url must not carry credentials (sign with the webhook secret instead)".into(),
        ));
    }
    Ok(())
}

/// Creates an endpoint; its id.
pub async fn create(
    st: &AppState,
    env: Env,
    url: &str,
    description: Option<&str>,
) -> Result<String> {
    check_url(url)?;
    if let Some(d) = description {
        if d.chars().count() > 1_024 {
            return Err(Invalid("description is longer than 1024 characters".into()).into());
        }
    }
    let now = st.now_ms();
    let record = WebhookEndpoint {
        id: new_id(),
        url: url.to_string(),
        description: description.map(str::to_string),
        created_at: Time(now),
        archived_at: None,
    };
    let doc = NewDoc {
        kind: kind::WEBHOOK_ENDPOINT,
        id: &record.id,
        parent_id: None,
        unique_key: None,
        created_ms: now,
        body: encode(&record)?,
    };
    st.stores.config.insert_docs(env, &[doc]).await?;
    Ok(record.id)
}

/// Archives an endpoint (idempotent): nothing new is sent to it.
pub async fn archive(st: &AppState, env: Env, id: &str) -> Result<()> {
    let now = Time(st.now_ms());
    modify_doc(
        st,
        env,
        kind::WEBHOOK_ENDPOINT,
        id,
        "webhook endpoint",
        |e: &mut WebhookEndpoint| {
            if e.archived_at.is_some() {
                return Ok::<_, WebhookError>(Write::Unchanged);
            }
            e.archived_at = Some(now);
            Ok(Write::Save { archived: true })
        },
    )
    .await
    .map(drop)
}

/// One keyset page (`limit + 1` fetched) of the endpoints, in creation order.
pub async fn list(
    st: &AppState,
    env: Env,
    filter: ArchiveFilter,
    page: PageReq,
) -> Result<SeqPage<WebhookEndpoint>> {
    let fetch = PageReq {
        after: page.after,
        limit: page.limit + 1,
    };
    let docs = st
        .stores
        .config
        .list_docs(env, kind::WEBHOOK_ENDPOINT, None, filter, Some(fetch))
        .await?;
    docs.iter().map(|d| Ok((d.seq, decode(d)?))).collect()
}

/// The endpoint `id`, archived or not.
pub async fn get(st: &AppState, env: Env, id: &str) -> StoreResult<Option<WebhookEndpoint>> {
    get_in(&st.stores, env, id).await
}

/// [`get`] with the stores alone (the deliverer has no `AppState`).
pub async fn get_in(
    stores: &crate::store::Stores,
    env: Env,
    id: &str,
) -> StoreResult<Option<WebhookEndpoint>> {
    match stores
        .config
        .get_doc(env, kind::WEBHOOK_ENDPOINT, id)
        .await?
    {
        Some(doc) => Ok(Some(decode(&doc)?)),
        None => Ok(None),
    }
}

/// The ids of the active endpoints: the destinations of an event happening now.
pub async fn active_endpoint_ids(st: &AppState, env: Env) -> StoreResult<Vec<String>> {
    let docs = st
        .stores
        .config
        .list_docs(
            env,
            kind::WEBHOOK_ENDPOINT,
            None,
            ArchiveFilter::Active,
            None,
        )
        .await?;
    Ok(docs.into_iter().map(|d| d.id).collect())
}

/// One page of an endpoint's delivery log, oldest first, after `after` (`limit + 1` fetched).
pub async fn deliveries(
    st: &AppState,
    env: Env,
    endpoint_id: &str,
    after: Option<(i64, String)>,
    limit: i64,
) -> Result<Vec<OutboxMessage>> {
    if get(st, env, endpoint_id).await?.is_none() {
        return Err(WebhookError::NotFound("webhook endpoint"));
    }
    Ok(st
        .stores
        .outbox
        .outbox_for_destination(env, endpoint_id, after, limit + 1)
        .await?)
}

/// A delivery log entry as the API shows it (never the secret; the payload is what was sent).
pub fn delivery_json(m: &OutboxMessage) -> Value {
    let status = match (m.delivered_ms, m.failed_ms) {
        (Some(_), _) => "delivered",
        (None, Some(_)) => "failed",
        (None, None) => "pending",
    };
    let payload: Value = serde_json::from_str(&m.payload).unwrap_or(Value::Null);
    json!({
        "id": m.id,
        "type": m.kind,
        "status": status,
        "attempts": m.attempts,
        "last_error": m.last_error,
        "created_at": Time(m.created_ms),
        "next_attempt_at": (status == "pending").then_some(Time(m.next_attempt_ms)),
        "delivered_at": m.delivered_ms.map(Time),
        "failed_at": m.failed_ms.map(Time),
        "payload": payload,
    })
}

/// Sets the environment's signing secret (replacing any); later attempts, retries of earlier
/// messages included, are signed with it.
pub async fn set_secret(st: &AppState, env: Env, secret: &str) -> Result<()> {
    if secret.is_empty() {
        return Err(Invalid("webhook_secret must not be empty".into()).into());
    }
    if secret.chars().count() > MAX_SECRET_CHARS {
        return Err(Invalid(format!(
            "webhook_secret is longer than {MAX_SECRET_CHARS} characters"
        ))
        .into());
    }
    st.stores
        .outbox
        .set_webhook_secret(env, secret, st.now_ms())
        .await?;
    Ok(())
}

/// Namespace of outbox message ids (UUID v5).
const MESSAGE_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x7a11_7900_0b0c_4e1d_9a5e_0f1e_2d3c_4b5a);

/// The stable id of the message telling `endpoint` about `subject`'s event `kind`.
pub fn message_id(env: Env, kind: &str, subject: &str, endpoint: &str) -> String {
    let name = format!("{}\n{kind}\n{subject}\n{endpoint}", env.as_str());
    uuid::Uuid::new_v5(&MESSAGE_NAMESPACE, name.as_bytes()).to_string()
}

/// The `invoice.finalized` messages of a just-finalized invoice, one per endpoint, finalized at
/// `finalized_ms` (the service clock) and written at `wall_ms` (the outbox's wall clock).
pub fn invoice_finalized(
    env: Env,
    endpoints: &[String],
    row: &InvoiceRow,
    finalized_ms: i64,
    wall_ms: i64,
) -> Vec<NewOutboxMessage> {
    const KIND: &str = "invoice.finalized";
    endpoints
        .iter()
        .map(|endpoint| {
            let id = message_id(env, KIND, &row.id, endpoint);
            let payload = json!({
                "id": id,
                "type": KIND,
                "properties": {
                    "invoice_id": row.id,
                    "customer_id": row.customer_id,
                    "contract_id": row.contract_id,
                    "invoice_finalized_date": Time(finalized_ms),
                },
            });
            NewOutboxMessage {
                id,
                env,
                topic: OUTBOX_WEBHOOK.into(),
                kind: KIND.into(),
                destination: endpoint.clone(),
                payload: payload.to_string(),
                created_ms: wall_ms,
            }
        })
        .collect()
}
