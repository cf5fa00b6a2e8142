//! `mutate`: the pure decision of what to add to a pod, as a JSON patch.
//!
//! Layout of an injected pod:
//! - native sidecar mode: `initContainers = [faultline-init, faultline-proxy
//!   (restartPolicy: Always), ...app init containers]`, so even the app's
//!   init containers talk through the proxy;
//! - classic mode: `initContainers = [...app init containers, faultline-init]`
//!   (the redirection is installed last, so app init containers are not cut
//!   off while no proxy runs yet) and `containers = [faultline-proxy, ...app]`.
//!
//! The patch only uses `add` operations whose parents are known to exist (a
//! missing map or list is added whole), so it applies to exactly the object
//! the API server sent, whatever optional fields it lacks.

use std::collections::BTreeMap;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use serde_json::{Value, json};
use thiserror::Error;

use faultline_policy::contract::{InboundPorts, PortRange};

use super::containers;
use super::overrides::{OverrideError, Overrides};
use crate::config::{
    ADMIN_PORT, Config, DEFAULT_CONTAINER_ANNOTATION, INBOUND_CAPTURE_PORT, INIT_CONTAINER_NAME,
    INJECT_LABEL, INJECTED_CONTAINERS, INJECTED_LABEL, INJECTED_VOLUMES, InjectionStatus,
    NATIVE_SIDECAR_ANNOTATION, OUTBOUND_CAPTURE_PORT, PROXY_CONTAINER_NAME, PROXY_CPU_ANNOTATION,
    PROXY_GID, STATUS_ANNOTATION, TOKEN_VOLUME_NAME, XTABLES_VOLUME_NAME,
};

/// The outcome of [`mutate`]: a patch (empty when skipped), warnings for the
/// user (returned in the AdmissionResponse), why the pod was skipped, and
/// what was injected otherwise than the pod asked.
#[derive(Clone, Debug, PartialEq)]
pub struct Mutation {
    pub patch: Patch,
    pub warnings: Vec<String>,
    pub skipped: Option<SkipReason>,
    pub fallbacks: Vec<Fallback>,
}

/// Why a pod that reached the webhook was left alone (also a metrics label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SkipReason {
    OptedOut,
    HostNetwork,
    AlreadyInjected,
    /// A container or volume of the pod already has a name injection adds.
    NameConflict,
}

impl SkipReason {
    pub const ALL: [SkipReason; 4] = [
        Self::OptedOut,
        Self::HostNetwork,
        Self::AlreadyInjected,
        Self::NameConflict,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::OptedOut => "opted_out",
            Self::HostNetwork => "host_network",
            Self::AlreadyInjected => "already_injected",
            Self::NameConflict => "name_conflict",
        }
    }

    fn warning(self, spec: &PodSpec) -> String {
        match self {
            Self::OptedOut => format!("faultline: not injected: the pod has label {INJECT_LABEL}=false"),
            Self::HostNetwork => {
                "faultline: not injected: hostNetwork pods share the node's network and cannot be captured"
                    .into()
            }
            Self::AlreadyInjected => "faultline: not injected again: the pod already has the faultline sidecar".into(),
            Self::NameConflict => format!(
                "faultline: not injected: the pod already has {}, a name the faultline sidecar needs; rename it to inject the pod",
                conflicts(spec).join(" and ")
            ),
        }
    }
}

/// Something injected otherwise than the pod asked (also a metrics label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fallback {
    /// Native sidecar asked for on an API server before 1.29: classic layout.
    NativeUnsupported,
    /// `faultline.dev/proxy-cpu` out of bounds: the default.
    ProxyCpuOutOfBounds,
    /// `faultline.dev/proxy-memory` out of bounds: the default.
    ProxyMemoryOutOfBounds,
}

impl Fallback {
    pub const ALL: [Fallback; 3] = [
        Self::NativeUnsupported,
        Self::ProxyCpuOutOfBounds,
        Self::ProxyMemoryOutOfBounds,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::NativeUnsupported => "native_unsupported",
            Self::ProxyCpuOutOfBounds => "proxy_cpu_out_of_bounds",
            Self::ProxyMemoryOutOfBounds => "proxy_memory_out_of_bounds",
        }
    }
}

