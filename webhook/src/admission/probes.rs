//! `tcpSocket` probes on captured ports would lie: the kernel hands the
//! kubelet's connection to the proxy, which accepts it whether or not the app
//! listens. Such probes are rewritten to an `httpGet` on the proxy's admin
//! port, `/probe/tcp/<port>`, where the proxy connects to the app on
//! loopback (never captured) and answers 200 or 503. Timing fields stay as
//! the user wrote them, and the path says what is checked, so the injected
//! spec stays readable. `httpGet` probes need nothing: they reach the app
//! through the proxy and are never faulted (`kube-probe/` User-Agent).

use json_patch::jsonptr::PointerBuf;
use json_patch::{PatchOperation, ReplaceOperation};
use k8s_openapi::api::core::v1::{Container, PodSpec, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Value, json};

use crate::config::ADMIN_PORT;

/// The admin path the proxy answers probes on: `/probe/tcp/<port>`.
pub use faultline_policy::contract::TCP_PROBE_PATH;
/// A probe field of a container: its JSON name and how to read it.
type ProbeField = (&'static str, fn(&Container) -> Option<&Probe>);
const PROBES: [ProbeField; 3] = [
    ("livenessProbe", |c| c.liveness_probe.as_ref()),
    ("readinessProbe", |c| c.readiness_probe.as_ref()),
    ("startupProbe", |c| c.startup_probe.as_ref()),
];

/// The rewrites for the pod's app containers (indices as in the pod before
/// injection: apply these before inserting the sidecar), and the ports the
/// proxy must accept probe requests for.
pub fn rewrite_tcp_probes(
    spec: &PodSpec,
    captured: impl Fn(u16) -> bool,
) -> (Vec<PatchOperation>, Vec<u16>) {
    let mut ops = Vec::new();
    let mut ports = Vec::new();
    for (index, container) in spec.containers.iter().enumerate() {
        for (field, get) in PROBES {
            let Some(probe) = get(container) else {
                continue;
            };
            let Some(port) = tcp_port(container, probe).filter(|p| captured(*p)) else {
                continue;
            };
            let Some(rewritten) = as_admin_probe(probe, port) else {
                continue;
            };
            ops.push(PatchOperation::Replace(ReplaceOperation {
                path: PointerBuf::from_tokens(["spec", "containers", &index.to_string(), field]),
                value: rewritten,
            }));
            ports.push(port);
        }
    }
    ports.sort_unstable();
    ports.dedup();
    (ops, ports)
}

/// The probe's `tcpSocket` port (a named port resolved against the
/// container's ports), unless it names another host.
fn tcp_port(container: &Container, probe: &Probe) -> Option<u16> {
    let tcp = probe.tcp_socket.as_ref()?;
    if tcp.host.as_deref().is_some_and(|h| !h.is_empty()) {
        return None;
    }
    match &tcp.port {
        IntOrString::Int(p) => u16::try_from(*p).ok(),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok()),
    }
}

/// The same probe, checking `port` through the proxy's admin server.
fn as_admin_probe(probe: &Probe, port: u16) -> Option<Value> {
    let mut value = serde_json::to_value(probe).ok()?;
    let object = value.as_object_mut()?;
    object.remove("tcpSocket");
    object.insert(
        "httpGet".into(),
        json!({"path": format!("{TCP_PROBE_PATH}{port}"), "port": ADMIN_PORT, "scheme": "HTTP"}),
    );
    Some(value)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{ContainerPort, HTTPGetAction, TCPSocketAction};

    use super::*;

    fn tcp(port: IntOrString) -> Probe {
        Probe {
            tcp_socket: Some(TCPSocketAction { port, host: None }),
            period_seconds: Some(7),
            failure_threshold: Some(2),
            ..Default::default()
        }
    }

    fn pod(containers: Vec<Container>) -> PodSpec {
        PodSpec {
            containers,
            ..Default::default()
        }
    }

    #[test]
    fn tcp_probes_on_captured_ports_go_to_the_admin_port_keeping_their_timing() {
        let app = Container {
            name: "app".into(),
            ports: Some(vec![ContainerPort {
                container_port: 8080,
                name: Some("http".into()),
                ..Default::default()
            }]),
            liveness_probe: Some(tcp(IntOrString::String("http".into()))),
            readiness_probe: Some(tcp(IntOrString::Int(8080))),
            ..Default::default()
        };
        let (ops, ports) = rewrite_tcp_probes(&pod(vec![app]), |_| true);
        assert_eq!(ports, [8080]);
        assert_eq!(ops.len(), 2);
        let PatchOperation::Replace(op) = &ops[0] else {
            panic!("{ops:?}")
        };
        assert_eq!(op.path.to_string(), "/spec/containers/0/livenessProbe");
        assert_eq!(
            op.value,
            json!({"httpGet": {"path": "/probe/tcp/8080", "port": 15400, "scheme": "HTTP"},
                   "periodSeconds": 7, "failureThreshold": 2})
        );
    }

    #[test]
    fn other_probes_and_uncaptured_ports_are_left_alone() {
        let http = Probe {
            http_get: Some(HTTPGetAction {
                port: IntOrString::Int(8080),
                ..Default::default()
            }),
            ..Default::default()
        };
        let other_host = Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(5432),
                host: Some("db".into()),
            }),
            ..Default::default()
        };
        let app = Container {
            name: "app".into(),
            liveness_probe: Some(http),
            readiness_probe: Some(tcp(IntOrString::Int(9090))),
            startup_probe: Some(other_host),
            ..Default::default()
        };
        let unnamed = Container {
            name: "b".into(),
            liveness_probe: Some(tcp(IntOrString::String("missing".into()))),
            ..Default::default()
        };
        let (ops, ports) = rewrite_tcp_probes(&pod(vec![app, unnamed]), |p| p != 9090);
        assert!(ops.is_empty(), "{ops:?}");
        assert!(ports.is_empty());
    }
}
