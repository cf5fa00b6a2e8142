//! The policy controller: turns `faultline.dev/faults` annotations into the
//! policies each injected pod's proxy runs, and streams them to the proxies.
//!
//! Layout (pure parts first):
//! - `objects`: object keys, annotation names, the facts resolution needs;
//! - `resolve`: which annotation governs a pod (pod, else nearest owner);
//! - `version`: stable policy version hashes;
//! - `expiry`: `duration` / `until` arithmetic and the seen-at record;
//! - `state`: the reconcile, full or incremental (validation, last-good,
//!   selector peers, what each pod was computed from), and the leader's
//!   writes as data;
//! - `lifecycle`: pods that missed injection, Job pods whose app finished;
//! - `lease`: the writer-role election; `writer`: patches and Events;
//! - `stores`: the reflector caches as the view `state` reads;
//! - `run`: reflectors and the reconcile loop around `state`;
//! - `hub`: per-pod watch channels between the loop and the streams;
//! - `auth` + `stream`: `GET /v1/policy/stream` (TokenReview, ndjson);
//! - `metrics`: connected proxies, pushes, expiries.
//!
//! Every replica watches, reconciles and serves streams; only the Lease
//! holder writes (seen-at, expiry removal, Events).

pub mod auth;
pub mod expiry;
pub mod hub;
pub mod lease;
pub mod lifecycle;
pub mod metrics;
pub mod objects;
pub mod resolve;
pub mod run;
pub mod state;
pub mod stores;
pub mod stream;
pub mod version;
pub mod writer;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use auth::{Authenticator, GuardedAuthenticator, Identity, ReviewLimits, TokenReviewer};
pub use hub::PolicyHub;
pub use lease::LeaseConfig;
pub use metrics::Metrics;
pub use stream::{StreamLimits, StreamServer};

/// Env var: this replica's name (the Downward API pod name); Lease identity
/// and Event reporting instance.
pub const ENV_POD_NAME: &str = faultline_policy::contract::env::POD_NAME;
/// Env var: this replica's namespace (the Downward API); the Lease lives there.
pub const ENV_POD_NAMESPACE: &str = faultline_policy::contract::env::POD_NAMESPACE;

/// Controller settings.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    pub lease: LeaseConfig,
    /// Interval between heartbeats on each stream.
    pub heartbeat: Duration,
    /// Bounds on the TokenReviews behind stream logins.
    pub token_reviews: ReviewLimits,
    /// Bounds on open streams.
    pub streams: StreamLimits,
}

impl ControllerConfig {
    /// Defaults, with the identity from `FAULTLINE_POD_NAME` (falling back to
    /// the hostname, then a random suffix so two replicas never share one).
    pub fn from_env<I, K, V>(vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: Into<String>,
    {
        let mut identity = None;
        let mut hostname = None;
        let mut namespace = None;
        for (k, v) in vars {
            match k.as_ref() {
                ENV_POD_NAME => identity = Some(v.into()),
                ENV_POD_NAMESPACE => namespace = Some(v.into()),
                "HOSTNAME" => hostname = Some(v.into()),
                _ => {}
            }
        }
        let namespace = namespace
            .filter(|s: &String| !s.is_empty())
            .unwrap_or_else(|| lease::LEASE_NAMESPACE.to_owned());
        let identity = identity
            .or(hostname)
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| format!("faultline-{:08x}", rand::random::<u32>()));
        Self {
            lease: LeaseConfig::new(identity).in_namespace(namespace),
            heartbeat: stream::HEARTBEAT,
            token_reviews: ReviewLimits::default(),
            streams: StreamLimits::default(),
        }
    }
}

/// A running controller's handles: the stream router to mount on the TLS
/// server and the background task.
pub struct Controller {
    client: kube::Client,
    config: ControllerConfig,
    hub: PolicyHub,
    server: StreamServer,
    shutdown: CancellationToken,
}

impl Controller {
    /// Build with the TokenReview authenticator.
    pub fn new(
        client: kube::Client,
        config: ControllerConfig,
        shutdown: CancellationToken,
    ) -> Self {
        let hub = PolicyHub::default();
        let auth: Arc<dyn Authenticator> = Arc::new(GuardedAuthenticator::new(
            Arc::new(TokenReviewer::new(client.clone())),
            config.token_reviews.clone(),
            hub.metrics.token_reviews.clone(),
        ));
        let mut server = StreamServer::new(hub.clone(), auth, shutdown.clone());
        server.heartbeat = config.heartbeat;
        server.limits = config.streams.clone();
        Self {
            client,
            config,
            hub,
            server,
            shutdown,
        }
    }

    /// `GET /v1/policy/stream`, to merge into the webhook's router.
    pub fn router(&self) -> Router {
        self.server.clone().router()
    }

    /// Metrics to register in the server's registry.
    pub fn metrics(&self) -> &Metrics {
        &self.hub.metrics
    }

    /// The hub (tests and the status endpoint read it).
    pub fn hub(&self) -> &PolicyHub {
        &self.hub
    }

    /// The stream server's connection table.
    pub fn connections(&self) -> &hub::Connections {
        &self.server.connections
    }

    /// Run the Lease election and the reconcile loop until shutdown.
    pub async fn run(self) {
        let (leader_tx, leader_rx) = watch::channel(false);
        let instance = Some(self.config.lease.identity.clone());
        let election = tokio::spawn(lease::run(
            self.client.clone(),
            self.config.lease.clone(),
            leader_tx,
            self.shutdown.clone(),
        ));
        let writer = writer::Writer::new(self.client.clone(), instance);
        run::reconcile_loop(
            self.client.clone(),
            self.hub.clone(),
            writer,
            leader_rx,
            self.shutdown.clone(),
        )
        .await;
        // The election releases the Lease on shutdown; wait so that happens.
        if let Err(error) = election.await {
            tracing::warn!(%error, "controller Lease task failed");
        }
    }
}
