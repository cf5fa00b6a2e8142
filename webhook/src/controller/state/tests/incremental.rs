//! The incremental pass against the full one: generated sequences of watch
//! events (seeded, so a failure replays) applied to a model cluster; after
//! every batch the state fed only the changes must serve, count and plan
//! exactly what a state fed the whole snapshot does, and report every pod
//! whose policy changed.

use std::collections::{BTreeMap, HashMap};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

const PARTITION_WEB: &str = "rules:\n- name: web-partition\n  match: {direction: outbound, to: {podSelector: {app: web}}}\n  partition: {mode: drop}\n";
const TEXTS: [Option<&str>; 7] = [
    None,
    Some(SLOW),
    Some(SLOWER),
    Some(BRIEF),
    Some(INVALID),
    Some(PARTITION),
    Some(PARTITION_WEB),
];
const NAMESPACES: [&str; 2] = ["shop", "web"];
const APPS: [&str; 3] = ["nats", "web", "api"];
const PODS_PER_NAMESPACE: usize = 10;

/// A model cluster, read through the same view as the caches.
#[derive(Default)]
struct Cluster {
    pods: BTreeMap<PodKey, PodSnapshot>,
    owners: HashMap<ObjKey, ObjectFacts>,
    uids: u64,
}

impl ClusterView for Cluster {
    fn pod(&self, key: &PodKey) -> Option<PodSnapshot> {
        self.pods.get(key).cloned()
    }

    fn pods_in(&self, namespace: &str) -> Vec<PodSnapshot> {
        self.pods
            .values()
            .filter(|p| p.facts.key.namespace == namespace)
            .cloned()
            .collect()
    }

    fn owner(&self, key: &ObjKey) -> Option<ObjectFacts> {
        self.owners.get(key).cloned()
    }
}

/// An owner's kind, name and controlling owner.
type OwnerSpec = (Kind, &'static str, Option<(Kind, &'static str)>);

/// Owners by name in each namespace, with their controlling owner; `gone`
/// is never created, so pods owned by it stay unresolved.
const OWNERS: [OwnerSpec; 6] = [
    (Kind::Deployment, "d0", None),
    (Kind::Deployment, "d1", None),
    (Kind::ReplicaSet, "d0-rs", Some((Kind::Deployment, "d0"))),
    (Kind::ReplicaSet, "d1-rs", Some((Kind::Deployment, "d1"))),
    (Kind::ReplicaSet, "bare-rs", None),
    (Kind::StatefulSet, "s0", None),
];
const POD_OWNERS: [Option<(Kind, &str)>; 7] = [
    None,
    Some((Kind::ReplicaSet, "d0-rs")),
    Some((Kind::ReplicaSet, "d1-rs")),
    Some((Kind::ReplicaSet, "bare-rs")),
    Some((Kind::StatefulSet, "s0")),
    Some((Kind::Deployment, "d0")),
    Some((Kind::Job, "gone")),
];

fn pick<T: Copy>(rng: &mut StdRng, items: &[T]) -> T {
    items[rng.random_range(0..items.len())]
}

impl Cluster {
    fn uid(&mut self) -> String {
        self.uids += 1;
        format!("uid-{}", self.uids)
    }

    fn annotated(&self) -> Vec<ObjectFacts> {
        let pods = self.pods.values().map(|p| &p.facts);
        pods.chain(self.owners.values())
            .filter(|f| f.faults.is_some())
            .cloned()
            .collect()
    }

    fn owner_facts(
        &mut self,
        ns: &str,
        (kind, name, owner): OwnerSpec,
        faults: Option<&str>,
    ) -> ObjectFacts {
        ObjectFacts {
            key: ObjKey::new(kind, ns, name),
            uid: self.uid(),
            faults: faults.map(str::to_string),
            seen_at: None,
            owner: owner.map(|(k, n)| ObjKey::new(k, ns, n)),
        }
    }

