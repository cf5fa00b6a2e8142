//! The byte-stream faults (slicer, limitData, slowClose) and per-side
//! bandwidth, seen from a real client and a real upstream on 127.0.0.1.
//! Timing assertions are lower bounds only: a fault can make things slow,
//! a busy machine can make them slower still.
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use crate::support::*;

/// Bytes that are not HTTP: a TLS ClientHello's first bytes.
const NOT_HTTP: &[u8] = b"\x16\x03\x01\x00\x05hello";

/// What the scripted upstream saw of its one connection.
struct Seen {
    /// Bytes received until the proxy closed its side.
    bytes: usize,
    /// Reads that returned data.
    reads: usize,
    /// When the end of the stream arrived.
    eof_at: Instant,
}

/// A raw TCP upstream for one connection: reads the client's first
/// `NOT_HTTP`, answers `answer` bytes, then reads (with a small buffer)
/// until the proxy closes its side and reports what it saw.
async fn scripted_upstream(
    answer: usize,
    close_after_answer: bool,
) -> (std::net::SocketAddr, oneshot::Receiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        stream.set_nodelay(true).unwrap();
        let mut first = vec![0u8; NOT_HTTP.len()];
        stream.read_exact(&mut first).await.unwrap();
        stream.write_all(&vec![b'r'; answer]).await.unwrap();
        if close_after_answer {
            stream.shutdown().await.unwrap();
        }
        let (mut bytes, mut reads) = (first.len(), 0);
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    bytes += n;
                    reads += 1;
                }
            }
        }
        let _ = tx.send(Seen {
            bytes,
            reads,
            eof_at: Instant::now(),
        });
    });
    (addr, rx)
}

/// Reads until the end of the stream (or an error); returns the bytes,
/// the number of reads that returned data and how the stream ended.
async fn read_to_end(
    stream: &mut TcpStream,
    within: Duration,
) -> (usize, usize, std::io::Result<()>) {
    let (mut bytes, mut reads) = (0, 0);
    let mut buf = [0u8; 4096];
    let result = tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    bytes += n;
                    reads += 1;
                }
                Err(error) => return Err(error),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the stream did not end within {within:?}"));
    (bytes, reads, result)
}

#[tokio::test]
async fn slicer_delivers_small_segments_both_ways() {
    const ANSWER: usize = 2000;
    const SENT: usize = 2000;
    let (upstream, seen) = scripted_upstream(ANSWER, false).await;
    let proxy = start_proxy(
        upstream,
        "rules:\n- match: {protocol: tcp}\n  slicer: {averageSize: 100, sizeVariation: 20, delay: 50ms, side: both}\n",
    )
    .await;
    let mut client = TcpStream::connect(proxy.addr).await.unwrap();
    client.set_nodelay(true).unwrap();
    let started = Instant::now();
    client.write_all(NOT_HTTP).await.unwrap();
    let mut answer = vec![0u8; ANSWER];
    let mut reads = 0;
    let mut got = 0;
    while got < ANSWER {
        let n = client.read(&mut answer[got..]).await.unwrap();
        assert!(n > 0, "closed after {got} bytes");
        got += n;
        reads += 1;
    }
    // At most 120 bytes per chunk: at least 17 chunks, 50 ms apart.
    // Unsliced, the 2000 bytes come in one read; a reader that falls behind
    // finds several chunks at once, so only a third of them is asked for
    // (fewer would take 600 ms of the 800 without a chance to run).
    assert!(reads >= 6, "{reads} reads for {ANSWER} bytes");
    assert!(started.elapsed() >= Duration::from_millis(800));
    assert!(answer.iter().all(|b| *b == b'r'));

    client.write_all(&vec![b'q'; SENT]).await.unwrap();
    client.shutdown().await.unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(30), seen)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen.bytes, NOT_HTTP.len() + SENT);
    assert!(
        seen.reads >= 6,
        "the upstream read {SENT} bytes in {} reads",
        seen.reads
    );
    assert_eq!(proxy.metric(&injected("rules[0]", "slicer")).await, 1.0);
}

