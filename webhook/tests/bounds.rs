//! Hostile clients against the real server on 127.0.0.1:0 over real TLS:
//! each deadline closes the client that hit it, the connection cap keeps a
//! further client in the backlog while admission goes on for a good one,
//! and concurrent large reviews stay within the review bounds.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use faultline_test_support::metrics;
use faultline_test_support::wait::eventually;
use faultline_webhook::Config;
use faultline_webhook::admission::{self, AdmissionState, ReviewGate, ReviewLimits};
use faultline_webhook::certs;
use faultline_webhook::metrics::{ConnMetrics, Metrics};
use faultline_webhook::server::{self, Readiness, ServeOptions};
use faultline_webhook::tls::TlsReloader;
use prometheus_client::registry::Registry;
use rustls::pki_types::ServerName;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::sync::CancellationToken;

const MIB: usize = 1024 * 1024;

struct Server {
    addr: SocketAddr,
    ca_pem: String,
    registry: Arc<Registry>,
    metrics: Metrics,
    shutdown: CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Generous deadlines, so each test shortens only the one it is about.
fn relaxed() -> ServeOptions {
    ServeOptions {
        handshake_timeout: Duration::from_secs(30),
        first_request_timeout: Duration::from_secs(30),
        header_read_timeout: Duration::from_secs(30),
        body_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(30),
        drain_timeout: Duration::from_secs(1),
        ..ServeOptions::default()
    }
}

async fn start(mut options: ServeOptions, limits: ReviewLimits) -> Server {
    let bundle = certs::generate(
        &["localhost".into(), "127.0.0.1".into()],
        time::OffsetDateTime::now_utc(),
    )
    .unwrap();
    let tls = TlsReloader::from_pem(bundle.cert_pem.as_bytes(), bundle.key_pem.as_bytes()).unwrap();
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    options.metrics = ConnMetrics::register(&mut registry);
    let state = AdmissionState {
        reviews: ReviewGate::new(limits),
        ..AdmissionState::new(
            Config::default(),
            metrics.clone(),
            admission::DEFAULT_MAX_BODY_BYTES,
        )
    };
    let registry = Arc::new(registry);
    let readiness = Readiness::default();
    readiness.set(true);
    let app = admission::router(state).merge(server::ops_router(registry.clone(), readiness));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(server::serve_with(
        listener,
        tls,
        app,
        shutdown.clone(),
        options,
    ));
    Server {
        addr,
        ca_pem: bundle.ca_cert_pem,
        registry,
        metrics,
        shutdown,
    }
}

impl Server {
    /// One series of the server's metrics, read in-process so that reading
    /// opens no connection of its own.
    fn metric(&self, series: &str) -> f64 {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).unwrap();
        metrics::value(&text, series)
    }

    fn timeouts(&self, phase: &str) -> f64 {
        self.metric(&format!(
            "faultline_webhook_connection_timeouts_total{{phase=\"{phase}\"}}"
        ))
    }

    /// A TLS connection offering `alpn`, handshake done.
    async fn tls(&self, alpn: &[u8]) -> TlsStream<TcpStream> {
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        self.handshake(tcp, alpn).await.unwrap()
    }

    async fn handshake(
        &self,
        tcp: TcpStream,
        alpn: &[u8],
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut self.ca_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
    }

    fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap())
            .resolve("localhost", self.addr)
            .build()
            .unwrap()
    }

    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }
}

/// Reads until the server closes; how long that took.
async fn closed_within(stream: &mut TlsStream<TcpStream>, limit: Duration) -> Duration {
    let started = Instant::now();
    let mut buf = vec![0u8; 4096];
    let read_all = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, read_all)
        .await
        .expect("the server did not close the connection");
    started.elapsed()
}

/// A raw HTTP/1.1 response's status code.
async fn read_status(stream: &mut TlsStream<TcpStream>) -> u16 {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n") {
        assert_eq!(stream.read(&mut byte).await.unwrap(), 1, "no status line");
        head.push(byte[0]);
    }
    let line = String::from_utf8(head).unwrap();
    line.split(' ').nth(1).unwrap().parse().unwrap()
}

fn pod_review(uid: &str) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "shop",
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"generateName": "web-", "namespace": "shop"},
                "spec": {"containers": [{"name": "web", "image": "nginx"}]},
            },
        },
    })
}

/// A Deployment review of about `size` bytes: a valid policy plus filler.
fn large_review(uid: &str, size: usize) -> Vec<u8> {
    let policy = "rules:\n- name: slow\n  match: {direction: inbound}\n  delay: {fixed: 100ms}\n";
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "name": "checkout", "namespace": "shop", "operation": "CREATE",
            "userInfo": {"username": "dev"},
            "object": {
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "checkout", "namespace": "shop",
                             "annotations": {"filler": "x".repeat(size)}},
                "spec": {"template": {"metadata": {"annotations": {"faultline.dev/faults": policy}}}},
            },
        },
    }))
    .unwrap()
}

