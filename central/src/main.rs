//! The `tally` binary: `tally serve`, `tally token create|list|revoke`, `tally backup|restore`,
//! `tally ingest` (bulk backfill).

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use tally_central::http::cors::AllowedOrigins;
use tally_central::server::{self, ServeLimits};
use tally_central::store::{self, Env};
use tally_central::{
    auth, backfill, http, service, telemetry, AppState, Clock, RateLimit, Secret, Settings,
    SystemClock,
};
use tally_core::time::format_rfc3339_ms;

#[derive(Parser)]
#[command(
    name = "tally",
    version,
    about = "Tally: self-hosted usage-based billing (Metronome-compatible API)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API server.
    Serve {
        /// Address to listen on.
        #[arg(long, env = "TALLY_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        #[command(flatten)]
        db: DbArgs,
        /// Hours after a period ends before its invoice is finalized.
        #[arg(long, env = "TALLY_INVOICE_GRACE_HOURS", default_value_t = 24)]
        invoice_grace_hours: u32,
        /// Seconds between runs of the finalization and pruning job.
        #[arg(long, env = "TALLY_JOB_INTERVAL_SECS", default_value_t = 60)]
        job_interval_secs: u64,
        /// Days the event store keeps an event after its timestamp (at least 35: the 34-day
        /// backdating and search window); the default covers that window plus the longest
        /// (annual) billing period an event can count in.
        #[arg(
            long,
            env = "TALLY_EVENT_RETENTION_DAYS",
            default_value_t = tally_central::DEFAULT_EVENT_RETENTION_DAYS,
            value_parser = clap::value_parser!(u32).range(i64::from(tally_central::MIN_EVENT_RETENTION_DAYS)..)
        )]
        event_retention_days: u32,
        /// Address to serve Prometheus metrics on (`GET /metrics`, unauthenticated; off when unset).
        #[arg(long, env = "TALLY_METRICS_LISTEN")]
        metrics_listen: Option<SocketAddr>,
        /// Shared secret edge Workers sign batches with (enables the internal edge endpoints).
        #[arg(long, env = "TALLY_EDGE_HMAC_KEY", hide_env_values = true)]
        edge_hmac_key: Option<String>,
        /// An origin browser clients may call the API from (`https://app.example.com`), repeatable,
        /// or `*` for any; CORS is off when none is given.
        #[arg(
            long = "cors-allow-origin",
            env = "TALLY_CORS_ALLOW_ORIGINS",
            value_delimiter = ',',
            value_name = "ORIGIN"
        )]
        cors_allow_origins: Vec<String>,
        /// Milliseconds before the first retry of a failed webhook delivery; each later retry
        /// waits twice as long (with jitter, at most 15 minutes), for about two days.
        #[arg(long, env = "TALLY_WEBHOOK_RETRY_BASE_MS", default_value_t = 10_000)]
        webhook_retry_base_ms: u64,
        /// Seconds one webhook delivery attempt may take.
        #[arg(long, env = "TALLY_WEBHOOK_TIMEOUT_SECS", default_value_t = 10)]
        webhook_timeout_secs: u64,
        /// Seconds between sweeps that re-evaluate every alert (usage is evaluated as it arrives;
        /// the sweep catches what time alone changes, such as a new billing period).
        #[arg(long, env = "TALLY_ALERT_SWEEP_SECS", default_value_t = 60)]
        alert_sweep_secs: u64,
        /// Stripe secret API key: finalized invoices of contracts billing through Stripe are
        /// pushed to Stripe with it (nothing is pushed without it). Never logged.
        #[arg(long, env = "TALLY_STRIPE_API_KEY", hide_env_values = true)]
        stripe_api_key: Option<String>,
        /// Base URL of the Stripe API (a local Stripe such as localstripe in tests).
        #[arg(
            long,
            env = "TALLY_STRIPE_API_BASE",
            default_value = "https://api.stripe.com"
        )]
        stripe_api_base: String,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Backfill usage events from a file (NDJSON or a JSON array, gzip accepted) or stdin (`-`)
    /// through the ingest contract, to a running Tally (`--url`, `--token`) or a local database
    /// (`--database`, `--env`). Safe to re-run after an interruption: events already ingested
    /// count once (dedupe), and are reported as duplicates.
    Ingest {
        /// The file to read, or `-` for stdin.
        input: String,
        /// Base URL of a running Tally (e.g. https://billing.internal); without it, events go
        /// straight into the database of `--database`.
        #[arg(long, env = "TALLY_URL")]
        url: Option<String>,
        /// API token for `--url` (its environment is the token's).
        #[arg(long, env = "TALLY_TOKEN", hide_env_values = true, requires = "url")]
        token: Option<String>,
        /// Environment to ingest into a local database.
        #[arg(long, value_enum, conflicts_with = "url")]
        env: Option<EnvArg>,
        #[command(flatten)]
        db: DbArgs,
        /// Requests in flight at once.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// Retries of one batch (429, 5xx, connection or database errors) before stopping.
        #[arg(long, default_value_t = 10)]
        max_retries: u32,
        /// Write each rejected event, with its line and the reason, to this NDJSON file.
        #[arg(long)]
        rejects: Option<std::path::PathBuf>,
    },
    /// Copy a running SQLite database consistently to a new file (ingest and reads go on). For
    /// PostgreSQL use its own tools (pg_dump, or pg_basebackup with WAL archiving).
    Backup {
        /// The file to write; it must not exist.
        #[arg(long)]
        to: std::path::PathBuf,
        #[command(flatten)]
        db: DatabaseArg,
    },
    /// Replace a SQLite database with a backup (stop every `tally serve` using it first).
    Restore {
        /// The backup file `tally backup` wrote.
        #[arg(long)]
        from: std::path::PathBuf,
        #[command(flatten)]
        db: DatabaseArg,
        /// Replace the database if it exists.
        #[arg(long)]
        force: bool,
    },
}

