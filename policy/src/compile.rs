//! `compile`: turns a [`Policy`] into [`CompiledPolicy`], where every
//! matcher is prebuilt (header names, methods, path patterns, CIDRs as
//! integers, pod selectors as sorted IP lists), every response is a ready
//! `HeaderMap` + `Bytes`, and each rule is filed under the stage where the
//! data plane asks about it (connection open, raw TCP, HTTP request).
//!
//! `compile` is infallible: `parse` has already validated the policy. For a
//! `Policy` built or deserialized by other means, a rule that cannot be
//! compiled is left out (and logged) rather than half-applied.
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use rand_distr::{LogNormal, Normal, Pareto};

mod first;
mod from_headers;
pub(crate) mod matchers;

pub use first::FIRST_MAX_CLIENTS;
pub use from_headers::{
    ABORT_GRPC_HEADER, ABORT_HEADER, CONTROL_HEADERS, DELAY_HEADER, Refusal, strip_control_headers,
};

use first::FirstCounter;
pub(crate) use from_headers::{Asked, HeaderControl};
pub(crate) use matchers::HostMatcher;
use matchers::{Pattern, PeerMatcher};

use crate::PeerIps;
use crate::action::{
    AbortAction, Action, BandwidthLimit, BodyRewrite, GrpcAbort, HttpResponse, Rewrite,
};
use crate::model::{
    Abort, Bandwidth, Delay, DelaySide, Direction, FaultKind, FaultSpec, HumanDuration,
    MAX_DURATION, Patch, Policy, PortRange, Protocol, Replace, Respond, ResponseMatch, Rule,
    StatusRange,
};
use crate::validate::{MAX_METHOD_BYTES, is_tchar};

/// A policy ready for per-request decisions. Cheap to share behind an `Arc`.
#[derive(Debug, Default)]
pub struct CompiledPolicy {
    pub(crate) rules: Vec<CompiledRule>,
    /// Indices into `rules`, per decision stage, in rule order.
    pub(crate) on_connect: Vec<usize>,
    pub(crate) on_tcp: Vec<usize>,
    /// Raw streams that start with a TLS ClientHello: `on_tcp` (TLS is a
    /// part of `protocol: tcp`) and the rules that need the ClientHello
    /// (`sni`, `host`, `protocol: tls`), in rule order.
    pub(crate) on_tls: Vec<usize>,
    pub(crate) on_request: Vec<usize>,
    /// Rules with a DNS match; no other stage sees them.
    pub(crate) on_dns: Vec<usize>,
    /// `on_request` narrowed to the rules a request with one of
    /// [`INDEXED_METHODS`] can match: a `GET` is never tested against
    /// `methods: [POST]` rules, however many there are.
    pub(crate) on_request_by_method: [Vec<usize>; INDEXED_METHODS.len()],
    /// Rules decided once the upstream's response head has arrived: those
    /// with `match.response`, and `replace`/`patch`.
    pub(crate) on_response: Vec<usize>,
    /// After this instant nothing is faulted any more (the policy's
    /// `until`/`duration`, set by the store), so faults end even when the
    /// controller that would remove the policy is unreachable.
    pub(crate) expires: Option<Instant>,
    /// A `fromHeaders` rule is in force: the data plane strips the control
    /// headers from every request.
    pub(crate) control_headers: bool,
}

/// The methods with their own list of candidate rules; requests with any
/// other method go through every `on_request` rule.
pub(crate) const INDEXED_METHODS: [Method; 7] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::HEAD,
    Method::PATCH,
    Method::OPTIONS,
];

#[derive(Debug)]
pub(crate) struct CompiledRule {
    pub index: usize,
    /// The rule's name, or `rules[i]` when it has none.
    pub name: Arc<str>,
    pub kind: FaultKind,
    pub matcher: Matcher,
    pub chance: Chance,
    pub first: Option<Arc<FirstCounter>>,
    pub fault: CompiledFault,
    /// The fault acts on raw TCP connections only (see
    /// [`FaultSpec::is_tcp_only`]): never asked about for HTTP requests.
    pub tcp_only: bool,
    /// The source rule, to carry `first` counts over identical recompiles.
    pub source: Rule,
}

