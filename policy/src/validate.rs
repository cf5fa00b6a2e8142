//! Validation of a deserialized [`Policy`]: everything serde cannot check
//! on its own (ranges, exactly-one-of, cross-field constraints such as
//! "abort.grpc needs protocol grpc"). The first problem found is returned,
//! naming the rule and the field.
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use http::HeaderValue;

use crate::compile::{RESERVED_RESPONSE_HEADERS, parse_header_name, parse_method};
use crate::error::{PolicyError, RuleRef};
use crate::model::quoted;
use crate::model::{
    Abort, Bandwidth, Delay, DelaySide, Direction, DnsMatch, FaultSpec, FromHeaders, HumanDuration,
    LimitData, LogNormalDelay, MAX_DURATION, Match, ParetoDelay, Patch, Peer, Policy, Protocol,
    Replace, Respond, ResponseMatch, Rule, Selector, Side, Slicer, SlowClose,
};

type Check = Result<(), (String, String)>;

/// The longest method a policy may name and the proxy recognises as HTTP
/// (the longest registered method, `UPDATEREDIRECTREF`, has 17 bytes).
pub const MAX_METHOD_BYTES: usize = 32;

/// The longest `path` or header value pattern. Matching is linear in the
/// pattern and the text, so this only keeps policies (and the memory of
/// their compiled form) small.
pub const MAX_PATTERN_BYTES: usize = 1024;

/// The largest `slicer.averageSize`: a chunk as large as the proxy's copy
/// buffer is no slicing at all.
pub const MAX_SLICE_BYTES: u64 = 64 * 1024;

/// The longest `slicer.delay` between two chunks.
pub const MAX_SLICE_DELAY: Duration = Duration::from_secs(10);

/// The longest `slowClose.delay`: a held close keeps the connection (and
/// its slot under the proxy's connection limit) for that long.
pub const MAX_SLOW_CLOSE: Duration = Duration::from_secs(600);

/// An RFC 9110 `tchar`: what a method (a `token`) is made of.
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn fail<T>(field: impl Into<String>, message: impl Into<String>) -> Result<T, (String, String)> {
    Err((field.into(), message.into()))
}

/// Checks a policy; `parse` calls this after deserializing.
pub fn validate(policy: &Policy) -> Result<(), PolicyError> {
    if policy.duration.is_some() && policy.until.is_some() {
        return Err(PolicyError::at(
            None,
            "until",
            "cannot be combined with duration (set one of them)",
        ));
    }
    if policy.duration().is_some_and(|d| d.is_zero()) {
        return Err(PolicyError::at(None, "duration", "must be longer than 0s"));
    }
    let mut names: HashMap<&str, usize> = HashMap::new();
    for (index, rule) in policy.rules.iter().enumerate() {
        let at = |(field, message): (String, String)| {
            PolicyError::at(
                Some(RuleRef {
                    index,
                    name: rule.name.clone(),
                }),
                field,
                message,
            )
        };
        if let Some(name) = &rule.name
            && let Some(first) = names.insert(name.as_str(), index)
        {
            return Err(at(("name".into(), format!("duplicate of rules[{first}]"))));
        }
        validate_rule(rule).map_err(at)?;
    }
    Ok(())
}

