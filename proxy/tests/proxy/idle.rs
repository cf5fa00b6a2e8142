//! 10,000 idle connections held by the real `faultline-proxy` binary.
//!
//! The proxy runs as a child process (standalone mode, in front of the
//! hyper upstream of `support`), so it and this test each have their own
//! open-file limit. It starts with a soft limit of 1024, which it must
//! raise itself to hold the connections. Half of the connections send one
//! keep-alive request and go quiet; half never send a byte (after the
//! detection timeout the proxy treats those as raw TCP and holds an
//! upstream connection for each, so they cost two descriptors on each
//! side). While all are held, a new client is served, the gauge of active
//! connections is exact, and every held connection still works; once they
//! are dropped the gauge returns to 0 and SIGTERM exits cleanly.
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use hyper::client::conn::http1::SendRequest;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

const HELD: usize = 10_000;
const KEEP_ALIVE: usize = HELD / 2;
const SILENT: usize = HELD - KEEP_ALIVE;
/// Connections opened at once: far below the proxy's listen backlog (4096,
/// capped by net.core.somaxconn), so no SYN waits on a full queue.
const CONCURRENCY: usize = 250;
/// Descriptors each process needs besides one per held connection: the
/// upstream side of the silent ones, pooled upstream connections (up to
/// one per concurrent request), the admin and fresh clients, and the rest
/// of the test binary (other tests run at the same time).
const NEEDED: u64 = (HELD + SILENT + CONCURRENCY + 1_500) as u64;
const RAW_TCP: &str = "faultline_connections_total{direction=\"inbound\",protocol=\"tcp\"}";
/// The open-file limit (soft and hard) of the proxy that runs out.
const SCARCE_FILES: u64 = 80;

/// Sanity bounds, not performance claims (those live in `bench/`): about
/// twice what these 10k connections cost in a debug build (~160 MB: 9 kB
/// per parked keep-alive connection, 20 kB per silent one, mostly the TCP
/// copy's two 8 kB buffers) ...
const RSS_SANITY_KB: u64 = 320 * 1024;
/// ... and how much a second identical round of requests on every held
/// connection may add: a per-request leak would show here.
const RSS_GROWTH_SANITY_KB: u64 = 10 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_connections_are_held_and_everyone_is_served() {
    let started = Instant::now();
    if let Err(why) = enough_open_files() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set and this machine cannot run the idle connection test: {why}"
        );
        eprintln!("SKIPPING the 10k idle connection test: {why}");
        return;
    }
    let upstream = http_upstream().await;
    let proxy = ChildProxy::start(upstream.addr).await;
    let soft = proxy.open_file_limit();
    assert!(
        soft >= NEEDED,
        "the proxy did not raise its open file limit: {soft}"
    );

    let idle_rss = proxy.rss_kb();
    let addr = proxy.addr;
    let mut keep_alive: Vec<_> = bounded(
        "the keep-alive connections to be served",
        concurrently(KEEP_ALIVE, move |_| async move {
            let mut sender = h1_client(addr).await;
            let response = sender.send_request(get("/hello")).await.unwrap();
            assert_eq!(response.status(), 200);
            sender
        }),
    )
    .await;
    // Generous: ten thousand connections on a shared 2-core machine; the
    // conditions are polled, so a healthy run takes seconds.
    let within = Duration::from_secs(60);
    all_parked(&proxy, within).await;
    let keep_alive_rss = proxy.rss_kb();
    let mut silent: Vec<_> = bounded(
        "the silent connections to connect",
        concurrently(SILENT, move |_| async move {
            TcpStream::connect(addr).await.unwrap()
        }),
    )
    .await;
    eprintln!("{HELD} connections open after {:?}", started.elapsed());
    eventually("every connection accepted", within, || async {
        proxy.metric(ACTIVE).await == HELD as f64
    })
    .await;
    eventually(
        "the silent connections forwarded as TCP",
        within,
        || async { proxy.metric(RAW_TCP).await == SILENT as f64 },
    )
    .await;

    // A newcomer is served promptly and counted exactly.
    let asked = Instant::now();
    let fresh = tokio::time::timeout(Duration::from_secs(5), async {
        let mut sender = h1_client(proxy.addr).await;
        let response = sender.send_request(get("/hello")).await.unwrap();
        assert_eq!(response.status(), 200);
        sender
    })
    .await
    .expect("a new client was not served within 5 s while 10k connections were held");
    eprintln!("new client served in {:?}", asked.elapsed());
    assert_eq!(proxy.metric(ACTIVE).await, (HELD + 1) as f64);
    drop(fresh);
    eventually("the new client's connection closed", within, || async {
        proxy.metric(ACTIVE).await == HELD as f64
    })
    .await;
    let rss = proxy.rss_kb();
    eprintln!(
        "proxy VmRSS: {idle_rss} kB idle, {keep_alive_rss} kB with {KEEP_ALIVE} keep-alive \
         connections, {rss} kB ({:.1} MB) with {SILENT} silent ones too; {} open files",
        rss as f64 / 1024.0,
        proxy.open_files()
    );
    assert!(rss < RSS_SANITY_KB, "VmRSS {rss} kB: a leak?");

    // Every held connection still works, twice: the first round touches
    // buffers for the first time (the silent ones carry their first
    // bytes), the second should cost nothing more.
    bounded(
        "a first round",
        serve_all_held(&mut keep_alive, &mut silent),
    )
    .await;
    all_parked(&proxy, within).await;
    let first_round_rss = settled_rss(&proxy).await;
    bounded(
        "a second round",
        serve_all_held(&mut keep_alive, &mut silent),
    )
    .await;
    all_parked(&proxy, within).await;
    let second_round_rss = settled_rss(&proxy).await;
    eprintln!(
        "proxy VmRSS after serving every held connection again: {first_round_rss} kB, \
         and once more: {second_round_rss} kB ({:?} in)",
        started.elapsed()
    );
    assert!(
        second_round_rss < first_round_rss + RSS_GROWTH_SANITY_KB,
        "VmRSS grew from {first_round_rss} kB to {second_round_rss} kB serving the same \
         connections the same requests again: a leak?"
    );

    drop(keep_alive);
    drop(silent);
    eventually("every connection closed", within, || async {
        proxy.metric(ACTIVE).await == 0.0
    })
    .await;
    proxy.stop().await;
    eprintln!("done in {:?}", started.elapsed());
}

