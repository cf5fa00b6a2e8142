//! How client connections map to upstream connections: idle upstream
//! connections are reused by later client connections, and an upstream that
//! closes connections between requests is invisible to clients.
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

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
async fn upstream_connections_are_reused_across_client_connections() {
    let upstream = counting_upstream(false).await;
    // One worker: one pool, so reuse is exact.
    let proxy = start_proxy_with(upstream.addr, EMPTY, &[("FAULTLINE_WORKERS", "1")]).await;
    for _ in 0..5 {
        let mut client = h1_client(proxy.addr).await;
        ok(&mut client).await;
        ok(&mut client).await;
    }
    assert_eq!(upstream.accepted.load(Ordering::SeqCst), 1);

    // Two exchanges at once need two connections; both are kept.
    let (mut a, mut b) = (h1_client(proxy.addr).await, h1_client(proxy.addr).await);
    tokio::join!(ok(&mut a), ok(&mut b));
    assert!(upstream.accepted.load(Ordering::SeqCst) <= 2);
    assert_eq!(
        upstream.open.load(Ordering::SeqCst),
        upstream.accepted.load(Ordering::SeqCst)
    );
}

#[tokio::test]
async fn an_upstream_closing_connections_between_requests_is_invisible_to_clients() {
    let upstream = counting_upstream(true).await;
    let proxy = start_proxy(upstream.addr, EMPTY).await;
    let mut client = h1_client(proxy.addr).await;
    for _ in 0..50 {
        ok(&mut client).await;
    }
    // Every request needed a fresh upstream connection (none was sent on a
    // closed one), and the client's own connection survived them all.
    assert_eq!(upstream.accepted.load(Ordering::SeqCst), 50);
    assert!(!client.is_closed());
}