fn validate_rule(rule: &Rule) -> Check {
    if let Some(name) = &rule.name {
        validate_rule_name(name)?;
    }
    let faults = rule.faults();
    let fault = match faults.as_slice() {
        [one] => *one,
        [] => {
            return fail(
                "",
                "no fault: set one of delay, abort, respond, hang, bandwidth, partition, reset, \
                 slicer, limitData, slowClose, dns, fromHeaders, replace, patch",
            );
        }
        many => {
            let kinds: Vec<&str> = many.iter().map(|f| f.kind().as_str()).collect();
            return fail(
                "",
                format!(
                    "several faults ({}): a rule sets exactly one",
                    kinds.join(", ")
                ),
            );
        }
    };
    if let Some(p) = rule.percent
        && !(0.0..=100.0).contains(&p)
    {
        return fail("percent", format!("{p} is not between 0 and 100"));
    }
    if rule.first == Some(0) {
        return fail("first", "must be at least 1");
    }
    validate_match(&rule.r#match)?;
    if rule.r#match.is_dns() {
        validate_dns_rule(fault, &rule.r#match)?;
    } else if let FaultSpec::Dns(_) = fault {
        return fail("dns", "needs a DNS match: match.protocol: dns or match.dns");
    }
    validate_fault_vs_match(fault, &rule.r#match)?;
    match fault {
        FaultSpec::Delay(d) => validate_delay(d),
        FaultSpec::Abort(a) => validate_abort(a, rule.r#match.protocol),
        FaultSpec::Respond(r) => validate_respond(r),
        FaultSpec::Hang(_) => Ok(()),
        FaultSpec::Bandwidth(b) => validate_bandwidth(b),
        FaultSpec::Partition(_) | FaultSpec::Dns(_) => Ok(()),
        FaultSpec::FromHeaders(h) => validate_from_headers(h),
        FaultSpec::Replace(r) => validate_replace(r),
        FaultSpec::Patch(p) => validate_patch(p),
        FaultSpec::Reset(r) => {
            if r.after_bytes.is_none() && r.after.is_none() {
                return fail(
                    "reset",
                    "set afterBytes, after, or both (whichever comes first)",
                );
            }
            Ok(())
        }
        FaultSpec::Slicer(s) => validate_slicer(s),
        FaultSpec::LimitData(l) => validate_limit_data(l),
        FaultSpec::SlowClose(s) => validate_slow_close(s),
    }
}

fn validate_bandwidth(b: &Bandwidth) -> Check {
    if b.per_side() {
        if b.bytes_per_second.is_some() || b.rate.is_some() {
            let one = if b.rate.is_some() {
                "bandwidth.rate"
            } else {
                "bandwidth.bytesPerSecond"
            };
            return fail(
                one,
                "limits both sides: set it, or request/response for each side, not both",
            );
        }
        for (field, rate) in [
            ("bandwidth.request", b.request),
            ("bandwidth.response", b.response),
        ] {
            if rate.is_some_and(|r| r.0 == 0) {
                return fail(field, "must be at least 1 byte per second");
            }
        }
        return Ok(());
    }
    match (b.bytes_per_second, b.rate) {
        (Some(_), Some(_)) => fail("bandwidth", "set one of bytesPerSecond and rate, not both"),
        (None, None) => fail(
            "bandwidth",
            "set rate (e.g. rate: 64KiB), bytesPerSecond, or request/response",
        ),
        (Some(0), _) => fail("bandwidth.bytesPerSecond", "must be at least 1"),
        (_, Some(r)) if r.0 == 0 => fail("bandwidth.rate", "must be at least 1 byte per second"),
        _ => Ok(()),
    }
}

fn validate_slicer(s: &Slicer) -> Check {
    let Some(average) = s.average_size else {
        return fail(
            "slicer.averageSize",
            "is required (bytes per chunk, e.g. 64)",
        );
    };
    if !(1..=MAX_SLICE_BYTES).contains(&average) {
        return fail(
            "slicer.averageSize",
            format!("{average} is not between 1 and {MAX_SLICE_BYTES} bytes"),
        );
    }
    if s.size_variation >= average {
        return fail(
            "slicer.sizeVariation",
            format!(
                "{} must be smaller than averageSize ({average}): a chunk has at least 1 byte",
                s.size_variation
            ),
        );
    }
    if let Some(delay) = s.delay
        && delay.get() > MAX_SLICE_DELAY
    {
        return fail(
            "slicer.delay",
            format!("{delay} is longer than 10s between two chunks"),
        );
    }
    Ok(())
}

fn validate_limit_data(l: &LimitData) -> Check {
    if l.bytes.is_none() {
        return fail(
            "limitData.bytes",
            "is required (close after this many bytes)",
        );
    }
    if l.side == Side::Both {
        return fail(
            "limitData.side",
            "counts one side: request or response (reset: {afterBytes} counts both)",
        );
    }
    Ok(())
}

fn validate_slow_close(s: &SlowClose) -> Check {
    match s.delay {
        None => fail(
            "slowClose.delay",
            "is required (how long to hold the close)",
        ),
        Some(delay) if delay.get().is_zero() => fail("slowClose.delay", "must be longer than 0s"),
        Some(delay) if delay.get() > MAX_SLOW_CLOSE => {
            fail("slowClose.delay", format!("{delay} is longer than 10m"))
        }
        Some(_) => Ok(()),
    }
}

fn validate_rule_name(name: &str) -> Check {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if name.is_empty() || name.len() > 63 || !ok_chars {
        return fail(
            "name",
            "must be 1-63 characters of letters, digits, '-', '_' or '.'",
        );
    }
    Ok(())
}

fn validate_match(m: &Match) -> Check {
    for (i, method) in m.methods.iter().enumerate() {
        parse_method(method).map_err(|e| (format!("match.methods[{i}]"), e))?;
    }
    if let Some(path) = &m.path {
        check_pattern_length("match.path", path)?;
        if !(path.starts_with('/') || path.starts_with('*')) {
            return fail(
                "match.path",
                format!("{} must start with / (or *)", quoted(path)),
            );
        }
        if path.contains('?') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return fail(
                "match.path",
                format!(
                    "{} may not contain '?', spaces or control characters (the query is not matched)",
                    quoted(path)
                ),
            );
        }
    }
    for (name, pattern) in &m.headers {
        let field = format!("match.headers.{name}");
        let header = validate_header_pattern(&field, name, pattern)?;
        if header == http::header::HOST {
            return fail(field, "match the destination host with match.host");
        }
    }
    if let Some(response) = &m.response {
        validate_response_match(response)?;
    }
    if let Some(host) = &m.host {
        validate_host(host).map_err(|e| ("match.host".to_owned(), e))?;
    }
    if let Some(sni) = &m.sni {
        validate_sni(sni).map_err(|e| ("match.sni".to_owned(), e))?;
    }
    for (field, peer) in [("match.from", &m.from), ("match.to", &m.to)] {
        if let Some(peer) = peer {
            validate_peer(field, peer)?;
        }
    }
    if let Some(p @ (Protocol::Tcp | Protocol::Tls)) = m.protocol
        && let Some(first) = m.l7_fields().first()
    {
        return fail(
            format!("match.{first}"),
            format!(
                "needs HTTP: cannot be combined with protocol {}",
                p.as_str()
            ),
        );
    }
    if m.sni.is_some() {
        if let Some(first) = m.l7_fields().first() {
            return fail(
                format!("match.{first}"),
                "needs HTTP: cannot be combined with sni (TLS is forwarded without being decrypted)",
            );
        }
        if let Some(p @ (Protocol::Http | Protocol::Grpc)) = m.protocol {
            return fail(
                "match.sni",
                format!(
                    "is read from a TLS ClientHello: cannot be combined with protocol {} (match HTTP hosts with host)",
                    p.as_str()
                ),
            );
        }
    }
    Ok(())
}

/// An SNI is a DNS name (RFC 6066 section 3 forbids IP literals).
fn validate_sni(sni: &str) -> Result<(), String> {
    if sni.parse::<std::net::IpAddr>().is_ok() {
        return Err(format!(
            "{} is an IP address, which TLS clients never send as SNI; match addresses with to.cidrs",
            quoted(sni)
        ));
    }
    validate_host(sni)
}

/// A DNS rule sees one query: its name and type, sent by the pod itself to
/// its resolver. Everything else a match can say does not exist there.
fn validate_dns_rule(fault: FaultSpec<'_>, m: &Match) -> Check {
    if let Some(protocol) = m.protocol
        && protocol != Protocol::Dns
    {
        return fail(
            "match.protocol",
            format!(
                "{} cannot be combined with match.dns (DNS queries are protocol dns)",
                protocol.as_str()
            ),
        );
    }
    let http = m.l7_fields().first().map(|f| format!("match.{f}"));
    let host = m.host.is_some().then(|| "match.host".to_owned());
    if let Some(field) = http.or(host) {
        return fail(
            field,
            "is an HTTP matcher; a DNS rule selects queries with match.dns (name, types)",
        );
    }
    if m.sni.is_some() {
        return fail(
            "match.sni",
            "is a TLS matcher; a DNS rule selects queries with match.dns (name, types)",
        );
    }
    if m.direction == Some(Direction::Inbound) {
        return fail(
            "match.direction",
            "DNS queries are captured as the pod sends them: use outbound or leave it out",
        );
    }
    for (field, set) in [
        ("match.port", m.port.is_some()),
        ("match.from", m.from.is_some()),
        ("match.to", m.to.is_some()),
    ] {
        if set {
            return fail(
                field,
                "does not apply to DNS queries (captured on port 53, sent by the pod to its resolver); \
                 select them with match.dns (name, types)",
            );
        }
    }
    if let Some(dns) = &m.dns {
        validate_dns_match(dns)?;
    }
    match fault {
        FaultSpec::Dns(_) | FaultSpec::Delay(_) | FaultSpec::Hang(_) => Ok(()),
        other => fail(
            other.kind().as_str(),
            "does not apply to DNS queries; use dns: {rcode: NXDOMAIN|SERVFAIL|REFUSED}, \
             delay, or hang (the query is dropped)",
        ),
    }
}

/// The longest DNS name (RFC 1035: 255 bytes on the wire, 253 as text).
pub const MAX_DNS_NAME_BYTES: usize = 253;

fn validate_dns_match(dns: &DnsMatch) -> Check {
    if let Some(name) = &dns.name {
        let bare = name.strip_suffix('.').unwrap_or(name);
        if bare.is_empty() || bare.len() > MAX_DNS_NAME_BYTES {
            return fail(
                "match.dns.name",
                format!("{} must be 1-{MAX_DNS_NAME_BYTES} characters", quoted(name)),
            );
        }
        let ok = bare
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'*'));
        if !ok || bare.contains("..") || bare.starts_with('.') {
            return fail(
                "match.dns.name",
                format!(
                    "{} is not a DNS name pattern (letters, digits, '-', '_' in dot-separated labels; \
                     '*' matches any run of characters)",
                    quoted(name)
                ),
            );
        }
    }
    for (i, t) in dns.types.iter().enumerate() {
        if dns.types[..i].contains(t) {
            return fail(
                format!("match.dns.types[{i}]"),
                format!("{t} is listed twice"),
            );
        }
    }
    Ok(())
}

