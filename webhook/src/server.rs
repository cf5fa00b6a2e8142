//! The HTTPS server: TLS (via [`TlsReloader`]) in front of an axum router,
//! HTTP/1.1 or HTTP/2 as ALPN chose, graceful drain on shutdown.
//!
//! Every bound of a client sits here, on the one accept path that admission,
//! the policy stream and the operations endpoints share:
//! - a connection cap: at the cap the loop stops accepting, so new
//!   connections wait in the kernel's listen backlog (served once a slot
//!   frees, within the API server's own timeout) rather than being refused;
//! - deadlines, per phase (`server/conn.rs`): the TLS handshake; the first
//!   request after it; an HTTP/1 request's headers (hyper's header timeout,
//!   which also ends HTTP/1 keep-alive idle); a request's whole body; and a
//!   connection with no request in flight (HTTP/2 keep-alive idle).
//!
//! There is deliberately no per-request timeout: the controller's policy
//! stream (`GET /v1/policy/stream`) is merged into the same router and its
//! responses live for hours; a request in flight keeps its connection.
//! `/healthz`, `/readyz` and `/metrics` come from [`ops_router`].

mod conn;
mod direct;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus_client::registry::Registry;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::{ConnMetrics, WarnEvery};
use crate::tls::{TlsError, TlsReloader};

pub use conn::BodyDeadline;

#[derive(Debug, Error)]
pub enum ServeError {
    #[error("failed to configure TLS: {0}")]
    Tls(#[from] TlsError),
}

/// Connections open at once: each costs a descriptor and, measured, 15 KiB
/// idle after its handshake or 96 KiB holding a full HTTP/1 read buffer of
/// unfinished headers; 512 of them stay under 50 MiB of the 256 MiB limit.
/// Policy streams come on top (`--max-policy-streams` raises the cap when the
/// controller runs), with their own budget in docs/resource-budget.md.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;
/// An HTTP/1 read buffer: far above real headers, far below hyper's ~400 KiB default.
const H1_MAX_BUF: usize = 64 * 1024;
/// HTTP/2 flow control: what a client may have sent unread. The connection
/// window holds every stream's full window, so streams whose bodies wait
/// (for review budget) never starve the one being read of window: with a
/// smaller one, concurrent reviews on one connection (the API server's)
/// would wait on one another until their deadlines.
const H2_STREAM_WINDOW: u32 = 64 * 1024;
const H2_MAX_STREAMS: u32 = 32;
const H2_CONN_WINDOW: u32 = H2_STREAM_WINDOW * H2_MAX_STREAMS;

/// Server tuning; [`ServeOptions::default`] is what `faultline-webhook serve` uses.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Connections open at once; beyond, new ones wait in the listen backlog.
    pub max_connections: usize,
    pub handshake_timeout: Duration,
    /// From the end of the handshake until the first request is in.
    pub first_request_timeout: Duration,
    /// HTTP/1: until a request's headers are in, counted from when the
    /// connection is ready for it (so keep-alive idle too).
    pub header_read_timeout: Duration,
    /// Until a request's whole body is in, counted from its headers.
    pub body_timeout: Duration,
    /// A connection with no request in flight after its first is closed.
    pub idle_timeout: Duration,
    /// After shutdown, how long open connections (e.g. policy streams) may
    /// take to finish before they are dropped.
    pub drain_timeout: Duration,
    pub metrics: ConnMetrics,
    /// HTTP/1.1 `GET` paths whose responses stream for hours: served on the
    /// connection directly, without hyper's buffers (`server/direct.rs`).
    pub direct_paths: &'static [&'static str],
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            handshake_timeout: Duration::from_secs(5),
            first_request_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            // Longer than Go's 90 s idle-connection timeout, so the API
            // server closes its idle connections before we do.
            idle_timeout: Duration::from_secs(120),
            drain_timeout: Duration::from_secs(15),
            metrics: ConnMetrics::default(),
            direct_paths: &[faultline_policy::wire::STREAM_PATH],
        }
    }
}

/// Serve `app` over TLS on `listener` until `shutdown`, then drain.
pub async fn serve(
    listener: TcpListener,
    tls: TlsReloader,
    app: Router,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    serve_with(listener, tls, app, shutdown, ServeOptions::default()).await
}

pub async fn serve_with(
    listener: TcpListener,
    tls: TlsReloader,
    app: Router,
    shutdown: CancellationToken,
    options: ServeOptions,
) -> Result<(), ServeError> {
    let acceptor = TlsAcceptor::from(tls.server_config()?);
    let slots = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let drain_timeout = options.drain_timeout;
    let shared = Arc::new(conn::Shared {
        acceptor,
        h1: http1_builder(&options),
        h2: http2_builder(),
        app,
        shutdown: shutdown.clone(),
        kill: CancellationToken::new(),
        warn: WarnEvery::default(),
        options,
    });
    let tracker = TaskTracker::new();
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, max_connections = shared.options.max_connections, "serving HTTPS");
    }

    while let Some(permit) = take_slot(&slots, &shared).await {
        let (tcp, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(error) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(%error, "failed to accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        tracker.spawn(conn::serve(tcp, peer, permit, shared.clone()));
    }

    drop(listener);
    tracker.close();
    tracing::info!(timeout = ?drain_timeout, "draining connections");
    if tokio::time::timeout(drain_timeout, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("drain timeout: closing the remaining connections");
        shared.kill.cancel();
    }
    Ok(())
}

/// A connection slot, waiting (not accepting) while all are taken; `None` on shutdown.
async fn take_slot(slots: &Arc<Semaphore>, shared: &conn::Shared) -> Option<OwnedSemaphorePermit> {
    if let Ok(permit) = slots.clone().try_acquire_owned() {
        return Some(permit);
    }
    shared.options.metrics.cap_reached.inc();
    if let Some(suppressed) = shared.warn.check() {
        tracing::warn!(
            max_connections = shared.options.max_connections,
            suppressed,
            "connection cap reached: new connections wait in the listen backlog until one closes"
        );
    }
    tokio::select! {
        () = shared.shutdown.cancelled() => None,
        permit = slots.clone().acquire_owned() => permit.ok(),
    }
}

fn http1_builder(options: &ServeOptions) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .max_buf_size(H1_MAX_BUF);
    builder
}

fn http2_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new()).http2_only();
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(20))
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONN_WINDOW)
        .max_concurrent_streams(H2_MAX_STREAMS);
    builder
}

/// Readiness, flipped off when draining so the Service stops routing to us.
#[derive(Clone, Debug, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }

    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
struct OpsState {
    registry: Arc<Registry>,
    readiness: Readiness,
}

/// `/healthz` (process alive), `/readyz` (serving and not draining), `/metrics`.
/// Read-only: nothing here changes behaviour, so no authentication.
pub fn ops_router(registry: Arc<Registry>, readiness: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(OpsState {
            registry,
            readiness,
        })
}

async fn readyz(State(state): State<OpsState>) -> Response {
    if state.readiness.get() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn metrics(State(state): State<OpsState>) -> Response {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to encode metrics: {error}\n"),
        )
            .into_response(),
    }
}
