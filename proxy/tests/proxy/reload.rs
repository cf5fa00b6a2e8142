//! The watched policy file: hot reload without dropping connections, and a
//! bad file keeping the last good policy.
use std::time::Duration;

use crate::support::*;

#[tokio::test]
async fn hot_reload_applies_on_an_open_keep_alive_connection() {
    let upstream = http_upstream().await;
    let proxy = start_proxy(upstream.addr, "rules: []\n").await;
    let mut sender = h1_client(proxy.addr).await;
    assert_eq!(
        sender.send_request(get("/hello")).await.unwrap().status(),
        200
    );

    proxy
        .set_policy("rules:\n- name: now-down\n  abort: {status: 503}\n")
        .await;
    // Same connection, new policy.
    assert_eq!(
        sender.send_request(get("/hello")).await.unwrap().status(),
        503
    );
    proxy.set_policy("rules: []\n").await;
    assert_eq!(
        sender.send_request(get("/hello")).await.unwrap().status(),
        200
    );
    assert_eq!(
        proxy
            .metric("faultline_connections_total{direction=\"inbound\",protocol=\"http1\"}")
            .await,
        1.0,
        "the keep-alive connection survived both reloads"
    );
}

#[tokio::test]
async fn a_bad_file_keeps_the_last_good_policy() {
    let upstream = http_upstream().await;
    let proxy = start_proxy(upstream.addr, "rules:\n- abort: {status: 503}\n").await;
    let (_, before) = proxy.admin_get("/policy").await;
    std::fs::write(&proxy.faults, "rules:\n- abort: {status: 700}\n").unwrap();
    eventually(
        "the bad file to be rejected",
        Duration::from_secs(5),
        || async { proxy.metric("faultline_policy_reload_errors_total").await == 1.0 },
    )
    .await;
    let (_, after) = proxy.admin_get("/policy").await;
    assert_eq!(before, after);
    assert_eq!(
        reqwest::get(proxy.url("/hello")).await.unwrap().status(),
        503
    );
    // A good file after the bad one is applied.
    proxy.set_policy("rules: []\n").await;
    assert_eq!(
        reqwest::get(proxy.url("/hello")).await.unwrap().status(),
        200
    );
}
