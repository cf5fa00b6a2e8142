//! The API calls `kubectl fault` makes, one small function each.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

use super::error::CliError;
use faultline_policy::contract::{ADMIN_PORT, NAMESPACE_INJECTION_LABEL};

use crate::controller::objects::Kind;

const PROXY_TIMEOUT: Duration = Duration::from_secs(3);

/// A client and the namespace to use by default.
pub async fn connect(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
) -> Result<(Client, String), CliError> {
    let options = KubeConfigOptions {
        context: context.map(str::to_string),
        ..KubeConfigOptions::default()
    };
    let config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path).map_err(|e| CliError::Kubeconfig(Box::new(e)))?;
            Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|e| CliError::Kubeconfig(Box::new(e)))?
        }
        None => match Config::from_kubeconfig(&options).await {
            Ok(c) => c,
            Err(_) if context.is_none() => Config::infer()
                .await
                .map_err(|e| CliError::Kubeconfig(Box::new(e)))?,
            Err(e) => return Err(CliError::Kubeconfig(Box::new(e))),
        },
    };
    let namespace = config.default_namespace.clone();
    let client = Client::try_from(config).map_err(|e| CliError::Kubeconfig(Box::new(e)))?;
    Ok((client, namespace))
}

macro_rules! by_kind {
    ($kind:expr, $api:ident, $body:expr) => {
        match $kind {
            Kind::Pod => {
                let $api: fn(Client, &str) -> Api<Pod> = Api::namespaced;
                $body
            }
            Kind::ReplicaSet => {
                let $api: fn(Client, &str) -> Api<ReplicaSet> = Api::namespaced;
                $body
            }
            Kind::Deployment => {
                let $api: fn(Client, &str) -> Api<Deployment> = Api::namespaced;
                $body
            }
            Kind::StatefulSet => {
                let $api: fn(Client, &str) -> Api<StatefulSet> = Api::namespaced;
                $body
            }
            Kind::DaemonSet => {
                let $api: fn(Client, &str) -> Api<DaemonSet> = Api::namespaced;
                $body
            }
            Kind::Job => {
                let $api: fn(Client, &str) -> Api<Job> = Api::namespaced;
                $body
            }
        }
    };
}

/// The object's metadata, or a clear "not found".
pub async fn metadata(
    client: &Client,
    kind: Kind,
    namespace: &str,
    name: &str,
) -> Result<ObjectMeta, CliError> {
    let found = by_kind!(
        kind,
        api,
        api(client.clone(), namespace)
            .get_metadata_opt(name)
            .await
            .map(|o| o.map(|m| m.metadata))
    );
    found
        .map_err(CliError::kube(format!(
            "read {} {namespace}/{name}",
            kind.as_str()
        )))?
        .ok_or_else(|| CliError::not_found(kind, namespace, name))
}

/// Patch the object's metadata.
pub async fn patch(
    client: &Client,
    kind: Kind,
    namespace: &str,
    name: &str,
    patch: &Patch<serde_json::Value>,
) -> Result<(), CliError> {
    let params = PatchParams::default();
    let done = by_kind!(
        kind,
        api,
        api(client.clone(), namespace)
            .patch_metadata(name, &params, patch)
            .await
            .map(drop)
    );
    done.map_err(CliError::kube(format!(
        "update {} {namespace}/{name}",
        kind.as_str()
    )))
}

