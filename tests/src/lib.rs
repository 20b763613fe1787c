//! Shared harness for Tally's end-to-end tests: start a real `tally serve` process on an ephemeral
//! port with a fresh database, and hand out its base URL and an API token.
//!
//! How a server is started ([`TallyServer::start`] / [`TallyServer::start_with`]):
//! 1. The binary is `$TALLY_BIN` if set, else `<workspace root>/target/debug/tally` (the tests do
//!    not build it: run `cargo build -p tally-central` first).
//! 2. A temporary directory (the server's working directory) holds the SQLite database
//!    `sqlite://<tmp>/tally.db`; it is deleted when the [`TallyServer`] is dropped. With
//!    [`TallyServer::start_on`] the server uses the given database instead, e.g. a fresh
//!    PostgreSQL database from [`PgDatabase::create`]; several servers may share one.
//! 3. `tally token create --env sandbox --database <db>` mints a sandbox API token: the last
//!    non-empty line of its stdout.
//! 4. `tally serve --listen 127.0.0.1:0 --database <db> [extra args]` is spawned; the harness reads
//!    its stdout until the line `listening on http://127.0.0.1:PORT` and takes the URL from it
//!    (30 s time limit). Both output pipes keep being drained by background threads so the child
//!    never blocks on a full pipe; the last lines are kept for failure messages ([`TallyServer::logs`]).
//! 5. Dropping the [`TallyServer`] kills and reaps the child.
//!
//! Crash tests use [`TallyServer::kill`] (SIGKILL, nothing flushed or closed) and
//! [`TallyServer::restart`] (the same database, arguments, token and port).
//!
//! [`python_sdk_ready`] makes sure Metronome's official Python SDK (`metronome-sdk` 4.12.0) is
//! importable by `python3`, installing it with pip if needed, for the SDK compatibility tests;
//! [`python_package_ready`] does the same for any pinned package (schemathesis, for the contract
//! test).

pub mod bench;
pub mod pg;

pub use pg::pg_admin_url;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

/// How long a server may take to print its listening line.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `tally token create` may take.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(30);
/// The Python SDK version the compatibility tests are written against.
pub const PYTHON_SDK_VERSION: &str = "4.12.0";
/// Server output lines kept for failure messages.
pub const LOG_LINES_KEPT: usize = 2_000;
/// The marker `tally serve` prints once bound.
const LISTENING_MARKER: &str = "listening on http://";

/// The Cargo workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// The `tally` binary under test: `$TALLY_BIN`, else `<workspace root>/target/debug/tally`.
/// Panics with build instructions if it does not exist.
pub fn tally_bin() -> PathBuf {
    let path = match std::env::var_os("TALLY_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => workspace_root()
            .join("target")
            .join("debug")
            .join(format!("tally{}", std::env::consts::EXE_SUFFIX)),
    };
    assert!(
        path.is_file(),
        "tally binary not found at {}: run `cargo build -p tally-central` first \
         (or set TALLY_BIN to the binary to test)",
        path.display()
    );
    path
}

/// A running `tally serve` with its own fresh database (or a given one). Killed on drop.
pub struct TallyServer {
    bin: PathBuf,
    base_url: String,
    token: String,
    database_url: String,
    extra_args: Vec<String>,
    extra_env: Vec<(String, String)>,
    /// `None` between [`TallyServer::kill`] and [`TallyServer::restart`].
    child: Option<Child>,
    logs: Arc<Mutex<VecDeque<String>>>,
    // Dropped after the child is killed (fields drop after `Drop::drop` runs).
    tempdir: TempDir,
}

impl TallyServer {
    /// Starts a server with default settings. Panics (with the server's output) on failure.
    pub fn start() -> TallyServer {
        TallyServer::start_with(&[], &[])
    }

    /// Starts a server with extra `tally serve` arguments (e.g. `["--invoice-grace-hours", "0"]`)
    /// and extra environment variables (set for both `tally token create` and `tally serve`).
    pub fn start_with(extra_args: &[&str], extra_env: &[(&str, &str)]) -> TallyServer {
        TallyServer::start_on(None, extra_args, extra_env)
    }

    /// Like [`TallyServer::start_with`], on the database at `database_url` (any URL `tally`
    /// accepts); `None` means a fresh SQLite file in the server's temporary directory.
    pub fn start_on(
        database_url: Option<&str>,
        extra_args: &[&str],
        extra_env: &[(&str, &str)],
    ) -> TallyServer {
        let bin = tally_bin();
        let tempdir = tempfile::Builder::new()
            .prefix("tally-e2e-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temp dir: {e}"));
        let database_url = match database_url {
            Some(url) => url.to_string(),
            None => format!("sqlite://{}/tally.db", tempdir.path().display()),
        };

