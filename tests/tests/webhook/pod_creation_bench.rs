//! Benchmark (run by `bench/apiserver.sh`, ignored by `cargo test`): the
//! cost of injection as users feel it, i.e. the time kube-apiserver takes to
//! create pods in an opted-in namespace (every pod goes through `/mutate`)
//! against an unlabelled one (the mutating webhook is never called), in the
//! same run on the same control plane. Rounds alternate between the cases
//! so drift on a shared machine hits all alike.
//!
//! The same pair with a typical application pod (two containers with env,
//! probes, resources) shows the cost relative to a realistic pod size.
//! Two more cases split the difference into its parts: a pod that is
//! already injected (the spec the API server stored for an injected pod)
//! created in the unlabelled namespace (cost of the bigger pod alone), and
//! in the opted-in namespace (plus the webhook round trip, which answers
//! "already injected" with no patch). Faultline's validating webhook sees
//! pods of both namespaces, as it does in a cluster where it is installed.
//!
//! Prints `BENCH|`-prefixed table lines. Asserts nothing about timing (a
//! benchmark reports, a test verdict must not depend on machine load), only
//! that every pod was created, injected or not as expected.

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
use kube::api::{Api, ObjectMeta, PostParams};

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

/// One measured case: where pods are created and from which template.
struct Case {
    label: &'static str,
    pods: Api<Pod>,
    template: Pod,
    expect_injected: bool,
    wall: Duration,
    latencies: Vec<Duration>,
}

impl Case {
    fn pod(&self, name: String) -> Pod {
        let mut pod = self.template.clone();
        pod.metadata.name = Some(name);
        pod
    }

    /// Creates `count` pods named `prefix-N` with `concurrency` requests in
    /// flight, recording each creation's latency and the wall time.
    async fn run(&mut self, prefix: &str, count: usize, concurrency: usize) -> anyhow::Result<()> {
        let this = &*self;
        let started = Instant::now();
        let latencies: Vec<Duration> = stream::iter(0..count)
            .map(|i| async move {
                let name = format!("{prefix}-{i}");
                let t = Instant::now();
                let pod = this
                    .pods
                    .create(&PostParams::default(), &this.pod(name.clone()))
                    .await
                    .with_context(|| format!("create pod {name} ({})", this.label))?;
                let took = t.elapsed();
                ensure!(
                    is_injected(&pod) == this.expect_injected,
                    "pod {name} ({}): injected is not {}",
                    this.label,
                    this.expect_injected
                );
                Ok(took)
            })
            .buffer_unordered(concurrency)
            .try_collect()
            .await?;
        let wall = started.elapsed();
        if !prefix.starts_with("warm") {
            self.wall += wall;
            self.latencies.extend(latencies);
        }
        Ok(())
    }

    fn percentile_ms(&mut self, p: f64) -> f64 {
        self.latencies.sort();
        let idx = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies
            .get(idx)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    }

    fn row(&mut self, baseline_wall: Duration) -> String {
        let n = self.latencies.len() as f64;
        let (p50, p99) = (self.percentile_ms(0.50), self.percentile_ms(0.99));
        format!(
            "BENCH|{label:<34} {pods:>5} {wall:>8.2} {rate:>7.1} {p50:>7.2} {p99:>7.2} {ratio:>6.3}",
            label = self.label,
            pods = self.latencies.len(),
            wall = self.wall.as_secs_f64(),
            rate = n / self.wall.as_secs_f64(),
            ratio = self.wall.as_secs_f64() / baseline_wall.as_secs_f64(),
        )
    }
}

