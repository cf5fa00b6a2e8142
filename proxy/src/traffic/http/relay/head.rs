//! Request and response heads as the relay reads them (httparse), and
//! what it makes of them: whether a request is one it may carry verbatim,
//! and how each message's body is framed (RFC 9112 section 6).
use std::mem::MaybeUninit;

use super::framing::{Chunked, Framing};
use crate::traffic::http::request::{ByteSet, is_host};

/// Headers read per head, as hyper's server and client default to: a
/// request with more falls back to hyper, which refuses it.
pub const MAX_HEADERS: usize = 100;

/// A request head the relay carries.
#[derive(Debug)]
pub struct RequestHead<D> {
    /// Bytes of the head, blank line included.
    pub len: usize,
    /// `HEAD`: its response has no body, whatever it announces.
    pub head_method: bool,
    /// Safe to send again on a fresh connection (RFC 9110 section 9.2.2).
    pub idempotent: bool,
    /// `Connection: close`: the connection ends after this exchange.
    pub close: bool,
    /// What the caller decided, given the request.
    pub decided: D,
}

/// What the relay made of the bytes read so far.
#[derive(Debug)]
pub enum Parsed<T> {
    /// The head is not whole yet.
    Partial,
    /// Not a request the relay carries: hyper serves it from these bytes.
    Refused,
    Done(T),
}

/// A request as the decision reads it.
pub struct Request<'a> {
    pub method: &'a str,
    /// The origin-form target, query included.
    pub target: &'a str,
    pub host: &'a str,
    pub headers: &'a [httparse::Header<'a>],
}

/// Parses the request head at the start of `buf` and, when the relay may
/// carry it, asks `decide` about it (`None` from `decide` refuses it too).
///
/// Strict on purpose: request smuggling lives where two parsers read one
/// message differently, so anything hyper would reframe, rewrite or refuse
/// is left to hyper.
pub fn request<D>(
    buf: &[u8],
    decide: impl FnOnce(&Request<'_>) -> Option<D>,
) -> Parsed<RequestHead<D>> {
    let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Refused,
    };
    if has_bare_lf(&buf[..len]) {
        return Parsed::Refused;
    }
    let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
        return Parsed::Refused;
    };
    if method == "CONNECT" || !is_origin_form(target) {
        return Parsed::Refused;
    }
    let Some(found) = RequestHeaders::scan(req.headers) else {
        return Parsed::Refused;
    };
    let Some(host) = found.host else {
        return Parsed::Refused;
    };
    let request = Request {
        method,
        target,
        host,
        headers: req.headers,
    };
    let Some(decided) = decide(&request) else {
        return Parsed::Refused;
    };
    Parsed::Done(RequestHead {
        len,
        head_method: method == "HEAD",
        idempotent: matches!(
            method,
            "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
        ),
        close: found.close,
        decided,
    })
}

/// The bytes of the empty lines (CRLF) before a request line, which a
/// server ignores (RFC 9112 section 2.2) and hyper does: httparse would
/// count them in the head, passed on to an upstream that may not.
pub fn empty_lines(buf: &[u8]) -> usize {
    buf.chunks_exact(2)
        .take_while(|pair| *pair == b"\r\n")
        .count()
        * 2
}

/// Whether a head ends a line with LF alone. httparse accepts that, as
/// RFC 9112 section 2.2 allows, but a recipient that splits lines at CRLF
/// reads `X: a<LF>Content-Length: 5` as one field: the relay, which passes
/// heads on as they are, would frame the message by a header the next
/// parser never sees. hyper writes the head anew, with CRLFs.
fn has_bare_lf(head: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', head).any(|i| i == 0 || head[i - 1] != b'\r')
}

/// What a relayable request's headers say.
struct RequestHeaders<'a> {
    host: Option<&'a str>,
    close: bool,
}

