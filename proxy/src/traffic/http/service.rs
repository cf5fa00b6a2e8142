//! One HTTP request or gRPC call: ask the policy for a fault, apply it, and
//! forward to the upstream (unless the fault answers for it).
use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::family::Family;

use super::request::{ClientBodyError, check_head};
use super::response::{
    bad_gateway, fixed, grpc_abort, is_grpc, is_upgrade, refused, strip_hop_headers,
};
use super::rewrite::rewrite;
use super::throttled::{Throttled, Truncate};
use crate::body::{BoxError, ProxyBody};
use crate::conn::ConnCtx;
use crate::metrics::{DirectionLabels, Protocol, TrafficLabels};
use crate::state::ProxyState;
use crate::throttle::Throttle;
use crate::traffic::effects::{self, HttpFault};

pub async fn handle(
    ctx: Arc<ConnCtx>,
    mut req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    // Borrowed from the connection: every worker cloning the proxy-wide Arc
    // per request would bounce its counter between CPUs.
    let shared: &ProxyState = &ctx.shared;
    let grpc = is_grpc(req.headers());
    let protocol = if grpc { Protocol::Grpc } else { ctx.protocol };
    let labels = TrafficLabels {
        direction: ctx.direction,
        protocol,
    };
    // gRPC calls on an h2c connection have their own label set, so only the
    // connection's own protocol uses its cached series.
    let cached = protocol == ctx.protocol;
    with_series(
        &ctx.requests,
        &shared.metrics.requests,
        &labels,
        cached,
        |c| {
            c.inc();
        },
    );

    let sized = http_body::Body::size_hint(req.body()).exact().is_some();
    if let Err(bad) = check_head(req.version(), req.uri(), req.headers(), sized) {
        let reason = crate::error_chain(&bad);
        return Ok(refuse(shared, &ctx, bad.status(), &reason, true));
    }

    let mut response_delay = None;
    let mut throttles = None;
    let mut truncate = None;
    let conn = effects::conn_info(ctx.direction, ctx.client, ctx.original_dst);
    let decided = effects::request_fault(&shared.store, &conn, &mut req, grpc);
    if let Some((rule, refusal)) = decided.refused {
        shared.metrics.header_fault_refused(&rule, refusal.reason());
        tracing::debug!(%rule, reason = refusal.reason(), %refusal, client = %ctx.client, "refused a fault the request asked for");
    }
    if let Some(injected) = decided.injected {
        shared.metrics.fault(&injected.rule, injected.kind);
        tracing::debug!(rule = %injected.rule, kind = injected.kind, path = %req.uri().path(), "fault injected");
        let fault = match injected.fault {
            HttpFault::Delayed(delay, then) => {
                tokio::time::sleep(delay).await;
                *then
            }
            fault => fault,
        };
        match fault {
            HttpFault::DelayRequest(delay) => tokio::time::sleep(delay).await,
            HttpFault::DelayResponse(delay) => response_delay = Some(delay),
            HttpFault::Respond {
                status,
                headers,
                body,
            } => return Ok(fixed(status, &headers, body)),
            HttpFault::Grpc { status, message } => return Ok(grpc_abort(status, message)),
            HttpFault::Reset => {
                ctx.kill();
                return std::future::pending().await;
            }
            HttpFault::Hang => {
                // Dropping the body lets hyper notice the client leaving,
                // which drops this future.
                drop(req);
                return std::future::pending().await;
            }
            HttpFault::Bandwidth(limit) => throttles = Some(ctx.throttles(limit)),
            HttpFault::TruncateResponse(bytes) => truncate = Some(bytes),
            // Unwrapped above: the policy never nests one in another.
            HttpFault::Delayed(..) => {}
            // Only ever decided on the response.
            HttpFault::Rewrite(_) => {}
        }
    }
    // Upgrades and CONNECT turn into tunnels; their answer is left alone.
    let pending = (!is_upgrade(req.headers()) && req.method() != http::Method::CONNECT)
        .then(|| effects::response_candidates(&shared.store, &conn, &req, grpc))
        .flatten();
    let head_request = req.method() == http::Method::HEAD;

    let started = Instant::now();
    // Boxed: hyper moves the request future around (into its in-flight
    // slot), and forwarding is most of its size.
    let (request_throttle, response_throttle) =
        throttles.map_or((None, None), |t| (t.request, t.response));
    let response = Box::pin(forward(shared, &ctx, req, request_throttle, grpc)).await;
    let mut response = match response {
        Ok(response) => response,
        Err(reply) => return Ok(reply),
    };
    let latency = started.elapsed().as_secs_f64();
    with_series(
        &ctx.upstream_latency,
        &shared.metrics.upstream_latency,
        &labels,
        cached,
        |h| h.observe(latency),
    );
    if let Some(pending) = pending
        && let Some(injected) = effects::response_fault(&pending, &response)
    {
        shared.metrics.fault(&injected.rule, injected.kind);
        tracing::debug!(rule = %injected.rule, kind = injected.kind, status = %response.status(), "fault injected on a response");
        response = match injected.fault {
            HttpFault::DelayResponse(delay) | HttpFault::DelayRequest(delay) => {
                tokio::time::sleep(delay).await;
                response
            }
            HttpFault::Respond {
                status,
                headers,
                body,
            } => fixed(status, &headers, body),
            HttpFault::Grpc { status, message } => grpc_abort(status, message),
            HttpFault::Reset => {
                ctx.kill();
                return std::future::pending().await;
            }
            HttpFault::Rewrite(how) => {
                rewrite(
                    response,
                    &how,
                    head_request,
                    &shared.metrics,
                    &injected.rule,
                )
                .await
            }
            // Never decided on the response (validation refuses them).
            HttpFault::Hang
            | HttpFault::Bandwidth(_)
            | HttpFault::TruncateResponse(_)
            | HttpFault::Delayed(..) => response,
        };
    }
    if let Some(delay) = response_delay {
        tokio::time::sleep(delay).await;
    }
    if response_throttle.is_some() || truncate.is_some() {
        let truncate = truncate.map(|bytes| Truncate::new(bytes, ctx.clone()));
        response = response
            .map(|body| Throttled::shaped(body, response_throttle, truncate).boxed_unsync());
    }
    Ok(response)
}

