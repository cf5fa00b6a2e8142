//! faultline-proxy: the fault-injection data plane.
//!
//! Layout, for a newcomer:
//! - `policy`: the fault language (parse, validate, compile, decide) and
//!   the `PolicyStore` holding the active policy. No I/O.
//! - `config`: `faultline-proxy run` flags and `FAULTLINE_*` variables.
//! - `server`: bind, run, drain; `listener`: accept, connection limit,
//!   original destination, connection faults, protocol detection
//!   (`detect`); then `http` (hyper, HTTP/1.1 + h2c + gRPC) or `tcp`.
//! - `faults`: the effects the data plane applies, from policy decisions;
//!   `io` (RST, byte-level faults), `throttle` (bandwidth),
//!   `upstream` (pooled upstream connections), `workers` (the
//!   thread-per-core runtimes connections run on), `signal` (drain, stop
//!   and reset-fault events as each connection's task sees them).
//! - `client`: the controller's policy stream; `faults_file`: the watched
//!   policy file; `admin`: /healthz /readyz
//!   /metrics /policy; `metrics`; `telemetry` (logs); `limits` (the
//!   open-file limit, raised at start-up).
//! - `init`: `faultline-proxy init`, the iptables capture rules installed
//!   by the `faultline-init` container; `wait`: `faultline-proxy wait-ready`,
//!   the classic sidecar's postStart hook.
//!
//! Tests and the e2e crate run the proxy in-process:
//! `Proxy::bind(Config::from_env(env)?)` then `.run(store, shutdown)`.
pub mod admin;
pub mod client;
pub mod config;
pub mod detect;
pub mod faults;
pub mod faults_file;
pub mod http;
pub mod init;
pub mod io;
pub mod limits;
pub mod listener;
pub mod metrics;
pub mod policy;
pub mod server;
pub mod signal;
pub mod tcp;
pub mod telemetry;
pub mod throttle;
pub mod upstream;
pub mod wait;
pub mod workers;

pub use config::Config;
pub use server::{Proxy, RunError, run};

/// An error and its causes on one line: "failed to x: failed to y: cause".
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}
