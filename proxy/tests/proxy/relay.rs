//! The HTTP/1.1 relay (`traffic::http::relay`): plain requests carried
//! verbatim, byte for byte in both directions, over upstream connections
//! shared through the worker's pool, with the policy still deciding each
//! request; anything else served by hyper as before, on the same
//! connection. `faultline_requests_relayed_total` tells which path a
//! request took. The upstream here is a scripted raw TCP server, so what
//! the proxy sends and what it passes on are compared as bytes.
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

const EMPTY: &str = "rules: []\n";
const RELAYED: &str = "faultline_requests_relayed_total{direction=\"inbound\"}";
const REQUESTS: &str = "faultline_requests_total{direction=\"inbound\",protocol=\"http1\"}";
const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

/// What the scripted upstream answers a request head with.
enum Reply {
    Bytes(Vec<u8>),
    /// Sends these, then closes the connection.
    ThenClose(Vec<u8>),
    /// Waits, then sends these.
    Later(Duration, Vec<u8>),
}

/// A raw HTTP/1.1 upstream: reads each request (a `Content-Length` or
/// chunked body included), keeps every byte received, and answers what
/// `script` says for the request head.
struct Scripted {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    received: Arc<Mutex<Vec<u8>>>,
}

impl Scripted {
    async fn start(script: fn(&str) -> Reply) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let received = Arc::new(Mutex::new(Vec::new()));
        let (a, r) = (accepted.clone(), received.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                a.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve_scripted(stream, script, r.clone()));
            }
        });
        Scripted {
            addr,
            accepted,
            received,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn received(&self) -> Vec<u8> {
        self.received.lock().unwrap().clone()
    }
}

async fn serve_scripted(
    mut stream: TcpStream,
    script: fn(&str) -> Reply,
    seen: Arc<Mutex<Vec<u8>>>,
) {
    let mut buf = Vec::new();
    loop {
        let Some(end) = read_request(&mut stream, &mut buf).await else {
            return;
        };
        let request: Vec<u8> = buf.drain(..end).collect();
        seen.lock().unwrap().extend_from_slice(&request);
        let head = String::from_utf8_lossy(&request).into_owned();
        let (bytes, close) = match script(&head) {
            Reply::Bytes(b) => (b, false),
            Reply::ThenClose(b) => (b, true),
            Reply::Later(after, b) => {
                tokio::time::sleep(after).await;
                (b, false)
            }
        };
        if stream.write_all(&bytes).await.is_err() || close {
            return;
        }
    }
}

/// Reads until `buf` holds a whole request; returns its length.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(end) = request_end(buf) {
            return Some(end);
        }
        let mut chunk = vec![0u8; 64 * 1024];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The end of the request at the start of `buf`, if it is all there.
fn request_end(buf: &[u8]) -> Option<usize> {
    let head = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let text = String::from_utf8_lossy(&buf[..head]).to_ascii_lowercase();
    if text.contains("transfer-encoding: chunked") {
        let mut at = head;
        loop {
            let line = buf[at..].windows(2).position(|w| w == b"\r\n")?;
            let size_text = String::from_utf8_lossy(&buf[at..at + line]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            at += line + 2;
            if size == 0 {
                // Trailers, up to an empty line.
                loop {
                    let line = buf[at..].windows(2).position(|w| w == b"\r\n")?;
                    at += line + 2;
                    if line == 0 {
                        return Some(at);
                    }
                }
            }
            at += size + 2;
            if at > buf.len() {
                return None;
            }
        }
    }
    let length = text
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse::<usize>().unwrap());
    (buf.len() >= head + length).then_some(head + length)
}

/// Reads exactly `n` bytes (within 10 s).
async fn read_n(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut out = vec![0u8; n];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut out))
        .await
        .expect("timed out reading the response")
        .unwrap();
    out
}

/// Reads to the end of the stream (within 10 s).
async fn read_to_end(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out))
        .await
        .expect("timed out waiting for the connection to close")
        .unwrap();
    out
}