/// At its open-file limit the proxy cannot accept; it closes each new
/// connection at once (a reserved descriptor makes room to accept and
/// close it) rather than leaving clients in the listen backlog, and serves
/// new clients again as soon as descriptors free up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_new_connections_are_closed_at_once() {
    let upstream = http_upstream().await;
    let limit = format!("ulimit -n {SCARCE_FILES}");
    let proxy = ChildProxy::start_with(upstream.addr, &limit).await;
    assert_eq!(proxy.open_file_limit(), SCARCE_FILES);
    let addr = proxy.addr;
    let mut held = Vec::new();
    let (mut refused, mut bad_gateway) = (0, 0);
    bounded("connections up to and past the limit", async {
        for _ in 0..2 * SCARCE_FILES {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            // A reset while writing or reading is a close too.
            let seen = get_hello(&mut stream).await.unwrap_or_default();
            if seen.starts_with(b"HTTP/1.1 200") {
                held.push(stream);
            } else if seen.is_empty() {
                // Closed without an answer, promptly (the phase is bounded).
                refused += 1;
            } else {
                // Accepted, but no descriptor left for the upstream: a
                // clear error for this client only.
                let head = String::from_utf8_lossy(&seen);
                assert!(head.starts_with("HTTP/1.1 502"), "{head}");
                bad_gateway += 1;
            }
        }
    })
    .await;
    eprintln!(
        "{} connections served, {bad_gateway} answered 502, {refused} closed at the limit",
        held.len()
    );
    assert!(refused > 0, "no connection was closed at the limit");
    assert!(
        held.len() > (SCARCE_FILES / 3) as usize,
        "only {} served",
        held.len()
    );

    drop(held);
    eventually(
        "a new client to be served again",
        Duration::from_secs(10),
        || async move {
            let mut sender = h1_client(addr).await;
            sender
                .send_request(get("/hello"))
                .await
                .is_ok_and(|r| r.status() == 200)
        },
    )
    .await;
    let rejected = proxy
        .metric("faultline_connections_rejected_total{reason=\"fd_limit\"}")
        .await;
    assert!(
        rejected >= refused as f64,
        "{rejected} counted, {refused} refused"
    );
    let logs = proxy.logs.lock().unwrap().join("\n");
    assert!(logs.contains("out of file descriptors"), "{logs}");
}

