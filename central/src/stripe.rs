//! Pushing finalized invoices to Stripe: which invoices go (a contract billing through a Stripe
//! configuration), what is sent (the `stripe` outbox message finalization writes), and the
//! deliverer's side (`crate::outbox` calls [`push`] for topic `stripe`).
//!
//! Invariants:
//! - Written in the finalization transaction: the outbox message and a QUEUED `stripe_pushes`
//!   row, only by the finalizer whose status change won, only when Stripe is connected
//!   (`--stripe-api-key`).
//! - Exactly one Stripe invoice per Tally invoice, and one Stripe invoice item per line, however
//!   often a push is retried, duplicated or cut short (kill -9): before creating the invoice the
//!   push looks at its record (`StripeStore`), else at the customer's Stripe invoices for one whose
//!   `metadata[tally_invoice_id]` is this invoice (created but not recorded); before creating an
//!   item it looks at the record, else at the Stripe invoice's lines for one whose
//!   `metadata[tally_line]` is that line. Each creation is recorded as soon as Stripe answers.
//!   Every request also carries an `Idempotency-Key` (real Stripe honours it; localstripe does
//!   not, so exactly-once never rests on it alone). One deliverer at a time: an attempt stops
//!   before its outbox lease could expire ([`crate::outbox`]), and the next continues from the record.
//! - Amounts: Tally's exact line totals in USD cents become integer cents by cumulative rounding
//!   (half to even): line i is `round(sum of lines 0..=i) − round(sum of lines 0..i)`, so each
//!   line is off by less than a cent and the Stripe total is Tally's total rounded half to even.
//! - A 4xx from Stripe (unknown customer, bad request, bad key) sets the invoice's external status
//!   to INVALID_REQUEST_ERROR with Stripe's message, writes one `invoice.billing_provider_error`
//!   webhook per active endpoint (stable ids: once per invoice), and is retried with backoff like
//!   any failed delivery; a later success clears it.
//! - The API key is sent only in the `Authorization` header and never logged or shown.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::model::{BillingProvider, Contract, Customer, StripeCollectionMethod};
use crate::service::webhooks;
use crate::store::{
    ArchiveFilter, Env, InvoiceRow, NewOutboxMessage, NewStripePush, OutboxMessage, StoreError,
    Stores, StripePush, OUTBOX_STRIPE, OUTBOX_WEBHOOK,
};
use crate::wire::Time;
use crate::{Clock, Secret};

/// Stripe connection settings (`--stripe-api-key`, `--stripe-api-base`).
#[derive(Debug, Clone)]
pub struct StripeSettings {
    /// Never logged (`Secret`'s `Debug` hides it).
    pub api_key: Secret,
    /// `https://api.stripe.com`, or a local Stripe; without a trailing slash.
    pub api_base: String,
}

impl StripeSettings {
    pub fn new(api_key: Secret, api_base: &str) -> anyhow::Result<StripeSettings> {
        let base = api_base.trim().trim_end_matches('/');
        let url = reqwest::Url::parse(base)
            .map_err(|e| anyhow::anyhow!("--stripe-api-base {base:?} is not a URL: {e}"))?;
        anyhow::ensure!(
            matches!(url.scheme(), "http" | "https"),
            "--stripe-api-base must be an http(s) URL"
        );
        anyhow::ensure!(
            std::str::from_utf8(&api_key.0).is_ok_and(|k| k.chars().all(|c| c.is_ascii_graphic())),
            "--stripe-api-key must be printable ASCII"
        );
        Ok(StripeSettings {
            api_key,
            api_base: base.to_string(),
        })
    }
}

/// The outbox message kind of a push.
pub const KIND: &str = "stripe.invoice";
/// The webhook type of a failed push.
pub const ERROR_KIND: &str = "invoice.billing_provider_error";

/// External statuses a push goes through (`ExternalInvoiceStatus`).
pub const QUEUED: &str = "QUEUED";
pub const DRAFT: &str = "DRAFT";
pub const FINALIZED: &str = "FINALIZED";
pub const INVALID_REQUEST_ERROR: &str = "INVALID_REQUEST_ERROR";

/// Where a contract's invoices go in Stripe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeTarget {
    /// `configuration.stripe_customer_id`; `None` when the configuration lacks it (the push
    /// then fails as a billing-provider error, visibly).
    pub stripe_customer_id: Option<String>,
    pub collection_method: Option<String>,
    pub leave_in_draft: bool,
}