/// Sends `request` and expects exactly `response` back.
async fn roundtrip(stream: &mut TcpStream, request: &[u8], response: &[u8]) {
    stream.write_all(request).await.unwrap();
    let got = read_n(stream, response.len()).await;
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(response)
    );
}

fn ok_script(_head: &str) -> Reply {
    Reply::Bytes(OK.to_vec())
}

#[tokio::test]
async fn keep_alive_requests_are_relayed_verbatim_over_one_upstream_connection() {
    let upstream = Scripted::start(ok_script).await;
    // One worker: one pool, so reuse is exact.
    let proxy = start_proxy_with(upstream.addr, EMPTY, &[("FAULTLINE_WORKERS", "1")]).await;
    let mut client = TcpStream::connect(proxy.addr).await.unwrap();
    // Header case, order and the hop-by-hop Connection header go as sent.
    let request = b"GET /a?b=c HTTP/1.1\r\nHost: test:80\r\nX-Odd-CASE:  spaced \r\nConnection: keep-alive\r\n\r\n";
    for _ in 0..5 {
        roundtrip(&mut client, request, OK).await;
    }
    assert_eq!(upstream.received(), request.repeat(5));
    assert_eq!(upstream.accepted(), 1);
    assert_eq!(proxy.metric(RELAYED).await, 5.0);
    assert_eq!(proxy.metric(REQUESTS).await, 5.0);
    // A second client reuses the idle upstream connection.
    let mut other = TcpStream::connect(proxy.addr).await.unwrap();
    roundtrip(&mut other, request, OK).await;
    assert_eq!(upstream.accepted(), 1);
    // Idle, both hold no buffers; and are served again.
    eventually(
        "both connections parked",
        Duration::from_secs(10),
        || async { proxy.metric(PARKED).await == 2.0 },
    )
    .await;
    roundtrip(&mut client, request, OK).await;
    assert_eq!(proxy.metric(RELAYED).await, 7.0);
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let upstream = Scripted::start(|head| {
        let path = head.split(' ').nth(1).unwrap_or("?").to_owned();
        Reply::Bytes(
            format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{path}",
                path.len()
            )
            .into_bytes(),
        )
    })
    .await;
    let proxy = start_proxy(upstream.addr, EMPTY).await;
    let mut client = TcpStream::connect(proxy.addr).await.unwrap();
    let mut requests = Vec::new();
    let mut expected = Vec::new();
    for path in ["/one", "/two", "/three"] {
        requests.extend_from_slice(format!("GET {path} HTTP/1.1\r\nhost: t\r\n\r\n").as_bytes());
        expected.extend_from_slice(
            format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{path}",
                path.len()
            )
            .as_bytes(),
        );
    }
    roundtrip(&mut client, &requests, &expected).await;
    assert_eq!(upstream.received(), requests);
    assert_eq!(proxy.metric(RELAYED).await, 3.0);
}

const CHUNKED_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-sum: 11\r\n\r\n";

#[tokio::test]
async fn chunked_responses_with_trailers_go_through_verbatim() {
    let upstream = Scripted::start(|head| {
        if head.starts_with("GET /chunked") {
            Reply::Bytes(CHUNKED_RESPONSE.to_vec())
        } else {
            Reply::Bytes(OK.to_vec())
        }
    })
    .await;
    let proxy = start_proxy(upstream.addr, EMPTY).await;
    let mut client = TcpStream::connect(proxy.addr).await.unwrap();
    let first: &[u8] = b"GET /chunked HTTP/1.1\r\nhost: t\r\n\r\n";
    client.write_all(first).await.unwrap();
    let got = read_n(&mut client, CHUNKED_RESPONSE.len()).await;
    assert_eq!(got, CHUNKED_RESPONSE);
    // The body's end was found exactly: the connection carries on.
    let get = b"GET / HTTP/1.1\r\nhost: t\r\n\r\n";
    roundtrip(&mut client, get, OK).await;
    let mut sent = first.to_vec();
    sent.extend_from_slice(get);
    assert_eq!(upstream.received(), sent);
    assert_eq!(proxy.metric(RELAYED).await, 2.0);
}

