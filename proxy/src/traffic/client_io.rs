//! The client side of a proxied connection as hyper and the TCP copier see
//! it: a `TcpStream` that first replays the bytes protocol detection already
//! read, that closes with a TCP RST (SO_LINGER 0) instead of a FIN when a
//! reset fault asked for it, and that applies the connection-level faults
//! that act on bytes ([`Limits`]: bandwidth, slicer, limitData, slowClose,
//! reset after N bytes) the same way for HTTP and raw TCP.
//!
//! Reading from the client socket is the request side of the connection,
//! writing to it the response side.
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::conn::ResetFlag;

mod pacer;

pub use pacer::{Shape, Slice};

use pacer::Pacer;

/// Byte-level faults on a client connection.
#[derive(Debug, Default)]
pub struct Limits {
    /// What the client sends.
    pub request: Shape,
    /// What the client receives.
    pub response: Shape,
    /// Reset once this many bytes (both directions) went through.
    pub reset_after_bytes: Option<u64>,
}

impl Limits {
    fn is_empty(&self) -> bool {
        self.request.is_empty() && self.response.is_empty() && self.reset_after_bytes.is_none()
    }
}

pub struct ClientIo {
    stream: TcpStream,
    prefix: Bytes,
    reset: ResetFlag,
    /// `None` for the many connections without byte-level faults: they pay
    /// a pointer and a branch per call, not the faults' state.
    faults: Option<Box<Faults>>,
}

struct Faults {
    read: Pacer,
    write: Pacer,
    /// Bytes left before the reset fault fires (both directions).
    budget: Option<u64>,
}

impl ClientIo {
    pub fn new(stream: TcpStream, prefix: Bytes, reset: ResetFlag, limits: Limits) -> Self {
        let faults = (!limits.is_empty()).then(|| {
            Box::new(Faults {
                read: Pacer::new(limits.request),
                write: Pacer::new(limits.response),
                budget: limits.reset_after_bytes,
            })
        });
        ClientIo {
            stream,
            prefix,
            reset,
            faults,
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

    /// [`Self::readable`] as a poll, for a caller that waits on more.
    pub fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.prefix.is_empty() {
            self.stream.poll_read_ready(cx)
        } else {
            Poll::Ready(Ok(()))
        }
    }

    /// Reads at most `limit` bytes: the replayed prefix first, then the
    /// socket. Returns how many were read (0 at the end of the stream).
    fn poll_read_at_most(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
        limit: usize,
    ) -> Poll<io::Result<usize>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(limit).min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            if self.prefix.is_empty() {
                // An emptied `Bytes` still holds its whole allocation (the
                // detection buffer): let it go for the connection's life.
                self.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(n));
        }
        let before = buf.filled().len();
        if limit >= buf.remaining() {
            ready!(Pin::new(&mut self.stream).poll_read(cx, buf))?;
            return Poll::Ready(Ok(buf.filled().len() - before));
        }
        // Read no more than `limit`, through a window over `buf`.
        let mut limited = ReadBuf::new(buf.initialize_unfilled_to(limit));
        ready!(Pin::new(&mut self.stream).poll_read(cx, &mut limited))?;
        let n = limited.filled().len();
        buf.advance(n);
        Poll::Ready(Ok(n))
    }
}

impl Faults {
    /// Fails once the reset budget is spent: the connection is marked for
    /// RST and every further I/O fails.
    fn check_budget(&self, reset: &ResetFlag) -> io::Result<()> {
        if self.budget == Some(0) {
            reset.set();
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "reset fault: byte budget spent",
            ));
        }
        Ok(())
    }

    /// `want` cut to what the reset budget and the side's limit allow.
    fn allowed(&self, pacer: &Pacer, want: usize) -> usize {
        [self.budget, pacer.left()]
            .into_iter()
            .flatten()
            .fold(want, |w, left| {
                w.min(usize::try_from(left).unwrap_or(usize::MAX))
            })
    }

    fn spend(&mut self, n: usize) {
        if let Some(budget) = self.budget.as_mut() {
            *budget = budget.saturating_sub(n as u64);
        }
    }
}

/// The limitData fault ends the connection: the copier (or hyper) stops
/// on this error and drops both sockets, an orderly close.
fn limit_reached(side: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        format!("limitData fault: the {side} side's byte limit is reached"),
    )
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

impl Drop for ClientIo {
    fn drop(&mut self) {
        if self.reset.is_set() {
            set_linger_zero(&self.stream);
        }
    }
}

impl AsyncRead for ClientIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let Some(mut faults) = this.faults.take() else {
            return this.poll_read_at_most(cx, buf, usize::MAX).map_ok(|_| ());
        };
        let result = this.poll_read_faulted(&mut faults, cx, buf);
        this.faults = Some(faults);
        result
    }
}

impl ClientIo {
    fn poll_read_faulted(
        &mut self,
        faults: &mut Faults,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        faults.check_budget(&self.reset)?;
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if faults.read.left() == Some(0) {
            return Poll::Ready(Err(limit_reached("request")));
        }
        let want = faults.allowed(&faults.read, buf.remaining());
        let grant = ready!(faults.read.poll_grant(cx, want));
        let n = ready!(self.poll_read_at_most(cx, buf, grant))?;
        if n == 0 {
            // The client closed its side: pass that on late (slowClose).
            ready!(faults.read.poll_hold_close(cx));
            return Poll::Ready(Ok(()));
        }
        faults.read.moved(n);
        faults.spend(n);
        Poll::Ready(Ok(()))
    }

    fn poll_write_faulted(
        &mut self,
        faults: &mut Faults,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        faults.check_budget(&self.reset)?;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if faults.write.left() == Some(0) {
            return Poll::Ready(Err(limit_reached("response")));
        }
        let want = faults.allowed(&faults.write, buf.len());
        let grant = ready!(faults.write.poll_grant(cx, want));
        let n = ready!(Pin::new(&mut self.stream).poll_write(cx, &buf[..grant]))?;
        faults.write.moved(n);
        faults.spend(n);
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let Some(mut faults) = this.faults.take() else {
            return Pin::new(&mut this.stream).poll_write(cx, buf);
        };
        let result = this.poll_write_faulted(&mut faults, cx, buf);
        this.faults = Some(faults);
        result
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.faults.is_none() {
            return Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        }
        let first = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &b[..]);
        self.poll_write(cx, first)
    }
    fn is_write_vectored(&self) -> bool {
        self.faults.is_none() && self.stream.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(Pin::new(&mut self.stream).poll_flush(cx))?;
        // The limit is reached with the last byte, not with the next
        // write: a peer that sends exactly N bytes and waits is cut too.
        let spent = self
            .faults
            .as_ref()
            .is_some_and(|f| f.write.left() == Some(0));
        if spent || self.reset.closing_after_flush() {
            return Poll::Ready(Err(limit_reached("response")));
        }
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(faults) = self.faults.as_mut() {
            // The upstream closed its side: pass that on late (slowClose).
            ready!(faults.write.poll_hold_close(cx));
        }
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Connections without byte-level faults pay for them with one
    /// pointer: the socket, the replayed prefix, the close flag and the
    /// (null) box of faults.
    #[test]
    fn a_connection_without_faults_carries_one_pointer_for_them() {
        let bare = size_of::<TcpStream>() + size_of::<Bytes>() + size_of::<ResetFlag>();
        assert_eq!(size_of::<ClientIo>(), bare + size_of::<usize>());
    }
}
