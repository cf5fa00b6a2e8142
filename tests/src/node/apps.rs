//! Test workloads for the node (busybox from the node's local images) and
//! what tests do with their running pods: wait for them, call them over
//! HTTP from the host, run commands in them, read their proxy's metrics.

use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, HTTPGetAction, Pod, PodSpec, PodTemplateSpec, Probe,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, ListParams, ObjectMeta};

use super::cluster::NodeCluster;
use super::script::run;
use crate::wait_for;

/// busybox-static, built on the node from Debian's package (`node.sh images`).
pub const BUSYBOX: &str = "localhost/faultline/busybox:1";
/// The port the HTTP test app listens on.
pub const APP_PORT: u16 = 8080;
/// The proxy's admin port (never redirected).
pub use faultline_policy::contract::ADMIN_PORT;
/// Generous: pods start in seconds, but the machine is shared.
pub const POD_TIMEOUT: Duration = Duration::from_secs(120);

/// An HTTP server (busybox httpd) on [`APP_PORT`] serving `/index.html`
/// (`hello`) and `/api/x` (`api`), with a readiness probe like real apps.
pub fn http_server_spec() -> PodSpec {
    let script = "mkdir -p /www/api && echo hello > /www/index.html && echo api > /www/api/x \
                  && exec httpd -f -p 8080 -h /www";
    PodSpec {
        containers: vec![Container {
            ports: Some(vec![ContainerPort {
                container_port: i32::from(APP_PORT),
                name: Some("http".into()),
                ..Default::default()
            }]),
            readiness_probe: Some(Probe {
                http_get: Some(HTTPGetAction {
                    path: Some("/index.html".into()),
                    port: IntOrString::Int(i32::from(APP_PORT)),
                    ..Default::default()
                }),
                period_seconds: Some(2),
                ..Default::default()
            }),
            ..busybox(script)
        }],
        termination_grace_period_seconds: Some(2),
        ..Default::default()
    }
}

/// The container `app` running `script` in busybox's shell, from the
/// node's local image.
pub fn busybox(script: &str) -> Container {
    Container {
        name: "app".into(),
        image: Some(BUSYBOX.into()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(vec!["sh".into(), "-c".into(), script.into()]),
        ..Default::default()
    }
}

/// A shell that idles until SIGTERM: a client to `kubectl exec` into.
pub fn client_spec() -> PodSpec {
    PodSpec {
        containers: vec![busybox(
            "trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done",
        )],
        termination_grace_period_seconds: Some(2),
        ..Default::default()
    }
}

pub use faultline_test_support::fixtures::app_labels;

pub fn template(app: &str, spec: PodSpec) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(app_labels(app)),
            ..Default::default()
        }),
        spec: Some(spec),
    }
}

/// A Deployment `name` of `replicas` pods labelled `app=<name>`.
pub fn deployment(name: &str, replicas: i32, spec: PodSpec) -> Deployment {
    faultline_test_support::fixtures::deployment(name)
        .replicas(replicas)
        .spec(spec)
        .build()
}

/// Whether the pod carries the injected proxy (classic or native layout).
pub fn has_sidecar(pod: &Pod) -> bool {
    let spec = pod.spec.as_ref();
    let named = |c: &Container| c.name == faultline_policy::contract::PROXY_CONTAINER_NAME;
    spec.is_some_and(|s| {
        s.containers.iter().any(named) || s.init_containers.iter().flatten().any(named)
    })
}

/// Running, every container ready, not terminating.
pub fn is_running_and_ready(pod: &Pod) -> bool {
    let Some(status) = &pod.status else {
        return false;
    };
    pod.metadata.deletion_timestamp.is_none()
        && status.phase.as_deref() == Some("Running")
        && status
            .container_statuses
            .as_ref()
            .is_some_and(|cs| !cs.is_empty() && cs.iter().all(|c| c.ready))
}

/// Exit code of the init container `name`, once it has terminated.
pub fn init_exit_code(pod: &Pod, name: &str) -> Option<i32> {
    pod.status
        .as_ref()?
        .init_container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == name)?
        .state
        .as_ref()?
        .terminated
        .as_ref()
        .map(|t| t.exit_code)
}

pub fn pod_ip(pod: &Pod) -> anyhow::Result<String> {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .ok_or_else(|| anyhow!("pod {} has no IP", name(pod)))
}

