//! What the story tests share: a namespace per test, workloads, policies,
//! and "what the client sees" checks against running pods.

use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use faultline_e2e::node::NodeCluster;
use faultline_e2e::node::apps::{self, APP_PORT};
use faultline_e2e::{unique_name, wait_for};
use faultline_policy::contract;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, PodSpec};
use kube::api::{Api, Patch, PatchParams, PostParams};

/// How long a policy change may take to reach every proxy here. The design
/// target is one second; the shared machine gets headroom, and each test
/// prints what it measured.
pub const APPLY: Duration = Duration::from_secs(10);
pub const WAIT: Duration = Duration::from_secs(120);
pub const INJECTION_LABEL: (&str, &str) = (contract::NAMESPACE_INJECTION_LABEL, "enabled");
pub const FAULTS: &str = contract::FAULTS_ANNOTATION;

/// The busybox HTTP app, with `/clean.html`, `/slow.html` and `/api/x` besides
/// `/index.html` (the readiness probe's path).
pub fn web_spec() -> PodSpec {
    let mut spec = apps::http_server_spec();
    if let Some(c) = spec.containers.first_mut() {
        c.command = Some(vec![
            "sh".into(),
            "-c".into(),
            "mkdir -p /www/api && echo hello > /www/index.html && echo clean > /www/clean.html \
             && echo slow > /www/slow.html && echo api > /www/api/x && exec httpd -f -p 8080 -h /www"
                .into(),
        ]);
    }
    spec
}

/// A namespace for one test, labelled for injection or not.
pub async fn namespace(
    cluster: &NodeCluster,
    prefix: &str,
    labelled: bool,
) -> anyhow::Result<String> {
    let ns = unique_name(prefix);
    let labels: &[(&str, &str)] = if labelled { &[INJECTION_LABEL] } else { &[] };
    cluster.cp.create_namespace(&ns, labels).await?;
    Ok(ns)
}

pub async fn create_deployment(
    cluster: &NodeCluster,
    ns: &str,
    name: &str,
    replicas: i32,
    spec: PodSpec,
) -> anyhow::Result<()> {
    let api: Api<Deployment> = Api::namespaced(cluster.client(), ns);
    api.create(
        &PostParams::default(),
        &apps::deployment(name, replicas, spec),
    )
    .await
    .with_context(|| format!("create deployment {ns}/{name}"))?;
    Ok(())
}

/// The pods of `app`, Running and ready, each checked to carry the sidecar
/// (or not), and their IPs.
pub async fn ready_app(
    cluster: &NodeCluster,
    ns: &str,
    app: &str,
    count: usize,
    injected: bool,
) -> anyhow::Result<Vec<(Pod, String)>> {
    let pods = cluster
        .ready_pods(ns, &format!("app={app}"), count)
        .await
        .with_context(|| cluster.node.kubelet_log_tail())?;
    let mut out = Vec::new();
    for pod in pods {
        anyhow::ensure!(
            apps::has_sidecar(&pod) == injected,
            "pod {} sidecar: expected {injected}: {}",
            apps::name(&pod),
            apps::describe(std::slice::from_ref(&pod))
        );
        let ip = apps::pod_ip(&pod)?;
        out.push((pod, ip));
    }
    Ok(out)
}

/// A labelled namespace `prefix-xxxxxx` with a Deployment `web` of
/// `replicas` injected, ready pods; returns the namespace and pod IPs.
pub async fn web_app(
    cluster: &NodeCluster,
    prefix: &str,
    replicas: usize,
) -> anyhow::Result<(String, Vec<String>)> {
    let ns = namespace(cluster, prefix, true).await?;
    let count = i32::try_from(replicas)?;
    create_deployment(cluster, &ns, "web", count, web_spec()).await?;
    let ips = ready_app(cluster, &ns, "web", replicas, true)
        .await?
        .into_iter()
        .map(|(_, ip)| ip)
        .collect();
    Ok((ns, ips))
}

/// Sets (`Some`) or removes (`None`) the fault policy on a Deployment.
pub async fn annotate(
    cluster: &NodeCluster,
    ns: &str,
    deploy: &str,
    faults: Option<&str>,
) -> anyhow::Result<()> {
    let api: Api<Deployment> = Api::namespaced(cluster.client(), ns);
    let patch = serde_json::json!({"metadata": {"annotations": {FAULTS: faults}}});
    api.patch_metadata(deploy, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .with_context(|| format!("annotate deployment {ns}/{deploy}"))?;
    Ok(())
}

/// Polls `GET http://ip:8080{path}` on every pod until each answers `status`
/// (with `min_time` at least, for delays); returns how long the slowest pod
/// took to get there.
pub async fn until_all_answer(
    ips: &[String],
    path: &str,
    status: u16,
    min_time: Duration,
    started: Instant,
) -> anyhow::Result<Duration> {
    let http = apps::http_client();
    let mut slowest = Duration::ZERO;
    for ip in ips {
        let url = format!("http://{ip}:{APP_PORT}{path}");
        wait_for(format!("{url} to answer {status}"), APPLY, || async {
            let (got, body, took) = apps::get(&http, &url).await?;
            if got == status && took >= min_time {
                Ok(())
            } else {
                Err(anyhow!("{got} after {took:?}: {}", body.trim()))
            }
        })
        .await?;
        slowest = slowest.max(started.elapsed());
    }
    Ok(slowest)
}

/// One GET per pod: each must answer `status` now.
pub async fn all_answer_now(ips: &[String], path: &str, status: u16) -> anyhow::Result<()> {
    let http = apps::http_client();
    for ip in ips {
        let url = format!("http://{ip}:{APP_PORT}{path}");
        let (got, body, took) = apps::get(&http, &url).await?;
        anyhow::ensure!(
            got == status,
            "{url}: {got} after {took:?}: {}",
            body.trim()
        );
    }
    Ok(())
}

pub async fn wait_event(
    cluster: &NodeCluster,
    ns: &str,
    name: &str,
    reason: &str,
) -> anyhow::Result<String> {
    let (_, note) =
        faultline_e2e::events::wait_event(&cluster.client(), ns, name, reason, WAIT).await?;
    Ok(note)
}

/// Deletes the namespace (and so everything the test made) without waiting.
pub async fn cleanup(cluster: &NodeCluster, ns: &str) {
    let _ = cluster
        .kubectl_ok(&["delete", "namespace", ns, "--wait=false"])
        .await;
}
