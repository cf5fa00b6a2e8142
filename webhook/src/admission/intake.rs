//! The review bounds: how many bytes of review bodies may be buffered or
//! being decoded (a byte budget, held until the review is answered) and how
//! many reviews may be decoded and decided at once (decode slots). A review over either bound waits up to [`ReviewLimits::wait`],
//! then is answered 429 with `Retry-After: 1`: the API server's REST client
//! retries such an answer within the webhook's `timeoutSeconds`, where any
//! other error (or a slow answer) would fall through `failurePolicy: Ignore`.
//!
//! A body with a `Content-Length` (every review the API server sends) takes
//! its whole share of the budget before it is read, all or nothing, so
//! concurrent bodies never hold parts of the budget while waiting for the
//! rest of it; a chunked body takes its share frame by frame. The body's
//! total time is bounded by the server's body deadline
//! ([`crate::server::BodyDeadline`]), so a client that announces a body and
//! never sends it holds its share only that long.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, header};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use prometheus_client::metrics::gauge::Gauge;
use thiserror::Error;
use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::metrics::{Metrics, RejectReason, WarnEvery};
use crate::server::BodyDeadline;

/// Decode slots. A fault policy costs dozens of times its size while it is
/// parsed (bench/webhook-memory.sh: ~75 MiB for a 1 MiB document, before
/// policies were capped at 256 KiB); a review carries at most two. Two
/// slots keep the worst case well inside the 256 MiB limit, and two cores
/// gain nothing from more (a pod review takes ~0.1 ms).
pub const DEFAULT_MAX_CONCURRENT_REVIEWS: usize = 2;
/// Review bodies buffered or being decoded at once, in bytes: one review of
/// the largest accepted size (4 MiB), so two maximal reviews are never in
/// memory together, while small reviews still pass beside smaller ones.
pub const DEFAULT_BODY_BUDGET_BYTES: usize = 4 * 1024 * 1024;
/// How long a review waits for a slot or budget before its 429.
pub const DEFAULT_REVIEW_WAIT: Duration = Duration::from_secs(1);
/// Reviews that may wait at once; beyond, 429 at once. A waiting review's
/// unread body sits in its HTTP/2 stream window (64 KiB), so this bounds
/// that memory too (4 MiB).
pub const MAX_WAITING_REVIEWS: usize = 64;

/// The review bounds; [`Default`] is what `serve` uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReviewLimits {
    pub max_concurrent: usize,
    pub body_budget_bytes: usize,
    pub wait: Duration,
}

impl Default for ReviewLimits {
    fn default() -> Self {
        Self {
            max_concurrent: DEFAULT_MAX_CONCURRENT_REVIEWS,
            body_budget_bytes: DEFAULT_BODY_BUDGET_BYTES,
            wait: DEFAULT_REVIEW_WAIT,
        }
    }
}

/// Why a review was not read; each maps to one HTTP status.
#[derive(Debug, Error)]
pub enum IntakeError {
    #[error("failed to start the review: all {0} decode slots stayed busy; retry")]
    Busy(usize),
    #[error("failed to buffer the review: the {0}-byte body budget stayed spent; retry")]
    BodyBudget(usize),
    #[error("failed to read the review: the body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("failed to read the review: the body did not arrive in time")]
    Timeout,
    #[error("failed to queue the review: {0} reviews are already waiting; retry")]
    QueueFull(usize),
    #[error("failed to read the review body: {0}")]
    Read(#[source] axum::Error),
}

impl IntakeError {
    pub fn reject_reason(&self) -> Option<RejectReason> {
        match self {
            Self::Busy(_) => Some(RejectReason::Busy),
            Self::BodyBudget(_) => Some(RejectReason::BodyBudget),
            Self::QueueFull(_) => Some(RejectReason::QueueFull),
            _ => None,
        }
    }
}

/// The semaphores behind [`ReviewLimits`], shared by both endpoints.
#[derive(Clone, Debug)]
pub struct ReviewGate {
    limits: ReviewLimits,
    slots: Arc<Semaphore>,
    budget: Arc<Semaphore>,
    queue: Arc<Semaphore>,
    warn: WarnEvery,
}

impl ReviewGate {
    pub fn new(limits: ReviewLimits) -> Self {
        // Permits are u32: a budget beyond 4 GiB is clamped (startup refuses one anyway).
        let budget = limits.body_budget_bytes.min(u32::MAX as usize);
        Self {
            limits: ReviewLimits {
                body_budget_bytes: budget,
                ..limits
            },
            slots: Arc::new(Semaphore::new(limits.max_concurrent.max(1))),
            budget: Arc::new(Semaphore::new(budget)),
            queue: Arc::new(Semaphore::new(MAX_WAITING_REVIEWS)),
            warn: WarnEvery::default(),
        }
    }

