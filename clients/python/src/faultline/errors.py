"""Exceptions raised by the faultline client.

Every exception derives from :class:`FaultlineError`, so ``except
FaultlineError`` catches all of them.
"""

from __future__ import annotations

from typing import Optional, Sequence


class FaultlineError(Exception):
    """Base class of every error the client raises."""


class InvalidPolicy(FaultlineError, ValueError):
    """The fault policy does not validate.

    ``reason`` is faultline's own message, naming the rule and the field, e.g.
    ``rules[0] "x": abort.status: 700 is not an HTTP status (100-599)``.
    ``detail`` is the full text the server answered (the API server's
    admission message, or the standalone proxy's error body).
    """

    def __init__(self, reason: str, detail: Optional[str] = None) -> None:
        super().__init__(f"invalid fault policy: {reason}")
        self.reason = reason
        self.detail = detail if detail is not None else reason


class InvalidTarget(FaultlineError, ValueError):
    """A target that is neither ``KIND/NAME`` nor a label selector."""


class NotFound(FaultlineError, LookupError):
    """The workload (or namespace) does not exist, or a selector matched nothing."""


class NotOptedIn(FaultlineError):
    """The namespace is not labelled for injection, so its pods have no proxy."""

    def __init__(self, namespace: str) -> None:
        super().__init__(
            f"namespace {namespace} is not opted in to faultline, so its pods have no proxy; "
            f"run kubectl label namespace {namespace} faultline.dev/injection=enabled "
            "and restart the workload"
        )
        self.namespace = namespace


class NotApplied(FaultlineError, TimeoutError):
    """:meth:`Faultline.wait_applied` timed out; ``pending`` says, per pod, why."""

    def __init__(self, message: str, pending: Sequence[str] = ()) -> None:
        lines = [message, *(f"  {p}" for p in pending)]
        super().__init__("\n".join(lines))
        self.pending = list(pending)


class ControlApiError(FaultlineError):
    """The standalone proxy's control API refused a request.

    ``status`` is the HTTP status (401 bad or missing token, 405 control API
    not enabled, ...).
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


class ApiError(FaultlineError):
    """The Kubernetes API server refused a request for another reason."""

    def __init__(self, action: str, status: Optional[int], message: str) -> None:
        super().__init__(f"{action}: {message}" + (f" (HTTP {status})" if status else ""))
        self.action = action
        self.status = status
        self.message = message
