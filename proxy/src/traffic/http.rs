//! HTTP/1.1 and HTTP/2 (h2c, gRPC) proxying with hyper.
//!
//! - this file: the per-connection driver ([`serve`]): hyper server
//!   builders, graceful shutdown on drain, RST on a reset fault;
//! - `http/service.rs`: one request: decide the fault, apply it, forward;
//! - `http/request.rs`: request heads the proxy refuses (RFC 9112
//!   ambiguities) and client body errors told apart from upstream ones;
//! - `http/response.rs`: responses the proxy makes itself (aborts, gRPC
//!   trailers-only statuses, 502) and hop-by-hop header handling;
//! - `http/rewrite.rs`: `replace` and `patch` applied to an upstream's
//!   response (the one place a body may be held, bounded);
//! - `http/throttled.rs`: the bandwidth-limited body wrapper;
//! - `http/keepalive.rs`: HTTP/1.1 connections: each request relayed
//!   verbatim or served by hyper, and no buffers held while idle;
//! - `http/relay.rs`: the HTTP/1.1 relay, for requests that need nothing
//!   of hyper;
//! - `http/h2relay.rs`: the HTTP/2 relay, for h2c connections no rule can
//!   reach;
//! - the header-read timeout runs on the coarse clock of `crate::clock`.
//!
//! Bodies are streamed frame by frame in both directions, trailers
//! included (gRPC), and never buffered whole.
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::client_io::ClientIo;
use crate::conn::ConnCtx;
use crate::events::{DRAIN, KILL, STOP};
use crate::metrics::{DirectionLabels, Protocol};
use crate::state::ProxyState;

mod h2relay;
mod keepalive;
mod relay;
pub mod request;
pub mod response;
pub mod rewrite;
pub mod service;
pub mod throttled;

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
                flags = $ctx.events.raised(awaited) => {
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

/// Serves one client connection until it closes, the proxy drains, or a
/// reset fault kills it (dropping the connection closes it with RST).
pub async fn serve(shared: Arc<ProxyState>, ctx: Arc<ConnCtx>, io: ClientIo) {
    let result = match ctx.protocol {
        // Boxed: an HTTP/2 connection's state would otherwise be part of
        // every connection's task, HTTP/1.1 and parked ones too.
        Protocol::Http2 | Protocol::Grpc => Box::pin(serve_h2(ctx.clone(), io)).await,
        Protocol::Http1 | Protocol::Tcp | Protocol::Tls => keepalive::serve(ctx.clone(), io).await,
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

async fn serve_h2(ctx: Arc<ConnCtx>, io: ClientIo) -> hyper::Result<()> {
    let io = match h2relay::serve(&ctx, io).await {
        Ok(()) => return Ok(()),
        Err(io) => io,
    };
    let service = {
        let ctx = ctx.clone();
        service_fn(move |req| service::handle(ctx.clone(), req))
    };
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_BYTES as u32)
        .adaptive_window(true);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    drive!(conn, ctx)
}
