//! Request smuggling and desync against the HTTP/1.1 relay
//! (`traffic::http::relay`). Each request's bytes go, on fresh connections,
//! to two proxies: one whose policy is empty (the relay carries what it
//! can) and one whose policy sends every request down hyper's path (a rule
//! that matches everything at `percent: 0`). Behind each is an origin that
//! reads requests the way a plain RFC 9112 server does (CRLF lines, the
//! last `Transfer-Encoding` coding, the first `Content-Length`) and answers
//! each with its target as the body. A desync shows as the origin serving
//! a request the client got no answer for, or one the proxy never saw
//! (`/smuggled`); the relay must also answer as hyper's path does.
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

const EMPTY: &str = "rules: []\n";
/// Every request is the full path's: a rule matching all, never drawn.
const FULL_PATH: &str = "rules:\n- {name: never, abort: {status: 503}, percent: 0}\n";
const RELAYED: &str = "faultline_requests_relayed_total{direction=\"inbound\"}";

/// What the origin made of the bytes it received.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Served {
    /// Each request's target, in order; `!bad` where it could not read one.
    targets: Vec<String>,
}

/// An origin on 127.0.0.1:0 that answers `200` with the request target as
/// the body, and `400` (then closes) to bytes it cannot read as a request.
struct Origin {
    addr: SocketAddr,
    served: Arc<Mutex<Served>>,
}

impl Origin {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = Arc::new(Mutex::new(Served::default()));
        let s = served.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, s.clone()));
            }
        });
        Origin { addr, served }
    }

    fn take(&self) -> Served {
        std::mem::take(&mut *self.served.lock().unwrap())
    }
}

async fn serve(mut stream: TcpStream, served: Arc<Mutex<Served>>) {
    let mut buf = Vec::new();
    loop {
        match origin_parse(&buf) {
            Some(Ok((end, target))) => {
                buf.drain(..end);
                served.lock().unwrap().targets.push(target.clone());
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{target}",
                    target.len()
                );
                if stream.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
                continue;
            }
            Some(Err(())) => {
                served.lock().unwrap().targets.push("!bad".to_owned());
                let answer = "HTTP/1.1 400 Bad Request\r\ncontent-length: 4\r\nconnection: close\r\n\r\n!bad";
                let _ = stream.write_all(answer.as_bytes()).await;
                return;
            }
            None => {}
        }
        let mut chunk = [0u8; 16 * 1024];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The request at the start of `buf` as the origin reads it: its length
/// and target; `None` while incomplete.
#[allow(clippy::result_unit_err)]
fn origin_parse(buf: &[u8]) -> Option<Result<(usize, String), ()>> {
    let head_end = find(buf, b"\r\n\r\n")? + 4;
    let head = &buf[..head_end - 4];
    let mut lines = head.split_crlf();
    let line = String::from_utf8_lossy(lines.next()?).into_owned();
    let parts: Vec<&str> = line.split(' ').collect();
    let [_method, target, version] = parts[..] else {
        return Some(Err(()));
    };
    if !version.starts_with("HTTP/1.") {
        return Some(Err(()));
    }
    let mut length: Option<usize> = None;
    let mut chunked = false;
    for line in lines {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            return Some(Err(()));
        };
        let name = String::from_utf8_lossy(&line[..colon]).to_ascii_lowercase();
        let value = String::from_utf8_lossy(&line[colon + 1..])
            .trim_matches([' ', '\t'])
            .to_owned();
        match name.as_str() {
            "content-length" if length.is_none() => match value.parse() {
                Ok(n) => length = Some(n),
                Err(_) => return Some(Err(())),
            },
            "transfer-encoding" => {
                let last = value.rsplit(',').next().unwrap_or("").trim();
                chunked = last.eq_ignore_ascii_case("chunked");
            }
            _ => {}
        }
    }
    let end = if chunked {
        match chunked_end(buf, head_end)? {
            Ok(end) => end,
            Err(()) => return Some(Err(())),
        }
    } else {
        let end = head_end + length.unwrap_or(0);
        if buf.len() < end {
            return None;
        }
        end
    };
    Some(Ok((end, target.to_owned())))
}

/// Where a chunked body starting at `at` ends, as the origin reads it.
fn chunked_end(buf: &[u8], mut at: usize) -> Option<Result<usize, ()>> {
    loop {
        let line = find(&buf[at..], b"\r\n")?;
        let text = String::from_utf8_lossy(&buf[at..at + line]).into_owned();
        let Ok(size) = usize::from_str_radix(text.split(';').next().unwrap_or("").trim(), 16)
        else {
            return Some(Err(()));
        };
        at += line + 2;
        if size == 0 {
            loop {
                let line = find(&buf[at..], b"\r\n")?;
                at += line + 2;
                if line == 0 {
                    return Some(Ok(at));
                }
            }
        }
        if buf.len() < at + size + 2 {
            return None;
        }
        if &buf[at + size..at + size + 2] != b"\r\n" {
            return Some(Err(()));
        }
        at += size + 2;
    }
}

