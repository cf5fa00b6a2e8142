//! The harness itself against the real control plane: Deployments become
//! Pods (controller-manager running), pod-bound tokens authenticate as that
//! pod (TokenRequest + TokenReview), the kubeconfig works for kubectl, and
//! an owned control plane leaves nothing behind.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use faultline_e2e::{ControlPlane, unique_name, wait_for};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};

const WAIT: Duration = Duration::from_secs(60);

fn pod_spec() -> PodSpec {
    PodSpec {
        containers: vec![Container {
            name: "app".into(),
            // Never pulled: there is no kubelet.
            image: Some("registry.invalid/app:1".into()),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn labels(app: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("app".to_owned(), app.to_owned())])
}

#[tokio::test]
async fn deployment_gets_pods_from_the_controller_manager() -> anyhow::Result<()> {
    let Some(cp) = ControlPlane::shared_or_skip().await else {
        return Ok(());
    };
    let ns = unique_name("harness-deploy");
    cp.create_namespace(&ns, &[]).await?;
    let client = cp.client();
    let deploy = Deployment {
        metadata: ObjectMeta {
            name: Some("web".into()),
            ..Default::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(2),
            selector: LabelSelector {
                match_labels: Some(labels("web")),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels("web")),
                    ..Default::default()
                }),
                spec: Some(pod_spec()),
            },
            ..Default::default()
        }),
        ..Default::default()
    };
    Api::<Deployment>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &deploy)
        .await?;

    let pods: Api<Pod> = Api::namespaced(client, &ns);
    let found = wait_for("2 pods of deployment web", WAIT, || async {
        let list = pods.list(&ListParams::default().labels("app=web")).await?;
        match list.items.len() {
            2 => Ok(list.items),
            n => Err(anyhow!("{n} pods")),
        }
    })
    .await?;
    for pod in &found {
        let owner = pod
            .metadata
            .owner_references
            .as_ref()
            .and_then(|o| o.first())
            .context("pod has no owner")?;
        assert_eq!(owner.kind, "ReplicaSet");
        assert!(owner.name.starts_with("web-"), "owner {}", owner.name);
        // The ServiceAccount admission plugin ran: the token is mounted.
        let spec = pod.spec.as_ref().context("pod has no spec")?;
        assert_eq!(spec.service_account_name.as_deref(), Some("default"));
        assert!(
            spec.volumes
                .iter()
                .flatten()
                .any(|v| v.name.starts_with("default-token-")),
            "no service-account token volume in {:?}",
            spec.volumes
        );
    }
    cp.check_running()?;
    Ok(())
}

async fn review(client: &kube::Client, token: &str, audience: &str) -> anyhow::Result<TokenReview> {
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.to_owned()),
            audiences: Some(vec![audience.to_owned()]),
        },
        ..Default::default()
    };
    Ok(Api::<TokenReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await?)
}

#[tokio::test]
async fn pod_token_is_bound_to_the_pod() -> anyhow::Result<()> {
    let Some(cp) = ControlPlane::shared_or_skip().await else {
        return Ok(());
    };
    let ns = unique_name("harness-token");
    cp.create_namespace(&ns, &[]).await?;
    let client = cp.client();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some("app-0".into()),
            ..Default::default()
        },
        spec: Some(pod_spec()),
        ..Default::default()
    };
    let pod = pods.create(&PostParams::default(), &pod).await?;
    let uid = pod.metadata.uid.clone().context("created pod has no uid")?;

    let token = cp.pod_token(&ns, "app-0", "default", "faultline").await?;
    let status = review(&client, &token, "faultline")
        .await?
        .status
        .context("TokenReview without status")?;
    assert_eq!(status.authenticated, Some(true), "{status:?}");
    let user = status.user.context("no user")?;
    assert_eq!(
        user.username.as_deref(),
        Some(format!("system:serviceaccount:{ns}:default").as_str())
    );
    let extra = user.extra.context("no extra")?;
    assert_eq!(
        extra.get("authentication.kubernetes.io/pod-name"),
        Some(&vec!["app-0".to_owned()])
    );
    assert_eq!(
        extra.get("authentication.kubernetes.io/pod-uid"),
        Some(&vec![uid])
    );

    // The audience is enforced...
    let other = review(&client, &token, "someone-else").await?;
    assert_ne!(
        other.status.and_then(|s| s.authenticated),
        Some(true),
        "a faultline token must not authenticate for another audience"
    );

    // ...and the token dies with its pod (no kubelet: deletion is immediate).
    pods.delete("app-0", &DeleteParams::default()).await?;
    wait_for("the pod's token to be rejected", WAIT, || async {
        let status = review(&client, &token, "faultline").await?.status;
        match status.and_then(|s| s.authenticated) {
            Some(true) => bail!("still authenticated"),
            _ => Ok(()),
        }
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn kubeconfig_works_with_kubectl() -> anyhow::Result<()> {
    let Some(cp) = ControlPlane::shared_or_skip().await else {
        return Ok(());
    };
    let ns = unique_name("harness-kubectl");
    cp.create_namespace(&ns, &[("team", "e2e")]).await?;
    let out = cp
        .kubectl()
        .args(["get", "namespace", "-l", "team=e2e", "-o", "name"])
        .output()
        .await
        .context("run kubectl (set KUBECTL or install kubectl)")?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout)?;
    assert!(
        stdout.lines().any(|l| l == format!("namespace/{ns}")),
        "{stdout}"
    );
    Ok(())
}

#[tokio::test]
async fn owned_control_plane_stops_and_cleans_up_on_drop() -> anyhow::Result<()> {
    let Some(cp) = ControlPlane::start_or_skip().await else {
        return Ok(());
    };
    let client = cp.client();
    let version = client.apiserver_version().await?;
    assert_eq!(version.major, "1");
    let dir = cp.dir().to_owned();
    let url: http::Uri = cp.api_url().parse()?;
    let port = url.port_u16().context("api url has a port")?;
    assert!(dir.join("kubeconfig").is_file());
    drop(client);
    drop(cp);
    assert!(!dir.exists(), "{} left behind", dir.display());
    let connect = tokio::net::TcpStream::connect(("127.0.0.1", port)).await;
    assert!(connect.is_err(), "kube-apiserver still listens on {port}");
    Ok(())
}
