//! How client connections map to upstream connections: idle upstream
//! connections are reused by later client connections, an upstream that
//! closes connections between requests is invisible to clients, and one
//! that resets a connection fails only the request it hit.
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

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
                while next_head(&mut stream, &mut buf).await.is_some() {
                    let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if stream.write_all(reply).await.is_err() || one_shot {
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

/// The next head of a bodiless request on `stream`, or `None` once the
/// client is gone; `buf` holds bytes read past it.
async fn next_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end + 4);
            return Some(head);
        }
        let mut chunk = [0u8; 1024];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
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

/// An HTTP/1.1 upstream that resets the connection (RST) on `/reset-now`
/// before answering, and on `/reset-mid` after the response head and 2 of
/// 100 announced body bytes; other paths get `ok`.
async fn resetting_upstream() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while let Some(head) = next_head(&mut stream, &mut buf).await {
                    let reset = |stream: tokio::net::TcpStream| {
                        let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                        drop(stream);
                    };
                    if head.starts_with("GET /reset-now ") {
                        return reset(stream);
                    }
                    if head.starts_with("GET /reset-mid ") {
                        let partial = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nab";
                        let _ = stream.write_all(partial).await;
                        let _ = stream.flush().await;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        return reset(stream);
                    }
                    let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if stream.write_all(ok).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_upstream_reset_fails_only_the_request_it_hit() {
    let upstream = resetting_upstream().await;
    let proxy = start_proxy(upstream, EMPTY).await;
    let mut bystander = h1_client(proxy.addr).await;
    ok(&mut bystander).await;

    // Reset before any response byte: a 502 that says why, and the
    // client's own connection stays usable.
    let mut client = h1_client(proxy.addr).await;
    let response = client.send_request(get("/reset-now")).await.unwrap();
    assert_eq!(response.status(), 502);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains("upstream"), "{body}");
    ok(&mut client).await;

    // Reset mid-body: the status was already sent, so the client's
    // connection is cut (it cannot be told otherwise) and its body errors.
    let mut cut = h1_client(proxy.addr).await;
    let response = cut.send_request(get("/reset-mid")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.into_body().collect().await.is_err());

    // Everyone else, and new clients, are served as before.
    ok(&mut bystander).await;
    ok(&mut h1_client(proxy.addr).await).await;
    assert!(
        proxy
            .metric("faultline_requests_total{direction=\"inbound\",protocol=\"http1\"}")
            .await
            >= 6.0
    );
}
