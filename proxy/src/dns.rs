//! The DNS listener: where a pod that opted into DNS capture has its
//! queries (UDP and TCP port 53) redirected. Each query is asked about
//! with [`CompiledPolicy::decide_dns`](faultline_policy::CompiledPolicy::decide_dns);
//! a faulted one is answered with an error code, dropped or delayed, and
//! every other one goes to the pod's resolver byte for byte, its answer
//! back the same way.
//!
//! Clean queries go to the first nameserver of the pod's
//! `/etc/resolv.conf` (or `--dns-upstream`): the original destination of a
//! redirected UDP datagram cannot be recovered (`SO_ORIGINAL_DST` is for
//! TCP), and sending both transports to the same resolver keeps their
//! answers alike.
//!
//! Bounds (each with a metric): queries in flight, the resolver's time to
//! answer, message sizes, DNS-over-TCP connections and their idle time.
//! Files: `wire` (the message format), `resolv` (resolv.conf), `udp` and
//! `tcp` (the two transports).
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use faultline_policy::{Action, DelaySide, DnsQuery};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::DnsConfig;
use crate::metrics::Metrics;
use crate::source::store::PolicyStore;

pub mod resolv;
mod tcp;
mod udp;
pub mod wire;

/// The largest DNS message carried over UDP, either way. EDNS clients
/// advertise at most this much (1232 is the common choice); a larger
/// answer from the resolver reaches the client as a truncated answer, and
/// the client asks again over TCP.
pub const MAX_UDP_MESSAGE: usize = 4096;
/// The largest query accepted over TCP: queries are a name and a few
/// options, far below this.
pub const MAX_TCP_QUERY: usize = 4096;
/// Answers over TCP may be as large as the protocol allows.
pub const MAX_TCP_ANSWER: usize = 65_535;

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("failed to bind the DNS listener on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to find the pod's resolver")]
    Resolver(#[from] resolv::ResolvError),
}

/// The bound DNS sockets: UDP and TCP on one port, plus an IPv6 loopback
/// twin when the address is IPv4 loopback (ip6tables redirects to `::1`).
pub struct DnsListeners {
    udp: Vec<UdpSocket>,
    tcp: Vec<TcpListener>,
    upstream: SocketAddr,
    config: DnsConfig,
}

impl DnsListeners {
    pub async fn bind(config: &DnsConfig) -> Result<Self, DnsError> {
        let upstream = match config.upstream {
            Some(addr) => addr,
            None => resolv::first_nameserver(std::path::Path::new(resolv::RESOLV_CONF))?,
        };
        let (udp, tcp) = bind_pair(config.addr)
            .await
            .map_err(|source| DnsError::Bind {
                addr: config.addr,
                source,
            })?;
        let mut listeners = Self {
            udp: vec![udp],
            tcp: vec![tcp],
            upstream,
            config: config.clone(),
        };
        if config.addr.ip() == IpAddr::from([127, 0, 0, 1]) {
            let port = listeners.local_addr().map_or(0, |a| a.port());
            match bind_pair(SocketAddr::new(Ipv6Addr::LOCALHOST.into(), port)).await {
                Ok((udp, tcp)) => {
                    listeners.udp.push(udp);
                    listeners.tcp.push(tcp);
                }
                Err(error) => tracing::debug!(%error, "no IPv6 DNS listener"),
            }
        }
        Ok(listeners)
    }

    /// The address both transports listen on.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.udp.first().and_then(|s| s.local_addr().ok())
    }

    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Serves until `shutdown`; per-query and per-connection tasks go on
    /// `tracker` (the drain waits for them) and end at `hard_stop`.
    pub fn spawn(
        self,
        store: PolicyStore,
        metrics: Arc<Metrics>,
        tracker: TaskTracker,
        shutdown: CancellationToken,
        hard_stop: CancellationToken,
    ) -> tokio::task::JoinSet<()> {
        let state = Arc::new(DnsState {
            store,
            metrics,
            upstream: self.upstream,
            in_flight: Arc::new(Semaphore::new(self.config.max_in_flight)),
            tcp_slots: Arc::new(Semaphore::new(self.config.max_tcp_connections)),
            config: self.config,
            tracker,
            shutdown,
            hard_stop,
        });
        let mut loops = tokio::task::JoinSet::new();
        for socket in self.udp {
            loops.spawn(udp::serve(state.clone(), Arc::new(socket)));
        }
        for listener in self.tcp {
            loops.spawn(tcp::serve(state.clone(), listener));
        }
        loops
    }
}

