//! The proxy's policy stream client: keeps this proxy's [`PolicyStore`](super::store::PolicyStore) in
//! step with the controller.
//!
//! Layout: the ndjson message format is `faultline_policy::wire` (shared
//! with the controller), `connect` opens one TLS + HTTP/1.1 stream, `backoff` computes reconnect
//! delays, `session` is the reconnect loop, `config` the client's settings, `error` its
//! errors.
//!
//! Behaviour: every connect re-reads the bearer token file (projected service
//! account tokens rotate), each `policy` line is re-validated with
//! [`faultline_policy::parse`] and applied atomically, a line that fails validation is
//! logged and ignored (the last good policy stays), a stream silent for longer
//! than the heartbeat timeout is dropped, and while disconnected the proxy keeps
//! its last good policy and reports `connected = false`.

pub mod backoff;
mod config;
pub mod connect;
mod error;
mod session;

pub use config::{ClientConfig, DEFAULT_HEARTBEAT_TIMEOUT};
pub use error::ClientError;
pub use session::{apply_message, run, spawn};

#[cfg(test)]
mod tests;
