//! What each injected pod's policy was computed from, so a batch of watch
//! events recomputes the pods it can affect and no others:
//!
//! - the owners its resolution read (the chain up to the governing
//!   annotation, or up to the owner missing from the cache), with the facts
//!   read, so an owner's update that leaves them as they were (a status
//!   change, a `faults-seen-at` echo) recomputes nothing;
//! - the source it counts toward (`SourceState::pods`);
//! - the selector peers it was given, shared by every pod with the same
//!   version in the same namespace and refreshed when a pod of that
//!   namespace changes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use faultline_policy::Policy;

use super::{ClusterView, Peers, PodKey, resolve_peers};
use crate::controller::objects::{ObjKey, ObjectFacts};

/// `(version, namespace)`: pods that share resolved peers.
pub(super) type GroupKey = (String, String);

/// One pod's dependencies.
#[derive(Clone, Debug, Default)]
pub(super) struct PodDeps {
    /// Owners its resolution looked up.
    reads: Vec<ObjKey>,
    /// The source it counts toward.
    pub counted: Option<ObjKey>,
    /// The peers it was given, when its policy has selectors.
    pub group: Option<GroupKey>,
}

/// The pods that read one owner, and what they read.
#[derive(Debug)]
struct Readers {
    /// The facts resolution reads (the seen-at record cleared: resolution
    /// does not read it, and the leader's own write must not recompute
    /// every pod of a workload).
    facts: Option<ObjectFacts>,
    pods: HashSet<PodKey>,
}

#[derive(Debug)]
struct PeerGroup {
    policy: Arc<Policy>,
    peers: Peers,
    pods: HashSet<PodKey>,
}

/// Dependencies of every injected pod, and their reverse indexes.
#[derive(Debug, Default)]
pub(super) struct Deps {
    pods: HashMap<PodKey, PodDeps>,
    readers: HashMap<ObjKey, Readers>,
    groups: HashMap<GroupKey, PeerGroup>,
}

fn relevant(facts: Option<ObjectFacts>) -> Option<ObjectFacts> {
    facts.map(|mut f| {
        f.seen_at = None;
        f
    })
}

impl Deps {
    /// Remove a pod's dependencies (it is about to be recomputed, or gone).
    /// Peer groups it leaves empty stay until [`prune`](Self::prune), so a
    /// group whose pods are recomputed one by one is resolved once.
    pub fn forget_pod(&mut self, key: &PodKey) -> Option<PodDeps> {
        let deps = self.pods.remove(key)?;
        for owner in &deps.reads {
            if let Some(readers) = self.readers.get_mut(owner) {
                readers.pods.remove(key);
                if readers.pods.is_empty() {
                    self.readers.remove(owner);
                }
            }
        }
        if let Some(group) = deps.group.as_ref().and_then(|g| self.groups.get_mut(g)) {
            group.pods.remove(key);
        }
        Some(deps)
    }

    /// Record what a pod was computed from; `reads` holds each owner looked
    /// up and what the lookup returned.
    pub fn record(
        &mut self,
        key: PodKey,
        mut deps: PodDeps,
        reads: Vec<(ObjKey, Option<ObjectFacts>)>,
    ) {
        for (owner, facts) in reads {
            let readers = self
                .readers
                .entry(owner.clone())
                .or_insert_with(|| Readers {
                    facts: None,
                    pods: HashSet::new(),
                });
            readers.facts = relevant(facts);
            readers.pods.insert(key.clone());
            deps.reads.push(owner);
        }
        if let Some(group) = deps.group.as_ref().and_then(|g| self.groups.get_mut(g)) {
            group.pods.insert(key.clone());
        }
        self.pods.insert(key, deps);
    }

    /// An owner changed or went: the pods to recompute, if what their
    /// resolution read of it changed.
    pub fn owner_changed(&mut self, key: &ObjKey, facts: Option<ObjectFacts>) -> Vec<PodKey> {
        let Some(readers) = self.readers.get_mut(key) else {
            return Vec::new();
        };
        let facts = relevant(facts);
        if readers.facts == facts {
            return Vec::new();
        }
        readers.facts = facts;
        readers.pods.iter().cloned().collect()
    }

    /// The peers of `group`, resolved with `resolve` the first time.
    pub fn peers(
        &mut self,
        group: &GroupKey,
        policy: &Arc<Policy>,
        resolve: impl FnOnce() -> Peers,
    ) -> Peers {
        self.groups
            .entry(group.clone())
            .or_insert_with(|| PeerGroup {
                policy: policy.clone(),
                peers: resolve(),
                pods: HashSet::new(),
            })
            .peers
            .clone()
    }

    /// A pod of `namespace` changed: resolve its peer groups again; the pods
    /// of every group whose peers moved.
    pub fn refresh_peers(&mut self, namespace: &str, view: &impl ClusterView) -> Vec<PodKey> {
        let mut pods = None;
        let mut moved = Vec::new();
        for ((_, ns), group) in &mut self.groups {
            if ns != namespace {
                continue;
            }
            let pods = pods.get_or_insert_with(|| view.pods_in(namespace));
            let peers = resolve_peers(&group.policy, namespace, pods);
            if peers != group.peers {
                group.peers = peers;
                moved.extend(group.pods.iter().cloned());
            }
        }
        moved
    }

    /// Drop peer groups no pod uses any more.
    pub fn prune(&mut self) {
        self.groups.retain(|_, g| !g.pods.is_empty());
    }
}
