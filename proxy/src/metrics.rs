//! Prometheus metrics of the data plane, served as text on `/metrics`.
//!
//! One [`Metrics`] per proxy, shared by `Arc`; the families are cheap to
//! update from the hot path (atomic counters behind a read lock).
use std::sync::atomic::{AtomicI64, AtomicU64};

use std::fmt::Write as _;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Which listener a connection came in on (a label value: `inbound`,
/// `outbound`).
pub use faultline_policy::Direction;

/// What protocol detection decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Http1,
    Http2,
    Grpc,
    /// A raw stream that starts with a TLS ClientHello.
    Tls,
    Tcp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::Http2 => "http2",
            Protocol::Grpc => "grpc",
            Protocol::Tls => "tls",
            Protocol::Tcp => "tcp",
        }
    }
}

// Label values in the usual lowercase Prometheus style.
impl EncodeLabelValue for Protocol {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct TrafficLabels {
    pub direction: Direction,
    pub protocol: Protocol,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct DirectionLabels {
    pub direction: Direction,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct FaultLabels {
    pub rule: RuleName,
    pub kind: &'static str,
}

/// A rule's name as a label value: shares the compiled policy's string, so
/// counting a fault allocates nothing.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RuleName(pub std::sync::Arc<str>);

impl EncodeLabelValue for RuleName {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(&self.0)
    }
}

/// A body `patch` left as the upstream sent it, and why.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct PatchSkipLabels {
    pub rule: RuleName,
    pub reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RefusedLabels {
    pub rule: RuleName,
    pub reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RejectLabels {
    pub reason: &'static str,
}

/// DNS over `udp` or `tcp`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct TransportLabels {
    pub transport: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct PolicyLabels {
    pub version: String,
    pub source: String,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<TrafficLabels, Counter>,
    /// The part of `requests` the HTTP/1.1 relay carried verbatim.
    pub requests_relayed: Family<DirectionLabels, Counter>,
    pub connections: Family<TrafficLabels, Counter>,
    pub connections_active: Family<DirectionLabels, Gauge<i64, AtomicI64>>,
    pub connections_rejected: Family<RejectLabels, Counter>,
    pub connections_parked: Family<DirectionLabels, Gauge<i64, AtomicI64>>,
    pub resident_memory: Gauge<i64, AtomicI64>,
    pub faults: Family<FaultLabels, Counter>,
    pub header_faults_refused: Family<RefusedLabels, Counter>,
    pub upstream_latency: Family<TrafficLabels, Histogram>,
    pub upstream_connect_errors: Family<DirectionLabels, Counter>,
    pub bad_requests: Family<DirectionLabels, Counter>,
    pub policy_info: Family<PolicyLabels, Gauge<i64, AtomicI64>>,
    pub policy_connected: Gauge<i64, AtomicI64>,
    pub policy_reload_errors: Counter<u64, AtomicU64>,
    /// Bytes of response bodies held for a JSON merge patch; also the
    /// accounting that bounds them (`traffic::http::rewrite`).
    pub patch_buffered: Gauge<i64, AtomicI64>,
    pub patch_skipped: Family<PatchSkipLabels, Counter>,
    pub dns: DnsMetrics,
}

/// The DNS listener's series (`faultline_dns_*`).
#[derive(Default)]
pub struct DnsMetrics {
    pub queries: Family<TransportLabels, Counter>,
    pub in_flight: Gauge<i64, AtomicI64>,
    pub rejected: Family<RejectLabels, Counter>,
    pub upstream_errors: Family<RejectLabels, Counter>,
    pub tcp_connections: Gauge<i64, AtomicI64>,
}

impl DnsMetrics {
    fn register(&self, registry: &mut Registry) {
        let dns = registry.sub_registry_with_prefix("dns");
        dns.register(
            "queries",
            "DNS queries received from the pod, by transport",
            self.queries.clone(),
        );
        dns.register(
            "queries_in_flight",
            "DNS queries being faulted or forwarded",
            self.in_flight.clone(),
        );
        dns.register(
            "queries_rejected",
            "DNS queries or connections dropped at a bound (in_flight, too_large, tcp_connections)",
            self.rejected.clone(),
        );
        dns.register(
            "upstream_errors",
            "DNS queries the pod's resolver did not answer (timeout, io)",
            self.upstream_errors.clone(),
        );
        dns.register(
            "tcp_connections",
            "DNS-over-TCP connections open",
            self.tcp_connections.clone(),
        );
    }

    pub fn reject(&self, reason: &'static str) {
        self.rejected.get_or_create(&RejectLabels { reason }).inc();
    }

    pub fn upstream_error(&self, reason: &'static str) {
        self.upstream_errors
            .get_or_create(&RejectLabels { reason })
            .inc();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("faultline");
        let requests = Family::<TrafficLabels, Counter>::default();
        registry.register(
            "requests",
            "HTTP requests and gRPC calls proxied",
            requests.clone(),
        );
        let requests_relayed = Family::<DirectionLabels, Counter>::default();
        registry.register(
            "requests_relayed",
            "HTTP/1.1 and HTTP/2 requests relayed verbatim by a relay (also counted in requests)",
            requests_relayed.clone(),
        );
        let connections = Family::<TrafficLabels, Counter>::default();
        registry.register("connections", "Connections accepted", connections.clone());
        let connections_active = Family::<DirectionLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "connections_active",
            "Connections currently open",
            connections_active.clone(),
        );
        let connections_rejected = Family::<RejectLabels, Counter>::default();
        registry.register(
            "connections_rejected",
            "Connections closed on accept (over the connection limit, draining)",
            connections_rejected.clone(),
        );
        let connections_parked = Family::<DirectionLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "connections_parked",
            "Idle keep-alive HTTP/1.1 connections holding no buffers, waiting for the next request",
            connections_parked.clone(),
        );
        let resident_memory = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory of the proxy process (VmRSS), read when scraped",
            resident_memory.clone(),
        );
        let faults = Family::<FaultLabels, Counter>::default();
        registry.register(
            "faults_injected",
            "Faults injected, by rule and kind",
            faults.clone(),
        );
        let header_faults_refused = Family::<RefusedLabels, Counter>::default();
        registry.register(
            "header_faults_refused",
            "Faults requests asked for with x-faultline-* headers that their fromHeaders rule refused, by rule and reason",
            header_faults_refused.clone(),
        );
        let upstream_latency = Family::<TrafficLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ])
        });
        registry.register(
            "upstream_latency_seconds",
            "Time from forwarding a request to the upstream's response headers",
            upstream_latency.clone(),
        );
        let upstream_connect_errors = Family::<DirectionLabels, Counter>::default();
        registry.register(
            "upstream_connect_errors",
            "Failed connections to upstreams (HTTP answered 502, TCP closed)",
            upstream_connect_errors.clone(),
        );
        let bad_requests = Family::<DirectionLabels, Counter>::default();
        registry.register(
            "bad_requests",
            "Malformed HTTP from clients (answered 400/431 or closed)",
            bad_requests.clone(),
        );
        let policy_info = Family::<PolicyLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "policy_info",
            "The active policy: version and source (value is always 1)",
            policy_info.clone(),
        );
        let policy_connected = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "policy_connected",
            "1 while the controller policy stream is connected",
            policy_connected.clone(),
        );
        let policy_reload_errors = Counter::<u64, AtomicU64>::default();
        registry.register(
            "policy_reload_errors",
            "Policy files that failed to parse or validate (the last good policy stays)",
            policy_reload_errors.clone(),
        );
        let dns = DnsMetrics::default();
        dns.register(&mut registry);
        let patch_buffered = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "response_patch_buffered_bytes",
            "Bytes of upstream response bodies held to apply a JSON merge patch",
            patch_buffered.clone(),
        );
        let patch_skipped = Family::<PatchSkipLabels, Counter>::default();
        registry.register(
            "response_patch_skipped",
            "Response bodies a patch rule passed unchanged (compressed, not JSON, too large, budget spent)",
            patch_skipped.clone(),
        );
        Metrics {
            dns,
            registry,
            patch_buffered,
            patch_skipped,
            requests,
            requests_relayed,
            connections,
            connections_active,
            connections_rejected,
            connections_parked,
            resident_memory,
            faults,
            header_faults_refused,
            upstream_latency,
            upstream_connect_errors,
            bad_requests,
            policy_info,
            policy_connected,
            policy_reload_errors,
        }
    }

    /// The proxy could not connect to where a connection or request goes.
    pub fn upstream_connect_error(&self, direction: Direction) {
        self.upstream_connect_errors
            .get_or_create(&DirectionLabels { direction })
            .inc();
    }

    pub fn fault(&self, rule: &std::sync::Arc<str>, kind: &'static str) {
        self.faults
            .get_or_create(&FaultLabels {
                rule: RuleName(std::sync::Arc::clone(rule)),
                kind,
            })
            .inc();
    }

    /// A `fromHeaders` rule refused what a request asked for.
    pub fn header_fault_refused(&self, rule: &std::sync::Arc<str>, reason: &'static str) {
        self.header_faults_refused
            .get_or_create(&RefusedLabels {
                rule: RuleName(std::sync::Arc::clone(rule)),
                reason,
            })
            .inc();
    }

    /// Replaces the policy info series with the new version and source.
    pub fn set_policy(&self, version: &str, source: &str) {
        self.policy_info.clear();
        self.policy_info
            .get_or_create(&PolicyLabels {
                version: version.to_owned(),
                source: source.to_owned(),
            })
            .set(1);
    }

    /// Reads the process's resident memory into its gauge (left as it was
    /// where `/proc` cannot be read).
    pub fn refresh_process(&self) {
        if let Some(bytes) = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| resident_bytes(&status))
        {
            self.resident_memory.set(bytes);
        }
    }

    /// Prometheus text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail; an error here would be a bug in
        // a metric's encoder, and an empty page is the safe answer.
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// `VmRSS` of a `/proc/<pid>/status` text, in bytes.
pub fn resident_bytes(status: &str) -> Option<i64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kib: i64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resident_bytes_are_vmrss_in_bytes() {
        let status =
            "Name:\tfaultline-proxy\nVmHWM:\t   9000 kB\nVmRSS:\t    6012 kB\nThreads:\t5\n";
        assert_eq!(resident_bytes(status), Some(6012 * 1024));
        assert_eq!(resident_bytes("Name:\tx\n"), None);
        assert_eq!(resident_bytes("VmRSS:\t many kB\n"), None);
    }

    #[test]
    fn the_gauge_reads_this_process() {
        let metrics = Metrics::new();
        metrics.refresh_process();
        assert!(metrics.resident_memory.get() > 1024 * 1024);
        assert!(
            metrics
                .encode()
                .contains("faultline_process_resident_memory_bytes ")
        );
    }
}
