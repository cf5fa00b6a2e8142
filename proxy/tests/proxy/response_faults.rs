//! Faults decided on the upstream's response (`match.response`, `replace`,
//! `patch`, `delay: {side: response}`), seen from the client, against an
//! upstream whose answers each test chooses.
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use crate::support::*;

const JSON: &str = r#"{"a":1,"b":{"c":2},"keep":"yes"}"#;
/// Sent before the gate of `/gated` opens: more than the patch limit.
const GATED_BEFORE: usize = 320 * 1024;
const GATED_AFTER: usize = 4 * 1024 * 1024;
const FRAME: usize = 16 * 1024;

/// An upstream answering with chosen statuses, headers and bodies.
struct Answers {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    gate: Arc<Notify>,
}

impl Answers {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(Notify::new());
        let (counter, opened) = (hits.clone(), gate.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (counter, opened) = (counter.clone(), opened.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        answer(req, opened.clone())
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, hits, gate }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn frames(chunks: Vec<Bytes>) -> Body {
    let frames: Vec<Result<Frame<Bytes>, Infallible>> =
        chunks.into_iter().map(|c| Ok(Frame::data(c))).collect();
    StreamBody::new(futures::stream::iter(frames)).boxed()
}

async fn answer(req: Request<Incoming>, gate: Arc<Notify>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let json = |body: Body| {
        Response::builder()
            .header("content-type", "application/json")
            .header("x-upstream", "yes")
            .body(body)
            .unwrap()
    };
    Ok(match path.as_str() {
        "/json" => json(full(JSON)),
        // No length: chunked on HTTP/1.1.
        "/json-chunked" => json(frames(vec![
            Bytes::from_static(&JSON.as_bytes()[..10]),
            Bytes::from_static(&JSON.as_bytes()[10..]),
        ])),
        "/json-gzip" => Response::builder()
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .body(full(&b"\x1f\x8b\x08\x00not really gzip"[..]))
            .unwrap(),
        "/text" => Response::builder()
            .header("content-type", "text/plain")
            .body(full(JSON))
            .unwrap(),
        // JSON with validators and digests of its bytes, in the head and
        // (RFC 9530) as trailers.
        "/json-checksums" | "/text-checksums" => {
            let content_type = if path == "/json-checksums" {
                "application/json"
            } else {
                "text/plain"
            };
            let mut trailers = http::HeaderMap::new();
            trailers.insert("content-digest", CONTENT_DIGEST.parse().unwrap());
            trailers.insert("x-trailer", "kept".parse().unwrap());
            let frames: Vec<Result<Frame<Bytes>, Infallible>> = vec![
                Ok(Frame::data(Bytes::from_static(JSON.as_bytes()))),
                Ok(Frame::trailers(trailers)),
            ];
            let mut response = Response::builder().header("content-type", content_type);
            for (name, value) in CHECKSUMS {
                response = response.header(name, value);
            }
            response
                .header("last-modified", "Tue, 01 Dec 2026 00:00:00 GMT")
                .body(StreamBody::new(futures::stream::iter(frames)).boxed())
                .unwrap()
        }
        // Streams past the patch limit, then waits for the test to open
        // the gate before sending the rest.
        "/gated" => {
            let (tx, rx) = futures::channel::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
            tokio::spawn(async move {
                let mut tx = tx;
                use futures::SinkExt;
                for i in 0..GATED_BEFORE / FRAME {
                    let chunk = Bytes::from(vec![b'a' + (i % 26) as u8; FRAME]);
                    if tx.send(Ok(Frame::data(chunk))).await.is_err() {
                        return;
                    }
                }
                gate.notified().await;
                for _ in 0..GATED_AFTER / FRAME {
                    let chunk = Bytes::from(vec![b'z'; FRAME]);
                    if tx.send(Ok(Frame::data(chunk))).await.is_err() {
                        return;
                    }
                }
            });
            json(StreamBody::new(rx).boxed())
        }
        // gRPC errors: trailers-only (grpc-status in the head), and after
        // a message (grpc-status in the trailers).
        "/test.Fail/TrailersOnly" => Response::builder()
            .header("content-type", "application/grpc")
            .header("grpc-status", "14")
            .body(full(""))
            .unwrap(),
        "/test.Fail/AfterMessage" => {
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", "14".parse().unwrap());
            let frames: Vec<Result<Frame<Bytes>, Infallible>> = vec![
                Ok(Frame::data(Bytes::from_static(b"\x00\x00\x00\x00\x01x"))),
                Ok(Frame::trailers(trailers)),
            ];
            Response::builder()
                .header("content-type", "application/grpc")
                .body(StreamBody::new(futures::stream::iter(frames)).boxed())
                .unwrap()
        }
        _ if path.starts_with("/status/") => {
            let status: u16 = path["/status/".len()..].parse().unwrap_or(500);
            let body = if matches!(status, 204 | 304) {
                full("")
            } else {
                full(format!("status {status}"))
            };
            Response::builder()
                .status(status)
                .header("x-upstream", "yes")
                .header("etag", "\"v1\"")
                .body(body)
                .unwrap()
        }
        _ => Response::builder().status(404).body(full("")).unwrap(),
    })
}

/// What the upstream's `/json-checksums` says about its bytes.
const CHECKSUMS: [(&str, &str); 5] = [
    ("etag", "\"v1\""),
    ("content-md5", "Q2hlY2sgSW50ZWdyaXR5IQ=="),
    (
        "digest",
        "sha-256=X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=",
    ),
    ("content-digest", CONTENT_DIGEST),
    ("repr-digest", CONTENT_DIGEST),
];
const CONTENT_DIGEST: &str = "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:";

fn skipped(rule: &str, reason: &str) -> String {
    format!("faultline_response_patch_skipped_total{{rule=\"{rule}\",reason=\"{reason}\"}}")
}

#[tokio::test]
async fn replace_applies_only_to_responses_that_match_status_and_headers() {
    let upstream = Answers::start().await;
    let proxy = start_proxy(
        upstream.addr,
        r#"
rules:
- name: errors
  match: {response: {status: [5xx, 404], headers: {x-upstream: "y*"}}}
  replace: {status: 503, headers: {x-replaced: "1"}, body: replaced}
"#,
    )
    .await;
    let client = reqwest::Client::new();
    for path in ["/status/502", "/status/404"] {
        let response = client.get(proxy.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 503, "{path}");
        assert_eq!(response.headers()["x-replaced"], "1");
        assert!(response.headers().get("x-upstream").is_none());
        assert!(response.headers().get("etag").is_none());
        assert_eq!(response.text().await.unwrap(), "replaced");
    }
    // Status that does not match, and a matching status without the header.
    let response = client.get(proxy.url("/status/200")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "status 200");
    let response = client.get(proxy.url("/nothing")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(upstream.hits(), 4);
    assert_eq!(proxy.metric(&injected("errors", "replace")).await, 2.0);
}

#[tokio::test]
async fn abort_on_a_matching_response_answers_with_the_error_instead() {
    let upstream = Answers::start().await;
    let proxy = start_proxy(
        upstream.addr,
        "rules:\n- name: hide\n  match: {response: {status: 200}}\n  abort: {status: 500, body: aborted}\n",
    )
    .await;
    let response = reqwest::get(proxy.url("/status/200")).await.unwrap();
    assert_eq!(response.status(), 500);
    assert_eq!(response.text().await.unwrap(), "aborted");
    assert_eq!(upstream.hits(), 1);
    let response = reqwest::get(proxy.url("/status/201")).await.unwrap();
    assert_eq!(response.status(), 201);
}

#[tokio::test]
async fn first_counts_only_matching_responses() {
    let upstream = Answers::start().await;
    let proxy = start_proxy(
        upstream.addr,
        "rules:\n- name: once\n  match: {response: {status: 502}}\n  first: 1\n  replace: {status: 504}\n",
    )
    .await;
    let client = reqwest::Client::new();
    let status = |path: &'static str| {
        let (client, url) = (client.clone(), proxy.url(path));
        async move { client.get(url).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status("/status/200").await, 200);
    assert_eq!(status("/status/200").await, 200);
    assert_eq!(status("/status/502").await, 504);
    assert_eq!(status("/status/502").await, 502);
}

#[tokio::test]
async fn patch_sets_and_removes_headers_and_changes_the_status() {
    let upstream = Answers::start().await;
    let proxy = start_proxy(
        upstream.addr,
        r#"
rules:
- name: tweak
  match: {path: /status/*}
  patch: {status: 429, headers: {set: {retry-after: "3", x-upstream: "patched"}, remove: [etag]}}
"#,
    )
    .await;
    let response = reqwest::get(proxy.url("/status/200")).await.unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "3");
    assert_eq!(response.headers()["x-upstream"], "patched");
    assert!(response.headers().get("etag").is_none());
    assert_eq!(response.text().await.unwrap(), "status 200");
}

const MERGE: &str = r#"
rules:
- name: merge
  patch: {body: {merge: {a: null, b: {d: 3}, added: [1, 2]}}}
"#;
const MERGED: &str = r#"{"added":[1,2],"b":{"c":2,"d":3},"keep":"yes"}"#;

#[tokio::test]
async fn patch_merges_json_bodies_with_and_without_a_length() {
    let upstream = Answers::start().await;
    let proxy = start_proxy(upstream.addr, MERGE).await;
    for path in ["/json", "/json-chunked"] {
        let response = reqwest::get(proxy.url(path)).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-length"],
            MERGED.len().to_string(),
            "{path}"
        );
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(
            body,
            serde_json::from_str::<serde_json::Value>(MERGED).unwrap()
        );
    }
    // The same over HTTP/2.
    let mut h2 = h2_client(proxy.addr).await;
    let response = h2
        .send_request(
            Request::get("http://test/json-chunked")
                .body(full(""))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(status, 200, "{body:?}");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
        serde_json::from_str::<serde_json::Value>(MERGED).unwrap()
    );
    assert_eq!(proxy.metric(&injected("merge", "patch")).await, 3.0);
    assert_eq!(
        proxy
            .metric("faultline_response_patch_buffered_bytes")
            .await,
        0.0
    );
}

#[tokio::test]
async fn compressed_and_non_json_bodies_pass_unchanged_and_are_counted() {
    let upstream = Answers::start().await;
    let proxy = start_proxy(upstream.addr, MERGE).await;
    let client = reqwest::Client::builder().no_gzip().build().unwrap();
    let response = client.get(proxy.url("/json-gzip")).send().await.unwrap();
    assert_eq!(response.headers()["content-encoding"], "gzip");
    assert_eq!(
        &response.bytes().await.unwrap()[..],
        b"\x1f\x8b\x08\x00not really gzip"
    );
    let response = client.get(proxy.url("/text")).send().await.unwrap();
    assert_eq!(response.text().await.unwrap(), JSON);
    assert_eq!(proxy.metric(&skipped("merge", "encoded")).await, 1.0);
    assert_eq!(proxy.metric(&skipped("merge", "not_json")).await, 1.0);
}

#[tokio::test]
async fn a_body_larger_than_the_limit_streams_through_untouched() {
    let upstream = Answers::start().await;
    let proxy = start_proxy(upstream.addr, MERGE).await;
    let mut response = reqwest::get(proxy.url("/gated")).await.unwrap();
    // Everything the upstream sent so far (more than the limit) reaches
    // the client while the upstream still holds the rest back: the proxy
    // does not wait for the end of the body.
    let mut received = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        while received.len() < GATED_BEFORE {
            let chunk = response.chunk().await.unwrap().unwrap();
            received.extend_from_slice(&chunk);
        }
    })
    .await
    .expect("the first bytes to arrive before the body ends");
    assert_eq!(received.len(), GATED_BEFORE);
    for (i, chunk) in received.chunks(FRAME).enumerate() {
        assert!(
            chunk.iter().all(|b| *b == b'a' + (i % 26) as u8),
            "frame {i}"
        );
    }
    assert_eq!(
        proxy
            .metric("faultline_response_patch_buffered_bytes")
            .await,
        0.0
    );
    upstream.gate.notify_one();
    let rest = response.bytes().await.unwrap();
    assert_eq!(rest.len(), GATED_AFTER);
    assert!(rest.iter().all(|b| *b == b'z'));
    assert_eq!(proxy.metric(&skipped("merge", "too_large")).await, 1.0);
}

/// Sends `request` on `stream` and returns the response head; the stream
/// stays usable if the proxy framed the response right.
#[tokio::test]
async fn responses_without_a_body_keep_their_framing() {
    let upstream = Answers::start().await;
    let proxy = start_proxy(
        upstream.addr,
        r#"
rules:
- name: merge
  match: {path: /json}
  patch: {body: {merge: {a: 2}}}
- name: body
  match: {path: /status/*}
  replace: {body: replaced}
"#,
    )
    .await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    // HEAD: headers only. 204 and 304 from the upstream: still no body.
    // Each next request on the same connection proves nothing was sent
    // after a head.
    let head = exchange_head(&mut stream, "HEAD /json HTTP/1.1\r\nhost: t\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let head = exchange_head(&mut stream, "HEAD /status/200 HTTP/1.1\r\nhost: t\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("content-length: 8\r\n"), "{head}");
    for status in [204, 304] {
        let head = exchange_head(
            &mut stream,
            &format!("GET /status/{status} HTTP/1.1\r\nhost: t\r\n\r\n"),
        )
        .await;
        assert!(head.starts_with(&format!("HTTP/1.1 {status}")), "{head}");
    }
    let head = exchange_head(&mut stream, "GET /status/200 HTTP/1.1\r\nhost: t\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("content-length: 8\r\n"), "{head}");
    let mut body = [0u8; 8];
    tokio::io::AsyncReadExt::read_exact(&mut stream, &mut body)
        .await
        .unwrap();
    assert_eq!(&body, b"replaced");
}

#[tokio::test]
async fn a_status_changed_to_204_drops_the_upstreams_body() {
    let upstream = Answers::start().await;
    let proxy = start_proxy(
        upstream.addr,
        "rules:\n- name: empty\n  patch: {status: 204}\n",
    )
    .await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let head = exchange_head(&mut stream, "GET /json HTTP/1.1\r\nhost: t\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 204"), "{head}");
    assert!(!head.contains("content-length"), "{head}");
    let head = exchange_head(&mut stream, "GET /json HTTP/1.1\r\nhost: t\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 204"), "{head}");
}

#[tokio::test]
async fn delay_on_a_matching_response_waits_after_the_upstream_answered() {
    let upstream = Answers::start().await;
    let proxy = start_proxy(
        upstream.addr,
        "rules:\n- name: slow-errors\n  match: {response: {status: 5xx}}\n  delay: {fixed: 400ms, side: response}\n",
    )
    .await;
    let url = proxy.url("/status/503");
    let started = Instant::now();
    let request = tokio::spawn(async move { reqwest::get(url).await.unwrap().status() });
    eventually("the upstream to answer", Duration::from_secs(5), || async {
        upstream.hits() == 1
    })
    .await;
    assert!(!request.is_finished());
    assert_eq!(request.await.unwrap(), 503);
    assert!(started.elapsed() >= Duration::from_millis(400));
    // A response that does not match is not delayed (and not counted).
    reqwest::get(proxy.url("/status/200")).await.unwrap();
    assert_eq!(proxy.metric(&injected("slow-errors", "delay")).await, 1.0);
}

#[tokio::test]
async fn grpc_status_is_seen_in_a_trailers_only_response_head() {
    let upstream = Answers::start().await;
    let proxy = start_proxy(
        upstream.addr,
        r#"
rules:
- name: exhausted
  match: {protocol: grpc, response: {headers: {grpc-status: "14"}}}
  abort: {grpc: RESOURCE_EXHAUSTED}
"#,
    )
    .await;
    let mut h2 = h2_client(proxy.addr).await;
    let call = |path: &str| {
        Request::post(format!("http://test{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(full(&b"\x00\x00\x00\x00\x00"[..]))
            .unwrap()
    };
    let response = h2
        .send_request(call("/test.Fail/TrailersOnly"))
        .await
        .unwrap();
    assert_eq!(response.headers()["grpc-status"], "8");
    // Once a message has been sent the status comes in trailers, after
    // the head the rule was decided on: the call passes as it was.
    let response = h2
        .send_request(call("/test.Fail/AfterMessage"))
        .await
        .unwrap();
    assert!(response.headers().get("grpc-status").is_none());
    let collected = response.into_body().collect().await.unwrap();
    assert_eq!(collected.trailers().unwrap()["grpc-status"], "14");
    assert_eq!(proxy.metric(&injected("exhausted", "abort")).await, 1.0);
}

/// The h2 response to GET `path`: head and collected body with trailers.
async fn h2_get(
    proxy: &TestProxy,
    path: &str,
) -> (http::response::Parts, http_body_util::Collected<Bytes>) {
    let mut h2 = h2_client(proxy.addr).await;
    let response = h2
        .send_request(
            Request::get(format!("http://test{path}"))
                .body(full(""))
                .unwrap(),
        )
        .await
        .unwrap();
    let (head, body) = response.into_parts();
    (head, body.collect().await.unwrap())
}

#[tokio::test]
async fn a_changed_body_loses_the_upstreams_validators_and_digests() {
    let upstream = Answers::start().await;
    let proxy = start_proxy(upstream.addr, MERGE).await;
    // Patched: every checksum of the old bytes is gone, head and trailers;
    // the date and other trailers stay.
    let (head, body) = h2_get(&proxy, "/json-checksums").await;
    for (name, _) in CHECKSUMS {
        assert!(head.headers.get(name).is_none(), "{name}: {head:?}");
    }
    assert!(head.headers.get("last-modified").is_some());
    let trailers = body.trailers().cloned().unwrap();
    assert!(trailers.get("content-digest").is_none(), "{trailers:?}");
    assert_eq!(trailers["x-trailer"], "kept");
    assert_eq!(&body.to_bytes()[..], MERGED.as_bytes());
    // Not JSON, so passed unchanged: they still describe the bytes.
    let (head, body) = h2_get(&proxy, "/text-checksums").await;
    for (name, value) in CHECKSUMS {
        assert_eq!(head.headers[name], value, "{name}");
    }
    assert_eq!(body.trailers().unwrap()["content-digest"], CONTENT_DIGEST);
    assert_eq!(&body.to_bytes()[..], JSON.as_bytes());
    assert_eq!(proxy.metric(&skipped("merge", "not_json")).await, 1.0);
}

#[tokio::test]
async fn a_replaced_body_loses_the_etag_unless_the_rule_sets_one() {
    let upstream = Answers::start().await;
    let proxy = start_proxy(
        upstream.addr,
        r#"
rules:
- name: replace
  match: {path: /status/200}
  replace: {body: other}
- name: own-etag
  match: {path: /json-checksums}
  patch: {headers: {set: {etag: '"mine"'}}, body: {merge: {a: 2}}}
- name: headers-only
  match: {path: /status/201}
  patch: {headers: {set: {x-faultline: patched}}}
"#,
    )
    .await;
    let response = reqwest::get(proxy.url("/status/200")).await.unwrap();
    assert!(response.headers().get("etag").is_none());
    assert_eq!(response.text().await.unwrap(), "other");
    let (head, _) = h2_get(&proxy, "/json-checksums").await;
    assert_eq!(head.headers["etag"], "\"mine\"");
    assert!(head.headers.get("content-md5").is_none());
    // The body passes as it was: its ETag stays.
    let response = reqwest::get(proxy.url("/status/201")).await.unwrap();
    assert_eq!(response.headers()["etag"], "\"v1\"");
    assert_eq!(response.headers()["x-faultline"], "patched");
}

/// Every way a response-stage rule changes an HTTP/1.1 response, each
/// request of it sent on one keep-alive connection.
const ON_RESPONSE: &str = r#"
- {name: replaced, match: {path: /status/502}, replace: {status: 503, headers: {x-replaced: "1"}, body: replaced}}
- {name: aborted, match: {path: /status/500, response: {status: 5xx}}, abort: {status: 418, body: teapot, headers: {x-abort: "1"}}}
- {name: patched, match: {path: /json-chunked}, patch: {status: 202, headers: {set: {x-a: b}, remove: [x-upstream]}}}
- {name: headers, match: {path: /json}, replace: {headers: {x-only: "1"}}}
- {name: emptied, match: {path: /text}, patch: {status: 204}}
- {name: refreshed, match: {path: /status/304}, replace: {status: 200, body: fresh}}
- {name: seen, match: {path: /status/201, response: {headers: {x-upstream: "y*"}}}, patch: {headers: {set: {x-seen: "1"}}}}
- {name: unseen, match: {path: /status/202, response: {headers: {x-upstream: "n*"}}}, patch: {headers: {set: {x-seen: "1"}}}}
- {name: gone, match: {path: /gated}, replace: {body: short}}
"#;

/// The requests of [`ON_RESPONSE`], in order.
const ASKED: [(&str, &str); 12] = [
    ("GET", "/status/502"),
    ("HEAD", "/status/502"),
    ("GET", "/status/500"),
    ("GET", "/json-chunked"),
    ("GET", "/json"),
    ("HEAD", "/json"),
    ("GET", "/text"),
    ("GET", "/status/304"),
    ("GET", "/status/201"),
    ("GET", "/status/202"),
    ("GET", "/gated"),
    ("GET", "/status/200"),
];

/// Status, headers but `date` (sorted) and body of each of [`ASKED`],
/// sent one after the other on one HTTP/1.1 connection.
async fn answers_on_one_connection(proxy: &TestProxy) -> Vec<(u16, Vec<String>, Bytes)> {
    let mut client = h1_client(proxy.addr).await;
    let mut answers = Vec::new();
    for (method, path) in ASKED {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "test")
            .body(full(""))
            .unwrap();
        let response = client.send_request(request).await.unwrap();
        let (head, body) = response.into_parts();
        assert!(
            head.headers.contains_key("date"),
            "{method} {path}: {head:?}"
        );
        let mut headers: Vec<String> = head
            .headers
            .iter()
            .filter(|(name, _)| *name != "date")
            .map(|(name, value)| format!("{name}: {}", value.to_str().unwrap()))
            .collect();
        headers.sort();
        let body = body.collect().await.unwrap().to_bytes();
        answers.push((head.status.as_u16(), headers, body));
    }
    answers
}

#[tokio::test]
async fn the_relay_answers_response_faults_as_hyper_does() {
    let upstream = Answers::start().await;
    let relayed = start_proxy(upstream.addr, &format!("rules:{ON_RESPONSE}")).await;
    // A rule that could abort any request sends every one to hyper.
    let full_path =
        format!("rules:\n- {{name: never, abort: {{status: 599}}, percent: 0}}{ON_RESPONSE}");
    let by_hyper = start_proxy(upstream.addr, &full_path).await;
    let on_relay = answers_on_one_connection(&relayed).await;
    let on_hyper = answers_on_one_connection(&by_hyper).await;
    for (i, (method, path)) in ASKED.iter().enumerate() {
        assert_eq!(on_relay[i], on_hyper[i], "{method} {path}");
    }
    let relayed_total = r#"faultline_requests_relayed_total{direction="inbound"}"#;
    assert_eq!(relayed.metric(relayed_total).await, ASKED.len() as f64);
    assert_eq!(by_hyper.metric(relayed_total).await, 0.0);
    // What each looks like, so agreement is not agreement on nothing.
    let answer = |i: usize| &on_relay[i];
    assert_eq!((answer(0).0, &answer(0).2[..]), (503, &b"replaced"[..]));
    assert!(answer(0).1.contains(&"x-replaced: 1".to_owned()));
    assert!(!answer(0).1.iter().any(|h| h.starts_with("etag")));
    assert_eq!((answer(1).0, answer(1).2.len()), (503, 0));
    assert!(answer(1).1.contains(&"content-length: 8".to_owned()));
    assert_eq!((answer(2).0, &answer(2).2[..]), (418, &b"teapot"[..]));
    assert_eq!(answer(3).0, 202);
    assert!(
        answer(3)
            .1
            .contains(&"transfer-encoding: chunked".to_owned())
    );
    assert!(answer(3).1.contains(&"x-a: b".to_owned()));
    assert!(!answer(3).1.iter().any(|h| h.starts_with("x-upstream")));
    assert_eq!(&answer(3).2[..], JSON.as_bytes());
    assert!(answer(4).1.contains(&"x-only: 1".to_owned()));
    assert!(
        answer(4)
            .1
            .contains(&"content-type: application/json".to_owned())
    );
    assert_eq!(&answer(4).2[..], JSON.as_bytes());
    assert_eq!((answer(6).0, answer(6).2.len()), (204, 0));
    assert_eq!((answer(7).0, &answer(7).2[..]), (200, &b"fresh"[..]));
    assert!(answer(8).1.contains(&"x-seen: 1".to_owned()));
    assert!(!answer(9).1.contains(&"x-seen: 1".to_owned()));
    assert_eq!(&answer(10).2[..], b"short");
    assert_eq!(&answer(11).2[..], b"status 200");
    for rule in [
        "replaced", "aborted", "patched", "headers", "emptied", "seen", "gone",
    ] {
        let kind = match rule {
            "aborted" => "abort",
            "patched" | "emptied" | "seen" => "patch",
            _ => "replace",
        };
        let count = if matches!(rule, "replaced" | "headers") {
            2.0
        } else {
            1.0
        };
        assert_eq!(relayed.metric(&injected(rule, kind)).await, count, "{rule}");
        assert_eq!(
            by_hyper.metric(&injected(rule, kind)).await,
            count,
            "{rule}"
        );
    }
}

#[tokio::test]
async fn a_reset_decided_on_a_relayed_response_resets_the_client() {
    let upstream = Answers::start().await;
    let proxy = start_proxy(
        upstream.addr,
        "rules:\n- {name: cut, match: {response: {status: 503}}, abort: {reset: true}}\n",
    )
    .await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let head = exchange_head(&mut stream, "GET /status/200 HTTP/1.1\r\nhost: t\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut rest = [0u8; 10];
    tokio::io::AsyncReadExt::read_exact(&mut stream, &mut rest)
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut stream,
        b"GET /status/503 HTTP/1.1\r\nhost: t\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read(&mut stream, &mut buf),
    )
    .await
    .unwrap();
    assert_eq!(
        read.map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionReset)
    );
    assert_eq!(upstream.hits(), 2);
    assert_eq!(proxy.metric(&injected("cut", "abort")).await, 1.0);
    let relayed = r#"faultline_requests_relayed_total{direction="inbound"}"#;
    assert_eq!(proxy.metric(relayed).await, 2.0);
}

#[tokio::test]
async fn a_response_answered_instead_on_the_relay_keeps_the_clients_close() {
    let upstream = Answers::start().await;
    let proxy = start_proxy(
        upstream.addr,
        "rules:\n- {name: swap, match: {path: /json}, replace: {body: swapped}}\n",
    )
    .await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut stream,
        b"GET /json HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut all = Vec::new();
    tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut all),
    )
    .await
    .unwrap()
    .unwrap();
    let all = String::from_utf8(all).unwrap();
    assert!(all.starts_with("HTTP/1.1 200 OK\r\n"), "{all}");
    assert!(all.contains("\r\nconnection: close\r\n"), "{all}");
    assert!(all.contains("\r\ncontent-length: 7\r\n"), "{all}");
    assert!(all.ends_with("\r\n\r\nswapped"), "{all}");
}
