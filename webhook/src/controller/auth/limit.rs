//! How many TokenReviews may start: a token bucket (`rate` per second, up to
//! `burst` at once). A refused caller is told when to come back, and those
//! times are handed out one bucket slot apart, so ten thousand proxies
//! cut off together come back spread over `N / rate` seconds instead of all
//! at the next second.

use std::time::Duration;

use tokio::time::Instant;

/// The bucket's shape.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: f64,
    /// The latest a refused caller is told to come back.
    pub max_retry_after: Duration,
}

/// A token bucket with spread-out retry hints.
#[derive(Debug)]
pub struct Bucket {
    rate: Rate,
    tokens: f64,
    last: Instant,
    /// The time already promised to the most recently refused caller.
    promised: Instant,
}

impl Bucket {
    pub fn new(rate: Rate, now: Instant) -> Self {
        Self {
            tokens: rate.burst,
            last: now,
            promised: now,
            rate,
        }
    }

    /// Take one token, or learn how long to wait before asking again.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        Err(self.hint(now))
    }

    /// A spread-out retry time without taking a token (for callers refused
    /// for another reason, such as too many reviews in flight).
    pub fn hint(&mut self, now: Instant) -> Duration {
        self.refill(now);
        let slot = Duration::from_secs_f64(1.0 / self.rate.per_second.max(f64::MIN_POSITIVE));
        let missing = (1.0 - self.tokens).max(0.0);
        let next_token = now + Duration::from_secs_f64(missing / self.rate.per_second.max(1e-9));
        let at = self.promised.max(next_token).max(now) + slot;
        self.promised = at.min(now + self.rate.max_retry_after);
        self.promised.saturating_duration_since(now)
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate.per_second).min(self.rate.burst);
        self.last = self.last.max(now);
    }
}

/// `Retry-After` seconds for a wait (whole seconds, at least 1).
pub fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(per_second: f64, burst: f64) -> Rate {
        Rate {
            per_second,
            burst,
            max_retry_after: Duration::from_secs(30),
        }
    }

    #[test]
    fn a_burst_passes_then_the_rate_holds() {
        let t0 = Instant::now();
        let mut b = Bucket::new(rate(10.0, 5.0), t0);
        let passed = (0..100).filter(|_| b.take(t0).is_ok()).count();
        assert_eq!(passed, 5);
        // One second later the bucket is full again: the burst, not the rate.
        let t1 = t0 + Duration::from_secs(1);
        let passed = (0..100).filter(|_| b.take(t1).is_ok()).count();
        assert_eq!(passed, 5, "refill is capped at the burst");
        let t2 = t1 + Duration::from_millis(300);
        assert_eq!((0..100).filter(|_| b.take(t2).is_ok()).count(), 3);
    }

    #[test]
    fn refused_callers_are_spread_one_slot_apart_up_to_the_cap() {
        let t0 = Instant::now();
        let mut b = Bucket::new(rate(100.0, 1.0), t0);
        assert!(b.take(t0).is_ok());
        let hints: Vec<Duration> = (0..5000).filter_map(|_| b.take(t0).err()).collect();
        assert_eq!(hints.len(), 5000);
        assert!(
            hints.windows(2).all(|w| w[0] <= w[1]),
            "hints never go back"
        );
        // 100/s: the 500th refused caller is told about 5 s.
        let h = hints[499].as_secs_f64();
        assert!((4.9..=5.1).contains(&h), "{h}");
        assert_eq!(hints.last().copied(), Some(Duration::from_secs(30)));
    }

    #[test]
    fn retry_after_is_whole_seconds_and_never_zero() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(10)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
    }
}