#[tokio::test]
async fn a_client_idle_after_the_handshake_is_closed_at_the_first_request_deadline() {
    let server = start(
        ServeOptions {
            first_request_timeout: Duration::from_millis(300),
            ..relaxed()
        },
        ReviewLimits::default(),
    )
    .await;
    for (n, alpn) in [b"http/1.1".as_slice(), b"h2"].into_iter().enumerate() {
        let mut idle = server.tls(alpn).await;
        let took = closed_within(&mut idle, Duration::from_secs(5)).await;
        assert!(took >= Duration::from_millis(250), "closed after {took:?}");
        assert_eq!(server.timeouts("first_request"), (n + 1) as f64);
    }
    eventually(
        "the slots to be freed",
        Duration::from_secs(5),
        async || server.metric("faultline_webhook_open_connections") == 0.0,
    )
    .await;
}

#[tokio::test]
async fn a_stalled_handshake_is_closed_at_the_handshake_deadline() {
    let server = start(
        ServeOptions {
            handshake_timeout: Duration::from_millis(300),
            ..relaxed()
        },
        ReviewLimits::default(),
    )
    .await;
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    // Half a ClientHello record header, then nothing.
    tcp.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    assert_eq!(server.timeouts("handshake"), 1.0);
}

#[tokio::test]
async fn slowloris_headers_are_closed_at_the_header_deadline() {
    let server = start(
        ServeOptions {
            header_read_timeout: Duration::from_millis(300),
            ..relaxed()
        },
        ReviewLimits::default(),
    )
    .await;
    let mut slow = server.tls(b"http/1.1").await;
    slow.write_all(b"POST /mutate HTTP/1.1\r\nhost: localhost\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    // One header line every 100 ms: the connection is never quiet, yet the
    // headers never end.
    loop {
        if slow.write_all(b"x-slow: 1\r\n").await.is_err() || slow.flush().await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "a slowloris client was kept"
        );
        if server.timeouts("headers") == 1.0 {
            break;
        }
    }
    closed_within(&mut slow, Duration::from_secs(5)).await;
    assert_eq!(server.timeouts("headers"), 1.0);
}