fn validate_header_pattern(
    field: &str,
    name: &str,
    pattern: &str,
) -> Result<http::HeaderName, (String, String)> {
    let header = parse_header_name(name).map_err(|e| (field.to_owned(), e))?;
    check_pattern_length(field, pattern)?;
    if pattern.chars().any(|c| c.is_control()) {
        return fail(field, "value pattern may not contain control characters");
    }
    Ok(header)
}

fn validate_response_match(m: &ResponseMatch) -> Check {
    if m.status.is_none() && m.headers.is_empty() {
        return fail(
            "match.response",
            "set status, headers or both (e.g. status: 5xx)",
        );
    }
    for (name, pattern) in &m.headers {
        validate_header_pattern(&format!("match.response.headers.{name}"), name, pattern)?;
    }
    Ok(())
}

fn check_pattern_length(field: &str, pattern: &str) -> Check {
    if pattern.len() > MAX_PATTERN_BYTES {
        return fail(
            field,
            format!(
                "pattern is {} bytes long; at most {MAX_PATTERN_BYTES} are allowed",
                pattern.len()
            ),
        );
    }
    Ok(())
}

fn validate_fault_vs_match(fault: FaultSpec<'_>, m: &Match) -> Check {
    let kind = fault.kind();
    if kind.is_connection_level() {
        if let Some(first) = m.l7_fields().first() {
            return fail(
                format!("match.{first}"),
                format!(
                    "{kind} acts on whole connections, decided before any request is read; \
                     select peers with port, from, to or sni"
                ),
            );
        }
        if m.protocol.is_some_and(|p| p != Protocol::Tls) {
            return fail(
                "match.protocol",
                format!(
                    "{kind} is decided when a connection opens, before its protocol is known; \
                     remove protocol (only tls is allowed: the decision then waits for the ClientHello)"
                ),
            );
        }
    }
    if fault.is_tcp_only() {
        let needs_http = m.l7_fields().into_iter().find(|f| *f != "probes");
        let http_protocol = m
            .protocol
            .filter(|p| !matches!(p, Protocol::Tcp | Protocol::Tls));
        if let Some(first) = needs_http {
            return fail(format!("match.{first}"), tcp_only_message(fault));
        }
        if http_protocol.is_some() {
            return fail("match.protocol", tcp_only_message(fault));
        }
    }
    if let FaultSpec::FromHeaders(_) = fault {
        if let Some(p @ (Protocol::Tcp | Protocol::Tls)) = m.protocol {
            return fail(
                "fromHeaders",
                format!(
                    "reads HTTP request headers: cannot be combined with protocol {}",
                    p.as_str()
                ),
            );
        }
        if m.sni.is_some() {
            return fail(
                "match.sni",
                "fromHeaders reads HTTP request headers, which TLS hides (it is not decrypted)",
            );
        }
        if m.probes {
            return fail(
                "match.probes",
                "kubelet probes never choose their own faults; remove probes",
            );
        }
    }
    if m.response.is_some() {
        validate_fault_on_response(fault)?;
    }
    // Traffic the proxy only copies has no HTTP responses to replace.
    let copied = match m.protocol {
        Some(p @ (Protocol::Tcp | Protocol::Tls)) => Some(format!("protocol {}", p.as_str())),
        _ if m.sni.is_some() => Some("sni (TLS, which is not decrypted)".to_owned()),
        _ => None,
    };
    if let Some(copied) = copied {
        let field = match fault {
            FaultSpec::Respond(_) => Some("respond"),
            FaultSpec::Replace(_) => Some("replace"),
            FaultSpec::Patch(_) => Some("patch"),
            FaultSpec::Abort(a) if a.status.is_some() => Some("abort.status"),
            FaultSpec::Abort(a) if a.grpc.is_some() => Some("abort.grpc"),
            _ => None,
        };
        if let Some(field) = field {
            return fail(
                field,
                format!("{copied} has no HTTP responses (use abort: {{reset: true}})"),
            );
        }
    }
    Ok(())
}

