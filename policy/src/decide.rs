//! The per-request (and per-connection) decision: pure functions of a
//! [`CompiledPolicy`], what the data plane knows about the traffic, and a
//! random number generator (seeded in tests).
//!
//! The data plane asks at three points:
//! 1. [`CompiledPolicy::decide_connection`] when a connection is accepted,
//!    before reading anything: `partition` and `reset` rules. When a rule
//!    that needs the TLS ClientHello (`sni`, `host`, `protocol: tls`) could
//!    apply to the connection ([`CompiledPolicy::connection_waits_for_tls`]),
//!    the whole decision waits for detection instead
//!    ([`CompiledPolicy::decide_connection_with_tls`]), so rules keep
//!    their order; connections no such rule could apply to pay nothing.
//! 2. [`CompiledPolicy::decide_tcp`] once the connection turned out to be
//!    neither HTTP nor gRPC (or [`CompiledPolicy::decide_tls`] when it
//!    starts with a TLS ClientHello): `delay`, `hang`,
//!    `abort: {reset: true}`, `bandwidth`, `slicer`, `limitData` and
//!    `slowClose` rules without HTTP matchers.
//! 3. [`CompiledPolicy::decide_request`] for each HTTP/gRPC request:
//!    every rule except `partition`/`reset`, `protocol: tcp`, `tls` or
//!    `sni` ones and the raw-TCP-only byte-stream faults (`slicer`,
//!    `slowClose`, `limitData` on the request side), and those of point 4.
//! 4. [`CompiledPolicy::decide_response`] once the upstream's response head
//!    arrived: rules with `match.response`, and `replace`/`patch`. Their
//!    request-side matchers are checked with the request
//!    ([`CompiledPolicy::response_candidates`]); `percent` and `first` only
//!    count responses that match.
//!
//! DNS queries are asked about apart, with [`CompiledPolicy::decide_dns`]:
//! only rules with a DNS match (`protocol: dns` or `match.dns`) take part,
//! and those never see TCP connections or HTTP requests.
//!
//! Rules are tried in order; the first that matches, wins its `percent`
//! draw and has `first` budget left for the client applies, and it is the
//! only fault of its stage for that request or connection: a request gets
//! at most one fault decided with the request and one with the response.
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderMap, Method};
use rand::Rng;

use crate::action::{Action, BodyRewrite, Decision};
use crate::compile::matchers::Pattern;
use crate::compile::{
    Asked, Chance, CompiledFault, CompiledPolicy, CompiledRule, DelaySampler, HostMatcher,
    INDEXED_METHODS, Matcher, Refusal,
};
use crate::model::{DelaySide, Direction, FaultKind, MAX_DURATION, Protocol};

#[cfg(test)]
mod tests;

/// What the data plane knows about an HTTP or gRPC request.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'a> {
    pub direction: Direction,
    /// The original destination port (inbound: the application's port).
    pub destination_port: u16,
    /// `Http` or `Grpc` (see [`Protocol::of_request`]).
    pub protocol: Protocol,
    pub method: &'a Method,
    /// The path without the query string.
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    pub source_ip: IpAddr,
    pub destination_ip: IpAddr,
    /// The authority (`:authority` or `Host`), possibly with a port.
    pub host: Option<&'a str>,
}

/// What the data plane knows about an upstream's response head.
#[derive(Debug, Clone, Copy)]
pub struct ResponseInfo<'a> {
    pub status: u16,
    /// The head's headers; gRPC's `grpc-status` is here only in a
    /// trailers-only response.
    pub headers: &'a HeaderMap,
}

/// What the data plane knows about a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnInfo {
    pub direction: Direction,
    pub destination_port: u16,
    pub source_ip: IpAddr,
    pub destination_ip: IpAddr,
}

/// What the proxy read of a TLS connection's ClientHello (it never
/// decrypts anything).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TlsInfo<'a> {
    /// The server name the client asked for, if it sent one the proxy
    /// could read.
    pub sni: Option<&'a str>,
}

