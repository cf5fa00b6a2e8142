//! The HTTPS server: TLS (via [`TlsReloader`]) in front of an axum router,
//! HTTP/1.1 and HTTP/2 negotiated by ALPN, graceful drain on shutdown.
//!
//! There is deliberately no per-request timeout: the controller's policy
//! stream (`GET /v1/policy/stream`) is merged into the same router and its
//! responses live for hours. Slow or idle clients are bounded instead by the
//! TLS handshake timeout, HTTP/1 header-read timeout and HTTP/2 keep-alive pings.
//! `/healthz`, `/readyz` and `/metrics` come from [`ops_router`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use prometheus_client::registry::Registry;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::tls::{TlsError, TlsReloader};

#[derive(Debug, Error)]
pub enum ServeError {
    #[error("failed to configure TLS: {0}")]
    Tls(#[from] TlsError),
}

/// Server tuning; [`ServeOptions::default`] is what `faultline-webhook serve` uses.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub handshake_timeout: Duration,
    pub header_read_timeout: Duration,
    /// After shutdown, how long open connections (e.g. policy streams) may
    /// take to finish before they are dropped.
    pub drain_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(15),
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
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(20));
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving HTTPS");
    }

    loop {
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
        let acceptor = acceptor.clone();
        let builder = builder.clone();
        let service = TowerToHyperService::new(app.clone());
        let watcher = graceful.watcher();
        let handshake_timeout = options.handshake_timeout;
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned();
            if let Err(error) = watcher.watch(conn).await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }

    drop(listener);
    tracing::info!(timeout = ?options.drain_timeout, "draining connections");
    if tokio::time::timeout(options.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("drain timeout: closing the remaining connections");
    }
    Ok(())
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
