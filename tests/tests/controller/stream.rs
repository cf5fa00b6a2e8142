//! The stream server over real TLS on 127.0.0.1:0 with the real proxy
//! client. Tokens are checked by a fixed table here because no API server
//! runs in this test; `api_server.rs` covers TokenReview.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use faultline_proxy::PolicyStore;
use faultline_proxy::source::stream::{ClientConfig, run as run_client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use faultline_test_support::eventually;
use faultline_webhook::controller::auth::{AuthError, Authenticator, Identity};
use faultline_webhook::controller::hub::{PodPolicy, PolicyHub};
use faultline_webhook::controller::stream::{StreamLimits, StreamServer};

struct Table(HashMap<String, Identity>);

impl Authenticator for Table {
    fn authenticate<'a>(
        &'a self,
        token: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Identity, AuthError>> + Send + 'a>>
    {
        Box::pin(async move {
            self.0
                .get(token)
                .cloned()
                .ok_or_else(|| AuthError::Rejected("unknown token".into()))
        })
    }
}

fn identity(pod: &str) -> Identity {
    Identity {
        namespace: "shop".into(),
        pod: pod.into(),
        pod_uid: format!("uid-{pod}"),
        service_account: "default".into(),
    }
}

struct Fixture {
    url: String,
    ca_pem: String,
    hub: PolicyHub,
    server: StreamServer,
    shutdown: CancellationToken,
}

async fn serve(heartbeat: Duration) -> Fixture {
    serve_with(heartbeat, StreamLimits::default()).await
}

async fn serve_with(heartbeat: Duration, limits: StreamLimits) -> Fixture {
    let (ca_pem, mut tls) = faultline_test_support::tls::localhost_server_config();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));

    let hub = PolicyHub::default();
    let shutdown = CancellationToken::new();
    let table = Table(
        ["a", "b"]
            .iter()
            .map(|p| (format!("token-{p}"), identity(p)))
            .collect(),
    );
    let mut server = StreamServer::new(hub.clone(), Arc::new(table), shutdown.clone());
    server.heartbeat = heartbeat;
    server.limits = limits;
    let router = server.clone().router();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, router) = (acceptor.clone(), router.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = TowerToHyperService::new(router);
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    Fixture {
        url: format!("https://localhost:{port}"),
        ca_pem,
        hub,
        server,
        shutdown,
    }
}

fn policy(pod: &str, version: &str, json: Option<&str>) -> PodPolicy {
    PodPolicy {
        uid: format!("uid-{pod}"),
        version: version.into(),
        policy: json.map(|j| Arc::new(serde_json::from_str(j).unwrap())),
        peers: Default::default(),
        source: None,
        finish: false,
    }
}

const SLOW: &str =
    r#"{"rules":[{"name":"slow","match":{"direction":"inbound"},"delay":{"fixed":"200ms"}}]}"#;
const DOWN: &str =
    r#"{"rules":[{"name":"down","match":{"direction":"inbound"},"abort":{"status":503}}]}"#;

fn publish(hub: &PolicyHub, items: &[PodPolicy]) {
    let map = items
        .iter()
        .map(|p| {
            (
                (
                    "shop".to_string(),
                    p.uid.trim_start_matches("uid-").to_string(),
                ),
                p.clone(),
            )
        })
        .collect();
    hub.publish_all(&map);
}

struct Proxy {
    store: PolicyStore,
    _token: tempfile::NamedTempFile,
    stop: CancellationToken,
}

fn proxy(f: &Fixture, token: &str, pod: &str) -> Proxy {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), token).unwrap();
    let config = ClientConfig {
        url: f.url.clone(),
        ca_pem: f.ca_pem.clone().into_bytes(),
        token_file: file.path().to_path_buf(),
        pod: Some(("shop".into(), pod.into())),
        heartbeat_timeout: Duration::from_secs(5),
        backoff_base: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
    };
    let store = PolicyStore::new();
    let stop = CancellationToken::new();
    tokio::spawn(run_client(config, store.clone(), stop.clone()));
    Proxy {
        store,
        _token: file,
        stop,
    }
}