/// Whether (and where) the contract's invoices are pushed to Stripe: through its own active
/// Stripe billing-provider configuration; a contract naming none bills through the customer's
/// legacy `billing_config` of type `stripe`, if it has one.
pub fn target(customer: &Customer, contract: &Contract) -> Option<StripeTarget> {
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
    match &contract.record.billing_provider_configuration {
        Some(cfg) => {
            if cfg.billing_provider != BillingProvider::Stripe || cfg.archived_at.is_some() {
                return None;
            }
            let c = &cfg.configuration;
            Some(StripeTarget {
                stripe_customer_id: text(c.get("stripe_customer_id")).filter(|s| !s.is_empty()),
                collection_method: text(c.get("stripe_collection_method")),
                leave_in_draft: c
                    .get("leave_stripe_invoices_in_draft")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            })
        }
        None => {
            let legacy = customer
                .billing_config
                .get(BillingProvider::Stripe.as_str())?;
            Some(StripeTarget {
                stripe_customer_id: Some(legacy.billing_provider_customer_id.clone()),
                collection_method: legacy
                    .stripe_collection_method
                    .map(|m: StripeCollectionMethod| m.as_str().to_string()),
                leave_in_draft: false,
            })
        }
    }
}

/// One Stripe invoice item to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub description: String,
    /// Integer cents (cumulative rounding).
    pub amount: i64,
    /// Tally's exact line total, in cents.
    pub exact: String,
}

/// What a `stripe` outbox message carries: everything the push sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload {
    pub invoice_id: String,
    pub customer_id: String,
    pub contract_id: String,
    pub stripe_customer_id: Option<String>,
    pub collection_method: Option<String>,
    pub leave_in_draft: bool,
    pub days_until_due: Option<i64>,
    pub currency: String,
    pub items: Vec<Item>,
    /// The Stripe total (sum of `items`) and Tally's exact total.
    pub total: i64,
    pub exact_total: String,
}

fn decimal(v: &Value) -> Option<Decimal> {
    v.to_string().parse().ok()
}

fn cents(d: Decimal) -> i64 {
    d.round_dp_with_strategy(0, RoundingStrategy::MidpointNearestEven)
        .to_i64()
        .unwrap_or(i64::MAX)
}

/// Integer cents for exact amounts, by cumulative half-to-even rounding: they sum to the
/// rounded total, and each is off by less than one cent.
pub fn cumulative_cents(exact: &[Decimal]) -> Vec<i64> {
    let mut running = Decimal::ZERO;
    let mut before = 0i64;
    exact
        .iter()
        .map(|d| {
            running += *d;
            let now = cents(running);
            let line = now - before;
            before = now;
            line
        })
        .collect()
}

/// The push of a just-finalized invoice (its frozen `body`): the lines in the invoice's credit
/// type with a non-zero total, in order, as Stripe items.
pub fn payload(row: &InvoiceRow, body: &Value, target: &StripeTarget) -> Payload {
    let credit = body["credit_type"]["id"].as_str().unwrap_or_default();
    let mut names = Vec::new();
    let mut exact = Vec::new();
    for line in body["line_items"].as_array().into_iter().flatten() {
        if line["credit_type"]["id"].as_str() != Some(credit) {
            continue;
        }
        let Some(total) = decimal(&line["total"]) else {
            continue;
        };
        if total.is_zero() {
            continue;
        }
        names.push(line["name"].as_str().unwrap_or("Usage").to_string());
        exact.push(total);
    }
    let amounts = cumulative_cents(&exact);
    let items: Vec<Item> = names
        .into_iter()
        .zip(exact.iter().zip(amounts))
        .map(|(description, (e, amount))| Item {
            description,
            amount,
            exact: e.normalize().to_string(),
        })
        .collect();
    let exact_total = decimal(&body["total"]).unwrap_or_default();
    let days_until_due = body["net_payment_terms_days"]
        .as_i64()
        .or_else(|| decimal(&body["net_payment_terms_days"]).and_then(|d| d.to_i64()));
    Payload {
        invoice_id: row.id.clone(),
        customer_id: row.customer_id.clone(),
        contract_id: row.contract_id.clone(),
        stripe_customer_id: target.stripe_customer_id.clone(),
        collection_method: target.collection_method.clone(),
        leave_in_draft: target.leave_in_draft,
        days_until_due,
        currency: "usd".into(),
        total: items.iter().map(|i| i.amount).sum(),
        items,
        exact_total: exact_total.normalize().to_string(),
    }
}

