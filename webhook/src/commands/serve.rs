//! `faultline-webhook serve` (the default command): admission, the policy
//! controller's stream and the operations endpoints on one TLS listener.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use clap::{Args, ValueEnum};
use faultline_policy::contract::env;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use super::error::CommandError;
use super::injection::InjectionArgs;
use super::limits::LimitArgs;
use crate::admission::{self, AdmissionState, DEFAULT_MAX_BODY_BYTES, ReviewGate};
use crate::certs::CertManager;
use crate::config::SYSTEM_NAMESPACE;
use crate::controller::{Controller, ControllerConfig, ReviewLimits, StreamLimits};
use crate::metrics::{ConnMetrics, Metrics};
use crate::server::{self, Readiness};
use crate::server_version;
use crate::tls::TlsReloader;

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum NativeMode {
    /// Use native sidecars when the API server is 1.29 or newer.
    Auto,
    True,
    False,
}

#[derive(Args, Clone)]
pub struct ServeArgs {
    /// Address to listen on (the Service maps 443 to it).
    #[arg(long, env = "FAULTLINE_WEBHOOK_LISTEN", default_value = "0.0.0.0:8443")]
    listen: SocketAddr,
    /// Serving certificate (PEM), reloaded when it changes. With --key-file, instead of --manage-certs.
    #[arg(long, env = "FAULTLINE_WEBHOOK_CERT_FILE", requires = "key_file")]
    cert_file: Option<PathBuf>,
    /// Private key (PEM) of --cert-file.
    #[arg(long, env = "FAULTLINE_WEBHOOK_KEY_FILE", requires = "cert_file")]
    key_file: Option<PathBuf>,
    /// Keep certificates in the Secret faultline-webhook-tls (create, renew) and patch caBundle.
    #[arg(
        long,
        env = "FAULTLINE_WEBHOOK_MANAGE_CERTS",
        conflicts_with = "cert_file"
    )]
    manage_certs: bool,
    /// Namespace of the webhook (its Secret and Service).
    #[arg(long, env = env::POD_NAMESPACE, default_value = SYSTEM_NAMESPACE)]
    namespace: String,
    /// Inject native sidecars (init containers with restartPolicy Always).
    #[arg(
        long,
        env = "FAULTLINE_NATIVE_SIDECARS",
        value_enum,
        default_value = "auto"
    )]
    native_sidecars: NativeMode,
    /// Largest AdmissionReview accepted; larger bodies get 413.
    #[arg(long, env = "FAULTLINE_WEBHOOK_MAX_BODY_BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,
    /// On SIGTERM: seconds to stay up not-ready (so endpoints drop us), then to drain connections.
    #[arg(long, env = env::DRAIN_SECONDS, default_value_t = 5)]
    drain_seconds: u64,
    /// Serve admission only: no policy controller (no Kubernetes client needed
    /// with certificate files and --native-sidecars true|false).
    #[arg(long, env = "FAULTLINE_DISABLE_CONTROLLER")]
    disable_controller: bool,
    /// How often certificate files are checked for changes.
    #[arg(long, env = "FAULTLINE_WEBHOOK_CERT_POLL_SECONDS", default_value_t = 5)]
    cert_poll_seconds: u64,
    /// With --manage-certs: extra DNS names or IPs for the serving certificate, comma-separated
    /// (e.g. a node address that a `url:` webhook clientConfig and --controller-url point at).
    #[arg(
        long = "san",
        env = "FAULTLINE_WEBHOOK_EXTRA_SANS",
        value_delimiter = ','
    )]
    extra_sans: Vec<String>,
    #[command(flatten)]
    limits: LimitArgs,
    #[command(flatten)]
    injection: InjectionArgs,
    #[command(flatten)]
    token_reviews: ReviewLimits,
    #[command(flatten)]
    streams: StreamLimits,
}

