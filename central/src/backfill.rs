//! `tally ingest FILE|-`: bulk backfill through the ingest contract.
//!
//! The input is NDJSON or one JSON array of usage events, optionally gzip-compressed (detected by
//! its magic bytes), read as a stream: memory holds a few batches, whatever the file's size. Events
//! go out in batches of 100 (fewer when a batch would exceed the 1 MiB body limit) over
//! `concurrency` parallel requests, to a remote Tally (`/v1/ingest` with a token) or straight into
//! a local database through the same use case `POST /v1/ingest` runs (`service::ingest`).
//!
//! Failures: 429, 5xx, a database error or a broken connection is retried with exponential
//! backoff (honouring `retry-after`), up to `max_retries` times per batch; past that, or on a
//! refusal that retrying cannot fix (401, a whole-request 400), the run stops with an error. A run
//! can always be repeated from the start, after an interruption or a failure: dedupe counts every
//! event once, so what was ingested before comes back as duplicates.
//!
//! Rejected events are written, one JSON line each (`{"line", "message", "event"}`, `line` being
//! the event's 1-based position in the input), to the rejects file when one is given.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use serde::de::{self, SeqAccess, Visitor};
use serde_json::Value;
use tally_core::ingest::{IngestSummary, MAX_BATCH_EVENTS, MAX_BODY_BYTES};
use tokio::sync::mpsc;

use crate::service::ingest::IngestError;
use crate::store::Env;
use crate::AppState;

/// Where the events go.
pub enum Target {
    /// A running Tally: `url` is its base URL.
    Remote {
        url: String,
        token: String,
        client: reqwest::Client,
    },
    /// A database opened by this process.
    Local { state: AppState, env: Env },
}

pub struct Options {
    pub concurrency: usize,
    pub max_retries: u32,
    pub rejects: Option<std::path::PathBuf>,
    /// Draw a progress bar on stderr (when it is a terminal).
    pub progress: bool,
}

/// What a run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub events: u64,
    pub accepted: u64,
    pub duplicates: u64,
    pub rejected: u64,
    pub requests: u64,
    pub retries: u64,
    /// Rejection messages and how often each occurred.
    pub reasons: HashMap<String, u64>,
}

impl Report {
    /// The summary printed at the end, the most frequent rejection reasons first.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "{} events: {} accepted, {} duplicates, {} rejected ({} requests, {} retries)",
            self.events, self.accepted, self.duplicates, self.rejected, self.requests, self.retries
        );
        let mut reasons: Vec<(&String, &u64)> = self.reasons.iter().collect();
        reasons.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        for (message, n) in reasons.into_iter().take(10) {
            out.push_str(&format!("\n  {n} × {message}"));
        }
        out
    }
}

/// A batch: the events and the input line (1-based position) of the first.
struct Batch {
    first: u64,
    events: Vec<Value>,
}

/// Reads `input` (a file or stdin, `total_bytes` long when known) and ingests every event in it.
pub async fn run(
    input: Box<dyn Read + Send>,
    total_bytes: Option<u64>,
    target: Target,
    options: Options,
) -> anyhow::Result<Report> {
    let read_bytes = Arc::new(AtomicU64::new(0));
    let bar = progress_bar(total_bytes, options.progress);
    let (tx, rx) = mpsc::channel::<Batch>(options.concurrency.max(1) * 2);
    let reader = {
        let read_bytes = read_bytes.clone();
        tokio::task::spawn_blocking(move || read_batches(input, read_bytes, tx))
    };
    let rejects = match &options.rejects {
        Some(path) => Some(Mutex::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("creating the rejects file {}", path.display()))?,
        ))),
        None => None,
    };
    let shared = Arc::new(Shared {
        target,
        max_retries: options.max_retries,
        report: Mutex::new(Report::default()),
        rejects,
        bar,
        read_bytes,
        batches: tokio::sync::Mutex::new(rx),
        stopping: std::sync::atomic::AtomicBool::new(false),
    });
    let mut workers = Vec::new();
    for _ in 0..options.concurrency.max(1) {
        let shared = shared.clone();
        workers.push(tokio::spawn(async move { shared.work().await }));
    }
    let mut failure = None;
    for w in workers {
        if let Err(e) = w.await? {
            failure.get_or_insert(e);
        }
    }
    // Workers stop taking batches after a failure; the reader then ends on a closed channel.
    shared.batches.lock().await.close();
    let read = reader.await?;
    shared.bar.finish_and_clear();
    if let Some(rejects) = &shared.rejects {
        rejects
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .flush()?;
    }
    let report = shared
        .report
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    if let Some(e) = failure {
        return Err(e.context(format!(
            "stopped after {}; run the same command again: events already ingested count once",
            report.summary()
        )));
    }
    read?;
    Ok(report)
}

