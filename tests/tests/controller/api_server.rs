//! Policy sync, whole path, on a real API server: etcd + kube-apiserver +
//! kube-controller-manager, the webhook + controller in-process on loopback
//! (the API server calls its admission endpoints), a Deployment whose pods
//! the webhook injects, and for each pod the real proxy started with the env
//! of its injected spec and a TokenRequest token bound to that pod, in front
//! of a real upstream. Annotations on the Deployment must reach both proxies
//! and change what a client observes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::support::{NodeProxy, Webhook, all_on, bundle, init_logs, register_webhooks, upstream};
use anyhow::{Context, anyhow, bail, ensure};
use clap::Parser;
use faultline_e2e::webhook::{SCOPE_LABEL, is_injected, wait_until_injecting};
use faultline_e2e::{ControlPlane, unique_name, wait_for};
use faultline_test_support::fixtures::{app_labels, deployment};
use faultline_webhook::controller::version::policy_version;
use faultline_webhook::kubectl_fault::{Cli, CliError, commands};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams};

const WAIT: Duration = Duration::from_secs(60);
/// Generous: the machine is shared; the latency itself is printed and benchmarked.
const APPLY: Duration = Duration::from_secs(20);
const DOWN: &str =
    "rules:\n- name: all-down\n  match: {direction: inbound}\n  abort: {status: 503}\n";
const TEAPOT: &str =
    "rules:\n- name: teapot\n  match: {direction: inbound, path: /brew*}\n  abort: {status: 418}\n";
const INVALID: &str =
    "rules:\n- name: payments-down\n  match: {direction: inbound}\n  abort: {status: 700}\n";

