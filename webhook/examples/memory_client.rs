//! Load for `bench/webhook-memory.sh`: `--concurrency` clients, each on its
//! own connection, POST the largest AdmissionReview the server accepts (a
//! Deployment whose object and pod template both carry a fault policy of
//! just under 1 MiB, filled up to `--body-bytes`) to `/validate` at the same
//! moment, `--rounds` times. A 429 is retried after its `Retry-After`, up
//! to 4 times, as the API server's client does. Prints one line of JSON:
//! final answers by status, the 429s seen on the way, and the time taken.
//!
//!   cargo run --release -p faultline-webhook --example memory_client -- \
//!     --url https://localhost:8443/validate --ca certs/ca.crt --concurrency 32

#![allow(clippy::unwrap_used)] // a benchmark tool: a panic is the error report

use std::collections::BTreeMap;
use std::time::Instant;

use serde_json::json;

struct Args {
    url: String,
    ca: String,
    concurrency: usize,
    rounds: usize,
    body_bytes: usize,
}

fn args() -> Args {
    let mut a = Args {
        url: String::new(),
        ca: String::new(),
        concurrency: 32,
        rounds: 3,
        body_bytes: 4 * 1024 * 1024,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => a.url = value(),
            "--ca" => a.ca = value(),
            "--concurrency" => a.concurrency = value().parse().unwrap(),
            "--rounds" => a.rounds = value().parse().unwrap(),
            "--body-bytes" => a.body_bytes = value().parse().unwrap(),
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(
        !a.url.is_empty() && !a.ca.is_empty(),
        "--url and --ca are required"
    );
    a
}

/// A valid policy of just under the parser's limit: many small rules.
fn policy() -> String {
    let mut text = String::from("rules:\n");
    let mut i = 0;
    loop {
        let rule = format!(
            "- name: slow-{i:06}\n  match: {{direction: inbound, port: {}}}\n  delay: {{fixed: 10ms}}\n",
            1000 + i % 60000
        );
        if text.len() + rule.len() > faultline_policy::MAX_POLICY_BYTES - 64 {
            return text;
        }
        text.push_str(&rule);
        i += 1;
    }
}

/// The review, padded with a filler annotation to `size` bytes.
fn review(size: usize) -> Vec<u8> {
    let policy = policy();
    let build = |filler: usize| {
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "memory",
                "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
                "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
                "name": "checkout", "namespace": "shop", "operation": "CREATE",
                "userInfo": {"username": "dev"},
                "object": {
                    "apiVersion": "apps/v1", "kind": "Deployment",
                    "metadata": {"name": "checkout", "namespace": "shop",
                                 "annotations": {"faultline.dev/faults": policy, "filler": "x".repeat(filler)}},
                    "spec": {"template": {"metadata": {"annotations": {"faultline.dev/faults": policy}}}},
                },
            },
        }))
        .unwrap()
    };
    let bare = build(0).len();
    build(size.saturating_sub(bare))
}

/// The final status (or `error`) and how many 429s came before it.
async fn send_with_retries(request: reqwest::RequestBuilder) -> (String, u64) {
    let mut retried = 0;
    loop {
        let Ok(response) = request.try_clone().unwrap().send().await else {
            return ("error".into(), retried);
        };
        let status = response.status().as_u16();
        let wait = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let _ = response.bytes().await;
        match wait {
            Some(seconds) if status == 429 && retried < 4 => {
                retried += 1;
                tokio::time::sleep(std::time::Duration::from_secs(seconds)).await;
            }
            _ => return (status.to_string(), retried),
        }
    }
}

#[tokio::main]
async fn main() {
    let a = args();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&a.ca).unwrap()).unwrap();
    let body = review(a.body_bytes);
    // One client per task: one connection each, like as many callers.
    let clients: Vec<reqwest::Client> = (0..a.concurrency)
        .map(|_| {
            reqwest::Client::builder()
                .tls_built_in_root_certs(false)
                .add_root_certificate(ca.clone())
                .http1_only()
                .build()
                .unwrap()
        })
        .collect();
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    let mut retries = 0u64;
    let started = Instant::now();
    for _ in 0..a.rounds {
        let burst = clients.iter().map(|client| {
            let request = client
                .post(&a.url)
                .header("content-type", "application/json")
                .body(body.clone());
            send_with_retries(request)
        });
        for (status, retried) in futures::future::join_all(burst).await {
            *statuses.entry(status).or_default() += 1;
            retries += retried;
        }
    }
    println!(
        "{}",
        json!({
            "body_bytes": body.len(),
            "requests": a.concurrency * a.rounds,
            "statuses": statuses,
            "retried_429": retries,
            "seconds": started.elapsed().as_secs_f64(),
        })
    );
}
