"""What the client hands back: a :class:`Fault`, and status reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Dict, List, Optional, Protocol, Sequence, Tuple, Type, Union

from .rules import DurationLike
from .targets import Target, TargetLike

#: Prometheus samples of ``faultline_faults_injected_total``, keyed by ``(rule, kind)``.
FaultCounts = Dict[Tuple[str, str], float]


@dataclass
class Fault:
    """A fault policy written on one or more workloads (or on a standalone proxy).

    ``text`` is the exact YAML written, ``document`` the same parsed,
    ``version`` the hash of the text (what ``kubectl fault inject`` / ``list``
    print). Use it as a context manager to recover on exit::

        with fl.inject("deploy/checkout", namespace="shop", rules=[abort(503)]):
            ...
    """

    namespace: Optional[str]
    targets: Tuple[Target, ...]
    text: str
    document: Any
    version: str
    #: What the standalone proxy answered (its ``/policy`` JSON); ``None`` in a cluster.
    proxy: Optional[Dict[str, Any]] = None
    injector: Optional["Injector"] = field(default=None, repr=False, compare=False)

    @property
    def rules(self) -> List[Dict[str, Any]]:
        """The policy's rules (empty when the text does not parse as a mapping)."""
        if isinstance(self.document, dict):
            rules = self.document.get("rules")
            if isinstance(rules, list):
                return rules
        return []

    def recover(self) -> None:
        """Remove this fault (see :meth:`Faultline.recover`)."""
        if self.injector is None:
            raise RuntimeError("this Fault is not bound to a client")
        self.injector.recover(self)

    def wait_applied(self, timeout: float = 60.0) -> "FaultStatus":
        """Wait until every targeted proxy runs this fault (see :meth:`Faultline.wait_applied`)."""
        if self.injector is None:
            raise RuntimeError("this Fault is not bound to a client")
        return self.injector.wait_applied(self, timeout=timeout)

    def __enter__(self) -> "Fault":
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.recover()

    def __str__(self) -> str:
        where = ", ".join(str(t) for t in self.targets) or "proxy"
        ns = f" in {self.namespace}" if self.namespace else ""
        return f"fault {self.version} on {where}{ns}"


@dataclass
class PodStatus:
    """One pod (or standalone proxy), as ``kubectl fault status`` shows it.

    ``version`` is what its proxy reports running; ``expected_version`` what
    the controller serves it (computed with the controller's resolution
    rules); ``None`` when unknown or unreachable.
    """

    name: str
    namespace: Optional[str]
    phase: Optional[str] = None
    ip: Optional[str] = None
    injected: bool = False
    terminating: bool = False
    reachable: bool = False
    connected: Optional[bool] = None
    version: Optional[str] = None
    expected_version: Optional[str] = None
    faults_injected: Optional[float] = None
    faults_by_rule: FaultCounts = field(default_factory=dict)
    #: The proxy's ``/policy`` JSON, as it reported it.
    policy: Optional[Dict[str, Any]] = None

    @property
    def running(self) -> bool:
        """Running and not being deleted."""
        return self.phase == "Running" and not self.terminating


@dataclass
class FaultStatus:
    """The facts of ``kubectl fault status TARGET``: the target's policy and its pods."""

    target: str
    namespace: Optional[str]
    #: The target's own ``faultline.dev/faults`` annotation (``None``: none).
    text: Optional[str]
    version: Optional[str]
    pods: List[PodStatus] = field(default_factory=list)

    @property
    def applied(self) -> bool:
        """Every running injected pod is reachable and runs the version the controller serves it."""
        live = [p for p in self.pods if p.injected and p.running]
        return all(
            p.reachable and p.version is not None and p.version == p.expected_version for p in live
        )

    @property
    def faults_injected(self) -> float:
        """Faults injected so far, summed over the pods."""
        return sum(p.faults_injected or 0.0 for p in self.pods)


class Injector(Protocol):
    """What :class:`Faultline` and :class:`StandaloneProxy` have in common, so a
    test can take either (the pytest fixture does)."""

    def inject(
        self,
        target: Optional[TargetLike] = None,
        rules: Union[Dict[str, Any], Sequence[Dict[str, Any]], None] = None,
        *,
        namespace: Optional[str] = None,
        duration: Optional[DurationLike] = None,
        until: Optional[Any] = None,
    ) -> Fault: ...

    def recover(self, fault: Union[Fault, TargetLike], *, namespace: Optional[str] = None) -> None: ...

    def wait_applied(self, fault: Fault, timeout: float = 60.0) -> FaultStatus: ...


def parse_metrics(text: str) -> FaultCounts:
    """``faultline_faults_injected_total{rule,kind}`` samples of a Prometheus text exposition."""
    out: FaultCounts = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, rest = line.partition("{")
        if "faults_injected" not in name.split(" ")[0]:
            continue
        labels: Dict[str, str] = {}
        if rest:
            body, _, value_part = rest.rpartition("}")
            for item in _split_labels(body):
                k, _, v = item.partition("=")
                labels[k.strip()] = v.strip().strip('"')
        else:
            value_part = line.split(" ", 1)[1] if " " in line else ""
        try:
            value = float(value_part.split()[0])
        except (ValueError, IndexError):
            continue
        key = (labels.get("rule", ""), labels.get("kind", ""))
        out[key] = out.get(key, 0.0) + value
    return out


def _split_labels(body: str) -> List[str]:
    items, current, quoted, escaped = [], "", False, False
    for ch in body:
        if escaped:
            current += ch
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
            current += ch
        elif ch == "," and not quoted:
            items.append(current)
            current = ""
        else:
            current += ch
    if current.strip():
        items.append(current)
    return items
