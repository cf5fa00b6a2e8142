//! HTTP/1.1 faults and pass-through, seen from the client.
use std::time::{Duration, Instant};

use crate::support::*;

const EMPTY: &str = "rules: []\n";

#[tokio::test]
async fn clean_traffic_passes_with_streamed_bodies_and_keep_alive() {
    let upstream = http_upstream().await;
    let proxy = start_proxy(upstream.addr, EMPTY).await;
    let client = reqwest::Client::new();
    for _ in 0..3 {
        let response = client.get(proxy.url("/hello")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), "hello");
    }
    // A 2 MiB chunked upload streamed through and echoed back.
    let response = client
        .post(proxy.url("/echo"))
        .body(streamed_body(32))
        .send()
        .await
        .unwrap();
    let body = response.bytes().await.unwrap();
    assert_eq!(body.len(), 32 * 64 * 1024);
    assert_eq!(body[64 * 1024 * 5], 5);
    // One keep-alive connection carried all four requests.
    assert_eq!(
        proxy
            .metric("faultline_connections_total{direction=\"inbound\",protocol=\"http1\"}")
            .await,
        1.0
    );
    assert_eq!(
        proxy
            .metric("faultline_requests_total{direction=\"inbound\",protocol=\"http1\"}")
            .await,
        4.0
    );
}

#[tokio::test]
async fn host_header_is_preserved() {
    let upstream = http_upstream().await;
    let proxy = start_proxy(upstream.addr, EMPTY).await;
    let text = proxy
        .headers_seen(&reqwest::Client::new(), &[("host", "payments.shop.svc")])
        .await;
    assert!(text.contains("host: payments.shop.svc"), "{text}");
}

