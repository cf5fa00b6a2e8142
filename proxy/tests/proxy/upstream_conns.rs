//! How client connections map to upstream connections: one upstream
//! connection per client connection, closed with it, and an upstream that
//! closes connections between requests is invisible to clients.
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::*;

const EMPTY: &str = "rules: []\n";

/// An HTTP/1.1 upstream that counts connections accepted and still open,
/// answering `ok` on each; with `one_shot` it closes every connection
/// right after its first response, without announcing it (no
/// `Connection: close`), as an upstream with a short idle timeout does.
struct CountingUpstream {
    addr: std::net::SocketAddr,
    accepted: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
}

async fn counting_upstream(one_shot: bool) -> CountingUpstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let open = Arc::new(AtomicUsize::new(0));
    let (a, o) = (accepted.clone(), open.clone());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            a.fetch_add(1, Ordering::SeqCst);
            o.fetch_add(1, Ordering::SeqCst);
            let o = o.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while let Ok(n) = stream.read(&mut chunk).await {
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    // Bodiless requests: every head ends with an empty line.
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if stream.write_all(reply).await.is_err() {
                            break;
                        }
                    }
                    if one_shot {
                        break;
                    }
                }
                drop(stream);
                o.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    CountingUpstream {
        addr,
        accepted,
        open,
    }
}

async fn ok(sender: &mut hyper::client::conn::http1::SendRequest<Body>) {
    let response = sender.send_request(get("/")).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "ok");
}

#[tokio::test]
async fn each_client_connection_has_one_upstream_connection_closed_with_it() {
    let upstream = counting_upstream(false).await;
    let proxy = start_proxy(upstream.addr, EMPTY).await;

    let mut first = h1_client(proxy.addr).await;
    for _ in 0..5 {
        ok(&mut first).await;
    }
    assert_eq!(upstream.accepted.load(Ordering::SeqCst), 1);

    let mut second = h1_client(proxy.addr).await;
    for _ in 0..3 {
        ok(&mut second).await;
        ok(&mut first).await;
    }
    assert_eq!(upstream.accepted.load(Ordering::SeqCst), 2);
    assert_eq!(upstream.open.load(Ordering::SeqCst), 2);

    // The client leaving closes its upstream connection; the other stays.
    drop(first);
    eventually(
        "the first upstream connection to close",
        Duration::from_secs(5),
        || async { upstream.open.load(Ordering::SeqCst) == 1 },
    )
    .await;
    ok(&mut second).await;
    assert_eq!(upstream.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_upstream_closing_connections_between_requests_is_invisible_to_clients() {
    let upstream = counting_upstream(true).await;
    let proxy = start_proxy(upstream.addr, EMPTY).await;
    let mut client = h1_client(proxy.addr).await;
    for _ in 0..50 {
        ok(&mut client).await;
    }
    // Every request needed a fresh upstream connection, and the client's
    // own connection survived them all.
    assert_eq!(upstream.accepted.load(Ordering::SeqCst), 50);
    assert!(!client.is_closed());
}
