"""The rule helpers build the documents the documentation shows, and
faultline's own parser accepts them."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
from pathlib import Path
from typing import Any, List

import pytest
import yaml

from faultline import (abort, ask, bandwidth, delay, dns, dns_delay, dns_drop, from_headers, grpc_abort, hang,
                       limit_data, partition, patch, policy, replace, reset, respond, response_match, slicer,
                       slow_close, to_yaml)
from faultline.rules import duration, from_yaml, match, peers, timestamp

from conftest import REPO, check_policy


def doc_blocks(name: str) -> List[Any]:
    """The YAML code blocks of a documentation page, parsed."""
    path = REPO / "docs" / name
    if not path.is_file():
        pytest.skip(f"{path} not found (tests run from the repository)")
    text = path.read_text()
    return [from_yaml(b) for b in re.findall(r"```yaml\n(.*?)```", text, re.S)]


def the_documented_example() -> Any:
    return policy(
        [
            delay("200ms", jitter="50ms", port=8080, methods=["post"], path="/api/checkout*",
                  headers={"x-test-user": "*"}, percent=20, name="slow-checkout"),
            abort(503, body="injected by faultline", host="payments.shop.svc.cluster.local", port=80,
                  first=3, name="payments-down"),
            grpc_abort("unavailable", direction="outbound", port=9090, path="/inventory.Stock/*",
                       name="grpc-unavailable"),
            partition(to={"app": "nats"}, name="nats-partition"),
        ],
        duration="120s",
    )


def test_helpers_build_the_fault_language_example() -> None:
    assert the_documented_example() == doc_blocks("fault-language.md")[0]


def test_helpers_build_the_recipes() -> None:
    blocks = doc_blocks("fault-language.md")
    flaky = policy([abort(500, host="payments.shop.svc.cluster.local", path="/v1/charge*", percent=1,
                          name="flaky-payments")], duration="10m")
    assert flaky in blocks
    retry = policy([abort(503, port=8080, methods=["POST"], first=2, name="retry-twice")])
    assert retry in blocks
    tcp = policy([
        delay("300ms", direction="outbound", port=5432, protocol="tcp", name="slow-postgres"),
        reset(after_bytes=1024, direction="outbound", port=6379, name="redis-cut"),
    ])
    assert tcp in blocks
    stub = policy([respond(200, body='{"items": []}', response_headers={"content-type": "application/json"},
                           host="recs.shop.svc.cluster.local", headers={"x-test-user": "qa-*"},
                           name="stub-recommendations")])
    assert stub in blocks
    choppy = policy([
        slicer(16, size_variation=8, delay="5ms", side="both", direction="outbound", port=5432,
               name="choppy-postgres"),
        bandwidth(request="10KB/s", response="1MB/s", port=8080, methods=["POST"], name="slow-uploads"),
        limit_data(65536, port=8080, path="/files/*", percent=10, name="truncated-downloads"),
    ])
    assert choppy in blocks
    stripe = policy([partition(direction="outbound", port=443, sni="*.stripe.com", name="stripe-unreachable")],
                    duration="5m")
    assert stripe in blocks
    tls = policy([
        abort(reset=True, sni="*.stripe.com", name="stripe-down"),
        delay("2s", host="s3.eu-west-1.amazonaws.com", port=443, name="slow-s3"),
        reset(after_bytes=20000, sni="api.github.com", percent=30, name="flaky-github"),
    ])
    assert tls in blocks
    dns_example = policy([
        dns("NXDOMAIN", query="*.nats.svc.cluster.local", types=["A", "aaaa"], name="nats-gone"),
        dns("servfail", percent=10, name="resolver-flaky"),
        dns_delay("2s", query="*.amazonaws.com", name="slow-external"),
    ], duration="5m")
    assert dns_example in blocks


def test_delay_distributions_build_the_documented_forms() -> None:
    blocks = [b for b in doc_blocks("fault-language.md") if isinstance(b, dict) and "delay" in b]
    documented = [b["delay"] for b in blocks]
    assert delay(uniform=("100ms", "300ms"))["delay"] in documented
    assert delay(median="80ms", p99="1200ms")["delay"] == {"lognormal": {"median": "80ms", "p99": "1200ms"}}
    assert delay(median="80ms", p99="1200ms", max_="5s")["delay"] in documented
    assert delay(scale="20ms", shape=1.16, max_="5s")["delay"] in documented
    with pytest.raises(ValueError, match="max_ caps"):
        delay(uniform=("1ms", "2ms"), max_="1s")


def test_from_headers_builds_the_documented_rule_and_asks_with_its_headers() -> None:
    documented = policy([from_headers(max_delay="5s", abort_statuses=[500, 503, 429], abort_grpc=["UNAVAILABLE"],
                                      port=8080, name="test-controlled")], duration="30m")
    assert documented in doc_blocks("fault-language.md")
    assert ask(delay=dt.timedelta(milliseconds=300)) == {"x-faultline-delay": "300ms"}
    assert ask(abort=503, delay="1s") == {"x-faultline-delay": "1s", "x-faultline-abort": "503"}
    assert ask(abort_grpc="UNAVAILABLE") == {"x-faultline-abort-grpc": "UNAVAILABLE"}


def test_faultlines_parser_refuses_an_empty_from_headers(kubectl_fault: Path) -> None:
    result = check_policy(kubectl_fault, to_yaml(policy([from_headers(name="x")])))
    assert result.returncode != 0
    assert 'rules[0] "x": fromHeaders: set what requests may ask for' in result.stderr


def test_yaml_text_round_trips_in_documented_key_order() -> None:
    doc = the_documented_example()
    text = to_yaml(doc)
    assert yaml.safe_load(text) == doc
    assert text.startswith("duration: 120s\nrules:\n- name: slow-checkout\n  match:\n")
    assert "'*'" in text or '"*"' in text  # a bare * would be a YAML alias


def test_direction_defaults_like_kubectl_fault() -> None:
    assert delay("1s")["match"] == {"direction": "inbound"}
    assert abort(503, host="a.b")["match"]["direction"] == "outbound"
    assert partition(to={"app": "x"})["match"] == {"direction": "outbound", "to": {"podSelector": {"app": "x"}}}
    assert partition(from_=["10.0.0.0/8"])["match"] == {"direction": "inbound", "from": {"cidrs": ["10.0.0.0/8"]}}
    assert "direction" not in hang(direction=None).get("match", {})
    assert hang(sni="*.stripe.com")["match"] == {"direction": "outbound", "sni": "*.stripe.com"}
    assert reset(after="1s", host="api.github.com")["match"]["direction"] == "outbound"
    assert match(to={"podSelector": {"app": "x"}, "cidrs": ["10.1.0.0/16"]})["to"] == peers(
        pod_selector={"app": "x"}, cidrs=["10.1.0.0/16"])


def test_units() -> None:
    assert duration("1m30s") == "1m30s"
    assert duration(dt.timedelta(seconds=90)) == "90s"
    assert duration(dt.timedelta(milliseconds=250)) == "250ms"
    assert duration(dt.timedelta(microseconds=5)) == "5us"
    with pytest.raises(TypeError, match="unit"):
        duration(10)  # type: ignore[arg-type]
    at = dt.datetime(2026, 11, 26, 18, 0, tzinfo=dt.timezone.utc)
    assert timestamp(at) == "2026-11-26T18:00:00Z"
    with pytest.raises(ValueError, match="timezone"):
        timestamp(dt.datetime(2026, 11, 26))
    assert policy([hang()], until=at)["until"] == "2026-11-26T18:00:00Z"


EQUIVALENT_TO_KUBECTL_FAULT = [
    (["--delay", "200ms", "--percent", "20", "--path", "/api/*", "--for", "60s"],
     policy([delay("200ms", path="/api/*", percent=20, name="kubectl-fault")], duration="60s")),
    (["--abort", "503", "--for", "2m"], policy([abort(503, name="kubectl-fault")], duration="2m")),
    (["--grpc", "UNAVAILABLE", "--direction", "outbound", "--port", "9090"],
     policy([grpc_abort("UNAVAILABLE", direction="outbound", port=9090, name="kubectl-fault")])),
    (["--partition-to", "app=nats", "--for", "30s"],
     policy([partition(to={"app": "nats"}, name="kubectl-fault")], duration="30s")),
    (["--bandwidth", "10KB/s", "--side", "request"],
     policy([bandwidth(request="10KB/s", name="kubectl-fault")])),
    (["--slicer", "16", "--slice-delay", "5ms", "--side", "both", "--port", "5432", "--direction", "outbound"],
     policy([slicer(16, delay="5ms", side="both", port=5432, direction="outbound", name="kubectl-fault")])),
    (["--limit-data", "4096", "--path", "/files/*"],
     policy([limit_data(4096, path="/files/*", name="kubectl-fault")])),
    (["--slow-close", "2s"], policy([slow_close("2s", name="kubectl-fault")])),
    (["--delay", "1s", "--jitter", "100ms", "--host", "payments.shop", "--method", "post", "--port", "80"],
     policy([delay("1s", jitter="100ms", host="payments.shop", methods=["POST"], port=80, name="kubectl-fault")])),
    (["--delay-uniform", "100ms,300ms"], policy([delay(uniform=("100ms", "300ms"), name="kubectl-fault")])),
    (["--delay-lognormal", "80ms,1200ms,5s", "--for", "5m"],
     policy([delay(median="80ms", p99="1200ms", max_="5s", name="kubectl-fault")], duration="5m")),
    (["--delay-pareto", "20ms,1.16,5s", "--port", "8080"],
     policy([delay(scale="20ms", shape=1.16, max_="5s", port=8080, name="kubectl-fault")])),
    (["--sni", "*.stripe.com", "--port", "443", "--delay", "2s", "--for", "5m"],
     policy([delay("2s", sni="*.stripe.com", port=443, name="kubectl-fault")], duration="5m")),
    (["--sni", "api.stripe.com", "--port", "443", "--abort-reset"],
     policy([abort(reset=True, sni="api.stripe.com", port=443, name="kubectl-fault")])),
    (["--dns-rcode", "nxdomain", "--dns-name", "*.nats.svc.cluster.local", "--dns-type", "A", "--dns-type", "AAAA",
      "--for", "5m"],
     policy([dns("NXDOMAIN", query="*.nats.svc.cluster.local", types=["A", "AAAA"], name="kubectl-fault")],
            duration="5m")),
    (["--dns-drop", "--dns-name", "api.example.com"],
     policy([dns_drop(query="api.example.com", name="kubectl-fault")])),
    (["--header-max-delay", "5s", "--header-abort", "503,429", "--header-abort-grpc", "unavailable", "--for", "30m"],
     policy([from_headers(max_delay="5s", abort_statuses=[503, 429], abort_grpc=["UNAVAILABLE"],
                          name="kubectl-fault")], duration="30m")),
    (["--delay", "2s", "--response-status", "5xx", "--for", "5m"],
     policy([delay("2s", response=response_match(["5xx"]), name="kubectl-fault")], duration="5m")),
    (["--replace-status", "503", "--replace-body", "down", "--response-status", "502"],
     policy([replace(503, body="down", response=response_match([502]), name="kubectl-fault")])),
    (["--set-header", "retry-after=5", "--remove-header", "etag"],
     policy([patch(set_headers={"retry-after": "5"}, remove_headers=["etag"], name="kubectl-fault")])),
]


@pytest.mark.parametrize("flags,document", EQUIVALENT_TO_KUBECTL_FAULT, ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_helpers_build_what_kubectl_fault_builds(kubectl_fault: Path, flags: List[str], document: Any) -> None:
    out = subprocess.run([str(kubectl_fault), "inject", "deploy/x", *flags, "--dry-run"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    assert from_yaml(out) == document


EVERY_HELPER = [
    delay("200ms", jitter="50ms"),
    delay(mean="200ms", stddev="40ms", side="response"),
    delay(uniform=("100ms", dt.timedelta(milliseconds=300))),
    delay(median="80ms", p99="1200ms"),
    delay(median="80ms", p99="1200ms", max_="5s", side="response"),
    delay(scale="20ms", shape=1.16, max_="5s"),
    abort(503, body="x", response_headers={"retry-after": "5"}),
    abort(reset=True),
    grpc_abort("DEADLINE_EXCEEDED", message="injected"),
    respond(body="{}", response_headers={"content-type": "application/json"}),
    hang(path="/slow"),
    bandwidth("64KiB/s"),
    bandwidth(bytes_per_second=1000),
    partition(to={"app": "nats"}, mode="drop"),
    partition(from_={"cidrs": ["10.0.0.0/8", "192.168.1.7"]}),
    reset(after_bytes=4096, after=dt.timedelta(seconds=30)),
    bandwidth(request="10KB/s", response="1MB/s"),
    bandwidth(response=65536),
    slicer(64, size_variation=32, delay="2ms", side="both", protocol="tcp", port=5432),
    limit_data(4096, path="/files/*"),
    limit_data(100, side="request", direction="outbound"),
    slow_close(dt.timedelta(seconds=2), side="request"),
    abort(reset=True, sni="api.stripe.com"),
    delay("1s", sni="*.stripe.com", port=443),
    bandwidth("1MiB", host="s3.amazonaws.com", protocol="tls"),
    hang(protocol="tls"),
    partition(sni="*.stripe.com", port=443, mode="drop"),
    reset(after="1s", host="api.github.com"),
    slicer(16, sni="*.stripe.com"),
    limit_data(100, side="request", sni="api.github.com"),
    slow_close("1s", host="api.github.com", protocol="tls"),
    dns("REFUSED", query="*.example.com", types=["SRV"], first=2),
    dns_delay("300ms", jitter="100ms", side="response", types=["AAAA"]),
    dns_drop(query="flaky.example.com"),
    from_headers(max_delay="5s", abort_statuses=[503, 429], abort_grpc=["unavailable", 4]),
    from_headers(max_delay=dt.timedelta(milliseconds=250), port=8080, percent=50, first=3),
    delay("1s", response=response_match("5xx", headers={"x-cache": "MISS*"})),
    delay("1s", side="response"),
    abort(500, response=response_match([502, "520-530"])),
    grpc_abort("RESOURCE_EXHAUSTED", response=response_match(headers={"grpc-status": "14"})),
    replace(503, body="down", response_headers={"retry-after": "5"}, response=response_match(404)),
    patch(set_headers={"x-a": "1"}, remove_headers=["etag"], merge={"items": [], "promo": None}),
    patch(429),
]


def test_every_helper_builds_a_policy_faultlines_parser_accepts(kubectl_fault: Path) -> None:
    rules = [dict(r, name=f"r{i}") for i, r in enumerate(EVERY_HELPER)]
    text = to_yaml(policy(rules, duration="5m"))
    result = check_policy(kubectl_fault, text)
    assert result.returncode == 0, result.stderr + text


def test_faultlines_parser_names_the_field_of_a_bad_dns_rule(kubectl_fault: Path) -> None:
    text = to_yaml(policy([dns("NXDOMAIN", types=["AAAAA"], name="x")]))
    result = check_policy(kubectl_fault, text)
    assert result.returncode != 0
    assert 'rules[0] "x": match.dns.types[0]: "AAAAA" is not a DNS record type' in result.stderr


def test_faultlines_parser_names_rule_and_field(kubectl_fault: Path) -> None:
    text = to_yaml(policy([abort(700, name="x")]))
    result = check_policy(kubectl_fault, text)
    assert result.returncode != 0
    assert 'rules[0] "x": abort.status: 700 is not an HTTP status' in result.stderr
    text = to_yaml(policy([abort(503, sni="api.stripe.com", name="tls")]))
    result = check_policy(kubectl_fault, text)
    assert result.returncode != 0
    assert 'rules[0] "tls": abort.status: sni (TLS, which is not decrypted) has no HTTP responses' in result.stderr


def test_helpers_build_the_response_side_examples() -> None:
    blocks = doc_blocks("fault-language.md")
    slow = [delay("1s", path="/api/*", response=response_match("5xx", headers={"x-cache": "MISS*"}),
                  direction=None, name="slow-errors")]
    assert slow in blocks
    maintenance = [replace(503, response_headers={"retry-after": "30", "content-type": "text/plain"},
                           body="down for maintenance", host="payments.shop.svc.cluster.local",
                           direction=None, response=response_match("5xx"), name="maintenance")]
    assert maintenance in blocks
    cart = [patch(set_headers={"x-faultline": "patched"}, remove_headers=["etag"],
                  merge={"items": [], "total": 0, "promo": None}, path="/api/cart", direction=None,
                  response=response_match(200), name="empty-cart")]
    assert cart in blocks
    inventory = "inventory.shop.svc.cluster.local"
    recipe = policy([
        patch(429, set_headers={"retry-after": "1"}, host=inventory, response=response_match("5xx"), first=1,
              name="throttled"),
        delay("2s", host=inventory, response=response_match("5xx"), percent=10, name="slow-errors"),
    ])
    assert recipe in blocks


def test_policies_are_read_as_faultline_reads_them() -> None:
    # YAML 1.1 (PyYAML's safe_load) reads a bare on, yes or no as a boolean.
    assert yaml.safe_load("delay: {on: response}") == {"delay": {True: "response"}}
    assert from_yaml("delay: {on: response}") == {"delay": {"on": "response"}}
    assert from_yaml("a: yes\nb: true\n") == {"a": "yes", "b": True}


def test_a_delay_decided_on_the_response_waits_on_the_response() -> None:
    assert delay("1s", response=response_match(503))["delay"] == {"fixed": "1s", "side": "response"}
    with pytest.raises(ValueError, match="status, headers or both"):
        response_match()
