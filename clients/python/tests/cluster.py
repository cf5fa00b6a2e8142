"""Helpers of the cluster tests: a namespace and a web Deployment like the
node story tests use (busybox httpd on 8080 serving /clean.html and /api/x),
and HTTP requests from the host straight to pod IPs."""

from __future__ import annotations

import os
import secrets
import time
import urllib.error
import urllib.request
from typing import Any, Callable, Dict, List, Optional, Tuple, TypeVar

BUSYBOX = "localhost/faultline/busybox:1"
APP_PORT = 8080
INJECTION_LABEL = ("faultline.dev/injection", "enabled")
WAIT = 120.0

T = TypeVar("T")


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def wait_for(what: str, timeout: float, probe: Callable[[], Tuple[bool, T]], interval: float = 0.25) -> T:
    """Poll `probe` (returning `(done, value)`) until done; the timeout error shows the last value."""
    deadline = time.monotonic() + timeout
    while True:
        done, value = probe()
        if done:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}; last: {value}")
        time.sleep(interval)


def get(url: str, timeout: float = 5.0) -> Tuple[int, str]:
    """(status, body) of a GET; connection errors come back as status 0."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return int(r.status), r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return int(e.code), e.read().decode("utf-8", "replace")
    except OSError as e:
        return 0, str(e)


def until_all_answer(ips: List[str], path: str, status: int, timeout: float = 15.0) -> None:
    for ip in ips:
        url = f"http://{ip}:{APP_PORT}{path}"
        wait_for(f"{url} to answer {status}", timeout, lambda: (get(url)[0] == status, get(url)))


def create_namespace(core: Any, name: str, labelled: bool) -> None:
    labels: Dict[str, str] = dict([INJECTION_LABEL]) if labelled else {}
    core.create_namespace({"metadata": {"name": name, "labels": labels}})

    # Kubernetes 1.20 refuses pods until the default service account has its token.
    def ready() -> Tuple[bool, Any]:
        try:
            sa = core.read_namespaced_service_account("default", name)
        except Exception as e:  # not created yet
            return False, e
        return bool(sa.secrets), sa.secrets

    wait_for(f"service account default in {name}", WAIT, ready)


def web_deployment(name: str, replicas: int) -> Dict[str, Any]:
    script = ("mkdir -p /www/api && echo hello > /www/index.html && echo clean > /www/clean.html "
              "&& echo api > /www/api/x && exec httpd -f -p 8080 -h /www")
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": 2,
                    "containers": [{
                        "name": "app",
                        "image": BUSYBOX,
                        "imagePullPolicy": "IfNotPresent",
                        "command": ["sh", "-c", script],
                        "ports": [{"containerPort": APP_PORT, "name": "http"}],
                        "readinessProbe": {"httpGet": {"path": "/index.html", "port": APP_PORT},
                                           "periodSeconds": 2},
                    }],
                },
            },
        },
    }


def has_proxy(pod: Any) -> bool:
    spec = pod.spec
    return any(c.name == "faultline-proxy" for c in (spec.containers or []) + (spec.init_containers or []))


def ready_pods(core: Any, ns: str, app: str, count: int) -> List[Any]:
    def probe() -> Tuple[bool, Any]:
        pods = [p for p in core.list_namespaced_pod(ns, label_selector=f"app={app}").items
                if p.metadata.deletion_timestamp is None]
        ready = [p for p in pods if p.status.phase == "Running" and p.status.pod_ip
                 and all(c.ready for c in p.status.container_statuses or [])]
        summary = [(p.metadata.name, p.status.phase) for p in pods]
        return len(ready) == count == len(pods), ready if len(ready) == count else summary

    return list(wait_for(f"{count} ready pods of {ns}/{app}", WAIT, probe))


def annotations(apps: Any, ns: str, name: str) -> Dict[str, str]:
    return dict(apps.read_namespaced_deployment(name, ns).metadata.annotations or {})


def env_flag(name: str) -> Optional[str]:
    return os.environ.get(name)