/// The outbox message and QUEUED record of a just-finalized invoice's push.
pub fn messages(
    env: Env,
    row: &InvoiceRow,
    body: &Value,
    target: &StripeTarget,
    wall_ms: i64,
) -> (NewOutboxMessage, NewStripePush) {
    let p = payload(row, body, target);
    let msg = NewOutboxMessage {
        id: webhooks::message_id(env, KIND, &row.id, OUTBOX_STRIPE),
        env,
        topic: OUTBOX_STRIPE.into(),
        kind: KIND.into(),
        destination: target
            .stripe_customer_id
            .clone()
            .unwrap_or_else(|| "-".into()),
        payload: serde_json::to_string(&p).unwrap_or_default(),
        created_ms: wall_ms,
    };
    let push = NewStripePush {
        invoice_id: row.id.clone(),
        customer_id: row.customer_id.clone(),
        stripe_customer_id: target.stripe_customer_id.clone(),
        created_ms: wall_ms,
    };
    (msg, push)
}

/// The Invoice object's `external_invoice` for a push.
pub fn external_invoice(push: &StripePush) -> Value {
    let mut v = json!({
        "billing_provider_type": "stripe",
        "external_status": push.status,
    });
    if let Some(id) = &push.stripe_invoice_id {
        v["invoice_id"] = json!(id);
    }
    if let Some(e) = &push.error {
        v["billing_provider_error"] = json!(e);
    }
    v
}

/// Why a push did not finish.
pub enum PushError {
    /// Try again later (a transport error, a 5xx or 429, the database, the attempt's time up).
    Retry(String),
    /// Stripe refused the request (a 4xx): a billing-provider error, retried too.
    Provider(String),
    /// The message cannot be delivered at all (its payload is unreadable).
    Final(String),
}

fn store_err(e: StoreError) -> PushError {
    PushError::Retry(format!("database: {e}"))
}

/// A Stripe API client for one attempt, bounded by the attempt's deadline.
struct Client<'a> {
    http: &'a reqwest::Client,
    settings: &'a StripeSettings,
    deadline: Instant,
}

impl Client<'_> {
    fn remaining(&self) -> Result<Duration, PushError> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        match left.is_zero() {
            true => Err(PushError::Retry(
                "the attempt's time ran out; the next attempt continues from the record".into(),
            )),
            false => Ok(left),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        form: &[(String, String)],
        idempotency_key: Option<&str>,
    ) -> Result<Value, PushError> {
        let url = format!("{}{path}", self.settings.api_base);
        let key = String::from_utf8_lossy(&self.settings.api_key.0).into_owned();
        let mut req = self
            .http
            .request(method.clone(), &url)
            .timeout(self.remaining()?)
            .bearer_auth(key)
            .header("stripe-version", "2024-06-20");
        if method == reqwest::Method::GET {
            req = req.query(form);
        } else {
            req = req
                .header("content-type", "application/x-www-form-urlencoded")
                .body(encode_form(form));
        }
        if let Some(k) = idempotency_key {
            req = req.header("idempotency-key", k);
        }
        let res = req
            .send()
            .await
            .map_err(|e| PushError::Retry(format!("Stripe {path}: {}", describe(&e))))?;
        let status = res.status();
        let text = res.text().await.unwrap_or_default();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        let message = body["error"]["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| text.chars().take(300).collect());
        let what = format!(
            "Stripe {path}: HTTP {}: {}",
            status.as_u16(),
            message.trim()
        );
        match status.is_client_error() && status.as_u16() != 429 {
            true => Err(PushError::Provider(what)),
            false => Err(PushError::Retry(what)),
        }
    }
}

fn encode_form(form: &[(String, String)]) -> String {
    let mut out = String::new();
    for (k, v) in form {
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(&urlencode(k));
        out.push('=');
        out.push_str(&urlencode(v));
    }
    out
}

fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "could not connect".into()
    } else {
        "request failed".into()
    }
}

fn pair(k: &str, v: impl Into<String>) -> (String, String) {
    (k.to_string(), v.into())
}

