//! `faultline-proxy`: `run` starts the proxy (sidecar or standalone), `init`
//! installs the traffic redirection (the `faultline-init` container),
//! `wait-ready` holds the app containers until the proxy is ready. The
//! commands, their flags and exit codes are `faultline_proxy::commands`.
use std::process::ExitCode;

use clap::Parser;
use faultline_proxy::commands::Cli;

fn main() -> ExitCode {
    Cli::parse().run()
}
