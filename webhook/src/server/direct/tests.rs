use axum::http::Response;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

const PATHS: &[&str] = &["/v1/policy/stream"];

fn classified(buf: &[u8]) -> &'static str {
    match classify(buf, PATHS) {
        None => "more",
        Some(Decision::Hyper) => "hyper",
        Some(Decision::Direct(_)) => "direct",
    }
}

#[test]
fn only_a_complete_bodiless_get_of_a_direct_path_is_served_here() {
    let get = b"GET /v1/policy/stream?pod=a HTTP/1.1\r\nhost: x\r\nauthorization: Bearer t\r\n\r\n";
    assert_eq!(classified(get), "direct");
    // The head is not complete yet.
    assert_eq!(classified(&get[..get.len() - 2]), "more");
    assert_eq!(classified(b"GET /v1/policy/str"), "more");
    // Other paths and methods go to hyper as soon as the line says so.
    assert_eq!(classified(b"POST /mutate HTTP/1.1\r\n"), "hyper");
    assert_eq!(classified(b"POST /v1/policy/stream HTTP/1.1\r\n"), "hyper");
    assert_eq!(classified(b"GET /metrics HTTP/1.1\r\n"), "hyper");
    assert_eq!(
        classified(b"GET /v1/policy/stream/x HTTP/1.1\r\n\r\n"),
        "hyper"
    );
    // A body, HTTP/1.0 or a malformed head: hyper answers as it always has.
    assert_eq!(
        classified(b"GET /v1/policy/stream HTTP/1.1\r\ncontent-length: 3\r\n\r\nabc"),
        "hyper"
    );
    assert_eq!(
        classified(b"GET /v1/policy/stream HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n"),
        "hyper"
    );
    assert_eq!(
        classified(b"GET /v1/policy/stream HTTP/1.0\r\n\r\n"),
        "hyper"
    );
    assert_eq!(
        classified(b"GET /v1/policy/stream HTTP/1.1\r\nbad header\r\n\r\n"),
        "hyper"
    );
    assert_eq!(
        classified(b"GET /v1/policy/stream HTTP/1.1\r\ncontent-length: 0\r\n\r\n"),
        "direct"
    );
}

#[test]
fn the_request_keeps_its_query_and_headers() {
    let get =
        b"GET /v1/policy/stream?namespace=shop&pod=a HTTP/1.1\r\nAuthorization: Bearer t\r\n\r\n";
    let Some(Decision::Direct(request)) = classify(get, PATHS) else {
        panic!("not direct");
    };
    assert_eq!(request.uri().query(), Some("namespace=shop&pod=a"));
    assert_eq!(request.headers()[header::AUTHORIZATION], "Bearer t");
}

#[test]
fn a_response_of_unknown_length_is_chunked_and_closes_the_connection() {
    let response = Response::builder()
        .status(200)
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(())
        .unwrap();
    let (parts, ()) = response.into_parts();
    assert_eq!(
        head(&parts, None),
        b"HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );
    assert_eq!(
        head(&parts, Some(5)),
        b"HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\ncontent-length: 5\r\nconnection: close\r\n\r\n"
    );
    assert_eq!(chunk(b"{\"a\":1}\n", true), b"8\r\n{\"a\":1}\n\r\n");
    assert_eq!(chunk(b"hello", false), b"hello");
}

#[tokio::test]
async fn rewind_replays_the_sniffed_bytes_before_the_rest() {
    let (mut client, server) = tokio::io::duplex(64);
    client.write_all(b" world").await.unwrap();
    drop(client);
    let mut io = Rewind::new(Bytes::from_static(b"hello"), server);
    let mut all = String::new();
    io.read_to_string(&mut all).await.unwrap();
    assert_eq!(all, "hello world");
}

#[tokio::test]
async fn a_write_to_a_client_that_stopped_reading_ends_when_killed() {
    // The client never reads: the 16-byte pipe fills and the write waits.
    let (_client, mut server) = tokio::io::duplex(16);
    let kill = CancellationToken::new();
    let killer = kill.clone();
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        killer.cancel();
    });
    let sent = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        send(&mut server, &[b'x'; 1024], &kill),
    )
    .await
    .expect("the kill ends the write");
    assert!(!sent.unwrap(), "reported as not sent");
}