/// Sends the request upstream; on failure returns the response the client
/// gets instead (502 or gRPC UNAVAILABLE).
async fn forward(
    shared: &ProxyState,
    ctx: &ConnCtx,
    mut req: Request<Incoming>,
    throttle: Option<Throttle>,
    grpc: bool,
) -> Result<Response<ProxyBody>, Response<ProxyBody>> {
    let upgrade = ctx.protocol == Protocol::Http1 && is_upgrade(req.headers());
    // An upstream that is itself a forward proxy answers CONNECT with 2xx
    // and then carries bytes, as after a 101.
    let connect = ctx.protocol == Protocol::Http1 && req.method() == http::Method::CONNECT;
    let client_upgrade = (upgrade || connect).then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    strip_hop_headers(&mut parts.headers, upgrade);
    let body = body.map_err(ClientBodyError);
    let body: ProxyBody = match throttle {
        Some(throttle) => Throttled::new(body, throttle).boxed_unsync(),
        None => body.map_err(BoxError::from).boxed_unsync(),
    };
    let dest = ctx.forward_to;
    let result = if ctx.protocol == Protocol::Http2 {
        parts.uri = h2_uri(&parts.uri, &parts.headers, dest);
        let sent = shared
            .upstream(ctx.worker)
            .send_http2(dest, Request::from_parts(parts, body))
            .await;
        sent.map(|r| r.map(boxed))
    } else {
        h1_target(&mut parts, &ctx.forward_authority);
        if parts.version != Version::HTTP_10 {
            parts.version = Version::HTTP_11;
        }
        let sent = shared
            .upstream(ctx.worker)
            .send_http1(dest, Request::from_parts(parts, body))
            .await;
        sent.map(|r| r.map(boxed))
    };
    let mut response = match result {
        Ok(response) => response,
        Err(error) => {
            if let Some(body) = ClientBodyError::find(&error) {
                let reason = crate::error_chain(body);
                let malformed = body.is_malformed();
                return Err(refuse(
                    shared,
                    ctx,
                    StatusCode::BAD_REQUEST,
                    &reason,
                    malformed,
                ));
            }
            let reason = crate::error_chain(&error);
            if error.is_connect() {
                shared.metrics.upstream_connect_error(ctx.direction);
            }
            tracing::warn!(%dest, error = %reason, "upstream request failed");
            return Err(bad_gateway(grpc, &reason));
        }
    };
    let switched = response.status() == StatusCode::SWITCHING_PROTOCOLS
        || (connect && response.status().is_success());
    if let (Some(client_upgrade), true) = (client_upgrade, switched) {
        let upstream_upgrade = hyper::upgrade::on(&mut response);
        let hard_stop = shared.hard_stop.clone();
        shared.tracker.spawn(async move {
            tokio::select! {
                () = tunnel(client_upgrade, upstream_upgrade) => {}
                () = hard_stop.cancelled() => {}
            }
        });
    }
    strip_hop_headers(response.headers_mut(), upgrade && switched);
    Ok(response)
}