        let token = create_token(&bin, &database_url, tempdir.path(), extra_env);

        let mut server = TallyServer {
            bin,
            base_url: String::new(),
            token,
            database_url,
            extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
            extra_env: extra_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            child: None,
            logs: Arc::new(Mutex::new(VecDeque::new())),
            tempdir,
        };
        if let Err(e) = server.spawn("127.0.0.1:0") {
            panic!("{e}");
        }
        server
    }

    /// Spawns `tally serve --listen <listen>` and waits for its listening line.
    fn spawn(&mut self, listen: &str) -> Result<(), String> {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("serve")
            .args(["--listen", listen, "--database", &self.database_url])
            .args(&self.extra_args)
            .current_dir(self.tempdir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {} serve: {e}", self.bin.display()));

        let logs = &self.logs;
        let stdout = child.stdout.take().expect("child stdout is piped");
        let stderr = child.stderr.take().expect("child stderr is piped");
        let (url_tx, url_rx) = mpsc::channel::<String>();
        spawn_stdout_reader(stdout, Arc::clone(logs), url_tx);
        spawn_log_reader(stderr, "stderr", Arc::clone(logs));

        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let base_url = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match url_rx.recv_timeout(left.min(Duration::from_millis(100))) {
                Ok(url) => break url,
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {}
            }
            if let Ok(Some(status)) = child.try_wait() {
                // Give the readers a moment to collect the last output.
                thread::sleep(Duration::from_millis(200));
                return Err(format!(
                    "tally serve exited with {status} before printing {LISTENING_MARKER:?}\n\
                     command: {cmd:?}\n--- server output ---\n{}",
                    snapshot(logs)
                ));
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "tally serve did not print {LISTENING_MARKER:?} within {}s\n\
                     command: {cmd:?}\n--- server output ---\n{}",
                    STARTUP_TIMEOUT.as_secs(),
                    snapshot(logs)
                );
            }
        };
        self.base_url = base_url;
        self.child = Some(child);
        Ok(())
    }

    /// Kills the server with SIGKILL (no shutdown of any kind) and reaps it. The database, the
    /// token and the port stay; [`TallyServer::restart`] brings it back.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts `tally serve` again (killing a running one first) on the same database, with the
    /// same arguments, on the same port, so clients keep their URL and token. If the port is
    /// briefly taken (a client socket may have been given it while nothing listened), binding is
    /// retried for up to [`STARTUP_TIMEOUT`].
    pub fn restart(&mut self) {
        self.kill();
        let listen = self
            .base_url
            .strip_prefix("http://")
            .unwrap_or(&self.base_url)
            .to_string();
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            push_log(&self.logs, "harness", &format!("restarting on {listen}"));
            match self.spawn(&listen) {
                Ok(()) => return,
                Err(e) if e.contains("binding") && Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.base_url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("the base URL ends with a port")
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `base_url` + `path` (path starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    /// A sandbox API token for `Authorization: Bearer`.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The URL of this server's database (`sqlite://...` unless started on another one).
    pub fn database_url(&self) -> &str {
        &self.database_url
    }

    /// The temporary directory holding the database (deleted on drop).
    pub fn data_dir(&self) -> &Path {
        self.tempdir.path()
    }

    /// The server's process id (panics while it is killed).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server is running").id()
    }

    /// The last lines the server wrote to stdout and stderr, for failure messages.
    pub fn logs(&self) -> String {
        snapshot(&self.logs)
    }

    /// The URL of `GET /metrics` of a server started with `--metrics-listen 127.0.0.1:0` (from
    /// its log line; waits up to 30 s for it).
    pub fn metrics_url(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let logs = self.logs();
            if let Some((_, rest)) = logs.split_once("metrics on ") {
                let addr = rest.lines().next().unwrap_or("").trim();
                return if addr.starts_with("http") {
                    addr.to_string()
                } else {
                    format!("http://{addr}/metrics")
                };
            }
            assert!(Instant::now() < deadline, "no metrics line: {logs}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for TallyServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An async JSON client for one server's API: adds the bearer token, returns the status and the
/// parsed body (`Null` when empty). Cheap to clone, so requests can run on spawned tasks.
#[derive(Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl ApiClient {
    pub fn new(server: &TallyServer) -> ApiClient {
        ApiClient::with_http(reqwest::Client::new(), server)
    }

    /// With a configured `reqwest` client (pool size, timeouts).
    pub fn with_http(http: reqwest::Client, server: &TallyServer) -> ApiClient {
        ApiClient {
            http,
            base: server.base_url().to_string(),
            token: server.token().to_string(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The bearer token this client sends.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Sends `req` (built on [`ApiClient::http`]) with the token. Transport errors and non-JSON
    /// bodies are `Err`; any status is `Ok`.
    pub async fn send(&self, req: reqwest::RequestBuilder) -> Result<(u16, Value), String> {
        let res = req
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = res.status().as_u16();
        let bytes = res.bytes().await.map_err(|e| e.to_string())?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok((status, Value::Null));
        }
        let body = serde_json::from_slice(&bytes).map_err(|e| {
            format!(
                "{status} with a non-JSON body ({e}): {:?}",
                String::from_utf8_lossy(&bytes)
            )
        })?;
        Ok((status, body))
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub async fn get(&self, path: &str) -> Result<(u16, Value), String> {
        self.send(self.http.get(self.url(path))).await
    }

    /// POSTs a JSON body given as text (sent exactly as is).
    pub async fn post_text(&self, path: &str, body: String) -> Result<(u16, Value), String> {
        let req = self
            .http
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body);
        self.send(req).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<(u16, Value), String> {
        self.post_text(path, body.to_string()).await
    }

    /// POSTs and returns `data`, failing on anything but a 200.
    pub async fn data(&self, path: &str, body: &Value) -> Result<Value, String> {
        match self.post(path, body).await? {
            (200, res) => Ok(res["data"].clone()),
            (status, res) => Err(format!("POST {path}: {status} {res}")),
        }
    }

    /// POSTs and returns `data.id`, failing on anything but a 200 with an id.
    pub async fn create(&self, path: &str, body: &Value) -> Result<String, String> {
        let data = self.data(path, body).await?;
        data["id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("POST {path}: no id in {data}"))
    }
}

/// A fresh PostgreSQL database for one test, created through the maintenance database at
/// `$TALLY_TEST_PG_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`) and dropped
/// (sessions closed first) when this value is dropped. Declare it before the servers using it so
/// they stop first.
pub struct PgDatabase {
    name: String,
    url: String,
}

impl PgDatabase {
    /// Creates `tally_e2e_<random>`. Panics if the server cannot be reached.
    pub fn create() -> PgDatabase {
        let name = format!("tally_e2e_{:016x}", rand_u64());
        let admin = pg_admin_url();
        let url = on_runtime({
            let (admin, name) = (admin.clone(), name.clone());
            move || async move { pg::create_database(&admin, &name).await }
        })
        .unwrap_or_else(|e| {
            panic!(
                "cannot create a PostgreSQL database through {} ({e:#}); is PostgreSQL running? \
                 (`scripts/test.sh` starts it)",
                tally_central::store::redact_url(&admin)
            )
        });
        PgDatabase { name, url }
    }

    /// The `postgres://...` URL of the database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let (admin, name) = (pg_admin_url(), self.name.clone());
        let dropped = on_runtime(move || async move { pg::drop_database(&admin, &name).await });
        if let Err(e) = dropped {
            eprintln!("could not drop test database {}: {e:#}", self.name);
        }
    }
}

/// Runs an async job to completion on a runtime of its own, on a thread of its own, so it works
/// from plain and from async tests alike.
pub fn on_runtime<F, Fut, T>(job: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
    T: Send + 'static,
{
    thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a Tokio runtime")
            .block_on(job())
    })
    .join()
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// A random number for unique names (not for secrets).
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.finish()
}

/// Runs `tally token create --env sandbox --database <db>`; the token is the last non-empty
/// stdout line.
fn create_token(bin: &Path, database_url: &str, dir: &Path, extra_env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(bin);
    cmd.args([
        "token",
        "create",
        "--env",
        "sandbox",
        "--database",
        database_url,
    ])
    .current_dir(dir);
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let out = run_with_timeout(&mut cmd, TOKEN_TIMEOUT);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "`tally token create` failed with {}\ncommand: {cmd:?}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        out.status
    );
    let token = stdout
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or_else(|| {
            panic!("`tally token create` printed no token\n--- stderr ---\n{stderr}")
        });
    token.to_string()
}

/// Reads server stdout line by line: sends the URL of the first listening line, keeps every line
/// in the log, and drains until the pipe closes.
fn spawn_stdout_reader(
    stdout: ChildStdout,
    logs: Arc<Mutex<VecDeque<String>>>,
    url_tx: mpsc::Sender<String>,
) {
    thread::spawn(move || {
        let mut url_tx = Some(url_tx);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(tx) = url_tx.as_ref() {
                if let Some(url) = listening_url(&line) {
                    let _ = tx.send(url);
                    url_tx = None;
                }
            }
            push_log(&logs, "stdout", &line);
        }
    });
}

/// Drains a pipe into the log until it closes.
fn spawn_log_reader<R: Read + Send + 'static>(
    pipe: R,
    stream: &'static str,
    logs: Arc<Mutex<VecDeque<String>>>,
) {
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            push_log(&logs, stream, &line);
        }
    });
}

