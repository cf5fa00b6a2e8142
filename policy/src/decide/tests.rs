//! Decision tests: every matcher, probes, rule order, `percent` accuracy,
//! delay distributions and `first: N`, all with a seeded RNG.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method, StatusCode};
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::*;

const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 1, 0, 5));
const SERVER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 2, 0, 9));

fn rng() -> StdRng {
    StdRng::seed_from_u64(0x5eed)
}

fn compiled(doc: &str) -> CompiledPolicy {
    compile(&parse(doc).unwrap(), &PeerIps::new())
}

/// Owned parts of a request, borrowed by `info()`.
struct Req {
    direction: Direction,
    port: u16,
    protocol: Protocol,
    method: Method,
    path: String,
    headers: HeaderMap,
    source: IpAddr,
    destination: IpAddr,
    host: Option<String>,
}

impl Req {
    fn new() -> Self {
        Self {
            direction: Direction::Inbound,
            port: 8080,
            protocol: Protocol::Http,
            method: Method::GET,
            path: "/".into(),
            headers: HeaderMap::new(),
            source: CLIENT,
            destination: SERVER,
            host: None,
        }
    }

    fn header(mut self, name: &'static str, value: &'static str) -> Self {
        self.headers.append(name, HeaderValue::from_static(value));
        self
    }

    fn info(&self) -> RequestInfo<'_> {
        RequestInfo {
            direction: self.direction,
            destination_port: self.port,
            protocol: self.protocol,
            method: &self.method,
            path: &self.path,
            headers: &self.headers,
            source_ip: self.source,
            destination_ip: self.destination,
            host: self.host.as_deref(),
        }
    }

    /// The name of the rule that fires, if any.
    fn hits(&self, policy: &CompiledPolicy) -> Option<String> {
        policy
            .decide_request(&self.info(), &mut rng())
            .map(|d| d.rule_name.to_string())
    }
}

fn conn(direction: Direction, port: u16, source: IpAddr, destination: IpAddr) -> ConnInfo {
    ConnInfo {
        direction,
        destination_port: port,
        source_ip: source,
        destination_ip: destination,
    }
}

fn one(matcher: &str) -> CompiledPolicy {
    compiled(&format!(
        "rules:\n- name: hit\n  match: {matcher}\n  abort: {{status: 500}}\n"
    ))
}

fn hit() -> Option<String> {
    Some("hit".into())
}

#[test]
fn empty_match_hits_everything_but_probes() {
    let p = one("{}");
    assert_eq!(Req::new().hits(&p), hit());
    assert_eq!(
        Req::new().header("user-agent", "kube-probe/1.30").hits(&p),
        None
    );
    assert_eq!(Req::new().header("user-agent", "curl/8").hits(&p), hit());
}

#[test]
fn probes_true_faults_probes_too() {
    let p = one("{probes: true}");
    assert_eq!(
        Req::new().header("user-agent", "kube-probe/1.30").hits(&p),
        hit()
    );
}

#[test]
fn matches_direction_and_port() {
    let p = one("{direction: outbound, port: [80, \"8000-8010\"]}");
    let mut r = Req::new();
    assert_eq!(r.hits(&p), None, "inbound");
    r.direction = Direction::Outbound;
    r.port = 80;
    assert_eq!(r.hits(&p), hit());
    r.port = 8005;
    assert_eq!(r.hits(&p), hit());
    r.port = 8011;
    assert_eq!(r.hits(&p), None);
}

#[test]
fn matches_protocol() {
    let p = one("{protocol: grpc}");
    let mut r = Req::new();
    assert_eq!(r.hits(&p), None);
    r.protocol = Protocol::Grpc;
    assert_eq!(r.hits(&p), hit());
    let http = one("{protocol: http}");
    assert_eq!(r.hits(&http), None, "gRPC is not protocol http");
    let mut h = HeaderMap::new();
    h.insert(
        "content-type",
        HeaderValue::from_static("application/grpc+proto"),
    );
    assert_eq!(Protocol::of_request(&h), Protocol::Grpc);
    assert_eq!(Protocol::of_request(&HeaderMap::new()), Protocol::Http);
}

#[test]
fn matches_methods_case_insensitively_in_the_policy() {
    let p = one("{methods: [post, PUT]}");
    let mut r = Req::new();
    assert_eq!(r.hits(&p), None);
    r.method = Method::POST;
    assert_eq!(r.hits(&p), hit());
    r.method = Method::PUT;
    assert_eq!(r.hits(&p), hit());
}

#[test]
fn matches_other_methods_exactly_as_written() {
    let p = one("{methods: [PURGE, \"M-SEARCH\"]}");
    let mut r = Req::new();
    r.method = Method::from_bytes(b"PURGE").unwrap();
    assert_eq!(r.hits(&p), hit());
    r.method = Method::from_bytes(b"M-SEARCH").unwrap();
    assert_eq!(r.hits(&p), hit());
    // Methods are case-sensitive: `purge` is another method.
    r.method = Method::from_bytes(b"purge").unwrap();
    assert_eq!(r.hits(&p), None);
}

