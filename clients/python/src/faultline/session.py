"""A recorder around a client that recovers everything it injected: what the
pytest fixture hands to tests, and usable on its own::

    with FaultSession(Faultline()) as fl:
        fl.inject("deploy/checkout", namespace="shop", rules=[abort(503)])
        ...
    # every fault injected through `fl` is recovered here, exceptions included
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, List, Optional, Type, Union

from .fault import Fault, FaultStatus
from .targets import TargetLike


class FaultSession:
    """Delegates to ``client`` (:class:`~faultline.Faultline` or
    :class:`~faultline.StandaloneProxy`) and remembers every fault injected
    through it; :meth:`recover_all` (and leaving the ``with`` block) removes
    those still in place, newest first."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.faults: List[Fault] = []

    def inject(self, *args: Any, **kwargs: Any) -> Fault:
        """:meth:`Faultline.inject`, remembered for recovery."""
        fault: Fault = self.client.inject(*args, **kwargs)
        fault.injector = self
        self.faults.append(fault)
        return fault

    fault = inject

    def recover(self, fault: Union[Fault, TargetLike, None] = None, *, namespace: Optional[str] = None) -> None:
        """Recover one fault (or target) now; it is forgotten."""
        if isinstance(fault, Fault):
            self.client.recover(fault)
            self.faults = [f for f in self.faults if f is not fault]
        else:
            self.client.recover(fault, namespace=namespace)

    def wait_applied(self, fault: Fault, timeout: float = 60.0, **kwargs: Any) -> FaultStatus:
        """:meth:`Faultline.wait_applied`."""
        result: FaultStatus = self.client.wait_applied(fault, timeout=timeout, **kwargs)
        return result

    def recover_all(self) -> None:
        """Recover every remembered fault, newest first; all are tried, the first error is raised."""
        errors: List[BaseException] = []
        while self.faults:
            fault = self.faults.pop()
            try:
                self.client.recover(fault)
            except Exception as e:  # keep going: every fault deserves its recovery
                errors.append(e)
        if errors:
            raise errors[0]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def __enter__(self) -> "FaultSession":
        return self

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.recover_all()
