//! faultline-webhook: the injection webhook, its certificates and the policy
//! controller, as a library so tests (and the end-to-end crate) can run every
//! piece in-process.
//!
//! Layout (the names and ports shared with the proxy and with users are
//! `faultline_policy::contract`; the fault language is `faultline_policy`):
//! - [`commands`]: the `faultline-webhook` commands and their flags
//!   (`serve`, `inject`, `certs`); `main` only runs them.
//! - [`kubectl_fault`]: the `kubectl fault` plugin (`kubectl-fault` binary).
//! - [`config`]: injection [`Config`] and the names of the webhook's own objects.
//! - [`admission`]: `/mutate` + `/validate`; pure [`admission::mutate`] and
//!   [`admission::validate`].
//! - [`server`]: the TLS server ([`server::serve`]) and `/healthz` `/readyz` `/metrics`.
//! - [`server_version`]: the API server's version (native sidecar support), refreshed.
//! - [`tls`]: [`tls::TlsReloader`], certificates reloaded from files without restart.
//! - [`certs`]: rcgen CA + serving certificate, the Secret, caBundle patching, rotation.
//! - [`webhook_config`]: our Mutating/ValidatingWebhookConfiguration objects.
//! - [`inject`]: offline injection of YAML manifests (`faultline-webhook inject`).
//! - [`controller`]: the policy controller (workload and pod reflectors,
//!   policy resolution, expiry, the proxies' policy stream).
//! - [`metrics`], [`telemetry`]: Prometheus metrics and logging setup.

pub mod admission;
pub mod certs;
pub mod commands;
pub mod config;
pub mod controller;
pub mod inject;
pub mod kubectl_fault;
pub mod metrics;
pub mod server;
pub mod server_version;
pub mod telemetry;
pub mod tls;
pub mod webhook_config;

pub use config::Config;
