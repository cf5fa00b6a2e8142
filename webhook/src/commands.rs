//! The commands of `faultline-webhook`: `serve` (the default), `inject`
//! and `certs`, with their flags; `main` only parses, sets up logging and
//! the runtime, and maps a [`CommandError`] to an exit code.
//!
//! Layout: this file holds the command line; `commands/serve.rs`,
//! `commands/inject.rs` and `commands/certs.rs` run one command each,
//! `commands/injection.rs` holds the flags `serve` and `inject` share
//! ([`InjectionArgs`]), `commands/limits.rs` the client bounds of `serve`
//! ([`LimitArgs`]), `commands/error.rs` the errors and exit codes.
//! Every flag has a `FAULTLINE_*` variable (clap's `env`) where it makes
//! sense in a Deployment.
use clap::{Parser, Subcommand};

mod certs;
mod error;
mod inject;
mod injection;
mod limits;
mod serve;

pub use certs::CertsArgs;
pub use error::{CommandError, EXIT_FAILURE, EXIT_USAGE};
pub use inject::InjectArgs;
pub use injection::InjectionArgs;
pub use limits::LimitArgs;
pub use serve::{NativeMode, ServeArgs};

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
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Subcommand)]
pub enum Command {
    /// Serve /mutate, /validate, /healthz, /readyz, /metrics over HTTPS (the default).
    Serve(Box<ServeArgs>),
    /// Inject the sidecar into Pods and workloads read from a file or stdin; print the result.
    Inject(InjectArgs),
    /// Create the webhook's CA and serving certificate (files, or the in-cluster Secret).
    Certs(CertsArgs),
}

impl Cli {
    /// Runs the command (`serve` when none is given) on `runtime`.
    pub fn run(self, runtime: &tokio::runtime::Runtime) -> Result<(), CommandError> {
        match self.command {
            Some(Command::Inject(args)) => inject::run(args),
            Some(Command::Certs(args)) => runtime.block_on(certs::run(args)),
            Some(Command::Serve(args)) => runtime.block_on(serve::run(*args)),
            None => runtime.block_on(serve::run(self.serve)),
        }
    }
}
