//! Events a connection's task must react to: the proxy draining or
//! stopping, and a reset fault killing this one connection.
//!
//! A connection's task checks them on every wakeup, i.e. several times per
//! request. With a `CancellationToken` per event that check is a mutex
//! lock and a `Notify` registration each, per token; here it is one atomic
//! load and, when nothing happened, an [`AtomicWaker`] registration. The
//! proxy-wide events are fanned out to every live connection when raised,
//! which happens once or twice in a proxy's life.
//!
//! Only the connection's own task may wait on its [`ConnEvents`]: it holds
//! one waker. Other tasks use the `CancellationToken`s in `ProxyState`.
use std::future::poll_fn;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;

/// The proxy is draining: finish in-flight requests, then close.
pub const DRAIN: u8 = 1;
/// The drain period is over: drop the connection now.
pub const STOP: u8 = 2;
/// A reset fault: drop this connection now (with RST).
pub const KILL: u8 = 4;

/// The proxy-wide side: raises [`DRAIN`] and [`STOP`] on every connection.
#[derive(Default)]
pub struct ProxyEvents {
    raised: AtomicU8,
    conns: Mutex<Vec<Weak<ConnEvents>>>,
}

impl ProxyEvents {
    /// A new connection's signal; it already carries what was raised.
    pub fn register(&self) -> Arc<ConnEvents> {
        let signal = Arc::new(ConnEvents {
            flags: AtomicU8::new(0),
            waker: AtomicWaker::new(),
        });
        if let Ok(mut conns) = self.conns.lock() {
            if conns.len() == conns.capacity() {
                // Forget closed connections before growing: amortised O(1).
                conns.retain(|c| c.strong_count() > 0);
            }
            conns.push(Arc::downgrade(&signal));
        }
        // After the push: a raise that missed the list is seen here.
        signal
            .flags
            .fetch_or(self.raised.load(Ordering::Acquire), Ordering::AcqRel);
        signal
    }

    pub fn raise(&self, flag: u8) {
        self.raised.fetch_or(flag, Ordering::AcqRel);
        let live: Vec<Arc<ConnEvents>> = match self.conns.lock() {
            Ok(mut conns) => {
                conns.retain(|c| c.strong_count() > 0);
                conns.iter().filter_map(Weak::upgrade).collect()
            }
            Err(_) => return,
        };
        for signal in live {
            signal.raise(flag);
        }
    }
}

/// One connection's side.
pub struct ConnEvents {
    flags: AtomicU8,
    waker: AtomicWaker,
}

impl ConnEvents {
    pub fn raise(&self, flag: u8) {
        self.flags.fetch_or(flag, Ordering::AcqRel);
        self.waker.wake();
    }

    pub fn is_raised(&self, mask: u8) -> bool {
        self.flags.load(Ordering::Acquire) & mask != 0
    }

    /// Ready with the raised flags once any flag in `mask` is raised.
    pub fn poll_raised(&self, cx: &mut Context<'_>, mask: u8) -> Poll<u8> {
        let flags = self.flags.load(Ordering::Acquire);
        if flags & mask != 0 {
            return Poll::Ready(flags);
        }
        self.waker.register(cx.waker());
        // A raise between the load and the registration woke no one.
        let flags = self.flags.load(Ordering::Acquire);
        if flags & mask != 0 {
            Poll::Ready(flags)
        } else {
            Poll::Pending
        }
    }

    pub async fn raised(&self, mask: u8) -> u8 {
        poll_fn(|cx| self.poll_raised(cx, mask)).await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_raise_reaches_every_live_connection_and_later_ones() {
        let events = ProxyEvents::default();
        let a = events.register();
        let b = events.register();
        drop(events.register());
        let waiting = tokio::spawn(async move { a.raised(DRAIN).await });
        tokio::task::yield_now().await;
        events.raise(DRAIN);
        let flags = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the waiting connection was not woken")
            .unwrap();
        assert_eq!(flags, DRAIN);
        assert!(b.is_raised(DRAIN));
        assert!(!b.is_raised(STOP | KILL));
        assert!(events.register().is_raised(DRAIN));
    }

    #[tokio::test]
    async fn a_kill_reaches_only_its_connection() {
        let events = ProxyEvents::default();
        let a = events.register();
        let b = events.register();
        a.raise(KILL);
        assert_eq!(a.raised(KILL | STOP).await, KILL);
        assert!(!b.is_raised(KILL));
    }

    #[test]
    fn closed_connections_are_forgotten() {
        let events = ProxyEvents::default();
        for _ in 0..1000 {
            drop(events.register());
        }
        let _live = events.register();
        let held = events.conns.lock().unwrap().len();
        assert!(held < 100, "{held} entries kept for 1 live connection");
    }
}
