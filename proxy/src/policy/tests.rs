//! Unit tests of the fault language: parsing good documents, one test per
//! error class, round trips. Decision tests are in `tests_decide.rs`.
use super::*;

/// The example of DESIGN.md, verbatim.
pub(crate) const DESIGN_EXAMPLE: &str = r#"
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
    let policy = parse(DESIGN_EXAMPLE).unwrap();
    assert_eq!(policy.duration(), Some(std::time::Duration::from_secs(120)));
    assert_eq!(policy.rules.len(), 4);
}
