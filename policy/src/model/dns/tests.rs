//! DNS in the fault language end to end: documents that parse, the exact
//! errors of the ones that do not, and the decisions `decide_dns` makes.
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::parse::tests::{err, rule};
use crate::*;

const POD: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 1, 0, 5));

fn compiled(doc: &str) -> CompiledPolicy {
    compile(&parse(doc).unwrap(), &PeerIps::new())
}

/// The name of the rule that fires for a query, and its action.
fn decide(policy: &CompiledPolicy, name: &str, qtype: u16) -> Option<(String, Action)> {
    let query = DnsQuery {
        name: name.as_bytes(),
        qtype,
        source_ip: POD,
    };
    policy
        .decide_dns(&query, &mut StdRng::seed_from_u64(7))
        .map(|d| (d.rule_name.to_string(), d.action))
}

const EXAMPLE: &str = r#"
rules:
- name: nats-gone
  match: {protocol: dns, dns: {name: "*.nats.svc.cluster.local", types: [A, aaaa]}}
  dns: {rcode: NXDOMAIN}
- name: slow-dns
  match: {dns: {types: [SRV]}}
  delay: {fixed: 300ms}
- name: lost
  match: {protocol: dns, dns: {name: flaky.example.com.}}
  hang: {}
- name: resolver-down
  match: {protocol: dns}
  dns: {rcode: servfail}
  percent: 0
"#;