/// What the data plane knows about a DNS query (its first question).
#[derive(Debug, Clone, Copy)]
pub struct DnsQuery<'a> {
    /// The queried name in lowercase, without the trailing dot.
    pub name: &'a [u8],
    /// The QTYPE (1 = A, 28 = AAAA, ...).
    pub qtype: u16,
    /// The pod address that sent it (the `first: N` client).
    pub source_ip: IpAddr,
}

/// What [`CompiledPolicy::decide_request_outcome`] found.
#[derive(Debug, Default)]
pub struct RequestOutcome<'p> {
    pub decision: Option<Decision<'p>>,
    /// The first `fromHeaders` rule whose bounds refused what the request
    /// asked for (the request went on to the next rules).
    pub refused: Option<Refused<'p>>,
}

/// What [`CompiledPolicy::request_reach`] found the rules matching a
/// request could do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestReach {
    /// No rule matches: the request is never faulted.
    Nothing,
    /// Only rules that delay the request before it is forwarded match.
    RequestDelay,
    /// A rule that may do anything else matches (or one that reads the
    /// request's control headers).
    Other,
}

/// A request's control headers that a `fromHeaders` rule did not honour.
#[derive(Debug, Clone, PartialEq)]
pub struct Refused<'p> {
    /// The rule's `name`, or `rules[i]`.
    pub rule_name: &'p Arc<str>,
    pub refusal: Refusal,
}

const PROBE_USER_AGENT: &[u8] = b"kube-probe/";

/// True for kubelet probes, which no rule faults unless it says `probes: true`.
pub fn is_probe(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::USER_AGENT)
        .is_some_and(|ua| ua.as_bytes().starts_with(PROBE_USER_AGENT))
}

impl CompiledPolicy {
    /// A policy with no rules: nothing is ever faulted.
    pub fn empty() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Number of rules that compiled.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// When the policy stops applying, if it has `until` or `duration`.
    pub fn expires(&self) -> Option<Instant> {
        self.expires
    }

    /// Stops all faults at `at` (the store derives it from `until` or
    /// `duration`).
    pub fn set_expires(&mut self, at: Option<Instant>) {
        self.expires = at;
    }

    fn expired(&self) -> bool {
        // Only policies with an end pay for reading the clock.
        self.expires.is_some_and(|at| Instant::now() >= at)
    }

    /// How often rule `rule_index` (a `first: N` rule) fired for `client`.
    pub fn first_used(&self, rule_index: usize, client: IpAddr) -> Option<u32> {
        let rule = self.rules.iter().find(|r| r.index == rule_index)?;
        rule.first.as_ref().map(|f| f.used(client))
    }

