//! What an idle HTTP/1.1 keep-alive connection holds: its hyper connection
//! (and buffers) is taken apart between requests and rebuilt when the
//! client sends again, which clients must never notice. Seen through
//! `faultline_connections_parked` (connections waiting with no buffers)
//! beside `faultline_connections_active`.
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

const CONNS: usize = 20;
const POLICY: &str =
    "rules:\n- name: refuse-posts\n  match: {methods: [POST]}\n  abort: {status: 503}\n";

#[tokio::test]
async fn idle_keep_alive_connections_hold_no_buffers_and_are_served_again() {
    let upstream = http_upstream().await;
    let proxy = start_proxy(upstream.addr, POLICY).await;
    let mut clients = Vec::new();
    for _ in 0..CONNS {
        let mut sender = h1_client(proxy.addr).await;
        let response = sender.send_request(get("/hello")).await.unwrap();
        assert_eq!(response.status(), 200);
        clients.push(sender);
    }
    parked_exactly(&proxy, CONNS).await;
    assert_eq!(proxy.metric(ACTIVE).await, CONNS as f64);

    // Parked connections wake up for their next request, and park again.
    for sender in &mut clients {
        let response = sender.send_request(get("/hello")).await.unwrap();
        assert_eq!(response.status(), 200);
    }
    parked_exactly(&proxy, CONNS).await;

    drop(clients);
    eventually(
        "every connection closed",
        Duration::from_secs(10),
        || async { proxy.metric(ACTIVE).await == 0.0 && proxy.metric(PARKED).await == 0.0 },
    )
    .await;
}

/// Pipelined requests are all answered before the connection goes idle,
/// and it parks once it has been idle for a clock tick.
#[tokio::test]
async fn pipelined_requests_survive_the_connection_going_idle() {
    let upstream = http_upstream().await;
    let proxy = start_proxy(upstream.addr, POLICY).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let one = "GET /hello HTTP/1.1\r\nhost: test\r\n\r\n";
    stream.write_all(one.repeat(3).as_bytes()).await.unwrap();
    let seen = read_until(&mut stream, |seen| seen.matches("hello").count() == 3).await;
    assert_eq!(seen.matches("HTTP/1.1 200").count(), 3, "{seen}");
    parked_exactly(&proxy, 1).await;
    stream.write_all(one.as_bytes()).await.unwrap();
    let seen = read_until(&mut stream, |seen| seen.ends_with("hello")).await;
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
}

/// A connection idle for a tick with half a request head already read is
/// taken apart too: the bytes read so far are replayed into the next hyper
/// connection, never lost.
#[tokio::test]
async fn a_request_head_split_across_the_idle_tick_is_replayed() {
    let upstream = http_upstream().await;
    let proxy = start_proxy(upstream.addr, POLICY).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"GET /hello HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .unwrap();
    read_until(&mut stream, |seen| seen.ends_with("hello")).await;
    stream.write_all(b"GET /hel").await.unwrap();
    // Two ticks of the coarse clock and some: the connection is taken apart
    // holding the partial head.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    stream
        .write_all(b"lo HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .unwrap();
    let seen = read_until(&mut stream, |seen| seen.ends_with("hello")).await;
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
}

/// A request answered without its body being read (an abort) leaves the
/// body for hyper to skip: the connection is taken apart only once hyper
/// waits for a new request head, so the body is never read as one.
#[tokio::test]
async fn an_unread_request_body_is_never_taken_for_the_next_request() {
    let upstream = http_upstream().await;
    let proxy = start_proxy(upstream.addr, POLICY).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    // The body looks like a request of its own.
    let smuggled = "GET /headers HTTP/1.1\r\nhost: x\r\n\r\n";
    let post = format!(
        "POST /upload HTTP/1.1\r\nhost: test\r\ncontent-length: {}\r\n\r\n{smuggled}",
        smuggled.len()
    );
    stream.write_all(post.as_bytes()).await.unwrap();
    let seen = read_until(&mut stream, |seen| seen.contains("\r\n\r\n")).await;
    assert!(seen.starts_with("HTTP/1.1 503"), "{seen}");
    parked_exactly(&proxy, 1).await;
    stream
        .write_all(b"GET /hello HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .unwrap();
    let seen = read_until(&mut stream, |seen| seen.ends_with("hello")).await;
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    assert_eq!(
        upstream.hits(),
        1,
        "the body reached the upstream as a request"
    );
}

async fn parked_exactly(proxy: &TestProxy, n: usize) {
    eventually(
        &format!("{n} idle connections parked"),
        Duration::from_secs(10),
        || async { proxy.metric(PARKED).await == n as f64 },
    )
    .await;
}

/// Reads from `stream` until `done(what was read)`; 10 s at most.
async fn read_until(stream: &mut TcpStream, done: impl Fn(&str) -> bool) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(Duration::from_secs(10), async {
        while !done(&String::from_utf8_lossy(&seen)) {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out; read {:?}", String::from_utf8_lossy(&seen)));
    String::from_utf8_lossy(&seen).into_owned()
}
