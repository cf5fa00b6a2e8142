//! What the relay carries and what it leaves to hyper, and where bodies
//! end, read off raw bytes.
use super::framing::{Chunked, Framing, Malformed};
use super::head::{self, BadResponse, Parsed};
use super::respond;
use crate::traffic::effects::HttpFault;

/// How the relay reads `request`: `Some(head length)` when it carries it.
fn relayed(request: &str) -> Option<usize> {
    match head::request(request.as_bytes(), |_| Some(())) {
        Parsed::Done(head) => {
            assert!(head.len <= request.len());
            Some(head.len)
        }
        Parsed::Refused => None,
        Parsed::Partial => panic!("partial: {request:?}"),
    }
}

fn with_headers(headers: &str) -> String {
    format!("POST /p HTTP/1.1\r\nhost: a.example\r\n{headers}\r\n")
}

#[test]
fn bodiless_requests_are_relayed_and_requests_with_a_body_are_hyper_s() {
    let plain = with_headers("");
    assert_eq!(relayed(&plain), Some(plain.len()));
    assert!(relayed(&with_headers("content-length: 0\r\n")).is_some());
    assert!(relayed(&with_headers("Content-Length: 000\r\n")).is_some());
    assert_eq!(relayed(&with_headers("Content-Length: 12\r\n")), None);
    assert_eq!(
        relayed(&with_headers("transfer-encoding: Chunked\r\n")),
        None
    );
    for connection in ["keep-alive", "close", "Keep-Alive"] {
        let request = with_headers(&format!("connection: {connection}\r\n"));
        assert!(relayed(&request).is_some(), "{connection}");
    }
    assert!(relayed("GET /a/b;c?d=%20&e=f:g@h HTTP/1.1\r\nhost: [::1]:80\r\n\r\n").is_some());
}

#[test]
fn anything_hyper_would_reframe_rewrite_or_refuse_is_left_to_it() {
    let refused = [
        // Versions and targets.
        "GET / HTTP/1.0\r\nhost: a\r\n\r\n".to_owned(),
        "GET http://a/ HTTP/1.1\r\nhost: a\r\n\r\n".to_owned(),
        "GET * HTTP/1.1\r\nhost: a\r\n\r\n".to_owned(),
        "GET /a#frag HTTP/1.1\r\nhost: a\r\n\r\n".to_owned(),
        "GET /{x} HTTP/1.1\r\nhost: a\r\n\r\n".to_owned(),
        "CONNECT a:443 HTTP/1.1\r\nhost: a:443\r\n\r\n".to_owned(),
        // Host: missing, repeated, not a host.
        "GET / HTTP/1.1\r\n\r\n".to_owned(),
        "GET / HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n".to_owned(),
        "GET / HTTP/1.1\r\nhost: user@a\r\n\r\n".to_owned(),
        // Framing.
        with_headers("content-length: 3\r\ntransfer-encoding: chunked\r\n"),
        with_headers("content-length: 3\r\ncontent-length: 3\r\n"),
        with_headers("content-length: +3\r\n"),
        with_headers("content-length: 3, 3\r\n"),
        with_headers("content-length: 99999999999999999999\r\n"),
        with_headers("transfer-encoding: gzip, chunked\r\n"),
        with_headers("transfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n"),
        // What hyper acts on or strips.
        with_headers("upgrade: websocket\r\nconnection: upgrade\r\n"),
        with_headers("expect: 100-continue\r\n"),
        with_headers("te: trailers\r\n"),
        with_headers("trailer: x\r\n"),
        with_headers("keep-alive: timeout=5\r\n"),
        with_headers("proxy-connection: keep-alive\r\n"),
        with_headers("connection: keep-alive, x-hop\r\n"),
        with_headers("connection: close\r\nconnection: close\r\n"),
        with_headers("content-type: application/grpc\r\n"),
        // Syntax httparse refuses: obs-fold, a space before the colon.
        with_headers("x-a: 1\r\n  folded\r\n"),
        with_headers("x-a : 1\r\n"),
    ];
    for request in refused {
        assert_eq!(relayed(&request), None, "{request:?}");
    }
    let many: String = (0..=head::MAX_HEADERS)
        .map(|i| format!("x-{i}: v\r\n"))
        .collect();
    assert_eq!(relayed(&with_headers(&many)), None);
}