fn find(buf: &[u8], what: &[u8]) -> Option<usize> {
    buf.windows(what.len()).position(|w| w == what)
}

trait SplitCrlf {
    fn split_crlf(&self) -> std::vec::IntoIter<&[u8]>;
}

impl SplitCrlf for [u8] {
    fn split_crlf(&self) -> std::vec::IntoIter<&[u8]> {
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(i) = find(&self[start..], b"\r\n") {
            out.push(&self[start..start + i]);
            start += i + 2;
        }
        out.push(&self[start..]);
        out.into_iter()
    }
}

/// What a client saw: each response's status and body, in order.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    answers: Vec<(u16, String)>,
}

impl Seen {
    /// Statuses, with the origin's bodies: the proxy's own answers word
    /// their reasons differently on each path.
    fn gist(&self) -> Vec<(u16, &str)> {
        self.answers
            .iter()
            .map(|(status, body)| (*status, if *status == 200 { body.as_str() } else { "" }))
            .collect()
    }
}

/// Sends `request` on a new connection and reads responses until the
/// proxy closes or stays silent for a while.
async fn client(proxy: SocketAddr, request: &[u8]) -> Seen {
    client_head_first(proxy, request, false).await
}

/// As [`client`]; `head_first` says the first request is a `HEAD`.
async fn client_head_first(proxy: SocketAddr, request: &[u8], head_first: bool) -> Seen {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    let mut answers = Vec::new();
    let mut eof = false;
    loop {
        while let Some((end, status, body)) =
            response_at(&buf, head_first && answers.is_empty(), eof)
        {
            buf.drain(..end);
            answers.push((status, body));
        }
        if eof {
            break;
        }
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout(Duration::from_millis(800), stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            Ok(_) => eof = true,
            Err(_) => break,
        }
    }
    if !buf.is_empty() {
        answers.push((0, String::from_utf8_lossy(&buf).into_owned()));
    }
    Seen { answers }
}

/// A whole response at the start of `buf`, read as RFC 9112 section 6.3
/// says (`eof`: the sender closed); its length, status and body.
fn response_at(buf: &[u8], head: bool, eof: bool) -> Option<(usize, u16, String)> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut res = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(at) = res.parse(buf).ok()? else {
        return None;
    };
    let status = res.code.unwrap();
    let value = |name: &str| {
        res.headers
            .iter()
            .rfind(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
    };
    let chunked = value("transfer-encoding")
        .is_some_and(|v| v.rsplit(',').next().unwrap_or("").trim() == "chunked");
    if head || (100..200).contains(&status) || status == 204 || status == 304 {
        return Some((at, status, String::new()));
    }
    if chunked {
        let end = chunked_end(buf, at)?.ok()?;
        return Some((end, status, dechunk(&buf[at..end])));
    }
    if value("transfer-encoding").is_some() {
        return eof.then(|| {
            (
                buf.len(),
                status,
                String::from_utf8_lossy(&buf[at..]).into_owned(),
            )
        });
    }
    match value("content-length") {
        Some(length) => {
            let end = at + length.parse::<usize>().ok()?;
            let body = String::from_utf8_lossy(buf.get(at..end)?).into_owned();
            Some((end, status, body))
        }
        None => eof.then(|| {
            (
                buf.len(),
                status,
                String::from_utf8_lossy(&buf[at..]).into_owned(),
            )
        }),
    }
}

