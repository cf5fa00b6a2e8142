//! `replace` and `patch`: an upstream's response with its status, headers
//! or body changed.
//!
//! Status and headers change on the head as it passes. A replaced body is
//! the policy's bytes. A JSON merge patch (RFC 7396) needs the whole JSON
//! document, so it is the one place the proxy holds a body: at most
//! [`MAX_PATCH_BODY_BYTES`] per response and [`PATCH_BUFFER_BUDGET`] for
//! the whole proxy (the `faultline_response_patch_buffered_bytes` gauge is
//! the accounting). A body that is compressed, not JSON, larger than the
//! limit, or arrives while the budget is spent passes unchanged, streamed,
//! and is counted in `faultline_response_patch_skipped_total`.
//!
//! Framing stays the proxy's: a changed body drops the upstream's
//! `Content-Length` and hyper frames the new one (a length when it is
//! known, chunked or HTTP/2 DATA frames otherwise). Responses that have no
//! body (to HEAD, 1xx, 204, 205, 304) are never given one.
//!
//! A changed body also loses the upstream's validators and checksums of
//! the old bytes ([`BODY_CHECKSUMS`]): a client or cache would otherwise
//! trust a strong `ETag` for bytes it never had, or reject the body as
//! corrupt. A body that passes unchanged keeps them.
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap};
use http::{Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use prometheus_client::metrics::gauge::Gauge;

use faultline_policy::{BodyRewrite, Rewrite};

use crate::body::{BoxError, ProxyBody, empty, full};
use crate::metrics::{Metrics, PatchSkipLabels, RuleName};

/// The largest body a JSON merge patch is applied to.
pub const MAX_PATCH_BODY_BYTES: usize = 256 * 1024;
/// The most response bytes all patches of one proxy hold at once.
pub const PATCH_BUFFER_BUDGET: usize = 16 * 1024 * 1024;

/// Why a body `patch` passed a response unchanged (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// `Content-Encoding` other than `identity`: the bytes are not JSON.
    Encoded,
    /// A `Content-Type` that is not JSON, or a body that does not parse.
    NotJson,
    /// Larger than [`MAX_PATCH_BODY_BYTES`].
    TooLarge,
    /// [`PATCH_BUFFER_BUDGET`] is in use by other responses.
    Busy,
    /// The upstream's body failed while it was read; the client gets what
    /// came and then the failure.
    UpstreamError,
}

impl Skip {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Encoded => "encoded",
            Self::NotJson => "not_json",
            Self::TooLarge => "too_large",
            Self::Busy => "busy",
            Self::UpstreamError => "upstream_error",
        }
    }
}

/// Applies `rewrite` to `response`; `head_request` says the client asked
/// with HEAD (the answer has no body whatever its headers say).
pub async fn rewrite(
    response: Response<ProxyBody>,
    rewrite: &Rewrite,
    head_request: bool,
    metrics: &Metrics,
    rule: &Arc<str>,
) -> Response<ProxyBody> {
    let (mut parts, body) = response.into_parts();
    let upstream_bodiless = no_body(parts.status);
    if let Some(status) = rewrite.status {
        parts.status = status;
    }
    rewrite_headers(&mut parts.headers, rewrite);
    let bodiless = head_request || no_body(parts.status);
    let body = match &rewrite.body {
        _ if no_body(parts.status) && !upstream_bodiless => {
            // A status changed to one without content: the upstream's
            // body would break the client's framing.
            parts.headers.remove(header::CONTENT_LENGTH);
            empty()
        }
        None => body,
        Some(_) if no_body(parts.status) => body,
        Some(BodyRewrite::Replace(bytes)) => {
            parts.headers.remove(header::CONTENT_LENGTH);
            parts.headers.remove(header::CONTENT_ENCODING);
            drop_checksums(&mut parts.headers, rewrite);
            // On HEAD hyper sends the length of this body and not its bytes.
            full(bytes.clone())
        }
        Some(BodyRewrite::MergePatch(_)) if bodiless => body,
        Some(BodyRewrite::MergePatch(patch)) => {
            match merge_patch(&mut parts.headers, body, patch, &metrics.patch_buffered).await {
                Ok(body) => {
                    drop_checksums(&mut parts.headers, rewrite);
                    body
                }
                Err((skip, body)) => {
                    metrics
                        .patch_skipped
                        .get_or_create(&PatchSkipLabels {
                            rule: RuleName(Arc::clone(rule)),
                            reason: skip.as_str(),
                        })
                        .inc();
                    tracing::debug!(%rule, reason = skip.as_str(), "passed a response body unpatched");
                    body
                }
            }
        }
    };
    Response::from_parts(parts, body)
}

