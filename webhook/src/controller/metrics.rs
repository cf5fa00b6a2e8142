//! Controller metrics (prometheus-client). The webhook's `/metrics` handler
//! encodes whatever registry these are registered into.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// `result="authenticated|rejected|error"`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

/// `reason="..."`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

/// What authenticating policy streams costs the API server.
#[derive(Clone, Default, Debug)]
pub struct TokenReviewMetrics {
    /// TokenReviews sent, by result.
    pub reviews: Family<ResultLabel, Counter>,
    /// Answers served from the cache, by result.
    pub cache_hits: Family<ResultLabel, Counter>,
    /// Streams refused with Retry-After instead of a review, by limit.
    pub limited: Family<ReasonLabel, Counter>,
    /// Tokens refused from their claims alone, by reason.
    pub refused_unreviewed: Family<ReasonLabel, Counter>,
    /// Answers held in the cache.
    pub cache_entries: Gauge,
    /// TokenReviews awaiting the API server.
    pub in_flight: Gauge,
}

/// Cheap to clone: every field is an `Arc` inside.
#[derive(Clone, Default, Debug)]
pub struct Metrics {
    /// Open policy streams.
    pub connected: Gauge,
    /// Policy messages sent to proxies.
    pub versions_served: Counter,
    /// Distinct policy versions currently published.
    pub versions_published: Gauge,
    /// Streams refused (bad token, wrong pod).
    pub streams_refused: Counter,
    /// Reconcile passes run (full or incremental).
    pub reconciles: Counter,
    /// Policies removed because their duration / until passed.
    pub expired: Counter,
    /// Annotations that failed validation.
    pub invalid: Counter,
    /// 1 while this replica holds the writer Lease.
    pub leader: Gauge,
    /// Pods opted in to injection that run without the proxy (leader only).
    pub uninjected: Gauge,
    /// TokenReviews, their cache and limits.
    pub token_reviews: TokenReviewMetrics,
    /// Streams refused because this replica holds its maximum.
    pub streams_limited: Counter,
    /// Streams ended because their pod opened too many.
    pub streams_evicted: Counter,
}

impl Metrics {
    /// Register under the `faultline_controller` prefix.
    pub fn register(&self, registry: &mut Registry) {
        let sub = registry.sub_registry_with_prefix("faultline_controller");
        sub.register(
            "connected_proxies",
            "Open policy streams from proxies",
            self.connected.clone(),
        );
        sub.register(
            "policy_pushes",
            "Policy messages sent to proxies",
            self.versions_served.clone(),
        );
        sub.register(
            "policy_versions",
            "Distinct policy versions currently published",
            self.versions_published.clone(),
        );
        sub.register(
            "streams_refused",
            "Policy streams refused (authentication or identity)",
            self.streams_refused.clone(),
        );
        sub.register(
            "reconciles",
            "Policy reconcile passes run (full or incremental)",
            self.reconciles.clone(),
        );
        sub.register(
            "policies_expired",
            "Policies removed at the end of their duration",
            self.expired.clone(),
        );
        sub.register(
            "policies_invalid",
            "Fault annotations that failed validation",
            self.invalid.clone(),
        );
        sub.register(
            "leader",
            "1 while this replica holds the faultline-controller Lease",
            self.leader.clone(),
        );
        sub.register(
            "uninjected_pods",
            "Pods opted in to injection that run without the proxy (counted by the leader)",
            self.uninjected.clone(),
        );
        sub.register(
            "streams_limited",
            "Policy streams refused with Retry-After because this replica holds --max-policy-streams",
            self.streams_limited.clone(),
        );
        sub.register(
            "streams_evicted",
            "Policy streams ended because their pod opened more than --max-policy-streams-per-pod",
            self.streams_evicted.clone(),
        );
        let t = &self.token_reviews;
        sub.register(
            "token_reviews",
            "TokenReviews sent to the API server, by result",
            t.reviews.clone(),
        );
        sub.register(
            "token_review_cache_hits",
            "Policy stream tokens answered from the TokenReview cache, by result",
            t.cache_hits.clone(),
        );
        sub.register(
            "token_reviews_limited",
            "Policy streams refused with Retry-After because TokenReviews hit a limit (rate, in_flight)",
            t.limited.clone(),
        );
        sub.register(
            "tokens_refused_unreviewed",
            "Policy stream tokens refused from their claims alone, with no TokenReview, by reason",
            t.refused_unreviewed.clone(),
        );
        sub.register(
            "token_review_cache_entries",
            "TokenReview answers held in the cache",
            t.cache_entries.clone(),
        );
        sub.register(
            "token_reviews_in_flight",
            "TokenReviews awaiting the API server",
            t.in_flight.clone(),
        );
        for result in ["authenticated", "rejected", "error"] {
            let _ = t.reviews.get_or_create(&ResultLabel { result });
        }
        for result in ["authenticated", "rejected"] {
            let _ = t.cache_hits.get_or_create(&ResultLabel { result });
        }
        for reason in ["rate", "in_flight"] {
            let _ = t.limited.get_or_create(&ReasonLabel { reason });
        }
    }
}
