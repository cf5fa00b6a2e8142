//! The stream client against a real TLS server on 127.0.0.1:0 that the test
//! drives line by line (the controller side is tested with the real client in
//! the webhook crate and against a real API server in `tests/`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::source::store::{PolicySource, PolicyStore};
use faultline_test_support::eventually;

const SLOW: &str =
    r#"{"rules":[{"name":"slow","match":{"direction":"inbound"},"delay":{"fixed":"200ms"}}]}"#;
const FAST: &str =
    r#"{"rules":[{"name":"fast","match":{"direction":"inbound"},"delay":{"fixed":"1ms"}}]}"#;
const INVALID: &str =
    r#"{"rules":[{"name":"bad","match":{"direction":"inbound"},"abort":{"status":700}}]}"#;

/// One stream request as the server saw it; `lines` feeds its body.
struct Conn {
    refused: bool,
    auth: String,
    uri: String,
    lines: mpsc::UnboundedSender<Vec<u8>>,
}

impl Conn {
    fn policy(&self, version: &str, policy: Option<&str>) {
        let policy = policy.map_or("null".to_string(), str::to_string);
        let line = format!(
            "{{\"type\":\"policy\",\"version\":\"{version}\",\"policy\":{policy},\"peers\":{{}}}}\n"
        );
        let _ = self.lines.send(line.into_bytes());
    }
}

struct Server {
    addr: SocketAddr,
    ca_pem: String,
    conns: mpsc::UnboundedReceiver<Conn>,
    refuse: Arc<std::sync::Mutex<Option<StatusCode>>>,
    /// `Retry-After` seconds sent with refusals.
    retry_after: Arc<std::sync::Mutex<Option<u64>>>,
    tls_failures: Arc<AtomicUsize>,
}

async fn server() -> Server {
    let (ca_pem, tls) = faultline_test_support::tls::localhost_server_config();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (conn_tx, conns) = mpsc::unbounded_channel();
    let refuse: Arc<std::sync::Mutex<Option<StatusCode>>> = Arc::default();
    let retry_after: Arc<std::sync::Mutex<Option<u64>>> = Arc::default();
    let tls_failures = Arc::new(AtomicUsize::new(0));
    let (refuse2, failures2, retry2) = (refuse.clone(), tls_failures.clone(), retry_after.clone());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, conn_tx, refuse, failures, retry) = (
                acceptor.clone(),
                conn_tx.clone(),
                refuse2.clone(),
                failures2.clone(),
                retry2.clone(),
            );
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    failures.fetch_add(1, Ordering::SeqCst);
                    return;
                };
                let service =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (conn_tx, refuse, retry) =
                            (conn_tx.clone(), refuse.clone(), retry.clone());
                        async move {
                            let (lines, rx) = mpsc::unbounded_channel::<Vec<u8>>();
                            let auth = req
                                .headers()
                                .get("authorization")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_string();
                            let status = refuse.lock().unwrap().unwrap_or(StatusCode::OK);
                            let refused = status != StatusCode::OK;
                            let _ = conn_tx.send(Conn {
                                refused,
                                auth,
                                uri: req.uri().to_string(),
                                lines,
                            });
                            let body =
                                StreamBody::new(futures::stream::unfold(rx, |mut rx| async move {
                                    rx.recv().await.map(|l| {
                                        (Ok::<_, Infallible>(Frame::data(Bytes::from(l))), rx)
                                    })
                                }));
                            let mut response = Response::builder().status(status);
                            if let Some(secs) = *retry.lock().unwrap() {
                                response = response.header("retry-after", secs.to_string());
                            }
                            Ok::<_, Infallible>(response.body(body.boxed()).unwrap())
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    Server {
        addr,
        ca_pem,
        conns,
        refuse,
        retry_after,
        tls_failures,
    }
}

struct Client {
    store: PolicyStore,
    token: tempfile::NamedTempFile,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), ClientError>>,
}

impl Client {
    /// Waits until the client applied `version`.
    async fn until_version(&self, version: &str) {
        eventually(version, Duration::from_secs(10), async || {
            self.store.current().version == version
        })
        .await;
    }
}

fn config(server: &Server, token: &std::path::Path) -> ClientConfig {
    ClientConfig {
        url: format!("https://localhost:{}", server.addr.port()),
        ca_pem: server.ca_pem.clone().into_bytes(),
        token_file: token.to_path_buf(),
        pod: Some(("shop".into(), "checkout-1".into())),
        heartbeat_timeout: Duration::from_secs(30),
        backoff_base: Duration::from_millis(20),
        backoff_max: Duration::from_millis(100),
    }
}

