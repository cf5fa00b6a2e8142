//! DNS over TCP (RFC 7766): queries framed by a two-byte length, answered
//! in order on one connection. Each client connection forwards over one
//! connection of its own to the resolver, opened at the first clean query.
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;

use super::{DnsState, InFlight, MAX_TCP_ANSWER, MAX_TCP_QUERY, Plan};
use crate::metrics::TransportLabels;

const TCP: TransportLabels = TransportLabels { transport: "tcp" };

pub(super) async fn serve(state: Arc<DnsState>, listener: TcpListener) {
    loop {
        let accepted = tokio::select! {
            () = state.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, client) = match accepted {
            Ok(got) => got,
            Err(error) => {
                // Out of descriptors, most likely: back off instead of spinning.
                tracing::debug!(%error, "failed to accept a DNS connection");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(slot) = state.tcp_slots.clone().try_acquire_owned() else {
            state.metrics.dns.reject("tcp_connections");
            continue;
        };
        state
            .tracker
            .spawn(connection(state.clone(), stream, client, slot));
    }
}

/// Why a frame was not read.
enum FrameError {
    Io,
    TooLarge,
}

async fn read_frame(stream: &mut TcpStream, max: usize) -> Result<Option<Vec<u8>>, FrameError> {
    let mut len = [0u8; 2];
    match stream.read_exact(&mut len).await {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(_) => return Err(FrameError::Io),
    }
    let len = usize::from(u16::from_be_bytes(len));
    if len > max {
        return Err(FrameError::TooLarge);
    }
    let mut msg = vec![0u8; len];
    stream
        .read_exact(&mut msg)
        .await
        .map_err(|_| FrameError::Io)?;
    Ok(Some(msg))
}

async fn write_frame(stream: &mut TcpStream, msg: &[u8]) -> std::io::Result<()> {
    let len = u16::try_from(msg.len()).map_err(|_| std::io::ErrorKind::InvalidData)?;
    let mut framed = Vec::with_capacity(msg.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(msg);
    stream.write_all(&framed).await
}

async fn connection(
    state: Arc<DnsState>,
    mut client: TcpStream,
    peer: SocketAddr,
    _slot: OwnedSemaphorePermit,
) {
    state.metrics.dns.tcp_connections.inc();
    let mut upstream: Option<TcpStream> = None;
    loop {
        let next = tokio::select! {
            () = state.shutdown.cancelled() => break,
            next = tokio::time::timeout(state.config.tcp_idle, read_frame(&mut client, MAX_TCP_QUERY)) => next,
        };
        let msg = match next {
            Ok(Ok(Some(msg))) => msg,
            Ok(Err(FrameError::TooLarge)) => {
                state.metrics.dns.reject("too_large");
                break;
            }
            // End of stream, a broken one, or idle for too long.
            Ok(Ok(None) | Err(FrameError::Io)) | Err(_) => break,
        };
        state.metrics.dns.queries.get_or_create(&TCP).inc();
        let Ok(permit) = state.in_flight.clone().try_acquire_owned() else {
            state.metrics.dns.reject("in_flight");
            break;
        };
        let in_flight = InFlight::new(&state.metrics);
        let plan = state.plan(&msg, peer.ip());
        if plan == Plan::Drop {
            drop((in_flight, permit));
            hold_silently(&state, &mut client).await;
            break;
        }
        let answer = state
            .run(plan, || forward(&state, &mut upstream, &msg))
            .await;
        drop((in_flight, permit));
        // No answer (the resolver failed): closing tells the client at
        // once, where silence would cost it its whole timeout.
        let Some(answer) = answer else { break };
        if write_frame(&mut client, &answer).await.is_err() {
            break;
        }
    }
    state.metrics.dns.tcp_connections.dec();
}

/// A dropped query over TCP: keep the connection, answer nothing, read and
/// discard until the client gives up (or the proxy stops).
async fn hold_silently(state: &DnsState, client: &mut TcpStream) {
    let mut sink = [0u8; 512];
    loop {
        tokio::select! {
            () = state.hard_stop.cancelled() => return,
            read = client.read(&mut sink) => match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
        }
    }
}

/// Sends `msg` over the connection's resolver connection (reconnecting
/// once if a reused one turns out closed) and reads the answer.
async fn forward(
    state: &DnsState,
    upstream: &mut Option<TcpStream>,
    msg: &[u8],
) -> Option<Vec<u8>> {
    let exchange = async {
        for _ in 0..2 {
            let reused = upstream.is_some();
            let stream = match upstream {
                Some(stream) => stream,
                None => {
                    upstream.insert(TcpStream::connect(state.upstream).await.map_err(|_| "io")?)
                }
            };
            let answer = match write_frame(stream, msg).await {
                Ok(()) => read_frame(stream, MAX_TCP_ANSWER).await,
                Err(_) => Err(FrameError::Io),
            };
            match answer {
                Ok(Some(answer)) => return Ok(answer),
                Err(FrameError::TooLarge) => return Err("too_large"),
                Ok(None) | Err(FrameError::Io) => {
                    *upstream = None;
                    if !reused {
                        return Err("io");
                    }
                }
            }
        }
        Err("io")
    };
    match tokio::time::timeout(state.config.timeout, exchange).await {
        Ok(Ok(answer)) => Some(answer),
        Ok(Err(reason)) => {
            state.metrics.dns.upstream_error(reason);
            None
        }
        Err(_) => {
            *upstream = None;
            state.metrics.dns.upstream_error("timeout");
            None
        }
    }
}
