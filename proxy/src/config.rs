//! Runtime configuration of `faultline-proxy run`.
//!
//! Every setting has a flag and a `FAULTLINE_*` environment variable (the
//! webhook injects the variables; people type the flags). Flags win over the
//! environment. [`Config::from_sources`] merges both and validates
//! everything, so `main` can exit 64 before any socket is bound; tests and the
//! e2e crate build a config from an env map with [`Config::from_env`].
//!
//! Layout: this file holds the types and validation, `config/args.rs` the
//! clap flags (with `--help` text), `config/tests.rs` the unit tests.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

mod args;
mod parse;
#[cfg(test)]
mod tests;

pub use args::RunArgs;
use parse::{controller_config, invalid, parse_addr, parse_num, parse_ports, resolve_addr};

pub const ENV_ADMIN_ADDR: &str = "FAULTLINE_ADMIN_ADDR";
pub const ENV_INBOUND_ADDR: &str = "FAULTLINE_INBOUND_ADDR";
pub const ENV_OUTBOUND_ADDR: &str = "FAULTLINE_OUTBOUND_ADDR";
pub const ENV_LISTEN: &str = "FAULTLINE_LISTEN";
pub const ENV_UPSTREAM: &str = "FAULTLINE_UPSTREAM";
pub const ENV_FAULTS_FILE: &str = "FAULTLINE_FAULTS_FILE";
pub const ENV_CONTROLLER_URL: &str = "FAULTLINE_CONTROLLER_URL";
pub const ENV_TOKEN_FILE: &str = "FAULTLINE_TOKEN_FILE";
pub const ENV_CA_PEM: &str = "FAULTLINE_CA_PEM";
pub const ENV_CA_FILE: &str = "FAULTLINE_CA_FILE";
pub const ENV_POD_NAME: &str = "FAULTLINE_POD_NAME";
pub const ENV_POD_NAMESPACE: &str = "FAULTLINE_POD_NAMESPACE";
pub const ENV_POD_IP: &str = "FAULTLINE_POD_IP";
pub const ENV_SERVICE_ACCOUNT: &str = "FAULTLINE_SERVICE_ACCOUNT";
pub const ENV_LOG: &str = "FAULTLINE_LOG";
pub const ENV_LOG_FORMAT: &str = "FAULTLINE_LOG_FORMAT";
pub const ENV_DRAIN_SECONDS: &str = "FAULTLINE_DRAIN_SECONDS";
pub const ENV_MAX_CONNECTIONS: &str = "FAULTLINE_MAX_CONNECTIONS";
pub const ENV_DETECT_TIMEOUT_MS: &str = "FAULTLINE_DETECT_TIMEOUT_MS";
pub const ENV_READY_GRACE_SECONDS: &str = "FAULTLINE_READY_GRACE_SECONDS";
pub const ENV_WORKERS: &str = "FAULTLINE_WORKERS";
pub const ENV_PROBE_PORTS: &str = "FAULTLINE_PROBE_PORTS";
pub const ENV_CONTROL: &str = "FAULTLINE_CONTROL";
pub const ENV_APP_PORTS: &str = "FAULTLINE_APP_PORTS";
pub const ENV_WIND_DOWN_SECONDS: &str = "FAULTLINE_WIND_DOWN_SECONDS";
pub const ENV_CONTROL_TOKEN: &str = "FAULTLINE_CONTROL_TOKEN";

pub const DEFAULT_ADMIN_ADDR: &str = "0.0.0.0:15400";
pub const DEFAULT_STANDALONE_ADMIN_ADDR: &str = "127.0.0.1:15400";
pub const DEFAULT_INBOUND_ADDR: &str = "0.0.0.0:15406";
pub const DEFAULT_OUTBOUND_ADDR: &str = "0.0.0.0:15401";
pub const DEFAULT_TOKEN_FILE: &str = "/var/run/secrets/faultline/token";
pub const DEFAULT_LOG: &str = "info";
pub const DEFAULT_DRAIN_SECONDS: u64 = 5;
pub const DEFAULT_MAX_CONNECTIONS: usize = 20_000;
pub const DEFAULT_DETECT_TIMEOUT_MS: u64 = 200;
pub const DEFAULT_READY_GRACE_SECONDS: u64 = 10;

/// Why a configuration was refused. Each message names the flag and variable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("failed to parse {flag} / {env}: {value:?} is not {expected}")]
    Invalid {
        flag: &'static str,
        env: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("failed to resolve {flag} / {env} {value:?}")]
    Resolve {
        flag: &'static str,
        env: &'static str,
        value: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Conflict(&'static str),
}

/// Where connections come from and go to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// In a pod, behind the iptables redirection: the destination of every
    /// connection is recovered with `SO_ORIGINAL_DST`.
    Sidecar {
        inbound: SocketAddr,
        outbound: SocketAddr,
    },
    /// Without Kubernetes: one listener in front of one upstream, treated as
    /// inbound traffic to the upstream's port.
    Standalone {
        listen: SocketAddr,
        upstream: SocketAddr,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Plain,
    Json,
}

/// Where the controller's CA certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaSource {
    Pem(String),
    File(PathBuf),
    /// The platform roots (a controller with a publicly trusted certificate).
    System,
}

