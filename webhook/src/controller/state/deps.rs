//! What each injected pod's policy was computed from, so a batch of watch
//! events recomputes the pods it can affect and no others:
//!
//! - the owners its resolution read (the chain up to the governing
//!   annotation, or up to the owner missing from the cache), with the facts
//!   read, so an owner's update that leaves them as they were (a status
//!   change, a `faults-seen-at` echo, the annotation copied onto a
//!   Deployment's ReplicaSet) recomputes nothing, and one that changes only
//!   the policy text repoints its pods without resolving them again;
//! - the source it counts toward (`SourceState::pods`);
//! - the selector peers it was given, shared by every pod with the same
//!   version in the same namespace and refreshed when a pod of that
//!   namespace changes.
//!
//! Keys are shared (`Arc`) between the maps: ten thousand pods of one
//! Deployment hold one copy of the Deployment's key, not ten thousand.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use faultline_policy::Policy;

use super::{ClusterView, Peers, PodKey, resolve_peers};
use crate::controller::objects::{ObjKey, ObjectFacts};
use crate::controller::resolve::is_copy;

/// `(version, namespace)`: pods that share resolved peers.
pub(super) type GroupKey = (String, String);

/// One pod's dependencies.
#[derive(Debug)]
pub(super) struct PodDeps {
    /// Owners its resolution looked up.
    reads: Box<[Arc<ObjKey>]>,
    /// The source it counts toward.
    pub counted: Option<Arc<ObjKey>>,
    /// The peers it was given, when its policy has selectors.
    group: Option<Arc<GroupKey>>,
    /// Its app has finished (what a policy computed for it now says).
    pub finish: bool,
}

/// The pods that read one owner, and what they read.
#[derive(Debug)]
struct Readers {
    /// The facts resolution reads (see [`relevant`]).
    facts: Option<ObjectFacts>,
    pods: HashSet<Arc<PodKey>>,
}

#[derive(Debug)]
struct PeerGroup {
    policy: Arc<Policy>,
    peers: Peers,
    pods: HashSet<Arc<PodKey>>,
}

/// What an owner's update means to the pods that read it.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum OwnerChange {
    /// Nothing resolution reads changed.
    Unchanged,
    /// Only its policy text changed: every pod that read it still resolves
    /// to it and needs only the new policy.
    Policy(Vec<PodKey>),
    /// Resolution through it may go elsewhere: recompute these pods.
    Resolution(Vec<PodKey>),
}

/// Dependencies of every injected pod, and their reverse indexes.
#[derive(Debug, Default)]
pub(super) struct Deps {
    pods: HashMap<Arc<PodKey>, PodDeps>,
    readers: HashMap<Arc<ObjKey>, Readers>,
    groups: HashMap<Arc<GroupKey>, PeerGroup>,
}

/// What resolution reads of an owner: not the seen-at record (the leader's
/// own write must not recompute every pod of a workload), and not the
/// annotation of a Deployment's ReplicaSet (a copy resolution skips).
fn relevant(facts: Option<ObjectFacts>) -> Option<ObjectFacts> {
    facts.map(|mut f| {
        f.seen_at = None;
        if is_copy(&f) {
            f.faults = None;
        }
        f
    })
}

/// Whether `before` -> `after` changed only a policy that stays a policy.
fn policy_edit(before: Option<&ObjectFacts>, after: Option<&ObjectFacts>) -> bool {
    match (before, after) {
        (Some(b), Some(a)) => {
            b.faults.is_some()
                && a.faults.is_some()
                && b.uid == a.uid
                && b.owner == a.owner
                && !is_copy(a)
        }
        _ => false,
    }
}

impl Deps {
    /// Remove a pod's dependencies (it is about to be recomputed, or gone).
    /// Peer groups it leaves empty stay until [`prune`](Self::prune), so a
    /// group whose pods are recomputed one by one is resolved once.
    pub fn forget_pod(&mut self, key: &PodKey) -> Option<PodDeps> {
        let (pod, deps) = self.pods.remove_entry(key)?;
        for owner in &deps.reads {
            if let Some(readers) = self.readers.get_mut(owner) {
                readers.pods.remove(&pod);
                if readers.pods.is_empty() {
                    self.readers.remove(owner);
                }
            }
        }
        if let Some(group) = deps.group.as_ref().and_then(|g| self.groups.get_mut(g)) {
            group.pods.remove(&pod);
        }
        Some(deps)
    }

    /// A pod's dependencies.
    pub fn get(&self, key: &PodKey) -> Option<&PodDeps> {
        self.pods.get(key)
    }

