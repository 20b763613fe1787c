//! The shard Durable Object: the single writer of the dedupe keys routed to it. It dedupes and
//! pre-aggregates events in its SQLite storage, and flushes sealed, numbered batches to central.
//!
//! Ingest (the RPC method `ingestEvents`, from the Worker): in one storage transaction, claim each event's key
//! (environment, `transaction_id`) and merge the contributions of the events whose key was new
//! into the pending partials keyed by (environment, `PartialKey`), and append an event record
//! (the JSON of its `tally_core::event::StoredEvent`, [`seal::record_json`]) for each event
//! accepted and for each duplicate delivery (the latest one pending per key). The reply is sent only after the
//! transaction committed (and the runtime's output gate holds it until the write is durable).
//! Calls are group-committed: the calls that reach the object within one turn of its event loop
//! share one transaction (calls from different client requests; all requests to an object share
//! its I/O context). Each commit costs a disk sync where storage is local, so with many concurrent
//! requests this divides the shard's commits by the number of calls waiting.
//!
//! Flush (the alarm): seal pending partials and event records into batch `(shard_id, seq)` (store
//! the sealed bytes, delete those pendings, advance `seq`, in one transaction; bounds in [`seal`]), POST it signed to central, delete it
//! once acknowledged (`applied` true or false), otherwise resend the same bytes with exponential
//! backoff. Sealed batches go out strictly in `seq` order, one at a time.
//!
//! Metric definitions come from central's snapshot, cached in memory and in storage. They are
//! refreshed when an acknowledgement carries a newer version than the shard's, when the Worker
//! proxied a metric change (`POST /invalidate`), and fetched on first use per environment.
//!
//! Invariants:
//! - A key is claimed in the same transaction that records its event's usage and its event record;
//!   a failed transaction stores none of them, so the Worker's 503 and the client's retry are safe. When a group's
//!   transaction fails, each of its calls is retried in its own transaction, so one call's failure
//!   is never another's.
//! - A sealed batch never changes; `seq` is strictly increasing; a new batch is sealed only when
//!   nothing sealed is waiting or the pending set is full (see [`policy`]).
//! - Memory holds only caches (snapshots, counters, the alarm time); storage is the truth, so an
//!   evicted or restarted object continues where it was.

pub mod policy;
pub mod seal;
pub mod store;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::Duration;

use futures_channel::oneshot;
use tally_core::accumulate::Accumulator;
use tally_core::env::Env as Environment;
use tally_core::event::Event;
use tally_core::fold;
use tally_core::ingest::DEDUPE_RETENTION_MS;
use tally_core::metric::{contributions, MetricDef};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use worker::{durable_object, Delay, DurableObject, Env, Method, Request, Response, State};

use crate::config::{EdgeConfig, DEFAULT_FLUSH_INTERVAL_MS};
use crate::error::{json_response, EdgeError};
use crate::protocol::{Outcome, ShardIngest, ShardReply, INVALIDATE_PATH};

/// How long to keep using a stale snapshot before asking central again after a failed refresh.
const SNAPSHOT_RETRY_MS: i64 = 5_000;

/// A metric snapshot as the shard meters with it.
#[derive(Clone)]
struct Metrics {
    version: u64,
    defs: Rc<Vec<MetricDef>>,
    stale: bool,
    /// A stale snapshot is not refreshed again before this time (after a failed refresh).
    retry_after_ms: i64,
}

/// The pending partials, mirrored in memory so ingest reads none of them from storage, and how
/// many event records are pending (the records themselves stay in storage).
struct Pending {
    rows: BTreeMap<String, Accumulator>,
    /// The oldest metric snapshot version any pending partial was computed with.
    version: Option<u64>,
    /// Pending event records and their stored bytes.
    events: u64,
    event_bytes: u64,
}

/// Caches of what storage holds; all may be lost at any time.
#[derive(Default)]
struct Memory {
    schema_ready: bool,
    /// Whether this instance has checked that work left by a previous instance has an alarm.
    alarm_checked: bool,
    shard_id: Option<String>,
    snapshots: HashMap<String, Metrics>,
    /// The pending partials once loaded. Updated only after a transaction that changed them
    /// committed, so it always equals storage.
    pending: Option<Pending>,
    /// The alarm this instance last set, if it has not fired yet.
    alarm_at_ms: Option<i64>,
    /// Consecutive failed deliveries.
    failures: u32,
}

