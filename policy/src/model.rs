//! The fault language as data: what `faultline.dev/faults` says, field for
//! field. These types are only the syntax tree; [`crate::parse`] adds the
//! cross-field checks and [`crate::compile`] turns them into matchers.
//!
//! Every struct rejects unknown fields so a typo (`precent: 20`) is an
//! error instead of a silently ignored setting.
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, de};

mod dns;
mod faults;
mod net;
mod response;
mod toxics;
mod units;

pub use dns::{DnsFault, DnsMatch, DnsRcode, RecordType};
pub use faults::{
    Abort, Bandwidth, Delay, DelaySide, FromHeaders, GrpcCode, Hang, LogNormalDelay, NormalDelay,
    ParetoDelay, Partition, PartitionMode, Reset, Respond, UniformDelay,
};
pub use net::{Cidr, PortRange, Ports};
pub use response::{BodyPatch, HeaderPatch, Patch, Replace, ResponseMatch, StatusRange, Statuses};
pub use toxics::{LimitData, Side, Slicer, SlowClose};
pub(crate) use units::quoted;
pub use units::{ByteRate, HumanDuration, MAX_DURATION};

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
    /// which the controller resolves to pod IPs ([`crate::PeerIps`]).
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
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_present"
    )]
    pub delay: Option<Delay>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_present"
    )]
    pub abort: Option<Abort>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_present"
    )]
    pub respond: Option<Respond>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_present"
    )]
    pub hang: Option<Hang>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_present"
    )]
    pub bandwidth: Option<Bandwidth>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_present"
    )]
    pub partition: Option<Partition>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_present"
    )]
    pub reset: Option<Reset>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_present"
    )]
    pub slicer: Option<Slicer>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_present"
    )]
    pub limit_data: Option<LimitData>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_present"
    )]
    pub slow_close: Option<SlowClose>,
    /// Answer a DNS query with an error code (needs a DNS match).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsFault>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_present"
    )]
    pub from_headers: Option<FromHeaders>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_present"
    )]
    pub replace: Option<Replace>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_present"
    )]
    pub patch: Option<Patch>,
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
        if let Some(f) = &self.slicer {
            out.push(FaultSpec::Slicer(f));
        }
        if let Some(f) = &self.limit_data {
            out.push(FaultSpec::LimitData(f));
        }
        if let Some(f) = &self.slow_close {
            out.push(FaultSpec::SlowClose(f));
        }
        if let Some(f) = &self.dns {
            out.push(FaultSpec::Dns(f));
        }
        if let Some(f) = &self.from_headers {
            out.push(FaultSpec::FromHeaders(f));
        }
        if let Some(f) = &self.replace {
            out.push(FaultSpec::Replace(f));
        }
        if let Some(f) = &self.patch {
            out.push(FaultSpec::Patch(f));
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
    Slicer(&'a Slicer),
    LimitData(&'a LimitData),
    SlowClose(&'a SlowClose),
    Dns(&'a DnsFault),
    FromHeaders(&'a FromHeaders),
    Replace(&'a Replace),
    Patch(&'a Patch),
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
            Self::Slicer(_) => FaultKind::Slicer,
            Self::LimitData(_) => FaultKind::LimitData,
            Self::SlowClose(_) => FaultKind::SlowClose,
            Self::Dns(_) => FaultKind::Dns,
            Self::FromHeaders(_) => FaultKind::FromHeaders,
            Self::Replace(_) => FaultKind::Replace,
            Self::Patch(_) => FaultKind::Patch,
        }
    }

    /// Faults that act on the raw byte stream and so only on connections
    /// that are raw TCP: the proxy re-frames HTTP (its own headers, HTTP/2
    /// frames), so slicing it or holding its close would not disturb what
    /// the client's parser sees. `limitData` on the response side also
    /// acts on HTTP (truncated response bodies).
    pub fn is_tcp_only(&self) -> bool {
        match self {
            Self::Slicer(_) | Self::SlowClose(_) => true,
            Self::LimitData(l) => l.side != Side::Response,
            _ => false,
        }
    }
}

/// The kind of a fault, as used in metric labels and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FaultKind {
    Delay,
    Abort,
    Respond,
    Hang,
    Bandwidth,
    Partition,
    Reset,
    Slicer,
    LimitData,
    SlowClose,
    Dns,
    #[serde(rename = "fromHeaders")]
    FromHeaders,
    Replace,
    Patch,
}

impl FaultKind {
    pub const ALL: [FaultKind; 14] = [
        Self::Delay,
        Self::Abort,
        Self::Respond,
        Self::Hang,
        Self::Bandwidth,
        Self::Partition,
        Self::Reset,
        Self::Slicer,
        Self::LimitData,
        Self::SlowClose,
        Self::Dns,
        Self::FromHeaders,
        Self::Replace,
        Self::Patch,
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
            // As written in the language, so a metric's `kind` label
            // greps the same as the policy.
            Self::Slicer => "slicer",
            Self::LimitData => "limitData",
            Self::SlowClose => "slowClose",
            Self::Dns => "dns",
            Self::FromHeaders => "fromHeaders",
            Self::Replace => "replace",
            Self::Patch => "patch",
        }
    }

    /// Partition and reset act on whole connections, decided when the
    /// connection opens, before its protocol is known.
    pub fn is_connection_level(self) -> bool {
        matches!(self, Self::Partition | Self::Reset)
    }

    /// Replace and patch change the upstream's answer, so they are decided
    /// once it has arrived.
    pub fn acts_on_response(self) -> bool {
        matches!(self, Self::Replace | Self::Patch)
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
    /// The destination host (HTTP authority, or the SNI of a TLS
    /// connection), `*.example.com` wildcards allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The server name a TLS client asked for (SNI, read from its
    /// ClientHello; the traffic is never decrypted). Same wildcards as `host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// The source (client) of the traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Peer>,
    /// The destination of the traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Peer>,
    /// Also fault kubelet probes (`User-Agent: kube-probe/...`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub probes: bool,
    /// DNS queries by name and type (implies `protocol: dns`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsMatch>,
    /// The upstream's answer: such a rule is decided once it arrives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<ResponseMatch>,
}

impl Match {
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }

    /// Whether the rule is about DNS queries (`protocol: dns` or `dns:`).
    pub fn is_dns(&self) -> bool {
        self.protocol == Some(Protocol::Dns) || self.dns.is_some()
    }

    /// Names of the matchers that need an HTTP request to be evaluated
    /// (`host` does not: on TLS connections it is matched against the SNI).
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
        if self.probes {
            out.push("probes");
        }
        if self.response.is_some() {
            out.push("response");
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

impl Direction {
    /// The name used in the language and in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
        }
    }
}

// Label values in the usual lowercase Prometheus style.
#[cfg(feature = "metrics")]
impl prometheus_client::encoding::EncodeLabelValue for Direction {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder<'_>,
    ) -> Result<(), fmt::Error> {
        fmt::Write::write_str(encoder, self.as_str())
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
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
    /// Connections that start with a TLS ClientHello: a part of `Tcp`.
    Tls,
    /// DNS queries the pod sends (UDP and TCP port 53), where the pod opted
    /// into DNS capture.
    Dns,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Grpc => "grpc",
            Self::Tcp => "tcp",
            Self::Tls => "tls",
            Self::Dns => "dns",
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
    /// Canonical `k1=v1,k2=v2` (sorted by key): the key of [`crate::PeerIps`].
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

fn de_until<'de, D: Deserializer<'de>>(d: D) -> Result<Option<jiff::Timestamp>, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map(Some).map_err(|e| {
        de::Error::custom(format!(
            "{} is not an RFC 3339 timestamp like 2026-01-31T12:00:00Z ({e})",
            units::quoted(&text)
        ))
    })
}

/// A fault written with no settings (`hang:`, `partition:`) is present
/// with its defaults, not absent.
fn de_present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Option::<T>::deserialize(d).map(|t| Some(t.unwrap_or_default()))
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
                        units::quoted(v)
                    ))
                })
        }
    }
    d.deserialize_any(V).map(Some)
}