/// At `FAULTLINE_MAX_CONNECTIONS` the next connections are closed at once
/// and counted, one warning says so (not one per connection), the held
/// connections keep being served, and a newcomer is served again as soon
/// as one of them closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_limit_new_connections_are_closed_and_the_rest_served() {
    const MAX: usize = 3;
    let upstream = http_upstream().await;
    let setup = format!("ulimit -S -n 1024 && export FAULTLINE_MAX_CONNECTIONS={MAX}");
    let proxy = ChildProxy::start_with(upstream.addr, &setup).await;
    let addr = proxy.addr;
    let mut held = Vec::new();
    for _ in 0..MAX {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        assert!(get_hello(&mut stream).await.unwrap().ends_with(b"hello"));
        held.push(stream);
    }
    for _ in 0..5 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let seen = bounded(
            "a connection over the limit to be closed",
            get_hello(&mut stream),
        )
        .await
        .unwrap_or_default();
        assert!(seen.is_empty(), "{}", String::from_utf8_lossy(&seen));
    }
    for stream in &mut held {
        assert!(get_hello(stream).await.unwrap().ends_with(b"hello"));
    }
    assert_eq!(
        proxy
            .metric("faultline_connections_rejected_total{reason=\"limit\"}")
            .await,
        5.0
    );
    drop(held.pop());
    eventually(
        "a newcomer to be served",
        Duration::from_secs(10),
        || async move {
            let Ok(mut stream) = TcpStream::connect(addr).await else {
                return false;
            };
            get_hello(&mut stream)
                .await
                .is_ok_and(|seen| seen.ends_with(b"hello"))
        },
    )
    .await;
    let logs = proxy.logs.lock().unwrap().join("\n");
    assert_eq!(
        logs.matches("connection limit reached").count(),
        1,
        "{logs}"
    );
    assert!(logs.contains("below the connection limit again"), "{logs}");
}

/// Bounds a phase: on a machine this slow, the numbers mean nothing.
async fn bounded<T>(what: &str, phase: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), phase)
        .await
        .unwrap_or_else(|_| panic!("timed out after 30 s waiting for {what}"))
}

/// One request on every held connection; each must be answered.
async fn serve_all_held(keep_alive: &mut [SendRequest<Body>], silent: &mut [TcpStream]) {
    let statuses: Vec<_> = futures::stream::iter(keep_alive.iter_mut())
        .map(|sender| async { sender.send_request(get("/hello")).await.unwrap().status() })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let answers: Vec<_> = futures::stream::iter(silent.iter_mut())
        .map(hello_over_raw_tcp)
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    assert!(answers.iter().all(|ok| *ok), "a silent connection failed");
}

/// Raises this process's soft limit to the hard one (the child inherits
/// the hard limit) and says whether it is enough for both processes.
fn enough_open_files() -> Result<(), String> {
    let soft =
        faultline_proxy::limits::raise_nofile().map_err(|e| faultline_proxy::error_chain(&e))?;
    match soft {
        Some(soft) if soft < NEEDED => Err(format!(
            "the open file limit is {soft}; holding {HELD} connections needs {NEEDED} \
             in this process and in the proxy (raise it with ulimit -Hn / LimitNOFILE)"
        )),
        _ => Ok(()),
    }
}

/// Runs `make(i)` for `0..n`, `CONCURRENCY` at a time, in order.
async fn concurrently<T, F, Fut>(n: usize, make: F) -> Vec<T>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    futures::stream::iter((0..n).map(make))
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await
}

/// A request on a connection the proxy forwards as raw TCP: the upstream
/// answers it, through the proxy.
async fn hello_over_raw_tcp(stream: &mut TcpStream) -> bool {
    match tokio::time::timeout(Duration::from_secs(10), get_hello(stream)).await {
        Ok(Ok(seen)) => seen.starts_with(b"HTTP/1.1 200") && seen.ends_with(b"\r\n\r\nhello"),
        _ => false,
    }
}

/// Sends `GET /hello` on `stream` and reads the answer: the response head
/// and, for a 200, the body (`hello`); empty if the peer closed first.
/// Raw bytes, so a connection closed under the request is simply seen as
/// closed (a pooling client can lose that race and wait forever).
async fn get_hello(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    stream
        .write_all(b"GET /hello HTTP/1.1\r\nhost: test\r\n\r\n")
        .await?;
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let head_done = seen.windows(4).any(|w| w == b"\r\n\r\n");
        if head_done && (!seen.starts_with(b"HTTP/1.1 200") || seen.ends_with(b"hello")) {
            return Ok(seen);
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(seen);
        }
        seen.extend_from_slice(&buf[..n]);
    }
}

/// `faultline-proxy run` as a child process; its JSON logs are kept.
struct ChildProxy {
    child: tokio::process::Child,
    pid: u32,
    addr: SocketAddr,
    admin: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
    reader: tokio::task::JoinHandle<()>,
}

impl ChildProxy {
    async fn start(upstream: SocketAddr) -> Self {
        // A low soft limit (the hard one is inherited), as many container
        // runtimes start processes: the proxy has to raise it itself.
        Self::start_with(upstream, "ulimit -S -n 1024").await
    }

