//! The controller's pure core: from the pods and owners the caches hold,
//! compute each injected pod's effective policy (what the stream serves) and
//! the writes the leader owes the API server (seen-at, expiry, Events).
//!
//! Two ways in, one result. [`PolicyState::reconcile_all`] recomputes every
//! pod from a full snapshot (at start and after a relist);
//! [`PolicyState::reconcile_changes`] recomputes only what a batch of watch
//! events can have changed: the pods that changed, the pods whose owner chain
//! read an object whose policy-relevant facts changed, and the pods whose
//! selector peers moved. With ten thousand pods a full pass per batch cost
//! tens of milliseconds on every pod status change and every seen-at echo;
//! the incremental pass costs what changed. Both leave the state equal
//! (tested over generated event sequences): the incremental pass is an
//! optimisation, never a second semantics.
//!
//! A policy that does not validate never reaches a proxy: the source keeps
//! its last good policy (per object uid) or, for a pod that never had one
//! from that source, what the pod ran before.
//!
//! Every annotated object is a source, whether or not it governs an
//! injected pod: `until` and `duration` end a policy on a workload scaled
//! to zero, or whose pods are not injected, all the same.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use faultline_policy::{self as policy, Policy};
use jiff::Timestamp;

use super::expiry;
pub use super::hub::{Peers, PodKey, PodPolicy};
use super::lifecycle::PodLife;
use super::objects::{Kind, ObjKey, ObjectFacts};
use super::resolve::{Resolution, is_copy, resolve};
use super::version::{policy_version, text_version};

mod deps;

use deps::{Deps, OwnerChange};

/// A pod as the controller sees it.
#[derive(Clone, Debug)]
pub struct PodSnapshot {
    pub facts: ObjectFacts,
    pub labels: BTreeMap<String, String>,
    pub ips: Vec<IpAddr>,
    /// Carries `faultline.dev/injected=true`: has a proxy to serve.
    pub injected: bool,
    /// Succeeded/Failed pods are not peers.
    pub terminal: bool,
    /// The spec and container facts lifecycle decisions need.
    pub life: PodLife,
}

impl PodSnapshot {
    /// `(namespace, name)`.
    pub fn pod_key(&self) -> PodKey {
        (
            self.facts.key.namespace.clone(),
            self.facts.key.name.clone(),
        )
    }
}

/// What the reconciler reads of the cluster: the reflector caches in
/// production, maps in tests.
pub trait ClusterView {
    /// A pod, if it exists.
    fn pod(&self, key: &PodKey) -> Option<PodSnapshot>;
    /// Every pod of a namespace (selectors are namespace-local).
    fn pods_in(&self, namespace: &str) -> Vec<PodSnapshot>;
    /// A ReplicaSet, Deployment, StatefulSet, DaemonSet or Job, if it exists.
    fn owner(&self, key: &ObjKey) -> Option<ObjectFacts>;
}

/// The objects a batch of watch events added, changed or deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub pods: BTreeSet<PodKey>,
    /// ReplicaSets, Deployments, StatefulSets, DaemonSets, Jobs.
    pub owners: BTreeSet<ObjKey>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.pods.is_empty() && self.owners.is_empty()
    }
}

/// Pods whose served policy changed: the new one, or `None` when the pod is
/// no longer served (deleted, no longer injected, or unresolved with nothing
/// to keep).
pub type Delta = BTreeMap<PodKey, Option<PodPolicy>>;

/// What an incremental pass did.
#[derive(Debug, Default)]
pub struct Pass {
    /// Pods whose served policy changed.
    pub delta: Delta,
    /// Pods recomputed (those that changed included).
    pub recomputed: usize,
}

/// One annotated object and what became of its annotation.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceState {
    pub facts: ObjectFacts,
    pub text: String,
    pub text_version: String,
    /// The parsed policy, or the validation error text.
    pub verdict: Result<Arc<Policy>, String>,
    /// Injected pods it governs (zero for an object that governs none).
    pub pods: usize,
}