/// Statuses whose responses never have content (RFC 9110 section 6.4.1).
pub(crate) fn no_body(status: StatusCode) -> bool {
    status.is_informational()
        || matches!(
            status,
            StatusCode::NO_CONTENT | StatusCode::RESET_CONTENT | StatusCode::NOT_MODIFIED
        )
}

/// Headers that describe the bytes of a body; a `replace.headers` without a
/// `replace.body` keeps the upstream's, as the upstream's body passes.
const BODY_HEADERS: [header::HeaderName; 3] = [
    header::CONTENT_LENGTH,
    header::CONTENT_ENCODING,
    header::CONTENT_TYPE,
];

pub(crate) fn rewrite_headers(headers: &mut HeaderMap, rewrite: &Rewrite) {
    if let Some(replacement) = &rewrite.replace_headers {
        let mut kept = HeaderMap::with_capacity(replacement.len() + BODY_HEADERS.len());
        let body_passes = rewrite.body.is_none();
        for name in BODY_HEADERS {
            let keep =
                name == header::CONTENT_LENGTH || (body_passes && !replacement.contains_key(&name));
            if keep {
                for value in headers.get_all(&name) {
                    kept.append(name.clone(), value.clone());
                }
            }
        }
        kept.extend(replacement.clone());
        *headers = kept;
    }
    for (name, value) in &rewrite.set_headers {
        headers.insert(name.clone(), value.clone());
    }
    for name in &rewrite.remove_headers {
        headers.remove(name);
    }
}

/// Headers that vouch for the exact bytes of a body: the strong validator
/// `ETag` and the digests of RFC 1864 (`Content-MD5`), RFC 3230 (`Digest`)
/// and RFC 9530 (`Content-Digest`, `Repr-Digest`). `Last-Modified` stays: it
/// is a date, not a claim about the bytes.
const BODY_CHECKSUMS: [&str; 5] = [
    "etag",
    "content-md5",
    "digest",
    "content-digest",
    "repr-digest",
];

/// Removes the upstream's [`BODY_CHECKSUMS`] once its body was changed;
/// those the rule itself sets are the rule's and stay.
pub(crate) fn drop_checksums(headers: &mut HeaderMap, rewrite: &Rewrite) {
    for name in BODY_CHECKSUMS {
        let set_by_rule = rewrite.set_headers.contains_key(name)
            || rewrite
                .replace_headers
                .as_ref()
                .is_some_and(|h| h.contains_key(name));
        if !set_by_rule {
            headers.remove(name);
        }
    }
}

/// Holds a share of [`PATCH_BUFFER_BUDGET`] while a body is read.
struct Reservation<'a> {
    gauge: &'a Gauge<i64, std::sync::atomic::AtomicI64>,
    bytes: i64,
}

impl<'a> Reservation<'a> {
    fn take(gauge: &'a Gauge<i64, std::sync::atomic::AtomicI64>, bytes: usize) -> Option<Self> {
        let bytes = i64::try_from(bytes).ok()?;
        let budget = i64::try_from(PATCH_BUFFER_BUDGET).ok()?;
        let before = gauge.inc_by(bytes);
        if before.saturating_add(bytes) > budget {
            gauge.dec_by(bytes);
            return None;
        }
        Some(Self { gauge, bytes })
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.gauge.dec_by(self.bytes);
    }
}