fn tcp_only_message(fault: FaultSpec<'_>) -> String {
    let what = match fault {
        FaultSpec::LimitData(_) => "limitData on the request side".to_owned(),
        other => other.kind().to_string(),
    };
    format!(
        "{what} acts on raw TCP connections only (the proxy re-frames HTTP); \
         select them with port, from, to or protocol: tcp"
    )
}

/// Which faults can wait for the upstream's answer: the ones that act on
/// it (`delay` on the response, `abort` in its place, `replace`, `patch`).
fn validate_fault_on_response(fault: FaultSpec<'_>) -> Check {
    let why = match fault {
        FaultSpec::Delay(d) if d.side == DelaySide::Request => {
            "a request-side delay waits before the upstream is asked; set delay.side: response"
        }
        FaultSpec::Delay(_) | FaultSpec::Abort(_) | FaultSpec::Replace(_) | FaultSpec::Patch(_) => {
            return Ok(());
        }
        FaultSpec::Respond(_) => {
            "respond answers without asking the upstream; use replace to change its answer"
        }
        FaultSpec::Hang(_) => "hang never asks the upstream; remove match.response",
        FaultSpec::Bandwidth(_) => {
            "bandwidth is chosen before the request is forwarded; remove match.response"
        }
        FaultSpec::LimitData(_) => {
            "limitData is chosen before the request is forwarded; remove match.response"
        }
        // Refused earlier: they act on raw TCP only.
        FaultSpec::Slicer(_) | FaultSpec::SlowClose(_) => "acts on raw TCP connections only",
        FaultSpec::Dns(_) => "dns answers a DNS query, which has no HTTP response",
        FaultSpec::FromHeaders(_) => {
            "fromHeaders is chosen from the request before it is forwarded; remove match.response"
        }
        // Refused earlier: connection-level faults take no HTTP matchers.
        FaultSpec::Partition(_) | FaultSpec::Reset(_) => "acts on whole connections",
    };
    fail("match.response", why)
}

