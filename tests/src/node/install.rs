//! faultline on the node, installed as a user installs it: images built
//! offline from the binaries under test, imported into the node's
//! containerd, and `kubectl apply -k` of an overlay of `manifests/`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;

use super::script::{Node, repo_root, run};
use crate::{ControlPlane, HarnessError, bin_dir, wait_for};

/// The images the overlay names (`tests/node/overlay/kustomization.yaml`).
pub const PROXY_IMAGE: &str = "localhost/faultline/faultline-proxy:dev";
pub const WEBHOOK_IMAGE: &str = "localhost/faultline/faultline-webhook:dev";
const IMAGE_REGISTRY: &str = "localhost/faultline";
const IMAGE_TAG: &str = "dev";
pub(super) const SYSTEM_NAMESPACE: &str = "faultline-system";
pub(super) const WEBHOOK_DEPLOYMENT: &str = "faultline-webhook";
const INSTALL_TIMEOUT: Duration = Duration::from_secs(180);

/// Builds both images from the binaries [`bin_dir`] built from the sources
/// under test, so the node runs exactly the code under test.
pub(super) async fn build_images() -> Result<Vec<PathBuf>, HarnessError> {
    // The build blocks: off the runtime's threads.
    let bins = tokio::task::spawn_blocking(bin_dir)
        .await
        .map_err(|e| HarnessError::Build(e.to_string()))??;
    let root = repo_root();
    let out_dir = bins.join("images");
    let mut cmd = tokio::process::Command::new("bash");
    cmd.arg(root.join("scripts/image-tar.sh"))
        .arg(IMAGE_TAG)
        .env("REGISTRY", IMAGE_REGISTRY)
        .env("BIN_DIR", bins)
        .env("OUT_DIR", &out_dir);
    let printed = run("scripts/image-tar.sh", &mut cmd).await?;
    Ok(printed.lines().map(PathBuf::from).collect())
}

/// `kubectl apply -k` of the node overlay plus the API server's address,
/// then waits until the webhook Deployment is available and the API server
/// calls the webhook.
pub(super) async fn install(cp: &ControlPlane, node: &Node) -> Result<(), HarnessError> {
    // Kustomize takes only relative paths to other kustomizations, so the
    // generated one lives in the target directory, beside the images.
    let dir = bin_dir()?.join("node-install");
    let base = relative(&dir, &repo_root().join("tests/node/overlay"));
    let (kustomization, patch) = overlay(&base, &cp.api_url())?;
    write(&dir.join("kustomization.yaml"), &kustomization)?;
    write(&dir.join(API_SERVER_PATCH), &patch)?;
    let mut apply = cp.kubectl();
    apply.arg("apply").arg("-k").arg(&dir);
    run("kubectl apply -k (faultline)", &mut apply).await?;
    let mut rollout = cp.kubectl();
    rollout.args([
        "rollout",
        "status",
        "-n",
        SYSTEM_NAMESPACE,
        "deploy/faultline-webhook",
        "--timeout=180s",
    ]);
    if let Err(e) = run("kubectl rollout status (faultline-webhook)", &mut rollout).await {
        return Err(HarnessError::NodeUnavailable(format!(
            "{e}\nkubelet log:\n{}",
            node.kubelet_log_tail()
        )));
    }
    wait_for_ca_bundle(cp).await
}

/// The webhook patches its CA into its configurations once it has made
/// its certificates; until then the API server cannot call it.
async fn wait_for_ca_bundle(cp: &ControlPlane) -> Result<(), HarnessError> {
    let client = cp.try_client()?;
    let configs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let deployments: Api<Deployment> = Api::namespaced(client, SYSTEM_NAMESPACE);
    wait_for(
        "the caBundle in the webhook configuration",
        INSTALL_TIMEOUT,
        || async {
            let config = configs.get("faultline-webhook").await?;
            let patched = config
                .webhooks
                .unwrap_or_default()
                .iter()
                .all(|w| w.client_config.ca_bundle.is_some());
            let ready = deployments
                .get(WEBHOOK_DEPLOYMENT)
                .await?
                .status
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0);
            if patched && ready >= 1 {
                Ok(())
            } else {
                Err(anyhow::anyhow!(
                    "caBundle patched: {patched}, ready replicas: {ready}"
                ))
            }
        },
    )
    .await?;
    Ok(())
}

