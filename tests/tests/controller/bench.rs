//! The driver of `bench/controller.sh` (ignored: a measurement, not a test;
//! it asserts nothing about speed). One `faultline-webhook serve` process
//! (binary from `FAULTLINE_WEBHOOK_BIN`) against a real API server, a
//! Deployment of `BENCH_PROXIES` injected-labelled pods, and as many simulated
//! proxies: the real stream client with a TokenRequest token per pod.
//!
//! Prints `key=value` lines for the script: per-proxy annotation-to-applied
//! latencies (p50/p99), the same change seen by a plain watch on the
//! Deployment (the baseline: the API server's own notification latency),
//! controller RSS before/after the streams connect and CPU while idle.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use faultline_e2e::{ControlPlane, unique_name, wait_for};
use faultline_policy::contract::INJECTED_LABEL;
use faultline_proxy::PolicyStore;
use faultline_proxy::source::stream::{ClientConfig, run as run_client};
use faultline_test_support::fixtures::deployment;
use faultline_webhook::controller::version::policy_version;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use tokio_util::sync::CancellationToken;

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
    let ticks = fields
        .get(11)
        .and_then(|u| u.parse::<u64>().ok())
        .unwrap_or(0)
        + fields
            .get(12)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0);
    Ok((rss_kib, ticks))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

struct ServerProcess(tokio::process::Child);

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