/// Backups are SQLite's; PostgreSQL has its own tools.
fn sqlite_only(database: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        database.starts_with("sqlite:"),
        "tally backup and restore handle SQLite databases; for PostgreSQL use pg_dump / pg_restore \
         (or pg_basebackup with WAL archiving), as the README describes"
    );
    Ok(())
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token and print it (alone, on the last line of stdout).
    Create {
        #[arg(long, value_enum)]
        env: EnvArg,
        /// A name to tell the token by in `tally token list`.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        db: DbArgs,
    },
    /// List tokens (id, name, environment, created, last used, revoked); never their secrets.
    List {
        #[command(flatten)]
        db: DbArgs,
    },
    /// Revoke a token by the id `tally token list` shows: it fails at once on every replica (the
    /// edge Worker caches authentications for up to 60 s).
    Revoke {
        /// The token's id (the first 16 hex digits of its SHA-256, as listed).
        id: String,
        #[command(flatten)]
        db: DbArgs,
    },
}

/// Where the data lives (shared by every command).
#[derive(clap::Args)]
struct DatabaseArg {
    /// Database URL: sqlite://PATH (created if missing) or postgres://USER[:PASSWORD]@HOST[:PORT]/DB.
    #[arg(
        long = "database",
        env = "TALLY_DATABASE_URL",
        default_value = "sqlite://tally.db",
        hide_env_values = true
    )]
    database: String,
}

/// Where the data lives and how to connect to it.
#[derive(clap::Args)]
struct DbArgs {
    #[command(flatten)]
    url: DatabaseArg,
    /// Most database connections this process opens.
    #[arg(long, env = "TALLY_DB_MAX_CONNECTIONS", default_value_t = 10)]
    db_max_connections: u32,
    /// Seconds a request waits for a free database connection before failing with 503.
    #[arg(long, env = "TALLY_DB_ACQUIRE_TIMEOUT_SECS", default_value_t = 5)]
    db_acquire_timeout_secs: u64,
    /// Seconds to keep retrying at start while the database cannot be reached, then exit.
    #[arg(long, env = "TALLY_DB_CONNECT_WAIT_SECS", default_value_t = 30)]
    db_connect_wait_secs: u64,
}

impl DbArgs {
    async fn open(&self) -> anyhow::Result<store::Stores> {
        let options = store::PoolOptions {
            max_connections: self.db_max_connections.max(1),
            acquire_timeout: Duration::from_secs(self.db_acquire_timeout_secs.max(1)),
            connect_wait: Duration::from_secs(self.db_connect_wait_secs),
        };
        store::open(&self.url.database, &options)
            .await
            .with_context(|| format!("opening database {}", store::redact_url(&self.url.database)))
    }
}

