//! faultline-proxy: the fault-injection data plane.

pub mod policy;
