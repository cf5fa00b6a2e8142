//! `faultline-proxy init` in real network namespaces, with stand-in capture
//! listeners that answer with the connection's SO_ORIGINAL_DST: proves which
//! connections the rules redirect and which they leave alone, idempotence,
//! `--clean`, backend and IPv6 detection. `--dry-run` and the error messages
//! are in `capture_cli.rs`, the end-to-end tests with the real proxy in
//! `capture_proxy.rs`.
mod capture;

use std::net::SocketAddr;
use std::time::Duration;

use capture::{NetnsPair, PEER_IP, PEER_IP6, POD_IP, POD_IP6, listen, setup, v4, v6};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Answers every connection with `orig=<SO_ORIGINAL_DST>`, like the proxy's capture listeners.
fn original_dst_server(ns: &str, addr: SocketAddr) {
    let listener = listen(ns, addr);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let sock = socket2::SockRef::from(&stream);
            let orig = sock.original_dst_v4().or_else(|_| sock.original_dst_v6());
            let text = match orig.ok().and_then(|a| a.as_socket()) {
                Some(orig) => format!("orig={orig}"),
                None => "orig=none".to_string(),
            };
            let _ = stream.write_all(text.as_bytes()).await;
        }
    });
}

/// Answers every connection with `<name> from <client address>`.
fn banner_server(ns: &str, addr: SocketAddr, name: &'static str) {
    let listener = listen(ns, addr);
    tokio::spawn(async move {
        while let Ok((mut stream, peer)) = listener.accept().await {
            let _ = stream
                .write_all(format!("{name} from {}", peer.ip()).as_bytes())
                .await;
        }
    });
}

/// Connects from `ns` and returns everything the server sent.
async fn read_from(ns: &str, addr: SocketAddr) -> String {
    let mut stream = capture::connect(ns, addr)
        .await
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut text))
        .await
        .expect("server answered in time")
        .expect("read");
    text
}