/// What one client may use: requests per token, and how long it may hold a connection.
#[derive(clap::Args)]
struct LimitArgs {
    /// Requests per second each API token may make on average (0 turns rate limiting off).
    #[arg(long, env = "TALLY_RATE_LIMIT_RPS", default_value_t = 5_000)]
    rate_limit_rps: u32,
    /// Requests a token may make at once above its average rate before getting 429s.
    #[arg(long, env = "TALLY_RATE_LIMIT_BURST", default_value_t = 10_000)]
    rate_limit_burst: u32,
    /// Seconds one request may take, reading its body included, before a 408.
    #[arg(long, env = "TALLY_REQUEST_TIMEOUT_SECS", default_value_t = 60)]
    request_timeout_secs: u64,
    /// Seconds a connection may take to send a request's headers; also closes idle connections.
    #[arg(long, env = "TALLY_HEADER_TIMEOUT_SECS", default_value_t = 15)]
    header_timeout_secs: u64,
    /// Seconds a read or write may stall before the connection is closed.
    #[arg(long, env = "TALLY_IO_TIMEOUT_SECS", default_value_t = 60)]
    io_timeout_secs: u64,
    /// Connections served at once; further clients wait in the listen backlog.
    #[arg(long, env = "TALLY_MAX_CONNECTIONS", default_value_t = 4_096)]
    max_connections: usize,
}

impl LimitArgs {
    fn rate_limit(&self) -> Option<RateLimit> {
        let per_second = NonZeroU32::new(self.rate_limit_rps)?;
        let burst = NonZeroU32::new(self.rate_limit_burst).unwrap_or(per_second);
        Some(RateLimit { per_second, burst })
    }

