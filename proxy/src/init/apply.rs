//! The thin I/O around the pure parts: run `*-save` / `*-restore`, read
//! `/proc`, and turn failures into errors that name what is missing.
use std::io::{self, Write};
use std::process::{Command, ExitStatus, Stdio};

use super::backend::{self, Backend};
use super::rules::Family;

/// Why the rules could not be read or applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(
        "failed to run {binary}: not found in PATH (install the `iptables` package, e.g. `apt-get install iptables`)"
    )]
    MissingBinary {
        binary: String,
        #[source]
        source: io::Error,
    },
    #[error("failed to run {binary}")]
    Spawn {
        binary: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "failed to apply capture rules: this process lacks capability {missing} (the faultline-init container needs NET_ADMIN and NET_RAW, and must run as root)"
    )]
    MissingCapability { missing: String },
    #[error("failed to {action} with {binary} ({status}): {stderr}{hint}")]
    Command {
        action: &'static str,
        binary: String,
        status: ExitStatus,
        stderr: String,
        hint: String,
        kind: FailureKind,
    },
}

/// What a failed iptables command most likely lacked, judged from its stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    Permission,
    KernelModule,
    Other,
}

impl ApplyError {
    /// sysexits(3): 69 unavailable (binary/module), 77 no permission, 70 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::MissingBinary { .. } => 69,
            Self::MissingCapability { .. } => 77,
            Self::Command {
                kind: FailureKind::Permission,
                ..
            } => 77,
            Self::Command {
                kind: FailureKind::KernelModule,
                ..
            } => 69,
            Self::Spawn { .. } | Self::Command { .. } => 70,
        }
    }
}

/// Classifies iptables' stderr; the hint is appended to the error message.
pub fn classify(stderr: &str, backend: Backend) -> (FailureKind, String) {
    let lower = stderr.to_ascii_lowercase();
    if lower.contains("permission denied") || lower.contains("operation not permitted") {
        let hint = "; hint: the process needs capabilities NET_ADMIN and NET_RAW".to_string();
        (FailureKind::Permission, hint)
    } else if [
        "insmod",
        "does not exist",
        "no chain/target/match",
        "protocol not supported",
        "not supported",
        "could not fetch rule set generation id",
        "couldn't load",
        "kernel module",
    ]
    .iter()
    .any(|needle| lower.contains(needle))
    {
        let hint = format!(
            "; hint: a kernel module the {} backend needs is missing ({}); try --backend {}",
            backend.name(),
            backend.kernel_modules(),
            match backend {
                Backend::Legacy => "nft",
                Backend::Nft => "legacy",
            }
        );
        (FailureKind::KernelModule, hint)
    } else {
        (FailureKind::Other, String::new())
    }
}

/// `iptables-save -t nat` for this backend and family.
pub fn save_nat(backend: Backend, family: Family) -> Result<String, ApplyError> {
    run(
        backend,
        &backend.save_binary(family),
        &["-t", "nat"],
        None,
        "read the nat table",
    )
}

/// Applies `input` atomically, leaving every table and chain that is not ours alone.
pub fn restore(backend: Backend, family: Family, input: &str) -> Result<(), ApplyError> {
    run(
        backend,
        &backend.restore_binary(family),
        &["--noflush", "--wait", "10"],
        Some(input),
        "apply capture rules",
    )
    .map(drop)
}

/// Number of rules this backend holds in every table, or `None` if it cannot be read.
pub fn rule_count(backend: Backend) -> Option<usize> {
    let output = Command::new(backend.save_binary(Family::V4))
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| backend::count_rules(&String::from_utf8_lossy(&output.stdout)))
}

/// Fails before touching anything when capabilities are missing, so the
/// error says which one instead of iptables' terse "Permission denied".
pub fn check_capabilities(backend: Backend) -> Result<(), ApplyError> {
    // Without /proc we cannot tell; let iptables report instead.
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return Ok(());
    };
    let Some(caps) = backend::effective_caps(&status) else {
        return Ok(());
    };
    let missing = backend::missing_caps(caps, backend);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(ApplyError::MissingCapability {
            missing: missing.join(" and "),
        })
    }
}

/// Whether this network namespace has a global IPv6 address.
pub fn pod_has_ipv6() -> bool {
    std::fs::read_to_string("/proc/net/if_inet6").is_ok_and(|text| backend::has_global_ipv6(&text))
}

fn run(
    backend: Backend,
    binary: &str,
    args: &[&str],
    input: Option<&str>,
    action: &'static str,
) -> Result<String, ApplyError> {
    let spawn_error = |source: io::Error| match source.kind() {
        io::ErrorKind::NotFound => ApplyError::MissingBinary {
            binary: binary.to_string(),
            source,
        },
        _ => ApplyError::Spawn {
            binary: binary.to_string(),
            source,
        },
    };
    let mut child = Command::new(binary)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_error)?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        // A write error means the tool exited early; its status and stderr say why.
        let _ = stdin.write_all(text.as_bytes());
    }
    let output = child.wait_with_output().map_err(spawn_error)?;
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    let (kind, hint) = classify(&stderr, backend);
    Err(ApplyError::Command {
        action,
        binary: binary.to_string(),
        status: output.status,
        stderr,
        hint,
        kind,
    })
}
