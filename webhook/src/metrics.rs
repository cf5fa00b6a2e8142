//! Admission metrics (served on `/metrics` with whatever else registers in
//! the same registry, e.g. the controller):
//! - `faultline_webhook_admission_requests_total{kind, outcome}`
//! - `faultline_webhook_admission_duration_seconds{kind}` (server-side latency)
//! - `faultline_webhook_skipped_pods_total{reason}`
//! - `faultline_webhook_injection_fallbacks_total{reason}` (injected with a
//!   default in place of what the pod asked for)
//! - `faultline_webhook_tls_reloads_total{outcome}`

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::admission::mutate::{Fallback, SkipReason};

/// Which endpoint handled a review.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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

/// Whether a serving certificate reload worked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReloadOutcome {
    Ok,
    Error,
}

impl ReloadOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error => "error",
        }
    }
}

// Label values in the usual lowercase Prometheus style.
macro_rules! label_value {
    ($($t:ty),*) => {$(
        impl EncodeLabelValue for $t {
            fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
                std::fmt::Write::write_str(encoder, self.as_str())
            }
        }
    )*};
}
label_value!(ReviewKind, Outcome, ReloadOutcome, SkipReason, Fallback);

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReviewLabels {
    kind: ReviewKind,
    outcome: Outcome,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KindLabels {
    kind: ReviewKind,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SkipLabels {
    reason: SkipReason,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FallbackLabels {
    reason: Fallback,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReloadLabels {
    outcome: ReloadOutcome,
}

#[derive(Clone, Debug)]
pub struct Metrics {
    requests: Family<ReviewLabels, Counter>,
    duration: Family<KindLabels, Histogram>,
    skipped: Family<SkipLabels, Counter>,
    fallbacks: Family<FallbackLabels, Counter>,
    tls_reloads: Family<ReloadLabels, Counter>,
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
            fallbacks: Family::default(),
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
            "injection_fallbacks",
            "Pods injected with a default in place of what they asked for, by reason",
            metrics.fallbacks.clone(),
        );
        sub.register(
            "tls_reloads",
            "Serving certificate reloads by outcome",
            metrics.tls_reloads.clone(),
        );
        for reason in SkipReason::ALL {
            let _ = metrics.skipped.get_or_create(&SkipLabels { reason });
        }
        for reason in Fallback::ALL {
            let _ = metrics.fallbacks.get_or_create(&FallbackLabels { reason });
        }
        metrics
    }

    pub fn observe(&self, kind: ReviewKind, outcome: Outcome, seconds: f64) {
        self.requests
            .get_or_create(&ReviewLabels { kind, outcome })
            .inc();
        self.duration
            .get_or_create(&KindLabels { kind })
            .observe(seconds);
    }

    pub fn skipped(&self, reason: SkipReason) {
        self.skipped.get_or_create(&SkipLabels { reason }).inc();
    }

    pub fn fallback(&self, reason: Fallback) {
        self.fallbacks
            .get_or_create(&FallbackLabels { reason })
            .inc();
    }

    pub fn tls_reload(&self, ok: bool) {
        self.tls_reloads
            .get_or_create(&ReloadLabels {
                outcome: if ok {
                    ReloadOutcome::Ok
                } else {
                    ReloadOutcome::Error
                },
            })
            .inc();
    }
}
