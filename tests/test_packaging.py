"""The package's promises to its users: cheap import, a version, the README's commands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
