//! The hand-off between the reconciler and the streams: one `watch` channel
//! per pod holding the pod's current [`PodPolicy`]. Publishing an unchanged
//! version wakes nobody; a stream for a pod the reconciler has not resolved
//! yet waits on an empty channel until it has.
//!
//! The line a policy travels as is serialised once per publish for every
//! distinct version and peers, and shared by every stream that sends it:
//! ten thousand pods of one Deployment cost one serialisation, not ten
//! thousand.
//!
//! Also tracks, per pod, how many streams are open and which version each was
//! last sent, for metrics and the status endpoint.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use faultline_policy::wire::StreamMessage;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

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

/// A published policy and its wire line, shared by every stream of the pod
/// (and the line by every pod with the same version and peers).
#[derive(Debug)]
pub struct Served {
    pub policy: PodPolicy,
    /// The `policy` line, newline included.
    pub line: Bytes,
}

impl PodPolicy {
    /// Whether a proxy that was sent `other` would be sent this again: the
    /// line depends on the version and the peers only.
    pub fn same_line(&self, other: &PodPolicy) -> bool {
        self.version == other.version && self.peers == other.peers
    }

    fn line(&self) -> Bytes {
        let message = StreamMessage::Policy {
            version: self.version.clone(),
            policy: self.policy.as_deref().cloned(),
            peers: self.peers.clone(),
        };
        Bytes::from(message.to_line())
    }
}

type Slot = watch::Sender<Option<Arc<Served>>>;

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
    /// Incremental publishes since empty slots were last dropped.
    since_sweep: usize,
}

/// How often an incremental publish drops the empty slots nobody listens to.
const SWEEP_EVERY: usize = 64;

/// Put `policy` in a pod's slot unless the slot already holds the same line
/// for the same pod; waking its streams only then. `lines` shares one
/// serialisation among the pods with the same version and peers.
fn offer<'a>(slot: &Slot, policy: &'a PodPolicy, lines: &mut HashMap<(&'a str, &'a Peers), Bytes>) {
    slot.send_if_modified(|current| {
        // Peers change without a new version (a selector's pods moved).
        if current.as_ref().is_some_and(|c| {
            c.policy.same_line(policy)
                && c.policy.uid == policy.uid
                && c.policy.finish == policy.finish
        }) {
            return false;
        }
        let line = lines
            .entry((policy.version.as_str(), &policy.peers))
            .or_insert_with(|| policy.line())
            .clone();
        *current = Some(Arc::new(Served {
            policy: policy.clone(),
            line,
        }));
        true
    });
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
        let mut lines = HashMap::new();
        let mut inner = self.lock();
        inner.resolved = true;
        inner.since_sweep = 0;
        for (key, policy) in pods {
            let slot = inner
                .slots
                .entry(key.clone())
                .or_insert_with(|| watch::channel(None).0);
            offer(slot, policy, &mut lines);
        }
        inner.slots.retain(|key, slot| {
            if pods.contains_key(key) {
                return true;
            }
            slot.send_if_modified(|current| current.take().is_some());
            slot.receiver_count() > 0
        });
    }

    /// Publish what changed: a new policy, or `None` for a pod no longer
    /// served (its streams wait; its slot goes once nobody listens).
    pub fn publish(&self, delta: &BTreeMap<PodKey, Option<PodPolicy>>) {
        let mut lines = HashMap::new();
        let mut inner = self.lock();
        inner.resolved = true;
        for (key, policy) in delta {
            match policy {
                Some(policy) => {
                    let slot = inner
                        .slots
                        .entry(key.clone())
                        .or_insert_with(|| watch::channel(None).0);
                    offer(slot, policy, &mut lines);
                }
                None => {
                    let Some(slot) = inner.slots.get(key) else {
                        continue;
                    };
                    slot.send_if_modified(|current| current.take().is_some());
                    if slot.receiver_count() == 0 {
                        inner.slots.remove(key);
                    }
                }
            }
        }
        // A stream for a pod that is never resolved leaves an empty slot
        // behind; a full publish drops those, and so does every
        // `SWEEP_EVERY`th incremental one, so they cannot pile up.
        inner.since_sweep += 1;
        if inner.since_sweep >= SWEEP_EVERY {
            inner.since_sweep = 0;
            inner
                .slots
                .retain(|_, slot| slot.borrow().is_some() || slot.receiver_count() > 0);
        }
    }

    /// Subscribe to a pod's policy (creating an empty slot if needed).
    pub fn subscribe(&self, key: &PodKey) -> watch::Receiver<Option<Arc<Served>>> {
        let mut inner = self.lock();
        inner
            .slots
            .entry(key.clone())
            .or_insert_with(|| watch::channel(None).0)
            .subscribe()
    }

    /// The policy currently published for a pod.
    pub fn current(&self, key: &PodKey) -> Option<PodPolicy> {
        self.lock()
            .slots
            .get(key)
            .and_then(|s| s.borrow().as_ref().map(|s| s.policy.clone()))
    }

    /// Whether the reconciler has run at least once.
    pub fn is_resolved(&self) -> bool {
        self.lock().resolved
    }
}