/// A more typical application pod than [`plain_pod`]: two containers with
/// ports, env, probes, resources and a config volume. The webhook adds the
/// same bytes to any pod, so the relative cost depends on the pod's size;
/// this case shows it for a pod of an ordinary Deployment.
fn app_pod() -> anyhow::Result<Pod> {
    let container = |name: &str, port: u16| {
        serde_json::json!({
            "name": name,
            "image": format!("registry.invalid/{name}:1.4.2"),
            "ports": [{"name": "http", "containerPort": port}],
            "env": (0..6).map(|i| serde_json::json!({"name": format!("SETTING_{i}"), "value": format!("value-{i}")})).collect::<Vec<_>>(),
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
            "readinessProbe": {"httpGet": {"path": "/ready", "port": port}, "periodSeconds": 5},
            "livenessProbe": {"httpGet": {"path": "/health", "port": port}, "periodSeconds": 10},
            "volumeMounts": [{"name": "config", "mountPath": "/etc/app", "readOnly": true}],
        })
    };
    Ok(serde_json::from_value(serde_json::json!({
        "metadata": {"labels": {"app": "shop", "tier": "backend"},
                     "annotations": {"prometheus.io/scrape": "true"}},
        "spec": {
            "containers": [container("app", 8080), container("worker", 9090)],
            "volumes": [{"name": "config", "configMap": {"name": "app-config"}}],
        },
    }))?)
}

/// The pod as the API server stores it after injection, ready to be
/// created again: identity and server-set fields removed.
async fn injected_template(in_labeled: &Api<Pod>) -> anyhow::Result<Pod> {
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let stored = in_labeled.create(&dry, &plain_pod("template")).await?;
    ensure!(is_injected(&stored), "dry-run pod was not injected");
    Ok(Pod {
        metadata: ObjectMeta {
            labels: stored.metadata.labels,
            annotations: stored.metadata.annotations,
            ..Default::default()
        },
        spec: stored.spec,
        status: None,
    })
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
    let injected = injected_template(&in_labeled).await?;
    let case = |label, pods: &Api<Pod>, template: &Pod, expect_injected| Case {
        label,
        pods: pods.clone(),
        template: template.clone(),
        expect_injected,
        wall: Duration::ZERO,
        latencies: Vec::new(),
    };
    let plain = plain_pod("");
    let app = app_pod()?;
    let mut cases = [
        case("unlabeled (baseline)", &in_unlabeled, &plain, false),
        case(
            "labeled: injected by the webhook",
            &in_labeled,
            &plain,
            true,
        ),
        case(
            "unlabeled, pre-injected spec",
            &in_unlabeled,
            &injected,
            true,
        ),
        case(
            "labeled, pre-injected (no patch)",
            &in_labeled,
            &injected,
            true,
        ),
        case("unlabeled, app pod", &in_unlabeled, &app, false),
        case("labeled, app pod", &in_labeled, &app, true),
    ];

    // Warm-up: connections to etcd and the webhook, caches, allocations.
    for (i, c) in cases.iter_mut().enumerate() {
        c.run(&format!("warm{i}"), WARMUP_PODS, concurrency).await?;
    }
    let per_round = pods_total.div_ceil(ROUNDS);
    for round in 0..ROUNDS {
        for (i, c) in cases.iter_mut().enumerate() {
            c.run(&format!("r{round}c{i}"), per_round, concurrency)
                .await?;
        }
    }

    println!(
        "BENCH|kube-apiserver v1.20 pod creation, {} pods per case, {concurrency} in flight",
        per_round * ROUNDS
    );
    println!(
        "BENCH|{:<34} {:>5} {:>8} {:>7} {:>7} {:>7} {:>6}",
        "case", "pods", "wall_s", "pods/s", "p50_ms", "p99_ms", "ratio"
    );
    let baseline = cases[0].wall;
    for c in &mut cases {
        println!("{}", c.row(baseline));
    }
    let ratio = |with: usize, without: usize| {
        cases[with].wall.as_secs_f64() / cases[without].wall.as_secs_f64()
    };
    println!(
        "BENCH|injection cost (labeled / unlabeled wall time): minimal pod {:.3}, app pod {:.3} (target <= 1.15)",
        ratio(1, 0),
        ratio(5, 4)
    );

    registration.delete(&client).await?;
    webhook.stop().await?;
    cp.check_running()?;
    Ok(())
}