    fn serve_limits(&self) -> ServeLimits {
        ServeLimits {
            max_connections: self.max_connections.max(1),
            header_read_timeout: Duration::from_secs(self.header_timeout_secs.max(1)),
            io_timeout: Duration::from_secs(self.io_timeout_secs.max(1)),
            ..ServeLimits::default()
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum EnvArg {
    Sandbox,
    Production,
}

impl From<EnvArg> for Env {
    fn from(e: EnvArg) -> Env {
        match e {
            EnvArg::Sandbox => Env::Sandbox,
            EnvArg::Production => Env::Production,
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal: a log file or collector gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match Cli::parse().command {
        Command::Serve {
            listen,
            db,
            invoice_grace_hours,
            job_interval_secs,
            event_retention_days,
            metrics_listen,
            edge_hmac_key,
            cors_allow_origins,
            webhook_retry_base_ms,
            webhook_timeout_secs,
            alert_sweep_secs,
            stripe_api_key,
            stripe_api_base,
            limits,
        } => {
            let stripe = match stripe_api_key.filter(|k| !k.trim().is_empty()) {
                Some(key) => Some(tally_central::stripe::StripeSettings::new(
                    Secret(key.trim().as_bytes().to_vec()),
                    &stripe_api_base,
                )?),
                None => None,
            };
            let settings = Settings {
                invoice_grace_ms: i64::from(invoice_grace_hours) * tally_core::time::HOUR_MS,
                job_interval: Duration::from_secs(job_interval_secs.max(1)),
                event_retention_ms: i64::from(event_retention_days) * tally_core::time::DAY_MS,
                edge_hmac_key: edge_hmac_key.map(|k| Secret(k.into_bytes())),
                rate_limit: limits.rate_limit(),
                request_timeout: Duration::from_secs(limits.request_timeout_secs.max(1)),
                cors: AllowedOrigins::parse(&cors_allow_origins).map_err(anyhow::Error::msg)?,
                delivery: tally_central::outbox::DeliverySettings {
                    retry_base: Duration::from_millis(webhook_retry_base_ms.max(1)),
                    timeout: Duration::from_secs(webhook_timeout_secs.max(1)),
                    enabled: true,
                },
                alert_sweep: Duration::from_secs(alert_sweep_secs.max(1)),
                stripe,
            };
            serve(listen, metrics_listen, &db, settings, limits.serve_limits()).await
        }
        Command::Token { command } => token_command(command).await,
        Command::Ingest {
            input,
            url,
            token,
            env,
            db,
            concurrency,
            max_retries,
            rejects,
        } => {
            let target = match url {
                Some(url) => backfill::Target::Remote {
                    url,
                    token: token.context("--token (or TALLY_TOKEN) is required with --url")?,
                    client: reqwest::Client::builder()
                        .timeout(Duration::from_secs(120))
                        .build()?,
                },
                None => {
                    let env = env.context(
                        "--env is required to ingest into a local database (or give --url)",
                    )?;
                    let stores = db.open().await?;
                    // A short-lived process: it leaves the outbox to `tally serve`.
                    let settings = Settings {
                        delivery: tally_central::outbox::DeliverySettings {
                            enabled: false,
                            ..Default::default()
                        },
                        ..Settings::default()
                    };
                    let state = AppState::new(stores, Arc::new(SystemClock), settings);
                    backfill::Target::Local {
                        state,
                        env: env.into(),
                    }
                }
            };
            let (reader, size): (Box<dyn std::io::Read + Send>, Option<u64>) = match input.as_str()
            {
                "-" => (Box::new(std::io::stdin()), None),
                path => {
                    let file =
                        std::fs::File::open(path).with_context(|| format!("opening {path}"))?;
                    let size = file.metadata().ok().map(|m| m.len());
                    (Box::new(file), size)
                }
            };
            let options = backfill::Options {
                concurrency,
                max_retries,
                rejects,
                progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
            };
            let report = backfill::run(reader, size, target, options).await?;
            println!("{}", report.summary());
            Ok(())
        }
        Command::Backup {
            to,
            db: DatabaseArg { database },
        } => {
            sqlite_only(&database)?;
            let bytes = store::sqlite::backup(&database, &to).await?;
            println!(
                "backed up {} to {} ({bytes} bytes)",
                store::redact_url(&database),
                to.display()
            );
            Ok(())
        }
        Command::Restore {
            from,
            db: DatabaseArg { database },
            force,
        } => {
            sqlite_only(&database)?;
            store::sqlite::restore(&from, &database, force).await?;
            println!(
                "restored {} from {}",
                store::redact_url(&database),
                from.display()
            );
            Ok(())
        }
    }
}

async fn token_command(command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create { env, name, db } => {
            let stores = db.open().await?;
            let token = auth::create_token(
                stores.tokens.as_ref(),
                env.into(),
                name.as_deref(),
                SystemClock.now_ms(),
            )
            .await?;
            println!("{token}");
        }
        TokenCommand::List { db } => {
            let stores = db.open().await?;
            let when = |ms: Option<i64>| ms.map_or_else(|| "-".to_string(), format_rfc3339_ms);
            println!("ID\tNAME\tENV\tCREATED\tLAST USED\tREVOKED");
            for t in stores.tokens.list_tokens().await? {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    t.id,
                    t.name.as_deref().unwrap_or("-"),
                    t.env.as_str(),
                    format_rfc3339_ms(t.created_ms),
                    when(t.last_used_ms),
                    when(t.revoked_ms),
                );
            }
        }
        TokenCommand::Revoke { id, db } => {
            let stores = db.open().await?;
            let id = id.trim().to_ascii_lowercase();
            anyhow::ensure!(
                id.len() == store::TOKEN_ID_CHARS && id.chars().all(|c| c.is_ascii_hexdigit()),
                "a token id is {} hex digits, as `tally token list` shows",
                store::TOKEN_ID_CHARS
            );
            if !stores
                .tokens
                .revoke_token(&id, SystemClock.now_ms())
                .await?
            {
                anyhow::bail!("no token {id} that is not already revoked");
            }
            println!("revoked {id}");
        }
    }
    Ok(())
}

async fn serve(
    listen: SocketAddr,
    metrics_listen: Option<SocketAddr>,
    db: &DbArgs,
    settings: Settings,
    limits: ServeLimits,
) -> anyhow::Result<()> {
    let stores = db.open().await?;
    if stores.tokens.token_count().await? == 0 {
        let token = auth::create_token(
            stores.tokens.as_ref(),
            Env::Sandbox,
            None,
            SystemClock.now_ms(),
        )
        .await?;
        println!("No API tokens yet: created a sandbox token (shown once, store it now):\n{token}");
    }
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let state = AppState::new(stores, clock, settings);
    if let Some(addr) = metrics_listen {
        let handle = telemetry::install()?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the metrics address {addr}"))?;
        println!("metrics on http://{}/metrics", listener.local_addr()?);
        let app = telemetry::metrics_router(state.clone(), handle);
        tokio::spawn(server::serve(
            listener,
            app,
            limits.clone(),
            std::future::pending(),
        ));
    }
    tokio::spawn(service::jobs::run_jobs(state.clone()));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr()?;
    println!("listening on http://{addr}");
    tracing::info!(%addr, database = %store::redact_url(&db.url.database), "tally serving");
    server::serve(listener, http::router(state), limits, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await;
    Ok(())
}
