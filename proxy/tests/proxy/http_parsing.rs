//! Hostile HTTP/1.1 input, sent as raw bytes through the proxy to an
//! upstream that records what reached it.
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::*;

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

pub struct Recorder {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Recorder {
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// An HTTP/1.1 upstream that records each request (body read whole) and
/// answers 200 `method target`; like a forward proxy, it answers CONNECT
/// with 200 and then echoes the tunnelled bytes.
pub async fn recorder() -> Recorder {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                    let log = log.clone();
                    async move {
                        if req.method() == http::Method::CONNECT {
                            echo_after(hyper::upgrade::on(&mut req));
                        }
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await.map(|b| b.to_bytes().to_vec());
                        let reply = format!("{} {}", parts.method, parts.uri);
                        log.lock().unwrap().push(Seen {
                            method: parts.method.to_string(),
                            target: parts.uri.to_string(),
                            headers: parts
                                .headers
                                .iter()
                                .map(|(k, v)| {
                                    (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into())
                                })
                                .collect(),
                            body: body.unwrap_or_else(|e| format!("body error: {e}").into()),
                        });
                        Ok::<_, Infallible>(Response::new(full(reply)))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Recorder { addr, seen }
}

fn echo_after(upgrade: hyper::upgrade::OnUpgrade) {
    tokio::spawn(async move {
        if let Ok(upgraded) = upgrade.await {
            let (mut read, mut write) = tokio::io::split(TokioIo::new(upgraded));
            let _ = tokio::io::copy(&mut read, &mut write).await;
        }
    });
}

/// Sends one request on a new connection; returns everything the proxy
/// wrote back before closing.
async fn send(proxy: &TestProxy, request: &[u8]) -> String {
    let (bytes, _) = raw_exchange(proxy.addr, request, Duration::from_secs(3)).await;
    String::from_utf8_lossy(&bytes).into_owned()
}

fn status(response: &str) -> &str {
    response.lines().next().unwrap_or_default()
}

async fn bad_requests(proxy: &TestProxy) -> f64 {
    proxy
        .metric("faultline_bad_requests_total{direction=\"inbound\"}")
        .await
}

#[tokio::test]
async fn extension_methods_are_http_on_a_keep_alive_connection() {
    let upstream = recorder().await;
    let proxy = start_proxy(
        upstream.addr,
        "rules:\n- match: {methods: [PURGE], path: /cache/*}\n  respond: {body: purged}\n\
         - match: {path: /faulted}\n  abort: {status: 503}\n",
    )
    .await;
    let mut client = h1_client(proxy.addr).await;
    let mut call = async |method: &[u8], path: &str| {
        let request = Request::builder()
            .method(http::Method::from_bytes(method).unwrap())
            .uri(path)
            .header("host", "app.example")
            .body(full(""))
            .unwrap();
        let response = client.send_request(request).await.unwrap();
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    };
    // The first request decides the connection's protocol.
    assert_eq!(call(b"PURGE", "/cache/a").await, (200, "purged".into()));
    assert_eq!(call(b"PURGE", "/other").await, (200, "PURGE /other".into()));
    assert_eq!(call(b"GET", "/faulted").await.0, 503);
    assert_eq!(call(b"GET", "/plain").await, (200, "GET /plain".into()));
    let methods: Vec<String> = upstream.seen().into_iter().map(|s| s.method).collect();
    assert_eq!(methods, ["PURGE", "GET"]);
    let metrics = proxy.metrics().await;
    let connections = |protocol: &str| {
        metrics::value(
            &metrics,
            &format!(
                "faultline_connections_total{{direction=\"inbound\",protocol=\"{protocol}\"}}"
            ),
        )
    };
    assert_eq!((connections("http1"), connections("tcp")), (1.0, 0.0));
}

#[tokio::test]
async fn a_malformed_chunked_body_is_the_clients_fault() {
    let upstream = recorder().await;
    let proxy = start_proxy(upstream.addr, "rules: []\n").await;
    let huge_extension = format!("3;{}\r\nabc\r\n0\r\n\r\n", "x".repeat(20_000));
    let bodies: [&[u8]; 4] = [
        b"zz\r\nhello\r\n0\r\n\r\n",
        b"ffffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        b"3\r\nabcX\r\n0\r\n\r\n",
        huge_extension.as_bytes(),
    ];
    for body in bodies {
        let mut request =
            b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        request.extend_from_slice(body);
        let response = send(&proxy, &request).await;
        assert!(status(&response).starts_with("HTTP/1.1 400"), "{response}");
        assert!(
            response.contains("failed to read the request body from the client"),
            "{response}"
        );
    }
    eventually(
        "the bad bodies to be counted",
        Duration::from_secs(5),
        || async { bad_requests(&proxy).await == 4.0 },
    )
    .await;
    let upstream_errors = proxy
        .metric("faultline_upstream_connect_errors_total{direction=\"inbound\"}")
        .await;
    assert_eq!(upstream_errors, 0.0);
}

#[tokio::test]
async fn an_http2_host_must_agree_with_the_authority() {
    let upstream = http_upstream().await;
    // A rule that reaches the connection (and never fires): the proxy reads
    // its requests. With none, the HTTP/2 relay carries them as they are,
    // to an upstream connection of that client's own (`h2relay.rs`).
    let proxy = start_proxy(
        upstream.addr,
        "rules: [{percent: 0, abort: {status: 503}}]\n",
    )
    .await;
    let mut client = h2_client(proxy.addr).await;
    let request = |host: &str| {
        Request::get("http://a.example/hello")
            .header("host", host)
            .body(full(""))
            .unwrap()
    };
    let response = client.send_request(request("b.example")).await.unwrap();
    assert_eq!(response.status(), 400);
    let response = client.send_request(request("a.example")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(upstream.hits(), 1);
}

#[tokio::test]
async fn connection_options_cannot_remove_host_or_content_type() {
    let upstream = recorder().await;
    let proxy = start_proxy(upstream.addr, "rules: []\n").await;
    let response = send(
        &proxy,
        b"POST /h HTTP/1.1\r\nHost: app.example\r\nContent-Type: text/plain\r\n\
          Content-Length: 3\r\nX-Hop: 1\r\nTE: trailers\r\n\
          Connection: Host, Content-Type, Content-Length, TE, X-Hop, close\r\n\r\nabc",
    )
    .await;
    assert!(status(&response).starts_with("HTTP/1.1 200"), "{response}");
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("host"), ["app.example"]);
    assert_eq!(seen[0].header("content-type"), ["text/plain"]);
    assert_eq!(seen[0].header("te"), ["trailers"]);
    assert!(seen[0].header("x-hop").is_empty());
    assert!(seen[0].header("connection").is_empty());
    assert_eq!(seen[0].body, b"abc");
}

#[tokio::test]
async fn ambiguous_heads_are_refused_before_the_upstream() {
    let upstream = recorder().await;
    let proxy = start_proxy(upstream.addr, "rules: []\n").await;
    let cases: [(&[u8], &str); 4] = [
        (
            b"GET /h HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
            "HTTP/1.1 400",
        ),
        (b"GET /h HTTP/1.1\r\nHost: a b\r\n\r\n", "HTTP/1.1 400"),
        (
            b"GET /h HTTP/1.1\r\nHost: user@a.example\r\n\r\n",
            "HTTP/1.1 400",
        ),
        (
            b"POST /h HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
              3\r\nabc\r\n0\r\n\r\n",
            "HTTP/1.1 501",
        ),
    ];
    for (request, expected) in cases {
        let response = send(&proxy, request).await;
        assert!(status(&response).starts_with(expected), "{response}");
        assert!(
            response.contains("faultline: failed to accept"),
            "{response}"
        );
    }
    assert!(upstream.seen().is_empty(), "{:?}", upstream.seen());
    assert_eq!(bad_requests(&proxy).await, 4.0);
}

#[tokio::test]
async fn length_with_chunked_follows_the_coding_and_closes() {
    let upstream = recorder().await;
    let proxy = start_proxy(upstream.addr, "rules: []\n").await;
    // Keep-alive asked for, and a second request smuggled behind a length
    // that disagrees with the chunks.
    let (bytes, ended) = raw_exchange(
        proxy.addr,
        b"POST /h HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\
          Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
          GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    let response = String::from_utf8_lossy(&bytes);
    assert!(status(&response).starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        ended.is_ok(),
        "the proxy kept the connection open: {ended:?}"
    );
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].body, b"abc");
    assert!(seen[0].header("content-length").is_empty(), "{seen:?}");
}

#[tokio::test]
async fn malformed_heads_never_reach_the_upstream() {
    let upstream = recorder().await;
    let proxy = start_proxy(upstream.addr, "rules: []\n").await;
    let mut many = b"GET /x HTTP/1.1\r\nHost: a\r\n".to_vec();
    for i in 0..200 {
        many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    let cases: [(&[u8], &str); 7] = [
        (
            b"GET /h HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n  folded\r\n\r\n",
            "400",
        ),
        (b"GET /h HTTP/1.1\r\nHost : a\r\n\r\n", "400"),
        (b"GET /h HTTP/1.1\r\nHost: a\r\nX-A: a\0b\r\n\r\n", "400"),
        (
            b"POST /h HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n",
            "400",
        ),
        (
            b"POST /h HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
            "400",
        ),
        (
            b"POST /h HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\nabc",
            "400",
        ),
        (&many, "431"),
    ];
    for (request, expected) in cases {
        let response = send(&proxy, request).await;
        assert!(
            status(&response).starts_with(&format!("HTTP/1.1 {expected}")),
            "{}: {response}",
            String::from_utf8_lossy(request)
        );
    }
    assert!(upstream.seen().is_empty(), "{:?}", upstream.seen());
    eventually(
        "each bad head to be counted",
        Duration::from_secs(5),
        || async { bad_requests(&proxy).await == 7.0 },
    )
    .await;
}

#[tokio::test]
async fn an_absolute_form_target_names_the_host_for_rules_and_upstream() {
    let upstream = recorder().await;
    let proxy = start_proxy(
        upstream.addr,
        "rules:\n- match: {host: a.example}\n  abort: {status: 503}\n",
    )
    .await;
    let response = send(
        &proxy,
        b"GET http://b.example/x HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(status(&response).starts_with("HTTP/1.1 200"), "{response}");
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].target, "/x");
    assert_eq!(seen[0].header("host"), ["b.example"]);
    let response = send(
        &proxy,
        b"GET http://a.example/x HTTP/1.1\r\nHost: b.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(status(&response).starts_with("HTTP/1.1 503"), "{response}");
}

#[tokio::test]
async fn an_h2c_upgrade_is_answered_in_http1() {
    let upstream = recorder().await;
    let proxy = start_proxy(upstream.addr, "rules: []\n").await;
    let response = send(
        &proxy,
        b"GET /h HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings, close\r\n\
          Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    )
    .await;
    assert!(status(&response).starts_with("HTTP/1.1 200"), "{response}");
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1);
    for name in ["upgrade", "http2-settings", "connection"] {
        assert!(seen[0].header(name).is_empty(), "{name}: {:?}", seen[0]);
    }
}

#[tokio::test]
async fn a_respond_fault_answers_head_with_headers_only() {
    let upstream = recorder().await;
    let proxy = start_proxy(upstream.addr, "rules:\n- respond: {body: hello}\n").await;
    let response = send(
        &proxy,
        b"HEAD /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(status(&response).starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.to_ascii_lowercase().contains("content-length: 5"),
        "{response}"
    );
    assert!(response.ends_with("\r\n\r\n"), "{response:?}");
    assert!(upstream.seen().is_empty());
}

#[tokio::test]
async fn connect_goes_where_the_client_asked_and_tunnels() {
    let upstream = recorder().await;
    let proxy = start_proxy(upstream.addr, "rules: []\n").await;
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"CONNECT db.example:5432 HTTP/1.1\r\nHost: db.example:5432\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_tunnel_echoes(&mut stream, b"bytes in the tunnel").await;
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (seen[0].method.as_str(), seen[0].target.as_str()),
        ("CONNECT", "db.example:5432")
    );
}

#[tokio::test]
async fn a_redis_inline_get_is_raw_tcp() {
    // Starts like an HTTP method, but no request line follows.
    let upstream = tcp_echo(None).await;
    let proxy = start_proxy(upstream.addr, "rules: []\n").await;
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    stream.write_all(b"GET session:42\r\n").await.unwrap();
    let mut echoed = [0u8; 16];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echoed, b"GET session:42\r\n");
    let tcp = proxy
        .metric("faultline_connections_total{direction=\"inbound\",protocol=\"tcp\"}")
        .await;
    assert_eq!(tcp, 1.0);
}

/// Writes `parts` on one connection with `gap` between them, then reads
/// until the proxy closes.
async fn send_in_parts(proxy: &TestProxy, parts: &[&[u8]], gap: Duration) -> String {
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(gap).await;
        }
        stream.write_all(part).await.unwrap();
    }
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_request_line_in_pieces_is_http_while_the_client_keeps_sending() {
    let upstream = recorder().await;
    let proxy = start_proxy_with(
        upstream.addr,
        "rules:\n- match: {path: /x}\n  abort: {status: 503}\n",
        &[("FAULTLINE_DETECT_TIMEOUT_MS", "1000")],
    )
    .await;
    // Each pause is shorter than the detection timeout, all of them longer.
    let response = send_in_parts(
        &proxy,
        &[
            b"GET",
            b" /x",
            b" HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        ],
        Duration::from_millis(600),
    )
    .await;
    assert!(status(&response).starts_with("HTTP/1.1 503"), "{response}");

    // Silent for longer than the timeout mid-line: not HTTP, passed on as
    // bytes (the upstream happens to speak HTTP; no rule applied).
    let response = send_in_parts(
        &proxy,
        &[
            b"GET /x",
            b" HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        ],
        Duration::from_millis(1500),
    )
    .await;
    assert!(status(&response).starts_with("HTTP/1.1 200"), "{response}");
    let tcp = proxy
        .metric("faultline_connections_total{direction=\"inbound\",protocol=\"tcp\"}")
        .await;
    assert_eq!(tcp, 1.0);
}

#[tokio::test]
async fn empty_lines_before_the_first_request_line_are_ignored() {
    let upstream = recorder().await;
    let proxy = start_proxy(
        upstream.addr,
        "rules:\n- match: {path: /x}\n  abort: {status: 503}\n",
    )
    .await;
    let response = send(
        &proxy,
        b"\r\n\r\nGET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(status(&response).starts_with("HTTP/1.1 503"), "{response}");
}
