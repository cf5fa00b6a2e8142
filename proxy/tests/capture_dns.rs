//! DNS capture end to end in real network namespaces: `faultline-proxy
//! init` in a pod namespace, the real proxy as UID 15400 with a DNS
//! listener, a resolver stand-in in the peer namespace on port 53, and
//! glibc's own resolver (`getent`) as the app, reading the pod's
//! `resolv.conf` (`ip netns exec` mounts `/etc/netns/<pod>/resolv.conf`
//! over `/etc/resolv.conf`, for the app and the proxy alike). Without
//! `--capture-dns` lookups go straight to the resolver whatever the
//! policy; with it, UDP and TCP lookups are captured and faulted.
mod capture;

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use capture::{NetnsPair, PEER_IP, PEER_IP6, in_netns, setup, v4, v6};

const A: u16 = 1;
const AAAA: u16 = 28;
const NXDOMAIN: u8 = 3;
use faultline_test_support::dns::{self, ANSWER_V4, Resolver, Transport};
use faultline_test_support::metrics;

const POLICY: &str = r#"
rules:
- name: shop-gone
  match: {protocol: dns, dns: {name: "*.shop.test", types: [A, AAAA]}}
  dns: {rcode: NXDOMAIN}
"#;

/// `/etc/netns/<pod>/resolv.conf`, removed with the test.
struct ResolvConf(std::path::PathBuf);

impl ResolvConf {
    fn write(pod: &str, text: &str) -> Self {
        let dir = std::path::PathBuf::from("/etc/netns").join(pod);
        std::fs::create_dir_all(&dir).expect("create /etc/netns/<pod>");
        std::fs::write(dir.join("resolv.conf"), text).expect("write resolv.conf");
        Self(dir)
    }

    fn rewrite(&self, text: &str) {
        std::fs::write(self.0.join("resolv.conf"), text).expect("write resolv.conf");
    }
}

impl Drop for ResolvConf {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The resolver stand-in on port 53 of `addr` in the peer namespace.
fn resolver(ns: &str, addr: SocketAddr) -> Resolver {
    let (udp, tcp) = in_netns(ns, move || {
        (
            std::net::UdpSocket::bind(addr).expect("bind UDP 53"),
            std::net::TcpListener::bind(addr).expect("bind TCP 53"),
        )
    });
    Resolver::serve(udp, tcp).expect("serve")
}

/// `getent ahostsv4 NAME` in the pod (glibc's stub resolver): the
/// addresses, or `None` when the name does not resolve.
async fn lookup(pair: &NetnsPair, name: &str) -> Option<String> {
    let (pod, name) = (pair.pod.clone(), name.to_owned());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("ip")
            .args(["netns", "exec", &pod, "getent", "ahostsv4", &name])
            .output()
            .expect("run getent")
    })
    .await
    .expect("getent task");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One query over UDP from a socket in namespace `ns`, as an app sends it
/// to its resolver; the answer (the test fails without one).
async fn ask(ns: &str, server: SocketAddr, msg: &[u8]) -> Vec<u8> {
    let local: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = in_netns(ns, move || std::net::UdpSocket::bind(local)).expect("bind in netns");
    socket.set_nonblocking(true).expect("nonblocking");
    let socket = tokio::net::UdpSocket::from_std(socket).expect("tokio socket");
    socket.send_to(msg, server).await.expect("send");
    let mut buf = vec![0u8; 4096];
    let (len, from) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf))
        .await
        .expect("an answer within 5 s")
        .expect("recv");
    assert_eq!(from, server, "the answer comes from the resolver's address");
    buf.truncate(len);
    buf
}

/// The proxy's environment: its DNS listener on the port `init` redirects to.
const PROXY_ENV: &[(&str, &str)] = &[
    ("FAULTLINE_DNS_ADDR", "127.0.0.1:15402"),
    ("FAULTLINE_LOG", "info"),
];

