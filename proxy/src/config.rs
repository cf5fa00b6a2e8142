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
mod error;
mod parse;
#[cfg(test)]
mod tests;

pub use args::RunArgs;
pub use error::ConfigError;
use parse::{invalid, parse_addr, parse_num, parse_ports, resolve_addr};

pub use faultline_policy::contract::env;
use faultline_policy::contract::{ADMIN_PORT, INBOUND_CAPTURE_PORT, OUTBOUND_CAPTURE_PORT};

/// The DNS listener's bounds (docs/resource-budget.md).
pub const DNS_MAX_IN_FLIGHT: usize = 1024;
pub const DNS_TIMEOUT: Duration = Duration::from_secs(5);
pub const DNS_MAX_TCP_CONNECTIONS: usize = 256;
pub const DNS_TCP_IDLE: Duration = Duration::from_secs(10);

pub const DEFAULT_LOG: &str = "info";
pub const DEFAULT_DRAIN_SECONDS: u64 = 5;
/// What fits the injected 256Mi memory limit with half of it to spare: the
/// costliest connection measured (an HTTP/1.1 request in flight with its
/// upstream connection, 27 KiB; raw TCP 21 KiB; an idle keep-alive one
/// 3.4 KiB) rounded up to 32 KiB, into 128 MiB (docs/resource-budget.md).
pub const DEFAULT_MAX_CONNECTIONS: usize = 4_096;
pub const DEFAULT_DETECT_TIMEOUT_MS: u64 = 200;
pub const DEFAULT_READY_GRACE_SECONDS: u64 = 10;

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

/// Settings of the policy stream client (`crate::source::stream`).
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

/// The DNS listener (`--dns-addr`): UDP and TCP on one port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    pub addr: SocketAddr,
    /// Where clean queries go; `None`: the first nameserver of
    /// `/etc/resolv.conf`, read when the listener is bound.
    pub upstream: Option<SocketAddr>,
    /// Queries being faulted or forwarded at once; more are dropped (the
    /// client's resolver retries).
    pub max_in_flight: usize,
    /// How long the resolver may take to answer a forwarded query.
    pub timeout: Duration,
    pub max_tcp_connections: usize,
    /// A DNS-over-TCP connection with no query for this long is closed.
    pub tcp_idle: Duration,
}

impl DnsConfig {
    pub fn new(addr: SocketAddr, upstream: Option<SocketAddr>) -> Self {
        Self {
            addr,
            upstream,
            max_in_flight: DNS_MAX_IN_FLIGHT,
            timeout: DNS_TIMEOUT,
            max_tcp_connections: DNS_MAX_TCP_CONNECTIONS,
            tcp_idle: DNS_TCP_IDLE,
        }
    }
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
    /// The DNS listener, where the pod's DNS is captured.
    pub dns: Option<DnsConfig>,
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

        let listen = get(&args.listen, env::LISTEN);
        let upstream = get(&args.upstream, env::UPSTREAM);
        // Off-cluster the admin server stays on loopback unless asked: in a
        // pod it must be reachable (probes, scraping, `kubectl fault status`).
        let default_admin = if listen.is_some() {
            SocketAddr::from(([127, 0, 0, 1], ADMIN_PORT))
        } else {
            wildcard(ADMIN_PORT)
        };
        let admin_addr = parse_addr(
            "--admin-addr",
            env::ADMIN_ADDR,
            get(&args.admin_addr, env::ADMIN_ADDR).as_deref(),
            default_admin,
        )?;
        let mode = match (listen, upstream) {
            (Some(listen), Some(upstream)) => Mode::Standalone {
                listen: parse_addr("--listen", env::LISTEN, Some(&listen), wildcard(0))?,
                upstream: resolve_addr("--upstream", env::UPSTREAM, &upstream)?,
            },
            (None, None) => Mode::Sidecar {
                inbound: parse_addr(
                    "--inbound-addr",
                    env::INBOUND_ADDR,
                    get(&args.inbound_addr, env::INBOUND_ADDR).as_deref(),
                    wildcard(INBOUND_CAPTURE_PORT),
                )?,
                outbound: parse_addr(
                    "--outbound-addr",
                    env::OUTBOUND_ADDR,
                    get(&args.outbound_addr, env::OUTBOUND_ADDR).as_deref(),
                    wildcard(OUTBOUND_CAPTURE_PORT),
                )?,
            },
            _ => {
                return Err(ConfigError::Conflict(
                    "standalone mode needs both --listen (FAULTLINE_LISTEN) and --upstream (FAULTLINE_UPSTREAM)",
                ));
            }
        };

        let faults_file = get(&args.faults, env::FAULTS_FILE).map(PathBuf::from);
        let controller = get(&args.controller_url, env::CONTROLLER_URL)
            .map(|url| controller_config(args, &get, url))
            .transpose()?;
        if faults_file.is_some() && controller.is_some() {
            return Err(ConfigError::Conflict(
                "--faults (FAULTLINE_FAULTS_FILE) and --controller-url (FAULTLINE_CONTROLLER_URL) are exclusive: a policy has one source",
            ));
        }

