//! One client connection: TLS handshake, then HTTP/1 or HTTP/2 as ALPN
//! chose (no protocol sniffing, so nothing waits on bytes without a
//! deadline), with the per-phase deadlines of [`ServeOptions`].
//!
//! Requests are counted per connection ([`Activity`]): a request is in
//! flight from its headers until its response body is done or dropped, so a
//! policy stream keeps its connection while a connection with nothing in
//! flight is closed after `first_request_timeout` (none yet) or
//! `idle_timeout` (after one).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::ServeOptions;
use super::direct::{self, Rewind, Sniffed};
use crate::metrics::{ConnMetrics, Phase, WarnEvery};

/// After a deadline asked a connection to close, how long it may take.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// What every connection task shares.
pub(super) struct Shared {
    pub acceptor: TlsAcceptor,
    pub h1: auto::Builder<TokioExecutor>,
    pub h2: auto::Builder<TokioExecutor>,
    pub app: Router,
    /// Graceful: finish what is in flight, then close.
    pub shutdown: CancellationToken,
    /// After the drain timeout: drop at once.
    pub kill: CancellationToken,
    pub warn: WarnEvery,
    pub options: ServeOptions,
}

impl Shared {
    /// Count a deadline that passed and say so (rate-limited: hostile
    /// clients come in crowds). Idle closes are routine, hence debug.
    fn timed_out(&self, phase: Phase, peer: SocketAddr) {
        self.options.metrics.timeout(phase);
        if phase == Phase::Idle {
            tracing::debug!(%peer, "closing an idle connection");
            return;
        }
        if let Some(suppressed) = self.warn.check() {
            tracing::warn!(
                %peer,
                phase = phase.as_str(),
                suppressed,
                "client too slow: deadline passed, closing its connection"
            );
        }
    }
}

/// The body deadline passed before the whole request body arrived.
#[derive(Debug, thiserror::Error)]
#[error("failed to read the request body: its deadline passed")]
pub struct BodyDeadline;

/// Serve one accepted connection; its slot is freed when this returns.
pub(super) async fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
    shared: Arc<Shared>,
) {
    let _permit = permit;
    let open = &shared.options.metrics.open;
    open.inc();
    let _open = scopeguard(|| {
        open.dec();
    });
    let handshake = tokio::time::timeout(
        shared.options.handshake_timeout,
        shared.acceptor.accept(tcp),
    );
    let tls = tokio::select! {
        () = shared.kill.cancelled() => return,
        result = handshake => match result {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                tracing::debug!(%peer, %error, "TLS handshake failed");
                return;
            }
            Err(_) => return shared.timed_out(Phase::Handshake, peer),
        },
    };
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let mut tls = tls;
    let prefix = if h2 || shared.options.direct_paths.is_empty() {
        Bytes::new()
    } else {
        // The head of the first request is bound by both deadlines.
        let options = &shared.options;
        let limit = options
            .first_request_timeout
            .min(options.header_read_timeout);
        let mut buf = bytes::BytesMut::with_capacity(2048);
        let sniffed = tokio::time::timeout(
            limit,
            direct::sniff(&mut tls, &mut buf, options.direct_paths, super::H1_MAX_BUF),
        );
        let sniffed = tokio::select! {
            () = shared.kill.cancelled() => return,
            sniffed = sniffed => sniffed,
        };
        match sniffed {
            Err(_) if buf.is_empty() => return shared.timed_out(Phase::FirstRequest, peer),
            Err(_) => return shared.timed_out(Phase::Headers, peer),
            Ok(Err(error)) => {
                tracing::debug!(%peer, %error, "connection ended before its first request");
                return;
            }
            Ok(Ok(Sniffed::Direct(request))) => {
                let served = direct::serve(&mut tls, shared.app.clone(), request, &shared.kill);
                if let Err(error) = served.await {
                    tracing::debug!(%peer, %error, "connection ended with an error");
                }
                return;
            }
            Ok(Ok(Sniffed::Hyper(prefix))) => prefix,
        }
    };
    // Boxed: a direct stream's task then holds none of hyper's state.
    Box::pin(serve_hyper(Rewind::new(prefix, tls), h2, peer, &shared)).await;
}

/// Serve a connection with hyper (everything but the direct paths).
async fn serve_hyper(
    io: Rewind<TlsStream<TcpStream>>,
    h2: bool,
    peer: SocketAddr,
    shared: &Shared,
) {
    let activity = Activity::default();
    let service = TowerToHyperService::new(Tracked {
        app: shared.app.clone(),
        activity: activity.clone(),
        body_timeout: shared.options.body_timeout,
        metrics: shared.options.metrics.clone(),
        warn: shared.warn.clone(),
        peer,
    });
    let builder = if h2 { &shared.h2 } else { &shared.h1 };
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    drive(conn, &activity, shared, peer).await;
}

