//! faultline's own pod goes away: the proxies keep their policy while it is
//! gone and reconnect when it is back; while the webhook is down, pods are
//! still created (without the sidecar), and faultline reports them when it
//! is back. These tests stop faultline, so they hold the story lock alone.

use std::time::{Duration, Instant};

use faultline_e2e::node::NodeCluster;
use faultline_e2e::node::apps::{self};
use faultline_e2e::wait_for;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

use crate::support::{
    WAIT, all_answer_now, annotate, create_deployment, ready_app, until_all_answer, wait_event,
    web_app, web_spec,
};

const SYSTEM: &str = "faultline-system";
const WEBHOOK_PODS: &str = "app.kubernetes.io/component=webhook";
const DOWN: &str = "rules:\n- name: api-down\n  match: {direction: inbound, path: /api/*}\n  abort: {status: 503}\n";
const TEAPOT: &str =
    "rules:\n- name: teapot\n  match: {direction: inbound, path: /api/*}\n  abort: {status: 418}\n";

async fn webhook_pods(cluster: &NodeCluster) -> anyhow::Result<Vec<Pod>> {
    let api: Api<Pod> = Api::namespaced(cluster.client(), SYSTEM);
    Ok(api
        .list(&ListParams::default().labels(WEBHOOK_PODS))
        .await?
        .items)
}

async fn wait_webhook_gone(cluster: &NodeCluster) -> anyhow::Result<()> {
    wait_for("no faultline-webhook pod", WAIT, || async {
        let pods = webhook_pods(cluster).await?;
        if pods.is_empty() {
            Ok(())
        } else {
            Err(anyhow::anyhow!(apps::describe(&pods)))
        }
    })
    .await?;
    Ok(())
}

async fn wait_policy_connected(ip: &str, want: bool) -> anyhow::Result<Duration> {
    let http = apps::http_client();
    let start = Instant::now();
    wait_for(
        format!("faultline_policy_connected {want} on {ip}"),
        WAIT,
        || async {
            let v = apps::proxy_metric(&http, ip, "faultline_policy_connected", None).await?;
            if (v == 1.0) == want {
                Ok(())
            } else {
                Err(anyhow::anyhow!("{v}"))
            }
        },
    )
    .await?;
    Ok(start.elapsed())
}

/// A labelled namespace with `web` whose policy aborts `/api/*`, applied.
async fn faulted_web(cluster: &NodeCluster, prefix: &str) -> anyhow::Result<(String, Vec<String>)> {
    let (ns, ips) = web_app(cluster, prefix, 1).await?;
    annotate(cluster, &ns, "web", Some(DOWN)).await?;
    until_all_answer(&ips, "/api/x", 503, Duration::ZERO, Instant::now()).await?;
    Ok((ns, ips))
}

#[tokio::test]
async fn controller_pod_deleted_proxies_keep_policy_and_reconnect() -> anyhow::Result<()> {
    let Some(cluster) = NodeCluster::shared_or_skip().await else {
        return Ok(());
    };
    let _story = NodeCluster::exclusive_lock().await;
    let (ns, ips) = faulted_web(cluster, "node-restart").await?;

    cluster
        .kubectl_ok(&[
            "delete",
            "pod",
            "-n",
            SYSTEM,
            "-l",
            WEBHOOK_PODS,
            "--wait=true",
        ])
        .await?;
    // Gone: the proxy keeps the policy it had.
    all_answer_now(&ips, "/api/x", 503).await?;
    cluster
        .rollout_status(SYSTEM, "deploy/faultline-webhook")
        .await?;
    let back = wait_policy_connected(&ips[0], true).await?;
    eprintln!("proxy reconnected {back:?} after the new controller pod was ready");
    all_answer_now(&ips, "/api/x", 503).await?;

    // The new controller streams the next change.
    let start = Instant::now();
    annotate(cluster, &ns, "web", Some(TEAPOT)).await?;
    until_all_answer(&ips, "/api/x", 418, Duration::ZERO, start).await?;
    crate::support::cleanup(cluster, &ns).await;
    Ok(())
}

#[tokio::test]
async fn webhook_down_pods_still_start_and_are_reported() -> anyhow::Result<()> {
    let Some(cluster) = NodeCluster::shared_or_skip().await else {
        return Ok(());
    };
    let _story = NodeCluster::exclusive_lock().await;
    let (ns, ips) = faulted_web(cluster, "node-outage").await?;

    let result = async {
        cluster
            .kubectl_ok(&[
                "scale",
                "-n",
                SYSTEM,
                "deploy/faultline-webhook",
                "--replicas=0",
            ])
            .await?;
        wait_webhook_gone(cluster).await?;
        wait_policy_connected(&ips[0], false).await?;
        all_answer_now(&ips, "/api/x", 503).await?;

        // failurePolicy: Ignore: the pod is created, without the sidecar.
        create_deployment(cluster, &ns, "late", 1, web_spec()).await?;
        let late = ready_app(cluster, &ns, "late", 1, false).await?.remove(0).0;
        anyhow::Ok(apps::name(&late))
    }
    .await;
    cluster
        .kubectl_ok(&[
            "scale",
            "-n",
            SYSTEM,
            "deploy/faultline-webhook",
            "--replicas=1",
        ])
        .await?;
    let late = result?;
    cluster
        .rollout_status(SYSTEM, "deploy/faultline-webhook")
        .await?;
    wait_policy_connected(&ips[0], true).await?;

    let note = wait_event(cluster, &ns, &late, "NotInjected").await?;
    eprintln!("reported: {note}");
    anyhow::ensure!(
        note.contains("rollout restart"),
        "the Event says what to do: {note}"
    );
    let start = Instant::now();
    annotate(cluster, &ns, "web", None).await?;
    until_all_answer(&ips, "/api/x", 200, Duration::ZERO, start).await?;
    crate::support::cleanup(cluster, &ns).await;
    Ok(())
}
