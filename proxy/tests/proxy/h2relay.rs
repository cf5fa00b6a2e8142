//! The HTTP/2 relay: h2c connections no rule can reach are carried byte for
//! byte to an upstream connection of their own, their requests counted and
//! timed; a rule that comes to reach them, or the drain, sends the client a
//! GOAWAY, and its next connection is served by hyper under the new policy.
//! A real hyper HTTP/2 client and upstream; hostile frames from a raw
//! socket.
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

const RELAYED: &str = "faultline_requests_relayed_total{direction=\"inbound\"}";
const H2_REQUESTS: &str = "faultline_requests_total{direction=\"inbound\",protocol=\"http2\"}";
const GRPC_REQUESTS: &str = "faultline_requests_total{direction=\"inbound\",protocol=\"grpc\"}";
const H2_LATENCY: &str =
    "faultline_upstream_latency_seconds_count{direction=\"inbound\",protocol=\"http2\"}";

async fn body_of(response: http::Response<hyper::body::Incoming>) -> Bytes {
    response.into_body().collect().await.unwrap().to_bytes()
}

fn grpc_call() -> Request<Body> {
    Request::post("http://test.svc/test.Echo/Unary")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(full(Bytes::from_static(b"\x00\x00\x00\x00\x02hi")))
        .unwrap()
}

#[tokio::test]
async fn h2c_no_rule_can_reach_is_relayed_counted_and_timed() {
    let upstream = http_upstream().await;
    let proxy = start_proxy(upstream.addr, "rules: []\n").await;
    let mut client = h2_client(proxy.addr).await;
    for _ in 0..3 {
        let response = client.send_request(get("/hello")).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(body_of(response).await, "hello");
    }
    let response = client.send_request(grpc_call()).await.unwrap();
    let collected = response.into_body().collect().await.unwrap();
    assert_eq!(collected.trailers().unwrap()["grpc-status"], "0");
    assert_eq!(&collected.to_bytes()[..], b"\x00\x00\x00\x00\x02hi");
    // 50 streams at once, and bodies of megabytes both ways.
    let calls = (0..50).map(|i| {
        let mut client = client.clone();
        async move {
            let response = client
                .send_request(get(&format!("/bytes/{}", 1000 + i)))
                .await
                .unwrap();
            body_of(response).await.len()
        }
    });
    let sizes = futures::future::join_all(calls).await;
    assert_eq!(sizes, (0..50).map(|i| 1000 + i).collect::<Vec<_>>());
    let big = Bytes::from(
        (0..4_000_000u32)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>(),
    );
    let echo = Request::post("http://test/echo")
        .body(full(big.clone()))
        .unwrap();
    let response = client.send_request(echo).await.unwrap();
    assert!(
        body_of(response).await == big,
        "the echoed body is the one sent"
    );

    assert_eq!(proxy.metric(RELAYED).await, 55.0);
    assert_eq!(proxy.metric(H2_REQUESTS).await, 54.0);
    assert_eq!(proxy.metric(GRPC_REQUESTS).await, 1.0);
    assert_eq!(proxy.metric(H2_LATENCY).await, 54.0);
    assert_eq!(upstream.hits(), 55);
}

#[tokio::test]
async fn rules_out_of_the_connections_reach_leave_it_relayed() {
    let upstream = http_upstream().await;
    // The standalone listener's requests are inbound, to the upstream's port.
    let elsewhere = "rules:\n- {match: {port: 1}, abort: {status: 503}}\n\
                     - {match: {direction: outbound}, delay: {fixed: 1s}}\n";
    let proxy = start_proxy(upstream.addr, elsewhere).await;
    let mut client = h2_client(proxy.addr).await;
    assert_eq!(
        client.send_request(get("/hello")).await.unwrap().status(),
        200
    );
    assert_eq!(proxy.metric(RELAYED).await, 1.0);

    // A rule on this port that no request here matches still hands the
    // connection to hyper, which decides each request.
    let here = format!(
        "rules:\n- {{match: {{port: {}, path: /never}}, abort: {{status: 503}}}}\n",
        upstream.addr.port()
    );
    proxy.set_policy(&here).await;
    let mut client = h2_client(proxy.addr).await;
    assert_eq!(
        client.send_request(get("/hello")).await.unwrap().status(),
        200
    );
    assert_eq!(proxy.metric(RELAYED).await, 1.0);
    assert_eq!(proxy.metric(H2_REQUESTS).await, 2.0);
}