/// The version a stream was last sent. Each stream writes its own, so a
/// change fanned out to ten thousand streams takes no lock they share.
type SentVersion = Arc<Mutex<Option<String>>>;

/// One open stream: the version it was last sent, and how to end it.
struct StreamEntry {
    version: SentVersion,
    evict: CancellationToken,
}

/// Open streams by pod (stream ids grow, so the first is the oldest).
#[derive(Default)]
struct StreamTable {
    pods: BTreeMap<PodKey, BTreeMap<u64, StreamEntry>>,
    total: usize,
}

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

    /// Register a stream; it is unregistered when the guard drops. A pod
    /// already holding `max_per_pod` streams loses its oldest: a proxy has one
    /// stream, and the newest is the one a reconnecting proxy is reading
    /// (the old one may linger half-open until TCP gives up on it).
    pub fn open(&self, key: PodKey, metrics: Metrics, max_per_pod: usize) -> ConnectionGuard {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let evict = CancellationToken::new();
        let version = SentVersion::default();
        let mut table = self.lock();
        let streams = table.pods.entry(key.clone()).or_default();
        let evicted = evict_oldest(streams, max_per_pod.max(1) - 1);
        streams.insert(
            id,
            StreamEntry {
                version: version.clone(),
                evict: evict.clone(),
            },
        );
        table.total = table.total + 1 - evicted;
        drop(table);
        if evicted > 0 {
            metrics.streams_evicted.inc_by(evicted as u64);
            tracing::info!(namespace = %key.0, pod = %key.1, evicted, max_per_pod, "a pod opened more policy streams than allowed: ended its oldest");
        }
        metrics.connected.inc();
        ConnectionGuard {
            connections: self.clone(),
            key,
            id,
            version,
            metrics,
            evict,
        }
    }

    /// Streams open now.
    pub fn total(&self) -> usize {
        self.lock().total
    }

    /// Per-pod snapshot.
    pub fn snapshot(&self) -> Vec<ProxyStatus> {
        self.lock()
            .pods
            .iter()
            .map(|((namespace, pod), streams)| ProxyStatus {
                namespace: namespace.clone(),
                pod: pod.clone(),
                streams: streams.len(),
                version: streams.values().rev().find_map(|s| {
                    s.version
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .clone()
                }),
            })
            .collect()
    }
}

/// Pure: end the oldest streams until at most `keep` remain; returns how many.
fn evict_oldest(streams: &mut BTreeMap<u64, StreamEntry>, keep: usize) -> usize {
    let mut evicted = 0;
    while streams.len() > keep {
        let Some((_, oldest)) = streams.pop_first() else {
            break;
        };
        oldest.evict.cancel();
        evicted += 1;
    }
    evicted
}

/// Keeps a stream registered in [`Connections`] while alive.
pub struct ConnectionGuard {
    connections: Connections,
    key: PodKey,
    id: u64,
    version: SentVersion,
    metrics: Metrics,
    evict: CancellationToken,
}

