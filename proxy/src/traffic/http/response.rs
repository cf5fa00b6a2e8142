//! Responses the proxy makes itself, and hop-by-hop header handling.
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use crate::body::{ProxyBody, empty, full};

/// An abort or a fixed response.
pub fn fixed(status: StatusCode, headers: &HeaderMap, body: Bytes) -> Response<ProxyBody> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().extend(headers.clone());
    response
}

/// A trailers-only gRPC response: HTTP 200 whose single HEADERS frame
/// carries `grpc-status` and ends the stream (hyper sends an empty body as
/// END_STREAM on the headers).
pub fn grpc_status(code: u8, message: &str) -> Response<ProxyBody> {
    let mut response = Response::new(empty());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert("grpc-status", HeaderValue::from(u16::from(code)));
    if let (false, Ok(value)) = (
        message.is_empty(),
        HeaderValue::from_str(&percent_encode_grpc(message)),
    ) {
        headers.insert("grpc-message", value);
    }
    response
}

/// A trailers-only gRPC response with prebuilt header values.
pub fn grpc_abort(status: HeaderValue, message: Option<HeaderValue>) -> Response<ProxyBody> {
    let mut response = Response::new(empty());
    *response.headers_mut() = grpc_abort_headers(status, message);
    response
}

/// The head of [`grpc_abort`]'s response, for the HTTP/1.1 relay too.
pub fn grpc_abort_headers(status: HeaderValue, message: Option<HeaderValue>) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(3);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert("grpc-status", status);
    if let Some(message) = message {
        headers.insert("grpc-message", message);
    }
    headers
}

