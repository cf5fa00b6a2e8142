"""The package is typed (py.typed) and passes `mypy --strict` (configured in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1]


def test_the_package_is_typed() -> None:
    assert (PACKAGE / "src" / "faultline" / "py.typed").is_file()


def test_mypy_strict() -> None:
    pytest.importorskip("mypy", reason="mypy is not installed (pip install './clients/python[test]')")
    result = subprocess.run([sys.executable, "-m", "mypy"], cwd=PACKAGE,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
