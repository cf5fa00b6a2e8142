//! `PolicyStore`: apply, keep-last-good, notifications, `/policy` JSON,
//! `first` counts across re-applies.
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use http::{HeaderMap, Method};
use rand::SeedableRng;
use rand::rngs::StdRng;

use faultline_policy::*;

use super::*;

fn update(version: &str, doc: Option<&str>) -> PolicyUpdate {
    PolicyUpdate {
        version: version.into(),
        source: PolicySource::File {
            path: PathBuf::from("/etc/faults.yaml"),
        },
        policy: doc.map(|d| parse(d).unwrap()),
        peers: PeerIps::new(),
    }
}

/// Whether the store's current policy faults a plain GET from 10.0.0.1.
fn faults(store: &PolicyStore) -> bool {
    let headers = HeaderMap::new();
    let info = RequestInfo {
        direction: Direction::Inbound,
        destination_port: 8080,
        protocol: Protocol::Http,
        method: &Method::GET,
        path: "/",
        headers: &headers,
        source_ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
        destination_ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
        host: None,
    };
    store
        .compiled()
        .decide_request(&info, &mut StdRng::seed_from_u64(1))
        .is_some()
}

#[test]
fn starts_empty() {
    let store = PolicyStore::new();
    let active = store.current();
    assert_eq!(
        (active.version.as_str(), &active.source, &active.policy),
        ("", &PolicySource::None, &None)
    );
    assert!(active.compiled.is_empty());
    assert!(!store.connected());
    assert!(!faults(&store));
}

#[test]
fn apply_installs_and_notifies() {
    let store = PolicyStore::new();
    let mut rx = store.subscribe();
    assert!(!rx.has_changed().unwrap());
    store
        .apply(update("v1", Some("rules:\n- hang: {}\n")))
        .unwrap();
    assert!(rx.has_changed().unwrap());
    assert_eq!(rx.borrow_and_update().version, "v1");
    assert!(faults(&store));
    // A clone shares the state.
    let clone = store.clone();
    clone.apply(update("v2", None)).unwrap();
    assert_eq!(store.current().version, "v2");
    assert!(!faults(&store), "None means no faults");
}

#[test]
fn invalid_update_keeps_the_last_good_policy() {
    let store = PolicyStore::new();
    store
        .apply(update("v1", Some("rules:\n- hang: {}\n")))
        .unwrap();
    let rx = store.subscribe();
    let mut bad = update("v2", None);
    bad.policy = Some(Policy {
        rules: vec![Rule::default()],
        ..Policy::default()
    });
    let e = store.apply(bad).unwrap_err();
    assert_eq!(
        e.to_string(),
        "rules[0]: no fault: set one of delay, abort, respond, hang, bandwidth, partition, reset, slicer, limitData, slowClose, dns, fromHeaders, replace, patch"
    );
    assert_eq!(store.current().version, "v1");
    assert!(faults(&store));
    assert!(
        !rx.has_changed().unwrap(),
        "a rejected update is not announced"
    );
}

#[test]
fn connected_flag_is_tracked_and_announced() {
    let store = PolicyStore::new();
    let mut rx = store.subscribe();
    store.set_connected(true);
    assert!(store.connected());
    assert!(rx.borrow_and_update().connected);
    store.set_connected(true);
    assert!(!rx.has_changed().unwrap(), "no change, no notification");
    store.apply(update("v1", None)).unwrap();
    assert!(store.connected(), "apply keeps the connection state");
}

#[test]
fn active_policy_serializes_for_the_admin_endpoint() {
    let store = PolicyStore::new();
    store.set_connected(true);
    let mut up = update(
        "abc123",
        Some(
            "duration: 60s\nrules:\n- {name: x, match: {to: {podSelector: {app: db}}}, partition: {}}\n",
        ),
    );
    up.source = PolicySource::Controller {
        url: "https://faultline-webhook.faultline-system.svc:443".into(),
    };
    up.peers = PeerIps::from([(
        "app=db".to_owned(),
        vec![IpAddr::V4(Ipv4Addr::new(10, 9, 9, 9))],
    )]);
    let active = store.apply(up).unwrap();
    let json = serde_json::to_value(&*active).unwrap();
    let applied_at = json["appliedAt"].as_str().unwrap().to_owned();
    let expires_at = applied_at
        .parse::<jiff::Timestamp>()
        .unwrap()
        .checked_add(jiff::SignedDuration::from_secs(60))
        .unwrap()
        .to_string();
    assert_eq!(
        json,
        serde_json::json!({
            "version": "abc123",
            "source": {"type": "controller", "url": "https://faultline-webhook.faultline-system.svc:443"},
            "appliedAt": applied_at,
            "connected": true,
            "expiresAt": expires_at,
            "policy": {"duration": "1m", "rules": [{"name": "x", "match": {"to": {"podSelector": {"app": "db"}}}, "partition": {}}]},
            "peers": {"app=db": ["10.9.9.9"]},
        })
    );
    let file = serde_json::to_value(PolicySource::File {
        path: "/f.yaml".into(),
    })
    .unwrap();
    assert_eq!(file, serde_json::json!({"type": "file", "path": "/f.yaml"}));
    assert_eq!(
        serde_json::to_value(PolicySource::None).unwrap(),
        serde_json::json!({"type": "none"})
    );
}

#[test]
fn first_counts_survive_a_resend_of_the_same_version_only() {
    let doc = "rules:\n- {first: 2, hang: {}}\n";
    let store = PolicyStore::new();
    store.apply(update("v1", Some(doc))).unwrap();
    assert!(faults(&store));
    assert!(faults(&store));
    assert!(!faults(&store), "budget spent");
    store.apply(update("v1", Some(doc))).unwrap();
    assert!(!faults(&store), "same version re-sent: still spent");
    store.apply(update("v2", Some(doc))).unwrap();
    assert!(faults(&store), "a new version starts counting again");
}

#[test]
fn a_policy_past_its_until_faults_nothing() {
    let store = PolicyStore::new();
    let active = store
        .apply(update(
            "v1",
            Some("until: 2020-01-01T00:00:00Z\nrules:\n- hang: {}\n"),
        ))
        .unwrap();
    assert_eq!(
        active.expires_at.unwrap().to_string(),
        "2020-01-01T00:00:00Z"
    );
    assert!(!faults(&store));
    store
        .apply(update(
            "v2",
            Some("until: 2999-01-01T00:00:00Z\nrules:\n- hang: {}\n"),
        ))
        .unwrap();
    assert!(faults(&store));
}

#[test]
fn a_policy_stops_after_its_duration_and_a_resend_does_not_extend_it() {
    let store = PolicyStore::new();
    let doc = "duration: 1h\nrules:\n- hang: {}\n";
    let first = store.apply(update("v1", Some(doc))).unwrap();
    let end = first.expires_at.unwrap();
    let expected = first
        .applied_at
        .checked_add(jiff::SignedDuration::from_hours(1))
        .unwrap();
    assert_eq!(end, expected);
    let resent = store.apply(update("v1", Some(doc))).unwrap();
    assert_eq!(resent.expires_at, Some(end), "same version keeps its end");
    assert_eq!(store.compiled().expires(), first.compiled.expires());
    let json = serde_json::to_value(&*resent).unwrap();
    assert_eq!(json["expiresAt"], end.to_string());

    store
        .apply(update("v2", Some("duration: 200ms\nrules:\n- hang: {}\n")))
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while faults(&store) {
        assert!(
            std::time::Instant::now() < deadline,
            "still faulting after its duration"
        );
        std::thread::yield_now();
    }
}