#[test]
fn matches_paths_exact_prefix_and_glob() {
    let cases = [
        ("/healthz", "/healthz", true),
        ("/healthz", "/healthz/x", false),
        ("/api/*", "/api/checkout", true),
        ("/api/*", "/api", false),
        ("/api/checkout*", "/api/checkout/123", true),
        ("/api/checkout*", "/api/checkou", false),
        ("/users/*/orders", "/users/42/orders", true),
        ("/users/*/orders", "/users/42/orders/7", false),
        ("/a/*/b/*/c", "/a/1/b/2/c", true),
        ("/a/*/b/*/c", "/a/1/c", false),
        ("*.json", "/x/y.json", true),
        ("*", "/anything", true),
        ("/inventory.Stock/*", "/inventory.Stock/Get", true),
        ("/q", "/q?x=1", true),
    ];
    for (pattern, path, expect) in cases {
        let p = one(&format!("{{path: \"{pattern}\"}}"));
        let mut r = Req::new();
        r.path = path.into();
        assert_eq!(r.hits(&p).is_some(), expect, "{pattern} vs {path}");
    }
}

#[test]
fn matches_headers_by_name_and_value_pattern() {
    let p = one("{headers: {X-Test-User: \"*\", x-tier: \"gold*\"}}");
    assert_eq!(
        Req::new().header("x-test-user", "a").hits(&p),
        None,
        "needs both headers"
    );
    assert_eq!(
        Req::new()
            .header("x-test-user", "a")
            .header("x-tier", "golden")
            .hits(&p),
        hit()
    );
    assert_eq!(
        Req::new()
            .header("x-test-user", "a")
            .header("x-tier", "silver")
            .hits(&p),
        None
    );
    // Any of several values may match.
    let r = Req::new()
        .header("x-test-user", "")
        .header("x-tier", "silver")
        .header("x-tier", "gold");
    assert_eq!(r.hits(&p), hit());
    let exact = one("{headers: {x-v: \"2\"}}");
    assert_eq!(Req::new().header("x-v", "2").hits(&exact), hit());
    assert_eq!(Req::new().header("x-v", "20").hits(&exact), None);
}

#[test]
fn matches_hosts_with_short_forms_ports_and_wildcards() {
    let p = one("{host: payments.shop.svc.cluster.local}");
    for (authority, expect) in [
        (Some("payments.shop.svc.cluster.local"), true),
        (Some("PAYMENTS.shop.svc.cluster.local:80"), true),
        (Some("payments.shop.svc"), true),
        (Some("payments.shop:8080"), true),
        (Some("user@payments.shop.svc:80"), true),
        (Some("payments"), true),
        (Some("payments.other"), false),
        (Some("checkout"), false),
        (None, false),
    ] {
        let mut r = Req::new();
        r.host = authority.map(str::to_owned);
        assert_eq!(r.hits(&p).is_some(), expect, "{authority:?}");
    }
    let wild = one("{host: \"*.example.com\"}");
    let mut r = Req::new();
    r.host = Some("api.Example.com:443".into());
    assert_eq!(r.hits(&wild), hit());
    r.host = Some("example.com".into());
    assert_eq!(r.hits(&wild), None);
    let ip = one("{host: \"::1\"}");
    r.host = Some("[::1]:8080".into());
    assert_eq!(r.hits(&ip), hit());
}

#[test]
fn matches_source_and_destination_cidrs_across_families() {
    let p = one("{from: {cidrs: [10.1.0.0/16]}, to: {cidrs: [10.2.0.9, \"fd00::/8\"]}}");
    assert_eq!(Req::new().hits(&p), hit());
    let mut r = Req::new();
    r.source = IpAddr::V6(Ipv4Addr::new(10, 1, 2, 3).to_ipv6_mapped());
    r.destination = "fd00::1".parse().unwrap();
    assert_eq!(r.hits(&p), hit(), "IPv4-mapped source, IPv6 destination");
    r.source = IpAddr::V4(Ipv4Addr::new(10, 3, 0, 1));
    assert_eq!(r.hits(&p), None);
}

#[test]
fn matches_pod_selectors_through_resolved_peers() {
    let doc =
        "rules:\n- {name: hit, match: {to: {podSelector: {app: nats}}}, abort: {status: 500}}\n";
    let policy = parse(doc).unwrap();
    let unresolved = compile(&policy, &PeerIps::new());
    assert_eq!(Req::new().hits(&unresolved), None, "no pods selected yet");
    let peers = PeerIps::from([(
        "app=nats".to_owned(),
        vec![SERVER, IpAddr::V6(Ipv6Addr::LOCALHOST)],
    )]);
    let resolved = compile(&policy, &peers);
    assert_eq!(Req::new().hits(&resolved), hit());
    let mut r = Req::new();
    r.destination = IpAddr::V4(Ipv4Addr::new(10, 2, 0, 10));
    assert_eq!(r.hits(&resolved), None);
}

#[test]
fn first_matching_rule_wins_and_misses_fall_through() {
    let p = compiled(
        "rules:\n- {name: a, match: {port: 9}, hang: {}}\n- {name: b, percent: 0, hang: {}}\n- {name: c, hang: {}}\n- {name: d, hang: {}}\n",
    );
    assert_eq!(Req::new().hits(&p).as_deref(), Some("c"));
    let mut r = Req::new();
    r.port = 9;
    assert_eq!(r.hits(&p).as_deref(), Some("a"));
}

