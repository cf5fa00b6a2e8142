//! Certificates for the webhook's TLS server.
//!
//! Pure part (`certs/bundle.rs`): an rcgen CA (10 years) and a serving certificate
//! (1 year) for `faultline-webhook.faultline-system.svc` and its other DNS
//! forms, and the renewal decision. Kubernetes part (`certs/secret.rs`): the
//! Secret `faultline-webhook-tls` (`ca.crt`, `ca.key`, `tls.crt`, `tls.key`),
//! bootstrap when missing, renewal of the serving certificate with the same
//! CA (so `caBundle` does not change and no handshake fails), and patching
//! `caBundle` into our webhook configurations.

mod bundle;
mod secret;

pub use bundle::{
    CertBundle, CertError, Renewal, covers, dns_names, generate, issue, not_after, renewal,
};
pub use secret::{CertManager, SecretError, patch_ca_bundle};