/// The body with `patch` merged in, or why it was left alone with a body
/// that streams exactly what the upstream sent.
async fn merge_patch(
    headers: &mut HeaderMap,
    mut body: ProxyBody,
    patch: &serde_json::Value,
    gauge: &Gauge<i64, std::sync::atomic::AtomicI64>,
) -> Result<ProxyBody, (Skip, ProxyBody)> {
    let encoded = headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .any(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
    if encoded {
        return Err((Skip::Encoded, body));
    }
    if !headers.get(header::CONTENT_TYPE).is_some_and(is_json) {
        return Err((Skip::NotJson, body));
    }
    let declared = body.size_hint().upper();
    let limit = MAX_PATCH_BODY_BYTES as u64;
    if declared.is_some_and(|n| n > limit) || body.size_hint().lower() > limit {
        return Err((Skip::TooLarge, body));
    }
    let reserve = declared.map_or(MAX_PATCH_BODY_BYTES, |n| n as usize);
    let Some(_reservation) = Reservation::take(gauge, reserve) else {
        return Err((Skip::Busy, body));
    };
    let mut data = BytesMut::new();
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            // Passed on as it came: the client sees the upstream's failure.
            Err(error) => {
                return Err((Skip::UpstreamError, resumed(data, Some(Err(error)), body)));
            }
        };
        match frame.into_data() {
            Ok(chunk) if data.len() + chunk.len() > MAX_PATCH_BODY_BYTES => {
                let pending = Some(Ok(Frame::data(chunk)));
                return Err((Skip::TooLarge, resumed(data, pending, body)));
            }
            Ok(chunk) => data.extend_from_slice(&chunk),
            Err(frame) => trailers = frame.into_trailers().ok(),
        }
    }
    let data = data.freeze();
    let Ok(mut doc) = serde_json::from_slice::<serde_json::Value>(&data) else {
        let pending = trailers.map(|t| Ok(Frame::trailers(t)));
        return Err((Skip::NotJson, resumed(data.into(), pending, empty())));
    };
    json_patch::merge(&mut doc, patch);
    let patched = match serde_json::to_vec(&doc) {
        Ok(bytes) => Bytes::from(bytes),
        Err(_) => {
            let pending = trailers.map(|t| Ok(Frame::trailers(t)));
            return Err((Skip::NotJson, resumed(data.into(), pending, empty())));
        }
    };
    headers.remove(header::CONTENT_LENGTH);
    Ok(match trailers {
        None => full(patched),
        Some(mut trailers) => {
            // RFC 9530 lets a digest of the old bytes come as a trailer.
            for name in BODY_CHECKSUMS {
                trailers.remove(name);
            }
            Resumed {
                queue: VecDeque::from([Ok(Frame::data(patched)), Ok(Frame::trailers(trailers))]),
                rest: empty(),
            }
            .boxed_unsync()
        }
    })
}

/// `application/json`, or any `+json` type (`application/problem+json`).
fn is_json(value: &http::HeaderValue) -> bool {
    let Ok(text) = value.to_str() else {
        return false;
    };
    let essence = text.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/json")
        || essence
            .rsplit_once('+')
            .is_some_and(|(_, suffix)| suffix.eq_ignore_ascii_case("json"))
}

/// The bytes read so far, the frame that stopped the reading, then the
/// rest of the upstream's body as it streams.
fn resumed(
    read: BytesMut,
    pending: Option<Result<Frame<Bytes>, BoxError>>,
    rest: ProxyBody,
) -> ProxyBody {
    let mut queue = VecDeque::with_capacity(2);
    if !read.is_empty() {
        queue.push_back(Ok(Frame::data(read.freeze())));
    }
    queue.extend(pending);
    Resumed { queue, rest }.boxed_unsync()
}

/// A body that yields queued frames, then another body's.
struct Resumed {
    queue: VecDeque<Result<Frame<Bytes>, BoxError>>,
    rest: ProxyBody,
}

impl Body for Resumed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.queue.pop_front() {
            Some(frame) => Poll::Ready(Some(frame)),
            None => Pin::new(&mut self.rest).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.queue.is_empty() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let queued: u64 = self
            .queue
            .iter()
            .filter_map(|f| f.as_ref().ok()?.data_ref().map(|d| d.len() as u64))
            .sum();
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower().saturating_add(queued));
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper.saturating_add(queued));
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        for yes in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/problem+json",
        ] {
            assert!(is_json(&http::HeaderValue::from_static(yes)), "{yes}");
        }
        for no in ["text/plain", "application/jsonl", "application/x-ndjson"] {
            assert!(!is_json(&http::HeaderValue::from_static(no)), "{no}");
        }
    }

    /// The worked example of docs/fault-language.md, byte for byte.
    #[tokio::test]
    async fn merge_patch_of_the_documented_example() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        headers.insert(header::CONTENT_LENGTH, "64".parse().unwrap());
        let upstream = r#"{"items": [{"id": 1}], "total": 12, "promo": "X", "currency": "EUR"}"#;
        let patch = serde_json::json!({"items": [], "total": 0, "promo": null});
        let gauge = Gauge::default();
        let body = merge_patch(&mut headers, full(upstream), &patch, &gauge)
            .await
            .unwrap();
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], br#"{"currency":"EUR","items":[],"total":0}"#);
        assert!(headers.get(header::CONTENT_LENGTH).is_none());
        assert_eq!(gauge.get(), 0);
    }

    #[test]
    fn the_budget_is_shared_and_given_back() {
        let gauge = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
        let first = Reservation::take(&gauge, PATCH_BUFFER_BUDGET - 10).unwrap();
        assert!(Reservation::take(&gauge, 11).is_none());
        let second = Reservation::take(&gauge, 10).unwrap();
        drop((first, second));
        assert_eq!(gauge.get(), 0);
    }
}
