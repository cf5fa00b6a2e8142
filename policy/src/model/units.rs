//! Value types of the fault language with a human text form: durations
//! (`200ms`, `1.5s`, `1m30s`) and byte rates (`64KiB`, `1MB/s`). Ports and
//! CIDRs are in `net`.
//!
//! Each type checks its own syntax while deserializing, so serde's error
//! (with the field path added by `parse`) already says what is wrong; each
//! serializes back to a form that parses to the same value.
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
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

/// The longest duration the language accepts (366 days; anything larger
/// is a typo), and so the longest delay the proxy ever waits.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);
const MAX_DURATION_NANOS: u128 = MAX_DURATION.as_nanos();

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
