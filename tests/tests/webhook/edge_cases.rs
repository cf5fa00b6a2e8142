//! Injection edge cases against a real kube-apiserver (1.20): a pod that
//! asks for what the server cannot run, uses a name injection adds, or
//! sets proxy resources out of bounds is still created (the webhook never
//! blocks a pod), with the layout the server runs, uninjected, or with the
//! default resources, and the person creating it is told why in an
//! admission warning (`kubectl` prints them).

use std::collections::BTreeMap;

use anyhow::{Context, ensure};
use faultline_e2e::webhook::{
    Registration, RunningWebhook, SCOPE_LABEL, check_injected, create_pod_with_warnings,
    is_injected, plain_pod, register_scoped, wait_until_injecting,
};
use faultline_e2e::{ControlPlane, unique_name};
use faultline_webhook::Config;
use faultline_webhook::config::{
    INIT_CONTAINER_NAME, INJECTED_VOLUMES, NAMESPACE_INJECTION_LABEL, NATIVE_SIDECAR_ANNOTATION,
    PROXY_CONTAINER_NAME, PROXY_MEMORY_ANNOTATION, ProxyResources, STATUS_ANNOTATION,
    TOKEN_VOLUME_NAME, XTABLES_VOLUME_NAME,
};
use faultline_webhook::server_version;
use k8s_openapi::api::core::v1::{Container, Pod, Volume};
use kube::api::Api;

/// This test's webhook, registered for its own injecting namespace.
struct Edge {
    cp: &'static ControlPlane,
    client: kube::Client,
    webhook: RunningWebhook,
    registration: Registration,
    namespace: String,
}

impl Edge {
    async fn start(test: &str, config: Config) -> anyhow::Result<Option<Edge>> {
        let Some(cp) = ControlPlane::shared_or_skip().await else {
            return Ok(None);
        };
        let client = cp.client();
        let scope = unique_name(test);
        let webhook = RunningWebhook::start(config).await?;
        let registration = register_scoped(&client, &scope, &webhook).await?;
        let namespace = unique_name(&scope);
        cp.create_namespace(
            &namespace,
            &[
                (SCOPE_LABEL, scope.as_str()),
                (NAMESPACE_INJECTION_LABEL, "enabled"),
            ],
        )
        .await?;
        wait_until_injecting(&client, &namespace).await?;
        Ok(Some(Edge {
            cp,
            client,
            webhook,
            registration,
            namespace,
        }))
    }

    async fn create(&self, pod: &Pod) -> anyhow::Result<(Pod, Vec<String>)> {
        Ok(create_pod_with_warnings(&self.client, &self.namespace, pod).await?)
    }

    /// The pod as the API server stored it.
    async fn stored(&self, name: &str) -> anyhow::Result<Pod> {
        Ok(Api::<Pod>::namespaced(self.client.clone(), &self.namespace)
            .get(name)
            .await?)
    }

    async fn finish(self) -> anyhow::Result<()> {
        self.registration.delete(&self.client).await?;
        self.webhook.stop().await?;
        self.cp.check_running()?;
        Ok(())
    }
}

fn annotated(mut pod: Pod, key: &str, value: &str) -> Pod {
    pod.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(key.to_owned(), value.to_owned());
    pod
}

fn spec(pod: &Pod) -> anyhow::Result<&k8s_openapi::api::core::v1::PodSpec> {
    pod.spec.as_ref().context("a pod without spec")
}

fn container(name: &str) -> Container {
    Container {
        name: name.to_owned(),
        image: Some("example/app:1".to_owned()),
        ..Container::default()
    }
}

/// One warning mentions every needle.
fn ensure_warned(warnings: &[String], needles: &[&str]) -> anyhow::Result<()> {
    ensure!(
        warnings
            .iter()
            .any(|w| needles.iter().all(|n| w.contains(n))),
        "no warning names {needles:?}: {warnings:?}"
    );
    Ok(())
}