#[test]
fn a_partial_head_waits_and_the_decision_can_refuse() {
    let partial = head::request(b"GET / HTTP/1.1\r\nhost: a\r\n", |_| Some(()));
    assert!(matches!(partial, Parsed::Partial));
    let request = b"GET /q?x=1 HTTP/1.1\r\nhost: a:8\r\nx-k: v\r\n\r\nGET /next";
    let mut seen = None;
    let parsed = head::request(request, |req| {
        seen = Some((
            req.method.to_owned(),
            req.target.to_owned(),
            req.host.to_owned(),
            req.headers.len(),
        ));
        None::<()>
    });
    assert!(matches!(parsed, Parsed::Refused));
    assert_eq!(seen, Some(("GET".into(), "/q?x=1".into(), "a:8".into(), 2)));
    let Parsed::Done(head) = head::request(request, |_| Some(())) else {
        panic!("not relayed");
    };
    // Pipelined bytes are not part of the head.
    assert_eq!(head.len, request.len() - "GET /next".len());
    assert!(head.idempotent && !head.head_method && !head.close);
}

/// Scans `body` in pieces of `step` bytes, as reads would deliver it:
/// how many bytes the body took, once it ended.
fn scan_in_pieces(
    framing: &mut Framing,
    body: &[u8],
    step: usize,
) -> Result<Option<usize>, Malformed> {
    let mut pending = Vec::new();
    let mut taken = 0;
    for piece in body.chunks(step) {
        pending.extend_from_slice(piece);
        let (n, done) = framing.scan(&pending)?;
        pending.drain(..n);
        taken += n;
        if done {
            return Ok(Some(taken));
        }
    }
    Ok(None)
}

#[test]
fn a_chunked_body_ends_after_its_trailers_however_it_is_cut() {
    let body = b"5;ext=\"q\"\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-sum: 1\r\nx-b: 2\r\n\r\n";
    let next = b"GET / HTTP/1.1\r\n";
    let mut with_next = body.to_vec();
    with_next.extend_from_slice(next);
    for step in 1..=with_next.len() {
        let mut framing = Framing::Chunked(Chunked::default());
        let taken = scan_in_pieces(&mut framing, &with_next, step).unwrap();
        assert_eq!(taken, Some(body.len()), "pieces of {step}");
    }
    let mut framing = Framing::Chunked(Chunked::default());
    assert_eq!(framing.scan(b"0\r\n\r\n"), Ok((5, true)));
}

