//! The driver of `bench/controller.sh` (ignored: a measurement, not a test;
//! it asserts nothing about speed). One `faultline-webhook serve` process
//! (binary from `FAULTLINE_WEBHOOK_BIN`) against a real API server,
//! `BENCH_PROXIES` injected-labelled pods and as many simulated proxies: the
//! real stream client (`faultline_proxy::source::stream`) over real TLS, each
//! with a TokenRequest token bound to its pod.
//!
//! The shortcut that makes 10,000 pods affordable on one machine: the pods
//! are created directly through the API, 64 at a time, owned by the
//! Deployment itself (no ReplicaSet, so the workload controllers, which
//! kube-controller-manager throttles to 20 requests/s, create none). Nothing
//! schedules or runs them; the controller sees exactly the objects a real
//! cluster would show it, one owner hop shorter.
//!
//! Prints `key=value` lines for the script: per-proxy annotation-to-applied
//! latencies (p50/p99) against a plain watch on the Deployment seeing the
//! same change (the baseline: the API server's own notification latency),
//! controller RSS and idle CPU, the first connect of every proxy, and a
//! controller restart: how long until every proxy is back, and what that
//! cost the API server (TokenReviews, LISTs, WATCHes, counted by the API
//! server itself).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use faultline_e2e::{ControlPlane, unique_name, wait_for};
use faultline_policy::contract::INJECTED_LABEL;
use faultline_proxy::PolicyStore;
use faultline_proxy::source::stream::{ClientConfig, run as run_client};
use faultline_test_support::fixtures::{app_spec, deployment};
use faultline_test_support::metrics;
use faultline_webhook::certs::CertBundle;
use faultline_webhook::controller::version::policy_version;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use tokio_util::sync::CancellationToken;

/// Requests to the API server in flight while setting up.
const SETUP_PARALLEL: usize = 64;

