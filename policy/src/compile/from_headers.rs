//! `fromHeaders`: faults a request asks for itself with the
//! `x-faultline-*` headers, within the bounds its rule sets. Reading the
//! headers is part of matching: a request that asks for nothing does not
//! match the rule, and one that asks for something out of bounds is
//! refused (it does not match either, and the data plane counts why).
use std::fmt;
use std::time::Duration;

use http::{HeaderMap, HeaderName};

use super::abort_action;
use crate::action::{AbortAction, Action};
use crate::model::{Abort, DelaySide, FaultKind, FromHeaders, GrpcCode, HumanDuration, Protocol};

#[cfg(test)]
mod tests;

/// Asks for a delay before the request is forwarded: a duration such as `300ms`.
pub const DELAY_HEADER: HeaderName = HeaderName::from_static("x-faultline-delay");
/// Asks for an HTTP abort: a status such as `503`.
pub const ABORT_HEADER: HeaderName = HeaderName::from_static("x-faultline-abort");
/// Asks for a gRPC abort: a status name (`UNAVAILABLE`) or number (`14`).
pub const ABORT_GRPC_HEADER: HeaderName = HeaderName::from_static("x-faultline-abort-grpc");
/// The headers a proxy removes from every request while its policy has a
/// `fromHeaders` rule, so they never reach the application.
pub const CONTROL_HEADERS: [HeaderName; 3] = [DELAY_HEADER, ABORT_HEADER, ABORT_GRPC_HEADER];

/// Longer values are never a duration, status or gRPC name; they are
/// refused without being parsed.
const MAX_VALUE_BYTES: usize = 32;

/// A `fromHeaders` rule, compiled: its bounds and a prebuilt response for
/// every status it allows.
#[derive(Debug)]
pub(crate) struct HeaderControl {
    max_delay: Option<Duration>,
    statuses: Box<[(u16, AbortAction)]>,
    grpc: Box<[(GrpcCode, AbortAction)]>,
}

/// Why a request's control headers were not honoured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `x-faultline-delay` is longer than `maxDelay`.
    DelayTooLong { asked: Duration, max: Duration },
    /// The rule does not allow this header, or not this value.
    NotAllowed { header: HeaderName, value: String },
    /// `x-faultline-abort-grpc` on a request that is not gRPC.
    NotGrpc,
    /// A value that does not parse, is repeated, or both abort headers.
    Malformed {
        header: HeaderName,
        why: &'static str,
    },
}

impl Refusal {
    /// The `reason` label of `faultline_header_faults_refused_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::DelayTooLong { .. } => "delay_too_long",
            Self::NotAllowed { .. } => "not_allowed",
            Self::NotGrpc => "not_grpc",
            Self::Malformed { .. } => "malformed",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::DelayTooLong { asked, max } => write!(
                f,
                "{DELAY_HEADER}: {} is longer than maxDelay ({})",
                HumanDuration(*asked),
                HumanDuration(*max)
            ),
            Self::NotAllowed { header, value } => {
                write!(f, "{header}: {value} is not allowed by the rule")
            }
            Self::NotGrpc => write!(f, "{ABORT_GRPC_HEADER}: the request is not gRPC"),
            Self::Malformed { header, why } => write!(f, "{header}: {why}"),
        }
    }
}

/// What a request's control headers ask of a `fromHeaders` rule.
#[derive(Debug)]
pub(crate) enum Asked {
    /// No control header: the rule does not match.
    Nothing,
    Fault {
        action: Action,
        kind: FaultKind,
    },
    Refused(Refusal),
}

impl HeaderControl {
    pub(crate) fn new(h: &FromHeaders) -> Result<Self, String> {
        let abort = |status| {
            abort_action(&Abort {
                status: Some(status),
                ..Abort::default()
            })
            .map(|a| (status, a))
        };
        let grpc = |code| {
            abort_action(&Abort {
                grpc: Some(code),
                ..Abort::default()
            })
            .map(|a| (code, a))
        };
        Ok(Self {
            max_delay: h.max_delay.map(HumanDuration::get),
            statuses: h
                .abort_statuses
                .iter()
                .map(|s| abort(*s))
                .collect::<Result<_, _>>()?,
            grpc: h
                .abort_grpc
                .iter()
                .map(|c| grpc(*c))
                .collect::<Result<_, _>>()?,
        })
    }

