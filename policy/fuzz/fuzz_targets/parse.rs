//! Fuzzes `policy::parse` with arbitrary text: it must never panic, every
//! accepted policy must survive a JSON round trip unchanged, and compiling
//! it and deciding on a request (with `x-faultline-*` control headers made
//! of the input), its response, a connection (raw TCP and TLS, with and
//! without a server name) and a DNS query must not panic either.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use faultline_policy::{
    self as policy, ConnInfo, Direction, DnsQuery, PeerIps, Protocol, RequestInfo, ResponseInfo,
    TlsInfo,
};
use libfuzzer_sys::fuzz_target;
use rand::SeedableRng;
use rand::rngs::StdRng;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(parsed) = policy::parse(text) else {
        return;
    };
    let json = serde_json::to_string(&parsed).expect("a parsed policy serializes");
    let again = policy::parse(&json).expect("serialized policy parses again");
    assert_eq!(again, parsed, "JSON round trip changed the policy: {json}");

    let peers: PeerIps = parsed
        .selectors()
        .iter()
        .map(|s| (s.key(), vec![IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2))]))
        .collect();
    let compiled = policy::compile(&parsed, &peers);
    let mut rng = StdRng::seed_from_u64(data.len() as u64);
    let mut headers = http::HeaderMap::new();
    headers.insert("user-agent", http::HeaderValue::from_static("fuzz/1"));
    headers.insert("x-test-user", http::HeaderValue::from_static("a"));
    // What fromHeaders rules read: the input's last bytes as the values a
    // request asks for, so the header reader is fuzzed too.
    if let Ok(asked) = http::HeaderValue::from_bytes(&data[data.len().saturating_sub(40)..]) {
        headers.insert(policy::DELAY_HEADER, asked.clone());
        headers.insert(policy::ABORT_GRPC_HEADER, asked);
    }
    let source = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    let destination = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
    for direction in [Direction::Inbound, Direction::Outbound] {
        let request = RequestInfo {
            direction,
            destination_port: 8080,
            protocol: Protocol::Http,
            method: &http::Method::POST,
            path: "/api/checkout/1",
            headers: &headers,
            source_ip: source,
            destination_ip: destination,
            host: Some("payments.shop.svc.cluster.local:80"),
        };
        let _ = compiled.decide_request_outcome(&request, &mut rng);
        let grpc = RequestInfo {
            protocol: Protocol::Grpc,
            ..request
        };
        let _ = compiled.decide_request_outcome(&grpc, &mut rng);
        let candidates = compiled.response_candidates(&request);
        for status in [200, 404, 503] {
            let response = ResponseInfo {
                status,
                headers: &headers,
            };
            let _ = compiled.decide_response(&candidates, source, &response, &mut rng);
        }
        let conn = ConnInfo {
            direction,
            destination_port: 8080,
            source_ip: source,
            destination_ip: destination,
        };
        if compiled.connection_waits_for_tls(&conn) {
            for tls in [None, Some(TlsInfo::default())] {
                let _ = compiled.decide_connection_with_tls(&conn, tls, &mut rng);
            }
        } else {
            let _ = compiled.decide_connection(&conn, &mut rng);
        }
        let _ = compiled.decide_tcp(&conn, &mut rng);
        let _ = compiled.needs_sni(&conn);
        for sni in [None, Some("api.stripe.com"), Some("payments.shop")] {
            let _ = compiled.decide_tls(&conn, TlsInfo { sni }, &mut rng);
        }
    }
    for qtype in [1, 28, 33] {
        let query = DnsQuery {
            name: b"a.nats.svc.cluster.local",
            qtype,
            source_ip: source,
        };
        let _ = compiled.decide_dns(&query, &mut rng);
    }
});
