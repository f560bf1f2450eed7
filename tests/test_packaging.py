"""The package's promises to its users: cheap import, one version, complete metadata, the README's commands.

tests/test_wheel.py builds the sdist and the wheel and runs the installed wheel in a fresh environment.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_exactly_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    command = ci[ci.index("# README test command:") + 1]
    assert f"\n{command}\n" in (ROOT / "README.md").read_text()


def test_import_is_cheap_and_lazy():
    code = ("import sys, art_wdat; "
            "heavy = [m for m in ('torch', 'art', 'robustbench', 'matplotlib') if m in sys.modules];"
            "print(','.join(heavy)); print(art_wdat.__version__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "" and out[1]


def test_public_api_resolves():
    import art_wdat

    for name in art_wdat.__all__:
        assert getattr(art_wdat, name) is not None


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_one_version_and_the_release_metadata():
    import art_wdat

    pyproject = _pyproject()
    project = pyproject["project"]
    # One source of truth: the build reads art_wdat.__version__.
    assert "version" not in project and project["dynamic"] == ["version"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "art_wdat.__version__"}
    assert art_wdat.__version__.count(".") == 2 and all(part.isdigit() for part in art_wdat.__version__.split("."))
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert (ROOT / "art_wdat" / "py.typed").is_file()
    assert "py.typed" in pyproject["tool"]["setuptools"]["package-data"]["art_wdat"]
    assert project["authors"] and project["keywords"] and project["urls"]
    classifiers = set(project["classifiers"])
    assert {"Typing :: Typed", "Operating System :: OS Independent", "Topic :: Security"} <= classifiers
    assert not any(c.startswith("License ::") for c in classifiers)  # PEP 639: the license expression instead


def test_pytest_reports_the_slowest_tests():
    assert "--durations=" in _pyproject()["tool"]["pytest"]["ini_options"]["addopts"]