    /// The fault for an HTTP/gRPC request, if any.
    pub fn decide_request<R: Rng + ?Sized>(
        &self,
        req: &RequestInfo<'_>,
        rng: &mut R,
    ) -> Option<Decision<'_>> {
        self.decide_request_outcome(req, rng).decision
    }

    /// [`Self::decide_request`], and the first `fromHeaders` request the
    /// policy refused on the way (the data plane counts and logs it).
    pub fn decide_request_outcome<R: Rng + ?Sized>(
        &self,
        req: &RequestInfo<'_>,
        rng: &mut R,
    ) -> RequestOutcome<'_> {
        let mut outcome = RequestOutcome::default();
        let stage = self.request_stage(req.method);
        if stage.is_empty() || self.expired() {
            return outcome;
        }
        let probe = is_probe(req.headers);
        let path = req.path.split_once('?').map_or(req.path, |(p, _)| p);
        let matches = |m: &Matcher| m.request_matches(req, probe, path);
        let refused = &mut outcome.refused;
        outcome.decision = stage
            .iter()
            .filter_map(|i| self.rules.get(*i))
            .find_map(|rule| {
                if !matches(&rule.matcher) {
                    return None;
                }
                // What the request asks for is part of matching: the
                // `percent` draw and the `first` budget come after.
                let asked = match &rule.fault {
                    CompiledFault::FromHeaders(_) if probe => return None,
                    CompiledFault::FromHeaders(control) => {
                        match control.read(req.headers, req.protocol) {
                            Asked::Nothing => return None,
                            Asked::Refused(refusal) => {
                                refused.get_or_insert(Refused {
                                    rule_name: &rule.name,
                                    refusal,
                                });
                                return None;
                            }
                            Asked::Fault { action, kind } => Some((action, kind)),
                        }
                    }
                    _ => None,
                };
                if !rule.fires(req.source_ip, rng) {
                    return None;
                }
                Some(match asked {
                    Some((action, kind)) => rule.decision_for(action, kind),
                    None => rule.decision(rng),
                })
            });
        outcome
    }

    /// Whether any rule could act on a request with `method` at all (a
    /// request-stage rule for the method, a response-stage rule, or a
    /// `fromHeaders` rule whose headers must be stripped): when not, a
    /// data plane need not gather the rest of the request to ask.
    pub fn may_act_on_request(&self, method: &Method) -> bool {
        self.control_headers
            || !self.on_response.is_empty()
            || (!self.request_stage(method).is_empty() && !self.expired())
    }

    /// Whether any rule could act on an HTTP request of connection `conn`,
    /// whatever the request: only its direction, port and addresses are
    /// known. When not, a data plane may carry the connection's requests
    /// without reading them. A `fromHeaders` rule counts for every
    /// connection (its headers are stripped from every request); an
    /// expired policy for none.
    pub fn may_act_on_http(&self, conn: &ConnInfo) -> bool {
        if self.control_headers {
            return true;
        }
        if self.expired() {
            return false;
        }
        self.on_request
            .iter()
            .chain(&self.on_response)
            .filter_map(|i| self.rules.get(*i))
            .any(|rule| {
                rule.matcher.l4_matches(
                    conn.direction,
                    conn.destination_port,
                    conn.source_ip,
                    conn.destination_ip,
                )
            })
    }

    /// What the request-stage rules this request matches could do to it,
    /// found without drawing `percent` or spending a `first` budget: a data
    /// plane that can only carry out some faults asks before
    /// [`Self::decide_request_outcome`], and hands requests it cannot fault
    /// itself to a path that decides them once, from scratch.
    pub fn request_reach(&self, req: &RequestInfo<'_>) -> RequestReach {
        let stage = self.request_stage(req.method);
        if stage.is_empty() || self.expired() {
            return RequestReach::Nothing;
        }
        let probe = is_probe(req.headers);
        let path = req.path.split_once('?').map_or(req.path, |(p, _)| p);
        let mut reach = RequestReach::Nothing;
        for rule in stage.iter().filter_map(|i| self.rules.get(*i)) {
            if !rule.matcher.request_matches(req, probe, path) {
                continue;
            }
            match &rule.fault {
                CompiledFault::Delay {
                    side: DelaySide::Request,
                    ..
                }
                | CompiledFault::Fixed(Action::Delay {
                    side: DelaySide::Request,
                    ..
                }) => reach = RequestReach::RequestDelay,
                _ => return RequestReach::Other,
            }
        }
        reach
    }

    /// True while a `fromHeaders` rule is in force: the data plane then
    /// removes the control headers ([`crate::CONTROL_HEADERS`]) from every
    /// request before forwarding it.
    pub fn reads_control_headers(&self) -> bool {
        self.control_headers
    }

    /// Whether any rule is decided on the upstream's response; only then
    /// does the data plane ask [`Self::response_candidates`].
    pub fn has_response_rules(&self) -> bool {
        !self.on_response.is_empty()
    }

    /// The response-stage rules (`match.response`, `replace`, `patch`) whose
    /// request-side matchers match this request, in rule order. Nothing is
    /// drawn or counted yet: `percent` and `first` only count responses
    /// that match too ([`Self::decide_response`]).
    pub fn response_candidates(&self, req: &RequestInfo<'_>) -> Vec<usize> {
        if self.on_response.is_empty() || self.expired() {
            return Vec::new();
        }
        let probe = is_probe(req.headers);
        let path = req.path.split_once('?').map_or(req.path, |(p, _)| p);
        self.on_response
            .iter()
            .copied()
            .filter(|&i| {
                self.rules
                    .get(i)
                    .is_some_and(|r| r.matcher.request_matches(req, probe, path))
            })
            .collect()
    }

    /// Whether one of `candidates` (from [`Self::response_candidates`])
    /// matches on the response's headers: when none does, the decision
    /// reads only its status, and a data plane may ask with no headers.
    pub fn response_reads_headers(&self, candidates: &[usize]) -> bool {
        candidates
            .iter()
            .filter_map(|i| self.rules.get(*i))
            .any(|rule| {
                rule.matcher
                    .response
                    .as_ref()
                    .is_some_and(|r| !r.headers.is_empty())
            })
    }

    /// Whether one of `candidates` may need the response's whole body to
    /// apply its fault (a JSON merge `patch`): a data plane that streams
    /// bodies verbatim leaves such requests to one that can hold a body.
    pub fn response_needs_body(&self, candidates: &[usize]) -> bool {
        candidates
            .iter()
            .filter_map(|i| self.rules.get(*i))
            .any(|rule| {
                matches!(&rule.fault, CompiledFault::Rewrite(r)
                    if matches!(r.body, Some(BodyRewrite::MergePatch(_))))
            })
    }

    /// The fault for an upstream's response to a request whose
    /// [`Self::response_candidates`] were `candidates` (asked of this same
    /// compiled policy).
    pub fn decide_response<R: Rng + ?Sized>(
        &self,
        candidates: &[usize],
        client: IpAddr,
        resp: &ResponseInfo<'_>,
        rng: &mut R,
    ) -> Option<Decision<'_>> {
        if candidates.is_empty() || self.expired() {
            return None;
        }
        self.first_firing(candidates, client, rng, |m| {
            m.response.as_ref().is_none_or(|r| {
                r.statuses
                    .as_ref()
                    .is_none_or(|s| s.iter().any(|range| range.contains(resp.status)))
                    && headers_match(&r.headers, resp.headers)
            })
        })
    }

    /// The request-stage rules a request with `method` can match.
    fn request_stage(&self, method: &Method) -> &[usize] {
        INDEXED_METHODS
            .iter()
            .position(|m| m == method)
            .map_or(&self.on_request, |i| &self.on_request_by_method[i])
    }

    /// The connection-level fault (`partition`, `reset`) for a new
    /// connection, decided before reading anything. Only valid when
    /// [`Self::connection_waits_for_tls`] is false: rules that need the
    /// ClientHello do not match here.
    pub fn decide_connection<R: Rng + ?Sized>(
        &self,
        conn: &ConnInfo,
        rng: &mut R,
    ) -> Option<Decision<'_>> {
        self.decide_l4(&self.on_connect, conn, None, rng)
    }

    /// Whether a connection-level rule that needs the TLS ClientHello could
    /// apply to `conn`: then the connection-level decision waits for
    /// protocol detection ([`Self::decide_connection_with_tls`]).
    pub fn connection_waits_for_tls(&self, conn: &ConnInfo) -> bool {
        self.any_l4_match(&self.on_connect, conn, |m| m.tls_only)
    }

    /// The connection-level fault once detection is done: `tls` is what the
    /// ClientHello said, `None` when the connection is not TLS.
    pub fn decide_connection_with_tls<R: Rng + ?Sized>(
        &self,
        conn: &ConnInfo,
        tls: Option<TlsInfo<'_>>,
        rng: &mut R,
    ) -> Option<Decision<'_>> {
        self.decide_l4(&self.on_connect, conn, tls, rng)
    }

    /// Whether some rule for `conn` looks at the server name, so a TLS
    /// connection's ClientHello must be read whole: without one, TLS
    /// connections are forwarded as soon as they are recognised.
    pub fn needs_sni(&self, conn: &ConnInfo) -> bool {
        let names = |m: &Matcher| m.sni.is_some() || m.host.is_some();
        self.any_l4_match(&self.on_connect, conn, names)
            || self.any_l4_match(&self.on_tls, conn, names)
    }

    /// The fault for a connection detected as raw TCP (not HTTP, gRPC or TLS).
    pub fn decide_tcp<R: Rng + ?Sized>(
        &self,
        conn: &ConnInfo,
        rng: &mut R,
    ) -> Option<Decision<'_>> {
        self.decide_l4(&self.on_tcp, conn, None, rng)
    }

    /// The fault for a connection that starts with a TLS ClientHello.
    pub fn decide_tls<R: Rng + ?Sized>(
        &self,
        conn: &ConnInfo,
        tls: TlsInfo<'_>,
        rng: &mut R,
    ) -> Option<Decision<'_>> {
        self.decide_l4(&self.on_tls, conn, Some(tls), rng)
    }

    fn any_l4_match(
        &self,
        stage: &[usize],
        conn: &ConnInfo,
        wanted: impl Fn(&Matcher) -> bool,
    ) -> bool {
        stage.iter().filter_map(|i| self.rules.get(*i)).any(|rule| {
            let m = &rule.matcher;
            wanted(m)
                && m.l4_matches(
                    conn.direction,
                    conn.destination_port,
                    conn.source_ip,
                    conn.destination_ip,
                )
        }) && !self.expired()
    }

    /// The fault for a DNS query the pod sent, if any.
    pub fn decide_dns<R: Rng + ?Sized>(
        &self,
        query: &DnsQuery<'_>,
        rng: &mut R,
    ) -> Option<Decision<'_>> {
        if self.on_dns.is_empty() || self.expired() {
            return None;
        }
        self.first_firing(&self.on_dns, query.source_ip, rng, |m| {
            m.dns_name.as_ref().is_none_or(|p| p.matches(query.name))
                && (m.dns_types.is_empty() || m.dns_types.contains(&query.qtype))
        })
    }

    /// Whether any rule is about DNS (the proxy warns when such a policy
    /// reaches a pod whose DNS is not captured).
    pub fn has_dns_rules(&self) -> bool {
        !self.on_dns.is_empty()
    }

    fn decide_l4<R: Rng + ?Sized>(
        &self,
        stage: &[usize],
        conn: &ConnInfo,
        tls: Option<TlsInfo<'_>>,
        rng: &mut R,
    ) -> Option<Decision<'_>> {
        if stage.is_empty() || self.expired() {
            return None;
        }
        self.first_firing(stage, conn.source_ip, rng, |m| {
            m.l4_matches(
                conn.direction,
                conn.destination_port,
                conn.source_ip,
                conn.destination_ip,
            ) && m.tls_matches(tls)
        })
    }

    fn first_firing<R: Rng + ?Sized>(
        &self,
        stage: &[usize],
        client: IpAddr,
        rng: &mut R,
        matches: impl Fn(&Matcher) -> bool,
    ) -> Option<Decision<'_>> {
        stage
            .iter()
            .filter_map(|i| self.rules.get(*i))
            .find(|rule| matches(&rule.matcher) && rule.fires(client, rng))
            .map(|rule| rule.decision(rng))
    }
}