/// Answers a request the client got wrong (never blamed on the upstream),
/// counts it when it was malformed (rather than cut short by the client
/// leaving), and closes an HTTP/1.1 connection after the answer: its
/// framing can no longer be trusted (an HTTP/2 stream just ends).
fn refuse(
    shared: &ProxyState,
    ctx: &ConnCtx,
    status: StatusCode,
    reason: &str,
    malformed: bool,
) -> Response<ProxyBody> {
    if malformed {
        shared
            .metrics
            .bad_requests
            .get_or_create(&DirectionLabels {
                direction: ctx.direction,
            })
            .inc();
    }
    tracing::debug!(client = %ctx.client, error = %reason, malformed, "refused a client's request");
    refused(status, reason, ctx.protocol == Protocol::Http1)
}

/// A connection's cached series of a per-request metric, for its own
/// protocol; any other label set (gRPC on an h2c connection) is looked up.
fn with_series<M: Clone>(
    cache: &OnceLock<M>,
    family: &Family<TrafficLabels, M>,
    labels: &TrafficLabels,
    cached: bool,
    record: impl FnOnce(&M),
) {
    if cached {
        record(cache.get_or_init(|| family.get_or_create(labels).clone()));
    } else {
        record(&family.get_or_create(labels));
    }
}

/// An upstream response body as the proxy sends it on.
fn boxed<B>(body: B) -> ProxyBody
where
    B: http_body::Body<Data = bytes::Bytes, Error = hyper::Error> + Send + 'static,
{
    body.map_err(BoxError::from).boxed_unsync()
}

/// After a 101 (or a 2xx to CONNECT), both sides speak the upgraded
/// protocol (WebSocket, a tunnelled TLS connection...):
/// copy bytes both ways until either closes.
async fn tunnel(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    match tokio::try_join!(client, upstream) {
        Ok((client, upstream)) => {
            let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
            if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                tracing::debug!(%error, "upgraded connection ended with an error");
            }
        }
        Err(error) => tracing::debug!(%error, "failed to complete the upgrade"),
    }
}

