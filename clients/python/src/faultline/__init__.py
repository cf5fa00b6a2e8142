"""faultline: inject faults into Kubernetes services (or a standalone proxy) from Python tests.

    from faultline import Faultline, abort, delay

    fl = Faultline()                                   # kubeconfig, like kubectl
    with fl.inject("deploy/checkout", namespace="shop",
                   rules=[abort(503, path="/api/*")], duration="2m") as fault:
        fl.wait_applied(fault)
        ...                                            # the service sees the fault
    # recovered here, exceptions included

With pytest, the ``faultline`` fixture recovers everything a test injected.
See ``docs/testing.md`` in the faultline repository.
"""

from .client import FAULTS_ANNOTATION, SEEN_AT_ANNOTATION, Faultline
from .errors import (
    ApiError,
    ControlApiError,
    FaultlineError,
    InvalidPolicy,
    InvalidTarget,
    NotApplied,
    NotFound,
    NotOptedIn,
)
from .fault import Fault, FaultStatus, PodStatus
from .rules import (
    CONTROL_HEADERS,
    abort,
    ask,
    bandwidth,
    delay,
    dns,
    dns_delay,
    dns_drop,
    dns_match,
    from_headers,
    grpc_abort,
    hang,
    limit_data,
    match,
    partition,
    patch,
    peers,
    policy,
    replace,
    reset,
    respond,
    response_match,
    rule,
    slicer,
    slow_close,
    to_yaml,
)
from .session import FaultSession
from .standalone import StandaloneProxy
from .targets import Target, parse_target
from .versions import policy_version, text_version

__version__ = "0.1.0"

__all__ = [
    "CONTROL_HEADERS",
    "FAULTS_ANNOTATION",
    "SEEN_AT_ANNOTATION",
    "ApiError",
    "ControlApiError",
    "Fault",
    "FaultSession",
    "FaultStatus",
    "Faultline",
    "FaultlineError",
    "InvalidPolicy",
    "InvalidTarget",
    "NotApplied",
    "NotFound",
    "NotOptedIn",
    "PodStatus",
    "StandaloneProxy",
    "Target",
    "abort",
    "ask",
    "bandwidth",
    "delay",
    "dns",
    "dns_delay",
    "dns_drop",
    "dns_match",
    "from_headers",
    "grpc_abort",
    "hang",
    "limit_data",
    "match",
    "parse_target",
    "partition",
    "patch",
    "peers",
    "policy",
    "policy_version",
    "replace",
    "reset",
    "respond",
    "response_match",
    "rule",
    "slicer",
    "slow_close",
    "text_version",
    "to_yaml",
]
