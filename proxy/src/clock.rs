//! hyper's header-read deadline on a coarse clock.
//!
//! hyper arms a timer every time it waits for a request head, i.e. once per
//! request, and drops it when the head arrives. With tokio's timer that is a
//! timer-wheel insertion and removal per request and, often, a wakeup of
//! the worker's event loop (an eventfd write) to re-arm its timeout: a
//! measurable share of a proxied request's cost, for a slowloris guard of
//! [`HEADER_READ_TIMEOUT`](crate::traffic::http::HEADER_READ_TIMEOUT) that needs no
//! precision. Here arming is two atomic stores in the connection's own
//! [`Slot`], and one thread (`faultline-clock`) advances a millisecond
//! clock and wakes the connections whose deadline has passed, once per
//! [`TICK`]. A deadline fires up to two ticks late.
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::task::AtomicWaker;
use hyper::rt::{Sleep, Timer};

pub const TICK: Duration = Duration::from_secs(1);
const DISARMED: u64 = u64::MAX;

struct Clock {
    base: Instant,
    now_ms: AtomicU64,
    slots: Mutex<Vec<Weak<Slot>>>,
}

static CLOCK: LazyLock<Arc<Clock>> = LazyLock::new(|| {
    let clock = Arc::new(Clock {
        base: Instant::now(),
        now_ms: AtomicU64::new(0),
        slots: Mutex::new(Vec::new()),
    });
    let ticking = clock.clone();
    let started = std::thread::Builder::new()
        .name("faultline-clock".into())
        .spawn(move || {
            loop {
                std::thread::sleep(TICK);
                ticking.tick();
            }
        });
    if let Err(error) = started {
        // Deadlines then never fire: connections stay up until the client
        // or the drain closes them, which is what a missing guard means.
        tracing::error!(%error, "failed to start the header-read clock; header-read timeouts are off");
    }
    clock
});

impl Clock {
    fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::Relaxed)
    }

    fn tick(&self) {
        let now = self.base.elapsed().as_millis() as u64;
        self.now_ms.store(now, Ordering::Relaxed);
        let Ok(mut slots) = self.slots.lock() else {
            return;
        };
        slots.retain(|slot| match slot.upgrade() {
            Some(slot) => {
                let mut wake = slot.deadline_ms.load(Ordering::Acquire) <= now;
                if slot.park_at_ms.load(Ordering::Acquire) <= now {
                    slot.park_at_ms.store(DISARMED, Ordering::Relaxed);
                    slot.park_due.store(true, Ordering::Release);
                    wake = true;
                }
                if wake {
                    slot.waker.wake();
                }
                true
            }
            None => false,
        });
    }

    fn millis(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.base).as_millis() as u64
    }
}

/// The coarse clock's time: behind the real one by up to a [`TICK`], and
/// free (no clock read) for code that only needs seconds.
pub fn coarse_now() -> Instant {
    CLOCK.base + Duration::from_millis(CLOCK.now_ms())
}

/// One connection's deadline: armed by the sleep hyper holds, checked by
/// the clock thread.
struct Slot {
    /// Which sleep armed the deadline: a replaced sleep that is dropped
    /// late must not disarm its successor.
    generation: AtomicU64,
    deadline_ms: AtomicU64,
    waker: AtomicWaker,
    /// The armed sleep that [`HeaderTimer::idle_a_tick`] first saw idle.
    idle_generation: AtomicU64,
    /// When the clock should wake the connection to let it park.
    park_at_ms: AtomicU64,
    /// Set by the clock once `park_at_ms` has passed.
    park_due: AtomicBool,
}

impl Slot {
    fn arm(&self, deadline_ms: u64) -> u64 {
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        self.deadline_ms.store(deadline_ms, Ordering::Release);
        generation
    }

    fn expired(&self, generation: u64) -> bool {
        self.generation.load(Ordering::Relaxed) == generation
            && self.deadline_ms.load(Ordering::Acquire) <= CLOCK.now_ms()
    }

    fn disarm(&self, generation: u64) {
        if self.generation.load(Ordering::Relaxed) == generation {
            self.deadline_ms.store(DISARMED, Ordering::Release);
        }
    }
}

/// The [`Timer`] given to one hyper server connection (clones share its
/// deadline: one connection, rebuilt while idle, see `traffic::http`).
#[derive(Clone)]
pub struct HeaderTimer {
    slot: Arc<Slot>,
}

impl HeaderTimer {
    pub fn new() -> Self {
        let slot = Arc::new(Slot {
            generation: AtomicU64::new(0),
            deadline_ms: AtomicU64::new(DISARMED),
            waker: AtomicWaker::new(),
            idle_generation: AtomicU64::new(0),
            park_at_ms: AtomicU64::new(DISARMED),
            park_due: AtomicBool::new(false),
        });
        if let Ok(mut slots) = CLOCK.slots.lock() {
            slots.push(Arc::downgrade(&slot));
        }
        HeaderTimer { slot }
    }
}