#[tokio::test]
async fn a_rule_that_comes_to_reach_it_ends_the_connection_with_goaway_losing_nothing() {
    let upstream = http_upstream().await;
    let proxy = start_proxy(upstream.addr, "rules: []\n").await;
    let mut client = h2_client(proxy.addr).await;
    assert_eq!(
        client.send_request(get("/hello")).await.unwrap().status(),
        200
    );
    let mut slow_client = client.clone();
    let in_flight = tokio::spawn(async move {
        let response = slow_client.send_request(get("/sleep/600")).await.unwrap();
        (response.status(), body_of(response).await)
    });
    eventually(
        "the slow request upstream",
        Duration::from_secs(5),
        || async { upstream.hits() == 2 },
    )
    .await;

    proxy
        .set_policy("rules:\n- {name: down, match: {path: /hello}, abort: {status: 503}}\n")
        .await;
    // The request in flight is answered as it started.
    let (status, body) = in_flight.await.unwrap();
    assert_eq!((status.as_u16(), &body[..]), (200, &b"slept"[..]));
    // The client was told to go: its connection closes once its streams
    // are over, and a new one is served under the new policy.
    eventually(
        "the relayed connection to close",
        Duration::from_secs(5),
        || async { client.is_closed() },
    )
    .await;
    let mut client = h2_client(proxy.addr).await;
    assert_eq!(
        client.send_request(get("/hello")).await.unwrap().status(),
        503
    );
    assert_eq!(proxy.metric(&injected("down", "abort")).await, 1.0);
    assert_eq!(proxy.metric(RELAYED).await, 2.0);
}

#[tokio::test]
async fn the_drain_sends_goaway_and_waits_for_the_streams_in_flight() {
    let upstream = http_upstream().await;
    let proxy = start_proxy(upstream.addr, "rules: []\n").await;
    let mut client = h2_client(proxy.addr).await;
    let in_flight = tokio::spawn(async move {
        let response = client.send_request(get("/sleep/500")).await.unwrap();
        let body = body_of(response).await;
        (body, client)
    });
    eventually(
        "the slow request upstream",
        Duration::from_secs(5),
        || async { upstream.hits() == 1 },
    )
    .await;
    proxy.shutdown.cancel();
    let (body, mut client) = in_flight.await.unwrap();
    assert_eq!(body, "slept");
    // Told to go, the client opens no stream there any more: this request
    // fails at the client and never reaches the upstream.
    assert!(client.send_request(get("/hello")).await.is_err());
    assert_eq!(upstream.hits(), 1);
    tokio::time::timeout(Duration::from_secs(5), proxy.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn an_unreachable_upstream_leaves_the_connection_to_hyper_which_answers_502() {
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let proxy = start_proxy(addr, "rules: []\n").await;
    let mut client = h2_client(proxy.addr).await;
    assert_eq!(
        client.send_request(get("/hello")).await.unwrap().status(),
        502
    );
    assert_eq!(proxy.metric(RELAYED).await, 0.0);
}

/// One HTTP/2 frame.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A client's opening: the preface and an empty SETTINGS frame.
fn opening() -> Vec<u8> {
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(0x4, 0, 0, &[]));
    out
}

/// Sends `bytes` after the preface and an empty SETTINGS, then reads what
/// comes back until the connection closes (within 5 s).
async fn raw_h2(addr: std::net::SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut out = opening();
    out.extend_from_slice(bytes);
    stream.write_all(&out).await.unwrap();
    let mut back = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut back)).await;
    back
}

/// The frame types in `bytes`, in order.
fn kinds(mut bytes: &[u8]) -> Vec<u8> {
    let mut kinds = Vec::new();
    while bytes.len() >= 9 {
        let len = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
        kinds.push(bytes[3]);
        bytes = &bytes[(9 + len).min(bytes.len())..];
    }
    kinds
}

