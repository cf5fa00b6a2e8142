//! `fromHeaders`: a client's request names its own delay or abort with the
//! `x-faultline-*` headers, within the policy's bounds, over HTTP/1.1,
//! HTTP/2 and gRPC. The upstream's `/headers` route answers with the
//! headers it received, which shows what was forwarded.
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;

use crate::support::*;

const POLICY: &str = "rules:
- name: asked
  match: {direction: inbound}
  fromHeaders: {maxDelay: 2s, abortStatuses: [503, 429], abortGrpc: [UNAVAILABLE]}
";

fn refused(reason: &str) -> String {
    format!("faultline_header_faults_refused_total{{rule=\"asked\",reason=\"{reason}\"}}")
}

/// A client that gives up long before a wrongly honoured `1h` delay would end.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

#[tokio::test]
async fn the_requests_own_delay_and_abort_are_honoured() {
    let upstream = http_upstream().await;
    let proxy = start_proxy(upstream.addr, POLICY).await;
    let client = client();

    let started = Instant::now();
    let response = client
        .get(proxy.url("/hello"))
        .header("x-faultline-delay", "300ms")
        .send()
        .await
        .unwrap();
    assert_eq!(response.text().await.unwrap(), "hello");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(upstream.hits(), 1);

    let response = client
        .get(proxy.url("/hello"))
        .header("x-faultline-abort", "503")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(upstream.hits(), 1, "an abort never reaches the upstream");

    // Both: wait, then abort.
    let started = Instant::now();
    let response = client
        .get(proxy.url("/hello"))
        .header("x-faultline-delay", "200ms")
        .header("x-faultline-abort", "429")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(upstream.hits(), 1);

    assert_eq!(proxy.metric(&injected("asked", "delay")).await, 1.0);
    assert_eq!(proxy.metric(&injected("asked", "abort")).await, 2.0);
}

#[tokio::test]
async fn out_of_bounds_values_are_refused_counted_and_forwarded() {
    let upstream = http_upstream().await;
    let proxy = start_proxy(upstream.addr, POLICY).await;
    let client = client();
    for (header, value) in [
        ("x-faultline-delay", "1h"),
        ("x-faultline-abort", "500"),
        ("x-faultline-delay", "300"),
        ("x-faultline-abort-grpc", "UNAVAILABLE"),
    ] {
        let response = client
            .get(proxy.url("/hello"))
            .header(header, value)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{header}: {value}");
        assert_eq!(response.text().await.unwrap(), "hello");
    }
    assert_eq!(
        upstream.hits(),
        4,
        "every refused request went on unfaulted"
    );
    assert_eq!(proxy.metric(&refused("delay_too_long")).await, 1.0);
    assert_eq!(proxy.metric(&refused("not_allowed")).await, 1.0);
    assert_eq!(proxy.metric(&refused("malformed")).await, 1.0);
    assert_eq!(proxy.metric(&refused("not_grpc")).await, 1.0);
    let metrics = proxy.metrics().await;
    assert_eq!(
        metrics::sum(&metrics, "faultline_faults_injected_total", None),
        0.0
    );
}

#[tokio::test]
async fn without_control_headers_nothing_happens() {
    let upstream = http_upstream().await;
    let proxy = start_proxy(upstream.addr, POLICY).await;
    let response = client().get(proxy.url("/hello")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(upstream.hits(), 1);
    let metrics = proxy.metrics().await;
    assert_eq!(
        metrics::sum(&metrics, "faultline_faults_injected_total", None),
        0.0
    );
    assert_eq!(
        metrics::sum(&metrics, "faultline_header_faults_refused_total", None),
        0.0
    );
}

#[tokio::test]
async fn kubelet_probes_never_choose_their_faults() {
    let upstream = http_upstream().await;
    let proxy = start_proxy(upstream.addr, POLICY).await;
    let response = client()
        .get(proxy.url("/headers"))
        .header("user-agent", "kube-probe/1.20")
        .header("x-faultline-abort", "503")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = response.text().await.unwrap();
    assert!(
        !seen.contains("x-faultline"),
        "stripped for probes too: {seen}"
    );
    assert_eq!(proxy.metric(&injected("asked", "abort")).await, 0.0);
}

#[tokio::test]
async fn control_headers_are_never_forwarded_upstream() {
    let upstream = http_upstream().await;
    let proxy = start_proxy(upstream.addr, POLICY).await;
    let client = client();
    // Honoured, refused, or on traffic the rule does not match: while a
    // fromHeaders rule is in force, the headers stop at the proxy.
    for (header, value) in [
        ("x-faultline-delay", "10ms"),
        ("x-faultline-delay", "10h"),
        ("x-faultline-abort-grpc", "14"),
    ] {
        let seen = proxy
            .headers_seen(&client, &[(header, value), ("x-faultline-note", "kept")])
            .await;
        assert!(!seen.contains(header), "{header}: {seen}");
        assert!(seen.contains("x-faultline-note: kept"), "{seen}");
    }
    // A policy without a fromHeaders rule leaves them alone: the proxy
    // only changes traffic a rule is about.
    proxy
        .set_policy("rules:\n- {match: {path: /never}, abort: {status: 500}}\n")
        .await;
    let seen = proxy
        .headers_seen(&client, &[("x-faultline-abort", "503")])
        .await;
    assert!(seen.contains("x-faultline-abort: 503"), "{seen}");
}

#[tokio::test]
async fn http2_and_grpc_requests_choose_their_faults() {
    let upstream = http_upstream().await;
    let proxy = start_proxy(upstream.addr, POLICY).await;
    let mut client = h2_client(proxy.addr).await;
    let h2 = |path: &str, header: &'static str, value: &'static str| {
        Request::get(format!("http://test.svc{path}"))
            .header(header, value)
            .body(full(""))
            .unwrap()
    };

    let response = client
        .send_request(h2("/hello", "x-faultline-abort", "503"))
        .await
        .unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), 503);

    let started = Instant::now();
    let response = client
        .send_request(h2("/headers", "x-faultline-delay", "250ms"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = response.into_body().collect().await.unwrap().to_bytes();
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    let seen = String::from_utf8_lossy(&seen);
    assert!(!seen.contains("x-faultline"), "{seen}");

    let grpc = Request::post("http://test.svc/test.Echo/Unary")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("x-faultline-abort-grpc", "UNAVAILABLE")
        .body(full(Bytes::from_static(b"\x00\x00\x00\x00\x05hello")))
        .unwrap();
    let response = client.send_request(grpc).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["grpc-status"], "14", "trailers-only");
    assert_eq!(upstream.hits(), 1, "only the delayed request went upstream");
    assert_eq!(proxy.metric(&injected("asked", "abort")).await, 2.0);
}
