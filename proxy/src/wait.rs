//! `faultline-proxy wait-ready`: block until the proxy's admin server answers
//! `GET /readyz` with 200, or fail after a timeout.
//!
//! The webhook injects it as the sidecar's postStart hook when native sidecars
//! are unavailable: the kubelet runs a container's postStart to completion
//! before starting the next container, so app containers (placed after the
//! proxy) start only once their traffic can be proxied. Plain blocking std
//! I/O: it runs once per pod start and must not need a runtime.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use thiserror::Error;

/// Flags of `faultline-proxy wait-ready` (as injected by the webhook).
pub const DEFAULT_ADMIN_PORT: u16 = faultline_policy::contract::ADMIN_PORT;
pub const DEFAULT_TIMEOUT_SECONDS: u64 = 120;
const POLL_INTERVAL: Duration = Duration::from_millis(100);
const IO_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, Error)]
pub enum WaitError {
    #[error(
        "failed to see the proxy ready on 127.0.0.1:{port}/readyz within {timeout:?} (last: {last})"
    )]
    Timeout {
        port: u16,
        timeout: Duration,
        last: String,
    },
}

/// Poll `http://127.0.0.1:{admin_port}/readyz` until it returns 200.
pub fn wait_ready(admin_port: u16, timeout: Duration) -> Result<(), WaitError> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, admin_port));
    let deadline = Instant::now() + timeout;
    loop {
        let last = match probe(addr) {
            Ok(200) => return Ok(()),
            Ok(status) => format!("HTTP {status}"),
            Err(error) => error.to_string(),
        };
        if Instant::now() + POLL_INTERVAL > deadline {
            return Err(WaitError::Timeout {
                port: admin_port,
                timeout,
                last,
            });
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// One `GET /readyz`; returns the HTTP status code.
fn probe(addr: SocketAddr) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.write_all(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
    let mut head = [0u8; 32];
    let mut len = 0;
    // "HTTP/1.1 200" is 12 bytes; read until we have them or the peer closes.
    while len < 12 {
        let n = stream.read(&mut head[len..])?;
        if n == 0 {
            break;
        }
        len += n;
    }
    let line = std::str::from_utf8(&head[..len]).unwrap_or_default();
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("not an HTTP response: {line:?}"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A real admin-like server: 503 for the first `not_ready` requests, then 200.
    fn server(not_ready: usize) -> (u16, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let served = Arc::new(AtomicUsize::new(0));
        let count = served.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let mut conn = conn.unwrap();
                let mut buf = [0u8; 512];
                let _ = conn.read(&mut buf);
                let n = count.fetch_add(1, Ordering::SeqCst);
                let status = if n < not_ready {
                    "503 Service Unavailable"
                } else {
                    "200 OK"
                };
                let _ = conn.write_all(
                    format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n").as_bytes(),
                );
            }
        });
        (port, served)
    }

    #[test]
    fn returns_once_ready() {
        let (port, served) = server(3);
        wait_ready(port, Duration::from_secs(10)).unwrap();
        assert_eq!(served.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn times_out_with_the_last_answer() {
        let (port, _) = server(usize::MAX);
        let error = wait_ready(port, Duration::from_millis(300))
            .unwrap_err()
            .to_string();
        assert!(error.contains("HTTP 503"), "{error}");
    }

    #[test]
    fn times_out_when_nothing_listens() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let error = wait_ready(port, Duration::from_millis(200))
            .unwrap_err()
            .to_string();
        assert!(error.contains("within"), "{error}");
    }
}
