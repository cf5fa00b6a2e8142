//! HTTP/1.1 connections that hold no buffers while idle.
//!
//! A hyper connection keeps an 8 KiB read buffer and an 8 KiB write buffer
//! for as long as it lives: most of what an idle keep-alive connection cost
//! (16 of its 19 KiB). So once an exchange is over and hyper has waited for
//! the next request head, with nothing left to write, for a clock tick (1 to
//! 2 s: a busy connection is never taken apart between two requests, which
//! would cost an allocation and a rebuild per request), the hyper connection is
//! taken apart (its buffers freed; whatever it had read ahead is kept and
//! replayed) and the socket alone waits for the client; when the client
//! sends again, a new hyper connection carries on. Taking it apart is only
//! safe at that point, which [`Activity`] and hyper's header-read deadline
//! tell from outside hyper: no response unfinished, nothing unflushed, and
//! hyper reading a new head (so the previous request's body is consumed).
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use http::Request;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::relay::{Relay, Step};
use super::response::is_upgrade;
use super::{HEADER_READ_TIMEOUT, MAX_HEADER_BYTES};
use crate::body::{BoxError, ProxyBody};
use crate::clock::HeaderTimer;
use crate::conn::ConnCtx;
use crate::events::{DRAIN, KILL, STOP};
use crate::metrics::DirectionLabels;
use crate::traffic::client_io::ClientIo;

/// What the serving loop must know about a hyper connection it cannot look
/// into. One connection's task touches it, so ordering is relaxed.
#[derive(Default)]
struct Activity {
    /// Requests whose response hyper has not finished with.
    open: AtomicUsize,
    /// Exchanges finished since the hyper connection was built: a new one
    /// is not taken apart before it has served something (a partial head
    /// replayed into it would otherwise go round in circles).
    finished: AtomicUsize,
    /// Bytes written to the socket since its last completed flush.
    unflushed: AtomicBool,
    /// An upgrade was asked for: hyper hands the socket over, never park.
    pinned: AtomicBool,
}

impl Activity {
    fn idle(&self, timer: &HeaderTimer) -> bool {
        self.finished.load(Ordering::Relaxed) > 0
            && self.open.load(Ordering::Relaxed) == 0
            && !self.unflushed.load(Ordering::Relaxed)
            && !self.pinned.load(Ordering::Relaxed)
            // hyper arms its deadline only when it waits for a new head.
            && timer.armed()
    }
}

/// Serves one HTTP/1.1 client connection until it closes, the proxy
/// drains, or a reset fault kills it.
pub(super) async fn serve(ctx: Arc<ConnCtx>, mut io: ClientIo) -> hyper::Result<()> {
    let activity = Arc::new(Activity::default());
    let timer = HeaderTimer::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(timer.clone())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES);
    let parked = ctx
        .shared
        .metrics
        .connections_parked
        .get_or_create(&DirectionLabels {
            direction: ctx.direction,
        })
        .clone();
    let mut service = {
        let (ctx, activity) = (ctx.clone(), activity.clone());
        service_fn(move |req: Request<Incoming>| {
            if is_upgrade(req.headers()) {
                activity.pinned.store(true, Ordering::Relaxed);
            }
            let open = Open::new(activity.clone());
            let response = super::service::handle(ctx.clone(), req);
            async move {
                let response = response.await?;
                Ok::<_, std::convert::Infallible>(
                    response.map(|body| Tracked { body, _open: open }),
                )
            }
        })
    };
    let mut relay = Relay::default();
    loop {
        match relay.next(&ctx, &mut io, &timer, &parked).await {
            Step::Next => continue,
            Step::Close => return Ok(()),
            Step::Hyper(read) => io.replay(read),
        }
        activity.finished.store(0, Ordering::Relaxed);
        let watched = Watched {
            io,
            activity: activity.clone(),
        };
        let conn = builder
            .serve_connection(TokioIo::new(watched), service)
            .with_upgrades();
        // Boxed: the hyper connection's state is then only allocated while
        // it lives, not for as long as the connection's task.
        let parts = match Box::pin(drive(conn, &ctx, &activity, &timer)).await {
            Driven::Done(result) => return result,
            Driven::Idle(parts) => parts,
        };
        io = parts.io.into_inner().io;
        service = parts.service;
        // The next request (or part of it) may already be here; the relay
        // waits for the rest, parked once idle.
        io.replay(parts.read_buf);
    }
}

enum Driven<P> {
    Done(hyper::Result<()>),
    Idle(P),
}

/// Polls a hyper connection until it ends or goes idle; on drain asks it
/// to finish in-flight requests and close; on a reset fault drops it at
/// once (dropping the connection closes it with RST).
async fn drive<S>(
    conn: http1::UpgradeableConnection<TokioIo<Watched>, S>,
    ctx: &ConnCtx,
    activity: &Activity,
    timer: &HeaderTimer,
) -> Driven<http1::Parts<TokioIo<Watched>, S>>
where
    S: hyper::service::HttpService<Incoming, ResBody = Tracked> + Unpin,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    let mut conn = Some(conn);
    let mut draining = false;
    let idle = poll_fn(|cx| {
        let Some(live) = conn.as_mut() else {
            return Poll::Ready(Some(Ok(())));
        };
        let mask = if draining {
            KILL | STOP
        } else {
            DRAIN | KILL | STOP
        };
        if let Poll::Ready(flags) = ctx.events.poll_raised(cx, mask) {
            if flags & (KILL | STOP) != 0 {
                return Poll::Ready(Some(Ok(())));
            }
            draining = true;
            Pin::new(&mut *live).graceful_shutdown();
        }
        match Pin::new(live).poll(cx) {
            Poll::Ready(result) => Poll::Ready(Some(result)),
            // A drained connection closes once idle: hyper does that.
            Poll::Pending if !draining && activity.idle(timer) && timer.idle_a_tick() => {
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    })
    .await;
    match (
        idle,
        conn.and_then(http1::UpgradeableConnection::into_parts),
    ) {
        (None, Some(parts)) => Driven::Idle(parts),
        (Some(result), _) => Driven::Done(result),
        (None, None) => Driven::Done(Ok(())),
    }
}

/// Counts a request until hyper is done with its response.
struct Open {
    activity: Arc<Activity>,
}

impl Open {
    fn new(activity: Arc<Activity>) -> Self {
        activity.open.fetch_add(1, Ordering::Relaxed);
        Open { activity }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.activity.open.fetch_sub(1, Ordering::Relaxed);
        self.activity.finished.fetch_add(1, Ordering::Relaxed);
    }
}

/// A response body that counts as open until hyper drops it (at its end,
/// or when the client goes).
struct Tracked {
    body: ProxyBody,
    _open: Open,
}

impl Body for Tracked {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The client socket as hyper sees it, telling [`Activity`] whether all
/// that was written has been flushed.
struct Watched {
    io: ClientIo,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.activity.unflushed.store(true, Ordering::Relaxed);
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.activity.unflushed.store(true, Ordering::Relaxed);
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let flushed = Pin::new(&mut self.io).poll_flush(cx);
        if let Poll::Ready(Ok(())) = flushed {
            self.activity.unflushed.store(false, Ordering::Relaxed);
        }
        flushed
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
