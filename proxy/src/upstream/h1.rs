//! Idle HTTP/1.1 upstream connections per destination, one pool per worker.
//!
//! Each worker thread has its own pool (see `workers`), so its lock is
//! never contended and a connection, its driver task and every wakeup
//! between them stay on one thread. A connection leaves the pool for one
//! exchange and comes back when the response body has been read to its end
//! ([`PooledBody`]); a body dropped half-read means hyper closes the
//! connection, so it never comes back. Taking one is a pop, most recently
//! used first (its socket is warm and least likely to have been closed by
//! the upstream's own idle timeout); connections idle for longer than the
//! pool's idle timeout are closed by a reaper task on the worker.
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{Builder, SendRequest};
use hyper_util::rt::TokioIo;

use super::connect::{UpstreamError, connect};
use super::idle::{IdleConns, Reusable};
use crate::body::ProxyBody;

type Sender = SendRequest<ProxyBody>;

/// A connection idle for this long may be closed by the upstream's own idle
/// timeout just as a request is written to it. An idempotent request
/// without a body sent on such a connection is kept, and replayed once on a
/// fresh connection if the upstream closes without answering: what HTTP
/// clients do for their own stale keep-alive connections (RFC 9110 section
/// 9.2.2). Connections reused sooner are not worth the copy.
pub const STALE_AFTER: Duration = Duration::from_secs(1);

pub struct H1Pool {
    idle: Arc<IdleConns<Sender>>,
    stale_after: Duration,
}

impl Reusable for Sender {
    fn reusable(&self) -> bool {
        !self.is_closed()
    }
}

impl H1Pool {
    pub fn new(idle_timeout: Duration) -> Self {
        Self::with_timeouts(idle_timeout, STALE_AFTER)
    }

    fn with_timeouts(idle_timeout: Duration, stale_after: Duration) -> Self {
        H1Pool {
            // Bounded by the client connections that use it, one each.
            idle: IdleConns::new(idle_timeout, usize::MAX),
            stale_after,
        }
    }

    /// Sends `req` (origin form, with a `Host` header) to `dest` over an
    /// idle connection if there is one, else over a new one.
    pub async fn send(
        &self,
        dest: SocketAddr,
        mut req: http::Request<ProxyBody>,
    ) -> Result<http::Response<PooledBody>, UpstreamError> {
        while let Some((mut sender, since)) = self.idle.take(dest) {
            // Ready once its driver task has seen the last exchange end; an
            // error means the upstream closed the connection meanwhile.
            if sender.ready().await.is_err() {
                continue;
            }
            let idle = crate::clock::coarse_now().saturating_duration_since(since);
            let replay = if idle >= self.stale_after {
                replayable(&req)
            } else {
                None
            };
            match sender.try_send_request(req).await {
                Ok(response) => return Ok(self.pooled(dest, sender, response)),
                // The upstream closed the connection before the request was
                // written (its idle timeout racing this request): hyper
                // hands the request back, so send it on another connection.
                Err(mut error) => match (error.take_message(), replay) {
                    (Some(unsent), _) => req = unsent,
                    // Written, and the upstream closed without a word: a
                    // stale connection. Replay a kept copy on a fresh one.
                    (None, Some(copy)) if error.error().is_incomplete_message() => {
                        tracing::debug!(%dest, "upstream closed an idle connection under a request; replaying it");
                        req = copy;
                        break;
                    }
                    (None, _) => return Err(UpstreamError::Http1(error.into_error())),
                },
            }
        }
        // Boxed: connecting is rare, and its state would otherwise make every
        // request's future (moved around by hyper) that much larger.
        let mut sender = Box::pin(open(dest)).await?;
        let response = sender
            .send_request(req)
            .await
            .map_err(UpstreamError::Http1)?;
        Ok(self.pooled(dest, sender, response))
    }

    fn pooled(
        &self,
        dest: SocketAddr,
        sender: Sender,
        response: http::Response<Incoming>,
    ) -> http::Response<PooledBody> {
        let home = Home {
            pool: Arc::downgrade(&self.idle),
            dest,
            sender,
        };
        response.map(|body| PooledBody {
            body,
            home: Some(home),
        })
    }

    /// Idle connections to `dest` (for tests).
    pub fn idle_count(&self, dest: SocketAddr) -> usize {
        self.idle.count(dest)
    }
}

/// A copy of `req` to replay, if it is idempotent and has no body (an
/// upgrade is never replayed).
fn replayable(req: &http::Request<ProxyBody>) -> Option<http::Request<ProxyBody>> {
    use http::Method;
    let idempotent = matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    );
    use http_body::Body as _;
    if !idempotent
        || !req.body().is_end_stream()
        || req.headers().contains_key(http::header::UPGRADE)
    {
        return None;
    }
    let mut copy = http::Request::new(crate::body::empty());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    Some(copy)
}

async fn open(dest: SocketAddr) -> Result<Sender, UpstreamError> {
    let stream = connect(dest).await?;
    let (sender, conn) = Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|source| UpstreamError::Handshake { addr: dest, source })?;
    // Spawned on the current worker: the connection is driven on the same
    // thread as the requests that use it. It ends, closing the socket, when
    // its sender is dropped.
    tokio::spawn(async move {
        if let Err(error) = conn.with_upgrades().await {
            tracing::debug!(%error, %dest, "upstream HTTP/1.1 connection ended");
        }
    });
    Ok(sender)
}

/// Where a connection goes back to when its response body is done.
struct Home {
    pool: Weak<IdleConns<Sender>>,
    dest: SocketAddr,
    sender: Sender,
}

impl Home {
    fn checkin(self) {
        if let Some(pool) = self.pool.upgrade()
            && !self.sender.is_closed()
        {
            pool.put(self.dest, self.sender);
        }
    }
}

/// An upstream response body that puts its connection back in the pool
/// once it has been read to the end.
pub struct PooledBody {
    body: Incoming,
    home: Option<Home>,
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(None) = polled
            && let Some(home) = self.home.take()
        {
            home.checkin();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // A body with nothing left (HEAD, 204, 304, `Content-Length: 0`)
        // may be dropped without ever being polled. A body dropped half
        // read leaves a connection hyper closes: it is not checked in.
        if self.body.is_end_stream()
            && let Some(home) = self.home.take()
        {
            home.checkin();
        }
    }
}

#[cfg(test)]
mod tests;
