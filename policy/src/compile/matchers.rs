//! Precompiled matchers used on every request: string patterns (exact,
//! prefix, `*` glob), host names with Kubernetes short forms, and peer
//! sets (CIDRs and resolved pod IPs as integers). None of them allocates
//! while matching.
use std::net::IpAddr;

use memchr::memmem::Finder;

use crate::PeerIps;
use crate::model::{Cidr, Peer};

/// A string pattern: `*` matches any run of characters (including `/`).
/// Without `*` the pattern is exact; a single trailing `*` is a prefix.
/// Matching costs O(pattern + text) whatever the pattern: a client picks
/// the text (a 60 KB path), so a quadratic matcher would let one request
/// hold a worker thread for as long as it likes.
#[derive(Clone, Debug)]
pub enum Pattern {
    Any,
    Exact(Box<[u8]>),
    Prefix(Box<[u8]>),
    Glob(Glob),
}

/// A pattern with stars inside: a literal anchored at the start, literal
/// pieces to find in order, a literal anchored at the end.
#[derive(Clone, Debug)]
pub struct Glob {
    first: Box<[u8]>,
    /// The non-empty pieces between stars, each with a prebuilt substring
    /// searcher (worst case linear: memchr's memmem falls back to Two-Way).
    middle: Box<[Finder<'static>]>,
    last: Box<[u8]>,
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
            _ => Self::Glob(Glob::new(bytes)),
        }
    }

    pub fn matches(&self, text: &[u8]) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(p) => text == &p[..],
            Self::Prefix(p) => text.starts_with(p),
            Self::Glob(glob) => glob.matches_with(text, |finder, window| finder.find(window)),
        }
    }
}

impl Glob {
    /// `pattern` has at least one `*` that is not its last byte.
    fn new(pattern: &[u8]) -> Self {
        let mut pieces: Vec<&[u8]> = pattern.split(|b| *b == b'*').collect();
        let last = pieces.pop().unwrap_or_default();
        let first = if pieces.is_empty() {
            &[][..]
        } else {
            pieces.remove(0)
        };
        Self {
            first: first.into(),
            middle: pieces
                .into_iter()
                .filter(|piece| !piece.is_empty())
                .map(|piece| Finder::new(piece).into_owned())
                .collect(),
            last: last.into(),
        }
    }

    /// `search` finds a piece in a window of the text; tests count the
    /// bytes it is handed.
    fn matches_with(
        &self,
        text: &[u8],
        mut search: impl FnMut(&Finder<'static>, &[u8]) -> Option<usize>,
    ) -> bool {
        let (first, last) = (&self.first[..], &self.last[..]);
        if text.len() < first.len() + last.len()
            || !text.starts_with(first)
            || !text.ends_with(last)
        {
            return false;
        }
        // With `*` as the only wildcard, placing each piece at its leftmost
        // occurrence after the previous one never loses a match, so no
        // byte of the text is searched twice.
        let mut window = &text[first.len()..text.len() - last.len()];
        for finder in &self.middle {
            match search(finder, window) {
                Some(at) => window = &window[at + finder.needle().len()..],
                None => return false,
            }
        }
        true
    }
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
        self.matches_name(strip_port(authority))
    }

    /// A bare host name, as a TLS client sends it in its SNI (no port, no
    /// user info: a `@` or `:` there is part of the name and never matches).
    pub fn matches_name(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.');
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

#[cfg(test)]
mod tests;
