//! faultline's webhook, run in-process for tests, and registered with a
//! test control plane the way the manifests register it.
//!
//! - [`RunningWebhook::start`]: the real TLS server (`server::serve`) with
//!   the admission and ops routers on `127.0.0.1:0`, serving a certificate
//!   for `127.0.0.1` from the webhook's own `certs::generate`.
//! - [`register_scoped`]: our production Mutating/ValidatingWebhookConfiguration
//!   (`webhook_config::mutating/validating`, the objects in
//!   `manifests/webhooks.yaml`) with `clientConfig.url` + `caBundle`, each
//!   namespace selector narrowed by one more requirement,
//!   `e2e.faultline.dev/scope=<scope>`: tests sharing a control plane each
//!   run their own webhook and only see their own namespaces.
//! - `checks.rs`: [`check_injected`] and [`check_untouched`] on pods as stored.
//! - [`wait_until_injecting`]: polls a server-side dry-run pod creation until
//!   the API server's webhook configuration cache sends pods to the webhook.

mod checks;

use std::sync::Arc;
use std::time::Duration;

use faultline_webhook::Config;
use faultline_webhook::admission::{self, AdmissionState, DEFAULT_MAX_BODY_BYTES};
use faultline_webhook::metrics::Metrics;
use faultline_webhook::server::{self, Readiness, ServeError};
use faultline_webhook::tls::TlsReloader;
use faultline_webhook::webhook_config::{self, Endpoint};
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use kube::api::{Api, DeleteParams, PostParams};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::HarnessError;
use crate::wait::wait_for;

pub use checks::{check_injected, check_untouched, is_injected};

/// Namespace label that confines a test's webhook registration to the
/// test's own namespaces.
pub const SCOPE_LABEL: &str = "e2e.faultline.dev/scope";

/// How long the API server may take to start calling a newly registered
/// webhook (its configuration informer usually takes well under a second).
const REGISTRATION_TIMEOUT: Duration = Duration::from_secs(30);

/// The webhook's TLS server running in this process.
pub struct RunningWebhook {
    url: String,
    ca_pem: String,
    shutdown: CancellationToken,
    task: Option<JoinHandle<Result<(), ServeError>>>,
}

impl RunningWebhook {
    /// Serves the admission and ops routers for `config`.
    pub async fn start(config: Config) -> Result<RunningWebhook, HarnessError> {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        let readiness = Readiness::default();
        readiness.set(true);
        let router =
            admission::router(AdmissionState::new(config, metrics, DEFAULT_MAX_BODY_BYTES))
                .merge(server::ops_router(Arc::new(registry), readiness));
        Self::start_router(router).await
    }

    /// Serves any router (e.g. admission merged with the controller's
    /// policy stream) over TLS on a fresh loopback port.
    pub async fn start_router(router: axum::Router) -> Result<RunningWebhook, HarnessError> {
        let bundle = faultline_webhook::certs::generate(
            &["127.0.0.1".to_owned(), "localhost".to_owned()],
            time::OffsetDateTime::now_utc(),
        )
        .map_err(|e| HarnessError::Webhook(format!("failed to generate certificates: {e}")))?;
        let tls = TlsReloader::from_pem(bundle.cert_pem.as_bytes(), bundle.key_pem.as_bytes())
            .map_err(|e| HarnessError::Webhook(format!("failed to load certificates: {e}")))?;
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(HarnessError::FreePort)?;
        let addr = listener.local_addr().map_err(HarnessError::FreePort)?;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server::serve(listener, tls, router, shutdown.clone()));
        Ok(RunningWebhook {
            url: format!("https://{addr}"),
            ca_pem: bundle.ca_cert_pem,
            shutdown,
            task: Some(task),
        })
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The webhook's `/metrics` text, fetched over its TLS listener.
    pub async fn metrics(&self) -> Result<String, HarnessError> {
        let failed =
            |e: reqwest::Error| HarnessError::Webhook(format!("failed to read /metrics: {e}"));
        let ca = reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).map_err(failed)?;
        let http = reqwest::Client::builder()
            .add_root_certificate(ca)
            .build()
            .map_err(failed)?;
        http.get(format!("{}/metrics", self.url))
            .send()
            .await
            .map_err(failed)?
            .error_for_status()
            .map_err(failed)?
            .text()
            .await
            .map_err(failed)
    }

    /// The CA that signed the serving certificate (the `caBundle`).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    pub fn endpoint(&self) -> Endpoint {
        Endpoint::Url(self.url.clone())
    }

    /// Stops accepting, drains and waits for the server to finish; the port
    /// is closed when this returns.
    pub async fn stop(mut self) -> Result<(), HarnessError> {
        self.shutdown.cancel();
        let Some(task) = self.task.take() else {
            return Ok(());
        };
        match task.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(HarnessError::Webhook(format!(
                "the webhook server failed: {e}"
            ))),
            Err(e) => Err(HarnessError::Webhook(format!(
                "the webhook server task died: {e}"
            ))),
        }
    }
}

