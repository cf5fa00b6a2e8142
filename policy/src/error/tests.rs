//! One test per class of error, each asserting the exact message users see.
use crate::parse::tests::{err, rule};
use crate::*;
use std::time::Duration;

#[test]
fn error_abort_status_out_of_range() {
    let doc = "rules:\n- name: ok\n  hang: {}\n- name: payments-down\n  abort: {status: 700}\n";
    assert_eq!(
        err(doc),
        r#"rules[1] "payments-down": abort.status: 700 is not an HTTP status (100-599)"#
    );
    assert_eq!(
        err(&rule("abort: {status: 70000}")),
        r#"rules[0] "r": abort.status: 70000 is not an HTTP status (100-599) (line 3, column 19)"#
    );
    assert_eq!(
        err(&rule("respond: {status: 101}")),
        r#"rules[0] "r": respond.status: 101 is an informational status; use 200-599"#
    );
}

#[test]
fn error_unnamed_rule_is_named_by_index() {
    assert_eq!(
        err("rules:\n- abort: {status: 99}\n"),
        "rules[0]: abort.status: 99 is not an HTTP status (100-599)"
    );
}

#[test]
fn error_yaml_syntax_has_position_and_no_document() {
    let secret = "do-not-echo-this-document-text";
    let doc = format!("rules: [\n  {{name: {secret}, delay: {{fixed: 1s}}\n");
    let e = parse(&doc).unwrap_err();
    assert_eq!(
        e.to_string(),
        "failed to parse policy: did not find expected ',' or '}' at line 3 column 1, while parsing a flow mapping at line 2 column 3"
    );
    assert!(matches!(
        e,
        PolicyError::Syntax {
            location: Location { line: Some(3), .. },
            ..
        }
    ));
}

#[test]
fn error_type_errors_do_not_repeat_long_values() {
    let long = "x".repeat(500);
    let e = err(&format!("\"{long}\""));
    assert_eq!(
        e,
        format!(
            "failed to parse policy: invalid type: string \"{}...\", expected a mapping (line 1, column 1)",
            "x".repeat(40)
        )
    );
}

#[test]
fn error_empty_and_oversized_documents() {
    assert_eq!(
        err("  \n"),
        "failed to parse policy: the document is empty (write `rules: []` for no faults)"
    );
    let big = format!("rules: []\n#{}", "x".repeat(MAX_POLICY_BYTES));
    assert_eq!(
        err(&big),
        "failed to parse policy: the document is larger than 262144 bytes"
    );
}

#[test]
fn error_unknown_fields_are_named() {
    assert_eq!(
        err("foo: 1\n"),
        "foo: unknown field (expected one of duration, until, rules) (line 1, column 1)"
    );
    assert_eq!(
        err(&rule("precent: 20\nhang: {}")),
        r#"rules[0] "r": precent: unknown field (did you mean `percent`?) (line 3, column 3)"#
    );
    assert_eq!(
        err(&rule("match: {hosts: a}\nhang: {}")),
        r#"rules[0] "r": match.hosts: unknown field (did you mean `host`?) (line 3, column 11)"#
    );
    assert_eq!(
        err(&rule("delay: {normal: {mean: 1s, stdev: 1s}}")),
        r#"rules[0] "r": delay.normal.stdev: unknown field (did you mean `stddev`?) (line 3, column 30)"#
    );
    assert_eq!(
        err(&rule("hang: {forever: true}")),
        r#"rules[0] "r": hang: takes no settings (found `forever`) (line 3, column 9)"#
    );
}

#[test]
fn error_exactly_one_fault() {
    assert_eq!(
        err(&rule("match: {port: 80}")),
        r#"rules[0] "r": no fault: set one of delay, abort, respond, hang, bandwidth, partition, reset, slicer, limitData, slowClose, dns, fromHeaders, replace, patch"#
    );
    assert_eq!(
        err(&rule("delay: {fixed: 1s}\nabort: {status: 500}")),
        r#"rules[0] "r": several faults (delay, abort): a rule sets exactly one"#
    );
}

