//! The pieces of the whole-path test: the webhook + controller process
//! (in-process, on a loopback port the API server calls), and "the node":
//! for each injected pod, the real proxy started with the env its injected
//! spec gives it, in front of a real upstream.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use faultline_e2e::ControlPlane;
use faultline_e2e::webhook::scoped_configurations;
use faultline_proxy::PolicyStore;
use faultline_webhook::admission::{self, AdmissionState};
use faultline_webhook::certs::CertBundle;
use faultline_webhook::controller::{Controller, ControllerConfig, LeaseConfig, ReviewLimits};
use faultline_webhook::webhook_config::Endpoint;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Logs of the in-process webhook, controller and proxies, filtered by
/// `FAULTLINE_LOG` (default: warnings), captured per test.
pub fn init_logs() {
    let filter = std::env::var("FAULTLINE_LOG").unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// The webhook's TLS names: the API server calls 127.0.0.1, proxies `localhost`.
pub fn bundle() -> CertBundle {
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    faultline_webhook::certs::generate(&names, time::OffsetDateTime::now_utc())
        .expect("certificates")
}

/// One webhook + controller "replica".
pub struct Webhook {
    pub port: u16,
    pub controller_metrics: faultline_webhook::controller::Metrics,
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Webhook {
    /// Serve admission + policy stream on `port` (0 = pick one) and run the controller.
    pub async fn start(
        cp: &ControlPlane,
        bundle: &CertBundle,
        port: u16,
        identity: &str,
    ) -> anyhow::Result<Self> {
        Self::start_with(cp, bundle, port, identity, ReviewLimits::default()).await
    }

    /// [`start`](Self::start) with these TokenReview limits.
    pub async fn start_with(
        cp: &ControlPlane,
        bundle: &CertBundle,
        port: u16,
        identity: &str,
        token_reviews: ReviewLimits,
    ) -> anyhow::Result<Self> {
        let client = cp.client();
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .context("bind the webhook port")?;
        let port = listener.local_addr()?.port();
        let shutdown = CancellationToken::new();
        let config = faultline_webhook::Config {
            controller_url: format!("https://localhost:{port}"),
            ca_pem: Some(bundle.ca_cert_pem.clone()),
            ..faultline_webhook::Config::default()
        };
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = faultline_webhook::metrics::Metrics::register(&mut registry);
        let admission = admission::router(AdmissionState::new(
            config,
            metrics,
            admission::DEFAULT_MAX_BODY_BYTES,
        ));
        let mut lease = LeaseConfig::new(identity);
        lease.renew = Duration::from_secs(2);
        lease.duration = Duration::from_secs(6);
        let controller = Controller::new(
            client,
            ControllerConfig {
                lease,
                heartbeat: Duration::from_secs(10),
                token_reviews,
                streams: faultline_webhook::controller::StreamLimits::default(),
            },
            shutdown.clone(),
        );
        let controller_metrics = controller.metrics().clone();
        let app = admission.merge(controller.router());
        let tls = faultline_webhook::tls::TlsReloader::from_pem(
            bundle.cert_pem.as_bytes(),
            bundle.key_pem.as_bytes(),
        )?;
        let server = tokio::spawn({
            let shutdown = shutdown.clone();
            async move {
                if let Err(e) = faultline_webhook::server::serve(listener, tls, app, shutdown).await
                {
                    eprintln!("webhook server failed: {e}");
                }
            }
        });
        let run = tokio::spawn(controller.run());
        Ok(Self {
            port,
            controller_metrics,
            shutdown,
            tasks: vec![server, run],
        })
    }

    /// Stop serving and controlling; returns when both have ended.
    pub async fn stop(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Register our webhook configurations, pointing at `port`, confined to
/// namespaces labelled with `scope` (see `faultline_e2e::webhook`).
pub async fn register_webhooks(
    cp: &ControlPlane,
    bundle: &CertBundle,
    port: u16,
    scope: &str,
) -> anyhow::Result<()> {
    let endpoint = Endpoint::Url(format!("https://127.0.0.1:{port}"));
    let (mutating, validating) = scoped_configurations(scope, &endpoint, &bundle.ca_cert_pem);
    let pp = PostParams::default();
    Api::<MutatingWebhookConfiguration>::all(cp.client())
        .create(&pp, &mutating)
        .await
        .context("register the mutating webhook")?;
    Api::<ValidatingWebhookConfiguration>::all(cp.client())
        .create(&pp, &validating)
        .await
        .context("register the validating webhook")?;
    Ok(())
}

/// A real upstream: answers every request with 200 "upstream ok".
pub async fn upstream() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().fallback(|| async { "upstream ok" });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(addr)
}

/// A proxy "running in" an injected pod.
pub struct NodeProxy {
    pub pod: String,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub store: PolicyStore,
    pub token_file: tempfile::NamedTempFile,
    pub shutdown: CancellationToken,
}

/// The `faultline-proxy` container's env as the kubelet would resolve it
/// (downward API fields filled from the pod), then the two things a test
/// machine must change: loopback listeners in standalone mode (no iptables
/// here; the capture tests cover redirection) and the token file path.
pub fn proxy_env(
    pod: &Pod,
    token_file: &str,
    upstream: SocketAddr,
) -> anyhow::Result<BTreeMap<String, String>> {
    let spec = pod.spec.as_ref().context("pod without spec")?;
    let container = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == "faultline-proxy")
        .ok_or_else(|| {
            anyhow!(
                "pod {:?} has no faultline-proxy container: not injected",
                pod.metadata.name
            )
        })?;
    let mut env = BTreeMap::new();
    for var in container.env.iter().flatten() {
        let value = match (
            &var.value,
            var.value_from.as_ref().and_then(|v| v.field_ref.as_ref()),
        ) {
            (Some(v), _) => v.clone(),
            (None, Some(field)) => match field.field_path.as_str() {
                "metadata.name" => pod.metadata.name.clone().unwrap_or_default(),
                "metadata.namespace" => pod.metadata.namespace.clone().unwrap_or_default(),
                "status.podIP" => "127.0.0.1".into(),
                "spec.serviceAccountName" => spec
                    .service_account_name
                    .clone()
                    .unwrap_or_else(|| "default".into()),
                other => bail!("unexpected downward API field {other}"),
            },
            _ => continue,
        };
        env.insert(var.name.clone(), value);
    }
    env.insert("FAULTLINE_ADMIN_ADDR".into(), "127.0.0.1:0".into());
    env.insert("FAULTLINE_LISTEN".into(), "127.0.0.1:0".into());
    env.insert("FAULTLINE_UPSTREAM".into(), upstream.to_string());
    env.insert("FAULTLINE_TOKEN_FILE".into(), token_file.into());
    env.insert("FAULTLINE_LOG_FORMAT".into(), "plain".into());
    Ok(env)
}

impl NodeProxy {
    pub async fn start(cp: &ControlPlane, pod: &Pod, upstream: SocketAddr) -> anyhow::Result<Self> {
        let name = pod.metadata.name.clone().context("pod without name")?;
        let namespace = pod
            .metadata
            .namespace
            .clone()
            .context("pod without namespace")?;
        let sa = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into());
        let token = cp.pod_token(&namespace, &name, &sa, "faultline").await?;
        let token_file = tempfile::NamedTempFile::new()?;
        std::fs::write(token_file.path(), token)?;
        let env = proxy_env(pod, &token_file.path().to_string_lossy(), upstream)?;
        let config =
            faultline_proxy::Config::from_env(env).context("proxy config from the injected env")?;
        let proxy = faultline_proxy::Proxy::bind(config).await?;
        let listen = proxy
            .listen_addrs()
            .first()
            .map(|(_, a)| *a)
            .context("no listener")?;
        let admin = proxy.admin_addr().context("no admin listener")?;
        let store = PolicyStore::new();
        let shutdown = CancellationToken::new();
        tokio::spawn({
            let (store, shutdown) = (store.clone(), shutdown.clone());
            async move {
                let _ = proxy.run(store, shutdown).await;
            }
        });
        Ok(Self {
            pod: name,
            listen,
            admin,
            store,
            token_file,
            shutdown,
        })
    }

    /// `version` and `connected` as the proxy reports them on `/policy`.
    pub async fn report(&self, http: &reqwest::Client) -> anyhow::Result<(String, bool)> {
        let json: serde_json::Value = http
            .get(format!("http://{}/policy", self.admin))
            .send()
            .await?
            .json()
            .await?;
        let version = json["version"].as_str().unwrap_or_default().to_string();
        Ok((version, json["connected"].as_bool().unwrap_or(false)))
    }

    /// Status of a GET through the proxy.
    pub async fn get(&self, http: &reqwest::Client, path: &str) -> anyhow::Result<u16> {
        Ok(http
            .get(format!("http://{}{path}", self.listen))
            .send()
            .await?
            .status()
            .as_u16())
    }
}

/// Poll every proxy's `/policy` until all report `version` (and `connected`
/// when asked); returns how long that took from `since`.
pub async fn all_on(
    proxies: &[NodeProxy],
    http: &reqwest::Client,
    version: &str,
    connected: Option<bool>,
    since: Instant,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    loop {
        let mut seen = Vec::new();
        let mut done = true;
        for p in proxies {
            let (v, c) = p.report(http).await?;
            done &= v == version && connected.is_none_or(|want| want == c);
            seen.push(format!("{}: {v} connected={c}", p.pod));
        }
        if done {
            return Ok(since.elapsed());
        }
        if since.elapsed() > timeout {
            bail!(
                "proxies not on version {version} after {timeout:?}: {}",
                seen.join("; ")
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