/// The request line and `Host` as written to an HTTP/1.1 upstream: origin
/// form (CONNECT keeps the authority the client asked for: the upstream is
/// then a forward proxy and goes there), and a `Host` naming the destination
/// when the client sent none (HTTP/1.0). A client's absolute-form target is
/// reduced to its path, as the upstream is not a proxy, and its authority
/// becomes the `Host` (RFC 9112 section 3.2.2: a received `Host` is
/// ignored), the host `match.host` was matched against.
fn h1_target(parts: &mut http::request::Parts, dest: &http::uri::Authority) {
    let absolute = parts.uri.scheme().is_some() || parts.uri.authority().is_some();
    if absolute && parts.method != http::Method::CONNECT {
        if let Some(authority) = parts.uri.authority() {
            let host = authority
                .as_str()
                .rsplit_once('@')
                .map_or(authority.as_str(), |(_userinfo, host)| host);
            if let Ok(value) = http::HeaderValue::from_str(host) {
                parts.headers.insert(http::header::HOST, value);
            }
        }
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        parts.uri = Uri::from(path);
    }
    if !parts.headers.contains_key(http::header::HOST) {
        let host = match dest.port_u16() {
            Some(80) => dest.host(),
            _ => dest.as_str(),
        };
        if let Ok(value) = http::HeaderValue::from_str(host) {
            parts.headers.insert(http::header::HOST, value);
        }
    }
}

/// HTTP/2 keeps the client's `:authority`; fill it in (from Host, or the
/// destination) when the client left it out.
fn h2_uri(uri: &Uri, headers: &http::HeaderMap, dest: std::net::SocketAddr) -> Uri {
    if uri.scheme().is_some() && uri.authority().is_some() {
        return uri.clone();
    }
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| dest.to_string());
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    format!("http://{authority}{path}")
        .parse()
        .unwrap_or_else(|_| uri.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h1_parts(method: &str, target: &str, host: Option<&str>) -> http::request::Parts {
        let mut builder = Request::builder().method(method).uri(target);
        if let Some(host) = host {
            builder = builder.header(http::header::HOST, host);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn h1_target_is_origin_form_with_the_clients_host() {
        let dest: http::uri::Authority = "10.0.0.7:8080".parse().unwrap();
        let mut parts = h1_parts("GET", "/a/b?c=1", Some("app.example"));
        h1_target(&mut parts, &dest);
        assert_eq!(parts.uri, "/a/b?c=1");
        assert_eq!(parts.headers[http::header::HOST], "app.example");

        let mut parts = h1_parts("GET", "http://other.example/x", Some("other.example"));
        h1_target(&mut parts, &dest);
        assert_eq!(parts.uri.to_string(), "/x");
        assert_eq!(parts.headers[http::header::HOST], "other.example");
    }

    #[test]
    fn h1_target_takes_host_from_an_absolute_form_target() {
        let dest: http::uri::Authority = "10.0.0.7:8080".parse().unwrap();
        for (target, host) in [
            ("http://b.example/x", Some("a.example")),
            ("http://b.example/x", None),
            ("http://user:pw@b.example/x", Some("b.example")),
        ] {
            let mut parts = h1_parts("GET", target, host);
            h1_target(&mut parts, &dest);
            assert_eq!(parts.uri.to_string(), "/x");
            assert_eq!(parts.headers[http::header::HOST], "b.example", "{target}");
        }
        let mut parts = h1_parts("GET", "http://b.example:8443/x", Some("a.example"));
        h1_target(&mut parts, &dest);
        assert_eq!(parts.headers[http::header::HOST], "b.example:8443");
    }

    #[test]
    fn h1_target_names_the_destination_when_host_is_missing() {
        let mut parts = h1_parts("GET", "/", None);
        h1_target(&mut parts, &"10.0.0.7:8080".parse().unwrap());
        assert_eq!(parts.headers[http::header::HOST], "10.0.0.7:8080");

        let mut parts = h1_parts("GET", "/", None);
        h1_target(&mut parts, &"10.0.0.7:80".parse().unwrap());
        assert_eq!(parts.headers[http::header::HOST], "10.0.0.7");

        let mut parts = h1_parts("CONNECT", "example.com:443", Some("example.com:443"));
        h1_target(&mut parts, &"10.0.0.7:3128".parse().unwrap());
        assert_eq!(parts.uri.to_string(), "example.com:443");
        assert_eq!(parts.headers[http::header::HOST], "example.com:443");
    }
}
