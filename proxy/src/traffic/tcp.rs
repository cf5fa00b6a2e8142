//! Raw TCP: connections that are not HTTP (TLS, databases, NATS...) are
//! copied both ways. Only L4 faults apply; the byte-level ones (bandwidth,
//! reset after N bytes) live in `io::ClientIo`, the timed reset in the
//! connection context.
use std::sync::Arc;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::conn::ConnCtx;
use crate::state::ProxyState;
use crate::traffic::client_io::ClientIo;

/// Connects to the destination and copies until either side closes, a
/// reset fault fires, or the drain deadline passes (the task is dropped).
pub async fn forward(shared: &Arc<ProxyState>, ctx: &ConnCtx, mut client: ClientIo) {
    let mut upstream = match crate::upstream::connect(ctx.forward_to).await {
        Ok(upstream) => upstream,
        Err(error) => {
            shared.metrics.upstream_connect_error(ctx.direction);
            tracing::warn!(client = %ctx.client, error = %crate::error_chain(&error), "closing TCP connection");
            return;
        }
    };
    tokio::select! {
        result = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
            if let Err(error) = result {
                tracing::debug!(%error, client = %ctx.client, "TCP connection ended with an error");
            }
        }
        () = ctx.killed() => {
            // Reset both sides: the upstream should see the cut too.
            crate::traffic::client_io::set_linger_zero(&upstream);
        }
    }
}

/// The `partition: {mode: drop}` fault: hold the connection, read and
/// discard whatever the client sends, answer nothing, until the client
/// gives up or the proxy shuts down.
pub async fn blackhole(shared: &Arc<ProxyState>, mut stream: TcpStream) {
    let mut sink = [0u8; 4096];
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => return,
            read = stream.read(&mut sink) => match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
        }
    }
}