#[derive(Debug, Default)]
pub(crate) struct Matcher {
    pub direction: Option<Direction>,
    pub ports: Option<Box<[PortRange]>>,
    pub protocol: Option<Protocol>,
    pub methods: Box<[Method]>,
    pub path: Option<Pattern>,
    pub headers: Box<[(HeaderName, Pattern)]>,
    pub host: Option<HostMatcher>,
    pub sni: Option<HostMatcher>,
    /// At the connection stages (open, raw TCP): the rule only matches a
    /// TLS connection, as it names `sni`, `host` (the SNI there) or
    /// `protocol: tls`.
    pub tls_only: bool,
    pub from: Option<PeerMatcher>,
    pub to: Option<PeerMatcher>,
    pub probes: bool,
    /// `match.dns.name`, lowercased without the trailing dot.
    pub dns_name: Option<Pattern>,
    /// `match.dns.types` as QTYPEs; empty: any.
    pub dns_types: Box<[u16]>,
    pub response: Option<ResponseMatcher>,
}

/// `match.response`, prebuilt.
#[derive(Debug, Default)]
pub(crate) struct ResponseMatcher {
    pub statuses: Option<Box<[StatusRange]>>,
    pub headers: Box<[(HeaderName, Pattern)]>,
}

/// `percent` as a threshold on a uniform `u64` draw: exact to 2^-64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chance {
    Always,
    Never,
    Below(u64),
}

impl Chance {
    pub fn from_percent(percent: Option<f64>) -> Self {
        match percent {
            None => Self::Always,
            Some(p) if p.is_nan() || p <= 0.0 => Self::Never,
            Some(p) if p >= 100.0 => Self::Always,
            // 2^64 * p / 100; the float-to-int cast saturates.
            Some(p) => Self::Below((p / 100.0 * 18_446_744_073_709_551_616.0) as u64),
        }
    }
}

#[derive(Debug)]
pub(crate) enum CompiledFault {
    Delay {
        sampler: DelaySampler,
        side: DelaySide,
    },
    Abort(AbortAction),
    Respond(Arc<HttpResponse>),
    /// A fault with nothing to sample per request: its action is decided
    /// once, here, and every match carries out the same.
    Fixed(Action),
    FromHeaders(HeaderControl),
    Rewrite(Arc<Rewrite>),
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum DelaySampler {
    /// Uniform over `min..=max` nanoseconds (`fixed` ± `jitter`, `uniform`).
    Uniform { min: u64, max: u64 },
    /// Normal in seconds, clamped to `0..=MAX_DURATION`.
    Normal(Normal<f64>),
    /// Log-normal in seconds, capped at `max` seconds.
    LogNormal { dist: LogNormal<f64>, max: f64 },
    /// Pareto in seconds, capped at `max` seconds.
    Pareto { dist: Pareto<f64>, max: f64 },
}

/// The standard normal quantile of 0.99: a log-normal's p99 is
/// `median * exp(Z_99 * sigma)`.
pub(crate) const Z_99: f64 = 2.326_347_874_040_841;

/// Compiles a policy against the current pod IPs of its selectors.
pub fn compile(policy: &Policy, peers: &PeerIps) -> CompiledPolicy {
    let mut out = CompiledPolicy::default();
    for (index, rule) in policy.rules.iter().enumerate() {
        match compile_rule(index, rule, peers) {
            Ok(compiled) => {
                let at = out.rules.len();
                let m = &compiled.matcher;
                if compiled.source.r#match.is_dns() {
                    out.on_dns.push(at);
                } else if compiled.kind.is_connection_level() {
                    out.on_connect.push(at);
                } else if compiled.kind.acts_on_response() || m.response.is_some() {
                    out.on_response.push(at);
                } else {
                    // Rules that need HTTP to match (or to act) never see
                    // raw TCP or TLS; the rest act on both.
                    let http_only = matches!(m.protocol, Some(Protocol::Http | Protocol::Grpc))
                        || !m.methods.is_empty()
                        || m.path.is_some()
                        || !m.headers.is_empty()
                        || matches!(
                            compiled.fault,
                            CompiledFault::Respond(_)
                                | CompiledFault::FromHeaders(_)
                                | CompiledFault::Abort(AbortAction::Http(_) | AbortAction::Grpc(_))
                        );
                    if !http_only {
                        if !m.tls_only {
                            out.on_tcp.push(at);
                        }
                        out.on_tls.push(at);
                    }
                    let copied_only = matches!(m.protocol, Some(Protocol::Tcp | Protocol::Tls));
                    if m.sni.is_none() && !copied_only && !compiled.tcp_only {
                        out.on_request.push(at);
                    }
                }
                out.control_headers |= matches!(compiled.fault, CompiledFault::FromHeaders(_));
                out.rules.push(compiled);
            }
            Err(why) => {
                tracing::warn!(rule = index, error = %why, "skipping a rule that failed to compile");
            }
        }
    }
    for (stage, method) in out.on_request_by_method.iter_mut().zip(&INDEXED_METHODS) {
        *stage = out
            .on_request
            .iter()
            .copied()
            .filter(|&at| {
                let methods = &out.rules[at].matcher.methods;
                methods.is_empty() || methods.contains(method)
            })
            .collect();
    }
    out
}