/// Delivers one `stripe` message: finds or creates the Stripe invoice, creates the items not
/// created yet, finalizes it (unless the configuration leaves Stripe invoices in draft), and
/// records each step. A billing-provider error is recorded and announced before it is returned.
pub async fn push(
    stores: &Stores,
    http: &reqwest::Client,
    settings: Option<&StripeSettings>,
    budget: Duration,
    msg: &OutboxMessage,
) -> Result<(), PushError> {
    let Some(settings) = settings else {
        return Err(PushError::Retry(
            "Stripe is not connected (no --stripe-api-key)".into(),
        ));
    };
    let p: Payload = serde_json::from_str(&msg.payload)
        .map_err(|e| PushError::Final(format!("unreadable stripe message: {e}")))?;
    let client = Client {
        http,
        settings,
        deadline: Instant::now() + budget,
    };
    let result = run(stores, &client, msg.env, &p).await;
    let now = crate::SystemClock.now_ms();
    match &result {
        Ok(status) => {
            stores
                .stripe
                .set_stripe_status(msg.env, &p.invoice_id, status, None, now)
                .await
                .map_err(store_err)?;
            Ok(())
        }
        Err(PushError::Provider(error)) => {
            stores
                .stripe
                .set_stripe_status(
                    msg.env,
                    &p.invoice_id,
                    INVALID_REQUEST_ERROR,
                    Some(error),
                    now,
                )
                .await
                .map_err(store_err)?;
            announce_error(stores, msg.env, &p, error, now).await?;
            Err(PushError::Provider(error.clone()))
        }
        Err(PushError::Retry(e)) => Err(PushError::Retry(e.clone())),
        Err(PushError::Final(e)) => Err(PushError::Final(e.clone())),
    }
}

/// The steps of a push; the external status it reached.
async fn run(
    stores: &Stores,
    client: &Client<'_>,
    env: Env,
    p: &Payload,
) -> Result<&'static str, PushError> {
    let Some(customer) = p.stripe_customer_id.as_deref() else {
        return Err(PushError::Provider(
            "the contract's Stripe billing provider configuration has no stripe_customer_id".into(),
        ));
    };
    let collection = match p.collection_method.as_deref() {
        None | Some("charge_automatically") => "charge_automatically",
        Some("send_invoice") => "send_invoice",
        Some(other) => {
            return Err(PushError::Provider(format!(
                "stripe_collection_method {other:?} is not supported by Tally's Stripe push \
                 (charge_automatically or send_invoice)"
            )))
        }
    };
    let record = stores
        .stripe
        .stripe_push(env, &p.invoice_id)
        .await
        .map_err(store_err)?;
    let recorded = record.as_ref().and_then(|r| r.stripe_invoice_id.clone());
    let invoice = match recorded {
        Some(id) => id,
        None => {
            let id = match find_invoice(client, customer, &p.invoice_id).await? {
                Some(id) => id,
                None => create_invoice(client, customer, collection, p).await?,
            };
            let now = crate::SystemClock.now_ms();
            stores
                .stripe
                .record_stripe_invoice(env, &p.invoice_id, &id, now)
                .await
                .map_err(store_err)?
                .unwrap_or(id)
        }
    };
    let mut done: BTreeMap<i64, String> = record
        .map(|r| r.items)
        .unwrap_or_default()
        .into_iter()
        .collect();
    if done.len() < p.items.len() {
        // Items Stripe created but the record missed (a crash between the two).
        for (line, item) in lines_on(client, &invoice, &p.invoice_id).await? {
            if let std::collections::btree_map::Entry::Vacant(e) = done.entry(line) {
                let amount = usize::try_from(line)
                    .ok()
                    .and_then(|i| p.items.get(i))
                    .map_or(0, |i| i.amount);
                let now = crate::SystemClock.now_ms();
                stores
                    .stripe
                    .record_stripe_item(env, &p.invoice_id, line, &item, amount, now)
                    .await
                    .map_err(store_err)?;
                e.insert(item);
            }
        }
        for (i, item) in p.items.iter().enumerate() {
            let line = i64::try_from(i).unwrap_or(i64::MAX);
            if done.contains_key(&line) {
                continue;
            }
            let form = vec![
                pair("customer", customer),
                pair("invoice", invoice.as_str()),
                pair("amount", item.amount.to_string()),
                pair("currency", p.currency.as_str()),
                pair("description", item.description.as_str()),
                pair("metadata[tally_invoice_id]", p.invoice_id.as_str()),
                pair("metadata[tally_line]", line.to_string()),
            ];
            let key = format!("tally-{}-item-{line}", p.invoice_id);
            let created = client
                .call(reqwest::Method::POST, "/v1/invoiceitems", &form, Some(&key))
                .await?;
            let id = created["id"].as_str().unwrap_or_default().to_string();
            let now = crate::SystemClock.now_ms();
            stores
                .stripe
                .record_stripe_item(env, &p.invoice_id, line, &id, item.amount, now)
                .await
                .map_err(store_err)?;
            done.insert(line, id);
        }
    }
    if p.leave_in_draft {
        return Ok(DRAFT);
    }
    let path = format!("/v1/invoices/{invoice}");
    let current = client.call(reqwest::Method::GET, &path, &[], None).await?;
    if current["status"].as_str() == Some("draft") {
        let key = format!("tally-{}-finalize", p.invoice_id);
        client
            .call(
                reqwest::Method::POST,
                &format!("{path}/finalize"),
                &[pair("auto_advance", "false")],
                Some(&key),
            )
            .await?;
    }
    Ok(FINALIZED)
}