#[test]
fn dns_rules_parse_and_print_back() {
    let policy = parse(EXAMPLE).unwrap();
    let nats = &policy.rules[0];
    assert_eq!(
        nats.r#match.dns,
        Some(DnsMatch {
            name: Some("*.nats.svc.cluster.local".into()),
            types: vec![RecordType::A, RecordType::AAAA],
        })
    );
    assert_eq!(
        nats.dns,
        Some(DnsFault {
            rcode: DnsRcode::NxDomain
        })
    );
    assert_eq!(nats.fault().map(|f| f.kind()), Some(FaultKind::Dns));
    assert_eq!(
        policy.rules[3].dns.as_ref().map(|d| d.rcode.code()),
        Some(2)
    );
    let json = serde_json::to_string(&policy).unwrap();
    assert!(json.contains(r#""types":["A","AAAA"]"#), "{json}");
    assert!(json.contains(r#""rcode":"NXDOMAIN""#), "{json}");
    assert_eq!(parse(&json).unwrap(), policy);
}

#[test]
fn dns_decisions_go_by_name_glob_and_type() {
    let policy = compiled(EXAMPLE);
    assert!(policy.has_dns_rules());
    let nx = Some((
        "nats-gone".to_owned(),
        Action::Dns {
            rcode: DnsRcode::NxDomain,
        },
    ));
    assert_eq!(decide(&policy, "a.nats.svc.cluster.local", 1), nx);
    assert_eq!(decide(&policy, "x.y.nats.svc.cluster.local", 28), nx);
    // Neither the name itself (the glob needs a label before it) nor MX.
    assert_eq!(decide(&policy, "nats.svc.cluster.local", 1), None);
    assert_eq!(decide(&policy, "a.nats.svc.cluster.local", 15), None);
    assert_eq!(
        decide(&policy, "_grpc._tcp.api.example.com", 33),
        Some((
            "slow-dns".to_owned(),
            Action::Delay {
                duration: Duration::from_millis(300),
                side: DelaySide::Request
            }
        ))
    );
    // The trailing dot of the pattern is not part of the name.
    assert_eq!(
        decide(&policy, "flaky.example.com", 16),
        Some(("lost".to_owned(), Action::Hang))
    );
    // `percent: 0` never fires: the last rule lets everything else pass.
    assert_eq!(decide(&policy, "example.com", 1), None);
}

#[test]
fn dns_names_in_the_policy_are_case_insensitive() {
    let policy = compiled(&rule(
        "match: {dns: {name: API.Example.COM}}\ndns: {rcode: REFUSED}",
    ));
    assert!(decide(&policy, "api.example.com", 1).is_some());
}

#[test]
fn dns_rules_never_see_connections_or_requests_and_others_never_see_dns() {
    let policy = compiled(
        "rules:\n- match: {protocol: dns}\n  hang: {}\n- name: all\n  delay: {fixed: 1s}\n",
    );
    let conn = ConnInfo {
        direction: Direction::Outbound,
        destination_port: 53,
        source_ip: POD,
        destination_ip: POD,
    };
    let mut rng = StdRng::seed_from_u64(1);
    let tcp = policy.decide_tcp(&conn, &mut rng).unwrap();
    assert_eq!(tcp.rule_name.as_ref(), "all");
    assert_eq!(decide(&policy, "example.com", 1).unwrap().0, "rules[0]");

    let no_dns = compiled("rules:\n- delay: {fixed: 1s}\n");
    assert!(!no_dns.has_dns_rules());
    assert_eq!(decide(&no_dns, "example.com", 1), None);
}

#[test]
fn dns_first_counts_per_pod() {
    let policy = compiled(&rule(
        "match: {protocol: dns}\ndns: {rcode: SERVFAIL}\nfirst: 2",
    ));
    let fired = (0..5)
        .filter(|_| decide(&policy, "example.com", 1).is_some())
        .count();
    assert_eq!(fired, 2);
}

#[test]
fn error_dns_fault_without_a_dns_match() {
    assert_eq!(
        err(&rule("match: {port: 53}\ndns: {rcode: NXDOMAIN}")),
        r#"rules[0] "r": dns: needs a DNS match: match.protocol: dns or match.dns"#
    );
}

#[test]
fn error_dns_match_with_http_or_l4_fields() {
    assert_eq!(
        err(&rule("match: {dns: {name: a.com}, path: /x}\nhang: {}")),
        r#"rules[0] "r": match.path: is an HTTP matcher; a DNS rule selects queries with match.dns (name, types)"#
    );
    assert_eq!(
        err(&rule("match: {protocol: dns, host: a.com}\nhang: {}")),
        r#"rules[0] "r": match.host: is an HTTP matcher; a DNS rule selects queries with match.dns (name, types)"#
    );
    assert_eq!(
        err(&rule(
            "match: {protocol: dns, sni: api.example.com}\nhang: {}"
        )),
        r#"rules[0] "r": match.sni: is a TLS matcher; a DNS rule selects queries with match.dns (name, types)"#
    );
    assert_eq!(
        err(&rule("match: {protocol: dns, port: 53}\nhang: {}")),
        r#"rules[0] "r": match.port: does not apply to DNS queries (captured on port 53, sent by the pod to its resolver); select them with match.dns (name, types)"#
    );
    assert_eq!(
        err(&rule(
            "match: {protocol: dns, direction: inbound}\nhang: {}"
        )),
        r#"rules[0] "r": match.direction: DNS queries are captured as the pod sends them: use outbound or leave it out"#
    );
    assert_eq!(
        err(&rule("match: {protocol: tcp, dns: {}}\nhang: {}")),
        r#"rules[0] "r": match.protocol: tcp cannot be combined with match.dns (DNS queries are protocol dns)"#
    );
}

#[test]
fn error_dns_rule_with_a_fault_dns_has_not() {
    assert_eq!(
        err(&rule("match: {protocol: dns}\nabort: {status: 503}")),
        r#"rules[0] "r": abort: does not apply to DNS queries; use dns: {rcode: NXDOMAIN|SERVFAIL|REFUSED}, delay, or hang (the query is dropped)"#
    );
    assert_eq!(
        err(&rule("match: {protocol: dns}\npartition: {}")),
        r#"rules[0] "r": partition: does not apply to DNS queries; use dns: {rcode: NXDOMAIN|SERVFAIL|REFUSED}, delay, or hang (the query is dropped)"#
    );
}

#[test]
fn error_dns_values() {
    assert_eq!(
        err(&rule("match: {dns: {types: [A, AAAAA]}}\nhang: {}")),
        r#"rules[0] "r": match.dns.types[1]: "AAAAA" is not a DNS record type (A, NS, CNAME, SOA, PTR, MX, TXT, AAAA, SRV, NAPTR, SVCB, HTTPS, CAA, ANY) (line 3, column 24)"#
    );
    assert_eq!(
        err(&rule("match: {dns: {types: [A, a]}}\nhang: {}")),
        r#"rules[0] "r": match.dns.types[1]: A is listed twice"#
    );
    assert_eq!(
        err(&rule("match: {protocol: dns}\ndns: {rcode: NOTFOUND}")),
        r#"rules[0] "r": dns.rcode: "NOTFOUND" is not a DNS error code (NXDOMAIN, SERVFAIL or REFUSED) (line 4, column 8)"#
    );
    assert_eq!(
        err(&rule("match: {protocol: dns}\ndns: {}")),
        r#"rules[0] "r": dns: missing field `rcode` (line 4, column 8)"#
    );
    assert_eq!(
        err(&rule("match: {dns: {name: \"a b.com\"}}\nhang: {}")),
        r#"rules[0] "r": match.dns.name: "a b.com" is not a DNS name pattern (letters, digits, '-', '_' in dot-separated labels; '*' matches any run of characters)"#
    );
    let long = format!("{}.com", "a".repeat(260));
    assert!(
        err(&rule(&format!(
            "match: {{dns: {{name: {long}}}}}\nhang: {{}}"
        )))
        .ends_with("must be 1-253 characters")
    );
    assert_eq!(
        err(&rule("match: {dns: {nam: a.com}}\nhang: {}")),
        r#"rules[0] "r": match.dns.nam: unknown field (did you mean `name`?) (line 3, column 17)"#
    );
}