#[derive(Debug, Error)]
pub enum MutateError {
    #[error("failed to inject the faultline sidecar: the pod has no spec")]
    MissingSpec,
    #[error("failed to inject the faultline sidecar: {0}")]
    Override(#[source] OverrideError),
}

/// Decide how to inject `pod`. Pure: same pod and config, same patch.
pub fn mutate(pod: &Pod, config: &Config) -> Result<Mutation, MutateError> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref().ok_or(MutateError::MissingSpec)?;
    if let Some(reason) = skip_reason(pod, spec) {
        // A complete injection of ours is what the API server sends back on
        // reinvocation (and what `inject -f` prints): nothing for a person
        // to act on, so no warning. Anything else that looks injected is.
        let quiet = reason == SkipReason::AlreadyInjected && is_complete_injection(pod, spec);
        return Ok(Mutation {
            patch: Patch(Vec::new()),
            warnings: if quiet {
                Vec::new()
            } else {
                vec![reason.warning(spec)]
            },
            skipped: Some(reason),
            fallbacks: Vec::new(),
        });
    }

    let empty = BTreeMap::new();
    let annotations = meta.annotations.as_ref().unwrap_or(&empty);
    let serving = serving_containers(spec);
    let named_ports = named_tcp_ports(&serving);
    let overrides = Overrides::read(annotations, &named_ports).map_err(MutateError::Override)?;

    // Run-to-completion pods (Jobs) need no warning in the classic layout:
    // the controller tells the proxy to finish once the app has exited.
    let mut warnings = Vec::new();
    let mut fallbacks = Vec::new();
    for ignored in &overrides.ignored {
        warnings.push(ignored.warning());
        fallbacks.push(if ignored.annotation == PROXY_CPU_ANNOTATION {
            Fallback::ProxyCpuOutOfBounds
        } else {
            Fallback::ProxyMemoryOutOfBounds
        });
    }
    let native = sidecar_layout(&overrides, config, &mut warnings, &mut fallbacks);
    let inbound = inbound_ports(&serving, &overrides, &mut warnings);
    let init = containers::init_container(config, containers::init_command(&inbound, &overrides));
    let (probe_ops, probe_ports) =
        super::probes::rewrite_tcp_probes(spec, |port| is_captured(&inbound, &overrides, port));
    let mut proxy = containers::proxy_container(config, &overrides, native);
    containers::allow_probe_ports(&mut proxy, &probe_ports);
    let app_ports: Vec<u16> = match &inbound {
        InboundPorts::Only(ranges) => ranges.iter().flat_map(|r| r.start..=r.end).collect(),
        InboundPorts::All => Vec::new(),
    };
    containers::set_wind_down(
        &mut proxy,
        &app_ports,
        spec.termination_grace_period_seconds,
    );

    // Probe rewrites first: they address app containers by their index
    // before the sidecar is inserted in front of them.
    let mut ops = probe_ops;
    let status = InjectionStatus {
        version: config.version.clone(),
        containers: vec![INIT_CONTAINER_NAME.into(), PROXY_CONTAINER_NAME.into()],
        volumes: vec![TOKEN_VOLUME_NAME.into(), XTABLES_VOLUME_NAME.into()],
        native_sidecar: native,
    };
    let status = serde_json::to_string(&status).unwrap_or_default();
    add_map_entries(
        &mut ops,
        &["metadata", "labels"],
        meta.labels.is_some(),
        [(INJECTED_LABEL, "true".into())],
    );
    let mut new_annotations = vec![(STATUS_ANNOTATION, status)];
    if !annotations.contains_key(DEFAULT_CONTAINER_ANNOTATION)
        && let Some(app) = spec.containers.first()
    {
        new_annotations.push((DEFAULT_CONTAINER_ANNOTATION, app.name.clone()));
    }
    add_map_entries(
        &mut ops,
        &["metadata", "annotations"],
        meta.annotations.is_some(),
        new_annotations,
    );

    let init_containers = spec.init_containers.as_ref();
    if native {
        insert_front(
            &mut ops,
            &["spec", "initContainers"],
            init_containers.is_some(),
            vec![init, proxy],
        );
    } else {
        append(
            &mut ops,
            &["spec", "initContainers"],
            init_containers.is_some(),
            vec![init],
        );
        insert_front(&mut ops, &["spec", "containers"], true, vec![proxy]);
    }
    append(
        &mut ops,
        &["spec", "volumes"],
        spec.volumes.is_some(),
        containers::volumes(),
    );