#[test]
fn malformed_chunks_are_refused() {
    let bad: [(&[u8], Malformed); 10] = [
        (b"zz\r\nhello\r\n", Malformed::ChunkSize),
        (b" 5\r\nhello\r\n", Malformed::ChunkSize),
        (b"5\nhello\r\n", Malformed::ChunkSize),
        (b"ffffffffffffffffffff\r\n", Malformed::ChunkSize),
        (b"3\r\nabcX\r\n", Malformed::ChunkEnd),
        (b"0\r\nx: 1\n\r\n", Malformed::Trailers),
        (b"0\r\nGET / HTTP/1.1\r\n", Malformed::Trailers),
        (b"0\r\n x: folded\r\n", Malformed::Trailers),
        (b"0\r\nx : 1\r\n", Malformed::Trailers),
        (b"0\r\nx: a\x00b\r\n", Malformed::Trailers),
    ];
    for (body, error) in bad {
        let mut framing = Framing::Chunked(Chunked::default());
        assert_eq!(
            framing.scan(body),
            Err(error),
            "{:?}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn a_length_counts_down_across_reads() {
    let mut framing = Framing::Length(5);
    assert_eq!(framing.scan(b"abc"), Ok((3, false)));
    assert_eq!(framing.scan(b"deGET"), Ok((2, true)));
    assert_eq!(Framing::UntilClose.scan(b"all"), Ok((3, false)));
}

fn response(head: &str, head_request: bool) -> Result<Option<head::ResponseHead>, BadResponse> {
    head::response(head.as_bytes(), head_request)
}

#[test]
fn response_framing_follows_rfc_9112() {
    let framed = |head: &str, head_request| {
        let parsed = response(head, head_request).unwrap().unwrap();
        (parsed.body, parsed.close)
    };
    let ok = "HTTP/1.1 200 OK\r\n";
    assert_eq!(
        framed(&format!("{ok}content-length: 5\r\n\r\n"), false),
        (Framing::Length(5), false)
    );
    assert_eq!(
        framed(&format!("{ok}content-length: 5\r\n\r\n"), true),
        (Framing::Empty, false)
    );
    assert_eq!(
        framed(
            &format!("{ok}transfer-encoding: gzip, chunked\r\n\r\n"),
            false
        ),
        (Framing::Chunked(Chunked::default()), false)
    );
    // The coding wins over a length, and the connection ends after.
    assert_eq!(
        framed(
            &format!("{ok}content-length: 5\r\ntransfer-encoding: chunked\r\n\r\n"),
            false
        ),
        (Framing::Chunked(Chunked::default()), true)
    );
    assert_eq!(
        framed(&format!("{ok}transfer-encoding: gzip\r\n\r\n"), false),
        (Framing::UntilClose, true)
    );
    assert_eq!(
        framed(&format!("{ok}\r\n"), false),
        (Framing::UntilClose, true)
    );
    assert_eq!(
        framed(
            &format!("{ok}connection: x, Close\r\ncontent-length: 0\r\n\r\n"),
            false
        ),
        (Framing::Empty, true)
    );
    assert_eq!(
        framed("HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\n", false),
        (Framing::Length(2), true)
    );
    for status in ["204 No Content", "304 Not Modified", "103 Early Hints"] {
        let head = format!("HTTP/1.1 {status}\r\ncontent-length: 9\r\n\r\n");
        assert_eq!(framed(&head, false), (Framing::Empty, false), "{status}");
    }
    assert_eq!(
        response(
            &format!("{ok}content-length: 1\r\ncontent-length: 2\r\n\r\n"),
            false
        )
        .err(),
        Some(BadResponse::Length)
    );
    assert!(
        response("HTTP/1.1 200 OK\r\ncontent-le", false)
            .unwrap()
            .is_none()
    );
    assert!(response("NOT HTTP\r\n\r\n", false).is_err());
    assert_eq!(
        response("HTTP/1.1 099 Odd\r\n\r\n", false).err(),
        Some(BadResponse::Status(99))
    );
}

#[test]
fn a_bare_lf_in_a_head_is_never_passed_on() {
    assert!(relayed("GET / HTTP/1.1\r\nhost: a\r\nx: y\ncontent-length: 5\r\n\r\n").is_none());
    assert!(relayed("GET / HTTP/1.1\nhost: a\n\n").is_none());
    assert_eq!(
        response("HTTP/1.1 200 OK\r\nx: y\ncontent-length: 5\r\n\r\n", false).err(),
        Some(BadResponse::BareLf)
    );
}

#[test]
fn a_length_sent_with_the_chunked_coding_is_dropped_from_the_response() {
    let head = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nx: 1\r\nTransfer-Encoding: chunked\r\ncontent-length: 5\r\n\r\n";
    let parsed = response(head, false).unwrap().unwrap();
    assert!(parsed.drop_length);
    assert_eq!(
        String::from_utf8(head::without_length(head.as_bytes())).unwrap(),
        "HTTP/1.1 200 OK\r\nx: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    let plain = response("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", false);
    assert!(!plain.unwrap().unwrap().drop_length);
}

#[test]
fn a_204_announcing_a_body_keeps_the_connection_from_reuse() {
    let announced = |head: &str, head_request| {
        response(head, head_request)
            .unwrap()
            .unwrap()
            .announced_body
    };
    let no_content = "HTTP/1.1 204 No Content\r\n";
    assert!(announced(
        &format!("{no_content}content-length: 5\r\n\r\n"),
        false
    ));
    assert!(announced(
        &format!("{no_content}transfer-encoding: chunked\r\n\r\n"),
        false
    ));
    assert!(!announced(
        &format!("{no_content}content-length: 0\r\n\r\n"),
        false
    ));
    assert!(!announced(&format!("{no_content}\r\n"), false));
    // A HEAD's or a 304's length is the body a GET would get.
    assert!(!announced(
        "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n",
        true
    ));
    assert!(!announced(
        "HTTP/1.1 304 Not Modified\r\ncontent-length: 5\r\n\r\n",
        false
    ));
}

#[test]
fn empty_lines_before_a_request_line_are_counted_whole() {
    assert_eq!(head::empty_lines(b"\r\n\r\nGET"), 4);
    assert_eq!(head::empty_lines(b"\r\n\r"), 2);
    assert_eq!(head::empty_lines(b"\nGET"), 0);
    assert_eq!(head::empty_lines(b"GET / HTTP/1.1\r\n"), 0);
}

/// What a response-stage `fault` makes of the upstream's response `head`.
fn answered(fault: &HttpFault, head: &str, head_method: bool) -> respond::Answer {
    let parsed = head::response(head.as_bytes(), head_method)
        .unwrap()
        .unwrap();
    let upstream = respond::Upstream {
        status: parsed.status,
        fields: head::response_fields(head.as_bytes()),
        framing: &parsed.body,
        close: parsed.close,
    };
    let asked = respond::Asked {
        head_method,
        close: false,
    };
    respond::answer(fault, upstream, asked)
}

fn written(answer: respond::Answer) -> String {
    match answer {
        respond::Answer::Head(bytes) | respond::Answer::Instead(bytes) => {
            String::from_utf8(bytes).unwrap()
        }
        other => panic!("nothing written: {other:?}"),
    }
}

fn rewrite(status: Option<u16>, set: &[(&'static str, &'static str)]) -> HttpFault {
    let mut set_headers = http::HeaderMap::new();
    for (name, value) in set {
        set_headers.insert(*name, http::HeaderValue::from_static(value));
    }
    HttpFault::Rewrite(std::sync::Arc::new(faultline_policy::Rewrite {
        status: status.map(|s| http::StatusCode::from_u16(s).unwrap()),
        replace_headers: None,
        set_headers,
        remove_headers: Box::new([]),
        body: None,
    }))
}

#[test]
fn a_rewritten_head_keeps_the_framing_of_the_body_that_follows() {
    // Chunked with a length: the length goes, as on a relayed head.
    let chunked =
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\nX-A: 1\r\n\r\n";
    let head = written(answered(
        &rewrite(Some(201), &[("x-b", "2")]),
        chunked,
        false,
    ));
    assert!(head.starts_with("HTTP/1.1 201 Created\r\n"), "{head}");
    assert!(
        head.contains("\r\ntransfer-encoding: chunked\r\n"),
        "{head}"
    );
    assert!(!head.contains("content-length"), "{head}");
    assert!(
        head.contains("\r\nx-a: 1\r\n") && head.contains("\r\nx-b: 2\r\n"),
        "{head}"
    );
    // Such a message ends its connection, and says so.
    assert!(head.contains("\r\nconnection: close\r\n"), "{head}");
    assert!(
        head.ends_with("\r\n\r\n") && head.contains("\r\ndate: "),
        "{head}"
    );
    // A body that runs until the upstream closes: the client must know.
    let until_close = written(answered(
        &rewrite(None, &[]),
        "HTTP/1.0 200 OK\r\n\r\n",
        false,
    ));
    assert!(
        until_close.contains("\r\nconnection: close\r\n"),
        "{until_close}"
    );
    // A length passes as it was, with a HEAD's too.
    let length = "HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n";
    for head_method in [false, true] {
        let head = written(answered(&rewrite(None, &[("x", "y")]), length, head_method));
        assert!(head.contains("\r\ncontent-length: 12\r\n"), "{head}");
        assert!(!head.contains("connection"), "{head}");
    }
}

#[test]
fn an_answer_instead_has_the_length_of_its_body_and_no_body_to_head() {
    let fault = HttpFault::Respond {
        status: http::StatusCode::SERVICE_UNAVAILABLE,
        headers: http::HeaderMap::new(),
        body: bytes::Bytes::from_static(b"abc"),
    };
    let upstream = "HTTP/1.1 200 OK\r\ncontent-length: 99\r\n\r\n";
    let get = written(answered(&fault, upstream, false));
    assert!(
        get.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{get}"
    );
    assert!(get.ends_with("\r\ncontent-length: 3\r\n\r\nabc"), "{get}");
    let head = written(answered(&fault, upstream, true));
    assert!(head.ends_with("\r\ncontent-length: 3\r\n\r\n"), "{head}");
    // A status without content: no length, no body, and the upstream's
    // body (which would follow) is not relayed.
    let emptied = answered(&rewrite(Some(304), &[]), upstream, false);
    assert!(matches!(emptied, respond::Answer::Instead(_)));
    let emptied = written(emptied);
    assert!(
        emptied.starts_with("HTTP/1.1 304 Not Modified\r\n"),
        "{emptied}"
    );
    assert!(!emptied.contains("content-length") && emptied.ends_with("\r\n\r\n"));
    assert_eq!(
        answered(&HttpFault::Reset, upstream, false),
        respond::Answer::Reset
    );
}

#[test]
fn targets_and_hosts_take_exactly_the_bytes_of_rfc_3986() {
    let in_target = |b: u8| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b);
    let in_host = |b: u8| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=:[]".contains(&b);
    for b in 0..=255u8 {
        // httparse refuses some of these in a target: those never reach
        // the relay's own check, and are left to hyper either way.
        let target = [b'/', b];
        let request = format!(
            "GET {} HTTP/1.1\r\nhost: a\r\n\r\n",
            String::from_utf8_lossy(&target)
        );
        let relayed_target = b.is_ascii() && relayed(&request).is_some();
        assert!(!relayed_target || in_target(b), "target byte {b:#04x}");
        if b.is_ascii_graphic() {
            assert_eq!(relayed_target, in_target(b), "target byte {b:#04x}");
        }
        assert_eq!(
            crate::traffic::http::request::is_host(&[b'a', b, b'b']),
            in_host(b),
            "host byte {b:#04x}"
        );
    }
}