fn compile_rule(index: usize, rule: &Rule, peers: &PeerIps) -> Result<CompiledRule, String> {
    let fault = rule
        .fault()
        .ok_or("the rule does not set exactly one fault")?;
    let m = &rule.r#match;
    let methods = m
        .methods
        .iter()
        .map(|s| parse_method(s))
        .collect::<Result<Box<[Method]>, String>>()?;
    let headers = header_patterns(&m.headers)?;
    let matcher = Matcher {
        direction: m.direction,
        ports: m.port.as_ref().map(|p| p.0.clone().into_boxed_slice()),
        protocol: m.protocol,
        methods,
        path: m.path.as_deref().map(Pattern::new),
        headers,
        host: m.host.as_deref().map(HostMatcher::new),
        sni: m.sni.as_deref().map(HostMatcher::new),
        tls_only: m.host.is_some() || m.sni.is_some() || m.protocol == Some(Protocol::Tls),
        from: m.from.as_ref().map(|p| PeerMatcher::new(p, peers)),
        to: m.to.as_ref().map(|p| PeerMatcher::new(p, peers)),
        probes: m.probes,
        dns_name: m
            .dns
            .as_ref()
            .and_then(|d| d.name.as_deref())
            .map(|n| Pattern::new(&n.trim_end_matches('.').to_ascii_lowercase())),
        dns_types: m
            .dns
            .as_ref()
            .map(|d| d.types.iter().map(|t| t.code()).collect())
            .unwrap_or_default(),
        response: m.response.as_ref().map(response_matcher).transpose()?,
    };
    Ok(CompiledRule {
        index,
        name: rule
            .name
            .as_deref()
            .map_or_else(|| Arc::from(format!("rules[{index}]")), Arc::from),
        kind: fault.kind(),
        matcher,
        chance: Chance::from_percent(rule.percent),
        first: rule.first.map(|n| Arc::new(FirstCounter::new(n))),
        fault: compile_fault(fault)?,
        tcp_only: fault.is_tcp_only(),
        source: rule.clone(),
    })
}

fn compile_fault(fault: FaultSpec<'_>) -> Result<CompiledFault, String> {
    Ok(match fault {
        FaultSpec::Delay(d) => CompiledFault::Delay {
            sampler: delay_sampler(d)?,
            side: d.side,
        },
        FaultSpec::Abort(a) => CompiledFault::Abort(abort_action(a)?),
        FaultSpec::Respond(r) => CompiledFault::Respond(Arc::new(respond_response(r)?)),
        FaultSpec::Hang(_) => CompiledFault::Fixed(Action::Hang),
        FaultSpec::Bandwidth(b) => CompiledFault::Fixed(Action::Bandwidth(bandwidth_limit(b)?)),
        FaultSpec::Partition(p) => CompiledFault::Fixed(Action::Partition { mode: p.mode }),
        FaultSpec::Reset(r) => CompiledFault::Fixed(Action::Reset {
            after_bytes: r.after_bytes,
            after: r.after.map(|d| d.get()),
        }),
        FaultSpec::Slicer(s) => {
            let size = |n: u64| u32::try_from(n).map_err(|_| format!("slice of {n} bytes"));
            CompiledFault::Fixed(Action::Slicer {
                side: s.side,
                average_size: size(s.average_size.ok_or("slicer without averageSize")?)?,
                size_variation: size(s.size_variation)?,
                delay: s.delay.map_or(Duration::ZERO, |d| d.get()),
            })
        }
        FaultSpec::LimitData(l) => CompiledFault::Fixed(Action::LimitData {
            side: l.side,
            bytes: l.bytes.ok_or("limitData without bytes")?,
        }),
        FaultSpec::SlowClose(s) => CompiledFault::Fixed(Action::SlowClose {
            side: s.side,
            delay: s.delay.ok_or("slowClose without a delay")?.get(),
        }),
        FaultSpec::Dns(d) => CompiledFault::Fixed(Action::Dns { rcode: d.rcode }),
        FaultSpec::FromHeaders(h) => CompiledFault::FromHeaders(HeaderControl::new(h)?),
        FaultSpec::Replace(r) => CompiledFault::Rewrite(Arc::new(replace_rewrite(r)?)),
        FaultSpec::Patch(p) => CompiledFault::Rewrite(Arc::new(patch_rewrite(p)?)),
    })
}

