//! The HTTP/1.1 upstream connection of one client connection.
//!
//! Each client connection gets its own upstream connection, opened on its
//! first request and closed with it: the upstream sees the connections the
//! application would have opened without the proxy (a client's keep-alive
//! connection stays one keep-alive connection upstream; a client opening a
//! connection per request still does), and idle upstream connections never
//! outlive the client connection they serve. HTTP/1.1 has one exchange at a
//! time per connection, so one upstream connection is all a client
//! connection ever needs; no pool, no lookup per request, no lock anyone
//! else takes.
use std::net::SocketAddr;
use std::sync::Mutex;

use hyper::client::conn::http1::{Builder, SendRequest};
use hyper_util::rt::TokioIo;

use super::{UpstreamError, connect};
use crate::http::ProxyBody;

type Sender = SendRequest<ProxyBody>;

#[derive(Default)]
pub struct H1Conn {
    sender: Mutex<Option<Sender>>,
}

impl H1Conn {
    /// Sends `req` (origin form, with a `Host` header) to `dest`, over the
    /// connection of earlier requests while the upstream keeps it open.
    pub async fn send(
        &self,
        dest: SocketAddr,
        mut req: http::Request<ProxyBody>,
    ) -> Result<http::Response<hyper::body::Incoming>, UpstreamError> {
        if let Some(mut sender) = self.take() {
            // Ready once the previous response body was read to its end;
            // an error means the upstream closed the connection meanwhile.
            if sender.ready().await.is_ok() {
                match sender.try_send_request(req).await {
                    Ok(response) => {
                        self.put(sender);
                        return Ok(response);
                    }
                    // The upstream closed the connection before the request
                    // was written (an idle timeout racing this request):
                    // hyper hands the request back, so send it on a fresh
                    // connection. A request that was written is not retried.
                    Err(mut error) => match error.take_message() {
                        Some(unsent) => req = unsent,
                        None => return Err(UpstreamError::Http1(error.into_error())),
                    },
                }
            }
        }
        let mut sender = open(dest).await?;
        let response = sender
            .send_request(req)
            .await
            .map_err(UpstreamError::Http1)?;
        self.put(sender);
        Ok(response)
    }

    fn take(&self) -> Option<Sender> {
        self.sender.lock().ok()?.take()
    }

    fn put(&self, sender: Sender) {
        if let Ok(mut slot) = self.sender.lock() {
            *slot = Some(sender);
        }
    }
}

async fn open(dest: SocketAddr) -> Result<Sender, UpstreamError> {
    let stream = connect(dest).await?;
    let (sender, conn) = Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|source| UpstreamError::Handshake { addr: dest, source })?;
    // Driven on the client connection's worker thread; it ends (closing the
    // socket) once the sender is dropped with the client connection.
    tokio::spawn(async move {
        if let Err(error) = conn.with_upgrades().await {
            tracing::debug!(%error, %dest, "upstream HTTP/1.1 connection ended");
        }
    });
    Ok(sender)
}