/// The data of a whole chunked body.
fn dechunk(mut body: &[u8]) -> String {
    let mut out = Vec::new();
    while let Some(line) = find(body, b"\r\n") {
        let text = String::from_utf8_lossy(&body[..line]).into_owned();
        let size = usize::from_str_radix(text.split(';').next().unwrap_or("").trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        out.extend_from_slice(&body[line + 2..line + 2 + size]);
        body = &body[line + 4 + size..];
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Two proxies, each with its own origin: the relay's and the full path's.
struct Pair {
    relay: (TestProxy, Origin),
    hyper: (TestProxy, Origin),
}

/// One request's fate on either path.
#[derive(Debug)]
struct Fate {
    seen: Seen,
    served: Served,
}

impl Pair {
    async fn start() -> Self {
        let (a, b) = (Origin::start().await, Origin::start().await);
        let relay = start_proxy(a.addr, EMPTY).await;
        let hyper = start_proxy(b.addr, FULL_PATH).await;
        Pair {
            relay: (relay, a),
            hyper: (hyper, b),
        }
    }

    async fn send(&self, request: &[u8]) -> (Fate, Fate) {
        let (relay, hyper) = tokio::join!(
            client(self.relay.0.addr, request),
            client(self.hyper.0.addr, request)
        );
        // The origins' records of this exchange are complete once the
        // clients have read everything.
        let relay = Fate {
            seen: relay,
            served: self.relay.1.take(),
        };
        let hyper = Fate {
            seen: hyper,
            served: self.hyper.1.take(),
        };
        (relay, hyper)
    }

    /// The relay path and the origin behind it agree on every request, no
    /// smuggled request reaches the origin, and the client's answers are
    /// hyper's path's.
    async fn check(&self, name: &str, request: &[u8]) -> Fate {
        let (relay, hyper) = self.send(request).await;
        for (path, fate) in [("relay", &relay), ("hyper", &hyper)] {
            assert_in_step(name, path, fate);
        }
        assert_eq!(
            relay.seen.gist(),
            hyper.seen.gist(),
            "{name}: the relay's answers differ from the full path's: {relay:?} {hyper:?}"
        );
        assert_eq!(
            relay.served, hyper.served,
            "{name}: the origin behind the relay served other requests"
        );
        relay
    }
}

/// The origin served exactly the requests the client got `200`s for.
fn assert_in_step(name: &str, path: &str, fate: &Fate) {
    let answered: Vec<&str> = fate
        .seen
        .answers
        .iter()
        .filter(|(status, _)| *status == 200)
        .map(|(_, body)| body.as_str())
        .collect();
    let served: Vec<&str> = fate
        .served
        .targets
        .iter()
        .map(String::as_str)
        .filter(|t| *t != "!bad")
        .collect();
    assert!(
        !served.iter().any(|t| t.contains("smuggled")),
        "{name} ({path}): a smuggled request reached the origin: {fate:?}"
    );
    assert_eq!(
        answered, served,
        "{name} ({path}): the origin and the client disagree: {fate:?}"
    );
}

/// A `POST` whose body, read by a parser that ignores its framing
/// headers, is a second request.
fn smuggling(headers: &str, body: &str) -> Vec<u8> {
    format!("POST /a HTTP/1.1\r\nHost: t\r\n{headers}\r\n{body}").into_bytes()
}

const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n";

#[tokio::test]
async fn request_framing_headers_that_parsers_read_differently_never_desync() {
    let pair = Pair::start().await;
    let n = SMUGGLED.len();
    let chunk = format!("{n:x}\r\n{SMUGGLED}\r\n0\r\n\r\n");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "CL then TE",
            smuggling(
                &format!("Content-Length: {n}\r\nTransfer-Encoding: chunked\r\n"),
                &format!("0\r\n\r\n{SMUGGLED}"),
            ),
        ),
        (
            "TE then CL",
            smuggling(
                &format!("Transfer-Encoding: chunked\r\nContent-Length: {n}\r\n"),
                &format!("0\r\n\r\n{SMUGGLED}"),
            ),
        ),
        (
            "two equal CL",
            smuggling(
                &format!("Content-Length: {n}\r\nContent-Length: {n}\r\n"),
                SMUGGLED,
            ),
        ),
        (
            "two different CL",
            smuggling(
                &format!("Content-Length: 0\r\nContent-Length: {n}\r\n"),
                SMUGGLED,
            ),
        ),
        (
            "CL +",
            smuggling(&format!("Content-Length: +{n}\r\n"), SMUGGLED),
        ),
        (
            "CL leading space",
            smuggling(&format!("Content-Length:  {n}\r\n"), SMUGGLED),
        ),
        (
            "CL trailing space",
            smuggling(&format!("Content-Length: {n} \r\n"), SMUGGLED),
        ),
        (
            "CL hex",
            smuggling(&format!("Content-Length: 0x{n:x}\r\n"), SMUGGLED),
        ),
        (
            "CL u64 overflow",
            smuggling("Content-Length: 18446744073709551616\r\n", SMUGGLED),
        ),
        (
            "CL past 2^53",
            smuggling("Content-Length: 9007199254740993\r\n", SMUGGLED),
        ),
        (
            "CL list",
            smuggling(&format!("Content-Length: {n}, {n}\r\n"), SMUGGLED),
        ),
        (
            "TE chunked, chunked",
            smuggling("Transfer-Encoding: chunked, chunked\r\n", &chunk),
        ),
        (
            "TE gzip, chunked",
            smuggling("Transfer-Encoding: gzip, chunked\r\n", &chunk),
        ),
        (
            "TE chunked, gzip",
            smuggling("Transfer-Encoding: chunked, gzip\r\n", &chunk),
        ),
        (
            "TE xchunked",
            smuggling("Transfer-Encoding: xchunked\r\n", &chunk),
        ),
        (
            "TE Chunked",
            smuggling("Transfer-Encoding: Chunked\r\n", &chunk),
        ),
        (
            "TE over two lines",
            smuggling(
                "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
                &chunk,
            ),
        ),
        (
            "TE chunked twice",
            smuggling(
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                &chunk,
            ),
        ),
        (
            "TE obs-fold",
            smuggling("Transfer-Encoding:\r\n chunked\r\n", &chunk),
        ),
        (
            "CL obs-fold",
            smuggling(&format!("X: y\r\n Content-Length: {n}\r\n"), SMUGGLED),
        ),
        (
            "bare LF before CL",
            smuggling(&format!("X: y\nContent-Length: {n}\r\n"), SMUGGLED),
        ),
        (
            "bare LF before TE",
            smuggling("X: y\nTransfer-Encoding: chunked\r\n", &chunk),
        ),
        (
            "bare LF line ends",
            format!("POST /a HTTP/1.1\nHost: t\nContent-Length: {n}\n\n{SMUGGLED}").into_bytes(),
        ),
        (
            "NUL in a value",
            smuggling(&format!("X: a\0b\r\nContent-Length: {n}\r\n"), SMUGGLED),
        ),
        (
            "CR in a value",
            smuggling(&format!("X: a\rContent-Length: {n}\r\n"), SMUGGLED),
        ),
        (
            "space before colon",
            smuggling(&format!("Content-Length : {n}\r\n"), SMUGGLED),
        ),
        (
            "tab before colon",
            smuggling("Transfer-Encoding\t: chunked\r\n", &chunk),
        ),
        (
            "empty header name",
            smuggling(&format!(": x\r\nContent-Length: {n}\r\n"), SMUGGLED),
        ),
        (
            "TE with vertical tab",
            smuggling("Transfer-Encoding: \x0bchunked\r\n", &chunk),
        ),
    ];
    for (name, request) in &cases {
        pair.check(name, request).await;
    }
    // Every case has a body: hyper had them all (the relay carries
    // bodiless requests only), and `relay/head.rs`'s unit tests show the
    // relay refusing them on its own.
    assert_eq!(pair.relay.0.metric(RELAYED).await, 0.0);
}

/// A chunked `POST /a` with `body` as its chunked body (or what passes
/// for one), then a plain `GET /b` on the same connection.
fn chunked_then_b(body: &str) -> Vec<u8> {
    format!(
        "POST /a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n{body}\
         GET /b HTTP/1.1\r\nHost: t\r\n\r\n"
    )
    .into_bytes()
}

#[tokio::test]
async fn chunked_bodies_that_parsers_read_differently_never_desync() {
    let pair = Pair::start().await;
    let n = SMUGGLED.len();
    let long_ext = format!("5;{}\r\nhello\r\n0\r\n\r\n", "x".repeat(5000));
    let long_trailer = format!("5\r\nhello\r\n0\r\nx-t: {}\r\n\r\n", "x".repeat(5000));
    let cases: Vec<(&str, Vec<u8>)> =
        vec![
        ("plain", chunked_then_b("5\r\nhello\r\n0\r\n\r\n")),
        ("leading zeros", chunked_then_b("0005\r\nhello\r\n000\r\n\r\n")),
        ("extension", chunked_then_b("5;ext=1\r\nhello\r\n0;e=\"q\"\r\n\r\n")),
        (
            "size past u64",
            chunked_then_b(&format!("1{:0>16x}\r\n{SMUGGLED}\r\n0\r\n\r\n", n)),
        ),
        ("negative size", chunked_then_b(&format!("-{n:x}\r\n{SMUGGLED}\r\n0\r\n\r\n"))),
        ("0x size", chunked_then_b(&format!("0x{n:x}\r\n{SMUGGLED}\r\n0\r\n\r\n"))),
        ("hex-invalid size", chunked_then_b(&format!("{n:x}g\r\n{SMUGGLED}\r\n0\r\n\r\n"))),
        ("space before size", chunked_then_b(&format!(" {n:x}\r\n{SMUGGLED}\r\n0\r\n\r\n"))),
        ("space after size", chunked_then_b(&format!("{n:x} \r\n{SMUGGLED}\r\n0\r\n\r\n"))),
        ("bare LF after size", chunked_then_b(&format!("{n:x}\n{SMUGGLED}\r\n0\r\n\r\n"))),
        (
            "no CRLF after data",
            chunked_then_b(&format!("2\r\nhi0\r\n\r\n{SMUGGLED}")),
        ),
        (
            "data longer than its size",
            chunked_then_b(&format!("2\r\nhi{SMUGGLED}\r\n0\r\n\r\n")),
        ),
        ("trailers", chunked_then_b("5\r\nhello\r\n0\r\nx-sum: 5\r\nx-b: 2\r\n\r\n")),
        (
            "last chunk without the final CRLF",
            format!(
                "POST /a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n{SMUGGLED}"
            )
            .into_bytes(),
        ),
        ("trailer without a colon", chunked_then_b("0\r\nnot a field\r\n\r\n")),
        ("trailer line past the bound", chunked_then_b(&long_trailer)),
    ];
    for (name, request) in &cases {
        pair.check(name, request).await;
    }
    // Chunked request bodies are hyper's (the relay carries bodiless
    // requests only): these are answered as hyper answers them, in step.
    let zeros = format!("{:0>20x}\r\n{SMUGGLED}\r\n0\r\n\r\n", n);
    pair.check("leading zeros past 16 digits", &chunked_then_b(&zeros))
        .await;
    let lf = chunked_then_b("0\r\nx-t: 1\n\r\n");
    pair.check("trailer with bare LF", &lf).await;
    pair.check("chunk-size line past the bound", &chunked_then_b(&long_ext))
        .await;
    assert_eq!(pair.relay.0.metric(RELAYED).await, 0.0);
}

/// A response the proxy must never pass on as an answer: it is what a
/// misframed upstream stream reads as the next response.
const SMUGGLED_RESPONSE: &str = "HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nsmuggled";

/// An origin answering `/1` with `answer` (and, `late` after it, with
/// `extra`), and any other target with the target, as [`Origin`] does.
async fn scripted_origin(answer: Vec<u8>, late: Duration, extra: Vec<u8>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let script = Arc::new((answer, late, extra));
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let script = script.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    while let Some(Ok((end, target))) = origin_parse(&buf) {
                        buf.drain(..end);
                        let (answer, late, extra) = &*script;
                        if target == "/1" {
                            let _ = stream.write_all(answer).await;
                            if !extra.is_empty() {
                                tokio::time::sleep(*late).await;
                                let _ = stream.write_all(extra).await;
                            }
                        } else {
                            let answer = format!(
                                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{target}",
                                target.len()
                            );
                            let _ = stream.write_all(answer.as_bytes()).await;
                        }
                    }
                    let mut chunk = [0u8; 16 * 1024];
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    addr
}

/// What clients of a proxy in front of `origin` get for `first` (a
/// request for `/1`), then `GET /2` on the same connection, then `GET /3`
/// on another: none of them may be an answer the origin gave to another
/// request.
async fn answers_after(proxy: &TestProxy, first: &str) -> Vec<(u16, String)> {
    let head = first.starts_with("HEAD");
    let mut seen = client_head_first(proxy.addr, first.as_bytes(), head)
        .await
        .answers;
    let second = format!("{first}GET /2 HTTP/1.1\r\nHost: t\r\n\r\n");
    seen.extend(
        client_head_first(proxy.addr, second.as_bytes(), head)
            .await
            .answers,
    );
    let third = b"GET /3 HTTP/1.1\r\nHost: t\r\n\r\n";
    seen.extend(client(proxy.addr, third).await.answers);
    seen
}

const GET_1: &str = "GET /1 HTTP/1.1\r\nHost: t\r\n\r\n";
const HEAD_1: &str = "HEAD /1 HTTP/1.1\r\nHost: t\r\n\r\n";

#[tokio::test]
async fn responses_that_parsers_read_differently_never_answer_another_request() {
    let now = Duration::ZERO;
    let late = Duration::from_millis(100);
    let s = SMUGGLED_RESPONSE;
    let cases: Vec<(&str, &str, String, Duration, &str)> = vec![
        (
            "CL then TE",
            GET_1,
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{s}"
            ),
            now,
            "",
        ),
        (
            "TE then CL",
            GET_1,
            format!(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n3\r\none\r\n0\r\n\r\n{s}"
            ),
            now,
            "",
        ),
        (
            "two different CL",
            GET_1,
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nContent-Length: {}\r\n\r\n{s}",
                s.len()
            ),
            now,
            "",
        ),
        (
            "CL +",
            GET_1,
            format!("HTTP/1.1 200 OK\r\nContent-Length: +0\r\n\r\n{s}"),
            now,
            "",
        ),
        (
            "CL past u64",
            GET_1,
            format!("HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551617\r\n\r\n{s}"),
            now,
            "",
        ),
        (
            "TE chunked, gzip",
            GET_1,
            format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n{s}"),
            now,
            "",
        ),
        (
            "bad chunk size",
            GET_1,
            format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n{s}"),
            now,
            "",
        ),
        (
            "bare LF before CL",
            GET_1,
            format!(
                "HTTP/1.1 200 OK\r\nX: y\nContent-Length: {}\r\n\r\n{s}",
                s.len()
            ),
            now,
            "",
        ),
        (
            "obs-fold",
            GET_1,
            format!(
                "HTTP/1.1 200 OK\r\nX: y\r\n Content-Length: {}\r\n\r\n{s}",
                s.len()
            ),
            now,
            "",
        ),
        (
            "HEAD answered with a body",
            HEAD_1,
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{s}", s.len()),
            now,
            "",
        ),
        (
            "204 with a length, its body late",
            GET_1,
            format!(
                "HTTP/1.1 204 No Content\r\nContent-Length: {}\r\n\r\n",
                s.len()
            ),
            late,
            s,
        ),
        (
            "204 with a length and a body",
            GET_1,
            format!(
                "HTTP/1.1 204 No Content\r\nContent-Length: {}\r\n\r\n{s}",
                s.len()
            ),
            now,
            "",
        ),
        (
            "status 099",
            GET_1,
            format!("HTTP/1.1 099 Odd\r\nContent-Length: {}\r\n\r\n{s}", s.len()),
            now,
            "",
        ),
        (
            "status 600",
            GET_1,
            format!("HTTP/1.1 600 Odd\r\nContent-Length: {}\r\n\r\n{s}", s.len()),
            now,
            "",
        ),
        (
            "1xx flood",
            GET_1,
            format!(
                "{}HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                "HTTP/1.1 100 Continue\r\n\r\n".repeat(3000)
            ),
            now,
            "",
        ),
        (
            "HTTP/1.0 chunked",
            GET_1,
            format!("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{s}"),
            now,
            "",
        ),
        (
            "a second response, unasked",
            GET_1,
            format!("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok{s}"),
            now,
            "",
        ),
    ];
    for (name, first, answer, after, extra) in cases {
        let a = scripted_origin(answer.clone().into_bytes(), after, extra.into()).await;
        let b = scripted_origin(answer.into_bytes(), after, extra.into()).await;
        let relay = start_proxy_with(a, EMPTY, &[("FAULTLINE_WORKERS", "1")]).await;
        let hyper = start_proxy_with(b, FULL_PATH, &[("FAULTLINE_WORKERS", "1")]).await;
        let (relayed, full) =
            tokio::join!(answers_after(&relay, first), answers_after(&hyper, first));
        // Bytes that come late after a whole response are the relay's
        // concern here: the full path's pool (hyper's client) reuses the
        // connection as soon as the response ends, as it always has.
        let paths = if extra.is_empty() {
            vec![("relay", &relayed), ("hyper", &full)]
        } else {
            vec![("relay", &relayed)]
        };
        for (path, seen) in paths {
            assert!(
                !seen.iter().any(|(_, body)| body == "smuggled"),
                "{name} ({path}): a client got the answer to another request: {seen:?}"
            );
            assert!(
                seen.iter().any(|a| *a == (200, "/3".to_owned())),
                "{name} ({path}): the next client was not served: {seen:?}"
            );
        }
        if name == "status 099" {
            // hyper refuses it, and so does the relay.
            assert_eq!(relayed[0].0, 502, "{relayed:?}");
        }
        let short = |seen: &Vec<(u16, String)>| {
            seen.iter()
                .filter(|(status, _)| *status != 100)
                .map(|(status, body)| format!("{status} {:.40}", body))
                .collect::<Vec<_>>()
        };
        eprintln!(
            "{name}\n  relay {:?}\n  hyper {:?}",
            short(&relayed),
            short(&full)
        );
    }
}

