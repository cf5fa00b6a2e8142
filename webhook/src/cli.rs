//! `kubectl fault`: inject, list, recover and inspect fault policies from
//! the command line (installed as the `kubectl-fault` plugin binary).
//!
//! Layout: this file holds the arguments and errors; `build` turns flags into
//! a policy (pure); `kube_io` reads and patches objects; `commands` runs each
//! subcommand; `table` prints aligned columns.

pub mod build;
pub mod commands;
pub mod kube_io;
pub mod table;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::controller::objects::{Kind, NAMESPACE_LABEL};

/// Command line of `kubectl fault`.
#[derive(Debug, Parser)]
#[command(
    name = "kubectl fault",
    bin_name = "kubectl fault",
    version,
    about = "Inject faults into Kubernetes workloads with faultline",
    long_about = "Inject faults into Kubernetes workloads with faultline.\n\n\
        Faults are written as the faultline.dev/faults annotation on a workload; the faultline \
        controller streams them to the workload's proxies within a second, without restarts.\n\n\
        Examples:\n  \
        kubectl fault inject deploy/checkout -n shop --delay 200ms --percent 20 --path '/api/*' --for 60s\n  \
        kubectl fault inject deploy/checkout -n shop --abort 503 --for 2m\n  \
        kubectl fault inject deploy/orders -n shop --partition-to app=nats --for 30s\n  \
        kubectl fault inject deploy/checkout -n shop -f slow-payments.yaml\n  \
        kubectl fault list -A\n  \
        kubectl fault status deploy/checkout -n shop\n  \
        kubectl fault recover deploy/checkout -n shop"
)]
pub struct Cli {
    /// Path to the kubeconfig file (default: $KUBECONFIG or ~/.kube/config).
    #[arg(long, global = true, env = "KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use.
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// Namespace (default: the context's namespace).
    #[arg(short, long, global = true, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
// Parsed once per process; boxing the flags would only obscure clap's derive.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Write a fault policy on a workload (replaces any existing one).
    Inject {
        /// The workload: deploy/NAME, sts/NAME, ds/NAME, job/NAME or pod/NAME.
        target: String,
        /// Read the whole policy from this file (`-` for stdin) instead of flags.
        #[arg(short = 'f', long = "filename", value_name = "FILE")]
        file: Option<PathBuf>,
        #[command(flatten)]
        flags: build::FaultFlags,
        /// Print the policy instead of writing it.
        #[arg(long)]
        dry_run: bool,
    },
    /// List workloads with fault policies.
    List {
        /// In every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
    },
    /// Remove a workload's fault policy: traffic is clean within a second.
    Recover {
        /// The workload: deploy/NAME, sts/NAME, ...
        target: String,
    },
    /// Per pod: injected?, proxy connected?, policy version, faults injected.
    Status {
        /// The workload: deploy/NAME, sts/NAME, ...
        target: String,
    },
}

/// Errors, each worded for the person at the terminal.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0:?} is not a workload: use deploy/NAME, sts/NAME, ds/NAME, job/NAME or pod/NAME")]
    Target(String),
    #[error("--partition-to wants labels as key=value[,key=value], got {0:?}")]
    Labels(String),
    #[error("choose a fault: --delay, --abort, --grpc or --partition-to (or -f FILE)")]
    NoFault,
    #[error(
        "choose one fault per command: --delay, --abort, --grpc or --partition-to (use -f FILE for several rules)"
    )]
    ManyFaults,
    #[error("-f cannot be combined with fault flags; put everything in the file")]
    FileAndFlags,
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
         no proxy; run `kubectl label namespace {0} {NAMESPACE_LABEL}=enabled` (or label the pod \
         template faultline.dev/inject=true) and restart the workload"
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
            | Self::NoFault
            | Self::ManyFaults
            | Self::FileAndFlags => 64,
            _ => 1,
        }
    }
}