fn validate_delay(d: &Delay) -> Check {
    let set: Vec<&str> = [
        ("fixed", d.fixed.is_some()),
        ("normal", d.normal.is_some()),
        ("uniform", d.uniform.is_some()),
        ("lognormal", d.lognormal.is_some()),
        ("pareto", d.pareto.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, present)| present.then_some(name))
    .collect();
    match set.as_slice() {
        [] => {
            return fail(
                "delay",
                "set fixed (e.g. fixed: 200ms) or one of normal, uniform, lognormal, pareto",
            );
        }
        [_] => {}
        [a, b, ..] => return fail("delay", format!("set one of {a} and {b}, not both")),
    }
    if let Some(jitter) = &d.jitter {
        match &d.fixed {
            Some(fixed) if jitter > fixed => {
                return fail(
                    "delay.jitter",
                    format!("{jitter} is larger than fixed ({fixed}); a delay cannot be negative"),
                );
            }
            Some(_) => {}
            None if d.normal.is_some() => {
                return fail("delay.jitter", "only applies to fixed (normal has stddev)");
            }
            None => return fail("delay.jitter", "only applies to fixed"),
        }
    }
    if let Some(u) = &d.uniform
        && u.max < u.min
    {
        return fail(
            "delay.uniform.max",
            format!("{} is less than min ({})", u.max, u.min),
        );
    }
    if let Some(l) = &d.lognormal {
        validate_lognormal(l)?;
    }
    if let Some(p) = &d.pareto {
        validate_pareto(p)?;
    }
    Ok(())
}