#[tokio::test]
async fn a_length_sent_with_the_chunked_coding_never_reaches_the_client() {
    let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n3\r\none\r\n0\r\n\r\n";
    let origin = scripted_origin(answer.to_vec(), Duration::ZERO, Vec::new()).await;
    let proxy = start_proxy(origin, EMPTY).await;
    let (out, _) = raw_exchange(proxy.addr, GET_1.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(
        String::from_utf8_lossy(&out),
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\none\r\n0\r\n\r\n"
    );
    assert_eq!(proxy.metric(RELAYED).await, 1.0);
}

fn get(target: &str) -> String {
    format!("GET {target} HTTP/1.1\r\nHost: t\r\n\r\n")
}

#[tokio::test]
async fn pipelined_requests_across_the_handover_to_hyper_stay_in_step() {
    let pair = Pair::start().await;
    let n = SMUGGLED.len();
    let absolute = "GET http://t/2 HTTP/1.1\r\nHost: t\r\n\r\n";
    let hop = "GET /2 HTTP/1.1\r\nHost: t\r\nTE: trailers\r\n\r\n";
    let post = format!("POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: {n}\r\n\r\n{SMUGGLED}");
    let chunked = format!(
        "POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n{n:x}\r\n{SMUGGLED}\r\n0\r\n\r\n"
    );
    let cases: Vec<(&str, String, usize)> = vec![
        (
            "relayed then hyper's",
            format!("{}{absolute}{}", get("/1"), get("/3")),
            3,
        ),
        (
            "hyper's then relayed",
            format!("{hop}{}{}", get("/3"), get("/4")),
            3,
        ),
        (
            "a body that reads as a request",
            format!("{post}{}", get("/3")),
            2,
        ),
        (
            "a chunk that reads as a request",
            format!("{chunked}{}", get("/3")),
            2,
        ),
        (
            "a body then hyper's",
            format!("{post}{absolute}{}", get("/3")),
            3,
        ),
        (
            "hyper's then a body",
            format!("{hop}{post}{}", get("/3")),
            3,
        ),
        (
            "a chunked body then hyper's",
            format!("{chunked}{hop}{}", get("/3")),
            3,
        ),
    ];
    for (name, request, count) in &cases {
        let fate = pair.check(name, request.as_bytes()).await;
        assert_eq!(
            fate.seen.answers.len(),
            *count,
            "{name}: not every request was answered: {fate:?}"
        );
    }
    let relayed = pair.relay.0.metric(RELAYED).await;
    // Requests with a body are hyper's, which keeps the connection until it
    // idles: only a case that starts bodiless is the relay's.
    assert!(relayed >= 1.0, "{relayed}");
}

#[tokio::test]
async fn odd_hosts_methods_targets_and_versions_get_hypers_answer() {
    let pair = Pair::start().await;
    let cases: Vec<(&str, String)> = vec![
        ("no Host", "GET /a HTTP/1.1\r\n\r\n".to_owned()),
        (
            "two Hosts",
            "GET /a HTTP/1.1\r\nHost: t\r\nHost: u\r\n\r\n".to_owned(),
        ),
        (
            "Host with a space",
            "GET /a HTTP/1.1\r\nHost: t u\r\n\r\n".to_owned(),
        ),
        (
            "Host with @",
            "GET /a HTTP/1.1\r\nHost: u@t\r\n\r\n".to_owned(),
        ),
        ("empty Host", "GET /a HTTP/1.1\r\nHost:\r\n\r\n".to_owned()),
        (
            "absolute form, another Host",
            "GET http://u/a HTTP/1.1\r\nHost: t\r\n\r\n".to_owned(),
        ),
        (
            "lowercase method",
            "get /a HTTP/1.1\r\nHost: t\r\n\r\n".to_owned(),
        ),
        (
            "lowercase head",
            "head /a HTTP/1.1\r\nHost: t\r\n\r\n".to_owned(),
        ),
        (
            "target with a space",
            "GET /a b HTTP/1.1\r\nHost: t\r\n\r\n".to_owned(),
        ),
        (
            "OPTIONS *",
            "OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n".to_owned(),
        ),
        (
            "fragment",
            "GET /a#f HTTP/1.1\r\nHost: t\r\n\r\n".to_owned(),
        ),
        (
            "control byte in target",
            "GET /a\x01b HTTP/1.1\r\nHost: t\r\n\r\n".to_owned(),
        ),
        (
            "DEL in target",
            "GET /a\x7fb HTTP/1.1\r\nHost: t\r\n\r\n".to_owned(),
        ),
        ("HTTP/1.0", "GET /a HTTP/1.0\r\nHost: t\r\n\r\n".to_owned()),
        ("HTTP/0.9", "GET /a\r\n\r\n".to_owned()),
        (
            "HTTP/2.0 line",
            "GET /a HTTP/2.0\r\nHost: t\r\n\r\n".to_owned(),
        ),
        (
            "HTTP/1.10",
            "GET /a HTTP/1.10\r\nHost: t\r\n\r\n".to_owned(),
        ),
        (
            "two spaces",
            "GET  /a HTTP/1.1\r\nHost: t\r\n\r\n".to_owned(),
        ),
        (
            "tab separator",
            "GET\t/a HTTP/1.1\r\nHost: t\r\n\r\n".to_owned(),
        ),
        (
            "trailing space",
            "GET /a HTTP/1.1 \r\nHost: t\r\n\r\n".to_owned(),
        ),
        (
            "CR in the line",
            "GET /a\rHTTP/1.1\r\nHost: t\r\n\r\n".to_owned(),
        ),
        (
            "leading CRLF",
            "\r\nGET /a HTTP/1.1\r\nHost: t\r\n\r\n".to_owned(),
        ),
        (
            "leading LF",
            "\nGET /a HTTP/1.1\r\nHost: t\r\n\r\n".to_owned(),
        ),
        (
            "obs-text value",
            "GET /a HTTP/1.1\r\nHost: t\r\nX: \u{e9}\r\n\r\n".to_owned(),
        ),
        (
            "obs-text Host",
            "GET /a HTTP/1.1\r\nHost: \u{e9}\r\n\r\n".to_owned(),
        ),
        (
            "Host with a tab",
            "GET /a HTTP/1.1\r\nHost:\tt\t\r\n\r\n".to_owned(),
        ),
        (
            "Host with a port",
            "GET /a HTTP/1.1\r\nHost: t:80\r\n\r\n".to_owned(),
        ),
        (
            "Host with a bad port",
            "GET /a HTTP/1.1\r\nHost: t:8x\r\n\r\n".to_owned(),
        ),
    ];
    for (name, request) in &cases {
        pair.check(name, format!("{request}{}", get("/next")).as_bytes())
            .await;
    }
}

/// Trickles a head that never ends, a byte a second, under either policy:
/// the connection is cut at the head's 30 s deadline, however busy the
/// client looks, and the origin sees nothing.
#[tokio::test]
async fn a_head_trickled_a_byte_a_second_is_cut_at_the_deadline() {
    let pair = Pair::start().await;
    let trickle = |proxy: SocketAddr| async move {
        let started = std::time::Instant::now();
        let mut stream = TcpStream::connect(proxy).await.unwrap();
        stream
            .write_all(b"GET /a HTTP/1.1\r\nHost: t\r\nx-slow: ")
            .await
            .unwrap();
        let mut byte = [0u8; 1];
        loop {
            tokio::select! {
                read = stream.read(&mut byte) => {
                    assert!(matches!(read, Ok(0) | Err(_)), "an answer to half a head");
                    return started.elapsed();
                }
                () = tokio::time::sleep(Duration::from_secs(1)) => {
                    if stream.write_all(b"a").await.is_err() {
                        return started.elapsed();
                    }
                }
            }
            assert!(started.elapsed() < Duration::from_secs(45), "never cut");
        }
    };
    let (relay, hyper) = tokio::join!(trickle(pair.relay.0.addr), trickle(pair.hyper.0.addr));
    for (path, after) in [("relay", relay), ("hyper", hyper)] {
        assert!(
            after >= Duration::from_secs(29) && after < Duration::from_secs(40),
            "{path}: cut after {after:?}"
        );
    }
    assert_eq!(pair.relay.1.take(), Served::default());
    assert_eq!(pair.hyper.1.take(), Served::default());
}

/// An upstream that reads a request and sends `reply` (nothing: it never
/// answers), then holds the connection until the proxy closes it; counts
/// the connections the proxy has closed.
async fn held_upstream(reply: &'static [u8]) -> (SocketAddr, Arc<Mutex<usize>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let closed = Arc::new(Mutex::new(0));
    let c = closed.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let c = c.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                if !reply.is_empty() {
                    let _ = stream.read(&mut buf).await;
                    let _ = stream.write_all(reply).await;
                }
                while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
                *c.lock().unwrap() += 1;
            });
        }
    });
    (addr, closed)
}

