//! The DNS listener between a real DNS client (UDP datagrams and TCP
//! frames on real sockets) and a resolver stand-in on loopback: faults by
//! name glob and type, clean queries forwarded byte for byte both ways,
//! DNS over TCP, and the bounds with their metrics.
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use faultline_proxy::Config;
use faultline_test_support::dns::{self, Resolver, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::support::*;

const A: u16 = 1;
const AAAA: u16 = 28;
const TXT: u16 = 16;
const NOERROR: u8 = 0;
const SERVFAIL: u8 = 2;
const NXDOMAIN: u8 = 3;
const REFUSED: u8 = 5;

const POLICY: &str = r#"
rules:
- name: nats-gone
  match: {protocol: dns, dns: {name: "*.nats.svc.cluster.local", types: [A]}}
  dns: {rcode: NXDOMAIN}
- name: flaky
  match: {dns: {name: flaky.example.test}}
  dns: {rcode: SERVFAIL}
- name: refused
  match: {dns: {name: "refused.*"}}
  dns: {rcode: REFUSED}
- name: slow
  match: {dns: {name: slow.example.test}}
  delay: {fixed: 400ms}
- name: lost
  match: {dns: {name: lost.example.test}}
  hang: {}
"#;

async fn resolver() -> Resolver {
    Resolver::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// The proxy with a DNS listener forwarding to `resolver`, changed by `edit`.
async fn start(resolver: &Resolver, policy: &str, edit: impl FnOnce(&mut Config)) -> TestProxy {
    let upstream = http_upstream().await;
    let resolver_addr = resolver.addr.to_string();
    let (mut config, faults, dir) = proxy_config(
        upstream.addr,
        policy,
        &[
            ("FAULTLINE_DNS_ADDR", "127.0.0.1:0"),
            ("FAULTLINE_DNS_UPSTREAM", &resolver_addr),
        ],
    );
    edit(&mut config);
    start_proxy_config(config, faults, dir).await
}

/// One query over UDP; `None` when nothing comes back within `within`.
async fn udp(addr: SocketAddr, msg: &[u8], within: Duration) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(msg, addr).await.unwrap();
    let mut buf = vec![0u8; 65_535];
    let (len, from) = tokio::time::timeout(within, socket.recv_from(&mut buf))
        .await
        .ok()?
        .unwrap();
    assert_eq!(from, addr, "the answer comes from where the query went");
    buf.truncate(len);
    Some(buf)
}

async fn send_frame(stream: &mut TcpStream, msg: &[u8]) {
    let mut framed = u16::try_from(msg.len()).unwrap().to_be_bytes().to_vec();
    framed.extend_from_slice(msg);
    stream.write_all(&framed).await.unwrap();
}

/// One framed answer; `None` on end of stream or after `within`.
async fn read_frame(stream: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    tokio::time::timeout(within, async {
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await.ok()?;
        let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut msg).await.ok()?;
        Some(msg)
    })
    .await
    .ok()
    .flatten()
}

fn rcode(answer: &[u8]) -> (u8, u16) {
    dns::rcode_and_answers(answer).unwrap()
}

const WAIT: Duration = Duration::from_secs(3);

#[tokio::test]
async fn clean_queries_and_answers_pass_byte_for_byte_over_udp_and_tcp() {
    let resolver = resolver().await;
    let proxy = start(&resolver, POLICY, |_| {}).await;
    let dns_addr = proxy.dns.unwrap();

    // Mixed case and an EDNS OPT record: nothing is normalised on the way.
    let mut query = dns::query(0x4242, "API.Shop.svc.cluster.local", A);
    query[11] = 1;
    query.extend_from_slice(&[0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, 0]);
    let direct = udp(resolver.addr, &query, WAIT).await.unwrap();
    let proxied = udp(dns_addr, &query, WAIT).await.unwrap();
    assert_eq!(proxied, direct);
    assert_eq!(rcode(&proxied), (NOERROR, 1));
    let seen = resolver.queries();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1], (Transport::Udp, query.clone()));

    // A rule's name with another type is not faulted: AAAA passes.
    let aaaa = dns::query(7, "db.nats.svc.cluster.local", AAAA);
    assert_eq!(
        rcode(&udp(dns_addr, &aaaa, WAIT).await.unwrap()),
        (NOERROR, 1)
    );

    // Over TCP: several queries on one connection, in order.
    let mut stream = TcpStream::connect(dns_addr).await.unwrap();
    for id in [1u16, 2] {
        let query = dns::query(id, "api.shop.svc.cluster.local", AAAA);
        send_frame(&mut stream, &query).await;
        let answer = read_frame(&mut stream, WAIT).await.unwrap();
        let mut direct = TcpStream::connect(resolver.addr).await.unwrap();
        send_frame(&mut direct, &query).await;
        assert_eq!(answer, read_frame(&mut direct, WAIT).await.unwrap());
        assert_eq!(
            resolver
                .queries()
                .iter()
                .filter(|q| q == &&(Transport::Tcp, query.clone()))
                .count(),
            2
        );
    }

    // What is not a query this proxy reads still reaches the resolver untouched.
    let garbage = b"\x00\x01not dns at all".to_vec();
    assert_eq!(
        udp(dns_addr, &garbage, Duration::from_millis(300)).await,
        None
    );
    eventually("the resolver to see the garbage", WAIT, async || {
        resolver.queries().last() == Some(&(Transport::Udp, garbage.clone()))
    })
    .await;
    assert_eq!(
        proxy
            .metric("faultline_dns_queries_total{transport=\"udp\"}")
            .await,
        3.0
    );
    assert_eq!(
        proxy
            .metric("faultline_dns_queries_total{transport=\"tcp\"}")
            .await,
        2.0
    );
    assert_eq!(
        metrics::sum(
            &proxy.metrics().await,
            "faultline_faults_injected_total",
            None
        ),
        0.0
    );
}

