//! The effects the data plane knows how to apply, and the bridge from the
//! policy's decisions to them.
//!
//! `faultline_policy` decides *whether* and *which* fault applies (pure,
//! seeded RNG in tests); this module asks it with only what it reads
//! ([`ConnInfo`], the request) and turns the decision into an
//! [`HttpFault`] or a [`ConnFault`] that `http::service`, `accept` and
//! `tcp` act on. Keeping the two apart means the policy language can grow
//! without the I/O code changing.
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, StatusCode};

use faultline_policy::{
    AbortAction, Action, BandwidthLimit, CompiledPolicy, ConnInfo, Decision, DelaySide, Direction,
    PartitionMode, Protocol as PolicyProtocol, Refusal, RequestInfo, RequestOutcome, RequestReach,
    ResponseInfo, Rewrite, Side, TlsInfo, strip_control_headers,
};

use crate::source::store::PolicyStore;
use crate::traffic::client_io::{Shape, Slice};

/// A fault applied to one HTTP request or gRPC call.
#[derive(Debug, Clone, PartialEq)]
pub enum HttpFault {
    /// Wait before forwarding the request.
    DelayRequest(Duration),
    /// Wait after the upstream answered, before returning its headers.
    DelayResponse(Duration),
    /// Answer without forwarding (abort and respond are the same effect).
    Respond {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
    },
    /// A trailers-only gRPC response carrying `grpc-status`/`grpc-message`
    /// (the message already percent-encoded).
    Grpc {
        status: HeaderValue,
        message: Option<HeaderValue>,
    },
    /// Close the client connection with a TCP RST.
    Reset,
    /// Never answer; the request is dropped when the client goes away.
    Hang,
    /// Limit the request and response bodies of this connection.
    Bandwidth(BandwidthLimit),
    /// Cut the response body after this many bytes and close the
    /// connection (limitData on the response side).
    TruncateResponse(u64),
    /// Wait, then apply the inner fault (a request that asked for a delay
    /// and an abort with the `fromHeaders` headers).
    Delayed(Duration, Box<HttpFault>),
    /// Change the upstream's response (`replace`, `patch`).
    Rewrite(Arc<Rewrite>),
}

/// A fault applied to a whole connection (any protocol).
#[derive(Debug, Clone, PartialEq)]
pub enum ConnFault {
    /// Reset the connection at once (partition reject, TCP abort reset).
    Reject,
    /// Accept, read and discard, never answer, never connect upstream
    /// (partition drop, TCP hang).
    Drop,
    /// Forward, then reset after this many bytes (both directions summed)
    /// or this much time, whichever comes first.
    ResetAfter {
        bytes: Option<u64>,
        after: Option<Duration>,
    },
    /// Wait before connecting upstream.
    Delay(Duration),
    /// Byte-level faults on each side (bandwidth, slicer, limitData,
    /// slowClose), for the connection's `client_io::Limits`.
    Shape { request: Shape, response: Shape },
}

/// A fault the policy chose, with what metrics and logs need to know
/// about it: the rule that chose it and the fault's kind.
#[derive(Debug, Clone, PartialEq)]
pub struct Injected<F> {
    pub fault: F,
    pub rule: Arc<str>,
    pub kind: &'static str,
}

/// Turns a decision into the effect the data plane carries out. A
/// decision that changes nothing (a zero delay) is no effect at all: no
/// timer, no wakeup, not counted as an injected fault.
fn injected<F>(decision: Decision<'_>, effect: fn(&Action) -> Option<F>) -> Option<Injected<F>> {
    if decision.action.is_noop() {
        return None;
    }
    Some(Injected {
        fault: effect(&decision.action)?,
        rule: Arc::clone(decision.rule_name),
        kind: decision.kind.as_str(),
    })
}

/// What the policy knows of a connection: its direction and addresses.
pub fn conn_info(direction: Direction, client: SocketAddr, dst: SocketAddr) -> ConnInfo {
    ConnInfo {
        direction,
        destination_port: dst.port(),
        source_ip: client.ip(),
        destination_ip: dst.ip(),
    }
}

/// What the policy made of one request: the fault to apply, and the
/// control headers of a `fromHeaders` rule it refused, if any.
#[derive(Debug, Default)]
pub struct RequestFault {
    pub injected: Option<Injected<HttpFault>>,
    pub refused: Option<(Arc<str>, Refusal)>,
}

