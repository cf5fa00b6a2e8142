//! `faultline-proxy`: `run` starts the proxy (sidecar or standalone), `init`
//! installs the traffic redirection (the `faultline-init` container),
//! `wait-ready` holds the app containers until the proxy is ready.
//!
//! Exit codes: 0 after a clean drain, 64 bad configuration or policy file,
//! 69 a listener could not be bound, 70 internal error.
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use faultline_policy::contract::wait_flag;
use faultline_proxy::PolicyStore;
use faultline_proxy::config::{Config, RunArgs};
use faultline_proxy::{Proxy, RunError, error_chain, telemetry};
use tokio_util::sync::CancellationToken;

const EX_CONFIG: u8 = 64;
const EX_UNAVAILABLE: u8 = 69;
const EX_SOFTWARE: u8 = 70;

#[derive(Parser)]
#[command(
    name = "faultline-proxy",
    version,
    about = "faultline fault-injection proxy",
    long_about = "faultline fault-injection proxy: delays, aborts, resets, bandwidth limits and \
                  partitions for HTTP/1.1, HTTP/2, gRPC and raw TCP, driven by a fault policy."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (sidecar capture mode, or standalone with --listen/--upstream).
    Run(Box<RunArgs>),
    /// Install the iptables redirection that sends the pod's traffic through the proxy.
    ///
    /// Run once per pod by the faultline-init container (root, capabilities NET_ADMIN and
    /// NET_RAW). Inbound TCP is redirected to --inbound-capture-port, outbound TCP to
    /// --outbound-capture-port; traffic of --proxy-uid/--proxy-gid, the --admin-port, loopback
    /// and the excluded ports and CIDRs are left alone. Rules live in FAULTLINE_* chains of the
    /// nat table; running init again replaces them, --clean removes them.
    Init(faultline_proxy::init::InitArgs),
    /// Block until this pod's proxy answers /readyz with 200 (exit 69 on timeout).
    ///
    /// The webhook injects it as the sidecar's postStart hook where native sidecars are not
    /// available: the kubelet starts the app containers only after it returns, so they never
    /// send traffic before the proxy can carry it.
    WaitReady(WaitReadyArgs),
}

#[derive(clap::Args)]
struct WaitReadyArgs {
    /// The proxy's admin port on 127.0.0.1.
    #[arg(long = wait_flag::ADMIN_PORT, default_value_t = faultline_proxy::wait::DEFAULT_ADMIN_PORT)]
    admin_port: u16,
    /// Give up after this many seconds.
    #[arg(long = wait_flag::TIMEOUT_SECONDS, default_value_t = faultline_proxy::wait::DEFAULT_TIMEOUT_SECONDS)]
    timeout_seconds: u64,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run(args) => run(&args),
        Command::Init(args) => faultline_proxy::init::run(args),
        Command::WaitReady(args) => wait_ready(&args),
    }
}

fn wait_ready(args: &WaitReadyArgs) -> ExitCode {
    let timeout = std::time::Duration::from_secs(args.timeout_seconds);
    match faultline_proxy::wait::wait_ready(args.admin_port, timeout) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("faultline-proxy wait-ready: {error}");
            ExitCode::from(EX_UNAVAILABLE)
        }
    }
}

fn run(args: &RunArgs) -> ExitCode {
    let env = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
    let config = match Config::from_sources(args, env) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("faultline-proxy: {}", error_chain(&error));
            return ExitCode::from(EX_CONFIG);
        }
    };
    if let Err(error) = telemetry::init(&config.log_filter, config.log_format) {
        eprintln!("faultline-proxy: {}", error_chain(&error));
        return ExitCode::from(EX_CONFIG);
    }
    // Before any socket: every connection is a file descriptor.
    faultline_proxy::limits::raise_open_file_limit(config.max_connections);
    // Connections run on the worker threads (see `workers`); this runtime
    // only accepts, serves the admin endpoints and watches the policy.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("faultline-proxy: failed to start the runtime: {error}");
            return ExitCode::from(EX_SOFTWARE);
        }
    };
    runtime.block_on(async move {
        let proxy = match Proxy::bind(config).await {
            Ok(proxy) => proxy,
            Err(error) => {
                tracing::error!(error = %error_chain(&error), "failed to start");
                return match error {
                    RunError::FaultsFile(_) => ExitCode::from(EX_CONFIG),
                    RunError::Bind { .. } => ExitCode::from(EX_UNAVAILABLE),
                    RunError::Workers(_) => ExitCode::from(EX_SOFTWARE),
                };
            }
        };
        let shutdown = CancellationToken::new();
        tokio::spawn(stop_on_signal(shutdown.clone()));
        match proxy.run(PolicyStore::new(), shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                tracing::error!(error = %error_chain(&error), "proxy failed");
                ExitCode::from(EX_SOFTWARE)
            }
        }
    })
}

/// SIGTERM or SIGINT starts the drain; a second one exits at once.
async fn stop_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("failed to install signal handlers; SIGTERM will not drain");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: draining"),
        _ = int.recv() => tracing::info!("SIGINT: draining"),
    }
    shutdown.cancel();
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::warn!("second signal: exiting without draining");
    std::process::exit(i32::from(EX_SOFTWARE));
}
