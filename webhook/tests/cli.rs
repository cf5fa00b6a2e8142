//! The `faultline-webhook` binary: exit code 64 on bad configuration before
//! binding, `certs --out-dir`, `inject -f -`, and `serve` end to end (bound on
//! 127.0.0.1:0, a review over TLS, SIGTERM: not ready, then a clean exit).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_faultline-webhook");

/// (extra flags, environment, expected text on stderr)
type Case = (
    Vec<&'static str>,
    Vec<(&'static str, &'static str)>,
    &'static str,
);

fn certs(dir: &std::path::Path) {
    let out = Command::new(BIN)
        .args(["certs", "--out-dir"])
        .arg(dir)
        .args(["--san", "localhost"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bad_configuration_exits_64_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    certs(dir.path());
    let (crt, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    // No certificate at all.
    let out = Command::new(BIN)
        .args([
            "serve",
            "--disable-controller",
            "--native-sidecars",
            "false",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no certificate"));

    // Valid certificates, one bad setting each. Port 1 would bind (we are
    // root), so a missed check shows up as a server that does not exit.
    let cases: Vec<Case> = vec![
        (
            vec!["--proxy-cpu", "lots"],
            vec![],
            "invalid proxy cpu request",
        ),
        (
            vec!["--controller-url", "http://x"],
            vec![],
            "invalid controller URL",
        ),
        (
            vec!["--image-pull-policy", "Sometimes"],
            vec![],
            "invalid image pull policy",
        ),
        (
            vec![],
            vec![("FAULTLINE_LOG_FORMAT", "xml")],
            "FAULTLINE_LOG_FORMAT",
        ),
    ];
    for (args, env, needle) in cases {
        let mut child = Command::new(BIN)
            .args([
                "serve",
                "--disable-controller",
                "--native-sidecars",
                "false",
            ])
            .args(["--listen", "127.0.0.1:1"])
            .args(&args)
            .arg("--cert-file")
            .arg(&crt)
            .arg("--key-file")
            .arg(&key)
            .envs(env)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                child.kill().unwrap();
                panic!("{args:?}: still running; the bad setting was not refused");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        assert_eq!(status.code(), Some(64), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

#[test]
fn certs_writes_a_private_key_only_the_owner_reads() {
    let dir = tempfile::tempdir().unwrap();
    certs(dir.path());
    for file in ["ca.crt", "tls.crt", "tls.key"] {
        assert!(
            std::fs::read_to_string(dir.path().join(file))
                .unwrap()
                .contains("-----BEGIN"),
            "{file}"
        );
    }
    let mode = std::fs::metadata(dir.path().join("tls.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn inject_reads_stdin_and_writes_injected_yaml() {
    let mut child = Command::new(BIN)
        .args(["inject", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  template:\n    spec: {containers: [{name: app, image: app}]}\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml: serde_json::Value = serde_yaml::from_slice(&out.stdout).unwrap();
    assert_eq!(
        yaml["spec"]["template"]["spec"]["containers"][0]["name"],
        "faultline-proxy"
    );
}

#[test]
fn serve_answers_over_tls_and_drains_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    certs(dir.path());
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--disable-controller",
            "--native-sidecars",
            "false",
            "--listen",
            "127.0.0.1:0",
        ])
        .args(["--drain-seconds", "1"])
        .arg("--cert-file")
        .arg(dir.path().join("tls.crt"))
        .arg("--key-file")
        .arg(dir.path().join("tls.key"))
        .env("FAULTLINE_LOG_FORMAT", "json")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The bound address is in the "serving HTTPS" log line.
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr: std::net::SocketAddr = loop {
        let line = lines.next().expect("server exited before serving").unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if v["message"] == "serving HTTPS" {
            break v["addr"].as_str().unwrap().parse().unwrap();
        }
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ca = std::fs::read(dir.path().join("ca.crt")).unwrap();
    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .resolve("localhost", addr)
        .build()
        .unwrap();
    let base = format!("https://localhost:{}", addr.port());
    let review = serde_json::json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "cli", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                    "resource": {"group": "", "version": "v1", "resource": "pods"},
                    "operation": "CREATE", "userInfo": {},
                    "object": {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]}}},
    });
    let out: serde_json::Value = rt
        .block_on(async {
            client
                .post(format!("{base}/mutate"))
                .json(&review)
                .send()
                .await?
                .json()
                .await
        })
        .unwrap();
    assert_eq!(out["response"]["patchType"], "JSONPatch");

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    // Not ready first (while still serving), then a clean exit.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = rt.block_on(async {
            client
                .get(format!("{base}/readyz"))
                .send()
                .await
                .map(|r| r.status())
        });
        if status.ok() == Some(reqwest::StatusCode::SERVICE_UNAVAILABLE) {
            break;
        }
        assert!(Instant::now() < deadline, "never reported not ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
}
