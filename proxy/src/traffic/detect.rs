//! Protocol detection: read the client's first bytes and decide between
//! HTTP/1.x, HTTP/2 with prior knowledge (h2c), TLS (a ClientHello record)
//! and raw TCP. The bytes read are handed on so nothing is lost (see
//! `io::ClientIo`).
//!
//! [`classify`] is the pure decision; [`sniff`] is the I/O around it.
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use faultline_policy::{MAX_METHOD_BYTES, is_tchar};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The HTTP/2 connection preface (RFC 9113 section 3.4).
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Detection reads at most this much of a request line before deciding: a
/// line this long that still has the shape of one (a method, a space, a
/// target without spaces) is taken as HTTP/1.x, and hyper answers it as an
/// HTTP server would. It is the size of the buffer [`sniff`] starts with,
/// so detection never grows it (a method, a space and 1 KiB of URL are
/// evidence enough).
pub const MAX_REQUEST_LINE: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    Http1,
    Http2,
    /// A TLS handshake record carrying a ClientHello (forwarded as bytes).
    Tls,
    Tcp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Classify {
    Done(Detected),
    /// The bytes so far are a prefix of an HTTP preamble: read more.
    NeedMore,
}

/// Decides the protocol from the first bytes a client sent: the h2
/// preface is HTTP/2; a request line (RFC 9112 section 3: any `token`
/// method, SP, a request-target, SP, `HTTP/1.x`) is HTTP/1.x, whatever the
/// method; the header of a TLS record carrying a ClientHello is TLS;
/// anything else (a Redis `GET key`, a database's greeting) is TCP.
pub fn classify(buf: &[u8]) -> Classify {
    if buf.is_empty() {
        return Classify::NeedMore;
    }
    if let Some(tls) = client_hello_record(buf) {
        return tls;
    }
    if buf.starts_with(H2_PREFACE) {
        return Classify::Done(Detected::Http2);
    }
    if buf.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(buf) {
        return Classify::NeedMore;
    }
    // Empty lines before a request line are ignored (RFC 9112 section 2.2;
    // hyper does too).
    let buf = &buf[..buf.len().min(MAX_REQUEST_LINE)];
    let blank = buf
        .iter()
        .take_while(|b| matches!(b, b'\r' | b'\n'))
        .count();
    let line = &buf[blank..];
    let decided = if line.is_empty() {
        Classify::NeedMore
    } else {
        request_line(line)
    };
    match decided {
        // At the bound, what still has the shape of a request line is one.
        Classify::NeedMore if buf.len() >= MAX_REQUEST_LINE => Classify::Done(if line.is_empty() {
            Detected::Tcp
        } else {
            Detected::Http1
        }),
        decided => decided,
    }
}

/// `method SP request-target SP HTTP/1.DIGIT`, or a prefix of it.
fn request_line(line: &[u8]) -> Classify {
    let tcp = Classify::Done(Detected::Tcp);
    let method = line.iter().take_while(|b| is_tchar(**b)).count();
    if method > MAX_METHOD_BYTES {
        return tcp;
    }
    let Some(rest) = line.get(method..).and_then(|r| r.split_first()) else {
        return Classify::NeedMore;
    };
    if method == 0 || *rest.0 != b' ' {
        return tcp;
    }
    let rest = rest.1;
    let target = rest.iter().take_while(|b| is_target_byte(**b)).count();
    let Some((after, version)) = rest.get(target..).and_then(|r| r.split_first()) else {
        return Classify::NeedMore;
    };
    if target == 0 || *after != b' ' {
        return tcp;
    }
    const VERSION: &[u8] = b"HTTP/1.";
    let known = version.len().min(VERSION.len());
    if version[..known] != VERSION[..known] {
        return tcp;
    }
    match version.get(VERSION.len()) {
        None => Classify::NeedMore,
        Some(minor) if minor.is_ascii_digit() => Classify::Done(Detected::Http1),
        Some(_) => tcp,
    }
}

/// A TLS record header (RFC 8446 section 5.1: type 22 handshake, version
/// 3.0 to 3.4, a length up to 2^14) followed by the ClientHello type byte;
/// `None` when the bytes are not shaped like one.
fn client_hello_record(buf: &[u8]) -> Option<Classify> {
    const SHAPE: [fn(u8) -> bool; 6] = [
        |b| b == 0x16,
        |b| b == 0x03,
        |b| b <= 0x04,
        |b| b <= 0x40,
        |_| true,
        |b| b == 0x01,
    ];
    let shaped = buf.iter().zip(SHAPE).all(|(b, ok)| ok(*b));
    match (shaped, buf.len() >= SHAPE.len()) {
        (false, _) => None,
        (true, true) => Some(Classify::Done(Detected::Tls)),
        (true, false) => Some(Classify::NeedMore),
    }
}

/// What a request-target may hold as far as detection cares: anything but
/// spaces and control characters (hyper rejects a bad target with 400).
fn is_target_byte(b: u8) -> bool {
    b > b' ' && b != 0x7f
}

/// The outcome of sniffing: the protocol and the bytes already read.
#[derive(Debug)]
pub struct Sniffed {
    pub protocol: Detected,
    pub prefix: Bytes,
    /// The client closed before sending anything.
    pub closed: bool,
}

