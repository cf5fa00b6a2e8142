//! The certificate Secret and `caBundle`: bootstrap, renewal and the loop
//! that keeps the TLS server, the Secret and our webhook configurations in
//! step. Every replica runs the loop; the Secret's resourceVersion settles
//! races (a loser of a create/update conflict re-reads and adopts the winner's).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use thiserror::Error;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use super::bundle::{CertBundle, CertError, Renewal, covers, dns_names, generate, issue, renewal};
use crate::config::{TLS_SECRET_NAME, WEBHOOK_CONFIG_NAME, WEBHOOK_SERVICE};
use crate::tls::TlsReloader;

#[derive(Debug, Error)]
pub enum SecretError {
    #[error("failed to {action} Secret {namespace}/{name}: {source}")]
    Api {
        action: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("failed to patch caBundle into {kind} {name}: {source}")]
    Patch {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Cert(#[from] CertError),
    #[error("failed to settle Secret {0}: it kept changing under us")]
    Contended(String),
}

const CA_CRT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";
const TLS_CRT: &str = "tls.crt";
const TLS_KEY: &str = "tls.key";

/// Owns the certificate Secret for one webhook Service.
#[derive(Clone)]
pub struct CertManager {
    client: Client,
    namespace: String,
    secret_name: String,
    webhook_config_name: String,
    names: Vec<String>,
}

impl CertManager {
    pub fn new(client: Client, namespace: &str) -> Self {
        Self {
            client,
            namespace: namespace.to_string(),
            secret_name: TLS_SECRET_NAME.into(),
            webhook_config_name: WEBHOOK_CONFIG_NAME.into(),
            names: dns_names(WEBHOOK_SERVICE, namespace),
        }
    }

    /// Also serve these DNS names or IPs: for API servers and proxies that
    /// reach the webhook by a `url:` (e.g. a node address) rather than
    /// through its Service. A serving certificate that lacks one is reissued.
    pub fn with_extra_names(mut self, names: &[String]) -> Self {
        for name in names {
            if !self.names.contains(name) {
                self.names.push(name.clone());
            }
        }
        self
    }

    fn api_error(&self, action: &'static str) -> impl FnOnce(kube::Error) -> SecretError + '_ {
        move |source| SecretError::Api {
            action,
            namespace: self.namespace.clone(),
            name: self.secret_name.clone(),
            source,
        }
    }

    /// Make sure the Secret holds valid certificates (creating or renewing
    /// them) and return them.
    pub async fn ensure(&self) -> Result<CertBundle, SecretError> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        for _ in 0..5 {
            let now = OffsetDateTime::now_utc();
            let existing = api
                .get_opt(&self.secret_name)
                .await
                .map_err(self.api_error("read"))?;
            let Some(existing) = existing else {
                let bundle = generate(&self.names, now)?;
                match api
                    .create(&PostParams::default(), &self.secret(&bundle, None))
                    .await
                {
                    Ok(_) => {
                        tracing::info!(secret = %self.secret_name, "created the webhook certificate Secret");
                        return Ok(bundle);
                    }
                    Err(kube::Error::Api(status)) if status.code == 409 => continue,
                    Err(e) => return Err(self.api_error("create")(e)),
                }
            };
            let current = from_secret(&existing);
            let decision = match renewal(&current, now) {
                Renewal::Keep if !covers(&current.cert_pem, &self.names) => Renewal::ServingCert,
                decision => decision,
            };
            let renewed = match decision {
                Renewal::Keep => return Ok(current),
                Renewal::ServingCert => {
                    let (cert_pem, key_pem) =
                        issue(&current.ca_cert_pem, &current.ca_key_pem, &self.names, now)?;
                    CertBundle {
                        cert_pem,
                        key_pem,
                        ..current
                    }
                }
                Renewal::Everything => generate(&self.names, now)?,
            };
            let version = existing.metadata.resource_version.clone();
            match api
                .replace(
                    &self.secret_name,
                    &PostParams::default(),
                    &self.secret(&renewed, version),
                )
                .await
            {
                Ok(_) => {
                    tracing::info!(secret = %self.secret_name, "renewed the webhook certificate");
                    return Ok(renewed);
                }
                Err(kube::Error::Api(status)) if status.code == 409 => continue,
                Err(e) => return Err(self.api_error("update")(e)),
            }
        }
        Err(SecretError::Contended(self.secret_name.clone()))
    }

    fn secret(&self, bundle: &CertBundle, resource_version: Option<String>) -> Secret {
        let data = [
            (CA_CRT, &bundle.ca_cert_pem),
            (CA_KEY, &bundle.ca_key_pem),
            (TLS_CRT, &bundle.cert_pem),
            (TLS_KEY, &bundle.key_pem),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
        .collect::<BTreeMap<_, _>>();
        Secret {
            metadata: ObjectMeta {
                name: Some(self.secret_name.clone()),
                namespace: Some(self.namespace.clone()),
                resource_version,
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/name".into(),
                    "faultline".into(),
                )])),
                ..ObjectMeta::default()
            },
            type_: Some("kubernetes.io/tls".into()),
            data: Some(data),
            ..Secret::default()
        }
    }

    /// Keep the server's certificate and the webhook configurations' caBundle
    /// current: check now, then every `interval`, until `shutdown`.
    pub async fn run(self, reloader: TlsReloader, interval: Duration, shutdown: CancellationToken) {
        loop {
            if let Err(error) = self.sync(&reloader).await {
                tracing::warn!(%error, "failed to sync the webhook certificate; retrying");
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// One pass: Secret -> TLS server -> caBundle.
    pub async fn sync(&self, reloader: &TlsReloader) -> Result<CertBundle, SecretError> {
        let bundle = self.ensure().await?;
        if let Err(error) = reloader.set_pem(bundle.cert_pem.as_bytes(), bundle.key_pem.as_bytes())
        {
            tracing::error!(%error, "the certificate in the Secret does not load; keeping the current one");
        }
        patch_ca_bundle(&self.client, &self.webhook_config_name, &bundle.ca_cert_pem).await?;
        Ok(bundle)
    }
}

fn from_secret(secret: &Secret) -> CertBundle {
    let get = |key: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .unwrap_or_default()
    };
    CertBundle {
        ca_cert_pem: get(CA_CRT),
        ca_key_pem: get(CA_KEY),
        cert_pem: get(TLS_CRT),
        key_pem: get(TLS_KEY),
    }
}

/// The `caBundle` of each webhook, as JSON, in order.
fn ca_bundles<'a>(configs: impl Iterator<Item = &'a WebhookClientConfig>) -> Vec<Option<Value>> {
    configs
        .map(|c| {
            c.ca_bundle
                .as_ref()
                .and_then(|b| serde_json::to_value(b).ok())
        })
        .collect()
}

