//! The proxy's policy stream client: keeps this proxy's [`PolicyStore`] in
//! step with the controller.
//!
//! Layout: `wire` is the ndjson message format (shared with the controller),
//! `connect` opens one TLS + HTTP/1.1 stream, `backoff` computes reconnect
//! delays, `session` is the reconnect loop; this file holds the config.
//!
//! Behaviour: every connect re-reads the bearer token file (projected service
//! account tokens rotate), each `policy` line is re-validated with
//! [`policy::parse`] and applied atomically, a line that fails validation is
//! logged and ignored (the last good policy stays), a stream silent for longer
//! than the heartbeat timeout is dropped, and while disconnected the proxy keeps
//! its last good policy and reports `connected = false`.

pub mod backoff;
pub mod connect;
mod session;
pub mod wire;

pub use session::{apply_message, run};

use std::path::PathBuf;
use std::time::Duration;

use connect::Endpoint;

/// Env var: base URL of the controller, e.g. `https://faultline-webhook.faultline-system.svc:443`.
pub const ENV_CONTROLLER_URL: &str = "FAULTLINE_CONTROLLER_URL";
/// Env var: PEM text of the CA that signed the controller's serving cert.
pub const ENV_CA_PEM: &str = "FAULTLINE_CA_PEM";
/// Env var: path of a PEM file with that CA (used when `FAULTLINE_CA_PEM` is unset).
pub const ENV_CA_FILE: &str = "FAULTLINE_CA_FILE";
/// Env var: path of the projected service account token (audience `faultline`).
pub const ENV_TOKEN_FILE: &str = "FAULTLINE_TOKEN_FILE";
/// Env vars: this pod's identity, sent so the controller can refuse a mismatch.
pub const ENV_POD_NAME: &str = "FAULTLINE_POD_NAME";
pub const ENV_POD_NAMESPACE: &str = "FAULTLINE_POD_NAMESPACE";
/// Where the injected pod spec mounts the token.
pub const DEFAULT_TOKEN_FILE: &str = "/var/run/secrets/faultline/token";
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
    #[error("no certificate found in the controller CA PEM ({ENV_CA_PEM} / {ENV_CA_FILE})")]
    NoCa,
    #[error("failed to read the controller CA file {path}")]
    CaFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{ENV_CONTROLLER_URL} is set but neither {ENV_CA_PEM} nor {ENV_CA_FILE} is")]
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
    Line(#[from] wire::LineTooLong),
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
    /// Build from environment pairs; `Ok(None)` when no controller URL is set
    /// (standalone proxy). Reads `FAULTLINE_CA_FILE` now so that a bad path is
    /// reported before any socket is bound.
    pub fn from_env<I, K, V>(vars: I) -> Result<Option<Self>, ClientError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: Into<String>,
    {
        let mut env = std::collections::HashMap::new();
        for (k, v) in vars {
            env.insert(k.as_ref().to_string(), v.into());
        }
        let Some(url) = env
            .get(ENV_CONTROLLER_URL)
            .filter(|u| !u.is_empty())
            .cloned()
        else {
            return Ok(None);
        };
        let ca_pem = match (
            env.get(ENV_CA_PEM).filter(|v| !v.is_empty()),
            env.get(ENV_CA_FILE),
        ) {
            (Some(pem), _) => pem.as_bytes().to_vec(),
            (None, Some(path)) if !path.is_empty() => {
                std::fs::read(path).map_err(|source| ClientError::CaFile {
                    path: PathBuf::from(path),
                    source,
                })?
            }
            _ => return Err(ClientError::MissingCa),
        };
        let token_file = PathBuf::from(
            env.get(ENV_TOKEN_FILE)
                .filter(|v| !v.is_empty())
                .map_or(DEFAULT_TOKEN_FILE, |v| v),
        );
        let pod = match (env.get(ENV_POD_NAMESPACE), env.get(ENV_POD_NAME)) {
            (Some(ns), Some(name)) if !ns.is_empty() && !name.is_empty() => {
                Some((ns.clone(), name.clone()))
            }
            _ => None,
        };
        let config = Self {
            url,
            ca_pem,
            token_file,
            pod,
            heartbeat_timeout: DEFAULT_HEARTBEAT_TIMEOUT,
            backoff_base: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
        };
        config.validate()?;
        Ok(Some(config))
    }

    /// Check URL and CA without connecting.
    pub fn validate(&self) -> Result<(), ClientError> {
        Endpoint::new(&self.url, &self.ca_pem).map(|_| ())
    }
}

#[cfg(test)]
mod tests;
