//! `faultline-webhook`: the admission webhook server (default command), offline
//! injection and certificate generation. See `docs/webhook.md`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use clap::{Args, Parser, Subcommand, ValueEnum};
use faultline_webhook::admission::{self, AdmissionState, DEFAULT_MAX_BODY_BYTES};
use faultline_webhook::certs::{self, CertManager};
use faultline_webhook::config::{
    self, Config, DEFAULT_CONTROLLER_URL, DEFAULT_PROXY_IMAGE, ProxyResources, SYSTEM_NAMESPACE,
    WEBHOOK_CONFIG_NAME, WEBHOOK_SERVICE,
};
use faultline_webhook::controller::{Controller, ControllerConfig};
use faultline_webhook::metrics::Metrics;
use faultline_webhook::server::{self, Readiness, ServeOptions};
use faultline_webhook::tls::TlsReloader;
use faultline_webhook::{inject, telemetry};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

/// Exit code for invalid flags/env (sysexits EX_USAGE).
const EXIT_USAGE: u8 = 64;

#[derive(Parser)]
#[command(
    name = "faultline-webhook",
    version,
    about = "faultline admission webhook: injects the fault proxy sidecar and validates fault policies",
    long_about = "faultline admission webhook.\n\n\
        Without a command it serves the webhook (see `serve --help`).\n\
        `inject` adds the sidecar to manifests offline; `certs` makes the TLS certificates.\n\n\
        Examples:\n  \
        faultline-webhook inject -f deploy.yaml | kubectl apply -f -\n  \
        faultline-webhook certs --out-dir certs/\n  \
        faultline-webhook serve --cert-file certs/tls.crt --key-file certs/tls.key \\\n    --native-sidecars false --disable-controller",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Serve /mutate, /validate, /healthz, /readyz, /metrics over HTTPS (the default).
    Serve(ServeArgs),
    /// Inject the sidecar into Pods and workloads read from a file or stdin; print the result.
    Inject(InjectArgs),
    /// Create the webhook's CA and serving certificate (files, or the in-cluster Secret).
    Certs(CertsArgs),
}

