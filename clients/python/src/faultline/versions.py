"""Policy versions, computed exactly as faultline's controller computes them.

* :func:`text_version`: the first 16 hex digits of SHA-256 over the
  annotation text: the one identifier ``kubectl fault inject``, ``list``
  and ``status``, the proxies' ``/policy``, the Events and the
  ``faultline.dev/faults-seen-at`` record all show;
* :func:`policy_version`: the version a proxy runs for an annotation (or
  ``none`` without one): its :func:`text_version`. Resolved pod-selector
  peers travel beside it; when they move, the controller pushes them under
  the same version.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Union

#: The version of "no faults".
NO_FAULTS_VERSION = "none"

IpAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part)
    return h.hexdigest()[:16]


def text_version(text: str) -> str:
    """Hash of the annotation text alone: ``text_version("abc") == "ba7816bf8f01cfea"``."""
    return _digest(text.encode("utf-8"))


def _ip_key(ip: IpAddress) -> tuple[int, bytes]:
    # IPv4 sorts before IPv6, then by address bytes (Rust's `IpAddr` order).
    return (ip.version, ip.packed)


def _ip_text(ip: IpAddress) -> str:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return f"::ffff:{ip.ipv4_mapped}"
    return str(ip)


def canonical_peers(peers: Mapping[str, Iterable[str]]) -> Dict[str, List[str]]:
    """Peers as the controller serializes them: IPs parsed, sorted, deduplicated."""
    out: Dict[str, List[str]] = {}
    for key in sorted(peers, key=lambda k: k.encode("utf-8")):
        ips = sorted({ipaddress.ip_address(ip) for ip in peers[key]}, key=_ip_key)
        out[key] = [_ip_text(ip) for ip in ips]
    return out


def peers_json(peers: Mapping[str, Iterable[str]]) -> bytes:
    """Compact JSON of the peers, byte for byte as the controller hashes it."""
    return json.dumps(canonical_peers(peers), separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def policy_version(text: Optional[str]) -> str:
    """The version a proxy runs for annotation ``text`` (``none`` for no policy)."""
    if text is None:
        return NO_FAULTS_VERSION
    return text_version(text)


def selector_key(selector: Mapping[str, Any]) -> str:
    """``{"tier": "db", "app": "pg"}`` -> ``"app=pg,tier=db"`` (keys in byte order)."""
    return ",".join(f"{k}={_label_value(selector[k])}" for k in sorted(selector, key=lambda k: str(k).encode()))


def _label_value(value: Any) -> str:
    # YAML 1.1 (PyYAML) reads `yes`/`on` as booleans where faultline reads
    # strings; map the common cases back.
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(value)


def selectors(document: Any) -> List[Dict[str, str]]:
    """The distinct pod selectors of a policy document (``match.to`` / ``match.from``)."""
    out: List[Dict[str, str]] = []
    rules = document.get("rules") if isinstance(document, Mapping) else None
    for rule in rules if isinstance(rules, list) else []:
        m = rule.get("match") if isinstance(rule, Mapping) else None
        if not isinstance(m, Mapping):
            continue
        for side in ("to", "from"):
            peer = m.get(side)
            sel = peer.get("podSelector") if isinstance(peer, Mapping) else None
            if isinstance(sel, Mapping):
                labels = {str(k): _label_value(v) for k, v in sel.items()}
                if labels not in out:
                    out.append(labels)
    out.sort(key=selector_key)
    return out


def resolve_peers(document: Any, namespace: str, pods: Sequence[Any]) -> Dict[str, List[str]]:
    """Resolve the policy's pod selectors against ``pods`` (Kubernetes ``V1Pod`` objects).

    As the controller does: pods in ``namespace`` that are not Succeeded or
    Failed and carry all the selector's labels; their ``podIP`` / ``podIPs``.
    """
    peers: Dict[str, List[str]] = {}
    for sel in selectors(document):
        ips: set[str] = set()
        for pod in pods:
            meta, status = pod.metadata, pod.status
            if meta.namespace != namespace:
                continue
            phase = status.phase if status is not None else None
            if phase in ("Succeeded", "Failed"):
                continue
            labels = meta.labels or {}
            if not all(labels.get(k) == v for k, v in sel.items()):
                continue
            if status is not None:
                # `pod_ips` in recent clients, `pod_i_ps` in older ones.
                entries = getattr(status, "pod_ips", None) or getattr(status, "pod_i_ps", None) or []
                for entry in entries:
                    ip = entry.get("ip") if isinstance(entry, dict) else getattr(entry, "ip", None)
                    if ip:
                        ips.add(ip)
                if status.pod_ip:
                    ips.add(status.pod_ip)
        peers[selector_key(sel)] = sorted(ips)
    return canonical_peers(peers)
