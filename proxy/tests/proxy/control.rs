//! The standalone proxy's control API over real sockets: a real client,
//! the proxy in-process with `--control`, a real upstream.

use std::time::Duration;

use faultline_proxy::PolicyStore;
use faultline_proxy::{Config, Proxy};
use tokio_util::sync::CancellationToken;

use crate::support::*;

const DOWN: &str = "rules:\n- name: api-down\n  match: {path: /api/*}\n  abort: {status: 503}\n";
const BAD: &str = "rules:\n- name: x\n  abort: {status: 700}\n";

struct Controlled {
    addr: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    shutdown: CancellationToken,
}

async fn start(upstream: std::net::SocketAddr, token: Option<&str>) -> Controlled {
    let mut env = vec![
        ("FAULTLINE_LISTEN".to_owned(), "127.0.0.1:0".to_owned()),
        ("FAULTLINE_UPSTREAM".to_owned(), upstream.to_string()),
        ("FAULTLINE_ADMIN_ADDR".to_owned(), "127.0.0.1:0".to_owned()),
        ("FAULTLINE_CONTROL".to_owned(), "true".to_owned()),
    ];
    if let Some(token) = token {
        env.push(("FAULTLINE_CONTROL_TOKEN".to_owned(), token.to_owned()));
    }
    let proxy = Proxy::bind(Config::from_env(env).unwrap()).await.unwrap();
    let addr = proxy.listen_addrs()[0].1;
    let admin = proxy.admin_addr().unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(proxy.run(PolicyStore::new(), shutdown.clone()));
    eventually("the proxy to be ready", Duration::from_secs(5), || async {
        reqwest::get(format!("http://{admin}/readyz"))
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    Controlled {
        addr,
        admin,
        shutdown,
    }
}

async fn send(
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    let mut request = reqwest::Client::new()
        .request(method, url)
        .body(body.to_owned());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

async fn status_of(url: String) -> u16 {
    reqwest::get(url).await.unwrap().status().as_u16()
}

#[tokio::test]
async fn put_and_delete_change_the_policy_and_bad_documents_change_nothing() {
    let upstream = http_upstream().await;
    let proxy = start(upstream.addr, None).await;
    let policy_url = format!("http://{}/policy", proxy.admin);
    let (status, body) = send(reqwest::Method::PUT, &policy_url, None, DOWN).await;
    assert_eq!(status, 200, "{body}");
    let active: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(active["source"]["type"], "control");
    assert!(active["version"].as_str().unwrap().starts_with("control-"));
    assert_eq!(status_of(format!("http://{}/api/x", proxy.addr)).await, 503);
    assert_eq!(status_of(format!("http://{}/hello", proxy.addr)).await, 200);

    // Refused with the rule and field; the policy in force is unchanged.
    let (status, body) = send(reqwest::Method::PUT, &policy_url, None, BAD).await;
    assert_eq!(status, 400);
    let error: serde_json::Value = serde_json::from_str(&body).unwrap();
    let message = error["error"].as_str().unwrap();
    assert!(
        message.contains("rules[0]") && message.contains("abort.status"),
        "{message}"
    );
    assert_eq!(status_of(format!("http://{}/api/x", proxy.addr)).await, 503);
    let json = "{\"rules\": [{\"name\": \"teapot\", \"abort\": {\"status\": 418}}]}";
    assert_eq!(
        send(reqwest::Method::PUT, &policy_url, None, json).await.0,
        200
    );
    assert_eq!(status_of(format!("http://{}/hello", proxy.addr)).await, 418);
    let metrics = reqwest::get(format!("http://{}/metrics", proxy.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("source=\"control\""), "{metrics}");

    let (status, _) = send(reqwest::Method::DELETE, &policy_url, None, "").await;
    assert_eq!(status, 200);
    assert_eq!(status_of(format!("http://{}/hello", proxy.addr)).await, 200);
    let oversized = format!("rules: []\n#{}\n", "x".repeat(2 << 20));
    assert_eq!(
        send(reqwest::Method::PUT, &policy_url, None, &oversized)
            .await
            .0,
        413
    );
    proxy.shutdown.cancel();
}

#[tokio::test]
async fn a_token_guards_writes_but_not_reads() {
    let upstream = http_upstream().await;
    let proxy = start(upstream.addr, Some("s3cret")).await;
    let policy_url = format!("http://{}/policy", proxy.admin);
    for token in [None, Some("wrong"), Some("s3cre")] {
        let (status, body) = send(reqwest::Method::PUT, &policy_url, token, DOWN).await;
        assert_eq!(status, 401, "{token:?}: {body}");
    }
    assert_eq!(
        send(reqwest::Method::DELETE, &policy_url, None, "").await.0,
        401
    );
    assert_eq!(status_of(policy_url.clone()).await, 200);
    assert_eq!(
        send(reqwest::Method::PUT, &policy_url, Some("s3cret"), DOWN)
            .await
            .0,
        200
    );
    assert_eq!(status_of(format!("http://{}/api/x", proxy.addr)).await, 503);
    proxy.shutdown.cancel();
}
