//! Network-namespace plumbing shared by the `capture*` tests.
//!
//! Each test gets its own pair of namespaces joined by a veth pair: `pod`
//! (where `faultline-proxy init`, the proxy and the app run, like a pod) and
//! `peer` (the rest of the cluster: clients and outbound servers). Nothing is
//! added to the host's own namespace. Sockets are opened inside a namespace by
//! a short-lived thread that `setns`es into it (a socket stays in the
//! namespace it was created in), so servers and clients run in this process
//! on tokio; only the proxy and `init` run as child processes.
#![allow(dead_code)] // each test file uses a different subset

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsFd;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use faultline_test_support::until_some;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};

pub const POD_IP: Ipv4Addr = Ipv4Addr::new(10, 240, 0, 2);
pub const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 240, 0, 1);
pub const POD_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xf1, 0, 0, 0, 0, 0, 2);
pub const PEER_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xf1, 0, 0, 0, 0, 0, 1);
pub const BIN: &str = env!("CARGO_BIN_EXE_faultline-proxy");

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Two namespaces joined by a veth pair, deleted (with every process we
/// started in them) when dropped, also when the test panics.
pub struct NetnsPair {
    pub pod: String,
    pub peer: String,
    children: Vec<Child>,
}

/// Returns `None` (after a loud message) when this host cannot create network
/// namespaces; with `CI` set that is a failure instead.
pub fn setup(tag: &str, ipv6: bool) -> Option<NetnsPair> {
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let base = format!("fl-{tag}-{}-{n}", std::process::id());
    let pair = NetnsPair {
        pod: format!("{base}-pod"),
        peer: format!("{base}-peer"),
        children: vec![],
    };
    if let Err(why) = ip(&["netns", "add", &pair.pod]) {
        let message = format!(
            "network namespaces unavailable ({why}); the capture tests need root and iproute2"
        );
        if std::env::var_os("CI").is_some() {
            panic!("{message}");
        }
        // Written to stderr directly: the test harness captures eprintln!.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "\n!!! SKIPPING capture test {tag}: {message}\n"
        );
        return None;
    }
    ip(&["netns", "add", &pair.peer]).expect("add peer netns");
    ip(&[
        "-n", &pair.pod, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns",
        &pair.peer,
    ])
    .expect("create veth pair");
    for (ns, addr, addr6) in [
        (&pair.pod, POD_IP, POD_IP6),
        (&pair.peer, PEER_IP, PEER_IP6),
    ] {
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{addr}/30"),
            "dev",
            "eth0",
        ])
        .expect("add address");
        if ipv6 {
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{addr6}/64"),
                "dev",
                "eth0",
                "nodad",
            ])
            .expect("add v6 address");
        }
        ip(&["-n", ns, "link", "set", "eth0", "up"]).expect("eth0 up");
        ip(&["-n", ns, "link", "set", "lo", "up"]).expect("lo up");
    }
    Some(pair)
}

impl NetnsPair {
    /// Runs `faultline-proxy init ARGS` in the pod namespace.
    pub fn init(&self, args: &[&str]) -> Output {
        self.exec(&self.pod, BIN, &[&["init"], args].concat())
    }