/// The customer's Stripe invoice whose `metadata[tally_invoice_id]` is `tally_id`, if any (every
/// page of the customer's invoices; listing is read-after-write, where Stripe's search lags).
async fn find_invoice(
    client: &Client<'_>,
    customer: &str,
    tally_id: &str,
) -> Result<Option<String>, PushError> {
    let mut after: Option<String> = None;
    loop {
        let mut q = vec![pair("customer", customer), pair("limit", "100")];
        if let Some(a) = &after {
            q.push(pair("starting_after", a.as_str()));
        }
        let page = client
            .call(reqwest::Method::GET, "/v1/invoices", &q, None)
            .await?;
        let data = page["data"].as_array().cloned().unwrap_or_default();
        for inv in &data {
            if inv["metadata"]["tally_invoice_id"].as_str() == Some(tally_id) {
                return Ok(inv["id"].as_str().map(str::to_string));
            }
        }
        match (page["has_more"].as_bool(), data.last()) {
            (Some(true), Some(last)) => after = last["id"].as_str().map(str::to_string),
            _ => return Ok(None),
        }
        if after.is_none() {
            return Ok(None);
        }
    }
}

async fn create_invoice(
    client: &Client<'_>,
    customer: &str,
    collection: &str,
    p: &Payload,
) -> Result<String, PushError> {
    let mut form = vec![
        pair("customer", customer),
        pair("collection_method", collection),
        pair("auto_advance", "false"),
        pair("pending_invoice_items_behavior", "exclude"),
        pair("currency", p.currency.as_str()),
        pair("description", format!("Tally invoice {}", p.invoice_id)),
        pair("metadata[tally_invoice_id]", p.invoice_id.as_str()),
        pair("metadata[tally_customer_id]", p.customer_id.as_str()),
        pair("metadata[tally_contract_id]", p.contract_id.as_str()),
    ];
    if collection == "send_invoice" {
        form.push(pair(
            "days_until_due",
            p.days_until_due.unwrap_or(30).max(0).to_string(),
        ));
    }
    let key = format!("tally-{}-invoice", p.invoice_id);
    let created = client
        .call(reqwest::Method::POST, "/v1/invoices", &form, Some(&key))
        .await?;
    created["id"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| PushError::Retry("Stripe created an invoice without an id".into()))
}

/// `(tally line index, Stripe invoice item id)` of the lines on the Stripe invoice that carry
/// this Tally invoice's line metadata.
async fn lines_on(
    client: &Client<'_>,
    invoice: &str,
    tally_id: &str,
) -> Result<Vec<(i64, String)>, PushError> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    let path = format!("/v1/invoices/{invoice}/lines");
    loop {
        let mut q = vec![pair("limit", "100")];
        if let Some(a) = &after {
            q.push(pair("starting_after", a.as_str()));
        }
        let page = client.call(reqwest::Method::GET, &path, &q, None).await?;
        let data = page["data"].as_array().cloned().unwrap_or_default();
        for l in &data {
            if l["metadata"]["tally_invoice_id"].as_str() != Some(tally_id) {
                continue;
            }
            let line = l["metadata"]["tally_line"]
                .as_str()
                .and_then(|s| s.parse::<i64>().ok());
            let item = l["invoice_item"]
                .as_str()
                .or_else(|| l["parent"]["invoice_item_details"]["invoice_item"].as_str())
                .or_else(|| l["id"].as_str());
            if let (Some(line), Some(item)) = (line, item) {
                out.push((line, item.to_string()));
            }
        }
        match (page["has_more"].as_bool(), data.last()) {
            (Some(true), Some(last)) => after = last["id"].as_str().map(str::to_string),
            _ => return Ok(out),
        }
        if after.is_none() {
            return Ok(out);
        }
    }
}