    fn random_pod(&mut self, rng: &mut StdRng, key: &PodKey) -> PodSnapshot {
        let existing = self.pods.get(key).cloned();
        let uid = match &existing {
            Some(p) if rng.random_bool(0.8) => p.facts.uid.clone(),
            _ => self.uid(),
        };
        let owner = pick(rng, &POD_OWNERS).map(|(k, n)| ObjKey::new(k, &key.0, n));
        let faults = rng.random_bool(0.2).then(|| pick(rng, &TEXTS)).flatten();
        let app = pick(rng, &APPS);
        let injected = rng.random_bool(0.8);
        let mut labels = BTreeMap::from([("app".to_string(), app.to_string())]);
        if injected {
            labels.insert("faultline.dev/injected".into(), "true".into());
        }
        PodSnapshot {
            facts: ObjectFacts {
                key: ObjKey::new(Kind::Pod, &key.0, &key.1),
                uid,
                faults: faults.map(str::to_string),
                seen_at: None,
                owner,
            },
            labels,
            ips: vec![
                format!("10.0.0.{}", rng.random_range(1..6))
                    .parse()
                    .unwrap(),
            ],
            injected,
            terminal: rng.random_bool(0.1),
            // A run-to-completion pod in the classic layout, its app done or not.
            life: PodLife {
                restart_policy: "Never".into(),
                containers: vec![
                    ("app".into(), rng.random_bool(0.3).then_some(0)),
                    ("faultline-proxy".into(), None),
                ],
                ..PodLife::default()
            },
        }
    }

    /// One random watch event, applied; what it touched goes to `changes`.
    fn event(&mut self, rng: &mut StdRng, changes: &mut Changes) {
        let ns = pick(rng, &NAMESPACES);
        match rng.random_range(0..10) {
            // An owner is created, edited, recreated or deleted.
            0..=2 => {
                let spec = pick(rng, &OWNERS);
                let key = ObjKey::new(spec.0, ns, spec.1);
                let faults = pick(rng, &TEXTS);
                match (self.owners.get_mut(&key), rng.random_range(0..4)) {
                    (Some(_), 0) => {
                        self.owners.remove(&key);
                    }
                    (Some(_), 1) | (None, _) => {
                        let facts = self.owner_facts(ns, spec, faults);
                        self.owners.insert(key.clone(), facts);
                    }
                    (Some(facts), _) => facts.faults = faults.map(str::to_string),
                }
                changes.owners.insert(key);
            }
            // Only the seen-at record (the leader's own write) changes.
            3 => {
                let spec = pick(rng, &OWNERS);
                let key = ObjKey::new(spec.0, ns, spec.1);
                if let Some(facts) = self.owners.get_mut(&key) {
                    facts.seen_at =
                        Some(format!("2026-11-26T02:00:00Z;{}", rng.random_range(0..3)));
                    changes.owners.insert(key);
                }
            }
            // A pod is created, or changes anything.
            4..=7 => {
                let key = (
                    ns.to_string(),
                    format!("p{}", rng.random_range(0..PODS_PER_NAMESPACE)),
                );
                let pod = self.random_pod(rng, &key);
                self.pods.insert(key.clone(), pod);
                changes.pods.insert(key);
            }
            // A pod moves to another IP (selector peers follow).
            8 => {
                let key = (
                    ns.to_string(),
                    format!("p{}", rng.random_range(0..PODS_PER_NAMESPACE)),
                );
                if let Some(pod) = self.pods.get_mut(&key) {
                    pod.ips = vec![
                        format!("10.0.1.{}", rng.random_range(1..6))
                            .parse()
                            .unwrap(),
                    ];
                    changes.pods.insert(key);
                }
            }
            // A pod is deleted.
            _ => {
                let key = (
                    ns.to_string(),
                    format!("p{}", rng.random_range(0..PODS_PER_NAMESPACE)),
                );
                if self.pods.remove(&key).is_some() {
                    changes.pods.insert(key);
                }
            }
        }
    }
}

/// Every pod, owner and annotation set up front, then the first full pass.
fn populated(rng: &mut StdRng) -> Cluster {
    let mut cluster = Cluster::default();
    for ns in NAMESPACES {
        for spec in OWNERS {
            let faults = pick(rng, &TEXTS);
            let facts = cluster.owner_facts(ns, spec, faults);
            cluster.owners.insert(facts.key.clone(), facts);
        }
        for i in 0..PODS_PER_NAMESPACE {
            let key = (ns.to_string(), format!("p{i}"));
            let pod = cluster.random_pod(rng, &key);
            cluster.pods.insert(key, pod);
        }
    }
    cluster
}

