//! Admin endpoints, metrics, connection limit, drain, and the binary's
//! configuration errors.
use std::time::Duration;

use tokio::io::AsyncReadExt;

use crate::support::*;

#[tokio::test]
async fn admin_endpoints_report_health_readiness_and_policy() {
    let upstream = http_upstream().await;
    let proxy = start_proxy(
        upstream.addr,
        "rules:\n- name: slow\n  delay: {fixed: 1ms}\n",
    )
    .await;
    assert_eq!(proxy.admin_get("/healthz").await.0, 200);
    assert_eq!(proxy.admin_get("/readyz").await.0, 200);
    let (status, policy) = proxy.admin_get("/policy").await;
    assert_eq!(status, 200);
    let policy: serde_json::Value = serde_json::from_str(&policy).unwrap();
    assert_eq!(policy["source"]["type"], "file");
    assert_eq!(policy["policy"]["rules"][0]["name"], "slow");
    assert!(policy["version"].as_str().unwrap().starts_with("file-"));
    // Read-only: nothing but GET.
    let response = reqwest::Client::new()
        .post(format!("http://{}/policy", proxy.admin))
        .body("rules: []")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(proxy.admin_get("/nope").await.0, 404);
}

/// A rewritten tcpSocket probe checks the app on loopback: it fails once the
/// app stops listening, although the proxy itself still accepts.
#[tokio::test]
async fn tcp_probes_check_the_app_and_only_the_named_ports() {
    let app = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = app.local_addr().unwrap().port();
    let upstream = http_upstream().await;
    let ports = format!("{port},1");
    let proxy = start_proxy_with(
        upstream.addr,
        "rules: []\n",
        &[("FAULTLINE_PROBE_PORTS", &ports)],
    )
    .await;
    let (status, body) = proxy.admin_get(&format!("/probe/tcp/{port}")).await;
    assert_eq!(status, 200, "{body}");
    drop(app);
    let (status, body) = proxy.admin_get(&format!("/probe/tcp/{port}")).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains(&port.to_string()), "{body}");
    // Not named by the webhook: refused, whatever listens there.
    let other = upstream.addr.port();
    assert_eq!(proxy.admin_get(&format!("/probe/tcp/{other}")).await.0, 404);
    assert_eq!(proxy.admin_get("/probe/tcp/not-a-port").await.0, 404);
}

#[tokio::test]
async fn metrics_count_requests_faults_latency_and_policy() {
    let upstream = http_upstream().await;
    let proxy = start_proxy(
        upstream.addr,
        "rules:\n- name: boom\n  match: {path: /boom}\n  abort: {status: 500}\n",
    )
    .await;
    for path in ["/hello", "/hello", "/boom"] {
        reqwest::get(proxy.url(path)).await.unwrap();
    }
    let text = proxy.metrics().await;
    assert_eq!(
        metrics::value(
            &text,
            "faultline_requests_total{direction=\"inbound\",protocol=\"http1\"}"
        ),
        3.0
    );
    assert_eq!(
        metrics::value(
            &text,
            "faultline_faults_injected_total{rule=\"boom\",kind=\"abort\"}"
        ),
        1.0
    );
    assert_eq!(
        metrics::value(
            &text,
            "faultline_upstream_latency_seconds_count{direction=\"inbound\",protocol=\"http1\"}"
        ),
        2.0
    );
    assert!(
        text.contains("faultline_policy_info{version=\"file-"),
        "{text}"
    );
    assert!(text.contains("source=\"file\""), "{text}");
    assert!(text.contains("faultline_policy_connected 0"), "{text}");
}

