//! Logging setup: `FAULTLINE_LOG` (an `EnvFilter`, default `info`) and
//! `FAULTLINE_LOG_FORMAT` (`json` or `plain`, default `plain`).

use tracing_subscriber::EnvFilter;

pub const LOG_ENV: &str = faultline_policy::contract::env::LOG;
pub const LOG_FORMAT_ENV: &str = faultline_policy::contract::env::LOG_FORMAT;

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid {LOG_ENV}: {0}")]
    Filter(#[source] tracing_subscriber::filter::ParseError),
    #[error("invalid {LOG_FORMAT_ENV} {0:?}: expected json or plain")]
    Format(String),
}

/// Install the global subscriber; logs go to stderr (stdout carries
/// `inject`/`certs` output).
pub fn init() -> Result<(), TelemetryError> {
    let filter = match std::env::var(LOG_ENV) {
        Ok(spec) if !spec.trim().is_empty() => {
            EnvFilter::try_new(spec).map_err(TelemetryError::Filter)?
        }
        _ => EnvFilter::new("info"),
    };
    let format = std::env::var(LOG_FORMAT_ENV).unwrap_or_else(|_| "plain".into());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format.as_str() {
        "json" => {
            let _ = builder.json().flatten_event(true).try_init();
        }
        "plain" | "" => {
            let _ = builder.try_init();
        }
        other => return Err(TelemetryError::Format(other.to_string())),
    }
    Ok(())
}