#[tokio::test]
async fn requests_with_a_body_are_left_to_hyper_which_streams_both_ways() {
    // An upstream that answers while it still reads the body (an echo)
    // needs both directions at once: hyper's path carries it.
    let upstream = http_upstream().await;
    let proxy = start_proxy(upstream.addr, EMPTY).await;
    let client = reqwest::Client::new();
    let response = client
        .post(proxy.url("/echo"))
        .body(streamed_body(64))
        .send()
        .await
        .unwrap();
    let body = tokio::time::timeout(Duration::from_secs(30), response.bytes())
        .await
        .expect("the echo stalled")
        .unwrap();
    assert_eq!(body.len(), 64 * 64 * 1024);
    assert_eq!(body[64 * 1024 * 63], 63);
    // The next request on that connection is hyper's too: hyper keeps a
    // connection until it has been idle a clock tick.
    let response = client.get(proxy.url("/hello")).send().await.unwrap();
    assert_eq!(response.text().await.unwrap(), "hello");
    assert_eq!(proxy.metric(RELAYED).await, 0.0);
}

#[tokio::test]
async fn a_close_delimited_response_is_relayed_to_the_end_then_the_connection_closes() {
    const UNTIL_CLOSE: &[u8] =
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nall of this, until the close";
    let upstream = Scripted::start(|_| Reply::ThenClose(UNTIL_CLOSE.to_vec())).await;
    let proxy = start_proxy(upstream.addr, EMPTY).await;
    let mut client = TcpStream::connect(proxy.addr).await.unwrap();
    client
        .write_all(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_to_end(&mut client).await, UNTIL_CLOSE);
    assert_eq!(proxy.metric(RELAYED).await, 1.0);
}

#[tokio::test]
async fn bodiless_responses_end_at_their_head() {
    let upstream = Scripted::start(|head| {
        Reply::Bytes(match head.split(' ').nth(1).unwrap_or("") {
            // HEAD: the length of the body a GET would get, and no body.
            "/head" => b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n".to_vec(),
            "/204" => b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(),
            "/304" => b"HTTP/1.1 304 Not Modified\r\netag: \"x\"\r\ncontent-length: 9\r\n\r\n".to_vec(),
            "/early" => b"HTTP/1.1 103 Early Hints\r\nlink: </s.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(),
            _ => OK.to_vec(),
        })
    })
    .await;
    let proxy = start_proxy(upstream.addr, EMPTY).await;
    let mut client = TcpStream::connect(proxy.addr).await.unwrap();
    let cases: [(&str, &[u8]); 4] = [
        ("HEAD /head", b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"),
        ("GET /204", b"HTTP/1.1 204 No Content\r\n\r\n"),
        ("GET /304", b"HTTP/1.1 304 Not Modified\r\netag: \"x\"\r\ncontent-length: 9\r\n\r\n"),
        ("GET /early", b"HTTP/1.1 103 Early Hints\r\nlink: </s.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"),
    ];
    for (line, expected) in cases {
        let request = format!("{line} HTTP/1.1\r\nhost: t\r\n\r\n");
        roundtrip(&mut client, request.as_bytes(), expected).await;
        // Nothing was taken for a body: the next exchange is exact.
        roundtrip(&mut client, b"GET / HTTP/1.1\r\nhost: t\r\n\r\n", OK).await;
    }
    assert_eq!(proxy.metric(RELAYED).await, 8.0);
    assert_eq!(upstream.accepted(), 1);
}

/// Deterministic bytes that are not all alike.
fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i.wrapping_mul(31) as u8) ^ seed).collect()
}

