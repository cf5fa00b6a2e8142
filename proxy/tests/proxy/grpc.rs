//! HTTP/2 prior knowledge (h2c) and gRPC: streaming, trailers, aborts.
//! The upstream is a hyper HTTP/2 server speaking gRPC framing and the
//! client a hyper HTTP/2 client (no tonic: it is heavy to build here).
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;

use crate::support::*;

fn grpc_request(path: &str) -> Request<Body> {
    Request::post(format!("http://test.svc{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(full(Bytes::from_static(b"\x00\x00\x00\x00\x05hello")))
        .unwrap()
}

/// Collects data and trailers of a response body.
async fn collect(
    response: http::Response<hyper::body::Incoming>,
) -> (Bytes, Option<http::HeaderMap>) {
    let collected = response.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    (collected.to_bytes(), trailers)
}

#[tokio::test]
async fn grpc_unary_and_server_streaming_pass_with_trailers() {
    let upstream = http_upstream().await;
    let proxy = start_proxy(upstream.addr, "rules: []\n").await;
    let mut client = h2_client(proxy.addr).await;

    let response = client
        .send_request(grpc_request("/test.Echo/Unary"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), http::Version::HTTP_2);
    let (data, trailers) = collect(response).await;
    assert_eq!(&data[..], b"\x00\x00\x00\x00\x05hello");
    let trailers = trailers.expect("trailers");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "fine");

    let response = client
        .send_request(grpc_request("/test.Echo/Stream"))
        .await
        .unwrap();
    let (data, trailers) = collect(response).await;
    assert_eq!(data.len(), 5 * 8);
    assert_eq!(trailers.unwrap()["grpc-status"], "0");
    assert_eq!(
        proxy
            .metric("faultline_requests_total{direction=\"inbound\",protocol=\"grpc\"}")
            .await,
        2.0
    );
}

#[tokio::test]
async fn grpc_abort_is_a_trailers_only_response() {
    let upstream = http_upstream().await;
    let proxy = start_proxy(
        upstream.addr,
        "rules:\n- name: grpc-unavailable\n  match: {protocol: grpc, path: /test.Echo/*}\n  abort: {grpc: UNAVAILABLE, message: injected by faultline}\n",
    )
    .await;
    let mut client = h2_client(proxy.addr).await;
    let response = client
        .send_request(grpc_request("/test.Echo/Unary"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/grpc");
    assert_eq!(response.headers()["grpc-status"], "14");
    assert_eq!(response.headers()["grpc-message"], "injected by faultline");
    let (data, trailers) = collect(response).await;
    assert!(data.is_empty());
    assert!(trailers.is_none());
    assert_eq!(upstream.hits(), 0);
}

#[tokio::test]
async fn h2c_requests_are_delayed_and_multiplexed() {
    let upstream = http_upstream().await;
    let proxy = start_proxy(
        upstream.addr,
        "rules:\n- match: {path: /sleep/*}\n  delay: {fixed: 200ms}\n",
    )
    .await;
    let client = h2_client(proxy.addr).await;
    let started = Instant::now();
    // Ten concurrent streams on one connection: delays overlap.
    let requests = (0..10).map(|_| {
        let mut client = client.clone();
        async move {
            let request = Request::get("http://test.svc/sleep/0")
                .body(full(""))
                .unwrap();
            client.send_request(request).await.unwrap().status()
        }
    });
    let statuses = futures::future::join_all(requests).await;
    assert!(statuses.iter().all(|s| *s == 200));
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(200) && elapsed < Duration::from_millis(1000),
        "{elapsed:?}"
    );
    assert_eq!(
        proxy
            .metric("faultline_connections_total{direction=\"inbound\",protocol=\"http2\"}")
            .await,
        1.0
    );
}