/// A write the leader should perform.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Record `faultline.dev/faults-seen-at` and emit `FaultsApplied`.
    RecordSeen {
        key: ObjKey,
        value: String,
        version: String,
    },
    /// Remove the annotation if it still equals `text`; emit `FaultsRecovered`.
    Expire {
        key: ObjKey,
        text: String,
        version: String,
    },
    /// Emit a `FaultsInvalid` Warning.
    WarnInvalid { key: ObjKey, message: String },
    /// Emit a `NotInjected` Warning on a pod that runs without the proxy.
    ReportNotInjected { key: ObjKey, note: String },
}

#[derive(Clone)]
struct Good {
    uid: String,
    text: String,
    /// `policy_version(text)`, hashed once rather than once per pod.
    version: String,
    policy: Arc<Policy>,
    json: Arc<serde_json::Value>,
    /// Whether peers must be resolved (most policies have no selector).
    has_selectors: bool,
}

/// State carried between reconciles.
#[derive(Default)]
pub struct PolicyState {
    last_good: HashMap<ObjKey, Good>,
    /// Every annotated object (but a Deployment's ReplicaSets, whose copies
    /// are never policies) and what became of its annotation.
    sources: BTreeMap<ObjKey, SourceState>,
    /// What each injected pod is served.
    served: BTreeMap<PodKey, PodPolicy>,
    /// Served pods per version, so the versions gauge needs no pass over
    /// every pod.
    versions: HashMap<String, usize>,
    /// What each pod's policy was computed from.
    deps: Deps,
    /// (object, text version) pairs already acted on, so a write is not
    /// repeated while the watch has not yet echoed it back.
    seen_recorded: HashMap<ObjKey, expiry::SeenAt>,
    warned: BTreeSet<(ObjKey, String)>,
    expired: BTreeSet<(ObjKey, String)>,
    /// Pods (by uid) already reported as missing the proxy.
    reported: BTreeSet<String>,
}

/// Everything one reconcile produced.
#[derive(Debug, Default)]
pub struct Outcome {
    pub pods: BTreeMap<PodKey, PodPolicy>,
    pub sources: BTreeMap<ObjKey, SourceState>,
}

/// A full snapshot as a [`ClusterView`].
struct Snapshot<'a, F> {
    pods: HashMap<PodKey, &'a PodSnapshot>,
    all: &'a [PodSnapshot],
    owners: F,
}

impl<F: Fn(&ObjKey) -> Option<ObjectFacts>> ClusterView for Snapshot<'_, F> {
    fn pod(&self, key: &PodKey) -> Option<PodSnapshot> {
        self.pods.get(key).map(|p| (*p).clone())
    }

    fn pods_in(&self, namespace: &str) -> Vec<PodSnapshot> {
        self.all
            .iter()
            .filter(|p| p.facts.key.namespace == namespace)
            .cloned()
            .collect()
    }

    fn owner(&self, key: &ObjKey) -> Option<ObjectFacts> {
        (self.owners)(key)
    }
}

impl PolicyState {
    /// Compute the effective policy of every injected pod.
    pub fn reconcile(
        &mut self,
        pods: &[PodSnapshot],
        owners: impl Fn(&ObjKey) -> Option<ObjectFacts>,
    ) -> Outcome {
        self.reconcile_all(pods, &[], owners)
    }

    /// [`reconcile`](Self::reconcile), with `annotated` (every object that
    /// carries a policy) added as sources even when no injected pod
    /// resolves to them, so the leader records, validates and expires
    /// their policies too.
    pub fn reconcile_all(
        &mut self,
        pods: &[PodSnapshot],
        annotated: &[ObjectFacts],
        owners: impl Fn(&ObjKey) -> Option<ObjectFacts>,
    ) -> Outcome {
        self.resync(pods, annotated, owners);
        Outcome {
            pods: self.served.clone(),
            sources: self.sources.clone(),
        }
    }