/// A client that gives up on an upstream that never answers frees what
/// its request held upstream, on the relay as on hyper's path: nothing
/// times the upstream out, so nothing else would.
#[tokio::test]
async fn a_client_giving_up_on_a_silent_upstream_frees_the_upstream_connection() {
    for (path, policy) in [("hyper", FULL_PATH), ("relay", EMPTY)] {
        let (upstream, closed) = held_upstream(b"").await;
        let proxy = start_proxy(upstream, policy).await;
        for request in [
            get("/a"),
            "POST /b HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi".to_owned(),
        ] {
            let mut client = TcpStream::connect(proxy.addr).await.unwrap();
            client.write_all(request.as_bytes()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
            drop(client);
        }
        eventually(
            &format!("{path}: the upstream connections closed"),
            Duration::from_secs(5),
            || async { *closed.lock().unwrap() == 2 },
        )
        .await;
    }
}

#[tokio::test]
async fn a_client_giving_up_on_a_stalled_body_frees_the_upstream_connection() {
    for (path, policy) in [("hyper", FULL_PATH), ("relay", EMPTY)] {
        // A head and part of its body, then a stall.
        let (upstream, closed) =
            held_upstream(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nten bytes.").await;
        let proxy = start_proxy(upstream, policy).await;
        let mut client = TcpStream::connect(proxy.addr).await.unwrap();
        client.write_all(get("/a").as_bytes()).await.unwrap();
        let head = tokio::time::timeout(Duration::from_secs(5), read_head(&mut client))
            .await
            .unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        drop(client);
        eventually(
            &format!("{path}: the upstream connection closed"),
            Duration::from_secs(5),
            || async { *closed.lock().unwrap() == 1 },
        )
        .await;
    }
}