    // The projected token is 0600 root unless the pod has an fsGroup; the
    // fsGroup makes it 0640 with that group, which every container gets as
    // a supplementary group, so the proxy (UID 15400) can read it.
    let security = spec.security_context.as_ref();
    if security.and_then(|s| s.fs_group).is_none() {
        let fs_group = json!(PROXY_GID);
        if security.is_some() {
            ops.push(add(&["spec", "securityContext", "fsGroup"], fs_group));
        } else {
            ops.push(add(
                &["spec", "securityContext"],
                json!({"fsGroup": fs_group}),
            ));
        }
    }
    Ok(Mutation {
        patch: Patch(ops),
        warnings,
        skipped: None,
        fallbacks,
    })
}

/// Native (true) or classic: the pod's annotation, else the server's
/// default, but never native on a server that cannot run it.
fn sidecar_layout(
    overrides: &Overrides,
    config: &Config,
    warnings: &mut Vec<String>,
    fallbacks: &mut Vec<Fallback>,
) -> bool {
    let asked = overrides.native_sidecar.unwrap_or(config.native_sidecars);
    if asked && !config.supports_native() {
        warnings.push(format!(
            "faultline: annotation {NATIVE_SIDECAR_ANNOTATION}=\"true\" ignored: the API server \
             is older than 1.29 and does not run native sidecars; the pod gets the classic layout"
        ));
        fallbacks.push(Fallback::NativeUnsupported);
        return false;
    }
    asked
}

fn skip_reason(pod: &Pod, spec: &PodSpec) -> Option<SkipReason> {
    let labels = pod.metadata.labels.as_ref();
    if labels
        .and_then(|l| l.get(INJECT_LABEL))
        .is_some_and(|v| v == "false")
    {
        return Some(SkipReason::OptedOut);
    }
    if is_injected(pod, spec) {
        return Some(SkipReason::AlreadyInjected);
    }
    if spec.host_network == Some(true) {
        return Some(SkipReason::HostNetwork);
    }
    if !conflicts(spec).is_empty() {
        return Some(SkipReason::NameConflict);
    }
    None
}

/// Injected before: our status annotation is there and reads as ours (what
/// a reinvocation, `inject -f` output or a copied pod carries), or every
/// container and volume injection adds is there (a copy without the
/// annotation). One matching name alone is a user's object: a conflict.
fn is_injected(pod: &Pod, spec: &PodSpec) -> bool {
    let marked = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(STATUS_ANNOTATION))
        .is_some_and(|s| serde_json::from_str::<InjectionStatus>(s).is_ok());
    let names = container_names(spec);
    let volumes = volume_names(spec);
    marked
        || (INJECTED_CONTAINERS.iter().all(|n| names.contains(n))
            && INJECTED_VOLUMES.iter().all(|n| volumes.contains(n)))
}

fn container_names(spec: &PodSpec) -> Vec<&str> {
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .map(|c| c.name.as_str())
        .chain(
            spec.ephemeral_containers
                .iter()
                .flatten()
                .map(|c| c.name.as_str()),
        )
        .collect()
}

fn volume_names(spec: &PodSpec) -> Vec<&str> {
    spec.volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect()
}

/// The pod's containers and volumes whose names injection would add again,
/// as `container "faultline-init"`; the API server refuses a pod with two.
fn conflicts(spec: &PodSpec) -> Vec<String> {
    let names = container_names(spec);
    let volumes = volume_names(spec);
    let containers = INJECTED_CONTAINERS
        .iter()
        .filter(|n| names.contains(n))
        .map(|n| format!("container {n:?}"));
    let volumes = INJECTED_VOLUMES
        .iter()
        .filter(|n| volumes.contains(n))
        .map(|n| format!("volume {n:?}"));
    containers.chain(volumes).collect()
}