/// What an ingest call is answered with once its group committed.
type CallResult = Result<Vec<Outcome>, EdgeError>;

/// An ingest call waiting for the next group commit.
struct Queued {
    msg: ShardIngest,
    metrics: Metrics,
    reply: oneshot::Sender<CallResult>,
}

#[durable_object(alarm)]
pub struct Shard {
    state: State,
    env: Env,
    mem: RefCell<Memory>,
    /// Ingest calls waiting to commit; the first to arrive commits them all (see [`Shard::ingest`]).
    queue: RefCell<Vec<Queued>>,
}

impl DurableObject for Shard {
    fn new(state: State, env: Env) -> Self {
        Shard {
            state,
            env,
            mem: RefCell::new(Memory::default()),
            queue: RefCell::new(Vec::new()),
        }
    }

    async fn fetch(&self, req: Request) -> worker::Result<Response> {
        let result = match (req.method(), req.path().as_str()) {
            (Method::Post, INVALIDATE_PATH) => self.invalidate(),
            _ => Err(EdgeError::Client(404, "no such shard endpoint".to_string())),
        };
        result.or_else(EdgeError::into_response)
    }

    async fn alarm(&self) -> worker::Result<Response> {
        self.mem.borrow_mut().alarm_at_ms = None;
        if let Err(e) = self.flush().await {
            let failures = {
                let mut mem = self.mem.borrow_mut();
                mem.failures = mem.failures.saturating_add(1);
                mem.failures
            };
            let interval = EdgeConfig::from_env(&self.env)
                .map(|c| c.flush_interval_ms)
                .unwrap_or(DEFAULT_FLUSH_INTERVAL_MS as i64);
            let now = crate::now_ms();
            let retry_at = now.saturating_add(policy::backoff_ms(interval, failures));
            worker::console_error!(
                "shard flush failed (attempt {failures}, next in {} ms): {e}",
                retry_at - now
            );
            if let Err(e) = self.set_alarm_at(retry_at, now).await {
                worker::console_error!("shard could not re-arm its alarm: {e}");
            }
        }
        Response::empty()
    }
}

/// Durable Object RPC (enabled by `edge/shim.js`): what the Worker calls, without the Request,
/// Response and body streams a `fetch` costs on both sides.
#[wasm_bindgen]
impl Shard {
    /// Records a [`ShardIngest`] (JSON) and answers its [`ShardReply`] (JSON) once committed; an
    /// error is thrown with its message (the Worker answers 503 either way).
    #[wasm_bindgen(js_name = ingestEvents)]
    pub async fn ingest_events(&self, body: String) -> Result<String, JsValue> {
        self.ingest(&body)
            .await
            .map_err(|e| js_sys::Error::new(&e.message()).into())
    }
}

impl Shard {
    async fn ingest(&self, text: &str) -> Result<String, EdgeError> {
        let cfg = EdgeConfig::from_env(&self.env)?;
        let msg: ShardIngest = serde_json::from_str(text)
            .map_err(|e| EdgeError::BadRequest(format!("invalid shard request: {e}")))?;
        self.prepare(Some(&msg.shard))?;
        self.check_alarm().await?;
        let metrics = self.metrics_for(&cfg, msg.env.as_str()).await?;
        if self.backlog()?.refuses_ingest() {
            return Err(EdgeError::Unavailable(
                "this shard's backlog is full because central has not acknowledged its batches"
                    .to_string(),
            ));
        }
        let (reply, leader) = {
            let mut queue = self.queue.borrow_mut();
            if queue.len() >= policy::MAX_QUEUED_CALLS {
                return Err(EdgeError::Unavailable(
                    "this shard has too many calls waiting to commit".to_string(),
                ));
            }
            let (tx, rx) = oneshot::channel();
            queue.push(Queued {
                msg,
                metrics,
                reply: tx,
            });
            (rx, queue.len() == 1)
        };
        if leader {
            // One turn of the event loop lets the calls already delivered to this object join
            // this commit; then this call commits the whole queue, its own part included.
            Delay::from(Duration::ZERO).await;
            self.commit_queue(&cfg).await;
        }
        let outcomes = reply.await.map_err(|_| {
            EdgeError::Unavailable("the shard dropped a call before committing it".to_string())
        })??;
        // An empty list means "all accepted" (the common case): a smaller reply to build and read.
        let outcomes = if outcomes.iter().all(|o| *o == Outcome::Accepted) {
            Vec::new()
        } else {
            outcomes
        };
        serde_json::to_string(&ShardReply { outcomes })
            .map_err(|e| EdgeError::Unavailable(format!("encoding the shard's reply: {e}")))
    }

