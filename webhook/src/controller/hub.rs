//! The hand-off between the reconciler and the streams: one `watch` channel
//! per pod holding the pod's current [`PodPolicy`]. Publishing an unchanged
//! version wakes nobody; a stream for a pod the reconciler has not resolved
//! yet waits on an empty channel until it has.
//!
//! Also tracks, per pod, how many streams are open and which version each was
//! last sent, for metrics and the status endpoint.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;

use std::net::IpAddr;

use super::metrics::Metrics;
use super::objects::ObjKey;

/// Selector key -> pod IPs (the wire form of `policy::PeerIps`).
pub type Peers = BTreeMap<String, Vec<IpAddr>>;

/// `(namespace, name)` of a pod.
pub type PodKey = (String, String);

/// What a pod's proxy should run.
#[derive(Clone, Debug, PartialEq)]
pub struct PodPolicy {
    pub uid: String,
    pub version: String,
    pub policy: Option<Arc<serde_json::Value>>,
    pub peers: Peers,
    /// The object whose annotation governs this pod.
    pub source: Option<ObjKey>,
    /// Every app container has exited for good: the proxy should finish too
    /// (classic layout; see `lifecycle`).
    pub finish: bool,
}

type Slot = watch::Sender<Option<PodPolicy>>;

/// Shared by the reconciler (writer) and every stream (readers).
#[derive(Clone, Default)]
pub struct PolicyHub {
    inner: Arc<Mutex<Inner>>,
    /// Counters and gauges for `/metrics`.
    pub metrics: Metrics,
}

#[derive(Default)]
struct Inner {
    slots: BTreeMap<PodKey, Slot>,
    /// Pods whose policy the reconciler has resolved at least once.
    resolved: bool,
}

/// One connected proxy, as the status endpoint reports it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ProxyStatus {
    pub namespace: String,
    pub pod: String,
    pub streams: usize,
    pub version: Option<String>,
}

impl PolicyHub {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replace the whole set of pod policies. Pods missing from `pods` get
    /// `None` (their streams wait) and are dropped once nobody listens.
    pub fn publish_all(&self, pods: &BTreeMap<PodKey, PodPolicy>) {
        let mut inner = self.lock();
        inner.resolved = true;
        for (key, policy) in pods {
            let slot = inner
                .slots
                .entry(key.clone())
                .or_insert_with(|| watch::channel(None).0);
            slot.send_if_modified(|current| {
                // Peers change without a new version (a selector's pods moved).
                if current
                    .as_ref()
                    .map(|c| (&c.version, &c.uid, c.finish, &c.peers))
                    == Some((&policy.version, &policy.uid, policy.finish, &policy.peers))
                {
                    false
                } else {
                    *current = Some(policy.clone());
                    true
                }
            });
        }
        inner.slots.retain(|key, slot| {
            if pods.contains_key(key) {
                return true;
            }
            slot.send_if_modified(|current| current.take().is_some());
            slot.receiver_count() > 0
        });
    }

    /// Subscribe to a pod's policy (creating an empty slot if needed).
    pub fn subscribe(&self, key: &PodKey) -> watch::Receiver<Option<PodPolicy>> {
        let mut inner = self.lock();
        inner
            .slots
            .entry(key.clone())
            .or_insert_with(|| watch::channel(None).0)
            .subscribe()
    }

    /// The policy currently published for a pod.
    pub fn current(&self, key: &PodKey) -> Option<PodPolicy> {
        self.lock().slots.get(key).and_then(|s| s.borrow().clone())
    }

    /// Whether the reconciler has run at least once.
    pub fn is_resolved(&self) -> bool {
        self.lock().resolved
    }
}

/// Stream id -> the version it was last sent, per pod.
type StreamTable = BTreeMap<PodKey, BTreeMap<u64, Option<String>>>;

/// Open streams and what they were last sent, keyed by pod.
#[derive(Clone, Default)]
pub struct Connections {
    inner: Arc<Mutex<StreamTable>>,
    next_id: Arc<std::sync::atomic::AtomicU64>,
}

impl Connections {
    fn lock(&self) -> std::sync::MutexGuard<'_, StreamTable> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Register a stream; it is unregistered when the guard drops.
    pub fn open(&self, key: PodKey, metrics: Metrics) -> ConnectionGuard {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.lock().entry(key.clone()).or_default().insert(id, None);
        metrics.connected.inc();
        ConnectionGuard {
            connections: self.clone(),
            key,
            id,
            metrics,
        }
    }

    /// Per-pod snapshot.
    pub fn snapshot(&self) -> Vec<ProxyStatus> {
        self.lock()
            .iter()
            .map(|((namespace, pod), streams)| ProxyStatus {
                namespace: namespace.clone(),
                pod: pod.clone(),
                streams: streams.len(),
                version: streams.values().rev().flatten().next().cloned(),
            })
            .collect()
    }
}

/// Keeps a stream registered in [`Connections`] while alive.
pub struct ConnectionGuard {
    connections: Connections,
    key: PodKey,
    id: u64,
    metrics: Metrics,
}

impl ConnectionGuard {
    /// Record the version this stream was just sent.
    pub fn sent(&self, version: &str) {
        if let Some(streams) = self.connections.lock().get_mut(&self.key) {
            streams.insert(self.id, Some(version.to_string()));
        }
        self.metrics.versions_served.inc();
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let mut map = self.connections.lock();
        if let Some(streams) = map.get_mut(&self.key) {
            streams.remove(&self.id);
            if streams.is_empty() {
                map.remove(&self.key);
            }
        }
        self.metrics.connected.dec();
    }
}
