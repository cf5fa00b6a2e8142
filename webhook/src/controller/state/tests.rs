use std::collections::HashMap;

use jiff::Timestamp;

use super::*;
use crate::controller::objects::Kind;

const SLOW: &str = "rules:\n- name: slow\n  match: {direction: inbound}\n  delay: {fixed: 200ms}\n";
const SLOWER: &str =
    "rules:\n- name: slow\n  match: {direction: inbound}\n  delay: {fixed: 900ms}\n";
const BRIEF: &str =
    "duration: 60s\nrules:\n- name: slow\n  match: {direction: inbound}\n  delay: {fixed: 200ms}\n";
const INVALID: &str =
    "rules:\n- name: payments-down\n  match: {direction: outbound}\n  abort: {status: 700}\n";
const PARTITION: &str = "rules:\n- name: nats-partition\n  match: {direction: outbound, to: {podSelector: {app: nats}}}\n  partition: {mode: reject}\n";

fn facts(kind: Kind, name: &str, faults: Option<&str>, owner: Option<(Kind, &str)>) -> ObjectFacts {
    ObjectFacts {
        key: ObjKey::new(kind, "shop", name),
        uid: format!("uid-{name}"),
        faults: faults.map(str::to_string),
        seen_at: None,
        owner: owner.map(|(k, n)| ObjKey::new(k, "shop", n)),
    }
}

fn pod(name: &str, faults: Option<&str>, owner: Option<(Kind, &str)>) -> PodSnapshot {
    PodSnapshot {
        facts: facts(Kind::Pod, name, faults, owner),
        labels: BTreeMap::from([("faultline.dev/injected".to_string(), "true".to_string())]),
        ips: vec![],
        injected: true,
        terminal: false,
        life: Default::default(),
    }
}

fn peer(name: &str, app: &str, ip: &str) -> PodSnapshot {
    PodSnapshot {
        facts: facts(Kind::Pod, name, None, None),
        labels: BTreeMap::from([("app".to_string(), app.to_string())]),
        ips: vec![ip.parse().unwrap()],
        injected: false,
        terminal: false,
        life: Default::default(),
    }
}

/// A Deployment `checkout` -> ReplicaSet `checkout-1` chain, annotated as given.
struct World {
    owners: HashMap<ObjKey, ObjectFacts>,
}

impl World {
    fn deployment(faults: Option<&str>) -> Self {
        let mut owners = HashMap::new();
        let dep = facts(Kind::Deployment, "checkout", faults, None);
        let rs = facts(
            Kind::ReplicaSet,
            "checkout-1",
            None,
            Some((Kind::Deployment, "checkout")),
        );
        owners.insert(dep.key.clone(), dep);
        owners.insert(rs.key.clone(), rs);
        Self { owners }
    }

    fn set(&mut self, kind: Kind, name: &str, faults: Option<&str>) {
        let key = ObjKey::new(kind, "shop", name);
        if let Some(f) = self.owners.get_mut(&key) {
            f.faults = faults.map(str::to_string);
        }
    }

    fn lookup(&self) -> impl Fn(&ObjKey) -> Option<ObjectFacts> + '_ {
        |k| self.owners.get(k).cloned()
    }
}

fn rs_pod(name: &str) -> PodSnapshot {
    pod(name, None, Some((Kind::ReplicaSet, "checkout-1")))
}

fn key(name: &str) -> PodKey {
    ("shop".to_string(), name.to_string())
}

