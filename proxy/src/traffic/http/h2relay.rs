//! The HTTP/2 relay: an h2c connection no rule can reach, carried as an L4
//! proxy carries it, while its requests are still counted and timed.
//!
//! hyper serves HTTP/2 by taking each connection apart (frames, HPACK,
//! flow control, a task per stream) and building it again towards a
//! shared upstream connection: most of what an h2c request costs. When no
//! rule could act on any request of a connection (`may_act_on_http`: the
//! rules' direction, port and addresses rule it out, or there are none),
//! the relay instead opens an upstream connection of its own for it and
//! copies bytes both ways, following the frames (`frames`) without holding
//! any back:
//!
//! - a HEADERS frame that opens a client stream counts a request
//!   (`faultline_requests_total`, `protocol="grpc"` when its
//!   `content-type` says so: the request header blocks are decoded with
//!   HPACK, to keep the decoder's table in step, never re-encoded);
//! - the first HEADERS frame back on that stream gives the upstream
//!   latency, and its end (END_STREAM or RST_STREAM) closes it.
//!
//! A policy that comes to reach the connection, or the drain, has it send
//! the client a GOAWAY (the last stream 2^31-1: everything already sent is
//! still served) between two upstream frames: the client finishes its
//! streams and opens a new connection, which hyper serves under the new
//! policy. The relay closes the connection itself once every stream it
//! saw has ended and a second has passed since the GOAWAY, for requests
//! the client sent before it arrived.
//!
//! An upstream that cannot be reached leaves the connection to hyper,
//! untouched, whose requests then get the usual 502 or `UNAVAILABLE`.
use std::collections::HashMap;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use loona_hpack::Decoder;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

use super::MAX_HEADER_BYTES;
use crate::conn::ConnCtx;
use crate::events::{DRAIN, KILL, STOP};
use crate::metrics::{DirectionLabels, Protocol, TrafficLabels};
use crate::traffic::client_io::ClientIo;
use crate::traffic::effects;

mod frames;
#[cfg(test)]
mod tests;

use frames::{FrameHead, Scanner, Sink};

/// Each direction's buffer, as the raw TCP copy's: one read's worth,
/// forwarded before the next.
const BUF_SIZE: usize = 8 * 1024;
/// Open streams followed at once; past this, requests are still counted,
/// but not timed, and only the client closing ends the connection after
/// a GOAWAY.
const MAX_TRACKED: usize = 1024;
/// After its GOAWAY, how long the relay waits for requests the client
/// sent before it saw it.
const GOAWAY_GRACE: Duration = Duration::from_secs(1);
/// The HPACK table a client may ask for; past this the relay stops
/// decoding (every request then counts as `http2`).
const MAX_HPACK_TABLE: usize = 64 * 1024;

/// Whether the relay may carry this h2c connection: no rule of the
/// current policy can act on any of its requests.
fn relays(ctx: &ConnCtx) -> bool {
    let conn = effects::conn_info(ctx.direction, ctx.client, ctx.original_dst);
    !ctx.shared
        .store
        .with_compiled(|policy| policy.may_act_on_http(&conn))
}