impl<'a> RequestHeaders<'a> {
    /// `None` for headers the relay leaves to hyper.
    fn scan(headers: &'a [httparse::Header<'a>]) -> Option<Self> {
        let mut host = None;
        let mut length = None;
        let mut chunked = false;
        let mut connection = None;
        for h in headers {
            let name = h.name;
            if name.eq_ignore_ascii_case("host") {
                if host.is_some() || !is_host(h.value) {
                    return None;
                }
                host = Some(std::str::from_utf8(h.value).ok()?);
            } else if name.eq_ignore_ascii_case("content-length") {
                if length.is_some() {
                    return None;
                }
                length = Some(content_length(h.value)?);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                if chunked || !h.value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                    return None;
                }
                chunked = true;
            } else if name.eq_ignore_ascii_case("connection") {
                if connection.is_some() {
                    return None;
                }
                let value = h.value.trim_ascii();
                if value.eq_ignore_ascii_case(b"close") {
                    connection = Some(true);
                } else if value.eq_ignore_ascii_case(b"keep-alive") {
                    connection = Some(false);
                } else {
                    return None;
                }
            } else if is_left_to_hyper(name, h.value) {
                return None;
            }
        }
        // A request with a body is hyper's: an upstream may answer while
        // it still reads the body (an echo, a stream), which takes both
        // directions at once; the relay carries one at a time.
        if chunked || length.is_some_and(|n| n > 0) {
            return None;
        }
        Some(RequestHeaders {
            host,
            close: connection.unwrap_or(false),
        })
    }
}

/// Request headers that make hyper do something the relay does not:
/// upgrades, `Expect: 100-continue`, hop-by-hop headers it strips, and
/// gRPC (which HTTP/1.1 cannot carry; hyper answers it as today).
fn is_left_to_hyper(name: &str, value: &[u8]) -> bool {
    const HOP: [&str; 6] = [
        "upgrade",
        "expect",
        "te",
        "trailer",
        "keep-alive",
        "proxy-connection",
    ];
    HOP.iter().any(|n| name.eq_ignore_ascii_case(n))
        || (name.eq_ignore_ascii_case("content-type") && value.starts_with(b"application/grpc"))
}

/// The largest body length the relay accepts as written (2^53: beyond any
/// real body, and far from where parsers disagree by overflowing).
const MAX_CONTENT_LENGTH: u64 = 1 << 53;

/// A `Content-Length` of digits only, without sign, list or spaces inside.
fn content_length(value: &[u8]) -> Option<u64> {
    let value = value.trim_ascii();
    if value.is_empty() || value.len() > 16 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = value.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    (n <= MAX_CONTENT_LENGTH).then_some(n)
}

/// An origin-form target of bytes every HTTP parser reads alike: RFC 3986
/// unreserved, sub-delims, `:` `@` `/` `?` and `%`. Anything else (a
/// fragment, quotes, braces, non-ASCII) is hyper's to accept or refuse.
fn is_origin_form(target: &str) -> bool {
    const TARGET: ByteSet = ByteSet::alphanumeric_and(b"-._~!$&'()*+,;=:@/?%");
    target.starts_with('/') && TARGET.all(target.as_bytes())
}

/// A response head the relay passes on.
#[derive(Debug)]
pub struct ResponseHead {
    pub len: usize,
    pub status: u16,
    pub body: Framing,
    /// The connection cannot carry another exchange after this one.
    pub close: bool,
    /// A `Content-Length` came with the chunked coding: an intermediary
    /// must remove it before passing the response on (RFC 9112 section
    /// 6.3), or a client that reads the length would frame it otherwise.
    pub drop_length: bool,
    /// A 204 that announced a body (a length or a coding, which RFC 9110
    /// section 8.6 forbids it): an upstream that thinks it has one may
    /// send it late, read by the next request as its response, so the
    /// connection is not reused. A `HEAD`'s or 304's length is the norm.
    pub announced_body: bool,
}

