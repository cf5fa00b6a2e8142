//! The pool against a real hyper upstream on 127.0.0.1:0 that counts the
//! connections it accepted and still has open.
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};

use http_body_util::{BodyExt, Full, StreamBody};
use hyper::service::service_fn;
use tokio::net::TcpListener;

use super::*;

struct Counts {
    accepted: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
}

/// `/` answers `ok`; `/stalled` sends 2 of the 4 bytes it announces, then
/// nothing more.
async fn upstream() -> (SocketAddr, Counts) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let open = Arc::new(AtomicUsize::new(0));
    let (a, o) = (accepted.clone(), open.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            a.fetch_add(1, Ordering::SeqCst);
            o.fetch_add(1, Ordering::SeqCst);
            let o = o.clone();
            tokio::spawn(async move {
                let service = service_fn(|req: http::Request<Incoming>| async move {
                    let body = if req.uri().path() == "/stalled" {
                        let frames = futures::stream::iter([Ok::<_, Infallible>(Frame::data(
                            Bytes::from_static(b"ab"),
                        ))])
                        .chain(futures::stream::pending());
                        StreamBody::new(frames).boxed_unsync()
                    } else {
                        Full::new(Bytes::from_static(b"ok")).boxed_unsync()
                    };
                    let mut response = http::Response::new(body);
                    if req.uri().path() == "/stalled" {
                        response
                            .headers_mut()
                            .insert(http::header::CONTENT_LENGTH, 4.into());
                    }
                    Ok::<_, Infallible>(response)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                o.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (addr, Counts { accepted, open })
}

use faultline_test_support::eventually;
use futures::StreamExt;

fn get(path: &str) -> http::Request<ProxyBody> {
    http::Request::get(path)
        .header(http::header::HOST, "test")
        .body(crate::body::empty())
        .unwrap()
}

#[tokio::test]
async fn a_connection_is_reused_once_its_body_was_read() {
    let (addr, counts) = upstream().await;
    let pool = H1Pool::new(Duration::from_secs(60));
    for _ in 0..5 {
        let response = pool.send(addr, get("/")).await.unwrap();
        assert_eq!(
            pool.idle_count(addr),
            0,
            "checked in before the body was read"
        );
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "ok");
        assert_eq!(pool.idle_count(addr), 1);
    }
    assert_eq!(counts.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_body_dropped_half_read_takes_its_connection_with_it() {
    let (addr, counts) = upstream().await;
    let pool = H1Pool::new(Duration::from_secs(60));
    let mut body = pool.send(addr, get("/stalled")).await.unwrap().into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, "ab");
    drop(body);
    assert_eq!(pool.idle_count(addr), 0);
    eventually(
        "the half-read connection to close",
        Duration::from_secs(5),
        async || counts.open.load(Ordering::SeqCst) == 0,
    )
    .await;
    // The next request gets a connection of its own.
    let response = pool.send(addr, get("/")).await.unwrap();
    assert_eq!(
        response.into_body().collect().await.unwrap().to_bytes(),
        "ok"
    );
    assert_eq!(counts.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    let (addr, counts) = upstream().await;
    let pool = H1Pool::new(Duration::from_millis(200));
    let response = pool.send(addr, get("/")).await.unwrap();
    response.into_body().collect().await.unwrap();
    assert_eq!(pool.idle_count(addr), 1);
    assert_eq!(counts.open.load(Ordering::SeqCst), 1);
    eventually(
        "the idle connection to be reaped",
        Duration::from_secs(5),
        async || pool.idle_count(addr) == 0 && counts.open.load(Ordering::SeqCst) == 0,
    )
    .await;
}

#[tokio::test]
async fn concurrent_exchanges_use_separate_connections() {
    let (addr, counts) = upstream().await;
    let pool = H1Pool::new(Duration::from_secs(60));
    let stalled = pool.send(addr, get("/stalled")).await.unwrap();
    // The stalled exchange holds its connection: this one needs another.
    let response = pool.send(addr, get("/")).await.unwrap();
    assert_eq!(
        response.into_body().collect().await.unwrap().to_bytes(),
        "ok"
    );
    assert_eq!(counts.accepted.load(Ordering::SeqCst), 2);
    assert_eq!(pool.idle_count(addr), 1);
    drop(stalled);
}

/// An upstream that answers the first request on each connection and
/// closes the connection, without answering, when a second one arrives:
/// its idle timeout firing just as the proxy reuses the connection.
async fn closing_on_reuse() -> (SocketAddr, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let (mut buf, mut chunk, mut served) = (Vec::new(), [0u8; 1024], 0);
                while let Ok(n) = stream.read(&mut chunk).await {
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        if served == 1 {
                            return;
                        }
                        served += 1;
                        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        let _ = stream.write_all(ok).await;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

fn post(path: &str) -> http::Request<ProxyBody> {
    http::Request::post(path)
        .header(http::header::HOST, "test")
        .body(crate::body::empty())
        .unwrap()
}

#[tokio::test]
async fn an_idempotent_request_on_a_stale_connection_is_replayed_once() {
    let (addr, accepted) = closing_on_reuse().await;
    let pool = H1Pool::with_timeouts(Duration::from_secs(60), Duration::ZERO);
    for _ in 0..3 {
        let response = pool.send(addr, get("/")).await.unwrap();
        assert_eq!(
            response.into_body().collect().await.unwrap().to_bytes(),
            "ok"
        );
    }
    // The first request opened a connection; each later one was written to
    // the previous connection, lost, and replayed on a fresh one.
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_request_that_is_not_idempotent_is_never_replayed() {
    let (addr, accepted) = closing_on_reuse().await;
    let pool = H1Pool::with_timeouts(Duration::from_secs(60), Duration::ZERO);
    let response = pool.send(addr, post("/")).await.unwrap();
    response.into_body().collect().await.unwrap();
    let error = pool
        .send(addr, post("/"))
        .await
        .err()
        .expect("a POST was replayed");
    assert!(
        matches!(error, UpstreamError::Http1(ref e) if e.is_incomplete_message()),
        "{error}"
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_connection_reused_at_once_is_not_worth_a_copy() {
    let (addr, accepted) = closing_on_reuse().await;
    let pool = H1Pool::new(Duration::from_secs(60));
    let response = pool.send(addr, get("/")).await.unwrap();
    response.into_body().collect().await.unwrap();
    assert!(pool.send(addr, get("/")).await.is_err());
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}
