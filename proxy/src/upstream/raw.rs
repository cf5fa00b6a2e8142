//! Idle upstream TCP connections of the HTTP/1.1 relay
//! (`traffic::http::relay`), one pool per worker, as [`super::H1Pool`]
//! keeps hyper's.
//!
//! A relayed client connection owns one upstream connection while it is
//! busy, and gives it back here when it goes idle or closes, so idle
//! clients hold no upstream socket and the next client reuses a warm one.
//! A connection is checked when taken (a non-blocking read: the upstream
//! closed it, or sent bytes nobody asked for, and it is dropped) and
//! closed once idle for longer than the pool's idle timeout.
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

/// Idle connections kept per destination and worker: enough for the
/// clients a busy pod's worker serves at once, and a bound on sockets
/// held for clients that went away.
pub const MAX_IDLE_PER_DEST: usize = 256;

struct Idle {
    stream: TcpStream,
    since: Instant,
}

struct Inner {
    idle: Mutex<HashMap<SocketAddr, Vec<Idle>>>,
    idle_timeout: Duration,
    reaper_started: AtomicBool,
}

pub struct RawPool {
    inner: Arc<Inner>,
}

impl RawPool {
    pub fn new(idle_timeout: Duration) -> Self {
        RawPool {
            inner: Arc::new(Inner {
                idle: Mutex::new(HashMap::new()),
                idle_timeout,
                reaper_started: AtomicBool::new(false),
            }),
        }
    }

    /// The most recently used idle connection to `dest` that is still
    /// open and silent.
    pub fn take(&self, dest: SocketAddr) -> Option<TcpStream> {
        let mut idle = self.inner.idle.lock().ok()?;
        let conns = idle.get_mut(&dest)?;
        while let Some(conn) = conns.pop() {
            if is_clean(&conn.stream) {
                return Some(conn.stream);
            }
        }
        None
    }

    /// Keeps `stream`, idle between two complete exchanges, for reuse.
    pub fn put(&self, dest: SocketAddr, stream: TcpStream) {
        if let Ok(mut idle) = self.inner.idle.lock() {
            let conns = idle.entry(dest).or_default();
            if conns.len() >= MAX_IDLE_PER_DEST {
                // The least recently used goes.
                conns.remove(0);
            }
            conns.push(Idle {
                stream,
                since: crate::clock::coarse_now(),
            });
        }
        if !self.inner.reaper_started.swap(true, Ordering::Relaxed) {
            // Spawned on the worker that owns this pool.
            tokio::spawn(reap(Arc::downgrade(&self.inner), self.inner.idle_timeout));
        }
    }

    /// Idle connections to `dest` (for tests).
    pub fn idle_count(&self, dest: SocketAddr) -> usize {
        self.inner
            .idle
            .lock()
            .map_or(0, |idle| idle.get(&dest).map_or(0, Vec::len))
    }
}

/// Open, with nothing to read: an upstream that closed the connection (its
/// own idle timeout) or sent bytes outside any exchange is not reused.
fn is_clean(stream: &TcpStream) -> bool {
    // Not readable since its last read came up short: nothing arrived, and
    // no system call is needed to know it.
    let mut cx = Context::from_waker(Waker::noop());
    if stream.poll_read_ready(&mut cx).is_pending() {
        return true;
    }
    let mut probe = [0u8; 1];
    matches!(stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

impl Inner {
    fn reap(&self, now: Instant) {
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        idle.retain(|_, conns| {
            conns.retain(|c| {
                now.saturating_duration_since(c.since) < self.idle_timeout && is_clean(&c.stream)
            });
            !conns.is_empty()
        });
    }
}

async fn reap(pool: Weak<Inner>, idle_timeout: Duration) {
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
