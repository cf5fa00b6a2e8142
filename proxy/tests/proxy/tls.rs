//! TLS by server name: real rustls clients and a rustls server through the
//! proxy, which reads the ClientHello's SNI and never decrypts anything
//! (the client verifies the server's own certificate end to end).
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use faultline_test_support::tls::TestCerts;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::support::*;

const NAMES: [&str; 4] = [
    "api.stripe.test",
    "other.example.test",
    "slow.example.test",
    "127.0.0.1",
];

/// A TLS server answering `hello <sni>` to each line, counting handshakes.
struct TlsUpstream {
    addr: SocketAddr,
    certs: TestCerts,
    handshakes: Arc<AtomicUsize>,
    names: Arc<Mutex<Vec<String>>>,
}

async fn tls_upstream() -> TlsUpstream {
    let certs = TestCerts::new(&NAMES);
    let acceptor = TlsAcceptor::from(Arc::new(certs.server.clone()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handshakes = Arc::new(AtomicUsize::new(0));
    let names = Arc::new(Mutex::new(Vec::new()));
    let (count, seen) = (handshakes.clone(), names.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, count, seen) = (acceptor.clone(), count.clone(), seen.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let sni = tls.get_ref().1.server_name().unwrap_or("-").to_owned();
                seen.lock().unwrap().push(sni.clone());
                let mut buf = [0u8; 64];
                while let Ok(n) = tls.read(&mut buf).await {
                    if n == 0
                        || tls
                            .write_all(format!("hello {sni}\n").as_bytes())
                            .await
                            .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    TlsUpstream {
        addr,
        certs,
        handshakes,
        names,
    }
}

impl TlsUpstream {
    fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }

    /// A rustls client's handshake to `name` through `proxy`, then one
    /// exchange: the server's answer.
    async fn exchange(&self, proxy: SocketAddr, name: &str) -> std::io::Result<String> {
        let connector = TlsConnector::from(Arc::new(self.certs.client()));
        let name = ServerName::try_from(name.to_owned()).unwrap();
        let exchange = async {
            let stream = TcpStream::connect(proxy).await?;
            let mut tls = connector.connect(name, stream).await?;
            tls.write_all(b"ping\n").await?;
            let mut buf = [0u8; 64];
            let n = tls.read(&mut buf).await?;
            Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
        };
        tokio::time::timeout(Duration::from_secs(5), exchange)
            .await
            .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
    }

    /// The same exchange, but the ClientHello goes out framed in TLS records
    /// of `record` bytes, sent in TCP segments of `segment` bytes with a
    /// pause between them (the rest of the handshake is rustls' own).
    async fn split_exchange(
        &self,
        proxy: SocketAddr,
        name: &str,
        record: usize,
        segment: usize,
    ) -> std::io::Result<String> {
        let config = Arc::new(self.certs.client());
        let name = ServerName::try_from(name.to_owned()).unwrap();
        tokio::task::spawn_blocking(move || {
            let mut client = rustls::ClientConnection::new(config, name).unwrap();
            let mut hello = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut hello).unwrap();
            }
            let mut socket = std::net::TcpStream::connect(proxy)?;
            socket.set_nodelay(true)?;
            socket.set_read_timeout(Some(Duration::from_secs(5)))?;
            for piece in in_records(&hello, record).chunks(segment) {
                socket.write_all(piece)?;
                std::thread::sleep(Duration::from_millis(20));
            }
            let mut tls = rustls::Stream::new(&mut client, &mut socket);
            tls.write_all(b"ping\n")?;
            let mut buf = [0u8; 64];
            let n = tls.read(&mut buf)?;
            Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
        })
        .await
        .unwrap()
    }
}

/// A ClientHello (one record) re-framed in records of at most `size` bytes.
fn in_records(hello: &[u8], size: usize) -> Vec<u8> {
    let (header, message) = hello.split_at(5);
    let len = u16::from_be_bytes([header[3], header[4]]) as usize;
    assert_eq!(len, message.len(), "one record");
    let mut out = Vec::new();
    for piece in message.chunks(size) {
        out.extend_from_slice(&header[..3]);
        out.extend_from_slice(&(piece.len() as u16).to_be_bytes());
        out.extend_from_slice(piece);
    }
    out
}

fn assert_cut(result: std::io::Result<String>, what: &str) {
    assert!(result.is_err(), "{what}: not faulted: {result:?}");
}

#[tokio::test]
async fn tls_passes_end_to_end_and_is_counted_as_tls() {
    let upstream = tls_upstream().await;
    let proxy = start_proxy(upstream.addr, "rules: []\n").await;
    // The client verified the upstream's own certificate for the name:
    // nothing in between terminated TLS.
    assert_eq!(
        upstream
            .exchange(proxy.addr, "api.stripe.test")
            .await
            .unwrap(),
        "hello api.stripe.test\n"
    );
    let metrics = proxy.metrics().await;
    let tls = "faultline_connections_total{direction=\"inbound\",protocol=\"tls\"}";
    let tcp = "faultline_connections_total{direction=\"inbound\",protocol=\"tcp\"}";
    assert_eq!(metrics::value(&metrics, tls), 1.0, "{metrics}");
    assert_eq!(metrics::value(&metrics, tcp), 0.0, "{metrics}");
}

#[tokio::test]
async fn an_sni_rule_faults_its_names_handshakes_and_no_others() {
    let upstream = tls_upstream().await;
    let policy = r#"rules:
- name: stripe-down
  match: {sni: "*.stripe.test"}
  abort: {reset: true}
- name: slow
  match: {host: slow.example.test}
  delay: {fixed: 300ms}
"#;
    let proxy = start_proxy(upstream.addr, policy).await;
    assert_cut(
        upstream.exchange(proxy.addr, "api.stripe.test").await,
        "api.stripe.test",
    );
    let started = Instant::now();
    assert_eq!(
        upstream
            .exchange(proxy.addr, "other.example.test")
            .await
            .unwrap(),
        "hello other.example.test\n"
    );
    assert!(started.elapsed() < Duration::from_millis(300));
    // `host` is the SNI on TLS.
    let started = Instant::now();
    assert_eq!(
        upstream
            .exchange(proxy.addr, "slow.example.test")
            .await
            .unwrap(),
        "hello slow.example.test\n"
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(upstream.handshakes(), 2, "the reset one never reached it");
    let metrics = proxy.metrics().await;
    let faults = |rule: &str, kind: &str| metrics::value(&metrics, &injected(rule, kind));
    assert_eq!(faults("stripe-down", "abort"), 1.0, "{metrics}");
    assert_eq!(faults("slow", "delay"), 1.0, "{metrics}");
}

#[tokio::test]
async fn connection_faults_by_name_wait_for_the_client_hello() {
    let upstream = tls_upstream().await;
    let policy = r#"rules:
- name: stripe-cut
  match: {host: api.stripe.test}
  partition: {mode: reject}
- name: slow-cut
  match: {sni: slow.example.test}
  reset: {after: 200ms}
"#;
    let proxy = start_proxy(upstream.addr, policy).await;
    assert_cut(
        upstream.exchange(proxy.addr, "api.stripe.test").await,
        "partition",
    );
    assert_eq!(
        upstream
            .exchange(proxy.addr, "other.example.test")
            .await
            .unwrap(),
        "hello other.example.test\n"
    );
    // The reset cuts an established TLS connection mid-stream.
    let connector = TlsConnector::from(Arc::new(upstream.certs.client()));
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let name = ServerName::try_from("slow.example.test").unwrap();
    let mut tls = connector.connect(name, stream).await.unwrap();
    let cut = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 64];
        loop {
            tls.write_all(b"ping\n").await?;
            if tls.read(&mut buf).await? == 0 {
                return Ok::<_, std::io::Error>(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the reset fires within 5s");
    assert!(cut.is_err(), "ended with a close instead of a reset");
    assert_eq!(upstream.handshakes(), 2);
}

#[tokio::test]
async fn a_client_hello_split_over_segments_and_records_is_read() {
    let upstream = tls_upstream().await;
    let policy = "rules:\n- match: {sni: api.stripe.test}\n  abort: {reset: true}\n";
    let proxy = start_proxy(upstream.addr, policy).await;
    for (record, segment) in [(64, 50), (1000, 60), (100, 2000)] {
        assert_cut(
            upstream
                .split_exchange(proxy.addr, "api.stripe.test", record, segment)
                .await,
            &format!("records of {record}, segments of {segment}"),
        );
        // The bytes read to find the name reach the server untouched.
        assert_eq!(
            upstream
                .split_exchange(proxy.addr, "other.example.test", record, segment)
                .await
                .unwrap(),
            "hello other.example.test\n",
            "records of {record}, segments of {segment}"
        );
    }
}

#[tokio::test]
async fn a_client_hello_without_sni_matches_no_sni_rule() {
    let upstream = tls_upstream().await;
    let policy = r#"rules:
- match: {sni: "*.test"}
  abort: {reset: true}
- match: {host: "*.test"}
  partition: {}
"#;
    let proxy = start_proxy(upstream.addr, policy).await;
    // rustls sends no SNI for an IP address.
    assert_eq!(
        upstream.exchange(proxy.addr, "127.0.0.1").await.unwrap(),
        "hello -\n"
    );
    assert_eq!(upstream.names.lock().unwrap().as_slice(), ["-"]);
}

#[tokio::test]
async fn sni_rules_leave_other_traffic_alone() {
    let policy = r#"rules:
- match: {sni: "*.stripe.test"}
  partition: {}
- match: {sni: "*.stripe.test"}
  abort: {reset: true}
"#;
    let http = http_upstream().await;
    let proxy = start_proxy(http.addr, policy).await;
    let response = reqwest::get(proxy.url("/hello")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "hello");
    let echo = tcp_echo(None).await;
    let proxy = start_proxy(echo.addr, policy).await;
    let (bytes, _) = raw_exchange(proxy.addr, b"PING\r\n", Duration::from_millis(500)).await;
    assert_eq!(bytes, b"PING\r\n");
    // A TLS record header that is not followed by a ClientHello is raw TCP.
    let not_hello = [0x16, 0x03, 0x01, 0x00, 0x02, 0x02, 0x00];
    let (bytes, _) = raw_exchange(proxy.addr, &not_hello, Duration::from_millis(500)).await;
    assert_eq!(bytes, not_hello);
    assert_eq!(
        proxy
            .metric("faultline_connections_total{direction=\"inbound\",protocol=\"tcp\"}")
            .await,
        2.0
    );
}

#[tokio::test]
async fn protocol_tcp_keeps_including_tls_and_protocol_tls_narrows_it() {
    let upstream = tls_upstream().await;
    let proxy = start_proxy(
        upstream.addr,
        "rules:\n- match: {protocol: tcp}\n  abort: {reset: true}\n",
    )
    .await;
    assert_cut(
        upstream.exchange(proxy.addr, "other.example.test").await,
        "tcp",
    );
    let echo = tcp_echo(None).await;
    let proxy = start_proxy(
        echo.addr,
        "rules:\n- match: {protocol: tls}\n  abort: {reset: true}\n",
    )
    .await;
    let (bytes, _) = raw_exchange(proxy.addr, b"PING\r\n", Duration::from_millis(500)).await;
    assert_eq!(bytes, b"PING\r\n", "raw TCP is not tls");
    let proxy = start_proxy(
        upstream.addr,
        "rules:\n- match: {protocol: tls, sni: \"*.example.test\"}\n  abort: {reset: true}\n",
    )
    .await;
    assert_cut(
        upstream.exchange(proxy.addr, "other.example.test").await,
        "tls",
    );
    // `/policy` shows the rule as it is in force.
    let (_, policy) = proxy.admin_get("/policy").await;
    let policy: serde_json::Value = serde_json::from_str(&policy).unwrap();
    assert_eq!(
        policy["policy"]["rules"][0]["match"],
        serde_json::json!({"protocol": "tls", "sni": "*.example.test"}),
        "{policy}"
    );
}
