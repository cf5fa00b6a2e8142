//! Errors of the stream client.
use std::path::PathBuf;
use std::time::Duration;

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
        /// The controller's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
    },
    #[error("no heartbeat from the controller for {0:?}")]
    HeartbeatTimeout(Duration),
    #[error("policy stream is malformed")]
    Line(#[from] faultline_policy::wire::LineTooLong),
}

impl ClientError {
    /// How long the controller asked us to wait before trying again.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}
