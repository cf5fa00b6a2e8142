"""StandaloneProxy against a real `faultline-proxy run` (standalone mode, real
sockets on 127.0.0.1) in front of a small HTTP server in this process.

The control API needs a proxy built with `--control`; until `faultline-proxy
run --help` lists it, the tests that write policies skip and say so."""

from __future__ import annotations

import http.server
import json
import re
import socket
import subprocess
import textwrap
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator, List, Optional, Tuple

import pytest

from faultline import ControlApiError, InvalidPolicy, StandaloneProxy, abort, delay, policy, to_yaml
from faultline.session import FaultSession

from cluster import get
from conftest import PLUGIN_ARGS, binary


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Handler(http.server.BaseHTTPRequestHandler):
    PAGES = {"/clean.html": "clean\n", "/api/x": "api\n", "/index.html": "hello\n"}

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.PAGES.get(self.path)
        self.send_response(200 if body else 404)
        data = (body or "not found\n").encode()
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def upstream() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def proxy_bin() -> Path:
    path = binary("faultline-proxy")
    if path is None:
        pytest.skip("faultline-proxy is not built (cargo build --workspace --bins)")
    return path


@pytest.fixture(scope="module")
def control_bin(proxy_bin: Path) -> Path:
    help_text = subprocess.run([str(proxy_bin), "run", "--help"], capture_output=True, text=True, timeout=30).stdout
    assert re.search(r"--control[\s,]", help_text), f"{proxy_bin} run --help does not list --control"
    return proxy_bin


class Proxy:
    """A running `faultline-proxy run` in standalone mode."""

    def __init__(self, binary: Path, upstream: int, *extra: str) -> None:
        self.port, admin = free_port(), free_port()
        self.admin_url = f"http://127.0.0.1:{admin}"
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [str(binary), "run", "--listen", f"127.0.0.1:{self.port}", "--upstream", f"127.0.0.1:{upstream}",
             "--admin-addr", f"127.0.0.1:{admin}", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        deadline = time.monotonic() + 20
        while get(f"{self.admin_url}/readyz", timeout=1)[0] != 200:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"faultline-proxy did not get ready: {self.output()}")
            time.sleep(0.05)

    def output(self) -> str:
        if self.process.poll() is None:
            return "(running)"
        return self.process.stdout.read() if self.process.stdout else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def controlled(control_bin: Path, upstream: int) -> Iterator[Proxy]:
    p = Proxy(control_bin, upstream, "--control")
    yield p
    p.stop()


def test_without_control_writes_are_refused_and_reads_work(proxy_bin: Path, upstream: int, tmp_path: Path) -> None:
    faults = tmp_path / "faults.yaml"
    faults.write_text(to_yaml(policy([abort(503, path="/api/*", name="from-file")])))
    p = Proxy(proxy_bin, upstream, "--faults", str(faults))
    try:
        proxy = StandaloneProxy(p.admin_url)
        with pytest.raises(ControlApiError) as refused:
            proxy.inject(rules=[abort(500)])
        assert refused.value.status == 405
        assert get(f"{p.url}/api/x")[0] == 503
        st = proxy.status()
        assert st.pods[0].version == proxy.policy()["version"]
        assert st.pods[0].policy and st.pods[0].policy["source"]["type"] == "file"
        assert st.faults_injected == 1.0
        assert st.pods[0].faults_by_rule == {("from-file", "abort"): 1.0}
    finally:
        p.stop()


def test_inject_status_recover(controlled: Proxy) -> None:
    proxy = StandaloneProxy(controlled.admin_url)
    fault = proxy.inject(rules=[abort(503, path="/api/*", name="api-down")], duration="10m")
    assert fault.proxy and fault.proxy["source"]["type"] == "control"
    assert fault.proxy.get("expiresAt")
    assert get(f"{controlled.url}/api/x")[0] == 503
    assert get(f"{controlled.url}/clean.html") == (200, "clean\n")
    st = proxy.wait_applied(fault, timeout=5)
    assert st.version == fault.proxy["version"]
    assert st.pods[0].faults_by_rule == {("api-down", "abort"): 1.0}
    assert [f.version for f in proxy.list_faults()] == [fault.proxy["version"]]
    proxy.recover(fault)
    assert get(f"{controlled.url}/api/x") == (200, "api\n")
    assert proxy.policy().get("policy") is None
    assert proxy.list_faults() == []
    proxy.recover()  # idempotent


