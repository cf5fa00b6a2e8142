//! What `side` means under real capture, for both directions: in a pod
//! namespace with `faultline-proxy init` and the proxy as UID 15400,
//! `request` is what the pod sends on an outbound connection and what the
//! remote client sends on an inbound one; `response` the other way. Checked
//! with `limitData`, which lets exactly N bytes of its side through.
mod capture;

use std::net::SocketAddr;
use std::time::Duration;

use capture::{PEER_IP, POD_IP, connect, listen, setup, v4};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

const POLICY: &str = r#"
rules:
- name: upload-cut
  match: {direction: outbound, port: 9002}
  limitData: {bytes: 4, side: request}
- name: answer-cut
  match: {direction: inbound, port: 9003}
  limitData: {bytes: 5}
"#;

/// Bytes that are not HTTP, so the connections are raw TCP.
const REQUEST: &[u8] = b"pingpong";
const ANSWER: &[u8] = b"0123456789";

/// A one-connection TCP server in `ns`: when `answer_after` bytes came in,
/// it sends [`ANSWER`]; it reports all it read until the end of the stream.
fn server(ns: &str, addr: SocketAddr, answer_after: usize) -> oneshot::Receiver<Vec<u8>> {
    let listener = listen(ns, addr);
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let mut seen = Vec::new();
        let mut buf = [0u8; 64];
        let mut answered = false;
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
            if !answered && seen.len() >= answer_after {
                answered = true;
                let _ = stream.write_all(ANSWER).await;
            }
        }
        let _ = tx.send(seen);
    });
    rx
}

async fn read_all(stream: &mut tokio::net::TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out))
        .await
        .expect("the connection ends");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sides_name_the_same_bytes_inbound_and_outbound() {
    let Some(mut pair) = setup("sides", false) else {
        return;
    };
    let (pod, peer) = (pair.pod.clone(), pair.peer.clone());
    pair.init_ok(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    pair.start_proxy(&dir, POLICY, &[]);
    pair.wait_ready(v4(POD_IP, 15400)).await;

    // Outbound: the pod's own bytes are the request side. The remote server
    // gets the first 4 of them, then the connection ends.
    let remote = server(&peer, v4(PEER_IP, 9002), usize::MAX);
    let mut app = connect(&pod, v4(PEER_IP, 9002)).await.expect("outbound");
    app.write_all(REQUEST).await.expect("write");
    let seen = tokio::time::timeout(Duration::from_secs(10), remote)
        .await
        .expect("the remote end sees the close")
        .expect("report");
    assert_eq!(seen, b"ping");
    let _ended = read_all(&mut app).await;

    // Inbound: the pod's answers are the response side. The remote client's
    // request passes whole; it gets the first 5 bytes of the answer.
    let local = server(&pod, v4([0, 0, 0, 0].into(), 9003), REQUEST.len());
    let mut client = connect(&peer, v4(POD_IP, 9003)).await.expect("inbound");
    client.write_all(REQUEST).await.expect("write");
    assert_eq!(read_all(&mut client).await, b"01234");
    let seen = tokio::time::timeout(Duration::from_secs(10), local)
        .await
        .expect("the app sees the close")
        .expect("report");
    assert_eq!(seen, REQUEST);
}
