//! The client side of a proxied connection as hyper and the TCP copier see
//! it: a `TcpStream` that first replays the bytes protocol detection already
//! read, that closes with a TCP RST (SO_LINGER 0) instead of a FIN when a
//! reset fault asked for it, and that applies the connection-level faults
//! that act on bytes ([`Limits`]: bandwidth, reset after N bytes) the same
//! way for HTTP and raw TCP.
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

use crate::conn::ResetFlag;
use crate::throttle::Throttle;

/// Byte-level faults on a client connection.
#[derive(Debug, Default)]
pub struct Limits {
    /// Bytes per second, each direction.
    pub bandwidth: Option<u64>,
    /// Reset once this many bytes (both directions) went through.
    pub reset_after_bytes: Option<u64>,
}

pub struct ClientIo {
    stream: TcpStream,
    prefix: Bytes,
    reset: ResetFlag,
    read_throttle: Option<(Throttle, Option<Pin<Box<Sleep>>>)>,
    write_throttle: Option<(Throttle, Option<Pin<Box<Sleep>>>)>,
    budget: Option<u64>,
}

impl ClientIo {
    pub fn new(stream: TcpStream, prefix: Bytes, reset: ResetFlag, limits: Limits) -> Self {
        ClientIo {
            stream,
            prefix,
            reset,
            read_throttle: limits.bandwidth.map(|rate| (Throttle::new(rate), None)),
            write_throttle: limits.bandwidth.map(|rate| (Throttle::new(rate), None)),
            budget: limits.reset_after_bytes,
        }
    }

    /// Bytes to hand out before the socket's own: what a previous reader
    /// (an HTTP/1.1 connection taken apart while idle) had read ahead.
    pub fn replay(&mut self, bytes: Bytes) {
        if self.prefix.is_empty() {
            self.prefix = bytes;
        } else if !bytes.is_empty() {
            let mut joined = bytes::BytesMut::with_capacity(self.prefix.len() + bytes.len());
            joined.extend_from_slice(&bytes);
            joined.extend_from_slice(&self.prefix);
            self.prefix = joined.freeze();
        }
    }

    /// Ready when the client sent something (or closed), with no buffer
    /// held while waiting.
    pub async fn readable(&self) -> io::Result<()> {
        if self.prefix.is_empty() {
            self.stream.readable().await
        } else {
            Ok(())
        }
    }

    /// Counts `n` bytes against the reset budget; once it is spent the
    /// connection is marked for RST and every further I/O fails.
    fn spend(&mut self, n: usize) {
        if let Some(budget) = self.budget.as_mut() {
            *budget = budget.saturating_sub(n as u64);
        }
    }

    fn check_budget(&self) -> io::Result<()> {
        if self.budget == Some(0) {
            self.reset.set();
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "reset fault: byte budget spent",
            ));
        }
        Ok(())
    }
}

/// How many bytes a throttled direction may move now (`want` unthrottled).
fn poll_grant(
    throttle: &mut Option<(Throttle, Option<Pin<Box<Sleep>>>)>,
    cx: &mut Context<'_>,
    want: usize,
) -> Poll<usize> {
    let Some((throttle, sleep)) = throttle.as_mut() else {
        return Poll::Ready(want);
    };
    loop {
        if let Some(timer) = sleep.as_mut() {
            std::task::ready!(timer.as_mut().poll(cx));
            *sleep = None;
        }
        match throttle.try_take(want) {
            Ok(n) => return Poll::Ready(n),
            Err(wait) => *sleep = Some(Box::pin(tokio::time::sleep(wait))),
        }
    }
}

impl Drop for ClientIo {
    fn drop(&mut self) {
        if self.reset.is_set() {
            set_linger_zero(&self.stream);
        }
    }
}

/// With SO_LINGER 0, close() sends RST and discards unsent data: the client
/// sees "connection reset by peer", which is what a reset fault promises.
pub fn set_linger_zero(stream: &TcpStream) {
    if let Err(error) = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO)) {
        tracing::debug!(%error, "failed to set SO_LINGER 0; the close will be a FIN");
    }
}

/// Closes `stream` with a RST.
pub fn reset(stream: TcpStream) {
    set_linger_zero(&stream);
    drop(stream);
}

impl AsyncRead for ClientIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check_budget()?;
        let this = &mut *self;
        let mut want = buf.remaining();
        if let Some(budget) = this.budget {
            want = want.min(usize::try_from(budget).unwrap_or(usize::MAX));
        }
        if want == 0 {
            return Poll::Ready(Ok(()));
        }
        let grant = std::task::ready!(poll_grant(&mut this.read_throttle, cx, want));
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(grant);
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            if this.prefix.is_empty() {
                // An emptied `Bytes` still holds its whole allocation (the
                // detection buffer): let it go for the connection's life.
                this.prefix = Bytes::new();
            }
            this.spend(n);
            return Poll::Ready(Ok(()));
        }
        if grant == buf.remaining() {
            let before = buf.filled().len();
            std::task::ready!(Pin::new(&mut this.stream).poll_read(cx, buf))?;
            this.spend(buf.filled().len() - before);
            return Poll::Ready(Ok(()));
        }
        // Read no more than the grant, through a window over `buf`.
        let mut limited = ReadBuf::new(buf.initialize_unfilled_to(grant));
        std::task::ready!(Pin::new(&mut this.stream).poll_read(cx, &mut limited))?;
        let n = limited.filled().len();
        buf.advance(n);
        this.spend(n);
        Poll::Ready(Ok(()))
    }
}

impl ClientIo {
    fn limited(&self) -> bool {
        self.write_throttle.is_some() || self.budget.is_some()
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if !self.limited() {
            return Pin::new(&mut self.stream).poll_write(cx, buf);
        }
        self.check_budget()?;
        let this = &mut *self;
        let mut want = buf.len();
        if let Some(budget) = this.budget {
            want = want.min(usize::try_from(budget).unwrap_or(usize::MAX));
        }
        if want == 0 {
            return Poll::Ready(Ok(0));
        }
        let grant = std::task::ready!(poll_grant(&mut this.write_throttle, cx, want));
        let n = std::task::ready!(Pin::new(&mut this.stream).poll_write(cx, &buf[..grant]))?;
        this.spend(n);
        Poll::Ready(Ok(n))
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if !self.limited() {
            return Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        }
        let first = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &b[..]);
        self.poll_write(cx, first)
    }
    fn is_write_vectored(&self) -> bool {
        !self.limited() && self.stream.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
