"""Builders for fault rules and policy documents.

A rule is a plain mapping, exactly as written in YAML (see
``docs/fault-language.md``); the helpers here only save typing and build the
same mappings the documentation shows::

    delay("200ms", jitter="50ms", port=8080, methods=["POST"], path="/api/checkout*",
          percent=20, name="slow-checkout")
    # {'name': 'slow-checkout',
    #  'match': {'direction': 'inbound', 'port': 8080, 'methods': ['POST'],
    #            'path': '/api/checkout*'},
    #  'delay': {'fixed': '200ms', 'jitter': '50ms'}, 'percent': 20}

Every helper takes the same match keywords (``direction``, ``port``,
``protocol``, ``methods``, ``path``, ``headers``, ``host``, ``from_``, ``to``,
``probes``) and rule keywords (``name``, ``percent``, ``first``); the faults
that apply to TLS connections (``delay``, ``abort(reset=True)``, ``hang``,
``bandwidth``, ``partition``, ``reset``, ``slicer``, ``limit_data``,
``slow_close``) also take ``sni``; those that can be decided on the
upstream's answer (``delay``, ``abort``, ``grpc_abort``, ``replace``,
``patch``) also take ``response`` (see :func:`response_match`).
``direction`` defaults as ``kubectl fault`` does: ``outbound`` when ``host``,
``sni`` or ``to`` is given, else ``inbound``; pass ``direction=None`` to match both.

DNS rules (for pods annotated ``faultline.dev/capture-dns: "true"``) have
their own helpers, :func:`dns`, :func:`dns_delay` and :func:`dns_drop`, which
take ``query`` (the queried name, ``*`` globs) and ``types`` (``["A",
"AAAA"]``) instead of the match keywords above.

Nothing is validated here: faultline's own parser does that (through the
API server's dry run, or the standalone proxy's control API), so the
client never disagrees with the proxies.
"""

from __future__ import annotations

import datetime as _dt
import re as _re
from typing import (TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Mapping, Optional,
                    Sequence, Tuple, TypedDict, Union)

import yaml

if TYPE_CHECKING:
    from typing_extensions import Unpack

#: A rule as written in YAML.
Rule = Dict[str, Any]
#: A policy document: ``{"duration": ..., "rules": [...]}``.
Document = Dict[str, Any]
#: ``"200ms"`` or a :class:`datetime.timedelta`.
DurationLike = Union[str, _dt.timedelta]
#: Peers: a label mapping (``{"app": "nats"}``, a pod selector), a list of
#: CIDRs / addresses, or a mapping with ``podSelector`` and/or ``cidrs``.
PeersLike = Union[Mapping[str, Any], Sequence[str]]
#: Ports: ``8080``, ``"8000-8010"`` or a list of those.
PortLike = Union[int, str, Sequence[Union[int, str]]]

_AUTO = "auto"


def duration(value: DurationLike) -> str:
    """Format a duration for the fault language: ``timedelta(seconds=90)`` -> ``"90s"``.

    Strings pass through unchanged (``"1m30s"``). Bare numbers are refused,
    as they are by faultline (``10`` could mean anything).
    """
    if isinstance(value, str):
        return value
    if isinstance(value, _dt.timedelta):
        micros = (value.days * 86400 + value.seconds) * 1_000_000 + value.microseconds
        if micros < 0:
            raise ValueError(f"a duration cannot be negative: {value}")
        if micros % 1_000_000 == 0:
            return f"{micros // 1_000_000}s"
        if micros % 1000 == 0:
            return f"{micros // 1000}ms"
        return f"{micros}us"
    raise TypeError(
        f"durations are strings with a unit ('60s', '200ms') or datetime.timedelta, not {value!r}"
    )


_format_duration = duration