    /// Starts the proxy after the shell command `limit` (a `ulimit`).
    async fn start_with(upstream: SocketAddr, limit: &str) -> Self {
        let script = format!("{limit} && exec \"$@\"");
        let mut child = tokio::process::Command::new("sh")
            .args(["-c", &script, "sh"])
            .arg(env!("CARGO_BIN_EXE_faultline-proxy"))
            .args([
                "run",
                "--listen",
                "127.0.0.1:0",
                "--admin-addr",
                "127.0.0.1:0",
            ])
            .arg("--upstream")
            .arg(upstream.to_string())
            // Above the default, which is sized for the sidecar's memory
            // limit: this test holds more connections than that.
            .env("FAULTLINE_MAX_CONNECTIONS", "20000")
            .env("FAULTLINE_LOG_FORMAT", "json")
            .env("FAULTLINE_LOG", "info,faultline_proxy::limits=debug")
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let pid = child.id().unwrap();
        let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (mut addr, mut admin) = (None, None);
        while addr.is_none() || admin.is_none() {
            let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
                .await
                .expect("the proxy logged no listen address within 10 s")
                .unwrap()
                .unwrap_or_else(|| panic!("the proxy exited: {:?}", logs.lock().unwrap()));
            let json: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            let bound = || json["addr"].as_str().and_then(|a| a.parse().ok());
            match json["message"].as_str() {
                Some("listening") => addr = bound(),
                Some("admin server listening") => admin = bound(),
                _ => {}
            }
            logs.lock().unwrap().push(line);
        }
        // Keep reading, or the proxy would block once the pipe is full.
        let kept = logs.clone();
        let reader = tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                kept.lock().unwrap().push(line);
            }
        });
        let admin = admin.unwrap();
        eventually("the proxy to be ready", Duration::from_secs(10), || async {
            reqwest::get(format!("http://{admin}/readyz"))
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await;
        ChildProxy {
            child,
            pid,
            addr: addr.unwrap(),
            admin,
            logs,
            reader,
        }
    }

    async fn metric(&self, series: &str) -> f64 {
        let response = reqwest::get(format!("http://{}/metrics", self.admin))
            .await
            .unwrap();
        metrics::value(&response.text().await.unwrap(), series)
    }

    fn proc(&self, file: &str) -> String {
        std::fs::read_to_string(format!("/proc/{}/{file}", self.pid)).unwrap()
    }

    /// A `/proc/<pid>/<file>` line's first number after `label`.
    fn proc_number(&self, file: &str, label: &str) -> u64 {
        let text = self.proc(file);
        let line = text.lines().find(|l| l.starts_with(label)).unwrap();
        line[label.len()..]
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no number in {line:?}"))
    }

    fn open_file_limit(&self) -> u64 {
        self.proc_number("limits", "Max open files")
    }

    fn rss_kb(&self) -> u64 {
        self.proc_number("status", "VmRSS:")
    }

    fn open_files(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid))
            .unwrap()
            .count()
    }

    /// SIGTERM, then a clean exit; the logs must show no panic, error or
    /// warning (such as a failed accept).
    async fn stop(mut self) {
        let pid = rustix::process::Pid::from_raw(i32::try_from(self.pid).unwrap()).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        let status = tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("the proxy did not exit within 10 s of SIGTERM")
            .unwrap();
        // The pipe ends with the process: the last lines are in.
        tokio::time::timeout(Duration::from_secs(10), self.reader)
            .await
            .expect("the proxy's stderr stayed open after it exited")
            .unwrap();
        let logs = self.logs.lock().unwrap();
        assert_eq!(status.code(), Some(0), "{logs:#?}");
        let bad: Vec<_> = logs
            .iter()
            .filter(|line| {
                let json: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
                json.is_null() || json["level"] == "ERROR" || json["level"] == "WARN"
            })
            .collect();
        assert!(bad.is_empty(), "{bad:#?}");
    }
}

/// Idle keep-alive connections give their buffers back a clock tick after
/// their last request; RSS is only comparable once all of them have.
async fn all_parked(proxy: &ChildProxy, within: Duration) {
    eventually("every keep-alive connection parked", within, || async {
        proxy.metric(PARKED).await == KEEP_ALIVE as f64
    })
    .await;
}

/// RSS once the allocator has handed back what the last round freed
/// (jemalloc returns pages unused for a second): polled until two readings a
/// second and a half apart agree within 1 MB, 20 s at most.
async fn settled_rss(proxy: &ChildProxy) -> u64 {
    let mut last = proxy.rss_kb();
    for _ in 0..13 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let now = proxy.rss_kb();
        if now.abs_diff(last) < 1024 {
            return now;
        }
        last = now;
    }
    last
}
