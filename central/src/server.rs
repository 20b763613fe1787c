//! Accepting HTTP/1.1 connections with the limits a public endpoint needs, so slow or half-open
//! clients cannot exhaust the server.
//!
//! `axum::serve` sets no timer on hyper, so hyper's header-read timeout never fires there and a
//! client that opens connections and never finishes its request holds them forever. This loop
//! bounds every way a client can hold resources:
//! - **connections**: at most `max_connections` are served at once; past that, accepting waits
//!   (the kernel backlog queues new clients) until one closes;
//! - **request head**: it must arrive within `header_read_timeout`, which also closes idle
//!   keep-alive connections (hyper starts the timer whenever it waits for a head);
//! - **stalled I/O**: a read or write that makes no progress for `io_timeout` closes the
//!   connection (a client that stops reading its response, or stops sending its body);
//! - **whole request**: the router's request timeout (`http::router`) ends a request that trickles
//!   its body byte by byte with a 408.
//!
//! Only HTTP/1.1 is served: the SDKs, the edge Worker and curl all speak it, and it keeps the
//! attack surface to one protocol whose limits are all set here.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_io_timeout::TimeoutStream;
use tower::ServiceExt;

/// Connection-level limits; see the module documentation for what each bounds.
#[derive(Debug, Clone)]
pub struct ServeLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub io_timeout: Duration,
    /// How long a graceful shutdown waits for in-flight requests before giving up on them.
    pub shutdown_grace: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            max_connections: 4_096,
            header_read_timeout: Duration::from_secs(15),
            io_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets in-flight requests finish (up
/// to `shutdown_grace`).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break, // The semaphore is never closed; stop serving if it were.
            },
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Typically EMFILE/ENFILE under a connection flood: back off briefly instead
                    // of spinning, and keep serving the connections already open.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Latency matters more than packet count for small JSON responses.
        let _ = stream.set_nodelay(true);
        let mut io = TimeoutStream::new(stream);
        io.set_read_timeout(Some(limits.io_timeout));
        io.set_write_timeout(Some(limits.io_timeout));
        let service = TowerToHyperService::new(
            app.clone()
                .map_request(|req: Request<Incoming>| req.map(axum::body::Body::new)),
        );
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            // Above the router's own header limit, so an oversized head gets its 431 with a
            // message (`http::check_request_head`) rather than hyper's empty one.
            .max_headers(crate::http::HYPER_MAX_HEADERS);
        let conn = graceful.watch(http.serve_connection(TokioIo::new(Box::pin(io)), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace elapsed with requests still in flight");
    }
}