/// What the policy knows of a request.
fn request_info<'a, B>(conn: &ConnInfo, req: &'a Request<B>, grpc: bool) -> RequestInfo<'a> {
    let host = req.uri().authority().map(|a| a.as_str()).or_else(|| {
        req.headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
    });
    RequestInfo {
        direction: conn.direction,
        destination_port: conn.destination_port,
        protocol: if grpc {
            PolicyProtocol::Grpc
        } else {
            PolicyProtocol::Http
        },
        method: req.method(),
        path: req.uri().path(),
        headers: req.headers(),
        source_ip: conn.source_ip,
        destination_ip: conn.destination_ip,
        host,
    }
}

/// The fault for one HTTP request or gRPC call on connection `conn`.
/// While a `fromHeaders` rule is in force, the request's control headers
/// are removed here, whatever was decided, so they never go upstream.
pub fn request_fault<B>(
    store: &PolicyStore,
    conn: &ConnInfo,
    req: &mut Request<B>,
    grpc: bool,
) -> RequestFault {
    store.with_compiled(|compiled| {
        if compiled.is_empty() {
            return RequestFault::default();
        }
        let outcome = decide(compiled, conn, req, grpc);
        if compiled.reads_control_headers() {
            strip_control_headers(req.headers_mut());
        }
        RequestFault {
            injected: outcome
                .decision
                .and_then(|decision| injected(decision, http_fault)),
            refused: outcome
                .refused
                .map(|r| (Arc::clone(r.rule_name), r.refusal)),
        }
    })
}

/// What the policy knows of the request, and its decision.
fn decide<'p, B>(
    compiled: &'p CompiledPolicy,
    conn: &ConnInfo,
    req: &Request<B>,
    grpc: bool,
) -> RequestOutcome<'p> {
    compiled.decide_request_outcome(&request_info(conn, req, grpc), &mut rand::rng())
}

/// What the HTTP/1.1 relay (`http::relay`) may do with a request.
#[derive(Debug)]
pub enum RelayFault {
    /// Forward it, after `delay` when one was decided; `response` holds
    /// the response-stage rules its response is judged by, if any.
    Forward {
        delay: Option<RelayDelay>,
        response: Option<PendingResponse>,
    },
    /// The full HTTP path must take it: a rule could do more than delay
    /// it, reads its control headers, or may need its response's whole
    /// body. Nothing was drawn or spent, so that path decides it once,
    /// from scratch.
    FullPath,
}

/// A request delay the relay carries out, and the rule it came from.
#[derive(Debug)]
pub struct RelayDelay {
    pub delay: Duration,
    pub rule: Arc<str>,
    pub kind: &'static str,
}

impl RelayFault {
    pub const PLAIN: RelayFault = RelayFault::Forward {
        delay: None,
        response: None,
    };
}

/// The relay's decision for an HTTP/1.1 request (never gRPC): the same
/// policy as [`request_fault`], asked first whether anything but a request
/// delay could apply ([`CompiledPolicy::request_reach`]). Response-stage
/// rules stay with the relay unless one may patch the body.
pub fn relay_fault(
    store: &PolicyStore,
    conn: &ConnInfo,
    method: &http::Method,
    target: &str,
    host: Option<&str>,
    headers: &HeaderMap,
) -> RelayFault {
    let info = RequestInfo {
        direction: conn.direction,
        destination_port: conn.destination_port,
        protocol: PolicyProtocol::Http,
        method,
        path: target.split_once('?').map_or(target, |(path, _)| path),
        headers,
        source_ip: conn.source_ip,
        destination_ip: conn.destination_ip,
        host,
    };
    let without_response_rules = store.with_compiled(|compiled| {
        (!compiled.has_response_rules()).then(|| relay_request_fault(compiled, &info, None))
    });
    if let Some(fault) = without_response_rules {
        return fault;
    }
    // One policy for both stages: the candidates are its rules' indices.
    let policy = store.compiled();
    let candidates = policy.response_candidates(&info);
    if candidates.is_empty() {
        return relay_request_fault(&policy, &info, None);
    }
    if policy.response_needs_body(&candidates) {
        return RelayFault::FullPath;
    }
    let pending = PendingResponse {
        policy: Arc::clone(&policy),
        candidates,
        client: conn.source_ip,
    };
    relay_request_fault(&policy, &info, Some(pending))
}