#[tokio::test]
async fn native_sidecar_asked_of_a_1_20_server_gets_the_classic_layout_and_a_warning()
-> anyhow::Result<()> {
    let Some(cp) = ControlPlane::shared_or_skip().await else {
        return Ok(());
    };
    // What `serve --native-sidecars auto` does at start-up.
    let supported = server_version::native_supported(&cp.client()).await?;
    ensure!(
        !supported,
        "the test API server (1.20) claims native sidecars"
    );
    let config = Config {
        native_sidecars: supported,
        native_supported: supported,
        ..Config::default()
    };
    let Some(edge) = Edge::start("wh-native", config).await? else {
        return Ok(());
    };
    let mut pod = annotated(plain_pod("asks-native"), NATIVE_SIDECAR_ANNOTATION, "true");
    pod.spec
        .as_mut()
        .context("fixture without spec")?
        .init_containers = Some(vec![container("migrate")]);
    let (created, warnings) = edge.create(&pod).await?;
    ensure_warned(&warnings, &[NATIVE_SIDECAR_ANNOTATION, "1.29", "classic"])?;

    let stored = edge.stored("asks-native").await?;
    check_injected(&stored)?;
    let spec = spec(&stored)?;
    let init: Vec<&str> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    ensure!(init == ["migrate", INIT_CONTAINER_NAME], "{init:?}");
    ensure!(
        spec.init_containers
            .iter()
            .flatten()
            .all(|c| c.restart_policy.is_none()),
        "an init container kept restartPolicy"
    );
    ensure!(
        spec.containers.first().map(|c| c.name.as_str()) == Some(PROXY_CONTAINER_NAME),
        "the proxy is not the first container"
    );
    let status = stored
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(STATUS_ANNOTATION))
        .context("no status annotation")?;
    ensure!(status.contains("\"nativeSidecar\":false"), "{status}");
    ensure!(created.metadata.uid == stored.metadata.uid);

    let metrics = edge.webhook.metrics().await?;
    ensure!(
        metrics.contains(
            r#"faultline_webhook_injection_fallbacks_total{reason="native_unsupported"} 1"#
        ),
        "{metrics}"
    );
    edge.finish().await
}

#[tokio::test]
async fn pods_using_a_name_injection_adds_are_created_uninjected_with_a_warning()
-> anyhow::Result<()> {
    let Some(edge) = Edge::start("wh-names", Config::default()).await? else {
        return Ok(());
    };
    let volume = |name: &str| Volume {
        name: name.to_owned(),
        empty_dir: Some(Default::default()),
        ..Volume::default()
    };
    let cases: Vec<(&str, Pod, String)> = vec![
        (
            "token-volume",
            plain_pod("token-volume"),
            format!("volume \"{TOKEN_VOLUME_NAME}\""),
        ),
        (
            "xtables-volume",
            plain_pod("xtables-volume"),
            format!("volume \"{XTABLES_VOLUME_NAME}\""),
        ),
        (
            "app-named-init",
            plain_pod("app-named-init"),
            format!("container \"{INIT_CONTAINER_NAME}\""),
        ),
        (
            "init-named-proxy",
            plain_pod("init-named-proxy"),
            format!("container \"{PROXY_CONTAINER_NAME}\""),
        ),
    ];
    let count = cases.len();
    for (name, mut pod, needle) in cases {
        let spec = pod.spec.as_mut().context("fixture without spec")?;
        match name {
            "token-volume" => spec.volumes = Some(vec![volume(TOKEN_VOLUME_NAME)]),
            "xtables-volume" => spec.volumes = Some(vec![volume(XTABLES_VOLUME_NAME)]),
            "app-named-init" => spec.containers.push(container(INIT_CONTAINER_NAME)),
            _ => spec.init_containers = Some(vec![container(PROXY_CONTAINER_NAME)]),
        }
        let (_, warnings) = edge
            .create(&pod)
            .await
            .with_context(|| format!("pod {name} was not created"))?;
        ensure_warned(&warnings, &["not injected", &needle])?;
        let stored = edge.stored(name).await?;
        ensure!(!is_injected(&stored), "pod {name} was injected");
        ensure!(
            stored
                .metadata
                .annotations
                .as_ref()
                .is_none_or(|a| !a.contains_key(STATUS_ANNOTATION)),
            "pod {name} has {STATUS_ANNOTATION}"
        );
        let (sent, kept) = (spec_names(&pod)?, spec_names(&stored)?);
        ensure!(sent == kept, "pod {name}: sent {sent:?}, stored {kept:?}");
    }
    let metrics = edge.webhook.metrics().await?;
    ensure!(
        metrics.contains(&format!(
            r#"faultline_webhook_skipped_pods_total{{reason="name_conflict"}} {count}"#
        )),
        "{metrics}"
    );
    edge.finish().await
}