        let log_format = match get(&args.log_format, env::LOG_FORMAT).as_deref() {
            None | Some("plain") => LogFormat::Plain,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(invalid(
                    "--log-format",
                    env::LOG_FORMAT,
                    other,
                    "json or plain",
                ));
            }
        };
        let log_filter = get(&args.log, env::LOG).unwrap_or_else(|| DEFAULT_LOG.to_owned());
        if tracing_subscriber::EnvFilter::try_new(&log_filter).is_err() {
            return Err(invalid(
                "--log",
                env::LOG,
                &log_filter,
                "a tracing filter such as info or faultline_proxy=debug",
            ));
        }

        let drain = Duration::from_secs(parse_num(
            "--drain-seconds",
            env::DRAIN_SECONDS,
            get(&args.drain_seconds, env::DRAIN_SECONDS),
            DEFAULT_DRAIN_SECONDS,
        )?);
        let max_connections = parse_num(
            "--max-connections",
            env::MAX_CONNECTIONS,
            get(&args.max_connections, env::MAX_CONNECTIONS),
            DEFAULT_MAX_CONNECTIONS as u64,
        )?;
        if max_connections == 0 {
            return Err(invalid(
                "--max-connections",
                env::MAX_CONNECTIONS,
                "0",
                "a positive number",
            ));
        }
        let detect_timeout = Duration::from_millis(parse_num(
            "--detect-timeout-ms",
            env::DETECT_TIMEOUT_MS,
            get(&args.detect_timeout_ms, env::DETECT_TIMEOUT_MS),
            DEFAULT_DETECT_TIMEOUT_MS,
        )?);
        let ready_grace = Duration::from_secs(parse_num(
            "--ready-grace-seconds",
            env::READY_GRACE_SECONDS,
            get(&args.ready_grace_seconds, env::READY_GRACE_SECONDS),
            DEFAULT_READY_GRACE_SECONDS,
        )?);

        let default_workers = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
        let workers = parse_num(
            "--workers",
            env::WORKERS,
            get(&args.workers, env::WORKERS),
            default_workers,
        )?;
        if !(1..=1024).contains(&workers) {
            return Err(invalid(
                "--workers",
                env::WORKERS,
                &workers.to_string(),
                "a number of threads from 1 to 1024",
            ));
        }

        let control = control_config(args, &get, admin_addr, &faults_file, &controller)?;
        let probe_ports = parse_ports(
            "--probe-ports",
            env::PROBE_PORTS,
            get(&args.probe_ports, env::PROBE_PORTS),
        )?;

        let app_ports = parse_ports(
            "--app-ports",
            env::APP_PORTS,
            get(&args.app_ports, env::APP_PORTS),
        )?;
        let wind_down = Duration::from_secs(parse_num(
            "--wind-down-seconds",
            env::WIND_DOWN_SECONDS,
            get(&args.wind_down_seconds, env::WIND_DOWN_SECONDS),
            0,
        )?);

        let dns = dns_config(args, &get)?;

        Ok(Config {
            dns,
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

/// `0.0.0.0:port`, where the sidecar's listeners bind by default.
fn wildcard(port: u16) -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], port))
}

fn controller_config(
    args: &RunArgs,
    get: &impl Fn(&Option<String>, &str) -> Option<String>,
    url: String,
) -> Result<ControllerConfig, ConfigError> {
    let parsed: http::Uri = url.parse().map_err(|_| {
        invalid(
            "--controller-url",
            env::CONTROLLER_URL,
            &url,
            "an https:// URL",
        )
    })?;
    if parsed.scheme_str() != Some("https") || parsed.authority().is_none() {
        return Err(invalid(
            "--controller-url",
            env::CONTROLLER_URL,
            &url,
            "an https:// URL",
        ));
    }
    let ca = match (
        get(&args.ca_pem, env::CA_PEM),
        get(&args.ca_file, env::CA_FILE),
    ) {
        (Some(pem), _) => {
            if !pem.contains("-----BEGIN CERTIFICATE-----") {
                return Err(invalid(
                    "--ca-pem",
                    env::CA_PEM,
                    "<pem>",
                    "a PEM certificate",
                ));
            }
            CaSource::Pem(pem)
        }
        (None, Some(file)) => CaSource::File(PathBuf::from(file)),
        (None, None) => CaSource::System,
    };
    Ok(ControllerConfig {
        url,
        token_file: PathBuf::from(
            get(&args.token_file, env::TOKEN_FILE)
                .unwrap_or_else(|| faultline_policy::contract::TOKEN_FILE.to_owned()),
        ),
        ca,
        pod_name: get(&args.pod_name, env::POD_NAME),
        pod_namespace: get(&args.pod_namespace, env::POD_NAMESPACE),
        pod_ip: get(&args.pod_ip, env::POD_IP),
        service_account: get(&args.service_account, env::SERVICE_ACCOUNT),
    })
}

/// `--dns-addr` turns the DNS listener on; `--dns-upstream` alone is an
/// error rather than silently nothing.
fn dns_config(
    args: &RunArgs,
    get: &impl Fn(&Option<String>, &str) -> Option<String>,
) -> Result<Option<DnsConfig>, ConfigError> {
    let upstream = get(&args.dns_upstream, env::DNS_UPSTREAM)
        .map(|value| resolve_addr("--dns-upstream", env::DNS_UPSTREAM, &value))
        .transpose()?;
    let Some(addr) = get(&args.dns_addr, env::DNS_ADDR) else {
        if upstream.is_some() {
            return Err(ConfigError::Conflict(
                "--dns-upstream (FAULTLINE_DNS_UPSTREAM) needs --dns-addr (FAULTLINE_DNS_ADDR): there is no DNS listener without it",
            ));
        }
        return Ok(None);
    };
    let addr = parse_addr("--dns-addr", env::DNS_ADDR, Some(&addr), wildcard(0))?;
    Ok(Some(DnsConfig::new(addr, upstream)))
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
    let enabled = match get(&flag, env::CONTROL).as_deref() {
        None | Some("false" | "0") => false,
        Some("true" | "1") => true,
        Some(other) => return Err(invalid("--control", env::CONTROL, other, "true or false")),
    };
    let token = get(&args.control_token, env::CONTROL_TOKEN);
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