#[test]
fn error_percent_and_first() {
    assert_eq!(
        err(&rule("percent: 100.5\nhang: {}")),
        r#"rules[0] "r": percent: 100.5 is not between 0 and 100"#
    );
    assert_eq!(
        err(&rule("percent: -1\nhang: {}")),
        r#"rules[0] "r": percent: -1 is not between 0 and 100"#
    );
    assert_eq!(
        err(&rule("percent: lots\nhang: {}")),
        r#"rules[0] "r": percent: "lots" is not a percentage such as 20 or 0.5 (line 3, column 12)"#
    );
    assert_eq!(
        err(&rule("first: 0\nhang: {}")),
        r#"rules[0] "r": first: must be at least 1"#
    );
    assert!(parse(&rule("percent: 0.001\nhang: {}")).is_ok());
}

#[test]
fn error_durations() {
    assert_eq!(
        err("duration: 10\n"),
        "duration: 10 has no unit (write e.g. 10ms or 10s) (line 1, column 11)"
    );
    assert_eq!(
        err("duration: 5parsecs\n"),
        r#"duration: "5parsecs" has an unknown unit "parsecs" (use ns, us, ms, s, m or h) (line 1, column 11)"#
    );
    assert_eq!(
        err("duration: -5s\n"),
        r#"duration: "-5s" is negative (line 1, column 11)"#
    );
    assert_eq!(err("duration: 0s\n"), "duration: must be longer than 0s");
    assert_eq!(
        err(&rule("delay: {fixed: soon}")),
        r#"rules[0] "r": delay.fixed: "soon" is not a duration (expected e.g. 200ms, 1.5s, 2m) (line 3, column 18)"#
    );
}

#[test]
fn error_duration_xor_until() {
    assert_eq!(
        err("duration: 60s\nuntil: 2030-01-01T00:00:00Z\nrules: []\n"),
        "until: cannot be combined with duration (set one of them)"
    );
    assert!(err("until: yesterday\n").starts_with(
        r#"until: "yesterday" is not an RFC 3339 timestamp like 2026-01-31T12:00:00Z"#
    ));
}

#[test]
fn error_delay_shape() {
    assert_eq!(
        err(&rule("delay: {}")),
        r#"rules[0] "r": delay: set fixed (e.g. fixed: 200ms) or one of normal, uniform, lognormal, pareto"#
    );
    assert_eq!(
        err(&rule("delay: {fixed: 1s, normal: {mean: 1s, stddev: 1ms}}")),
        r#"rules[0] "r": delay: set one of fixed and normal, not both"#
    );
    assert_eq!(
        err(&rule(
            "delay: {normal: {mean: 1s, stddev: 1ms}, jitter: 1ms}"
        )),
        r#"rules[0] "r": delay.jitter: only applies to fixed (normal has stddev)"#
    );
    assert_eq!(
        err(&rule("delay: {fixed: 200ms, jitter: 300ms}")),
        r#"rules[0] "r": delay.jitter: 300ms is larger than fixed (200ms); a delay cannot be negative"#
    );
    assert_eq!(
        err(&rule("delay: {fixed: 1s, side: both}")),
        r#"rules[0] "r": delay.side: unknown variant `both`, expected `request` or `response` (line 3, column 28)"#
    );
}