/// What gets injected; shared by `serve` and `inject`.
#[derive(Args, Clone)]
struct InjectionArgs {
    /// Image of the faultline-init and faultline-proxy containers.
    #[arg(long, env = "FAULTLINE_PROXY_IMAGE", default_value = DEFAULT_PROXY_IMAGE)]
    proxy_image: String,
    /// imagePullPolicy of the injected containers (Always, IfNotPresent, Never).
    #[arg(long, env = "FAULTLINE_PROXY_IMAGE_PULL_POLICY")]
    image_pull_policy: Option<String>,
    /// Proxy CPU request (pods override with the faultline.dev/proxy-cpu annotation).
    #[arg(long, env = "FAULTLINE_PROXY_CPU", default_value = "10m")]
    proxy_cpu: String,
    /// Proxy memory request (faultline.dev/proxy-memory overrides).
    #[arg(long, env = "FAULTLINE_PROXY_MEMORY", default_value = "32Mi")]
    proxy_memory: String,
    /// Proxy CPU limit (none by default: throttling would distort injected delays).
    #[arg(long, env = "FAULTLINE_PROXY_CPU_LIMIT")]
    proxy_cpu_limit: Option<String>,
    /// Proxy memory limit.
    #[arg(long, env = "FAULTLINE_PROXY_MEMORY_LIMIT", default_value = "256Mi")]
    proxy_memory_limit: String,
    /// URL proxies use to reach the controller's policy stream.
    #[arg(long, env = "FAULTLINE_CONTROLLER_URL", default_value = DEFAULT_CONTROLLER_URL)]
    controller_url: String,
    /// PEM file of the CA proxies trust for the controller (serve: defaults to the managed CA).
    #[arg(long, env = "FAULTLINE_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// FAULTLINE_LOG filter given to injected proxies.
    #[arg(long, env = "FAULTLINE_PROXY_LOG")]
    proxy_log: Option<String>,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum NativeMode {
    /// Use native sidecars when the API server is 1.29 or newer.
    Auto,
    True,
    False,
}

#[derive(Args, Clone)]
struct ServeArgs {
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
    #[arg(long, env = "FAULTLINE_POD_NAMESPACE", default_value = SYSTEM_NAMESPACE)]
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
    #[arg(long, env = "FAULTLINE_DRAIN_SECONDS", default_value_t = 5)]
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
    injection: InjectionArgs,
}

#[derive(Args)]
struct InjectArgs {
    /// File to read (YAML, multi-document, Lists); `-` for stdin.
    #[arg(short = 'f', long = "filename")]
    file: PathBuf,
    /// Inject native sidecars (target clusters 1.29+).
    #[arg(long)]
    native_sidecars: bool,
    #[command(flatten)]
    injection: InjectionArgs,
}

#[derive(Args)]
struct CertsArgs {
    /// Write ca.crt, tls.crt and tls.key into this directory.
    #[arg(long, required_unless_present = "secret", conflicts_with = "secret")]
    out_dir: Option<PathBuf>,
    /// Create/renew the Secret faultline-webhook-tls and patch caBundle into our webhook configurations.
    #[arg(long)]
    secret: bool,
    /// Namespace of the webhook Service.
    #[arg(long, env = "FAULTLINE_POD_NAMESPACE", default_value = SYSTEM_NAMESPACE)]
    namespace: String,
    /// Extra DNS names or IPs for the serving certificate (e.g. 127.0.0.1 for local runs).
    #[arg(long = "san", value_delimiter = ',')]
    extra_sans: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(error) = telemetry::init() {
        eprintln!("faultline-webhook: {error}");
        return ExitCode::from(EXIT_USAGE);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("faultline-webhook: failed to start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Some(Command::Inject(args)) => run_inject(args),
        Some(Command::Certs(args)) => runtime.block_on(run_certs(args)),
        Some(Command::Serve(args)) => runtime.block_on(run_serve(args)),
        None => runtime.block_on(run_serve(cli.serve)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            eprintln!("faultline-webhook: {message}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(Failure::Runtime(message)) => {
            // Through the log (JSON in the cluster), which goes to stderr.
            tracing::error!("{message}");
            ExitCode::FAILURE
        }
    }
}

enum Failure {
    /// Bad flags or environment: exit 64 before any socket is bound.
    Usage(String),
    Runtime(String),
}

fn usage(e: impl std::fmt::Display) -> Failure {
    Failure::Usage(e.to_string())
}

fn runtime(e: impl std::fmt::Display) -> Failure {
    Failure::Runtime(e.to_string())
}

/// Build and validate the injection config; the CA comes from --ca-file or `managed_ca`.
fn injection_config(
    args: &InjectionArgs,
    native_sidecars: bool,
    managed_ca: Option<String>,
) -> Result<Config, Failure> {
    let ca_pem = match &args.ca_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| usage(format!("failed to read --ca-file {}: {e}", path.display())))?,
        ),
        None => managed_ca,
    };
    let config = Config {
        proxy_image: args.proxy_image.clone(),
        image_pull_policy: args.image_pull_policy.clone(),
        resources: ProxyResources {
            cpu_request: Some(args.proxy_cpu.clone()),
            memory_request: Some(args.proxy_memory.clone()),
            cpu_limit: args.proxy_cpu_limit.clone(),
            memory_limit: Some(args.proxy_memory_limit.clone()),
        },
        native_sidecars,
        controller_url: args.controller_url.clone(),
        ca_pem,
        proxy_log: args.proxy_log.clone(),
        ..Config::default()
    };
    config.validate().map_err(usage)?;
    Ok(config)
}

fn run_inject(args: InjectArgs) -> Result<(), Failure> {
    let config = injection_config(&args.injection, args.native_sidecars, None)?;
    if config.ca_pem.is_none() {
        eprintln!(
            "faultline-webhook: note: no --ca-file; injected proxies will not trust the controller's certificate"
        );
    }
    let input = if args.file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())
            .map_err(|e| runtime(format!("failed to read stdin: {e}")))?
    } else {
        std::fs::read_to_string(&args.file)
            .map_err(|e| usage(format!("failed to read {}: {e}", args.file.display())))?
    };
    let (output, report) = inject::inject_yaml(&input, &config).map_err(runtime)?;
    print!("{output}");
    for skipped in &report.skipped {
        eprintln!("faultline-webhook: skipped {skipped}");
    }
    Ok(())
}

async fn run_certs(args: CertsArgs) -> Result<(), Failure> {
    if let Some(dir) = &args.out_dir {
        let mut names = certs::dns_names(WEBHOOK_SERVICE, &args.namespace);
        names.extend(args.extra_sans.iter().cloned());
        let bundle = certs::generate(&names, time::OffsetDateTime::now_utc()).map_err(runtime)?;
        std::fs::create_dir_all(dir)
            .map_err(|e| runtime(format!("failed to create {}: {e}", dir.display())))?;
        for (file, pem, private) in [
            ("ca.crt", &bundle.ca_cert_pem, false),
            ("tls.crt", &bundle.cert_pem, false),
            ("tls.key", &bundle.key_pem, true),
        ] {
            write_file(&dir.join(file), pem, private).map_err(runtime)?;
        }
        println!(
            "wrote {}/{{ca.crt,tls.crt,tls.key}} for {}",
            dir.display(),
            names.join(", ")
        );
        return Ok(());
    }
    let client = kube::Client::try_default()
        .await
        .map_err(|e| runtime(format!("failed to connect to Kubernetes: {e}")))?;
    let manager =
        CertManager::new(client.clone(), &args.namespace).with_extra_names(&args.extra_sans);
    let bundle = manager.ensure().await.map_err(runtime)?;
    certs::patch_ca_bundle(&client, WEBHOOK_CONFIG_NAME, &bundle.ca_cert_pem)
        .await
        .map_err(runtime)?;
    println!(
        "Secret {}/faultline-webhook-tls is current; caBundle patched",
        args.namespace
    );
    Ok(())
}