#[tokio::test]
async fn a_body_that_never_arrives_gets_408_at_the_body_deadline() {
    let server = start(
        ServeOptions {
            body_timeout: Duration::from_millis(300),
            ..relaxed()
        },
        ReviewLimits::default(),
    )
    .await;
    let mut stalled = server.tls(b"http/1.1").await;
    stalled
        .write_all(b"POST /validate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"apiVersion\":")
        .await
        .unwrap();
    let started = Instant::now();
    let status = tokio::time::timeout(Duration::from_secs(5), read_status(&mut stalled))
        .await
        .unwrap();
    assert_eq!(status, 408);
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert_eq!(server.timeouts("body"), 1.0);
    // Its budget went back: the gauge is empty and others are served.
    assert_eq!(server.metric("faultline_webhook_review_body_bytes"), 0.0);
    let response = server
        .client()
        .post(server.url("/mutate"))
        .json(&pod_review("after"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_at_the_idle_deadline() {
    let server = start(
        ServeOptions {
            idle_timeout: Duration::from_millis(300),
            ..relaxed()
        },
        ReviewLimits::default(),
    )
    .await;
    let mut h1 = server.tls(b"http/1.1").await;
    h1.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_status(&mut h1).await, 200);
    let took = closed_within(&mut h1, Duration::from_secs(5)).await;
    assert!(took >= Duration::from_millis(250), "closed after {took:?}");
    assert_eq!(server.timeouts("idle"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_cap_a_further_client_waits_until_one_closes() {
    let server = start(
        ServeOptions {
            max_connections: 3,
            ..relaxed()
        },
        ReviewLimits::default(),
    )
    .await;
    // A good client (HTTP/2: one connection it keeps), then two hostile ones
    // that finish the handshake and send nothing: the cap is reached.
    let good = server.client();
    let response = good.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    let mut hostile = vec![server.tls(b"http/1.1").await, server.tls(b"h2").await];
    eventually(
        "three open connections",
        Duration::from_secs(5),
        async || server.metric("faultline_webhook_open_connections") == 3.0,
    )
    .await;

    // A further client gets into the backlog, but no TLS answer.
    let further = TcpStream::connect(server.addr).await.unwrap();
    let handshake = server.handshake(further, b"http/1.1");
    tokio::pin!(handshake);
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut handshake)
            .await
            .is_err(),
        "a client beyond the cap was served"
    );
    assert!(server.metric("faultline_webhook_connection_cap_reached_total") >= 1.0);

    // Admission goes on for the good client meanwhile.
    for i in 0..5 {
        let response = good
            .post(server.url("/mutate"))
            .json(&pod_review(&format!("during-{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }

    // One hostile client leaves: the waiting one is served.
    drop(hostile.pop());
    let mut served = tokio::time::timeout(Duration::from_secs(5), handshake)
        .await
        .expect("the waiting client was not served after a slot freed")
        .unwrap();
    served
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_status(&mut served).await, 200);
}

/// The largest gauge value seen while `work` runs, sampled every millisecond.
async fn peak_while<T>(
    gauge: impl Fn() -> i64 + Send + Sync + 'static,
    work: impl Future<Output = T>,
) -> (i64, T) {
    let peak = Arc::new(AtomicI64::new(0));
    let stop = CancellationToken::new();
    let sampler = tokio::spawn({
        let (peak, stop) = (peak.clone(), stop.clone());
        let gauge = Arc::new(gauge);
        async move {
            while !stop.is_cancelled() {
                peak.fetch_max(gauge(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    });
    let out = work.await;
    stop.cancel();
    sampler.await.unwrap();
    (peak.load(Ordering::Relaxed), out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_large_reviews_stay_within_the_review_bounds() {
    let limits = ReviewLimits {
        max_concurrent: 1,
        body_budget_bytes: 8 * MIB,
        wait: Duration::from_secs(30),
    };
    let server = start(relaxed(), limits).await;
    let client = server.client();
    let reviews = (0..12).map(|i| {
        let (client, url) = (client.clone(), server.url("/validate"));
        async move {
            let response = client
                .post(url)
                .header("content-type", "application/json")
                .body(large_review(&format!("big-{i}"), 3 * MIB))
                .send()
                .await
                .unwrap();
            response.status().as_u16()
        }
    });
    let in_flight = server.metrics.reviews_in_flight.clone();
    let body_bytes = server.metrics.body_bytes.clone();
    let both = move || in_flight.get() * (1 << 40) + body_bytes.get();
    let (peak, statuses) = peak_while(both, futures::future::join_all(reviews)).await;
    let (peak_in_flight, peak_bytes) = (peak >> 40, peak & ((1 << 40) - 1));
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert!(
        peak_in_flight <= 1,
        "{peak_in_flight} reviews decoded at once"
    );
    assert!(
        peak_bytes <= 8 * MIB as i64,
        "{peak_bytes} body bytes buffered"
    );
    assert!(peak_bytes > 0, "the sampler saw nothing");
    assert_eq!(server.metric("faultline_webhook_reviews_in_flight"), 0.0);
    assert_eq!(server.metric("faultline_webhook_review_body_bytes"), 0.0);
    assert_eq!(server.metric("faultline_webhook_reviews_waiting"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_review_over_the_body_budget_waits_then_gets_429_and_small_ones_pass() {
    let limits = ReviewLimits {
        max_concurrent: 4,
        body_budget_bytes: 5 * MIB,
        wait: Duration::from_millis(300),
    };
    let server = start(relaxed(), limits).await;
    // A client that announces a 4 MiB body, sends part of it and stops
    // holds the 4 MiB it announced (until the body deadline).
    let mut hog = server.tls(b"http/1.1").await;
    hog.write_all(
        format!(
            "POST /validate HTTP/1.1\r\nhost: localhost\r\ncontent-length: {}\r\n\r\n",
            4 * MIB
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    hog.write_all(&vec![b' '; 7 * MIB / 2]).await.unwrap();
    hog.flush().await.unwrap();
    eventually(
        "the hog's bytes to be held",
        Duration::from_secs(10),
        async || server.metrics.body_bytes.get() == (4 * MIB) as i64,
    )
    .await;

    let client = server.client();
    let started = Instant::now();
    let response = client
        .post(server.url("/validate"))
        .header("content-type", "application/json")
        .body(large_review("over", MIB))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert_eq!(response.headers()["retry-after"], "1");
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("body budget stayed spent")
    );
    assert_eq!(
        server.metric("faultline_webhook_reviews_rejected_total{reason=\"body_budget\"}"),
        1.0
    );
    // A pod review fits in what is left.
    let small = client
        .post(server.url("/mutate"))
        .json(&pod_review("small"))
        .send()
        .await
        .unwrap();
    assert_eq!(small.status(), 200);

    // The hog leaves: its budget comes back and the large review passes.
    drop(hog);
    eventually(
        "the hog's budget to return",
        Duration::from_secs(5),
        async || server.metrics.body_bytes.get() == 0,
    )
    .await;
    let response = client
        .post(server.url("/validate"))
        .header("content-type", "application/json")
        .body(large_review("again", MIB))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}