/// The request stage of [`relay_fault`].
fn relay_request_fault(
    compiled: &CompiledPolicy,
    info: &RequestInfo<'_>,
    response: Option<PendingResponse>,
) -> RelayFault {
    if compiled.reads_control_headers() {
        return RelayFault::FullPath;
    }
    match compiled.request_reach(info) {
        RequestReach::Nothing => RelayFault::Forward {
            delay: None,
            response,
        },
        RequestReach::Other => RelayFault::FullPath,
        RequestReach::RequestDelay => {
            let outcome = compiled.decide_request_outcome(info, &mut rand::rng());
            match outcome.decision.and_then(|d| injected(d, http_fault)) {
                None => RelayFault::Forward {
                    delay: None,
                    response,
                },
                Some(injected) => match injected.fault {
                    HttpFault::DelayRequest(delay) => RelayFault::Forward {
                        delay: Some(RelayDelay {
                            delay,
                            rule: injected.rule,
                            kind: injected.kind,
                        }),
                        response,
                    },
                    // `request_reach` saw request delays only.
                    _ => RelayFault::FullPath,
                },
            }
        }
    }
}

/// The rules that may still fault a forwarded request once its response
/// arrives, with the policy they belong to: the response is judged by the
/// policy the request was, even if a new one arrives meanwhile.
#[derive(Debug)]
pub struct PendingResponse {
    policy: Arc<CompiledPolicy>,
    candidates: Vec<usize>,
    client: IpAddr,
}

/// The response-stage rules whose request-side matchers match `req`; `None`
/// (at the cost of one lock-free load) when the policy has none.
pub fn response_candidates<B>(
    store: &PolicyStore,
    conn: &ConnInfo,
    req: &Request<B>,
    grpc: bool,
) -> Option<PendingResponse> {
    if !store.with_compiled(CompiledPolicy::has_response_rules) {
        return None;
    }
    let policy = store.compiled();
    let candidates = policy.response_candidates(&request_info(conn, req, grpc));
    (!candidates.is_empty()).then_some(PendingResponse {
        policy,
        candidates,
        client: conn.source_ip,
    })
}

/// The fault for the upstream's response head `response`, if any.
pub fn response_fault<B>(
    pending: &PendingResponse,
    response: &http::Response<B>,
) -> Option<Injected<HttpFault>> {
    response_head_fault(
        pending,
        &ResponseInfo {
            status: response.status().as_u16(),
            headers: response.headers(),
        },
    )
}

/// The fault for an upstream's response head as the relay read it.
pub fn response_head_fault(
    pending: &PendingResponse,
    info: &ResponseInfo<'_>,
) -> Option<Injected<HttpFault>> {
    let decision = pending.policy.decide_response(
        &pending.candidates,
        pending.client,
        info,
        &mut rand::rng(),
    )?;
    injected(decision, http_fault)
}

impl PendingResponse {
    /// Whether the decision reads the response's headers, or only its
    /// status.
    pub fn reads_headers(&self) -> bool {
        self.policy.response_reads_headers(&self.candidates)
    }
}

/// The connection-level decision (partition, reset) when a connection is
/// accepted.
#[derive(Debug, Clone, PartialEq)]
pub enum AtOpen {
    Decided(Option<Injected<ConnFault>>),
    /// A rule that needs the TLS ClientHello could apply: decide once
    /// detection is done ([`connection_fault_after_detection`]).
    AfterDetection,
}

/// Faults decided when a connection is accepted: partition, reset.
pub fn connection_fault(store: &PolicyStore, conn: &ConnInfo) -> AtOpen {
    store.with_compiled(|compiled| {
        if compiled.connection_waits_for_tls(conn) {
            return AtOpen::AfterDetection;
        }
        AtOpen::Decided(
            compiled
                .decide_connection(conn, &mut rand::rng())
                .and_then(|decision| injected(decision, conn_fault)),
        )
    })
}

/// The connection-level decision put off by [`AtOpen::AfterDetection`]:
/// `tls` is what the ClientHello said, `None` when the connection is not TLS.
pub fn connection_fault_after_detection(
    store: &PolicyStore,
    conn: &ConnInfo,
    tls: Option<TlsInfo<'_>>,
) -> Option<Injected<ConnFault>> {
    store.with_compiled(|compiled| {
        injected(
            compiled.decide_connection_with_tls(conn, tls, &mut rand::rng())?,
            conn_fault,
        )
    })
}

/// Whether a rule for `conn` looks at a TLS connection's server name.
pub fn needs_sni(store: &PolicyStore, conn: &ConnInfo) -> bool {
    store.with_compiled(|compiled| compiled.needs_sni(conn))
}

