//! The bounds around TokenReview: every policy stream request used to cost
//! one review, so garbage tokens could drive the API server as fast as a
//! client could connect. In order, a request is
//!
//! 1. refused for free if its token cannot be a live pod-bound token for us
//!    ([`claims::precheck`]);
//! 2. answered from the cache (by token hash) if reviewed recently;
//! 3. refused with a spread-out `Retry-After` if the review rate or the
//!    reviews in flight are at their limit;
//! 4. reviewed, and the answer cached.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::cache::{Answer, CachePolicy, ReviewCache, Stored, token_key};
use super::claims::{self, Claims};
use super::limit::{Bucket, Rate};
use super::{AuthError, AuthFuture, Authenticator, Identity};
use crate::controller::metrics::{ReasonLabel, ResultLabel, TokenReviewMetrics};

/// The limits, as `faultline-webhook serve` takes them.
#[derive(clap::Args, Clone, Debug, PartialEq)]
pub struct ReviewLimits {
    /// TokenReviews per second this replica may start (policy stream logins).
    #[arg(long, env = "FAULTLINE_TOKEN_REVIEW_RATE", default_value_t = 1_000.0)]
    pub token_review_rate: f64,
    /// TokenReviews that may start at once after a quiet period.
    #[arg(long, env = "FAULTLINE_TOKEN_REVIEW_BURST", default_value_t = 1_000)]
    pub token_review_burst: u32,
    /// TokenReviews awaiting the API server at once.
    #[arg(
        long,
        env = "FAULTLINE_TOKEN_REVIEW_MAX_IN_FLIGHT",
        default_value_t = 64
    )]
    pub token_review_max_in_flight: usize,
    /// Longest a TokenReview acceptance is reused (never past the token's expiry).
    #[arg(long, env = "FAULTLINE_TOKEN_CACHE_SECONDS", default_value_t = 300)]
    pub token_cache_seconds: u64,
    /// How long a TokenReview refusal is reused.
    #[arg(
        long,
        env = "FAULTLINE_TOKEN_NEGATIVE_CACHE_SECONDS",
        default_value_t = 10
    )]
    pub token_negative_cache_seconds: u64,
    /// Most TokenReview answers kept.
    #[arg(
        long,
        env = "FAULTLINE_TOKEN_CACHE_MAX_ENTRIES",
        default_value_t = 50_000
    )]
    pub token_cache_max_entries: usize,
}

impl Default for ReviewLimits {
    fn default() -> Self {
        Self {
            token_review_rate: 1_000.0,
            token_review_burst: 1_000,
            token_review_max_in_flight: 64,
            token_cache_seconds: 300,
            token_negative_cache_seconds: 10,
            token_cache_max_entries: 50_000,
        }
    }
}

/// The latest a refused proxy is told to come back: its own backoff cap.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
/// At most one warning per limit per this period (the rest are counted).
const LIMIT_LOG_EVERY: Duration = Duration::from_secs(10);

impl ReviewLimits {
    fn cache_policy(&self) -> CachePolicy {
        CachePolicy {
            max_ttl: Duration::from_secs(self.token_cache_seconds),
            negative_ttl: Duration::from_secs(self.token_negative_cache_seconds),
            max_entries: self.token_cache_max_entries,
        }
    }

    fn rate(&self) -> Rate {
        Rate {
            per_second: self.token_review_rate.max(0.001),
            burst: f64::from(self.token_review_burst.max(1)),
            max_retry_after: MAX_RETRY_AFTER,
        }
    }
}

/// Wraps the real reviewer (`inner`) in the precheck, cache and limits.
pub struct GuardedAuthenticator {
    inner: Arc<dyn Authenticator>,
    limits: ReviewLimits,
    cache: Mutex<ReviewCache>,
    bucket: Mutex<Bucket>,
    in_flight: Arc<Semaphore>,
    log: Mutex<LimitLog>,
    metrics: TokenReviewMetrics,
}

impl GuardedAuthenticator {
    pub fn new(
        inner: Arc<dyn Authenticator>,
        limits: ReviewLimits,
        metrics: TokenReviewMetrics,
    ) -> Self {
        Self {
            inner,
            cache: Mutex::new(ReviewCache::new(limits.cache_policy())),
            bucket: Mutex::new(Bucket::new(limits.rate(), Instant::now())),
            in_flight: Arc::new(Semaphore::new(limits.token_review_max_in_flight.max(1))),
            log: Mutex::new(LimitLog::default()),
            metrics,
            limits,
        }
    }

