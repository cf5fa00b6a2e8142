//! The webhook over real TLS on 127.0.0.1:0: rcgen certificates, a client that
//! verifies the CA, AdmissionReviews in, patches out; certificate rotation
//! under load; malformed and oversized bodies; long streams not cut.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use base64::Engine;
use faultline_webhook::Config;
use faultline_webhook::admission::{self, AdmissionState};
use faultline_webhook::certs;
use faultline_webhook::metrics::Metrics;
use faultline_webhook::server::{self, Readiness, ServeOptions};
use faultline_webhook::tls::TlsReloader;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

struct Server {
    url: String,
    addr: std::net::SocketAddr,
    ca_pem: String,
    bundle: certs::CertBundle,
    dir: tempfile::TempDir,
    tls: TlsReloader,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

fn names() -> Vec<String> {
    vec!["localhost".into(), "127.0.0.1".into()]
}

async fn start(max_body_bytes: usize, extra: Router) -> Server {
    let bundle = certs::generate(&names(), time::OffsetDateTime::now_utc()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tls.crt"), &bundle.cert_pem).unwrap();
    std::fs::write(dir.path().join("tls.key"), &bundle.key_pem).unwrap();
    let tls =
        TlsReloader::from_files(dir.path().join("tls.crt"), dir.path().join("tls.key")).unwrap();
    let shutdown = CancellationToken::new();
    tls.watch(Duration::from_millis(20), shutdown.clone(), |_| {});

    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let config = Config {
        ca_pem: Some(bundle.ca_cert_pem.clone()),
        ..Config::default()
    };
    let state = AdmissionState::new(config, metrics, max_body_bytes);
    let readiness = Readiness::default();
    readiness.set(true);
    let app = admission::router(state)
        .merge(extra)
        .merge(server::ops_router(Arc::new(registry), readiness));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let options = ServeOptions {
        drain_timeout: Duration::from_secs(2),
        ..ServeOptions::default()
    };
    let task = tokio::spawn({
        let (tls, shutdown) = (tls.clone(), shutdown.clone());
        async move {
            server::serve_with(listener, tls, app, shutdown, options)
                .await
                .unwrap()
        }
    });
    Server {
        url: format!("https://localhost:{}", addr.port()),
        addr,
        ca_pem: bundle.ca_cert_pem.clone(),
        bundle,
        dir,
        tls,
        shutdown,
        task,
    }
}

fn client(server: &Server) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(server.ca_pem.as_bytes()).unwrap())
        .resolve("localhost", server.addr)
        .build()
        .unwrap()
}

fn pod_review(uid: &str, labels: Value) -> Value {
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
                "metadata": {"generateName": "web-5d8f-", "namespace": "shop", "labels": labels},
                "spec": {"containers": [{"name": "web", "image": "nginx", "ports": [{"containerPort": 8080}]}]},
            },
        },
    })
}

async fn post(client: &reqwest::Client, url: &str, body: &Value) -> Value {
    let response = client.post(url).json(body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test]
async fn mutate_over_tls_returns_a_patch_that_injects() {
    let server = start(admission::DEFAULT_MAX_BODY_BYTES, Router::new()).await;
    let review = pod_review("uid-1", json!({"app": "web"}));
    for http1 in [false, true] {
        let mut builder = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(server.ca_pem.as_bytes()).unwrap())
            .resolve("localhost", server.addr);
        if http1 {
            builder = builder.http1_only();
        }
        let client = builder.build().unwrap();
        let response = client
            .post(format!("{}/mutate", server.url))
            .json(&review)
            .send()
            .await
            .unwrap();
        // ALPN picks h2 unless the client only speaks HTTP/1.1.
        let expected = if http1 {
            reqwest::Version::HTTP_11
        } else {
            reqwest::Version::HTTP_2
        };
        assert_eq!(response.version(), expected);
        let out: Value = response.json().await.unwrap();
        let r = &out["response"];
        assert_eq!(out["kind"], "AdmissionReview");
        assert_eq!(r["uid"], "uid-1");
        assert_eq!(r["allowed"], true);
        assert_eq!(r["patchType"], "JSONPatch");
        let patch_json = base64::engine::general_purpose::STANDARD
            .decode(r["patch"].as_str().unwrap())
            .unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&patch_json).unwrap();
        let mut pod = review["request"]["object"].clone();
        json_patch::patch(&mut pod, &patch).unwrap();
        assert_eq!(pod["spec"]["containers"][0]["name"], "faultline-proxy");
        assert_eq!(pod["metadata"]["labels"]["faultline.dev/injected"], "true");
        let env = pod["spec"]["containers"][0]["env"].as_array().unwrap();
        let ca = env
            .iter()
            .find(|e| e["name"] == "FAULTLINE_CA_PEM")
            .unwrap();
        assert_eq!(ca["value"], server.ca_pem.as_str());
    }
}