    /// Runs `init` and fails the test with its stderr when it does not succeed.
    pub fn init_ok(&self, args: &[&str]) {
        let out = self.init(args);
        assert!(
            out.status.success(),
            "init {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs a command in namespace `ns` and waits for it.
    pub fn exec(&self, ns: &str, program: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", ns, program])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run ip netns exec")
    }

    /// `iptables-save -t nat` (or ip6tables) in the pod, without the timestamp comments.
    pub fn nat_rules(&self, save: &str) -> String {
        let out = self.exec(&self.pod, save, &["-t", "nat"]);
        assert!(
            out.status.success(),
            "{save}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Starts a long-running process in namespace `ns`; it is killed on drop.
    pub fn spawn(&mut self, ns: &str, program: &str, args: &[&str], envs: &[(&str, String)]) {
        let child = Command::new("ip")
            .args(["netns", "exec", ns, program])
            .args(args)
            .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn in netns");
        self.children.push(child);
    }

    /// Starts `faultline-proxy run` as 15400:15400 in the pod, with `policy`
    /// written to a file in `dir` and the environment `env` on top of
    /// `FAULTLINE_FAULTS_FILE`.
    pub fn start_proxy(&mut self, dir: &tempfile::TempDir, policy: &str, env: &[(&str, &str)]) {
        use std::os::unix::fs::PermissionsExt;
        let file = dir.path().join("faults.yaml");
        std::fs::write(&file, policy).expect("write policy");
        // The proxy runs as 15400 and must read the file.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod dir");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644))
            .expect("chmod policy");
        let envs: Vec<(&str, String)> = [("FAULTLINE_FAULTS_FILE", file.display().to_string())]
            .into_iter()
            .chain(env.iter().map(|(k, v)| (*k, v.to_string())))
            .collect();
        let pod = self.pod.clone();
        self.spawn(
            &pod,
            "setpriv",
            &[
                "--reuid=15400",
                "--regid=15400",
                "--clear-groups",
                BIN,
                "run",
            ],
            &envs,
        );
    }

    /// Waits until the proxy's admin port `admin` answers `/readyz` with 200
    /// from the peer namespace (its listeners are bound, DNS included);
    /// fails at once if the proxy exited, and after 15 s.
    pub async fn wait_ready(&mut self, admin: SocketAddr) {
        let peer = self.peer.clone();
        let ready = until_some(Duration::from_secs(15), async || {
            self.assert_children_running();
            http_get(&peer, admin, "/readyz")
                .await
                .ok()
                .filter(|(status, _, _)| *status == 200)
        })
        .await;
        assert!(
            ready.is_some(),
            "proxy admin port {admin} never became ready"
        );
    }

    /// The proxy's `/metrics` on `admin`, fetched from the peer namespace.
    pub async fn metrics(&self, admin: SocketAddr) -> String {
        match http_get(&self.peer, admin, "/metrics").await {
            Ok((200, text, _)) => text,
            other => panic!("GET {admin}/metrics: {other:?}"),
        }
    }

    /// Panics if a process started with [`Self::spawn`] has already exited.
    pub fn assert_children_running(&mut self) {
        for child in &mut self.children {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("process in the namespace exited early: {status}");
            }
        }
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Deleting one end of the veth removes the other; namespaces go last.
        let _ = ip(&["netns", "del", &self.pod]);
        let _ = ip(&["netns", "del", &self.peer]);
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs `f` on a thread that has entered namespace `ns`; sockets it creates
/// belong to that namespace for their whole life.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        move_into_link_name_space(file.as_fd(), Some(LinkNameSpaceType::Network)).expect("setns");
        f()
    })
    .join()
    .expect("netns thread")
}

/// A tokio listener bound in namespace `ns`.
pub fn listen(ns: &str, addr: SocketAddr) -> tokio::net::TcpListener {
    let std = in_netns(ns, move || std::net::TcpListener::bind(addr)).expect("bind in netns");
    std.set_nonblocking(true).expect("nonblocking");
    tokio::net::TcpListener::from_std(std).expect("tokio listener")
}

/// A TCP connection opened from namespace `ns`.
pub async fn connect(ns: &str, addr: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let ns = ns.to_string();
    let std = tokio::task::spawn_blocking(move || {
        in_netns(&ns, move || {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        })
    })
    .await
    .expect("connect task")?;
    std.set_nonblocking(true)?;
    tokio::net::TcpStream::from_std(std)
}

pub fn v4(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(ip), port)
}

pub fn v6(ip: Ipv6Addr, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V6(ip), port)
}

/// GET `path` from `addr` with a real HTTP/1.1 client (hyper) on a
/// connection opened from namespace `ns`: status, body and how long it took.
pub async fn http_get(
    ns: &str,
    addr: SocketAddr,
    path: &str,
) -> Result<(u16, String, Duration), String> {
    let start = Instant::now();
    let stream = connect(ns, addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    let request = hyper::Request::get(path)
        .header("host", addr.to_string())
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(Duration::from_secs(5), sender.send_request(request))
        .await
        .map_err(|_| "no response in 5s".to_string())?
        .map_err(|e| format!("request: {e}"))?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok((
        status,
        String::from_utf8_lossy(&body).into_owned(),
        start.elapsed(),
    ))
}