/// Faults for a connection detected as raw TCP: delay, hang, abort
/// reset, and the byte-level ones (bandwidth, slicer, limitData, slowClose).
pub fn tcp_fault(store: &PolicyStore, conn: &ConnInfo) -> Option<Injected<ConnFault>> {
    store.with_compiled(|compiled| {
        injected(compiled.decide_tcp(conn, &mut rand::rng())?, conn_fault)
    })
}

/// The same faults for a connection that starts with a TLS ClientHello.
pub fn tls_fault(
    store: &PolicyStore,
    conn: &ConnInfo,
    tls: TlsInfo<'_>,
) -> Option<Injected<ConnFault>> {
    store.with_compiled(|compiled| {
        injected(
            compiled.decide_tls(conn, tls, &mut rand::rng())?,
            conn_fault,
        )
    })
}

/// The request-stage actions; L4-only actions never come from that stage.
pub fn http_fault(action: &Action) -> Option<HttpFault> {
    Some(match action {
        Action::Delay {
            duration,
            side: DelaySide::Request,
        } => HttpFault::DelayRequest(*duration),
        Action::Delay {
            duration,
            side: DelaySide::Response,
        } => HttpFault::DelayResponse(*duration),
        Action::Abort(AbortAction::Http(response)) | Action::Respond(response) => {
            HttpFault::Respond {
                status: response.status,
                headers: response.headers.clone(),
                body: response.body.clone(),
            }
        }
        Action::Abort(AbortAction::Grpc(grpc)) => HttpFault::Grpc {
            status: grpc.status_header(),
            message: grpc.message.clone(),
        },
        Action::Abort(AbortAction::Reset) => HttpFault::Reset,
        Action::Hang => HttpFault::Hang,
        Action::Bandwidth(limit) => HttpFault::Bandwidth(*limit),
        Action::LimitData {
            side: Side::Response,
            bytes,
        } => HttpFault::TruncateResponse(*bytes),
        Action::DelayedAbort { delay, abort } => {
            HttpFault::Delayed(*delay, Box::new(http_fault(&Action::Abort(abort.clone()))?))
        }
        Action::Rewrite(rewrite) => HttpFault::Rewrite(Arc::clone(rewrite)),
        Action::Partition { .. }
        | Action::Reset { .. }
        | Action::Slicer { .. }
        | Action::LimitData { .. }
        | Action::SlowClose { .. }
        | Action::Dns { .. } => return None,
    })
}

/// The connection- and TCP-stage actions.
pub fn conn_fault(action: &Action) -> Option<ConnFault> {
    Some(match action {
        Action::Partition {
            mode: PartitionMode::Reject,
        }
        | Action::Abort(AbortAction::Reset) => ConnFault::Reject,
        Action::Partition {
            mode: PartitionMode::Drop,
        }
        | Action::Hang => ConnFault::Drop,
        Action::Reset { after_bytes, after } => ConnFault::ResetAfter {
            bytes: *after_bytes,
            after: *after,
        },
        Action::Delay { duration, .. } => ConnFault::Delay(*duration),
        Action::Bandwidth(_)
        | Action::Slicer { .. }
        | Action::LimitData { .. }
        | Action::SlowClose { .. } => {
            let (request, response) = shapes(action);
            ConnFault::Shape { request, response }
        }
        Action::Abort(_)
        | Action::DelayedAbort { .. }
        | Action::Respond(_)
        | Action::Dns { .. }
        | Action::Rewrite(_) => return None,
    })
}

