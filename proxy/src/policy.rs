//! The fault language of `faultline.dev/faults`: parse, validate, compile,
//! decide. No Kubernetes dependency, so the webhook validates with it too.
//!
//! Layout:
//! - `model`: the document as data ([`Policy`], [`Rule`], [`Match`]);
//!   `faults`: the seven faults; `units` (durations, rates) and `net`
//!   (ports, CIDRs): values with a text form. Serde in and out; the JSON
//!   output parses again to the same policy.
//! - `parse` (error mapping) + `validate` + `error`: [`parse`] reads YAML or
//!   JSON and checks everything; errors name rule, field and problem.
//! - `compile` + `matchers` + `first`: [`compile`] builds a
//!   [`CompiledPolicy`] whose matchers do no allocation per request;
//!   `first` holds the bounded `first: N` counters.
//! - `decide`: [`CompiledPolicy::decide_request`], `decide_connection`,
//!   `decide_tcp` and the [`Decision`] they return.
//! - `store`: [`PolicyStore`], the active policy shared by the data plane,
//!   the admin server and the policy sources.
//! - `tests*.rs`: unit tests (parse, decide, store).
//!
//! The user reference is `docs/fault-language.md`.
use std::collections::BTreeMap;
use std::net::IpAddr;

mod compile;
mod decide;
mod error;
mod faults;
mod first;
mod matchers;
mod model;
mod net;
mod parse;
mod store;
mod units;
mod validate;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_decide;
#[cfg(test)]
mod tests_errors;
#[cfg(test)]
mod tests_store;

pub use compile::{CompiledPolicy, compile};
pub use decide::{
    AbortAction, Action, ConnInfo, Decision, GrpcAbort, HttpResponse, RequestInfo, is_probe,
};
pub use error::{FieldError, Location, PolicyError, RuleRef};
pub use first::FIRST_MAX_CLIENTS;
pub use model::{
    Abort, Bandwidth, ByteRate, Cidr, Delay, DelaySide, Direction, FaultKind, FaultSpec, GrpcCode,
    Hang, HumanDuration, Match, NormalDelay, Partition, PartitionMode, Peer, Policy, PortRange,
    Ports, Protocol, Reset, Respond, Rule, Selector,
};
pub use store::{ActivePolicy, PolicySource, PolicyStore, PolicyUpdate};
pub use validate::validate;

/// Pod IPs per selector key ([`Selector::key`]), resolved by the controller.
pub type PeerIps = BTreeMap<String, Vec<IpAddr>>;

/// Largest policy accepted; the annotation limit is 256 KiB anyway.
pub const MAX_POLICY_BYTES: usize = 1 << 20;

/// Parses a policy written in YAML or JSON and validates every field.
pub fn parse(text: &str) -> Result<Policy, PolicyError> {
    if text.len() > MAX_POLICY_BYTES {
        return Err(parse::syntax(format!(
            "the document is larger than {MAX_POLICY_BYTES} bytes"
        )));
    }
    if text.trim().is_empty() {
        return Err(parse::syntax(
            "the document is empty (write `rules: []` for no faults)".into(),
        ));
    }
    // YAML syntax first, so a syntax error is reported as such (with its
    // position) rather than as a problem of whatever field it broke.
    let doc: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| parse::syntax_error(&e))?;
    let deserializer = serde_yaml::Deserializer::from_str(text);
    let policy: Policy = serde_path_to_error::deserialize(deserializer)
        .map_err(|e| parse::deserialize_error(&doc, e))?;
    validate(&policy)?;
    Ok(policy)
}
