//! The response side of the language: `match.response` (the upstream's
//! status and headers) and the two faults that change an upstream's answer,
//! `replace` and `patch`.
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::units::quoted;

/// `match.response`: what the upstream answered. Every field that is set
/// must match.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ResponseMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Statuses>,
    /// Header name -> value pattern, as for request headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

/// An inclusive range of HTTP statuses: `503` is `503-503`, `5xx` is
/// `500-599`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StatusRange {
    pub start: u16,
    pub end: u16,
}

impl StatusRange {
    pub fn contains(self, status: u16) -> bool {
        self.start <= status && status <= self.end
    }

    fn single(n: i128) -> Result<Self, String> {
        let status = status_number(n)?;
        Ok(Self {
            start: status,
            end: status,
        })
    }

    fn is_class(self) -> bool {
        self.start.is_multiple_of(100) && self.end == self.start + 99
    }
}

fn status_number(n: i128) -> Result<u16, String> {
    match u16::try_from(n) {
        Ok(s) if (100..=599).contains(&s) => Ok(s),
        _ => Err(format!("{n} is not an HTTP status (100-599)")),
    }
}

impl FromStr for StatusRange {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let s = text.trim();
        let bad = || {
            format!(
                "{} is not a status, class or range like 503, 5xx or 500-504",
                quoted(s)
            )
        };
        if let [digit @ b'1'..=b'5', x1, x2] = s.as_bytes()
            && x1.eq_ignore_ascii_case(&b'x')
            && x2.eq_ignore_ascii_case(&b'x')
        {
            let start = u16::from(digit - b'0') * 100;
            return Ok(Self {
                start,
                end: start + 99,
            });
        }
        let (lo, hi) = s.split_once('-').unwrap_or((s, s));
        let lo: i128 = lo.trim().parse().map_err(|_| bad())?;
        let hi: i128 = hi.trim().parse().map_err(|_| bad())?;
        let (start, end) = (status_number(lo)?, status_number(hi)?);
        if start > end {
            return Err(format!("{} is an empty range (start > end)", quoted(s)));
        }
        Ok(Self { start, end })
    }
}

impl fmt::Display for StatusRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else if self.is_class() {
            write!(f, "{}xx", self.start / 100)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

/// `match.response.status`: a status (`503`), a class (`5xx`), a range
/// (`"500-504"`) or a list of them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Statuses(pub Vec<StatusRange>);

impl Statuses {
    pub fn contains(&self, status: u16) -> bool {
        self.0.iter().any(|r| r.contains(status))
    }
}

impl Serialize for Statuses {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let one = |seq: &mut S::SerializeSeq, r: &StatusRange| {
            if r.start == r.end {
                seq.serialize_element(&r.start)
            } else {
                seq.serialize_element(&r.to_string())
            }
        };
        match self.0.as_slice() {
            [r] if r.start == r.end => s.serialize_u16(r.start),
            [r] => s.collect_str(r),
            many => {
                let mut seq = s.serialize_seq(Some(many.len()))?;
                for r in many {
                    one(&mut seq, r)?;
                }
                seq.end()
            }
        }
    }
}

struct One;

impl Visitor<'_> for One {
    type Value = StatusRange;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an HTTP status (503), class (5xx) or range (\"500-504\")")
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<StatusRange, E> {
        StatusRange::single(v.into()).map_err(E::custom)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<StatusRange, E> {
        StatusRange::single(v.into()).map_err(E::custom)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<StatusRange, E> {
        v.parse().map_err(E::custom)
    }
}

struct OneDe(StatusRange);

impl<'de> Deserialize<'de> for OneDe {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(One).map(OneDe)
    }
}

impl<'de> Deserialize<'de> for Statuses {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Statuses;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a status (503), a class (5xx), a range (\"500-504\") or a list of them",
                )
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Statuses, E> {
                One.visit_u64(v).map(|r| Statuses(vec![r]))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Statuses, E> {
                One.visit_i64(v).map(|r| Statuses(vec![r]))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Statuses, E> {
                One.visit_str(v).map(|r| Statuses(vec![r]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Statuses, A::Error> {
                let mut out = Vec::new();
                while let Some(OneDe(r)) = seq.next_element()? {
                    out.push(r);
                }
                if out.is_empty() {
                    return Err(de::Error::custom("empty status list"));
                }
                Ok(Statuses(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// Replace parts of the upstream's response: each part given replaces the
/// upstream's, the others pass through.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Replace {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::faults::de_status"
    )]
    pub status: Option<u16>,
    /// All of the upstream's headers give way to these (the ones that
    /// describe a body passed through stay, see the reference).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

/// Change parts of the upstream's response.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Patch {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::faults::de_status"
    )]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "HeaderPatch::is_empty")]
    pub headers: HeaderPatch,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<BodyPatch>,
}

/// `patch.headers`: headers to set (replacing any the upstream sent under
/// the same name) and names to remove.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HeaderPatch {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

impl HeaderPatch {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty()
    }
}

/// `patch.body`: an RFC 7396 JSON merge patch applied to a JSON body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BodyPatch {
    pub merge: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_parse_codes_classes_ranges_and_lists() {
        let s: Statuses = serde_json::from_str(r#"[502, "4xx", "520-530"]"#).unwrap();
        assert!(s.contains(502) && s.contains(404) && s.contains(525));
        assert!(!s.contains(503) && !s.contains(200));
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"[502,"4xx","520-530"]"#
        );
        let s: Statuses = serde_json::from_str(r#""5XX""#).unwrap();
        assert_eq!(
            s.0,
            vec![StatusRange {
                start: 500,
                end: 599
            }]
        );
        assert_eq!(serde_json::to_string(&s).unwrap(), r#""5xx""#);
        for bad in [
            r#"600"#,
            r#""6xx""#,
            r#""504-500""#,
            r#"[]"#,
            r#""5x""#,
            "99",
        ] {
            assert!(serde_json::from_str::<Statuses>(bad).is_err(), "{bad}");
        }
    }
}
