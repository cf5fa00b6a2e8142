//! Network values of the fault language: ports (`8080`, `"8000-8010"`,
//! lists of both) and CIDRs (`10.0.0.0/8`, `fd00::/8`, a bare address).
//! Like `units`, each checks its syntax while deserializing and serializes
//! back to a form that parses to the same value.
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::units::quoted;

/// An inclusive port range; a single port is `start == end`. The fault
/// language, the capture flags and the port annotations all use it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    pub start: u16,
    pub end: u16,
}

impl PortRange {
    pub fn new(start: u16, end: u16) -> Self {
        Self { start, end }
    }

    pub fn single(port: u16) -> Self {
        Self::new(port, port)
    }

    pub fn contains(self, port: u16) -> bool {
        self.start <= port && port <= self.end
    }

    fn from_number(n: i128) -> Result<Self, String> {
        let port = port_number(n)?;
        Ok(Self {
            start: port,
            end: port,
        })
    }
}

fn port_number(n: i128) -> Result<u16, String> {
    match u16::try_from(n) {
        Ok(p) if p >= 1 => Ok(p),
        _ => Err(format!("{n} is not a port (1-65535)")),
    }
}

impl FromStr for PortRange {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let s = text.trim();
        let bad = || format!("{} is not a port or port range like 8000-8010", quoted(s));
        let (lo, hi) = s.split_once('-').unwrap_or((s, s));
        let lo: i128 = lo.trim().parse().map_err(|_| bad())?;
        let hi: i128 = hi.trim().parse().map_err(|_| bad())?;
        let (start, end) = (port_number(lo)?, port_number(hi)?);
        if start > end {
            return Err(format!("{} is an empty range (start > end)", quoted(s)));
        }
        Ok(Self { start, end })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

/// `match.port`: a port (`8080`), a range (`"8000-8010"`), or a list of both.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Ports(pub Vec<PortRange>);

impl Ports {
    pub fn contains(&self, port: u16) -> bool {
        self.0.iter().any(|r| r.contains(port))
    }
}

impl Serialize for Ports {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        match self.0.as_slice() {
            [one] if one.start == one.end => s.serialize_u16(one.start),
            [one] => s.collect_str(one),
            many => {
                let mut seq = s.serialize_seq(Some(many.len()))?;
                for r in many {
                    if r.start == r.end {
                        seq.serialize_element(&r.start)?;
                    } else {
                        seq.serialize_element(&r.to_string())?;
                    }
                }
                seq.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Ports {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct One;
        impl<'de> Visitor<'de> for One {
            type Value = PortRange;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port (8080) or port range (\"8000-8010\")")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<PortRange, E> {
                PortRange::from_number(v.into()).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<PortRange, E> {
                PortRange::from_number(v.into()).map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PortRange, E> {
                v.parse().map_err(E::custom)
            }
        }
        struct OneDe(PortRange);
        impl<'de> Deserialize<'de> for OneDe {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_any(One).map(OneDe)
            }
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ports;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port (8080), a range (\"8000-8010\") or a list of them")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Ports, E> {
                One.visit_u64(v).map(|r| Ports(vec![r]))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Ports, E> {
                One.visit_i64(v).map(|r| Ports(vec![r]))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Ports, E> {
                One.visit_str(v).map(|r| Ports(vec![r]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Ports, A::Error> {
                let mut out = Vec::new();
                while let Some(OneDe(r)) = seq.next_element()? {
                    out.push(r);
                }
                if out.is_empty() {
                    return Err(de::Error::custom("empty port list"));
                }
                Ok(Ports(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// An IP network: `10.0.0.0/8`, `fd00::/8`, or a bare address (one host).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// The network of `addr` with `prefix` bits (host bits cleared, as
    /// iptables prints it); `prefix` must fit the address family.
    pub fn masked(addr: IpAddr, prefix: u8) -> Self {
        let (net, _) = Cidr { addr, prefix }.to_bits();
        let addr = match addr {
            IpAddr::V4(_) => IpAddr::V4(
                std::net::Ipv6Addr::from_bits(net)
                    .to_ipv4_mapped()
                    .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
            ),
            IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::from_bits(net)),
        };
        Cidr { addr, prefix }
    }

    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    /// Network and mask as 128-bit integers (IPv4 in the IPv4-mapped
    /// range), so matching is two integer operations.
    pub fn to_bits(self) -> (u128, u128) {
        let (bits, width_offset) = match self.addr {
            IpAddr::V4(a) => (a.to_ipv6_mapped().to_bits(), 96),
            IpAddr::V6(a) => (a.to_bits(), 0),
        };
        let len = u32::from(self.prefix) + width_offset;
        let mask = if len == 0 {
            0
        } else {
            u128::MAX << (128 - len)
        };
        (bits & mask, mask)
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let s = text.trim();
        let bad = || format!("{} is not a CIDR (expected e.g. 10.0.0.0/8)", quoted(s));
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("{}: prefix must be 0-{max}", quoted(s))),
            },
            None => max,
        };
        let cidr = Self { addr, prefix };
        let canonical = Self::masked(addr, prefix);
        if canonical.addr != addr {
            return Err(format!(
                "{} has host bits set (did you mean {canonical}?)",
                quoted(s)
            ));
        }
        Ok(cidr)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}
