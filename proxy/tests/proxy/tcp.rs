//! Raw TCP: pass-through and L4 faults.
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// Bytes that are not HTTP: a TLS ClientHello's first bytes.
const NOT_HTTP: &[u8] = b"\x16\x03\x01\x00\x05hello";

#[tokio::test]
async fn tcp_bytes_pass_both_ways() {
    let echo = tcp_echo(None).await;
    let proxy = start_proxy(echo.addr, "rules: []\n").await;
    let (bytes, _) = {
        let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
        stream.write_all(NOT_HTTP).await.unwrap();
        let mut buf = vec![0u8; NOT_HTTP.len()];
        stream.read_exact(&mut buf).await.unwrap();
        (buf, ())
    };
    assert_eq!(bytes, NOT_HTTP);
    assert_eq!(
        proxy
            .metric("faultline_connections_total{direction=\"inbound\",protocol=\"tcp\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn server_first_protocols_work() {
    let echo = tcp_echo(Some(b"INFO {}\r\n")).await;
    let proxy = start_proxy(echo.addr, "rules: []\n").await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    // The client waits for the server's greeting, sending nothing.
    let mut greeting = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut greeting))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&greeting, b"INFO {}\r\n");
}

#[tokio::test]
async fn partition_reject_resets_on_accept() {
    let echo = tcp_echo(None).await;
    let proxy = start_proxy(echo.addr, "rules:\n- partition: {mode: reject}\n").await;
    let (bytes, result) = raw_exchange(proxy.addr, NOT_HTTP, Duration::from_secs(5)).await;
    assert!(bytes.is_empty());
    assert_eq!(
        result.unwrap_err().kind(),
        std::io::ErrorKind::ConnectionReset
    );
    assert_eq!(echo.hits(), 0);
    assert_eq!(
        proxy
            .metric("faultline_faults_injected_total{rule=\"rules[0]\",kind=\"partition\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn partition_drop_blackholes() {
    let echo = tcp_echo(None).await;
    let proxy = start_proxy(echo.addr, "rules:\n- partition: {mode: drop}\n").await;
    let (bytes, result) = raw_exchange(proxy.addr, NOT_HTTP, Duration::from_millis(700)).await;
    assert!(bytes.is_empty());
    assert_eq!(result.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
    assert_eq!(echo.hits(), 0);
}

#[tokio::test]
async fn reset_after_bytes_cuts_the_connection() {
    let echo = tcp_echo(None).await;
    let proxy = start_proxy(echo.addr, "rules:\n- reset: {afterBytes: 10000}\n").await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream.write_all(NOT_HTTP).await.unwrap();
    let writer = async {
        for _ in 0..100 {
            if stream.write_all(&[7u8; 1000]).await.is_err() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
    let mut received = 0usize;
    let mut buf = [0u8; 4096];
    let error = loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .unwrap()
        {
            Ok(0) => panic!("closed with FIN after {received} bytes; expected a reset"),
            Ok(n) => received += n,
            Err(error) => break error,
        }
    };
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset);
    assert!(received < 10_000, "{received}");
}

#[tokio::test]
async fn reset_after_time_cuts_the_connection() {
    let echo = tcp_echo(None).await;
    let proxy = start_proxy(echo.addr, "rules:\n- reset: {after: 300ms}\n").await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let started = Instant::now();
    stream.write_all(NOT_HTTP).await.unwrap();
    let mut buf = vec![0u8; NOT_HTTP.len()];
    stream.read_exact(&mut buf).await.unwrap();
    let error = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn tcp_bandwidth_never_exceeds_the_limit() {
    let echo = tcp_echo(None).await;
    let proxy = start_proxy(
        echo.addr,
        "rules:\n- match: {protocol: tcp}\n  bandwidth: {bytesPerSecond: 100000}\n",
    )
    .await;
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    const TOTAL: usize = 300_000;
    let started = Instant::now();
    let send = tokio::spawn(async move {
        writer.write_all(NOT_HTTP).await.unwrap();
        writer
            .write_all(&vec![1u8; TOTAL - NOT_HTTP.len()])
            .await
            .unwrap();
        writer
    });
    let mut buf = vec![0u8; TOTAL];
    reader.read_exact(&mut buf).await.unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    drop(send.await.unwrap());
    let rate = TOTAL as f64 / elapsed;
    // Never faster than the limit allows (unthrottled, loopback moves this
    // in milliseconds). The lower bound only catches a throttle that stalls:
    // on a CPU-starved machine the copy itself can run late.
    assert!(
        (50_000.0..=110_000.0).contains(&rate),
        "rate {rate:.0} B/s over {elapsed:.2}s"
    );
}

#[tokio::test]
async fn unreachable_tcp_upstream_closes_and_counts() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = start_proxy(dead, "rules: []\n").await;
    let (bytes, result) = raw_exchange(proxy.addr, NOT_HTTP, Duration::from_secs(5)).await;
    assert!(bytes.is_empty());
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(
        proxy
            .metric("faultline_upstream_connect_errors_total{direction=\"inbound\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn tcp_delay_holds_the_upstream_connection_back() {
    let echo = tcp_echo(None).await;
    let proxy = start_proxy(
        echo.addr,
        "rules:\n- match: {protocol: tcp}\n  delay: {fixed: 300ms}\n",
    )
    .await;
    let started = Instant::now();
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream.write_all(NOT_HTTP).await.unwrap();
    let mut buf = vec![0u8; NOT_HTTP.len()];
    stream.read_exact(&mut buf).await.unwrap();
    assert_eq!(buf, NOT_HTTP);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn tcp_hang_and_abort_reset() {
    let echo = tcp_echo(None).await;
    let proxy = start_proxy(echo.addr, "rules:\n- match: {protocol: tcp}\n  hang: {}\n").await;
    let (bytes, result) = raw_exchange(proxy.addr, NOT_HTTP, Duration::from_millis(500)).await;
    assert!(bytes.is_empty());
    assert_eq!(result.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
    assert_eq!(echo.hits(), 0);

    proxy
        .set_policy("rules:\n- match: {protocol: tcp}\n  abort: {reset: true}\n")
        .await;
    let (bytes, result) = raw_exchange(proxy.addr, NOT_HTTP, Duration::from_secs(5)).await;
    assert!(bytes.is_empty());
    assert_eq!(
        result.unwrap_err().kind(),
        std::io::ErrorKind::ConnectionReset
    );
    assert_eq!(echo.hits(), 0);
}