#[tokio::test]
async fn connections_over_the_limit_are_closed_and_counted() {
    let upstream = http_upstream().await;
    let proxy = start_proxy_with(
        upstream.addr,
        "rules: []\n",
        &[("FAULTLINE_MAX_CONNECTIONS", "2")],
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut sender = h1_client(proxy.addr).await;
        assert_eq!(
            sender.send_request(get("/hello")).await.unwrap().status(),
            200
        );
        held.push(sender);
    }
    let mut third = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf))
        .await
        .unwrap();
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert_eq!(
        proxy
            .metric("faultline_connections_rejected_total{reason=\"limit\"}")
            .await,
        1.0
    );
    // The held connections still work.
    assert_eq!(
        held[0].send_request(get("/hello")).await.unwrap().status(),
        200
    );
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests_then_stops() {
    let upstream = http_upstream().await;
    let proxy = start_proxy(upstream.addr, "rules: []\n").await;
    let url = proxy.url("/sleep/400");
    let in_flight =
        tokio::spawn(async move { reqwest::get(url).await.unwrap().text().await.unwrap() });
    eventually(
        "the request to reach the upstream",
        Duration::from_secs(5),
        || async { upstream.hits() == 1 },
    )
    .await;
    proxy.shutdown.cancel();
    // Not ready while draining.
    eventually("readyz to turn 503", Duration::from_secs(2), || async {
        reqwest::get(format!("http://{}/readyz", proxy.admin))
            .await
            .map_or(true, |r| r.status() == 503)
    })
    .await;
    assert_eq!(in_flight.await.unwrap(), "slept");
    tokio::time::timeout(Duration::from_secs(5), proxy.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(proxy.addr).await.is_err(),
        "the listener is closed"
    );
}

#[tokio::test]
async fn drain_deadline_cuts_connections_that_do_not_finish() {
    let upstream = http_upstream().await;
    let proxy = start_proxy_with(
        upstream.addr,
        "rules:\n- hang: {}\n",
        &[("FAULTLINE_DRAIN_SECONDS", "1")],
    )
    .await;
    let url = proxy.url("/hello");
    let hung = tokio::spawn(async move { reqwest::get(url).await });
    eventually(
        "the hung request to be accepted",
        Duration::from_secs(5),
        || async {
            proxy
                .metric("faultline_faults_injected_total{rule=\"rules[0]\",kind=\"hang\"}")
                .await
                == 1.0
        },
    )
    .await;
    let started = std::time::Instant::now();
    proxy.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), proxy.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert!(hung.await.unwrap().is_err());
}

#[test]
fn bad_configuration_exits_64_before_binding() {
    let binary = env!("CARGO_BIN_EXE_faultline-proxy");
    let output = std::process::Command::new(binary)
        .args(["run"])
        .env("FAULTLINE_ADMIN_ADDR", "not-an-address")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("FAULTLINE_ADMIN_ADDR"), "{stderr}");

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "rules:\n- abort: {status: 700}\n").unwrap();
    let output = std::process::Command::new(binary)
        .args([
            "run",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            "127.0.0.1:9",
            "--admin-addr",
            "127.0.0.1:0",
        ])
        .arg("--faults")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("700"), "{stderr}");
}

#[tokio::test]
async fn capture_listeners_refuse_connections_that_were_not_redirected() {
    // Sidecar mode without iptables: a connection straight to a capture
    // port has no other original destination; forwarding it would loop.
    let config = faultline_proxy::Config::from_env([
        ("FAULTLINE_INBOUND_ADDR", "127.0.0.1:0"),
        ("FAULTLINE_OUTBOUND_ADDR", "127.0.0.1:0"),
        ("FAULTLINE_ADMIN_ADDR", "127.0.0.1:0"),
    ])
    .unwrap();
    let proxy = faultline_proxy::Proxy::bind(config).await.unwrap();
    let addrs = proxy.listen_addrs();
    assert_eq!(addrs.len(), 2, "{addrs:?}");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(proxy.run(faultline_proxy::PolicyStore::new(), shutdown.clone()));
    for (_, addr) in addrs {
        let (bytes, result) = raw_exchange(
            addr,
            b"GET / HTTP/1.1\r\nhost: x\r\n\r\n",
            Duration::from_secs(5),
        )
        .await;
        assert!(bytes.is_empty(), "{}", String::from_utf8_lossy(&bytes));
        assert!(
            result.is_ok()
                || result
                    .as_ref()
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
            "{result:?}"
        );
    }
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[test]
fn example_policies_parse() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/policies");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        if let Err(error) = faultline_policy::parse(&text) {
            panic!("{}: {error}", path.display());
        }
        seen += 1;
    }
    assert!(
        seen >= 5,
        "expected the example policies in {}",
        dir.display()
    );
}

