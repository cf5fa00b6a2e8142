//! The `serve` flags that bound what clients can make the server spend:
//! connections, per-phase deadlines, concurrent reviews and buffered review
//! bodies (see docs/resource-budget.md for how the defaults were sized).
use std::time::Duration;

use clap::Args;

use super::error::CommandError;
use crate::admission::ReviewLimits;
use crate::admission::intake::{
    DEFAULT_BODY_BUDGET_BYTES, DEFAULT_MAX_CONCURRENT_REVIEWS, DEFAULT_REVIEW_WAIT,
};
use crate::metrics::ConnMetrics;
use crate::server::{DEFAULT_MAX_CONNECTIONS, ServeOptions};

/// Client bounds of `serve`.
#[derive(Args, Clone)]
pub struct LimitArgs {
    /// Connections open at once; beyond, new connections wait in the listen backlog.
    #[arg(long, env = "FAULTLINE_WEBHOOK_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// Seconds a client has to finish the TLS handshake.
    #[arg(long, env = "FAULTLINE_WEBHOOK_HANDSHAKE_TIMEOUT_SECONDS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..))]
    handshake_timeout_seconds: u64,
    /// Seconds from the handshake until the first request must be in.
    #[arg(long, env = "FAULTLINE_WEBHOOK_FIRST_REQUEST_TIMEOUT_SECONDS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..))]
    first_request_timeout_seconds: u64,
    /// Seconds for an HTTP/1 request's headers (also the HTTP/1 keep-alive idle time).
    #[arg(long, env = "FAULTLINE_WEBHOOK_HEADER_TIMEOUT_SECONDS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..))]
    header_timeout_seconds: u64,
    /// Seconds for a request's whole body, from its headers.
    #[arg(long, env = "FAULTLINE_WEBHOOK_BODY_TIMEOUT_SECONDS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..))]
    body_timeout_seconds: u64,
    /// Seconds a connection may stay with no request in flight after its first one.
    #[arg(long, env = "FAULTLINE_WEBHOOK_IDLE_TIMEOUT_SECONDS", default_value_t = 120,
          value_parser = clap::value_parser!(u64).range(1..))]
    idle_timeout_seconds: u64,
    /// AdmissionReviews decoded and decided at once; others wait, then get 429.
    #[arg(long, env = "FAULTLINE_WEBHOOK_MAX_CONCURRENT_REVIEWS", default_value_t = DEFAULT_MAX_CONCURRENT_REVIEWS as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_concurrent_reviews: u32,
    /// Bytes of AdmissionReview bodies buffered at once (at least --max-body-bytes).
    #[arg(long, env = "FAULTLINE_WEBHOOK_REVIEW_BODY_BUDGET_BYTES", default_value_t = DEFAULT_BODY_BUDGET_BYTES as u64,
          value_parser = clap::value_parser!(u64).range(1..=u64::from(u32::MAX)))]
    review_body_budget_bytes: u64,
    /// Milliseconds a review waits for a decode slot or body budget before its 429.
    #[arg(long, env = "FAULTLINE_WEBHOOK_REVIEW_WAIT_MS", default_value_t = DEFAULT_REVIEW_WAIT.as_millis() as u64,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    review_wait_ms: u64,
}

impl LimitArgs {
    /// The review bounds, checked against the body size limit: one maximal
    /// review must always fit the budget.
    pub fn review_limits(&self, max_body_bytes: usize) -> Result<ReviewLimits, CommandError> {
        let budget = usize::try_from(self.review_body_budget_bytes).unwrap_or(usize::MAX);
        if budget < max_body_bytes {
            return Err(CommandError::BodyBudgetTooSmall {
                budget,
                max_body_bytes,
            });
        }
        Ok(ReviewLimits {
            max_concurrent: self.max_concurrent_reviews as usize,
            body_budget_bytes: budget,
            wait: Duration::from_millis(self.review_wait_ms),
        })
    }

    pub fn serve_options(&self, drain: Duration, metrics: ConnMetrics) -> ServeOptions {
        ServeOptions {
            max_connections: self.max_connections as usize,
            handshake_timeout: Duration::from_secs(self.handshake_timeout_seconds),
            first_request_timeout: Duration::from_secs(self.first_request_timeout_seconds),
            header_read_timeout: Duration::from_secs(self.header_timeout_seconds),
            body_timeout: Duration::from_secs(self.body_timeout_seconds),
            idle_timeout: Duration::from_secs(self.idle_timeout_seconds),
            drain_timeout: drain,
            metrics,
            ..ServeOptions::default()
        }
    }
}
