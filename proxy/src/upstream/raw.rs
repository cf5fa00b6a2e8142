//! Idle upstream TCP connections of the HTTP/1.1 relay
//! (`traffic::http::relay`), one pool per worker, as [`super::H1Pool`]
//! keeps hyper's.
//!
//! A relayed exchange takes one upstream connection and gives it back here
//! once its response has ended cleanly, so idle clients hold no upstream
//! socket and the next request, of any client, reuses a warm one.
//! A connection is checked when taken (a non-blocking read: the upstream
//! closed it, or sent bytes nobody asked for, and it is dropped) and
//! closed once idle for longer than the pool's idle timeout.
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::Duration;

use tokio::net::TcpStream;

use super::idle::{IdleConns, Reusable};

/// Idle connections kept per destination and worker: enough for the
/// clients a busy pod's worker serves at once, and a bound on sockets
/// held for clients that went away.
pub const MAX_IDLE_PER_DEST: usize = 256;

pub struct RawPool {
    idle: Arc<IdleConns<TcpStream>>,
}

impl RawPool {
    pub fn new(idle_timeout: Duration) -> Self {
        RawPool {
            idle: IdleConns::new(idle_timeout, MAX_IDLE_PER_DEST),
        }
    }

    /// The most recently used idle connection to `dest` that is still
    /// open and silent.
    pub fn take(&self, dest: SocketAddr) -> Option<TcpStream> {
        self.idle.take(dest).map(|(stream, _since)| stream)
    }

    /// Keeps `stream`, idle between two complete exchanges, for reuse.
    pub fn put(&self, dest: SocketAddr, stream: TcpStream) {
        self.idle.put(dest, stream);
    }

    /// Idle connections to `dest` (for tests).
    pub fn idle_count(&self, dest: SocketAddr) -> usize {
        self.idle.count(dest)
    }
}

impl Reusable for TcpStream {
    fn reusable(&self) -> bool {
        is_clean(self)
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
