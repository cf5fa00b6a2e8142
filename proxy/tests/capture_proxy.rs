//! The whole capture path with the real proxy: in a pod namespace, an HTTP
//! app and `faultline-proxy init`, then `faultline-proxy run` as UID 15400
//! with a policy file; a client in the peer namespace sees the faults, the
//! admin port counts them, and outbound connections from the app are
//! captured with their original destination and partitioned by policy.
mod capture;

use std::net::SocketAddr;
use std::time::Duration;

use std::sync::Arc;

use bytes::Bytes;
use capture::{
    NetnsPair, PEER_IP, PEER_IP6, POD_IP, POD_IP6, connect, http_get, listen, setup, v4, v6,
};
use faultline_test_support::tls::TestCerts;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const POLICY: &str = r#"
rules:
- name: slow-orders
  match: {direction: inbound, port: 8080, path: /orders*}
  delay: {fixed: 400ms}
- name: broken-checkout
  match: {direction: inbound, path: /checkout}
  abort: {status: 503, body: "injected by faultline"}
- name: ledger-partition
  match: {direction: outbound, port: 9001}
  partition: {mode: reject}
"#;

/// An HTTP app answering `app:<port> saw <client ip>` on every path.
fn app_server(ns: &str, addr: SocketAddr) {
    let port = addr.port();
    let listener = listen(ns, addr);
    tokio::spawn(async move {
        while let Ok((stream, peer)) = listener.accept().await {
            let service = service_fn(move |_req| async move {
                let body = format!("app:{port} saw {}", peer.ip());
                Ok::<_, hyper::Error>(hyper::Response::new(Full::new(Bytes::from(body))))
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
}

/// A TCP server that answers `echo:<port> <what it read>` and counts connections.
fn echo_server(ns: &str, addr: SocketAddr) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    let listener = listen(ns, addr);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                if let Ok(n) = stream.read(&mut buf).await {
                    let reply = format!(
                        "echo:{} {}",
                        addr.port(),
                        String::from_utf8_lossy(&buf[..n])
                    );
                    let _ = stream.write_all(reply.as_bytes()).await;
                }
            });
        }
    });
    accepted
}

