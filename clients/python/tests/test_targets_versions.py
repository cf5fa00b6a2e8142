"""Targets parse as kubectl fault parses them; versions hash as the controller hashes."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Dict, List, Optional

import pytest

from faultline import InvalidTarget, Target, parse_target, policy_version, text_version
from faultline.fault import parse_metrics
from faultline.targets import classify
from faultline.versions import canonical_peers, peers_json, resolve_peers, selectors


def test_targets() -> None:
    assert parse_target("deploy/checkout") == Target("Deployment", "checkout")
    assert parse_target("StatefulSet/db") == Target("StatefulSet", "db")
    assert parse_target("job.batch/j") == Target("Job", "j")
    assert parse_target("ds/agent") == Target("DaemonSet", "agent")
    assert parse_target("rs/bare") == Target("ReplicaSet", "bare")
    assert parse_target("pod/p-1") == Target("Pod", "p-1")
    assert str(parse_target("deployment.apps/web")) == "deploy/web"
    for bad in ["checkout", "svc/x", "deploy/", "deploy/a/b", ""]:
        with pytest.raises(InvalidTarget, match="KIND/NAME"):
            parse_target(bad)


def test_selectors_are_targets_too() -> None:
    assert classify("deploy/web") == (Target("Deployment", "web"), None)
    assert classify("app=web") == (None, "app=web")
    assert classify("app.kubernetes.io/name=web,tier!=db") == (None, "app.kubernetes.io/name=web,tier!=db")
    assert classify({"tier": "front", "app": "web"}) == (None, "app=web,tier=front")
    with pytest.raises(InvalidTarget):
        classify({})


#: A policy text and the version real proxies report running it (no selector
#: peers); the cluster tests check that a proxy on the node reports exactly this.
API_DOWN_TEXT = "rules:\n- name: api-down\n  match:\n    direction: inbound\n    path: /api/*\n  abort:\n    status: 503\n"
API_DOWN_VERSION = "0a842f2a2a795757"


def test_text_version_is_pinned_like_the_controllers() -> None:
    assert text_version("abc") == "ba7816bf8f01cfea"


def test_policy_version_is_pinned_to_what_a_proxy_reports() -> None:
    from faultline import abort, policy, to_yaml

    assert to_yaml(policy([abort(503, path="/api/*", name="api-down")])) == API_DOWN_TEXT
    assert policy_version(API_DOWN_TEXT) == API_DOWN_VERSION
    assert text_version(API_DOWN_TEXT) == API_DOWN_VERSION  # one identifier everywhere


def test_policy_version_is_the_text_version_whatever_the_peers() -> None:
    import hashlib

    text = "rules: []"
    assert policy_version(None) == "none"
    assert policy_version(text) == hashlib.sha256(b"rules: []").hexdigest()[:16]
    assert policy_version(text) != policy_version("rules: [ ]")
    assert peers_json({"app=nats": ["10.0.0.7"]}) == b'{"app=nats":["10.0.0.7"]}'


def test_peers_are_canonical_like_rusts_btreemap_and_ipaddr_order() -> None:
    messy = {"b=2": ["10.0.0.10", "10.0.0.9", "fd00::1", "10.0.0.9"], "a=1": []}
    assert canonical_peers(messy) == {"a=1": [], "b=2": ["10.0.0.9", "10.0.0.10", "fd00::1"]}
    assert list(canonical_peers(messy)) == ["a=1", "b=2"]


def pod(name: str, labels: Dict[str, str], ip: Optional[str], phase: str = "Running", ns: str = "shop") -> Any:
    return SimpleNamespace(
        metadata=SimpleNamespace(name=name, namespace=ns, labels=labels),
        status=SimpleNamespace(phase=phase, pod_ip=ip, pod_ips=[SimpleNamespace(ip=ip)] if ip else None),
    )


def test_selector_peers_resolve_like_the_controller() -> None:
    doc = {"rules": [
        {"match": {"to": {"podSelector": {"tier": "db", "app": "pg"}}}, "partition": {}},
        {"match": {"from": {"podSelector": {"app": "pg", "tier": "db"}}}, "partition": {}},
        {"match": {"to": {"podSelector": {"app": "nats"}}}, "partition": {}},
    ]}
    assert [",".join(f"{k}={v}" for k, v in sorted(s.items())) for s in selectors(doc)] == ["app=nats", "app=pg,tier=db"]
    pods: List[Any] = [
        pod("n1", {"app": "nats"}, "10.88.1.9"),
        pod("n2", {"app": "nats"}, "10.88.1.10"),
        pod("n3", {"app": "nats"}, "10.88.1.11", phase="Succeeded"),
        pod("n4", {"app": "nats"}, "10.88.1.12", ns="other"),
        pod("p1", {"app": "pg", "tier": "db", "x": "y"}, "10.88.1.3"),
        pod("p2", {"app": "pg"}, "10.88.1.4"),
        pod("pending", {"app": "nats"}, None, phase="Pending"),
    ]
    assert resolve_peers(doc, "shop", pods) == {"app=nats": ["10.88.1.9", "10.88.1.10"], "app=pg,tier=db": ["10.88.1.3"]}


def test_metrics_are_read_per_rule_and_kind() -> None:
    text = (
        "# HELP faultline_faults_injected_total Faults injected.\n"
        "# TYPE faultline_faults_injected_total counter\n"
        'faultline_faults_injected_total{rule="a",kind="delay"} 3\n'
        'faultline_faults_injected_total{kind="abort",rule="b,c"} 2\n'
        "faultline_requests_total 10\n"
        "faultline_policy_connected 1\n"
        "# EOF\n"
    )
    assert parse_metrics(text) == {("a", "delay"): 3.0, ("b,c", "abort"): 2.0}
