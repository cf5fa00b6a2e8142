//! Accepting connections: the connection limit, the original destination,
//! connection-level faults, protocol detection, then HTTP or raw TCP.
//!
//! Three listener kinds share this code: the inbound capture listener
//! (15406: forward to 127.0.0.1:<original port>), the outbound capture
//! listener (15401: forward to the original destination) and the
//! standalone listener (forward to the configured upstream, matched as
//! inbound traffic to the upstream's port).
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use faultline_policy::TlsInfo;

use super::client_hello;
use super::client_io::{ClientIo, Limits};
use super::detect::{Detected, REQUEST_LINE_TIMEOUT, sniff};
use super::effects::{self, AtOpen, ConnFault, Injected};
use crate::conn::{ConnCtx, ResetFlag};
use crate::events::{ConnEvents, STOP};
use crate::metrics::{Direction, DirectionLabels, Protocol, RejectLabels, TrafficLabels};
use crate::state::ProxyState;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    InboundCapture,
    OutboundCapture,
    Standalone { upstream: SocketAddr },
}

impl ListenerKind {
    pub fn direction(self) -> Direction {
        match self {
            ListenerKind::OutboundCapture => Direction::Outbound,
            ListenerKind::InboundCapture | ListenerKind::Standalone { .. } => Direction::Inbound,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error(
        "failed to read the original destination (SO_ORIGINAL_DST); is the iptables redirection installed?"
    )]
    OriginalDst(#[source] std::io::Error),
    #[error(
        "refusing a connection addressed to the capture port itself ({0}): forwarding it would loop"
    )]
    Loop(SocketAddr),
    #[error("failed to detect the protocol")]
    Detect(#[source] std::io::Error),
}

/// Accepts until shutdown. Every connection runs on the shared tracker so
/// the drain can wait for it.
pub async fn accept_loop(shared: Arc<ProxyState>, listener: TcpListener, kind: ListenerKind) {
    let local = listener.local_addr().ok();
    let mut reserve = spare_descriptor();
    // Warned once each time the limit is reached, not once per connection.
    let mut at_limit = false;
    loop {
        let accepted = tokio::select! {
            () = shared.shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, client)) => {
                let Some(guard) = ConnGuard::acquire(&shared, kind.direction()) else {
                    shared
                        .metrics
                        .connections_rejected
                        .get_or_create(&RejectLabels { reason: "limit" })
                        .inc();
                    if !at_limit {
                        tracing::warn!(%client, max_connections = shared.max_connections,
                            "connection limit reached (FAULTLINE_MAX_CONNECTIONS); closing new connections until some close");
                        at_limit = true;
                    }
                    tracing::debug!(%client, "over the connection limit; closing");
                    drop(stream);
                    continue;
                };
                if at_limit {
                    tracing::info!(%client, "below the connection limit again; accepting");
                    at_limit = false;
                }
                // Tracked from here, so the drain also waits for connections
                // still queued for a worker.
                let stream = match stream.into_std() {
                    Ok(stream) => stream,
                    Err(error) => {
                        tracing::warn!(%error, "failed to hand a connection to a worker");
                        continue;
                    }
                };
                let shared2 = shared.clone();
                shared.workers.dispatch(|worker| shared.tracker.track_future(async move {
                    let stream = match TcpStream::from_std(stream) {
                        Ok(stream) => stream,
                        Err(error) => {
                            tracing::warn!(%error, "failed to register a connection with its worker");
                            return;
                        }
                    };
                    let events = shared2.events.register();
                    // Biased: polled for every wakeup of the connection,
                    // so no random draw each time.
                    tokio::select! {
                        biased;
                        result = handle(&shared2, stream, client, kind, local, worker, &events) => {
                            if let Err(error) = result {
                                tracing::warn!(%client, error = %crate::error_chain(&error), "connection refused");
                            }
                        }
                        // The drain period is over.
                        _ = events.raised(STOP) => {}
                    }
                    drop(guard);
                }));
            }
            Err(error) if out_of_descriptors(&error) && reserve.is_some() => {
                shed_one(&shared, &listener, &mut reserve).await;
            }
            Err(error) => {
                // Back off instead of spinning.
                tracing::warn!(%error, "failed to accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                if reserve.is_none() {
                    reserve = spare_descriptor();
                }
            }
        }
    }
    tracing::debug!(?local, "listener closed");
}

/// A descriptor held in reserve for when the open-file limit is reached:
/// `accept` then fails, and the connection waiting in the listen backlog
/// would hang there until descriptors free up. Releasing the reserve lets
/// the proxy accept it and close it at once, so the client learns right
/// away; then the reserve is taken back.
fn spare_descriptor() -> Option<socket2::Socket> {
    socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()
}

