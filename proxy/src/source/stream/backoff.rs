//! Reconnect delays: exponential growth with full jitter, so that hundreds
//! of proxies cut off by one controller restart do not reconnect in lockstep.

use std::time::Duration;

use rand::Rng;

/// Exponential backoff state; `reset` after a connection that worked.
#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// Delays start around `base` and never exceed `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max: max.max(base),
            attempt: 0,
        }
    }

    /// Forget past failures.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The ceiling for the next delay, before jitter.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(20)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// The next delay: uniform in [ceiling/2, ceiling] ("equal jitter"), so a
    /// delay is never close to zero yet proxies still spread out.
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        let spread = ceiling.saturating_sub(half).as_micros() as u64;
        let jitter = if spread == 0 {
            0
        } else {
            rng.random_range(0..=spread)
        };
        half + Duration::from_micros(jitter)
    }
}

/// The longest `Retry-After` honoured, so a confused server cannot park a
/// proxy. Above the backoff cap: a controller spreading ten thousand
/// reconnects hands out waits of up to 30 s, and a proxy that came back
/// early would only be refused again.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// The delay after a refusal that said when to come back: that time (at most
/// [`MAX_RETRY_AFTER`]) plus up to a second of jitter, because `Retry-After`
/// has whole seconds and the controller spreads proxies across them.
pub fn after_retry_after(retry_after: Duration, rng: &mut impl Rng) -> Duration {
    let jitter = Duration::from_millis(rng.random_range(0..=1000));
    retry_after.min(MAX_RETRY_AFTER) + jitter
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn delays_grow_exponentially_up_to_the_cap_and_stay_in_the_jitter_band() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let mut rng = StdRng::seed_from_u64(7);
        let ceilings: Vec<u64> = (0..7)
            .map(|_| {
                let ceiling = b.ceiling();
                let d = b.next_delay(&mut rng);
                assert!(
                    d >= ceiling / 2 && d <= ceiling,
                    "{d:?} outside [{:?}, {ceiling:?}]",
                    ceiling / 2
                );
                ceiling.as_millis() as u64
            })
            .collect();
        assert_eq!(ceilings, vec![100, 200, 400, 800, 1600, 2000, 2000]);
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(100));
    }

    #[test]
    fn jitter_spreads_delays_across_proxies() {
        let mut rng = StdRng::seed_from_u64(1);
        let delays: std::collections::BTreeSet<Duration> = (0..50)
            .map(|_| {
                Backoff::new(Duration::from_secs(1), Duration::from_secs(1)).next_delay(&mut rng)
            })
            .collect();
        assert!(delays.len() > 40, "only {} distinct delays", delays.len());
    }

    #[test]
    fn a_retry_after_is_honoured_capped_and_jittered_within_a_second() {
        let mut rng = StdRng::seed_from_u64(5);
        let delays: Vec<Duration> = (0..200)
            .map(|_| after_retry_after(Duration::from_secs(4), &mut rng))
            .collect();
        assert!(
            delays
                .iter()
                .all(|d| *d >= Duration::from_secs(4) && *d <= Duration::from_secs(5))
        );
        let distinct: std::collections::BTreeSet<_> = delays.iter().collect();
        assert!(distinct.len() > 100, "jitter spreads a second");
        let capped = after_retry_after(Duration::from_secs(86_400), &mut rng);
        assert!(capped <= MAX_RETRY_AFTER + Duration::from_secs(1));
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let mut b = Backoff::new(Duration::from_millis(1), Duration::from_secs(30));
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..100 {
            b.next_delay(&mut rng);
        }
        assert_eq!(b.ceiling(), Duration::from_secs(30));
    }
}
