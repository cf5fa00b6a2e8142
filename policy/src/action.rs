//! What a decision asks the data plane to do: the [`Action`] with its
//! random parts already sampled, and the [`Decision`] that names the rule it
//! came from. `compile` prebuilds the responses; `decide` picks one.
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use crate::model::{DelaySide, DnsRcode, FaultKind, GrpcCode, PartitionMode, Side};

/// A fault to apply, with the rule it came from (for metrics and logs).
///
/// It borrows the rule's name from the compiled policy: deciding costs no
/// reference-count traffic on the policy that every worker shares, and the
/// data plane clones the name only for a fault it carries out.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision<'p> {
    /// Position of the rule in the policy's `rules`.
    pub rule_index: usize,
    /// The rule's `name`, or `rules[i]` when it has none.
    pub rule_name: &'p Arc<str>,
    pub kind: FaultKind,
    pub action: Action,
}

/// The fault with its random parts already sampled.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Wait `duration` before forwarding the request (side `Request`) or
    /// before returning the response (side `Response`). On raw TCP: before
    /// connecting upstream.
    Delay {
        duration: Duration,
        side: DelaySide,
    },
    Abort(AbortAction),
    /// Wait `delay`, then abort: a request that asked for both with the
    /// `fromHeaders` headers.
    DelayedAbort {
        delay: Duration,
        abort: AbortAction,
    },
    /// Answer with this response instead of forwarding.
    Respond(Arc<HttpResponse>),
    /// Never answer; keep the connection until the client gives up.
    Hang,
    /// Throttle the connection (raw TCP: its byte streams; HTTP: the
    /// request's body and its response's).
    Bandwidth(BandwidthLimit),
    /// `Reject`: reset the connection at once; `Drop`: accept it and let
    /// nothing pass.
    Partition {
        mode: PartitionMode,
    },
    /// Forward normally, then reset the connection after `after_bytes`
    /// (counted in both directions) or `after`, whichever comes first.
    Reset {
        after_bytes: Option<u64>,
        after: Option<Duration>,
    },
    /// Pass the bytes of `side` in chunks of `average_size` ±
    /// `size_variation` bytes (sampled per chunk by the data plane), with
    /// `delay` between chunks. Raw TCP only.
    Slicer {
        side: Side,
        average_size: u32,
        size_variation: u32,
        delay: Duration,
    },
    /// Close the connection once `bytes` went through on `side` (never
    /// `Both`). On HTTP: the response body is cut after `bytes`.
    LimitData {
        side: Side,
        bytes: u64,
    },
    /// Hold an orderly close on `side` for `delay`. Raw TCP only.
    SlowClose {
        side: Side,
        delay: Duration,
    },
    /// Answer the DNS query with this response code (and no records)
    /// instead of forwarding it.
    Dns {
        rcode: DnsRcode,
    },
    /// Change the upstream's response (`replace` and `patch`).
    Rewrite(Arc<Rewrite>),
}

/// Bytes per second allowed through a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BandwidthLimit {
    /// `rate` / `bytesPerSecond`: each raw TCP direction at this rate; on
    /// HTTP one bucket that the connection's request and response bodies
    /// share (as `bandwidth` always meant).
    Connection(u64),
    /// `request` / `response`: each side its own bucket; a side without a
    /// rate is not limited.
    Sides {
        request: Option<u64>,
        response: Option<u64>,
    },
}

impl Action {
    /// True for a fault that changes nothing (a delay that came out as
    /// zero): the rule fired, yet the data plane has nothing to do, so it
    /// arms no timer and records no fault.
    pub fn is_noop(&self) -> bool {
        matches!(self, Action::Delay { duration, .. } if duration.is_zero())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum AbortAction {
    /// Answer with this HTTP response.
    Http(Arc<HttpResponse>),
    /// Answer with a trailers-only gRPC response carrying this status.
    Grpc(Arc<GrpcAbort>),
    /// Reset the client connection (TCP RST) instead of answering.
    Reset,
}

/// A prebuilt response: headers do not include `content-length`, which
/// the data plane sets from `body`.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GrpcAbort {
    pub code: GrpcCode,
    /// Already percent-encoded for the `grpc-message` header.
    pub message: Option<HeaderValue>,
}

impl GrpcAbort {
    /// The `grpc-status` header value.
    pub fn status_header(&self) -> HeaderValue {
        HeaderValue::from(u16::from(self.code.code()))
    }
}

/// How `replace` or `patch` changes an upstream's response, prebuilt.
#[derive(Debug, Clone, PartialEq)]
pub struct Rewrite {
    pub status: Option<StatusCode>,
    /// `replace.headers`: the upstream's headers give way to these (those
    /// describing a body that passes through stay).
    pub replace_headers: Option<HeaderMap>,
    /// `patch.headers.set`: each replaces the upstream's values of its name.
    pub set_headers: HeaderMap,
    /// `patch.headers.remove`.
    pub remove_headers: Box<[HeaderName]>,
    pub body: Option<BodyRewrite>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum BodyRewrite {
    /// `replace.body`.
    Replace(Bytes),
    /// `patch.body.merge`: an RFC 7396 JSON merge patch.
    MergePatch(serde_json::Value),
}
