//! faultline-policy: the fault language of `faultline.dev/faults` and the
//! names, ports and flags the webhook and the proxy agree on. Pure: no I/O,
//! no Kubernetes, no HTTP server; the webhook validates with it, the proxy
//! decides with it, the controller and the proxy speak its stream format.
//!
//! Layout (each module only uses the ones above it in this list):
//! - `model`: the document as data ([`Policy`], [`Rule`], [`Match`]); its
//!   files `faults` (the request-side faults), `response`
//!   (`match.response`, `replace`, `patch`), `units` (durations, rates) and
//!   `net` (ports, CIDRs) hold the values with a text form. Serde in and
//!   out; the JSON output parses again to the same policy.
//! - `error`: [`PolicyError`], naming rule, field and problem; and
//!   [`error_chain`], the one-line form in which the binaries print errors.
//! - `validate`: the cross-field checks; `parse`: [`parse`] reads YAML or
//!   JSON and validates everything.
//! - `action`: what a decision asks the data plane to do ([`Action`],
//!   [`Decision`]).
//! - `compile`: [`compile`] builds a [`CompiledPolicy`] whose matchers do
//!   no allocation per request; its files `matchers`, `first` (the
//!   bounded `first: N` counters) and `from_headers` (the faults a request
//!   asks for with `x-faultline-*` headers, and why one is refused).
//! - `decide`: [`CompiledPolicy::decide_request`], `decide_connection`
//!   and `decide_tcp`, pure functions of the compiled policy, what the data
//!   plane knows about the traffic and a random number generator.
//! - `wire`: the policy stream's ndjson messages (controller to proxy).
//! - `contract`: every name, port, UID, environment variable and `init`
//!   flag shared by the webhook (which writes them into pods) and the
//!   proxy (which reads them).
//!
//! The user reference is `docs/fault-language.md`; `docs/design.md` shows
//! where this crate sits.
use std::collections::BTreeMap;
use std::net::IpAddr;

mod action;
mod compile;
pub mod contract;
mod decide;
mod error;
mod model;
mod parse;
mod validate;
pub mod wire;

pub use action::{
    AbortAction, Action, BandwidthLimit, BodyRewrite, Decision, GrpcAbort, HttpResponse, Rewrite,
};
pub use compile::{
    ABORT_GRPC_HEADER, ABORT_HEADER, CONTROL_HEADERS, CompiledPolicy, DELAY_HEADER,
    FIRST_MAX_CLIENTS, Refusal, compile, strip_control_headers,
};
pub use decide::{
    ConnInfo, DnsQuery, Refused, RequestInfo, RequestOutcome, RequestReach, ResponseInfo, TlsInfo,
    is_probe,
};
pub use error::{FieldError, Location, PolicyError, RuleRef, error_chain};
pub use model::{
    Abort, Bandwidth, BodyPatch, ByteRate, Cidr, Delay, DelaySide, Direction, DnsFault, DnsMatch,
    DnsRcode, FaultKind, FaultSpec, FromHeaders, GrpcCode, Hang, HeaderPatch, HumanDuration,
    LimitData, LogNormalDelay, MAX_DURATION, Match, NormalDelay, ParetoDelay, Partition,
    PartitionMode, Patch, Peer, Policy, PortRange, Ports, Protocol, RecordType, Replace, Reset,
    Respond, ResponseMatch, Rule, Selector, Side, Slicer, SlowClose, StatusRange, Statuses,
    UniformDelay,
};
pub use parse::{MAX_POLICY_BYTES, parse};
pub use validate::{
    MAX_DNS_NAME_BYTES, MAX_METHOD_BYTES, MAX_PATTERN_BYTES, MAX_SLICE_BYTES, MAX_SLICE_DELAY,
    MAX_SLOW_CLOSE, is_tchar, validate,
};

/// Pod IPs per selector key ([`Selector::key`]), resolved by the controller.
pub type PeerIps = BTreeMap<String, Vec<IpAddr>>;