/// `[packets:bytes]` counter of the first saved nat rule containing `needle`.
fn rule_packets(pair: &NetnsPair, needle: &str) -> u64 {
    let out = pair.exec(&pair.pod, "iptables-nft-save", &["-c", "-t", "nat"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no rule {needle}: {text}"));
    line.trim_start_matches('[')
        .split(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("packet counter")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_proxy_faults_captured_inbound_and_outbound_traffic() {
    let Some(mut pair) = setup("e2e", false) else {
        return;
    };
    let (pod, peer) = (pair.pod.clone(), pair.peer.clone());
    app_server(&pod, v4([0, 0, 0, 0].into(), 8080));
    app_server(&pod, v4([0, 0, 0, 0].into(), 8081));
    pair.init_ok(&["--exclude-inbound-ports", "8081"]);
    let dir = tempfile::tempdir().expect("tempdir");
    pair.start_proxy(&dir, POLICY, &[("FAULTLINE_LOG", "info")]);

    let admin = v4(POD_IP, 15400);
    pair.wait_ready(admin).await;

    // Inbound, captured: a clean request passes through the proxy to 127.0.0.1.
    let (status, body, _) = http_get(&peer, v4(POD_IP, 8080), "/catalog")
        .await
        .expect("clean request");
    assert_eq!((status, body.as_str()), (200, "app:8080 saw 127.0.0.1"));
    // Delay and abort from the policy file are seen by the outside client.
    let (status, body, took) = http_get(&peer, v4(POD_IP, 8080), "/orders/42")
        .await
        .expect("delayed request");
    assert_eq!((status, body.as_str()), (200, "app:8080 saw 127.0.0.1"));
    assert!(
        took >= Duration::from_millis(400),
        "delay not applied: {took:?}"
    );
    let (status, body, _) = http_get(&peer, v4(POD_IP, 8080), "/checkout")
        .await
        .expect("aborted request");
    assert_eq!((status, body.as_str()), (503, "injected by faultline"));

    // The excluded port bypasses the proxy: no fault, and the app sees the real client.
    let (status, body, _) = http_get(&peer, v4(POD_IP, 8081), "/checkout")
        .await
        .expect("excluded port");
    assert_eq!((status, body.as_str()), (200, "app:8081 saw 10.240.0.1"));

    // Outbound from the app: captured, forwarded to the original destination.
    let echo = echo_server(&peer, v4(PEER_IP, 9000));
    let ledger = echo_server(&peer, v4(PEER_IP, 9001));
    let mut stream = connect(&pod, v4(PEER_IP, 9000))
        .await
        .expect("outbound connect");
    stream.write_all(b"ping").await.expect("write");
    let mut reply = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut reply))
        .await
        .expect("reply in time")
        .expect("read");
    assert_eq!(reply, "echo:9000 ping");
    assert_eq!(echo.load(std::sync::atomic::Ordering::SeqCst), 1);

    // The partition rule makes the outbound connection fail; the server never sees it.
    let outcome = async {
        let mut stream = connect(&pod, v4(PEER_IP, 9001)).await?;
        stream.write_all(b"ping").await?;
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await?;
        Ok::<_, std::io::Error>(reply)
    };
    match tokio::time::timeout(Duration::from_secs(5), outcome)
        .await
        .expect("partition answers quickly")
    {
        Ok(reply) => assert!(
            reply.is_empty(),
            "partitioned connection got data: {reply:?}"
        ),
        Err(_reset_or_refused) => {}
    }
    assert_eq!(
        ledger.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "partitioned server was reached"
    );

    // No loop: the two outbound app connections were redirected once each,
    // and the proxy's own upstream connection left through its UID exception.
    assert_eq!(rule_packets(&pair, "-j FAULTLINE_REDIRECT"), 2);
    assert!(rule_packets(&pair, "proxy own traffic (uid)") >= 1);

    // The admin port counts the faults it applied (and nothing from port 8081).
    let metrics = pair.metrics(admin).await;
    for rule in ["slow-orders", "broken-checkout", "ledger-partition"] {
        let count = faultline_test_support::metrics::sum(
            &metrics,
            "faultline_faults_injected_total",
            Some(&format!("rule=\"{rule}\"")),
        );
        assert_eq!(count, 1.0, "{rule} counted {count} times in:\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_proxy_captures_ipv6_with_ipv6_listeners() {
    let Some(mut pair) = setup("e2e6", true) else {
        return;
    };
    let (pod, peer) = (pair.pod.clone(), pair.peer.clone());
    // Dual-stack app: the proxy delivers inbound traffic to 127.0.0.1.
    app_server(&pod, v6(0.into(), 8080));
    // IPv4 stays redirected too, but to a port nobody listens on: no IPv4
    // checks here, see docs/capture.md ("IPv6").
    pair.init_ok(&[]);
    let rules6 = pair.nat_rules("ip6tables-nft-save");
    assert!(
        rules6.contains("-j FAULTLINE_IN_REDIRECT"),
        "auto mirrors IPv6: {rules6}"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    pair.start_proxy(
        &dir,
        POLICY,
        &[
            ("FAULTLINE_LOG", "info"),
            ("FAULTLINE_INBOUND_ADDR", "[::]:15406"),
            ("FAULTLINE_OUTBOUND_ADDR", "[::]:15401"),
        ],
    );
    pair.wait_ready(v4(POD_IP, 15400)).await;

    // The proxy binds its IPv6 listeners IPv6-only, so this pod captures IPv6 only.
    let target = v6(POD_IP6, 8080);
    let (status, body, _) = http_get(&peer, target, "/checkout")
        .await
        .expect("aborted request");
    assert_eq!(
        (status, body.as_str()),
        (503, "injected by faultline"),
        "{target}"
    );
    let (status, body, _) = http_get(&peer, target, "/catalog")
        .await
        .expect("clean request");
    assert_eq!(status, 200, "{target}");
    assert!(
        body.starts_with("app:8080 saw ") && body.contains("127.0.0.1"),
        "{target}: {body}"
    );

    let echo = echo_server(&peer, v6(PEER_IP6, 9000));
    let ledger = echo_server(&peer, v6(PEER_IP6, 9001));
    let mut stream = connect(&pod, v6(PEER_IP6, 9000))
        .await
        .expect("outbound connect");
    stream.write_all(b"ping6").await.expect("write");
    let mut reply = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut reply))
        .await
        .expect("reply in time")
        .expect("read");
    assert_eq!(reply, "echo:9000 ping6");
    assert_eq!(echo.load(std::sync::atomic::Ordering::SeqCst), 1);
    let partitioned = async {
        let mut stream = connect(&pod, v6(PEER_IP6, 9001)).await?;
        stream.write_all(b"ping6").await?;
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await?;
        Ok::<_, std::io::Error>(reply)
    };
    let outcome = tokio::time::timeout(Duration::from_secs(5), partitioned)
        .await
        .expect("partition answers quickly");
    assert!(
        outcome.is_err() || outcome.is_ok_and(|r| r.is_empty()),
        "partitioned IPv6 connection got data"
    );
    assert_eq!(
        ledger.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "partitioned server was reached"
    );
}

/// A TLS server in namespace `ns` answering `<port> hello <sni>`.
fn tls_server(ns: &str, addr: SocketAddr, certs: &TestCerts) {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(certs.server.clone()));
    let listener = listen(ns, addr);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let sni = tls.get_ref().1.server_name().unwrap_or("-").to_owned();
                let mut buf = [0u8; 64];
                if tls.read(&mut buf).await.is_ok_and(|n| n > 0) {
                    let reply = format!("{} hello {sni}", addr.port());
                    let _ = tls.write_all(reply.as_bytes()).await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
}

/// A rustls client in namespace `ns`: handshake with `name`, one exchange.
async fn tls_call(
    ns: &str,
    addr: SocketAddr,
    name: &str,
    certs: &TestCerts,
) -> std::io::Result<String> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(certs.client()));
    let name = rustls::pki_types::ServerName::try_from(name.to_owned()).expect("a server name");
    let call = async {
        let stream = connect(ns, addr).await?;
        let mut tls = connector.connect(name, stream).await?;
        tls.write_all(b"ping").await?;
        let mut reply = String::new();
        tls.read_to_string(&mut reply).await?;
        Ok(reply)
    };
    tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_proxy_faults_captured_tls_by_server_name() {
    let Some(mut pair) = setup("tls", false) else {
        return;
    };
    let (pod, peer) = (pair.pod.clone(), pair.peer.clone());
    let certs = TestCerts::new(&[
        "api.stripe.test",
        "other.example.test",
        "shop.test",
        "admin.shop.test",
    ]);
    tls_server(&pod, v4([0, 0, 0, 0].into(), 8443), &certs);
    tls_server(&peer, v4(PEER_IP, 443), &certs);
    pair.init_ok(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = r#"
rules:
- name: stripe-down
  match: {direction: outbound, sni: "*.stripe.test"}
  abort: {reset: true}
- name: admin-cut
  match: {direction: inbound, port: 8443, host: admin.shop.test}
  partition: {}
"#;
    pair.start_proxy(&dir, policy, &[("FAULTLINE_LOG", "info")]);
    let admin = v4(POD_IP, 15400);
    pair.wait_ready(admin).await;

    // Outbound HTTPS from the app: captured, faulted by name only.
    let stripe = tls_call(&pod, v4(PEER_IP, 443), "api.stripe.test", &certs).await;
    assert!(stripe.is_err(), "stripe not faulted: {stripe:?}");
    let other = tls_call(&pod, v4(PEER_IP, 443), "other.example.test", &certs).await;
    assert_eq!(
        other.expect("other name passes"),
        "443 hello other.example.test"
    );
    // Inbound HTTPS to the app: `host` is the SNI.
    let cut = tls_call(&peer, v4(POD_IP, 8443), "admin.shop.test", &certs).await;
    assert!(cut.is_err(), "admin not partitioned: {cut:?}");
    let shop = tls_call(&peer, v4(POD_IP, 8443), "shop.test", &certs).await;
    assert_eq!(shop.expect("shop passes"), "8443 hello shop.test");

    let metrics = pair.metrics(admin).await;
    let value = |series: &str| faultline_test_support::metrics::value(&metrics, series);
    // Partitioned connections are cut before they are counted.
    for (series, want) in [
        (
            "faultline_connections_total{direction=\"outbound\",protocol=\"tls\"}",
            2.0,
        ),
        (
            "faultline_connections_total{direction=\"inbound\",protocol=\"tls\"}",
            1.0,
        ),
        (
            "faultline_faults_injected_total{rule=\"stripe-down\",kind=\"abort\"}",
            1.0,
        ),
        (
            "faultline_faults_injected_total{rule=\"admin-cut\",kind=\"partition\"}",
            1.0,
        ),
    ] {
        assert_eq!(value(series), want, "{series} in:\n{metrics}");
    }
}