/// The upstream could not be reached or failed: 502 with a body that says
/// why (gRPC clients get UNAVAILABLE, which they know how to retry).
pub fn bad_gateway(grpc: bool, reason: &str) -> Response<ProxyBody> {
    if grpc {
        return grpc_status(14, &format!("faultline: {reason}"));
    }
    let mut response = Response::new(full(format!("faultline: {reason}\n")));
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A request the proxy refuses (400, 501): says why, and closes an
/// HTTP/1.1 connection after it (HTTP/2 has no `Connection` header: only
/// the one stream ends).
pub fn refused(status: StatusCode, reason: &str, close: bool) -> Response<ProxyBody> {
    let mut response = Response::new(full(format!("faultline: {reason}\n")));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if close {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// gRPC's `grpc-message` is percent-encoded (space and printable ASCII
/// other than `%` are left as is).
fn percent_encode_grpc(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for byte in message.bytes() {
        if (0x20..=0x7e).contains(&byte) && byte != b'%' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// A WebSocket (or other) HTTP/1.1 upgrade request. An upgrade to h2c is
/// not one: after a 101 the proxy only copies bytes, so the HTTP/2 requests
/// that follow would escape every rule. Its upgrade headers are removed and
/// the request is answered in HTTP/1.1 (RFC 9113 section 3.1 deprecates the
/// upgrade; h2c clients use prior knowledge, which the proxy detects).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    let h2c = || {
        headers
            .get_all(header::UPGRADE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|protocol| protocol.trim().eq_ignore_ascii_case("h2c"))
    };
    headers.contains_key(header::UPGRADE)
        && !h2c()
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

/// Headers a `Connection` option cannot remove: `Host` (the upstream's
/// virtual host, and what `match.host` saw), the framing headers hyper
/// manages itself, `Content-Type` (gRPC needs it end to end) and `TE`,
/// whose `trailers` the proxy keeps on its own terms (RFC 9110 section
/// 10.1.4 even asks senders of `TE` to name it in `Connection`).
const PROTECTED: [HeaderName; 5] = [
    header::HOST,
    header::CONTENT_LENGTH,
    header::CONTENT_TYPE,
    header::TRANSFER_ENCODING,
    header::TE,
];

/// Removes headers that describe one hop (RFC 9110 section 7.6.1) so hyper
/// can frame the next hop itself. An upgrade keeps `Connection: upgrade`
/// and `Upgrade`; `TE: trailers` is kept because gRPC requires it. Headers
/// named in `Connection` go too, but for the [`PROTECTED`] ones.
pub fn strip_hop_headers(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Most messages carry none: one pass over the few names they have is
    // cheaper than the lookups below (every listed header only ever
    // matters when it, or `Connection` naming others, is present).
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .filter(|name| !(keep_upgrade && name == header::UPGRADE))
        .filter(|name| !PROTECTED.contains(name))
        .collect();
    for name in named {
        headers.remove(name);
    }
    if !keep_upgrade {
        headers.remove(header::CONNECTION);
        headers.remove(header::UPGRADE);
    }
    headers.remove("proxy-connection");
    headers.remove("keep-alive");
    headers.remove(header::TRANSFER_ENCODING);
    headers.remove(header::PROXY_AUTHENTICATE);
    headers.remove(header::PROXY_AUTHORIZATION);
    let te_trailers = headers
        .get(header::TE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        });
    headers.remove(header::TE);
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    [
        header::CONNECTION,
        header::UPGRADE,
        header::TE,
        header::TRANSFER_ENCODING,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
    ]
    .contains(name)
        || name == "proxy-connection"
        || name == "keep-alive"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    #[test]
    fn hop_headers_and_connection_tokens_are_removed() {
        let mut map = headers(&[
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers, deflate"),
            ("x-end", "2"),
        ]);
        strip_hop_headers(&mut map, false);
        assert_eq!(map, headers(&[("x-end", "2"), ("te", "trailers")]));
    }

    #[test]
    fn each_hop_header_alone_is_removed() {
        for name in [
            "connection",
            "upgrade",
            "te",
            "transfer-encoding",
            "proxy-authenticate",
            "proxy-authorization",
            "proxy-connection",
            "Keep-Alive",
        ] {
            let mut map = headers(&[("host", "a"), (name, "x")]);
            strip_hop_headers(&mut map, false);
            assert_eq!(map, headers(&[("host", "a")]), "{name}");
        }
    }

    #[test]
    fn end_to_end_headers_are_left_alone() {
        let pairs = [("host", "a"), ("content-length", "3"), ("x-keep", "1")];
        let mut map = headers(&pairs);
        strip_hop_headers(&mut map, false);
        assert_eq!(map, headers(&pairs));
    }

    #[test]
    fn connection_options_never_remove_protected_headers() {
        let mut map = headers(&[
            (
                "connection",
                "Host, Content-Length, content-type, TE, Transfer-Encoding, x-hop",
            ),
            ("host", "app.example"),
            ("content-length", "3"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            ("x-hop", "1"),
        ]);
        strip_hop_headers(&mut map, false);
        assert_eq!(
            map,
            headers(&[
                ("host", "app.example"),
                ("content-length", "3"),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
            ])
        );
    }

    #[test]
    fn h2c_is_not_an_upgrade() {
        for upgrade in ["h2c", "H2C", "websocket, h2c"] {
            let map = headers(&[
                ("connection", "Upgrade, HTTP2-Settings"),
                ("upgrade", upgrade),
                ("http2-settings", "AAMAAABkAARAAAAAAAIAAAAA"),
            ]);
            assert!(!is_upgrade(&map), "{upgrade}");
        }
        let mut map = headers(&[
            ("host", "a"),
            ("connection", "Upgrade, HTTP2-Settings"),
            ("upgrade", "h2c"),
            ("http2-settings", "AAMAAABkAARAAAAAAAIAAAAA"),
        ]);
        strip_hop_headers(&mut map, false);
        assert_eq!(map, headers(&[("host", "a")]));
    }

    #[test]
    fn upgrades_keep_connection_and_upgrade() {
        let mut map = headers(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert!(is_upgrade(&map));
        strip_hop_headers(&mut map, true);
        assert_eq!(map.get("upgrade").unwrap(), "websocket");
        assert_eq!(map.get("connection").unwrap(), "Upgrade");
    }

    #[test]
    fn grpc_status_is_trailers_only() {
        let response = grpc_status(14, "down 100%");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["grpc-status"], "14");
        assert_eq!(response.headers()["grpc-message"], "down 100%25");
        assert_eq!(response.headers()["content-type"], "application/grpc");
        assert!(http_body::Body::is_end_stream(response.body()));
    }
}