#[tokio::test]
#[ignore = "benchmark driver: run by bench/controller.sh"]
async fn controller_bench() -> anyhow::Result<()> {
    let Some(cp) = ControlPlane::shared_or_skip().await else {
        return Ok(());
    };
    let bin = std::env::var("FAULTLINE_WEBHOOK_BIN")
        .context("FAULTLINE_WEBHOOK_BIN (set by bench/controller.sh)")?;
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
    deployments
        .create(&PostParams::default(), &bench_deployment(i32::try_from(n)?))
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pod_names: Vec<String> =
        wait_for(format!("{n} pods"), Duration::from_secs(300), || async {
            let list = pods
                .list(&ListParams::default().labels("app=bench"))
                .await
                .map_err(|e| e.to_string())?;
            if list.items.len() == n {
                Ok(list
                    .items
                    .into_iter()
                    .filter_map(|p| p.metadata.name)
                    .collect())
            } else {
                Err(format!("{} pods", list.items.len()))
            }
        })
        .await?;

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
    let log =
        std::fs::File::create(std::env::var("BENCH_LOG").unwrap_or_else(|_| "/dev/null".into()))?;
    let child = tokio::process::Command::new(&bin)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--native-sidecars",
            "false",
        ])
        .arg("--cert-file")
        .arg(dir.path().join("tls.crt"))
        .arg("--key-file")
        .arg(dir.path().join("tls.key"))
        .env("KUBECONFIG", cp.kubeconfig_path())
        .env("FAULTLINE_POD_NAME", "bench-controller")
        .env("FAULTLINE_LOG", "warn")
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("start faultline-webhook")?;
    let pid = child.id().context("pid")?;
    let _server = ServerProcess(child);
    let ca = reqwest::Certificate::from_pem(certs.ca_cert_pem.as_bytes())?;
    let http = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()?;
    let metrics_url = format!("https://localhost:{port}/metrics");
    wait_for(
        "the controller to publish policies",
        Duration::from_secs(60),
        || async {
            let text = http
                .get(&metrics_url)
                .send()
                .await
                .map_err(|e| e.to_string())?
                .text()
                .await
                .map_err(|e| e.to_string())?;
            if text.lines().any(|l| {
                l.starts_with("faultline_controller_policy_versions ") && !l.ends_with(" 0")
            }) {
                Ok(())
            } else {
                Err("no policy published yet".to_string())
            }
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss_idle_kib, _) = proc_stat(pid)?;

    // The simulated proxies.
    let stop = CancellationToken::new();
    let applied: Arc<Mutex<BTreeMap<String, Vec<Instant>>>> = Arc::default();
    let mut stores = Vec::new();
    let tokens = tempfile::tempdir()?;
    for name in &pod_names {
        let token = cp.pod_token(&ns, name, "default", "faultline").await?;
        let file = tokens.path().join(name);
        std::fs::write(&file, token)?;
        let store = PolicyStore::new();
        let config = ClientConfig {
            url: format!("https://localhost:{port}"),
            ca_pem: certs.ca_cert_pem.clone().into_bytes(),
            token_file: file,
            pod: Some((ns.clone(), name.clone())),
            heartbeat_timeout: Duration::from_secs(30),
            backoff_base: Duration::from_millis(250),
            backoff_max: Duration::from_secs(5),
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
    wait_for(
        format!("{n} proxies connected"),
        Duration::from_secs(120),
        || async {
            let c = stores
                .iter()
                .filter(|s| s.connected() && s.current().version == "none")
                .count();
            if c == n {
                Ok(())
            } else {
                Err(format!("{c} connected"))
            }
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss_streams_kib, ticks0) = proc_stat(pid)?;
    let idle = Duration::from_secs(env_num("BENCH_IDLE_SECONDS", 10) as u64);
    tokio::time::sleep(idle).await;
    let (_, ticks1) = proc_stat(pid)?;
    // USER_HZ is 100 on Linux.
    let idle_cpu_pct = (ticks1 - ticks0) as f64 / 100.0 / idle.as_secs_f64() * 100.0;

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
        let deadline = t0 + Duration::from_secs(30);
        loop {
            let done = stores
                .iter()
                .filter(|s| s.current().version == version)
                .count();
            if done == n {
                all_applied.push(t0.elapsed().as_secs_f64() * 1000.0);
                break;
            }
            if Instant::now() > deadline {
                bail!("round {round}: only {done}/{n} proxies applied the new version in 30 s");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // The recorder tasks may not have run yet for the last few stores.
        let recorded = wait_for("every apply recorded", Duration::from_secs(5), || async {
            let times = applied
                .lock()
                .ok()
                .and_then(|m| m.get(&version).cloned())
                .unwrap_or_default();
            if times.len() >= n {
                Ok(times)
            } else {
                Err(format!("{} recorded", times.len()))
            }
        })
        .await?;
        latencies.extend(
            recorded
                .iter()
                .map(|t| t.duration_since(t0).as_secs_f64() * 1000.0),
        );
        if let Some(t) = watched.lock().ok().and_then(|m| m.get(&text).copied()) {
            watch_latencies.push(t.duration_since(t0).as_secs_f64() * 1000.0);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    watch_task.abort();
    stop.cancel();
    for v in [&mut latencies, &mut all_applied, &mut watch_latencies] {
        v.sort_by(f64::total_cmp);
    }
    println!("proxies={n}");
    println!("rounds={rounds}");
    println!("samples={}", latencies.len());
    println!("applied_p50_ms={:.1}", percentile(&latencies, 0.50));
    println!("applied_p99_ms={:.1}", percentile(&latencies, 0.99));
    println!("all_applied_p50_ms={:.1}", percentile(&all_applied, 0.50));
    println!(
        "all_applied_max_ms={:.1}",
        all_applied.last().copied().unwrap_or(f64::NAN)
    );
    println!("watch_p50_ms={:.1}", percentile(&watch_latencies, 0.50));
    println!("watch_p99_ms={:.1}", percentile(&watch_latencies, 0.99));
    println!("rss_idle_kib={rss_idle_kib}");
    println!("rss_streams_kib={rss_streams_kib}");
    println!("idle_cpu_pct={idle_cpu_pct:.2}");
    Ok(())
}

fn bench_deployment(replicas: i32) -> Deployment {
    deployment("bench")
        .replicas(replicas)
        // Stands in for the webhook's injection: the controller serves pods with this label.
        .label(INJECTED_LABEL, "true")
        .build()
}
