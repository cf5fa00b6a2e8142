//! Kubernetes objects for tests, built the same way everywhere: a
//! Deployment selects its pods by `app=<name>`, and the default pod runs
//! one container `app` whose image is never pulled (tests that need no
//! node play the node themselves).
use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

/// The image of [`app_spec`]: a registry that does not exist.
pub const UNPULLED_IMAGE: &str = "registry.invalid/app:1";

/// `app=<name>`: the label fixtures select their pods by.
pub fn app_labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("app".to_owned(), name.to_owned())])
}

/// One container `app` running [`UNPULLED_IMAGE`].
pub fn app_spec() -> PodSpec {
    PodSpec {
        containers: vec![Container {
            name: "app".into(),
            image: Some(UNPULLED_IMAGE.into()),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A pod `name` with [`app_spec`].
pub fn pod(name: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..Default::default()
        },
        spec: Some(app_spec()),
        ..Default::default()
    }
}

/// A Deployment `name` of one [`app_spec`] pod labelled `app=<name>`;
/// the builder changes the replicas, adds labels, or sets the pod spec.
pub fn deployment(name: &str) -> DeploymentBuilder {
    DeploymentBuilder {
        name: name.to_owned(),
        replicas: 1,
        labels: app_labels(name),
        spec: app_spec(),
    }
}

pub struct DeploymentBuilder {
    name: String,
    replicas: i32,
    labels: BTreeMap<String, String>,
    spec: PodSpec,
}

impl DeploymentBuilder {
    pub fn replicas(mut self, replicas: i32) -> Self {
        self.replicas = replicas;
        self
    }

    /// A label on the pods, which the selector matches too.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_owned(), value.to_owned());
        self
    }

    pub fn spec(mut self, spec: PodSpec) -> Self {
        self.spec = spec;
        self
    }

    pub fn build(self) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                name: Some(self.name),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(self.replicas),
                selector: LabelSelector {
                    match_labels: Some(self.labels.clone()),
                    ..Default::default()
                },
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(self.labels),
                        ..Default::default()
                    }),
                    spec: Some(self.spec),
                },
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_selector_matches_the_pods_labels() {
        let d = deployment("web")
            .replicas(2)
            .label("faultline.dev/injected", "true")
            .build();
        let spec = d.spec.expect("spec");
        assert_eq!(spec.replicas, Some(2));
        let pod_labels = spec.template.metadata.and_then(|m| m.labels);
        assert_eq!(spec.selector.match_labels, pod_labels);
        assert_eq!(
            pod_labels
                .as_ref()
                .and_then(|l| l.get("app"))
                .map(String::as_str),
            Some("web")
        );
    }
}
