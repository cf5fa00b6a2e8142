//! The delay distributions (`uniform`, `lognormal`, `pareto`) hold real
//! requests for at least their minimum. Only lower bounds are asserted:
//! wall time on a loaded machine has no upper bound worth testing.
use std::time::{Duration, Instant};

use crate::support::*;

const POLICY: &str = "rules:
- {name: uniform, match: {path: /bytes/1}, delay: {uniform: {min: 150ms, max: 250ms}}}
- {name: lognormal, match: {path: /bytes/2}, delay: {lognormal: {median: 200ms, p99: 210ms}}}
- {name: pareto, match: {path: /bytes/3}, delay: {pareto: {scale: 150ms, shape: 3, max: 400ms}}}
";

/// The lognormal rule has no hard minimum; with median 200 ms and p99
/// 210 ms (sigma 0.02097), a sample under 150 ms is 13.7 sigma away
/// (probability below 1e-42), so 150 ms is its minimum in practice.
const MINIMUM: Duration = Duration::from_millis(150);
const REQUESTS: usize = 4;

#[tokio::test]
async fn every_distribution_delays_real_requests_by_at_least_its_minimum() {
    let upstream = http_upstream().await;
    let proxy = start_proxy(upstream.addr, POLICY).await;
    let client = reqwest::Client::new();
    let mut requests = Vec::new();
    for (rule, path) in [
        ("uniform", "/bytes/1"),
        ("lognormal", "/bytes/2"),
        ("pareto", "/bytes/3"),
    ] {
        for _ in 0..REQUESTS {
            let (client, url) = (client.clone(), proxy.url(path));
            requests.push(tokio::spawn(async move {
                let started = Instant::now();
                let response = client.get(url).send().await.unwrap();
                assert_eq!(response.status(), 200);
                response.bytes().await.unwrap();
                (rule, started.elapsed())
            }));
        }
    }
    for request in requests {
        let (rule, elapsed) = request.await.unwrap();
        assert!(elapsed >= MINIMUM, "{rule}: {elapsed:?}");
    }
    // A path none of them match is forwarded without a fault.
    client.get(proxy.url("/hello")).send().await.unwrap();
    for rule in ["uniform", "lognormal", "pareto"] {
        assert_eq!(
            proxy.metric(&injected(rule, "delay")).await,
            REQUESTS as f64,
            "{rule}"
        );
    }
    assert_eq!(
        upstream.hits(),
        3 * REQUESTS + 1,
        "every request went on upstream"
    );
}
