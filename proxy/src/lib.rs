//! faultline-proxy: the fault-injection data plane.

pub mod init;
pub mod policy;
