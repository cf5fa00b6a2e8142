//! `PolicyStore`: the one place the proxy keeps its active policy. Readers
//! on the hot path take an `Arc` snapshot without locking (arc-swap);
//! writers (the file watcher, the controller stream) `apply` whole updates,
//! which are validated and compiled first so a bad policy never replaces a
//! good one. Anything that wants to react to changes `subscribe`s.
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::sync::watch;

use faultline_policy::{CompiledPolicy, PeerIps, Policy, PolicyError, compile};

#[cfg(test)]
mod tests;

/// Where the active policy came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum PolicySource {
    /// Nothing applied yet (no faults).
    None,
    /// A policy file in standalone mode.
    File { path: PathBuf },
    /// The controller's policy stream.
    Controller { url: String },
    /// Set in code (tests, embedding).
    Static,
    /// `PUT /policy` on the standalone proxy's control API.
    Control,
}

/// One policy change, as delivered by a source.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyUpdate {
    pub version: String,
    pub source: PolicySource,
    /// `None` means no faults.
    pub policy: Option<Policy>,
    /// Pod IPs of the policy's selectors.
    pub peers: PeerIps,
}

/// The policy in force, as served on the admin `/policy` endpoint.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActivePolicy {
    pub version: String,
    pub source: PolicySource,
    pub applied_at: jiff::Timestamp,
    /// Whether the controller stream is connected right now.
    pub connected: bool,
    /// When the proxy stops applying this policy on its own (`until`, or
    /// `duration` after this version was first applied).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<jiff::Timestamp>,
    pub policy: Option<Policy>,
    pub peers: PeerIps,
    #[serde(skip)]
    pub compiled: Arc<CompiledPolicy>,
}

impl ActivePolicy {
    fn initial() -> Self {
        Self {
            version: String::new(),
            source: PolicySource::None,
            applied_at: jiff::Timestamp::now(),
            connected: false,
            expires_at: None,
            policy: None,
            peers: PeerIps::new(),
            compiled: Arc::new(CompiledPolicy::empty()),
        }
    }
}

/// ProxyState handle to the active policy; clones share the same state.
#[derive(Clone)]
pub struct PolicyStore {
    inner: Arc<Inner>,
}

struct Inner {
    current: ArcSwap<ActivePolicy>,
    /// Serializes writers (apply, set_connected): each reads the current
    /// value and builds the next one from it.
    writer: Mutex<()>,
    changes: watch::Sender<Arc<ActivePolicy>>,
    /// The controller reported that every app container has exited.
    app_finished: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for PolicyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let current = self.current();
        f.debug_struct("PolicyStore")
            .field("version", &current.version)
            .field("source", &current.source)
            .field("connected", &current.connected)
            .finish()
    }
}

impl Default for PolicyStore {
    fn default() -> Self {
        Self::new()
    }
}

impl PolicyStore {
    /// A store with no policy (no faults).
    pub fn new() -> Self {
        let initial = Arc::new(ActivePolicy::initial());
        let (changes, _) = watch::channel(Arc::clone(&initial));
        Self {
            inner: Arc::new(Inner {
                current: ArcSwap::new(initial),
                writer: Mutex::new(()),
                changes,
                app_finished: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// Validates, compiles and installs `update`. On error the previous
    /// policy stays in force.
    pub fn apply(&self, update: PolicyUpdate) -> Result<Arc<ActivePolicy>, PolicyError> {
        if let Some(policy) = &update.policy {
            faultline_policy::validate(policy)?;
        }
        let _writer = self.lock_writer();
        let previous = self.current();
        let mut compiled = match &update.policy {
            Some(policy) => compile(policy, &update.peers),
            None => CompiledPolicy::empty(),
        };
        let now = jiff::Timestamp::now();
        // The same version re-sent (a reconnect, new peer IPs) keeps the
        // `first: N` counts, so a reconnect does not grant N more faults,
        // and keeps its end, so it does not extend `duration`.
        let same = previous.version == update.version && previous.source == update.source;
        if same {
            compiled.adopt_counters(&previous.compiled);
        }
        let resent = same && previous.policy.is_some() && previous.policy == update.policy;
        let expires_at = match &update.policy {
            Some(_) if resent => previous.expires_at,
            Some(policy) => expiry(policy, now),
            None => None,
        };
        compiled.set_expires(if resent {
            previous.compiled.expires()
        } else {
            expires_at.and_then(|at| instant_at(at, now))
        });
        let active = Arc::new(ActivePolicy {
            version: update.version,
            source: update.source,
            applied_at: now,
            connected: previous.connected,
            expires_at,
            policy: update.policy,
            peers: update.peers,
            compiled: Arc::new(compiled),
        });
        self.publish(Arc::clone(&active));
        Ok(active)
    }

    /// The controller reports that the pod's app containers have all exited
    /// (`finish` on the stream): the proxy has nothing left to carry.
    pub fn mark_app_finished(&self) {
        self.inner
            .app_finished
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Whether [`mark_app_finished`](Self::mark_app_finished) was called.
    pub fn app_finished(&self) -> bool {
        self.inner
            .app_finished
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// The policy in force; cheap (no lock), call it per request.
    pub fn current(&self) -> Arc<ActivePolicy> {
        self.inner.current.load_full()
    }

    /// The compiled policy in force.
    pub fn compiled(&self) -> Arc<CompiledPolicy> {
        Arc::clone(&self.inner.current.load().compiled)
    }

    /// Runs `decide` on the compiled policy in force without taking a
    /// reference to it: arc-swap's guard only touches this thread's own
    /// slot, where cloning the `Arc` would bounce its counter between the
    /// workers on every request.
    pub fn with_compiled<R>(&self, decide: impl FnOnce(&CompiledPolicy) -> R) -> R {
        decide(&self.inner.current.load().compiled)
    }

    /// Records whether the controller stream is connected (shown on `/policy`).
    pub fn set_connected(&self, connected: bool) {
        let _writer = self.lock_writer();
        let previous = self.current();
        if previous.connected == connected {
            return;
        }
        let mut next = ActivePolicy::clone(&previous);
        next.connected = connected;
        self.publish(Arc::new(next));
    }

    pub fn connected(&self) -> bool {
        self.inner.current.load().connected
    }

    /// Notified on every `apply` and connection change.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ActivePolicy>> {
        self.inner.changes.subscribe()
    }

    fn lock_writer(&self) -> MutexGuard<'_, ()> {
        self.inner
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, active: Arc<ActivePolicy>) {
        self.inner.current.store(Arc::clone(&active));
        self.inner.changes.send_replace(active);
    }
}

/// When a policy applied at `now` ends, if it says.
fn expiry(policy: &Policy, now: jiff::Timestamp) -> Option<jiff::Timestamp> {
    policy.until().or_else(|| {
        let duration = jiff::SignedDuration::try_from(policy.duration()?).ok()?;
        now.checked_add(duration).ok()
    })
}

/// The monotonic instant of wall-clock `at` (now if `at` has passed);
/// None if it is too far away to represent.
fn instant_at(at: jiff::Timestamp, now: jiff::Timestamp) -> Option<Instant> {
    let remaining = Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO);
    Instant::now().checked_add(remaining)
}

/// A version for a policy document from a local source (`file`, `control`):
/// the same text always gets the same version, so putting it again keeps
/// its `first` counters and its end.
pub fn content_version(source: &str, text: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    format!("{source}-{:016x}", hasher.finish())
}