pub(super) async fn run(args: ServeArgs) -> Result<(), CommandError> {
    // Everything that can be wrong with flags is checked before binding.
    if !args.manage_certs && args.cert_file.is_none() {
        return Err(CommandError::NoCertificate);
    }
    if args.max_body_bytes < 64 * 1024 {
        return Err(CommandError::MaxBodyTooSmall);
    }
    let review_limits = args.limits.review_limits(args.max_body_bytes)?;
    args.injection.config(false, false, None)?;

    let client = kube_client(&args).await?;
    let supported = native_supported(args.native_sidecars, client.as_ref()).await;

    let shutdown = CancellationToken::new();
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let conn_metrics = ConnMetrics::register(&mut registry);

    let (tls, managed_ca, manager) = if args.manage_certs {
        let Some(client) = client.clone() else {
            return Err(CommandError::NoKubeClient);
        };
        let manager = CertManager::new(client, &args.namespace).with_extra_names(&args.extra_sans);
        let bundle = manager.ensure().await?;
        let tls = TlsReloader::from_pem(bundle.cert_pem.as_bytes(), bundle.key_pem.as_bytes())
            .map_err(CommandError::Tls)?;
        (tls, Some(bundle.ca_cert_pem), Some(manager))
    } else {
        let (Some(cert), Some(key)) = (&args.cert_file, &args.key_file) else {
            return Err(CommandError::CertWithoutKey);
        };
        let tls = TlsReloader::from_files(cert, key).map_err(CommandError::TlsFiles)?;
        (tls, None, None)
    };
    let mode = args.native_sidecars;
    let configure = {
        let injection = args.injection.clone();
        move |supported: bool| {
            let native = mode == NativeMode::True || (mode == NativeMode::Auto && supported);
            injection.config(native, supported || native, managed_ca.clone())
        }
    };
    let config = configure(supported)?;
    tracing::info!(
        native_sidecars = config.native_sidecars,
        native_sidecars_supported = config.supports_native(),
        image = %config.proxy_image,
        "injection configured"
    );
    let (config_tx, config_rx) = tokio::sync::watch::channel(Arc::new(config.clone()));
    if let (Some(client), false) = (&client, mode == NativeMode::True) {
        // The config was valid once; the version changes only the layout.
        let configure =
            move |supported: bool| configure(supported).unwrap_or_else(|_| config.clone());
        tokio::spawn(server_version::refresh(
            client.clone(),
            supported,
            configure,
            config_tx,
            server_version::REFRESH_INTERVAL,
            shutdown.clone(),
        ));
    }

    match manager {
        Some(manager) => {
            tokio::spawn(manager.run(tls.clone(), Duration::from_secs(3600), shutdown.clone()));
        }
        None => {
            let m = metrics.clone();
            tls.watch(
                Duration::from_secs(args.cert_poll_seconds.max(1)),
                shutdown.clone(),
                move |ok| m.tls_reload(ok),
            );
        }
    }

    let readiness = Readiness::default();
    let state = AdmissionState {
        config: config_rx,
        metrics,
        max_body_bytes: args.max_body_bytes,
        reviews: ReviewGate::new(review_limits),
    };
    let (extra, controller) = match (&client, args.disable_controller) {
        (Some(client), false) => {
            let (router, task) = start_controller(
                client.clone(),
                &args.namespace,
                (args.token_reviews.clone(), args.streams.clone()),
                &mut registry,
                &shutdown,
            );
            (router, Some(task))
        }
        _ => (Router::new(), None),
    };
    let app = admission::router(state)
        .merge(extra)
        .merge(server::ops_router(Arc::new(registry), readiness.clone()));

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|error| CommandError::Listen {
            addr: args.listen,
            error,
        })?;
    readiness.set(true);
    tokio::spawn(stop_on_signal(
        shutdown.clone(),
        readiness,
        Duration::from_secs(args.drain_seconds),
    ));
    let mut options = args.limits.serve_options(
        Duration::from_secs(args.drain_seconds.max(1) * 3),
        conn_metrics,
    );
    // Policy streams hold their connection for hours on the same listener:
    // the connection cap is for admission and operations traffic on top of
    // the streams, which have their own bound.
    if controller.is_some() {
        options.max_connections = options
            .max_connections
            .saturating_add(args.streams.max_policy_streams);
    }
    server::serve_with(listener, tls, app, shutdown, options).await?;
    // The controller releases its Lease on shutdown, so a standby takes over
    // at once; exiting before that would leave no writer for a Lease term.
    if let Some(task) = controller {
        match tokio::time::timeout(CONTROLLER_STOP_TIMEOUT, task).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "the controller task failed"),
            Err(_) => {
                tracing::warn!("the controller did not stop in time; its Lease expires on its own")
            }
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// How long shutdown waits for the controller to release its Lease.
const CONTROLLER_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// A Kubernetes client when the flags need one (managed certificates, the
/// controller) or can use one (native sidecar detection).
async fn kube_client(args: &ServeArgs) -> Result<Option<kube::Client>, CommandError> {
    let needs_client = args.manage_certs || !args.disable_controller;
    let wants_client = needs_client || args.native_sidecars == NativeMode::Auto;
    if !wants_client {
        return Ok(None);
    }
    match kube::Client::try_default().await {
        Ok(client) => Ok(Some(client)),
        Err(error) if needs_client => Err(CommandError::KubeForServe(Box::new(error))),
        Err(error) => {
            tracing::warn!(%error, "no Kubernetes client: assuming no native sidecar support");
            Ok(None)
        }
    }
}

/// Whether the API server runs native sidecars: `true` says so; otherwise
/// its version tells, and without an answer they are assumed missing (the
/// classic layout runs everywhere).
async fn native_supported(mode: NativeMode, client: Option<&kube::Client>) -> bool {
    match (mode, client) {
        (NativeMode::True, _) => true,
        (_, None) => false,
        (_, Some(client)) => match server_version::native_supported(client).await {
            Ok(supported) => supported,
            Err(error) => {
                tracing::warn!(%error, "failed to read the API server version: assuming no native sidecars");
                false
            }
        },
    }
}

/// The policy controller plugs in here: it runs its Lease election and
/// reconcile loop (until `shutdown`) and returns its router
/// (`GET /v1/policy/stream`), served on the same TLS listener as admission.
fn start_controller(
    client: kube::Client,
    namespace: &str,
    (token_reviews, streams): (ReviewLimits, StreamLimits),
    registry: &mut Registry,
    shutdown: &CancellationToken,
) -> (Router, tokio::task::JoinHandle<()>) {
    let mut config = ControllerConfig::from_env(std::env::vars());
    config.token_reviews = token_reviews;
    config.streams = streams;
    // The Lease lives in the controller's own namespace (`--namespace`).
    config.lease.namespace = namespace.to_owned();
    let controller = Controller::new(client, config, shutdown.clone());
    controller.metrics().register(registry);
    let router = controller.router();
    (router, tokio::spawn(controller.run()))
}

/// SIGTERM/SIGINT: report not-ready first (endpoints stop sending us new
/// reviews), wait `delay`, then stop accepting and drain.
async fn stop_on_signal(shutdown: CancellationToken, readiness: Readiness, delay: Duration) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("failed to install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!(?delay, "shutting down: not ready, then draining");
    readiness.set(false);
    tokio::time::sleep(delay).await;
    shutdown.cancel();
}