fn start(config_fn: impl FnOnce(&std::path::Path) -> ClientConfig) -> Client {
    let token = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token.path(), "token-1\n").unwrap();
    let store = PolicyStore::new();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(run(
        config_fn(token.path()),
        store.clone(),
        shutdown.clone(),
    ));
    Client {
        store,
        token,
        shutdown,
        task,
    }
}

async fn next_conn(server: &mut Server) -> Conn {
    tokio::time::timeout(Duration::from_secs(10), server.conns.recv())
        .await
        .expect("no connection")
        .unwrap()
}

#[tokio::test]
async fn applies_each_version_presents_the_token_and_reports_connected() {
    let mut server = server().await;
    let client = start(|t| config(&server, t));
    let conn = next_conn(&mut server).await;
    assert_eq!(conn.auth, "Bearer token-1");
    assert_eq!(conn.uri, "/v1/policy/stream?namespace=shop&pod=checkout-1");
    assert!(!client.store.connected());
    conn.policy("v1", Some(SLOW));
    client.until_version("v1").await;
    assert!(client.store.connected());
    assert!(client.store.current().policy.is_some());
    assert!(matches!(
        client.store.current().source,
        PolicySource::Controller { .. }
    ));
    let _ = conn.lines.send(b"{\"type\":\"heartbeat\"}\n".to_vec());
    conn.policy("none", None);
    client.until_version("none").await;
    assert!(client.store.current().policy.is_none());
    client.shutdown.cancel();
    client.task.await.unwrap().unwrap();
    assert!(!client.store.connected());
}

#[tokio::test]
async fn finish_ends_the_proxy_like_sigterm_and_keeps_the_policy_until_then() {
    let mut server = server().await;
    let client = start(|t| config(&server, t));
    let conn = next_conn(&mut server).await;
    conn.policy("v1", Some(SLOW));
    client.until_version("v1").await;
    assert!(!client.shutdown.is_cancelled());
    let _ = conn.lines.send(b"{\"type\":\"finish\"}\n".to_vec());
    eventually("shutdown", Duration::from_secs(10), async || {
        client.shutdown.is_cancelled()
    })
    .await;
    client.task.await.unwrap().unwrap();
    assert_eq!(client.store.current().version, "v1");
}

#[tokio::test]
async fn new_peers_under_the_same_version_are_applied() {
    let mut server = server().await;
    let client = start(|t| config(&server, t));
    let conn = next_conn(&mut server).await;
    let line = |ip: &str| {
        format!(
            "{{\"type\":\"policy\",\"version\":\"v1\",\"policy\":{SLOW},\"peers\":{{\"app=nats\":[\"{ip}\"]}}}}\n"
        )
        .into_bytes()
    };
    let _ = conn.lines.send(line("10.0.0.1"));
    client.until_version("v1").await;
    let _ = conn.lines.send(line("10.0.0.2"));
    eventually("the new peer", Duration::from_secs(10), async || {
        client.store.current().peers.get("app=nats") == Some(&vec!["10.0.0.2".parse().unwrap()])
    })
    .await;
    assert_eq!(client.store.current().version, "v1");
}

#[tokio::test]
async fn an_invalid_policy_never_replaces_the_last_good_one() {
    let mut server = server().await;
    let client = start(|t| config(&server, t));
    let conn = next_conn(&mut server).await;
    conn.policy("v1", Some(SLOW));
    client.until_version("v1").await;
    conn.policy("v2", Some(INVALID));
    let _ = conn.lines.send(b"this is not json\n".to_vec());
    conn.policy("v3", Some(FAST));
    client.until_version("v3").await;
    // v2 was skipped, not applied then replaced: the stream stayed up throughout.
    assert!(server.conns.try_recv().is_err(), "the client reconnected");
    let policy = client.store.current().policy.clone().unwrap();
    assert_eq!(policy.rules[0].name.as_deref(), Some("fast"));
}

#[tokio::test]
async fn reconnects_with_the_rotated_token_and_keeps_the_policy_meanwhile() {
    let mut server = server().await;
    let client = start(|t| config(&server, t));
    let conn = next_conn(&mut server).await;
    conn.policy("v1", Some(SLOW));
    client.until_version("v1").await;
    let applied_at = client.store.current().applied_at;
    std::fs::write(client.token.path(), "token-2").unwrap();
    *server.refuse.lock().unwrap() = Some(StatusCode::SERVICE_UNAVAILABLE);
    drop(conn);
    // Refused attempts: disconnected, policy kept, retries keep coming.
    let refused = next_conn(&mut server).await;
    assert!(refused.refused);
    assert_eq!(refused.auth, "Bearer token-2");
    eventually("disconnected", Duration::from_secs(10), async || {
        !client.store.connected()
    })
    .await;
    // A refused stream's body may never end; the client must not wait for it.
    let again = next_conn(&mut server).await;
    assert!(again.refused);
    assert_eq!(client.store.current().version, "v1");
    assert!(client.store.current().policy.is_some());
    *server.refuse.lock().unwrap() = None;
    let conn = loop {
        let c = next_conn(&mut server).await;
        if !c.refused {
            break c;
        }
    };
    conn.policy("v1", Some(SLOW));
    eventually("reconnected", Duration::from_secs(10), async || {
        client.store.connected()
    })
    .await;
    // The same version is not re-applied (that would reset `first: N` counters).
    assert_eq!(client.store.current().applied_at, applied_at);
    drop(conn);
}

