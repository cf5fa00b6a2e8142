//! The server name (SNI) of a TLS connection, read from its ClientHello.
//! Nothing is decrypted or changed: the bytes read are replayed to the
//! upstream like any detection prefix, and the handshake runs end to end
//! between the client and the server.
//!
//! Only connections some rule asks about (`sni`, or `host`, which on TLS
//! is the SNI) have their ClientHello read whole; others are forwarded as
//! soon as detection sees a TLS record. [`parse`] is the pure decision
//! (record framing, the ClientHello and its `server_name` extension are
//! read with `tls-parser`); [`read`] is the I/O around it.
use std::time::Duration;

use bytes::Bytes;
use tls_parser::nom::error::Error as NomError;
use tls_parser::nom::multi::length_data;
use tls_parser::nom::number::complete::be_u16;
use tls_parser::nom::{Err as NomErr, Needed};
use tls_parser::{
    SNIType, TlsExtension, TlsRecordType, parse_tls_extension_sni_content,
    parse_tls_handshake_client_hello, parse_tls_raw_record,
};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// The most the proxy reads of a ClientHello (record headers included):
/// one full TLS record. Real ClientHellos are 0.5-2 KiB (post-quantum key
/// shares included); one this long that is still unfinished has no server
/// name as far as rules are concerned, and is forwarded untouched.
pub const MAX_CLIENT_HELLO: usize = 16 * 1024;

/// The most TLS records a ClientHello may be split over. Clients send one;
/// some split it on purpose (a few records); more is not worth following.
pub const MAX_HELLO_RECORDS: usize = 32;

/// The `server_name` extension (RFC 6066 section 3).
const SERVER_NAME: u16 = 0;
/// A handshake message's type byte for a ClientHello.
const CLIENT_HELLO: u8 = 1;
/// The longest DNS name, with a trailing dot.
const MAX_NAME: usize = 254;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hello {
    /// The ClientHello is not complete: read until the buffer holds this
    /// many bytes (never more than [`MAX_CLIENT_HELLO`]).
    NeedMore(usize),
    /// Done: the server name, or `None` when there is none (no extension,
    /// not a ClientHello, malformed, or over the bounds).
    Done(Option<Box<str>>),
}

/// Reads the ClientHello at the start of `buf`, which may be split over
/// several TLS records and arrive in pieces.
pub fn parse(buf: &[u8]) -> Hello {
    let mut rest = buf;
    // The handshake message, reassembled when it spans several records.
    let mut joined: Vec<u8> = Vec::new();
    for _ in 0..MAX_HELLO_RECORDS {
        let record = match parse_tls_raw_record(rest) {
            Ok((after, record)) => {
                rest = after;
                record
            }
            Err(NomErr::Incomplete(needed)) => {
                let more = match needed {
                    Needed::Size(n) => n.get(),
                    Needed::Unknown => 1,
                };
                let want = buf.len().saturating_add(more);
                return if want > MAX_CLIENT_HELLO {
                    Hello::Done(None)
                } else {
                    Hello::NeedMore(want)
                };
            }
            Err(_) => return Hello::Done(None),
        };
        if record.hdr.record_type != TlsRecordType::Handshake {
            return Hello::Done(None);
        }
        let message = if joined.is_empty() && complete_message(record.data).is_some() {
            record.data
        } else {
            joined.extend_from_slice(record.data);
            &joined
        };
        if let Some(done) = client_hello(message) {
            return done;
        }
    }
    Hello::Done(None)
}

/// The length of the handshake message at the start of `message` once it
/// is all there.
fn complete_message(message: &[u8]) -> Option<usize> {
    let header: [u8; 4] = message.get(..4)?.try_into().ok()?;
    let len = 4 + u32::from_be_bytes([0, header[1], header[2], header[3]]) as usize;
    (message.len() >= len).then_some(len)
}

/// `None` while the handshake message is still incomplete.
fn client_hello(message: &[u8]) -> Option<Hello> {
    let kind = *message.first()?;
    if kind != CLIENT_HELLO {
        return Some(Hello::Done(None));
    }
    let header = message.get(..4)?;
    let len = 4 + u32::from_be_bytes([0, header[1], header[2], header[3]]) as usize;
    if len > MAX_CLIENT_HELLO {
        return Some(Hello::Done(None));
    }
    let body = message.get(4..len)?;
    Some(Hello::Done(server_name(body)))
}

/// The `host_name` of the `server_name` extension of a ClientHello body.
fn server_name(body: &[u8]) -> Option<Box<str>> {
    let (_, hello) = parse_tls_handshake_client_hello(body).ok()?;
    let mut extensions = hello.ext?;
    // The list is walked by its framing only: a malformed extension the
    // server would reject anyway does not hide the server name.
    while !extensions.is_empty() {
        let (rest, kind) = be_u16::<_, NomError<&[u8]>>(extensions).ok()?;
        let (rest, data) = length_data(be_u16::<_, NomError<&[u8]>>)(rest).ok()?;
        extensions = rest;
        if kind != SERVER_NAME {
            continue;
        }
        let (_, TlsExtension::SNI(names)) = parse_tls_extension_sni_content(data).ok()? else {
            return None;
        };
        let (_, name) = names.into_iter().find(|(t, _)| *t == SNIType::HostName)?;
        let name = std::str::from_utf8(name).ok()?;
        let plausible = !name.is_empty()
            && name.len() <= MAX_NAME
            && name.bytes().all(|b| b.is_ascii_graphic());
        return plausible.then(|| name.into());
    }
    None
}

/// Reads the rest of a ClientHello after `prefix` (what detection read)
/// under the detection deadlines: `timeout` of silence, `give_up` overall.
/// Returns every byte read (to replay) and the server name; a client that
/// stops or goes silent mid-ClientHello has none.
pub async fn read(
    stream: &mut TcpStream,
    prefix: Bytes,
    timeout: Duration,
    give_up: Instant,
) -> std::io::Result<(Bytes, Option<Box<str>>)> {
    let mut want = match parse(&prefix) {
        Hello::Done(name) => return Ok((prefix, name)),
        Hello::NeedMore(want) => want,
    };
    let mut buf = Vec::with_capacity(want);
    buf.extend_from_slice(&prefix);
    drop(prefix);
    loop {
        // Never more than the ClientHello asks for, so the buffer stays
        // within MAX_CLIENT_HELLO.
        buf.reserve_exact(want.saturating_sub(buf.len()));
        let deadline = give_up.min(Instant::now() + timeout);
        let read = tokio::time::timeout_at(deadline, read_upto(stream, &mut buf, want)).await;
        match read {
            Err(_) | Ok(Ok(0)) => return Ok((buf.into(), None)),
            Ok(Ok(_)) => {}
            Ok(Err(error)) => return Err(error),
        }
        match parse(&buf) {
            Hello::Done(name) => return Ok((buf.into(), name)),
            Hello::NeedMore(more) => want = more,
        }
    }
}

/// One read into `buf`, no further than `limit` bytes in all.
async fn read_upto(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    limit: usize,
) -> std::io::Result<usize> {
    let room = limit.saturating_sub(buf.len()).max(1);
    let mut limited = (&mut *stream).take(room as u64);
    limited.read_buf(buf).await
}

#[cfg(test)]
mod tests;
