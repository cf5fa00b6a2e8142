//! Connections to upstreams for HTTP.
//!
//! HTTP/1.1: idle connections are pooled per destination and worker thread
//! ([`H1Pool`], see `upstream/h1.rs`); the request goes out in origin form
//! with the `Host` header the client sent. HTTP/2 (h2c, gRPC) multiplexes:
//! one connection per destination and worker thread is kept in [`H2Pool`].
//!
//! The proxy's own upstream sockets are not captured again because the
//! iptables rules skip the proxy's UID (15400) and loopback; `traffic::accept`
//! additionally refuses connections whose original destination is the
//! proxy's own capture port.
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use crate::body::ProxyBody;

mod connect;
mod h1;
mod idle;
mod raw;

pub use connect::{CONNECT_TIMEOUT, UpstreamError, connect};
pub use h1::{H1Pool, PooledBody, STALE_AFTER};
pub use raw::RawPool;

/// Idle pooled HTTP/1.1 connections are closed after this long.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The upstream connections a worker thread shares between its client
/// connections.
pub struct Upstream {
    http1: H1Pool,
    http2: H2Pool,
    /// The HTTP/1.1 relay's idle connections.
    pub relay: RawPool,
}

impl Default for Upstream {
    fn default() -> Self {
        Self::new()
    }
}

impl Upstream {
    pub fn new() -> Self {
        Upstream {
            http1: H1Pool::new(IDLE_TIMEOUT),
            http2: H2Pool::default(),
            relay: RawPool::new(IDLE_TIMEOUT),
        }
    }

    /// `req` must be in origin form (authority form for CONNECT) and carry
    /// a `Host` header: it is written to `dest` as it is.
    pub async fn send_http1(
        &self,
        dest: SocketAddr,
        req: http::Request<ProxyBody>,
    ) -> Result<http::Response<PooledBody>, UpstreamError> {
        self.http1.send(dest, req).await
    }

    pub async fn send_http2(
        &self,
        dest: SocketAddr,
        req: http::Request<ProxyBody>,
    ) -> Result<http::Response<hyper::body::Incoming>, UpstreamError> {
        let mut sender = self.http2.get(dest).await?;
        let result = sender.send_request(req).await;
        if result.is_err() && sender.is_closed() {
            self.http2.forget(dest);
        }
        result.map_err(UpstreamError::Http2)
    }
}

/// One multiplexed HTTP/2 connection per destination, replaced when closed.
#[derive(Default)]
pub struct H2Pool {
    conns: Mutex<HashMap<SocketAddr, SendRequest<ProxyBody>>>,
}

impl H2Pool {
    async fn get(&self, dest: SocketAddr) -> Result<SendRequest<ProxyBody>, UpstreamError> {
        match self.cached(dest) {
            Some(sender) => Ok(sender),
            // Boxed, like the HTTP/1.1 connect: rare, and its state would
            // otherwise enlarge every request's future.
            None => Box::pin(self.open(dest)).await,
        }
    }

    async fn open(&self, dest: SocketAddr) -> Result<SendRequest<ProxyBody>, UpstreamError> {
        // Two requests racing here may both connect; the later one wins the
        // map slot and the other connection closes when its request is done.
        let stream = connect(dest).await?;
        let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .adaptive_window(true)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|source| UpstreamError::Handshake { addr: dest, source })?;
        tokio::spawn(async move {
            if let Err(error) = conn.await {
                tracing::debug!(%error, %dest, "upstream HTTP/2 connection ended");
            }
        });
        if let Ok(mut conns) = self.conns.lock() {
            conns.insert(dest, sender.clone());
        }
        Ok(sender)
    }

    fn cached(&self, dest: SocketAddr) -> Option<SendRequest<ProxyBody>> {
        let mut conns = self.conns.lock().ok()?;
        match conns.get(&dest) {
            Some(sender) if !sender.is_closed() => Some(sender.clone()),
            Some(_) => {
                conns.remove(&dest);
                None
            }
            None => None,
        }
    }

    fn forget(&self, dest: SocketAddr) {
        if let Ok(mut conns) = self.conns.lock() {
            conns.remove(&dest);
        }
    }
}