fn validate_lognormal(l: &LogNormalDelay) -> Check {
    if l.median.get().is_zero() {
        return fail(
            "delay.lognormal.median",
            "must be longer than 0s (a log-normal delay is never 0)",
        );
    }
    if l.p99 <= l.median {
        return fail(
            "delay.lognormal.p99",
            format!(
                "{} is not longer than median ({}); for a constant delay use fixed",
                l.p99, l.median
            ),
        );
    }
    if let Some(max) = l.max {
        if max < l.p99 {
            return fail(
                "delay.lognormal.max",
                format!(
                    "{max} is less than p99 ({}), which could then never happen",
                    l.p99
                ),
            );
        }
        check_delay_cap("delay.lognormal.max", max)?;
    }
    Ok(())
}

fn validate_pareto(p: &ParetoDelay) -> Check {
    if p.scale.get().is_zero() {
        return fail(
            "delay.pareto.scale",
            "must be longer than 0s (it is the shortest delay)",
        );
    }
    if !(p.shape.is_finite() && p.shape > 0.0) {
        return fail(
            "delay.pareto.shape",
            format!("{} is not a number larger than 0 (e.g. 1.5)", p.shape),
        );
    }
    if p.max < p.scale {
        return fail(
            "delay.pareto.max",
            format!(
                "{} is less than scale ({}), the shortest delay",
                p.max, p.scale
            ),
        );
    }
    check_delay_cap("delay.pareto.max", p.max)
}

fn check_delay_cap(field: &str, cap: HumanDuration) -> Check {
    if cap.get() > MAX_DURATION {
        return fail(
            field,
            format!(
                "{cap} is longer than the longest delay ({})",
                HumanDuration(MAX_DURATION)
            ),
        );
    }
    Ok(())
}