    /// The full pass: every source and every pod recomputed from a snapshot.
    /// What pods ran before and the last good policies are kept.
    pub fn resync(
        &mut self,
        pods: &[PodSnapshot],
        annotated: &[ObjectFacts],
        owners: impl Fn(&ObjKey) -> Option<ObjectFacts>,
    ) {
        let view = Snapshot {
            pods: pods.iter().map(|p| (p.pod_key(), p)).collect(),
            all: pods,
            owners,
        };
        self.sources.clear();
        self.deps = Deps::default();
        for facts in annotated {
            if !self.sources.contains_key(&facts.key) {
                self.set_source(facts);
            }
        }
        let keys: BTreeSet<PodKey> = self
            .served
            .keys()
            .cloned()
            .chain(view.pods.keys().cloned())
            .collect();
        for key in keys {
            self.recompute(&key, &view);
        }
        self.deps.prune();
        // Forget sources that are gone so their memory does not grow forever.
        let sources = &self.sources;
        self.last_good.retain(|k, _| sources.contains_key(k));
    }

    /// The incremental pass: recompute what `changes` can have changed and
    /// return the pods whose served policy did change.
    pub fn reconcile_changes(&mut self, changes: &Changes, view: &impl ClusterView) -> Pass {
        let mut dirty: BTreeSet<PodKey> = changes.pods.clone();
        let mut edited = Vec::new();
        for key in &changes.owners {
            let facts = view.owner(key);
            self.update_source(key, facts.as_ref());
            match self.deps.owner_changed(key, facts) {
                OwnerChange::Unchanged => {}
                OwnerChange::Policy(pods) => edited.push((key, pods)),
                OwnerChange::Resolution(pods) => dirty.extend(pods),
            }
        }
        for (namespace, name) in &changes.pods {
            let key = ObjKey::new(Kind::Pod, namespace, name);
            let facts = view
                .pod(&(namespace.clone(), name.clone()))
                .map(|p| p.facts);
            self.update_source(&key, facts.as_ref());
        }
        let namespaces: BTreeSet<&str> = changes.pods.iter().map(|k| k.0.as_str()).collect();
        for namespace in namespaces {
            dirty.extend(self.deps.refresh_peers(namespace, view));
        }
        let mut pass = Pass::default();
        // A new policy on an owner: its pods still resolve to it, so they
        // take the new policy without being resolved again (an edit of a
        // Deployment's annotation is the common change, and it touches
        // every pod of the Deployment).
        for (source, pods) in edited {
            for key in pods {
                if dirty.contains(&key) {
                    continue;
                }
                pass.recomputed += 1;
                match self.repoint(&key, source, view) {
                    Some(Some(policy)) => {
                        pass.delta.insert(key, Some(policy));
                    }
                    Some(None) => {}
                    None => {
                        pass.recomputed -= 1;
                        dirty.insert(key);
                    }
                }
            }
        }
        pass.recomputed += dirty.len();
        for key in dirty {
            if let Some(policy) = self.recompute(&key, view) {
                pass.delta.insert(key, policy);
            }
        }
        self.deps.prune();
        pass
    }