#[tokio::test]
async fn each_proxy_gets_its_own_pods_policy_and_every_new_version() {
    let f = serve(Duration::from_secs(10)).await;
    publish(
        &f.hub,
        &[policy("a", "v1", Some(SLOW)), policy("b", "none", None)],
    );
    let a = proxy(&f, "token-a", "a");
    let b = proxy(&f, "token-b", "b");
    eventually("a on v1", Duration::from_secs(10), async || {
        a.store.current().version == "v1" && a.store.connected()
    })
    .await;
    eventually("b on none", Duration::from_secs(10), async || {
        b.store.current().version == "none" && b.store.connected()
    })
    .await;
    assert!(b.store.current().policy.is_none());
    eventually("two streams", Duration::from_secs(10), async || {
        f.hub.metrics.connected.get() == 2
    })
    .await;

    publish(
        &f.hub,
        &[policy("a", "v2", Some(DOWN)), policy("b", "none", None)],
    );
    eventually("a on v2", Duration::from_secs(10), async || {
        a.store.current().version == "v2"
    })
    .await;
    let rules = &a.store.current().policy.clone().unwrap().rules;
    assert_eq!(rules[0].name.as_deref(), Some("down"));
    assert_eq!(b.store.current().version, "none");
    let status = f.server.connections.snapshot();
    assert!(
        status
            .iter()
            .any(|s| s.pod == "a" && s.version.as_deref() == Some("v2")),
        "{status:?}"
    );

    a.stop.cancel();
    b.stop.cancel();
    eventually("streams closed", Duration::from_secs(10), async || {
        f.hub.metrics.connected.get() == 0
    })
    .await;
}

#[tokio::test]
async fn a_finished_pods_proxy_is_told_to_finish_and_the_others_are_not() {
    let f = serve(Duration::from_secs(10)).await;
    publish(
        &f.hub,
        &[policy("a", "v1", Some(SLOW)), policy("b", "v1", Some(SLOW))],
    );
    let a = proxy(&f, "token-a", "a");
    let b = proxy(&f, "token-b", "b");
    eventually("both on v1", Duration::from_secs(10), async || {
        a.store.current().version == "v1" && b.store.current().version == "v1"
    })
    .await;
    let finished = PodPolicy {
        finish: true,
        ..policy("a", "v1", Some(SLOW))
    };
    publish(&f.hub, &[finished, policy("b", "v1", Some(SLOW))]);
    eventually("a told to finish", Duration::from_secs(10), async || {
        a.stop.is_cancelled()
    })
    .await;
    // The policy it ran is kept to the end; the other proxy is untouched.
    assert_eq!(a.store.current().version, "v1");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!b.stop.is_cancelled());
    b.stop.cancel();
}

#[tokio::test]
async fn a_stream_waits_for_a_pod_the_controller_has_not_resolved_yet() {
    let f = serve(Duration::from_secs(10)).await;
    let a = proxy(&f, "token-a", "a");
    eventually("stream open", Duration::from_secs(10), async || {
        f.hub.metrics.connected.get() == 1
    })
    .await;
    assert_eq!(a.store.current().version, "");
    publish(&f.hub, &[policy("a", "v1", Some(SLOW))]);
    eventually("a on v1", Duration::from_secs(10), async || {
        a.store.current().version == "v1"
    })
    .await;
}