fn out_of_descriptors(error: &std::io::Error) -> bool {
    matches!(
        rustix::io::Errno::from_io_error(error),
        Some(rustix::io::Errno::MFILE | rustix::io::Errno::NFILE)
    )
}

async fn shed_one(
    shared: &ProxyState,
    listener: &TcpListener,
    reserve: &mut Option<socket2::Socket>,
) {
    drop(reserve.take());
    // Ready at once: a connection is waiting, that is why accept failed.
    let accepted = tokio::time::timeout(Duration::from_millis(100), listener.accept()).await;
    if let Ok(Ok((stream, client))) = accepted {
        shared
            .metrics
            .connections_rejected
            .get_or_create(&RejectLabels { reason: "fd_limit" })
            .inc();
        tracing::warn!(%client, "out of file descriptors (RLIMIT_NOFILE); closing a new connection");
        drop(stream);
    }
    *reserve = spare_descriptor();
    if reserve.is_none() {
        // Still at the limit (another listener took the descriptor).
        tokio::time::sleep(Duration::from_millis(50)).await;
        *reserve = spare_descriptor();
    }
}

/// Counts a connection against the limit for as long as it lives.
struct ConnGuard {
    shared: Arc<ProxyState>,
    direction: Direction,
}

impl ConnGuard {
    fn acquire(shared: &Arc<ProxyState>, direction: Direction) -> Option<Self> {
        let previous = shared.active.fetch_add(1, Ordering::AcqRel);
        if previous >= shared.max_connections {
            shared.active.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        shared
            .metrics
            .connections_active
            .get_or_create(&DirectionLabels { direction })
            .inc();
        Some(ConnGuard {
            shared: shared.clone(),
            direction,
        })
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.shared.active.fetch_sub(1, Ordering::AcqRel);
        self.shared
            .metrics
            .connections_active
            .get_or_create(&DirectionLabels {
                direction: self.direction,
            })
            .dec();
    }
}

/// The address the client connected to before iptables redirected it.
pub fn original_dst(stream: &TcpStream) -> std::io::Result<SocketAddr> {
    let sock = socket2::SockRef::from(stream);
    let local = stream.local_addr()?;
    let addr = if local.is_ipv4() || is_v4_mapped(local.ip()) {
        sock.original_dst_v4()?
    } else {
        sock.original_dst_v6()?
    };
    addr.as_socket().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "original destination is not IP",
        )
    })
}

fn is_v4_mapped(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some())
}