    /// Group commit: records every queued call, at most [`policy::MAX_GROUP_CALLS`] per storage
    /// transaction, moves the alarm if the new partials are due sooner, then answers each call.
    /// Nothing awaits between taking a group and updating the memory mirror, so no other call or
    /// the alarm interleaves with a commit.
    async fn commit_queue(&self, cfg: &EdgeConfig) {
        let now = crate::now_ms();
        let mut answered: Vec<(oneshot::Sender<CallResult>, CallResult)> = Vec::new();
        loop {
            let group: Vec<Queued> = {
                let mut queue = self.queue.borrow_mut();
                let n = queue.len().min(policy::MAX_GROUP_CALLS);
                queue.drain(..n).collect()
            };
            if group.is_empty() {
                break;
            }
            let items: Vec<(&ShardIngest, &Metrics)> =
                group.iter().map(|q| (&q.msg, &q.metrics)).collect();
            let results = match self.record(&items, now) {
                Ok(all) => all.into_iter().map(Ok).collect(),
                // One call's failure must not fail the others: commit each on its own.
                Err(_) if items.len() > 1 => items
                    .iter()
                    .map(|item| {
                        self.record(std::slice::from_ref(item), now)
                            .map(|mut one| one.pop().unwrap_or_default())
                    })
                    .collect(),
                Err(e) => vec![Err(e)],
            };
            answered.extend(group.into_iter().map(|q| q.reply).zip(results));
        }
        let alarm = match self.backlog() {
            Ok(pending) => {
                let current = self.mem.borrow().alarm_at_ms;
                match policy::flush_due(now, cfg.flush_interval_ms, &pending, current) {
                    Some(due) => self.set_alarm_at(due, now).await,
                    None => Ok(()),
                }
            }
            Err(e) => Err(e),
        };
        for (reply, result) in answered {
            // The events are committed either way; without an alarm the caller must hear of it
            // (a retry reports them as duplicates and moves the alarm again).
            let result = match (&alarm, result) {
                (Err(e), Ok(_)) => Err(e.clone()),
                (_, result) => result,
            };
            // A caller that went away needs no answer.
            let _ = reply.send(result);
        }
    }