/// Relays the connection until either side closes it, the proxy stops, or
/// after a GOAWAY its streams are over. When a rule can reach it, or the
/// upstream cannot be reached, hands the connection back, nothing read,
/// for hyper to serve.
pub async fn serve(ctx: &ConnCtx, mut client: ClientIo) -> Result<(), ClientIo> {
    // Watched from before the look at the policy: a change in between is
    // still seen.
    let mut policy = ctx.shared.store.subscribe();
    if !relays(ctx) {
        return Err(client);
    }
    let mut upstream = match Box::pin(crate::upstream::connect(ctx.forward_to)).await {
        Ok(upstream) => upstream,
        Err(error) => {
            tracing::debug!(dest = %ctx.forward_to, error = %crate::error_chain(&error),
                "upstream unreachable; leaving the HTTP/2 connection to hyper");
            return Err(client);
        }
    };
    let mut relay = Relay::new(ctx);
    let mut watching = true;
    let mut awaited = DRAIN | KILL | STOP;
    let ended = loop {
        tokio::select! {
            biased;
            flags = ctx.events.raised(awaited) => {
                if flags & (KILL | STOP) != 0 {
                    // Dropped: a reset fault's RST, or the drain is over.
                    return Ok(());
                }
                awaited = KILL | STOP;
                relay.goaway.ask("the proxy is draining");
            }
            changed = policy.changed(), if watching && !relay.goaway.asked => {
                watching = changed.is_ok();
                if watching && !relays(ctx) {
                    relay.goaway.ask("a rule now reaches the connection");
                }
            }
            ended = poll_fn(|cx| relay.poll(cx, &mut client, &mut upstream)) => break ended,
        }
    };
    match ended {
        Ok(Ended::Closed) => {}
        Ok(Ended::StreamsOver) => {
            let _ = client.shutdown().await;
            let _ = upstream.shutdown().await;
        }
        Err(error) => {
            tracing::debug!(%error, client = %ctx.client, "relayed HTTP/2 connection ended with an error");
        }
    }
    Ok(())
}

enum Ended {
    /// Both sides closed.
    Closed,
    /// After a GOAWAY, every stream has ended.
    StreamsOver,
}

/// One relayed connection.
struct Relay<'c> {
    /// Client to upstream.
    up: Pump,
    /// Upstream to client.
    down: Pump,
    requests: Requests,
    streams: Streams<'c>,
    goaway: GoAway,
    /// Runs from the GOAWAY; once over, the relay may close the connection.
    grace: Option<Pin<Box<Sleep>>>,
    may_close: bool,
}

impl<'c> Relay<'c> {
    fn new(ctx: &'c ConnCtx) -> Self {
        Relay {
            up: Pump::new(Scanner::client()),
            down: Pump::new(Scanner::server()),
            requests: Requests::new(),
            streams: Streams::new(ctx),
            goaway: GoAway::default(),
            grace: None,
            may_close: false,
        }
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        client: &mut ClientIo,
        upstream: &mut TcpStream,
    ) -> Poll<io::Result<Ended>> {
        let mut up_sink = UpSink {
            requests: &mut self.requests,
            streams: &mut self.streams,
        };
        let up = self.up.poll(cx, client, upstream, &mut up_sink, None)?;
        let mut down_sink = DownSink {
            streams: &mut self.streams,
        };
        let down = self
            .down
            .poll(cx, upstream, client, &mut down_sink, Some(&mut self.goaway))?;
        if up.is_ready() && down.is_ready() {
            return Poll::Ready(Ok(Ended::Closed));
        }
        if let Some(sent) = self.goaway.sent
            && !self.may_close
        {
            let grace = self.grace.get_or_insert_with(|| {
                Box::pin(tokio::time::sleep_until((sent + GOAWAY_GRACE).into()))
            });
            self.may_close = grace.as_mut().poll(cx).is_ready();
        }
        if self.may_close && self.streams.all_over() {
            return Poll::Ready(Ok(Ended::StreamsOver));
        }
        Poll::Pending
    }
}

/// The GOAWAY the relay owes the client.
#[derive(Debug, Default)]
struct GoAway {
    asked: bool,
    sent: Option<Instant>,
}

impl GoAway {
    fn ask(&mut self, why: &'static str) {
        if !self.asked {
            tracing::debug!(why, "sending GOAWAY on a relayed HTTP/2 connection");
            self.asked = true;
        }
    }

    fn due(&self) -> bool {
        self.asked && self.sent.is_none()
    }
}

/// One direction: read a buffer's worth, follow its frames, write it all.
struct Pump {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    scanner: Scanner,
    eof: bool,
    shut: bool,
}

impl Pump {
    fn new(scanner: Scanner) -> Self {
        Pump {
            buf: vec![0; BUF_SIZE].into_boxed_slice(),
            start: 0,
            end: 0,
            scanner,
            eof: false,
            shut: false,
        }
    }

