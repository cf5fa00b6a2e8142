//! The review bounds against a real kube-apiserver: a review refused with
//! 429 and `Retry-After` while every decode slot is held is retried by the
//! API server within the webhook's timeout, so the pod is still injected
//! (any other failure would fall through `failurePolicy: Ignore` and the
//! pod would start without its sidecar).

use std::sync::Arc;
use std::time::Duration;

use anyhow::ensure;
use axum::body::Body;
use axum::http::HeaderMap;
use faultline_e2e::webhook::{
    RunningWebhook, SCOPE_LABEL, create_pod_with_warnings, is_injected, plain_pod, register_scoped,
    wait_until_injecting,
};
use faultline_e2e::{ControlPlane, unique_name};
use faultline_test_support::metrics;
use faultline_test_support::wait::eventually;
use faultline_webhook::Config;
use faultline_webhook::admission::{
    self, AdmissionState, DEFAULT_MAX_BODY_BYTES, ReviewGate, ReviewLimits,
};
use faultline_webhook::config::NAMESPACE_INJECTION_LABEL;
use faultline_webhook::metrics::Metrics;
use faultline_webhook::server::{self, Readiness};
use prometheus_client::registry::Registry;

const BUSY: &str = "faultline_webhook_reviews_rejected_total{reason=\"busy\"}";

#[tokio::test]
async fn a_review_answered_429_is_retried_by_the_api_server_and_the_pod_injected()
-> anyhow::Result<()> {
    let Some(cp) = ControlPlane::shared_or_skip().await else {
        return Ok(());
    };
    let client = cp.client();
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    // One slot and a short wait: while the test holds the slot, every
    // review is answered 429 within 200 ms.
    let gate = ReviewGate::new(ReviewLimits {
        max_concurrent: 1,
        body_budget_bytes: DEFAULT_MAX_BODY_BYTES,
        wait: Duration::from_millis(200),
    });
    let state = AdmissionState {
        reviews: gate.clone(),
        ..AdmissionState::new(Config::default(), metrics.clone(), DEFAULT_MAX_BODY_BYTES)
    };
    let readiness = Readiness::default();
    readiness.set(true);
    let router = admission::router(state).merge(server::ops_router(Arc::new(registry), readiness));
    let webhook = RunningWebhook::start_router(router).await?;
    let scope = unique_name("wh-429");
    let registration = register_scoped(&client, &scope, &webhook).await?;
    let namespace = unique_name(&scope);
    cp.create_namespace(
        &namespace,
        &[
            (SCOPE_LABEL, scope.as_str()),
            (NAMESPACE_INJECTION_LABEL, "enabled"),
        ],
    )
    .await?;
    wait_until_injecting(&client, &namespace).await?;

    let held = gate
        .admit(&HeaderMap::new(), Body::from("{}"), 1024, &metrics)
        .await?;
    let creation = tokio::spawn({
        let (client, namespace) = (client.clone(), namespace.clone());
        async move { create_pod_with_warnings(&client, &namespace, &plain_pod("retried")).await }
    });
    eventually(
        "the API server's review to be refused",
        Duration::from_secs(5),
        async || {
            let text = webhook.metrics().await.unwrap_or_default();
            metrics::value(&text, BUSY) >= 1.0
        },
    )
    .await;
    // The slot frees before the API server's retry (after Retry-After: 1 s).
    drop(held);
    let (pod, _) = creation.await??;
    ensure!(
        is_injected(&pod),
        "the pod was admitted without the sidecar: the 429 was not retried"
    );

    registration.delete(&client).await?;
    webhook.stop().await?;
    cp.check_running()?;
    Ok(())
}