    /// The storage transaction of one group of ingest calls: `tally_core::fold::ingest` over the
    /// shard's storage ([`store::ShardTx`]), then the memory mirror. Returns each call's outcomes,
    /// in order.
    ///
    /// The group is folded as one list of events, in call order, exactly as central's writer folds
    /// the requests of one commit: the first copy of a key in the group is its candidate. In the
    /// same transaction, each event accepted or found a duplicate gets its event record (with the
    /// ids of the metrics its contributions went to); a rejected one gets none.
    fn record(
        &self,
        items: &[(&ShardIngest, &Metrics)],
        now_ms: i64,
    ) -> Result<Vec<Vec<Outcome>>, EdgeError> {
        // (environment, metrics, event) for every event of the group, in order.
        let events: Vec<(Environment, &Metrics, &Event)> = items
            .iter()
            .flat_map(|(msg, metrics)| msg.events.iter().map(|(_, e)| (msg.env, *metrics, e)))
            .collect();
        let contribs: Vec<_> = events
            .iter()
            .map(|(_, metrics, e)| contributions(metrics.defs.iter(), e))
            .collect();
        let matched: Vec<Vec<String>> = contribs
            .iter()
            .map(|c| seal::matched_metrics(c.iter().map(|(key, _)| key.metric_id.as_str())))
            .collect();
        let fold_items = events
            .iter()
            .zip(&contribs)
            .map(|((env, _, e), contribs)| {
                let contributions = contribs
                    .iter()
                    .map(|(key, acc)| Ok((store::row_key(env.as_str(), key)?, acc)))
                    .collect::<Result<_, EdgeError>>()?;
                Ok(fold::Item {
                    claim: (*env, e.transaction_id.as_str()),
                    contributions,
                })
            })
            .collect::<Result<Vec<_>, EdgeError>>()?;
        let storage = self.state.storage();
        let sql = storage.sql();
        self.load_pending()?;
        // Synchronous from here on: nothing else runs on this object until the mirror is updated.
        let mut mem = self.mem.borrow_mut();
        let Some(pending) = mem.pending.as_mut() else {
            return Err(EdgeError::Unavailable(
                "pending partials are not loaded".into(),
            ));
        };
        let oldest = items.iter().map(|(_, m)| m.version).min();
        let lower_version = match (pending.version, oldest) {
            (Some(v), Some(o)) if v <= o => None,
            (_, o) => o,
        };
        let mut tx = store::ShardTx::new(&sql, now_ms, &pending.rows, lower_version);
        let (outcomes, (added, added_bytes)) = store::transaction(&storage, || {
            let outcomes =
                fold::run_ready(fold::ingest(&mut tx, &fold_items)).unwrap_or_else(|| {
                    Err(EdgeError::Unavailable(
                        "shard storage did not answer synchronously".into(),
                    ))
                })?;
            let mut records: Vec<store::EventRow<'_>> = Vec::with_capacity(events.len());
            for (((env, _, e), matched), outcome) in events.iter().zip(&matched).zip(&outcomes) {
                let duplicate = match outcome {
                    Outcome::Accepted => false,
                    Outcome::Duplicate => true,
                    Outcome::Rejected(_) => continue,
                };
                let json = seal::record_json(env.as_str(), e, matched, now_ms, duplicate)
                    .map_err(EdgeError::Unavailable)?;
                records.push((env.as_str(), e.transaction_id.as_str(), duplicate, json));
            }
            let added = store::record_events(&sql, &records)?;
            Ok((outcomes, added))
        })?;
        let rows = tx.into_written();
        if !rows.is_empty() {
            pending.rows.extend(rows);
            if lower_version.is_some() {
                pending.version = lower_version;
            }
        }
        pending.events = pending.events.saturating_add(added);
        pending.event_bytes = pending.event_bytes.saturating_add_signed(added_bytes);
        let mut outcomes = outcomes.into_iter();
        Ok(items
            .iter()
            .map(|(msg, _)| outcomes.by_ref().take(msg.events.len()).collect())
            .collect())
    }

    /// Marks every snapshot stale: the next ingest (or flush) fetches it again.
    fn invalidate(&self) -> Result<Response, EdgeError> {
        self.prepare(None)?;
        store::mark_snapshots_stale(&self.state.storage().sql())?;
        for m in self.mem.borrow_mut().snapshots.values_mut() {
            m.stale = true;
            m.retry_after_ms = 0;
        }
        json_response(200, &serde_json::json!({ "stale": true }))
    }

    /// Creates the schema (once per instance) and returns the shard's batch name, choosing it on
    /// first use when the Worker told us our `name`.
    fn prepare(&self, name: Option<&str>) -> Result<Option<String>, EdgeError> {
        let storage = self.state.storage();
        if !self.mem.borrow().schema_ready {
            store::init_schema(&storage.sql())?;
            self.mem.borrow_mut().schema_ready = true;
        }
        if let Some(id) = self.mem.borrow().shard_id.clone() {
            return Ok(Some(id));
        }
        let id = store::shard_id(&storage, name, &incarnation()?)?;
        self.mem.borrow_mut().shard_id.clone_from(&id);
        Ok(id)
    }

    /// Once per instance: work left in storage (by an instance that stopped between a commit and
    /// setting its alarm) gets an alarm.
    async fn check_alarm(&self) -> Result<(), EdgeError> {
        if self.mem.borrow().alarm_checked {
            return Ok(());
        }
        let storage = self.state.storage();
        let sql = storage.sql();
        let work = !self.backlog()?.is_empty() || store::sealed_count(&sql)? > 0;
        if work && storage.get_alarm().await?.is_none() {
            let now = crate::now_ms();
            self.set_alarm_at(now, now).await?;
        }
        self.mem.borrow_mut().alarm_checked = true;
        Ok(())
    }

