//! Small value types of the fault language that have a human text form:
//! durations (`200ms`, `1.5s`, `1m30s`), byte rates (`64KiB`, `1MB/s`),
//! ports (`8080`, `"8000-8010"`, lists of both) and CIDRs (`10.0.0.0/8`).
//!
//! Each type checks its own syntax while deserializing, so serde's error
//! (with the field path added by `parse`) already says what is wrong; each
//! serializes back to a form that parses to the same value.
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A duration written as a number with a unit (`ns`, `us`, `ms`, `s`, `m`,
/// `h`), fractions allowed (`1.5s`), several parts allowed (`1m30s`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub fn get(self) -> Duration {
        self.0
    }
}

impl From<Duration> for HumanDuration {
    fn from(d: Duration) -> Self {
        Self(d)
    }
}

const DURATION_UNITS: &[(&str, u128)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// Longest representable duration we accept; anything larger is a typo.
const MAX_DURATION_NANOS: u128 = 366 * 24 * 3_600_000_000_000;

impl FromStr for HumanDuration {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let s = text.trim();
        if s.is_empty() {
            return Err("empty duration (expected e.g. 200ms, 1.5s, 2m)".into());
        }
        if s.starts_with('-') {
            return Err(format!("{} is negative", quoted(s)));
        }
        let mut rest = s;
        let mut total: f64 = 0.0;
        while !rest.is_empty() {
            let num_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            if num_len == 0 {
                return Err(format!(
                    "{} is not a duration (expected e.g. 200ms, 1.5s, 2m)",
                    quoted(s)
                ));
            }
            let number: f64 = rest[..num_len].parse().map_err(|_| {
                format!(
                    "{} is not a duration (expected e.g. 200ms, 1.5s, 2m)",
                    quoted(s)
                )
            })?;
            rest = &rest[num_len..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let unit = &rest[..unit_len];
            rest = &rest[unit_len..];
            if unit.is_empty() {
                return Err(format!(
                    "{} has no unit (expected e.g. 200ms, 1.5s, 2m)",
                    quoted(s)
                ));
            }
            let Some((_, scale)) = DURATION_UNITS.iter().find(|(u, _)| *u == unit) else {
                return Err(format!(
                    "{} has an unknown unit {unit:?} (use ns, us, ms, s, m or h)",
                    quoted(s)
                ));
            };
            total += number * *scale as f64;
        }
        if !total.is_finite() || total > MAX_DURATION_NANOS as f64 {
            return Err(format!("{} is too long (at most 366 days)", quoted(s)));
        }
        Ok(Self(Duration::from_nanos(total.round() as u64)))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.as_nanos();
        if nanos == 0 {
            return f.write_str("0s");
        }
        // The largest unit that divides exactly, so the text parses back
        // to the identical value.
        for (unit, scale) in DURATION_UNITS.iter().rev() {
            if *unit == "µs" {
                continue;
            }
            if nanos.is_multiple_of(*scale) {
                return write!(f, "{}{unit}", nanos / scale);
            }
        }
        write!(f, "{nanos}ns")
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as 200ms, 1.5s or 2m")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HumanDuration, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<HumanDuration, E> {
                Err(E::custom(format!(
                    "{v} has no unit (write e.g. {v}ms or {v}s)"
                )))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<HumanDuration, E> {
                Err(E::custom(format!("{v} has no unit (expected e.g. 200ms)")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<HumanDuration, E> {
                Err(E::custom(format!("{v} has no unit (write e.g. {v}s)")))
            }
        }
        d.deserialize_any(V)
    }
}

/// A transfer rate in bytes per second, written `65536`, `64KiB`, `1.5MB`
/// or with a `/s` suffix (`64KiB/s`). `K`/`M`/`G` are powers of 1000,
/// `Ki`/`Mi`/`Gi` powers of 1024; the unit is always bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ByteRate(pub u64);

const RATE_UNITS: &[(&str, u64)] = &[
    ("", 1),
    ("B", 1),
    ("KB", 1_000),
    ("KiB", 1 << 10),
    ("MB", 1_000_000),
    ("MiB", 1 << 20),
    ("GB", 1_000_000_000),
    ("GiB", 1 << 30),
];

impl FromStr for ByteRate {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let s = text.trim();
        let body = s.strip_suffix("/s").unwrap_or(s).trim_end();
        let num_len = body
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(body.len());
        let number: f64 = body[..num_len].parse().map_err(|_| {
            format!(
                "{} is not a rate (expected e.g. 65536, 64KiB or 1MB/s)",
                quoted(s)
            )
        })?;
        let unit = body[num_len..].trim();
        let Some((_, scale)) = RATE_UNITS.iter().find(|(u, _)| *u == unit) else {
            return Err(format!(
                "{} has an unknown unit {unit:?} (use B, KB, KiB, MB, MiB, GB or GiB)",
                quoted(s)
            ));
        };
        let bytes = (number * *scale as f64).round();
        if !bytes.is_finite() || bytes >= u64::MAX as f64 {
            return Err(format!("{} is too large", quoted(s)));
        }
        Ok(Self(bytes as u64))
    }
}

impl fmt::Display for ByteRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for unit in ["GiB", "MiB", "KiB"] {
            let Some((_, scale)) = RATE_UNITS.iter().find(|(u, _)| *u == unit) else {
                continue;
            };
            if self.0 != 0 && self.0.is_multiple_of(*scale) {
                return write!(f, "{}{unit}", self.0 / scale);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl Serialize for ByteRate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteRate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteRate;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a rate such as 65536, 64KiB or 1MB/s")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteRate, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteRate, E> {
                Ok(ByteRate(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteRate, E> {
                u64::try_from(v)
                    .map(ByteRate)
                    .map_err(|_| E::custom(format!("{v} is negative")))
            }
        }
        d.deserialize_any(V)
    }
}

/// An inclusive port range; a single port is `start == end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortRange {
    pub start: u16,
    pub end: u16,
}

impl PortRange {
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
        let (net, _) = cidr.to_bits();
        let canonical = Self {
            addr: match addr {
                IpAddr::V4(_) => IpAddr::V4(
                    std::net::Ipv6Addr::from_bits(net)
                        .to_ipv4_mapped()
                        .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
                ),
                IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::from_bits(net)),
            },
            prefix,
        };
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

/// Quotes user text for an error message, cut short so a message never
/// echoes a whole document back.
pub(crate) fn quoted(s: &str) -> String {
    const MAX: usize = 40;
    if s.chars().count() <= MAX {
        format!("{s:?}")
    } else {
        let cut: String = s.chars().take(MAX).collect();
        format!("{:?}...", cut)
    }
}
