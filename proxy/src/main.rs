//! `faultline-proxy`: `run` starts the proxy (sidecar or standalone), `init`
//! installs the traffic redirection (the `faultline-init` container).
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "faultline-proxy",
    version,
    about = "faultline fault-injection proxy"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (sidecar capture mode, or standalone with --listen/--upstream).
    Run,
    /// Install the iptables redirection that sends the pod's traffic through the proxy.
    ///
    /// Run once per pod by the faultline-init container (root, capabilities NET_ADMIN and
    /// NET_RAW). Inbound TCP is redirected to --inbound-capture-port, outbound TCP to
    /// --outbound-capture-port; traffic of --proxy-uid/--proxy-gid, the --admin-port, loopback
    /// and the excluded ports and CIDRs are left alone. Rules live in FAULTLINE_* chains of the
    /// nat table; running init again replaces them, --clean removes them.
    Init(faultline_proxy::init::InitArgs),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run => ExitCode::from(70),
        Command::Init(args) => faultline_proxy::init::run(args),
    }
}