    /// Ready once the reader has closed and the writer was shut down.
    /// `goaway`, on the upstream-to-client side, is put in between two
    /// frames when due; until it is, reads stop at frame boundaries.
    fn poll<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        reader: &mut R,
        writer: &mut W,
        sink: &mut impl Sink,
        mut goaway: Option<&mut GoAway>,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        loop {
            while self.start < self.end {
                let buf = &self.buf[self.start..self.end];
                let n = ready!(Pin::new(&mut *writer).poll_write(cx, buf))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.start += n;
                if self.start == self.end {
                    ready!(Pin::new(&mut *writer).poll_flush(cx))?;
                }
            }
            self.start = 0;
            self.end = 0;
            if self.eof {
                if !self.shut {
                    ready!(Pin::new(&mut *writer).poll_shutdown(cx))?;
                    self.shut = true;
                }
                return Poll::Ready(Ok(()));
            }
            let mut limit = BUF_SIZE;
            if let Some(goaway) = goaway.as_deref_mut().filter(|g| g.due()) {
                if self.scanner.may_insert() {
                    let frame = frames::goaway(u32::MAX);
                    self.buf[..frame.len()].copy_from_slice(&frame);
                    self.end = frame.len();
                    goaway.sent = Some(Instant::now());
                    continue;
                }
                limit = self.scanner.to_boundary().clamp(1, BUF_SIZE);
            }
            let mut read = ReadBuf::new(&mut self.buf[..limit]);
            ready!(Pin::new(&mut *reader).poll_read(cx, &mut read))?;
            let n = read.filled().len();
            if n == 0 {
                self.eof = true;
                continue;
            }
            self.scanner.feed(&self.buf[..n], sink);
            self.end = n;
        }
    }
}

/// The client's request header blocks, gathered and decoded.
struct Requests {
    block: Vec<u8>,
    /// The stream the block being gathered opens, if it opens one.
    opening: Option<u32>,
    /// The highest client stream seen.
    last: u32,
    /// `None` once the table is out of step (a block too large, an error):
    /// from then on requests are counted without their `content-type`.
    hpack: Option<Decoder<'static>>,
}

impl Requests {
    fn new() -> Self {
        let mut hpack = Decoder::new();
        hpack.set_max_allowed_table_size(MAX_HPACK_TABLE);
        Requests {
            block: Vec::new(),
            opening: None,
            last: 0,
            hpack: Some(hpack),
        }
    }

    /// Decodes the gathered block; true when it says gRPC.
    fn decode(&mut self) -> bool {
        let Some(hpack) = self.hpack.as_mut() else {
            return false;
        };
        let mut grpc = false;
        let decoded = hpack.decode_with_cb(&self.block, |name, value| {
            if &*name == b"content-type" && value.starts_with(b"application/grpc") {
                grpc = true;
            }
        });
        if let Err(error) = decoded {
            tracing::debug!(
                ?error,
                "failed to decode a relayed HPACK block; counting requests without it"
            );
            self.hpack = None;
        }
        self.block.clear();
        grpc
    }
}

struct UpSink<'a, 'c> {
    requests: &'a mut Requests,
    streams: &'a mut Streams<'c>,
}

impl Sink for UpSink<'_, '_> {
    fn frame(&mut self, head: FrameHead) {
        match head.kind {
            frames::HEADERS => {
                let r = &mut *self.requests;
                r.block.clear();
                // Client streams are odd and each new one is higher.
                r.opening = (head.stream % 2 == 1 && head.stream > r.last).then_some(head.stream);
                if r.opening.is_some() {
                    r.last = head.stream;
                }
            }
            frames::RST_STREAM => self.streams.over(head.stream),
            _ => {}
        }
    }

    fn fragment(&mut self, bytes: &[u8]) {
        let r = &mut *self.requests;
        if r.hpack.is_none() {
            return;
        }
        if r.block.len() + bytes.len() > MAX_HEADER_BYTES {
            tracing::debug!(
                "relayed HPACK block over the header bound; counting requests without it"
            );
            r.hpack = None;
            r.block = Vec::new();
            return;
        }
        r.block.extend_from_slice(bytes);
    }

