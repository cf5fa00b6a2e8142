//! Protocol detection: read the client's first bytes and decide between
//! HTTP/1.x, HTTP/2 with prior knowledge (h2c) and raw TCP. The bytes read
//! are handed on so nothing is lost (see `io::ClientIo`).
//!
//! [`classify`] is the pure decision; [`sniff`] is the I/O around it.
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The HTTP/2 connection preface (RFC 9113 section 3.4).
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

const HTTP1_METHODS: &[&[u8]] = &[
    b"GET ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"HEAD ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    Http1,
    Http2,
    Tcp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Classify {
    Done(Detected),
    /// The bytes so far are a prefix of an HTTP preamble: read more.
    NeedMore,
}

/// Decides the protocol from the first bytes a client sent.
pub fn classify(buf: &[u8]) -> Classify {
    if buf.is_empty() {
        return Classify::NeedMore;
    }
    if buf.starts_with(H2_PREFACE) {
        return Classify::Done(Detected::Http2);
    }
    if HTTP1_METHODS.iter().any(|m| buf.starts_with(m)) {
        return Classify::Done(Detected::Http1);
    }
    let could_be = |candidate: &[u8]| buf.len() < candidate.len() && candidate.starts_with(buf);
    if could_be(H2_PREFACE) || HTTP1_METHODS.iter().any(|m| could_be(m)) {
        return Classify::NeedMore;
    }
    Classify::Done(Detected::Tcp)
}

/// The outcome of sniffing: the protocol and the bytes already read.
#[derive(Debug)]
pub struct Sniffed {
    pub protocol: Detected,
    pub prefix: Bytes,
    /// The client closed before sending anything.
    pub closed: bool,
}

/// Reads until [`classify`] decides. A client that sends nothing within
/// `timeout` (a server-first protocol such as MySQL or NATS) is raw TCP.
pub async fn sniff(stream: &mut TcpStream, timeout: Duration) -> std::io::Result<Sniffed> {
    let mut buf = BytesMut::with_capacity(1024);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)).await {
            Err(_elapsed) => {
                return Ok(Sniffed {
                    protocol: Detected::Tcp,
                    prefix: buf.freeze(),
                    closed: false,
                });
            }
            Ok(read) => {
                if read? == 0 {
                    let closed = buf.is_empty();
                    return Ok(Sniffed {
                        protocol: Detected::Tcp,
                        prefix: buf.freeze(),
                        closed,
                    });
                }
            }
        }
        if let Classify::Done(protocol) = classify(&buf) {
            return Ok(Sniffed {
                protocol,
                prefix: buf.freeze(),
                closed: false,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http1_methods_are_http1() {
        assert_eq!(
            classify(b"GET / HTTP/1.1\r\n"),
            Classify::Done(Detected::Http1)
        );
        assert_eq!(
            classify(b"DELETE /x HTTP/1.0\r\n"),
            Classify::Done(Detected::Http1)
        );
    }

    #[test]
    fn h2_preface_is_http2() {
        let mut buf = H2_PREFACE.to_vec();
        buf.extend_from_slice(&[0, 0, 0, 4]);
        assert_eq!(classify(&buf), Classify::Done(Detected::Http2));
    }

    #[test]
    fn partial_preambles_need_more() {
        assert_eq!(classify(b"G"), Classify::NeedMore);
        assert_eq!(classify(b"PRI * HTTP/2"), Classify::NeedMore);
        assert_eq!(classify(b"P"), Classify::NeedMore);
        assert_eq!(classify(b""), Classify::NeedMore);
    }

    #[test]
    fn anything_else_is_tcp() {
        // A TLS ClientHello, a NATS CONNECT, a lowercase method.
        assert_eq!(classify(&[0x16, 0x03, 0x01]), Classify::Done(Detected::Tcp));
        assert_eq!(classify(b"CONNECT{"), Classify::Done(Detected::Tcp));
        assert_eq!(classify(b"get / HTTP/1.1"), Classify::Done(Detected::Tcp));
        assert_eq!(classify(b"PRI * HTTP/1.1"), Classify::Done(Detected::Tcp));
    }
}
