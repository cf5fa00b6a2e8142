//! The I/O shell around [`PolicyState`]: reflectors feed stores, every batch
//! of watch events (or an expiry deadline, or a leadership change) triggers a
//! full reconcile of all injected pods (cheap: a hash per pod), whose result
//! is published to the [`PolicyHub`] and, on the leader, turned into writes.
//!
//! Watches are cluster-wide: all pods (selector peers may be any pod, not only
//! injected ones; spec is stripped to keep memory small) and the metadata only
//! of ReplicaSets, Deployments, StatefulSets, DaemonSets and Jobs.

use std::collections::BTreeMap;
use std::net::IpAddr;

use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::expiry;
use super::hub::PolicyHub;
use super::lifecycle::{self, PodLife, strip_pod};
use super::objects::{FAULTS_ANNOTATION, INJECTED_LABEL, Kind, ObjKey, ObjectFacts, Watched};
use super::state::{Action, PodSnapshot, PolicyState};
use super::writer::{ActionContext, Writer};

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

    /// Pods that should run the proxy and do not: (pod, uid, Event note).
    pub fn missed_injection(&self, pods: &[PodSnapshot]) -> Vec<(ObjKey, String, String)> {
        pods.iter()
            .filter(|p| {
                let ns = &p.facts.key.namespace;
                let labels = self.namespace_labels(ns);
                lifecycle::missed_injection(&p.labels, ns, labels.as_ref(), &p.life, p.terminal)
            })
            .map(|p| {
                let workload = self.restartable_workload(&p.facts);
                let note = lifecycle::not_injected_note(
                    &p.facts.key.namespace,
                    workload.as_ref().map(|(k, n)| (k.as_str(), n.as_str())),
                );
                (p.facts.key.clone(), p.facts.uid.clone(), note)
            })
            .collect()
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

type Tick = Result<bool, watcher::Error>;
/// Reflectors: pods, five workload kinds, namespaces.
const STORES: usize = 7;

/// Start the reflectors; the stream yields `Ok(true)` when a store finished
/// its (re)list, `Ok(false)` for other changes.
pub fn reflectors(client: &Client) -> (Stores, impl Stream<Item = (usize, Tick)> + Send + 'static) {
    let config = watcher::Config::default().any_semantic();
    let (pods, pods_w) = reflector::store::<Pod>();
    let pod_stream = reflector::reflector(
        pods_w,
        // Metadata, addresses and the few lifecycle facts matter; the rest of
        // the spec and statuses is most of a pod's size.
        watcher(Api::<Pod>::all(client.clone()), config.clone()).modify(strip_pod),
    );
    fn meta<K>(
        client: &Client,
        config: &watcher::Config,
    ) -> (
        Store<PartialObjectMeta<K>>,
        futures::stream::BoxStream<'static, Tick>,
    )
    where
        K: kube::Resource
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug
            + Send
            + Sync
            + 'static,
        K::DynamicType: Default + Eq + std::hash::Hash + Clone,
    {
        let (store, writer) = reflector::store::<PartialObjectMeta<K>>();
        let stream = reflector::reflector(
            writer,
            watcher(
                Api::<PartialObjectMeta<K>>::all(client.clone()),
                config.clone(),
            )
            .modify(|m| m.metadata.managed_fields = None),
        )
        .map(|e| e.map(|e| matches!(e, watcher::Event::InitDone)));
        (store, stream.boxed())
    }
    let (replicasets, rs) = meta::<ReplicaSet>(client, &config);
    let (deployments, dep) = meta::<Deployment>(client, &config);
    let (statefulsets, sts) = meta::<StatefulSet>(client, &config);
    let (daemonsets, ds) = meta::<DaemonSet>(client, &config);
    let (jobs, job) = meta::<Job>(client, &config);
    let (namespaces, nss) = meta::<Namespace>(client, &config);
    let pod_stream = pod_stream
        .map(|e| e.map(|e| matches!(e, watcher::Event::InitDone)))
        .boxed();
    let streams = vec![pod_stream, rs, dep, sts, ds, job, nss];
    let merged = futures::stream::select_all(
        streams
            .into_iter()
            .enumerate()
            .map(|(i, s)| s.default_backoff().map(move |t| (i, t)).boxed()),
    );
    (
        Stores {
            pods,
            replicasets,
            deployments,
            statefulsets,
            daemonsets,
            jobs,
            namespaces,
        },
        merged,
    )
}

/// Run the reconcile loop until shutdown.
pub async fn reconcile_loop(
    client: Client,
    hub: PolicyHub,
    writer: Writer,
    mut leader: watch::Receiver<bool>,
    shutdown: CancellationToken,
) {
    let (stores, events) = reflectors(&client);
    let mut events = std::pin::pin!(events);
    let mut ready = [false; STORES];
    let mut state = PolicyState::default();
    let mut next_expiry: Option<jiff::Timestamp> = None;
    loop {
        let wake = async {
            match next_expiry {
                Some(at) => expiry::sleep_until_earliest([at], jiff::Timestamp::now()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => break,
            event = events.next() => {
                let Some(event) = event else { break };
                note(&mut ready, event);
                // Coalesce a burst of watch events into one reconcile.
                while let Some(Some(event)) = events.next().now_or_never() {
                    note(&mut ready, event);
                }
            }
            () = wake => {}
            changed = leader.changed() => if changed.is_err() { break },
        }
        if !ready.iter().all(|r| *r) {
            continue;
        }
        let started = std::time::Instant::now();
        let pods = stores.pod_snapshots();
        let annotated = stores.annotated();
        // Every pod of a workload looks up the same owners: once each.
        let owners = std::cell::RefCell::new(std::collections::HashMap::new());
        let outcome = state.reconcile_all(&pods, &annotated, |k| {
            owners
                .borrow_mut()
                .entry(k.clone())
                .or_insert_with(|| stores.owner(k))
                .clone()
        });
        hub.metrics.reconciles.inc();
        let versions: std::collections::BTreeSet<&str> =
            outcome.pods.values().map(|p| p.version.as_str()).collect();
        hub.metrics
            .versions_published
            .set(i64::try_from(versions.len()).unwrap_or(i64::MAX));
        let reconciled = started.elapsed();
        hub.publish_all(&outcome.pods);
        tracing::debug!(
            pods = pods.len(),
            reconcile_ms = reconciled.as_secs_f64() * 1e3,
            publish_ms = (started.elapsed() - reconciled).as_secs_f64() * 1e3,
            "reconciled"
        );
        let is_leader = *leader.borrow_and_update();
        hub.metrics.leader.set(i64::from(is_leader));
        if !is_leader {
            // Only the leader acts on deadlines; followers see the result as
            // a watch event.
            next_expiry = None;
            continue;
        }
        let now = jiff::Timestamp::now();
        let (mut actions, next) = state.plan(&outcome.sources, now);
        next_expiry = next;
        let missed = stores.missed_injection(&pods);
        hub.metrics
            .uninjected
            .set(i64::try_from(missed.len()).unwrap_or(i64::MAX));
        actions.extend(state.report_missed(missed));
        for action in actions {
            let key = match &action {
                Action::RecordSeen { key, .. }
                | Action::Expire { key, .. }
                | Action::WarnInvalid { key, .. } => key,
                Action::ReportNotInjected { key, .. } => {
                    let uid = pods
                        .iter()
                        .find(|p| &p.facts.key == key)
                        .map(|p| p.facts.uid.clone())
                        .unwrap_or_default();
                    let ctx = ActionContext {
                        uid,
                        ..ActionContext::default()
                    };
                    if let Err(error) = writer.perform(&action, &ctx).await {
                        tracing::warn!(%error, "failed to report a pod that missed injection");
                    }
                    continue;
                }
            };
            let Some(src) = outcome.sources.get(key) else {
                continue;
            };
            let expires = src.verdict.as_ref().ok().and_then(|p| {
                let seen = match &action {
                    Action::RecordSeen { value, .. } => expiry::SeenAt::parse(value).map(|s| s.at),
                    _ => None,
                };
                seen.and_then(|at| expiry::deadline(p.duration(), p.until(), at))
            });
            let ctx = ActionContext {
                uid: src.facts.uid.clone(),
                pods: src.pods,
                has_seen_at: src.facts.seen_at.is_some(),
                expires,
            };
            if matches!(action, Action::Expire { .. }) {
                hub.metrics.expired.inc();
            } else if matches!(action, Action::WarnInvalid { .. }) {
                hub.metrics.invalid.inc();
            }
            if let Err(error) = writer.perform(&action, &ctx).await {
                tracing::warn!(%error, cause = ?std::error::Error::source(&error).map(ToString::to_string), "controller write failed; will retry");
                if !matches!(action, Action::WarnInvalid { .. }) {
                    state.forget(&action);
                    // Retry soon rather than on the next unrelated event.
                    let retry = now
                        .checked_add(jiff::SignedDuration::from_secs(2))
                        .unwrap_or(now);
                    next_expiry = Some(next_expiry.map_or(retry, |n| n.min(retry)));
                }
            } else {
                tracing::info!(?action, "controller write done");
            }
        }
    }
}

fn note(ready: &mut [bool; STORES], (index, tick): (usize, Tick)) {
    match tick {
        Ok(true) => {
            if let Some(r) = ready.get_mut(index) {
                *r = true;
            }
        }
        Ok(false) => {}
        Err(error) => tracing::warn!(%error, "watch failed; retrying with backoff"),
    }
}
