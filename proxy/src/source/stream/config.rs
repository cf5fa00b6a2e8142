//! Where and how the stream client connects: [`ClientConfig`].
use std::path::PathBuf;
use std::time::Duration;

use super::connect::Endpoint;
use super::error::ClientError;

/// The controller sends a heartbeat every 10 s; three missed ones mean the
/// connection is dead even if TCP has not noticed.
pub const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(30);

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
