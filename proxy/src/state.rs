//! [`ProxyState`]: what every connection of one proxy shares: the active
//! policy, metrics, upstream pools, worker threads, and the shutdown and
//! drain events.
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::events::ProxyEvents;
use crate::metrics::Metrics;
use crate::source::store::PolicyStore;
use crate::upstream::Upstream;
use crate::workers::Workers;

/// State shared by every connection of one proxy.
pub struct ProxyState {
    /// The active policy, asked per connection and per request.
    pub store: PolicyStore,
    pub metrics: Arc<Metrics>,
    /// One set of upstream pools per worker thread (see `workers`).
    pub upstreams: Vec<Upstream>,
    pub workers: Workers,
    /// Cancelled when the drain starts (on SIGTERM, after the app's wind-down
    /// in a pod): stop accepting, finish in-flight work.
    pub shutdown: CancellationToken,
    /// Cancelled when the drain period is over: cut everything.
    pub hard_stop: CancellationToken,
    /// Drain and stop, as each connection's own task sees them.
    pub events: ProxyEvents,
    /// Every connection task, so the drain can wait for them.
    pub tracker: TaskTracker,
    pub detect_timeout: Duration,
    pub max_connections: usize,
    pub active: AtomicUsize,
}

impl ProxyState {
    /// The upstream pools of the worker running a connection.
    pub fn upstream(&self, worker: usize) -> &Upstream {
        &self.upstreams[worker % self.upstreams.len()]
    }
}