#[tokio::test]
async fn request_delay_is_within_tolerance() {
    let upstream = http_upstream().await;
    let proxy = start_proxy(
        upstream.addr,
        "rules:\n- name: slow\n  match: {path: /hello}\n  delay: {fixed: 250ms}\n",
    )
    .await;
    let client = reqwest::Client::new();
    let started = Instant::now();
    let response = client.get(proxy.url("/hello")).send().await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(response.text().await.unwrap(), "hello");
    assert!(elapsed >= Duration::from_millis(250), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(750), "{elapsed:?}");
    // Other paths are not delayed.
    let started = Instant::now();
    client.get(proxy.url("/bytes/3")).send().await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(250));
    assert_eq!(
        proxy
            .metric("faultline_faults_injected_total{rule=\"slow\",kind=\"delay\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn response_delay_happens_after_the_upstream_answered() {
    let upstream = http_upstream().await;
    let proxy = start_proxy(
        upstream.addr,
        "rules:\n- match: {path: /hello}\n  delay: {fixed: 400ms, side: response}\n",
    )
    .await;
    let url = proxy.url("/hello");
    let started = Instant::now();
    let request =
        tokio::spawn(async move { reqwest::get(url).await.unwrap().text().await.unwrap() });
    // The upstream sees the request long before the client gets an answer.
    eventually("the upstream to be hit", Duration::from_secs(5), || async {
        upstream.hits() == 1
    })
    .await;
    assert!(!request.is_finished());
    assert_eq!(request.await.unwrap(), "hello");
    assert!(started.elapsed() >= Duration::from_millis(400));
}

#[tokio::test]
async fn abort_answers_with_status_body_and_headers() {
    let upstream = http_upstream().await;
    let proxy = start_proxy(
        upstream.addr,
        "rules:\n- name: payments-down\n  match: {methods: [POST]}\n  abort: {status: 503, body: injected by faultline, headers: {retry-after: \"7\"}}\n",
    )
    .await;
    let client = reqwest::Client::new();
    let response = client
        .post(proxy.url("/hello"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "7");
    assert_eq!(response.text().await.unwrap(), "injected by faultline");
    assert_eq!(upstream.hits(), 0);
    // GET does not match.
    assert_eq!(
        client
            .get(proxy.url("/hello"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn respond_serves_a_fixed_response_without_the_upstream() {
    let upstream = http_upstream().await;
    let proxy = start_proxy(
        upstream.addr,
        "rules:\n- match: {path: /api/*}\n  respond: {status: 200, body: '{\"stub\":true}', headers: {content-type: application/json}}\n",
    )
    .await;
    let response = reqwest::get(proxy.url("/api/items")).await.unwrap();
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.text().await.unwrap(), "{\"stub\":true}");
    assert_eq!(upstream.hits(), 0);
}

#[tokio::test]
async fn abort_reset_resets_the_client_connection() {
    let upstream = http_upstream().await;
    let proxy = start_proxy(upstream.addr, "rules:\n- abort: {reset: true}\n").await;
    let (bytes, result) = raw_exchange(
        proxy.addr,
        b"GET /hello HTTP/1.1\r\nhost: x\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(bytes.is_empty());
    let error = result.unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset, "{error}");
    let error = reqwest::get(proxy.url("/hello")).await.unwrap_err();
    assert!(
        format!("{error:?}").to_lowercase().contains("reset"),
        "{error:?}"
    );
}

#[tokio::test]
async fn hang_holds_until_the_client_times_out() {
    let upstream = http_upstream().await;
    let proxy = start_proxy(
        upstream.addr,
        "rules:\n- match: {path: /hello}\n  hang: {}\n",
    )
    .await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let started = Instant::now();
    let error = client.get(proxy.url("/hello")).send().await.unwrap_err();
    assert!(error.is_timeout(), "{error:?}");
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert_eq!(upstream.hits(), 0);
    drop(client);
    // Once the client is gone the proxy lets go of the connection too.
    eventually(
        "the hung connection to be released",
        Duration::from_secs(5),
        || async {
            proxy
                .metric("faultline_connections_active{direction=\"inbound\"}")
                .await
                == 0.0
        },
    )
    .await;
}

#[tokio::test]
async fn bandwidth_limit_is_within_ten_percent() {
    let upstream = http_upstream().await;
    let proxy = start_proxy(
        upstream.addr,
        "rules:\n- match: {path: /bytes/*}\n  bandwidth: {bytesPerSecond: 200000}\n",
    )
    .await;
    let started = Instant::now();
    let body = reqwest::get(proxy.url("/bytes/500000"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(body.len(), 500_000);
    let rate = 500_000.0 / elapsed;
    assert!(
        (180_000.0..=220_000.0).contains(&rate),
        "rate {rate:.0} B/s over {elapsed:.2}s"
    );
}

#[tokio::test]
async fn first_three_then_pass() {
    let upstream = http_upstream().await;
    let proxy = start_proxy(
        upstream.addr,
        "rules:\n- name: flaky\n  abort: {status: 500}\n  first: 3\n",
    )
    .await;
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(
            client
                .get(proxy.url("/hello"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, [500, 500, 500, 200, 200]);
}

#[tokio::test]
async fn probes_are_untouched_unless_the_rule_asks() {
    let upstream = http_upstream().await;
    let proxy = start_proxy(
        upstream.addr,
        "rules:\n- match: {path: /probed}\n  abort: {status: 500}\n- match: {path: /hello, probes: true}\n  abort: {status: 503}\n",
    )
    .await;
    let client = reqwest::Client::new();
    let probe = |path: &str| {
        client
            .get(proxy.url(path))
            .header("user-agent", "kube-probe/1.30")
            .send()
    };
    assert_eq!(probe("/probed").await.unwrap().status(), 404);
    assert_eq!(
        client
            .get(proxy.url("/probed"))
            .send()
            .await
            .unwrap()
            .status(),
        500
    );
    assert_eq!(probe("/hello").await.unwrap().status(), 503);
}

#[tokio::test]
async fn reset_after_bytes_cuts_an_http_response_mid_body() {
    let upstream = http_upstream().await;
    let proxy = start_proxy(upstream.addr, "rules:\n- reset: {afterBytes: 50000}\n").await;
    let response = reqwest::get(proxy.url("/bytes/400000")).await.unwrap();
    assert_eq!(response.status(), 200);
    let error = response.bytes().await.unwrap_err();
    assert!(error.is_body() || error.is_decode(), "{error:?}");
    assert_eq!(
        proxy
            .metric("faultline_faults_injected_total{rule=\"rules[0]\",kind=\"reset\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn bandwidth_also_paces_uploads() {
    let upstream = http_upstream().await;
    let proxy = start_proxy(
        upstream.addr,
        "rules:\n- match: {path: /echo}\n  bandwidth: {bytesPerSecond: 100000}\n",
    )
    .await;
    let started = Instant::now();
    let body = reqwest::Client::new()
        .post(proxy.url("/echo"))
        .body(vec![3u8; 100_000])
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(body.len(), 100_000);
    // Upload and echoed download share the connection's bucket: 200 kB
    // through a 100 kB/s limit.
    let elapsed = started.elapsed().as_secs_f64();
    assert!((1.7..=2.4).contains(&elapsed), "{elapsed:.2}s");
}

/// A rule that fires but changes nothing (a zero delay), one that never
/// wins its draw (`percent: 0`) and one whose `first` budget is spent are
/// no effect at all: nothing is delayed, counted or logged. Counting is the
/// observable part of the effect machinery (a zero delay used to be counted
/// and slept, waiting for the timer's next tick).
#[tokio::test]
async fn rules_that_do_nothing_inject_nothing() {
    let upstream = http_upstream().await;
    let proxy = start_proxy(
        upstream.addr,
        "rules:
- {name: zero, match: {path: /hello}, delay: {fixed: 0s}}
- {name: shadowed, match: {path: /hello}, abort: {status: 500}}
- {name: undrawn, match: {path: /bytes/1}, percent: 0, delay: {fixed: 5s}}
- {name: once, match: {path: /bytes/2}, first: 1, delay: {fixed: 10ms}}
",
    )
    .await;
    let client = reqwest::Client::new();
    for path in ["/hello", "/bytes/1", "/bytes/2"] {
        for _ in 0..20 {
            let response = client.get(proxy.url(path)).send().await.unwrap();
            assert_eq!(response.status(), 200, "{path}: the zero delay still wins");
        }
    }
    let metrics = proxy.metrics().await;
    assert_eq!(
        metrics::value(
            &metrics,
            "faultline_requests_total{direction=\"inbound\",protocol=\"http1\"}"
        ),
        60.0
    );
    assert_eq!(
        metrics::value(
            &metrics,
            "faultline_faults_injected_total{rule=\"once\",kind=\"delay\"}"
        ),
        1.0,
        "the budget's one fault is counted: {metrics}"
    );
    for rule in ["zero", "shadowed", "undrawn"] {
        assert!(
            !metrics.contains(&format!("rule=\"{rule}\"")),
            "{rule} counted a fault: {metrics}"
        );
    }
}
