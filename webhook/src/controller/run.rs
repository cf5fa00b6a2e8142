//! The I/O shell around [`PolicyState`]: reflectors feed stores, and every
//! batch of watch events (or an expiry deadline, or a leadership change)
//! reconciles what it touched: the pods that changed, and the pods of the
//! workloads that changed. Only a store's (re)list, after which the store
//! was replaced wholesale and its events are not known one by one, runs
//! the full pass over every pod. What changed is published to the
//! [`PolicyHub`] and, on the leader, turned into writes.
//!
//! Watches are cluster-wide: all pods (selector peers may be any pod, not only
//! injected ones; spec is stripped to keep memory small) and the metadata only
//! of ReplicaSets, Deployments, StatefulSets, DaemonSets and Jobs.

use std::collections::{BTreeMap, BTreeSet};

use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PartialObjectMeta;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::expiry;
use super::hub::PolicyHub;
use super::lifecycle::strip_pod;
use super::objects::{ObjKey, Watched};
use super::state::{Action, Changes, ClusterView, PodKey, PolicyState};
use super::stores::{PassView, Stores};
use super::writer::{ActionContext, Writer};

/// What one watch event means to the reconcile loop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A pod was added, changed or deleted.
    Pod(PodKey),
    /// A ReplicaSet, Deployment, StatefulSet, DaemonSet or Job was.
    Owner(ObjKey),
    /// A namespace was (its labels opt its pods in to injection).
    Namespace(String),
    /// A store finished a (re)list and was replaced wholesale.
    Relisted,
}

type Tick = Result<Option<Change>, watcher::Error>;
/// Reflectors: pods, five workload kinds, namespaces.
const STORES: usize = 7;

/// Pure: the change a watch event stands for. The objects of a (re)list are
/// not changes one by one: the store swaps them in at `InitDone`.
fn change<K: Resource>(
    event: &watcher::Event<K>,
    key: impl Fn(&ObjectMeta) -> Option<Change>,
) -> Option<Change> {
    match event {
        watcher::Event::Apply(obj) | watcher::Event::Delete(obj) => key(obj.meta()),
        watcher::Event::InitDone => Some(Change::Relisted),
        watcher::Event::Init | watcher::Event::InitApply(_) => None,
    }
}

fn pod_change(meta: &ObjectMeta) -> Option<Change> {
    Some(Change::Pod((meta.namespace.clone()?, meta.name.clone()?)))
}

fn owner_change<K: Watched>(meta: &ObjectMeta) -> Option<Change> {
    Some(Change::Owner(ObjKey::new(
        K::KIND,
        meta.namespace.clone()?,
        meta.name.clone()?,
    )))
}

fn namespace_change(meta: &ObjectMeta) -> Option<Change> {
    Some(Change::Namespace(meta.name.clone()?))
}

/// Start the reflectors; the stream yields the change each event stands for.
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
        key: fn(&ObjectMeta) -> Option<Change>,
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
        .map(move |e| e.map(|e| change(&e, key)));
        (store, stream.boxed())
    }
    let (replicasets, rs) = meta::<ReplicaSet>(client, &config, owner_change::<ReplicaSet>);
    let (deployments, dep) = meta::<Deployment>(client, &config, owner_change::<Deployment>);
    let (statefulsets, sts) = meta::<StatefulSet>(client, &config, owner_change::<StatefulSet>);
    let (daemonsets, ds) = meta::<DaemonSet>(client, &config, owner_change::<DaemonSet>);
    let (jobs, job) = meta::<Job>(client, &config, owner_change::<Job>);
    let (namespaces, nss) = meta::<Namespace>(client, &config, namespace_change);
    let pod_stream = pod_stream
        .map(|e| e.map(|e| change(&e, pod_change)))
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

/// The changes not reconciled yet.
#[derive(Debug, Default)]
struct Batch {
    /// A store was relisted (or nothing was reconciled yet): every pod.
    full: bool,
    changes: Changes,
    namespaces: BTreeSet<String>,
}

impl Batch {
    fn note(&mut self, ready: &mut [bool; STORES], (index, tick): (usize, Tick)) {
        match tick {
            Ok(Some(Change::Relisted)) => {
                if let Some(r) = ready.get_mut(index) {
                    *r = true;
                }
                self.full = true;
            }
            Ok(Some(Change::Pod(key))) => {
                self.changes.pods.insert(key);
            }
            Ok(Some(Change::Owner(key))) => {
                self.changes.owners.insert(key);
            }
            Ok(Some(Change::Namespace(name))) => {
                self.namespaces.insert(name);
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, "watch failed; retrying with backoff"),
        }
    }
}

