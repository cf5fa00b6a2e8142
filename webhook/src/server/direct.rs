//! Long-lived HTTP/1.1 responses served on the TLS connection directly.
//!
//! A policy stream is one `GET` whose response lasts hours. Behind hyper it
//! kept hyper's 8 KiB read and 8 KiB write buffers, its connection state and
//! the request-tracking layers for as long as it lived: at ten thousand
//! streams, most of the controller's memory. Here the request head is read
//! into a buffer that is freed as soon as it is parsed, the router is called
//! as usual, and the response is written by hand: a head, then each body
//! frame as one chunk, so a stream holds nothing but its TLS session and
//! the body's own state.
//!
//! Only a `GET` without a body, whose path is one of
//! [`ServeOptions::direct_paths`](super::ServeOptions::direct_paths), is
//! served here; anything else (and anything malformed, too large or cut
//! short) is handed to hyper with the bytes already read, so hyper's
//! parsing, limits and error answers apply to it unchanged.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, Version, header};
use bytes::{Buf, Bytes, BytesMut};
use http_body::Body as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Headers a request may carry on this path.
const MAX_HEADERS: usize = 32;

/// What the first bytes of a connection turned out to be.
pub(super) enum Sniffed {
    /// A request to serve here.
    Direct(Box<Request<Body>>),
    /// Anything else: hyper serves it, starting with these bytes.
    Hyper(Bytes),
}

/// Read into `buf` until the request line says where the request goes and,
/// for a direct path, until its head is complete; at most `max` bytes.
pub(super) async fn sniff<IO: AsyncRead + Unpin>(
    io: &mut IO,
    buf: &mut BytesMut,
    paths: &[&str],
    max: usize,
) -> io::Result<Sniffed> {
    loop {
        if buf.len() >= max || io.read_buf(buf).await? == 0 {
            return Ok(Sniffed::Hyper(std::mem::take(buf).freeze()));
        }
        match classify(buf, paths) {
            Some(Decision::Hyper) => return Ok(Sniffed::Hyper(std::mem::take(buf).freeze())),
            Some(Decision::Direct(request)) => return Ok(Sniffed::Direct(request)),
            None => {}
        }
    }
}

enum Decision {
    Direct(Box<Request<Body>>),
    Hyper,
}

/// Pure: where a request starting with `buf` goes, or `None` if more bytes
/// are needed to know.
fn classify(buf: &[u8], paths: &[&str]) -> Option<Decision> {
    let line_end = buf.windows(2).position(|w| w == b"\r\n")?;
    let line = buf.get(..line_end)?;
    let mut parts = line.split(|b| *b == b' ');
    let (method, target) = (parts.next()?, parts.next().unwrap_or_default());
    let path = target.split(|b| *b == b'?').next().unwrap_or_default();
    let direct = method == b"GET" && paths.iter().any(|p| p.as_bytes() == path);
    if !direct {
        return Some(Decision::Hyper);
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(buf) {
        Ok(httparse::Status::Partial) => None,
        Ok(httparse::Status::Complete(_)) => {
            Some(request(&parsed).map_or(Decision::Hyper, Decision::Direct))
        }
        Err(_) => Some(Decision::Hyper),
    }
}

/// The parsed head as a request with no body; `None` (hyper answers it) for
/// HTTP/1.0, a body, or a head `http` will not take.
fn request(parsed: &httparse::Request<'_, '_>) -> Option<Box<Request<Body>>> {
    if parsed.version != Some(1) {
        return None;
    }
    let mut builder = Request::builder()
        .method(Method::GET)
        .uri(parsed.path?)
        .version(Version::HTTP_11);
    for h in parsed.headers.iter() {
        let name = h.name.to_ascii_lowercase();
        let empty_body = h.value.iter().all(u8::is_ascii_whitespace) || h.value == b"0";
        if (name == "content-length" && !empty_body) || name == "transfer-encoding" {
            return None;
        }
        builder = builder.header(h.name, h.value);
    }
    builder.body(Body::empty()).ok().map(Box::new)
}

/// Answer `request` with `app` and write the response on `io`; returns when
/// the response is done, the client has gone, or `kill` fires.
pub(super) async fn serve<IO: AsyncRead + AsyncWrite + Unpin>(
    io: &mut IO,
    app: Router,
    request: Box<Request<Body>>,
    kill: &CancellationToken,
) -> io::Result<()> {
    let Ok(response) = app.oneshot(*request).await;
    let (parts, mut body) = response.into_parts();
    let length = body.size_hint().exact();
    let head = head(&parts, length);
    drop(parts);
    if !send(io, &head, kill).await? {
        return Ok(());
    }
    // Only the client's close is of interest; what it sends is discarded.
    let mut scratch = [0u8; 64];
    loop {
        tokio::select! {
            frame = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)) => match frame {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data()
                        && !data.is_empty()
                        && !send(io, &chunk(&data, length.is_none()), kill).await?
                    {
                        return Ok(());
                    }
                }
                // A body that fails mid-way: cut the connection, so the
                // client cannot take a truncated body for a whole one.
                Some(Err(_)) => return Ok(()),
                None => break,
            },
            read = io.read(&mut scratch) => if read? == 0 {
                return Ok(());
            },
            () = kill.cancelled() => return Ok(()),
        }
    }
    if length.is_none() && !send(io, b"0\r\n\r\n", kill).await? {
        return Ok(());
    }
    io.shutdown().await
}

/// Write and flush `bytes`; `false` if `kill` fired first (a client that
/// stopped reading must not hold the process past its drain).
async fn send<IO: AsyncWrite + Unpin>(
    io: &mut IO,
    bytes: &[u8],
    kill: &CancellationToken,
) -> io::Result<bool> {
    let write = async {
        io.write_all(bytes).await?;
        io.flush().await
    };
    tokio::select! {
        written = write => written.map(|()| true),
        () = kill.cancelled() => Ok(false),
    }
}

/// Pure: the response head. The connection closes after the response, so
/// it says so; a body of unknown length is chunked.
fn head(parts: &axum::http::response::Parts, length: Option<u64>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let reason = parts.status.canonical_reason().unwrap_or("");
    out.extend_from_slice(format!("HTTP/1.1 {} {reason}\r\n", parts.status.as_u16()).as_bytes());
    for (name, value) in &parts.headers {
        if name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || name == header::CONNECTION
        {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match length {
        Some(n) => out.extend_from_slice(format!("content-length: {n}\r\n").as_bytes()),
        None => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"connection: close\r\n\r\n");
    out
}

/// Pure: one body frame as written: a chunk, or the bytes themselves when
/// the length was announced. One buffer, so one TLS record per frame.
fn chunk(data: &[u8], chunked: bool) -> Vec<u8> {
    if !chunked {
        return data.to_vec();
    }
    let size = format!("{:x}\r\n", data.len());
    let mut out = Vec::with_capacity(size.len() + data.len() + 2);
    out.extend_from_slice(size.as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// An IO whose first reads return bytes already read from it: the sniffed
/// start of a connection handed on to hyper.
pub(super) struct Rewind<T> {
    prefix: Bytes,
    inner: T,
}

impl<T> Rewind<T> {
    pub(super) fn new(prefix: Bytes, inner: T) -> Self {
        Self { prefix, inner }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.prefix.has_remaining() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(this.prefix.get(..n).unwrap_or_default());
            this.prefix.advance(n);
            if !this.prefix.has_remaining() {
                // Give the sniffing buffer back rather than hold it as long
                // as the connection.
                this.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
