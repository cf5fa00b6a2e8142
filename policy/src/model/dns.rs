//! DNS in the fault language: `match.dns` (query name and record types)
//! and the `dns` fault (answer with an error code instead of forwarding).
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

use super::units::quoted;

/// Which DNS queries a rule applies to. Both fields are optional; an empty
/// `dns: {}` matches every query.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DnsMatch {
    /// The queried name as sent, without the trailing dot, case-insensitive;
    /// `*` matches any run of characters (`*.nats.svc.cluster.local`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Query types (`A`, `AAAA`, ...); empty means any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<RecordType>,
}

/// Answer a DNS query with an error instead of forwarding it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DnsFault {
    pub rcode: DnsRcode,
}

/// The response codes a `dns` fault can answer with (RFC 1035 section 4.1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DnsRcode {
    /// 2: the resolver failed; clients usually try the next nameserver.
    ServFail,
    /// 3: the name does not exist.
    NxDomain,
    /// 5: the resolver refuses to answer.
    Refused,
}

impl DnsRcode {
    const ALL: [(&'static str, DnsRcode); 3] = [
        ("SERVFAIL", Self::ServFail),
        ("NXDOMAIN", Self::NxDomain),
        ("REFUSED", Self::Refused),
    ];

    /// The 4-bit RCODE of the response header.
    pub fn code(self) -> u8 {
        match self {
            Self::ServFail => 2,
            Self::NxDomain => 3,
            Self::Refused => 5,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::ServFail => "SERVFAIL",
            Self::NxDomain => "NXDOMAIN",
            Self::Refused => "REFUSED",
        }
    }
}

impl fmt::Display for DnsRcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for DnsRcode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for DnsRcode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::ALL
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(text.trim()))
            .map(|(_, r)| *r)
            .ok_or_else(|| {
                de::Error::custom(format!(
                    "{} is not a DNS error code (NXDOMAIN, SERVFAIL or REFUSED)",
                    quoted(&text)
                ))
            })
    }
}

/// A DNS record type as queried (RFC 1035 and later), written by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordType(u16);

/// The types a policy may name: the ones applications look up.
const RECORD_TYPES: [(&str, u16); 14] = [
    ("A", 1),
    ("NS", 2),
    ("CNAME", 5),
    ("SOA", 6),
    ("PTR", 12),
    ("MX", 15),
    ("TXT", 16),
    ("AAAA", 28),
    ("SRV", 33),
    ("NAPTR", 35),
    ("SVCB", 64),
    ("HTTPS", 65),
    ("CAA", 257),
    ("ANY", 255),
];

impl RecordType {
    pub const A: Self = Self(1);
    pub const AAAA: Self = Self(28);

    /// The QTYPE on the wire.
    pub fn code(self) -> u16 {
        self.0
    }

    /// Case-insensitive: `aaaa` is `AAAA`.
    pub fn from_name(name: &str) -> Option<Self> {
        RECORD_TYPES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.trim()))
            .map(|(_, code)| Self(*code))
    }

    pub fn name(self) -> &'static str {
        RECORD_TYPES
            .iter()
            .find(|(_, code)| *code == self.0)
            .map_or("?", |(n, _)| n)
    }
}

impl fmt::Display for RecordType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for RecordType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for RecordType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::from_name(&text).ok_or_else(|| {
            let known: Vec<&str> = RECORD_TYPES.iter().map(|(n, _)| *n).collect();
            de::Error::custom(format!(
                "{} is not a DNS record type ({})",
                quoted(&text),
                known.join(", ")
            ))
        })
    }
}

#[cfg(test)]
mod tests;