#[test]
fn decisions_carry_the_prepared_fault() {
    let p = compiled(
        r#"rules:
- {match: {port: 1}, abort: {status: 503, body: "injected by faultline", headers: {retry-after: "3"}}}
- {match: {port: 2, protocol: grpc}, abort: {grpc: UNAVAILABLE, message: "down 100%"}}
- {match: {port: 3}, respond: {body: ok}}
- {match: {port: 4}, bandwidth: {rate: 1KiB}}
- {match: {port: 5}, delay: {fixed: 20ms, side: response}}
"#,
    );
    let at = |port: u16, protocol: Protocol| {
        let mut r = Req::new();
        r.port = port;
        r.protocol = protocol;
        p.decide_request(&r.info(), &mut rng()).unwrap()
    };
    let d = at(1, Protocol::Http);
    assert_eq!(
        (d.rule_index, &**d.rule_name, d.kind),
        (0, "rules[0]", FaultKind::Abort)
    );
    let Action::Abort(AbortAction::Http(resp)) = d.action else {
        panic!("{d:?}")
    };
    assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.body, "injected by faultline");
    assert_eq!(resp.headers["retry-after"], "3");
    assert_eq!(resp.headers["content-type"], "text/plain; charset=utf-8");

    let Action::Abort(AbortAction::Grpc(g)) = at(2, Protocol::Grpc).action else {
        panic!()
    };
    assert_eq!(g.status_header(), "14");
    assert_eq!(g.message.as_ref().unwrap(), "down 100%25");

    let Action::Respond(resp) = at(3, Protocol::Http).action else {
        panic!()
    };
    assert_eq!((resp.status, &resp.body[..]), (StatusCode::OK, &b"ok"[..]));
    assert_eq!(
        at(4, Protocol::Http).action,
        Action::Bandwidth(BandwidthLimit::Connection(1024))
    );
    assert_eq!(
        at(5, Protocol::Http).action,
        Action::Delay {
            duration: Duration::from_millis(20),
            side: DelaySide::Response
        }
    );
}

#[test]
fn connection_stage_sees_only_partition_and_reset() {
    let doc = "rules:\n- {name: web, abort: {status: 500}}\n- {name: cut, match: {direction: outbound, to: {podSelector: {app: nats}}}, partition: {mode: drop}}\n- {name: rst, match: {port: 4222}, reset: {afterBytes: 10}}\n";
    let peers = PeerIps::from([("app=nats".to_owned(), vec![SERVER])]);
    let p = compile(&parse(doc).unwrap(), &peers);
    let d = p
        .decide_connection(&conn(Direction::Outbound, 4222, CLIENT, SERVER), &mut rng())
        .unwrap();
    assert_eq!(
        (&**d.rule_name, d.action),
        (
            "cut",
            Action::Partition {
                mode: PartitionMode::Drop
            }
        )
    );
    let d = p
        .decide_connection(&conn(Direction::Inbound, 4222, CLIENT, SERVER), &mut rng())
        .unwrap();
    assert_eq!(
        d.action,
        Action::Reset {
            after_bytes: Some(10),
            after: None
        }
    );
    assert!(
        p.decide_connection(&conn(Direction::Inbound, 80, CLIENT, SERVER), &mut rng())
            .is_none()
    );
    // Connection faults are not request faults.
    let mut r = Req::new();
    r.port = 4222;
    assert_eq!(r.hits(&p).as_deref(), Some("web"));
}

#[test]
fn tcp_stage_sees_l4_rules_without_http_parts() {
    let doc = r#"rules:
- {name: path, match: {path: /x}, delay: {fixed: 1s}}
- {name: status, abort: {status: 500}}
- {name: grpc, match: {protocol: grpc}, hang: {}}
- {name: tcp-only, match: {protocol: tcp, port: 5432}, abort: {reset: true}}
- {name: any, match: {port: 6379}, bandwidth: {bytesPerSecond: 10}}
"#;
    let p = compiled(doc);
    let on = |port| {
        p.decide_tcp(&conn(Direction::Outbound, port, CLIENT, SERVER), &mut rng())
            .map(|d| d.rule_name.to_string())
    };
    assert_eq!(on(5432).as_deref(), Some("tcp-only"));
    assert_eq!(on(6379).as_deref(), Some("any"));
    assert_eq!(on(80), None);
    let mut r = Req::new();
    r.port = 5432;
    r.path = "/y".into();
    assert_eq!(
        r.hits(&p).as_deref(),
        Some("status"),
        "protocol tcp rules never see requests"
    );
}

#[test]
fn probes_true_widens_a_rule_so_it_still_acts_on_raw_tcp() {
    let p =
        compiled("rules:\n- {name: wide, match: {probes: true, port: 5432}, delay: {fixed: 1s}}\n");
    let hit = p
        .decide_tcp(&conn(Direction::Outbound, 5432, CLIENT, SERVER), &mut rng())
        .map(|d| d.rule_name.to_string());
    assert_eq!(hit.as_deref(), Some("wide"));
}

fn tls(sni: Option<&str>) -> TlsInfo<'_> {
    TlsInfo { sni }
}