fn validate_from_headers(h: &FromHeaders) -> Check {
    if h.max_delay.is_none() && h.abort_statuses.is_empty() && h.abort_grpc.is_empty() {
        return fail(
            "fromHeaders",
            "set what requests may ask for: maxDelay, abortStatuses, abortGrpc (one or more)",
        );
    }
    if h.max_delay.is_some_and(|d| d.get().is_zero()) {
        return fail("fromHeaders.maxDelay", "must be longer than 0s");
    }
    for (i, status) in h.abort_statuses.iter().enumerate() {
        let field = format!("fromHeaders.abortStatuses[{i}]");
        validate_status(&field, *status)?;
        if let Some(first) = h.abort_statuses[..i].iter().position(|s| s == status) {
            return fail(field, format!("duplicate of abortStatuses[{first}]"));
        }
    }
    for (i, code) in h.abort_grpc.iter().enumerate() {
        let field = format!("fromHeaders.abortGrpc[{i}]");
        if code.code() == 0 {
            return fail(field, "OK (0) is not an error; use e.g. UNAVAILABLE");
        }
        if let Some(first) = h.abort_grpc[..i].iter().position(|c| c == code) {
            return fail(field, format!("duplicate of abortGrpc[{first}]"));
        }
    }
    Ok(())
}

fn validate_status(field: &str, status: u16) -> Check {
    match status {
        200..=599 => Ok(()),
        100..=199 => fail(
            field,
            format!("{status} is an informational status; use 200-599"),
        ),
        _ => fail(field, format!("{status} is not an HTTP status (100-599)")),
    }
}

/// 204, 205 and 304 responses have no content (RFC 9110 sections 15.3.5,
/// 15.3.6 and 15.4.5): a body there would be dropped on the wire without a
/// word, or break the client's framing.
fn validate_bodiless(field: &str, status: u16, has_body: bool) -> Check {
    if matches!(status, 204 | 205 | 304) && has_body {
        return fail(
            field,
            format!("a {status} response has no body; remove body or use another status"),
        );
    }
    Ok(())
}

/// An empty text body sets no body.
fn sets_text(body: Option<&str>) -> bool {
    body.is_some_and(|b| !b.is_empty())
}

fn validate_headers(field: &str, headers: &BTreeMap<String, String>) -> Check {
    for (name, value) in headers {
        let field = format!("{field}.{name}");
        let header = parse_header_name(name).map_err(|e| (field.clone(), e))?;
        if RESERVED_RESPONSE_HEADERS.contains(&header.as_str()) {
            return fail(field, "is set by the proxy");
        }
        if HeaderValue::from_str(value).is_err() {
            return fail(field, "value is not a valid header value (printable ASCII)");
        }
    }
    Ok(())
}

fn validate_abort(a: &Abort, protocol: Option<Protocol>) -> Check {
    let set = [a.status.is_some(), a.grpc.is_some(), a.reset];
    match set.iter().filter(|s| **s).count() {
        0 => return fail("abort", "set one of status, grpc or reset"),
        1 => {}
        _ => return fail("abort", "set only one of status, grpc and reset"),
    }
    if let Some(status) = a.status {
        validate_status("abort.status", status)?;
        validate_bodiless("abort.body", status, sets_text(a.body.as_deref()))?;
        validate_headers("abort.headers", &a.headers)?;
    } else {
        if a.body.is_some() {
            return fail("abort.body", "only applies to an HTTP abort (with status)");
        }
        if !a.headers.is_empty() {
            return fail("abort.headers", "only apply to an HTTP abort (with status)");
        }
    }
    if let Some(code) = a.grpc {
        if code.code() == 0 {
            return fail("abort.grpc", "OK (0) is not an error; use e.g. UNAVAILABLE");
        }
        if protocol != Some(Protocol::Grpc) {
            return fail("abort.grpc", "needs match.protocol: grpc");
        }
    } else if a.message.is_some() {
        return fail("abort.message", "only applies to a gRPC abort (with grpc)");
    }
    Ok(())
}

fn validate_respond(r: &Respond) -> Check {
    if let Some(status) = r.status {
        validate_status("respond.status", status)?;
        validate_bodiless("respond.body", status, sets_text(r.body.as_deref()))?;
    }
    validate_headers("respond.headers", &r.headers)
}

