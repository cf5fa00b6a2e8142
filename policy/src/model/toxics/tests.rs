//! The byte-stream faults and per-side bandwidth: how they parse, what
//! validation says about them, and where the compiled policy files them.
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::parse::tests::{err, rule};
use crate::*;

fn action(doc: &str, tcp: bool) -> Option<Action> {
    let policy = parse(doc).unwrap_or_else(|e| panic!("{e}"));
    let compiled = compile(&policy, &PeerIps::new());
    let conn = ConnInfo {
        direction: Direction::Inbound,
        destination_port: 5432,
        source_ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
        destination_ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
    };
    let mut rng = StdRng::seed_from_u64(7);
    if tcp {
        return compiled.decide_tcp(&conn, &mut rng).map(|d| d.action);
    }
    let headers = http::HeaderMap::new();
    let req = RequestInfo {
        direction: conn.direction,
        destination_port: conn.destination_port,
        protocol: Protocol::Http,
        method: &http::Method::GET,
        path: "/",
        headers: &headers,
        source_ip: conn.source_ip,
        destination_ip: conn.destination_ip,
        host: None,
    };
    compiled.decide_request(&req, &mut rng).map(|d| d.action)
}

#[test]
fn every_form_parses_with_its_defaults() {
    let doc = r#"rules:
- {name: s1, slicer: {averageSize: 64}}
- {name: s2, slicer: {averageSize: 100, sizeVariation: 40, delay: 2ms, side: both}}
- {name: l1, limitData: {bytes: 4096}}
- {name: l2, limitData: {bytes: 0, side: request}}
- {name: c1, slowClose: {delay: 2s}}
- {name: c2, slowClose: {delay: 500ms, side: request}}
- {name: b1, bandwidth: {request: 10KB/s, response: 1MB/s}}
- {name: b2, bandwidth: {response: 1024}}
"#;
    let policy = parse(doc).unwrap();
    let kinds: Vec<&str> = policy
        .rules
        .iter()
        .map(|r| r.fault().unwrap().kind().as_str())
        .collect();
    assert_eq!(
        kinds,
        [
            "slicer",
            "slicer",
            "limitData",
            "limitData",
            "slowClose",
            "slowClose",
            "bandwidth",
            "bandwidth"
        ]
    );
    let s1 = policy.rules[0].slicer.as_ref().unwrap();
    assert_eq!(
        (s1.size_variation, s1.delay, s1.side),
        (0, None, Side::Response)
    );
    assert_eq!(
        policy.rules[3].limit_data.as_ref().unwrap().side,
        Side::Request
    );
    let b1 = policy.rules[6].bandwidth.as_ref().unwrap();
    assert_eq!(
        (b1.request, b1.response, b1.bytes_per_second()),
        (Some(ByteRate(10_000)), Some(ByteRate(1_000_000)), None)
    );
    // The canonical JSON form parses back to the same policy and leaves
    // the defaults out.
    let json = serde_json::to_string(&policy).unwrap();
    assert_eq!(parse(&json).unwrap(), policy);
    assert!(json.contains(r#""slicer":{"averageSize":64}"#), "{json}");
    assert!(
        json.contains(r#""bandwidth":{"response":"1KiB"}"#),
        "{json}"
    );
    assert!(json.contains(r#""slowClose":{"delay":"2s"}"#), "{json}");
}

#[test]
fn errors_name_the_rule_and_the_field() {
    for (body, message) in [
        (
            "slicer: {}",
            "slicer.averageSize: is required (bytes per chunk, e.g. 64)",
        ),
        (
            "slicer: {averageSize: 0}",
            "slicer.averageSize: 0 is not between 1 and 65536 bytes",
        ),
        (
            "slicer: {averageSize: 65537}",
            "slicer.averageSize: 65537 is not between 1 and 65536 bytes",
        ),
        (
            "slicer: {averageSize: 10, sizeVariation: 10}",
            "slicer.sizeVariation: 10 must be smaller than averageSize (10): a chunk has at least 1 byte",
        ),
        (
            "slicer: {averageSize: 10, delay: 11s}",
            "slicer.delay: 11s is longer than 10s between two chunks",
        ),
        (
            "limitData: {}",
            "limitData.bytes: is required (close after this many bytes)",
        ),
        (
            "limitData: {bytes: 10, side: both}",
            "limitData.side: counts one side: request or response (reset: {afterBytes} counts both)",
        ),
        (
            "slowClose: {}",
            "slowClose.delay: is required (how long to hold the close)",
        ),
        (
            "slowClose: {delay: 0s}",
            "slowClose.delay: must be longer than 0s",
        ),
        (
            "slowClose: {delay: 11m}",
            "slowClose.delay: 11m is longer than 10m",
        ),
        (
            "bandwidth: {rate: 1KiB, response: 1KiB}",
            "bandwidth.rate: limits both sides: set it, or request/response for each side, not both",
        ),
        (
            "bandwidth: {bytesPerSecond: 5, request: 1KiB}",
            "bandwidth.bytesPerSecond: limits both sides: set it, or request/response for each side, not both",
        ),
        (
            "bandwidth: {request: 0}",
            "bandwidth.request: must be at least 1 byte per second",
        ),
        (
            "bandwidth: {}",
            "bandwidth: set rate (e.g. rate: 64KiB), bytesPerSecond, or request/response",
        ),
        (
            "slicer: {averageSize: 8}\nmatch: {path: /api/*}",
            "match.path: slicer acts on raw TCP connections only (the proxy re-frames HTTP); select them with port, from, to or protocol: tcp",
        ),
        (
            "slowClose: {delay: 1s}\nmatch: {protocol: http}",
            "match.protocol: slowClose acts on raw TCP connections only (the proxy re-frames HTTP); select them with port, from, to or protocol: tcp",
        ),
        (
            "limitData: {bytes: 9, side: request}\nmatch: {methods: [POST]}",
            "match.methods: limitData on the request side acts on raw TCP connections only (the proxy re-frames HTTP); select them with port, from, to or protocol: tcp",
        ),
    ] {
        assert_eq!(
            err(&rule(body)),
            format!("rules[0] \"r\": {message}"),
            "{body}"
        );
    }
    let typo = err(&rule("slicer: {averageSise: 8}"));
    assert!(
        typo.starts_with(
            "rules[0] \"r\": slicer.averageSise: unknown field (did you mean `averageSize`?)"
        ),
        "{typo}"
    );
    // Truncating responses is an HTTP fault too: HTTP matchers are fine.
    parse(&rule("limitData: {bytes: 9}\nmatch: {path: /download/*}")).unwrap();
    parse(&rule(
        "slicer: {averageSize: 8}\nmatch: {protocol: tcp, port: 5432}",
    ))
    .unwrap();
}

#[test]
fn byte_stream_faults_are_filed_where_they_can_act() {
    let slicer =
        "rules:\n- slicer: {averageSize: 100, sizeVariation: 20, delay: 1ms, side: both}\n";
    assert_eq!(
        action(slicer, true),
        Some(Action::Slicer {
            side: Side::Both,
            average_size: 100,
            size_variation: 20,
            delay: Duration::from_millis(1)
        })
    );
    assert_eq!(action(slicer, false), None, "slicer never acts on HTTP");
    let close = "rules:\n- slowClose: {delay: 2s}\n";
    assert_eq!(
        action(close, true),
        Some(Action::SlowClose {
            side: Side::Response,
            delay: Duration::from_secs(2)
        })
    );
    assert_eq!(action(close, false), None, "slowClose never acts on HTTP");
    let truncate = "rules:\n- limitData: {bytes: 10}\n";
    let cut = Some(Action::LimitData {
        side: Side::Response,
        bytes: 10,
    });
    assert_eq!(action(truncate, true), cut);
    assert_eq!(action(truncate, false), cut, "truncated HTTP responses");
    let upload = "rules:\n- limitData: {bytes: 10, side: request}\n";
    assert!(action(upload, true).is_some());
    assert_eq!(action(upload, false), None);
    // A raw-TCP-only rule does not hide later rules from HTTP requests.
    let both = "rules:\n- slicer: {averageSize: 1}\n- hang: {}\n";
    assert_eq!(action(both, false), Some(Action::Hang));
}

#[test]
fn bandwidth_keeps_its_meaning_and_gains_sides() {
    assert_eq!(
        action("rules:\n- bandwidth: {rate: 64KiB}\n", true),
        Some(Action::Bandwidth(BandwidthLimit::Connection(65536)))
    );
    assert_eq!(
        action("rules:\n- bandwidth: {bytesPerSecond: 100}\n", false),
        Some(Action::Bandwidth(BandwidthLimit::Connection(100)))
    );
    let sides = Some(Action::Bandwidth(BandwidthLimit::Sides {
        request: Some(10_000),
        response: None,
    }));
    let doc = "rules:\n- bandwidth: {request: 10KB/s}\n";
    assert_eq!(action(doc, true), sides);
    assert_eq!(action(doc, false), sides);
}

#[test]
fn the_fuzz_seed_is_a_valid_policy() {
    let seed = include_str!("../../../fuzz/seeds/toxics.yaml");
    let policy = parse(seed).unwrap_or_else(|e| panic!("{e}"));
    let kinds: std::collections::BTreeSet<&str> = policy
        .rules
        .iter()
        .map(|r| r.fault().unwrap().kind().as_str())
        .collect();
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        ["bandwidth", "limitData", "slicer", "slowClose"]
    );
}
