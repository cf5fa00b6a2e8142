//! Bandwidth limiting: a token bucket (pure, [`TokenBucket`]) shared by the
//! streams of one connection ([`Throttle`]). Bodies and TCP copies ask for
//! `n` bytes, get a grant of at most `n`, or a time to wait.
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// Tokens are bytes. The bucket holds at most 50 ms of traffic so a
/// stream cannot burst far above its rate, but never less than 1 KiB so
/// slow rates still move whole small chunks.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(bytes_per_second: u64, now: Instant) -> Self {
        let rate = bytes_per_second.max(1) as f64;
        let capacity = (rate / 20.0).max(1024.0_f64.min(rate));
        TokenBucket {
            rate,
            capacity,
            tokens: capacity,
            last: now,
        }
    }

    pub fn rate(&self) -> u64 {
        self.rate as u64
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        self.last = now;
    }

    /// Grants up to `want` bytes now, or says how long to wait. A grant is
    /// only made once a reasonable chunk is available, so a slow stream
    /// moves in chunks rather than in single bytes.
    pub fn take(&mut self, now: Instant, want: usize) -> Result<usize, Duration> {
        if want == 0 {
            return Ok(0);
        }
        self.refill(now);
        let need = (want as f64).min((self.capacity / 4.0).max(1.0));
        if self.tokens >= need {
            let granted = (want as f64).min(self.tokens.floor()) as usize;
            self.tokens -= granted as f64;
            return Ok(granted);
        }
        Err(Duration::from_secs_f64((need - self.tokens) / self.rate))
    }
}

/// A token bucket shared by the streams of one connection.
#[derive(Debug, Clone)]
pub struct Throttle(Arc<Mutex<TokenBucket>>);

impl Throttle {
    pub fn new(bytes_per_second: u64) -> Self {
        Throttle(Arc::new(Mutex::new(TokenBucket::new(
            bytes_per_second,
            Instant::now(),
        ))))
    }

    pub fn rate(&self) -> u64 {
        self.0.lock().map(|b| b.rate()).unwrap_or(0)
    }

    pub fn try_take(&self, want: usize) -> Result<usize, Duration> {
        match self.0.lock() {
            Ok(mut bucket) => bucket.take(Instant::now(), want),
            // A poisoned lock means a panic elsewhere; do not throttle.
            Err(_) => Ok(want),
        }
    }

    /// Waits until some bytes may pass and returns how many (<= `want`).
    pub async fn take(&self, want: usize) -> usize {
        loop {
            match self.try_take(want) {
                Ok(n) => return n,
                Err(wait) => tokio::time::sleep(wait).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_grants_at_most_its_capacity() {
        let now = Instant::now();
        let mut bucket = TokenBucket::new(100_000, now);
        assert_eq!(bucket.take(now, 1_000_000), Ok(5_000));
        assert!(bucket.take(now, 1_000).is_err());
    }

    #[test]
    fn sustained_rate_matches_the_configured_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10_000, start);
        let mut now = start;
        let mut sent = 0usize;
        // Simulate a sender that always wants 4 KiB and sleeps as told.
        while now < start + Duration::from_secs(10) {
            match bucket.take(now, 4096) {
                Ok(n) => sent += n,
                Err(wait) => now += wait,
            }
        }
        let rate = sent as f64 / 10.0;
        assert!((9_000.0..=11_100.0).contains(&rate), "rate {rate}");
    }

    #[test]
    fn slow_rates_still_move_small_chunks() {
        let now = Instant::now();
        let mut bucket = TokenBucket::new(10, now);
        assert_eq!(bucket.take(now, 100), Ok(10));
        let wait = bucket.take(now, 100).unwrap_err();
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
    }
}