/// The byte-level faults an action puts on the request and response sides.
fn shapes(action: &Action) -> (Shape, Shape) {
    let (mut request, mut response) = (Shape::default(), Shape::default());
    let mut on = |side: Side, set: &dyn Fn(&mut Shape)| {
        if side.has_request() {
            set(&mut request);
        }
        if side.has_response() {
            set(&mut response);
        }
    };
    match *action {
        Action::Bandwidth(BandwidthLimit::Connection(rate)) => {
            on(Side::Both, &|s| s.rate = Some(rate));
        }
        Action::Bandwidth(BandwidthLimit::Sides {
            request: up,
            response: down,
        }) => {
            on(Side::Request, &|s| s.rate = up);
            on(Side::Response, &|s| s.rate = down);
        }
        Action::Slicer {
            side,
            average_size,
            size_variation,
            delay,
        } => on(side, &|s| {
            s.slice = Some(Slice {
                average: average_size,
                variation: size_variation,
                delay,
            });
        }),
        Action::LimitData { side, bytes } => on(side, &|s| s.limit = Some(bytes)),
        Action::SlowClose { side, delay } => on(side, &|s| s.slow_close = Some(delay)),
        _ => {}
    }
    (request, response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use faultline_policy::HttpResponse;

    #[test]
    fn request_stage_actions_map_to_http_effects() {
        let delay = Action::Delay {
            duration: Duration::from_millis(5),
            side: DelaySide::Response,
        };
        assert_eq!(
            http_fault(&delay),
            Some(HttpFault::DelayResponse(Duration::from_millis(5)))
        );
        let response = Arc::new(HttpResponse {
            status: StatusCode::SERVICE_UNAVAILABLE,
            headers: HeaderMap::new(),
            body: Bytes::from_static(b"down"),
        });
        assert_eq!(
            http_fault(&Action::Abort(AbortAction::Http(response.clone()))),
            http_fault(&Action::Respond(response)),
        );
        assert_eq!(
            http_fault(&Action::Abort(AbortAction::Reset)),
            Some(HttpFault::Reset)
        );
        // A delay and an abort asked for together: wait, then answer.
        assert_eq!(
            http_fault(&Action::DelayedAbort {
                delay: Duration::from_millis(7),
                abort: AbortAction::Reset,
            }),
            Some(HttpFault::Delayed(
                Duration::from_millis(7),
                Box::new(HttpFault::Reset)
            ))
        );
        // L4-only actions never apply to a request.
        assert_eq!(
            http_fault(&Action::Partition {
                mode: PartitionMode::Drop
            }),
            None
        );
    }

    #[test]
    fn connection_stage_actions_map_to_connection_effects() {
        assert_eq!(
            conn_fault(&Action::Partition {
                mode: PartitionMode::Reject
            }),
            Some(ConnFault::Reject)
        );
        assert_eq!(conn_fault(&Action::Hang), Some(ConnFault::Drop));
        assert_eq!(
            conn_fault(&Action::Abort(AbortAction::Reset)),
            Some(ConnFault::Reject)
        );
        assert_eq!(
            conn_fault(&Action::Reset {
                after_bytes: Some(10),
                after: None
            }),
            Some(ConnFault::ResetAfter {
                bytes: Some(10),
                after: None
            })
        );
        let (rate, unlimited) = (
            Shape {
                rate: Some(9),
                ..Shape::default()
            },
            Shape::default(),
        );
        assert_eq!(
            conn_fault(&Action::Bandwidth(BandwidthLimit::Connection(9))),
            Some(ConnFault::Shape {
                request: rate.clone(),
                response: rate.clone()
            })
        );
        assert_eq!(
            conn_fault(&Action::Bandwidth(BandwidthLimit::Sides {
                request: None,
                response: Some(9)
            })),
            Some(ConnFault::Shape {
                request: unlimited.clone(),
                response: rate
            })
        );
    }

    #[test]
    fn byte_stream_faults_land_on_their_sides() {
        let slice = Slice {
            average: 8,
            variation: 2,
            delay: Duration::from_millis(1),
        };
        let sliced = Shape {
            slice: Some(slice),
            ..Shape::default()
        };
        assert_eq!(
            conn_fault(&Action::Slicer {
                side: Side::Both,
                average_size: 8,
                size_variation: 2,
                delay: Duration::from_millis(1)
            }),
            Some(ConnFault::Shape {
                request: sliced.clone(),
                response: sliced
            })
        );
        assert_eq!(
            conn_fault(&Action::LimitData {
                side: Side::Request,
                bytes: 5
            }),
            Some(ConnFault::Shape {
                request: Shape {
                    limit: Some(5),
                    ..Shape::default()
                },
                response: Shape::default()
            })
        );
        assert_eq!(
            conn_fault(&Action::SlowClose {
                side: Side::Response,
                delay: Duration::from_secs(1)
            }),
            Some(ConnFault::Shape {
                request: Shape::default(),
                response: Shape {
                    slow_close: Some(Duration::from_secs(1)),
                    ..Shape::default()
                }
            })
        );
        // On HTTP only the response side of limitData acts: a truncated body.
        assert_eq!(
            http_fault(&Action::LimitData {
                side: Side::Response,
                bytes: 5
            }),
            Some(HttpFault::TruncateResponse(5))
        );
        for tcp_only in [
            Action::LimitData {
                side: Side::Request,
                bytes: 5,
            },
            Action::SlowClose {
                side: Side::Both,
                delay: Duration::from_secs(1),
            },
        ] {
            assert_eq!(http_fault(&tcp_only), None);
        }
    }
}
