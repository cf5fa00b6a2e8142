//! The proxy's policy stream client: keeps this proxy's [`PolicyStore`](super::store::PolicyStore) in
//! step with the controller.
//!
//! Layout: the ndjson message format is `faultline_policy::wire` (shared
//! with the controller), `connect` opens one TLS + HTTP/1.1 stream, `backoff` computes reconnect
//! delays, `session` is the reconnect loop; this file holds the config.
//!
//! Behaviour: every connect re-reads the bearer token file (projected service
//! account tokens rotate), each `policy` line is re-validated with
//! [`faultline_policy::parse`] and applied atomically, a line that fails validation is
//! logged and ignored (the last good policy stays), a stream silent for longer
//! than the heartbeat timeout is dropped, and while disconnected the proxy keeps
//! its last good policy and reports `connected = false`.

pub mod backoff;
pub mod connect;
mod session;

pub use session::{apply_message, run, spawn};

use std::path::PathBuf;
use std::time::Duration;

use connect::Endpoint;

/// The controller sends a heartbeat every 10 s; three missed ones mean the
/// connection is dead even if TCP has not noticed.
pub const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(30);

/// Errors of the stream client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("failed to parse controller URL {url:?}")]
    Url {
        url: String,
        #[source]
        source: http::uri::InvalidUri,
    },
    #[error("controller URL {0:?} must be https://HOST[:PORT]")]
    Scheme(String),
    #[error("controller host {0:?} is not a valid TLS server name")]
    ServerName(String),
    #[error("failed to read the controller CA PEM")]
    CaPem(#[source] std::io::Error),
    #[error("failed to use the controller CA certificate")]
    CaCert(#[source] rustls::Error),
    #[error("no certificate found in the controller CA PEM (FAULTLINE_CA_PEM / FAULTLINE_CA_FILE)")]
    NoCa,
    #[error("failed to read the controller CA file {path}")]
    CaFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "FAULTLINE_CONTROLLER_URL is set but neither FAULTLINE_CA_PEM nor FAULTLINE_CA_FILE is"
    )]
    MissingCa,
    #[error("failed to read the service account token {path}")]
    Token {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to connect to the controller at {endpoint}")]
    Connect {
        endpoint: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed the TLS handshake with the controller")]
    Tls(#[source] std::io::Error),
    #[error("failed to build the stream request")]
    Request(#[source] http::Error),
    #[error("failed the HTTP exchange with the controller")]
    Http(#[source] hyper::Error),
    #[error("controller refused the policy stream: {status} {body}")]
    Status {
        status: http::StatusCode,
        body: String,
    },
    #[error("no heartbeat from the controller for {0:?}")]
    HeartbeatTimeout(Duration),
    #[error("policy stream is malformed")]
    Line(#[from] faultline_policy::wire::LineTooLong),
}

/// Configuration of the stream client.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// `https://host[:port]` of the controller.
    pub url: String,
    /// PEM text of the controller CA.
    pub ca_pem: Vec<u8>,
    /// Token file, re-read on every connect.
    pub token_file: PathBuf,
    /// `(namespace, pod name)`, when known.
    pub pod: Option<(String, String)>,
    /// Drop the stream after this long without any line.
    pub heartbeat_timeout: Duration,
    /// First reconnect delay ceiling.
    pub backoff_base: Duration,
    /// Largest reconnect delay.
    pub backoff_max: Duration,
}

impl ClientConfig {
    /// From the proxy's parsed `run` configuration. The CA file is read now;
    /// the token file is read on every connect.
    pub fn from_proxy_config(c: &crate::config::ControllerConfig) -> Result<Self, ClientError> {
        use crate::config::CaSource;
        let ca_pem = match &c.ca {
            CaSource::Pem(pem) => pem.as_bytes().to_vec(),
            CaSource::File(path) => std::fs::read(path).map_err(|source| ClientError::CaFile {
                path: path.clone(),
                source,
            })?,
            // No platform root store is bundled: the injected pod always
            // carries the controller CA.
            CaSource::System => return Err(ClientError::MissingCa),
        };
        let pod = match (&c.pod_namespace, &c.pod_name) {
            (Some(ns), Some(name)) if !ns.is_empty() && !name.is_empty() => {
                Some((ns.clone(), name.clone()))
            }
            _ => None,
        };
        let config = Self {
            url: c.url.clone(),
            ca_pem,
            token_file: c.token_file.clone(),
            pod,
            heartbeat_timeout: DEFAULT_HEARTBEAT_TIMEOUT,
            backoff_base: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
        };
        config.validate()?;
        Ok(config)
    }

    /// Check URL and CA without connecting.
    pub fn validate(&self) -> Result<(), ClientError> {
        Endpoint::new(&self.url, &self.ca_pem).map(|_| ())
    }
}

#[cfg(test)]
mod tests;