impl Drop for RunningWebhook {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Names of the configurations [`register_scoped`] created.
#[derive(Debug, Clone)]
pub struct Registration {
    pub name: String,
}

impl Registration {
    pub async fn delete(&self, client: &kube::Client) -> Result<(), HarnessError> {
        let dp = DeleteParams::default();
        Api::<MutatingWebhookConfiguration>::all(client.clone())
            .delete(&self.name, &dp)
            .await
            .map_err(HarnessError::api(format!(
                "delete mutating webhook {}",
                self.name
            )))?;
        Api::<ValidatingWebhookConfiguration>::all(client.clone())
            .delete(&self.name, &dp)
            .await
            .map_err(HarnessError::api(format!(
                "delete validating webhook {}",
                self.name
            )))?;
        Ok(())
    }
}

fn scope_requirement(scope: &str) -> LabelSelectorRequirement {
    LabelSelectorRequirement {
        key: SCOPE_LABEL.to_owned(),
        operator: "In".to_owned(),
        values: Some(vec![scope.to_owned()]),
    }
}

fn narrow(selector: &mut Option<LabelSelector>, scope: &str) {
    selector
        .get_or_insert_with(LabelSelector::default)
        .match_expressions
        .get_or_insert_with(Vec::new)
        .push(scope_requirement(scope));
}

/// The production webhook configurations, pointed at `endpoint` and
/// confined to namespaces labelled [`SCOPE_LABEL`]`=scope`; named
/// `faultline-webhook-<scope>` so several can coexist.
pub fn scoped_configurations(
    scope: &str,
    endpoint: &Endpoint,
    ca_pem: &str,
) -> (MutatingWebhookConfiguration, ValidatingWebhookConfiguration) {
    let name = format!("faultline-webhook-{scope}");
    let mut mutating = webhook_config::mutating(endpoint, Some(ca_pem.as_bytes()));
    mutating.metadata.name = Some(name.clone());
    for w in mutating.webhooks.iter_mut().flatten() {
        narrow(&mut w.namespace_selector, scope);
    }
    let mut validating = webhook_config::validating(endpoint, Some(ca_pem.as_bytes()));
    validating.metadata.name = Some(name);
    for w in validating.webhooks.iter_mut().flatten() {
        narrow(&mut w.namespace_selector, scope);
    }
    (mutating, validating)
}

/// Creates [`scoped_configurations`] in the cluster.
pub async fn register_scoped(
    client: &kube::Client,
    scope: &str,
    webhook: &RunningWebhook,
) -> Result<Registration, HarnessError> {
    let (mutating, validating) =
        scoped_configurations(scope, &webhook.endpoint(), webhook.ca_pem());
    let pp = PostParams::default();
    let created = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .create(&pp, &mutating)
        .await
        .map_err(HarnessError::api("create the MutatingWebhookConfiguration"))?;
    Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .create(&pp, &validating)
        .await
        .map_err(HarnessError::api(
            "create the ValidatingWebhookConfiguration",
        ))?;
    Ok(Registration {
        name: created.metadata.name.unwrap_or_default(),
    })
}

/// A minimal pod: one container, an image that is never pulled (no kubelet).
pub fn plain_pod(name: &str) -> Pod {
    faultline_test_support::fixtures::pod(name)
}

/// Creates `pod` in `namespace` and returns it as stored together with the
/// warnings the API server passed on (admission webhooks' `warnings`
/// arrive as `Warning` response headers, which `Api::create` drops).
pub async fn create_pod_with_warnings(
    client: &kube::Client,
    namespace: &str,
    pod: &Pod,
) -> Result<(Pod, Vec<String>), HarnessError> {
    let failed = |what: &str, e: &dyn std::fmt::Display| {
        HarnessError::Webhook(format!(
            "failed to create a pod in {namespace}: {what}: {e}"
        ))
    };
    let body = serde_json::to_vec(pod).map_err(|e| failed("encode", &e))?;
    let request = http::Request::post(format!("/api/v1/namespaces/{namespace}/pods"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(kube::client::Body::from(body))
        .map_err(|e| failed("request", &e))?;
    let response = client.send(request).await.map_err(|e| failed("send", &e))?;
    let status = response.status();
    let warnings = response
        .headers()
        .get_all(http::header::WARNING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(warning_text)
        .collect();
    let bytes = response
        .into_body()
        .collect_bytes()
        .await
        .map_err(|e| failed("read", &e))?;
    if !status.is_success() {
        let text = String::from_utf8_lossy(&bytes);
        return Err(failed("refused", &format!("{status}: {text}")));
    }
    let created = serde_json::from_slice(&bytes).map_err(|e| failed("decode", &e))?;
    Ok((created, warnings))
}

/// The text of a `Warning: 299 - "text"` header value (RFC 7234).
fn warning_text(header: &str) -> String {
    let quoted = header
        .split_once(' ')
        .and_then(|(_, rest)| rest.split_once(' '))
        .map_or(header, |(_, text)| text);
    let inner = quoted
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(quoted);
    inner.replace("\\\"", "\"").replace("\\\\", "\\")
}

/// Waits until pods created in `namespace` (which must be opted in) come
/// back injected, probing with server-side dry runs that store nothing.
pub async fn wait_until_injecting(
    client: &kube::Client,
    namespace: &str,
) -> Result<(), HarnessError> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pp = PostParams {
        dry_run: true,
        ..Default::default()
    };
    wait_for(
        format!("the webhook to inject pods in namespace {namespace}"),
        REGISTRATION_TIMEOUT,
        || async {
            let pod = pods
                .create(&pp, &plain_pod("registration-probe"))
                .await
                .map_err(|e| e.to_string())?;
            if is_injected(&pod) {
                Ok(())
            } else {
                Err("a dry-run pod came back without the sidecar".to_owned())
            }
        },
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warning_headers_unquote() {
        assert_eq!(
            warning_text(r#"299 - "faultline: annotation a=\"true\" ignored""#),
            r#"faultline: annotation a="true" ignored"#
        );
        assert_eq!(warning_text("299 - \"plain\""), "plain");
    }

    #[test]
    fn scoped_configurations_keep_the_production_selectors_and_add_the_scope() {
        let endpoint = Endpoint::Url("https://127.0.0.1:1234".into());
        let (m, v) = scoped_configurations("s1", &endpoint, "PEM");
        let (pm, pv) = (
            webhook_config::mutating(&endpoint, Some(b"PEM")),
            webhook_config::validating(&endpoint, Some(b"PEM")),
        );
        assert_eq!(m.metadata.name.as_deref(), Some("faultline-webhook-s1"));
        let ours = m.webhooks.expect("mutating webhooks");
        let prod = pm.webhooks.expect("production mutating webhooks");
        assert_eq!(ours.len(), prod.len());
        for (o, p) in ours.iter().zip(&prod) {
            assert_eq!(o.object_selector, p.object_selector);
            assert_eq!(o.rules, p.rules);
            assert_eq!(o.failure_policy.as_deref(), Some("Ignore"));
            let mut expected = p.namespace_selector.clone();
            narrow(&mut expected, "s1");
            assert_eq!(o.namespace_selector, expected);
            assert_eq!(
                o.client_config.url.as_deref(),
                Some("https://127.0.0.1:1234/mutate")
            );
        }
        let vw = v.webhooks.expect("validating webhooks");
        let pw = pv.webhooks.expect("production validating webhooks");
        assert_eq!(vw[0].rules, pw[0].rules);
        let exprs = vw[0]
            .namespace_selector
            .as_ref()
            .and_then(|s| s.match_expressions.as_ref())
            .expect("expressions");
        assert!(exprs.contains(&scope_requirement("s1")));
    }
}
