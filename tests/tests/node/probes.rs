//! Probes keep their meaning with the sidecar: a `tcpSocket` liveness probe
//! on a captured port fails when the app stops listening (the webhook points
//! it at the proxy's admin port, which checks the app on loopback), so the
//! kubelet restarts the app, with or without an active policy.

use faultline_e2e::node::NodeCluster;
use faultline_e2e::node::apps::{self, APP_PORT};
use faultline_e2e::wait_for;
use k8s_openapi::api::core::v1::{Container, ContainerPort, Pod, PodSpec, Probe, TCPSocketAction};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, ListParams};

use crate::support::{WAIT, annotate, create_deployment, namespace, ready_app};

/// httpd in the background, the shell in front: killing httpd closes the
/// port while the container keeps running, as a wedged app would.
fn listener_app() -> PodSpec {
    PodSpec {
        containers: vec![Container {
            ports: Some(vec![ContainerPort {
                container_port: i32::from(APP_PORT),
                name: Some("http".into()),
                ..Default::default()
            }]),
            liveness_probe: Some(Probe {
                tcp_socket: Some(TCPSocketAction {
                    port: IntOrString::String("http".into()),
                    host: None,
                }),
                period_seconds: Some(2),
                failure_threshold: Some(2),
                ..Default::default()
            }),
            ..apps::busybox(
                "mkdir -p /www && echo ok > /www/index.html && httpd -p 8080 -h /www && exec sleep 3600",
            )
        }],
        termination_grace_period_seconds: Some(1),
        ..Default::default()
    }
}

fn restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == "app"))
        .map_or(0, |c| c.restart_count)
}

async fn kill_listener_and_wait_for_restart(
    cluster: &NodeCluster,
    ns: &str,
    pod: &str,
    before: i32,
) -> anyhow::Result<()> {
    let (ok, out) = cluster.exec(ns, pod, "killall httpd").await?;
    anyhow::ensure!(ok, "killall httpd: {out}");
    let pods: Api<Pod> = Api::namespaced(cluster.client(), ns);
    wait_for(
        format!("the kubelet to restart {pod}'s app"),
        WAIT,
        || async {
            let pod = pods.get(pod).await?;
            let now = restarts(&pod);
            if now > before {
                Ok(())
            } else {
                Err(anyhow::anyhow!(
                    "{now} restarts: {}",
                    apps::describe(&[pod])
                ))
            }
        },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_tcp_liveness_probe_fails_when_the_app_stops_listening() -> anyhow::Result<()> {
    let Some(cluster) = NodeCluster::shared_or_skip().await else {
        return Ok(());
    };
    let _story = NodeCluster::shared_lock().await;
    let ns = namespace(cluster, "node-probes", true).await?;
    create_deployment(cluster, &ns, "probed", 1, listener_app()).await?;
    let (pod, _) = ready_app(cluster, &ns, "probed", 1, true).await?.remove(0);
    let name = apps::name(&pod);
    let probe = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.iter().find(|c| c.name == "app"))
        .and_then(|c| c.liveness_probe.clone());
    let path = probe.and_then(|p| p.http_get).and_then(|h| h.path);
    anyhow::ensure!(
        path.as_deref() == Some("/probe/tcp/8080"),
        "the injected probe: {path:?}"
    );

    kill_listener_and_wait_for_restart(cluster, &ns, &name, 0).await?;
    // Again with a policy that aborts every inbound request: probes are
    // not faulted, and the check still sees the app, not the proxy.
    annotate(
        cluster,
        &ns,
        "probed",
        Some("rules:\n- name: down\n  match: {direction: inbound}\n  abort: {status: 503}\n"),
    )
    .await?;
    let pods: Api<Pod> = Api::namespaced(cluster.client(), &ns);
    let ready = cluster.ready_pods(&ns, "app=probed", 1).await?;
    let before = restarts(&ready[0]);
    kill_listener_and_wait_for_restart(cluster, &ns, &name, before).await?;
    let list = pods
        .list(&ListParams::default().labels("app=probed"))
        .await?
        .items;
    eprintln!(
        "restarted by its tcpSocket probe: {}",
        apps::describe(&list)
    );
    crate::support::cleanup(cluster, &ns).await;
    Ok(())
}