    /// A pod that resolved to `source` before its policy changed: give it
    /// the new one. `Some(Some(new))` when what it is served changed,
    /// `Some(None)` when not, `None` when the pod must be recomputed in full
    /// (it counts toward another source, or nothing is served to it, so the
    /// facts a policy needs are not at hand).
    fn repoint(
        &mut self,
        key: &PodKey,
        source: &ObjKey,
        view: &impl ClusterView,
    ) -> Option<Option<PodPolicy>> {
        let deps = self.deps.get(key)?;
        if deps.counted.as_deref() != Some(source) {
            return None;
        }
        let finish = deps.finish;
        let current = self.served.get(key)?;
        let uid = self.sources.get(source)?.facts.uid.as_str();
        let Some(good) = self.last_good.get(source).filter(|g| g.uid == uid) else {
            // Invalid and nothing good from this source: the pod keeps its last.
            self.deps.regroup(key, None);
            return Some(None);
        };
        let namespace = &key.0;
        let (peers, group) = if good.has_selectors {
            let group = (good.version.clone(), namespace.clone());
            let peers = self.deps.peers(&group, &good.policy, || {
                resolve_peers(&good.policy, namespace, &view.pods_in(namespace))
            });
            (peers, Some(group))
        } else {
            (Peers::new(), None)
        };
        let policy = PodPolicy {
            uid: current.uid.clone(),
            version: good.version.clone(),
            policy: Some(good.json.clone()),
            peers,
            source: Some(source.clone()),
            finish,
        };
        self.deps.regroup(key, group.as_ref());
        if *current == policy {
            return Some(None);
        }
        self.set_served(key, Some(policy.clone()));
        Some(Some(policy))
    }

    /// What every injected pod is served now.
    pub fn served(&self) -> &BTreeMap<PodKey, PodPolicy> {
        &self.served
    }

    /// Every source now.
    pub fn sources(&self) -> &BTreeMap<ObjKey, SourceState> {
        &self.sources
    }

    /// Distinct versions served.
    pub fn versions_served(&self) -> usize {
        self.versions.len()
    }

    /// Recompute one pod; `Some(new)` when what it is served changed.
    fn recompute(&mut self, key: &PodKey, view: &impl ClusterView) -> Option<Option<PodPolicy>> {
        if let Some(old) = self.deps.forget_pod(key).and_then(|d| d.counted)
            && let Some(source) = self.sources.get_mut(&old)
        {
            source.pods = source.pods.saturating_sub(1);
        }
        let policy = view
            .pod(key)
            .filter(|p| p.injected)
            .and_then(|pod| self.evaluate_pod(&pod, view));
        if self.served.get(key) == policy.as_ref() {
            return None;
        }
        self.set_served(key, policy.clone());
        Some(policy)
    }

    /// What an injected pod should run; records what it was computed from.
    fn evaluate_pod(&mut self, pod: &PodSnapshot, view: &impl ClusterView) -> Option<PodPolicy> {
        let key = pod.pod_key();
        let reads = RefCell::new(Vec::new());
        let resolution = resolve(&pod.facts, |k| {
            let facts = view.owner(k);
            reads.borrow_mut().push((k.clone(), facts.clone()));
            facts
        });
        let mut counted = None;
        let mut group = None;
        let policy = match resolution {
            Resolution::None => Some(PodPolicy {
                uid: pod.facts.uid.clone(),
                version: policy_version(None),
                policy: None,
                peers: Peers::new(),
                source: None,
                finish: pod.life.app_finished(),
            }),
            Resolution::Incomplete { .. } => self.previous(&key, &pod.facts.uid),
            Resolution::Annotated { source, .. } => {
                if !self.sources.contains_key(&source.key) {
                    self.set_source(&source);
                }
                if let Some(state) = self.sources.get_mut(&source.key) {
                    state.pods += 1;
                }
                counted = Some(source.key.clone());
                let good = self
                    .last_good
                    .get(&source.key)
                    .filter(|g| g.uid == source.uid);
                match good {
                    // Invalid and nothing good from this source: keep the pod's last.
                    None => self.previous(&key, &pod.facts.uid),
                    Some(good) => {
                        let namespace = &pod.facts.key.namespace;
                        let peers = if good.has_selectors {
                            let key = (good.version.clone(), namespace.clone());
                            let peers = self.deps.peers(&key, &good.policy, || {
                                resolve_peers(&good.policy, namespace, &view.pods_in(namespace))
                            });
                            group = Some(key);
                            peers
                        } else {
                            Peers::new()
                        };
                        Some(PodPolicy {
                            uid: pod.facts.uid.clone(),
                            version: good.version.clone(),
                            policy: Some(good.json.clone()),
                            peers,
                            source: Some(source.key),
                            finish: pod.life.app_finished(),
                        })
                    }
                }
            }
        };
        let finish = pod.life.app_finished();
        self.deps.record(
            &key,
            counted.as_ref(),
            group.as_ref(),
            finish,
            reads.into_inner(),
        );
        policy
    }

