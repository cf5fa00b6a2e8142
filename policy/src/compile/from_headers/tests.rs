//! `fromHeaders` decisions: what a request's control headers ask for,
//! within the rule's bounds, with `match`, `percent`, `first` and probes.
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method, StatusCode};
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::*;

const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 1, 0, 5));

const POLICY: &str = "rules:
- name: ask
  match: {path: /api/*}
  fromHeaders: {maxDelay: 2s, abortStatuses: [503, 429], abortGrpc: [UNAVAILABLE]}
- name: later
  match: {path: /api/later}
  abort: {status: 500}
";

fn compiled(doc: &str) -> CompiledPolicy {
    compile(&parse(doc).unwrap(), &PeerIps::new())
}

fn outcome<'p>(
    policy: &'p CompiledPolicy,
    path: &str,
    protocol: Protocol,
    headers: &[(&'static str, &'static str)],
) -> RequestOutcome<'p> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.append(*name, HeaderValue::from_static(value));
    }
    let info = RequestInfo {
        direction: Direction::Inbound,
        destination_port: 8080,
        protocol,
        method: &Method::GET,
        path,
        headers: &map,
        source_ip: CLIENT,
        destination_ip: IpAddr::V4(Ipv4Addr::new(10, 2, 0, 9)),
        host: None,
    };
    policy.decide_request_outcome(&info, &mut StdRng::seed_from_u64(1))
}

fn http(policy: &CompiledPolicy, headers: &[(&'static str, &'static str)]) -> Option<Action> {
    outcome(policy, "/api/x", Protocol::Http, headers)
        .decision
        .map(|d| d.action)
}

fn refusal(policy: &CompiledPolicy, headers: &[(&'static str, &'static str)]) -> Option<String> {
    outcome(policy, "/api/x", Protocol::Http, headers)
        .refused
        .map(|r| format!("{} {}: {}", r.rule_name, r.refusal.reason(), r.refusal))
}

fn status(action: Option<Action>) -> Option<StatusCode> {
    match action {
        Some(Action::Abort(AbortAction::Http(r))) => Some(r.status),
        other => panic!("not an HTTP abort: {other:?}"),
    }
}

#[test]
fn a_delay_within_max_delay_is_honoured() {
    let p = compiled(POLICY);
    let out = outcome(
        &p,
        "/api/x",
        Protocol::Http,
        &[("x-faultline-delay", "300ms")],
    );
    let decision = out.decision.unwrap();
    assert_eq!(&**decision.rule_name, "ask");
    assert_eq!(
        decision.kind,
        FaultKind::Delay,
        "counted as the fault applied"
    );
    assert_eq!(
        decision.action,
        Action::Delay {
            duration: Duration::from_millis(300),
            side: DelaySide::Request
        }
    );
    assert_eq!(out.refused, None);
    assert_eq!(
        http(&p, &[("x-faultline-delay", "2s")]),
        Some(Action::Delay {
            duration: Duration::from_secs(2),
            side: DelaySide::Request
        }),
        "maxDelay itself is allowed"
    );
}

#[test]
fn an_allowed_status_is_answered_and_others_refused() {
    let p = compiled(POLICY);
    assert_eq!(
        status(http(&p, &[("x-faultline-abort", "503")])),
        Some(StatusCode::SERVICE_UNAVAILABLE)
    );
    assert_eq!(
        status(http(&p, &[("x-faultline-abort", "429")])),
        Some(StatusCode::TOO_MANY_REQUESTS)
    );
    assert_eq!(http(&p, &[("x-faultline-abort", "500")]), None);
    assert_eq!(
        refusal(&p, &[("x-faultline-abort", "500")]).as_deref(),
        Some("ask not_allowed: x-faultline-abort: 500 is not allowed by the rule")
    );
}

#[test]
fn out_of_bounds_values_are_refused_not_clamped() {
    let p = compiled(POLICY);
    assert_eq!(http(&p, &[("x-faultline-delay", "2001ms")]), None);
    assert_eq!(
        refusal(&p, &[("x-faultline-delay", "10s")]).as_deref(),
        Some("ask delay_too_long: x-faultline-delay: 10s is longer than maxDelay (2s)")
    );
    // A refused request goes on to the next rules, as one that asked for
    // nothing would.
    let out = outcome(
        &p,
        "/api/later",
        Protocol::Http,
        &[("x-faultline-delay", "1h")],
    );
    assert_eq!(&**out.decision.unwrap().rule_name, "later");
    assert!(out.refused.is_some());
}

#[test]
fn malformed_values_are_refused() {
    let p = compiled(POLICY);
    for (headers, expected) in [
        (
            &[("x-faultline-delay", "300")][..],
            "malformed: x-faultline-delay: not a duration such as 300ms",
        ),
        (
            &[("x-faultline-delay", "-1s")],
            "malformed: x-faultline-delay: not a duration such as 300ms",
        ),
        (
            &[("x-faultline-delay", "1ms"), ("x-faultline-delay", "2ms")],
            "malformed: x-faultline-delay: sent more than once",
        ),
        (
            &[(
                "x-faultline-abort",
                "503 please, right now, thank you kindly",
            )],
            "malformed: x-faultline-abort: longer than 32 bytes",
        ),
        (
            &[("x-faultline-abort", "five hundred")],
            "malformed: x-faultline-abort: not an HTTP status such as 503",
        ),
        (
            &[
                ("x-faultline-abort", "503"),
                ("x-faultline-abort-grpc", "14"),
            ],
            "malformed: x-faultline-abort-grpc: cannot be combined with x-faultline-abort",
        ),
    ] {
        assert_eq!(http(&p, headers), None, "{headers:?}");
        assert_eq!(
            refusal(&p, headers),
            Some(format!("ask {expected}")),
            "{headers:?}"
        );
    }
}

#[test]
fn a_control_the_rule_does_not_enable_is_refused() {
    let p = compiled("rules:\n- {name: only-aborts, fromHeaders: {abortStatuses: [503]}}\n");
    assert_eq!(
        refusal(&p, &[("x-faultline-delay", "1ms")]).as_deref(),
        Some("only-aborts not_allowed: x-faultline-delay: 1ms is not allowed by the rule")
    );
    let p = compiled("rules:\n- {name: only-delays, fromHeaders: {maxDelay: 1s}}\n");
    assert_eq!(
        refusal(&p, &[("x-faultline-abort", "503")]).as_deref(),
        Some("only-delays not_allowed: x-faultline-abort: 503 is not allowed by the rule")
    );
}

#[test]
fn grpc_aborts_only_for_grpc_requests() {
    let p = compiled(POLICY);
    for value in ["UNAVAILABLE", "unavailable", "14"] {
        let out = outcome(
            &p,
            "/api/x",
            Protocol::Grpc,
            &[("x-faultline-abort-grpc", value)],
        );
        match out.decision.map(|d| d.action) {
            Some(Action::Abort(AbortAction::Grpc(g))) => {
                assert_eq!(g.code, GrpcCode::Unavailable, "{value}");
            }
            other => panic!("{value}: {other:?}"),
        }
    }
    let out = outcome(
        &p,
        "/api/x",
        Protocol::Grpc,
        &[("x-faultline-abort-grpc", "INTERNAL")],
    );
    assert_eq!(out.refused.unwrap().refusal.reason(), "not_allowed");
    assert_eq!(
        refusal(&p, &[("x-faultline-abort-grpc", "UNAVAILABLE")]).as_deref(),
        Some("ask not_grpc: x-faultline-abort-grpc: the request is not gRPC")
    );
    // An HTTP status on a gRPC call is what the request asked for.
    let out = outcome(
        &p,
        "/api/x",
        Protocol::Grpc,
        &[("x-faultline-abort", "503")],
    );
    assert_eq!(
        status(out.decision.map(|d| d.action)),
        Some(StatusCode::SERVICE_UNAVAILABLE)
    );
}

#[test]
fn a_delay_and_an_abort_together_wait_then_abort() {
    let p = compiled(POLICY);
    let out = outcome(
        &p,
        "/api/x",
        Protocol::Http,
        &[("x-faultline-delay", "150ms"), ("x-faultline-abort", "503")],
    );
    let decision = out.decision.unwrap();
    assert_eq!(decision.kind, FaultKind::Abort);
    match decision.action {
        Action::DelayedAbort {
            delay,
            abort: AbortAction::Http(r),
        } => {
            assert_eq!(delay, Duration::from_millis(150));
            assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn without_control_headers_the_rule_does_not_match() {
    let p = compiled(
        "rules:\n- {name: ask, first: 1, fromHeaders: {maxDelay: 1s}}\n- {name: rest, abort: {status: 500}}\n",
    );
    let out = outcome(&p, "/x", Protocol::Http, &[("x-other", "1")]);
    assert_eq!(&**out.decision.unwrap().rule_name, "rest");
    assert_eq!(out.refused, None);
    assert_eq!(p.first_used(0, CLIENT), Some(0), "no budget spent");
    let asked = outcome(&p, "/x", Protocol::Http, &[("x-faultline-delay", "5ms")]);
    assert_eq!(&**asked.decision.unwrap().rule_name, "ask");
    let again = outcome(&p, "/x", Protocol::Http, &[("x-faultline-delay", "5ms")]);
    assert_eq!(
        &**again.decision.unwrap().rule_name,
        "rest",
        "first: 1 is spent"
    );
}

#[test]
fn match_and_percent_still_apply() {
    let p = compiled(POLICY);
    let out = outcome(&p, "/other", Protocol::Http, &[("x-faultline-delay", "1s")]);
    assert!(out.decision.is_none() && out.refused.is_none(), "{out:?}");
    let never = compiled("rules:\n- {percent: 0, fromHeaders: {maxDelay: 1s}}\n");
    assert_eq!(http(&never, &[("x-faultline-delay", "1s")]), None);
}

#[test]
fn kubelet_probes_never_choose_their_faults() {
    let p = compiled(POLICY);
    let out = outcome(
        &p,
        "/api/x",
        Protocol::Http,
        &[
            ("user-agent", "kube-probe/1.20"),
            ("x-faultline-abort", "503"),
        ],
    );
    assert!(out.decision.is_none() && out.refused.is_none(), "{out:?}");
}

#[test]
fn only_policies_with_the_rule_read_and_strip_control_headers() {
    assert!(compiled(POLICY).reads_control_headers());
    assert!(!compiled("rules:\n- {abort: {status: 503}}\n").reads_control_headers());
    let mut headers = HeaderMap::new();
    headers.append("x-faultline-delay", HeaderValue::from_static("1s"));
    headers.append("x-faultline-delay", HeaderValue::from_static("2s"));
    headers.append("x-faultline-abort", HeaderValue::from_static("503"));
    headers.append("x-faultline-abort-grpc", HeaderValue::from_static("14"));
    headers.append("x-faultline-other", HeaderValue::from_static("kept"));
    strip_control_headers(&mut headers);
    assert_eq!(headers.len(), 1);
    assert_eq!(headers["x-faultline-other"], "kept");
}
