//! Dialing an upstream, and what can go wrong talking to one.
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("failed to connect to upstream {addr}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to connect to upstream {addr}: timed out after {CONNECT_TIMEOUT:?}")]
    ConnectTimeout { addr: SocketAddr },
    #[error("failed to start HTTP/2 with upstream {addr}")]
    Handshake {
        addr: SocketAddr,
        #[source]
        source: hyper::Error,
    },
    #[error("failed to exchange HTTP/1.1 with upstream")]
    Http1(#[source] hyper::Error),
    #[error("failed to exchange HTTP/2 with upstream")]
    Http2(#[source] hyper::Error),
}

impl UpstreamError {
    /// Whether the upstream could not be reached at all (a 502 and the
    /// connect-error metric) rather than failing mid-exchange.
    pub fn is_connect(&self) -> bool {
        match self {
            UpstreamError::Connect { .. }
            | UpstreamError::ConnectTimeout { .. }
            | UpstreamError::Handshake { .. } => true,
            UpstreamError::Http1(_) | UpstreamError::Http2(_) => false,
        }
    }
}

/// Dials an upstream for raw TCP and HTTP/2.
pub async fn connect(addr: SocketAddr) -> Result<TcpStream, UpstreamError> {
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Err(_) => Err(UpstreamError::ConnectTimeout { addr }),
        Ok(Err(source)) => Err(UpstreamError::Connect { addr, source }),
        Ok(Ok(stream)) => {
            // Latency matters more than packet count for proxied traffic.
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
    }
}