/// Settings of the policy stream client (`crate::client`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerConfig {
    pub url: String,
    pub token_file: PathBuf,
    pub ca: CaSource,
    pub pod_name: Option<String>,
    pub pod_namespace: Option<String>,
    pub pod_ip: Option<String>,
    pub service_account: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub mode: Mode,
    pub admin_addr: SocketAddr,
    /// A policy file to load and watch (standalone mode, or a sidecar
    /// without a controller).
    pub faults_file: Option<PathBuf>,
    pub controller: Option<ControllerConfig>,
    pub log_filter: String,
    pub log_format: LogFormat,
    /// How long in-flight requests may run after SIGTERM.
    pub drain: Duration,
    /// Connections over this many are closed as soon as they are accepted.
    pub max_connections: usize,
    /// How long to wait for a client's first bytes before treating the
    /// connection as raw TCP (server-first protocols send nothing).
    pub detect_timeout: Duration,
    /// In controller mode, how long /readyz waits for a first policy before
    /// reporting ready anyway (a controller outage must not block the pod).
    pub ready_grace: Duration,
    /// Worker threads that run connections (default: the CPUs available,
    /// which in a pod is the CPU limit).
    pub workers: usize,
    /// The standalone proxy's control API (`PUT`/`DELETE /policy`): `None`
    /// when off (the default); `Some(token)` when on, with an optional token.
    pub control: Option<Option<String>>,
    /// The app's own listening ports (set by the webhook): after SIGTERM
    /// the proxy keeps serving until none of them accepts any more.
    pub app_ports: Vec<u16>,
    /// After SIGTERM in a pod, keep carrying the app's traffic at most this
    /// long (the webhook sets it from the pod's grace period), then drain.
    pub wind_down: Duration,
    /// App ports the admin server checks for rewritten `tcpSocket` probes
    /// (`/probe/tcp/<port>`); set by the webhook, empty by default.
    pub probe_ports: Vec<u16>,
}

impl Config {
    /// Builds a config from environment variables only (no flags).
    pub fn from_env<I, K, V>(env: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        Self::from_sources(&RunArgs::default(), env)
    }

    /// Merges flags over environment variables and validates the result.
    pub fn from_sources<I, K, V>(args: &RunArgs, env: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let env: std::collections::HashMap<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.as_ref().starts_with("FAULTLINE_"))
            .map(|(k, v)| (k.as_ref().to_owned(), v.as_ref().to_owned()))
            .collect();
        let get = |flag: &Option<String>, key: &str| -> Option<String> {
            flag.clone()
                .or_else(|| env.get(key).cloned())
                .filter(|v| !v.trim().is_empty())
        };

        let listen = get(&args.listen, ENV_LISTEN);
        let upstream = get(&args.upstream, ENV_UPSTREAM);
        // Off-cluster the admin server stays on loopback unless asked: in a
        // pod it must be reachable (probes, scraping, `kubectl fault status`).
        let default_admin = if listen.is_some() {
            DEFAULT_STANDALONE_ADMIN_ADDR
        } else {
            DEFAULT_ADMIN_ADDR
        };
        let admin_addr = parse_addr(
            "--admin-addr",
            ENV_ADMIN_ADDR,
            get(&args.admin_addr, ENV_ADMIN_ADDR).as_deref(),
            default_admin,
        )?;
        let mode = match (listen, upstream) {
            (Some(listen), Some(upstream)) => Mode::Standalone {
                listen: parse_addr("--listen", ENV_LISTEN, Some(&listen), "")?,
                upstream: resolve_addr("--upstream", ENV_UPSTREAM, &upstream)?,
            },
            (None, None) => Mode::Sidecar {
                inbound: parse_addr(
                    "--inbound-addr",
                    ENV_INBOUND_ADDR,
                    get(&args.inbound_addr, ENV_INBOUND_ADDR).as_deref(),
                    DEFAULT_INBOUND_ADDR,
                )?,
                outbound: parse_addr(
                    "--outbound-addr",
                    ENV_OUTBOUND_ADDR,
                    get(&args.outbound_addr, ENV_OUTBOUND_ADDR).as_deref(),
                    DEFAULT_OUTBOUND_ADDR,
                )?,
            },
            _ => {
                return Err(ConfigError::Conflict(
                    "standalone mode needs both --listen (FAULTLINE_LISTEN) and --upstream (FAULTLINE_UPSTREAM)",
                ));
            }
        };

        let faults_file = get(&args.faults, ENV_FAULTS_FILE).map(PathBuf::from);
        let controller = get(&args.controller_url, ENV_CONTROLLER_URL)
            .map(|url| controller_config(args, &get, url))
            .transpose()?;
        if faults_file.is_some() && controller.is_some() {
            return Err(ConfigError::Conflict(
                "--faults (FAULTLINE_FAULTS_FILE) and --controller-url (FAULTLINE_CONTROLLER_URL) are exclusive: a policy has one source",
            ));
        }

