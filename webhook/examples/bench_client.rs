//! Load generator for `bench/webhook.sh`: POSTs AdmissionReviews (or GETs a
//! baseline path) over TLS keep-alive from `--concurrency` tasks for
//! `--seconds`, then prints one line of JSON: requests/s, client-side
//! latency percentiles and, with `--metrics-url`, the server-side p99 taken
//! from the `faultline_webhook_admission_duration_seconds` histogram delta.
//!
//!   cargo run --release -p faultline-webhook --example bench_client -- \
//!     --url https://localhost:8443/mutate --ca certs/ca.crt --seconds 10

#![allow(clippy::unwrap_used)] // a benchmark tool: a panic is the error report

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::json;

struct Args {
    url: String,
    ca: String,
    concurrency: usize,
    seconds: u64,
    http2: bool,
    metrics_url: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        url: String::new(),
        ca: String::new(),
        concurrency: 16,
        seconds: 10,
        http2: false,
        metrics_url: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => a.url = value(),
            "--ca" => a.ca = value(),
            "--concurrency" => a.concurrency = value().parse().unwrap(),
            "--seconds" => a.seconds = value().parse().unwrap(),
            "--metrics-url" => a.metrics_url = Some(value()),
            "--http2" => a.http2 = true,
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(
        !a.url.is_empty() && !a.ca.is_empty(),
        "--url and --ca are required"
    );
    a
}

fn review(i: usize) -> serde_json::Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": format!("bench-{i}"),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "shop",
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"generateName": "checkout-6f7d9-", "namespace": "shop",
                             "labels": {"app": "checkout", "pod-template-hash": "6f7d9"}},
                "spec": {"containers": [{"name": "checkout", "image": "example/checkout:1",
                          "ports": [{"containerPort": 8080}, {"containerPort": 9090, "name": "grpc"}]}],
                         "volumes": [{"name": "kube-api-access", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}}]},
            },
        },
    })
}

/// Histogram buckets (upper bound seconds -> cumulative count) of the mutate latency.
async fn histogram(client: &reqwest::Client, url: &str) -> BTreeMap<u64, f64> {
    let text = client.get(url).send().await.unwrap().text().await.unwrap();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("faultline_webhook_admission_duration_seconds_bucket{")
        else {
            continue;
        };
        if !rest.contains("kind=\"mutate\"") {
            continue;
        }
        let le = rest
            .split("le=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap();
        let count: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().unwrap()
        };
        // Key in nanoseconds so the map orders buckets.
        out.insert(
            if le.is_infinite() {
                u64::MAX
            } else {
                (le * 1e9) as u64
            },
            count,
        );
    }
    out
}

/// Quantile from cumulative bucket deltas, interpolating within the bucket.
fn quantile(before: &BTreeMap<u64, f64>, after: &BTreeMap<u64, f64>, q: f64) -> Option<f64> {
    let deltas: Vec<(u64, f64)> = after
        .iter()
        .map(|(le, c)| (*le, c - before.get(le).copied().unwrap_or(0.0)))
        .collect();
    let total = deltas.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let target = q * total;
    let mut lower = (0u64, 0.0);
    for (le, cum) in deltas {
        if cum >= target {
            if le == u64::MAX {
                return Some(lower.0 as f64 / 1e9);
            }
            let frac = (target - lower.1) / (cum - lower.1).max(1e-9);
            return Some((lower.0 as f64 + frac * (le - lower.0) as f64) / 1e9);
        }
        lower = (le, cum);
    }
    None
}

#[tokio::main]
async fn main() {
    let a = args();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&a.ca).unwrap()).unwrap();
    let mut builder = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .pool_max_idle_per_host(a.concurrency);
    builder = if a.http2 {
        builder.http2_prior_knowledge()
    } else {
        builder.http1_only()
    };
    let client = builder.build().unwrap();
    let before = match &a.metrics_url {
        Some(url) => histogram(&client, url).await,
        None => BTreeMap::new(),
    };
    let post = a.url.ends_with("/mutate");
    let body = serde_json::to_vec(&review(0)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(a.seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..a.concurrency {
        let (client, url, body) = (client.clone(), a.url.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(1 << 16);
            let mut errors = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                let request = if post {
                    client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body.clone())
                } else {
                    client.get(&url)
                };
                match request.send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        latencies.push(t.elapsed().as_micros() as u64);
                    }
                    _ => errors += 1,
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.unwrap();
        latencies.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let pct = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    let server_p99_us = match &a.metrics_url {
        Some(url) => {
            quantile(&before, &histogram(&client, url).await, 0.99).map(|s| (s * 1e6).round())
        }
        None => None,
    };
    println!(
        "{}",
        json!({
            "url": a.url,
            "requests": latencies.len(),
            "errors": errors,
            "rps": (latencies.len() as f64 / elapsed).round(),
            "client_p50_us": pct(0.50),
            "client_p99_us": pct(0.99),
            "server_p99_us": server_p99_us,
        })
    );
}