#[test]
fn resolution_follows_the_owner_chain_and_the_pod_wins() {
    let mut world = World::deployment(Some(SLOW));
    let p = rs_pod("a").facts;
    match resolve(&p, world.lookup()) {
        Resolution::Annotated { source, text } => {
            assert_eq!(
                source.key,
                ObjKey::new(Kind::Deployment, "shop", "checkout")
            );
            assert_eq!(text, SLOW);
        }
        other => panic!("{other:?}"),
    }
    // A Deployment's ReplicaSet carries copies of the Deployment's
    // annotations (the Deployment controller never removes them): ignored.
    world.set(Kind::ReplicaSet, "checkout-1", Some(SLOWER));
    assert!(
        matches!(resolve(&p, world.lookup()), Resolution::Annotated { source, .. } if source.key.kind == Kind::Deployment)
    );
    world.set(Kind::Deployment, "checkout", None);
    assert_eq!(
        resolve(&p, world.lookup()),
        Resolution::None,
        "a stale copy on the ReplicaSet must not keep faults alive"
    );
    // A bare ReplicaSet's own annotation counts.
    let bare = facts(Kind::ReplicaSet, "bare", Some(SLOWER), None);
    let owners = HashMap::from([(bare.key.clone(), bare)]);
    let q = pod("q", None, Some((Kind::ReplicaSet, "bare"))).facts;
    assert!(
        matches!(resolve(&q, |k| owners.get(k).cloned()), Resolution::Annotated { source, .. } if source.key.kind == Kind::ReplicaSet)
    );
    world.set(Kind::Deployment, "checkout", Some(SLOW));
    // The pod's own annotation wins over every owner.
    let own = pod("b", Some(BRIEF), Some((Kind::ReplicaSet, "checkout-1"))).facts;
    assert!(
        matches!(resolve(&own, world.lookup()), Resolution::Annotated { source, .. } if source.key.kind == Kind::Pod)
    );
    // No annotation anywhere.
    let clean = World::deployment(None);
    assert_eq!(resolve(&p, clean.lookup()), Resolution::None);
}

#[test]
fn resolution_covers_statefulsets_daemonsets_and_jobs_and_reports_missing_owners() {
    for kind in [Kind::StatefulSet, Kind::DaemonSet, Kind::Job] {
        let owner = facts(kind, "w", Some(SLOW), None);
        let owners = HashMap::from([(owner.key.clone(), owner)]);
        let p = pod("p", None, Some((kind, "w"))).facts;
        assert!(
            matches!(resolve(&p, |k| owners.get(k).cloned()), Resolution::Annotated { source, .. } if source.key.kind == kind),
            "{kind:?}"
        );
    }
    let orphan = rs_pod("a").facts;
    assert_eq!(
        resolve(&orphan, |_| None),
        Resolution::Incomplete {
            missing: ObjKey::new(Kind::ReplicaSet, "shop", "checkout-1")
        }
    );
    // A pod without a controlling owner has only its own annotation.
    assert_eq!(
        resolve(&pod("bare", None, None).facts, |_| None),
        Resolution::None
    );
}

#[test]
fn owner_cycles_terminate() {
    let a = facts(Kind::ReplicaSet, "a", None, Some((Kind::ReplicaSet, "b")));
    let b = facts(Kind::ReplicaSet, "b", None, Some((Kind::ReplicaSet, "a")));
    let owners = HashMap::from([(a.key.clone(), a), (b.key.clone(), b)]);
    let p = pod("p", None, Some((Kind::ReplicaSet, "a"))).facts;
    assert_eq!(resolve(&p, |k| owners.get(k).cloned()), Resolution::None);
}

#[test]
fn every_pod_of_a_deployment_gets_the_same_version_and_changes_make_new_ones() {
    let mut world = World::deployment(Some(SLOW));
    let pods = vec![rs_pod("a"), rs_pod("b"), pod("c", None, None)];
    let mut state = PolicyState::default();
    let out = state.reconcile(&pods, world.lookup());
    let (a, b, c) = (
        &out.pods[&key("a")],
        &out.pods[&key("b")],
        &out.pods[&key("c")],
    );
    assert_eq!(a.version, b.version);
    assert!(a.policy.is_some());
    assert_eq!(c.version, "none");
    assert!(c.policy.is_none());
    assert_eq!(out.sources.len(), 1);
    assert_eq!(out.sources.values().next().unwrap().pods, 2);
    // The served policy JSON is what `parse` accepts again.
    let json = a.policy.as_ref().unwrap().to_string();
    assert_eq!(policy::parse(&json).unwrap(), policy::parse(SLOW).unwrap());

    world.set(Kind::Deployment, "checkout", Some(SLOWER));
    let out2 = state.reconcile(&pods, world.lookup());
    assert_ne!(out2.pods[&key("a")].version, a.version);
    world.set(Kind::Deployment, "checkout", None);
    let out3 = state.reconcile(&pods, world.lookup());
    assert_eq!(out3.pods[&key("a")].version, "none");
}

