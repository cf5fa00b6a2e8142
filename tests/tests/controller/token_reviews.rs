//! What authenticating policy streams costs the API server, on a real one:
//! tokens that cannot be ours cost no TokenReview, forged ones cost at most
//! the configured rate (counted by the controller and by the API server's
//! own `apiserver_request_total`), a valid token's second stream is answered
//! from the cache, and a deleted pod's token stops working once its cached
//! acceptance expires.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use faultline_e2e::{ControlPlane, unique_name, wait_for};
use faultline_policy::contract::INJECTED_LABEL;
use faultline_test_support::fixtures::pod;
use faultline_test_support::metrics;
use faultline_webhook::controller::ReviewLimits;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams};

use crate::support::{Webhook, bundle, init_logs};

const WAIT: Duration = Duration::from_secs(60);

fn https(ca_pem: &str) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes())?)
        .timeout(Duration::from_secs(20))
        .build()?)
}

/// `(status, Retry-After seconds)` of one stream request; the body is not read.
async fn login(
    http: &reqwest::Client,
    port: u16,
    token: &str,
) -> anyhow::Result<(u16, Option<u64>)> {
    let response = http
        .get(format!("https://localhost:{port}/v1/policy/stream"))
        .bearer_auth(token)
        .send()
        .await?;
    let retry = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    Ok((response.status().as_u16(), retry))
}

/// A JWT-shaped token whose claims look right (audience, expiry, bound pod)
/// but whose signature is garbage: only a TokenReview can refuse it.
fn forged(i: usize) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + 3600;
    let payload = serde_json::json!({
        "aud": ["faultline"], "exp": exp, "iss": "https://kubernetes.default.svc",
        "kubernetes.io": {"namespace": "shop", "pod": {"name": format!("p-{i}"), "uid": format!("u-{i}")},
                          "serviceaccount": {"name": "default", "uid": "s"}},
        "sub": "system:serviceaccount:shop:default"
    });
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","kid":"forged"}"#),
        URL_SAFE_NO_PAD.encode(payload.to_string()),
        URL_SAFE_NO_PAD.encode(format!("not-a-signature-{i}"))
    )
}

async fn apiserver_token_reviews(cp: &ControlPlane) -> anyhow::Result<f64> {
    let request = http::Request::get("/metrics").body(Vec::new())?;
    let text = cp.client().request_text(request).await?;
    Ok(metrics::sum(
        &text,
        "apiserver_request_total",
        Some("resource=\"tokenreviews\""),
    ))
}

fn reviews(webhook: &Webhook, result: &'static str) -> u64 {
    use faultline_webhook::controller::metrics::ResultLabel;
    webhook
        .controller_metrics
        .token_reviews
        .reviews
        .get_or_create(&ResultLabel { result })
        .get()
}

fn cache_hits(webhook: &Webhook, result: &'static str) -> u64 {
    use faultline_webhook::controller::metrics::ResultLabel;
    webhook
        .controller_metrics
        .token_reviews
        .cache_hits
        .get_or_create(&ResultLabel { result })
        .get()
}

fn all_reviews(webhook: &Webhook) -> u64 {
    ["authenticated", "rejected", "error"]
        .into_iter()
        .map(|r| reviews(webhook, r))
        .sum()
}