    pub fn limits(&self) -> ReviewLimits {
        self.limits
    }

    /// Buffer the body within the budget, then take a decode slot.
    pub async fn admit(
        &self,
        headers: &HeaderMap,
        body: Body,
        max_body: usize,
        metrics: &Metrics,
    ) -> Result<Admitted, IntakeError> {
        let result = self.admit_inner(headers, body, max_body, metrics).await;
        if let Err(error) = &result
            && let Some(reason) = error.reject_reason()
        {
            metrics.rejected(reason);
            if let Some(suppressed) = self.warn.check() {
                tracing::warn!(
                    %error,
                    reason = reason.as_str(),
                    max_concurrent = self.limits.max_concurrent,
                    body_budget_bytes = self.limits.body_budget_bytes,
                    suppressed,
                    "admission review bound hit: answered 429"
                );
            }
        }
        result
    }

    async fn admit_inner(
        &self,
        headers: &HeaderMap,
        body: Body,
        max_body: usize,
        metrics: &Metrics,
    ) -> Result<Admitted, IntakeError> {
        let give_up = Instant::now() + self.limits.wait;
        let announced = content_length(headers);
        if announced.is_some_and(|n| n > max_body) {
            return Err(IntakeError::TooLarge(max_body));
        }
        let (body, held) = self
            .buffer(body, announced, max_body, give_up, metrics)
            .await?;
        let slot = match self.slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let busy = IntakeError::Busy(self.limits.max_concurrent);
                let acquire = self.slots.clone().acquire_owned();
                self.wait(acquire, give_up, metrics, busy).await?
            }
        };
        Ok(Admitted {
            body,
            held,
            slot: SlotHold {
                _permit: slot,
                _gauge: GaugeHold::new(&metrics.reviews_in_flight, 1),
            },
        })
    }

    async fn buffer(
        &self,
        mut body: Body,
        announced: Option<usize>,
        max_body: usize,
        give_up: Instant,
        metrics: &Metrics,
    ) -> Result<(Bytes, BudgetHold), IntakeError> {
        let mut held = BudgetHold::new(&metrics.body_bytes);
        // An announced body takes its whole share at once: bodies that each
        // took part of the budget could otherwise wait on one another until
        // every one of them timed out.
        if let Some(n) = announced {
            held.add(self.take_budget(n, give_up, metrics).await?, n);
        }
        // Sized once when announced: growing by doubling would peak at twice the body.
        let mut buf = BytesMut::with_capacity(announced.unwrap_or(0));
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(read_error)?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if buf.len() + data.len() > max_body {
                return Err(IntakeError::TooLarge(max_body));
            }
            if announced.is_none() {
                held.add(
                    self.take_budget(data.len(), give_up, metrics).await?,
                    data.len(),
                );
            }
            buf.extend_from_slice(&data);
        }
        Ok((buf.freeze(), held))
    }

    async fn take_budget(
        &self,
        bytes: usize,
        give_up: Instant,
        metrics: &Metrics,
    ) -> Result<OwnedSemaphorePermit, IntakeError> {
        let n = u32::try_from(bytes.min(self.limits.body_budget_bytes)).unwrap_or(u32::MAX);
        if let Ok(permit) = self.budget.clone().try_acquire_many_owned(n) {
            return Ok(permit);
        }
        let spent = IntakeError::BodyBudget(self.limits.body_budget_bytes);
        let acquire = self.budget.clone().acquire_many_owned(n);
        self.wait(acquire, give_up, metrics, spent).await
    }

    /// Wait for `acquire` until `give_up`, as one of at most
    /// [`MAX_WAITING_REVIEWS`]; `late` is the error when time runs out.
    async fn wait(
        &self,
        acquire: impl Future<Output = Result<OwnedSemaphorePermit, AcquireError>>,
        give_up: Instant,
        metrics: &Metrics,
        late: IntakeError,
    ) -> Result<OwnedSemaphorePermit, IntakeError> {
        let Ok(_queued) = self.queue.clone().try_acquire_owned() else {
            return Err(IntakeError::QueueFull(MAX_WAITING_REVIEWS));
        };
        let _waiting = GaugeHold::new(&metrics.reviews_waiting, 1);
        match tokio::time::timeout_at(give_up, acquire).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) | Err(_) => Err(late),
        }
    }
}

