//! The HTTP/1.1 relay: the plain, common request carried verbatim, at
//! about what an L4 relay costs, with hyper kept for everything else.
//!
//! Serving a request with hyper means a request object, a `HeaderMap`, a
//! body channel on the server side, and a pooled client connection driven
//! by a task of its own on the upstream side: most of what a proxied
//! request costs. A request that the policy leaves alone (or only delays)
//! needs none of it. For each request of an HTTP/1.1 connection, the relay
//! reads the head with httparse and chooses:
//!
//! - **relay** when the request is unambiguous and needs nothing hyper
//!   does (see `head::request`: HTTP/1.1, origin form, one valid `Host`,
//!   no body, no upgrade, `Expect` or hop-by-hop header but
//!   `Connection: keep-alive`/`close`) and the policy can at most delay it
//!   before sending it, or fault its response without holding the body
//!   (`effects::relay_fault`, asked without drawing first): the head goes
//!   to an upstream connection as the client sent it, and the response
//!   comes back as the upstream sent it, its framing read off the bytes
//!   (`framing`), unless a rule decided on its head changes it
//!   (`respond`);
//! - **hyper** otherwise: the bytes read so far are replayed into a hyper
//!   connection (`keepalive`), which decides and answers as it always has
//!   and, once idle, hands the connection back to the relay.
//!
//! Each exchange takes an upstream connection from the worker's pool
//! (`upstream::RawPool`) and gives it back once its response has ended
//! cleanly, so a client between two requests holds no upstream socket.
//! (Keeping it for the client's next request instead, as an L4 proxy
//! keeps its one, measured no cheaper.)
//! Its buffers, like hyper's, are freed once the connection has been idle
//! for a clock tick. Reads and writes go through [`ClientIo`], so the
//! connection-level faults on bytes keep applying.
use std::future::poll_fn;
use std::pin::Pin;
use std::task::Poll;
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::io::poll_read_buf;

use super::{HEADER_READ_TIMEOUT, MAX_HEADER_BYTES};
use crate::clock::{HeaderSleep, HeaderTimer};
use crate::conn::ConnCtx;
use crate::events::{DRAIN, KILL, STOP};
use crate::metrics::{DirectionLabels, TrafficLabels};
use crate::traffic::client_io::ClientIo;
use crate::traffic::effects::{self, RelayFault};
use crate::upstream::UpstreamError;
use faultline_policy::ResponseInfo;

mod framing;
mod head;
mod respond;
#[cfg(test)]
mod tests;

use framing::{Framing, Malformed};
use head::{BadResponse, Parsed, RequestHead};
use respond::Answer;

/// Each direction's buffer, as hyper's: a request in flight costs no more
/// than on hyper's path. A longer request or response head grows it up to
/// [`MAX_HEADER_BYTES`], as hyper's grows; a request head longer still is
/// handed to hyper, which answers 431.
pub const BUF_SIZE: usize = 8 * 1024;
/// A chunk-size or trailer line must fit in this much.
pub const MAX_LINE: usize = 4 * 1024;

/// What became of one round of the relay.
pub enum Step {
    /// The exchange is over and the connection goes on.
    Next,
    /// hyper serves the request whose bytes (and whatever followed) these are.
    Hyper(Bytes),
    /// The client connection ends.
    Close,
}

/// One client connection's relay state.
#[derive(Default)]
pub struct Relay {
    /// Allocated for the first exchange after an idle period.
    bufs: Option<Box<Buffers>>,
}

struct Buffers {
    /// Bytes from the client not yet relayed (a head, pipelined requests).
    client: BytesMut,
    /// Bytes from the upstream not yet relayed.
    upstream: BytesMut,
}

impl Buffers {
    fn new() -> Box<Self> {
        Box::new(Buffers {
            client: BytesMut::with_capacity(BUF_SIZE),
            upstream: BytesMut::with_capacity(BUF_SIZE),
        })
    }
}

