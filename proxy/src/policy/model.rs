//! The fault language as data: what `faultline.dev/faults` says, field for
//! field. These types are only the syntax tree; [`super::parse`] adds the
//! cross-field checks and [`super::compile`] turns them into matchers.
//!
//! Every struct rejects unknown fields so a typo (`precent: 20`) is an
//! error instead of a silently ignored setting.
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

pub use super::units::{ByteRate, Cidr, HumanDuration, PortRange, Ports};

/// A whole fault policy (the value of the `faultline.dev/faults` annotation).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Policy {
    /// How long the policy stays in force after the controller first saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<HumanDuration>,
    /// The instant the policy stops being in force.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_until"
    )]
    pub until: Option<jiff::Timestamp>,
    /// Evaluated in order; the first rule that matches and fires applies.
    #[serde(default)]
    pub rules: Vec<Rule>,
}

impl Policy {
    pub fn duration(&self) -> Option<Duration> {
        self.duration.map(HumanDuration::get)
    }

    pub fn until(&self) -> Option<jiff::Timestamp> {
        self.until
    }

    /// The distinct pod selectors of all rules (`match.to` / `match.from`),
    /// which the controller resolves to pod IPs ([`super::PeerIps`]).
    pub fn selectors(&self) -> Vec<Selector> {
        let mut out: Vec<Selector> = Vec::new();
        for rule in &self.rules {
            for peer in [&rule.r#match.to, &rule.r#match.from].into_iter().flatten() {
                if let Some(sel) = &peer.pod_selector
                    && !out.contains(sel)
                {
                    out.push(sel.clone());
                }
            }
        }
        out.sort_by_key(Selector::key);
        out
    }
}

/// One rule: which traffic (`match`), how often (`percent`, `first`) and
/// exactly one fault.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Rule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, rename = "match", skip_serializing_if = "Match::is_empty")]
    pub r#match: Match,
    /// 0-100, fractions allowed; absent means 100. `"20%"` is accepted too.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_percent"
    )]
    pub percent: Option<f64>,
    /// Only the first N matching requests (or connections) per client IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<Delay>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<Abort>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub respond: Option<Respond>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hang: Option<Hang>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<Bandwidth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<Partition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset: Option<Reset>,
}

impl Rule {
    /// The faults this rule sets (a valid rule sets exactly one).
    pub fn faults(&self) -> Vec<FaultSpec<'_>> {
        let mut out = Vec::with_capacity(1);
        if let Some(f) = &self.delay {
            out.push(FaultSpec::Delay(f));
        }
        if let Some(f) = &self.abort {
            out.push(FaultSpec::Abort(f));
        }
        if let Some(f) = &self.respond {
            out.push(FaultSpec::Respond(f));
        }
        if let Some(f) = &self.hang {
            out.push(FaultSpec::Hang(f));
        }
        if let Some(f) = &self.bandwidth {
            out.push(FaultSpec::Bandwidth(f));
        }
        if let Some(f) = &self.partition {
            out.push(FaultSpec::Partition(f));
        }
        if let Some(f) = &self.reset {
            out.push(FaultSpec::Reset(f));
        }
        out
    }

    /// The single fault of a valid rule.
    pub fn fault(&self) -> Option<FaultSpec<'_>> {
        match self.faults().as_slice() {
            [one] => Some(*one),
            _ => None,
        }
    }
}

