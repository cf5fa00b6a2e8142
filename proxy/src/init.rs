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

use clap::Args;
use faultline_policy::contract::{self, init_flag};

pub mod apply;
pub mod backend;
pub mod config;
pub mod rules;

#[cfg(test)]
mod tests;

use apply::ApplyError;
use backend::{Backend, BackendChoice, Ipv6Mode};
use config::CaptureConfig;
use rules::{Family, NatState};

/// Flags of `faultline-proxy init` (the webhook builds exactly this command line).
#[derive(Debug, Clone, Args)]
#[command(after_help = "Examples:\n  \
faultline-proxy init --dry-run                          # print the iptables-restore input\n  \
faultline-proxy init --exclude-inbound-ports 8081,9000-9010  # let these bypass the proxy\n  \
faultline-proxy init --include-inbound-ports 8080       # capture only inbound port 8080\n  \
faultline-proxy init --clean                            # remove every faultline rule")]
pub struct InitArgs {
    /// Port the proxy accepts redirected inbound connections on.
    #[arg(long = init_flag::INBOUND_CAPTURE_PORT, value_name = "PORT", default_value_t = contract::INBOUND_CAPTURE_PORT)]
    pub inbound_capture_port: u16,
    /// Port the proxy accepts redirected outbound connections on.
    #[arg(long = init_flag::OUTBOUND_CAPTURE_PORT, value_name = "PORT", default_value_t = contract::OUTBOUND_CAPTURE_PORT)]
    pub outbound_capture_port: u16,
    /// UID the proxy runs as; its own connections are never redirected.
    #[arg(long = init_flag::PROXY_UID, value_name = "UID", default_value_t = contract::PROXY_UID)]
    pub proxy_uid: u32,
    /// GID the proxy runs as; its own connections are never redirected.
    #[arg(long = init_flag::PROXY_GID, value_name = "GID", default_value_t = contract::PROXY_GID)]
    pub proxy_gid: u32,
    /// The proxy's admin port (health, metrics); never redirected.
    #[arg(long = init_flag::ADMIN_PORT, value_name = "PORT", default_value_t = contract::ADMIN_PORT)]
    pub admin_port: u16,
    /// Inbound ports to capture: "*" for all, or a list like 8080,9000-9010 (empty: none).
    #[arg(long = init_flag::INCLUDE_INBOUND_PORTS, value_name = "LIST", default_value = "*")]
    pub include_inbound_ports: String,
    /// Inbound ports that bypass the proxy, e.g. 8081,9000-9010.
    #[arg(long = init_flag::EXCLUDE_INBOUND_PORTS, value_name = "LIST", default_value = "")]
    pub exclude_inbound_ports: String,
    /// Outbound destination ports that bypass the proxy, e.g. 5432,6379.
    #[arg(long = init_flag::EXCLUDE_OUTBOUND_PORTS, value_name = "LIST", default_value = "")]
    pub exclude_outbound_ports: String,
    /// Outbound destination networks that bypass the proxy, e.g. 169.254.169.254/32,fd00::/8.
    #[arg(long = init_flag::EXCLUDE_OUTBOUND_CIDRS, value_name = "LIST", default_value = "")]
    pub exclude_outbound_cidrs: String,
    /// iptables backend; auto uses the one that already has rules here, else nft.
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,
    /// Mirror the rules for IPv6 with ip6tables; auto does so when the pod has a global IPv6 address.
    #[arg(long, value_enum, default_value_t = Ipv6Mode::Auto)]
    pub ipv6: Ipv6Mode,
    /// Print the iptables-restore input instead of applying it (needs no privileges).
    #[arg(long)]
    pub dry_run: bool,
    /// Remove every rule and chain init added (combine with --dry-run to preview).
    #[arg(long)]
    pub clean: bool,
}

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
    let filter = tracing_subscriber::EnvFilter::try_from_env("FAULTLINE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = if std::env::var("FAULTLINE_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