#[tokio::test]
async fn hostile_frames_reach_the_upstream_as_sent_and_cost_the_proxy_nothing() {
    let upstream = http_upstream().await;
    let proxy = start_proxy(upstream.addr, "rules: []\n").await;
    // An HPACK index past both tables: the upstream ends the connection
    // with GOAWAY (COMPRESSION_ERROR), as it would without the proxy.
    let back = raw_h2(proxy.addr, &frame(0x1, 0x5, 1, &[0xff, 0x7f])).await;
    assert!(kinds(&back).contains(&0x7), "a GOAWAY came back: {back:?}");
    // A header block of 100 KiB in CONTINUATION frames, past the bound the
    // relay decodes: the upstream refuses it, the relay stops decoding.
    let mut blocks = frame(0x1, 0, 1, &[0x40, 0x01, b'x', 0x7f, 0x7f]);
    for _ in 0..25 {
        blocks.extend(frame(0x9, 0, 1, &[b'a'; 4096]));
    }
    blocks.extend(frame(0x9, 0x4, 1, b""));
    let back = raw_h2(proxy.addr, &blocks).await;
    assert!(kinds(&back).contains(&0x7), "a GOAWAY came back: {back:?}");
    // A 16 MiB DATA frame announced and never sent, then the client leaves.
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let mut out = opening();
    out.extend_from_slice(&[0xff, 0xff, 0xff, 0x0, 0, 0, 0, 0, 3]);
    stream.write_all(&out).await.unwrap();
    drop(stream);

    eventually(
        "the hostile connections to end",
        Duration::from_secs(5),
        || async { proxy.metric(ACTIVE).await == 0.0 },
    )
    .await;
    // The proxy and its relay are unharmed.
    let mut client = h2_client(proxy.addr).await;
    let response = client.send_request(grpc_call()).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(proxy.metric(GRPC_REQUESTS).await, 1.0);
}

#[tokio::test]
async fn goaway_goes_in_between_frames_of_a_download_in_flight() {
    let upstream = http_upstream().await;
    let proxy = start_proxy(upstream.addr, "rules: []\n").await;
    let mut client = h2_client(proxy.addr).await;
    let response = client.send_request(get("/bytes/30000000")).await.unwrap();
    let mut body = response.into_body();
    let mut got = 0;
    // Part of it read, the rest still coming, when the policy changes.
    while got < 1_000_000 {
        let frame = body.frame().await.unwrap().unwrap();
        got += frame.into_data().map_or(0, |d| d.len());
    }
    proxy
        .set_policy("rules:\n- {match: {path: /hello}, abort: {status: 503}}\n")
        .await;
    while let Some(frame) = body.frame().await {
        let data = frame.unwrap().into_data().unwrap_or_default();
        assert!(data.iter().all(|b| *b == b'x'));
        got += data.len();
    }
    assert_eq!(got, 30_000_000);
    assert!(client.send_request(get("/hello")).await.is_err());
    eventually(
        "the relayed connection to close",
        Duration::from_secs(5),
        || async { client.is_closed() },
    )
    .await;
}

#[tokio::test]
async fn a_client_that_ignores_goaway_is_closed_once_its_streams_are_over() {
    let upstream = http_upstream().await;
    let proxy = start_proxy(upstream.addr, "rules: []\n").await;
    // A client that opens a connection and never closes it.
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream.write_all(&opening()).await.unwrap();
    eventually(
        "the connection to be relayed",
        Duration::from_secs(5),
        || async { proxy.metric(ACTIVE).await == 1.0 },
    )
    .await;
    proxy
        .set_policy("rules:\n- {match: {path: /hello}, abort: {status: 503}}\n")
        .await;
    // The upstream's SETTINGS (and its ACK), then the relay's GOAWAY, then
    // the end: the relay closes the connection itself, a grace period
    // after the GOAWAY, since no stream is open.
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut back))
        .await
        .expect("the relay closes the connection")
        .unwrap();
    assert!(kinds(&back).contains(&0x7), "a GOAWAY came back: {back:?}");
}