fn content_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The server's body deadline arrives as a body error; tell it from others.
fn read_error(error: axum::Error) -> IntakeError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(e) = source {
        if e.is::<BodyDeadline>() {
            return IntakeError::Timeout;
        }
        source = e.source();
    }
    IntakeError::Read(error)
}

/// A review that may be decoded: its body, the budget it holds and a slot.
/// Drop `body` and `held` once decoded; the slot covers decoding and deciding.
pub struct Admitted {
    pub body: Bytes,
    pub held: BudgetHold,
    pub slot: SlotHold,
}

/// Body budget in use, given back (and the gauge lowered) on drop.
pub struct BudgetHold {
    permit: Option<OwnedSemaphorePermit>,
    gauge: GaugeHold,
}

impl BudgetHold {
    fn new(gauge: &Gauge) -> Self {
        Self {
            permit: None,
            gauge: GaugeHold::new(gauge, 0),
        }
    }

    fn add(&mut self, permit: OwnedSemaphorePermit, bytes: usize) {
        match &mut self.permit {
            Some(held) => held.merge(permit),
            None => self.permit = Some(permit),
        }
        self.gauge.add(i64::try_from(bytes).unwrap_or(i64::MAX));
    }
}

/// A decode slot, counted in `reviews_in_flight` while held.
pub struct SlotHold {
    _permit: OwnedSemaphorePermit,
    _gauge: GaugeHold,
}

/// Adds to a gauge and takes it back on drop, so no exit path leaks a count.
struct GaugeHold {
    gauge: Gauge,
    amount: i64,
}

impl GaugeHold {
    fn new(gauge: &Gauge, amount: i64) -> Self {
        gauge.inc_by(amount);
        Self {
            gauge: gauge.clone(),
            amount,
        }
    }

    fn add(&mut self, amount: i64) {
        self.gauge.inc_by(amount);
        self.amount += amount;
    }
}

impl Drop for GaugeHold {
    fn drop(&mut self) {
        self.gauge.dec_by(self.amount);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use prometheus_client::registry::Registry;

    fn gate(max_concurrent: usize) -> (ReviewGate, Metrics) {
        let gate = ReviewGate::new(ReviewLimits {
            max_concurrent,
            body_budget_bytes: 1024,
            wait: Duration::from_millis(50),
        });
        (gate, Metrics::register(&mut Registry::default()))
    }

    async fn admit(
        gate: &ReviewGate,
        metrics: &Metrics,
        body: &'static str,
    ) -> Result<Admitted, IntakeError> {
        gate.admit(&HeaderMap::new(), Body::from(body), 512, metrics)
            .await
    }

    #[tokio::test]
    async fn a_review_waits_for_a_slot_then_is_refused_while_all_are_held() {
        let (gate, metrics) = gate(1);
        let first = admit(&gate, &metrics, "{}").await.unwrap();
        assert_eq!(metrics.reviews_in_flight.get(), 1);
        let refused = admit(&gate, &metrics, "{}").await.err().unwrap();
        assert!(matches!(refused, IntakeError::Busy(1)), "{refused}");
        assert_eq!(metrics.reviews_waiting.get(), 0);
        drop(first);
        assert_eq!(metrics.reviews_in_flight.get(), 0);
        let again = admit(&gate, &metrics, "{\"a\":1}").await.unwrap();
        assert_eq!(&again.body[..], b"{\"a\":1}");
        assert_eq!(metrics.body_bytes.get(), 7);
        drop(again);
        assert_eq!(metrics.body_bytes.get(), 0);
    }

    #[tokio::test]
    async fn bodies_over_the_limit_are_refused_whether_announced_or_not() {
        let (gate, metrics) = gate(1);
        let big: &'static str = "x".repeat(600).leak();
        let unannounced = admit(&gate, &metrics, big).await.err().unwrap();
        assert!(
            matches!(unannounced, IntakeError::TooLarge(512)),
            "{unannounced}"
        );
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, "600".parse().unwrap());
        let announced = gate
            .admit(&headers, Body::from(big), 512, &metrics)
            .await
            .err()
            .unwrap();
        assert!(
            matches!(announced, IntakeError::TooLarge(512)),
            "{announced}"
        );
        assert_eq!(metrics.body_bytes.get(), 0);
    }
}