/// Metadata of every object of `kind` (in `namespace`, or all when `None`).
pub async fn list_metadata(
    client: &Client,
    kind: Kind,
    namespace: Option<&str>,
) -> Result<Vec<ObjectMeta>, CliError> {
    let lp = ListParams::default();
    let list = match namespace {
        Some(ns) => by_kind!(
            kind,
            api,
            api(client.clone(), ns).list_metadata(&lp).await.map(|l| l
                .items
                .into_iter()
                .map(|o| o.metadata)
                .collect())
        ),
        None => match kind {
            Kind::Pod => Api::<Pod>::all(client.clone())
                .list_metadata(&lp)
                .await
                .map(|l| l.items.into_iter().map(|o| o.metadata).collect()),
            Kind::ReplicaSet => Api::<ReplicaSet>::all(client.clone())
                .list_metadata(&lp)
                .await
                .map(|l| l.items.into_iter().map(|o| o.metadata).collect()),
            Kind::Deployment => Api::<Deployment>::all(client.clone())
                .list_metadata(&lp)
                .await
                .map(|l| l.items.into_iter().map(|o| o.metadata).collect()),
            Kind::StatefulSet => Api::<StatefulSet>::all(client.clone())
                .list_metadata(&lp)
                .await
                .map(|l| l.items.into_iter().map(|o| o.metadata).collect()),
            Kind::DaemonSet => Api::<DaemonSet>::all(client.clone())
                .list_metadata(&lp)
                .await
                .map(|l| l.items.into_iter().map(|o| o.metadata).collect()),
            Kind::Job => Api::<Job>::all(client.clone())
                .list_metadata(&lp)
                .await
                .map(|l| l.items.into_iter().map(|o| o.metadata).collect()),
        },
    };
    list.map_err(CliError::kube(format!("list {}s", kind.as_str())))
}

/// Pods (full objects: IPs and labels are needed for selector peers).
pub async fn pods(client: &Client, namespace: Option<&str>) -> Result<Vec<Pod>, CliError> {
    let api: Api<Pod> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    Ok(api
        .list(&ListParams::default())
        .await
        .map_err(CliError::kube("list pods"))?
        .items)
}

/// Refuse a workload whose pods have no proxy: neither its namespace
/// (`faultline.dev/injection=enabled`) nor its pod template (or the pod
/// itself: `faultline.dev/inject=true`) opts in.
pub async fn check_opted_in(
    client: &Client,
    kind: Kind,
    namespace: &str,
    name: &str,
) -> Result<(), CliError> {
    if namespace_opted_in(client, namespace).await? {
        return Ok(());
    }
    let object = by_kind!(
        kind,
        api,
        api(client.clone(), namespace)
            .get_opt(name)
            .await
            .map(|o| o.map(|o| serde_json::to_value(o).unwrap_or_default()))
    )
    .map_err(CliError::kube(format!(
        "read {} {namespace}/{name}",
        kind.as_str()
    )))?
    .ok_or_else(|| CliError::not_found(kind, namespace, name))?;
    if pods_opted_in(kind, &object) {
        Ok(())
    } else {
        Err(CliError::NotOptedIn(namespace.into()))
    }
}

/// The pod label opt-in (`faultline.dev/inject=true`) on a pod, or on a
/// workload's pod template (a workload's own labels are not its pods').
pub fn pods_opted_in(kind: Kind, object: &serde_json::Value) -> bool {
    let labels = match kind {
        Kind::Pod => "/metadata/labels",
        _ => "/spec/template/metadata/labels",
    };
    object
        .pointer(&format!("{labels}/faultline.dev~1inject"))
        .and_then(serde_json::Value::as_str)
        == Some("true")
}

async fn namespace_opted_in(client: &Client, namespace: &str) -> Result<bool, CliError> {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns = api
        .get_opt(namespace)
        .await
        .map_err(CliError::kube(format!("read namespace {namespace}")))?
        .ok_or_else(|| CliError::NotFound {
            kind: "Namespace",
            namespace: namespace.into(),
            name: namespace.into(),
        })?;
    Ok(ns
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(NAMESPACE_INJECTION_LABEL))
        .map(String::as_str)
        == Some("enabled"))
}

/// GET a path on a pod's proxy admin port through the API server's pod proxy
/// subresource. `None` when the pod is not reachable (not running, no kubelet).
pub async fn proxy_get(client: &Client, namespace: &str, pod: &str, path: &str) -> Option<String> {
    let uri = format!("/api/v1/namespaces/{namespace}/pods/{pod}:{ADMIN_PORT}/proxy{path}");
    let request = http::Request::get(uri).body(Vec::new()).ok()?;
    tokio::time::timeout(PROXY_TIMEOUT, client.request_text(request))
        .await
        .ok()?
        .ok()
}
