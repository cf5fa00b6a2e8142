//! Parsing and checking single settings for `config.rs`; every error names
//! the flag and the variable it came from.
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use super::*;

pub(super) fn controller_config(
    args: &RunArgs,
    get: &impl Fn(&Option<String>, &str) -> Option<String>,
    url: String,
) -> Result<ControllerConfig, ConfigError> {
    let parsed: http::Uri = url.parse().map_err(|_| {
        invalid(
            "--controller-url",
            ENV_CONTROLLER_URL,
            &url,
            "an https:// URL",
        )
    })?;
    if parsed.scheme_str() != Some("https") || parsed.authority().is_none() {
        return Err(invalid(
            "--controller-url",
            ENV_CONTROLLER_URL,
            &url,
            "an https:// URL",
        ));
    }
    let ca = match (
        get(&args.ca_pem, ENV_CA_PEM),
        get(&args.ca_file, ENV_CA_FILE),
    ) {
        (Some(pem), _) => {
            if !pem.contains("-----BEGIN CERTIFICATE-----") {
                return Err(invalid(
                    "--ca-pem",
                    ENV_CA_PEM,
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
            get(&args.token_file, ENV_TOKEN_FILE).unwrap_or_else(|| DEFAULT_TOKEN_FILE.to_owned()),
        ),
        ca,
        pod_name: get(&args.pod_name, ENV_POD_NAME),
        pod_namespace: get(&args.pod_namespace, ENV_POD_NAMESPACE),
        pod_ip: get(&args.pod_ip, ENV_POD_IP),
        service_account: get(&args.service_account, ENV_SERVICE_ACCOUNT),
    })
}

pub(super) fn invalid(
    flag: &'static str,
    env: &'static str,
    value: &str,
    expected: &'static str,
) -> ConfigError {
    ConfigError::Invalid {
        flag,
        env,
        value: value.to_owned(),
        expected,
    }
}

pub(super) fn parse_addr(
    flag: &'static str,
    env: &'static str,
    value: Option<&str>,
    default: &str,
) -> Result<SocketAddr, ConfigError> {
    let value = value.unwrap_or(default);
    value
        .parse()
        .map_err(|_| invalid(flag, env, value, "an IP:port address such as 0.0.0.0:15400"))
}

/// The upstream may be a name (`localhost:8080`); it is resolved once, at
/// startup, so a typo fails before anything is bound.
pub(super) fn resolve_addr(
    flag: &'static str,
    env: &'static str,
    value: &str,
) -> Result<SocketAddr, ConfigError> {
    if let Ok(addr) = value.parse() {
        return Ok(addr);
    }
    if !value.contains(':') {
        return Err(invalid(flag, env, value, "a HOST:PORT address"));
    }
    let mut addrs = value
        .to_socket_addrs()
        .map_err(|source| ConfigError::Resolve {
            flag,
            env,
            value: value.to_owned(),
            source,
        })?;
    addrs
        .next()
        .ok_or_else(|| invalid(flag, env, value, "a HOST:PORT address that resolves"))
}

/// A comma-separated list of TCP ports (1-65535); none when unset.
pub(super) fn parse_ports(
    flag: &'static str,
    env: &'static str,
    value: Option<String>,
) -> Result<Vec<u16>, ConfigError> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    value
        .split(',')
        .map(|p| match p.trim().parse::<u16>() {
            Ok(port) if port > 0 => Ok(port),
            _ => Err(invalid(
                flag,
                env,
                &value,
                "a comma-separated list of ports (1-65535)",
            )),
        })
        .collect()
}

pub(super) fn parse_num(
    flag: &'static str,
    env: &'static str,
    value: Option<String>,
    default: u64,
) -> Result<u64, ConfigError> {
    match value {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| invalid(flag, env, &v, "a non-negative integer")),
    }
}
