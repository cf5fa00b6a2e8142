//! Our MutatingWebhookConfiguration and ValidatingWebhookConfiguration, built
//! in code for tests and `certs --secret`; `manifests/webhooks.yaml` is the
//! same objects for `kubectl apply -k` (a unit test keeps the two in step).
//!
//! Selection (docs/design.md): pods in namespaces labelled
//! `faultline.dev/injection=enabled` unless labelled `faultline.dev/inject=false`,
//! plus pods labelled `faultline.dev/inject=true` anywhere else; kube-system and
//! faultline-system never. `failurePolicy: Ignore` everywhere: a webhook outage
//! must never block pod creation.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, ServiceReference,
    ValidatingWebhook, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use kube::api::ObjectMeta;

use crate::config::{
    INJECT_LABEL, NAMESPACE_INJECTION_LABEL, SYSTEM_NAMESPACE, WEBHOOK_CONFIG_NAME, WEBHOOK_SERVICE,
};

/// Where the API server reaches the webhook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// In-cluster Service (port 443 -> container 8443).
    Service {
        namespace: String,
        name: String,
        port: i32,
    },
    /// A base URL such as `https://127.0.0.1:34567` (tests, out-of-cluster dev).
    Url(String),
}

impl Default for Endpoint {
    fn default() -> Self {
        Self::Service {
            namespace: SYSTEM_NAMESPACE.into(),
            name: WEBHOOK_SERVICE.into(),
            port: 443,
        }
    }
}

impl Endpoint {
    fn client_config(&self, path: &str, ca_bundle: Option<&[u8]>) -> WebhookClientConfig {
        let ca_bundle = ca_bundle.map(|pem| ByteString(pem.to_vec()));
        match self {
            Self::Service {
                namespace,
                name,
                port,
            } => WebhookClientConfig {
                ca_bundle,
                service: Some(ServiceReference {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    path: Some(path.into()),
                    port: Some(*port),
                }),
                url: None,
            },
            Self::Url(base) => WebhookClientConfig {
                ca_bundle,
                service: None,
                url: Some(format!("{}{path}", base.trim_end_matches('/'))),
            },
        }
    }
}

fn requirement(key: &str, operator: &str, values: &[&str]) -> LabelSelectorRequirement {
    LabelSelectorRequirement {
        key: key.into(),
        operator: operator.into(),
        values: Some(values.iter().map(ToString::to_string).collect()),
    }
}

fn selector(requirements: Vec<LabelSelectorRequirement>) -> LabelSelector {
    LabelSelector {
        match_expressions: Some(requirements),
        match_labels: None,
    }
}

fn not_system() -> LabelSelectorRequirement {
    requirement(
        "kubernetes.io/metadata.name",
        "NotIn",
        &["kube-system", SYSTEM_NAMESPACE],
    )
}

fn rule(
    groups: &[&str],
    versions: &[&str],
    resources: &[&str],
    operations: &[&str],
) -> RuleWithOperations {
    let strings = |v: &[&str]| Some(v.iter().map(ToString::to_string).collect());
    RuleWithOperations {
        api_groups: strings(groups),
        api_versions: strings(versions),
        operations: strings(operations),
        resources: strings(resources),
        scope: Some("Namespaced".into()),
    }
}

fn metadata() -> ObjectMeta {
    ObjectMeta {
        name: Some(WEBHOOK_CONFIG_NAME.into()),
        labels: Some(BTreeMap::from([(
            "app.kubernetes.io/name".into(),
            "faultline".into(),
        )])),
        ..ObjectMeta::default()
    }
}