/// The response head `head` without its `Content-Length` lines. Its lines
/// end in CRLF, and no field name is followed by a space: [`response`]
/// refused any other.
pub fn without_length(head: &[u8]) -> Vec<u8> {
    const NAME: &[u8] = b"content-length:";
    head.split_inclusive(|b| *b == b'\n')
        .filter(|line| !(line.len() > NAME.len() && line[..NAME.len()].eq_ignore_ascii_case(NAME)))
        .flatten()
        .copied()
        .collect()
}

/// The fields of a response head that [`response`] accepted, for a rule
/// that reads or rewrites them; a field the `http` crate refuses is left
/// out (no rule can name or match it).
pub fn response_fields(head: &[u8]) -> http::HeaderMap {
    let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut res,
        head,
        &mut headers,
    );
    let mut fields = http::HeaderMap::new();
    if parsed.is_err() {
        return fields;
    }
    fields.reserve(res.headers.len());
    for h in res.headers.iter() {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(h.name.as_bytes()),
            http::HeaderValue::from_bytes(h.value),
        ) {
            fields.append(name, value);
        }
    }
    fields
}

/// An upstream response head the relay cannot frame.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BadResponse {
    #[error("failed to parse the upstream's response head: {0}")]
    Syntax(httparse::Error),
    #[error("failed to read the upstream's response: its Content-Length is not one number")]
    Length,
    #[error("failed to read the upstream's response: its head is over {0} bytes")]
    TooLarge(usize),
    #[error("failed to read the upstream's response: a line of its head ends in LF alone")]
    BareLf,
    #[error("failed to read the upstream's response: status {0} is not 100-999")]
    Status(u16),
}

/// Parses the response head at the start of `buf`; `head_request` says the
/// request was `HEAD` (its response has no body).
pub fn response(buf: &[u8], head_request: bool) -> Result<Option<ResponseHead>, BadResponse> {
    let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut res, buf, &mut headers)
        .map_err(BadResponse::Syntax)?;
    let len = match parsed {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial => return Ok(None),
    };
    // Passed on as it is, such a head frames the body by a header a client
    // that splits lines at CRLF never sees.
    if has_bare_lf(&buf[..len]) {
        return Err(BadResponse::BareLf);
    }
    // What hyper and the `http` crate accept; a client may read a lower
    // one as anything.
    let status = res.code.unwrap_or(0);
    if status < 100 {
        return Err(BadResponse::Status(status));
    }
    let mut length = None;
    let mut coding: Option<&[u8]> = None;
    // HTTP/1.0 closes unless it says otherwise; the relay does not try.
    let mut close = res.version != Some(1);
    for h in res.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = content_length(h.value).ok_or(BadResponse::Length)?;
            if length.is_some_and(|l| l != n) {
                return Err(BadResponse::Length);
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            coding = h
                .value
                .rsplit(|b| *b == b',')
                .next()
                .map(<[u8]>::trim_ascii);
        } else if h.name.eq_ignore_ascii_case("connection") {
            close |= h
                .value
                .split(|b| *b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
        }
    }
    let mut drop_length = false;
    let bodiless = head_request || (100..200).contains(&status) || status == 204 || status == 304;
    let announced_body = status == 204 && (coding.is_some() || length.is_some_and(|n| n > 0));
    let body = match (coding, length) {
        _ if bodiless => Framing::Empty,
        // RFC 9112 section 6.3: the coding wins over a length, and such a
        // message ends the connection.
        (Some(coding), _) if coding.eq_ignore_ascii_case(b"chunked") => {
            close |= length.is_some();
            drop_length = length.is_some();
            Framing::Chunked(Chunked::default())
        }
        (Some(_), _) => Framing::UntilClose,
        (None, Some(0)) => Framing::Empty,
        (None, Some(n)) => Framing::Length(n),
        (None, None) => Framing::UntilClose,
    };
    close |= matches!(body, Framing::UntilClose);
    Ok(Some(ResponseHead {
        len,
        status,
        body,
        close,
        drop_length,
        announced_body,
    }))
}
