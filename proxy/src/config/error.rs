//! Why `faultline-proxy run` refused its configuration.

/// Why a configuration was refused. Each message names the flag and variable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("failed to parse {flag} / {env}: {value:?} is not {expected}")]
    Invalid {
        flag: &'static str,
        env: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("failed to resolve {flag} / {env} {value:?}")]
    Resolve {
        flag: &'static str,
        env: &'static str,
        value: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Conflict(&'static str),
}