#[test]
fn tls_stage_matches_sni_and_host_against_the_server_name() {
    let doc = r#"rules:
- {name: stripe, match: {sni: "*.stripe.com"}, abort: {reset: true}}
- {name: payments, match: {host: payments.shop.svc.cluster.local}, delay: {fixed: 1s}}
- {name: any-tls, match: {protocol: tls, port: 8443}, hang: {}}
- {name: raw, match: {protocol: tcp, port: 9443}, bandwidth: {rate: 1KiB}}
"#;
    let p = compiled(doc);
    let c = |port| conn(Direction::Outbound, port, CLIENT, SERVER);
    let on = |port, sni| {
        p.decide_tls(&c(port), tls(sni), &mut rng())
            .map(|d| d.rule_name.to_string())
    };
    assert_eq!(on(443, Some("api.stripe.com")).as_deref(), Some("stripe"));
    assert_eq!(on(443, Some("API.Stripe.COM.")).as_deref(), Some("stripe"));
    assert_eq!(on(443, Some("stripe.com")), None, "*. needs a subdomain");
    // `host` is the SNI on TLS, with the cluster short forms.
    assert_eq!(on(443, Some("payments.shop")).as_deref(), Some("payments"));
    // A user-info or port in an SNI is part of the name: no match.
    assert_eq!(on(443, Some("x@api.stripe.com:443")), None);
    assert_eq!(
        on(443, None),
        None,
        "no SNI: sni and host rules do not match"
    );
    assert_eq!(on(8443, None).as_deref(), Some("any-tls"));
    // protocol: tcp keeps including TLS.
    assert_eq!(on(9443, Some("db")).as_deref(), Some("raw"));
    // Raw TCP that is not TLS: only the rules without TLS parts.
    let raw = |port| {
        p.decide_tcp(&c(port), &mut rng())
            .map(|d| d.rule_name.to_string())
    };
    assert_eq!(raw(443), None);
    assert_eq!(raw(8443), None);
    assert_eq!(raw(9443).as_deref(), Some("raw"));
    // HTTP requests: host keeps matching the authority; sni, tls and tcp
    // rules never see requests.
    let mut r = Req::new();
    r.host = Some("payments:80".into());
    assert_eq!(r.hits(&p).as_deref(), Some("payments"));
    r.host = Some("api.stripe.com".into());
    r.port = 8443;
    assert_eq!(r.hits(&p), None);
}

#[test]
fn connection_rules_with_tls_parts_wait_for_the_client_hello() {
    let doc = r#"rules:
- {name: plain, match: {port: 5432}, partition: {}}
- {name: stripe, match: {sni: api.stripe.com, port: 443}, partition: {mode: drop}}
- {name: later, match: {port: 443}, reset: {afterBytes: 100}}
- {name: tls-cut, match: {protocol: tls, port: 8443}, reset: {after: 1s}}
"#;
    let p = compiled(doc);
    let c = |port| conn(Direction::Outbound, port, CLIENT, SERVER);
    // No rule with TLS parts applies to port 5432: decided at once.
    assert!(!p.connection_waits_for_tls(&c(5432)));
    assert!(!p.needs_sni(&c(5432)));
    assert_eq!(
        p.decide_connection(&c(5432), &mut rng())
            .map(|d| d.rule_name.to_string())
            .as_deref(),
        Some("plain")
    );
    // Port 443 waits, and the rules keep their order once the hello is read.
    assert!(p.connection_waits_for_tls(&c(443)));
    assert!(p.needs_sni(&c(443)));
    let after = |port, t: Option<TlsInfo<'_>>| {
        p.decide_connection_with_tls(&c(port), t, &mut rng())
            .map(|d| d.rule_name.to_string())
    };
    assert_eq!(
        after(443, Some(tls(Some("api.stripe.com")))).as_deref(),
        Some("stripe")
    );
    assert_eq!(
        after(443, Some(tls(Some("api.github.com")))).as_deref(),
        Some("later")
    );
    assert_eq!(after(443, None).as_deref(), Some("later"), "not TLS");
    // protocol: tls needs detection, not the server name.
    assert!(p.connection_waits_for_tls(&c(8443)));
    assert!(!p.needs_sni(&c(8443)));
    assert_eq!(after(8443, Some(tls(None))).as_deref(), Some("tls-cut"));
    assert_eq!(after(8443, None), None);
}

#[test]
fn sni_rules_are_only_asked_about_where_they_could_apply() {
    let p = compiled(
        "rules:\n- {match: {sni: \"*.stripe.com\", direction: outbound, port: 443}, delay: {fixed: 1s}}\n",
    );
    assert!(p.needs_sni(&conn(Direction::Outbound, 443, CLIENT, SERVER)));
    assert!(!p.needs_sni(&conn(Direction::Inbound, 443, CLIENT, SERVER)));
    assert!(!p.needs_sni(&conn(Direction::Outbound, 80, CLIENT, SERVER)));
    assert!(!p.connection_waits_for_tls(&conn(Direction::Outbound, 443, CLIENT, SERVER)));
    assert!(!compiled("rules: []\n").needs_sni(&conn(Direction::Outbound, 443, CLIENT, SERVER)));
}

/// Five standard deviations of a binomial count.
fn five_sigma(n: f64, p: f64) -> f64 {
    5.0 * (n * p * (1.0 - p)).sqrt()
}

