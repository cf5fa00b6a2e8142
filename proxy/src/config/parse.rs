//! Parsing and checking single settings for `config.rs`; every error names
//! the flag and the variable it came from.
use std::net::{SocketAddr, ToSocketAddrs};

use super::error::ConfigError;

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
    default: SocketAddr,
) -> Result<SocketAddr, ConfigError> {
    let Some(value) = value else {
        return Ok(default);
    };
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
