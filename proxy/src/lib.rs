//! faultline-proxy: the fault-injection data plane.
//!
//! The fault language itself (parse, validate, compile, decide) is the
//! `faultline-policy` crate; this crate applies its decisions to traffic.
//! Modules, bottom layer first; each uses only the layers below it:
//!
//! 1. Leaves, used everywhere: `body` (the one body type), `clock` (a
//!    coarse clock and hyper's header deadline on it), `events` (drain,
//!    stop and reset-fault events as each connection's task sees them),
//!    `metrics`, `throttle` (bandwidth buckets); process setup: `config`
//!    (`faultline-proxy run` flags and `FAULTLINE_*` variables),
//!    `telemetry` (logs), `limits` (the open-file limit), `workers` (the
//!    thread-per-core runtimes connections run on).
//! 2. `source`: the policy store and what feeds it (the watched policy
//!    file, the controller's stream); `upstream`: pooled upstream
//!    connections.
//! 3. `state` ([`state::ProxyState`], shared by every connection) and
//!    `conn` ([`conn::ConnCtx`], one connection).
//! 4. `traffic`: accept, detect, then `http` (hyper, HTTP/1.1 + h2c +
//!    gRPC) or `tcp`, with `effects` (policy decisions as effects) and
//!    `client_io`; beside it `dns` (the DNS listener, where the pod's DNS
//!    is captured) and `admin`: /healthz /readyz /metrics /policy.
//! 5. `server`: bind, run, drain ([`Proxy`]); `commands`: the command line
//!    of `faultline-proxy` (`run`, `init`, `wait-ready`), which `main` runs.
//!
//! Other commands: `init` (`faultline-proxy init`, the iptables capture
//! rules installed by the `faultline-init` container) and `wait`
//! (`faultline-proxy wait-ready`, the classic sidecar's postStart hook).
//!
//! Tests and the e2e crate run the proxy in-process:
//! `Proxy::bind(Config::from_env(env)?)` then `.run(store, shutdown)`.
pub mod admin;
pub mod body;
pub mod clock;
pub mod commands;
pub mod config;
pub mod conn;
pub mod dns;
pub mod events;
pub mod init;
pub mod limits;
pub mod metrics;
pub mod server;
pub mod source;
pub mod state;
pub mod telemetry;
pub mod throttle;
pub mod traffic;
pub mod upstream;
pub mod wait;
pub mod workers;

pub use config::Config;
pub use faultline_policy::error_chain;
pub use server::{Proxy, RunError, run};
pub use source::store::PolicyStore;