    /// What the pod ran before, if it is the same pod (uid).
    fn previous(&self, key: &PodKey, uid: &str) -> Option<PodPolicy> {
        self.served.get(key).filter(|p| p.uid == uid).cloned()
    }

    fn set_served(&mut self, key: &PodKey, policy: Option<PodPolicy>) {
        if let Some(old) = self.served.remove(key)
            && let Some(count) = self.versions.get_mut(&old.version)
        {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.versions.remove(&old.version);
            }
        }
        if let Some(policy) = policy {
            *self.versions.entry(policy.version.clone()).or_default() += 1;
            self.served.insert(key.clone(), policy);
        }
    }

    /// An object changed or went: a source if it carries a policy of its own.
    fn update_source(&mut self, key: &ObjKey, facts: Option<&ObjectFacts>) {
        match facts.filter(|f| f.faults.is_some() && !is_copy(f)) {
            Some(facts) => self.set_source(facts),
            None => {
                self.sources.remove(key);
                self.last_good.remove(key);
            }
        }
    }

    /// Validate a source's annotation (memoised per uid and text), keeping
    /// the count of pods it governs.
    fn set_source(&mut self, facts: &ObjectFacts) {
        let Some(text) = facts.faults.as_deref().filter(|_| !is_copy(facts)) else {
            return;
        };
        if let Some(state) = self.sources.get_mut(&facts.key)
            && state.facts.uid == facts.uid
            && state.text == text
        {
            // Only the seen-at record or another annotation changed.
            state.facts = facts.clone();
            return;
        }
        let cached = self
            .last_good
            .get(&facts.key)
            .filter(|g| g.uid == facts.uid && g.text == text)
            .map(|g| g.policy.clone());
        let verdict = match cached {
            Some(policy) => Ok(policy),
            None => match policy::parse(text) {
                Ok(parsed) => {
                    let json = serde_json::to_value(&parsed).unwrap_or(serde_json::Value::Null);
                    let good = Good {
                        uid: facts.uid.clone(),
                        text: text.to_string(),
                        version: policy_version(Some(text)),
                        has_selectors: !parsed.selectors().is_empty(),
                        policy: Arc::new(parsed),
                        json: Arc::new(json),
                    };
                    let policy = good.policy.clone();
                    self.last_good.insert(facts.key.clone(), good);
                    Ok(policy)
                }
                Err(error) => Err(error.to_string()),
            },
        };
        let pods = self.sources.get(&facts.key).map_or(0, |s| s.pods);
        self.sources.insert(
            facts.key.clone(),
            SourceState {
                facts: facts.clone(),
                text: text.to_string(),
                text_version: text_version(text),
                verdict,
                pods,
            },
        );
    }

    /// [`plan`](Self::plan) for the current sources.
    pub fn plan_current(&mut self, now: Timestamp) -> (Vec<Action>, Option<Timestamp>) {
        let sources = std::mem::take(&mut self.sources);
        let planned = self.plan(&sources, now);
        self.sources = sources;
        planned
    }

    /// Decide the leader's writes for `sources` at `now`, and the next
    /// instant something expires.
    pub fn plan(
        &mut self,
        sources: &BTreeMap<ObjKey, SourceState>,
        now: Timestamp,
    ) -> (Vec<Action>, Option<Timestamp>) {
        let mut actions = Vec::new();
        let mut next: Option<Timestamp> = None;
        for (key, src) in sources {
            let policy = match &src.verdict {
                Err(message) => {
                    if self.warned.insert((key.clone(), src.text_version.clone())) {
                        actions.push(Action::WarnInvalid {
                            key: key.clone(),
                            message: message.clone(),
                        });
                    }
                    continue;
                }
                Ok(policy) => policy,
            };
            // The object's record counts only when it is of this version: a
            // record of the previous version stays on the object until the
            // watch echoes the new one back, and any event on the object in
            // between (the Deployment controller's own update follows every
            // edit) must not write this version's record a second time.
            let recorded = src
                .facts
                .seen_at
                .clone()
                .filter(|v| expiry::SeenAt::parse(v).is_some_and(|s| s.version == src.text_version))
                .or_else(|| {
                    self.seen_recorded
                        .get(key)
                        .filter(|s| s.version == src.text_version)
                        .map(expiry::SeenAt::to_annotation)
                });
            let (seen, write) = expiry::first_seen(recorded.as_deref(), &src.text_version, now);
            if write {
                self.seen_recorded.insert(key.clone(), seen.clone());
                actions.push(Action::RecordSeen {
                    key: key.clone(),
                    value: seen.to_annotation(),
                    version: src.text_version.clone(),
                });
            }
            let Some(deadline) = expiry::deadline(policy.duration(), policy.until(), seen.at)
            else {
                continue;
            };
            if deadline <= now {
                if self.expired.insert((key.clone(), src.text_version.clone())) {
                    actions.push(Action::Expire {
                        key: key.clone(),
                        text: src.text.clone(),
                        version: src.text_version.clone(),
                    });
                }
            } else {
                next = Some(next.map_or(deadline, |n| n.min(deadline)));
            }
        }
        let live: BTreeSet<&ObjKey> = sources.keys().collect();
        self.seen_recorded.retain(|k, _| live.contains(k));
        self.warned.retain(|(k, _)| live.contains(k));
        self.expired.retain(|(k, _)| live.contains(k));
        (actions, next)
    }

    /// Forget that an action was taken, so it is retried (its write failed).
    pub fn forget(&mut self, action: &Action) {
        match action {
            Action::RecordSeen { key, .. } => {
                self.seen_recorded.remove(key);
            }
            Action::Expire { key, version, .. } => {
                self.expired.remove(&(key.clone(), version.clone()));
            }
            Action::WarnInvalid { .. } => {}
            Action::ReportNotInjected { .. } => {}
        }
    }

    /// `NotInjected` reports for pods that missed injection, once per pod
    /// (uid) while it lives. `missed` holds (pod key, uid, note).
    pub fn report_missed(&mut self, missed: Vec<(ObjKey, String, String)>) -> Vec<Action> {
        let live: BTreeSet<String> = missed.iter().map(|(_, uid, _)| uid.clone()).collect();
        let actions = missed
            .into_iter()
            .filter(|(_, uid, _)| self.reported.insert(uid.clone()))
            .map(|(key, _, note)| Action::ReportNotInjected { key, note })
            .collect();
        self.reported.retain(|uid| live.contains(uid));
        actions
    }
}

/// Resolve the policy's pod selectors into the IPs of matching, non-terminal
/// pods in `namespace` (selectors are namespace-local, like NetworkPolicy's).
pub fn resolve_peers(policy: &Policy, namespace: &str, pods: &[PodSnapshot]) -> Peers {
    let mut peers = Peers::new();
    for selector in policy.selectors() {
        let key = selector.key();
        let mut ips: Vec<IpAddr> = pods
            .iter()
            .filter(|p| !p.terminal && p.facts.key.namespace == namespace)
            .filter(|p| selector.0.iter().all(|(k, v)| p.labels.get(k) == Some(v)))
            .flat_map(|p| p.ips.iter().copied())
            .collect();
        ips.sort();
        ips.dedup();
        peers.insert(key, ips);
    }
    peers
}

#[cfg(test)]
mod tests;