#[tokio::test]
async fn a_large_response_goes_through_byte_for_byte() {
    const DOWN: usize = 6 * 1024 * 1024 + 7;
    let upstream = Scripted::start(|_| {
        let mut response =
            format!("HTTP/1.1 200 OK\r\ncontent-length: {DOWN}\r\n\r\n").into_bytes();
        response.extend_from_slice(&pattern(DOWN, 0x5a));
        Reply::Bytes(response)
    })
    .await;
    let proxy = start_proxy(upstream.addr, EMPTY).await;
    let mut client = TcpStream::connect(proxy.addr).await.unwrap();
    let request = b"GET /big HTTP/1.1\r\nhost: t\r\n\r\n".to_vec();
    let (mut read, mut write) = client.split();
    let send = async {
        write.write_all(&request).await.unwrap();
    };
    let receive = async {
        let mut got = vec![0u8; DOWN + 100];
        let head_len = format!("HTTP/1.1 200 OK\r\ncontent-length: {DOWN}\r\n\r\n").len();
        tokio::time::timeout(
            Duration::from_secs(30),
            read.read_exact(&mut got[..head_len + DOWN]),
        )
        .await
        .unwrap()
        .unwrap();
        got.truncate(head_len + DOWN);
        got.split_off(head_len)
    };
    let ((), body) = tokio::join!(send, receive);
    assert!(
        body == pattern(DOWN, 0x5a),
        "the response body changed on the way"
    );
    assert!(
        upstream.received() == request,
        "the request changed on the way"
    );
    assert_eq!(proxy.metric(RELAYED).await, 1.0);
}

#[tokio::test]
async fn the_relay_applies_request_delays_and_counts_them() {
    let upstream = Scripted::start(ok_script).await;
    let policy = "rules:\n- name: slow\n  match: {path: /slow}\n  delay: {fixed: 300ms}\n";
    let proxy = start_proxy(upstream.addr, policy).await;
    let mut client = TcpStream::connect(proxy.addr).await.unwrap();
    let started = Instant::now();
    roundtrip(&mut client, b"GET /slow HTTP/1.1\r\nhost: t\r\n\r\n", OK).await;
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    roundtrip(&mut client, b"GET /fast HTTP/1.1\r\nhost: t\r\n\r\n", OK).await;
    assert_eq!(proxy.metric(&injected("slow", "delay")).await, 1.0);
    assert_eq!(proxy.metric(RELAYED).await, 2.0);
}

#[tokio::test]
async fn a_new_policy_reaches_the_next_request_of_an_open_connection() {
    let upstream = Scripted::start(ok_script).await;
    let proxy = start_proxy(upstream.addr, EMPTY).await;
    let mut client = TcpStream::connect(proxy.addr).await.unwrap();
    let request = b"GET /x HTTP/1.1\r\nhost: t\r\n\r\n";
    roundtrip(&mut client, request, OK).await;
    proxy
        .set_policy("rules:\n- name: late\n  delay: {fixed: 300ms}\n")
        .await;
    let started = Instant::now();
    roundtrip(&mut client, request, OK).await;
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(proxy.metric(&injected("late", "delay")).await, 1.0);
    proxy
        .set_policy("rules:\n- name: down\n  abort: {status: 503}\n")
        .await;
    let refused = b"HTTP/1.1 503";
    client.write_all(request).await.unwrap();
    assert_eq!(read_n(&mut client, refused.len()).await, refused);
    assert_eq!(proxy.metric(RELAYED).await, 2.0);
}

/// A request that could get a fault other than a delay is decided once,
/// by the full path: the relay draws nothing and spends no `first` budget.
#[tokio::test]
async fn a_request_left_to_the_full_path_is_decided_once() {
    let upstream = Scripted::start(ok_script).await;
    let policy = "rules:\n\
        - {name: once, first: 1, match: {path: /y}, delay: {fixed: 200ms}}\n\
        - {name: down, match: {path: /y}, abort: {status: 503}}\n";
    let proxy = start_proxy(upstream.addr, policy).await;
    let mut client = h1_client(proxy.addr).await;
    let started = Instant::now();
    let first = client.send_request(get("/y")).await.unwrap();
    assert_eq!(first.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(200));
    let second = client.send_request(get("/y")).await.unwrap();
    assert_eq!(second.status(), 503);
    assert_eq!(proxy.metric(&injected("once", "delay")).await, 1.0);
    assert_eq!(proxy.metric(&injected("down", "abort")).await, 1.0);
    assert_eq!(proxy.metric(RELAYED).await, 0.0);
}