/// An exchange that failed.
#[derive(Debug, thiserror::Error)]
enum Failed {
    #[error(transparent)]
    Connect(UpstreamError),
    /// Writing the request or reading the response head.
    #[error("failed to exchange HTTP/1.1 with upstream")]
    Upstream(#[source] std::io::Error),
    #[error(transparent)]
    BadResponse(#[from] BadResponse),
    #[error("failed to relay the response body")]
    Body(#[source] BodyError),
    #[error("failed to relay the response: the upstream switched protocols unasked")]
    Switched,
    #[error("failed to wait for the response: the client closed")]
    ClientGone(#[source] std::io::Error),
}

/// A body the relay could not carry to its end.
#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error("failed to read from the sender")]
    Read(#[source] std::io::Error),
    #[error("failed to write to the receiver")]
    Write(#[source] std::io::Error),
    #[error("failed to read the body: the sender closed before its end")]
    Cut,
    #[error(transparent)]
    Malformed(#[from] Malformed),
}

impl Relay {
    /// Waits for the next request, and relays it or hands it to hyper.
    pub async fn next(
        &mut self,
        ctx: &ConnCtx,
        io: &mut ClientIo,
        timer: &HeaderTimer,
        parked: &Gauge,
    ) -> Step {
        // The head's deadline runs from the moment the relay waits for it,
        // as hyper's does.
        let mut deadline = timer.deadline(HEADER_READ_TIMEOUT);
        let buffered = self.bufs.as_ref().is_some_and(|b| !b.client.is_empty());
        if !buffered && !self.wait(ctx, io, timer, parked, &mut deadline).await {
            return Step::Close;
        }
        let bufs = self.bufs.get_or_insert_with(Buffers::new);
        let head = loop {
            bufs.client.advance(head::empty_lines(&bufs.client));
            match head::request(&bufs.client, |req| decide(ctx, req)) {
                Parsed::Done(head) => break head,
                Parsed::Refused => return self.hand_to_hyper(),
                // hyper answers 431 to a head it sees reach its bound
                // unfinished; given less, it would take a longer one.
                Parsed::Partial if bufs.client.len() >= MAX_HEADER_BYTES => {
                    return self.hand_to_hyper();
                }
                Parsed::Partial => {}
            }
            // Biased, in the order written: no random draw per wakeup.
            let read = tokio::select! {
                biased;
                read = fill(io, &mut bufs.client, MAX_HEADER_BYTES) => read,
                _ = ctx.events.raised(DRAIN | KILL | STOP) => return Step::Close,
                () = &mut deadline => return Step::Close,
            };
            match read {
                Ok(0) if bufs.client.is_empty() => return Step::Close,
                // Half a head and the end: hyper says what it says to that.
                Ok(0) => return self.hand_to_hyper(),
                Ok(_) => {}
                Err(error) => {
                    tracing::debug!(%error, client = %ctx.client, "failed to read a request head");
                    return Step::Close;
                }
            }
        };
        drop(deadline);
        let step = tokio::select! {
            biased;
            step = self.relay(ctx, io, head) => step,
            // Dropped at once: a reset fault or the end of the drain.
            _ = ctx.events.raised(KILL | STOP) => return Step::Close,
        };
        if ctx.events.is_raised(DRAIN) {
            return Step::Close;
        }
        step
    }

    /// Waits, holding no buffer once idle for a clock tick, for the
    /// client's next bytes: true when they came; false when the connection
    /// should close (the client did, drain, reset fault, the head's
    /// deadline).
    ///
    /// Until it parks, it reads into the buffer it still has: a socket can
    /// look readable with nothing to read (readiness left over from a read
    /// that filled its buffer, or from protocol detection), and only a read
    /// that finds nothing clears that; after it, the socket alone is
    /// watched, and wakes the connection for real bytes.
    async fn wait(
        &mut self,
        ctx: &ConnCtx,
        io: &mut ClientIo,
        timer: &HeaderTimer,
        parked: &Gauge,
        deadline: &mut HeaderSleep,
    ) -> bool {
        let mut is_parked = false;
        let woke = poll_fn(|cx| {
            if ctx.events.poll_raised(cx, DRAIN | KILL | STOP).is_ready() {
                return Poll::Ready(false);
            }
            let readable = match self.bufs.as_mut() {
                Some(bufs) => poll_read_buf(Pin::new(&mut *io), cx, &mut bufs.client)
                    .map(|read| matches!(read, Ok(n) if n > 0)),
                None => io.poll_readable(cx).map(|ready| ready.is_ok()),
            };
            if let Poll::Ready(woke) = readable {
                return Poll::Ready(woke);
            }
            if Pin::new(&mut *deadline).poll(cx).is_ready() {
                return Poll::Ready(false);
            }
            // The deadline's poll registered this task with the clock,
            // which wakes it a tick after the first look.
            if !is_parked && timer.idle_a_tick() {
                is_parked = true;
                parked.inc();
                self.bufs = None;
                // A parked connection has HEADER_READ_TIMEOUT from now, as
                // it always had.
                *deadline = timer.deadline(HEADER_READ_TIMEOUT);
                if Pin::new(&mut *deadline).poll(cx).is_ready() {
                    return Poll::Ready(false);
                }
            }
            Poll::Pending
        })
        .await;
        if is_parked {
            parked.dec();
            // And the head that wakes it gets its own.
            *deadline = timer.deadline(HEADER_READ_TIMEOUT);
        }
        woke
    }

    /// Hands what was read to hyper, freeing the relay's buffers.
    fn hand_to_hyper(&mut self) -> Step {
        match self.bufs.take() {
            Some(bufs) => Step::Hyper(bufs.client.freeze()),
            None => Step::Hyper(Bytes::new()),
        }
    }

    /// Relays one request, its `head` parsed at the start of the client
    /// buffer, and its response.
    async fn relay(
        &mut self,
        ctx: &ConnCtx,
        io: &mut ClientIo,
        head: RequestHead<RelayFault>,
    ) -> Step {
        let shared = &ctx.shared;
        match &head.decided {
            RelayFault::FullPath => return self.hand_to_hyper(),
            RelayFault::Forward { delay: None, .. } => {}
            RelayFault::Forward {
                delay: Some(delayed),
                ..
            } => {
                shared.metrics.fault(&delayed.rule, delayed.kind);
                tracing::debug!(rule = %delayed.rule, kind = delayed.kind, "fault injected");
                tokio::time::sleep(delayed.delay).await;
            }
        }
        let labels = TrafficLabels {
            direction: ctx.direction,
            protocol: ctx.protocol,
        };
        ctx.requests
            .get_or_init(|| shared.metrics.requests.get_or_create(&labels).clone())
            .inc();
        ctx.relayed
            .get_or_init(|| {
                let labels = DirectionLabels {
                    direction: ctx.direction,
                };
                shared
                    .metrics
                    .requests_relayed
                    .get_or_create(&labels)
                    .clone()
            })
            .inc();
        let Some(bufs) = self.bufs.as_mut() else {
            return Step::Close;
        };
        match exchange(ctx, io, bufs, &head).await {
            Ok(close) if close || head.close => {
                let _ = io.shutdown().await;
                Step::Close
            }
            Ok(_) => Step::Next,
            Err(failure) => failed(ctx, io, failure).await,
        }
    }
}

/// Answers what can still be answered of a failed exchange: a 502 when
/// no response byte reached the client, which then keeps its connection
/// (its request, bodiless, was read to the end); else the connection
/// closes.
async fn failed(ctx: &ConnCtx, io: &mut ClientIo, failure: Failure) -> Step {
    let reason = crate::error_chain(&failure.error);
    match failure.stage {
        Stage::Answered => {
            tracing::debug!(error = %reason, client = %ctx.client, "relayed exchange cut short");
        }
        Stage::Unanswered => {
            if let Failed::Connect(error) = &failure.error
                && error.is_connect()
            {
                ctx.shared.metrics.upstream_connect_error(ctx.direction);
            }
            tracing::warn!(dest = %ctx.forward_to, error = %reason, "upstream request failed");
            let answer = bad_gateway(&reason);
            if io.write_all(&answer).await.is_ok() && io.flush().await.is_ok() {
                return Step::Next;
            }
        }
    }
    let _ = io.shutdown().await;
    Step::Close
}

/// The policy's word on a request the relay could carry; `None` hands it
/// to hyper (a header the `http` crate refuses, say).
fn decide(ctx: &ConnCtx, req: &head::Request<'_>) -> Option<RelayFault> {
    let store = &ctx.shared.store;
    let method = http::Method::from_bytes(req.method.as_bytes()).ok()?;
    // Most requests meet no rule for their method: they cost no HeaderMap.
    if !store.with_compiled(|compiled| compiled.may_act_on_request(&method)) {
        return Some(RelayFault::PLAIN);
    }
    let mut headers = HeaderMap::with_capacity(req.headers.len());
    for h in req.headers {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        headers.append(name, HeaderValue::from_bytes(h.value).ok()?);
    }
    let conn = effects::conn_info(ctx.direction, ctx.client, ctx.original_dst);
    Some(effects::relay_fault(
        store,
        &conn,
        &method,
        req.target,
        Some(req.host),
        &headers,
    ))
}

/// A failed exchange, and how far it got.
struct Failure {
    error: Failed,
    stage: Stage,
}

enum Stage {
    /// No response byte reached the client: it gets a 502 and keeps its
    /// connection (the request, bodiless, was read to its end).
    Unanswered,
    /// Response bytes reached the client: the connection closes.
    Answered,
}

impl Failure {
    fn new(error: Failed, stage: Stage) -> Self {
        Failure { error, stage }
    }
}

/// Sends the request at the start of the client buffer and relays the
/// response, over an idle upstream connection of the worker's pool or a
/// new one, given back once the exchange is over. True when the client
/// connection must close after it.
async fn exchange(
    ctx: &ConnCtx,
    io: &mut ClientIo,
    bufs: &mut Buffers,
    head: &RequestHead<RelayFault>,
) -> Result<bool, Failure> {
    let pool = &ctx.shared.upstream(ctx.worker).relay;
    let dest = ctx.forward_to;
    let mut pooled = pool.take(dest);
    bufs.upstream.clear();
    let started = Instant::now();
    // The head stays in the buffer until the response starts: sent on a
    // connection the upstream closed meanwhile, it is sent again on a
    // fresh one.
    let sent = loop {
        let (mut stream, reused) = match pooled.take() {
            Some(stream) => (stream, true),
            None => {
                // Boxed: connecting is rare, and its state would otherwise
                // be part of every exchange's future.
                let connected = Box::pin(crate::upstream::connect(dest)).await;
                match connected {
                    Ok(stream) => (stream, false),
                    Err(error) => {
                        break Err(Failure::new(Failed::Connect(error), Stage::Unanswered));
                    }
                }
            }
        };
        // Once, on a fresh connection: what clients do for their own
        // keep-alive connections (RFC 9110 section 9.2.2).
        let retry = reused && head.idempotent;
        if let Err(error) = stream.write_all(&bufs.client[..head.len]).await {
            if retry {
                continue;
            }
            break Err(Failure::new(Failed::Upstream(error), Stage::Unanswered));
        }
        match read_head(&mut stream, bufs, io, head.head_method).await {
            Ok(response) => break Ok((stream, response)),
            Err(ReadHead::Nothing(_)) if retry => {
                tracing::debug!(%dest, "upstream closed an idle connection under a request; sending it again");
            }
            Err(ReadHead::Nothing(error)) => {
                break Err(Failure::new(Failed::Upstream(error), Stage::Unanswered));
            }
            Err(ReadHead::Failed(error, answered)) => {
                let stage = if answered {
                    Stage::Answered
                } else {
                    Stage::Unanswered
                };
                break Err(Failure::new(error, stage));
            }
        }
    };
    bufs.client.advance(head.len);
    let (mut stream, response) = sent?;
    let latency = started.elapsed().as_secs_f64();
    let labels = TrafficLabels {
        direction: ctx.direction,
        protocol: ctx.protocol,
    };
    ctx.upstream_latency
        .get_or_init(|| {
            ctx.shared
                .metrics
                .upstream_latency
                .get_or_create(&labels)
                .clone()
        })
        .observe(latency);
    let close = response.close;
    let mut head_len = response.len;
    let mut rewritten = false;
    match on_response(ctx, head, &bufs.upstream[..head_len], &response) {
        Answer::Pass => {}
        Answer::Delay(delay) => tokio::time::sleep(delay).await,
        Answer::Head(new) => {
            head_len = replace_head(&mut bufs.upstream, head_len, &new);
            rewritten = true;
        }
        Answer::Instead(answer) => {
            // The upstream connection goes, its body unread.
            let written = match io.write_all(&answer).await {
                Ok(()) => io.flush().await,
                Err(error) => Err(error),
            };
            written
                .map_err(|e| Failure::new(Failed::Body(BodyError::Write(e)), Stage::Answered))?;
            return Ok(false);
        }
        Answer::Reset => {
            ctx.kill();
            // `next` sees the kill and drops this exchange.
            return std::future::pending().await;
        }
    }
    // A rewritten head was written without the length.
    if response.drop_length && !rewritten {
        head_len = drop_length(&mut bufs.upstream, head_len);
    }
    let mut body = response.body;
    let until_close = body.ends_at_close();
    let answered = |e| Failure::new(Failed::Body(e), Stage::Answered);
    relay_response_body(&mut stream, io, bufs, &mut body, head_len)
        .await
        .map_err(answered)?;
    io.flush()
        .await
        .map_err(|e| answered(BodyError::Write(e)))?;
    // Bytes past the response were never asked for, and a body announced
    // but not due may come late; a client's `Connection: close` went
    // upstream too, and the upstream closes.
    let reusable = !response.announced_body && bufs.upstream.is_empty();
    if !close && !head.close && !until_close && reusable {
        pool.put(dest, stream);
    }
    Ok(close)
}

/// Removes the `Content-Length` lines from the response head of `len`
/// bytes at the start of `buf`; returns the head's new length.
fn drop_length(buf: &mut BytesMut, len: usize) -> usize {
    let head = head::without_length(&buf[..len]);
    replace_head(buf, len, &head)
}

/// Puts `head` in place of the `len` bytes at the start of `buf`; returns
/// its length.
fn replace_head(buf: &mut BytesMut, len: usize, head: &[u8]) -> usize {
    let mut rebuilt = BytesMut::with_capacity(buf.len() - len + head.len());
    rebuilt.extend_from_slice(head);
    rebuilt.extend_from_slice(&buf[len..]);
    *buf = rebuilt;
    head.len()
}

/// The response-stage rules' word on the upstream's response head
/// `bytes`, and what it makes of the exchange.
fn on_response(
    ctx: &ConnCtx,
    head: &RequestHead<RelayFault>,
    bytes: &[u8],
    response: &head::ResponseHead,
) -> Answer {
    let RelayFault::Forward {
        response: Some(pending),
        ..
    } = &head.decided
    else {
        return Answer::Pass;
    };
    // Most rules read the status alone: no fields are gathered for them.
    let read = pending.reads_headers();
    let mut fields = HeaderMap::new();
    if read {
        fields = head::response_fields(bytes);
    }
    let info = ResponseInfo {
        status: response.status,
        headers: &fields,
    };
    let Some(injected) = effects::response_head_fault(pending, &info) else {
        return Answer::Pass;
    };
    ctx.shared.metrics.fault(&injected.rule, injected.kind);
    tracing::debug!(rule = %injected.rule, kind = injected.kind, status = response.status, "fault injected on a response");
    if !read {
        fields = head::response_fields(bytes);
    }
    let upstream = respond::Upstream {
        status: response.status,
        fields,
        framing: &response.body,
        close: response.close,
    };
    let asked = respond::Asked {
        head_method: head.head_method,
        close: head.close,
    };
    respond::answer(&injected.fault, upstream, asked)
}

/// Why no response head came.
enum ReadHead {
    /// The upstream closed or failed before sending a byte.
    Nothing(std::io::Error),
    /// Anything else; true when bytes already reached the client.
    Failed(Failed, bool),
}

/// Reads the final response head into the upstream buffer, passing
/// interim (1xx) responses on to the client.
async fn read_head(
    upstream: &mut TcpStream,
    bufs: &mut Buffers,
    io: &mut ClientIo,
    head_request: bool,
) -> Result<head::ResponseHead, ReadHead> {
    let mut answered = false;
    let Buffers {
        client,
        upstream: buf,
    } = bufs;
    loop {
        match head::response(buf, head_request) {
            Ok(Some(response)) if response.status == 101 => {
                return Err(ReadHead::Failed(Failed::Switched, true));
            }
            Ok(Some(response)) if (100..200).contains(&response.status) => {
                io.write_all(&buf[..response.len])
                    .await
                    .map_err(|e| ReadHead::Failed(Failed::Body(BodyError::Write(e)), true))?;
                buf.advance(response.len);
                answered = true;
                continue;
            }
            Ok(Some(response)) => return Ok(response),
            Ok(None) if buf.len() >= MAX_HEADER_BYTES => {
                let error = BadResponse::TooLarge(MAX_HEADER_BYTES);
                return Err(ReadHead::Failed(error.into(), answered));
            }
            Ok(None) => {}
            Err(error) => return Err(ReadHead::Failed(error.into(), answered)),
        }
        // Nothing times out an upstream that never answers: a client that
        // gives up must free the upstream connection, as hyper's path
        // does (it also closes when a client half-closes).
        let read = tokio::select! {
            biased;
            read = fill(upstream, buf, MAX_HEADER_BYTES) => read,
            gone = client_gone(io, client) => {
                return Err(ReadHead::Failed(Failed::ClientGone(gone), true));
            }
        };
        match read {
            Ok(0) if buf.is_empty() && !answered => {
                return Err(ReadHead::Nothing(std::io::ErrorKind::UnexpectedEof.into()));
            }
            Ok(0) => {
                let error = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
                return Err(ReadHead::Failed(Failed::Upstream(error), answered));
            }
            Ok(_) => {}
            Err(error) if buf.is_empty() && !answered => return Err(ReadHead::Nothing(error)),
            Err(error) => return Err(ReadHead::Failed(Failed::Upstream(error), answered)),
        }
    }
}

/// Reads what the client sends while it waits for a response (pipelined
/// requests, kept for their turn) until it closes or fails, which it
/// returns; once `buf` holds [`MAX_HEADER_BYTES`], stops reading and
/// never returns.
async fn client_gone(io: &mut ClientIo, buf: &mut BytesMut) -> std::io::Error {
    while buf.len() < MAX_HEADER_BYTES {
        match fill(io, buf, MAX_HEADER_BYTES).await {
            Ok(0) => return std::io::ErrorKind::UnexpectedEof.into(),
            Ok(_) => {}
            Err(error) => return error,
        }
    }
    std::future::pending().await
}

/// Relays a response body to the client: the first `head` bytes of the
/// upstream buffer (the head) go first, then the body as `framing`
/// delimits it. What the client sends meanwhile is read into
/// `bufs.client`, and the client closing ends the body, as hyper's
/// path drops a response whose client has gone (an upstream that stalls
/// mid-body would otherwise hold the exchange for ever).
async fn relay_response_body(
    upstream: &mut TcpStream,
    io: &mut ClientIo,
    bufs: &mut Buffers,
    framing: &mut Framing,
    head: usize,
) -> Result<(), BodyError> {
    let Buffers {
        client,
        upstream: buf,
    } = bufs;
    let mut head = head;
    while !pass_on(io, buf, framing, head).await? {
        head = 0;
        let read = tokio::select! {
            biased;
            read = fill(upstream, buf, BUF_SIZE) => read,
            gone = client_gone(io, client) => return Err(BodyError::Write(gone)),
        };
        if at_end(read, framing)? {
            return Ok(());
        }
    }
    Ok(())
}

/// Writes the head's `head` bytes and the body bytes after them at the
/// start of `buf` to `dst`; true once the body has ended.
async fn pass_on<W: AsyncWrite + Unpin>(
    dst: &mut W,
    buf: &mut BytesMut,
    framing: &mut Framing,
    head: usize,
) -> Result<bool, BodyError> {
    let (n, done) = framing.scan(&buf[head..])?;
    let out = head + n;
    if out > 0 {
        dst.write_all(&buf[..out]).await.map_err(BodyError::Write)?;
        buf.advance(out);
    }
    if !done && buf.len() >= MAX_LINE {
        // Only an unfinished chunk-size or trailer line stays behind.
        return Err(Malformed::ChunkSize.into());
    }
    Ok(done)
}

/// Whether a read that came back with `read` ends the body (the sender
/// closed a close-delimited one), or cuts it.
fn at_end(read: std::io::Result<usize>, framing: &Framing) -> Result<bool, BodyError> {
    match read.map_err(BodyError::Read)? {
        0 if framing.ends_at_close() => Ok(true),
        0 => Err(BodyError::Cut),
        _ => Ok(false),
    }
}

/// Reads more into `buf`, which holds at most `limit` bytes. Returns how
/// many were read (0 at the end of the stream).
async fn fill<R: AsyncRead + Unpin>(
    src: &mut R,
    buf: &mut BytesMut,
    limit: usize,
) -> std::io::Result<usize> {
    if buf.capacity() - buf.len() < 1024 {
        // Moves what is left to the front when the buffer allows.
        buf.reserve(BUF_SIZE.min(limit.saturating_sub(buf.len())).max(1024));
    }
    src.read_buf(buf).await
}

/// The 502 the full HTTP path words (`response::bad_gateway`).
fn bad_gateway(reason: &str) -> Vec<u8> {
    let body = format!("faultline: {reason}\n");
    format!(
        "HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/plain; charset=utf-8\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}
