//! Real things to test the proxy against: a hyper upstream (HTTP/1.1 and
//! h2c, with gRPC framing and trailers and a WebSocket-style upgrade), a
//! raw TCP echo server, and the proxy itself, in-process in standalone mode
//! on 127.0.0.1:0. Readiness is polled with deadlines, never slept for.
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use faultline_proxy::PolicyStore;
use faultline_proxy::{Config, Proxy};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

pub type Body = BoxBody<Bytes, Infallible>;

/// Inbound client connections the proxy holds.
pub const ACTIVE: &str = "faultline_connections_active{direction=\"inbound\"}";
/// Of those, idle keep-alive connections holding no buffers.
pub const PARKED: &str = "faultline_connections_parked{direction=\"inbound\"}";

pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

pub use faultline_test_support::eventually;
pub use faultline_test_support::metrics;

/// A hyper upstream serving HTTP/1.1 and h2c on one port.
pub struct Upstream {
    pub addr: SocketAddr,
    /// Requests that reached the upstream.
    pub hits: Arc<AtomicUsize>,
}

impl Upstream {
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

pub async fn http_upstream() -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let counter = counter.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    route(req)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Upstream { addr, hits }
}

async fn route(mut req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let response = match path.as_str() {
        "/hello" => Response::new(full("hello")),
        // Streams the request body back as it arrives.
        "/echo" => {
            let body = req
                .into_body()
                .map_err(|_| unreachable_infallible())
                .boxed();
            Response::new(body)
        }
        "/headers" => {
            let mut text = String::new();
            for (k, v) in req.headers() {
                text.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("?")));
            }
            Response::new(full(text))
        }
        "/ws" => {
            // A minimal upgrade: 101, then echo bytes on the raw connection.
            let on_upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(upgraded) = on_upgrade.await {
                    let mut io = TokioIo::new(upgraded);
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = io.read(&mut buf).await {
                        if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            });
            Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header("connection", "upgrade")
                .header("upgrade", "websocket")
                .body(full(""))
                .unwrap()
        }
        "/test.Echo/Unary" => grpc_response(
            req.into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default(),
            1,
        ),
        "/test.Echo/Stream" => grpc_response(Bytes::from_static(b"\x00\x00\x00\x00\x03abc"), 5),
        _ if path.starts_with("/bytes/") => {
            let n: usize = path["/bytes/".len()..].parse().unwrap_or(0);
            Response::new(full(vec![b'x'; n]))
        }
        _ if path.starts_with("/sleep/") => {
            let ms: u64 = path["/sleep/".len()..].parse().unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Response::new(full("slept"))
        }
        _ => Response::builder()
            .status(404)
            .body(full("no such route"))
            .unwrap(),
    };
    Ok(response)
}

fn unreachable_infallible() -> Infallible {
    panic!("the test upstream's echo body failed")
}

/// A gRPC response: `copies` copies of the (already framed) message, then
/// trailers with grpc-status 0.
fn grpc_response(message: Bytes, copies: usize) -> Response<Body> {
    let mut frames: Vec<Result<Frame<Bytes>, Infallible>> = (0..copies)
        .map(|_| Ok(Frame::data(message.clone())))
        .collect();
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", "0".parse().unwrap());
    trailers.insert("grpc-message", "fine".parse().unwrap());
    frames.push(Ok(Frame::trailers(trailers)));
    Response::builder()
        .header("content-type", "application/grpc")
        .body(StreamBody::new(futures::stream::iter(frames)).boxed())
        .unwrap()
}

/// A request body of `chunks` chunks of 64 KiB, chunk `i` filled with the
/// byte `i`, streamed as the proxy reads it (for `/echo`).
pub fn streamed_body(chunks: u8) -> reqwest::Body {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..chunks).map(|i| Ok(vec![i; 64 * 1024])).collect();
    reqwest::Body::wrap_stream(futures::stream::iter(chunks))
}

/// A TCP echo server; with `greeting`, it speaks first (like NATS/MySQL).
pub async fn tcp_echo(greeting: Option<&'static [u8]>) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if let Some(greeting) = greeting {
                    let _ = stream.write_all(greeting).await;
                }
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    Upstream { addr, hits }
}

/// The proxy in standalone mode, in-process.
pub struct TestProxy {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    /// The DNS listener, where `FAULTLINE_DNS_ADDR` asked for one.
    pub dns: Option<SocketAddr>,
    pub faults: PathBuf,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<Result<(), faultline_proxy::RunError>>,
    _dir: tempfile::TempDir,
}

impl TestProxy {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        let response = reqwest::get(format!("http://{}{path}", self.admin))
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    pub async fn metrics(&self) -> String {
        self.admin_get("/metrics").await.1
    }

    /// The value of one metric series (0 when absent).
    pub async fn metric(&self, series: &str) -> f64 {
        metrics::value(&self.metrics().await, series)
    }