/// Runs `requests` logins, 32 at a time; returns the answers.
async fn storm(
    http: &reqwest::Client,
    port: u16,
    tokens: Vec<String>,
) -> anyhow::Result<Vec<(u16, Option<u64>)>> {
    futures::stream::iter(tokens)
        .map(|t| async move { login(http, port, &t).await })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

#[tokio::test]
async fn a_storm_of_bad_tokens_costs_at_most_the_bounded_number_of_token_reviews()
-> anyhow::Result<()> {
    init_logs();
    // Its own API server: its TokenReview count must be ours alone.
    let Some(cp) = ControlPlane::start_or_skip().await else {
        return Ok(());
    };
    cp.create_namespace("faultline-system", &[]).await?;
    let certs = bundle();
    let limits = ReviewLimits {
        token_review_rate: 5.0,
        token_review_burst: 5,
        ..ReviewLimits::default()
    };
    let webhook = Webhook::start_with(&cp, &certs, 0, "storm", limits).await?;
    let http = https(&certs.ca_cert_pem)?;
    let before = apiserver_token_reviews(&cp).await?;

    // Not even shaped like a projected token: refused for free.
    let garbage: Vec<String> = (0..500)
        .map(|i| format!("garbage-{i}-{}", unique_name("t")))
        .collect();
    let answers = storm(&http, webhook.port, garbage).await?;
    ensure!(
        answers.iter().all(|(s, _)| *s == 401),
        "garbage: {answers:?}"
    );
    ensure!(
        all_reviews(&webhook) == 0,
        "garbage cost {} reviews",
        all_reviews(&webhook)
    );

    // Shaped right, signed wrong: only the rate gets through.
    let started = Instant::now();
    let answers = storm(&http, webhook.port, (0..300).map(forged).collect()).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let sent = all_reviews(&webhook);
    let bound = 5 + (5.0 * elapsed).ceil() as u64 + 1;
    println!(
        "forged-token storm: 300 logins in {elapsed:.1}s, {sent} TokenReviews (bound {bound})"
    );
    ensure!(
        sent >= 5 && sent <= bound,
        "{sent} TokenReviews, bound {bound}"
    );
    let refused = answers.iter().filter(|(s, _)| *s == 401).count() as u64;
    ensure!(
        refused == sent,
        "every reviewed forgery is a 401: {refused} vs {sent}"
    );
    let limited: Vec<u64> = answers
        .iter()
        .filter(|(s, _)| *s == 429)
        .map(|(_, retry)| retry.context("a 429 without Retry-After"))
        .collect::<anyhow::Result<_>>()?;
    ensure!(limited.len() as u64 + sent == 300, "answers: {answers:?}");
    let (min, max) = (limited.iter().min().copied(), limited.iter().max().copied());
    ensure!(
        min >= Some(1) && max >= Some(10),
        "Retry-After spread {min:?}..{max:?}"
    );

    // The API server saw exactly those reviews.
    let after = apiserver_token_reviews(&cp).await?;
    ensure!(
        (after - before) as u64 == sent,
        "the API server counted {} TokenReviews, the controller {sent}",
        after - before
    );
    webhook.stop().await;
    Ok(())
}

/// A pod with the injected label (nothing runs it) and a token bound to it.
async fn bound_pod(cp: &ControlPlane, ns: &str, name: &str) -> anyhow::Result<(Pod, String)> {
    let mut p = pod(name);
    p.metadata.labels = Some([(INJECTED_LABEL.to_string(), "true".to_string())].into());
    let created = Api::<Pod>::namespaced(cp.client(), ns)
        .create(&PostParams::default(), &p)
        .await?;
    let token = cp.pod_token(ns, name, "default", "faultline").await?;
    Ok((created, token))
}

#[tokio::test]
async fn a_valid_tokens_second_stream_costs_no_second_token_review() -> anyhow::Result<()> {
    init_logs();
    let Some(cp) = ControlPlane::shared_or_skip().await else {
        return Ok(());
    };
    let ns = unique_name("cache");
    cp.create_namespace(&ns, &[]).await?;
    let (_, token) = bound_pod(cp, &ns, "web-0").await?;
    let certs = bundle();
    let webhook = Webhook::start(cp, &certs, 0, "cache").await?;
    let http = https(&certs.ca_cert_pem)?;
    ensure!(login(&http, webhook.port, &token).await?.0 == 200);
    ensure!(login(&http, webhook.port, &token).await?.0 == 200);
    ensure!(login(&http, webhook.port, &token).await?.0 == 200);
    ensure!(
        reviews(&webhook, "authenticated") == 1 && cache_hits(&webhook, "authenticated") == 2,
        "reviews {} cache hits {}",
        reviews(&webhook, "authenticated"),
        cache_hits(&webhook, "authenticated")
    );
    webhook.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_deleted_pods_token_is_refused_once_its_cached_acceptance_expires() -> anyhow::Result<()>
{
    init_logs();
    let Some(cp) = ControlPlane::shared_or_skip().await else {
        return Ok(());
    };
    let ns = unique_name("gone");
    cp.create_namespace(&ns, &[]).await?;
    let (_, token) = bound_pod(cp, &ns, "web-0").await?;
    let certs = bundle();
    let ttl = Duration::from_secs(5);
    let limits = ReviewLimits {
        token_cache_seconds: ttl.as_secs(),
        token_negative_cache_seconds: 1,
        ..ReviewLimits::default()
    };
    let webhook = Webhook::start_with(cp, &certs, 0, "gone", limits).await?;
    let http = https(&certs.ca_cert_pem)?;
    let accepted_at = Instant::now();
    ensure!(login(&http, webhook.port, &token).await?.0 == 200);
    Api::<Pod>::namespaced(cp.client(), &ns)
        .delete("web-0", &DeleteParams::default().grace_period(0))
        .await?;
    // The trade-off: within the TTL the remembered acceptance stands (the
    // stream is served nothing: the pod's policy slot is gone).
    let within = login(&http, webhook.port, &token).await?.0;
    if accepted_at.elapsed() < ttl {
        ensure!(within == 200, "within the TTL: {within}");
    }
    let refused = wait_for("the deleted pod's token to be refused", WAIT, || async {
        match login(&http, webhook.port, &token).await {
            Ok((401, _)) => Ok(accepted_at.elapsed()),
            Ok((status, _)) => Err(format!("status {status}")),
            Err(e) => Err(e.to_string()),
        }
    })
    .await?;
    println!("deleted pod's token refused {refused:?} after it was first accepted");
    ensure!(refused >= ttl, "refused after {refused:?}, before the TTL");
    ensure!(reviews(&webhook, "rejected") >= 1);
    webhook.stop().await;
    Ok(())
}