fn headers_match(patterns: &[(http::HeaderName, Pattern)], headers: &HeaderMap) -> bool {
    patterns.iter().all(|(name, pattern)| {
        headers
            .get_all(name)
            .iter()
            .any(|v| pattern.matches(v.as_bytes()))
    })
}

impl Matcher {
    /// At the connection stages: a rule that needs the ClientHello only
    /// matches TLS connections, and its `sni` and `host` the server name.
    fn tls_matches(&self, tls: Option<TlsInfo<'_>>) -> bool {
        if !self.tls_only {
            return true;
        }
        let Some(tls) = tls else {
            return false;
        };
        let named = |h: &Option<HostMatcher>| {
            h.as_ref()
                .is_none_or(|h| tls.sni.is_some_and(|sni| h.matches_name(sni)))
        };
        named(&self.sni) && named(&self.host)
    }

    /// Everything but `match.response`; `path` is without its query.
    fn request_matches(&self, req: &RequestInfo<'_>, probe: bool, path: &str) -> bool {
        (!probe || self.probes)
            && self.l4_matches(
                req.direction,
                req.destination_port,
                req.source_ip,
                req.destination_ip,
            )
            && self.protocol.is_none_or(|p| p == req.protocol)
            && (self.methods.is_empty() || self.methods.contains(req.method))
            && self
                .path
                .as_ref()
                .is_none_or(|p| p.matches(path.as_bytes()))
            && self
                .host
                .as_ref()
                .is_none_or(|h| req.host.is_some_and(|host| h.matches(host)))
            && headers_match(&self.headers, req.headers)
    }

