//! The first seven faults of the language (`delay`, `abort`, `respond`,
//! `hang`, `bandwidth`, `partition`, `reset`), `fromHeaders`, and gRPC
//! status codes, as data; the byte-stream ones are in `toxics`, the response-side ones in
//! `response`.
//! What they do on the wire is the data plane's business; validation of
//! their combinations is in `validate`.
use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

use super::units::{ByteRate, HumanDuration};

/// Wait before forwarding the request (or before returning the response).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Delay {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed: Option<HumanDuration>,
    /// Uniform spread around `fixed`: fixed ± jitter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<HumanDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normal: Option<NormalDelay>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uniform: Option<UniformDelay>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lognormal: Option<LogNormalDelay>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pareto: Option<ParetoDelay>,
    /// When to wait: the same word as the byte-stream faults' `side`;
    /// `on` is accepted too.
    #[serde(default, skip_serializing_if = "is_default", alias = "on")]
    pub side: DelaySide,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NormalDelay {
    pub mean: HumanDuration,
    pub stddev: HumanDuration,
}

/// Every delay from `min` to `max` (inclusive) equally likely.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UniformDelay {
    pub min: HumanDuration,
    pub max: HumanDuration,
}

/// A log-normal delay given by two of its quantiles, the median and the
/// 99th percentile, as latency dashboards show them; optionally capped.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LogNormalDelay {
    pub median: HumanDuration,
    pub p99: HumanDuration,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<HumanDuration>,
}

/// A Pareto (power-law) delay: at least `scale`, the chance of exceeding
/// `x` falling as `(scale / x)^shape`, and never more than `max`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ParetoDelay {
    pub scale: HumanDuration,
    pub shape: f64,
    pub max: HumanDuration,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DelaySide {
    /// Before the request is forwarded upstream.
    #[default]
    Request,
    /// After the upstream answered, before the response goes back.
    Response,
}

/// Answer with an error instead of forwarding: an HTTP status, a gRPC
/// status, or a TCP reset. Exactly one of `status`, `grpc`, `reset`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Abort {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_status"
    )]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<GrpcCode>,
    /// The `grpc-message` of a gRPC abort.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reset: bool,
}

/// Let each request ask for its own delay or abort with the
/// `x-faultline-*` request headers, within these bounds. A request without
/// them is not faulted by the rule.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FromHeaders {
    /// The longest `x-faultline-delay` honoured; absent: no delays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_delay: Option<HumanDuration>,
    /// The HTTP statuses `x-faultline-abort` may ask for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub abort_statuses: Vec<u16>,
    /// The gRPC statuses `x-faultline-abort-grpc` may ask for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub abort_grpc: Vec<GrpcCode>,
}

/// Answer with a fixed response instead of forwarding.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Respond {
    /// Defaults to 200.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_status"
    )]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

/// Never answer (the client times out). Written `hang: {}` or `hang: true`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Hang;

impl Serialize for Hang {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        s.serialize_map(Some(0))?.end()
    }
}

