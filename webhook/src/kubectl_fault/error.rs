//! Why a `kubectl fault` command failed, and its exit code.
use std::path::PathBuf;

use faultline_policy::contract::{INJECT_LABEL, NAMESPACE_INJECTION_LABEL};

use crate::controller::objects::Kind;

/// Errors, each worded for the person at the terminal.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0:?} is not a workload: use deploy/NAME, sts/NAME, ds/NAME, job/NAME or pod/NAME")]
    Target(String),
    #[error("--partition-to wants labels as key=value[,key=value], got {0:?}")]
    Labels(String),
    #[error("--delay-{flag} wants {expected}, got {got:?}")]
    DelayValues {
        flag: &'static str,
        expected: String,
        got: String,
    },
    #[error("--set-header wants NAME=VALUE, got {0:?}")]
    HeaderFlag(String),
    #[error(
        "choose a fault: --delay (or --delay-uniform, --delay-lognormal, --delay-pareto), --abort, \
         --abort-reset, --grpc, --partition-to, --bandwidth, --slicer, --limit-data, --slow-close, \
         --dns-rcode, --dns-drop, --header-max-delay/--header-abort/--header-abort-grpc, \
         --replace-status/--replace-body or --set-header/--remove-header (or -f FILE)"
    )]
    NoFault,
    #[error(
        "{0} needs HTTP, but --sni matches TLS connections, which the proxy forwards without \
         decrypting: on TLS use --abort-reset, --delay, --bandwidth, --partition-to, --slicer, \
         --limit-data or --slow-close, or match HTTP requests to that host with --host"
    )]
    HttpOnTls(&'static str),
    #[error("choose one fault per command (use -f FILE for several rules)")]
    ManyFaults,
    #[error("--side applies to --delay, --bandwidth, --slicer, --limit-data and --slow-close")]
    Side,
    #[error("failed to read {path}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to write the policy as YAML")]
    Yaml(#[source] serde_yaml::Error),
    #[error("invalid fault policy: {0}")]
    InvalidPolicy(String),
    #[error("{kind} {namespace}/{name} not found")]
    NotFound {
        kind: &'static str,
        namespace: String,
        name: String,
    },
    #[error(
        "neither namespace {0} nor the workload's pods are opted in to faultline, so its pods have \
         no proxy; run `kubectl label namespace {0} {NAMESPACE_INJECTION_LABEL}=enabled` (or label the pod \
         template {INJECT_LABEL}=true) and restart the workload"
    )]
    NotOptedIn(String),
    #[error("failed to load the kubeconfig")]
    Kubeconfig(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("failed to {action}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },
}

impl CliError {
    pub(crate) fn kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let action = action.into();
        move |source| Self::Kube { action, source }
    }

    pub(crate) fn not_found(kind: Kind, namespace: &str, name: &str) -> Self {
        Self::NotFound {
            kind: kind.as_str(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// Exit code: 64 for usage errors, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Target(_)
            | Self::Labels(_)
            | Self::HeaderFlag(_)
            | Self::NoFault
            | Self::ManyFaults
            | Self::Side
            | Self::HttpOnTls(_) => 64,
            _ => 1,
        }
    }
}
