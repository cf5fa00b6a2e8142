//! The commands of `faultline-webhook`: `serve` (the default), `inject`
//! and `certs`, with their flags; `main` only parses, sets up logging and
//! the runtime, and maps a [`CommandError`] to an exit code.
//!
//! Layout: this file holds the command line, the flags shared by `serve`
//! and `inject` ([`InjectionArgs`]) and the errors; `commands/serve.rs`,
//! `commands/inject.rs` and `commands/certs.rs` run one command each.
//! Every flag has a `FAULTLINE_*` variable (clap's `env`) where it makes
//! sense in a Deployment.
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::certs::{CertError, SecretError};
use crate::config::{self, Config, DEFAULT_CONTROLLER_URL, DEFAULT_PROXY_IMAGE, ProxyResources};
use crate::inject::InjectError;
use crate::server::ServeError;
use crate::tls::TlsError;

mod certs;
mod inject;
mod serve;

pub use certs::CertsArgs;
pub use inject::InjectArgs;
pub use serve::{NativeMode, ServeArgs};

/// Exit code for invalid flags or environment (sysexits EX_USAGE).
pub const EXIT_USAGE: u8 = 64;
/// Exit code for a failure while running.
pub const EXIT_FAILURE: u8 = 1;

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
    Serve(ServeArgs),
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
            Some(Command::Serve(args)) => runtime.block_on(serve::run(args)),
            None => runtime.block_on(serve::run(self.serve)),
        }
    }
}

/// What gets injected; shared by `serve` and `inject`.
#[derive(Args, Clone)]
pub struct InjectionArgs {
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

impl InjectionArgs {
    /// The validated injection config; the CA comes from --ca-file or `managed_ca`.
    fn config(
        &self,
        native_sidecars: bool,
        managed_ca: Option<String>,
    ) -> Result<Config, CommandError> {
        let ca_pem = match &self.ca_file {
            Some(path) => {
                Some(
                    std::fs::read_to_string(path).map_err(|error| CommandError::CaFile {
                        path: path.clone(),
                        error,
                    })?,
                )
            }
            None => managed_ca,
        };
        let config = Config {
            proxy_image: self.proxy_image.clone(),
            image_pull_policy: self.image_pull_policy.clone(),
            resources: ProxyResources {
                cpu_request: Some(self.proxy_cpu.clone()),
                memory_request: Some(self.proxy_memory.clone()),
                cpu_limit: self.proxy_cpu_limit.clone(),
                memory_limit: Some(self.proxy_memory_limit.clone()),
            },
            native_sidecars,
            controller_url: self.controller_url.clone(),
            ca_pem,
            proxy_log: self.proxy_log.clone(),
            ..Config::default()
        };
        config.validate()?;
        Ok(config)
    }
}

/// Why a command failed. [`CommandError::exit_code`] tells bad flags or
/// environment (64, before any socket is bound) from failures while running.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("no certificate: pass --cert-file and --key-file, or --manage-certs (in-cluster)")]
    NoCertificate,
    #[error("--cert-file and --key-file go together")]
    CertWithoutKey,
    #[error("--max-body-bytes must be at least 65536")]
    MaxBodyTooSmall,
    #[error("failed to read --ca-file {}: {error}", path.display())]
    CaFile {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("failed to read {}: {error}", path.display())]
    Input {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    TlsFiles(TlsError),

    #[error("failed to read stdin: {0}")]
    Stdin(std::io::Error),
    #[error(transparent)]
    Inject(#[from] InjectError),
    #[error(transparent)]
    Cert(#[from] CertError),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Tls(TlsError),
    #[error("failed to create {}: {error}", path.display())]
    CreateDir {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("failed to write {}: {error}", path.display())]
    WriteFile {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("failed to connect to Kubernetes: {0}")]
    Kube(kube::Error),
    #[error(
        "failed to connect to Kubernetes (needed by --manage-certs and the controller; \
         run with --disable-controller for an admission-only server): {0}"
    )]
    KubeForServe(kube::Error),
    #[error("no Kubernetes client")]
    NoKubeClient,
    #[error("failed to listen on {addr}: {error}")]
    Listen {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error(transparent)]
    Serve(#[from] ServeError),
}

impl CommandError {
    /// 64 for bad flags, environment or input files; 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::NoCertificate
            | Self::CertWithoutKey
            | Self::MaxBodyTooSmall
            | Self::CaFile { .. }
            | Self::Input { .. }
            | Self::Config(_)
            | Self::TlsFiles(_) => EXIT_USAGE,
            _ => EXIT_FAILURE,
        }
    }

    /// Bad flags are reported on stderr; failures while running go
    /// through the log (JSON in the cluster), which goes to stderr too.
    pub fn is_usage(&self) -> bool {
        self.exit_code() == EXIT_USAGE
    }
}
