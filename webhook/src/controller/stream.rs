//! `GET /v1/policy/stream`: the endpoint proxies hold open. Authenticates the
//! bearer token (TokenReview, audience `faultline`), serves the pod the token
//! is bound to only its own policy, pushes every new version and a heartbeat.
//! The optional `?namespace=&pod=` query is checked against the token so a
//! misconfigured proxy gets a clear 403 instead of someone else's policy.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use faultline_policy::wire::{CONTENT_TYPE, STREAM_PATH};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::auth::guard::LimitLog;
use super::auth::{AuthError, Authenticator, Identity};
use super::hub::{ConnectionGuard, Connections, PolicyHub, Served};

/// Interval between heartbeats (the proxy drops a stream after 3 missed).
pub const HEARTBEAT: Duration = Duration::from_secs(10);

/// `StreamMessage::Heartbeat.to_line()` and `StreamMessage::Finish.to_line()`,
/// static so ten thousand streams allocate nothing to send them.
const HEARTBEAT_LINE: &[u8] = b"{\"type\":\"heartbeat\"}\n";
const FINISH_LINE: &[u8] = b"{\"type\":\"finish\"}\n";

/// How many streams a replica holds.
#[derive(clap::Args, Clone, Debug, PartialEq, Eq)]
pub struct StreamLimits {
    /// Policy streams this replica holds at once; beyond, 503 with Retry-After.
    #[arg(long, env = "FAULTLINE_MAX_POLICY_STREAMS", default_value_t = 8_000)]
    pub max_policy_streams: usize,
    /// Policy streams one pod holds at once; a newer one ends its oldest.
    #[arg(
        long,
        env = "FAULTLINE_MAX_POLICY_STREAMS_PER_POD",
        default_value_t = 2
    )]
    pub max_policy_streams_per_pod: usize,
}

impl Default for StreamLimits {
    fn default() -> Self {
        Self {
            max_policy_streams: 8_000,
            max_policy_streams_per_pod: 2,
        }
    }
}

/// What a proxy refused for a full replica is told: long enough for the
/// Service to route it elsewhere or for streams to end here.
const FULL_RETRY_AFTER: Duration = Duration::from_secs(20);

/// Everything the stream handler needs.
#[derive(Clone)]
pub struct StreamServer {
    pub hub: PolicyHub,
    pub connections: Connections,
    pub auth: Arc<dyn Authenticator>,
    pub heartbeat: Duration,
    pub limits: StreamLimits,
    refusal_log: Arc<std::sync::Mutex<LimitLog>>,
    /// Cancelled on SIGTERM: streams end so proxies move to another replica.
    pub shutdown: CancellationToken,
}

impl StreamServer {
    pub fn new(hub: PolicyHub, auth: Arc<dyn Authenticator>, shutdown: CancellationToken) -> Self {
        Self {
            hub,
            connections: Connections::default(),
            auth,
            heartbeat: HEARTBEAT,
            limits: StreamLimits::default(),
            refusal_log: Arc::default(),
            shutdown,
        }
    }

    /// `Some(refusals since the last line)` when a refusal of this kind
    /// should be logged.
    fn note_refusal(&self, kind: &str) -> Option<u64> {
        let kind: &'static str = match kind {
            "401" => "401",
            "403" => "403",
            "503" => "503",
            "full" => "full",
            _ => "other",
        };
        self.refusal_log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .note(kind, tokio::time::Instant::now())
    }

    /// The router to merge into the webhook's TLS server.
    pub fn router(self) -> Router {
        Router::new()
            .route(STREAM_PATH, get(stream))
            .with_state(self)
    }
}

#[derive(serde::Deserialize)]
struct StreamQuery {
    namespace: Option<String>,
    pod: Option<String>,
}

fn refuse(server: &StreamServer, status: StatusCode, message: String) -> Response {
    server.hub.metrics.streams_refused.inc();
    // One line per status per 10 s: a storm of bad tokens must not become a
    // storm of log lines.
    if let Some(refused) = server.note_refusal(status.as_str()) {
        tracing::info!(%status, %message, refused_since_last_line = refused, "refused a policy stream");
    }
    (status, message).into_response()
}