async fn annotate(api: &Api<Deployment>, name: &str, faults: Option<&str>) -> anyhow::Result<()> {
    let patch = serde_json::json!({"metadata": {"annotations": {"faultline.dev/faults": faults}}});
    api.patch_metadata(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .context("annotate")?;
    Ok(())
}

async fn cli(cp: &ControlPlane, args: &[&str]) -> Result<String, CliError> {
    let path = cp.kubeconfig_path();
    let mut argv = vec![
        "kubectl-fault",
        "--kubeconfig",
        path.to_str().unwrap_or_default(),
    ];
    argv.extend_from_slice(args);
    let mut out = Vec::new();
    commands::run(Cli::parse_from(argv), &mut out).await?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

async fn wait_event(
    cp: &ControlPlane,
    ns: &str,
    name: &str,
    reason: &str,
) -> anyhow::Result<(String, String)> {
    Ok(faultline_e2e::events::wait_event(&cp.client(), ns, name, reason, WAIT).await?)
}

async fn ensure_namespace(cp: &ControlPlane, name: &str) -> anyhow::Result<()> {
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(cp.client());
    if api.get_opt(name).await?.is_none() {
        cp.create_namespace(name, &[]).await?;
    }
    Ok(())
}

#[tokio::test]
async fn annotations_drive_running_proxies_end_to_end() -> anyhow::Result<()> {
    init_logs();
    let Some(cp) = ControlPlane::shared_or_skip().await else {
        return Ok(());
    };
    let client = cp.client();
    ensure_namespace(cp, "faultline-system").await?;
    let certs = bundle();
    let webhook = Webhook::start(cp, &certs, 0, "e2e-controller-a").await?;
    let port = webhook.port;
    let ns = unique_name("policy-sync");
    register_webhooks(cp, &certs, port, &ns).await?;
    cp.create_namespace(
        &ns,
        &[("faultline.dev/injection", "enabled"), (SCOPE_LABEL, &ns)],
    )
    .await?;
    wait_until_injecting(&client, &ns).await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    deployments
        .create(
            &PostParams::default(),
            &deployment("web").replicas(2).build(),
        )
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let web_pods = wait_for("2 injected pods of web", WAIT, || async {
        let list = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .map_err(|e| e.to_string())?;
        let injected: Vec<Pod> = list
            .items
            .iter()
            .filter(|p| is_injected(p))
            .cloned()
            .collect();
        if injected.len() == 2 {
            Ok(injected)
        } else {
            Err(format!(
                "{} pods, {} injected",
                list.items.len(),
                injected.len()
            ))
        }
    })
    .await
    .with_context(|| cp.log_tails())?;

    let up = upstream().await?;
    let mut proxies = Vec::new();
    for pod in &web_pods {
        proxies.push(NodeProxy::start(cp, pod, up).await?);
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    all_on(&proxies, &http, "none", Some(true), Instant::now(), APPLY)
        .await
        .context("proxies connect with no faults")?;
    for p in &proxies {
        ensure!(
            p.get(&http, "/").await? == 200,
            "clean traffic before any annotation"
        );
    }
    ensure!(
        webhook.controller_metrics.connected.get() == 2,
        "the controller counts 2 connected proxies"
    );

    // Annotate -> both proxies run the new version, a client sees the fault.
    let started = Instant::now();
    annotate(&deployments, "web", Some(DOWN)).await?;
    let v_down = policy_version(Some(DOWN));
    let took = all_on(&proxies, &http, &v_down, Some(true), started, APPLY).await?;
    println!(
        "annotation-to-applied (2 proxies, first policy): {} ms",
        took.as_millis()
    );
    for p in &proxies {
        ensure!(
            p.get(&http, "/").await? == 503,
            "abort 503 through {}",
            p.pod
        );
    }
    wait_event(cp, &ns, "web", "FaultsApplied").await?;

    // Change -> new version.
    let started = Instant::now();
    annotate(&deployments, "web", Some(TEAPOT)).await?;
    let v_teapot = policy_version(Some(TEAPOT));
    let took = all_on(&proxies, &http, &v_teapot, Some(true), started, APPLY).await?;
    println!(
        "annotation-to-applied (2 proxies, change): {} ms",
        took.as_millis()
    );
    ensure!(proxies[0].get(&http, "/brew/coffee").await? == 418);
    ensure!(proxies[0].get(&http, "/").await? == 200);

    // kubectl fault status / list see it; recover -> clean.
    let status = cli(cp, &["status", "deploy/web", "-n", &ns]).await?;
    for p in &proxies {
        ensure!(status.contains(&p.pod), "status lists {}:\n{status}", p.pod);
    }
    // The expected version comes from the controller's own resolution; the
    // proxies' own reports go through the pod proxy subresource, which
    // needs a kubelet this control plane does not have.
    ensure!(
        status.contains(&v_teapot) && status.contains("unreachable"),
        "{status}"
    );
    let list = cli(cp, &["list", "-A"]).await?;
    ensure!(
        list.contains(&ns) && list.contains("deployment/web"),
        "list:\n{list}"
    );
    let started = Instant::now();
    cli(cp, &["recover", "deploy/web", "-n", &ns]).await?;
    all_on(&proxies, &http, "none", Some(true), started, APPLY).await?;
    ensure!(proxies[0].get(&http, "/brew/coffee").await? == 200);

    // duration: the controller removes the annotation and traffic is clean.
    cli(
        cp,
        &[
            "inject",
            "deploy/web",
            "-n",
            &ns,
            "--abort",
            "503",
            "--for",
            "5s",
        ],
    )
    .await?;
    let brief = deployments
        .get_metadata("web")
        .await?
        .metadata
        .annotations
        .unwrap_or_default();
    let brief_text = brief
        .get("faultline.dev/faults")
        .cloned()
        .context("inject wrote the annotation")?;
    all_on(
        &proxies,
        &http,
        &policy_version(Some(&brief_text)),
        Some(true),
        Instant::now(),
        APPLY,
    )
    .await?;
    ensure!(proxies[1].get(&http, "/").await? == 503);
    let expired = Instant::now();
    wait_for(
        "the controller to remove the expired annotation",
        WAIT,
        || async {
            let meta = deployments
                .get_metadata("web")
                .await
                .map_err(|e| e.to_string())?;
            let annotations = meta.metadata.annotations.unwrap_or_default();
            if annotations.contains_key("faultline.dev/faults") {
                Err(format!("{annotations:?}"))
            } else {
                Ok(())
            }
        },
    )
    .await?;
    all_on(&proxies, &http, "none", Some(true), Instant::now(), APPLY).await?;
    println!(
        "duration 5s: clean again {} ms after the policy applied",
        expired.elapsed().as_millis()
    );
    ensure!(proxies[1].get(&http, "/").await? == 200);
    let (_, note) = wait_event(cp, &ns, "web", "FaultsRecovered").await?;
    ensure!(note.contains("expired"), "{note}");

    // A token for pod A cannot fetch pod B's policy.
    let ca = reqwest::Certificate::from_pem(certs.ca_cert_pem.as_bytes())?;
    let tls_http = reqwest::Client::builder()
        .add_root_certificate(ca)
        .timeout(Duration::from_secs(10))
        .build()?;
    let token_a = std::fs::read_to_string(proxies[0].token_file.path())?;
    let stream_url = format!("https://localhost:{port}/v1/policy/stream");
    let other = tls_http
        .get(format!(
            "{stream_url}?namespace={ns}&pod={}",
            proxies[1].pod
        ))
        .bearer_auth(&token_a)
        .send()
        .await?;
    ensure!(
        other.status() == 403,
        "pod A's token for pod B: {}",
        other.status()
    );
    let wrong_audience = cp
        .pod_token(&ns, &proxies[0].pod, "default", "not-faultline")
        .await?;
    let refused = tls_http
        .get(&stream_url)
        .bearer_auth(wrong_audience)
        .send()
        .await?;
    ensure!(
        refused.status() == 401,
        "token for another audience: {}",
        refused.status()
    );
    let mut own = tls_http
        .get(&stream_url)
        .bearer_auth(&token_a)
        .send()
        .await?;
    ensure!(own.status() == 200);
    let first = tokio::time::timeout(APPLY, own.chunk())
        .await??
        .context("a first line")?;
    ensure!(String::from_utf8_lossy(&first).contains("\"version\":\"none\""));
    drop(own);

    // Kill the controller: proxies keep the policy (and disconnected); restart: they reconnect.
    annotate(&deployments, "web", Some(DOWN)).await?;
    all_on(&proxies, &http, &v_down, Some(true), Instant::now(), APPLY).await?;
    webhook.stop().await;
    all_on(&proxies, &http, &v_down, Some(false), Instant::now(), APPLY)
        .await
        .context("disconnected, policy kept")?;
    ensure!(
        proxies[0].get(&http, "/").await? == 503,
        "the last good policy still applies"
    );
    ensure!(
        proxies
            .iter()
            .all(|p| !p.store.connected() && p.store.current().policy.is_some())
    );

    // Invalid annotation written while the webhook is down (its validation is
    // failurePolicy Ignore): after the restart a Warning Event, old policy kept.
    annotate(&deployments, "web", Some(INVALID)).await?;
    let webhook = Webhook::start(cp, &certs, port, "e2e-controller-b").await?;
    let started = Instant::now();
    all_on(&proxies, &http, &v_down, Some(true), started, APPLY)
        .await
        .context("reconnected with the policy kept")?;
    println!(
        "controller restart: proxies reconnected in {} ms",
        started.elapsed().as_millis()
    );
    let (kind, note) = wait_event(cp, &ns, "web", "FaultsInvalid").await?;
    ensure!(kind == "Warning", "{kind}");
    ensure!(
        note.contains("payments-down") && note.contains("status"),
        "the Event names rule and field: {note}"
    );
    ensure!(proxies[1].get(&http, "/").await? == 503, "old policy kept");
    for p in &proxies {
        ensure!(p.report(&http).await?.0 == v_down);
    }

    annotate(&deployments, "web", None).await?;
    all_on(&proxies, &http, "none", Some(true), Instant::now(), APPLY).await?;
    for p in proxies {
        p.shutdown.cancel();
    }
    webhook.stop().await;
    Ok(())
}

#[tokio::test]
async fn selector_peers_follow_pod_ips() -> anyhow::Result<()> {
    init_logs();
    let Some(cp) = ControlPlane::shared_or_skip().await else {
        return Ok(());
    };
    // No webhook here: an injected pod is one the webhook labelled; we
    // label it ourselves, as the controller only looks at the label.
    ensure_namespace(cp, "faultline-system").await?;
    let ns = unique_name("policy-peers");
    cp.create_namespace(&ns, &[]).await?;
    let pods: Api<Pod> = Api::namespaced(cp.client(), &ns);
    let pod = |name: &str, app: &str, extra: &[(&str, &str)]| {
        let mut l = app_labels(app);
        l.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(l),
                ..Default::default()
            },
            spec: deployment(app).build().spec.and_then(|s| s.template.spec),
            ..Default::default()
        }
    };
    let partition = "rules:\n- name: nats-partition\n  match: {direction: outbound, to: {podSelector: {app: nats}}}\n  partition: {mode: reject}\n";
    let mut client_pod = pod("orders", "orders", &[("faultline.dev/injected", "true")]);
    client_pod.metadata.annotations = Some(BTreeMap::from([(
        "faultline.dev/faults".to_string(),
        partition.to_string(),
    )]));
    pods.create(&PostParams::default(), &client_pod).await?;
    pods.create(&PostParams::default(), &pod("nats-0", "nats", &[]))
        .await?;
    let set_ip = |ip: &'static str| {
        let pods = pods.clone();
        async move {
            let status = serde_json::json!({"status": {"podIP": ip, "podIPs": [{"ip": ip}]}});
            pods.patch_status("nats-0", &PatchParams::default(), &Patch::Merge(&status))
                .await
        }
    };
    set_ip("10.1.2.3").await?;

    let certs = bundle();
    let webhook = Webhook::start(cp, &certs, 0, "e2e-controller-peers").await?;
    let orders = pods.get("orders").await?;
    let token = cp.pod_token(&ns, "orders", "default", "faultline").await?;
    let token_file = tempfile::NamedTempFile::new()?;
    std::fs::write(token_file.path(), token)?;
    let store = faultline_proxy::PolicyStore::new();
    let stop = tokio_util::sync::CancellationToken::new();
    let config = faultline_proxy::source::stream::ClientConfig {
        url: format!("https://localhost:{}", webhook.port),
        ca_pem: certs.ca_cert_pem.clone().into_bytes(),
        token_file: token_file.path().to_path_buf(),
        pod: Some((ns.clone(), "orders".into())),
        heartbeat_timeout: Duration::from_secs(30),
        backoff_base: Duration::from_millis(50),
        backoff_max: Duration::from_secs(1),
    };
    tokio::spawn(faultline_proxy::source::stream::run(
        config,
        store.clone(),
        stop.clone(),
    ));
    let peers_of = |store: &faultline_proxy::PolicyStore| {
        store
            .current()
            .peers
            .get("app=nats")
            .cloned()
            .unwrap_or_default()
    };
    wait_for("peer 10.1.2.3", WAIT, || async {
        let p = peers_of(&store);
        if p == vec![
            "10.1.2.3"
                .parse::<std::net::IpAddr>()
                .map_err(|e| e.to_string())?,
        ] {
            Ok(())
        } else {
            Err(format!("{p:?}"))
        }
    })
    .await?;
    let before = store.current().version.clone();
    set_ip("10.1.2.4").await?;
    wait_for("peer moved to 10.1.2.4", WAIT, || async {
        let p = peers_of(&store);
        if p.iter().any(|ip| ip.to_string() == "10.1.2.4") {
            Ok(())
        } else {
            Err(format!("{p:?}"))
        }
    })
    .await?;
    ensure!(
        store.current().version == before,
        "a peer change keeps the annotation's version (only the peers move)"
    );
    ensure!(orders.metadata.uid.is_some());
    stop.cancel();
    webhook.stop().await;
    Ok(())
}

