//! Putting the proxy together: bind every socket ([`Proxy::bind`]), run
//! until shutdown, then drain ([`Proxy::run`]). [`run`] does both, for
//! callers that do not need the bound addresses.
//!
//! Drain: on shutdown `/readyz` turns 503; in a pod the proxy first keeps
//! carrying the app's traffic while the app winds down (see
//! [`wind_down`]); then the listeners close (new connections are refused),
//! HTTP connections finish their in-flight requests and close, and after
//! `drain` every remaining connection is cut.
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::{AdminState, Readiness};
use crate::config::{Config, Mode};
use crate::dns::DnsListeners;
use crate::events::{DRAIN, ProxyEvents, STOP};
use crate::metrics::Metrics;
use crate::source::file::FaultsFileError;
use crate::source::store::{PolicyStore, PolicyUpdate};
use crate::state::ProxyState;
use crate::traffic::accept::ListenerKind;
use crate::upstream::Upstream;
use crate::workers::{WorkerError, Workers};

const LISTEN_BACKLOG: u32 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("failed to bind the {what} listener on {addr}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    FaultsFile(#[from] FaultsFileError),
    #[error(transparent)]
    Workers(WorkerError),
    #[error(transparent)]
    Dns(#[from] crate::dns::DnsError),
}

/// A proxy whose sockets are bound, ready to [`run`](Proxy::run).
pub struct Proxy {
    config: Config,
    admin: TcpListener,
    listeners: Vec<(TcpListener, ListenerKind)>,
    dns: Option<DnsListeners>,
    initial: Option<PolicyUpdate>,
}

impl Proxy {
    /// Loads the faults file (if any) and binds every listener: all the
    /// ways startup can fail happen here, before anything is served.
    pub async fn bind(config: Config) -> Result<Self, RunError> {
        let initial = config
            .faults_file
            .as_deref()
            .map(crate::source::file::load)
            .transpose()?;
        let admin = bind_one("admin", config.admin_addr)?;
        let mut listeners = Vec::new();
        match config.mode {
            Mode::Sidecar { inbound, outbound } => {
                for (what, addr, kind) in [
                    ("inbound capture", inbound, ListenerKind::InboundCapture),
                    ("outbound capture", outbound, ListenerKind::OutboundCapture),
                ] {
                    listeners.push((bind_one(what, addr)?, kind));
                    // ip6tables redirects IPv6 to the same port: listen on
                    // [::] too when the address is the IPv4 wildcard.
                    if addr.ip().is_unspecified() && addr.is_ipv4() {
                        let v6 =
                            SocketAddr::new(std::net::Ipv6Addr::UNSPECIFIED.into(), addr.port());
                        match bind_one(what, v6) {
                            Ok(listener) => listeners.push((listener, kind)),
                            Err(error) => {
                                tracing::debug!(error = %crate::error_chain(&error), "no IPv6 capture listener")
                            }
                        }
                    }
                }
            }
            Mode::Standalone { listen, upstream } => {
                listeners.push((
                    bind_one("standalone", listen)?,
                    ListenerKind::Standalone { upstream },
                ));
            }
        }
        let dns = match &config.dns {
            Some(dns) => Some(DnsListeners::bind(dns).await?),
            None => None,
        };
        Ok(Proxy {
            config,
            admin,
            listeners,
            dns,
            initial,
        })
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.local_addr().ok()
    }

    /// The proxy listeners' addresses, in order: standalone; or inbound,
    /// outbound (each possibly followed by its IPv6 twin).
    pub fn listen_addrs(&self) -> Vec<(ListenerKind, SocketAddr)> {
        self.listeners
            .iter()
            .filter_map(|(l, kind)| l.local_addr().ok().map(|a| (*kind, a)))
            .collect()
    }

    /// The DNS listener's address (UDP and TCP), if it has one.
    pub fn dns_addr(&self) -> Option<SocketAddr> {
        self.dns.as_ref().and_then(DnsListeners::local_addr)
    }

    /// Serves until `shutdown` is cancelled, then drains.
    pub async fn run(
        self,
        store: PolicyStore,
        shutdown: CancellationToken,
    ) -> Result<(), RunError> {
        let metrics = Arc::new(Metrics::new());
        if let Some(update) = self.initial {
            crate::source::file::apply(&store, update, &metrics);
        }
        let workers = Workers::start(self.config.workers).map_err(RunError::Workers)?;
        let shared = Arc::new(ProxyState {
            store: store.clone(),
            metrics: metrics.clone(),
            upstreams: (0..workers.count()).map(|_| Upstream::new()).collect(),
            workers,
            shutdown: CancellationToken::new(),
            hard_stop: CancellationToken::new(),
            events: ProxyEvents::default(),
            tracker: TaskTracker::new(),
            detect_timeout: self.config.detect_timeout,
            max_connections: self.config.max_connections,
            active: AtomicUsize::new(0),
        });
        let readiness = Arc::new(Readiness::new(
            self.config
                .controller
                .as_ref()
                .map(|_| self.config.ready_grace),
        ));
        if let Ok(addr) = self.admin.local_addr() {
            tracing::info!(%addr, "admin server listening");
        }
        let admin_stop = CancellationToken::new();
        let admin = tokio::spawn(crate::admin::serve(
            self.admin,
            Arc::new(AdminState {
                store: store.clone(),
                metrics: metrics.clone(),
                readiness: readiness.clone(),
                probe_ports: self.config.probe_ports.clone(),
                control: self.config.control.clone(),
                dns_captured: self.dns.is_some(),
            }),
            admin_stop.clone(),
        ));
        if let Some(path) = self.config.faults_file.clone() {
            tokio::spawn(crate::source::file::watch(
                path,
                store.clone(),
                metrics.clone(),
                shutdown.clone(),
            ));
        }
        if let Some(controller) = &self.config.controller {
            crate::source::stream::spawn(controller, &store, &shutdown);
        }
        let mut accept_loops = tokio::task::JoinSet::new();
        for (listener, kind) in self.listeners {
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(%addr, ?kind, "listening");
            }
            accept_loops.spawn(crate::traffic::accept::accept_loop(
                shared.clone(),
                listener,
                kind,
            ));
        }
        let mut dns_loops = match self.dns {
            Some(dns) => {
                if let Some(addr) = dns.local_addr() {
                    tracing::info!(%addr, upstream = %dns.upstream(), "DNS listener");
                }
                dns.spawn(
                    store.clone(),
                    metrics.clone(),
                    shared.tracker.clone(),
                    shared.shutdown.clone(),
                    shared.hard_stop.clone(),
                )
            }
            None => {
                tokio::spawn(warn_uncaptured_dns(store.subscribe(), shutdown.clone()));
                tokio::task::JoinSet::new()
            }
        };
        readiness.set_bound();

        shutdown.cancelled().await;
        readiness.set_draining();
        // Connections are told to drain only after the wind-down: until the
        // app is done, the proxy serves as if nothing happened.
        if matches!(self.config.mode, Mode::Sidecar { .. }) {
            wind_down(&shared, &store, &self.config).await;
        }
        shared.shutdown.cancel();
        shared.events.raise(DRAIN);
        // The accept loops return on shutdown and drop their listeners.
        while accept_loops.join_next().await.is_some() {}
        while dns_loops.join_next().await.is_some() {}
        shared.tracker.close();
        tracing::info!(
            connections = shared.active.load(std::sync::atomic::Ordering::Acquire),
            drain = ?self.config.drain,
            "draining"
        );
        if tokio::time::timeout(self.config.drain, shared.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                connections = shared.active.load(std::sync::atomic::Ordering::Acquire),
                "drain period over; closing the remaining connections"
            );
            shared.hard_stop.cancel();
            shared.events.raise(STOP);
            shared.tracker.wait().await;
        }
        shared.workers.close();
        admin_stop.cancel();
        let _ = admin.await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// In a pod, SIGTERM reaches the proxy and the app at once, and the app may
/// still serve (a preStop hook, its own graceful shutdown) and call out for
/// a while: the proxy keeps carrying its traffic, listeners open, until the
/// app is done: the controller reports every app container has exited, or
/// the app's ports all refuse connections and no connection is left, or
/// `wind_down` (the pod's grace period less the drain) has passed.
async fn wind_down(shared: &ProxyState, store: &PolicyStore, config: &Config) {
    const POLL: Duration = Duration::from_millis(100);
    let started = std::time::Instant::now();
    let reason = loop {
        if store.app_finished() {
            break "the app's containers have exited";
        }
        let idle = shared.active.load(std::sync::atomic::Ordering::Acquire) == 0;
        if !config.app_ports.is_empty() && idle && !any_accepting(&config.app_ports).await {
            break "the app no longer accepts connections";
        }
        if started.elapsed() >= config.wind_down {
            break "the wind-down period is over";
        }
        tokio::time::sleep(POLL).await;
    };
    tracing::info!(reason, waited = ?started.elapsed(), "the app is done; draining");
}

/// Whether the app accepts a connection on any of `ports` on loopback.
async fn any_accepting(ports: &[u16]) -> bool {
    for port in ports {
        let connect = tokio::net::TcpStream::connect(("127.0.0.1", *port));
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(200), connect).await {
            return true;
        }
    }
    false
}