type Conn<'a> = auto::UpgradeableConnection<
    'a,
    TokioIo<Rewind<TlsStream<TcpStream>>>,
    TowerToHyperService<Tracked>,
    TokioExecutor,
>;

/// Run the connection until it ends, closing it when a deadline passes or
/// on shutdown.
async fn drive(conn: Conn<'_>, activity: &Activity, shared: &Shared, peer: SocketAddr) {
    let mut conn = pin!(conn);
    let options = &shared.options;
    let mut idle = pin!(activity.idle(options.first_request_timeout, options.idle_timeout));
    let mut grace = pin!(tokio::time::sleep(Duration::MAX));
    let mut closing = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => return ended(result, shared, peer),
            phase = &mut idle, if !closing => {
                shared.timed_out(phase, peer);
                conn.as_mut().graceful_shutdown();
                grace.as_mut().reset(Instant::now() + CLOSE_GRACE);
                closing = true;
            }
            () = shared.shutdown.cancelled(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            () = &mut grace, if closing => return,
            () = shared.kill.cancelled() => return,
        }
    }
}

fn ended(
    result: Result<(), Box<dyn std::error::Error + Send + Sync>>,
    shared: &Shared,
    peer: SocketAddr,
) {
    let Err(error) = result else {
        return;
    };
    let header_timeout = error
        .downcast_ref::<hyper::Error>()
        .is_some_and(hyper::Error::is_timeout);
    if header_timeout {
        shared.timed_out(Phase::Headers, peer);
    } else {
        tracing::debug!(%peer, %error, "connection ended with an error");
    }
}

/// Runs a closure on drop (a gauge decrement on every exit path).
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

/// Requests of one connection: how many are in flight, how many started.
#[derive(Clone, Default)]
struct Activity(Arc<watch::Sender<Counts>>);

#[derive(Clone, Copy, Default)]
struct Counts {
    in_flight: usize,
    started: u64,
}

impl Activity {
    fn start(&self) -> InFlight {
        self.0.send_modify(|c| {
            c.in_flight += 1;
            c.started += 1;
        });
        InFlight(self.clone())
    }

    /// Resolves once nothing has been in flight for the deadline of the
    /// phase the connection is in, naming that phase.
    async fn idle(&self, first_request: Duration, idle: Duration) -> Phase {
        let mut changes = self.0.subscribe();
        loop {
            let counts = *changes.borrow_and_update();
            if counts.in_flight > 0 {
                if changes.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
                continue;
            }
            let (limit, phase) = if counts.started == 0 {
                (first_request, Phase::FirstRequest)
            } else {
                (idle, Phase::Idle)
            };
            tokio::select! {
                () = tokio::time::sleep(limit) => return phase,
                changed = changes.changed() => if changed.is_err() {
                    std::future::pending::<()>().await;
                },
            }
        }
    }
}

/// One request in flight, until dropped with its response body.
struct InFlight(Activity);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0
            .0
            .send_modify(|c| c.in_flight = c.in_flight.saturating_sub(1));
    }
}

/// The router behind request counting and the body deadline.
#[derive(Clone)]
struct Tracked {
    app: Router,
    activity: Activity,
    body_timeout: Duration,
    metrics: ConnMetrics,
    warn: WarnEvery,
    peer: SocketAddr,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl tower::Service<Request<Incoming>> for Tracked {
    type Response = Response<Counted>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Incoming>) -> Self::Future {
        let in_flight = self.activity.start();
        let deadline = Instant::now() + self.body_timeout;
        let (metrics, warn, peer) = (self.metrics.clone(), self.warn.clone(), self.peer);
        let request = request.map(|body| {
            Body::new(TimedBody {
                inner: body,
                deadline,
                sleep: None,
                fired: false,
                metrics,
                warn,
                peer,
            })
        });
        let response = self.app.clone().oneshot(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| Counted {
                inner: body,
                _in_flight: in_flight,
            }))
        })
    }
}

/// A response body that keeps its request counted in flight until it is
/// done or dropped (a policy stream's lasts hours).
struct Counted {
    inner: Body,
    _in_flight: InFlight,
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body that fails with [`BodyDeadline`] once the whole body has
/// not arrived by its deadline. The timer is only made for a body that
/// makes a reader wait.
struct TimedBody {
    inner: Incoming,
    deadline: Instant,
    sleep: Option<Pin<Box<Sleep>>>,
    fired: bool,
    metrics: ConnMetrics,
    warn: WarnEvery,
    peer: SocketAddr,
}

impl http_body::Body for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.fired {
            return Poll::Ready(Some(Err(Box::new(BodyDeadline))));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => return Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => {}
        }
        let deadline = this.deadline;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        this.fired = true;
        this.metrics.timeout(Phase::Body);
        if let Some(suppressed) = this.warn.check() {
            tracing::warn!(
                peer = %this.peer,
                phase = Phase::Body.as_str(),
                suppressed,
                "client too slow: request body deadline passed"
            );
        }
        Poll::Ready(Some(Err(Box::new(BodyDeadline))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
