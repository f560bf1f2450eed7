"""The top-level ``autoattack`` module that art-wdat installs (``compat/autoattack.py``).

robustbench 1.1.1 imports ``autoattack``; PyPI ships that code as ``pyautoattack``. After installing art-wdat,
``import autoattack`` and robustbench's ``load_model`` must work in a fresh interpreter whose code never
imports ``art_wdat``, and a real ``autoattack`` package must never be shadowed. Every check runs in a fresh
interpreter, because the point is what ``import`` does before anything has been cached in ``sys.modules``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHIM = REPO_ROOT / "compat" / "autoattack.py"

# What user code does after `pip install art-wdat`: no art_wdat import anywhere.
USER_CODE = """
    import sys, warnings
    warnings.simplefilter("ignore")  # robustbench's import-time deprecation noise
    assert "autoattack" not in sys.modules and "pyautoattack" not in sys.modules, "imported at startup"
    import autoattack
    from autoattack import AutoAttack
    from autoattack.state import EvaluationState
    from robustbench.utils import load_model
    import robustbench.eval
    assert "art_wdat" not in sys.modules
    assert robustbench.eval.AutoAttack is AutoAttack
    import pyautoattack
    assert autoattack is pyautoattack and AutoAttack is pyautoattack.AutoAttack
    assert EvaluationState is sys.modules["pyautoattack.state"].EvaluationState
    for name in [m for m in sys.modules if m.startswith("pyautoattack.")]:
        assert sys.modules["autoattack" + name[len("pyautoattack"):]] is sys.modules[name], name
"""


def _fresh_python(code: str, *path: Path, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter with ``path`` prepended to ``sys.path`` (through PYTHONPATH)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if path:
        env["PYTHONPATH"] = os.pathsep.join(str(p) for p in path)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=180, check=False,
    )


def _shim_in(folder: Path) -> Path:
    """A copy of the shim as ``folder/autoattack.py``, what an install puts in site-packages."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(SHIM, folder / "autoattack.py")
    return folder


def _package(folder: Path, name: str, init: str) -> Path:
    (folder / name).mkdir(parents=True)
    (folder / name / "__init__.py").write_text(init)
    return folder


def test_installed_environment_imports_autoattack_and_robustbench(tmp_path: Path) -> None:
    """The issue's check: as installed here (CI: ``pip install -e``), from a directory outside the repo."""
    result = _fresh_python(USER_CODE, cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def test_wheel_ships_the_module_at_its_root(tmp_path: Path) -> None:
    """``pip install .`` (a wheel): ``autoattack.py`` sits at the wheel's root, beside ``art_wdat/``."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, source / name)
    for name in ("art_wdat", "compat"):
        shutil.copytree(REPO_ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", "dist", "."],
        cwd=source, capture_output=True, text=True, timeout=300, check=False,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = (source / "dist").glob("art_wdat-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        assert archive.read("autoattack.py") == SHIM.read_bytes()
        assert "art_wdat/__init__.py" in archive.namelist()
        archive.extractall(site)  # a pure wheel's files, as pip lays them out in site-packages

    origin = str(site / "autoattack.py")
    code = f"import importlib.util; assert importlib.util.find_spec('autoattack').origin == {origin!r}"
    result = _fresh_python(code + "\n" + textwrap.dedent(USER_CODE), site, cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def test_real_package_in_the_same_directory_wins(tmp_path: Path) -> None:
    """A real autoattack installed beside the shim: a package directory beats a same-named ``.py`` file."""
    site = _package(_shim_in(tmp_path / "site"), "autoattack", "REAL = 'same directory'\n")
    result = _fresh_python("import autoattack; assert autoattack.REAL == 'same directory'", site, cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def test_real_package_later_on_sys_path_wins(tmp_path: Path) -> None:
    real = _package(tmp_path / "real", "autoattack", "REAL = 'later entry'\n")
    (real / "autoattack" / "state.py").write_text("EvaluationState = 'real'\n")
    code = f"""
        import autoattack
        from autoattack.state import EvaluationState
        assert autoattack.REAL == "later entry" and EvaluationState == "real"
        assert autoattack.__file__.startswith({str(real)!r})
    """
    result = _fresh_python(code, _shim_in(tmp_path / "site"), real, cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def test_two_copies_of_the_shim_do_not_recurse(tmp_path: Path) -> None:
    """Only a package counts as a real autoattack, so a second copy (two installs) is never loaded in turn."""
    code = "import autoattack, pyautoattack; assert autoattack is pyautoattack"
    result = _fresh_python(code, _shim_in(tmp_path / "one"), _shim_in(tmp_path / "two"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def test_missing_pyautoattack_says_what_to_install(tmp_path: Path) -> None:
    code = """
        import sys
        sys.modules["pyautoattack"] = None  # what an environment without pyautoattack looks like
        try:
            import autoattack
        except ModuleNotFoundError as err:
            assert err.name == "autoattack", err.name
            assert "pip install pyautoattack" in str(err), err
        else:
            raise AssertionError("no error")
        assert "autoattack" not in sys.modules
    """
    result = _fresh_python(code, _shim_in(tmp_path / "site"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def test_broken_pyautoattack_is_not_masked(tmp_path: Path) -> None:
    """pyautoattack failing on one of its own dependencies must name that dependency."""
    broken = _package(tmp_path / "broken", "pyautoattack", "import some_dependency_that_is_missing\n")
    code = """
        try:
            import autoattack
        except ModuleNotFoundError as err:
            assert err.name == "some_dependency_that_is_missing", err.name
        else:
            raise AssertionError("no error")
    """
    result = _fresh_python(code, _shim_in(tmp_path / "site"), broken, cwd=tmp_path)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("tool", [("mypy", "--no-error-summary"), ("ruff", "check")])
def test_module_is_typed_and_linted(tool: tuple[str, str]) -> None:
    """compat/ is outside mypy's ``files`` (on purpose: see pyproject.toml) and outside the suite's ruff run."""
    result = subprocess.run(
        [sys.executable, "-m", *tool, str(SHIM.relative_to(REPO_ROOT))], cwd=REPO_ROOT, capture_output=True,
        text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