fn write_file(path: &std::path::Path, contents: &str, private: bool) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mode = if private { 0o600 } else { 0o644 };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(|e| format!("failed to write {}: {e}", path.display()))?;
    file.write_all(contents.as_bytes())
        .map_err(|e| format!("failed to write {}: {e}", path.display()))
}

async fn run_serve(args: ServeArgs) -> Result<(), Failure> {
    // Everything that can be wrong with flags is checked before binding.
    if !args.manage_certs && args.cert_file.is_none() {
        return Err(usage(
            "no certificate: pass --cert-file and --key-file, or --manage-certs (in-cluster)",
        ));
    }
    if args.max_body_bytes < 64 * 1024 {
        return Err(usage("--max-body-bytes must be at least 65536"));
    }
    injection_config(&args.injection, false, None)?;

    let needs_client = args.manage_certs || !args.disable_controller;
    let wants_client = needs_client || args.native_sidecars == NativeMode::Auto;
    let client = if wants_client {
        match kube::Client::try_default().await {
            Ok(client) => Some(client),
            Err(e) if needs_client => {
                return Err(runtime(format!(
                    "failed to connect to Kubernetes (needed by --manage-certs and the controller; \
                     run with --disable-controller for an admission-only server): {e}"
                )));
            }
            Err(e) => {
                tracing::warn!(error = %e, "no Kubernetes client: assuming no native sidecar support");
                None
            }
        }
    } else {
        None
    };

    let native = match (args.native_sidecars, &client) {
        (NativeMode::True, _) => true,
        (NativeMode::False, _) | (NativeMode::Auto, None) => false,
        (NativeMode::Auto, Some(client)) => match client.apiserver_version().await {
            Ok(info) => config::native_sidecars_supported(&info.major, &info.minor),
            Err(error) => {
                tracing::warn!(%error, "failed to read the API server version: assuming no native sidecars");
                false
            }
        },
    };

    let shutdown = CancellationToken::new();
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);

    let (tls, managed_ca, manager) = if args.manage_certs {
        let Some(client) = client.clone() else {
            return Err(runtime("no Kubernetes client"));
        };
        let manager = CertManager::new(client, &args.namespace).with_extra_names(&args.extra_sans);
        let bundle = manager.ensure().await.map_err(runtime)?;
        let tls = TlsReloader::from_pem(bundle.cert_pem.as_bytes(), bundle.key_pem.as_bytes())
            .map_err(runtime)?;
        (tls, Some(bundle.ca_cert_pem), Some(manager))
    } else {
        let (Some(cert), Some(key)) = (&args.cert_file, &args.key_file) else {
            return Err(usage("--cert-file and --key-file go together"));
        };
        let tls = TlsReloader::from_files(cert, key).map_err(usage)?;
        (tls, None, None)
    };
    let config = injection_config(&args.injection, native, managed_ca)?;
    tracing::info!(native_sidecars = native, image = %config.proxy_image, "injection configured");

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
        config: Arc::new(config),
        metrics,
        max_body_bytes: args.max_body_bytes,
    };
    let (extra, controller) = match (&client, args.disable_controller) {
        (Some(client), false) => {
            let (router, task) =
                start_controller(client.clone(), &args.namespace, &mut registry, &shutdown);
            (router, Some(task))
        }
        _ => (Router::new(), None),
    };
    let app = admission::router(state)
        .merge(extra)
        .merge(server::ops_router(Arc::new(registry), readiness.clone()));

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| runtime(format!("failed to listen on {}: {e}", args.listen)))?;
    readiness.set(true);
    tokio::spawn(stop_on_signal(
        shutdown.clone(),
        readiness,
        Duration::from_secs(args.drain_seconds),
    ));
    let options = ServeOptions {
        drain_timeout: Duration::from_secs(args.drain_seconds.max(1) * 3),
        ..ServeOptions::default()
    };
    server::serve_with(listener, tls, app, shutdown, options)
        .await
        .map_err(runtime)?;
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

/// The policy controller plugs in here: it runs its Lease election and
/// reconcile loop (until `shutdown`) and returns its router
/// (`GET /v1/policy/stream`), served on the same TLS listener as admission.
fn start_controller(
    client: kube::Client,
    namespace: &str,
    registry: &mut Registry,
    shutdown: &CancellationToken,
) -> (Router, tokio::task::JoinHandle<()>) {
    let mut config = ControllerConfig::from_env(std::env::vars());
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