#[tokio::test]
async fn faults_by_name_glob_and_type_over_udp_and_tcp() {
    let resolver = resolver().await;
    let proxy = start(&resolver, POLICY, |_| {}).await;
    let dns_addr = proxy.dns.unwrap();
    let cases = [
        ("a.nats.svc.cluster.local", A, NXDOMAIN),
        ("A.B.NATS.svc.cluster.local", A, NXDOMAIN),
        ("flaky.example.test", TXT, SERVFAIL),
        ("refused.example.test", AAAA, REFUSED),
    ];
    for (i, (name, qtype, expected)) in cases.into_iter().enumerate() {
        let query = dns::query(100 + i as u16, name, qtype);
        let answer = udp(dns_addr, &query, WAIT).await.unwrap();
        assert_eq!(rcode(&answer), (expected, 0), "{name} over UDP");
        assert_eq!(
            &answer[..2],
            &query[..2],
            "the answer carries the query's ID"
        );
        assert_eq!(dns::question(&answer).unwrap().0, name.to_ascii_lowercase());

        let mut stream = TcpStream::connect(dns_addr).await.unwrap();
        send_frame(&mut stream, &query).await;
        let answer = read_frame(&mut stream, WAIT).await.unwrap();
        assert_eq!(rcode(&answer), (expected, 0), "{name} over TCP");
    }
    assert!(
        resolver.queries().is_empty(),
        "faulted queries never reach the resolver"
    );
    assert_eq!(
        proxy
            .metric("faultline_faults_injected_total{rule=\"nats-gone\",kind=\"dns\"}")
            .await,
        4.0
    );
    assert_eq!(
        proxy
            .metric("faultline_faults_injected_total{rule=\"refused\",kind=\"dns\"}")
            .await,
        2.0
    );
}

#[tokio::test]
async fn delay_holds_a_query_and_hang_drops_it() {
    let resolver = resolver().await;
    let proxy = start(&resolver, POLICY, |_| {}).await;
    let dns_addr = proxy.dns.unwrap();

    let started = Instant::now();
    let answer = udp(dns_addr, &dns::query(1, "slow.example.test", A), WAIT)
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(rcode(&answer), (NOERROR, 1));

    assert_eq!(
        udp(
            dns_addr,
            &dns::query(2, "lost.example.test", A),
            Duration::from_millis(600)
        )
        .await,
        None
    );

    // Over TCP a dropped query leaves the connection open and silent.
    let mut stream = TcpStream::connect(dns_addr).await.unwrap();
    send_frame(&mut stream, &dns::query(3, "lost.example.test", A)).await;
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_millis(600), stream.read(&mut byte)).await;
    assert!(
        read.is_err(),
        "the connection stays open with no answer: {read:?}"
    );
    assert_eq!(
        resolver.queries().len(),
        1,
        "only the delayed query was forwarded"
    );
    assert_eq!(
        proxy
            .metric("faultline_faults_injected_total{rule=\"lost\",kind=\"hang\"}")
            .await,
        2.0
    );
}

#[tokio::test]
async fn a_policy_change_applies_to_the_next_query() {
    let resolver = resolver().await;
    let proxy = start(&resolver, "rules: []\n", |_| {}).await;
    let dns_addr = proxy.dns.unwrap();
    let query = dns::query(9, "orders.shop.svc.cluster.local", A);
    assert_eq!(
        rcode(&udp(dns_addr, &query, WAIT).await.unwrap()),
        (NOERROR, 1)
    );
    proxy
        .set_policy("rules:\n- {match: {dns: {name: \"*.shop.svc.cluster.local\"}}, dns: {rcode: NXDOMAIN}}\n")
        .await;
    assert_eq!(
        rcode(&udp(dns_addr, &query, WAIT).await.unwrap()),
        (NXDOMAIN, 0)
    );
}

