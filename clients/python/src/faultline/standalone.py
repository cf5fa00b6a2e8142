"""The standalone proxy's control API: one ``faultline-proxy run --control``
in front of one service, its policy changed over HTTP.

    faultline-proxy run --listen 127.0.0.1:8081 --upstream 127.0.0.1:8080 --control

* ``GET /policy``: the policy in force (JSON: ``version``, ``source``, ``policy``, ...);
* ``PUT /policy`` with a YAML or JSON document: replace it (400 with
  ``{"error": ...}`` naming rule and field when it does not validate);
* ``DELETE /policy``: no faults.

Writes need ``--control`` (else 405; the standalone proxy only: with a
controller or a policy file the proxy refuses the flag) and, with
``--control-token``, ``Authorization: Bearer TOKEN`` (else 401).
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

from .errors import ControlApiError, InvalidPolicy
from .fault import Fault, FaultStatus, PodStatus, parse_metrics
from .rules import DurationLike, document_from_rules, from_yaml
from .targets import TargetLike
from .versions import text_version

DEFAULT_ADMIN_URL = "http://127.0.0.1:15400"


class StandaloneProxy:
    """A standalone ``faultline-proxy`` whose policy is set through its control API.

    Same methods as :class:`faultline.Faultline` (``inject``, ``recover``,
    ``status``, ``wait_applied``, context managers, the pytest fixture), so a
    test runs unchanged against a proxy on a laptop and against a cluster.
    ``target`` and ``namespace`` are accepted and ignored: the proxy is the
    one target.

    ``admin_url`` defaults to ``$FAULTLINE_PROXY_URL``, then
    ``http://127.0.0.1:15400``; ``token`` to ``$FAULTLINE_PROXY_TOKEN``.
    """

    def __init__(self, admin_url: Optional[str] = None, token: Optional[str] = None,
                 *, timeout: float = 5.0) -> None:
        self.admin_url = (admin_url or os.environ.get("FAULTLINE_PROXY_URL") or DEFAULT_ADMIN_URL).rstrip("/")
        self.token = token if token is not None else os.environ.get("FAULTLINE_PROXY_TOKEN") or None
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"StandaloneProxy({self.admin_url!r})"

    def _request(self, method: str, path: str, body: Optional[bytes] = None,
                 content_type: Optional[str] = None) -> Tuple[int, bytes]:
        req = urllib.request.Request(self.admin_url + path, data=body, method=method)
        if content_type:
            req.add_header("Content-Type", content_type)
        if self.token and method not in ("GET", "HEAD"):
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as response:
                return int(response.status), bytes(response.read())
        except urllib.error.HTTPError as e:
            return int(e.code), bytes(e.read())

    @staticmethod
    def _error(status: int, body: bytes) -> ControlApiError:
        text = body.decode("utf-8", "replace").strip()
        try:
            parsed = json.loads(text)
            if isinstance(parsed, dict) and isinstance(parsed.get("error"), str):
                text = parsed["error"]
        except ValueError:
            pass
        return ControlApiError(status, text)

    def _json(self, status: int, body: bytes) -> Dict[str, Any]:
        if status == 400:
            err = self._error(status, body)
            reason = err.message
            for prefix in ("invalid fault policy: ", "invalid policy: "):
                reason = reason[len(prefix):] if reason.startswith(prefix) else reason
            raise InvalidPolicy(reason, body.decode("utf-8", "replace"))
        if status != 200:
            raise self._error(status, body)
        parsed = json.loads(body) if body.strip() else {}
        return parsed if isinstance(parsed, dict) else {}

    def policy(self) -> Dict[str, Any]:
        """``GET /policy``: what the proxy runs (``version``, ``source``, ``policy``, ...)."""
        return self._json(*self._request("GET", "/policy"))

    def metrics(self) -> str:
        """``GET /metrics`` (Prometheus text)."""
        status, body = self._request("GET", "/metrics")
        if status != 200:
            raise self._error(status, body)
        return body.decode("utf-8", "replace")

    def put_policy(self, text: str, content_type: str = "application/yaml") -> Dict[str, Any]:
        """``PUT /policy`` with a whole document; returns the new ``/policy`` JSON."""
        return self._json(*self._request("PUT", "/policy", text.encode("utf-8"), content_type))

    def inject(
        self,
        target: Optional[TargetLike] = None,
        rules: Union[Mapping[str, Any], Sequence[Mapping[str, Any]], None] = None,
        *,
        namespace: Optional[str] = None,
        duration: Optional[DurationLike] = None,
        until: Optional[Any] = None,
        text: Optional[str] = None,
    ) -> Fault:
        """Replace the proxy's policy with these rules; applied when this returns.

        :class:`InvalidPolicy` carries the proxy's message (rule and field)
        when it does not validate; the previous policy stays.
        """
        del target, namespace  # one proxy, one target
        document: Any
        if text is None:
            document, text = document_from_rules(rules, duration=duration, until=until)
        else:
            document = from_yaml(text)
        answer = self.put_policy(text)
        return Fault(namespace=None, targets=(), text=text, document=document,
                     version=text_version(text), proxy=answer, injector=self)

    fault = inject

    def recover(self, fault: Union[Fault, TargetLike, None] = None, *, namespace: Optional[str] = None) -> None:
        """``DELETE /policy``: back to clean traffic. Idempotent."""
        del fault, namespace
        status, body = self._request("DELETE", "/policy")
        if status not in (200, 204):
            raise self._error(status, body)

    def list_faults(self, namespace: Optional[str] = None) -> list[Fault]:
        """The proxy's policy as a one-element list, or empty when it runs no faults."""
        del namespace
        current = self.policy()
        doc = current.get("policy")
        if not doc:
            return []
        text = json.dumps(doc)
        return [Fault(namespace=None, targets=(), text=text, document=doc,
                      version=str(current.get("version", "")), proxy=current, injector=self)]

    def status(self, target: Optional[TargetLike] = None, *, namespace: Optional[str] = None) -> FaultStatus:
        """One :class:`PodStatus` for the proxy: its version, faults injected so far."""
        del target, namespace
        current = self.policy()
        counts = parse_metrics(self.metrics())
        version = current.get("version") if isinstance(current.get("version"), str) else None
        pod = PodStatus(name=self.admin_url, namespace=None, phase="Running", injected=True,
                        reachable=True, connected=bool(current.get("connected")), version=version,
                        expected_version=version, faults_injected=sum(counts.values()),
                        faults_by_rule=counts, policy=current)
        doc = current.get("policy")
        return FaultStatus(target=self.admin_url, namespace=None,
                           text=json.dumps(doc) if doc else None, version=version, pods=[pod])

    def wait_applied(self, fault: Fault, timeout: float = 60.0) -> FaultStatus:
        """The control API applies before it answers: checks the proxy still runs ``fault``."""
        deadline = time.monotonic() + timeout
        want = (fault.proxy or {}).get("version")
        while True:
            st = self.status()
            if want is None or st.version == want:
                return st
            if time.monotonic() >= deadline:
                from .errors import NotApplied

                raise NotApplied(f"{fault} not applied: the proxy runs {st.version}, not {want}")
            time.sleep(0.1)