#[tokio::test]
async fn kubectl_fault_explains_what_is_wrong() -> anyhow::Result<()> {
    init_logs();
    let Some(cp) = ControlPlane::shared_or_skip().await else {
        return Ok(());
    };
    let plain = unique_name("fault-cli-off");
    cp.create_namespace(&plain, &[]).await?;
    let on = unique_name("fault-cli-on");
    cp.create_namespace(&on, &[("faultline.dev/injection", "enabled")])
        .await?;
    Api::<Deployment>::namespaced(cp.client(), &on)
        .create(
            &PostParams::default(),
            &deployment("api").replicas(1).build(),
        )
        .await?;
    Api::<Deployment>::namespaced(cp.client(), &plain)
        .create(
            &PostParams::default(),
            &deployment("api").replicas(1).build(),
        )
        .await?;

    let err = cli(
        cp,
        &["inject", "deploy/api", "-n", &plain, "--delay", "200ms"],
    )
    .await
    .unwrap_err();
    ensure!(matches!(err, CliError::NotOptedIn(_)), "{err}");
    ensure!(
        err.to_string().contains(&format!(
            "kubectl label namespace {plain} faultline.dev/injection=enabled"
        )),
        "{err}"
    );
    let err = cli(
        cp,
        &["inject", "deploy/nope", "-n", &on, "--delay", "200ms"],
    )
    .await
    .unwrap_err();
    ensure!(
        err.to_string() == format!("Deployment {on}/nope not found"),
        "{err}"
    );
    let err = cli(
        cp,
        &[
            "inject",
            "deploy/api",
            "-n",
            &on,
            "--abort",
            "700",
            "--name",
            "payments-down",
        ],
    )
    .await
    .unwrap_err();
    ensure!(
        matches!(err, CliError::InvalidPolicy(_)) && err.to_string().contains("payments-down"),
        "{err}"
    );

    let out = cli(
        cp,
        &[
            "inject",
            "deploy/api",
            "-n",
            &on,
            "--delay",
            "200ms",
            "--percent",
            "20",
            "--path",
            "/api/*",
            "--for",
            "60s",
        ],
    )
    .await?;
    ensure!(out.contains("recovers automatically after 1m"), "{out}");
    let meta = Api::<Deployment>::namespaced(cp.client(), &on)
        .get_metadata("api")
        .await?
        .metadata;
    let text = meta
        .annotations
        .unwrap_or_default()
        .get("faultline.dev/faults")
        .cloned()
        .ok_or_else(|| anyhow!("no annotation"))?;
    let policy = faultline_policy::parse(&text)?;
    ensure!(policy.duration() == Some(Duration::from_secs(60)));
    let list = cli(cp, &["list", "-n", &on]).await?;
    ensure!(
        list.contains("deployment/api") && list.contains("0/"),
        "{list}"
    );
    let out = cli(cp, &["recover", "deploy/api", "-n", &on]).await?;
    ensure!(out.contains("removed"), "{out}");
    let out = cli(cp, &["recover", "deploy/api", "-n", &on]).await?;
    ensure!(out.contains("nothing to recover"), "{out}");
    if cli(cp, &["list", "-n", &on])
        .await?
        .contains("deployment/api")
    {
        bail!("recovered workload still listed");
    }
    Ok(())
}

