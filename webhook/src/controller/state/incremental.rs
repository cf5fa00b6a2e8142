//! The incremental pass: what a batch of watch events can have changed,
//! recomputed; everything else left as it is.

use std::collections::BTreeSet;

use super::deps::OwnerChange;
use super::{Changes, ClusterView, Pass, Peers, PodKey, PodPolicy, PolicyState, resolve_peers};
use crate::controller::objects::{Kind, ObjKey};

impl PolicyState {
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
}