#[tokio::test]
async fn a_refusal_with_retry_after_is_honoured_instead_of_the_short_backoff() {
    let mut server = server().await;
    *server.refuse.lock().unwrap() = Some(StatusCode::TOO_MANY_REQUESTS);
    *server.retry_after.lock().unwrap() = Some(3);
    let _client = start(|t| config(&server, t));
    let first = next_conn(&mut server).await;
    let refused_at = std::time::Instant::now();
    assert!(first.refused);
    *server.refuse.lock().unwrap() = None;
    let again = next_conn(&mut server).await;
    let waited = refused_at.elapsed();
    assert!(!again.refused);
    // This server's refusal body never ends, so the client's 2 s cap on
    // reading it comes first; the backoff alone would then add 10-20 ms,
    // Retry-After adds 3-4 s.
    assert!(
        waited >= Duration::from_secs(5) && waited < Duration::from_secs(8),
        "came back after {waited:?}"
    );
}

#[tokio::test]
async fn a_silent_stream_is_dropped_after_the_heartbeat_timeout() {
    let mut server = server().await;
    let client = start(|t| ClientConfig {
        heartbeat_timeout: Duration::from_millis(300),
        ..config(&server, t)
    });
    let first = next_conn(&mut server).await;
    first.policy("v1", Some(SLOW));
    client.until_version("v1").await;
    // `first` stays open but silent: the client must give up on it and reconnect.
    let second = next_conn(&mut server).await;
    assert_eq!(second.auth, "Bearer token-1");
    eventually(
        "the silent stream to be closed by the client",
        Duration::from_secs(10),
        async || first.lines.is_closed(),
    )
    .await;
    assert_eq!(client.store.current().version, "v1");
}

#[tokio::test]
async fn a_controller_with_an_untrusted_certificate_is_never_believed() {
    let mut server = server().await;
    let (other_ca, _) = faultline_test_support::tls::localhost_server_config();
    let client = start(|t| ClientConfig {
        ca_pem: other_ca.into_bytes(),
        ..config(&server, t)
    });
    let failures = server.tls_failures.clone();
    eventually(
        "two failed handshakes",
        Duration::from_secs(10),
        async || failures.load(Ordering::SeqCst) >= 2,
    )
    .await;
    assert!(
        server.conns.try_recv().is_err(),
        "a request got through TLS"
    );
    assert!(!client.store.connected());
    assert_eq!(client.store.current().version, "");
}

#[test]
fn the_proxy_config_is_validated_before_connecting() {
    use crate::config::{CaSource, ControllerConfig};
    let (ca, _) = faultline_test_support::tls::localhost_server_config();
    let base = ControllerConfig {
        url: "https://faultline-webhook.faultline-system.svc:443".into(),
        token_file: PathBuf::from(faultline_policy::contract::TOKEN_FILE),
        ca: CaSource::Pem(ca.clone()),
        pod_name: Some("p".into()),
        pod_namespace: Some("ns".into()),
        pod_ip: None,
        service_account: None,
    };
    let config = ClientConfig::from_proxy_config(&base).unwrap();
    assert_eq!(config.pod, Some(("ns".into(), "p".into())));
    assert_eq!(config.ca_pem, ca.as_bytes());
    let err = |c: ControllerConfig| ClientConfig::from_proxy_config(&c).unwrap_err();
    assert!(matches!(
        err(ControllerConfig {
            ca: CaSource::System,
            ..base.clone()
        }),
        ClientError::MissingCa
    ));
    assert!(matches!(
        err(ControllerConfig {
            url: "http://c".into(),
            ..base.clone()
        }),
        ClientError::Scheme(_)
    ));
    assert!(matches!(
        err(ControllerConfig {
            ca: CaSource::Pem("junk".into()),
            ..base.clone()
        }),
        ClientError::NoCa
    ));
    let missing = ControllerConfig {
        ca: CaSource::File("/nonexistent/ca.pem".into()),
        ..base.clone()
    };
    assert!(matches!(err(missing), ClientError::CaFile { .. }));
}