/// The status annotation parses and every container it lists is in the pod.
fn is_complete_injection(pod: &Pod, spec: &PodSpec) -> bool {
    let Some(status) = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(STATUS_ANNOTATION))
        .and_then(|s| serde_json::from_str::<InjectionStatus>(s).ok())
    else {
        return false;
    };
    let present = |name: &String| {
        spec.containers.iter().any(|c| &c.name == name)
            || spec
                .init_containers
                .iter()
                .flatten()
                .any(|c| &c.name == name)
    };
    !status.containers.is_empty() && status.containers.iter().all(present)
}

/// Containers that can accept connections: app containers and restartable
/// (sidecar) init containers.
fn serving_containers(spec: &PodSpec) -> Vec<&Container> {
    let sidecars = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"));
    spec.containers.iter().chain(sidecars).collect()
}

fn tcp_ports<'a>(containers: &[&'a Container]) -> impl Iterator<Item = (&'a Option<String>, u16)> {
    containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.protocol.as_deref().is_none_or(|proto| proto == "TCP"))
        .filter_map(|p| {
            u16::try_from(p.container_port)
                .ok()
                .map(|port| (&p.name, port))
        })
}

fn named_tcp_ports(containers: &[&Container]) -> BTreeMap<String, u16> {
    tcp_ports(containers)
        .filter_map(|(name, port)| name.clone().map(|n| (n, port)))
        .collect()
}

fn inbound_ports(
    containers: &[&Container],
    overrides: &Overrides,
    warnings: &mut Vec<String>,
) -> InboundPorts {
    let proxy_ports = [ADMIN_PORT, OUTBOUND_CAPTURE_PORT, INBOUND_CAPTURE_PORT];
    let mut declared: Vec<u16> = tcp_ports(containers).map(|(_, port)| port).collect();
    declared.sort_unstable();
    declared.dedup();
    if declared.is_empty() {
        return InboundPorts::All;
    }
    for port in declared.iter().filter(|p| proxy_ports.contains(p)) {
        warnings.push(format!("faultline: container port {port} is reserved for the proxy; its traffic is not captured"));
    }
    let excluded = |p: &u16| {
        overrides
            .exclude_inbound_ports
            .iter()
            .any(|r| r.contains(*p))
    };
    InboundPorts::Only(
        declared
            .into_iter()
            .filter(|p| !proxy_ports.contains(p) && !excluded(p))
            .map(PortRange::single)
            .collect(),
    )
}

/// Whether inbound connections to `port` reach the proxy.
fn is_captured(inbound: &InboundPorts, overrides: &Overrides, port: u16) -> bool {
    if [ADMIN_PORT, OUTBOUND_CAPTURE_PORT, INBOUND_CAPTURE_PORT].contains(&port) {
        return false;
    }
    match inbound {
        InboundPorts::All => !overrides
            .exclude_inbound_ports
            .iter()
            .any(|r| r.contains(port)),
        InboundPorts::Only(ranges) => ranges.iter().any(|r| r.contains(port)),
    }
}

fn pointer(tokens: &[&str]) -> PointerBuf {
    PointerBuf::from_tokens(tokens.iter().copied())
}

fn add(path: &[&str], value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: pointer(path),
        value,
    })
}

/// Add entries to a string map; the whole map when the pod has none.
fn add_map_entries(
    ops: &mut Vec<PatchOperation>,
    path: &[&str],
    exists: bool,
    entries: impl IntoIterator<Item = (&'static str, String)>,
) {
    if exists {
        for (key, value) in entries {
            let mut p = path.to_vec();
            p.push(key);
            ops.push(add(&p, json!(value)));
        }
    } else {
        let map: serde_json::Map<String, Value> = entries
            .into_iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        ops.push(add(path, Value::Object(map)));
    }
}

/// Insert `items` in order at the front of a list.
fn insert_front(ops: &mut Vec<PatchOperation>, path: &[&str], exists: bool, items: Vec<Value>) {
    if !exists {
        ops.push(add(path, Value::Array(items)));
        return;
    }
    for (i, item) in items.into_iter().enumerate() {
        let index = i.to_string();
        let mut p = path.to_vec();
        p.push(&index);
        ops.push(add(&p, item));
    }
}

fn append(ops: &mut Vec<PatchOperation>, path: &[&str], exists: bool, items: Vec<Value>) {
    if !exists {
        ops.push(add(path, Value::Array(items)));
        return;
    }
    for item in items {
        let mut p = path.to_vec();
        p.push("-");
        ops.push(add(&p, item));
    }
}