def test_yaml_and_json_documents(controlled: Proxy) -> None:
    proxy = StandaloneProxy(controlled.admin_url)
    doc = policy([delay("300ms", path="/clean.html", name="slow")])
    answer = proxy.put_policy(json.dumps(doc), "application/json")
    assert answer["policy"]["rules"][0]["name"] == "slow"
    started = time.monotonic()
    assert get(f"{controlled.url}/clean.html")[0] == 200
    assert time.monotonic() - started >= 0.3
    with proxy.inject(rules=[abort(418, name="teapot")]):
        assert get(f"{controlled.url}/clean.html")[0] == 418
    assert get(f"{controlled.url}/clean.html")[0] == 200


def test_an_invalid_policy_raises_the_proxys_message_and_changes_nothing(controlled: Proxy) -> None:
    proxy = StandaloneProxy(controlled.admin_url)
    proxy.inject(rules=[abort(503, path="/api/*")])
    before = proxy.policy()["version"]
    with pytest.raises(InvalidPolicy) as raised:
        proxy.inject(rules=[abort(700, name="x")])
    assert raised.value.reason == 'rules[0] "x": abort.status: 700 is not an HTTP status (100-599)'
    assert proxy.policy()["version"] == before
    assert get(f"{controlled.url}/api/x")[0] == 503


def test_a_token_guards_writes(control_bin: Path, upstream: int) -> None:
    p = Proxy(control_bin, upstream, "--control", "--control-token", "s3cret")
    try:
        for token in (None, "wrong"):
            with pytest.raises(ControlApiError) as refused:
                StandaloneProxy(p.admin_url, token=token or "").inject(rules=[abort(503)])
            assert refused.value.status == 401
        assert StandaloneProxy(p.admin_url).policy().get("policy") is None  # reads need no token
        proxy = StandaloneProxy(p.admin_url, token="s3cret")
        proxy.inject(rules=[abort(503)])
        assert get(f"{p.url}/clean.html")[0] == 503
        proxy.recover()
        assert get(f"{p.url}/clean.html")[0] == 200
    finally:
        p.stop()


def test_a_session_recovers_everything_it_injected(controlled: Proxy) -> None:
    with FaultSession(StandaloneProxy(controlled.admin_url)) as fl:
        fl.inject(rules=[abort(503)])
        assert get(f"{controlled.url}/clean.html")[0] == 503
    assert get(f"{controlled.url}/clean.html")[0] == 200


FAILING_TEST = textwrap.dedent(
    """
    import os, urllib.error, urllib.request
    from faultline import abort

    def test_fails_on_purpose(faultline):
        faultline.inject(rules=[abort(503, path="/api/*")])
        try:
            urllib.request.urlopen(os.environ["FL_PROXY"] + "/api/x", timeout=5)
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
    controlled: Proxy, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FL_PROXY", controlled.url)
    path = pytester.makepyfile(test_fails=FAILING_TEST)
    result = pytester.runpytest_subprocess(*PLUGIN_ARGS, "-p", "no:cacheprovider", "-s",
                                           "--faultline-proxy", controlled.admin_url, str(path))
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*the fault is in place*", "*failing on purpose with the fault in place*",
                                 "*faultline: faults in place when the test failed*",
                                 "fault * 1 rule(s), recovered at teardown"])
    assert StandaloneProxy(controlled.admin_url).policy().get("policy") is None
    assert get(f"{controlled.url}/api/x") == (200, "api\n")