/// Two entries: namespace opt-in and pod opt-in (disjoint, so a pod is never
/// sent twice).
pub fn mutating(endpoint: &Endpoint, ca_bundle: Option<&[u8]>) -> MutatingWebhookConfiguration {
    let entry = |name: &str,
                 namespaces: Vec<LabelSelectorRequirement>,
                 objects: Vec<LabelSelectorRequirement>| {
        MutatingWebhook {
            name: name.into(),
            admission_review_versions: vec!["v1".into()],
            client_config: endpoint.client_config("/mutate", ca_bundle),
            failure_policy: Some("Ignore".into()),
            match_policy: Some("Equivalent".into()),
            namespace_selector: Some(selector(namespaces)),
            object_selector: Some(selector(objects)),
            reinvocation_policy: Some("IfNeeded".into()),
            rules: Some(vec![rule(&[""], &["v1"], &["pods"], &["CREATE"])]),
            side_effects: "None".into(),
            timeout_seconds: Some(5),
            ..MutatingWebhook::default()
        }
    };
    MutatingWebhookConfiguration {
        metadata: metadata(),
        webhooks: Some(vec![
            entry(
                "namespace.inject.faultline.dev",
                vec![
                    requirement(NAMESPACE_INJECTION_LABEL, "In", &["enabled"]),
                    not_system(),
                ],
                vec![requirement(INJECT_LABEL, "NotIn", &["false"])],
            ),
            entry(
                "pod.inject.faultline.dev",
                vec![
                    requirement(NAMESPACE_INJECTION_LABEL, "NotIn", &["enabled"]),
                    not_system(),
                ],
                vec![requirement(INJECT_LABEL, "In", &["true"])],
            ),
        ]),
    }
}

/// Fault annotations on pods and workloads, in every namespace but ours and kube-system.
pub fn validating(endpoint: &Endpoint, ca_bundle: Option<&[u8]>) -> ValidatingWebhookConfiguration {
    let ops = ["CREATE", "UPDATE"];
    ValidatingWebhookConfiguration {
        metadata: metadata(),
        webhooks: Some(vec![ValidatingWebhook {
            name: "faults.validate.faultline.dev".into(),
            admission_review_versions: vec!["v1".into()],
            client_config: endpoint.client_config("/validate", ca_bundle),
            failure_policy: Some("Ignore".into()),
            match_policy: Some("Equivalent".into()),
            namespace_selector: Some(selector(vec![not_system()])),
            rules: Some(vec![
                rule(&[""], &["v1"], &["pods"], &ops),
                rule(
                    &["apps"],
                    &["v1"],
                    &["deployments", "statefulsets", "daemonsets", "replicasets"],
                    &ops,
                ),
                rule(&["batch"], &["v1", "v1beta1"], &["jobs", "cronjobs"], &ops),
            ]),
            side_effects: "None".into(),
            timeout_seconds: Some(5),
            ..ValidatingWebhook::default()
        }]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// `manifests/webhooks.yaml` must describe exactly these objects (it has no
    /// caBundle: the webhook patches it in at startup).
    #[test]
    fn manifests_match_code() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../manifests/webhooks.yaml");
        let text = std::fs::read_to_string(path).unwrap();
        let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
            .map(|d| serde_json::to_value(serde_yaml::Value::deserialize(d).unwrap()).unwrap())
            .collect();
        let mut expected_m = serde_json::to_value(mutating(&Endpoint::default(), None)).unwrap();
        let mut expected_v = serde_json::to_value(validating(&Endpoint::default(), None)).unwrap();
        expected_m["apiVersion"] = "admissionregistration.k8s.io/v1".into();
        expected_m["kind"] = "MutatingWebhookConfiguration".into();
        expected_v["apiVersion"] = "admissionregistration.k8s.io/v1".into();
        expected_v["kind"] = "ValidatingWebhookConfiguration".into();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0], expected_m);
        assert_eq!(docs[1], expected_v);
    }

    #[test]
    fn url_endpoint_appends_path_and_bundle() {
        let m = mutating(
            &Endpoint::Url("https://127.0.0.1:9443/".into()),
            Some(b"PEM"),
        );
        let cc = &m.webhooks.unwrap()[0].client_config;
        assert_eq!(cc.url.as_deref(), Some("https://127.0.0.1:9443/mutate"));
        assert_eq!(cc.ca_bundle.as_ref().unwrap().0, b"PEM");
    }

    use serde::Deserialize;
}
