//! The sidecar contract: every name, port, UID, environment variable and
//! `faultline-proxy init` flag that the webhook writes into a pod and the
//! proxy reads back. Each value is defined here once; both binaries and the
//! tests use these constants, so they cannot drift apart.
//!
//! The labels, annotations, container names and ports are also the contract
//! with users (they appear in `kubectl` output and in manifests): they never
//! change.
use std::fmt;

pub use crate::model::PortRange;

// Labels and annotations.

/// Namespace label whose value `enabled` opts every pod of the namespace in.
pub const NAMESPACE_INJECTION_LABEL: &str = "faultline.dev/injection";
/// Pod label: `true` opts a pod in (outside labelled namespaces), `false` opts out.
pub const INJECT_LABEL: &str = "faultline.dev/inject";
/// Label put on injected pods so the controller can watch only those.
pub const INJECTED_LABEL: &str = "faultline.dev/injected";
/// Annotation recording what was injected (JSON: version, containers, volumes).
pub const STATUS_ANNOTATION: &str = "faultline.dev/status";
/// The fault policy (workload, pod template or pod).
pub const FAULTS_ANNOTATION: &str = "faultline.dev/faults";
/// When the controller first saw a policy version (`<RFC 3339>;<version>`),
/// so that `duration` counts from then across restarts.
pub const SEEN_AT_ANNOTATION: &str = "faultline.dev/faults-seen-at";
/// Per-pod overrides.
pub const EXCLUDE_INBOUND_PORTS_ANNOTATION: &str = "faultline.dev/exclude-inbound-ports";
pub const EXCLUDE_OUTBOUND_PORTS_ANNOTATION: &str = "faultline.dev/exclude-outbound-ports";
pub const EXCLUDE_OUTBOUND_CIDRS_ANNOTATION: &str = "faultline.dev/exclude-outbound-cidrs";
pub const PROXY_CPU_ANNOTATION: &str = "faultline.dev/proxy-cpu";
pub const PROXY_MEMORY_ANNOTATION: &str = "faultline.dev/proxy-memory";
pub const NATIVE_SIDECAR_ANNOTATION: &str = "faultline.dev/native-sidecar";
/// `"true"`: the pod's DNS queries go through the proxy (off by default).
pub const CAPTURE_DNS_ANNOTATION: &str = "faultline.dev/capture-dns";

// Containers and the proxy's identity.

pub const INIT_CONTAINER_NAME: &str = "faultline-init";
pub const PROXY_CONTAINER_NAME: &str = "faultline-proxy";
/// The projected token the proxy presents to the controller.
pub const TOKEN_VOLUME_NAME: &str = "faultline-token";
/// Scratch `/run` for the init container: iptables-legacy takes a lock file
/// there and the init container's root filesystem is read-only.
pub const XTABLES_VOLUME_NAME: &str = "faultline-xtables";
/// Every container name injection adds: a pod that already uses one of
/// them for something else cannot be injected.
pub const INJECTED_CONTAINERS: [&str; 2] = [INIT_CONTAINER_NAME, PROXY_CONTAINER_NAME];
/// Every volume name injection adds.
pub const INJECTED_VOLUMES: [&str; 2] = [TOKEN_VOLUME_NAME, XTABLES_VOLUME_NAME];
/// The proxy binary in the image (both containers run it).
pub const PROXY_BINARY: &str = "faultline-proxy";
/// The proxy runs as this user and group; its own traffic is never redirected.
pub const PROXY_UID: u32 = 15400;
pub const PROXY_GID: u32 = 15400;

// Ports.

/// The proxy's admin server (/healthz /readyz /metrics /policy); never redirected.
pub const ADMIN_PORT: u16 = 15400;
/// Where iptables sends the pod's outbound TCP.
pub const OUTBOUND_CAPTURE_PORT: u16 = 15401;
/// Where iptables sends the pod's inbound TCP.
pub const INBOUND_CAPTURE_PORT: u16 = 15406;
/// Where iptables sends the pod's DNS queries (UDP and TCP port 53), on
/// loopback, when the pod opted in with [`CAPTURE_DNS_ANNOTATION`].
pub const DNS_CAPTURE_PORT: u16 = 15402;

/// The admin path where the proxy answers an app's rewritten `tcpSocket`
/// probe: `/probe/tcp/<port>` connects to the app's port on loopback.
pub const TCP_PROBE_PATH: &str = "/probe/tcp/";

// The controller stream's credentials.

/// Where the projected service account token is mounted in the proxy.
pub const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/faultline";
/// The token the proxy presents to the controller.
pub const TOKEN_FILE: &str = "/var/run/secrets/faultline/token";
/// Audience of that token; the controller's TokenReview asks for it.
pub const TOKEN_AUDIENCE: &str = "faultline";

