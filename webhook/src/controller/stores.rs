//! The reflector caches the reconcile loop reads, as the [`ClusterView`] of
//! the pure core, and the pure conversion of a cached Pod into what the
//! reconciler uses.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};

use super::lifecycle::{self, PodLife};
use super::objects::{FAULTS_ANNOTATION, INJECTED_LABEL, Kind, ObjKey, ObjectFacts, Watched};
use super::state::{ClusterView, PodKey, PodSnapshot};

/// Reader handles of every store.
#[derive(Clone)]
pub struct Stores {
    pub pods: Store<Pod>,
    pub replicasets: Store<PartialObjectMeta<ReplicaSet>>,
    pub deployments: Store<PartialObjectMeta<Deployment>>,
    pub statefulsets: Store<PartialObjectMeta<StatefulSet>>,
    pub daemonsets: Store<PartialObjectMeta<DaemonSet>>,
    pub jobs: Store<PartialObjectMeta<Job>>,
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
}

impl Stores {
    /// Facts of an owner, from the matching store.
    pub fn owner(&self, key: &ObjKey) -> Option<ObjectFacts> {
        fn get<K: Watched + Clone>(
            store: &Store<PartialObjectMeta<K>>,
            key: &ObjKey,
        ) -> Option<ObjectFacts>
        where
            K::DynamicType: Default,
        {
            let obj = store.get(&ObjectRef::new(&key.name).within(&key.namespace))?;
            ObjectFacts::from_meta(K::KIND, &obj.metadata)
        }
        match key.kind {
            Kind::Pod => None,
            Kind::ReplicaSet => get(&self.replicasets, key),
            Kind::Deployment => get(&self.deployments, key),
            Kind::StatefulSet => get(&self.statefulsets, key),
            Kind::DaemonSet => get(&self.daemonsets, key),
            Kind::Job => get(&self.jobs, key),
        }
    }

    /// A namespace's labels, if it is in the cache.
    pub fn namespace_labels(&self, name: &str) -> Option<BTreeMap<String, String>> {
        let ns = self.namespaces.get(&ObjectRef::new(name))?;
        Some(ns.metadata.labels.clone().unwrap_or_default())
    }

    /// A pod that should run the proxy and does not: (pod, uid, Event note).
    pub fn missed_injection(&self, pod: &PodSnapshot) -> Option<(ObjKey, String, String)> {
        let ns = &pod.facts.key.namespace;
        let labels = self.namespace_labels(ns);
        if !lifecycle::missed_injection(&pod.labels, ns, labels.as_ref(), &pod.life, pod.terminal) {
            return None;
        }
        let workload = self.restartable_workload(&pod.facts);
        let note = lifecycle::not_injected_note(
            ns,
            workload.as_ref().map(|(k, n)| (k.as_str(), n.as_str())),
        );
        Some((pod.facts.key.clone(), pod.facts.uid.clone(), note))
    }

    /// The Deployment, StatefulSet or DaemonSet above a pod, as
    /// (`kubectl rollout restart` kind, name).
    fn restartable_workload(&self, pod: &ObjectFacts) -> Option<(String, String)> {
        let mut owner = pod.owner.clone();
        for _ in 0..3 {
            let key = owner?;
            let kind = match key.kind {
                Kind::Deployment => "deployment",
                Kind::StatefulSet => "statefulset",
                Kind::DaemonSet => "daemonset",
                _ => {
                    owner = self.owner(&key).and_then(|f| f.owner);
                    continue;
                }
            };
            return Some((kind.to_owned(), key.name));
        }
        None
    }

    /// Every object that carries a policy annotation: pods and the five
    /// workload kinds (a Deployment's ReplicaSets included; resolution
    /// tells a copy from a policy).
    pub fn annotated(&self) -> Vec<ObjectFacts> {
        fn from<K: Watched + Clone>(store: &Store<PartialObjectMeta<K>>) -> Vec<ObjectFacts>
        where
            K::DynamicType: Default,
        {
            store
                .state()
                .iter()
                .filter(|o| has_faults(&o.metadata))
                .filter_map(|o| ObjectFacts::from_meta(K::KIND, &o.metadata))
                .collect()
        }
        let pods = self
            .pods
            .state()
            .iter()
            .filter(|p| has_faults(&p.metadata))
            .filter_map(|p| ObjectFacts::from_meta(Kind::Pod, &p.metadata))
            .collect::<Vec<_>>();
        let mut all = pods;
        all.extend(from(&self.replicasets));
        all.extend(from(&self.deployments));
        all.extend(from(&self.statefulsets));
        all.extend(from(&self.daemonsets));
        all.extend(from(&self.jobs));
        all
    }

    /// Every pod as the reconciler sees it.
    pub fn pod_snapshots(&self) -> Vec<PodSnapshot> {
        self.pods
            .state()
            .iter()
            .filter_map(|p| pod_snapshot(p))
            .collect()
    }
}

impl ClusterView for Stores {
    fn pod(&self, key: &PodKey) -> Option<PodSnapshot> {
        let pod = self.pods.get(&ObjectRef::new(&key.1).within(&key.0))?;
        pod_snapshot(&pod)
    }

    fn pods_in(&self, namespace: &str) -> Vec<PodSnapshot> {
        self.pods
            .state()
            .iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(namespace))
            .filter_map(|p| pod_snapshot(p))
            .collect()
    }

    fn owner(&self, key: &ObjKey) -> Option<ObjectFacts> {
        Stores::owner(self, key)
    }
}

fn has_faults(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> bool {
    meta.annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(FAULTS_ANNOTATION))
}

/// Pure: the parts of a Pod the reconciler uses.
pub fn pod_snapshot(pod: &Pod) -> Option<PodSnapshot> {
    let facts = ObjectFacts::from_meta(Kind::Pod, &pod.metadata)?;
    let labels: BTreeMap<String, String> = pod.metadata.labels.clone().unwrap_or_default();
    let status = pod.status.as_ref();
    let mut ips: Vec<IpAddr> = status
        .and_then(|s| s.pod_ips.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|ip| ip.ip.parse().ok())
        .collect();
    if let Some(ip) = status
        .and_then(|s| s.pod_ip.as_deref())
        .and_then(|ip| ip.parse().ok())
        && !ips.contains(&ip)
    {
        ips.push(ip);
    }
    let phase = status.and_then(|s| s.phase.as_deref());
    Some(PodSnapshot {
        life: PodLife::from_pod(pod),
        injected: labels.get(INJECTED_LABEL).map(String::as_str) == Some("true"),
        terminal: matches!(phase, Some("Succeeded" | "Failed")),
        facts,
        labels,
        ips,
    })
}

/// [`Stores`] for one reconcile pass, each owner read once: every pod of a
/// workload reads the same owners.
pub struct PassView<'a> {
    stores: &'a Stores,
    owners: RefCell<HashMap<ObjKey, Option<ObjectFacts>>>,
}

impl<'a> PassView<'a> {
    pub fn new(stores: &'a Stores) -> Self {
        Self {
            stores,
            owners: RefCell::default(),
        }
    }
}

impl ClusterView for PassView<'_> {
    fn pod(&self, key: &PodKey) -> Option<PodSnapshot> {
        self.stores.pod(key)
    }

    fn pods_in(&self, namespace: &str) -> Vec<PodSnapshot> {
        self.stores.pods_in(namespace)
    }

    fn owner(&self, key: &ObjKey) -> Option<ObjectFacts> {
        self.owners
            .borrow_mut()
            .entry(key.clone())
            .or_insert_with(|| self.stores.owner(key))
            .clone()
    }
}
