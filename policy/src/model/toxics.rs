//! The byte-stream faults (after Toxiproxy's toxics): `slicer`,
//! `limitData` and `slowClose`, and the [`Side`] of a connection they act
//! on. `bandwidth`'s per-side rates are in `faults`.
use serde::{Deserialize, Serialize};

use super::units::HumanDuration;

/// Which way the bytes of a connection flow, named after the exchange
/// rather than after the pod: `request` is what the side that opened the
/// connection sends (the HTTP request; for inbound traffic the remote
/// client's bytes, for outbound the pod's own), `response` is what the
/// side that accepted it sends back. Unlike "upload"/"download" or
/// "inbound"/"outbound", this reads the same for both `match.direction`s.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Request,
    /// What the client receives: the usual thing to disturb.
    #[default]
    Response,
    Both,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Request => "request",
            Self::Response => "response",
            Self::Both => "both",
        }
    }

    pub fn has_request(self) -> bool {
        matches!(self, Self::Request | Self::Both)
    }

    pub fn has_response(self) -> bool {
        matches!(self, Self::Response | Self::Both)
    }
}

/// Split the bytes into small chunks (`averageSize` ± `sizeVariation`),
/// pausing `delay` between chunks.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Slicer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average_size: Option<u64>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size_variation: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<HumanDuration>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub side: Side,
}

/// Close the connection once `bytes` bytes went through on `side`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LimitData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub side: Side,
}

/// Hold an orderly close (FIN) on `side` for `delay` before passing it on.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SlowClose {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<HumanDuration>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub side: Side,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

#[cfg(test)]
mod tests;
