//! Label the namespace, restart the workload: the pods come back with the
//! sidecar, the init container has done its work, and traffic flows through
//! the proxy, clean.

use std::time::Instant;

use faultline_e2e::node::NodeCluster;
use faultline_e2e::node::apps::{self, APP_PORT};

use crate::support::{self, create_deployment, namespace, ready_app, web_spec};

#[tokio::test]
async fn label_and_rollout_restart_inject_existing_workloads() -> anyhow::Result<()> {
    let Some(cluster) = NodeCluster::shared_or_skip().await else {
        return Ok(());
    };
    let _story = NodeCluster::shared_lock().await;
    let ns = namespace(cluster, "node-inject", false).await?;
    create_deployment(cluster, &ns, "web", 2, web_spec()).await?;
    ready_app(cluster, &ns, "web", 2, false).await?;

    cluster
        .kubectl_ok(&["label", "namespace", &ns, "faultline.dev/injection=enabled"])
        .await?;
    let restarted = Instant::now();
    cluster
        .kubectl_ok(&["rollout", "restart", "-n", &ns, "deploy/web"])
        .await?;
    cluster.rollout_status(&ns, "deploy/web").await?;
    let pods = ready_app(cluster, &ns, "web", 2, true).await?;
    eprintln!(
        "rollout restart to 2 injected ready pods: {:?}",
        restarted.elapsed()
    );
    for (pod, _) in &pods {
        anyhow::ensure!(
            apps::init_exit_code(pod, "faultline-init") == Some(0),
            "faultline-init did not exit 0: {}",
            apps::describe(std::slice::from_ref(pod))
        );
    }

    // Traffic from the host to the pod IP goes through the proxy, and is clean.
    let http = apps::http_client();
    for (pod, ip) in &pods {
        let before = apps::proxy_metric(
            &http,
            ip,
            "faultline_requests_total",
            Some("direction=\"inbound\""),
        )
        .await?;
        for _ in 0..5 {
            let (status, body, _) =
                apps::get(&http, &format!("http://{ip}:{APP_PORT}/clean.html")).await?;
            anyhow::ensure!(
                status == 200 && body.trim() == "clean",
                "{}: {status} {body}",
                apps::name(pod)
            );
        }
        let after = apps::proxy_metric(
            &http,
            ip,
            "faultline_requests_total",
            Some("direction=\"inbound\""),
        )
        .await?;
        anyhow::ensure!(
            after - before >= 5.0,
            "the proxy of {} counted {} inbound requests for 5 sent",
            apps::name(pod),
            after - before
        );
    }
    support::cleanup(cluster, &ns).await;
    Ok(())
}

/// The API server calls the webhook again after its own patch
/// (`reinvocationPolicy: IfNeeded`); a user creating a pod sees no warning.
#[tokio::test]
async fn kubectl_run_in_a_labelled_namespace_prints_no_warning() -> anyhow::Result<()> {
    let Some(cluster) = NodeCluster::shared_or_skip().await else {
        return Ok(());
    };
    let _story = NodeCluster::shared_lock().await;
    let ns = namespace(cluster, "node-run", true).await?;
    let mut cmd = cluster.kubectl();
    cmd.args([
        "run",
        "one",
        "-n",
        &ns,
        "--image",
        apps::BUSYBOX,
        "--image-pull-policy=IfNotPresent",
    ])
    .args(["--restart=Never", "--", "sh", "-c", "sleep 3600"]);
    let output = cmd.output().await?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    anyhow::ensure!(output.status.success(), "kubectl run failed: {stderr}");
    anyhow::ensure!(
        !stderr.contains("faultline"),
        "kubectl run printed: {stderr}"
    );
    let pods = cluster.ready_pods(&ns, "run=one", 1).await?;
    anyhow::ensure!(apps::has_sidecar(&pods[0]), "{}", apps::describe(&pods));
    support::cleanup(cluster, &ns).await;
    Ok(())
}