impl HeaderTimer {
    /// Whether a sleep of this timer is pending: for hyper's, that it is
    /// waiting for a request head.
    pub fn armed(&self) -> bool {
        self.slot.deadline_ms.load(Ordering::Acquire) != DISARMED
    }

    /// Whether the same sleep has stayed armed for a [`TICK`] or more: for
    /// hyper's, that no request has come for at least that long. The first
    /// call for a sleep asks the clock to wake the connection a tick later
    /// (no timer of its own), and answers false, so a busy connection pays
    /// three atomic operations per request to learn it should stay as it is.
    pub fn idle_a_tick(&self) -> bool {
        let slot = &self.slot;
        if slot.deadline_ms.load(Ordering::Acquire) == DISARMED {
            return false;
        }
        let generation = slot.generation.load(Ordering::Relaxed);
        if slot.idle_generation.swap(generation, Ordering::Relaxed) != generation {
            slot.park_due.store(false, Ordering::Relaxed);
            let at = CLOCK.now_ms().saturating_add(TICK.as_millis() as u64);
            slot.park_at_ms.store(at, Ordering::Release);
            return false;
        }
        slot.park_due.load(Ordering::Acquire)
    }
}

impl HeaderTimer {
    /// A deadline `after` from now on this timer, as hyper's sleeps are,
    /// without boxing it: the HTTP/1.1 relay arms one per request.
    pub fn deadline(&self, after: Duration) -> HeaderSleep {
        let generation = self.slot.arm(CLOCK.millis(coarse_now() + after));
        HeaderSleep {
            slot: self.slot.clone(),
            generation,
        }
    }
}

impl Default for HeaderTimer {
    fn default() -> Self {
        Self::new()
    }
}

impl Timer for HeaderTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.sleep_until(self.now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        let generation = self.slot.arm(CLOCK.millis(deadline));
        Box::pin(HeaderSleep {
            slot: self.slot.clone(),
            generation,
        })
    }

    /// The coarse clock: no clock read per request.
    fn now(&self) -> Instant {
        coarse_now()
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn Sleep>>, new_deadline: Instant) {
        match sleep.as_mut().downcast_mut_pin::<HeaderSleep>() {
            Some(mut ours) => ours.generation = self.slot.arm(CLOCK.millis(new_deadline)),
            None => *sleep = self.sleep_until(new_deadline),
        }
    }
}

/// A deadline of a [`HeaderTimer`]; dropping it disarms it.
pub struct HeaderSleep {
    slot: Arc<Slot>,
    generation: u64,
}

impl Future for HeaderSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.slot.expired(self.generation) {
            return Poll::Ready(());
        }
        self.slot.waker.register(cx.waker());
        // The clock may have ticked between the check and the registration.
        if self.slot.expired(self.generation) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl Sleep for HeaderSleep {}

impl Drop for HeaderSleep {
    fn drop(&mut self) {
        self.slot.disarm(self.generation);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_deadline_fires_within_two_ticks() {
        let timer = HeaderTimer::new();
        let started = Instant::now();
        timer.sleep(Duration::from_millis(100)).await;
        let took = started.elapsed();
        assert!(took <= 2 * TICK + Duration::from_millis(600), "{took:?}");
    }

    #[tokio::test]
    async fn a_reset_deadline_moves_and_a_replaced_sleep_does_not_disarm_its_successor() {
        let timer = HeaderTimer::new();
        let mut first = timer.sleep(Duration::from_millis(50));
        timer.reset(&mut first, timer.now() + Duration::from_secs(3600));
        let pending = tokio::time::timeout(3 * TICK, &mut first).await;
        assert!(pending.is_err(), "a deadline moved an hour out fired");

        let second = timer.sleep(Duration::from_millis(50));
        drop(first);
        tokio::time::timeout(4 * TICK, second)
            .await
            .expect("dropping the replaced sleep disarmed the new one");
    }

    #[tokio::test]
    async fn idle_a_tick_answers_true_only_after_the_clock_saw_the_same_sleep_a_tick_later() {
        let timer = HeaderTimer::new();
        assert!(!timer.idle_a_tick(), "nothing armed is not idle");
        let sleep = timer.sleep(Duration::from_secs(3600));
        assert!(!timer.idle_a_tick(), "the first look only starts the count");
        assert!(!timer.idle_a_tick(), "no tick has passed yet");
        tokio::time::sleep(2 * TICK + Duration::from_millis(200)).await;
        assert!(
            timer.idle_a_tick(),
            "two ticks later the connection may park"
        );
        // A new sleep (the next request came and went) starts over.
        drop(sleep);
        let _next = timer.sleep(Duration::from_secs(3600));
        assert!(!timer.idle_a_tick());
    }

    #[tokio::test]
    async fn a_dropped_sleep_disarms_the_deadline() {
        let timer = HeaderTimer::new();
        drop(timer.sleep(Duration::ZERO));
        assert_eq!(timer.slot.deadline_ms.load(Ordering::Relaxed), DISARMED);
    }
}
