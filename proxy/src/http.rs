//! HTTP/1.1 and HTTP/2 (h2c, gRPC) proxying with hyper.
//!
//! - this file: the per-connection driver ([`serve`]): hyper server
//!   builders, graceful shutdown on drain, RST on a reset fault;
//! - `http/service.rs`: one request: decide the fault, apply it, forward;
//! - `http/response.rs`: responses the proxy makes itself (aborts, gRPC
//!   trailers-only statuses, 502) and hop-by-hop header handling;
//! - `http/body.rs`: the bandwidth-limited body wrapper;
//! - `http/deadline.rs`: the header-read timeout on a coarse clock.
//!
//! Bodies are streamed frame by frame in both directions, trailers
//! included (gRPC), and never buffered whole.
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use crate::io::ClientIo;
use crate::listener::ConnCtx;
use crate::metrics::{DirectionLabels, Protocol};
use crate::server::Shared;
use crate::signal::{DRAIN, KILL, STOP};

pub mod body;
pub mod deadline;
pub mod response;
pub mod service;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type of everything the proxy sends, in either direction.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// Larger request heads are answered with 431.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// A client must send a whole request head within this time.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Polls a hyper connection to completion; on drain asks it to finish
/// in-flight requests and close; on a reset fault drops it at once.
macro_rules! drive {
    ($conn:ident, $ctx:ident) => {{
        let mut conn = std::pin::pin!($conn);
        let mut awaited = DRAIN | KILL | STOP;
        loop {
            tokio::select! {
                result = conn.as_mut() => break result,
                flags = $ctx.signal.raised(awaited) => {
                    if flags & (KILL | STOP) != 0 {
                        break Ok(());
                    }
                    awaited = KILL | STOP;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }};
}

pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn empty() -> ProxyBody {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Serves one client connection until it closes, the proxy drains, or a
/// reset fault kills it (dropping the connection closes it with RST).
pub async fn serve(shared: Arc<Shared>, ctx: Arc<ConnCtx>, io: ClientIo) {
    let service = {
        let ctx = ctx.clone();
        service_fn(move |req| service::handle(ctx.clone(), req))
    };
    let io = TokioIo::new(io);
    let result = match ctx.protocol {
        Protocol::Http2 | Protocol::Grpc => {
            let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            builder
                .timer(TokioTimer::new())
                .max_header_list_size(MAX_HEADER_BYTES as u32)
                .adaptive_window(true);
            let conn = builder.serve_connection(io, service);
            drive!(conn, ctx)
        }
        Protocol::Http1 | Protocol::Tcp => {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(deadline::HeaderTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_buf_size(MAX_HEADER_BYTES);
            let conn = builder.serve_connection(io, service).with_upgrades();
            drive!(conn, ctx)
        }
    };
    if let Err(error) = result {
        if error.is_parse() || error.is_parse_too_large() {
            shared
                .metrics
                .bad_requests
                .get_or_create(&DirectionLabels {
                    direction: ctx.direction,
                })
                .inc();
        }
        tracing::debug!(%error, client = %ctx.client, "client connection ended with an error");
    }
}