#[test]
fn percent_is_accurate_including_fractions() {
    const N: usize = 100_000;
    for percent in [20.0, 0.5, 99.9] {
        let p = compiled(&format!("rules:\n- {{percent: {percent}, hang: {{}}}}\n"));
        let req = Req::new();
        let mut rng = rng();
        let hits = (0..N)
            .filter(|_| p.decide_request(&req.info(), &mut rng).is_some())
            .count();
        let expected = N as f64 * percent / 100.0;
        let bound = five_sigma(N as f64, percent / 100.0);
        assert!(
            (hits as f64 - expected).abs() <= bound,
            "{percent}%: {hits} hits, expected {expected} ± {bound}"
        );
    }
}

#[test]
fn percent_extremes_are_exact() {
    let req = Req::new();
    let mut r = rng();
    let never = compiled("rules:\n- {percent: 0, hang: {}}\n");
    let always = compiled("rules:\n- {percent: 100, hang: {}}\n");
    assert!((0..10_000).all(|_| never.decide_request(&req.info(), &mut r).is_none()));
    assert!((0..10_000).all(|_| always.decide_request(&req.info(), &mut r).is_some()));
}

#[test]
fn same_seed_gives_same_decisions() {
    let p = compiled("rules:\n- {percent: 50, delay: {normal: {mean: 100ms, stddev: 30ms}}}\n");
    let req = Req::new();
    let run = || {
        let mut r = StdRng::seed_from_u64(7);
        (0..200)
            .map(|_| p.decide_request(&req.info(), &mut r).map(|d| d.action))
            .collect::<Vec<_>>()
    };
    assert_eq!(run(), run());
}

fn delay_samples(doc: &str, n: usize) -> Vec<f64> {
    let p = compiled(doc);
    let req = Req::new();
    let mut r = rng();
    (0..n)
        .map(
            |_| match p.decide_request(&req.info(), &mut r).map(|d| d.action) {
                Some(Action::Delay { duration, .. }) => duration.as_secs_f64() * 1000.0,
                other => panic!("{other:?}"),
            },
        )
        .collect()
}

