//! The idle half of both HTTP/1.1 upstream pools (hyper's, `h1.rs`, and
//! the relay's, `raw.rs`): connections per destination, taken most
//! recently used first (its socket is warm and least likely to have been
//! closed by the upstream's own idle timeout), and closed by a reaper task
//! on the pool's worker once idle for longer than the pool's timeout or no
//! longer [`Reusable`].
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// A pooled connection's own word on whether it may carry another
/// exchange.
pub(super) trait Reusable: Send + 'static {
    fn reusable(&self) -> bool;
}

struct Idle<C> {
    conn: C,
    since: Instant,
}

pub(super) struct IdleConns<C> {
    /// foldhash: taken from and given back to on every relayed exchange,
    /// where SipHash of the address was a few percent of the request.
    idle: Mutex<HashMap<SocketAddr, Vec<Idle<C>>, foldhash::fast::RandomState>>,
    idle_timeout: Duration,
    /// Beyond it, the least recently used connection to a destination goes.
    max_per_dest: usize,
    reaper_started: AtomicBool,
}

impl<C: Reusable> IdleConns<C> {
    pub(super) fn new(idle_timeout: Duration, max_per_dest: usize) -> Arc<Self> {
        Arc::new(IdleConns {
            idle: Mutex::new(HashMap::default()),
            idle_timeout,
            max_per_dest,
            reaper_started: AtomicBool::new(false),
        })
    }

    /// The most recently used reusable connection to `dest`, and since
    /// when it has been idle.
    pub(super) fn take(&self, dest: SocketAddr) -> Option<(C, Instant)> {
        let mut idle = self.idle.lock().ok()?;
        let conns = idle.get_mut(&dest)?;
        while let Some(idle) = conns.pop() {
            if idle.conn.reusable() {
                return Some((idle.conn, idle.since));
            }
        }
        None
    }

    /// Keeps `conn`, idle between two complete exchanges, for reuse.
    pub(super) fn put(self: &Arc<Self>, dest: SocketAddr, conn: C) {
        if let Ok(mut idle) = self.idle.lock() {
            let conns = idle.entry(dest).or_default();
            if conns.len() >= self.max_per_dest {
                conns.remove(0);
            }
            conns.push(Idle {
                conn,
                since: crate::clock::coarse_now(),
            });
        }
        if !self.reaper_started.swap(true, Ordering::Relaxed) {
            // Spawned on the worker that owns this pool.
            tokio::spawn(reap(Arc::downgrade(self), self.idle_timeout));
        }
    }

    /// Idle connections to `dest` (for tests).
    pub(super) fn count(&self, dest: SocketAddr) -> usize {
        self.idle
            .lock()
            .map_or(0, |idle| idle.get(&dest).map_or(0, Vec::len))
    }

    /// Closes connections idle for longer than the timeout, and forgets
    /// those no longer reusable.
    fn reap(&self, now: Instant) {
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        idle.retain(|_, conns| {
            conns.retain(|c| {
                now.saturating_duration_since(c.since) < self.idle_timeout && c.conn.reusable()
            });
            !conns.is_empty()
        });
    }
}

async fn reap<C: Reusable>(pool: Weak<IdleConns<C>>, idle_timeout: Duration) {
    let mut tick = tokio::time::interval((idle_timeout / 2).max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        pool.reap(crate::clock::coarse_now());
    }
}