async fn handle(
    shared: &Arc<ProxyState>,
    mut stream: TcpStream,
    client: SocketAddr,
    kind: ListenerKind,
    local: Option<SocketAddr>,
    worker: usize,
    events: &Arc<ConnEvents>,
) -> Result<(), ConnError> {
    let _ = stream.set_nodelay(true);
    let direction = kind.direction();
    let (original_dst, forward_to) = match kind {
        ListenerKind::Standalone { upstream } => (upstream, upstream),
        ListenerKind::InboundCapture | ListenerKind::OutboundCapture => {
            let dst = original_dst(&stream).map_err(ConnError::OriginalDst)?;
            // Without a redirect the "original" destination is the capture
            // port itself; connecting there would loop forever.
            if Some(dst) == local
                || (local.is_some_and(|l| l.port() == dst.port()) && is_local(&stream, dst))
            {
                return Err(ConnError::Loop(dst));
            }
            if kind == ListenerKind::InboundCapture {
                (
                    dst,
                    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), dst.port()),
                )
            } else {
                (dst, dst)
            }
        }
    };

    let conn = effects::conn_info(direction, client, original_dst);
    let mut limits = Limits::default();
    let mut reset_after = None;
    let at_open = effects::connection_fault(&shared.store, &conn);
    if let AtOpen::Decided(Some(injected)) = at_open.clone() {
        match apply_conn_fault(shared, injected, client, &mut limits, &mut reset_after).await {
            Next::Continue => {}
            end => {
                end_connection(shared, end, stream).await;
                return Ok(());
            }
        }
    }

    let detect_until = tokio::time::Instant::now() + REQUEST_LINE_TIMEOUT;
    let mut sniffed = sniff(&mut stream, shared.detect_timeout)
        .await
        .map_err(ConnError::Detect)?;
    if sniffed.closed {
        return Ok(());
    }
    let protocol = match sniffed.protocol {
        Detected::Http1 => Protocol::Http1,
        Detected::Http2 => Protocol::Http2,
        Detected::Tls => Protocol::Tls,
        Detected::Tcp => Protocol::Tcp,
    };
    // Only read the whole ClientHello when a rule asks for the name.
    // Boxed: the read's state would otherwise be part of every
    // connection's task.
    let mut sni = None;
    if protocol == Protocol::Tls && effects::needs_sni(&shared.store, &conn) {
        let prefix = std::mem::take(&mut sniffed.prefix);
        let read = client_hello::read(&mut stream, prefix, shared.detect_timeout, detect_until);
        let (prefix, name) = Box::pin(read).await.map_err(ConnError::Detect)?;
        sniffed.prefix = prefix;
        sni = name;
    }
    let tls = (protocol == Protocol::Tls).then_some(TlsInfo {
        sni: sni.as_deref(),
    });
    if at_open == AtOpen::AfterDetection
        && let Some(injected) = effects::connection_fault_after_detection(&shared.store, &conn, tls)
    {
        match apply_conn_fault(shared, injected, client, &mut limits, &mut reset_after).await {
            Next::Continue => {}
            end => {
                end_connection(shared, end, stream).await;
                return Ok(());
            }
        }
    }
    shared
        .metrics
        .connections
        .get_or_create(&TrafficLabels {
            direction,
            protocol,
        })
        .inc();
    let tcp_fault = match (protocol, tls) {
        (Protocol::Tcp, _) => effects::tcp_fault(&shared.store, &conn),
        (Protocol::Tls, Some(tls)) => effects::tls_fault(&shared.store, &conn, tls),
        _ => None,
    };
    if let Some(injected) = tcp_fault {
        match apply_conn_fault(shared, injected, client, &mut limits, &mut reset_after).await {
            Next::Continue => {}
            end => {
                end_connection(shared, end, stream).await;
                return Ok(());
            }
        }
    }
    let reset = ResetFlag::default();
    let ctx = Arc::new(ConnCtx {
        shared: shared.clone(),
        direction,
        client,
        original_dst,
        forward_to,
        forward_authority: authority_of(forward_to),
        protocol,
        worker,
        requests: OnceLock::new(),
        upstream_latency: OnceLock::new(),
        relayed: OnceLock::new(),
        reset: reset.clone(),
        events: events.clone(),
        throttle: Mutex::new(None),
    });
    let done = CancellationToken::new();
    if let Some(after) = reset_after {
        let (ctx, done) = (ctx.clone(), done.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(after) => ctx.kill(),
                // The connection ended on its own first.
                () = done.cancelled() => {}
            }
        });
    }
    let io = ClientIo::new(stream, sniffed.prefix, reset, limits);
    match protocol {
        Protocol::Http1 | Protocol::Http2 | Protocol::Grpc => {
            crate::traffic::http::serve(shared.clone(), ctx, io).await
        }
        // Boxed: the copy's state would otherwise be part of every
        // connection's task, idle HTTP/1.1 ones too.
        Protocol::Tcp | Protocol::Tls => {
            Box::pin(crate::traffic::tcp::forward(shared, &ctx, io)).await
        }
    }
    // Ends the reset timer; the ClientIo is already dropped.
    done.cancel();
    Ok(())
}

enum Next {
    Continue,
    Reset,
    Blackhole,
}

/// Finishes a connection a connection-level fault took over.
async fn end_connection(shared: &Arc<ProxyState>, end: Next, stream: TcpStream) {
    match end {
        Next::Reset => crate::traffic::client_io::reset(stream),
        // Boxed: its 4 KiB sink would otherwise be part of every
        // connection's task.
        Next::Blackhole => Box::pin(crate::traffic::tcp::blackhole(shared, stream)).await,
        Next::Continue => {}
    }
}

/// Counts and logs a connection-level fault and says what to do next;
/// delays are slept here, byte-level faults go into `limits`.
async fn apply_conn_fault(
    shared: &ProxyState,
    injected: Injected<ConnFault>,
    client: SocketAddr,
    limits: &mut Limits,
    reset_after: &mut Option<Duration>,
) -> Next {
    shared.metrics.fault(&injected.rule, injected.kind);
    tracing::debug!(rule = %injected.rule, kind = injected.kind, %client, "connection fault injected");
    match injected.fault {
        ConnFault::Reject => return Next::Reset,
        ConnFault::Drop => return Next::Blackhole,
        ConnFault::Delay(delay) => tokio::time::sleep(delay).await,
        ConnFault::Shape { request, response } => {
            limits.request = request;
            limits.response = response;
        }
        ConnFault::ResetAfter { bytes, after } => {
            limits.reset_after_bytes = bytes;
            *reset_after = after;
        }
    }
    Next::Continue
}

fn authority_of(addr: SocketAddr) -> http::uri::Authority {
    // A socket address always formats as a valid authority (`[v6]:port`).
    http::uri::Authority::try_from(addr.to_string())
        .unwrap_or_else(|_| http::uri::Authority::from_static("127.0.0.1"))
}

/// Whether `dst` is one of this host's addresses (then a connection to the
/// capture port was not redirected but addressed to the proxy directly).
fn is_local(stream: &TcpStream, dst: SocketAddr) -> bool {
    dst.ip().is_loopback() || stream.local_addr().is_ok_and(|l| l.ip() == dst.ip())
}