        let log_format = match get(&args.log_format, ENV_LOG_FORMAT).as_deref() {
            None | Some("plain") => LogFormat::Plain,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(invalid(
                    "--log-format",
                    ENV_LOG_FORMAT,
                    other,
                    "json or plain",
                ));
            }
        };
        let log_filter = get(&args.log, ENV_LOG).unwrap_or_else(|| DEFAULT_LOG.to_owned());
        if tracing_subscriber::EnvFilter::try_new(&log_filter).is_err() {
            return Err(invalid(
                "--log",
                ENV_LOG,
                &log_filter,
                "a tracing filter such as info or faultline_proxy=debug",
            ));
        }

        let drain = Duration::from_secs(parse_num(
            "--drain-seconds",
            ENV_DRAIN_SECONDS,
            get(&args.drain_seconds, ENV_DRAIN_SECONDS),
            DEFAULT_DRAIN_SECONDS,
        )?);
        let max_connections = parse_num(
            "--max-connections",
            ENV_MAX_CONNECTIONS,
            get(&args.max_connections, ENV_MAX_CONNECTIONS),
            DEFAULT_MAX_CONNECTIONS as u64,
        )?;
        if max_connections == 0 {
            return Err(invalid(
                "--max-connections",
                ENV_MAX_CONNECTIONS,
                "0",
                "a positive number",
            ));
        }
        let detect_timeout = Duration::from_millis(parse_num(
            "--detect-timeout-ms",
            ENV_DETECT_TIMEOUT_MS,
            get(&args.detect_timeout_ms, ENV_DETECT_TIMEOUT_MS),
            DEFAULT_DETECT_TIMEOUT_MS,
        )?);
        let ready_grace = Duration::from_secs(parse_num(
            "--ready-grace-seconds",
            ENV_READY_GRACE_SECONDS,
            get(&args.ready_grace_seconds, ENV_READY_GRACE_SECONDS),
            DEFAULT_READY_GRACE_SECONDS,
        )?);

        let default_workers = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
        let workers = parse_num(
            "--workers",
            ENV_WORKERS,
            get(&args.workers, ENV_WORKERS),
            default_workers,
        )?;
        if !(1..=1024).contains(&workers) {
            return Err(invalid(
                "--workers",
                ENV_WORKERS,
                &workers.to_string(),
                "a number of threads from 1 to 1024",
            ));
        }

        let control = control_config(args, &get, admin_addr, &faults_file, &controller)?;
        let probe_ports = parse_ports(
            "--probe-ports",
            ENV_PROBE_PORTS,
            get(&args.probe_ports, ENV_PROBE_PORTS),
        )?;

        let app_ports = parse_ports(
            "--app-ports",
            ENV_APP_PORTS,
            get(&args.app_ports, ENV_APP_PORTS),
        )?;
        let wind_down = Duration::from_secs(parse_num(
            "--wind-down-seconds",
            ENV_WIND_DOWN_SECONDS,
            get(&args.wind_down_seconds, ENV_WIND_DOWN_SECONDS),
            0,
        )?);

        Ok(Config {
            app_ports,
            wind_down,
            control,
            probe_ports,
            mode,
            admin_addr,
            faults_file,
            controller,
            log_filter,
            log_format,
            drain,
            max_connections: usize::try_from(max_connections).unwrap_or(usize::MAX),
            detect_timeout,
            ready_grace,
            workers: usize::try_from(workers).unwrap_or(1),
        })
    }
}

/// `--control` / `FAULTLINE_CONTROL`: writes to the policy over the admin
/// server. Only for a standalone proxy with no other policy source, and on
/// a loopback admin address unless a token guards it.
fn control_config(
    args: &RunArgs,
    get: &impl Fn(&Option<String>, &str) -> Option<String>,
    admin_addr: SocketAddr,
    faults_file: &Option<PathBuf>,
    controller: &Option<ControllerConfig>,
) -> Result<Option<Option<String>>, ConfigError> {
    let flag = args.control.then(|| "true".to_owned());
    let enabled = match get(&flag, ENV_CONTROL).as_deref() {
        None | Some("false" | "0") => false,
        Some("true" | "1") => true,
        Some(other) => return Err(invalid("--control", ENV_CONTROL, other, "true or false")),
    };
    let token = get(&args.control_token, ENV_CONTROL_TOKEN);
    if !enabled {
        return Ok(None);
    }
    if controller.is_some() {
        return Err(ConfigError::Conflict(
            "--control (FAULTLINE_CONTROL) is for the standalone proxy: with --controller-url the controller is the source of truth",
        ));
    }
    if faults_file.is_some() {
        return Err(ConfigError::Conflict(
            "--control (FAULTLINE_CONTROL) and --faults (FAULTLINE_FAULTS_FILE) are exclusive: a policy has one source",
        ));
    }
    if token.is_none() && !admin_addr.ip().is_loopback() {
        return Err(ConfigError::Conflict(
            "--control on a non-loopback --admin-addr needs --control-token (FAULTLINE_CONTROL_TOKEN): anyone who can reach it could change the faults",
        ));
    }
    Ok(Some(token))
}
