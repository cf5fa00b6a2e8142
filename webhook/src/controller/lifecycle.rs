//! Pure decisions about a pod's life that the webhook alone cannot make:
//!
//! - **missed injection**: a pod that should carry the proxy (its namespace
//!   or its own label opts it in) runs without it, because it was created
//!   while the webhook was unavailable (`failurePolicy: Ignore` let it
//!   through) or before the namespace was labelled. Faults cannot reach it,
//!   so the controller says so with a `NotInjected` Warning Event on the pod.
//! - **app finished**: in the classic layout (API servers before 1.29) the
//!   proxy is an ordinary container, so a Job's pod would never complete
//!   once its app exits. When every app container of a pod that is not
//!   restarted (`restartPolicy: Never`, or `OnFailure` after a clean exit)
//!   has terminated, the controller tells that pod's proxy to finish, and
//!   the proxy drains and exits 0. Likewise for a pod being deleted, whatever
//!   its restart policy: once its app containers have exited, the proxy,
//!   which kept carrying their traffic while they wound down, can go.
//!   Native sidecars need none of this: the kubelet stops them itself.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

use faultline_policy::contract::{
    INJECTED_CONTAINERS, INJECTED_VOLUMES, NAMESPACE_INJECTION_LABEL,
};

use super::objects::INJECTED_LABEL;

/// Pod opt-in / opt-out label (`true` / `false`).
pub const INJECT_LABEL: &str = "faultline.dev/inject";
/// Event reason on a pod that runs without the proxy it should have.
pub const REASON_NOT_INJECTED: &str = "NotInjected";
/// The classic-layout sidecar container.
const PROXY_CONTAINER: &str = "faultline-proxy";
/// Namespaces the webhook configurations exclude.
const EXCLUDED_NAMESPACES: [&str; 2] = ["kube-system", "faultline-system"];

/// What the controller keeps of a pod's spec and container statuses (the
/// rest is stripped from its cache to keep memory small).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodLife {
    pub host_network: bool,
    /// `Always` (the default), `OnFailure` or `Never`.
    pub restart_policy: String,
    /// Regular containers: name and, once terminated, the exit code.
    pub containers: Vec<(String, Option<i32>)>,
    /// The pod is being deleted (its containers got SIGTERM).
    pub terminating: bool,
}

impl PodLife {
    pub fn from_pod(pod: &Pod) -> Self {
        let spec = pod.spec.as_ref();
        let statuses = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_deref())
            .unwrap_or_default();
        PodLife {
            host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
            restart_policy: spec
                .and_then(|s| s.restart_policy.clone())
                .unwrap_or_else(|| "Always".into()),
            containers: statuses
                .iter()
                .map(|c| (c.name.clone(), exit_code(c)))
                .collect(),
            terminating: pod.metadata.deletion_timestamp.is_some(),
        }
    }

    /// Classic layout only: the proxy is a regular container, every other
    /// regular container has terminated for good, and there is at least one.
    pub fn app_finished(&self) -> bool {
        let has_proxy = self.containers.iter().any(|(n, _)| n == PROXY_CONTAINER);
        let apps: Vec<Option<i32>> = self
            .containers
            .iter()
            .filter(|(n, _)| n != PROXY_CONTAINER)
            .map(|(_, code)| *code)
            .collect();
        let done = |code: &Option<i32>| match self.restart_policy.as_str() {
            _ if self.terminating => code.is_some(),
            "Never" => code.is_some(),
            "OnFailure" => *code == Some(0),
            _ => false,
        };
        has_proxy && !apps.is_empty() && apps.iter().all(done)
    }
}

fn exit_code(status: &ContainerStatus) -> Option<i32> {
    status
        .state
        .as_ref()?
        .terminated
        .as_ref()
        .map(|t| t.exit_code)
}

/// Keeps only what [`PodLife`] reads of the spec and container statuses
/// (the controller's pod cache holds every pod in the cluster).
pub fn strip_pod(pod: &mut Pod) {
    if let Some(spec) = pod.spec.take() {
        pod.spec = Some(k8s_openapi::api::core::v1::PodSpec {
            host_network: spec.host_network,
            restart_policy: spec.restart_policy,
            ..Default::default()
        });
    }
    pod.metadata.managed_fields = None;
    if let Some(status) = pod.status.as_mut() {
        status.conditions = None;
        status.init_container_statuses = None;
        if let Some(statuses) = status.container_statuses.as_mut() {
            for c in statuses.iter_mut() {
                let terminated = c.state.take().and_then(|s| s.terminated);
                *c = ContainerStatus {
                    name: std::mem::take(&mut c.name),
                    state: terminated.map(|t| k8s_openapi::api::core::v1::ContainerState {
                        terminated: Some(k8s_openapi::api::core::v1::ContainerStateTerminated {
                            exit_code: t.exit_code,
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                };
            }
        }
    }
}

/// Whether a pod that runs without the proxy should have it: opted in by
/// its namespace's label or its own, not opted out, not on the host's
/// network (never injected), not finished, not in an excluded namespace.
pub fn missed_injection(
    pod_labels: &BTreeMap<String, String>,
    namespace: &str,
    namespace_labels: Option<&BTreeMap<String, String>>,
    life: &PodLife,
    terminal: bool,
) -> bool {
    let label = |k: &str| pod_labels.get(k).map(String::as_str);
    if label(INJECTED_LABEL) == Some("true")
        || label(INJECT_LABEL) == Some("false")
        || life.host_network
        || terminal
        || EXCLUDED_NAMESPACES.contains(&namespace)
    {
        return false;
    }
    let namespace_in = namespace_labels
        .and_then(|l| l.get(NAMESPACE_INJECTION_LABEL))
        .is_some_and(|v| v == "enabled");
    namespace_in || label(INJECT_LABEL) == Some("true")
}

/// The Event note for a missed pod: what happened and what to do.
pub fn not_injected_note(namespace: &str, workload: Option<(&str, &str)>) -> String {
    let fix = match workload {
        Some((kind, name)) => format!("kubectl rollout restart {kind}/{name} -n {namespace}"),
        None => format!("delete and recreate the pod (kubectl delete pod ... -n {namespace})"),
    };
    let names = INJECTED_CONTAINERS
        .iter()
        .chain(INJECTED_VOLUMES.iter())
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "this pod runs without the faultline proxy, so fault policies cannot reach it: it was \
         created while the faultline webhook was unavailable or before its namespace was opted \
         in, or it has a container or volume named like the sidecar's ({names}; rename it). \
         To inject it: {fix}"
    )
}

#[cfg(test)]
mod tests;
