//! The helpers faultline's tests share, in one place:
//! - `wait`: polling until a condition holds or a deadline passes
//!   ([`eventually`] for assertions, [`wait_for`] for harness steps that
//!   report what they saw last), never a fixed sleep;
//! - `dns`: a resolver stand-in (a small real DNS server, UDP and TCP);
//! - `metrics`: reading values out of Prometheus text (`/metrics`);
//! - `fixtures` (feature `k8s`): Kubernetes objects, e.g. [`fixtures::deployment`];
//! - `tls` (feature `tls`): a throwaway CA and a `localhost` certificate.
//!
//! Error chains are printed with `faultline_policy::error_chain`, as the
//! binaries print them.
pub mod dns;
#[cfg(feature = "k8s")]
pub mod fixtures;
pub mod metrics;
#[cfg(feature = "tls")]
pub mod tls;
pub mod wait;

pub use wait::{Backoff, WaitError, eventually, until_some, wait_for};
