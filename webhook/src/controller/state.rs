//! The controller's pure core: from a snapshot of pods and owners, compute
//! each injected pod's effective policy (what the stream serves) and the
//! writes the leader owes the API server (seen-at, expiry, Events).
//!
//! A policy that does not validate never reaches a proxy: the source keeps
//! its last good policy (per object uid) or, for a pod that never had one
//! from that source, what the pod ran before.
//!
//! Every annotated object is a source, whether or not it governs an
//! injected pod: `until` and `duration` end a policy on a workload scaled
//! to zero, or whose pods are not injected, all the same.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use faultline_policy::{self as policy, Policy};
use jiff::Timestamp;

use super::expiry;
pub use super::hub::{Peers, PodKey, PodPolicy};
use super::lifecycle::PodLife;
use super::objects::{ObjKey, ObjectFacts};
use super::resolve::{Resolution, is_copy, resolve};
use super::version::{policy_version, text_version};

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

/// One annotated object and what became of its annotation.
#[derive(Clone, Debug)]
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
}

/// State carried between reconciles.
#[derive(Default)]
pub struct PolicyState {
    last_good: HashMap<ObjKey, Good>,
    served: BTreeMap<PodKey, PodPolicy>,
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
        let mut out = Outcome::default();
        // Every pod of a workload runs the same policy in the same namespace,
        // so its peers are resolved once, not once per pod (which scanned
        // every pod for every pod).
        let mut peers_of: HashMap<(String, String), Peers> = HashMap::new();
        for pod in pods.iter().filter(|p| p.injected) {
            let key = (pod.facts.key.namespace.clone(), pod.facts.key.name.clone());
            let previous = self
                .served
                .get(&key)
                .filter(|p| p.uid == pod.facts.uid)
                .cloned();
            let effective = match resolve(&pod.facts, &owners) {
                Resolution::None => None,
                Resolution::Incomplete { .. } => {
                    if let Some(prev) = previous {
                        out.pods.insert(key, prev);
                    }
                    continue;
                }
                Resolution::Annotated { source, text } => {
                    let good = self.evaluate(&source, &text, &mut out);
                    match good {
                        Some(good) => Some((source.key.clone(), good)),
                        // Invalid and nothing good from this source: keep the pod's last.
                        None => {
                            if let Some(prev) = previous {
                                out.pods.insert(key, prev);
                            }
                            continue;
                        }
                    }
                }
            };
            let policy = match effective {
                None => PodPolicy {
                    uid: pod.facts.uid.clone(),
                    version: policy_version(None),
                    policy: None,
                    peers: Peers::new(),
                    source: None,
                    finish: pod.life.app_finished(),
                },
                Some((source, good)) => {
                    let version = good.version.clone();
                    let namespace = &pod.facts.key.namespace;
                    let peers = peers_of
                        .entry((version.clone(), namespace.clone()))
                        .or_insert_with(|| resolve_peers(&good.policy, namespace, pods))
                        .clone();
                    PodPolicy {
                        uid: pod.facts.uid.clone(),
                        version,
                        policy: Some(good.json.clone()),
                        peers,
                        source: Some(source),
                        finish: pod.life.app_finished(),
                    }
                }
            };
            out.pods.insert(key, policy);
        }
        self.served = out.pods.clone();
        for facts in annotated {
            self.add_idle_source(facts, &mut out);
        }
        // Forget sources that are gone so their memory does not grow forever.
        self.last_good.retain(|k, _| out.sources.contains_key(k));
        out
    }

    /// An annotated object no injected pod resolved to: a source of no pods.
    fn add_idle_source(&mut self, facts: &ObjectFacts, out: &mut Outcome) {
        let Some(text) = facts.faults.as_deref() else {
            return;
        };
        if out.sources.contains_key(&facts.key) || is_copy(facts) {
            return;
        }
        self.evaluate(facts, text, out);
        if let Some(source) = out.sources.get_mut(&facts.key) {
            source.pods = 0;
        }
    }

    /// Validate a source's annotation (memoised per text), returning the
    /// policy to serve: the new one if valid, else the last good one.
    fn evaluate(&mut self, source: &ObjectFacts, text: &str, out: &mut Outcome) -> Option<Good> {
        if let Some(state) = out.sources.get_mut(&source.key) {
            state.pods += 1;
            return self
                .last_good
                .get(&source.key)
                .filter(|g| g.uid == source.uid)
                .cloned();
        }
        let cached = self
            .last_good
            .get(&source.key)
            .filter(|g| g.uid == source.uid && g.text == text)
            .cloned();
        let verdict = match cached {
            Some(good) => Ok(good.policy),
            None => match policy::parse(text) {
                Ok(parsed) => {
                    let json = serde_json::to_value(&parsed).unwrap_or(serde_json::Value::Null);
                    let good = Good {
                        uid: source.uid.clone(),
                        text: text.to_string(),
                        version: policy_version(Some(text)),
                        policy: Arc::new(parsed),
                        json: Arc::new(json),
                    };
                    self.last_good.insert(source.key.clone(), good.clone());
                    Ok(good.policy)
                }
                Err(error) => Err(error.to_string()),
            },
        };
        out.sources.insert(
            source.key.clone(),
            SourceState {
                facts: source.clone(),
                text: text.to_string(),
                text_version: text_version(text),
                verdict,
                pods: 1,
            },
        );
        self.last_good
            .get(&source.key)
            .filter(|g| g.uid == source.uid)
            .cloned()
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