/// Writes the `invoice.billing_provider_error` webhook of a push to every active endpoint (one
/// per invoice and endpoint: the ids are stable, so a repeated error writes nothing new).
async fn announce_error(
    stores: &Stores,
    env: Env,
    p: &Payload,
    error: &str,
    now: i64,
) -> Result<(), PushError> {
    let endpoints = stores
        .config
        .list_docs(
            env,
            crate::model::kind::WEBHOOK_ENDPOINT,
            None,
            ArchiveFilter::Active,
            None,
        )
        .await
        .map_err(store_err)?;
    if endpoints.is_empty() {
        return Ok(());
    }
    let mut work = stores.invoices.begin().await.map_err(store_err)?;
    for ep in &endpoints {
        let id = webhooks::message_id(env, ERROR_KIND, &p.invoice_id, &ep.id);
        let payload = json!({
            "id": id,
            "type": ERROR_KIND,
            "properties": {
                "invoice_id": p.invoice_id,
                "customer_id": p.customer_id,
                "contract_id": p.contract_id,
                "billing_provider": "stripe",
                "billing_provider_customer_id": p.stripe_customer_id,
                "billing_provider_error": error,
                "timestamp": Time(now),
            },
        });
        let msg = NewOutboxMessage {
            id,
            env,
            topic: OUTBOX_WEBHOOK.into(),
            kind: ERROR_KIND.into(),
            destination: ep.id.clone(),
            payload: payload.to_string(),
            created_ms: now,
        };
        work.put_outbox(&msg).await.map_err(store_err)?;
    }
    work.commit().await.map_err(store_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn cumulative_rounding_keeps_the_total() {
        // 1000/3 and 2000/3 cents (÷3 at 12 places): 333.3333333333 + 666.6666666666.
        let lines = [d("333.3333333333"), d("666.6666666666")];
        assert_eq!(cumulative_cents(&lines), vec![333, 667]);
        // Three thirds of a dollar: 33.33.. each, total 100.
        let thirds = [d("33.333333333333"); 3];
        assert_eq!(cumulative_cents(&thirds), vec![33, 34, 33]);
        assert_eq!(cumulative_cents(&thirds).iter().sum::<i64>(), 100);
        // Half to even on the running total; negatives (applied credits) too.
        assert_eq!(cumulative_cents(&[d("0.5"), d("1")]), vec![0, 2]);
        assert_eq!(cumulative_cents(&[d("250"), d("-100.25")]), vec![250, -100]);
    }

    #[test]
    fn payload_takes_the_non_zero_lines_of_the_invoice_credit_type() {
        let usd = json!({ "id": crate::model::USD_ID, "name": "USD (cents)" });
        let body = json!({
            "credit_type": usd,
            "total": 1000,
            "net_payment_terms_days": 15,
            "line_items": [
                { "name": "A", "total": 333.3333333333, "credit_type": usd },
                { "name": "zero", "total": 0, "credit_type": usd },
                { "name": "units", "total": 7, "credit_type": { "id": "cpu", "name": "CPU" } },
                { "name": "B", "total": 666.6666666667, "credit_type": usd },
            ],
        });
        let row = InvoiceRow {
            id: "inv".into(),
            kind: crate::store::InvoiceKind::Usage,
            contract_id: "k".into(),
            customer_id: "c".into(),
            period_start_ms: 0,
            period_end_ms: 1,
            status: crate::store::InvoiceStatus::Finalized,
            body: None,
            revision: 0,
            regenerated_from: None,
        };
        let target = StripeTarget {
            stripe_customer_id: Some("cus_1".into()),
            collection_method: Some("send_invoice".into()),
            leave_in_draft: true,
        };
        let p = payload(&row, &body, &target);
        let got: Vec<(&str, i64)> = p
            .items
            .iter()
            .map(|i| (i.description.as_str(), i.amount))
            .collect();
        assert_eq!(got, vec![("A", 333), ("B", 667)]);
        assert_eq!((p.total, p.exact_total.as_str()), (1000, "1000"));
        assert_eq!(p.items[0].exact, "333.3333333333");
        assert_eq!(p.days_until_due, Some(15));
        assert_eq!(p.stripe_customer_id.as_deref(), Some("cus_1"));
        assert!(p.leave_in_draft);
        let back: Payload = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn urlencodes_brackets_and_spaces() {
        assert_eq!(
            encode_form(&[pair("metadata[tally_line]", "a b&c")]),
            "metadata%5Btally_line%5D=a%20b%26c"
        );
    }
}