    async fn check(&self, token: &str) -> Result<Identity, AuthError> {
        let claims = claims::precheck(token, unix_now()).map_err(|e| {
            self.metrics
                .refused_unreviewed
                .get_or_create(&ReasonLabel { reason: e.reason() })
                .inc();
            AuthError::Claims(e)
        })?;
        let key = token_key(token);
        if let Some(answer) = lock(&self.cache).get(&key, Instant::now()) {
            return self.remembered(answer);
        }
        let _permit = self.admit()?;
        self.metrics.in_flight.inc();
        let result = self.inner.authenticate(token).await;
        self.metrics.in_flight.dec();
        let stored = self.remember(key, &claims, &result);
        if stored == Stored::Full {
            tracing::warn!(
                max_entries = self.limits.token_cache_max_entries,
                "the TokenReview cache is full; this answer is not remembered"
            );
        }
        result
    }

    fn remembered(&self, answer: Answer) -> Result<Identity, AuthError> {
        let (result, outcome) = match answer {
            Answer::Accepted(id) => ("authenticated", Ok(id)),
            Answer::Refused(message) => ("rejected", Err(AuthError::Refused(message))),
        };
        self.metrics
            .cache_hits
            .get_or_create(&ResultLabel { result })
            .inc();
        outcome
    }

    /// A rate token and an in-flight slot, or the refusal to send.
    fn admit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, AuthError> {
        let now = Instant::now();
        if let Err(retry_after) = lock(&self.bucket).take(now) {
            self.limited("rate", retry_after, now);
            return Err(AuthError::RateLimited { retry_after });
        }
        self.in_flight.clone().try_acquire_owned().map_err(|_| {
            let retry_after = lock(&self.bucket).hint(now);
            self.limited("in_flight", retry_after, now);
            AuthError::Busy { retry_after }
        })
    }

    fn limited(&self, reason: &'static str, retry_after: Duration, now: Instant) {
        self.metrics
            .limited
            .get_or_create(&ReasonLabel { reason })
            .inc();
        if let Some(refused) = lock(&self.log).note(reason, now) {
            tracing::warn!(
                limit = reason,
                refused_since_last_warning = refused,
                retry_after_s = retry_after.as_secs_f64(),
                rate_per_s = self.limits.token_review_rate,
                max_in_flight = self.limits.token_review_max_in_flight,
                "TokenReview limit reached: refusing policy streams with Retry-After"
            );
        }
    }

    fn remember(
        &self,
        key: super::cache::TokenKey,
        claims: &Claims,
        result: &Result<Identity, AuthError>,
    ) -> Stored {
        let now = Instant::now();
        let mut cache = lock(&self.cache);
        let (label, stored) = match result {
            Ok(id) => {
                let left = claims
                    .expires_unix
                    .map(|exp| Duration::from_secs(exp.saturating_sub(unix_now())));
                ("authenticated", cache.accept(key, id.clone(), left, now))
            }
            Err(AuthError::Review(_)) => ("error", Stored::Pointless),
            Err(refusal) => ("rejected", cache.refuse(key, refusal.to_string(), now)),
        };
        self.metrics
            .reviews
            .get_or_create(&ResultLabel { result: label })
            .inc();
        self.metrics
            .cache_entries
            .set(i64::try_from(cache.len()).unwrap_or(i64::MAX));
        stored
    }
}

