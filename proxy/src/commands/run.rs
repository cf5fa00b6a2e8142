//! `faultline-proxy run`: configuration, logging, the open-file limit, the
//! runtime, then bind, serve and drain until a signal.
use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use super::exit::{EX_CONFIG, EX_SOFTWARE, EX_UNAVAILABLE};
use crate::config::{Config, RunArgs};
use crate::dns::DnsError;
use crate::{PolicyStore, Proxy, RunError, error_chain, telemetry};

pub(super) fn run(args: &RunArgs) -> ExitCode {
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
    crate::limits::raise_open_file_limit(config.max_connections);
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
                    RunError::Dns(DnsError::Bind { .. }) => ExitCode::from(EX_UNAVAILABLE),
                    RunError::Dns(DnsError::Resolver(_)) => ExitCode::from(EX_CONFIG),
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
