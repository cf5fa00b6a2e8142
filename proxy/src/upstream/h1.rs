//! Idle HTTP/1.1 connections per destination, owned by one worker.
//!
//! Each worker thread has its own pool (see `workers`), so the lock is never
//! contended and a connection, its driver task and every wakeup between
//! them stay on one thread. A sender is taken out of the pool for the
//! request head and put back once the response head arrives; it is only
//! picked again when hyper reports it ready, i.e. after the response body
//! has been read to the end.
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hyper::client::conn::http1::{Builder, SendRequest};
use hyper_util::rt::TokioIo;

use super::{UpstreamError, connect};
use crate::http::ProxyBody;

type Sender = SendRequest<ProxyBody>;

struct Idle {
    sender: Sender,
    since: Instant,
}

pub struct H1Pool {
    conns: Mutex<HashMap<SocketAddr, Vec<Idle>>>,
    idle_timeout: Duration,
}

impl H1Pool {
    pub fn new(idle_timeout: Duration) -> Self {
        H1Pool {
            conns: Mutex::new(HashMap::new()),
            idle_timeout,
        }
    }

    pub async fn send(
        &self,
        dest: SocketAddr,
        mut req: http::Request<ProxyBody>,
    ) -> Result<http::Response<hyper::body::Incoming>, UpstreamError> {
        // A pooled connection the upstream closed before our request was
        // written hands the request back: retry on another connection.
        while let Some(mut sender) = self.checkout(dest) {
            match sender.try_send_request(req).await {
                Ok(response) => {
                    self.checkin(dest, sender);
                    return Ok(response);
                }
                Err(mut error) => match error.take_message() {
                    Some(unsent) => req = unsent,
                    None => return Err(UpstreamError::Http1(error.into_error())),
                },
            }
        }
        let mut sender = self.open(dest).await?;
        let response = sender
            .send_request(req)
            .await
            .map_err(UpstreamError::Http1)?;
        self.checkin(dest, sender);
        Ok(response)
    }

    async fn open(&self, dest: SocketAddr) -> Result<Sender, UpstreamError> {
        let stream = connect(dest).await?;
        let (sender, conn) = Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|source| UpstreamError::Handshake { addr: dest, source })?;
        // Spawned on the current worker's runtime: the connection is driven
        // on the same thread as the requests that use it.
        tokio::spawn(async move {
            if let Err(error) = conn.with_upgrades().await {
                tracing::debug!(%error, %dest, "upstream HTTP/1.1 connection ended");
            }
        });
        Ok(sender)
    }

    /// Takes a ready connection, dropping closed and long-idle ones.
    fn checkout(&self, dest: SocketAddr) -> Option<Sender> {
        let mut conns = self.conns.lock().ok()?;
        let idle = conns.get_mut(&dest)?;
        let now = Instant::now();
        // A sender that is not ready is still reading its last response
        // body: busy, not idle, however long ago it was put back.
        let expired =
            |c: &Idle| c.sender.is_ready() && now.duration_since(c.since) > self.idle_timeout;
        idle.retain(|c| !c.sender.is_closed() && !expired(c));
        let ready = idle.iter().rposition(|c| c.sender.is_ready())?;
        Some(idle.swap_remove(ready).sender)
    }

    fn checkin(&self, dest: SocketAddr, sender: Sender) {
        if let Ok(mut conns) = self.conns.lock() {
            conns.entry(dest).or_default().push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }
}
