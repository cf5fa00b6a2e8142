//! Checks on pods as the API server returns them: did the webhook inject
//! everything it promises (docs/webhook.md, "What is injected"), or nothing at all. Each
//! returns an error naming the pod and what is wrong.

use anyhow::{Context, ensure};
use k8s_openapi::api::core::v1::{Container, Pod};

use faultline_webhook::config::{
    INIT_CONTAINER_NAME, INJECTED_LABEL, PROXY_CONTAINER_NAME, PROXY_UID, STATUS_ANNOTATION,
    TOKEN_AUDIENCE, TOKEN_VOLUME_NAME,
};

fn names(containers: &[Container]) -> Vec<&str> {
    containers.iter().map(|c| c.name.as_str()).collect()
}

/// The label, the status annotation, `faultline-init` with exactly
/// NET_ADMIN + NET_RAW, the `faultline-proxy` container (classic mode: the
/// test API server is 1.20) as UID 15400, non-root, read-only, the app
/// container untouched, and the projected token with audience `faultline`.
pub fn check_injected(pod: &Pod) -> anyhow::Result<()> {
    let name = pod.metadata.name.as_deref().unwrap_or("<unnamed>");
    ensure!(is_injected(pod), "pod {name} lacks the injected label");
    let status = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(STATUS_ANNOTATION))
        .with_context(|| format!("pod {name} has no {STATUS_ANNOTATION}"))?;
    let status: serde_json::Value = serde_json::from_str(status)
        .with_context(|| format!("pod {name}: {STATUS_ANNOTATION} is not JSON"))?;
    ensure!(
        status["containers"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c == PROXY_CONTAINER_NAME)),
        "pod {name}: {STATUS_ANNOTATION} {status} does not list {PROXY_CONTAINER_NAME}"
    );

    let spec = pod
        .spec
        .as_ref()
        .with_context(|| format!("pod {name} has no spec"))?;
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .find(|c| c.name == INIT_CONTAINER_NAME)
        .with_context(|| format!("pod {name} has no {INIT_CONTAINER_NAME}"))?;
    let caps = init
        .security_context
        .as_ref()
        .and_then(|s| s.capabilities.as_ref())
        .with_context(|| format!("pod {name}: {INIT_CONTAINER_NAME} has no capabilities"))?;
    let mut added = caps.add.clone().unwrap_or_default();
    added.sort();
    ensure!(
        added == ["NET_ADMIN", "NET_RAW"],
        "pod {name}: {INIT_CONTAINER_NAME} adds {added:?}"
    );
    ensure!(
        caps.drop.as_deref() == Some(&["ALL".to_owned()][..]),
        "pod {name}: {INIT_CONTAINER_NAME} drops {:?}",
        caps.drop
    );

    let proxy = spec
        .containers
        .iter()
        .find(|c| c.name == PROXY_CONTAINER_NAME)
        .with_context(|| format!("pod {name} has no {PROXY_CONTAINER_NAME} container"))?;
    let sc = proxy
        .security_context
        .as_ref()
        .with_context(|| format!("pod {name}: {PROXY_CONTAINER_NAME} has no securityContext"))?;
    ensure!(
        sc.run_as_user == Some(i64::from(PROXY_UID))
            && sc.run_as_non_root == Some(true)
            && sc.read_only_root_filesystem == Some(true),
        "pod {name}: {PROXY_CONTAINER_NAME} securityContext {sc:?}"
    );
    ensure!(
        names(&spec.containers).contains(&"app"),
        "pod {name} lost its app container: {:?}",
        names(&spec.containers)
    );

    let audience = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == TOKEN_VOLUME_NAME)
        .with_context(|| format!("pod {name} has no {TOKEN_VOLUME_NAME} volume"))?
        .projected
        .as_ref()
        .and_then(|p| p.sources.as_ref())
        .and_then(|s| s.iter().find_map(|s| s.service_account_token.as_ref()))
        .and_then(|t| t.audience.as_deref());
    ensure!(
        audience == Some(TOKEN_AUDIENCE),
        "pod {name}: {TOKEN_VOLUME_NAME} audience {audience:?}"
    );
    Ok(())
}

/// No label, no annotation, no added container of any kind.
pub fn check_untouched(pod: &Pod) -> anyhow::Result<()> {
    let name = pod.metadata.name.as_deref().unwrap_or("<unnamed>");
    ensure!(!is_injected(pod), "pod {name} was injected");
    let spec = pod
        .spec
        .as_ref()
        .with_context(|| format!("pod {name} has no spec"))?;
    ensure!(
        names(&spec.containers) == ["app"],
        "pod {name} has containers {:?}",
        names(&spec.containers)
    );
    ensure!(
        spec.init_containers.is_none(),
        "pod {name} got init containers"
    );
    ensure!(
        pod.metadata
            .annotations
            .as_ref()
            .is_none_or(|a| !a.contains_key(STATUS_ANNOTATION)),
        "pod {name} has {STATUS_ANNOTATION}"
    );
    Ok(())
}

/// Whether `pod` carries the `faultline.dev/injected=true` label.
pub fn is_injected(pod: &Pod) -> bool {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(INJECTED_LABEL))
        .is_some_and(|v| v == "true")
}