fn mean_stddev(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

#[test]
fn fixed_delay_with_uniform_jitter() {
    let xs = delay_samples("rules:\n- {delay: {fixed: 200ms, jitter: 50ms}}\n", 100_000);
    let (mean, sd) = mean_stddev(&xs);
    let uniform_sd = 100.0 / 12f64.sqrt(); // width 100 ms
    assert!(
        (mean - 200.0).abs() < 5.0 * uniform_sd / (xs.len() as f64).sqrt(),
        "mean {mean}"
    );
    assert!((sd - uniform_sd).abs() < 0.02 * uniform_sd, "sd {sd}");
    assert!(xs.iter().all(|x| (150.0..=250.0).contains(x)));
    assert!(
        xs.iter().any(|x| *x < 155.0) && xs.iter().any(|x| *x > 245.0),
        "covers the whole range"
    );
    let fixed = delay_samples("rules:\n- {delay: {fixed: 200ms}}\n", 100);
    assert!(fixed.iter().all(|x| *x == 200.0));
}

#[test]
fn normal_delay_has_its_mean_and_stddev() {
    let xs = delay_samples(
        "rules:\n- {delay: {normal: {mean: 200ms, stddev: 40ms}}}\n",
        100_000,
    );
    let (mean, sd) = mean_stddev(&xs);
    assert!(
        (mean - 200.0).abs() < 5.0 * 40.0 / (xs.len() as f64).sqrt(),
        "mean {mean}"
    );
    assert!((sd - 40.0).abs() < 0.02 * 40.0, "sd {sd}");
}

#[test]
fn normal_delay_is_clamped_at_zero() {
    // mean 10 ms, stddev 50 ms: P(sample < 0) = P(Z < -0.2) = 0.4207.
    let xs = delay_samples(
        "rules:\n- {delay: {normal: {mean: 10ms, stddev: 50ms}}}\n",
        100_000,
    );
    let zeros = xs.iter().filter(|x| **x == 0.0).count() as f64;
    let n = xs.len() as f64;
    assert!(
        (zeros - 0.4207 * n).abs() < five_sigma(n, 0.4207),
        "{zeros} zeros"
    );
    assert!(xs.iter().all(|x| *x >= 0.0));
}

/// Checks that the share of samples at or below `x` is `p`, within five
/// standard deviations of a binomial count (a quantile test that does not
/// depend on the density around the quantile).
fn assert_cdf(xs: &[f64], x: f64, p: f64) {
    let n = xs.len() as f64;
    let below = xs.iter().filter(|v| **v <= x).count() as f64;
    assert!(
        (below - p * n).abs() <= five_sigma(n, p),
        "P(X <= {x} ms) is {}, expected {p}",
        below / n
    );
}

#[test]
fn uniform_delay_covers_min_to_max_evenly() {
    let xs = delay_samples(
        "rules:\n- {delay: {uniform: {min: 100ms, max: 300ms}}}\n",
        100_000,
    );
    assert!(xs.iter().all(|x| (100.0..=300.0).contains(x)));
    for (x, p) in [(150.0, 0.25), (200.0, 0.5), (290.0, 0.95)] {
        assert_cdf(&xs, x, p);
    }
    assert!(
        xs.iter().any(|x| *x < 101.0) && xs.iter().any(|x| *x > 299.0),
        "covers the whole range"
    );
    let same = delay_samples("rules:\n- {delay: {uniform: {min: 7ms, max: 7ms}}}\n", 100);
    assert!(same.iter().all(|x| *x == 7.0));
}

#[test]
fn lognormal_delay_has_its_median_and_p99() {
    let xs = delay_samples(
        "rules:\n- {delay: {lognormal: {median: 100ms, p99: 1s}}}\n",
        100_000,
    );
    assert!(xs.iter().all(|x| *x > 0.0));
    assert_cdf(&xs, 100.0, 0.5);
    assert_cdf(&xs, 1000.0, 0.99);
    // sigma = ln(10) / z(0.99) = 0.98982: the 90th percentile is
    // 100 ms * exp(1.28155 * 0.98982) = 355.4 ms.
    assert_cdf(&xs, 355.4, 0.9);
}

#[test]
fn lognormal_delay_is_capped_at_max() {
    // P(X > 2 s) = P(Z > ln(20) / 0.98982) = P(Z > 3.0265) = 0.001237.
    let xs = delay_samples(
        "rules:\n- {delay: {lognormal: {median: 100ms, p99: 1s, max: 2s}}}\n",
        200_000,
    );
    assert!(xs.iter().all(|x| *x > 0.0 && *x <= 2000.0));
    let n = xs.len() as f64;
    let at_max = xs.iter().filter(|x| **x == 2000.0).count() as f64;
    assert!(
        (at_max - 0.001237 * n).abs() <= five_sigma(n, 0.001237),
        "{at_max} samples at max"
    );
    assert_cdf(&xs, 100.0, 0.5);
}

#[test]
fn pareto_delay_has_its_tail_and_stays_within_scale_and_max() {
    // P(X > x) = (scale / x)^shape: the median is 10 ms * 2^(1/1.5) =
    // 15.874 ms, P(X <= 50 ms) = 1 - 0.2^1.5 = 0.91056, and every sample
    // beyond max, P = 0.05^1.5 = 0.011180, waits exactly max.
    let xs = delay_samples(
        "rules:\n- {delay: {pareto: {scale: 10ms, shape: 1.5, max: 200ms}}}\n",
        100_000,
    );
    assert!(xs.iter().all(|x| (10.0..=200.0).contains(x)));
    assert_cdf(&xs, 15.874, 0.5);
    assert_cdf(&xs, 50.0, 0.91056);
    let n = xs.len() as f64;
    let at_max = xs.iter().filter(|x| **x == 200.0).count() as f64;
    assert!(
        (at_max - 0.011180 * n).abs() <= five_sigma(n, 0.011180),
        "{at_max} samples at max"
    );
}

#[test]
fn samples_are_clamped_into_zero_to_the_cap() {
    use super::capped_secs;
    assert_eq!(capped_secs(f64::NAN, 2.0), Duration::ZERO);
    assert_eq!(capped_secs(-1.0, 2.0), Duration::ZERO);
    assert_eq!(capped_secs(f64::INFINITY, 2.0), Duration::from_secs(2));
    assert_eq!(capped_secs(1e300, MAX_DURATION.as_secs_f64()), MAX_DURATION);
    assert_eq!(capped_secs(0.5, 2.0), Duration::from_millis(500));
}

#[test]
fn the_same_seed_samples_every_distribution_alike() {
    for delay in [
        "{uniform: {min: 1ms, max: 9ms}}",
        "{lognormal: {median: 5ms, p99: 50ms}}",
        "{pareto: {scale: 1ms, shape: 2, max: 1s}}",
    ] {
        let doc = format!("rules:\n- {{delay: {delay}}}\n");
        assert_eq!(delay_samples(&doc, 50), delay_samples(&doc, 50), "{delay}");
    }
}

#[test]
fn methods_narrow_the_candidates_without_reordering_rules() {
    let p = compiled(
        "rules:\n- {name: posts, match: {methods: [POST]}, abort: {status: 500}}\n\
         - {name: any, match: {path: /any}, abort: {status: 500}}\n\
         - {name: purge, match: {methods: [PURGE, GET]}, abort: {status: 500}}\n",
    );
    let mut r = Req::new();
    assert_eq!(r.hits(&p).as_deref(), Some("purge"));
    r.path = "/any".into();
    assert_eq!(r.hits(&p).as_deref(), Some("any"), "rule order holds");
    r.method = Method::POST;
    assert_eq!(r.hits(&p).as_deref(), Some("posts"));
    r.path = "/".into();
    r.method = Method::from_bytes(b"PURGE").unwrap();
    assert_eq!(r.hits(&p).as_deref(), Some("purge"), "unindexed methods");
    r.method = Method::DELETE;
    assert_eq!(r.hits(&p), None);
}

#[test]
fn a_zero_delay_fires_and_spends_its_budget_as_a_noop() {
    let p = compiled(
        "rules:\n- {name: zero, first: 2, delay: {fixed: 0s}}\n- {name: next, hang: {}}\n",
    );
    let r = Req::new();
    let mut rng = rng();
    for _ in 0..2 {
        let decision = p.decide_request(&r.info(), &mut rng).unwrap();
        assert_eq!(
            &**decision.rule_name, "zero",
            "it still wins over later rules"
        );
        assert!(decision.action.is_noop());
    }
    assert_eq!(p.first_used(0, CLIENT), Some(2));
    let next = p.decide_request(&r.info(), &mut rng).unwrap();
    assert!(!next.action.is_noop(), "{next:?}");
    let delay = compiled("rules:\n- {delay: {fixed: 1ms}}\n");
    let decision = delay.decide_request(&r.info(), &mut rng).unwrap();
    assert!(!decision.action.is_noop());
}

#[test]
fn first_n_counts_per_client() {
    let p = compiled(
        "rules:\n- {name: flaky, first: 3, abort: {status: 503}}\n- {name: rest, match: {port: 1}, hang: {}}\n",
    );
    let a = Req::new();
    let mut b = Req::new();
    b.source = IpAddr::V4(Ipv4Addr::new(10, 1, 0, 6));
    let got: Vec<_> = (0..5).map(|_| a.hits(&p)).collect();
    let flaky = Some("flaky".to_owned());
    assert_eq!(
        got,
        [flaky.clone(), flaky.clone(), flaky.clone(), None, None]
    );
    assert_eq!(b.hits(&p), flaky, "another client has its own budget");
    assert_eq!(p.first_used(0, CLIENT), Some(3));
    assert_eq!(p.first_used(0, b.source), Some(1));
}

#[test]
fn first_n_only_counts_requests_that_were_faulted() {
    // With percent 0 the rule never fires, so it never spends its budget.
    let p = compiled("rules:\n- {first: 2, percent: 0, hang: {}}\n");
    for _ in 0..10 {
        assert_eq!(Req::new().hits(&p), None);
    }
    assert_eq!(p.first_used(0, CLIENT), Some(0));
}

#[test]
fn first_n_memory_is_bounded() {
    let p = compiled("rules:\n- {name: f, first: 1, hang: {}}\n");
    let mut r = Req::new();
    for i in 0..FIRST_MAX_CLIENTS as u32 {
        r.source = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
        assert!(r.hits(&p).is_some());
    }
    r.source = IpAddr::V4(Ipv4Addr::new(192, 168, 0, 1));
    assert_eq!(r.hits(&p), None, "a full table grants no new budgets");
    r.source = IpAddr::V4(Ipv4Addr::from(0x0a00_0000));
    assert_eq!(r.hits(&p), None, "known clients keep their spent budget");
}

fn response_decision(
    policy: &CompiledPolicy,
    req: &Req,
    status: u16,
    headers: &HeaderMap,
    rng: &mut StdRng,
) -> Option<(String, FaultKind)> {
    let candidates = policy.response_candidates(&req.info());
    policy
        .decide_response(
            &candidates,
            req.source,
            &ResponseInfo { status, headers },
            rng,
        )
        .map(|d| (d.rule_name.to_string(), d.kind))
}

#[test]
fn response_rules_are_decided_on_the_response_only() {
    let policy = compiled(
        r#"
rules:
- name: errors
  match: {path: /api/*, response: {status: 5xx, headers: {x-cache: "MISS*"}}}
  abort: {status: 503}
- name: all
  patch: {headers: {set: {x-patched: "1"}}}
"#,
    );
    let mut rng = rng();
    // Never at request time.
    assert!(
        policy
            .decide_request(&Req::new().info(), &mut rng)
            .is_none()
    );
    let mut miss = HeaderMap::new();
    miss.insert("x-cache", HeaderValue::from_static("MISS from edge"));
    let mut api = Req::new();
    api.path = "/api/x".into();
    let decided = |req: &Req, status, headers: &HeaderMap, rng: &mut StdRng| {
        response_decision(&policy, req, status, headers, rng)
    };
    assert_eq!(
        decided(&api, 502, &miss, &mut rng),
        Some(("errors".into(), FaultKind::Abort))
    );
    // A 200, a missing header or another path go on to the next rule.
    for (req, status, headers) in [
        (&api, 200, &miss),
        (&api, 503, &HeaderMap::new()),
        (&Req::new(), 503, &miss),
    ] {
        assert_eq!(
            decided(req, status, headers, &mut rng),
            Some(("all".into(), FaultKind::Patch))
        );
    }
}

#[test]
fn first_counts_only_matching_responses() {
    let policy = compiled(
        "rules:\n- {match: {response: {status: 503}}, first: 2, replace: {status: 500}}\n",
    );
    let mut rng = rng();
    let req = Req::new();
    let none = HeaderMap::new();
    for _ in 0..5 {
        assert_eq!(response_decision(&policy, &req, 200, &none, &mut rng), None);
    }
    let fired: Vec<bool> = (0..4)
        .map(|_| response_decision(&policy, &req, 503, &none, &mut rng).is_some())
        .collect();
    assert_eq!(fired, [true, true, false, false]);
}

#[test]
fn percent_draws_only_for_matching_responses() {
    let policy = compiled(
        "rules:\n- {match: {response: {status: 500-599}}, percent: 25, replace: {status: 500}}\n",
    );
    let mut rng = rng();
    let req = Req::new();
    let none = HeaderMap::new();
    let hits = (0..4000)
        .filter(|_| response_decision(&policy, &req, 502, &none, &mut rng).is_some())
        .count();
    assert!((800..1200).contains(&hits), "{hits}");
    assert!((0..100).all(|_| response_decision(&policy, &req, 200, &none, &mut rng).is_none()));
}

#[test]
fn request_reach_tells_request_delays_from_other_faults_without_drawing() {
    let policy = compiled(
        "rules:\n\
         - {name: slow, first: 1, match: {path: /slow}, delay: {fixed: 1s}}\n\
         - {name: late, match: {path: /late}, delay: {fixed: 1s, side: response}}\n\
         - {name: down, match: {path: /down}, abort: {status: 503}}\n\
         - {name: slow-too, match: {path: /down}, delay: {fixed: 1s}}\n",
    );
    let at = |path: &str| {
        let mut req = Req::new();
        req.path = path.into();
        policy.request_reach(&req.info())
    };
    assert_eq!(at("/other"), RequestReach::Nothing);
    assert_eq!(at("/slow"), RequestReach::RequestDelay);
    assert_eq!(at("/late"), RequestReach::Other);
    // Any matching rule that is not a request delay, in any position.
    assert_eq!(at("/down"), RequestReach::Other);
    // Asking spent nothing: the `first: 1` budget is still there.
    assert_eq!(at("/slow"), RequestReach::RequestDelay);
    let mut req = Req::new();
    req.path = "/slow".into();
    assert!(policy.decide_request(&req.info(), &mut rng()).is_some());
    assert!(policy.decide_request(&req.info(), &mut rng()).is_none());
    assert_eq!(
        compiled("rules: []").request_reach(&req.info()),
        RequestReach::Nothing
    );
    assert!(policy.may_act_on_request(&Method::GET));
    let posts = compiled("rules: [{match: {methods: [POST]}, delay: {fixed: 1s}}]");
    assert!(posts.may_act_on_request(&Method::POST));
    assert!(!posts.may_act_on_request(&Method::GET));
    assert!(!compiled("rules: []").may_act_on_request(&Method::GET));
    let replace = compiled("rules: [{match: {response: {status: 5xx}}, replace: {status: 503}}]");
    assert!(replace.may_act_on_request(&Method::GET));
}

#[test]
fn may_act_on_http_asks_only_what_a_connection_tells() {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let to = |port| conn(Direction::Inbound, port, ip("10.0.0.2"), ip("10.0.0.1"));
    let out = conn(Direction::Outbound, 8080, ip("10.0.0.1"), ip("10.0.0.9"));
    assert!(!compiled("rules: []").may_act_on_http(&to(8080)));
    // Any request-stage rule, even one no request may ever match.
    let never = compiled("rules: [{match: {path: /never, methods: [POST]}, delay: {fixed: 0s}}]");
    assert!(never.may_act_on_http(&to(8080)));
    let on_port = compiled("rules: [{match: {port: 9090}, abort: {status: 503}}]");
    assert!(on_port.may_act_on_http(&to(9090)));
    assert!(!on_port.may_act_on_http(&to(8080)));
    let outbound = compiled("rules: [{match: {direction: outbound}, delay: {fixed: 1s}}]");
    assert!(outbound.may_act_on_http(&out));
    assert!(!outbound.may_act_on_http(&to(8080)));
    // Response-stage rules read every response of the connection.
    let replace = compiled("rules: [{match: {response: {status: 5xx}}, replace: {status: 503}}]");
    assert!(replace.may_act_on_http(&to(8080)));
    // Connection-level and raw-stream rules never see a request.
    let tcp = compiled(
        "rules:\n- {match: {protocol: tcp}, delay: {fixed: 1s}}\n- {partition: {mode: reject}}\n",
    );
    assert!(!tcp.may_act_on_http(&to(8080)));
    // A `fromHeaders` rule strips its headers from every request.
    let from_headers = compiled("rules: [{match: {port: 1}, fromHeaders: {maxDelay: 1s}}]");
    assert!(from_headers.may_act_on_http(&to(8080)));
}

#[test]
fn a_data_plane_learns_which_response_rules_need_headers_or_the_body() {
    let policy = compiled(
        "rules:\n\
         - {name: status, match: {path: /s, response: {status: 5xx}}, replace: {status: 503}}\n\
         - {name: header, match: {path: /h, response: {headers: {x-cache: MISS}}}, abort: {status: 500}}\n\
         - {name: merge, match: {path: /m}, patch: {body: {merge: {a: 1}}}}\n\
         - {name: set, match: {path: /p}, patch: {headers: {set: {x-a: b}}}}\n\
         - {name: replaced, match: {path: /r}, replace: {body: x}}\n",
    );
    let at = |path: &str| {
        let mut req = Req::new();
        req.path = path.into();
        policy.response_candidates(&req.info())
    };
    assert!(!policy.response_reads_headers(&at("/s")));
    assert!(policy.response_reads_headers(&at("/h")));
    assert!(!policy.response_needs_body(&at("/s")));
    assert!(policy.response_needs_body(&at("/m")));
    // Headers set, or a body replaced, need no body read.
    assert!(!policy.response_needs_body(&at("/p")));
    assert!(!policy.response_needs_body(&at("/r")));
    assert!(!policy.response_needs_body(&at("/none")));
    assert!(!policy.response_reads_headers(&[]));
}
