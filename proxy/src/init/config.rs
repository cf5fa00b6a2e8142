//! Validated capture settings: turns the `init` flags into a [`CaptureConfig`]
//! before anything touches the system, so a typo in a port list never leaves
//! a half-written rule set behind.
use std::net::IpAddr;

pub use faultline_policy::Cidr;
use faultline_policy::contract::init_flag;
pub use faultline_policy::contract::{InboundPorts, PortRange};

use super::args::InitArgs;

/// Why the `init` flags were rejected (exit code 64).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error(
        "failed to parse --{flag}: {value:?} is not a port or port range (1-65535, e.g. 8080 or 8000-8010)"
    )]
    BadPort { flag: &'static str, value: String },
    #[error("failed to parse --{flag}: range {value:?} ends before it starts")]
    BackwardsRange { flag: &'static str, value: String },
    #[error(
        "failed to parse --{flag}: \"*\" (all ports) is only allowed on its own in --include-inbound-ports"
    )]
    BadWildcard { flag: &'static str },
    #[error(
        "failed to parse --exclude-outbound-cidrs: {value:?} is not an IP address or CIDR (e.g. 10.0.0.0/8, fd00::/8)"
    )]
    BadCidr { value: String },
    #[error("invalid --{flag}: port 0 cannot be used")]
    ZeroPort { flag: &'static str },
    #[error(
        "invalid flags: --inbound-capture-port and --outbound-capture-port are both {0}; they must differ"
    )]
    SameCapturePorts(u16),
    #[error("invalid flags: --admin-port {0} is also a capture port")]
    AdminIsCapturePort(u16),
    #[error("invalid flags: --dns-capture-port {0} is also the admin port or a capture port")]
    DnsPortTaken(u16),
}

/// Everything the rule generator needs; built only by [`CaptureConfig::from_args`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureConfig {
    pub inbound_capture_port: u16,
    pub outbound_capture_port: u16,
    pub proxy_uid: u32,
    pub proxy_gid: u32,
    pub admin_port: u16,
    pub include_inbound: InboundPorts,
    pub exclude_inbound: Vec<PortRange>,
    pub exclude_outbound: Vec<PortRange>,
    pub exclude_outbound_cidrs: Vec<Cidr>,
    /// `--capture-dns`: where DNS queries are redirected.
    pub dns_capture_port: Option<u16>,
}

impl CaptureConfig {
    pub fn from_args(args: &InitArgs) -> Result<Self, ConfigError> {
        for (flag, port) in [
            (init_flag::INBOUND_CAPTURE_PORT, args.inbound_capture_port),
            (init_flag::OUTBOUND_CAPTURE_PORT, args.outbound_capture_port),
            (init_flag::ADMIN_PORT, args.admin_port),
        ] {
            if port == 0 {
                return Err(ConfigError::ZeroPort { flag });
            }
        }
        if args.inbound_capture_port == args.outbound_capture_port {
            return Err(ConfigError::SameCapturePorts(args.inbound_capture_port));
        }
        if args.admin_port == args.inbound_capture_port
            || args.admin_port == args.outbound_capture_port
        {
            return Err(ConfigError::AdminIsCapturePort(args.admin_port));
        }
        let dns_capture_port = args.capture_dns.then_some(args.dns_capture_port);
        if let Some(port) = dns_capture_port {
            if port == 0 {
                return Err(ConfigError::ZeroPort {
                    flag: init_flag::DNS_CAPTURE_PORT,
                });
            }
            if [
                args.admin_port,
                args.inbound_capture_port,
                args.outbound_capture_port,
            ]
            .contains(&port)
            {
                return Err(ConfigError::DnsPortTaken(port));
            }
        }
        let include_inbound = if args.include_inbound_ports.trim() == "*" {
            InboundPorts::All
        } else {
            InboundPorts::Only(parse_ports(
                init_flag::INCLUDE_INBOUND_PORTS,
                &args.include_inbound_ports,
            )?)
        };
        Ok(Self {
            inbound_capture_port: args.inbound_capture_port,
            outbound_capture_port: args.outbound_capture_port,
            proxy_uid: args.proxy_uid,
            proxy_gid: args.proxy_gid,
            admin_port: args.admin_port,
            include_inbound,
            exclude_inbound: parse_ports(
                init_flag::EXCLUDE_INBOUND_PORTS,
                &args.exclude_inbound_ports,
            )?,
            exclude_outbound: parse_ports(
                init_flag::EXCLUDE_OUTBOUND_PORTS,
                &args.exclude_outbound_ports,
            )?,
            exclude_outbound_cidrs: parse_cidrs(&args.exclude_outbound_cidrs)?,
            dns_capture_port,
        })
    }
}

/// Splits a comma-separated list, ignoring blanks (so `"8080,"` and `""` are fine).
fn items(list: &str) -> impl Iterator<Item = &str> {
    list.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
}

/// Parses `8080,9000-9010` into sorted ranges, overlapping and adjacent ones
/// merged (`80,81,82` is `80-82`), so a long list costs a handful of rules.
pub fn parse_ports(flag: &'static str, list: &str) -> Result<Vec<PortRange>, ConfigError> {
    let mut out: Vec<PortRange> = Vec::new();
    for item in items(list) {
        if item == "*" {
            return Err(ConfigError::BadWildcard { flag });
        }
        let bad = || ConfigError::BadPort {
            flag,
            value: item.to_string(),
        };
        let port = |text: &str| -> Result<u16, ConfigError> {
            match text.trim().parse::<u16>() {
                Ok(0) | Err(_) => Err(bad()),
                Ok(port) => Ok(port),
            }
        };
        let range = match item.split_once('-') {
            Some((first, last)) => PortRange::new(port(first)?, port(last)?),
            None => PortRange::single(port(item)?),
        };
        if range.start > range.end {
            return Err(ConfigError::BackwardsRange {
                flag,
                value: item.to_string(),
            });
        }
        out.push(range);
    }
    Ok(merge(out))
}

/// Sorts `ranges` and merges those that overlap or touch.
pub fn merge(mut ranges: Vec<PortRange>) -> Vec<PortRange> {
    ranges.sort_by_key(|r| (r.start, r.end));
    let mut out: Vec<PortRange> = Vec::with_capacity(ranges.len());
    for range in ranges {
        match out.last_mut() {
            Some(last) if u32::from(range.start) <= u32::from(last.end) + 1 => {
                last.end = last.end.max(range.end);
            }
            _ => out.push(range),
        }
    }
    out
}

/// Parses `10.0.0.0/8,192.168.1.7,fd00::/8`; a bare address is a single host.
pub fn parse_cidrs(list: &str) -> Result<Vec<Cidr>, ConfigError> {
    let mut out: Vec<Cidr> = Vec::new();
    for item in items(list) {
        let bad = || ConfigError::BadCidr {
            value: item.to_string(),
        };
        let (addr, prefix) = match item.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (item, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(text) => text
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(bad)?,
            None => max,
        };
        let cidr = Cidr::masked(addr, prefix);
        if !out.contains(&cidr) {
            out.push(cidr);
        }
    }
    Ok(out)
}
