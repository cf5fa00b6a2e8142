//! HTTP/1.1 edge cases: upstream down, bad input, upgrades, vanishing
//! clients, and curl as the client. Many idle connections: `idle.rs`.
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::support::*;

const EMPTY: &str = "rules: []\n";

#[tokio::test]
async fn unreachable_upstream_is_a_502_with_a_clear_body() {
    // A port that was just free: nothing listens there.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = start_proxy(dead, EMPTY).await;
    let response = reqwest::get(proxy.url("/hello")).await.unwrap();
    assert_eq!(response.status(), 502);
    let body = response.text().await.unwrap();
    assert!(
        body.contains("failed to connect to upstream") || body.contains("faultline:"),
        "{body}"
    );
    assert!(body.contains("refused"), "{body}");
    assert_eq!(
        proxy
            .metric("faultline_upstream_connect_errors_total{direction=\"inbound\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn malformed_and_oversized_requests_get_400_and_431() {
    let upstream = http_upstream().await;
    let proxy = start_proxy(upstream.addr, EMPTY).await;
    let (bytes, _) = raw_exchange(
        proxy.addr,
        b"GET /hello HTTP/1.1\r\nhost: x\r\nbroken header line\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(
        bytes.starts_with(b"HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    let mut huge = b"GET /hello HTTP/1.1\r\nhost: x\r\nx-big: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 100 * 1024));
    huge.extend_from_slice(b"\r\n\r\n");
    let (bytes, _) = raw_exchange(proxy.addr, &huge, Duration::from_secs(5)).await;
    assert!(
        bytes.starts_with(b"HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    assert_eq!(upstream.hits(), 0);
    // Counted when the connection task finishes, just after the close.
    eventually(
        "both bad requests to be counted",
        Duration::from_secs(5),
        || async {
            proxy
                .metric("faultline_bad_requests_total{direction=\"inbound\"}")
                .await
                == 2.0
        },
    )
    .await;
    // And the proxy keeps serving.
    assert_eq!(
        reqwest::get(proxy.url("/hello")).await.unwrap().status(),
        200
    );
}

#[tokio::test]
async fn websocket_upgrade_passes_through() {
    let upstream = http_upstream().await;
    let proxy = start_proxy(upstream.addr, EMPTY).await;
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(
            b"GET /ws HTTP/1.1\r\nhost: x\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\r\n",
        )
        .await
        .unwrap();
    let head = read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_tunnel_echoes(&mut stream, b"ping over the tunnel").await;
}

#[tokio::test]
async fn a_client_vanishing_mid_body_harms_no_one_else() {
    let upstream = http_upstream().await;
    let proxy = start_proxy(upstream.addr, EMPTY).await;
    for _ in 0..5 {
        let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        stream
            .write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 1000000\r\n\r\n")
            .await
            .unwrap();
        stream.write_all(&[b'y'; 4096]).await.unwrap();
        drop(stream);
    }
    eventually(
        "the abandoned connections to close",
        Duration::from_secs(5),
        || async {
            proxy
                .metric("faultline_connections_active{direction=\"inbound\"}")
                .await
                == 0.0
        },
    )
    .await;
    assert_eq!(
        reqwest::get(proxy.url("/hello"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "hello"
    );
}

#[tokio::test]
async fn curl_sees_delay_abort_and_clean_traffic() {
    let upstream = http_upstream().await;
    let proxy = start_proxy(
        upstream.addr,
        "rules:\n- match: {path: /slow}\n  delay: {fixed: 300ms}\n- match: {path: /down}\n  abort: {status: 503, body: down}\n",
    )
    .await;
    let curl = |path: String| async move {
        let out = tokio::process::Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{time_total}",
                &path,
            ])
            .output()
            .await
            .expect("curl must be installed (apt-get install curl)");
        let text = String::from_utf8(out.stdout).unwrap();
        let (code, time) = text.split_once(' ').unwrap();
        (code.to_owned(), time.parse::<f64>().unwrap())
    };
    let (code, _) = curl(proxy.url("/hello")).await;
    assert_eq!(code, "200");
    let (code, time) = curl(proxy.url("/slow")).await;
    assert_eq!(code, "404");
    assert!(time >= 0.3, "{time}");
    let (code, _) = curl(proxy.url("/down")).await;
    assert_eq!(code, "503");
}
