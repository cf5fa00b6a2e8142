//! Why a `faultline-webhook` command failed, and its exit code.
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::certs::{CertError, SecretError};
use crate::config::ConfigError;
use crate::inject::InjectError;
use crate::server::ServeError;
use crate::tls::TlsError;

/// Exit code for invalid flags or environment (sysexits EX_USAGE).
pub const EXIT_USAGE: u8 = 64;
/// Exit code for a failure while running.
pub const EXIT_FAILURE: u8 = 1;

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
    #[error(
        "--review-body-budget-bytes ({budget}) must be at least --max-body-bytes ({max_body_bytes}): \
         a review of the largest accepted size must fit"
    )]
    BodyBudgetTooSmall {
        budget: usize,
        max_body_bytes: usize,
    },
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
    Config(#[from] ConfigError),
    #[error(transparent)]
    TlsFiles(TlsError),

    #[error("failed to read stdin: {0}")]
    Stdin(std::io::Error),
    #[error(transparent)]
    Inject(#[from] InjectError),
    #[error(transparent)]
    Cert(#[from] CertError),
    #[error(transparent)]
    Secret(Box<SecretError>),
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
    Kube(Box<kube::Error>),
    #[error(
        "failed to connect to Kubernetes (needed by --manage-certs and the controller; \
         run with --disable-controller for an admission-only server): {0}"
    )]
    KubeForServe(Box<kube::Error>),
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
            | Self::BodyBudgetTooSmall { .. }
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

impl From<SecretError> for CommandError {
    fn from(error: SecretError) -> Self {
        Self::Secret(Box::new(error))
    }
}