/// The kustomization the harness applies: the checked-in overlay, plus the
/// API server's loopback address for the webhook on the host network (an
/// explicit env var wins over the service env the kubelet adds). Returns
/// (kustomization.yaml, the patch file it names). Old kustomize (kubectl
/// 1.20) understands these fields too.
fn overlay(base: &Path, api_url: &str) -> Result<(String, String), HarnessError> {
    let (host, port) = url_host_port(api_url)
        .ok_or_else(|| HarnessError::Unexpected(format!("API server URL {api_url}")))?;
    let kustomization = format!(
        "apiVersion: kustomize.config.k8s.io/v1beta1\n\
         kind: Kustomization\n\
         bases:\n\
         - {base}\n\
         patchesStrategicMerge:\n\
         - {API_SERVER_PATCH}\n",
        base = base.display()
    );
    let patch = format!(
        "apiVersion: apps/v1\n\
         kind: Deployment\n\
         metadata: {{name: faultline-webhook, namespace: faultline-system}}\n\
         spec:\n  \
           template:\n    \
             spec:\n      \
               containers:\n      \
               - name: webhook\n        \
                 env:\n        \
                 - {{name: KUBERNETES_SERVICE_HOST, value: \"{host}\"}}\n        \
                 - {{name: KUBERNETES_SERVICE_PORT, value: \"{port}\"}}\n"
    );
    Ok((kustomization, patch))
}

const API_SERVER_PATCH: &str = "api-server.yaml";

/// `to` as a path relative to directory `from` (both absolute).
fn relative(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<_> = from.components().collect();
    let to: Vec<_> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut path = PathBuf::new();
    for _ in common..from.len() {
        path.push("..");
    }
    for part in &to[common..] {
        path.push(part);
    }
    path
}

fn url_host_port(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("https://")?;
    let authority = rest.split('/').next()?;
    let (host, port) = authority.rsplit_once(':')?;
    Some((host.to_owned(), port.to_owned()))
}

fn write(path: &Path, text: &str) -> Result<(), HarnessError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|source| HarnessError::WriteFile {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    std::fs::write(path, text).map_err(|source| HarnessError::WriteFile {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_url_splits_into_host_and_port() {
        assert_eq!(
            url_host_port("https://127.0.0.1:41234"),
            Some(("127.0.0.1".into(), "41234".into()))
        );
        assert_eq!(url_host_port("http://x:1"), None);
    }

    #[test]
    fn relative_paths_climb_then_descend() {
        assert_eq!(
            relative(
                Path::new("/r/target/debug/node-install"),
                Path::new("/r/tests/node/overlay")
            ),
            PathBuf::from("../../../tests/node/overlay")
        );
        assert_eq!(
            relative(Path::new("/a"), Path::new("/a/b")),
            PathBuf::from("b")
        );
    }

    #[test]
    fn overlay_names_the_base_and_the_api_server() {
        let (text, patch) = overlay(Path::new("../overlay"), "https://127.0.0.1:6443").unwrap();
        let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(doc["bases"][0], "../overlay");
        assert_eq!(doc["patchesStrategicMerge"][0], API_SERVER_PATCH);
        let patch: serde_yaml::Value = serde_yaml::from_str(&patch).unwrap();
        let env = &patch["spec"]["template"]["spec"]["containers"][0]["env"];
        assert_eq!(env[0]["value"], "127.0.0.1");
        assert_eq!(env[1]["value"], "6443");
    }
}
