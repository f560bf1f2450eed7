"""The release a user installs: the sdist and the wheel build, and the wheel works in a fresh virtual environment.

``python -m build`` makes the sdist, then the wheel from the unpacked sdist (so a wheel that builds proves the
sdist holds what a build needs). The wheel is then installed with its dependencies into a new virtual
environment, without the source tree on the path, and runs ``art-wdat demo --quick`` and ``import autoattack``
there. Slow (the dependencies, torch among them, are installed afresh: several minutes), so marked ``slow``; every
step has a timeout, so that a stuck download fails the test instead of hanging the suite.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import art_wdat

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

#: Files a build from the sdist needs, or a user of it expects.
SDIST_FILES = ("pyproject.toml", "README.md", "LICENSE", "compat/autoattack.py", "art_wdat/__init__.py",
               "art_wdat/py.typed", "art_wdat/cli/demo_ranges.json")
#: Files the wheel must install besides the modules.
WHEEL_FILES = ("autoattack.py", "art_wdat/py.typed", "art_wdat/cli/demo_ranges.json",
               f"art_wdat-{art_wdat.__version__}.dist-info/licenses/LICENSE")


def _env() -> dict:
    """This environment without what would put the source tree or the test venv on the fresh one's path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    return env


def _run(command: list, timeout: float, cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in command], cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, f"{' '.join(map(str, command))} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def dist() -> Iterator[Path]:
    """The sdist and the wheel, built from this tree into a temporary folder.

    Without build isolation: the build requirements (setuptools) are those of this environment, so the build
    needs no network.
    """
    with tempfile.TemporaryDirectory(prefix="art-wdat-dist-") as out:
        _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", out, str(ROOT)], timeout=600, cwd=ROOT)
        yield Path(out)


def test_sdist_holds_what_a_build_needs(dist):
    (sdist,) = dist.glob("*.tar.gz")
    assert sdist.name == f"art_wdat-{art_wdat.__version__}.tar.gz"
    top = f"art_wdat-{art_wdat.__version__}/"
    with tarfile.open(sdist) as archive:
        names = {name.removeprefix(top) for name in archive.getnames()}
    missing = [name for name in SDIST_FILES if name not in names]
    assert not missing, missing


def test_wheel_metadata_and_package_data(dist):
    (wheel,) = dist.glob("*.whl")
    assert wheel.name == f"art_wdat-{art_wdat.__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = archive.read(f"art_wdat-{art_wdat.__version__}.dist-info/METADATA").decode()
    missing = [name for name in WHEEL_FILES if name not in names]
    assert not missing, missing
    assert not any(name.startswith(("tests/", "bench/", "compat/")) for name in names)
    fields = [line.partition(": ") for line in metadata.split("\n\n", 1)[0].splitlines()]
    assert ("Version", ": ", art_wdat.__version__) in fields and ("License-Expression", ": ", "MIT") in fields
    classifiers = {value for key, _, value in fields if key == "Classifier"}
    assert {"Typing :: Typed", "Operating System :: OS Independent"} <= classifiers
    assert any(key == "Project-URL" for key, _, _ in fields)


def test_wheel_installs_and_runs_the_demo_in_a_fresh_venv(dist):
    (wheel,) = dist.glob("*.whl")
    with tempfile.TemporaryDirectory(prefix="art-wdat-venv-") as tmp:
        work = Path(tmp)
        try:
            _run([sys.executable, "-m", "venv", work / "venv"], timeout=300, cwd=work)
            bin_dir = work / "venv" / ("Scripts" if os.name == "nt" else "bin")
            # --no-compile: no byte-code for the thousands of modules of torch & co. that the demo never imports.
            _run([bin_dir / "python", "-m", "pip", "install", "-q", "--no-compile", wheel], timeout=2400, cwd=work)
            code = ("import sys, autoattack; from autoattack import AutoAttack; "
                    "assert 'art_wdat' not in sys.modules; import art_wdat; "
                    "print(art_wdat.__version__); print(art_wdat.__file__)")
            version, where = _run([bin_dir / "python", "-c", code], timeout=300, cwd=work).stdout.split()[-2:]
            assert version == art_wdat.__version__
            assert Path(where).resolve().is_relative_to((work / "venv").resolve())  # the wheel, not this tree
            demo = _run([bin_dir / "art-wdat", "demo", "--quick", "--out", work / "out", "-q"], timeout=1200,
                        cwd=work).stdout
            assert "| budget δ | quantity | TRADES | W-TRADES fine-tune | change |" in demo
            assert "Against the README's ranges" in demo  # the ranges shipped as package data
            assert (work / "out" / "report.json").stat().st_size > 0
        finally:
            shutil.rmtree(work, ignore_errors=True)  # several GB: never left to pytest's kept temporary folders
