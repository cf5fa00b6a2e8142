//! Which annotation governs a pod: the pod's own `faultline.dev/faults` wins,
//! else the nearest controlling owner's (Pod -> ReplicaSet -> Deployment, or
//! Pod -> StatefulSet / DaemonSet / Job), else none. Pure: owners come from a
//! lookup function (the reflector stores in production, a map in tests).

use super::objects::{ObjKey, ObjectFacts};

/// Owner chains are at most Pod -> ReplicaSet -> Deployment; anything longer
/// is a loop or a kind we do not follow.
const MAX_CHAIN: usize = 4;

/// The result of resolving one pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// No object in the chain has a policy: clean traffic.
    None,
    /// `source` carries the governing annotation.
    Annotated { source: ObjectFacts, text: String },
    /// An owner is not (yet) in the cache, so the answer is unknown; callers
    /// keep what the pod had rather than clearing its faults.
    Incomplete { missing: ObjKey },
}

/// Resolve the policy annotation that governs `pod`.
pub fn resolve(pod: &ObjectFacts, lookup: impl Fn(&ObjKey) -> Option<ObjectFacts>) -> Resolution {
    let mut current = pod.clone();
    for _ in 0..MAX_CHAIN {
        if let Some(text) = current.faults.clone() {
            return Resolution::Annotated {
                source: current,
                text,
            };
        }
        let Some(owner) = current.owner.clone() else {
            return Resolution::None;
        };
        match lookup(&owner) {
            Some(next) => current = next,
            None => return Resolution::Incomplete { missing: owner },
        }
    }
    Resolution::None
}
