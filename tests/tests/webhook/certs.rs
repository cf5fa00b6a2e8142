//! The webhook's certificate management against a real kube-apiserver:
//! bootstrap of the Secret `faultline-webhook-tls`, adoption by a second
//! replica racing the first, renewal of an expiring serving certificate with
//! the same CA, and `caBundle` patched into the configurations named
//! `faultline-webhook` (created here confined to a scope no namespace has, so
//! they never intercept other tests' requests).

use anyhow::{Context, bail};
use faultline_e2e::webhook::scoped_configurations;
use faultline_e2e::{ControlPlane, unique_name};
use faultline_webhook::certs::{self, CertManager, Renewal};
use faultline_webhook::config::{TLS_SECRET_NAME, WEBHOOK_CONFIG_NAME};
use faultline_webhook::tls::{TlsReloader, certified_key};
use faultline_webhook::webhook_config::Endpoint;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};

async fn namespace(client: &kube::Client) -> anyhow::Result<String> {
    let name = unique_name("certs");
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    Ok(name)
}

fn bundle_of(secret: &Secret, key: &str) -> String {
    let data = secret.data.as_ref().and_then(|d| d.get(key));
    data.map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn secret_bootstrap_race_renewal_and_ca_bundle() -> anyhow::Result<()> {
    let Some(cp) = ControlPlane::shared_or_skip().await else {
        return Ok(());
    };
    let client = cp.client();

    // Inert configurations with our production name: scoped to a label no namespace carries.
    let scope = unique_name("certs-scope");
    let (mut mutating, mut validating) =
        scoped_configurations(&scope, &Endpoint::Url("https://127.0.0.1:9".into()), "");
    mutating.metadata.name = Some(WEBHOOK_CONFIG_NAME.into());
    validating.metadata.name = Some(WEBHOOK_CONFIG_NAME.into());
    let m_api = Api::<MutatingWebhookConfiguration>::all(client.clone());
    let v_api = Api::<ValidatingWebhookConfiguration>::all(client.clone());
    let _ = m_api
        .delete(WEBHOOK_CONFIG_NAME, &DeleteParams::default())
        .await;
    let _ = v_api
        .delete(WEBHOOK_CONFIG_NAME, &DeleteParams::default())
        .await;
    m_api
        .create(&PostParams::default(), &mutating)
        .await
        .context("create mutating")?;
    v_api
        .create(&PostParams::default(), &validating)
        .await
        .context("create validating")?;

    // Two replicas start at once on an empty namespace: one creates, the other adopts.
    let ns = namespace(&client).await?;
    let (a, b) = (
        CertManager::new(client.clone(), &ns),
        CertManager::new(client.clone(), &ns),
    );
    let (first, second) = tokio::join!(a.ensure(), b.ensure());
    let (first, second) = (first?, second?);
    assert_eq!(
        first, second,
        "both replicas must serve the same certificate"
    );
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    let stored = secrets.get(TLS_SECRET_NAME).await?;
    assert_eq!(stored.type_.as_deref(), Some("kubernetes.io/tls"));
    assert_eq!(bundle_of(&stored, "tls.crt"), first.cert_pem);
    assert_eq!(
        certs::renewal(&first, time::OffsetDateTime::now_utc()),
        Renewal::Keep
    );

    // A serving certificate close to expiry is renewed from the same CA.
    let long_ago = time::OffsetDateTime::now_utc() - time::Duration::days(360);
    let names = certs::dns_names("faultline-webhook", &ns);
    let (old_cert, old_key) =
        certs::issue(&first.ca_cert_pem, &first.ca_key_pem, &names, long_ago)?;
    let mut expiring = stored.clone();
    let data = expiring.data.get_or_insert_default();
    data.insert("tls.crt".into(), ByteString(old_cert.clone().into_bytes()));
    data.insert("tls.key".into(), ByteString(old_key.into_bytes()));
    secrets
        .replace(TLS_SECRET_NAME, &PostParams::default(), &expiring)
        .await?;

    let reloader = TlsReloader::from_pem(first.cert_pem.as_bytes(), first.key_pem.as_bytes())?;
    let renewed = a.sync(&reloader).await?;
    assert_eq!(
        renewed.ca_cert_pem, first.ca_cert_pem,
        "the CA must not change"
    );
    assert_ne!(renewed.cert_pem, old_cert);
    assert_ne!(renewed.cert_pem, first.cert_pem);
    let served =
        certified_key(renewed.cert_pem.as_bytes(), renewed.key_pem.as_bytes())?.cert[0].to_vec();
    assert_eq!(
        reloader.current_cert_der(),
        served,
        "the server must serve the renewed certificate"
    );
    assert_eq!(
        bundle_of(&secrets.get(TLS_SECRET_NAME).await?, "tls.crt"),
        renewed.cert_pem
    );

    // caBundle on every webhook of both configurations.
    for ca in m_api
        .get(WEBHOOK_CONFIG_NAME)
        .await?
        .webhooks
        .unwrap_or_default()
        .iter()
        .map(|w| w.client_config.ca_bundle.clone())
    {
        if ca.map(|b| b.0) != Some(renewed.ca_cert_pem.clone().into_bytes()) {
            bail!("mutating caBundle not patched");
        }
    }
    for ca in v_api
        .get(WEBHOOK_CONFIG_NAME)
        .await?
        .webhooks
        .unwrap_or_default()
        .iter()
        .map(|w| w.client_config.ca_bundle.clone())
    {
        if ca.map(|b| b.0) != Some(renewed.ca_cert_pem.clone().into_bytes()) {
            bail!("validating caBundle not patched");
        }
    }

    m_api
        .delete(WEBHOOK_CONFIG_NAME, &DeleteParams::default())
        .await?;
    v_api
        .delete(WEBHOOK_CONFIG_NAME, &DeleteParams::default())
        .await?;
    Api::<Namespace>::all(client)
        .delete(&ns, &DeleteParams::default())
        .await?;
    Ok(())
}