fn full(state: &mut PolicyState, cluster: &Cluster) -> Outcome {
    let pods: Vec<PodSnapshot> = cluster.pods.values().cloned().collect();
    state.reconcile_all(&pods, &cluster.annotated(), |k| cluster.owner(k))
}

#[test]
fn the_incremental_pass_leaves_the_state_the_full_pass_does() {
    for seed in 0..64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut cluster = populated(&mut rng);
        let mut incremental = PolicyState::default();
        let mut reference = PolicyState::default();
        full(&mut incremental, &cluster);
        full(&mut reference, &cluster);
        let mut now: Timestamp = "2026-11-26T02:00:00Z".parse().unwrap();
        for step in 0..80 {
            let context = format!("seed {seed}, step {step}");
            let mut changes = Changes::default();
            for _ in 0..rng.random_range(1..4) {
                cluster.event(&mut rng, &mut changes);
            }
            let before = incremental.served().clone();
            // Now and then a store relists: the full pass on the same state.
            let delta = if step % 17 == 16 {
                full(&mut incremental, &cluster);
                None
            } else {
                Some(incremental.reconcile_changes(&changes, &cluster).delta)
            };
            let expected = full(&mut reference, &cluster);

            assert_eq!(incremental.served(), &expected.pods, "{context}: served");
            assert_eq!(
                incremental.sources(),
                &expected.sources,
                "{context}: sources"
            );
            let versions: BTreeSet<&str> =
                expected.pods.values().map(|p| p.version.as_str()).collect();
            assert_eq!(incremental.versions_served(), versions.len(), "{context}");
            if let Some(delta) = delta {
                let changed: Delta = before
                    .keys()
                    .chain(expected.pods.keys())
                    .filter(|k| before.get(*k) != expected.pods.get(*k))
                    .map(|k| (k.clone(), expected.pods.get(k).cloned()))
                    .collect();
                assert_eq!(delta, changed, "{context}: the delta is what changed");
            }
            now = now
                .checked_add(jiff::SignedDuration::from_secs(10))
                .unwrap();
            let planned = incremental.plan_current(now);
            assert_eq!(
                planned,
                reference.plan(&expected.sources, now),
                "{context}: plan"
            );
        }
    }
}

#[test]
fn an_owner_update_that_changes_nothing_resolution_reads_recomputes_no_pod() {
    let mut rng = StdRng::seed_from_u64(7);
    let mut cluster = populated(&mut rng);
    let d0 = ObjKey::new(Kind::Deployment, "shop", "d0");
    cluster.owners.get_mut(&d0).unwrap().faults = Some(SLOW.into());
    for i in 0..3 {
        let key = ("shop".to_string(), format!("p{i}"));
        let pod = cluster
            .pods
            .entry(key.clone())
            .or_insert_with(|| rs_pod(&key.1));
        pod.facts.owner = Some(ObjKey::new(Kind::ReplicaSet, "shop", "d0-rs"));
        pod.facts.faults = None;
        pod.injected = true;
    }
    let mut state = PolicyState::default();
    full(&mut state, &cluster);
    let changes = Changes {
        owners: [d0.clone()].into(),
        ..Changes::default()
    };

    // The leader's seen-at write echoed back: nothing resolution reads.
    cluster.owners.get_mut(&d0).unwrap().seen_at = Some("2026-11-26T02:00:00Z;x".into());
    let pass = state.reconcile_changes(&changes, &cluster);
    assert_eq!((pass.recomputed, pass.delta.len()), (0, 0));
    assert!(
        state.sources()[&d0].facts.seen_at.is_some(),
        "the source sees the record"
    );

    // A new policy: every pod of the Deployment, and only those.
    cluster.owners.get_mut(&d0).unwrap().faults = Some(SLOWER.into());
    let pass = state.reconcile_changes(&changes, &cluster);
    let governed = state
        .served()
        .values()
        .filter(|p| p.source.as_ref() == Some(&d0))
        .count();
    assert!(governed >= 3);
    assert_eq!(pass.recomputed, governed);
    assert_eq!(pass.delta.len(), governed);
}