#[tokio::test]
async fn one_replica_writes_and_another_takes_over() -> anyhow::Result<()> {
    init_logs();
    let Some(cp) = ControlPlane::shared_or_skip().await else {
        return Ok(());
    };
    ensure_namespace(cp, "faultline-system").await?;
    let start = |identity: &str| {
        let mut lease = faultline_webhook::controller::LeaseConfig::new(identity);
        // Its own Lease, so other tests' controllers in this binary do not compete.
        lease.name = "faultline-controller-takeover".into();
        lease.renew = Duration::from_millis(500);
        lease.duration = Duration::from_secs(3);
        let config = faultline_webhook::controller::ControllerConfig {
            lease,
            heartbeat: Duration::from_secs(10),
            token_reviews: faultline_webhook::controller::ReviewLimits::default(),
            streams: faultline_webhook::controller::StreamLimits::default(),
        };
        let stop = tokio_util::sync::CancellationToken::new();
        let controller =
            faultline_webhook::controller::Controller::new(cp.client(), config, stop.clone());
        let metrics = controller.metrics().clone();
        let task = tokio::spawn(controller.run());
        (metrics, stop, task)
    };
    let (a, stop_a, task_a) = start("replica-a");
    let (b, stop_b, task_b) = start("replica-b");
    wait_for("exactly one leader", WAIT, || async {
        match (a.leader.get(), b.leader.get()) {
            (1, 0) | (0, 1) => Ok(()),
            other => Err(format!("leader gauges {other:?}")),
        }
    })
    .await?;
    // Stay stable for a few renewals: the two must not flap.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        ensure!(a.leader.get() + b.leader.get() == 1, "two writers or none");
    }
    let (leader_stop, leader_task, follower) = if a.leader.get() == 1 {
        (stop_a, task_a, b.clone())
    } else {
        (stop_b, task_b, a.clone())
    };
    // The leader stops (and releases the Lease); the other takes over
    // within its follow interval (1 s), not a Lease term (3 s here).
    leader_stop.cancel();
    leader_task.await?;
    let released = Instant::now();
    wait_for("the other replica to take over", WAIT, || async {
        if follower.leader.get() == 1 {
            Ok(())
        } else {
            Err("not yet")
        }
    })
    .await?;
    let handover = released.elapsed();
    eprintln!("Lease handed over {handover:?} after the leader released it");
    ensure!(
        handover < Duration::from_millis(2500),
        "hand-over took {handover:?}: the follower should look every second"
    );
    Ok(())
}