/// The `FAULTLINE_*` environment variables the proxy reads (the webhook
/// sets the ones marked *injected*; people set the others).
pub mod env {
    pub const ADMIN_ADDR: &str = "FAULTLINE_ADMIN_ADDR";
    pub const INBOUND_ADDR: &str = "FAULTLINE_INBOUND_ADDR";
    pub const OUTBOUND_ADDR: &str = "FAULTLINE_OUTBOUND_ADDR";
    pub const LISTEN: &str = "FAULTLINE_LISTEN";
    pub const UPSTREAM: &str = "FAULTLINE_UPSTREAM";
    pub const FAULTS_FILE: &str = "FAULTLINE_FAULTS_FILE";
    /// Injected: the controller's policy stream.
    pub const CONTROLLER_URL: &str = "FAULTLINE_CONTROLLER_URL";
    /// Injected: [`super::TOKEN_FILE`].
    pub const TOKEN_FILE: &str = "FAULTLINE_TOKEN_FILE";
    /// Injected when the webhook knows the controller's CA.
    pub const CA_PEM: &str = "FAULTLINE_CA_PEM";
    pub const CA_FILE: &str = "FAULTLINE_CA_FILE";
    /// Injected from the downward API.
    pub const POD_NAME: &str = "FAULTLINE_POD_NAME";
    pub const POD_NAMESPACE: &str = "FAULTLINE_POD_NAMESPACE";
    pub const POD_IP: &str = "FAULTLINE_POD_IP";
    pub const SERVICE_ACCOUNT: &str = "FAULTLINE_SERVICE_ACCOUNT";
    /// Log filter (both binaries).
    pub const LOG: &str = "FAULTLINE_LOG";
    /// `plain` or `json` (both binaries; injected as `json`).
    pub const LOG_FORMAT: &str = "FAULTLINE_LOG_FORMAT";
    pub const DRAIN_SECONDS: &str = "FAULTLINE_DRAIN_SECONDS";
    pub const MAX_CONNECTIONS: &str = "FAULTLINE_MAX_CONNECTIONS";
    pub const DETECT_TIMEOUT_MS: &str = "FAULTLINE_DETECT_TIMEOUT_MS";
    pub const READY_GRACE_SECONDS: &str = "FAULTLINE_READY_GRACE_SECONDS";
    pub const WORKERS: &str = "FAULTLINE_WORKERS";
    /// Injected: app ports whose `tcpSocket` probes the webhook pointed at
    /// the proxy's `/probe/tcp/<port>`.
    pub const PROBE_PORTS: &str = "FAULTLINE_PROBE_PORTS";
    /// Injected: the app's listening ports; after SIGTERM the proxy carries
    /// the app's traffic until they all refuse connections.
    pub const APP_PORTS: &str = "FAULTLINE_APP_PORTS";
    /// Injected: the longest the proxy keeps carrying the app's traffic
    /// after SIGTERM (the pod's grace period less the drain).
    pub const WIND_DOWN_SECONDS: &str = "FAULTLINE_WIND_DOWN_SECONDS";
    /// The standalone proxy's control API (`PUT`/`DELETE /policy`).
    pub const CONTROL: &str = "FAULTLINE_CONTROL";
    pub const CONTROL_TOKEN: &str = "FAULTLINE_CONTROL_TOKEN";
    /// Injected where DNS is captured: the DNS listener's address
    /// (UDP and TCP); unset, the proxy has no DNS listener.
    pub const DNS_ADDR: &str = "FAULTLINE_DNS_ADDR";
    /// Where clean DNS queries go (default: the first nameserver of
    /// `/etc/resolv.conf`).
    pub const DNS_UPSTREAM: &str = "FAULTLINE_DNS_UPSTREAM";
}

/// The flags of `faultline-proxy init` (without the leading `--`): the
/// webhook writes the `faultline-init` command line with them.
pub mod init_flag {
    pub const INBOUND_CAPTURE_PORT: &str = "inbound-capture-port";
    pub const OUTBOUND_CAPTURE_PORT: &str = "outbound-capture-port";
    pub const PROXY_UID: &str = "proxy-uid";
    pub const PROXY_GID: &str = "proxy-gid";
    pub const ADMIN_PORT: &str = "admin-port";
    pub const INCLUDE_INBOUND_PORTS: &str = "include-inbound-ports";
    pub const EXCLUDE_INBOUND_PORTS: &str = "exclude-inbound-ports";
    pub const EXCLUDE_OUTBOUND_PORTS: &str = "exclude-outbound-ports";
    pub const EXCLUDE_OUTBOUND_CIDRS: &str = "exclude-outbound-cidrs";
    /// Redirect the pod's DNS (UDP and TCP port 53) to the DNS capture port.
    pub const CAPTURE_DNS: &str = "capture-dns";
    pub const DNS_CAPTURE_PORT: &str = "dns-capture-port";
}

/// The flags of `faultline-proxy wait-ready`, the classic sidecar's
/// postStart hook.
pub mod wait_flag {
    pub const ADMIN_PORT: &str = "admin-port";
    pub const TIMEOUT_SECONDS: &str = "timeout-seconds";
}

/// Which inbound ports `init` redirects to the proxy
/// (`--include-inbound-ports`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundPorts {
    /// `*`: every port except the exclusions.
    All,
    /// Only these (an empty list captures no inbound traffic at all).
    Only(Vec<PortRange>),
}

impl fmt::Display for InboundPorts {
    /// The flag's value: `*`, or a comma-separated list like `8080,9000-9010`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InboundPorts::All => f.write_str("*"),
            InboundPorts::Only(ranges) => f.write_str(&join(ranges)),
        }
    }
}

/// Comma-joined, as `faultline-proxy init` expects LIST arguments.
pub fn join<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbound_ports_print_as_the_flag_value() {
        assert_eq!(InboundPorts::All.to_string(), "*");
        let only = InboundPorts::Only(vec![PortRange::single(80), PortRange::new(9000, 9010)]);
        assert_eq!(only.to_string(), "80,9000-9010");
        assert_eq!(InboundPorts::Only(vec![]).to_string(), "");
    }
}
