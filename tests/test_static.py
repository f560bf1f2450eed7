"""Static checks that CI runs with the test command: the type checker and the linter, with pyproject's settings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_mypy_is_clean():
    result = _run("mypy", "--no-error-summary", "--cache-dir", str(ROOT / ".mypy_cache"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_is_clean():
    result = _run("ruff", "check", "art_wdat", "tests", "examples", "bench")
    assert result.returncode == 0, result.stdout + result.stderr
