//! Structured logs: `tracing` with an `EnvFilter` (`FAULTLINE_LOG`) written
//! as plain text or JSON lines (`FAULTLINE_LOG_FORMAT`) to stderr.
use crate::config::LogFormat;

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("failed to parse log filter {filter:?}")]
    Filter {
        filter: String,
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    #[error("failed to install the log subscriber")]
    Install(#[source] tracing_subscriber::util::TryInitError),
}

/// Installs the global subscriber. Call once, from `main`.
pub fn init(filter: &str, format: LogFormat) -> Result<(), TelemetryError> {
    use tracing_subscriber::prelude::*;
    let env_filter = tracing_subscriber::EnvFilter::try_new(filter).map_err(|source| {
        TelemetryError::Filter {
            filter: filter.to_owned(),
            source,
        }
    })?;
    let registry = tracing_subscriber::registry().with(env_filter);
    match format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Plain => registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .try_init(),
    }
    .map_err(TelemetryError::Install)
}