fn faults(text: &str) -> f64 {
    metrics::value(
        text,
        "faultline_faults_injected_total{rule=\"shop-gone\",kind=\"dns\"}",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_is_captured_and_faulted_only_with_the_opt_in() {
    let Some(mut pair) = setup("dns", false) else {
        return;
    };
    let resolver = resolver(&pair.peer, v4(PEER_IP, 53));
    let conf = ResolvConf::write(
        &pair.pod,
        &format!("nameserver {PEER_IP}\noptions timeout:1 attempts:1\n"),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    pair.start_proxy(&dir, POLICY, PROXY_ENV);
    let admin = v4(capture::POD_IP, 15400);
    pair.wait_ready(admin).await;

    // Capture without the opt-in: DNS is untouched, whatever the policy.
    pair.init_ok(&["--backend", "nft", "--ipv6", "off"]);
    let answer = lookup(&pair, "db.shop.test.")
        .await
        .expect("resolves without capture");
    assert!(answer.contains(&ANSWER_V4.to_string()), "{answer}");
    let text = pair.metrics(admin).await;
    assert_eq!(
        metrics::sum(&text, "faultline_dns_queries_total", None),
        0.0,
        "{text}"
    );
    let direct = resolver.queries().len();
    assert!(direct >= 1);

    // With it: the same lookup is answered NXDOMAIN by the proxy, and
    // other names resolve through it.
    pair.init_ok(&["--backend", "nft", "--ipv6", "off", "--capture-dns"]);
    let first = pair.nat_rules("iptables-nft-save");
    pair.init_ok(&["--backend", "nft", "--ipv6", "off", "--capture-dns"]);
    assert_eq!(
        pair.nat_rules("iptables-nft-save"),
        first,
        "init --capture-dns is idempotent"
    );
    let gone = ask(
        &pair.pod,
        v4(PEER_IP, 53),
        &dns::query(7, "db.shop.test", A),
    )
    .await;
    assert_eq!(dns::rcode_and_answers(&gone), Some((NXDOMAIN, 0)));
    assert_eq!(
        lookup(&pair, "db.shop.test.").await,
        None,
        "NXDOMAIN from the proxy"
    );
    let other = lookup(&pair, "api.other.test.")
        .await
        .expect("a clean name resolves");
    assert!(other.contains(&ANSWER_V4.to_string()), "{other}");
    let text = pair.metrics(admin).await;
    assert!(faults(&text) >= 2.0, "{text}");
    assert!(
        metrics::value(&text, "faultline_dns_queries_total{transport=\"udp\"}") >= 3.0,
        "{text}"
    );
    // The faulted name never reached the resolver; the clean one did, from
    // the proxy (not captured again: its UID is exempt).
    let forwarded: Vec<_> = resolver.queries()[direct..].to_vec();
    assert!(!forwarded.is_empty());
    assert!(forwarded.iter().all(|(t, q)| *t == Transport::Udp
        && dns::question(q).is_some_and(|(name, _, _)| name == "api.other.test")));

    // DNS over TCP (glibc's `use-vc`) is captured too.
    conf.rewrite(&format!(
        "nameserver {PEER_IP}\noptions timeout:1 attempts:1 use-vc\n"
    ));
    assert_eq!(lookup(&pair, "web.shop.test.").await, None);
    assert!(lookup(&pair, "tcp.other.test.").await.is_some());
    let text = pair.metrics(admin).await;
    assert!(
        metrics::value(&text, "faultline_dns_queries_total{transport=\"tcp\"}") >= 2.0,
        "{text}"
    );
    assert!(resolver.queries().iter().any(|(t, _)| *t == Transport::Tcp));

    // Clean-up removes the DNS rules with the rest.
    pair.init_ok(&["--backend", "nft", "--clean"]);
    assert!(!pair.nat_rules("iptables-nft-save").contains("FAULTLINE"));
    assert!(
        lookup(&pair, "db.shop.test.").await.is_some(),
        "resolves again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_capture_is_mirrored_for_ipv6() {
    let Some(mut pair) = setup("dns6", true) else {
        return;
    };
    let resolver = resolver(&pair.peer, v6(PEER_IP6, 53));
    let _conf = ResolvConf::write(&pair.pod, &format!("nameserver {PEER_IP6}\n"));
    let dir = tempfile::tempdir().expect("tempdir");
    pair.start_proxy(&dir, POLICY, PROXY_ENV);
    let admin = v4(capture::POD_IP, 15400);
    pair.wait_ready(admin).await;
    pair.init_ok(&["--backend", "nft", "--ipv6", "on", "--capture-dns"]);
    assert!(
        pair.nat_rules("ip6tables-nft-save")
            .contains("FAULTLINE_DNS")
    );

    let server = v6(PEER_IP6, 53);
    let gone = ask(&pair.pod, server, &dns::query(1, "db.shop.test", AAAA)).await;
    assert_eq!(dns::rcode_and_answers(&gone), Some((NXDOMAIN, 0)));
    let clean = ask(&pair.pod, server, &dns::query(2, "api.other.test", AAAA)).await;
    assert_eq!(dns::rcode_and_answers(&clean), Some((0, 1)));
    let text = pair.metrics(admin).await;
    assert_eq!(faults(&text), 1.0, "{text}");
    let names: Vec<String> = resolver
        .queries()
        .iter()
        .filter_map(|(_, q)| dns::question(q).map(|(name, _, _)| name))
        .collect();
    assert_eq!(
        names,
        ["api.other.test"],
        "only the clean query reached the resolver"
    );
}