#[tokio::test]
async fn large_answers_are_truncated_over_udp_and_whole_over_tcp() {
    let resolver = resolver().await;
    let proxy = start(&resolver, POLICY, |_| {}).await;
    let dns_addr = proxy.dns.unwrap();
    let query = dns::query(5, dns::BIG, TXT);
    let answer = udp(dns_addr, &query, WAIT).await.unwrap();
    assert_eq!(answer[2] & 0x02, 0x02, "TC set: ask again over TCP");
    assert_eq!(rcode(&answer), (NOERROR, 0));
    assert_eq!(
        proxy
            .metric("faultline_dns_queries_rejected_total{reason=\"too_large\"}")
            .await,
        1.0
    );

    let mut stream = TcpStream::connect(dns_addr).await.unwrap();
    send_frame(&mut stream, &query).await;
    let whole = read_frame(&mut stream, WAIT).await.unwrap();
    assert!(whole.len() > 4096, "{}", whole.len());
    assert_eq!(rcode(&whole), (NOERROR, 24));

    // A datagram larger than any DNS message over UDP is dropped.
    assert_eq!(
        udp(dns_addr, &vec![0u8; 5000], Duration::from_millis(300)).await,
        None
    );
    assert_eq!(
        proxy
            .metric("faultline_dns_queries_rejected_total{reason=\"too_large\"}")
            .await,
        2.0
    );
}

#[tokio::test]
async fn in_flight_queries_resolver_time_and_tcp_connections_are_bounded() {
    let resolver = resolver().await;
    let proxy = start(&resolver, POLICY, |config| {
        let dns = config.dns.as_mut().unwrap();
        dns.max_in_flight = 2;
        dns.timeout = Duration::from_millis(500);
        dns.max_tcp_connections = 1;
        dns.tcp_idle = Duration::from_millis(800);
    })
    .await;
    let dns_addr = proxy.dns.unwrap();

    // The resolver never answers these: two wait for it, three are dropped.
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for id in 0..5 {
        socket
            .send_to(&dns::query(id, dns::SILENT, A), dns_addr)
            .await
            .unwrap();
    }
    eventually("three queries over the bound", WAIT, async || {
        proxy
            .metric("faultline_dns_queries_rejected_total{reason=\"in_flight\"}")
            .await
            == 3.0
    })
    .await;
    assert_eq!(proxy.metric("faultline_dns_queries_in_flight").await, 2.0);
    eventually("the resolver's time to run out", WAIT, async || {
        proxy
            .metric("faultline_dns_upstream_errors_total{reason=\"timeout\"}")
            .await
            == 2.0
    })
    .await;
    assert_eq!(proxy.metric("faultline_dns_queries_in_flight").await, 0.0);
    // With the bound free again, queries go through.
    assert_eq!(
        rcode(
            &udp(dns_addr, &dns::query(9, "ok.example.test", A), WAIT)
                .await
                .unwrap()
        ),
        (NOERROR, 1)
    );

    // One TCP connection at a time: a second is closed at once.
    let mut first = TcpStream::connect(dns_addr).await.unwrap();
    send_frame(&mut first, &dns::query(1, "ok.example.test", A)).await;
    assert!(read_frame(&mut first, WAIT).await.is_some());
    assert_eq!(proxy.metric("faultline_dns_tcp_connections").await, 1.0);
    let mut second = TcpStream::connect(dns_addr).await.unwrap();
    let mut byte = [0u8; 1];
    let closed = tokio::time::timeout(WAIT, second.read(&mut byte))
        .await
        .unwrap();
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    assert_eq!(
        proxy
            .metric("faultline_dns_queries_rejected_total{reason=\"tcp_connections\"}")
            .await,
        1.0
    );

    // An idle connection is closed after tcp_idle, freeing its slot.
    let closed = tokio::time::timeout(WAIT, first.read(&mut byte))
        .await
        .unwrap();
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    eventually("the slot to be free", WAIT, async || {
        proxy.metric("faultline_dns_tcp_connections").await == 0.0
    })
    .await;

    // A TCP query longer than any query is refused by closing.
    let mut stream = TcpStream::connect(dns_addr).await.unwrap();
    stream.write_all(&[0x20, 0x00]).await.unwrap();
    let closed = tokio::time::timeout(WAIT, stream.read(&mut byte))
        .await
        .unwrap();
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    assert_eq!(
        proxy
            .metric("faultline_dns_queries_rejected_total{reason=\"too_large\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn policy_warns_about_dns_rules_where_dns_is_not_captured() {
    let upstream = http_upstream().await;
    let without = start_proxy(upstream.addr, POLICY).await;
    assert_eq!(without.dns, None);
    let (_, body) = without.admin_get("/policy").await;
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let warnings = json["warnings"].as_array().expect("warnings");
    assert!(
        warnings[0]
            .as_str()
            .unwrap()
            .contains("faultline.dev/capture-dns"),
        "{warnings:?}"
    );

    let resolver = resolver().await;
    let with = start(&resolver, POLICY, |_| {}).await;
    let (_, body) = with.admin_get("/policy").await;
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(json.get("warnings").is_none(), "{body}");
    assert_eq!(json["policy"]["rules"][0]["dns"]["rcode"], "NXDOMAIN");
}