#[test]
fn error_delay_distributions() {
    for (delay, expected) in [
        (
            "{uniform: {min: 1s, max: 1s}, pareto: {scale: 1ms, shape: 1, max: 1s}}",
            "delay: set one of uniform and pareto, not both",
        ),
        (
            "{uniform: {min: 1s, max: 1s}, jitter: 1ms}",
            "delay.jitter: only applies to fixed",
        ),
        (
            "{uniform: {min: 300ms, max: 200ms}}",
            "delay.uniform.max: 200ms is less than min (300ms)",
        ),
        (
            "{lognormal: {median: 0s, p99: 1s}}",
            "delay.lognormal.median: must be longer than 0s (a log-normal delay is never 0)",
        ),
        (
            "{lognormal: {median: 1s, p99: 1s}}",
            "delay.lognormal.p99: 1s is not longer than median (1s); for a constant delay use fixed",
        ),
        (
            "{lognormal: {median: 100ms, p99: 1s, max: 500ms}}",
            "delay.lognormal.max: 500ms is less than p99 (1s), which could then never happen",
        ),
        (
            "{pareto: {scale: 0s, shape: 1, max: 1s}}",
            "delay.pareto.scale: must be longer than 0s (it is the shortest delay)",
        ),
        (
            "{pareto: {scale: 1ms, shape: 0, max: 1s}}",
            "delay.pareto.shape: 0 is not a number larger than 0 (e.g. 1.5)",
        ),
        (
            "{pareto: {scale: 1ms, shape: -2.5, max: 1s}}",
            "delay.pareto.shape: -2.5 is not a number larger than 0 (e.g. 1.5)",
        ),
        (
            "{pareto: {scale: 1ms, shape: .nan, max: 1s}}",
            "delay.pareto.shape: NaN is not a number larger than 0 (e.g. 1.5)",
        ),
        (
            "{pareto: {scale: 1s, shape: 1, max: 10ms}}",
            "delay.pareto.max: 10ms is less than scale (1s), the shortest delay",
        ),
    ] {
        assert_eq!(
            err(&rule(&format!("delay: {delay}"))),
            format!(r#"rules[0] "r": {expected}"#),
            "{delay}"
        );
    }
    assert_eq!(
        err(&rule("delay: {pareto: {scale: 1ms, shape: 1}}")),
        r#"rules[0] "r": delay.pareto: missing field `max` (line 3, column 19)"#,
        "pareto needs its cap"
    );
}

#[test]
fn error_delay_caps_beyond_the_longest_duration() {
    // Text cannot name a longer duration; a policy built in code can.
    let too_long = HumanDuration(MAX_DURATION + Duration::from_secs(1));
    let mut policy = parse(&rule("delay: {pareto: {scale: 1ms, shape: 1, max: 1s}}")).unwrap();
    if let Some(pareto) = policy.rules[0]
        .delay
        .as_mut()
        .and_then(|d| d.pareto.as_mut())
    {
        pareto.max = too_long;
    }
    assert_eq!(
        validate(&policy).unwrap_err().to_string(),
        r#"rules[0] "r": delay.pareto.max: 31622401s is longer than the longest delay (8784h)"#
    );
    let mut policy = parse(&rule("delay: {lognormal: {median: 1ms, p99: 1s}}")).unwrap();
    if let Some(lognormal) = policy.rules[0]
        .delay
        .as_mut()
        .and_then(|d| d.lognormal.as_mut())
    {
        lognormal.max = Some(too_long);
    }
    assert_eq!(
        validate(&policy).unwrap_err().to_string(),
        r#"rules[0] "r": delay.lognormal.max: 31622401s is longer than the longest delay (8784h)"#
    );
}

#[test]
fn error_from_headers() {
    for (body, expected) in [
        (
            "fromHeaders: {}",
            "fromHeaders: set what requests may ask for: maxDelay, abortStatuses, abortGrpc (one or more)",
        ),
        (
            "fromHeaders:",
            "fromHeaders: set what requests may ask for: maxDelay, abortStatuses, abortGrpc (one or more)",
        ),
        (
            "fromHeaders: {maxDelay: 0s}",
            "fromHeaders.maxDelay: must be longer than 0s",
        ),
        (
            "fromHeaders: {abortStatuses: [503, 700]}",
            "fromHeaders.abortStatuses[1]: 700 is not an HTTP status (100-599)",
        ),
        (
            "fromHeaders: {abortStatuses: [101]}",
            "fromHeaders.abortStatuses[0]: 101 is an informational status; use 200-599",
        ),
        (
            "fromHeaders: {abortStatuses: [503, 500, 503]}",
            "fromHeaders.abortStatuses[2]: duplicate of abortStatuses[0]",
        ),
        (
            "fromHeaders: {abortGrpc: [OK]}",
            "fromHeaders.abortGrpc[0]: OK (0) is not an error; use e.g. UNAVAILABLE",
        ),
        (
            "fromHeaders: {abortGrpc: [UNAVAILABLE, 14]}",
            "fromHeaders.abortGrpc[1]: duplicate of abortGrpc[0]",
        ),
        (
            "fromHeaders: {maxDelay: 1s}\nmatch: {protocol: tcp}",
            "fromHeaders: reads HTTP request headers: cannot be combined with protocol tcp",
        ),
        (
            "fromHeaders: {maxDelay: 1s}\nmatch: {protocol: tls}",
            "fromHeaders: reads HTTP request headers: cannot be combined with protocol tls",
        ),
        (
            "fromHeaders: {maxDelay: 1s}\nmatch: {sni: api.example.com}",
            "match.sni: fromHeaders reads HTTP request headers, which TLS hides (it is not decrypted)",
        ),
        (
            "fromHeaders: {maxDelay: 1s}\nmatch: {probes: true}",
            "match.probes: kubelet probes never choose their own faults; remove probes",
        ),
        (
            "fromHeaders: {maxDelay: 1s}\ndelay: {fixed: 1s}",
            "several faults (delay, fromHeaders): a rule sets exactly one",
        ),
    ] {
        assert_eq!(
            err(&rule(body)),
            format!(r#"rules[0] "r": {expected}"#),
            "{body}"
        );
    }
    assert!(
        err(&rule("fromHeaders: {maxDelay: 1s, abortStatus: [503]}"))
            .starts_with(r#"rules[0] "r": fromHeaders.abortStatus: unknown field"#),
    );
}

#[test]
fn error_abort_shape() {
    assert_eq!(
        err(&rule("abort: {}")),
        r#"rules[0] "r": abort: set one of status, grpc or reset"#
    );
    assert_eq!(
        err(&rule("abort: {status: 500, reset: true}")),
        r#"rules[0] "r": abort: set only one of status, grpc and reset"#
    );
    assert_eq!(
        err(&rule("abort: {reset: true, body: x}")),
        r#"rules[0] "r": abort.body: only applies to an HTTP abort (with status)"#
    );
    assert_eq!(
        err(&rule("abort: {status: 500, message: x}")),
        r#"rules[0] "r": abort.message: only applies to a gRPC abort (with grpc)"#
    );
    assert_eq!(
        err(&rule(
            "abort: {status: 500, headers: {content-length: \"5\"}}"
        )),
        r#"rules[0] "r": abort.headers.content-length: is set by the proxy"#
    );
    assert_eq!(
        err(&rule("abort: {status: 500, headers: {\"bad header\": x}}")),
        r#"rules[0] "r": abort.headers.bad header: "bad header" is not a valid header name"#
    );
}

#[test]
fn error_bodies_on_bodiless_statuses() {
    assert_eq!(
        err(&rule("respond: {status: 204, body: gone}")),
        r#"rules[0] "r": respond.body: a 204 response has no body; remove body or use another status"#
    );
    assert_eq!(
        err(&rule("respond: {status: 205, body: x}")),
        r#"rules[0] "r": respond.body: a 205 response has no body; remove body or use another status"#
    );
    assert_eq!(
        err(&rule("abort: {status: 304, body: x}")),
        r#"rules[0] "r": abort.body: a 304 response has no body; remove body or use another status"#
    );
    assert_eq!(
        err(&rule("respond: {status: 100}")),
        r#"rules[0] "r": respond.status: 100 is an informational status; use 200-599"#
    );
    for ok in [
        "respond: {status: 204}",
        "respond: {status: 304, headers: {etag: \"x\"}}",
        "respond: {status: 204, body: \"\"}",
        "respond: {status: 206, body: x}",
    ] {
        assert!(parse(&rule(ok)).is_ok(), "{ok}");
    }
}

#[test]
fn error_grpc_abort_needs_grpc_protocol() {
    assert_eq!(
        err(&rule("abort: {grpc: UNAVAILABLE}")),
        r#"rules[0] "r": abort.grpc: needs match.protocol: grpc"#
    );
    assert_eq!(
        err(&rule("abort: {grpc: OK}\nmatch: {protocol: grpc}")),
        r#"rules[0] "r": abort.grpc: OK (0) is not an error; use e.g. UNAVAILABLE"#
    );
    assert_eq!(
        err(&rule("abort: {grpc: NOPE}\nmatch: {protocol: grpc}")),
        r#"rules[0] "r": abort.grpc: "NOPE" is not a gRPC status (e.g. UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL or 0-16) (line 3, column 17)"#
    );
    assert_eq!(
        err(&rule("abort: {grpc: 17}\nmatch: {protocol: grpc}")),
        r#"rules[0] "r": abort.grpc: 17 is not a gRPC status code (0-16) (line 3, column 17)"#
    );
}

#[test]
fn error_http_matchers_with_protocol_tcp() {
    assert_eq!(
        err(&rule(
            "match: {protocol: tcp, methods: [GET]}\ndelay: {fixed: 1s}"
        )),
        r#"rules[0] "r": match.methods: needs HTTP: cannot be combined with protocol tcp"#
    );
    assert_eq!(
        err(&rule("match: {protocol: tcp}\nrespond: {status: 200}")),
        r#"rules[0] "r": respond: protocol tcp has no HTTP responses (use abort: {reset: true})"#
    );
    assert_eq!(
        err(&rule("match: {protocol: tcp}\nabort: {status: 503}")),
        r#"rules[0] "r": abort.status: protocol tcp has no HTTP responses (use abort: {reset: true})"#
    );
}

#[test]
fn error_connection_faults_with_request_matchers() {
    assert_eq!(
        err(&rule("match: {path: /x}\npartition: {}")),
        r#"rules[0] "r": match.path: partition acts on whole connections, decided before any request is read; select peers with port, from, to or sni"#
    );
    assert_eq!(
        err(&rule("match: {protocol: tcp}\nreset: {afterBytes: 10}")),
        r#"rules[0] "r": match.protocol: reset is decided when a connection opens, before its protocol is known; remove protocol (only tls is allowed: the decision then waits for the ClientHello)"#
    );
    // TLS parts are fine: the decision waits for the ClientHello.
    for ok in [
        "match: {sni: \"*.stripe.com\"}\npartition: {}",
        "match: {host: api.stripe.com}\nreset: {after: 1s}",
        "match: {protocol: tls, port: 443}\npartition: {mode: drop}",
    ] {
        assert!(parse(&rule(ok)).is_ok(), "{ok}");
    }
}

#[test]
fn error_sni() {
    assert_eq!(
        err(&rule("match: {sni: 10.0.0.1}\nhang: {}")),
        r#"rules[0] "r": match.sni: "10.0.0.1" is an IP address, which TLS clients never send as SNI; match addresses with to.cidrs"#
    );
    assert_eq!(
        err(&rule("match: {sni: \"api.stripe.com:443\"}\nhang: {}")),
        r#"rules[0] "r": match.sni: "api.stripe.com:443" must not include a port (use match.port)"#
    );
    assert_eq!(
        err(&rule("match: {sni: \"*stripe.com\"}\nhang: {}")),
        r#"rules[0] "r": match.sni: "*stripe.com" is not a host name (letters, digits and '-' in dot-separated labels; '*.' prefix allowed)"#
    );
    assert_eq!(
        err(&rule("match: {sni: a.example, path: /x}\nhang: {}")),
        r#"rules[0] "r": match.path: needs HTTP: cannot be combined with sni (TLS is forwarded without being decrypted)"#
    );
    assert_eq!(
        err(&rule("match: {sni: a.example, protocol: grpc}\nhang: {}")),
        r#"rules[0] "r": match.sni: is read from a TLS ClientHello: cannot be combined with protocol grpc (match HTTP hosts with host)"#
    );
    assert_eq!(
        err(&rule("match: {sni: a.example}\nabort: {status: 503}")),
        r#"rules[0] "r": abort.status: sni (TLS, which is not decrypted) has no HTTP responses (use abort: {reset: true})"#
    );
    assert_eq!(
        err(&rule("match: {sni: a.example}\nrespond: {}")),
        r#"rules[0] "r": respond: sni (TLS, which is not decrypted) has no HTTP responses (use abort: {reset: true})"#
    );
    assert_eq!(
        err(&rule("match: {protocol: tls}\nrespond: {}")),
        r#"rules[0] "r": respond: protocol tls has no HTTP responses (use abort: {reset: true})"#
    );
    assert_eq!(
        err(&rule(
            "match: {protocol: tls, headers: {x-a: \"*\"}}\nhang: {}"
        )),
        r#"rules[0] "r": match.headers: needs HTTP: cannot be combined with protocol tls"#
    );
    // What makes sense on TLS is accepted.
    for ok in [
        "match: {sni: a.example}\ndelay: {fixed: 1s}",
        "match: {sni: a.example}\nhang: {}",
        "match: {sni: a.example}\nbandwidth: {rate: 1KiB}",
        "match: {sni: a.example, protocol: tls}\nabort: {reset: true}",
        "match: {host: a.example, protocol: tcp}\nabort: {reset: true}",
    ] {
        assert!(parse(&rule(ok)).is_ok(), "{ok}");
    }
}

#[test]
fn error_cidrs() {
    assert_eq!(
        err(&rule("match: {to: {cidrs: [10.0.0.1/8]}}\npartition: {}")),
        r#"rules[0] "r": match.to.cidrs[0]: "10.0.0.1/8" has host bits set (did you mean 10.0.0.0/8?) (line 3, column 23)"#
    );
    assert_eq!(
        err(&rule(
            "match: {from: {cidrs: [10.0.0.0/33]}}\npartition: {}"
        )),
        r#"rules[0] "r": match.from.cidrs[0]: "10.0.0.0/33": prefix must be 0-32 (line 3, column 25)"#
    );
    assert_eq!(
        err(&rule("match: {from: {cidrs: [ten]}}\npartition: {}")),
        r#"rules[0] "r": match.from.cidrs[0]: "ten" is not a CIDR (expected e.g. 10.0.0.0/8) (line 3, column 25)"#
    );
    assert_eq!(
        err(&rule("match: {to: {}}\npartition: {}")),
        r#"rules[0] "r": match.to: set podSelector, cidrs or both"#
    );
}

#[test]
fn error_hosts() {
    assert_eq!(
        err(&rule("match: {host: \"payments:80\"}\nhang: {}")),
        r#"rules[0] "r": match.host: "payments:80" must not include a port (use match.port)"#
    );
    assert_eq!(
        err(&rule("match: {host: -bad-.example}\nhang: {}")),
        r#"rules[0] "r": match.host: "-bad-.example" is not a host name (letters, digits and '-' in dot-separated labels; '*.' prefix allowed)"#
    );
}

#[test]
fn error_ports() {
    assert_eq!(
        err(&rule("match: {port: 70000}\nhang: {}")),
        r#"rules[0] "r": match.port: 70000 is not a port (1-65535) (line 3, column 17)"#
    );
    assert_eq!(
        err(&rule("match: {port: 0}\nhang: {}")),
        r#"rules[0] "r": match.port: 0 is not a port (1-65535) (line 3, column 17)"#
    );
    assert_eq!(
        err(&rule("match: {port: \"90-80\"}\nhang: {}")),
        r#"rules[0] "r": match.port: "90-80" is an empty range (start > end) (line 3, column 17)"#
    );
    assert_eq!(
        err(&rule("match: {port: [80, http]}\nhang: {}")),
        r#"rules[0] "r": match.port[1]: "http" is not a port or port range like 8000-8010 (line 3, column 22)"#
    );
}

#[test]
fn error_methods_paths_headers() {
    assert_eq!(
        err(&rule("match: {methods: [\"GE T\"]}\nhang: {}")),
        r#"rules[0] "r": match.methods[0]: "GE T" is not an HTTP method: a method is an RFC 9110 token (letters, digits and !#$%&'*+-.^_`|~)"#
    );
    assert_eq!(
        err(&rule("match: {methods: [GET, \"GET\\r\\n\"]}\nhang: {}")),
        r#"rules[0] "r": match.methods[1]: "GET\r\n" is not an HTTP method: a method is an RFC 9110 token (letters, digits and !#$%&'*+-.^_`|~)"#
    );
    assert_eq!(
        err(&rule("match: {methods: [\"\"]}\nhang: {}")),
        r#"rules[0] "r": match.methods[0]: "" is not an HTTP method: a method is an RFC 9110 token (letters, digits and !#$%&'*+-.^_`|~)"#
    );
    let long = "M".repeat(33);
    assert_eq!(
        err(&rule(&format!("match: {{methods: [{long}]}}\nhang: {{}}"))),
        format!(
            r#"rules[0] "r": match.methods[0]: "{long}" is not an HTTP method: longer than 32 bytes"#
        )
    );
    let long = format!("/{}", "a*".repeat(600));
    assert_eq!(
        err(&rule(&format!("match: {{path: \"{long}\"}}\nhang: {{}}"))),
        r#"rules[0] "r": match.path: pattern is 1201 bytes long; at most 1024 are allowed"#
    );
    assert_eq!(
        err(&rule(&format!(
            "match: {{headers: {{x-a: \"{long}\"}}}}\nhang: {{}}"
        ))),
        r#"rules[0] "r": match.headers.x-a: pattern is 1201 bytes long; at most 1024 are allowed"#
    );
    assert_eq!(
        err(&rule("match: {path: api/*}\nhang: {}")),
        r#"rules[0] "r": match.path: "api/*" must start with / (or *)"#
    );
    assert_eq!(
        err(&rule("match: {path: \"/a?b=1\"}\nhang: {}")),
        r#"rules[0] "r": match.path: "/a?b=1" may not contain '?', spaces or control characters (the query is not matched)"#
    );
    assert_eq!(
        err(&rule("match: {headers: {\"x y\": \"1\"}}\nhang: {}")),
        r#"rules[0] "r": match.headers.x y: "x y" is not a valid header name"#
    );
    assert_eq!(
        err(&rule("match: {headers: {Host: a}}\nhang: {}")),
        r#"rules[0] "r": match.headers.Host: match the destination host with match.host"#
    );
}

#[test]
fn error_pod_selectors() {
    assert_eq!(
        err(&rule("match: {to: {podSelector: {}}}\npartition: {}")),
        r#"rules[0] "r": match.to.podSelector: needs at least one label (an empty selector would select every pod)"#
    );
    assert_eq!(
        err(&rule(
            "match: {to: {podSelector: {app: \"no spaces\"}}}\npartition: {}"
        )),
        r#"rules[0] "r": match.to.podSelector: app: "no spaces" is not a valid label value"#
    );
    assert!(
        parse(&rule(
            "match: {to: {podSelector: {app.kubernetes.io/name: nats}}}\npartition: {}"
        ))
        .is_ok()
    );
}

#[test]
fn error_rule_names() {
    assert_eq!(
        err("rules:\n- {name: a, hang: {}}\n- {name: a, hang: {}}\n"),
        r#"rules[1] "a": name: duplicate of rules[0]"#
    );
    assert_eq!(
        err("rules:\n- {name: \"has space\", hang: {}}\n"),
        r#"rules[0] "has space": name: must be 1-63 characters of letters, digits, '-', '_' or '.'"#
    );
}

#[test]
fn error_bandwidth_and_reset() {
    assert_eq!(
        err(&rule("bandwidth: {}")),
        r#"rules[0] "r": bandwidth: set rate (e.g. rate: 64KiB), bytesPerSecond, or request/response"#
    );
    assert_eq!(
        err(&rule("bandwidth: {bytesPerSecond: 1, rate: 1KiB}")),
        r#"rules[0] "r": bandwidth: set one of bytesPerSecond and rate, not both"#
    );
    assert_eq!(
        err(&rule("bandwidth: {rate: 0KiB}")),
        r#"rules[0] "r": bandwidth.rate: must be at least 1 byte per second"#
    );
    assert_eq!(
        err(&rule("bandwidth: {rate: 5 bananas}")),
        r#"rules[0] "r": bandwidth.rate: "5 bananas" has an unknown unit "bananas" (use B, KB, KiB, MB, MiB, GB or GiB) (line 3, column 21)"#
    );
    assert_eq!(
        err(&rule("reset: {}")),
        r#"rules[0] "r": reset: set afterBytes, after, or both (whichever comes first)"#
    );
    assert_eq!(
        err(&rule("partition: {mode: maybe}")),
        r#"rules[0] "r": partition.mode: unknown variant `maybe`, expected `reject` or `drop` (line 3, column 21)"#
    );
}

#[test]
fn error_wrong_types_and_enums() {
    assert_eq!(
        err("rules: 5\n"),
        "rules: invalid type: integer `5`, expected a sequence (line 1, column 8)"
    );
    assert_eq!(
        err(&rule("match: {direction: sideways}\nhang: {}")),
        r#"rules[0] "r": match.direction: unknown variant `sideways`, expected `inbound` or `outbound` (line 3, column 22)"#
    );
    assert_eq!(
        err(&rule("hang: false")),
        r#"rules[0] "r": hang: false is not allowed (remove the field instead) (line 3, column 9)"#
    );
}

#[test]
fn error_response_match() {
    assert_eq!(
        err(&rule(
            "match: {response: {status: 600}}\nabort: {status: 503}"
        )),
        r#"rules[0] "r": match.response.status: 600 is not an HTTP status (100-599) (line 3, column 30)"#
    );
    assert_eq!(
        err(&rule(
            "match: {response: {status: \"6xx\"}}\nabort: {status: 503}"
        )),
        r#"rules[0] "r": match.response.status: "6xx" is not a status, class or range like 503, 5xx or 500-504 (line 3, column 30)"#
    );
    assert_eq!(
        err(&rule("match: {response: {}}\nabort: {status: 503}")),
        r#"rules[0] "r": match.response: set status, headers or both (e.g. status: 5xx)"#
    );
    assert_eq!(
        err(&rule(
            "match: {response: {headers: {\"bad name\": x}}}\nabort: {status: 503}"
        )),
        r#"rules[0] "r": match.response.headers.bad name: "bad name" is not a valid header name"#
    );
    assert_eq!(
        err(&rule(
            "match: {response: {status: 5xx}}\ndelay: {fixed: 1s}"
        )),
        r#"rules[0] "r": match.response: a request-side delay waits before the upstream is asked; set delay.side: response"#
    );
    assert_eq!(
        err(&rule(
            "match: {response: {status: 5xx}}\nrespond: {status: 200}"
        )),
        r#"rules[0] "r": match.response: respond answers without asking the upstream; use replace to change its answer"#
    );
    assert_eq!(
        err(&rule("match: {response: {status: 5xx}}\nhang:")),
        r#"rules[0] "r": match.response: hang never asks the upstream; remove match.response"#
    );
    assert_eq!(
        err(&rule(
            "match: {response: {status: 5xx}}\nbandwidth: {rate: 1KiB}"
        )),
        r#"rules[0] "r": match.response: bandwidth is chosen before the request is forwarded; remove match.response"#
    );
    assert_eq!(
        err(&rule(
            "match: {response: {status: 5xx}}\nreset: {after: 1s}"
        )),
        r#"rules[0] "r": match.response: reset acts on whole connections, decided before any request is read; select peers with port, from, to or sni"#
    );
    assert_eq!(
        err(&rule(
            "match: {protocol: tcp, response: {status: 5xx}}\nabort: {reset: true}"
        )),
        r#"rules[0] "r": match.response: needs HTTP: cannot be combined with protocol tcp"#
    );
    assert!(
        err(&rule("delay: {fixed: 1s, on: response, side: response}"))
            .contains("duplicate field `side`")
    );
}

#[test]
fn error_replace_and_patch_shape() {
    assert_eq!(
        err(&rule("replace: {}")),
        r#"rules[0] "r": replace: set status, headers, body or several of them"#
    );
    assert_eq!(
        err(&rule("replace:")),
        r#"rules[0] "r": replace: set status, headers, body or several of them"#
    );
    assert_eq!(
        err(&rule("replace: {status: 304, body: x}")),
        r#"rules[0] "r": replace.body: a 304 response has no body; remove body or use another status"#
    );
    assert_eq!(
        err(&rule("replace: {headers: {content-length: \"3\"}}")),
        r#"rules[0] "r": replace.headers.content-length: is set by the proxy"#
    );
    assert_eq!(
        err(&rule("replace: {status: 150}")),
        r#"rules[0] "r": replace.status: 150 is an informational status; use 200-599"#
    );
    assert_eq!(
        err(&rule("patch: {}")),
        r#"rules[0] "r": patch: set status, headers, body or several of them"#
    );
    assert_eq!(
        err(&rule("patch: {headers: {remove: [transfer-encoding]}}")),
        r#"rules[0] "r": patch.headers.remove[0]: is set by the proxy"#
    );
    assert_eq!(
        err(&rule(
            "patch: {headers: {set: {x-a: \"1\"}, remove: [X-A]}}"
        )),
        r#"rules[0] "r": patch.headers.remove[0]: x-a is also in set; keep one of the two"#
    );
    assert_eq!(
        err(&rule("patch: {headers: {add: {x-a: \"1\"}}}")),
        r#"rules[0] "r": patch.headers.add: unknown field (expected one of set, remove) (line 3, column 21)"#
    );
    assert_eq!(
        err(&rule("patch: {status: 204, body: {merge: {a: 1}}}")),
        r#"rules[0] "r": patch.body: a 204 response has no body; remove body or use another status"#
    );
    assert_eq!(
        err(&rule("match: {protocol: tcp}\npatch: {status: 500}")),
        r#"rules[0] "r": patch: protocol tcp has no HTTP responses (use abort: {reset: true})"#
    );
}