/// The `http://host:port` URL in a `listening on http://...` line.
fn listening_url(line: &str) -> Option<String> {
    let at = line.find(LISTENING_MARKER)?;
    let url = line[at + "listening on ".len()..]
        .split_whitespace()
        .next()?
        .trim_end_matches('/');
    Some(url.to_string())
}

fn push_log(logs: &Mutex<VecDeque<String>>, stream: &str, line: &str) {
    let mut logs = logs.lock().unwrap_or_else(|e| e.into_inner());
    if logs.len() == LOG_LINES_KEPT {
        logs.pop_front();
    }
    logs.push_back(format!("[{stream}] {line}"));
}

fn snapshot(logs: &Mutex<VecDeque<String>>) -> String {
    let logs = logs.lock().unwrap_or_else(|e| e.into_inner());
    logs.iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs a command to completion with stdout and stderr captured, killing it and panicking (with
/// what it printed so far) if it takes longer than `timeout`.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}"));
    let stdout = collect(child.stdout.take().expect("stdout is piped"));
    let stderr = collect(child.stderr.take().expect("stderr is piped"));
    let deadline = Instant::now() + timeout;
    let status: ExitStatus = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                let out = String::from_utf8_lossy(&join(stdout)).into_owned();
                let err = String::from_utf8_lossy(&join(stderr)).into_owned();
                panic!(
                    "{cmd:?} did not finish within {}s\n--- stdout ---\n{out}\n--- stderr ---\n{err}",
                    timeout.as_secs()
                );
            }
            Ok(None) => thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("cannot wait for {cmd:?}: {e}"),
        }
    };
    Output {
        status,
        stdout: join(stdout),
        stderr: join(stderr),
    }
}