/// A refusal that passes: 429 (rate) or 503 (reviews in flight) with
/// `Retry-After`, which the proxy honours. Logged by the limiter, not here:
/// a storm would otherwise write a line per request.
fn come_back_later(server: &StreamServer, error: &AuthError, retry_after: Duration) -> Response {
    server.hub.metrics.streams_refused.inc();
    let status = match error {
        AuthError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    let secs = super::auth::limit::retry_after_secs(retry_after);
    (
        status,
        [(header::RETRY_AFTER, secs.to_string())],
        format!("{error}; retry after {secs}s"),
    )
        .into_response()
}

async fn stream(
    State(server): State<StreamServer>,
    Query(query): Query<StreamQuery>,
    headers: HeaderMap,
) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        return refuse(
            &server,
            StatusCode::UNAUTHORIZED,
            "missing bearer token".into(),
        );
    };
    // Before the review: a full replica should not spend one.
    if let Some(response) = full(&server) {
        return response;
    }
    let identity = match server.auth.authenticate(token).await {
        Ok(id) => id,
        Err(error) if error.retry_after().is_some() => {
            let wait = error.retry_after().unwrap_or_default();
            return come_back_later(&server, &error, wait);
        }
        Err(error @ AuthError::Review(_)) => {
            tracing::warn!(%error, cause = ?std::error::Error::source(&error).map(ToString::to_string), "token review failed");
            return refuse(&server, StatusCode::SERVICE_UNAVAILABLE, error.to_string());
        }
        Err(error) => return refuse(&server, StatusCode::UNAUTHORIZED, error.to_string()),
    };
    if let Some(message) = mismatch(&identity, &query) {
        return refuse(&server, StatusCode::FORBIDDEN, message);
    }
    let key = (identity.namespace.clone(), identity.pod.clone());
    tracing::info!(namespace = %key.0, pod = %key.1, "proxy connected to the policy stream");
    let rx = server.hub.subscribe(&key);
    let guard = server.connections.open(
        key,
        server.hub.metrics.clone(),
        server.limits.max_policy_streams_per_pod,
    );
    let body = body_stream(
        rx,
        identity.pod_uid,
        guard,
        server.heartbeat,
        server.shutdown.clone(),
    );
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, CONTENT_TYPE)
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// 503 with Retry-After when this replica holds `max_policy_streams`.
fn full(server: &StreamServer) -> Option<Response> {
    let open = server.connections.total();
    if open < server.limits.max_policy_streams {
        return None;
    }
    server.hub.metrics.streams_limited.inc();
    server.hub.metrics.streams_refused.inc();
    if let Some(refused) = server.note_refusal("full") {
        tracing::warn!(
            open,
            max = server.limits.max_policy_streams,
            refused_since_last_warning = refused,
            "policy stream limit reached: refusing new streams with Retry-After"
        );
    }
    let secs = FULL_RETRY_AFTER.as_secs();
    Some(
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, secs.to_string())],
            format!("this controller replica holds its maximum of {open} policy streams; retry after {secs}s"),
        )
            .into_response(),
    )
}

/// A request may name its pod; it must be the token's.
fn mismatch(identity: &Identity, query: &StreamQuery) -> Option<String> {
    let ns_ok = query
        .namespace
        .as_deref()
        .is_none_or(|ns| ns == identity.namespace);
    let pod_ok = query.pod.as_deref().is_none_or(|p| p == identity.pod);
    (!ns_ok || !pod_ok).then(|| {
        format!(
            "token belongs to pod {}/{}, not {}/{}",
            identity.namespace,
            identity.pod,
            query.namespace.as_deref().unwrap_or(&identity.namespace),
            query.pod.as_deref().unwrap_or(&identity.pod)
        )
    })
}

struct Cursor {
    rx: watch::Receiver<Option<Arc<Served>>>,
    uid: String,
    guard: ConnectionGuard,
    heartbeat: tokio::time::Interval,
    shutdown: CancellationToken,
    /// A newer stream of the same pod took this one's place.
    evicted: CancellationToken,
    check: bool,
    /// What was last sent (version and peers), so a change that only adds
    /// `finish` does not resend the policy.
    sent: Option<Arc<Served>>,
    finish_sent: bool,
}

/// What a changed slot owes the proxy: the policy if its version or peers
/// are new (then check again, for `finish`), else `finish` once.
fn next_line(c: &mut Cursor, served: Arc<Served>) -> Option<Bytes> {
    let policy = &served.policy;
    if !c.sent.as_ref().is_some_and(|s| s.policy.same_line(policy)) {
        c.guard.sent(&policy.version);
        c.check = policy.finish;
        let line = served.line.clone();
        c.sent = Some(served);
        return Some(line);
    }
    if policy.finish && !c.finish_sent {
        c.finish_sent = true;
        return Some(Bytes::from_static(FINISH_LINE));
    }
    None
}

fn body_stream(
    rx: watch::Receiver<Option<Arc<Served>>>,
    uid: String,
    guard: ConnectionGuard,
    heartbeat: Duration,
    shutdown: CancellationToken,
) -> impl futures::Stream<Item = Result<Bytes, Infallible>> + Send {
    let mut interval = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let cursor = Cursor {
        rx,
        uid,
        evicted: guard.evicted(),
        guard,
        heartbeat: interval,
        shutdown,
        check: true,
        sent: None,
        finish_sent: false,
    };
    futures::stream::unfold(cursor, |mut c| async move {
        loop {
            if c.check {
                c.check = false;
                let current = c.rx.borrow_and_update().clone();
                // A policy for another uid belongs to a newer pod of the same
                // name; this token's pod is gone, so wait (its token dies soon).
                if let Some(served) = current.filter(|s| s.policy.uid == c.uid)
                    && let Some(line) = next_line(&mut c, served)
                {
                    return Some((Ok(line), c));
                }
            }
            tokio::select! {
                () = c.shutdown.cancelled() => return None,
                () = c.evicted.cancelled() => return None,
                changed = c.rx.changed() => match changed {
                    Ok(()) => c.check = true,
                    Err(_) => return None,
                },
                _ = c.heartbeat.tick() => {
                    return Some((Ok(Bytes::from_static(HEARTBEAT_LINE)), c));
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use faultline_policy::wire::StreamMessage;

    use super::{FINISH_LINE, HEARTBEAT_LINE};

    #[test]
    fn the_static_lines_are_what_the_wire_format_encodes() {
        assert_eq!(HEARTBEAT_LINE, StreamMessage::Heartbeat.to_line());
        assert_eq!(FINISH_LINE, StreamMessage::Finish.to_line());
    }
}