#[tokio::test]
async fn the_binary_logs_json_and_drains_on_sigterm() {
    use tokio::io::AsyncBufReadExt;
    let upstream = http_upstream().await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_faultline-proxy"))
        .args([
            "run",
            "--listen",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
        ])
        .arg("--upstream")
        .arg(upstream.addr.to_string())
        .env("FAULTLINE_LOG_FORMAT", "json")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut next_json = async || -> serde_json::Value {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .expect("a log line");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    };
    let admin = loop {
        let line = next_json().await;
        if line["message"] == "admin server listening" {
            break line["addr"].as_str().unwrap().to_owned();
        }
    };
    eventually("readyz", Duration::from_secs(10), || async {
        reqwest::get(format!("http://{admin}/readyz"))
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    // The classic sidecar's postStart hook returns once this proxy is ready.
    let admin_port = admin.rsplit(':').next().unwrap().to_owned();
    let waited = tokio::process::Command::new(env!("CARGO_BIN_EXE_faultline-proxy"))
        .args([
            "wait-ready",
            "--admin-port",
            &admin_port,
            "--timeout-seconds",
            "10",
        ])
        .output()
        .await
        .unwrap();
    assert!(waited.status.success(), "{waited:?}");
    let pid = child.id().unwrap().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let mut messages = Vec::new();
    loop {
        let line = next_json().await;
        let message = line["message"].as_str().unwrap_or_default().to_owned();
        messages.push(message.clone());
        if message == "stopped" {
            break;
        }
    }
    assert!(
        messages.iter().any(|m| m.contains("draining")),
        "{messages:?}"
    );
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn wait_ready_gives_up_when_no_proxy_answers() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let waited = tokio::process::Command::new(env!("CARGO_BIN_EXE_faultline-proxy"))
        .args([
            "wait-ready",
            "--admin-port",
            &port,
            "--timeout-seconds",
            "1",
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(waited.status.code(), Some(69), "{waited:?}");
    let stderr = String::from_utf8_lossy(&waited.stderr);
    assert!(stderr.contains("/readyz"), "{stderr}");
}

/// In a pod, SIGTERM reaches the app and the proxy together: the proxy keeps
/// its capture listeners open (and reports not ready) while the app still
/// accepts connections, and drains once it stops.
#[tokio::test]
async fn after_shutdown_a_sidecar_serves_until_the_app_stops_listening() {
    let app = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_port = app.local_addr().unwrap().port().to_string();
    let config = faultline_proxy::Config::from_env([
        ("FAULTLINE_INBOUND_ADDR", "127.0.0.1:0"),
        ("FAULTLINE_OUTBOUND_ADDR", "127.0.0.1:0"),
        ("FAULTLINE_ADMIN_ADDR", "127.0.0.1:0"),
        ("FAULTLINE_APP_PORTS", app_port.as_str()),
        ("FAULTLINE_WIND_DOWN_SECONDS", "30"),
        ("FAULTLINE_DRAIN_SECONDS", "1"),
    ])
    .unwrap();
    let proxy = faultline_proxy::Proxy::bind(config).await.unwrap();
    let inbound = proxy.listen_addrs()[0].1;
    let admin = proxy.admin_addr().unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(proxy.run(faultline_proxy::PolicyStore::new(), shutdown.clone()));
    eventually("ready", Duration::from_secs(5), || async {
        reqwest::get(format!("http://{admin}/readyz"))
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    shutdown.cancel();
    eventually(
        "not ready once shutting down",
        Duration::from_secs(5),
        || async {
            reqwest::get(format!("http://{admin}/readyz"))
                .await
                .is_ok_and(|r| r.status() == 503)
        },
    )
    .await;
    // The app still listens: so does the proxy, for longer than a drain.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!task.is_finished(), "the proxy left before the app");
    assert!(tokio::net::TcpStream::connect(inbound).await.is_ok());
    drop(app);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the proxy drains once the app stops listening")
        .unwrap()
        .unwrap();
    assert!(tokio::net::TcpStream::connect(inbound).await.is_err());
}