    fn l4_matches(
        &self,
        direction: Direction,
        port: u16,
        source: IpAddr,
        destination: IpAddr,
    ) -> bool {
        self.direction.is_none_or(|d| d == direction)
            && self
                .ports
                .as_ref()
                .is_none_or(|ps| ps.iter().any(|r| r.contains(port)))
            && self.from.as_ref().is_none_or(|p| p.matches(source))
            && self.to.as_ref().is_none_or(|p| p.matches(destination))
    }
}

impl CompiledRule {
    /// The `percent` draw, then the `first` budget (only spent when firing).
    fn fires<R: Rng + ?Sized>(&self, client: IpAddr, rng: &mut R) -> bool {
        let drawn = match self.chance {
            Chance::Always => true,
            Chance::Never => false,
            Chance::Below(threshold) => rng.next_u64() < threshold,
        };
        drawn && self.first.as_ref().is_none_or(|f| f.try_take(client))
    }

    fn decision_for(&self, action: Action, kind: FaultKind) -> Decision<'_> {
        Decision {
            rule_index: self.index,
            rule_name: &self.name,
            kind,
            action,
        }
    }

    fn decision<R: Rng + ?Sized>(&self, rng: &mut R) -> Decision<'_> {
        let action = match &self.fault {
            CompiledFault::Delay { sampler, side } => Action::Delay {
                duration: sampler.sample(rng),
                side: *side,
            },
            CompiledFault::Abort(a) => Action::Abort(a.clone()),
            CompiledFault::Respond(r) => Action::Respond(Arc::clone(r)),
            CompiledFault::Fixed(action) => action.clone(),
            // Decided from the request's headers (`decision_for`); a zero
            // delay changes nothing.
            CompiledFault::FromHeaders(_) => Action::Delay {
                duration: Duration::ZERO,
                side: crate::model::DelaySide::Request,
            },
            CompiledFault::Rewrite(r) => Action::Rewrite(Arc::clone(r)),
        };
        self.decision_for(action, self.kind)
    }
}

impl DelaySampler {
    pub(crate) fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> Duration {
        match *self {
            Self::Uniform { min, max } if min >= max => Duration::from_nanos(min),
            Self::Uniform { min, max } => Duration::from_nanos(rng.random_range(min..=max)),
            Self::Normal(normal) => capped_secs(rng.sample(normal), MAX_DURATION.as_secs_f64()),
            Self::LogNormal { dist, max } => capped_secs(rng.sample(dist), max),
            Self::Pareto { dist, max } => capped_secs(rng.sample(dist), max),
        }
    }
}

/// A sample in seconds as a delay in `0..=max` seconds. `max` bounds the
/// heavy tails (a sample above it waits exactly `max`); `f64::max` and
/// `f64::min` turn a NaN into the bound rather than propagate it.
fn capped_secs(secs: f64, max: f64) -> Duration {
    Duration::try_from_secs_f64(secs.max(0.0).min(max)).unwrap_or(Duration::ZERO)
}