fn collect<R: Read + Send + 'static>(mut pipe: R) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

fn join(handle: thread::JoinHandle<Vec<u8>>) -> Vec<u8> {
    handle.join().unwrap_or_default()
}

/// Makes sure `python3` can import Metronome's official SDK at [`PYTHON_SDK_VERSION`], installing
/// it with `python3 -m pip install -q metronome-sdk==4.12.0` if not. Panics with pip's output if
/// the install fails. Runs at most once per test process.
pub fn python_sdk_ready() {
    python_package_ready("metronome", "metronome-sdk", PYTHON_SDK_VERSION);
}

/// Makes sure `python3` can import `module` with `module.__version__ == version`, installing
/// `python3 -m pip install -q <dist>==<version>` if not (scripts/test.sh installs them up front;
/// this covers running one test alone). Panics with pip's output if the install fails. Checks each
/// module at most once per test process.
pub fn python_package_ready(module: &str, dist: &str, version: &str) {
    static READY: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut ready = READY.lock().unwrap_or_else(|e| e.into_inner());
    if ready.iter().any(|m| m == module) {
        return;
    }
    let check =
        format!("import {module}, sys; sys.exit(0 if {module}.__version__ == {version:?} else 1)");
    let ok = Command::new("python3")
        .args(["-c", &check])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        let spec = format!("{dist}=={version}");
        let out = Command::new("python3")
            .args(["-m", "pip", "install", "-q", &spec])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run `python3 -m pip install {spec}`: {e}"));
        assert!(
            out.status.success(),
            "`python3 -m pip install -q {spec}` failed with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    ready.push(module.to_string());
}

#[cfg(test)]
mod tests {
    use super::listening_url;

    #[test]
    fn parses_the_listening_line() {
        assert_eq!(
            listening_url("listening on http://127.0.0.1:43117").as_deref(),
            Some("http://127.0.0.1:43117")
        );
        assert_eq!(
            listening_url(
                "2024-10-01T00:00:00Z INFO tally: listening on http://127.0.0.1:8080/ (sandbox)"
            )
            .as_deref(),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(listening_url("starting up"), None);
    }
}