    /// Loads the pending mirror from storage if this instance has not yet.
    fn load_pending(&self) -> Result<(), EdgeError> {
        if self.mem.borrow().pending.is_some() {
            return Ok(());
        }
        let sql = self.state.storage().sql();
        let (rows, version) = store::load_all_pending(&sql)?;
        let (events, event_bytes) = store::pending_event_stats(&sql)?;
        self.mem.borrow_mut().pending = Some(Pending {
            rows,
            version,
            events,
            event_bytes,
        });
        Ok(())
    }

    /// What is pending, from the mirror.
    fn backlog(&self) -> Result<policy::Backlog, EdgeError> {
        self.load_pending()?;
        let mem = self.mem.borrow();
        Ok(mem
            .pending
            .as_ref()
            .map_or_else(policy::Backlog::default, |p| policy::Backlog {
                partials: u64::try_from(p.rows.len()).unwrap_or(u64::MAX),
                events: p.events,
                event_bytes: p.event_bytes,
            }))
    }

    /// The snapshot to meter `env` with: the cached one unless stale, else central's (falling back
    /// to the stale one, with a warning, while central cannot be reached).
    async fn metrics_for(&self, cfg: &EdgeConfig, env: &str) -> Result<Metrics, EdgeError> {
        let sql = self.state.storage().sql();
        let now = crate::now_ms();
        let cached = {
            let mut mem = self.mem.borrow_mut();
            if !mem.snapshots.contains_key(env) {
                if let Some((snap, stale)) = store::load_snapshot(&sql, env)? {
                    mem.snapshots.insert(
                        env.to_string(),
                        Metrics {
                            version: snap.version,
                            defs: Rc::new(snap.metrics),
                            stale,
                            retry_after_ms: 0,
                        },
                    );
                }
            }
            mem.snapshots.get(env).cloned()
        };
        if let Some(m) = &cached {
            if !m.stale || now < m.retry_after_ms {
                return Ok(m.clone());
            }
        }
        match crate::central::metrics(cfg, env).await {
            Ok(snap) => {
                store::save_snapshot(&sql, env, &snap)?;
                let fresh = Metrics {
                    version: snap.version,
                    defs: Rc::new(snap.metrics),
                    stale: false,
                    retry_after_ms: 0,
                };
                self.mem
                    .borrow_mut()
                    .snapshots
                    .insert(env.to_string(), fresh.clone());
                Ok(fresh)
            }
            Err(e) => match cached {
                Some(mut stale) => {
                    worker::console_warn!("metering {env} with a stale metric snapshot: {e}");
                    stale.retry_after_ms = now.saturating_add(SNAPSHOT_RETRY_MS);
                    self.mem
                        .borrow_mut()
                        .snapshots
                        .insert(env.to_string(), stale.clone());
                    Ok(stale)
                }
                None => Err(e),
            },
        }
    }

    /// After an acknowledgement with a newer version: refresh every cached environment.
    async fn refresh_snapshots(&self, cfg: &EdgeConfig) -> Result<(), EdgeError> {
        let envs: Vec<String> = {
            let mut mem = self.mem.borrow_mut();
            for m in mem.snapshots.values_mut() {
                m.stale = true;
                m.retry_after_ms = 0;
            }
            mem.snapshots.keys().cloned().collect()
        };
        store::mark_snapshots_stale(&self.state.storage().sql())?;
        for env in envs {
            self.metrics_for(cfg, &env).await?;
        }
        Ok(())
    }

    /// Whether any cached snapshot was loaded at another metrics version than central's current
    /// one. Any difference, not only "older": an environment fetched before another may lag behind
    /// it, and a central whose version is computed differently (SQLite's used to be MAX(seq), now
    /// the count) must still be followed rather than ignored until it catches up.
    fn differs_from(&self, version: u64) -> bool {
        let mem = self.mem.borrow();
        mem.snapshots.values().any(|m| m.version != version)
    }

