//! The command line of `kubectl fault`.
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use super::inject_flags;

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
        kubectl fault recover deploy/checkout -n shop",
    mut_subcommand("inject", file_conflicts_with_fault_flags)
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
        flags: inject_flags::FaultFlags,
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

/// Each flag of the [`inject_flags::FAULT_FLAGS`] group conflicts with
/// `-f`, so clap refuses them together naming the two flags (a conflict
/// with the group itself would be reported listing every flag in it).
fn file_conflicts_with_fault_flags(inject: clap::Command) -> clap::Command {
    let flags: Vec<clap::Id> = inject
        .get_groups()
        .filter(|g| g.get_id() == inject_flags::FAULT_FLAGS)
        .flat_map(|g| g.get_args().cloned())
        .collect();
    flags.iter().fold(inject, |inject, flag| {
        inject.mut_arg(flag, |arg| arg.conflicts_with("file"))
    })
}

#[cfg(test)]
mod tests;