#[tokio::test]
async fn skipped_pods_are_allowed_with_a_warning_and_counted() {
    let server = start(admission::DEFAULT_MAX_BODY_BYTES, Router::new()).await;
    let client = client(&server);
    let out = post(
        &client,
        &format!("{}/mutate", server.url),
        &pod_review("u", json!({"faultline.dev/inject": "false"})),
    )
    .await;
    assert_eq!(out["response"]["allowed"], true);
    assert!(out["response"].get("patch").is_none());
    assert!(
        out["response"]["warnings"][0]
            .as_str()
            .unwrap()
            .contains("faultline.dev/inject=false")
    );
    let metrics = client
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"faultline_webhook_skipped_pods_total{reason="opted_out"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"faultline_webhook_admission_requests_total{kind="mutate",outcome="skipped"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("faultline_webhook_admission_duration_seconds_bucket"),
        "{metrics}"
    );
}

#[tokio::test]
async fn bad_pod_override_is_denied_with_the_annotation_in_the_message() {
    let server = start(admission::DEFAULT_MAX_BODY_BYTES, Router::new()).await;
    let mut review = pod_review("u", json!({}));
    review["request"]["object"]["metadata"]["annotations"] =
        json!({"faultline.dev/proxy-memory": "lots"});
    let out = post(&client(&server), &format!("{}/mutate", server.url), &review).await;
    assert_eq!(out["response"]["allowed"], false);
    let message = out["response"]["status"]["message"].as_str().unwrap();
    assert!(message.contains("faultline.dev/proxy-memory"), "{message}");
}

#[tokio::test]
async fn malformed_and_oversized_bodies() {
    let server = start(64 * 1024, Router::new()).await;
    let client = client(&server);
    for (body, needle) in [
        ("{not json".to_string(), "failed to read AdmissionReview"),
        (
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}).to_string(),
            "no request",
        ),
        (
            json!({"request": {"uid": 5}}).to_string(),
            "failed to read AdmissionReview",
        ),
    ] {
        for path in ["/mutate", "/validate"] {
            let response = client
                .post(format!("{}{path}", server.url))
                .body(body.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 400, "{path} {body}");
            let text = response.text().await.unwrap();
            assert!(text.contains(needle), "{path}: {text}");
        }
    }
    let mut review = pod_review("big", json!({}));
    review["request"]["object"]["metadata"]["annotations"] =
        json!({"filler": "x".repeat(100 * 1024)});
    let response = client
        .post(format!("{}/mutate", server.url))
        .json(&review)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    // The server is still fine afterwards.
    let out = post(
        &client,
        &format!("{}/mutate", server.url),
        &pod_review("after", json!({})),
    )
    .await;
    assert_eq!(out["response"]["uid"], "after");
}

#[tokio::test]
async fn validate_denies_unparsable_fault_annotations() {
    let server = start(admission::DEFAULT_MAX_BODY_BYTES, Router::new()).await;
    let review = |faults: &str| {
        json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "v1",
                "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
                "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
                "name": "checkout", "namespace": "shop", "operation": "CREATE",
                "userInfo": {"username": "dev"},
                "object": {
                    "apiVersion": "apps/v1", "kind": "Deployment",
                    "metadata": {"name": "checkout", "namespace": "shop"},
                    "spec": {"template": {"metadata": {"annotations": {"faultline.dev/faults": faults}}}},
                },
            },
        })
    };
    let client = client(&server);
    let url = format!("{}/validate", server.url);
    let good = post(
        &client,
        &url,
        &review("rules:\n- name: slow\n  match: {direction: inbound}\n  delay: {fixed: 100ms}\n"),
    )
    .await;
    assert_eq!(good["response"]["allowed"], true, "{good}");
    let invalid = "rules:\n- name: payments-down\n  match: {direction: outbound, port: 80}\n  abort: {status: 700}\n";
    let bad = post(&client, &url, &review(invalid)).await;
    assert_eq!(bad["response"]["allowed"], false);
    let message = bad["response"]["status"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "invalid faultline.dev/faults annotation in spec.template.metadata.annotations: "
        ),
        "{message}"
    );
    assert!(
        message.contains("payments-down") && message.contains("abort.status"),
        "{message}"
    );
}

/// Replace the served certificate the way a Secret volume does: write new
/// files aside, then rename over the old ones.
fn rotate(dir: &Path, bundle: &certs::CertBundle) -> String {
    let (cert, key) = certs::issue(
        &bundle.ca_cert_pem,
        &bundle.ca_key_pem,
        &names(),
        time::OffsetDateTime::now_utc(),
    )
    .unwrap();
    std::fs::write(dir.join("tls.crt.new"), &cert).unwrap();
    std::fs::write(dir.join("tls.key.new"), &key).unwrap();
    std::fs::rename(dir.join("tls.key.new"), dir.join("tls.key")).unwrap();
    std::fs::rename(dir.join("tls.crt.new"), dir.join("tls.crt")).unwrap();
    cert
}