fn progress_bar(total_bytes: Option<u64>, show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    match total_bytes {
        Some(total) => ProgressBar::new(total).with_style(
            ProgressStyle::with_template(
                "{wide_bar} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {binary_bytes} read, {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    }
}

struct Shared {
    target: Target,
    max_retries: u32,
    report: Mutex<Report>,
    rejects: Option<Mutex<std::io::BufWriter<std::fs::File>>>,
    bar: ProgressBar,
    read_bytes: Arc<AtomicU64>,
    batches: tokio::sync::Mutex<mpsc::Receiver<Batch>>,
    /// Set when a worker failed: the others finish their batch and take no more.
    stopping: std::sync::atomic::AtomicBool,
}

/// What one attempt at sending a batch came to.
enum Attempt {
    Done(IngestSummary),
    /// Worth retrying, after at least this long when the server said so.
    Retry(String, Option<Duration>),
    Fatal(anyhow::Error),
}

impl Shared {
    async fn work(&self) -> anyhow::Result<()> {
        while !self.stopping.load(Ordering::SeqCst) {
            let Some(batch) = self.batches.lock().await.recv().await else {
                return Ok(());
            };
            for part in split_to_fit(batch) {
                if let Err(e) = self.send(part).await {
                    self.stopping.store(true, Ordering::SeqCst);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    async fn send(&self, batch: Batch) -> anyhow::Result<()> {
        let body = serde_json::to_vec(&batch.events)?;
        let mut delay = Duration::from_millis(100);
        let mut retries = 0;
        let summary = loop {
            self.lock_report().requests += 1;
            match self.attempt(&body).await {
                Attempt::Done(summary) => break summary,
                Attempt::Fatal(e) => return Err(e),
                Attempt::Retry(why, _) if retries >= self.max_retries => {
                    anyhow::bail!("gave up after {retries} retries: {why}")
                }
                Attempt::Retry(_, after) => {
                    retries += 1;
                    self.lock_report().retries += 1;
                    tokio::time::sleep(after.unwrap_or(delay).max(delay)).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        };
        self.record(&batch, summary)
    }

    async fn attempt(&self, body: &[u8]) -> Attempt {
        match &self.target {
            Target::Local { state, env } => {
                match crate::service::ingest::ingest(state, *env, body).await {
                    Ok(summary) => Attempt::Done(summary),
                    Err(IngestError::Invalid(e)) => {
                        Attempt::Fatal(anyhow::anyhow!("the batch was refused: {e}"))
                    }
                    Err(IngestError::Store(e)) => Attempt::Retry(e.to_string(), None),
                }
            }
            Target::Remote { url, token, client } => {
                let sent = client
                    .post(format!("{}/v1/ingest", url.trim_end_matches('/')))
                    .bearer_auth(token)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.to_vec())
                    .send()
                    .await;
                let res = match sent {
                    Ok(res) => res,
                    Err(e) => return Attempt::Retry(e.to_string(), None),
                };
                let status = res.status();
                let after = res
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                let text = match res.text().await {
                    Ok(text) => text,
                    Err(e) => return Attempt::Retry(e.to_string(), None),
                };
                if status.is_success() {
                    #[derive(serde::Deserialize)]
                    struct Answer {
                        data: IngestSummary,
                    }
                    return match serde_json::from_str::<Answer>(&text) {
                        Ok(a) => Attempt::Done(a.data),
                        Err(e) => Attempt::Fatal(anyhow::anyhow!(
                            "{status} with an unreadable body ({e}): {text}"
                        )),
                    };
                }
                let why = format!("{status}: {text}");
                match status.as_u16() {
                    429 | 500..=599 | 408 => Attempt::Retry(why, after),
                    _ => Attempt::Fatal(anyhow::anyhow!("the server refused a batch: {why}")),
                }
            }
        }
    }

    fn lock_report(&self) -> std::sync::MutexGuard<'_, Report> {
        self.report
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn record(&self, batch: &Batch, summary: IngestSummary) -> anyhow::Result<()> {
        let n = batch.events.len() as u64;
        let mut report = self.lock_report();
        report.events += n;
        report.accepted += summary.accepted as u64;
        report.duplicates += summary.duplicates as u64;
        report.rejected += summary.rejected.len() as u64;
        for r in &summary.rejected {
            *report.reasons.entry(r.message.clone()).or_default() += 1;
        }
        if let Some(rejects) = &self.rejects {
            let mut out = rejects
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for r in &summary.rejected {
                let line = serde_json::json!({
                    "line": batch.first + r.index as u64,
                    "message": r.message,
                    "event": batch.events.get(r.index),
                });
                writeln!(out, "{line}")?;
            }
        }
        self.bar
            .set_position(self.read_bytes.load(Ordering::Relaxed));
        self.bar.set_message(format!(
            "{} accepted, {} duplicates, {} rejected",
            report.accepted, report.duplicates, report.rejected
        ));
        Ok(())
    }
}

/// The batch, or its halves (recursively) when its body would exceed the ingest body limit. A
/// single event too large alone is sent anyway, and the server says why it is refused.
fn split_to_fit(batch: Batch) -> Vec<Batch> {
    let size = serde_json::to_vec(&batch.events).map_or(0, |b| b.len());
    if size <= MAX_BODY_BYTES || batch.events.len() <= 1 {
        return vec![batch];
    }
    let mut first = batch.events;
    let second = first.split_off(first.len() / 2);
    let second_at = batch.first + first.len() as u64;
    let mut out = split_to_fit(Batch {
        first: batch.first,
        events: first,
    });
    out.extend(split_to_fit(Batch {
        first: second_at,
        events: second,
    }));
    out
}

/// Counts the bytes read through it.
struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Parses the input into batches of [`MAX_BATCH_EVENTS`], sent to `tx` (blocking thread).
fn read_batches(
    input: Box<dyn Read + Send>,
    read_bytes: Arc<AtomicU64>,
    tx: mpsc::Sender<Batch>,
) -> anyhow::Result<()> {
    let mut raw = BufReader::new(Counting {
        inner: input,
        count: read_bytes,
    });
    let gzip = raw.fill_buf()?.starts_with(&[0x1f, 0x8b]);
    let mut reader: Box<dyn BufRead> = match gzip {
        true => Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(raw))),
        false => Box::new(raw),
    };
    // The first non-blank byte tells an array from NDJSON.
    let array = loop {
        let buf = reader.fill_buf()?;
        let Some(&b) = buf.first() else {
            return Ok(()); // empty input
        };
        if b.is_ascii_whitespace() {
            reader.consume(1);
            continue;
        }
        break b == b'[';
    };
    let mut batcher = Batcher {
        tx,
        next_line: 1,
        events: Vec::with_capacity(MAX_BATCH_EVENTS),
    };
    if array {
        let mut de = serde_json::Deserializer::from_reader(reader);
        de::Deserializer::deserialize_seq(&mut de, Each(&mut batcher))
            .context("reading the input's JSON array")?;
        de.end().context("after the input's JSON array")?;
    } else {
        for (i, value) in serde_json::Deserializer::from_reader(reader)
            .into_iter::<Value>()
            .enumerate()
        {
            let value = value.with_context(|| format!("reading NDJSON value {}", i + 1))?;
            if !batcher.push(value) {
                return Ok(());
            }
        }
    }
    batcher.flush();
    Ok(())
}

struct Batcher {
    tx: mpsc::Sender<Batch>,
    next_line: u64,
    events: Vec<Value>,
}

impl Batcher {
    /// Adds an event; false when nobody takes batches any more (the run stopped).
    fn push(&mut self, event: Value) -> bool {
        self.events.push(event);
        if self.events.len() < MAX_BATCH_EVENTS {
            return true;
        }
        self.flush()
    }

    fn flush(&mut self) -> bool {
        if self.events.is_empty() {
            return true;
        }
        let events = std::mem::replace(&mut self.events, Vec::with_capacity(MAX_BATCH_EVENTS));
        let first = self.next_line;
        self.next_line += events.len() as u64;
        self.tx.blocking_send(Batch { first, events }).is_ok()
    }
}

/// Streams a JSON array's elements into the batcher without holding the array.
struct Each<'a>(&'a mut Batcher);

impl<'de> Visitor<'de> for Each<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON array of usage events")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(event) = seq.next_element::<Value>()? {
            if !self.0.push(event) {
                return Ok(());
            }
        }
        Ok(())
    }
}
