//! `faultline-webhook`: the admission webhook server (default command), offline
//! injection and certificate generation (`faultline_webhook::commands`). See
//! `docs/webhook.md`.
use std::process::ExitCode;

use clap::Parser;
use faultline_webhook::commands::{Cli, EXIT_USAGE};
use faultline_webhook::telemetry;

// jemalloc, as in the proxy: glibc kept what a burst of reviews had freed
// (RSS stayed near the peak), musl's allocator is slow; jemalloc hands pages
// unused for a second back to the system (`.cargo/config.toml`).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("faultline-webhook: failed to start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match cli.run(&runtime) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error.is_usage() => {
            eprintln!("faultline-webhook: {error}");
            ExitCode::from(error.exit_code())
        }
        Err(error) => {
            // Through the log (JSON in the cluster), which goes to stderr.
            tracing::error!("{error}");
            ExitCode::from(error.exit_code())
        }
    }
}