impl<'de> Deserialize<'de> for Hang {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Hang;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`{}` or `true`")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Hang, E> {
                if v {
                    Ok(Hang)
                } else {
                    Err(E::custom("false is not allowed (remove the field instead)"))
                }
            }
            fn visit_unit<E: de::Error>(self) -> Result<Hang, E> {
                Ok(Hang)
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Hang, A::Error> {
                match map.next_key::<String>()? {
                    None => Ok(Hang),
                    Some(k) => Err(de::Error::custom(format!(
                        "takes no settings (found `{k}`)"
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// Limit throughput to a number of bytes per second per connection: the
/// same for both sides (`bytesPerSecond` or `rate`), or per side
/// (`request` and/or `response`). Exactly one of the three forms.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Bandwidth {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_per_second: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<ByteRate>,
    /// What the side that opened the connection sends (see `Side`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<ByteRate>,
    /// What the side that accepted the connection sends back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<ByteRate>,
}

impl Bandwidth {
    /// The one rate of the `bytesPerSecond` / `rate` forms.
    pub fn bytes_per_second(&self) -> Option<u64> {
        self.bytes_per_second.or(self.rate.map(|r| r.0))
    }

    /// True for the per-side form (`request` / `response`).
    pub fn per_side(&self) -> bool {
        self.request.is_some() || self.response.is_some()
    }
}

/// Cut the pod off from peers at L4.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Partition {
    #[serde(default, skip_serializing_if = "is_default")]
    pub mode: PartitionMode,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PartitionMode {
    /// Refuse: the connection is reset at once.
    #[default]
    Reject,
    /// Blackhole: the connection is accepted and nothing ever passes.
    Drop,
}

/// Reset the connection after some bytes or some time (whichever first).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Reset {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<HumanDuration>,
}

/// gRPC status codes, written by name (`UNAVAILABLE`) or number (`14`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum GrpcCode {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

const GRPC_NAMES: [(&str, GrpcCode); 17] = [
    ("OK", GrpcCode::Ok),
    ("CANCELLED", GrpcCode::Cancelled),
    ("UNKNOWN", GrpcCode::Unknown),
    ("INVALID_ARGUMENT", GrpcCode::InvalidArgument),
    ("DEADLINE_EXCEEDED", GrpcCode::DeadlineExceeded),
    ("NOT_FOUND", GrpcCode::NotFound),
    ("ALREADY_EXISTS", GrpcCode::AlreadyExists),
    ("PERMISSION_DENIED", GrpcCode::PermissionDenied),
    ("RESOURCE_EXHAUSTED", GrpcCode::ResourceExhausted),
    ("FAILED_PRECONDITION", GrpcCode::FailedPrecondition),
    ("ABORTED", GrpcCode::Aborted),
    ("OUT_OF_RANGE", GrpcCode::OutOfRange),
    ("UNIMPLEMENTED", GrpcCode::Unimplemented),
    ("INTERNAL", GrpcCode::Internal),
    ("UNAVAILABLE", GrpcCode::Unavailable),
    ("DATA_LOSS", GrpcCode::DataLoss),
    ("UNAUTHENTICATED", GrpcCode::Unauthenticated),
];

impl GrpcCode {
    /// The numeric code sent in `grpc-status`.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The canonical name, e.g. `UNAVAILABLE`.
    pub fn name(self) -> &'static str {
        GRPC_NAMES[self as usize].0
    }

    pub fn from_code(code: u64) -> Option<Self> {
        GRPC_NAMES.get(usize::try_from(code).ok()?).map(|(_, c)| *c)
    }

    /// Case-insensitive; `Unavailable`, `unavailable` and `UNAVAILABLE` all work.
    pub fn from_name(name: &str) -> Option<Self> {
        let wanted = name.trim().replace('-', "_");
        GRPC_NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(&wanted))
            .or_else(|| {
                // CamelCase spellings such as `DeadlineExceeded`.
                GRPC_NAMES
                    .iter()
                    .find(|(n, _)| n.replace('_', "").eq_ignore_ascii_case(&wanted))
            })
            .map(|(_, c)| *c)
    }
}

impl fmt::Display for GrpcCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for GrpcCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for GrpcCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = GrpcCode;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a gRPC status name (UNAVAILABLE) or number (0-16)")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<GrpcCode, E> {
                GrpcCode::from_code(v)
                    .ok_or_else(|| E::custom(format!("{v} is not a gRPC status code (0-16)")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<GrpcCode, E> {
                Err(E::custom(format!("{v} is not a gRPC status code (0-16)")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<GrpcCode, E> {
                GrpcCode::from_name(v).ok_or_else(|| {
                    E::custom(format!(
                        "{} is not a gRPC status (e.g. UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL or 0-16)",
                        super::units::quoted(v)
                    ))
                })
            }
        }
        d.deserialize_any(V)
    }
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// An integer status; out-of-range numbers get the same message as
/// validation gives for 600-999.
pub(super) fn de_status<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    struct V;
    impl de::Visitor<'_> for V {
        type Value = u16;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an HTTP status such as 503")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u16, E> {
            u16::try_from(v).map_err(|_| E::custom(format!("{v} is not an HTTP status (100-599)")))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u16, E> {
            u16::try_from(v).map_err(|_| E::custom(format!("{v} is not an HTTP status (100-599)")))
        }
    }
    d.deserialize_any(V).map(Some)
}
