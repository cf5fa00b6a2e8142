"""Targets: ``deploy/NAME`` and friends (as ``kubectl fault`` takes them), or a
label selector over workloads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Tuple, Union

from .errors import InvalidTarget

#: Kubernetes kinds that can carry a fault policy, by every name ``kubectl
#: fault`` accepts for them.
KIND_ALIASES: Dict[str, str] = {}
for _kind, _names in {
    "Deployment": ("deploy", "deployment", "deployments", "deployment.apps"),
    "StatefulSet": ("sts", "statefulset", "statefulsets", "statefulset.apps"),
    "DaemonSet": ("ds", "daemonset", "daemonsets", "daemonset.apps"),
    "ReplicaSet": ("rs", "replicaset", "replicasets", "replicaset.apps"),
    "Job": ("job", "jobs", "job.batch"),
    "Pod": ("po", "pod", "pods"),
}.items():
    for _name in _names:
        KIND_ALIASES[_name] = _kind

#: Short names used when printing targets.
SHORT: Dict[str, str] = {
    "Deployment": "deploy",
    "StatefulSet": "sts",
    "DaemonSet": "ds",
    "ReplicaSet": "rs",
    "Job": "job",
    "Pod": "pod",
}


@dataclass(frozen=True, order=True)
class Target:
    """One workload: ``kind`` is the Kubernetes kind (``"Deployment"``), ``name`` its name."""

    kind: str
    name: str

    def __str__(self) -> str:
        return f"{SHORT.get(self.kind, self.kind.lower())}/{self.name}"


def parse_target(target: str) -> Target:
    """Parse ``deploy/NAME``, ``deployment/NAME``, ``sts/``, ``ds/``, ``job/``, ``rs/``, ``pod/``.

    Raises :class:`InvalidTarget` for anything else (same rules as ``kubectl fault``).
    """
    kind, sep, name = target.partition("/")
    resolved = KIND_ALIASES.get(kind.lower())
    if not sep or resolved is None or not name or "/" in name:
        raise InvalidTarget(
            f"invalid target {target!r}: expected KIND/NAME with KIND one of deploy, sts, ds, "
            "job, rs, pod (or the long names), or a label selector such as app=web"
        )
    return Target(resolved, name)


def selector_string(selector: Mapping[str, str]) -> str:
    """``{"app": "web", "tier": "front"}`` -> ``"app=web,tier=front"``."""
    if not selector:
        raise InvalidTarget("an empty label selector would select every workload")
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items()))


TargetLike = Union[str, Target, Mapping[str, str]]


def classify(target: TargetLike) -> Tuple[Optional[Target], Optional[str]]:
    """``(Target, None)`` for one workload, ``(None, selector)`` for a label selector.

    A string with ``=`` (``app=web``, ``app in (a,b)`` with ``in``/``!``
    also accepted) is a label selector; anything else must be ``KIND/NAME``.
    A mapping is a selector of label equalities.
    """
    if isinstance(target, Target):
        return target, None
    if isinstance(target, Mapping):
        return None, selector_string(target)
    text = target.strip()
    if "=" in text or text.startswith("!") or " in " in text or " notin " in text:
        return None, text
    return parse_target(text), None