impl Authenticator for GuardedAuthenticator {
    fn authenticate<'a>(&'a self, token: &'a str) -> AuthFuture<'a> {
        Box::pin(self.check(token))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// One warning per limit per [`LIMIT_LOG_EVERY`], carrying how many
/// refusals it stands for.
#[derive(Default)]
pub struct LimitLog {
    last: Vec<(&'static str, Instant, u64)>,
}

impl LimitLog {
    /// `Some(refusals since the last warning)` when it is time to warn.
    pub fn note(&mut self, reason: &'static str, now: Instant) -> Option<u64> {
        let Some(entry) = self.last.iter_mut().find(|(r, _, _)| *r == reason) else {
            self.last.push((reason, now, 0));
            return Some(1);
        };
        entry.2 += 1;
        if now.saturating_duration_since(entry.1) < LIMIT_LOG_EVERY {
            return None;
        }
        let refused = entry.2;
        entry.1 = now;
        entry.2 = 0;
        Some(refused)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Counts calls; accepts tokens whose payload names pod `good`.
    struct Counting {
        calls: AtomicUsize,
        hold: tokio::sync::Semaphore,
        holding: bool,
    }

    impl Authenticator for Counting {
        fn authenticate<'a>(&'a self, token: &'a str) -> AuthFuture<'a> {
            Box::pin(async move {
                self.calls.fetch_add(1, Ordering::SeqCst);
                if self.holding {
                    let _ = self.hold.acquire().await;
                }
                if token.contains(&pod_part("good")) {
                    Ok(Identity {
                        namespace: "shop".into(),
                        pod: "good".into(),
                        pod_uid: "u".into(),
                        service_account: "default".into(),
                    })
                } else {
                    Err(AuthError::Rejected("not authenticated".into()))
                }
            })
        }
    }

    fn payload(pod: &str) -> serde_json::Value {
        serde_json::json!({"aud": ["faultline"], "exp": unix_now() + 3600,
            "kubernetes.io": {"namespace": "shop", "pod": {"name": pod, "uid": "u"}}})
    }

    fn pod_part(pod: &str) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(payload(pod).to_string())
    }

    fn token(pod: &str) -> String {
        format!("h.{}.s", pod_part(pod))
    }

    fn guard(limits: ReviewLimits, holding: bool) -> (Arc<Counting>, GuardedAuthenticator) {
        let inner = Arc::new(Counting {
            calls: AtomicUsize::new(0),
            hold: tokio::sync::Semaphore::new(0),
            holding,
        });
        let g = GuardedAuthenticator::new(inner.clone(), limits, TokenReviewMetrics::default());
        (inner, g)
    }

    #[tokio::test]
    async fn garbage_costs_no_review_and_answers_are_reused() {
        let (inner, g) = guard(ReviewLimits::default(), false);
        for _ in 0..100 {
            assert!(matches!(
                g.authenticate("garbage").await,
                Err(AuthError::Claims(_))
            ));
        }
        assert_eq!(inner.calls.load(Ordering::SeqCst), 0);
        let good = token("good");
        for _ in 0..3 {
            assert_eq!(g.authenticate(&good).await.unwrap().pod, "good");
        }
        let bad = token("bad");
        for _ in 0..3 {
            assert!(g.authenticate(&bad).await.is_err());
        }
        assert_eq!(
            inner.calls.load(Ordering::SeqCst),
            2,
            "one review per token"
        );
        let hits = |r| {
            g.metrics
                .cache_hits
                .get_or_create(&ResultLabel { result: r })
                .get()
        };
        assert_eq!((hits("authenticated"), hits("rejected")), (2, 2));
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_limit_refuses_with_spread_retry_times() {
        let limits = ReviewLimits {
            token_review_rate: 2.0,
            token_review_burst: 3,
            ..ReviewLimits::default()
        };
        let (inner, g) = guard(limits, false);
        let mut waits = Vec::new();
        for i in 0..10 {
            match g.authenticate(&token(&format!("p{i}"))).await {
                Err(AuthError::RateLimited { retry_after }) => waits.push(retry_after),
                other => assert!(other.is_err(), "p{i} accepted"),
            }
        }
        assert_eq!(inner.calls.load(Ordering::SeqCst), 3, "the burst, no more");
        assert_eq!(waits.len(), 7);
        assert!(waits.windows(2).all(|w| w[0] < w[1]), "{waits:?}");
        tokio::time::advance(Duration::from_secs(1)).await;
        for i in 10..20 {
            let _ = g.authenticate(&token(&format!("p{i}"))).await;
        }
        assert_eq!(inner.calls.load(Ordering::SeqCst), 5, "two per second");
    }

    #[tokio::test]
    async fn reviews_in_flight_are_bounded() {
        let limits = ReviewLimits {
            token_review_max_in_flight: 2,
            ..ReviewLimits::default()
        };
        let (inner, g) = guard(limits, true);
        let g = Arc::new(g);
        let waiting: Vec<_> = (0..2)
            .map(|i| {
                let g = g.clone();
                tokio::spawn(async move { g.authenticate(&token(&format!("w{i}"))).await.is_err() })
            })
            .collect();
        while inner.calls.load(Ordering::SeqCst) < 2 {
            tokio::task::yield_now().await;
        }
        assert!(matches!(
            g.authenticate(&token("third")).await,
            Err(AuthError::Busy { .. })
        ));
        assert_eq!(g.metrics.in_flight.get(), 2);
        inner.hold.add_permits(2);
        for w in waiting {
            assert!(w.await.unwrap());
        }
        assert_eq!(g.metrics.in_flight.get(), 0);
    }

    #[test]
    fn limit_warnings_are_throttled_and_count_what_they_stand_for() {
        let t0 = Instant::now();
        let mut log = LimitLog::default();
        assert_eq!(log.note("rate", t0), Some(1));
        for _ in 0..99 {
            assert_eq!(log.note("rate", t0 + Duration::from_secs(1)), None);
        }
        assert_eq!(log.note("in_flight", t0), Some(1));
        assert_eq!(log.note("rate", t0 + LIMIT_LOG_EVERY), Some(100));
    }
}
