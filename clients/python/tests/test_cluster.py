"""Against a real API server and a real node with faultline installed: run by
the Rust node test (`cargo test -p faultline-e2e --test node python`), which
sets KUBECONFIG and FAULTLINE_E2E=1. Faults are injected with the client, and
seen by real HTTP requests from this host to the pods' IPs."""

from __future__ import annotations

import subprocess
import textwrap
from typing import Any, Iterator, List, Tuple

import pytest

from faultline import (
    FAULTS_ANNOTATION,
    SEEN_AT_ANNOTATION,
    Faultline,
    InvalidPolicy,
    NotApplied,
    NotFound,
    NotOptedIn,
    abort,
    partition,
    policy_version,
)
from faultline.session import FaultSession

from cluster import APP_PORT, annotations, create_namespace, get, has_proxy, ready_pods, unique, until_all_answer
from conftest import PLUGIN_ARGS, binary, e2e_enabled
from test_targets_versions import API_DOWN_VERSION

pytestmark = pytest.mark.skipif(
    not e2e_enabled(), reason="cluster tests run with FAULTLINE_E2E=1 and KUBECONFIG (the Rust node test sets both)"
)

REPLICAS = 2


@pytest.fixture(scope="module")
def fl() -> Faultline:
    return Faultline()


@pytest.fixture(scope="module")
def web(fl: Faultline) -> Iterator[Tuple[str, List[str]]]:
    """A labelled namespace with a Deployment `web` of two injected, ready pods: (namespace, pod IPs)."""
    core: Any = fl._core
    ns = unique("py-client")
    create_namespace(core, ns, labelled=True)
    try:
        fl._apps.create_namespaced_deployment(ns, __import__("cluster").web_deployment("web", REPLICAS))
        pods = ready_pods(core, ns, "web", REPLICAS)
        assert all(has_proxy(p) for p in pods), "pods were not injected"
        yield ns, [p.status.pod_ip for p in pods]
    finally:
        core.delete_namespace(ns)


def test_inject_wait_status_recover(fl: Faultline, web: Tuple[str, List[str]], faultline: FaultSession) -> None:
    ns, ips = web
    fault = faultline.inject("deploy/web", namespace=ns, rules=[abort(503, path="/api/*", name="api-down")])
    assert annotations(fl._apps, ns, "web")[FAULTS_ANNOTATION] == fault.text

    status = faultline.wait_applied(fault, timeout=30)
    assert len(status.pods) == REPLICAS
    for ip in ips:
        assert get(f"http://{ip}:{APP_PORT}/api/x")[0] == 503
        assert get(f"http://{ip}:{APP_PORT}/clean.html") == (200, "clean\n")

    st = fl.status("deploy/web", namespace=ns)
    assert st.text == fault.text and st.version == fault.version
    assert [p.injected and p.connected and p.reachable for p in st.pods] == [True] * REPLICAS
    assert all(p.version == p.expected_version == policy_version(fault.text) for p in st.pods), st
    assert st.pods[0].version == API_DOWN_VERSION
    assert st.applied
    assert st.faults_injected >= REPLICAS
    assert all(p.faults_by_rule.get(("api-down", "abort"), 0) >= 1 for p in st.pods), st.pods

    listed = fl.list_faults(ns)
    assert [(str(f.targets[0]), f.version) for f in listed] == [("deploy/web", fault.version)]
    assert (ns, fault.version) in [(f.namespace, f.version) for f in fl.list_faults()]  # every namespace

    with pytest.raises(NotApplied, match="want at least 3"):
        fl.wait_applied(fault, timeout=1, min_pods=3)

    faultline.recover(fault)
    assert FAULTS_ANNOTATION not in annotations(fl._apps, ns, "web")
    assert SEEN_AT_ANNOTATION not in annotations(fl._apps, ns, "web")
    until_all_answer(ips, "/api/x", 200)
    assert fl.list_faults(ns) == []
    fl.recover("deploy/web", namespace=ns)  # idempotent


def test_selector_target_with_peers_and_kubectl_fault_agrees(fl: Faultline, web: Tuple[str, List[str]]) -> None:
    ns, ips = web
    rules = [abort(503, path="/api/*", name="api-down"),
             partition(to={"app": "web"}, port=9, name="cut-discard")]
    with fl.inject("app=web", namespace=ns, rules=rules) as fault:
        assert [str(t) for t in fault.targets] == ["deploy/web"]
        fl.wait_applied(fault, timeout=30)
        until_all_answer(ips, "/api/x", 503)
        st = fl.status("deploy/web", namespace=ns)
        # The expected version, computed here with the resolved selector peers,
        # is the one the controller pushed and the proxies run.
        want = policy_version(fault.text)
        assert want == fault.version  # one identifier, as inject printed it
        assert [(p.version, p.expected_version) for p in st.pods] == [(want, want)] * REPLICAS, st.pods
        assert all(p.policy and p.policy["peers"] == {"app=web": sorted(ips, key=_ip_key)} for p in st.pods)

        plugin = binary("kubectl-fault")
        if plugin is not None:
            out = subprocess.run([str(plugin), "status", "deploy/web", "-n", ns],
                                 capture_output=True, text=True, timeout=60, check=True).stdout
            rows = [line.split() for line in out.splitlines()
                    if line.split() and line.split()[0] in {p.name for p in st.pods}]
            assert sorted((r[0], r[3], r[4]) for r in rows) == sorted((p.name, want, want) for p in st.pods), out
    assert FAULTS_ANNOTATION not in annotations(fl._apps, ns, "web")
    until_all_answer(ips, "/api/x", 200)


