//! What a fault decided on an upstream's response head makes of a relayed
//! exchange: the same faults as on hyper's path (`service`, `rewrite`),
//! written as HTTP/1.1 bytes by the relay itself.
//!
//! A rule that keeps the upstream's body (a `replace` or `patch` of the
//! status or headers) gets a new head, and the body follows with the
//! upstream's own framing: its `Transfer-Encoding` and `Content-Length`
//! stay what they were (but a length sent with chunked, removed as from
//! any relayed head), since the bytes that follow are the upstream's. A
//! rule that answers instead (an `abort`, a replaced body, a status that
//! has no content) writes the whole answer, and the upstream connection,
//! its body unread, is closed rather than pooled. A JSON merge `patch`
//! needs the whole body: the relay never takes such a request
//! (`effects::relay_fault`).
use std::fmt::Write as _;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http::header::{self, HeaderMap, HeaderValue};

use faultline_policy::{BodyRewrite, Rewrite};

use super::framing::Framing;
use crate::traffic::effects::HttpFault;
use crate::traffic::http::response::{grpc_abort_headers, strip_hop_headers};
use crate::traffic::http::rewrite::{drop_checksums, no_body, rewrite_headers};

/// What the relay does with the exchange.
#[derive(Debug, PartialEq)]
pub enum Answer {
    /// Relay the upstream's response as it is.
    Pass,
    /// Wait, then relay the upstream's response as it is.
    Delay(Duration),
    /// Write this head in place of the upstream's, then relay its body.
    Head(Vec<u8>),
    /// Write these bytes in place of the upstream's response.
    Instead(Vec<u8>),
    /// Reset the client connection.
    Reset,
}

/// The upstream's final response head, as the relay read it.
pub struct Upstream<'a> {
    pub status: u16,
    /// Every field of the head, hop-by-hop ones included.
    pub fields: HeaderMap,
    pub framing: &'a Framing,
    /// The connection ends after this response (the upstream said so, or
    /// its body runs until it closes).
    pub close: bool,
}

/// What the relay knows of the request being answered.
#[derive(Debug, Clone, Copy)]
pub struct Asked {
    /// `HEAD`: the answer has no body, whatever its headers say.
    pub head_method: bool,
    /// The client sent `Connection: close`.
    pub close: bool,
}

/// The answer `fault` calls for.
pub fn answer(fault: &HttpFault, upstream: Upstream<'_>, asked: Asked) -> Answer {
    match fault {
        HttpFault::DelayResponse(delay) | HttpFault::DelayRequest(delay) => Answer::Delay(*delay),
        HttpFault::Respond {
            status,
            headers,
            body,
        } => Answer::Instead(fixed(*status, headers.clone(), body, asked)),
        HttpFault::Grpc { status, message } => {
            let headers = grpc_abort_headers(status.clone(), message.clone());
            Answer::Instead(fixed(StatusCode::OK, headers, &Bytes::new(), asked))
        }
        HttpFault::Reset => Answer::Reset,
        HttpFault::Rewrite(how) => rewritten(how, upstream, asked),
        // Never decided on a response (validation refuses them).
        HttpFault::Hang
        | HttpFault::Bandwidth(_)
        | HttpFault::TruncateResponse(_)
        | HttpFault::Delayed(..) => Answer::Pass,
    }
}

/// A response of the proxy's own with `body`, its length given (as hyper
/// gives it, on HEAD too) unless its status has no content.
fn fixed(status: StatusCode, mut headers: HeaderMap, body: &Bytes, asked: Asked) -> Vec<u8> {
    headers.remove(header::CONTENT_LENGTH);
    let bodiless = no_body(status);
    if !bodiless {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    }
    if asked.close {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let mut out = head(status, &headers);
    if !bodiless && !asked.head_method {
        out.extend_from_slice(body);
    }
    out
}

/// `replace` and `patch` on the relay, as `rewrite::rewrite` does them on
/// hyper's path.
fn rewritten(how: &Rewrite, upstream: Upstream<'_>, asked: Asked) -> Answer {
    let upstream_bodiless = no_body_u16(upstream.status);
    let status = how
        .status
        .or_else(|| StatusCode::from_u16(upstream.status).ok())
        .unwrap_or(StatusCode::BAD_GATEWAY);
    let mut fields = upstream.fields;
    let codings: Vec<HeaderValue> = fields
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .cloned()
        .collect();
    strip_hop_headers(&mut fields, false);
    rewrite_headers(&mut fields, how);
    if no_body(status) && !upstream_bodiless {
        // A status changed to one without content: the upstream's body
        // would break the client's framing (`fixed` gives it no length).
        return Answer::Instead(fixed(status, fields, &Bytes::new(), asked));
    }
    match &how.body {
        Some(BodyRewrite::Replace(bytes)) if !no_body(status) => {
            fields.remove(header::CONTENT_ENCODING);
            drop_checksums(&mut fields, how);
            Answer::Instead(fixed(status, fields, bytes, asked))
        }
        // A merge patch never reaches the relay; were it to, the body
        // passes unchanged, as it does on hyper's path when it cannot be
        // patched.
        _ => {
            passing_framing(&mut fields, codings, upstream.framing);
            if upstream.close || asked.close {
                fields.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Answer::Head(head(status, &fields))
        }
    }
}

/// The framing headers of a body that passes as the upstream framed it:
/// its codings, and its length only when it has no coding (the relay
/// removes a length sent with chunked, as it does on a relayed head).
fn passing_framing(fields: &mut HeaderMap, codings: Vec<HeaderValue>, framing: &Framing) {
    if codings.is_empty() {
        return;
    }
    if !matches!(framing, Framing::Empty) {
        fields.remove(header::CONTENT_LENGTH);
    }
    for coding in codings {
        fields.append(header::TRANSFER_ENCODING, coding);
    }
}

fn no_body_u16(status: u16) -> bool {
    StatusCode::from_u16(status).is_ok_and(no_body)
}

/// An HTTP/1.1 response head: the status line, `fields`, a `Date` when
/// they have none (as hyper dates every response it writes), and the
/// blank line.
fn head(status: StatusCode, fields: &HeaderMap) -> Vec<u8> {
    let mut out = String::with_capacity(64);
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let mut out = out.into_bytes();
    if !fields.contains_key(header::DATE) {
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in fields {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}