#[test]
fn invalid_annotations_keep_the_last_good_policy_and_warn_once() {
    let mut world = World::deployment(Some(SLOW));
    let pods = vec![rs_pod("a")];
    let mut state = PolicyState::default();
    let good = state.reconcile(&pods, world.lookup()).pods[&key("a")].clone();

    world.set(Kind::Deployment, "checkout", Some(INVALID));
    let out = state.reconcile(&pods, world.lookup());
    assert_eq!(
        out.pods[&key("a")],
        good,
        "the invalid text must not replace the good policy"
    );
    let src = out.sources.values().next().unwrap();
    let message = src.verdict.as_ref().unwrap_err();
    assert!(
        message.contains("payments-down") && message.contains("status"),
        "{message}"
    );

    let now: Timestamp = "2026-11-26T02:00:00Z".parse().unwrap();
    let (actions, _) = state.plan(&out.sources, now);
    assert_eq!(
        actions,
        vec![Action::WarnInvalid {
            key: src.facts.key.clone(),
            message: message.clone()
        }]
    );
    let (again, _) = state.plan(&out.sources, now);
    assert!(again.is_empty(), "warned twice: {again:?}");
}

#[test]
fn an_invalid_annotation_with_no_good_history_serves_nothing_new() {
    // E.g. written while the webhook was down, seen by a fresh controller:
    // the proxies keep whatever they run, so nothing is published.
    let world = World::deployment(Some(INVALID));
    let mut state = PolicyState::default();
    let out = state.reconcile(&[rs_pod("a")], world.lookup());
    assert!(out.pods.is_empty());
}

#[test]
fn missing_owners_keep_the_previous_policy() {
    let world = World::deployment(Some(SLOW));
    let pods = vec![rs_pod("a")];
    let mut state = PolicyState::default();
    let before = state.reconcile(&pods, world.lookup()).pods[&key("a")].clone();
    let out = state.reconcile(&pods, |_| None);
    assert_eq!(out.pods[&key("a")], before);
}

