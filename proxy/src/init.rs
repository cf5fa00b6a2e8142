//! `faultline-proxy init`: the `faultline-init` container's job. It installs
//! the nat rules that send the pod's inbound TCP to the proxy's inbound
//! capture port (15406) and its outbound TCP to the outbound capture port
//! (15401), leaving out the proxy's own traffic (UID/GID 15400), its admin
//! port, loopback and whatever the flags exclude.
//!
//! Layout:
//! - [`config`]: flags -> validated [`config::CaptureConfig`] (pure; exit 64 on bad input);
//! - [`rules`]: config + current table -> `iptables-restore` input (pure, golden-tested);
//! - [`backend`]: legacy vs nft, IPv6 and capability decisions (pure);
//! - [`apply`]: the thin I/O that runs `*-save` / `*-restore --noflush`.
//!
//! Everything ends up in chains named `FAULTLINE_*`, hooked once from
//! PREROUTING and OUTPUT, so `init` is idempotent and `--clean` can remove
//! exactly what it added. `docs/capture.md` shows the rules and how to debug them.
use std::process::ExitCode;

use faultline_policy::contract;

pub mod apply;
mod args;
pub mod backend;
pub mod config;
pub mod rules;

#[cfg(test)]
mod tests;

pub use args::{BackendChoice, InitArgs, Ipv6Mode};

use apply::ApplyError;
use backend::Backend;
use config::CaptureConfig;
use rules::{Family, NatState};

/// Runs `init`; the exit code is 0, 64 (bad flags), 69 (missing binary or
/// kernel module), 77 (missing capability) or 70 (other failure).
pub fn run(args: InitArgs) -> ExitCode {
    init_logging();
    let config = match CaptureConfig::from_args(&args) {
        Ok(config) => config,
        Err(error) => {
            tracing::error!(%error, "invalid init flags");
            eprintln!("faultline-proxy init: {error}");
            return ExitCode::from(64);
        }
    };
    match execute(&args, &config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let message = crate::error_chain(&error);
            tracing::error!(error = %message, "init failed");
            eprintln!("faultline-proxy init: {message}");
            ExitCode::from(error.exit_code())
        }
    }
}

fn execute(args: &InitArgs, config: &CaptureConfig) -> Result<(), ApplyError> {
    let backend = match args.backend {
        BackendChoice::Legacy => Backend::Legacy,
        BackendChoice::Nft => Backend::Nft,
        BackendChoice::Auto => backend::choose_backend(
            apply::rule_count(Backend::Legacy),
            apply::rule_count(Backend::Nft),
        ),
    };
    let ipv6 = match args.ipv6 {
        Ipv6Mode::On => true,
        Ipv6Mode::Off => false,
        // Leftover IPv6 rules are removed even when the pod lost its address.
        Ipv6Mode::Auto => args.clean || apply::pod_has_ipv6(),
    };
    let families: &[Family] = if ipv6 {
        &[Family::V4, Family::V6]
    } else {
        &[Family::V4]
    };
    tracing::info!(
        backend = backend.name(),
        ipv6,
        dry_run = args.dry_run,
        clean = args.clean,
        "init"
    );
    if !args.dry_run {
        apply::check_capabilities(backend)?;
    }
    for &family in families {
        // IPv6 in auto clean mode is best effort: the host may have no ip6tables at all.
        let optional = family == Family::V6 && args.ipv6 == Ipv6Mode::Auto && args.clean;
        let current = match apply::save_nat(backend, family) {
            Ok(save) => NatState::parse(&save),
            Err(error) if args.dry_run || optional => {
                tracing::warn!(family = family.name(), error = %error, "cannot read current rules; assuming none");
                if optional && !args.dry_run {
                    continue;
                }
                NatState::default()
            }
            Err(error) => return Err(error),
        };
        let input = if args.clean {
            rules::render_clean(family, &current)
        } else {
            Some(rules::render(config, family, &current))
        };
        match (input, args.dry_run) {
            (Some(input), true) => print!("{input}"),
            (None, true) => println!("# nothing of faultline's to clean ({})", family.name()),
            (Some(input), false) => {
                apply::restore(backend, family, &input)?;
                tracing::info!(
                    family = family.name(),
                    backend = backend.name(),
                    action = if args.clean { "removed" } else { "installed" },
                    "capture rules applied"
                );
            }
            (None, false) => tracing::info!(family = family.name(), "no faultline rules to clean"),
        }
    }
    Ok(())
}

/// `init` runs before anything else in its container; set up logging unless
/// the binary already did (then `try_init` is a no-op).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env(contract::env::LOG)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = if std::env::var(contract::env::LOG_FORMAT).is_ok_and(|f| f == "json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