/// Without a DNS listener the pod's DNS is not captured: a policy with DNS
/// rules does nothing here, and the log says so each time one arrives.
async fn warn_uncaptured_dns(
    mut policies: tokio::sync::watch::Receiver<Arc<crate::source::store::ActivePolicy>>,
    shutdown: CancellationToken,
) {
    loop {
        {
            let active = policies.borrow_and_update();
            if active.compiled.has_dns_rules() {
                tracing::warn!(version = %active.version, "{}", crate::admin::DNS_NOT_CAPTURED);
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = policies.changed() => if changed.is_err() { return },
        }
    }
}

/// Binds and runs until `shutdown`, then drains.
pub async fn run(
    config: Config,
    store: PolicyStore,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    Proxy::bind(config).await?.run(store, shutdown).await
}

fn bind_one(what: &'static str, addr: SocketAddr) -> Result<TcpListener, RunError> {
    let err = |source| RunError::Bind { what, addr, source };
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(err)?;
    socket.set_reuseaddr(true).map_err(err)?;
    if addr.is_ipv6() {
        // Keep the IPv6 wildcard from also claiming the IPv4 port.
        socket2::SockRef::from(&socket)
            .set_only_v6(true)
            .map_err(err)?;
    }
    socket.bind(addr).map_err(err)?;
    socket.listen(LISTEN_BACKLOG).map_err(err)
}
