//! Precompiled matchers used on every request: string patterns (exact,
//! prefix, `*` glob), host names with Kubernetes short forms, and peer
//! sets (CIDRs and resolved pod IPs as integers). None of them allocates
//! while matching.
use std::net::IpAddr;

use crate::PeerIps;
use crate::model::{Cidr, Peer};

/// A string pattern: `*` matches any run of characters (including `/`).
/// Without `*` the pattern is exact; a single trailing `*` is a prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pattern {
    Any,
    Exact(Box<[u8]>),
    Prefix(Box<[u8]>),
    /// Literal pieces between the stars; `parts.len() >= 2`, the first
    /// anchored at the start and the last at the end.
    Glob(Box<[Box<[u8]>]>),
}

impl Pattern {
    pub fn new(pattern: &str) -> Self {
        let bytes = pattern.as_bytes();
        let stars = bytes.iter().filter(|b| **b == b'*').count();
        if bytes.iter().all(|b| *b == b'*') && stars > 0 {
            return Self::Any;
        }
        match stars {
            0 => Self::Exact(bytes.into()),
            1 if bytes.last() == Some(&b'*') => Self::Prefix(bytes[..bytes.len() - 1].into()),
            _ => Self::Glob(bytes.split(|b| *b == b'*').map(Box::from).collect()),
        }
    }

    pub fn matches(&self, text: &[u8]) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(p) => text == &p[..],
            Self::Prefix(p) => text.starts_with(p),
            Self::Glob(parts) => glob_matches(parts, text),
        }
    }
}

fn glob_matches(parts: &[Box<[u8]>], text: &[u8]) -> bool {
    let (Some((first, rest)), Some(last)) = (parts.split_first(), parts.last()) else {
        return false;
    };
    let Some(middle) = rest.len().checked_sub(1).map(|n| &rest[..n]) else {
        return text == &first[..];
    };
    if text.len() < first.len() + last.len() || !text.starts_with(first) || !text.ends_with(last) {
        return false;
    }
    // Leftmost placement of each middle piece is optimal for `*`-only globs.
    let mut window = &text[first.len()..text.len() - last.len()];
    for piece in middle {
        if piece.is_empty() {
            continue;
        }
        match find(window, piece) {
            Some(at) => window = &window[at + piece.len()..],
            None => return false,
        }
    }
    true
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A destination host: exact (case-insensitive), `*.suffix` wildcard, and
/// for cluster service names (`svc.ns.svc.cluster.local`) also the short
/// forms clients use (`svc`, `svc.ns`, `svc.ns.svc`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostMatcher {
    names: Box<[Box<str>]>,
    /// `.example.com` for `*.example.com`.
    suffix: Option<Box<str>>,
}

const CLUSTER_SUFFIX: &str = ".svc.cluster.local";

impl HostMatcher {
    pub fn new(host: &str) -> Self {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if let Some(rest) = host.strip_prefix('*') {
            return Self {
                names: Box::new([]),
                suffix: Some(rest.into()),
            };
        }
        let mut names = vec![host.clone().into_boxed_str()];
        if let Some(svc_ns) = host.strip_suffix(CLUSTER_SUFFIX)
            && let Some((svc, _ns)) = svc_ns.split_once('.')
        {
            names.push(format!("{svc_ns}.svc").into());
            names.push(svc_ns.into());
            names.push(svc.into());
        }
        Self {
            names: names.into(),
            suffix: None,
        }
    }

    /// `authority` may carry user info (`user@`), a port (`host:8080`,
    /// `[::1]:80`) and any case.
    pub fn matches(&self, authority: &str) -> bool {
        let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let host = strip_port(authority).trim_end_matches('.');
        if let Some(suffix) = &self.suffix {
            return host.len() > suffix.len()
                && host.as_bytes()[host.len() - suffix.len()..]
                    .eq_ignore_ascii_case(suffix.as_bytes());
        }
        self.names.iter().any(|n| n.eq_ignore_ascii_case(host))
    }
}

fn strip_port(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split_once(']').map_or(rest, |(h, _)| h);
    }
    match authority.rsplit_once(':') {
        // More than one colon without brackets: a bare IPv6 address.
        Some((h, _)) if !h.contains(':') => h,
        _ => authority,
    }
}

/// An IP as a 128-bit integer, IPv4 (and IPv4-mapped IPv6) in the mapped
/// range, so both families compare with one representation.
pub fn ip_bits(ip: IpAddr) -> u128 {
    match ip.to_canonical() {
        IpAddr::V4(a) => a.to_ipv6_mapped().to_bits(),
        IpAddr::V6(a) => a.to_bits(),
    }
}

/// Peers: any IP inside one of the CIDRs, or one of the resolved pod IPs.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct PeerMatcher {
    /// (network, mask) pairs.
    cidrs: Box<[(u128, u128)]>,
    /// Sorted, for binary search.
    ips: Box<[u128]>,
}

impl PeerMatcher {
    pub fn new(peer: &Peer, peers: &PeerIps) -> Self {
        let cidrs = peer.cidrs.iter().map(|c: &Cidr| c.to_bits()).collect();
        let mut ips: Vec<u128> = peer
            .pod_selector
            .as_ref()
            .and_then(|sel| peers.get(&sel.key()))
            .map(|ips| ips.iter().copied().map(ip_bits).collect())
            .unwrap_or_default();
        ips.sort_unstable();
        ips.dedup();
        Self {
            cidrs,
            ips: ips.into(),
        }
    }

    pub fn matches(&self, ip: IpAddr) -> bool {
        let bits = ip_bits(ip);
        self.cidrs.iter().any(|(net, mask)| bits & mask == *net)
            || self.ips.binary_search(&bits).is_ok()
    }
}
