"""Shared test helpers: where the repository's binaries are, and the
faultline plugin when the package is used from source (not installed)."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
from pathlib import Path
from typing import List, Optional

import pytest

pytest_plugins = ["pytester"]

#: True when `pip install` registered the pytest11 entry point.
def _pytest11() -> List[str]:
    try:
        eps = importlib.metadata.entry_points(group="pytest11")
    except TypeError:  # Python 3.9: a dict of groups
        eps = importlib.metadata.entry_points().get("pytest11", [])  # type: ignore[attr-defined]
    return [ep.value for ep in eps]


PLUGIN_INSTALLED = any(v.startswith("faultline.pytest_plugin") for v in _pytest11())
if not PLUGIN_INSTALLED:
    pytest_plugins.append("faultline.pytest_plugin")

#: Extra pytest arguments for a nested pytest run to load the plugin.
PLUGIN_ARGS: List[str] = [] if PLUGIN_INSTALLED else ["-p", "faultline.pytest_plugin"]

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def nested_pytest_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A nested pytest (pytester's subprocess, run from another directory)
    imports this same faultline package: its directory goes first on an
    absolute PYTHONPATH."""
    import faultline

    here = str(Path(faultline.__file__).resolve().parents[1])
    rest = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([here, *(str(Path(p).resolve()) for p in rest)]))


def binary(name: str) -> Optional[Path]:
    """A workspace binary: `$FAULTLINE_BIN_DIR/NAME`, the repository's target/debug, or PATH."""
    for directory in (os.environ.get("FAULTLINE_BIN_DIR"), REPO / "target" / "debug"):
        if directory and (Path(directory) / name).is_file():
            return Path(directory) / name
    found = shutil.which(name)
    return Path(found) if found else None


def e2e_enabled() -> bool:
    return os.environ.get("FAULTLINE_E2E") == "1"


@pytest.fixture(scope="session")
def kubectl_fault() -> Path:
    path = binary("kubectl-fault")
    if path is None:
        pytest.skip("kubectl-fault is not built (cargo build --workspace --bins)")
    return path


def check_policy(kubectl_fault: Path, text: str) -> subprocess.CompletedProcess[str]:
    """Validate `text` with faultline's own parser (`kubectl fault inject --dry-run -f -`)."""
    return subprocess.run(
        [str(kubectl_fault), "inject", "deploy/x", "-f", "-", "--dry-run"],
        input=text, capture_output=True, text=True, timeout=30,
    )