async fn raw_get(f: &Fixture, token: Option<&str>, query: &str) -> reqwest::Response {
    let ca = reqwest::Certificate::from_pem(f.ca_pem.as_bytes()).unwrap();
    let http = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let mut req = http.get(format!("{}/v1/policy/stream{query}", f.url));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn tokens_are_required_and_only_serve_their_own_pod() {
    let f = serve(Duration::from_secs(10)).await;
    publish(
        &f.hub,
        &[policy("a", "v1", Some(SLOW)), policy("b", "vb", Some(DOWN))],
    );
    assert_eq!(raw_get(&f, None, "").await.status(), 401);
    assert_eq!(raw_get(&f, Some("forged"), "").await.status(), 401);
    let wrong = raw_get(&f, Some("token-a"), "?namespace=shop&pod=b").await;
    assert_eq!(wrong.status(), 403);
    assert!(
        wrong
            .text()
            .await
            .unwrap()
            .contains("token belongs to pod shop/a")
    );
    assert_eq!(
        raw_get(&f, Some("token-a"), "?namespace=other&pod=a")
            .await
            .status(),
        403
    );
    assert_eq!(f.hub.metrics.streams_refused.get(), 4);
    // Through the real client: a proxy that claims pod b with a's token never gets b's policy.
    let confused = proxy(&f, "token-a", "b");
    eventually("two more refusals", Duration::from_secs(10), async || {
        f.hub.metrics.streams_refused.get() >= 6
    })
    .await;
    assert_eq!(confused.store.current().version, "");
    assert!(!confused.store.connected());
}

#[tokio::test]
async fn the_stream_is_ndjson_with_heartbeats_and_ends_on_shutdown() {
    let f = serve(Duration::from_millis(50)).await;
    publish(&f.hub, &[policy("a", "v1", None)]);
    let mut resp = raw_get(&f, Some("token-a"), "").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
    let mut text = String::new();
    while !text.contains("\"type\":\"heartbeat\"") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), resp.chunk())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    let first = text.lines().next().unwrap();
    assert_eq!(
        first,
        r#"{"type":"policy","version":"v1","policy":null,"peers":{}}"#
    );
    f.shutdown.cancel();
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = resp.chunk().await {}
    })
    .await;
    assert!(end.is_ok(), "stream did not end on shutdown");
}

#[tokio::test]
async fn a_pod_recreated_under_the_same_name_is_not_served_to_the_old_token() {
    let f = serve(Duration::from_secs(10)).await;
    let mut newer = policy("a", "v9", Some(SLOW));
    newer.uid = "uid-a-recreated".into();
    publish(&f.hub, &[newer]);
    let a = proxy(&f, "token-a", "a");
    eventually("stream open", Duration::from_secs(10), async || {
        f.hub.metrics.connected.get() == 1
    })
    .await;
    publish(&f.hub, &[policy("a", "v1", Some(DOWN))]);
    eventually("a on v1", Duration::from_secs(10), async || {
        a.store.current().version == "v1"
    })
    .await;
}

#[tokio::test]
async fn a_pods_extra_stream_ends_its_oldest_and_a_full_replica_says_when_to_come_back() {
    let limits = StreamLimits {
        max_policy_streams: 3,
        max_policy_streams_per_pod: 2,
    };
    let f = serve_with(Duration::from_secs(10), limits).await;
    publish(&f.hub, &[policy("a", "v1", None), policy("b", "vb", None)]);
    let mut oldest = raw_get(&f, Some("token-a"), "").await;
    assert_eq!(oldest.status(), 200);
    let second = raw_get(&f, Some("token-a"), "").await;
    let third = raw_get(&f, Some("token-a"), "").await;
    assert_eq!(
        (second.status().as_u16(), third.status().as_u16()),
        (200, 200)
    );
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = oldest.chunk().await {}
    })
    .await;
    assert!(ended.is_ok(), "the oldest stream of pod a was not ended");
    assert_eq!(f.hub.metrics.streams_evicted.get(), 1);
    assert_eq!(f.server.connections.total(), 2);

    let b = raw_get(&f, Some("token-b"), "").await;
    assert_eq!(b.status(), 200);
    let full = raw_get(&f, Some("token-b"), "").await;
    assert_eq!(full.status(), 503);
    assert_eq!(full.headers()["retry-after"], "20");
    assert_eq!(f.hub.metrics.streams_limited.get(), 1);
    assert_eq!(f.server.connections.total(), 3, "{:?}", (second, third, b));
}