#[tokio::test]
async fn limit_data_on_responses_closes_after_exactly_n_bytes() {
    const SENT: usize = 3000;
    let (upstream, seen) = scripted_upstream(5000, false).await;
    let proxy = start_proxy(upstream, "rules:\n- limitData: {bytes: 1000}\n").await;
    let mut client = TcpStream::connect(proxy.addr).await.unwrap();
    // The request side is not limited: all of it reaches the upstream
    // (before it answers, so the connection is still open).
    client.write_all(NOT_HTTP).await.unwrap();
    let (bytes, _, end) = read_to_end(&mut client, Duration::from_secs(10)).await;
    assert_eq!(bytes, 1000);
    assert!(end.is_ok(), "an orderly close, not {end:?}");
    let seen = tokio::time::timeout(Duration::from_secs(10), seen)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen.bytes, NOT_HTTP.len());
    assert_eq!(proxy.metric(&injected("rules[0]", "limitData")).await, 1.0);

    // And the other way round: the response side passes whole while the
    // request side is cut.
    let (upstream, seen) = scripted_upstream(SENT, false).await;
    let proxy = start_proxy(
        upstream,
        "rules:\n- limitData: {bytes: 1000, side: request}\n",
    )
    .await;
    let mut client = TcpStream::connect(proxy.addr).await.unwrap();
    client.write_all(NOT_HTTP).await.unwrap();
    let mut answer = vec![0u8; SENT];
    tokio::time::timeout(Duration::from_secs(10), client.read_exact(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let _ = client.write_all(&[b'q'; 5000]).await;
    let seen = tokio::time::timeout(Duration::from_secs(10), seen)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen.bytes, 1000);
    // The proxy closed the client's connection too: its stream ends (with
    // a reset, as the client sent more than was read).
    let _ended = read_to_end(&mut client, Duration::from_secs(10)).await;
}

#[tokio::test]
async fn slow_close_holds_the_upstreams_close() {
    let (upstream, _seen) = scripted_upstream(3, true).await;
    let proxy = start_proxy(upstream, "rules:\n- slowClose: {delay: 600ms}\n").await;
    let mut client = TcpStream::connect(proxy.addr).await.unwrap();
    let started = Instant::now();
    client.write_all(NOT_HTTP).await.unwrap();
    let (bytes, _, end) = read_to_end(&mut client, Duration::from_secs(10)).await;
    assert_eq!(bytes, 3);
    assert!(end.is_ok(), "{end:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(proxy.metric(&injected("rules[0]", "slowClose")).await, 1.0);
}

#[tokio::test]
async fn slow_close_on_the_request_side_holds_the_clients_close() {
    let (upstream, seen) = scripted_upstream(3, false).await;
    let proxy = start_proxy(
        upstream,
        "rules:\n- slowClose: {delay: 600ms, side: request}\n",
    )
    .await;
    let mut client = TcpStream::connect(proxy.addr).await.unwrap();
    client.write_all(NOT_HTTP).await.unwrap();
    let mut answer = [0u8; 3];
    client.read_exact(&mut answer).await.unwrap();
    let closed_at = Instant::now();
    client.shutdown().await.unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(10), seen)
        .await
        .unwrap()
        .unwrap();
    let held = seen.eof_at.duration_since(closed_at);
    assert!(held >= Duration::from_millis(600), "held {held:?}");
}

/// Sends `up` bytes and receives `down` through a proxy with `rule`; the
/// times each took (the upload from the client's first write to the
/// upstream's end of stream).
async fn transfer(rule: &str, up: usize, down: usize) -> (Duration, Duration) {
    let (upstream, seen) = scripted_upstream(down, false).await;
    let proxy = start_proxy(upstream, &format!("rules:\n- {rule}\n")).await;
    let mut client = TcpStream::connect(proxy.addr).await.unwrap();
    let started = Instant::now();
    client.write_all(NOT_HTTP).await.unwrap();
    let mut answer = vec![0u8; down];
    // Generous: what a limited side would need is far longer.
    tokio::time::timeout(Duration::from_secs(30), client.read_exact(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let downloaded = started.elapsed();
    let started = Instant::now();
    client.write_all(&vec![b'q'; up]).await.unwrap();
    client.shutdown().await.unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(30), seen)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen.bytes, NOT_HTTP.len() + up);
    (seen.eof_at.duration_since(started), downloaded)
}

#[tokio::test]
async fn bandwidth_per_side_slows_only_that_side() {
    // 1000 B/s: 3000 bytes need at least ~2 s after the bucket's first
    // 1000; 200 KB would need 200 s, far over the 30 s the other side gets.
    let (upload, _) = transfer("bandwidth: {request: 1KB/s}", 3000, 200_000).await;
    assert!(
        upload >= Duration::from_millis(1500),
        "upload took {upload:?}"
    );
    let (_, download) = transfer("bandwidth: {response: 1KB/s}", 200_000, 3000).await;
    assert!(
        download >= Duration::from_millis(1500),
        "download took {download:?}"
    );
}