fn env_num(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn proc_stat(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("VmRSS")?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the `(comm)`: utime and stime are the 12th and 13th.
    let after = stat.rsplit_once(')').map(|(_, r)| r).context("stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|u| u.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok((rss_kib, field(11) + field(12)))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The controller process; killed when dropped.
struct Controller {
    child: tokio::process::Child,
    pid: u32,
    port: u16,
    http: reqwest::Client,
}

impl Controller {
    async fn start(
        cp: &ControlPlane,
        dir: &std::path::Path,
        certs: &CertBundle,
        port: u16,
        log: &str,
        max_streams: usize,
    ) -> anyhow::Result<Self> {
        let bin = std::env::var("FAULTLINE_WEBHOOK_BIN")
            .context("FAULTLINE_WEBHOOK_BIN (set by bench/controller.sh)")?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let child = tokio::process::Command::new(&bin)
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--native-sidecars",
                "false",
                // One replica holds every stream of the run.
                "--max-policy-streams",
                &max_streams.to_string(),
            ])
            .arg("--cert-file")
            .arg(dir.join("tls.crt"))
            .arg("--key-file")
            .arg(dir.join("tls.key"))
            .env("KUBECONFIG", cp.kubeconfig_path())
            .env("FAULTLINE_POD_NAME", "bench-controller")
            .env(
                "FAULTLINE_LOG",
                std::env::var("BENCH_CONTROLLER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("start faultline-webhook")?;
        let pid = child.id().context("pid")?;
        let ca = reqwest::Certificate::from_pem(certs.ca_cert_pem.as_bytes())?;
        let http = reqwest::Client::builder()
            .add_root_certificate(ca)
            .build()?;
        Ok(Self {
            child,
            pid,
            port,
            http,
        })
    }

    async fn metrics(&self) -> Result<String, String> {
        self.http
            .get(format!("https://localhost:{}/metrics", self.port))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .text()
            .await
            .map_err(|e| e.to_string())
    }

    async fn until_published(&self) -> anyhow::Result<()> {
        wait_for(
            "the controller to publish policies",
            Duration::from_secs(120),
            || async {
                let text = self.metrics().await?;
                if metrics::value(&text, "faultline_controller_policy_versions") > 0.0 {
                    Ok(())
                } else {
                    Err("no policy published yet".to_string())
                }
            },
        )
        .await?;
        Ok(())
    }

    async fn kill(mut self) -> anyhow::Result<()> {
        self.child.start_kill()?;
        self.child.wait().await?;
        Ok(())
    }
}

/// API-server request counts by kind, from its own `/metrics`.
#[derive(Clone, Debug, Default)]
struct ApiCounts {
    token_reviews: f64,
    lists: f64,
    watches: f64,
    /// LISTs by resource, so a relisting reflector shows by name.
    lists_by_resource: BTreeMap<String, f64>,
}

impl ApiCounts {
    async fn read(client: &kube::Client) -> anyhow::Result<Self> {
        let text = client
            .request_text(http::Request::get("/metrics").body(Vec::new())?)
            .await?;
        let sum = |label: &str| metrics::sum(&text, "apiserver_request_total", Some(label));
        let mut lists_by_resource = BTreeMap::new();
        for line in text
            .lines()
            .filter(|l| l.starts_with("apiserver_request_total{") && l.contains("verb=\"LIST\""))
        {
            let resource = line
                .split_once("resource=\"")
                .and_then(|(_, r)| r.split_once('"'))
                .map_or("", |(r, _)| r);
            let count: f64 = line
                .rsplit_once(' ')
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0.0);
            *lists_by_resource.entry(resource.to_owned()).or_default() += count;
        }
        Ok(Self {
            token_reviews: sum("resource=\"tokenreviews\""),
            lists: sum("verb=\"LIST\""),
            watches: sum("verb=\"WATCH\""),
            lists_by_resource,
        })
    }

    fn since(self, before: &Self) -> Self {
        let mut lists_by_resource = self.lists_by_resource;
        for (resource, count) in lists_by_resource.iter_mut() {
            *count -= before
                .lists_by_resource
                .get(resource)
                .copied()
                .unwrap_or(0.0);
        }
        lists_by_resource.retain(|_, count| *count > 0.0);
        Self {
            token_reviews: self.token_reviews - before.token_reviews,
            lists: self.lists - before.lists,
            watches: self.watches - before.watches,
            lists_by_resource,
        }
    }
}

/// `n` pods owned by Deployment `owner` (see the module docs), created 64 at
/// a time; returns their names.
async fn create_pods(pods: &Api<Pod>, owner: &Deployment, n: usize) -> anyhow::Result<Vec<String>> {
    let reference = OwnerReference {
        api_version: "apps/v1".into(),
        kind: "Deployment".into(),
        name: owner.metadata.name.clone().context("name")?,
        uid: owner.metadata.uid.clone().context("uid")?,
        controller: Some(true),
        block_owner_deletion: None,
    };
    let names: Vec<String> = (0..n).map(|i| format!("bench-{i:05}")).collect();
    let created: Vec<anyhow::Result<()>> = futures::stream::iter(names.clone())
        .map(|name| {
            let pod = Pod {
                metadata: ObjectMeta {
                    name: Some(name),
                    labels: Some(
                        [
                            ("app".to_string(), "bench-pod".to_string()),
                            (INJECTED_LABEL.to_string(), "true".to_string()),
                        ]
                        .into(),
                    ),
                    owner_references: Some(vec![reference.clone()]),
                    ..ObjectMeta::default()
                },
                spec: Some(app_spec()),
                ..Pod::default()
            };
            async move {
                pods.create(&PostParams::default(), &pod).await?;
                Ok(())
            }
        })
        .buffer_unordered(SETUP_PARALLEL)
        .collect()
        .await;
    created.into_iter().collect::<anyhow::Result<()>>()?;
    Ok(names)
}

/// One pod-bound token per pod, 64 requests at a time, written to `dir`.
async fn write_tokens(
    cp: &ControlPlane,
    ns: &str,
    names: &[String],
    dir: &std::path::Path,
) -> anyhow::Result<()> {
    let written: Vec<anyhow::Result<()>> = futures::stream::iter(names)
        .map(|name| async move {
            let token = cp.pod_token(ns, name, "default", "faultline").await?;
            std::fs::write(dir.join(name), token)?;
            Ok(())
        })
        .buffer_unordered(SETUP_PARALLEL)
        .collect()
        .await;
    written.into_iter().collect()
}

type Applied = Arc<Mutex<BTreeMap<String, Vec<Instant>>>>;

/// Start one simulated proxy per pod; returns their stores.
fn start_proxies(
    names: &[String],
    ns: &str,
    port: u16,
    certs: &CertBundle,
    tokens: &std::path::Path,
    applied: &Applied,
    stop: &CancellationToken,
) -> Vec<PolicyStore> {
    let mut stores = Vec::with_capacity(names.len());
    for name in names {
        let store = PolicyStore::new();
        // The proxy's own backoff settings (`ClientConfig::from_proxy_config`).
        let config = ClientConfig {
            url: format!("https://localhost:{port}"),
            ca_pem: certs.ca_cert_pem.clone().into_bytes(),
            token_file: tokens.join(name),
            pod: Some((ns.to_string(), name.clone())),
            heartbeat_timeout: Duration::from_secs(30),
            backoff_base: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
        };
        tokio::spawn(run_client(config, store.clone(), stop.clone()));
        let mut rx = store.subscribe();
        let applied = applied.clone();
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let version = rx.borrow_and_update().version.clone();
                if let Ok(mut map) = applied.lock() {
                    map.entry(version).or_default().push(Instant::now());
                }
            }
        });
        stores.push(store);
    }
    stores
}