/// Set `caBundle` on every webhook of our Mutating and Validating
/// configurations named `name` (missing configurations are skipped: they may
/// not be applied yet, the next pass will catch up).
pub async fn patch_ca_bundle(client: &Client, name: &str, ca_pem: &str) -> Result<(), SecretError> {
    let bundle =
        serde_json::to_value(ByteString(ca_pem.as_bytes().to_vec())).unwrap_or(Value::Null);
    let mutating: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let validating: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let patch_error = |kind| {
        move |source| SecretError::Patch {
            kind,
            name: name.to_string(),
            source,
        }
    };

    if let Some(config) = mutating
        .get_opt(name)
        .await
        .map_err(patch_error("MutatingWebhookConfiguration"))?
    {
        let current = ca_bundles(config.webhooks.iter().flatten().map(|w| &w.client_config));
        apply_ca_patch(&mutating, name, &current, &bundle)
            .await
            .map_err(patch_error("MutatingWebhookConfiguration"))?;
    }
    if let Some(config) = validating
        .get_opt(name)
        .await
        .map_err(patch_error("ValidatingWebhookConfiguration"))?
    {
        let current = ca_bundles(config.webhooks.iter().flatten().map(|w| &w.client_config));
        apply_ca_patch(&validating, name, &current, &bundle)
            .await
            .map_err(patch_error("ValidatingWebhookConfiguration"))?;
    }
    Ok(())
}

/// JSON patch of the webhooks whose caBundle differs; nothing sent when all match.
async fn apply_ca_patch<K>(
    api: &Api<K>,
    name: &str,
    current: &[Option<Value>],
    bundle: &Value,
) -> Result<(), kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let ops: Vec<Value> = current
        .iter()
        .enumerate()
        .filter(|(_, ca)| ca.as_ref() != Some(bundle))
        .map(|(i, _)| json!({"op": "add", "path": format!("/webhooks/{i}/clientConfig/caBundle"), "value": bundle}))
        .collect();
    if ops.is_empty() {
        return Ok(());
    }
    let patch: json_patch::Patch =
        serde_json::from_value(Value::Array(ops)).map_err(kube::Error::SerdeError)?;
    api.patch(name, &PatchParams::default(), &Patch::Json::<()>(patch))
        .await?;
    tracing::info!(%name, "patched caBundle");
    Ok(())
}