def timestamp(value: Union[str, _dt.datetime]) -> str:
    """Format ``until``: an RFC 3339 string, or an aware :class:`datetime.datetime`."""
    if isinstance(value, str):
        return value
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            raise ValueError("until needs a timezone-aware datetime (e.g. datetime.now(timezone.utc))")
        return value.astimezone(_dt.timezone.utc).isoformat().replace("+00:00", "Z")
    raise TypeError(f"until is an RFC 3339 string or a datetime, not {value!r}")


def peers(pod_selector: Optional[Mapping[str, str]] = None, cidrs: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """A ``from`` / ``to`` peer set: pods with these labels and/or these CIDRs."""
    out: Dict[str, Any] = {}
    if pod_selector:
        out["podSelector"] = dict(pod_selector)
    if cidrs:
        out["cidrs"] = list(cidrs)
    if not out:
        raise ValueError("peers need a pod selector or CIDRs")
    return out


def _peers(value: PeersLike) -> Dict[str, Any]:
    if isinstance(value, str):
        return {"cidrs": [value]}
    if isinstance(value, Mapping):
        if set(value) <= {"podSelector", "cidrs"} and value:
            return dict(value)
        return {"podSelector": {str(k): str(v) for k, v in value.items()}}
    return {"cidrs": list(value)}


def _port(value: PortLike) -> Any:
    if isinstance(value, (int, str)):
        return value
    return list(value)


def match(
    *,
    direction: Optional[str] = _AUTO,
    port: Optional[PortLike] = None,
    protocol: Optional[str] = None,
    methods: Optional[Iterable[str]] = None,
    path: Optional[str] = None,
    headers: Optional[Mapping[str, str]] = None,
    host: Optional[str] = None,
    from_: Optional[PeersLike] = None,
    to: Optional[PeersLike] = None,
    probes: Optional[bool] = None,
    sni: Optional[str] = None,
    response: Optional[Mapping[str, Any]] = None,
) -> Dict[str, Any]:
    """The ``match`` mapping of a rule (fields left out match anything)."""
    out: Dict[str, Any] = {}
    if direction == _AUTO:
        outbound = host is not None or sni is not None or to is not None
        direction = "outbound" if outbound else "inbound"
    if direction is not None:
        out["direction"] = direction
    if port is not None:
        out["port"] = _port(port)
    if protocol is not None:
        out["protocol"] = protocol
    if methods is not None:
        out["methods"] = [m.upper() for m in methods]
    if path is not None:
        out["path"] = path
    if headers is not None:
        out["headers"] = dict(headers)
    if host is not None:
        out["host"] = host
    if sni is not None:
        out["sni"] = sni
    if from_ is not None:
        out["from"] = _peers(from_)
    if to is not None:
        out["to"] = _peers(to)
    if probes is not None:
        out["probes"] = probes
    if response is not None:
        out["response"] = dict(response)
    return out


#: A response status to match: ``503``, ``"5xx"``, ``"500-504"`` or a list of those.
StatusLike = Union[int, str, Sequence[Union[int, str]]]


def response_match(
    status: Optional[StatusLike] = None,
    *,
    headers: Optional[Mapping[str, str]] = None,
) -> Dict[str, Any]:
    """``match.response``: the upstream's status (``503``, ``"5xx"``, ``"500-504"``, a list) and/or headers.

    A rule with it is decided once the upstream has answered::

        delay("1s", side="response", response=response_match("5xx"))
    """
    out: Dict[str, Any] = {}
    if status is not None:
        out["status"] = status if isinstance(status, (int, str)) else list(status)
    if headers is not None:
        out["headers"] = dict(headers)
    if not out:
        raise ValueError("match.response needs a status, headers or both")
    return out


def rule(
    fault: str,
    spec: Any = None,
    *,
    name: Optional[str] = None,
    percent: Optional[Union[float, str]] = None,
    first: Optional[int] = None,
    match: Optional[Mapping[str, Any]] = None,
) -> Rule:
    """A rule with one fault ``fault`` (``"delay"``, ``"abort"``, ...) and its settings.

    Keys are in the order the documentation writes them: ``name``,
    ``match``, the fault, ``percent``, ``first``.
    """
    out: Rule = {}
    if name is not None:
        out["name"] = name
    if match:
        out["match"] = dict(match)
    out[fault] = {} if spec is None else spec
    if percent is not None:
        out["percent"] = percent
    if first is not None:
        out["first"] = first
    return out


def _durations(**values: Optional[DurationLike]) -> Dict[str, str]:
    """The given durations, formatted, in keyword order (``None`` left out)."""
    return {k: duration(v) for k, v in values.items() if v is not None}


# The keywords the fault helpers share, declared once: each helper takes the
# set that fits its fault as ``**keywords: Unpack[...]``, which editors
# complete and type checkers check as if written in its signature.


class _RuleKeywords(TypedDict, total=False):
    """The rule keywords every fault helper takes (see :func:`rule`)."""

    name: Optional[str]
    percent: Optional[Union[float, str]]
    first: Optional[int]


class _PeerMatch(_RuleKeywords, total=False):
    """The match keywords of every fault (see :func:`match`; ``direction`` defaults there)."""

    direction: Optional[str]
    port: Optional[PortLike]
    host: Optional[str]
    from_: Optional[PeersLike]
    to: Optional[PeersLike]


class _ConnectionMatch(_PeerMatch, total=False):
    """Faults on whole connections: TCP, or TLS by server name."""

    protocol: Optional[str]
    sni: Optional[str]


class _RequestMatch(_PeerMatch, total=False):
    """Faults on HTTP requests."""

    protocol: Optional[str]
    methods: Optional[Iterable[str]]
    path: Optional[str]
    headers: Optional[Mapping[str, str]]


class _ProbeMatch(_RequestMatch, total=False):
    probes: Optional[bool]


class _AnswerMatch(_ProbeMatch, total=False):
    """Faults decided on the upstream's answer."""

    response: Optional[Mapping[str, Any]]


class _StreamMatch(_ProbeMatch, total=False):
    """Faults on HTTP requests that also apply to TLS connections."""

    sni: Optional[str]


class _AnyMatch(_StreamMatch, total=False):
    response: Optional[Mapping[str, Any]]


class _GrpcMatch(_PeerMatch, total=False):
    path: Optional[str]
    headers: Optional[Mapping[str, str]]
    response: Optional[Mapping[str, Any]]


class _DnsMatch(_RuleKeywords, total=False):
    """The match keywords of DNS rules (see :func:`dns_match`)."""

    query: Optional[str]
    types: Optional[Iterable[str]]


_RULE_KEYWORDS = _RuleKeywords.__optional_keys__


def _rule(builder: str, fault: str, spec: Any, keywords: Mapping[str, Any], accepted: Any, *,
          matcher: Callable[..., Dict[str, Any]] = match, **fixed: Any) -> Rule:
    """The rule a fault helper builds: ``keywords`` split into the rule's and the match's.

    The helpers take their shared keywords as ``**keywords`` (typed by
    ``accepted``, one of the ``TypedDict`` above), so a keyword a helper
    does not take is refused here as Python would refuse it.
    """
    for key in keywords:
        if key not in accepted.__optional_keys__:
            raise TypeError(f"{builder}() got an unexpected keyword argument '{key}'")
    matched = {k: v for k, v in keywords.items() if k not in _RULE_KEYWORDS}
    named = {k: v for k, v in keywords.items() if k in _RULE_KEYWORDS}
    return rule(fault, spec, match=matcher(**matched, **fixed), **named)


def delay(
    fixed: Optional[DurationLike] = None,
    *,
    jitter: Optional[DurationLike] = None,
    mean: Optional[DurationLike] = None,
    stddev: Optional[DurationLike] = None,
    uniform: Optional[Tuple[DurationLike, DurationLike]] = None,
    median: Optional[DurationLike] = None,
    p99: Optional[DurationLike] = None,
    scale: Optional[DurationLike] = None,
    shape: Optional[float] = None,
    max_: Optional[DurationLike] = None,
    side: Optional[str] = None,
    response: Optional[Mapping[str, Any]] = None,
    **keywords: Unpack[_StreamMatch],
) -> Rule:
    """A ``delay`` rule, by the keywords given:

    - ``fixed`` (and ``jitter``): ``delay: {fixed, jitter}``;
    - ``mean``, ``stddev``: ``delay: {normal: {mean, stddev}}``;
    - ``uniform=(min, max)``: ``delay: {uniform: {min, max}}``;
    - ``median``, ``p99`` (and ``max_``): ``delay: {lognormal: {median, p99, max}}``;
    - ``scale``, ``shape``, ``max_``: ``delay: {pareto: {scale, shape, max}}``.

    ``side="response"`` waits after the upstream answered. With
    ``response`` (:func:`response_match`) and no ``side``, ``side`` is
    ``"response"``.
    """
    spec: Dict[str, Any] = {}
    if fixed is not None:
        spec["fixed"] = duration(fixed)
    if jitter is not None:
        spec["jitter"] = duration(jitter)
    if mean is not None or stddev is not None:
        spec["normal"] = _durations(mean=mean, stddev=stddev)
    if uniform is not None:
        low, high = uniform
        spec["uniform"] = _durations(min=low, max=high)
    if median is not None or p99 is not None:
        spec["lognormal"] = _durations(median=median, p99=p99, max=max_)
    if scale is not None or shape is not None:
        pareto: Dict[str, Any] = dict(_durations(scale=scale))
        if shape is not None:
            pareto["shape"] = shape
        if max_ is not None:
            pareto["max"] = duration(max_)
        spec["pareto"] = pareto
    elif max_ is not None and "lognormal" not in spec:
        raise ValueError("max_ caps a lognormal (median, p99) or pareto (scale, shape) delay")
    if side is None and response is not None:
        side = "response"
    if side is not None:
        spec["side"] = side
    return _rule("delay", "delay", spec, keywords, _StreamMatch, response=response)


def abort(
    status: Optional[int] = None,
    *,
    body: Optional[str] = None,
    response_headers: Optional[Mapping[str, str]] = None,
    reset: bool = False,
    **keywords: Unpack[_AnyMatch],
) -> Rule:
    """``abort: {status, body, headers}`` (an HTTP error), or ``abort: {reset: true}`` with ``reset=True``.

    With ``response`` (:func:`response_match`) the abort replaces the
    upstream's matching answers.

    ``headers`` is the *match* on request headers; the response's headers are
    ``response_headers``. For gRPC use :func:`grpc_abort`.
    """
    spec: Dict[str, Any] = {}
    if reset:
        spec["reset"] = True
    if status is not None:
        spec["status"] = status
    if body is not None:
        spec["body"] = body
    if response_headers is not None:
        spec["headers"] = dict(response_headers)
    return _rule("abort", "abort", spec, keywords, _AnyMatch)


def grpc_abort(
    code: Union[str, int],
    *,
    message: Optional[str] = None,
    **keywords: Unpack[_GrpcMatch],
) -> Rule:
    """``abort: {grpc: CODE, message}`` with ``match.protocol: grpc`` (as ``kubectl fault --grpc``)."""
    spec: Dict[str, Any] = {"grpc": code.upper() if isinstance(code, str) else code}
    if message is not None:
        spec["message"] = message
    return _rule("grpc_abort", "abort", spec, keywords, _GrpcMatch, protocol="grpc")


def respond(
    status: int = 200,
    *,
    body: Optional[str] = None,
    response_headers: Optional[Mapping[str, str]] = None,
    **keywords: Unpack[_ProbeMatch],
) -> Rule:
    """``respond: {status, body, headers}``: a stub answer instead of forwarding."""
    spec: Dict[str, Any] = {"status": status}
    if body is not None:
        spec["body"] = body
    if response_headers is not None:
        spec["headers"] = dict(response_headers)
    return _rule("respond", "respond", spec, keywords, _ProbeMatch)


def replace(
    status: Optional[int] = None,
    *,
    body: Optional[str] = None,
    response_headers: Optional[Mapping[str, str]] = None,
    **keywords: Unpack[_AnswerMatch],
) -> Rule:
    """``replace: {status, headers, body}``: each part given replaces the upstream's.

    ``headers`` is the *match* on request headers; the headers that replace
    the upstream's are ``response_headers``.
    """
    spec: Dict[str, Any] = {}
    if status is not None:
        spec["status"] = status
    if response_headers is not None:
        spec["headers"] = dict(response_headers)
    if body is not None:
        spec["body"] = body
    return _rule("replace", "replace", spec, keywords, _AnswerMatch)


def patch(
    status: Optional[int] = None,
    *,
    set_headers: Optional[Mapping[str, str]] = None,
    remove_headers: Optional[Iterable[str]] = None,
    merge: Any = None,
    **keywords: Unpack[_AnswerMatch],
) -> Rule:
    """``patch: {status, headers: {set, remove}, body: {merge}}``: change the upstream's answer.

    ``merge`` is an RFC 7396 JSON merge patch for JSON bodies (``None``
    values in it remove keys); see the fault language for its limits.
    """
    spec: Dict[str, Any] = {}
    if status is not None:
        spec["status"] = status
    header_patch: Dict[str, Any] = {}
    if set_headers is not None:
        header_patch["set"] = dict(set_headers)
    if remove_headers is not None:
        header_patch["remove"] = list(remove_headers)
    if header_patch:
        spec["headers"] = header_patch
    if merge is not None:
        spec["body"] = {"merge": merge}
    return _rule("patch", "patch", spec, keywords, _AnswerMatch)


def hang(
    **keywords: Unpack[_StreamMatch],
) -> Rule:
    """``hang: {}``: never answer (tests client timeouts)."""
    return _rule("hang", "hang", {}, keywords, _StreamMatch)


def from_headers(
    *,
    max_delay: Optional[DurationLike] = None,
    abort_statuses: Optional[Iterable[int]] = None,
    abort_grpc: Optional[Iterable[Union[str, int]]] = None,
    **keywords: Unpack[_RequestMatch],
) -> Rule:
    """``fromHeaders: {maxDelay, abortStatuses, abortGrpc}``: each request may ask for its
    own delay (``x-faultline-delay``) or abort (``x-faultline-abort``,
    ``x-faultline-abort-grpc``) within these bounds. See :data:`CONTROL_HEADERS`."""
    spec: Dict[str, Any] = {}
    if max_delay is not None:
        spec["maxDelay"] = duration(max_delay)
    if abort_statuses is not None:
        spec["abortStatuses"] = list(abort_statuses)
    if abort_grpc is not None:
        spec["abortGrpc"] = [c.upper() if isinstance(c, str) else c for c in abort_grpc]
    return _rule("from_headers", "fromHeaders", spec, keywords, _RequestMatch)


#: The request headers a ``fromHeaders`` rule reads: ``{"delay": "x-faultline-delay", ...}``.
CONTROL_HEADERS = {
    "delay": "x-faultline-delay",
    "abort": "x-faultline-abort",
    "abort_grpc": "x-faultline-abort-grpc",
}


def ask(
    *,
    delay: Optional[DurationLike] = None,
    abort: Optional[int] = None,
    abort_grpc: Optional[Union[str, int]] = None,
) -> Dict[str, str]:
    """The request headers that ask a ``fromHeaders`` rule for a fault::

        requests.get(url, headers=ask(delay="300ms"))
        requests.get(url, headers=ask(abort=503))
    """
    out: Dict[str, str] = {}
    if delay is not None:
        out[CONTROL_HEADERS["delay"]] = duration(delay)
    if abort is not None:
        out[CONTROL_HEADERS["abort"]] = str(abort)
    if abort_grpc is not None:
        out[CONTROL_HEADERS["abort_grpc"]] = str(abort_grpc)
    return out


def bandwidth(
    rate: Optional[str] = None,
    *,
    bytes_per_second: Optional[int] = None,
    request: Optional[Union[str, int]] = None,
    response: Optional[Union[str, int]] = None,
    **keywords: Unpack[_StreamMatch],
) -> Rule:
    """``bandwidth: {rate: "64KiB/s"}``, ``bandwidth: {bytesPerSecond: N}``, or per side
    ``bandwidth: {request: "10KB/s", response: "1MB/s"}`` (``request=``, ``response=``).
    """
    spec: Dict[str, Any] = {}
    if rate is not None:
        spec["rate"] = rate
    if bytes_per_second is not None:
        spec["bytesPerSecond"] = bytes_per_second
    if request is not None:
        spec["request"] = request
    if response is not None:
        spec["response"] = response
    return _rule("bandwidth", "bandwidth", spec, keywords, _StreamMatch)


def partition(
    *,
    mode: str = "reject",
    **keywords: Unpack[_ConnectionMatch],
) -> Rule:
    """``partition: {mode}``: cut the pod off from peers (``to={"app": "nats"}``, as ``kubectl fault --partition-to``).

    Partitions act on whole connections, so only ``direction``, ``port``,
    ``from_`` and ``to`` can select traffic, and TLS connections by server
    name: ``sni`` (or ``host``, the SNI there) and ``protocol="tls"``.
    """
    return _rule("partition", "partition", {"mode": mode}, keywords, _ConnectionMatch)


def reset(
    *,
    after_bytes: Optional[int] = None,
    after: Optional[DurationLike] = None,
    **keywords: Unpack[_ConnectionMatch],
) -> Rule:
    """``reset: {afterBytes, after}``: forward, then reset the connection (TLS ones by ``sni``)."""
    spec: Dict[str, Any] = {}
    if after_bytes is not None:
        spec["afterBytes"] = after_bytes
    if after is not None:
        spec["after"] = duration(after)
    return _rule("reset", "reset", spec, keywords, _ConnectionMatch)


def slicer(
    average_size: int,
    *,
    size_variation: Optional[int] = None,
    delay: Optional[DurationLike] = None,
    side: Optional[str] = None,
    **keywords: Unpack[_ConnectionMatch],
) -> Rule:
    """``slicer: {averageSize, sizeVariation, delay, side}``: raw TCP bytes in small chunks.

    Raw TCP only, so only ``direction``, ``port``, ``protocol`` (``"tcp"``
    or ``"tls"``), ``from_``, ``to`` and, for TLS, ``sni`` (or ``host``,
    the SNI there) select traffic.
    """
    spec: Dict[str, Any] = {"averageSize": average_size}
    if size_variation is not None:
        spec["sizeVariation"] = size_variation
    if delay is not None:
        spec["delay"] = duration(delay)
    if side is not None:
        spec["side"] = side
    return _rule("slicer", "slicer", spec, keywords, _ConnectionMatch)


def limit_data(
    byte_count: int,
    *,
    side: Optional[str] = None,
    **keywords: Unpack[_StreamMatch],
) -> Rule:
    """``limitData: {bytes, side}``: close the connection after N bytes (on HTTP: truncated responses)."""
    spec: Dict[str, Any] = {"bytes": byte_count}
    if side is not None:
        spec["side"] = side
    return _rule("limit_data", "limitData", spec, keywords, _StreamMatch)


def slow_close(
    delay: DurationLike,
    *,
    side: Optional[str] = None,
    **keywords: Unpack[_ConnectionMatch],
) -> Rule:
    """``slowClose: {delay, side}``: pass a raw TCP connection's close on late (TLS ones by ``sni``)."""
    spec: Dict[str, Any] = {"delay": duration(delay)}
    if side is not None:
        spec["side"] = side
    return _rule("slow_close", "slowClose", spec, keywords, _ConnectionMatch)


def dns_match(query: Optional[str] = None, *, types: Optional[Iterable[str]] = None) -> Dict[str, Any]:
    """The ``match`` of a DNS rule: ``{protocol: dns, dns: {name, types}}``."""
    out: Dict[str, Any] = {"protocol": "dns"}
    query_match: Dict[str, Any] = {}
    if query is not None:
        query_match["name"] = query
    if types is not None:
        query_match["types"] = [t.upper() for t in types]
    if query_match:
        out["dns"] = query_match
    return out


def dns(
    rcode: str,
    **keywords: Unpack[_DnsMatch],
) -> Rule:
    """``dns: {rcode}``: answer matching DNS queries with ``NXDOMAIN``, ``SERVFAIL`` or ``REFUSED``."""
    return _rule("dns", "dns", {"rcode": rcode.upper()}, keywords, _DnsMatch, matcher=dns_match)


def dns_delay(
    fixed: DurationLike,
    *,
    jitter: Optional[DurationLike] = None,
    side: Optional[str] = None,
    **keywords: Unpack[_DnsMatch],
) -> Rule:
    """``delay`` on matching DNS queries (``side="response"`` holds the answer instead)."""
    spec: Dict[str, Any] = {"fixed": duration(fixed)}
    if jitter is not None:
        spec["jitter"] = duration(jitter)
    if side is not None:
        spec["side"] = side
    return _rule("dns_delay", "delay", spec, keywords, _DnsMatch, matcher=dns_match)


def dns_drop(**keywords: Unpack[_DnsMatch]) -> Rule:
    """``hang`` on matching DNS queries: dropped, never answered (the client's resolver times out)."""
    return _rule("dns_drop", "hang", {}, keywords, _DnsMatch, matcher=dns_match)


def policy(
    rules: Iterable[Mapping[str, Any]],
    *,
    duration: Optional[DurationLike] = None,
    until: Optional[Union[str, _dt.datetime]] = None,
) -> Document:
    """The policy document: optional ``duration`` / ``until``, then ``rules``."""
    doc: Document = {}
    if duration is not None:
        doc["duration"] = _format_duration(duration)
    if until is not None:
        doc["until"] = timestamp(until)
    doc["rules"] = [dict(r) for r in rules]
    return doc


class _Dumper(yaml.SafeDumper):
    """Block style, keys in insertion order, no aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def document_from_rules(
    rules: Union[Mapping[str, Any], Iterable[Mapping[str, Any]], None],
    *,
    duration: Optional[DurationLike] = None,
    until: Optional[Union[str, _dt.datetime]] = None,
) -> Tuple[Document, str]:
    """What ``inject(rules=...)`` writes: the document and its YAML text."""
    if rules is None:
        raise ValueError("inject needs rules (or a whole policy as text)")
    document = policy(as_rules(rules), duration=duration, until=until)
    return document, to_yaml(document)


class _Loader(yaml.SafeLoader):
    """YAML as faultline reads it (1.2): only true/false are booleans.

    PyYAML follows YAML 1.1, where ``on``, ``off``, ``yes`` and ``no`` are
    booleans too, so ``delay: {on: response}`` (``on`` is accepted for
    ``side``) would come back as ``{True: 'response'}``.
    """


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool",
                              _re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def from_yaml(text: str) -> Any:
    """Parse a policy's YAML text the way faultline does (``on`` is a string, not a boolean)."""
    return yaml.load(text, Loader=_Loader)


def to_yaml(document: Mapping[str, Any]) -> str:
    """The YAML text written into the ``faultline.dev/faults`` annotation.

    Keys YAML 1.1 tools would read as booleans (``on``) are quoted.
    """
    text = yaml.dump(dict(document), Dumper=_Dumper, sort_keys=False, default_flow_style=False,
                     allow_unicode=True, width=1 << 16)
    return str(text)


def as_rules(rules: Union[Mapping[str, Any], Iterable[Mapping[str, Any]]]) -> List[Rule]:
    """Accept one rule or several; copy them into plain dicts."""
    if isinstance(rules, Mapping):
        return [dict(rules)]
    return [dict(r) for r in rules]
