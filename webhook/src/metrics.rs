//! Admission metrics (served on `/metrics` with whatever else registers in
//! the same registry, e.g. the controller):
//! - `faultline_webhook_admission_requests_total{kind, outcome}`
//! - `faultline_webhook_admission_duration_seconds{kind}` (server-side latency)
//! - `faultline_webhook_skipped_pods_total{reason}`
//! - `faultline_webhook_injection_fallbacks_total{reason}` (injected with a
//!   default in place of what the pod asked for)
//! - `faultline_webhook_tls_reloads_total{outcome}`
//! - `faultline_webhook_reviews_in_flight`, `faultline_webhook_reviews_waiting`,
//!   `faultline_webhook_reviews_rejected_total{reason}`,
//!   `faultline_webhook_review_body_bytes` (the review bounds, `admission/intake.rs`)
//! - `faultline_webhook_open_connections` ([`ConnMetrics`]),
//!   `faultline_webhook_connection_cap_reached_total`,
//!   `faultline_webhook_connection_timeouts_total{phase}` (the server's bounds)

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
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
/// Why a review was answered 429 before it was decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// Every decode slot stayed taken for the whole wait.
    Busy,
    /// The review-body memory budget stayed spent for the whole wait.
    BodyBudget,
    /// Too many reviews were waiting already.
    QueueFull,
}

impl RejectReason {
    pub const ALL: [Self; 3] = [Self::Busy, Self::BodyBudget, Self::QueueFull];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Busy => "busy",
            Self::BodyBudget => "body_budget",
            Self::QueueFull => "queue_full",
        }
    }
}

/// Which deadline closed a connection or ended a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// The TLS handshake did not finish in time.
    Handshake,
    /// No request arrived after the handshake.
    FirstRequest,
    /// An HTTP/1 request's headers did not arrive in time.
    Headers,
    /// A request body did not arrive in full in time.
    Body,
    /// No request in flight for too long after the last one.
    Idle,
}

impl Phase {
    pub const ALL: [Self; 5] = [
        Self::Handshake,
        Self::FirstRequest,
        Self::Headers,
        Self::Body,
        Self::Idle,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Handshake => "handshake",
            Self::FirstRequest => "first_request",
            Self::Headers => "headers",
            Self::Body => "body",
            Self::Idle => "idle",
        }
    }
}

label_value!(
    ReviewKind,
    Outcome,
    ReloadOutcome,
    SkipReason,
    Fallback,
    RejectReason,
    Phase
);

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

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RejectLabels {
    reason: RejectReason,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PhaseLabels {
    phase: Phase,
}

#[derive(Clone, Debug)]
pub struct Metrics {
    requests: Family<ReviewLabels, Counter>,
    duration: Family<KindLabels, Histogram>,
    skipped: Family<SkipLabels, Counter>,
    fallbacks: Family<FallbackLabels, Counter>,
    tls_reloads: Family<ReloadLabels, Counter>,
    /// Reviews holding a decode slot.
    pub reviews_in_flight: Gauge,
    /// Reviews waiting for a decode slot or for body budget.
    pub reviews_waiting: Gauge,
    rejected: Family<RejectLabels, Counter>,
    /// Review body bytes buffered right now (the budget in use).
    pub body_bytes: Gauge,
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
            reviews_in_flight: Gauge::default(),
            reviews_waiting: Gauge::default(),
            rejected: Family::default(),
            body_bytes: Gauge::default(),
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
        sub.register(
            "reviews_in_flight",
            "Admission reviews being decoded and decided",
            metrics.reviews_in_flight.clone(),
        );
        sub.register(
            "reviews_waiting",
            "Admission reviews waiting for a decode slot or body budget",
            metrics.reviews_waiting.clone(),
        );
        sub.register(
            "reviews_rejected",
            "Admission reviews answered 429 before decoding, by reason",
            metrics.rejected.clone(),
        );
        sub.register(
            "review_body_bytes",
            "Admission review body bytes buffered now",
            metrics.body_bytes.clone(),
        );
        for reason in SkipReason::ALL {
            let _ = metrics.skipped.get_or_create(&SkipLabels { reason });
        }
        for reason in Fallback::ALL {
            let _ = metrics.fallbacks.get_or_create(&FallbackLabels { reason });
        }
        for reason in RejectReason::ALL {
            let _ = metrics.rejected.get_or_create(&RejectLabels { reason });
        }
        metrics
    }

    pub fn rejected(&self, reason: RejectReason) {
        self.rejected.get_or_create(&RejectLabels { reason }).inc();
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

/// The server's connection bounds (`server.rs`). [`Default`] is unregistered,
/// for servers whose metrics nobody scrapes.
#[derive(Clone, Debug, Default)]
pub struct ConnMetrics {
    /// Connections holding a slot (from accept to close).
    pub open: Gauge,
    /// Times every slot was taken: accepting paused, new connections waited
    /// in the listen backlog.
    pub cap_reached: Counter,
    timeouts: Family<PhaseLabels, Counter>,
}

impl ConnMetrics {
    /// Create the metrics and register them under `faultline_webhook_`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        let sub = registry.sub_registry_with_prefix("faultline_webhook");
        sub.register(
            "open_connections",
            "Client connections open (TLS handshake included)",
            metrics.open.clone(),
        );
        sub.register(
            "connection_cap_reached",
            "Times every connection slot was taken (new connections wait in the listen backlog)",
            metrics.cap_reached.clone(),
        );
        sub.register(
            "connection_timeouts",
            "Connections closed or requests ended by a deadline, by phase",
            metrics.timeouts.clone(),
        );
        for phase in Phase::ALL {
            let _ = metrics.timeouts.get_or_create(&PhaseLabels { phase });
        }
        metrics
    }

    pub fn timeout(&self, phase: Phase) {
        self.timeouts.get_or_create(&PhaseLabels { phase }).inc();
    }
}

/// Lets a warning through at most once per interval, so a flood of hostile
/// clients hitting a bound cannot flood the log; the lines it holds back
/// are counted and reported with the next one.
#[derive(Clone, Debug)]
pub struct WarnEvery {
    interval: std::time::Duration,
    state: std::sync::Arc<std::sync::Mutex<WarnState>>,
}

#[derive(Debug, Default)]
struct WarnState {
    last: Option<std::time::Instant>,
    suppressed: u64,
}

impl WarnEvery {
    pub fn new(interval: std::time::Duration) -> Self {
        Self {
            interval,
            state: Default::default(),
        }
    }

    /// `Some(n)` when a line may be written now, `n` being how many were
    /// held back since the last one; `None` to stay quiet.
    pub fn check(&self) -> Option<u64> {
        let now = std::time::Instant::now();
        let Ok(mut state) = self.state.lock() else {
            return Some(0);
        };
        let due = state
            .last
            .is_none_or(|last| now.duration_since(last) >= self.interval);
        if due {
            state.last = Some(now);
            Some(std::mem::take(&mut state.suppressed))
        } else {
            state.suppressed += 1;
            None
        }
    }
}

impl Default for WarnEvery {
    fn default() -> Self {
        Self::new(std::time::Duration::from_secs(10))
    }
}