pub fn name(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
}

impl NodeCluster {
    /// Waits until exactly `count` pods match `selector` in `ns`, all Running
    /// and ready and none terminating, and returns them.
    pub async fn ready_pods(
        &self,
        ns: &str,
        selector: &str,
        count: usize,
    ) -> anyhow::Result<Vec<Pod>> {
        let pods: Api<Pod> = Api::namespaced(self.client(), ns);
        let lp = ListParams::default().labels(selector);
        let found = wait_for(
            format!("{count} ready pods {selector} in {ns}"),
            POD_TIMEOUT,
            || async {
                let all = pods.list(&lp).await?.items;
                let live: Vec<Pod> = all
                    .iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .cloned()
                    .collect();
                let ready = live.iter().filter(|p| is_running_and_ready(p)).count();
                if live.len() == count && ready == count {
                    Ok(live)
                } else {
                    Err(anyhow!(
                        "{} pods, {ready} ready: {}",
                        live.len(),
                        describe(&all)
                    ))
                }
            },
        )
        .await?;
        Ok(found)
    }

    /// `kubectl rollout status` until the workload has rolled out.
    pub async fn rollout_status(&self, ns: &str, target: &str) -> anyhow::Result<()> {
        let mut cmd = self.kubectl();
        cmd.args(["rollout", "status", "-n", ns, target, "--timeout=120s"]);
        run(format!("kubectl rollout status {target}"), &mut cmd).await?;
        Ok(())
    }

    /// `kubectl` with `args`; stdout, or an error carrying the output.
    pub async fn kubectl_ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut cmd = self.kubectl();
        cmd.args(args);
        Ok(run(format!("kubectl {}", args.join(" ")), &mut cmd).await?)
    }

    /// `kubectl exec` in the app container; (success, stdout + stderr).
    pub async fn exec(&self, ns: &str, pod: &str, command: &str) -> anyhow::Result<(bool, String)> {
        let mut cmd = self.kubectl();
        cmd.args([
            "exec", "-n", ns, pod, "-c", "app", "--", "sh", "-c", command,
        ]);
        let output = cmd.output().await.context("run kubectl exec")?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        Ok((output.status.success(), text))
    }
}

/// One line per pod: name, phase and each container's state, for messages.
pub fn describe(pods: &[Pod]) -> String {
    pods.iter()
        .map(|p| {
            let status = p.status.clone().unwrap_or_default();
            let containers: Vec<String> = status
                .init_container_statuses
                .iter()
                .flatten()
                .chain(status.container_statuses.iter().flatten())
                .map(|c| {
                    let state = c.state.clone().unwrap_or_default();
                    let what = if let Some(w) = state.waiting {
                        w.reason.unwrap_or_default()
                    } else if let Some(t) = state.terminated {
                        format!("exited {}", t.exit_code)
                    } else {
                        "running".into()
                    };
                    format!("{}={what}{}", c.name, if c.ready { "+ready" } else { "" })
                })
                .collect();
            format!(
                "{} {} [{}]",
                name(p),
                status.phase.unwrap_or_default(),
                containers.join(" ")
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// An HTTP GET from the host: (status, body, time taken). A connection
/// error is an `Err`.
pub async fn get(http: &reqwest::Client, url: &str) -> anyhow::Result<(u16, String, Duration)> {
    let start = Instant::now();
    let response = http
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = response.status().as_u16();
    let body = response
        .text()
        .await
        .with_context(|| format!("body of {url}"))?;
    Ok((status, body, start.elapsed()))
}

/// A client for the host side: no pooling surprises across pod restarts,
/// a timeout well above any injected delay.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// Sum of every series of `metric` in the proxy's `/metrics` (e.g.
/// `faultline_requests_total`), optionally only series whose labels
/// contain `label` (e.g. `direction="inbound"`).
pub async fn proxy_metric(
    http: &reqwest::Client,
    pod_ip: &str,
    metric: &str,
    label: Option<&str>,
) -> anyhow::Result<f64> {
    let url = format!("http://{pod_ip}:{ADMIN_PORT}/metrics");
    let (status, text, _) = get(http, &url).await?;
    if status != 200 {
        bail!("GET {url}: {status}");
    }
    Ok(faultline_test_support::metrics::sum(&text, metric, label))
}
