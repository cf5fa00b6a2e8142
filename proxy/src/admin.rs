//! The admin server (port 15400, plain HTTP, read-only; iptables never
//! redirects it): `/healthz`, `/readyz`, `/metrics`, `/policy`, and
//! `/probe/tcp/<port>` for the app's `tcpSocket` probes that the webhook
//! rewrote (a connection to a captured port always reaches the proxy, so
//! the proxy checks the app on loopback instead). With `--control` (the
//! standalone proxy only), `PUT`/`DELETE /policy` change the policy
//! (`admin/control.rs`).

//!
//! Readiness: ready once the proxy's listeners are bound and it is not
//! draining. With a controller, also once the first policy arrived from it,
//! or after the grace period (`FAULTLINE_READY_GRACE_SECONDS`), so a
//! controller outage degrades to "no faults" instead of blocking the pod.
mod control;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::body::{ProxyBody, full};
use crate::metrics::Metrics;
use crate::source::store::{ActivePolicy, PolicySource, PolicyStore};

pub struct Readiness {
    bound: AtomicBool,
    draining: AtomicBool,
    /// Controller mode: wait for a first policy, at most this long.
    wait_for_policy: Option<(Instant, Duration)>,
}

impl Readiness {
    pub fn new(wait_for_policy: Option<Duration>) -> Self {
        Readiness {
            bound: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            wait_for_policy: wait_for_policy.map(|grace| (Instant::now(), grace)),
        }
    }

    pub fn set_bound(&self) {
        self.bound.store(true, Ordering::Release);
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// `Ok` when ready, else why not.
    pub fn check(&self, store: &PolicyStore) -> Result<(), &'static str> {
        if self.draining.load(Ordering::Acquire) {
            return Err("draining");
        }
        if !self.bound.load(Ordering::Acquire) {
            return Err("listeners not bound yet");
        }
        if let Some((since, grace)) = self.wait_for_policy {
            let from_controller = matches!(store.current().source, PolicySource::Controller { .. });
            if !from_controller && since.elapsed() < grace {
                return Err("waiting for the first policy from the controller");
            }
        }
        Ok(())
    }
}

pub struct AdminState {
    pub store: PolicyStore,
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
    /// The only ports `/probe/tcp/<port>` checks (`FAULTLINE_PROBE_PORTS`).
    pub probe_ports: Vec<u16>,
    /// `--control`: writes to `/policy` allowed, with this bearer token if any.
    pub control: Option<Option<String>>,
    /// Whether the proxy has a DNS listener (the pod's DNS is captured).
    pub dns_captured: bool,
}

/// The warning for a policy with DNS rules where DNS is not captured.
pub const DNS_NOT_CAPTURED: &str = "the policy has DNS rules, but this pod's DNS is not captured \
     (annotate the pod faultline.dev/capture-dns: \"true\"): they do nothing here";

/// `/policy`: the policy in force, and what it cannot do here.
#[derive(serde::Serialize)]
struct PolicyView<'a> {
    #[serde(flatten)]
    active: &'a ActivePolicy,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<&'static str>,
}

fn policy_view(state: &AdminState) -> serde_json::Result<Vec<u8>> {
    let active = state.store.current();
    let mut warnings = Vec::new();
    if !state.dns_captured && active.compiled.has_dns_rules() {
        warnings.push(DNS_NOT_CAPTURED);
    }
    serde_json::to_vec_pretty(&PolicyView {
        active: &active,
        warnings,
    })
}

/// How long a probe's connection to the app may take; the kubelet's own
/// `timeoutSeconds` bounds the whole request too.
const PROBE_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The port of a `/probe/tcp/<port>` request, if that is what it is.
fn probe_port(path: &str) -> Option<Result<u16, ()>> {
    let port = path.strip_prefix(faultline_policy::contract::TCP_PROBE_PATH)?;
    Some(port.parse::<u16>().map_err(|_| ()))
}