/// A borrowed view of the one fault a rule sets.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FaultSpec<'a> {
    Delay(&'a Delay),
    Abort(&'a Abort),
    Respond(&'a Respond),
    Hang(&'a Hang),
    Bandwidth(&'a Bandwidth),
    Partition(&'a Partition),
    Reset(&'a Reset),
}

impl FaultSpec<'_> {
    pub fn kind(&self) -> FaultKind {
        match self {
            Self::Delay(_) => FaultKind::Delay,
            Self::Abort(_) => FaultKind::Abort,
            Self::Respond(_) => FaultKind::Respond,
            Self::Hang(_) => FaultKind::Hang,
            Self::Bandwidth(_) => FaultKind::Bandwidth,
            Self::Partition(_) => FaultKind::Partition,
            Self::Reset(_) => FaultKind::Reset,
        }
    }
}

/// The kind of a fault, as used in metric labels and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultKind {
    Delay,
    Abort,
    Respond,
    Hang,
    Bandwidth,
    Partition,
    Reset,
}

impl FaultKind {
    pub const ALL: [FaultKind; 7] = [
        Self::Delay,
        Self::Abort,
        Self::Respond,
        Self::Hang,
        Self::Bandwidth,
        Self::Partition,
        Self::Reset,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delay => "delay",
            Self::Abort => "abort",
            Self::Respond => "respond",
            Self::Hang => "hang",
            Self::Bandwidth => "bandwidth",
            Self::Partition => "partition",
            Self::Reset => "reset",
        }
    }

    /// Partition and reset act on whole connections, decided when the
    /// connection opens, before its protocol is known.
    pub fn is_connection_level(self) -> bool {
        matches!(self, Self::Partition | Self::Reset)
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which traffic a rule applies to. Every field that is set must match;
/// an empty match matches everything (except kubelet probes).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Match {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    /// The destination port (for inbound traffic: the application's port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<Ports>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Exact (`/healthz`), prefix (`/api/*`, `/api*`) or glob (`/users/*/orders`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Header name -> value pattern (`"*"` = present with any value).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// The destination host (HTTP authority), `*.example.com` wildcards allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The source (client) of the traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Peer>,
    /// The destination of the traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Peer>,
    /// Also fault kubelet probes (`User-Agent: kube-probe/...`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub probes: bool,
}

impl Match {
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }

    /// Names of the matchers that need an HTTP request to be evaluated.
    pub fn l7_fields(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if !self.methods.is_empty() {
            out.push("methods");
        }
        if self.path.is_some() {
            out.push("path");
        }
        if !self.headers.is_empty() {
            out.push("headers");
        }
        if self.host.is_some() {
            out.push("host");
        }
        if self.probes {
            out.push("probes");
        }
        out
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Traffic arriving at the pod (captured on port 15406).
    Inbound,
    /// Traffic the pod sends (captured on port 15401).
    Outbound,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1 or HTTP/2 requests that are not gRPC.
    Http,
    /// HTTP/2 requests with `content-type: application/grpc...`.
    Grpc,
    /// Connections that are neither (TLS, databases, NATS, ...).
    Tcp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Grpc => "grpc",
            Self::Tcp => "tcp",
        }
    }

    /// The protocol of an HTTP request: gRPC if its content type says so.
    pub fn of_request(headers: &http::HeaderMap) -> Self {
        let is_grpc = headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        if is_grpc { Self::Grpc } else { Self::Http }
    }
}

/// A set of peers: any IP in `cidrs` or of a pod selected by `podSelector`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Peer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<Selector>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cidrs: Vec<Cidr>,
}

/// Pod labels that must all be present (like `matchLabels`), in the
/// namespace of the pod the policy applies to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Selector(pub BTreeMap<String, String>);

impl Selector {
    /// Canonical `k1=v1,k2=v2` (sorted by key): the key of [`super::PeerIps`].
    pub fn key(&self) -> String {
        let mut out = String::new();
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(k);
            out.push('=');
            out.push_str(v);
        }
        out
    }
}

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
    #[serde(default, skip_serializing_if = "is_default")]
    pub side: DelaySide,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NormalDelay {
    pub mean: HumanDuration,
    pub stddev: HumanDuration,
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

/// Limit throughput to a number of bytes per second per connection.
/// Exactly one of `bytesPerSecond` and `rate`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Bandwidth {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_per_second: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<ByteRate>,
}

impl Bandwidth {
    pub fn bytes_per_second(&self) -> Option<u64> {
        self.bytes_per_second.or(self.rate.map(|r| r.0))
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

fn de_until<'de, D: Deserializer<'de>>(d: D) -> Result<Option<jiff::Timestamp>, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map(Some).map_err(|e| {
        de::Error::custom(format!(
            "{} is not an RFC 3339 timestamp like 2026-01-31T12:00:00Z ({e})",
            super::units::quoted(&text)
        ))
    })
}

/// A number, or a string like `"20%"`.
fn de_percent<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    struct V;
    impl de::Visitor<'_> for V {
        type Value = f64;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a percentage such as 20 or 0.5")
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
            Ok(v)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
            Ok(v as f64)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
            Ok(v as f64)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<f64, E> {
            v.trim()
                .strip_suffix('%')
                .unwrap_or(v)
                .trim()
                .parse()
                .map_err(|_| {
                    E::custom(format!(
                        "{} is not a percentage such as 20 or 0.5",
                        super::units::quoted(v)
                    ))
                })
        }
    }
    d.deserialize_any(V).map(Some)
}

/// An integer status; out-of-range numbers get the same message as
/// validation gives for 600-999.
fn de_status<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
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