#[tokio::test]
async fn requests_the_relay_refuses_get_hypers_answer_and_the_relay_carries_on() {
    let upstream = Scripted::start(ok_script).await;
    let proxy = start_proxy(upstream.addr, EMPTY).await;
    let plain = b"GET /plain HTTP/1.1\r\nhost: t\r\n\r\n";
    // hyper rewrites these before forwarding; the relay never sees them.
    let cases: [&[u8]; 3] = [
        b"GET http://t/absolute HTTP/1.1\r\nhost: t\r\n\r\n",
        b"GET /old HTTP/1.0\r\nhost: t\r\nconnection: keep-alive\r\n\r\n",
        b"GET /hop HTTP/1.1\r\nhost: t\r\nkeep-alive: timeout=5\r\n\r\n",
    ];
    for (i, request) in cases.iter().enumerate() {
        let mut client = TcpStream::connect(proxy.addr).await.unwrap();
        client.write_all(request).await.unwrap();
        let head = tokio::time::timeout(Duration::from_secs(5), read_head(&mut client))
            .await
            .unwrap();
        assert!(head.contains(" 200 OK"), "{head}");
        let _body = read_n(&mut client, 2).await;
        assert_eq!(proxy.metric(RELAYED).await, i as f64);
        // Once hyper's connection has been idle a tick, the relay serves.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        roundtrip(&mut client, plain, OK).await;
        assert_eq!(proxy.metric(RELAYED).await, (i + 1) as f64);
    }
    let received = String::from_utf8_lossy(&upstream.received()).into_owned();
    assert!(
        received.contains("GET /absolute HTTP/1.1\r\n"),
        "{received}"
    );
    assert!(!received.contains("keep-alive: timeout"), "{received}");

    // Ambiguous framing: hyper's answer (the length is ignored, the
    // connection closes after the response).
    let smuggle = b"POST /cl-te HTTP/1.1\r\nhost: t\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n";
    let (out, _) = raw_exchange(proxy.addr, smuggle, Duration::from_secs(5)).await;
    assert!(
        out.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    // Expect and Upgrade are hyper's too.
    let mut client = TcpStream::connect(proxy.addr).await.unwrap();
    let head = exchange_head(
        &mut client,
        "POST /e HTTP/1.1\r\nhost: t\r\nexpect: 100-continue\r\ncontent-length: 2\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 100"), "{head}");
    client.write_all(b"hi").await.unwrap();
    let head = tokio::time::timeout(Duration::from_secs(5), read_head(&mut client))
        .await
        .unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(proxy.metric(RELAYED).await, 3.0);
}

#[tokio::test]
async fn an_upstream_refusing_connections_is_a_502_and_the_connection_stays() {
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let proxy = start_proxy(addr, EMPTY).await;
    let mut client = TcpStream::connect(proxy.addr).await.unwrap();
    for _ in 0..2 {
        let head = exchange_head(&mut client, "GET / HTTP/1.1\r\nhost: t\r\n\r\n").await;
        assert!(head.starts_with("HTTP/1.1 502"), "{head}");
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        let body = String::from_utf8(read_n(&mut client, length).await).unwrap();
        assert!(
            body.starts_with("faultline: failed to connect to upstream"),
            "{body}"
        );
    }
    assert_eq!(proxy.metric(RELAYED).await, 2.0);
    assert_eq!(
        proxy
            .metric("faultline_upstream_connect_errors_total{direction=\"inbound\"}")
            .await,
        2.0
    );
}

#[tokio::test]
async fn an_upstream_closing_mid_body_closes_the_client_connection() {
    const CUT: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten b";
    let upstream = Scripted::start(|_| Reply::ThenClose(CUT.to_vec())).await;
    let proxy = start_proxy(upstream.addr, EMPTY).await;
    let mut client = TcpStream::connect(proxy.addr).await.unwrap();
    client
        .write_all(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_to_end(&mut client).await, CUT);
}

