//! [`ConnCtx`]: what every part of one connection's handling needs to
//! know about it (addresses, protocol, worker, its events), set up by
//! `traffic::accept` once the protocol is known.
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

use faultline_policy::BandwidthLimit;

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
    /// This connection's series of `requests_relayed`.
    pub relayed: OnceLock<Counter>,
    pub(crate) reset: ResetFlag,
    pub events: Arc<ConnEvents>,
    pub(crate) throttle: Mutex<Option<Throttles>>,
}

/// A connection's bandwidth buckets, for the limit they were made for.
#[derive(Debug, Clone)]
pub struct Throttles {
    limit: BandwidthLimit,
    /// For request bodies.
    pub request: Option<Throttle>,
    /// For response bodies.
    pub response: Option<Throttle>,
}

impl Throttles {
    fn new(limit: BandwidthLimit) -> Self {
        let (request, response) = match limit {
            // One bucket for both sides, as `bandwidth: {rate}` always was.
            BandwidthLimit::Connection(rate) => {
                let shared = Throttle::new(rate);
                (Some(shared.clone()), Some(shared))
            }
            BandwidthLimit::Sides { request, response } => {
                (request.map(Throttle::new), response.map(Throttle::new))
            }
        };
        Throttles {
            limit,
            request,
            response,
        }
    }
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

    /// Ends the connection with an orderly close once what was written to
    /// the client is flushed (`limitData` on an HTTP response).
    pub fn close_after_flush(&self) {
        self.reset.close_after_flush();
    }

    /// The connection's bandwidth buckets: requests on one connection share
    /// them, so a bandwidth fault limits the connection, not each request.
    pub fn throttles(&self, limit: BandwidthLimit) -> Throttles {
        let Ok(mut slot) = self.throttle.lock() else {
            return Throttles::new(limit);
        };
        match slot.as_ref() {
            Some(throttles) if throttles.limit == limit => throttles.clone(),
            _ => {
                let throttles = Throttles::new(limit);
                *slot = Some(throttles.clone());
                throttles
            }
        }
    }
}

/// How the client socket must close, shared by the connection's handling
/// and its [`crate::traffic::client_io::ClientIo`]: with a RST when dropped
/// (a reset fault), or as soon as what was written is flushed (limitData).
#[derive(Debug, Clone, Default)]
pub struct ResetFlag(Arc<AtomicU8>);

const RESET: u8 = 1;
const CLOSE_AFTER_FLUSH: u8 = 2;

impl ResetFlag {
    pub fn set(&self) {
        self.0.fetch_or(RESET, Ordering::AcqRel);
    }
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire) & RESET != 0
    }
    pub fn close_after_flush(&self) {
        self.0.fetch_or(CLOSE_AFTER_FLUSH, Ordering::AcqRel);
    }
    pub fn closing_after_flush(&self) -> bool {
        self.0.load(Ordering::Acquire) & CLOSE_AFTER_FLUSH != 0
    }
}