    /// GETs `/headers` through the proxy with `headers`: the request
    /// headers the upstream saw, one `name: value` a line.
    pub async fn headers_seen(&self, client: &reqwest::Client, headers: &[(&str, &str)]) -> String {
        let mut request = client.get(self.url("/headers"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.unwrap().text().await.unwrap()
    }

    /// Replaces the policy file and waits until the proxy applied it.
    pub async fn set_policy(&self, policy: &str) {
        std::fs::write(&self.faults, policy).unwrap();
        let version = faultline_proxy::source::file::version_of(policy);
        eventually(
            "the new policy to be applied",
            Duration::from_secs(5),
            || async { self.admin_get("/policy").await.1.contains(&version) },
        )
        .await;
    }
}

/// The `faultline_faults_injected_total` series of rule `rule` and fault `kind`.
pub fn injected(rule: &str, kind: &str) -> String {
    format!("faultline_faults_injected_total{{rule=\"{rule}\",kind=\"{kind}\"}}")
}

pub async fn start_proxy(upstream: SocketAddr, policy: &str) -> TestProxy {
    start_proxy_with(upstream, policy, &[]).await
}

pub async fn start_proxy_with(
    upstream: SocketAddr,
    policy: &str,
    extra: &[(&str, &str)],
) -> TestProxy {
    let (config, faults, dir) = proxy_config(upstream, policy, extra);
    start_proxy_config(config, faults, dir).await
}

/// The standalone proxy's config from `FAULTLINE_*` variables, with
/// `policy` in a file of a new temporary directory.
pub fn proxy_config(
    upstream: SocketAddr,
    policy: &str,
    extra: &[(&str, &str)],
) -> (Config, PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let faults = dir.path().join("faults.yaml");
    std::fs::write(&faults, policy).unwrap();
    let mut env = vec![
        ("FAULTLINE_LISTEN".to_owned(), "127.0.0.1:0".to_owned()),
        ("FAULTLINE_UPSTREAM".to_owned(), upstream.to_string()),
        ("FAULTLINE_ADMIN_ADDR".to_owned(), "127.0.0.1:0".to_owned()),
        (
            "FAULTLINE_FAULTS_FILE".to_owned(),
            faults.display().to_string(),
        ),
        ("FAULTLINE_DRAIN_SECONDS".to_owned(), "2".to_owned()),
    ];
    env.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    (Config::from_env(env).unwrap(), faults, dir)
}

/// Starts the proxy with a config built by the test; `faults` is its policy
/// file in `dir`.
pub async fn start_proxy_config(
    config: Config,
    faults: PathBuf,
    dir: tempfile::TempDir,
) -> TestProxy {
    let proxy = Proxy::bind(config).await.unwrap();
    let dns = proxy.dns_addr();
    let addr = proxy.listen_addrs()[0].1;
    let admin = proxy.admin_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(proxy.run(PolicyStore::new(), shutdown.clone()));
    let test_proxy = TestProxy {
        addr,
        admin,
        dns,
        faults,
        shutdown,
        task,
        _dir: dir,
    };
    eventually("the proxy to be ready", Duration::from_secs(5), || async {
        reqwest::get(format!("http://{admin}/readyz"))
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    test_proxy
}

/// Sends raw bytes on a new connection and reads until the peer closes or
/// `within` passes; returns what was read and how the read ended.
pub async fn raw_exchange(
    addr: SocketAddr,
    request: &[u8],
    within: Duration,
) -> (Vec<u8>, std::io::Result<()>) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let result = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => return Err(e),
            }
        }
    })
    .await
    .unwrap_or_else(|_| {
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "read timed out",
        ))
    });
    (out, result)
}

/// An HTTP/2 (prior knowledge) client connection to `addr`.
pub async fn h2_client(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<Body> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}

/// A single HTTP/1.1 keep-alive connection (to prove a connection survives).
pub async fn h1_client(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Body> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

pub fn get(uri: &str) -> Request<Body> {
    Request::get(uri)
        .header("host", "test")
        .body(full(""))
        .unwrap()
}

/// Reads a response head byte by byte, so nothing after it is consumed
/// (the bytes that follow belong to a tunnel).
pub async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

/// Writes `request` on `stream` and reads the response head (within 5 s).
pub async fn exchange_head(stream: &mut TcpStream, request: &str) -> String {
    stream.write_all(request.as_bytes()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), read_head(stream))
        .await
        .unwrap()
}

/// Sends `payload` into an established tunnel and expects it echoed back.
pub async fn assert_tunnel_echoes(stream: &mut TcpStream, payload: &[u8]) {
    stream.write_all(payload).await.unwrap();
    let mut echoed = vec![0u8; payload.len()];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(echoed, payload);
}
