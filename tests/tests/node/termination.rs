//! Graceful termination with the sidecar: during a rolling update under
//! steady traffic, no request fails. The app keeps serving for a few
//! seconds after its pod is deleted (a preStop hook, as real apps do while
//! endpoints converge), and the proxy keeps carrying that traffic instead
//! of closing its listeners at SIGTERM.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use faultline_e2e::node::NodeCluster;
use faultline_e2e::node::apps::{self, APP_PORT, is_running_and_ready};
use k8s_openapi::api::core::v1::{ExecAction, Lifecycle, LifecycleHandler, Pod};
use kube::api::{Api, ListParams};
use tokio::sync::RwLock;

use crate::support::{create_deployment, namespace, ready_app, web_spec};

/// The IPs a load balancer would use: ready pods not being deleted.
async fn endpoints(pods: &Api<Pod>) -> Vec<String> {
    let Ok(list) = pods.list(&ListParams::default().labels("app=steady")).await else {
        return Vec::new();
    };
    list.items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && is_running_and_ready(p))
        .filter_map(|p| apps::pod_ip(p).ok())
        .collect()
}

#[tokio::test]
async fn a_rolling_update_under_steady_traffic_loses_no_request() -> anyhow::Result<()> {
    let Some(cluster) = NodeCluster::shared_or_skip().await else {
        return Ok(());
    };
    let _story = NodeCluster::shared_lock().await;
    let ns = namespace(cluster, "node-rollout", true).await?;
    let mut spec = web_spec();
    if let Some(app) = spec.containers.first_mut() {
        app.lifecycle = Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                exec: Some(ExecAction {
                    command: Some(vec!["sleep".into(), "3".into()]),
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    spec.termination_grace_period_seconds = Some(20);
    create_deployment(cluster, &ns, "steady", 2, spec).await?;
    ready_app(cluster, &ns, "steady", 2, true).await?;

    let pods: Api<Pod> = Api::namespaced(cluster.client(), &ns);
    let targets = Arc::new(RwLock::new(endpoints(&pods).await));
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let watcher = {
        let (targets, stop, pods) = (targets.clone(), stop.clone(), pods.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Acquire) {
                let now = endpoints(&pods).await;
                if !now.is_empty() {
                    *targets.write().await = now;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    let client = {
        let (targets, stop, ok, failed) =
            (targets.clone(), stop.clone(), ok.clone(), failed.clone());
        tokio::spawn(async move {
            let http = apps::http_client();
            let mut errors = Vec::new();
            let mut n = 0usize;
            while !stop.load(Ordering::Acquire) {
                let ip = {
                    let t = targets.read().await;
                    t.get(n % t.len().max(1)).cloned()
                };
                n += 1;
                if let Some(ip) = ip {
                    let url = format!("http://{ip}:{APP_PORT}/clean.html");
                    match apps::get(&http, &url).await {
                        Ok((200, _, _)) => {
                            ok.fetch_add(1, Ordering::AcqRel);
                        }
                        other => {
                            failed.fetch_add(1, Ordering::AcqRel);
                            errors.push(format!("{url}: {other:?}"));
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            errors
        })
    };

    cluster
        .kubectl_ok(&["rollout", "restart", "-n", &ns, "deploy/steady"])
        .await?;
    cluster.rollout_status(&ns, "deploy/steady").await?;
    // Until the old pods are gone, not just replaced.
    faultline_e2e::wait_for(
        "the old pods to be gone",
        Duration::from_secs(60),
        || async {
            let n = pods
                .list(&ListParams::default().labels("app=steady"))
                .await?
                .items
                .len();
            if n == 2 {
                Ok(())
            } else {
                Err(anyhow::anyhow!("{n} pods"))
            }
        },
    )
    .await?;
    stop.store(true, Ordering::Release);
    let errors = client.await?;
    watcher.await?;
    let (ok, failed) = (ok.load(Ordering::Acquire), failed.load(Ordering::Acquire));
    eprintln!("rolling update under traffic: {ok} requests served, {failed} failed");
    anyhow::ensure!(
        failed == 0,
        "{failed} requests failed: {:?}",
        &errors[..errors.len().min(5)]
    );
    anyhow::ensure!(ok > 100, "only {ok} requests were sent");
    crate::support::cleanup(cluster, &ns).await;
    Ok(())
}