/// UDP and TCP on the same port; with port 0, a port free for both.
async fn bind_pair(addr: SocketAddr) -> std::io::Result<(UdpSocket, TcpListener)> {
    let mut last = None;
    for _ in 0..16 {
        let udp = UdpSocket::bind(addr).await?;
        let port = udp.local_addr()?.port();
        match TcpListener::bind(SocketAddr::new(addr.ip(), port)).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(error) if addr.port() == 0 => last = Some(error),
            Err(error) => return Err(error),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no port free for both UDP and TCP")))
}

/// What both transports share.
struct DnsState {
    store: PolicyStore,
    metrics: Arc<Metrics>,
    upstream: SocketAddr,
    config: DnsConfig,
    in_flight: Arc<Semaphore>,
    tcp_slots: Arc<Semaphore>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    hard_stop: CancellationToken,
}

/// What to do with one query.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Plan {
    Forward,
    /// Answer with this message instead of forwarding.
    Answer(Vec<u8>),
    /// Neither forward nor answer.
    Drop,
    /// Forward after waiting (`Request`), or hold the answer (`Response`).
    Delay(Duration, DelaySide),
}

impl DnsState {
    /// The policy's verdict on `msg` from `source`. A message that is not a
    /// query this proxy can read is forwarded untouched: the resolver, not
    /// the proxy, tells the client what is wrong with it.
    fn plan(&self, msg: &[u8], source: IpAddr) -> Plan {
        let Ok(query) = wire::parse_query(msg) else {
            return Plan::Forward;
        };
        self.store.with_compiled(|compiled| {
            let info = DnsQuery {
                name: query.name(),
                qtype: query.qtype,
                source_ip: source,
            };
            let Some(decision) = compiled.decide_dns(&info, &mut rand::rng()) else {
                return Plan::Forward;
            };
            if decision.action.is_noop() {
                return Plan::Forward;
            }
            let plan = match decision.action {
                Action::Dns { rcode } => {
                    Plan::Answer(wire::error_answer(msg, &query, rcode.code()))
                }
                Action::Hang => Plan::Drop,
                Action::Delay { duration, side } => Plan::Delay(duration, side),
                // Validation allows no other fault on a DNS rule.
                _ => return Plan::Forward,
            };
            self.metrics
                .fault(decision.rule_name, decision.kind.as_str());
            tracing::debug!(
                rule = %decision.rule_name,
                name = %query.name_lossy(),
                qtype = query.qtype,
                "DNS fault"
            );
            plan
        })
    }

    /// Carries out `plan` for `msg`; `forward` asks the resolver. Returns
    /// the answer for the client, if it gets one.
    async fn run<F, Fut>(&self, plan: Plan, forward: F) -> Option<Vec<u8>>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Option<Vec<u8>>>,
    {
        let work = async {
            match plan {
                Plan::Answer(answer) => Some(answer),
                Plan::Drop => None,
                Plan::Forward => forward().await,
                Plan::Delay(delay, DelaySide::Request) => {
                    tokio::time::sleep(delay).await;
                    forward().await
                }
                Plan::Delay(delay, DelaySide::Response) => {
                    let answer = forward().await;
                    tokio::time::sleep(delay).await;
                    answer
                }
            }
        };
        tokio::select! {
            answer = work => answer,
            () = self.hard_stop.cancelled() => None,
        }
    }
}

/// Counts a query in flight for as long as it lives.
struct InFlight<'a>(&'a Metrics);

impl<'a> InFlight<'a> {
    fn new(metrics: &'a Metrics) -> Self {
        metrics.dns.in_flight.inc();
        Self(metrics)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dns.in_flight.dec();
    }
}