/// Connects with bash as `uid:gid` in the pod namespace (a separate process,
/// so the owner match sees exactly what it sees for the proxy).
fn read_as(pair: &NetnsPair, uid: u32, gid: u32, addr: SocketAddr) -> String {
    let script = format!("exec 3<>/dev/tcp/{}/{}; cat <&3", addr.ip(), addr.port());
    let out = pair.exec(
        &pair.pod,
        "setpriv",
        &[
            &format!("--reuid={uid}"),
            &format!("--regid={gid}"),
            "--clear-groups",
            "timeout",
            "5",
            "bash",
            "-c",
            &script,
        ],
    );
    assert!(
        out.status.success(),
        "bash as {uid}:{gid}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_redirects_inbound_and_outbound_with_the_original_destination() {
    let Some(pair) = setup("redir", false) else {
        return;
    };
    pair.init_ok(&[
        "--exclude-inbound-ports",
        "8081",
        "--exclude-outbound-ports",
        "9001",
    ]);
    let pod = &pair.pod;
    original_dst_server(pod, v4([0, 0, 0, 0].into(), 15406));
    original_dst_server(pod, v4([0, 0, 0, 0].into(), 15401));
    banner_server(pod, v4([0, 0, 0, 0].into(), 8081), "app");
    banner_server(pod, v4([0, 0, 0, 0].into(), 15400), "admin");
    banner_server(&pair.peer, v4(PEER_IP, 9000), "peer");
    banner_server(&pair.peer, v4(PEER_IP, 9001), "peer");

    // Inbound: captured with the original port kept; excluded and admin ports are not.
    assert_eq!(
        read_from(&pair.peer, v4(POD_IP, 8080)).await,
        "orig=10.240.0.2:8080"
    );
    assert_eq!(
        read_from(&pair.peer, v4(POD_IP, 8081)).await,
        "app from 10.240.0.1"
    );
    assert_eq!(
        read_from(&pair.peer, v4(POD_IP, 15400)).await,
        "admin from 10.240.0.1"
    );

    // Outbound from the app: captured with the original destination kept.
    assert_eq!(
        read_from(pod, v4(PEER_IP, 9000)).await,
        "orig=10.240.0.1:9000"
    );
    assert_eq!(
        read_from(pod, v4(PEER_IP, 9001)).await,
        "peer from 10.240.0.2"
    );
    // Loopback, also to the pod's own address, stays inside the pod.
    assert_eq!(
        read_from(pod, v4([127, 0, 0, 1].into(), 8081)).await,
        "app from 127.0.0.1"
    );
    assert_eq!(
        read_from(pod, v4(POD_IP, 8081)).await,
        "app from 10.240.0.2"
    );

    // The proxy's UID or GID is never captured (no loop); anyone else is.
    let target = v4(PEER_IP, 9000);
    let results = tokio::task::spawn_blocking(move || {
        [
            (0, 0),
            (15400, 15400),
            (15400, 1000),
            (1000, 15400),
            (1000, 1000),
        ]
        .map(|(uid, gid)| read_as(&pair, uid, gid, target))
    })
    .await
    .expect("bash clients");
    assert_eq!(
        results,
        [
            "orig=10.240.0.1:9000",
            "peer from 10.240.0.2",
            "peer from 10.240.0.2",
            "peer from 10.240.0.2",
            "orig=10.240.0.1:9000",
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn include_list_captures_only_those_inbound_ports() {
    let Some(pair) = setup("incl", false) else {
        return;
    };
    pair.init_ok(&["--include-inbound-ports", "8080,9000-9010"]);
    original_dst_server(&pair.pod, v4([0, 0, 0, 0].into(), 15406));
    banner_server(&pair.pod, v4([0, 0, 0, 0].into(), 8082), "app");
    assert_eq!(
        read_from(&pair.peer, v4(POD_IP, 8080)).await,
        "orig=10.240.0.2:8080"
    );
    assert_eq!(
        read_from(&pair.peer, v4(POD_IP, 9005)).await,
        "orig=10.240.0.2:9005"
    );
    assert_eq!(
        read_from(&pair.peer, v4(POD_IP, 8082)).await,
        "app from 10.240.0.1"
    );
}

/// Thousands of excluded ports must not become thousands of rules: they are
/// merged into ranges and packed into `multiport` matches, and each one is
/// still honoured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_excluded_ports_become_a_few_hundred_rules() {
    let Some(pair) = setup("manyports", true) else {
        return;
    };
    // 5,000 scattered ports (every other one), then 3,000 that touch each
    // other and collapse into one range.
    let scattered: Vec<String> = (0..5000).map(|i| (20000 + 2 * i).to_string()).collect();
    let adjacent: Vec<String> = (40000..43000).map(|p| p.to_string()).collect();
    let list = [scattered.join(","), adjacent.join(",")].join(",");
    pair.init_ok(&[
        "--ipv6",
        "on",
        "--exclude-outbound-ports",
        &list,
        "--exclude-inbound-ports",
        &list,
    ]);
    for save in ["iptables-nft-save", "ip6tables-nft-save"] {
        let rules = pair.nat_rules(save);
        let count = rules
            .lines()
            .filter(|l| l.starts_with("-A FAULTLINE"))
            .count();
        // 5,000 single ports at 15 per match, one range, both directions,
        // plus the fixed rules.
        assert!(count <= 2 * (5000 / 15 + 2) + 12, "{save}: {count} rules");
        assert!(
            rules.contains("--dports 20000,20002,20004"),
            "{save}: no multiport rule"
        );
        assert!(rules.contains("40000:42999"), "{save}: range not merged");
    }
    original_dst_server(&pair.pod, v4([0, 0, 0, 0].into(), 15401));
    for port in [20000, 29998, 41234] {
        banner_server(&pair.peer, v4(PEER_IP, port), "peer");
        assert_eq!(
            read_from(&pair.pod, v4(PEER_IP, port)).await,
            "peer from 10.240.0.2",
            "excluded port {port} was captured"
        );
    }
    for port in [20001, 30000] {
        assert_eq!(
            read_from(&pair.pod, v4(PEER_IP, port)).await,
            format!("orig=10.240.0.1:{port}"),
            "port {port} should be captured"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_is_mirrored_only_when_the_pod_has_ipv6() {
    let Some(pair) = setup("v6", true) else {
        return;
    };
    pair.init_ok(&["--exclude-outbound-cidrs", "fd00:f1::1/128"]);
    let rules = pair.nat_rules("ip6tables-nft-save");
    assert!(
        rules.contains("-A FAULTLINE_OUTPUT -d fd00:f1::1/128 -p tcp"),
        "{rules}"
    );
    original_dst_server(&pair.pod, v6(0.into(), 15406));
    assert_eq!(
        read_from(&pair.peer, v6(POD_IP6, 8080)).await,
        "orig=[fd00:f1::2]:8080"
    );
    // The excluded v6 CIDR goes straight out.
    banner_server(&pair.peer, v6(PEER_IP6, 9000), "peer");
    assert_eq!(
        read_from(&pair.pod, v6(PEER_IP6, 9000)).await,
        "peer from fd00:f1::2"
    );

    let Some(v4_only) = setup("v4only", false) else {
        return;
    };
    v4_only.init_ok(&[]);
    assert!(
        v4_only
            .nat_rules("iptables-nft-save")
            .contains("FAULTLINE_INBOUND")
    );
    let rules6 = v4_only.nat_rules("ip6tables-nft-save");
    assert!(
        !rules6.contains("FAULTLINE"),
        "no IPv6 address, no ip6tables rules: {rules6}"
    );
}

#[test]
fn init_twice_is_identical_and_clean_restores_the_table() {
    for backend in ["nft", "legacy"] {
        let Some(pair) = setup(&format!("idem{backend}"), true) else {
            return;
        };
        let save = format!("iptables-{backend}-save");
        let save6 = format!("ip6tables-{backend}-save");
        // Someone else's rule must survive init and clean.
        let foreign = [
            "-t",
            "nat",
            "-A",
            "OUTPUT",
            "-d",
            "10.9.9.9/32",
            "-p",
            "tcp",
            "-j",
            "RETURN",
        ];
        let out = pair.exec(&pair.pod, &format!("iptables-{backend}"), &foreign);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (pristine, pristine6) = (pair.nat_rules(&save), pair.nat_rules(&save6));

        let args = [
            "--backend",
            backend,
            "--ipv6",
            "on",
            "--exclude-inbound-ports",
            "8081,9000-9010",
        ];
        pair.init_ok(&args);
        let (first, first6) = (pair.nat_rules(&save), pair.nat_rules(&save6));
        assert!(
            first.contains(":FAULTLINE_REDIRECT") && first.contains("-d 10.9.9.9/32"),
            "{first}"
        );
        assert!(first6.contains(":FAULTLINE_REDIRECT"), "{first6}");
        pair.init_ok(&args);
        assert_eq!(
            pair.nat_rules(&save),
            first,
            "{backend}: second init changed the IPv4 rules"
        );
        assert_eq!(
            pair.nat_rules(&save6),
            first6,
            "{backend}: second init changed the IPv6 rules"
        );

        // Different flags replace the rules instead of adding to them.
        pair.init_ok(&["--backend", backend, "--ipv6", "on"]);
        let changed = pair.nat_rules(&save);
        assert!(!changed.contains("9000:9010"), "{changed}");
        assert_eq!(
            changed.matches("-j FAULTLINE_INBOUND").count(),
            1,
            "{changed}"
        );

        pair.init_ok(&["--backend", backend, "--clean"]);
        assert_eq!(
            pair.nat_rules(&save),
            pristine,
            "{backend}: --clean left IPv4 rules"
        );
        assert_eq!(
            pair.nat_rules(&save6),
            pristine6,
            "{backend}: --clean left IPv6 rules"
        );
        pair.init_ok(&["--backend", backend, "--clean"]);
        assert_eq!(
            pair.nat_rules(&save),
            pristine,
            "{backend}: second --clean changed something"
        );
    }
}

#[test]
fn auto_backend_uses_the_one_that_already_has_rules() {
    let Some(pair) = setup("auto", false) else {
        return;
    };
    let out = pair.exec(
        &pair.pod,
        "iptables-legacy",
        &[
            "-t",
            "nat",
            "-A",
            "OUTPUT",
            "-d",
            "10.9.9.9/32",
            "-j",
            "RETURN",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    pair.init_ok(&[]);
    assert!(
        pair.nat_rules("iptables-legacy-save")
            .contains("FAULTLINE_INBOUND")
    );
    assert!(!pair.nat_rules("iptables-nft-save").contains("FAULTLINE"));

    let Some(fresh) = setup("autonft", false) else {
        return;
    };
    fresh.init_ok(&[]);
    assert!(
        fresh
            .nat_rules("iptables-nft-save")
            .contains("FAULTLINE_INBOUND")
    );
    assert!(
        !fresh
            .nat_rules("iptables-legacy-save")
            .contains("FAULTLINE")
    );
}

/// The exact argv the webhook's `mutate` builds, including an empty include
/// list (a pod that declares no ports): accepted, no inbound capture, outbound still captured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_command_line_is_accepted() {
    let Some(pair) = setup("webhook", false) else {
        return;
    };
    pair.init_ok(&[
        "--inbound-capture-port",
        "15406",
        "--outbound-capture-port",
        "15401",
        "--proxy-uid",
        "15400",
        "--proxy-gid",
        "15400",
        "--admin-port",
        "15400",
        "--include-inbound-ports",
        "",
        "--exclude-outbound-ports",
        "5432",
        "--exclude-outbound-cidrs",
        "169.254.169.254/32,10.96.0.0/12",
    ]);
    original_dst_server(&pair.pod, v4([0, 0, 0, 0].into(), 15401));
    original_dst_server(&pair.pod, v4([0, 0, 0, 0].into(), 15406));
    banner_server(&pair.pod, v4([0, 0, 0, 0].into(), 8080), "app");
    assert_eq!(
        read_from(&pair.peer, v4(POD_IP, 8080)).await,
        "app from 10.240.0.1"
    );
    assert_eq!(
        read_from(&pair.pod, v4(PEER_IP, 9000)).await,
        "orig=10.240.0.1:9000"
    );
}