/// Answers a rewritten `tcpSocket` probe: 200 if the app accepts a
/// connection on loopback, 503 if not; 404 for a port the webhook did not
/// name (the admin server is no port scanner).
async fn tcp_probe(state: &AdminState, port: Result<u16, ()>) -> Response<ProxyBody> {
    let Some(port) = port.ok().filter(|p| state.probe_ports.contains(p)) else {
        return text(StatusCode::NOT_FOUND, "no tcpSocket probe for that port\n");
    };
    let connect = async {
        match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            Ok(stream) => Ok(stream),
            Err(v4) => tokio::net::TcpStream::connect(("::1", port))
                .await
                .map_err(|_| v4),
        }
    };
    match tokio::time::timeout(PROBE_CONNECT_TIMEOUT, connect).await {
        Ok(Ok(_)) => text(
            StatusCode::OK,
            &format!("port {port} accepts connections\n"),
        ),
        Ok(Err(error)) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("port {port}: {error}\n"),
        ),
        Err(_) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("port {port}: no answer within {PROBE_CONNECT_TIMEOUT:?}\n"),
        ),
    }
}

/// Serves until `shutdown`.
pub async fn serve(listener: TcpListener, state: Arc<AdminState>, shutdown: CancellationToken) {
    loop {
        let (stream, _) = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "admin server failed to accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let state = state.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move {
                    let method = req.method().clone();
                    let probe = probe_port(req.uri().path());
                    let write = req.uri().path() == "/policy"
                        && (method == Method::PUT || method == Method::DELETE);
                    Ok::<_, Infallible>(match (method, probe) {
                        (Method::GET, Some(port)) => tcp_probe(&state, port).await,
                        _ if write => match &state.control {
                            Some(token) => control::write(&state.store, token, req).await,
                            None => text(
                                StatusCode::METHOD_NOT_ALLOWED,
                                "the admin server is read-only: start the proxy with --control to change the policy\n",
                            ),
                        },
                        _ => route(&state, &req),
                    })
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                () = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
}

/// The pure part: a request to a response.
pub fn route(state: &AdminState, req: &Request<Incoming>) -> Response<ProxyBody> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "the admin server is read-only: use GET\n",
        );
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => match state.readiness.check(&state.store) {
            Ok(()) => text(StatusCode::OK, "ready\n"),
            Err(reason) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("not ready: {reason}\n"),
            ),
        },
        "/metrics" => {
            let active = state.store.current();
            state
                .metrics
                .set_policy(&active.version, source_name(&active.source));
            state
                .metrics
                .policy_connected
                .set(i64::from(active.connected));
            state.metrics.refresh_process();
            let mut response = Response::new(full(state.metrics.encode()));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            response
        }
        "/policy" => match policy_view(state) {
            Ok(json) => {
                let mut response = Response::new(full(json));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("application/json"),
                );
                response
            }
            Err(error) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("failed to serialize the policy: {error}\n"),
            ),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /healthz /readyz /metrics /policy\n",
        ),
    }
}

pub fn source_name(source: &PolicySource) -> &'static str {
    match source {
        PolicySource::None => "none",
        PolicySource::File { .. } => "file",
        PolicySource::Controller { .. } => "controller",
        PolicySource::Static => "static",
        PolicySource::Control => "control",
    }
}

fn text(status: StatusCode, body: &str) -> Response<ProxyBody> {
    let mut response = Response::new(full(body.to_owned()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use {crate::source::store::PolicyUpdate, faultline_policy::PeerIps};

    #[test]
    fn ready_once_bound_and_not_while_draining() {
        let store = PolicyStore::new();
        let readiness = Readiness::new(None);
        assert_eq!(readiness.check(&store), Err("listeners not bound yet"));
        readiness.set_bound();
        assert_eq!(readiness.check(&store), Ok(()));
        readiness.set_draining();
        assert_eq!(readiness.check(&store), Err("draining"));
    }

    #[test]
    fn controller_mode_waits_for_a_first_policy() {
        let store = PolicyStore::new();
        let readiness = Readiness::new(Some(Duration::from_secs(3600)));
        readiness.set_bound();
        assert!(readiness.check(&store).is_err());
        store
            .apply(PolicyUpdate {
                version: "v1".into(),
                source: PolicySource::Controller {
                    url: "https://faultline-webhook.faultline-system.svc:443".into(),
                },
                policy: None,
                peers: PeerIps::new(),
            })
            .unwrap();
        assert_eq!(readiness.check(&store), Ok(()));
    }

    #[test]
    fn controller_mode_turns_ready_after_the_grace_period() {
        let store = PolicyStore::new();
        let readiness = Readiness::new(Some(Duration::ZERO));
        readiness.set_bound();
        assert_eq!(readiness.check(&store), Ok(()));
    }
}
