//! [`ConnCtx`]: what every part of one connection's handling needs to
//! know about it (addresses, protocol, worker, its events), set up by
//! `traffic::accept` once the protocol is known.
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

use crate::events::{ConnEvents, KILL, STOP};
use crate::metrics::{Direction, Protocol};
use crate::state::ProxyState;
use crate::throttle::Throttle;

/// What every part of a connection's handling needs to know about it.
pub struct ConnCtx {
    /// The proxy's shared state, for code that only holds the connection.
    pub shared: Arc<ProxyState>,
    pub direction: Direction,
    pub client: SocketAddr,
    /// The destination the client meant (its port is what rules match).
    pub original_dst: SocketAddr,
    /// Where the proxy connects to.
    pub forward_to: SocketAddr,
    /// `forward_to` as a URI authority (the HTTP/1.1 pool key).
    pub forward_authority: http::uri::Authority,
    pub protocol: Protocol,
    /// The worker thread running this connection (its upstream pools).
    pub worker: usize,
    /// This connection's series of the per-request metrics (labels fixed by
    /// `direction` and `protocol`), looked up once instead of per request;
    /// each is created on first use, as a per-request lookup would.
    pub requests: OnceLock<Counter>,
    pub upstream_latency: OnceLock<Histogram>,
    pub(crate) reset: ResetFlag,
    pub events: Arc<ConnEvents>,
    pub(crate) throttle: Mutex<Option<Throttle>>,
}

impl ConnCtx {
    /// Closes the client connection with a RST (the reset fault).
    pub fn kill(&self) {
        self.reset.set();
        self.events.raise(KILL);
    }

    /// Killed by a reset fault, or the drain period is over. Only the
    /// connection's own task may wait for this (see `events`).
    pub async fn killed(&self) {
        self.events.raised(KILL | STOP).await;
    }

    /// The connection's bandwidth bucket: requests on one connection share
    /// it, so a bandwidth fault limits the connection, not each request.
    pub fn throttle(&self, rate: u64) -> Throttle {
        let Ok(mut slot) = self.throttle.lock() else {
            return Throttle::new(rate);
        };
        match slot.as_ref() {
            Some(throttle) if throttle.rate() == rate => throttle.clone(),
            _ => {
                let throttle = Throttle::new(rate);
                *slot = Some(throttle.clone());
                throttle
            }
        }
    }
}

/// ProxyState flag: when set, the connection is closed with RST when dropped.
#[derive(Debug, Clone, Default)]
pub struct ResetFlag(Arc<AtomicBool>);

impl ResetFlag {
    pub fn set(&self) {
        self.0.store(true, Ordering::Release);
    }
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}