/// Pods that should run the proxy and do not: pod -> (pod, uid, Event note).
type Missed = BTreeMap<PodKey, (ObjKey, String, String)>;

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
    let mut missed = Missed::new();
    let mut pending = Batch {
        full: true,
        ..Batch::default()
    };
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
                pending.note(&mut ready, event);
                // Coalesce a burst of watch events into one reconcile.
                while let Some(Some(event)) = events.next().now_or_never() {
                    pending.note(&mut ready, event);
                }
            }
            () = wake => {}
            changed = leader.changed() => if changed.is_err() { break },
        }
        if !ready.iter().all(|r| *r) {
            continue;
        }
        let batch = std::mem::take(&mut pending);
        reconcile(&stores, &hub, &mut state, &mut missed, &batch);
        let is_leader = *leader.borrow_and_update();
        hub.metrics.leader.set(i64::from(is_leader));
        if !is_leader {
            // Only the leader acts on deadlines; followers see the result as
            // a watch event.
            next_expiry = None;
            continue;
        }
        next_expiry = act(&writer, &hub, &mut state, &missed).await;
    }
}

/// Reconcile a batch (all pods after a relist, else what it touched) and
/// publish what changed.
fn reconcile(
    stores: &Stores,
    hub: &PolicyHub,
    state: &mut PolicyState,
    missed: &mut Missed,
    batch: &Batch,
) {
    if !batch.full && batch.changes.is_empty() && batch.namespaces.is_empty() {
        return;
    }
    let started = std::time::Instant::now();
    let view = PassView::new(stores);
    let (pass, pods, reconciled) = if batch.full {
        let pods = stores.pod_snapshots();
        let annotated = stores.annotated();
        state.resync(&pods, &annotated, |k| view.owner(k));
        *missed = pods
            .iter()
            .filter_map(|p| stores.missed_injection(p))
            .map(|m| ((m.0.namespace.clone(), m.0.name.clone()), m))
            .collect();
        let reconciled = started.elapsed();
        hub.publish_all(state.served());
        ("full", pods.len(), reconciled)
    } else {
        let pass = state.reconcile_changes(&batch.changes, &view);
        note_missed(stores, missed, batch);
        let reconciled = started.elapsed();
        hub.publish(&pass.delta);
        ("incremental", pass.recomputed, reconciled)
    };
    hub.metrics.reconciles.inc();
    hub.metrics
        .versions_published
        .set(i64::try_from(state.versions_served()).unwrap_or(i64::MAX));
    // `pods`: every pod for a full pass, the pods recomputed for an
    // incremental one.
    tracing::debug!(
        pass,
        pods,
        reconcile_ms = reconciled.as_secs_f64() * 1e3,
        publish_ms = (started.elapsed() - reconciled).as_secs_f64() * 1e3,
        "reconciled"
    );
}

/// Keep `missed` current for the pods and namespaces a batch touched.
fn note_missed(stores: &Stores, missed: &mut Missed, batch: &Batch) {
    let mut pods: Vec<_> = batch
        .changes
        .pods
        .iter()
        .map(|key| (key.clone(), stores.pod(key)))
        .collect();
    for namespace in &batch.namespaces {
        missed.retain(|key, _| &key.0 != namespace);
        pods.extend(
            stores
                .pods_in(namespace)
                .into_iter()
                .map(|p| (p.pod_key(), Some(p))),
        );
    }
    for (key, pod) in pods {
        match pod.and_then(|p| stores.missed_injection(&p)) {
            Some(m) => missed.insert(key, m),
            None => missed.remove(&key),
        };
    }
}

/// The leader's writes for the current state; returns when to look again.
async fn act(
    writer: &Writer,
    hub: &PolicyHub,
    state: &mut PolicyState,
    missed: &Missed,
) -> Option<jiff::Timestamp> {
    let now = jiff::Timestamp::now();
    let (mut actions, mut next_expiry) = state.plan_current(now);
    hub.metrics
        .uninjected
        .set(i64::try_from(missed.len()).unwrap_or(i64::MAX));
    actions.extend(state.report_missed(missed.values().cloned().collect()));
    for action in actions {
        let key = match &action {
            Action::RecordSeen { key, .. }
            | Action::Expire { key, .. }
            | Action::WarnInvalid { key, .. } => key,
            Action::ReportNotInjected { key, .. } => {
                let uid = missed
                    .get(&(key.namespace.clone(), key.name.clone()))
                    .map(|m| m.1.clone())
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
        let Some(src) = state.sources().get(key) else {
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
    next_expiry
}