    /// Record what a pod was computed from; `reads` holds each owner looked
    /// up and what the lookup returned.
    pub fn record(
        &mut self,
        key: &PodKey,
        counted: Option<&ObjKey>,
        group: Option<&GroupKey>,
        finish: bool,
        reads: Vec<(ObjKey, Option<ObjectFacts>)>,
    ) {
        let pod = Arc::new(key.clone());
        let mut shared = Vec::with_capacity(reads.len());
        for (owner, facts) in reads {
            let owner = match self.readers.get_key_value(&owner) {
                Some((k, _)) => k.clone(),
                None => Arc::new(owner),
            };
            let readers = self
                .readers
                .entry(owner.clone())
                .or_insert_with(|| Readers {
                    facts: None,
                    pods: HashSet::new(),
                });
            readers.facts = relevant(facts);
            readers.pods.insert(pod.clone());
            shared.push(owner);
        }
        let counted = counted.map(|c| {
            shared
                .iter()
                .find(|k| k.as_ref() == c)
                .cloned()
                .unwrap_or_else(|| Arc::new(c.clone()))
        });
        let group = group.and_then(|g| self.join(g, &pod));
        self.pods.insert(
            pod,
            PodDeps {
                reads: shared.into_boxed_slice(),
                counted,
                group,
                finish,
            },
        );
    }

    /// Put a pod in a peer group (which [`peers`](Self::peers) created).
    fn join(&mut self, group: &GroupKey, pod: &Arc<PodKey>) -> Option<Arc<GroupKey>> {
        let (key, _) = self.groups.get_key_value(group)?;
        let key = key.clone();
        self.groups.get_mut(&key)?.pods.insert(pod.clone());
        Some(key)
    }

    /// Move a recorded pod to another peer group (or none).
    pub fn regroup(&mut self, key: &PodKey, group: Option<&GroupKey>) {
        let Some((pod, deps)) = self.pods.get_key_value(key) else {
            return;
        };
        if deps.group.as_deref() == group {
            return;
        }
        let pod = pod.clone();
        if let Some(old) = deps.group.clone()
            && let Some(g) = self.groups.get_mut(&old)
        {
            g.pods.remove(&pod);
        }
        let joined = group.and_then(|g| self.join(g, &pod));
        if let Some(deps) = self.pods.get_mut(key) {
            deps.group = joined;
        }
    }

    /// An owner changed or went: what that means to the pods that read it.
    pub fn owner_changed(&mut self, key: &ObjKey, facts: Option<ObjectFacts>) -> OwnerChange {
        let Some(readers) = self.readers.get_mut(key) else {
            return OwnerChange::Unchanged;
        };
        let facts = relevant(facts);
        if readers.facts == facts {
            return OwnerChange::Unchanged;
        }
        let edit = policy_edit(readers.facts.as_ref(), facts.as_ref());
        readers.facts = facts;
        let pods = readers.pods.iter().map(|p| p.as_ref().clone()).collect();
        if edit {
            OwnerChange::Policy(pods)
        } else {
            OwnerChange::Resolution(pods)
        }
    }

    /// The peers of `group`, resolved with `resolve` the first time.
    pub fn peers(
        &mut self,
        group: &GroupKey,
        policy: &Arc<Policy>,
        resolve: impl FnOnce() -> Peers,
    ) -> Peers {
        if let Some(g) = self.groups.get(group) {
            return g.peers.clone();
        }
        let peers = resolve();
        self.groups.insert(
            Arc::new(group.clone()),
            PeerGroup {
                policy: policy.clone(),
                peers: peers.clone(),
                pods: HashSet::new(),
            },
        );
        peers
    }

    /// A pod of `namespace` changed: resolve its peer groups again; the pods
    /// of every group whose peers moved.
    pub fn refresh_peers(&mut self, namespace: &str, view: &impl ClusterView) -> Vec<PodKey> {
        let mut pods = None;
        let mut moved = Vec::new();
        for (key, group) in &mut self.groups {
            if key.1 != namespace {
                continue;
            }
            let pods = pods.get_or_insert_with(|| view.pods_in(namespace));
            let peers = resolve_peers(&group.policy, namespace, pods);
            if peers != group.peers {
                group.peers = peers;
                moved.extend(group.pods.iter().map(|p| p.as_ref().clone()));
            }
        }
        moved
    }

    /// Drop peer groups no pod uses any more.
    pub fn prune(&mut self) {
        self.groups.retain(|_, g| !g.pods.is_empty());
    }
}