#[tokio::test]
async fn a_drain_lets_the_relayed_exchange_finish_then_closes() {
    let upstream = Scripted::start(|_| Reply::Later(Duration::from_millis(500), OK.to_vec())).await;
    let proxy = start_proxy(upstream.addr, EMPTY).await;
    let mut client = TcpStream::connect(proxy.addr).await.unwrap();
    client
        .write_all(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
        .await
        .unwrap();
    eventually(
        "the request to be relayed",
        Duration::from_secs(5),
        || async { proxy.metric(RELAYED).await == 1.0 && !upstream.received().is_empty() },
    )
    .await;
    proxy.shutdown.cancel();
    assert_eq!(read_to_end(&mut client).await, OK);
}

#[tokio::test]
async fn a_long_head_is_relayed_and_one_past_the_bound_gets_hypers_431() {
    let upstream = Scripted::start(ok_script).await;
    let proxy = start_proxy(upstream.addr, EMPTY).await;
    let mut client = TcpStream::connect(proxy.addr).await.unwrap();
    // Longer than the relay's 8 KiB buffer, within the 64 KiB bound.
    let long = format!(
        "GET / HTTP/1.1\r\nhost: t\r\nx-long: {}\r\n\r\n",
        "a".repeat(40 * 1024)
    );
    roundtrip(&mut client, long.as_bytes(), OK).await;
    assert_eq!(upstream.received(), long.as_bytes());
    assert_eq!(proxy.metric(RELAYED).await, 1.0);
    let huge = format!(
        "GET / HTTP/1.1\r\nhost: t\r\nx-huge: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let (out, _) = raw_exchange(proxy.addr, huge.as_bytes(), Duration::from_secs(5)).await;
    assert!(
        out.starts_with(b"HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!(upstream.received(), long.as_bytes());
}

#[tokio::test]
async fn bytes_an_upstream_sends_past_its_response_never_reach_anyone() {
    let upstream = Scripted::start(|_| {
        let mut reply = OK.to_vec();
        reply.extend_from_slice(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nstray");
        Reply::Bytes(reply)
    })
    .await;
    let proxy = start_proxy_with(upstream.addr, EMPTY, &[("FAULTLINE_WORKERS", "1")]).await;
    let mut client = TcpStream::connect(proxy.addr).await.unwrap();
    let request = b"GET / HTTP/1.1\r\nhost: t\r\n\r\n";
    roundtrip(&mut client, request, OK).await;
    roundtrip(&mut client, request, OK).await;
    // The connection that sent more than it was asked for is not reused.
    assert_eq!(upstream.accepted(), 2);
    // Nothing but the answers reached the client.
    let mut more = [0u8; 1];
    let extra = tokio::time::timeout(Duration::from_millis(300), client.read(&mut more)).await;
    assert!(extra.is_err(), "the client got more: {extra:?} {more:?}");
}

/// A read that fills the buffer leaves the socket looking readable with
/// nothing to read: a waiting connection must still park (and hold no
/// buffer), whatever the length of the request before.
#[tokio::test]
async fn connections_park_after_requests_of_any_length() {
    let upstream = Scripted::start(ok_script).await;
    let proxy = start_proxy(upstream.addr, EMPTY).await;
    let mut clients = Vec::new();
    let lengths: Vec<usize> = [1024, 4096, 8192, 16384]
        .iter()
        .flat_map(|&around| around - 40..around + 8)
        .collect();
    for &length in &lengths {
        let mut client = TcpStream::connect(proxy.addr).await.unwrap();
        for _ in 0..2 {
            let bare = "GET / HTTP/1.1\r\nhost: t\r\nx-pad: \r\n\r\n".len();
            let request = format!(
                "GET / HTTP/1.1\r\nhost: t\r\nx-pad: {}\r\n\r\n",
                "p".repeat(length - bare)
            );
            assert_eq!(request.len(), length);
            roundtrip(&mut client, request.as_bytes(), OK).await;
        }
        clients.push(client);
    }
    eventually(
        "every connection parked",
        Duration::from_secs(10),
        || async { proxy.metric(PARKED).await == lengths.len() as f64 },
    )
    .await;
}
