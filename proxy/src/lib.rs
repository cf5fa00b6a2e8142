//! faultline-proxy: the fault-injection data plane.

pub mod client;
pub mod policy;