def test_a_pod_target_and_auto_recover(fl: Faultline, web: Tuple[str, List[str]]) -> None:
    ns, ips = web
    pods = sorted(fl._core.list_namespaced_pod(ns, label_selector="app=web").items, key=lambda p: p.metadata.name)
    one, other = pods[0], pods[1]
    fault = fl.inject(f"pod/{one.metadata.name}", namespace=ns, rules=[abort(503, path="/api/*")], duration="3s")
    status = fl.wait_applied(fault, timeout=30)
    assert [p.name for p in status.pods] == [one.metadata.name]
    until_all_answer([one.status.pod_ip], "/api/x", 503)
    assert get(f"http://{other.status.pod_ip}:{APP_PORT}/api/x")[0] == 200
    # `duration`: the controller removes the policy, and the proxy is clean again.
    until_all_answer([one.status.pod_ip], "/api/x", 200, timeout=30)
    assert fl.list_faults(ns) == []


def _ip_key(ip: str) -> Tuple[int, ...]:
    return tuple(int(x) for x in ip.split("."))


def test_an_invalid_rule_raises_the_webhooks_message(fl: Faultline, web: Tuple[str, List[str]]) -> None:
    ns, _ = web
    with pytest.raises(InvalidPolicy) as raised:
        fl.inject("deploy/web", namespace=ns, rules=[abort(700, name="x")])
    assert raised.value.reason == 'rules[0] "x": abort.status: 700 is not an HTTP status (100-599)'
    assert "denied the request" in raised.value.detail
    assert str(raised.value).startswith('invalid fault policy: rules[0] "x": abort.status')
    assert FAULTS_ANNOTATION not in annotations(fl._apps, ns, "web")
    # validate() asks the same question without writing anything.
    with pytest.raises(InvalidPolicy, match="percent"):
        fl.validate("deploy/web", namespace=ns, rules=[abort(503, percent=101)])
    assert fl.validate("deploy/web", namespace=ns, rules=[abort(503)]).startswith("rules:")


def test_targets_that_cannot_take_a_fault_are_refused(fl: Faultline, web: Tuple[str, List[str]]) -> None:
    ns, _ = web
    with pytest.raises(NotFound, match=f"Deployment {ns}/nope not found"):
        fl.inject("deploy/nope", namespace=ns, rules=[abort(503)])
    with pytest.raises(NotFound, match="no workload"):
        fl.inject("app=nothing-here", namespace=ns, rules=[abort(503)])
    plain = unique("py-plain")
    create_namespace(fl._core, plain, labelled=False)
    try:
        fl._apps.create_namespaced_deployment(plain, __import__("cluster").web_deployment("idle", 0))
        with pytest.raises(NotOptedIn, match="faultline.dev/injection=enabled"):
            fl.inject("deploy/idle", namespace=plain, rules=[abort(503)])
        assert FAULTS_ANNOTATION not in annotations(fl._apps, plain, "idle")
    finally:
        fl._core.delete_namespace(plain)


FAILING_TEST = textwrap.dedent(
    """
    import os, urllib.error, urllib.request
    from faultline import abort

    def test_fails_on_purpose(faultline):
        ns, ips = os.environ["FL_TEST_NS"], os.environ["FL_TEST_IPS"].split(",")
        fault = faultline.inject("deploy/web", namespace=ns, rules=[abort(503, path="/api/*")])
        faultline.wait_applied(fault, timeout=30)
        for ip in ips:
            try:
                urllib.request.urlopen(f"http://{ip}:8080/api/x", timeout=5)
                status = 200
            except urllib.error.HTTPError as e:
                status = e.code
            assert status == 503
        print("the fault is in place")
        assert False, "failing on purpose with the fault in place"
    """
)


@pytest.mark.usefixtures("nested_pytest_env")
def test_the_fixture_recovers_when_the_test_fails(
    fl: Faultline, web: Tuple[str, List[str]], pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    ns, ips = web
    monkeypatch.setenv("FL_TEST_NS", ns)
    monkeypatch.setenv("FL_TEST_IPS", ",".join(ips))
    path = pytester.makepyfile(test_fails=FAILING_TEST)
    result = pytester.runpytest_subprocess(*PLUGIN_ARGS, "-p", "no:cacheprovider", "-s", str(path))
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*the fault is in place*", "*failing on purpose with the fault in place*",
                                 "*faultline: faults in place when the test failed*",
                                 "fault * 1 rule(s), recovered at teardown"])
    assert FAULTS_ANNOTATION not in annotations(fl._apps, ns, "web")
    until_all_answer(ips, "/api/x", 200)