fn der(pem: &str) -> Vec<u8> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotation_under_load_fails_no_request() {
    let server = start(admission::DEFAULT_MAX_BODY_BYTES, Router::new()).await;
    let stop = CancellationToken::new();
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut workers = Vec::new();
    for w in 0..4 {
        // Half the workers open a new connection (a new handshake) per request.
        let fresh = w % 2 == 0;
        let client = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(server.ca_pem.as_bytes()).unwrap())
            .resolve("localhost", server.addr)
            .pool_max_idle_per_host(if fresh { 0 } else { 8 })
            .build()
            .unwrap();
        let (url, stop, ok, failed) = (
            format!("{}/mutate", server.url),
            stop.clone(),
            ok.clone(),
            failed.clone(),
        );
        workers.push(tokio::spawn(async move {
            let review = pod_review("load", json!({}));
            while !stop.is_cancelled() {
                match client.post(&url).json(&review).send().await {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    Ok(r) => panic!("status {}", r.status()),
                    Err(e) => {
                        eprintln!("request failed: {e:?}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    for _ in 0..3 {
        let new_cert = rotate(server.dir.path(), &server.bundle);
        let deadline = Instant::now() + Duration::from_secs(10);
        while server.tls.current_cert_der() != der(&new_cert) {
            assert!(
                Instant::now() < deadline,
                "rotated certificate was not picked up"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Make sure requests are flowing on the new certificate before the next swap.
        let seen = ok.load(Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(10);
        while ok.load(Ordering::Relaxed) < seen + 20 {
            assert!(Instant::now() < deadline, "no progress after rotation");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    // A half-written update (certificate without its key) is never served.
    let served = server.tls.current_cert_der();
    let (other_cert, _) = certs::issue(
        &server.bundle.ca_cert_pem,
        &server.bundle.ca_key_pem,
        &names(),
        time::OffsetDateTime::now_utc(),
    )
    .unwrap();
    std::fs::write(server.dir.path().join("tls.crt"), &other_cert).unwrap();
    assert!(server.tls.reload_files().is_err());
    assert_eq!(server.tls.current_cert_der(), served);

    stop.cancel();
    for w in workers {
        w.await.unwrap();
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    assert!(ok.load(Ordering::Relaxed) > 60);
}

#[tokio::test]
async fn long_streams_are_not_cut_and_shutdown_drains() {
    // A stand-in for the policy stream: a chunk every 100 ms for longer than
    // every server timeout configured below.
    let stream = Router::new().route(
        "/stream",
        get(|| async {
            let chunks = futures::stream::unfold(0u32, |i| async move {
                if i == 15 {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                Some((Ok::<_, std::io::Error>(format!("{{\"n\":{i}}}\n")), i + 1))
            });
            Body::from_stream(chunks)
        }),
    );
    let bundle = certs::generate(&names(), time::OffsetDateTime::now_utc()).unwrap();
    let tls = TlsReloader::from_pem(bundle.cert_pem.as_bytes(), bundle.key_pem.as_bytes()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let options = ServeOptions {
        handshake_timeout: Duration::from_millis(500),
        first_request_timeout: Duration::from_millis(500),
        header_read_timeout: Duration::from_millis(500),
        body_timeout: Duration::from_millis(500),
        idle_timeout: Duration::from_millis(500),
        drain_timeout: Duration::from_secs(5),
        ..ServeOptions::default()
    };
    let task = tokio::spawn(server::serve_with(
        listener,
        tls,
        stream,
        shutdown.clone(),
        options,
    ));
    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(
            reqwest::Certificate::from_pem(bundle.ca_cert_pem.as_bytes()).unwrap(),
        )
        .resolve("localhost", addr)
        .build()
        .unwrap();
    let mut response = client
        .get(format!("https://localhost:{}/stream", addr.port()))
        .send()
        .await
        .unwrap();
    let mut lines = 0;
    let mut first = true;
    while let Some(chunk) = response.chunk().await.unwrap() {
        lines += chunk.iter().filter(|b| **b == b'\n').count();
        if first {
            // Shut down mid-stream: the open response must still complete.
            shutdown.cancel();
            first = false;
        }
    }
    assert_eq!(lines, 15);
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn tls12_clients_are_served() {
    let server = start(admission::DEFAULT_MAX_BODY_BYTES, Router::new()).await;
    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(server.ca_pem.as_bytes()).unwrap())
        .resolve("localhost", server.addr)
        .max_tls_version(reqwest::tls::Version::TLS_1_2)
        .build()
        .unwrap();
    let response = client
        .get(format!("{}/healthz", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    server.shutdown.cancel();
    server.task.await.unwrap();
}