fn validate_replace(r: &Replace) -> Check {
    if r.status.is_none() && r.headers.is_none() && r.body.is_none() {
        return fail("replace", "set status, headers, body or several of them");
    }
    if let Some(status) = r.status {
        validate_status("replace.status", status)?;
        validate_bodiless("replace.body", status, sets_text(r.body.as_deref()))?;
    }
    if let Some(headers) = &r.headers {
        validate_headers("replace.headers", headers)?;
    }
    Ok(())
}

fn validate_patch(p: &Patch) -> Check {
    if p.status.is_none() && p.headers.is_empty() && p.body.is_none() {
        return fail("patch", "set status, headers, body or several of them");
    }
    if let Some(status) = p.status {
        validate_status("patch.status", status)?;
        validate_bodiless("patch.body", status, p.body.is_some())?;
    }
    validate_headers("patch.headers.set", &p.headers.set)?;
    for (i, name) in p.headers.remove.iter().enumerate() {
        let field = format!("patch.headers.remove[{i}]");
        let header = parse_header_name(name).map_err(|e| (field.clone(), e))?;
        if RESERVED_RESPONSE_HEADERS.contains(&header.as_str()) {
            return fail(field, "is set by the proxy");
        }
        if p.headers
            .set
            .keys()
            .any(|k| k.eq_ignore_ascii_case(header.as_str()))
        {
            return fail(
                field,
                format!("{header} is also in set; keep one of the two"),
            );
        }
    }
    Ok(())
}

fn validate_peer(field: &str, peer: &Peer) -> Check {
    if peer.pod_selector.is_none() && peer.cidrs.is_empty() {
        return fail(field, "set podSelector, cidrs or both");
    }
    if let Some(sel) = &peer.pod_selector {
        validate_selector(sel).map_err(|e| (format!("{field}.podSelector"), e))?;
    }
    Ok(())
}

fn validate_selector(sel: &Selector) -> Result<(), String> {
    if sel.0.is_empty() {
        return Err("needs at least one label (an empty selector would select every pod)".into());
    }
    for (key, value) in &sel.0 {
        let (prefix, name) = key
            .rsplit_once('/')
            .map_or((None, key.as_str()), |(p, n)| (Some(p), n));
        if let Some(prefix) = prefix
            && (validate_host(prefix).is_err() || prefix.starts_with('*'))
        {
            return Err(format!(
                "{}: label key prefix must be a DNS name",
                quoted(key)
            ));
        }
        if name.is_empty() || !is_label_value(name) {
            return Err(format!("{} is not a valid label key", quoted(key)));
        }
        if !is_label_value(value) {
            return Err(format!(
                "{key}: {} is not a valid label value",
                quoted(value)
            ));
        }
    }
    Ok(())
}

/// Kubernetes label value syntax (also the name part of a key): at most
/// 63 characters, alphanumeric at both ends, `-_.` inside; may be empty.
fn is_label_value(s: &str) -> bool {
    let b = s.as_bytes();
    s.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b.first().is_none_or(u8::is_ascii_alphanumeric)
        && b.last().is_none_or(u8::is_ascii_alphanumeric)
}

/// A DNS name (optionally `*.`-prefixed) or an IP address, without a port.
pub(crate) fn validate_host(host: &str) -> Result<(), String> {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    if host.contains(':') {
        return Err(format!(
            "{} must not include a port (use match.port)",
            quoted(host)
        ));
    }
    let name = host.strip_prefix("*.").unwrap_or(host);
    let name = name.strip_suffix('.').unwrap_or(name);
    let label_ok = |l: &str| {
        let b = l.as_bytes();
        !l.is_empty()
            && l.len() <= 63
            && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
            && b.first().is_some_and(u8::is_ascii_alphanumeric)
            && b.last().is_some_and(u8::is_ascii_alphanumeric)
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(format!(
            "{} is not a host name (letters, digits and '-' in dot-separated labels; '*.' prefix allowed)",
            quoted(host)
        ));
    }
    Ok(())
}