#[test]
fn selectors_resolve_to_peer_ips_in_the_namespace_and_repush_on_change() {
    let world = World::deployment(Some(PARTITION));
    let mut other_ns = peer("nats-x", "nats", "10.9.9.9");
    other_ns.facts.key.namespace = "elsewhere".into();
    let mut done = peer("nats-old", "nats", "10.0.0.99");
    done.terminal = true;
    let mut pods = vec![
        rs_pod("a"),
        peer("nats-0", "nats", "10.0.0.2"),
        peer("nats-1", "nats", "10.0.0.1"),
        other_ns,
        done,
    ];
    let mut state = PolicyState::default();
    let first = state.reconcile(&pods, world.lookup()).pods[&key("a")].clone();
    assert_eq!(
        first.peers,
        BTreeMap::from([(
            "app=nats".to_string(),
            vec!["10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()]
        )])
    );
    pods[1].ips = vec!["10.0.0.3".parse().unwrap()];
    let second = state.reconcile(&pods, world.lookup()).pods[&key("a")].clone();
    // One version per annotation text; the new peers are what is pushed.
    assert_eq!(second.version, first.version);
    assert_ne!(second.peers, first.peers);
    assert_eq!(second.peers["app=nats"].len(), 2);
}

#[test]
fn the_leader_records_first_sight_once_and_expires_after_the_duration() {
    let world = World::deployment(Some(BRIEF));
    let pods = vec![rs_pod("a")];
    let mut state = PolicyState::default();
    let out = state.reconcile(&pods, world.lookup());
    let t0: Timestamp = "2026-11-26T02:00:00Z".parse().unwrap();
    let (actions, next) = state.plan(&out.sources, t0);
    assert!(
        matches!(&actions[..], [Action::RecordSeen { value, .. }] if value.starts_with("2026-11-26T02:00:00Z;"))
    );
    assert_eq!(next, Some("2026-11-26T02:01:00Z".parse().unwrap()));
    // Before the watch echoes the annotation back, a second plan must not rewrite it.
    let t1: Timestamp = "2026-11-26T02:00:30Z".parse().unwrap();
    let (actions, next) = state.plan(&out.sources, t1);
    assert!(actions.is_empty(), "{actions:?}");
    assert_eq!(next, Some("2026-11-26T02:01:00Z".parse().unwrap()));
    let t2: Timestamp = "2026-11-26T02:01:00Z".parse().unwrap();
    let (actions, next) = state.plan(&out.sources, t2);
    assert!(matches!(&actions[..], [Action::Expire { text, .. }] if text == BRIEF));
    assert_eq!(next, None);
    let (actions, _) = state.plan(&out.sources, t2);
    assert!(actions.is_empty(), "expired twice: {actions:?}");
}

#[test]
fn a_policy_that_governs_no_injected_pod_still_expires() {
    // A Deployment scaled to zero (no pods) and one whose pod is not injected.
    let idle = facts(Kind::Deployment, "idle", Some(BRIEF), None);
    let world = World::deployment(Some(BRIEF));
    let mut uninjected = rs_pod("plain");
    uninjected.injected = false;
    let copy = facts(
        Kind::ReplicaSet,
        "checkout-1",
        Some(SLOW),
        Some((Kind::Deployment, "checkout")),
    );
    let checkout = world.owners[&ObjKey::new(Kind::Deployment, "shop", "checkout")].clone();
    let annotated = [idle.clone(), checkout.clone(), copy];
    let mut state = PolicyState::default();
    let out = state.reconcile_all(&[uninjected], &annotated, world.lookup());
    assert!(out.pods.is_empty());
    // A Deployment's ReplicaSet carries a stale copy, never a policy.
    let keys: Vec<&ObjKey> = out.sources.keys().collect();
    assert_eq!(keys, [&checkout.key, &idle.key]);
    assert!(out.sources.values().all(|s| s.pods == 0));

    let t0: Timestamp = "2026-11-26T02:00:00Z".parse().unwrap();
    let (actions, next) = state.plan(&out.sources, t0);
    assert_eq!(actions.len(), 2, "{actions:?}");
    assert!(
        actions
            .iter()
            .all(|a| matches!(a, Action::RecordSeen { .. }))
    );
    assert_eq!(next, Some("2026-11-26T02:01:00Z".parse().unwrap()));
    let (actions, _) = state.plan(&out.sources, "2026-11-26T02:01:00Z".parse().unwrap());
    let expired: Vec<&ObjKey> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Expire { key, .. } => Some(key),
            _ => None,
        })
        .collect();
    assert_eq!(expired, [&checkout.key, &idle.key]);
}

#[test]
fn an_object_with_injected_pods_is_counted_once_however_often_it_is_listed() {
    let world = World::deployment(Some(BRIEF));
    let checkout = world.owners[&ObjKey::new(Kind::Deployment, "shop", "checkout")].clone();
    let mut state = PolicyState::default();
    let out = state.reconcile_all(
        &[rs_pod("a"), rs_pod("b")],
        &[checkout.clone(), checkout.clone()],
        world.lookup(),
    );
    assert_eq!(out.sources[&checkout.key].pods, 2);
    assert_eq!(out.pods.len(), 2);
}

