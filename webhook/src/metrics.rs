//! Admission metrics (served on `/metrics` with whatever else registers in
//! the same registry, e.g. the controller):
//! - `faultline_webhook_admission_requests_total{kind, outcome}`
//! - `faultline_webhook_admission_duration_seconds{kind}` (server-side latency)
//! - `faultline_webhook_skipped_pods_total{reason}`
//! - `faultline_webhook_tls_reloads_total{outcome}`

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::admission::SkipReason;

type Labels2 = [(&'static str, &'static str); 2];
type Labels1 = [(&'static str, &'static str); 1];

/// Which endpoint handled a review.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReviewKind {
    Mutate,
    Validate,
}

impl ReviewKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mutate => "mutate",
            Self::Validate => "validate",
        }
    }
}

/// How a review ended; `error` is a review we could not read (HTTP 400).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Injected,
    Skipped,
    Allowed,
    Denied,
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Injected => "injected",
            Self::Skipped => "skipped",
            Self::Allowed => "allowed",
            Self::Denied => "denied",
            Self::Error => "error",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Metrics {
    requests: Family<Labels2, Counter>,
    duration: Family<Labels1, Histogram>,
    skipped: Family<Labels1, Counter>,
    tls_reloads: Family<Labels1, Counter>,
}

impl Metrics {
    /// Create the metrics and register them under `faultline_webhook_`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            requests: Family::default(),
            // 50µs .. ~0.8s: the p99 target is 1 ms, so resolution matters at the low end.
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.000_05, 2.0, 15))
            }),
            skipped: Family::default(),
            tls_reloads: Family::default(),
        };
        let sub = registry.sub_registry_with_prefix("faultline_webhook");
        sub.register(
            "admission_requests",
            "Admission reviews by endpoint and outcome",
            metrics.requests.clone(),
        );
        sub.register(
            "admission_duration_seconds",
            "Server-side time to answer an admission review",
            metrics.duration.clone(),
        );
        sub.register(
            "skipped_pods",
            "Pods that reached the webhook but were not injected, by reason",
            metrics.skipped.clone(),
        );
        sub.register(
            "tls_reloads",
            "Serving certificate reloads by outcome",
            metrics.tls_reloads.clone(),
        );
        for reason in SkipReason::ALL {
            let _ = metrics
                .skipped
                .get_or_create(&[("reason", reason.as_str())]);
        }
        metrics
    }

    pub fn observe(&self, kind: ReviewKind, outcome: Outcome, seconds: f64) {
        self.requests
            .get_or_create(&[("kind", kind.as_str()), ("outcome", outcome.as_str())])
            .inc();
        self.duration
            .get_or_create(&[("kind", kind.as_str())])
            .observe(seconds);
    }

    pub fn skipped(&self, reason: SkipReason) {
        self.skipped
            .get_or_create(&[("reason", reason.as_str())])
            .inc();
    }

    pub fn tls_reload(&self, ok: bool) {
        self.tls_reloads
            .get_or_create(&[("outcome", if ok { "ok" } else { "error" })])
            .inc();
    }
}