fn header_patterns(
    headers: &std::collections::BTreeMap<String, String>,
) -> Result<Box<[(HeaderName, Pattern)]>, String> {
    headers
        .iter()
        .map(|(k, v)| Ok((parse_header_name(k)?, Pattern::new(v))))
        .collect()
}

fn response_matcher(m: &ResponseMatch) -> Result<ResponseMatcher, String> {
    Ok(ResponseMatcher {
        statuses: m.status.as_ref().map(|s| s.0.clone().into_boxed_slice()),
        headers: header_patterns(&m.headers)?,
    })
}

fn status_code(status: Option<u16>) -> Result<Option<StatusCode>, String> {
    status
        .map(|s| StatusCode::from_u16(s).map_err(|_| format!("{s} is not an HTTP status")))
        .transpose()
}

fn replace_rewrite(r: &Replace) -> Result<Rewrite, String> {
    Ok(Rewrite {
        status: status_code(r.status)?,
        replace_headers: r.headers.as_ref().map(header_map).transpose()?,
        set_headers: HeaderMap::new(),
        remove_headers: Box::new([]),
        body: r
            .body
            .as_ref()
            .map(|b| BodyRewrite::Replace(Bytes::from(b.clone()))),
    })
}

fn patch_rewrite(p: &Patch) -> Result<Rewrite, String> {
    let remove_headers = p
        .headers
        .remove
        .iter()
        .map(|name| {
            let name = parse_header_name(name)?;
            if RESERVED_RESPONSE_HEADERS.contains(&name.as_str()) {
                return Err(format!("header {name} is set by the proxy"));
            }
            Ok(name)
        })
        .collect::<Result<_, String>>()?;
    Ok(Rewrite {
        status: status_code(p.status)?,
        replace_headers: None,
        set_headers: header_map(&p.headers.set)?,
        remove_headers,
        body: p
            .body
            .as_ref()
            .map(|b| BodyRewrite::MergePatch(b.merge.clone())),
    })
}

fn bandwidth_limit(b: &Bandwidth) -> Result<BandwidthLimit, String> {
    if b.per_side() {
        return Ok(BandwidthLimit::Sides {
            request: b.request.map(|r| r.0),
            response: b.response.map(|r| r.0),
        });
    }
    b.bytes_per_second()
        .map(BandwidthLimit::Connection)
        .ok_or_else(|| "bandwidth without a rate".to_owned())
}

pub(crate) fn delay_sampler(d: &Delay) -> Result<DelaySampler, String> {
    let nanos = |d: HumanDuration| u64::try_from(d.get().as_nanos()).unwrap_or(u64::MAX);
    let secs = |d: HumanDuration| d.get().as_secs_f64();
    match (&d.fixed, &d.normal, &d.uniform, &d.lognormal, &d.pareto) {
        (Some(fixed), None, None, None, None) => {
            let (fixed, jitter) = (nanos(*fixed), d.jitter.map_or(0, nanos));
            Ok(DelaySampler::Uniform {
                min: fixed.saturating_sub(jitter),
                max: fixed.saturating_add(jitter),
            })
        }
        (None, Some(n), None, None, None) => Normal::new(secs(n.mean), secs(n.stddev))
            .map(DelaySampler::Normal)
            .map_err(bad_distribution("normal")),
        (None, None, Some(u), None, None) if u.min <= u.max => Ok(DelaySampler::Uniform {
            min: nanos(u.min),
            max: nanos(u.max),
        }),
        (None, None, None, Some(l), None) => {
            let sigma = (secs(l.p99) / secs(l.median)).ln() / Z_99;
            LogNormal::new(secs(l.median).ln(), sigma)
                .map(|dist| DelaySampler::LogNormal {
                    dist,
                    max: l.max.map_or(MAX_DURATION.as_secs_f64(), secs),
                })
                .map_err(bad_distribution("log-normal"))
        }
        (None, None, None, None, Some(p)) => Pareto::new(secs(p.scale), p.shape)
            .map(|dist| DelaySampler::Pareto {
                dist,
                max: secs(p.max),
            })
            .map_err(bad_distribution("Pareto")),
        _ => Err("delay needs exactly one valid distribution".into()),
    }
}

