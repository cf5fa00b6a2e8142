//! The controller's view of Kubernetes objects: a kind + namespace + name key
//! and the few facts resolution needs (annotations, controlling owner).
//! Keeping these plain structs lets `resolve` stay a pure function that tests
//! can feed without an API server.

use std::fmt;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;

pub use faultline_policy::contract::{FAULTS_ANNOTATION, INJECTED_LABEL, SEEN_AT_ANNOTATION};

/// The kinds that can carry a policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Pod,
    ReplicaSet,
    Deployment,
    StatefulSet,
    DaemonSet,
    Job,
}

impl Kind {
    /// Map an owner reference's `apiVersion` + `kind` to a kind we follow.
    pub fn from_owner(api_version: &str, kind: &str) -> Option<Self> {
        match (api_version, kind) {
            ("apps/v1", "ReplicaSet") => Some(Self::ReplicaSet),
            ("apps/v1", "Deployment") => Some(Self::Deployment),
            ("apps/v1", "StatefulSet") => Some(Self::StatefulSet),
            ("apps/v1", "DaemonSet") => Some(Self::DaemonSet),
            ("batch/v1", "Job") => Some(Self::Job),
            _ => None,
        }
    }

    /// The `kind` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pod => "Pod",
            Self::ReplicaSet => "ReplicaSet",
            Self::Deployment => "Deployment",
            Self::StatefulSet => "StatefulSet",
            Self::DaemonSet => "DaemonSet",
            Self::Job => "Job",
        }
    }

    /// The `apiVersion` string.
    pub fn api_version(self) -> &'static str {
        match self {
            Self::Pod => "v1",
            Self::Job => "batch/v1",
            _ => "apps/v1",
        }
    }
}

/// A namespaced object's identity.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjKey {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl ObjKey {
    pub fn new(kind: Kind, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.kind.as_str(), self.namespace, self.name)
    }
}

/// What resolution needs to know about one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectFacts {
    pub key: ObjKey,
    pub uid: String,
    /// `faultline.dev/faults`, if set.
    pub faults: Option<String>,
    /// `faultline.dev/faults-seen-at`, if set.
    pub seen_at: Option<String>,
    /// The controlling owner, when it is a kind we follow.
    pub owner: Option<ObjKey>,
}

impl ObjectFacts {
    /// Extract the facts from any object's metadata.
    pub fn from_meta(kind: Kind, meta: &ObjectMeta) -> Option<Self> {
        let namespace = meta.namespace.clone()?;
        let name = meta.name.clone()?;
        let annotation = |k: &str| meta.annotations.as_ref().and_then(|a| a.get(k)).cloned();
        let owner = meta
            .owner_references
            .iter()
            .flatten()
            .filter(|o| o.controller == Some(true))
            .find_map(|o| {
                Kind::from_owner(&o.api_version, &o.kind)
                    .map(|k| ObjKey::new(k, &namespace, &o.name))
            });
        Some(Self {
            key: ObjKey::new(kind, namespace, name),
            uid: meta.uid.clone().unwrap_or_default(),
            faults: annotation(FAULTS_ANNOTATION),
            seen_at: annotation(SEEN_AT_ANNOTATION),
            owner,
        })
    }
}

/// Types the controller watches, with their [`Kind`].
pub trait Watched: Resource<DynamicType = ()> {
    const KIND: Kind;
}

impl Watched for Pod {
    const KIND: Kind = Kind::Pod;
}
impl Watched for ReplicaSet {
    const KIND: Kind = Kind::ReplicaSet;
}
impl Watched for Deployment {
    const KIND: Kind = Kind::Deployment;
}
impl Watched for StatefulSet {
    const KIND: Kind = Kind::StatefulSet;
}
impl Watched for DaemonSet {
    const KIND: Kind = Kind::DaemonSet;
}
impl Watched for Job {
    const KIND: Kind = Kind::Job;
}

/// Facts of a watched object.
pub fn facts<K: Watched>(obj: &K) -> Option<ObjectFacts> {
    ObjectFacts::from_meta(K::KIND, obj.meta())
}