impl ConnectionGuard {
    /// Record the version this stream was just sent.
    pub fn sent(&self, version: &str) {
        *self.version.lock().unwrap_or_else(PoisonError::into_inner) = Some(version.to_owned());
        self.metrics.versions_served.inc();
    }

    /// Cancelled when a newer stream of the same pod pushed this one out.
    pub fn evicted(&self) -> CancellationToken {
        self.evict.clone()
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let mut table = self.connections.lock();
        let table = &mut *table;
        if let Some(streams) = table.pods.get_mut(&self.key) {
            // An evicted stream was already taken out of the count.
            if streams.remove(&self.id).is_some() {
                table.total = table.total.saturating_sub(1);
            }
            if streams.is_empty() {
                table.pods.remove(&self.key);
            }
        }
        self.metrics.connected.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(pod: &str) -> PodKey {
        ("shop".into(), pod.into())
    }

    fn policy(uid: &str, version: &str) -> PodPolicy {
        PodPolicy {
            uid: uid.into(),
            version: version.into(),
            policy: None,
            peers: Peers::new(),
            source: None,
            finish: false,
        }
    }

    #[test]
    fn an_incremental_publish_wakes_only_the_pods_that_changed_and_clears_the_gone() {
        let hub = PolicyHub::default();
        hub.publish_all(&BTreeMap::from([
            (key("a"), policy("ua", "v1")),
            (key("b"), policy("ub", "v1")),
        ]));
        let mut a = hub.subscribe(&key("a"));
        let mut b = hub.subscribe(&key("b"));
        a.mark_unchanged();
        b.mark_unchanged();
        hub.publish(&BTreeMap::from([
            (key("a"), Some(policy("ua", "v2"))),
            (key("b"), Some(policy("ub", "v1"))),
        ]));
        assert!(a.has_changed().unwrap());
        assert!(!b.has_changed().unwrap(), "same line: nobody woken");
        let line = a.borrow_and_update().as_ref().unwrap().line.clone();
        assert!(
            std::str::from_utf8(&line)
                .unwrap()
                .contains("\"version\":\"v2\"")
        );

        hub.publish(&BTreeMap::from([(key("b"), None)]));
        assert!(b.has_changed().unwrap());
        assert!(
            b.borrow_and_update().is_none(),
            "a pod no longer served waits"
        );
        assert!(hub.current(&key("b")).is_none());
        drop(b);
        hub.publish(&BTreeMap::from([(key("b"), None)]));
        assert!(
            !hub.lock().slots.contains_key(&key("b")),
            "an empty slot nobody listens to is dropped"
        );
        // A stream for a pod that is never resolved leaves an empty slot:
        // swept within `SWEEP_EVERY` publishes.
        drop(hub.subscribe(&key("never")));
        for _ in 0..SWEEP_EVERY {
            hub.publish(&BTreeMap::new());
        }
        assert!(!hub.lock().slots.contains_key(&key("never")));
        assert!(hub.lock().slots.contains_key(&key("a")));
    }

    #[test]
    fn a_pod_over_its_stream_limit_loses_its_oldest_and_the_total_stays_right() {
        let c = Connections::default();
        let m = Metrics::default();
        let first = c.open(key("a"), m.clone(), 2);
        let second = c.open(key("a"), m.clone(), 2);
        let other = c.open(key("b"), m.clone(), 2);
        assert_eq!(c.total(), 3);
        let third = c.open(key("a"), m.clone(), 2);
        assert!(first.evicted().is_cancelled());
        assert!(!second.evicted().is_cancelled() && !third.evicted().is_cancelled());
        assert_eq!(c.total(), 3);
        assert_eq!(m.streams_evicted.get(), 1);
        drop(first);
        assert_eq!(c.total(), 3, "the evicted stream was already uncounted");
        drop((second, third, other));
        assert_eq!(c.total(), 0);
        assert!(c.snapshot().is_empty());
        assert_eq!(m.connected.get(), 0);
    }
}
