"""pytest plugin (registered through the ``pytest11`` entry point).

Fixtures:

``faultline``
    A :class:`~faultline.session.FaultSession` over ``faultline_client``:
    everything a test injects through it is recovered when the test ends,
    whether it passed, failed or errored.
``faultline_client``
    Session-wide client: a :class:`~faultline.StandaloneProxy` when
    ``--faultline-proxy URL`` (or ``$FAULTLINE_PROXY_URL``) is given, else
    a :class:`~faultline.Faultline` for ``--faultline-kubeconfig`` /
    ``--faultline-context`` (default: ``$KUBECONFIG``, the current context).
    Override it in a ``conftest.py`` to choose yourself.

So one test runs against a proxy on a laptop and against a cluster. When a
test fails, its report has a ``faultline`` section listing the faults that
were in place (they are recovered right after).
"""

from __future__ import annotations

import os
from typing import Any, Generator, Iterator

import pytest

from .session import FaultSession


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("faultline", "faultline fault injection")
    group.addoption("--faultline-proxy", metavar="URL", default=None,
                    help="admin URL of a standalone faultline-proxy with --control "
                         "(default $FAULTLINE_PROXY_URL); without it the fixture uses the cluster")
    group.addoption("--faultline-proxy-token", metavar="TOKEN", default=None,
                    help="bearer token of the proxy's control API (default $FAULTLINE_PROXY_TOKEN)")
    group.addoption("--faultline-kubeconfig", metavar="PATH", default=None,
                    help="kubeconfig for the faultline fixture (default $KUBECONFIG, ~/.kube/config)")
    group.addoption("--faultline-context", metavar="NAME", default=None,
                    help="kubeconfig context for the faultline fixture")


@pytest.fixture(scope="session")
def faultline_client(pytestconfig: pytest.Config) -> Any:
    """The client the ``faultline`` fixture records through (see the module docs)."""
    proxy_url = pytestconfig.getoption("faultline_proxy") or os.environ.get("FAULTLINE_PROXY_URL")
    if proxy_url:
        from .standalone import StandaloneProxy

        return StandaloneProxy(proxy_url, token=pytestconfig.getoption("faultline_proxy_token"))
    from .client import Faultline

    return Faultline(kubeconfig=pytestconfig.getoption("faultline_kubeconfig"),
                     context=pytestconfig.getoption("faultline_context"))


@pytest.fixture
def faultline(faultline_client: Any) -> Iterator[FaultSession]:
    """Inject faults in a test; every one is recovered at teardown, even when the test fails."""
    session = FaultSession(faultline_client)
    try:
        yield session
    finally:
        session.recover_all()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """On failure, say which faults were in place: often the first question."""
    outcome = yield
    report = outcome.get_result()
    session = getattr(item, "funcargs", {}).get("faultline")
    if report.failed and call.when == "call" and isinstance(session, FaultSession) and session.faults:
        lines = [f"{f}: {len(f.rules)} rule(s), recovered at teardown" for f in session.faults]
        report.sections.append(("faultline: faults in place when the test failed", "\n".join(lines)))
