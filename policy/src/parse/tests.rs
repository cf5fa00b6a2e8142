//! Unit tests of the fault language: good documents, round trips, and a
//! property test of `parse`. Error messages are in `error/tests.rs`,
//! decisions in `decide/tests.rs` (the proxy tests its policy store).
use std::time::Duration;

use crate::*;

/// The example of `docs/design.md` and the README, verbatim.
pub(crate) const DOCS_EXAMPLE: &str = r#"
duration: 120s
rules:
- name: slow-checkout
  match: {direction: inbound, port: 8080, methods: [POST], path: /api/checkout*,
          headers: {x-test-user: "*"}}
  delay: {fixed: 200ms, jitter: 50ms}          # or {normal: {mean: 200ms, stddev: 40ms}}
  percent: 20
- name: payments-down
  match: {direction: outbound, host: payments.shop.svc.cluster.local, port: 80}
  abort: {status: 503, body: "injected by faultline"}
  first: 3
- name: grpc-unavailable
  match: {direction: outbound, port: 9090, protocol: grpc, path: /inventory.Stock/*}
  abort: {grpc: UNAVAILABLE}
- name: nats-partition
  match: {direction: outbound, to: {podSelector: {app: nats}}}
  partition: {mode: reject}                    # or drop (connections hang)
"#;

#[test]
fn design_example_parses() {
    let policy = parse(DOCS_EXAMPLE).unwrap();
    assert_eq!(policy.duration(), Some(std::time::Duration::from_secs(120)));
    assert_eq!(policy.rules.len(), 4);
}

pub(crate) fn err(doc: &str) -> String {
    match parse(doc) {
        Ok(p) => panic!("expected an error for {doc:?}, parsed {p:?}"),
        Err(e) => e.to_string(),
    }
}

/// A one-rule document named `r` with the given rule body lines.
pub(crate) fn rule(body: &str) -> String {
    let mut doc = String::from("rules:\n- name: r\n");
    for line in body.lines() {
        doc.push_str("  ");
        doc.push_str(line);
        doc.push('\n');
    }
    doc
}

#[test]
fn design_example_has_every_field_as_written() {
    let policy = parse(DOCS_EXAMPLE).unwrap();
    let slow = &policy.rules[0];
    assert_eq!(slow.name.as_deref(), Some("slow-checkout"));
    assert_eq!(slow.r#match.direction, Some(Direction::Inbound));
    assert_eq!(
        slow.r#match.port,
        Some(Ports(vec![PortRange {
            start: 8080,
            end: 8080
        }]))
    );
    assert_eq!(slow.r#match.methods, vec!["POST".to_owned()]);
    assert_eq!(slow.r#match.path.as_deref(), Some("/api/checkout*"));
    assert_eq!(
        slow.r#match.headers.get("x-test-user").map(String::as_str),
        Some("*")
    );
    let delay = slow.delay.as_ref().unwrap();
    assert_eq!(delay.fixed.unwrap().get(), Duration::from_millis(200));
    assert_eq!(delay.jitter.unwrap().get(), Duration::from_millis(50));
    assert_eq!(delay.side, DelaySide::Request);
    assert_eq!(slow.percent, Some(20.0));

    let down = &policy.rules[1];
    assert_eq!(
        down.r#match.host.as_deref(),
        Some("payments.shop.svc.cluster.local")
    );
    let abort = down.abort.as_ref().unwrap();
    assert_eq!(abort.status, Some(503));
    assert_eq!(abort.body.as_deref(), Some("injected by faultline"));
    assert_eq!(down.first, Some(3));

    let grpc = &policy.rules[2];
    assert_eq!(grpc.r#match.protocol, Some(Protocol::Grpc));
    assert_eq!(
        grpc.abort.as_ref().unwrap().grpc,
        Some(GrpcCode::Unavailable)
    );

    let nats = &policy.rules[3];
    let to = nats.r#match.to.as_ref().unwrap();
    assert_eq!(to.pod_selector.as_ref().unwrap().key(), "app=nats");
    assert_eq!(nats.partition.as_ref().unwrap().mode, PartitionMode::Reject);
    assert_eq!(nats.fault().map(|f| f.kind()), Some(FaultKind::Partition));
}

#[test]
fn every_fault_form_parses() {
    let doc = r#"
until: 2030-01-31T12:00:00Z
rules:
- {name: n1, delay: {normal: {mean: 200ms, stddev: 40ms}, side: response}}
- {name: n2, abort: {status: 429, headers: {retry-after: "1"}}}
- {name: n3, abort: {grpc: 4, message: "slow down"}, match: {protocol: grpc}}
- {name: n4, abort: {reset: true}}
- {name: n5, respond: {status: 200, body: "{}", headers: {content-type: application/json}}}
- {name: n6, hang: {}}
- {name: n7, hang: true, match: {probes: true}}
- {name: n8, bandwidth: {bytesPerSecond: 1024}}
- {name: n9, bandwidth: {rate: 64KiB/s}}
- {name: n10, partition: {mode: drop}, match: {from: {cidrs: [10.0.0.0/8, "fd00::/8", 192.168.1.7]}}}
- {name: n11, reset: {afterBytes: 100, after: 1.5s}}
- {name: n12, reset: {after: 2m}, percent: 0.5}
- {name: n13, delay: {fixed: 1m30s}, match: {port: [80, "8000-8010"], protocol: tcp}}
- {delay: {fixed: 10ms}, percent: "12.5%", match: {host: "*.example.com"}}
"#;
    let policy = parse(doc).unwrap();
    assert_eq!(policy.until().unwrap().to_string(), "2030-01-31T12:00:00Z");
    assert_eq!(policy.rules.len(), 14);
    let kinds: Vec<FaultKind> = policy
        .rules
        .iter()
        .map(|r| r.fault().unwrap().kind())
        .collect();
    use FaultKind::*;
    assert_eq!(
        kinds,
        [
            Delay, Abort, Abort, Abort, Respond, Hang, Hang, Bandwidth, Bandwidth, Partition,
            Reset, Reset, Delay, Delay
        ]
    );
    assert_eq!(
        policy.rules[2].abort.as_ref().unwrap().grpc,
        Some(GrpcCode::DeadlineExceeded)
    );
    assert_eq!(
        policy.rules[8]
            .bandwidth
            .as_ref()
            .unwrap()
            .bytes_per_second(),
        Some(65536)
    );
    assert_eq!(
        policy.rules[10]
            .reset
            .as_ref()
            .unwrap()
            .after
            .unwrap()
            .get(),
        Duration::from_millis(1500)
    );
    assert_eq!(
        policy.rules[12]
            .delay
            .as_ref()
            .unwrap()
            .fixed
            .unwrap()
            .get(),
        Duration::from_secs(90)
    );
    assert_eq!(policy.rules[13].percent, Some(12.5));
}

#[test]
fn faults_without_settings_get_their_defaults() {
    let policy = parse("rules:\n- hang:\n- partition:\n- respond: ~\n").unwrap();
    assert_eq!(policy.rules[0].hang, Some(Hang));
    assert_eq!(
        policy.rules[1].partition.as_ref().map(|p| p.mode),
        Some(PartitionMode::Reject)
    );
    assert_eq!(policy.rules[2].respond, Some(Respond::default()));
    assert_eq!(
        parse("rules:\n- delay:\n").unwrap_err().to_string(),
        "rules[0]: delay: set fixed (e.g. fixed: 200ms) or one of normal, uniform, lognormal, pareto"
    );
}

#[test]
fn json_is_accepted() {
    let doc = r#"{"duration": "60s", "rules": [{"name": "j", "match": {"port": 80}, "abort": {"status": 500}}]}"#;
    let policy = parse(doc).unwrap();
    assert_eq!(policy.duration(), Some(Duration::from_secs(60)));
    assert_eq!(policy.rules[0].abort.as_ref().unwrap().status, Some(500));
}

#[test]
fn empty_rule_list_means_no_faults() {
    assert_eq!(parse("rules: []").unwrap(), Policy::default());
}

#[test]
fn json_round_trip_keeps_every_value() {
    for doc in [
        DOCS_EXAMPLE,
        "until: 2030-01-31T12:00:00.5+01:00\nrules:\n- {bandwidth: {rate: 1MB}, match: {port: [80, \"90-99\"]}}\n- {reset: {after: 1500ms, afterBytes: 7}}\n- {hang: true}\n",
        "rules:\n- {delay: {uniform: {min: 1ms, max: 2.5ms}}}\n- {delay: {lognormal: {median: 80ms, p99: 1s, max: 3s}, side: response}}\n- {delay: {lognormal: {median: 80ms, p99: 1s}}}\n- {delay: {pareto: {scale: 20ms, shape: 1.16, max: 5s}}}\n- {delay: {pareto: {scale: 20ms, shape: 2, max: 5s}}}\n",
        "rules:\n- {fromHeaders: {maxDelay: 1500ms, abortStatuses: [503, 429], abortGrpc: [UNAVAILABLE, 4]}, match: {port: 8080}}\n- {fromHeaders: {maxDelay: 1s}, percent: 5, first: 2}\n",
    ] {
        let policy = parse(doc).unwrap();
        let json = serde_json::to_string(&policy).unwrap();
        assert_eq!(parse(&json).unwrap(), policy, "{json}");
        let yaml = serde_yaml::to_string(&policy).unwrap();
        assert_eq!(parse(&yaml).unwrap(), policy, "{yaml}");
    }
}

#[test]
fn json_form_is_canonical() {
    let policy = parse(&rule("delay: {fixed: 1.5s, jitter: 250ms}\npercent: 20")).unwrap();
    assert_eq!(
        serde_json::to_string(&policy).unwrap(),
        r#"{"rules":[{"name":"r","percent":20.0,"delay":{"fixed":"1500ms","jitter":"250ms"}}]}"#
    );
}

#[test]
fn selectors_are_distinct_and_keyed_canonically() {
    let doc = r#"
rules:
- {match: {to: {podSelector: {tier: db, app: pg}}}, partition: {}}
- {match: {from: {podSelector: {app: pg, tier: db}}}, partition: {}}
- {match: {to: {podSelector: {app: nats}}}, partition: {}}
"#;
    let keys: Vec<String> = parse(doc)
        .unwrap()
        .selectors()
        .iter()
        .map(Selector::key)
        .collect();
    assert_eq!(keys, ["app=nats", "app=pg,tier=db"]);
}

/// Property test (the fuzz target in `policy/fuzz` explores further): random
/// text and random mutations of a valid policy never make `parse` panic,
/// and whatever parses survives a JSON round trip and compiles.
#[test]
fn parse_never_panics_and_accepted_policies_round_trip() {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    const TOKENS: &[&str] = &[
        "rules:",
        "\n- ",
        "{",
        "}",
        "[",
        "]",
        ": ",
        ", ",
        "\"",
        "'",
        "*",
        "/",
        "-",
        "&a",
        "*a",
        "!!",
        "\t",
        "\n  ",
        "match",
        "delay",
        "fixed",
        "200ms",
        "abort",
        "status",
        "503",
        "grpc",
        "reset",
        "true",
        "percent",
        "1e309",
        "first",
        "port",
        "8000-8010",
        "cidrs",
        "10.0.0.0/8",
        "podSelector",
        "host",
        "sni",
        "tls",
        "headers",
        "path",
        "é",
        "\u{0}",
        "duration",
        "until",
        "~",
        "null",
        "-1",
        "99999999999999999999",
        "hang",
        "partition",
        "bandwidth",
        "rate",
        "request",
        "response",
        "side",
        "slicer",
        "averageSize",
        "limitData",
        "bytes",
        "slowClose",
    ];
    let mut rng = StdRng::seed_from_u64(0xfa17);
    let check = |text: &str| {
        if let Ok(policy) = parse(text) {
            let json = serde_json::to_string(&policy).unwrap();
            assert_eq!(parse(&json).as_ref(), Ok(&policy), "{text:?} -> {json}");
            let _ = compile(&policy, &PeerIps::new());
        }
    };
    for _ in 0..1500 {
        let len = rng.random_range(0..40);
        let text: String = (0..len)
            .map(|_| TOKENS[rng.random_range(0..TOKENS.len())])
            .collect();
        check(&text);
        let bytes: Vec<u8> = (0..rng.random_range(0..64)).map(|_| rng.random()).collect();
        check(&String::from_utf8_lossy(&bytes));
    }
    let base = DOCS_EXAMPLE.as_bytes();
    for _ in 0..1500 {
        let mut doc = base.to_vec();
        for _ in 0..rng.random_range(1..4) {
            let at = rng.random_range(0..doc.len());
            match rng.random_range(0..3) {
                0 => doc[at] = rng.random_range(0x20..0x7f),
                1 => drop(doc.remove(at)),
                _ => doc
                    .splice(at..at, TOKENS[rng.random_range(0..TOKENS.len())].bytes())
                    .for_each(drop),
            }
        }
        check(&String::from_utf8_lossy(&doc));
    }
}

/// Every YAML and JSON example in the user reference parses, so the
/// documentation cannot drift from the language.
#[test]
fn reference_examples_parse() {
    let reference = include_str!("../../../docs/fault-language.md");
    let mut blocks = 0;
    let mut rest = reference;
    while let Some(start) = rest.find("```yaml\n").or_else(|| rest.find("```json\n")) {
        let body = &rest[start + 8..];
        let end = body.find("```").unwrap();
        let block = &body[..end];
        // Blocks of one-line alternatives (`delay: {...}` per line) are
        // fragments of a rule; wrap them one at a time.
        if block.trim_start().starts_with("rules:")
            || block.contains("\nrules:")
            || block.trim_start().starts_with('{')
        {
            parse(block).unwrap_or_else(|e| panic!("{e}\n{block}"));
        } else if block.starts_with("- ") {
            // A list of whole rules.
            let doc = format!("rules:\n{block}");
            parse(&doc).unwrap_or_else(|e| panic!("{e}\n{doc}"));
        } else {
            for line in block.lines().filter(|l| !l.trim().is_empty()) {
                let doc = if line.starts_with("to:") || line.starts_with("from:") {
                    format!("rules:\n- hang: {{}}\n  match:\n    {line}\n")
                } else if line.contains("grpc") {
                    format!("rules:\n- match: {{protocol: grpc}}\n  {line}\n")
                } else if line.starts_with("dns:") {
                    format!("rules:\n- match: {{protocol: dns}}\n  {line}\n")
                } else {
                    format!("rules:\n- {line}\n")
                };
                parse(&doc).unwrap_or_else(|e| panic!("{e}\n{doc}"));
            }
        }
        blocks += 1;
        rest = &body[end + 3..];
    }
    assert!(blocks >= 10, "found only {blocks} examples");
}

#[test]
fn response_side_rules_round_trip_through_json() {
    let doc = r#"
rules:
- name: slow-errors
  match: {response: {status: [502, 5xx, "520-530"], headers: {x-cache: "MISS*"}}}
  delay: {fixed: 1s, side: response}
- name: rewrite
  replace: {status: 503, headers: {x-a: "1"}, body: down}
- name: tweak
  patch: {status: 500, headers: {set: {x-b: "2"}, remove: [etag]}, body: {merge: {a: null, b: {c: [1]}}}}
"#;
    let policy = parse(doc).unwrap();
    let json = serde_json::to_string(&policy).unwrap();
    assert!(json.contains(r#""status":[502,"5xx","520-530"]"#), "{json}");
    assert!(json.contains(r#""side":"response""#), "{json}");
    assert_eq!(parse(&json).unwrap(), policy);
}

#[test]
fn delay_on_is_an_alias_of_side() {
    let side = parse("rules:\n- delay: {fixed: 1s, side: response}\n").unwrap();
    let on = parse("rules:\n- delay: {fixed: 1s, on: response}\n").unwrap();
    assert_eq!(side, on);
    assert_eq!(
        serde_json::to_string(&on.rules[0].delay).unwrap(),
        r#"{"fixed":"1s","side":"response"}"#
    );
}
