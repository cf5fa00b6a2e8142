//! faultline-webhook: the injection webhook, its certificates and the policy
//! controller, as a library so tests (and the end-to-end crate) can run every
//! piece in-process.
//!
//! Layout:
//! - [`config`]: injection [`Config`] and the user-facing names/ports.
//! - [`admission`]: `/mutate` + `/validate`; pure [`admission::mutate`] and
//!   [`admission::validate`].
//! - [`server`]: the TLS server ([`server::serve`]) and `/healthz` `/readyz` `/metrics`.
//! - [`tls`]: [`tls::TlsReloader`], certificates reloaded from files without restart.
//! - [`certs`]: rcgen CA + serving certificate, the Secret, caBundle patching, rotation.
//! - [`webhook_config`]: our Mutating/ValidatingWebhookConfiguration objects.
//! - [`inject`]: offline injection of YAML manifests (`faultline-webhook inject`).
//! - [`metrics`], [`telemetry`]: Prometheus metrics and logging setup.

pub mod admission;
pub mod certs;
pub mod cli;
pub mod config;
pub mod controller;
pub mod inject;
pub mod metrics;
pub mod server;
pub mod telemetry;
pub mod tls;
pub mod webhook_config;

pub use config::Config;