    /// One alarm: prune if due, then seal and deliver in `seq` order, then re-arm.
    async fn flush(&self) -> Result<(), EdgeError> {
        let cfg = EdgeConfig::from_env(&self.env)?;
        let Some(shard_id) = self.prepare(None)? else {
            // Never received an event: nothing to flush.
            return Ok(());
        };
        let storage = self.state.storage();
        let sql = storage.sql();
        self.prune(&sql)?;
        for _ in 0..policy::MAX_BATCHES_PER_ALARM {
            let pending = self.backlog()?;
            let sealed = store::sealed_count(&sql)?;
            if policy::should_seal(&pending, sealed) {
                let work = store::transaction(&storage, || store::seal(&sql, &shard_id))?;
                if let (Some(work), Some(p)) = (work, self.mem.borrow_mut().pending.as_mut()) {
                    if let Some(last) = work.last_partial {
                        // Sealed: every key up to and including `last`.
                        let mut rest = p.rows.split_off(&last);
                        rest.remove(&last);
                        p.rows = rest;
                        if p.rows.is_empty() {
                            p.version = None;
                        }
                    }
                    p.events = p.events.saturating_sub(work.events);
                    p.event_bytes = p.event_bytes.saturating_sub(work.event_bytes);
                }
            }
            let Some((seq, body)) = store::oldest_sealed(&sql)? else {
                break;
            };
            let ack = crate::central::deliver(&cfg, body.as_bytes()).await?;
            store::delete_sealed(&sql, seq)?;
            self.mem.borrow_mut().failures = 0;
            if !ack.applied {
                worker::console_log!("batch {shard_id}#{seq} was already applied (a replay)");
            }
            if ack.dead_letters > 0 {
                worker::console_warn!(
                    "batch {shard_id}#{seq}: central could not merge {} partial(s) and kept them \
                     as dead letters",
                    ack.dead_letters
                );
            }
            if self.differs_from(ack.metrics_version) {
                if let Err(e) = self.refresh_snapshots(&cfg).await {
                    worker::console_warn!("metric snapshot refresh failed: {e}");
                }
            }
        }
        let now = crate::now_ms();
        let pending = self.backlog()?;
        let wake = policy::next_wake(
            now,
            cfg.flush_interval_ms,
            &pending,
            store::sealed_count(&sql)?,
            store::has_dedupe_keys(&sql)?,
            store::last_prune_ms(&sql)?.unwrap_or(now),
        );
        match wake {
            Some(at) => self.set_alarm_at(at, now).await,
            None => {
                storage.delete_alarm().await?;
                self.mem.borrow_mut().alarm_at_ms = None;
                Ok(())
            }
        }
    }

    /// Removes dedupe keys past retention, at most once per `PRUNE_INTERVAL_MS`.
    fn prune(&self, sql: &worker::SqlStorage) -> Result<(), EdgeError> {
        let now = crate::now_ms();
        let Some(last) = store::last_prune_ms(sql)? else {
            return store::set_last_prune_ms(sql, now);
        };
        if now.saturating_sub(last) < policy::PRUNE_INTERVAL_MS {
            return Ok(());
        }
        let before = now.saturating_sub(DEDUPE_RETENTION_MS);
        for _ in 0..policy::MAX_PRUNE_ROUNDS {
            let removed = store::prune(sql, before)?;
            if i64::try_from(removed).unwrap_or(i64::MAX) < store::PRUNE_CHUNK {
                return store::set_last_prune_ms(sql, now);
            }
        }
        // More to remove: leave last_prune_ms so the next alarm continues.
        Ok(())
    }

    async fn set_alarm_at(&self, at_ms: i64, now_ms: i64) -> Result<(), EdgeError> {
        let delay = u64::try_from(at_ms.saturating_sub(now_ms)).unwrap_or(0);
        self.state
            .storage()
            .set_alarm(Duration::from_millis(delay))
            .await?;
        self.mem.borrow_mut().alarm_at_ms = Some(at_ms);
        Ok(())
    }
}

/// 64 random bits, hex: distinguishes this shard's storage from any earlier storage of the same name.
fn incarnation() -> Result<String, EdgeError> {
    let global: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
    let crypto = global.crypto()?;
    let mut bytes = [0u8; 8];
    crypto.get_random_values_with_u8_array(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
