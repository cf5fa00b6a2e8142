//! The commands of `faultline-proxy` and their flags: `run` starts the
//! proxy (sidecar or standalone), `init` installs the traffic redirection
//! (the `faultline-init` container), `wait-ready` holds the app containers
//! until the proxy is ready. `main` only parses and runs them.
//!
//! Exit codes: 0 after a clean drain, 64 bad configuration or policy file,
//! 69 a listener could not be bound (or `wait-ready` timed out), 70
//! internal error; `init` documents its own.
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use faultline_policy::contract::wait_flag;

use crate::config::RunArgs;

mod exit;
mod run;

pub use exit::{EX_CONFIG, EX_SOFTWARE, EX_UNAVAILABLE};

#[derive(Parser)]
#[command(
    name = "faultline-proxy",
    version,
    about = "faultline fault-injection proxy",
    long_about = "faultline fault-injection proxy: delays, aborts, resets, bandwidth limits and \
                  partitions for HTTP/1.1, HTTP/2, gRPC and raw TCP, driven by a fault policy."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the proxy (sidecar capture mode, or standalone with --listen/--upstream).
    Run(Box<RunArgs>),
    /// Install the iptables redirection that sends the pod's traffic through the proxy.
    ///
    /// Run once per pod by the faultline-init container (root, capabilities NET_ADMIN and
    /// NET_RAW). Inbound TCP is redirected to --inbound-capture-port, outbound TCP to
    /// --outbound-capture-port; traffic of --proxy-uid/--proxy-gid, the --admin-port, loopback
    /// and the excluded ports and CIDRs are left alone. Rules live in FAULTLINE_* chains of the
    /// nat table; running init again replaces them, --clean removes them.
    Init(crate::init::InitArgs),
    /// Block until this pod's proxy answers /readyz with 200 (exit 69 on timeout).
    ///
    /// The webhook injects it as the sidecar's postStart hook where native sidecars are not
    /// available: the kubelet starts the app containers only after it returns, so they never
    /// send traffic before the proxy can carry it.
    WaitReady(WaitReadyArgs),
}

#[derive(clap::Args)]
pub struct WaitReadyArgs {
    /// The proxy's admin port on 127.0.0.1.
    #[arg(long = wait_flag::ADMIN_PORT, default_value_t = crate::wait::DEFAULT_ADMIN_PORT)]
    admin_port: u16,
    /// Give up after this many seconds.
    #[arg(long = wait_flag::TIMEOUT_SECONDS, default_value_t = crate::wait::DEFAULT_TIMEOUT_SECONDS)]
    timeout_seconds: u64,
}

impl Cli {
    pub fn run(self) -> ExitCode {
        match self.command {
            Command::Run(args) => run::run(&args),
            Command::Init(args) => crate::init::run(args),
            Command::WaitReady(args) => wait_ready(&args),
        }
    }
}

fn wait_ready(args: &WaitReadyArgs) -> ExitCode {
    let timeout = std::time::Duration::from_secs(args.timeout_seconds);
    match crate::wait::wait_ready(args.admin_port, timeout) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("faultline-proxy wait-ready: {error}");
            ExitCode::from(EX_UNAVAILABLE)
        }
    }
}