fn bad_distribution<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> String + '_ {
    move |e| format!("bad {what} distribution: {e}")
}

/// Methods are case-sensitive (RFC 9110 section 9.1) and compared exactly,
/// except that the standard ones may be written in any case (`get` is
/// `GET`), as policies always could.
pub(crate) fn parse_method(s: &str) -> Result<Method, String> {
    let bad = |why: &str| format!("{} is not an HTTP method: {why}", crate::model::quoted(s));
    if s.is_empty() || !s.bytes().all(is_tchar) {
        return Err(bad(
            "a method is an RFC 9110 token (letters, digits and !#$%&'*+-.^_`|~)",
        ));
    }
    if s.len() > MAX_METHOD_BYTES {
        return Err(bad(&format!("longer than {MAX_METHOD_BYTES} bytes")));
    }
    let standard = STANDARD_METHODS
        .iter()
        .find(|m| m.as_str().eq_ignore_ascii_case(s));
    match standard {
        Some(method) => Ok(method.clone()),
        None => Method::from_bytes(s.as_bytes()).map_err(|_| bad("not a token")),
    }
}

const STANDARD_METHODS: [Method; 9] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::CONNECT,
    Method::OPTIONS,
    Method::TRACE,
    Method::PATCH,
];

pub(crate) fn parse_header_name(s: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(s.trim().to_ascii_lowercase().as_bytes())
        .map_err(|_| format!("{} is not a valid header name", crate::model::quoted(s)))
}

/// Headers the proxy sets itself (from the body) or that would break framing.
pub(crate) const RESERVED_RESPONSE_HEADERS: [&str; 5] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
];

fn header_map(headers: &std::collections::BTreeMap<String, String>) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::with_capacity(headers.len());
    for (k, v) in headers {
        let name = parse_header_name(k)?;
        if RESERVED_RESPONSE_HEADERS.contains(&name.as_str()) {
            return Err(format!("header {name} is set by the proxy"));
        }
        let value = HeaderValue::from_str(v)
            .map_err(|_| format!("header {name}: value is not a valid header value"))?;
        map.append(name, value);
    }
    Ok(map)
}

fn http_response(
    status: u16,
    body: Option<&str>,
    headers: &std::collections::BTreeMap<String, String>,
) -> Result<HttpResponse, String> {
    let status =
        StatusCode::from_u16(status).map_err(|_| format!("{status} is not an HTTP status"))?;
    let mut headers = header_map(headers)?;
    let body = Bytes::from(body.unwrap_or_default().to_owned());
    if !body.is_empty() && !headers.contains_key(http::header::CONTENT_TYPE) {
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
    }
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

pub(crate) fn abort_action(a: &Abort) -> Result<AbortAction, String> {
    match (a.status, a.grpc, a.reset) {
        (Some(status), None, false) => Ok(AbortAction::Http(Arc::new(http_response(
            status,
            a.body.as_deref(),
            &a.headers,
        )?))),
        (None, Some(code), false) => Ok(AbortAction::Grpc(Arc::new(GrpcAbort {
            code,
            message: a
                .message
                .as_deref()
                .map(|m| HeaderValue::from_str(&grpc_percent_encode(m)))
                .transpose()
                .map_err(|_| "grpc message cannot be encoded".to_owned())?,
        }))),
        (None, None, true) => Ok(AbortAction::Reset),
        _ => Err("abort needs exactly one of status, grpc and reset".into()),
    }
}

fn respond_response(r: &Respond) -> Result<HttpResponse, String> {
    http_response(r.status.unwrap_or(200), r.body.as_deref(), &r.headers)
}

/// `grpc-message` is percent-encoded: everything outside printable ASCII
/// (0x20-0x7E) and `%` itself (gRPC HTTP/2 protocol spec).
pub(crate) fn grpc_percent_encode(message: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

impl CompiledPolicy {
    /// Shares `first` counters with `previous` for rules that are unchanged
    /// (same position, same definition), so re-applying the same policy
    /// does not grant `first: N` faults again.
    pub fn adopt_counters(&mut self, previous: &CompiledPolicy) {
        for rule in &mut self.rules {
            let Some(old) = previous.rules.iter().find(|r| r.index == rule.index) else {
                continue;
            };
            if old.source == rule.source && old.first.is_some() {
                rule.first = old.first.clone();
            }
        }
    }
}
