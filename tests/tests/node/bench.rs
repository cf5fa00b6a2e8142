//! Benchmark (run by `bench/node.sh`, ignored by `cargo test`): time from
//! `create` to Ready for 20 pods at once on the node, injected (labelled
//! namespace) vs plain, in the same run, rounds alternating; and where an
//! injected pod's start-up goes, from the kubelet's container timestamps.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use faultline_e2e::node::NodeCluster;
use faultline_e2e::node::apps::{self, is_running_and_ready};
use faultline_e2e::wait_for;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};

use crate::support::{namespace, web_spec};

const PODS: usize = 20;
const ROUNDS: usize = 3;

fn bench_pod(i: usize) -> Pod {
    let mut spec = web_spec();
    if let Some(probe) = spec.containers[0].readiness_probe.as_mut() {
        probe.period_seconds = Some(1);
    }
    Pod {
        metadata: ObjectMeta {
            name: Some(format!("bench-{i}")),
            labels: Some(BTreeMap::from([("app".to_owned(), "bench".to_owned())])),
            ..Default::default()
        },
        spec: Some(spec),
        ..Default::default()
    }
}

/// Creates the pods at once and returns each one's create-to-Ready time
/// (as observed by polling) and the pods as they were when all were ready.
async fn round(
    cluster: &NodeCluster,
    ns: &str,
) -> anyhow::Result<(Duration, Vec<Duration>, Vec<Pod>)> {
    let api: Api<Pod> = Api::namespaced(cluster.client(), ns);
    let start = Instant::now();
    let creates = (0..PODS).map(|i| {
        let api = api.clone();
        async move { api.create(&PostParams::default(), &bench_pod(i)).await }
    });
    for created in futures::future::join_all(creates).await {
        created?;
    }
    let ready_at: std::sync::Mutex<BTreeMap<String, Duration>> = Default::default();
    let pods = wait_for(
        format!("{PODS} ready pods in {ns}"),
        Duration::from_secs(300),
        || {
            let api = api.clone();
            let ready_at = &ready_at;
            async move {
                let pods = api
                    .list(&ListParams::default().labels("app=bench"))
                    .await?
                    .items;
                let mut seen = ready_at.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
                for p in pods.iter().filter(|p| is_running_and_ready(p)) {
                    seen.entry(apps::name(p)).or_insert_with(|| start.elapsed());
                }
                if seen.len() == PODS {
                    Ok(pods)
                } else {
                    Err(anyhow::anyhow!("{} ready", seen.len()))
                }
            }
        },
    )
    .await?;
    let wall = start.elapsed();
    api.delete_collection(
        &DeleteParams::default().grace_period(0),
        &ListParams::default().labels("app=bench"),
    )
    .await?;
    wait_for("bench pods gone", Duration::from_secs(120), || async {
        let n = api
            .list(&ListParams::default().labels("app=bench"))
            .await?
            .items
            .len();
        if n == 0 {
            Ok(())
        } else {
            Err(anyhow::anyhow!("{n} left"))
        }
    })
    .await?;
    let each = ready_at
        .into_inner()
        .map_err(|_| anyhow::anyhow!("poisoned"))?;
    Ok((wall, each.into_values().collect(), pods))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Mean seconds between kubelet timestamps of each pod's start-up steps:
/// created -> faultline-init done -> proxy started -> app started.
fn phases(pods: &[Pod]) -> String {
    let mut sums = [0f64; 3];
    let mut n = 0f64;
    for p in pods {
        let Some(status) = &p.status else { continue };
        let created = p
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_second());
        let init_done = status
            .init_container_statuses
            .iter()
            .flatten()
            .find(|c| c.name == "faultline-init")
            .and_then(|c| {
                c.state
                    .as_ref()?
                    .terminated
                    .as_ref()?
                    .finished_at
                    .as_ref()
                    .map(|t| t.0.as_second())
            });
        let started = |name: &str| {
            status
                .container_statuses
                .iter()
                .flatten()
                .find(|c| c.name == name)
                .and_then(|c| {
                    c.state
                        .as_ref()?
                        .running
                        .as_ref()?
                        .started_at
                        .as_ref()
                        .map(|t| t.0.as_second())
                })
        };
        if let (Some(c), Some(i), Some(px), Some(a)) = (
            created,
            init_done,
            started("faultline-proxy"),
            started("app"),
        ) {
            sums[0] += (i - c) as f64;
            sums[1] += (px - i) as f64;
            sums[2] += (a - px) as f64;
            n += 1.0;
        }
    }
    if n == 0.0 {
        return "no timestamps".into();
    }
    format!(
        "created->init done {:.2}s, init->proxy started {:.2}s, proxy->app started (postStart wait) {:.2}s (means of {n} pods, 1 s resolution)",
        sums[0] / n,
        sums[1] / n,
        sums[2] / n
    )
}

#[tokio::test]
#[ignore = "benchmark: run by bench/node.sh"]
async fn pod_startup_injected_vs_plain() -> anyhow::Result<()> {
    let Some(cluster) = NodeCluster::shared_or_skip().await else {
        return Ok(());
    };
    let _story = NodeCluster::exclusive_lock().await;
    let plain_ns = namespace(cluster, "bench-plain", false).await?;
    let injected_ns = namespace(cluster, "bench-injected", true).await?;
    let (mut plain, mut injected, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let mut last_injected = Vec::new();
    for r in 0..ROUNDS {
        let (p_wall, p_each, _) = round(cluster, &plain_ns).await?;
        let (i_wall, i_each, pods) = round(cluster, &injected_ns).await?;
        anyhow::ensure!(
            pods.iter().all(apps::has_sidecar),
            "injected round without sidecars"
        );
        let ratio = i_wall.as_secs_f64() / p_wall.as_secs_f64();
        println!(
            "BENCH|round {r}: {PODS} pods plain {:.2}s, injected {:.2}s, ratio {ratio:.2}",
            p_wall.as_secs_f64(),
            i_wall.as_secs_f64()
        );
        plain.extend(p_each.iter().map(Duration::as_secs_f64));
        injected.extend(i_each.iter().map(Duration::as_secs_f64));
        ratios.push(ratio);
        last_injected = pods;
    }
    println!(
        "BENCH|create-to-ready p50: plain {:.2}s, injected {:.2}s",
        median(plain),
        median(injected)
    );
    println!(
        "BENCH|wall-time ratio injected/plain (median of {ROUNDS} rounds): {:.2} (goal <= 1.3)",
        median(ratios)
    );
    println!("BENCH|injected start-up: {}", phases(&last_injected));
    crate::support::cleanup(cluster, &plain_ns).await;
    crate::support::cleanup(cluster, &injected_ns).await;
    Ok(())
}