    fn end(&mut self, head: FrameHead) {
        let block_ends = matches!(head.kind, frames::HEADERS | frames::CONTINUATION)
            && head.has(frames::END_HEADERS);
        if !block_ends {
            return;
        }
        let grpc = self.requests.decode();
        if self.requests.opening.take() == Some(head.stream) {
            self.streams.open(head.stream, grpc);
        }
    }
}

struct DownSink<'a, 'c> {
    streams: &'a mut Streams<'c>,
}

impl Sink for DownSink<'_, '_> {
    fn frame(&mut self, head: FrameHead) {
        match head.kind {
            frames::HEADERS => {
                self.streams.answered(head.stream);
                if head.has(frames::END_STREAM) {
                    self.streams.over(head.stream);
                }
            }
            frames::DATA if head.has(frames::END_STREAM) => self.streams.over(head.stream),
            frames::RST_STREAM => self.streams.over(head.stream),
            _ => {}
        }
    }

    fn fragment(&mut self, _: &[u8]) {}

    fn end(&mut self, _: FrameHead) {}
}

/// The client streams whose response has not ended, and the metrics.
struct Streams<'c> {
    ctx: &'c ConnCtx,
    /// foldhash: a stream is looked up for every frame of it.
    open: HashMap<u32, Open, foldhash::fast::RandomState>,
    /// More than [`MAX_TRACKED`] were open at once.
    untracked: bool,
    grpc: Option<(Counter, Histogram)>,
    relayed: Counter,
}

struct Open {
    started: Instant,
    grpc: bool,
    answered: bool,
}

impl<'c> Streams<'c> {
    fn new(ctx: &'c ConnCtx) -> Self {
        let labels = DirectionLabels {
            direction: ctx.direction,
        };
        let relayed = ctx
            .relayed
            .get_or_init(|| {
                ctx.shared
                    .metrics
                    .requests_relayed
                    .get_or_create(&labels)
                    .clone()
            })
            .clone();
        Streams {
            ctx,
            open: HashMap::default(),
            untracked: false,
            grpc: None,
            relayed,
        }
    }

    /// A request opened `stream`.
    fn open(&mut self, stream: u32, grpc: bool) {
        self.series(grpc).0.inc();
        self.relayed.inc();
        if self.open.len() >= MAX_TRACKED {
            self.untracked = true;
            return;
        }
        let open = Open {
            started: Instant::now(),
            grpc,
            answered: false,
        };
        self.open.insert(stream, open);
    }

    /// The upstream's first HEADERS on `stream`: the upstream latency.
    fn answered(&mut self, stream: u32) {
        let Some(open) = self.open.get_mut(&stream) else {
            return;
        };
        if open.answered {
            return;
        }
        open.answered = true;
        let (grpc, latency) = (open.grpc, open.started.elapsed().as_secs_f64());
        self.series(grpc).1.observe(latency);
    }

    fn over(&mut self, stream: u32) {
        self.open.remove(&stream);
    }

    /// Every stream seen has ended (as far as the relay can tell).
    fn all_over(&self) -> bool {
        self.open.is_empty() && !self.untracked
    }

    /// The request counter and latency histogram of a request's protocol:
    /// the connection's own (`http2`), or `grpc`.
    fn series(&mut self, grpc: bool) -> (&Counter, &Histogram) {
        let ctx = self.ctx;
        let metrics = &ctx.shared.metrics;
        let labels = |protocol| TrafficLabels {
            direction: ctx.direction,
            protocol,
        };
        if grpc {
            let (requests, latency) = self.grpc.get_or_insert_with(|| {
                let labels = labels(Protocol::Grpc);
                (
                    metrics.requests.get_or_create(&labels).clone(),
                    metrics.upstream_latency.get_or_create(&labels).clone(),
                )
            });
            return (requests, latency);
        }
        let own = labels(ctx.protocol);
        (
            ctx.requests
                .get_or_init(|| metrics.requests.get_or_create(&own).clone()),
            ctx.upstream_latency
                .get_or_init(|| metrics.upstream_latency.get_or_create(&own).clone()),
        )
    }
}