#[tokio::test]
async fn limit_data_truncates_http_responses() {
    let upstream = http_upstream().await;
    let proxy = start_proxy(
        upstream.addr,
        "rules:\n- match: {path: /bytes/*}\n  limitData: {bytes: 1000}\n",
    )
    .await;
    // A response shorter than the limit passes whole.
    let mut client = TcpStream::connect(proxy.addr).await.unwrap();
    let head = exchange_head(&mut client, "GET /bytes/500 HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert!(head.contains("content-length: 500"), "{head}");
    let mut body = vec![0u8; 500];
    client.read_exact(&mut body).await.unwrap();

    // A longer one: its head, then exactly 1000 bytes, then the close.
    let mut client = TcpStream::connect(proxy.addr).await.unwrap();
    let head = exchange_head(&mut client, "GET /bytes/5000 HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("content-length: 5000"), "{head}");
    let (bytes, _, end) = read_to_end(&mut client, Duration::from_secs(10)).await;
    assert_eq!(bytes, 1000);
    assert!(end.is_ok(), "an orderly close, not {end:?}");
    assert_eq!(proxy.metric(&injected("rules[0]", "limitData")).await, 2.0);

    // HTTP/2: the client sees the body end early.
    let mut h2 = h2_client(proxy.addr).await;
    let response = h2.send_request(get("/bytes/100000")).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = http_body_util::BodyExt::collect(response.into_body()).await;
    assert!(body.is_err(), "a truncated body is an error");
}

#[tokio::test]
async fn http_bandwidth_per_side_paces_only_that_sides_bodies() {
    let upstream = http_upstream().await;
    let proxy = start_proxy(upstream.addr, "rules:\n- bandwidth: {request: 1KB/s}\n").await;
    let client = reqwest::Client::new();
    // 300 KB of response at 1 KB/s would take 300 s: the response side
    // is not limited.
    let body = tokio::time::timeout(
        Duration::from_secs(30),
        client.get(proxy.url("/bytes/300000")).send(),
    )
    .await
    .unwrap()
    .unwrap()
    .bytes()
    .await
    .unwrap();
    assert_eq!(body.len(), 300_000);
    // 3000 bytes of request body: at least ~2 s after the bucket's first
    // 1000 (the echo comes back unthrottled).
    let started = Instant::now();
    let echoed = client
        .post(proxy.url("/echo"))
        .body(vec![b'u'; 3000])
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(echoed.len(), 3000);
    let upload = started.elapsed();
    assert!(
        upload >= Duration::from_millis(1500),
        "upload took {upload:?}"
    );

    proxy
        .set_policy("rules:\n- bandwidth: {response: 1KB/s}\n")
        .await;
    let started = Instant::now();
    let body = reqwest::get(proxy.url("/bytes/3000"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(body.len(), 3000);
    let download = started.elapsed();
    assert!(
        download >= Duration::from_millis(1500),
        "download took {download:?}"
    );
}

#[tokio::test]
async fn raw_tcp_only_faults_pass_over_http_requests() {
    let upstream = http_upstream().await;
    let proxy = start_proxy(
        upstream.addr,
        "rules:\n- slicer: {averageSize: 1, delay: 1s}\n- slowClose: {delay: 10m}\n- match: {path: /hello}\n  abort: {status: 418}\n",
    )
    .await;
    // Sliced into 1-byte chunks a second apart, this would take minutes.
    let response = tokio::time::timeout(
        Duration::from_secs(10),
        reqwest::get(proxy.url("/bytes/2000")),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(response.bytes().await.unwrap().len(), 2000);
    // Later rules still apply to HTTP requests.
    assert_eq!(
        reqwest::get(proxy.url("/hello")).await.unwrap().status(),
        418
    );
    assert_eq!(proxy.metric(&injected("rules[0]", "slicer")).await, 0.0);
}

#[tokio::test]
async fn limit_data_cuts_a_peer_that_sends_exactly_n_bytes_and_waits() {
    // The upstream answers exactly the limit and keeps its connection open.
    let (upstream, _seen) = scripted_upstream(1000, false).await;
    let proxy = start_proxy(upstream, "rules:\n- limitData: {bytes: 1000}\n").await;
    let mut client = TcpStream::connect(proxy.addr).await.unwrap();
    client.write_all(NOT_HTTP).await.unwrap();
    let (bytes, _, end) = read_to_end(&mut client, Duration::from_secs(10)).await;
    assert_eq!(bytes, 1000);
    assert!(end.is_ok(), "{end:?}");

    // The client sends exactly the limit and waits.
    let limit = NOT_HTTP.len() + 100;
    let (upstream, seen) = scripted_upstream(3, false).await;
    let proxy = start_proxy(
        upstream,
        &format!("rules:\n- limitData: {{bytes: {limit}, side: request}}\n"),
    )
    .await;
    let mut client = TcpStream::connect(proxy.addr).await.unwrap();
    client.write_all(NOT_HTTP).await.unwrap();
    let mut answer = [0u8; 3];
    client.read_exact(&mut answer).await.unwrap();
    client.write_all(&[b'q'; 100]).await.unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(10), seen)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen.bytes, limit);
    let (_, _, end) = read_to_end(&mut client, Duration::from_secs(10)).await;
    assert!(end.is_ok(), "{end:?}");
}