    /// Reads the control headers of a request (of `protocol`).
    pub(crate) fn read(&self, headers: &HeaderMap, protocol: Protocol) -> Asked {
        match self.ask(headers, protocol) {
            Ok(None) => Asked::Nothing,
            Ok(Some((action, kind))) => Asked::Fault { action, kind },
            Err(refusal) => Asked::Refused(refusal),
        }
    }

    fn ask(
        &self,
        headers: &HeaderMap,
        protocol: Protocol,
    ) -> Result<Option<(Action, FaultKind)>, Refusal> {
        let delay = single(headers, &DELAY_HEADER)?
            .map(|v| self.delay(v))
            .transpose()?;
        let abort = match (
            single(headers, &ABORT_HEADER)?,
            single(headers, &ABORT_GRPC_HEADER)?,
        ) {
            (Some(_), Some(_)) => {
                return Err(Refusal::Malformed {
                    header: ABORT_GRPC_HEADER,
                    why: "cannot be combined with x-faultline-abort",
                });
            }
            (Some(v), None) => Some(self.abort(v)?),
            (None, Some(v)) => Some(self.abort_grpc(v, protocol)?),
            (None, None) => None,
        };
        Ok(match (delay, abort) {
            (None, None) => None,
            (Some(duration), None) => Some((
                Action::Delay {
                    duration,
                    side: DelaySide::Request,
                },
                FaultKind::Delay,
            )),
            (None, Some(abort)) => Some((Action::Abort(abort), FaultKind::Abort)),
            (Some(delay), Some(abort)) => {
                Some((Action::DelayedAbort { delay, abort }, FaultKind::Abort))
            }
        })
    }

    fn delay(&self, value: &str) -> Result<Duration, Refusal> {
        let Some(max) = self.max_delay else {
            return Err(not_allowed(DELAY_HEADER, value));
        };
        let asked = value
            .parse::<HumanDuration>()
            .map_err(|_| Refusal::Malformed {
                header: DELAY_HEADER,
                why: "not a duration such as 300ms",
            })?
            .get();
        if asked > max {
            return Err(Refusal::DelayTooLong { asked, max });
        }
        Ok(asked)
    }

    fn abort(&self, value: &str) -> Result<AbortAction, Refusal> {
        let status: u16 = value.parse().map_err(|_| Refusal::Malformed {
            header: ABORT_HEADER,
            why: "not an HTTP status such as 503",
        })?;
        self.statuses
            .iter()
            .find(|(s, _)| *s == status)
            .map(|(_, a)| a.clone())
            .ok_or_else(|| not_allowed(ABORT_HEADER, value))
    }

    fn abort_grpc(&self, value: &str, protocol: Protocol) -> Result<AbortAction, Refusal> {
        if protocol != Protocol::Grpc {
            return Err(Refusal::NotGrpc);
        }
        let code = match value.parse::<u64>() {
            Ok(n) => GrpcCode::from_code(n),
            Err(_) => GrpcCode::from_name(value),
        }
        .ok_or(Refusal::Malformed {
            header: ABORT_GRPC_HEADER,
            why: "not a gRPC status such as UNAVAILABLE or 14",
        })?;
        self.grpc
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, a)| a.clone())
            .ok_or_else(|| not_allowed(ABORT_GRPC_HEADER, value))
    }
}

/// The value of a header sent at most once, as short text.
fn single<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Result<Option<&'h str>, Refusal> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let malformed = |why| Refusal::Malformed {
        header: name.clone(),
        why,
    };
    if values.next().is_some() {
        return Err(malformed("sent more than once"));
    }
    if value.len() > MAX_VALUE_BYTES {
        return Err(malformed("longer than 32 bytes"));
    }
    value
        .to_str()
        .map(str::trim)
        .map(Some)
        .map_err(|_| malformed("not printable ASCII"))
}

fn not_allowed(header: HeaderName, value: &str) -> Refusal {
    Refusal::NotAllowed {
        header,
        value: value.to_owned(),
    }
}

/// Removes the control headers (all their values).
pub fn strip_control_headers(headers: &mut HeaderMap) {
    for name in &CONTROL_HEADERS {
        headers.remove(name);
    }
}
