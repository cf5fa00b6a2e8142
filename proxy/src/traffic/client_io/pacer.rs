//! One side of a client connection under byte-level faults: how many bytes
//! may move now (bandwidth, slicer), how many may move at all (limitData),
//! and how long its orderly close is held (slowClose). Nothing here
//! buffers data: a fault only shortens or delays the reads and writes the
//! copier (or hyper) makes anyway, so its cost is one timer per side.
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use rand::Rng;
use tokio::time::Sleep;

use crate::throttle::Throttle;

/// The byte-level faults on one side of a connection.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Shape {
    /// Bytes per second.
    pub rate: Option<u64>,
    pub slice: Option<Slice>,
    /// Bytes that may pass before the connection is closed.
    pub limit: Option<u64>,
    /// How long an orderly close (FIN) is held before it is passed on.
    pub slow_close: Option<Duration>,
}

impl Shape {
    pub fn is_empty(&self) -> bool {
        self == &Shape::default()
    }
}

/// Chunks of `average` ± `variation` bytes, `delay` apart (validation
/// keeps `variation < average`, so a chunk has at least one byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slice {
    pub average: u32,
    pub variation: u32,
    pub delay: Duration,
}

impl Slice {
    /// The size of the next chunk, uniform in `average ± variation`.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> usize {
        let low = self.average.saturating_sub(self.variation).max(1);
        let high = self.average.saturating_add(self.variation).max(low);
        rng.random_range(low..=high) as usize
    }
}

pub(super) struct Pacer {
    throttle: Option<Throttle>,
    slice: Option<Slice>,
    limit: Option<u64>,
    slow_close: Option<Duration>,
    /// The side's one timer: a throttle's wait, the pause between two
    /// chunks, or a held close.
    sleep: Option<Pin<Box<Sleep>>>,
    /// A grant not used yet (the socket was not ready): kept for the next
    /// try, so waiting for the peer spends no tokens and keeps the chunk.
    banked: Option<usize>,
    /// A chunk went through: pause before the next.
    pause: bool,
}

impl Pacer {
    pub fn new(shape: Shape) -> Self {
        Pacer {
            throttle: shape.rate.map(Throttle::new),
            slice: shape.slice,
            limit: shape.limit,
            slow_close: shape.slow_close,
            sleep: None,
            banked: None,
            pause: false,
        }
    }

    /// Bytes this side may still move before limitData closes it.
    pub fn left(&self) -> Option<u64> {
        self.limit
    }

    /// How many of `want` (> 0) bytes may move now.
    pub fn poll_grant(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<usize> {
        if let Some(banked) = self.banked {
            return Poll::Ready(banked.min(want));
        }
        loop {
            if let Some(timer) = self.sleep.as_mut() {
                ready!(timer.as_mut().poll(cx));
                self.sleep = None;
            }
            if std::mem::take(&mut self.pause)
                && let Some(slice) = self.slice
                && !slice.delay.is_zero()
            {
                self.sleep = Some(Box::pin(tokio::time::sleep(slice.delay)));
                continue;
            }
            let mut want = want;
            if let Some(slice) = &self.slice {
                want = want.min(slice.sample(&mut rand::rng()));
            }
            let granted = match &self.throttle {
                None => want,
                Some(throttle) => match throttle.try_take(want) {
                    Ok(n) => n,
                    Err(wait) => {
                        self.sleep = Some(Box::pin(tokio::time::sleep(wait)));
                        continue;
                    }
                },
            };
            self.banked = Some(granted);
            return Poll::Ready(granted);
        }
    }

    /// `n` bytes of the last grant moved.
    pub fn moved(&mut self, n: usize) {
        self.banked = None;
        if let Some(left) = self.limit.as_mut() {
            *left = left.saturating_sub(n as u64);
        }
        if n > 0 && self.slice.is_some() {
            self.pause = true;
        }
    }

    /// Holds this side's orderly close for the slowClose delay (once).
    pub fn poll_hold_close(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(delay) = self.slow_close.take() {
            self.sleep = Some(Box::pin(tokio::time::sleep(delay)));
        }
        if let Some(timer) = self.sleep.as_mut() {
            ready!(timer.as_mut().poll(cx));
            self.sleep = None;
        }
        Poll::Ready(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn slices_stay_within_their_bounds() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let slice = Slice {
            average: 10,
            variation: 9,
            delay: Duration::ZERO,
        };
        let sizes: Vec<usize> = (0..2000).map(|_| slice.sample(&mut rng)).collect();
        assert_eq!(sizes.iter().min(), Some(&1));
        assert_eq!(sizes.iter().max(), Some(&19));
        let exact = Slice {
            average: 7,
            variation: 0,
            delay: Duration::ZERO,
        };
        assert_eq!(exact.sample(&mut rng), 7);
    }
}