/// Waits until every store is connected on `version`; returns how long it took.
async fn all_connected(
    stores: &[PolicyStore],
    version: &str,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    loop {
        let c = stores
            .iter()
            .filter(|s| s.connected() && s.current().version == version)
            .count();
        if c == stores.len() {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() > timeout {
            bail!("{c}/{} proxies connected after {timeout:?}", stores.len());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// Two workers: the simulated proxies share the machine's two cores with the
// controller and the API server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark driver: run by bench/controller.sh"]
async fn controller_bench() -> anyhow::Result<()> {
    let Some(cp) = ControlPlane::shared_or_skip().await else {
        return Ok(());
    };
    let n = env_num("BENCH_PROXIES", 200);
    let rounds = env_num("BENCH_ROUNDS", 20);
    let client = cp.client();
    if Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .get_opt("faultline-system")
        .await?
        .is_none()
    {
        cp.create_namespace("faultline-system", &[]).await?;
    }
    let ns = unique_name("bench");
    cp.create_namespace(&ns, &[]).await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let owner = deployments
        .create(
            &PostParams::default(),
            &deployment("bench").replicas(0).build(),
        )
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let t = Instant::now();
    let pod_names = create_pods(&pods, &owner, n).await?;
    println!("setup_pods_s={:.1}", t.elapsed().as_secs_f64());
    let tokens = tempfile::tempdir()?;
    let t = Instant::now();
    write_tokens(cp, &ns, &pod_names, tokens.path()).await?;
    println!("setup_tokens_s={:.1}", t.elapsed().as_secs_f64());

    // The controller process.
    let dir = tempfile::tempdir()?;
    let certs = faultline_webhook::certs::generate(
        &["localhost".into(), "127.0.0.1".into()],
        time::OffsetDateTime::now_utc(),
    )?;
    std::fs::write(dir.path().join("tls.crt"), &certs.cert_pem)?;
    std::fs::write(dir.path().join("tls.key"), &certs.key_pem)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let log = std::env::var("BENCH_LOG").unwrap_or_else(|_| "/dev/null".into());
    let controller = Controller::start(cp, dir.path(), &certs, port, &log, n).await?;
    controller.until_published().await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss_idle_kib, _) = proc_stat(controller.pid)?;

    // The simulated proxies, all at once: the first connect is a storm too.
    let stop = CancellationToken::new();
    let applied: Applied = Arc::default();
    let before = ApiCounts::read(&client).await?;
    let stores = start_proxies(
        &pod_names,
        &ns,
        port,
        &certs,
        tokens.path(),
        &applied,
        &stop,
    );
    let connect = all_connected(&stores, "none", Duration::from_secs(300)).await?;
    let cost = ApiCounts::read(&client).await?.since(&before);
    println!("connect_all_s={:.1}", connect.as_secs_f64());
    println!("connect_token_reviews={}", cost.token_reviews);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss_streams_kib, ticks0) = proc_stat(controller.pid)?;
    let idle = Duration::from_secs(env_num("BENCH_IDLE_SECONDS", 10) as u64);
    tokio::time::sleep(idle).await;
    let (_, ticks1) = proc_stat(controller.pid)?;
    // USER_HZ is 100 on Linux.
    let idle_cpu_pct = (ticks1 - ticks0) as f64 / 100.0 / idle.as_secs_f64() * 100.0;

    let lat = annotation_rounds(&deployments, &stores, &applied, rounds).await?;
    let (rss_after_rounds_kib, _) = proc_stat(controller.pid)?;

    // Restart: every stream breaks at once and comes back to a controller
    // with an empty TokenReview cache.
    let version = stores
        .first()
        .map(|s| s.current().version.clone())
        .unwrap_or_default();
    let before = ApiCounts::read(&client).await?;
    controller.kill().await?;
    let restarted = Instant::now();
    let controller = Controller::start(cp, dir.path(), &certs, port, &log, n).await?;
    // Counted by the new process, so a proxy that has not noticed the old
    // one died does not count as back.
    wait_for(
        "every proxy back on the restarted controller",
        Duration::from_secs(300),
        || async {
            let text = controller.metrics().await?;
            let back = metrics::value(&text, "faultline_controller_connected_proxies");
            if back >= n as f64 {
                Ok(())
            } else {
                Err(format!("{back}/{n} streams"))
            }
        },
    )
    .await?;
    all_connected(&stores, &version, Duration::from_secs(60)).await?;
    let settle = restarted.elapsed();
    let restart_cost = ApiCounts::read(&client).await?.since(&before);
    let text = controller.metrics().await.unwrap_or_default();
    let limited = metrics::sum(
        &text,
        "faultline_controller_token_reviews_limited_total",
        None,
    );
    let (rss_restart_kib, _) = proc_stat(controller.pid)?;
    stop.cancel();

    println!("proxies={n}");
    println!("rounds={rounds}");
    println!("samples={}", lat.samples);
    println!("applied_p50_ms={:.1}", lat.applied_p50);
    println!("applied_p99_ms={:.1}", lat.applied_p99);
    println!("all_applied_p50_ms={:.1}", lat.all_p50);
    println!("all_applied_max_ms={:.1}", lat.all_max);
    println!("watch_p50_ms={:.1}", lat.watch_p50);
    println!("watch_p99_ms={:.1}", lat.watch_p99);
    println!("rss_idle_kib={rss_idle_kib}");
    println!("rss_streams_kib={rss_streams_kib}");
    println!("rss_after_rounds_kib={rss_after_rounds_kib}");
    println!("idle_cpu_pct={idle_cpu_pct:.2}");
    println!("restart_settle_s={:.1}", settle.as_secs_f64());
    println!("restart_token_reviews={}", restart_cost.token_reviews);
    println!("restart_lists={}", restart_cost.lists);
    println!("restart_watches={}", restart_cost.watches);
    let by_resource: Vec<String> = restart_cost
        .lists_by_resource
        .iter()
        .map(|(resource, count)| format!("{resource}:{count}"))
        .collect();
    println!("restart_lists_by_resource={}", by_resource.join(","));
    println!("restart_limited={limited}");
    println!("rss_restart_kib={rss_restart_kib}");
    drop(controller);
    Ok(())
}

struct Latencies {
    samples: usize,
    applied_p50: f64,
    applied_p99: f64,
    all_p50: f64,
    all_max: f64,
    watch_p50: f64,
    watch_p99: f64,
}

/// `rounds` annotation changes; per-proxy apply latencies and the baseline.
async fn annotation_rounds(
    deployments: &Api<Deployment>,
    stores: &[PolicyStore],
    applied: &Applied,
    rounds: usize,
) -> anyhow::Result<Latencies> {
    let n = stores.len();
    // Baseline: a plain watch on the Deployment sees each change.
    let watched: Arc<Mutex<BTreeMap<String, Instant>>> = Arc::default();
    let watch_task = {
        let watched = watched.clone();
        let api = deployments.clone();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(watcher(api, watcher::Config::default()));
            while let Some(Ok(event)) = stream.next().await {
                if let watcher::Event::Apply(d) = event {
                    let text = d
                        .metadata
                        .annotations
                        .and_then(|a| a.get("faultline.dev/faults").cloned());
                    if let (Some(text), Ok(mut map)) = (text, watched.lock()) {
                        map.entry(text).or_insert_with(Instant::now);
                    }
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut latencies = Vec::new();
    let mut all_applied = Vec::new();
    let mut watch_latencies = Vec::new();
    for round in 0..rounds {
        let text = format!(
            "rules:\n- name: bench-{round}\n  match: {{direction: inbound}}\n  abort: {{status: 503}}\n"
        );
        let version = policy_version(Some(&text));
        let patch =
            serde_json::json!({"metadata": {"annotations": {"faultline.dev/faults": text}}});
        let t0 = Instant::now();
        deployments
            .patch_metadata("bench", &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        // Every apply is recorded with its own time by the recorder tasks.
        let recorded = wait_for("every apply recorded", Duration::from_secs(60), || async {
            let times = applied
                .lock()
                .ok()
                .and_then(|m| m.get(&version).cloned())
                .unwrap_or_default();
            if times.len() >= n {
                Ok(times)
            } else {
                Err(format!("{}/{n} applied", times.len()))
            }
        })
        .await?;
        let ms: Vec<f64> = recorded
            .iter()
            .map(|t| t.duration_since(t0).as_secs_f64() * 1000.0)
            .collect();
        all_applied.push(ms.iter().copied().fold(0.0, f64::max));
        latencies.extend(ms);
        if let Some(t) = watched.lock().ok().and_then(|m| m.get(&text).copied()) {
            watch_latencies.push(t.duration_since(t0).as_secs_f64() * 1000.0);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    watch_task.abort();
    for v in [&mut latencies, &mut all_applied, &mut watch_latencies] {
        v.sort_by(f64::total_cmp);
    }
    Ok(Latencies {
        samples: latencies.len(),
        applied_p50: percentile(&latencies, 0.50),
        applied_p99: percentile(&latencies, 0.99),
        all_p50: percentile(&all_applied, 0.50),
        all_max: all_applied.last().copied().unwrap_or(f64::NAN),
        watch_p50: percentile(&watch_latencies, 0.50),
        watch_p99: percentile(&watch_latencies, 0.99),
    })
}