/// However steadily a client trickles its request line, detection ends
/// this long after the connection opened (hyper gives a whole request head
/// as long); an unfinished line is then passed on as raw TCP.
pub const REQUEST_LINE_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads until [`classify`] decides. A client that is silent for `timeout`
/// before its first byte (a server-first protocol such as MySQL or NATS)
/// or in the middle of what could be a request line (a protocol that sends
/// `GET key` and waits) is raw TCP. The request line fits in one segment
/// ([`MAX_REQUEST_LINE`] is below any MSS), so real HTTP clients do not
/// pause inside it.
pub async fn sniff(stream: &mut TcpStream, timeout: Duration) -> std::io::Result<Sniffed> {
    let mut buf = BytesMut::with_capacity(MAX_REQUEST_LINE);
    let give_up = tokio::time::Instant::now() + REQUEST_LINE_TIMEOUT;
    loop {
        let deadline = give_up.min(tokio::time::Instant::now() + timeout);
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

    const HTTP1: Classify = Classify::Done(Detected::Http1);
    const TCP: Classify = Classify::Done(Detected::Tcp);

    #[test]
    fn request_lines_are_http1_whatever_the_method() {
        for line in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"DELETE /x HTTP/1.0\r\n",
            b"PURGE /cache/a HTTP/1.1\r\n",
            b"M-SEARCH * HTTP/1.1\r\n",
            b"get / HTTP/1.1\r\n",
            b"OPTIONS * HTTP/1.1",
            b"GET http://a.example/x?y=1 HTTP/1.1",
            b"CONNECT a.example:443 HTTP/1.1",
            b"PRI * HTTP/1.1\r\n",
        ] {
            assert_eq!(classify(line), HTTP1, "{}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn empty_lines_before_a_request_line_are_skipped() {
        assert_eq!(classify(b"\r\nGET / HTTP/1.1\r\n"), HTTP1);
        assert_eq!(classify(b"\n\r\n\r\nPURGE /a HTTP/1.0"), HTTP1);
        assert_eq!(classify(b"\r\n\r\n"), Classify::NeedMore);
        assert_eq!(classify(b"\r\nGET /"), Classify::NeedMore);
        assert_eq!(classify(b"\r\nGET key\r\n"), TCP);
        assert_eq!(classify(&[b'\n'; MAX_REQUEST_LINE]), TCP);
        let mut padded = vec![b'\n'; MAX_REQUEST_LINE - 6];
        padded.extend_from_slice(b"GET /a");
        assert_eq!(classify(&padded), HTTP1);
    }

    #[test]
    fn h2_preface_is_http2() {
        let mut buf = H2_PREFACE.to_vec();
        buf.extend_from_slice(&[0, 0, 0, 4]);
        assert_eq!(classify(&buf), Classify::Done(Detected::Http2));
    }

    #[test]
    fn every_prefix_of_a_request_line_or_the_preface_needs_more() {
        for whole in [&b"PURGE /cache/a HTTP/1.1"[..], H2_PREFACE] {
            for end in 0..whole.len() - 1 {
                assert_eq!(
                    classify(&whole[..end]),
                    Classify::NeedMore,
                    "{}",
                    String::from_utf8_lossy(&whole[..end])
                );
            }
        }
    }

    #[test]
    fn anything_else_is_tcp() {
        for bytes in [
            &[0x16, 0x03, 0x01, 0x00, 0x05, 0x02][..], // a TLS record, not a ClientHello
            &[0x16, 0x03, 0x09][..],                   // not a TLS version
            b"CONNECT{\"verbose\":false}",             // NATS
            b"GET key\r\n",                            // a Redis inline command
            b"SET k v\r\n",
            b"GET / HTTP/2.0\r\n",
            b"GET / HTTP/1.x",
            b"GET  / HTTP/1.1",
            b"GET /\x01 HTTP/1.1",
            b"GE\tT / HTTP/1.1",
            b" GET / HTTP/1.1",
            b"PRI * HTTP/2.0\r\n\r\nXX",
        ] {
            assert_eq!(classify(bytes), TCP, "{}", String::from_utf8_lossy(bytes));
        }
        let long_method = format!("{} / HTTP/1.1", "M".repeat(MAX_METHOD_BYTES + 1));
        assert_eq!(classify(long_method.as_bytes()), TCP);
    }

    #[test]
    fn a_client_hello_record_is_tls_once_its_type_byte_is_in() {
        let header = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00];
        for end in 1..6 {
            assert_eq!(classify(&header[..end]), Classify::NeedMore, "{end} bytes");
        }
        assert_eq!(classify(&header[..6]), Classify::Done(Detected::Tls));
        assert_eq!(classify(&header), Classify::Done(Detected::Tls));
        // Record versions 3.0 (SSL 3 style) to 3.4 are seen in the wild.
        assert_eq!(
            classify(&[0x16, 0x03, 0x00, 0x00, 0x30, 0x01]),
            Classify::Done(Detected::Tls)
        );
        // Longer than a TLS record may be.
        assert_eq!(
            classify(&[0x16, 0x03, 0x01, 0x41, 0x00, 0x01]),
            Classify::Done(Detected::Tcp)
        );
    }

    #[test]
    fn look_ahead_is_bounded() {
        // A target too long to see the end of, shaped like a request line.
        let mut line = b"GET /".to_vec();
        line.resize(MAX_REQUEST_LINE - 1, b'a');
        assert_eq!(classify(&line), Classify::NeedMore);
        line.push(b'a');
        assert_eq!(classify(&line), HTTP1);
        line.extend_from_slice(b" garbage after the bound");
        assert_eq!(classify(&line), HTTP1);
        // Unbroken token characters: no method is this long.
        assert_eq!(classify(&[b'A'; MAX_REQUEST_LINE]), TCP);
    }
}