/// Containers, init containers and the volumes injection would add, by name
/// (the API server adds the service account's token volume itself).
fn spec_names(pod: &Pod) -> anyhow::Result<[Vec<String>; 3]> {
    let spec = spec(pod)?;
    let names = |cs: &[Container]| cs.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
    Ok([
        names(&spec.containers),
        names(spec.init_containers.as_deref().unwrap_or_default()),
        spec.volumes
            .iter()
            .flatten()
            .map(|v| v.name.clone())
            .filter(|n| INJECTED_VOLUMES.contains(&n.as_str()))
            .collect(),
    ])
}

#[tokio::test]
async fn proxy_memory_out_of_bounds_gets_the_default_and_a_warning() -> anyhow::Result<()> {
    let Some(edge) = Edge::start("wh-bounds", Config::default()).await? else {
        return Ok(());
    };
    for (name, value, bound) in [
        ("tiny", "1", "minimum 16Mi"),
        ("huge", "100Ti", "maximum 4Gi"),
    ] {
        let pod = annotated(plain_pod(name), PROXY_MEMORY_ANNOTATION, value);
        let (_, warnings) = edge.create(&pod).await?;
        ensure_warned(&warnings, &[PROXY_MEMORY_ANNOTATION, value, bound])?;
        let stored = edge.stored(name).await?;
        check_injected(&stored)?;
        let proxy = spec(&stored)?
            .containers
            .iter()
            .find(|c| c.name == PROXY_CONTAINER_NAME)
            .context("no proxy")?;
        let resources = proxy.resources.as_ref().context("no resources")?;
        let memory = |m: &Option<
            BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
        >| {
            m.as_ref()
                .and_then(|m| m.get("memory"))
                .map(|q| q.0.clone())
        };
        let defaults = ProxyResources::default();
        ensure!(
            memory(&resources.requests) == defaults.memory_request
                && memory(&resources.limits) == defaults.memory_limit,
            "pod {name}: proxy resources {resources:?}"
        );
    }
    edge.finish().await
}

#[tokio::test]
async fn the_layout_follows_the_api_server_version_after_start() -> anyhow::Result<()> {
    let Some(cp) = ControlPlane::shared_or_skip().await else {
        return Ok(());
    };
    // A webhook that last believed the server ran native sidecars (before a
    // rollback of the control plane, say) learns otherwise on its next read.
    let configure = |supported: bool| Config {
        native_sidecars: supported,
        native_supported: supported,
        ..Config::default()
    };
    let (tx, mut rx) = tokio::sync::watch::channel(std::sync::Arc::new(configure(true)));
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(server_version::refresh(
        cp.client(),
        true,
        configure,
        tx,
        std::time::Duration::from_millis(100),
        stop.clone(),
    ));
    tokio::time::timeout(std::time::Duration::from_secs(30), rx.changed())
        .await
        .context("no new config within 30 s")??;
    let config = rx.borrow_and_update().clone();
    ensure!(
        !config.native_sidecars && !config.supports_native(),
        "still native after reading the 1.20 server's version"
    );
    // Unchanged answers publish nothing.
    ensure!(
        tokio::time::timeout(std::time::Duration::from_millis(500), rx.changed())
            .await
            .is_err(),
        "the same answer was published again"
    );
    stop.cancel();
    task.await?;
    Ok(())
}
