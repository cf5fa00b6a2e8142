//! Helpers tests use on a running control plane: namespaces ready for
//! pods, tokens bound to a pod (what the kubelet would mount), kubectl.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::{Api, ObjectMeta, PostParams};

use super::ControlPlane;
use crate::HarnessError;
use crate::wait::wait_for;

/// How long a new namespace may take to get its `default` ServiceAccount
/// and token (the controller-manager does this within a second or so).
const NAMESPACE_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Lifetime of tokens from [`ControlPlane::pod_token`]; 10 minutes is the
/// API server's minimum and outlasts any test.
const POD_TOKEN_SECONDS: i64 = 3600;
/// The kubectl binary; `KUBECTL` overrides the one on `PATH`.
pub const KUBECTL_ENV: &str = "KUBECTL";

/// `prefix-xxxxxx` with 6 random hex digits: unique per test, so tests can
/// share one control plane. Keep `prefix` under 50 characters.
pub fn unique_name(prefix: &str) -> String {
    let n: u32 = rand::random();
    format!("{prefix}-{:06x}", n & 0xff_ffff)
}

impl ControlPlane {
    /// Creates namespace `name` with `labels` and waits until pods can be
    /// created in it: the 1.20 ServiceAccount admission plugin refuses pods
    /// until the `default` account has its token Secret.
    pub async fn create_namespace(
        &self,
        name: &str,
        labels: &[(&str, &str)],
    ) -> Result<Namespace, HarnessError> {
        let client = self.try_client()?;
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                labels: Some(labels),
                ..Default::default()
            },
            ..Default::default()
        };
        let created = namespaces
            .create(&PostParams::default(), &ns)
            .await
            .map_err(HarnessError::api(format!("create namespace {name}")))?;
        let accounts: Api<ServiceAccount> = Api::namespaced(client, name);
        wait_for(
            format!("the default ServiceAccount token in namespace {name}"),
            NAMESPACE_READY_TIMEOUT,
            || async {
                let sa = accounts
                    .get_opt("default")
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| "no ServiceAccount default yet".to_owned())?;
                if sa.secrets.is_some_and(|s| !s.is_empty()) {
                    Ok(())
                } else {
                    Err("ServiceAccount default has no token Secret yet".to_owned())
                }
            },
        )
        .await?;
        Ok(created)
    }

    /// A token for `service_account`, bound to pod `namespace/pod` (the
    /// TokenRequest API, as the kubelet does for projected token volumes):
    /// a TokenReview of it reports the pod's name and uid in the user's
    /// `extra`, and it stops working when the pod is deleted.
    pub async fn pod_token(
        &self,
        namespace: &str,
        pod: &str,
        service_account: &str,
        audience: &str,
    ) -> Result<String, HarnessError> {
        let client = self.try_client()?;
        let the_pod = Api::<Pod>::namespaced(client.clone(), namespace)
            .get(pod)
            .await
            .map_err(HarnessError::api(format!("get pod {namespace}/{pod}")))?;
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: vec![audience.to_owned()],
                expiration_seconds: Some(POD_TOKEN_SECONDS),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".to_owned()),
                    kind: Some("Pod".to_owned()),
                    name: Some(pod.to_owned()),
                    uid: the_pod.metadata.uid,
                }),
            },
            ..Default::default()
        };
        let response = Api::<ServiceAccount>::namespaced(client, namespace)
            .create_token_request(service_account, &PostParams::default(), &request)
            .await
            .map_err(HarnessError::api(format!(
                "request a token for {namespace}/{service_account} bound to pod {pod}"
            )))?;
        response
            .status
            .map(|s| s.token)
            .ok_or_else(|| HarnessError::Unexpected("a TokenRequest without a status".into()))
    }

    /// `kubectl --kubeconfig <this control plane>`; add arguments and run.
    pub fn kubectl(&self) -> tokio::process::Command {
        let program = std::env::var_os(KUBECTL_ENV).unwrap_or_else(|| "kubectl".into());
        let mut cmd = tokio::process::Command::new(program);
        cmd.arg("--kubeconfig").arg(self.kubeconfig_path());
        cmd.kill_on_drop(true);
        cmd
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_are_dns_labels_and_differ() {
        let a = unique_name("webhook-inject");
        let b = unique_name("webhook-inject");
        assert_ne!(a, b);
        assert!(a.starts_with("webhook-inject-"));
        assert_eq!(a.len(), "webhook-inject-".len() + 6);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
    }
}