#[test]
fn a_recorded_seen_at_from_another_replica_is_honoured() {
    let mut world = World::deployment(Some(BRIEF));
    let version = crate::controller::version::text_version(BRIEF);
    world
        .owners
        .get_mut(&ObjKey::new(Kind::Deployment, "shop", "checkout"))
        .unwrap()
        .seen_at = Some(format!("2026-11-26T01:00:00Z;{version}"));
    let mut state = PolicyState::default();
    let out = state.reconcile(&[rs_pod("a")], world.lookup());
    let (actions, _) = state.plan(&out.sources, "2026-11-26T01:00:59Z".parse().unwrap());
    assert!(actions.is_empty(), "{actions:?}");
    let (actions, _) = state.plan(&out.sources, "2026-11-26T01:01:00Z".parse().unwrap());
    assert!(matches!(&actions[..], [Action::Expire { .. }]));
}

#[test]
fn a_failed_write_is_retried_after_forget() {
    let world = World::deployment(Some(SLOW));
    let mut state = PolicyState::default();
    let out = state.reconcile(&[rs_pod("a")], world.lookup());
    let now: Timestamp = "2026-11-26T02:00:00Z".parse().unwrap();
    let (actions, next) = state.plan(&out.sources, now);
    assert_eq!(actions.len(), 1);
    assert_eq!(next, None, "a policy without duration never expires");
    state.forget(&actions[0]);
    let (again, _) = state.plan(&out.sources, now);
    assert_eq!(again, actions);
}

#[test]
fn a_recreated_object_does_not_inherit_the_old_last_good() {
    let mut world = World::deployment(Some(SLOW));
    let pods = vec![rs_pod("a")];
    let mut state = PolicyState::default();
    state.reconcile(&pods, world.lookup());
    let dep = world
        .owners
        .get_mut(&ObjKey::new(Kind::Deployment, "shop", "checkout"))
        .unwrap();
    dep.uid = "uid-new".into();
    dep.faults = Some(INVALID.into());
    let out = state.reconcile(&pods, world.lookup());
    // Falls back to what the pod ran (same pod uid), not to the old object's cache.
    assert!(out.pods[&key("a")].policy.is_some());
    assert!(out.sources.values().next().unwrap().verdict.is_err());
}

#[test]
fn a_pod_that_missed_injection_is_reported_once_while_it_lives() {
    let mut state = PolicyState::default();
    let missed = |uid: &str| {
        (
            ObjKey::new(Kind::Pod, "shop", "late-1"),
            uid.to_string(),
            "note".to_string(),
        )
    };
    let first = state.report_missed(vec![missed("u1")]);
    assert_eq!(first.len(), 1);
    assert!(matches!(&first[0], Action::ReportNotInjected { note, .. } if note == "note"));
    assert!(
        state.report_missed(vec![missed("u1")]).is_empty(),
        "reported already"
    );
    assert!(state.report_missed(vec![]).is_empty());
    // Gone, then a new pod under the same name: reported again.
    assert_eq!(state.report_missed(vec![missed("u2")]).len(), 1);
}

#[test]
fn a_new_version_is_recorded_once_while_the_object_still_shows_the_old_record() {
    let mut world = World::deployment(Some(BRIEF));
    let old = crate::controller::version::text_version(SLOW);
    world
        .owners
        .get_mut(&ObjKey::new(Kind::Deployment, "shop", "checkout"))
        .unwrap()
        .seen_at = Some(format!("2026-11-26T01:00:00Z;{old}"));
    let pods = vec![rs_pod("a")];
    let mut state = PolicyState::default();
    let out = state.reconcile(&pods, world.lookup());
    let t0: Timestamp = "2026-11-26T02:00:00Z".parse().unwrap();
    let (actions, _) = state.plan(&out.sources, t0);
    assert!(
        matches!(&actions[..], [Action::RecordSeen { version, .. }] if *version == crate::controller::version::text_version(BRIEF)),
        "{actions:?}"
    );
    // Another update of the object arrives before the watch echoes the
    // write: it still carries the old version's record.
    let out = state.reconcile(&pods, world.lookup());
    let (again, _) = state.plan(&out.sources, "2026-11-26T02:00:00.03Z".parse().unwrap());
    assert!(again.is_empty(), "recorded twice: {again:?}");
}

mod incremental;
