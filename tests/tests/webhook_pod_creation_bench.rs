//! Benchmark (run by `bench/apiserver.sh`, ignored by `cargo test`): the
//! cost of injection as users feel it, i.e. the time kube-apiserver takes to
//! create pods in an opted-in namespace (every pod goes through the webhook)
//! against an unlabelled one (the webhook is never called), in the same run
//! on the same control plane. Rounds alternate between the two namespaces
//! so drift on a shared machine hits both alike.
//!
//! Prints `BENCH|`-prefixed table lines; asserts nothing about timing
//! (performance is judged from the report, not by a test verdict), only
//! that every pod was created and injected or not as expected.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use faultline_e2e::webhook::{
    RunningWebhook, SCOPE_LABEL, is_injected, plain_pod, register_scoped, wait_until_injecting,
};
use faultline_e2e::{ControlPlane, unique_name};
use faultline_webhook::Config;
use faultline_webhook::config::NAMESPACE_INJECTION_LABEL;
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};

/// Env overrides for quick local runs.
const PODS_ENV: &str = "FAULTLINE_BENCH_PODS";
const CONCURRENCY_ENV: &str = "FAULTLINE_BENCH_CONCURRENCY";
const DEFAULT_PODS: usize = 300;
const DEFAULT_CONCURRENCY: usize = 8;
const ROUNDS: usize = 3;
const WARMUP_PODS: usize = 20;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Creates `count` pods named `prefix-N` with `concurrency` requests in
/// flight; returns each creation's latency. Fails if any pod's injection
/// state is not `injected`.
async fn create_pods(
    pods: &Api<Pod>,
    prefix: &str,
    count: usize,
    concurrency: usize,
    injected: bool,
) -> anyhow::Result<Vec<Duration>> {
    stream::iter(0..count)
        .map(|i| async move {
            let started = Instant::now();
            let pod = pods
                .create(&PostParams::default(), &plain_pod(&format!("{prefix}-{i}")))
                .await
                .with_context(|| format!("create pod {prefix}-{i}"))?;
            let took = started.elapsed();
            ensure!(
                is_injected(&pod) == injected,
                "pod {prefix}-{i}: injected != {injected}"
            );
            Ok(took)
        })
        .buffer_unordered(concurrency)
        .try_collect()
        .await
}

#[derive(Default)]
struct Totals {
    wall: Duration,
    latencies: Vec<Duration>,
}

impl Totals {
    fn percentile_ms(&mut self, p: f64) -> f64 {
        self.latencies.sort();
        let idx = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies
            .get(idx)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    }
    fn row(&mut self, name: &str) -> String {
        let n = self.latencies.len() as f64;
        format!(
            "BENCH|{name:<12} {pods:>6} {wall:>9.2} {rate:>8.1} {p50:>8.2} {p99:>8.2}",
            pods = self.latencies.len(),
            wall = self.wall.as_secs_f64(),
            rate = n / self.wall.as_secs_f64(),
            p50 = self.percentile_ms(0.50),
            p99 = self.percentile_ms(0.99),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run by bench/apiserver.sh"]
async fn pod_creation_with_and_without_injection() -> anyhow::Result<()> {
    let Some(cp) = ControlPlane::shared_or_skip().await else {
        return Ok(());
    };
    let pods_total = env_usize(PODS_ENV, DEFAULT_PODS);
    let concurrency = env_usize(CONCURRENCY_ENV, DEFAULT_CONCURRENCY);
    let client = cp.client();
    let scope = unique_name("bench");
    let webhook = RunningWebhook::start(Config::default()).await?;
    let registration = register_scoped(&client, &scope, &webhook).await?;
    let labeled = unique_name("bench-labeled");
    let unlabeled = unique_name("bench-unlabeled");
    cp.create_namespace(
        &labeled,
        &[
            (SCOPE_LABEL, &scope),
            (NAMESPACE_INJECTION_LABEL, "enabled"),
        ],
    )
    .await?;
    cp.create_namespace(&unlabeled, &[(SCOPE_LABEL, &scope)])
        .await?;
    wait_until_injecting(&client, &labeled).await?;
    let in_labeled: Api<Pod> = Api::namespaced(client.clone(), &labeled);
    let in_unlabeled: Api<Pod> = Api::namespaced(client.clone(), &unlabeled);

    // Warm-up: connections to etcd and the webhook, caches, allocations.
    create_pods(&in_unlabeled, "warm", WARMUP_PODS, concurrency, false).await?;
    create_pods(&in_labeled, "warm", WARMUP_PODS, concurrency, true).await?;

    let per_round = pods_total.div_ceil(ROUNDS);
    let (mut with, mut without) = (Totals::default(), Totals::default());
    for round in 0..ROUNDS {
        let prefix = format!("r{round}");
        let started = Instant::now();
        without
            .latencies
            .extend(create_pods(&in_unlabeled, &prefix, per_round, concurrency, false).await?);
        without.wall += started.elapsed();
        let started = Instant::now();
        with.latencies
            .extend(create_pods(&in_labeled, &prefix, per_round, concurrency, true).await?);
        with.wall += started.elapsed();
    }

    println!(
        "BENCH|kube-apiserver v1.20 pod creation, {} pods per namespace, {concurrency} in flight",
        per_round * ROUNDS
    );
    println!(
        "BENCH|{:<12} {:>6} {:>9} {:>8} {:>8} {:>8}",
        "namespace", "pods", "wall_s", "pods/s", "p50_ms", "p99_ms"
    );
    println!("{}", without.row("unlabeled"));
    println!("{}", with.row("labeled"));
    println!(
        "BENCH|ratio labeled/unlabeled (wall time): {:.3} (target <= 1.15)",
        with.wall.as_secs_f64() / without.wall.as_secs_f64()
    );

    registration.delete(&client).await?;
    webhook.stop().await?;
    cp.check_running()?;
    Ok(())
}
