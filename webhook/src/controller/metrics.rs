//! Controller metrics (prometheus-client). The webhook's `/metrics` handler
//! encodes whatever registry these are registered into.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

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
    /// Reconciles run.
    pub reconciles: Counter,
    /// Policies removed because their duration / until passed.
    pub expired: Counter,
    /// Annotations that failed validation.
    pub invalid: Counter,
    /// 1 while this replica holds the writer Lease.
    pub leader: Gauge,
    /// Pods opted in to injection that run without the proxy (leader only).
    pub uninjected: Gauge,
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
            "Policy reconciles run",
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
    }
}
