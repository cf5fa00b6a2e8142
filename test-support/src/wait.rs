//! Polling a condition until it holds or a deadline passes: how every test
//! waits for a server, a proxy or the cluster (never a fixed sleep).

use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, Instant};

/// First pause between two probes; doubled up to [`MAX_INTERVAL`], so fast
/// conditions are seen quickly and slow ones do not hammer the API server.
const FIRST_INTERVAL: Duration = Duration::from_millis(20);
const MAX_INTERVAL: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
#[error("timed out after {waited:?} waiting for {what}; last seen: {last}")]
pub struct WaitError {
    pub what: String,
    pub waited: Duration,
    pub last: String,
}

/// Probe intervals, growing from [`FIRST_INTERVAL`] to [`MAX_INTERVAL`].
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: FIRST_INTERVAL,
        }
    }
}

impl Backoff {
    pub async fn pause(&mut self) {
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(MAX_INTERVAL);
    }
}

/// Calls `probe` until it returns `Ok`, at most until `timeout` has passed.
/// `Err` means "not yet" and says why; the last one goes into the timeout
/// error, so a failing test tells what it saw instead of just "timeout".
///
/// ```ignore
/// let pods = wait_for("2 pods of web", Duration::from_secs(30), || async {
///     let pods = api.list(&lp).await?.items;
///     if pods.len() == 2 { Ok(pods) } else { Err(anyhow!("{} pods", pods.len())) }
/// }).await?;
/// ```
pub async fn wait_for<T, E, F, Fut>(
    what: impl Into<String>,
    timeout: Duration,
    mut probe: F,
) -> Result<T, WaitError>
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let start = Instant::now();
    let mut backoff = Backoff::default();
    loop {
        let last = match probe().await {
            Ok(value) => return Ok(value),
            Err(e) => e.to_string(),
        };
        if start.elapsed() >= timeout {
            return Err(WaitError {
                what: what.into(),
                waited: start.elapsed(),
                last,
            });
        }
        backoff.pause().await;
    }
}

/// Polls `check` every 10 ms until it returns true; panics naming `what`
/// once `within` has passed. For assertions in tests.
pub async fn eventually(what: &str, within: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Polls `check` every 10 ms until it returns `Some`, or `None` once
/// `within` has passed.
pub async fn until_some<T>(
    within: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> Option<T> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if tokio::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The pause between two checks of [`eventually`] and [`until_some`].
const POLL: Duration = Duration::from_millis(10);

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn returns_the_value_once_the_condition_holds() {
        let calls = AtomicU32::new(0);
        let got = wait_for("third call", Duration::from_secs(5), || async {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            if n == 3 {
                Ok(n)
            } else {
                Err(format!("call {n}"))
            }
        })
        .await
        .expect("condition holds on the third call");
        assert_eq!(got, 3);
    }

    #[tokio::test]
    async fn eventually_returns_once_the_check_holds() {
        let calls = AtomicU32::new(0);
        eventually("third call", Duration::from_secs(5), async || {
            calls.fetch_add(1, Ordering::SeqCst) == 2
        })
        .await;
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        let found = until_some(Duration::from_millis(30), async || None::<u8>).await;
        assert_eq!(found, None);
    }

    #[tokio::test]
    async fn times_out_with_the_last_observation() {
        let err = wait_for("never", Duration::from_millis(60), || async {
            Err::<(), _>("still 0 pods")
        })
        .await
        .expect_err("must time out");
        assert_eq!(err.what, "never");
        assert_eq!(err.last, "still 0 pods");
        assert!(err.waited >= Duration::from_millis(60));
        assert!(err.to_string().contains("still 0 pods"));
    }
}
